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
# The Python clients log in before their phase starts (and wait 0.5 s),
# so a phase's time, CPU and RSS are the file service's, not the login's
# (argon2's working area is freed when its worker goes idle); the `skiff`
# phases include the client's own login.
# Server CPU per phase: utime+stime from /proc/PID/stat before/after.
# Server RSS per phase: VmRSS sampled every 50 ms (max); file_rss_max is
# the largest over the Python phases; VmHWM at the end covers everything.
# Binaries: SKIFFD, SKIFF (default target/release/...), and SKIFFD_BASE:
# an earlier skiffd, the contender "skiffd-base", run exactly like skiffd
# after the same run's ceilings (the order of the two rotates every run),
# to compare two versions in one run; the table then gives both medians
# and the median of the per-run ratios skiffd / skiffd-base. Work dir: WORK
# (default /tmp/bench-files; the test file lives there, ~SIZE*3 of disk).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SIZE_MIB=${2:-1024}
export SKIFFD=${SKIFFD:-$PWD/target/release/skiffd}
export SKIFF=${SKIFF:-$PWD/target/release/skiff}
export SKIFFD_BASE=${SKIFFD_BASE:-}
export WORK=${WORK:-/tmp/bench-files}
export RUNS SIZE_MIB
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"   # skiffwire.py
exec python3 - <<'PY'
import hashlib, json, os, re, shutil, statistics, subprocess, sys, threading, time
import skiffwire
from skiffwire import recv, send

SKIFFD, SKIFF, WORK = os.environ["SKIFFD"], os.environ["SKIFF"], os.environ["WORK"]
CONTENDERS = [("skiffd", SKIFFD)] + ([("skiffd-base", os.environ["SKIFFD_BASE"])] if os.environ["SKIFFD_BASE"] else [])
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

# ---- protocol (framing: scripts/skiffwire.py) -------------------------
def connect(port, login=True):
    s = skiffwire.connect(port)
    if login:
        skiffwire.login(s, "bench", PW)
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

def start_server(skiffd):
    shutil.rmtree(DATA, ignore_errors=True)
    subprocess.run([skiffd, "user", "add", "bench", "--exec", "--password-stdin", "--data-dir", DATA],
                   input=PW + "\n", text=True, check=True, capture_output=True)
    p = subprocess.Popen([skiffd, "serve", "--data-dir", DATA, "--listen", "127.0.0.1:0"],
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
def session(port):
    """A logged-in connection for a phase, made before the phase starts;
    0.5 s later the login's argon2 area has been freed."""
    s = connect(port)
    time.sleep(0.5)
    return s

def put_py(s, remote):
    t0 = time.perf_counter()
    send(s, {"op": "put", "id": 1, "path": remote, "length": SIZE, "md5": BIG_MD5})
    h, _ = recv(s)
    assert h["op"] == "ok" and h["offset"] == 0, h
    s.sendall(skiffwire.frame({"op": "data", "id": 1, "size": SIZE}))  # its body: sendfile below
    with open(BIG, "rb") as f:
        s.sendfile(f)
    t_sent = time.perf_counter()
    h, _ = recv(s)
    t1 = time.perf_counter()
    assert h["op"] == "ok" and h["md5"] == BIG_MD5, h
    s.close()
    return t1 - t0, t1 - t_sent  # whole put, last byte sent -> ok (verify+fsync+rename)

def get_py(s, remote):
    t0 = time.perf_counter()
    send(s, {"op": "get", "id": 1, "path": remote})
    h, size = skiffwire.recv_header(s)
    skiffwire.skip_body(s, size)
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
import json, sys, time
import skiffwire
port, dur = int(sys.argv[1]), float(sys.argv[2])
s = skiffwire.connect(port)
frame = skiffwire.frame({"op": "echo", "id": 9}, b"x" * 16)
out, end = [], time.time() + dur
while time.time() < end:
    t0 = time.perf_counter(); s.sendall(frame)
    skiffwire.recv(s); t1 = time.perf_counter()
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
def ceilings():
    """MD5 and loopback TCP speed, for this run's ratios."""
    r = {}
    r["md5sum_MBps"] = SIZE / timed(["md5sum", BIG]) / MB
    r["openssl_md5_MBps"] = SIZE / timed(["openssl", "md5", BIG]) / MB
    t0 = time.perf_counter(); hashlib.md5(open(BIG, "rb").read()).hexdigest()
    r["hashlib_md5_MBps"] = SIZE / (time.perf_counter() - t0) / MB
    if shutil.which("iperf3"):
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
    return r

def serve(skiffd, run, r):
    """A fresh server from the binary skiffd, every phase against it."""
    srv, port = start_server(skiffd)
    pid = srv.pid
    try:
        s = session(port)
        dt, c, rss, (whole, tail) = phase(pid, lambda: put_py(s, "big.bin"))
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
        s = session(port)
        dt, c, rss, _ = phase(pid, lambda: get_py(s, "big.bin"))
        r.update(get_py_MBps=SIZE / dt / MB, get_py_cpu_s=c, get_py_rss_MiB=rss)
        cold = os.path.join(DATA, "homes", "bench", f"cold{run}.bin")
        shutil.copyfile(BIG, cold)
        s = session(port)
        dt, c, rss, _ = phase(pid, lambda: get_py(s, f"cold{run}.bin"))
        r.update(get_cold_MBps=SIZE / dt / MB, get_cold_cpu_s=c, get_cold_rss_MiB=rss)
        r["file_rss_max_MiB"] = max(r["put_py_rss_MiB"], r["get_py_rss_MiB"], r["get_cold_rss_MiB"])
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
    return r

rows = {label: [] for label, _ in CONTENDERS}
for run in range(1, RUNS + 1):
    ceiling = ceilings()
    k = (run - 1) % len(CONTENDERS)
    for label, skiffd in CONTENDERS[k:] + CONTENDERS[:k]:
        r = serve(skiffd, run, dict(ceiling))
        log(f"run {run} {label}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
        rows[label].append(r)

med = statistics.median
labels = [label for label, _ in CONTENDERS]
print("| figure | " + " | ".join(f"{l} median | runs" for l in labels) + (" | ratio skiffd / skiffd-base (median of runs) |" if len(labels) > 1 else " |"))
print("|---|" + "---|---|" * len(labels) + ("---|" if len(labels) > 1 else ""))
for key in rows["skiffd"][0]:
    cells = []
    for l in labels:
        vals = [r[key] for r in rows[l] if key in r]
        cells.append(f"{med(vals):.3f} | {', '.join(f'{v:.3f}' for v in vals)}")
    if len(labels) > 1:
        pairs = [a[key] / b[key] for a, b in zip(rows["skiffd"], rows["skiffd-base"]) if key in a and key in b and b[key]]
        cells.append(f"{med(pairs):.2f}" if pairs else "")
    print(f"| {key} | " + " | ".join(cells) + " |")
PY
