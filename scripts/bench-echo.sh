#!/usr/bin/env bash
# Echo req/s, latency and server CPU per request: skiffd vs the tokio
# current-thread echo (benches/tokio-echo), interleaved A/B/A/B.
#
#   scripts/bench-echo.sh [RUNS] [DURATION] [CONNS...]
#   e.g. scripts/bench-echo.sh 5 10s 1 50
#
# Servers run on CPU 0 (taskset -c 0), `skiff swarm` on CPU 1. Each run
# starts a fresh server on 127.0.0.1:0. Server CPU is utime+stime from
# /proc/PID/stat sampled right before and after the swarm (the same for
# both servers; skiffd's own `stats` figure is printed next to it).
# Binaries: SKIFFD, SKIFF, TOKIO_ECHO (defaults: target/release/...,
# benches/tokio-echo/target/release/tokio-echo). SERVERS (default
# "skiffd tokio") picks the contenders: "skiffd" runs $SKIFFD, "skiffd-X"
# runs $SKIFFD_X (e.g. SKIFFD_S=/tmp/opt-s/release/skiffd for an
# opt-level=s build), "tokio" runs $TOKIO_ECHO. The order rotates every
# run. Output: one line per run on stderr, a median table on stdout, with
# per-run-pair ratios of the first server to each other one.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=${1:-3}
DUR=${2:-10s}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
if [ $# -gt 0 ]; then CONNS=("$@"); else CONNS=(1 50); fi
SKIFFD=${SKIFFD:-target/release/skiffd}
SKIFF=${SKIFF:-target/release/skiff}
TOKIO_ECHO=${TOKIO_ECHO:-benches/tokio-echo/target/release/tokio-echo}
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/skiff-bench-echo.XXXXXX)
RESULTS=$WORK/results.tsv
: > "$RESULTS"
SERVER_PID=

cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # name -> SERVER_PID, PORT
    local out=$WORK/$1.out
    : > "$out"
    case $1 in
        skiffd*)
            local var=SKIFFD
            [ "$1" != skiffd ] && var=SKIFFD_$(echo "${1#skiffd-}" | tr 'a-z-' 'A-Z_')
            taskset -c 0 "${!var}" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$out" 2>"$WORK/$1.err" & ;;
        tokio) taskset -c 0 "$TOKIO_ECHO" 127.0.0.1:0 >"$out" 2>"$WORK/$1.err" & ;;
    esac
    SERVER_PID=$!
    PORT=$(framed_port "$out")
}

read -r -a LIST <<< "${SERVERS:-skiffd tokio}"
for run in $(seq "$RUNS"); do
    for conns in "${CONNS[@]}"; do
        # rotate which server goes first, so drift hits all alike
        k=$(( (run - 1) % ${#LIST[@]} ))
        order="${LIST[*]:k} ${LIST[*]:0:k}"
        for server in $order; do
            start "$server"
            sleep 0.3
            t0=$(cpu_ticks "$SERVER_PID")
            json=$(taskset -c 1 "$SKIFF" --addr "127.0.0.1:$PORT" swarm --conns "$conns" --duration "$DUR" --json) || true
            t1=$(cpu_ticks "$SERVER_PID")
            kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
            python3 - "$server" "$conns" "$run" "$t0" "$t1" "$TICK" "$json" >>"$RESULTS" <<'PY'
import json, sys
server, conns, run, t0, t1, tick, raw = sys.argv[1:]
r = json.loads(raw)
n = r["requests"]
cpu_us = (int(t1) - int(t0)) / int(tick) * 1e6 / max(n, 1)
own = r.get("server") or {}
own_us = own.get("cpu_us_per_request") if server.startswith("skiffd") else None
lat = r["latency_us"]
print("\t".join(str(x) for x in [server, conns, run, round(r["throughput_rps"]), lat["p50"], lat["p99"],
      round(cpu_us, 2), "" if own_us is None else round(own_us, 2), r["errors"],
      round(r["swarm_cpu_percent"]), n]))
PY
            tail -n1 "$RESULTS" >&2
        done
    done
done

python3 - "$RESULTS" "${LIST[@]}" <<'PY'
import statistics as st, sys
servers = sys.argv[2:]
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(xs): return st.median(xs)
print("| conns | server | runs | req/s | p50 µs | p99 µs | server CPU µs/req (/proc) | skiffd stats µs/req | errors | swarm CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|")
by = {}
for r in rows:
    by.setdefault((int(r[1]), r[0]), []).append(r)
for conns in sorted({k[0] for k in by}):
    meds = {}
    for server in servers:
        rs = by.get((conns, server), [])
        if not rs: continue
        f = lambda i: med([float(x[i]) for x in rs])
        own = [float(x[7]) for x in rs if x[7]]
        meds[server] = (f(3), f(6))
        print(f"| {conns} | {server} | {len(rs)} | {f(3):.0f} | {f(4):.0f} | {f(5):.0f} | {f(6):.2f} | "
              f"{med(own) if own else float('nan'):.2f} | {sum(int(x[8]) for x in rs)} | {f(9):.0f} |")
    a = servers[0]
    for b in servers[1:]:
        if (conns, a) not in by or (conns, b) not in by: continue
        # ratios per run pair (same run number), then the median of those
        pairs = list(zip(sorted(by[(conns, a)], key=lambda x: int(x[2])), sorted(by[(conns, b)], key=lambda x: int(x[2]))))
        rr = med([float(x[3]) / float(y[3]) for x, y in pairs])
        cr = med([float(x[6]) / float(y[6]) for x, y in pairs])
        lr = med([float(x[5]) / float(y[5]) for x, y in pairs])
        print(f"| {conns} | **{a}/{b}** | {len(pairs)} pairs | **{rr:.2f}×** | | {lr:.2f}× | **{cr:.2f}×** | | | |")
PY
echo "raw runs: $RESULTS" >&2
