//! The offline `nvm-tool`: exit codes and output of `check`, `summary` and `dump` on
//! healthy, corrupt (log and key space), truncated, missing and in-use pools, which must
//! never modify the pool; and `grow`, which only grows one no server holds.

use redis_nvm::effect::{encode, Effect, Value, NO_EXPIRE};
use redis_nvm::keyspace::layout::{
    COLL_CAP, COLL_SLOTS, KEY_DATA, ROOT_DB_DIR, TABLE_SLOT, TOMBSTONE,
};
use redis_nvm::keyspace::JournalOutcome;
use redis_nvm::log::{record_len, RecordRef, HEADER_LEN};
use redis_nvm::pmem::{CrashSim, RequestedMode};
use redis_nvm::pool::{
    Pool, PoolOptions, DEFAULT_LOG_SIZE, JOURNAL_OFFSET, JOURNAL_WORD_OFFSET, MIN_POOL_SIZE,
    ROOT_OFFSET,
};
use redis_nvm::replay::Replayer;
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
        log_size: DEFAULT_LOG_SIZE,
        mode: RequestedMode::Emulate,
        emulate_flush_delay_ns: 0,
    }
}

/// A pool with 5 raw records of 100 bytes, kinds 1..=5, db 2, nothing folded; returns
/// the pool offset of its log region.
fn make_pool(path: &Path) -> u64 {
    let mut pool = Pool::open_or_create(&opts(path)).unwrap();
    for kind in 1..=5u8 {
        pool.log_mut()
            .append(&[RecordRef {
                kind,
                db: 2,
                flags: 0,
                payload: &[kind; 100],
            }])
            .unwrap();
    }
    pool.log().log_offset()
}

fn put(key: &str, value: Value, expire_at_ms: i64) -> Effect {
    Effect::Put {
        key: key.as_bytes().to_vec(),
        value,
        expire_at_ms,
    }
}

fn append(pool: &mut Pool, db: u32, e: &Effect) -> u64 {
    let mut p = Vec::new();
    let kind = encode(e, &mut p).expect("encodes");
    pool.log_mut()
        .append(&[RecordRef {
            kind,
            db,
            flags: 0,
            payload: &p,
        }])
        .unwrap();
    record_len(p.len() as u64)
}

/// What `make_keyspace_pool` made.
struct Made {
    /// Bytes of the two records left unfolded.
    backlog: u64,
}

/// A pool whose key space holds 7 keys (db 0: strings "s1" (expiring) and "s2", list,
/// hash, set, zset; db 3: string "only") folded by the replayer, plus two more writes
/// left in the log.
fn make_keyspace_pool(path: &Path) -> Made {
    let mut pool = Pool::open_or_create(&opts(path)).unwrap();
    let b = |s: &str| s.as_bytes().to_vec();
    let folded = [
        (0, put("s1", Value::String(b("one")), 4_000_000_000_000)),
        (0, put("s2", Value::String(b("two")), NO_EXPIRE)),
        (0, put("l", Value::List(vec![b("a"), b("b")]), NO_EXPIRE)),
        (0, put("h", Value::Hash(vec![(b("f"), b("v"))]), NO_EXPIRE)),
        (0, put("st", Value::Set(vec![b("m1"), b("m2")]), NO_EXPIRE)),
        (0, put("z", Value::Zset(vec![(b("m"), 1.5)]), NO_EXPIRE)),
        (
            3,
            put(
                "only",
                Value::String(b("the value of a lonely key")),
                NO_EXPIRE,
            ),
        ),
    ];
    for (db, e) in &folded {
        append(&mut pool, *db, e);
    }
    let ks = pool.open_keyspace().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    assert_eq!(r.drain(pool.log().committed_end()).unwrap(), 7);
    pool.log_mut().advance_head(r.applied());
    let backlog = append(&mut pool, 0, &put("s2", Value::String(b("2")), NO_EXPIRE))
        + append(&mut pool, 0, &Effect::Delete { key: b("l") });
    Made { backlog }
}

/// Pool offset of the key item of the only key in `db`, read through the layout: the
/// root names the db's key table, whose slots name the item.
fn only_key_item(image: &[u8], db: u64) -> u64 {
    let word = |off: u64| {
        let at = off as usize;
        u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
    };
    let table = word(word(ROOT_OFFSET + ROOT_DB_DIR) + db * 8);
    assert_ne!(table, 0, "db {db} has no key table");
    let (slots, cap) = (word(table + COLL_SLOTS), word(table + COLL_CAP));
    let items: Vec<u64> = (0..cap)
        .map(|i| word(slots + i * TABLE_SLOT + 8))
        .filter(|&item| item > TOMBSTONE)
        .collect();
    assert_eq!(items.len(), 1);
    items[0]
}

#[test]
fn check_and_dump_a_healthy_pool() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    let log_offset = make_pool(&path);
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
    assert!(t.contains("journal: clean"), "{t}");
    assert!(t.contains("keyspace: 0 keys"), "{t}");
    assert!(t.contains("keyspace: ok"), "{t}");

    let out = tool(&["dump", p, "--limit", "2"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
    let second = log_offset + record_len(100);
    assert_eq!(
        lines,
        vec![
            format!("1 {log_offset} 1 2 100"),
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
    let log_offset = make_pool(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let third = log_offset + 2 * record_len(100);
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
fn check_verifies_the_key_space() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    make_keyspace_pool(&path);
    let good = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();

    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("log: ok"), "{t}");
    assert!(t.contains("keyspace: 7 keys, 6 members"), "{t}");
    assert!(t.contains("keyspace: ok"), "{t}");
    assert!(!t.contains("PROBLEM"), "{t}");

    // One flipped byte in the value of db 3's only key: the structure is intact, only
    // the item's checksum tells.
    let item = only_key_item(&good, 3);
    let mut bad = good.clone();
    bad[(item + KEY_DATA + "only".len() as u64 + 4) as usize] ^= 0x20;
    std::fs::write(&path, &bad).unwrap();
    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("log: ok"), "{t}");
    assert!(
        t.contains(&format!(
            "keyspace: PROBLEM at pool offset {item}: item checksum mismatch"
        )),
        "{t}"
    );
    // (Found by the check, or already by opening the key space if that verifies.)
    assert!(!t.contains("keyspace: ok"), "{t}");
    assert_eq!(std::fs::read(&path).unwrap(), bad, "the tool never repairs");

    // A damaged table header: the key space cannot even be opened; still one problem
    // naming the offset, exit 1.
    let table = {
        let word = |at: u64| {
            let at = at as usize;
            u64::from_le_bytes(good[at..at + 8].try_into().unwrap())
        };
        word(word(ROOT_OFFSET + ROOT_DB_DIR) + 3 * 8)
    };
    let mut bad = good.clone();
    bad[table as usize + 7] = 0xff;
    std::fs::write(&path, &bad).unwrap();
    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("keyspace: PROBLEM at pool offset {table}: ")),
        "{t}"
    );
    assert!(t.contains("keyspace: unreadable"), "{t}");
    let out = tool(&["summary", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("keyspace: PROBLEM at pool offset {table}: ")),
        "{t}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bad, "the tool never repairs");
}

#[test]
fn summary_of_a_pool_with_keys_and_a_backlog() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    let made = make_keyspace_pool(&path);
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();

    let out = tool(&["summary", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let (capacity, heap) = {
        let pool = Pool::open_readonly(&path).unwrap();
        let heap = pool.open_keyspace().unwrap().heap_stats();
        assert_eq!(heap.capacity, pool.superblock().heap_size);
        (pool.log().capacity(), heap)
    };
    assert!(heap.used > 0 && heap.free > 0);
    for line in [
        format!("pool size: {MIN_POOL_SIZE} bytes"),
        format!("log size: {capacity} bytes"),
        format!("log backlog: {} bytes", made.backlog),
        "log live records: 2".to_string(),
        "applied lsn: 7".to_string(),
        "last lsn: 9".to_string(),
        "keys: 7".to_string(),
        "keys by type: hash 1, list 1, set 1, stream 0, string 3, zset 1".to_string(),
        "keys by db: db0 6, db3 1".to_string(),
        "keys with expiry: 1".to_string(),
        format!("heap used: {} bytes", heap.used),
        format!("heap free: {} bytes", heap.free),
        format!("heap capacity: {} bytes", heap.capacity),
    ] {
        assert!(t.lines().any(|l| l == line), "missing '{line}' in:\n{t}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the tool never writes"
    );

    // An empty pool.
    let empty = dir.path().join("empty.nvm");
    drop(Pool::open_or_create(&opts(&empty)).unwrap());
    let out = tool(&["summary", empty.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for line in [
        "log backlog: 0 bytes",
        "log live records: 0",
        "applied lsn: 0",
        "last lsn: 0",
        "keys: 0",
        "keys by db: none",
        "heap used: 0 bytes",
    ] {
        assert!(t.lines().any(|l| l == line), "missing '{line}' in:\n{t}");
    }
}

/// The durable image of a pool cut by a crash after a key-space batch committed (its
/// journal word is set) but before the batch was copied into place: `(image, words)`.
/// The batch folds 5 puts into a key space that held 3 keys.
fn image_with_pending_batch() -> (Vec<u8>, u64) {
    let effects: Vec<Effect> = (0..8)
        .map(|i| put(&format!("k{i}"), Value::String(vec![b'v'; i]), NO_EXPIRE))
        .collect();
    let run = |crash_at: Option<u64>| {
        let mut sim = CrashSim::new(MIN_POOL_SIZE);
        let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
        for e in &effects[..3] {
            append(&mut pool, 0, e);
        }
        let ks = pool.open_keyspace().unwrap();
        let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
        r.drain(pool.log().committed_end()).unwrap();
        pool.log_mut().advance_head(r.applied());
        for e in &effects[3..] {
            append(&mut pool, 0, e);
        }
        let base = sim.events();
        if let Some(n) = crash_at {
            sim = sim.with_crash_at(base + n);
        }
        let _ = r.step(pool.log().committed_end());
        (sim, base)
    };
    let (whole, base) = run(None);
    for n in 0..whole.events() - base {
        let (sim, _) = run(Some(n));
        let image = sim.durable_image();
        let at = JOURNAL_WORD_OFFSET as usize;
        let words = u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
        if words != 0 {
            return (image, words);
        }
    }
    panic!("no crash point leaves a committed batch pending");
}

#[test]
fn check_leaves_a_pending_batch_alone_and_checks_its_journal() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    let p = path.to_str().unwrap();
    let (image, words) = image_with_pending_batch();
    std::fs::write(&path, &image).unwrap();

    // The state before the batch is consistent by itself: the tool checks it as it is.
    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "journal: a committed batch of {words} words awaits redo"
        )),
        "{t}"
    );
    assert!(t.contains("keyspace: 3 keys"), "{t}");
    assert!(t.contains("keyspace: ok"), "{t}");
    let out = tool(&["summary", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.lines().any(|l| l == "applied lsn: 3"), "{t}");
    assert!(t.lines().any(|l| l == "last lsn: 8"), "{t}");
    assert!(t.lines().any(|l| l == "log live records: 5"), "{t}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        image,
        "the tool never redoes"
    );

    // A damaged journal is damage (the next open would refuse the pool).
    let mut bad = image.clone();
    bad[JOURNAL_OFFSET as usize + 24 + 3] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "journal: PROBLEM at pool offset {JOURNAL_OFFSET}: journal checksum mismatch"
        )),
        "{t}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bad, "the tool never repairs");

    // A writable open redoes the intact batch.
    std::fs::write(&path, &image).unwrap();
    let pool = Pool::open_or_create(&opts(&path)).unwrap();
    assert_eq!(pool.info().journal, JournalOutcome::Redone(words));
    drop(pool);
    let out = tool(&["check", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("journal: clean"), "{t}");
    assert!(t.contains("keyspace: 8 keys"), "{t}");
}

#[test]
fn errors_exit_2_with_one_line() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nvm");
    let p = path.to_str().unwrap();
    for cmd in ["check", "summary", "dump"] {
        let out = tool(&[cmd, p]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(text(&out).lines().count(), 1, "{}", text(&out));
        assert!(text(&out).contains("p.nvm"));
    }

    let out = tool(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("usage"));

    // A pool held by a server is refused rather than read while it changes.
    make_pool(&path);
    {
        let _held = Pool::open_or_create(&opts(&path)).unwrap();
        for cmd in ["check", "summary", "dump"] {
            let out = tool(&[cmd, p]);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            assert!(text(&out).contains("locked"), "{}", text(&out));
        }
    }

    // A truncated pool: one line naming the file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIN_POOL_SIZE / 2)
        .unwrap();
    for cmd in ["check", "summary", "dump"] {
        let out = tool(&[cmd, p]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert_eq!(t.lines().count(), 1, "{t}");
        assert!(t.contains("p.nvm") && t.contains("cut short"), "{t}");
    }
}

/// `grow`: the only writing command. It grows a pool no server has open, keeps every
/// record and the identity, refuses to shrink, refuses a bad size, and refuses while the
/// pool is held; `summary` then shows the new size and the heap's fill.
#[test]
fn grow_grows_a_pool_offline_and_nothing_else() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    make_pool(&path);
    let p = path.display().to_string();
    let before = text(&tool(&["dump", &p]));
    let out = tool(&["grow", &p, "4mb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("to 4194304 bytes"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
    assert_eq!(text(&tool(&["dump", &p])), before, "the records are kept");
    let summary = text(&tool(&["summary", &p]));
    assert!(
        summary.contains("pool size: 4194304") && summary.contains("heap fill:"),
        "{summary}"
    );
    assert_eq!(tool(&["check", &p]).status.code(), Some(0));
    for (size, why) in [("2mb", "can only grow"), ("lots", "size")] {
        let out = tool(&["grow", &p, size]);
        assert_eq!(out.status.code(), Some(2), "{size}: {}", text(&out));
        assert!(text(&out).contains(why), "{size}: {}", text(&out));
    }
    let held = Pool::open_or_create(&opts(&path)).unwrap();
    let out = tool(&["grow", &p, "8mb"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "grew a pool in use: {}",
        text(&out)
    );
    drop(held);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
}
