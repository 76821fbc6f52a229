//! Applying one effect to the key space, inside the open batch.
//!
//! Every effect follows the server's semantics for the state it is applied to (an emptied
//! collection is deleted, pushes create the key, expiries are absolute). An effect the
//! state cannot take (a type mismatch) is an `ApplyFail::Mismatch`: skipped and counted by
//! the batch, never a partial change.

use super::layout::*;
use super::store::corrupt;
use super::{Coll, KeySpace, StoreError, StoredValue};
use crate::effect::model::{list_rem_positions, set_op, trim_range};
use crate::effect::{encode, zset_order, Effect, End, Value, NO_EXPIRE};
use std::collections::BTreeSet;

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
    pub(super) fn apply(&mut self, db: u32, effect: &Effect) -> Result<(), ApplyFail> {
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
                    self.new_string_value(key, n.wrapping_add(*by).to_string().as_bytes(), expire)?;
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
                let item = self.new_string_value(key, v.as_bytes(), expire)?;
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
                let mut order = self.sorted_zset(&c)?;
                if *max {
                    order.reverse();
                }
                for (_, m) in order
                    .into_iter()
                    .take(usize::try_from(*count).unwrap_or(usize::MAX))
                {
                    c = self.table_delete(c, &m)?;
                }
                self.drop_if_empty(db, key, &c)?;
            }
            Effect::ZsetRemRange { key, range } => {
                let Some(mut c) = self.existing_collection(db, key, VT_ZSET)? else {
                    return Ok(());
                };
                let order = self.sorted_zset(&c)?;
                let view: Vec<(f64, &[u8])> =
                    order.iter().map(|(s, m)| (*s, m.as_slice())).collect();
                let picked = range.select(&view);
                for ((_, m), gone) in order.iter().zip(picked) {
                    if gone {
                        c = self.table_delete(c, m)?;
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
            Effect::StreamTrim { key, .. }
            | Effect::StreamAck { key, .. }
            | Effect::StreamGroup { key, .. }
            | Effect::StreamGroups { key, .. }
            | Effect::StreamSetId { key, .. } => {
                if let Some(c) = self.existing_collection(db, key, VT_STREAM)? {
                    self.stream_op(c, effect)?;
                }
            }
            Effect::FlushDb => self.flush_db(db)?,
            Effect::FlushAll => {
                for (d, _) in self.dbs_with_tables()? {
                    self.flush_db(d)?;
                }
            }
            Effect::SwapDb { other } => {
                let a = self.db_table(db)?.unwrap_or(0);
                let b = self.db_table(*other)?.unwrap_or(0);
                self.set_db_table(db, b)?;
                self.set_db_table(*other, a)?;
            }
            Effect::StringWrite { key, offset, bytes } => {
                self.string_write(db, key, *offset, bytes)?
            }
            Effect::ListSet {
                key,
                index,
                element,
            } => {
                let Some(c) = self.existing_collection(db, key, VT_LIST)? else {
                    return Err(mismatch(key, "list"));
                };
                if *index >= c.count {
                    return Err(ApplyFail::Mismatch(format!(
                        "LSET index {index} of a list of {} elements",
                        c.count
                    )));
                }
                let item = self.new_block(&encode_member(element, &[]))?;
                self.deque_set(&c, *index, item)?;
            }
            Effect::ListInsert {
                key,
                after,
                pivot,
                element,
            } => {
                let Some(c) = self.existing_collection(db, key, VT_LIST)? else {
                    return Ok(());
                };
                let items = self.items(&c)?;
                let mut buf = Vec::new();
                let mut at = None;
                for (i, &item) in items.iter().enumerate() {
                    self.item_name_into(item, false, &mut buf)?;
                    if buf == *pivot {
                        at = Some(i as u64 + u64::from(*after));
                        break;
                    }
                }
                if let Some(at) = at {
                    let item = self.new_block(&encode_member(element, &[]))?;
                    self.deque_insert(c, at, item)?;
                }
            }
            Effect::ListRem {
                key,
                count,
                element,
            } => {
                let Some(c) = self.existing_collection(db, key, VT_LIST)? else {
                    return Ok(());
                };
                let items = self.items(&c)?;
                let mut names = Vec::with_capacity(items.len());
                for &item in &items {
                    let mut buf = Vec::new();
                    self.item_name_into(item, false, &mut buf)?;
                    names.push(buf);
                }
                let gone = list_rem_positions(items.len(), *count, |i| names[i] == *element);
                if !gone.is_empty() {
                    let c = self.deque_remove(c, &gone)?;
                    self.drop_if_empty(db, key, &c)?;
                }
            }
            Effect::SetStore { key, op, sources } => {
                let mut sets = Vec::with_capacity(sources.len());
                for src in sources {
                    let members = match self.existing_collection(db, src, VT_SET)? {
                        None => BTreeSet::new(),
                        Some(c) => match self.collection_value(&c, false)? {
                            StoredValue::Set(m) => m.into_iter().collect(),
                            _ => BTreeSet::new(),
                        },
                    };
                    sets.push(members);
                }
                let result = set_op(*op, sets);
                if result.is_empty() {
                    self.delete_key(db, key, true)?;
                } else {
                    let value = Value::Set(result.into_iter().collect());
                    let item = self.new_value_item(key, &value, NO_EXPIRE)?;
                    self.upsert_key(db, key, item, true)?;
                }
            }
            Effect::Functions { dump } => {
                let at = self.layout.root + ROOT_FUNCTIONS;
                let old = self.store.read_word(at)?;
                let item = self.new_block(&encode_member(dump, &[]))?;
                self.store.write_word(at, item)?;
                if old != 0 {
                    self.free_item(old)?;
                }
            }
            Effect::Copy { from, to } => {
                if from == to {
                    return Ok(());
                }
                let Some((_, _, item)) = self.find_key(db, from)? else {
                    return Ok(());
                };
                let copy = self.copy_key_item(item, to)?;
                self.upsert_key(db, to, copy, true)?;
            }
        }
        Ok(())
    }

    /// The members of a zset in the server's order, with their scores.
    fn sorted_zset(&self, c: &Coll) -> Result<Vec<(f64, Vec<u8>)>, StoreError> {
        let StoredValue::Zset(z) = self.collection_value(c, false)? else {
            return Err(corrupt(c.off, "expected a zset"));
        };
        let mut order: Vec<(f64, Vec<u8>)> = z.into_iter().map(|(m, s)| (s, m)).collect();
        order.sort_by(|a, b| zset_order((a.0, &a.1), (b.0, &b.1)));
        Ok(order)
    }

    /// A deep copy of a key item (and of everything it reaches), named `to`.
    fn copy_key_item(&mut self, item: u64, to: &[u8]) -> Result<u64, StoreError> {
        let h = self.header_at(item)?;
        let (_, _, string) = self.item_parts(item, false)?;
        let expire = self.store.read_word(item + KEY_EXPIRE)? as i64;
        let coll = match h.vtype {
            VT_STRING => 0,
            _ => self.copy_collection(self.store.read_word(item + KEY_COLL)?)?,
        };
        self.new_block(&encode_key(h.vtype, to, &string, expire, coll))
    }

    /// A copy of a collection with the same shape (slots, tombstones, head index) and a
    /// copy of every member; returns the new header's offset. A deque's slots outside
    /// its `count` items from `aux` may still name items it no longer holds (popped and
    /// freed): only its live ring is copied.
    fn copy_collection(&mut self, off: u64) -> Result<u64, StoreError> {
        let c = self.coll(off)?;
        let slot = slot_size(c.vtype);
        let slots = self.zeroed(c.cap * slot)?;
        let live: Box<dyn Iterator<Item = u64>> = if is_deque(c.vtype) {
            Box::new((0..c.count).map(move |i| (c.aux + i) & (c.cap - 1)))
        } else {
            Box::new(0..c.cap)
        };
        for i in live {
            let at = i * slot;
            let item_at = if slot == TABLE_SLOT { at + 8 } else { at };
            let item = self.store.read_word(c.slots + item_at)?;
            if item == EMPTY {
                continue;
            }
            if slot == TABLE_SLOT {
                let h = self.store.read_word(c.slots + at)?;
                self.store.write_word(slots + at, h)?;
            }
            let copy = if item == TOMBSTONE && slot == TABLE_SLOT {
                TOMBSTONE
            } else {
                self.copy_block(item)?
            };
            self.store.write_word(slots + item_at, copy)?;
        }
        let extra = match c.vtype {
            VT_STREAM if c.extra != 0 => self.copy_block(c.extra)?,
            _ => c.extra,
        };
        self.new_block(&encode_coll(c.vtype, c.count, slots, c.cap, c.aux, extra))
    }

    /// A byte-for-byte copy of a member item (its checksum does not cover its address).
    fn copy_block(&mut self, off: u64) -> Result<u64, StoreError> {
        let h = self.header_at(off)?;
        if h.kind != KIND_MEMBER {
            return Err(corrupt(off, "expected a member item"));
        }
        let mut bytes = vec![0u8; h.len as usize];
        self.store.read_bytes(off, &mut bytes)?;
        self.new_block(&bytes)
    }

    /// Builds a key item (and its collection) for a whole value.
    pub(super) fn new_value_item(
        &mut self,
        key: &[u8],
        value: &Value,
        expire: i64,
    ) -> Result<u64, StoreError> {
        let (vtype, n) = match value {
            Value::String(s) => return self.new_string_value(key, s, expire),
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
                c.extra = self.new_block(&encode_member(d, &[]))?;
                self.set_coll(&c)?;
            }
        }
        self.new_block(&encode_key(vtype, key, &[], expire, c.off))
    }

    pub(super) fn set_expire(&mut self, db: u32, key: &[u8], at: i64) -> Result<(), StoreError> {
        if let Some((_, _, item)) = self.find_key(db, key)? {
            self.store.write_word(item + KEY_EXPIRE, at as u64)?;
        }
        Ok(())
    }

    pub(super) fn string_number(
        &mut self,
        db: u32,
        key: &[u8],
    ) -> Result<(Vec<u8>, i64), ApplyFail> {
        match self.find_key(db, key)? {
            None => Ok((b"0".to_vec(), NO_EXPIRE)),
            Some((_, _, item)) => {
                let (h, _, s) = self.item_parts(item, false)?;
                let s = match h.vtype {
                    VT_STRING => s,
                    VT_CHUNKS => {
                        let c = self.coll(self.store.read_word(item + KEY_COLL)?)?;
                        self.chunked_bytes(&c, false)?
                    }
                    _ => return Err(mismatch(key, "string")),
                };
                Ok((s, self.store.read_word(item + KEY_EXPIRE)? as i64))
            }
        }
    }

    pub(super) fn flush_db(&mut self, db: u32) -> Result<(), StoreError> {
        if let Some(t) = self.db_table(db)? {
            self.set_db_table(db, 0)?;
            self.free_collection(t)?;
        }
        Ok(())
    }

    /// The collection of `key` for a write that creates it when absent.
    pub(super) fn collection_for_write(
        &mut self,
        db: u32,
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
        db: u32,
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

    pub(super) fn drop_if_empty(
        &mut self,
        db: u32,
        key: &[u8],
        c: &Coll,
    ) -> Result<(), StoreError> {
        if c.count == 0 && c.vtype != VT_STREAM {
            self.delete_key(db, key, true)?;
        }
        Ok(())
    }

    pub(super) fn stream_op(&mut self, c: Coll, effect: &Effect) -> Result<(), StoreError> {
        let mut payload = Vec::new();
        let kind = encode(effect, &mut payload)
            .map_err(|e| corrupt(c.off, format!("a stream effect cannot be stored: {e}")))?;
        let mut a = Vec::with_capacity(payload.len() + 1);
        a.push(kind);
        a.extend_from_slice(&payload);
        let item = self.new_block(&encode_member(&a, &[]))?;
        self.deque_push(c, End::Tail, item)?;
        Ok(())
    }
}
