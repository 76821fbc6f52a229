#!/usr/bin/env python3
"""Latency while persisting: redis-nvm against stock Redis + BGSAVE, on the same dataset.

Role: checks the latency targets of the NVM key-space issue: while the module persists
at full speed, its p99.9 stays within 1.5x of its steady p99.9, its max stays below a
few ms (5 ms, --max-ms) and it never forks; and shows what a BGSAVE costs stock Redis
on the same data and load. Configurations, both loaded with the same dataset
(bench/dataset.py, through real write commands) and kept running for the whole script:
  nvm    module, pool on /dev/shm (--pool-dir), mode emulate, --save "" --appendonly no
  stock  --save "" --appendonly no (BGSAVE is triggered by this script)
After loading: CONFIG SET latency-monitor-threshold 1, one unreported warm-up load.

Windows (one measured load each,
`redis-benchmark -t set,get -r K -d 200 -c 10 -P 1 -n M --precision 3`, non-CSV output):
  W1   steady: the measured load alone
  W2'  bulk writer (stock only): the measured load while a second client writes
       `redis-benchmark -t set -r K -d 200 -c 4 -P 32 -n BULK` (restarted if it ends
       first, killed when the measured load ends)
  W2   persisting: module: the same bulk writer, so the replayer folds at full speed
       (NVM.INFO sampled every 100 ms: peak log_backlog_bytes, replay_records_per_sec);
       stock: the same bulk writer plus BGSAVE, started as the measured load starts and
       started again whenever it finishes before the measured load does
Before each window the server is quiet (module: log_records:0; stock: no BGSAVE running)
and LATENCY RESET. Runs are interleaved (--runs, the starting config rotating);
medians are reported. The keys are the dataset's own (`key:%012d`, what
redis-benchmark -r K generates), so SETs overwrite it and GETs hit 200-byte values.

Standard library only (Python 3.11). Exit status: 0 when the report is complete
(whatever the verdicts), 2 when a configuration or a window failed, 1 on a harness
error, 130 when interrupted. Servers, helpers, pool and RDB files are removed on every path.
"""

import argparse
import datetime
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
from dataset import HarnessError, log  # noqa: E402

ALL_CONFIGS = ["nvm", "stock"]
WINDOWS = {"nvm": ["W1", "W2"], "stock": ["W1", "W2'", "W2"]}
WINDOW_TITLE = {
    ("nvm", "W1"): "steady",
    ("nvm", "W2"): "persisting: bulk writer, replayer folding",
    ("stock", "W1"): "steady",
    ("stock", "W2'"): "bulk writer, no BGSAVE",
    ("stock", "W2"): "persisting: bulk writer + BGSAVE",
}
SAMPLE_EVERY = 0.1
BULK_LEAD = 0.5  # seconds the bulk writer runs before the measured load starts
P999_RATIO = 1.5
OPS = ["SET", "GET"]
W2P = "W2'"


class Config:
    def __init__(self, name, server):
        self.name = name
        self.server = server
        self.error = None
        self.load = None
        self.stats = {}
        self.results = {w: [] for w in WINDOWS[name]}  # window -> list of per-run dicts
        self.run_errors = []
        self.final_info = {}


# --------------------------------------------------------------------------- redis-benchmark

def measured_command(args, port, n=None):
    return [args.benchmark, "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-r", str(args.keys),
            "-d", "200", "-c", str(args.clients), "-P", "1", "-n", str(n or args.requests), "--precision", "3"]


def bulk_command(args, port):
    return [args.benchmark, "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-r", str(args.keys),
            "-d", "200", "-c", "4", "-P", "32", "-n", str(args.bulk), "-q"]


_SECTION = re.compile(r"====== (\S+) ======(.*?)(?======= |\Z)", re.S)
_PCT = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds", re.M)
_SUMMARY = re.compile(r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
                      r"\s+([\d.]+)\s+([\d.]+)")
_RPS = re.compile(r"throughput summary: ([\d.]+) requests per second")


def parse_benchmark(out):
    """{'SET': {...}, 'GET': {...}} from redis-benchmark's non-CSV output. p99.9 is the first
    line of "Latency by percentile distribution" at or above 99.900% (the histogram prints
    its percentile ticks, e.g. 99.902%)."""
    res = {}
    text = out.replace("\r", "\n")
    for m in _SECTION.finditer(text):
        name, body = m.group(1), m.group(2)
        d = {}
        s = _SUMMARY.search(body)
        r = _RPS.search(body)
        if not s or not r:
            continue
        d["avg"], d["min"], d["p50"], d["p95"], d["p99"], d["max"] = (float(x) for x in s.groups())
        d["rps"] = float(r.group(1))
        dist = body.split("Latency by percentile distribution:", 1)[-1].split("Cumulative distribution", 1)[0]
        for pm in _PCT.finditer(dist):
            if float(pm.group(1)) >= 99.9:
                d["p999"] = float(pm.group(2))
                break
        else:
            d["p999"] = d["max"]
        res[name] = d
    return res


# --------------------------------------------------------------------------- windows

def snapshot(srv):
    st = srv.info("stats")
    cs = srv.info("commandstats")
    snap = {"total_forks": int(st.get("total_forks", 0)),
            "total_error_replies": int(st.get("total_error_replies", 0)),
            "set_calls": 0}
    m = re.match(r"calls=(\d+)", cs.get("cmdstat_set", ""))
    if m:
        snap["set_calls"] = int(m.group(1))
    if srv.is_module:
        ni = srv.nvm_info()
        snap["refused_writes"] = int(ni.get("refused_writes", 0))
        snap["appended_records"] = int(ni.get("appended_records", 0))
    return snap


def cpu_snapshot(pid):
    """CPU seconds of a process: (main thread, its other threads, reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                f = Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread just ended
            if int(t) == pid:
                main += int(f[11]) + int(f[12])
            else:
                other += int(f[11]) + int(f[12])
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = int(f[13]) + int(f[14])
    except OSError:
        return None
    return main / tick, other / tick, children / tick


def wait_bgsave_done(srv, timeout=1800):
    deadline = time.monotonic() + timeout
    while srv.info("persistence").get("rdb_bgsave_in_progress") != "0":
        if time.monotonic() > deadline:
            raise HarnessError(f"{srv.name}: BGSAVE still running after {timeout}s")
        time.sleep(0.05)


def quiesce(cfg, timeout=1800):
    """Module: backlog folded. Stock: no BGSAVE running, dump.rdb deleted."""
    srv = cfg.server
    if srv.is_module:
        D.wait_folded(srv, timeout)
        return
    wait_bgsave_done(srv, timeout)
    for f in srv.dir.glob("*.rdb"):
        f.unlink()


def format_latency_latest(reply):
    if not isinstance(reply, list) or not reply:
        return "(none)"
    parts = []
    for ev in reply:
        if isinstance(ev, list) and len(ev) >= 4:
            parts.append(f"{D.text(ev[0])} latest {ev[2]} ms max {ev[3]} ms")
    return "; ".join(parts) or "(none)"


def run_window(cfg, win, args, run_dir, run_no):
    srv = cfg.server
    quiesce(cfg)
    srv.call("LATENCY", "RESET")
    before = snapshot(srv)
    t_before = time.monotonic()
    cpu_before = cpu_snapshot(srv.proc.pid)
    bulk_on = win in ("W2", "W2'")
    bgsave_on = win == "W2" and not srv.is_module
    stem = f"{cfg.name}-{win.replace(W2P, 'W2p')}-run{run_no}"
    out_path, bulk_path = run_dir / f"{stem}.out", run_dir / f"{stem}.bulk"
    res = {"bulk_runs": 0, "bgsaves": 0, "fork_usec": [], "backlog_peak": 0, "replay_rate_max": 0,
           "replay_rates": [], "bgsave_errors": []}
    mon = D.Resp(srv.port, timeout=30)
    bulk = meas = None
    bulk_out = open(bulk_path, "ab")
    meas_out = open(out_path, "wb")

    def start_bulk():
        res["bulk_runs"] += 1
        return D.spawn_helper(bulk_command(args, srv.port), stdin=subprocess.DEVNULL,
                              stdout=bulk_out, stderr=subprocess.STDOUT)

    def bgsave():
        r = mon.call("BGSAVE")
        if isinstance(r, D.RespError):
            res["bgsave_errors"].append(str(r))
            return
        res["bgsaves"] += 1
        st = D.parse_info(D.text(mon.call("INFO", "stats")))
        res["fork_usec"].append(int(st.get("latest_fork_usec", 0)))

    try:
        if bulk_on:
            bulk = start_bulk()
            time.sleep(BULK_LEAD)
        t0 = time.monotonic()
        meas = D.spawn_helper(measured_command(args, srv.port), stdin=subprocess.DEVNULL,
                              stdout=meas_out, stderr=subprocess.STDOUT)
        if bgsave_on:
            bgsave()
        timeout = 300 + args.requests / 500
        while meas.poll() is None:
            if time.monotonic() - t0 > timeout:
                raise HarnessError(f"{cfg.name} {win}: measured load not done after {timeout:.0f}s")
            if not srv.alive():
                raise srv.died()
            if bulk is not None and bulk.poll() is not None:
                D.reap_helper(bulk)
                if bulk.returncode != 0:
                    raise HarnessError(f"{cfg.name} {win}: bulk writer exited {bulk.returncode}: "
                                       f"{D.tail(bulk_path, 5)}")
                bulk = start_bulk()
            if srv.is_module:
                ni = D.parse_info(D.text(mon.call("NVM.INFO")))
                res["backlog_peak"] = max(res["backlog_peak"], int(ni.get("log_backlog_bytes", 0)))
                rate = int(ni.get("replay_records_per_sec", 0))
                res["replay_rate_max"] = max(res["replay_rate_max"], rate)
                res["replay_rates"].append(rate)
            else:
                p = D.parse_info(D.text(mon.call("INFO", "persistence")))
                if bgsave_on and p.get("rdb_bgsave_in_progress") == "0" and meas.poll() is None:
                    bgsave()
            time.sleep(SAMPLE_EVERY)
        res["seconds"] = time.monotonic() - t0
        D.reap_helper(meas)
    finally:
        for p in (bulk, meas):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait()
                D.reap_helper(p)
        bulk_out.close()
        meas_out.close()
        mon.close()
    out = out_path.read_text(errors="replace")
    if meas.returncode != 0:
        raise HarnessError(f"{cfg.name} {win}: redis-benchmark exit {meas.returncode}: {out[-500:]}")
    parsed = parse_benchmark(out)
    missing = [op for op in OPS if op not in parsed]
    if missing:
        raise HarnessError(f"{cfg.name} {win}: no {missing} section in redis-benchmark output: {out[-500:]!r}")
    res.update(parsed)
    res["bench_errors"] = len(re.findall(r"Error from server", out))
    after = snapshot(srv)
    t_after = time.monotonic()
    if bgsave_on:
        wait_bgsave_done(srv)  # so the last BGSAVE child is reaped and its CPU counted
    cpu_after = cpu_snapshot(srv.proc.pid)
    if cpu_before and cpu_after:
        res["cpu"] = tuple(a - b for a, b in zip(cpu_after, cpu_before))
    res["forks"] = after["total_forks"] - before["total_forks"]
    res["error_replies"] = after["total_error_replies"] - before["total_error_replies"]
    res["set_per_sec"] = (after["set_calls"] - before["set_calls"]) / (t_after - t_before)
    res["window_seconds"] = t_after - t_before
    if srv.is_module:
        res["refused"] = after["refused_writes"] - before["refused_writes"]
        res["appended"] = after["appended_records"] - before["appended_records"]
    res["latency_latest"] = format_latency_latest(srv.call("LATENCY", "LATEST"))
    if bulk_on:
        bt = D.tail(bulk_path, 50)
        res["bulk_errors"] = bt.count("Error from server")
    for f in (out_path, bulk_path):
        f.unlink(missing_ok=True)
    return res


def prepare(cfg, ds, args):
    srv = cfg.server
    srv.start(args.start_timeout)
    log(f"{cfg.name}: loading {ds.describe()}")
    cfg.load = D.load(srv, ds, args.chunk)
    cfg.stats = D.dataset_stats(srv)
    D.check_key0(srv, ds)
    if cfg.stats["dbsize"] != ds.expected_keys():
        raise HarnessError(f"{cfg.name}: DBSIZE {cfg.stats['dbsize']}, expected {ds.expected_keys()}")
    srv.call("CONFIG", "SET", "latency-monitor-threshold", "1")
    n = max(args.requests // 10, 1000)
    log(f"{cfg.name}: warm-up ({n} requests, not reported)")
    out = subprocess.run(measured_command(args, srv.port, n), capture_output=True, text=True,
                         timeout=300 + n / 500)
    if out.returncode != 0:
        raise HarnessError(f"{cfg.name}: warm-up failed: {(out.stdout + out.stderr)[-500:]}")


# --------------------------------------------------------------------------- report

def worst(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def fms(v):
    return "-" if v is None else f"{v:.3f}"


def metric(cfg, win, op, key):
    return D.median([r[op][key] for r in cfg.results.get(win, []) if op in r])


def report(args, ds, cfgs, disk_root, disk_fs, pool_run, started, finished):
    by = {c.name: c for c in cfgs}
    lines = []
    add = lines.append
    add("# redis-nvm latency while persisting, side by side")
    add("")
    add(f"- date: {started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- server: `{args.server}`: {D.run_version(args.server)}")
    add(f"- benchmark: `{args.benchmark}`: {D.run_version(args.benchmark)}")
    add(f"- module: `{args.module}`" + ("" if Path(args.module).is_file() else " (NOT FOUND)")
        + f", pool size {args.pool_size}, pool dir `{pool_run}` ({D.fs_type(pool_run)})")
    add(f"- dataset: {ds.describe()}: {ds.expected_keys()} keys, loaded with `{args.cli} --pipe`")
    add(f"- measured load: {args.requests} SET then {args.requests} GET, {args.clients} clients, P1; "
        f"bulk writer: -c 4 -P 32, {args.bulk} SETs per run (restarted while the window lasts); "
        f"runs: {args.runs}, interleaved, median reported (max: median, worst run in brackets)")
    add(f"- work dir (RDB, logs): `{disk_root}` ({disk_fs})")
    add("")
    add("| config | dataset load | DBSIZE | used_memory | module key-space heap used |")
    add("|---|---:|---:|---:|---:|")
    for c in cfgs:
        if c.load is None:
            add(f"| {c.name} | failed | | | |")
            continue
        heap = c.stats.get("keyspace_heap_used")
        add(f"| {c.name} | {c.load.seconds:.1f}s"
            + (f" + {c.load.fold_seconds:.1f}s fold, {c.load.resent_chunks} chunks re-sent" if c.server.is_module else "")
            + f" | {c.stats['dbsize']} | {D.fmt_bytes(c.stats['used_memory'])} "
            f"| {D.fmt_bytes(int(heap)) if heap else '-'} |")
    add("")
    add("## Latency (ms) and throughput")
    add("")
    add("| config | window | SET p50 | SET p99 | SET p99.9 | SET max | SET/s | GET p50 | GET p99 | GET p99.9 "
        "| GET max | GET/s | all SET/s in window | forks | fork ms (max) | error replies | runs |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cfgs:
        for w in WINDOWS[c.name]:
            rs = c.results[w]
            if not rs:
                add(f"| {c.name} | {w} {WINDOW_TITLE[(c.name, w)]} | no result | | | | | | | | | | | | | | 0 |")
                continue
            cells = []
            for op in OPS:
                mx_med, mx_worst = metric(c, w, op, "max"), worst([r[op]["max"] for r in rs])
                cells += [fms(metric(c, w, op, "p50")), fms(metric(c, w, op, "p99")),
                          fms(metric(c, w, op, "p999")), f"{fms(mx_med)} ({fms(mx_worst)})",
                          f"{metric(c, w, op, 'rps') / 1000:.1f}k"]
            forks = "/".join(str(r["forks"]) for r in rs)
            fk = worst([max(r["fork_usec"]) / 1000 for r in rs if r["fork_usec"]])
            errs = "/".join(str(r["error_replies"]) for r in rs)
            add(f"| {c.name} | {w} {WINDOW_TITLE[(c.name, w)]} | " + " | ".join(cells)
                + f" | {D.median([r['set_per_sec'] for r in rs]) / 1000:.1f}k | {forks} | {fms(fk) if fk else '-'} "
                f"| {errs} | {len(rs)} |")
    add("")
    add("`all SET/s in window`: every SET the server ran during the window (measured + bulk writer) per second. "
        "`forks`, `error replies`: per run, deltas of INFO stats over the window.")
    add("")
    add("Server CPU seconds during the window (median; from /proc: the main thread, the server's other "
        "threads — the module's replayer, bio, jemalloc — and reaped children, i.e. the BGSAVE processes, "
        "counted until the last one ends) on a machine with "
        f"{len(os.sched_getaffinity(0))} CPUs shared with both redis-benchmark processes:")
    add("")
    add("| config | window | window s | main thread | other threads | children (BGSAVE) |")
    add("|---|---|---:|---:|---:|---:|")
    for c in cfgs:
        for w in WINDOWS[c.name]:
            rs = [r for r in c.results[w] if r.get("cpu")]
            if not rs:
                continue
            add(f"| {c.name} | {w} | {D.median([r['window_seconds'] for r in rs]):.1f} | "
                + " | ".join(f"{D.median([r['cpu'][i] for r in rs]):.2f}" for i in range(3)) + " |")
    add("")
    if "nvm" in by:
        c = by["nvm"]
        add("## Module during the windows (NVM.INFO sampled every 100 ms)")
        add("")
        add("| window | peak log_backlog_bytes | max replay_records_per_sec | median replay_records_per_sec "
            "| records appended | refused_writes | bulk writer runs |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        for w in WINDOWS["nvm"]:
            rs = c.results[w]
            if not rs:
                continue
            add(f"| {w} | {'/'.join(str(r['backlog_peak']) for r in rs)} "
                f"| {'/'.join(str(r['replay_rate_max']) for r in rs)} "
                f"| {'/'.join(str(int(D.median(r['replay_rates']) or 0)) for r in rs)} "
                f"| {'/'.join(str(r.get('appended', 0)) for r in rs)} "
                f"| {'/'.join(str(r.get('refused', 0)) for r in rs)} "
                f"| {'/'.join(str(r['bulk_runs']) for r in rs)} |")
        add("")
    if "stock" in by:
        c = by["stock"]
        rs = c.results["W2"]
        if rs:
            add("Stock W2: BGSAVEs per run " + "/".join(str(r["bgsaves"]) for r in rs)
                + "; fork ms per BGSAVE: " + "; ".join(
                    " ".join(f"{u / 1000:.1f}" for u in r["fork_usec"]) for r in rs))
            errs = [e for r in rs for e in r["bgsave_errors"]]
            if errs:
                add(f"BGSAVE errors: {errs[:3]}")
            add("")
    add("## Verdicts")
    add("")
    nvm = by.get("nvm")

    def have(c, w):
        return c is not None and c.results.get(w)

    for op in OPS:
        if have(nvm, "W1") and have(nvm, "W2"):
            a, b = metric(nvm, "W2", op, "p999"), metric(nvm, "W1", op, "p999")
            r = a / b if b else float("inf")
            add(f"target p99.9 {op}: nvm W2 <= {P999_RATIO}x nvm W1: {'PASS' if r <= P999_RATIO else 'FAIL'} "
                f"({r:.2f}x: W1 {fms(b)} ms, W2 {fms(a)} ms)")
        else:
            add(f"target p99.9 {op}: nvm W2 <= {P999_RATIO}x nvm W1: N/A (not measured)")
        add("")
    for op in OPS:
        if have(nvm, "W2"):
            wv = worst([r[op]["max"] for r in nvm.results["W2"]])
            add(f"target max {op}: nvm W2 max < {args.max_ms:g} ms: {'PASS' if wv < args.max_ms else 'FAIL'} "
                f"(worst run {fms(wv)} ms, median {fms(metric(nvm, 'W2', op, 'max'))} ms)")
        else:
            add(f"target max {op}: nvm W2 max < {args.max_ms:g} ms: N/A (not measured)")
        add("")
    if nvm is not None and nvm.final_info:
        f = nvm.final_info.get("total_forks", "?")
        add(f"target forks: nvm total_forks == 0: {'PASS' if f == '0' else 'FAIL'} ({f} since start, "
            f"loading included)")
    else:
        add("target forks: nvm total_forks == 0: N/A (not measured)")
    add("")
    st = by.get("stock")
    if have(st, "W1") and have(st, "W2"):
        add("For comparison (stock): "
            + "; ".join(f"{op} p99.9 W1 {fms(metric(st, 'W1', op, 'p999'))}, W2' {fms(metric(st, W2P, op, 'p999'))}, "
                        f"W2 {fms(metric(st, 'W2', op, 'p999'))} ms, max W2 worst {fms(worst([r[op]['max'] for r in st.results['W2']]))} ms"
                        for op in OPS)
            + f"; total_forks {st.final_info.get('total_forks', '?')}")
        add("")
    if have(nvm, "W2") and have(st, "W2'"):
        add("Same load, no fork: nvm W2 / stock W2' p99.9: "
            + ", ".join(f"{op} {metric(nvm, 'W2', op, 'p999') / metric(st, W2P, op, 'p999'):.2f}x"
                        for op in OPS)
            + "; nvm W2 / stock W2 (BGSAVE) p99.9: "
            + ", ".join(f"{op} {metric(nvm, 'W2', op, 'p999') / metric(st, 'W2', op, 'p999'):.2f}x" for op in OPS))
        add("")
    if any((r.get("error_replies") or r.get("bench_errors") or r.get("refused") or r.get("bulk_errors"))
           for c in cfgs for rs in c.results.values() for r in rs):
        add("WARNING: error replies during some window (column `error replies`, module refused_writes): "
            "redis-benchmark counts them as served requests, so that window's latencies are not valid.")
        add("")
    add("## LATENCY LATEST (after each window, threshold 1 ms)")
    add("")
    add("| config | window | run | events |")
    add("|---|---|---:|---|")
    for c in cfgs:
        for w in WINDOWS[c.name]:
            for i, r in enumerate(c.results[w]):
                add(f"| {c.name} | {w} | {i + 1} | {r['latency_latest']} |")
    add("")
    add("## Commands")
    add("")
    add("```")
    add("# dataset (same for both; bench/dataset.py generates the RESP and sends it in chunks):")
    add(f"python3 bench/dataset.py resp --keys {ds.keys} --collections {ds.collections} "
        f"--elements {ds.elements} --ttl-keys {ds.ttl_keys} | {args.cli} -p PORT --pipe")
    for c in cfgs:
        p = c.server.port
        add(f"# {c.name}")
        add(shlex.join(c.server.command()))
        add(f"{args.cli} -p {p} CONFIG SET latency-monitor-threshold 1")
        add("# measured load (every window):")
        add(shlex.join(measured_command(args, p)))
        add(f"# bulk writer ({'W2' if c.name == 'nvm' else W2P + ', W2'}), restarted until the measured load ends:")
        add(shlex.join(bulk_command(args, p)))
        if c.name == "stock":
            add(f"{args.cli} -p {p} BGSAVE   # W2: at the start, and again whenever rdb_bgsave_in_progress:0")
        add(f"{args.cli} -p {p} LATENCY RESET   # before each window; LATENCY LATEST after")
    add("```")
    add("")
    lines += D.errors_section(cfgs)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(
        description="Latency of redis-nvm while persisting vs stock Redis during BGSAVE, same dataset.",
        epilog="Both servers hold the dataset for the whole run (~2 GB DRAM each at 6.5M keys, plus the "
               "pool and, during BGSAVE, copy-on-write and the RDB). Exit 0 = report complete, "
               "2 = a config or window failed, 1 = harness error, 130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    D.add_harness_args(ap, ALL_CONFIGS, "the RDB and logs")
    ap.add_argument("--runs", type=int, default=3, help="runs of every window (median reported)")
    ap.add_argument("--requests", type=int, default=300_000, help="measured SETs (and GETs) per window")
    ap.add_argument("--clients", type=int, default=10, help="measured load clients (-c)")
    ap.add_argument("--bulk", type=int, default=2_000_000, help="SETs per bulk writer run (-n)")
    ap.add_argument("--max-ms", type=float, default=5.0, help="the 'a few ms' bound on the module's W2 max")
    ap.add_argument("--benchmark", default="redis-benchmark", help="benchmark binary (e.g. valkey-benchmark)")
    ap.add_argument("--port-base", type=int, default=0, help="ports base, base+1 for nvm, stock (0: free ports)")
    ap.add_argument("--start-timeout", type=float, default=900, help="seconds a start may take")
    args = ap.parse_args()
    if args.runs < 1 or args.requests < 1000 or args.bulk < 1000:
        ap.error("--runs must be >= 1, --requests and --bulk >= 1000")
    D.check_harness_args(ap, args, ALL_CONFIGS, (args.server, args.cli, args.benchmark))
    return args


def main():
    D.LOG_PREFIX = "latency"
    args = parse_args()
    D.install_signal_handlers()
    ds = D.dataset_of(args)
    run = D.RunDirs("latency", args)
    disk_run = run.disk
    bins = (args.server, args.cli)
    cfgs = []
    try:
        run.create()
        for i, name in enumerate(ALL_CONFIGS):
            if name not in args.configs:
                continue
            port = args.port_base + i if args.port_base else None
            if name == "nvm":
                srv = D.Server(name, "module", bins, disk_run, port=port, pool=run.pool / "nvm.nvm",
                               module=args.module, pool_size=args.pool_size)
            else:
                srv = D.Server(name, "stock", bins, disk_run, port=port,
                               extra=["--save", "", "--appendonly", "no"])
            cfgs.append(Config(name, srv))
        for c in cfgs:
            try:
                prepare(c, ds, args)
            except (HarnessError, OSError, subprocess.TimeoutExpired) as e:
                c.error = str(e)
                c.load = None
                log(f"ERROR {e}")
                c.server.stop()
            finally:
                D.kill_helpers()
        live = [c for c in cfgs if not c.error]
        for r in range(args.runs):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for c in order:
                for w in WINDOWS[c.name]:
                    if not c.server.alive():
                        break
                    try:
                        log(f"run {r + 1}/{args.runs} {c.name} {w} ({WINDOW_TITLE[(c.name, w)]})")
                        res = run_window(c, w, args, disk_run, r + 1)
                        c.results[w].append(res)
                        log(f"  SET p99.9 {res['SET']['p999']:.3f} max {res['SET']['max']:.3f} "
                            f"{res['SET']['rps']:.0f}/s; GET p99.9 {res['GET']['p999']:.3f} "
                            f"max {res['GET']['max']:.3f} {res['GET']['rps']:.0f}/s; forks {res['forks']}"
                            + (f"; backlog peak {res['backlog_peak']}" if c.server.is_module else "")
                            + (f"; BGSAVEs {res['bgsaves']}" if res["bgsaves"] else ""))
                    except (HarnessError, OSError, TimeoutError) as e:
                        c.run_errors.append(f"run {r + 1} {w}: {e}")
                        log(f"ERROR {c.name} {w}: {e}")
                    finally:
                        D.kill_helpers()
        for c in live:
            if c.server.alive():
                try:
                    quiesce(c)
                    c.final_info = c.server.info("stats")
                except (HarnessError, OSError, TimeoutError) as e:
                    c.run_errors.append(f"final INFO: {e}")
    finally:
        run.remove(cfgs)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, ds, cfgs, run.disk_root, run.disk_fs, run.pool, run.started, finished)
    return D.publish(text, args.out, cfgs)


if __name__ == "__main__":
    D.run_main(main)
