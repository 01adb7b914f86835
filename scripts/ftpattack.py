#!/usr/bin/env python3
"""skiffd's FTP under a hostile client, with a probe watching the loop.

    scripts/ftpattack.py [SKIFFD] [ATTACK ...]

Starts a fresh skiffd (default target/release/skiffd) with a framed
listener and FTP on loopback, and for each attack (all of them if none is
named) runs the probe of scripts/stallprobe.py (a framed `echo` every
5 ms on its own connection) while the attack runs. Prints one row per
attack: the probe's worst and p99 wait during it, the server's largest
RSS, and what the server did (`ok` when every check held, else what did
not).

Standard library only; everything targets 127.0.0.1 (and 127.0.0.2, for
the data connection "from another host") and ends by itself.
"""

import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stallprobe  # noqa: E402
from stallprobe import Probe, RssSampler, now, window  # noqa: E402

PW = "attack-pw"
QUOTA = 64 << 20
TIMEOUT = 60.0


def die_with_parent():
    """In the server's process before it runs: SIGKILL when this script
    ends, however it ends (a run stopped by `timeout` leaves no server)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Server:
    """A fresh skiffd: user `eve` with a 64 MiB quota, and `big`
    without one; `users` adds more (name, quota or None); `wrap` is a
    command the server runs under (e.g. prlimit); `args` are more flags
    for `serve`."""

    def __init__(self, binary, work, users=(), wrap=(), args=()):
        self.work = work
        self.data = os.path.join(work, "data")
        os.makedirs(self.data)
        for user, quota in (("eve", QUOTA), ("big", None), *users):
            extra = ["--quota", str(quota)] if quota is not None else []
            subprocess.run([binary, "user", "--data-dir", self.data, "add", user,
                            "--password-stdin", *extra],
                           input=PW + "\n", text=True, check=True, capture_output=True)
        self.log = open(os.path.join(work, "skiffd.log"), "w")
        self.proc = subprocess.Popen(
            [*wrap, binary, "serve", "--data-dir", self.data, "--listen", "127.0.0.1:0",
             "--ftp", "127.0.0.1:0", "--ftp-passive", "46000-46099", *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, preexec_fn=die_with_parent)
        found = {}
        deadline = now() + 10
        while len(found) < 2 and now() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening (framed|ftp) 127\.0\.0\.1:(\d+)", line)
            if m:
                found[m.group(1)] = int(m.group(2))
        if len(found) < 2:
            raise RuntimeError(f"skiffd did not say where it listens: {found}")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.framed, self.ftp, self.pid = found["framed"], found["ftp"], self.proc.pid
        self.t0 = None

    def begin(self):
        """The hostile part starts now: logins and fixtures before this
        are left out of the probe's window."""
        self.t0, self.cpu0 = now(), self.cpu_seconds()

    def home(self, user="eve"):
        return os.path.join(self.data, "homes", user)

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def listening(self):
        """Passive ports open now (46000-46099)."""
        out = subprocess.run(["ss", "-Hltn", "sport >= :46000 and sport <= :46099"],
                             capture_output=True, text=True).stdout
        return len(out.splitlines())

    def cpu_seconds(self):
        """CPU the server has used (all its threads), in seconds."""
        fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Ftp:
    """A blocking control connection that reads replies by hand."""

    def __init__(self, port, user="eve", timeout=TIMEOUT):
        self.port = port
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.expect("220")
        if user:
            self.cmd(f"USER {user}", "331")
            self.cmd(f"PASS {PW}", "230")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("control connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def reply(self):
        first = self.line()
        code = first[:3]
        if first[3:4] == "-":
            while not self.line().startswith(code + " "):
                pass
        return first

    def expect(self, prefix):
        r = self.reply()
        if not r.startswith(prefix):
            raise AssertionError(f"expected {prefix}, got {r!r}")
        return r

    def send(self, raw):
        self.s.sendall(raw if isinstance(raw, bytes) else raw.encode() + b"\r\n")

    def cmd(self, text, prefix=None):
        self.send(text)
        return self.expect(prefix) if prefix else self.reply()

    def epsv(self, source="127.0.0.1"):
        r = self.cmd("EPSV", "229")
        port = int(r.split("|")[3])
        return port, connect_from(source, port)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def connect_from(source, port, timeout=TIMEOUT):
    d = socket.socket()
    d.settimeout(timeout)
    d.bind((source, 0))
    d.connect(("127.0.0.1", port))
    return d


def read_all(sock):
    out = bytearray()
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return bytes(out)
        out += chunk


def make_file(path, size, seed=b"x"):
    """A file of `size` bytes, its MD5."""
    h = hashlib.md5()
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check(ok, what, problems):
    if not ok:
        problems.append(what)


# ---- the attacks ---------------------------------------------------------
# Each takes the server and returns a list of problems (empty: ok) and a
# note for the table.

def pipeline_flood(srv):
    """200,000 NOOPs pipelined on one control connection, replies read by
    another thread; then 200,000 more that are never read."""
    problems = []
    c, c2 = Ftp(srv.ftp), Ftp(srv.ftp)
    srv.begin()
    n = 200_000
    got = [0]

    def reader():
        while got[0] < n:
            c.expect("200")
            got[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    c.send(b"NOOP\r\n" * n)
    t.join(TIMEOUT)
    check(got[0] == n, f"only {got[0]} of {n} NOOP replies", problems)
    # Now never read: the server must stop reading, not buffer.
    c2.s.setblocking(False)
    sent = 0
    blob = b"NOOP\r\n" * 10_000
    deadline = now() + 5
    while now() < deadline:
        try:
            sent += c2.s.send(blob)
        except BlockingIOError:
            time.sleep(0.01)
    c2.close()
    c.close()
    return problems, f"{n} NOOP answered in order; unread flood stopped after {sent >> 10} KiB"


def long_lines(srv):
    """16 MiB without a newline, then a NOOP; a 5 KiB line; a line of
    only CRs."""
    problems = []
    c = Ftp(srv.ftp)
    srv.begin()
    c.send(b"x" * (16 << 20))
    c.send(b"\r\nNOOP\r\n")
    check(c.reply().startswith("500"), "no 500 for the overlong line", problems)
    check(c.reply().startswith("200"), "NOOP after it not answered", problems)
    c.send(b"RETR " + b"a" * 5000 + b"\r\n")
    check(c.reply().startswith("500"), "no 500 for a 5 KiB RETR", problems)
    c.send(b"\r" * 8000 + b"\n")
    check(c.reply().startswith("500"), "no 500 for 8000 CRs", problems)
    c.cmd("NOOP", "200")
    c.close()
    return problems, "500 Command line too long, session goes on"


def nul_and_utf8(srv):
    """NUL bytes and invalid UTF-8 in verbs and paths."""
    problems = []
    c = Ftp(srv.ftp)
    srv.begin()
    replies = {}
    for raw in (b"STOR a\x00b", b"RETR \x00", b"CWD \xff\xfe", b"MKD \xc3\x28",
                b"\x00\x00\x00", b"NO\x00OP", b"\xff\xff\xff\xff", b"DELE /\x00/etc/passwd",
                b"RNFR \xed\xa0\x80", b"USER \x00"):
        c.send(raw + b"\r\n")
        replies[raw] = c.reply()[:3]
    for raw, code in replies.items():
        check(code[0] in "45", f"{raw!r} got {code}", problems)
    c.cmd("PWD", "257")
    listing = os.listdir(srv.home())
    check(not any("\x00" in n for n in listing), "a name with NUL was made", problems)
    c.close()
    return problems, "codes " + " ".join(sorted(set(replies.values())))


def rest_numbers(srv):
    """REST with numbers no file has, then RETR and STOR."""
    problems = []
    make_file(os.path.join(srv.home(), "r.bin"), 1000)
    c = Ftp(srv.ftp)
    srv.begin()
    codes = []
    for n in ("18446744073709551615", "18446744073709551616", "99999999999999999999999999",
              "-1", "-9223372036854775808", "0x10", "1e9", "", " 5", "5 5", "+5"):
        codes.append(c.cmd(f"REST {n}")[:3])
    c.cmd("REST 18446744073709551615", "350")
    port, d = c.epsv()
    r = c.cmd("RETR r.bin")
    check(r[:3] in ("554", "550", "451"), f"RETR past the end: {r}", problems)
    d.close()
    c.cmd("REST 9223372036854775807", "350")
    port, d = c.epsv()
    r = c.cmd("STOR r.bin")
    check(r[0] in "45", f"STOR at REST 2^63-1: {r}", problems)
    d.close()
    c.cmd("REST 18446744073709551615", "350")
    # The data connection the STOR was refused on may still be there
    # (closed by the client): APPE then appends its nothing (150, 226),
    # as vsftpd does; or it is gone first (425).
    r = c.cmd("APPE r.bin")
    if r.startswith("150"):
        r = c.reply()
        check(r[:3] in ("226", "426"), f"APPE on a closed data connection: {r}", problems)
    c.cmd("NOOP", "200")
    check(os.path.getsize(os.path.join(srv.home(), "r.bin")) == 1000, "r.bin changed", problems)
    c.close()
    return problems, "REST codes " + ",".join(codes)


def pasv_without_connecting(srv):
    """500 PASV on one session and 40 more sessions with 25 each, nobody
    connecting; ports must be free again, and a LIST waiting on a
    listener must get 425 within the passive timeout."""
    problems = []
    c = Ftp(srv.ftp)
    others = [Ftp(srv.ftp) for _ in range(40)]
    more = [Ftp(srv.ftp) for _ in range(60)]
    srv.begin()
    for _ in range(500):
        c.cmd("PASV", "227")
    after_one = srv.listening()
    check(after_one <= 1, f"{after_one} listeners after 500 PASV on one session", problems)
    for o in others:
        for _ in range(25):
            o.cmd("EPSV", "229")
    peak = srv.listening()
    check(peak <= 41, f"{peak} listeners for 41 sessions", problems)
    # 41 listeners out of 100 ports: a 60-session burst of PASV wants
    # more ports than the range has; it must get 425, not hang.
    codes = {}
    for o in more:
        r = o.cmd("PASV")[:3]
        codes[r] = codes.get(r, 0) + 1
    check(set(codes) <= {"227", "425"}, f"PASV codes {codes}", problems)
    t0 = now()
    c.send("LIST")
    r = c.reply()
    waited = now() - t0
    check(r.startswith("425"), f"LIST without a connection: {r}", problems)
    for o in others + more:
        o.cmd("QUIT", "221")
        o.close()
    time.sleep(0.5)
    left = srv.listening()
    check(left == 0, f"{left} passive ports still open after QUIT", problems)
    c.close()
    return problems, (f"listeners: 1 session {after_one}, 41 sessions {peak}; 60 more: {codes};"
                      f" LIST got 425 after {waited:.1f}s; after QUIT {left}")


def data_from_elsewhere(srv):
    """A data connection from 127.0.0.2 before the real client's, 50
    times; the intruder must get nothing, the client everything."""
    problems = []
    body = b"secret" * 1000
    with open(os.path.join(srv.home(), "s.txt"), "wb") as f:
        f.write(body)
    c = Ftp(srv.ftp)
    srv.begin()
    stolen = 0
    for _ in range(50):
        r = c.cmd("EPSV", "229")
        port = int(r.split("|")[3])
        thief = connect_from("127.0.0.2", port)
        d = connect_from("127.0.0.1", port)
        c.send("RETR s.txt")
        c.expect("150")
        got = read_all(d)
        c.expect("226")
        thief.settimeout(2)
        try:
            stolen += len(read_all(thief))
        except (socket.timeout, ConnectionError):
            pass
        thief.close()
        d.close()
        check(got == body, "the client got the wrong bytes", problems)
    check(stolen == 0, f"the intruder got {stolen} bytes", problems)
    c.close()
    return problems, f"50 races: client got every byte, intruder {stolen} B"


def same_path_stor(srv):
    """Two sessions STOR the same path at once, 20 times; the file must
    be one of the two, whole."""
    problems = []
    a, b = Ftp(srv.ftp), Ftp(srv.ftp)
    srv.begin()
    blobs = [os.urandom(3 << 20), os.urandom(3 << 20)]
    outcomes = {}
    for _ in range(20):
        conns = []
        for c in (a, b):
            port, d = c.epsv()
            conns.append((c, d))
        for c, d in conns:
            c.send("STOR same.bin")
        firsts = [c.reply() for c, _ in conns]

        def push(d, blob):
            try:
                d.sendall(blob)
            except OSError:
                pass
            d.close()

        ts = [threading.Thread(target=push, args=(d, blob))
              for (c, d), blob, first in zip(conns, blobs, firsts) if first.startswith("150")]
        for (c, d), first in zip(conns, firsts):
            if not first.startswith("150"):
                d.close()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        finals = []
        for (c, _), first in zip(conns, firsts):
            finals.append(first[:3] + ("/" + c.reply()[:3] if first.startswith("150") else ""))
        key = " ".join(finals)
        outcomes[key] = outcomes.get(key, 0) + 1
        with open(os.path.join(srv.home(), "same.bin"), "rb") as f:
            now_there = f.read()
        check(now_there in blobs, "same.bin is neither upload", problems)
    a.close()
    b.close()
    return problems, "outcomes " + ", ".join(f"{k}: {v}" for k, v in outcomes.items())


def quota_stor(srv):
    """STOR of 256 MiB into a 64 MiB quota: 552, partial kept, REST
    resumes after room is made."""
    problems = []
    c = Ftp(srv.ftp)
    srv.begin()
    port, d = c.epsv()
    c.send("STOR huge.bin")
    c.expect("150")
    block = b"q" * (1 << 20)
    sent = 0
    try:
        for _ in range(256):
            d.sendall(block)
            sent += len(block)
    except OSError:
        pass
    d.close()
    r = c.reply()
    check(r.startswith("552"), f"STOR over quota: {r}", problems)
    size = c.cmd("SIZE huge.bin")
    c.close()
    return problems, f"{r[:60]!r}; SIZE {size!r}; client pushed {sent >> 20} MiB"


def special_files(srv):
    """RETR of a FIFO, a symlink out of the home, a symlink to a FIFO, a
    directory, /dev/zero through a symlink; STOR onto the symlink."""
    problems = []
    home = srv.home()
    os.mkfifo(os.path.join(home, "fifo"))
    os.symlink("/etc/passwd", os.path.join(home, "passwd-link"))
    os.symlink("/dev/zero", os.path.join(home, "zero-link"))
    os.symlink("fifo", os.path.join(home, "fifo-link"))
    os.symlink("..", os.path.join(home, "up"))
    c = Ftp(srv.ftp)
    srv.begin()
    codes = []
    for name in ("fifo", "passwd-link", "zero-link", "fifo-link", "up/big/x", "."):
        port, d = c.epsv()
        t = now()
        r = c.cmd(f"RETR {name}")
        took = now() - t
        if r.startswith("150"):
            leaked = read_all(d)
            r2 = c.reply()
            problems.append(f"RETR {name}: {r[:3]}, {len(leaked)} B, {r2[:3]}")
        codes.append(f"{name}:{r[:3]}")
        check(took < 2, f"RETR {name} took {took:.1f}s", problems)
        d.close()
    for cmd in ("SIZE passwd-link", "MDTM passwd-link", "CWD up", "XMD5 passwd-link",
                "HASH fifo", "DELE up", "RNFR passwd-link"):
        codes.append(f"{cmd.split()[0]}:{c.cmd(cmd)[:3]}")
    port, d = c.epsv()
    c.send("STOR passwd-link")
    r = c.reply()
    if r.startswith("150"):
        d.sendall(b"pwned\n")
        d.close()
        r = c.reply()
    else:
        d.close()
    codes.append(f"STOR-link:{r[:3]}")
    check(open("/etc/passwd").read().find("pwned") < 0, "/etc/passwd written", problems)
    port, d = c.epsv()
    c.send("LIST -la")
    c.expect("150")
    listing = read_all(d).decode()
    c.expect("226")
    check("passwd-link" not in listing and "fifo" not in listing,
          "special files listed", problems)
    c.close()
    return problems, " ".join(codes)


def never_read(srv):
    """30 sessions start a RETR of 256 MiB and a LIST of 20,000 names and
    never read their data connections."""
    problems = []
    sessions = [Ftp(srv.ftp, user="big") for _ in range(31)]
    srv.begin()
    held = []
    for i in range(30):
        c = sessions[i]
        port, d = c.epsv()
        d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send("RETR big.bin" if i % 2 else "LIST many")
        c.expect("150")
        held.append((c, d))
    time.sleep(3)
    # Everyone else is still served meanwhile.
    c = sessions[30]
    port, d = c.epsv()
    c.send("NLST many")
    c.expect("150")
    names = read_all(d).count(b"\n")
    c.expect("226")
    check(names == 20_000, f"NLST gave {names} names", problems)
    for c, d in held:
        c.cmd("ABOR")
        d.close()
        c.close()
    return problems, f"30 stuck readers held for 3 s; NLST of 20,000 alongside: {names} names"


def abor_storm(srv):
    """300 rounds of EPSV, RETR of 256 MiB, read a bit, ABOR (in-band and
    with Telnet IP/Synch), and 2,000 ABORs with nothing running."""
    problems = []
    c = Ftp(srv.ftp, user="big")
    srv.begin()
    seen = {}
    for i in range(300):
        port, d = c.epsv()
        c.send("RETR big.bin")
        c.expect("150")
        d.recv(65536)
        c.send(b"\xff\xf4\xff\xf2ABOR\r\n" if i % 2 else b"ABOR\r\n")
        codes = []
        while True:
            r = c.reply()
            codes.append(r[:3])
            if r[:3] in ("226", "225") and len(codes) >= 1 and codes[-1] != "426":
                break
        d.close()
        seen[" ".join(codes)] = seen.get(" ".join(codes), 0) + 1
    c.send(b"ABOR\r\n" * 2000)
    for _ in range(2000):
        c.expect("225")
    c.cmd("NOOP", "200")
    c.close()
    return problems, "replies " + ", ".join(f"[{k}] x{v}" for k, v in seen.items())


def kill_mid_stor(srv):
    """A client process killed (SIGKILL) halfway through a 48 MiB STOR;
    a new session resumes with SIZE + REST + STOR; the file must be whole."""
    problems = []
    src = os.path.join(srv.work, "resume.src")
    want = srv.resume_md5
    script = f"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", {srv.ftp}))
f = s.makefile("rb")
def reply():
    l = f.readline()
    while l[3:4] == b"-":
        l = f.readline()
    return l
reply()
for c in (b"USER eve", b"PASS {PW}", b"TYPE I", b"EPSV"):
    s.sendall(c + b"\\r\\n"); r = reply()
port = int(r.split(b"|")[3])
d = socket.create_connection(("127.0.0.1", port))
s.sendall(b"STOR resume.bin\\r\\n"); reply()
src = open({src!r}, "rb")
for _ in range(24):
    d.sendall(src.read(1 << 20))
print("half", flush=True)
time.sleep(60)
"""
    srv.begin()
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    check(line.strip() == "half", "the client did not get halfway", problems)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    c = Ftp(srv.ftp)
    c.cmd("TYPE I", "200")
    size = int(c.cmd("SIZE resume.bin", "213").split()[1])
    check(0 < size <= 24 << 20, f"SIZE after the kill: {size}", problems)
    c.cmd(f"REST {size}", "350")
    port, d = c.epsv()
    c.send("STOR resume.bin")
    c.expect("150")
    with open(src, "rb") as f:
        f.seek(size)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.sendall(chunk)
    d.close()
    c.expect("226")
    r = c.cmd("XMD5 resume.bin")
    got = md5_of(os.path.join(srv.home(), "resume.bin"))
    check(got == want, "resumed file differs", problems)
    check(want in r, f"XMD5 {r!r}", problems)
    c.close()
    return problems, f"kept {size} B after the kill; resumed file whole, XMD5 matches"


def bulk_transfers(srv):
    """Four sessions fetch a 256 MiB file and two upload 128 MiB at once,
    as fast as loopback goes: the loop's share per turn at its largest
    and its smallest. Every byte must arrive whole."""
    problems = []
    want = md5_of(os.path.join(srv.home("big"), "big.bin"))
    src = os.path.join(srv.work, "up.src")
    up_md5 = make_file(src, 128 << 20, seed=b"up")
    results = {}

    def fetch(i):
        c = Ftp(srv.ftp, user="big")
        port, d = c.epsv()
        c.send("RETR big.bin")
        c.expect("150")
        h = hashlib.md5()
        while True:
            chunk = d.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
        d.close()
        c.expect("226")
        results[f"retr{i}"] = h.hexdigest() == want
        c.close()

    def upload(i):
        c = Ftp(srv.ftp, user="big")
        port, d = c.epsv()
        c.send(f"STOR up{i}.bin")
        c.expect("150")
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                d.sendall(chunk)
        d.close()
        c.expect("226")
        results[f"stor{i}"] = md5_of(os.path.join(srv.home("big"), f"up{i}.bin")) == up_md5
        c.close()

    srv.begin()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 4)
    check(len(results) == 6 and all(results.values()), f"transfers whole: {results}", problems)
    return problems, "4 RETRs of 256 MiB and 2 STORs of 128 MiB at once"


def big_files(srv):
    make_file(os.path.join(srv.home("big"), "big.bin"), 256 << 20)
    many = os.path.join(srv.home("big"), "many")
    os.makedirs(many)
    for i in range(20_000):
        open(os.path.join(many, f"entry-{i:05}"), "w").close()


def resume_source(srv):
    srv.resume_md5 = make_file(os.path.join(srv.work, "resume.src"), 48 << 20, b"resume")


# Fixtures made before the probe starts (their disk writes are not the
# attack's).
SETUP = {"never-read": big_files, "abor": big_files, "kill-stor": resume_source, "bulk": big_files}

ATTACKS = {
    "pipeline": pipeline_flood,
    "longline": long_lines,
    "nul-utf8": nul_and_utf8,
    "rest": rest_numbers,
    "pasv": pasv_without_connecting,
    "elsewhere": data_from_elsewhere,
    "same-stor": same_path_stor,
    "quota": quota_stor,
    "special": special_files,
    "never-read": never_read,
    "abor": abor_storm,
    "kill-stor": kill_mid_stor,
    "bulk": bulk_transfers,
}


def main():
    run(ATTACKS, SETUP, sys.argv[1:])


def run(attacks, setup, args, options=None):
    """Runs the attacks named in `args` (all if none; a first argument
    with a `/` is the binary), each on a fresh server started with
    `options[name]` (Server's keyword arguments) if given."""
    options = options or {}
    binary = os.path.abspath("target/release/skiffd")
    if args and os.path.sep in args[0]:
        binary = os.path.abspath(args.pop(0))
    names = args or list(attacks)
    print(f"| attack | probe worst ms | probe p99 ms | samples | max RSS KiB | server CPU s | result | what happened |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        work = tempfile.mkdtemp(prefix=f"ftpattack-{name}-")
        srv = Server(binary, work, **options.get(name, {}))
        if name in setup:
            setup[name](srv)
            os.sync()
        probe = Probe(srv.framed)
        rss = RssSampler(srv.pid)
        t0, cpu0 = now(), srv.cpu_seconds()
        try:
            problems, note = attacks[name](srv)
        except Exception as e:  # the row says what broke, the next goes on
            problems, note = [f"{type(e).__name__}: {e}"], ""
        t1, cpu1 = now(), srv.cpu_seconds()
        if srv.t0:
            t0, cpu0 = srv.t0, srv.cpu0
        cpu = cpu1 - cpu0
        try:
            samples = probe.stop()
        except Exception as e:
            samples = []
            problems.append(f"probe: {e}")
        peak = rss.stop()
        if not srv.alive():
            problems.append(f"skiffd exited ({srv.proc.returncode})")
        srv.stop()
        w = window(samples, t0, t1)
        worst = max(w) * 1000 if w else float("nan")
        p99 = stallprobe.pct(w, 0.99) * 1000 if w else float("nan")
        result = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print(f"| {name} | {worst:.1f} | {p99:.1f} | {len(w)} | {peak} | {cpu:.2f} | {result} | {note} |",
              flush=True)
        if not problems:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  (kept {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
