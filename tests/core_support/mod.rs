//! Helpers for the storage-core tests: appending effects the way the module does (big
//! ones as blobs), folding one step, and reading a pool back as a checked dataset.

#![allow(dead_code)]

use redis_nvm::effect::model::Dataset;
use redis_nvm::effect::{decode, encode, encoded_len, kind_of, Effect};
use redis_nvm::keyspace::KeySpace;
use redis_nvm::log::{BlobWriter, LogError, RecordRef, FLAG_BLOB};
use redis_nvm::pool::Pool;
use redis_nvm::replay::{ReplayError, Replayer};

pub const POOL: u64 = 1 << 20;

pub fn append(pool: &mut Pool, db: u32, e: &Effect) -> Result<u64, LogError> {
    let mut p = Vec::new();
    let kind = encode(e, &mut p).expect("encodes");
    pool.log_mut().append(&[RecordRef {
        kind,
        db,
        flags: 0,
        payload: &p,
    }])
}

/// Effects encoded longer than this go to a blob in `run` (the module's threshold is
/// 1 MiB; small here so that the random workloads log many blobs).
pub const BLOB_OVER: u64 = 48;

/// Appends `e` the way the module does: its bytes in a blob, named by a small record,
/// when they are longer than `BLOB_OVER` (the blob durable before the record; a full
/// log is folded while the blob waits).
pub fn append_effect(
    pool: &mut Pool,
    r: &mut Replayer,
    db: u32,
    e: &Effect,
) -> Result<u64, LogError> {
    let len = encoded_len(e).expect("encodes");
    if len <= BLOB_OVER {
        return append(pool, db, e);
    }
    let off = r
        .keyspace_mut()
        .alloc_blob(len)
        .map_err(|_| LogError::Full {
            needed: len,
            free: 0,
        })?;
    let mut w = BlobWriter::new(pool.media(), off);
    encode(e, &mut w).expect("encodes");
    let blob = w.finish().map_err(LogError::Media)?;
    let payload = blob.encode();
    let record = RecordRef {
        kind: kind_of(e),
        db,
        flags: FLAG_BLOB,
        payload: &payload,
    };
    // Like the module: a full log is waited for with the blob kept (dropping it there
    // would leak its block until the next walk).
    loop {
        match pool.log_mut().append(&[record]) {
            Err(full @ LogError::Full { .. }) => match step(pool, r) {
                Ok(n) if n > 0 => continue,
                _ => return Err(full),
            },
            other => return other,
        }
    }
}

pub fn replayer(pool: &Pool) -> Replayer {
    let ks = pool.open_keyspace().expect("key space opens");
    Replayer::new(ks, pool.log().new_reader()).expect("replayer")
}

/// One replay step, then the log learns the new head.
pub fn step(pool: &mut Pool, r: &mut Replayer) -> Result<u64, ReplayError> {
    let s = r.step(pool.log().committed_end())?;
    pool.log_mut().advance_head(s.next);
    Ok(s.records)
}

/// Key space + the log's live records, as a dataset; the key space must check clean.
pub fn state_of(pool: &Pool) -> Dataset {
    let mut ks = pool.open_keyspace().expect("key space opens");
    let report = ks.check(true).expect("walks");
    assert!(
        report.problems.is_empty(),
        "key space problems: {:?}",
        report.problems
    );
    let mut ds = ks.to_dataset().expect("key space reads");
    for r in pool.log().records() {
        let r = r.expect("valid record");
        let e = decode(r.kind, &r.payload).expect("decodes");
        ds.apply(r.db, &e).expect("log tail applies");
    }
    ds
}

/// The allocator's running account must equal what the key space reaches: no block
/// leaked, none freed twice.
pub fn assert_no_leak(ks: &mut KeySpace) {
    let used = ks.heap_stats().used;
    let report = ks.check(true).expect("walks");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        used, report.bytes_reachable,
        "heap accounting differs from reachable bytes"
    );
}
