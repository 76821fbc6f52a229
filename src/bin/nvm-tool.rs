//! nvm-tool: offline inspection of a redis-nvm pool file.
//!
//! `nvm-tool check <pool>` prints the superblock and log summary, then `log: ok` (exit 0)
//! or `log: CORRUPT ...` (exit 1). `nvm-tool dump <pool> [--limit N]` prints one line per
//! record. The pool is mapped read-only under a shared lock: the tool never writes or
//! repairs, and refuses (exit 2) while a server holds the pool.

#![forbid(unsafe_code)]

use redis_nvm::log::{LogError, LogState};
use redis_nvm::pool::Pool;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: nvm-tool check <pool> | nvm-tool dump <pool> [--limit N]";

enum Command {
    Check(PathBuf),
    Dump(PathBuf, Option<u64>),
}

fn parse(args: &[String]) -> Result<Command, String> {
    match args {
        [cmd, path] if cmd == "check" => Ok(Command::Check(PathBuf::from(path))),
        [cmd, path] if cmd == "dump" => Ok(Command::Dump(PathBuf::from(path), None)),
        [cmd, path, flag, n] if cmd == "dump" && flag == "--limit" => {
            let n = n
                .parse::<u64>()
                .map_err(|_| format!("--limit wants a number, got '{n}'"))?;
            Ok(Command::Dump(PathBuf::from(path), Some(n)))
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|cmd| match cmd {
        Command::Check(path) => check(&path),
        Command::Dump(path, limit) => dump(&path, limit),
    });
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("nvm-tool: {msg}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &std::path::Path) -> Result<ExitCode, String> {
    let pool = Pool::open_readonly(path).map_err(|e| e.to_string())?;
    let sb = pool.superblock();
    let log = pool.log();
    println!("pool: {}", path.display());
    println!("uuid: {}", sb.uuid_string());
    println!("format version: {}", sb.format_version);
    println!("size: {} bytes", sb.pool_size);
    println!(
        "created: {} ({} ms since the epoch)",
        utc_string(sb.created_unix_ms),
        sb.created_unix_ms
    );
    println!(
        "log: capacity {} bytes, used {}, free {}",
        log.capacity(),
        log.used_bytes(),
        log.free_bytes()
    );
    println!("last lsn: {}", log.last_lsn());
    println!("records: {}", log.record_count());
    match log.state() {
        LogState::Writable => {
            println!("log: ok");
            Ok(ExitCode::SUCCESS)
        }
        LogState::Corrupt(c) => {
            println!(
                "log: CORRUPT at pool offset {} (expected lsn {}): {}",
                c.offset, c.lsn, c.reason
            );
            Ok(ExitCode::from(1))
        }
        LogState::Poisoned(why) => Err(why.clone()),
    }
}

fn dump(path: &std::path::Path, limit: Option<u64>) -> Result<ExitCode, String> {
    let pool = Pool::open_readonly(path).map_err(|e| e.to_string())?;
    println!("# lsn offset kind db len");
    let mut shown = 0u64;
    for rec in pool.log().records() {
        if limit.is_some_and(|n| shown >= n) {
            break;
        }
        match rec {
            Ok(r) => {
                println!(
                    "{} {} {} {} {}",
                    r.lsn,
                    r.offset,
                    r.kind,
                    r.db,
                    r.payload.len()
                );
                shown += 1;
            }
            Err(LogError::Corrupt(c)) => {
                println!(
                    "log: CORRUPT at pool offset {} (expected lsn {}): {}",
                    c.offset, c.lsn, c.reason
                );
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DD hh:mm:ss UTC` from Unix milliseconds (civil-from-days, H. Hinnant).
fn utc_string(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
