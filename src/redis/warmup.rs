//! Instant restart in the server: the pool is served from the first command on while its
//! key space flows into DRAM behind the clients.
//!
//! At start-up the key space is frozen (`keyspace::frozen`), the server holds nothing,
//! and two things bring the frozen keys in:
//! - fault-in: the command filter, before any command runs, brings every key the
//!   command names (from the server's key specs, in every db) into DRAM from a view of
//!   the frozen state, with the key API (strings, hashes, lists, sorted sets: no server
//!   call) or, for sets and streams, which the module API cannot build, server calls;
//! - the warm-up: a thread walks the frozen state (verifying every checksum) and hands
//!   decoded keys over a channel; a timer inserts them on the main thread in slices of
//!   at most `nvm.warmup-slice-us` (250 µs by default), between client events.
//!
//! `warmup::WarmUp` decides what may still be inserted (settled names, flushed or
//! swapped dbs, expired keys, which leave the key space).
//!
//! While it runs, whole-keyspace commands (KEYS, SCAN, DBSIZE, RANDOMKEY, INFO with its
//! keyspace section, SORT with patterns, DEBUG, NVM.CHECK) get a retryable `-LOADING`
//! naming the warm-up, and nothing copies an incomplete dataset: BGSAVE, SAVE,
//! BGREWRITEAOF, SHUTDOWN SAVE and a replica's SYNC/PSYNC are refused the same way
//! (the replica retries), and the automatic save points are off until it ends.
//!
//! Invariant: a frozen key is inserted only on the main thread, only when `WarmUp`
//! allows it, and never over a key DRAM already holds.

use super::ffi::{self, Ctx, Filter, RedisModuleCtx};
use super::replayer;
use super::restore;
use super::state::{with_module, Refusal, CAPTURING};
use super::stream_dump;
use crate::effect::{Effect, Value};
use crate::keyspace::{KeySpace, Snapshot, StoredEntry, StoredValue, Walked};
use crate::log::BlobRef;
use crate::warmup::{expired, WarmUp};
use crossbeam_channel::{Receiver, TryRecvError};
use once_cell::sync::Lazy;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a warm-up slice inserts for, in µs (`nvm.warmup-slice-us`; a key started
/// before it ends is finished).
static SLICE_US: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(super::config::DEFAULT_WARMUP_SLICE_US);

pub fn set_slice_us(us: u64) {
    SLICE_US.store(us, Ordering::Relaxed);
}
/// A value with more elements than this is brought in over several slices (a command
/// that names it meanwhile completes it first).
const CHUNK: usize = 64;
/// Keys per batch from the walker, and batches in flight.
const BATCH: usize = 256;
const IN_FLIGHT: usize = 64;

/// A key of the frozen state: its frozen db, name and entry.
type FrozenKey = (u32, Vec<u8>, StoredEntry);

/// A big value being brought in over several slices: DRAM holds its first `done`
/// elements (and no expiry yet, so that nothing expires it half-built).
struct Partial {
    db: u32,
    key: Vec<u8>,
    entry: StoredEntry,
    done: usize,
}

enum FromWalker {
    Keys(Vec<FrozenKey>),
    Done(Result<Walked, String>),
}

struct Running {
    book: WarmUp,
    /// The frozen state, for fault-ins (the walker has its own view).
    view: KeySpace,
    /// Frozen dbs that hold keys (a fault-in looks in each).
    frozen_dbs: Vec<u32>,
    from_walker: Receiver<FromWalker>,
    pending: VecDeque<FrozenKey>,
    /// A big value half brought in.
    partial: Option<Partial>,
    walked: Option<Result<Walked, String>>,
    total: u64,
    began: Instant,
    slices: u64,
    longest_slice: Duration,
    /// Slices that found nothing decoded yet (the walker is the bottleneck).
    waits: u64,
    /// The `save` setting to put back at the end (automatic saves are off meanwhile).
    saved_save_points: Option<Vec<u8>>,
}

/// What NVM.INFO shows of the warm-up (kept after it ends).
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub running: bool,
    pub total: u64,
    pub loaded: u64,
    pub faulted: u64,
    pub dropped: u64,
    pub damaged: u64,
    pub slices: u64,
    pub longest_slice_us: u64,
    pub waits: u64,
    pub duration_ms: u64,
}

static RUNNING: Lazy<Mutex<Option<Running>>> = Lazy::new(|| Mutex::new(None));
static PROGRESS: Lazy<Mutex<Progress>> = Lazy::new(|| Mutex::new(Progress::default()));
/// True while a warm-up runs (read by the filter on every command without a lock).
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

fn with_running<T>(f: impl FnOnce(&mut Running) -> T) -> Option<T> {
    let mut guard = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_mut().map(f)
}

pub fn progress() -> Progress {
    PROGRESS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The frozen state, ready to warm up: two views (the walker's and the fault-ins'), and
/// what the walk needs.
pub struct Frozen {
    view: KeySpace,
    walker_view: KeySpace,
    total: u64,
    frozen_dbs: Vec<u32>,
    blobs: Vec<BlobRef>,
}

impl Frozen {
    /// The views of `snapshot`, just frozen from `live`, whose log's live blobs are
    /// `blobs`.
    pub fn of(live: &KeySpace, snapshot: &Arc<Snapshot>, blobs: Vec<BlobRef>) -> Frozen {
        let view = live.view(snapshot);
        Frozen {
            walker_view: live.view(snapshot),
            total: live.key_count().unwrap_or(0),
            frozen_dbs: view.dbs_with_keys().unwrap_or_default(),
            view,
            blobs,
        }
    }
}

/// Starts the warm-up of `frozen` (at start-up, before the first client command);
/// `saved_save_points` come back when it ends.
pub fn begin(ctx: Ctx, frozen: Frozen, saved_save_points: Option<Vec<u8>>) {
    let Frozen {
        view,
        walker_view,
        total,
        frozen_dbs,
        blobs,
    } = frozen;
    let (to_main, from_walker) = crossbeam_channel::bounded(IN_FLIGHT);
    let spawned = std::thread::Builder::new()
        .name("nvm-warmup".into())
        .spawn(move || {
            // At the main thread's priority: a walker at nice 19 that is descheduled while
            // it holds a lock the main thread needs (the frozen view's saved words, the
            // allocator's arena) stalls the main thread until it runs again, tens of ms on
            // a busy 2-vCPU machine (docs/design.md, Performance).
            let mut batch = Vec::with_capacity(BATCH);
            let walked = walker_view.walk_frozen(&blobs, &mut |db, key, entry| {
                batch.push((db, key, entry));
                if batch.len() == BATCH {
                    // The main thread holds the receiver until the warm-up ends.
                    let _ = to_main.send(FromWalker::Keys(std::mem::take(&mut batch)));
                }
                Ok(())
            });
            if !batch.is_empty() {
                let _ = to_main.send(FromWalker::Keys(batch));
            }
            let _ = to_main.send(FromWalker::Done(walked.map_err(|e| e.to_string())));
        });
    if let Err(e) = spawned {
        ctx.log(
            "warning",
            &format!("redis-nvm: cannot start the warm-up thread ({e}); writes are refused"),
        );
        with_module(|m| m.refuse(Refusal::Poisoned("no warm-up thread".into())));
        return;
    }
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
        book: WarmUp::new(),
        view,
        frozen_dbs,
        from_walker,
        pending: VecDeque::new(),
        partial: None,
        walked: None,
        total,
        began: Instant::now(),
        slices: 0,
        longest_slice: Duration::ZERO,
        waits: 0,
        saved_save_points,
    });
    *PROGRESS.lock().unwrap_or_else(|p| p.into_inner()) = Progress {
        running: true,
        total,
        ..Progress::default()
    };
    ACTIVE.store(true, Ordering::SeqCst);
    NEXT_SLICE.store(SOON, Ordering::SeqCst);
}

/// Automatic save points would write an RDB of what DRAM holds so far: off until the
/// warm-up ends. Returns the setting to put back.
pub fn suspend_save_points(ctx: Ctx) -> Option<Vec<u8>> {
    let current = match ctx.call("CONFIG", &[b"GET", b"save"]) {
        ffi::Reply::Array(kv) => kv.get(1).and_then(|v| v.as_bytes().map(<[u8]>::to_vec)),
        _ => None,
    }?;
    if current.is_empty() {
        return None;
    }
    ctx.call("CONFIG", &[b"SET", b"save", b""]);
    Some(current)
}

/// When the next slice runs: in the event loop's next pass (after the clients' events),
/// or after a 1 ms timer when the walker had nothing ready (not to spin the main thread
/// against it), or not at all.
static NEXT_SLICE: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const SOON: u8 = 1;
const QUEUED: u8 = 2;
const TIMER: u8 = 3;

/// Called in every BEFORE_SLEEP: queues the next slice for the loop's next pass.
pub fn before_sleep() {
    if ACTIVE.load(Ordering::Relaxed)
        && NEXT_SLICE
            .compare_exchange(SOON, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        && !ffi::run_in_next_loop(on_next_loop)
    {
        NEXT_SLICE.store(SOON, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_next_loop(_data: *mut c_void) {
    if let Some(ctx) = ffi::detached_context() {
        run_slice(ctx);
    }
}

unsafe extern "C" fn on_timer(ctx: *mut RedisModuleCtx, _data: *mut c_void) {
    run_slice(Ctx(ctx));
}

fn run_slice(ctx: Ctx) {
    super::guarded(Some(ctx), "warm-up slice", (), || match slice(ctx) {
        None => NEXT_SLICE.store(NONE, Ordering::SeqCst),
        Some(true) => NEXT_SLICE.store(SOON, Ordering::SeqCst),
        Some(false) => {
            NEXT_SLICE.store(TIMER, Ordering::SeqCst);
            ffi::start_timer(ctx, 1, on_timer);
        }
    })
}

/// One slice: inserts frozen keys for up to `nvm.warmup-slice-us`. Returns whether it found work (the
/// next one should come soon), or `None` when the warm-up is over.
fn slice(ctx: Ctx) -> Option<bool> {
    let began = Instant::now();
    let deadline = began + Duration::from_micros(SLICE_US.load(Ordering::Relaxed));
    let mut did_anything = false;
    loop {
        if let Some(p) = with_running(|r| r.partial.take()).flatten() {
            did_anything = true;
            let rest = continue_partial(ctx, p, Some(deadline));
            with_running(|r| r.partial = rest);
            if Instant::now() >= deadline {
                break;
            }
            continue;
        }
        let next = with_running(next_step);
        match next {
            None => return None,
            Some(Step::Wait) => {
                with_running(|r| r.waits += 1);
                break;
            }
            Some(Step::Again) => {}
            Some(Step::Finish) => {
                let took = began.elapsed();
                with_running(|r| {
                    r.slices += 1;
                    r.longest_slice = r.longest_slice.max(took);
                });
                finish(ctx);
                return None;
            }
            Some(Step::Insert(keys)) => {
                did_anything = true;
                let now = now_ms();
                let (mut loaded, mut dropped) = (0, 0);
                let mut keys = keys.into_iter();
                let mut i = 0;
                for (_, db, key, entry) in keys.by_ref() {
                    i += 1;
                    if element_count(&entry) > CHUNK {
                        let p = Partial {
                            db,
                            key,
                            entry,
                            done: 0,
                        };
                        with_running(|r| r.partial = Some(p));
                        break; // the batch ends at a big value (`next_step`)
                    }
                    match bring_in(ctx, db, &key, entry, Check::Settled, now) {
                        Ok(Brought::Inserted) => loaded += 1,
                        Ok(Brought::AlreadyThere) => {}
                        Ok(Brought::Expired) => dropped += 1,
                        Err(e) => {
                            dropped += 1;
                            log_failure(ctx, &key, db, &e);
                        }
                    }
                    // The clock is read every few keys: a key takes ~1-2 us.
                    if i % 16 == 0 && Instant::now() >= deadline {
                        break;
                    }
                }
                with_running(|r| {
                    r.book.loaded += loaded;
                    r.book.dropped += dropped;
                    // What the deadline left goes back to the front of the queue (as frozen
                    // keys: a SWAPDB may move them before their turn comes again).
                    let rest: Vec<_> = keys.collect();
                    for (frozen_db, _, key, entry) in rest.into_iter().rev() {
                        r.pending.push_front((frozen_db, key, entry));
                    }
                });
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let took = began.elapsed();
    with_running(|r| {
        r.slices += 1;
        r.longest_slice = r.longest_slice.max(took);
        publish(r);
    });
    Some(did_anything)
}

/// What the slice does next: take the walker's keys, and pick the next one to insert.
fn next_step(r: &mut Running) -> Step {
    if r.pending.is_empty() && r.walked.is_none() {
        match r.from_walker.try_recv() {
            Ok(FromWalker::Keys(keys)) => r.pending.extend(keys),
            Ok(FromWalker::Done(walked)) => r.walked = Some(walked),
            Err(TryRecvError::Empty) => return Step::Wait,
            Err(TryRecvError::Disconnected) => {
                r.walked = Some(Err("the warm-up thread ended early".into()))
            }
        }
    }
    if !r.book.anything_left() {
        r.pending.clear();
    }
    let mut batch = Vec::new();
    while batch.len() < KEYS_PER_STEP {
        let Some((frozen_db, key, entry)) = r.pending.pop_front() else {
            break;
        };
        if r.book.is_settled(&key) {
            r.book.dropped += 1;
            continue;
        }
        let Some(db) = r.book.place(frozen_db) else {
            r.book.dropped += 1;
            continue;
        };
        let big = element_count(&entry) > CHUNK;
        batch.push((frozen_db, db, key, entry));
        if big {
            break;
        }
    }
    if !batch.is_empty() {
        return Step::Insert(batch);
    }
    match r.walked {
        Some(_) if !r.book.anything_left() => Step::Finish,
        Some(_) => match r.from_walker.try_recv() {
            Ok(FromWalker::Keys(keys)) => {
                r.pending.extend(keys);
                Step::Again
            }
            _ => Step::Finish,
        },
        None => Step::Again,
    }
}

/// Keys taken from the queue per look at it (the lock is taken once for them).
const KEYS_PER_STEP: usize = 64;

enum Step {
    Wait,
    Again,
    Finish,
    /// Keys to insert now, with their frozen db and the db they go to (a big value last).
    Insert(Vec<(u32, u32, Vec<u8>, StoredEntry)>),
}

/// Counts an insert's outcome in `which` (inserted) or as dropped, and logs a failure.
fn count(
    inserted: Result<Brought, String>,
    key: &[u8],
    db: u32,
    ctx: Ctx,
    which: impl FnOnce(&mut WarmUp) -> &mut u64,
) {
    with_running(|r| match &inserted {
        Ok(Brought::Inserted) => *which(&mut r.book) += 1,
        Ok(Brought::AlreadyThere) => {}
        Ok(Brought::Expired) | Err(_) => r.book.dropped += 1,
    });
    if let Err(e) = inserted {
        log_failure(ctx, key, db, &e);
    }
}

fn log_failure(ctx: Ctx, key: &[u8], db: u32, e: &str) {
    ctx.log(
        "warning",
        &format!(
            "redis-nvm: bringing key {:?} of db {db} into memory: {e}",
            String::from_utf8_lossy(key)
        ),
    );
}

/// Inserts the next chunks of a big value until `deadline` (none: to the end). Returns
/// what is left to do.
fn continue_partial(ctx: Ctx, mut p: Partial, deadline: Option<Instant>) -> Option<Partial> {
    let n = element_count(&p.entry);
    if p.done == 0 {
        if ctx.selected_db() != p.db && !ctx.select_db(p.db) {
            count(
                Err(format!("cannot select db {}", p.db)),
                &p.key,
                p.db,
                ctx,
                |b| &mut b.loaded,
            );
            return None;
        }
        if expired(p.entry.expire_at_ms, now_ms()) {
            drop_expired(p.db, &p.key);
            with_running(|r| r.book.dropped += 1);
            return None;
        }
    } else {
        if ctx.selected_db() != p.db && !ctx.select_db(p.db) {
            return None;
        }
        if ctx.open_read(&p.key).is_none() {
            // Evicted half-built (the eviction was logged like any other).
            with_running(|r| r.book.dropped += 1);
            return None;
        }
    }
    loop {
        let end = (p.done + CHUNK).min(n);
        if let Err(e) = insert_range(ctx, p.db, &p.key, &p.entry, p.done..end) {
            count(Err(e), &p.key, p.db, ctx, |b| &mut b.loaded);
            return None;
        }
        p.done = end;
        if end == n {
            with_running(|r| r.book.loaded += 1);
            return None;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(p);
        }
    }
}

fn publish(r: &Running) {
    let mut p = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
    p.loaded = r.book.loaded;
    p.faulted = r.book.faulted;
    p.dropped = r.book.dropped;
    p.slices = r.slices;
    p.longest_slice_us = r.longest_slice.as_micros() as u64;
    p.waits = r.waits;
    p.duration_ms = r.began.elapsed().as_millis() as u64;
}

/// Everything is in: the free space the walk found goes back to the key space, the
/// save points come back, and damage the walk found is reported. A walk that could not
/// read the key space at all leaves the fault-ins on (its keys are still served by
/// name), whole-keyspace commands refused, and writes refused.
fn finish(ctx: Ctx) {
    let mut guard = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut r) = guard.take() else {
        return;
    };
    publish(&r);
    let mut damaged = 0;
    match r.walked.take() {
        Some(Ok(walked)) if walked.report.problems.is_empty() => {
            // Giving the free space back walks the marks (O(heap)): on a thread, under
            // the key space's lock (the replayer waits, not the clients).
            if let Some(shared) = replayer::shared() {
                let handed = std::thread::Builder::new()
                    .name("nvm-freespace".into())
                    .spawn(move || {
                        let mut rep = shared.lock().unwrap_or_else(|p| p.into_inner());
                        rep.keyspace_mut().end_freeze(&walked);
                    });
                if let Err(e) = handed {
                    ctx.log(
                        "warning",
                        &format!("redis-nvm: the key space's free space stays unknown: {e}"),
                    );
                }
            }
        }
        Some(Ok(walked)) => {
            // Damaged keys were not handed over; the marks are incomplete, so the frozen
            // state keeps its space (writes are refused anyway).
            damaged = walked.report.problems.len() as u64;
            let first = &walked.report.problems[0];
            let why = format!(
                "the warm-up found {damaged} damaged place(s) in the key space, the first at pool offset {}: {}",
                first.offset, first.what
            );
            ctx.log(
                "warning",
                &format!("redis-nvm: POOL DAMAGED: {why}. The damaged keys are not served; writes are refused. \
                          Copy the pool file aside and inspect it with `nvm-tool check`"),
            );
            with_module(|m| m.refuse(Refusal::Damaged(why)));
        }
        Some(Err(e)) => {
            refuse_unread(ctx, &e);
            r.walked = Some(Err(e));
            *guard = Some(r);
            return;
        }
        None => {}
    }
    drop(guard);
    ACTIVE.store(false, Ordering::SeqCst);
    if let Some(save) = &r.saved_save_points {
        ctx.call("CONFIG", &[b"SET", b"save", save]);
    }
    let secs = r.began.elapsed().as_secs_f64();
    {
        let mut p = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
        p.running = false;
        p.damaged = damaged;
    }
    ctx.log(
        "notice",
        &format!(
            "redis-nvm: warm-up done in {secs:.2} s: {} keys loaded in the background, {} faulted in by commands, \
             {} not brought in (expired, settled, flushed or damaged) of {}; {} slices, the longest {} us",
            r.book.loaded,
            r.book.faulted,
            r.book.dropped,
            r.total,
            r.slices,
            r.longest_slice.as_micros()
        ),
    );
}

fn refuse_unread(ctx: Ctx, e: &str) {
    ctx.log(
        "warning",
        &format!("redis-nvm: the warm-up could not read the key space ({e}); writes are refused"),
    );
    with_module(|m| m.refuse(Refusal::Poisoned(format!("warm-up: {e}"))));
}

/// Brings every frozen copy of the keys `f` names into DRAM, before the command runs.
pub fn fault_in(f: &Filter) {
    let mut keys = f.keys();
    keys.extend(debug_keys(f));
    if keys.is_empty() {
        return;
    }
    let Some(ctx) = ffi::detached_context() else {
        return;
    };
    for key in keys {
        fault_in_key(ctx, &key);
    }
}

fn fault_in_key(ctx: Ctx, key: &[u8]) {
    // A big value the warm-up has half brought in is completed first.
    if let Some(p) = with_running(|r| r.partial.take_if(|p| p.key == key)).flatten() {
        continue_partial(ctx, p, None);
    }
    // Look the name up in every frozen db under the lock; insert without it.
    let found = with_running(|r| {
        if !r.book.claim(key) {
            return Vec::new();
        }
        let mut found = Vec::new();
        for &frozen_db in &r.frozen_dbs {
            let Some(db) = r.book.place(frozen_db) else {
                continue;
            };
            match r.view.get_verified(frozen_db, key) {
                Ok(Some(entry)) => found.push((db, entry)),
                Ok(None) => {}
                Err(e) => {
                    r.book.dropped += 1;
                    ctx.log(
                        "warning",
                        &format!(
                            "redis-nvm: key {:?} of db {frozen_db} is damaged and not served: {e}",
                            String::from_utf8_lossy(key)
                        ),
                    );
                }
            }
        }
        found
    })
    .unwrap_or_default();
    for (db, entry) in found {
        let inserted = bring_in(ctx, db, key, entry, Check::InDram, now_ms());
        count(inserted, key, db, ctx, |b| &mut b.faulted);
    }
}

/// What became of a frozen key.
enum Brought {
    Inserted,
    /// Its expiry had passed: it left the key space instead.
    Expired,
    /// DRAM had it already (the warm-up brought it in before a command named it).
    AlreadyThere,
}

/// What shows that DRAM cannot hold a frozen key already.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// The warm-up: the name is not settled, so no command has named it, so DRAM does
    /// not have it (every key a client creates is named by its command).
    Settled,
    /// A fault-in: the warm-up may have inserted it before; look.
    InDram,
}

/// Inserts a frozen entry as key `key` of `db` unless its expiry has passed (then it
/// leaves the key space) or DRAM has the key already.
fn bring_in(
    ctx: Ctx,
    db: u32,
    key: &[u8],
    entry: StoredEntry,
    check: Check,
    now: i64,
) -> Result<Brought, String> {
    if ctx.selected_db() != db && !ctx.select_db(db) {
        return Err(format!("cannot select db {db}"));
    }
    if expired(entry.expire_at_ms, now) {
        drop_expired(db, key);
        return Ok(Brought::Expired);
    }
    if check == Check::InDram && ctx.open_read(key).is_some() {
        return Ok(Brought::AlreadyThere);
    }
    let n = element_count(&entry);
    insert_range(ctx, db, key, &entry, 0..n)?;
    Ok(Brought::Inserted)
}

/// A key whose expiry passed while the server was down leaves the key space.
fn drop_expired(db: u32, key: &[u8]) {
    with_module(|m| m.append(db, &[Effect::Delete { key: key.to_vec() }]));
}

/// Elements of a value, as `insert_range` counts them (a string or a stream is one).
fn element_count(entry: &StoredEntry) -> usize {
    match &entry.value {
        StoredValue::String(_) | StoredValue::Stream { .. } => 1,
        StoredValue::Hash(h) => h.len(),
        StoredValue::List(l) => l.len(),
        StoredValue::Zset(z) => z.len(),
        StoredValue::Set(s) => s.len(),
    }
}

/// Inserts elements `range` of `entry` into key `key` of `db` (selected); the last
/// range also sets the expiry. Hashes, lists and sorted sets go through the key API (no
/// server call); sets and streams, which it cannot build, through server calls whose
/// notifications are not captured.
fn insert_range(
    ctx: Ctx,
    db: u32,
    key: &[u8],
    entry: &StoredEntry,
    range: std::ops::Range<usize>,
) -> Result<(), String> {
    let last = range.end == element_count(entry);
    let exp = if last { entry.expire_at_ms } else { -1 };
    let server_calls = |effects: &[Effect]| {
        let capturing = CAPTURING.swap(false, Ordering::SeqCst);
        let result = effects.iter().try_for_each(|e| restore::apply(ctx, db, e));
        CAPTURING.store(capturing, Ordering::SeqCst);
        result
    };
    match &entry.value {
        StoredValue::String(s) => ctx.put_string(key, s, exp),
        StoredValue::Hash(h) => ctx.put_hash(key, &h[range], exp),
        StoredValue::List(l) => ctx.put_list(key, &l[range], exp),
        StoredValue::Zset(z) => ctx.put_zset(key, &z[range], exp),
        StoredValue::Set(members) => {
            let mut effects = vec![Effect::SetAdd {
                key: key.to_vec(),
                members: members[range].to_vec(),
            }];
            if exp >= 0 {
                effects.push(Effect::ExpireAt {
                    key: key.to_vec(),
                    at_ms: exp,
                });
            }
            server_calls(&effects)
        }
        StoredValue::Stream { .. } => server_calls(&effects_of(
            key,
            with_groups_folded(ctx, key, entry.clone()),
        )),
    }
}

/// A stream with its consumer-group records written into its DUMP (they commute with the
/// entry records: XADD and XTRIM leave the groups alone). If the DUMP cannot take them,
/// they stay records: acks are replayed with XACK, a stream-group record fails (its times
/// and owners no command can set), and the reason is logged.
fn with_groups_folded(ctx: Ctx, key: &[u8], entry: StoredEntry) -> StoredEntry {
    let StoredEntry {
        value: StoredValue::Stream {
            dump: Some(dump),
            ops,
        },
        expire_at_ms,
    } = entry
    else {
        return entry;
    };
    let folded = match ops.iter().any(stream_dump::is_group_op) {
        false => Ok(None),
        true => stream_dump::fold(&dump, &ops).map(Some),
    };
    let (dump, ops) = match folded {
        Ok(None) => (dump, ops),
        Ok(Some(folded)) => {
            let ops = ops.into_iter().filter(|op| !stream_dump::is_group_op(op));
            (folded, ops.collect())
        }
        Err(e) => {
            ctx.log(
                "warning",
                &format!(
                    "redis-nvm: the consumer-group records of stream {:?} do not fit its DUMP ({e}); they are applied one by one",
                    String::from_utf8_lossy(key)
                ),
            );
            (dump, ops)
        }
    };
    StoredEntry {
        value: StoredValue::Stream {
            dump: Some(dump),
            ops,
        },
        expire_at_ms,
    }
}

/// The effects that recreate a stored key in the server.
pub fn effects_of(key: &[u8], entry: StoredEntry) -> Vec<Effect> {
    let key = key.to_vec();
    let put = |value| Effect::Put {
        key: key.clone(),
        value,
        expire_at_ms: entry.expire_at_ms,
    };
    match entry.value {
        StoredValue::String(s) => vec![put(Value::String(s))],
        StoredValue::List(l) => vec![put(Value::List(l))],
        StoredValue::Hash(h) => vec![put(Value::Hash(h))],
        StoredValue::Set(v) => vec![put(Value::Set(v))],
        StoredValue::Zset(z) => vec![put(Value::Zset(z))],
        StoredValue::Stream { dump, ops } => {
            let mut out = Vec::with_capacity(ops.len() + 2);
            if let Some(d) = dump {
                out.push(put(Value::StreamDump(d)));
            }
            let dump_less = out.is_empty();
            out.extend(ops);
            if dump_less && entry.expire_at_ms >= 0 {
                // A stream rebuilt from its effects alone still needs its expiry.
                out.push(Effect::ExpireAt {
                    key: key.clone(),
                    at_ms: entry.expire_at_ms,
                });
            }
            out
        }
    }
}

/// FLUSHDB (`Some(db)`) or FLUSHALL (`None`) ran.
pub fn on_flush(db: Option<u32>) {
    with_running(|r| {
        if r.partial
            .as_ref()
            .is_some_and(|p| db.is_none_or(|d| d == p.db))
        {
            r.partial = None; // flushed with its db
            r.book.dropped += 1;
        }
        match db {
            Some(db) => r.book.flushed(db),
            None => r.book.flushed_all(),
        }
    });
}

/// SWAPDB a b ran.
pub fn on_swap(a: u32, b: u32) {
    with_running(|r| {
        if let Some(p) = r.partial.as_mut() {
            p.db = if p.db == a {
                b
            } else if p.db == b {
                a
            } else {
                p.db
            };
        }
        r.book.swapped(a, b)
    });
}

/// The retryable refusal of a command that would need the whole key space in DRAM, or
/// would copy the dataset, while the warm-up runs.
pub fn refusal_for(f: &Filter, name: &[u8]) -> Option<String> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let arg_is = |i: usize, n: &str| f.len() > i && f.arg(i).eq_ignore_ascii_case(n.as_bytes());
    let whole = is("keys")
        || is("scan")
        || is("randomkey")
        || is("dbsize")
        || (is("debug") && debug_is_whole(f))
        || is("save")
        || is("bgsave")
        || is("bgrewriteaof")
        || is("sync")
        || is("psync")
        || (is("info") && info_has_keyspace(f))
        || ((is("sort") || is("sort_ro")) && sort_reads_patterns(f))
        || (is("shutdown") && (1..f.len()).any(|i| f.arg(i).eq_ignore_ascii_case(b"save")))
        || (is("config") && (arg_is(1, "rewrite") || (arg_is(1, "set") && sets_save(f))))
        || (is("cluster") && (arg_is(1, "getkeysinslot") || arg_is(1, "countkeysinslot")))
        || (is("nvm.check") && arg_is(1, "dataset"));
    if !whole {
        return None;
    }
    let p = progress();
    let done = p.loaded + p.faulted + p.dropped;
    let pct = (done * 100).checked_div(p.total).unwrap_or(100).min(99);
    Some(format!(
        "LOADING redis-nvm is warming up after a restart: {done} of {} keys in memory ({pct}%); \
         every key is served already, this command needs them all. Retry shortly",
        p.total
    ))
}

/// DEBUG's subcommands that read or replace the whole dataset (the others name keys,
/// or none: `debug_keys`).
fn debug_is_whole(f: &Filter) -> bool {
    f.len() > 1
        && ["digest", "reload", "loadaof", "populate", "jmap"]
            .iter()
            .any(|n| f.arg(1).eq_ignore_ascii_case(n.as_bytes()))
}

/// The keys DEBUG names (it has no key specs): DIGEST-VALUE's, and OBJECT's and the
/// other one-key subcommands'.
fn debug_keys(f: &Filter) -> Vec<Vec<u8>> {
    if f.len() < 3 || !f.arg(0).eq_ignore_ascii_case(b"debug") {
        return Vec::new();
    }
    let sub = f.arg(1);
    let one_key = [
        "object",
        "sdslen",
        "listpack",
        "quicklist-packed-threshold",
        "stringmatch-len",
    ];
    if sub.eq_ignore_ascii_case(b"digest-value") {
        (2..f.len()).map(|i| f.arg(i).to_vec()).collect()
    } else if one_key
        .iter()
        .any(|n| sub.eq_ignore_ascii_case(n.as_bytes()))
    {
        vec![f.arg(2).to_vec()]
    } else {
        Vec::new()
    }
}

fn info_has_keyspace(f: &Filter) -> bool {
    if f.len() == 1 {
        return true;
    }
    (1..f.len()).any(|i| {
        let s = f.arg(i);
        ["keyspace", "default", "all", "everything"]
            .iter()
            .any(|n| s.eq_ignore_ascii_case(n.as_bytes()))
    })
}

fn sort_reads_patterns(f: &Filter) -> bool {
    (2..f.len()).any(|i| {
        let a = f.arg(i - 1);
        (a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get"))
            && f.arg(i).contains(&b'*')
    })
}

fn sets_save(f: &Filter) -> bool {
    (2..f.len())
        .step_by(2)
        .any(|i| f.arg(i).eq_ignore_ascii_case(b"save"))
}
