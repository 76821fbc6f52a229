//! Ring deques of item pointers (lists, a stream's effects, a big string's chunks).
//!
//! Invariants: element `i` is at slot `(aux + i) % cap`; `count <= cap`, `cap` a power of
//! two; a full deque doubles, one below 1/8 full halves (`shrunk_capacity`).

use super::blocks::shrunk_capacity;
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
            c = self.redeque(c, cap)?;
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
