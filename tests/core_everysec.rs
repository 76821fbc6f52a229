//! Deferred appends (durability everysec): invisible after a crash until synced, all
//! visible after a sync (also when they run across the ring log's end), and a durable
//! append commits the deferred ones before it.

use redis_nvm::effect::{encode, Effect, Value, NO_EXPIRE};
use redis_nvm::log::{record_len, Cursor, LogState, RecordRef};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;
use redis_nvm::replay::Replayer;

fn rec(payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        kind: 1,
        db: 0,
        flags: 0,
        payload,
    }
}

fn reopen(sim: &CrashSim) -> Pool {
    Pool::from_media(Box::new(CrashSim::from_image(sim.durable_image())), false).expect("reopen")
}

fn payloads(pool: &Pool) -> Vec<Vec<u8>> {
    pool.log()
        .records()
        .map(|r| r.expect("valid").payload)
        .collect()
}

#[test]
fn deferred_appends_become_durable_only_at_sync() {
    let sim = CrashSim::new(1 << 20);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).expect("create");
    pool.log_mut().append(&[rec(b"durable-1")]).expect("append");
    pool.log_mut()
        .append_deferred(&[rec(b"deferred-2")])
        .expect("deferred");
    pool.log_mut()
        .append_deferred(&[rec(b"deferred-3")])
        .expect("deferred");
    assert_eq!(pool.log().unsynced_bytes(), 2 * 40);
    // A crash now keeps only what was synced.
    assert_eq!(payloads(&reopen(&sim)), vec![b"durable-1".to_vec()]);
    pool.log_mut().sync().expect("sync");
    assert_eq!(pool.log().unsynced_bytes(), 0);
    let after = reopen(&sim);
    assert_eq!(after.log().state(), &LogState::Writable);
    assert_eq!(payloads(&after).len(), 3);
}

#[test]
fn a_durable_append_commits_earlier_deferred_ones() {
    let sim = CrashSim::new(1 << 20);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).expect("create");
    pool.log_mut()
        .append_deferred(&[rec(b"a")])
        .expect("deferred");
    pool.log_mut().append(&[rec(b"b")]).expect("append");
    assert_eq!(payloads(&reopen(&sim)), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn crash_at_every_point_of_a_sync_is_all_or_nothing() {
    // Count the flush/fence points of one deferred batch + sync, then cut at each.
    let run = |crash_at: Option<u64>| {
        let mut sim = CrashSim::new(1 << 20);
        if let Some(n) = crash_at {
            sim = sim.with_crash_at(n).with_torn_words(n);
        }
        let mut pool = Pool::from_media(Box::new(sim.clone()), true).expect("create");
        let base = sim.events();
        for i in 0..5u8 {
            let _ = pool.log_mut().append_deferred(&[rec(&[i; 33])]);
        }
        let synced = pool.log_mut().sync().is_ok();
        (sim, base, synced)
    };
    let (sim, base, _) = run(None);
    let total = sim.events();
    for n in base..=total {
        let (sim, _, synced) = run(Some(n));
        let got = payloads(&reopen(&sim));
        assert!(
            got.is_empty() || got.len() == 5,
            "cut at {n}: {} records",
            got.len()
        );
        if synced {
            assert_eq!(
                got.len(),
                5,
                "cut at {n}: a sync that returned Ok must be durable"
            );
        }
    }
}

#[test]
fn records_resume_from_a_cursor_exactly_where_they_stopped() {
    let sim = CrashSim::new(1 << 20);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).expect("create");
    for i in 0..10u8 {
        pool.log_mut().append(&[rec(&[i; 5])]).expect("append");
    }
    let all = payloads(&pool);
    let mut resumed = Vec::new();
    assert_eq!(pool.log().head(), Cursor::START);
    let mut cursor = pool.log().head();
    loop {
        let mut it = pool.log().records_from(cursor);
        let chunk: Vec<_> = it
            .by_ref()
            .take(3)
            .map(|r| r.expect("valid").payload)
            .collect();
        cursor = it.cursor();
        if chunk.is_empty() {
            break;
        }
        resumed.extend(chunk);
    }
    assert_eq!(resumed, all);
}

/// An effect record (kind, payload) that occupies exactly `len` bytes of log.
fn filler(len: u64) -> (u8, Vec<u8>) {
    for v in 0..1024 {
        let e = Effect::Put {
            key: b"filler".to_vec(),
            value: Value::String(vec![b'f'; v]),
            expire_at_ms: NO_EXPIRE,
        };
        let mut p = Vec::new();
        let kind = encode(&e, &mut p).expect("encodes");
        if record_len(p.len() as u64) == len {
            return (kind, p);
        }
    }
    panic!("no filler record of {len} bytes");
}

/// The durable image of a pool with a 4 KiB ring log whose records have been folded up
/// to exactly `room` bytes before the end of the region: the next appends run across
/// the wrap.
fn near_the_end(room: u64) -> Vec<u8> {
    let sim = CrashSim::new(1 << 20);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 4096).expect("create");
    let ks = pool.open_keyspace().expect("key space");
    let mut r = Replayer::new(ks, pool.log().new_reader()).expect("replayer");
    let target = 4096 - room;
    while pool.log().used_bytes() < target {
        let remaining = target - pool.log().used_bytes();
        let (kind, p) = filler(if remaining <= 400 { remaining } else { 200 });
        pool.log_mut()
            .append(&[RecordRef {
                kind,
                db: 0,
                flags: 0,
                payload: &p,
            }])
            .expect("append");
    }
    r.drain(pool.log().committed_end()).expect("folds");
    pool.log_mut().advance_head(r.applied());
    assert_eq!(pool.log().record_count(), 0);
    assert_eq!(pool.log().head().pos, target);
    sim.durable_image()
}

#[test]
fn a_sync_across_the_ring_end_is_all_or_nothing_at_every_crash_point() {
    // Five deferred records of 64 bytes from `room` bytes before the end: the wrap falls
    // in the first payload, in the third header, between the third and the fourth
    // record, and in the fourth header.
    for room in [40, 136, 192, 200] {
        let start = near_the_end(room);
        let run = |crash_at: Option<u64>| {
            let mut sim = CrashSim::from_image(start.clone());
            if let Some(n) = crash_at {
                sim = sim.with_crash_at(n).with_torn_words(n + room);
            }
            let mut pool = Pool::from_media(Box::new(sim.clone()), false).expect("reopen");
            let base = sim.events();
            for i in 0..5u8 {
                let _ = pool.log_mut().append_deferred(&[rec(&[i; 33])]);
            }
            let synced = pool.log_mut().sync().is_ok();
            (sim, base, synced)
        };
        let (sim, base, synced) = run(None);
        assert!(synced);
        let after = reopen(&sim);
        assert_eq!(after.log().state(), &LogState::Writable);
        let head = after.log().head();
        assert_eq!(head.pos, 4096 - room);
        assert_eq!(after.log().committed_end().pos, head.pos + 5 * 64);
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 33]).collect();
        assert_eq!(payloads(&after), want);
        // The sync flushes the two pieces, fences, stores the commit word and fences.
        assert_eq!(sim.events() - base, 5);
        for n in base..=sim.events() {
            let (sim, _, synced) = run(Some(n));
            let pool = reopen(&sim);
            let ctx = format!("room {room} cut at {n}");
            assert_eq!(pool.log().state(), &LogState::Writable, "{ctx}");
            assert_eq!(pool.log().head(), head, "{ctx}");
            let got = payloads(&pool);
            assert!(
                got.is_empty() || got == want,
                "{ctx}: {} records",
                got.len()
            );
            if synced {
                assert_eq!(got, want, "{ctx}: a sync that returned Ok must be durable");
            }
        }
    }
}
