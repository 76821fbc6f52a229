#!/usr/bin/env python3
"""Consumer-group commands on a big stream: redis-nvm against stock Redis + AOF, side by side.

Role: measures what the module costs XREADGROUP, XCLAIM and XACK on a stream of 100k
entries (these commands fire no keyspace event: on a stream this big the module logs
XREADGROUP's and XCLAIM's group state read back, and XACK's ids, at the end of the
event-loop iteration), next
to stock Redis with AOF everysec, and checks the issue's targets for XACK. Servers (one at a time, freshly started every round):
  nvm             module, pool on /dev/shm (--pool-dir), mode emulate, size 2gb, default
                  log size, --save "" --appendonly no
  stock-everysec  --save "" --appendonly yes --appendfsync everysec, --dir on disk
Per round, on each server, the stream is built first (not measured), the same way on
both, through real commands sent with `redis-cli --pipe` (its summary must say errors: 0):
  XADD s * f v<i>    i = 0..99999 (--entries), then XGROUP CREATE s g 0
(the module then waits for NVM.INFO log_records:0, so the replayer is quiet when a row
starts; it waits again before the second row). Rows, each N ops (--ops, default 2000),
one at a time on one connection (P1, each reply awaited):
  xreadgroup  XREADGROUP GROUP g c1 COUNT 1 STREAMS s >   (op i must deliver entry v<i>)
  xclaim      XCLAIM s g c2 0 <id> JUSTID   claiming each id row xreadgroup delivered, in
              order (each must reply [<id>])
  xack        XACK s g <id>   acknowledging the ids row xreadgroup delivered, in order
              (each must reply 1; afterwards XPENDING s g must count 0)
Per row the script records:
  ops/s            N / wall time from the first command sent to the last reply
  round trip       client time from sending a command to its reply (median, p99)
  usec_per_call    the server's own time in the command: delta usec / delta calls of
                   cmdstat_xreadgroup / cmdstat_xclaim / cmdstat_xack over the N calls (the main thread's
                   time inside the command; the module's DUMP of the stream runs after it,
                   at BEFORE_SLEEP, and is not in it: see deferred DUMP)
  log bytes/op     module: delta NVM.INFO appended_bytes / N (records + blobs); also the
                   deltas of appended_records, blob_bytes, whole_value_effects and
                   log_full_waits, the deferred DUMP time (delta cmdstat_dump usec / N)
                   and the group read-back time (delta cmdstat_xinfo|stream + xpending usec / N)
  AOF bytes/op     stock: delta INFO persistence aof_current_size / N (read once
                   aof_buffer_length is 0)
Rounds (--runs, default 3): every round starts both servers afresh (fresh pool, stream
rebuilt), one server at a time, the first server alternating; medians over rounds are
reported, with the ratios module/stock of ops/s and usec_per_call. Targets (the issue's,
for the module's XACK): log bytes/op < 200 and usec_per_call < 20. At the end of every
module run NVM.INFO in_doubt_writes must be 0 (a WARNING otherwise).

Shares dataset.py's harness (servers, RESP, redis-cli --pipe, run dirs, cleanup, exit
statuses) and bigvalues.py's commandstats, NVM.INFO and formatting helpers.
Standard library only (Python 3.11). Exit status: 0 when the report is complete
(whatever the verdicts), 2 when a server or a row failed, 1 on a harness error, 130
when interrupted. Servers, helpers, pools and work dirs are removed on every path.
"""

import argparse
import datetime
import os
import shlex
import shutil
import socket
import sys
import time
import types
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py, bigvalues.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bigvalues as B  # noqa: E402  (cmdstat, nvm_snapshot, percentile, fnum, time_ratio, Config)
import dataset as D  # noqa: E402
from dataset import HarnessError, RespError, log  # noqa: E402

KINDS = ["nvm", "stock-everysec"]
POOL_SIZE = "2gb"
STOCK_EXTRA = ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
ENTRIES = 100_000
OPS = 2000
XACK_LOG_LIMIT = 200  # target: module XACK log bytes/op < XACK_LOG_LIMIT
XACK_USEC_LIMIT = 20.0  # target: module XACK usec_per_call < XACK_USEC_LIMIT
OP_TIMEOUT = 120.0


class Row:
    def __init__(self, name, stat, shown):
        self.name = name
        self.stat = stat
        self.shown = shown


ROWS = [
    Row("xreadgroup", "cmdstat_xreadgroup", "XREADGROUP GROUP g c1 COUNT 1 STREAMS s >"),
    Row("xclaim", "cmdstat_xclaim", "XCLAIM s g c2 0 <id> JUSTID"),
    Row("xack", "cmdstat_xack", "XACK s g <id>"),
]
XREADGROUP, XCLAIM, XACK = ROWS


# --------------------------------------------------------------------------- measuring

def make_server(kind, round_no, args, run):
    bins = (args.server, args.cli)
    name = f"{kind}-round{round_no}"
    if kind == "nvm":
        return D.Server(name, "module", bins, run.disk, pool=run.pool / f"{name}.nvm", module=args.module,
                        pool_size=POOL_SIZE)
    return D.Server(name, "stock", bins, run.disk, extra=STOCK_EXTRA)


def aof_persistence(srv, timeout=30):
    """Stock: INFO persistence once the AOF buffer has been written (aof_buffer_length:0),
    so aof_current_size counts every command so far."""
    deadline = time.monotonic() + timeout
    while True:
        p = srv.info("persistence")
        if p.get("aof_enabled") != "1":
            raise HarnessError(f"{srv.name}: INFO persistence says aof_enabled:{p.get('aof_enabled')}")
        if p.get("aof_buffer_length", "0") == "0":
            return p
        if time.monotonic() > deadline:
            raise HarnessError(f"{srv.name}: aof_buffer_length still {p.get('aof_buffer_length')} after {timeout}s")
        time.sleep(0.01)


def build(srv, args):
    """XADD s * f v<i> x entries through redis-cli --pipe, then XGROUP CREATE s g 0;
    module: waits until folded. Returns the seconds it took."""
    t0 = time.monotonic()
    data = b"".join(D.encode(b"XADD", b"s", b"*", b"f", b"v%d" % i) for i in range(args.entries))
    if srv.is_module:
        D.wait_log_room(srv)
    errors, replies, lines = D.send_chunk(args.cli, srv.port, data)
    if errors or replies != args.entries:
        raise HarnessError(f"{srv.name}: building the stream: {errors} errors, {replies}/{args.entries} "
                           f"replies; first lines: {lines[:3]}")
    r = srv.call("XGROUP", "CREATE", "s", "g", "0")
    if r != "OK":
        raise HarnessError(f"{srv.name}: XGROUP CREATE s g 0 replied {r!r}")
    n = srv.call("XLEN", "s")
    if n != args.entries:
        raise HarnessError(f"{srv.name}: XLEN s is {n}, expected {args.entries}")
    if srv.is_module:
        D.wait_folded(srv)
    return time.monotonic() - t0


def delivered_id(srv, reply, i):
    """The id of the one entry an XREADGROUP ... COUNT 1 reply delivers; it must be v<i>."""
    try:
        [[key, [[eid, fields]]]] = reply
    except (TypeError, ValueError):
        raise HarnessError(f"{srv.name}: XREADGROUP op {i}: unexpected reply {reply!r:.200}") from None
    if key != b"s" or fields != [b"f", b"v%d" % i]:
        raise HarnessError(f"{srv.name}: XREADGROUP op {i} delivered {key!r} {eid!r} {fields!r}, "
                           f"expected entry v{i} of s")
    return eid


def snapshot(srv, row):
    s = {"cmd": B.cmdstat(srv, row.stat)}
    if srv.is_module:
        s["dump"] = B.cmdstat(srv, "cmdstat_dump")
        s["readback"] = [B.cmdstat(srv, st) for st in ("cmdstat_xinfo|stream", "cmdstat_xpending")]
        s["nvm"] = B.nvm_snapshot(srv)
    else:
        p = aof_persistence(srv)
        s["aof_size"] = int(p.get("aof_current_size", 0))
        s["aof_rewrites"] = int(p.get("aof_rewrites", 0))
        s["aof_delayed_fsync"] = int(p.get("aof_delayed_fsync", 0))
    return s


def measure(srv, row, wire):
    """Sends the row's N encoded commands one at a time on one connection; one result dict
    (with the replies)."""
    n = len(wire)
    conn = D.Resp(srv.port, timeout=OP_TIMEOUT)
    try:
        conn.call("PING")
        before = snapshot(srv, row)
        rtts, replies = [], []
        start = time.perf_counter_ns()
        for data in wire:
            t0 = time.perf_counter_ns()
            conn.sock.sendall(data)
            r = conn.read(OP_TIMEOUT)
            rtts.append((time.perf_counter_ns() - t0) / 1000)
            if isinstance(r, RespError):
                raise HarnessError(f"{srv.name}: {row.shown} (op {len(replies)}): -{r}")
            replies.append(r)
        wall = (time.perf_counter_ns() - start) / 1e9
        after = snapshot(srv, row)
    finally:
        conn.close()
    calls, usec = after["cmd"][0] - before["cmd"][0], after["cmd"][1] - before["cmd"][1]
    if calls != n:
        raise HarnessError(f"{srv.name}: {row.stat} calls grew by {calls}, expected {n}")
    if after["cmd"][2] != before["cmd"][2] or after["cmd"][3] != before["cmd"][3]:
        raise HarnessError(f"{srv.name}: {row.stat} failed/rejected calls grew during the row")
    res = {"ops": n / wall, "wall": wall, "upc": usec / calls, "rtt_med": D.median(rtts),
           "rtt_p99": B.percentile(rtts, 99), "rtt_max": max(rtts), "replies": replies}
    if srv.is_module:
        d = {k: after["nvm"][k] - before["nvm"][k] for k in B.NVM_FIELDS}
        res["log_per_op"] = d["appended_bytes"] / n
        res["records_per_op"] = d["appended_records"] / n
        res["blob_bytes"] = d["blob_bytes"]
        res["whole_value_effects"] = d["whole_value_effects"]
        res["refused"] = d["refused_writes"]
        res["in_doubt"] = d["in_doubt_writes"]
        res["log_full_waits"] = d["log_full_waits"]
        res["dump_calls"] = after["dump"][0] - before["dump"][0]
        res["dump_per_op"] = (after["dump"][1] - before["dump"][1]) / n
        res["readback_per_op"] = sum(a[1] - b[1] for a, b in zip(after["readback"], before["readback"])) / n
    else:
        res["aof_per_op"] = (after["aof_size"] - before["aof_size"]) / n
        res["aof_rewrites"] = after["aof_rewrites"] - before["aof_rewrites"]
        res["aof_delayed_fsync"] = after["aof_delayed_fsync"] - before["aof_delayed_fsync"]
    return res


def run_row(cfg, srv, round_no, row, wire, check):
    """Measures one row, checks its replies with `check`, stores the result; the module
    then waits for the fold (its time is recorded, not measured in the row)."""
    log(f"round {round_no} {cfg.name}: {row.name} (N={len(wire)})")
    res = measure(srv, row, wire)
    out = check(res["replies"])
    del res["replies"]
    if srv.is_module:
        t0 = time.monotonic()
        D.wait_folded(srv)
        res["fold_s"] = time.monotonic() - t0
    cfg.results.setdefault(row.name, []).append(res)
    log(f"  {res['ops']:,.0f} ops/s, usec_per_call {res['upc']:.1f}, round trip median {res['rtt_med']:.0f} us"
        + (f", log {res['log_per_op']:,.0f} bytes/op, DUMP {res['dump_per_op']:,.0f} us/op, "
           f"fold {res['fold_s']:.1f}s" if srv.is_module else f", AOF {res['aof_per_op']:,.0f} bytes/op"))
    return out


def run_server(cfg, round_no, args, run, servers):
    """Starts a fresh server (fresh pool), builds the stream, measures both rows, checks
    NVM.INFO, stops it."""
    srv = make_server(cfg.name, round_no, args, run)
    servers.append(srv)
    n = args.ops
    try:
        srv.start(args.start_timeout)
        cfg.commands.append(shlex.join(srv.command()))
        log(f"round {round_no} {cfg.name}: building the stream ({args.entries} entries)")
        cfg.build_seconds.append(build(srv, args))
        wire = [D.encode("XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", "s", ">")] * n
        ids = run_row(cfg, srv, round_no, XREADGROUP, wire,
                      lambda replies: [delivered_id(srv, r, i) for i, r in enumerate(replies)])

        def claimed(replies):
            bad = [(i, r) for i, (r, eid) in enumerate(zip(replies, ids)) if r != [eid]]
            if bad:
                raise HarnessError(f"{srv.name}: XCLAIM op {bad[0][0]} replied {bad[0][1]!r:.200}, expected "
                                   f"[{ids[bad[0][0]]!r}] ({len(bad)} such)")

        run_row(cfg, srv, round_no, XCLAIM,
                [D.encode(b"XCLAIM", b"s", b"g", b"c2", b"0", eid, b"JUSTID") for eid in ids], claimed)

        def acked(replies):
            bad = [(i, r) for i, r in enumerate(replies) if r != 1]
            if bad:
                raise HarnessError(f"{srv.name}: XACK op {bad[0][0]} replied {bad[0][1]!r}, expected 1 "
                                   f"({len(bad)} such)")

        run_row(cfg, srv, round_no, XACK, [D.encode(b"XACK", b"s", b"g", eid) for eid in ids], acked)
        pending = srv.call("XPENDING", "s", "g")
        if not pending or pending[0] != 0:
            raise HarnessError(f"{srv.name}: XPENDING s g after the XACKs: {pending!r:.200}, expected a count of 0")
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
        else:
            p = aof_persistence(srv)
            cfg.final.append({"round": round_no, "aof_current_size": p.get("aof_current_size"),
                              "aof_last_write_status": p.get("aof_last_write_status"),
                              "aof_on_disk": D.aof_files_size(srv)})
        cfg.used_memory = srv.info("memory").get("used_memory_human")
    except (HarnessError, OSError, TimeoutError, ConnectionError) as e:
        cfg.run_errors.append(f"round {round_no}: {e}")
        log(f"ERROR {cfg.name} round {round_no}: {e}")
    finally:
        D.kill_helpers()
        srv.stop()
        srv.remove_pool()


# --------------------------------------------------------------------------- report

fnum = B.fnum


def med(cfg, row, key):
    return D.median([r.get(key) for r in cfg.results.get(row.name, [])])


def ratio_text(r):
    return "-" if r is None else f"{r:.2f}x"


def ops_ratio(mo, so):
    return None if mo is None or not so else mo / so


def per_round(cfg, row, key, digits=1):
    return " / ".join(fnum(r.get(key), digits) for r in cfg.results.get(row.name, [])) or "-"


def report(args, cfgs, run, finished, command_line, seconds):
    nvm, stock = cfgs["nvm"], cfgs["stock-everysec"]
    lines = []
    add = lines.append
    add("# redis-nvm: consumer-group commands on a big stream, side by side")
    add("")
    add(f"- command: `{command_line}`")
    add(f"- date: {run.started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')}, "
        f"{seconds:.0f} s)")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- server: `{args.server}`: {D.run_version(args.server)}; cli `{args.cli}` (builds the stream with --pipe)")
    so = Path(args.module)
    built = (datetime.datetime.fromtimestamp(so.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
             if so.is_file() else "NOT FOUND")
    modes = sorted({f"{f.get('mode')}, durability {f.get('durability')}" for f in nvm.final}) or ["(not started)"]
    caps = sorted({f.get("log_capacity") for f in nvm.final if f.get("log_capacity")})
    add(f"- mode: emulation mode, pool on {args.pool_dir} ({D.fs_type(run.pool)}; NVM.INFO mode: {'; '.join(modes)})")
    add(f"- nvm: module `{args.module}` (built {built}), pool {POOL_SIZE} in `{run.pool}`, default log size "
        f"(log_capacity {', '.join(caps) or '-'} bytes), `--save \"\" --appendonly no`")
    add(f"- stock-everysec: `{' '.join(shlex.quote(a) for a in STOCK_EXTRA)}`, --dir in `{run.disk}` "
        f"({run.disk_fs})")
    add(f"- stream: `XADD s * f v<i>` x {args.entries:,} with redis-cli --pipe, then `XGROUP CREATE s g 0` "
        "(not measured; the module then waits for log_records:0, and again before each row)")
    add(f"- rounds: {args.runs}, both servers started afresh every round, one at a time, the first server "
        f"alternating; medians over rounds. Each row: N = {args.ops} ops on one connection, P1, each reply awaited")
    add("")
    add("## Results (medians over rounds)")
    add("")
    add("| row | N | module ops/s | stock ops/s | ratio ops/s module/stock | module usec_per_call "
        "| stock usec_per_call | ratio usec_per_call module/stock | module RT median / p99 µs "
        "| stock RT median / p99 µs | module log bytes/op | stock AOF bytes/op |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in ROWS:
        mo, so_ = med(nvm, row, "ops"), med(stock, row, "ops")
        mu, su = med(nvm, row, "upc"), med(stock, row, "upc")
        add(f"| {row.name} | {args.ops} | {fnum(mo, 0)} | {fnum(so_, 0)} | {ratio_text(ops_ratio(mo, so_))} "
            f"| {fnum(mu)} | {fnum(su)} | {ratio_text(B.time_ratio(mu, su))} "
            f"| {fnum(med(nvm, row, 'rtt_med'), 0)} / {fnum(med(nvm, row, 'rtt_p99'), 0)} "
            f"| {fnum(med(stock, row, 'rtt_med'), 0)} / {fnum(med(stock, row, 'rtt_p99'), 0)} "
            f"| {fnum(med(nvm, row, 'log_per_op'), 0)} | {fnum(med(stock, row, 'aof_per_op'), 0)} |")
    add("")
    add("`ops/s`: N / wall time of the row (first send to last reply). `usec_per_call`: delta `usec` / delta "
        "`calls` of `cmdstat_xreadgroup` / `cmdstat_xclaim` / `cmdstat_xack` over the N calls: the main thread's "
        "time inside the command. The module logs these commands at BEFORE_SLEEP, after the command (the group "
        "state read back, XACK's ids; a stream whole where it cannot), so that capture is not in usec_per_call "
        "(see `group read-back` and `deferred DUMP` below) but is in the round trip and ops/s. `log bytes/op`: "
        "delta NVM.INFO `appended_bytes` (log records + blobs) / N. `AOF bytes/op`: delta INFO persistence "
        "`aof_current_size` / N. Round trip: client send to reply, loopback TCP.")
    add("")
    add("## Targets (module, XACK)")
    add("")
    add("| target | module | stock (for comparison) | verdict |")
    add("|---|---:|---:|---|")
    lp, mu = med(nvm, XACK, "log_per_op"), med(nvm, XACK, "upc")
    add(f"| XACK log bytes/op < {XACK_LOG_LIMIT} | {fnum(lp, 0)} | AOF {fnum(med(stock, XACK, 'aof_per_op'), 0)} "
        f"| {'N/A (not measured)' if lp is None else 'PASS' if lp < XACK_LOG_LIMIT else 'FAIL'} |")
    add(f"| XACK usec_per_call < {XACK_USEC_LIMIT:g} | {fnum(mu)} | {fnum(med(stock, XACK, 'upc'))} "
        f"| {'N/A (not measured)' if mu is None else 'PASS' if mu < XACK_USEC_LIMIT else 'FAIL'} |")
    dp = med(nvm, XACK, "dump_per_op")
    if dp is not None:
        add("")
        add(f"The usec_per_call target counts only the time inside XACK; the module's deferred DUMP of the "
            f"stream adds {fnum(dp)} µs/op of main-thread time at BEFORE_SLEEP (module XACK round-trip median "
            f"{fnum(med(nvm, XACK, 'rtt_med'), 0)} µs vs stock {fnum(med(stock, XACK, 'rtt_med'), 0)} µs).")
    add("")
    for f in nvm.final:
        ok = f.get("in_doubt_writes") == "0"
        add(f"- module round {f['round']}: in_doubt_writes {f.get('in_doubt_writes')}"
            + ("" if ok else " WARNING: writes in doubt")
            + f", refused_writes {f.get('refused_writes')}, replay_apply_errors {f.get('replay_apply_errors')}, "
              f"keyspace_heap_used {f.get('keyspace_heap_used')}")
    if not nvm.final:
        add("- module: no run finished, in_doubt_writes not checked")
    for f in stock.final:
        add(f"- stock round {f['round']}: aof_current_size {f.get('aof_current_size')}, AOF files on disk "
            f"{f.get('aof_on_disk')} bytes, aof_last_write_status {f.get('aof_last_write_status')}")
    add("")
    add("## Details")
    add("")
    add("| row | module deferred DUMP µs/op | DUMP calls/op | group read-back µs/op | log records/op | whole-value effects | blob_bytes "
        "| log_full_waits | module fold after the row s | module RT max µs | stock RT max µs "
        "| stock AOF rewrites / delayed fsyncs | module ops/s per round | stock ops/s per round "
        "| module usec_per_call per round | stock usec_per_call per round |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for row in ROWS:
        mr = nvm.results.get(row.name, [])
        dc = D.median([r["dump_calls"] / args.ops for r in mr])
        rw = D.median([r.get("aof_rewrites") for r in stock.results.get(row.name, [])])
        df = D.median([r.get("aof_delayed_fsync") for r in stock.results.get(row.name, [])])
        add(f"| {row.name} | {fnum(med(nvm, row, 'dump_per_op'))} | {fnum(dc, 2)} "
            f"| {fnum(med(nvm, row, 'readback_per_op'))} "
            f"| {fnum(med(nvm, row, 'records_per_op'), 2)} | {fnum(med(nvm, row, 'whole_value_effects'), 0)} "
            f"| {fnum(med(nvm, row, 'blob_bytes'), 0)} | {fnum(med(nvm, row, 'log_full_waits'), 0)} "
            f"| {fnum(med(nvm, row, 'fold_s'))} | {fnum(med(nvm, row, 'rtt_max'), 0)} "
            f"| {fnum(med(stock, row, 'rtt_max'), 0)} | {fnum(rw, 0)} / {fnum(df, 0)} "
            f"| {per_round(nvm, row, 'ops', 0)} | {per_round(stock, row, 'ops', 0)} "
            f"| {per_round(nvm, row, 'upc')} | {per_round(stock, row, 'upc')} |")
    bs = {name: " / ".join(f"{s:.1f}" for s in cfgs[name].build_seconds) or "-" for name in KINDS}
    add("")
    add("`group read-back`: delta `cmdstat_xinfo|stream` + `cmdstat_xpending` usec / N, the module reading a "
        "group's state back after XREADGROUP / XCLAIM at BEFORE_SLEEP (instead of the stream's DUMP). "
        "`deferred DUMP`: delta `cmdstat_dump` usec / N, the module's DUMP of the stream at BEFORE_SLEEP (the "
        "log append that follows is not included). `whole-value effects`: delta NVM.INFO `whole_value_effects` "
        "(the module's counter; its deferred stream logs show in `DUMP calls/op`). `fold after the row`: how long the replayer took to reach log_records:0 "
        "after the last reply (not in ops/s). p99 is the nearest rank. usec_per_call is a mean, the round-trip "
        "median is not. Replies are checked on both servers: XREADGROUP op i delivers entry v<i>, every XACK "
        f"replies 1, XPENDING s g counts 0 at the end. Stream build seconds per round: nvm {bs['nvm']}, "
        f"stock-everysec {bs['stock-everysec']}.")
    warn = [(row.name, r) for row in ROWS for r in nvm.results.get(row.name, [])
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
    add("# per round, with redis-cli -p PORT --pipe:")
    add(f"#   XADD s * f v<i>   # i = 0..{args.entries - 1}")
    add("XGROUP CREATE s g 0")
    add("# module: NVM.INFO until log_records:0 (also before the second row); INFO commandstats, NVM.INFO "
        "(module) or INFO persistence (stock); the row N times, P1; the same again")
    for row in ROWS:
        add(f"{row.shown}   # x{args.ops}")
    add("XPENDING s g   # must count 0")
    add("```")
    add("")
    lines += D.errors_section(list(cfgs.values()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(
        description="Consumer-group commands (XREADGROUP, XCLAIM, XACK) on a 100k-entry stream: redis-nvm vs stock "
                    "Redis with AOF everysec, ops/s, server time and log/AOF bytes per op.",
        epilog="Memory: one server at a time, under 100 MB of DRAM, plus the 2 GB pool file on --pool-dir "
               "(sparse). Exit 0 = report complete, 2 = a server or row failed, 1 = harness error, "
               "130 = interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--server", default="redis-server", help="server binary (e.g. valkey-server)")
    ap.add_argument("--cli", default="redis-cli", help="cli binary (redis-cli --pipe builds the stream)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (fresh servers each), medians reported")
    ap.add_argument("--ops", "-n", type=int, default=OPS, help="N: ops per row (XREADGROUP x N, then XACK x N)")
    ap.add_argument("--entries", type=int, default=ENTRIES, help="entries XADDed to the stream before the rows")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--module", default=str(D.DEFAULT_MODULE), help="path of the module .so")
    ap.add_argument("--work-dir", help="on-disk dir for --dir (the AOF) and logs (default: <repo>/target/bench-tmp, "
                    "or /var/tmp/redis-nvm-bench if that is tmpfs)")
    ap.add_argument("--pool-dir", default="/dev/shm", help="where the pool file goes (a run dir is made in it)")
    ap.add_argument("--start-timeout", type=float, default=120, help="seconds a server start may take")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if args.ops < 1:
        ap.error("--ops must be >= 1")
    if args.entries < args.ops:
        ap.error(f"--entries ({args.entries}) must be >= --ops ({args.ops}): every XREADGROUP delivers a new entry")
    for tool in (args.server, args.cli):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found in PATH")
    args.module = str(Path(args.module).resolve())
    if not Path(args.module).is_file():
        ap.error(f"module not found: {args.module} (cargo build --release)")
    return args


def main():
    D.LOG_PREFIX = "streams"
    command_line = shlex.join(["python3"] + sys.argv)
    args = parse_args()
    D.install_signal_handlers()
    t0 = time.monotonic()
    run = D.RunDirs("streams", args)
    cfgs = {k: B.Config(k) for k in KINDS}
    for c in cfgs.values():
        c.build_seconds = []
    servers = []
    try:
        run.create()
        for r in range(args.runs):
            order = KINDS if r % 2 == 0 else KINDS[::-1]
            for kind in order:
                run_server(cfgs[kind], r + 1, args, run, servers)
    finally:
        run.remove([types.SimpleNamespace(server=s) for s in servers])
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, cfgs, run, finished, command_line, time.monotonic() - t0)
    return D.publish(text, args.out, list(cfgs.values()))


if __name__ == "__main__":
    D.run_main(main)
