//! Invariant 1 at any size: every write that runs is durable before its reply, however
//! much it must log, or it is refused before it runs.
//!
//! - the commands that used to log whole values (APPEND, SETRANGE, SETBIT, BITFIELD, LSET,
//!   LINSERT, LREM, ZREMRANGEBY*, SINTERSTORE & co.) reply as stock, log O(change), and
//!   survive SIGKILL exactly, on big values;
//! - values far larger than the log (blobs) are durable, or refused before they run when
//!   the pool cannot hold them;
//! - transactions and scripts whose writes add up to many times the log are durable;
//! - every db of a server with `databases 1000` is durable.
//!
//! Every test ends with the harness's check that no write is in doubt (`common`).

mod common;
use common::*;

/// A server with the module, or a stock one, both with `proto-max-bulk-len 1gb`.
fn server_spec(flavor: Flavor, dir: &TestDir, stock: bool, pool: &str, log: &str) -> ServerSpec {
    let base = if stock {
        ServerSpec::stock(flavor, dir)
    } else {
        ServerSpec::module(flavor, dir)
            .with_module_arg("size", pool)
            .with_module_arg("log-size", log)
    };
    base.with_extra(&["--proto-max-bulk-len", "1gb"])
}

fn appended_bytes(c: &mut RawConn) -> u64 {
    info_field(c, "appended_bytes").parse().expect("a number")
}

fn info_field(c: &mut RawConn, name: &str) -> String {
    let info = c.cmd(&["NVM.INFO"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("NVM.INFO has no {name}: {info}"))
        .trim()
        .to_string()
}

/// SIGKILL, then the same server again on the same pool, with a connection to it.
fn kill_and_restart(server: Server) -> (Server, RawConn) {
    let server = server.kill9().start();
    let c = RawConn::connect(server.spec.port);
    (server, c)
}

fn digest(c: &mut RawConn) -> String {
    format!("{:?}", c.cmd(&["DEBUG", "DIGEST"]))
}

fn digest_value(c: &mut RawConn, key: &str) -> String {
    format!("{:?}", c.cmd(&["DEBUG", "DIGEST-VALUE", key]))
}

/// Sends `commands` in one pipeline and returns every reply.
fn pipeline(c: &mut RawConn, commands: &[Vec<Vec<u8>>]) -> Vec<Resp> {
    for cmd in commands {
        c.send(cmd).expect("send");
    }
    commands.iter().map(|_| c.read().expect("reply")).collect()
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Builds the big values of the table in db 0.
fn big_values(c: &mut RawConn) {
    let five_mb = vec![b'x'; 5 << 20];
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"str", &five_mb]).text(), "OK");
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"str2", &five_mb]).text(), "OK");
    // A 16 MB bitmap.
    assert_eq!(c.cmd(&["SETBIT", "bits", "134217727", "1"]).int(), Some(0));
    for chunk in 0..100 {
        let mut l = args(&["RPUSH", "list"]);
        let mut s = args(&["SADD", "set"]);
        let mut z = args(&["ZADD", "zset"]);
        for i in chunk * 1000..(chunk + 1) * 1000 {
            l.push(format!("e{}", i % 500).into_bytes());
            s.push(format!("m{i}").into_bytes());
            z.push(i.to_string().into_bytes());
            z.push(format!("m{i}").into_bytes());
        }
        for r in pipeline(c, &[l, s, z]) {
            assert!(r.err().is_none(), "{r:?}");
        }
    }
    for chunk in 0..100 {
        let mut s = args(&["SADD", "set2"]);
        for i in chunk * 1000..(chunk + 1) * 1000 {
            s.push(format!("m{}", i + 50_000).into_bytes());
        }
        assert_eq!(pipeline(c, &[s])[0].int(), Some(1000));
    }
}

/// The table's rows: (name, commands, the most a row's op may log per op, in bytes,
/// beyond its arguments).
fn rows() -> Vec<(&'static str, Vec<Vec<Vec<u8>>>)> {
    let kb = "k".repeat(1024);
    let n = |count: usize, f: &dyn Fn(usize) -> Vec<Vec<u8>>| (0..count).map(f).collect();
    vec![
        (
            "APPEND 1 KB to a 5 MB string x50",
            n(50, &|_| args(&["APPEND", "str", &kb])),
        ),
        (
            "SETRANGE on a 5 MB string x50",
            n(50, &|i| {
                args(&["SETRANGE", "str2", &(i * 99_991).to_string(), "range"])
            }),
        ),
        (
            "SETBIT on a 16 MB bitmap x20",
            n(20, &|i| {
                args(&["SETBIT", "bits", &(i * 6_700_417).to_string(), "1"])
            }),
        ),
        (
            "BITFIELD SET/INCRBY on a 16 MB bitmap x20",
            n(20, &|i| {
                let at = (i * 5_000_011).to_string();
                args(&[
                    "BITFIELD", "bits", "SET", "u8", &at, "200", "INCRBY", "i32", "#7", "5",
                ])
            }),
        ),
        (
            "LSET on a 100k list x20",
            n(20, &|i| {
                args(&[
                    "LSET",
                    "list",
                    &(i as i64 * 4999 - 50_000).to_string(),
                    "set",
                ])
            }),
        ),
        (
            "LREM on a 100k list x20",
            n(20, &|i| args(&["LREM", "list", "1", &format!("e{i}")])),
        ),
        (
            "LINSERT on a 100k list x20",
            n(20, &|i| {
                args(&["LINSERT", "list", "AFTER", &format!("e{}", 499 - i), "ins"])
            }),
        ),
        (
            "ZREMRANGEBYRANK z 0 0 on a 100k zset x20",
            n(20, &|_| args(&["ZREMRANGEBYRANK", "zset", "0", "0"])),
        ),
        (
            "ZREMRANGEBYSCORE on a 100k zset x20",
            n(20, &|i| {
                let lo = format!("({}", 1000 + i * 10);
                args(&[
                    "ZREMRANGEBYSCORE",
                    "zset",
                    &lo,
                    &(1005 + i * 10).to_string(),
                ])
            }),
        ),
        (
            "SINTERSTORE into a new 100k set x5",
            n(5, &|i| {
                args(&["SINTERSTORE", &format!("inter{i}"), "set", "set2"])
            }),
        ),
        (
            "SUNIONSTORE into a new 150k set x5",
            n(5, &|i| {
                args(&["SUNIONSTORE", &format!("union{i}"), "set", "set2"])
            }),
        ),
    ]
}

/// The rows reply as on stock, log O(change) (less than 1 KB per op beyond its
/// arguments), nothing is in doubt, and after SIGKILL every value is exactly as it was.
#[test]
fn big_values_reply_as_stock_log_their_change_and_survive_sigkill() {
    for flavor in FLAVORS {
        let stock_dir = TestDir::new("big-stock");
        let stock = server_spec(flavor, &stock_dir, true, "", "").start();
        let mut s = RawConn::connect(stock.spec.port);
        big_values(&mut s);
        let dir = TestDir::new("big-rows");
        let server = server_spec(flavor, &dir, false, "1gb", "64mb").start();
        let mut c = RawConn::connect(server.spec.port);
        big_values(&mut c);
        for (name, commands) in rows() {
            let expected = pipeline(&mut s, &commands);
            let before = appended_bytes(&mut c);
            let got = pipeline(&mut c, &commands);
            assert_eq!(
                got, expected,
                "{flavor:?} {name}: replies differ from stock"
            );
            let arg_bytes: u64 = commands.iter().flatten().map(|a| a.len() as u64).sum();
            let logged = appended_bytes(&mut c) - before;
            let per_op = (logged.saturating_sub(arg_bytes)) / commands.len() as u64;
            println!(
                "{flavor:?} {name}: {} bytes logged per op",
                logged / commands.len() as u64
            );
            assert!(
                per_op < 1024,
                "{flavor:?} {name}: {logged} bytes logged for {} ops ({arg_bytes} bytes of arguments)",
                commands.len()
            );
        }
        let keys = [
            "str", "str2", "bits", "list", "zset", "set", "inter0", "union4",
        ];
        let before: Vec<String> = keys.iter().map(|k| digest_value(&mut s, k)).collect();
        let mine: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();
        assert_eq!(
            mine, before,
            "{flavor:?}: values differ from stock before the kill"
        );
        assert_eq!(info_field(&mut c, "in_doubt_writes"), "0");
        let (_server, mut c) = kill_and_restart(server);
        let after: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();
        assert_eq!(
            after, before,
            "{flavor:?}: values differ after SIGKILL + restart"
        );
    }
}

/// SPOP takes a random member, which neither its arguments nor its notification name
/// (Redis 7.0 and Valkey 8 notify before they rewrite the command into SREM): the set is
/// logged whole, inside the command. Durable, and exact after SIGKILL.
#[test]
fn spop_of_one_member_on_a_big_set_is_durable_inside_the_command() {
    for flavor in FLAVORS {
        let dir = TestDir::new("big-spop");
        let server = server_spec(flavor, &dir, false, "512mb", "64mb").start();
        let mut c = RawConn::connect(server.spec.port);
        for chunk in 0..100 {
            let mut s = args(&["SADD", "set"]);
            for i in chunk * 1000..(chunk + 1) * 1000 {
                s.push(format!("member:{i}").into_bytes());
            }
            assert_eq!(pipeline(&mut c, &[s])[0].int(), Some(1000), "{flavor:?}");
        }
        let popped: Vec<Resp> = (0..5).map(|_| c.cmd(&["SPOP", "set"])).collect();
        let d = digest_value(&mut c, "set");
        let (_server, mut c) = kill_and_restart(server);
        assert_eq!(digest_value(&mut c, "set"), d, "{flavor:?}");
        for p in popped {
            assert_eq!(
                c.cmd(&[b"SISMEMBER".as_slice(), b"set", &p.text().into_bytes()])
                    .int(),
                Some(0)
            );
        }
        assert_eq!(c.cmd(&["SCARD", "set"]).int(), Some(99_995));
    }
}

/// A SET of 80 MB, 100 MB and 500 MB: far above the log (64 MB) and its reserve, written
/// to blobs, durable; a pool too small for it refuses it before it runs.
#[test]
fn huge_sets_are_durable_or_refused_before_they_run() {
    for flavor in FLAVORS {
        let dir = TestDir::new("big-set");
        let server = server_spec(flavor, &dir, false, "1600mb", "64mb").start();
        let mut c = RawConn::connect(server.spec.port);
        let sizes = [80usize << 20, 100 << 20, 500 << 20];
        for (i, size) in sizes.iter().enumerate() {
            let v = vec![b'a' + i as u8; *size];
            let key = format!("huge{i}");
            assert_eq!(c.cmd(&[b"SET".as_slice(), key.as_bytes(), &v]).text(), "OK");
        }
        assert!(info_field(&mut c, "blob_records").parse::<u64>().unwrap() >= 3);
        let digests: Vec<String> = (0..3)
            .map(|i| digest_value(&mut c, &format!("huge{i}")))
            .collect();
        let (server, mut c) = kill_and_restart(server);
        for (i, size) in sizes.iter().enumerate() {
            let key = format!("huge{i}");
            assert_eq!(
                c.cmd(&["STRLEN", &key]).int(),
                Some(*size as i64),
                "{flavor:?} {key}"
            );
            assert_eq!(digest_value(&mut c, &key), digests[i], "{flavor:?} {key}");
        }
        drop(server);

        // A pool that cannot hold the value: refused before it runs, the old value kept.
        let dir = TestDir::new("big-set-small");
        let server = server_spec(flavor, &dir, false, "256mb", "16mb").start();
        let mut c = RawConn::connect(server.spec.port);
        assert_eq!(c.cmd(&["SET", "k", "old"]).text(), "OK");
        let v = vec![b'z'; 500 << 20];
        let r = c.cmd(&[b"SET".as_slice(), b"k", &v]);
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{flavor:?}: accepted: {r:?}"));
        assert!(
            e.starts_with("NVMFULL") && e.contains("not executed"),
            "{flavor:?}: {e}"
        );
        assert_eq!(c.cmd(&["GET", "k"]).text(), "old");
        let r = c.cmd(&[b"APPEND".as_slice(), b"k", &v]);
        assert!(
            r.err().is_some_and(|e| e.starts_with("NVMFULL")),
            "{flavor:?}: {r:?}"
        );
        let (server, mut c) = kill_and_restart(server);
        assert_eq!(c.cmd(&["GET", "k"]).text(), "old", "{flavor:?}");
        drop(server);
    }
}

/// Derived values bigger than the whole log (64 KB here): SUNIONSTORE, SORT ... STORE,
/// COPY, RESTORE, ZUNIONSTORE, BITOP: durable (blobs or O(argument) effects), never in
/// doubt.
#[test]
fn derived_values_bigger_than_the_log_are_durable() {
    for flavor in FLAVORS {
        let dir = TestDir::new("big-derived");
        let server = server_spec(flavor, &dir, false, "256mb", "64kb").start();
        let mut c = RawConn::connect(server.spec.port);
        for chunk in 0..20 {
            let mut a = args(&["SADD", "a"]);
            let mut b = args(&["SADD", "b"]);
            let mut l = args(&["RPUSH", "l"]);
            let mut z = args(&["ZADD", "z"]);
            for i in chunk * 1000..(chunk + 1) * 1000 {
                a.push(format!("member-a-{i:08}").into_bytes());
                b.push(format!("member-b-{i:08}").into_bytes());
                l.push(format!("{:08}", 20_000 - i).into_bytes());
                z.push(i.to_string().into_bytes());
                z.push(format!("zm-{i:08}").into_bytes());
            }
            for r in pipeline(&mut c, &[a, b, l, z]) {
                assert!(r.err().is_none(), "{flavor:?}: {r:?}");
            }
        }
        let big = vec![b'q'; 1 << 20];
        assert_eq!(c.cmd(&[b"SET".as_slice(), b"s", &big]).text(), "OK");
        assert_eq!(c.cmd(&["SUNIONSTORE", "u", "a", "b"]).int(), Some(40_000));
        assert_eq!(c.cmd(&["SORT", "l", "STORE", "sorted"]).int(), Some(20_000));
        assert_eq!(c.cmd(&["COPY", "a", "a2"]).int(), Some(1));
        assert_eq!(c.cmd(&["COPY", "s", "s2"]).int(), Some(1));
        assert_eq!(
            c.cmd(&["ZUNIONSTORE", "zu", "2", "z", "z"]).int(),
            Some(20_000)
        );
        assert_eq!(
            c.cmd(&["BITOP", "OR", "bo", "s", "s2"]).int(),
            Some(1 << 20)
        );
        let dump = c.cmd(&["DUMP", "u"]);
        let Resp::Bulk(Some(payload)) = dump else {
            panic!("{flavor:?}: DUMP: {dump:?}")
        };
        assert_eq!(
            c.cmd(&[b"RESTORE".as_slice(), b"restored", b"0", &payload])
                .text(),
            "OK"
        );
        let keys = ["u", "sorted", "a2", "s2", "zu", "bo", "restored"];
        let before: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();
        let (_server, mut c) = kill_and_restart(server);
        let after: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();
        assert_eq!(after, before, "{flavor:?}");
    }
}

/// With `databases 1000`, writes in dbs 0, 255, 256 and 999 (and SWAPDB, MOVE, FLUSHDB
/// beyond 255) survive SIGKILL.
#[test]
fn every_db_of_a_server_with_a_thousand_dbs_is_durable() {
    for flavor in FLAVORS {
        let dir = TestDir::new("dbs");
        let spec = ServerSpec::module(flavor, &dir).with_extra(&["--databases", "1000"]);
        let server = spec.start();
        let mut c = RawConn::connect(server.spec.port);
        for db in [0, 255, 256, 300, 999] {
            assert_eq!(c.cmd(&["SELECT", &db.to_string()]).text(), "OK");
            assert_eq!(c.cmd(&["SET", "k", &format!("in db {db}")]).text(), "OK");
            assert_eq!(c.cmd(&["RPUSH", "l", "a", "b"]).int(), Some(2));
        }
        c.cmd(&["SELECT", "300"]);
        assert_eq!(c.cmd(&["MOVE", "l", "700"]).int(), Some(1));
        assert_eq!(c.cmd(&["SWAPDB", "999", "500"]).text(), "OK");
        c.cmd(&["SELECT", "256"]);
        assert_eq!(c.cmd(&["FLUSHDB"]).text(), "OK");
        c.cmd(&["SELECT", "0"]);
        let d = digest(&mut c);
        let (_server, mut c) = kill_and_restart(server);
        assert_eq!(digest(&mut c), d, "{flavor:?}");
        let get = |c: &mut RawConn, db: u32, key: &str| {
            c.cmd(&["SELECT", &db.to_string()]);
            c.cmd(&["GET", key]).text()
        };
        assert_eq!(get(&mut c, 255, "k"), "in db 255");
        assert_eq!(get(&mut c, 256, "k"), "", "{flavor:?}: db 256 was flushed");
        assert_eq!(get(&mut c, 500, "k"), "in db 999", "{flavor:?}: swapped");
        assert_eq!(
            get(&mut c, 999, "k"),
            "",
            "{flavor:?}: swapped with an empty db"
        );
        c.cmd(&["SELECT", "700"]);
        assert_eq!(c.cmd(&["LLEN", "l"]).int(), Some(2), "{flavor:?}: moved");
    }
}

/// A MULTI of 30,000 SETs (the case, there on a 1 MB log: 16,209 acknowledged
/// keys were lost), a script and a function that write 30 MB each, through a 64 KB log:
/// the appends wait for the replayer, and every acknowledged write is there after
/// SIGKILL.
#[test]
fn transactions_and_scripts_many_times_the_log_are_durable() {
    for flavor in FLAVORS {
        let dir = TestDir::new("units");
        let server = server_spec(flavor, &dir, false, "512mb", "64kb").start();
        let mut c = RawConn::connect(server.spec.port);
        let value = "v".repeat(1000);
        assert_eq!(c.cmd(&["MULTI"]).text(), "OK");
        for i in 0..30_000 {
            c.send(&["SET", &format!("tx:{i}"), &value]).unwrap();
        }
        for _ in 0..30_000 {
            assert_eq!(c.read().unwrap().text(), "QUEUED");
        }
        let replies = c.cmd(&["EXEC"]).items();
        assert_eq!(replies.len(), 30_000, "{flavor:?}");
        assert!(replies.iter().all(|r| r.text() == "OK"), "{flavor:?}");
        let script = "for i = 1, 30000 do redis.call('SET', 'lua:' .. i, ARGV[1]) end return 1";
        assert_eq!(
            c.cmd(&["EVAL", script, "0", &value]).int(),
            Some(1),
            "{flavor:?}"
        );
        let lib = "#!lua name=bulk\nredis.register_function('bulk', function(keys, args) \
                   for i = 1, 30000 do redis.call('SET', 'fn:' .. i, args[1]) end return 1 end)";
        // Right after the script the backlog may still be full: -NVMFULL is the
        // documented, retryable refusal (a busy machine folds more slowly).
        let mut load = c.cmd(&["FUNCTION", "LOAD", lib]);
        for _ in 0..500 {
            if !load.err().is_some_and(|e| e.starts_with("NVMFULL")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            load = c.cmd(&["FUNCTION", "LOAD", lib]);
        }
        assert_eq!(load.text(), "bulk", "{flavor:?}: {load:?}");
        assert_eq!(
            c.cmd(&["FCALL", "bulk", "0", &value]).int(),
            Some(1),
            "{flavor:?}"
        );
        let waits: u64 = info_field(&mut c, "log_full_waits").parse().unwrap();
        println!("{flavor:?}: {waits} appends waited for the replayer");
        assert!(waits > 0, "{flavor:?}: the units never filled the log");
        let dbsize = c.cmd(&["DBSIZE"]).int();
        assert_eq!(dbsize, Some(90_000));
        let (_server, mut c) = kill_and_restart(server);
        assert_eq!(c.cmd(&["DBSIZE"]).int(), Some(90_000), "{flavor:?}");
        for key in ["tx:29999", "lua:30000", "fn:30000"] {
            assert_eq!(c.cmd(&["GET", key]).text(), value, "{flavor:?} {key}");
        }
    }
}

/// The limits on the way from the server to the pool: a 1 MB key and hash field, an
/// expiry in the year 9999, a SETRANGE 300 MB into a missing key (a sparse chunked string),
/// and a server with more than 4096 dbs, where XREADGROUP's stream (logged at the end of
/// the event-loop iteration, in every db where the key is a stream) sits in db 4500.
#[test]
fn limits_of_keys_expiries_offsets_and_dbs_survive_sigkill() {
    for flavor in FLAVORS {
        let dir = TestDir::new("limits");
        let server = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "256mb")
            .with_extra(&["--databases", "5000", "--proto-max-bulk-len", "1gb"])
            .start();
        let mut c = RawConn::connect(server.spec.port);
        let big_key = vec![b'K'; 1 << 20];
        assert_eq!(c.cmd(&[b"SET".as_slice(), &big_key, b"v"]).text(), "OK");
        assert_eq!(
            c.cmd(&[b"HSET".as_slice(), b"h", &big_key, b"v"]).int(),
            Some(1)
        );
        assert_eq!(c.cmd(&["SET", "far", "v"]).text(), "OK");
        assert_eq!(c.cmd(&["EXPIREAT", "far", "253402300799"]).int(), Some(1));
        assert_eq!(
            c.cmd(&["SETRANGE", "sparse", "314572800", "end"]).int(),
            Some(314_572_803)
        );
        c.cmd(&["SELECT", "4500"]);
        assert!(c
            .cmd(&["XGROUP", "CREATE", "x", "g", "$", "MKSTREAM"])
            .err()
            .is_none());
        assert!(c.cmd(&["XADD", "x", "1-1", "f", "v"]).err().is_none());
        let read = c.cmd(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "x", ">"]);
        assert!(read.err().is_none(), "{flavor:?}: {read:?}");
        let pending = format!("{:?}", c.cmd(&["XPENDING", "x", "g"]));
        c.cmd(&["SELECT", "0"]);
        let d = digest(&mut c);
        let (_server, mut c) = kill_and_restart(server);
        assert_eq!(digest(&mut c), d, "{flavor:?}");
        assert_eq!(c.cmd(&["EXPIRETIME", "far"]).int(), Some(253_402_300_799));
        assert_eq!(
            c.cmd(&["GETRANGE", "sparse", "314572800", "-1"]).text(),
            "end"
        );
        c.cmd(&["SELECT", "4500"]);
        assert_eq!(
            format!("{:?}", c.cmd(&["XPENDING", "x", "g"])),
            pending,
            "{flavor:?}"
        );
    }
}
