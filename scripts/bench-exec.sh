#!/usr/bin/env bash
# exec (mini ssh) over loopback: spawn rate, output streaming throughput,
# and server RSS while a client refuses to read.
#
#   scripts/bench-exec.sh [RUNS] [STREAM_MIB]    (default: 3 runs, 1024 MiB)
#
# Each run, interleaved so every ratio comes from one run:
#   spawn-local   `for i in $(seq 500); do sh -c true; done` in bash
#   spawn-remote  `exec true` back to back on one connection for 5 s
#                 (Python client: send exec, wait for its exit frame)
#   spawn-cli     `skiff exec true` run back to back for 5 s: a new client
#                 process, connection and login (argon2) per command, so
#                 this is the end-to-end figure, not the server's spawn rate
#   pipe-local    `head -c SIZE /dev/zero | cat >/dev/null`
#   pipe-remote   exec `head -c SIZE /dev/zero`, client reads and discards
#                 the out frames until exit (server CPU from /proc/PID/stat)
#   pipe-cli      `skiff exec head -c SIZE /dev/zero >/dev/null` (the real
#                 client, Rust; client CPU from getrusage)
#   stall         exec `yes`, the client reads nothing for 10 s: server
#                 VmRSS sampled every 50 ms (max); then cancel and drain
# Binaries: SKIFFD, SKIFF (default target/release/...), and SKIFFD_BASE:
# an earlier skiffd, the contender "skiffd-base", run exactly like skiffd
# (the order of the two rotates every run), to compare two versions in one
# run; the table then gives both medians and the median of the per-run
# ratios skiffd / skiffd-base. A fresh server per run and contender,
# stopped by PID when its part ends (also on SIGTERM/SIGINT/SIGHUP).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
STREAM_MIB=${2:-1024}
export SKIFFD=${SKIFFD:-$PWD/target/release/skiffd}
export SKIFF=${SKIFF:-$PWD/target/release/skiff}
export SKIFFD_BASE=${SKIFFD_BASE:-}
export WORK=${WORK:-/tmp/bench-exec}
export RUNS STREAM_MIB
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"   # skiffwire.py
exec python3 - <<'PY'
import faulthandler, json, os, re, shutil, statistics, subprocess, sys, threading, time
import skiffwire
from skiffwire import send
faulthandler.dump_traceback_later(int(os.environ.get("BENCH_WATCHDOG", "900")), exit=True)

SKIFFD, SKIFF, WORK = os.environ["SKIFFD"], os.environ["SKIFF"], os.environ["WORK"]
CONTENDERS = [("skiffd", SKIFFD)] + ([("skiffd-base", os.environ["SKIFFD_BASE"])] if os.environ["SKIFFD_BASE"] else [])
RUNS, SIZE = int(os.environ["RUNS"]), int(os.environ["STREAM_MIB"]) << 20
TICK = os.sysconf("SC_CLK_TCK")
import signal
# SIGTERM/SIGHUP/SIGINT raise SystemExit, so every `finally` below runs and
# stops the server this script started (by its PID), however the run ends.
for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(_sig, lambda n, f: sys.exit(128 + n))
MB = 1e6
DATA = os.path.join(WORK, "data")
os.makedirs(WORK, exist_ok=True)

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def start_server(skiffd):
    shutil.rmtree(DATA, ignore_errors=True)
    subprocess.run([skiffd, "user", "add", "bench", "--exec", "--password-stdin", "--data-dir", DATA],
                   input="pw\n", text=True, check=True, capture_output=True)
    p = subprocess.Popen([skiffd, "serve", "--data-dir", DATA, "--listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
        if m:
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, int(m.group(1))

def connect(port):
    """A logged-in connection and a Reader that drops bodies (they are
    only counted)."""
    s = skiffwire.connect(port)
    skiffwire.login(s, "bench", "pw")
    return s, skiffwire.Reader(s)

def run_to_exit(s, r, i, cmd):
    send(s, {"op": "exec", "id": i, "cmd": cmd})
    out = 0
    while True:
        h, n = r.next()
        if h["op"] == "exit":
            assert h.get("code") == 0, h
            return out
        if h["op"] in ("out", "err"):
            out += n
        else:
            raise RuntimeError(h)

def spawn_remote(port, secs=5.0):
    s, r = connect(port)
    run_to_exit(s, r, 1, "true")  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        run_to_exit(s, r, n + 2, "true")
        n += 1
    dt = time.perf_counter() - t0
    s.close()
    return n / dt

def skiff_exec(port, *cmd, stdout=subprocess.DEVNULL):
    env = dict(os.environ, SKIFF_PASSWORD="pw")
    subprocess.run([SKIFF, "--addr", f"127.0.0.1:{port}", "--user", "bench", "exec", *cmd],
                   env=env, check=True, stdin=subprocess.DEVNULL, stdout=stdout)

def spawn_cli(port, secs=5.0):
    skiff_exec(port, "true")  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        skiff_exec(port, "true")
        n += 1
    return n / (time.perf_counter() - t0)

def pipe_cli(port, pid):
    import resource
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, t0 = cpu(pid), time.perf_counter()
    skiff_exec(port, "head", "-c", str(SIZE), "/dev/zero")
    dt, c = time.perf_counter() - t0, cpu(pid) - c0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cc = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return SIZE / dt / MB, c, cc

def spawn_local(n=500):
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do sh -c true; done"], check=True)
    return n / (time.perf_counter() - t0)

def pipe_local():
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", f"head -c {SIZE} /dev/zero | cat >/dev/null"], check=True)
    return SIZE / (time.perf_counter() - t0) / MB

def pipe_remote(port, pid):
    s, r = connect(port)
    c0, t0 = cpu(pid), time.perf_counter()
    got = run_to_exit(s, r, 1, f"head -c {SIZE} /dev/zero")
    dt, c = time.perf_counter() - t0, cpu(pid) - c0
    assert got == SIZE, got
    s.close()
    return SIZE / dt / MB, c

def stall(port, pid, secs=10.0):
    s, r = connect(port)
    base = rss(pid)
    send(s, {"op": "exec", "id": 1, "cmd": "yes"})
    mx, t0 = 0, time.time()
    while time.time() - t0 < secs:
        mx = max(mx, rss(pid))
        time.sleep(0.05)
    send(s, {"op": "cancel", "id": 1})
    while True:  # drain to the exit frame
        h, _ = r.next()
        if h["op"] == "exit":
            break
    after = rss(pid)
    s.close()
    return base / 1024, mx / 1024, after / 1024

def serve(skiffd):
    """A fresh server from the binary skiffd, every step against it."""
    srv, port = start_server(skiffd)
    pid = srv.pid
    x = {}
    try:
        x["spawn_local_per_s"] = spawn_local()
        c0 = cpu(pid)
        x["spawn_remote_per_s"] = spawn_remote(port)
        x["spawn_remote_server_cpu_s"] = cpu(pid) - c0
        x["spawn_cli_per_s"] = spawn_cli(port)
        x["spawn_local2_per_s"] = spawn_local()
        x["pipe_local_MBps"] = pipe_local()
        x["pipe_remote_MBps"], x["pipe_remote_server_cpu_s"] = pipe_remote(port, pid)
        x["pipe_cli_MBps"], x["pipe_cli_server_cpu_s"], x["pipe_cli_client_cpu_s"] = pipe_cli(port, pid)
        x["pipe_local2_MBps"] = pipe_local()
        x["stall_rss_before_MiB"], x["stall_rss_max_MiB"], x["stall_rss_after_MiB"] = stall(port, pid)
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                x["VmHWM_MiB"] = int(line.split()[1]) / 1024
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill(); srv.wait()
    loc_spawn = (x["spawn_local_per_s"] + x["spawn_local2_per_s"]) / 2
    loc_pipe = (x["pipe_local_MBps"] + x["pipe_local2_MBps"]) / 2
    x["spawn_ratio"] = x["spawn_remote_per_s"] / loc_spawn
    x["pipe_ratio"] = x["pipe_remote_MBps"] / loc_pipe
    x["spawn_cli_ratio"] = x["spawn_cli_per_s"] / loc_spawn
    x["pipe_cli_ratio"] = x["pipe_cli_MBps"] / loc_pipe
    return x

rows = {label: [] for label, _ in CONTENDERS}
for run in range(1, RUNS + 1):
    k = (run - 1) % len(CONTENDERS)
    for label, skiffd in CONTENDERS[k:] + CONTENDERS[:k]:
        x = serve(skiffd)
        log(f"run {run} {label}: " + json.dumps({k: round(v, 3) for k, v in x.items()}))
        rows[label].append(x)

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
