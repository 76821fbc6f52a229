//! Random effect workloads shared by the core tests: each effect is valid on the model
//! state it follows, over a few keys and dbs, touching every effect kind.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{Effect, End, StreamId, Value, NO_EXPIRE};

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

pub fn random_effect(rng: &mut StdRng) -> Effect {
    let key = key(rng);
    match rng.gen_range(0..20) {
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
            to_db: rng.gen_range(0..3),
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
        _ => match rng.gen_range(0..3) {
            0 => Effect::FlushDb,
            1 => Effect::SwapDb {
                other: rng.gen_range(0..3),
            },
            _ => Effect::FlushAll,
        },
    }
}

/// A workload of batches of (db, effect), each valid on the model state it follows.
pub fn workload(seed: u64, batches: usize) -> Vec<Vec<(u8, Effect)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Dataset::default();
    let mut out = Vec::new();
    while out.len() < batches {
        let mut batch = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let db = rng.gen_range(0..3);
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

pub fn model_after(batches: &[Vec<(u8, Effect)>]) -> Dataset {
    let mut m = Dataset::default();
    for (db, e) in batches.iter().flatten() {
        m.apply(*db, e).expect("valid by construction");
    }
    m
}
