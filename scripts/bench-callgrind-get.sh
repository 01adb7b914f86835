#!/usr/bin/env bash
# User-space instructions of one cold `get` (the server hashes the file with
# MD5 in 1 MiB steps, then sends it), counted by valgrind's callgrind;
# the login before it is not counted.
#
#   scripts/bench-callgrind-get.sh NAME SKIFFD [SIZE_MIB]    (default 64 MiB)
#
# A fresh data dir under OUT (default /tmp/skiff-callgrind-get); the file is
# random bytes copied into the demo user's home by hand, so no MD5 is
# cached. Instrumentation is on only from after the login to the end of
# the body. Prints NAME, the size and the total Ir. The server is stopped by
# its PID however the script ends.
set -eu
. "$(dirname "$0")/lib.sh"
name=$1; bin=$2; mib=${3:-64}
OUT=${OUT:-/tmp/skiff-callgrind-get}
dir=$OUT/$name
rm -rf "$dir"; mkdir -p "$dir"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
    "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
port=$(framed_port "$dir/out" 20)  # valgrind starts slowly
password=$(awk '/created user demo/ {print $NF}' "$dir/out")
head -c $((mib << 20)) /dev/urandom >"$dir/data/homes/demo/big.bin"
PID=$pid PORT=$port PASSWORD=$password PYTHONPATH="$(dirname "$0")" python3 - <<'PY'
import os, subprocess, skiffwire
s = skiffwire.connect(int(os.environ["PORT"]), timeout=600)
skiffwire.login(s, "demo", os.environ["PASSWORD"])
subprocess.run(["callgrind_control", "-i", "on", os.environ["PID"]], check=True, capture_output=True)
skiffwire.send(s, {"op": "get", "id": 1, "path": "big.bin"})
header, size = skiffwire.recv_header(s)
skiffwire.skip_body(s, size)
subprocess.run(["callgrind_control", "-i", "off", os.environ["PID"]], check=True, capture_output=True)
assert header.get("op") == "ok", header
PY
kill "$pid"
wait "$pid" || true
trap - EXIT
echo "$name get ${mib} MiB Ir=$(awk '/^totals:/ {print $2}' "$dir/callgrind.out")"
