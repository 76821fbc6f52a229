#!/usr/bin/env python3
"""Instant restart of redis-nvm against stock RDB and AOF loading, under a client load.

Role: checks the restart targets of the instant restart (DESIGN.md, "Targets"): the module
answers a read of any key <= 100 ms after the process starts, whatever the data size; its
background warm-up has the whole dataset in DRAM no later than stock Redis has loaded the
same data from an RDB (<= 1.0x), while clients run; and that load's latency during the
warm-up stays close to its latency after it (p99.9 within 2x, no request over 5 ms).
Configurations:
  nvm  module, pool on /dev/shm (--pool-dir), mode emulate, --save "" --appendonly no
  rdb  stock, --save "" --appendonly no --rdbcompression no, loading dump.rdb (made by
       SAVE on this server after the dataset was loaded into it)
  aof  stock, --appendonly yes --appendfsync everysec --aof-use-rdb-preamble no
       --auto-aof-rewrite-percentage 0, so the AOF is the command log of the load itself
The dataset (bench/dataset.py) is loaded into each server through real write commands
(redis-cli --pipe); the module's log is folded (log_records:0), the AOF written (and a
copy of it kept), the RDB saved; then each server is killed with SIGKILL. Each run
restarts every config once (interleaved, the starting config rotating) and kills it
with SIGKILL again afterwards; only one server runs at a time. Per restart, from the
moment the server process is spawned (all times on CLOCK_MONOTONIC, which
time.perf_counter_ns reads in every process):
  first read   the first GET of a random dataset key (a new random `key:%012d` for every
               request) answered with the dataset's value for that key; one request in
               flight, re-sent 5 ms after a -LOADING/-BUSY (stock answers -LOADING while
               loading; the module answers nothing until it serves)
  fully loaded module: NVM.INFO warmup_state:done; stock: INFO persistence loading:0;
               polled every 10 ms on a connection of its own (the time the first such
               reply arrived); the server's own figures come from its log
               (module: `serving at T ms` + `warm-up done in X s`; stock: `DB loaded ...
               seconds`) and NVM.INFO
  client load  --load-clients processes (default 4; processes, not threads, so that no
               GIL hand-off adds to the measured latency), started before the server and
               released as soon as the port accepts a connection; each has one
               connection and sends, one at a time (P1), GET or SET (--set-ratio 0.5) of
               a uniformly random dataset key; a SET writes the dataset's own value, so
               every GET must return exactly the dataset's value (counted as wrong values
               otherwise) and every restart starts from the same data. Every request's
               latency is time.perf_counter_ns around send + reply. The load runs on
               for --after-seconds (5) after the server is fully loaded.
               Samples are put in windows by the time they were sent:
                 wait     before the first read: the module's start-up (requests queued
                          until it serves); stock: the whole load (-LOADING = not served)
                 warm-up  from the first read until fully loaded (module; ~empty for stock)
                 after    from fully loaded to the end of the load
After each restart: DBSIZE must equal the dataset's key count (stock: also loading:0),
the module's NVM.INFO warm-up counters and in_doubt_writes (must be 0: the report's
durability check) are recorded, the module's log is folded
(log_records:0) and the AOF is put back to its copy, so that every restart reads the
same files; then SIGKILL.
The report (markdown, stdout) gives medians over the runs, the worst max, ratios
module/RDB and module/AOF, the targets' verdicts, the dataset sizes and the exact commands.
Standard library only (Python 3.11). Exit status: 0 when the report is complete
(whatever the verdict), 2 when a configuration or a restart failed, 1 on a harness
error, 130 when interrupted. Servers, load clients, pool, RDB and AOF files are removed
on every path.
"""

import argparse
import array
import bisect
import datetime
import math
import multiprocessing
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
from dataset import HarnessError, log  # noqa: E402

ALL_CONFIGS = ["nvm", "rdb", "aof"]
POLL = 0.005  # first-read probe: re-send after -LOADING/-BUSY, connect retry
STATUS_EVERY = 0.010  # NVM.INFO / INFO persistence poll
MODULE_OPEN = re.compile(r"redis-nvm: pool opened in (\d+) ms")
MODULE_SERVING = re.compile(r"redis-nvm: serving at (\d+|\?) ms after the process started \((\d+) ms of "
                            r"start-up\): (\d+) keys in the key space, (\d+) log records folded into it first")
MODULE_WARM = re.compile(r"redis-nvm: warm-up done in ([\d.]+) s: (\d+) keys loaded in the background, "
                         r"(\d+) faulted in by commands, (\d+) not brought in .*? of (\d+); (\d+) slices, "
                         r"the longest (\d+) us")
STOCK_DONE = re.compile(r"DB loaded from (disk|append only file): ([\d.]+) seconds")
FIRST_READ_TARGET_MS = 100
LOAD_TARGET_VS_RDB = 1.0
P999_TARGET_RATIO = 2.0
STALL_MS = 5.0
WINDOWS = ["wait", "warm-up", "after"]
WARM_FIELDS = ["pool_open_ms", "serving_at_ms", "recovery_ms", "recovery_records", "warmup_state",
               "warmup_keys_total", "warmup_keys_loaded", "warmup_keys_faulted", "warmup_keys_dropped",
               "warmup_damaged", "warmup_slices", "warmup_longest_slice_us", "warmup_waits_for_the_walk", "warmup_ms"]

# load client sample codes
GET_OK, SET_OK, NOT_SERVED, ERROR, WRONG = 0, 1, 2, 3, 4
# load client flag
WAIT, GO, STOP = 0, 1, 2


class Config:
    def __init__(self, name, server):
        self.name = name
        self.server = server
        self.error = None
        self.load = None
        self.stats = {}
        self.file_size = None  # rdb: dump.rdb; aof: AOF files; nvm: pool file
        self.aof_copy = None  # aof: the pristine appendonlydir, put back before every restart
        self.samples = []  # one dict per restart (see measure)
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


def prepare(cfg, ds, args, run):
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
    if cfg.name == "aof":
        # the load's SETs append to the AOF: every restart gets this copy back first
        cfg.aof_copy = run.disk / "aof-copy"
        shutil.copytree(srv.dir / "appendonlydir", cfg.aof_copy)
    log(f"{cfg.name}: ready (killed with SIGKILL)")


def restore_aof(cfg):
    d = cfg.server.dir / "appendonlydir"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(cfg.aof_copy, d)


# --------------------------------------------------------------------------- client load

def _reply_end(buf):
    """The end of the one reply at the start of buf, or -1 if it is not complete."""
    e = buf.find(b"\r\n")
    if e < 0:
        return -1
    if buf[:1] == b"$":
        n = int(buf[1:e])
        end = e + 2 if n < 0 else e + 4 + n
        return end if len(buf) >= end else -1
    return e + 2  # +OK, -ERR, :n (no arrays expected)


def load_worker(port, keys, set_ratio, value, seed, flag, out):
    """One load client (a forked process): waits for GO, then GET/SET of random dataset
    keys, one at a time, until STOP; sends its samples back through `out`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    sent, lats, codes = array.array("q"), array.array("q"), array.array("b")
    errors = []
    note = None
    sock = None
    try:
        while flag.value == WAIT:
            time.sleep(0.0005)
        if flag.value == STOP:
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=120)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rnd = random.Random(seed)
        now = time.perf_counter_ns
        recv, sendall = sock.recv, sock.sendall
        s_app, l_app, c_app = sent.append, lats.append, codes.append
        while flag.value != STOP:
            i = rnd.randrange(keys)
            val = value(i)
            if rnd.random() < set_ratio:
                req = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$200\r\n%s\r\n" % (i, val)
                want, op = b"+OK\r\n", SET_OK
            else:
                req = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n" % i
                want, op = b"$200\r\n" + val + b"\r\n", GET_OK
            t = now()
            sendall(req)
            buf = recv(65536)
            while True:
                if not buf:
                    raise ConnectionError("server closed the connection")
                end = _reply_end(buf)
                if end >= 0:
                    break
                more = recv(65536)
                if not more:
                    raise ConnectionError("server closed the connection")
                buf += more
            lat = now() - t
            if end != len(buf):
                raise HarnessError(f"unexpected extra reply data {buf[end:end + 40]!r}")
            if buf == want:
                code = op
            elif buf.startswith((b"-LOADING", b"-BUSY")):
                code = NOT_SERVED
            elif buf[:1] == b"-":
                code = ERROR
                if len(errors) < 5:
                    errors.append(buf[:200].decode(errors="replace").strip())
            else:
                code = WRONG
                if len(errors) < 5:
                    errors.append(f"{'SET' if op == SET_OK else 'GET'} key:{i:012d} answered {buf[:60]!r}")
            s_app(t)
            l_app(lat)
            c_app(code)
    except Exception as e:  # noqa: BLE001 - reported by the harness
        note = f"{type(e).__name__}: {e}"
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        try:
            out.send((sent.tobytes(), lats.tobytes(), codes.tobytes(), errors, note))
        except (OSError, ValueError):
            pass
        out.close()


class LoadClients:
    """The load client processes of one restart."""

    def __init__(self, ds, args, port, tag):
        mp = multiprocessing.get_context("fork")
        self.flag = mp.RawValue("i", WAIT)
        self.procs = []
        for w in range(args.load_clients):
            rd, wr = mp.Pipe(duplex=False)
            p = mp.Process(target=load_worker, daemon=True,
                           args=(port, ds.keys, args.set_ratio, ds.value, f"{tag}-{w}", self.flag, wr))
            p.start()
            wr.close()
            self.procs.append((p, rd))

    def go(self):
        self.flag.value = GO

    def stop(self, timeout=60):
        """Stops the clients; returns (sent ns, latency ns, code) arrays and their notes."""
        self.flag.value = STOP
        sent, lats, codes = array.array("q"), array.array("q"), array.array("b")
        notes, errors = [], []
        for p, rd in self.procs:
            if rd.poll(timeout):
                try:
                    s, lt, c, errs, note = rd.recv()
                except EOFError:
                    notes.append(f"client pid {p.pid} exited without its samples (status {p.exitcode})")
                    continue
                sent.frombytes(s)
                lats.frombytes(lt)
                codes.frombytes(c)
                errors += errs
                if note:
                    notes.append(note)
            else:
                notes.append(f"client pid {p.pid}: no samples within {timeout}s")
        self.kill()
        return sent, lats, codes, notes, errors

    def kill(self):
        """Ends the clients at once (after stop() they have sent their samples and exited;
        on an error path they may be blocked writing them to a pipe no one reads)."""
        self.flag.value = STOP
        for p, rd in self.procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
            rd.close()
        self.procs = []


def cpu_snapshot(pid):
    """(CPU s of the main thread, CPU s of the whole process incl. ended threads, the main
    thread's involuntary context switches), or None."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        f = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        main = (int(f[11]) + int(f[12])) / tick
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(f[11]) + int(f[12])) / tick
        st = Path(f"/proc/{pid}/task/{pid}/status").read_text()
        m = re.search(r"nonvoluntary_ctxt_switches:\s*(\d+)", st)
        return main, total, int(m.group(1)) if m else 0
    except (OSError, IndexError, ValueError):
        return None


def pct(sorted_values, q):
    """The q-quantile (nearest rank) of a sorted list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def window_stats(sent, lats, codes, replies, lo, hi, t0):
    """Stats of the samples sent in [lo, hi) (ns): served requests' latency in ms; and the
    silences in `replies` (every reply any load client got, sorted) that start in the
    window: with several closed-loop clients the server answers someone every few tens of
    us, so a silence over STALL_MS is the server answering no one (or every client off
    the CPU at once), where one slow request alone may be just its client descheduled."""
    served, slow = [], []
    n_get = n_set = not_served = errors = wrong = 0
    for s, lt, c in zip(sent, lats, codes):
        if s < lo or s >= hi:
            continue
        if c == GET_OK or c == SET_OK:
            served.append(lt)
            if c == GET_OK:
                n_get += 1
            else:
                n_set += 1
            if lt > STALL_MS * 1e6:
                slow.append(((s - t0) / 1e6, lt / 1e6, "GET" if c == GET_OK else "SET"))
        elif c == NOT_SERVED:
            not_served += 1
        elif c == ERROR:
            errors += 1
        else:
            wrong += 1
    served.sort()
    secs = max(0, hi - lo) / 1e9
    ms = (lambda v: None if v is None else v / 1e6)
    silences = []
    i, j = bisect.bisect_left(replies, lo), bisect.bisect_left(replies, hi)
    for a, b in zip(replies[i:j], replies[i + 1:j + 1]):
        if b - a > STALL_MS * 1e6:
            silences.append(((a - t0) / 1e6, (b - a) / 1e6))
    return {"seconds": secs, "served": len(served), "gets": n_get, "sets": n_set,
            "ops_per_sec": len(served) / secs if secs > 0 else None,
            "not_served": not_served, "errors": errors, "wrong": wrong,
            "p50": ms(pct(served, 0.5)), "p99": ms(pct(served, 0.99)), "p999": ms(pct(served, 0.999)),
            "max": ms(served[-1] if served else None), "stalls": len(slow),
            "silences": len(silences), "silence_max": max((x[1] for x in silences), default=0.0),
            "longest_silences": sorted(silences, key=lambda x: -x[1])[:5],
            "worst": sorted(slow, key=lambda x: -x[1])[:5]}


# --------------------------------------------------------------------------- one restart

def measure(cfg, ds, args, run_no):
    """One restart under the client load: spawn, probe, poll, let the load run on, verify,
    fold (module), SIGKILL. Returns a sample dict."""
    srv = cfg.server
    if cfg.aof_copy is not None:
        t = time.monotonic()
        restore_aof(cfg)
        log(f"{cfg.name}: AOF copy put back in {time.monotonic() - t:.1f}s")
    now = time.perf_counter_ns
    rnd = random.Random(f"probe-{cfg.name}-{run_no}")
    clients = LoadClients(ds, args, srv.port, f"{cfg.name}-{run_no}")
    probe = status = None
    probe_key = None  # key index of the GET in flight
    retry_at = 0
    status_pending = None  # what was sent: "poll" or "dbsize"
    status_due = 0
    dbsize_during = None  # a whole-keyspace command's answer while loading / warming up
    accepted = first = full = None
    full_info = {}
    busy = status_polls = 0
    cpu_done = cpu_end = end_load = None
    poll_times = []  # when each status reply arrived
    poll_ns, after_ns, timeout_ns = int(POLL * 1e9), int(args.after_seconds * 1e9), int(args.start_timeout * 1e9)
    status_cmd = ("NVM.INFO",) if srv.is_module else ("INFO", "persistence")
    load_before = os.getloadavg()[0]
    t0 = now()
    srv.spawn()
    try:
        while True:
            t = now()
            if first is not None and full is not None and t >= full + after_ns:
                break
            if t - t0 > timeout_ns:
                raise HarnessError(f"{cfg.name}: not loaded {args.start_timeout}s after start "
                                   f"(first read {'seen' if first else 'not seen'}, fully loaded "
                                   f"{'seen' if full else 'not seen'}); tail of {srv.logfile}:\n{D.tail(srv.logfile)}")
            if not srv.alive():
                raise srv.died()
            if first is None and probe is None and t >= retry_at:
                try:
                    probe = D.Resp(srv.port, timeout=5)
                except (ConnectionRefusedError, socket.timeout):
                    retry_at = t + poll_ns
                if probe is not None and accepted is None:
                    accepted = now()
                    clients.go()
                    status = D.Resp(srv.port, timeout=5)
            if probe is not None and probe_key is None and t >= retry_at:
                probe_key = rnd.randrange(ds.keys)
                probe.send("GET", ds.key(probe_key))
            if status is not None and status_pending is None and t >= status_due:
                if dbsize_during is None and status_polls > 0 and full is None:
                    status.send("DBSIZE")
                    status_pending = "dbsize"
                else:
                    status.send(*status_cmd)
                    status_pending = "poll"
                status_due = t + int(STATUS_EVERY * 1e9)
            socks = [c.sock for c, on in ((probe, probe_key is not None), (status, status_pending)) if c and on]
            wait = POLL if status is None else max(0.0, min(POLL, (status_due - now()) / 1e9))
            if socks:
                ready, _, _ = select.select(socks, [], [], wait)
            else:
                time.sleep(wait)
                ready = []
            if probe is not None and probe.sock in ready:
                r = probe.poll_reply(0)
                if r is not D.Resp.NOTHING:
                    tr = now()
                    if r == ds.value(probe_key):
                        first = tr
                        probe.close()
                        probe = None
                    elif isinstance(r, D.RespError) and r.startswith(("LOADING", "BUSY")):
                        busy += 1
                        retry_at = tr + poll_ns
                    else:
                        raise HarnessError(f"{cfg.name}: GET {ds.key(probe_key).decode()} answered {r!r:.100}")
                    probe_key = None
            if status is not None and status.sock in ready:
                r = status.poll_reply(0)
                if r is not D.Resp.NOTHING:
                    tr = now()
                    what, status_pending = status_pending, None
                    if what == "dbsize":
                        dbsize_during = f"{'-' if isinstance(r, D.RespError) else ''}{D.text(r)}"
                    elif isinstance(r, D.RespError):
                        raise HarnessError(f"{cfg.name}: {' '.join(status_cmd)} answered -{r}")
                    else:
                        status_polls += 1
                        poll_times.append(tr)
                        info = D.parse_info(D.text(r))
                        loaded = (info.get("warmup_state") in ("done", "none") if srv.is_module
                                  else info.get("loading") == "0")
                        if loaded and full is None:
                            full, full_info = tr, info
                            cpu_done = cpu_snapshot(srv.proc.pid)
        cpu_end, end_load = cpu_snapshot(srv.proc.pid), now()
        sent, lats, codes, notes, errors = clients.stop()
    except OSError as e:
        time.sleep(0.1)
        if not srv.alive():
            raise srv.died() from e
        raise
    finally:
        clients.kill()
        for c in (probe, status):
            if c is not None:
                c.close()
    text = srv.log_since_start()
    s = {"first_ms": (first - t0) / 1e6, "full_ms": (full - t0) / 1e6, "accepted_ms": (accepted - t0) / 1e6,
         "busy": busy, "dbsize_during": dbsize_during, "client_notes": notes, "client_errors": errors,
         "requests": len(sent), "cpu": None}
    if cpu_done and cpu_end:
        up_s, after_s = (full - t0) / 1e9, (end_load - full) / 1e9
        s["cpu"] = {"up": (cpu_done[0], max(0.0, cpu_done[1] - cpu_done[0]), cpu_done[2] / up_s),
                    "after": (cpu_end[0] - cpu_done[0],
                              max(0.0, (cpu_end[1] - cpu_end[0]) - (cpu_done[1] - cpu_done[0])),
                              (cpu_end[2] - cpu_done[2]) / after_s)}
    replies = sorted(st + lt for st, lt in zip(sent, lats))
    served = min(first, full)  # stock: loading:0 may be seen just before the probe's first read
    s["windows"] = {
        "wait": window_stats(sent, lats, codes, replies, accepted, served, t0),
        "warm-up": window_stats(sent, lats, codes, replies, served, full, t0),
        "after": window_stats(sent, lats, codes, replies, full, end_load, t0),
    }
    s["loadavg"] = (load_before, os.getloadavg()[0])
    # the longest wait for a status reply (one every 10 ms when the server is responsive)
    gaps = {"warm-up": 0.0, "after": 0.0}
    for a, b in zip(poll_times, poll_times[1:]):
        w = "warm-up" if b <= full else "after"
        gaps[w] = max(gaps[w], (b - a) / 1e6)
    s["poll_gap_ms"] = gaps
    s["poll_times"] = len(poll_times)
    # requests in flight when the warm-up / load ended (sent before, answered within the
    # last 5 ms before the done reply or later): the longest shows what ending it cost
    s["end_stall_ms"] = max((lt / 1e6 for st, lt, c in zip(sent, lats, codes)
                             if c in (GET_OK, SET_OK) and st < full and st + lt >= full - 5_000_000), default=None)
    if srv.is_module:
        ni = srv.nvm_info()
        s["nvm"] = {k: ni.get(k) for k in WARM_FIELDS}
        s["in_doubt_writes"] = ni.get("in_doubt_writes")
        s["nvm_at_done"] = {k: full_info.get(k) for k in WARM_FIELDS}
        m = MODULE_OPEN.search(text)
        s["log_open_ms"] = float(m.group(1)) if m else None
        m = MODULE_SERVING.search(text)
        s["log_serving_ms"] = float(m.group(1)) if m and m.group(1) != "?" else None
        s["log_startup_ms"] = float(m.group(2)) if m else None
        s["log_folded"] = int(m.group(4)) if m else None
        m = MODULE_WARM.search(text)
        s["log_warm_s"] = float(m.group(1)) if m else None
        s["log_warm"] = m.groups() if m else None
        try:
            s["reported_ms"] = float(ni["serving_at_ms"]) + float(ni["warmup_ms"])
        except (KeyError, ValueError):
            s["reported_ms"] = None
    else:
        m = STOCK_DONE.search(text)
        s["reported_ms"] = float(m.group(2)) * 1000 if m else None
        loading = srv.info("persistence").get("loading")
        if loading != "0":
            raise HarnessError(f"{cfg.name}: INFO persistence loading:{loading} after the restart")
    s["dbsize"] = srv.dbsize()
    if s["dbsize"] != ds.expected_keys():
        raise HarnessError(f"{cfg.name}: DBSIZE {s['dbsize']} after restart, expected {ds.expected_keys()}")
    if srv.is_module:
        D.wait_folded(srv)  # the next restart starts from a folded pool, like the first
    srv.kill9()
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        Path(args.keep_logs, f"{cfg.name}-run{run_no}.log").write_text(srv.log_since_start())
    if notes:
        log(f"{cfg.name}: load clients: {'; '.join(notes)}")
    return s


# --------------------------------------------------------------------------- report

def fmt_ms(v):
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def f3(v):
    return "-" if v is None else f"{v:.3f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.3f}x"


def worst(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def wmed(c, win, key):
    return D.median([s["windows"][win][key] for s in c.samples])


def nvm_med(c, key, src="nvm"):
    vals = []
    for s in c.samples:
        try:
            vals.append(float(s[src][key]))
        except (KeyError, TypeError, ValueError):
            pass
    return D.median(vals)


def report(args, ds, cfgs, disk_root, disk_fs, pool_run, started, finished):
    lines = []
    add = lines.append
    add("# redis-nvm instant restart under a client load, side by side")
    add("")
    add(f"- date: {started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- command: `{shlex.join(['python3', 'bench/restart.py'] + sys.argv[1:])}`")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))} (shared by the server, "
        f"its threads, the {args.load_clients} load clients and the harness, and whatever else runs: "
        "see the load averages under Per restart)")
    add(f"- server: `{args.server}`: {D.run_version(args.server)}")
    add(f"- module: `{args.module}`" + ("" if Path(args.module).is_file() else " (NOT FOUND)")
        + f", pool size {args.pool_size}, pool dir `{pool_run}` ({D.fs_type(pool_run)})")
    add(f"- dataset: {ds.describe()}: {ds.expected_keys()} keys, loaded with `{args.cli} --pipe` "
        f"in chunks of {args.chunk} commands")
    add(f"- runs: {args.runs} restarts per config, interleaved, median reported (max: the worst run); "
        "times from spawning the server process")
    add(f"- client load: {args.load_clients} processes, one connection each, P1, "
        f"{args.set_ratio:.0%} SET / {100 - args.set_ratio * 100:.0f}% GET of uniformly random `key:%012d` "
        f"in 0..{ds.keys - 1}, SET with the dataset's value; released when the port first accepts; "
        f"runs until {args.after_seconds:g} s after fully loaded")
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
            note = "appendonlydir/*.aof (copy put back before every restart)"
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
    wrong = {c.name: sum(s["windows"][w]["wrong"] + s["windows"][w]["errors"] for s in c.samples for w in WINDOWS)
             for c in cfgs}
    checked = {c.name: sum(s["windows"][w]["gets"] for s in c.samples for w in WINDOWS) for c in cfgs}
    add("value check (every GET of the load returns the dataset's value, no error reply other than "
        "-LOADING/-BUSY): " + ", ".join(f"{k} {checked[k]} GETs, {wrong[k]} wrong/errors" for k in wrong)
        + f": {'PASS' if not any(wrong.values()) and all(c.samples for c in cfgs) else 'FAIL'}")
    add("")

    under = "under the client load" if args.load_clients else "without a client load (--load-clients 0)"
    add(f"## Restart time {under} (ms, median)")
    add("")
    add("| config | first read | fully loaded | server's own figure | probe -LOADING/-BUSY | raw first read "
        "| raw fully loaded |")
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
        what = ("NVM.INFO `serving_at_ms` + `warmup_ms`" if c.name == "nvm" else "`DB loaded ... seconds`")
        add(f"| {c.name} | {fmt_ms(f)} | {fmt_ms(fl)} | {fmt_ms(rp)} ({what}) "
            f"| {'/'.join(str(s['busy']) for s in c.samples) or '-'} | {raw_f} | {raw_fl} |")
    add("")
    add("first read: a GET of a random dataset key answered with its value; fully loaded: module "
        "`warmup_state:done`, stock `loading:0` (polled every 10 ms).")
    add("")
    nf, nfl = meds.get("nvm", (None, None))
    for other in ("rdb", "aof"):
        if other in meds:
            of, ofl = meds[other]
            add(f"ratio module/{other.upper()}: first read {ratio(nf, of)}, fully loaded {ratio(nfl, ofl)}")
            add("")
    if nf is None:
        add(f"target first read <= {FIRST_READ_TARGET_MS} ms: N/A (nvm not measured)")
    else:
        add(f"target first read <= {FIRST_READ_TARGET_MS} ms after start: "
            f"{'PASS' if nf <= FIRST_READ_TARGET_MS else 'FAIL'} ({fmt_ms(nf)} ms at {ds.expected_keys()} keys; "
            f"worst run {fmt_ms(worst([s['first_ms'] for c in cfgs if c.name == 'nvm' for s in c.samples]))} ms)")
    add("")
    if nfl is not None and meds.get("rdb", (None, None))[1] is not None:
        rfl = meds["rdb"][1]
        add(f"target fully loaded ({under}) <= {LOAD_TARGET_VS_RDB}x RDB: "
            f"{'PASS' if nfl <= LOAD_TARGET_VS_RDB * rfl else 'FAIL'} ({ratio(nfl, rfl)}: {fmt_ms(nfl)} vs {fmt_ms(rfl)} ms)")
    else:
        add(f"target fully loaded ({under}) <= {LOAD_TARGET_VS_RDB}x RDB: N/A (nvm or rdb not measured)")
    add("")

    nvm = next((c for c in cfgs if c.name == "nvm" and c.samples), None)
    if nvm is not None:
        add("## Module start-up and warm-up (median; raw per run)")
        add("")
        add("| figure | median | per run | source |")
        add("|---|---:|---|---|")
        rows = [
            ("pool opened (ms)", "log_open_ms", None, "log `pool opened in N ms`"),
            ("serving at (ms after the process started)", "log_serving_ms", None,
             "log `serving at T ms` (10 ms resolution)"),
            ("start-up (ms)", "log_startup_ms", None, "log `(S ms of start-up)`"),
            ("log records folded at start-up", "log_folded", None, "log `F log records folded`"),
            ("pool_open_ms", "pool_open_ms", "nvm", "NVM.INFO"),
            ("serving_at_ms", "serving_at_ms", "nvm", "NVM.INFO (from /proc tick counters: 10 ms resolution)"),
            ("warmup_ms", "warmup_ms", "nvm", "NVM.INFO"),
            ("warm-up done in (s)", "log_warm_s", None, "log `warm-up done in X s`"),
            ("warmup_keys_total", "warmup_keys_total", "nvm", "NVM.INFO"),
            ("warmup_keys_loaded", "warmup_keys_loaded", "nvm", "NVM.INFO (background)"),
            ("warmup_keys_faulted", "warmup_keys_faulted", "nvm", "NVM.INFO (by commands)"),
            ("warmup_keys_dropped", "warmup_keys_dropped", "nvm", "NVM.INFO"),
            ("warmup_damaged", "warmup_damaged", "nvm", "NVM.INFO"),
            ("warmup_slices", "warmup_slices", "nvm", "NVM.INFO"),
            ("warmup_longest_slice_us", "warmup_longest_slice_us", "nvm", "NVM.INFO"),
            ("warmup_waits_for_the_walk", "warmup_waits_for_the_walk", "nvm", "NVM.INFO (- : an older module)"),
        ]
        for label, key, src, where in rows:
            if src:
                vals = [s[src].get(key) for s in nvm.samples]
                med = nvm_med(nvm, key, src)
            else:
                vals = [s.get(key) for s in nvm.samples]
                med = D.median(vals)
            raw = " ".join("-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for v in vals)
            add(f"| {label} | {'-' if med is None else f'{med:g}'} | {raw} | {where} |")
        add("")
        consistent = all(
            s["nvm"].get("warmup_keys_total") is not None
            and int(s["nvm"]["warmup_keys_loaded"]) + int(s["nvm"]["warmup_keys_faulted"])
            == int(s["nvm"]["warmup_keys_total"]) == ds.expected_keys()
            and s["nvm"].get("warmup_damaged") == "0" and s["nvm"] == s["nvm_at_done"]
            for s in nvm.samples)
        add(f"warm-up check (loaded + faulted = total = {ds.expected_keys()}, none damaged, NVM.INFO "
            f"unchanged from warmup_state:done to the end): {'PASS' if consistent else 'FAIL'}")
        add("")
        in_doubt = [s.get("in_doubt_writes") for s in nvm.samples]
        add(f"durability check (NVM.INFO in_doubt_writes at the end of every run, after the client load): "
            f"{'PASS' if all(v == '0' for v in in_doubt) else 'FAIL'} ({' '.join(str(v) for v in in_doubt)})")
        add("")
        add("Note: `warmup_keys_dropped` (and the log's `not brought in`) also counts the keys a command "
            "named after the warm-up had already loaded them (the fault-in finds them in DRAM); nothing "
            "in this dataset expires and nothing is flushed, so here it is that count, and loaded + "
            "faulted + dropped exceeds the total by it.")
        add("")
        rate = D.median([float(s["nvm"]["warmup_keys_total"]) / float(s["nvm"]["warmup_ms"]) * 1000
                         for s in nvm.samples if s["nvm"].get("warmup_ms") not in (None, "0")])
        add(f"warm-up rate {under}: {'-' if rate is None else f'{rate:.0f}'} keys/s (total / warmup_ms)")
        add("")
        add("whole-keyspace command while warming up (DBSIZE, sent once right after the first NVM.INFO "
            "poll): " + "; ".join(f"`{(s['dbsize_during'] or '(not sent: done before)')[:110]}`" for s in nvm.samples))
        add("")

    add("## Client load latency: while warming up / loading vs after (ms)")
    add("")
    add("Windows by send time: **wait** = from the port accepting until the first read (module: "
        "start-up, requests queued until it serves; stock: the whole load, answered -LOADING = not "
        "served); **warm-up** = from the first read until fully loaded (module; stock: empty or a few ms); "
        f"**after** = the {args.after_seconds:g} s after. Latencies of served requests only; medians over "
        "the runs, max = the worst run. A *silence* is a time in which no load client got any reply "
        f"(with {args.load_clients} closed-loop clients the server answers one every few tens of us): the server "
        "stalled, or every client was off the CPU at once; one slow request without a silence is its client "
        "being descheduled.")
    add("")
    add("| config | window | seconds | served | ops/s | not served | errors/wrong | p50 | p99 | p99.9 | max "
        f"| > {STALL_MS:g} ms per run | silences > {STALL_MS:g} ms per run | longest silence |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cfgs:
        if not c.samples:
            continue
        for w in WINDOWS:
            ws = [s["windows"][w] for s in c.samples]
            served = D.median([x["served"] for x in ws])
            ops = D.median([x["ops_per_sec"] for x in ws])
            add(f"| {c.name} | {w} | {f3(wmed(c, w, 'seconds'))} | {served:.0f} | "
                f"{'-' if ops is None else f'{ops:.0f}'} | {D.median([x['not_served'] for x in ws]):.0f} | "
                f"{sum(x['errors'] + x['wrong'] for x in ws)} | {f3(wmed(c, w, 'p50'))} | {f3(wmed(c, w, 'p99'))} "
                f"| {f3(wmed(c, w, 'p999'))} | {f3(worst([x['max'] for x in ws]))} "
                f"| {'/'.join(str(x['stalls']) for x in ws)} | {'/'.join(str(x['silences']) for x in ws)} "
                f"| {f3(worst([x['silence_max'] for x in ws]))} |")
    add("")
    if nvm is not None:
        pw, pa = wmed(nvm, "warm-up", "p999"), wmed(nvm, "after", "p999")
        mw = worst([s["windows"]["warm-up"]["max"] for s in nvm.samples])
        if pw is None or pa is None:
            add(f"target p99.9 warm-up <= {P999_TARGET_RATIO:g}x after (module): N/A (no samples in a window)")
        else:
            per_run = " / ".join(ratio(s["windows"]["warm-up"]["p999"], s["windows"]["after"]["p999"])
                                 for s in nvm.samples)
            add(f"target p99.9 warm-up <= {P999_TARGET_RATIO:g}x after (module): "
                f"{'PASS' if pw <= P999_TARGET_RATIO * pa else 'FAIL'} ({f3(pw)} vs {f3(pa)} ms: {ratio(pw, pa)}; "
                f"per run, warm-up / after of the same restart: {per_run}; an after window slowed by the host "
                "makes a ratio look better than it is, see the reference line)")
        add("")
        ww = worst([s["windows"]["warm-up"]["silence_max"] for s in nvm.samples])
        add(f"target no stall > {STALL_MS:g} ms while warming up (module, worst run): "
            + ("N/A" if mw is None else f"{'PASS' if mw <= STALL_MS else 'FAIL'} (max {f3(mw)} ms; the longest "
               f"silence, no client answered: {f3(ww)} ms)"))
        add("")
        add("longest request in flight when the warm-up ended (sent before the done reply, answered in the "
            "5 ms before it or later), per run: " + " / ".join(fmt_ms(s["end_stall_ms"]) for s in nvm.samples) + " ms")
        add("")
        mwait = worst([s["windows"]["wait"]["max"] for s in nvm.samples])
        add(f"module wait window: requests sent before it served waited up to {f3(mwait)} ms (not part of the "
            "targets: the first-read target covers the start-up)")
        add("")
        add(f"warmup_keys_faulted at the end (median): {fmt_ms(nvm_med(nvm, 'warmup_keys_faulted'))} of "
            f"{fmt_ms(nvm_med(nvm, 'warmup_keys_total'))} keys")
        add("")
        slow = [(r + 1, w, x) for r, s in enumerate(nvm.samples) for w in ("warm-up", "after")
                for x in s["windows"][w]["worst"]]
        if slow:
            add(f"module requests over {STALL_MS:g} ms (run, window, sent at ms after spawn, latency ms, op; "
                "the 5 slowest per window): "
                + "; ".join(f"run {r} {w} @{t:.0f}: {lt:.2f} {op}" for r, w, (t, lt, op) in slow))
            add("")
        sil = [(r + 1, w, x) for r, s in enumerate(nvm.samples) for w in ("warm-up", "after")
               for x in s["windows"][w]["longest_silences"]]
        if sil:
            add(f"module silences over {STALL_MS:g} ms (run, window, from ms after spawn, length ms; the 5 longest "
                "per window): " + "; ".join(f"run {r} {w} @{t:.0f}: {g:.2f}" for r, w, (t, g) in sil))
            add("")

    refs = [c for c in cfgs if c.name != "nvm" and c.samples]
    if refs:
        add("reference (stock after loading, the same load without any restart work: what this host and "
            "the Python clients give): " + "; ".join(
                f"{c.name} p99.9 {f3(wmed(c, 'after', 'p999'))} ms, max {f3(worst([s['windows']['after']['max'] for s in c.samples]))} ms"
                for c in refs))
        add("")
    if any(s.get("cpu") for c in cfgs for s in c.samples):
        add("Server CPU (median over the runs): until fully loaded / after; main thread CPU s, other threads' "
            "CPU s (module: replayer, warm-up walker; ended threads included), main thread's involuntary "
            "context switches per second (it was runnable but another task had the CPU):")
        add("")
        add("| config | main CPU s until loaded | other CPU s until loaded | invol. switches/s until loaded "
            "| main CPU s after | other CPU s after | invol. switches/s after |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        for c in cfgs:
            cs = [s["cpu"] for s in c.samples if s.get("cpu")]
            if not cs:
                continue
            m = lambda ph, i: D.median([x[ph][i] for x in cs])  # noqa: E731
            add(f"| {c.name} | {m('up', 0):.2f} | {m('up', 1):.2f} | {m('up', 2):.0f} | {m('after', 0):.2f} "
                f"| {m('after', 1):.2f} | {m('after', 2):.0f} |")
        add("")

    add("### Per restart")
    add("")
    add("| config | run | first read | fully loaded | port accepted | requests | "
        "wait: served / not served / max | warm-up: served / p99.9 / max | after: served / p99.9 / max "
        "| longest status-reply gap warm-up / after | host load avg (1 min) before / after |")
    add("|---|---:|---:|---:|---:|---:|---|---|---|---|---|")
    for c in cfgs:
        for r, s in enumerate(c.samples):
            W = s["windows"]
            add(f"| {c.name} | {r + 1} | {fmt_ms(s['first_ms'])} | {fmt_ms(s['full_ms'])} | {fmt_ms(s['accepted_ms'])} "
                f"| {s['requests']} | {W['wait']['served']} / {W['wait']['not_served']} / {f3(W['wait']['max'])} "
                f"| {W['warm-up']['served']} / {f3(W['warm-up']['p999'])} / {f3(W['warm-up']['max'])} "
                f"| {W['after']['served']} / {f3(W['after']['p999'])} / {f3(W['after']['max'])} "
                f"| {fmt_ms(s['poll_gap_ms']['warm-up'])} / {fmt_ms(s['poll_gap_ms']['after'])} "
                f"| {s['loadavg'][0]:.2f} / {s['loadavg'][1]:.2f} |")
    add("")
    notes = [(c.name, r + 1, n) for c in cfgs for r, s in enumerate(c.samples)
             for n in s["client_notes"] + s["client_errors"]]
    if notes:
        add("load client notes: " + "; ".join(f"{n} run {r}: {x}" for n, r, x in notes[:20]))
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
        if c.name == "aof":
            add(f"# after loading: cp -r {c.server.dir}/appendonlydir <copy>; before every restart: "
                "rm -r appendonlydir && cp -r <copy> appendonlydir")
        if c.name == "nvm":
            add("# after every restart, before kill -9: poll NVM.INFO until log_records:0")
    add("# each restart: kill -9 <pid>, then the same server command; at once: the probe "
        "(GET key:<random 12 digits> until it answers the dataset's value, re-sent 5 ms after -LOADING/-BUSY), "
        "every 10 ms NVM.INFO (nvm) / INFO persistence (stock) on a second connection, once DBSIZE, and "
        f"{args.load_clients} load clients (RESP over a socket, one request at a time: "
        "SET key:%012d <its dataset value> / GET key:%012d), "
        f"{args.set_ratio:.0%} SETs; after fully loaded + {args.after_seconds:g} s: DBSIZE, INFO persistence / NVM.INFO")
    add("```")
    add("")
    lines += D.errors_section(cfgs)
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(
        description="Instant restart of redis-nvm under a client load vs stock Redis loading an RDB or an "
                    "AOF of the same dataset.",
        epilog="Needs several GB at the default scale: each server holds the dataset in DRAM "
               "(~2 GB at 6.5M keys; only one runs at a time), plus the pool on --pool-dir and the "
               "RDB/AOF (~1.6 GB, ~1.9 GB + its copy) on the work dir, all deleted at the end. "
               "Exit 0 = report complete, 2 = a config failed, 1 = harness error, 130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    D.add_harness_args(ap, ALL_CONFIGS, "RDB, AOF and logs")
    ap.add_argument("--runs", type=int, default=3, help="restarts per config (median reported)")
    ap.add_argument("--load-clients", type=int, default=4,
                    help="client load processes (one connection each; 0: restart without a load)")
    ap.add_argument("--set-ratio", type=float, default=0.5, help="share of SETs in the client load")
    ap.add_argument("--after-seconds", type=float, default=5.0,
                    help="how long the client load runs on after the server is fully loaded")
    ap.add_argument("--port-base", type=int, default=0,
                    help="ports base, base+1, base+2 for nvm, rdb, aof (0: free ports)")
    ap.add_argument("--keep-logs", metavar="DIR",
                    help="copy each restart's server log to DIR/<config>-run<N>.log (the work dir is deleted)")
    ap.add_argument("--start-timeout", type=float, default=900,
                    help="seconds a start or restart may take until fully loaded")
    args = ap.parse_args()
    if args.runs < 1 or args.load_clients < 0 or not 0 <= args.set_ratio <= 1 or args.after_seconds <= 0:
        ap.error("--runs must be >= 1, --load-clients >= 0 (0: no load), --set-ratio in 0..1, --after-seconds > 0")
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
                prepare(c, ds, args, run)
            except (HarnessError, OSError) as e:
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
                    s = measure(c, ds, args, r + 1)
                    c.samples.append(s)
                    W = s["windows"]
                    log(f"run {r + 1}/{args.runs} {c.name}: first read {s['first_ms']:.1f} ms, fully loaded "
                        f"{s['full_ms']:.1f} ms (server: {fmt_ms(s['reported_ms'])} ms); load: warm-up "
                        f"{W['warm-up']['served']} served p99.9 {f3(W['warm-up']['p999'])} max {f3(W['warm-up']['max'])}, "
                        f"after {W['after']['served']} p99.9 {f3(W['after']['p999'])} max {f3(W['after']['max'])}, "
                        f"not served {W['wait']['not_served'] + W['warm-up']['not_served']}"
                        + (f"; faulted {s['nvm'].get('warmup_keys_faulted')}" if c.server.is_module else ""))
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
