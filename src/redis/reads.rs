//! NVM.GET, NVM.TYPE, NVM.TTL, NVM.PTTL, NVM.DBSIZE and NVM.SCAN: the NVM key space read
//! directly, in the caller's db, at any time (before, during and after the warm-up).
//!
//! Each reads the key space once it has folded every write acknowledged so far (it waits
//! for the replayer, normally a few records behind), so after the warm-up they agree with
//! the server's own view. Keys whose expiry has passed are absent, as in the server.
//! Replies are RESP3 maps and sets for RESP3 clients, arrays for RESP2 ones.

#![forbid(unsafe_code)]

use super::commands::permitted;
use super::config::Durability;
use super::ffi::{Ctx, Out};
use super::replayer;
use super::state::with_module;
use crate::effect::Effect;
use crate::keyspace::{KeyMeta, KeySpace, StoreError, StoredValue};
use crate::warmup::expired;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a read waits for the replayer to fold what was acknowledged before it.
const FOLD_WAIT: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `read` on the key space after it has folded everything acknowledged so far.
fn folded<T>(read: impl FnOnce(&mut KeySpace) -> Result<T, StoreError>) -> Result<T, String> {
    let end = with_module(|m| {
        if m.settings.durability == Durability::Everysec {
            m.pool.log_mut().sync().map_err(|e| e.to_string())?;
            replayer::publish_durable(m.pool.log().committed_end());
        }
        Ok::<_, String>(m.pool.log().committed_end())
    })
    .ok_or("ERR redis-nvm is not initialised")??;
    let began = Instant::now();
    while replayer::applied().pos < end.pos {
        if let Some(why) = replayer::stall_reason() {
            return Err(format!("ERR the key space stopped folding the log: {why}"));
        }
        if began.elapsed() > FOLD_WAIT {
            return Err("ERR the key space is still folding the log; retry".into());
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let shared = replayer::shared().ok_or("ERR redis-nvm has no key space")?;
    let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
    read(r.keyspace_mut()).map_err(|e| format!("ERR {e}"))
}

fn reply(ctx: Ctx, result: Result<Out, String>) {
    match result {
        Ok(out) => ctx.reply_value(&out),
        Err(e) => ctx.reply_error(&e),
    }
}

fn one_key<'a>(ctx: Ctx, args: &'a [Vec<u8>], usage: &str) -> Option<&'a [u8]> {
    match args {
        [key] => Some(key),
        _ => {
            ctx.reply_error(&format!("ERR wrong number of arguments: {usage}"));
            None
        }
    }
}

/// A key's type and expiry, None when absent or expired.
fn live_meta(ks: &mut KeySpace, db: u32, key: &[u8]) -> Result<Option<KeyMeta>, StoreError> {
    Ok(ks
        .key_meta(db, key)?
        .filter(|m| !expired(m.expire_at_ms, now_ms())))
}

/// NVM.GET key: `{type, ttl (ms, -1: none), value}`, or null.
pub fn nvm_get(ctx: Ctx, args: &[Vec<u8>]) {
    let Some(key) = one_key(ctx, args, "NVM.GET key") else {
        return;
    };
    if !permitted(ctx, "nvm.get", &[b"DUMP", key]) {
        return;
    }
    let db = ctx.selected_db();
    reply(
        ctx,
        folded(|ks| {
            let Some(meta) = live_meta(ks, db, key)? else {
                return Ok(Out::Null);
            };
            let Some(entry) = ks.get_verified(db, key)? else {
                return Ok(Out::Null);
            };
            let ttl = match meta.expire_at_ms {
                at if at < 0 => -1,
                at => (at - now_ms()).max(0),
            };
            Ok(Out::Map(vec![
                (
                    Out::Simple("type".into()),
                    Out::Simple(meta.type_name.into()),
                ),
                (Out::Simple("ttl".into()), Out::Int(ttl)),
                (Out::Simple("value".into()), value_out(entry.value)),
            ]))
        }),
    );
}

/// A stored value as its natural reply: a string, a list, a map of fields, a set, a
/// map of members to scores; a stream as its last DUMP (a RESTORE payload) and the
/// entries added since.
fn value_out(value: StoredValue) -> Out {
    let bulk = Out::Bulk;
    match value {
        StoredValue::String(s) => bulk(s),
        StoredValue::List(l) => Out::Array(l.into_iter().map(bulk).collect()),
        StoredValue::Hash(h) => Out::Map(h.into_iter().map(|(f, v)| (bulk(f), bulk(v))).collect()),
        StoredValue::Set(s) => Out::Set(s.into_iter().map(bulk).collect()),
        StoredValue::Zset(z) => Out::Map(
            z.into_iter()
                .map(|(m, s)| (bulk(m), Out::Double(s)))
                .collect(),
        ),
        StoredValue::Stream { dump, ops } => {
            let ops = ops
                .into_iter()
                .map(|op| match op {
                    Effect::StreamAdd { id, fields, .. } => Out::Array(vec![
                        Out::Simple("add".into()),
                        bulk(id.to_string().into_bytes()),
                        Out::Array(
                            fields
                                .into_iter()
                                .flat_map(|(f, v)| [bulk(f), bulk(v)])
                                .collect(),
                        ),
                    ]),
                    Effect::StreamTrim { min_id, .. } => Out::Array(vec![
                        Out::Simple("trim".into()),
                        min_id.map_or(Out::Null, |id| bulk(id.to_string().into_bytes())),
                    ]),
                    Effect::StreamAck { group, ids, .. } => Out::Array(vec![
                        Out::Simple("ack".into()),
                        bulk(group),
                        Out::Array(
                            ids.iter()
                                .map(|id| bulk(id.to_string().into_bytes()))
                                .collect(),
                        ),
                    ]),
                    Effect::StreamGroup { group, state, .. } => Out::Array(vec![
                        Out::Simple("group".into()),
                        bulk(group),
                        bulk(state.last_id.to_string().into_bytes()),
                        Out::Array(
                            state
                                .ranges
                                .into_iter()
                                .map(|r| {
                                    let entries = r.entries.into_iter().map(|(id, p)| {
                                        Out::Array(vec![
                                            bulk(id.to_string().into_bytes()),
                                            bulk(p.consumer),
                                            Out::Int(p.delivered_ms),
                                            Out::Int(
                                                i64::try_from(p.deliveries).unwrap_or(i64::MAX),
                                            ),
                                        ])
                                    });
                                    Out::Array(vec![
                                        bulk(r.first.to_string().into_bytes()),
                                        bulk(r.last.to_string().into_bytes()),
                                        Out::Array(entries.collect()),
                                    ])
                                })
                                .collect(),
                        ),
                    ]),
                    Effect::StreamGroups { groups, .. } => Out::Array(vec![
                        Out::Simple("groups".into()),
                        Out::Array(
                            groups
                                .into_iter()
                                .map(|g| {
                                    Out::Array(vec![
                                        bulk(g.name),
                                        bulk(g.last_id.to_string().into_bytes()),
                                        Out::Array(
                                            g.consumers.into_iter().map(|c| bulk(c.name)).collect(),
                                        ),
                                    ])
                                })
                                .collect(),
                        ),
                    ]),
                    Effect::StreamSetId {
                        last_id,
                        entries_added,
                        max_deleted,
                        ..
                    } => Out::Array(vec![
                        Out::Simple("setid".into()),
                        bulk(last_id.to_string().into_bytes()),
                        Out::Int(i64::try_from(entries_added).unwrap_or(i64::MAX)),
                        bulk(max_deleted.to_string().into_bytes()),
                    ]),
                    other => Out::Simple(other.name().into()),
                })
                .collect();
            Out::Map(vec![
                (Out::Simple("dump".into()), dump.map_or(Out::Null, bulk)),
                (Out::Simple("since_dump".into()), Out::Array(ops)),
            ])
        }
    }
}

/// NVM.TYPE key: the type, or `none`.
pub fn nvm_type(ctx: Ctx, args: &[Vec<u8>]) {
    let Some(key) = one_key(ctx, args, "NVM.TYPE key") else {
        return;
    };
    if !permitted(ctx, "nvm.type", &[b"TYPE", key]) {
        return;
    }
    let db = ctx.selected_db();
    reply(
        ctx,
        folded(|ks| {
            let name = live_meta(ks, db, key)?.map_or("none", |m| m.type_name);
            Ok(Out::Simple(name.into()))
        }),
    );
}

/// NVM.PTTL / NVM.TTL key: like PTTL / TTL (-2: no key, -1: no expiry).
pub fn nvm_pttl(ctx: Ctx, args: &[Vec<u8>]) {
    ttl(ctx, args, true)
}

pub fn nvm_ttl(ctx: Ctx, args: &[Vec<u8>]) {
    ttl(ctx, args, false)
}

fn ttl(ctx: Ctx, args: &[Vec<u8>], ms: bool) {
    let (name, native): (&str, &[u8]) = if ms {
        ("nvm.pttl", b"PTTL")
    } else {
        ("nvm.ttl", b"TTL")
    };
    let Some(key) = one_key(ctx, args, &format!("{} key", name.to_uppercase())) else {
        return;
    };
    if !permitted(ctx, name, &[native, key]) {
        return;
    }
    let db = ctx.selected_db();
    reply(
        ctx,
        folded(|ks| {
            let left = match live_meta(ks, db, key)? {
                None => -2,
                Some(m) if m.expire_at_ms < 0 => -1,
                Some(m) => (m.expire_at_ms - now_ms()).max(0),
            };
            // TTL rounds to the nearest second, as the server's does.
            Ok(Out::Int(if ms || left < 0 {
                left
            } else {
                (left + 500) / 1000
            }))
        }),
    );
}

/// NVM.DBSIZE: keys in the caller's db.
pub fn nvm_dbsize(ctx: Ctx, args: &[Vec<u8>]) {
    if !args.is_empty() {
        ctx.reply_error("ERR wrong number of arguments: NVM.DBSIZE");
        return;
    }
    if !permitted(ctx, "nvm.dbsize", &[b"DBSIZE"]) {
        return;
    }
    let db = ctx.selected_db();
    reply(ctx, folded(|ks| Ok(Out::Int(ks.db_key_count(db)? as i64))));
}

/// NVM.SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]: like SCAN, over the key space.
pub fn nvm_scan(ctx: Ctx, args: &[Vec<u8>]) {
    let usage = "ERR syntax: NVM.SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]";
    let Some(cursor) = args
        .first()
        .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok())
    else {
        ctx.reply_error("ERR invalid cursor");
        return;
    };
    let (mut pattern, mut count, mut type_filter) = (None, 10usize, None);
    let mut rest = args[1..].chunks(2);
    for pair in rest.by_ref() {
        match pair {
            [opt, v] if opt.eq_ignore_ascii_case(b"match") => pattern = Some(v.clone()),
            [opt, v] if opt.eq_ignore_ascii_case(b"type") => {
                type_filter = Some(String::from_utf8_lossy(v).to_ascii_lowercase())
            }
            [opt, v] if opt.eq_ignore_ascii_case(b"count") => {
                match std::str::from_utf8(v).ok().and_then(|n| n.parse().ok()) {
                    Some(n) if n >= 1 => count = n,
                    _ => return ctx.reply_error("ERR value is out of range, must be positive"),
                }
            }
            _ => return ctx.reply_error(usage),
        }
    }
    if !permitted(ctx, "nvm.scan", &[b"SCAN", b"0"]) {
        return;
    }
    let db = ctx.selected_db();
    reply(
        ctx,
        folded(|ks| {
            let (next, keys) = ks.scan(db, cursor, count)?;
            let now = now_ms();
            let keys = keys
                .into_iter()
                .filter(|m| !expired(m.expire_at_ms, now))
                .filter(|m| type_filter.as_deref().is_none_or(|t| t == m.type_name))
                .filter(|m| pattern.as_deref().is_none_or(|p| glob_match(p, &m.key)))
                .map(|m| Out::Bulk(m.key))
                .collect();
            Ok(Out::Array(vec![
                Out::Bulk(next.to_string().into_bytes()),
                Out::Array(keys),
            ]))
        }),
    );
}

/// Redis's glob (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_match(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (negate, mut p) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match p {
                    [] => break,
                    [b']', r @ ..] => {
                        p = r;
                        break;
                    }
                    [b'\\', x, r @ ..] => {
                        matched |= *x == c;
                        p = r;
                    }
                    [a, b'-', b, r @ ..] if *b != b']' => {
                        let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                        matched |= lo <= c && c <= hi;
                        p = r;
                    }
                    [x, r @ ..] => {
                        matched |= *x == c;
                        p = r;
                    }
                }
            }
            matched != negate && glob_match(p, tail)
        }
        Some((b'\\', [x, rest @ ..])) => s.first() == Some(x) && glob_match(rest, &s[1..]),
        Some((&c, rest)) => s.first() == Some(&c) && glob_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_the_server() {
        let yes = [
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("k\\*", "k*"),
            ("user:*:name", "user:42:name"),
        ];
        let no = [
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("k\\*", "kx"),
            ("user:*", "other"),
        ];
        for (p, s) in yes {
            assert!(glob_match(p.as_bytes(), s.as_bytes()), "{p} {s}");
        }
        for (p, s) in no {
            assert!(!glob_match(p.as_bytes(), s.as_bytes()), "{p} {s}");
        }
    }
}
