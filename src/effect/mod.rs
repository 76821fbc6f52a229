//! Effects: the deterministic description of what a write changed, as stored in the log.
//!
//! The log never holds what a client typed; it holds what changed (see docs/design.md,
//! "Effects, not commands"). Every effect names one db and at most one key (SWAPDB and MOVE
//! name a second db, RENAME a second key), and replaying the same effects on the same prior
//! state always yields the same state: values are read from the key after the command ran,
//! expiries are absolute, pops name a count rather than the popped elements.
//!
//! Invariants:
//! - `decode(kind, encode(e)) == e` for every effect (tested, including property tests).
//! - Decoding never panics on arbitrary bytes: a bad payload is a typed `DecodeError`.
//! - The byte format is explicit little-endian (docs/format.md, "Effect payloads"); it does
//!   not depend on Rust layout. Kinds are stable numbers: new kinds get new numbers.

#![forbid(unsafe_code)]

mod codec;
pub mod model;
mod zrange;

pub use codec::{decode, encode, encoded_len, kind_of, DecodeError, EncodeError, Sink};
pub use zrange::{zset_order, LexBound, ScoreBound, ZRange};

/// Field/value pairs (hash fields, stream entry fields), in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A Redis stream entry id (`ms-seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A consumer group's state after XREADGROUP / XCLAIM / XAUTOCLAIM: its cursor, the times
/// of the consumers they named (and of every owner of an entry below), and ranges of its
/// pending entries as they are now: between `first` and `last` (inclusive) the group's
/// PEL holds exactly `entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub last_id: StreamId,
    /// The group's entries-read counter; -1 where the server holds it as unknown.
    pub entries_read: i64,
    pub consumers: Vec<ConsumerTimes>,
    pub ranges: Vec<PelRange>,
}

/// A consumer group without its pending entries: cursor, entries-read, consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeader {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    pub entries_read: i64,
    pub consumers: Vec<ConsumerTimes>,
}

/// Pending entries between two ids, inclusive, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PelRange {
    pub first: StreamId,
    pub last: StreamId,
    pub entries: Vec<(StreamId, Pending)>,
}

/// A consumer's seen time and (Valkey 8, Redis 7.2+) active time, absolute ms; -1 for an
/// active time the server does not keep or that was never set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerTimes {
    pub name: Vec<u8>,
    pub seen_ms: i64,
    pub active_ms: i64,
}

/// A pending entry: its owner, last delivery time (absolute ms) and delivery count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub consumer: Vec<u8>,
    pub delivered_ms: i64,
    pub deliveries: u64,
}

/// A whole typed value, as read from a key after a command ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    /// Elements from head to tail.
    List(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Set(Vec<Vec<u8>>),
    Zset(Vec<(Vec<u8>, f64)>),
    /// A stream as the server's own `DUMP` serialization: the module API cannot read
    /// consumer groups, so streams round-trip through `DUMP`/`RESTORE` to keep them whole.
    StreamDump(Vec<u8>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::Zset(_) => "zset",
            Value::StreamDump(_) => "stream",
        }
    }
}

/// Which end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Head,
    Tail,
}

/// No expiry, in the encoding of `Effect::Put::expire_at_ms`.
pub const NO_EXPIRE: i64 = -1;

/// One deterministic change to one db. The db itself travels in the log record header.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Set the key to this whole value with this absolute expiry (unix ms, or NO_EXPIRE).
    Put {
        key: Vec<u8>,
        value: Value,
        expire_at_ms: i64,
    },
    Delete {
        key: Vec<u8>,
    },
    ExpireAt {
        key: Vec<u8>,
        at_ms: i64,
    },
    Persist {
        key: Vec<u8>,
    },
    /// INCRBY semantics (integer strings; a missing key counts as 0).
    IncrBy {
        key: Vec<u8>,
        by: i64,
    },
    /// INCRBYFLOAT with the increment as the client wrote it: replayed by the server's own
    /// long-double arithmetic, which is what produced the acknowledged value.
    IncrByFloat {
        key: Vec<u8>,
        by: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Move the key from the record's db to `to_db`.
    Move {
        key: Vec<u8>,
        to_db: u32,
    },
    HashSet {
        key: Vec<u8>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    HashDel {
        key: Vec<u8>,
        fields: Vec<Vec<u8>>,
    },
    SetAdd {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    SetRem {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    /// Members with their score after the command (ZADD, ZINCRBY, GEOADD).
    ZsetAdd {
        key: Vec<u8>,
        pairs: Vec<(Vec<u8>, f64)>,
    },
    ZsetRem {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    /// Pop up to `count` members with the lowest (`max == false`) or highest scores.
    ZsetPop {
        key: Vec<u8>,
        max: bool,
        count: u64,
    },
    /// Push elements one by one at `end`, in order (as LPUSH/RPUSH do with their arguments).
    ListPush {
        key: Vec<u8>,
        end: End,
        elements: Vec<Vec<u8>>,
    },
    /// Pop up to `count` elements from `end`.
    ListPop {
        key: Vec<u8>,
        end: End,
        count: u64,
    },
    /// LTRIM semantics (inclusive, negative indexes from the tail).
    ListTrim {
        key: Vec<u8>,
        start: i64,
        stop: i64,
    },
    StreamAdd {
        key: Vec<u8>,
        id: StreamId,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Remove every entry below `min_id`; `None` removes every entry (the stream stays).
    StreamTrim {
        key: Vec<u8>,
        min_id: Option<StreamId>,
    },
    /// XACK: remove `ids` from `group`'s pending entries and from their consumers'
    /// (nothing for an id that is not pending, a missing group or a missing key).
    StreamAck {
        key: Vec<u8>,
        group: Vec<u8>,
        ids: Vec<StreamId>,
    },
    /// XREADGROUP, XCLAIM or XAUTOCLAIM on a big stream: what they left in `group`, read
    /// back from the server after they ran (so replaying it twice, or after a later state of the same
    /// entries, converges on the same group).
    StreamGroup {
        key: Vec<u8>,
        group: Vec<u8>,
        state: GroupState,
    },
    /// XGROUP SETID / DESTROY / CREATECONSUMER / DELCONSUMER on a big stream: its groups
    /// as they are now, read back inside the command: exactly these groups, each with
    /// exactly these consumers (a consumer's pending entries go with it).
    StreamGroups {
        key: Vec<u8>,
        groups: Vec<GroupHeader>,
    },
    /// XSETID: the stream's last id, entries-added counter and max deleted id as they are
    /// after it (replayed in order with XSETID: it orders against the entry records).
    StreamSetId {
        key: Vec<u8>,
        last_id: StreamId,
        entries_added: u64,
        max_deleted: StreamId,
    },
    FlushDb,
    FlushAll,
    /// Swap the record's db with `other`.
    SwapDb {
        other: u32,
    },
    /// SETRANGE semantics: write `bytes` at `offset` of the string, zero-padding it up to
    /// there; a missing key becomes a string (unless `bytes` is empty); the expiry stays.
    /// APPEND, SETRANGE, SETBIT and BITFIELD are logged as the bytes they left.
    StringWrite {
        key: Vec<u8>,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// LSET with the index counted from the head.
    ListSet {
        key: Vec<u8>,
        index: u64,
        element: Vec<u8>,
    },
    /// LINSERT: `element` goes before (or `after`) the first `pivot` from the head.
    ListInsert {
        key: Vec<u8>,
        after: bool,
        pivot: Vec<u8>,
        element: Vec<u8>,
    },
    /// LREM: remove `count` occurrences of `element` from the head (from the tail when
    /// negative; every one when 0).
    ListRem {
        key: Vec<u8>,
        count: i64,
        element: Vec<u8>,
    },
    /// ZREMRANGEBYRANK / BYSCORE / BYLEX (see `ZRange` for when a lex range is exact).
    ZsetRemRange {
        key: Vec<u8>,
        range: ZRange,
    },
    /// SUNIONSTORE / SINTERSTORE / SDIFFSTORE: `key` becomes the result of `op` over the
    /// sets `sources` of the same db (a missing source is empty), without an expiry; an
    /// empty result deletes it.
    SetStore {
        key: Vec<u8>,
        op: SetOp,
        sources: Vec<Vec<u8>>,
    },
    /// COPY within the record's db: `to` becomes a copy of `from`'s value and expiry.
    Copy {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// The server's function libraries, all of them, as its own `FUNCTION DUMP` payload
    /// (restored with `FUNCTION RESTORE ... FLUSH`). Not about a db: the record's db is 0.
    Functions {
        dump: Vec<u8>,
    },
}

/// The set operation of a `SetStore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Inter,
    Diff,
}

impl Effect {
    /// The key the effect is about, if it has one (for reports and tools).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Effect::Put { key, .. }
            | Effect::Delete { key }
            | Effect::ExpireAt { key, .. }
            | Effect::Persist { key }
            | Effect::IncrBy { key, .. }
            | Effect::IncrByFloat { key, .. }
            | Effect::Move { key, .. }
            | Effect::HashSet { key, .. }
            | Effect::HashDel { key, .. }
            | Effect::SetAdd { key, .. }
            | Effect::SetRem { key, .. }
            | Effect::ZsetAdd { key, .. }
            | Effect::ZsetRem { key, .. }
            | Effect::ZsetPop { key, .. }
            | Effect::ListPush { key, .. }
            | Effect::ListPop { key, .. }
            | Effect::ListTrim { key, .. }
            | Effect::StreamAdd { key, .. }
            | Effect::StreamTrim { key, .. }
            | Effect::StreamAck { key, .. }
            | Effect::StreamGroup { key, .. }
            | Effect::StreamGroups { key, .. }
            | Effect::StreamSetId { key, .. }
            | Effect::StringWrite { key, .. }
            | Effect::ListSet { key, .. }
            | Effect::ListInsert { key, .. }
            | Effect::ListRem { key, .. }
            | Effect::ZsetRemRange { key, .. }
            | Effect::SetStore { key, .. } => Some(key),
            Effect::Rename { from, .. } | Effect::Copy { from, .. } => Some(from),
            Effect::FlushDb
            | Effect::FlushAll
            | Effect::SwapDb { .. }
            | Effect::Functions { .. } => None,
        }
    }

    /// A short stable name (for `nvm-tool dump` and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Effect::Put { .. } => "put",
            Effect::Delete { .. } => "delete",
            Effect::ExpireAt { .. } => "expire-at",
            Effect::Persist { .. } => "persist",
            Effect::IncrBy { .. } => "incr-by",
            Effect::IncrByFloat { .. } => "incr-by-float",
            Effect::Rename { .. } => "rename",
            Effect::Move { .. } => "move",
            Effect::HashSet { .. } => "hash-set",
            Effect::HashDel { .. } => "hash-del",
            Effect::SetAdd { .. } => "set-add",
            Effect::SetRem { .. } => "set-rem",
            Effect::ZsetAdd { .. } => "zset-add",
            Effect::ZsetRem { .. } => "zset-rem",
            Effect::ZsetPop { .. } => "zset-pop",
            Effect::ListPush { .. } => "list-push",
            Effect::ListPop { .. } => "list-pop",
            Effect::ListTrim { .. } => "list-trim",
            Effect::StreamAdd { .. } => "stream-add",
            Effect::StreamTrim { .. } => "stream-trim",
            Effect::StreamAck { .. } => "stream-ack",
            Effect::StreamGroup { .. } => "stream-group",
            Effect::StreamGroups { .. } => "stream-groups",
            Effect::StreamSetId { .. } => "stream-set-id",
            Effect::FlushDb => "flush-db",
            Effect::FlushAll => "flush-all",
            Effect::SwapDb { .. } => "swap-db",
            Effect::StringWrite { .. } => "string-write",
            Effect::ListSet { .. } => "list-set",
            Effect::ListInsert { .. } => "list-insert",
            Effect::ListRem { .. } => "list-rem",
            Effect::ZsetRemRange { .. } => "zset-rem-range",
            Effect::SetStore { .. } => "set-store",
            Effect::Copy { .. } => "copy",
            Effect::Functions { .. } => "functions",
        }
    }
}
