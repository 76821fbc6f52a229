//! The replayer thread: runs `replay::Replayer::step` in a loop, off the main thread,
//! without the GIL and without any server API.
//!
//! The main thread and the thread share only atomics (the log's durable end, published
//! after each append or sync; the applied position and key-space figures, published
//! after each committed batch) and the `Replayer` behind a mutex, which the main thread
//! takes only for start-up loading and `NVM.CHECK`. The main thread learns the applied
//! position in `Module::update_admission` and only then reuses the log space behind it.

#![forbid(unsafe_code)]

use crate::log::Cursor;
use crate::replay::Replayer;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Figures the thread publishes for `NVM.INFO` (read without a lock).
#[derive(Default)]
pub struct Published {
    pub durable_pos: AtomicU64,
    pub durable_lsn: AtomicU64,
    pub applied_pos: AtomicU64,
    pub applied_lsn: AtomicU64,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub apply_errors: AtomicU64,
    pub keys: AtomicU64,
    pub heap_used: AtomicU64,
    pub heap_free: AtomicU64,
    /// The largest block one allocation can get (see `HeapStats::largest_free`).
    pub heap_largest_free: AtomicU64,
    pub heap_capacity: AtomicU64,
    /// Records folded per second over the last second of work.
    pub rate: AtomicU64,
    pub peak_rate: AtomicU64,
    /// Set when the thread stopped on an error (see `ERROR`).
    pub stalled: AtomicBool,
    pub stop: AtomicBool,
}

pub static PUBLISHED: Lazy<Published> = Lazy::new(Published::default);
/// Why the replayer stalled (a full or damaged key space, an unreadable record).
pub static ERROR: Lazy<Mutex<Option<String>>> = Lazy::new(|| Mutex::new(None));
/// The replayer, shared with the main thread for loading and checks.
pub static REPLAYER: Lazy<Mutex<Option<Arc<Mutex<Replayer>>>>> = Lazy::new(|| Mutex::new(None));
static THREAD: Lazy<Mutex<Option<JoinHandle<()>>>> = Lazy::new(|| Mutex::new(None));

/// The replayer, if the module has one.
pub fn shared() -> Option<Arc<Mutex<Replayer>>> {
    REPLAYER.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Called by the main thread after the log's durable end moved.
pub fn publish_durable(end: Cursor) {
    PUBLISHED.durable_pos.store(end.pos, Ordering::Release);
    PUBLISHED.durable_lsn.store(end.lsn, Ordering::Release);
}

/// Where the key space has durably folded to (the log may reuse what is before).
pub fn applied() -> Cursor {
    Cursor {
        pos: PUBLISHED.applied_pos.load(Ordering::Acquire),
        lsn: PUBLISHED.applied_lsn.load(Ordering::Acquire),
    }
}

pub fn publish_keyspace(r: &Replayer) {
    let a = r.applied();
    let p = &*PUBLISHED;
    let ks = r.keyspace();
    let heap = ks.heap_stats();
    p.heap_used.store(heap.used, Ordering::Relaxed);
    p.heap_free.store(heap.free, Ordering::Relaxed);
    p.heap_largest_free
        .store(heap.largest_free, Ordering::Relaxed);
    p.heap_capacity.store(heap.capacity, Ordering::Relaxed);
    if let Ok(n) = ks.key_count() {
        p.keys.store(n, Ordering::Relaxed);
    }
    p.apply_errors
        .store(ks.stats().apply_errors, Ordering::Relaxed);
    p.applied_lsn.store(a.lsn, Ordering::Release);
    p.applied_pos.store(a.pos, Ordering::Release);
}

/// Starts the thread (once). `log_capacity` sizes how much backlog is worth a batch.
pub fn start(replayer: Arc<Mutex<Replayer>>, log_capacity: u64) -> std::io::Result<()> {
    *REPLAYER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&replayer));
    let fold_bytes = (log_capacity / 64).clamp(1, FOLD_BYTES);
    let handle = std::thread::Builder::new()
        .name("nvm-replayer".into())
        .spawn(move || run(replayer, fold_bytes))?;
    *THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok(())
}

/// A backlog this large (or 1/64 of the log, if smaller) is folded at once; a smaller
/// one waits until its oldest record is `FOLD_DELAY` old. Batches of a few records
/// cost a journal commit each and wake the thread thousands of times a second, taking
/// CPU from the main thread on small machines; waiting costs nothing in durability (the
/// log is durable) and little log space.
const FOLD_BYTES: u64 = 64 << 10;
const FOLD_DELAY: Duration = Duration::from_millis(1);
const MIN_POLL: Duration = Duration::from_micros(50);
const MAX_POLL: Duration = Duration::from_millis(1);

/// Asks the thread to stop after its current batch, and waits for it.
pub fn stop() {
    PUBLISHED.stop.store(true, Ordering::SeqCst);
    let handle = THREAD.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(h) = handle {
        let _ = h.join();
    }
}

fn run(replayer: Arc<Mutex<Replayer>>, fold_bytes: u64) {
    let p = &*PUBLISHED;
    let mut window_start = Instant::now();
    let mut window_records = 0u64;
    let mut pending_since: Option<Instant> = None;
    // Polls back off from MIN_POLL while there is nothing (or not enough) to fold, so
    // a filling log is noticed within MIN_POLL of the last batch, and an idle thread
    // wakes only every MAX_POLL.
    let mut poll = MIN_POLL;
    while !p.stop.load(Ordering::Acquire) {
        let end = Cursor {
            pos: p.durable_pos.load(Ordering::Acquire),
            lsn: p.durable_lsn.load(Ordering::Acquire),
        };
        let backlog = end
            .pos
            .saturating_sub(p.applied_pos.load(Ordering::Acquire));
        let waited = match backlog {
            0 => {
                pending_since = None;
                Duration::ZERO
            }
            _ => pending_since.get_or_insert_with(Instant::now).elapsed(),
        };
        if backlog == 0 || (backlog < fold_bytes && waited < FOLD_DELAY) {
            let wait = match backlog {
                0 => poll,
                _ => poll.min(FOLD_DELAY - waited),
            };
            std::thread::sleep(wait);
            poll = (poll * 2).min(MAX_POLL);
            continue;
        }
        pending_since = None;
        poll = MIN_POLL;
        let outcome = {
            let mut r = replayer.lock().unwrap_or_else(|e| e.into_inner());
            // A panic here must not take the server down: it stalls the replayer.
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.step(end)));
            match res {
                Ok(Ok(step)) => {
                    if step.records > 0 {
                        publish_keyspace(&r);
                    }
                    Ok(step.records)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the replayer panicked".to_string()),
            }
        };
        match outcome {
            Ok(0) => std::thread::sleep(MIN_POLL),
            Ok(n) => {
                p.records.fetch_add(n, Ordering::Relaxed);
                p.batches.fetch_add(1, Ordering::Relaxed);
                window_records += n;
            }
            Err(why) => {
                *ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                p.stalled.store(true, Ordering::Release);
                // Retry now and then: a full key space can drain when the operator acts.
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        if p.stalled.load(Ordering::Relaxed) {
            p.stalled.store(false, Ordering::Release);
        }
        let elapsed = window_start.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = (window_records as f64 / elapsed.as_secs_f64()) as u64;
            p.rate.store(rate, Ordering::Relaxed);
            p.peak_rate.fetch_max(rate, Ordering::Relaxed);
            window_start = Instant::now();
            window_records = 0;
        }
    }
}

/// Why the replayer is stalled, if it is.
pub fn stall_reason() -> Option<String> {
    if !PUBLISHED.stalled.load(Ordering::Acquire) {
        return None;
    }
    ERROR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
