//! Reads of the key space for the NVM.* read commands: a key's type and expiry without
//! its value, a db's size, and a cursor scan.
//!
//! The scan follows Redis's SCAN contract: a full iteration (cursor 0 back to 0) returns
//! every key present throughout it at least once, even if its table grew or shrank in
//! between. The cursor is a home bucket, advanced like Redis's `dictScan` (reversed bits
//! incremented), and each step returns the keys whose home bucket it is: in an open
//! addressing table those sit in the probe run from that bucket up to the next empty
//! slot. Bucket `b` of a table of `n` slots is exactly buckets `b` and `b + n` of the
//! table of `2n` slots, so no bucket is skipped across a resize.

use super::layout::*;
use super::{KeySpace, StoreError};

/// A key as a scan or NVM.TYPE sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    pub key: Vec<u8>,
    /// The Redis type name: string, list, hash, set, zset, stream.
    pub type_name: &'static str,
    /// Absolute unix ms, or negative for none.
    pub expire_at_ms: i64,
}

/// The Redis type name of a key item's value type.
pub fn type_name(vtype: u8) -> &'static str {
    match vtype {
        VT_STRING | VT_CHUNKS => "string",
        VT_LIST => "list",
        VT_HASH => "hash",
        VT_SET => "set",
        VT_ZSET => "zset",
        VT_STREAM => "stream",
        _ => "unknown",
    }
}

impl KeySpace {
    /// A key's type and expiry (its value is not read).
    pub fn key_meta(&mut self, db: u32, key: &[u8]) -> Result<Option<KeyMeta>, StoreError> {
        match self.find_key(db, key)? {
            None => Ok(None),
            Some((_, _, item)) => self.meta_of(item).map(Some),
        }
    }

    fn meta_of(&self, item: u64) -> Result<KeyMeta, StoreError> {
        let (h, key, _) = self.item_parts(item, true)?;
        Ok(KeyMeta {
            key,
            type_name: type_name(h.vtype),
            expire_at_ms: self.store.read_word(item + KEY_EXPIRE)? as i64,
        })
    }

    /// Keys in `db`.
    pub fn db_key_count(&self, db: u32) -> Result<u64, StoreError> {
        match self.db_table(db)? {
            None => Ok(0),
            Some(t) => Ok(self.coll(t)?.count),
        }
    }

    /// One scan step over `db` from `cursor` (0 starts): the keys of about `count` home
    /// buckets, and the next cursor (0 when the iteration is complete).
    pub fn scan(
        &self,
        db: u32,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<KeyMeta>), StoreError> {
        let Some(t) = self.db_table(db)? else {
            return Ok((0, Vec::new()));
        };
        let c = self.coll(t)?;
        let mask = c.cap - 1;
        let mut v = cursor;
        let mut out = Vec::new();
        for _ in 0..count.max(1) {
            let home = v & mask;
            // The probe run from `home`: every key whose home bucket is `home` is in it.
            for step in 0..c.cap {
                let slot = c.slots + ((home + step) & mask) * TABLE_SLOT;
                let item = self.store.read_word(slot + 8)?;
                if item == EMPTY {
                    break;
                }
                if item != TOMBSTONE && self.store.read_word(slot)? & mask == home {
                    out.push(self.meta_of(item)?);
                }
            }
            // Redis's reverse-binary increment of the bits under the mask.
            v |= !mask;
            v = v.reverse_bits().wrapping_add(1).reverse_bits();
            if v == 0 {
                break;
            }
        }
        Ok((v, out))
    }
}

#[cfg(test)]
mod tests {
    /// The cursor visits every bucket of a table once, whatever its size.
    #[test]
    fn the_cursor_visits_every_bucket_once() {
        for bits in 0..8u32 {
            let mask = (1u64 << bits) - 1;
            let mut seen = vec![0u32; 1 << bits];
            let mut v = 0u64;
            loop {
                seen[(v & mask) as usize] += 1;
                v |= !mask;
                v = v.reverse_bits().wrapping_add(1).reverse_bits();
                if v == 0 {
                    break;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{bits} bits: {seen:?}");
        }
    }
}
