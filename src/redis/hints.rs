//! Argv hints: what the command filter saw, used to log field-level effects.
//!
//! A keyspace notification names the key and the kind of change but not the fields, so
//! logging `HSET big f v` would mean reading the whole hash. The command filter sees the
//! argv just before the command runs; when a notification provably belongs to that argv,
//! its fields are enough to log an O(argument) effect. "Provably" is decided here:
//! - hints are found by the identity of the key object: the server passes the command's
//!   own argv object as the notification's key, and every command is filtered before it
//!   runs (commands EXEC runs were filtered when queued, and their argv objects moved into
//!   the queue unchanged). Each filtered command first forgets every hint at the addresses
//!   of its own arguments, so an address reused by a later object never keeps a stale hint;
//! - the event name must be one that command fires, on one of its own keys, at the end
//!   (head or tail) that command touches, and the key bytes must match;
//! - each hint can be used as many times as its command fires events (1, or 2 for SMOVE and
//!   LMOVE), so a later event (a blocked client served with the pusher's key object) never
//!   reuses it.
//!
//! When any check fails the caller falls back to reading the key's whole value, which is
//! always right. Values are read from the key when they can be (HINCRBY, ZADD INCR, LMOVE's
//! element), so the log holds results, not requests; strings are the exception, because
//! reading one can have side effects in the server (see `capture`).

#![forbid(unsafe_code)]

use crate::effect::{End, LexBound, ScoreBound, SetOp, ZRange};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// The commands whose argv can make an effect field-level.
const HINTED: &[&[u8]] = &[
    b"set",
    b"setnx",
    b"setex",
    b"psetex",
    b"getset",
    b"mset",
    b"msetnx",
    b"incr",
    b"decr",
    b"incrby",
    b"decrby",
    b"incrbyfloat",
    b"hset",
    b"hmset",
    b"hsetnx",
    b"hincrby",
    b"hincrbyfloat",
    b"hdel",
    b"sadd",
    b"srem",
    b"smove",
    b"zadd",
    b"zincrby",
    b"geoadd",
    b"zrem",
    b"zpopmin",
    b"zpopmax",
    b"bzpopmin",
    b"bzpopmax",
    b"zmpop",
    b"bzmpop",
    b"lpush",
    b"rpush",
    b"lpushx",
    b"rpushx",
    b"lpop",
    b"rpop",
    b"blpop",
    b"brpop",
    b"lmpop",
    b"blmpop",
    b"lmove",
    b"blmove",
    b"rpoplpush",
    b"brpoplpush",
    b"ltrim",
    b"lset",
    b"linsert",
    b"lrem",
    b"append",
    b"setrange",
    b"setbit",
    b"bitfield",
    b"zremrangebyrank",
    b"zremrangebyscore",
    b"zremrangebylex",
    b"sunionstore",
    b"sinterstore",
    b"sdiffstore",
    b"copy",
    b"spop",
    b"restore",
];

/// The longest hinted command name.
const MAX_NAME: usize = 16;

/// Lower-cases an ASCII command name into `buf`, or `None` if it cannot be a hinted one.
pub fn hinted_name(name: &[u8]) -> Option<&'static [u8]> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let lower = &buf[..name.len()];
    HINTED.iter().copied().find(|h| *h == lower)
}

/// Whether a hinted command's argv is worth keeping: the value of a single-key SET above
/// 64 KiB is not copied into the hint, because logging the key's value (read in place: a
/// value that big is raw-encoded, so the read changes nothing) costs one copy instead of
/// two. (MSET keeps its hint: its other values may be small, embstr-encoded ones.)
pub fn worth_keeping(command: &[u8], arg_bytes: u64) -> bool {
    const STRING_PUTS: &[&[u8]] = &[b"set", b"setnx", b"setex", b"psetex", b"getset"];
    arg_bytes <= 64 << 10 || !STRING_PUTS.contains(&command)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub command: &'static [u8],
    /// argv without the command name.
    pub args: Vec<Vec<u8>>,
    pub uses_left: u32,
}

/// How many events a command's hint explains: one per key for MSET (each key fires its
/// own `set`), two for the moves, else one.
fn uses_of(command: &[u8], args: &[Vec<u8>]) -> u32 {
    match command {
        b"smove" | b"lmove" | b"blmove" | b"rpoplpush" | b"brpoplpush" => 2,
        b"mset" | b"msetnx" => u32::try_from(args.len() / 2).unwrap_or(u32::MAX),
        _ => 1,
    }
}

impl Hint {
    pub fn new(command: &'static [u8], args: Vec<Vec<u8>>) -> Hint {
        let uses_left = uses_of(command, &args);
        Hint {
            command,
            args,
            uses_left,
        }
    }
}

/// A field-level effect to build; the caller reads values from the key where needed.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The string value written (SET family). Every such command clears the key's TTL
    /// (an EX/PX option fires its own `expire` event afterwards) except SET KEEPTTL,
    /// for which the expiry must be read from the key.
    StringValue {
        value: Vec<u8>,
        keep_ttl: bool,
    },
    IncrBy(i64),
    /// The increment as the client wrote it: replayed by the server's own arithmetic.
    IncrByFloat(Vec<u8>),
    /// HashSet of these fields with their current values.
    HashFields(Vec<Vec<u8>>),
    HashDel(Vec<Vec<u8>>),
    SetAdd(Vec<Vec<u8>>),
    SetRem(Vec<Vec<u8>>),
    /// ZsetAdd of these members with their current scores.
    ZsetMembers(Vec<Vec<u8>>),
    ZsetRem(Vec<Vec<u8>>),
    ZsetPop {
        max: bool,
        count: u64,
    },
    ListPush {
        end: End,
        elements: Vec<Vec<u8>>,
    },
    /// The element now at `end` was pushed there (LMOVE's destination).
    ListPushFromState {
        end: End,
    },
    ListPop {
        end: End,
        count: u64,
    },
    ListTrim {
        start: i64,
        stop: i64,
    },
    /// APPEND of these bytes: they end the string now.
    Append(Vec<u8>),
    /// SETRANGE: these bytes at this offset.
    SetRange {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// These byte ranges (offset, length) of the string changed: log what they hold now
    /// (SETBIT, BITFIELD SET/INCRBY).
    StringBytes(Vec<(u64, u64)>),
    /// LSET with the index as given (negative from the tail).
    ListSet {
        index: i64,
        element: Vec<u8>,
    },
    ListInsert {
        after: bool,
        pivot: Vec<u8>,
        element: Vec<u8>,
    },
    ListRem {
        count: i64,
        element: Vec<u8>,
    },
    /// A lex range is exact only when the key's scores are all equal (checked on the key).
    ZsetRemRange(ZRange),
    SetStore {
        op: SetOp,
        sources: Vec<Vec<u8>>,
    },
    /// COPY from this key of the same db.
    CopyFrom(Vec<u8>),
    /// RESTORE with this payload (a string's value is taken from it, not read).
    Restore(Vec<u8>),
    /// SPOP: without a count the member is already gone when the event fires (log the
    /// set now); with one, Redis notifies before removing (log it at the iteration's end).
    Spop {
        with_count: bool,
    },
}

fn eq_ci(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn end_of(word: &[u8]) -> Option<End> {
    if eq_ci(word, "left") {
        Some(End::Head)
    } else if eq_ci(word, "right") {
        Some(End::Tail)
    } else {
        None
    }
}

/// Where a `*pop`/`*push` event acts.
fn event_end(event: &[u8]) -> Option<End> {
    match event {
        b"lpush" | b"lpop" => Some(End::Head),
        b"rpush" | b"rpop" => Some(End::Tail),
        _ => None,
    }
}

/// `numkeys key... rest` -> (keys, rest), bounds-checked.
type KeysAndRest<'a> = (&'a [Vec<u8>], &'a [Vec<u8>]);

fn numkeys_split(args: &[Vec<u8>]) -> Option<KeysAndRest<'_>> {
    let n = usize::try_from(parse_u64(args.first()?)?).ok()?;
    let keys = args.get(1..1 + n)?;
    Some((keys, &args[1 + n..]))
}

/// `[COUNT n]` in `rest` (LMPOP/ZMPOP), default 1.
fn count_option(rest: &[Vec<u8>]) -> Option<u64> {
    match rest {
        [] => Some(1),
        [word, n] if eq_ci(word, "count") => parse_u64(n),
        _ => None,
    }
}

/// Which of the hint's arguments must be the notified key for a rule to apply.
#[derive(Clone, Copy)]
enum KeyAt {
    First,
    Second,
    /// A multi-key command: the rule's builder checks the key itself.
    Checked,
}

/// One row of the table of what a command's events mean: when `command` fires `event`
/// on the key at `key`, `build` makes the plan from the hint (or `None`: fall back).
struct Rule {
    commands: &'static [&'static [u8]],
    events: &'static [&'static [u8]],
    key: KeyAt,
    build: fn(&Hint, &[u8], &[u8]) -> Option<Plan>,
}

const RULES: &[Rule] = &[
    rule(
        &[b"set", b"setnx", b"getset"],
        &[b"set"],
        KeyAt::First,
        set_value,
    ),
    rule(&[b"setex", b"psetex"], &[b"set"], KeyAt::First, setex_value),
    rule(&[b"mset", b"msetnx"], &[b"set"], KeyAt::Checked, mset_value),
    rule(
        &[b"incr", b"decr", b"incrby", b"decrby"],
        &[b"incrby"],
        KeyAt::First,
        incr_by,
    ),
    rule(
        &[b"incrbyfloat"],
        &[b"incrbyfloat"],
        KeyAt::First,
        incr_by_float,
    ),
    rule(&[b"hset", b"hmset"], &[b"hset"], KeyAt::First, hash_fields),
    rule(&[b"hsetnx"], &[b"hset"], KeyAt::First, one_hash_field),
    rule(&[b"hincrby"], &[b"hincrby"], KeyAt::First, one_hash_field),
    rule(
        &[b"hincrbyfloat"],
        &[b"hincrbyfloat"],
        KeyAt::First,
        one_hash_field,
    ),
    rule(&[b"hdel"], &[b"hdel"], KeyAt::First, |h, _, _| {
        Some(Plan::HashDel(h.args.get(1..)?.to_vec()))
    }),
    rule(&[b"sadd"], &[b"sadd"], KeyAt::First, |h, _, _| {
        Some(Plan::SetAdd(h.args.get(1..)?.to_vec()))
    }),
    rule(&[b"srem"], &[b"srem"], KeyAt::First, |h, _, _| {
        Some(Plan::SetRem(h.args.get(1..)?.to_vec()))
    }),
    rule(&[b"smove"], &[b"srem"], KeyAt::First, |h, _, _| {
        Some(Plan::SetRem(vec![h.args.get(2)?.clone()]))
    }),
    rule(&[b"smove"], &[b"sadd"], KeyAt::Second, |h, _, _| {
        Some(Plan::SetAdd(vec![h.args.get(2)?.clone()]))
    }),
    rule(&[b"zadd"], &[b"zadd", b"zincr"], KeyAt::First, |h, _, _| {
        zadd_members(h.args.get(1..)?).map(Plan::ZsetMembers)
    }),
    rule(&[b"zincrby"], &[b"zincr"], KeyAt::First, |h, _, _| {
        Some(Plan::ZsetMembers(vec![h.args.get(2)?.clone()]))
    }),
    rule(&[b"geoadd"], &[b"zadd"], KeyAt::First, |h, _, _| {
        geoadd_members(h.args.get(1..)?).map(Plan::ZsetMembers)
    }),
    rule(&[b"zrem"], &[b"zrem"], KeyAt::First, |h, _, _| {
        Some(Plan::ZsetRem(h.args.get(1..)?.to_vec()))
    }),
    rule(
        &[b"zpopmin", b"zpopmax"],
        &[b"zpopmin", b"zpopmax"],
        KeyAt::First,
        zpop,
    ),
    rule(
        &[b"bzpopmin", b"bzpopmax"],
        &[b"zpopmin", b"zpopmax"],
        KeyAt::Checked,
        bzpop,
    ),
    rule(
        &[b"zmpop", b"bzmpop"],
        &[b"zpopmin", b"zpopmax"],
        KeyAt::Checked,
        zmpop,
    ),
    rule(&[b"lpush", b"lpushx"], &[b"lpush"], KeyAt::First, push),
    rule(&[b"rpush", b"rpushx"], &[b"rpush"], KeyAt::First, push),
    rule(&[b"lpop"], &[b"lpop"], KeyAt::First, pop),
    rule(&[b"rpop"], &[b"rpop"], KeyAt::First, pop),
    rule(&[b"blpop"], &[b"lpop"], KeyAt::Checked, blocking_pop),
    rule(&[b"brpop"], &[b"rpop"], KeyAt::Checked, blocking_pop),
    rule(
        &[b"lmpop", b"blmpop"],
        &[b"lpop", b"rpop"],
        KeyAt::Checked,
        lmpop,
    ),
    rule(
        &[b"lmove", b"blmove", b"rpoplpush", b"brpoplpush"],
        &[b"lpop", b"rpop", b"lpush", b"rpush"],
        KeyAt::Checked,
        lmove,
    ),
    rule(&[b"ltrim"], &[b"ltrim"], KeyAt::First, |h, _, _| {
        Some(Plan::ListTrim {
            start: parse_i64(h.args.get(1)?)?,
            stop: parse_i64(h.args.get(2)?)?,
        })
    }),
    rule(&[b"lset"], &[b"lset"], KeyAt::First, |h, _, _| {
        Some(Plan::ListSet {
            index: parse_i64(h.args.get(1)?)?,
            element: h.args.get(2)?.clone(),
        })
    }),
    rule(&[b"linsert"], &[b"linsert"], KeyAt::First, linsert),
    rule(&[b"lrem"], &[b"lrem"], KeyAt::First, |h, _, _| {
        Some(Plan::ListRem {
            count: parse_i64(h.args.get(1)?)?,
            element: h.args.get(2)?.clone(),
        })
    }),
    rule(
        &[b"append"],
        &[b"append"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, bytes] => Some(Plan::Append(bytes.clone())),
            _ => None,
        },
    ),
    rule(
        &[b"setrange"],
        &[b"setrange"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, offset, bytes] => Some(Plan::SetRange {
                offset: parse_u64(offset)?,
                bytes: bytes.clone(),
            }),
            _ => None,
        },
    ),
    rule(
        &[b"setbit"],
        &[b"setbit"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, offset, _] => Some(Plan::StringBytes(vec![(parse_u64(offset)? / 8, 1)])),
            _ => None,
        },
    ),
    rule(&[b"bitfield"], &[b"setbit"], KeyAt::First, |h, _, _| {
        bitfield_writes(h.args.get(1..)?).map(Plan::StringBytes)
    }),
    rule(
        &[b"zremrangebyrank"],
        &[b"zremrangebyrank"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, start, stop] => Some(Plan::ZsetRemRange(ZRange::Rank {
                start: parse_i64(start)?,
                stop: parse_i64(stop)?,
            })),
            _ => None,
        },
    ),
    rule(
        &[b"zremrangebyscore"],
        &[b"zremrangebyscore"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, min, max] => Some(Plan::ZsetRemRange(ZRange::Score {
                min: score_bound(min)?,
                max: score_bound(max)?,
            })),
            _ => None,
        },
    ),
    rule(
        &[b"zremrangebylex"],
        &[b"zremrangebylex"],
        KeyAt::First,
        |h, _, _| match h.args.as_slice() {
            [_, min, max] => Some(Plan::ZsetRemRange(ZRange::Lex {
                min: lex_bound(min)?,
                max: lex_bound(max)?,
            })),
            _ => None,
        },
    ),
    rule(
        &[b"sunionstore"],
        &[b"sunionstore"],
        KeyAt::First,
        |h, _, _| set_store(h, SetOp::Union),
    ),
    rule(
        &[b"sinterstore"],
        &[b"sinterstore"],
        KeyAt::First,
        |h, _, _| set_store(h, SetOp::Inter),
    ),
    rule(
        &[b"sdiffstore"],
        &[b"sdiffstore"],
        KeyAt::First,
        |h, _, _| set_store(h, SetOp::Diff),
    ),
    rule(&[b"copy"], &[b"copy_to"], KeyAt::Second, copy),
    rule(&[b"restore"], &[b"restore"], KeyAt::First, |h, _, _| {
        Some(Plan::Restore(h.args.get(2)?.clone()))
    }),
    rule(&[b"spop"], &[b"spop"], KeyAt::First, |h, _, _| {
        Some(Plan::Spop {
            with_count: h.args.len() > 1,
        })
    }),
];

const fn rule(
    commands: &'static [&'static [u8]],
    events: &'static [&'static [u8]],
    key: KeyAt,
    build: fn(&Hint, &[u8], &[u8]) -> Option<Plan>,
) -> Rule {
    Rule {
        commands,
        events,
        key,
        build,
    }
}

/// The plan for `event` on `key`, if the hint proves which fields changed.
pub fn plan(hint: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let rule = RULES
        .iter()
        .find(|r| r.commands.contains(&hint.command) && r.events.contains(&event))?;
    let at = |i: usize| hint.args.get(i).map(|x| x.as_slice()) == Some(key);
    let key_fits = match rule.key {
        KeyAt::First => at(0),
        KeyAt::Second => at(1),
        KeyAt::Checked => true,
    };
    if !key_fits {
        return None;
    }
    (rule.build)(hint, event, key)
}

// ----- the builders the table names -----

fn set_value(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    Some(Plan::StringValue {
        value: h.args.get(1)?.clone(),
        keep_ttl: h.command == b"set" && h.args.iter().skip(2).any(|w| eq_ci(w, "keepttl")),
    })
}

fn setex_value(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    Some(Plan::StringValue {
        value: h.args.get(2)?.clone(),
        keep_ttl: false,
    })
}

fn mset_value(h: &Hint, _: &[u8], key: &[u8]) -> Option<Plan> {
    let a = &h.args;
    if a.is_empty() || !a.len().is_multiple_of(2) {
        return None;
    }
    // The last pair for the key wins, as it does in the server.
    a.chunks(2)
        .rfind(|p| p[0] == key)
        .map(|p| Plan::StringValue {
            value: p[1].clone(),
            keep_ttl: false,
        })
}

fn incr_by(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    let by = match h.command {
        b"incr" => 1,
        b"decr" => -1,
        b"incrby" => parse_i64(h.args.get(1)?)?,
        _ => parse_i64(h.args.get(1)?)?.checked_neg()?,
    };
    Some(Plan::IncrBy(by))
}

fn incr_by_float(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    Some(Plan::IncrByFloat(h.args.get(1)?.clone()))
}

fn hash_fields(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    let rest = h.args.get(1..)?;
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return None;
    }
    Some(Plan::HashFields(
        rest.chunks(2).map(|p| p[0].clone()).collect(),
    ))
}

fn one_hash_field(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    Some(Plan::HashFields(vec![h.args.get(1)?.clone()]))
}

fn zpop(h: &Hint, event: &[u8], _: &[u8]) -> Option<Plan> {
    let max = event == b"zpopmax";
    if (h.command == b"zpopmax") != max {
        return None;
    }
    let count = match h.args.get(1) {
        None => 1,
        Some(n) => parse_u64(n)?,
    };
    Some(Plan::ZsetPop { max, count })
}

fn bzpop(h: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let max = event == b"zpopmax";
    if (h.command == b"bzpopmax") != max {
        return None;
    }
    let keys = h.args.get(..h.args.len().checked_sub(1)?)?;
    keys.iter()
        .any(|k| k == key)
        .then_some(Plan::ZsetPop { max, count: 1 })
}

fn zmpop(h: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let args = if h.command == b"bzmpop" {
        h.args.get(1..)?
    } else {
        &h.args
    };
    let (keys, rest) = numkeys_split(args)?;
    let (dir, rest) = rest.split_first()?;
    let max = event == b"zpopmax";
    let dir_max = if eq_ci(dir, "max") {
        true
    } else if eq_ci(dir, "min") {
        false
    } else {
        return None;
    };
    if dir_max != max || !keys.iter().any(|k| k == key) {
        return None;
    }
    Some(Plan::ZsetPop {
        max,
        count: count_option(rest)?,
    })
}

fn push(h: &Hint, event: &[u8], _: &[u8]) -> Option<Plan> {
    Some(Plan::ListPush {
        end: event_end(event)?,
        elements: h.args.get(1..)?.to_vec(),
    })
}

fn pop(h: &Hint, event: &[u8], _: &[u8]) -> Option<Plan> {
    let count = match h.args.get(1) {
        None => 1,
        Some(n) => parse_u64(n)?,
    };
    Some(Plan::ListPop {
        end: event_end(event)?,
        count,
    })
}

fn blocking_pop(h: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let keys = h.args.get(..h.args.len().checked_sub(1)?)?;
    keys.iter().any(|k| k == key).then_some(Plan::ListPop {
        end: event_end(event)?,
        count: 1,
    })
}

fn lmpop(h: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let args = if h.command == b"blmpop" {
        h.args.get(1..)?
    } else {
        &h.args
    };
    let (keys, rest) = numkeys_split(args)?;
    let (dir, rest) = rest.split_first()?;
    let end = end_of(dir)?;
    if Some(end) != event_end(event) || !keys.iter().any(|k| k == key) {
        return None;
    }
    Some(Plan::ListPop {
        end,
        count: count_option(rest)?,
    })
}

fn lmove(h: &Hint, event: &[u8], key: &[u8]) -> Option<Plan> {
    let a = &h.args;
    let (src, dst) = (a.first()?, a.get(1)?);
    let (from, to) = match h.command {
        b"lmove" | b"blmove" => (end_of(a.get(2)?)?, end_of(a.get(3)?)?),
        _ => (End::Tail, End::Head),
    };
    match event {
        b"lpop" | b"rpop" if src == key && event_end(event) == Some(from) => Some(Plan::ListPop {
            end: from,
            count: 1,
        }),
        b"lpush" | b"rpush" if dst == key && event_end(event) == Some(to) => {
            Some(Plan::ListPushFromState { end: to })
        }
        _ => None,
    }
}

fn linsert(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    let a = &h.args;
    let after = if eq_ci(a.get(1)?, "after") {
        true
    } else if eq_ci(a.get(1)?, "before") {
        false
    } else {
        return None;
    };
    Some(Plan::ListInsert {
        after,
        pivot: a.get(2)?.clone(),
        element: a.get(3)?.clone(),
    })
}

fn set_store(h: &Hint, op: SetOp) -> Option<Plan> {
    let sources = h.args.get(1..).filter(|s| !s.is_empty())?.to_vec();
    Some(Plan::SetStore { op, sources })
}

/// COPY within the db: with `DB n` the source is in the client's db, which a
/// notification cannot know.
fn copy(h: &Hint, _: &[u8], _: &[u8]) -> Option<Plan> {
    let rest = h.args.get(2..)?;
    if !rest.iter().all(|w| eq_ci(w, "replace")) {
        return None;
    }
    Some(Plan::CopyFrom(h.args.first()?.clone()))
}

/// The byte ranges BITFIELD's SET and INCRBY subcommands write (after the key), or
/// `None` if the arguments do not parse as the server would run them.
fn bitfield_writes(args: &[Vec<u8>]) -> Option<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let op = &args[i];
        if eq_ci(op, "overflow") {
            i += 2;
            continue;
        }
        let takes_value = eq_ci(op, "set") || eq_ci(op, "incrby");
        if !takes_value && !eq_ci(op, "get") {
            return None;
        }
        let (ty, off) = (args.get(i + 1)?, args.get(i + 2)?);
        let bits = bitfield_width(ty)?;
        let bit_offset = match off.strip_prefix(b"#") {
            Some(n) => parse_u64(n)?.checked_mul(bits)?,
            None => parse_u64(off)?,
        };
        if takes_value {
            let first = bit_offset / 8;
            let last = (bit_offset + bits - 1) / 8;
            ranges.push((first, last - first + 1));
            i += 4;
        } else {
            i += 3;
        }
    }
    (!ranges.is_empty()).then_some(ranges)
}

/// The width of a BITFIELD type (`i1`..`i64`, `u1`..`u63`).
fn bitfield_width(ty: &[u8]) -> Option<u64> {
    let (sign, n) = ty.split_first()?;
    let bits = parse_u64(n)?;
    let max = match sign.to_ascii_lowercase() {
        b'i' => 64,
        b'u' => 63,
        _ => return None,
    };
    (1..=max).contains(&bits).then_some(bits)
}

/// A ZREMRANGEBYSCORE bound: a double (`inf`, `-inf` too), exclusive after `(`.
fn score_bound(word: &[u8]) -> Option<ScoreBound> {
    let (exclusive, num) = match word.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    let text = std::str::from_utf8(num).ok()?;
    let value: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        t => t.parse().ok()?,
    };
    (!value.is_nan()).then_some(ScoreBound { value, exclusive })
}

/// A ZREMRANGEBYLEX bound: `-`, `+`, `[member` or `(member`.
fn lex_bound(word: &[u8]) -> Option<LexBound> {
    match word.split_first()? {
        (b'-', []) => Some(LexBound::NegInf),
        (b'+', []) => Some(LexBound::PosInf),
        (b'[', m) => Some(LexBound::Inclusive(m.to_vec())),
        (b'(', m) => Some(LexBound::Exclusive(m.to_vec())),
        _ => None,
    }
}

/// Hints by the address of their argv objects (see the file comment). Main thread only.
/// Addresses are already well spread: a multiply is all the hashing they need.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = ((self.0 << 8) | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

struct Entry {
    hint: Hint,
    objects: Vec<usize>,
}

/// The hints: the last filtered command's in `current` (the common case: its own event
/// uses it next, with no map and, thanks to `spare`, no allocation); hints of earlier
/// commands that still have uses (queued in MULTI, blocked, rejected) in `by_object`.
#[derive(Default)]
pub struct HintTable {
    current: Option<Entry>,
    /// A used-up entry whose buffers the next hinted command refills.
    spare: Option<Entry>,
    by_object: HashMap<usize, Rc<RefCell<Entry>>, BuildHasherDefault<AddressHasher>>,
}

/// Arguments past this position are not indexed: a key there falls back to a whole value.
pub const INDEXED_ARGS: usize = 64;
const MAX_ENTRIES: usize = 4096;

thread_local! {
    static TABLE: RefCell<HintTable> = RefCell::new(HintTable::default());
}

impl HintTable {
    /// Records a filtered command: `objects` are the addresses of argv[1..]; `command`
    /// (a hinted command's name) and `args` its argv[1..] when it is hinted.
    pub fn on_command<'a>(
        &mut self,
        objects: &[usize],
        command: Option<&'static [u8]>,
        args: impl Iterator<Item = &'a [u8]>,
    ) {
        if let Some(previous) = self.current.take() {
            if previous.hint.uses_left > 0 {
                self.park(previous);
            } else {
                self.spare = Some(previous);
            }
        }
        if !self.by_object.is_empty() {
            for o in objects {
                self.by_object.remove(o);
            }
            if self.by_object.len() > MAX_ENTRIES {
                // Only hints of commands that never ran (rejected, or queued in a
                // transaction that was discarded) stay here: dropping them costs a fallback.
                self.by_object.clear();
            }
        }
        let Some(command) = command else {
            return;
        };
        let mut entry = self.spare.take().unwrap_or(Entry {
            hint: Hint::new(command, Vec::new()),
            objects: Vec::new(),
        });
        entry.hint.command = command;
        entry.objects.clear();
        entry.objects.extend_from_slice(objects);
        let mut n = 0;
        for arg in args {
            match entry.hint.args.get_mut(n) {
                Some(slot) => {
                    slot.clear();
                    slot.extend_from_slice(arg);
                }
                None => entry.hint.args.push(arg.to_vec()),
            }
            n += 1;
        }
        entry.hint.args.truncate(n);
        entry.hint.uses_left = uses_of(command, &entry.hint.args);
        self.current = Some(entry);
    }

    /// Keeps an unused hint, reachable from each of its argv objects.
    fn park(&mut self, entry: Entry) {
        let objects = entry.objects.clone();
        let shared = Rc::new(RefCell::new(entry));
        for o in objects {
            self.by_object.insert(o, Rc::clone(&shared));
        }
    }

    /// Uses the hint of the command whose argv holds `key_object`, if it explains `event`.
    pub fn take_plan(&mut self, key_object: usize, event: &[u8], key: &[u8]) -> Option<Plan> {
        if let Some(current) = self.current.as_mut() {
            if current.objects.contains(&key_object) {
                if current.hint.uses_left == 0 {
                    return None;
                }
                let plan = plan(&current.hint, event, key)?;
                current.hint.uses_left -= 1;
                return Some(plan);
            }
        }
        let shared = Rc::clone(self.by_object.get(&key_object)?);
        let mut entry = shared.borrow_mut();
        if entry.hint.uses_left == 0 {
            return None;
        }
        let plan = plan(&entry.hint, event, key)?;
        entry.hint.uses_left -= 1;
        if entry.hint.uses_left == 0 {
            // Used up: forget it now, so the table stays small.
            for o in &entry.objects {
                self.by_object.remove(o);
            }
        }
        Some(plan)
    }

    pub fn with<T>(f: impl FnOnce(&mut HintTable) -> T) -> T {
        TABLE.with(|t| f(&mut t.borrow_mut()))
    }
}

/// Members of `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...` (args after the key).
fn zadd_members(args: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let flags = ["nx", "xx", "gt", "lt", "ch", "incr"];
    let start = args
        .iter()
        .position(|w| !flags.iter().any(|f| eq_ci(w, f)))?;
    let pairs = &args[start..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return None;
    }
    Some(pairs.chunks(2).map(|p| p[1].clone()).collect())
}

/// Members of `GEOADD key [NX|XX] [CH] lon lat member ...` (args after the key).
fn geoadd_members(args: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let flags = ["nx", "xx", "ch"];
    let start = args
        .iter()
        .position(|w| !flags.iter().any(|f| eq_ci(w, f)))?;
    let triples = &args[start..];
    if triples.is_empty() || !triples.len().is_multiple_of(3) {
        return None;
    }
    Some(triples.chunks(3).map(|t| t[2].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(words: &str) -> Hint {
        let mut it = words.split_whitespace();
        let name = hinted_name(it.next().unwrap().as_bytes()).expect("hinted");
        Hint::new(name, it.map(|w| w.as_bytes().to_vec()).collect())
    }

    fn v(words: &str) -> Vec<Vec<u8>> {
        words
            .split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn names_are_case_insensitive_and_bounded() {
        assert_eq!(hinted_name(b"HSet"), Some(&b"hset"[..]));
        assert_eq!(hinted_name(b"get"), None);
        assert_eq!(hinted_name(b"averyveryverylongname"), None);
    }

    #[test]
    fn hash_set_and_delete() {
        let h = hint("HSET k f1 v1 f2 v2");
        assert_eq!(plan(&h, b"hset", b"k"), Some(Plan::HashFields(v("f1 f2"))));
        assert_eq!(plan(&h, b"hset", b"other"), None, "another key");
        assert_eq!(plan(&h, b"hdel", b"k"), None, "another event");
        assert_eq!(
            plan(&hint("HSET k f1"), b"hset", b"k"),
            None,
            "malformed argv"
        );
        assert_eq!(
            plan(&hint("hincrbyfloat k f 1.5"), b"hincrbyfloat", b"k"),
            Some(Plan::HashFields(v("f")))
        );
        assert_eq!(
            plan(&hint("hdel k a b"), b"hdel", b"k"),
            Some(Plan::HashDel(v("a b")))
        );
    }

    #[test]
    fn zadd_skips_flags_and_geoadd_takes_members() {
        assert_eq!(
            plan(&hint("ZADD z NX CH 1 a 2 b"), b"zadd", b"z"),
            Some(Plan::ZsetMembers(v("a b")))
        );
        assert_eq!(
            plan(&hint("zadd z incr 5 m"), b"zincr", b"z"),
            Some(Plan::ZsetMembers(v("m")))
        );
        assert_eq!(
            plan(
                &hint("GEOADD g XX 13.3 38.1 pal 15.0 37.5 cat"),
                b"zadd",
                b"g"
            ),
            Some(Plan::ZsetMembers(v("pal cat")))
        );
        assert_eq!(plan(&hint("zadd z 1"), b"zadd", b"z"), None);
    }

    #[test]
    fn pops_name_a_count_and_an_end() {
        assert_eq!(
            plan(&hint("LPOP l 3"), b"lpop", b"l"),
            Some(Plan::ListPop {
                end: End::Head,
                count: 3
            })
        );
        assert_eq!(plan(&hint("LPOP l"), b"rpop", b"l"), None);
        assert_eq!(
            plan(&hint("BRPOP a b 0"), b"rpop", b"b"),
            Some(Plan::ListPop {
                end: End::Tail,
                count: 1
            })
        );
        assert_eq!(
            plan(&hint("BRPOP a b 0"), b"rpop", b"0"),
            None,
            "the timeout is not a key"
        );
        assert_eq!(
            plan(&hint("LMPOP 2 a b RIGHT COUNT 4"), b"rpop", b"b"),
            Some(Plan::ListPop {
                end: End::Tail,
                count: 4
            })
        );
        assert_eq!(
            plan(&hint("BLMPOP 0 1 a LEFT"), b"lpop", b"a"),
            Some(Plan::ListPop {
                end: End::Head,
                count: 1
            })
        );
        assert_eq!(
            plan(&hint("LMPOP 5 a"), b"lpop", b"a"),
            None,
            "numkeys out of range"
        );
        assert_eq!(
            plan(&hint("ZMPOP 1 z MAX COUNT 2"), b"zpopmax", b"z"),
            Some(Plan::ZsetPop {
                max: true,
                count: 2
            })
        );
        assert_eq!(plan(&hint("ZPOPMIN z"), b"zpopmax", b"z"), None);
    }

    #[test]
    fn lmove_to_itself_pops_then_pushes_what_it_popped() {
        let h = hint("LMOVE k k LEFT RIGHT");
        assert_eq!(h.uses_left, 2);
        assert_eq!(
            plan(&h, b"lpop", b"k"),
            Some(Plan::ListPop {
                end: End::Head,
                count: 1
            })
        );
        assert_eq!(
            plan(&h, b"rpush", b"k"),
            Some(Plan::ListPushFromState { end: End::Tail })
        );
        assert_eq!(
            plan(&h, b"lpush", b"k"),
            None,
            "wrong end for the destination"
        );
        let r = hint("RPOPLPUSH a b");
        assert_eq!(
            plan(&r, b"rpop", b"a"),
            Some(Plan::ListPop {
                end: End::Tail,
                count: 1
            })
        );
        assert_eq!(
            plan(&r, b"lpush", b"b"),
            Some(Plan::ListPushFromState { end: End::Head })
        );
    }

    #[test]
    fn strings_take_their_value_or_increment_from_argv() {
        assert_eq!(
            plan(&hint("SET k v EX 10"), b"set", b"k"),
            Some(Plan::StringValue {
                value: b"v".to_vec(),
                keep_ttl: false
            })
        );
        assert_eq!(
            plan(&hint("SETEX k 10 v"), b"set", b"k"),
            Some(Plan::StringValue {
                value: b"v".to_vec(),
                keep_ttl: false
            })
        );
        assert_eq!(
            plan(&hint("MSET a 1 b 2 a 3"), b"set", b"a"),
            Some(Plan::StringValue {
                value: b"3".to_vec(),
                keep_ttl: false
            })
        );
        assert_eq!(plan(&hint("MSET a 1 b"), b"set", b"a"), None);
        assert_eq!(
            plan(&hint("SET k v XX KEEPTTL"), b"set", b"k"),
            Some(Plan::StringValue {
                value: b"v".to_vec(),
                keep_ttl: true
            })
        );
        assert_eq!(
            plan(&hint("DECRBY n 5"), b"incrby", b"n"),
            Some(Plan::IncrBy(-5))
        );
        assert_eq!(
            plan(&hint("INCR n"), b"incrby", b"n"),
            Some(Plan::IncrBy(1))
        );
        assert_eq!(
            plan(&hint("INCRBYFLOAT n 1e3"), b"incrbyfloat", b"n"),
            Some(Plan::IncrByFloat(b"1e3".to_vec()))
        );
        assert_eq!(plan(&hint("SET k v"), b"incrby", b"k"), None);
    }

    fn on(t: &mut HintTable, objects: &[usize], h: Option<Hint>) {
        match h {
            Some(h) => t.on_command(
                objects,
                Some(h.command),
                h.args.iter().map(|a| a.as_slice()),
            ),
            None => t.on_command(objects, None, std::iter::empty()),
        }
    }

    #[test]
    fn table_forgets_reused_addresses_and_counts_uses() {
        let mut t = HintTable::default();
        on(&mut t, &[10, 11, 12], Some(hint("HSET k f v")));
        // A later command whose argument lives at address 10 replaces the hint there.
        on(&mut t, &[10, 20], None);
        assert_eq!(t.take_plan(10, b"hset", b"k"), None);
        on(&mut t, &[30, 31, 32], Some(hint("LPUSH q a")));
        assert_eq!(
            t.take_plan(30, b"lpush", b"q"),
            Some(Plan::ListPush {
                end: End::Head,
                elements: v("a")
            })
        );
        assert_eq!(t.take_plan(30, b"lpush", b"q"), None, "one use only");
        on(
            &mut t,
            &[40, 41, 42, 43, 44],
            Some(hint("LMOVE a b LEFT LEFT")),
        );
        assert!(t.take_plan(40, b"lpop", b"a").is_some());
        assert!(t.take_plan(41, b"lpush", b"b").is_some());
        assert!(t.take_plan(41, b"lpush", b"b").is_none());
        // Queued in MULTI: the hint waits while other commands (EXEC) are filtered.
        on(&mut t, &[50, 51, 52], Some(hint("HSET x f v")));
        on(&mut t, &[60], None);
        assert_eq!(
            t.take_plan(50, b"hset", b"x"),
            Some(Plan::HashFields(v("f")))
        );
        assert_eq!(t.take_plan(50, b"hset", b"x"), None);
    }

    #[test]
    fn smove_and_pushes() {
        let h = hint("SMOVE src dst m");
        assert_eq!(plan(&h, b"srem", b"src"), Some(Plan::SetRem(v("m"))));
        assert_eq!(plan(&h, b"sadd", b"dst"), Some(Plan::SetAdd(v("m"))));
        assert_eq!(plan(&h, b"sadd", b"src"), None);
        assert_eq!(
            plan(&hint("RPUSHX l a b"), b"rpush", b"l"),
            Some(Plan::ListPush {
                end: End::Tail,
                elements: v("a b")
            })
        );
        assert_eq!(plan(&hint("RPUSH l a"), b"lpush", b"l"), None);
        assert_eq!(
            plan(&hint("LTRIM l 0 -100"), b"ltrim", b"l"),
            Some(Plan::ListTrim {
                start: 0,
                stop: -100
            })
        );
    }
}
