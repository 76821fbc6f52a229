//! Capture: turns a keyspace notification into effects and appends them to the log.
//!
//! Runs synchronously inside the command, after the data changed and before the server
//! returns from executing it, so the reply can only leave after the effects are durable
//! (invariant 1). What each event becomes:
//! - deletions (`del`, `expired`, `evicted`): `Delete`; expiry changes: `ExpireAt`/`Persist`
//!   read back as absolute times; RENAME and MOVE: one effect from their two events;
//! - events a hint explains (see `hints`): a field-level effect whose values are read from
//!   the key (O(argument), never O(collection));
//! - strings: the value from argv (SET family) or the increment (INCR family) — reading a
//!   string that is not raw-encoded replaces its object in the server, which INCR and
//!   INCRBYFLOAT would then reply from (see `ffi::Key::string_value`); without a hint the
//!   counters are read with a GET through the server (the one case that shows in
//!   commandstats), other string commands leave a raw value that is safe to read;
//! - anything else: the key's whole value as it is now, read with the module API (streams
//!   via `DUMP`, the only way to keep consumer groups), or `Delete` if it is gone.
//! - deferred keys: Redis 7.0 fires `spop` (with a count) before removing the members, and
//!   XACK/XCLAIM/XAUTOCLAIM/XREADGROUP change consumer groups without any event. Those keys
//!   are logged whole at the end of the event-loop iteration (BEFORE_SLEEP), which the
//!   server runs before it writes the iteration's replies (docs/design.md says where that
//!   ordering does not hold); `silent` finds the iteration in which a queued or blocked
//!   one actually runs.
//!   This fallback is always correct; it covers EXEC, scripts' unusual paths, SPOP,
//!   blocked clients served later, `loaded` (DEBUG RELOAD, a replica's full sync) and
//!   commands this file has never heard of.

#![forbid(unsafe_code)]

use super::ffi::{Ctx, Key, KeyType, Reply};
use super::hints::HintTable;
use super::hints::Plan;
use super::state::with_module;
use crate::effect::{Effect, End, LexBound, StreamId, Value, ZRange, NO_EXPIRE};
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Keys to log whole at the end of the event-loop iteration: (db if known, key).
type DeferredKeys = Vec<(Option<u32>, Vec<u8>)>;
static DEFERRED: Lazy<Mutex<DeferredKeys>> = Lazy::new(|| Mutex::new(Vec::new()));
static DEFERRED_PENDING: AtomicBool = AtomicBool::new(false);

/// Logs `key` whole at the end of this event-loop iteration; without a db (the command
/// filter does not know it), every db where it is a stream.
pub fn defer(db: Option<u32>, key: Vec<u8>) {
    DEFERRED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((db, key));
    DEFERRED_PENDING.store(true, Ordering::SeqCst);
}

pub fn has_deferred() -> bool {
    DEFERRED_PENDING.load(Ordering::Relaxed)
}

pub fn log_deferred(ctx: Ctx, databases: u32) {
    let keys = std::mem::take(&mut *DEFERRED.lock().unwrap_or_else(|p| p.into_inner()));
    DEFERRED_PENDING.store(false, Ordering::SeqCst);
    for (known_db, key) in keys {
        let dbs: Vec<u32> = match known_db {
            Some(db) => vec![db],
            None => (0..databases).collect(),
        };
        for db in dbs {
            if !ctx.select_db(db) {
                continue;
            }
            let is_stream = ctx.open_read(&key).map(|k| k.key_type() == KeyType::Stream);
            if known_db.is_some() || is_stream == Some(true) {
                if let Some(effect) = whole_value(ctx, &key) {
                    with_module(|m| m.append(db, &[effect]));
                }
            }
        }
    }
    ctx.select_db(0);
}

pub fn on_keyspace_event(ctx: Ctx, event: &[u8], key_object: usize, key: &[u8]) {
    let db = ctx.selected_db();
    super::silent::note_event(event, key);
    if matches!(event, b"rename_to" | b"move_to" | b"copy_to")
        && super::silent::group_writes_outstanding()
        && ctx
            .open_read(key)
            .is_some_and(|k| k.key_type() == KeyType::Stream)
    {
        // A stream renamed, moved or copied after a consumer-group write of this iteration
        // (or one that may run from a queue): the records of that write name the source,
        // so the destination is logged whole at the iteration's end.
        defer(Some(db), key.to_vec());
    }
    let Some((record_db, effects, how)) = effect_for(ctx, db, event, key_object, key) else {
        return;
    };
    with_module(|m| {
        match how {
            How::FieldLevel => m.stats.field_effects += 1,
            How::WholeValue => m.stats.whole_value_effects += 1,
            How::KeyLevel => {}
        }
        m.append(record_db, &effects);
    });
}

/// How an effect was obtained (for NVM.INFO).
enum How {
    KeyLevel,
    FieldLevel,
    WholeValue,
}

/// The effects of one event (one, or one per range BITFIELD wrote), the db their records
/// belong to, and how they were obtained.
fn effect_for(
    ctx: Ctx,
    db: u32,
    event: &[u8],
    key_object: usize,
    key: &[u8],
) -> Option<(u32, Vec<Effect>, How)> {
    let key_vec = || key.to_vec();
    let key_level = |e: Effect| Some((db, vec![e], How::KeyLevel));
    let whole =
        |read: StringRead| whole_value_with(ctx, key, read).map(|e| (db, vec![e], How::WholeValue));
    match event {
        b"new" | b"keymiss" => None,
        b"del" | b"expired" | b"evicted" => key_level(Effect::Delete { key: key_vec() }),
        b"expire" => match ctx.open_read(key) {
            None => key_level(Effect::Delete { key: key_vec() }),
            Some(k) => match k.abs_expire() {
                at if at >= 0 => key_level(Effect::ExpireAt {
                    key: key_vec(),
                    at_ms: at,
                }),
                _ => key_level(Effect::Persist { key: key_vec() }),
            },
        },
        b"persist" => key_level(Effect::Persist { key: key_vec() }),
        // A consumer that XREADGROUP / XCLAIM / XAUTOCLAIM creates: their group's state,
        // read back at the end of the iteration, has it (or the stream is logged whole then).
        b"xgroup-createconsumer" if super::silent::group_write_pending(key) => None,
        // On a big stream, the groups as they are now instead of the stream's DUMP.
        // A group created on a stream that already had one: the key space holds its DUMP,
        // into which the warm-up writes the new group (the first group of a stream, which
        // may exist only as entries, or be new with MKSTREAM, logs the stream whole).
        b"xgroup-setid"
        | b"xgroup-destroy"
        | b"xgroup-createconsumer"
        | b"xgroup-delconsumer"
        | b"xgroup-create"
            if super::silent::is_big_stream(ctx, key) =>
        {
            match super::group_state::read_groups(ctx, key) {
                Some(Effect::StreamGroups { groups, .. })
                    if event == b"xgroup-create" && groups.len() < 2 =>
                {
                    whole(StringRead::Direct)
                }
                Some(e) => Some((db, vec![e], How::FieldLevel)),
                None => whole(StringRead::Direct),
            }
        }
        b"rename_from" => {
            with_module(|m| m.pending_rename = Some((db, key_vec())));
            None
        }
        b"rename_to" => match with_module(|m| m.pending_rename.take()).flatten() {
            Some((from_db, from)) if from_db == db => key_level(Effect::Rename {
                from,
                to: key_vec(),
            }),
            _ => whole(StringRead::Direct),
        },
        b"move_from" => {
            with_module(|m| m.pending_move = Some((db, key_vec())));
            None
        }
        b"move_to" => match with_module(|m| m.pending_move.take()).flatten() {
            Some((from_db, k)) if k == key => Some((
                from_db,
                vec![Effect::Move { key: k, to_db: db }],
                How::KeyLevel,
            )),
            _ => whole(StringRead::Direct),
        },
        b"spop" => match HintTable::with(|t| t.take_plan(key_object, event, key)) {
            Some(Plan::Spop { with_count: false }) => whole(StringRead::Direct),
            _ => {
                defer(Some(db), key_vec());
                None
            }
        },
        b"xadd" => {
            // A blocked XREADGROUP on this stream may be served right after this command.
            super::silent::note_stream_write(db, key);
            stream_added(ctx, key).map(|e| (db, vec![e], How::FieldLevel))
        }
        b"xtrim" => stream_trimmed(ctx, key).map(|e| (db, vec![e], How::FieldLevel)),
        b"xsetid" => match super::group_state::read_stream_ids(ctx, key) {
            Some(e) => Some((db, vec![e], How::FieldLevel)),
            None => whole(StringRead::Direct),
        },
        _ => {
            let plan = HintTable::with(|t| t.take_plan(key_object, event, key));
            match plan.and_then(|p| field_effects(ctx, key, p)) {
                Some(effects) => Some((db, effects, How::FieldLevel)),
                None if matches!(event, b"incrby" | b"incrbyfloat") => {
                    whole(StringRead::ThroughServer)
                }
                None => whole(StringRead::Direct),
            }
        }
    }
}

/// Builds the field-level effects, reading values from the key; `None` means "fall back".
fn field_effects(ctx: Ctx, key: &[u8], plan: Plan) -> Option<Vec<Effect>> {
    let key_vec = key.to_vec();
    let open = || ctx.open_read(key);
    let string_key = || open().filter(|k| k.key_type() == KeyType::String);
    Some(vec![match plan {
        Plan::StringValue { value, keep_ttl } => {
            let expire = match keep_ttl {
                true => open()
                    .filter(|k| k.key_type() == KeyType::String)?
                    .abs_expire(),
                false => NO_EXPIRE,
            };
            Effect::Put {
                key: key_vec,
                value: Value::String(value),
                expire_at_ms: if expire >= 0 { expire } else { NO_EXPIRE },
            }
        }
        Plan::IncrBy(by) => Effect::IncrBy { key: key_vec, by },
        // The key space cannot redo the server's long-double arithmetic: log the result.
        Plan::IncrByFloat(_) => return None,
        Plan::HashFields(fields) => {
            let k = open().filter(|k| k.key_type() == KeyType::Hash)?;
            let pairs = fields
                .into_iter()
                .map(|f| k.hash_get(&f).map(|v| (f, v)))
                .collect::<Option<Vec<_>>>()?;
            Effect::HashSet {
                key: key_vec,
                pairs,
            }
        }
        Plan::HashDel(fields) => Effect::HashDel {
            key: key_vec,
            fields,
        },
        Plan::SetAdd(members) => Effect::SetAdd {
            key: key_vec,
            members,
        },
        Plan::SetRem(members) => Effect::SetRem {
            key: key_vec,
            members,
        },
        Plan::ZsetMembers(members) => {
            let k = open().filter(|k| k.key_type() == KeyType::Zset)?;
            let pairs = members
                .into_iter()
                .map(|m| k.zset_score(&m).map(|s| (m, s)))
                .collect::<Option<Vec<_>>>()?;
            Effect::ZsetAdd {
                key: key_vec,
                pairs,
            }
        }
        Plan::ZsetRem(members) => Effect::ZsetRem {
            key: key_vec,
            members,
        },
        Plan::ZsetPop { max, count } => Effect::ZsetPop {
            key: key_vec,
            max,
            count,
        },
        Plan::ListPush { end, elements } => Effect::ListPush {
            key: key_vec,
            end,
            elements,
        },
        Plan::ListPushFromState { end } => {
            let k = open().filter(|k| k.key_type() == KeyType::List)?;
            let element = k.list_get(if end == End::Head { 0 } else { -1 })?;
            Effect::ListPush {
                key: key_vec,
                end,
                elements: vec![element],
            }
        }
        Plan::ListPop { end, count } => Effect::ListPop {
            key: key_vec,
            end,
            count,
        },
        Plan::ListTrim { start, stop } => Effect::ListTrim {
            key: key_vec,
            start,
            stop,
        },
        Plan::Append(bytes) => {
            // The appended bytes end the string now (its length is read, not its bytes:
            // an APPEND to a new key may leave an int- or embstr-encoded value).
            let k = string_key()?;
            let len = k.len() as u64;
            if bytes.is_empty() {
                // Appending nothing changes nothing, except that it creates an empty
                // string where there was no key (which a write of no bytes would not).
                if len > 0 {
                    return Some(Vec::new());
                }
                let expire = k.abs_expire();
                return Some(vec![Effect::Put {
                    key: key_vec,
                    value: Value::String(Vec::new()),
                    expire_at_ms: if expire >= 0 { expire } else { NO_EXPIRE },
                }]);
            }
            Effect::StringWrite {
                key: key_vec,
                offset: len.checked_sub(bytes.len() as u64)?,
                bytes,
            }
        }
        Plan::SetRange { offset, bytes } => Effect::StringWrite {
            key: key_vec,
            offset,
            bytes,
        },
        Plan::StringBytes(ranges) => {
            // SETBIT and BITFIELD leave a raw-encoded value: reading it changes nothing.
            let k = string_key()?;
            let mut effects = Vec::with_capacity(ranges.len());
            for (offset, len) in ranges {
                effects.push(Effect::StringWrite {
                    key: key_vec.clone(),
                    offset,
                    bytes: k.string_range(offset, len)?,
                });
            }
            return Some(effects);
        }
        Plan::ListSet { index, element } => {
            let len =
                i64::try_from(open().filter(|k| k.key_type() == KeyType::List)?.len()).ok()?;
            let index = if index < 0 { index + len } else { index };
            Effect::ListSet {
                key: key_vec,
                index: u64::try_from(index).ok().filter(|&i| (i as i64) < len)?,
                element,
            }
        }
        Plan::ListInsert {
            after,
            pivot,
            element,
        } => Effect::ListInsert {
            key: key_vec,
            after,
            pivot,
            element,
        },
        Plan::ListRem { count, element } => Effect::ListRem {
            key: key_vec,
            count,
            element,
        },
        Plan::ZsetRemRange(range) => {
            if let ZRange::Lex { min, max } = &range {
                if !lex_removal_is_exact(ctx, key, min, max) {
                    return None;
                }
            }
            Effect::ZsetRemRange {
                key: key_vec,
                range,
            }
        }
        Plan::SetStore { op, sources } => Effect::SetStore {
            key: key_vec,
            op,
            sources,
        },
        Plan::CopyFrom(from) => Effect::Copy { from, to: key_vec },
        Plan::Spop { .. } => return None,
        Plan::Restore(payload) => {
            // A restored string is taken from the payload: reading it in place would turn
            // an int- or embstr-encoded value into a new raw object (see rdb_string).
            let value = super::rdb_string::restored_string(&payload)?;
            let expire = string_key()?.abs_expire();
            Effect::Put {
                key: key_vec,
                value: Value::String(value),
                expire_at_ms: if expire >= 0 { expire } else { NO_EXPIRE },
            }
        }
    }])
}

/// Whether "every member within the lex range is gone" is exactly what a ZREMRANGEBYLEX
/// just did. The server's lex commands walk the zset in score order, which is lex order
/// only when every score is equal; with mixed scores they may stop early (the result is
/// unspecified). So: the key is gone (everything was removed, all of it in range), or its
/// scores are all equal (then the search is exact) and no member in range is left.
fn lex_removal_is_exact(ctx: Ctx, key: &[u8], min: &LexBound, max: &LexBound) -> bool {
    let Some(k) = ctx.open_read(key) else {
        return true;
    };
    if k.key_type() != KeyType::Zset {
        return false;
    }
    match k.zset_score_bounds() {
        Some((lo, hi)) if lo == hi => !k.zset_has_lex(min, max).unwrap_or(true),
        _ => false,
    }
}

/// XADD always adds the stream's new last entry: log exactly that entry.
fn stream_added(ctx: Ctx, key: &[u8]) -> Option<Effect> {
    let k = ctx
        .open_read(key)
        .filter(|k| k.key_type() == KeyType::Stream)?;
    match k.stream_edge(true) {
        Some((ms, seq, fields)) => Some(Effect::StreamAdd {
            key: key.to_vec(),
            id: StreamId { ms, seq },
            fields,
        }),
        None => whole_value(ctx, key),
    }
}

/// Trimming removes the oldest entries: log the id of the first one that remains.
fn stream_trimmed(ctx: Ctx, key: &[u8]) -> Option<Effect> {
    let k = ctx
        .open_read(key)
        .filter(|k| k.key_type() == KeyType::Stream)?;
    let min_id = k
        .stream_edge(false)
        .map(|(ms, seq, _)| StreamId { ms, seq });
    Some(Effect::StreamTrim {
        key: key.to_vec(),
        min_id,
    })
}

/// How to read a string value (see the file comment).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StringRead {
    /// Direct memory access: only where no command holds the value object any more.
    Direct,
    /// A GET through the server: always safe, but visible in commandstats.
    ThroughServer,
}

/// The key's whole value and absolute expiry, or `Delete` if it no longer exists, for
/// callers outside a command's execution (where reading strings directly is safe).
pub fn whole_value(ctx: Ctx, key: &[u8]) -> Option<Effect> {
    whole_value_with(ctx, key, StringRead::Direct)
}

fn whole_value_with(ctx: Ctx, key: &[u8], read: StringRead) -> Option<Effect> {
    let Some(k) = ctx.open_read(key) else {
        return Some(Effect::Delete { key: key.to_vec() });
    };
    let value = read_value(ctx, key, &k, read)?;
    let expire = k.abs_expire();
    Some(Effect::Put {
        key: key.to_vec(),
        value,
        expire_at_ms: if expire >= 0 { expire } else { NO_EXPIRE },
    })
}

fn read_value(ctx: Ctx, key: &[u8], k: &Key, read: StringRead) -> Option<Value> {
    match k.key_type() {
        KeyType::String if read == StringRead::Direct => k.string_value().map(Value::String),
        KeyType::String => match ctx.call("GET", &[key]) {
            Reply::Str(s) => Some(Value::String(s)),
            _ => None,
        },
        KeyType::List => k.list_all().map(Value::List),
        KeyType::Hash => k.scan_pairs().map(Value::Hash),
        KeyType::Set => k
            .scan_pairs()
            .map(|pairs| Value::Set(pairs.into_iter().map(|(m, _)| m).collect())),
        KeyType::Zset => k.zset_all().map(Value::Zset),
        KeyType::Stream => match ctx.call("DUMP", &[key]) {
            Reply::Str(dump) => Some(Value::StreamDump(dump)),
            _ => None,
        },
        KeyType::Empty | KeyType::Other => {
            with_module(|m| m.stats.unsupported_type_events += 1);
            None
        }
    }
}
