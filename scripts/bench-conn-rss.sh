#!/usr/bin/env bash
# Server RSS per connection, idle and after one request each (issue 5).
#
#   scripts/bench-conn-rss.sh [CONNS...]        (default: 10000)
#
# For each CONNS: a fresh skiffd (127.0.0.1:0, pinned to CPU 0), and one
# Python process (CPU 1) that opens CONNS connections, from source
# addresses spread over 127.0.0.2.. (10,000 each) so neither ephemeral
# ports nor skiffd's per-address limit run out.
# Server VmRSS and RssAnon (/proc/PID/status) are read before, after all
# connections are up (1 s settle), and after every connection has sent one
# 64 B echo and read its reply (1 s settle). Prints a markdown row per
# CONNS. The hard RLIMIT_NOFILE caps CONNS (each side needs a descriptor
# per connection); the server says how many it will serve at start.
# Binary: SKIFFD (default target/release/skiffd). Stopped by PID however
# the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SKIFFD=${SKIFFD:-target/release/skiffd}
ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/skiff-bench-conn-rss.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
[ $# -gt 0 ] || set -- 10000

echo "| connections | RSS before | idle | after one request each | per connection idle | per connection after a request | RssAnon per connection after |"
echo "|---|---|---|---|---|---|---|"
for conns in "$@"; do
    : > "$WORK/out"
    taskset -c 0 "$SKIFFD" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/out" 2>"$WORK/err" &
    SERVER_PID=$!
    port=$(framed_port "$WORK/out")
    PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" \
        taskset -c 1 python3 - "$SERVER_PID" "$port" "$conns" <<'PY'
import socket, sys, time
import skiffwire

pid, port, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def rss():
    f = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon"):
            f[k] = int(v.split()[0])
    return f

before = rss()
socks = []
for i in range(conns):
    s = socket.socket()
    # 10,000 per source address: under skiffd's per-address limit. The
    # port is picked at connect (IP_BIND_ADDRESS_NO_PORT), else bind(0)
    # alone runs out of ports at about 14,000.
    s.setsockopt(socket.SOL_IP, 24, 1)
    s.bind((f"127.0.0.{2 + i // 10000}", 0))
    s.connect(("127.0.0.1", port))
    socks.append(s)
time.sleep(1)
idle = rss()
frame = skiffwire.frame({"op": "echo"}, b"x" * 64)
for s in socks:
    s.sendall(frame)
for s in socks:
    try:
        reply, _ = skiffwire.recv(s)
    except ConnectionError as e:
        sys.exit(f"connection closed: {e}")
    if reply["op"] != "ok":
        sys.exit(f"connection refused or failed: {reply}")
time.sleep(1)
after = rss()
per_idle = (idle["VmRSS"] - before["VmRSS"]) * 1024 / conns
per_after = (after["VmRSS"] - before["VmRSS"]) * 1024 / conns
anon_after = (after["RssAnon"] - before["RssAnon"]) * 1024 / conns
print(f"| {conns:,} | {before['VmRSS']:,} kB | {idle['VmRSS']:,} kB | {after['VmRSS']:,} kB "
      f"| {per_idle:,.0f} B | {per_after:,.0f} B | {anon_after:,.0f} B |")
PY
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done
