//! The `NVM.*` admin commands and the `nvm` INFO section.
//!
//! Text replies are `name:value` lines like INFO, so they read well in redis-cli and
//! parse easily in scripts. Nothing here writes the keyspace.

#![forbid(unsafe_code)]

use super::ffi::{Ctx, InfoCtx};
use super::replayer;
use super::state::{self, with_module, Module, Refusal};
use crate::effect::decode;
use crate::log::LogError;
use crate::pmem::MediaMode;

pub const HELP: &[&str] = &[
    "NVM.INFO      -- the pool: path, persistence mode and why, size, log use, last lsn, state, counters.",
    "NVM.CHECK     -- re-reads the whole log: checksums, lsn order, and that every record decodes.",
    "NVM.REPAIR [FORCE] -- after damage was found: drops the log from the damaged record on, so writes are accepted again (FORCE: damage at the log's head, see the refusal).",
    "NVM.GET key   -- the key as the NVM key space holds it, in this db: {type, ttl (ms, -1: none), value} (a map in RESP3), or nil.",
    "NVM.TYPE key  -- its type in the NVM key space, or none.",
    "NVM.TTL key / NVM.PTTL key -- its time to live there in seconds / ms (-1: none, -2: no key).",
    "NVM.DBSIZE    -- keys of this db in the NVM key space.",
    "NVM.SCAN cursor [MATCH pattern] [COUNT count] [TYPE type] -- like SCAN, over the NVM key space (served at any time, also while a restart's warm-up runs).",
    "NVM.HELP      -- this text.",
    "Also: INFO nvm; CONFIG GET nvm.*; CONFIG SET nvm.size <larger> grows the pool online; SUBSCRIBE __redis-nvm__:fill for fill warnings; the offline tool `nvm-tool check|summary|dump|grow <pool>`.",
];

pub fn nvm_help(ctx: Ctx) {
    let lines: Vec<String> = HELP.iter().map(|s| s.to_string()).collect();
    ctx.reply_array_of_text(&lines);
}

pub fn info_lines(m: &Module) -> Vec<(String, String)> {
    use std::sync::atomic::Ordering::Relaxed;
    let rp = &*replayer::PUBLISHED;
    let info = m.pool.info();
    let log = m.pool.log();
    let capacity = log.capacity().max(1);
    let state = match &m.refusal {
        None => "writable".to_string(),
        Some(Refusal::Full { .. }) => "full (writes refused)".to_string(),
        Some(Refusal::HeapFull { .. }) => {
            match state::FULL_ADMITS.load(std::sync::atomic::Ordering::Relaxed) {
                state::FULL_ADMITS_NON_GROWING => {
                    "full (key space: writes that add data refused, deletes run)".to_string()
                }
                _ => "full (key space: only deletes run)".to_string(),
            }
        }
        Some(Refusal::Poisoned(why)) => format!("poisoned (writes refused): {why}"),
        Some(Refusal::Corrupt(why)) | Some(Refusal::Damaged(why)) => {
            format!("damaged (writes refused): {why}")
        }
        Some(Refusal::Starting) => "restoring".to_string(),
    };
    let warm = super::warmup::progress();
    let mut lines: Vec<(&str, String)> = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("server", m.server.clone()),
        ("pool_path", info.path.display().to_string()),
        ("pool_uuid", info.uuid.clone()),
        ("pool_size", info.size.to_string()),
        ("pool_created_now", u8::from(info.created).to_string()),
        ("mode", m.pool.media().mode().to_string()),
        ("mode_reason", info.mode_reason.clone()),
        ("durability", m.settings.durability.as_str().to_string()),
        ("unsynced_bytes", log.unsynced_bytes().to_string()),
        ("state", state),
        ("log_capacity", log.capacity().to_string()),
        ("log_used", log.used_bytes().to_string()),
        ("log_free", log.free_bytes().to_string()),
        (
            "log_used_pct",
            format!("{:.2}", log.used_bytes() as f64 * 100.0 / capacity as f64),
        ),
        ("log_records", log.record_count().to_string()),
        ("log_backlog_bytes", log.used_bytes().to_string()),
        ("last_lsn", log.last_lsn().to_string()),
        (
            "applied_lsn",
            (rp.applied_lsn.load(Relaxed).saturating_sub(1)).to_string(),
        ),
        ("keyspace_keys", rp.keys.load(Relaxed).to_string()),
        ("keyspace_heap_used", rp.heap_used.load(Relaxed).to_string()),
        ("keyspace_heap_free", rp.heap_free.load(Relaxed).to_string()),
        (
            "keyspace_heap_largest_free",
            rp.heap_largest_free.load(Relaxed).to_string(),
        ),
        ("keyspace_fill_pct", format!("{:.2}", m.fill().percent)),
        (
            "keyspace_fill_warnings",
            super::config::fill_warnings_text(&m.settings.fill_warnings),
        ),
        (
            "keyspace_heap_capacity",
            rp.heap_capacity.load(Relaxed).to_string(),
        ),
        ("replay_records", rp.records.load(Relaxed).to_string()),
        ("replay_batches", rp.batches.load(Relaxed).to_string()),
        ("replay_records_per_sec", rp.rate.load(Relaxed).to_string()),
        (
            "replay_peak_records_per_sec",
            rp.peak_rate.load(Relaxed).to_string(),
        ),
        (
            "replay_apply_errors",
            rp.apply_errors.load(Relaxed).to_string(),
        ),
        (
            "replay_state",
            match replayer::stall_reason() {
                Some(why) => format!("stalled: {why}"),
                None => "running".to_string(),
            },
        ),
        ("appended_records", m.stats.appended_records.to_string()),
        ("appended_bytes", m.stats.appended_bytes.to_string()),
        ("field_level_effects", m.stats.field_effects.to_string()),
        (
            "whole_value_effects",
            m.stats.whole_value_effects.to_string(),
        ),
        ("blob_records", m.stats.blob_records.to_string()),
        ("blob_bytes", m.stats.blob_bytes.to_string()),
        ("log_full_waits", m.stats.log_full_waits.to_string()),
        ("keyspace_heap_headroom", m.heap_headroom().to_string()),
        (
            "keyspace_heap_reserve",
            state::heap_reserve_for(rp.heap_capacity.load(Relaxed)).to_string(),
        ),
        ("refused_writes", m.stats.refused_writes.to_string()),
        ("refused_too_big", m.stats.refused_too_big.to_string()),
        ("in_doubt_writes", m.stats.in_doubt_writes.to_string()),
        ("recovery_keys_loaded", m.stats.loaded_keys.to_string()),
        ("recovery_records", m.stats.replayed_records.to_string()),
        ("recovery_errors", m.stats.replay_errors.to_string()),
        ("recovery_ms", m.stats.recovery_ms.to_string()),
        (
            "recovery_discarded_server_keys",
            m.stats.discarded_server_keys.to_string(),
        ),
        ("recovery_imported_keys", m.stats.imported_keys.to_string()),
        ("pool_open_ms", m.stats.pool_open_ms.to_string()),
        (
            "serving_at_ms",
            m.stats
                .serving_at_ms
                .map_or("unknown".into(), |t| t.to_string()),
        ),
        (
            "warmup_state",
            match (warm.running, warm.total) {
                (true, _) => "running",
                (false, 0) => "none",
                (false, _) => "done",
            }
            .to_string(),
        ),
        ("warmup_keys_total", warm.total.to_string()),
        ("warmup_keys_loaded", warm.loaded.to_string()),
        ("warmup_keys_faulted", warm.faulted.to_string()),
        ("warmup_keys_dropped", warm.dropped.to_string()),
        ("warmup_damaged", warm.damaged.to_string()),
        ("warmup_slices", warm.slices.to_string()),
        ("warmup_longest_slice_us", warm.longest_slice_us.to_string()),
        ("warmup_waits_for_the_walk", warm.waits.to_string()),
        ("warmup_ms", warm.duration_ms.to_string()),
        (
            "unsupported_type_events",
            m.stats.unsupported_type_events.to_string(),
        ),
    ];
    if matches!(info.mode, MediaMode::Emulate { .. }) {
        lines.push((
            "warning",
            "EMULATION MODE: the pool is treated as persistent memory but is not; it does not survive power loss"
                .to_string(),
        ));
    }
    lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub fn nvm_info(ctx: Ctx) {
    match with_module(|m| info_lines(m)) {
        Some(lines) => {
            let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect();
            ctx.reply_text(&text);
        }
        None => ctx.reply_error("ERR redis-nvm is not initialised"),
    }
}

pub fn info_section(ictx: InfoCtx) {
    if let Some(lines) = with_module(|m| info_lines(m)) {
        ictx.section();
        for (k, v) in lines {
            ictx.field(&k, &v);
        }
    }
}

/// Re-reads and decodes the live log, walks the key space verifying every checksum, and
/// with `DATASET` compares key space + log tail with what the server holds.
/// ACL categories of the module's commands, where the server lets a module set them
/// (Redis 7.4+, Valkey 8). Elsewhere (Redis 7.0, whose module commands have no category
/// but `@all`) the commands that need power check that the caller could run a native
/// command of the same categories: NVM.REPAIR as DEBUG (admin, dangerous), NVM.CHECK as
/// KEYS (slow, dangerous).
pub const ACL_CATEGORIES: &[(&str, &str)] = &[
    ("nvm.info", "fast"),
    ("nvm.help", "fast"),
    ("nvm.check", "slow dangerous"),
    ("nvm.repair", "admin dangerous write"),
    ("nvm.get", "read slow keyspace"),
    ("nvm.type", "read fast keyspace"),
    ("nvm.ttl", "read fast keyspace"),
    ("nvm.pttl", "read fast keyspace"),
    ("nvm.dbsize", "read fast keyspace"),
    ("nvm.scan", "read slow keyspace"),
];

/// True once the server took `ACL_CATEGORIES` itself.
pub static ACL_BY_SERVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the caller may run `command`, which is as powerful as `native`: always where
/// the server checks categories; else by `native`'s permissions (a denial replies like
/// the server's own and is in ACL LOG).
pub(super) fn permitted(ctx: Ctx, command: &str, native: &[&[u8]]) -> bool {
    if ACL_BY_SERVER.load(std::sync::atomic::Ordering::Relaxed)
        || ctx.caller_may_run(native, command)
    {
        return true;
    }
    ctx.reply_error(&format!(
        "NOPERM this user has no permissions to run the '{command}' command"
    ));
    false
}

pub fn nvm_check(ctx: Ctx, args: &[Vec<u8>]) {
    if !permitted(ctx, "nvm.check", &[b"KEYS", b"*"]) {
        return;
    }
    let dataset = args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"dataset"));
    let mut lines = match check_log() {
        Some(l) => l,
        None => return ctx.reply_error("ERR redis-nvm is not initialised"),
    };
    let mut ok = lines.iter().all(|l| !l.starts_with("problem:"));
    match replayer::shared() {
        None => lines.push("keyspace:absent".into()),
        Some(shared) => {
            let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
            match r.keyspace_mut().check(true) {
                Ok(rep) => {
                    lines.push(format!("keyspace_keys:{}", rep.keys));
                    lines.push(format!("keyspace_members:{}", rep.members));
                    lines.push(format!("keyspace_blocks:{}", rep.blocks));
                    lines.push(format!("keyspace_bytes:{}", rep.bytes_reachable));
                    for p in rep.problems.iter().take(20) {
                        ok = false;
                        lines.push(format!(
                            "problem:key space at pool offset {}: {}",
                            p.offset, p.what
                        ));
                    }
                }
                Err(e) => {
                    ok = false;
                    lines.push(format!("problem:{e}"));
                }
            }
            if dataset && ok {
                match compare_dataset(ctx, &r) {
                    Ok(n) => lines.push(format!("dataset:equal ({n} keys)")),
                    Err(why) => {
                        ok = false;
                        lines.push(format!("problem:dataset differs: {why}"));
                    }
                }
            }
        }
    }
    lines.insert(
        0,
        if ok {
            "result:ok".into()
        } else {
            "result:damaged".into()
        },
    );
    ctx.reply_text(&(lines.join("\r\n") + "\r\n"));
}

/// Key space + live log records vs the server's keys (streams compared by presence).
fn compare_dataset(ctx: Ctx, r: &crate::replay::Replayer) -> Result<u64, String> {
    use crate::effect::model::{Dataset, ModelValue};
    let mut stored = r.keyspace().to_dataset().map_err(|e| e.to_string())?;
    let tail: Vec<_> = with_module(|m| m.pool.log().records().collect()).unwrap_or_default();
    for rec in tail {
        let rec = rec.map_err(|e| e.to_string())?;
        let e = decode(rec.kind, &rec.payload).map_err(|e| e.to_string())?;
        stored.apply(rec.db, &e).map_err(|e| e.0)?;
    }
    // Keys only: a FUNCTION DUMP lists libraries in the server's dict order, which differs
    // from one process to the next.
    let mut live = Dataset {
        functions: stored.functions.clone(),
        ..Dataset::default()
    };
    let databases = with_module(|m| m.databases).unwrap_or(16);
    for db in 0..databases {
        if !ctx.select_db(db) {
            continue;
        }
        for key in scan_keys(ctx) {
            if let Some(e) = super::capture::whole_value(ctx, &key) {
                live.apply(db, &e).map_err(|e| e.0)?;
            }
        }
    }
    ctx.select_db(0);
    let blank_streams = |d: &mut Dataset| {
        for keys in d.dbs.values_mut() {
            for entry in keys.values_mut() {
                if let ModelValue::Stream { .. } = entry.value {
                    entry.value = ModelValue::String(b"<stream>".to_vec());
                }
            }
        }
    };
    blank_streams(&mut stored);
    blank_streams(&mut live);
    if stored == live {
        return Ok(stored.key_count() as u64);
    }
    for (db, keys) in &live.dbs {
        for (k, v) in keys {
            if stored.get(*db, k) != Some(v) {
                let short = |e: Option<&crate::effect::model::Entry>| {
                    let t = format!("{e:?}");
                    t.chars().take(300).collect::<String>()
                };
                return Err(format!(
                    "db {db} key {:?}: pool {} server {}",
                    String::from_utf8_lossy(k),
                    short(stored.get(*db, k)),
                    short(Some(v))
                ));
            }
        }
    }
    Err(format!(
        "the pool holds {} keys, the server {}",
        stored.key_count(),
        live.key_count()
    ))
}

/// Every key of the selected db, once each.
fn scan_keys(ctx: Ctx) -> Vec<Vec<u8>> {
    let mut out = std::collections::BTreeSet::new();
    ctx.scan_keys(|keys| out.extend(keys.iter().map(|k| k.to_vec())));
    out.into_iter().collect()
}

/// Re-reads and decodes the live log.
fn check_log() -> Option<Vec<String>> {
    with_module(|m| {
        let mut records = 0u64;
        let mut bytes = 0u64;
        let mut problem: Option<String> = None;
        for item in m.pool.log().records() {
            match item {
                Ok(r) => {
                    if let Err(e) = decode(r.kind, &r.payload) {
                        problem = Some(format!(
                            "record at pool offset {} (lsn {}) does not decode: {e}",
                            r.offset, r.lsn
                        ));
                        break;
                    }
                    records += 1;
                    bytes += r.payload.len() as u64;
                }
                Err(LogError::Corrupt(c)) => {
                    problem = Some(c.to_string());
                    break;
                }
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            }
        }
        let mut lines = vec![
            format!("records_checked:{records}"),
            format!("payload_bytes:{bytes}"),
            format!("last_lsn:{}", m.pool.log().last_lsn()),
        ];
        if let Some(p) = problem {
            lines.push(format!("problem:{p}"));
        }
        lines
    })
}

pub fn nvm_repair(ctx: Ctx, args: &[Vec<u8>]) {
    if !permitted(ctx, "nvm.repair", &[b"DEBUG", b"HELP"]) {
        return;
    }
    let force = match args {
        [] => false,
        [f] if f.eq_ignore_ascii_case(b"FORCE") => true,
        _ => {
            ctx.reply_error("ERR syntax: NVM.REPAIR [FORCE]");
            return;
        }
    };
    let result = with_module(|m| {
        if let Some(Refusal::Damaged(why)) = &m.refusal {
            return Err(format!(
                "ERR the damage is in the key space ({why}), which NVM.REPAIR cannot mend: the damaged keys \
                 are not served; copy the pool file aside and inspect it with `nvm-tool check`"
            ));
        }
        if !matches!(m.refusal, Some(Refusal::Corrupt(_))) {
            return Err("ERR nothing to repair: the pool is not damaged".to_string());
        }
        match m.pool.repair(force) {
            Ok(dropped) => {
                m.refusal = None;
                m.update_admission();
                Ok(format!(
                    "OK dropped {dropped} bytes of damaged log after lsn {}; writes accepted",
                    m.pool.log().last_lsn()
                ))
            }
            Err(e) => Err(format!("ERR repair failed: {e}")),
        }
    });
    match result {
        Some(Ok(msg)) => {
            ctx.log("warning", &format!("redis-nvm: NVM.REPAIR: {msg}"));
            ctx.reply_simple(&msg);
        }
        Some(Err(e)) => ctx.reply_error(&e),
        None => ctx.reply_error("ERR redis-nvm is not initialised"),
    }
}

/// What a refused write runs instead of itself (the command filter rewrote it).
/// The reply of a write the filter refused: the reason the filter gave (its one
/// argument), else the module's refusal.
pub fn nvm_refused(ctx: Ctx, args: &[Vec<u8>]) {
    let msg = with_module(|m| {
        m.stats.refused_writes += 1;
        match args.first() {
            Some(reason) => String::from_utf8_lossy(reason).into_owned(),
            None => m.refusal_message(),
        }
    })
    .unwrap_or_else(|| "NVMREFUSED write refused by redis-nvm".into());
    ctx.reply_error(&msg);
}
