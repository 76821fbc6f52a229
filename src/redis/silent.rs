//! Writes the server runs without a keyspace event, and how the module knows when they ran.
//!
//! XACK, XCLAIM, XAUTOCLAIM and XREADGROUP change a stream's consumer groups silently, and
//! FUNCTION LOAD / DELETE / FLUSH / RESTORE the function libraries. The command filter sees
//! each of them, and what they changed is logged at the end of the event-loop iteration in
//! which they ran: on a big stream as the group state read back (`group_state`: which
//! acked ids are no longer pending; the cursor, consumer times and pending ranges after the
//! other three), otherwise the stream whole (`capture::defer`), and the libraries whole
//! (`functions`). A state read back is right whether or not the command ran, so it needs no
//! proof. The iteration in which a write runs is not always the one in which the filter
//! saw it:
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
//! any blocked client, and an XADD to one of them has the group of each reader blocked on
//! it read back at the iteration's end (or logs the stream whole, for a form that cannot
//! be read back); the server serves blocked clients right after each command.
//!
//! Invariants: a silent write that ran is logged at the end of the iteration in which it
//! ran; nothing here forgets a write that may still run: one that never runs (a discarded
//! transaction, a command the filter saw twice) keeps its streams watched, which costs a
//! commandstats read per iteration that may run one, never a lost write. CONFIG RESETSTAT
//! lowers the counts: everything outstanding stays so.

#![forbid(unsafe_code)]

use super::capture;
use super::ffi::{Ctx, FilterClient, KeyType};
use super::group_state::{self, Touched};
use crate::effect::{Effect, StreamId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

    /// At the last look, everything let through had been counted, except the `latest`
    /// let through since.
    pub fn was_settled_before(&self, latest: u64) -> bool {
        self.base
            .is_some_and(|base| self.last - base >= self.noted.saturating_sub(latest))
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

/// The consumer-group commands; XACK's commandstats line and the other three's.
const GROUP_WRITES: [&str; 4] = ["xack", "xclaim", "xautoclaim", "xreadgroup"];
const ACK_STATS: &str = "cmdstat_xack";
const OTHER_STATS: [&str; 3] = ["cmdstat_xclaim", "cmdstat_xautoclaim", "cmdstat_xreadgroup"];
/// Above this many dbs, the db of a group write the filter could not place is not searched
/// (its stream is logged whole in every db).
const MAX_DBS_SEARCHED: u32 = 64;
/// Streams with at least this many entries get their consumer-group writes logged as the
/// state read back (`group_state`): below it the stream's DUMP costs less. Counted with
/// callgrind (main thread, XREADGROUP COUNT 1 on Redis 7.0, whole round trip): on 64
/// entries 272k instructions per op with the DUMP against 297k read back, on 256 entries
/// 653k against 231k.
const BIG_STREAM: usize = 128;
/// An XREADGROUP with a bigger COUNT is logged as its stream's DUMP: reading its group back
/// would walk that many entries.
const MAX_READ_BACK: usize = 1024;

/// An XACK the filter let through in this iteration: at its end, on a big stream, the ids
/// it named that are not pending then are logged as a `StreamAck` (in every db holding the
/// stream when the db is not known); otherwise its stream is logged whole.
struct PendingAck {
    /// The client's db, where the server says (Valkey 8, Redis 7.2+).
    db: Option<u32>,
    key: Vec<u8>,
    group: Vec<u8>,
    /// `None`: an id this module does not parse the way the server does (logged whole).
    ids: Option<Vec<StreamId>>,
    /// Something else changed the key (or moved dbs) after it in this iteration.
    spoiled: bool,
}

/// An XREADGROUP, an XCLAIM of ids this module parses, or an XAUTOCLAIM, that the filter
/// let through in this iteration, not queued in MULTI: on a big stream its group is read
/// back at the iteration's end (`group_state`) instead of the stream's DUMP. Whether it
/// ran, or was refused, does not matter: the record is the group's state.
struct PendingGroupWrite {
    db: Option<u32>,
    key: Vec<u8>,
    group: Vec<u8>,
    consumer: Vec<u8>,
    touch: Touch,
    /// Something other than XADD / XTRIM changed the key (or moved dbs) after it.
    spoiled: bool,
}

/// The pending entries a group write may have changed.
enum Touch {
    /// XREADGROUP `>`: its COUNT (`None`: everything after the cursor).
    Read(Option<usize>),
    /// XREADGROUP with an id: the consumer's pending entries from there, and its COUNT.
    History(StreamId, Option<usize>),
    /// XCLAIM: the ids it names.
    Claim(Vec<StreamId>),
    /// XAUTOCLAIM: its start and how many pending entries it may examine.
    AutoClaim(StreamId, usize),
}

impl PendingGroupWrite {
    fn new(key: &[u8], group: &[u8], consumer: &[u8], touch: Touch) -> PendingGroupWrite {
        PendingGroupWrite {
            db: None,
            key: key.to_vec(),
            group: group.to_vec(),
            consumer: consumer.to_vec(),
            touch,
            spoiled: false,
        }
    }
}

/// (group, consumer, COUNT) of an XREADGROUP `>` blocked on a stream.
type BlockedReader = (Vec<u8>, Vec<u8>, Option<usize>);

struct Streams {
    /// XACK, and the other three, each against the server's counts.
    acks: Tracker,
    others: Tracker,
    /// XACKs of this iteration, and the module's own (warm-up: commandstats counts them).
    pending: Vec<PendingAck>,
    own_acks: u64,
    /// XACKs let through in this iteration.
    acks_now: u64,
    /// The other three let through in this iteration.
    others_now: u64,
    /// XREADGROUPs, XCLAIMs and XAUTOCLAIMs of this iteration that may be logged as their
    /// group's state.
    group_writes: Vec<PendingGroupWrite>,
    /// Streams a write that may still be queued names (no db: every db where it is a stream).
    queued: BTreeSet<Vec<u8>>,
    /// Streams a blocking XREADGROUP that cannot be read back waits on (or waited on while
    /// some client was blocked).
    blocked: BTreeSet<Vec<u8>>,
    /// The same for those that can: per stream, (group, consumer, COUNT) of each.
    blocked_readers: BTreeMap<Vec<u8>, BTreeSet<BlockedReader>>,
    /// Streams added to `queued` in this iteration.
    fresh_queued: Vec<Vec<u8>>,
    /// Something this iteration may have run a silent write.
    look: bool,
}

static STREAMS: Mutex<Streams> = Mutex::new(Streams {
    acks: Tracker::new(),
    others: Tracker::new(),
    pending: Vec::new(),
    own_acks: 0,
    acks_now: 0,
    others_now: 0,
    group_writes: Vec::new(),
    queued: BTreeSet::new(),
    blocked: BTreeSet::new(),
    blocked_readers: BTreeMap::new(),
    fresh_queued: Vec::new(),
    look: false,
});

/// `Streams::pending` or `group_writes` is not empty (read on every keyspace event,
/// without the lock).
static WRITES_PENDING: AtomicBool = AtomicBool::new(false);

/// The server's clock at the end of the last iteration's `before_sleep`.
static LAST_SLEEP_MS: AtomicI64 = AtomicI64::new(0);

/// A MULTI has been filtered since start (on a server whose filter cannot say whether a
/// command is queued, a silent write may be queued only then).
static MULTI_SEEN: AtomicBool = AtomicBool::new(false);

/// Called with every command's name, before anything else in the filter (also while the
/// module is starting: a client may open MULTI during the server's loading).
pub fn note_any_command(name: &[u8]) {
    if name.eq_ignore_ascii_case(b"multi") {
        MULTI_SEEN.store(true, Ordering::Relaxed);
    }
}

fn streams() -> std::sync::MutexGuard<'static, Streams> {
    STREAMS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `calls=N,usec=...,rejected_calls=R,failed_calls=F` → N + R.
pub fn calls_and_rejections(stat: &[u8]) -> u64 {
    let Ok(text) = std::str::from_utf8(stat) else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        text.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    field("calls") + field("rejected_calls")
}

/// XACK's calls + rejections, and the other three's, in one read (no server call).
fn group_write_counts(ctx: Ctx) -> (u64, u64) {
    let [ack, o1, o2, o3] = ctx.server_info_fields(
        "commandstats",
        [ACK_STATS, OTHER_STATS[0], OTHER_STATS[1], OTHER_STATS[2]],
    );
    let count = |s: &Option<Vec<u8>>| s.as_deref().map(calls_and_rejections).unwrap_or(0);
    (count(&ack), [o1, o2, o3].iter().map(count).sum())
}

/// Start-up is done: nothing the filter saw before can still run.
pub fn settled(ctx: Ctx) {
    let (acks, others) = group_write_counts(ctx);
    let mut s = streams();
    s.acks.settle(acks);
    s.others.settle(others);
    s.pending.clear();
    s.group_writes.clear();
    WRITES_PENDING.store(false, Ordering::Relaxed);
    s.own_acks = 0;
    s.acks_now = 0;
    s.others_now = 0;
    s.queued.clear();
    s.blocked.clear();
    s.blocked_readers.clear();
    s.fresh_queued.clear();
    s.look = false;
}

/// The streams a consumer-group command names, if `name` is one: XACK/XCLAIM/XAUTOCLAIM
/// name one key; XREADGROUP the first half of what follows STREAMS. Also whether it may
/// block (XREADGROUP ... BLOCK), i.e. deliver in a later iteration.
fn group_write_keys(name: &[u8], args: &[&[u8]]) -> Option<(Vec<Vec<u8>>, bool)> {
    if !is_group_write(name) {
        return None;
    }
    if !name.eq_ignore_ascii_case(b"xreadgroup") {
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

fn is_group_write(name: &[u8]) -> bool {
    GROUP_WRITES
        .iter()
        .any(|w| name.eq_ignore_ascii_case(w.as_bytes()))
}

/// An id as XACK parses it, for the forms it accepts that this module reads the same way:
/// `ms` (sequence 0) or `ms-seq`, decimal, without sign or spaces.
fn parse_ack_id(arg: &[u8]) -> Option<StreamId> {
    let text = std::str::from_utf8(arg).ok()?;
    let (ms, seq) = match text.split_once('-') {
        Some((ms, seq)) => (ms, seq),
        None => (text, "0"),
    };
    let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some(StreamId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The group writes of an XREADGROUP whose ids parse and whose COUNT is at most
/// `MAX_READ_BACK` (one per stream; blocking or not), of an XCLAIM whose ids all parse,
/// ending at an option XCLAIM knows, or of an XAUTOCLAIM whose start and COUNT parse;
/// `None` for any other form (its streams are logged whole).
fn readable_back(name: &[u8], args: &[&[u8]]) -> Option<Vec<PendingGroupWrite>> {
    if name.eq_ignore_ascii_case(b"xclaim") {
        // XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME ms] ...
        let (key, group, consumer) = (args.first()?, args.get(1)?, args.get(2)?);
        let rest = args.get(4..)?;
        let n_ids = rest
            .iter()
            .take_while(|a| parse_ack_id(a).is_some())
            .count();
        const OPTIONS: [&str; 6] = ["idle", "time", "retrycount", "force", "justid", "lastid"];
        let next_is_option = rest
            .get(n_ids)
            .is_none_or(|a| OPTIONS.iter().any(|o| a.eq_ignore_ascii_case(o.as_bytes())));
        if n_ids == 0 || !next_is_option {
            return None;
        }
        let ids = rest[..n_ids]
            .iter()
            .filter_map(|a| parse_ack_id(a))
            .collect();
        return Some(vec![PendingGroupWrite::new(
            key,
            group,
            consumer,
            Touch::Claim(ids),
        )]);
    }
    if name.eq_ignore_ascii_case(b"xautoclaim") {
        // XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID]
        let (key, group, consumer) = (args.first()?, args.get(1)?, args.get(2)?);
        let start = match *args.get(4)? {
            b"-" => StreamId { ms: 0, seq: 0 },
            a => parse_ack_id(a)?,
        };
        let mut count = 100; // the server's default
        let mut i = 5;
        while let Some(a) = args.get(i) {
            if a.eq_ignore_ascii_case(b"count") {
                count = std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok()?;
                i += 2;
            } else if a.eq_ignore_ascii_case(b"justid") {
                i += 1;
            } else {
                return None;
            }
        }
        if count == 0 || count > MAX_READ_BACK {
            return None;
        }
        return Some(vec![PendingGroupWrite::new(
            key,
            group,
            consumer,
            Touch::AutoClaim(start, count * 10),
        )]);
    }
    if !name.eq_ignore_ascii_case(b"xreadgroup") {
        return None;
    }
    // XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS k... id...
    if !args.first()?.eq_ignore_ascii_case(b"group") {
        return None;
    }
    let (group, consumer) = (args.get(1)?, args.get(2)?);
    let mut count = None;
    let mut i = 3;
    loop {
        let a = args.get(i)?;
        if a.eq_ignore_ascii_case(b"count") {
            count = std::str::from_utf8(args.get(i + 1)?)
                .ok()?
                .parse::<usize>()
                .ok();
            i += 2;
        } else if a.eq_ignore_ascii_case(b"noack") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"block") {
            // What it delivers now, or when an XADD serves it (`note_stream_write`).
            i += 2;
        } else if a.eq_ignore_ascii_case(b"streams") {
            break;
        } else {
            return None; // something this module does not read the same way
        }
    }
    // No COUNT: everything after the cursor (`Touched::delivered_since_ms`).
    if count.is_some_and(|n| n == 0 || n > MAX_READ_BACK) {
        return None;
    }
    let rest = &args[i + 1..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return None;
    }
    let (keys, ids) = rest.split_at(rest.len() / 2);
    keys.iter()
        .zip(ids)
        .map(|(k, id)| {
            let touch = match *id {
                b">" => Touch::Read(count),
                // History: the consumer's own pending entries from there (t_stream.c
                // streamReplyWithRangeFromConsumerPEL: times and counts change, none leaves).
                id => Touch::History(parse_ack_id(id)?, count),
            };
            Some(PendingGroupWrite::new(k, group, consumer, touch))
        })
        .collect()
}

/// The filter let a command through (it may still be refused by the server, queued or
/// blocked). Each consumer-group command waits for the end of the iteration
/// (`before_sleep`): then its group is read back, or its streams are logged whole (a form
/// that cannot be read back, or one queued in MULTI); they stay watched if the command
/// may run later. `client`: its client's MULTI state and db (`None`: the server
/// cannot say, as on Redis 7.0).
pub fn note_command<'a>(
    name: &[u8],
    args: impl FnOnce() -> Vec<&'a [u8]>,
    client: impl FnOnce() -> Option<FilterClient>,
) {
    if name.eq_ignore_ascii_case(b"exec") {
        let mut s = streams();
        if !s.queued.is_empty() {
            s.look = true;
        }
        return;
    }
    if !is_group_write(name) {
        // Checked before the arguments are collected: this runs for every command.
        return;
    }
    let args = args();
    let Some((keys, blocks)) = group_write_keys(name, &args) else {
        return;
    };
    let client = client();
    let mut s = streams();
    if name.eq_ignore_ascii_case(b"xack") {
        s.acks.note();
        s.acks_now += 1;
        if client.is_some_and(|c| c.in_multi) {
            // Queued: it runs at an EXEC, logged whole then.
            s.queued.extend(keys);
            return;
        }
        if maybe_queued(client.map(|c| c.in_multi)) {
            // As for the other three below.
            s.fresh_queued.extend(keys.iter().cloned());
            s.queued.extend(keys.iter().cloned());
        }
        WRITES_PENDING.store(true, Ordering::Relaxed);
        s.pending.push(PendingAck {
            db: client.map(|c| c.db),
            key: args.first().map(|k| k.to_vec()).unwrap_or_default(),
            group: args.get(1).map(|g| g.to_vec()).unwrap_or_default(),
            ids: (args.len() > 2)
                .then(|| args[2..].iter().map(|a| parse_ack_id(a)).collect())
                .flatten(),
            spoiled: false,
        });
        return;
    }
    s.others.note();
    s.others_now += 1;
    let in_multi = client.is_some_and(|c| c.in_multi);
    match (in_multi, readable_back(name, &args)) {
        (false, Some(writes)) => {
            WRITES_PENDING.store(true, Ordering::Relaxed);
            let db = client.map(|c| c.db);
            for w in writes {
                if let (true, Touch::Read(count)) = (blocks, &w.touch) {
                    let reader = (w.group.clone(), w.consumer.clone(), *count);
                    s.blocked_readers
                        .entry(w.key.clone())
                        .or_default()
                        .insert(reader);
                }
                s.group_writes.push(PendingGroupWrite { db, ..w });
            }
        }
        _ => {
            for key in &keys {
                capture::defer(client.map(|c| c.db), key.clone());
            }
            if blocks {
                s.blocked.extend(keys.iter().cloned());
            }
        }
    }
    if maybe_queued(client.map(|c| c.in_multi)) {
        // Watched until an EXEC's look counts it. Looked at now only if its stream is big
        // (`before_sleep`): then the look, which may settle it at once, costs less than
        // logging the stream again at the next EXEC.
        s.fresh_queued.extend(keys.iter().cloned());
        s.queued.extend(keys);
    }
}

/// Whether a write the filter let through may be queued in MULTI: its client is, or the
/// server cannot say (`in_multi` unknown) and a MULTI has been seen.
fn maybe_queued(in_multi: Option<bool>) -> bool {
    in_multi.unwrap_or_else(|| MULTI_SEEN.load(Ordering::Relaxed))
}

/// The module itself runs an XACK (re-applying the pool's acks during the warm-up).
pub fn note_own_ack() {
    let mut s = streams();
    s.acks.note();
    s.own_acks += 1;
    s.look = true;
}

/// A keyspace event on `key`: the XACKs and group writes of this iteration on it are
/// logged as its stream whole instead (the key may now be another value, or have moved),
/// unless the event only added or trimmed entries, which leave the groups alone, or is a
/// consumer that a group write itself created (the state read back has it).
pub fn note_event(event: &[u8], key: &[u8]) {
    if !WRITES_PENDING.load(Ordering::Relaxed)
        || matches!(event, b"xadd" | b"xtrim" | b"xgroup-createconsumer")
    {
        return;
    }
    let mut s = streams();
    for p in s.pending.iter_mut().filter(|p| p.key == key) {
        p.spoiled = true;
    }
    for w in s.group_writes.iter_mut().filter(|w| w.key == key) {
        w.spoiled = true;
    }
}

/// Whether a consumer-group write of this iteration, or one that may still run from a
/// queue, has not been logged yet.
pub fn group_writes_outstanding() -> bool {
    WRITES_PENDING.load(Ordering::Relaxed) || !streams().queued.is_empty()
}

/// An XREADGROUP, XCLAIM or XAUTOCLAIM of this iteration on `key` will have its group's
/// state read back (unless something spoils it: then the stream is logged whole).
pub fn group_write_pending(key: &[u8]) -> bool {
    WRITES_PENDING.load(Ordering::Relaxed) && streams().group_writes.iter().any(|w| w.key == key)
}

/// SWAPDB: an XACK of this iteration may now name a stream in another db.
pub fn note_swapdb() {
    let mut s = streams();
    for p in s.pending.iter_mut() {
        p.spoiled = true;
    }
    for w in s.group_writes.iter_mut() {
        w.spoiled = true;
    }
}

/// An XADD added to `key` in `db`: a blocked XREADGROUP on it may be served right after
/// (the server serves blocked clients after each command, in this iteration): its group
/// is read back at the iteration's end, or the stream logged whole if it cannot be.
pub fn note_stream_write(db: u32, key: &[u8]) {
    let mut s = streams();
    if s.blocked.contains(key) {
        capture::defer(Some(db), key.to_vec());
    }
    let Some(readers) = s.blocked_readers.get(key) else {
        return;
    };
    let writes: Vec<PendingGroupWrite> = readers
        .iter()
        .map(|(group, consumer, count)| PendingGroupWrite {
            db: Some(db),
            ..PendingGroupWrite::new(key, group, consumer, Touch::Read(*count))
        })
        .collect();
    WRITES_PENDING.store(true, Ordering::Relaxed);
    s.group_writes.extend(writes);
}

/// Whether `key` (in the selected db) is a stream big enough that its group records cost
/// less than its DUMP.
pub fn is_big_stream(ctx: Ctx, key: &[u8]) -> bool {
    ctx.open_read(key)
        .is_some_and(|k| k.key_type() == KeyType::Stream && k.len() >= BIG_STREAM)
}

/// The dbs in which to read a group write's stream back: its client's, or every db where
/// the server cannot say (none above `MAX_DBS_SEARCHED`: the stream is logged whole).
fn dbs_to_read(db: Option<u32>, databases: u32) -> Vec<u32> {
    match db {
        Some(db) => vec![db],
        None if databases <= MAX_DBS_SEARCHED => (0..databases).collect(),
        None => Vec::new(),
    }
}

/// Runs `read` with each of `dbs` selected where `key` is a big stream; whether some db
/// holds it as a smaller one (to be logged whole).
fn in_each_big_stream_db(ctx: Ctx, dbs: &[u32], key: &[u8], mut read: impl FnMut(u32)) -> bool {
    let mut small = false;
    for &d in dbs {
        match stream_entries(ctx, d, key) {
            None => {} // not a stream here: nothing of it changed
            Some(n) if n < BIG_STREAM => small = true,
            Some(_) => {
                ctx.select_db(d);
                read(d);
            }
        }
    }
    ctx.select_db(0);
    small
}

/// The number of entries of the stream `key` in `db` (`None` if it is not a stream).
fn stream_entries(ctx: Ctx, db: u32, key: &[u8]) -> Option<usize> {
    if !ctx.select_db(db) {
        return None;
    }
    let len = ctx
        .open_read(key)
        .filter(|k| k.key_type() == KeyType::Stream)
        .map(|k| k.len());
    ctx.select_db(0);
    len
}

/// End of an event-loop iteration, before the deferred keys are logged. Each XACK of this
/// iteration on a big stream is logged as the `StreamAck` of its ids that are not pending
/// now, each XREADGROUP / XCLAIM / XAUTOCLAIM that can be read back as its group's state
/// (`group_states`); every other one's stream is logged whole (its DUMP). Then, if a queued
/// write may have run (the counts moved, and not only by this iteration's writes), the
/// queued streams are logged whole too; they stay watched until every write let through is
/// counted. The counts are read only when something needs them. Returns the records by
/// db, acks first, to be appended one db at a time (one commit each).
pub fn before_sleep(ctx: Ctx, databases: u32) -> BTreeMap<u32, Vec<Effect>> {
    let group_writes = std::mem::take(&mut streams().group_writes);
    let mut out = acks_before_sleep(ctx, databases);
    for (db, states) in group_states(ctx, databases, group_writes) {
        out.entry(db).or_default().extend(states);
    }
    if let Some(now) = super::ffi::milliseconds() {
        LAST_SLEEP_MS.store(now, Ordering::Relaxed);
    }
    out
}

/// The group state each group write (XREADGROUP, XCLAIM, XAUTOCLAIM) of this iteration
/// left, read back from a big
/// stream (`group_state`); a small stream, a write something else changed the key after,
/// or a state that cannot be read exactly is logged as the stream's DUMP. On Redis 7.0
/// (no db in the filter) every db where the key is a stream is read.
fn group_states(
    ctx: Ctx,
    databases: u32,
    writes: Vec<PendingGroupWrite>,
) -> BTreeMap<u32, Vec<Effect>> {
    type GroupOf = (Option<u32>, Vec<u8>, Vec<u8>);
    let mut by_group: BTreeMap<GroupOf, (Touched, bool)> = BTreeMap::new();
    for w in writes {
        let (touched, spoiled) = by_group.entry((w.db, w.key, w.group)).or_default();
        match w.touch {
            Touch::Read(Some(n)) => touched.delivered_at_most += n,
            // Delivered after the end of the last iteration; a second of margin for the
            // wall clock (an earlier entry that counts as recent only lengthens the walk).
            Touch::Read(None) => {
                touched.delivered_since_ms = Some(LAST_SLEEP_MS.load(Ordering::Relaxed) - 1000)
            }
            Touch::History(from, count) => {
                touched.histories.push((w.consumer.clone(), from, count))
            }
            Touch::Claim(ids) => touched.claimed.extend(ids),
            Touch::AutoClaim(start, examined) => touched.scanned.push((start, examined)),
        }
        touched.consumers.insert(w.consumer);
        *spoiled |= w.spoiled;
    }
    let mut out: BTreeMap<u32, Vec<Effect>> = BTreeMap::new();
    for ((db, key, group), (touched, spoiled)) in by_group {
        let dbs = match spoiled || touched.delivered_at_most > MAX_READ_BACK {
            true => Vec::new(),
            false => dbs_to_read(db, databases),
        };
        if dbs.is_empty() {
            capture::defer(db, key);
            continue;
        }
        let whole = in_each_big_stream_db(ctx, &dbs, &key, |d| {
            match group_state::read_back(ctx, &key, &group, &touched) {
                Ok(Some(state)) => out.entry(d).or_default().push(state),
                Ok(None) => {}
                Err(group_state::Whole) => capture::defer(Some(d), key.clone()),
            }
        });
        if whole {
            capture::defer(db, key);
        }
    }
    out
}

fn acks_before_sleep(ctx: Ctx, databases: u32) -> BTreeMap<u32, Vec<Effect>> {
    let mut s = streams();
    if !(s.blocked.is_empty() && s.blocked_readers.is_empty())
        && ctx.server_info_number("clients", "blocked_clients") == Some(0)
    {
        // No client is blocked: no XREADGROUP can still deliver (an XADD in this
        // iteration that served one has logged its stream already, or will have its
        // group read back below).
        s.blocked.clear();
        s.blocked_readers.clear();
    }
    let pending = std::mem::take(&mut s.pending);
    WRITES_PENDING.store(false, Ordering::Relaxed);
    let acks_now = std::mem::take(&mut s.acks_now) + std::mem::take(&mut s.own_acks);
    let others_now = std::mem::take(&mut s.others_now);
    let mut acks: BTreeMap<u32, Vec<Effect>> = BTreeMap::new();
    for p in pending {
        let dbs = match p.spoiled || p.ids.is_none() {
            true => Vec::new(),
            false => dbs_to_read(p.db, databases),
        };
        let ids = p.ids.as_deref().unwrap_or_default();
        let small = in_each_big_stream_db(ctx, &dbs, &p.key, |d| {
            match group_state::not_pending(ctx, &p.key, &p.group, ids) {
                Ok(gone) if gone.is_empty() => {}
                Ok(gone) => acks.entry(d).or_default().push(Effect::StreamAck {
                    key: p.key.clone(),
                    group: p.group.clone(),
                    ids: gone,
                }),
                Err(group_state::Whole) => capture::defer(Some(d), p.key.clone()),
            }
        });
        if dbs.is_empty() || small {
            capture::defer(p.db, p.key);
        }
    }
    let fresh = std::mem::take(&mut s.fresh_queued);
    let big_fresh = || {
        fresh.iter().any(|k| {
            (0..databases.min(MAX_DBS_SEARCHED))
                .any(|db| stream_entries(ctx, db, k).is_some_and(|n| n >= BIG_STREAM))
        })
    };
    // The counts are read only when a write may have been queued: an EXEC while one may
    // still run, a new one on a big stream (which the look may settle at once), or the
    // module's own XACK.
    let look = std::mem::take(&mut s.look) || (!fresh.is_empty() && big_fresh());
    if !look {
        return acks;
    }
    let (ack_count, others) = group_write_counts(ctx);
    let earlier_all_counted =
        s.acks.was_settled_before(acks_now) && s.others.was_settled_before(others_now);
    let look_acks = s.acks.look(ack_count);
    let look_others = s.others.look(others);
    // Everything let through before this iteration had been counted and everything is
    // counted now: every write that moved a count ran in this iteration and was logged
    // above or where the filter saw it (its state read back, or its stream whole).
    let only_this_iterations = earlier_all_counted && look_acks.settled && look_others.settled;
    if (look_acks.moved || look_others.moved) && !only_this_iterations {
        for key in &s.queued {
            capture::defer(None, key.clone());
        }
    }
    if look_acks.settled && look_others.settled {
        s.queued.clear();
    }
    acks
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
