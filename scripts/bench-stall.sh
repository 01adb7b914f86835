#!/usr/bin/env bash
# How much does one hostile client stall everyone else on skiffd's single
# loop? (hostile-input audit, rows 6-13)
#
#   scripts/bench-stall.sh [LABEL=SKIFFD ...]
#       e.g. scripts/bench-stall.sh OLD=/work/skiffd-506cc8f NEW=target/release/skiffd
#       (default: main=target/release/skiffd; a bare path is labelled by its file name)
#
# Environment:
#   ROWS="idle 6a 6b 7a 7b 8w 8c 9a 9b 10 11 12 13 14"   rows to run (default: all)
#   RUNS=1       rounds over all rows; the table gives medians and, for max,
#                the range over the runs
#   COLD=0       COLD=1 runs row 8c: `sync` and `echo 3 > /proc/sys/vm/drop_caches`
#                just before its server starts. That drops the page cache of
#                the whole (shared) machine, so it is off by default.
#   READ_BPS=    run each server in a cgroup (v1 blkio, root) whose reads from
#                WORK's disk are throttled to this many bytes/s: a slow disk
#                (row 14 with READ_BPS=100000000: 100 MB/s)
#   WORK=        parent of the temp dir (default /tmp); needs about 4.5 GiB
#   FIXTURES=    keep the fixtures (200,000 files, 200,000 symlinks, 10,000
#                files, 64 MiB, 1 GiB and four 256 MiB random files, about 2.1 GiB; a few
#                minutes to build on a busy disk) in this directory for the
#                next invocation; it must be on the same filesystem as WORK
#                (they are planted by rename) and is not removed. Default:
#                inside the temp dir, built afresh and removed at the end.
#
# For each row and each binary (the binaries' order rotates from row to
# row), a fresh skiffd: `skiffd serve --data-dir DIR --listen 127.0.0.1:0`
# pinned to CPU 0, its own data dir, its users added with the binary's own
# `skiffd user --data-dir DIR add NAME --password-stdin` (no quota, correct
# passwords only, so the failed-login throttle never engages). Big
# directories and files are built once per invocation and planted into the
# home by rename before the server starts (taken back after it stops). Then
# a probe connection (a separate Python process, CPU 1 like the attacker)
# sends one 16 B `echo` every 5 ms and records each round trip; the attack
# runs; the row reports the probe's round trips that overlap the attack:
# count, p50, p99, max (ms), and how long the attack took (s). Attacks
# (scripts/stallprobe.py, standard library only):
#   idle  no attack, 1 s: the probe's floor on this machine
#   6a/b  log in, then 3,000 (500) `login` requests, correct password,
#         pipelined in one sendall; attack = until the last reply
#   7a    200 pipelined `ls` of a directory of exactly 10,000 files
#   7b    one `ls` of a directory of 200,000 (dangling) symlinks; the
#         user's first login (it walks the home) is before the attack
#   8w/c  the first login of a user whose home holds 200,000 empty files
#         in 100 directories (the usage walk only stats them), warm (the
#         driver stats them all first) and, with COLD=1, cold
#   9a/b  50 (200) logged-in connections each `get` one 64 MiB file the
#         server has not hashed yet (fresh start; the file is in the page
#         cache); attack = until every reply header (it carries the MD5)
#         has arrived; each connection hangs up at its header
#   10    `rm` of a 1 GiB file written and fsynced just before (in the
#         page cache, no dirty pages; fincore's figure is in the notes)
#   11    3,000 logged-in connections each send the header of a 64 KiB
#         `say` and no body, hold 2 s, close; VmRSS sampled every 20 ms
#         (peak), VmHWM, VmRSS 5 s after the close, `evicted` from `stats`.
#         Their 3,000 logins are before the attack
#   12    1,000 logged-in sessions that never read; another session sends
#         30 × 64 KiB `say *` in one sendall; attack = until its 30th ok;
#         peak VmRSS, `evicted`, connections left
#   13    one 1 GiB `put` (put -> ok offset 0; data frame, body by
#         sendfile); attack = put request to final ok; notes give the probe
#         max between the last byte sent and the ok (verify, fsync, rename)
#   14    4 logged-in connections each `get` a different 256 MiB file
#         (hashed by a first get), whose pages were dropped from the cache
#         just before with posix_fadvise(DONTNEED) (that file only); attack
#         = until every body has been read; notes give `warmed_windows`
# Per-row lines go to stderr as they finish; the markdown table to stdout.
# Every server is stopped by its PID, and the temp dir (1 GiB files) is
# removed, however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- "main=$PWD/target/release/skiffd"
ulimit -n "$(ulimit -Hn)"   # row 11 holds 3,000 connections on each side
WORK=$(mktemp -d "${WORK:-/tmp}/skiff-bench-stall.XXXXXX")
export WORK
DRIVER=
cleanup() {
    if [ -n "$DRIVER" ]; then kill "$DRIVER" 2>/dev/null || true; wait "$DRIVER" 2>/dev/null || true; fi
    if [ -f "$WORK/pids" ]; then
        # only a server of this run still alive under that PID (not a reused PID)
        while read -r pid; do
            if { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$WORK/data"; then
                kill "$pid" 2>/dev/null || true
            fi
        done < "$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
taskset -c 1 python3 scripts/stallprobe.py run "$@" &
DRIVER=$!
wait "$DRIVER"
DRIVER=
