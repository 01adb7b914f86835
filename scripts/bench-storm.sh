#!/usr/bin/env bash
# Does an accept storm starve established clients? (issue 5)
#
#   scripts/bench-storm.sh [RUNS] [STORM_CONNS] [STORM_RATE]
#                                  (default: 3 runs, 15000 connections, 100/s)
#
# Every run measures two cases back to back, the order alternating, each on
# a fresh skiffd pinned to CPU 0 (127.0.0.1:0):
#   quiet  50 established connections echo 64 B in a closed loop for 8 s
#          (`skiff swarm`, pinned to CPU 1);
#   storm  the same, and 2 s in a second swarm (also on CPU 1) opens
#          STORM_CONNS connections at once (--ramp 0s) and keeps them for
#          4 s, sending only STORM_RATE echoes per second in all (open
#          loop): the storm is the connects, not their requests. With
#          STORM_RATE 0 every storm connection echoes in a closed loop.
# Both swarms share CPU 1 in the storm case, so some of the established
# swarm's extra latency is its own client being crowded; a server that
# starved established clients would show up as a max latency of seconds
# and a collapse of their req/s, not as a few milliseconds.
# Prints one line per case and run on stderr and a median table on stdout.
# Binaries: SKIFFD, SKIFF (default target/release). Servers are stopped by
# PID however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=${1:-3}
STORM=${2:-15000}
STORM_RATE=${3:-100}
SKIFFD=${SKIFFD:-target/release/skiffd}
SKIFF=${SKIFF:-target/release/skiff}
ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/skiff-bench-storm.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

one() { # case run
    : > "$WORK/out"
    taskset -c 0 "$SKIFFD" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/out" 2>"$WORK/err" &
    SERVER_PID=$!
    local port
    port=$(framed_port "$WORK/out")
    taskset -c 1 "$SKIFF" swarm --addr "127.0.0.1:$port" --conns 50 --duration 8s --json >"$WORK/est.json" &
    local est=$!
    if [ "$1" = storm ]; then
        sleep 2
        local rate=()
        [ "$STORM_RATE" = 0 ] || rate=(--rate "$STORM_RATE")
        taskset -c 1 "$SKIFF" swarm --addr "127.0.0.1:$port" --conns "$STORM" --ramp 0s --duration 4s \
            "${rate[@]}" --json >"$WORK/storm.json" || true
    fi
    wait "$est"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
    python3 - "$1" "$2" "$WORK/est.json" "$WORK/storm.json" <<'PY'
import json, sys
case, run, est, storm = sys.argv[1:]
e = json.load(open(est))
l = e["latency_us"]
extra = ""
if case == "storm":
    s = json.load(open(storm))
    extra = f"\tstorm_up={s['conns_max_up']}\tstorm_errors={s['errors']}\tstorm_connect_p99_us={s['connect_us']['p99']}"
print(f"{case}\t{run}\t{e['throughput_rps']:.0f}\t{l['p50']}\t{l['p99']}\t{l['p99_9']}\t{l['max']}\t{e['errors']}{extra}", file=sys.stderr)
with open(sys.argv[3] + ".row", "w") as f:
    f.write(f"{case}\t{e['throughput_rps']:.0f}\t{l['p50']}\t{l['p99']}\t{l['p99_9']}\t{l['max']}\t{e['errors']}\n")
PY
    cat "$WORK/est.json.row" >> "$WORK/rows"
}

: > "$WORK/rows"
echo -e "case\trun\treq/s\tp50_us\tp99_us\tp99.9_us\tmax_us\terrors" >&2
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) -eq 1 ]; then one quiet "$run"; one storm "$run"; else one storm "$run"; one quiet "$run"; fi
done
python3 - "$WORK/rows" "$STORM" "$([ "$STORM_RATE" = 0 ] && echo closed loop || echo "$STORM_RATE req/s")" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
print(f"| established 50 conns | runs | req/s | p50 µs | p99 µs | p99.9 µs | max µs | errors |")
print("|---|---|---|---|---|---|---|---|")
for case in ("quiet", "storm"):
    rs = [r for r in rows if r[0] == case]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    label = case if case == "quiet" else f"storm of {int(sys.argv[2]):,} connects ({sys.argv[3]})"
    print(f"| {label} | {len(rs)} | {med(1):,.0f} | {med(2):,.0f} | {med(3):,.0f} | {med(4):,.0f} | {med(5):,.0f} | {sum(int(r[6]) for r in rs)} |")
PY
