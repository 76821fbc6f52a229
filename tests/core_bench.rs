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
