//! A stream's DUMP payload with its consumer groups brought up to date.
//!
//! Why: the consumer-group commands (XACK, XREADGROUP, XCLAIM) change a stream's groups
//! without touching its entries, and the module logs them as what they changed
//! (`StreamAck`, `StreamGroup`: ids, times, owners) instead of the whole stream. Times and
//! owners cannot be set through any command (XCLAIM sets its consumer's seen time to the
//! time it runs), so the warm-up writes them into the stream's last DUMP before it
//! RESTOREs it: the groups section is parsed, the records are applied in log order, and
//! the section is written again; everything before it (entries, length, ids, counters)
//! is copied byte for byte.
//!
//! The format (Redis 7.0 `rdbSaveObject`, types 19 and 21; 21 is Valkey 8's, with an
//! active time per consumer): listpack nodes (count, then key and listpack strings),
//! length, last id, first id, max deleted id, entries added, then the groups: count, and
//! per group its name, last id (ms, seq), entries read, its PEL (count, then per entry the
//! raw 128-bit big-endian id, delivery time, delivery count) and its consumers (count,
//! then per consumer its name, seen time, [active time], and its PEL as raw ids only,
//! each of which must be in the group's PEL).
//!
//! Invariants: a payload that does not parse, or whose crc is wrong, is an error, never a
//! guess; the result carries a fresh crc and the original rdb version; a record for a
//! group the payload lacks is an error (the stream and its records disagree).

#![forbid(unsafe_code)]

use super::rdb::{open_payload, put_len, put_string, seal_payload, Reader};
use crate::effect::{Effect, StreamId};
use std::collections::BTreeMap;

const RDB_TYPE_STREAM_LISTPACKS_2: u8 = 19;
const RDB_TYPE_STREAM_LISTPACKS_3: u8 = 21;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Nack {
    delivered_ms: i64,
    deliveries: u64,
    /// `None`: in no consumer's PEL (only a damaged payload has that).
    consumer: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Consumer {
    seen_ms: i64,
    active_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: Vec<u8>,
    last_id: StreamId,
    entries_read: u64,
    pel: BTreeMap<StreamId, Nack>,
    consumers: BTreeMap<Vec<u8>, Consumer>,
}

/// A stream payload split into what is copied and what is rewritten.
#[derive(Debug)]
struct Parsed<'a> {
    ty: u8,
    version: [u8; 2],
    /// The object up to (not including) the group count.
    head: &'a [u8],
    groups: Vec<Group>,
}

fn bad(what: &str) -> String {
    format!("stream DUMP payload: {what}")
}

fn raw_id(r: &mut Reader) -> Option<StreamId> {
    let b = r.take(16)?;
    Some(StreamId {
        ms: u64::from_be_bytes(b[..8].try_into().ok()?),
        seq: u64::from_be_bytes(b[8..].try_into().ok()?),
    })
}

fn put_raw_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_be_bytes());
    out.extend_from_slice(&id.seq.to_be_bytes());
}

fn parse(payload: &[u8]) -> Result<Parsed<'_>, String> {
    let (ty, object, version) = open_payload(payload).ok_or_else(|| bad("bad crc64"))?;
    if ty != RDB_TYPE_STREAM_LISTPACKS_2 && ty != RDB_TYPE_STREAM_LISTPACKS_3 {
        return Err(bad(&format!("type {ty} is not a stream this module reads")));
    }
    let mut r = Reader { buf: object };
    let nodes = r.number().ok_or_else(|| bad("node count"))?;
    for _ in 0..nodes {
        r.string().ok_or_else(|| bad("node key"))?;
        r.string().ok_or_else(|| bad("listpack"))?;
    }
    // length, last id, first id, max deleted id, entries added
    for _ in 0..8 {
        r.number().ok_or_else(|| bad("stream metadata"))?;
    }
    let head = &object[..object.len() - r.buf.len()];
    let ngroups = r.number().ok_or_else(|| bad("group count"))?;
    let mut groups = Vec::new();
    for _ in 0..ngroups {
        groups.push(parse_group(&mut r, ty).ok_or_else(|| bad("consumer group"))?);
    }
    if !r.buf.is_empty() {
        return Err(bad("bytes after the groups"));
    }
    Ok(Parsed {
        ty,
        version,
        head,
        groups,
    })
}

fn parse_group(r: &mut Reader, ty: u8) -> Option<Group> {
    let name = r.string()?;
    let last_id = StreamId {
        ms: r.number()?,
        seq: r.number()?,
    };
    let entries_read = r.number()?;
    let mut pel = BTreeMap::new();
    for _ in 0..r.number()? {
        let id = raw_id(r)?;
        let delivered_ms = r.ms_time()?;
        let deliveries = r.number()?;
        pel.insert(
            id,
            Nack {
                delivered_ms,
                deliveries,
                consumer: None,
            },
        );
    }
    let mut consumers = BTreeMap::new();
    for _ in 0..r.number()? {
        let cname = r.string()?;
        let seen_ms = r.ms_time()?;
        let active_ms = if ty >= RDB_TYPE_STREAM_LISTPACKS_3 {
            r.ms_time()?
        } else {
            -1
        };
        for _ in 0..r.number()? {
            // The server refuses a consumer entry missing from the group's PEL: so do we.
            pel.get_mut(&raw_id(r)?)?.consumer = Some(cname.clone());
        }
        consumers.insert(cname, Consumer { seen_ms, active_ms });
    }
    Some(Group {
        name,
        last_id,
        entries_read,
        pel,
        consumers,
    })
}

fn write(p: &Parsed) -> Vec<u8> {
    let mut out = p.head.to_vec();
    put_len(&mut out, p.groups.len() as u64);
    for g in &p.groups {
        put_string(&mut out, &g.name);
        put_len(&mut out, g.last_id.ms);
        put_len(&mut out, g.last_id.seq);
        put_len(&mut out, g.entries_read);
        // Only entries an existing consumer owns: the server loads an entry without one
        // (it checks only with sanitize-dump-payload) and asserts on it later.
        let owned = |n: &&Nack| {
            n.consumer
                .as_ref()
                .is_some_and(|c| g.consumers.contains_key(c))
        };
        let pel: Vec<(&StreamId, &Nack)> = g.pel.iter().filter(|(_, n)| owned(n)).collect();
        put_len(&mut out, pel.len() as u64);
        for (id, n) in pel {
            put_raw_id(&mut out, *id);
            out.extend_from_slice(&n.delivered_ms.to_le_bytes());
            put_len(&mut out, n.deliveries);
        }
        put_len(&mut out, g.consumers.len() as u64);
        for (name, c) in &g.consumers {
            put_string(&mut out, name);
            out.extend_from_slice(&c.seen_ms.to_le_bytes());
            if p.ty >= RDB_TYPE_STREAM_LISTPACKS_3 {
                out.extend_from_slice(&c.active_ms.to_le_bytes());
            }
            let owned: Vec<StreamId> = g
                .pel
                .iter()
                .filter(|(_, n)| n.consumer.as_deref() == Some(name.as_slice()))
                .map(|(id, _)| *id)
                .collect();
            put_len(&mut out, owned.len() as u64);
            for id in owned {
                put_raw_id(&mut out, id);
            }
        }
    }
    seal_payload(p.ty, &out, p.version)
}

/// Whether an effect changes a stream's consumer groups only (what `fold` applies).
pub fn is_group_op(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::StreamAck { .. } | Effect::StreamGroup { .. } | Effect::StreamGroups { .. }
    )
}

/// The payload with the group effects among `ops` applied in order (other effects are
/// left to the caller: they do not touch the groups).
pub fn fold(payload: &[u8], ops: &[Effect]) -> Result<Vec<u8>, String> {
    let mut p = parse(payload)?;
    for op in ops {
        match op {
            Effect::StreamAck { group, ids, .. } => {
                // XACK on a missing group changes nothing.
                if let Some(g) = p.groups.iter_mut().find(|g| &g.name == group) {
                    for id in ids {
                        g.pel.remove(id);
                    }
                }
            }
            Effect::StreamGroup { group, state, .. } => {
                let g = p
                    .groups
                    .iter_mut()
                    .find(|g| &g.name == group)
                    .ok_or_else(|| {
                        bad(&format!(
                            "no group {:?} for a stream-group record",
                            String::from_utf8_lossy(group)
                        ))
                    })?;
                g.last_id = state.last_id;
                g.entries_read = state.entries_read as u64;
                for c in &state.consumers {
                    g.consumers.insert(
                        c.name.clone(),
                        Consumer {
                            seen_ms: c.seen_ms,
                            active_ms: c.active_ms,
                        },
                    );
                }
                for range in &state.ranges {
                    let stale: Vec<StreamId> = g
                        .pel
                        .range(range.first..=range.last)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in stale {
                        g.pel.remove(&id);
                    }
                    for (id, n) in &range.entries {
                        // An owner the record did not time: it existed before (keep its
                        // times) or is new (its first delivery is when it was first seen).
                        g.consumers.entry(n.consumer.clone()).or_insert(Consumer {
                            seen_ms: n.delivered_ms,
                            active_ms: n.delivered_ms,
                        });
                        g.pel.insert(
                            *id,
                            Nack {
                                delivered_ms: n.delivered_ms,
                                deliveries: n.deliveries,
                                consumer: Some(n.consumer.clone()),
                            },
                        );
                    }
                }
            }
            Effect::StreamGroups { groups, .. } => {
                p.groups.retain(|g| groups.iter().any(|h| h.name == g.name));
                for h in groups {
                    let g = match p.groups.iter_mut().position(|g| g.name == h.name) {
                        Some(i) => &mut p.groups[i],
                        None => {
                            p.groups.push(Group {
                                name: h.name.clone(),
                                last_id: h.last_id,
                                entries_read: 0,
                                pel: BTreeMap::new(),
                                consumers: BTreeMap::new(),
                            });
                            p.groups.last_mut().ok_or_else(|| bad("no group"))?
                        }
                    };
                    g.last_id = h.last_id;
                    g.entries_read = h.entries_read as u64;
                    g.consumers = h
                        .consumers
                        .iter()
                        .map(|c| {
                            let times = Consumer {
                                seen_ms: c.seen_ms,
                                active_ms: c.active_ms,
                            };
                            (c.name.clone(), times)
                        })
                        .collect();
                    // A deleted consumer's pending entries went with it.
                    let consumers = &g.consumers;
                    g.pel.retain(|_, n| {
                        n.consumer
                            .as_ref()
                            .is_some_and(|c| consumers.contains_key(c))
                    });
                }
                p.groups.sort_by(|a, b| a.name.cmp(&b.name));
            }
            _ => {}
        }
    }
    Ok(write(&p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{ConsumerTimes, GroupHeader, GroupState, PelRange, Pending};

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// A payload with no entries and the given groups, as a server would write it.
    fn payload(ty: u8, groups: &[Group]) -> Vec<u8> {
        let mut head = Vec::new();
        put_len(&mut head, 0); // nodes
        for n in [0u64, 5, 1, 0, 0, 0, 0, 5] {
            put_len(&mut head, n);
        }
        let p = Parsed {
            ty,
            version: [10, 0],
            head: &head,
            groups: groups.to_vec(),
        };
        write(&p)
    }

    fn group(consumer_of_1: &[u8]) -> Group {
        let mut pel = BTreeMap::new();
        for (i, c) in [(1u64, consumer_of_1), (2, b"bob")] {
            pel.insert(
                id(i, 0),
                Nack {
                    delivered_ms: 1000 + i as i64,
                    deliveries: 1,
                    consumer: Some(c.to_vec()),
                },
            );
        }
        let mut consumers = BTreeMap::new();
        for name in [consumer_of_1, b"bob"] {
            consumers.insert(
                name.to_vec(),
                Consumer {
                    seen_ms: 900,
                    active_ms: -1,
                },
            );
        }
        Group {
            name: b"g".to_vec(),
            last_id: id(2, 0),
            entries_read: 2,
            pel,
            consumers,
        }
    }

    fn unhex(parts: &[&str]) -> Vec<u8> {
        let h: String = parts.concat();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `DUMP s` after XADD s 1-1, 2-1, 3-1; XGROUP CREATE s g 0; XREADGROUP GROUP g alice
    /// COUNT 2 ... >; the same as 1234 COUNT 1 ... > (an int-encoded name); the same as a
    /// 36-byte name (LZF-compressed) from 0; XGROUP CREATE s 99 $ (entries-read unknown).
    const REDIS_70: &[&str] = &[
        "13011000000000000000010000000000000001c32a3311330000001400030100010101816602000102200a05",
        "000181760204200a0001e0010a401740150101ff030301010100000302c063030181ffffffffffffffff0000",
        "01670301030300000000000000010000000000000001ea16cd32a20100000100000000000000020000000000",
        "000001ea16cd32a20100000100000000000000030000000000000001ed16cd32a20100000103c1d204ed16cd",
        "32a20100000100000000000000030000000000000001c30924016161e01700016161f116cd32a20100000005",
        "616c696365ea16cd32a201000002000000000000000100000000000000010000000000000002000000000000",
        "00010a008baa6cd2f55abac0",
    ];
    /// The same commands on Valkey 8.0.1 (type 21: active times).
    const VALKEY_8: &[&str] = &[
        "15011000000000000000010000000000000001c32a3311330000001400030100010101816602000102200a05",
        "000181760204200a0001e0010a401740150101ff030301010100000302c063030181ffffffffffffffff0000",
        "016703010303000000000000000100000000000000019a18cd32a20100000100000000000000020000000000",
        "0000019a18cd32a201000001000000000000000300000000000000019e18cd32a20100000103c1d2049e18cd",
        "32a20100009e18cd32a20100000100000000000000030000000000000001c30924016161e01700016161a118",
        "cd32a2010000ffffffffffffffff0005616c6963659a18cd32a20100009a18cd32a201000002000000000000",
        "00010000000000000001000000000000000200000000000000010b00da6817ba3859a013",
    ];

    #[test]
    fn payloads_the_servers_wrote_parse_and_survive_a_rewrite() {
        for (fixture, ty) in [
            (REDIS_70, RDB_TYPE_STREAM_LISTPACKS_2),
            (VALKEY_8, RDB_TYPE_STREAM_LISTPACKS_3),
        ] {
            let bytes = unhex(fixture);
            let p = parse(&bytes).unwrap();
            assert_eq!(p.ty, ty);
            let names: Vec<&[u8]> = p.groups.iter().map(|g| g.name.as_slice()).collect();
            assert_eq!(names, [&b"99"[..], b"g"]);
            assert_eq!(p.groups[0].entries_read, u64::MAX, "unknown: -1");
            let g = &p.groups[1];
            assert_eq!((g.last_id, g.entries_read), (id(3, 1), 3));
            let owners: Vec<&[u8]> = g
                .pel
                .values()
                .filter_map(|n| n.consumer.as_deref())
                .collect();
            assert_eq!(owners, [&b"alice"[..], b"alice", b"1234"]);
            let consumers: Vec<&[u8]> = g.consumers.keys().map(|c| c.as_slice()).collect();
            assert_eq!(consumers, [&b"1234"[..], &[b'a'; 36][..], b"alice"]);
            let again = write(&p);
            let reparsed = parse(&again).unwrap();
            assert_eq!(reparsed.groups, p.groups);
            assert_eq!(reparsed.head, p.head);
        }
    }

    #[test]
    fn a_groups_record_sets_exactly_its_groups_and_consumers() {
        let mut other = group(b"alice");
        other.name = b"other".to_vec();
        let p = payload(RDB_TYPE_STREAM_LISTPACKS_2, &[group(b"alice"), other]);
        let times = |name: &[u8]| ConsumerTimes {
            name: name.to_vec(),
            seen_ms: 7,
            active_ms: -1,
        };
        // DELCONSUMER alice (her pending 1-0 goes with her), SETID, DESTROY other.
        let op = Effect::StreamGroups {
            key: b"s".to_vec(),
            groups: vec![GroupHeader {
                name: b"g".to_vec(),
                last_id: id(9, 0),
                entries_read: -1,
                consumers: vec![times(b"bob"), times(b"new")],
            }],
        };
        let bytes = fold(&p, &[op]).unwrap();
        let folded = parse(&bytes).unwrap();
        assert_eq!(folded.groups.len(), 1);
        let g = &folded.groups[0];
        assert_eq!((g.last_id, g.entries_read), (id(9, 0), u64::MAX));
        assert_eq!(g.pel.keys().copied().collect::<Vec<_>>(), vec![id(2, 0)]);
        let names: Vec<&[u8]> = g.consumers.keys().map(|c| c.as_slice()).collect();
        assert_eq!(names, [&b"bob"[..], b"new"]);
        assert_eq!(g.consumers[&b"bob"[..]].seen_ms, 7);
    }

    #[test]
    fn an_entry_without_its_consumer_is_never_written() {
        let mut g = group(b"alice");
        g.consumers.remove(&b"alice"[..]);
        let p = payload(RDB_TYPE_STREAM_LISTPACKS_2, &[g]);
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.groups[0].pel.len(), 1, "only bob's 2-0");
    }

    #[test]
    fn parse_and_write_round_trip_on_both_types() {
        for ty in [RDB_TYPE_STREAM_LISTPACKS_2, RDB_TYPE_STREAM_LISTPACKS_3] {
            let p = payload(ty, &[group(b"alice")]);
            let parsed = parse(&p).unwrap();
            assert_eq!(parsed.groups, vec![group(b"alice")]);
            assert_eq!(write(&parsed), p);
        }
    }

    #[test]
    fn a_bad_crc_or_a_consumer_entry_outside_the_pel_is_refused() {
        let mut p = payload(RDB_TYPE_STREAM_LISTPACKS_2, &[group(b"alice")]);
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(parse(&p).is_err());
        let mut g = group(b"alice");
        g.pel.remove(&id(1, 0));
        // `write` drops the entry from alice's PEL too, so damage the bytes by hand:
        // a consumer PEL naming an id the group lacks.
        let mut good = payload(RDB_TYPE_STREAM_LISTPACKS_2, &[group(b"alice")]);
        let body = good.len() - 10;
        let pos = good[..body]
            .windows(16)
            .rposition(|w| w == [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        good[pos + 7] = 9;
        let (ty, object, version) = (
            good[0],
            good[1..body].to_vec(),
            [good[body], good[body + 1]],
        );
        assert!(parse(&seal_payload(ty, &object, version)).is_err());
        assert!(parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn group_records_are_applied_in_order() {
        let p = payload(RDB_TYPE_STREAM_LISTPACKS_3, &[group(b"alice")]);
        let ops = vec![
            Effect::StreamAck {
                key: b"s".to_vec(),
                group: b"g".to_vec(),
                ids: vec![id(1, 0)],
            },
            Effect::StreamGroup {
                key: b"s".to_vec(),
                group: b"g".to_vec(),
                state: GroupState {
                    last_id: id(3, 0),
                    entries_read: 3,
                    consumers: vec![ConsumerTimes {
                        name: b"carol".to_vec(),
                        seen_ms: 5000,
                        active_ms: 5000,
                    }],
                    ranges: vec![PelRange {
                        // 1-0 was acked, 2-0 re-delivered to carol, 3-0 delivered to her.
                        first: id(1, 0),
                        last: id(3, 0),
                        entries: vec![
                            (
                                id(2, 0),
                                Pending {
                                    consumer: b"carol".to_vec(),
                                    delivered_ms: 5000,
                                    deliveries: 2,
                                },
                            ),
                            (
                                id(3, 0),
                                Pending {
                                    consumer: b"carol".to_vec(),
                                    delivered_ms: 5000,
                                    deliveries: 1,
                                },
                            ),
                        ],
                    }],
                },
            },
            Effect::StreamAck {
                key: b"s".to_vec(),
                group: b"other".to_vec(),
                ids: vec![id(2, 0)],
            },
        ];
        let bytes = fold(&p, &ops).unwrap();
        let folded = parse(&bytes).unwrap();
        let g = &folded.groups[0];
        assert_eq!(g.last_id, id(3, 0));
        assert_eq!(g.entries_read, 3);
        assert_eq!(
            g.pel.keys().copied().collect::<Vec<_>>(),
            vec![id(2, 0), id(3, 0)]
        );
        assert!(g
            .pel
            .values()
            .all(|n| n.consumer.as_deref() == Some(&b"carol"[..])));
        assert_eq!(g.pel[&id(2, 0)].deliveries, 2);
        assert_eq!(g.consumers.len(), 3, "alice and bob stay, with empty PELs");
        assert_eq!(g.consumers[&b"carol"[..]].active_ms, 5000);
        let missing = Effect::StreamGroup {
            key: b"s".to_vec(),
            group: b"nope".to_vec(),
            state: GroupState {
                last_id: id(3, 0),
                entries_read: -1,
                consumers: vec![],
                ranges: vec![],
            },
        };
        assert!(fold(&p, &[missing]).is_err());
    }
}
