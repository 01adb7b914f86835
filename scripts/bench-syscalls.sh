#!/usr/bin/env bash
# Syscalls per echo request, skiffd vs the tokio current-thread echo,
# counted by `strace -c` attached to the server during a swarm run. strace
# slows every server alike, so only the per-request counts are meaningful,
# not the times.
#
#   scripts/bench-syscalls.sh [SECS] [CONNS...]     (default: 3 s, 50 and 1 conns)
#
# Binaries: SKIFFD, SKIFF, TOKIO_ECHO (defaults as in bench-echo.sh).
# MIX (default echo:64) is passed to `skiff swarm --mix`, e.g. MIX=echo:16K.
# PIPELINE (default 1) is passed to `skiff swarm --pipeline`.
# Servers are pinned to CPU 0, the swarm to CPU 1; each server is started
# fresh on 127.0.0.1:0 and stopped by its PID (also if the script dies).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SECS=${1:-3}
if [ $# -ge 1 ]; then shift; fi
if [ $# -gt 0 ]; then CONNS=("$@"); else CONNS=(50 1); fi
SKIFFD=${SKIFFD:-target/release/skiffd}
SKIFF=${SKIFF:-target/release/skiff}
TOKIO_ECHO=${TOKIO_ECHO:-benches/tokio-echo/target/release/tokio-echo}
MIX=${MIX:-echo:64}
PIPELINE=${PIPELINE:-1}
WORK=$(mktemp -d /tmp/skiff-bench-syscalls.XXXXXX)
pid= spid=
cleanup() {
    if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; fi
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

for conns in "${CONNS[@]}"; do
    for s in skiffd tokio; do
        out=$WORK/$s.out
        : > "$out"
        if [ "$s" = skiffd ]; then
            taskset -c 0 "$SKIFFD" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$out" 2>/dev/null &
        else
            taskset -c 0 "$TOKIO_ECHO" 127.0.0.1:0 >"$out" 2>/dev/null &
        fi
        pid=$!
        port=$(framed_port "$out")
        strace -c -f -p "$pid" -o "$WORK/$s-$conns.strace" 2>/dev/null &
        spid=$!
        sleep 0.5
        req=$(taskset -c 1 "$SKIFF" --addr "127.0.0.1:$port" swarm --conns "$conns" --mix "$MIX" --pipeline "$PIPELINE" --duration "${SECS}s" --json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])')
        kill -INT "$spid"; wait "$spid" || true; spid=
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
        echo "== $s conns=$conns requests=$req (calls/request, errors/request)"
        # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall
        awk -v r="$req" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {
            err = (NF == 6) ? $5 : 0
            printf "  %-12s %.3f  %.3f\n", $NF, $4 / r, err / r }' "$WORK/$s-$conns.strace" |
            sort -k2 -rn | head -6
    done
done
echo "raw strace tables: $WORK" >&2
