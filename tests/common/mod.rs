//! Test harness: real `redis-server` 7.0 and `valkey-server` 8 processes with the module.
//!
//! Each server gets its own loopback port and its own directory under target/test-servers,
//! is started with `--enable-debug-command local` (for DEBUG DIGEST) and is killed with
//! SIGKILL by the tests about crashes (and on drop). The module is the release build:
//! `make test` builds it first; `cargo test` alone builds it too if it is missing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use redis::{Commands, Connection, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    Valkey,
}

impl Flavor {
    pub fn binary(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-server",
            Flavor::Valkey => "valkey-server",
        }
    }
}

/// Both servers; a test runs its body against each.
pub const FLAVORS: [Flavor; 2] = [Flavor::Redis, Flavor::Valkey];

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
static BUILD: Once = Once::new();

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module under test: target/release's, or `$REDIS_NVM_MODULE` (a build elsewhere).
pub fn module_path() -> PathBuf {
    match std::env::var_os("REDIS_NVM_MODULE") {
        Some(p) => PathBuf::from(p),
        None => repo().join("target/release/libredis_nvm.so"),
    }
}

/// Builds the release module once per test binary if it is missing.
fn ensure_module() {
    BUILD.call_once(|| {
        if !module_path().exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "--lib"])
                .current_dir(repo())
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the module failed");
        }
    });
}

fn free_port() -> u16 {
    // Spread test binaries (they run concurrently) over distinct ranges by pid.
    let base = 20000 + (std::process::id() % 200) as u16 * 100;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 100;
        let port = base + n;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A test's directory: a fresh folder for the pool, the server's dir and its log.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path = repo().join("target/test-servers").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT_PORT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn pool(&self) -> PathBuf {
        self.path.join("pool.nvm")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub flavor: Flavor,
    pub dir: PathBuf,
    /// Module arguments; `None` starts a stock server without the module.
    pub module_args: Option<Vec<String>>,
    pub extra: Vec<String>,
    pub port: u16,
    /// A redis.conf given before the command-line options.
    pub config_file: Option<PathBuf>,
}

impl ServerSpec {
    /// The module on `dir/pool.nvm`, emulation mode, a 64 MB pool.
    pub fn module(flavor: Flavor, dir: &TestDir) -> ServerSpec {
        ServerSpec {
            flavor,
            dir: dir.path.clone(),
            module_args: Some(
                [
                    "path",
                    &dir.pool().display().to_string(),
                    "size",
                    "64mb",
                    "mode",
                    "emulate",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            extra: vec!["--save".into(), "".into()],
            port: free_port(),
            config_file: None,
        }
    }

    pub fn stock(flavor: Flavor, dir: &TestDir) -> ServerSpec {
        ServerSpec {
            flavor,
            dir: dir.path.clone(),
            module_args: None,
            extra: vec!["--save".into(), "".into()],
            port: free_port(),
            config_file: None,
        }
    }

    pub fn with_args(mut self, args: &[&str]) -> ServerSpec {
        if let Some(m) = self.module_args.as_mut() {
            m.extend(args.iter().map(|s| s.to_string()));
        }
        self
    }

    /// Sets a module argument, replacing the value given by `module()` if any.
    pub fn with_module_arg(mut self, name: &str, value: &str) -> ServerSpec {
        if let Some(m) = self.module_args.as_mut() {
            match m.iter().position(|a| a == name) {
                Some(i) if i + 1 < m.len() => m[i + 1] = value.to_string(),
                _ => m.extend([name.to_string(), value.to_string()]),
            }
        }
        self
    }

    pub fn with_config_file(mut self, path: &Path) -> ServerSpec {
        self.config_file = Some(path.to_path_buf());
        self
    }

    pub fn with_extra(mut self, extra: &[&str]) -> ServerSpec {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("server-{}.log", self.port))
    }

    fn command(&self) -> Command {
        ensure_module();
        let mut cmd = Command::new(self.flavor.binary());
        if let Some(conf) = &self.config_file {
            cmd.arg(conf);
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--enable-debug-command")
            .arg("local")
            .arg("--daemonize")
            .arg("no");
        for e in &self.extra {
            cmd.arg(e);
        }
        if let Some(args) = &self.module_args {
            cmd.arg("--loadmodule").arg(module_path());
            for a in args {
                cmd.arg(a);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Starts the server and waits until it answers PING and, with the module, until
    /// its warm-up has brought the whole pool into memory (the tests of the warm-up
    /// itself use `start_serving`).
    pub fn start(&self) -> Server {
        let server = self.start_serving();
        server.wait_warm();
        server
    }

    /// Starts the server and waits until it answers PING (the warm-up may go on).
    pub fn start_serving(&self) -> Server {
        let child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.flavor.binary()));
        let mut server = Server {
            spec: self.clone(),
            child: Some(child),
            expect_poisoned: false,
        };
        server.wait_ready();
        server
    }

    /// Starts the server without waiting for it to answer (to talk to it while it starts).
    pub fn spawn(&self) -> Server {
        let child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.flavor.binary()));
        Server {
            spec: self.clone(),
            child: Some(child),
            expect_poisoned: false,
        }
    }

    /// Starts the server expecting it to exit (a bad configuration); returns its log.
    pub fn start_expecting_failure(&self) -> String {
        let mut child = self.command().spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(!status.success(), "server should have refused to start");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "server kept running: {}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

pub struct Server {
    pub spec: ServerSpec,
    child: Option<Child>,
    /// The test means the module to end poisoned (refusing writes): the final check
    /// then accepts that state, still not an in-doubt write.
    pub expect_poisoned: bool,
}

impl Server {
    /// Waits until the module's warm-up is over (at once without the module).
    pub fn wait_warm(&self) {
        if self.spec.module_args.is_none() {
            return;
        }
        // A raw connection: the redis crate's handshake (CLIENT SETINFO on Valkey) would
        // show in the commandstats that tests compare with stock's.
        let Ok(mut c) = RawConn::try_connect(self.spec.port) else {
            return;
        };
        wait_until("the warm-up", Duration::from_secs(120), || {
            match c.try_cmd(&["NVM.INFO"]) {
                Ok(r) => !r.text().contains("warmup_state:running"),
                Err(_) => true,
            }
        });
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "server exited ({status}) during start-up; log:\n{}",
                        self.log()
                    );
                }
            }
            if let Ok(mut c) = self.try_conn() {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not answer PING; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_conn(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.spec.port))?;
        client.get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn conn(&self) -> Connection {
        self.try_conn().expect("connect")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.spec.log_path()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown path runs, nothing is flushed by the server.
    pub fn kill9(mut self) -> ServerSpec {
        self.kill_now();
        self.spec.clone()
    }

    /// SIGKILL at once, without the final check (for a server killed while it starts,
    /// before it can answer).
    pub fn kill9_starting(mut self) -> ServerSpec {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spec.clone()
    }

    fn kill_now(&mut self) {
        if !std::thread::panicking() {
            self.assert_nothing_in_doubt();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every test ends here (SIGKILL or drop): no write may have been acknowledged and
    /// then not made durable, and the module is not poisoned unless the test means it.
    /// A module server that died by itself fails too (the module exits rather than
    /// acknowledge a write it could not make durable).
    fn assert_nothing_in_doubt(&mut self) {
        if self.spec.module_args.is_none() {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            if status.success() {
                return; // SHUTDOWN by the test
            }
            panic!(
                "{:?}: the server exited by itself ({status}); log:\n{}",
                self.spec.flavor,
                self.log()
            );
        }
        let info =
            match RawConn::try_connect(self.spec.port).and_then(|mut c| c.try_cmd(&["NVM.INFO"])) {
                Ok(r) => r.text(),
                Err(e) => {
                    // A SHUTDOWN in progress: the listener is closed before the process exits.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        if let Ok(Some(status)) = child.try_wait() {
                            assert!(
                                status.success(),
                                "{:?}: the server exited ({status})",
                                self.spec.flavor
                            );
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    panic!(
                        "{:?}: NVM.INFO unanswered before the final check: {e}",
                        self.spec.flavor
                    )
                }
            };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            field("in_doubt_writes"),
            "0",
            "{:?}: acknowledged writes may have been lost:\n{info}",
            self.spec.flavor
        );
        if !self.expect_poisoned {
            assert!(
                !field("state").starts_with("poisoned"),
                "{:?}: the module is poisoned:\n{info}",
                self.spec.flavor
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// `DEBUG DIGEST` of the whole dataset.
pub fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(c)
        .expect("DEBUG DIGEST")
}

/// `NVM.INFO` as a map.
pub fn nvm_info(c: &mut Connection) -> std::collections::HashMap<String, String> {
    let text: String = redis::cmd("NVM.INFO").query(c).expect("NVM.INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Every key of every db with its type, TTL presence and DUMP-free rendering, for
/// readable failure messages when digests differ.
pub fn snapshot(c: &mut Connection) -> Vec<String> {
    let mut out = Vec::new();
    for db in 0..16 {
        let _: () = redis::cmd("SELECT").arg(db).query(c).unwrap();
        let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        keys.sort();
        for k in keys {
            let t: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
            let dv: Value = redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg(&k)
                .query(c)
                .unwrap();
            out.push(format!(
                "db{db} {} {t} ttl={} {:?}",
                String::from_utf8_lossy(&k),
                if ttl >= 0 { "yes" } else { "no" },
                dv
            ));
        }
    }
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    out
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

// ---- helpers added for tests/redis_safety.rs -------------------------------------------

/// One reply, exactly as the server sent it (errors stay inside arrays): RESP2, and the
/// RESP3 types after `HELLO 3` (a verbatim string reads as a bulk one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
    /// RESP3 only.
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Double(String),
    Null,
}

impl Resp {
    /// The error text (code and message) if this is an error reply.
    pub fn err(&self) -> Option<&str> {
        match self {
            Resp::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A simple or bulk string as text ("" for anything else).
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn items(&self) -> Vec<Resp> {
        match self {
            Resp::Array(Some(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// A minimal RESP2 connection: every reply is returned raw, errors included, so tests can
/// compare replies byte for byte and read exact error texts.
pub struct RawConn {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl RawConn {
    pub fn try_connect(port: u16) -> std::io::Result<RawConn> {
        let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_nodelay(true)?;
        Ok(RawConn {
            reader: std::io::BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub fn connect(port: u16) -> RawConn {
        RawConn::try_connect(port).expect("raw connect")
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)
    }

    pub fn read(&mut self) -> std::io::Result<Resp> {
        use std::io::{BufRead, Read};
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP");
        match line[0] {
            b'+' => Ok(Resp::Simple(body)),
            b'-' => Ok(Resp::Error(body)),
            b':' => Ok(Resp::Int(body.parse().map_err(|_| bad())?)),
            b'$' => {
                let n: i64 = body.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Resp::Bulk(None));
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Ok(Resp::Bulk(Some(buf)))
            }
            b'*' | b'~' => {
                let n: i64 = body.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Resp::Array(None));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.read()?);
                }
                Ok(if line[0] == b'~' {
                    Resp::Set(items)
                } else {
                    Resp::Array(Some(items))
                })
            }
            b'%' => {
                let n: usize = body.parse().map_err(|_| bad())?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push((self.read()?, self.read()?));
                }
                Ok(Resp::Map(pairs))
            }
            b'=' => {
                let n: usize = body.parse().map_err(|_| bad())?;
                let mut buf = vec![0u8; n + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(n);
                // "txt:" and the text.
                Ok(Resp::Bulk(Some(buf.split_off(4.min(n)))))
            }
            b',' => Ok(Resp::Double(body)),
            b'_' => Ok(Resp::Null),
            _ => Err(bad()),
        }
    }

    pub fn try_cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Resp> {
        self.send(args)?;
        self.read()
    }

    /// Sends one command and returns its reply (panics only on I/O errors).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .collect();
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{shown:?}: {e}"))
    }
}

/// Runs the offline tool; returns (exit code, stdout + stderr).
pub fn nvm_tool(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nvm-tool"))
        .args(args)
        .output()
        .expect("run nvm-tool");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// One line of `nvm-tool dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpedRecord {
    pub lsn: u64,
    pub offset: u64,
    pub kind: u8,
    pub db: u8,
    pub len: u64,
}

/// The records of a pool (not in use by a server), as `nvm-tool dump` lists them.
pub fn dump_records(pool: &Path) -> Vec<DumpedRecord> {
    let (code, text) = nvm_tool(&["dump", &pool.display().to_string()]);
    assert_eq!(code, 0, "nvm-tool dump failed: {text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().unwrap_or_else(|_| panic!("dump line {l:?}")))
                .collect();
            assert_eq!(f.len(), 5, "dump line {l:?}");
            DumpedRecord {
                lsn: f[0],
                offset: f[1],
                kind: f[2] as u8,
                db: f[3] as u8,
                len: f[4],
            }
        })
        .collect()
}

/// `NVM.INFO` through a raw connection, as a map.
pub fn info_map(c: &mut RawConn) -> std::collections::HashMap<String, String> {
    let r = c.cmd(&["NVM.INFO"]);
    assert!(r.err().is_none(), "NVM.INFO: {r:?}");
    r.text()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Adds entries `1-1` .. `n-1` (field `f`, value `<prefix><i>`) to stream `key`, pipelined.
pub fn add_entries(c: &mut RawConn, key: &str, n: u64, prefix: &str) {
    for i in 1..=n {
        c.send(&["XADD", key, &format!("{i}-1"), "f", &format!("{prefix}{i}")])
            .unwrap();
    }
    for _ in 1..=n {
        let r = c.read().unwrap();
        assert!(r.err().is_none(), "XADD: {r:?}");
    }
}

/// Asserts two long texts are equal, showing only where they first differ.
pub fn assert_same_text(after: &str, before: &str, what: &str) {
    let at = after
        .bytes()
        .zip(before.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(after.len().min(before.len()));
    let around = |s: &str| {
        let from = (at.saturating_sub(200)..=at)
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(at);
        let to = (at + 200).min(s.len());
        let to = (to..=s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s.get(from..to).unwrap_or("").to_string()
    };
    assert!(
        after == before,
        "{what}: differs at byte {at} (lengths {} and {}):\n after  {:?}\n before {:?}",
        after.len(),
        before.len(),
        around(after),
        around(before)
    );
}
