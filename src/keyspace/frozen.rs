//! Instant restart: opening the key space without walking it, and freezing it so a
//! warm-up can read one fixed state while the replayer goes on folding.
//!
//! `open_unwalked` reads the root only: free space below the top is unknown until a walk
//! finds it (allocation meanwhile uses the top). `freeze` fixes the committed state; a
//! `view` reads exactly that state from any thread (the store keeps the preimages of
//! what later commits overwrite, and holds back what they free). The walk of a view
//! verifies every checksum, hands each sound key to the warm-up, and its marks give the
//! free space back (`end_freeze`).
//!
//! Invariants: a view is read only between `freeze` and `end_freeze`; every block the
//! frozen state reaches stays untouched until `end_freeze` (it is neither reused nor,
//! except for words the store has saved, overwritten).

use super::layout::*;
use super::store::{corrupt, Snapshot, Store};
use super::walk::{Inline, Walked};
use super::{ApplyStats, KeySpace, Layout, StoreError, StoredEntry, StoredValue};
use crate::log::BlobRef;
use crate::pmem::Media;
use std::sync::Arc;

impl KeySpace {
    /// Opens the key space of a pool whose journal has been recovered, reading only the
    /// root: O(1) in the data. Free space below the top stays unknown (see
    /// `free_space_known`); `live_blobs`, the blobs of the log's unfolded records, are
    /// kept out of reach of allocation.
    pub fn open_unwalked(
        media: Arc<dyn Media>,
        layout: Layout,
        live_blobs: &[BlobRef],
    ) -> Result<KeySpace, StoreError> {
        let top = media.load_u64(layout.root + ROOT_HEAP_TOP)?;
        if top != 0
            && (top < layout.heap_start || top > layout.heap_end || !top.is_multiple_of(GRAIN))
        {
            return Err(corrupt(
                layout.root + ROOT_HEAP_TOP,
                format!("heap top {top} outside the heap"),
            ));
        }
        let mut store = Store::new(
            media,
            layout.journal,
            layout.heap_start,
            layout.heap_end,
            layout.root + ROOT_HEAP_TOP,
            top,
        );
        // A blob allocated from the top is durable before its record commits, but the
        // top word moves only with the next batch: after a crash the top may lie below it.
        for b in live_blobs {
            store.cover(b.offset + size_class(b.len));
        }
        Ok(KeySpace {
            store,
            layout,
            stats: ApplyStats::default(),
            scratch: Vec::new(),
        })
    }

    /// Whether the free lists hold all the free space (false between an unwalked open or
    /// a freeze and the walk that ends it).
    pub fn free_space_known(&self) -> bool {
        !self.store.free_space_unknown()
    }

    /// Walks the committed state and rebuilds the free space from it (after an unwalked
    /// open, when no snapshot is kept). Damage is an error naming its offset.
    pub fn find_free_space(&mut self, live_blobs: &[BlobRef]) -> Result<(), StoreError> {
        let report = self.walk(true, Some(live_blobs))?;
        match report.problems.first() {
            Some(p) => Err(corrupt(p.offset, p.what.clone())),
            None => Ok(()),
        }
    }

    /// Freezes the committed state (between batches) and returns it for `view`.
    pub fn freeze(&mut self) -> Arc<Snapshot> {
        self.store.freeze()
    }

    /// A read-only key space that reads `snapshot`'s state, for any thread.
    pub fn view(&self, snapshot: &Arc<Snapshot>) -> KeySpace {
        KeySpace {
            store: self.store.view(Arc::clone(snapshot)),
            layout: self.layout,
            stats: ApplyStats::default(),
            scratch: Vec::new(),
        }
    }

    /// Ends the freeze with the walk of its view: what that state did not reach, and
    /// what was freed since, becomes free. Views of the snapshot must not be read after.
    pub fn end_freeze(&mut self, walked: &Walked) {
        self.store.end_unknown(walked.reachable());
    }

    /// Walks a view (see `view`): verifies every block and checksum, and calls
    /// `on_key(db, key, entry)` for every key that is sound; `blobs` are the log's live
    /// blobs, reachable too. A damaged key is in the report, never handed over.
    pub fn walk_frozen(
        &self,
        blobs: &[BlobRef],
        on_key: &mut dyn FnMut(u32, Vec<u8>, StoredEntry) -> Result<(), StoreError>,
    ) -> Result<Walked, StoreError> {
        self.walk_marking(true, blobs, &mut |db, item, inline| match inline {
            Some(Inline { key, value }) => {
                let expire_at_ms = self.store.read_word(item + KEY_EXPIRE)? as i64;
                let value = StoredValue::String(value);
                on_key(
                    db,
                    key,
                    StoredEntry {
                        value,
                        expire_at_ms,
                    },
                )
            }
            None => {
                let (key, entry) = self.entry_of(item, false)?;
                on_key(db, key, entry)
            }
        })
    }

    /// Reads a key's entry with its checksums verified (a fault-in from a view).
    pub fn get_verified(&mut self, db: u32, key: &[u8]) -> Result<Option<StoredEntry>, StoreError> {
        match self.find_key(db, key)? {
            None => Ok(None),
            Some((_, _, item)) => self.entry_of(item, true).map(|(_, e)| Some(e)),
        }
    }

    /// The dbs that hold keys.
    pub fn dbs_with_keys(&self) -> Result<Vec<u32>, StoreError> {
        let mut dbs = Vec::new();
        for (db, t) in self.dbs_with_tables()? {
            if self.coll(t)?.count > 0 {
                dbs.push(db);
            }
        }
        Ok(dbs)
    }
}
