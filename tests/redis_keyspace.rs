//! The key space and the replayer against real servers.
//!
//! - A write load many times the log's size completes with every acknowledged write
//!   durable (SIGKILL + restart + equal digest), the log never exceeds its cap, and
//!   `NVM.CHECK DATASET` finds key space + log tail equal to the server's data.
//! - SIGKILL while the replayer is folding: every acknowledged write survives.
//! - Restart from the key space alone (log folded): every type and expiry comes back.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn info_u64(c: &mut redis::Connection, field: &str) -> u64 {
    nvm_info(c)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("NVM.INFO has no numeric {field}"))
}

fn wait_folded(c: &mut redis::Connection) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_u64(c, "log_records") > 0 {
        assert!(Instant::now() < deadline, "the replayer never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_load_many_times_the_log_is_durable_and_the_log_stays_bounded() {
    for flavor in FLAVORS {
        let dir = TestDir::new("bounded");
        let server = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "64mb")
            .with_module_arg("log-size", "64kb")
            .start();
        let mut c = server.conn();
        let cap = info_u64(&mut c, "log_capacity");
        assert_eq!(cap, 64 << 10);
        let (mut refused, mut max_backlog) = (0u64, 0u64);
        let value = "x".repeat(200);
        for round in 0..300u64 {
            let mut p = redis::pipe();
            for i in 0..100u64 {
                let k = (round * 100 + i) % 5000;
                p.cmd("SET").arg(format!("s:{k}")).arg(&value);
                p.cmd("HSET").arg(format!("h:{}", k % 50)).arg(k).arg(round);
                p.cmd("RPUSH").arg(format!("l:{}", k % 20)).arg(k);
                p.cmd("ZADD").arg("z").arg(k).arg(format!("m{}", k % 700));
            }
            // A write refused while the backlog is full is never executed (the digest
            // comparison below covers what ran); count the pipelines that met one.
            if let Err(e) = p.query::<()>(&mut c) {
                assert!(e.to_string().contains("NVMFULL"), "{flavor:?}: {e}");
                refused += 1;
            }
            max_backlog = max_backlog.max(info_u64(&mut c, "log_backlog_bytes"));
            assert!(
                max_backlog <= cap,
                "{flavor:?}: backlog {max_backlog} > cap {cap}"
            );
        }
        let appended = info_u64(&mut c, "appended_bytes");
        assert!(
            appended > 100 * cap,
            "{flavor:?}: only {appended} bytes logged"
        );
        wait_folded(&mut c);
        let check: String = redis::cmd("NVM.CHECK")
            .arg("DATASET")
            .query(&mut c)
            .unwrap();
        assert!(
            check.starts_with("result:ok") && check.contains("dataset:equal"),
            "{flavor:?}: {check} {:?}",
            nvm_info(&mut c)
        );
        let before = digest(&mut c);
        let spec = server.kill9();
        let server = spec.start();
        let mut c = server.conn();
        assert_eq!(
            digest(&mut c),
            before,
            "{flavor:?}: data differs after restart"
        );
        eprintln!("{flavor:?}: {appended} bytes through a {cap}-byte log, {refused} pipelines met a refusal while the backlog was full");
    }
}

#[test]
fn sigkill_while_the_replayer_folds_keeps_every_acknowledged_write() {
    for flavor in FLAVORS {
        for (round, delay_ms) in [30u64, 120, 400].into_iter().enumerate() {
            let dir = TestDir::new("killfold");
            let server = ServerSpec::module(flavor, &dir)
                .with_module_arg("log-size", "256kb")
                .start();
            let port = server.spec.port;
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                    let mut c = client.get_connection().unwrap();
                    let mut acked = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut p = redis::pipe();
                        for j in i..i + 50 {
                            p.cmd("SET")
                                .arg(format!("k:{j}"))
                                .arg(format!("v{j}-{}", "p".repeat(64)));
                        }
                        match p.query::<Vec<redis::Value>>(&mut c) {
                            Ok(replies) => {
                                for (j, r) in (i..).zip(replies) {
                                    if matches!(r, redis::Value::Okay) {
                                        acked.push(j);
                                    }
                                }
                            }
                            Err(_) => break,
                        }
                        i += 50;
                    }
                    acked
                })
            };
            std::thread::sleep(Duration::from_millis(delay_ms));
            let spec = server.kill9();
            stop.store(true, Ordering::Relaxed);
            let acked = writer.join().unwrap();
            assert!(
                !acked.is_empty(),
                "{flavor:?} round {round}: nothing acknowledged"
            );
            let server = spec.start();
            let mut c = server.conn();
            for chunk in acked.chunks(1000) {
                let keys: Vec<String> = chunk.iter().map(|j| format!("k:{j}")).collect();
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
                for (j, v) in chunk.iter().zip(values) {
                    assert_eq!(
                        v.as_deref().map(|s| s.split('-').next().unwrap_or("")),
                        Some(format!("v{j}").as_str()),
                        "{flavor:?} round {round}: acknowledged k:{j} lost"
                    );
                }
            }
            let check: String = redis::cmd("NVM.CHECK").query(&mut c).unwrap();
            assert!(check.starts_with("result:ok"), "{flavor:?}: {check}");
        }
    }
}

#[test]
fn restart_from_the_key_space_brings_back_every_type_and_expiry() {
    for flavor in FLAVORS {
        let dir = TestDir::new("ksrestart");
        let server = ServerSpec::module(flavor, &dir).start();
        let mut c = server.conn();
        let script: &[&[&str]] = &[
            &["SET", "str", "hello"],
            &["SET", "ttl", "bye", "PX", "3600000"],
            &["INCRBY", "counter", "41"],
            &["INCRBYFLOAT", "float", "1.1"],
            &["INCRBYFLOAT", "float", "2.2"],
            &["RPUSH", "list", "a", "b", "c", "d"],
            &["LPOP", "list"],
            &["HSET", "hash", "f1", "v1", "f2", "v2"],
            &["HDEL", "hash", "f1"],
            &["SADD", "set", "x", "y", "z"],
            &["SREM", "set", "y"],
            &["ZADD", "zset", "1", "a", "2", "b", "3", "c"],
            &["ZPOPMIN", "zset"],
            &["XADD", "stream", "1-1", "f", "v"],
            &["XGROUP", "CREATE", "stream", "g", "0"],
            &["XADD", "stream", "2-1", "f", "w"],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c1",
                "COUNT",
                "1",
                "STREAMS",
                "stream",
                ">",
            ],
            &["EXPIRE", "hash", "7200"],
            &["SELECT", "3"],
            &["SET", "other-db", "1"],
            &["RENAME", "other-db", "renamed"],
            &["SELECT", "0"],
        ];
        for cmd in script {
            let mut r = redis::cmd(cmd[0]);
            for a in &cmd[1..] {
                r.arg(*a);
            }
            let _: redis::Value = r.query(&mut c).unwrap();
        }
        wait_folded(&mut c);
        let before = digest(&mut c);
        let snap = snapshot(&mut c);
        let spec = server.kill9();
        let server = spec.start();
        let mut c = server.conn();
        let info = nvm_info(&mut c);
        assert_eq!(
            info["recovery_records"], "0",
            "{flavor:?}: the log should be folded"
        );
        assert!(
            info["recovery_keys_loaded"].parse::<u64>().unwrap() >= 10,
            "{flavor:?}: {info:?}"
        );
        assert_eq!(snapshot(&mut c), snap, "{flavor:?}");
        assert_eq!(digest(&mut c), before, "{flavor:?}");
        let pttl: i64 = redis::cmd("PTTL").arg("ttl").query(&mut c).unwrap();
        assert!(pttl > 3_000_000, "{flavor:?}: ttl lost ({pttl})");
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg("stream")
            .arg("g")
            .query(&mut c)
            .unwrap();
        assert!(
            format!("{pending:?}").contains("c1"),
            "{flavor:?}: consumer group state lost: {pending:?}"
        );
    }
}
