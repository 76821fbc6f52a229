//! Growing a pool (issue: a full pool is never a dead end), without Redis.
//!
//! - A grow cut at every flush and fence, with and without torn 8-byte words, leaves a
//!   pool that opens with all its data, at the old size or the new one (never a torn
//!   superblock); a grow that a crash interrupted is finished by the next open, and
//!   growing again from there works.
//! - A grown pool's heap takes the new space: a key space that was full takes as much
//!   again, and every key survives a reopen.

mod core_support;

use core_support::*;
use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{Effect, Value, NO_EXPIRE};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::{grow_media, Pool};

const OLD: u64 = 2 << 20;
const NEW: u64 = 4 << 20;

fn put(i: u64) -> Effect {
    Effect::Put {
        key: format!("key:{i}").into_bytes(),
        value: Value::String(vec![b'v'; 200]),
        expire_at_ms: NO_EXPIRE,
    }
}

/// A pool of `OLD` bytes holding `n` keys, folded; its durable image.
fn pool_with_keys(n: u64) -> Vec<u8> {
    let sim = CrashSim::new(OLD);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 64 << 10).expect("pool");
    let mut r = replayer(&pool);
    for i in 0..n {
        append_effect(&mut pool, &mut r, 0, &put(i)).expect("appends");
    }
    while step(&mut pool, &mut r).expect("folds") > 0 {}
    drop(r);
    drop(pool);
    sim.durable_image()
}

/// The image as the file is after its extension (zeros at the end), before the grow.
fn extended(mut image: Vec<u8>) -> Vec<u8> {
    image.resize(NEW as usize, 0);
    image
}

fn dataset(image: Vec<u8>) -> (u64, Dataset) {
    let pool = Pool::from_media(Box::new(CrashSim::from_image(image)), false).expect("opens");
    (pool.info().size, state_of(&pool))
}

#[test]
fn a_grow_cut_anywhere_leaves_a_pool_with_all_its_data() {
    let image = extended(pool_with_keys(300));
    let (_, before) = dataset(image.clone());
    assert_eq!(before.dbs[&0].len(), 300);
    // Count the events of a whole grow.
    let sim = CrashSim::from_image(image.clone());
    grow_media(&sim, NEW).expect("grows");
    let events = sim.events();
    assert!(
        events >= 6,
        "a grow is three flush+fence pairs, saw {events}"
    );
    let mut sizes = std::collections::BTreeSet::new();
    for torn in [None, Some(7u64)] {
        for cut in 0..=events {
            let mut sim = CrashSim::from_image(image.clone()).with_crash_at(cut);
            if let Some(seed) = torn {
                sim = sim.with_torn_words(seed + cut);
            }
            let _ = grow_media(&sim, NEW);
            let after_crash = sim.durable_image();
            // Reopening finishes an interrupted grow; the data is all there.
            let reopened = CrashSim::from_image(after_crash);
            let pool = Pool::from_media(Box::new(reopened.clone()), false)
                .unwrap_or_else(|e| panic!("cut {cut} torn {torn:?}: {e}"));
            let size = pool.info().size;
            assert!(size == OLD || size == NEW, "cut {cut}: size {size}");
            sizes.insert(size);
            assert_eq!(state_of(&pool), before, "cut {cut} torn {torn:?}");
            drop(pool);
            // And it grows (again) from there.
            if size == OLD {
                grow_media(&reopened, NEW).expect("grows after the crash");
            }
            let (size, ds) = dataset(reopened.durable_image());
            assert_eq!((size, &ds), (NEW, &before), "cut {cut} torn {torn:?}");
        }
    }
    assert_eq!(
        sizes.len(),
        2,
        "cuts should land before and after the commit"
    );
}

#[test]
fn an_open_pool_grows_in_use_and_its_heap_takes_the_new_space() {
    let sim = CrashSim::from_image(pool_with_keys(0));
    let mut pool = Pool::from_media(Box::new(sim.clone()), false).expect("opens");
    let mut r = replayer(&pool);
    // Fill the heap until a write no longer folds (straight into the key space, so
    // that the write that finds it full is not left in the log).
    let fill = |r: &mut redis_nvm::replay::Replayer, from: u64| -> u64 {
        let mut i = from;
        loop {
            let at = r.applied();
            match r.keyspace_mut().apply_batch([(0, &put(i))], &[], at) {
                Ok(()) => i += 1,
                Err(_) => break,
            }
        }
        i - from
    };
    let small = fill(&mut r, 0);
    assert!(small > 1000, "{small}");
    let heap_end = pool.grow(NEW).expect("grows");
    assert_eq!(pool.info().size, NEW);
    r.grow_heap(heap_end);
    let more = fill(&mut r, small);
    assert!(
        more >= small,
        "the grown heap took {more} keys, the first {small}"
    );
    // Deletes make room; logged writes (as blobs) then overwrite other keys.
    for i in 0..100 {
        let at = r.applied();
        let delete = Effect::Delete {
            key: format!("key:{i}").into_bytes(),
        };
        r.keyspace_mut()
            .apply_batch([(0, &delete)], &[], at)
            .expect("a delete needs no room");
    }
    for i in 100..150 {
        let overwrite = Effect::Put {
            key: format!("key:{i}").into_bytes(),
            value: Value::String(vec![b'b'; 100]),
            expire_at_ms: NO_EXPIRE,
        };
        append_effect(&mut pool, &mut r, 0, &overwrite).expect("appends");
        while step(&mut pool, &mut r).expect("folds") > 0 {}
    }
    drop(r);
    drop(pool);
    let (size, ds) = dataset(sim.durable_image());
    assert_eq!(size, NEW);
    assert_eq!(ds.dbs[&0].len() as u64, small + more - 100);
}
