//! Log and pool behaviour on damaged, full, truncated and locked pools, the ring log
//! wrapping while the replayer folds it, plus the real mapped-file modes available on
//! this machine (emulate, msync; dax must be refused).

use redis_nvm::effect::{decode, encode, Effect, Value, NO_EXPIRE};
use redis_nvm::keyspace::StoredValue;
use redis_nvm::log::{
    decode_record, encode_header, encode_record, record_len, Cursor, LogError, LogState, Record,
    RecordRef, HEADER_LEN, MAX_PAYLOAD,
};
use redis_nvm::pmem::{CrashSim, Media, MediaError, MediaMode, RequestedMode};
use redis_nvm::pool::{
    Pool, PoolError, PoolOptions, Superblock, DEFAULT_LOG_SIZE, FIXED_LEN, FORMAT_VERSION,
    LOG_TAIL_OFFSET, MIN_POOL_SIZE,
};
use redis_nvm::replay::Replayer;
use std::path::Path;

const POOL: u64 = MIN_POOL_SIZE;

/// The layout of a pool of `POOL` bytes with the default log size (what `from_media`
/// and `open_or_create` make here).
fn layout() -> Superblock {
    Superblock::new(POOL, DEFAULT_LOG_SIZE, [0; 16], 0).unwrap()
}

/// Pool offset of the ring log of such a pool.
fn log_offset() -> u64 {
    layout().log_offset
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// A formatted in-memory pool holding `n` records (record i has payload length 10*i+3);
/// returns its durable image.
fn image_with(n: u64) -> Vec<u8> {
    let sim = CrashSim::new(POOL);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
    for i in 1..=n {
        let p = payload(i, (10 * i + 3) as usize);
        let lsn = pool
            .log_mut()
            .append(&[RecordRef {
                kind: i as u8,
                db: (i % 16) as u32,
                flags: 0,
                payload: &p,
            }])
            .unwrap();
        assert_eq!(lsn, i);
    }
    sim.durable_image()
}

fn reopen(image: Vec<u8>) -> Pool {
    Pool::from_media(Box::new(CrashSim::from_image(image)), false).unwrap()
}

fn ok_records(pool: &Pool) -> Vec<Record> {
    pool.log().records().filter_map(Result::ok).collect()
}

fn corruption(pool: &Pool) -> redis_nvm::log::Corruption {
    match pool.log().state() {
        LogState::Corrupt(c) => c.clone(),
        other => panic!("expected a corrupt log, got {other:?}"),
    }
}

/// Pool offset of the header of record `lsn` in an image made by `image_with`.
fn offset_of(lsn: u64) -> u64 {
    log_offset() + (1..lsn).map(|i| record_len(10 * i + 3)).sum::<u64>()
}

#[test]
fn codec_round_trip() {
    for len in [0usize, 1, 7, 8, 9, 200, 4096] {
        let p = payload(len as u64, len);
        let r = RecordRef {
            kind: 7,
            db: 3,
            flags: 0,
            payload: &p,
        };
        let mut buf = Vec::new();
        encode_record(42, &r, &mut buf);
        assert_eq!(buf.len() as u64, record_len(len as u64));
        assert_eq!(buf.len() % 8, 0);
        let (rec, used) = decode_record(&buf, 9000, 42).unwrap();
        assert_eq!(used, buf.len() as u64);
        assert_eq!(
            rec,
            Record {
                lsn: 42,
                offset: 9000,
                kind: 7,
                db: 3,
                payload: p.clone(),
                blob: None,
            }
        );
        assert!(decode_record(&buf, 9000, 43)
            .unwrap_err()
            .contains("lsn gap"));
    }
}

#[test]
fn records_read_back_in_order() {
    let pool = reopen(image_with(20));
    assert_eq!(pool.log().state(), &LogState::Writable);
    assert_eq!(pool.log().last_lsn(), 20);
    assert_eq!(pool.log().record_count(), 20);
    let recs = ok_records(&pool);
    assert_eq!(recs.len(), 20);
    for (i, r) in (1u64..).zip(&recs) {
        assert_eq!(r.lsn, i);
        assert_eq!(r.offset, offset_of(i));
        assert_eq!(r.kind, i as u8);
        assert_eq!(r.db, (i % 16) as u32);
        assert_eq!(r.payload, payload(i, (10 * i + 3) as usize));
    }
    let used: u64 = (1..=20).map(|i| record_len(10 * i + 3)).sum();
    assert_eq!(pool.log().used_bytes(), used);
    assert_eq!(pool.log().log_offset(), pool.superblock().log_offset);
    assert_eq!(pool.log().log_offset(), log_offset());
    assert_eq!(pool.log().capacity(), layout().log_capacity);
    assert_eq!(pool.log().free_bytes(), layout().log_capacity - used);
    // Nothing folded yet: the head is where the log started.
    assert_eq!(pool.log().head(), Cursor::START);
    assert_eq!(pool.log().committed_end(), Cursor { pos: used, lsn: 21 });
}

fn assert_corrupt_at(image: Vec<u8>, lsn: u64, reason: &str) {
    let pool = reopen(image);
    let c = corruption(&pool);
    assert_eq!(c.offset, offset_of(lsn), "{c}");
    assert_eq!(c.lsn, lsn, "{c}");
    assert!(c.reason.contains(reason), "{c}");
    assert_eq!(pool.log().last_lsn(), lsn - 1);
    // The valid prefix stays readable, then exactly one error.
    let all: Vec<_> = pool.log().records().collect();
    assert_eq!(all.len() as u64, lsn);
    assert!(all[..lsn as usize - 1].iter().all(Result::is_ok));
    match all.last() {
        Some(Err(LogError::Corrupt(c2))) => assert_eq!(c2, &c),
        other => panic!("expected a trailing corruption, got {other:?}"),
    }
    // Appends are refused until repair.
    let mut pool = pool;
    let err = pool
        .log_mut()
        .append(&[RecordRef {
            kind: 1,
            db: 0,
            flags: 0,
            payload: b"x",
        }])
        .unwrap_err();
    assert!(matches!(err, LogError::Corrupt(_)), "{err}");
}

#[test]
fn crc_failure_in_payload_detected_at_the_record() {
    let mut image = image_with(10);
    image[(offset_of(6) + HEADER_LEN + 5) as usize] ^= 0x10;
    assert_corrupt_at(image, 6, "crc mismatch");
}

#[test]
fn crc_failure_in_header_detected_at_the_record() {
    // kind, db and lsn bytes are all covered by the crc.
    for byte in [4u64, 5, 8, 15, 16] {
        let mut image = image_with(10);
        image[(offset_of(4) + byte) as usize] ^= 0x01;
        assert_corrupt_at(image, 4, "crc mismatch");
    }
}

#[test]
fn damaged_length_field_detected() {
    let mut image = image_with(10);
    // A huge length cannot fit before the commit point.
    image[(offset_of(7) + 3) as usize] = 0x7f;
    assert_corrupt_at(image.clone(), 7, "");
    let pool = reopen(image);
    assert!(
        corruption(&pool).reason.contains("exceeds"),
        "{}",
        corruption(&pool)
    );
}

#[test]
fn lsn_gap_detected() {
    let mut image = image_with(10);
    // Rewrite record 5 as an intact record that claims lsn 9.
    let at = offset_of(5) as usize;
    let p = payload(5, 53);
    let h = encode_header(
        9,
        &RecordRef {
            kind: 5,
            db: 5,
            flags: 0,
            payload: &p,
        },
    );
    image[at..at + HEADER_LEN as usize].copy_from_slice(&h);
    assert_corrupt_at(image, 5, "lsn gap: found lsn 9");
}

#[test]
fn commit_word_out_of_range_detected_and_repairable() {
    let mut image = image_with(5);
    let at = LOG_TAIL_OFFSET as usize;
    image[at..at + 8].copy_from_slice(&(POOL * 2).to_le_bytes());
    let mut pool = reopen(image);
    let c = corruption(&pool);
    assert_eq!(c.offset, LOG_TAIL_OFFSET);
    assert_eq!(c.lsn, 6);
    assert!(c.reason.contains("commit word"), "{c}");
    // The records before the damage remain readable.
    assert_eq!(ok_records(&pool).len(), 5);
    pool.log_mut().repair_truncate(false).unwrap();
    assert_eq!(pool.log().state(), &LogState::Writable);
    assert_eq!(pool.log().used_bytes(), offset_of(6) - log_offset());
}

/// The key-space root names the log's head; when it is damaged, nothing parses at the
/// head it names, and a plain repair would drop every live record: it needs FORCE.
#[test]
fn damage_at_the_head_is_not_repaired_without_force() {
    let mut image = image_with(5);
    let at = (redis_nvm::pool::ROOT_OFFSET + redis_nvm::keyspace::layout::ROOT_LOG_HEAD) as usize;
    // The head moved into the middle of record 2 (still 8-aligned).
    let wrong_head = offset_of(2) - log_offset() + 8;
    image[at..at + 8].copy_from_slice(&wrong_head.to_le_bytes());
    let mut pool = reopen(image.clone());
    let c = corruption(&pool);
    assert!(c.at_head, "{c}");
    let err = pool.log_mut().repair_truncate(false).unwrap_err();
    assert!(matches!(err, LogError::RepairRefused(_)), "{err}");
    assert!(err.to_string().contains("FORCE"), "{err}");
    assert!(matches!(pool.log().state(), LogState::Corrupt(_)));
    // Restoring the root's word brings every record back: nothing was lost.
    image[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    let pool = reopen(image.clone());
    assert_eq!(pool.log().state(), &LogState::Writable);
    assert_eq!(ok_records(&pool).len(), 5);

    // A damaged first record looks the same; FORCE drops the log, as asked.
    image[(offset_of(1) + HEADER_LEN) as usize] ^= 0xff;
    let mut pool = reopen(image);
    assert!(corruption(&pool).at_head);
    assert!(pool.log_mut().repair_truncate(false).is_err());
    let dropped = pool.log_mut().repair_truncate(true).unwrap();
    assert_eq!(dropped, offset_of(6) - offset_of(1));
    assert_eq!(pool.log().state(), &LogState::Writable);
}

/// Damage after the first record is repaired without FORCE.
#[test]
fn damage_past_the_head_needs_no_force() {
    let mut image = image_with(5);
    image[(offset_of(3) + HEADER_LEN) as usize] ^= 0xff;
    let mut pool = reopen(image);
    assert!(!corruption(&pool).at_head);
    assert_eq!(
        pool.log_mut().repair_truncate(false).unwrap(),
        offset_of(6) - offset_of(3)
    );
}

#[test]
fn full_is_refused_with_nothing_written() {
    let sim = CrashSim::new(POOL);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
    let big = vec![0xabu8; 100_000];
    let rec = RecordRef {
        kind: 1,
        db: 0,
        flags: 0,
        payload: &big,
    };
    let mut appended = 0;
    let err = loop {
        match pool.log_mut().append(&[rec, rec]) {
            Ok(_) => appended += 2,
            Err(e) => break e,
        }
    };
    let pair = 2 * record_len(100_000);
    assert_eq!(appended, 2 * (pool.log().capacity() / pair));
    let free = pool.log().free_bytes();
    assert!(free < pair, "{free}");
    match err {
        LogError::Full { needed, free: f } => {
            assert_eq!(needed, 2 * record_len(100_000));
            assert_eq!(f, free);
        }
        other => panic!("expected Full, got {other}"),
    }
    let events = sim.events();
    let image = sim.durable_image();
    // Still refused, still nothing written, and the log stays writable.
    assert!(matches!(
        pool.log_mut().append(&[rec, rec]),
        Err(LogError::Full { .. })
    ));
    assert_eq!(sim.events(), events);
    assert_eq!(sim.durable_image(), image);
    assert_eq!(pool.log().state(), &LogState::Writable);
    let small = RecordRef {
        kind: 2,
        db: 0,
        flags: 0,
        payload: b"still fits",
    };
    assert_eq!(pool.log_mut().append(&[small]).unwrap(), appended + 1);
}

#[test]
fn too_large_is_refused() {
    let sim = CrashSim::new(POOL);
    let mut pool = Pool::from_media(Box::new(sim.clone()), true).unwrap();
    let formatted = sim.events();
    // calloc'd and never touched, so this costs no real memory.
    let huge = vec![0u8; MAX_PAYLOAD as usize + 1];
    let err = pool
        .log_mut()
        .append(&[RecordRef {
            kind: 1,
            db: 0,
            flags: 0,
            payload: &huge,
        }])
        .unwrap_err();
    assert!(
        matches!(err, LogError::TooLarge(n) if n == MAX_PAYLOAD + 1),
        "{err}"
    );
    assert_eq!(sim.events(), formatted, "nothing flushed or fenced");
    assert_eq!(pool.log().state(), &LogState::Writable);
}

#[test]
fn media_error_poisons_the_log() {
    let sim = CrashSim::from_image(image_with(2)).with_crash_at(1);
    let mut pool = Pool::from_media(Box::new(sim.clone()), false).unwrap();
    let rec = RecordRef {
        kind: 1,
        db: 0,
        flags: 0,
        payload: b"abc",
    };
    let err = pool.log_mut().append(&[rec]).unwrap_err();
    assert!(matches!(err, LogError::Media(MediaError::Crashed)), "{err}");
    assert!(matches!(pool.log().state(), LogState::Poisoned(_)));
    assert!(matches!(
        pool.log_mut().append(&[rec]),
        Err(LogError::Poisoned(_))
    ));
    assert_eq!(pool.log().last_lsn(), 2);
}

#[test]
fn repair_truncate_then_append_survives_reopen() {
    let mut image = image_with(10);
    image[(offset_of(8) + HEADER_LEN) as usize] ^= 0xff;
    let sim = CrashSim::from_image(image);
    let mut pool = Pool::from_media(Box::new(sim.clone()), false).unwrap();
    assert_eq!(corruption(&pool).lsn, 8);
    let dropped = pool.log_mut().repair_truncate(false).unwrap();
    assert_eq!(
        dropped,
        (8..=10).map(|i| record_len(10 * i + 3)).sum::<u64>()
    );
    assert_eq!(pool.log().state(), &LogState::Writable);
    assert_eq!(pool.log_mut().repair_truncate(false).unwrap(), 0);
    let lsn = pool
        .log_mut()
        .append(&[RecordRef {
            kind: 99,
            db: 1,
            flags: 0,
            payload: b"after repair",
        }])
        .unwrap();
    assert_eq!(lsn, 8);
    drop(pool);
    let pool = reopen(sim.durable_image());
    assert_eq!(pool.log().state(), &LogState::Writable);
    let recs = ok_records(&pool);
    assert_eq!(recs.len(), 8);
    assert_eq!(recs[7].payload, b"after repair");
    assert_eq!(recs[7].kind, 99);
    assert_eq!(recs[6].payload, payload(7, 73));
}

fn opts(path: &Path, mode: RequestedMode) -> PoolOptions {
    PoolOptions {
        path: path.to_path_buf(),
        size: POOL,
        log_size: DEFAULT_LOG_SIZE,
        mode,
        emulate_flush_delay_ns: 0,
    }
}

fn mapped_round_trip(mode: RequestedMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let mut expected: Vec<(u8, u32, Vec<u8>)> = Vec::new();
    {
        let mut pool = Pool::open_or_create(&opts(&path, mode)).unwrap();
        assert!(pool.info().created);
        assert_eq!(pool.info().size, POOL);
        assert_eq!(pool.info().uuid.len(), 36);
        match (mode, pool.info().mode) {
            (RequestedMode::Emulate, MediaMode::Emulate { .. }) => {}
            (RequestedMode::Msync, MediaMode::Msync) => {}
            (m, got) => panic!("requested {m}, got {got}"),
        }
        for i in 0..30u64 {
            let p = payload(i, (i * 17) as usize);
            let batch = [
                RecordRef {
                    kind: 1,
                    db: 2,
                    flags: 0,
                    payload: &p,
                },
                RecordRef {
                    kind: 3,
                    db: 4,
                    flags: 0,
                    payload: b"tail",
                },
            ];
            pool.log_mut().append(&batch).unwrap();
            expected.push((1u8, 2u32, p.clone()));
            expected.push((3, 4, b"tail".to_vec()));
        }
    }
    let pool = Pool::open_or_create(&opts(&path, mode)).unwrap();
    assert!(!pool.info().created);
    assert_eq!(pool.log().state(), &LogState::Writable);
    let got: Vec<_> = ok_records(&pool)
        .into_iter()
        .map(|r| (r.kind, r.db, r.payload))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn emulate_mode_round_trip_through_reopen() {
    mapped_round_trip(RequestedMode::Emulate);
}

#[test]
fn msync_mode_round_trip_through_reopen() {
    mapped_round_trip(RequestedMode::Msync);
}

#[test]
fn dax_mode_is_refused_without_map_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let err = Pool::open_or_create(&opts(&path, RequestedMode::Dax))
        .err()
        .expect("no DAX filesystem on this machine");
    match &err {
        PoolError::Media {
            source: MediaError::Unsupported(msg),
            ..
        } => {
            assert!(msg.contains("MAP_SYNC refused by"), "{msg}");
            assert!(msg.contains("not a DAX filesystem"), "{msg}");
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    // Auto falls back to msync and says why.
    let pool = Pool::open_or_create(&opts(&path, RequestedMode::Auto)).unwrap();
    assert_eq!(pool.info().mode, MediaMode::Msync);
    assert!(
        pool.info().mode_reason.contains("MAP_SYNC refused"),
        "{}",
        pool.info().mode_reason
    );
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let pool = Pool::open_or_create(&opts(&path, RequestedMode::Emulate)).unwrap();
    let err = Pool::open_or_create(&opts(&path, RequestedMode::Emulate))
        .err()
        .unwrap();
    assert!(matches!(&err, PoolError::Locked(p) if p == &path), "{err}");
    assert!(err.to_string().contains("pool.nvm"), "{err}");
    assert!(matches!(
        Pool::open_readonly(&path),
        Err(PoolError::Locked(_))
    ));
    drop(pool);
    let ro = Pool::open_readonly(&path).unwrap();
    assert!(matches!(
        Pool::open_or_create(&opts(&path, RequestedMode::Emulate)),
        Err(PoolError::Locked(_))
    ));
    drop(ro);
    Pool::open_or_create(&opts(&path, RequestedMode::Emulate)).unwrap();
}

#[test]
fn readonly_pool_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    drop(Pool::open_or_create(&opts(&path, RequestedMode::Msync)).unwrap());
    let before = std::fs::read(&path).unwrap();
    let mut pool = Pool::open_readonly(&path).unwrap();
    let err = pool
        .log_mut()
        .append(&[RecordRef {
            kind: 1,
            db: 0,
            flags: 0,
            payload: b"x",
        }])
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop(pool);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// A pool file cut short (a bad copy, a full disk) is refused at open, by every kind of
/// open, with one line naming the file and both sizes; nothing is written to it.
#[test]
fn truncated_file_is_refused_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let offsets = {
        let mut pool = Pool::open_or_create(&opts(&path, RequestedMode::Emulate)).unwrap();
        let p = vec![7u8; 1000];
        for _ in 0..100 {
            pool.log_mut()
                .append(&[RecordRef {
                    kind: 1,
                    db: 0,
                    flags: 0,
                    payload: &p,
                }])
                .unwrap();
        }
        ok_records(&pool)
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets.len(), 100);
    // Cut inside record 60, then just one byte short of the end: both are refused.
    for cut in [offsets[59] + 100, POOL - 1] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let errs = [
            Pool::open_or_create(&opts(&path, RequestedMode::Emulate))
                .err()
                .expect("a truncated pool must not open"),
            Pool::open_readonly(&path)
                .err()
                .expect("a truncated pool must not open read-only"),
        ];
        for err in errs {
            assert!(
                matches!(&err, PoolError::Truncated { path: p, file_len, need }
                    if p == &path && *file_len == cut && *need == POOL),
                "{err}"
            );
            let line = err.to_string();
            assert_eq!(line.lines().count(), 1, "{line}");
            assert!(line.contains("pool.nvm"), "{line}");
            assert!(line.contains(&cut.to_string()), "{line}");
            assert!(line.contains(&POOL.to_string()), "{line}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "a refused open neither regrows nor repairs the file"
        );
    }
    // The same for caller-supplied media.
    let mut image = image_with(3);
    image.truncate(POOL as usize - 4096);
    let err = Pool::from_media(Box::new(CrashSim::from_image(image)), false)
        .err()
        .unwrap();
    assert!(
        matches!(err, PoolError::Truncated { file_len, need: POOL, .. } if file_len == POOL - 4096),
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
}

#[test]
fn file_shorter_than_a_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    std::fs::write(&path, vec![0u8; 100]).unwrap();
    let err = Pool::open_or_create(&opts(&path, RequestedMode::Emulate))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            PoolError::Truncated {
                file_len: 100,
                need: FIXED_LEN,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    assert!(err.to_string().contains("pool.nvm"), "{err}");
}

#[test]
fn damaged_superblocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    drop(Pool::open_or_create(&opts(&path, RequestedMode::Emulate)).unwrap());
    let good = std::fs::read(&path).unwrap();
    let open = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        Pool::open_or_create(&opts(&path, RequestedMode::Emulate))
            .err()
            .unwrap()
    };
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(open(&bad), PoolError::BadMagic { .. }));
    // A version this build does not know, and the old version 1 (no key space).
    for version in [FORMAT_VERSION + 1, 1] {
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&version.to_le_bytes());
        let err = open(&bad);
        assert!(
            matches!(&err, PoolError::UnsupportedVersion { version: v, .. } if *v == version),
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        assert!(err.to_string().contains("pool.nvm"), "{err}");
    }
    let mut bad = good.clone();
    bad[20] ^= 1; // inside the uuid
    let err = open(&bad);
    assert!(matches!(err, PoolError::SuperblockChecksum { .. }), "{err}");
    assert!(err.to_string().contains("pool.nvm"), "{err}");
}

/// An existing pool keeps its identity and log; asked for a smaller size it keeps its
/// own, asked for a larger one it grows (the heap takes the new space).
#[test]
fn existing_pool_keeps_its_identity_and_grows_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let first = Pool::open_or_create(&opts(&path, RequestedMode::Emulate))
        .unwrap()
        .info()
        .clone();
    let capacity = layout().log_capacity;
    let mut o = opts(&path, RequestedMode::Emulate);
    o.size = POOL / 2;
    o.log_size = 64 << 10;
    let pool = Pool::open_or_create(&o).unwrap();
    assert_eq!(pool.info().size, POOL, "pools do not shrink");
    assert_eq!(pool.info().grown_from, None);
    drop(pool);
    o.size = 4 * POOL;
    let pool = Pool::open_or_create(&o).unwrap();
    assert!(!pool.info().created);
    assert_eq!(pool.info().size, 4 * POOL);
    assert_eq!(pool.info().grown_from, Some(POOL));
    assert_eq!(
        pool.superblock().heap_size,
        4 * POOL - pool.superblock().heap_offset
    );
    assert_eq!(
        pool.log().capacity(),
        capacity,
        "the log keeps its size too"
    );
    assert_eq!(pool.superblock().log_offset, layout().log_offset);
    assert_eq!(pool.info().uuid, first.uuid);
    assert_eq!(pool.info().created_unix_ms, first.created_unix_ms);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * POOL);
}

#[test]
fn creation_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("pool.nvm");
    let err = Pool::open_or_create(&opts(&missing, RequestedMode::Emulate))
        .err()
        .unwrap();
    assert!(
        matches!(&err, PoolError::MissingDir(d) if d.ends_with("no-such-dir")),
        "{err}"
    );
    let path = dir.path().join("small.nvm");
    let mut o = opts(&path, RequestedMode::Emulate);
    o.size = POOL - 1;
    let err = Pool::open_or_create(&o).err().unwrap();
    assert!(matches!(err, PoolError::TooSmall { .. }), "{err}");
    assert!(!path.exists(), "a refused pool leaves no file behind");
    // Nothing but the (absent) pool in the directory: no temporary files left over.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn media_bounds_are_checked() {
    let sim = CrashSim::new(4096);
    assert!(matches!(
        sim.write(4090, &[0u8; 8]),
        Err(MediaError::OutOfRange { .. })
    ));
    assert!(matches!(
        sim.read(u64::MAX - 2, &mut [0u8; 8]),
        Err(MediaError::OutOfRange { .. })
    ));
    assert!(matches!(
        sim.store_u64_atomic(12, 1),
        Err(MediaError::Unsupported(_))
    ));
}

/// The effect logged as record `i` by the ring test: puts over 150 (db, key) pairs, with
/// values of varying length so that records (and headers) land across the ring's end.
fn ring_put(i: u64) -> (u32, Effect) {
    let db = (i % 3) as u32;
    let e = Effect::Put {
        key: format!("key:{}", i % 50).into_bytes(),
        value: Value::String(payload(i, (i * 7 % 131) as usize)),
        expire_at_ms: NO_EXPIRE,
    };
    (db, e)
}

/// Reads the live records back: consecutive lsns from the head to the last lsn, each the
/// effect logged under its lsn, packed back to back from the head (modulo the ring).
/// Returns how many of them straddle the ring's end.
fn check_live(pool: &Pool) -> u64 {
    let log = pool.log();
    let (start, capacity) = (log.log_offset(), log.capacity());
    let mut pos = log.head().pos;
    let mut lsn = log.head().lsn;
    let mut straddling = 0;
    for r in log.records() {
        let r = r.expect("live records are valid");
        assert_eq!(r.lsn, lsn);
        assert_eq!(r.offset, start + pos % capacity, "lsn {lsn}");
        let (db, e) = ring_put(lsn);
        assert_eq!(r.db, db);
        assert_eq!(decode(r.kind, &r.payload).expect("decodes"), e, "lsn {lsn}");
        let len = record_len(r.payload.len() as u64);
        if pos % capacity + len > capacity {
            straddling += 1;
        }
        pos += len;
        lsn += 1;
    }
    assert_eq!(lsn - 1, log.last_lsn());
    assert_eq!(lsn - log.head().lsn, log.record_count());
    assert_eq!(pos - log.head().pos, log.used_bytes());
    assert_eq!(pos, log.committed_end().pos);
    straddling
}

/// A 4 KiB ring takes about a hundred times its capacity while the replayer folds it
/// (half the live records per step, so the head stops anywhere in the ring): every
/// record reads back across the wrap with its lsn, before and after a reopen; a full
/// log refuses appends with `Full`, writing nothing, until a step frees space; and the
/// key space ends up holding the last write of every key.
#[test]
fn ring_log_wraps_while_the_replayer_folds() {
    let sim = CrashSim::new(POOL);
    let mut pool = Pool::from_media_with_log(Box::new(sim.clone()), true, 4096).unwrap();
    let capacity = pool.log().capacity();
    assert_eq!(capacity, 4096);
    assert_eq!(pool.superblock().log_capacity, capacity);
    let ks = pool.open_keyspace().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    let total = 4000u64;
    let (mut fulls, mut straddling, mut logged_bytes) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    for i in 1..=total {
        let (db, e) = ring_put(i);
        buf.clear();
        let kind = encode(&e, &mut buf).expect("encodes");
        let rec = RecordRef {
            kind,
            db,
            flags: 0,
            payload: &buf,
        };
        loop {
            match pool.log_mut().append(&[rec]) {
                Ok(lsn) => {
                    assert_eq!(lsn, i);
                    logged_bytes += record_len(buf.len() as u64);
                    break;
                }
                Err(LogError::Full { needed, free }) => {
                    fulls += 1;
                    assert_eq!(needed, record_len(buf.len() as u64));
                    assert!(needed > free, "needed {needed} free {free}");
                    assert_eq!(free, pool.log().free_bytes());
                    assert_eq!(pool.log().used_bytes() + free, capacity);
                    // Still full, and a refusal writes nothing.
                    let events = sim.events();
                    assert!(matches!(
                        pool.log_mut().append(&[rec]),
                        Err(LogError::Full { .. })
                    ));
                    assert_eq!(sim.events(), events);
                    assert_eq!(pool.log().state(), &LogState::Writable);
                    straddling += check_live(&pool);
                    // Fold half of the live records (at least one).
                    let live = pool.log().record_count();
                    let mut it = pool.log().records();
                    it.by_ref().take(live.div_ceil(2) as usize).for_each(drop);
                    let half = it.cursor();
                    let s = r.step(half).unwrap();
                    assert_eq!(s.records, live.div_ceil(2));
                    assert_eq!(s.next, half);
                    pool.log_mut().advance_head(s.next);
                    assert_eq!(pool.log().head(), half);
                    assert_eq!(r.keyspace().applied().unwrap(), half);
                }
                Err(e) => panic!("append {i}: {e}"),
            }
        }
    }
    assert!(logged_bytes > 100 * capacity, "{logged_bytes} bytes logged");
    assert!(fulls > 100, "{fulls} times full");
    assert!(
        straddling > 10,
        "only {straddling} records straddled the end"
    );
    assert!(pool.log().head().pos > 90 * capacity);
    assert_eq!(pool.log().last_lsn(), total);
    let live = check_live(&pool);

    // A reopen (the durable image, as after a crash) scans from the head the key space
    // recorded, across the wrap, to the same records.
    let image = sim.durable_image();
    drop(r);
    let head = pool.log().head();
    let before: Vec<Record> = ok_records(&pool);
    drop(pool);
    let mut pool = reopen(image);
    assert_eq!(pool.log().state(), &LogState::Writable);
    assert_eq!(pool.log().head(), head);
    assert_eq!(pool.log().last_lsn(), total);
    assert_eq!(ok_records(&pool), before);
    assert_eq!(check_live(&pool), live);

    // Folding the rest leaves an empty log and every key's last value.
    let ks = pool.open_keyspace().unwrap();
    let mut r = Replayer::new(ks, pool.log().new_reader()).unwrap();
    assert_eq!(r.applied(), head);
    let folded = r.drain(pool.log().committed_end()).unwrap();
    assert_eq!(folded, before.len() as u64);
    pool.log_mut().advance_head(r.applied());
    assert_eq!(pool.log().record_count(), 0);
    assert_eq!(pool.log().used_bytes(), 0);
    assert_eq!(pool.log().free_bytes(), capacity);
    let mut ks = r.into_keyspace();
    let report = ks.check(true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.keys, 150);
    assert_eq!(ks.key_count().unwrap(), 150);
    for i in total - 149..=total {
        let (db, e) = ring_put(i);
        let Effect::Put {
            key,
            value: Value::String(v),
            ..
        } = e
        else {
            unreachable!()
        };
        let got = ks.get(db, &key).unwrap().expect("key present").value;
        assert_eq!(got, StoredValue::String(v), "db {db} key {key:?}");
    }
}

/// A writable pool is mapped at a 2 MiB-aligned address (file offset 0), so that on a DAX
/// file system the kernel can use 2 MiB pages; and a pool of 8 MiB or more is a whole
/// number of 2 MiB pages.
#[test]
fn a_pool_is_mapped_for_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.nvm");
    let mut o = opts(&path, RequestedMode::Emulate);
    o.size = (10 << 20) + 12345;
    let pool = Pool::open_or_create(&o).unwrap();
    assert_eq!(pool.info().size, 10 << 20);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with(&path.display().to_string()))
        .unwrap_or_else(|| panic!("no mapping of the pool in {maps}"));
    let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
    assert_eq!(start % (2 << 20), 0, "{line}");
    drop(pool);
}
