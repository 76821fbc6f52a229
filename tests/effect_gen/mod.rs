//! Random effect workloads shared by the core tests: each effect is valid on the model
//! state it follows, over a few keys and dbs, touching every effect kind.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{
    ConsumerTimes, Effect, End, GroupHeader, GroupState, LexBound, PelRange, Pending, ScoreBound,
    SetOp, StreamId, Value, ZRange, NO_EXPIRE,
};

pub fn bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen_range(b'a'..=b'e')).collect()
}

pub fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{}", rng.gen_range(0..6)).into_bytes()
}

pub fn list(rng: &mut StdRng) -> Vec<Vec<u8>> {
    (0..rng.gen_range(1..4)).map(|_| bytes(rng, 6)).collect()
}

/// A db: mostly the first three, now and then one past 255 (the db directory grows).
pub fn db(rng: &mut StdRng) -> u32 {
    if rng.gen_bool(0.05) {
        300
    } else {
        rng.gen_range(0..3)
    }
}

pub fn random_effect(rng: &mut StdRng) -> Effect {
    let key = key(rng);
    match rng.gen_range(0..31) {
        0 => Effect::Put {
            key,
            value: Value::String(bytes(rng, 40)),
            expire_at_ms: if rng.gen_bool(0.3) {
                4_000_000_000_000
            } else {
                NO_EXPIRE
            },
        },
        1 => Effect::Put {
            key,
            value: Value::List(list(rng)),
            expire_at_ms: NO_EXPIRE,
        },
        2 => Effect::Put {
            key,
            value: Value::Zset(
                list(rng)
                    .into_iter()
                    .map(|m| (m, rng.gen_range(-5.0..5.0)))
                    .collect(),
            ),
            expire_at_ms: NO_EXPIRE,
        },
        3 => Effect::Delete { key },
        4 => Effect::ExpireAt {
            key,
            at_ms: rng.gen_range(1..5_000_000_000_000),
        },
        5 => Effect::Persist { key },
        6 => Effect::Rename {
            from: key,
            to: format!("k{}", rng.gen_range(0..6)).into_bytes(),
        },
        7 => Effect::Move {
            key,
            to_db: db(rng),
        },
        8 => Effect::HashSet {
            key,
            pairs: list(rng).into_iter().map(|f| (f, b"v".to_vec())).collect(),
        },
        9 => Effect::HashDel {
            key,
            fields: list(rng),
        },
        10 => Effect::SetAdd {
            key,
            members: list(rng),
        },
        11 => Effect::SetRem {
            key,
            members: list(rng),
        },
        12 => Effect::ZsetAdd {
            key,
            pairs: list(rng).into_iter().map(|m| (m, 1.5)).collect(),
        },
        13 => Effect::ZsetPop {
            key,
            max: rng.gen_bool(0.5),
            count: rng.gen_range(0..3),
        },
        14 => Effect::ListPush {
            key,
            end: if rng.gen_bool(0.5) {
                End::Head
            } else {
                End::Tail
            },
            elements: list(rng),
        },
        15 => Effect::ListPop {
            key,
            end: End::Tail,
            count: rng.gen_range(0..3),
        },
        16 => Effect::ListTrim {
            key,
            start: rng.gen_range(-3..3),
            stop: rng.gen_range(-3..3),
        },
        17 => Effect::IncrBy {
            key,
            by: rng.gen_range(-9..9),
        },
        18 => Effect::StreamAdd {
            key,
            id: StreamId {
                ms: rng.gen_range(1..1000),
                seq: 0,
            },
            fields: vec![(b"f".to_vec(), bytes(rng, 5))],
        },
        19 => Effect::StringWrite {
            key,
            // Past the inline limit now and then: the string becomes chunked.
            offset: if rng.gen_bool(0.2) {
                rng.gen_range(0..20_000)
            } else {
                rng.gen_range(0..60)
            },
            bytes: bytes(rng, 30),
        },
        20 => Effect::ListSet {
            key,
            index: rng.gen_range(0..4),
            element: bytes(rng, 6),
        },
        21 => Effect::ListInsert {
            key,
            after: rng.gen_bool(0.5),
            pivot: bytes(rng, 2),
            element: bytes(rng, 6),
        },
        22 => Effect::ListRem {
            key,
            count: rng.gen_range(-2..3),
            element: bytes(rng, 2),
        },
        23 => Effect::ZsetRemRange {
            key,
            range: match rng.gen_range(0..3) {
                0 => ZRange::Rank {
                    start: rng.gen_range(-3..3),
                    stop: rng.gen_range(-3..3),
                },
                1 => ZRange::Score {
                    min: ScoreBound {
                        value: rng.gen_range(-5.0..5.0),
                        exclusive: rng.gen_bool(0.5),
                    },
                    max: ScoreBound {
                        value: f64::INFINITY,
                        exclusive: false,
                    },
                },
                _ => ZRange::Lex {
                    min: LexBound::Inclusive(bytes(rng, 2)),
                    max: LexBound::PosInf,
                },
            },
        },
        24 => Effect::SetStore {
            key,
            op: [SetOp::Union, SetOp::Inter, SetOp::Diff][rng.gen_range(0..3)],
            sources: (0..rng.gen_range(1..3)).map(|_| self::key(rng)).collect(),
        },
        25 => Effect::Copy {
            from: key,
            to: self::key(rng),
        },
        26 => Effect::StreamAck {
            key,
            group: b"g".to_vec(),
            ids: (0..rng.gen_range(1..3))
                .map(|_| StreamId {
                    ms: rng.gen_range(1..1000),
                    seq: 0,
                })
                .collect(),
        },
        27 => {
            let id = |ms| StreamId { ms, seq: 0 };
            let first = rng.gen_range(1..500);
            Effect::StreamGroup {
                key,
                group: b"g".to_vec(),
                state: GroupState {
                    last_id: id(first + 10),
                    entries_read: rng.gen_range(-1..20),
                    consumers: vec![ConsumerTimes {
                        name: b"c".to_vec(),
                        seen_ms: rng.gen_range(0..1 << 40),
                        active_ms: -1,
                    }],
                    ranges: vec![PelRange {
                        first: id(first),
                        last: id(first + 10),
                        entries: (0..rng.gen_range(0..3))
                            .map(|i| {
                                (
                                    id(first + i),
                                    Pending {
                                        consumer: b"c".to_vec(),
                                        delivered_ms: rng.gen_range(0..1 << 40),
                                        deliveries: rng.gen_range(1..5),
                                    },
                                )
                            })
                            .collect(),
                    }],
                },
            }
        }
        28 => Effect::StreamGroups {
            key,
            groups: vec![GroupHeader {
                name: b"g".to_vec(),
                last_id: StreamId {
                    ms: rng.gen_range(1..500),
                    seq: 0,
                },
                entries_read: rng.gen_range(-1..20),
                consumers: vec![ConsumerTimes {
                    name: b"c".to_vec(),
                    seen_ms: rng.gen_range(0..1 << 40),
                    active_ms: -1,
                }],
            }],
        },
        29 => Effect::StreamSetId {
            key,
            last_id: StreamId {
                ms: rng.gen_range(1000..2000),
                seq: 0,
            },
            entries_added: rng.gen_range(0..50),
            max_deleted: StreamId { ms: 0, seq: 0 },
        },
        _ => match rng.gen_range(0..3) {
            0 => Effect::FlushDb,
            1 => Effect::SwapDb { other: db(rng) },
            _ => Effect::FlushAll,
        },
    }
}

/// A workload of batches of (db, effect), each valid on the model state it follows.
pub fn workload(seed: u64, batches: usize) -> Vec<Vec<(u32, Effect)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Dataset::default();
    let mut out = Vec::new();
    while out.len() < batches {
        let mut batch = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let db = db(&mut rng);
            let effect = random_effect(&mut rng);
            let mut trial = model.clone();
            if trial.apply(db, &effect).is_ok() {
                model = trial;
                batch.push((db, effect));
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
    }
    out
}

pub fn model_after(batches: &[Vec<(u32, Effect)>]) -> Dataset {
    let mut m = Dataset::default();
    for (db, e) in batches.iter().flatten() {
        m.apply(*db, e).expect("valid by construction");
    }
    m
}
