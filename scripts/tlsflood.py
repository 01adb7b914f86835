#!/usr/bin/env python3
"""How long TLS handshakes stall everyone else on skiffd's one loop.

  tlsflood.py [--runs N] [--rows ROWS] LABEL=BIN [LABEL=BIN ...]

For each run, row and binary (which binary goes first rotates from run to
run, and from row to row) it
starts a fresh `BIN serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0`
pinned to CPU 0, with one ECDSA P-256 certificate made here by openssl. The
probe of scripts/stallprobe.py (a framed 16 B `echo` every 5 ms on the
plain port, its own process) runs on CPU 1, as does this driver and its
TLS clients (Python's `ssl`, i.e. OpenSSL; no certificate checks, no
session resumption: every handshake is a full one).

Rows (ROWS is a comma-separated list; default all):

  idle         no attack, 1 s: the probe's floor on this machine.
  burst1000    1,000 TCP connections are made first (the kernel completes
  burst3000    them in the listen backlog), then every one sends its
               ClientHello in one tight loop, and all handshakes are
               driven to their end from one selector. The window is from
               the first ClientHello to the last finished handshake.
  flood        5 s of 64 handshakes always in flight: each connection
               closes as soon as its handshake is done and a new one
               takes its place.

For each row: handshakes done (and failed), how long the attack took, the
handshakes' own time (ClientHello to done, p50 and p99), the probe's round
trips overlapping the window (count, p50, p99, max) and the server's CPU
over the window (utime+stime from /proc), and how many times it was
preempted (nonvoluntary context switches: the other builders on its
CPU, not the attack). At the end, a markdown table of
medians over the runs.

Every server is stopped by its PID however this ends. Standard library
only, plus `openssl` and `taskset` on the PATH (and `chrt` for --rt).

On a machine shared with other work, the probe's waits include the time
the server (CPU 0) and the probe (CPU 1, with the clients) wait for a
CPU; --rt runs both at real-time priority (SCHED_FIFO), so that what is
left is the loop's own delay. The clients stay at normal priority.
"""

import argparse
import os
import re
import resource
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stallprobe  # noqa: E402  (the probe process and its statistics)

now = time.monotonic
TICK = os.sysconf("SC_CLK_TCK")
FLOOD_SECONDS = 5.0
FLOOD_IN_FLIGHT = 64
ATTACK_TIMEOUT = 120.0
RT_PREFIX = ["chrt", "-f", "10"]
PRIORITY = []  # a command the probe and the server run under (--rt)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def preempted(pid):
    """Times the server was switched out while it could have run on."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Server:
    def __init__(self, binary, work, cert, key):
        self.data = os.path.join(work, "data")
        shutil.rmtree(self.data, ignore_errors=True)
        os.makedirs(self.data)
        self.log = open(os.path.join(work, "server.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", *PRIORITY, binary, "serve", "--data-dir", self.data,
             "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
             "--tls-cert", cert, "--tls-key", key],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = self.tls_port = None
        deadline = now() + 10
        while (self.port is None or self.tls_port is None) and now() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening framed 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            m = re.search(r"listening tls 127\.0\.0\.1:(\d+)", line)
            if m:
                self.tls_port = int(m.group(1))
        if self.port is None or self.tls_port is None:
            self.stop()
            raise RuntimeError(f"{binary} did not say where it listens")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # this server's PID only
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Handshake:
    """One client connection's handshake, driven without blocking. The TLS
    state is an `ssl.SSLObject` over memory buffers, so that the
    ClientHello (and the client's key share in it) can be made before the
    clock starts and all of them sent back to back."""

    def __init__(self, ctx, sock):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing)
        self.started = self.took = None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.hello = self.outgoing.read()

    def send_hello(self):
        self.started = now()
        if self.sock.send(self.hello) != len(self.hello):
            raise OSError("a short send of a ClientHello")

    def step(self):
        """Takes what the server sent; True when the handshake is done."""
        data = self.sock.recv(65536)
        if not data:
            raise OSError("the server closed during the handshake")
        self.incoming.write(data)
        try:
            self.tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        reply = self.outgoing.read()  # the client's Finished
        if reply:
            self.sock.sendall(reply)
        if done:
            self.took = now() - self.started
        return done


def drive(sel, pending, deadline, on_done):
    """Runs the registered handshakes until `pending()` is 0."""
    while pending():
        if now() > deadline:
            raise TimeoutError(f"{pending()} handshakes still under way")
        for key, _ in sel.select(1.0):
            h = key.data
            try:
                done = h.step()
            except (OSError, ssl.SSLError) as e:
                sel.unregister(h.sock)
                on_done(h, e)
                continue
            if done:
                sel.unregister(h.sock)
                on_done(h, None)


def connect_blocking(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setblocking(False)
    return s


def row_burst(n):
    def row(x):
        ctx = client_context()
        hs = [Handshake(ctx, connect_blocking(x.server.tls_port)) for _ in range(n)]
        sel = selectors.DefaultSelector()
        done, failed = [], []
        t0 = now()
        for h in hs:  # every ClientHello, back to back
            h.send_hello()
        for h in hs:
            sel.register(h.sock, selectors.EVENT_READ, h)

        def finished(h, err):
            (failed if err else done).append(h)

        drive(sel, lambda: n - len(done) - len(failed), now() + ATTACK_TIMEOUT, finished)
        t1 = now()
        sel.close()
        for h in hs:
            h.sock.close()
        return t0, t1, done, failed
    return row


def row_flood(x):
    ctx = client_context()
    sel = selectors.DefaultSelector()
    done, failed = [], []
    state = {"in_flight": 0}
    t0 = now()
    stop_at = t0 + FLOOD_SECONDS

    def start_one():
        h = Handshake(ctx, connect_blocking(x.server.tls_port))
        h.send_hello()
        sel.register(h.sock, selectors.EVENT_READ, h)
        state["in_flight"] += 1

    def finished(h, err):
        state["in_flight"] -= 1
        (failed if err else done).append(h)
        h.sock.close()
        if now() < stop_at:
            start_one()

    for _ in range(FLOOD_IN_FLIGHT):
        start_one()
    drive(sel, lambda: state["in_flight"], stop_at + ATTACK_TIMEOUT, finished)
    t1 = now()
    sel.close()
    return t0, t1, done, failed


def row_idle(x):
    t0 = now()
    time.sleep(1.0)
    return t0, now(), [], []


ROWS = {
    "idle": ("idle, probe alone, 1 s", row_idle),
    "burst1000": ("1,000 TLS clients open at once", row_burst(1000)),
    "burst3000": ("3,000 TLS clients open at once", row_burst(3000)),
    "flood": (f"{FLOOD_SECONDS:.0f} s of {FLOOD_IN_FLIGHT} handshakes in flight", row_flood),
}


class X:
    pass


def one(label, binary, row_name, work, cert, key):
    x = X()
    x.server = Server(binary, work, cert, key)
    probe = None
    try:
        probe = stallprobe.Probe(x.server.port, PRIORITY)
        cpu0, pre0 = cpu_seconds(x.server.proc.pid), preempted(x.server.proc.pid)
        t0, t1, done, failed = ROWS[row_name][1](x)
        cpu1, pre1 = cpu_seconds(x.server.proc.pid), preempted(x.server.proc.pid)
        samples = probe.stop()
        probe = None
    finally:
        if probe:
            probe.kill()
        x.server.stop()
    rtts = [r * 1000 for r in stallprobe.window(samples, t0, t1)]
    took = [h.took * 1000 for h in done]
    r = {
        "label": label, "row": row_name, "ok": len(done), "failed": len(failed),
        "secs": t1 - t0, "cpu": cpu1 - cpu0, "preempted": pre1 - pre0,
        "hs_p50": stallprobe.pct(took, 0.5), "hs_p99": stallprobe.pct(took, 0.99),
        "n": len(rtts), "p50": stallprobe.pct(rtts, 0.5), "p99": stallprobe.pct(rtts, 0.99),
        "max": max(rtts) if rtts else float("nan"),
    }
    log(f"{label:>12} {row_name:>10}: {r['ok']} ok {r['failed']} failed in {r['secs']:.2f} s, "
        f"handshake p50 {r['hs_p50']:.1f} p99 {r['hs_p99']:.1f} ms; probe {r['n']} samples "
        f"p50 {r['p50']:.1f} p99 {r['p99']:.1f} max {r['max']:.1f} ms; server CPU {r['cpu']:.2f} s, "
        f"preempted {r['preempted']} times")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--rt", action="store_true",
                    help="run the server and the probe at real-time priority (chrt -f 10): "
                         "other processes on the machine then delay neither, and what is left "
                         "is the loop's own delay")
    ap.add_argument("bins", nargs="+", metavar="LABEL=BIN")
    a = ap.parse_args()
    global PRIORITY
    PRIORITY = RT_PREFIX if a.rt else []
    bins = [b.split("=", 1) for b in a.bins]
    rows = a.rows.split(",")
    for r in rows:
        if r not in ROWS:
            sys.exit(f"unknown row {r}; rows: {', '.join(ROWS)}")
    os.sched_setaffinity(0, {1})  # the driver, the probe and the clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="skiff-tlsflood.")
    try:
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        results = []
        for run in range(a.runs):
            for i, row_name in enumerate(rows):
                # Each row starts with another binary in every run.
                first = (run + i) % len(bins)
                order = bins[first:] + bins[:first]
                for label, binary in order:
                    results.append(one(label, binary, row_name, work, cert, key))
        print_table(results, rows, bins, a.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results, rows, bins, runs):
    med = statistics.median
    print(f"\nMedians of {runs} runs; max is also given as the range over the runs.\n")
    print("| attack | binary | handshakes ok (failed) | attack s | handshake p50 / p99 ms "
          "| probe samples | probe p50 ms | probe p99 ms | **probe max ms** (range) | server CPU s "
          "| server preempted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row_name in rows:
        for label, _ in bins:
            rs = [r for r in results if r["row"] == row_name and r["label"] == label]
            if not rs:
                continue
            maxes = [r["max"] for r in rs]
            print(f"| {ROWS[row_name][0]} | {label} | {med([r['ok'] for r in rs]):,.0f} "
                  f"({med([r['failed'] for r in rs]):.0f}) | {med([r['secs'] for r in rs]):.2f} | "
                  f"{med([r['hs_p50'] for r in rs]):.1f} / {med([r['hs_p99'] for r in rs]):.1f} | "
                  f"{med([r['n'] for r in rs]):.0f} | {med([r['p50'] for r in rs]):.1f} | "
                  f"{med([r['p99'] for r in rs]):.1f} | **{med(maxes):.1f}** "
                  f"({min(maxes):.1f}–{max(maxes):.1f}) | {med([r['cpu'] for r in rs]):.2f} | "
                  f"{med([r['preempted'] for r in rs]):.0f} |")


if __name__ == "__main__":
    main()
