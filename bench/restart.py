#!/usr/bin/env python3
"""Restart time of redis-nvm against stock RDB and AOF loading, side by side on the same data.

Role: checks the restart target of DESIGN.md ("Targets": serve the first read < 100 ms
after start whatever the data size) and shows how the module's restart compares with
stock Redis loading the same dataset. Configurations:
  nvm  module, pool on /dev/shm (--pool-dir), mode emulate, --save "" --appendonly no
  rdb  stock, --save "" --appendonly no --rdbcompression no, loading dump.rdb (made by
       SAVE on this server after the dataset was loaded into it)
  aof  stock, --appendonly yes --appendfsync everysec --aof-use-rdb-preamble no
       --auto-aof-rewrite-percentage 0, so the AOF is the command log of the load itself
The dataset (bench/dataset.py) is loaded into each server through real write commands
(redis-cli --pipe); the module's log is folded (log_records:0), the AOF written, the RDB
saved; then each server is killed with SIGKILL. Each run restarts every config once
(interleaved, the starting config rotating), and kills it with SIGKILL again afterwards;
only one server runs at a time while measuring. Per restart it measures, from the
moment the process is spawned:
  first read  GET key:000000000000 returns the dataset's value (polled every 5 ms; stock
              answers -LOADING while loading, the module -BUSY or nothing while restoring)
  full load   the harness sees the server's "done" log line: stock "DB loaded from disk" /
              "DB loaded from append only file", module "redis-nvm: loaded N keys from the
              key space ... in X ms"; then DBSIZE must equal the dataset's key count
              (and stock INFO loading:0)
and reports medians, ratios module/RDB and module/AOF, the dataset sizes and the exact
commands as markdown on stdout. Standard library only (Python 3.11). Exit status: 0 when
the report is complete (whatever the verdict), 2 when a configuration failed, 1 on a
harness error, 130 when interrupted. Servers, pool, RDB and AOF files are removed on
every path.
"""

import argparse
import datetime
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
from dataset import HarnessError, log  # noqa: E402

ALL_CONFIGS = ["nvm", "rdb", "aof"]
POLL = 0.005
MODULE_DONE = re.compile(r"redis-nvm: loaded (\d+) keys from the key space and replayed (\d+) log records"
                         r".*? in (\d+) ms")
MODULE_OPEN = re.compile(r"redis-nvm: key space opened in (\d+) ms")
STOCK_DONE = re.compile(r"DB loaded from (disk|append only file): ([\d.]+) seconds")
FIRST_READ_TARGET_MS = 100
LOAD_TARGET_VS_RDB = 0.5


class Config:
    def __init__(self, name, server):
        self.name = name
        self.server = server
        self.error = None
        self.load = None
        self.stats = {}
        self.file_size = None  # rdb: dump.rdb; aof: AOF files; nvm: pool file
        self.samples = []  # dicts: first_ms, full_ms, reported_ms, dbsize, busy
        self.run_errors = []


def make_configs(args, disk_run, pool_run):
    bins = (args.server, args.cli)
    port = (lambda i: args.port_base + i) if args.port_base else (lambda i: None)
    out = []
    for i, name in enumerate(ALL_CONFIGS):
        if name not in args.configs:
            continue
        if name == "nvm":
            srv = D.Server(name, "module", bins, disk_run, port=port(i), pool=pool_run / "nvm.nvm",
                           module=args.module, pool_size=args.pool_size)
        elif name == "rdb":
            srv = D.Server(name, "stock", bins, disk_run, port=port(i),
                           extra=["--save", "", "--appendonly", "no", "--rdbcompression", "no",
                                  "--dbfilename", "dump.rdb"])
        else:
            srv = D.Server(name, "stock", bins, disk_run, port=port(i),
                           extra=["--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                                  "--aof-use-rdb-preamble", "no", "--auto-aof-rewrite-percentage", "0",
                                  "--rdbcompression", "no"])
        out.append(Config(name, srv))
    return out


def prepare(cfg, ds, args):
    """Starts the server empty, loads the dataset, makes its persistence complete, kills it."""
    srv = cfg.server
    srv.start(args.start_timeout)
    log(f"{cfg.name}: loading {ds.describe()}")
    cfg.load = D.load(srv, ds, args.chunk)
    log(f"{cfg.name}: loaded in {cfg.load.seconds:.1f}s"
        + (f" + {cfg.load.fold_seconds:.1f}s until folded" if srv.is_module else ""))
    if cfg.name == "aof":
        cfg.file_size = D.wait_aof_written(srv)
    cfg.stats = D.dataset_stats(srv)
    D.check_key0(srv, ds)
    if cfg.stats["dbsize"] != ds.expected_keys():
        raise HarnessError(f"{cfg.name}: DBSIZE {cfg.stats['dbsize']} after loading, expected {ds.expected_keys()}")
    if cfg.name == "rdb":
        t = time.monotonic()
        srv.call("SAVE", timeout=3600)
        cfg.stats["save_seconds"] = time.monotonic() - t
        cfg.file_size = (srv.dir / "dump.rdb").stat().st_size
    if cfg.name == "nvm":
        cfg.file_size = srv.pool.stat().st_size
    srv.kill9()
    log(f"{cfg.name}: ready (killed with SIGKILL)")


def measure(cfg, ds, args):
    """One restart: spawn, poll GET and the log, verify, SIGKILL. Returns a sample dict."""
    srv = cfg.server
    key0, val0 = ds.key(0), ds.value(0)
    done_re = MODULE_DONE if srv.is_module else STOCK_DONE
    conn = None
    pending = False
    retry_at = 0.0
    first = full = None
    reported = open_ms = restore_ms = None
    busy = 0
    t0 = time.monotonic()
    srv.spawn()
    try:
        while first is None or full is None:
            now = time.monotonic()
            if now - t0 > args.start_timeout:
                raise HarnessError(f"{cfg.name}: not loaded {args.start_timeout}s after start "
                                   f"(first read {'seen' if first else 'not seen'}, done line "
                                   f"{'seen' if full else 'not seen'}); tail of {srv.logfile}:\n{D.tail(srv.logfile)}")
            if not srv.alive():
                raise srv.died()
            waited = False
            if first is None:
                if conn is None:
                    try:
                        conn = D.Resp(srv.port, timeout=2.0)
                    except (ConnectionRefusedError, socket.timeout):
                        conn = None
                if conn is not None:
                    if not pending and now >= retry_at:
                        conn.send("GET", key0)
                        pending = True
                    if pending:
                        r = conn.poll_reply(POLL)
                        waited = True
                        if r is not D.Resp.NOTHING:
                            pending = False
                            if r == val0:
                                first = time.monotonic() - t0
                            elif isinstance(r, D.RespError) and r.startswith(("LOADING", "BUSY")):
                                busy += 1
                                retry_at = time.monotonic() + POLL
                            else:
                                raise HarnessError(f"{cfg.name}: GET {key0.decode()} answered {r!r:.100}")
            if full is None:
                m = done_re.search(srv.log_since_start())
                if m:
                    full = time.monotonic() - t0
                    if srv.is_module:
                        # the key space is opened while the module loads (before the server
                        # listens), the DRAM restore runs in the first event-loop iteration
                        opened = MODULE_OPEN.search(srv.log_since_start())
                        open_ms = float(opened.group(1)) if opened else 0.0
                        restore_ms = float(m.group(3))
                        reported = restore_ms + open_ms
                    else:
                        reported = float(m.group(2)) * 1000
            if not waited:
                time.sleep(POLL)
    finally:
        if conn is not None:
            conn.close()
    sample = {"first_ms": first * 1000, "full_ms": full * 1000, "reported_ms": reported, "busy": busy}
    if srv.is_module:
        sample["open_ms"], sample["restore_ms"] = open_ms, restore_ms
    sample["dbsize"] = srv.dbsize()
    if not srv.is_module:
        loading = srv.info("persistence").get("loading")
        if loading != "0":
            raise HarnessError(f"{cfg.name}: INFO persistence loading:{loading} after the done line")
    if sample["dbsize"] != ds.expected_keys():
        raise HarnessError(f"{cfg.name}: DBSIZE {sample['dbsize']} after restart, expected {ds.expected_keys()}")
    srv.kill9()
    return sample


def fmt_ms(v):
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.3f}x"


def report(args, ds, cfgs, disk_root, disk_fs, pool_run, started, finished):
    lines = []
    add = lines.append
    add("# redis-nvm restart time, side by side")
    add("")
    add(f"- date: {started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- server: `{args.server}`: {D.run_version(args.server)}")
    add(f"- module: `{args.module}`" + ("" if Path(args.module).is_file() else " (NOT FOUND)")
        + f", pool size {args.pool_size}, pool dir `{pool_run}` ({D.fs_type(pool_run)})")
    add(f"- dataset: {ds.describe()}: {ds.expected_keys()} keys, loaded with `{args.cli} --pipe` "
        f"in chunks of {args.chunk} commands")
    add(f"- runs: {args.runs} restarts per config, interleaved, median reported; GET polled every "
        f"{POLL * 1000:.0f} ms; times from spawning the server process")
    add(f"- work dir (RDB, AOF, logs): `{disk_root}` ({disk_fs}); RDB/AOF are read back through the "
        "page cache (warm), as written")
    add("")
    add("## Dataset")
    add("")
    add("| config | load time | DBSIZE | used_memory | persisted size | notes |")
    add("|---|---:|---:|---:|---:|---|")
    for c in cfgs:
        if c.load is None:
            add(f"| {c.name} | failed | | | | {'see Errors' if c.error else ''} |")
            continue
        st = c.stats
        if c.name == "nvm":
            persisted = f"heap {D.fmt_bytes(st.get('keyspace_heap_used') and int(st['keyspace_heap_used']))}"
            note = (f"pool file {D.fmt_bytes(c.file_size)}; keyspace_keys {st.get('keyspace_keys')}; "
                    f"fold wait {c.load.fold_seconds:.1f}s; chunks re-sent after -NVMFULL: {c.load.resent_chunks}")
        elif c.name == "rdb":
            persisted = f"dump.rdb {D.fmt_bytes(c.file_size)}"
            note = f"SAVE took {st.get('save_seconds', 0):.1f}s"
        else:
            persisted = f"AOF {D.fmt_bytes(c.file_size)}"
            note = "appendonlydir/*.aof"
        add(f"| {c.name} | {c.load.seconds:.1f}s | {st['dbsize']} | {D.fmt_bytes(st['used_memory'])} "
            f"| {persisted} | {note} |")
    add("")
    sizes = {c.name: c.stats.get("dbsize") for c in cfgs if c.load is not None}
    after = {c.name: {s["dbsize"] for s in c.samples} for c in cfgs}
    all_counts = set(sizes.values()) | set().union(*after.values()) if after else set()
    ok = all_counts == {ds.expected_keys()} and all(c.load is not None for c in cfgs)
    add(f"key count check: expected {ds.expected_keys()}; after load "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + "; after every restart "
        + ", ".join(f"{k} {'/'.join(map(str, sorted(v))) or '-'}" for k, v in after.items())
        + f": {'PASS' if ok else 'FAIL'}")
    add("")
    add("## Restart time (ms, median)")
    add("")
    add("| config | first read | full load | server's own figure | -LOADING/-BUSY replies | raw first read | raw full load |")
    add("|---|---:|---:|---:|---:|---|---|")
    meds = {}
    for c in cfgs:
        f = D.median([s["first_ms"] for s in c.samples])
        fl = D.median([s["full_ms"] for s in c.samples])
        rp = D.median([s["reported_ms"] for s in c.samples])
        meds[c.name] = (f, fl)
        raw_f = " ".join(fmt_ms(s["first_ms"]) for s in c.samples) or "-"
        raw_fl = " ".join(fmt_ms(s["full_ms"]) for s in c.samples) or "-"
        if c.run_errors:
            raw_fl += f" ({len(c.run_errors)} failed)"
        if c.name == "nvm":
            what = (f"open {fmt_ms(D.median([s['open_ms'] for s in c.samples]))} + restore "
                    f"{fmt_ms(D.median([s['restore_ms'] for s in c.samples]))}: `key space opened in` + restore `in`")
        else:
            what = "`DB loaded ... seconds`"
        add(f"| {c.name} | {fmt_ms(f)} | {fmt_ms(fl)} | {fmt_ms(rp)} ({what}) "
            f"| {'/'.join(str(s['busy']) for s in c.samples) or '-'} | {raw_f} | {raw_fl} |")
    add("")
    nf, nfl = meds.get("nvm", (None, None))
    for other in ("rdb", "aof"):
        if other in meds:
            of, ofl = meds[other]
            add(f"ratio module/{other.upper()}: first read {ratio(nf, of)}, full load {ratio(nfl, ofl)}")
            add("")
    if nfl is not None and "rdb" in meds:
        add(f"target full load <= {LOAD_TARGET_VS_RDB}x RDB (NVM key-space stage): "
            f"{'PASS' if nfl <= LOAD_TARGET_VS_RDB * meds['rdb'][1] else 'FAIL'} ({ratio(nfl, meds['rdb'][1])})")
        add("")
    if nf is None:
        add(f"target first read < {FIRST_READ_TARGET_MS} ms: N/A (nvm not measured)")
    else:
        add(f"target first read < {FIRST_READ_TARGET_MS} ms after start: "
            f"{'PASS' if nf < FIRST_READ_TARGET_MS else 'FAIL'} ({fmt_ms(nf)} ms at {ds.expected_keys()} keys)")
    add("")
    add("## Commands")
    add("")
    add("```")
    add("# dataset (same for every config; bench/dataset.py generates the RESP and sends it in chunks):")
    add(f"python3 bench/dataset.py resp --keys {ds.keys} --collections {ds.collections} "
        f"--elements {ds.elements} --ttl-keys {ds.ttl_keys} | {args.cli} -p PORT --pipe")
    for c in cfgs:
        add(f"# {c.name}")
        add(shlex.join(c.server.command()))
        if c.name == "rdb":
            add(f"{args.cli} -p {c.server.port} SAVE")
    add("# each restart: kill -9 <pid>, then the same server command; poll "
        "GET key:000000000000 every 5 ms; DBSIZE; INFO persistence")
    add("```")
    add("")
    lines += D.errors_section(cfgs)
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(
        description="Restart time of redis-nvm vs stock Redis loading an RDB or an AOF of the same dataset.",
        epilog="Needs several GB at the default scale: each server holds the dataset in DRAM "
               "(~2 GB at 6.5M keys; only one runs at a time), plus the pool on --pool-dir and the "
               "RDB/AOF (~1.6 GB each) on the work dir, all deleted at the end. "
               "Exit 0 = report complete, 2 = a config failed, 1 = harness error, 130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    D.add_harness_args(ap, ALL_CONFIGS, "RDB, AOF and logs")
    ap.add_argument("--runs", type=int, default=3, help="restarts per config (median reported)")
    ap.add_argument("--port-base", type=int, default=0,
                    help="ports base, base+1, base+2 for nvm, rdb, aof (0: free ports)")
    ap.add_argument("--start-timeout", type=float, default=900,
                    help="seconds a start or restart may take until loaded")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    D.check_harness_args(ap, args, ALL_CONFIGS, (args.server, args.cli))
    return args


def main():
    D.LOG_PREFIX = "restart"
    args = parse_args()
    D.install_signal_handlers()
    ds = D.dataset_of(args)
    run = D.RunDirs("restart", args)
    cfgs = []
    try:
        run.create()
        cfgs = make_configs(args, run.disk, run.pool)
        for c in cfgs:
            try:
                prepare(c, ds, args)
            except HarnessError as e:
                c.error = str(e)
                c.load = None
                log(f"ERROR {e}")
            finally:
                D.kill_helpers()
                c.server.kill9()
        live = [c for c in cfgs if not c.error]
        for r in range(args.runs):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for c in order:
                try:
                    s = measure(c, ds, args)
                    c.samples.append(s)
                    log(f"run {r + 1}/{args.runs} {c.name}: first read {s['first_ms']:.1f} ms, "
                        f"full load {s['full_ms']:.1f} ms (server: {s['reported_ms']:.1f} ms)")
                except (HarnessError, OSError, TimeoutError) as e:
                    c.run_errors.append(f"run {r + 1}: {e}")
                    log(f"ERROR {c.name} run {r + 1}: {e}")
                finally:
                    c.server.kill9()
    finally:
        run.remove(cfgs)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, ds, cfgs, run.disk_root, run.disk_fs, run.pool, run.started, finished)
    return D.publish(text, args.out, cfgs)


if __name__ == "__main__":
    D.run_main(main)
