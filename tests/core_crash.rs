//! Crash consistency of the log (invariant 2): a seeded workload is cut at every
//! flush/fence event, with and without torn 8-byte words, and recovery must yield exactly
//! the acknowledged batches, plus possibly the one in flight (all of it or none), and
//! stay consistent across further appends and reopens. The sweep runs on a fresh log and
//! on a ring log whose head sits just before the end of its region (so batches are
//! written, flushed and recovered across the wrap). Plus property tests of the codec.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_nvm::effect::{encode, Effect, Value, NO_EXPIRE};
use redis_nvm::log::{decode_record, encode_record, record_len, LogState, RecordRef, HEADER_LEN};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::{Pool, MIN_POOL_SIZE};
use redis_nvm::replay::Replayer;

type Rec = (u8, u32, Vec<u8>);

const APPENDS: usize = 40;

fn workload(seed: u64, n: usize) -> Vec<Vec<Rec>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..rng.gen_range(1..=4))
                .map(|_| {
                    let len = rng.gen_range(0..600);
                    let payload = (0..len).map(|_| rng.gen()).collect();
                    (rng.gen(), u32::from(rng.gen_range(0..16u8)), payload)
                })
                .collect()
        })
        .collect()
}

fn refs(batch: &[Rec]) -> Vec<RecordRef<'_>> {
    batch
        .iter()
        .map(|(kind, db, p)| RecordRef {
            kind: *kind,
            db: *db,
            flags: 0,
            payload: p,
        })
        .collect()
}

/// Appends batches until one fails; returns how many were acknowledged.
fn run(pool: &mut Pool, batches: &[Vec<Rec>]) -> usize {
    batches
        .iter()
        .take_while(|b| pool.log_mut().append(&refs(b)).is_ok())
        .count()
}

fn recovered(image: Vec<u8>) -> (Pool, Vec<Rec>) {
    let pool = Pool::from_media(Box::new(CrashSim::from_image(image)), false).unwrap();
    assert_eq!(pool.log().state(), &LogState::Writable);
    let recs = pool
        .log()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r.kind, r.db, r.payload)
        })
        .collect();
    (pool, recs)
}

/// A freshly formatted pool (default log size).
fn fresh_image() -> Vec<u8> {
    let sim = CrashSim::new(MIN_POOL_SIZE);
    drop(Pool::from_media(Box::new(sim.clone()), true).unwrap());
    sim.durable_image()
}

/// Ring log of the wrapped sweep: small enough to wrap, big enough for a whole run.
const RING: u64 = 64 << 10;

/// A pool with a `RING`-byte log that has been filled with effects up to `RING - room`
/// bytes and folded into the key space: its head (and tail) sit `room` bytes before the
/// end of the log region, so the next appends run across the wrap.
fn folded_image(room: u64) -> Vec<u8> {
    let sim = CrashSim::new(MIN_POOL_SIZE);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, RING).unwrap();
    assert_eq!(pool.log().capacity(), RING);
    let ks = pool.open_keyspace().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    let mut p = Vec::new();
    for i in 0u64.. {
        let e = Effect::Put {
            key: format!("fill:{}", i % 8).into_bytes(),
            value: Value::String(vec![b'x'; 8 * (i % 4) as usize]),
            expire_at_ms: NO_EXPIRE,
        };
        p.clear();
        let kind = encode(&e, &mut p).expect("encodes");
        if pool.log().used_bytes() + record_len(p.len() as u64) > RING - room {
            break;
        }
        let rec = RecordRef {
            kind,
            db: 0,
            flags: 0,
            payload: &p,
        };
        pool.log_mut().append(&[rec]).unwrap();
    }
    r.drain(pool.log().committed_end()).unwrap();
    pool.log_mut().advance_head(r.applied());
    assert_eq!(pool.log().record_count(), 0);
    let head = pool.log().head().pos;
    assert!(
        head > RING - room - 64 && head <= RING - room,
        "head at {head}"
    );
    sim.durable_image()
}

/// Cuts a run of `batches` (on a pool opened from `start`) at every flush/fence event;
/// `wraps` says whether the run crosses the ring's end (one batch then flushes two
/// pieces: one event more).
fn crash_sweep(seed: u64, torn: bool, start: &[u8], wraps: bool) {
    let batches = workload(seed, APPENDS);
    let extra = workload(seed ^ 0xdead_beef, 3);
    let (total_events, head, end, capacity) = {
        let sim = CrashSim::from_image(start.to_vec());
        let mut pool = Pool::from_media(Box::new(sim.clone()), false).unwrap();
        assert_eq!(run(&mut pool, &batches), APPENDS);
        let log = pool.log();
        (
            sim.events(),
            log.head(),
            log.committed_end(),
            log.capacity(),
        )
    };
    let crossed = head.pos / capacity != (end.pos - 1) / capacity;
    assert_eq!(crossed, wraps, "seed {seed}: head {head:?} end {end:?}");
    assert_eq!(total_events, 4 * APPENDS as u64 + u64::from(crossed));
    for n in 0..=total_events {
        let mut sim = CrashSim::from_image(start.to_vec()).with_crash_at(n);
        if torn {
            sim = sim.with_torn_words(seed.wrapping_mul(1000).wrapping_add(n));
        }
        let acked = {
            let mut pool = Pool::from_media(Box::new(sim.clone()), false).unwrap();
            run(&mut pool, &batches)
        };
        assert_eq!(sim.crashed(), n < total_events, "crash point {n}");
        let ctx = format!("seed {seed} torn {torn} crash point {n} acked {acked}");
        let (pool, got) = recovered(sim.durable_image());
        let acked_recs: Vec<Rec> = batches[..acked].concat();
        let with_inflight: Vec<Rec> = batches[..(acked + 1).min(APPENDS)].concat();
        assert!(
            got == acked_recs || got == with_inflight,
            "{ctx}: recovered {} records, acknowledged {}",
            got.len(),
            acked_recs.len()
        );
        assert_eq!(pool.log().head(), head, "{ctx}");
        assert_eq!(
            pool.log().last_lsn(),
            head.lsn - 1 + got.len() as u64,
            "{ctx}"
        );

        // Life goes on after recovery: append more, reopen, all still there.
        drop(pool);
        let sim2 = CrashSim::from_image(sim.durable_image());
        let mut pool2 = Pool::from_media(Box::new(sim2.clone()), false).unwrap();
        assert_eq!(run(&mut pool2, &extra), extra.len(), "{ctx}");
        let (_, again) = recovered(sim2.durable_image());
        let mut want = got.clone();
        want.extend(extra.concat());
        assert_eq!(
            again, want,
            "{ctx}: after appending past the recovery point"
        );
    }
}

#[test]
fn every_crash_point_recovers_acknowledged_prefix() {
    let fresh = fresh_image();
    for seed in 1..=5 {
        crash_sweep(seed, false, &fresh, false);
    }
}

#[test]
fn every_crash_point_with_torn_words_recovers_acknowledged_prefix() {
    let fresh = fresh_image();
    for seed in 11..=15 {
        crash_sweep(seed, true, &fresh, false);
    }
}

#[test]
fn every_crash_point_across_the_ring_end_recovers_acknowledged_prefix() {
    // The head 1000..3000 bytes before the end, so the wrap falls at a different place
    // of a different batch in each run.
    for (seed, room) in [(21, 1000), (22, 1500), (23, 2024), (24, 2500), (25, 3000)] {
        let start = folded_image(room);
        crash_sweep(seed, false, &start, true);
        crash_sweep(seed + 10, true, &start, true);
    }
}

/// A crash at the very first event of a batch leaves the previous state byte-exact.
#[test]
fn crash_before_any_flush_changes_nothing_durable() {
    let sim = CrashSim::new(MIN_POOL_SIZE);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
    pool.log_mut()
        .append(&[RecordRef {
            kind: 1,
            db: 0,
            flags: 0,
            payload: b"one",
        }])
        .unwrap();
    let before = sim.durable_image();
    let crashing = CrashSim::from_image(before.clone()).with_crash_at(0);
    let mut pool = Pool::from_media(Box::new(crashing.clone()), false).unwrap();
    assert!(pool
        .log_mut()
        .append(&[RecordRef {
            kind: 2,
            db: 0,
            flags: 0,
            payload: b"two",
        }])
        .is_err());
    assert_eq!(crashing.durable_image(), before);
}

proptest! {
    #[test]
    fn codec_round_trips(lsn in 1u64.., kind: u8, db: u32,
                         payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut buf = Vec::new();
        encode_record(lsn, &RecordRef { kind, db, flags: 0, payload: &payload }, &mut buf);
        prop_assert_eq!(buf.len() as u64, record_len(payload.len() as u64));
        prop_assert_eq!(buf.len() % 8, 0);
        let (rec, used) = decode_record(&buf, 4242, lsn).unwrap();
        prop_assert_eq!(used, buf.len() as u64);
        prop_assert_eq!((rec.lsn, rec.offset, rec.kind, rec.db), (lsn, 4242, kind, db));
        prop_assert_eq!(rec.payload, payload);
    }

    #[test]
    fn any_bit_flip_in_header_or_payload_is_detected(
        lsn in 1u64..1_000_000, kind: u8, db: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        pos in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut buf = Vec::new();
        encode_record(lsn, &RecordRef { kind, db, flags: 0, payload: &payload }, &mut buf);
        let covered = HEADER_LEN as usize + payload.len();
        let at = pos.index(covered);
        buf[at] ^= 1 << bit;
        prop_assert!(decode_record(&buf, 0, lsn).is_err());
    }

    #[test]
    fn decoding_garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200),
                                     lsn: u64) {
        let _ = decode_record(&buf, 0, lsn);
    }

    #[test]
    fn random_batches_survive_reopen(batches in proptest::collection::vec(
        proptest::collection::vec((any::<u8>(), any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..100)), 1..4), 0..12)) {
        let sim = CrashSim::new(MIN_POOL_SIZE);
        let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
        prop_assert_eq!(run(&mut pool, &batches), batches.len());
        let (_, got) = recovered(sim.durable_image());
        prop_assert_eq!(got, batches.concat());
    }
}
