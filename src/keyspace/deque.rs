//! Ring deques of item pointers (lists, a stream's effects, a big string's chunks).
//!
//! Invariants: element `i` is at slot `(aux + i) % cap`; `count <= cap`, `cap` a power of
//! two; a full deque doubles, one below 1/8 full halves (`shrunk_capacity`).

use super::blocks::{keep_if_full, shrunk_capacity};
use super::layout::*;
use super::{Coll, KeySpace, StoreError};
use crate::effect::End;

impl KeySpace {
    pub(super) fn deque_push(
        &mut self,
        mut c: Coll,
        end: End,
        item: u64,
    ) -> Result<Coll, StoreError> {
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

    pub(super) fn deque_pop(&mut self, mut c: Coll, end: End, n: u64) -> Result<Coll, StoreError> {
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
            c = keep_if_full(self.redeque(c, cap), c)?;
        }
        Ok(c)
    }

    pub(super) fn redeque(&mut self, c: Coll, cap: u64) -> Result<Coll, StoreError> {
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
}

/// Elements a middle insert may shift through the journal; a longer shift rebuilds the
/// deque in a fresh array instead (in-place writes, O(n) like LINSERT itself).
const JOURNALED_SHIFT: u64 = 64;

impl KeySpace {
    /// Puts `item` at position `index` (< count), freeing the element it replaces.
    pub(super) fn deque_set(&mut self, c: &Coll, index: u64, item: u64) -> Result<(), StoreError> {
        let at = c.slots + ((c.aux + index) & (c.cap - 1)) * DEQUE_SLOT;
        let old = self.store.read_word(at)?;
        self.store.write_word(at, item)?;
        if old != EMPTY {
            self.free_item(old)?;
        }
        Ok(())
    }

    /// Inserts `item` so that it becomes element `index` (<= count).
    pub(super) fn deque_insert(
        &mut self,
        mut c: Coll,
        index: u64,
        item: u64,
    ) -> Result<Coll, StoreError> {
        let shift = index.min(c.count - index);
        if c.count == c.cap || shift > JOURNALED_SHIFT || self.journal_pressure(&c) {
            let mut items = self.deque_items(&c)?;
            items.insert(index as usize, item);
            return self.deque_rebuild(c, &items);
        }
        let mask = c.cap - 1;
        let slot = |c: &Coll, i: u64| c.slots + ((c.aux + i) & mask) * DEQUE_SLOT;
        if index < c.count - index {
            // Move the head back by one: elements 0..index shift one slot towards it.
            c.aux = (c.aux + c.cap - 1) & mask;
            for i in 0..index {
                let v = self.store.read_word(slot(&c, i + 1))?;
                self.store.write_word(slot(&c, i), v)?;
            }
        } else {
            for i in (index..c.count).rev() {
                let v = self.store.read_word(slot(&c, i))?;
                self.store.write_word(slot(&c, i + 1), v)?;
            }
        }
        self.store.write_word(slot(&c, index), item)?;
        c.count += 1;
        self.set_coll(&c)?;
        Ok(c)
    }

    /// Removes (and frees) the elements at `positions`.
    pub(super) fn deque_remove(
        &mut self,
        c: Coll,
        positions: &std::collections::BTreeSet<usize>,
    ) -> Result<Coll, StoreError> {
        let items = self.deque_items(&c)?;
        let mut kept = Vec::with_capacity(items.len() - positions.len().min(items.len()));
        for (i, item) in items.into_iter().enumerate() {
            if positions.contains(&i) {
                self.free_item(item)?;
            } else {
                kept.push(item);
            }
        }
        self.deque_rebuild(c, &kept)
    }

    /// The deque's slots in order (including 0 slots of chunked strings).
    fn deque_items(&self, c: &Coll) -> Result<Vec<u64>, StoreError> {
        (0..c.count)
            .map(|i| {
                self.store
                    .read_word(c.slots + ((c.aux + i) & (c.cap - 1)) * DEQUE_SLOT)
            })
            .collect()
    }

    /// Moves the deque to a fresh array holding exactly `items`.
    fn deque_rebuild(&mut self, c: Coll, items: &[u64]) -> Result<Coll, StoreError> {
        let cap = capacity_for(items.len() as u64);
        let slots = self.zeroed(cap * DEQUE_SLOT)?;
        for (i, &item) in items.iter().enumerate() {
            if item != EMPTY {
                self.store.write_word(slots + i as u64 * DEQUE_SLOT, item)?;
            }
        }
        self.store.free(c.slots, c.cap * DEQUE_SLOT);
        let c = Coll {
            slots,
            cap,
            aux: 0,
            count: items.len() as u64,
            ..c
        };
        self.set_coll(&c)?;
        Ok(c)
    }
}
