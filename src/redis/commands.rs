//! The `NVM.*` admin commands and the `nvm` INFO section.
//!
//! Text replies are `name:value` lines like INFO, so they read well in redis-cli and
//! parse easily in scripts. Nothing here writes the keyspace.

#![forbid(unsafe_code)]

use super::ffi::{Ctx, InfoCtx};
use super::state::{with_module, Module, Refusal};
use crate::effect::decode;
use crate::log::LogError;
use crate::pmem::MediaMode;

pub const HELP: &[&str] = &[
    "NVM.INFO      -- the pool: path, persistence mode and why, size, log use, last lsn, state, counters.",
    "NVM.CHECK     -- re-reads the whole log: checksums, lsn order, and that every record decodes.",
    "NVM.REPAIR    -- after damage was found: drops the log from the damaged record on, so writes are accepted again.",
    "NVM.HELP      -- this text.",
    "Also: INFO nvm; CONFIG GET nvm.*; the offline tool `nvm-tool check <pool>`.",
];

pub fn nvm_help(ctx: Ctx) {
    let lines: Vec<String> = HELP.iter().map(|s| s.to_string()).collect();
    ctx.reply_array_of_text(&lines);
}

pub fn info_lines(m: &Module) -> Vec<(String, String)> {
    let info = m.pool.info();
    let log = m.pool.log();
    let capacity = log.capacity().max(1);
    let state = match &m.refusal {
        None => "writable".to_string(),
        Some(Refusal::Full { .. }) => "full (writes refused)".to_string(),
        Some(Refusal::Poisoned(why)) => format!("poisoned (writes refused): {why}"),
        Some(Refusal::Corrupt(why)) => format!("damaged (writes refused): {why}"),
        Some(Refusal::Starting) => "restoring".to_string(),
    };
    let mut lines: Vec<(&str, String)> = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("server", m.server.clone()),
        ("pool_path", info.path.display().to_string()),
        ("pool_uuid", info.uuid.clone()),
        ("pool_size", info.size.to_string()),
        ("pool_created_now", u8::from(info.created).to_string()),
        ("mode", info.mode.to_string()),
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
        ("last_lsn", log.last_lsn().to_string()),
        ("appended_records", m.stats.appended_records.to_string()),
        ("appended_bytes", m.stats.appended_bytes.to_string()),
        ("field_level_effects", m.stats.field_effects.to_string()),
        (
            "whole_value_effects",
            m.stats.whole_value_effects.to_string(),
        ),
        ("refused_writes", m.stats.refused_writes.to_string()),
        ("in_doubt_writes", m.stats.in_doubt_writes.to_string()),
        ("recovery_records", m.stats.replayed_records.to_string()),
        ("recovery_errors", m.stats.replay_errors.to_string()),
        ("recovery_ms", m.stats.recovery_ms.to_string()),
        (
            "recovery_discarded_server_keys",
            m.stats.discarded_server_keys.to_string(),
        ),
        ("recovery_imported_keys", m.stats.imported_keys.to_string()),
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

/// Re-reads and decodes the whole log.
pub fn nvm_check(ctx: Ctx) {
    let report = with_module(|m| {
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
        match problem {
            None => lines.insert(0, "result:ok".into()),
            Some(p) => {
                lines.insert(0, "result:damaged".into());
                lines.push(format!("problem:{p}"));
            }
        }
        lines.join("\r\n") + "\r\n"
    });
    match report {
        Some(text) => ctx.reply_text(&text),
        None => ctx.reply_error("ERR redis-nvm is not initialised"),
    }
}

pub fn nvm_repair(ctx: Ctx) {
    let result = with_module(|m| {
        if !matches!(m.refusal, Some(Refusal::Corrupt(_))) {
            return Err("ERR nothing to repair: the pool is not damaged".to_string());
        }
        match m.pool.repair() {
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
pub fn nvm_refused(ctx: Ctx) {
    let msg = with_module(|m| {
        m.stats.refused_writes += 1;
        m.refusal_message()
    })
    .unwrap_or_else(|| "NVMREFUSED write refused by redis-nvm".into());
    ctx.reply_error(&msg);
}
