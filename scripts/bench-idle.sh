#!/usr/bin/env bash
# Idle memory and binary size of servers, median of RUNS fresh starts.
#
#   scripts/bench-idle.sh RUNS "LABEL :: COMMAND" ["LABEL :: COMMAND" ...]
#   e.g. scripts/bench-idle.sh 5 \
#          "skiffd :: target/release/skiffd serve --data-dir /tmp/sk-idle --listen 127.0.0.1:0"
#
# Each COMMAND is started (on loopback only, please), left idle for 1 s,
# then VmRSS/RssAnon/RssFile (/proc/PID/status) and Rss/Pss
# (/proc/PID/smaps_rollup) are read, and it is stopped by its PID. The
# size column is the file size of the command's first word. Prints a
# markdown table of medians (KiB), and on stderr the largest resident
# mappings of the last run of each command.
set -euo pipefail
RUNS=$1
shift
echo "| server | runs | binary size | VmRSS | RssAnon | RssFile | Pss | Pss_Anon | Pss_File |"
echo "|---|---|---|---|---|---|---|---|---|"
for spec in "$@"; do
    label=${spec%% :: *}
    cmd=${spec#* :: }
    bin=$(bash -c "command -v ${cmd%% *}")
    size=$(stat -L -c %s "$bin")
    rows=()
    for _ in $(seq "$RUNS"); do
        bash -c "exec $cmd" >/dev/null 2>&1 &
        pid=$!
        sleep 1
        st=/proc/$pid/status
        sr=/proc/$pid/smaps_rollup
        kb() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
        rows+=("$(kb VmRSS "$st") $(kb RssAnon "$st") $(kb RssFile "$st") $(kb Pss "$sr") $(kb Pss_Anon "$sr") $(kb Pss_File "$sr")")
        maps=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)} /^Rss:/ {rss[name] += $2} END {for (n in rss) if (rss[n] >= 16) printf "%6d KiB  %s\n", rss[n], n}' "/proc/$pid/smaps" | sort -rn | head -8 || true)
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
    printf '%s\n' "${rows[@]}" | python3 -c '
import sys, statistics as st
label, runs, size = sys.argv[1:]
cols = list(zip(*[list(map(int, l.split())) for l in sys.stdin if l.strip()]))
m = [st.median(c) for c in cols]
print(f"| {label} | {runs} | {int(size)/1024:.0f} KiB | " + " | ".join(f"{x:.0f} KiB" for x in m) + " |")
' "$label" "$RUNS" "$size"
    { echo "-- $label: largest resident mappings (last run)"; echo "$maps"; } >&2
done
