#!/usr/bin/env bash
# Login (argon2id) cost: wall time per login and server CPU per login,
# split into user and system time (system time is mostly the page faults
# of argon2's working area when it is mmapped fresh for every login), and
# the server's VmHWM/VmRSS afterwards.
#
#   scripts/bench-login.sh [RUNS] [LOGINS]      (default: 3 runs, 100 logins)
#
# Contenders: SERVERS="LABEL=SKIFFD_BINARY ..." (default: "main=target/release/skiffd"),
# interleaved: the order rotates every run. Each run starts a fresh server
# pinned to CPU 0 (taskset -c 0), the Python client runs on CPU 1, LOGINS
# logins back to back on one connection. Every server this script starts is
# stopped by its PID, also on SIGTERM/SIGINT/SIGHUP.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS=${1:-3} LOGINS=${2:-100}
export SERVERS=${SERVERS:-main=$PWD/target/release/skiffd}
export WORK=${WORK:-/tmp/bench-login}
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"   # skiffwire.py
exec taskset -c 1 python3 - <<'PY'
import json, os, re, shutil, signal, statistics, subprocess, sys, threading, time
import skiffwire
for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(_sig, lambda n, f: sys.exit(128 + n))
RUNS, N, WORK = int(os.environ["RUNS"]), int(os.environ["LOGINS"]), os.environ["WORK"]
SERVERS = [tuple(x.split("=", 1)) for x in os.environ["SERVERS"].split()]
TICK = os.sysconf("SC_CLK_TCK")

def stat(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / TICK, int(f[12]) / TICK, int(f[7])  # utime, stime, minflt

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0

def minflt(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])

rows = []
for run in range(1, RUNS + 1):
    k = (run - 1) % len(SERVERS)
    for label, binary in SERVERS[k:] + SERVERS[:k]:
        data = os.path.join(WORK, label)
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([binary, "user", "add", "bench", "--password-stdin", "--data-dir", data],
                       input="pw\n", text=True, check=True, capture_output=True)
        p = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in p.stdout:
                m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
                if m:
                    break
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            s = skiffwire.connect(int(m.group(1)))
            skiffwire.login(s, "bench", "pw")  # warm-up
            u0, s0, _ = stat(p.pid); f0 = minflt(p.pid)
            times = []
            for i in range(N):
                t0 = time.perf_counter()
                skiffwire.send(s, {"op": "login", "id": i + 1, "user": "bench", "password": "pw"})
                h, _ = skiffwire.recv(s)
                times.append(time.perf_counter() - t0)
                assert h["op"] == "ok", h
            u1, s1, _ = stat(p.pid); f1 = minflt(p.pid)
            s.close()
            r = dict(server=label, run=run, wall_med_ms=statistics.median(times) * 1e3,
                     wall_p90_ms=sorted(times)[int(0.9 * N)] * 1e3,
                     user_ms=(u1 - u0) / N * 1e3, sys_ms=(s1 - s0) / N * 1e3,
                     minflt=(f1 - f0) / N, VmHWM_MiB=status(p.pid, "VmHWM"), VmRSS_MiB=status(p.pid, "VmRSS"))
        finally:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill(); p.wait()
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), file=sys.stderr, flush=True)
        rows.append(r)

keys = ["wall_med_ms", "wall_p90_ms", "user_ms", "sys_ms", "minflt", "VmHWM_MiB", "VmRSS_MiB"]
print("| server | runs | " + " | ".join(keys) + " |")
print("|---|---|" + "---|" * len(keys))
for label, _ in SERVERS:
    rs = [r for r in rows if r["server"] == label]
    print(f"| {label} | {len(rs)} | " + " | ".join(f"{statistics.median(r[k] for r in rs):.2f}" for k in keys) + " |")
PY
