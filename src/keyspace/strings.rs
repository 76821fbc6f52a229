//! Strings: inline in their key item up to `INLINE_STRING_MAX` bytes, chunked beyond.
//!
//! A chunked string is a deque of chunk members (collection type `VT_CHUNKS`): chunk `i`
//! holds bytes `i * CHUNK ..`, and its total length is the collection's `extra` word. A
//! chunk member may be shorter than its chunk (the rest reads as zeros), and a 0 slot is
//! a chunk of zeros, so a sparse bitmap or a SETRANGE far past the end costs a slot per
//! chunk, not the zeros. So a write of `n` bytes anywhere in a string of any size
//! replaces only the chunks it touches: O(n + CHUNK), never O(string).
//!
//! Invariants: chunk deques never pop (their head index stays 0) and the slots past
//! `count` are 0, so growing one is raising `count` (and doubling the array when full).

use super::apply::{mismatch, ApplyFail};
use super::layout::*;
use super::store::corrupt;
use super::{Coll, KeySpace, StoreError};

/// Chunks a single write may rewrite through the journal before the chunk array moves
/// to a fresh copy, whose slot writes go in place.
const JOURNALED_CHUNK_WRITES: u64 = 64;

impl KeySpace {
    /// A new key item for `key` holding the string `s` (inline or chunked).
    pub(super) fn new_string_value(
        &mut self,
        key: &[u8],
        s: &[u8],
        expire: i64,
    ) -> Result<u64, StoreError> {
        if s.len() as u64 <= INLINE_STRING_MAX {
            return self.new_string_item(key, s, expire);
        }
        let mut c = self.new_chunks(s.len() as u64)?;
        self.chunks_write(&mut c, 0, s)?;
        self.new_block(&encode_key(VT_CHUNKS, key, &[], expire, c.off))
    }

    /// An empty chunk deque sized for a string of `len` bytes (all zeros).
    fn new_chunks(&mut self, len: u64) -> Result<Coll, StoreError> {
        let n = len.div_ceil(CHUNK);
        let mut c = self.new_coll(VT_CHUNKS, n)?;
        c.count = n;
        c.extra = len;
        self.set_coll(&c)?;
        Ok(c)
    }

    /// SETRANGE semantics on `key` of `db` (see `Effect::StringWrite`).
    pub(super) fn string_write(
        &mut self,
        db: u32,
        key: &[u8],
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), ApplyFail> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(bytes.len() as u64);
        let Some((_, _, item)) = self.find_key(db, key)? else {
            let item = if end <= INLINE_STRING_MAX {
                let mut s = vec![0u8; offset as usize];
                s.extend_from_slice(bytes);
                self.new_string_item(key, &s, NO_EXPIRE_WORD)?
            } else {
                let mut c = self.new_chunks(end)?;
                self.chunks_write(&mut c, offset, bytes)?;
                self.new_block(&encode_key(VT_CHUNKS, key, &[], NO_EXPIRE_WORD, c.off))?
            };
            self.upsert_key(db, key, item, true)?;
            return Ok(());
        };
        let h = self.header_at(item)?;
        let expire = self.store.read_word(item + KEY_EXPIRE)? as i64;
        match h.vtype {
            VT_STRING => {
                let (_, _, mut s) = self.item_parts(item, false)?;
                if end <= INLINE_STRING_MAX {
                    crate::effect::model::write_at(&mut s, offset as usize, bytes);
                    let new_item = self.new_string_item(key, &s, expire)?;
                    self.upsert_key(db, key, new_item, true)?;
                } else {
                    let mut c = self.new_chunks(end.max(s.len() as u64))?;
                    self.chunks_write(&mut c, 0, &s)?;
                    self.chunks_write(&mut c, offset, bytes)?;
                    let new_item =
                        self.new_block(&encode_key(VT_CHUNKS, key, &[], expire, c.off))?;
                    self.upsert_key(db, key, new_item, true)?;
                }
            }
            VT_CHUNKS => {
                let mut c = self.coll(self.store.read_word(item + KEY_COLL)?)?;
                self.chunks_write(&mut c, offset, bytes)?;
            }
            _ => return Err(mismatch(key, "string")),
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` of a chunked string, growing it as needed.
    fn chunks_write(&mut self, c: &mut Coll, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = offset + bytes.len() as u64;
        let len = c.extra.max(end);
        let needed = len.div_ceil(CHUNK);
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        if needed > c.cap
            || (last - first >= JOURNALED_CHUNK_WRITES && !self.store.is_fresh(c.slots))
        {
            *c = self.redeque(*c, capacity_for(needed).max(c.cap))?;
        }
        c.count = c.count.max(needed);
        c.extra = len;
        for i in first..=last {
            let slot = c.slots + i * DEQUE_SLOT;
            let old = self.store.read_word(slot)?;
            let chunk_start = i * CHUNK;
            let from = offset.max(chunk_start) - chunk_start;
            let to = end.min(chunk_start + CHUNK) - chunk_start;
            let mut buf = if old == EMPTY {
                Vec::new()
            } else {
                self.chunk_of(old)?
            };
            if (buf.len() as u64) < to {
                buf.resize(to as usize, 0);
            }
            let src = &bytes
                [(chunk_start + from - offset) as usize..(chunk_start + to - offset) as usize];
            buf[from as usize..to as usize].copy_from_slice(src);
            let new = if buf.iter().all(|&b| b == 0) {
                EMPTY
            } else {
                self.new_block(&encode_member(&buf, &[]))?
            };
            self.store.write_word(slot, new)?;
            if old != EMPTY {
                self.free_item(old)?;
            }
        }
        self.set_coll(c)
    }

    /// The bytes a chunk member holds (at most `CHUNK`).
    fn chunk_of(&self, item: u64) -> Result<Vec<u8>, StoreError> {
        let (h, a, _) = self.item_parts(item, false)?;
        if h.kind != KIND_MEMBER || a.len() as u64 > CHUNK {
            return Err(corrupt(item, "a string chunk that is not a chunk member"));
        }
        Ok(a)
    }

    /// The whole value of a chunked string (checksums verified with `verify`).
    pub(super) fn chunked_bytes(&self, c: &Coll, verify: bool) -> Result<Vec<u8>, StoreError> {
        if c.count != c.extra.div_ceil(CHUNK) || c.aux != 0 {
            return Err(corrupt(
                c.off,
                format!("chunked string of {} bytes in {} chunks", c.extra, c.count),
            ));
        }
        let mut out = vec![0u8; c.extra as usize];
        for i in 0..c.count {
            let item = self.store.read_word(c.slots + i * DEQUE_SLOT)?;
            if item == EMPTY {
                continue;
            }
            let (h, a, _) = self.item_parts(item, verify)?;
            let at = (i * CHUNK) as usize;
            if h.kind != KIND_MEMBER || a.len() as u64 > CHUNK || at + a.len() > out.len() {
                return Err(corrupt(item, "a string chunk longer than its place"));
            }
            out[at..at + a.len()].copy_from_slice(&a);
        }
        Ok(out)
    }
}

/// A key item's expiry word for "no expiry".
const NO_EXPIRE_WORD: i64 = crate::effect::NO_EXPIRE;
