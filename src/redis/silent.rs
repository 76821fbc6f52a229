//! Writes the server runs without a keyspace event, and how the module knows when they ran.
//!
//! XACK, XCLAIM, XAUTOCLAIM and XREADGROUP change a stream's consumer groups silently, and
//! FUNCTION LOAD / DELETE / FLUSH / RESTORE the function libraries. The command filter sees
//! each of them, and what they changed is logged whole at the end of the event-loop
//! iteration in which they ran (`capture::defer`, `functions`). That iteration is not
//! always the one in which the filter saw the command:
//! - a command queued in MULTI runs when its client's EXEC runs, maybe many iterations
//!   later, and the filter does not see it again (Redis 7.0's filter cannot even tell a
//!   queued command from a run one);
//! - a blocked XREADGROUP delivers when an XADD serves it, in the XADD's iteration.
//!
//! Queued writes: each kind keeps a `Tracker`: how many the filter let through, and how
//! many INFO commandstats says ran or were rejected (`calls` + `rejected_calls`, read
//! without a server call; EXEC's queued commands count when they run). While some may
//! still run, the streams they name stay watched: at the end of an iteration that may have
//! run one (an EXEC, a new silent write), the counts are read, and if they moved the
//! watched streams are logged whole. When everything let through is counted, nothing is.
//!
//! Blocked XREADGROUPs: Redis 7.0 counts a blocking command when it blocks, not when it is
//! served (`server.c` call() counts it, `blocked.c` updateStatsOnUnblock does not), so the
//! counts cannot say when one delivers. Its streams stay watched while INFO clients shows
//! any blocked client, and an XADD to one of them logs it whole at the iteration's end.
//!
//! Invariants: a silent write that ran is logged at the end of the iteration in which it
//! ran; nothing here forgets a write that may still run: one that never runs (a discarded
//! transaction, a command the filter saw twice) keeps its streams watched, which costs a
//! commandstats read per iteration that may run one, never a lost write. CONFIG RESETSTAT
//! lowers the counts: everything outstanding stays so.

#![forbid(unsafe_code)]

use super::capture;
use super::ffi::Ctx;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Silent writes of one kind: what the filter let through against what the server counts.
#[derive(Debug)]
pub struct Tracker {
    /// Let through by the filter since the base.
    noted: u64,
    /// The server's count (calls + rejected calls) at the base; `None` before the first read.
    base: Option<u64>,
    /// The server's count at the last look.
    last: u64,
}

/// What a look at the server's count found.
#[derive(Debug, PartialEq, Eq)]
pub struct Look {
    /// The count moved since the last look: a write of this kind ran (or was rejected).
    pub moved: bool,
    /// Everything let through has been counted: none can still run.
    pub settled: bool,
}

impl Tracker {
    pub const fn new() -> Tracker {
        Tracker {
            noted: 0,
            base: None,
            last: 0,
        }
    }

    /// Starts counting from the server's count now (start-up: nothing is outstanding).
    pub fn settle(&mut self, count: u64) {
        *self = Tracker {
            noted: 0,
            base: Some(count),
            last: count,
        };
    }

    /// The filter let one through.
    pub fn note(&mut self) {
        self.noted += 1;
    }

    /// Compares the server's count now with the last look.
    pub fn look(&mut self, count: u64) -> Look {
        let Some(base) = self.base else {
            // Never settled: everything noted is outstanding from here on.
            self.base = Some(count);
            self.last = count;
            return Look {
                moved: true,
                settled: self.noted == 0,
            };
        };
        if count < self.last {
            // CONFIG RESETSTAT: keep what was outstanding, counted from the new base.
            let outstanding = self.noted.saturating_sub(self.last.saturating_sub(base));
            self.noted = outstanding;
            self.base = Some(count);
            self.last = count;
            return Look {
                moved: true,
                settled: outstanding == 0,
            };
        }
        let moved = count != self.last;
        self.last = count;
        let settled = count - base >= self.noted;
        if settled {
            // Re-base so the numbers stay small and a later write starts from zero.
            self.noted = 0;
            self.base = Some(count);
        }
        Look { moved, settled }
    }
}

/// The consumer-group commands; their commandstats lines.
const GROUP_WRITES: [&str; 4] = ["xack", "xclaim", "xautoclaim", "xreadgroup"];
const GROUP_WRITE_STATS: [&str; 4] = [
    "cmdstat_xack",
    "cmdstat_xclaim",
    "cmdstat_xautoclaim",
    "cmdstat_xreadgroup",
];

struct Streams {
    tracker: Tracker,
    /// Streams a write that may still be queued names (no db: every db where it is a stream).
    queued: BTreeSet<Vec<u8>>,
    /// Streams a blocking XREADGROUP waits on (or waited on while some client was blocked).
    blocked: BTreeSet<Vec<u8>>,
    /// Something this iteration may have run a queued write.
    look: bool,
}

static STREAMS: Mutex<Streams> = Mutex::new(Streams {
    tracker: Tracker::new(),
    queued: BTreeSet::new(),
    blocked: BTreeSet::new(),
    look: false,
});

fn streams() -> std::sync::MutexGuard<'static, Streams> {
    STREAMS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `calls=N,usec=...,rejected_calls=R,failed_calls=F` → N + R.
pub fn calls_and_rejections(stat: &[u8]) -> u64 {
    let Ok(text) = std::str::from_utf8(stat) else {
        return 0;
    };
    text.split(',')
        .filter_map(|kv| {
            kv.strip_prefix("calls=")
                .or_else(|| kv.strip_prefix("rejected_calls="))
        })
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// The server's count of the consumer-group commands run or rejected.
fn group_write_count(ctx: Ctx) -> u64 {
    ctx.server_info_fields("commandstats", GROUP_WRITE_STATS)
        .iter()
        .map(|s| s.as_deref().map(calls_and_rejections).unwrap_or(0))
        .sum()
}

/// Start-up is done: nothing the filter saw before can still run.
pub fn settled(ctx: Ctx) {
    let count = group_write_count(ctx);
    let mut s = streams();
    s.tracker.settle(count);
    s.queued.clear();
    s.blocked.clear();
    s.look = false;
}

/// The streams a consumer-group command names, if `name` is one: XACK/XCLAIM/XAUTOCLAIM
/// name one key; XREADGROUP the first half of what follows STREAMS. Also whether it may
/// block (XREADGROUP ... BLOCK), i.e. deliver in a later iteration.
fn group_write_keys(name: &[u8], args: &[&[u8]]) -> Option<(Vec<Vec<u8>>, bool)> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if !GROUP_WRITES.iter().any(|w| is(w)) {
        return None;
    }
    if !is("xreadgroup") {
        return Some((
            args.first().map(|k| vec![k.to_vec()]).unwrap_or_default(),
            false,
        ));
    }
    let streams_at = args.iter().position(|a| a.eq_ignore_ascii_case(b"streams"));
    let blocks = args[..streams_at.unwrap_or(args.len())]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(b"block"));
    let keys = match streams_at {
        Some(p) => {
            let rest = &args[p + 1..];
            rest[..rest.len() / 2].iter().map(|k| k.to_vec()).collect()
        }
        None => Vec::new(),
    };
    Some((keys, blocks))
}

/// The filter let a command through (it may still be refused by the server, queued or
/// blocked): a consumer-group command is logged at the end of this iteration, and its
/// streams stay watched if it may run later. `in_multi`: whether its client is in MULTI
/// (`None`: the server cannot say, as on Redis 7.0).
pub fn note_command<'a>(
    name: &[u8],
    args: impl FnOnce() -> Vec<&'a [u8]>,
    in_multi: impl FnOnce() -> Option<bool>,
) {
    if name.eq_ignore_ascii_case(b"exec") {
        let mut s = streams();
        if !s.queued.is_empty() {
            s.look = true;
        }
        return;
    }
    if !GROUP_WRITES
        .iter()
        .any(|w| name.eq_ignore_ascii_case(w.as_bytes()))
    {
        return;
    }
    let Some((keys, blocks)) = group_write_keys(name, &args()) else {
        return;
    };
    for key in &keys {
        capture::defer(None, key.clone());
    }
    let maybe_queued = in_multi() != Some(false);
    let mut s = streams();
    s.tracker.note();
    s.look = true;
    if blocks {
        s.blocked.extend(keys.iter().cloned());
    }
    if maybe_queued {
        s.queued.extend(keys);
    }
}

/// An XADD added to `key` in `db`: a blocked XREADGROUP on it may be served right after.
pub fn note_stream_write(db: u32, key: &[u8]) {
    if streams().blocked.contains(key) {
        capture::defer(Some(db), key.to_vec());
    }
}

/// End of an event-loop iteration, before the deferred keys are logged: if a watched
/// write may have run, reads the counts; when they moved, the watched streams are logged
/// whole with the rest of the deferred keys.
pub fn before_sleep(ctx: Ctx) {
    let mut s = streams();
    if !s.blocked.is_empty() && ctx.server_info_number("clients", "blocked_clients") == Some(0) {
        // No client is blocked: no XREADGROUP can still deliver (an XADD in this
        // iteration that served one has logged its stream already).
        s.blocked.clear();
    }
    if !std::mem::take(&mut s.look) {
        return;
    }
    let count = group_write_count(ctx);
    let look = s.tracker.look(count);
    if look.moved {
        for key in &s.queued {
            capture::defer(None, key.clone());
        }
    }
    if look.settled {
        s.queued.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_run_in_its_own_iteration_settles_at_once() {
        let mut t = Tracker::new();
        t.settle(10);
        t.note();
        assert_eq!(
            t.look(11),
            Look {
                moved: true,
                settled: true
            }
        );
    }

    #[test]
    fn a_queued_write_stays_outstanding_until_it_is_counted() {
        let mut t = Tracker::new();
        t.settle(0);
        t.note(); // queued in MULTI
        assert_eq!(
            t.look(0),
            Look {
                moved: false,
                settled: false
            }
        );
        // Another client's EXEC ran other commands: nothing moved.
        assert!(!t.look(0).settled);
        // Its EXEC ran it.
        assert_eq!(
            t.look(1),
            Look {
                moved: true,
                settled: true
            }
        );
    }

    #[test]
    fn a_reset_of_the_stats_keeps_what_was_outstanding() {
        let mut t = Tracker::new();
        t.settle(100);
        t.note();
        t.note();
        assert!(!t.look(101).settled); // one of two ran
        let after_reset = t.look(0); // CONFIG RESETSTAT
        assert!(after_reset.moved && !after_reset.settled);
        assert!(t.look(1).settled); // the other one ran
    }

    #[test]
    fn rejected_calls_count_as_done() {
        assert_eq!(
            calls_and_rejections(
                b"calls=7,usec=10,usec_per_call=1.43,rejected_calls=2,failed_calls=1"
            ),
            9
        );
        assert_eq!(calls_and_rejections(b"garbage"), 0);
    }

    #[test]
    fn keys_of_the_group_commands() {
        let args: Vec<&[u8]> = vec![
            b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS", b"s1", b"s2", b">", b">",
        ];
        assert_eq!(
            group_write_keys(b"XREADGROUP", &args),
            Some((vec![b"s1".to_vec(), b"s2".to_vec()], true))
        );
        let args: Vec<&[u8]> = vec![b"s", b"g", b"1-1"];
        assert_eq!(
            group_write_keys(b"xack", &args),
            Some((vec![b"s".to_vec()], false))
        );
        assert_eq!(group_write_keys(b"xadd", &args), None);
    }
}
