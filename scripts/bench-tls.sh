#!/usr/bin/env bash
# TLS side by side, in one run: skiffd over TLS against plaintext skiffd and
# against redis-server with --tls-port.
#
#   scripts/bench-tls.sh [RUNS] [DURATION] [SIZE_MIB] [IDLE_CONNS]
#   (defaults: 3 runs, 5s, 1024 MiB, 2000 connections)
#
# Every run does each part below once, the contenders back to back in an
# order that rotates every run, each on a fresh server pinned to CPU 0 with
# its client on CPU 1; the tables give medians over the runs and the median
# of the per-run ratios.
#
#   echo       cells 1:64:1 and 50:64:16 (CONNS:SIZE:PIPELINE). skiffd-plain
#              and skiffd-tls get `skiff swarm --mix echo:64 --duration
#              DURATION` (tls:// for the TLS listener, the certificate
#              pinned on first use); redis-plain and redis-tls get
#              `redis-benchmark -t ping_mbulk,set -d 64` (`--tls` for the
#              TLS port). Server CPU per request: utime+stime from
#              /proc/PID/stat before and after the load, / requests.
#   get        a fresh skiffd with both listeners and a SIZE_MIB file in a
#              user's home, fetched once unmeasured (the server hashes a
#              file on its first get and keeps the MD5 in memory; the file
#              is then in the page cache); then `skiff get FILE -` over
#              plain and over TLS, to /dev/null (the client still checks
#              the MD5): MB/s (wall) and server CPU seconds per GiB.
#   handshake  `openssl s_time -new -time 5` (one full TLS 1.3 handshake
#              after another, then close) against skiffd's and redis's TLS
#              ports: handshakes/s and server CPU per handshake; and
#              `skiff swarm --conns 200` over tls:// for the handshake time
#              the swarm reports (p50, p99).
#   idle RSS   a fresh skiffd; IDLE_CONNS connections from one Python
#              process, plain or TLS (handshake done, then idle); server
#              VmRSS per connection after a 1 s settle, and again after one
#              64 B echo on each.
#
# Everything uses one certificate made here by openssl (ECDSA P-256, the
# kind skiffd makes for itself). redis-server and redis-benchmark come from
# Debian (`apt-get install redis-server redis-tools`, done here if missing
# and run as root; Debian builds redis with TLS).
# Binaries: SKIFFD, SKIFF (default target/release/...), REDIS_SERVER,
# REDIS_BENCHMARK. PARTS picks the parts (default "echo get handshake rss").
# Every server is stopped by its PID however this ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=${1:-3}; DUR=${2:-5s}; SIZE_MIB=${3:-1024}; IDLE_CONNS=${4:-2000}
SKIFFD=${SKIFFD:-target/release/skiffd}
SKIFF=${SKIFF:-target/release/skiff}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
REDIS_N_P1=${REDIS_N_P1:-100000}
REDIS_N_P16=${REDIS_N_P16:-2000000}
PARTS=" ${PARTS:-echo get handshake rss} "
has() { [[ $PARTS == *" $1 "* ]]; }
TICK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"

if { has echo || has handshake; } && { ! command -v "$REDIS_SERVER" >/dev/null || ! command -v "$REDIS_BENCHMARK" >/dev/null; }; then
    [ "$(id -u)" = 0 ] || { echo "needs redis-server and redis-tools (apt-get install)" >&2; exit 1; }
    apt-get install -y redis-server redis-tools >/dev/null
    # Debian starts a system redis on install: not ours, leave it be.
fi

WORK=$(mktemp -d /tmp/skiff-bench-tls.XXXXXX)
RESULTS=$WORK/results.tsv
: > "$RESULTS"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -f "$WORK/data/homes/bench/big.bin"  # the raw results stay
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# row KIND CONTENDER CELL RUN VALUE...: one line of raw results
row() { printf '%s\t' "$@" | sed 's/\t$//' >>"$RESULTS"; echo >>"$RESULTS"; tail -n1 "$RESULTS" >&2; }

CERT=$WORK/cert.pem KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$KEY" -out "$CERT" 2>/dev/null

start_skiffd() { # -> SERVER_PID, PORT (plain), TLS_PORT, KNOWN (a fresh known-hosts file)
    local out=$WORK/skiffd.out
    : > "$out"
    taskset -c 0 "$SKIFFD" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 \
        --tls-cert "$CERT" --tls-key "$KEY" >"$out" 2>"$WORK/skiffd.err" &
    SERVER_PID=$!
    PORT=$(framed_port "$out"); TLS_PORT=$(tls_port "$out")
    KNOWN=$WORK/known_hosts; rm -f "$KNOWN"
}

start_redis() { # tls|plain -> SERVER_PID, PORT
    PORT=$(free_port)
    local listen=(--port "$PORT")
    [ "$1" = tls ] && listen=(--port 0 --tls-port "$PORT" --tls-cert-file "$CERT" --tls-key-file "$KEY"
                              --tls-ca-cert-file "$CERT" --tls-auth-clients no)
    : > "$WORK/redis.out"
    taskset -c 0 "$REDIS_SERVER" "${listen[@]}" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" >"$WORK/redis.out" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q 'Ready to accept' "$WORK/redis.out" && break; sleep 0.05; done
}

stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

# `skiff` against the running skiffd: plain or TLS address.
skiff_addr() { if [ "$1" = tls ]; then echo "tls://127.0.0.1:$TLS_PORT --known-hosts $KNOWN"; else echo "127.0.0.1:$PORT"; fi; }

echo_skiffd() { # plain|tls conns pipeline run
    start_skiffd; sleep 0.3
    local t0 t1 json
    t0=$(cpu_ticks "$SERVER_PID")
    # shellcheck disable=SC2046 # the address may carry --known-hosts
    json=$(taskset -c 1 "$SKIFF" --addr $(skiff_addr "$1") swarm --conns "$2" --pipeline "$3" \
        --mix echo:64 --duration "$DUR" --json 2>/dev/null) || true
    t1=$(cpu_ticks "$SERVER_PID")
    stop
    row $(python3 - "$@" "$t0" "$t1" "$TICK" "$json" <<'PY'
import json, sys
mode, conns, pipe, run, t0, t1, tick, raw = sys.argv[1:]
r = json.loads(raw)
n = r["requests"] + 2  # and the swarm's two stats probes
print("echo", "skiffd-" + mode, f"{conns}:64:{pipe}", run, round(r["throughput_rps"]),
      round((int(t1) - int(t0)) / int(tick) * 1e6 / n, 2), r["errors"])
PY
)
}

echo_redis() { # plain|tls conns pipeline run
    local n=$REDIS_N_P1 tls=() t
    [ "$3" -gt 1 ] && n=$REDIS_N_P16
    [ "$2" -lt 10 ] && n=$((n / 5))
    [ "$1" = tls ] && tls=(--tls --cacert "$CERT")
    start_redis "$1"; sleep 0.3
    for t in ping_mbulk set; do
        local t0 t1 csv
        t0=$(cpu_ticks "$SERVER_PID")
        csv=$(taskset -c 1 "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$PORT" "${tls[@]}" -t "$t" -c "$2" \
            -n "$n" -P "$3" -d 64 --csv -q)
        t1=$(cpu_ticks "$SERVER_PID")
        row $(python3 - "$@" "$t" "$n" "$t0" "$t1" "$TICK" "$csv" <<'PY'
import csv, io, sys
mode, conns, pipe, run, test, n, t0, t1, tick, raw = sys.argv[1:]
rows = list(csv.reader(io.StringIO(raw)))
d = dict(zip(rows[0], rows[-1]))
name = {"ping_mbulk": "redis-ping", "set": "redis-set"}[test] + "-" + mode
print("echo", name, f"{conns}:64:{pipe}", run, round(float(d["rps"])),
      round((int(t1) - int(t0)) / int(tick) * 1e6 / int(n), 2), 0)
PY
)
    done
    stop
}

get_one() { # plain|tls run  (skiffd running, FILE in bench's home)
    local t0 t1 w0 w1
    t0=$(cpu_ticks "$SERVER_PID"); w0=$(date +%s.%N)
    # shellcheck disable=SC2046
    SKIFF_PASSWORD=bench-pass taskset -c 1 "$SKIFF" --addr $(skiff_addr "$1") --user bench \
        get big.bin - >/dev/null 2>"$WORK/get.err"
    w1=$(date +%s.%N); t1=$(cpu_ticks "$SERVER_PID")
    row $(python3 -c "
import sys
mode, run, t0, t1, tick, w0, w1, size = sys.argv[1:]
b = int(size) << 20
print('get', 'skiffd-' + mode, size + 'MiB', run, round(b / (float(w1) - float(w0)) / 1e6),
      round((int(t1) - int(t0)) / int(tick) / (b / 2**30), 3), 0)" "$1" "$2" "$t0" "$t1" "$TICK" "$w0" "$w1" "$SIZE_MIB")
}

s_time_one() { # skiffd|redis run
    local port t0 t1 out
    if [ "$1" = skiffd ]; then start_skiffd; port=$TLS_PORT; else start_redis tls; port=$PORT; fi
    sleep 0.3
    t0=$(cpu_ticks "$SERVER_PID")
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -time 5 2>&1 </dev/null) || true
    t1=$(cpu_ticks "$SERVER_PID")
    stop
    # "N connections in T real seconds, B bytes read per connection"
    row $(python3 - "$1" "$2" "$t0" "$t1" "$TICK" "$out" <<'PY'
import re, sys
name, run, t0, t1, tick, out = sys.argv[1:]
m = re.search(r"(\d+) connections in (\d+) real seconds", out)
n, secs = int(m.group(1)), int(m.group(2))
print("handshake", name + "-tls", "s_time", run, round(n / secs),
      round((int(t1) - int(t0)) / int(tick) * 1e6 / max(n, 1)), 0)
PY
)
}

swarm_handshakes() { # run
    start_skiffd; sleep 0.3
    local json
    # shellcheck disable=SC2046
    json=$(taskset -c 1 "$SKIFF" --addr $(skiff_addr tls) swarm --conns 200 --duration 2s \
        --mix echo:64 --json 2>/dev/null) || true
    stop
    row $(python3 - "$1" "$json" <<'PY'
import json, sys
run, raw = sys.argv[1:]
r = json.loads(raw)
hs = r["tls_handshake_us"]
print("handshake", "skiffd-tls", "swarm-200", run, r["tls_handshakes"], hs["p50"], hs["p99"])
PY
)
}

idle_rss() { # plain|tls run
    start_skiffd
    local port=$PORT
    [ "$1" = tls ] && port=$TLS_PORT
    row $(PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" taskset -c 1 \
        python3 - "$1" "$2" "$SERVER_PID" "$port" "$IDLE_CONNS" <<'PY'
import socket, ssl, sys, time
import skiffwire
mode, run, pid, port, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss()
socks = []
for i in range(conns):
    s = socket.socket()
    s.setsockopt(socket.SOL_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
    s.bind((f"127.0.0.{2 + i // 10000}", 0))
    s.connect(("127.0.0.1", port))
    if mode == "tls":
        s = ctx.wrap_socket(s)  # the handshake, done here
    socks.append(s)
time.sleep(1)
idle = rss()
frame = skiffwire.frame({"op": "echo"}, b"x" * 64)
for s in socks:
    s.sendall(frame)
for s in socks:
    reply, _ = skiffwire.recv(s)
    assert reply["op"] == "ok", reply
time.sleep(1)
after = rss()
print("rss", "skiffd-" + mode, f"{conns}conns", run, round((idle - before) * 1024 / conns),
      round((after - before) * 1024 / conns), 0)
PY
)
    stop
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The file for `get`, in bench's home.
printf 'bench-pass\n' | "$SKIFFD" user add bench --password-stdin --data-dir "$WORK/data" >/dev/null
if has get; then head -c "$((SIZE_MIB << 20))" /dev/urandom > "$WORK/data/homes/bench/big.bin"; fi

for run in $(seq "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then modes="plain tls"; else modes="tls plain"; fi
    if has echo; then
        for cell in 1:1 50:16; do
            IFS=: read -r conns pipe <<< "$cell"
            for mode in $modes; do echo_skiffd "$mode" "$conns" "$pipe" "$run"; echo_redis "$mode" "$conns" "$pipe" "$run"; done
        done
    fi
    if has get; then
        start_skiffd; sleep 0.3
        get_one plain 0 2>/dev/null; sed -i '$d' "$RESULTS"  # unmeasured: the server hashes the file
        for mode in $modes; do get_one "$mode" "$run"; done
        stop
    fi
    if has handshake; then
        for s in skiffd redis; do s_time_one "$s" "$run"; done
        swarm_handshakes "$run"
    fi
    if has rss; then
        for mode in $modes; do idle_rss "$mode" "$run"; done
    fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$RESULTS" <<'PY'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for kind, who, cell, run, a, b, c in rows:
    by.setdefault((kind, cell, who), {})[int(run)] = (float(a), float(b), float(c))
med = st.median
def col(k, i): return med(v[i] for v in by[k].values())
def ratio(k1, k2, i):
    common = sorted(set(by[k1]) & set(by[k2]))
    return med(by[k1][r][i] / by[k2][r][i] for r in common)

kinds = {k[0] for k in by}
if "echo" in kinds:
    print("| cell (conns:size:pipeline) | server | runs | req/s | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|")
for cell in sorted({k[1] for k in by if k[0] == "echo"}, key=lambda c: int(c.split(":")[0])):
    for who in ("skiffd-plain", "skiffd-tls", "redis-ping-plain", "redis-ping-tls", "redis-set-plain", "redis-set-tls"):
        k = ("echo", cell, who)
        if k in by:
            print(f"| {cell} | {who} | {len(by[k])} | {col(k, 0):,.0f} | {col(k, 1):.2f} | {sum(v[2] for v in by[k].values()):.0f} |")
    for a, b in (("skiffd-tls", "skiffd-plain"), ("redis-ping-tls", "redis-ping-plain"), ("redis-set-tls", "redis-set-plain"),
                 ("skiffd-tls", "redis-ping-tls"), ("skiffd-tls", "redis-set-tls")):
        ka, kb = ("echo", cell, a), ("echo", cell, b)
        if ka in by and kb in by:
            print(f"| {cell} | **{a} / {b}** | | **{ratio(ka, kb, 0):.2f}×** | **{ratio(ka, kb, 1):.2f}×** | |")
if "get" in kinds:
    print()
    print("| get | runs | MB/s | server CPU s/GiB |")
    print("|---|---|---|---|")
    for who in ("skiffd-plain", "skiffd-tls"):
        k = next(k for k in by if k[0] == "get" and k[2] == who)
        print(f"| {who} | {len(by[k])} | {col(k, 0):,.0f} | {col(k, 1):.3f} |")
    kp = next(k for k in by if k[0] == "get" and k[2] == "skiffd-plain")
    kt = next(k for k in by if k[0] == "get" and k[2] == "skiffd-tls")
    print(f"| **tls / plain** | | **{ratio(kt, kp, 0):.2f}×** | **{ratio(kt, kp, 1):.2f}×** |")
if "handshake" in kinds:
    print()
    print("| handshakes (openssl s_time -new, one at a time) | runs | handshakes/s | server CPU µs/handshake |")
    print("|---|---|---|---|")
    for who in ("skiffd-tls", "redis-tls"):
        k = ("handshake", "s_time", who)
        print(f"| {who} | {len(by[k])} | {col(k, 0):,.0f} | {col(k, 1):,.0f} |")
    ks, kr = ("handshake", "s_time", "skiffd-tls"), ("handshake", "s_time", "redis-tls")
    print(f"| **skiffd / redis** | | **{ratio(ks, kr, 0):.2f}×** | **{ratio(ks, kr, 1):.2f}×** |")
    k = ("handshake", "swarm-200", "skiffd-tls")
    print(f"\nskiff swarm --conns 200 over tls://: {col(k, 0):.0f} handshakes, p50 {col(k, 1):,.0f} µs, p99 {col(k, 2):,.0f} µs (medians of {len(by[k])} runs)\n")
if "rss" in kinds:
    print("| idle connections | runs | RSS per connection, idle | after one 64 B echo each |")
    print("|---|---|---|---|")
    for who in ("skiffd-plain", "skiffd-tls"):
        k = next(k for k in by if k[0] == "rss" and k[2] == who)
        print(f"| {who} ({k[1]}) | {len(by[k])} | {col(k, 0):,.0f} B | {col(k, 1):,.0f} B |")
    kp = next(k for k in by if k[0] == "rss" and k[2] == "skiffd-plain")
    kt = next(k for k in by if k[0] == "rss" and k[2] == "skiffd-tls")
    print(f"| **tls − plain** | | {col(kt, 0) - col(kp, 0):+,.0f} B | {col(kt, 1) - col(kp, 1):+,.0f} B |")
PY
echo "raw runs: $RESULTS" >&2
