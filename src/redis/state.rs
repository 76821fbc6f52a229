//! The module's state, shared by its callbacks (all of which run on the server's main
//! thread), and the one path by which effects reach the log.
//!
//! Invariants:
//! - `append` returns only after the effects are persistent (durability `always`), or
//!   after they are written to the log and will be made persistent by the next sync
//!   (`everysec`); on any log error the module stops admitting writes (`refusal` is set)
//!   and says why in the server log, in `NVM.INFO` and in every refusal.
//! - `ADMIT` is true exactly when writes may run: the command filter reads it without a
//!   lock on every command; it is cleared before a refusal reason is published.
//! - No lock is held while calling into the server (a server call can fire a notification
//!   that needs the lock again).

#![forbid(unsafe_code)]

use super::config::{Durability, Settings};
use crate::effect::{encode, Effect};
use crate::log::{LogError, RecordRef};
use crate::pool::Pool;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// True once recovery finished: notifications before that (the server loading its own
/// RDB/AOF, or our replay) are not captured.
pub static CAPTURING: AtomicBool = AtomicBool::new(false);
/// True while writes are admitted (see the file comment).
pub static ADMIT: AtomicBool = AtomicBool::new(false);

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
    /// A flush or write to the pool failed: nothing more can be made durable.
    Poisoned(String),
    /// Recovery stopped at damage in the pool; writes would be appended after it.
    Corrupt(String),
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
    pub discarded_server_keys: u64,
    pub imported_keys: u64,
    /// Writes that ran but whose effects could not be made durable (a log error after
    /// execution): reported, never silent.
    pub in_doubt_writes: u64,
    pub unsupported_type_events: u64,
}

pub struct Module {
    pub pool: Pool,
    pub settings: Settings,
    pub server: String,
    pub refusal: Option<Refusal>,
    pub stats: Stats,
    pub pending_rename: Option<(u8, Vec<u8>)>,
    pub pending_move: Option<(u8, Vec<u8>)>,
    /// The server's `databases` setting, read at start-up.
    pub databases: i32,
    /// When deferred appends were last made durable (durability everysec).
    pub last_sync: std::time::Instant,
    scratch: Vec<u8>,
}

/// Free log space kept for writes already admitted (an admitted command may log more
/// than its argv suggests, e.g. a whole value inside EXEC).
pub fn reserve_for(capacity: u64) -> u64 {
    (capacity / 64).clamp(1 << 20, 256 << 20).min(capacity / 2)
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
            scratch: Vec::with_capacity(4096),
        }
    }

    /// Appends one effect for `db` as one log record (durable on return with durability
    /// `always`).
    pub fn append(&mut self, db: u8, effect: &Effect) -> Result<(), LogError> {
        self.scratch.clear();
        let kind = encode(effect, &mut self.scratch);
        let records = [RecordRef {
            kind,
            db,
            payload: &self.scratch,
        }];
        let bytes = self.scratch.len() as u64 + 24;
        let result = match self.settings.durability {
            Durability::Always => self.pool.log_mut().append(&records),
            Durability::Everysec => self.pool.log_mut().append_deferred(&records),
        };
        match result {
            Ok(_) => {
                if self.settings.durability == Durability::Always {
                    super::replayer::publish_durable(self.pool.log().committed_end());
                }
                self.stats.appended_records += 1;
                self.stats.appended_bytes += bytes;
                self.update_admission();
                Ok(())
            }
            Err(e) => {
                self.stats.in_doubt_writes += 1;
                self.refuse(match &e {
                    LogError::Full { .. } => Refusal::Full {
                        free: self.pool.log().free_bytes(),
                        reserve: reserve_for(self.pool.log().capacity()),
                    },
                    other => Refusal::Poisoned(other.to_string()),
                });
                Err(e)
            }
        }
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
        ADMIT.store(false, Ordering::SeqCst);
        self.refusal = Some(why);
    }

    /// Re-evaluates whether writes may run (after an append, a repair, or start-up).
    pub fn update_admission(&mut self) {
        match self.refusal {
            Some(Refusal::Poisoned(_)) | Some(Refusal::Corrupt(_)) | Some(Refusal::Starting) => {
                return
            }
            _ => {}
        }
        // The key space has folded up to here: that log space is free again.
        self.pool.log_mut().advance_head(super::replayer::applied());
        let log = self.pool.log();
        let reserve = reserve_for(log.capacity());
        let free = log.free_bytes();
        if free < reserve {
            if !matches!(self.refusal, Some(Refusal::Full { .. })) {
                self.refuse(Refusal::Full { free, reserve });
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
                     the write was not executed. Reads still work. To grow it: SAVE, then restart with the pool file \
                     moved aside and a larger nvm.size (a new pool imports dump.rdb)"
                ),
                None => format!(
                    "NVMFULL the log backlog of the NVM pool {path} is full ({free} bytes free, reserve {reserve}): \
                     the replayer is behind; the write was not executed. Retry shortly (see NVM.INFO replay_*)"
                ),
            },
            Some(Refusal::Poisoned(why)) => format!(
                "NVMPOISONED writes to the NVM pool {path} failed ({why}); the write was not executed. \
                 Reads still work; check the device and restart the server"
            ),
            Some(Refusal::Corrupt(why)) => format!(
                "NVMCORRUPT the NVM pool {path} is damaged ({why}); the write was not executed. \
                 Reads serve the data before the damage; see NVM.CHECK, then NVM.REPAIR to drop the damaged tail"
            ),
            Some(Refusal::Starting) => "NVMLOADING redis-nvm is still restoring its pool".into(),
        }
    }
}
