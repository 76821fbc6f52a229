#!/usr/bin/env python3
"""Write commands on big values: redis-nvm against stock Redis, side by side.

Role: checks that the module logs O(change), not O(value), for writes to big values,
and shows what the capture costs the main thread. Servers (both with
--proto-max-bulk-len 1gb, one at a time, freshly started every round):
  nvm    module, pool on /dev/shm (--pool-dir), mode emulate, size 2gb, default log
         size, --save "" --appendonly no
  stock  --save "" --appendonly no
Per row: the row's value is built first (not measured), the same way on both servers,
through real commands sent with `redis-cli --pipe` (its summary must say errors: 0):
  str, str2  SET of a 5 MiB string (pseudo-random bytes)
  bits       SETBIT bits 134217727 1 (a 16 MiB bitmap)
  list       RPUSH list in chunks of 1000, 100k elements e<i%500>
  set, set2  SADD, 100k members m<i> / m<i+50000>, in chunks of 1000
  zset       ZADD, 100k members m<i> with score i
  hash       HSET, 100k fields f<i> = v<i>
(each key is deleted and built again for every row that uses it; the module then waits
for NVM.INFO log_records:0, so the replayer is quiet when the row starts). Then the row's
command runs N times, one at a time on one connection (P1, each reply awaited), and per
op the script records:
  round trip       client time from sending the command to its reply (median, p99)
  usec_per_call    the server's own time in the command: delta usec / delta calls of
                   the command's INFO commandstats line over the N calls (the main
                   thread's time; the module's capture runs inside the command, so it is
                   included, except for keys the module logs at BEFORE_SLEEP)
  log bytes/op     module: delta NVM.INFO appended_bytes / N (records + blobs), and the
                   blob_bytes delta
Rounds (--runs, default 3): every round starts both servers afresh (fresh pool, values
rebuilt), one server at a time, the first server alternating; medians over rounds are
reported. Targets per row: log bytes/op < 1024 + the command's argument bytes, and module
usec_per_call <= 2x stock. At the end of every module run NVM.INFO in_doubt_writes must
be 0 (a WARNING otherwise).

Standard library only (Python 3.11). Exit status: 0 when the report is complete
(whatever the verdicts), 2 when a server or a row failed, 1 on a harness error, 130
when interrupted. Servers, helpers, pools and work dirs are removed on every path.
"""

import argparse
import datetime
import math
import os
import random
import shlex
import shutil
import socket
import sys
import time
import types
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
from dataset import HarnessError, RespError, log  # noqa: E402

KINDS = ["nvm", "stock"]
POOL_SIZE = "2gb"
MAX_BULK = ["--proto-max-bulk-len", "1gb"]
MiB = 1 << 20
STRING_LEN = 5 * MiB
BIG_LEN = 80 * MiB
ELEMENTS = 100_000
CHUNK = 1000
LOG_SLACK = 1024  # target: log bytes/op < LOG_SLACK + argument bytes/op
USEC_RATIO = 2.0  # target: module usec_per_call <= USEC_RATIO x stock
OP_TIMEOUT = 300.0


# --------------------------------------------------------------------------- values

_VALUES = {}


def value(n, seed):
    """n pseudo-random bytes, the same on both servers and every round."""
    key = (n, seed)
    if key not in _VALUES:
        _VALUES[key] = random.Random(seed).randbytes(n)
    return _VALUES[key]


def build_commands(key):
    """The commands (lists of args) that build one key from nothing."""
    if key in ("str", "str2"):
        return [["SET", key, value(STRING_LEN, 5)]]
    if key == "bits":
        return [["SETBIT", "bits", 134217727, 1]]
    out = []
    for start in range(0, ELEMENTS, CHUNK):
        r = range(start, start + CHUNK)
        if key == "list":
            out.append(["RPUSH", "list"] + [f"e{i % 500}" for i in r])
        elif key == "set":
            out.append(["SADD", "set"] + [f"m{i}" for i in r])
        elif key == "set2":
            out.append(["SADD", "set2"] + [f"m{i + 50_000}" for i in r])
        elif key == "zset":
            out.append(["ZADD", "zset"] + [x for i in r for x in (i, f"m{i}")])
        elif key == "hash":
            out.append(["HSET", "hash"] + [x for i in r for x in (f"f{i}", f"v{i}")])
        else:
            raise HarnessError(f"no builder for key {key!r}")
    return out


BUILD_DESCRIPTION = {
    "str": "SET str <5 MiB>",
    "str2": "SET str2 <5 MiB>",
    "bits": "SETBIT bits 134217727 1",
    "list": "RPUSH list e<i%500> x100k (chunks of 1000)",
    "set": "SADD set m<i> x100k (chunks of 1000)",
    "set2": "SADD set2 m<i+50000> x100k (chunks of 1000)",
    "zset": "ZADD zset i m<i> x100k (chunks of 1000)",
    "hash": "HSET hash f<i> v<i> x100k (chunks of 1000)",
}


class Row:
    def __init__(self, name, n, keys, command, shown, note=""):
        self.name = name
        self.n = n
        self.keys = keys  # keys built before the row (deleted first)
        self.command = command  # i -> list of args
        self.shown = shown  # the command as the report shows it
        self.note = note

    @property
    def stat(self):
        return f"cmdstat_{self.command(0)[0].lower()}"

    def commands(self):
        return [self.command(i) for i in range(self.n)]


ROWS = [
    Row("SET 80 MB value", 3, [], lambda i: ["SET", "big80", value(BIG_LEN, 80)], "SET big80 <80 MiB>"),
    Row("APPEND 1 KB to a 5 MB string", 50, ["str"], lambda i: ["APPEND", "str", b"k" * 1024],
        "APPEND str <1024 bytes>"),
    Row("SETRANGE on a 5 MB string", 50, ["str2"], lambda i: ["SETRANGE", "str2", i * 99991, "range"],
        "SETRANGE str2 <i*99991> range"),
    Row("SETBIT on a 16 MB bitmap", 20, ["bits"], lambda i: ["SETBIT", "bits", i * 6700417 % 134217728, 1],
        "SETBIT bits <i*6700417 % 134217728> 1"),
    Row("BITFIELD SET on a 16 MB bitmap", 20, ["bits"],
        lambda i: ["BITFIELD", "bits", "SET", "u8", i * 5000011, 200], "BITFIELD bits SET u8 <i*5000011> 200"),
    Row("LSET on a 100k list", 20, ["list"], lambda i: ["LSET", "list", i * 4999 - 50000, "set"],
        "LSET list <i*4999-50000> set"),
    Row("LREM on a 100k list", 20, ["list"], lambda i: ["LREM", "list", 1, f"e{i}"], "LREM list 1 e<i>"),
    Row("LINSERT on a 100k list", 20, ["list"], lambda i: ["LINSERT", "list", "AFTER", f"e{499 - i}", "ins"],
        "LINSERT list AFTER e<499-i> ins"),
    Row("SPOP (one member) on a 100k set", 20, ["set"], lambda i: ["SPOP", "set"], "SPOP set",
        note="random member: replies are not compared"),
    Row("ZREMRANGEBYRANK z 0 0 on a 100k zset", 20, ["zset"], lambda i: ["ZREMRANGEBYRANK", "zset", 0, 0],
        "ZREMRANGEBYRANK zset 0 0"),
    Row("SINTERSTORE into a new 100k set", 5, ["set", "set2"],
        lambda i: ["SINTERSTORE", f"inter{i}", "set", "set2"], "SINTERSTORE inter<i> set set2",
        note="the result has 50k members"),
    Row("SUNIONSTORE into a new set", 5, ["set", "set2"],
        lambda i: ["SUNIONSTORE", f"union{i}", "set", "set2"], "SUNIONSTORE union<i> set set2",
        note="the result has 150k members"),
    Row("HSET one field on a 100k hash (control)", 20, ["hash"], lambda i: ["HSET", "hash", f"f{i * 4999}", "new"],
        "HSET hash f<i*4999> new", note="overwrites an existing field"),
]


def arg_bytes(args):
    """Bytes of a command's arguments, its name included (what the test suite counts)."""
    return sum(len(a if isinstance(a, bytes) else str(a).encode()) for a in args)


# --------------------------------------------------------------------------- measuring

class Config:
    """One server kind across the rounds (errors as restart.py / latency.py keep them)."""

    def __init__(self, name):
        self.name = name
        self.error = None
        self.run_errors = []
        self.results = {}  # row name -> list of per-round dicts
        self.final = []  # module: per round, NVM.INFO figures at the end
        self.commands = []  # server command lines, one per round


def make_server(kind, round_no, args, run):
    bins = (args.server, args.cli)
    name = f"{kind}-round{round_no}"
    if kind == "nvm":
        return D.Server(name, "module", bins, run.disk, pool=run.pool / f"{name}.nvm", module=args.module,
                        pool_size=POOL_SIZE, extra=MAX_BULK)
    return D.Server(name, "stock", bins, run.disk, extra=["--save", "", "--appendonly", "no"] + MAX_BULK)


def cmdstat(srv, stat):
    """(calls, usec, failed_calls, rejected_calls) of one INFO commandstats line."""
    line = srv.info("commandstats").get(stat, "")
    fields = dict(kv.split("=", 1) for kv in line.split(",") if "=" in kv)
    return tuple(int(float(fields.get(k, 0))) for k in ("calls", "usec", "failed_calls", "rejected_calls"))


NVM_FIELDS = ("appended_bytes", "appended_records", "blob_bytes", "blob_records", "refused_writes",
              "in_doubt_writes", "log_full_waits", "whole_value_effects", "field_level_effects")


def nvm_snapshot(srv):
    ni = srv.nvm_info()
    return {k: int(ni.get(k, 0)) for k in NVM_FIELDS}


def build(srv, row, args):
    """Deletes and builds the row's keys with redis-cli --pipe; module: waits until folded."""
    if not row.keys:
        return
    cmds = [["DEL"] + row.keys] + [c for k in row.keys for c in build_commands(k)]
    data = b"".join(D.encode(*c) for c in cmds)
    if srv.is_module:
        D.wait_folded(srv)
    errors, replies, lines = D.send_chunk(args.cli, srv.port, data)
    if errors or replies != len(cmds):
        raise HarnessError(f"{srv.name}: building {','.join(row.keys)}: {errors} errors, "
                           f"{replies}/{len(cmds)} replies; first lines: {lines[:3]}")
    if srv.is_module:
        D.wait_folded(srv)


def percentile(values, p):
    """Nearest rank (for N < 100 the p99 is the max)."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] if s else None


def measure(srv, row, args):
    """Builds the row's value, runs its command N times at P1; one result dict."""
    build(srv, row, args)
    cmds = row.commands()
    wire = []
    for c in cmds:  # encoded before timing; an identical command (SET big80) shares one buffer
        e = D.encode(*c)
        wire.append(wire[-1] if wire and e == wire[-1] else e)
    conn = D.Resp(srv.port, timeout=OP_TIMEOUT)
    try:
        conn.call("PING")
        before = cmdstat(srv, row.stat)
        nvm_before = nvm_snapshot(srv) if srv.is_module else None
        rtts, replies = [], []
        for data in wire:
            t0 = time.perf_counter_ns()
            conn.sock.sendall(data)
            r = conn.read(OP_TIMEOUT)
            rtts.append((time.perf_counter_ns() - t0) / 1000)
            if isinstance(r, RespError):
                raise HarnessError(f"{srv.name}: {row.shown}: -{r}")
            replies.append(r)
        after = cmdstat(srv, row.stat)
        nvm_after = nvm_snapshot(srv) if srv.is_module else None
    finally:
        conn.close()
    calls, usec = after[0] - before[0], after[1] - before[1]
    if calls != row.n:
        raise HarnessError(f"{srv.name}: {row.stat} calls grew by {calls}, expected {row.n}")
    if after[2] != before[2] or after[3] != before[3]:
        raise HarnessError(f"{srv.name}: {row.stat} failed/rejected calls grew during the row")
    res = {"upc": usec / calls, "rtt_med": D.median(rtts), "rtt_p99": percentile(rtts, 99),
           "replies": replies, "arg_bytes": sum(arg_bytes(c) for c in cmds) / row.n}
    if srv.is_module:
        d = {k: nvm_after[k] - nvm_before[k] for k in NVM_FIELDS}
        res["log_per_op"] = d["appended_bytes"] / row.n
        res["blob_bytes"] = d["blob_bytes"]
        res["records_per_op"] = d["appended_records"] / row.n
        res["whole_value_effects"] = d["whole_value_effects"]
        res["refused"] = d["refused_writes"]
        res["in_doubt"] = d["in_doubt_writes"]
        res["log_full_waits"] = d["log_full_waits"]
    return res


def run_server(cfg, round_no, rows, args, run, servers):
    """Starts a fresh server (fresh pool), measures every row, checks NVM.INFO, stops it."""
    srv = make_server(cfg.name, round_no, args, run)
    servers.append(srv)
    try:
        srv.start(args.start_timeout)
        cfg.commands.append(shlex.join(srv.command()))
        for row in rows:
            if not srv.alive():
                raise srv.died()
            try:
                log(f"round {round_no} {cfg.name}: {row.name} (N={row.n})")
                res = measure(srv, row, args)
                cfg.results.setdefault(row.name, []).append(res)
                log(f"  usec_per_call {res['upc']:.1f}, round trip median {res['rtt_med']:.0f} us"
                    + (f", log {res['log_per_op']:.0f} bytes/op, blob_bytes +{res['blob_bytes']}"
                       if srv.is_module else ""))
            except (HarnessError, OSError, TimeoutError, ConnectionError) as e:
                cfg.run_errors.append(f"round {round_no} {row.name}: {e}")
                log(f"ERROR {cfg.name} round {round_no} {row.name}: {e}")
            finally:
                D.kill_helpers()
        if srv.is_module:
            D.wait_folded(srv)
            ni = srv.nvm_info()
            fin = {k: ni.get(k) for k in ("mode", "durability", "log_capacity", "in_doubt_writes",
                                          "refused_writes", "replay_apply_errors", "keyspace_heap_used",
                                          "pool_size")}
            fin["round"] = round_no
            cfg.final.append(fin)
            if fin["in_doubt_writes"] != "0":
                log(f"WARNING {cfg.name} round {round_no}: in_doubt_writes:{fin['in_doubt_writes']}")
            else:
                log(f"round {round_no} {cfg.name}: in_doubt_writes:0")
        cfg.used_memory = srv.info("memory").get("used_memory_human")
    except (HarnessError, OSError, TimeoutError, ConnectionError) as e:
        cfg.run_errors.append(f"round {round_no}: {e}")
        log(f"ERROR {cfg.name} round {round_no}: {e}")
    finally:
        D.kill_helpers()
        srv.stop()
        srv.remove_pool()


# --------------------------------------------------------------------------- report

def fnum(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def med(cfg, row, key):
    return D.median([r.get(key) for r in cfg.results.get(row.name, [])])


def time_ratio(mu, su):
    """module / stock usec_per_call (inf when stock's rounds to 0 and the module's does not)."""
    if mu is None or su is None:
        return None
    if su == 0:
        return math.inf if mu > 0 else 1.0
    return mu / su


def excess(nvm, stock, row):
    """Median module usec_per_call minus median stock usec_per_call (µs per op)."""
    mu, su = med(nvm, row, "upc"), med(stock, row, "upc")
    return None if mu is None or su is None else mu - su


def report(args, rows, cfgs, run, finished, command_line):
    nvm, stock = cfgs["nvm"], cfgs["stock"]
    lines = []
    add = lines.append
    add("# redis-nvm: write commands on big values, side by side")
    add("")
    add(f"- command: `{command_line}`")
    add(f"- date: {run.started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- server: `{args.server}`: {D.run_version(args.server)}; cli `{args.cli}` (builds the values with --pipe)")
    so = Path(args.module)
    built = (datetime.datetime.fromtimestamp(so.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
             if so.is_file() else "NOT FOUND")
    modes = sorted({f"{f.get('mode')}, durability {f.get('durability')}" for f in nvm.final}) or ["(not started)"]
    caps = sorted({f.get("log_capacity") for f in nvm.final if f.get("log_capacity")})
    add(f"- module: `{args.module}` (built {built}); mode: EMULATION ({'; '.join(modes)}), pool {POOL_SIZE} "
        f"on `{run.pool}` ({D.fs_type(run.pool)}), default log size (log_capacity {', '.join(caps) or '-'} bytes)")
    add(f"- both servers: `--save \"\" --appendonly no {' '.join(MAX_BULK)}`, started afresh every round, "
        "one at a time")
    add(f"- rounds: {args.runs}, the first server alternating; every row's value is rebuilt before it; medians "
        "over rounds. Each row: its command N times on one connection, P1")
    add("")
    add("## Results (medians over rounds)")
    add("")
    add("| row | N | log bytes/op (module) | module usec_per_call | stock usec_per_call | ratio module/stock "
        "| module round-trip median µs | stock round-trip median µs |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    control = next((r for r in rows if r.name.startswith("HSET")), None)
    control_excess = excess(nvm, stock, control) if control else None
    for row in rows:
        lp, mu, su = med(nvm, row, "log_per_op"), med(nvm, row, "upc"), med(stock, row, "upc")
        ratio = time_ratio(mu, su)
        add(f"| {row.name} | {row.n} | {fnum(lp, 0)} | {fnum(mu)} | {fnum(su)} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {fnum(med(nvm, row, 'rtt_med'), 0)} "
            f"| {fnum(med(stock, row, 'rtt_med'), 0)} |")
        ab = med(nvm, row, "arg_bytes") or med(stock, row, "arg_bytes")
        if lp is None or ab is None:
            v1 = "log N/A (not measured)"
        else:
            v1 = (f"log {'PASS' if lp < LOG_SLACK + ab else 'FAIL'} ({lp:,.0f} bytes/op vs limit "
                  f"{LOG_SLACK} + {ab:,.0f} argument bytes = {LOG_SLACK + ab:,.0f})")
        if ratio is None:
            v2 = "time N/A (not measured)"
        else:
            v2 = (f"time {'PASS' if ratio <= USEC_RATIO else 'FAIL'} (module {mu:,.1f} vs stock {su:,.1f} "
                  f"usec_per_call: {ratio:.2f}x, limit {USEC_RATIO:g}x; module {mu - su:+,.1f} µs/op"
                  + (f", control row {control_excess:+,.1f}" if control_excess is not None and row is not control
                     else "") + ")")
        verdicts.append(f"- {row.name}: {v1}; {v2}")
    add("")
    add("`log bytes/op`: delta of NVM.INFO `appended_bytes` (log records + blobs) / N. `usec_per_call`: delta "
        "`usec` / delta `calls` of the command's INFO commandstats line over the N calls, the main thread's time "
        "in the command, the module's capture included. Round trip: client send to reply, loopback TCP.")
    add("")
    add("## Targets")
    add("")
    add(f"Per row: log bytes/op < {LOG_SLACK} + the command's argument bytes, and module usec_per_call <= "
        f"{USEC_RATIO:g}x stock.")
    add("")
    lines += verdicts
    add("")
    for f in nvm.final:
        ok = f.get("in_doubt_writes") == "0"
        add(f"- module round {f['round']}: in_doubt_writes {f.get('in_doubt_writes')}"
            + ("" if ok else " WARNING: writes in doubt")
            + f", refused_writes {f.get('refused_writes')}, replay_apply_errors {f.get('replay_apply_errors')}")
    if not nvm.final:
        add("- module: no run finished, in_doubt_writes not checked")
    add("")
    add("## Details")
    add("")
    add("| row | command | arg bytes/op | blob_bytes delta (module) | log records/op | whole-value effects "
        "| module − stock µs/op | module RT p99 µs | stock RT p99 µs | module usec_per_call per round "
        "| stock usec_per_call per round | replies equal stock |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for row in rows:
        mr, sr = nvm.results.get(row.name, []), stock.results.get(row.name, [])
        if row.name.startswith("SPOP"):
            same = "n/a (random)"
        elif mr and sr:
            pairs = list(zip(mr, sr))
            same = "yes" if all(a["replies"] == b["replies"] for a, b in pairs) else "NO"
        else:
            same = "-"
        add(f"| {row.name} | `{row.shown}` | {fnum(med(nvm, row, 'arg_bytes') or med(stock, row, 'arg_bytes'), 0)} "
            f"| {fnum(med(nvm, row, 'blob_bytes'), 0)} | {fnum(med(nvm, row, 'records_per_op'), 1)} "
            f"| {fnum(med(nvm, row, 'whole_value_effects'), 0)} | {fnum(excess(nvm, stock, row))} "
            f"| {fnum(med(nvm, row, 'rtt_p99'), 0)} | {fnum(med(stock, row, 'rtt_p99'), 0)} "
            f"| {' / '.join(fnum(r['upc']) for r in mr) or '-'} | {' / '.join(fnum(r['upc']) for r in sr) or '-'} "
            f"| {same} |")
    add("")
    add("p99 is the nearest rank, so for N < 100 it is the slowest op. `whole-value effects`: delta of NVM.INFO "
        "`whole_value_effects` over the row (the key logged whole). `module − stock`: what the module adds to the "
        "main thread per op; the control row (HSET on a hash) shows the fixed cost of one durable write. "
        "usec_per_call is a mean, so one slow op (a realloc, a page fault) can dominate a row; the round-trip "
        "median does not. Notes: "
        + "; ".join(f"{r.name}: {r.note}" for r in rows if r.note) + ".")
    warn = [(row.name, r) for row in rows for r in nvm.results.get(row.name, [])
            if r.get("refused") or r.get("in_doubt") or r.get("log_full_waits")]
    if warn:
        add("")
        add("WARNING: during some rows the module refused writes, had writes in doubt or waited for a full log: "
            + "; ".join(f"{n}: refused {r['refused']}, in doubt {r['in_doubt']}, log_full_waits {r['log_full_waits']}"
                        for n, r in warn))
    add("")
    add("## Commands")
    add("")
    add("```")
    for name in KINDS:
        for c in cfgs[name].commands[:1]:
            add(f"# {name} (every round: a fresh --dir and port" + (", and a fresh pool file)" if name == "nvm" else ")"))
            add(c)
    add("# per row: DEL <keys>, then the keys built with redis-cli -p PORT --pipe:")
    for k, d in BUILD_DESCRIPTION.items():
        add(f"#   {k}: {d}")
    add("# module: NVM.INFO until log_records:0; INFO commandstats and NVM.INFO; the row's command N times, P1; "
        "INFO commandstats and NVM.INFO")
    for row in rows:
        add(f"{row.shown}   # x{row.n}, builds {','.join(row.keys) or '-'}")
    add("```")
    add("")
    lines += D.errors_section(list(cfgs.values()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(
        description="Write commands on big values (80 MB strings, 16 MB bitmaps, 100k-element collections): "
                    "redis-nvm vs stock Redis, log bytes and server time per op.",
        epilog="Memory: one server at a time, up to ~0.5 GB of DRAM, plus the 2 GB pool file on --pool-dir "
               "(sparse; ~0.3 GB used). Exit 0 = report complete, 2 = a server or row failed, "
               "1 = harness error, 130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--server", default="redis-server", help="server binary (e.g. valkey-server)")
    ap.add_argument("--cli", default="redis-cli", help="cli binary (redis-cli --pipe builds the values)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (fresh servers each), medians reported")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--rows", help="comma list of substrings: run only the rows whose name contains one "
                    "(case-insensitive)")
    ap.add_argument("--module", default=str(D.DEFAULT_MODULE), help="path of the module .so")
    ap.add_argument("--work-dir", help="dir for --dir and logs (default: <repo>/target/bench-tmp, or "
                    "/var/tmp/redis-nvm-bench if that is tmpfs)")
    ap.add_argument("--pool-dir", default="/dev/shm", help="where the pool file goes (a run dir is made in it)")
    ap.add_argument("--start-timeout", type=float, default=120, help="seconds a server start may take")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    for tool in (args.server, args.cli):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found in PATH")
    args.module = str(Path(args.module).resolve())
    if not Path(args.module).is_file():
        ap.error(f"module not found: {args.module} (cargo build --release)")
    rows = ROWS
    if args.rows:
        wanted = [w.strip().lower() for w in args.rows.split(",") if w.strip()]
        rows = [r for r in ROWS if any(w in r.name.lower() for w in wanted)]
        if not rows:
            ap.error(f"--rows {args.rows!r} matches no row; rows: " + "; ".join(r.name for r in ROWS))
    return args, rows


def main():
    D.LOG_PREFIX = "bigvalues"
    command_line = shlex.join(["python3"] + sys.argv)
    args, rows = parse_args()
    D.install_signal_handlers()
    run = D.RunDirs("bigvalues", args)
    cfgs = {k: Config(k) for k in KINDS}
    servers = []
    try:
        run.create()
        for r in range(args.runs):
            order = KINDS if r % 2 == 0 else KINDS[::-1]
            for kind in order:
                run_server(cfgs[kind], r + 1, rows, args, run, servers)
    finally:
        run.remove([types.SimpleNamespace(server=s) for s in servers])
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, rows, cfgs, run, finished, command_line)
    return D.publish(text, args.out, list(cfgs.values()))


if __name__ == "__main__":
    D.run_main(main)
