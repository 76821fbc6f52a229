//! Effects end to end through the storage core, without Redis.
//!
//! - The effect codec round-trips every effect and never panics on arbitrary bytes.
//! - Crash at every flush/fence point of a random effect workload (with and without torn
//!   words): the dataset rebuilt from the recovered log equals the reference model applied
//!   to the acknowledged batches, or to those plus the one in flight — never anything else.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{decode, encode, Effect, End, StreamId, Value, NO_EXPIRE};
use redis_nvm::log::{LogState, RecordRef};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;

fn bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen_range(b'a'..=b'e')).collect()
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{}", rng.gen_range(0..6)).into_bytes()
}

fn list(rng: &mut StdRng) -> Vec<Vec<u8>> {
    (0..rng.gen_range(1..4)).map(|_| bytes(rng, 6)).collect()
}

fn random_effect(rng: &mut StdRng) -> Effect {
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
fn workload(seed: u64, batches: usize) -> Vec<Vec<(u8, Effect)>> {
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

fn model_after(batches: &[Vec<(u8, Effect)>]) -> Dataset {
    let mut m = Dataset::default();
    for (db, e) in batches.iter().flatten() {
        m.apply(*db, e).expect("valid by construction");
    }
    m
}

/// Appends each batch as one atomic log append (one db per append, as the module does:
/// a batch mixing dbs is split, keeping order). Returns how many batches were acknowledged.
fn run(sim: &CrashSim, batches: &[Vec<(u8, Effect)>]) -> usize {
    let Ok(mut pool) = Pool::from_media(Box::new(sim.clone()), true) else {
        return 0;
    };
    let mut acked = 0;
    for batch in batches {
        let mut payloads = Vec::new();
        for (db, e) in batch {
            let mut p = Vec::new();
            let kind = encode(e, &mut p);
            payloads.push((kind, *db, p));
        }
        let records: Vec<RecordRef> = payloads
            .iter()
            .map(|(kind, db, p)| RecordRef {
                kind: *kind,
                db: *db,
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
        any::<u8>().prop_map(|other| Effect::SwapDb { other }),
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
        let kind = encode(&e, &mut buf);
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
        let kind = encode(&e, &mut buf);
        if cut < buf.len() {
            prop_assert!(decode(kind, &buf[..cut]).is_err());
        }
    }
}
