//! Instant restart without Redis: a key space opened without its walk, frozen, read
//! through a view while the replayer goes on folding, walked for the warm-up, and given
//! its free space back.
//!
//! - The view reads exactly the state of the freeze however many batches fold after it
//!   (overwrites, deletes, rehashes, flushes), and its walk hands over every key of it.
//! - After `end_freeze` the heap account is exact, space is reused, and the state is
//!   the model's.
//! - Crash at every flush/fence of a run that opens unwalked, folds, freezes, folds on,
//!   ends the freeze and folds again: recovery equals the model of the acknowledged
//!   prefix, and the structure checks clean (no block the frozen state reached was
//!   reused while it was kept).

mod core_support;
mod effect_gen;

use core_support::*;
use effect_gen::{model_after, workload};
use redis_nvm::effect::model::{Dataset, Entry, ModelValue};
use redis_nvm::effect::Effect;
use redis_nvm::keyspace::{KeySpace, StoredValue};
use redis_nvm::log::LogError;
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;
use redis_nvm::replay::Replayer;

fn unwalked_replayer(pool: &Pool) -> Replayer {
    let ks = pool.open_keyspace_unwalked().expect("key space opens");
    Replayer::new(ks, pool.log().new_reader()).expect("replayer")
}

/// Appends `effects` (folding when the log is full) and folds them all.
fn log_and_fold(pool: &mut Pool, r: &mut Replayer, effects: &[(u32, Effect)]) {
    for (db, e) in effects {
        loop {
            match append_effect(pool, r, *db, e) {
                Ok(_) => break,
                Err(LogError::Full { .. }) => {
                    assert!(
                        step(pool, r).expect("folds") > 0,
                        "log full, nothing to fold"
                    );
                }
                Err(e) => panic!("append: {e}"),
            }
        }
    }
    while step(pool, r).expect("folds") > 0 {}
}

/// The keys a frozen walk hands over, as a dataset (streams as their stored parts).
fn walked_dataset(view: &KeySpace) -> Dataset {
    let mut ds = Dataset::default();
    let mut keys = Vec::new();
    let walked = view
        .walk_frozen(&[], &mut |db, key, entry| {
            keys.push((db, key, entry));
            Ok(())
        })
        .expect("walks");
    assert!(
        walked.report.problems.is_empty(),
        "{:?}",
        walked.report.problems
    );
    for (db, key, entry) in keys {
        let value = match entry.value {
            StoredValue::String(s) => ModelValue::String(s),
            StoredValue::List(l) => ModelValue::List(l.into_iter().collect()),
            StoredValue::Hash(h) => ModelValue::Hash(h.into_iter().collect()),
            StoredValue::Set(s) => ModelValue::Set(s.into_iter().collect()),
            StoredValue::Zset(z) => {
                ModelValue::Zset(z.into_iter().map(|(m, s)| (m, s.to_bits())).collect())
            }
            StoredValue::Stream { .. } => continue,
        };
        let entry = Entry {
            value,
            expire_at_ms: entry.expire_at_ms,
        };
        assert!(ds.dbs.entry(db).or_default().insert(key, entry).is_none());
    }
    ds
}

/// The dataset without streams (the walk test compares the other types value by value).
fn without_streams(mut ds: Dataset) -> Dataset {
    for keys in ds.dbs.values_mut() {
        keys.retain(|_, e| !matches!(e.value, ModelValue::Stream { .. }));
    }
    ds.dbs.retain(|_, keys| !keys.is_empty());
    ds.functions = None;
    ds
}

#[test]
fn a_view_reads_the_frozen_state_while_folding_goes_on() {
    for seed in 0..4u64 {
        let batches = workload(700 + seed, 360);
        let (before, rest) = batches.split_at(120);
        let (during, after) = rest.split_at(120);
        let flat = |b: &[Vec<(u32, Effect)>]| b.iter().flatten().cloned().collect::<Vec<_>>();

        let sim = CrashSim::new(POOL);
        let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 4096).expect("pool");
        let mut r = replayer(&pool);
        log_and_fold(&mut pool, &mut r, &flat(before));
        drop(r);

        // Restart: open without the walk, then freeze.
        let mut pool = Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
            .expect("reopens");
        let mut r = unwalked_replayer(&pool);
        assert!(!r.keyspace().free_space_known() || r.keyspace().key_count().unwrap() == 0);
        let frozen = model_after(before);
        let snapshot = r.keyspace_mut().freeze();
        let mut view = r.keyspace().view(&snapshot);
        assert_eq!(view.to_dataset().expect("view reads"), frozen);

        log_and_fold(&mut pool, &mut r, &flat(during));
        assert_eq!(
            r.keyspace().to_dataset().expect("reads"),
            model_after(&batches[..240]),
            "seed {seed}: the live state moved on"
        );
        assert_eq!(
            view.to_dataset().expect("view reads"),
            frozen,
            "seed {seed}: the view still reads the frozen state"
        );
        assert_eq!(walked_dataset(&view), without_streams(frozen.clone()));
        for (db, key) in frozen
            .dbs
            .iter()
            .flat_map(|(db, k)| k.keys().map(move |k| (*db, k)))
        {
            assert!(
                view.get_verified(db, key).expect("reads").is_some(),
                "seed {seed}: frozen key {key:?} of db {db}"
            );
        }

        let walked = view.walk_frozen(&[], &mut |_, _, _| Ok(())).expect("walks");
        r.keyspace_mut().end_freeze(&walked);
        assert!(r.keyspace().free_space_known());
        assert_no_leak(r.keyspace_mut());
        log_and_fold(&mut pool, &mut r, &flat(after));
        let mut ks = r.into_keyspace();
        assert_no_leak(&mut ks);
        assert_eq!(ks.to_dataset().expect("reads"), model_after(&batches));
    }
}

#[test]
fn space_freed_while_frozen_is_reused_after_the_freeze() {
    let sim = CrashSim::new(POOL);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 4096).expect("pool");
    let mut r = replayer(&pool);
    let put = |i: u32, round: u32| Effect::Put {
        key: format!("k{i}").into_bytes(),
        value: redis_nvm::effect::Value::String(vec![b'a' + (round % 26) as u8; 200]),
        expire_at_ms: -1,
    };
    let round = |n: u32| (0..200).map(|i| (0, put(i, n))).collect::<Vec<_>>();
    log_and_fold(&mut pool, &mut r, &round(0));
    drop(r);
    let mut pool = Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
        .expect("reopens");
    let mut r = unwalked_replayer(&pool);
    let snapshot = r.keyspace_mut().freeze();
    let view = r.keyspace().view(&snapshot);
    log_and_fold(&mut pool, &mut r, &round(1));
    let top_frozen = r.keyspace().heap_stats();
    let walked = view.walk_frozen(&[], &mut |_, _, _| Ok(())).expect("walks");
    r.keyspace_mut().end_freeze(&walked);
    for n in 2..12 {
        log_and_fold(&mut pool, &mut r, &round(n));
    }
    let end = r.keyspace().heap_stats();
    assert_eq!(
        end.used + end.free,
        end.capacity,
        "the account is exact again"
    );
    assert!(
        end.capacity - end.free <= 2 * (top_frozen.capacity - top_frozen.free),
        "ten more overwrite rounds reuse the space freed while frozen: {top_frozen:?} -> {end:?}"
    );
    let mut ks = r.into_keyspace();
    assert_no_leak(&mut ks);
}

/// Opens unwalked, folds the tail, freezes, folds `during`, ends the freeze from the
/// view's walk, folds `after`. Returns how many effects of during+after were
/// acknowledged before a crash.
fn restart_run(sim: &CrashSim, during: &[(u32, Effect)], after: &[(u32, Effect)]) -> usize {
    let Ok(mut pool) = Pool::from_media(Box::new(sim.clone()), false) else {
        return 0;
    };
    let Ok(ks) = pool.open_keyspace_unwalked() else {
        return 0;
    };
    let Ok(mut r) = Replayer::new(ks, pool.log().new_reader()) else {
        return 0;
    };
    if r.drain(pool.log().committed_end()).is_err() {
        return 0;
    }
    let snapshot = r.keyspace_mut().freeze();
    let view = r.keyspace().view(&snapshot);
    let mut acked = 0;
    for (phase, effects) in [during, after].into_iter().enumerate() {
        for (db, e) in effects {
            loop {
                match append_effect(&mut pool, &mut r, *db, e) {
                    Ok(_) => break,
                    Err(LogError::Full { .. }) => match step(&mut pool, &mut r) {
                        Ok(n) if n > 0 => continue,
                        _ => return acked,
                    },
                    Err(_) => return acked,
                }
            }
            acked += 1;
            if acked % 5 == 0 && step(&mut pool, &mut r).is_err() {
                return acked;
            }
        }
        if phase == 0 {
            while let Ok(n) = step(&mut pool, &mut r) {
                if n == 0 {
                    break;
                }
            }
            let Ok(walked) = view.walk_frozen(&[], &mut |_, _, _| Ok(())) else {
                return acked;
            };
            r.keyspace_mut().end_freeze(&walked);
        }
    }
    acked
}

#[test]
fn recovery_equals_the_model_at_every_crash_point_of_a_frozen_restart() {
    for seed in 0..2u64 {
        let batches = workload(900 + seed, 150);
        let before: Vec<(u32, Effect)> = batches[..60].iter().flatten().cloned().collect();
        let during: Vec<(u32, Effect)> = batches[60..110].iter().flatten().cloned().collect();
        let after: Vec<(u32, Effect)> = batches[110..].iter().flatten().cloned().collect();
        // The pool before the restart: `before` folded, plus an unfolded tail.
        let base = CrashSim::new(POOL);
        {
            let mut pool =
                Pool::from_media_with_log(Box::new(base.clone()), true, 4096).expect("pool");
            let mut r = replayer(&pool);
            let (folded, tail) = before.split_at(before.len() - 8);
            log_and_fold(&mut pool, &mut r, folded);
            for (db, e) in tail {
                append_effect(&mut pool, &mut r, *db, e).expect("the tail fits");
            }
        }
        let image = base.durable_image();
        let all: Vec<(u32, Effect)> = during.iter().chain(&after).cloned().collect();
        let whole = CrashSim::from_image(image.clone());
        assert_eq!(restart_run(&whole, &during, &after), all.len());
        let total = whole.events();
        for n in 0..=total {
            let sim = CrashSim::from_image(image.clone()).with_crash_at(n);
            let acked = restart_run(&sim, &during, &after);
            if !sim.crashed() {
                continue;
            }
            let pool = Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
                .expect("reopens");
            let got = state_of(&pool);
            let prefix = |k: usize| {
                let mut m = model_after(std::slice::from_ref(&before));
                for (db, e) in &all[..k] {
                    m.apply(*db, e).expect("valid");
                }
                m
            };
            let with = (acked + 1).min(all.len());
            assert!(
                got == prefix(acked) || got == prefix(with),
                "seed {seed} cut {n}/{total}: recovered state is neither the acknowledged \
                 prefix ({acked} effects) nor that plus the one in flight"
            );
        }
    }
}
