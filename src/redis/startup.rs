//! Start-up: reconciles what the server loaded by itself with the pool, then restores
//! the pool into the keyspace, before the first client command runs.
//!
//! Runs once, in the first BEFORE_SLEEP event of the event loop: after the server has
//! finished loading its own RDB/AOF, before it processes any client. The rules (also in
//! docs/design.md, "Coexisting with RDB and AOF"):
//! - the pool has records: it is the persistence of record. Whatever the server loaded
//!   from RDB/AOF is an older copy (or, if the module was removed for a while, data the
//!   pool never saw): it is emptied, with a warning that counts the keys and names the
//!   files, and the pool's records are replayed. Nothing is loaded twice, the server never
//!   sees a duplicated key, and dump.rdb itself is left untouched on disk.
//! - the pool is new or empty: what the server loaded (a migration from RDB/AOF) is
//!   imported into the pool as whole values, so it is durable from now on.
//!
//! A damaged record stops the replay there: the data before it is served, writes are
//! refused (they would be appended after the damage) until NVM.REPAIR.

#![forbid(unsafe_code)]

use super::capture::whole_value;
use super::ffi::{Ctx, Reply};
use super::replayer;
use super::restore;
use super::state::{with_module, Refusal, CAPTURING};
use crate::effect::Effect;
use crate::keyspace::StoreError;
use crate::replay::ReplayError;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Lower-case names of the server's write commands (`container|sub` for subcommands),
/// from `COMMAND` at start-up.
static WRITE_COMMANDS: once_cell::sync::Lazy<
    std::sync::RwLock<std::collections::HashSet<Vec<u8>>>,
> = once_cell::sync::Lazy::new(Default::default);

/// Lower-case names of the commands the server flags `denyoom` (may grow memory: refused
/// at `maxmemory`), from the same `COMMAND` call.
static DENYOOM_COMMANDS: once_cell::sync::Lazy<
    std::sync::RwLock<std::collections::HashSet<Vec<u8>>>,
> = once_cell::sync::Lazy::new(Default::default);

/// Whether `name` (with its first argument, for container commands) is a write command.
pub fn is_write_command(name: &[u8], first_arg: Option<&[u8]>) -> bool {
    in_command_set(&WRITE_COMMANDS, name, first_arg)
}

/// Whether `name` (with its first argument) may grow the data: the server's `denyoom`
/// flag, which decides what it refuses at `maxmemory` (DEL, UNLINK, FLUSHALL, EXPIRE,
/// LPOP ... do not have it).
pub fn may_grow_data(name: &[u8], first_arg: Option<&[u8]>) -> bool {
    in_command_set(&DENYOOM_COMMANDS, name, first_arg)
}

fn in_command_set(
    set: &std::sync::RwLock<std::collections::HashSet<Vec<u8>>>,
    name: &[u8],
    first_arg: Option<&[u8]>,
) -> bool {
    let set = set.read().unwrap_or_else(|p| p.into_inner());
    let lower = name.to_ascii_lowercase();
    if set.contains(&lower) {
        return true;
    }
    match first_arg {
        Some(sub) => {
            let mut full = lower;
            full.push(b'|');
            full.extend(sub.to_ascii_lowercase());
            set.contains(&full)
        }
        None => false,
    }
}

fn load_write_commands(ctx: Ctx) {
    type Names = std::collections::HashSet<Vec<u8>>;
    fn visit(entries: &[Reply], writes: &mut Names, denyoom: &mut Names) {
        for e in entries {
            let Reply::Array(parts) = e else { continue };
            let (Some(name), Some(Reply::Array(flags))) =
                (parts.first().and_then(Reply::as_bytes), parts.get(2))
            else {
                continue;
            };
            let has = |flag: &[u8]| flags.iter().any(|f| f.as_bytes() == Some(flag));
            if has(b"write") {
                writes.insert(name.to_ascii_lowercase());
            }
            if has(b"denyoom") {
                denyoom.insert(name.to_ascii_lowercase());
            }
            if let Some(Reply::Array(subs)) = parts.get(9) {
                visit(subs, writes, denyoom);
            }
        }
    }
    if let Reply::Array(entries) = ctx.call("COMMAND", &[]) {
        let mut writes = WRITE_COMMANDS.write().unwrap_or_else(|p| p.into_inner());
        let mut denyoom = DENYOOM_COMMANDS.write().unwrap_or_else(|p| p.into_inner());
        visit(&entries, &mut writes, &mut denyoom);
    }
}

pub fn run(ctx: Ctx) {
    let started = Instant::now();
    load_write_commands(ctx);
    let Some(log_records) = with_module(|m| m.pool.log().record_count()) else {
        return;
    };
    let (folded, damage) = fold_backlog(ctx);
    let keyspace_keys = replayer::PUBLISHED.keys.load(Ordering::Relaxed);
    let stored_functions = replayer::shared().and_then(|r| {
        let r = r.lock().unwrap_or_else(|p| p.into_inner());
        r.keyspace().functions().ok().flatten()
    });
    let has_records = log_records > 0 || keyspace_keys > 0 || stored_functions.is_some();
    let databases = ctx.database_count();
    announce_policy(ctx);
    let server_keys = count_keys(ctx, databases);

    if has_records && server_keys > 0 {
        ctx.log(
            "warning",
            &format!(
                "redis-nvm: the server loaded {server_keys} keys from RDB/AOF, but the NVM pool is the persistence \
                 of record: discarding them and serving the pool (the RDB/AOF files are left as they are on disk)"
            ),
        );
        if let Err(e) = restore::flush_all(ctx) {
            ctx.log(
                "warning",
                &format!("redis-nvm: could not empty the keyspace: {e}"),
            );
        }
        with_module(|m| m.stats.discarded_server_keys = server_keys);
    }

    let mut restore_errors = 0;
    if has_records {
        // The pool's libraries replace whatever the server loaded from RDB/AOF.
        let restored = match &stored_functions {
            Some(dump) => restore::apply(ctx, 0, &Effect::Functions { dump: dump.clone() }),
            None => match ctx.call("FUNCTION", &[b"FLUSH"]) {
                Reply::Error(e) => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = restored {
            restore_errors += 1;
            ctx.log(
                "warning",
                &format!("redis-nvm: restoring the function libraries: {e}"),
            );
        }
    }
    start_serving_keyspace(ctx, keyspace_keys);
    let log_capacity = with_module(|m| m.pool.log().capacity()).unwrap_or(0);
    if let Some(r) = replayer::shared() {
        if let Err(e) = replayer::start(r, log_capacity) {
            ctx.log(
                "warning",
                &format!("redis-nvm: cannot start the replayer thread ({e}); the log will fill and writes will be refused"),
            );
        }
    }

    let mut imported = 0;
    if !has_records && server_keys > 0 {
        imported = import_loaded_keys(ctx, databases);
        ctx.log(
            "notice",
            &format!("redis-nvm: imported {imported} keys that the server loaded from RDB/AOF into the new pool"),
        );
    }
    let libraries = super::functions::dump(ctx);
    let has_libraries =
        matches!(ctx.call("FUNCTION", &[b"LIST"]), Reply::Array(l) if !l.is_empty());
    if !has_records && has_libraries {
        if let Some(dump) = libraries.clone() {
            append_imported(ctx, 0, Effect::Functions { dump });
            ctx.log(
                "notice",
                "redis-nvm: imported the function libraries the server loaded from RDB/AOF into the new pool",
            );
        }
    }
    with_module(|m| m.functions = libraries);

    {
        // Start-up went through server calls (COMMAND, restoring): clients must not see
        // them in the stats of a server that, to them, has just started. (The reset
        // itself stays counted once.)
        ctx.call("SLOWLOG", &[b"RESET"]);
        ctx.call("CONFIG", &[b"RESETSTAT"]);
    }
    // After the reset: the silent writes' trackers count from the stats clients see.
    super::functions::settled(ctx);
    super::silent::settled(ctx);
    ctx.select_db(0);

    let elapsed_ms = started.elapsed().as_millis() as u64;
    let serving_at = process_age_ms();
    let summary = with_module(|m| {
        m.databases = databases;
        m.stats.replayed_records = folded;
        m.stats.replay_errors = restore_errors;
        m.stats.imported_keys = imported;
        m.stats.recovery_ms = elapsed_ms;
        m.stats.serving_at_ms = serving_at;
        m.refusal = None;
        match &damage {
            Some(why) => m.refuse(Refusal::Corrupt(why.clone())),
            None => m.update_admission(),
        }
        m.stats.loaded_keys = keyspace_keys;
        format!(
            "redis-nvm: serving at {} ms after the process started ({elapsed_ms} ms of start-up): {keyspace_keys} keys \
             in the key space, {folded} log records folded into it first (last lsn {}), from {}; mode {}; {}",
            serving_at.map_or("?".into(), |t| t.to_string()),
            m.pool.log().last_lsn(),
            m.pool.info().path.display(),
            m.pool.info().mode,
            match &damage {
                Some(_) => "WRITES REFUSED until NVM.REPAIR (see above)",
                None => "accepting writes",
            }
        )
    });
    if let Some(why) = &damage {
        ctx.log(
            "warning",
            &format!(
                "redis-nvm: POOL DAMAGED: {why}. Serving the records before the damage; writes are refused. \
                 Copy the pool file aside, inspect it with `nvm-tool check`, then run NVM.REPAIR to drop the damaged tail"
            ),
        );
    }
    if restore_errors > 0 {
        ctx.log(
            "warning",
            &format!(
                "redis-nvm: {restore_errors} things could not be restored (see the lines above)"
            ),
        );
    }
    if let Some(s) = summary {
        ctx.log("notice", &s);
    }
    CAPTURING.store(true, Ordering::SeqCst);
}

/// Folds the log's backlog into the key space, on the main thread before anything is
/// served (the replayer thread is not running yet): then the key space alone is the
/// data. Returns (records folded, damage that stopped it).
fn fold_backlog(ctx: Ctx) -> (u64, Option<String>) {
    let Some(shared) = replayer::shared() else {
        return (0, None);
    };
    let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
    let Some((end, blobs)) = with_module(|m| {
        (
            m.pool.log().committed_end(),
            m.pool.log().live_blobs().to_vec(),
        )
    }) else {
        return (0, None);
    };
    let mut folded = 0;
    let mut walked = false;
    let damage = loop {
        match r.drain(end) {
            Ok(n) => {
                folded += n;
                break None;
            }
            // Opened without its walk, the key space only knows the top as free: find
            // the rest (O(data), only for a pool this full) and go on.
            Err(ReplayError::KeySpace(StoreError::HeapFull { .. }))
                if !walked && !r.keyspace().free_space_known() =>
            {
                walked = true;
                let began = Instant::now();
                if let Err(e) = r.keyspace_mut().find_free_space(&blobs) {
                    break Some(e.to_string());
                }
                ctx.log(
                    "notice",
                    &format!(
                        "redis-nvm: the key space's top was full: walked it for free space in {} ms",
                        began.elapsed().as_millis()
                    ),
                );
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    let applied = r.applied();
    with_module(|m| m.pool.log_mut().advance_head(applied));
    replayer::publish_keyspace(&r);
    (folded, damage)
}

/// Serves the key space: frozen and warmed up into DRAM behind the clients (see
/// `warmup`), or, when it holds no key, its free space found at once.
fn start_serving_keyspace(ctx: Ctx, keys: u64) {
    let Some(shared) = replayer::shared() else {
        return;
    };
    let blobs = with_module(|m| m.pool.log().live_blobs().to_vec()).unwrap_or_default();
    if keys == 0 {
        let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
        if !r.keyspace().free_space_known() {
            if let Err(e) = r.keyspace_mut().find_free_space(&blobs) {
                ctx.log(
                    "warning",
                    &format!("redis-nvm: the key space is damaged: {e}"),
                );
                with_module(|m| m.refuse(Refusal::Damaged(e.to_string())));
            }
        }
        return;
    }
    let save_points = super::warmup::suspend_save_points(ctx);
    // The lock is held only to freeze and to make the views: no server call under it.
    let frozen = {
        let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = r.keyspace_mut().freeze();
        super::warmup::Frozen::of(r.keyspace(), &snapshot, blobs)
    };
    super::warmup::begin(ctx, frozen, save_points);
}

/// Milliseconds since this process started (from /proc; `None` where it cannot tell).
fn process_age_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, clock ticks after boot) comes after the ")" of the name.
    let after = &stat[stat.rfind(')')? + 2..];
    let start_ticks: f64 = after.split(' ').nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let ticks = super::ffi::clock_ticks_per_second()?;
    Some(((uptime - start_ticks / ticks) * 1000.0).max(0.0) as u64)
}

fn count_keys(ctx: Ctx, databases: u32) -> u64 {
    let mut total = 0u64;
    for db in 0..databases {
        if ctx.select_db(db) {
            total += ctx.db_size();
        }
    }
    ctx.select_db(0);
    total
}

/// What clients are told while a long import runs (after `busy-reply-threshold`).
const RESTORING: &std::ffi::CStr =
    c"redis-nvm is importing the keys the server loaded into its new pool; NVM.INFO shows the progress. Retry shortly";

/// Logs every key of every db as a whole value (a migration into a new pool).
fn import_loaded_keys(ctx: Ctx, databases: u32) -> u64 {
    let mut imported = 0u64;
    let mut stopped = false;
    for db in 0..databases {
        if stopped || !ctx.select_db(db) {
            continue;
        }
        ctx.scan_keys(|keys| {
            ctx.yield_to_clients(RESTORING);
            for key in keys {
                if stopped {
                    return;
                }
                if let Some(effect) = whole_value(ctx, key) {
                    if append_imported(ctx, db, effect) {
                        imported += 1;
                    } else {
                        stopped = true;
                    }
                }
            }
        });
    }
    ctx.select_db(0);
    imported
}

/// Appends an imported value (the append waits while the replayer makes room: an import
/// can be many times the log's size). A value the pool cannot take stops the import with
/// writes refused: the server holds it, the pool does not.
fn append_imported(ctx: Ctx, db: u32, effect: Effect) -> bool {
    match with_module(|m| m.try_append(db, &[effect])) {
        Some(Ok(())) => true,
        Some(Err(why)) => {
            ctx.log(
                "warning",
                &format!(
                    "redis-nvm: importing the server's keys into the new pool failed ({why}); writes are refused: \
                     the keys loaded from RDB/AOF are served but not all of them are in the pool. Use a larger nvm.size"
                ),
            );
            with_module(|m| m.refuse(Refusal::Poisoned(format!("the import stopped: {why}"))));
            false
        }
        None => false,
    }
}

/// Says at load how the module coexists with RDB/AOF (read without command calls).
fn announce_policy(ctx: Ctx) {
    ctx.log(
        "notice",
        "redis-nvm: the NVM pool is the persistence of record: at start-up, data the server loaded from \
         dump.rdb/AOF is discarded when the pool has data and imported when the pool is new; recommended: \
         save \"\" and appendonly no",
    );
    if ctx.server_info_number("persistence", "aof_enabled") == Some(1) {
        ctx.log(
            "warning",
            "redis-nvm: appendonly is yes: the AOF duplicates the NVM pool (and costs its fsyncs); \
             at start-up the pool wins and the AOF's data is discarded. Set appendonly no",
        );
    }
    announce_page_size(ctx);
}

/// On persistent memory: the server's default `disable-thp yes` turns transparent huge
/// pages off for the whole process, which also keeps the kernel from mapping the DAX
/// pool with 2 MiB pages (seen in the qemu guest of `make test-dax`: no 2 MiB fault with
/// it, 2 MiB faults without it). Said once, as advice; nothing changes.
fn announce_page_size(ctx: Ctx) {
    let dax = with_module(|m| matches!(m.pool.media().mode(), crate::pmem::MediaMode::Dax(_)));
    if dax != Some(true) {
        return;
    }
    let Reply::Array(kv) = ctx.call("CONFIG", &[b"GET", b"disable-thp"]) else {
        return;
    };
    if kv.get(1).and_then(Reply::as_bytes) == Some(b"yes".as_slice()) {
        ctx.log(
            "notice",
            "redis-nvm: disable-thp is yes (the server's default): the kernel then maps the DAX pool with \
             4 KiB pages only; set disable-thp no for 2 MiB pages (see docs/design.md, huge-page mappings)",
        );
    }
}
