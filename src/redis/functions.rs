//! Function libraries: persisted like data, as the server's own `FUNCTION DUMP` payload.
//!
//! FUNCTION LOAD / DELETE / FLUSH / RESTORE fire no keyspace event and no module API tells
//! a module that the libraries changed, so: the command filter notes every FUNCTION write
//! (and every EXEC while one that may have been queued has not run: `silent::Tracker`;
//! and the end of a load, which a replica's full sync or DEBUG RELOAD brings); at the end
//! of that event-loop iteration,
//! before the server writes the iteration's replies, the libraries are dumped if one
//! ran and, if they differ from what the pool holds, logged whole (`Effect::Functions`). At start-up
//! the pool's libraries replace what the server loaded from RDB/AOF (or, for a new pool,
//! what it loaded is logged), before any client command can run.
//!
//! Limits (docs/design.md): durable at the end of the iteration, like the other deferred
//! writes, not inside the command; the dump is a server call (`function|dump` in
//! commandstats, MONITOR, SLOWLOG), made only in an iteration in which INFO shows that a
//! FUNCTION write ran (its commandstats calls grew) on libraries that were or became
//! non-empty: so a FUNCTION FLUSH of nothing, or an EXEC that ran no FUNCTION write,
//! leaves no trace.

#![forbid(unsafe_code)]

use super::ffi::{Ctx, Reply};
use super::silent::{calls_and_rejections, Tracker};
use super::state::with_module;
use crate::effect::Effect;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Nothing to look at this iteration.
const IDLE: u8 = 0;
/// A FUNCTION write may have run: dump if the footprint says one did.
const LOOK: u8 = 1;
/// A load replaced the libraries (its calls are not counted): dump.
const LOADED: u8 = 2;
static PENDING: AtomicU8 = AtomicU8::new(IDLE);

/// FUNCTION writes the filter let through against those the server ran or rejected, and
/// whether one may still be queued in MULTI: then every EXEC may run it, whichever client
/// sends it (Redis 7.0's filter cannot tell a queued command from a run one: there, every
/// FUNCTION write may be queued; Valkey 8 and Redis 7.2+ say whether the client is in
/// MULTI). Cleared only when the server has counted every write let through.
static QUEUED: Mutex<(Tracker, bool)> = Mutex::new((Tracker::new(), false));

fn queued() -> std::sync::MutexGuard<'static, (Tracker, bool)> {
    QUEUED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The footprint at the last look.
static LAST: Mutex<Option<Footprint>> = Mutex::new(None);

/// What INFO says about the libraries, read without a server call: how many there are,
/// and how many times each FUNCTION write has run (commandstats counts a queued write
/// when EXEC runs it, and not a refused or merely queued one). Equal footprints: no write
/// ran since the last look; zero libraries before and after: none can have changed.
#[derive(PartialEq)]
struct Footprint {
    libraries: Option<Vec<u8>>,
    write_calls: [Option<u64>; 4],
    /// Calls and rejected calls of the writes, all together (for `QUEUED`).
    counted: u64,
}

const WRITES: [&str; 4] = ["load", "delete", "flush", "restore"];
const WRITE_STATS: [&str; 4] = [
    "cmdstat_function|load",
    "cmdstat_function|delete",
    "cmdstat_function|flush",
    "cmdstat_function|restore",
];

fn footprint(ctx: Ctx) -> Footprint {
    let [libraries] = ctx.server_info_fields("memory", ["number_of_libraries"]);
    let stats = ctx.server_info_fields("commandstats", WRITE_STATS);
    Footprint {
        libraries,
        counted: stats
            .iter()
            .map(|s| s.as_deref().map(calls_and_rejections).unwrap_or(0))
            .sum(),
        write_calls: stats.map(|s| s.as_deref().and_then(calls_of)),
    }
}

/// `calls=N,usec=...` → N.
fn calls_of(stat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    let calls = text.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
    calls.parse().ok()
}

impl Footprint {
    fn no_libraries(&self) -> bool {
        self.libraries.as_deref() == Some(b"0")
    }
}

/// Called by the filter with each command's name, first argument, and whether its
/// client is in MULTI (`None`: unknown).
pub fn note_command(
    name: &[u8],
    first_arg: Option<&[u8]>,
    in_multi: impl FnOnce() -> Option<bool>,
) {
    let is = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    if is(name, "function") {
        if first_arg.is_some_and(|sub| WRITES.iter().any(|w| is(sub, w))) {
            PENDING.fetch_max(LOOK, Ordering::Relaxed);
            let mut q = queued();
            q.0.note();
            if in_multi() != Some(false) {
                q.1 = true;
            }
        }
    } else if is(name, "exec") && queued().1 {
        PENDING.fetch_max(LOOK, Ordering::Relaxed);
    }
}

/// Start-up has restored (or imported) the libraries: nothing is pending.
pub fn settled(ctx: Ctx) {
    PENDING.store(IDLE, Ordering::Relaxed);
    let now = footprint(ctx);
    *queued() = {
        let mut t = Tracker::new();
        t.settle(now.counted);
        (t, false)
    };
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
}

/// A load (a replica's full sync, DEBUG RELOAD) ended: it brought libraries too.
pub fn note_load_ended() {
    PENDING.store(LOADED, Ordering::Relaxed);
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
    let pending = PENDING.swap(IDLE, Ordering::Relaxed);
    if pending == IDLE {
        return;
    }
    let now = footprint(ctx);
    {
        let mut q = queued();
        if q.0.look(now.counted).settled {
            q.1 = false;
        }
    }
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let unchanged = match last.as_ref() {
        Some(before) if pending == LOOK && *before == now => true,
        Some(before) => before.no_libraries() && now.no_libraries(),
        None => false,
    };
    *last = Some(now);
    drop(last);
    if unchanged {
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
