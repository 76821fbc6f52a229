//! Restore: applies logged effects to the server's keyspace at start-up.
//!
//! Runs in the first event-loop iteration, before any client command is processed, with
//! capture switched off (the writes below fire notifications that must not be logged
//! again). Strings are written with the key API (the common case, and the fastest); other
//! effects go through `RedisModule_Call` without replication or AOF propagation. Large
//! collections are written in chunks so no single call builds a giant argv.

#![forbid(unsafe_code)]

use super::ffi::{Ctx, Reply};
use crate::effect::{Effect, End, LexBound, ScoreBound, SetOp, Value, ZRange};

const CHUNK: usize = 1024;

/// Applies one effect to `db`. An `Err` means the server refused it (the log and the
/// state disagree); the caller counts and reports it and carries on.
pub fn apply(ctx: Ctx, db: u32, effect: &Effect) -> Result<(), String> {
    if !ctx.select_db(db) {
        return Err(format!("cannot select db {db}"));
    }
    match effect {
        Effect::Put {
            key,
            value,
            expire_at_ms,
        } => put(ctx, key, value, *expire_at_ms),
        Effect::Delete { key } => call(ctx, "DEL", &[key]),
        Effect::ExpireAt { key, at_ms } => {
            call(ctx, "PEXPIREAT", &[key, at_ms.to_string().as_bytes()])
        }
        Effect::Persist { key } => call(ctx, "PERSIST", &[key]),
        Effect::IncrBy { key, by } => call(ctx, "INCRBY", &[key, by.to_string().as_bytes()]),
        Effect::IncrByFloat { key, by } => call(ctx, "INCRBYFLOAT", &[key, by]),
        Effect::Rename { from, to } => call(ctx, "RENAME", &[from, to]),
        Effect::Move { key, to_db } => call(ctx, "MOVE", &[key, to_db.to_string().as_bytes()]),
        Effect::HashSet { key, pairs } => chunked_pairs(ctx, "HSET", key, pairs),
        Effect::HashDel { key, fields } => chunked(ctx, "HDEL", key, fields),
        Effect::SetAdd { key, members } => chunked(ctx, "SADD", key, members),
        Effect::SetRem { key, members } => chunked(ctx, "SREM", key, members),
        Effect::ZsetAdd { key, pairs } => zadd(ctx, key, pairs),
        Effect::ZsetRem { key, members } => chunked(ctx, "ZREM", key, members),
        Effect::ZsetPop { key, max, count } => call(
            ctx,
            if *max { "ZPOPMAX" } else { "ZPOPMIN" },
            &[key, count.to_string().as_bytes()],
        ),
        Effect::ListPush { key, end, elements } => chunked(ctx, push_command(*end), key, elements),
        Effect::ListPop { key, end, count } => {
            let cmd = if *end == End::Head { "LPOP" } else { "RPOP" };
            call(ctx, cmd, &[key, count.to_string().as_bytes()])
        }
        Effect::ListTrim { key, start, stop } => call(
            ctx,
            "LTRIM",
            &[
                key,
                start.to_string().as_bytes(),
                stop.to_string().as_bytes(),
            ],
        ),
        Effect::StreamAdd { key, id, fields } => {
            let id = id.to_string();
            let mut args: Vec<&[u8]> = vec![key, id.as_bytes()];
            for (f, v) in fields {
                args.push(f);
                args.push(v);
            }
            call(ctx, "XADD", &args)
        }
        Effect::StreamTrim { key, min_id } => match min_id {
            Some(id) => call(
                ctx,
                "XTRIM",
                &[key, b"MINID", b"=", id.to_string().as_bytes()],
            ),
            None => call(ctx, "XTRIM", &[key, b"MAXLEN", b"=", b"0"]),
        },
        Effect::StreamAck { key, group, ids } => {
            let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            let mut args: Vec<&[u8]> = vec![key, group];
            args.extend(ids.iter().map(|id| id.as_bytes()));
            // The module's own XACK: the filter does not see it, commandstats counts it.
            super::silent::note_own_ack();
            call(ctx, "XACK", &args)
        }
        Effect::StreamSetId {
            key,
            last_id,
            entries_added,
            max_deleted,
        } => call(
            ctx,
            "XSETID",
            &[
                key,
                last_id.to_string().as_bytes(),
                b"ENTRIESADDED",
                entries_added.to_string().as_bytes(),
                b"MAXDELETEDID",
                max_deleted.to_string().as_bytes(),
            ],
        ),
        // Times and owners no command sets: folded into the stream's DUMP by the warm-up.
        Effect::StreamGroup { .. } | Effect::StreamGroups { .. } => {
            Err("a stream-group record whose stream's DUMP could not take it (see the log)".into())
        }
        Effect::FlushDb => call(ctx, "FLUSHDB", &[]),
        Effect::FlushAll => flush_all(ctx),
        Effect::SwapDb { other } => call(
            ctx,
            "SWAPDB",
            &[db.to_string().as_bytes(), other.to_string().as_bytes()],
        ),
        Effect::StringWrite { key, offset, bytes } => call(
            ctx,
            "SETRANGE",
            &[key, offset.to_string().as_bytes(), bytes],
        ),
        Effect::ListSet {
            key,
            index,
            element,
        } => call(ctx, "LSET", &[key, index.to_string().as_bytes(), element]),
        Effect::ListInsert {
            key,
            after,
            pivot,
            element,
        } => {
            let place: &[u8] = if *after { b"AFTER" } else { b"BEFORE" };
            call(ctx, "LINSERT", &[key, place, pivot, element])
        }
        Effect::ListRem {
            key,
            count,
            element,
        } => call(ctx, "LREM", &[key, count.to_string().as_bytes(), element]),
        Effect::ZsetRemRange { key, range } => {
            let (command, min, max) = zrange_args(range);
            call(ctx, command, &[key, &min, &max])
        }
        Effect::SetStore { key, op, sources } => {
            let command = match op {
                SetOp::Union => "SUNIONSTORE",
                SetOp::Inter => "SINTERSTORE",
                SetOp::Diff => "SDIFFSTORE",
            };
            let mut args: Vec<&[u8]> = vec![key];
            args.extend(sources.iter().map(Vec::as_slice));
            call(ctx, command, &args)
        }
        Effect::Copy { from, to } => call(ctx, "COPY", &[from, to, b"REPLACE"]),
        Effect::Functions { dump } => call(ctx, "FUNCTION", &[b"RESTORE", dump, b"FLUSH"]),
    }
}

/// The ZREMRANGEBY* command and its two bounds for a range.
fn zrange_args(range: &ZRange) -> (&'static str, Vec<u8>, Vec<u8>) {
    let score = |b: &ScoreBound| {
        let n = format_score(b.value);
        if b.exclusive {
            format!("({n}").into_bytes()
        } else {
            n.into_bytes()
        }
    };
    let lex = |b: &LexBound| match b {
        LexBound::NegInf => b"-".to_vec(),
        LexBound::PosInf => b"+".to_vec(),
        LexBound::Inclusive(m) => [b"[".as_slice(), m].concat(),
        LexBound::Exclusive(m) => [b"(".as_slice(), m].concat(),
    };
    match range {
        ZRange::Rank { start, stop } => (
            "ZREMRANGEBYRANK",
            start.to_string().into_bytes(),
            stop.to_string().into_bytes(),
        ),
        ZRange::Score { min, max } => ("ZREMRANGEBYSCORE", score(min), score(max)),
        ZRange::Lex { min, max } => ("ZREMRANGEBYLEX", lex(min), lex(max)),
    }
}

/// Empties every db with FLUSHDB: FLUSHALL would also rewrite dump.rdb when save points
/// are configured, destroying a file the operator may still want.
pub fn flush_all(ctx: Ctx) -> Result<(), String> {
    for db in 0..ctx.database_count() {
        if ctx.select_db(db) {
            call(ctx, "FLUSHDB", &[])?;
        }
    }
    ctx.select_db(0);
    Ok(())
}

fn put(ctx: Ctx, key: &[u8], value: &Value, expire_at_ms: i64) -> Result<(), String> {
    if let Value::String(s) = value {
        return ctx.put_string(key, s, expire_at_ms);
    }
    if let Value::StreamDump(dump) = value {
        let ttl = expire_at_ms.max(0).to_string();
        return call(
            ctx,
            "RESTORE",
            &[key, ttl.as_bytes(), dump, b"REPLACE", b"ABSTTL"],
        );
    }
    call(ctx, "DEL", &[key])?;
    match value {
        Value::List(items) => chunked(ctx, "RPUSH", key, items)?,
        Value::Hash(pairs) => chunked_pairs(ctx, "HSET", key, pairs)?,
        Value::Set(members) => chunked(ctx, "SADD", key, members)?,
        Value::Zset(pairs) => zadd(ctx, key, pairs)?,
        Value::String(_) | Value::StreamDump(_) => {}
    }
    if expire_at_ms >= 0 {
        call(
            ctx,
            "PEXPIREAT",
            &[key, expire_at_ms.to_string().as_bytes()],
        )?;
    }
    Ok(())
}

fn push_command(end: End) -> &'static str {
    match end {
        End::Head => "LPUSH",
        End::Tail => "RPUSH",
    }
}

fn call(ctx: Ctx, command: &str, args: &[&[u8]]) -> Result<(), String> {
    match ctx.call(command, args) {
        Reply::Error(e) => Err(format!("{command}: {e}")),
        _ => Ok(()),
    }
}

fn chunked(ctx: Ctx, command: &str, key: &[u8], items: &[Vec<u8>]) -> Result<(), String> {
    for chunk in items.chunks(CHUNK) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
        args.push(key);
        args.extend(chunk.iter().map(Vec::as_slice));
        call(ctx, command, &args)?;
    }
    Ok(())
}

fn chunked_pairs(
    ctx: Ctx,
    command: &str,
    key: &[u8],
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    for chunk in pairs.chunks(CHUNK) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() * 2 + 1);
        args.push(key);
        for (a, b) in chunk {
            args.push(a);
            args.push(b);
        }
        call(ctx, command, &args)?;
    }
    Ok(())
}

fn zadd(ctx: Ctx, key: &[u8], pairs: &[(Vec<u8>, f64)]) -> Result<(), String> {
    for chunk in pairs.chunks(CHUNK) {
        // Rust prints the shortest decimal that parses back to the same f64.
        let scores: Vec<String> = chunk.iter().map(|(_, s)| format_score(*s)).collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() * 2 + 1);
        args.push(key);
        for ((member, _), score) in chunk.iter().zip(&scores) {
            args.push(score.as_bytes());
            args.push(member);
        }
        call(ctx, "ZADD", &args)?;
    }
    Ok(())
}

fn format_score(s: f64) -> String {
    if s.is_infinite() {
        if s > 0.0 { "+inf" } else { "-inf" }.to_string()
    } else {
        format!("{s:?}")
    }
}
