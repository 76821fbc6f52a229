//! The byte encoding of effects (the payload of a log record; the kind is in the header).
//!
//! Little-endian throughout: `bytes` = u32 length + data, `list<T>` = u32 count + items,
//! i64/u64 as 8 bytes, f64 as its IEEE-754 bits in 8 bytes, `end` as one byte (0 head,
//! 1 tail), dbs as u32. The layout of each kind is in docs/format.md. Encoding refuses a
//! length or count that does not fit its u32 (`EncodeError`) instead of narrowing it.
//! Decoding checks every length against what is left, rejects trailing bytes, and never
//! allocates more than the payload can hold, so a corrupt payload is an error rather than
//! a panic or an OOM. The encoder writes into any `Sink`, so a big payload can stream
//! straight into the pool instead of a buffer.

use super::{
    ConsumerTimes, Effect, End, GroupHeader, GroupState, LexBound, Pairs, PelRange, Pending,
    ScoreBound, SetOp, StreamId, Value, ZRange,
};

/// Where an encoding goes: a buffer, a byte counter, or the pool itself.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts the bytes an encoding would take.
struct Counter(u64);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len() as u64;
    }
}

/// An effect that cannot be encoded: a length or count above the u32 the format has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    pub len: u64,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a length or count of {} exceeds the log format's limit of {}",
            self.len,
            u32::MAX
        )
    }
}

impl std::error::Error for EncodeError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    UnknownKind(u8),
    UnknownValueType(u8),
    Truncated {
        needed: usize,
        left: usize,
    },
    TrailingBytes(usize),
    BadEnd(u8),
    /// An enumeration byte (set op, range kind, lex bound) outside its values.
    BadTag(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownKind(k) => write!(f, "unknown effect kind {k}"),
            DecodeError::UnknownValueType(t) => write!(f, "unknown value type {t}"),
            DecodeError::Truncated { needed, left } => {
                write!(f, "payload truncated: needed {needed} bytes, {left} left")
            }
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the effect"),
            DecodeError::BadEnd(b) => write!(f, "bad list end marker {b}"),
            DecodeError::BadTag(b) => write!(f, "bad enumeration byte {b}"),
        }
    }
}

impl std::error::Error for DecodeError {}

// Stable kind numbers: part of the on-media format.
const PUT: u8 = 1;
const DELETE: u8 = 2;
const EXPIRE_AT: u8 = 3;
const PERSIST: u8 = 4;
const RENAME: u8 = 5;
const MOVE: u8 = 6;
const HASH_SET: u8 = 7;
const HASH_DEL: u8 = 8;
const SET_ADD: u8 = 9;
const SET_REM: u8 = 10;
const ZSET_ADD: u8 = 11;
const ZSET_REM: u8 = 12;
const ZSET_POP: u8 = 13;
const LIST_PUSH: u8 = 14;
const LIST_POP: u8 = 15;
const LIST_TRIM: u8 = 16;
const STREAM_ADD: u8 = 17;
const STREAM_TRIM: u8 = 18;
const FLUSH_DB: u8 = 19;
const FLUSH_ALL: u8 = 20;
const SWAP_DB: u8 = 21;
const INCR_BY: u8 = 22;
const INCR_BY_FLOAT: u8 = 23;
const STRING_WRITE: u8 = 24;
const LIST_SET: u8 = 25;
const LIST_INSERT: u8 = 26;
const LIST_REM: u8 = 27;
const ZSET_REM_RANGE: u8 = 28;
const SET_STORE: u8 = 29;
const COPY: u8 = 30;
const FUNCTIONS: u8 = 31;
const STREAM_ACK: u8 = 32;
const STREAM_GROUP: u8 = 33;
const STREAM_GROUPS: u8 = 34;
const STREAM_SET_ID: u8 = 35;

const VALUE_STRING: u8 = 0;
const VALUE_LIST: u8 = 1;
const VALUE_HASH: u8 = 2;
const VALUE_SET: u8 = 3;
const VALUE_ZSET: u8 = 4;
const VALUE_STREAM_DUMP: u8 = 5;

/// Appends the payload of `effect` to `out` and returns its kind.
pub fn encode(effect: &Effect, out: &mut impl Sink) -> Result<u8, EncodeError> {
    let mut w = Writer {
        out,
        too_long: None,
    };
    let kind = encode_into(effect, &mut w);
    match w.too_long {
        Some(len) => Err(EncodeError { len }),
        None => Ok(kind),
    }
}

/// The kind number of an effect (what `encode` returns), without encoding it.
pub fn kind_of(effect: &Effect) -> u8 {
    struct Discard;
    impl Sink for Discard {
        fn put(&mut self, _: &[u8]) {}
    }
    let mut w = Writer {
        out: &mut Discard,
        too_long: None,
    };
    encode_into(effect, &mut w)
}

/// The payload bytes `encode` would write (and its error, if it would fail).
pub fn encoded_len(effect: &Effect) -> Result<u64, EncodeError> {
    let mut c = Counter(0);
    encode(effect, &mut c)?;
    Ok(c.0)
}

fn encode_into<S: Sink>(effect: &Effect, w: &mut Writer<'_, S>) -> u8 {
    match effect {
        Effect::Put {
            key,
            value,
            expire_at_ms,
        } => {
            w.bytes(key);
            w.i64(*expire_at_ms);
            w.value(value);
            PUT
        }
        Effect::Delete { key } => {
            w.bytes(key);
            DELETE
        }
        Effect::ExpireAt { key, at_ms } => {
            w.bytes(key);
            w.i64(*at_ms);
            EXPIRE_AT
        }
        Effect::Persist { key } => {
            w.bytes(key);
            PERSIST
        }
        Effect::IncrBy { key, by } => {
            w.bytes(key);
            w.i64(*by);
            INCR_BY
        }
        Effect::IncrByFloat { key, by } => {
            w.bytes(key);
            w.bytes(by);
            INCR_BY_FLOAT
        }
        Effect::Rename { from, to } => {
            w.bytes(from);
            w.bytes(to);
            RENAME
        }
        Effect::Move { key, to_db } => {
            w.bytes(key);
            w.u32(*to_db);
            MOVE
        }
        Effect::HashSet { key, pairs } => {
            w.bytes(key);
            w.pairs(pairs);
            HASH_SET
        }
        Effect::HashDel { key, fields } => {
            w.bytes(key);
            w.list(fields);
            HASH_DEL
        }
        Effect::SetAdd { key, members } => {
            w.bytes(key);
            w.list(members);
            SET_ADD
        }
        Effect::SetRem { key, members } => {
            w.bytes(key);
            w.list(members);
            SET_REM
        }
        Effect::ZsetAdd { key, pairs } => {
            w.bytes(key);
            w.scored(pairs);
            ZSET_ADD
        }
        Effect::ZsetRem { key, members } => {
            w.bytes(key);
            w.list(members);
            ZSET_REM
        }
        Effect::ZsetPop { key, max, count } => {
            w.bytes(key);
            w.u8(u8::from(*max));
            w.u64(*count);
            ZSET_POP
        }
        Effect::ListPush { key, end, elements } => {
            w.bytes(key);
            w.end(*end);
            w.list(elements);
            LIST_PUSH
        }
        Effect::ListPop { key, end, count } => {
            w.bytes(key);
            w.end(*end);
            w.u64(*count);
            LIST_POP
        }
        Effect::ListTrim { key, start, stop } => {
            w.bytes(key);
            w.i64(*start);
            w.i64(*stop);
            LIST_TRIM
        }
        Effect::StreamAdd { key, id, fields } => {
            w.bytes(key);
            w.id(id);
            w.pairs(fields);
            STREAM_ADD
        }
        Effect::StreamTrim { key, min_id } => {
            w.bytes(key);
            match min_id {
                None => w.u8(0),
                Some(id) => {
                    w.u8(1);
                    w.id(id);
                }
            }
            STREAM_TRIM
        }
        Effect::StreamAck { key, group, ids } => {
            w.bytes(key);
            w.bytes(group);
            w.len(ids.len());
            for id in ids {
                w.id(id);
            }
            STREAM_ACK
        }
        Effect::StreamGroup { key, group, state } => {
            w.bytes(key);
            w.bytes(group);
            w.id(&state.last_id);
            w.i64(state.entries_read);
            w.consumers(&state.consumers);
            w.len(state.ranges.len());
            for r in &state.ranges {
                w.id(&r.first);
                w.id(&r.last);
                w.len(r.entries.len());
                for (id, p) in &r.entries {
                    w.id(id);
                    w.bytes(&p.consumer);
                    w.i64(p.delivered_ms);
                    w.u64(p.deliveries);
                }
            }
            STREAM_GROUP
        }
        Effect::StreamGroups { key, groups } => {
            w.bytes(key);
            w.len(groups.len());
            for g in groups {
                w.bytes(&g.name);
                w.id(&g.last_id);
                w.i64(g.entries_read);
                w.consumers(&g.consumers);
            }
            STREAM_GROUPS
        }
        Effect::StreamSetId {
            key,
            last_id,
            entries_added,
            max_deleted,
        } => {
            w.bytes(key);
            w.id(last_id);
            w.u64(*entries_added);
            w.id(max_deleted);
            STREAM_SET_ID
        }
        Effect::FlushDb => FLUSH_DB,
        Effect::FlushAll => FLUSH_ALL,
        Effect::SwapDb { other } => {
            w.u32(*other);
            SWAP_DB
        }
        Effect::StringWrite { key, offset, bytes } => {
            w.bytes(key);
            w.u64(*offset);
            w.bytes(bytes);
            STRING_WRITE
        }
        Effect::ListSet {
            key,
            index,
            element,
        } => {
            w.bytes(key);
            w.u64(*index);
            w.bytes(element);
            LIST_SET
        }
        Effect::ListInsert {
            key,
            after,
            pivot,
            element,
        } => {
            w.bytes(key);
            w.u8(u8::from(*after));
            w.bytes(pivot);
            w.bytes(element);
            LIST_INSERT
        }
        Effect::ListRem {
            key,
            count,
            element,
        } => {
            w.bytes(key);
            w.i64(*count);
            w.bytes(element);
            LIST_REM
        }
        Effect::ZsetRemRange { key, range } => {
            w.bytes(key);
            w.zrange(range);
            ZSET_REM_RANGE
        }
        Effect::SetStore { key, op, sources } => {
            w.bytes(key);
            w.u8(match op {
                SetOp::Union => 0,
                SetOp::Inter => 1,
                SetOp::Diff => 2,
            });
            w.list(sources);
            SET_STORE
        }
        Effect::Copy { from, to } => {
            w.bytes(from);
            w.bytes(to);
            COPY
        }
        Effect::Functions { dump } => {
            w.bytes(dump);
            FUNCTIONS
        }
    }
}

/// Decodes the payload of a record of `kind`.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Effect, DecodeError> {
    let mut r = Reader { buf: payload };
    let effect = match kind {
        PUT => {
            let key = r.bytes()?;
            let expire_at_ms = r.i64()?;
            let value = r.value()?;
            Effect::Put {
                key,
                value,
                expire_at_ms,
            }
        }
        DELETE => Effect::Delete { key: r.bytes()? },
        EXPIRE_AT => Effect::ExpireAt {
            key: r.bytes()?,
            at_ms: r.i64()?,
        },
        PERSIST => Effect::Persist { key: r.bytes()? },
        INCR_BY => Effect::IncrBy {
            key: r.bytes()?,
            by: r.i64()?,
        },
        INCR_BY_FLOAT => Effect::IncrByFloat {
            key: r.bytes()?,
            by: r.bytes()?,
        },
        RENAME => Effect::Rename {
            from: r.bytes()?,
            to: r.bytes()?,
        },
        MOVE => Effect::Move {
            key: r.bytes()?,
            to_db: r.u32()?,
        },
        HASH_SET => Effect::HashSet {
            key: r.bytes()?,
            pairs: r.pairs()?,
        },
        HASH_DEL => Effect::HashDel {
            key: r.bytes()?,
            fields: r.list()?,
        },
        SET_ADD => Effect::SetAdd {
            key: r.bytes()?,
            members: r.list()?,
        },
        SET_REM => Effect::SetRem {
            key: r.bytes()?,
            members: r.list()?,
        },
        ZSET_ADD => Effect::ZsetAdd {
            key: r.bytes()?,
            pairs: r.scored()?,
        },
        ZSET_REM => Effect::ZsetRem {
            key: r.bytes()?,
            members: r.list()?,
        },
        ZSET_POP => Effect::ZsetPop {
            key: r.bytes()?,
            max: r.u8()? != 0,
            count: r.u64()?,
        },
        LIST_PUSH => Effect::ListPush {
            key: r.bytes()?,
            end: r.end()?,
            elements: r.list()?,
        },
        LIST_POP => Effect::ListPop {
            key: r.bytes()?,
            end: r.end()?,
            count: r.u64()?,
        },
        LIST_TRIM => Effect::ListTrim {
            key: r.bytes()?,
            start: r.i64()?,
            stop: r.i64()?,
        },
        STREAM_ADD => Effect::StreamAdd {
            key: r.bytes()?,
            id: r.id()?,
            fields: r.pairs()?,
        },
        STREAM_TRIM => {
            let key = r.bytes()?;
            let min_id = match r.u8()? {
                0 => None,
                _ => Some(r.id()?),
            };
            Effect::StreamTrim { key, min_id }
        }
        STREAM_ACK => {
            let key = r.bytes()?;
            let group = r.bytes()?;
            let n = r.count(16)?;
            let ids = (0..n).map(|_| r.id()).collect::<Result<_, DecodeError>>()?;
            Effect::StreamAck { key, group, ids }
        }
        STREAM_GROUP => {
            let key = r.bytes()?;
            let group = r.bytes()?;
            let last_id = r.id()?;
            let entries_read = r.i64()?;
            let consumers = r.consumers()?;
            // A range is at least two ids and a count; an entry an id, a name length,
            // a time and a count.
            let n = r.count(36)?;
            let ranges = (0..n)
                .map(|_| {
                    let (first, last) = (r.id()?, r.id()?);
                    let m = r.count(36)?;
                    let entries = (0..m)
                        .map(|_| {
                            Ok((
                                r.id()?,
                                Pending {
                                    consumer: r.bytes()?,
                                    delivered_ms: r.i64()?,
                                    deliveries: r.u64()?,
                                },
                            ))
                        })
                        .collect::<Result<_, DecodeError>>()?;
                    Ok(PelRange {
                        first,
                        last,
                        entries,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Effect::StreamGroup {
                key,
                group,
                state: GroupState {
                    last_id,
                    entries_read,
                    consumers,
                    ranges,
                },
            }
        }
        STREAM_GROUPS => {
            let key = r.bytes()?;
            // A group is at least a name length, an id, entries-read and a count.
            let n = r.count(32)?;
            let groups = (0..n)
                .map(|_| {
                    let name = r.bytes()?;
                    let last_id = r.id()?;
                    let entries_read = r.i64()?;
                    let consumers = r.consumers()?;
                    Ok(GroupHeader {
                        name,
                        last_id,
                        entries_read,
                        consumers,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Effect::StreamGroups { key, groups }
        }
        STREAM_SET_ID => Effect::StreamSetId {
            key: r.bytes()?,
            last_id: r.id()?,
            entries_added: r.u64()?,
            max_deleted: r.id()?,
        },
        FLUSH_DB => Effect::FlushDb,
        FLUSH_ALL => Effect::FlushAll,
        SWAP_DB => Effect::SwapDb { other: r.u32()? },
        STRING_WRITE => Effect::StringWrite {
            key: r.bytes()?,
            offset: r.u64()?,
            bytes: r.bytes()?,
        },
        LIST_SET => Effect::ListSet {
            key: r.bytes()?,
            index: r.u64()?,
            element: r.bytes()?,
        },
        LIST_INSERT => Effect::ListInsert {
            key: r.bytes()?,
            after: r.u8()? != 0,
            pivot: r.bytes()?,
            element: r.bytes()?,
        },
        LIST_REM => Effect::ListRem {
            key: r.bytes()?,
            count: r.i64()?,
            element: r.bytes()?,
        },
        ZSET_REM_RANGE => Effect::ZsetRemRange {
            key: r.bytes()?,
            range: r.zrange()?,
        },
        SET_STORE => Effect::SetStore {
            key: r.bytes()?,
            op: match r.u8()? {
                0 => SetOp::Union,
                1 => SetOp::Inter,
                2 => SetOp::Diff,
                b => return Err(DecodeError::BadTag(b)),
            },
            sources: r.list()?,
        },
        COPY => Effect::Copy {
            from: r.bytes()?,
            to: r.bytes()?,
        },
        FUNCTIONS => Effect::Functions { dump: r.bytes()? },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes(r.buf.len()));
    }
    Ok(effect)
}

struct Writer<'a, S: Sink> {
    out: &'a mut S,
    /// The first length that did not fit its u32 (the encoding is then refused).
    too_long: Option<u64>,
}

impl<S: Sink> Writer<'_, S> {
    fn u8(&mut self, v: u8) {
        self.out.put(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.out.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.put(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.out.put(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.out.put(&v.to_bits().to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or_else(|_| {
            self.too_long.get_or_insert(n as u64);
            u32::MAX
        });
        self.u32(n);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.out.put(b);
    }
    fn zrange(&mut self, range: &ZRange) {
        match range {
            ZRange::Rank { start, stop } => {
                self.u8(0);
                self.i64(*start);
                self.i64(*stop);
            }
            ZRange::Score { min, max } => {
                self.u8(1);
                for b in [min, max] {
                    self.f64(b.value);
                    self.u8(u8::from(b.exclusive));
                }
            }
            ZRange::Lex { min, max } => {
                self.u8(2);
                for b in [min, max] {
                    match b {
                        LexBound::NegInf => self.u8(0),
                        LexBound::PosInf => self.u8(1),
                        LexBound::Inclusive(m) => {
                            self.u8(2);
                            self.bytes(m);
                        }
                        LexBound::Exclusive(m) => {
                            self.u8(3);
                            self.bytes(m);
                        }
                    }
                }
            }
        }
    }
    fn id(&mut self, id: &StreamId) {
        self.u64(id.ms);
        self.u64(id.seq);
    }
    fn consumers(&mut self, consumers: &[ConsumerTimes]) {
        self.len(consumers.len());
        for c in consumers {
            self.bytes(&c.name);
            self.i64(c.seen_ms);
            self.i64(c.active_ms);
        }
    }
    fn end(&mut self, end: End) {
        self.u8(match end {
            End::Head => 0,
            End::Tail => 1,
        });
    }
    fn list(&mut self, items: &[Vec<u8>]) {
        self.len(items.len());
        for item in items {
            self.bytes(item);
        }
    }
    fn pairs(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        self.len(pairs.len());
        for (a, b) in pairs {
            self.bytes(a);
            self.bytes(b);
        }
    }
    fn scored(&mut self, pairs: &[(Vec<u8>, f64)]) {
        self.len(pairs.len());
        for (member, score) in pairs {
            self.bytes(member);
            self.f64(*score);
        }
    }
    fn value(&mut self, value: &Value) {
        match value {
            Value::String(s) => {
                self.u8(VALUE_STRING);
                self.bytes(s);
            }
            Value::List(items) => {
                self.u8(VALUE_LIST);
                self.list(items);
            }
            Value::Hash(pairs) => {
                self.u8(VALUE_HASH);
                self.pairs(pairs);
            }
            Value::Set(members) => {
                self.u8(VALUE_SET);
                self.list(members);
            }
            Value::Zset(pairs) => {
                self.u8(VALUE_ZSET);
                self.scored(pairs);
            }
            Value::StreamDump(dump) => {
                self.u8(VALUE_STREAM_DUMP);
                self.bytes(dump);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                left: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn id(&mut self) -> Result<StreamId, DecodeError> {
        Ok(StreamId {
            ms: self.u64()?,
            seq: self.u64()?,
        })
    }
    /// A consumer is at least a name length and two times.
    fn consumers(&mut self) -> Result<Vec<ConsumerTimes>, DecodeError> {
        let n = self.count(20)?;
        (0..n)
            .map(|_| {
                Ok(ConsumerTimes {
                    name: self.bytes()?,
                    seen_ms: self.i64()?,
                    active_ms: self.i64()?,
                })
            })
            .collect()
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// A count of items each at least `min_item_bytes` long: bounded by what is left,
    /// so a corrupt count cannot make us reserve gigabytes.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        let needed = n.saturating_mul(min_item_bytes);
        if needed > self.buf.len() {
            return Err(DecodeError::Truncated {
                needed,
                left: self.buf.len(),
            });
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn end(&mut self) -> Result<End, DecodeError> {
        match self.u8()? {
            0 => Ok(End::Head),
            1 => Ok(End::Tail),
            b => Err(DecodeError::BadEnd(b)),
        }
    }
    fn list(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.bytes()).collect()
    }
    fn pairs(&mut self) -> Result<Pairs, DecodeError> {
        let n = self.count(8)?;
        (0..n).map(|_| Ok((self.bytes()?, self.bytes()?))).collect()
    }
    fn scored(&mut self) -> Result<Vec<(Vec<u8>, f64)>, DecodeError> {
        let n = self.count(12)?;
        (0..n).map(|_| Ok((self.bytes()?, self.f64()?))).collect()
    }
    fn zrange(&mut self) -> Result<ZRange, DecodeError> {
        Ok(match self.u8()? {
            0 => ZRange::Rank {
                start: self.i64()?,
                stop: self.i64()?,
            },
            1 => {
                let mut bound = || -> Result<ScoreBound, DecodeError> {
                    Ok(ScoreBound {
                        value: self.f64()?,
                        exclusive: self.u8()? != 0,
                    })
                };
                let min = bound()?;
                let max = bound()?;
                ZRange::Score { min, max }
            }
            2 => {
                let min = self.lex_bound()?;
                let max = self.lex_bound()?;
                ZRange::Lex { min, max }
            }
            b => return Err(DecodeError::BadTag(b)),
        })
    }
    fn lex_bound(&mut self) -> Result<LexBound, DecodeError> {
        Ok(match self.u8()? {
            0 => LexBound::NegInf,
            1 => LexBound::PosInf,
            2 => LexBound::Inclusive(self.bytes()?),
            3 => LexBound::Exclusive(self.bytes()?),
            b => return Err(DecodeError::BadTag(b)),
        })
    }
    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.u8()? {
            VALUE_STRING => Value::String(self.bytes()?),
            VALUE_LIST => Value::List(self.list()?),
            VALUE_HASH => Value::Hash(self.pairs()?),
            VALUE_SET => Value::Set(self.list()?),
            VALUE_ZSET => Value::Zset(self.scored()?),
            VALUE_STREAM_DUMP => Value::StreamDump(self.bytes()?),
            t => return Err(DecodeError::UnknownValueType(t)),
        })
    }
}
