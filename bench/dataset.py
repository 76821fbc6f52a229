#!/usr/bin/env python3
"""Shared helpers of the benchmarks: harness utilities (all three), servers and the dataset
(restart.py, latency.py).

Role: start and stop a server child process (module or stock configuration) on its own
127.0.0.1 port, --dir and --logfile; talk RESP to it over a plain socket; and load one
deterministic dataset into it through real write commands, so that the module captures
every key (DEBUG POPULATE fires no keyspace events, the module would not see it) and
stock Redis gets exactly the same data the same way.

The dataset at scale K (default 6_500_000, about the 1.8 GB of `DEBUG POPULATE 6500000
key 200`):
  - K strings `key:%012d` (i = 0..K-1), 200-byte values `v%011d:` + 187 bytes of fixed
    pseudo-random alphanumerics (shifted by i), so values do not compress. The names are
    the ones `redis-benchmark -r K` generates (`key:__rand_int__` = `key:` + 12 digits,
    0..K-1), so the latency benchmark overwrites and reads the dataset's own keys instead
    of growing a second one;
  - C hashes `hash:%04d`, C lists `list:%04d`, C sets `set:%04d` and C sorted sets
    `zset:%04d` of E elements each (default C=200, E=1000), each made by one command
    (HSET / DEL+RPUSH / SADD / ZADD), members of 16-24 bytes;
  - T strings `ttl:%04d` (default 100) with 200-byte values and `EXAT 4102444800`
    (2100-01-01): far-future TTLs that never fire during a run.
Every command is idempotent (lists are DEL then RPUSH), so a chunk that got errors can
be sent again as a whole.

Loading: the RESP is generated here and sent in chunks (default 50k commands) to
`redis-cli --pipe`, whose summary must say `errors: 0`. For the module, before each chunk
the loader waits until the log backlog is at most half full (NVM.INFO log_used vs
log_capacity), and a chunk refused with `-NVMFULL ... log backlog ... is full` is sent
again once the backlog has drained (counted and reported); any other error stops the load.
At the end, for the module, it waits until NVM.INFO shows log_records:0 (all folded).

Command line (for a server that is already running):
  python3 bench/dataset.py load --port 6379 [--keys 6500000]   # load, print stats
  python3 bench/dataset.py resp [--keys N] | redis-cli --pipe   # just the RESP on stdout
Standard library only (Python 3.11).
"""

import argparse
import datetime
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODULE = REPO / "target" / "release" / "libredis_nvm.so"

DEFAULT_KEYS = 6_500_000
DEFAULT_COLLECTIONS = 200
DEFAULT_ELEMENTS = 1000
DEFAULT_TTL_KEYS = 100
VALUE_SIZE = 200
KEY_DIGITS = 12  # redis-benchmark's __rand_int__ is %012zu
TTL_EXAT = 4102444800  # 2100-01-01T00:00:00Z
DEFAULT_CHUNK = 50_000  # commands per redis-cli --pipe invocation

LOG_PREFIX = "bench"


def log(msg):
    print(f"[{LOG_PREFIX}] {msg}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------- utilities

def fs_type(path):
    """Filesystem type of the filesystem holding path (as `df --output=fstype` says)."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    out = subprocess.run(["df", "--output=fstype", str(p)], capture_output=True, text=True, timeout=10)
    lines = out.stdout.split()
    return lines[-1] if out.returncode == 0 and len(lines) >= 2 else "unknown"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text[-lines:]) if text else f"({path} is empty)"


def parse_info(text):
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def run_version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip() or f"(no output, status {out.returncode})"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(cannot run {binary}: {e})"


def fmt_bytes(n):
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def dir_size(path):
    """Total size of the regular files under path (or of path itself)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _, files in os.walk(p):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total


def pick_disk_root(work_dir, on_tmpfs="RDB/AOF files will not be on a disk"):
    """A work directory not on tmpfs: --work-dir, else <repo>/target/bench-tmp, else
    /var/tmp/redis-nvm-bench. Returns (root, fstype); warns with `on_tmpfs` if all are tmpfs."""
    candidates = [Path(work_dir)] if work_dir else [REPO / "target" / "bench-tmp",
                                                    Path("/var/tmp/redis-nvm-bench")]
    for root in candidates:
        kind = fs_type(root)
        if kind != "tmpfs":
            return root, kind
    root = candidates[0]
    log(f"WARNING: {root} is on tmpfs: {on_tmpfs}")
    return root, fs_type(root)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt()


def install_signal_handlers():
    """SIGINT (also when the shell started us with it ignored, as `cmd &` does), SIGTERM
    and SIGHUP unwind like Ctrl-C, so the finally blocks stop the servers."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)


# Helper processes (redis-cli --pipe, redis-benchmark) still running: killed by cleanup.
_HELPERS = set()


def spawn_helper(cmd, **kw):
    """Popen for a short-lived helper, in its own session (a Ctrl-C reaches only the
    harness, which then kills it with kill_helpers)."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    _HELPERS.add(p)
    return p


def reap_helper(p):
    _HELPERS.discard(p)


def kill_helpers():
    for p in list(_HELPERS):
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _HELPERS.discard(p)


# --------------------------------------------------------------------------- RESP client

class RespError(str):
    """An error reply (its text, without the leading '-')."""


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _parse(buf, pos):
    """One reply from buf[pos:]: (value, next pos), or None if buf holds only part of it."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    nxt = end + 2
    if kind == b"+":
        return line.decode(errors="replace"), nxt
    if kind == b"-":
        return RespError(line.decode(errors="replace")), nxt
    if kind == b":":
        return int(line), nxt
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            return None
        return bytes(buf[nxt:nxt + n]), nxt + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            r = _parse(buf, nxt)
            if r is None:
                return None
            v, nxt = r
            items.append(v)
        return items, nxt
    raise HarnessError(f"bad RESP reply type {kind!r} in {bytes(buf[pos:pos + 80])!r}")


class Resp:
    """A minimal blocking RESP2 connection (with a poll for one reply)."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        self.sock.sendall(encode(*args))

    def poll_reply(self, wait):
        """A reply if one arrives within `wait` seconds, else the sentinel Resp.NOTHING."""
        r = _parse(self.buf, 0)
        if r is None:
            ready, _, _ = select.select([self.sock], [], [], wait)
            if ready:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.buf += data
                r = _parse(self.buf, 0)
        if r is None:
            return Resp.NOTHING
        value, nxt = r
        del self.buf[:nxt]
        return value

    NOTHING = object()

    def read(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply in time")
            v = self.poll_reply(min(left, 1.0))
            if v is not Resp.NOTHING:
                return v

    def call(self, *args, timeout=None):
        self.send(*args)
        return self.read(timeout)


def text(v):
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------- servers

class Server:
    """One server configuration: its port, --dir, log file, optional pool, child process.

    kind "module": --loadmodule <so> path <pool> size <pool_size> mode emulate, plus
    --save "" --appendonly no; kind "stock": the given extra arguments. Every start uses
    the same command line; `log_offset` is where the log file ended when it last started,
    so a restart's lines can be read apart from the earlier ones.
    """

    def __init__(self, name, kind, binaries, run_dir, port=None, pool=None, module=None,
                 pool_size="4gb", extra=()):
        self.name = name
        self.kind = kind
        self.server_bin, self.cli_bin = binaries
        self.port = port or free_port()
        self.dir = Path(run_dir) / name
        self.logfile = self.dir / "server.log"
        self.pool = Path(pool) if pool else None
        self.module = module
        self.pool_size = pool_size
        self.extra = list(extra)
        self.proc = None
        self.log_offset = 0
        self.starts = 0

    @property
    def is_module(self):
        return self.kind == "module"

    def command(self):
        cmd = [self.server_bin, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.logfile)]
        if self.is_module:
            cmd += ["--save", "", "--appendonly", "no",
                    "--loadmodule", str(self.module), "path", str(self.pool),
                    "size", self.pool_size, "mode", "emulate"]
        cmd += self.extra
        return cmd

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def spawn(self):
        """Starts the process and returns at once (time it yourself)."""
        if self.alive():
            raise HarnessError(f"{self.name}: already running (pid {self.proc.pid})")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.is_module:
            if not Path(self.module).is_file():
                raise HarnessError(f"module not found: {self.module} "
                                   f"(build it with `cargo build --release` in {REPO})")
            self.pool.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.log_offset = self.logfile.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        cmd = self.command()
        self.starts += 1
        # Own session: a Ctrl-C reaches only the harness, which then stops the servers.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def start(self, timeout=600):
        log(f"starting {self.name}: {shlex.join(self.command())}")
        self.spawn()
        self.wait_ready(timeout)

    def died(self):
        return HarnessError(f"{self.name}: server exited with status {self.proc.returncode}; "
                            f"tail of {self.logfile}:\n{tail(self.logfile)}")

    def wait_ready(self, timeout=600):
        """Until PING answers PONG (stock answers -LOADING while loading, the module
        -BUSY past busy-reply-threshold, or nothing, while it restores)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died()
            try:
                c = Resp(self.port, timeout=5)
                try:
                    while time.monotonic() < deadline:
                        r = c.call("PING", timeout=max(1.0, deadline - time.monotonic()))
                        if r == "PONG":
                            return
                        last = r
                        time.sleep(0.05)
                finally:
                    c.close()
            except (OSError, TimeoutError) as e:
                last = str(e)
            time.sleep(0.05)
        raise HarnessError(f"{self.name}: no PONG on port {self.port} within {timeout}s "
                           f"(last answer: {last!r}); tail of {self.logfile}:\n{tail(self.logfile)}")

    def call(self, *args, timeout=60):
        """One command on a fresh connection; error replies raise HarnessError."""
        if not self.alive():
            raise self.died()
        c = Resp(self.port, timeout=timeout)
        try:
            r = c.call(*args, timeout=timeout)
        finally:
            c.close()
        if isinstance(r, RespError):
            raise HarnessError(f"{self.name}: {' '.join(map(str, args))}: -{r}")
        return r

    def info(self, *sections):
        return parse_info(text(self.call("INFO", *sections)))

    def nvm_info(self):
        return parse_info(text(self.call("NVM.INFO")))

    def dbsize(self):
        return self.call("DBSIZE")

    def log_since_start(self):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout=60):
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: no exit {timeout}s after SIGTERM, killing pid {self.proc.pid}")
                self.proc.kill()
                self.proc.wait()

    def remove_pool(self):
        if self.pool is not None:
            try:
                self.pool.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log(f"{self.name}: could not delete pool {self.pool}: {e}")


# --------------------------------------------------------------------------- dataset

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Dataset:
    def __init__(self, keys=DEFAULT_KEYS, collections=DEFAULT_COLLECTIONS,
                 elements=DEFAULT_ELEMENTS, ttl_keys=DEFAULT_TTL_KEYS):
        if keys < 1 or keys >= 10 ** KEY_DIGITS:
            raise HarnessError(f"--keys must be in 1..{10 ** KEY_DIGITS - 1}")
        if min(collections, elements, ttl_keys) < 0 or collections > 9999 or ttl_keys > 9999:
            raise HarnessError("collections and ttl keys must be in 0..9999, elements >= 0")
        if collections and elements < 1:
            raise HarnessError("collections need at least one element each")
        self.keys = keys
        self.collections = collections
        self.elements = elements
        self.ttl_keys = ttl_keys
        rnd = random.Random(20240601)
        self._prefix_len = 1 + 11 + 1  # b"v" + 11 digits + b":"
        fill_len = VALUE_SIZE - self._prefix_len
        fill = bytes(rnd.choice(_ALNUM) for _ in range(fill_len + 64))
        self._fills = [fill[s:s + fill_len] for s in range(64)]

    def describe(self):
        c, e = self.collections, self.elements
        return (f"{self.keys} strings `key:%012d` ({VALUE_SIZE}-byte values), "
                f"{c} hashes + {c} lists + {c} sets + {c} zsets of {e} elements, "
                f"{self.ttl_keys} strings with EXAT {TTL_EXAT}")

    def expected_keys(self):
        return self.keys + 4 * self.collections + self.ttl_keys

    @staticmethod
    def key(i):
        return b"key:%012d" % i

    def value(self, i):
        return b"v%011d:%s" % (i % 10 ** 11, self._fills[i % 64])

    # Each generator yields (commands, resp bytes) chunks of about `chunk` commands.
    def _string_chunks(self, chunk):
        head = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$200\r\nv%011d:%s\r\n"
        fills = self._fills
        for start in range(0, self.keys, chunk):
            stop = min(start + chunk, self.keys)
            yield stop - start, b"".join([head % (i, i, fills[i % 64]) for i in range(start, stop)])

    def _collection_commands(self, c):
        e = self.elements
        h = [b"HSET", b"hash:%04d" % c]
        for j in range(e):
            h += [b"field:%06d" % j, b"hval:%04d:%06d:xx" % (c, j)]
        yield encode(*h)
        yield encode(b"DEL", b"list:%04d" % c)
        yield encode(b"RPUSH", b"list:%04d" % c, *[b"item:%04d:%06d:xxxx" % (c, j) for j in range(e)])
        yield encode(b"SADD", b"set:%04d" % c, *[b"member:%04d:%06d" % (c, j) for j in range(e)])
        z = [b"ZADD", b"zset:%04d" % c]
        for j in range(e):
            z += [b"%d" % (j * 7 % 1000003), b"zmember:%04d:%06d" % (c, j)]
        yield encode(*z)

    def _collection_chunks(self, chunk):
        per = max(1, chunk // max(1, self.elements * 4))  # collections per chunk
        for start in range(0, self.collections, per):
            stop = min(start + per, self.collections)
            parts = [cmd for c in range(start, stop) for cmd in self._collection_commands(c)]
            yield len(parts), b"".join(parts)

    def _ttl_chunks(self):
        if self.ttl_keys:
            parts = [encode(b"SET", b"ttl:%04d" % t, self.value(t), b"EXAT", TTL_EXAT)
                     for t in range(self.ttl_keys)]
            yield len(parts), b"".join(parts)

    def chunks(self, chunk=DEFAULT_CHUNK):
        yield from self._string_chunks(chunk)
        yield from self._collection_chunks(chunk)
        yield from self._ttl_chunks()

    def total_commands(self):
        return self.keys + 5 * self.collections + self.ttl_keys


def pipe_command(cli, port):
    return [cli, "-h", "127.0.0.1", "-p", str(port), "--pipe"]


_SUMMARY = re.compile(r"errors:\s*(\d+),\s*replies:\s*(\d+)")


def send_chunk(cli, port, data, timeout=600):
    """One `redis-cli --pipe` run; returns (errors, replies, error lines)."""
    p = spawn_helper(pipe_command(cli, port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise HarnessError(f"redis-cli --pipe to port {port} timed out after {timeout}s")
    finally:
        reap_helper(p)
    outs = out.decode(errors="replace") + "\n" + err.decode(errors="replace")
    m = _SUMMARY.search(outs)
    if not m:
        raise HarnessError(f"redis-cli --pipe to port {port}: no summary (exit {p.returncode}): {outs[-600:]!r}")
    errors, replies = int(m.group(1)), int(m.group(2))
    lines = [ln for ln in outs.splitlines()
             if ln.strip() and not ln.startswith(("All data transferred", "Waiting for the last reply",
                                                  "Last reply received", "errors:"))]
    return errors, replies, lines


def wait_log_room(server, max_used_fraction=0.5, timeout=600):
    """Module: until log_used <= max_used_fraction * log_capacity."""
    deadline = time.monotonic() + timeout
    while True:
        ni = server.nvm_info()
        used, cap = int(ni.get("log_used", 0)), int(ni.get("log_capacity", 1))
        if used <= max_used_fraction * cap:
            return
        if ni.get("replay_state", "running") != "running":
            raise HarnessError(f"{server.name}: replayer not running: {ni.get('replay_state')}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{server.name}: log backlog still {used}/{cap} bytes after {timeout}s")
        time.sleep(0.02)


def wait_folded(server, timeout=1800):
    """Module: until NVM.INFO shows log_records:0 (the replayer has folded everything)."""
    deadline = time.monotonic() + timeout
    while True:
        ni = server.nvm_info()
        if ni.get("log_records") == "0":
            return ni
        if ni.get("replay_state", "running") != "running":
            raise HarnessError(f"{server.name}: replayer not running: {ni.get('replay_state')}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{server.name}: log_records still {ni.get('log_records')} after {timeout}s")
        time.sleep(0.05)


def aof_files_size(server):
    """Bytes in the server's AOF files (Redis 7 multi-part: <dir>/appendonlydir/*.aof)."""
    d = server.dir / "appendonlydir"
    if d.is_dir():
        return sum(f.stat().st_size for f in d.iterdir() if f.name.endswith(".aof"))
    f = server.dir / "appendonly.aof"
    return f.stat().st_size if f.exists() else 0


def wait_aof_written(server, timeout=300):
    """AOF on: until the AOF buffer is empty, no rewrite or fsync is pending and the files
    on disk hold aof_current_size bytes; then one more everysec period for the fsync.
    (A kill -9 loses only what was not yet write()n: the page cache survives it.)"""
    deadline = time.monotonic() + timeout
    while True:
        p = server.info("persistence")
        if p.get("aof_enabled") != "1":
            return 0
        want = int(p.get("aof_current_size", 0))
        have = aof_files_size(server)
        if (p.get("aof_buffer_length", "0") == "0" and p.get("aof_rewrite_in_progress", "0") == "0"
                and p.get("aof_pending_bio_fsync", "0") == "0" and have >= want > 0):
            time.sleep(1.1)
            return have
        if time.monotonic() > deadline:
            raise HarnessError(f"{server.name}: AOF not written after {timeout}s "
                               f"(aof_current_size {want}, on disk {have}, buffer {p.get('aof_buffer_length')})")
        time.sleep(0.1)


class LoadResult:
    def __init__(self):
        self.seconds = 0.0
        self.commands = 0
        self.chunks = 0
        self.resent_chunks = 0  # module: chunks refused with -NVMFULL (backlog) and sent again
        self.fold_seconds = 0.0  # module: wait for log_records:0 after the last chunk
        self.first_errors = []


def load(server, ds, chunk=DEFAULT_CHUNK, max_resends=20):
    """Loads the dataset into a running server (see the module docstring). Returns a
    LoadResult; raises HarnessError on any error reply that is not a transient -NVMFULL."""
    res = LoadResult()
    total = ds.total_commands()
    t0 = time.monotonic()
    next_report = 0.1
    for n, data in ds.chunks(chunk):
        attempts = 0
        while True:
            if server.is_module:
                wait_log_room(server)
            if not server.alive():
                raise server.died()
            errors, replies, lines = send_chunk(server.cli_bin, server.port, data)
            if errors == 0 and replies == n:
                break
            transient = errors > 0 and server.is_module and lines and all(
                "NVMFULL" in ln and "log backlog" in ln for ln in lines)
            if len(res.first_errors) < 5:
                res.first_errors += lines[:5 - len(res.first_errors)]
            if not transient or attempts >= max_resends:
                raise HarnessError(f"{server.name}: loading chunk {res.chunks}: {errors} errors, "
                                   f"{replies}/{n} replies; first lines: {lines[:3]}")
            attempts += 1
            res.resent_chunks += 1
            log(f"{server.name}: chunk {res.chunks} got {errors} -NVMFULL (backlog); waiting for the fold, sending it again")
            wait_folded(server)
        res.chunks += 1
        res.commands += n
        if res.commands / total >= next_report:
            el = time.monotonic() - t0
            log(f"{server.name}: loaded {res.commands}/{total} commands ({res.commands / el:.0f}/s)")
            while next_report <= res.commands / total:
                next_report += 0.1
    res.seconds = time.monotonic() - t0
    if server.is_module:
        t1 = time.monotonic()
        wait_folded(server)
        res.fold_seconds = time.monotonic() - t1
    return res


def dataset_stats(server):
    """used_memory, dbsize and, for the module, key-space figures."""
    st = {"dbsize": server.dbsize()}
    mem = server.info("memory")
    st["used_memory"] = int(mem.get("used_memory", 0))
    st["used_memory_rss"] = int(mem.get("used_memory_rss", 0))
    if server.is_module:
        ni = server.nvm_info()
        for k in ("keyspace_keys", "keyspace_heap_used", "keyspace_heap_capacity", "log_capacity",
                  "log_records", "appended_records", "appended_bytes", "refused_writes",
                  "replay_peak_records_per_sec", "state"):
            st[k] = ni.get(k)
    return st


def check_key0(server, ds):
    v = server.call("GET", ds.key(0))
    if v != ds.value(0):
        raise HarnessError(f"{server.name}: GET {ds.key(0).decode()} returned {v!r:.60}, not the dataset's value")


# --------------------------------------------------------------------------- CLI

# --------------------------------------------------------------------------- harness of restart.py, latency.py

def add_dataset_args(ap):
    ap.add_argument("--keys", type=int, default=DEFAULT_KEYS, help="string keys of the dataset (the scale)")
    ap.add_argument("--collections", type=int, default=DEFAULT_COLLECTIONS, help="hashes, lists, sets, zsets each")
    ap.add_argument("--elements", type=int, default=DEFAULT_ELEMENTS, help="elements per collection")
    ap.add_argument("--ttl-keys", type=int, default=DEFAULT_TTL_KEYS, help="strings with a far-future TTL")
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="commands per redis-cli --pipe run")


def dataset_of(args):
    return Dataset(args.keys, args.collections, args.elements, args.ttl_keys)


def add_harness_args(ap, all_configs, work_dir_holds):
    """The options restart.py and latency.py share (the dataset's included)."""
    add_dataset_args(ap)
    ap.add_argument("--configs", default=",".join(all_configs), help="comma list of configs")
    ap.add_argument("--module", default=str(DEFAULT_MODULE), help="path of the module .so")
    ap.add_argument("--pool-size", default="4gb", help="module pool size")
    ap.add_argument("--pool-dir", default="/dev/shm", help="where the pool file goes (a run dir is made in it)")
    ap.add_argument("--work-dir", help=f"on-disk dir for --dir, {work_dir_holds} "
                    "(default: <repo>/target/bench-tmp, or /var/tmp/redis-nvm-bench if that is tmpfs)")
    ap.add_argument("--server", default="redis-server", help="server binary (e.g. valkey-server)")
    ap.add_argument("--cli", default="redis-cli", help="cli binary (redis-cli --pipe loads the data)")
    ap.add_argument("--out", help="also write the markdown report to this file")


def check_harness_args(ap, args, all_configs, tools):
    """Validates the shared options (ap.error on a bad one); args.configs becomes a list."""
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in all_configs]
    if unknown or not configs:
        ap.error(f"unknown config(s) {unknown}; choose from {','.join(all_configs)}")
    for tool in tools:
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found in PATH")
    args.configs = configs
    args.module = str(Path(args.module).resolve())
    if "nvm" in configs and not Path(args.module).is_file():
        ap.error(f"module not found: {args.module} (cargo build --release)")


class RunDirs:
    """A run's work dir on disk and its pool dir, named after the benchmark and its start."""

    def __init__(self, kind, args):
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.disk_root, self.disk_fs = pick_disk_root(args.work_dir)
        tag = f"{kind}-{self.started.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.disk = self.disk_root / tag
        self.pool = Path(args.pool_dir) / f"redis-nvm-{tag}"
        log(f"work dir {self.disk} ({self.disk_fs}), pool dir {self.pool}")

    def create(self):
        self.disk.mkdir(parents=True, exist_ok=True)
        self.pool.mkdir(parents=True, exist_ok=True)

    def remove(self, cfgs):
        """Kills every helper and server, deletes pools and both dirs (every path out)."""
        kill_helpers()
        for c in cfgs:
            c.server.kill9()
            c.server.remove_pool()
        shutil.rmtree(self.pool, ignore_errors=True)
        shutil.rmtree(self.disk, ignore_errors=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def errors_section(cfgs):
    """The report's "## Errors" lines for configs that failed (none if none did)."""
    problems = [c for c in cfgs if c.error or c.run_errors]
    if not problems:
        return []
    lines = ["## Errors", ""]
    for c in problems:
        for e in ([c.error] if c.error else []) + c.run_errors:
            lines += [f"- {c.name}:", "```", e, "```"]
    lines.append("")
    return lines


def publish(text, out, cfgs):
    """Prints the report (and writes it to `out`); the exit status: 2 if a config failed."""
    print(text)
    if out:
        Path(out).write_text(text + "\n")
        log(f"report written to {out}")
    return 2 if any(c.error or c.run_errors for c in cfgs) else 0


def run_main(main, interrupted="interrupted; servers stopped, files removed"):
    """Runs a benchmark's main with the exit statuses of the README (130 interrupted, 1 harness error)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log(interrupted)
        sys.exit(130)
    except HarnessError as e:
        log(f"ERROR {e}")
        sys.exit(1)


def main():
    global LOG_PREFIX
    LOG_PREFIX = "dataset"
    ap = argparse.ArgumentParser(description="Generate or load the benchmark dataset (see the docstring).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("action", choices=["load", "resp"], help="load into a running server, or print RESP")
    add_dataset_args(ap)
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--cli", default="redis-cli")
    args = ap.parse_args()
    ds = dataset_of(args)
    if args.action == "resp":
        out = sys.stdout.buffer
        for _, data in ds.chunks(args.chunk):
            out.write(data)
        out.flush()
        return 0
    install_signal_handlers()
    srv = Server("target", "stock", ("redis-server", args.cli), "/nonexistent", port=args.port)
    srv.alive = lambda: True  # not our child
    try:
        srv.call("NVM.INFO", timeout=10)
        srv.kind = "module"
    except HarnessError:  # -ERR unknown command: no module
        srv.kind = "stock"
    log(f"loading {ds.describe()} into port {args.port} ({'module' if srv.is_module else 'no module'})")
    try:
        res = load(srv, ds, args.chunk)
    finally:
        kill_helpers()
    st = dataset_stats(srv)
    print(f"loaded {res.commands} commands in {res.seconds:.1f}s (+{res.fold_seconds:.1f}s fold), "
          f"{res.resent_chunks} chunks re-sent; expected keys {ds.expected_keys()}, dbsize {st['dbsize']}")
    for k, v in st.items():
        print(f"{k}: {v}")
    return 0 if st["dbsize"] == ds.expected_keys() else 2


if __name__ == "__main__":
    run_main(main, interrupted="interrupted")
