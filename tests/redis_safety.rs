//! Safety of the module inside real servers (Redis 7.0 and Valkey 8): SIGKILL under a
//! concurrent write load, rejected writes, damaged/truncated/unreadable pools, bad module
//! arguments, a full pool, coexistence with RDB, transparency (same replies, commandstats
//! and keyspace notifications as a stock server) and the admin surface.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn raw(server: &Server) -> RawConn {
    RawConn::connect(server.spec.port)
}

fn get(c: &mut RawConn, key: &str) -> Option<String> {
    match c.cmd(&["GET", key]) {
        Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Resp::Bulk(None) => None,
        other => panic!("GET {key}: {other:?}"),
    }
}

fn exists(c: &mut RawConn, key: &str) -> bool {
    c.cmd(&["EXISTS", key]).int() == Some(1)
}

fn expect_ok(c: &mut RawConn, args: &[&str]) {
    let r = c.cmd(args);
    assert!(r.err().is_none(), "{args:?}: {r:?}");
}

fn server_digest(c: &mut RawConn) -> String {
    let r = c.cmd(&["DEBUG", "DIGEST"]);
    assert!(r.err().is_none(), "DEBUG DIGEST: {r:?}");
    r.text()
}

// ---- 1 ---------------------------------------------------------------------------------

/// One writer: RPUSH list:{t} i then INCR counter:{t}; returns the last i whose two
/// replies both arrived, and any error reply (there must be none).
fn writer(port: u16, t: usize, stop: Arc<AtomicBool>) -> (Option<u64>, Option<String>) {
    let Ok(mut c) = RawConn::try_connect(port) else {
        return (None, Some("cannot connect".into()));
    };
    let (list, counter) = (format!("list:{t}"), format!("counter:{t}"));
    let mut acked = None;
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match c.try_cmd(&["RPUSH", &list, &i.to_string()]) {
            Ok(Resp::Int(_)) => {}
            Ok(other) => return (acked, Some(format!("RPUSH {list} {i}: {other:?}"))),
            Err(_) => break,
        }
        match c.try_cmd(&["INCR", &counter]) {
            Ok(Resp::Int(_)) => acked = Some(i),
            Ok(other) => return (acked, Some(format!("INCR {counter}: {other:?}"))),
            Err(_) => break,
        }
    }
    (acked, None)
}

#[test]
fn sigkill_during_multi_client_write_load() {
    for flavor in FLAVORS {
        let dir = TestDir::new("sigkill-load");
        let server = ServerSpec::module(flavor, &dir).start();
        let port = server.spec.port;
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || writer(port, t, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1000));
        let spec = server.kill9();
        // The writers stop on their own (connection errors); the flag is a backstop.
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<Option<u64>> = threads
            .into_iter()
            .map(|h| {
                let (acked, error) = h.join().unwrap();
                assert_eq!(error, None, "{flavor:?}: a writer got an error reply");
                acked
            })
            .collect();
        eprintln!("{flavor:?}: last acknowledged i per writer: {acked:?}");
        assert!(
            acked.iter().all(Option::is_some),
            "{flavor:?}: every writer should have had writes acknowledged: {acked:?}"
        );

        let server = spec.start();
        let mut c = raw(&server);
        for (t, acked) in acked.iter().enumerate() {
            let acked = acked.unwrap();
            let items: Vec<String> = c
                .cmd(&["LRANGE", &format!("list:{t}"), "0", "-1"])
                .items()
                .iter()
                .map(Resp::text)
                .collect();
            let n = items.len() as u64;
            let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            assert_eq!(
                items, expected,
                "{flavor:?}: list:{t} is not 0..{n} in order"
            );
            assert!(
                n > acked,
                "{flavor:?}: list:{t} has {n} items but {acked} was acknowledged (lost writes)"
            );
            let counter: u64 = get(&mut c, &format!("counter:{t}"))
                .unwrap_or_else(|| panic!("{flavor:?}: counter:{t} is missing"))
                .parse()
                .unwrap();
            assert!(
                counter > acked,
                "{flavor:?}: counter:{t} = {counter} but INCR #{acked} was acknowledged"
            );
            // RPUSH i runs before INCR i: the counter is n, or n-1 when the crash fell between them.
            assert!(
                counter == n || counter + 1 == n,
                "{flavor:?}: counter:{t} = {counter} inconsistent with list length {n}"
            );
        }
        let info = info_map(&mut c);
        assert_eq!(info["state"], "writable", "{flavor:?}: {info:?}");
        assert_eq!(info["recovery_errors"], "0", "{flavor:?}: {info:?}");
        let d1 = server_digest(&mut c);
        let server = server.kill9().start();
        let mut c = raw(&server);
        assert_eq!(
            server_digest(&mut c),
            d1,
            "{flavor:?}: digest changed across a second kill9+restart"
        );
    }
}

// ---- 2 ---------------------------------------------------------------------------------

#[test]
fn rejected_writes_never_come_back() {
    for flavor in FLAVORS {
        let dir = TestDir::new("rejected");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = raw(&server);
        expect_ok(&mut c, &["SET", "ack:before", "1"]);
        expect_ok(&mut c, &["RPUSH", "ack:list", "a", "b"]);

        // ACL: a read-only user.
        expect_ok(
            &mut c,
            &["ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read"],
        );
        let mut reader = raw(&server);
        expect_ok(&mut reader, &["AUTH", "reader", "pw"]);
        let r = reader.cmd(&["SET", "rej:acl", "v"]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("NOPERM")),
            "{flavor:?}: ACL: {r:?}"
        );
        assert_eq!(get(&mut reader, "ack:before").as_deref(), Some("1"));

        // WRONGTYPE.
        expect_ok(&mut c, &["SET", "ack:str", "v"]);
        let r = c.cmd(&["LPUSH", "ack:str", "x"]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("WRONGTYPE")),
            "{flavor:?}: {r:?}"
        );
        let r = c.cmd(&["LPUSH", "ack:list", "rej:wrongtype-never-pushed"]);
        assert_eq!(r, Resp::Int(3), "{flavor:?}: LPUSH on the list");
        let r = c.cmd(&["LPOP", "ack:list"]);
        assert_eq!(r.text(), "rej:wrongtype-never-pushed");

        // EXECABORT: a syntax error while queueing aborts the whole transaction.
        expect_ok(&mut c, &["MULTI"]);
        assert_eq!(
            c.cmd(&["SET", "rej:k1", "v"]),
            Resp::Simple("QUEUED".into())
        );
        let r = c.cmd(&["SET"]);
        assert!(r.err().is_some(), "{flavor:?}: SET without args: {r:?}");
        let r = c.cmd(&["EXEC"]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("EXECABORT")),
            "{flavor:?}: {r:?}"
        );

        // DISCARD.
        expect_ok(&mut c, &["MULTI"]);
        assert_eq!(
            c.cmd(&["SET", "rej:k2", "v"]),
            Resp::Simple("QUEUED".into())
        );
        assert_eq!(c.cmd(&["DISCARD"]), Resp::Simple("OK".into()));

        // A runtime error inside EXEC: the other commands ran and were acknowledged.
        expect_ok(&mut c, &["MULTI"]);
        c.cmd(&["SET", "ack:in-exec", "v"]);
        c.cmd(&["LPUSH", "ack:str", "rej:x"]);
        let r = c.cmd(&["EXEC"]);
        let items = r.items();
        assert_eq!(items.len(), 2, "{flavor:?}: {r:?}");
        assert!(items[1].err().is_some_and(|e| e.starts_with("WRONGTYPE")));

        // OOM with noeviction.
        expect_ok(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        expect_ok(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
        let r = c.cmd(&["SET", "rej:oom", "v"]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("OOM")),
            "{flavor:?}: {r:?}"
        );
        expect_ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);

        expect_ok(&mut c, &["SET", "ack:after", "2"]);
        for k in ["rej:acl", "rej:k1", "rej:k2", "rej:oom"] {
            assert!(
                !exists(&mut c, k),
                "{flavor:?}: {k} exists before the crash"
            );
        }
        let d1 = server_digest(&mut c);
        drop(reader);
        let server = server.kill9().start();
        let mut c = raw(&server);
        for k in ["rej:acl", "rej:k1", "rej:k2", "rej:oom"] {
            assert!(!exists(&mut c, k), "{flavor:?}: rejected {k} came back");
        }
        assert_eq!(get(&mut c, "ack:str").as_deref(), Some("v"));
        assert_eq!(c.cmd(&["TYPE", "ack:str"]), Resp::Simple("string".into()));
        assert_eq!(get(&mut c, "ack:in-exec").as_deref(), Some("v"));
        let list: Vec<String> = c
            .cmd(&["LRANGE", "ack:list", "0", "-1"])
            .items()
            .iter()
            .map(Resp::text)
            .collect();
        assert_eq!(list, ["a", "b"], "{flavor:?}");
        assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(5), "{flavor:?}");
        assert_eq!(
            server_digest(&mut c),
            d1,
            "{flavor:?}: digest after restart"
        );
        drop(server);

        // A write to a read-only replica.
        let mdir = TestDir::new("rejected-master");
        let rdir = TestDir::new("rejected-replica");
        let master = ServerSpec::stock(flavor, &mdir).start();
        let mut m = raw(&master);
        expect_ok(&mut m, &["SET", "ack:m1", "1"]);
        let mport = master.spec.port.to_string();
        let replica = ServerSpec::module(flavor, &rdir)
            .with_extra(&["--replicaof", "127.0.0.1", &mport])
            .start();
        let mut r = raw(&replica);
        expect_ok(&mut m, &["RPUSH", "ack:m2", "x", "y"]);
        let target = server_digest(&mut m);
        wait_until("the replica to catch up", Duration::from_secs(10), || {
            server_digest(&mut r) == target
        });
        let e = r.cmd(&["SET", "rej:replica", "v"]);
        assert!(
            e.err().is_some_and(|e| e.starts_with("READONLY")),
            "{flavor:?}: replica write: {e:?}"
        );
        let mut rspec = replica.kill9();
        rspec
            .extra
            .retain(|a| a != "--replicaof" && a != "127.0.0.1" && *a != mport);
        let replica = rspec.start();
        let mut r = raw(&replica);
        assert!(
            !exists(&mut r, "rej:replica"),
            "{flavor:?}: replica write came back"
        );
        assert_eq!(server_digest(&mut r), target, "{flavor:?}: replica data");
    }
}

// ---- 3, 4 ------------------------------------------------------------------------------

/// The value of `key:{i}`: distinctive, so that its bytes can be found in the pool file.
fn numbered_value(i: usize) -> String {
    format!("value-{i:06}-{}", "p".repeat(40))
}

/// Writes `n` keys `key:{i}`, then waits until the replayer has folded every record into
/// the pool's key space (a kill9 then leaves the values there, not only in the log).
fn write_numbered_keys(c: &mut RawConn, n: usize) {
    for i in 0..n {
        expect_ok(c, &["SET", &format!("key:{i}"), &numbered_value(i)]);
    }
    wait_until(
        "the replayer to fold the log",
        Duration::from_secs(10),
        || {
            let info = info_map(c);
            info["applied_lsn"] == info["last_lsn"] && info["keyspace_keys"] == n.to_string()
        },
    );
}

/// Starts `spec` on a pool it must refuse: the server exits, its last start wrote exactly
/// one redis-nvm line naming the pool (returned), and the refusal left the pool as it was.
fn refused_start_line(flavor: Flavor, spec: &ServerSpec, pool: &Path) -> String {
    let before = std::fs::read(pool).unwrap();
    let log = last_run(&spec.start_expecting_failure());
    let path = pool.display().to_string();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("redis-nvm") && l.contains(&path))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "{flavor:?}: one redis-nvm line naming {path}; log:\n{log}"
    );
    assert!(!log.contains("panic"), "{flavor:?}: {log}");
    assert!(
        std::fs::read(pool).unwrap() == before,
        "{flavor:?}: the refused start changed the pool"
    );
    ours[0].to_string()
}

#[test]
fn truncated_pool() {
    for flavor in FLAVORS {
        let dir = TestDir::new("truncated");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = raw(&server);
        write_numbered_keys(&mut c, 300);
        let spec = server.kill9();

        // Cut the file to half: the module must not serve (or regrow) what is left.
        let full = file_len(&dir.pool());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.pool())
            .unwrap();
        f.set_len(full / 2).unwrap();
        drop(f);
        let line = refused_start_line(flavor, &spec, &dir.pool());
        assert!(
            line.contains("cut short")
                && line.contains(&(full / 2).to_string())
                && line.contains(&full.to_string()),
            "{flavor:?}: the refusal should say the file was cut short, from {full} to {} bytes: {line}",
            full / 2
        );
        assert_eq!(file_len(&dir.pool()), full / 2, "{flavor:?}");
        let (code, text) = nvm_tool(&["check", &dir.pool().display().to_string()]);
        // Exit status 2: the tool cannot inspect a pool that was cut short either.
        assert!(
            code == 2 && text.contains("cut short"),
            "{flavor:?}: nvm-tool check on the truncated pool ({code}): {text}"
        );
    }
}

/// Where the key space's heap is in a pool file: (offset, size), from the superblock
/// (little-endian u64s at bytes 80 and 88; src/pool/superblock.rs).
fn heap_range(pool: &[u8]) -> std::ops::Range<usize> {
    let word = |at: usize| u64::from_le_bytes(pool[at..at + 8].try_into().unwrap()) as usize;
    let (offset, size) = (word(80), word(88));
    assert!(
        offset + size <= pool.len(),
        "heap {offset}+{size} in {} bytes",
        pool.len()
    );
    offset..offset + size
}

/// A flipped byte in a key-space item: the key space opens without its walk, so the
/// server starts and serves; the warm-up's walk finds the item's checksum wrong, reports
/// it with its pool offset (the offset `nvm-tool check` names too), never serves the
/// damaged key, and refuses writes.
#[test]
fn damaged_pool_flipped_byte() {
    let mut tool_results = Vec::new();
    for flavor in FLAVORS {
        let dir = TestDir::new("flipped");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = raw(&server);
        write_numbered_keys(&mut c, 300);
        let spec = server.kill9();

        // Flip one byte in the middle of key:150's value, in its key-space item.
        let mut bytes = std::fs::read(dir.pool()).unwrap();
        let heap = heap_range(&bytes);
        let value = numbered_value(150);
        let found: Vec<usize> = bytes[heap.clone()]
            .windows(value.len())
            .enumerate()
            .filter(|(_, w)| *w == value.as_bytes())
            .map(|(i, _)| heap.start + i)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{flavor:?}: {value:?} should be in the key space's heap once: at {found:?}"
        );
        let at = found[0] + value.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(dir.pool(), &bytes).unwrap();

        // The key space opens without its walk: the server serves, the warm-up's walk
        // finds the damage, reports it with its offset, and refuses writes.
        let server = spec.start();
        let mut c = raw(&server);
        assert_eq!(c.cmd(&["PING"]).text(), "PONG");
        let info = c.cmd(&["NVM.INFO"]).text();
        assert!(info.contains("warmup_damaged:1"), "{flavor:?}: {info}");
        assert!(info.contains("state:damaged"), "{flavor:?}: {info}");
        assert_eq!(
            c.cmd(&["GET", "key:150"]),
            Resp::Bulk(None),
            "{flavor:?}: damaged data is never served"
        );
        assert_eq!(c.cmd(&["GET", "key:151"]).text(), numbered_value(151));
        assert!(
            c.cmd(&["SET", "more", "x"]).err().is_some(),
            "{flavor:?}: writes are refused"
        );
        let log = server.log();
        let line = log
            .lines()
            .find(|l| l.contains("POOL DAMAGED"))
            .unwrap_or_else(|| panic!("{flavor:?}: no POOL DAMAGED line:\n{log}"))
            .to_string();
        assert!(!log.contains("panic"), "{flavor:?}: {log}");
        let offset: usize = line
            .split("pool offset ")
            .nth(1)
            .and_then(|rest| rest.split(|ch: char| !ch.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{flavor:?}: the refusal should name a pool offset: {line}"));
        assert!(
            line.contains("checksum"),
            "{flavor:?}: the refusal should say checksum: {line}"
        );
        // The offset is the damaged item's; the item (a header, then the key, then the
        // value) is small and starts before the flipped byte.
        assert!(
            offset < at && at - offset < 256,
            "{flavor:?}: offset {offset} should be the item holding the flipped byte at {at}: {line}"
        );
        server.kill9(); // the tool opens the pool only when no server holds it
        tool_results.push((
            flavor,
            offset,
            nvm_tool(&["check", &dir.pool().display().to_string()]),
        ));
    }
    // Last, so that both servers' refusals are checked even if the tool misses the damage.
    // Exit status 1 (damage found) and a problem line at the offset the module named.
    for (flavor, offset, (code, text)) in tool_results {
        let problem = format!("keyspace: PROBLEM at pool offset {offset}:");
        assert!(
            code == 1 && text.lines().any(|l| l.starts_with(&problem)),
            "{flavor:?}: nvm-tool check on a pool with a damaged key space ({code}) should \
             exit 1 with {problem:?}:\n{text}"
        );
    }
}

// ---- 5, 6 ------------------------------------------------------------------------------

/// The lines a server's last start wrote (a restarted server appends to the same log).
fn last_run(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("oO0OoO0OoO0Oo"))
        .unwrap_or(0);
    lines[start..].join("\n")
}

#[test]
fn damaged_superblock_fails_load_with_one_line() {
    for flavor in FLAVORS {
        let dir = TestDir::new("superblock");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = raw(&server);
        expect_ok(&mut c, &["SET", "a", "1"]);
        let spec = server.kill9();
        let mut bytes = std::fs::read(dir.pool()).unwrap();
        bytes[..8].copy_from_slice(b"XXXXXXXX");
        std::fs::write(dir.pool(), &bytes).unwrap();
        // One line naming the pool, no panic, the pool left as it was.
        refused_start_line(flavor, &spec, &dir.pool());
    }
}

#[test]
fn bad_module_arguments_fail_load() {
    for flavor in FLAVORS {
        let cases: [(&[&str], &str); 7] = [
            (&["bogus", "1"], "bogus"),
            (&["size", "lots"], "size"),
            (&["size", "1kb"], "size"),
            (&["mode", "turbo"], "mode"),
            (&["durability", "never"], "durability"),
            (&["emulate-flush-delay-ns", "-5"], "emulate-flush-delay-ns"),
            (&["path"], "path"),
        ];
        for (args, option) in cases {
            let dir = TestDir::new("badargs");
            let mut spec = ServerSpec::module(flavor, &dir);
            // Valid arguments for everything but the option under test; the bad one last.
            let pool = dir.pool().display().to_string();
            let mut module_args: Vec<String> = Vec::new();
            for (k, v) in [
                ("path", pool.as_str()),
                ("size", "64mb"),
                ("mode", "emulate"),
            ] {
                if k != option {
                    module_args.extend([k.to_string(), v.to_string()]);
                }
            }
            module_args.extend(args.iter().map(|s| s.to_string()));
            spec.module_args = Some(module_args);
            let log = spec.start_expecting_failure();
            assert!(
                log.lines()
                    .any(|l| l.contains("redis-nvm") && l.contains(&format!("'{option}'"))),
                "{flavor:?} {args:?}: no redis-nvm line naming '{option}'; log:\n{log}"
            );
            assert!(
                !dir.pool().exists(),
                "{flavor:?} {args:?}: a refused configuration created a pool"
            );
        }
    }
}

// ---- 7 ---------------------------------------------------------------------------------

#[test]
fn full_pool_refuses_before_executing() {
    for flavor in FLAVORS {
        let dir = TestDir::new("full");
        let mut spec = ServerSpec::module(flavor, &dir);
        let pool = dir.pool().display().to_string();
        spec.module_args = Some(
            ["path", &pool, "size", "2mb", "mode", "emulate"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let server = spec.start();
        let mut c = raw(&server);
        let value = "v".repeat(4096);
        let mut acked = Vec::new();
        let refused = loop {
            let key = format!("k:{}", acked.len());
            let r = c.cmd(&["SET", &key, &value]);
            match r {
                Resp::Simple(ref s) if s == "OK" => acked.push(key),
                // A full backlog is transient (the replayer catches up): wait and retry;
                // a full key space stays full once the backlog is folded (refused at its
                // reserve, or the replayer stopped folding).
                Resp::Error(e) if e.contains("stopped folding") || e.contains("is full:") => {
                    assert!(!exists(&mut c, &key), "{flavor:?}: refused write ran");
                    // Full for good once a retry after the backlog is folded is refused too.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if info_map(&mut c)["log_backlog_bytes"] == "0" {
                        if let Resp::Error(again) = c.cmd(&["SET", &key, &value]) {
                            break (key, again);
                        }
                        acked.push(key);
                    }
                }
                Resp::Error(e) if e.starts_with("NVMFULL") => {
                    assert!(!exists(&mut c, &key), "{flavor:?}: refused write ran");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => panic!("{flavor:?}: SET {key}: {other:?}"),
            }
            assert!(acked.len() < 1000, "{flavor:?}: a 2 MB pool took 4 MB");
        };
        let (refused_key, err) = refused;
        assert!(
            err.starts_with("NVMFULL") && err.contains(&pool),
            "{flavor:?}: refusal {err:?} should start with NVMFULL and name {pool}"
        );
        assert!(
            acked.len() > 100,
            "{flavor:?}: only {} writes fit",
            acked.len()
        );
        assert!(
            !exists(&mut c, &refused_key),
            "{flavor:?}: refused write ran"
        );
        assert_eq!(get(&mut c, &acked[0]).as_deref(), Some(value.as_str()));
        let info = info_map(&mut c);
        assert!(info["state"].starts_with("full"), "{flavor:?}: {info:?}");
        assert!(
            info["refused_writes"].parse::<u64>().unwrap() > 0,
            "{flavor:?}: {info:?}"
        );
        assert_eq!(info["in_doubt_writes"], "0", "{flavor:?}: {info:?}");

        // Inside MULTI/EXEC the refused write does not run. Valkey 8 (like Redis 7.2+)
        // tells the filter the client is in MULTI: the write is rejected at once and EXEC
        // aborts, as at maxmemory. Redis 7.0 cannot tell: the refusal is queued and fails
        // inside EXEC's reply; the read still runs.
        expect_ok(&mut c, &["MULTI"]);
        let queued = c.cmd(&["SET", "in-multi", "v"]);
        let queued_get = c.cmd(&["GET", &acked[0]]);
        assert_eq!(queued_get, Resp::Simple("QUEUED".into()));
        let r = c.cmd(&["EXEC"]);
        match flavor {
            Flavor::Valkey => {
                assert!(
                    queued.err().is_some_and(|e| e.contains("NVMFULL")),
                    "{flavor:?}: {queued:?}"
                );
                assert!(
                    r.err().is_some_and(|e| e.starts_with("EXECABORT")),
                    "{flavor:?}: EXEC {r:?}"
                );
            }
            Flavor::Redis => {
                assert_eq!(queued, Resp::Simple("QUEUED".into()), "{flavor:?}");
                let items = r.items();
                assert_eq!(items.len(), 2, "{flavor:?}: EXEC {r:?}");
                assert!(
                    items[0].err().is_some_and(|e| e.starts_with("NVMFULL")),
                    "{flavor:?}: EXEC {r:?}"
                );
                assert_eq!(items[1].text(), value, "{flavor:?}: the read in EXEC");
            }
        }
        assert!(
            !exists(&mut c, "in-multi"),
            "{flavor:?}: refused write ran in EXEC"
        );

        let d1 = server_digest(&mut c);
        let server = server.kill9().start();
        let mut c = raw(&server);
        for k in &acked {
            assert!(exists(&mut c, k), "{flavor:?}: acknowledged {k} lost");
        }
        assert!(!exists(&mut c, &refused_key));
        assert!(!exists(&mut c, "in-multi"));
        assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(acked.len() as i64));
        assert_eq!(server_digest(&mut c), d1, "{flavor:?}");
    }
}

// ---- 8 ---------------------------------------------------------------------------------

const SAVE_POINTS: &str = "3600 1 300 100 60 10000";

fn with_save_points(mut spec: ServerSpec) -> ServerSpec {
    spec.extra = vec!["--save".into(), SAVE_POINTS.into()];
    spec
}

#[test]
fn coexistence_with_rdb() {
    let mut imported_counts = Vec::new();
    for flavor in FLAVORS {
        let dir = TestDir::new("rdb");
        let rdb = dir.path.join("dump.rdb");
        // (a) migration: a stock server's RDB imported into a new pool.
        let stock = ServerSpec::stock(flavor, &dir).start();
        let mut s = raw(&stock);
        let mut count = 0;
        for db in ["0", "3"] {
            expect_ok(&mut s, &["SELECT", db]);
            for i in 0..50 {
                expect_ok(&mut s, &["SET", &format!("s:{db}:{i}"), &format!("v{i}")]);
                count += 1;
            }
            expect_ok(&mut s, &["RPUSH", "list", "a", "b", "c"]);
            expect_ok(&mut s, &["HSET", "hash", "f", "v", "g", "w"]);
            expect_ok(&mut s, &["ZADD", "zset", "1", "a", "2.5", "b"]);
            expect_ok(&mut s, &["SADD", "set", "x", "y"]);
            expect_ok(&mut s, &["SET", "ttl", "v", "EX", "100000"]);
            count += 5;
        }
        expect_ok(&mut s, &["SAVE"]);
        let stock_digest = server_digest(&mut s);
        drop(stock);
        assert!(rdb.exists());

        let server = with_save_points(ServerSpec::module(flavor, &dir)).start();
        let mut c = raw(&server);
        assert_eq!(
            server_digest(&mut c),
            stock_digest,
            "{flavor:?}: imported data"
        );
        let info = info_map(&mut c);
        let imported = info["recovery_imported_keys"].clone();
        assert_eq!(info["state"], "writable", "{flavor:?}: {info:?}");
        // The replayer folds the log into the key space within milliseconds, so the log
        // itself may hold none of the import's records by now: count what was appended.
        assert!(
            info["appended_records"].parse::<u64>().unwrap() >= count,
            "{flavor:?}: import should log every key: {info:?}"
        );
        std::fs::remove_file(&rdb).unwrap();
        let server = server.kill9().start();
        let mut c = raw(&server);
        assert_eq!(
            server_digest(&mut c),
            stock_digest,
            "{flavor:?}: after restart from the pool alone"
        );
        assert!(!rdb.exists());

        // (b) an RDB older than the pool.
        expect_ok(&mut c, &["SELECT", "3"]);
        expect_ok(&mut c, &["SET", "more:1", "x"]);
        expect_ok(&mut c, &["DEL", "list"]);
        expect_ok(&mut c, &["SELECT", "0"]);
        expect_ok(&mut c, &["HSET", "hash", "f", "changed"]);
        expect_ok(&mut c, &["SAVE"]);
        assert!(rdb.exists());
        expect_ok(&mut c, &["SET", "more:2", "y"]);
        expect_ok(&mut c, &["DEL", "s:0:0"]);
        expect_ok(&mut c, &["RPUSH", "list", "d"]);
        let before = server_digest(&mut c);
        let server = server.kill9().start();
        let mut c = raw(&server);
        assert_eq!(
            server_digest(&mut c),
            before,
            "{flavor:?}: the pool must win over an older dump.rdb"
        );
        assert!(!exists(&mut c, "s:0:0"));
        let info = info_map(&mut c);
        assert!(
            info["recovery_discarded_server_keys"]
                .parse::<u64>()
                .unwrap()
                > 0,
            "{flavor:?}: {info:?}"
        );
        assert_eq!(info["state"], "writable", "{flavor:?}: {info:?}");
        assert_eq!(info["recovery_errors"], "0", "{flavor:?}: {info:?}");
        let log = server.log();
        assert!(
            log.lines()
                .any(|l| l.contains("redis-nvm") && l.contains("discarding")),
            "{flavor:?}: no warning about discarding; log:\n{log}"
        );
        for bad in ["panic", "internal error", "Duplicate key", "duplicate"] {
            assert!(!log.contains(bad), "{flavor:?}: log has {bad:?}:\n{log}");
        }
        imported_counts.push((flavor, imported, count.to_string()));
    }
    // Last, so that (b) and both servers run even if this counter is wrong.
    for (flavor, imported, count) in imported_counts {
        assert_eq!(
            imported, count,
            "{flavor:?}: NVM.INFO recovery_imported_keys after importing {count} keys from dump.rdb"
        );
    }
}

// ---- 9 ---------------------------------------------------------------------------------

const SEQUENCE: &str = r#"
SET s1 hello
GET s1
APPEND s1 _world
GETRANGE s1 0 4
STRLEN s1
OBJECT ENCODING s1
SET n 10
INCR n
INCRBY n 5
DECR n
DECRBY n 2
OBJECT ENCODING n
GET n
INCRBYFLOAT f 1.5
INCRBYFLOAT f 2.25
OBJECT ENCODING f
GET f
SET big 12345678901234567890
INCR big
SETNX s1 x
SETEX ex1 1000 v
MSET a 1 b 2 c 3
MGET a b c nokey
GETDEL c
GETSET a 10
SETRANGE sr 3 abc
GET sr
SETBIT bits 7 1
GETBIT bits 7
BITCOUNT bits
HSET h f1 v1 f2 v2
HSETNX h f1 x
HINCRBY h cnt 3
HINCRBYFLOAT h fl 0.5
HGETALL h
HDEL h f1 nope
HLEN h
HMGET h f2 cnt zz
OBJECT ENCODING h
RPUSH l a b c d
LPUSH l z
LPOP l
RPOP l 2
LRANGE l 0 -1
LINSERT l BEFORE b x
LSET l 0 first
LREM l 0 x
LRANGE l 0 -1
LMOVE l l2 LEFT RIGHT
LRANGE l2 0 -1
OBJECT ENCODING l
SADD si 3 1 2
SADD si 2 5
SREM si 1 9
SMEMBERS si
SCARD si
SISMEMBER si 5
SADD ss a b c
SMISMEMBER ss a z
SMOVE ss ss2 a
SCARD ss2
ZADD z 1 a 2 b 3 c
ZADD z XX CH 5 b
ZINCRBY z 5 a
ZRANGE z 0 -1 WITHSCORES
ZPOPMIN z
ZREM z b
ZSCORE z c
ZCARD z
OBJECT ENCODING z
EXPIREAT s1 4102444800
EXPIRETIME s1
PERSIST s1
EXPIRETIME s1
PEXPIREAT a 4102444800000
PEXPIRETIME a
EXPIRE nokey 10
LPUSH s1 x
INCR s1
HSET h
NOSUCHCOMMAND x
GET a b
MULTI
SET t1 1
INCR t1
RPUSH tl a
HSET th f v
EXEC
MULTI
SET t2 1
LPUSH t2 x
INCR t1
EXEC
MULTI
INCR t1
SET
EXEC
EVAL "redis.call('SET',KEYS[1],ARGV[1]);redis.call('INCR',KEYS[2]);return redis.call('GET',KEYS[1])" 2 e1 e2 val
EVAL "return redis.call('LPUSH',KEYS[1],'x')" 1 s1
EVAL "return redis.pcall('INCR',KEYS[1])" 1 s1
EVAL "redis.call('HINCRBY',KEYS[1],'n',2);return redis.call('HGET',KEYS[1],'n')" 1 h
RENAME a a2
RENAMENX b a2
DEL b nokey
COPY a2 a3
UNLINK a2
EXISTS a a2 a3 b
TYPE h
SELECT 2
SET indb2 v
MOVE indb2 0
SELECT 0
GET indb2
DBSIZE
DEBUG DIGEST
"#;

/// Splits a line of SEQUENCE into arguments ("..." quotes one argument).
fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("closing quote");
            out.push(r[..end].to_string());
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

/// `INFO commandstats` without timings (and without the module's own commands), sorted.
fn commandstats(c: &mut RawConn) -> Vec<String> {
    let text = c.cmd(&["INFO", "commandstats"]).text();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_nvm."))
        .map(|l| {
            let (name, fields) = l.split_once(':').unwrap();
            let kept: Vec<&str> = fields
                .split(',')
                .filter(|f| !f.starts_with("usec"))
                .collect();
            format!("{name}:{}", kept.join(","))
        })
        .collect();
    lines.sort();
    lines
}

/// A `commandstats` line with `n` calls taken off `cmdstat_get` (other lines unchanged).
fn without_get_calls(line: &str, n: usize) -> String {
    let Some(fields) = line.strip_prefix("cmdstat_get:") else {
        return line.to_string();
    };
    let fields: Vec<String> = fields
        .split(',')
        .map(|f| match f.strip_prefix("calls=") {
            Some(calls) => {
                let calls: usize = calls.parse().unwrap_or_else(|_| panic!("{line}"));
                // Fewer calls than that cannot be explained: keep the line as it is.
                match calls.checked_sub(n) {
                    Some(rest) => format!("calls={rest}"),
                    None => f.to_string(),
                }
            }
            None => f.to_string(),
        })
        .collect();
    format!("cmdstat_get:{}", fields.join(","))
}

struct Observed {
    replies: Vec<(String, Resp)>,
    stats: Vec<String>,
    events: Vec<Resp>,
}

fn observe(server: &Server) -> Observed {
    let mut c = raw(server);
    let mut sub = raw(server);
    expect_ok(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    let r = sub.cmd(&["PSUBSCRIBE", "__key*__:*"]);
    assert_eq!(r.items().len(), 3, "{r:?}");
    let mut replies = Vec::new();
    for line in SEQUENCE.lines().filter(|l| !l.trim().is_empty()) {
        let args = split_args(line);
        replies.push((line.to_string(), c.cmd(&args)));
    }
    expect_ok(&mut c, &["SET", "sentinel", "1"]);
    let mut events = Vec::new();
    loop {
        let m = sub.read().expect("keyspace message");
        let items = m.items();
        let done = items.get(2).map(Resp::text).as_deref() == Some("__keyevent@0__:set")
            && items.get(3).map(Resp::text).as_deref() == Some("sentinel");
        events.push(m);
        if done {
            break;
        }
    }
    let errors: Vec<&str> = replies.iter().filter_map(|(_, r)| r.err()).collect();
    assert!(
        errors.iter().any(|e| e.starts_with("WRONGTYPE"))
            && errors.iter().any(|e| e.starts_with("EXECABORT")),
        "the sequence should provoke errors: {errors:?}"
    );
    let stats = commandstats(&mut c);
    Observed {
        replies,
        stats,
        events,
    }
}

#[test]
fn same_replies_and_commandstats_as_stock() {
    let mut stat_diffs = Vec::new();
    for flavor in FLAVORS {
        let sdir = TestDir::new("same-stock");
        let mdir = TestDir::new("same-module");
        let stock = ServerSpec::stock(flavor, &sdir).start();
        let module = ServerSpec::module(flavor, &mdir).start();
        let a = observe(&stock);
        let b = observe(&module);
        for ((line, ra), (_, rb)) in a.replies.iter().zip(&b.replies) {
            assert_eq!(
                ra, rb,
                "{flavor:?}: reply to `{line}` differs (stock, module)"
            );
        }
        assert_eq!(a.replies.len(), b.replies.len());
        assert_eq!(
            a.events, b.events,
            "{flavor:?}: keyspace notifications differ (stock, module)"
        );
        // The module logs INCRBYFLOAT as its resulting string, which it reads back with a
        // server-side GET after the command ran: one more cmdstat_get call per INCRBYFLOAT
        // that succeeded (failed ones write nothing and are not logged). Exactly those
        // calls are taken off the module's count; every other line must be equal.
        let incrbyfloats = a
            .replies
            .iter()
            .filter(|(line, r)| {
                split_args(line)[0].eq_ignore_ascii_case("INCRBYFLOAT") && r.err().is_none()
            })
            .count();
        assert!(incrbyfloats > 0, "the sequence should run INCRBYFLOAT");
        // The module resets the stats once at start-up (after reading the command table
        // and loading the pool through server calls); the reset itself stays counted.
        let module_stats: Vec<String> = b
            .stats
            .iter()
            .filter(|l| !l.starts_with("cmdstat_config|resetstat:calls=1,"))
            .map(|l| without_get_calls(l, incrbyfloats))
            .collect();
        let only_stock: Vec<&String> = a
            .stats
            .iter()
            .filter(|l| !module_stats.contains(l))
            .collect();
        let only_module: Vec<&String> = module_stats
            .iter()
            .filter(|l| !a.stats.contains(l))
            .collect();
        if !only_stock.is_empty() || !only_module.is_empty() {
            stat_diffs.push(format!(
                "{flavor:?}: INFO commandstats differ\n  stock only:  {only_stock:?}\n  module only: {only_module:?}"
            ));
        }
        // The module's data must also survive (it ran every kind of write above).
        let mut c = raw(&module);
        let d = server_digest(&mut c);
        let module = module.kill9().start();
        let mut c = raw(&module);
        assert_eq!(server_digest(&mut c), d, "{flavor:?}: digest after restart");
    }
    // Fresh servers, no restart: the module's own start-up calls must not show.
    assert!(stat_diffs.is_empty(), "{}", stat_diffs.join("\n"));
}

// ---- 10 --------------------------------------------------------------------------------

#[test]
fn admin_surface() {
    for flavor in FLAVORS {
        let dir = TestDir::new("admin");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = raw(&server);
        let pool = dir.pool().display().to_string();
        for i in 0..20 {
            expect_ok(&mut c, &["SET", &format!("k{i}"), "v"]);
        }
        let help: Vec<String> = c
            .cmd(&["NVM.HELP"])
            .items()
            .iter()
            .map(Resp::text)
            .collect();
        for cmd in ["NVM.INFO", "NVM.CHECK", "NVM.REPAIR"] {
            assert!(
                help.iter().any(|l| l.starts_with(cmd)),
                "{flavor:?}: NVM.HELP lacks {cmd}: {help:?}"
            );
        }
        let info = info_map(&mut c);
        assert_eq!(info["pool_path"], pool, "{flavor:?}");
        assert!(info["mode"].starts_with("emulate"), "{flavor:?}: {info:?}");
        assert_eq!(info["durability"], "always");
        assert_eq!(info["state"], "writable");
        let last_lsn: u64 = info["last_lsn"].parse().unwrap();
        assert!(last_lsn >= 20, "{flavor:?}: {info:?}");
        // The replayer empties the log within milliseconds (log_used is often 0 by now):
        // what was appended is the stable measure.
        assert!(
            info["appended_bytes"].parse::<u64>().unwrap() > 0,
            "{flavor:?}: {info:?}"
        );

        let section = c.cmd(&["INFO", "nvm"]).text();
        assert!(
            section
                .lines()
                .any(|l| l.starts_with("nvm_pool_path:") && l.ends_with(&pool)),
            "{flavor:?}: INFO nvm:\n{section}"
        );
        let everything = c.cmd(&["INFO", "everything"]).text();
        assert!(everything.contains("nvm_pool_path:"), "{flavor:?}");

        let conf = c.cmd(&["CONFIG", "GET", "nvm.*"]).items();
        let conf: HashMap<String, String> =
            conf.chunks(2).map(|p| (p[0].text(), p[1].text())).collect();
        assert_eq!(conf.get("nvm.path"), Some(&pool), "{flavor:?}: {conf:?}");
        assert_eq!(
            conf.get("nvm.size").map(String::as_str),
            Some((64u64 << 20).to_string().as_str()),
            "{flavor:?}: {conf:?}"
        );
        assert_eq!(conf.get("nvm.mode").map(String::as_str), Some("emulate"));
        assert_eq!(
            conf.get("nvm.durability").map(String::as_str),
            Some("always")
        );
        assert_eq!(
            conf.get("nvm.emulate-flush-delay-ns").map(String::as_str),
            Some("0")
        );
        let r = c.cmd(&["CONFIG", "SET", "nvm.mode", "msync"]);
        assert!(
            r.err().is_some(),
            "{flavor:?}: nvm.mode is fixed while the pool is open: {r:?}"
        );

        let check = c.cmd(&["NVM.CHECK"]).text();
        assert!(check.contains("result:ok"), "{flavor:?}: {check}");
        assert!(check.contains(&format!("last_lsn:{last_lsn}")), "{check}");
        for args in [&["NVM.REPAIR"][..], &["NVM.REPAIR", "FORCE"]] {
            let r = c.cmd(args);
            assert!(
                r.err().is_some_and(|e| e.contains("nothing to repair")),
                "{flavor:?}: {args:?} on a healthy pool: {r:?}"
            );
        }
        let r = c.cmd(&["NVM.REPAIR", "NOW"]);
        assert!(
            r.err().is_some_and(|e| e.contains("NVM.REPAIR [FORCE]")),
            "{flavor:?}: NVM.REPAIR with a wrong argument: {r:?}"
        );

        // The pool is locked while the server runs; after SIGKILL the tool reads it.
        let (code, text) = nvm_tool(&["check", &pool]);
        assert_eq!(code, 2, "{flavor:?}: tool on a pool in use: {text}");
        let _spec = server.kill9();
        let (code, text) = nvm_tool(&["check", &pool]);
        assert_eq!(code, 0, "{flavor:?}: {text}");
        assert!(text.lines().any(|l| l == "log: ok"), "{text}");
        assert!(
            text.lines().any(|l| l == format!("last lsn: {last_lsn}")),
            "{flavor:?}: tool vs NVM.INFO last_lsn {last_lsn}:\n{text}"
        );
    }
}
