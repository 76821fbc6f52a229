//! The databases: a directory of key-table pointers, one slot per db, in the heap.
//!
//! The root names the directory (`ROOT_DB_DIR`) and its slot count (`ROOT_DB_SLOTS`, a
//! power of two); slot `db` holds the pool offset of db `db`'s key table, 0 for an empty
//! db. The directory grows (doubling, copied into a fresh array inside the batch) when a
//! db beyond it is first written, so a server's `databases` setting bounds nothing here:
//! any u32 db number works, and only the dbs used cost space.

use super::layout::*;
use super::{KeySpace, StoreError};

impl KeySpace {
    /// Slots of the db directory (every db below it may have a table).
    pub(super) fn db_slots(&self) -> Result<u64, StoreError> {
        self.store.read_word(self.layout.root + ROOT_DB_SLOTS)
    }

    fn db_dir(&self) -> Result<u64, StoreError> {
        self.store.read_word(self.layout.root + ROOT_DB_DIR)
    }

    /// The key table of `db`, if it has one.
    pub(super) fn db_table(&self, db: u32) -> Result<Option<u64>, StoreError> {
        if u64::from(db) >= self.db_slots()? {
            return Ok(None);
        }
        let t = self
            .store
            .read_word(self.db_dir()? + u64::from(db) * DB_SLOT)?;
        Ok((t != 0).then_some(t))
    }

    /// Points `db` at the key table `table` (0: the db is empty), growing the directory
    /// when `db` is beyond it.
    pub(super) fn set_db_table(&mut self, db: u32, table: u64) -> Result<(), StoreError> {
        let slots = self.db_slots()?;
        if u64::from(db) >= slots {
            if table == 0 {
                return Ok(());
            }
            self.grow_db_dir(slots, capacity_for(u64::from(db) + 1))?;
        }
        let at = self.db_dir()? + u64::from(db) * DB_SLOT;
        self.store.write_word(at, table)
    }

    fn grow_db_dir(&mut self, old_slots: u64, slots: u64) -> Result<(), StoreError> {
        let new_dir = self.zeroed(slots * DB_SLOT)?;
        if old_slots > 0 {
            let old_dir = self.db_dir()?;
            for i in 0..old_slots {
                let t = self.store.read_word(old_dir + i * DB_SLOT)?;
                if t != 0 {
                    self.store.write_word(new_dir + i * DB_SLOT, t)?;
                }
            }
            self.store.free(old_dir, old_slots * DB_SLOT);
        }
        let root = self.layout.root;
        self.store.write_word(root + ROOT_DB_DIR, new_dir)?;
        self.store.write_word(root + ROOT_DB_SLOTS, slots)
    }

    /// The directory block, for the walk: (offset, bytes), if there is one.
    pub(super) fn db_dir_block(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let slots = self.db_slots()?;
        if slots == 0 {
            return Ok(None);
        }
        Ok(Some((self.db_dir()?, slots * DB_SLOT)))
    }

    /// The dbs that have a key table, in order.
    pub(super) fn dbs_with_tables(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut out = Vec::new();
        for db in 0..self.db_slots()? {
            let db = u32::try_from(db).unwrap_or(u32::MAX);
            if let Some(t) = self.db_table(db)? {
                out.push((db, t));
            }
        }
        Ok(out)
    }
}
