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
use crate::effect::decode;
use crate::effect::{Effect, Value};
use crate::keyspace::{StoredEntry, StoredValue};
use crate::log::LogError;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Lower-case names of the server's write commands (`container|sub` for subcommands),
/// from `COMMAND` at start-up.
static WRITE_COMMANDS: once_cell::sync::Lazy<
    std::sync::RwLock<std::collections::HashSet<Vec<u8>>>,
> = once_cell::sync::Lazy::new(Default::default);

/// Whether `name` (with its first argument, for container commands) is a write command.
pub fn is_write_command(name: &[u8], first_arg: Option<&[u8]>) -> bool {
    let set = WRITE_COMMANDS.read().unwrap_or_else(|p| p.into_inner());
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
    fn visit(entries: &[Reply], out: &mut std::collections::HashSet<Vec<u8>>) {
        for e in entries {
            let Reply::Array(parts) = e else { continue };
            let (Some(name), Some(Reply::Array(flags))) =
                (parts.first().and_then(Reply::as_bytes), parts.get(2))
            else {
                continue;
            };
            if flags.iter().any(|f| f.as_bytes() == Some(b"write")) {
                out.insert(name.to_ascii_lowercase());
            }
            if let Some(Reply::Array(subs)) = parts.get(9) {
                visit(subs, out);
            }
        }
    }
    if let Reply::Array(entries) = ctx.call("COMMAND", &[]) {
        let mut set = WRITE_COMMANDS.write().unwrap_or_else(|p| p.into_inner());
        visit(&entries, &mut set);
    }
}

pub fn run(ctx: Ctx) {
    let started = Instant::now();
    load_write_commands(ctx);
    let Some(log_records) = with_module(|m| m.pool.log().record_count()) else {
        return;
    };
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
                 of record: discarding them and restoring the pool (the RDB/AOF files are left as they are on disk)"
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

    let (loaded, mut load_errors) = load_keyspace(ctx);
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
            load_errors += 1;
            ctx.log(
                "warning",
                &format!("redis-nvm: restoring the function libraries: {e}"),
            );
        }
    }
    let (replayed, mut replay_errors, damage) = replay(ctx);
    replay_errors += load_errors;
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
    super::functions::settled(ctx);

    {
        // Start-up went through server calls (COMMAND, restoring): clients must not see
        // them in the stats of a server that, to them, has just started. (The reset
        // itself stays counted once.)
        ctx.call("SLOWLOG", &[b"RESET"]);
        ctx.call("CONFIG", &[b"RESETSTAT"]);
    }
    ctx.select_db(0);

    let elapsed_ms = started.elapsed().as_millis() as u64;
    let summary = with_module(|m| {
        m.databases = databases;
        m.stats.replayed_records = replayed;
        m.stats.replay_errors = replay_errors;
        m.stats.imported_keys = imported;
        m.stats.recovery_ms = elapsed_ms;
        m.refusal = None;
        match &damage {
            Some(why) => m.refuse(Refusal::Corrupt(why.clone())),
            None => m.update_admission(),
        }
        m.stats.loaded_keys = loaded;
        format!(
            "redis-nvm: loaded {loaded} keys from the key space and replayed {replayed} log records (last lsn {}) from {} in {elapsed_ms} ms; mode {}; {}",
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
                "redis-nvm: POOL DAMAGED: {why}. Serving the {replayed} records before the damage; writes are refused. \
                 Copy the pool file aside, inspect it with `nvm-tool check`, then run NVM.REPAIR to drop the damaged tail"
            ),
        );
    }
    if replay_errors > 0 {
        ctx.log(
            "warning",
            &format!("redis-nvm: {replay_errors} records could not be applied during restore (see the lines above)"),
        );
    }
    if let Some(s) = summary {
        ctx.log("notice", &s);
    }
    CAPTURING.store(true, Ordering::SeqCst);
}

/// Replays every record; returns (applied, failed, damage description).
fn replay(ctx: Ctx) -> (u64, u64, Option<String>) {
    let mut applied = 0u64;
    let mut failed = 0u64;
    let Some(mut cursor) = with_module(|m| m.pool.log().head()) else {
        return (0, 0, None);
    };
    loop {
        // Read a bounded chunk under the lock, apply it without the lock (server calls can
        // fire callbacks that take it), so memory stays bounded whatever the log's size.
        let chunk = with_module(|m| {
            let mut records = m.pool.log().records_from(cursor);
            let mut chunk = Vec::new();
            let mut bytes = 0usize;
            while bytes < REPLAY_CHUNK_BYTES {
                match records.next() {
                    Some(item) => {
                        bytes += item.as_ref().map(|r| r.payload.len() + 64).unwrap_or(0);
                        chunk.push(item);
                    }
                    None => break,
                }
            }
            cursor = records.cursor();
            chunk
        })
        .unwrap_or_default();
        if chunk.is_empty() {
            return (applied, failed, None);
        }
        match replay_chunk(ctx, chunk, &mut applied, &mut failed) {
            Some(damage) => return (applied, failed, Some(damage)),
            None => continue,
        }
    }
}

/// How much log one replay step holds in memory.
const REPLAY_CHUNK_BYTES: usize = 16 << 20;

/// What clients are told while a long restore runs (after `busy-reply-threshold`).
const RESTORING: &std::ffi::CStr =
    c"redis-nvm is restoring its pool; NVM.INFO shows the progress. Retry shortly";

/// Records between two offers to serve clients (the server decides when to actually do it).
const YIELD_EVERY: u64 = 256;

/// Applies a chunk of records; returns the damage description if it ends at damage.
fn replay_chunk(
    ctx: Ctx,
    records: Vec<Result<crate::log::Record, LogError>>,
    applied: &mut u64,
    failed: &mut u64,
) -> Option<String> {
    for item in records {
        let record = match item {
            Ok(r) => r,
            Err(LogError::Corrupt(c)) => return Some(c.to_string()),
            Err(e) => return Some(e.to_string()),
        };
        let effect = match decode(record.kind, &record.payload) {
            Ok(e) => e,
            Err(e) => {
                return Some(format!(
                "record at pool offset {} (lsn {}) passed its checksum but cannot be decoded: {e}",
                record.offset, record.lsn
            ))
            }
        };
        if applied.is_multiple_of(YIELD_EVERY) {
            with_module(|m| m.stats.replayed_records = *applied);
            ctx.yield_to_clients(RESTORING);
        }
        if let Err(e) = restore::apply(ctx, record.db, &effect) {
            *failed += 1;
            if *failed <= 10 {
                ctx.log(
                    "warning",
                    &format!(
                        "redis-nvm: lsn {} ({} in db {}): {e}",
                        record.lsn,
                        effect.name(),
                        record.db
                    ),
                );
            }
        }
        *applied += 1;
    }
    None
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

/// Loads every key of the key space into the server; returns (keys, failures).
///
/// A reader thread decodes the key space (address order, see `KeySpace::visit`) into
/// batches while the main thread only inserts them: the server's own work (dict
/// lookups, inserts, rehashing) is most of a load, and on a second core the decoding
/// costs the main thread nothing.
fn load_keyspace(ctx: Ctx) -> (u64, u64) {
    let Some(shared) = replayer::shared() else {
        return (0, 0);
    };
    let r = shared.lock().unwrap_or_else(|p| p.into_inner());
    let keyspace = r.keyspace();
    let mut loaded = 0u64;
    let mut failed = 0u64;
    let (batches, received) = std::sync::mpsc::sync_channel::<Vec<LoadedKey>>(LOAD_QUEUE);
    let read = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(LOAD_BATCH);
            let result = keyspace.visit(|db, key, entry| {
                batch.push((db, key.to_vec(), entry));
                if batch.len() == LOAD_BATCH {
                    // The main thread receives until this thread ends: a send cannot fail.
                    let _ = batches.send(std::mem::take(&mut batch));
                }
                Ok(())
            });
            if !batch.is_empty() {
                let _ = batches.send(batch);
            }
            result
        });
        for batch in received {
            with_module(|m| m.stats.loaded_keys = loaded);
            ctx.yield_to_clients(RESTORING);
            for (db, key, entry) in batch {
                if let Err(e) = load_key(ctx, db, &key, entry) {
                    failed += 1;
                    if failed <= 10 {
                        ctx.log(
                            "warning",
                            &format!(
                                "redis-nvm: loading key {:?} of db {db}: {e}",
                                String::from_utf8_lossy(&key)
                            ),
                        );
                    }
                }
                loaded += 1;
            }
        }
        reader.join()
    });
    let problem = match read {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the reader thread panicked".to_string()),
    };
    if let Some(e) = problem {
        ctx.log(
            "warning",
            &format!("redis-nvm: the key space could not be read completely: {e} (see NVM.CHECK)"),
        );
        failed += 1;
    }
    (loaded, failed)
}

/// (db, key, stored entry), as the load's reader thread hands them over.
type LoadedKey = (u32, Vec<u8>, StoredEntry);

/// Keys per batch handed from the reader thread to the main thread, and batches queued.
const LOAD_BATCH: usize = 256;
const LOAD_QUEUE: usize = 64;

/// Recreates one stored key in the server (strings straight through the key API).
fn load_key(ctx: Ctx, db: u32, key: &[u8], entry: StoredEntry) -> Result<(), String> {
    if let StoredValue::String(s) = &entry.value {
        if !ctx.select_db(db) {
            return Err(format!("cannot select db {db}"));
        }
        return ctx.put_string(key, s, entry.expire_at_ms);
    }
    for effect in effects_of(key, entry) {
        restore::apply(ctx, db, &effect)?;
    }
    Ok(())
}

/// The effects that recreate a stored key in the server.
fn effects_of(key: &[u8], entry: StoredEntry) -> Vec<Effect> {
    let key = key.to_vec();
    let put = |value| Effect::Put {
        key: key.clone(),
        value,
        expire_at_ms: entry.expire_at_ms,
    };
    match entry.value {
        StoredValue::String(s) => vec![put(Value::String(s))],
        StoredValue::List(l) => vec![put(Value::List(l))],
        StoredValue::Hash(h) => vec![put(Value::Hash(h))],
        StoredValue::Set(v) => vec![put(Value::Set(v))],
        StoredValue::Zset(z) => vec![put(Value::Zset(z))],
        StoredValue::Stream { dump, ops } => {
            let mut out = Vec::with_capacity(ops.len() + 2);
            if let Some(d) = dump {
                out.push(put(Value::StreamDump(d)));
            }
            out.extend(ops);
            if dump_less_expiry(&out, entry.expire_at_ms) {
                out.push(Effect::ExpireAt {
                    key: key.clone(),
                    at_ms: entry.expire_at_ms,
                });
            }
            out
        }
    }
}

/// A stream rebuilt from its effects alone still needs its expiry.
fn dump_less_expiry(effects: &[Effect], expire_at_ms: i64) -> bool {
    expire_at_ms >= 0 && !matches!(effects.first(), Some(Effect::Put { .. }))
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
}
