//! Effects end to end through the storage core, without Redis.
//!
//! - The effect codec round-trips every effect and never panics on arbitrary bytes.
//! - Crash at every flush/fence point of a random effect workload (with and without torn
//!   words): the dataset rebuilt from the recovered log equals the reference model applied
//!   to the acknowledged batches, or to those plus the one in flight — never anything else.

mod effect_gen;

use effect_gen::{model_after, workload};
use proptest::prelude::*;
use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{
    decode, encode, Effect, End, LexBound, ScoreBound, SetOp, StreamId, Value, ZRange, NO_EXPIRE,
};
use redis_nvm::log::{LogState, RecordRef};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;

/// Appends each batch as one atomic log append (one db per append, as the module does:
/// a batch mixing dbs is split, keeping order). Returns how many batches were acknowledged.
fn run(sim: &CrashSim, batches: &[Vec<(u32, Effect)>]) -> usize {
    let Ok(mut pool) = Pool::from_media(Box::new(sim.clone()), true) else {
        return 0;
    };
    let mut acked = 0;
    for batch in batches {
        let mut payloads = Vec::new();
        for (db, e) in batch {
            let mut p = Vec::new();
            let kind = encode(e, &mut p).expect("encodes");
            payloads.push((kind, *db, p));
        }
        let records: Vec<RecordRef> = payloads
            .iter()
            .map(|(kind, db, p)| RecordRef {
                kind: *kind,
                db: *db,
                flags: 0,
                payload: p,
            })
            .collect();
        if pool.log_mut().append(&records).is_err() {
            break;
        }
        acked += 1;
    }
    acked
}

fn recovered(sim: &CrashSim) -> Dataset {
    let pool = Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
        .expect("a crashed pool always reopens");
    assert_eq!(
        pool.log().state(),
        &LogState::Writable,
        "a crash never looks like damage"
    );
    let mut m = Dataset::default();
    for r in pool.log().records() {
        let r = r.expect("valid record");
        let e = decode(r.kind, &r.payload).expect("a recovered record decodes");
        m.apply(r.db, &e).expect("a recovered log applies");
    }
    m
}

#[test]
fn recovery_equals_the_model_of_the_acknowledged_prefix_at_every_crash_point() {
    for seed in 0..4u64 {
        let batches = workload(seed, 30);
        let whole = CrashSim::new(1 << 20);
        let total_before = whole.events();
        run(&whole, &batches);
        let total = whole.events();
        assert!(total > total_before);
        for torn in [false, true] {
            for n in 0..=total {
                let mut sim = CrashSim::new(1 << 20).with_crash_at(n);
                if torn {
                    sim = sim.with_torn_words(seed * 1000 + n);
                }
                let acked = run(&sim, &batches);
                if acked == 0 && n < 8 {
                    continue; // the crash hit pool creation itself
                }
                let got = recovered(&sim);
                let without = model_after(&batches[..acked]);
                let with_in_flight = model_after(&batches[..(acked + 1).min(batches.len())]);
                assert!(
                    got == without || got == with_in_flight,
                    "seed {seed} torn {torn} cut {n}: recovered state is neither the acknowledged prefix \
                     ({acked} batches) nor that plus the batch in flight"
                );
            }
        }
    }
}

fn arb_effect() -> impl Strategy<Value = Effect> {
    let b = || proptest::collection::vec(any::<u8>(), 0..12);
    let l = move || proptest::collection::vec(b(), 0..4);
    prop_oneof![
        (b(), b(), any::<i64>()).prop_map(|(key, v, e)| Effect::Put {
            key,
            value: Value::String(v),
            expire_at_ms: e
        }),
        (b(), l()).prop_map(|(key, items)| Effect::Put {
            key,
            value: Value::Set(items),
            expire_at_ms: NO_EXPIRE
        }),
        (b(), proptest::collection::vec((b(), any::<f64>()), 0..4))
            .prop_map(|(key, pairs)| { Effect::ZsetAdd { key, pairs } }),
        (b(), b()).prop_map(|(from, to)| Effect::Rename { from, to }),
        (b(), l(), any::<bool>()).prop_map(|(key, elements, head)| Effect::ListPush {
            key,
            end: if head { End::Head } else { End::Tail },
            elements
        }),
        (b(), any::<i64>()).prop_map(|(key, by)| Effect::IncrBy { key, by }),
        (b(), b()).prop_map(|(key, by)| Effect::IncrByFloat { key, by }),
        (b(), any::<u64>(), any::<u64>()).prop_map(|(key, ms, seq)| Effect::StreamTrim {
            key,
            min_id: Some(StreamId { ms, seq })
        }),
        (
            b(),
            b(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3)
        )
            .prop_map(|(key, group, ids)| Effect::StreamAck {
                key,
                group,
                ids: ids
                    .into_iter()
                    .map(|(ms, seq)| StreamId { ms, seq })
                    .collect()
            }),
        (
            b(),
            b(),
            any::<(u64, u64, i64)>(),
            proptest::collection::vec((b(), any::<i64>(), any::<i64>()), 0..2),
            proptest::collection::vec((any::<(u64, u64)>(), b(), any::<i64>(), any::<u64>()), 0..3)
        )
            .prop_map(
                |(key, group, (ms, seq, entries_read), consumers, entries)| {
                    let id = |(ms, seq)| StreamId { ms, seq };
                    Effect::StreamGroup {
                        key,
                        group,
                        state: redis_nvm::effect::GroupState {
                            last_id: StreamId { ms, seq },
                            entries_read,
                            consumers: consumers
                                .into_iter()
                                .map(|(name, seen_ms, active_ms)| {
                                    redis_nvm::effect::ConsumerTimes {
                                        name,
                                        seen_ms,
                                        active_ms,
                                    }
                                })
                                .collect(),
                            ranges: vec![redis_nvm::effect::PelRange {
                                first: StreamId { ms: 0, seq: 0 },
                                last: StreamId { ms, seq },
                                entries: entries
                                    .into_iter()
                                    .map(|(i, consumer, delivered_ms, deliveries)| {
                                        (
                                            id(i),
                                            redis_nvm::effect::Pending {
                                                consumer,
                                                delivered_ms,
                                                deliveries,
                                            },
                                        )
                                    })
                                    .collect(),
                            }],
                        },
                    }
                }
            ),
        (
            b(),
            proptest::collection::vec(
                (b(), any::<(u64, u64, i64)>(), b(), any::<(i64, i64)>()),
                0..3
            )
        )
            .prop_map(|(key, groups)| Effect::StreamGroups {
                key,
                groups: groups
                    .into_iter()
                    .map(
                        |(name, (ms, seq, entries_read), consumer, (seen_ms, active_ms))| {
                            redis_nvm::effect::GroupHeader {
                                name,
                                last_id: StreamId { ms, seq },
                                entries_read,
                                consumers: vec![redis_nvm::effect::ConsumerTimes {
                                    name: consumer,
                                    seen_ms,
                                    active_ms,
                                }],
                            }
                        }
                    )
                    .collect()
            }),
        (b(), any::<(u64, u64, u64, u64, u64)>()).prop_map(|(key, (a, b, n, c, d))| {
            Effect::StreamSetId {
                key,
                last_id: StreamId { ms: a, seq: b },
                entries_added: n,
                max_deleted: StreamId { ms: c, seq: d },
            }
        }),
        any::<u32>().prop_map(|other| Effect::SwapDb { other }),
        (b(), any::<u32>()).prop_map(|(key, to_db)| Effect::Move { key, to_db }),
        (b(), any::<u64>(), b()).prop_map(|(key, offset, bytes)| Effect::StringWrite {
            key,
            offset,
            bytes
        }),
        (b(), any::<u64>(), b()).prop_map(|(key, index, element)| Effect::ListSet {
            key,
            index,
            element
        }),
        (b(), any::<bool>(), b(), b()).prop_map(|(key, after, pivot, element)| {
            Effect::ListInsert {
                key,
                after,
                pivot,
                element,
            }
        }),
        (b(), any::<i64>(), b()).prop_map(|(key, count, element)| Effect::ListRem {
            key,
            count,
            element
        }),
        (b(), any::<i64>(), any::<i64>()).prop_map(|(key, start, stop)| Effect::ZsetRemRange {
            key,
            range: ZRange::Rank { start, stop }
        }),
        (
            b(),
            any::<f64>(),
            any::<bool>(),
            any::<f64>(),
            any::<bool>()
        )
            .prop_map(|(key, a, ax, z, zx)| Effect::ZsetRemRange {
                key,
                range: ZRange::Score {
                    min: ScoreBound {
                        value: a,
                        exclusive: ax
                    },
                    max: ScoreBound {
                        value: z,
                        exclusive: zx
                    },
                }
            }),
        (b(), b(), b()).prop_map(|(key, a, z)| Effect::ZsetRemRange {
            key,
            range: ZRange::Lex {
                min: LexBound::Inclusive(a),
                max: if z.is_empty() {
                    LexBound::PosInf
                } else {
                    LexBound::Exclusive(z)
                },
            }
        }),
        (b(), 0u8..3, l()).prop_map(|(key, op, sources)| Effect::SetStore {
            key,
            op: [SetOp::Union, SetOp::Inter, SetOp::Diff][op as usize],
            sources
        }),
        (b(), b()).prop_map(|(from, to)| Effect::Copy { from, to }),
    ]
}

/// Bitwise equality (NaN scores compare equal to themselves).
fn same(a: &Effect, b: &Effect) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    #[test]
    fn codec_round_trips(e in arb_effect()) {
        let mut buf = Vec::new();
        let kind = encode(&e, &mut buf).expect("encodes");
        let back = decode(kind, &buf).expect("decodes");
        prop_assert!(same(&e, &back), "{e:?} != {back:?}");
    }

    #[test]
    fn decoding_garbage_never_panics(kind in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(kind, &bytes);
    }

    #[test]
    fn truncated_payloads_are_errors(e in arb_effect(), cut in 0usize..64) {
        let mut buf = Vec::new();
        let kind = encode(&e, &mut buf).expect("encodes");
        if cut < buf.len() {
            prop_assert!(decode(kind, &buf[..cut]).is_err());
        }
    }
}

/// A length the format's u32 cannot hold is refused, never narrowed (the 4 GiB buffer
/// is never touched: zeroed allocations are mapped lazily).
#[test]
fn lengths_above_u32_are_refused_not_narrowed() {
    let huge = vec![0u8; u32::MAX as usize + 1];
    let e = Effect::StringWrite {
        key: b"k".to_vec(),
        offset: 0,
        bytes: huge,
    };
    assert_eq!(
        redis_nvm::effect::encoded_len(&e),
        Err(redis_nvm::effect::EncodeError {
            len: u64::from(u32::MAX) + 1
        })
    );
}
