#!/usr/bin/env python3
"""Redis's own test suite against redis-server 7.0.15 with the module loaded.

Role: fetches the test tree of Debian's `redis` source package (the upstream
`redis_7.0.15.orig.tar.gz`; only `tests/` and `runtest` are used, nothing is compiled),
then runs every unit in external-server mode (`./runtest --host --port --single UNIT`),
each against a fresh server with its own port, directory and pool. Tests that cannot pass
against any external server are listed, with the reason, in
`tests/redis-suite/skip.txt`; `--stock --check-skips` shows that stock Redis fails each of
them too. Prints one line per unit and `N passed, N failed, N skipped`; exits 1 on any
failure (a `[err]`, an `[exception]`, a server that died, or a module that ends a unit with
`in_doubt_writes` above 0).

  python3 scripts/redis_suite.py                   # the module (what `make test` runs)
  python3 scripts/redis_suite.py --stock           # the same units on stock redis-server
  python3 scripts/redis_suite.py --stock --check-skips   # each skipped test fails on stock
  python3 scripts/redis_suite.py --units unit/type/string,unit/expire

Invariants: nothing outside `target/redis-suite` and the per-unit pool on /dev/shm is
written, except a `deb-src` apt source added once when the source package must be
fetched (as `install-deps.sh` adds bookworm-backports); servers and pools are removed on
every exit path. Standard library only (Python 3.11).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "target" / "redis-suite"
VERSION = "7.0.15"
TREE = CACHE / f"redis-{VERSION}"
TARBALL = CACHE / f"redis_{VERSION}.orig.tar.gz"
MODULE = REPO / "target" / "release" / "libredis_nvm.so"
SKIP_FILE = REPO / "tests" / "redis-suite" / "skip.txt"
SRC_LIST = Path("/etc/apt/sources.list.d/redis-nvm-deb-src.sources")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg):
    print(f"[redis-suite] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------- fetching

def fetch():
    """The test tree, unpacked under target/ (fetched from Debian's archive once)."""
    if (TREE / "runtest").is_file():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    if not TARBALL.is_file():
        ensure_deb_src()
        log(f"fetching Debian's redis {VERSION} source package")
        run(["apt-get", "source", "--download-only", "-q", "redis"], cwd=CACHE,
            stdout=subprocess.DEVNULL)
        if not TARBALL.is_file():
            got = ", ".join(p.name for p in CACHE.glob("redis_*.orig.tar.*")) or "nothing"
            raise SystemExit(f"redis-suite: expected {TARBALL.name}, Debian gave {got}")
    log(f"unpacking tests/ and runtest from {TARBALL.name}")
    with tarfile.open(TARBALL) as t:
        prefix = f"redis-{VERSION}/"
        members = [m for m in t.getmembers()
                   if m.name.startswith(prefix + "tests/") or m.name == prefix + "runtest"]
        t.extractall(CACHE, members=members, filter="data")
    # The suite runs src/redis-cli and src/redis-benchmark: the installed ones.
    src = TREE / "src"
    src.mkdir(exist_ok=True)
    for tool in ("redis-cli", "redis-benchmark", "redis-server"):
        path = shutil.which(tool)
        if path and not (src / tool).exists():
            (src / tool).symlink_to(path)


def ensure_deb_src():
    """A deb-src entry for the suites apt already uses (Debian 12's deb822 file)."""
    if SRC_LIST.exists():
        return
    main = Path("/etc/apt/sources.list.d/debian.sources")
    if not main.is_file():
        raise SystemExit("redis-suite: no /etc/apt/sources.list.d/debian.sources to derive a "
                         "deb-src entry from; add one for bookworm by hand")
    text = re.sub(r"^Types:.*$", "Types: deb-src", main.read_text(), flags=re.M)
    log(f"adding {SRC_LIST} (deb-src of {main.name}) and running apt-get update")
    SRC_LIST.write_text(text)
    run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)


def all_units():
    text = (TREE / "tests" / "test_helper.tcl").read_text()
    block = re.search(r"set ::all_tests \{(.*?)\}", text, re.S).group(1)
    return block.split()


# --------------------------------------------------------------------------- skips

def read_skips():
    """[(unit, test name, reason)] from skip.txt: `unit | test name | reason` lines."""
    skips = []
    for line in SKIP_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        unit, name, reason = (part.strip() for part in line.split("|", 2))
        skips.append((unit, name, reason))
    return skips


# --------------------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, stock, binary, work, index):
        self.port = free_port()
        # Named by the unit's index: a port can come back for a later unit.
        self.dir = work / f"{index:03d}-{self.port}"
        self.dir.mkdir(parents=True)
        self.pool = Path(f"/dev/shm/redis-nvm-suite-{os.getpid()}-{index:03d}.nvm")
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--logfile", str(self.dir / "server.log"), "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--enable-debug-command", "yes",
               "--enable-module-command", "yes"]
        if not stock:
            cmd += ["--loadmodule", str(MODULE), "path", str(self.pool), "size", "512mb",
                    "mode", "emulate"]
        self.stock = stock
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start-up: {self.log_tail()}")
            if self.call(b"PING") == b"+PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer PING: {self.log_tail()}")

    def call(self, *args):
        """One command on a fresh connection: a status line or a bulk string's bytes
        (b'' on any error)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(b"*%d\r\n" % len(args)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
                f = s.makefile("rb")
                line = f.readline().rstrip(b"\r\n")
                if line.startswith(b"$") and int(line[1:]) >= 0:
                    return f.read(int(line[1:]))
                return line
        except (OSError, ValueError):
            return b""

    def in_doubt(self):
        """in_doubt_writes of NVM.INFO, or None for stock."""
        if self.stock:
            return None
        info = self.call(b"NVM.INFO").decode(errors="replace")
        m = re.search(r"in_doubt_writes:(\d+)", info)
        return int(m.group(1)) if m else -1

    def log_tail(self, n=10):
        try:
            return "".join((self.dir / "server.log").read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pool.unlink(missing_ok=True)


# --------------------------------------------------------------------------- running

def run_unit(unit, server, skipfile, only=()):
    cmd = ["./runtest", "--host", "127.0.0.1", "--port", str(server.port), "--single", unit,
           "--timeout", "600", "--skipfile", str(skipfile)]
    for name in only:
        cmd += ["--only", name]
    p = subprocess.run(cmd, cwd=TREE, capture_output=True, text=True, errors="replace")
    out = ANSI.sub("", p.stdout + p.stderr)
    counts = {k: len(re.findall(rf"^\[{k}\]", out, re.M)) for k in ("ok", "err", "skip")}
    counts["exception"] = len(re.findall(r"^\[exception\]", out, re.M))
    failed = re.findall(r"^\[(?:err|exception)\]: (.*)$", out, re.M)
    return counts, failed, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stock", action="store_true", help="run on stock redis-server (no module)")
    ap.add_argument("--check-skips", action="store_true",
                    help="run only the skipped tests (without the skip file): each must fail")
    ap.add_argument("--units", help="comma-separated units (default: every unit)")
    ap.add_argument("--server", default="redis-server")
    ap.add_argument("--keep", action="store_true", help="keep the servers' directories")
    args = ap.parse_args()
    if not args.stock and not MODULE.is_file():
        raise SystemExit(f"redis-suite: build the module first ({MODULE} is missing)")
    fetch()
    skips = read_skips()
    work = CACHE / f"run-{os.getpid()}"
    work.mkdir(parents=True)
    skipfile = work / "skipfile"
    skipfile.write_text("" if args.check_skips else "\n".join(n for _, n, _ in skips) + "\n")
    units = args.units.split(",") if args.units else all_units()
    if args.check_skips:
        units = sorted({u for u, _, _ in skips})
    what = "stock" if args.stock else "module"
    log(f"{len(units)} units against {args.server} ({what}), {len(skips)} skipped tests")
    totals = {"ok": 0, "err": 0, "exception": 0, "skip": 0}
    problems = []
    started = time.monotonic()
    servers = []

    def cleanup(*_):
        for s in servers:
            s.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(130)))
    try:
        for index, unit in enumerate(units):
            t0 = time.monotonic()
            server = Server(args.stock, args.server, work, index)
            servers.append(server)
            only = [n for u, n, _ in skips if u == unit] if args.check_skips else []
            counts, failed, out = run_unit(unit, server, skipfile, only)
            died = server.proc.poll() is not None
            doubt = server.in_doubt() if not died else None
            server.stop()
            servers.remove(server)
            for k in totals:
                totals[k] += counts[k]
            line = (f"{unit}: {counts['ok']} ok, {counts['err']} err, "
                    f"{counts['exception']} exception, {counts['skip']} skipped "
                    f"({time.monotonic() - t0:.0f} s)")
            if args.check_skips:
                # Every skipped test must fail here too (err or exception), none pass.
                expected = len(only)
                fails = counts["err"] + counts["exception"]
                if fails == 0 or counts["ok"] > 0:
                    problems.append(f"{unit}: a skipped test does not fail on stock "
                                    f"({counts['ok']} ok, {fails} failed of {expected})")
                print(line, flush=True)
                continue
            print(line, flush=True)
            for f in failed:
                print(f"    FAILED: {f}", flush=True)
                problems.append(f"{unit}: {f}")
            if died:
                problems.append(f"{unit}: the server died; log:\n{server.log_tail()}")
            if doubt not in (None, 0):
                problems.append(f"{unit}: in_doubt_writes {doubt}")
            if counts["exception"] and not failed:
                problems.append(f"{unit}: the test client raised an exception:\n{out[-2000:]}")
    finally:
        cleanup()
    passed = totals["ok"]
    failed = totals["err"] + totals["exception"]
    print(f"{passed} passed, {failed} failed, {totals['skip']} skipped "
          f"({len(units)} units, {time.monotonic() - started:.0f} s, {what})")
    for p in problems:
        print(f"PROBLEM: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
