#!/usr/bin/env python3
"""What each data type costs in the NVM pool, against what it costs in Redis's RAM.

Role: sizing. For an operator who knows how much RAM (used_memory) a dataset takes, it
shows how big the NVM pool must be: per data type, the growth of the module's key-space
heap (NVM.INFO keyspace_heap_used) next to the growth of INFO memory used_memory for the
same data. Servers: one per row, started afresh (a fresh pool, nothing else loaded), on a
free 127.0.0.1 port, in its own dir under a temp dir:
  redis-server --save "" --appendonly no --loadmodule <so> path /dev/shm/<unique>.nvm
               size 4gb mode emulate
Rows (--scale multiplies the key counts, not the elements per key, so Redis keeps the
same encodings; --rows picks some):
  strings    200,000 SET s:<i> <100-byte value>
  strings1k   50,000 SET b:<i> <1000-byte value>
  hashes       2,000 hashes h:<i>, 100 fields f<j> = <20-byte value> (HSET, 25 fields a command)
  sets         2,000 sets t:<i>, 100 members m<j> of 10 bytes (SADD)
  zsets        2,000 zsets z:<i>, 100 members m<j> with score j (ZADD)
  lists        2,000 lists l:<i>, 100 elements of 20 bytes (RPUSH)
  streams      2,000 streams x:<i>, 100 entries each (XADD x:<i> * f <20-byte value>)
Values are pseudo-random alphanumerics (they do not compress). Per row: INFO memory
used_memory and NVM.INFO keyspace_heap_used are read on the fresh server; the row's data
is sent as RESP to `redis-cli -p PORT --pipe` in chunks (before each chunk the script
waits until the log backlog is at most half of log_capacity; every summary must say
errors: 0); then it waits until NVM.INFO log_backlog_bytes is 0 (all folded; at most
--fold-timeout 120 s) and reads both figures again. DBSIZE and keyspace_keys must equal
the row's key count, and NVM.INFO refused_writes, replay_apply_errors and in_doubt_writes
must be 0 (else the row fails). Reported per row: keys, elements, delta used_memory, delta
keyspace_heap_used, the ratio pool / used_memory, pool and RAM bytes per element and per
key, plus load and fold times, Redis's encoding and the pool file's allocated bytes.

Standard library only (Python 3.11). Exit status: 0 when every row completed, 2 when a
row failed (server error, pipe errors, timeout; the report is still printed and the
other rows still run), 1 on a harness error, 130 when interrupted. Servers, redis-cli
helpers, pool files and the temp dir are removed on every path out.
"""

import argparse
import datetime
import os
import random
import shlex
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
from dataset import HarnessError, log  # noqa: E402

POOL_SIZE = "4gb"
PER_KEY = 100  # elements per collection key (fixed: --scale does not change it)
HSET_FIELDS = 25  # fields per HSET command ("HSET in chunks")
CHUNK_BYTES = 4 << 20  # RESP bytes per redis-cli --pipe run (at most)
CHUNK_CMDS = 20_000  # commands per redis-cli --pipe run (at most)
LOG_ROOM = 0.5  # before each chunk: log_used <= LOG_ROOM * log_capacity

# --------------------------------------------------------------------------- values

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_FILL = bytes(random.Random(20240601).choice(_ALNUM) for _ in range(1 << 16))


def val(i, n):
    """n pseudo-random alphanumeric bytes, different for nearby i (the same every run)."""
    start = (i * 7919) % (len(_FILL) - n)
    return _FILL[start:start + n]


# --------------------------------------------------------------------------- rows

class Row:
    def __init__(self, name, keys, per_key, shown, commands):
        self.name = name
        self.base_keys = keys
        self.per_key = per_key  # elements per key
        self.shown = shown  # the commands as the report shows them
        self._commands = commands  # (i) -> list of encoded commands for key i
        self.keys = keys
        # results
        self.error = None
        self.run_errors = []
        self.res = None
        self.command = None  # the server's command line

    @property
    def elements(self):
        return self.keys * self.per_key

    def commands(self):
        for i in range(self.keys):
            yield from self._commands(i)


def _strings(prefix, n):
    return lambda i: [D.encode(b"SET", b"%s:%d" % (prefix, i), val(i, n))]


def _hash(i):
    key = b"h:%d" % i
    out = []
    for s in range(0, PER_KEY, HSET_FIELDS):
        args = [b"HSET", key]
        for j in range(s, min(s + HSET_FIELDS, PER_KEY)):
            args += [b"f%d" % j, val(i * PER_KEY + j, 20)]
        out.append(D.encode(*args))
    return out


def _set(i):
    return [D.encode(b"SADD", b"t:%d" % i, *[b"m%09d" % j for j in range(PER_KEY)])]


def _zset(i):
    args = [b"ZADD", b"z:%d" % i]
    for j in range(PER_KEY):
        args += [b"%d" % j, b"m%d" % j]
    return [D.encode(*args)]


def _list(i):
    return [D.encode(b"RPUSH", b"l:%d" % i, *[val(i * PER_KEY + j, 20) for j in range(PER_KEY)])]


def _stream(i):
    key = b"x:%d" % i
    return [D.encode(b"XADD", key, b"*", b"f", val(i * PER_KEY + j, 20)) for j in range(PER_KEY)]


def make_rows():
    return [
        Row("strings", 200_000, 1, "SET s:<i> <100 bytes>", _strings(b"s", 100)),
        Row("strings1k", 50_000, 1, "SET b:<i> <1000 bytes>", _strings(b"b", 1000)),
        Row("hashes", 2_000, PER_KEY, f"HSET h:<i> f<j> <20 bytes> ... ({HSET_FIELDS} fields a command, "
            f"{PER_KEY} fields)", _hash),
        Row("sets", 2_000, PER_KEY, f"SADD t:<i> m<j as 9 digits> ... ({PER_KEY} members of 10 bytes)", _set),
        Row("zsets", 2_000, PER_KEY, f"ZADD z:<i> <j> m<j> ... ({PER_KEY} members)", _zset),
        Row("lists", 2_000, PER_KEY, f"RPUSH l:<i> <20 bytes> ... ({PER_KEY} elements)", _list),
        Row("streams", 2_000, PER_KEY, f"XADD x:<i> * f <20 bytes>, {PER_KEY} times a key", _stream),
    ]


def chunks(row):
    """(commands, RESP bytes) chunks of at most CHUNK_CMDS commands / about CHUNK_BYTES."""
    parts, size = [], 0
    for c in row.commands():
        parts.append(c)
        size += len(c)
        if size >= CHUNK_BYTES or len(parts) >= CHUNK_CMDS:
            yield len(parts), b"".join(parts)
            parts, size = [], 0
    if parts:
        yield len(parts), b"".join(parts)


# --------------------------------------------------------------------------- measuring

def snapshot(srv):
    mem = srv.info("memory")
    ni = srv.nvm_info()
    return {"used_memory": int(mem["used_memory"]), "heap": int(ni["keyspace_heap_used"]),
            "keyspace_keys": int(ni.get("keyspace_keys", 0)), "log_capacity": int(ni.get("log_capacity", 0)),
            "mode": ni.get("mode"), "refused_writes": int(ni.get("refused_writes", 0)),
            "replay_apply_errors": int(ni.get("replay_apply_errors", 0)),
            "in_doubt_writes": ni.get("in_doubt_writes")}


def wait_backlog_empty(srv, timeout):
    """Until NVM.INFO log_backlog_bytes is 0 (the replayer has folded everything)."""
    deadline = time.monotonic() + timeout
    while True:
        ni = srv.nvm_info()
        if ni.get("log_backlog_bytes") == "0":
            return
        if ni.get("replay_state", "running") != "running":
            raise HarnessError(f"{srv.name}: replayer not running: {ni.get('replay_state')}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{srv.name}: log_backlog_bytes still {ni.get('log_backlog_bytes')} "
                               f"({ni.get('log_records')} records) after {timeout:g}s")
        time.sleep(0.05)


def load(srv, row, args):
    """Sends the row's RESP in chunks to redis-cli --pipe; returns (commands, bytes, seconds)."""
    sent = nbytes = 0
    t0 = time.monotonic()
    for n, data in chunks(row):
        D.wait_log_room(srv, LOG_ROOM, timeout=args.fold_timeout)
        if not srv.alive():
            raise srv.died()
        errors, replies, lines = D.send_chunk(args.cli, srv.port, data, timeout=args.pipe_timeout)
        if errors or replies != n:
            raise HarnessError(f"{srv.name}: redis-cli --pipe after {sent} commands: errors: {errors}, "
                               f"replies: {replies}/{n}; first lines: {lines[:3]}")
        sent += n
        nbytes += len(data)
    return sent, nbytes, time.monotonic() - t0


def run_row(row, args, work, servers):
    """A fresh server and pool for the row: measure, load, fold, measure; always cleaned up."""
    pool = Path(args.pool_dir) / f"redis-nvm-capacity-{row.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.nvm"
    srv = D.Server(f"capacity-{row.name}", "module", (args.server, args.cli), work, pool=pool,
                   module=args.module, pool_size=POOL_SIZE)
    servers.append(srv)
    try:
        srv.start(args.start_timeout)
        row.command = shlex.join(srv.command())
        before = snapshot(srv)
        log(f"{row.name}: {row.keys} keys, {row.elements} elements; before: used_memory "
            f"{before['used_memory']}, keyspace_heap_used {before['heap']}")
        cmds, nbytes, load_s = load(srv, row, args)
        t1 = time.monotonic()
        wait_backlog_empty(srv, args.fold_timeout)
        fold_s = time.monotonic() - t1
        after = snapshot(srv)
        dbsize = srv.dbsize()
        if dbsize != row.keys:
            raise HarnessError(f"{srv.name}: DBSIZE {dbsize}, expected {row.keys}")
        if after["keyspace_keys"] - before["keyspace_keys"] != row.keys:
            raise HarnessError(f"{srv.name}: NVM.INFO keyspace_keys grew by "
                               f"{after['keyspace_keys'] - before['keyspace_keys']}, expected {row.keys}")
        if after["refused_writes"] or after["replay_apply_errors"]:
            raise HarnessError(f"{srv.name}: refused_writes {after['refused_writes']}, "
                               f"replay_apply_errors {after['replay_apply_errors']}")
        if after["in_doubt_writes"] != "0":
            # An acknowledged write the module could not make durable: the row's figures
            # would describe a pool that lost data.
            raise HarnessError(f"{srv.name}: in_doubt_writes {after['in_doubt_writes']}")
        first_key = {"strings": "s:0", "strings1k": "b:0", "hashes": "h:0", "sets": "t:0", "zsets": "z:0",
                     "lists": "l:0", "streams": "x:0"}[row.name]
        enc = D.text(srv.call("OBJECT", "ENCODING", first_key))
        st = pool.stat()
        row.res = {"before": before, "after": after, "commands": cmds, "resp_bytes": nbytes, "load_s": load_s,
                   "fold_s": fold_s, "d_ram": after["used_memory"] - before["used_memory"],
                   "d_pool": after["heap"] - before["heap"], "encoding": enc,
                   "pool_alloc": st.st_blocks * 512, "mode": after["mode"], "log_capacity": after["log_capacity"]}
        r = row.res
        log(f"{row.name}: loaded {cmds} commands in {load_s:.1f}s, folded {fold_s:.1f}s later; "
            f"delta used_memory {r['d_ram']}, delta keyspace_heap_used {r['d_pool']}"
            + (f" ({r['d_pool'] / r['d_ram']:.2f}x)" if r["d_ram"] > 0 else ""))
    except (HarnessError, OSError, TimeoutError, ConnectionError, KeyError, ValueError) as e:
        row.run_errors.append(f"{row.name}: {e}")
        log(f"ERROR {row.name}: {e}")
    finally:
        D.kill_helpers()
        srv.stop()
        srv.remove_pool()
        shutil.rmtree(srv.dir, ignore_errors=True)


# --------------------------------------------------------------------------- report

def fint(v):
    return "-" if v is None else f"{v:,.0f}"


def per(a, b, digits=1):
    return "-" if a is None or not b else f"{a / b:,.{digits}f}"


def report(args, rows, command_line, started, finished, pool_fs):
    lines = []
    add = lines.append
    add("# redis-nvm: pool capacity per data type")
    add("")
    add(f"- command: `{command_line}`")
    add(f"- date: {started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- `{args.server} --version`: {D.run_version(args.server)}")
    so = Path(args.module)
    built = datetime.datetime.fromtimestamp(so.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
    caps = sorted({str(r.res["log_capacity"]) for r in rows if r.res})
    modes = sorted({str(r.res["mode"]) for r in rows if r.res})
    add(f"- module: `{args.module}` (built {built}), NVM.INFO mode: {', '.join(modes) or '-'}, "
        f"log_capacity {', '.join(caps) or '-'} bytes")
    add(f"- note: emulation mode, pool on {args.pool_dir} ({pool_fs}), size {POOL_SIZE}; one fresh server "
        f"and pool per row, `--save \"\" --appendonly no`")
    add(f"- scale: {args.scale:g} (key counts; {PER_KEY} elements per collection key at every scale)")
    add("")
    add("## Results")
    add("")
    add("| row | keys | elements | Δ used_memory | Δ keyspace_heap_used (pool) | pool / used_memory "
        "| pool B/element | pool B/key | RAM B/element |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        r = row.res
        if r is None:
            add(f"| {row.name} | {row.keys:,} | {row.elements:,} | FAILED | FAILED | - | - | - | - |")
            continue
        ratio = f"{r['d_pool'] / r['d_ram']:.2f}x" if r["d_ram"] > 0 else "-"
        add(f"| {row.name} | {row.keys:,} | {row.elements:,} | {fint(r['d_ram'])} | {fint(r['d_pool'])} "
            f"| {ratio} | {per(r['d_pool'], row.elements)} | {per(r['d_pool'], row.keys)} "
            f"| {per(r['d_ram'], row.elements)} |")
    add("")
    add("Δ: after the load and the fold (NVM.INFO `log_backlog_bytes:0`) minus the fresh server. `used_memory` "
        "is INFO memory's figure of the server with the module loaded (Redis's RAM); `keyspace_heap_used` is the "
        "module's key-space heap in the pool (the log ring, `log_capacity`, comes on top of it, fixed). For "
        "strings an element is a key. To size a pool: heap needed = Σ (elements × pool B/element), plus the log "
        "ring and free room for fragmentation and growth.")
    add("")
    add("## Details")
    add("")
    add("| row | commands | RESP bytes | load s | fold s after load | encoding (key 0) | used_memory before "
        "| keyspace_heap_used before | pool file allocated after |")
    add("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in rows:
        r = row.res
        if r is None:
            add(f"| {row.name} | - | - | - | - | - | - | - | - |")
            continue
        add(f"| {row.name} | {r['commands']:,} | {r['resp_bytes']:,} | {r['load_s']:.1f} | {r['fold_s']:.1f} "
            f"| {r['encoding']} | {r['before']['used_memory']:,} | {r['before']['heap']:,} "
            f"| {D.fmt_bytes(r['pool_alloc'])} |")
    add("")
    add("`pool file allocated`: the pool file's allocated blocks (st_blocks × 512) on its filesystem. The module "
        "reserves the whole `size` with posix_fallocate when it creates the pool, so this is the pool's size, "
        "whatever the data: `keyspace_heap_used` is the part the data takes.")
    add("")
    add("## Commands")
    add("")
    add("```")
    shown = next((r.command for r in rows if r.command), None)
    if shown:
        add(f"# per row (a fresh port, --dir and pool file each):")
        add(shown)
    add(f"# the row's data: redis-cli -h 127.0.0.1 -p PORT --pipe, chunks of <= {CHUNK_CMDS} commands / "
        f"~{CHUNK_BYTES >> 20} MiB, each after log_used <= {LOG_ROOM:g} x log_capacity:")
    for row in rows:
        add(f"#   {row.name}: {row.shown}, x{row.keys} keys")
    add("# then NVM.INFO until log_backlog_bytes:0; INFO memory, NVM.INFO, DBSIZE, OBJECT ENCODING <key 0>")
    add("```")
    add("")
    lines += D.errors_section(rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args():
    names = [r.name for r in make_rows()]
    ap = argparse.ArgumentParser(
        description="What each data type costs in the NVM pool (keyspace_heap_used) against what it costs in "
                    "Redis's RAM (used_memory): one fresh server and pool per row.",
        epilog="Memory: one server at a time, a few hundred MB of DRAM, plus the 4 GB pool file on --pool-dir "
               "(allocated in full with posix_fallocate, so --pool-dir needs 4 GB free). Exit 0 = every row completed, 2 = a row failed, "
               "1 = harness error, 130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rows", help=f"comma list of rows to run (from {','.join(names)}); default all")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every row's key count")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--module", default=str(D.DEFAULT_MODULE), help="path of the module .so")
    ap.add_argument("--server", default="redis-server", help="server binary")
    ap.add_argument("--cli", default="redis-cli", help="cli binary (redis-cli --pipe loads the data)")
    ap.add_argument("--pool-dir", default="/dev/shm", help="where the pool files go")
    ap.add_argument("--fold-timeout", type=float, default=120,
                    help="seconds to wait for log_backlog_bytes:0 (and for log room before a chunk)")
    ap.add_argument("--pipe-timeout", type=float, default=300, help="seconds one redis-cli --pipe run may take")
    ap.add_argument("--start-timeout", type=float, default=60, help="seconds a server start may take")
    args = ap.parse_args()
    if not args.scale > 0:
        ap.error("--scale must be > 0")
    for tool in (args.server, args.cli):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found in PATH")
    args.module = str(Path(args.module).resolve())
    if not Path(args.module).is_file():
        ap.error(f"module not found: {args.module} (cargo build --release)")
    if not Path(args.pool_dir).is_dir():
        ap.error(f"--pool-dir {args.pool_dir} is not a directory")
    rows = make_rows()
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in names]
        if unknown or not wanted:
            ap.error(f"unknown row(s) {unknown}; rows: {','.join(names)}")
        rows = [r for r in rows if r.name in wanted]
    for r in rows:
        r.keys = max(1, round(r.base_keys * args.scale))
    return args, rows


def main():
    D.LOG_PREFIX = "capacity"
    command_line = shlex.join(["python3"] + sys.argv)
    args, rows = parse_args()
    D.install_signal_handlers()
    started = datetime.datetime.now(datetime.timezone.utc)
    pool_fs = D.fs_type(args.pool_dir)
    work = None
    servers = []
    try:
        work = Path(tempfile.mkdtemp(prefix="redis-nvm-capacity-"))
        log(f"work dir {work}, pools in {args.pool_dir} ({pool_fs})")
        for row in rows:
            run_row(row, args, work, servers)
    finally:
        D.kill_helpers()
        for s in servers:
            s.kill9()
            s.remove_pool()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, rows, command_line, started, finished, pool_fs)
    return D.publish(text, args.out, rows)


if __name__ == "__main__":
    D.run_main(main)
