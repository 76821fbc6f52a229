//! The module's state, shared by its callbacks (all of which run on the server's main
//! thread), and admission: whether a write may run at all (the durable append path is
//! `append`).
//!
//! Invariants:
//! - `ADMIT` is true exactly when writes may run: the command filter reads it without a
//!   lock on every command; it is cleared before a refusal reason is published.
//! - A write is admitted only while the log has its reserve free and the key space's
//!   heap has its reserve free beyond what folding the backlog may take, so that what an
//!   admitted command (or transaction) logs can be made durable; a single write whose
//!   arguments alone need more than the heap can give is refused by the filter
//!   (`refusal_for_need`).
//! - No lock is held while calling into the server (a server call can fire a notification
//!   that needs the lock again).

#![forbid(unsafe_code)]

use super::config::Settings;
use crate::pool::Pool;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// True once recovery finished: notifications before that (the server loading its own
/// RDB/AOF, or our replay) are not captured.
pub static CAPTURING: AtomicBool = AtomicBool::new(false);
/// True while writes are admitted (see the file comment).
pub static ADMIT: AtomicBool = AtomicBool::new(false);
/// While `ADMIT` is false because the key space is full: which writes still run
/// (`FULL_ADMITS_*`). Like the server at `maxmemory`, a full pool refuses what may grow
/// the data and lets deletes through.
pub static FULL_ADMITS: AtomicU8 = AtomicU8::new(FULL_ADMITS_NOTHING);
/// Not full, or refused for another reason: no write runs while `ADMIT` is false.
pub const FULL_ADMITS_NOTHING: u8 = 0;
/// Below a quarter of the heap reserve: only writes that free space
/// (`super::frees_space`), which never need room in the key space.
pub const FULL_ADMITS_FREEING: u8 = 1;
/// Below the heap reserve: every write the server does not flag `denyoom` (DEL, EXPIRE,
/// LPOP, HDEL, RENAME, ...), which may take a little of the reserve.
pub const FULL_ADMITS_NON_GROWING: u8 = 2;

pub static MODULE: Lazy<Mutex<Option<Module>>> = Lazy::new(|| Mutex::new(None));

/// Runs `f` on the module state, if the module is loaded.
pub fn with_module<T>(f: impl FnOnce(&mut Module) -> T) -> Option<T> {
    let mut guard = MODULE.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_mut().map(f)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not enough free log space to admit another write.
    Full { free: u64, reserve: u64 },
    /// Not enough free key-space heap to admit another write.
    HeapFull { headroom: u64, reserve: u64 },
    /// A flush or write to the pool failed: nothing more can be made durable.
    Poisoned(String),
    /// Recovery stopped at damage in the pool's log; writes would be appended after it.
    Corrupt(String),
    /// The warm-up's walk found damaged keys in the key space (they are not served).
    Damaged(String),
    /// Start-up has not finished restoring the pool yet.
    Starting,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub appended_records: u64,
    pub appended_bytes: u64,
    pub refused_writes: u64,
    pub whole_value_effects: u64,
    pub field_effects: u64,
    pub replayed_records: u64,
    pub loaded_keys: u64,
    pub replay_errors: u64,
    pub recovery_ms: u64,
    /// Milliseconds from the process's start to serving (None: unknown).
    pub serving_at_ms: Option<u64>,
    /// Milliseconds the pool took to open (in OnLoad).
    pub pool_open_ms: u64,
    pub discarded_server_keys: u64,
    pub imported_keys: u64,
    /// Writes that ran but whose effects could not be made durable (a media error after
    /// execution): with durability always the server exits before the reply leaves;
    /// with everysec the module is poisoned. Reported, never silent.
    pub in_doubt_writes: u64,
    pub unsupported_type_events: u64,
    /// Records whose payload went to a blob in the heap, and the blobs' bytes.
    pub blob_records: u64,
    pub blob_bytes: u64,
    /// Appends that found the log full and waited for the replayer to make room.
    pub log_full_waits: u64,
    /// Writes the filter refused because their arguments alone need more room than the
    /// pool has.
    pub refused_too_big: u64,
}

pub struct Module {
    pub pool: Pool,
    pub settings: Settings,
    pub server: String,
    pub refusal: Option<Refusal>,
    pub stats: Stats,
    pub pending_rename: Option<(u32, Vec<u8>)>,
    pub pending_move: Option<(u32, Vec<u8>)>,
    /// The server's `databases` setting, read at start-up.
    pub databases: u32,
    /// When deferred appends were last made durable (durability everysec).
    pub last_sync: std::time::Instant,
    /// The function libraries as the pool holds them (their FUNCTION DUMP), once known.
    pub functions: Option<Vec<u8>>,
    /// How many of `settings.fill_warnings` the key space's fill has crossed (and was
    /// warned of).
    pub fill_warned: usize,
    /// Encoded payloads of the records being appended (reused: no allocation on the
    /// write path).
    pub(super) scratch: Vec<Vec<u8>>,
}

/// How a full pool is grown (said by its errors and warnings).
pub const GROW_HINT: &str =
    "grow the pool: CONFIG SET nvm.size <larger size> (online; CONFIG REWRITE keeps it), or restart \
    with a larger nvm.size, or run `nvm-tool grow <pool> <size>` while the server is stopped";

/// How full the key space is: what `NVM.INFO`, the warnings and the errors say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    /// Percent of the heap in use, counting what folding the backlog may still take.
    pub percent: f64,
    /// Heap bytes free beyond that (`Module::heap_headroom`).
    pub headroom: u64,
    pub capacity: u64,
    /// The headroom below which writes that may grow the data are refused.
    pub reserve: u64,
}

/// Free log space kept for writes already admitted (an admitted command may log more
/// than its argv suggests, e.g. a whole value; a transaction bigger than this waits for
/// the replayer instead, see `append`).
pub fn reserve_for(capacity: u64) -> u64 {
    (capacity / 64).clamp(1 << 20, 256 << 20).min(capacity / 2)
}

/// Free key-space heap kept for what admitted writes may still need: a transaction or
/// script whose writes were admitted one by one, values logged as blobs.
pub fn heap_reserve_for(heap_capacity: u64) -> u64 {
    (heap_capacity / 32)
        .clamp(256 << 10, 256 << 20)
        .min(heap_capacity / 4)
}

/// Heap bytes folding one byte of log may take, at most: a record's key or member item is
/// about its own size, plus slot growth (tables and deques double).
pub const HEAP_PER_LOG_BYTE: u64 = 2;

/// Heap bytes a write whose arguments total `arg_bytes` may need (a blob of its value,
/// then the folded value itself, before the blob is freed).
pub fn heap_need_of(arg_bytes: u64) -> u64 {
    arg_bytes.saturating_mul(2)
}

impl Module {
    pub fn new(pool: Pool, settings: Settings, server: String) -> Module {
        Module {
            pool,
            settings,
            server,
            refusal: Some(Refusal::Starting),
            stats: Stats::default(),
            pending_rename: None,
            pending_move: None,
            databases: 16,
            last_sync: std::time::Instant::now(),
            functions: None,
            fill_warned: 0,
            scratch: Vec::new(),
        }
    }

    /// Heap bytes free beyond what folding the current log backlog may take.
    pub fn heap_headroom(&self) -> u64 {
        let free = super::replayer::PUBLISHED.heap_free.load(Ordering::Relaxed);
        let backlog = self.pool.log().used_bytes();
        free.saturating_sub(backlog.saturating_mul(HEAP_PER_LOG_BYTE))
    }

    pub fn fill(&self) -> Fill {
        let capacity = super::replayer::PUBLISHED
            .heap_capacity
            .load(Ordering::Relaxed);
        let headroom = self.heap_headroom().min(capacity);
        Fill {
            percent: (capacity - headroom) as f64 * 100.0 / capacity.max(1) as f64,
            headroom,
            capacity,
            reserve: self.heap_reserve(),
        }
    }

    /// A warning to log and publish when the fill has crossed a `fill-warnings` level
    /// since the last call: (log level, message). Going back down needs 2 points below a
    /// level, so that a fill hovering at it does not warn on every write.
    pub fn fill_notice(&mut self) -> Option<(&'static str, String)> {
        let fill = self.fill();
        let levels = &self.settings.fill_warnings;
        let crossed = levels
            .iter()
            .filter(|&&l| fill.percent >= f64::from(l))
            .count();
        let still = levels
            .iter()
            .filter(|&&l| fill.percent >= f64::from(l) - 2.0)
            .count();
        if crossed > self.fill_warned {
            self.fill_warned = crossed;
            let refused_at =
                (fill.capacity - fill.reserve) as f64 * 100.0 / fill.capacity.max(1) as f64;
            return Some((
                "warning",
                format!(
                    "redis-nvm: the NVM pool {} is {:.1}% full (key space: {} bytes free of {}; level {}%); \
                     writes that add data are refused from about {refused_at:.0}%, deletes always run. \
                     Delete data, or {GROW_HINT}",
                    self.pool.info().path.display(),
                    fill.percent, fill.headroom, fill.capacity, levels[crossed - 1]
                ),
            ));
        }
        if still < self.fill_warned {
            self.fill_warned = still;
            return Some((
                "notice",
                format!(
                    "redis-nvm: the NVM pool {} is back to {:.1}% full (key space: {} bytes free of {})",
                    self.pool.info().path.display(),
                    fill.percent, fill.headroom, fill.capacity
                ),
            ));
        }
        None
    }

    fn heap_reserve(&self) -> u64 {
        heap_reserve_for(
            super::replayer::PUBLISHED
                .heap_capacity
                .load(Ordering::Relaxed),
        )
    }

    /// The refusal for one write whose arguments total `arg_bytes`, if the pool cannot
    /// take it whatever happens to the backlog (checked by the filter for big writes).
    pub fn refusal_for_need(&mut self, arg_bytes: u64) -> Option<String> {
        let path = self.pool.info().path.display().to_string();
        if arg_bytes > u64::from(u32::MAX) {
            self.stats.refused_too_big += 1;
            return Some(format!(
                "NVMFULL an argument of this write is larger than the {} bytes the NVM pool {path} \
                 stores per value; the write was not executed",
                u32::MAX
            ));
        }
        let need = heap_need_of(arg_bytes);
        let (headroom, reserve) = (self.heap_headroom(), self.heap_reserve());
        // Its blob is one block: free blocks are not merged, so the largest one bounds it.
        let largest = super::replayer::PUBLISHED
            .heap_largest_free
            .load(Ordering::Relaxed);
        let one_block = arg_bytes > super::append::blob_threshold(self.pool.log().capacity());
        if need.saturating_add(reserve) <= headroom
            && (!one_block || arg_bytes.saturating_add(4096) <= largest)
        {
            return None;
        }
        self.stats.refused_too_big += 1;
        Some(format!(
            "NVMFULL this write needs about {need} bytes of the NVM pool {path}, which has {headroom} free \
             (reserve {reserve}, largest free block {largest}): the write was not executed. Delete data, or \
             {GROW_HINT}"
        ))
    }

    /// On a full key space, the refusal for a write whose largest argument is
    /// `largest_arg` bytes if the block its key space item may need does not fit the
    /// largest free block: free blocks are not merged, and a write the key space cannot
    /// fold would stall the replayer with everything logged after it, deletes included.
    /// The item holds a key or member and, for a string, its value when that is inline
    /// (at most `INLINE_STRING_MAX`), so this bounds what a RENAME, MOVE or SMOVE allocates.
    pub fn refusal_for_block(&mut self, largest_arg: u64) -> Option<String> {
        let need = crate::keyspace::layout::size_class(largest_arg.saturating_add(
            crate::keyspace::layout::KEY_DATA + crate::keyspace::layout::INLINE_STRING_MAX,
        ));
        let largest = super::replayer::PUBLISHED
            .heap_largest_free
            .load(Ordering::Relaxed);
        if need <= largest {
            return None;
        }
        self.stats.refused_too_big += 1;
        let path = self.pool.info().path.display().to_string();
        Some(format!(
            "NVMFULL the NVM pool {path} is full and this write may need a block of {need} bytes, larger \
             than its largest free block ({largest} bytes; free space is not merged): the write was not \
             executed; deletes, expiry and pops still run. Delete data, or {GROW_HINT}"
        ))
    }

    /// Grows the pool online to `size` bytes (`CONFIG SET nvm.size`): the pool's file,
    /// mapping and superblock (`Pool::grow`), then the key space's heap, under the
    /// replayer's lock; writes are re-admitted at once if they were refused for room.
    pub fn grow(&mut self, size: u64) -> Result<(), String> {
        let from = self.pool.info().size;
        let heap_end = self.pool.grow(size).map_err(|e| e.to_string())?;
        if let Some(shared) = super::replayer::shared() {
            let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
            r.grow_heap(heap_end);
            super::replayer::publish_keyspace(&r);
        }
        self.update_admission();
        super::ffi::log_line(
            "notice",
            &format!(
                "redis-nvm: pool {} grown online from {from} to {} bytes",
                self.pool.info().path.display(),
                self.pool.info().size
            ),
        );
        Ok(())
    }

    /// Durability everysec: makes deferred appends durable once a second has passed
    /// (or now, with `force`). A failure poisons the module like a failed append.
    pub fn sync_if_due(&mut self, force: bool) {
        if self.pool.log().unsynced_bytes() == 0 {
            return;
        }
        if !force && self.last_sync.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.last_sync = std::time::Instant::now();
        match self.pool.log_mut().sync() {
            Ok(()) => super::replayer::publish_durable(self.pool.log().committed_end()),
            Err(e) => self.refuse(Refusal::Poisoned(e.to_string())),
        }
    }

    pub fn refuse(&mut self, why: Refusal) {
        FULL_ADMITS.store(FULL_ADMITS_NOTHING, Ordering::SeqCst);
        ADMIT.store(false, Ordering::SeqCst);
        self.refusal = Some(why);
    }

    /// Re-evaluates whether writes may run (after an append, a repair, or start-up).
    pub fn update_admission(&mut self) {
        match self.refusal {
            Some(Refusal::Poisoned(_))
            | Some(Refusal::Corrupt(_))
            | Some(Refusal::Damaged(_))
            | Some(Refusal::Starting) => return,
            _ => {}
        }
        // The key space has folded up to here: that log space is free again.
        self.pool.log_mut().advance_head(super::replayer::applied());
        let log = self.pool.log();
        let reserve = reserve_for(log.capacity());
        let free = log.free_bytes();
        let (headroom, heap_reserve) = (self.heap_headroom(), self.heap_reserve());
        if free < reserve {
            if !matches!(self.refusal, Some(Refusal::Full { .. })) {
                self.refuse(Refusal::Full { free, reserve });
            }
        } else if headroom < heap_reserve {
            if !matches!(self.refusal, Some(Refusal::HeapFull { .. })) {
                self.refuse(Refusal::HeapFull {
                    headroom,
                    reserve: heap_reserve,
                });
            }
            let admits = if headroom >= heap_reserve / 4 {
                FULL_ADMITS_NON_GROWING
            } else {
                FULL_ADMITS_FREEING
            };
            if FULL_ADMITS.load(Ordering::Relaxed) != admits {
                FULL_ADMITS.store(admits, Ordering::SeqCst);
            }
        } else if self.refusal.is_some() || !ADMIT.load(Ordering::Relaxed) {
            // Only on a change: a locked store on every append would wait for the
            // cache-line write-backs the append just issued.
            self.refusal = None;
            ADMIT.store(true, Ordering::SeqCst);
        }
    }

    /// The error a refused write gets, one line, starting with an error code.
    pub fn refusal_message(&self) -> String {
        let path = self.pool.info().path.display().to_string();
        match &self.refusal {
            None => "NVMREFUSED write refused by redis-nvm".into(),
            Some(Refusal::Full { free, reserve }) => match super::replayer::stall_reason() {
                Some(why) => format!(
                    "NVMFULL the NVM pool {path} cannot take writes: its key space stopped folding the log ({why}); \
                     the write was not executed. Reads still work. Delete data, or {GROW_HINT}"
                ),
                None => format!(
                    "NVMFULL the log backlog of the NVM pool {path} is full ({free} bytes free, reserve {reserve}): \
                     the replayer is behind; the write was not executed. Retry shortly (see NVM.INFO replay_*)"
                ),
            },
            Some(Refusal::HeapFull { .. }) => {
                let fill = self.fill();
                let only = if FULL_ADMITS.load(Ordering::Relaxed) == FULL_ADMITS_FREEING {
                    "only DEL, UNLINK, FLUSHDB, FLUSHALL, expiry and pops run"
                } else {
                    "deletes, expiry, pops and other writes that add no data still run"
                };
                format!(
                    "NVMFULL the NVM pool {path} is full: its key space is {:.1}% used ({} bytes free of {}, \
                     {} kept for writes in flight); this write may add data and was not executed; {only}. \
                     Delete data to make room, or {GROW_HINT}",
                    fill.percent, fill.headroom, fill.capacity, fill.reserve
                )
            }
            Some(Refusal::Poisoned(why)) => format!(
                "NVMPOISONED writes to the NVM pool {path} failed ({why}); the write was not executed. \
                 Reads still work; check the device and restart the server"
            ),
            Some(Refusal::Corrupt(why)) => format!(
                "NVMCORRUPT the NVM pool {path} is damaged ({why}); the write was not executed. \
                 Reads serve the data before the damage; see NVM.CHECK, then NVM.REPAIR to drop the damaged tail"
            ),
            Some(Refusal::Damaged(why)) => format!(
                "NVMCORRUPT the NVM pool {path} is damaged ({why}); the write was not executed. \
                 The damaged keys are not served, the others are; copy the pool file aside and inspect it \
                 with `nvm-tool check`"
            ),
            Some(Refusal::Starting) => "NVMLOADING redis-nvm is still restoring its pool".into(),
        }
    }
}
