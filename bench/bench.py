#!/usr/bin/env python3
"""Side-by-side SET throughput benchmark of redis-nvm against stock persistence.

Role: the one harness that checks the throughput targets of DESIGN.md ("Targets"):
  - P1:  nvm-emulate >= 0.95x no-persistence
  - P16: nvm-emulate >= aof-everysec
It starts every server configuration fresh, as a child process on its own
127.0.0.1 port with its own --dir and --logfile, runs
`redis-benchmark -t set -d 100 -c 50 -n N -P {1,16} -q --csv` against each,
interleaving the runs round-robin across configurations so that machine noise
hits all of them alike, and prints a markdown report (medians, ratios, raw
values, forks, error replies, verdicts, the exact commands, versions, filesystems).

Configurations:
  nvm-emulate     module, mode emulate, durability always, pool on /dev/shm
  nvm-msync       module, mode msync, durability always, pool on disk
  no-persistence  stock, --appendonly no --save ""
  aof-everysec    stock, --appendonly yes --appendfsync everysec, --dir on disk
  aof-always      stock, --appendonly yes --appendfsync always, --dir on disk

Standard library only (Python 3.11). Exit status: 0 when the report is
complete (whether or not a target passes), 2 when a requested configuration
failed to start or a benchmark run failed (the report is still printed),
1 on usage or other harness errors, 130 on interrupt. Servers, pool files and
the work directory are cleaned up in every case (--keep keeps the work dir).
"""

import argparse
import csv
import datetime
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing dataset.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset import (  # noqa: E402  (the harness utilities the benchmarks share)
    HarnessError, free_port, fs_type, log, on_sigterm, parse_info, pick_disk_root, run_main, run_version, tail,
)

REPO = Path(__file__).resolve().parent.parent
ALL_CONFIGS = ["nvm-emulate", "nvm-msync", "no-persistence", "aof-everysec", "aof-always"]
PIPELINES = [1, 16]
DEFAULT_REQUESTS = 1_000_000  # for P16; P1 uses a quarter of it
P1_DIVISOR = 4
# nvm-msync pays one msync (~0.2 ms on ext4) per write: ~2k SET/s at P1, ~5k at P16.
# Running it with the full count would take tens of minutes, so it gets 1/MSYNC_DIVISOR.
MSYNC_DIVISOR = 50
WARMUP_DIVISOR = 10  # one unreported P16 warm-up run per config with N/10 (after the divisors)


class Server:
    """One server configuration: its directory, port, command line and child process."""

    def __init__(self, name, args, run_dir):
        self.name = name
        self.args = args
        self.port = free_port()
        self.dir = run_dir / name
        self.logfile = self.dir / "server.log"
        self.pool = None
        self.proc = None
        self.error = None  # why the config could not be measured (start failure)
        self.run_errors = []
        self.results = {p: [] for p in PIPELINES}  # SET/s per successful run
        self.info = {}
        self.nvm_info = None
        self.requests = {}
        self.bench_cmds = {}
        self.dir_fs = self.pool_fs = "?"
        if name == "nvm-emulate":
            self.pool = Path(f"/dev/shm/redis-nvm-bench-{os.getpid()}-{self.port}.nvm")
        elif name == "nvm-msync":
            self.pool = run_dir / name / "pool.nvm"

    def command(self):
        cmd = [self.args.server, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--save", "", "--daemonize", "no",
               "--logfile", str(self.logfile)]
        if self.name == "no-persistence":
            cmd += ["--appendonly", "no"]
        elif self.name == "aof-everysec":
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        elif self.name == "aof-always":
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        elif self.name == "nvm-emulate":
            cmd += ["--loadmodule", str(self.args.module), "path", str(self.pool),
                    "size", self.args.pool_size, "mode", "emulate", "durability", "always"]
        elif self.name == "nvm-msync":
            cmd += ["--loadmodule", str(self.args.module), "path", str(self.pool),
                    "size", self.args.pool_size, "mode", "msync", "durability", "always"]
        return cmd

    def cli(self, *words, timeout=10):
        """Runs the cli against this server; returns (ok, output)."""
        cmd = [self.args.cli, "-h", "127.0.0.1", "-p", str(self.port), *words]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"timeout after {timeout}s: {shlex.join(cmd)}"
        text = (out.stdout + out.stderr).strip()
        ok = out.returncode == 0 and not text.startswith(("ERR", "(error)", "Could not connect"))
        return ok, text

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir_fs = fs_type(self.dir)
        if self.pool is not None:
            self.pool.parent.mkdir(parents=True, exist_ok=True)
            self.pool_fs = fs_type(self.pool.parent)
            if not Path(self.args.module).is_file():
                raise HarnessError(f"module not found: {self.args.module} "
                                   f"(build it with `cargo build --release` in {REPO})")
        cmd = self.command()
        log(f"starting {self.name}: {shlex.join(cmd)}")
        # Own session: a Ctrl-C reaches only the harness, which then stops the servers in order.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.args.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name}: server exited with status {self.proc.returncode} "
                                   f"during start-up; tail of {self.logfile}:\n{tail(self.logfile)}")
            ok, last = self.cli("PING", timeout=5)
            if ok and last == "PONG":
                return
            time.sleep(0.2)
        raise HarnessError(f"{self.name}: no PONG on port {self.port} within {self.args.start_timeout}s "
                           f"(last answer: {last!r}); tail of {self.logfile}:\n{tail(self.logfile)}")

    def bench_command(self, pipeline, requests):
        return [self.args.benchmark, "-h", "127.0.0.1", "-p", str(self.port), "-t", "set",
                "-d", "100", "-c", "50", "-n", str(requests), "-P", str(pipeline), "-q", "--csv"]

    def bench(self, pipeline, requests):
        """One redis-benchmark run; returns SET/s, raises HarnessError on failure."""
        if self.proc.poll() is not None:
            raise HarnessError(f"{self.name}: server died (status {self.proc.returncode}); "
                               f"tail of {self.logfile}:\n{tail(self.logfile)}")
        cmd = self.bench_command(pipeline, requests)
        timeout = 120 + requests / 1000  # generous: >= 1000 SET/s always fits
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name} P{pipeline}: benchmark timed out after {timeout:.0f}s")
        if out.returncode != 0:
            raise HarnessError(f"{self.name} P{pipeline}: benchmark exit {out.returncode}: "
                               f"{(out.stdout + out.stderr).strip()[-500:]}")
        for row in csv.reader(out.stdout.splitlines()):
            if row and row[0] == "SET":
                return float(row[1])
        raise HarnessError(f"{self.name} P{pipeline}: no SET row in benchmark output: {out.stdout[-500:]!r}")

    def collect(self):
        """INFO fields (and NVM.INFO for module configs) at the end of the runs."""
        for section in ("persistence", "stats"):
            ok, text = self.cli("INFO", section)
            if ok:
                self.info.update(parse_info(text))
            else:
                self.info[f"INFO {section}"] = f"failed: {text}"
        if self.pool is not None:
            ok, text = self.cli("NVM.INFO")
            self.nvm_info = text if ok else f"NVM.INFO failed: {text}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: no exit 60s after SIGTERM, killing pid {self.proc.pid}")
                self.proc.kill()
                self.proc.wait()
        if self.pool is not None:
            try:
                self.pool.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log(f"{self.name}: could not delete pool {self.pool}: {e}")


def requests_for(name, pipeline, n):
    r = n if pipeline == 16 else n // P1_DIVISOR
    if name == "nvm-msync":
        r //= MSYNC_DIVISOR
    return max(r, 1000)


def fmt_rate(x):
    return "-" if x is None else f"{x / 1000:.1f}k"


def fmt_ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def report(args, servers, disk_root, disk_fs, started, finished):
    by_name = {s.name: s for s in servers}

    def median(name, p):
        s = by_name.get(name)
        return statistics.median(s.results[p]) if s and s.results[p] else None

    lines = []
    add = lines.append
    add("# redis-nvm SET throughput, side by side")
    add("")
    add(f"- date: {started.isoformat(timespec='seconds')} (finished {finished.isoformat(timespec='seconds')})")
    add(f"- host: {socket.gethostname()}, nproc: {len(os.sched_getaffinity(0))}")
    add(f"- server: `{args.server}`: {run_version(args.server)}")
    add(f"- benchmark: `{args.benchmark}`: {run_version(args.benchmark)}")
    add(f"- module: `{args.module}`" + ("" if Path(args.module).is_file() else " (NOT FOUND)"))
    add(f"- runs: {args.runs} per config and pipeline, interleaved round-robin, median reported; "
        f"requests: P16 {args.requests}, P1 {args.requests // P1_DIVISOR} "
        f"(nvm-msync: 1/{MSYNC_DIVISOR} of those); one unreported P16 warm-up run per config; "
        f"pool size {args.pool_size}")
    add(f"- work dir: `{disk_root}` ({disk_fs})")
    add("")
    add("| config | SET/s P1 | SET/s P16 | vs no-persistence P1 | vs no-persistence P16 "
        "| vs aof-everysec P16 | total_forks | error replies | raw SET/s (P1 ; P16) |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    base1, base16, ev16 = median("no-persistence", 1), median("no-persistence", 16), median("aof-everysec", 16)
    for s in servers:
        if s.error:
            add(f"| {s.name} | failed to start | | | | | | | |")
            continue
        m1, m16 = median(s.name, 1), median(s.name, 16)
        raw = " ".join(fmt_rate(x) for x in s.results[1]) + " ; " + " ".join(fmt_rate(x) for x in s.results[16])
        if s.run_errors:
            raw += f" ({len(s.run_errors)} failed runs)"
        add(f"| {s.name} | {fmt_rate(m1)} | {fmt_rate(m16)} | {fmt_ratio(m1, base1)} | {fmt_ratio(m16, base16)} "
            f"| {fmt_ratio(m16, ev16)} | {s.info.get('total_forks', '?')} "
            f"| {s.info.get('total_error_replies', '?')} | {raw} |")
    add("")

    def verdict(label, num, den, threshold, what):
        a, b = median(num[0], num[1]), median(den[0], den[1])
        if a is None or b is None:
            missing = num[0] if a is None else den[0]
            return f"{label}: {what}: N/A ({missing} not measured)"
        ratio = a / b
        return f"{label}: {what}: {'PASS' if ratio >= threshold else 'FAIL'} ({ratio:.2f})"

    add(verdict("target P1", ("nvm-emulate", 1), ("no-persistence", 1), 0.95, "nvm-emulate >= 0.95x no-persistence"))
    add("")
    add(verdict("target P16", ("nvm-emulate", 16), ("aof-everysec", 16), 1.0, "nvm-emulate >= aof-everysec"))
    add("")
    if any(s.info.get("total_error_replies", "0") not in ("0", "?") for s in servers if not s.error):
        add("WARNING: some server sent error replies (column 'error replies'): "
            "redis-benchmark counts them as served requests, so those rates are not valid.")
        add("")

    add("## Servers and filesystems")
    add("")
    add("| config | port | --dir (fs) | pool (fs) | rdb_bgsave_in_progress | aof_rewrites | total_forks |")
    add("|---|---|---|---|---|---|---|")
    for s in servers:
        pool = f"`{s.pool}` ({s.pool_fs})" if s.pool else "-"
        add(f"| {s.name} | {s.port} | `{s.dir}` ({s.dir_fs}) | {pool} "
            f"| {s.info.get('rdb_bgsave_in_progress', '?')} | {s.info.get('aof_rewrites', '?')} "
            f"| {s.info.get('total_forks', '?')} |")
    add("")
    add("## Commands")
    add("")
    add("```")
    for s in servers:
        add(f"# {s.name}")
        add(shlex.join(s.command()))
        for p in PIPELINES:
            if p in s.bench_cmds:
                add(shlex.join(s.bench_cmds[p]))
    add("```")
    add("")

    problems = [s for s in servers if s.error or s.run_errors]
    if problems:
        add("## Errors")
        add("")
        for s in problems:
            for e in ([s.error] if s.error else []) + s.run_errors:
                add(f"- {s.name}:")
                add("```")
                add(e)
                add("```")
        add("")
    for s in servers:
        if s.nvm_info is not None:
            add(f"## {s.name}: `{args.cli} -p {s.port} NVM.INFO`")
            add("")
            add("```")
            add(s.nvm_info)
            add("```")
            add("")
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(
        description="Side-by-side SET throughput of redis-nvm vs stock Redis persistence "
                    "(redis-benchmark -t set -d 100 -c 50 -P 1 and -P 16).",
        epilog=f"Defaults: --runs 5, --requests {DEFAULT_REQUESTS} (P16; P1 uses requests/{P1_DIVISOR}, "
               f"nvm-msync uses 1/{MSYNC_DIVISOR} of each because every write is an msync), "
               f"one warm-up P16 run per config with 1/{WARMUP_DIVISOR} of its requests. "
               "The full default bench takes about 2 minutes on 2 cores (measured: 1m50s). "
               "Exit 0 = report complete (targets may FAIL), 2 = a config or run failed, 1 = harness error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per config and pipeline (median reported)")
    ap.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                    help=f"requests per P16 run; P1 runs use requests/{P1_DIVISOR}")
    ap.add_argument("--pool-size", default="4gb", help="module pool size (e.g. 4gb, 512mb)")
    ap.add_argument("--configs", default=",".join(ALL_CONFIGS), help="comma list of configs to run")
    ap.add_argument("--server", default="redis-server", help="server binary (e.g. valkey-server)")
    ap.add_argument("--benchmark", default="redis-benchmark", help="benchmark binary (e.g. valkey-benchmark)")
    ap.add_argument("--cli", default="redis-cli", help="cli binary used for PING/INFO/NVM.INFO")
    ap.add_argument("--module", default=str(REPO / "target" / "release" / "libredis_nvm.so"),
                    help="path of the module .so")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--work-dir", help="on-disk work dir for --dir, AOF and the msync pool "
                    "(default: <repo>/target/bench-tmp, or /var/tmp/redis-nvm-bench if that is tmpfs)")
    ap.add_argument("--start-timeout", type=float, default=60, help="seconds to wait for PONG")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, AOF) afterwards")
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in ALL_CONFIGS]
    if unknown or not configs:
        ap.error(f"unknown config(s) {unknown}; choose from {','.join(ALL_CONFIGS)}")
    if args.runs < 1 or args.requests < 1000:
        ap.error("--runs must be >= 1 and --requests >= 1000")
    for tool in (args.server, args.benchmark, args.cli):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found in PATH")
    args.configs = configs
    args.module = str(Path(args.module).resolve())
    return args


def main():
    args = parse_args()
    # A SIGTERM to the harness unwinds like Ctrl-C, so the finally block stops the servers.
    signal.signal(signal.SIGTERM, on_sigterm)
    started = datetime.datetime.now(datetime.timezone.utc)
    disk_root, disk_fs = pick_disk_root(
        args.work_dir, on_tmpfs="the AOF and msync numbers will not reflect a disk"
    )
    run_dir = disk_root / f"run-{started.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    log(f"work dir {run_dir} ({disk_fs})")
    servers = []
    try:
        servers = [Server(name, args, run_dir) for name in args.configs]
        for s in servers:
            try:
                s.start()
            except HarnessError as e:
                s.error = str(e)
                log(f"ERROR {e}")
                s.stop()
        live = [s for s in servers if not s.error]
        for s in live:
            for p in PIPELINES:
                s.requests[p] = requests_for(s.name, p, args.requests)
                s.bench_cmds[p] = s.bench_command(p, s.requests[p])
        for s in live:
            n = max(s.requests[16] // WARMUP_DIVISOR, 1000)
            log(f"warm-up {s.name} P16 n={n}")
            try:
                s.bench(16, n)
            except HarnessError as e:
                s.run_errors.append(f"warm-up: {e}")
                log(f"ERROR {e}")
        for r in range(args.runs):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for p in PIPELINES:
                for s in order:
                    try:
                        rate = s.bench(p, s.requests[p])
                        s.results[p].append(rate)
                        log(f"run {r + 1}/{args.runs} P{p} {s.name}: {rate:.0f} SET/s")
                    except HarnessError as e:
                        s.run_errors.append(f"run {r + 1} P{p}: {e}")
                        log(f"ERROR {e}")
        for s in live:
            if s.proc.poll() is None:
                s.collect()
    finally:
        for s in servers:
            s.stop()
        if not args.keep and run_dir.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(args, servers, disk_root, disk_fs, started, finished)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        log(f"report written to {args.out}")
    return 2 if any(s.error or s.run_errors for s in servers) else 0


if __name__ == "__main__":
    run_main(main, interrupted="interrupted; servers stopped")
