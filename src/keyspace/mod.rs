//! The NVM key space: every db's keys and values as persistent structures in the pool's
//! heap, kept current by folding log records into it in atomic batches.
//!
//! Shape (docs/format.md, "Key space"): the root names one key table per db; a key table
//! is an open-addressing hash table of key items; a key item holds its key, its absolute
//! expiry and either the string value inline or a pointer to a collection. Hashes, sets
//! and zsets are hash tables of member items; lists are ring deques of element items;
//! streams are their last `DUMP` plus a deque of the stream effects logged since. So a
//! point lookup works right after opening, and a field-level effect on a big collection
//! costs O(effect) (amortised: tables and deques double and halve).
//!
//! Invariants:
//! - Every change goes through the store's open batch; `apply_batch` commits the effects
//!   of a run of records together with the new applied lsn and log head, atomically.
//! - Items are immutable (a new value is a new item), except a key's expiry word.
//! - A table's slot array holds `cap` slots, `cap` a power of two, at most 3/4 used
//!   (live + tombstones); a deque holds `count <= cap` items from `aux` (its head).
//! - Nothing here knows Redis: the glue loads DRAM from `visit`, the replayer thread
//!   calls `apply_batch`.

#![forbid(unsafe_code)]

mod apply;
mod blocks;
mod dbs;
mod deque;
mod frozen;
pub mod layout;
mod reads;
mod store;
mod strings;
mod table;
mod walk;

pub use reads::{type_name, KeyMeta};
pub use walk::Walked;

pub use store::{
    read_journal, recover_journal, HeapStats, JournalArea, JournalOutcome, Snapshot, StoreError,
};

use crate::effect::model::{Dataset, Entry, ModelValue};
use crate::effect::{Effect, NO_EXPIRE};
use crate::log::{BlobRef, Cursor};
use crate::pmem::Media;
use crate::pool::{Superblock, JOURNAL_WORD_OFFSET, ROOT_OFFSET};
use apply::ApplyFail;
use layout::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use store::{corrupt, Store};

/// Where the key space lives in a pool.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub root: u64,
    pub journal: JournalArea,
    pub heap_start: u64,
    pub heap_end: u64,
}

impl Layout {
    pub fn of(sb: &Superblock) -> Layout {
        Layout {
            root: ROOT_OFFSET,
            journal: JournalArea {
                word: JOURNAL_WORD_OFFSET,
                offset: sb.journal_offset,
                size: sb.journal_size,
            },
            heap_start: sb.heap_offset,
            heap_end: sb.heap_offset + sb.heap_size,
        }
    }

    /// Offsets a journal entry may name: root words and heap words.
    pub fn journal_may_write(&self, off: u64) -> bool {
        off.is_multiple_of(8)
            && ((off >= self.root && off < self.root + ROOT_WORDS)
                || (off >= self.heap_start && off + 8 <= self.heap_end))
    }
}

/// A value as stored (streams: the last DUMP and the stream effects since).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Set(Vec<Vec<u8>>),
    Zset(Vec<(Vec<u8>, f64)>),
    Stream {
        dump: Option<Vec<u8>>,
        ops: Vec<Effect>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub value: StoredValue,
    pub expire_at_ms: i64,
}

/// Counters of the key space's life in this process.
#[derive(Debug, Clone, Default)]
pub struct ApplyStats {
    pub batches: u64,
    pub records: u64,
    /// Effects the state could not take (a type mismatch): skipped and counted.
    pub apply_errors: u64,
    pub last_apply_error: Option<String>,
}

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: u64,
    pub what: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub keys: u64,
    pub members: u64,
    pub blocks: u64,
    pub bytes_reachable: u64,
    pub problems: Vec<Problem>,
}

/// A collection header's words.
#[derive(Debug, Clone, Copy)]
struct Coll {
    off: u64,
    vtype: u8,
    count: u64,
    slots: u64,
    cap: u64,
    aux: u64,
    /// Streams: the member holding the DUMP (or 0); chunked strings: the length.
    extra: u64,
}

/// Result of probing a table.
struct Probe {
    /// Slot index and item of the match.
    found: Option<(u64, u64)>,
    /// Where an insert goes (first tombstone or the empty slot that ended the probe).
    insert_at: u64,
    insert_is_tombstone: bool,
}

pub struct KeySpace {
    store: Store,
    layout: Layout,
    stats: ApplyStats,
    /// Reused buffer for key comparisons.
    scratch: Vec<u8>,
}

impl KeySpace {
    /// Opens the key space of a pool whose journal has been recovered
    /// (`Pool::open_*` does it), and rebuilds the free lists by walking what the key
    /// space reaches and the blobs of the log's live records (`live_blobs`), which the
    /// key space will own once it folds them. A damaged structure is an error naming its
    /// offset.
    pub fn open(
        media: Arc<dyn Media>,
        layout: Layout,
        live_blobs: &[BlobRef],
    ) -> Result<KeySpace, StoreError> {
        let mut ks = KeySpace::open_unwalked(media, layout, live_blobs)?;
        // Every item checksum is verified: damaged data is refused, never loaded.
        let report = ks.walk(true, Some(live_blobs))?;
        if let Some(p) = report.problems.first() {
            return Err(corrupt(p.offset, p.what.clone()));
        }
        Ok(ks)
    }

    /// The log position after the last folded record (the log's head).
    pub fn applied(&self) -> Result<Cursor, StoreError> {
        let lsn = self.store.read_word(self.layout.root + ROOT_APPLIED_LSN)?;
        let pos = self.store.read_word(self.layout.root + ROOT_LOG_HEAD)?;
        Ok(Cursor { pos, lsn: lsn + 1 })
    }

    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    pub fn heap_stats(&self) -> HeapStats {
        self.store.stats()
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The pool grew: the heap ends at `heap_end` now (never lower), the new space free
    /// above the top.
    pub fn grow_heap(&mut self, heap_end: u64) {
        if heap_end > self.layout.heap_end {
            self.layout.heap_end = heap_end;
            self.store.grow_heap(heap_end);
        }
    }

    /// Keys in every db.
    pub fn key_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for (_, t) in self.dbs_with_tables()? {
            n += self.coll(t)?.count;
        }
        Ok(n)
    }

    /// Allocates a heap block for a log blob of `len` bytes, outside any batch: the
    /// caller writes it, makes it durable and appends the record naming it; the batch
    /// that folds that record frees it (see `log::blob`).
    pub fn alloc_blob(&mut self, len: u64) -> Result<u64, StoreError> {
        self.store.alloc_detached(len)
    }

    /// Folds `records` (db, effect) into the key space as one atomic batch that ends at
    /// log position `next` (so the log's head moves there), freeing the `blobs` those
    /// records came from. An effect the state cannot take is counted and skipped; any
    /// other error aborts the whole batch.
    pub fn apply_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u32, &'a Effect)>,
        blobs: &[BlobRef],
        next: Cursor,
    ) -> Result<(), StoreError> {
        let result = self.apply_batch_inner(records, blobs, next);
        if result.is_err() {
            self.store.abort();
        }
        result
    }

    fn apply_batch_inner<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u32, &'a Effect)>,
        blobs: &[BlobRef],
        next: Cursor,
    ) -> Result<(), StoreError> {
        for b in blobs {
            self.store.free(b.offset, b.len);
        }
        let mut n = 0;
        // Counted only once the batch commits: an aborted batch is retried (smaller),
        // and its skipped effects would otherwise count twice.
        let mut skipped = 0;
        let mut last_skip = None;
        for (db, effect) in records {
            n += 1;
            match self.apply(db, effect) {
                Ok(()) => {}
                Err(ApplyFail::Mismatch(why)) => {
                    skipped += 1;
                    last_skip = Some(why);
                }
                Err(ApplyFail::Store(e)) => return Err(e),
            }
        }
        let root = self.layout.root;
        self.store
            .write_word(root + ROOT_APPLIED_LSN, next.lsn.saturating_sub(1))?;
        self.store.write_word(root + ROOT_LOG_HEAD, next.pos)?;
        self.store.commit()?;
        self.stats.batches += 1;
        self.stats.records += n;
        self.stats.apply_errors += skipped;
        if last_skip.is_some() {
            self.stats.last_apply_error = last_skip;
        }
        Ok(())
    }

    /// Whether the open batch has used enough of the journal that it should commit
    /// before taking another record.
    pub fn batch_is_full(&self) -> bool {
        self.store.overlay_len() * 2 >= self.store.journal_capacity()
    }

    /// The function libraries' dump, if one was folded.
    pub fn functions(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.read_word(self.layout.root + ROOT_FUNCTIONS)? {
            0 => Ok(None),
            item => Ok(Some(self.item_parts(item, false)?.1)),
        }
    }

    /// Reads the stored entry of a key.
    pub fn get(&mut self, db: u32, key: &[u8]) -> Result<Option<StoredEntry>, StoreError> {
        match self.find_key(db, key)? {
            None => Ok(None),
            Some((_, _, item)) => self.entry_of(item, false).map(|(_, e)| Some(e)),
        }
    }

    /// Calls `f(db, key, entry)` for every key, db by db (table order within a db).
    pub fn visit(
        &self,
        mut f: impl FnMut(u32, &[u8], StoredEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for (db, t) in self.dbs_with_tables()? {
            let c = self.coll(t)?;
            for item in self.items(&c)? {
                let (key, entry) = self.entry_of(item, false)?;
                f(db, &key, entry)?;
            }
        }
        Ok(())
    }

    /// The whole key space as a reference-model dataset (tests, tools).
    pub fn to_dataset(&self) -> Result<Dataset, StoreError> {
        let mut ds = Dataset {
            functions: self.functions()?,
            ..Dataset::default()
        };
        self.visit(|db, key, e| {
            let value = match e.value {
                StoredValue::String(s) => ModelValue::String(s),
                StoredValue::List(l) => ModelValue::List(l.into_iter().collect()),
                StoredValue::Hash(h) => ModelValue::Hash(h.into_iter().collect()),
                StoredValue::Set(s) => ModelValue::Set(s.into_iter().collect()),
                StoredValue::Zset(z) => {
                    ModelValue::Zset(z.into_iter().map(|(m, s)| (m, s.to_bits())).collect())
                }
                StoredValue::Stream { dump, ops } => {
                    let mut tmp = Dataset::default();
                    tmp.dbs.entry(0).or_default().insert(
                        key.to_vec(),
                        Entry {
                            value: ModelValue::Stream {
                                dump,
                                entries: BTreeMap::new(),
                                group_ops: Vec::new(),
                            },
                            expire_at_ms: NO_EXPIRE,
                        },
                    );
                    for op in &ops {
                        tmp.apply(0, op)
                            .map_err(|e| corrupt(0, format!("stream effect: {}", e.0)))?;
                    }
                    match tmp.dbs.get_mut(&0).and_then(|d| d.remove(key)) {
                        Some(entry) => entry.value,
                        None => return Ok(()),
                    }
                }
            };
            ds.dbs.entry(db).or_default().insert(
                key.to_vec(),
                Entry {
                    value,
                    expire_at_ms: e.expire_at_ms,
                },
            );
            Ok(())
        })?;
        Ok(ds)
    }
}
