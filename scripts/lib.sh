# Shared by the bench scripts (sourced, not run).

# framed_port FILE [SECONDS]: waits, at most SECONDS (default 5), until the
# server whose stdout goes to FILE says "listening framed HOST:PORT", and
# prints PORT (nothing if it never did).
framed_port() {
    local file=$1 tries=$(( ${2:-5} * 20 ))
    for _ in $(seq "$tries"); do
        grep -q 'listening framed' "$file" && break
        sleep 0.05
    done
    awk '/listening framed/ {n = split($3, a, ":"); print a[n]; exit}' "$file"
}

# tls_port FILE [SECONDS]: the same for "listening tls HOST:PORT".
tls_port() {
    local file=$1 tries=$(( ${2:-5} * 20 ))
    for _ in $(seq "$tries"); do
        grep -q 'listening tls' "$file" && break
        sleep 0.05
    done
    awk '/listening tls/ {n = split($3, a, ":"); print a[n]; exit}' "$file"
}
