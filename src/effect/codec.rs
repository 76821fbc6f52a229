//! The byte encoding of effects (the payload of a log record; the kind is in the header).
//!
//! Little-endian throughout: `bytes` = u32 length + data, `list<T>` = u32 count + items,
//! i64/u64 as 8 bytes, f64 as its IEEE-754 bits in 8 bytes, `end` as one byte (0 head,
//! 1 tail). The layout of each kind is in docs/format.md. Decoding checks every length
//! against what is left, rejects trailing bytes, and never allocates more than the
//! payload can hold, so a corrupt payload is an error rather than a panic or an OOM.

use super::{Effect, End, Pairs, StreamId, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    UnknownKind(u8),
    UnknownValueType(u8),
    Truncated { needed: usize, left: usize },
    TrailingBytes(usize),
    BadEnd(u8),
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

const VALUE_STRING: u8 = 0;
const VALUE_LIST: u8 = 1;
const VALUE_HASH: u8 = 2;
const VALUE_SET: u8 = 3;
const VALUE_ZSET: u8 = 4;
const VALUE_STREAM_DUMP: u8 = 5;

/// Appends the payload of `effect` to `out` and returns its kind.
pub fn encode(effect: &Effect, out: &mut Vec<u8>) -> u8 {
    let mut w = Writer(out);
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
            w.u8(*to_db);
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
            w.u64(id.ms);
            w.u64(id.seq);
            w.pairs(fields);
            STREAM_ADD
        }
        Effect::StreamTrim { key, min_id } => {
            w.bytes(key);
            match min_id {
                None => w.u8(0),
                Some(id) => {
                    w.u8(1);
                    w.u64(id.ms);
                    w.u64(id.seq);
                }
            }
            STREAM_TRIM
        }
        Effect::FlushDb => FLUSH_DB,
        Effect::FlushAll => FLUSH_ALL,
        Effect::SwapDb { other } => {
            w.u8(*other);
            SWAP_DB
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
            to_db: r.u8()?,
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
            id: StreamId {
                ms: r.u64()?,
                seq: r.u64()?,
            },
            fields: r.pairs()?,
        },
        STREAM_TRIM => {
            let key = r.bytes()?;
            let min_id = match r.u8()? {
                0 => None,
                _ => Some(StreamId {
                    ms: r.u64()?,
                    seq: r.u64()?,
                }),
            };
            Effect::StreamTrim { key, min_id }
        }
        FLUSH_DB => Effect::FlushDb,
        FLUSH_ALL => Effect::FlushAll,
        SWAP_DB => Effect::SwapDb { other: r.u8()? },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes(r.buf.len()));
    }
    Ok(effect)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        // Values above 4 GiB cannot reach here: the log refuses records over 1 GiB.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
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
