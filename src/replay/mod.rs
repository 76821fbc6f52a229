//! The replayer: folds durable log records into the key space, batch by batch.
//!
//! One `step` reads the records between the key space's applied position and the log's
//! durable end (never past it: the key space must never get ahead of what a crash
//! keeps), decodes them, and applies them as one atomic key-space batch that also moves
//! the applied lsn and the log head. Only after that batch is committed may the log's
//! owner reuse the space (`Log::advance_head` with the returned cursor).
//!
//! Knows nothing of Redis or threads: the glue runs `step` on a module thread; tests and
//! tools run it inline.

#![forbid(unsafe_code)]

use crate::effect::{decode, Effect};
use crate::keyspace::{KeySpace, StoreError};
use crate::log::{BlobRef, Cursor, LogError, LogReader};
use std::fmt;

/// Why a step could not fold records.
#[derive(Debug)]
pub enum ReplayError {
    /// A record could not be read (damage or media error): the replayer stops there.
    Log(LogError),
    /// A record's payload is not an effect this build knows.
    Undecodable { lsn: u64, reason: String },
    /// The key space refused the batch (full, damaged, media error).
    KeySpace(StoreError),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Log(e) => write!(f, "reading the log: {e}"),
            ReplayError::Undecodable { lsn, reason } => {
                write!(f, "log record lsn {lsn} is not a known effect: {reason}")
            }
            ReplayError::KeySpace(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_payload_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_records: 4096,
            max_payload_bytes: 8 << 20,
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub records: u64,
    /// The new applied position (the log head may move here).
    pub next: Cursor,
}

pub struct Replayer {
    keyspace: KeySpace,
    reader: LogReader,
    next: Cursor,
    limits: BatchLimits,
    /// Decoded records of the batch being built (reused): db, effect, the blob it came
    /// from, and the log position after it.
    batch: Vec<(u32, Effect, Option<BlobRef>, Cursor)>,
}

impl Replayer {
    pub fn new(keyspace: KeySpace, reader: LogReader) -> Result<Replayer, StoreError> {
        let next = keyspace.applied()?;
        let journal = keyspace.layout().journal.max_entries() as usize;
        // About six changed words per record leaves the journal room to spare.
        let limits = BatchLimits {
            max_records: (journal / 12).clamp(16, 4096),
            ..BatchLimits::default()
        };
        Ok(Replayer {
            keyspace,
            reader,
            next,
            limits,
            batch: Vec::new(),
        })
    }

    pub fn keyspace(&self) -> &KeySpace {
        &self.keyspace
    }

    pub fn keyspace_mut(&mut self) -> &mut KeySpace {
        &mut self.keyspace
    }

    /// The position after the last folded record.
    pub fn applied(&self) -> Cursor {
        self.next
    }

    /// Folds the records before `durable_end` (at most one batch); `records == 0` when
    /// there was nothing to fold.
    pub fn step(&mut self, durable_end: Cursor) -> Result<Step, ReplayError> {
        let mut cursor = self.next;
        let mut bytes = 0usize;
        self.batch.clear();
        while cursor.pos < durable_end.pos
            && self.batch.len() < self.limits.max_records
            && bytes < self.limits.max_payload_bytes
        {
            let (record, after) = self
                .reader
                .read(cursor, durable_end.pos)
                .map_err(ReplayError::Log)?;
            let effect =
                decode(record.kind, &record.payload).map_err(|e| ReplayError::Undecodable {
                    lsn: record.lsn,
                    reason: e.to_string(),
                })?;
            bytes += record.payload.len();
            self.batch.push((record.db, effect, record.blob, after));
            cursor = after;
        }
        if self.batch.is_empty() {
            return Ok(Step {
                records: 0,
                next: self.next,
            });
        }
        let mut take = self.batch.len();
        loop {
            // A batch that changes more words than the journal holds is retried smaller.
            let end = self.batch[take - 1].3;
            let records = self.batch[..take].iter().map(|(db, e, _, _)| (*db, e));
            let blobs: Vec<BlobRef> = self.batch[..take].iter().filter_map(|r| r.2).collect();
            match self.keyspace.apply_batch(records, &blobs, end) {
                Ok(()) => {
                    self.next = end;
                    return Ok(Step {
                        records: take as u64,
                        next: end,
                    });
                }
                Err(StoreError::JournalFull { .. }) if take > 1 => take /= 2,
                Err(e) => return Err(ReplayError::KeySpace(e)),
            }
        }
    }

    /// Folds everything before `durable_end`; returns the records folded.
    pub fn drain(&mut self, durable_end: Cursor) -> Result<u64, ReplayError> {
        let mut n = 0;
        loop {
            let s = self.step(durable_end)?;
            if s.records == 0 {
                return Ok(n);
            }
            n += s.records;
        }
    }

    /// The pool grew: the key space's heap, and where blobs may be, end at `heap_end`.
    pub fn grow_heap(&mut self, heap_end: u64) {
        self.keyspace.grow_heap(heap_end);
        self.reader.grow_blob_area(heap_end);
    }

    /// Gives the key space back (e.g. to a checker) .
    pub fn into_keyspace(self) -> KeySpace {
        self.keyspace
    }
}
