//! Append-path cost, not a correctness test (ignored by default). Run with
//! `cargo test --release --test core_bench -- --ignored --nocapture`.
//! Emulate mode runs on /dev/shm (tmpfs); msync mode on a file under the temp dir.

use redis_nvm::log::RecordRef;
use redis_nvm::pmem::RequestedMode;
use redis_nvm::pool::{Pool, PoolOptions};
use std::path::Path;
use std::time::Instant;

const APPENDS: usize = 100_000;
const PAYLOAD: usize = 150;

fn bench(dir: &Path, mode: RequestedMode, delay_ns: u64, appends: usize) {
    let path = dir.join("bench.nvm");
    let _ = std::fs::remove_file(&path);
    let mut pool = Pool::open_or_create(&PoolOptions {
        path: path.clone(),
        size: 64 << 20,
        log_size: 16 << 20,
        mode,
        emulate_flush_delay_ns: delay_ns,
    })
    .unwrap();
    let payload = [0x5au8; PAYLOAD];
    let rec = [RecordRef {
        kind: 1,
        db: 0,
        flags: 0,
        payload: &payload,
    }];
    let mut lat = Vec::with_capacity(appends);
    let start = Instant::now();
    for _ in 0..appends {
        let t = Instant::now();
        pool.log_mut().append(&rec).unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let total = start.elapsed();
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "{} on {}: {appends} appends of {PAYLOAD} B in {:.3} s = {:.0} ns/append \
         (p50 {} ns, p99 {} ns, max {} ns)",
        pool.info().mode,
        dir.display(),
        total.as_secs_f64(),
        total.as_nanos() as f64 / appends as f64,
        pct(50),
        pct(99),
        lat[lat.len() - 1],
    );
    drop(pool);
    let _ = std::fs::remove_file(&path);
}

#[test]
#[ignore]
fn append_cost() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    bench(shm.path(), RequestedMode::Emulate, 0, APPENDS);
    bench(shm.path(), RequestedMode::Emulate, 300, APPENDS);
    let tmp = tempfile::tempdir().unwrap();
    bench(tmp.path(), RequestedMode::Msync, 0, APPENDS);
}

/// Replayer throughput: records folded per second (SETs of 100-byte values on distinct
/// keys, batches as the replayer thread makes them), emulate mode on /dev/shm.
#[test]
#[ignore]
fn replay_throughput() {
    use redis_nvm::effect::{encode, Effect, Value, NO_EXPIRE};
    use redis_nvm::replay::Replayer;
    let path = Path::new("/dev/shm/nvm-replay-bench.nvm");
    let _ = std::fs::remove_file(path);
    let mut pool = Pool::open_or_create(&PoolOptions {
        path: path.to_path_buf(),
        size: 2 << 30,
        log_size: 256 << 20,
        mode: RequestedMode::Emulate,
        emulate_flush_delay_ns: 0,
    })
    .unwrap();
    let ks = pool.open_keyspace().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    for (round, n) in [(0u64, 1_000_000u64), (1, 1_000_000)] {
        let mut payload = Vec::new();
        for i in 0..n {
            payload.clear();
            let e = Effect::Put {
                key: format!("key:{i:012}").into_bytes(),
                value: Value::String(vec![b'x'; 100]),
                expire_at_ms: NO_EXPIRE,
            };
            let kind = encode(&e, &mut payload).expect("encodes");
            pool.log_mut()
                .append(&[RecordRef {
                    kind,
                    db: 0,
                    flags: 0,
                    payload: &payload,
                }])
                .unwrap();
        }
        let start = Instant::now();
        let folded = r.drain(pool.log().committed_end()).unwrap();
        let secs = start.elapsed().as_secs_f64();
        pool.log_mut().advance_head(r.applied());
        println!(
            "replay round {round} ({}): {folded} records in {secs:.2} s = {:.0} records/s",
            if round == 0 { "new keys" } else { "overwrites" },
            folded as f64 / secs
        );
    }
    let _ = std::fs::remove_file(path);
}

/// The cost of a restart with a completely full log (the worst case of instant restart's
/// first command, which waits for the backlog to be folded): a pool holding 1M keys, its
/// default 64 MB log filled to the admission reserve with SETs of 200-byte values (half
/// overwrites, half new keys), closed; then open without the walk and fold, as start-up
/// does. Emulate mode on /dev/shm.
#[test]
#[ignore]
fn full_log_fold() {
    use redis_nvm::effect::{encode, Effect, Value, NO_EXPIRE};
    use redis_nvm::replay::Replayer;
    let path = Path::new("/dev/shm/nvm-full-log-bench.nvm");
    let _ = std::fs::remove_file(path);
    let opts = PoolOptions {
        path: path.to_path_buf(),
        size: 2 << 30,
        log_size: 64 << 20,
        mode: RequestedMode::Emulate,
        emulate_flush_delay_ns: 0,
    };
    let put = |i: u64, payload: &mut Vec<u8>| {
        payload.clear();
        let e = Effect::Put {
            key: format!("key:{i:012}").into_bytes(),
            value: Value::String(vec![b'x'; 200]),
            expire_at_ms: NO_EXPIRE,
        };
        encode(&e, payload).expect("encodes")
    };
    let mut payload = Vec::new();
    {
        let mut pool = Pool::open_or_create(&opts).unwrap();
        let ks = pool.open_keyspace().unwrap();
        let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
        let mut i = 0u64;
        while i < 1_000_000 {
            let kind = put(i, &mut payload);
            let rec = [RecordRef {
                kind,
                db: 0,
                flags: 0,
                payload: &payload,
            }];
            if pool.log_mut().append(&rec).is_err() {
                r.drain(pool.log().committed_end()).unwrap();
                pool.log_mut().advance_head(r.applied());
                continue;
            }
            i += 1;
        }
        r.drain(pool.log().committed_end()).unwrap();
        pool.log_mut().advance_head(r.applied());
        // Fill the log to the reserve the admission keeps (1/64 of it, at least 1 MiB).
        let reserve = (pool.log().capacity() / 64).max(1 << 20);
        let mut n = 0u64;
        while pool.log().free_bytes() > reserve {
            let key = if n.is_multiple_of(2) {
                n
            } else {
                1_000_000 + n
            };
            let kind = put(key, &mut payload);
            let rec = [RecordRef {
                kind,
                db: 0,
                flags: 0,
                payload: &payload,
            }];
            pool.log_mut().append(&rec).unwrap();
            n += 1;
        }
        println!(
            "full log: {n} records, {} MB of {} MB",
            pool.log().used_bytes() >> 20,
            pool.log().capacity() >> 20
        );
    }
    let start = Instant::now();
    let pool = Pool::open_or_create(&opts).unwrap();
    let opened = start.elapsed();
    let ks = pool.open_keyspace_unwalked().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    let folded = r.drain(pool.log().committed_end()).unwrap();
    let total = start.elapsed();
    println!(
        "open {:.1} ms, fold {folded} records {:.1} ms, first command possible after {:.1} ms",
        opened.as_secs_f64() * 1e3,
        (total - opened).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(path);
}
