//! NVM.GET, NVM.TYPE, NVM.TTL/PTTL, NVM.DBSIZE and NVM.SCAN read the NVM key space:
//! every type and expiry, in the caller's db, in RESP2 and RESP3, before the warm-up (a
//! restart has just begun serving) and after it, when they agree with the server's own
//! view (GET/HGETALL/..., TYPE, TTL, DBSIZE, SCAN); ACL applies as to the native reads.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn ok(c: &mut RawConn, args: &[&str]) {
    let r = c.cmd(args);
    assert!(r.err().is_none(), "{args:?}: {r:?}");
}

fn bulk(s: &str) -> Resp {
    Resp::Bulk(Some(s.as_bytes().to_vec()))
}

/// Writes one key of every type (db 0) and a few in db 2; many plain keys so that the
/// warm-up is still running when the first reads come.
fn write(c: &mut RawConn) {
    ok(c, &["SET", "str", "hello"]);
    ok(c, &["SET", "num", "12345"]);
    let big = "b".repeat(10_000);
    ok(c, &["SET", "bigstr", &big]);
    ok(c, &["RPUSH", "list", "a", "b", "c"]);
    ok(c, &["HSET", "hash", "f1", "v1", "f2", "v2"]);
    ok(c, &["SADD", "set", "x", "y"]);
    ok(c, &["ZADD", "zset", "1.5", "m1", "2", "m2"]);
    ok(c, &["XADD", "stream", "1-1", "f", "v"]);
    ok(c, &["XGROUP", "CREATE", "stream", "g", "0"]);
    ok(c, &["XADD", "stream", "2-1", "f", "w"]);
    ok(c, &["SET", "ttl", "t", "PX", "600000"]);
    ok(c, &["SET", "soon", "s", "PX", "300"]);
    ok(c, &["SELECT", "2"]);
    ok(c, &["SET", "str", "in db 2"]);
    ok(c, &["HSET", "only2", "a", "b"]);
    ok(c, &["SELECT", "0"]);
    for chunk in 0..30 {
        for i in chunk * 2000..(chunk + 1) * 2000 {
            c.send(&["SET", &format!("k:{i}"), "v"]).unwrap();
        }
        for _ in 0..2000 {
            assert!(c.read().unwrap().err().is_none());
        }
    }
}

/// NVM.GET's RESP2 reply: [type, T, ttl, N, value, V].
fn get2(c: &mut RawConn, key: &str) -> (String, i64, Resp) {
    let r = c.cmd(&["NVM.GET", key]).items();
    assert_eq!(r.len(), 6, "{key}: {r:?}");
    assert_eq!((r[0].text(), r[2].text()), ("type".into(), "ttl".into()));
    assert_eq!(r[4].text(), "value");
    (r[1].text(), r[3].int().unwrap(), r[5].clone())
}

fn check_values(c: &mut RawConn, when: &str) {
    assert_eq!(
        get2(c, "str"),
        ("string".into(), -1, bulk("hello")),
        "{when}"
    );
    assert_eq!(get2(c, "num").2, bulk("12345"), "{when}");
    assert_eq!(get2(c, "bigstr").2, bulk(&"b".repeat(10_000)), "{when}");
    assert_eq!(
        get2(c, "list"),
        (
            "list".into(),
            -1,
            Resp::Array(Some(vec![bulk("a"), bulk("b"), bulk("c")]))
        ),
        "{when}"
    );
    let (t, _, hash) = get2(c, "hash");
    assert_eq!(t, "hash");
    let mut fields: Vec<String> = hash.items().iter().map(Resp::text).collect();
    fields.sort();
    assert_eq!(fields, ["f1", "f2", "v1", "v2"], "{when}");
    let (t, _, set) = get2(c, "set");
    let members: BTreeSet<String> = set.items().iter().map(Resp::text).collect();
    assert_eq!(
        (t.as_str(), members),
        ("set", ["x", "y"].map(String::from).into())
    );
    let (t, _, zset) = get2(c, "zset");
    let z: Vec<String> = zset.items().iter().map(Resp::text).collect();
    assert_eq!(t, "zset");
    let pairs: BTreeSet<(String, String)> =
        z.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    assert_eq!(
        pairs,
        [("m1", "1.5"), ("m2", "2")]
            .map(|(a, b)| (a.into(), b.into()))
            .into(),
        "{when}"
    );
    let (t, _, stream) = get2(c, "stream");
    assert_eq!(t, "stream", "{when}");
    let parts = stream.items();
    assert_eq!(parts[0].text(), "dump", "{when}: {parts:?}");
    assert!(
        matches!(parts[1], Resp::Bulk(Some(_))),
        "{when}: the last DUMP"
    );
    assert_eq!(parts[2].text(), "since_dump");
    assert_eq!(
        parts[3].items().len(),
        1,
        "{when}: the XADD after the dump: {parts:?}"
    );
    let (_, ttl, _) = get2(c, "ttl");
    assert!(ttl > 500_000 && ttl <= 600_000, "{when}: ttl {ttl}");
    assert_eq!(
        c.cmd(&["NVM.GET", "soon"]),
        Resp::Bulk(None),
        "{when}: expired"
    );
    assert_eq!(c.cmd(&["NVM.GET", "missing"]), Resp::Bulk(None));
    assert_eq!(c.cmd(&["NVM.TYPE", "zset"]).text(), "zset");
    assert_eq!(c.cmd(&["NVM.TYPE", "soon"]).text(), "none");
    assert_eq!(c.cmd(&["NVM.TTL", "str"]).int(), Some(-1));
    assert_eq!(c.cmd(&["NVM.TTL", "missing"]).int(), Some(-2));
    let ttl = c.cmd(&["NVM.TTL", "ttl"]).int().unwrap();
    assert!((500..=600).contains(&ttl), "{when}: {ttl}");
    assert_eq!(c.cmd(&["NVM.DBSIZE"]).int(), Some(60_009), "{when}");
    // The caller's db.
    ok(c, &["SELECT", "2"]);
    assert_eq!(get2(c, "str").2, bulk("in db 2"), "{when}");
    assert_eq!(c.cmd(&["NVM.TYPE", "hash"]).text(), "none");
    assert_eq!(c.cmd(&["NVM.DBSIZE"]).int(), Some(2));
    ok(c, &["SELECT", "0"]);
}

/// A full NVM.SCAN (or SCAN) iteration of the selected db.
fn scan_all(c: &mut RawConn, command: &str, extra: &[&str]) -> BTreeSet<String> {
    let mut cursor = "0".to_string();
    let mut keys = BTreeSet::new();
    loop {
        let mut args = vec![command, cursor.as_str()];
        args.extend_from_slice(extra);
        let r = c.cmd(&args).items();
        assert_eq!(r.len(), 2, "{args:?}: {r:?}");
        keys.extend(r[1].items().iter().map(Resp::text));
        cursor = r[0].text();
        if cursor == "0" {
            return keys;
        }
    }
}

#[test]
fn nvm_reads_serve_the_key_space_before_and_after_the_warm_up() {
    for flavor in FLAVORS {
        let dir = TestDir::new("nvm-reads");
        let server = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "256mb")
            .start();
        let mut c = RawConn::connect(server.spec.port);
        write(&mut c);
        std::thread::sleep(Duration::from_millis(400)); // "soon" expires
        check_values(&mut c, "before the restart");

        let server = server.kill9().start_serving();
        let mut c = RawConn::connect(server.spec.port);
        let running = c.cmd(&["NVM.INFO"]).text().contains("warmup_state:running");
        check_values(&mut c, "during the warm-up");
        let nvm_keys = scan_all(&mut c, "NVM.SCAN", &["COUNT", "100"]);
        assert_eq!(nvm_keys.len(), 60_009, "{flavor:?}");
        assert!(
            running,
            "{flavor:?}: the first reads came after the warm-up"
        );

        server.wait_warm();
        check_values(&mut c, "after the warm-up");
        assert_eq!(
            scan_all(&mut c, "SCAN", &["COUNT", "1000"]),
            nvm_keys,
            "{flavor:?}"
        );
        assert_eq!(c.cmd(&["DBSIZE"]), c.cmd(&["NVM.DBSIZE"]));
        for filter in [
            &["MATCH", "k:1*"][..],
            &["TYPE", "hash"],
            &["MATCH", "*s*", "TYPE", "string"],
        ] {
            assert_eq!(
                scan_all(&mut c, "NVM.SCAN", filter),
                scan_all(&mut c, "SCAN", filter),
                "{flavor:?}: {filter:?}"
            );
        }
        for key in ["str", "list", "hash", "set", "zset", "stream", "missing"] {
            assert_eq!(c.cmd(&["NVM.TYPE", key]), c.cmd(&["TYPE", key]), "{key}");
            assert_eq!(c.cmd(&["NVM.TTL", key]), c.cmd(&["TTL", key]), "{key}");
        }

        // RESP3: maps, sets and doubles.
        assert!(matches!(c.cmd(&["HELLO", "3"]), Resp::Map(_)));
        let Resp::Map(got) = c.cmd(&["NVM.GET", "zset"]) else {
            panic!("{flavor:?}: NVM.GET in RESP3 is a map");
        };
        assert_eq!(
            got[0],
            (Resp::Simple("type".into()), Resp::Simple("zset".into()))
        );
        let Resp::Map(members) = &got[2].1 else {
            panic!("{flavor:?}: a zset's value is a map: {got:?}");
        };
        assert!(
            members.contains(&(bulk("m1"), Resp::Double("1.5".into()))),
            "{members:?}"
        );
        let Resp::Map(got) = c.cmd(&["NVM.GET", "set"]) else {
            panic!("map");
        };
        assert!(
            matches!(got[2].1, Resp::Set(ref s) if s.len() == 2),
            "{got:?}"
        );
        assert_eq!(c.cmd(&["NVM.GET", "missing"]), Resp::Null);
        ok(&mut c, &["HELLO", "2"]);

        // ACL: as the native reads (key patterns included).
        ok(
            &mut c,
            &[
                "ACL", "SETUSER", "noread", "on", ">pw", "+@all", "-@read", "~*",
            ],
        );
        ok(
            &mut c,
            &["ACL", "SETUSER", "some", "on", ">pw", "+@all", "~str*"],
        );
        let mut u = RawConn::connect(server.spec.port);
        ok(&mut u, &["AUTH", "noread", "pw"]);
        for cmd in [&["NVM.GET", "str"][..], &["NVM.SCAN", "0"], &["NVM.DBSIZE"]] {
            let e = u.cmd(cmd);
            assert!(
                e.err().is_some_and(|e| e.starts_with("NOPERM")),
                "{flavor:?} {cmd:?}: {e:?}"
            );
        }
        ok(&mut u, &["AUTH", "some", "pw"]);
        assert_eq!(get2(&mut u, "str").2, bulk("hello"));
        let e = u.cmd(&["NVM.GET", "hash"]);
        assert!(
            e.err().is_some_and(|e| e.starts_with("NOPERM")),
            "{flavor:?}: key pattern: {e:?}"
        );
        let help = c.cmd(&["NVM.HELP"]).items();
        assert!(
            help.iter().any(|l| l.text().starts_with("NVM.SCAN")),
            "{help:?}"
        );
    }
}
