//! A consumer group's state read back from the server after XREADGROUP or XCLAIM ran.
//!
//! Why: both change a group without a keyspace event, and their effect depends on the
//! time they ran (delivery times, seen and active times) and, for XREADGROUP, on which
//! entries were next: nothing in argv says what they did. Reading the state back after
//! they ran (at the end of the iteration, `silent`) gives it exactly, at O(what they
//! named) instead of the stream's DUMP:
//! - `XINFO STREAM key FULL COUNT 1`: the group's last-delivered id and entries-read, and
//!   each consumer's seen (and active) time, absolute (O(groups + consumers));
//! - `XPENDING key group start end count`: owner, idle time and delivery count of the
//!   pending entries in ranges that hold every entry the commands may have changed.
//!   XREADGROUP `>` COUNT n delivers entries after the old last-delivered id, so at most n
//!   entries up to the new one (found by walking the stream back with the key API); XCLAIM
//!   the ids it names; XAUTOCLAIM the first COUNT x 10 pending entries from its start;
//! - XPENDING gives idle times: delivery = now - idle, where "now" is the server's clock
//!   during the call (Redis 7.0 `mstime()`: known when the ms did not change across the
//!   call) or the time the callback's execution unit took (Valkey 8, Redis 7.2+:
//!   `commandTimeSnapshot()`, the cached time set when this callback's context was made).
//!
//! Invariants: every pending entry the commands changed lies in a range of the record,
//! which holds that range's state now (an entry missing from it is no longer pending), or
//! the caller logs the stream whole (`Err`); the record is a state, not a change, so it is
//! right after any later state of the same entries. These reads show in commandstats
//! and MONITOR (`xinfo|stream`, `xpending`), like the DUMP they replace.

#![forbid(unsafe_code)]

use super::ffi::{self, Ctx, KeyType, Reply};
use crate::effect::{ConsumerTimes, Effect, GroupHeader, GroupState, PelRange, Pending, StreamId};
use std::collections::BTreeSet;

/// What the iteration's XREADGROUPs, XCLAIMs and XAUTOCLAIMs on one group of one stream
/// named.
#[derive(Debug, Default)]
pub struct Touched {
    pub consumers: BTreeSet<Vec<u8>>,
    /// The sum of the `>` reads' COUNTs: at most this many entries were delivered.
    pub delivered_at_most: usize,
    /// A `>` read without a COUNT ran: it delivered every entry after the old cursor, each
    /// pending since this time or later (unless NOACK), so the stream is walked back from
    /// the new cursor until an entry that is not.
    pub delivered_since_ms: Option<i64>,
    pub claimed: BTreeSet<StreamId>,
    /// XAUTOCLAIM's start and how many pending entries it may examine from there (its
    /// COUNT times 10, t_stream.c `attempts_factor`): it claims some and drops those whose
    /// entries were deleted, all among them.
    pub scanned: Vec<(StreamId, usize)>,
    /// XREADGROUP with an id: (consumer, from, its COUNT if any): it sets a new delivery
    /// time and count on that consumer's first pending entries from there, and removes none.
    pub histories: Vec<(Vec<u8>, StreamId, Option<usize>)>,
}

const MAX_ID: StreamId = StreamId {
    ms: u64::MAX,
    seq: u64::MAX,
};

/// The stream must be logged whole instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Whole;

/// A history read without a COUNT is read back up to this many entries (else the stream
/// is logged whole).
const MAX_HISTORY: usize = 1024;

/// A walk back (`walk_back`) reads this many stream entries per XPENDING, and gives up
/// (the stream is logged whole) after this many.
const WALK_CHUNK: usize = 64;
const MAX_WALK: usize = 16 * 1024;

/// An XACK of more ids is logged as its stream's DUMP (one XPENDING per id).
const MAX_IDS_READ: usize = 256;

/// Tries of an XPENDING whose clock reading straddled a millisecond (Redis 7.0).
const CLOCK_TRIES: usize = 3;

/// The group's state now, as a `StreamGroup` (`None`: the key is not a stream or has no
/// such group any more: nothing of it to log). `ctx` has the stream's db selected.
pub fn read_back(
    ctx: Ctx,
    key: &[u8],
    group: &[u8],
    touched: &Touched,
) -> Result<Option<Effect>, Whole> {
    let (claims, scans) = (!touched.claimed.is_empty(), !touched.scanned.is_empty());
    if (claims && scans) || (!touched.histories.is_empty() && (claims || scans)) {
        // A claim (XCLAIM, FORCE too, or XAUTOCLAIM) may have added entries inside what an
        // XAUTOCLAIM examined or a history read changed, so that range, counted from its
        // start, could end short of an entry it dropped or changed.
        return Err(Whole);
    }
    let info = ctx.call("XINFO", &[b"STREAM", key, b"FULL", b"COUNT", b"1"]);
    let Reply::Array(info) = info else {
        return Ok(None); // no such key, or not a stream
    };
    let Some(g) = field(&info, b"groups").and_then(array).and_then(|gs| {
        gs.iter()
            .filter_map(array)
            .find(|g| str_field(g, b"name") == Some(group))
    }) else {
        return Ok(None);
    };
    let last_id = str_field(g, b"last-delivered-id")
        .and_then(parse_id)
        .ok_or(Whole)?;
    let entries_read = match field(g, b"entries-read") {
        Some(Reply::Int(n)) => *n,
        Some(Reply::Null) | None => -1,
        Some(_) => return Err(Whole),
    };
    let mut ranges = Vec::new();
    if touched.delivered_at_most > 0 {
        let ids = ctx
            .open_read(key)
            .filter(|k| k.key_type() == KeyType::Stream)
            .and_then(|k| k.stream_ids_back((last_id.ms, last_id.seq), touched.delivered_at_most))
            .ok_or(Whole)?;
        if let Some(&(ms, seq)) = ids.last() {
            let first = StreamId { ms, seq };
            // Room for entries pending from before whose stream entries were deleted: a
            // reply that fills it may have left out a delivered one.
            let limit = 2 * touched.delivered_at_most + 8;
            let entries = pending_range(ctx, key, group, first, last_id, limit, None)?;
            if entries.len() >= limit {
                return Err(Whole);
            }
            ranges.push(PelRange {
                first,
                last: last_id,
                entries,
            });
        }
    }
    if let Some(since) = touched.delivered_since_ms {
        ranges.push(walk_back(ctx, key, group, last_id, since)?);
    }
    for (consumer, from, at_most) in &touched.histories {
        // Each entry as it is now, as a range of its own: the consumer's entries are spread
        // among other consumers' in the group's PEL. One more than it can have changed.
        let limit = at_most.unwrap_or(MAX_HISTORY) + 1;
        let rows = pending_range(ctx, key, group, *from, MAX_ID, limit, Some(consumer))?;
        if at_most.is_none() && rows.len() >= limit {
            return Err(Whole); // without a COUNT it may have changed more than this
        }
        ranges.extend(rows.into_iter().map(|(id, p)| PelRange {
            first: id,
            last: id,
            entries: vec![(id, p)],
        }));
    }
    for &id in &touched.claimed {
        let entries = pending_range(ctx, key, group, id, id, 1, None)?;
        ranges.push(PelRange {
            first: id,
            last: id,
            entries,
        });
    }
    for &(start, examined) in &touched.scanned {
        // What it examined is among the first `examined` pending entries from `start` as
        // they were; those it dropped are gone, so the first `examined` now reach at least
        // as far.
        let entries = pending_range(ctx, key, group, start, MAX_ID, examined, None)?;
        let last = match entries.len() >= examined {
            true => entries.last().map_or(MAX_ID, |(id, _)| *id),
            false => MAX_ID,
        };
        ranges.push(PelRange {
            first: start,
            last,
            entries,
        });
    }
    let mut names = touched.consumers.clone();
    names.extend(
        ranges
            .iter()
            .flat_map(|r| r.entries.iter().map(|(_, p)| p.consumer.clone())),
    );
    let consumers = consumer_times(g, |name| names.contains(name)).ok_or(Whole)?;
    Ok(Some(Effect::StreamGroup {
        key: key.to_vec(),
        group: group.to_vec(),
        state: GroupState {
            last_id,
            entries_read,
            consumers,
            ranges,
        },
    }))
}

/// Of `ids`, those not pending in `group` now: after an XACK, its effect as a state (the
/// ids it acknowledged, or that were not pending anyway), whether or not it ran.
pub fn not_pending(
    ctx: Ctx,
    key: &[u8],
    group: &[u8],
    ids: &[StreamId],
) -> Result<Vec<StreamId>, Whole> {
    if ids.len() > MAX_IDS_READ {
        return Err(Whole);
    }
    let mut gone = Vec::new();
    for id in ids {
        let id_text = id.to_string();
        let at = id_text.as_bytes();
        match ctx.call("XPENDING", &[key, group, at, at, b"1"]) {
            Reply::Array(rows) if rows.is_empty() => gone.push(*id),
            Reply::Array(_) => {}
            _ => return Err(Whole), // NOGROUP or a reply this module does not read
        }
    }
    gone.sort();
    gone.dedup();
    Ok(gone)
}

/// The stream's last id, entries-added and max deleted id as they are now (after XSETID,
/// inside the command; `None`: not a stream, or a reply this module does not read).
pub fn read_stream_ids(ctx: Ctx, key: &[u8]) -> Option<Effect> {
    let Reply::Array(info) = ctx.call("XINFO", &[b"STREAM", key]) else {
        return None;
    };
    Some(Effect::StreamSetId {
        key: key.to_vec(),
        last_id: str_field(&info, b"last-generated-id").and_then(parse_id)?,
        entries_added: u64::try_from(int_field(&info, b"entries-added")?).ok()?,
        max_deleted: str_field(&info, b"max-deleted-entry-id").and_then(parse_id)?,
    })
}

/// Every group of the stream `key` (in the selected db) as it is now, without pending
/// entries: after an XGROUP SETID / DESTROY / CREATECONSUMER / DELCONSUMER, inside the
/// command (`None`: not a stream, or a reply this module does not read).
pub fn read_groups(ctx: Ctx, key: &[u8]) -> Option<Effect> {
    let Reply::Array(info) = ctx.call("XINFO", &[b"STREAM", key, b"FULL", b"COUNT", b"1"]) else {
        return None;
    };
    let groups = field(&info, b"groups")
        .and_then(array)?
        .iter()
        .map(|g| {
            let g = array(g)?;
            Some(GroupHeader {
                name: str_field(g, b"name")?.to_vec(),
                last_id: str_field(g, b"last-delivered-id").and_then(parse_id)?,
                entries_read: match field(g, b"entries-read")? {
                    Reply::Int(n) => *n,
                    Reply::Null => -1,
                    _ => return None,
                },
                consumers: consumer_times(g, |_| true)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Effect::StreamGroups {
        key: key.to_vec(),
        groups,
    })
}

/// The seen and active times of a group's consumers that `wanted` names (`None`: a reply
/// this module does not read).
fn consumer_times(g: &[Reply], wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<ConsumerTimes>> {
    let mut out = Vec::new();
    for c in field(g, b"consumers").and_then(array)? {
        let c = array(c)?;
        let name = str_field(c, b"name")?;
        if wanted(name) {
            out.push(ConsumerTimes {
                name: name.to_vec(),
                seen_ms: int_field(c, b"seen-time")?,
                active_ms: int_field(c, b"active-time").unwrap_or(-1),
            });
        }
    }
    Some(out)
}

/// The pending entries from `last` back to the first stream entry that is not pending since
/// `since` (or the stream's first), in chunks: every entry a `>` read without a COUNT
/// delivered lies after the old cursor, and each of those is pending since `since` (an
/// earlier entry that also is only makes the range longer).
fn walk_back(
    ctx: Ctx,
    key: &[u8],
    group: &[u8],
    last: StreamId,
    since: i64,
) -> Result<PelRange, Whole> {
    let mut entries = Vec::new();
    let (mut end, mut first, mut walked) = (last, last, 0);
    let mut past_end = false;
    loop {
        let ids = ctx
            .open_read(key)
            .filter(|k| k.key_type() == KeyType::Stream)
            .and_then(|k| k.stream_ids_back((end.ms, end.seq), WALK_CHUNK + usize::from(past_end)))
            .ok_or(Whole)?;
        let ids: Vec<StreamId> = ids
            .into_iter()
            .map(|(ms, seq)| StreamId { ms, seq })
            .filter(|id| !(past_end && *id == end))
            .collect();
        let Some(&chunk_first) = ids.last() else {
            break;
        };
        let limit = 2 * WALK_CHUNK + 8;
        let rows = pending_range(ctx, key, group, chunk_first, end, limit, None)?;
        if rows.len() >= limit {
            return Err(Whole);
        }
        let recent = |id: &StreamId| rows.iter().any(|(i, p)| i == id && p.delivered_ms >= since);
        let boundary = !ids.iter().all(recent);
        entries.extend(rows);
        first = chunk_first;
        walked += ids.len();
        if boundary {
            break;
        }
        if walked >= MAX_WALK {
            return Err(Whole);
        }
        (end, past_end) = (chunk_first, true);
    }
    entries.sort_by_key(|(id, _)| *id);
    entries.dedup_by_key(|(id, _)| *id);
    Ok(PelRange {
        first,
        last,
        entries,
    })
}

/// The pending entries of `group` from `first` to `last` (at most `limit`), with their
/// delivery times made absolute.
fn pending_range(
    ctx: Ctx,
    key: &[u8],
    group: &[u8],
    first: StreamId,
    last: StreamId,
    limit: usize,
    consumer: Option<&[u8]>,
) -> Result<Vec<(StreamId, Pending)>, Whole> {
    let last = match last == MAX_ID {
        true => "+".to_string(),
        false => last.to_string(),
    };
    let (first, limit) = (first.to_string(), limit.to_string());
    let mut args: Vec<&[u8]> = vec![
        key,
        group,
        first.as_bytes(),
        last.as_bytes(),
        limit.as_bytes(),
    ];
    args.extend(consumer);
    let (reply, now) = call_with_its_time(ctx, &args)?;
    let Reply::Array(rows) = reply else {
        return Err(Whole);
    };
    rows.iter()
        .map(|row| {
            let row = array(row).ok_or(Whole)?;
            match row {
                [Reply::Str(id), Reply::Str(consumer), Reply::Int(idle), Reply::Int(count)] => {
                    Ok((
                        parse_id(id).ok_or(Whole)?,
                        Pending {
                            consumer: consumer.clone(),
                            delivered_ms: now - idle,
                            deliveries: u64::try_from(*count).map_err(|_| Whole)?,
                        },
                    ))
                }
                _ => Err(Whole),
            }
        })
        .collect()
}

/// XPENDING with `args`, and the "now" it computed its idle times from.
fn call_with_its_time(ctx: Ctx, args: &[&[u8]]) -> Result<(Reply, i64), Whole> {
    if ffi::server_version().is_some_and(|v| v >= (7, 2, 0)) {
        // commandTimeSnapshot(): fixed for this callback's execution unit.
        let before = ffi::cached_microseconds().ok_or(Whole)?;
        let reply = ctx.call("XPENDING", args);
        let after = ffi::cached_microseconds().ok_or(Whole)?;
        return match before == after {
            true => Ok((reply, before / 1000)),
            false => Err(Whole),
        };
    }
    for _ in 0..CLOCK_TRIES {
        let before = ffi::milliseconds().ok_or(Whole)?;
        let reply = ctx.call("XPENDING", args);
        if ffi::milliseconds() == Some(before) {
            return Ok((reply, before));
        }
    }
    Err(Whole)
}

fn array(r: &Reply) -> Option<&[Reply]> {
    match r {
        Reply::Array(a) => Some(a),
        _ => None,
    }
}

/// A field of a RESP2 map (a flat array of names and values).
fn field<'a>(map: &'a [Reply], name: &[u8]) -> Option<&'a Reply> {
    map.chunks_exact(2)
        .find(|kv| kv[0].as_bytes() == Some(name))
        .map(|kv| &kv[1])
}

fn str_field<'a>(map: &'a [Reply], name: &[u8]) -> Option<&'a [u8]> {
    field(map, name)?.as_bytes()
}

fn int_field(map: &[Reply], name: &[u8]) -> Option<i64> {
    match field(map, name)? {
        Reply::Int(n) => Some(*n),
        _ => None,
    }
}

/// `ms-seq` as the server writes it.
fn parse_id(text: &[u8]) -> Option<StreamId> {
    let text = std::str::from_utf8(text).ok()?;
    let (ms, seq) = text.split_once('-')?;
    Some(StreamId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_map_fields() {
        assert_eq!(parse_id(b"12-3"), Some(StreamId { ms: 12, seq: 3 }));
        assert_eq!(parse_id(b"12"), None);
        let map = vec![
            Reply::Str(b"name".to_vec()),
            Reply::Str(b"g".to_vec()),
            Reply::Str(b"seen-time".to_vec()),
            Reply::Int(7),
        ];
        assert_eq!(str_field(&map, b"name"), Some(&b"g"[..]));
        assert_eq!(int_field(&map, b"seen-time"), Some(7));
        assert_eq!(int_field(&map, b"active-time"), None);
    }
}
