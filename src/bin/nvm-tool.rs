//! nvm-tool: offline inspection of a redis-nvm pool file (layout v4), and growing one.
//!
//! - `nvm-tool check <pool>` prints the superblock and the log, then checks the log
//!   (`log: ok` or `log: CORRUPT ...`), the key space's journal and the key space itself
//!   (structure and every item's checksum: `keyspace: ok` or one
//!   `keyspace: PROBLEM at pool offset N: ...` line per problem).
//! - `nvm-tool summary <pool>` prints sizes and counters: pool and log size, the log's
//!   backlog, applied and last lsn, keys (by type and by db), heap use.
//! - `nvm-tool dump <pool> [--limit N]` prints one line per live log record.
//! - `nvm-tool grow <pool> <size>` grows a pool that no server has open to `size`
//!   (`16gb`, `20000000000`): the file is extended and its heap takes the new space; the
//!   data stays as it is. Crash-safe at any point. Pools never shrink.
//!
//! Exit status: 0 healthy, 1 damage found, 2 the pool could not be inspected (missing,
//! not a pool, truncated, locked by a server, bad usage), with one line on stderr.
//!
//! Except for `grow`, the pool is mapped read-only under a shared lock
//! (`Pool::open_readonly`): the tool never writes, never repairs, never redoes a pending
//! journal, and refuses while a server holds the pool. `grow` opens it as a server
//! would (exclusive lock, journal redo). Opening the key space only reads it (free lists are rebuilt in
//! DRAM).

#![forbid(unsafe_code)]

use redis_nvm::effect::NO_EXPIRE;
use redis_nvm::keyspace::{read_journal, KeySpace, Layout, StoreError, StoredValue};
use redis_nvm::log::{LogError, LogState};
use redis_nvm::pmem::RequestedMode;
use redis_nvm::pool::{Pool, PoolError, PoolOptions, DEFAULT_LOG_SIZE, JOURNAL_WORD_OFFSET};
use redis_nvm::redis::config::parse_size;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: nvm-tool check <pool> | nvm-tool summary <pool> | \
    nvm-tool dump <pool> [--limit N] | nvm-tool grow <pool> <size>";

/// Exit status when damage was found.
const DAMAGED: u8 = 1;

enum Command {
    Check(PathBuf),
    Summary(PathBuf),
    Dump(PathBuf, Option<u64>),
    Grow(PathBuf, u64),
}

fn parse(args: &[String]) -> Result<Command, String> {
    match args {
        [cmd, path] if cmd == "check" => Ok(Command::Check(PathBuf::from(path))),
        [cmd, path] if cmd == "summary" => Ok(Command::Summary(PathBuf::from(path))),
        [cmd, path] if cmd == "dump" => Ok(Command::Dump(PathBuf::from(path), None)),
        [cmd, path, flag, n] if cmd == "dump" && flag == "--limit" => {
            let n = n
                .parse::<u64>()
                .map_err(|_| format!("--limit wants a number, got '{n}'"))?;
            Ok(Command::Dump(PathBuf::from(path), Some(n)))
        }
        [cmd, path, size] if cmd == "grow" => {
            let size = parse_size(size).map_err(|e| format!("grow: size {e}"))?;
            Ok(Command::Grow(PathBuf::from(path), size))
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|cmd| match cmd {
        Command::Check(path) => check(&path),
        Command::Summary(path) => summary(&path),
        Command::Dump(path, limit) => dump(&path, limit),
        Command::Grow(path, size) => grow(&path, size),
    });
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("nvm-tool: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Grows the pool at `path` to `size` bytes (see the file comment).
fn grow(path: &Path, size: u64) -> Result<ExitCode, String> {
    if !path.is_file() {
        return Err(format!("{}: no such pool file", path.display()));
    }
    let before = open(path)?.info().size;
    if size <= before {
        return Err(format!(
            "{} is {before} bytes: it can only grow (asked for {size})",
            path.display()
        ));
    }
    let pool = Pool::open_or_create(&PoolOptions {
        path: path.to_path_buf(),
        size,
        log_size: DEFAULT_LOG_SIZE,
        mode: RequestedMode::Msync,
        emulate_flush_delay_ns: 0,
    })
    .map_err(|e| e.to_string())?;
    println!(
        "grown: {} from {before} to {} bytes (heap {} bytes)",
        path.display(),
        pool.info().size,
        pool.superblock().heap_size
    );
    Ok(ExitCode::SUCCESS)
}

fn open(path: &Path) -> Result<Pool, String> {
    Pool::open_readonly(path).map_err(|e| e.to_string())
}

/// The log's state as one line; `true` when it is damaged.
fn log_status(pool: &Pool) -> Result<(String, bool), String> {
    match pool.log().state() {
        LogState::Writable => Ok(("log: ok".to_string(), false)),
        LogState::Corrupt(c) => Ok((
            format!(
                "log: CORRUPT at pool offset {} (expected lsn {}): {}",
                c.offset, c.lsn, c.reason
            ),
            true,
        )),
        LogState::Poisoned(why) => Err(why.clone()),
    }
}

/// The key-space damage in `e` as a (pool offset, reason) problem; other errors (media)
/// mean the pool could not be inspected.
fn damage(e: StoreError) -> Result<(u64, String), String> {
    match e {
        StoreError::Corrupt { offset, reason } => Ok((offset, reason)),
        other => Err(other.to_string()),
    }
}

fn print_problem(offset: u64, what: &str) {
    println!("keyspace: PROBLEM at pool offset {offset}: {what}");
}

/// What the key space's journal holds: `Ok(None)` when no batch awaits redo, the word
/// count of a committed batch that the next (writable) open will redo, or the damage
/// that would make that open fail.
fn journal_status(pool: &Pool) -> Result<Result<Option<u64>, (u64, String)>, String> {
    let media = pool.media();
    let entries = media
        .load_u64(JOURNAL_WORD_OFFSET)
        .map_err(|e| e.to_string())?;
    if entries == 0 {
        return Ok(Ok(None));
    }
    let layout = Layout::of(pool.superblock());
    let pairs = match read_journal(media, layout.journal, entries) {
        Ok(p) => p,
        Err(e) => return damage(e).map(Err),
    };
    if let Some(&(off, _)) = pairs
        .iter()
        .find(|(off, _)| !layout.journal_may_write(*off))
    {
        return Ok(Err((
            layout.journal.offset,
            format!("journal entry names pool offset {off}, outside the key space"),
        )));
    }
    Ok(Ok(Some(entries)))
}

fn check(path: &Path) -> Result<ExitCode, String> {
    let pool = open(path)?;
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
        "log: region at {} of {} bytes, used {}, free {}",
        log.log_offset(),
        log.capacity(),
        log.used_bytes(),
        log.free_bytes()
    );
    println!(
        "log head: position {} (lsn {})",
        log.head().pos,
        log.head().lsn
    );
    println!("last lsn: {}", log.last_lsn());
    println!("records: {}", log.record_count());
    let (line, mut damaged) = log_status(&pool)?;
    println!("{line}");

    match journal_status(&pool)? {
        Ok(None) => println!("journal: clean"),
        Ok(Some(n)) => println!(
            "journal: a committed batch of {n} words awaits redo at the next writable open \
             (checked below without it)"
        ),
        Err((offset, what)) => {
            println!("journal: PROBLEM at pool offset {offset}: {what}");
            damaged = true;
        }
    }

    match pool.open_keyspace() {
        Ok(mut ks) => {
            let report = ks.check(true).map_err(|e| e.to_string())?;
            println!(
                "keyspace: {} keys, {} members, {} blocks, {} bytes reachable",
                report.keys, report.members, report.blocks, report.bytes_reachable
            );
            for p in &report.problems {
                print_problem(p.offset, &p.what);
            }
            if report.problems.is_empty() {
                println!("keyspace: ok");
            } else {
                println!("keyspace: {} problem(s)", report.problems.len());
                damaged = true;
            }
        }
        Err(PoolError::KeySpace { source, .. }) => {
            let (offset, what) = damage(source)?;
            print_problem(offset, &what);
            println!("keyspace: unreadable");
            damaged = true;
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(if damaged {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Keys of the key space by type name and by db, and how many carry an expiry.
#[derive(Default)]
struct KeyCounts {
    by_type: BTreeMap<&'static str, u64>,
    by_db: BTreeMap<u32, u64>,
    expiring: u64,
}

fn count_keys(ks: &KeySpace) -> Result<KeyCounts, StoreError> {
    let mut counts = KeyCounts::default();
    for t in ["string", "list", "hash", "set", "zset", "stream"] {
        counts.by_type.insert(t, 0);
    }
    ks.visit(|db, _key, entry| {
        let t = match entry.value {
            StoredValue::String(_) => "string",
            StoredValue::List(_) => "list",
            StoredValue::Hash(_) => "hash",
            StoredValue::Set(_) => "set",
            StoredValue::Zset(_) => "zset",
            StoredValue::Stream { .. } => "stream",
        };
        *counts.by_type.entry(t).or_default() += 1;
        *counts.by_db.entry(db).or_default() += 1;
        if entry.expire_at_ms != NO_EXPIRE {
            counts.expiring += 1;
        }
        Ok(())
    })?;
    Ok(counts)
}

fn summary(path: &Path) -> Result<ExitCode, String> {
    let pool = open(path)?;
    let sb = pool.superblock();
    let log = pool.log();
    println!("pool: {}", path.display());
    println!("pool size: {} bytes", sb.pool_size);
    println!("log size: {} bytes", log.capacity());
    println!("log backlog: {} bytes", log.used_bytes());
    println!("log live records: {}", log.record_count());
    let mut damaged = false;
    let ks = match pool.open_keyspace() {
        Ok(ks) => Some(ks),
        Err(PoolError::KeySpace { source, .. }) => {
            let (offset, what) = damage(source)?;
            print_problem(offset, &what);
            damaged = true;
            None
        }
        Err(e) => return Err(e.to_string()),
    };
    if let Some(ks) = &ks {
        let applied = ks.applied().map_err(|e| e.to_string())?;
        println!("applied lsn: {}", applied.lsn - 1);
    }
    println!("last lsn: {}", log.last_lsn());
    if let Some(ks) = &ks {
        match ks.key_count() {
            Ok(n) => println!("keys: {n}"),
            Err(e) => {
                let (offset, what) = damage(e)?;
                print_problem(offset, &what);
                damaged = true;
            }
        }
        match count_keys(ks) {
            Ok(c) => {
                let types: Vec<String> =
                    c.by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
                println!("keys by type: {}", types.join(", "));
                let dbs: Vec<String> = c
                    .by_db
                    .iter()
                    .map(|(db, n)| format!("db{db} {n}"))
                    .collect();
                println!(
                    "keys by db: {}",
                    if dbs.is_empty() {
                        "none".to_string()
                    } else {
                        dbs.join(", ")
                    }
                );
                println!("keys with expiry: {}", c.expiring);
            }
            Err(e) => {
                let (offset, what) = damage(e)?;
                print_problem(offset, &what);
                damaged = true;
            }
        }
        let heap = ks.heap_stats();
        println!("heap used: {} bytes", heap.used);
        println!("heap free: {} bytes", heap.free);
        println!("heap capacity: {} bytes", heap.capacity);
        println!("heap largest free block: {} bytes", heap.largest_free);
        println!(
            "heap fill: {:.1}% (grow with `nvm-tool grow <pool> <size>`, or CONFIG SET nvm.size online)",
            (heap.capacity - heap.free.min(heap.capacity)) as f64 * 100.0 / heap.capacity.max(1) as f64
        );
    }
    let (line, log_damaged) = log_status(&pool)?;
    if log_damaged {
        println!("{line}");
        damaged = true;
    }
    Ok(if damaged {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

fn dump(path: &Path, limit: Option<u64>) -> Result<ExitCode, String> {
    let pool = open(path)?;
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
                return Ok(ExitCode::from(DAMAGED));
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
