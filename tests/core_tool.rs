//! The offline `nvm-tool`: exit codes and output of `check` and `dump` on healthy,
//! corrupt, missing and in-use pools; it must never modify the pool.

use redis_nvm::log::{record_len, RecordRef, HEADER_LEN};
use redis_nvm::pmem::RequestedMode;
use redis_nvm::pool::{Pool, PoolOptions, LOG_OFFSET, MIN_POOL_SIZE};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// A child forked while another test holds a pool inherits that flock until it execs, so
/// a concurrent test could see its own pool "locked": run these tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvm-tool"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn opts(path: &Path) -> PoolOptions {
    PoolOptions {
        path: path.to_path_buf(),
        size: MIN_POOL_SIZE,
        mode: RequestedMode::Emulate,
        emulate_flush_delay_ns: 0,
    }
}

/// A pool with 5 records of 100 bytes, kinds 1..=5, db 2.
fn make_pool(path: &Path) {
    let mut pool = Pool::open_or_create(&opts(path)).unwrap();
    for kind in 1..=5u8 {
        pool.log_mut()
            .append(&[RecordRef {
                kind,
                db: 2,
                payload: &[kind; 100],
            }])
            .unwrap();
    }
}

#[test]
fn check_and_dump_a_healthy_pool() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    make_pool(&path);
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();

    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("uuid: "), "{t}");
    assert!(t.contains(&format!("size: {MIN_POOL_SIZE} bytes")), "{t}");
    assert!(t.contains("last lsn: 5"), "{t}");
    assert!(t.contains("records: 5"), "{t}");
    assert!(t.contains("log: ok"), "{t}");

    let out = tool(&["dump", p, "--limit", "2"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
    let second = LOG_OFFSET + record_len(100);
    assert_eq!(
        lines,
        vec![
            format!("1 {LOG_OFFSET} 1 2 100"),
            format!("2 {second} 2 2 100")
        ]
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the tool never writes"
    );
}

#[test]
fn check_reports_corruption_with_exit_1() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    make_pool(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let third = LOG_OFFSET + 2 * record_len(100);
    bytes[(third + HEADER_LEN + 1) as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();

    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "log: CORRUPT at pool offset {third} (expected lsn 3): crc mismatch"
        )),
        "{t}"
    );
    let out = tool(&["dump", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert_eq!(
        t.lines()
            .filter(|l| l.starts_with(char::is_numeric))
            .count(),
        2
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the tool never repairs"
    );
}

#[test]
fn errors_exit_2_with_one_line() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    let p = path.to_str().unwrap();
    let out = tool(&["check", p]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out).lines().count(), 1, "{}", text(&out));
    assert!(text(&out).contains("p.nvm"));

    let out = tool(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("usage"));

    // A pool held by a server is refused rather than read while it changes.
    make_pool(&path);
    let _held = Pool::open_or_create(&opts(&path)).unwrap();
    let out = tool(&["check", p]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("locked"), "{}", text(&out));
}
