//! The key space and the replayer, without Redis.
//!
//! - Differential: random effects of every kind, logged and folded in batches, leave a
//!   key space equal to the reference model, before and after reopening.
//! - Crash at every flush/fence of a run that appends, replays and reuses log and heap
//!   space (with and without torn words): after recovery, key space + log tail equals the
//!   model of the acknowledged prefix (or that plus the write in flight), the structure
//!   checks clean, and heap accounting has no leak. Effects longer than a few dozen
//!   bytes go to blobs, so cuts also fall inside blob writes and blob frees.
//! - Property tests of the index (against a BTreeMap, across reopenings) and of the
//!   allocator (a steady overwrite load does not grow the heap).

mod core_support;
mod effect_gen;

use core_support::*;

use effect_gen::{model_after, workload};
use proptest::prelude::*;
use redis_nvm::effect::{Effect, Value, NO_EXPIRE};
use redis_nvm::keyspace::{StoreError, StoredValue};
use redis_nvm::log::LogError;
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;
use redis_nvm::replay::Replayer;

/// Runs the workload: appends every effect (folding when the log is full, and every
/// `every` appends). Returns how many effects were acknowledged before a crash.
fn run(sim: &CrashSim, effects: &[(u32, Effect)], log_size: u64, every: usize) -> usize {
    let Ok(mut pool) = Pool::from_media_with_log(Box::new(sim.clone()), true, log_size) else {
        return 0;
    };
    let Ok(ks) = pool.open_keyspace() else {
        return 0;
    };
    let Ok(mut r) = Replayer::new(ks, pool.log().new_reader()) else {
        return 0;
    };
    let mut acked = 0;
    for (i, (db, e)) in effects.iter().enumerate() {
        loop {
            match append_effect(&mut pool, &mut r, *db, e) {
                Ok(_) => break,
                Err(LogError::Full { .. }) => match step(&mut pool, &mut r) {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => panic!("log full and nothing to fold"),
                    Err(_) => return acked,
                },
                Err(_) => return acked,
            }
        }
        acked += 1;
        if (i + 1) % every == 0 && step(&mut pool, &mut r).is_err() {
            return acked;
        }
    }
    acked
}

fn flat(seed: u64, n: usize) -> Vec<(u32, Effect)> {
    workload(seed, n).into_iter().flatten().collect()
}

#[test]
fn folding_random_effects_matches_the_model() {
    for seed in 0..6u64 {
        let effects = flat(100 + seed, 400);
        let sim = CrashSim::new(POOL);
        let acked = run(&sim, &effects, 4096, 7);
        assert_eq!(acked, effects.len());
        let reopened = Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
            .expect("reopens");
        let mut r = replayer(&reopened);
        let mut pool = reopened;
        while step(&mut pool, &mut r).expect("folds") > 0 {}
        assert_eq!(pool.log().record_count(), 0);
        let mut ks = r.into_keyspace();
        assert_no_leak(&mut ks);
        let got = ks.to_dataset().expect("reads");
        assert_eq!(
            got,
            model_after(std::slice::from_ref(&effects)),
            "seed {seed}"
        );
    }
}

#[test]
fn recovery_equals_the_model_at_every_crash_point_of_replay_and_reuse() {
    for seed in 0..3u64 {
        let effects = flat(300 + seed, 150);
        let whole = CrashSim::new(POOL);
        assert_eq!(run(&whole, &effects, 4096, 5), effects.len());
        let total = whole.events();
        let done = Pool::from_media(Box::new(CrashSim::from_image(whole.durable_image())), false)
            .expect("reopens");
        // The run wraps the ring log more than once (so log space is reused).
        assert!(
            done.log().head().pos > 2 * done.log().capacity(),
            "head {} capacity {} events {total}",
            done.log().head().pos,
            done.log().capacity()
        );
        for torn in [false, true] {
            for n in 0..=total {
                let mut sim = CrashSim::new(POOL).with_crash_at(n);
                if torn {
                    sim = sim.with_torn_words(seed * 7919 + n);
                }
                let acked = run(&sim, &effects, 4096, 5);
                if !sim.crashed() {
                    continue;
                }
                let Ok(mut pool) =
                    Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false)
                else {
                    assert_eq!(acked, 0, "seed {seed} cut {n}: pool lost after acks");
                    continue; // the crash hit pool creation itself
                };
                let got = state_of(&pool);
                let without = model_after(&[effects[..acked].to_vec()]);
                let with = model_after(&[effects[..(acked + 1).min(effects.len())].to_vec()]);
                assert!(
                    got == without || got == with,
                    "seed {seed} torn {torn} cut {n}: recovered state is neither the acknowledged \
                     prefix ({acked} effects) nor that plus the one in flight"
                );
                // The recovered pool folds its tail and keeps an exact heap account.
                let mut r = replayer(&pool);
                while step(&mut pool, &mut r).expect("folds after recovery") > 0 {}
                let mut ks = r.into_keyspace();
                assert_no_leak(&mut ks);
                assert_eq!(ks.to_dataset().expect("reads"), got);
            }
        }
    }
}

#[test]
fn a_steady_overwrite_load_reuses_space() {
    let sim = CrashSim::new(4 << 20);
    let mut pool = Pool::from_media_with_log(Box::new(sim), true, 64 << 10).expect("pool");
    let mut r = replayer(&pool);
    let mut tops = Vec::new();
    for round in 0..40u64 {
        for k in 0..200u64 {
            let e = Effect::Put {
                key: format!("key:{k}").into_bytes(),
                value: Value::String(vec![b'x'; 100 + ((k * 7 + round) % 50) as usize]),
                expire_at_ms: NO_EXPIRE,
            };
            loop {
                match append(&mut pool, 0, &e) {
                    Ok(_) => break,
                    Err(LogError::Full { .. }) => {
                        step(&mut pool, &mut r).expect("folds");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        while step(&mut pool, &mut r).expect("folds") > 0 {}
        tops.push(r.keyspace().heap_stats().used);
    }
    let mut ks = r.into_keyspace();
    assert_no_leak(&mut ks);
    // After the first rounds the used heap stays flat: freed blocks are reused.
    assert!(
        tops[39] <= tops[5] + tops[5] / 10,
        "heap grew under a steady overwrite load: {tops:?}"
    );
    assert!(ks.heap_stats().free > 0);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize),
    Del(u8),
    Reopen,
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0u8..40, 0usize..300).prop_map(|(k, n)| Op::Put(k, n)),
            3 => (0u8..40).prop_map(Op::Del),
            1 => Just(Op::Reopen),
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The index finds exactly what a BTreeMap holds, and the heap never overlaps
    /// (the walk refuses a block reached twice) or leaks, across reopenings.
    #[test]
    fn index_and_allocator_agree_with_a_map(ops in arb_ops()) {
        let mut sim = CrashSim::new(2 << 20);
        let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 8192).expect("pool");
        let mut r = replayer(&pool);
        let mut map = std::collections::BTreeMap::new();
        for op in ops {
            let e = match op {
                Op::Put(k, n) => {
                    let v = vec![k; n];
                    map.insert(vec![b'k', k], v.clone());
                    Effect::Put { key: vec![b'k', k], value: Value::String(v), expire_at_ms: NO_EXPIRE }
                }
                Op::Del(k) => {
                    map.remove(&vec![b'k', k]);
                    Effect::Delete { key: vec![b'k', k] }
                }
                Op::Reopen => {
                    while step(&mut pool, &mut r).expect("folds") > 0 {}
                    drop(r);
                    drop(pool);
                    sim = CrashSim::from_image(sim.durable_image());
                    pool = Pool::from_media(Box::new(sim.clone()), false).expect("reopens");
                    r = replayer(&pool);
                    continue;
                }
            };
            loop {
                match append(&mut pool, 0, &e) {
                    Ok(_) => break,
                    Err(LogError::Full { .. }) => { step(&mut pool, &mut r).expect("folds"); }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        while step(&mut pool, &mut r).expect("folds") > 0 {}
        let mut ks = r.into_keyspace();
        for k in 0u8..40 {
            let got = ks.get(0, &[b'k', k]).expect("reads").map(|e| e.value);
            let want = map.get(&vec![b'k', k]).map(|v| StoredValue::String(v.clone()));
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(ks.key_count().expect("counts"), map.len() as u64);
        assert_no_leak(&mut ks);
    }
}

/// The heap account stays exact batch after batch, without a reopen's walk to reset it:
/// the regression was COPY of a list that had been popped from, which copied the items
/// its ring no longer held (freed ones) into blocks nothing reached.
#[test]
fn the_heap_account_is_exact_after_every_batch() {
    for seed in 700..704u64 {
        let effects = flat(seed, 360);
        let sim = CrashSim::new(POOL);
        let mut pool = Pool::from_media_with_log(Box::new(sim), true, 4096).expect("pool");
        let mut r = replayer(&pool);
        let check = |r: &mut Replayer, when: &str| {
            let used = r.keyspace().heap_stats().used;
            let report = r.keyspace_mut().check(true).expect("walks");
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert_eq!(used, report.bytes_reachable, "seed {seed} {when}");
        };
        for (i, (db, e)) in effects.iter().enumerate() {
            loop {
                match append_effect(&mut pool, &mut r, *db, e) {
                    Ok(_) => break,
                    Err(LogError::Full { .. }) => {
                        assert!(step(&mut pool, &mut r).expect("folds") > 0);
                        check(&mut r, &format!("after a step at effect {i}"));
                    }
                    Err(e) => panic!("append: {e}"),
                }
            }
        }
        while step(&mut pool, &mut r).expect("folds") > 0 {}
        check(&mut r, "at the end");
    }
}

/// NVM.SCAN's contract: a full iteration returns every key present throughout it, while
/// the table grows (and shrinks) between the steps.
#[test]
fn a_scan_returns_every_key_present_throughout_across_resizes() {
    let sim = CrashSim::new(POOL * 4);
    let mut pool = Pool::from_media_with_log(Box::new(sim), true, 1 << 16).expect("pool");
    let mut r = replayer(&pool);
    let put = |k: String| Effect::Put {
        key: k.into_bytes(),
        value: Value::String(b"v".to_vec()),
        expire_at_ms: NO_EXPIRE,
    };
    let fold = |pool: &mut Pool, r: &mut Replayer, effects: Vec<Effect>| {
        for e in effects {
            append_effect(pool, r, 0, &e).expect("append");
        }
        while step(pool, r).expect("folds") > 0 {}
    };
    fold(
        &mut pool,
        &mut r,
        (0..200).map(|i| put(format!("stay:{i}"))).collect(),
    );
    for round in 0..2 {
        let mut seen = std::collections::BTreeSet::new();
        let (mut cursor, mut steps) = (0u64, 0);
        loop {
            let (next, keys) = r.keyspace().scan(0, cursor, 64).expect("scans");
            seen.extend(keys.into_iter().map(|m| String::from_utf8(m.key).unwrap()));
            steps += 1;
            // Between steps: grow the table (round 0) or shrink it back (round 1).
            let churn: Vec<Effect> = (0..25)
                .map(|i| {
                    let k = format!("churn:{steps}:{i}");
                    if round == 0 {
                        put(k)
                    } else {
                        Effect::Delete {
                            key: k.into_bytes(),
                        }
                    }
                })
                .collect();
            fold(&mut pool, &mut r, churn);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..200 {
            assert!(
                seen.contains(&format!("stay:{i}")),
                "round {round}: stay:{i} missed"
            );
        }
        assert!(
            steps > 3,
            "round {round}: the table changed between several steps"
        );
    }
    assert!(r.keyspace().db_key_count(0).unwrap() >= 200);
    let meta = r
        .keyspace_mut()
        .key_meta(0, b"stay:7")
        .unwrap()
        .expect("exists");
    assert_eq!((meta.type_name, meta.expire_at_ms), ("string", NO_EXPIRE));
}

/// A delete needs no room: on a heap too full for a sparse table's (or deque's) smaller
/// copy, deleting most keys and popping most of a list still fold, keep the sparse
/// collections, and give the space back for the next writes.
#[test]
fn deletes_and_pops_fold_on_a_full_heap() {
    use redis_nvm::effect::End;
    let sim = CrashSim::new(8 << 20);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 1 << 20).expect("pool");
    let mut r = replayer(&pool);
    let fold = |pool: &mut Pool, r: &mut Replayer| while step(pool, r).expect("folds") > 0 {};
    let put = |i: u64, len: usize| Effect::Put {
        key: format!("k{i}").into_bytes(),
        value: Value::String(vec![b'v'; len]),
        expire_at_ms: NO_EXPIRE,
    };
    let keys = 20_000u64;
    for i in 0..keys {
        append_effect(&mut pool, &mut r, 0, &put(i, 1)).expect("appends");
    }
    let list = Effect::ListPush {
        key: b"list".to_vec(),
        end: End::Tail,
        elements: (0..20_000u32).map(|i| i.to_le_bytes().to_vec()).collect(),
    };
    fold(&mut pool, &mut r);
    append_effect(&mut pool, &mut r, 0, &list).expect("appends");
    fold(&mut pool, &mut r);
    // Fill the rest (in db 1) until the heap has less than db 0's table, shrunk from
    // 32k slots, would need (at least 8k slots of 16 bytes).
    let mut filler = keys;
    // (Folded straight into the key space, so that the write that finds it full is
    // not left in the log.)
    loop {
        let at = r.applied();
        match r
            .keyspace_mut()
            .apply_batch([(1, &put(filler, 1000))], &[], at)
        {
            Ok(()) => filler += 1,
            Err(StoreError::HeapFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let free_before = r.keyspace().heap_stats().free;
    for i in 0..keys - 100 {
        append(
            &mut pool,
            0,
            &Effect::Delete {
                key: format!("k{i}").into_bytes(),
            },
        )
        .expect("appends");
        if i % 1000 == 0 {
            fold(&mut pool, &mut r);
        }
    }
    let pop = Effect::ListPop {
        key: b"list".to_vec(),
        end: End::Head,
        count: 19_900,
    };
    append(&mut pool, 0, &pop).expect("appends");
    fold(&mut pool, &mut r);
    let mut ks = r.into_keyspace();
    assert_no_leak(&mut ks);
    assert!(
        ks.heap_stats().free > free_before + (1 << 20),
        "deletes gave back {} bytes",
        ks.heap_stats().free - free_before
    );
    let ds = ks.to_dataset().expect("reads");
    assert_eq!(ds.dbs[&0].len(), 100 + 1);
    assert_eq!(ds.dbs[&1].len() as u64, filler - keys);
    let mut r = Replayer::new(ks, pool.log().new_reader()).expect("replayer");
    // The space is reusable at once: the keys fit again (in db 0, whose table kept its
    // size; a fragmented heap has no room for a new big table: free blocks are split,
    // never merged).
    for i in 0..keys - 100 {
        append_effect(&mut pool, &mut r, 0, &put(i, 1)).expect("appends");
        if i % 1000 == 0 {
            fold(&mut pool, &mut r);
        }
    }
    fold(&mut pool, &mut r);
    assert_no_leak(r.keyspace_mut());
}
