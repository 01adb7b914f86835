#!/usr/bin/env bash
# User-space instructions per echo request of a server, counted by
# valgrind's callgrind: repeatable where timings on a shared machine are not.
#
#   scripts/bench-callgrind.sh NAME CONNS SECS -- SERVER COMMAND...
#   e.g. scripts/bench-callgrind.sh skiffd 1 3 -- target/release/skiffd serve --data-dir /tmp/cg-data --listen 127.0.0.1:0
#        scripts/bench-callgrind.sh tokio 1 3 -- benches/tokio-echo/target/release/tokio-echo 127.0.0.1:0
#
# The server starts under callgrind with instrumentation off; a 1 s swarm
# warms it up; instrumentation is switched on only around a SECS-long
# `skiff swarm --conns CONNS` (echo:64, or MIX=...); the server is then stopped and
# total Ir / requests printed. Kernel time (syscalls) is not counted.
# TLS=1 drives the server's TLS listener instead (start it with
# --tls-listen 127.0.0.1:0; the swarm pins its certificate in OUT).
# Profile: OUT/callgrind.out.NAME (OUT defaults to /tmp/skiff-callgrind);
# `callgrind_annotate --inclusive=yes` it (use an unstripped build,
# CARGO_PROFILE_RELEASE_STRIP=false, for function names).
set -u
. "$(dirname "$0")/lib.sh"
name=$1; conns=$2; secs=$3; shift 4
SKIFF=${SKIFF:-target/release/skiff}
OUT=${OUT:-/tmp/skiff-callgrind}
mkdir -p "$OUT"
rm -f "$OUT/callgrind.out.$name"
valgrind --tool=callgrind --instr-atstart=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$OUT/callgrind.out.$name" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
pid=$!
# stop our own server (by PID) however the script ends
trap 'kill "$pid" 2>/dev/null || true' EXIT
if [ -n "${TLS:-}" ]; then
    PORT=$(tls_port "$OUT/$name.out" 20)
    rm -f "$OUT/known_hosts.$name"
    ADDR="tls://127.0.0.1:$PORT --known-hosts $OUT/known_hosts.$name"
else
    PORT=$(framed_port "$OUT/$name.out" 20)  # valgrind starts slowly
    ADDR="127.0.0.1:$PORT"
fi
# shellcheck disable=SC2086 # ADDR may carry --known-hosts
"$SKIFF" --addr $ADDR swarm --conns "$conns" --duration 1s --mix "${MIX:-echo:64}" --json >/dev/null
callgrind_control -i on "$pid" >/dev/null 2>&1
# shellcheck disable=SC2086
req=$("$SKIFF" --addr $ADDR swarm --conns "$conns" --duration "${secs}s" --mix "${MIX:-echo:64}" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])')
callgrind_control -i off "$pid" >/dev/null 2>&1
kill "$pid"
wait "$pid"
trap - EXIT
ir=$(awk '/^totals:/ {print $2}' "$OUT/callgrind.out.$name")
# +2: the swarm's before/after `stats` probes
echo "$name conns=$conns requests=$req Ir=$ir Ir/request=$((ir / (req + 2)))"
