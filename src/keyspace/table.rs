//! Open-addressing hash tables of items (key tables and hash/set/zset members): probing,
//! insertion, tombstoning and resizing.
//!
//! Invariants: `cap` is a power of two; live + tombstone slots stay at most 3/4 of `cap`;
//! a slot's hash is XXH3 of its item's name; a table below 1/8 full shrinks. A table that
//! would take many slot writes in a batch that has used most of the journal first moves to
//! a fresh slot array, whose writes go in place.

use super::blocks::{keep_if_full, shrunk_capacity};
use super::layout::*;
use super::store::corrupt;
use super::{Coll, KeySpace, Probe, StoreError};

impl KeySpace {
    pub(super) fn probe(&mut self, c: &Coll, h: u64, name: &[u8]) -> Result<Probe, StoreError> {
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
    pub(super) fn find_key(
        &mut self,
        db: u32,
        key: &[u8],
    ) -> Result<Option<(Coll, u64, u64)>, StoreError> {
        let Some(t) = self.db_table(db)? else {
            return Ok(None);
        };
        let c = self.coll(t)?;
        let c = self.relieve(c)?;
        let p = self.probe(&c, hash(key), key)?;
        Ok(p.found.map(|(i, item)| (c, i, item)))
    }

    /// Puts `item` (a key item for `key`) in `db`, freeing what it replaces.
    pub(super) fn upsert_key(
        &mut self,
        db: u32,
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
                self.set_db_table(db, c.off)?;
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

    pub(super) fn delete_key(
        &mut self,
        db: u32,
        key: &[u8],
        free_value: bool,
    ) -> Result<(), StoreError> {
        if let Some((c, i, item)) = self.find_key(db, key)? {
            self.table_remove_at(&c, i)?;
            self.free_key_item(item, free_value)?;
        }
        Ok(())
    }

    /// A table about to take many slot writes in a batch that has used most of the
    /// journal moves to a new slot array first, whose writes go in place.
    pub(super) fn relieve(&mut self, c: Coll) -> Result<Coll, StoreError> {
        if self.journal_pressure(&c) {
            self.rehash(c, c.cap)
        } else {
            Ok(c)
        }
    }

    pub(super) fn table_insert(
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
    pub(super) fn probe_empty(&self, c: &Coll, h: u64) -> Result<Probe, StoreError> {
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
    pub(super) fn table_upsert(
        &mut self,
        c: Coll,
        name: &[u8],
        item: u64,
    ) -> Result<Coll, StoreError> {
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

    pub(super) fn table_delete(&mut self, c: Coll, name: &[u8]) -> Result<Coll, StoreError> {
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
    pub(super) fn table_remove_at(&mut self, c: &Coll, i: u64) -> Result<Coll, StoreError> {
        let mut c = *c;
        self.store
            .write_word(c.slots + i * TABLE_SLOT + 8, TOMBSTONE)?;
        c.count -= 1;
        self.set_coll(&c)?;
        if let Some(cap) = shrunk_capacity(&c) {
            c = keep_if_full(self.rehash(c, cap), c)?;
        }
        Ok(c)
    }

    /// Copies the live entries of `c` into a new slot array of `cap` slots.
    pub(super) fn rehash(&mut self, c: Coll, cap: u64) -> Result<Coll, StoreError> {
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
}
