//! The key space's transactional store: heap allocation and atomic batches.
//!
//! A batch changes the persistent key space in two ways:
//! - it writes *new* blocks (allocated in this batch, unreachable from the committed
//!   state) directly in place;
//! - it changes words of *existing* blocks and of the root only in a DRAM overlay.
//!
//! `commit` makes the new blocks durable, writes the overlay to the redo journal, fences,
//! sets the journal's commit word (one 8-byte store), fences, copies the overlay into
//! place, fences, and clears the commit word. A crash before the commit word leaves the
//! old state (new blocks are unreachable, hence free); after it, recovery redoes the
//! journal. So a batch is all or nothing.
//!
//! Allocation state is not persistent: free space is everything in the heap that the
//! key space does not reach, found by a walk (like PMDK's heap, whose run-time free lists
//! are rebuilt at open). Blocks freed by a batch are reused only after it commits, so an
//! uncommitted batch never overwrites anything the committed state reaches.
//!
//! Opening without a walk (instant restart) leaves the free space below the top unknown
//! (`unknown_below`): until a walk ends, only the top and blocks freed above that mark are
//! reused, and blocks freed below it are dropped (the walk finds them free). A snapshot
//! (`freeze`) keeps the state of that moment readable while batches go on: each word a
//! commit overwrites below the mark is first saved as a preimage, blocks freed below the
//! mark are held back (`deferred`), so a view (`Store::view`) reads exactly the frozen
//! state until `end_unknown` hands back what the walk of it found free.

use super::layout::{class_at_most, size_class, GRAIN};
use crate::pmem::{Media, MediaError};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Journal header: magic u64, entries u64, crc32c u32 (over the entries), pad u32, then
/// `entries` pairs of (pool offset u64, value u64).
pub const JOURNAL_MAGIC: u64 = u64::from_le_bytes(*b"RNVMJRNL");
pub const JOURNAL_HEADER: u64 = 24;
const JOURNAL_ENTRY: u64 = 16;

/// Errors of the store (and of the key space built on it).
#[derive(Debug)]
pub enum StoreError {
    /// The heap has no room for a block of this size.
    HeapFull {
        needed: u64,
    },
    /// The batch changed more words than the journal holds.
    JournalFull {
        entries: u64,
        max: u64,
    },
    /// The persistent structure is damaged at this pool offset.
    Corrupt {
        offset: u64,
        reason: String,
    },
    Media(MediaError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::HeapFull { needed } => {
                write!(f, "key space full: no room for a block of {needed} bytes")
            }
            StoreError::JournalFull { entries, max } => {
                write!(f, "batch changes {entries} words, the journal holds {max}")
            }
            StoreError::Corrupt { offset, reason } => {
                write!(f, "key space damaged at pool offset {offset}: {reason}")
            }
            StoreError::Media(e) => write!(f, "key space media error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<MediaError> for StoreError {
    fn from(e: MediaError) -> Self {
        StoreError::Media(e)
    }
}

pub fn corrupt(offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

/// Where the journal is.
#[derive(Debug, Clone, Copy)]
pub struct JournalArea {
    pub word: u64,
    pub offset: u64,
    pub size: u64,
}

impl JournalArea {
    pub fn max_entries(&self) -> u64 {
        (self.size.saturating_sub(JOURNAL_HEADER)) / JOURNAL_ENTRY
    }
}

/// What `recover_journal` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOutcome {
    /// No batch was in flight.
    Clean,
    /// A committed batch was redone (its word count).
    Redone(u64),
}

/// Redoes a committed batch left by a crash (the commit word is set): every journal
/// entry is stored again, made durable, then the commit word is cleared. `valid` says
/// which offsets a journal entry may name.
pub fn recover_journal(
    media: &dyn Media,
    area: JournalArea,
    valid: impl Fn(u64) -> bool,
) -> Result<JournalOutcome, StoreError> {
    let entries = media.load_u64(area.word)?;
    if entries == 0 {
        return Ok(JournalOutcome::Clean);
    }
    let pairs = read_journal(media, area, entries)?;
    for &(off, _) in &pairs {
        if !valid(off) {
            return Err(corrupt(
                area.offset,
                format!("journal entry names pool offset {off}, outside the key space"),
            ));
        }
    }
    for &(off, val) in &pairs {
        media.store_u64_atomic(off, val)?;
        media.flush(off, 8)?;
    }
    media.fence()?;
    media.store_u64_persistent(area.word, 0)?;
    media.fence()?;
    Ok(JournalOutcome::Redone(entries))
}

/// Reads and checks the committed journal of `entries` words.
pub fn read_journal(
    media: &dyn Media,
    area: JournalArea,
    entries: u64,
) -> Result<Vec<(u64, u64)>, StoreError> {
    if entries > area.max_entries() {
        return Err(corrupt(
            area.word,
            format!(
                "journal commit word says {entries} entries, the journal holds {}",
                area.max_entries()
            ),
        ));
    }
    let mut head = [0u8; JOURNAL_HEADER as usize];
    media.read(area.offset, &mut head)?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&head[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    if word(0) != JOURNAL_MAGIC || word(1) != entries {
        return Err(corrupt(
            area.offset,
            "journal header does not match its commit word",
        ));
    }
    let crc = (word(2) & 0xffff_ffff) as u32;
    let mut body = vec![0u8; (entries * JOURNAL_ENTRY) as usize];
    media.read(area.offset + JOURNAL_HEADER, &mut body)?;
    if crc32c::crc32c(&body) != crc {
        return Err(corrupt(area.offset, "journal checksum mismatch"));
    }
    Ok(body
        .chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            b.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(a), u64::from_le_bytes(b))
        })
        .collect())
}

/// Allocation statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Heap bytes in the key space (including blocks freed by the open batch).
    pub used: u64,
    /// Heap bytes on free lists (reusable) plus never used.
    pub free: u64,
    /// The largest block one allocation can get now (free blocks are not merged: many
    /// small free blocks do not make room for one big block).
    pub largest_free: u64,
    pub capacity: u64,
}

/// The key space as it was when frozen: the words commits have overwritten since, below
/// `below` (the top then; nothing above it belongs to the frozen state).
pub struct Snapshot {
    below: u64,
    preimages: Mutex<FxHashMap<u64, u64>>,
}

impl Snapshot {
    /// The frozen value of the word at `off`. A commit saves every word it will
    /// overwrite under the lock before it overwrites any: a word not saved yet still
    /// holds its frozen value.
    fn read(&self, media: &dyn Media, off: u64) -> Result<u64, MediaError> {
        let saved = self.preimages.lock().unwrap_or_else(|p| p.into_inner());
        match saved.get(&off) {
            Some(&v) => Ok(v),
            None => media.load_u64(off),
        }
    }

    /// The top of the heap when it was frozen.
    pub fn top(&self) -> u64 {
        self.below
    }

    /// Words saved so far (their DRAM cost: about 32 bytes each).
    pub fn saved_words(&self) -> usize {
        self.preimages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// The store: media, heap allocator and the open batch.
pub struct Store {
    media: Arc<dyn Media>,
    journal: JournalArea,
    heap_start: u64,
    heap_end: u64,
    /// Pool offset of the root's heap-top word (bump allocation's durable watermark).
    top_word: u64,
    /// Bump pointer (DRAM; made durable through the overlay at commit).
    top: u64,
    /// The top as the root holds it (what the last commit wrote).
    durable_top: u64,
    /// Free blocks by size class.
    free: BTreeMap<u64, Vec<u64>>,
    free_bytes: u64,
    used_bytes: u64,
    // --- the open batch ---
    overlay: FxHashMap<u64, u64>,
    /// Blocks allocated by this batch: start -> length.
    fresh: BTreeMap<u64, u64>,
    /// Ranges written directly (new blocks), to flush at commit.
    dirty: Vec<(u64, u64)>,
    /// Blocks freed by this batch (reused after commit).
    pending_free: Vec<(u64, u64)>,
    top_at_begin: u64,
    /// True once a media error hit: nothing more is written.
    poisoned: bool,
    // --- free space not known yet (see the module documentation) ---
    /// Free space below this offset is not on the free lists (`heap_start`: all known).
    unknown_below: u64,
    /// The snapshot being kept readable, if any.
    snapshot: Option<Arc<Snapshot>>,
    /// Blocks below `unknown_below` freed while the snapshot is kept: free at its end.
    deferred: Vec<(u64, u64)>,
    /// A read-only view: reads resolve through this snapshot's preimages.
    view_of: Option<Arc<Snapshot>>,
}

impl Store {
    /// A store over the heap `[heap_start, heap_end)` whose durable bump top is `top`
    /// (0 = never used). Free lists start empty: `rebuild_free` fills them.
    pub fn new(
        media: Arc<dyn Media>,
        journal: JournalArea,
        heap_start: u64,
        heap_end: u64,
        top_word: u64,
        top: u64,
    ) -> Store {
        let top = if top == 0 { heap_start } else { top };
        Store {
            media,
            journal,
            heap_start,
            heap_end,
            top_word,
            top,
            durable_top: top,
            free: BTreeMap::new(),
            free_bytes: 0,
            used_bytes: top - heap_start,
            overlay: FxHashMap::default(),
            fresh: BTreeMap::new(),
            dirty: Vec::new(),
            pending_free: Vec::new(),
            top_at_begin: top,
            poisoned: false,
            unknown_below: top,
            snapshot: None,
            deferred: Vec::new(),
            view_of: None,
        }
    }

    /// A read-only store that reads `snapshot`'s frozen state (see `freeze`).
    pub fn view(&self, snapshot: Arc<Snapshot>) -> Store {
        let top = snapshot.below;
        let mut view = Store::new(
            Arc::clone(&self.media),
            self.journal,
            self.heap_start,
            self.heap_end,
            self.top_word,
            top,
        );
        view.view_of = Some(snapshot);
        view
    }

    fn refuse_if_view(&self) -> Result<(), StoreError> {
        match self.view_of {
            Some(_) => Err(StoreError::Media(MediaError::Unsupported(
                "a snapshot view is read-only".into(),
            ))),
            None => Ok(()),
        }
    }

    /// Freezes the committed state (between batches): from now on it stays readable
    /// through views, and the free space below the current top is unknown until
    /// `end_unknown`.
    pub fn freeze(&mut self) -> Arc<Snapshot> {
        let snapshot = Arc::new(Snapshot {
            below: self.top,
            preimages: Mutex::new(FxHashMap::default()),
        });
        self.free.clear();
        self.free_bytes = 0;
        self.used_bytes = self.top - self.heap_start;
        self.unknown_below = self.top;
        self.deferred.clear();
        self.snapshot = Some(Arc::clone(&snapshot));
        snapshot
    }

    /// Whether free space below some mark is still unknown (opened without a walk, or
    /// a snapshot is kept).
    pub fn free_space_unknown(&self) -> bool {
        self.unknown_below > self.heap_start
    }

    /// Ends the unknown state with the walk of the frozen state (or, without a snapshot,
    /// of the committed state): `reachable` are its sorted blocks below `unknown_below`;
    /// every gap between them becomes free, and so do the blocks held back since. Ends
    /// the snapshot: its views must not be read any more.
    pub fn end_unknown(&mut self, reachable: impl Iterator<Item = (u64, u64)>) {
        let below = self.unknown_below;
        let mut at = self.heap_start;
        let mut gaps = Vec::new();
        for (start, len) in reachable {
            if start >= below {
                break;
            }
            if start > at {
                gaps.push((at, start - at));
            }
            at = at.max(start + len);
        }
        if below > at {
            gaps.push((at, below - at));
        }
        for (start, len) in gaps {
            self.free_gap(start, len);
        }
        for (off, class) in std::mem::take(&mut self.deferred) {
            self.free.entry(class).or_default().push(off);
            self.free_bytes += class;
        }
        self.used_bytes = (self.top - self.heap_start) - self.free_bytes;
        self.unknown_below = self.heap_start;
        self.snapshot = None;
    }

    /// The heap ends at `heap_end` now (the pool grew; never lower).
    pub fn grow_heap(&mut self, heap_end: u64) {
        self.heap_end = self.heap_end.max(heap_end);
    }

    pub fn heap_range(&self) -> (u64, u64) {
        (self.heap_start, self.heap_end)
    }

    pub fn top(&self) -> u64 {
        self.top
    }

    /// Turns every gap between reachable blocks (sorted, non-overlapping `(start, len)`
    /// runs below the top) into free blocks.
    pub fn rebuild_free(&mut self, reachable: impl Iterator<Item = (u64, u64)>) {
        self.free.clear();
        self.free_bytes = 0;
        let mut at = self.heap_start;
        let mut gaps = Vec::new();
        for (start, len) in reachable {
            if start > at {
                gaps.push((at, start - at));
            }
            at = at.max(start + len);
        }
        if self.top > at {
            gaps.push((at, self.top - at));
        }
        for (start, len) in gaps {
            self.free_gap(start, len);
        }
        self.used_bytes = (self.top - self.heap_start) - self.free_bytes;
        self.unknown_below = self.heap_start;
        self.deferred.clear();
        self.snapshot = None;
    }

    pub fn stats(&self) -> HeapStats {
        HeapStats {
            used: self.used_bytes,
            free: self.free_bytes + (self.heap_end - self.top),
            largest_free: self
                .free
                .iter()
                .rev()
                .find(|(_, offs)| !offs.is_empty())
                .map_or(0, |(&class, _)| class)
                .max(self.heap_end - self.top),
            capacity: self.heap_end - self.heap_start,
        }
    }

    /// Words changed by the open batch.
    pub fn overlay_len(&self) -> u64 {
        self.overlay.len() as u64
    }

    pub fn journal_capacity(&self) -> u64 {
        self.journal.max_entries()
    }

    /// Allocates a block for `len` bytes (rounded to its class) in the open batch.
    pub fn alloc(&mut self, len: u64) -> Result<u64, StoreError> {
        self.refuse_if_view()?;
        let class = size_class(len);
        let off = match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(off) => {
                self.free_bytes -= class;
                off
            }
            None if self.heap_end - self.top >= class => {
                let off = self.top;
                self.top += class;
                off
            }
            None => self
                .split_larger(class)
                .ok_or(StoreError::HeapFull { needed: class })?,
        };
        self.used_bytes += class;
        self.fresh.insert(off, class);
        Ok(off)
    }

    /// With the top full: the start of the smallest larger free block, cut to `class`,
    /// its rest going back to the free lists as blocks of the classes that fill it (a
    /// full heap of small freed blocks still serves other sizes). Only DRAM changes: the
    /// rest is free space, as a walk would find it.
    fn split_larger(&mut self, class: u64) -> Option<u64> {
        let (&big, offs) = self
            .free
            .range_mut(class + 1..)
            .find(|(_, offs)| !offs.is_empty())?;
        let off = offs.pop()?;
        self.free_bytes -= big;
        self.free_gap(off + class, big - class);
        Some(off)
    }

    /// Puts the free range `[start, start+len)` on the free lists, as blocks of the
    /// largest classes that fill it.
    fn free_gap(&mut self, mut start: u64, mut len: u64) {
        while len >= GRAIN {
            let class = class_at_most(len);
            self.free.entry(class).or_default().push(start);
            self.free_bytes += class;
            start += class;
            len -= class;
        }
    }

    /// Allocates a block outside any batch (a log blob, see `KeySpace::alloc_blob`).
    /// Between batches only (the caller holds the key space): the block is nobody's in
    /// the committed state, and an abort of a later batch leaves it allocated.
    pub fn alloc_detached(&mut self, len: u64) -> Result<u64, StoreError> {
        let off = self.alloc(len)?;
        self.fresh.remove(&off);
        self.top_at_begin = self.top;
        Ok(off)
    }

    /// Raises the top to at least `end` (a live blob above the durable top after a crash).
    pub fn cover(&mut self, end: u64) {
        if end > self.top && end <= self.heap_end {
            self.used_bytes += end - self.top;
            self.top = end;
            self.top_at_begin = end;
        }
    }

    /// Frees the block at `off` of `len` bytes (its class) once the batch commits.
    pub fn free(&mut self, off: u64, len: u64) {
        self.pending_free.push((off, size_class(len)));
    }

    /// Whether `off` lies in a block allocated by the open batch.
    pub fn is_fresh(&self, off: u64) -> bool {
        self.fresh
            .range(..=off)
            .next_back()
            .is_some_and(|(&start, &len)| off < start + len)
    }

    /// Writes the bytes of a block allocated by the open batch.
    pub fn write_new(&mut self, off: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.refuse_if_view()?;
        self.media.write(off, bytes)?;
        self.dirty.push((off, bytes.len() as u64));
        Ok(())
    }

    /// Reads a word as the open batch sees it.
    pub fn read_word(&self, off: u64) -> Result<u64, StoreError> {
        match (self.overlay.get(&off), &self.view_of) {
            (Some(&v), _) => Ok(v),
            (None, Some(snapshot)) => Ok(snapshot.read(&*self.media, off)?),
            (None, None) => Ok(self.media.load_u64(off)?),
        }
    }

    /// Reads bytes of a block; only immutable parts (item contents) may be read this way.
    pub fn read_bytes(&self, off: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        Ok(self.media.read(off, buf)?)
    }

    /// Changes a word in the open batch: in place in a new block, else in the overlay.
    pub fn write_word(&mut self, off: u64, value: u64) -> Result<(), StoreError> {
        self.refuse_if_view()?;
        if self.is_fresh(off) {
            self.media.store_u64_atomic(off, value)?;
            self.dirty.push((off, 8));
        } else {
            self.overlay.insert(off, value);
        }
        Ok(())
    }

    /// Makes the open batch durable and atomic (see the module documentation).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.refuse_if_view()?;
        if self.poisoned {
            return Err(StoreError::Media(MediaError::Unsupported(
                "an earlier key space write failed; nothing more is written".into(),
            )));
        }
        let result = self.commit_inner();
        if let Err(StoreError::Media(_)) = &result {
            self.poisoned = true;
        }
        result
    }

    fn commit_inner(&mut self) -> Result<(), StoreError> {
        if self.top != self.durable_top {
            let top = self.top;
            self.overlay.insert(self.top_word, top);
        }
        let max = self.journal.max_entries();
        let entries = self.overlay.len() as u64;
        if entries > max {
            return Err(StoreError::JournalFull { entries, max });
        }
        // 1. New blocks durable.
        self.dirty.sort_unstable();
        let mut run: Option<(u64, u64)> = None;
        for &(off, len) in &self.dirty {
            run = match run {
                Some((s, e)) if off <= e + 64 => Some((s, e.max(off + len))),
                Some((s, e)) => {
                    self.media.flush(s, e - s)?;
                    Some((off, off + len))
                }
                None => Some((off, off + len)),
            };
        }
        if let Some((s, e)) = run {
            self.media.flush(s, e - s)?;
        }
        if entries > 0 {
            // 2. Journal durable, then its commit word.
            let mut pairs: Vec<(u64, u64)> = self.overlay.iter().map(|(&o, &v)| (o, v)).collect();
            pairs.sort_unstable();
            let mut body = Vec::with_capacity(pairs.len() * 16 + JOURNAL_HEADER as usize);
            body.extend_from_slice(&JOURNAL_MAGIC.to_le_bytes());
            body.extend_from_slice(&entries.to_le_bytes());
            body.extend_from_slice(&[0u8; 8]);
            for (o, v) in &pairs {
                body.extend_from_slice(&o.to_le_bytes());
                body.extend_from_slice(&v.to_le_bytes());
            }
            let crc = crc32c::crc32c(&body[JOURNAL_HEADER as usize..]);
            body[16..20].copy_from_slice(&crc.to_le_bytes());
            self.media.write_persistent(self.journal.offset, &body)?;
            self.media.fence()?;
            self.media
                .store_u64_persistent(self.journal.word, entries)?;
            self.media.fence()?;
            // 3. In place. A kept snapshot first saves what it will read, all at once (a
            // view's reader holds the lock only per word: a reader that finds no saved
            // word reads it before this batch overwrites it).
            if let Some(s) = &self.snapshot {
                let mut saved = s.preimages.lock().unwrap_or_else(|p| p.into_inner());
                for (o, _) in &pairs {
                    if *o < s.below && !saved.contains_key(o) {
                        saved.insert(*o, self.media.load_u64(*o)?);
                    }
                }
            }
            for (o, v) in &pairs {
                self.media.store_u64_atomic(*o, *v)?;
                self.media.flush(*o, 8)?;
            }
            self.media.fence()?;
            // 4. Done: the journal may be reused.
            self.media.store_u64_persistent(self.journal.word, 0)?;
            self.media.fence()?;
        } else if !self.dirty.is_empty() {
            self.media.fence()?;
        }
        self.finish_batch();
        Ok(())
    }

    fn finish_batch(&mut self) {
        self.overlay.clear();
        self.fresh.clear();
        self.dirty.clear();
        for (off, class) in self.pending_free.drain(..) {
            self.used_bytes -= class;
            if off >= self.unknown_below {
                self.free.entry(class).or_default().push(off);
                self.free_bytes += class;
            } else if self.snapshot.is_some() {
                self.deferred.push((off, class));
            }
            // Else dropped: free space below the mark is what the walk will find.
        }
        self.top_at_begin = self.top;
        self.durable_top = self.top;
    }

    /// Forgets the open batch: nothing it did reaches the committed state.
    pub fn abort(&mut self) {
        let fresh = std::mem::take(&mut self.fresh);
        for (off, class) in fresh {
            self.used_bytes -= class;
            if off < self.top_at_begin {
                self.free.entry(class).or_default().push(off);
                self.free_bytes += class;
            }
        }
        self.top = self.top_at_begin;
        self.overlay.clear();
        self.dirty.clear();
        self.pending_free.clear();
    }
}
