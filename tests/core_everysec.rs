//! Deferred appends (durability everysec): invisible after a crash until synced, all
//! visible after a sync, and a durable append commits the deferred ones before it.

use redis_nvm::log::{LogState, RecordRef};
use redis_nvm::pmem::CrashSim;
use redis_nvm::pool::Pool;

fn rec(payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        kind: 1,
        db: 0,
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
    let mut cursor = redis_nvm::log::Cursor::START;
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
