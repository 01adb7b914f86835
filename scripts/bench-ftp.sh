#!/usr/bin/env bash
# skiffd's FTP side by side with the servers people would pick instead:
# vsftpd, pure-ftpd and ProFTPD from Debian's packages, and pyftpdlib.
#
#   scripts/bench-ftp.sh [all|memory|transfer|fetch|list|phases]
#
# Needs root (it adds a system user for the peers and runs them as
# daemons on loopback). The three Debian servers conflict as packages
# (each Provides ftp-server), so their .debs are unpacked side by side
# under $PEERS instead of installed; their libraries are installed.
#
#   memory    RSS and PSS of each whole server (all its processes) with
#             300 and 1,000 logged-in idle sessions
#   transfer  1 GiB RETR (from the page cache) and STOR with curl: MB/s and
#             server CPU per GiB
#   fetch     100 clients fetching small files in a loop: req/s and p99
#   list      LIST and MLSD of a directory of 10,000 entries
#   phases    (not in `all`) one client's fetches, timed step by step
#   ftps      (not in `all`) `transfer` over explicit FTPS: `curl
#             --ssl-reqd` (AUTH TLS, PROT P on the data connection), skiffd
#             and vsftpd (ssl_enable=YES, data connections must resume the
#             control connection's session) with one ECDSA P-256
#             certificate made here by openssl; SERVERS defaults to those
#             two, the only ones set up for TLS here
#
# Environment: SKIFFD (default target/release/skiffd), PEERS (default
# /opt/ftp-peers), ROOT (fixtures, default /var/tmp/skiff-ftpbench), REPS
# (default 3), SECS (fetch seconds, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
SKIFFD=${SKIFFD:-$PWD/target/release/skiffd}
PEERS=${PEERS:-/opt/ftp-peers}
ROOT=${ROOT:-/var/tmp/skiff-ftpbench}
REPS=${REPS:-3}
SECS=${SECS:-10}
WHAT=${1:-all}
LOAD="python3 $PWD/scripts/ftpload.py"
USER_NAME=ftpbench
PASS=benchpass
FTPS=0
CERT=$ROOT/tls/cert.pem
KEY=$ROOT/tls/key.pem
[ "$WHAT" = ftps ] && FTPS=1
ulimit -n 20000

install_peers() {
    if [ ! -x "$PEERS/vsftpd/usr/sbin/vsftpd" ] || [ ! -x "$PEERS/pure-ftpd/usr/sbin/pure-ftpd" ] \
        || [ ! -x "$PEERS/proftpd-core/usr/sbin/proftpd" ]; then
        local debs
        debs=$(mktemp -d)
        (cd "$debs" && apt-get download vsftpd pure-ftpd proftpd-core)
        DEBIAN_FRONTEND=noninteractive apt-get install -y libhiredis0.14 libmemcached11 \
            libmemcachedutil2 libsodium23 libwrap0 libpcre2-posix3 libidn2-0 curl
        for p in vsftpd pure-ftpd proftpd-core; do
            mkdir -p "$PEERS/$p"
            dpkg -x "$debs"/${p}_*.deb "$PEERS/$p"
        done
        rm -rf "$debs"
    fi
    [ -x "$PEERS/pyftpdlib/bin/python" ] || {
        python3 -m venv "$PEERS/pyftpdlib"
        "$PEERS/pyftpdlib/bin/pip" install -q pyftpdlib
    }
    cp "$PEERS/vsftpd/etc/pam.d/vsftpd" /etc/pam.d/vsftpd
    mkdir -p /var/run/vsftpd/empty
}

# The fixtures: one home for the peers (the system user's), one data dir
# for skiffd, the same files hard-linked into both.
make_fixtures() {
    mkdir -p "$ROOT"
    chmod 755 "$ROOT"
    id "$USER_NAME" >/dev/null 2>&1 \
        || useradd -M -d "$ROOT/home" -u 2001 -s /bin/bash "$USER_NAME"
    usermod -d "$ROOT/home" "$USER_NAME"
    echo "$USER_NAME:$PASS" | chpasswd
    mkdir -p "$ROOT/home/many"
    if [ ! -f "$ROOT/home/big.bin" ]; then
        head -c 1073741824 /dev/urandom >"$ROOT/home/big.bin"
        for i in $(seq 0 99); do head -c 4096 /dev/urandom >"$ROOT/home/small-$i"; done
        (cd "$ROOT/home/many" && seq -f 'entry-%05g' 0 9999 | xargs touch)
    fi
    chown -R "$USER_NAME:$USER_NAME" "$ROOT/home"
    if [ ! -d "$ROOT/skiff-data/homes/$USER_NAME" ]; then
        echo "$PASS" | "$SKIFFD" user add "$USER_NAME" --password-stdin --data-dir "$ROOT/skiff-data" >/dev/null
        local home="$ROOT/skiff-data/homes/$USER_NAME"
        mkdir -p "$home/many"
        ln "$ROOT/home/big.bin" "$home/big.bin"
        for i in $(seq 0 99); do ln "$ROOT/home/small-$i" "$home/small-$i"; done
        (cd "$home/many" && seq -f 'entry-%05g' 0 9999 | xargs touch)
    fi
}

# start NAME: starts one server on loopback and sets PORT.
start() {
    local name=$1 dir="$ROOT/run/$1"
    rm -rf "$dir"
    mkdir -p "$dir"
    case $name in
    skiffd)
        local tls=()
        [ "$FTPS" = 1 ] && tls=(--tls-cert "$CERT" --tls-key "$KEY")
        "$SKIFFD" serve --data-dir "$ROOT/skiff-data" --ftp 127.0.0.1:2200 \
            --ftp-passive 43000-43999 "${tls[@]}" >"$dir/log" 2>&1 &
        PORT=2200 ;;
    vsftpd)
        cat >"$dir/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=2201
anonymous_enable=NO
local_enable=YES
write_enable=YES
pasv_min_port=40000
pasv_max_port=40999
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
pam_service_name=vsftpd
max_clients=5000
max_per_ip=5000
background=NO
EOF
        [ "$FTPS" = 1 ] && cat >>"$dir/vsftpd.conf" <<EOF
ssl_enable=YES
rsa_cert_file=$CERT
rsa_private_key_file=$KEY
force_local_logins_ssl=YES
force_local_data_ssl=YES
ssl_ciphers=HIGH
EOF
        "$PEERS/vsftpd/usr/sbin/vsftpd" "$dir/vsftpd.conf" >"$dir/log" 2>&1 &
        PORT=2201 ;;
    pure-ftpd)
        # pure-ftpd admits at most half as many users as it has passive
        # ports, so its range is the widest.
        "$PEERS/pure-ftpd/usr/sbin/pure-ftpd" -S 127.0.0.1,2202 -p 40000:42999 -l unix -E \
            -c 5000 -C 5000 -u 1000 -H -A >"$dir/log" 2>&1 &
        PORT=2202 ;;
    proftpd)
        cat >"$dir/proftpd.conf" <<EOF
ServerType standalone
Port 2203
DefaultAddress 127.0.0.1
SocketBindTight on
UseIPv6 off
User nobody
Group nogroup
PassivePorts 42000 42999
MaxInstances 5000
MaxClients none
MaxClientsPerHost none
RequireValidShell off
AuthOrder mod_auth_unix.c
PidFile $dir/proftpd.pid
ScoreboardFile $dir/scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
TransferLog none
<Directory />
  AllowOverwrite on
</Directory>
EOF
        "$PEERS/proftpd-core/usr/sbin/proftpd" -n -c "$dir/proftpd.conf" >"$dir/log" 2>&1 &
        PORT=2203 ;;
    pyftpdlib)
        "$PEERS/pyftpdlib/bin/python" - "$ROOT/home" >"$dir/log" 2>&1 <<EOF &
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_user("$USER_NAME", "$PASS", sys.argv[1], perm="elradfmwMT")
FTPHandler.authorizer = auth
FTPHandler.passive_ports = range(44000, 45000)
server = FTPServer(("127.0.0.1", 2204), FTPHandler)
server.max_cons = 5000
server.max_cons_per_ip = 5000
server.serve_forever()
EOF
        PORT=2204 ;;
    esac
}

# serve NAME: starts it, waits for its port, sets PORT and PID (the
# listening process: vsftpd forks away from the process we started) and
# puts it in the CPU cgroup.
serve() {
    start "$1"
    wait_port "$PORT"
    PID=$(ss -Hltnp "sport = :$PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    cgroup_join "$PID"
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

# tree PID: the server and every process under it, one `ps` for all.
tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            for (p in parent) {
                for (q = p; q != "" && q != 0 && q != 1; q = parent[q])
                    if (q == root) { print p; break }
            }
        }'
}

# memory PID: "RSS_KiB PSS_KiB USS_KiB PROCESSES" summed over the server's
# tree. PSS splits each shared page among the processes that map it, so a
# forking server's code is counted once, not once per session; USS (the
# private pages) leaves out what is shared with any other process (libc,
# and a binary another copy of the server also runs).
memory() {
    local files=()
    for p in $(tree "$1"); do files+=("/proc/$p/smaps_rollup"); done
    # A process may exit between `ps` and here: cat skips it, awk would stop.
    cat "${files[@]}" 2>/dev/null \
        | awk '/^Rss:/ {rss += $2} /^Pss:/ {pss += $2; n++}
               /^Private_(Clean|Dirty):/ {uss += $2}
               END {print rss, pss, uss, n}'
}

# CPU is counted by a cpuacct cgroup per server, so processes that forked,
# worked and exited (a forking server's sessions) are all in it.
CG=/sys/fs/cgroup/cpuacct/skiff-ftpbench

# cgroup_join PID: the server and whatever it forks from now on.
cgroup_join() {
    mkdir -p "$CG"
    echo "$1" >"$CG/cgroup.procs"
}

# cpu_seconds: CPU the servers in the cgroup have used, in seconds.
cpu_seconds() {
    awk '{printf "%.3f", $1 / 1e9}' "$CG/cpuacct.usage"
}

stop() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

if [ "$WHAT" = ftps ]; then
    SERVERS=${SERVERS:-"skiffd vsftpd"}
else
    SERVERS=${SERVERS:-"skiffd vsftpd pure-ftpd proftpd pyftpdlib"}
fi

bench_memory() {
    echo "## memory: whole server with N logged-in idle sessions (KiB)"
    for n in 300 1000; do
        for name in $SERVERS; do
            serve "$name"
            local base fifo
            base=$(memory "$PID")
            fifo=$(mktemp -u)
            mkfifo "$fifo"
            $LOAD idle 127.0.0.1 "$PORT" "$USER_NAME" "$PASS" "$n" <"$fifo" >"$fifo.out" &
            local load=$!
            exec 4>"$fifo"
            for _ in $(seq 1200); do grep -q ready "$fifo.out" 2>/dev/null && break; sleep 0.1; done
            sleep 1
            echo "$name sessions=$n $(cat "$fifo.out") idle_before(rss pss uss procs)=$base with(rss pss uss procs)=$(memory "$PID")"
            exec 4>&-
            wait "$load" || true
            rm -f "$fifo" "$fifo.out"
            stop "$PID"
        done
    done
}

bench_transfer() {
    echo "## transfer: 1 GiB with curl (MB/s, server CPU seconds per GiB)"
    for rep in $(seq "$REPS"); do
        for name in $SERVERS; do
            serve "$name"
            local url="ftp://$USER_NAME:$PASS@127.0.0.1:$PORT"
            local t0 speed t1 up t2
            # From a warm page cache (the last STOR may have evicted some).
            cat "$ROOT/home/big.bin" > /dev/null
            # One login and a small fetch first, so the server's first-login
            # work (skiffd measures the home for the quota) is not counted
            # as the transfer's.
            curl -sS -o /dev/null "$url/small-0"
            sleep 0.5
            t0=$(cpu_seconds)
            # curl's speed is the bytes over its whole run (connect, login,
            # EPSV, transfer, 226); the transfer's own rate leaves out what
            # came before the data connection (time_pretransfer).
            read -r speed pre total < <(curl -sS -o /dev/null \
                -w '%{speed_download} %{time_pretransfer} %{time_total}\n' "$url/big.bin")
            sleep 0.5
            t1=$(cpu_seconds)
            read -r up upre utotal < <(curl -sS -T "$ROOT/home/big.bin" -o /dev/null \
                -w '%{speed_upload} %{time_pretransfer} %{time_total}\n' "$url/up.bin")
            sleep 0.5
            t2=$(cpu_seconds)
            curl -sS -o /dev/null -Q "DELE up.bin" "$url/" || true
            echo "$name rep=$rep retr_MBps=$(echo "$speed / 1000000" | bc) retr_cpu_s=$(echo "$t1 - $t0" | bc)" \
                "stor_MBps=$(echo "$up / 1000000" | bc) stor_cpu_s=$(echo "$t2 - $t1" | bc)" \
                "retr_pre_s=$pre retr_xfer_MBps=$(echo "$speed * $total / ($total - $pre) / 1000000" | bc)" \
                "stor_pre_s=$upre stor_xfer_MBps=$(echo "$up * $utotal / ($utotal - $upre) / 1000000" | bc)"
            stop "$PID"
        done
    done
}

bench_ftps() {
    mkdir -p "$ROOT/tls"
    [ -f "$CERT" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$KEY" -out "$CERT" 2>/dev/null
    echo "## ftps: 1 GiB over explicit FTPS with curl --ssl-reqd (MB/s, server CPU seconds per GiB)"
    for rep in $(seq "$REPS"); do
        for name in $SERVERS; do
            serve "$name"
            local url="ftp://$USER_NAME:$PASS@127.0.0.1:$PORT" tls=(--ssl-reqd --cacert "$CERT")
            local t0 speed t1 up t2 suite
            suite=$(curl -sS "${tls[@]}" -v -o /dev/null "$url/small-0" 2>&1 \
                | sed -n 's/.*SSL connection using \(.*\)$/\1/p' | head -1 | tr ' ' '_')
            t0=$(cpu_seconds)
            speed=$(curl -sS "${tls[@]}" -o /dev/null -w '%{speed_download}' "$url/big.bin")
            sleep 0.5
            t1=$(cpu_seconds)
            up=$(curl -sS "${tls[@]}" -T "$ROOT/home/big.bin" -w '%{speed_upload}' -o /dev/null "$url/up.bin")
            sleep 0.5
            t2=$(cpu_seconds)
            curl -sS "${tls[@]}" -o /dev/null -Q "DELE up.bin" "$url/" || true
            echo "$name rep=$rep retr_MBps=$(echo "$speed / 1000000" | bc) retr_cpu_s=$(echo "$t1 - $t0" | bc)" \
                "stor_MBps=$(echo "$up / 1000000" | bc) stor_cpu_s=$(echo "$t2 - $t1" | bc) tls=$suite"
            stop "$PID"
        done
    done
}

bench_fetch() {
    echo "## fetch: 100 clients, 4 KiB files, ${SECS}s"
    for rep in $(seq "$REPS"); do
        for name in $SERVERS; do
            serve "$name"
            local t0 t1 out
            t0=$(cpu_seconds)
            out=$($LOAD fetch 127.0.0.1 "$PORT" "$USER_NAME" "$PASS" 100 "$SECS")
            sleep 0.5
            t1=$(cpu_seconds)
            echo "$name rep=$rep $out server_cpu_s=$(echo "$t1 - $t0" | bc)"
            stop "$PID"
        done
    done
}

# One client fetching one file after the other: where a fetch's time
# goes, step by step (not part of `all`).
bench_phases() {
    echo "## phases: one client, 2,000 fetches of 4 KiB, median ms per step"
    for name in $SERVERS; do
        serve "$name"
        echo "$name $($LOAD phases 127.0.0.1 "$PORT" "$USER_NAME" "$PASS" 2000)"
        stop "$PID"
    done
}

bench_list() {
    echo "## list: LIST and MLSD of 10,000 entries (median of 5)"
    for name in $SERVERS; do
        serve "$name"
        echo "$name $($LOAD list 127.0.0.1 "$PORT" "$USER_NAME" "$PASS" many 5 | tr '\n' ' ')"
        stop "$PID"
    done
}

install_peers >/dev/null
make_fixtures
echo "# bench-ftp $(date -u +%FT%TZ) skiffd=$(git rev-parse --short HEAD) nproc=$(nproc)"
case $WHAT in
all) bench_memory; bench_transfer; bench_fetch; bench_list ;;
memory) bench_memory ;;
transfer) bench_transfer ;;
fetch) bench_fetch ;;
list) bench_list ;;
phases) bench_phases ;;
ftps) bench_ftps ;;
*) echo "unknown: $WHAT" >&2; exit 2 ;;
esac
