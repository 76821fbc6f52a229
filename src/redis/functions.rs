//! Function libraries: persisted like data, as the server's own `FUNCTION DUMP` payload.
//!
//! FUNCTION LOAD / DELETE / FLUSH / RESTORE fire no keyspace event and no module API tells
//! a module that the libraries changed, so: the command filter notes every FUNCTION write
//! (and EXEC soon after one, which may run a queued one; and the end of a load, which a
//! replica's full sync or DEBUG RELOAD brings); at the end of that event-loop iteration,
//! before the server writes the iteration's replies, the libraries are dumped and, if
//! they differ from what the pool holds, logged whole (`Effect::Functions`). At start-up
//! the pool's libraries replace what the server loaded from RDB/AOF (or, for a new pool,
//! what it loaded is logged), before any client command can run.
//!
//! Limits (docs/design.md): durable at the end of the iteration, like the other deferred
//! writes, not inside the command; the dump is a server call (`function|dump` in
//! commandstats, once per iteration that had a FUNCTION write).

#![forbid(unsafe_code)]

use super::ffi::{Ctx, Reply};
use super::state::with_module;
use crate::effect::Effect;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The libraries may have changed this iteration.
static DIRTY: AtomicBool = AtomicBool::new(false);
/// When (unix ms) a FUNCTION write was last filtered: an EXEC within `QUEUED_WINDOW_MS`
/// may run it (Redis 7.0's filter cannot tell a queued command from a run one).
static LAST_WRITE_MS: AtomicU64 = AtomicU64::new(0);
const QUEUED_WINDOW_MS: u64 = 600_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Called by the filter with each command's name and first argument.
pub fn note_command(name: &[u8], first_arg: Option<&[u8]>) {
    let is = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    if is(name, "function") {
        let writes = ["load", "delete", "flush", "restore"];
        if first_arg.is_some_and(|sub| writes.iter().any(|w| is(sub, w))) {
            LAST_WRITE_MS.store(now_ms(), Ordering::Relaxed);
            DIRTY.store(true, Ordering::Relaxed);
        }
    } else if is(name, "exec")
        && now_ms().saturating_sub(LAST_WRITE_MS.load(Ordering::Relaxed)) < QUEUED_WINDOW_MS
    {
        DIRTY.store(true, Ordering::Relaxed);
    }
}

/// A load (a replica's full sync, DEBUG RELOAD) ended: it brought libraries too.
pub fn note_load_ended() {
    DIRTY.store(true, Ordering::Relaxed);
}

/// The server's libraries now, as its `FUNCTION DUMP` payload.
pub fn dump(ctx: Ctx) -> Option<Vec<u8>> {
    match ctx.call("FUNCTION", &[b"DUMP"]) {
        Reply::Str(d) => Some(d),
        _ => None,
    }
}

/// End of an event-loop iteration: logs the libraries if they changed.
pub fn log_if_changed(ctx: Ctx) {
    if !DIRTY.swap(false, Ordering::Relaxed) {
        return;
    }
    let Some(now) = dump(ctx) else {
        return;
    };
    with_module(|m| {
        if m.functions.as_deref() != Some(now.as_slice()) {
            m.append(0, &[Effect::Functions { dump: now.clone() }]);
            m.functions = Some(now);
        }
    });
}
