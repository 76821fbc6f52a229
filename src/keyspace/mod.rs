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

pub mod layout;
mod store;

pub use store::{
    read_journal, recover_journal, HeapStats, JournalArea, JournalOutcome, StoreError,
};

use crate::effect::model::{trim_range, Dataset, Entry, ModelValue};
use crate::effect::{decode, encode, Effect, End, Value, NO_EXPIRE};
use crate::log::Cursor;
use crate::pmem::Media;
use crate::pool::{Superblock, JOURNAL_WORD_OFFSET, ROOT_OFFSET};
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
            && ((off >= self.root && off < self.root + ROOT_DBS + MAX_DBS * 8)
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
    dump: u64,
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
    /// space reaches. A damaged structure is an error naming its offset.
    pub fn open(media: Arc<dyn Media>, layout: Layout) -> Result<KeySpace, StoreError> {
        let top = media.load_u64(layout.root + ROOT_HEAP_TOP)?;
        if top != 0
            && (top < layout.heap_start || top > layout.heap_end || !top.is_multiple_of(GRAIN))
        {
            return Err(corrupt(
                layout.root + ROOT_HEAP_TOP,
                format!("heap top {top} outside the heap"),
            ));
        }
        let store = Store::new(
            media,
            layout.journal,
            layout.heap_start,
            layout.heap_end,
            layout.root + ROOT_HEAP_TOP,
            top,
        );
        let mut ks = KeySpace {
            store,
            layout,
            stats: ApplyStats::default(),
            scratch: Vec::new(),
        };
        // Every item checksum is verified: damaged data is refused, never loaded.
        let report = ks.walk(true)?;
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

    /// Keys in every db.
    pub fn key_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for db in 0..MAX_DBS {
            if let Some(t) = self.db_table(db as u8)? {
                n += self.coll(t)?.count;
            }
        }
        Ok(n)
    }

    /// Folds `records` (db, effect) into the key space as one atomic batch that ends at
    /// log position `next` (so the log's head moves there). An effect the state cannot
    /// take is counted and skipped; any other error aborts the whole batch.
    pub fn apply_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u8, &'a Effect)>,
        next: Cursor,
    ) -> Result<(), StoreError> {
        let result = self.apply_batch_inner(records, next);
        if result.is_err() {
            self.store.abort();
        }
        result
    }

    fn apply_batch_inner<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u8, &'a Effect)>,
        next: Cursor,
    ) -> Result<(), StoreError> {
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

    // ----- reading -----

    fn root_db(&self, db: u8) -> u64 {
        self.layout.root + ROOT_DBS + u64::from(db) * 8
    }

    fn db_table(&self, db: u8) -> Result<Option<u64>, StoreError> {
        let t = self.store.read_word(self.root_db(db))?;
        Ok((t != 0).then_some(t))
    }

    fn header_at(&self, off: u64) -> Result<BlockHeader, StoreError> {
        let (start, end) = self.store.heap_range();
        if off < start || off.saturating_add(8) > end || !off.is_multiple_of(GRAIN) {
            return Err(corrupt(off, "pointer outside the heap"));
        }
        let h = parse_header(self.store.read_word(off)?);
        if h.len < GRAIN || off.saturating_add(h.len) > end || h.reserved != 0 {
            return Err(corrupt(off, format!("bad block header (length {})", h.len)));
        }
        Ok(h)
    }

    fn coll(&self, off: u64) -> Result<Coll, StoreError> {
        let h = self.header_at(off)?;
        if h.kind != KIND_COLL || h.len != COLL_LEN {
            return Err(corrupt(off, "expected a collection header"));
        }
        let w = |i| self.store.read_word(off + i);
        let c = Coll {
            off,
            vtype: h.vtype,
            count: w(COLL_COUNT)?,
            slots: w(COLL_SLOTS)?,
            cap: w(COLL_CAP)?,
            aux: w(COLL_AUX)?,
            dump: w(COLL_DUMP)?,
        };
        let slot = slot_size(c.vtype);
        let (start, end) = self.store.heap_range();
        let bad_cap = !c.cap.is_power_of_two()
            || c.count > c.cap
            || c.slots < start
            || c.cap
                .checked_mul(slot)
                .and_then(|n| c.slots.checked_add(n))
                .is_none_or(|e| e > end);
        if bad_cap {
            return Err(corrupt(
                off,
                format!(
                    "collection with {} items in {} slots at {}",
                    c.count, c.cap, c.slots
                ),
            ));
        }
        Ok(c)
    }

    /// The comparable bytes of a table's item (key of a key item, `a` of a member).
    fn item_name_into(&self, item: u64, is_key: bool, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let h = self.header_at(item)?;
        let want = if is_key { KIND_KEY } else { KIND_MEMBER };
        if h.kind != want {
            return Err(corrupt(
                item,
                "table slot points at the wrong kind of block",
            ));
        }
        let lens = self.store.read_word(item + 8)?;
        let a = lens & 0xffff_ffff;
        let b = lens >> 32;
        let data = if is_key { KEY_DATA } else { MEMBER_DATA };
        if data + a + b > h.len {
            return Err(corrupt(item, "item lengths exceed its block"));
        }
        buf.resize(a as usize, 0);
        self.store.read_bytes(item + data, buf)
    }

    /// Reads an item's two parts (key/string or a/b) and checks its crc if `verify`.
    fn item_parts(
        &self,
        item: u64,
        verify: bool,
    ) -> Result<(BlockHeader, Vec<u8>, Vec<u8>), StoreError> {
        let h = self.header_at(item)?;
        let lens_word = self.store.read_word(item + 8)?;
        let a = lens_word & 0xffff_ffff;
        let b = lens_word >> 32;
        let data = match h.kind {
            KIND_KEY => KEY_DATA,
            KIND_MEMBER => MEMBER_DATA,
            _ => return Err(corrupt(item, "expected a key or member item")),
        };
        if data + a + b > h.len {
            return Err(corrupt(item, "item lengths exceed its block"));
        }
        let mut bytes = vec![0u8; (a + b) as usize];
        self.store.read_bytes(item + data, &mut bytes)?;
        let second = bytes.split_off(a as usize);
        if verify {
            let lens = lens_word.to_le_bytes();
            let (stored, computed) = if h.kind == KIND_KEY {
                let coll = self.store.read_word(item + KEY_COLL)?;
                (
                    self.store.read_word(item + KEY_CRC)? & 0xffff_ffff,
                    key_crc(&lens, coll, &bytes, &second),
                )
            } else {
                (
                    self.store.read_word(item + MEMBER_CRC)? & 0xffff_ffff,
                    member_crc(&lens, &bytes, &second),
                )
            };
            if stored != u64::from(computed) {
                return Err(corrupt(item, "item checksum mismatch"));
            }
        }
        Ok((h, bytes, second))
    }

    fn probe(&mut self, c: &Coll, h: u64, name: &[u8]) -> Result<Probe, StoreError> {
        let is_key = c.vtype == VT_KEYS;
        let mask = c.cap - 1;
        let mut i = h & mask;
        let mut tomb = None;
        let mut buf = std::mem::take(&mut self.scratch);
        for _ in 0..c.cap {
            let slot = c.slots + i * TABLE_SLOT;
            let item = self.store.read_word(slot + 8)?;
            if item == EMPTY {
                self.scratch = buf;
                return Ok(Probe {
                    found: None,
                    insert_at: tomb.unwrap_or(i),
                    insert_is_tombstone: tomb.is_some(),
                });
            }
            if item == TOMBSTONE {
                tomb.get_or_insert(i);
            } else if self.store.read_word(slot)? == h {
                self.item_name_into(item, is_key, &mut buf)?;
                if buf == name {
                    self.scratch = buf;
                    return Ok(Probe {
                        found: Some((i, item)),
                        insert_at: i,
                        insert_is_tombstone: false,
                    });
                }
            }
            i = (i + 1) & mask;
        }
        self.scratch = buf;
        match tomb {
            Some(t) => Ok(Probe {
                found: None,
                insert_at: t,
                insert_is_tombstone: true,
            }),
            None => Err(corrupt(c.off, "hash table has no free slot")),
        }
    }

    /// The key item of `key` in `db`.
    fn find_key(&mut self, db: u8, key: &[u8]) -> Result<Option<(Coll, u64, u64)>, StoreError> {
        let Some(t) = self.db_table(db)? else {
            return Ok(None);
        };
        let c = self.coll(t)?;
        let c = self.relieve(c)?;
        let p = self.probe(&c, hash(key), key)?;
        Ok(p.found.map(|(i, item)| (c, i, item)))
    }

    /// Reads the stored entry of a key.
    pub fn get(&mut self, db: u8, key: &[u8]) -> Result<Option<StoredEntry>, StoreError> {
        match self.find_key(db, key)? {
            None => Ok(None),
            Some((_, _, item)) => self.entry_of(item, false).map(|(_, e)| Some(e)),
        }
    }

    /// A key item's key and entry.
    fn entry_of(&self, item: u64, verify: bool) -> Result<(Vec<u8>, StoredEntry), StoreError> {
        let (h, key, string) = self.item_parts(item, verify)?;
        let expire_at_ms = self.store.read_word(item + KEY_EXPIRE)? as i64;
        let value = if h.vtype == VT_STRING {
            StoredValue::String(string)
        } else {
            let c = self.coll(self.store.read_word(item + KEY_COLL)?)?;
            if c.vtype != h.vtype {
                return Err(corrupt(c.off, "collection type differs from its key's"));
            }
            let mut value = self.collection_value(&c, verify)?;
            if let StoredValue::Stream { ops, .. } = &mut value {
                // Ops keep the key they were logged under; the key may have been renamed.
                for op in ops.iter_mut() {
                    if let Effect::StreamAdd { key: k, .. } | Effect::StreamTrim { key: k, .. } = op
                    {
                        k.clone_from(&key);
                    }
                }
            }
            value
        };
        Ok((
            key,
            StoredEntry {
                value,
                expire_at_ms,
            },
        ))
    }

    /// The items of a collection, in order for deques.
    fn items(&self, c: &Coll) -> Result<Vec<u64>, StoreError> {
        Ok(self.entries(c)?.into_iter().map(|(_, item)| item).collect())
    }

    /// (slot hash, item) of a table's entries, or (0, item) of a deque's in order.
    fn entries(&self, c: &Coll) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = Vec::with_capacity(c.count as usize);
        if slot_size(c.vtype) == DEQUE_SLOT {
            for i in 0..c.count {
                let idx = (c.aux + i) & (c.cap - 1);
                out.push((0, self.store.read_word(c.slots + idx * DEQUE_SLOT)?));
            }
        } else {
            for i in 0..c.cap {
                let item = self.store.read_word(c.slots + i * TABLE_SLOT + 8)?;
                if item > TOMBSTONE {
                    out.push((self.store.read_word(c.slots + i * TABLE_SLOT)?, item));
                }
            }
            if out.len() as u64 != c.count {
                return Err(corrupt(
                    c.off,
                    format!("table counts {} items but holds {}", c.count, out.len()),
                ));
            }
            // Slot order is hash order, i.e. random over the heap; whoever reads every
            // item (open, load, free) goes ~3x faster in address order, where the
            // hardware prefetcher can follow.
            out.sort_unstable_by_key(|&(_, item)| item);
        }
        Ok(out)
    }

    fn collection_value(&self, c: &Coll, verify: bool) -> Result<StoredValue, StoreError> {
        let items = self.items(c)?;
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            let (h, a, b) = self.item_parts(item, verify)?;
            if h.kind != KIND_MEMBER {
                return Err(corrupt(item, "collection slot points at a non-member"));
            }
            parts.push((a, b));
        }
        Ok(match c.vtype {
            VT_LIST => StoredValue::List(parts.into_iter().map(|(a, _)| a).collect()),
            VT_HASH => StoredValue::Hash(parts),
            VT_SET => StoredValue::Set(parts.into_iter().map(|(a, _)| a).collect()),
            VT_ZSET => StoredValue::Zset(
                parts
                    .into_iter()
                    .map(|(a, b)| {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
                        (a, f64::from_bits(u64::from_le_bytes(w)))
                    })
                    .collect(),
            ),
            VT_STREAM => {
                let dump = match c.dump {
                    0 => None,
                    d => Some(self.item_parts(d, verify)?.1),
                };
                let mut ops = Vec::with_capacity(parts.len());
                for (a, _) in parts {
                    let (kind, payload) = a.split_first().unwrap_or((&0, &[]));
                    ops.push(
                        decode(*kind, payload).map_err(|e| {
                            corrupt(c.off, format!("undecodable stream effect: {e}"))
                        })?,
                    );
                }
                StoredValue::Stream { dump, ops }
            }
            other => return Err(corrupt(c.off, format!("unknown value type {other}"))),
        })
    }

    /// Calls `f(db, key, entry)` for every key, db by db (table order within a db).
    pub fn visit(
        &self,
        mut f: impl FnMut(u8, &[u8], StoredEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for db in 0..MAX_DBS {
            let db = db as u8;
            let Some(t) = self.db_table(db)? else {
                continue;
            };
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
        let mut ds = Dataset::default();
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

    /// Walks everything the key space reaches, checking structure (and item checksums
    /// with `verify`); rebuilds the free lists unless problems were found.
    pub fn check(&mut self, verify: bool) -> Result<CheckReport, StoreError> {
        self.walk(verify)
    }

    fn walk(&mut self, verify: bool) -> Result<CheckReport, StoreError> {
        let (start, _) = self.store.heap_range();
        let top = self.store.top();
        let grains = ((top - start) / GRAIN) as usize;
        let mut marks = vec![0u64; grains.div_ceil(64)];
        let mut report = CheckReport::default();
        let mut mark = |off: u64, len: u64, report: &mut CheckReport| -> bool {
            if off < start
                || off.checked_add(len).is_none_or(|e| e > top)
                || !off.is_multiple_of(GRAIN)
                || !len.is_multiple_of(GRAIN)
            {
                report.problems.push(Problem {
                    offset: off,
                    what: format!("block of {len} bytes outside the used heap"),
                });
                return false;
            }
            report.blocks += 1;
            report.bytes_reachable += len;
            let first = ((off - start) / GRAIN) as usize;
            if !mark_grains(&mut marks, first, (len / GRAIN) as usize) {
                report.problems.push(Problem {
                    offset: off,
                    what: "block reached twice (overlapping or shared)".into(),
                });
                return false;
            }
            true
        };
        for db in 0..MAX_DBS {
            let Some(t) = self.db_table(db as u8)? else {
                continue;
            };
            let res = self.walk_coll(t, VT_KEYS, verify, &mut report, &mut mark);
            if let Err(e) = res {
                report.problems.push(problem_of(e)?);
            }
        }
        if report.problems.is_empty() {
            let runs = marked_runs(&marks, grains)
                .map(|(g, n)| (start + g as u64 * GRAIN, n as u64 * GRAIN))
                .collect::<Vec<_>>();
            self.store.rebuild_free(runs.into_iter());
        }
        Ok(report)
    }

    fn walk_coll(
        &self,
        off: u64,
        expect: u8,
        verify: bool,
        report: &mut CheckReport,
        mark: &mut impl FnMut(u64, u64, &mut CheckReport) -> bool,
    ) -> Result<(), StoreError> {
        let c = self.coll(off)?;
        if c.vtype != expect {
            return Err(corrupt(
                off,
                format!("collection of type {} where {expect} belongs", c.vtype),
            ));
        }
        if !mark(off, COLL_LEN, report) || !mark(c.slots, c.cap * slot_size(c.vtype), report) {
            return Ok(());
        }
        if c.dump != 0 {
            let h = self.header_at(c.dump)?;
            if verify {
                self.item_parts(c.dump, true)?;
            }
            mark(c.dump, h.len, report);
        }
        let is_table = slot_size(c.vtype) == TABLE_SLOT;
        for (slot_hash, item) in self.entries(&c)? {
            let (h, a, _) = self.item_parts(item, verify)?;
            if is_table && slot_hash != hash(&a) {
                // Otherwise lookups miss the item.
                report.problems.push(Problem {
                    offset: item,
                    what: "the table slot's hash does not match its item".into(),
                });
            }
            if !mark(item, h.len, report) {
                continue;
            }
            if expect == VT_KEYS {
                report.keys += 1;
                if h.kind != KIND_KEY {
                    return Err(corrupt(item, "key table slot points at a non-key"));
                }
                if h.vtype != VT_STRING {
                    let coll = self.store.read_word(item + KEY_COLL)?;
                    self.walk_coll(coll, h.vtype, verify, report, mark)?;
                }
            } else {
                report.members += 1;
            }
        }
        Ok(())
    }
}

/// The smaller slot array a table or deque moves to once it is under 1/8 full (one
/// policy for both, so that neither grows and shrinks on the same few entries).
fn shrunk_capacity(c: &Coll) -> Option<u64> {
    (c.cap > 8 && c.count * 8 < c.cap).then(|| capacity_for(c.count * 2))
}

/// Sets bits `first..first + count` of `marks`, a word at a time; false (and nothing
/// set) if any of them was set already.
fn mark_grains(marks: &mut [u64], first: usize, count: usize) -> bool {
    let spans = || {
        let mut g = first;
        let end = first + count;
        std::iter::from_fn(move || {
            if g >= end {
                return None;
            }
            let (w, b) = (g / 64, g % 64);
            let n = (64 - b).min(end - g);
            g += n;
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            Some((w, mask))
        })
    };
    if spans().any(|(w, mask)| marks[w] & mask != 0) {
        return false;
    }
    spans().for_each(|(w, mask)| marks[w] |= mask);
    true
}

/// The runs (first grain, grains) of set bits among the first `grains` bits of `marks`,
/// skipping whole words that are all set or all clear.
fn marked_runs(marks: &[u64], grains: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_set = move |g: usize| g < grains && marks[g / 64] & (1 << (g % 64)) != 0;
    // The first grain at or after `g` whose bit is `set`, or `grains`.
    let next = move |mut g: usize, set: bool| {
        while g < grains {
            let word = if set { marks[g / 64] } else { !marks[g / 64] };
            if g.is_multiple_of(64) && word == 0 {
                g += 64;
            } else if is_set(g) == set {
                return g;
            } else {
                g += 1;
            }
        }
        grains
    };
    let mut g = 0;
    std::iter::from_fn(move || {
        let first = next(g, true);
        if first >= grains {
            return None;
        }
        g = next(first, false);
        Some((first, g - first))
    })
}

fn problem_of(e: StoreError) -> Result<Problem, StoreError> {
    match e {
        StoreError::Corrupt { offset, reason } => Ok(Problem {
            offset,
            what: reason,
        }),
        other => Err(other),
    }
}

/// Why one effect was not applied.
enum ApplyFail {
    /// The state cannot take it (wrong type): skipped.
    Mismatch(String),
    Store(StoreError),
}

impl From<StoreError> for ApplyFail {
    fn from(e: StoreError) -> Self {
        ApplyFail::Store(e)
    }
}

fn mismatch(key: &[u8], want: &str) -> ApplyFail {
    ApplyFail::Mismatch(format!(
        "key {:?} is not a {want}",
        String::from_utf8_lossy(key)
    ))
}

// ----- applying effects -----

impl KeySpace {
    fn apply(&mut self, db: u8, effect: &Effect) -> Result<(), ApplyFail> {
        match effect {
            Effect::Put {
                key,
                value,
                expire_at_ms,
            } => {
                let item = self.new_value_item(key, value, *expire_at_ms)?;
                self.upsert_key(db, key, item, true)?;
            }
            Effect::Delete { key } => self.delete_key(db, key, true)?,
            Effect::ExpireAt { key, at_ms } => self.set_expire(db, key, *at_ms)?,
            Effect::Persist { key } => self.set_expire(db, key, NO_EXPIRE)?,
            Effect::IncrBy { key, by } => {
                let (current, expire) = self.string_number(db, key)?;
                let n = std::str::from_utf8(&current)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                let item =
                    self.new_string_item(key, n.wrapping_add(*by).to_string().as_bytes(), expire)?;
                self.upsert_key(db, key, item, true)?;
            }
            Effect::IncrByFloat { key, by } => {
                // Approximates the server's long-double arithmetic with f64 (the write
                // path logs INCRBYFLOAT as the resulting string instead).
                let (current, expire) = self.string_number(db, key)?;
                let parse = |b: &[u8]| {
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                let v = format!("{}", parse(&current) + parse(by));
                let item = self.new_string_item(key, v.as_bytes(), expire)?;
                self.upsert_key(db, key, item, true)?;
            }
            Effect::Rename { from, to } => {
                if from == to {
                    return Ok(());
                }
                let Some((_, _, item)) = self.find_key(db, from)? else {
                    return Ok(());
                };
                let h = self.header_at(item)?;
                let (_, _, string) = self.item_parts(item, false)?;
                let expire = self.store.read_word(item + KEY_EXPIRE)? as i64;
                let coll = self.store.read_word(item + KEY_COLL)?;
                let bytes = encode_key(h.vtype, to, &string, expire, coll);
                let new_item = self.store.alloc(bytes.len() as u64)?;
                self.store.write_new(new_item, &bytes)?;
                // The collection moves with the new key item: free only the old item.
                self.delete_key(db, from, false)?;
                self.upsert_key(db, to, new_item, true)?;
            }
            Effect::Move { key, to_db } => {
                if *to_db == db {
                    return Ok(());
                }
                let Some((c, i, item)) = self.find_key(db, key)? else {
                    return Ok(());
                };
                self.table_remove_at(&c, i)?;
                self.upsert_key(*to_db, key, item, true)?;
            }
            Effect::HashSet { key, pairs } => {
                let c = self.collection_for_write(db, key, VT_HASH)?;
                let mut c = c;
                for (f, v) in pairs {
                    let bytes = encode_member(f, v);
                    let m = self.new_block(&bytes)?;
                    c = self.table_upsert(c, f, m)?;
                }
            }
            Effect::SetAdd { key, members } => {
                let mut c = self.collection_for_write(db, key, VT_SET)?;
                for m in members {
                    let p = self.probe(&c, hash(m), m)?;
                    if p.found.is_none() {
                        let item = self.new_block(&encode_member(m, &[]))?;
                        c = self.table_upsert(c, m, item)?;
                    }
                }
            }
            Effect::ZsetAdd { key, pairs } => {
                let mut c = self.collection_for_write(db, key, VT_ZSET)?;
                for (m, s) in pairs {
                    let item = self.new_block(&encode_member(m, &s.to_bits().to_le_bytes()))?;
                    c = self.table_upsert(c, m, item)?;
                }
            }
            Effect::HashDel { key, fields: names }
            | Effect::SetRem {
                key,
                members: names,
            }
            | Effect::ZsetRem {
                key,
                members: names,
            } => {
                let want = match effect {
                    Effect::HashDel { .. } => VT_HASH,
                    Effect::SetRem { .. } => VT_SET,
                    _ => VT_ZSET,
                };
                let Some(mut c) = self.existing_collection(db, key, want)? else {
                    return Ok(());
                };
                for n in names {
                    c = self.table_delete(c, n)?;
                }
                self.drop_if_empty(db, key, &c)?;
            }
            Effect::ZsetPop { key, max, count } => {
                let Some(mut c) = self.existing_collection(db, key, VT_ZSET)? else {
                    return Ok(());
                };
                let value = self.collection_value(&c, false)?;
                if let StoredValue::Zset(mut z) = value {
                    z.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                    if *max {
                        z.reverse();
                    }
                    for (m, _) in z
                        .into_iter()
                        .take(usize::try_from(*count).unwrap_or(usize::MAX))
                    {
                        c = self.table_delete(c, &m)?;
                    }
                }
                self.drop_if_empty(db, key, &c)?;
            }
            Effect::ListPush { key, end, elements } => {
                let mut c = self.collection_for_write(db, key, VT_LIST)?;
                for e in elements {
                    let item = self.new_block(&encode_member(e, &[]))?;
                    c = self.deque_push(c, *end, item)?;
                }
            }
            Effect::ListPop { key, end, count } => {
                let Some(mut c) = self.existing_collection(db, key, VT_LIST)? else {
                    return Ok(());
                };
                let n = (*count).min(c.count);
                c = self.deque_pop(c, *end, n)?;
                self.drop_if_empty(db, key, &c)?;
            }
            Effect::ListTrim { key, start, stop } => {
                let Some(mut c) = self.existing_collection(db, key, VT_LIST)? else {
                    return Ok(());
                };
                let len = c.count;
                let (from, to) =
                    trim_range(usize::try_from(len).unwrap_or(usize::MAX), *start, *stop);
                c = self.deque_pop(c, End::Tail, len.saturating_sub(to as u64))?;
                c = self.deque_pop(c, End::Head, from as u64)?;
                self.drop_if_empty(db, key, &c)?;
            }
            Effect::StreamAdd { key, .. } => {
                let c = self.collection_for_write(db, key, VT_STREAM)?;
                self.stream_op(c, effect)?;
            }
            Effect::StreamTrim { key, .. } => {
                if let Some(c) = self.existing_collection(db, key, VT_STREAM)? {
                    self.stream_op(c, effect)?;
                }
            }
            Effect::FlushDb => self.flush_db(db)?,
            Effect::FlushAll => {
                for d in 0..MAX_DBS {
                    self.flush_db(d as u8)?;
                }
            }
            Effect::SwapDb { other } => {
                let a = self.store.read_word(self.root_db(db))?;
                let b = self.store.read_word(self.root_db(*other))?;
                self.store.write_word(self.root_db(db), b)?;
                self.store.write_word(self.root_db(*other), a)?;
            }
        }
        Ok(())
    }

    /// Frees an item (or any block with a header) once the batch commits.
    fn free_item(&mut self, item: u64) -> Result<(), StoreError> {
        let h = self.header_at(item)?;
        self.store.free(item, h.len);
        Ok(())
    }

    fn new_block(&mut self, bytes: &[u8]) -> Result<u64, StoreError> {
        let off = self.store.alloc(bytes.len() as u64)?;
        self.store.write_new(off, bytes)?;
        Ok(off)
    }

    fn new_string_item(&mut self, key: &[u8], s: &[u8], expire: i64) -> Result<u64, StoreError> {
        self.new_block(&encode_key(VT_STRING, key, s, expire, 0))
    }

    /// A new collection (header and slot array) of `vtype` for `n` items.
    fn new_coll(&mut self, vtype: u8, n: u64) -> Result<Coll, StoreError> {
        let deque = vtype == VT_LIST || vtype == VT_STREAM;
        let cap = if deque {
            capacity_for(n)
        } else {
            capacity_for(n * 2)
        };
        let slot = if deque { DEQUE_SLOT } else { TABLE_SLOT };
        let slots = self.zeroed(cap * slot)?;
        let off = self.new_block(&encode_coll(vtype, 0, slots, cap, 0, 0))?;
        Ok(Coll {
            off,
            vtype,
            count: 0,
            slots,
            cap,
            aux: 0,
            dump: 0,
        })
    }

    fn zeroed(&mut self, len: u64) -> Result<u64, StoreError> {
        let off = self.store.alloc(len)?;
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len() as u64);
            self.store.write_new(off + at, &chunk[..n as usize])?;
            at += n;
        }
        Ok(off)
    }

    /// Builds a key item (and its collection) for a whole value.
    fn new_value_item(
        &mut self,
        key: &[u8],
        value: &Value,
        expire: i64,
    ) -> Result<u64, StoreError> {
        let (vtype, n) = match value {
            Value::String(s) => return self.new_string_item(key, s, expire),
            Value::List(l) => (VT_LIST, l.len()),
            Value::Hash(h) => (VT_HASH, h.len()),
            Value::Set(s) => (VT_SET, s.len()),
            Value::Zset(z) => (VT_ZSET, z.len()),
            Value::StreamDump(_) => (VT_STREAM, 0),
        };
        let mut c = self.new_coll(vtype, n as u64)?;
        match value {
            Value::String(_) => {}
            Value::List(l) => {
                for e in l {
                    let item = self.new_block(&encode_member(e, &[]))?;
                    c = self.deque_push(c, End::Tail, item)?;
                }
            }
            Value::Hash(h) => {
                for (f, v) in h {
                    let item = self.new_block(&encode_member(f, v))?;
                    c = self.table_upsert(c, f, item)?;
                }
            }
            Value::Set(s) => {
                for m in s {
                    let item = self.new_block(&encode_member(m, &[]))?;
                    c = self.table_upsert(c, m, item)?;
                }
            }
            Value::Zset(z) => {
                for (m, s) in z {
                    let item = self.new_block(&encode_member(m, &s.to_bits().to_le_bytes()))?;
                    c = self.table_upsert(c, m, item)?;
                }
            }
            Value::StreamDump(d) => {
                let item = self.new_block(&encode_member(d, &[]))?;
                self.store.write_word(c.off + COLL_DUMP, item)?;
            }
        }
        self.new_block(&encode_key(vtype, key, &[], expire, c.off))
    }

    /// Puts `item` (a key item for `key`) in `db`, freeing what it replaces.
    fn upsert_key(
        &mut self,
        db: u8,
        key: &[u8],
        item: u64,
        free_old: bool,
    ) -> Result<(), StoreError> {
        let t = match self.db_table(db)? {
            Some(t) => {
                let c = self.coll(t)?;
                self.relieve(c)?
            }
            None => {
                let c = self.new_coll(VT_KEYS, 0)?;
                self.store.write_word(self.root_db(db), c.off)?;
                c
            }
        };
        let p = self.probe(&t, hash(key), key)?;
        if let Some((i, old)) = p.found {
            self.store.write_word(t.slots + i * TABLE_SLOT + 8, item)?;
            if free_old {
                self.free_key_item(old, true)?;
            }
            return Ok(());
        }
        self.table_insert(t, hash(key), item, p)?;
        Ok(())
    }

    fn delete_key(&mut self, db: u8, key: &[u8], free_value: bool) -> Result<(), StoreError> {
        if let Some((c, i, item)) = self.find_key(db, key)? {
            self.table_remove_at(&c, i)?;
            self.free_key_item(item, free_value)?;
        }
        Ok(())
    }

    fn set_expire(&mut self, db: u8, key: &[u8], at: i64) -> Result<(), StoreError> {
        if let Some((_, _, item)) = self.find_key(db, key)? {
            self.store.write_word(item + KEY_EXPIRE, at as u64)?;
        }
        Ok(())
    }

    fn string_number(&mut self, db: u8, key: &[u8]) -> Result<(Vec<u8>, i64), ApplyFail> {
        match self.find_key(db, key)? {
            None => Ok((b"0".to_vec(), NO_EXPIRE)),
            Some((_, _, item)) => {
                let (h, _, s) = self.item_parts(item, false)?;
                if h.vtype != VT_STRING {
                    return Err(mismatch(key, "string"));
                }
                Ok((s, self.store.read_word(item + KEY_EXPIRE)? as i64))
            }
        }
    }

    fn free_key_item(&mut self, item: u64, with_value: bool) -> Result<(), StoreError> {
        let h = self.header_at(item)?;
        if with_value && h.vtype != VT_STRING {
            let coll = self.store.read_word(item + KEY_COLL)?;
            self.free_collection(coll)?;
        }
        self.store.free(item, h.len);
        Ok(())
    }

    fn free_collection(&mut self, off: u64) -> Result<(), StoreError> {
        let c = self.coll(off)?;
        for item in self.items(&c)? {
            if c.vtype == VT_KEYS {
                self.free_key_item(item, true)?;
            } else {
                self.free_item(item)?;
            }
        }
        if c.dump != 0 {
            self.free_item(c.dump)?;
        }
        self.store.free(c.slots, c.cap * slot_size(c.vtype));
        self.store.free(off, COLL_LEN);
        Ok(())
    }

    fn flush_db(&mut self, db: u8) -> Result<(), StoreError> {
        if let Some(t) = self.db_table(db)? {
            self.store.write_word(self.root_db(db), 0)?;
            self.free_collection(t)?;
        }
        Ok(())
    }

    /// The collection of `key` for a write that creates it when absent.
    fn collection_for_write(&mut self, db: u8, key: &[u8], vtype: u8) -> Result<Coll, ApplyFail> {
        if let Some(c) = self.existing_collection(db, key, vtype)? {
            return Ok(c);
        }
        let c = self.new_coll(vtype, 0)?;
        let item = self.new_block(&encode_key(vtype, key, &[], NO_EXPIRE, c.off))?;
        self.upsert_key(db, key, item, true)?;
        Ok(c)
    }

    fn existing_collection(
        &mut self,
        db: u8,
        key: &[u8],
        vtype: u8,
    ) -> Result<Option<Coll>, ApplyFail> {
        let Some((_, _, item)) = self.find_key(db, key)? else {
            return Ok(None);
        };
        let h = self.header_at(item)?;
        if h.vtype != vtype {
            let name = match vtype {
                VT_LIST => "list",
                VT_HASH => "hash",
                VT_SET => "set",
                VT_ZSET => "zset",
                _ => "stream",
            };
            return Err(mismatch(key, name));
        }
        let off = self.store.read_word(item + KEY_COLL)?;
        Ok(Some(self.coll(off)?))
    }

    fn drop_if_empty(&mut self, db: u8, key: &[u8], c: &Coll) -> Result<(), StoreError> {
        if c.count == 0 && c.vtype != VT_STREAM {
            self.delete_key(db, key, true)?;
        }
        Ok(())
    }

    fn set_coll(&mut self, c: &Coll) -> Result<(), StoreError> {
        for (at, v) in [
            (COLL_COUNT, c.count),
            (COLL_SLOTS, c.slots),
            (COLL_CAP, c.cap),
            (COLL_AUX, c.aux),
        ] {
            if self.store.read_word(c.off + at)? != v {
                self.store.write_word(c.off + at, v)?;
            }
        }
        Ok(())
    }

    /// True when slot writes to `c` would bloat the journal: move it to a new array,
    /// whose writes go in place.
    fn journal_pressure(&self, c: &Coll) -> bool {
        !self.store.is_fresh(c.slots)
            && self.store.overlay_len() * 4 >= self.store.journal_capacity() * 3
    }

    // ----- hash tables -----

    /// A table about to take many slot writes in a batch that has used most of the
    /// journal moves to a new slot array first, whose writes go in place.
    fn relieve(&mut self, c: Coll) -> Result<Coll, StoreError> {
        if self.journal_pressure(&c) {
            self.rehash(c, c.cap)
        } else {
            Ok(c)
        }
    }

    fn table_insert(
        &mut self,
        mut c: Coll,
        h: u64,
        item: u64,
        p: Probe,
    ) -> Result<Coll, StoreError> {
        let grow = (c.aux + 1) * 4 > c.cap * 3;
        let p = if grow || self.journal_pressure(&c) {
            let cap = if grow {
                capacity_for((c.count + 1) * 2)
            } else {
                c.cap
            };
            c = self.rehash(c, cap)?;
            self.probe_empty(&c, h)?
        } else {
            p
        };
        let slot = c.slots + p.insert_at * TABLE_SLOT;
        self.store.write_word(slot, h)?;
        self.store.write_word(slot + 8, item)?;
        c.count += 1;
        if !p.insert_is_tombstone {
            c.aux += 1;
        }
        self.set_coll(&c)?;
        Ok(c)
    }

    /// Where a new entry of hash `h` goes in a table known not to hold it.
    fn probe_empty(&self, c: &Coll, h: u64) -> Result<Probe, StoreError> {
        let mask = c.cap - 1;
        let mut i = h & mask;
        for _ in 0..c.cap {
            let item = self.store.read_word(c.slots + i * TABLE_SLOT + 8)?;
            if item <= TOMBSTONE {
                return Ok(Probe {
                    found: None,
                    insert_at: i,
                    insert_is_tombstone: item == TOMBSTONE,
                });
            }
            i = (i + 1) & mask;
        }
        Err(corrupt(c.off, "hash table has no free slot"))
    }

    /// Inserts or replaces the member `name` with `item`, freeing a replaced member.
    fn table_upsert(&mut self, c: Coll, name: &[u8], item: u64) -> Result<Coll, StoreError> {
        let c = self.relieve(c)?;
        let h = hash(name);
        let p = self.probe(&c, h, name)?;
        match p.found {
            Some((i, old)) => {
                self.store.write_word(c.slots + i * TABLE_SLOT + 8, item)?;
                self.free_item(old)?;
                Ok(c)
            }
            None => self.table_insert(c, h, item, p),
        }
    }

    fn table_delete(&mut self, c: Coll, name: &[u8]) -> Result<Coll, StoreError> {
        let c = self.relieve(c)?;
        let p = self.probe(&c, hash(name), name)?;
        match p.found {
            Some((i, old)) => {
                self.free_item(old)?;
                self.table_remove_at(&c, i)
            }
            None => Ok(c),
        }
    }

    /// Tombstones slot `i` (the caller frees the item), shrinking a sparse table.
    fn table_remove_at(&mut self, c: &Coll, i: u64) -> Result<Coll, StoreError> {
        let mut c = *c;
        self.store
            .write_word(c.slots + i * TABLE_SLOT + 8, TOMBSTONE)?;
        c.count -= 1;
        self.set_coll(&c)?;
        if let Some(cap) = shrunk_capacity(&c) {
            c = self.rehash(c, cap)?;
        }
        Ok(c)
    }

    /// Copies the live entries of `c` into a new slot array of `cap` slots.
    fn rehash(&mut self, c: Coll, cap: u64) -> Result<Coll, StoreError> {
        let slots = self.zeroed(cap * TABLE_SLOT)?;
        let mask = cap - 1;
        let mut n = 0;
        for i in 0..c.cap {
            let at = c.slots + i * TABLE_SLOT;
            let item = self.store.read_word(at + 8)?;
            if item <= TOMBSTONE {
                continue;
            }
            let h = self.store.read_word(at)?;
            let mut j = h & mask;
            while self.store.read_word(slots + j * TABLE_SLOT + 8)? != EMPTY {
                j = (j + 1) & mask;
            }
            self.store.write_word(slots + j * TABLE_SLOT, h)?;
            self.store.write_word(slots + j * TABLE_SLOT + 8, item)?;
            n += 1;
        }
        self.store.free(c.slots, c.cap * TABLE_SLOT);
        let c = Coll {
            slots,
            cap,
            count: n,
            aux: n,
            ..c
        };
        self.set_coll(&c)?;
        Ok(c)
    }

    // ----- deques -----

    fn deque_push(&mut self, mut c: Coll, end: End, item: u64) -> Result<Coll, StoreError> {
        if c.count == c.cap || self.journal_pressure(&c) {
            let cap = if c.count == c.cap { c.cap * 2 } else { c.cap };
            c = self.redeque(c, cap)?;
        }
        let mask = c.cap - 1;
        let idx = match end {
            End::Tail => (c.aux + c.count) & mask,
            End::Head => {
                c.aux = (c.aux + c.cap - 1) & mask;
                c.aux
            }
        };
        self.store.write_word(c.slots + idx * DEQUE_SLOT, item)?;
        c.count += 1;
        self.set_coll(&c)?;
        Ok(c)
    }

    fn deque_pop(&mut self, mut c: Coll, end: End, n: u64) -> Result<Coll, StoreError> {
        let mask = c.cap - 1;
        for _ in 0..n.min(c.count) {
            let idx = match end {
                End::Head => c.aux,
                End::Tail => (c.aux + c.count - 1) & mask,
            };
            let item = self.store.read_word(c.slots + idx * DEQUE_SLOT)?;
            self.free_item(item)?;
            if end == End::Head {
                c.aux = (c.aux + 1) & mask;
            }
            c.count -= 1;
        }
        self.set_coll(&c)?;
        if let Some(cap) = shrunk_capacity(&c) {
            c = self.redeque(c, cap)?;
        }
        Ok(c)
    }

    fn redeque(&mut self, c: Coll, cap: u64) -> Result<Coll, StoreError> {
        let slots = self.zeroed(cap * DEQUE_SLOT)?;
        for i in 0..c.count {
            let item = self
                .store
                .read_word(c.slots + ((c.aux + i) & (c.cap - 1)) * DEQUE_SLOT)?;
            self.store.write_word(slots + i * DEQUE_SLOT, item)?;
        }
        self.store.free(c.slots, c.cap * DEQUE_SLOT);
        let c = Coll {
            slots,
            cap,
            aux: 0,
            ..c
        };
        self.set_coll(&c)?;
        Ok(c)
    }

    fn stream_op(&mut self, c: Coll, effect: &Effect) -> Result<(), StoreError> {
        let mut payload = Vec::new();
        let kind = encode(effect, &mut payload);
        let mut a = Vec::with_capacity(payload.len() + 1);
        a.push(kind);
        a.extend_from_slice(&payload);
        let item = self.new_block(&encode_member(&a, &[]))?;
        self.deque_push(c, End::Tail, item)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{mark_grains, marked_runs};
    use proptest::prelude::*;

    /// The runs of set bits, one bit at a time (the reference for `marked_runs`).
    fn runs_bit_by_bit(marks: &[u64], grains: usize) -> Vec<(usize, usize)> {
        let set = |g: usize| marks[g / 64] & (1 << (g % 64)) != 0;
        let mut runs = Vec::new();
        let mut g = 0;
        while g < grains {
            if set(g) {
                let first = g;
                while g < grains && set(g) {
                    g += 1;
                }
                runs.push((first, g - first));
            } else {
                g += 1;
            }
        }
        runs
    }

    proptest! {
        #[test]
        fn marking_matches_bit_by_bit(
            blocks in proptest::collection::vec((0usize..700, 1usize..150), 0..40),
        ) {
            let grains: usize = 900;
            let mut marks = vec![0u64; grains.div_ceil(64)];
            let mut reference = vec![false; grains];
            for (first, count) in blocks {
                let count = count.min(grains - first.min(grains));
                if count == 0 {
                    continue;
                }
                let overlaps = reference[first..first + count].iter().any(|&b| b);
                let before = marks.clone();
                prop_assert_eq!(mark_grains(&mut marks, first, count), !overlaps);
                if overlaps {
                    prop_assert_eq!(&marks, &before, "a refused mark must set nothing");
                } else {
                    reference[first..first + count].iter_mut().for_each(|b| *b = true);
                }
            }
            for (g, &b) in reference.iter().enumerate() {
                prop_assert_eq!(marks[g / 64] & (1 << (g % 64)) != 0, b);
            }
            let runs: Vec<_> = marked_runs(&marks, grains).collect();
            prop_assert_eq!(runs, runs_bit_by_bit(&marks, grains));
        }
    }

    #[test]
    fn runs_across_whole_words() {
        let mut marks = vec![0u64; 4];
        assert!(mark_grains(&mut marks, 10, 180));
        assert!(!mark_grains(&mut marks, 189, 1), "the last grain is taken");
        assert!(mark_grains(&mut marks, 190, 2));
        assert_eq!(marked_runs(&marks, 256).collect::<Vec<_>>(), [(10, 182)]);
        assert_eq!(marked_runs(&marks, 100).collect::<Vec<_>>(), [(10, 90)]);
    }
}
