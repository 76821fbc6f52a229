//! A reference model: an in-memory dataset that applies effects the way Redis does.
//!
//! Used by the crash tests (the state recovered from the log must equal the model applied
//! to the acknowledged prefix) and by `nvm-tool` to summarise a pool without a server.
//! It follows Redis semantics where they matter for replay: an emptied collection is
//! deleted, pushes create the key, LTRIM uses inclusive, negative-from-the-tail indexes.
//! A stream restored from a DUMP is opaque here: later entries are tracked beside it.

use super::{zset_order, Effect, End, Pairs, SetOp, StreamId, Value, NO_EXPIRE};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Clone, PartialEq)]
pub enum ModelValue {
    String(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// member -> score bits (f64 compared bitwise, as the log stores it).
    Zset(BTreeMap<Vec<u8>, u64>),
    Stream {
        dump: Option<Vec<u8>>,
        entries: BTreeMap<StreamId, Pairs>,
        /// Consumer-group and stream-id effects since the dump (StreamAck, StreamGroup,
        /// StreamGroups, StreamSetId), in order, with their key cleared (the stream may have
        /// been renamed since).
        group_ops: Vec<Effect>,
    },
}

impl ModelValue {
    fn is_empty_collection(&self) -> bool {
        match self {
            ModelValue::String(_) | ModelValue::Stream { .. } => false,
            ModelValue::List(l) => l.is_empty(),
            ModelValue::Hash(h) => h.is_empty(),
            ModelValue::Set(s) => s.is_empty(),
            ModelValue::Zset(z) => z.is_empty(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            ModelValue::String(_) => "string",
            ModelValue::List(_) => "list",
            ModelValue::Hash(_) => "hash",
            ModelValue::Set(_) => "set",
            ModelValue::Zset(_) => "zset",
            ModelValue::Stream { .. } => "stream",
        }
    }
}

impl From<&Value> for ModelValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::String(s) => ModelValue::String(s.clone()),
            Value::List(l) => ModelValue::List(l.iter().cloned().collect()),
            Value::Hash(h) => ModelValue::Hash(h.iter().cloned().collect()),
            Value::Set(s) => ModelValue::Set(s.iter().cloned().collect()),
            Value::Zset(z) => {
                ModelValue::Zset(z.iter().map(|(m, s)| (m.clone(), s.to_bits())).collect())
            }
            Value::StreamDump(d) => ModelValue::Stream {
                dump: Some(d.clone()),
                entries: BTreeMap::new(),
                group_ops: Vec::new(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: ModelValue,
    pub expire_at_ms: i64,
}

/// A type mismatch while applying: the log says to do something the state cannot take.
/// Replaying a consistent log never produces one; a report of one means the log and the
/// state it is applied to disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError(pub String);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub dbs: BTreeMap<u32, BTreeMap<Vec<u8>, Entry>>,
    /// The function libraries (the last `Functions` effect), if any was logged.
    pub functions: Option<Vec<u8>>,
}

impl Dataset {
    pub fn key_count(&self) -> usize {
        self.dbs.values().map(BTreeMap::len).sum()
    }

    pub fn get(&self, db: u32, key: &[u8]) -> Option<&Entry> {
        self.dbs.get(&db).and_then(|d| d.get(key))
    }

    fn db(&mut self, db: u32) -> &mut BTreeMap<Vec<u8>, Entry> {
        self.dbs.entry(db).or_default()
    }

    /// Applies one effect to `db`.
    pub fn apply(&mut self, db: u32, effect: &Effect) -> Result<(), ApplyError> {
        match effect {
            Effect::Put {
                key,
                value,
                expire_at_ms,
            } => {
                self.db(db).insert(
                    key.clone(),
                    Entry {
                        value: value.into(),
                        expire_at_ms: *expire_at_ms,
                    },
                );
            }
            Effect::Delete { key } => {
                self.db(db).remove(key);
            }
            Effect::ExpireAt { key, at_ms } => {
                if let Some(e) = self.db(db).get_mut(key) {
                    e.expire_at_ms = *at_ms;
                }
            }
            Effect::Persist { key } => {
                if let Some(e) = self.db(db).get_mut(key) {
                    e.expire_at_ms = NO_EXPIRE;
                }
            }
            Effect::IncrBy { key, by } => {
                let current = self.string_number(db, key)?;
                let next = current.parse::<i64>().unwrap_or(0).wrapping_add(*by);
                self.set_string(db, key, next.to_string().into_bytes());
            }
            Effect::IncrByFloat { key, by } => {
                // The model approximates the server's long-double arithmetic with f64.
                let current = self.string_number(db, key)?.parse::<f64>().unwrap_or(0.0);
                let by = std::str::from_utf8(by)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0);
                self.set_string(db, key, format!("{}", current + by).into_bytes());
            }
            Effect::Rename { from, to } => {
                if let Some(e) = self.db(db).remove(from) {
                    self.db(db).insert(to.clone(), e);
                }
            }
            Effect::Move { key, to_db } => {
                if let Some(e) = self.db(db).remove(key) {
                    self.db(*to_db).insert(key.clone(), e);
                }
            }
            Effect::HashSet { key, pairs } => {
                let h = self.collection(db, key, || ModelValue::Hash(BTreeMap::new()))?;
                let ModelValue::Hash(h) = h else {
                    return Err(wrong_type(key, "hash"));
                };
                for (f, v) in pairs {
                    h.insert(f.clone(), v.clone());
                }
            }
            Effect::HashDel { key, fields } => self.edit(db, key, "hash", |v| match v {
                ModelValue::Hash(h) => {
                    for f in fields {
                        h.remove(f);
                    }
                    true
                }
                _ => false,
            })?,
            Effect::SetAdd { key, members } => {
                let s = self.collection(db, key, || ModelValue::Set(BTreeSet::new()))?;
                let ModelValue::Set(s) = s else {
                    return Err(wrong_type(key, "set"));
                };
                s.extend(members.iter().cloned());
            }
            Effect::SetRem { key, members } => self.edit(db, key, "set", |v| match v {
                ModelValue::Set(s) => {
                    for m in members {
                        s.remove(m);
                    }
                    true
                }
                _ => false,
            })?,
            Effect::ZsetAdd { key, pairs } => {
                let z = self.collection(db, key, || ModelValue::Zset(BTreeMap::new()))?;
                let ModelValue::Zset(z) = z else {
                    return Err(wrong_type(key, "zset"));
                };
                for (m, s) in pairs {
                    z.insert(m.clone(), s.to_bits());
                }
            }
            Effect::ZsetRem { key, members } => self.edit(db, key, "zset", |v| match v {
                ModelValue::Zset(z) => {
                    for m in members {
                        z.remove(m);
                    }
                    true
                }
                _ => false,
            })?,
            Effect::ZsetPop { key, max, count } => self.edit(db, key, "zset", |v| match v {
                ModelValue::Zset(z) => {
                    let mut order = sorted_zset(z);
                    if *max {
                        order.reverse();
                    }
                    for (_, m) in order.into_iter().take(saturating_usize(*count)) {
                        z.remove(&m);
                    }
                    true
                }
                _ => false,
            })?,
            Effect::ZsetRemRange { key, range } => self.edit(db, key, "zset", |v| match v {
                ModelValue::Zset(z) => {
                    let order = sorted_zset(z);
                    let view: Vec<(f64, &[u8])> =
                        order.iter().map(|(s, m)| (*s, m.as_slice())).collect();
                    let picked = range.select(&view);
                    for ((_, m), gone) in order.iter().zip(picked) {
                        if gone {
                            z.remove(m);
                        }
                    }
                    true
                }
                _ => false,
            })?,
            Effect::StringWrite { key, offset, bytes } => {
                let d = self.db(db);
                match d.get_mut(key) {
                    None if bytes.is_empty() => {}
                    None => {
                        let mut s = vec![0u8; saturating_usize(*offset)];
                        s.extend_from_slice(bytes);
                        d.insert(
                            key.clone(),
                            Entry {
                                value: ModelValue::String(s),
                                expire_at_ms: NO_EXPIRE,
                            },
                        );
                    }
                    Some(Entry {
                        value: ModelValue::String(s),
                        ..
                    }) => write_at(s, saturating_usize(*offset), bytes),
                    Some(_) => return Err(wrong_type(key, "string")),
                }
            }
            Effect::ListSet {
                key,
                index,
                element,
            } => self.edit(db, key, "list", |v| match v {
                ModelValue::List(l) => match l.get_mut(saturating_usize(*index)) {
                    Some(slot) => {
                        slot.clone_from(element);
                        true
                    }
                    None => false,
                },
                _ => false,
            })?,
            Effect::ListInsert {
                key,
                after,
                pivot,
                element,
            } => self.edit(db, key, "list", |v| match v {
                ModelValue::List(l) => {
                    if let Some(i) = l.iter().position(|e| e == pivot) {
                        l.insert(i + usize::from(*after), element.clone());
                    }
                    true
                }
                _ => false,
            })?,
            Effect::ListRem {
                key,
                count,
                element,
            } => self.edit(db, key, "list", |v| match v {
                ModelValue::List(l) => {
                    let gone = list_rem_positions(l.len(), *count, |i| &l[i] == element);
                    let mut i = 0;
                    l.retain(|_| {
                        i += 1;
                        !gone.contains(&(i - 1))
                    });
                    true
                }
                _ => false,
            })?,
            Effect::SetStore { key, op, sources } => {
                let mut sets = Vec::with_capacity(sources.len());
                for src in sources {
                    sets.push(match self.get(db, src) {
                        None => BTreeSet::new(),
                        Some(Entry {
                            value: ModelValue::Set(s),
                            ..
                        }) => s.clone(),
                        Some(_) => return Err(wrong_type(src, "set")),
                    });
                }
                let result = set_op(*op, sets);
                let d = self.db(db);
                if result.is_empty() {
                    d.remove(key);
                } else {
                    d.insert(
                        key.clone(),
                        Entry {
                            value: ModelValue::Set(result),
                            expire_at_ms: NO_EXPIRE,
                        },
                    );
                }
            }
            Effect::Copy { from, to } => {
                if let Some(e) = self.get(db, from).cloned() {
                    self.db(db).insert(to.clone(), e);
                }
            }
            Effect::ListPush { key, end, elements } => {
                let l = self.collection(db, key, || ModelValue::List(VecDeque::new()))?;
                let ModelValue::List(l) = l else {
                    return Err(wrong_type(key, "list"));
                };
                for e in elements {
                    match end {
                        End::Head => l.push_front(e.clone()),
                        End::Tail => l.push_back(e.clone()),
                    }
                }
            }
            Effect::ListPop { key, end, count } => self.edit(db, key, "list", |v| match v {
                ModelValue::List(l) => {
                    for _ in 0..saturating_usize(*count).min(l.len()) {
                        match end {
                            End::Head => l.pop_front(),
                            End::Tail => l.pop_back(),
                        };
                    }
                    true
                }
                _ => false,
            })?,
            Effect::ListTrim { key, start, stop } => self.edit(db, key, "list", |v| match v {
                ModelValue::List(l) => {
                    let (from, to) = trim_range(l.len(), *start, *stop);
                    let kept: VecDeque<Vec<u8>> = l
                        .drain(..)
                        .skip(from)
                        .take(to.saturating_sub(from))
                        .collect();
                    *l = kept;
                    true
                }
                _ => false,
            })?,
            Effect::StreamAdd { key, id, fields } => {
                let s = self.collection(db, key, || ModelValue::Stream {
                    dump: None,
                    entries: BTreeMap::new(),
                    group_ops: Vec::new(),
                })?;
                let ModelValue::Stream { entries, .. } = s else {
                    return Err(wrong_type(key, "stream"));
                };
                entries.insert(*id, fields.clone());
            }
            Effect::StreamTrim { key, min_id } => {
                if let Some(e) = self.db(db).get_mut(key) {
                    let ModelValue::Stream { entries, .. } = &mut e.value else {
                        return Err(wrong_type(key, "stream"));
                    };
                    match min_id {
                        None => entries.clear(),
                        Some(min) => entries.retain(|id, _| id >= min),
                    }
                }
            }
            Effect::StreamAck { key, .. }
            | Effect::StreamGroup { key, .. }
            | Effect::StreamGroups { key, .. }
            | Effect::StreamSetId { key, .. } => {
                if let Some(e) = self.db(db).get_mut(key) {
                    let ModelValue::Stream { group_ops, .. } = &mut e.value else {
                        return Err(wrong_type(key, "stream"));
                    };
                    let mut op = effect.clone();
                    if let Effect::StreamAck { key, .. }
                    | Effect::StreamGroup { key, .. }
                    | Effect::StreamGroups { key, .. }
                    | Effect::StreamSetId { key, .. } = &mut op
                    {
                        key.clear();
                    }
                    group_ops.push(op);
                }
            }
            Effect::FlushDb => {
                self.dbs.remove(&db);
            }
            Effect::FlushAll => self.dbs.clear(),
            Effect::Functions { dump } => self.functions = Some(dump.clone()),
            Effect::SwapDb { other } => {
                let a = self.dbs.remove(&db).unwrap_or_default();
                let b = self.dbs.remove(other).unwrap_or_default();
                self.dbs.insert(db, b);
                self.dbs.insert(*other, a);
            }
        }
        self.dbs.retain(|_, d| !d.is_empty());
        Ok(())
    }

    fn string_number(&mut self, db: u32, key: &[u8]) -> Result<String, ApplyError> {
        match self.get(db, key) {
            None => Ok("0".into()),
            Some(Entry {
                value: ModelValue::String(s),
                ..
            }) => Ok(String::from_utf8_lossy(s).into_owned()),
            Some(_) => Err(wrong_type(key, "string")),
        }
    }

    /// Sets a string value, keeping the key's expiry as INCR and friends do.
    fn set_string(&mut self, db: u32, key: &[u8], value: Vec<u8>) {
        let d = self.db(db);
        let expire_at_ms = d.get(key).map(|e| e.expire_at_ms).unwrap_or(NO_EXPIRE);
        d.insert(
            key.to_vec(),
            Entry {
                value: ModelValue::String(value),
                expire_at_ms,
            },
        );
    }

    /// The collection at `key`, created empty by `make` if the key is absent.
    fn collection(
        &mut self,
        db: u32,
        key: &[u8],
        make: impl FnOnce() -> ModelValue,
    ) -> Result<&mut ModelValue, ApplyError> {
        let entry = self.db(db).entry(key.to_vec()).or_insert_with(|| Entry {
            value: make(),
            expire_at_ms: NO_EXPIRE,
        });
        Ok(&mut entry.value)
    }

    /// Edits an existing collection; absent keys are left alone, emptied ones deleted.
    fn edit(
        &mut self,
        db: u32,
        key: &[u8],
        want: &str,
        f: impl FnOnce(&mut ModelValue) -> bool,
    ) -> Result<(), ApplyError> {
        let d = self.db(db);
        let Some(entry) = d.get_mut(key) else {
            return Ok(());
        };
        if !f(&mut entry.value) {
            return Err(wrong_type(key, want));
        }
        if entry.value.is_empty_collection() {
            d.remove(key);
        }
        Ok(())
    }
}

fn wrong_type(key: &[u8], want: &str) -> ApplyError {
    ApplyError(format!(
        "key '{}' is not a {want}",
        String::from_utf8_lossy(key)
    ))
}

/// A zset's elements in the server's order, with their scores.
fn sorted_zset(z: &BTreeMap<Vec<u8>, u64>) -> Vec<(f64, Vec<u8>)> {
    let mut order: Vec<(f64, Vec<u8>)> = z
        .iter()
        .map(|(m, s)| (f64::from_bits(*s), m.clone()))
        .collect();
    order.sort_by(|a, b| zset_order((a.0, &a.1), (b.0, &b.1)));
    order
}

/// SETRANGE's write: zero-pads `s` up to `offset`, then overwrites from there.
pub fn write_at(s: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let end = offset.saturating_add(bytes.len());
    if s.len() < end {
        s.resize(end, 0);
    }
    s[offset..end].copy_from_slice(bytes);
}

/// The positions LREM removes from a list of `len` elements: the first `count` matches
/// from the head (`count > 0`), the last `-count` from the tail (`count < 0`), or every
/// match (`count == 0`); `matches(i)` tells whether element `i` equals the argument.
pub fn list_rem_positions(
    len: usize,
    count: i64,
    mut matches: impl FnMut(usize) -> bool,
) -> BTreeSet<usize> {
    let limit = if count == 0 {
        usize::MAX
    } else {
        saturating_usize(count.unsigned_abs())
    };
    let order: Box<dyn Iterator<Item = usize>> = if count < 0 {
        Box::new((0..len).rev())
    } else {
        Box::new(0..len)
    };
    order.filter(|&i| matches(i)).take(limit).collect()
}

/// SUNION / SINTER / SDIFF over sets given in argument order.
pub fn set_op(op: SetOp, sets: Vec<BTreeSet<Vec<u8>>>) -> BTreeSet<Vec<u8>> {
    let mut it = sets.into_iter();
    let Some(first) = it.next() else {
        return BTreeSet::new();
    };
    match op {
        SetOp::Union => it.fold(first, |mut acc, s| {
            acc.extend(s);
            acc
        }),
        SetOp::Inter => it.fold(first, |acc, s| acc.intersection(&s).cloned().collect()),
        SetOp::Diff => it.fold(first, |acc, s| acc.difference(&s).cloned().collect()),
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// LTRIM's index arithmetic: returns the half-open range of kept positions.
pub fn trim_range(len: usize, start: i64, stop: i64) -> (usize, usize) {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let norm = |i: i64| if i < 0 { len_i + i } else { i };
    let start = norm(start).max(0);
    let stop = norm(stop);
    if start > stop || start >= len_i {
        return (0, 0);
    }
    let stop = stop.min(len_i - 1);
    (start as usize, (stop + 1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn ltrim_matches_redis_semantics() {
        assert_eq!(trim_range(5, 0, -1), (0, 5));
        assert_eq!(trim_range(5, 1, 2), (1, 3));
        assert_eq!(trim_range(5, -2, -1), (3, 5));
        assert_eq!(trim_range(5, 3, 1), (0, 0));
        assert_eq!(trim_range(5, 7, 9), (0, 0));
        assert_eq!(trim_range(5, -100, 100), (0, 5));
    }

    #[test]
    fn emptied_collections_disappear_and_pushes_order_like_lpush() {
        let mut d = Dataset::default();
        d.apply(
            0,
            &Effect::ListPush {
                key: k("l"),
                end: End::Head,
                elements: vec![k("a"), k("b"), k("c")],
            },
        )
        .unwrap();
        let Some(Entry {
            value: ModelValue::List(l),
            ..
        }) = d.get(0, b"l")
        else {
            panic!("list expected")
        };
        assert_eq!(
            l.iter().cloned().collect::<Vec<_>>(),
            vec![k("c"), k("b"), k("a")]
        );
        d.apply(
            0,
            &Effect::ListPop {
                key: k("l"),
                end: End::Tail,
                count: 10,
            },
        )
        .unwrap();
        assert_eq!(d.key_count(), 0);
    }

    #[test]
    fn swap_and_move_between_dbs() {
        let mut d = Dataset::default();
        let put = Effect::Put {
            key: k("a"),
            value: Value::String(k("1")),
            expire_at_ms: NO_EXPIRE,
        };
        d.apply(0, &put).unwrap();
        d.apply(0, &Effect::SwapDb { other: 3 }).unwrap();
        assert!(d.get(3, b"a").is_some() && d.get(0, b"a").is_none());
        d.apply(
            3,
            &Effect::Move {
                key: k("a"),
                to_db: 5,
            },
        )
        .unwrap();
        assert!(d.get(5, b"a").is_some() && d.key_count() == 1);
    }

    #[test]
    fn wrong_type_is_an_error_not_a_panic() {
        let mut d = Dataset::default();
        d.apply(
            0,
            &Effect::Put {
                key: k("s"),
                value: Value::String(k("x")),
                expire_at_ms: NO_EXPIRE,
            },
        )
        .unwrap();
        let err = d.apply(
            0,
            &Effect::SetAdd {
                key: k("s"),
                members: vec![k("m")],
            },
        );
        assert!(err.is_err());
    }
}
