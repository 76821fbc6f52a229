//! Applying one effect to the key space, inside the open batch.
//!
//! Every effect follows the server's semantics for the state it is applied to (an emptied
//! collection is deleted, pushes create the key, expiries are absolute). An effect the
//! state cannot take (a type mismatch) is an `ApplyFail::Mismatch`: skipped and counted by
//! the batch, never a partial change.

use super::layout::*;
use super::{Coll, KeySpace, StoreError, StoredValue};
use crate::effect::model::trim_range;
use crate::effect::{encode, Effect, End, Value, NO_EXPIRE};

/// Why one effect was not applied.
pub(super) enum ApplyFail {
    /// The state cannot take it (wrong type): skipped.
    Mismatch(String),
    Store(StoreError),
}

impl From<StoreError> for ApplyFail {
    fn from(e: StoreError) -> Self {
        ApplyFail::Store(e)
    }
}

pub(super) fn mismatch(key: &[u8], want: &str) -> ApplyFail {
    ApplyFail::Mismatch(format!(
        "key {:?} is not a {want}",
        String::from_utf8_lossy(key)
    ))
}

impl KeySpace {
    pub(super) fn apply(&mut self, db: u8, effect: &Effect) -> Result<(), ApplyFail> {
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

    /// Builds a key item (and its collection) for a whole value.
    pub(super) fn new_value_item(
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

    pub(super) fn set_expire(&mut self, db: u8, key: &[u8], at: i64) -> Result<(), StoreError> {
        if let Some((_, _, item)) = self.find_key(db, key)? {
            self.store.write_word(item + KEY_EXPIRE, at as u64)?;
        }
        Ok(())
    }

    pub(super) fn string_number(
        &mut self,
        db: u8,
        key: &[u8],
    ) -> Result<(Vec<u8>, i64), ApplyFail> {
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

    pub(super) fn flush_db(&mut self, db: u8) -> Result<(), StoreError> {
        if let Some(t) = self.db_table(db)? {
            self.store.write_word(self.root_db(db), 0)?;
            self.free_collection(t)?;
        }
        Ok(())
    }

    /// The collection of `key` for a write that creates it when absent.
    pub(super) fn collection_for_write(
        &mut self,
        db: u8,
        key: &[u8],
        vtype: u8,
    ) -> Result<Coll, ApplyFail> {
        if let Some(c) = self.existing_collection(db, key, vtype)? {
            return Ok(c);
        }
        let c = self.new_coll(vtype, 0)?;
        let item = self.new_block(&encode_key(vtype, key, &[], NO_EXPIRE, c.off))?;
        self.upsert_key(db, key, item, true)?;
        Ok(c)
    }

    pub(super) fn existing_collection(
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

    pub(super) fn drop_if_empty(&mut self, db: u8, key: &[u8], c: &Coll) -> Result<(), StoreError> {
        if c.count == 0 && c.vtype != VT_STREAM {
            self.delete_key(db, key, true)?;
        }
        Ok(())
    }

    pub(super) fn stream_op(&mut self, c: Coll, effect: &Effect) -> Result<(), StoreError> {
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
