//! A full pool is never a dead end (Redis 7.0 and Valkey 8): filled until writes that add
//! data are refused, it still runs DEL, UNLINK, FLUSHDB, FLUSHALL, expiry and pops, durably
//! (SIGKILL + restart shows them), and takes writes again once enough was deleted; what
//! it admits always fits its free blocks (the replayer never stalls on it); its
//! fill is announced at the `fill-warnings` levels in the server log and on the
//! `__redis-nvm__:fill` channel, and shown in `NVM.INFO`.

mod common;
use common::*;
use std::sync::mpsc;
use std::time::Duration;

fn ok(c: &mut RawConn, args: &[&str]) -> Resp {
    let r = c.cmd(args);
    assert!(r.err().is_none(), "{args:?} on a full pool: {r:?}");
    r
}

fn exists(c: &mut RawConn, key: &str) -> bool {
    c.cmd(&["EXISTS", key]).int() == Some(1)
}

/// Waits until the replayer has folded everything (the heap figures are then final).
fn folded(c: &mut RawConn) {
    wait_until("backlog folded", Duration::from_secs(30), || {
        info_map(c)["log_backlog_bytes"] == "0"
    });
    // Admission is re-evaluated at the next event-loop iteration.
    c.cmd(&["PING"]);
}

/// SETs 2 KB values until one is refused for good (after the backlog is folded);
/// returns the keys written and the refusal.
fn fill(c: &mut RawConn, prefix: &str) -> (Vec<String>, String) {
    let value = "f".repeat(2000);
    let mut keys = Vec::new();
    loop {
        let key = format!("{prefix}:{}", keys.len());
        match c.cmd(&["SET", &key, &value]) {
            Resp::Simple(s) if s == "OK" => keys.push(key),
            Resp::Error(e) if e.starts_with("NVMFULL") => {
                assert!(!exists(c, &key), "a refused SET ran: {e}");
                folded(c);
                if let Resp::Error(again) = c.cmd(&["SET", &key, &value]) {
                    return (keys, again);
                }
                keys.push(key);
            }
            other => panic!("SET {key}: {other:?}"),
        }
        assert!(keys.len() < 20_000, "a 16 MB pool took 40 MB");
    }
}

#[test]
fn a_full_pool_still_deletes_and_announces_its_fill() {
    for flavor in FLAVORS {
        let dir = TestDir::new("fullpool");
        let spec = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "16mb")
            .with_module_arg("log-size", "1mb")
            .with_module_arg("fill-warnings", "50 75 90");
        let server = spec.start();
        let port = server.spec.port;
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sub = RawConn::connect(port);
            sub.send(&["SUBSCRIBE", "__redis-nvm__:fill"]).unwrap();
            let _ = sub.read();
            while let Ok(m) = sub.read() {
                if tx.send(m.items().last().map(Resp::text)).is_err() {
                    break;
                }
            }
        });
        let mut c = RawConn::connect(port);
        // What must still work once full: collections, keys to expire, another db.
        ok(&mut c, &["RPUSH", "list", "a", "b", "c", "d"]);
        ok(&mut c, &["SADD", "set", "m1", "m2", "m3"]);
        ok(&mut c, &["HSET", "hash", "f1", "v1", "f2", "v2"]);
        for k in ["x1", "x2", "x3", "x4"] {
            ok(&mut c, &["SET", k, "v"]);
        }
        ok(&mut c, &["SELECT", "1"]);
        ok(&mut c, &["SET", "in-db1", "v"]);
        ok(&mut c, &["SELECT", "0"]);
        std::thread::sleep(Duration::from_millis(200));
        let (keys, refusal) = fill(&mut c, "fill");
        assert!(
            keys.len() > 1000,
            "{flavor:?}: only {} keys fit",
            keys.len()
        );
        assert!(
            refusal.contains(&dir.pool().display().to_string())
                && refusal.contains("% used")
                && refusal.contains("deletes"),
            "{flavor:?}: the refusal should name the pool, how full it is and what still runs: {refusal}"
        );
        let info = info_map(&mut c);
        assert!(info["state"].starts_with("full"), "{flavor:?}: {info:?}");
        let fill_pct: f64 = info["keyspace_fill_pct"].parse().unwrap();
        assert!(fill_pct > 90.0, "{flavor:?}: {info:?}");
        // Announced at each level on the way up, once each.
        let mut heard = Vec::new();
        while let Ok(m) = messages.recv_timeout(Duration::from_secs(2)) {
            heard.push(m.unwrap_or_default());
        }
        assert_eq!(heard.len(), 3, "{flavor:?}: {heard:?}");
        for (m, level) in heard.iter().zip(["50", "75", "90"]) {
            assert!(m.contains(&format!("level {level}%")), "{flavor:?}: {m}");
        }
        let log = server.log();
        assert!(
            log.contains("% full") && log.contains("level 90%"),
            "{flavor:?}: no fill warning in the log"
        );

        // Deletes, expiry and pops run on the full pool.
        ok(&mut c, &["DEL", "x1"]);
        ok(&mut c, &["UNLINK", "x2"]);
        ok(&mut c, &["EXPIRE", "x3", "-1"]);
        ok(&mut c, &["PEXPIREAT", "x4", "1"]);
        assert_eq!(ok(&mut c, &["LPOP", "list"]).text(), "a");
        let popped = ok(&mut c, &["SPOP", "set"]).text();
        ok(&mut c, &["HDEL", "hash", "f1"]);
        ok(&mut c, &["SELECT", "1"]);
        ok(&mut c, &["FLUSHDB"]);
        ok(&mut c, &["SELECT", "0"]);
        // A write that adds data is still refused.
        let r = c.cmd(&["SET", "new", "v"]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("NVMFULL")),
            "{flavor:?}: {r:?}"
        );
        // Deleting a third of the data makes room again.
        for k in keys.iter().take(keys.len() / 3) {
            assert_eq!(c.cmd(&["DEL", k]).int(), Some(1), "{flavor:?}: DEL {k}");
        }
        folded(&mut c);
        ok(&mut c, &["SET", "new", "v"]);
        let info = info_map(&mut c);
        assert!(info["state"] == "writable", "{flavor:?}: {info:?}");
        assert!(
            info["keyspace_fill_pct"].parse::<f64>().unwrap() < fill_pct - 20.0,
            "{flavor:?}: {info:?}"
        );
        let digest = c.cmd(&["DEBUG", "DIGEST"]).text();
        drop(c);

        // Every delete was durable.
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        for k in ["x1", "x2", "x3", "x4"] {
            assert!(!exists(&mut c, k), "{flavor:?}: deleted {k} came back");
        }
        assert!(exists(&mut c, "new"), "{flavor:?}");
        assert_eq!(c.cmd(&["LRANGE", "list", "0", "-1"]).items().len(), 3);
        assert_eq!(c.cmd(&["SISMEMBER", "set", &popped]).int(), Some(0));
        assert_eq!(c.cmd(&["HEXISTS", "hash", "f1"]).int(), Some(0));
        assert_eq!(c.cmd(&["DEBUG", "DIGEST"]).text(), digest, "{flavor:?}");
        ok(&mut c, &["SELECT", "1"]);
        assert_eq!(c.cmd(&["DBSIZE"]).int(), Some(0), "{flavor:?}");
        ok(&mut c, &["SELECT", "0"]);

        // Full again: FLUSHALL empties it, durably, and writes run again.
        let (_, _) = fill(&mut c, "again");
        ok(&mut c, &["FLUSHALL"]);
        folded(&mut c);
        ok(&mut c, &["SET", "after-flushall", "v"]);
        let info = info_map(&mut c);
        assert_eq!(info["in_doubt_writes"], "0", "{flavor:?}");
        drop(c);
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["DBSIZE"]).int(), Some(1), "{flavor:?}");
        let log = server.log();
        assert!(!log.contains("FATAL"), "{flavor:?}: {log}");
    }
}

/// Below a quarter of the heap's reserve only writes that free space run. A full pool is
/// driven there by writes that add data without the `denyoom` flag (RENAME to a long
/// name runs on a full pool and grows the key space by the name): they are then refused,
/// with an error that says what still runs; DEL, EXPIRE and pops run, and after enough
/// deletes the other writes run again.
#[test]
fn below_a_quarter_of_the_reserve_only_writes_that_free_space_run() {
    for flavor in FLAVORS {
        let dir = TestDir::new("fullpool-freeing");
        let spec = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "16mb")
            .with_module_arg("log-size", "1mb");
        let server = spec.start();
        let mut c = RawConn::connect(server.spec.port);
        ok(&mut c, &["RPUSH", "list", "a", "b", "c"]);
        let (keys, _) = fill(&mut c, "fill");
        let long = "n".repeat(8000);
        let mut renamed = 0;
        let mut refusals = Vec::new();
        loop {
            assert!(renamed < keys.len() / 2, "{flavor:?}: RENAME never refused");
            let to = format!("{renamed}{long}");
            if let Resp::Error(e) = c.cmd(&["RENAME", &keys[renamed], &to]) {
                refusals.push(e);
                folded(&mut c);
                match c.cmd(&["RENAME", &keys[renamed], &to]) {
                    Resp::Error(e) => {
                        refusals.push(e);
                        break;
                    }
                    _ => renamed += 1,
                }
            } else {
                renamed += 1;
            }
        }
        assert!(
            refusals.iter().all(|e| e.starts_with("NVMFULL")),
            "{flavor:?}: {refusals:?}"
        );
        assert!(
            refusals
                .iter()
                .any(|e| e.contains("only DEL, UNLINK, FLUSHDB, FLUSHALL, expiry and pops run")),
            "{flavor:?}: the lowest tier was not reached: {refusals:?}"
        );
        // Everything admitted was folded: the key space never stalled for a block (a
        // RENAME to a long name needs one block for its key item; free blocks are not
        // merged, so one that fits no free block is refused before it runs).
        folded(&mut c);
        let state = info_map(&mut c)["replay_state"].clone();
        assert!(!state.starts_with("stalled"), "{flavor:?}: {state}");
        assert!(
            exists(&mut c, &keys[renamed]),
            "{flavor:?}: a refused RENAME ran"
        );
        // What frees space still runs.
        let tail = keys.len() - 1;
        assert_eq!(ok(&mut c, &["DEL", &keys[tail]]).int(), Some(1));
        assert_eq!(
            ok(&mut c, &["EXPIRE", &keys[tail - 1], "-1"]).int(),
            Some(1)
        );
        assert_eq!(ok(&mut c, &["LPOP", "list"]).text(), "a");
        // Enough deletes bring every write back.
        for k in &keys[renamed..renamed + keys.len() / 3] {
            ok(&mut c, &["DEL", k]);
        }
        folded(&mut c);
        ok(&mut c, &["RENAME", &keys[tail - 2], "back-in-business"]);
        ok(&mut c, &["SET", "new", "v"]);
        assert_eq!(info_map(&mut c)["in_doubt_writes"], "0", "{flavor:?}");
        drop(c);
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        assert!(
            !exists(&mut c, &keys[tail]),
            "{flavor:?}: a DEL on the full pool was lost"
        );
        assert!(
            exists(&mut c, "back-in-business") && exists(&mut c, "new"),
            "{flavor:?}"
        );
        assert_eq!(
            c.cmd(&["LRANGE", "list", "0", "-1"]).items().len(),
            2,
            "{flavor:?}"
        );
    }
}

/// A full pool grows without losing or re-importing its data: at restart with a larger
/// `size` (also when SIGKILLed while it grows), and offline with `nvm-tool grow`.
#[test]
fn a_full_pool_grows_at_restart_and_offline() {
    for flavor in FLAVORS {
        let dir = TestDir::new("grow");
        let pool = dir.pool().display().to_string();
        let spec = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "16mb")
            .with_module_arg("log-size", "1mb");
        let server = spec.start();
        let mut c = RawConn::connect(server.spec.port);
        let (keys, _) = fill(&mut c, "first");
        let digest = c.cmd(&["DEBUG", "DIGEST"]).text();
        drop(c);
        let spec = server.kill9();

        // SIGKILLed while it may be growing: whatever size it has, every key is there.
        let mut bigger = spec.clone().with_module_arg("size", "32mb");
        for delay_ms in [0u64, 2, 10, 40] {
            let starting = bigger.spawn();
            std::thread::sleep(Duration::from_millis(delay_ms));
            bigger = starting.kill9_starting();
        }
        let server = bigger.start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["DEBUG", "DIGEST"]).text(), digest, "{flavor:?}");
        let info = info_map(&mut c);
        assert_eq!(info["pool_size"], (32u64 << 20).to_string(), "{flavor:?}");
        assert_eq!(info["state"], "writable", "{flavor:?}: {info:?}");
        assert!(server.log().contains("grown from") || server.log().contains("finished a grow"));
        // The new space takes about as much again.
        let (more, _) = fill(&mut c, "second");
        assert!(
            more.len() > keys.len(),
            "{flavor:?}: {} then {}",
            keys.len(),
            more.len()
        );
        let digest = c.cmd(&["DEBUG", "DIGEST"]).text();
        drop(c);
        let spec = server.kill9();

        // Offline: refused while a server holds the pool, then grown.
        let holder = spec.start();
        let (code, text) = nvm_tool(&["grow", &pool, "48mb"]);
        assert_eq!(code, 2, "{flavor:?}: grew a pool in use: {text}");
        let spec = holder.kill9();
        let (code, text) = nvm_tool(&["grow", &pool, "48mb"]);
        assert_eq!(code, 0, "{flavor:?}: {text}");
        assert!(text.contains("grown"), "{text}");
        let (code, text) = nvm_tool(&["grow", &pool, "20mb"]);
        assert_eq!(code, 2, "{flavor:?}: shrank: {text}");
        let (code, text) = nvm_tool(&["check", &pool]);
        assert_eq!(code, 0, "{flavor:?}: {text}");
        // Started with its old, smaller size: it keeps 48 MB and says so.
        let server = spec.start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["DEBUG", "DIGEST"]).text(), digest, "{flavor:?}");
        assert_eq!(info_map(&mut c)["pool_size"], (48u64 << 20).to_string());
        assert!(server.log().contains("pools do not shrink"), "{flavor:?}");
        ok(&mut c, &["SET", "after-offline-grow", "v"]);

        // Online: full again, then CONFIG SET nvm.size while other clients read and
        // write; the writes refused for room run at once after it.
        let (third, _) = fill(&mut c, "third");
        let port = server.spec.port;
        let busy = std::thread::spawn(move || {
            let mut other = RawConn::connect(port);
            let value = "f".repeat(2000);
            let mut wrote = 0;
            for i in 0..3000 {
                assert_eq!(other.cmd(&["GET", &third[i % third.len()]]).text(), value);
                if other.cmd(&["SET", &format!("during:{i}"), "v"]).text() == "OK" {
                    wrote += 1;
                }
            }
            wrote
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.cmd(&["CONFIG", "SET", "nvm.size", "64mb"]).text(), "OK");
        ok(&mut c, &["SET", "after-online-grow", "v"]);
        let wrote_during = busy.join().expect("the busy client");
        assert!(wrote_during > 0, "{flavor:?}");
        let info = info_map(&mut c);
        assert_eq!(info["pool_size"], (64u64 << 20).to_string(), "{flavor:?}");
        assert!(server.log().contains("grown online"), "{flavor:?}");
        let (fourth, _) = fill(&mut c, "fourth");
        assert!(fourth.len() > 1000, "{flavor:?}: {}", fourth.len());
        let digest = c.cmd(&["DEBUG", "DIGEST"]).text();
        drop(c);
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["DEBUG", "DIGEST"]).text(), digest, "{flavor:?}");
        assert_eq!(info_map(&mut c)["pool_size"], (64u64 << 20).to_string());
        let (code, text) = nvm_tool(&["check", &pool]);
        assert_eq!(code, 2, "{flavor:?}: the pool is in use: {text}");

        // SIGKILLed while an online grow may be running: every acknowledged write is
        // there, at either size.
        c.send(&["CONFIG", "SET", "nvm.size", "96mb"]).unwrap();
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["DEBUG", "DIGEST"]).text(), digest, "{flavor:?}");
        let size = info_map(&mut c)["pool_size"].clone();
        assert!(
            size == (64u64 << 20).to_string() || size == (96u64 << 20).to_string(),
            "{flavor:?}: {size}"
        );
        ok(&mut c, &["SET", "after-a-cut-grow", "v"]);
    }
}
