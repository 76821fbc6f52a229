//! The one path by which effects reach the log: `Module::append`, called from inside the
//! command that produced them (a keyspace notification), so the reply can only leave
//! after it returns.
//!
//! Invariants (invariant 1 without exception):
//! - `append` returns only after the effects are durable (durability `always`), or
//!   written to the log and committed by the next sync (`everysec`).
//! - What a write logs is never bounded by the ring: a payload above `blob_threshold` is
//!   written to a blob in the heap first (`log::blob`), and an append that finds the ring
//!   full waits while the replayer frees it (a big transaction, a script). Neither fails
//!   while the key space can fold the log.
//! - If an executed write still cannot be made durable (a media error, a key space that
//!   stopped folding, a value the format cannot hold), nothing may tell the client it
//!   succeeded: with durability `always` the server exits before the reply can leave,
//!   as stock Redis does on an AOF write error with `appendfsync always`; with `everysec`
//!   (whose promise is a second of possible loss) the module is poisoned and refuses
//!   writes. Both say so loudly in the server log.

#![forbid(unsafe_code)]

use super::config::Durability;
use super::ffi;
use super::replayer;
use super::state::{Module, Refusal};
use crate::effect::{encode, encoded_len, kind_of, Effect};
use crate::keyspace::StoreError;
use crate::log::{BlobRef, BlobWriter, LogError, RecordRef, FLAG_BLOB};
use std::time::{Duration, Instant};

/// How long an append waits for a replayer that makes no progress before it gives up.
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(30);
/// Polling interval while waiting for the replayer.
const WAIT_POLL: Duration = Duration::from_micros(20);

/// Payloads above this go to a blob: at most 1 MiB, and at most 1/16 of the ring, so a
/// record always fits the reserve an admitted write finds free.
pub fn blob_threshold(ring_capacity: u64) -> u64 {
    (ring_capacity / 16).min(1 << 20)
}

impl Module {
    /// Appends the effects of one event for `db`, as records committed together, and
    /// makes them durable before returning (see the file comment for the failure case).
    pub fn append(&mut self, db: u32, effects: &[Effect]) {
        if effects.is_empty() {
            return;
        }
        if let Err(why) = self.try_append(db, effects) {
            self.durability_failure(&why);
        }
    }

    /// `append` that reports a failure instead of handling it (the import at start-up
    /// refuses writes instead: nothing has been acknowledged yet).
    pub fn try_append(&mut self, db: u32, effects: &[Effect]) -> Result<(), String> {
        let threshold = blob_threshold(self.pool.log().capacity());
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize_with(effects.len().max(scratch.len()), Vec::new);
        let mut kinds = Vec::with_capacity(effects.len());
        let mut blob_bytes = 0;
        let mut result = Ok(());
        for (effect, buf) in effects.iter().zip(scratch.iter_mut()) {
            buf.clear();
            let step = encoded_len(effect)
                .map_err(|e| format!("{}: {e}", effect.name()))
                .and_then(|len| {
                    if len > threshold {
                        let blob = self.write_blob(effect, len)?;
                        blob_bytes += len;
                        buf.extend_from_slice(&blob.encode());
                        Ok((kind_of(effect), FLAG_BLOB))
                    } else {
                        encode(effect, buf)
                            .map(|kind| (kind, 0))
                            .map_err(|e| e.to_string())
                    }
                });
            match step {
                Ok(k) => kinds.push(k),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let result = result.and_then(|()| {
            let records: Vec<RecordRef<'_>> = kinds
                .iter()
                .zip(scratch.iter())
                .map(|(&(kind, flags), payload)| RecordRef {
                    kind,
                    db,
                    flags,
                    payload,
                })
                .collect();
            // Bytes logged: the records, and the blobs they name.
            let bytes: u64 = records
                .iter()
                .map(|r| r.payload.len() as u64 + 24)
                .sum::<u64>()
                + blob_bytes;
            self.append_records(&records)?;
            self.stats.appended_records += records.len() as u64;
            self.stats.appended_bytes += bytes;
            Ok(())
        });
        self.scratch = scratch;
        result
    }

    /// Appends `records` to the ring, waiting for the replayer while the ring is full.
    fn append_records(&mut self, records: &[RecordRef<'_>]) -> Result<(), String> {
        let mut last_applied = replayer::applied();
        let mut stuck_since: Option<Instant> = None;
        let mut waited = false;
        loop {
            let log = self.pool.log_mut();
            let result = match self.settings.durability {
                Durability::Always => log.append(records),
                Durability::Everysec => log.append_deferred(records),
            };
            match result {
                Ok(_) => {
                    if self.settings.durability == Durability::Always {
                        replayer::publish_durable(self.pool.log().committed_end());
                    }
                    self.update_admission();
                    return Ok(());
                }
                Err(LogError::Full { needed, .. }) => {
                    let capacity = self.pool.log().capacity();
                    if needed > capacity {
                        return Err(format!(
                            "the write's records take {needed} bytes, more than the whole log ({capacity})"
                        ));
                    }
                    if !waited {
                        waited = true;
                        self.stats.log_full_waits += 1;
                    }
                    // The replayer folds only durable records: commit deferred ones first.
                    if self.settings.durability == Durability::Everysec {
                        self.pool.log_mut().sync().map_err(|e| e.to_string())?;
                        replayer::publish_durable(self.pool.log().committed_end());
                    }
                    if let Some(why) = replayer::stall_reason() {
                        return Err(format!(
                            "the log is full and the key space stopped folding it ({why})"
                        ));
                    }
                    let applied = replayer::applied();
                    if applied != last_applied {
                        last_applied = applied;
                        stuck_since = None;
                    }
                    if stuck_since.get_or_insert_with(Instant::now).elapsed() > NO_PROGRESS_LIMIT {
                        return Err(format!(
                            "the log is full and the replayer made no progress for {} s",
                            NO_PROGRESS_LIMIT.as_secs()
                        ));
                    }
                    self.pool.log_mut().advance_head(applied);
                    std::thread::sleep(WAIT_POLL);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Writes `effect` (`len` encoded bytes) to a new blob, durably.
    fn write_blob(&mut self, effect: &Effect, len: u64) -> Result<BlobRef, String> {
        let offset = self.alloc_blob(len)?;
        let mut w = BlobWriter::new(self.pool.media(), offset);
        encode(effect, &mut w).map_err(|e| e.to_string())?;
        let blob = w
            .finish()
            .map_err(|e| format!("writing a blob of {len} bytes: {e}"))?;
        self.stats.blob_records += 1;
        self.stats.blob_bytes += len;
        Ok(blob)
    }

    /// A heap block for a blob; when the heap is full, waits once for the replayer to
    /// fold the backlog (overwrites and deletes in it free space) before giving up.
    fn alloc_blob(&mut self, len: u64) -> Result<u64, String> {
        let shared = replayer::shared().ok_or("the key space is not open")?;
        let started = Instant::now();
        loop {
            let res = {
                let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
                let res = r.keyspace_mut().alloc_blob(len);
                if res.is_ok() {
                    replayer::publish_keyspace(&r);
                }
                res
            };
            match res {
                Ok(off) => return Ok(off),
                Err(StoreError::HeapFull { .. }) => {
                    let durable = self.pool.log().committed_end();
                    let folded = replayer::applied().pos >= durable.pos;
                    if folded
                        || replayer::stall_reason().is_some()
                        || started.elapsed() > NO_PROGRESS_LIMIT
                    {
                        return Err(format!(
                            "the key space has no room for a value of {len} bytes"
                        ));
                    }
                    std::thread::sleep(WAIT_POLL);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// An executed write could not be made durable (see the file comment).
    fn durability_failure(&mut self, why: &str) {
        self.stats.in_doubt_writes += 1;
        self.refuse(Refusal::Poisoned(format!(
            "a write that ran could not be made durable: {why}"
        )));
        match self.settings.durability {
            Durability::Always => {
                ffi::log_line(
                    "warning",
                    &format!(
                        "redis-nvm: FATAL: a write that ran could not be made durable ({why}). Exiting before \
                         its reply can leave, as Redis does on an AOF write error with appendfsync always; \
                         every write acknowledged before it is in the pool"
                    ),
                );
                std::process::exit(1);
            }
            Durability::Everysec => ffi::log_line(
                "warning",
                &format!(
                    "redis-nvm: a write could not be logged ({why}); with durability everysec it may be lost. \
                     Writes are refused from now on; restart the server"
                ),
            ),
        }
    }
}
