//! A long restore answers clients instead of leaving them hanging.
//!
//! The restore at start-up is blocking at this stage; past the server's
//! `busy-reply-threshold` it lets the server answer: commands get
//! `-BUSY redis-nvm is restoring its pool...`, NVM.INFO answers with the progress, and
//! once the restore is done every key is there.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn clients_get_a_clear_busy_reply_during_a_long_restore() {
    const KEYS: usize = 1_000_000;
    for flavor in FLAVORS {
        let dir = TestDir::new("restart");
        let spec = ServerSpec::module(flavor, &dir)
            .with_module_arg("size", "256mb")
            .with_extra(&["--busy-reply-threshold", "10", "--hz", "100"]);
        let server = spec.start();
        let mut c = server.conn();
        for chunk in 0..KEYS / 10_000 {
            let mut p = redis::pipe();
            for i in chunk * 10_000..(chunk + 1) * 10_000 {
                p.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
            }
            let () = p.query(&mut c).unwrap();
        }
        let spec = server.kill9();

        let server = spec.spawn();
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut busy_replies, mut progress_seen) = (0, false);
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", spec.port)).unwrap();
        let value = loop {
            assert!(
                Instant::now() < deadline,
                "{flavor:?}: the restore never finished"
            );
            let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(30)) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            match redis::cmd("GET")
                .arg("key:999999")
                .query::<Option<String>>(&mut c)
            {
                Ok(v) => break v,
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains("BUSY") && text.contains("redis-nvm is restoring"),
                        "{flavor:?}: unexpected error during restore: {text}"
                    );
                    busy_replies += 1;
                    if let Ok(info) = redis::cmd("NVM.INFO").query::<String>(&mut c) {
                        progress_seen |= info.contains("state:restoring");
                    }
                }
            }
        };
        assert_eq!(value.as_deref(), Some("999999"), "{flavor:?}");
        assert!(
            busy_replies > 0,
            "{flavor:?}: no client was told the server is restoring"
        );
        assert!(
            progress_seen,
            "{flavor:?}: NVM.INFO did not answer during the restore"
        );
        let mut c = server.conn();
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, KEYS as u64);
    }
}
