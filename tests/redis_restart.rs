//! Instant restart: after a SIGKILL the module serves every key from the first command
//! on, while the warm-up brings the pool into memory behind the clients.
//!
//! Every test feeds a stock server the same data and commands and compares: the
//! answers during the warm-up, and `DEBUG DIGEST` after it.
//! - A mixed workload of reads and writes on random keys (every type, expiries, several
//!   dbs, a big hash/zset/list, an unfolded log backlog, BLPOP served by a later push,
//!   WATCH + MULTI/EXEC, EVAL with declared and undeclared keys, RENAME, MOVE, COPY DB,
//!   FLUSHDB and SWAPDB) gets the stock answers.
//! - SIGKILL during the warm-up, then restart: nothing lost, nothing resurrected.
//! - Whole-keyspace commands during the warm-up answer like stock or get a retryable
//!   `-LOADING`; BGSAVE and a replica's sync wait for the warm-up, then hold every key;
//!   the save points are off during it (SAVE, SHUTDOWN SAVE refused) and back after.
//!
//! (A flipped byte found by the warm-up's walk: `tests/redis_safety.rs`.)

mod common;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const STRINGS: usize = 150_000;
const BIG: usize = 20_000;
/// Keys that expire while the server is down.
const SHORT_TTL_MS: u64 = 300;

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The commands that build the dataset (the same on both servers).
fn dataset() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..STRINGS {
        out.push(cmd(&[
            "SET",
            &format!("s:{i}"),
            &format!("value-{i}-{}", "x".repeat(i % 40)),
        ]));
    }
    for i in 0..1000 {
        out.push(cmd(&["SET", &format!("n:{i}"), &i.to_string()]));
    }
    for chunk in 0..BIG / 1000 {
        let mut h = cmd(&["HSET", "bigh"]);
        let mut z = cmd(&["ZADD", "bigz"]);
        let mut l = cmd(&["RPUSH", "bigl"]);
        for i in chunk * 1000..(chunk + 1) * 1000 {
            h.extend([format!("f{i}"), format!("v{i}")]);
            z.extend([(i % 997).to_string(), format!("m{i}")]);
            l.push(format!("e{i}"));
        }
        out.extend([h, z, l]);
    }
    for i in 0..300 {
        out.push(cmd(&[
            "HSET",
            &format!("h:{i}"),
            "a",
            &i.to_string(),
            "b",
            "x",
        ]));
        out.push(cmd(&[
            "SADD",
            &format!("set:{i}"),
            "1",
            "2",
            &format!("m{i}"),
        ]));
        out.push(cmd(&[
            "ZADD",
            &format!("z:{i}"),
            "1",
            "a",
            "2",
            &format!("b{i}"),
        ]));
        out.push(cmd(&[
            "RPUSH",
            &format!("l:{i}"),
            "a",
            "b",
            &format!("c{i}"),
        ]));
        out.push(cmd(&["SET", &format!("e:{i}"), "stays", "PX", "600000"]));
        out.push(cmd(&[
            "SET",
            &format!("gone:{i}"),
            "expires",
            "PX",
            &SHORT_TTL_MS.to_string(),
        ]));
    }
    for i in 1..=100 {
        out.push(cmd(&[
            "XADD",
            "st",
            &format!("{i}-1"),
            "f",
            &format!("v{i}"),
        ]));
    }
    for db in 1..=3 {
        out.push(cmd(&["SELECT", &db.to_string()]));
        for i in 0..5000 {
            out.push(cmd(&["SET", &format!("s:{i}"), &format!("db{db}-{i}")]));
        }
        out.push(cmd(&["HSET", "dbh", "db", &db.to_string()]));
    }
    out.push(cmd(&["SELECT", "0"]));
    out
}

/// Sends `cmds` pipelined in chunks; every reply must be a success.
fn feed(c: &mut RawConn, cmds: &[Vec<String>]) {
    for chunk in cmds.chunks(2000) {
        for a in chunk {
            c.send(a).expect("send");
        }
        for a in chunk {
            let r = c.read().expect("reply");
            assert!(r.err().is_none(), "{a:?}: {r:?}");
        }
    }
}

/// A random mixed workload on the dataset's keys; FLUSHDB of db 3 and SWAPDB 1 2 fall
/// inside it, and an RPUSH serves the BLPOP the test leaves waiting on `newl`.
fn workload(seed: u64, n: usize) -> Vec<Vec<String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let s = |rng: &mut StdRng| format!("s:{}", rng.gen_range(0..STRINGS));
    for step in 0..n {
        if step == n / 3 {
            out.extend([
                cmd(&["SELECT", "3"]),
                cmd(&["FLUSHDB"]),
                cmd(&["SELECT", "0"]),
            ]);
        }
        if step == 2 * n / 3 {
            out.push(cmd(&["SWAPDB", "1", "2"]));
            out.push(cmd(&["RPUSH", "newl", "pushed"]));
        }
        let i = rng.gen_range(0..BIG + 100);
        match rng.gen_range(0..22) {
            0 => out.push(cmd(&["GET", &s(&mut rng)])),
            1 => out.push(cmd(&["SET", &s(&mut rng), "new", "NX"])),
            2 => out.push(cmd(&["SET", &s(&mut rng), "over", "XX"])),
            3 => out.push(cmd(&["INCR", &format!("n:{}", rng.gen_range(0..1100))])),
            4 => out.push(cmd(&["HSET", "bigh", &format!("f{i}"), "changed"])),
            5 => out.push(cmd(&["HGET", "bigh", &format!("f{i}")])),
            6 => out.push(cmd(&["LPUSH", "bigl", &format!("new{i}")])),
            7 => out.push(cmd(&["LRANGE", "bigl", "0", "2"])),
            8 => out.push(cmd(&["ZADD", "bigz", "5", &format!("m{i}")])),
            9 => out.push(cmd(&["ZSCORE", "bigz", &format!("m{i}")])),
            10 => {
                let k = s(&mut rng);
                out.extend([cmd(&["EXPIRE", &k, "1000"]), cmd(&["TTL", &k])]);
            }
            11 => out.push(cmd(&["DEL", &s(&mut rng)])),
            12 => out.push(cmd(&["EXISTS", &s(&mut rng), &format!("gone:{}", i % 300)])),
            13 => {
                let k = s(&mut rng);
                out.extend([
                    cmd(&["RENAME", &k, &format!("r:{k}")]),
                    cmd(&["GET", &format!("r:{k}")]),
                ]);
            }
            14 => {
                let k = format!("s:{}", rng.gen_range(0..5000));
                out.extend([
                    cmd(&["MOVE", &k, "1"]),
                    cmd(&["SELECT", "1"]),
                    cmd(&["GET", &k]),
                    cmd(&["SELECT", "0"]),
                ]);
            }
            15 => {
                let k = format!("s:{}", rng.gen_range(0..5000));
                out.extend([
                    cmd(&["COPY", &k, &format!("c:{k}"), "DB", "2"]),
                    cmd(&["SELECT", "2"]),
                    cmd(&["GET", &format!("c:{k}")]),
                    cmd(&["GET", &k]),
                    cmd(&["SELECT", "0"]),
                ]);
            }
            16 => {
                let k = s(&mut rng);
                out.extend([
                    cmd(&["WATCH", &k]),
                    cmd(&["MULTI"]),
                    cmd(&["APPEND", &k, "+tx"]),
                    cmd(&["INCR", &format!("n:{}", i % 1000)]),
                    cmd(&["HGET", &format!("h:{}", i % 300), "a"]),
                    cmd(&["EXEC"]),
                ]);
            }
            17 => out.push(cmd(&[
                "EVAL",
                "return redis.call('GET', KEYS[1])",
                "1",
                &s(&mut rng),
            ])),
            18 => out.push(cmd(&[
                "EVAL",
                &format!("return redis.call('HINCRBY', 'h:{}', 'a', 1)", i % 300),
                "0",
            ])),
            19 => out.extend([
                cmd(&["SADD", &format!("set:{}", i % 300), "new"]),
                cmd(&["SMEMBERS", &format!("set:{}", i % 300)]),
            ]),
            20 => {
                let db = rng.gen_range(1..=3).to_string();
                out.extend([
                    cmd(&["SELECT", &db]),
                    cmd(&["GET", &format!("s:{}", rng.gen_range(0..5000))]),
                    cmd(&["HGET", "dbh", "db"]),
                    cmd(&["SELECT", "0"]),
                ]);
            }
            _ => out.extend([
                cmd(&["XRANGE", "st", "-", "+", "COUNT", "2"]),
                cmd(&["TYPE", &format!("l:{}", i % 300)]),
                cmd(&["LPOP", &format!("l:{}", i % 300)]),
            ]),
        }
    }
    out
}

/// Runs `cmds` one by one (each reply awaited); TTLs become their sign (the servers run
/// a moment apart) and SMEMBERS is sorted (a set's order depends on the process's hash
/// seed).
fn run(c: &mut RawConn, cmds: &[Vec<String>]) -> Vec<String> {
    cmds.iter()
        .map(|a| {
            let r = c.cmd(a);
            let r = match (&r, a[0].as_str()) {
                (Resp::Int(n), "TTL" | "PTTL") if *n > 0 => Resp::Int(1),
                (Resp::Array(Some(items)), "SMEMBERS") => {
                    let mut items = items.clone();
                    items.sort_by_key(|i| format!("{i:?}"));
                    Resp::Array(Some(items))
                }
                _ => r,
            };
            format!("{a:?} -> {r:?}")
        })
        .collect()
}

fn raw_digest(c: &mut RawConn) -> String {
    c.cmd(&["DEBUG", "DIGEST"]).text()
}

fn info_field(c: &mut RawConn, field: &str) -> String {
    let text = c.cmd(&["NVM.INFO"]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A module server holding the dataset (plus an unfolded backlog), SIGKILLed, and the
/// time the kill took place.
fn killed_module_with_dataset(flavor: Flavor, dir: &TestDir, data: &[Vec<String>]) -> ServerSpec {
    // A save point that never fires in a test (it checks the warm-up turns it off).
    let spec = ServerSpec::module(flavor, dir)
        .with_module_arg("size", "512mb")
        .with_extra(&["--save", "3600 1"]);
    let server = spec.start();
    let mut c = RawConn::connect(server.spec.port);
    feed(&mut c, data);
    // An unfolded backlog at the kill: slow the replayer's flushes, then write a burst.
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "nvm.emulate-flush-delay-ns", "200000"])
            .text(),
        "OK"
    );
    // (The same keys each round: the stock server gets the burst once.)
    let burst: Vec<Vec<String>> = (0..3000)
        .map(|i| cmd(&["SET", &format!("burst:{i}"), "b"]))
        .collect();
    let backlog_at_kill = (0..20).any(|_| {
        feed(&mut c, &burst);
        info_field(&mut c, "log_records")
            .parse::<u64>()
            .unwrap_or(0)
            > 0
    });
    assert!(
        backlog_at_kill,
        "{flavor:?}: no unfolded backlog at the kill"
    );
    server.kill9()
}

fn stock_with_dataset(flavor: Flavor, dir: &TestDir, data: &[Vec<String>]) -> (Server, RawConn) {
    let server = ServerSpec::stock(flavor, dir).start();
    let mut c = RawConn::connect(server.spec.port);
    feed(&mut c, data);
    let burst: Vec<Vec<String>> = (0..3000)
        .map(|i| cmd(&["SET", &format!("burst:{i}"), "b"]))
        .collect();
    feed(&mut c, &burst);
    (server, c)
}

#[test]
fn a_mixed_workload_during_the_warm_up_gets_the_answers_of_a_loaded_server() {
    let data = dataset();
    let work = workload(7, 1500);
    for flavor in FLAVORS {
        let dir = TestDir::new("restart-mixed");
        let stock_dir = TestDir::new("restart-mixed-stock");
        let killed = killed_module_with_dataset(flavor, &dir, &data);
        let (_stock, mut sc) = stock_with_dataset(flavor, &stock_dir, &data);
        std::thread::sleep(Duration::from_millis(SHORT_TTL_MS + 200));

        let spawned = Instant::now();
        let server = killed.start_serving();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(info_field(&mut c, "warmup_state"), "running", "{flavor:?}");
        eprintln!(
            "{flavor:?}: first reply {} ms after the spawn",
            spawned.elapsed().as_millis()
        );
        let mut blocked = RawConn::connect(server.spec.port);
        blocked.send(&["BLPOP", "newl", "30"]).unwrap();
        let mut stock_blocked = RawConn::connect(_stock.spec.port);
        stock_blocked.send(&["BLPOP", "newl", "30"]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let got = run(&mut c, &work);
        let faulted: u64 = info_field(&mut c, "warmup_keys_faulted")
            .parse()
            .unwrap_or(0);
        let want = run(&mut sc, &work);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                g, w,
                "{flavor:?}: an answer during the warm-up differs from stock's"
            );
        }
        assert_eq!(
            blocked.read().unwrap(),
            stock_blocked.read().unwrap(),
            "{flavor:?}: BLPOP served by a later push"
        );
        assert!(
            faulted > 0,
            "{flavor:?}: nothing was faulted in: the workload ran after the warm-up"
        );
        server.wait_warm();
        assert_eq!(
            raw_digest(&mut c),
            raw_digest(&mut sc),
            "{flavor:?}: DEBUG DIGEST after the warm-up"
        );
        assert_eq!(info_field(&mut c, "warmup_damaged"), "0");
        eprintln!(
            "{flavor:?}: {faulted} keys faulted in during the workload; warm-up {} ms, {} slices, the longest {} us",
            info_field(&mut c, "warmup_ms"),
            info_field(&mut c, "warmup_slices"),
            info_field(&mut c, "warmup_longest_slice_us")
        );
    }
}

#[test]
fn a_sigkill_during_the_warm_up_loses_and_resurrects_nothing() {
    let data = dataset();
    // Short enough to end well inside the warm-up (a longer one ended after it on a fast
    // machine: 600 commands took 162 ms, the warm-up 174 ms).
    let work: Vec<Vec<String>> = workload(11, 250)
        .into_iter()
        .filter(|a| a[0] != "RPUSH" || a[1] != "newl")
        .collect();
    for flavor in FLAVORS {
        let dir = TestDir::new("restart-kill-warm");
        let stock_dir = TestDir::new("restart-kill-warm-stock");
        // The smallest slices: the warm-up advances least per command of the workload,
        // so the kill falls inside it on a fast machine too.
        let killed = killed_module_with_dataset(flavor, &dir, &data)
            .with_module_arg("warmup-slice-us", "50");
        let (_stock, mut sc) = stock_with_dataset(flavor, &stock_dir, &data);
        std::thread::sleep(Duration::from_millis(SHORT_TTL_MS + 200));

        let server = killed.start_serving();
        let mut c = RawConn::connect(server.spec.port);
        run(&mut c, &work);
        assert_eq!(
            info_field(&mut c, "warmup_state"),
            "running",
            "{flavor:?}: the kill must fall inside the warm-up"
        );
        let server = server.kill9().start();
        let mut c = RawConn::connect(server.spec.port);
        run(&mut sc, &work);
        assert_eq!(raw_digest(&mut c), raw_digest(&mut sc), "{flavor:?}");
    }
}

#[test]
fn whole_keyspace_commands_wait_for_the_warm_up_and_nothing_copies_a_partial_dataset() {
    let data = dataset();
    for flavor in FLAVORS {
        let dir = TestDir::new("restart-whole");
        let stock_dir = TestDir::new("restart-whole-stock");
        let killed = killed_module_with_dataset(flavor, &dir, &data);
        let (_stock, mut sc) = stock_with_dataset(flavor, &stock_dir, &data);
        std::thread::sleep(Duration::from_millis(SHORT_TTL_MS + 200));
        let stock_expectations = |sc: &mut RawConn| {
            let mut keys: Vec<String> = sc
                .cmd(&["KEYS", "*"])
                .items()
                .iter()
                .map(Resp::text)
                .collect();
            keys.sort();
            (
                keys,
                sc.cmd(&["DBSIZE"]),
                keyspace_counts(&sc.cmd(&["INFO", "keyspace"]).text()),
            )
        };
        let (stock_keys, stock_dbsize, stock_keyspace) = stock_expectations(&mut sc);

        let server = killed.start_serving();
        let mut c = RawConn::connect(server.spec.port);
        let replica_dir = TestDir::new("restart-whole-replica");
        let replica = ServerSpec::stock(flavor, &replica_dir)
            .with_extra(&["--replicaof", "127.0.0.1", &server.spec.port.to_string()])
            .start();
        let mut loading_seen = 0;
        let whole: [&[&str]; 9] = [
            &["KEYS", "*"],
            &["DBSIZE"],
            &["SCAN", "0", "COUNT", "10"],
            &["RANDOMKEY"],
            &["INFO", "keyspace"],
            &["INFO"],
            &["SORT", "l:1", "BY", "s:*", "ALPHA"],
            &["DEBUG", "DIGEST"],
            &["BGSAVE"],
        ];
        for a in whole {
            let r = c.cmd(a);
            match r.err() {
                Some(e) => {
                    assert!(
                        e.starts_with("LOADING redis-nvm is warming up"),
                        "{flavor:?} {a:?}: {e}"
                    );
                    loading_seen += 1;
                }
                None if a[0] == "DBSIZE" => assert_eq!(r, stock_dbsize, "{flavor:?}"),
                None => {}
            }
        }
        assert!(
            loading_seen >= 6,
            "{flavor:?}: the warm-up ended before the checks ({loading_seen})"
        );
        // No automatic save, SHUTDOWN SAVE or new save point writes a partial RDB.
        assert_eq!(
            c.cmd(&["CONFIG", "GET", "save"]).items()[1].text(),
            "",
            "{flavor:?}"
        );
        for a in [
            &["SHUTDOWN", "SAVE"][..],
            &["CONFIG", "SET", "save", "1 1"],
            &["SAVE"],
        ] {
            let e = c.cmd(a);
            assert!(
                e.err().is_some_and(|e| e.starts_with("LOADING")),
                "{flavor:?} {a:?}: {e:?}"
            );
        }
        // Commands that are not whole-keyspace are served during the warm-up.
        assert_eq!(c.cmd(&["INFO", "memory"]).err(), None);
        assert_eq!(c.cmd(&["SORT", "l:1", "BY", "nosort", "ALPHA"]).err(), None);

        server.wait_warm();
        assert_eq!(
            c.cmd(&["CONFIG", "GET", "save"]).items()[1].text(),
            "3600 1",
            "{flavor:?}"
        );
        let mut keys: Vec<String> = c
            .cmd(&["KEYS", "*"])
            .items()
            .iter()
            .map(Resp::text)
            .collect();
        keys.sort();
        assert_eq!(keys, stock_keys, "{flavor:?}: KEYS after the warm-up");
        assert_eq!(c.cmd(&["DBSIZE"]), stock_dbsize);
        assert_eq!(
            keyspace_counts(&c.cmd(&["INFO", "keyspace"]).text()),
            stock_keyspace
        );
        let digest = raw_digest(&mut c);
        assert_eq!(digest, raw_digest(&mut sc), "{flavor:?}");

        // BGSAVE now writes every key: a stock server loading that RDB holds the dataset.
        assert_eq!(c.cmd(&["BGSAVE"]).err(), None);
        wait_until("the BGSAVE", Duration::from_secs(60), || {
            c.cmd(&["INFO", "persistence"])
                .text()
                .contains("rdb_bgsave_in_progress:0")
        });
        let loaded_dir = TestDir::new("restart-whole-rdb");
        std::fs::copy(dir.path.join("dump.rdb"), loaded_dir.path.join("dump.rdb"))
            .expect("dump.rdb");
        let loaded = ServerSpec::stock(flavor, &loaded_dir).start();
        let mut lc = RawConn::connect(loaded.spec.port);
        assert_eq!(
            raw_digest(&mut lc),
            digest,
            "{flavor:?}: the RDB written after the warm-up"
        );

        // The replica that asked to sync during the warm-up was told to retry; it holds
        // every key now.
        let mut rc = RawConn::connect(replica.spec.port);
        wait_until("the replica's sync", Duration::from_secs(60), || {
            rc.cmd(&["INFO", "replication"])
                .text()
                .contains("master_link_status:up")
                && raw_digest(&mut rc) == digest
        });
    }
}

/// `db0:keys=N,expires=M` lines of INFO keyspace, without avg_ttl.
fn keyspace_counts(info: &str) -> Vec<String> {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .map(|l| l.split(",avg_ttl").next().unwrap_or(l).to_string())
        .collect()
}
