#!/usr/bin/env bash
# Issue 5's grid: echo req/s, p99 and server CPU per request for skiffd,
# the tokio current-thread echo (benches/tokio-echo) and redis-server,
# interleaved, one cell at a time.
#
#   scripts/bench-grid.sh RUNS DURATION CELL...
#   CELL = CONNS:SIZE:PIPELINE, e.g. 1:64:1 50:64:16 10000:64:1 50:16K:16
#   e.g. scripts/bench-grid.sh 3 5s 1:64:1 1:64:16 50:64:1 50:64:16 10000:64:1
#
# For every run and every cell the contenders run back to back, the order
# rotating every run, each on a fresh server pinned to CPU 0 with its load
# generator on CPU 1. skiffd and tokio get `skiff swarm --conns CONNS
# --pipeline PIPELINE --mix echo:SIZE --duration DURATION`; cells with
# 1,000 connections or more use `--ramp $RAMP_BIG --duration $DUR_BIG`
# (defaults 3s and 10s). redis (cells with SIZE 64 and at most REDIS_MAX_CONNS
# connections, default 50) gets `redis-benchmark -c CONNS -P PIPELINE -d 64`
# twice per run: `-t ping_mbulk` (row redis-ping) and `-t set` (redis-set),
# with -n sized so a run takes about 5 s (REDIS_N_P1, REDIS_N_P16 at 50
# connections; a sixth of that below 10 connections).
# Server CPU is utime+stime from /proc/PID/stat right before and after the
# load (user time alone in its own column: most of the rest is the
# kernel's TCP work, which every server needs), the same for all three,
# divided by the requests
# answered; peak RSS is the server's VmHWM at the end; for
# skiffd it includes accepting the connections (and the 3 s ramp at 10k).
# Binaries: SKIFFD, SKIFF, TOKIO_ECHO, REDIS_SERVER, REDIS_BENCHMARK, and
# SKIFFD_BASE: an earlier skiffd build, the contender "skiffd-base", run
# exactly like skiffd, to compare two versions in one run (e.g.
# SERVERS="skiffd skiffd-base" SKIFFD_BASE=/path/to/old/skiffd).
# SERVERS picks contenders (default "skiffd tokio redis"). Output: one
# line per run on stderr, the median table on stdout with per-run-pair
# ratios skiffd/tokio. Every server is stopped by PID however this ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=$1; DUR=$2; shift 2
CELLS=("$@")
SKIFFD=${SKIFFD:-target/release/skiffd}
SKIFF=${SKIFF:-target/release/skiff}
SKIFFD_BASE=${SKIFFD_BASE:-}
TOKIO_ECHO=${TOKIO_ECHO:-benches/tokio-echo/target/release/tokio-echo}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
RAMP_BIG=${RAMP_BIG:-3s}
DUR_BIG=${DUR_BIG:-10s}
REDIS_MAX_CONNS=${REDIS_MAX_CONNS:-50}
REDIS_N_P1=${REDIS_N_P1:-300000}
REDIS_N_P16=${REDIS_N_P16:-3000000}
TICK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/skiff-bench-grid.XXXXXX)
RESULTS=$WORK/results.tsv
: > "$RESULTS"
SERVER_PID=

cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# utime and stime, in clock ticks
cpu_ticks() { awk '{print $14 ":" $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name -> SERVER_PID, PORT
    local out=$WORK/$1.out
    : > "$out"
    case $1 in
        skiffd) taskset -c 0 "$SKIFFD" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$out" 2>"$WORK/$1.err" & ;;
        skiffd-base) taskset -c 0 "$SKIFFD_BASE" serve --data-dir "$WORK/data-base" --listen 127.0.0.1:0 >"$out" 2>"$WORK/$1.err" & ;;
        tokio) taskset -c 0 "$TOKIO_ECHO" 127.0.0.1:0 >"$out" 2>"$WORK/$1.err" & ;;
        redis)
            PORT=$(free_port)
            taskset -c 0 "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
                --maxclients 20000 --dir "$WORK" >"$out" 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 100); do
                grep -q 'Ready to accept' "$out" && break
                sleep 0.05
            done
            return ;;
    esac
    SERVER_PID=$!
    PORT=$(framed_port "$out")
}

stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

# row: server conns size pipeline run rps p50 p99 cpu_us errors loadcpu% requests
#      user_us sys_us peak_rss_kb
row() { printf '%s\t' "$@" | sed 's/\t$//' >>"$RESULTS"; echo >>"$RESULTS"; tail -n1 "$RESULTS" >&2; }

swarm_one() { # server conns size pipeline run
    local extra=(--duration "$DUR")
    [ "$2" -ge 1000 ] && extra=(--ramp "$RAMP_BIG" --duration "$DUR_BIG")
    local t0 t1 json
    t0=$(cpu_ticks "$SERVER_PID")
    json=$(taskset -c 1 "$SKIFF" --addr "127.0.0.1:$PORT" swarm --conns "$2" --pipeline "$4" \
        --mix "echo:$3" "${extra[@]}" --json) || true
    t1=$(cpu_ticks "$SERVER_PID")
    row $(python3 - "$@" "$t0" "$t1" "$TICK" "$(peak_rss_kb "$SERVER_PID")" "$json" <<'PY'
import json, sys
server, conns, size, pipe, run, t0, t1, tick, hwm, raw = sys.argv[1:]
r = json.loads(raw)
n = r["requests"]
(u0, s0), (u1, s1) = (map(int, t.split(":")) for t in (t0, t1))
per = lambda ticks: ticks / int(tick) * 1e6 / max(n, 1)
lat = r["latency_us"]
print(server, conns, size, pipe, run, round(r["throughput_rps"]), lat["p50"], lat["p99"],
      round(per(u1 + s1 - u0 - s0), 2), r["errors"], round(r["swarm_cpu_percent"]), n,
      round(per(u1 - u0), 2), round(per(s1 - s0), 2), hwm)
PY
)
}

redis_one() { # test conns size pipeline run
    local n=$REDIS_N_P1
    [ "$4" -gt 1 ] && n=$REDIS_N_P16
    [ "$2" -lt 10 ] && n=$((n / 6))
    local t0 t1 csv
    t0=$(cpu_ticks "$SERVER_PID")
    csv=$(taskset -c 1 "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$PORT" -t "$1" -c "$2" -n "$n" -P "$4" -d 64 --csv -q)
    t1=$(cpu_ticks "$SERVER_PID")
    row $(python3 - "$@" "$t0" "$t1" "$TICK" "$n" "$(peak_rss_kb "$SERVER_PID")" "$csv" <<'PY'
import csv, io, sys
test, conns, size, pipe, run, t0, t1, tick, n, hwm, raw = sys.argv[1:]
rows = list(csv.reader(io.StringIO(raw)))
head, vals = rows[0], rows[-1]
d = dict(zip(head, vals))
n = int(n)
(u0, s0), (u1, s1) = (map(int, t.split(":")) for t in (t0, t1))
per = lambda ticks: ticks / int(tick) * 1e6 / n
name = {"ping_mbulk": "redis-ping", "set": "redis-set"}[test]
print(name, conns, size, pipe, run, round(float(d["rps"])), round(float(d["p50_latency_ms"]) * 1000),
      round(float(d["p99_latency_ms"]) * 1000), round(per(u1 + s1 - u0 - s0), 2), 0, "-", n,
      round(per(u1 - u0), 2), round(per(s1 - s0), 2), hwm)
PY
)
}

read -r -a LIST <<< "${SERVERS:-skiffd tokio redis}"
for run in $(seq "$RUNS"); do
    for cell in "${CELLS[@]}"; do
        IFS=: read -r conns size pipe <<< "$cell"
        k=$(( (run - 1) % ${#LIST[@]} ))
        order="${LIST[*]:k} ${LIST[*]:0:k}"
        for server in $order; do
            if [ "$server" = redis ]; then
                { [ "$size" = 64 ] && [ "$conns" -le "$REDIS_MAX_CONNS" ]; } || continue
                start redis; sleep 0.3
                redis_one ping_mbulk "$conns" "$size" "$pipe" "$run"
                redis_one set "$conns" "$size" "$pipe" "$run"
                stop
            else
                start "$server"; sleep 0.3
                swarm_one "$server" "$conns" "$size" "$pipe" "$run"
                stop
            fi
            sleep 0.5
        done
    done
done

python3 - "$RESULTS" <<'PY'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = st.median
by = {}
for r in rows:
    by.setdefault((int(r[1]), r[2], int(r[3]), r[0]), []).append(r)
order = {"skiffd": 0, "skiffd-base": 1, "tokio": 2, "redis-ping": 3, "redis-set": 4}
print("| conns | body | pipeline | server | runs | req/s | p50 µs | p99 µs | server CPU µs/req | of it user µs/req | errors | load CPU % | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
cells = sorted({k[:3] for k in by}, key=lambda c: (c[1] != "64", c[0], c[2]))
for c in cells:
    for s in sorted({k[3] for k in by if k[:3] == c}, key=lambda s: order.get(s, 9)):
        rs = by[c + (s,)]
        f = lambda i: med([float(x[i]) for x in rs])
        load = [float(x[10]) for x in rs if x[10] != "-"]
        print(f"| {c[0]:,} | {c[1]} | {c[2]} | {s} | {len(rs)} | {f(5):,.0f} | {f(6):,.0f} | {f(7):,.0f} | "
              f"{f(8):.2f} | {f(12):.2f} | {sum(int(x[9]) for x in rs)} | {('%.0f' % med(load)) if load else '–'} | "
              f"{f(14) / 1024:.1f} |")
    for other in ("tokio", "skiffd-base"):
      a, b = by.get(c + ("skiffd",)), by.get(c + (other,))
      if a and b:
        pairs = list(zip(sorted(a, key=lambda x: int(x[4])), sorted(b, key=lambda x: int(x[4]))))
        rr = med([float(x[5]) / float(y[5]) for x, y in pairs])
        lr = med([float(x[7]) / float(y[7]) for x, y in pairs])
        cr = med([float(x[8]) / float(y[8]) for x, y in pairs])
        lo = min(float(x[8]) / float(y[8]) for x, y in pairs)
        hi = max(float(x[8]) / float(y[8]) for x, y in pairs)
        ur = med([float(x[12]) / max(float(y[12]), 1e-9) for x, y in pairs])
        print(f"| {c[0]:,} | {c[1]} | {c[2]} | **skiffd/{other}** | {len(pairs)} pairs | **{rr:.2f}×** | | {lr:.2f}× | "
              f"**{cr:.2f}×** ({lo:.2f}–{hi:.2f}) | {ur:.2f}× | | | |")
PY
echo "raw runs: $RESULTS" >&2
