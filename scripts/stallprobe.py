#!/usr/bin/env python3
"""How long one hostile client stalls everyone else on skiffd's one loop.

Driven by scripts/bench-stall.sh (read its header for the interface).
Standard library only. Two modes:

  stallprobe.py probe PORT       the probe: one 16 B `echo` every 5 ms on
                                 one connection, until a line (or EOF) on
                                 stdin; then prints [[t_send, rtt], ...]
                                 (CLOCK_MONOTONIC seconds) as JSON.
  stallprobe.py run LABEL=BIN..  the driver: for each attack row and each
                                 binary, a fresh skiffd, the probe, the
                                 attack; prints a markdown table.

Each attack returns the window it covers (t0, t1 on CLOCK_MONOTONIC, which
is system-wide on Linux, so the probe process's clock is the same). The
probe samples reported for a row are those whose round trip overlaps that
window. The probe is started and has completed one echo before t0.
"""

import hashlib
import json
import os
import re
import select
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import skiffwire
from skiffwire import frame, recv

now = time.monotonic
PW = "stall-pw"  # every user's password; only correct passwords are sent
IO_TIMEOUT = 300.0  # no single wait in this script may exceed this


# ---- connections (framing: scripts/skiffwire.py) ----------------------

def connect(port, timeout=IO_TIMEOUT):
    return skiffwire.connect(port, timeout=timeout)


def login(s, user, rid=0):
    return skiffwire.login(s, user, PW, rid)


def wait_frames(readers, want, deadline, on_frame=None):
    """Waits until every reader has `want` frames (or its connection ended).
    on_frame(reader, header) is called for each new frame; it may return
    True to stop waiting on that reader (it is then closed)."""
    sel = selectors.DefaultSelector()
    pending = 0
    for r in readers:
        if len(r.frames) < want:
            r.sock.setblocking(False)
            sel.register(r.sock, selectors.EVENT_READ, r)
            pending += 1
    ended = 0
    while pending:
        left = deadline - now()
        if left <= 0:
            raise TimeoutError(f"{pending} connections still waiting")
        for key, _ in sel.select(min(left, 1.0)):
            r = key.data
            seen = len(r.frames)
            alive = r.feed()
            done = False
            for h in r.frames[seen:]:
                if on_frame and on_frame(r, h):
                    done = True
            if done or not alive or len(r.frames) >= want:
                sel.unregister(r.sock)
                pending -= 1
                if not alive:
                    ended += 1
                if done:
                    r.sock.close()
    sel.close()
    return ended


def open_sessions(port, n, user):
    """n connections, all logged in as user (logins pipelined across the
    connections; the server runs them one after another)."""
    readers = []
    for _ in range(n):
        s = connect(port)
        s.sendall(frame({"op": "login", "id": 0, "user": user, "password": PW}))
        readers.append(skiffwire.Reader(s))
    ended = wait_frames(readers, 1, now() + IO_TIMEOUT)
    bad = [r.frames[0] for r in readers if not r.frames or r.frames[0].get("op") != "ok"]
    if ended or bad:
        raise RuntimeError(f"{ended} connections ended, {len(bad)} logins failed: {bad[:1]}")
    for r in readers:
        r.frames.clear()
    return readers


# ---- the probe process -------------------------------------------------

def probe_main(port):
    s = connect(port, timeout=IO_TIMEOUT)
    msg = frame({"op": "echo", "id": 1}, b"p" * 16)
    samples = []

    def one():
        t0 = now()
        s.sendall(msg)
        h, _ = recv(s)
        t1 = now()
        if h.get("op") != "ok":
            raise RuntimeError(f"probe echo: {h}")
        return t0, t1 - t0

    one()  # the connection works; not a sample
    print("ready", flush=True)
    nxt = now()
    while True:
        r, _, _ = select.select([sys.stdin], [], [], max(0.0, nxt - now()))
        if r:
            break
        t0, rtt = one()
        samples.append((t0, rtt))
        nxt = t0 + 0.005  # every 5 ms; right away when an echo took longer
    json.dump(samples, sys.stdout)
    sys.stdout.flush()


class Probe:
    def __init__(self, port, prefix=()):
        self.p = subprocess.Popen([*prefix, sys.executable, os.path.abspath(__file__), "probe", str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if line.strip() != "ready":
            self.p.kill()
            self.p.wait()
            raise RuntimeError("the probe did not start")

    def stop(self):
        try:
            out, _ = self.p.communicate("stop\n", timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise
        return json.loads(out)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def window(samples, t0, t1):
    """RTTs (s) of the samples whose round trip overlaps [t0, t1]."""
    return [rtt for ts, rtt in samples if ts <= t1 and ts + rtt >= t0]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


# ---- the server --------------------------------------------------------

SLOW_DISK = None  # a blkio cgroup (v1) that throttles reads, with READ_BPS


def slow_disk(path):
    """READ_BPS=N: a cgroup whose reads from path's block device are
    throttled to N bytes/s (cgroup v1 blkio; root), as on a slow disk."""
    bps = os.environ.get("READ_BPS")
    if not bps:
        return None
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    # The whole disk, not the partition: the throttle works on the disk.
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{dev}"))
    parent = f"/sys/class/block/{name}/.."
    if os.path.exists(f"/sys/class/block/{name}/partition"):
        dev = open(os.path.join(os.path.realpath(parent), "dev")).read().strip()
    group = f"/sys/fs/cgroup/blkio/skiff-stall-{os.getpid()}"
    os.makedirs(group, exist_ok=True)
    with open(group + "/blkio.throttle.read_bps_device", "w") as f:
        f.write(f"{dev} {int(bps)}\n")
    log(f"slow disk: reads from {dev} at {int(bps) / 1e6:.0f} MB/s for the servers ({group})")
    return group

def status_kb(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Max VmRSS (kB) of pid, read every 20 ms while active."""

    def __init__(self, pid):
        self.pid, self.max, self.halt = pid, status_kb(pid, "VmRSS"), threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.halt.wait(0.02):
            self.max = max(self.max, status_kb(self.pid, "VmRSS"))

    def stop(self):
        self.halt.set()
        self.t.join()
        return self.max


class Server:
    """A fresh skiffd with its own data dir under work; users added with
    the binary's own `skiffd user add`; fixtures planted into homes by
    rename before the start and taken back after the stop."""

    def __init__(self, binary, work, users, plant=()):
        self.binary, self.planted, self.proc = binary, [], None
        self.data = os.path.join(work, "data")
        shutil.rmtree(self.data, ignore_errors=True)
        os.makedirs(self.data)
        for user in users:
            subprocess.run([binary, "user", "--data-dir", self.data, "add", user, "--password-stdin"],
                           input=PW + "\n", text=True, check=True, capture_output=True)
        for src, user, name in plant:
            dst = os.path.join(self.data, "homes", user, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
            self.planted.append((dst, src))

    def start(self, pidfile, logname):
        self.log = open(os.path.join(os.path.dirname(self.data), logname), "w")
        command = ["taskset", "-c", "0", self.binary, "serve", "--data-dir", self.data, "--listen", "127.0.0.1:0"]
        if SLOW_DISK:  # the server (all its threads) reads the disk at READ_BPS at most
            command = ["sh", "-c", f'echo $$ > {SLOW_DISK}/cgroup.procs && exec "$@"', "sh"] + command
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True)
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = now() + 10
        port = None
        while port is None and now() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError(f"{self.binary} did not say where it listens")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.pid, self.port = self.proc.pid, port
        return port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to this server's PID only
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        for dst, src in reversed(self.planted):
            if os.path.exists(dst):
                os.rename(dst, src)
        self.planted = []
        shutil.rmtree(self.data, ignore_errors=True)


def stats(s):
    s.sendall(frame({"op": "stats", "id": 99}))
    while True:  # skip any pushed msg frames
        h, _ = recv(s)
        if h.get("id") == 99:
            return h


# ---- fixtures ----------------------------------------------------------

class Fixtures:
    """Built once per invocation, only those the chosen rows need."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        try:
            self.md5 = json.load(open(self.path("md5.json")))
        except (OSError, ValueError):
            self.md5 = {}

    def path(self, name):
        return os.path.join(self.dir, name)

    def many_files(self, n=200_000, per_dir=2_000):
        # Empty files: the usage walk only stats them, and on this shared
        # disk a data block per file made the fixture take minutes.
        p = self.path("many")
        if not os.path.exists(p):
            log(f"fixture: {n:,} empty files in {n // per_dir} directories")
            os.makedirs(p + ".tmp")
            for i in range(n):
                d = os.path.join(p + ".tmp", f"d{i // per_dir:03d}")
                if i % per_dir == 0:
                    os.mkdir(d)
                os.close(os.open(os.path.join(d, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.rename(p + ".tmp", p)
        return p

    def dir10k(self, n=10_000):
        p = self.path("d10k")
        if not os.path.exists(p):
            log(f"fixture: a directory of {n:,} files")
            os.makedirs(p + ".tmp")
            for i in range(n):
                fd = os.open(os.path.join(p + ".tmp", f"f{i:05d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, b"y" * 10)
                os.close(fd)
            os.rename(p + ".tmp", p)
        return p

    def symlinks(self, n=200_000):
        p = self.path("links")
        if not os.path.exists(p):
            log(f"fixture: a directory of {n:,} symlinks")
            os.makedirs(p + ".tmp")
            for i in range(n):
                os.symlink("target-that-does-not-exist", os.path.join(p + ".tmp", f"l{i:06d}"))
            os.rename(p + ".tmp", p)
        return p

    def blob(self, name, size):
        p = self.path(name)
        if not os.path.exists(p):
            log(f"fixture: {size >> 20} MiB of random bytes ({name})")
            h = hashlib.md5()
            with open(p + ".tmp", "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 8 << 20))
                    h.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
                f.flush()
                os.fsync(f.fileno())
            self.md5[name] = h.hexdigest()
            with open(self.path("md5.json"), "w") as f:
                json.dump(self.md5, f)
            os.rename(p + ".tmp", p)
        return p

    def walk(self, p):
        """Stats every entry, so a 'warm' row really starts warm."""
        n = 0
        for root, dirs, files in os.walk(p):
            for f in files:
                os.lstat(os.path.join(root, f))
                n += 1
        return n


def page_cache(path):
    """Share of path in the page cache, from fincore (None if unknown)."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", path],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return int(out[0]) / max(1, int(out[1]))
    except Exception:
        return None


def warm(path):
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def drop_caches():
    """COLD=1 only: dentries, inodes and page cache of the whole machine."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"drop_caches failed ({e}): the cold row is skipped")
        return False


# ---- attacks -----------------------------------------------------------
# Each: setup(ctx) runs before the probe starts (server not yet started
# for the parts that plant files), attack(ctx) returns (t0, t1, extras).

def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Ctx:
    pass


def sendall_thread(sock, data):
    err = []

    def go():
        try:
            sock.sendall(data)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, err


def count_codes(hs):
    c = {}
    for h in hs:
        k = h.get("op") if h.get("op") != "error" else h.get("code")
        c[k] = c.get(k, 0) + 1
    return ", ".join(f"{v}× {k}" for k, v in sorted(c.items()))


def row_idle(x):
    """No attack: the probe alone for 1 s (its floor on this machine)."""
    t0 = now()
    time.sleep(1.0)
    return t0, now(), "no attack, 1 s"


def rows_logins(n):
    def row(x):
        s = connect(x.port)
        login(s, "bench")
        x.keep.append(s)
        data = b"".join(frame({"op": "login", "id": i + 1, "user": "bench", "password": PW}) for i in range(n))
        t0 = now()
        th, err = sendall_thread(s, data)
        hs = [recv(s)[0] for _ in range(n)]
        t1 = now()
        th.join(IO_TIMEOUT)
        return t0, t1, f"replies: {count_codes(hs)}"
    return row


def row_ls10k(x):
    s = connect(x.port)
    login(s, "lister")
    x.keep.append(s)
    n = 200
    data = b"".join(frame({"op": "ls", "id": i, "path": "/d10k"}) for i in range(n))
    t0 = now()
    th, err = sendall_thread(s, data)
    hs = [recv(s)[0] for _ in range(n)]
    t1 = now()
    th.join(IO_TIMEOUT)
    ent = {len(h.get("entries", [])) for h in hs if h.get("op") == "ok"}
    return t0, t1, f"replies: {count_codes(hs)}" + (f" (entries {sorted(ent)})" if ent else "")


def row_ls_links(x):
    s = connect(x.port)
    login(s, "linker")  # its usage walk (200k symlinks) is before t0
    x.keep.append(s)
    t0 = now()
    s.sendall(frame({"op": "ls", "id": 1, "path": "/links"}))
    h, _ = recv(s)
    t1 = now()
    return t0, t1, f"reply: {count_codes([h])}, {len(h.get('entries', []))} entries"


def row_first_login(x):
    s = connect(x.port)
    x.keep.append(s)
    t0 = now()
    h = login(s, "walker")
    t1 = now()
    return t0, t1, f"{x.cache_note}; used {h.get('used')} B"


def rows_gets(n):
    def row(x):
        readers = open_sessions(x.port, n, "getter")
        x.keep.extend(r.sock for r in readers)
        want = x.fix.md5["g64.bin"]
        data = frame({"op": "get", "id": 1, "path": "/g64.bin"})
        heads = []

        def on_frame(r, h):
            heads.append(h)
            return True  # header seen: hang up, the body is not the point

        t0 = now()
        for r in readers:
            r.sock.sendall(data)
        wait_frames(readers, 2, now() + IO_TIMEOUT, on_frame)
        t1 = now()
        bad = [h for h in heads if h.get("md5") != want]
        return t0, t1, f"{len(heads)} headers ({count_codes(heads)}), {len(bad)} wrong md5; file {x.cached}"
    return row


def row_rm(x):
    s = connect(x.port)
    login(s, "bench")
    x.keep.append(s)
    t0 = now()
    s.sendall(frame({"op": "rm", "id": 1, "path": "/big1g.bin"}))
    h, _ = recv(s)
    t1 = now()
    return t0, t1, f"reply: {count_codes([h])}; file {x.cached} before rm"


def row_say_headers(x):
    ctl = connect(x.port)
    login(ctl, "bench")
    x.keep.append(ctl)
    n = 3000
    readers = open_sessions(x.port, n, "bench")
    socks = [r.sock for r in readers]
    for s in socks:
        s.setblocking(True)
    ev0 = stats(ctl).get("evicted")
    rss0, hwm0 = status_kb(x.pid, "VmRSS"), status_kb(x.pid, "VmHWM")
    vm0 = status_kb(x.pid, "VmSize")
    smp = RssSampler(x.pid)
    head = frame({"op": "say", "id": 1, "to": "*", "size": 65536})
    t0 = now()
    for s in socks:
        s.sendall(head)  # the header of a 64 KiB message, and never its body
    t_sent = now()
    time.sleep(2.0)
    vm_held = status_kb(x.pid, "VmSize")  # reserved, touched or not
    for s in socks:
        s.close()
    t1 = now()
    peak = smp.stop()
    time.sleep(5.0)
    after = status_kb(x.pid, "VmRSS")
    st = stats(ctl)
    hwm = status_kb(x.pid, "VmHWM")
    return t0, t1, (f"headers sent in {t_sent - t0:.2f} s, held 2 s, closed; VmRSS {rss0 / 1024:.1f} MiB "
                    f"(VmHWM {hwm0 / 1024:.1f}) before → "
                    f"peak {peak / 1024:.1f} MiB (VmHWM {hwm / 1024:.1f}) → {after / 1024:.1f} MiB 5 s after close; "
                    f"VmSize {vm0 / 1024:.0f} → {vm_held / 1024:.0f} MiB while held; evicted {st.get('evicted', 0) - (ev0 or 0)}")


def row_say_flood(x):
    snd = connect(x.port)
    login(snd, "bench")
    x.keep.append(snd)
    n = 1000
    readers = open_sessions(x.port, n, "bench")  # they never read again
    x.keep.extend(r.sock for r in readers)
    ev0 = stats(snd).get("evicted", 0)
    rss0, hwm0 = status_kb(x.pid, "VmRSS"), status_kb(x.pid, "VmHWM")
    body = os.urandom(65536)
    data = b"".join(frame({"op": "say", "id": i + 1, "to": "*"}, body) for i in range(30))
    smp = RssSampler(x.pid)
    t0 = now()
    th, err = sendall_thread(snd, data)
    hs = []
    while len(hs) < 30:
        h, _ = recv(snd)
        if h.get("op") != "msg":
            hs.append(h)
    t1 = now()
    th.join(IO_TIMEOUT)
    time.sleep(0.5)
    peak = smp.stop()
    st = stats(snd)
    return t0, t1, (f"replies: {count_codes(hs)}; VmRSS {rss0 / 1024:.1f} MiB (VmHWM {hwm0 / 1024:.1f}) before → "
                    f"sampled peak {peak / 1024:.1f} MiB, VmHWM {status_kb(x.pid, 'VmHWM') / 1024:.1f}; evicted {st.get('evicted', 0) - ev0} of {n}, "
                    f"{st.get('connections')} connections left, buffered {st.get('buffered_bytes', 0) / 2**20:.1f} MiB")


def row_put(x):
    s = connect(x.port)
    login(s, "bench")
    x.keep.append(s)
    src = x.fix.path("p1g.bin")
    size, md5 = os.path.getsize(src), x.fix.md5["p1g.bin"]
    t0 = now()
    s.sendall(frame({"op": "put", "id": 1, "path": "/up1g.bin", "length": size, "md5": md5}))
    h, _ = recv(s)
    if h.get("op") != "ok" or h.get("offset") != 0:
        raise RuntimeError(f"put: {h}")
    s.sendall(frame({"op": "data", "id": 1, "size": size}))
    with open(src, "rb") as f:
        s.sendfile(f)
    t_sent = now()
    h, _ = recv(s)
    t1 = now()
    x.tail = (t_sent, t1)
    return t0, t1, (f"reply: {count_codes([h])}, md5 {'ok' if h.get('md5') == md5 else 'WRONG'}; "
                    f"{size / (t1 - t0) / 1e6:.0f} MB/s; last byte sent → ok {1e3 * (t1 - t_sent):.0f} ms")


COLD_FILES = 4  # row 14: files of 256 MiB, one per connection


def drop_from_cache(path):
    """posix_fadvise(DONTNEED) on one file (clean pages only: fsync first);
    the rest of the machine's page cache is left alone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class StateSampler:
    """The loop thread's scheduler state (R, S, D...) every 0.2 ms while
    active: D is an uninterruptible wait, here the disk; with its kernel
    stack, which says where."""

    def __init__(self, pid):
        self.pid, self.states, self.stacks, self.halt = pid, {}, {}, threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        task = f"/proc/{self.pid}/task/{self.pid}"
        while not self.halt.wait(0.0002):
            try:
                st = open(task + "/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return
            self.states[st] = self.states.get(st, 0) + 1
            if st == "D":
                try:  # root only
                    frames = open(task + "/stack").read().split("\n")[:6]
                    where = " < ".join(f.split()[1].split("+")[0] for f in frames if f.strip())
                except (OSError, IndexError):
                    where = "?"
                self.stacks[where] = self.stacks.get(where, 0) + 1

    def stop(self):
        self.halt.set()
        self.t.join()
        n = sum(self.states.values())
        top = max(self.stacks.items(), key=lambda kv: kv[1], default=("", 0))[0]
        return (f"loop thread in D {self.states.get('D', 0)} of {n} samples"
                + (f" (mostly {top})" if top else ""))


def row_cold_gets(x):
    """COLD_FILES connections each get a different 256 MiB file whose
    pages were dropped from the cache just before; bodies read whole."""
    names = [f"c256-{i}.bin" for i in range(COLD_FILES)]
    socks = []
    for _ in names:
        s = connect(x.port)
        login(s, "cold")
        socks.append(s)
    x.keep.extend(socks)
    # The server hashes a planted file on its first get (reading it into
    # the cache): get each once, read the body, then drop the pages.
    for s, name in zip(socks, names):
        skiffwire.send(s, {"op": "get", "id": 1, "path": "/" + name})
        h, size = skiffwire.recv_header(s)
        skiffwire.skip_body(s, size)
    for dst in x.paths:
        drop_from_cache(dst)
    cached = [page_cache(dst) for dst in x.paths]
    before = stats(socks[0]).get("warmed_windows")
    got, errors = [0] * len(names), []

    def fetch(i):
        try:
            skiffwire.send(socks[i], {"op": "get", "id": 2, "path": "/" + names[i]})
            h, size = skiffwire.recv_header(socks[i])
            if h.get("op") != "ok" or h.get("md5") != x.fix.md5[names[i]]:
                raise RuntimeError(f"get {names[i]}: {h}")
            skiffwire.skip_body(socks[i], size)
            got[i] = size
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=fetch, args=(i,), daemon=True) for i in range(len(names))]
    sampler = StateSampler(x.pid)
    t0 = now()
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT)
    t1 = now()
    states = sampler.stop()
    after = stats(socks[0]).get("warmed_windows")
    warmed = "n/a" if after is None else after - (before or 0)
    in_cache = ", ".join("?" if c is None else f"{100 * c:.0f} %" for c in cached)
    return t0, t1, (f"{sum(got) >> 20} MiB in {len(names)} bodies, {len(errors)} errors "
                    f"{errors[:1]}; {sum(got) / (t1 - t0) / 1e6:.0f} MB/s together; in page cache "
                    f"before: {in_cache}; warm jobs: {warmed}; {states}")


# name, description, users, plants [(fixture_fn, user, name)], row fn, prep
ROWS = {
    "idle": ("idle", "probe alone, no attack", ["bench"], [], row_idle),
    "6a": ("6", "3,000 pipelined logins (1 sendall)", ["bench"], [], rows_logins(3000)),
    "6b": ("6", "500 pipelined logins", ["bench"], [], rows_logins(500)),
    "7a": ("7", "200 pipelined ls of a 10,000-entry dir", ["lister"], [("dir10k", "lister", "d10k")], row_ls10k),
    "7b": ("7", "1 ls of a dir of 200,000 symlinks", ["linker"], [("symlinks", "linker", "links")], row_ls_links),
    "8w": ("8", "first login, home of 200,000 files (warm)", ["walker"], [("many_files", "walker", "many")], row_first_login),
    "8c": ("8", "first login, home of 200,000 files (cold)", ["walker"], [("many_files", "walker", "many")], row_first_login),
    "9a": ("9", "50 concurrent gets, one uncached 64 MiB file", ["getter"], [("g64", "getter", "g64.bin")], rows_gets(50)),
    "9b": ("9", "200 concurrent gets, one uncached 64 MiB file", ["getter"], [("g64", "getter", "g64.bin")], rows_gets(200)),
    "10": ("10", "rm of a 1 GiB file in the page cache", ["bench"], [("rm1g", "bench", "big1g.bin")], row_rm),
    "11": ("11", "3,000 conns: header of a 64 KiB say, no body", ["bench"], [], row_say_headers),
    "12": ("12", "30 × 64 KiB say * to 1,000 sessions that never read", ["bench"], [], row_say_flood),
    "13": ("13", "one 1 GiB put at full speed", ["bench"], [], row_put),
    "14": ("14", f"{COLD_FILES} concurrent gets of 256 MiB files dropped from the page cache", ["cold"],
           [(f"c256-{i}", "cold", f"c256-{i}.bin") for i in range(COLD_FILES)], row_cold_gets),
}
DEFAULT_ROWS = "idle 6a 6b 7a 7b 8w 8c 9a 9b 10 11 12 13 14"


def fixture(fix, name):
    """Path of a fixture to plant (moved in, moved back after the row)."""
    if name == "g64":
        return fix.blob("g64.bin", 64 << 20)
    if name.startswith("c256-"):
        return fix.blob(name + ".bin", 256 << 20)
    if name == "rm1g":  # consumed by the row: a fresh copy every time
        src = fix.blob("p1g.bin", 1 << 30)
        dst = fix.path("rm1g.bin")
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            while True:
                chunk = fi.read(8 << 20)
                if not chunk:
                    break
                fo.write(chunk)
            fo.flush()
            os.fsync(fo.fileno())  # clean pages: rm must not wait for writeback
        return dst
    return getattr(fix, name)()


def run_main(args):
    work = os.environ["WORK"]
    pidfile = os.path.join(work, "pids")
    runs = int(os.environ.get("RUNS", "1"))
    rows = os.environ.get("ROWS", DEFAULT_ROWS).split()
    cold = os.environ.get("COLD", "0") == "1"
    if "8c" in rows and not cold:
        rows.remove("8c")
        log("row 8 cold skipped: it needs COLD=1 (drops the page cache of the whole machine)")
    bins = []
    for a in args:
        label, _, path = a.partition("=")
        if not path:
            label, path = os.path.basename(a), a
        bins.append((label, os.path.abspath(path)))
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not bins:
        sys.exit(f"unknown rows {unknown}" if unknown else "no binaries")
    fix = Fixtures(os.environ.get("FIXTURES") or os.path.join(work, "fixtures"))
    global SLOW_DISK
    SLOW_DISK = slow_disk(work)
    if any(r in ("13",) or r == "10" for r in rows):
        fix.blob("p1g.bin", 1 << 30)  # md5 computed once, while writing
    if any(r in ("9a", "9b") for r in rows):
        fix.blob("g64.bin", 64 << 20)
    results = []
    start = now()
    log(f"load average {open('/proc/loadavg').read().split()[:3]}")
    log("elapsed_s\trow\tbinary\trun\tsamples\tp50_ms\tp99_ms\tmax_ms\tattack_s\tnotes")
    k = 0
    for run in range(1, runs + 1):
        for rid in rows:
            tag, desc, users, plants, fn = ROWS[rid]
            order = bins[k % len(bins):] + bins[:k % len(bins)]  # interleaved: the order rotates per row
            k += 1
            for label, binary in order:
                x = Ctx()
                x.fix, x.keep, x.cached, x.cache_note = fix, [], "", "warm"
                plant = [(fixture(fix, f), u, n) for f, u, n in plants]
                if rid in ("9a", "9b"):
                    warm(fix.path("g64.bin"))
                if rid == "8w":
                    fix.walk(fix.path("many"))
                srv = Server(binary, work, users, plant)
                probe = None
                try:
                    if rid == "8c":
                        x.cache_note = "cold (drop_caches just before the server started)" if drop_caches() else "warm (drop_caches failed)"
                    for dst, _ in srv.planted:
                        if os.path.isfile(dst):
                            c = page_cache(dst)
                            x.cached = "in page cache: unknown" if c is None else f"{100 * c:.0f} % in page cache"
                    x.paths = [dst for dst, _ in srv.planted]
                    x.port = srv.start(pidfile, f"skiffd-{rid}-{label}-{run}.log")
                    x.pid = srv.pid
                    probe = Probe(x.port)
                    t0, t1, notes = fn(x)
                    samples = probe.stop()
                    probe = None
                    w = window(samples, t0, t1)
                    if rid == "13":
                        tail = window(samples, *x.tail)
                        notes += f"; probe max in that tail {1e3 * max(tail, default=float('nan')):.0f} ms ({len(tail)} samples)"
                    r = dict(row=rid, tag=tag, desc=desc, label=label, run=run, samples=len(w),
                             p50=pct(w, .5) * 1e3, p99=pct(w, .99) * 1e3, max=max(w, default=float("nan")) * 1e3,
                             attack=t1 - t0, notes=notes)
                except Exception as e:
                    r = dict(row=rid, tag=tag, desc=desc, label=label, run=run, samples=0, p50=float("nan"),
                             p99=float("nan"), max=float("nan"), attack=float("nan"), notes=f"FAILED: {e!r}")
                finally:
                    if probe:
                        probe.kill()
                    for s in x.keep:
                        try:
                            s.close()
                        except OSError:
                            pass
                    srv.stop()
                    if rid == "10":
                        p = fix.path("rm1g.bin")
                        if os.path.exists(p):
                            os.remove(p)
                log(f"{now() - start:.0f}\t{rid}\t{label}\t{run}\t{r['samples']}\t{r['p50']:.1f}\t{r['p99']:.1f}\t{r['max']:.1f}\t"
                    f"{r['attack']:.3f}\t{r['notes']}")
                results.append(r)
    log(f"total {now() - start:.0f} s; load average {open('/proc/loadavg').read().split()[:3]}")
    if SLOW_DISK:
        os.rmdir(SLOW_DISK)  # empty: its servers have exited
    print_table(results, rows, bins, runs)


def print_table(results, rows, bins, runs):
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"| # | attack | binary | runs | probe samples | p50 ms | p99 ms | max ms | attack s | notes (last run) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rid in rows:
        for label, _ in bins:
            rs = [r for r in results if r["row"] == rid and r["label"] == label]
            if not rs:
                continue
            mx = [r["max"] for r in rs]
            rng = f" ({min(mx):,.0f}–{max(mx):,.0f})" if len(rs) > 1 else ""
            print(f"| {rs[0]['tag']} | {rs[0]['desc']} | {label} | {len(rs)} | {med([r['samples'] for r in rs]):,.0f} "
                  f"| {med([r['p50'] for r in rs]):,.1f} | {med([r['p99'] for r in rs]):,.1f} "
                  f"| {med(mx):,.0f}{rng} | {med([r['attack'] for r in rs]):,.3f} | {rs[-1]['notes']} |")


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(_sig, lambda n, f: sys.exit(128 + n))
    if len(sys.argv) >= 3 and sys.argv[1] == "probe":
        probe_main(int(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "run":
        run_main(sys.argv[2:])
    else:
        sys.exit(__doc__)
