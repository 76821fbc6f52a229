#!/usr/bin/env python3
"""The checks `make test-dax` runs inside the qemu guest, on an ext4 mounted -o dax at
/mnt/pmem (emulated persistent memory). One line per check: `PASS name` or
`FAIL name: why`; `INFO ...` lines report without judging; the last line is
`N passed, N failed`.

Boot `clwb` (-cpu max) runs everything on redis-server and valkey-server:
  mode-auto-on-dax / mode-dax-on-dax   auto and dax choose DAX (MAP_SYNC granted)
  mode-dax-refused-on-tmpfs / -on-ext4 dax on a non-DAX file system: the load fails, one
                                       log line naming MAP_SYNC
  flush                                the mode names the flush instruction of this CPU
  page-size-advice                     with the server's default disable-thp yes, one log
                                       line says the pool gets 4 KiB pages only
  sigkill-round-N                      SIGKILL during a write load; every acknowledged
                                       write is there after the restart
  restart-digest                       every type + expiry; DEBUG DIGEST equal after a
                                       SIGKILL + restart (and the warm-up)
  damaged-heap / truncated-pool        a flipped byte in the key space heap is reported and
                                       the server stays up; a pool cut to half is refused
  (INFO smaps / dax-faults)            how the pool is mapped: /proc/PID/smaps, fs_dax
                                       fault tracepoints (4 KiB or 2 MiB faults)
Boots `clflushopt` and `clflush` (-cpu max,-clwb[,-clflushopt]): cpu-flags, flush and the
SIGKILL rounds on redis-server.
"""

import argparse
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import Client, RespError, encode, info_fields  # noqa: E402

PMEM = "/mnt/pmem"
TRACE = "/sys/kernel/tracing"
ARGS = None
passed = 0
failed = 0


def report(ok, name, why=""):
    global passed, failed
    name = "%s/%s" % (ARGS.boot, name)
    if ok:
        passed += 1
        print("PASS %s%s" % (name, (" (%s)" % why) if why else ""), flush=True)
    else:
        failed += 1
        print("FAIL %s: %s" % (name, why), flush=True)


def note(msg):
    print("INFO %s/%s" % (ARGS.boot, msg), flush=True)


class Server:
    """One run of a server with the module; a restart is a new Server on the same pool."""

    count = 0
    started = []  # every server started: killed at the end, whatever happened

    def __init__(self, binary, pool, mode, size="64mb", extra=()):
        Server.count += 1
        self.binary, self.pool, self.mode = binary, pool, mode
        self.dir = os.path.join(ARGS.out, "%02d-%s" % (Server.count, binary))
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "server.log")
        self.sock = "/tmp/s%d.sock" % Server.count
        remove(self.sock)
        args = [
            binary, "--save", "", "--appendonly", "no", "--port", "0",
            "--unixsocket", self.sock, "--dir", self.dir, "--logfile", self.log,
            "--daemonize", "no", "--enable-debug-command", "yes",
            "--loadmodule", ARGS.module, "path", pool, "size", size,
            "log-size", "4mb", "mode", mode,
        ] + list(extra)
        with open(os.path.join(self.dir, "cmdline"), "w") as f:
            f.write(" ".join(repr(a) if a == "" else a for a in args) + "\n")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr"), "ab"))
        self.pid = self.proc.pid
        Server.started.append(self)

    def ready(self, timeout=120):
        """Waits until the server answers PING; False if it exited or timed out."""
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            if os.path.exists(self.sock):
                try:
                    c = Client(self.sock, timeout=10)
                    r = c.call("PING")
                    c.close()
                    if r == b"PONG":
                        return True
                except (OSError, ConnectionError):
                    pass
            time.sleep(0.1)
        return False

    def exited(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def client(self):
        return Client(self.sock)

    def info(self):
        c = self.client()
        try:
            return info_fields(c.call("NVM.INFO"))
        finally:
            c.close()

    def log_lines(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def tail(self, n=3):
        lines = self.log_lines()[-n:]
        return " | ".join(strip_log(l) for l in lines) or "(empty log)"

    def kill9(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_warmup(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            st = self.info().get("warmup_state", "")
            if st in ("done", "none"):
                return st
            time.sleep(0.2)
        return "timeout"


def strip_log(line):
    """A server log line without its "pid:role date time level" prefix."""
    return re.sub(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [*#.-] ", "", line)


def extents_report(path):
    """How the pool file lies on the pmem device (2 MiB faults need 2 MiB of the file in
    one written extent, 2 MiB-aligned on the device): filefrag's extents, physically
    contiguous ones merged into runs, and how many are still unwritten (fallocated)."""
    try:
        out = subprocess.run(["filefrag", "-e", "-b4096", path], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "filefrag failed: %s" % e
    ext = []
    for line in out.splitlines():
        m = re.match(r"^\s*\d+:\s*\d+\.\.\s*\d+:\s*(\d+)\.\.\s*\d+:\s*(\d+):.*?(\S*)$", line)
        if m:
            ext.append((int(m.group(1)), int(m.group(2)), "unwritten" in m.group(3)))
    runs = []
    for start, n, _ in ext:
        if runs and runs[-1][0] + runs[-1][1] == start:
            runs[-1][1] += n
        else:
            runs.append([start, n])
    unwritten = sum(n for _, n, u in ext if u)
    return ("%d extents (%d of %d 4 KiB blocks unwritten) in %d physically contiguous run(s): %s"
            % (len(ext), unwritten, sum(n for _, n, _ in ext), len(runs),
               ", ".join("block %d+%d%s" % (s0, n, " (2 MiB-aligned)" if s0 % 512 == 0 else "")
                         for s0, n in runs[:3])))


def thp_setting():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError as e:
        return "unreadable (%s)" % e


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def mapping_report(pid, pool):
    """The smaps entries of the pool's mapping(s): a few fields of each, one line."""
    out = []
    try:
        with open("/proc/%d/smaps" % pid) as f:
            lines = f.read().splitlines()
    except OSError as e:
        return ["smaps unreadable: %s" % e]
    want = ("Size", "KernelPageSize", "MMUPageSize", "Rss", "AnonHugePages",
            "FilePmdMapped", "THPeligible", "VmFlags")
    cur = None
    for line in lines:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            if cur is not None:
                out.append(cur)
            cur = ("%s %s" % (line.split()[0], line.split()[1])) if line.endswith(pool) else None
            continue
        if cur is not None:
            k = line.split(":", 1)[0]
            if k in want:
                cur += "  %s:%s" % (k, " ".join(line.split(":", 1)[1].split()))
    if cur is not None:
        out.append(cur)
    return out or ["no mapping of %s in /proc/%d/smaps" % (pool, pid)]


def trace_start():
    """Counts the fs_dax page faults (PTE = 4 KiB, PMD = 2 MiB) while a load runs."""
    try:
        with open(TRACE + "/buffer_size_kb", "w") as f:
            f.write("16384")
        for ev in ("dax_pmd_fault_done", "dax_pte_fault_done"):
            with open("%s/events/fs_dax/%s/enable" % (TRACE, ev), "w") as f:
                f.write("1")
        with open(TRACE + "/trace", "w") as f:
            f.write("")
        return True
    except OSError:
        return False


def trace_counts(label):
    """Counts the fs_dax fault events since trace_start(), by size and result: PTE =
    a 4 KiB page, PMD = a 2 MiB page (result NOPAGE: mapped; FALLBACK: fell back to PTEs)."""
    try:
        with open(TRACE + "/trace") as f:
            text = f.read()
        with open(os.path.join(ARGS.out, "dax-trace-%s.txt" % label), "w") as f:
            f.write(text)
        for ev in ("dax_pmd_fault_done", "dax_pte_fault_done"):
            with open("%s/events/fs_dax/%s/enable" % (TRACE, ev), "w") as f:
                f.write("0")
    except OSError as e:
        return "tracefs unreadable: %s" % e
    counts = {}
    regions = {"PTE": set(), "PMD": set()}
    for line in text.splitlines():
        m = re.search(r"(dax_p(?:md|te))_fault_done:.* pgoff (0x[0-9a-f]+) .*?(\S+)$", line)
        if m:
            kind = m.group(1).split("_")[1].upper()
            key = "%s %s" % (kind, m.group(3))
            counts[key] = counts.get(key, 0) + 1
            regions[kind].add(int(m.group(2), 16) >> 9)
    if not counts:
        return "no dax faults traced"
    return "%s; 4 KiB faults in %d distinct 2 MiB regions of the pool, 2 MiB faults in %d" % (
        ", ".join("%s: %d" % kv for kv in sorted(counts.items())),
        len(regions["PTE"]), len(regions["PMD"]))


# ---------------------------------------------------------------- checks


def check_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = set()
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    have = [x for x in ("clwb", "clflushopt", "clflush") if x in flags]
    want = {"clwb": ["clwb", "clflushopt", "clflush"], "clflushopt": ["clflushopt", "clflush"],
            "clflush": ["clflush"]}[ARGS.boot]
    report(have == want, "cpu-flags",
           "cache-line flush flags in /proc/cpuinfo: %s" % (" ".join(have) or "none")
           if have == want else "expected %s, /proc/cpuinfo has %s" % (want, have or "none"))


def serving(binary, pool, name, mode="dax", what="start"):
    """A server on `pool` that answers, or None once `name` is reported failed (the
    server did not `what`) and the process is killed."""
    srv = Server(binary, pool, mode)
    if srv.ready():
        return srv
    report(False, name, "the server did not %s: %s" % (what, srv.tail()))
    srv.kill9()
    return None


def check_modes(binary):
    for mode in ("auto", "dax"):
        name = "%s/mode-%s-on-dax" % (binary, mode)
        pool = "%s/mode-%s.nvm" % (PMEM, mode)
        remove(pool)
        srv = serving(binary, pool, name, mode)
        if srv is None:
            continue
        inf = srv.info()
        m, why = inf.get("mode", ""), inf.get("mode_reason", "")
        logged = [l for l in srv.log_lines() if "MAP_SYNC granted" in l]
        problems = []
        if not m.startswith("dax"):
            problems.append("NVM.INFO mode is %r" % m)
        if "MAP_SYNC granted" not in why:
            problems.append("mode_reason is %r" % why)
        if not logged:
            problems.append("no log line says MAP_SYNC granted (%s)" % srv.tail())
        report(not problems, name, "; ".join(problems) if problems else "mode %s: %s" % (m, why))
        if mode == "dax":
            flush = ARGS.boot
            ok = m == "dax (%s)" % flush and any("flushing with %s" % flush in l for l in logged)
            report(ok, "%s/flush" % binary,
                   "mode %r, log: %s" % (m, logged[-1] if logged else srv.tail()) if not ok
                   else "NVM.INFO mode %r, log says flushing with %s" % (m, flush))
            # The server's default disable-thp yes keeps the pool on 4 KiB pages: said once.
            advice = [l for l in srv.log_lines() if "disable-thp is yes" in l]
            report(len(advice) == 1, "%s/page-size-advice" % binary,
                   strip_log(advice[0]) if len(advice) == 1
                   else "%d log lines advise disable-thp no (want 1)" % len(advice))
        srv.kill9()
        remove(pool)

    for fs, d in (("tmpfs", "/tmp"), ("ext4-root", "/var/tmp")):
        name = "%s/mode-dax-refused-on-%s" % (binary, fs)
        pool = "%s/nondax.nvm" % d
        remove(pool)
        srv = Server(binary, pool, "dax")
        rc = srv.exited(90)
        lines = [l for l in srv.log_lines() if "MAP_SYNC" in l]
        if rc is None:
            srv.kill9()
            report(False, name, "the server is still running 90 s after start (log: %s)" % srv.tail())
        elif rc == 0:
            report(False, name, "the server exited with status 0")
        elif len(lines) != 1:
            report(False, name, "%d log lines name MAP_SYNC (want 1): %s" % (len(lines), srv.tail(4)))
        else:
            msg = strip_log(lines[0])
            report(True, name, "exit status %d; log: %s" % (rc, msg))
        remove(pool)


def sigkill_rounds(binary, rounds=2, secs=3.0, trace=False):
    pool = "%s/kill-%s.nvm" % (PMEM, binary)
    remove(pool)
    strings = {}           # key -> value, acknowledged
    counters = {}          # key -> highest acknowledged INCR reply
    incr_sent = {}         # key -> INCRs sent
    lists, lists_sent = {}, {}    # key -> acknowledged / sent elements
    hashes = {}            # key -> {field: value} acknowledged
    tracing = trace and trace_start()
    srv = serving(binary, pool, "%s/sigkill-round-1" % binary)
    if srv is None:
        return
    for rnd in range(1, rounds + 1):
        name = "%s/sigkill-round-%d" % (binary, rnd)
        c = srv.client()
        captured = {}

        def killer(srv=srv, captured=captured, tracing=tracing and rnd == 1):
            captured["smaps"] = mapping_report(srv.pid, pool)
            if tracing:
                captured["faults"] = trace_counts(binary)
            captured["killed"] = True
            try:
                os.kill(srv.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(secs, killer)
        errors = []
        i = 0
        acked = 0
        t0 = time.time()
        timer.start()
        # Pipelined in windows of `window` writes (a request/reply round trip costs ~3 ms
        # under TCG); each reply read is one acknowledged write, in order: when the
        # connection dies mid-window, the writes whose reply came are the acknowledged ones.
        window = 32
        try:
            while True:
                batch = []
                for _ in range(window):
                    slot = (i // 4) % 4
                    op = i % 4
                    if op == 0:
                        k, v = "k:%d:%d" % (rnd, i), "v:%d:%d" % (rnd, i)
                        batch.append((("SET", k, v), "str", k, v))
                    elif op == 1:
                        k = "ctr:%d" % slot
                        incr_sent[k] = incr_sent.get(k, 0) + 1
                        batch.append((("INCR", k), "ctr", k, None))
                    elif op == 2:
                        k, e = "list:%d" % slot, "e:%d:%d" % (rnd, i)
                        lists_sent.setdefault(k, set()).add(e)
                        batch.append((("RPUSH", k, e), "list", k, e))
                    else:
                        k, f = "hash:%d" % slot, "f:%d:%d" % (rnd, i)
                        batch.append((("HSET", k, f, "v:%d:%d" % (rnd, i)), "hash", k, f))
                    i += 1
                c.sock.sendall(b"".join(encode(cmd) for cmd, _, _, _ in batch))
                for cmd, kind, k, x in batch:
                    r = c.read()
                    if isinstance(r, RespError):
                        errors.append(str(r))
                        continue
                    acked += 1
                    if kind == "str" and r == b"OK":
                        strings[k] = x
                    elif kind == "ctr" and isinstance(r, int):
                        counters[k] = max(counters.get(k, 0), r)
                    elif kind == "list" and isinstance(r, int):
                        lists.setdefault(k, set()).add(x)
                    elif kind == "hash" and isinstance(r, int):
                        hashes.setdefault(k, {})[x] = cmd[3]
        except (OSError, ConnectionError) as e:
            if not captured.get("killed"):
                lost_early = "the connection failed before the SIGKILL: %r" % e
            else:
                lost_early = None
        load_s = time.time() - t0
        timer.join()
        c.close()
        srv.proc.wait()
        if "smaps" in captured and rnd == 1:
            for line in captured["smaps"]:
                note("%s/smaps %s" % (binary, line))
            note("%s/pool-extents %s; transparent_hugepage/enabled: %s"
                 % (binary, extents_report(pool), thp_setting()))
            if "faults" in captured:
                note("%s/dax-faults (fs_dax tracepoints, server start + %.1f s of writes): %s"
                     % (binary, load_s, captured["faults"]))
        srv = serving(binary, pool, name, what="restart after SIGKILL")
        if srv is None:
            return
        c = srv.client()
        problems = [lost_early] if lost_early else []
        keys = sorted(strings)
        got = c.pipeline([("GET", k) for k in keys])
        bad = [k for k, g in zip(keys, got) if g != strings[k].encode()]
        if bad:
            problems.append("%d of %d acknowledged SETs lost or wrong (e.g. %s -> %r)"
                            % (len(bad), len(keys), bad[0], got[keys.index(bad[0])]))
        for k in sorted(incr_sent):
            g = c.call("GET", k)
            n = int(g) if isinstance(g, bytes) else None
            if n is None or n < counters.get(k, 0) or n > incr_sent[k]:
                problems.append("%s is %r: acknowledged up to %d, sent %d"
                                % (k, g, counters.get(k, 0), incr_sent[k]))
        for k in sorted(lists_sent):
            g = c.call("LRANGE", k, 0, -1)
            have = set(x.decode() for x in g) if isinstance(g, list) else set()
            lost = lists.get(k, set()) - have
            alien = have - lists_sent[k]
            if lost or alien or (isinstance(g, list) and len(g) != len(have)):
                problems.append("%s: %d acknowledged elements lost, %d never sent, %d duplicates"
                                % (k, len(lost), len(alien), len(g) - len(have) if isinstance(g, list) else 0))
        for k in sorted(hashes):
            g = c.call("HGETALL", k)
            have = {}
            if isinstance(g, list):
                for j in range(0, len(g), 2):
                    have[g[j].decode()] = g[j + 1].decode()
            lost = [f for f, v in hashes[k].items() if have.get(f) != v]
            if lost:
                problems.append("%s: %d acknowledged fields lost or wrong" % (k, len(lost)))
        if errors:
            problems.append("%d writes got an error reply (e.g. %s)" % (len(errors), errors[0]))
        c.close()
        detail = ("%d writes acknowledged in %.1f s (%.0f/s), SIGKILL with %d in flight; after "
                  "restart: %d SET values, %d counters, %d lists, %d hashes all there"
                  % (acked, load_s, acked / max(load_s, 0.001), i - acked - len(errors),
                     len(keys), len(incr_sent), len(lists_sent), len(hashes)))
        report(not problems, name, "; ".join(problems[:4]) if problems else detail)
    srv.kill9()
    remove(pool)


def check_digest(binary):
    name = "%s/restart-digest" % binary
    pool = "%s/types-%s.nvm" % (PMEM, binary)
    remove(pool)
    srv = serving(binary, pool, name)
    if srv is None:
        return
    c = srv.client()
    cmds = []
    for i in range(40):
        cmds.append(("SET", "str:%d" % i, "value-%d" % i))
    cmds.append(("SET", "big", "B" * 20000))
    cmds.append(("INCRBY", "counter", 12345))
    for i in range(8):
        cmds.append(("RPUSH", "list:%d" % i) + tuple("item-%d" % j for j in range(20)))
        cmds.append(("HSET", "hash:%d" % i) + tuple(x for j in range(10) for x in ("f%d" % j, "v%d" % j)))
        cmds.append(("SADD", "set:%d" % i) + tuple("m%d" % j for j in range(15)))
        cmds.append(("SADD", "intset:%d" % i) + tuple(str(j * 7) for j in range(15)))
        cmds.append(("ZADD", "zset:%d" % i) + tuple(x for j in range(12) for x in (str(j * 1.5), "z%d" % j)))
        for j in range(5):
            cmds.append(("XADD", "stream:%d" % i, "*", "field", "value-%d" % j))
    cmds.append(("XGROUP", "CREATE", "stream:0", "grp", "0"))
    cmds.append(("XREADGROUP", "GROUP", "grp", "consumer", "COUNT", "2", "STREAMS", "stream:0", ">"))
    cmds.append(("LPOP", "list:1"))
    cmds.append(("HDEL", "hash:1", "f3"))
    cmds.append(("ZINCRBY", "zset:1", "100", "z2"))
    for k in ("str:0", "str:1", "str:2", "big", "counter", "list:0", "hash:0", "set:0",
              "intset:0", "zset:0", "stream:1"):
        cmds.append(("EXPIRE", k, 1000))
    replies = c.pipeline(cmds)
    errs = [(cmd, r) for cmd, r in zip(cmds, replies) if isinstance(r, RespError)]
    keys = sorted(x.decode() for x in c.call("KEYS", "*"))
    before = c.call("DEBUG", "DIGEST")
    per_key = dict(zip(keys, c.pipeline([("DEBUG", "DIGEST-VALUE", k) for k in keys])))
    c.close()
    if errs or isinstance(before, RespError):
        report(False, name, "setup failed: %s" % (errs[:2] or before))
        srv.kill9()
        return
    srv.kill9()
    srv = serving(binary, pool, name, what="restart after SIGKILL")
    if srv is None:
        return
    t0 = time.time()
    warm = srv.wait_warmup()
    warm_s = time.time() - t0
    c = srv.client()
    after = c.call("DEBUG", "DIGEST")
    ttl = c.call("TTL", "str:0")
    if after != before:
        now = dict(zip(keys, c.pipeline([("DEBUG", "DIGEST-VALUE", k) for k in keys])))
        diff = [k for k in keys if now.get(k) != per_key.get(k)]
        report(False, name, "DEBUG DIGEST %r before, %r after (warmup_state %s); keys that differ: %s"
               % (before, after, warm, diff[:10]))
    elif warm != "done":
        report(False, name, "warmup_state never became done (%s)" % warm)
    elif not (isinstance(ttl, int) and 0 < ttl <= 1000):
        report(False, name, "TTL str:0 is %r after the restart" % ttl)
    else:
        report(True, name, "%d keys of 6 types, %d with expiry; digest %s equal; warm-up done %.1f s "
               "after serving; TTL str:0 %d" % (len(keys), 11, before.decode(), warm_s, ttl))
    c.close()
    srv.kill9()
    remove(pool)


def marker(i):
    return "DAMAGE-MARKER-%05d-" % i + "x" * 200


def check_damage(binary):
    name = "%s/damaged-heap" % binary
    pool = "%s/damage-%s.nvm" % (PMEM, binary)
    remove(pool)
    srv = serving(binary, pool, name)
    if srv is None:
        return
    c = srv.client()
    n = 300
    c.pipeline([("SET", "dmg:%d" % i, marker(i)) for i in range(n)])
    end = time.time() + 60
    while time.time() < end:
        inf = info_fields(c.call("NVM.INFO"))
        if int(inf.get("applied_lsn", 0)) >= int(inf.get("last_lsn", 1)):
            break
        time.sleep(0.2)
    try:
        r = c.call("SHUTDOWN", "NOSAVE")  # no reply on success: the connection closes
    except (OSError, ConnectionError):
        r = "connection closed"
    c.close()
    if srv.exited(60) is None:
        srv.kill9()
    note("%s/damaged-heap: folded to lsn %s of %s, SHUTDOWN NOSAVE -> %r"
         % (binary, inf.get("applied_lsn"), inf.get("last_lsn"), r))
    victim = n // 2
    with open(pool, "r+b") as f:
        data = f.read()
        heap_offset, = struct.unpack_from("<Q", data, 80)
        pos = data.find(marker(victim).encode(), heap_offset)
        if pos < 0:
            report(False, name, "marker of dmg:%d not found in the heap (offset %d..%d)"
                   % (victim, heap_offset, len(data)))
            return
        at = pos + len("DAMAGE-MARKER-") + 2
        old = data[at]
        os.pwrite(f.fileno(), bytes([old ^ 0xFF]), at)
        os.fsync(f.fileno())
    del data
    note("%s/damaged-heap: flipped the byte at pool offset %d (heap starts at %d; value of dmg:%d)"
         % (binary, at, heap_offset, victim))
    srv = serving(binary, pool, name, what="start on the damaged pool")
    if srv is not None:
        end = time.time() + 60
        settled = None  # when the warm-up ended: give the report a few seconds more
        reported = []
        inf = {}
        while time.time() < end and not reported:
            inf = srv.info()
            if "damaged" in inf.get("state", ""):
                reported.append("NVM.INFO state: %s" % inf["state"][:160])
            if int(inf.get("warmup_damaged", "0") or 0) > 0:
                reported.append("warmup_damaged:%s" % inf["warmup_damaged"])
            logged = [l for l in srv.log_lines() if re.search("damaged|CORRUPT|POOL DAMAGED", l)]
            if logged:
                reported.append("log: %s" % strip_log(logged[0])[:200])
            if inf.get("warmup_state") in ("done", "none"):
                settled = settled or time.time()
                if time.time() - settled > 5:
                    break
            time.sleep(0.2)
        c = srv.client()
        pong = c.call("PING")
        got = c.call("GET", "dmg:%d" % victim)
        other = c.call("GET", "dmg:%d" % (victim + 10))
        c.close()
        note("%s/damaged-heap: after restart GET dmg:%d -> %r, GET dmg:%d intact: %s"
             % (binary, victim, got if not isinstance(got, bytes) else got[:40] + b"...",
                victim + 10, other == marker(victim + 10).encode()))
        problems = []
        if pong != b"PONG":
            problems.append("PING -> %r" % pong)
        if not reported:
            problems.append("no damage reported (NVM.INFO state %r, warmup_state %r, warmup_damaged %r)"
                            % (inf.get("state"), inf.get("warmup_state"), inf.get("warmup_damaged")))
        if isinstance(got, bytes) and got != marker(victim).encode():
            problems.append("GET dmg:%d serves the damaged value %r" % (victim, got[:40]))
        report(not problems, name, "; ".join(problems) if problems else "server up; " + "; ".join(reported))
        srv.kill9()

    name = "%s/truncated-pool" % binary
    size = os.path.getsize(pool)
    os.truncate(pool, size // 2)
    srv = Server(binary, pool, "dax")
    rc = srv.exited(90)
    cut = [l for l in srv.log_lines() if "cut short" in l]
    if rc is None:
        srv.kill9()
        report(False, name, "the server runs on a pool cut to half (log: %s)" % srv.tail())
    elif not cut:
        report(False, name, "exit status %d, no log line says 'cut short': %s" % (rc, srv.tail()))
    else:
        report(True, name, "pool cut from %d to %d bytes: exit status %d; log: %s"
               % (size, size // 2, rc, strip_log(cut[0])[:200]))
    remove(pool)


def page_size_probe(binary):
    """Check 6 (reported, not judged): the server's default is disable-thp yes (Redis
    calls prctl(PR_SET_THP_DISABLE) when THP is "always"), which also rules out 2 MiB DAX
    faults; this run has disable-thp no, to show what the mapping gets then."""
    pool = "%s/thp-%s.nvm" % (PMEM, binary)
    remove(pool)
    tracing = trace_start()
    srv = Server(binary, pool, "dax", extra=["--disable-thp", "no"])
    if not srv.ready():
        note("%s/disable-thp-no: the server did not start: %s" % (binary, srv.tail()))
        srv.kill9()
        return
    c = srv.client()
    t0 = time.time()
    c.pipeline([("SET", "p:%d" % i, "x" * 200) for i in range(3000)])
    load_s = time.time() - t0
    for line in mapping_report(srv.pid, pool):
        note("%s/disable-thp-no/smaps %s" % (binary, line))
    note("%s/disable-thp-no/pool-extents %s" % (binary, extents_report(pool)))
    if tracing:
        note("%s/disable-thp-no/dax-faults (server start + 3000 SETs in %.1f s): %s"
             % (binary, load_s, trace_counts(binary + "-disable-thp-no")))
    c.close()
    srv.kill9()
    remove(pool)
    probe = "%s/fallocate-probe" % PMEM
    subprocess.run(["fallocate", "-l", "64M", probe])
    note("fallocate -l 64M on the DAX mount, for comparison: %s" % extents_report(probe))
    remove(probe)


def kill_all():
    for srv in Server.started:
        if srv.proc.poll() is None:
            srv.kill9()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--boot", required=True, choices=["clwb", "clflushopt", "clflush"])
    p.add_argument("--module", required=True)
    p.add_argument("--out", required=True)
    ARGS = p.parse_args()
    t0 = time.time()
    check_cpu_flags()
    if ARGS.boot == "clwb":
        for binary in ("redis-server", "valkey-server"):
            t = time.time()
            check_modes(binary)
            sigkill_rounds(binary, trace=True)
            check_digest(binary)
            check_damage(binary)
            if binary == "redis-server":
                page_size_probe(binary)
            note("%s: checks took %.0f s" % (binary, time.time() - t))
    else:
        check_modes_flush_only("redis-server")
        sigkill_rounds("redis-server")
    note("guest checks took %.0f s" % (time.time() - t0))
    kill_all()
    print("%d passed, %d failed" % (passed, failed), flush=True)


def check_modes_flush_only(binary):
    """Later boots: mode dax on the DAX mount names this CPU's flush instruction."""
    pool = "%s/mode-dax.nvm" % PMEM
    remove(pool)
    srv = serving(binary, pool, "%s/flush" % binary)
    if srv is None:
        return
    inf = srv.info()
    m, why = inf.get("mode", ""), inf.get("mode_reason", "")
    logged = [l for l in srv.log_lines() if "MAP_SYNC granted" in l]
    flush = ARGS.boot
    ok = m == "dax (%s)" % flush and "flushing with %s" % flush in why and \
        any("flushing with %s" % flush in l for l in logged)
    report(ok, "%s/flush" % binary,
           "NVM.INFO mode %r, mode_reason %r" % (m, why) if ok
           else "mode %r, mode_reason %r, log: %s" % (m, why, logged[-1] if logged else srv.tail()))
    srv.kill9()
    remove(pool)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the checks is a failure, never a silent pass
        import traceback
        traceback.print_exc()
        kill_all()
        failed += 1
        print("FAIL %s/checks: the check script crashed: %r" % (ARGS.boot if ARGS else "?", e))
        print("%d passed, %d failed" % (passed, failed), flush=True)
