#!/usr/bin/env bash
# File service over loopback: 1 GiB put and get against the MD5 and TCP
# ceilings, server peak RSS and CPU, and login (argon2) time.
#
#   scripts/bench-files.sh [RUNS] [SIZE_MIB]     (default: 3 runs, 1024 MiB)
#
# Each run, in this order, interleaved so every ratio comes from one run:
#   md5sum and `openssl md5` of the test file (in page cache) -> MD5 MB/s
#   iperf3 -t 2 over 127.0.0.1 (if installed)                  -> TCP MB/s
#   a fresh skiffd (so VmHWM is this run's), then:
#     put-py   Python client, md5 precomputed: put request -> final ok
#              (body sent with socket.sendfile; includes the server's fsync)
#     put-cli  `skiff put` wall time (client hashes first, then uploads)
#     get-cli  `skiff get` wall time, client verifies MD5 (MD5 cached by put)
#     get-py   Python get, body read and discarded (server-side ceiling)
#     get-cold Python get of a file copied into the home by hand (no cached
#              MD5: the server hashes it in 1 MiB steps before sending)
#     login    50 logins on one connection (median, p90), with a second
#              client timing `echo` round trips meanwhile
# Server CPU per phase: utime+stime from /proc/PID/stat before/after.
# Server RSS per phase: VmRSS sampled every 50 ms (max), plus VmHWM.
# Binaries: SKIFFD, SKIFF (default target/release/...). Work dir: WORK
# (default /tmp/bench-files; the test file lives there, ~SIZE*3 of disk).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SIZE_MIB=${2:-1024}
export SKIFFD=${SKIFFD:-$PWD/target/release/skiffd}
export SKIFF=${SKIFF:-$PWD/target/release/skiff}
export WORK=${WORK:-/tmp/bench-files}
export RUNS SIZE_MIB
exec python3 - <<'PY'
import hashlib, json, os, re, shutil, socket, statistics, struct, subprocess, sys, threading, time

SKIFFD, SKIFF, WORK = os.environ["SKIFFD"], os.environ["SKIFF"], os.environ["WORK"]
RUNS, SIZE = int(os.environ["RUNS"]), int(os.environ["SIZE_MIB"]) << 20
TICK = os.sysconf("SC_CLK_TCK")
import signal
# SIGTERM/SIGHUP/SIGINT raise SystemExit, so every `finally` below runs and
# stops the server this script started (by its PID), however the run ends.
for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(_sig, lambda n, f: sys.exit(128 + n))
MB = 1e6
os.makedirs(WORK, exist_ok=True)
DATA = os.path.join(WORK, "data")
BIG = os.path.join(WORK, "big.bin")
PW = "pw"

def log(*a):
    print(*a, file=sys.stderr, flush=True)

# ---- test file ---------------------------------------------------------
if not os.path.exists(BIG) or os.path.getsize(BIG) != SIZE:
    log(f"writing {SIZE >> 20} MiB of random bytes to {BIG}")
    with open(BIG, "wb") as f:
        left = SIZE
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
subprocess.run(["cat", BIG], stdout=subprocess.DEVNULL, check=True)  # page cache
BIG_MD5 = subprocess.run(["md5sum", BIG], capture_output=True, text=True, check=True).stdout.split()[0]

# ---- protocol ----------------------------------------------------------
def send(s, header, body=b""):
    header = dict(header, size=len(body)) if body or "size" not in header else header
    h = json.dumps(header).encode()
    s.sendall(struct.pack("!I", len(h)) + h + body)

def recv_exact(s, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise ConnectionError("closed")
        got += k
    return bytes(buf)

def recv(s):
    (hlen,) = struct.unpack("!I", recv_exact(s, 4))
    header = json.loads(recv_exact(s, hlen))
    return header, recv_exact(s, header.get("size", 0))

def recv_header_discard_body(s, hasher=None):
    (hlen,) = struct.unpack("!I", recv_exact(s, 4))
    header = json.loads(recv_exact(s, hlen))
    left = header.get("size", 0)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while left:
        k = s.recv_into(view[: min(left, len(buf))])
        if not k:
            raise ConnectionError("closed")
        if hasher:
            hasher.update(view[:k])
        left -= k
    return header

def connect(port, login=True):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if login:
        send(s, {"op": "login", "id": 0, "user": "bench", "password": PW})
        h, _ = recv(s)
        assert h["op"] == "ok", h
    return s

# ---- server ------------------------------------------------------------
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    return 0

class Sampler:
    """Max VmRSS (kB) of pid, sampled every 50 ms while active."""
    def __init__(self, pid):
        self.pid, self.max, self.stop = pid, 0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
    def run(self):
        while not self.stop.is_set():
            try:
                self.max = max(self.max, status(self.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.05)
    def done(self):
        self.stop.set()
        self.t.join()
        return self.max

def start_server():
    shutil.rmtree(DATA, ignore_errors=True)
    subprocess.run([SKIFFD, "user", "add", "bench", "--exec", "--password-stdin", "--data-dir", DATA],
                   input=PW + "\n", text=True, check=True, capture_output=True)
    p = subprocess.Popen([SKIFFD, "serve", "--data-dir", DATA, "--listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
    if not m:  # the line may come after others
        for line in p.stdout:
            m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
            if m:
                break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, int(m.group(1))

def phase(pid, fn):
    """Runs fn(); returns (seconds, server cpu s, max sampled VmRSS MiB, fn result)."""
    smp = Sampler(pid)
    c0 = cpu(pid)
    t0 = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - t0
    c1 = cpu(pid)
    return dt, c1 - c0, smp.done() / 1024, r

# ---- clients -----------------------------------------------------------
def put_py(port, remote):
    s = connect(port)
    t0 = time.perf_counter()
    send(s, {"op": "put", "id": 1, "path": remote, "length": SIZE, "md5": BIG_MD5})
    h, _ = recv(s)
    assert h["op"] == "ok" and h["offset"] == 0, h
    hd = json.dumps({"op": "data", "id": 1, "size": SIZE}).encode()
    s.sendall(struct.pack("!I", len(hd)) + hd)
    with open(BIG, "rb") as f:
        s.sendfile(f)
    t_sent = time.perf_counter()
    h, _ = recv(s)
    t1 = time.perf_counter()
    assert h["op"] == "ok" and h["md5"] == BIG_MD5, h
    s.close()
    return t1 - t0, t1 - t_sent  # whole put, last byte sent -> ok (verify+fsync+rename)

def get_py(port, remote):
    s = connect(port)
    t0 = time.perf_counter()
    send(s, {"op": "get", "id": 1, "path": remote})
    h = recv_header_discard_body(s)
    t1 = time.perf_counter()
    assert h["op"] == "ok" and h["length"] == SIZE, h
    s.close()
    return t1 - t0

def cli(port, *args):
    """Runs the skiff client; returns its CPU seconds (user+sys)."""
    import resource
    env = dict(os.environ, SKIFF_PASSWORD=PW)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([SKIFF, "--addr", f"127.0.0.1:{port}", "--user", "bench", *args],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0

PROBER = r"""
import json, socket, struct, sys, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
h = json.dumps({"op": "echo", "id": 9, "size": 16}).encode()
frame = struct.pack("!I", len(h)) + h + b"x" * 16
out, end = [], time.time() + dur
while time.time() < end:
    t0 = time.perf_counter(); s.sendall(frame)
    (n,) = struct.unpack("!I", s.recv(4, socket.MSG_WAITALL)); hd = json.loads(s.recv(n, socket.MSG_WAITALL))
    s.recv(hd["size"], socket.MSG_WAITALL); t1 = time.perf_counter()
    out.append((time.time(), t1 - t0)); time.sleep(0.002)
print(json.dumps(out))
"""

def login_loop(port, n=50):
    """n logins on one connection; an echo prober (another process) runs
    throughout: its round trips before the logins are the idle baseline."""
    pr = subprocess.Popen([sys.executable, "-c", PROBER, str(port), "0"], stdout=subprocess.PIPE, text=True)
    pr.wait()  # warm python start-up path
    s = connect(port, login=False)
    times = []
    pr = subprocess.Popen([sys.executable, "-c", PROBER, str(port), "3"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    w0 = time.time()
    for i in range(n):
        t0 = time.perf_counter()
        send(s, {"op": "login", "id": i, "user": "bench", "password": PW})
        h, _ = recv(s)
        times.append(time.perf_counter() - t0)
        assert h["op"] == "ok", h
    w1 = time.time()
    s.close()
    samples = json.loads(pr.communicate()[0])
    idle = [d for t, d in samples if t < w0 - 0.05]
    busy = [d for t, d in samples if w0 <= t <= w1]
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
    return {"login_med_ms": statistics.median(times) * 1e3, "login_p90_ms": q(times, .9) * 1e3,
            "echo_idle_med_ms": statistics.median(idle) * 1e3,
            "echo_during_login_med_ms": statistics.median(busy) * 1e3 if busy else float("nan"),
            "echo_during_login_max_ms": max(busy) * 1e3 if busy else float("nan")}

# ---- runs --------------------------------------------------------------
have_iperf = shutil.which("iperf3") is not None
rows = []
for run in range(1, RUNS + 1):
    r = {}
    r["md5sum_MBps"] = SIZE / timed(["md5sum", BIG]) / MB
    r["openssl_md5_MBps"] = SIZE / timed(["openssl", "md5", BIG]) / MB
    t0 = time.perf_counter(); hashlib.md5(open(BIG, "rb").read()).hexdigest()
    r["hashlib_md5_MBps"] = SIZE / (time.perf_counter() - t0) / MB
    if have_iperf:
        ip = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5299"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            o = json.loads(subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", "2", "-J"],
                                          capture_output=True, text=True).stdout)
            r["tcp_MBps"] = o["end"]["sum_received"]["bits_per_second"] / 8 / MB
            ip.wait(timeout=5)
        finally:
            if ip.poll() is None:
                ip.kill(); ip.wait()
    srv, port = start_server()
    pid = srv.pid
    try:
        dt, c, rss, (whole, tail) = phase(pid, lambda: put_py(port, "big.bin"))
        r.update(put_py_MBps=SIZE / whole / MB, put_py_tail_s=tail, put_py_cpu_s=c, put_py_rss_MiB=rss)
        th = timed(["md5sum", BIG])
        dt, c, rss, cc = phase(pid, lambda: cli(port, "put", BIG, "big2.bin"))
        r.update(put_cli_client_cpu_s=cc, put_cli_s=dt, put_cli_MBps=SIZE / dt / MB, put_cli_minus_hash_MBps=SIZE / max(dt - th, 1e-9) / MB,
                 put_cli_cpu_s=c, put_cli_rss_MiB=rss)
        out = os.path.join(WORK, "got.bin")
        for f in (out, out + ".part"):
            if os.path.exists(f): os.remove(f)
        dt, c, rss, cc = phase(pid, lambda: cli(port, "get", "big.bin", out))
        assert os.path.getsize(out) == SIZE
        os.remove(out)
        r.update(get_cli_client_cpu_s=cc, get_cli_MBps=SIZE / dt / MB, get_cli_cpu_s=c, get_cli_rss_MiB=rss)
        dt, c, rss, _ = phase(pid, lambda: get_py(port, "big.bin"))
        r.update(get_py_MBps=SIZE / dt / MB, get_py_cpu_s=c, get_py_rss_MiB=rss)
        cold = os.path.join(DATA, "homes", "bench", f"cold{run}.bin")
        shutil.copyfile(BIG, cold)
        dt, c, rss, _ = phase(pid, lambda: get_py(port, f"cold{run}.bin"))
        r.update(get_cold_MBps=SIZE / dt / MB, get_cold_cpu_s=c, get_cold_rss_MiB=rss)
        r.update(login_loop(port))
        r["VmHWM_MiB"] = status(pid, "VmHWM") / 1024
        r["server_total_cpu_s"] = cpu(pid)
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill(); srv.wait()
    r["put_py_vs_md5"] = r["put_py_MBps"] / r["openssl_md5_MBps"]
    r["get_cli_vs_md5"] = r["get_cli_MBps"] / r["openssl_md5_MBps"]
    r["get_py_vs_md5"] = r["get_py_MBps"] / r["openssl_md5_MBps"]
    r["get_cpu_vs_hash"] = r["get_py_cpu_s"] / (SIZE / (r["openssl_md5_MBps"] * MB))
    log(f"run {run}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
    rows.append(r)

print(f"| figure | median | runs |")
print(f"|---|---|---|")
for k in rows[0]:
    vals = [r[k] for r in rows if k in r]
    print(f"| {k} | {statistics.median(vals):.3f} | {', '.join(f'{v:.3f}' for v in vals)} |")
PY
