#!/usr/bin/env python3
"""skiffd's FTP uploads through pipes under a hostile client.

    scripts/ftpattack_pipes.py [SKIFFD] [ATTACK ...]

A plain upload (not hashed, not under TLS) moves from the data socket to
the partial file through two pipes (`splice` on the loop, `splice` on a
worker; at most 16 uploads at once, the others copy). These attacks aim
at that path, with the same table, probe and fresh server per attack as
scripts/ftpattack.py (whose helpers they use). Besides the bytes landing
whole, they check the server's descriptors: back to where they were once
every client has gone, and never more pipes than 16 uploads hold.

Random choices are seeded: SKIFF_SEED=N repeats a run (the seed is
printed first). Standard library only; everything targets 127.0.0.1 and
ends by itself.
"""

import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftpattack  # noqa: E402
from ftpattack import PW, Ftp, check, md5_of, now  # noqa: E402

SEED = int(os.environ.get("SKIFF_SEED", str(time.time_ns() % (1 << 32))))
MIB = 1 << 20
# What the server's upload pipes may hold at once: 16 uploads, two pipes
# of two descriptors each (core/src/upload_pipe.rs).
MOST_PIPE_FDS = 16 * 4
TINY_QUOTA = 3 * MIB + 12345  # not a multiple of a page


def blob(tag, size):
    """`size` bytes that depend on the run's seed and on `tag`."""
    return random.Random(f"{SEED}-{tag}").randbytes(size)


def md5(b):
    return hashlib.md5(b).hexdigest()


def fd_kinds(srv):
    """The server's open descriptors: (all, pipes)."""
    fds = pipes = 0
    d = f"/proc/{srv.pid}/fd"
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue  # closed meanwhile
        fds += 1
        pipes += target.startswith("pipe:")
    return fds, pipes


class FdSampler:
    """The most descriptors and pipes the server held, every 10 ms."""

    def __init__(self, srv):
        self.srv, self.fds, self.pipes, self.halt = srv, 0, 0, threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.halt.wait(0.01):
            try:
                fds, pipes = fd_kinds(self.srv)
            except OSError:
                return
            self.fds, self.pipes = max(self.fds, fds), max(self.pipes, pipes)

    def stop(self):
        self.halt.set()
        self.t.join()
        return self.fds, self.pipes


def settled_fds(srv, want, timeout=10.0):
    """The server's descriptor count once it is back to `want` (or the
    last seen, after `timeout`): closing is the loop's, a turn later."""
    deadline = now() + timeout
    while True:
        fds, pipes = fd_kinds(srv)
        if fds <= want or now() > deadline:
            return fds, pipes
        time.sleep(0.05)


def warm(srv, user="big"):
    """One small upload and logout, so that what stays open after a
    first login (the account's directories) is in the baseline."""
    c, d = begin_upload(srv.ftp, user, "STOR warm.bin")
    d.sendall(b"warm")
    d.close()
    c.expect("226")
    c.cmd("DELE warm.bin", "250")
    c.cmd("QUIT", "221")
    c.close()
    time.sleep(0.5)
    return fd_kinds(srv)


def stor(port, name, data, user="big", rest=None, verb="STOR", pieces=None, session=None):
    """Uploads `data` (all of it, or `pieces`: a list of (bytes, pause
    seconds after)); returns the final reply (or the refusal)."""
    c = session or Ftp(port, user=user)
    try:
        c.cmd("TYPE I", "200")
        if rest is not None:
            c.cmd(f"REST {rest}", "350")
        _, d = c.epsv()
        c.send(f"{verb} {name}")
        r = c.reply()
        if not r.startswith("150"):
            d.close()
            return r
        try:
            for piece, pause in pieces if pieces is not None else [(data, 0)]:
                d.sendall(piece)
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # refused part way (the quota): the reply says why
        d.close()
        return c.reply()
    finally:
        if session is None:
            c.close()


def resume(srv, name, want, user="big"):
    """SIZE, then REST n + STOR of the rest of `want` (retried while the
    path is still locked by the upload that broke off): the reply, and
    what SIZE said first."""
    c = Ftp(srv.ftp, user=user)
    try:
        c.cmd("TYPE I", "200")
        for _ in range(100):
            r = c.cmd(f"SIZE {name}")
            size = int(r.split()[1]) if r.startswith("213") else 0
            final = stor(srv.ftp, name, want[size:], rest=size, session=c)
            if not final.startswith("450"):
                return final, size
            time.sleep(0.1)
        return final, size
    finally:
        c.close()


def on_disk(srv, name, user="big"):
    path = os.path.join(srv.home(user), name)
    return md5_of(path) if os.path.exists(path) else None


def begin_upload(address, user, command):
    """A fresh session of `user` that has sent `command` (a STOR or APPE)
    and got its 150: the control client and the data socket."""
    c = Ftp(address, user=user)
    c.cmd("TYPE I", "200")
    _, d = c.epsv()
    c.send(command)
    c.expect("150")
    return c, d


def rst_close(s):
    """Closes `s` with a reset (SO_LINGER 0) instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ---- the attacks ---------------------------------------------------------

def many_stor(srv):
    """40 STORs of 8 MiB, all started (150) before any sends: more than
    the 16 that get pipes. Every file whole, at most 16 uploads' pipes,
    descriptors back after."""
    problems = []
    base_fds, base_pipes = warm(srv)
    n, size = 40, 8 * MIB
    go = threading.Event()
    want, replies = {}, {}
    started = threading.Semaphore(0)

    def one(i):
        data = blob(f"many{i}", size)
        want[i] = md5(data)
        c = None
        try:
            c, d = begin_upload(srv.ftp, "big", f"STOR many{i}.bin")
            started.release()
            go.wait(30)
            d.sendall(data)
            d.close()
            replies[i] = c.reply()
        except Exception as e:  # the row says what broke
            replies[i] = f"{type(e).__name__}: {e}"
            started.release()
        finally:
            if c:
                c.close()

    srv.begin()
    sampler = FdSampler(srv)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        started.acquire(timeout=30)
    time.sleep(0.1)
    _, waiting_pipes = fd_kinds(srv)
    go.set()
    for t in threads:
        t.join(ftpattack.TIMEOUT * 2)
    peak_fds, peak_pipes = sampler.stop()
    bad = [i for i in range(n) if not replies.get(i, "").startswith("226")]
    check(not bad, f"not 226: {[(i, replies.get(i)) for i in bad[:3]]}", problems)
    wrong = [i for i in range(n) if on_disk(srv, f"many{i}.bin") != want.get(i)]
    check(not wrong, f"{len(wrong)} files differ: {wrong[:5]}", problems)
    check(waiting_pipes - base_pipes == MOST_PIPE_FDS,
          f"{n} started uploads hold {waiting_pipes - base_pipes} pipe fds", problems)
    check(peak_pipes - base_pipes <= MOST_PIPE_FDS, f"{peak_pipes} pipe descriptors", problems)
    fds, pipes = settled_fds(srv, base_fds)
    check(fds == base_fds, f"{fds} descriptors after, {base_fds} before", problems)
    return problems, (f"{n - len(bad)}/{n} landed whole; peak {peak_fds} fds of which {peak_pipes} pipes"
                      f" (baseline {base_fds}/{base_pipes}); after {fds}/{pipes}")


def drip(srv):
    """At once: one byte every 10 ms for 3 s then 4 MiB fast; 4 MiB sent
    half, a 3 s pause, the rest; 2 MiB in sends of 1 to 3000 bytes
    (seeded) with Nagle off, so the pipe fills by its count of pieces
    before its count of bytes."""
    problems = []
    rng = random.Random(f"{SEED}-drip")
    dripped = blob("drip", 300 + 4 * MIB)
    halves = blob("halves", 4 * MIB)
    crumbs = blob("crumbs", 2 * MIB)
    cuts, at = [], 0
    while at < len(crumbs):
        step = rng.randint(1, 3000)
        cuts.append((crumbs[at:at + step], 0))
        at += step
    plans = {
        "drip.bin": (dripped, [(dripped[i:i + 1], 0.01) for i in range(300)] + [(dripped[300:], 0)]),
        "halves.bin": (halves, [(halves[:2 * MIB], 3.0), (halves[2 * MIB:], 0)]),
        "crumbs.bin": (crumbs, cuts),
    }
    replies = {}

    def one(name, pieces):
        c = Ftp(srv.ftp, user="big")
        if name == "crumbs.bin":
            c.cmd("TYPE I", "200")
            _, d = c.epsv()
            d.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(f"STOR {name}")
            c.expect("150")
            for piece, _ in pieces:
                d.sendall(piece)
            d.close()
            replies[name] = c.reply()
        else:
            replies[name] = stor(srv.ftp, name, None, pieces=pieces, session=c)
        c.close()

    srv.begin()
    threads = [threading.Thread(target=one, args=(name, pieces)) for name, (_, pieces) in plans.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ftpattack.TIMEOUT)
    for name, (data, _) in plans.items():
        check(replies.get(name, "").startswith("226"), f"{name}: {replies.get(name)}", problems)
        check(on_disk(srv, name) == md5(data), f"{name} differs", problems)
    return problems, f"drip, pause 3 s, {len(cuts)} crumbs: " + ", ".join(
        f"{n} {r[:3]}" for n, r in sorted(replies.items()))


KILLED_CLIENT = """
import socket, sys, time
ftp, name, cut = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = sys.stdin.buffer.read()
s = socket.create_connection(("127.0.0.1", ftp))
f = s.makefile("rb")
def reply():
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    return line
reply()
for c in (b"USER big", b"PASS %s", b"TYPE I", b"EPSV"):
    s.sendall(c + b"\\r\\n")
    r = reply()
port = int(r.split(b"|")[3])
d = socket.create_connection(("127.0.0.1", port))
s.sendall(b"STOR " + name.encode() + b"\\r\\n")
reply()
d.sendall(data[:cut])
print("cut", flush=True)
time.sleep(60)
"""


def kill_random(srv):
    """30 uploads of 6 MiB broken off at a random byte (seeded): half by
    SIGKILL of the client process, half by a reset of both connections;
    each resumed with SIZE + REST + STOR and compared. Then no descriptor
    more than before, and all 16 pipe slots free again."""
    problems = []
    base_fds, base_pipes = warm(srv)
    rng = random.Random(f"{SEED}-kill")
    size = 6 * MIB
    data = blob("kill", size)
    want = md5(data)
    script = KILLED_CLIENT % PW
    srv.begin()
    kept = []
    for i in range(30):
        name = f"k{i}.bin"
        cut = rng.randrange(0, size)
        if i % 2 == 0:
            p = subprocess.Popen([sys.executable, "-c", script, str(srv.ftp), name, str(cut)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            p.stdin.write(data)
            p.stdin.close()
            line = p.stdout.readline()
            check(line.strip() == b"cut", f"round {i}: the client did not get to {cut}", problems)
            time.sleep(rng.random() * 0.05)
            p.kill()
            p.wait()
            p.stdout.close()
        else:
            c, d = begin_upload(srv.ftp, "big", f"STOR {name}")
            d.sendall(data[:cut])
            time.sleep(rng.random() * 0.05)
            rst_close(d)
            rst_close(c.s)
        final, had = resume(srv, name, data)
        kept.append(had)
        check(final.startswith("226"), f"round {i} (cut {cut}): resume got {final!r}", problems)
        check(on_disk(srv, name) == want, f"round {i} (cut {cut}, SIZE {had}): file differs", problems)
    fds, pipes = settled_fds(srv, base_fds)
    check(fds == base_fds, f"{fds} descriptors after, {base_fds} before", problems)
    # Every slot back: 17 uploads waiting for bytes hold 16 uploads' pipes.
    waiting = []
    for i in range(17):
        c, d = begin_upload(srv.ftp, "big", f"STOR slot{i}.bin")
        waiting.append((c, d))
    _, held = fd_kinds(srv)
    check(held - base_pipes == MOST_PIPE_FDS, f"17 uploads hold {held - base_pipes} pipe fds", problems)
    for c, d in waiting:
        d.close()
        c.expect("226")
        c.close()
    return problems, (f"30 resumes from SIZE {min(kept)}..{max(kept)}; fds {base_fds} -> {fds};"
                      f" 17 waiting uploads held {held - base_pipes} pipe fds")


def abor_quit_lock_quota(srv):
    """ABOR mid-upload and resume; QUIT mid-upload (the transfer ends
    first); a second STOR of a path being uploaded (450); a quota of
    3 MiB + 12345: exactly that much lands (226), one byte more is 552
    with the quota's bytes kept and the stored file untouched."""
    problems = []
    notes = []
    srv.begin()
    # ABOR
    data = blob("abor", 8 * MIB)
    c, d = begin_upload(srv.ftp, "big", "STOR abor.bin")
    d.sendall(data[:5 * MIB])
    c.send("ABOR")
    codes = [c.reply()[:3]]
    if codes[0] == "426":
        codes.append(c.reply()[:3])
    d.close()
    check(codes == ["426", "226"], f"ABOR replies {codes}", problems)
    c.cmd("NOOP", "200")
    c.close()
    final, had = resume(srv, "abor.bin", data)
    check(final.startswith("226") and on_disk(srv, "abor.bin") == md5(data),
          f"resume after ABOR from {had}: {final!r}", problems)
    notes.append(f"ABOR {'/'.join(codes)}, resumed from {had}")
    # QUIT
    data = blob("quit", 6 * MIB)
    c, d = begin_upload(srv.ftp, "big", "STOR quit.bin")
    d.sendall(data[:3 * MIB])
    c.send("QUIT")
    d.sendall(data[3 * MIB:])
    d.close()
    codes = [c.reply()[:3], c.reply()[:3]]
    c.close()
    check(codes == ["226", "221"], f"QUIT mid-upload: {codes}", problems)
    check(on_disk(srv, "quit.bin") == md5(data), "quit.bin differs", problems)
    notes.append(f"QUIT {'/'.join(codes)}")
    # The same path twice
    data = blob("lock", 4 * MIB)
    a, d = begin_upload(srv.ftp, "big", "STOR lock.bin")
    d.sendall(data[:MIB])
    second = stor(srv.ftp, "lock.bin", b"intruder")
    d.sendall(data[MIB:])
    d.close()
    first = a.reply()
    a.close()
    check(second.startswith("450"), f"second STOR: {second!r}", problems)
    check(first.startswith("226") and on_disk(srv, "lock.bin") == md5(data),
          f"first STOR: {first!r}", problems)
    notes.append(f"same path {first[:3]}+{second[:3]}")
    # Quota edges
    exact = blob("quota", TINY_QUOTA)
    over = blob("over", TINY_QUOTA + 1)
    r1 = stor(srv.ftp, "q.bin", exact, user="tiny")
    check(r1.startswith("226") and on_disk(srv, "q.bin", "tiny") == md5(exact),
          f"exactly the quota: {r1!r}", problems)
    r2 = stor(srv.ftp, "q.bin", over, user="tiny")
    check(r2.startswith("552"), f"the quota + 1: {r2!r}", problems)
    check(on_disk(srv, "q.bin", "tiny") == md5(exact), "the stored file changed", problems)
    c = Ftp(srv.ftp, user="tiny")
    size = c.cmd("SIZE q.bin")
    c.close()
    check(size == f"213 {TINY_QUOTA}", f"SIZE after 552: {size!r}", problems)
    partials = os.path.join(srv.data, "partial", "tiny")
    kept = [os.path.join(partials, n) for n in os.listdir(partials)]
    check(len(kept) == 1 and md5_of(kept[0]) == md5(over[:TINY_QUOTA]),
          f"partials after 552: {[os.path.getsize(k) for k in kept]}", problems)
    notes.append(f"quota {r1[:3]}, +1 {r2[:3]}, {size}")
    return problems, "; ".join(notes)


def nofile(srv):
    """The server under an open-file limit of 200: 40 uploads of 4 MiB,
    all half sent before any goes on. Each lands whole or is refused
    with a reply; the server goes on; descriptors come back."""
    problems = []
    base_fds, base_pipes = warm(srv)
    n, size = 40, 4 * MIB
    go = threading.Event()
    want, replies = {}, {}
    srv.begin()
    sampler = FdSampler(srv)
    threads = []
    for i in range(n):
        threads.append(threading.Thread(target=half_then_rest, args=(srv, i, size, go, want, replies)))
    for t in threads:
        t.start()
    time.sleep(3)
    go.set()
    for t in threads:
        t.join(120)
    peak_fds, peak_pipes = sampler.stop()
    codes = {}
    for i in range(n):
        r = replies.get(i, "none")
        codes[r[:3]] = codes.get(r[:3], 0) + 1
        if r.startswith("226"):
            check(on_disk(srv, f"n{i}.bin") == want[i], f"n{i}.bin: 226 but differs", problems)
        elif not (r[:1] in "45" and r[:3].isdigit()) and "421 " not in r:
            problems.append(f"upload {i}: {r}")
    check(codes.get("226", 0) > 0, "nothing landed", problems)
    check(srv.alive(), "skiffd died", problems)
    after = stor(srv.ftp, "after.bin", blob("after", 2 * MIB))
    check(after.startswith("226") and on_disk(srv, "after.bin") == md5(blob("after", 2 * MIB)),
          f"an upload after: {after!r}", problems)
    fds, pipes = settled_fds(srv, base_fds)
    check(fds == base_fds, f"{fds} descriptors after, {base_fds} before", problems)
    return problems, (f"codes {codes}; peak {peak_fds} fds ({peak_pipes} pipes); after {fds},"
                      f" baseline {base_fds}")


def half_then_rest(srv, i, size, go, want, replies):
    """For `nofile`: log in, STOR half of the upload, wait for `go`, send
    the rest."""
    data = blob(f"nofile{i}", size)
    want[i] = md5(data)
    try:
        c = Ftp(srv.ftp, user="big", timeout=90)
    except Exception as e:
        replies[i] = f"login: {type(e).__name__}: {e}"
        return
    try:
        c.cmd("TYPE I", "200")
        _, d = c.epsv()
        c.send(f"STOR n{i}.bin")
        r = c.reply()
        if not r.startswith("150"):
            replies[i] = r
            d.close()
            return
        d.sendall(data[:size // 2])
        go.wait(30)
        d.sendall(data[size // 2:])
        d.close()
        replies[i] = c.reply()
    except Exception as e:
        replies[i] = f"{type(e).__name__}: {e}"
    finally:
        c.close()


def nofile_waiting(srv):
    """The server under an open-file limit of 200: 70 sessions each
    send EPSV and STOR and never connect, so each holds a listener and a
    partial file (and 16 of them pipes) on one counted connection:
    beyond the descriptors the server keeps spare. Each STOR waits or is
    refused with a reply; the loop does not spin meanwhile; once they
    go, descriptors come back and an upload lands."""
    problems = []
    base_fds, base_pipes = warm(srv)
    srv.begin()
    sampler = FdSampler(srv)
    sessions, codes = [], {}
    for i in range(70):
        try:
            c = Ftp(srv.ftp, user="big", timeout=5)
        except Exception as e:
            key = f"login {str(e)[-40:]}"
            codes[key] = codes.get(key, 0) + 1
            continue
        c.cmd("TYPE I", "200")
        r = c.cmd("EPSV")
        if r.startswith("229"):
            c.send(f"STOR w{i}.bin")
        else:
            codes[f"EPSV {r[:3]}"] = codes.get(f"EPSV {r[:3]}", 0) + 1
        sessions.append(c)
    cpu0, t0 = srv.cpu_seconds(), now()
    time.sleep(2)
    idle_cpu = (srv.cpu_seconds() - cpu0) / (now() - t0)
    for c in sessions:
        c.s.settimeout(0.2)
        try:
            r = c.reply()
            codes[f"STOR {r[:3]}"] = codes.get(f"STOR {r[:3]}", 0) + 1
        except (socket.timeout, ConnectionError):
            codes["STOR waiting"] = codes.get("STOR waiting", 0) + 1
    peak_fds, peak_pipes = sampler.stop()
    check(idle_cpu < 0.2, f"the server used {idle_cpu:.0%} of a core while they waited", problems)
    for c in sessions:
        c.close()
    fds, pipes = settled_fds(srv, base_fds)
    check(fds == base_fds, f"{fds} descriptors after, {base_fds} before", problems)
    data = blob("after", 3 * MIB)
    r = stor(srv.ftp, "after.bin", data)
    check(r.startswith("226") and on_disk(srv, "after.bin") == md5(data), f"an upload after: {r!r}", problems)
    check(srv.alive(), "skiffd died", problems)
    return problems, (f"replies {codes}; peak {peak_fds} fds ({peak_pipes} pipes); CPU while waiting"
                      f" {idle_cpu:.0%}; after {fds}, baseline {base_fds}")


def stall(srv):
    """With --idle-timeout 2s: uploads that stop sending without closing,
    after 300 KB (still in a pipe with room) and after 3 MiB (some
    written): each gets 426 on its own; SIZE then counts every byte sent
    and REST + STOR from there makes the file whole."""
    problems = []
    notes = []
    srv.begin()
    for name, upto in (("stall-small.bin", 300_000), ("stall-big.bin", 3 * MIB)):
        data = blob(name, 4 * MIB)
        c, d = begin_upload(srv.ftp, "big", f"STOR {name}")
        d.sendall(data[:upto])
        t0 = now()
        r = c.reply()
        waited = now() - t0
        check(r.startswith("426"), f"{name} stalled: {r!r}", problems)
        check(waited < 10, f"{name}: the 426 took {waited:.1f}s", problems)
        d.close()
        c.close()
        final, had = resume(srv, name, data)
        check(had == upto, f"{name}: {upto} B sent, SIZE {had} after the 426", problems)
        check(final.startswith("226") and on_disk(srv, name) == md5(data),
              f"{name}: resume from {had}: {final!r}", problems)
        notes.append(f"{upto} B sent: {r[:3]} after {waited:.1f}s, kept {had}, resume {final[:3]}")
    return problems, "; ".join(notes)


def slow_jobs(srv):
    """With --idle-timeout 300ms, an upload going at full speed while two
    APPEs onto stored files of 1 GiB keep both bulk workers copying for
    longer than that: the upload's own batch waits on a worker past its
    idle deadline. Everyone must finish (226), and the loop must not
    spin on a deadline that passed while the job was out."""
    problems = []
    chunk = blob("slow", 16 * MIB)
    rounds = 32  # 512 MiB
    h = hashlib.md5()
    for _ in range(rounds):
        h.update(chunk)
    want = h.hexdigest()
    replies = {}

    def victim():
        try:
            c = Ftp(srv.ftp, user="big", timeout=15)
            c.cmd("TYPE I", "200")
            _, d = c.epsv()
            c.send("STOR victim.bin")
            c.expect("150")
            for _ in range(rounds):
                d.sendall(chunk)
            d.close()
            replies["victim"] = c.reply()
        except Exception as e:
            replies["victim"] = f"{type(e).__name__}: {e}"

    def appe(i):
        try:
            c = Ftp(srv.ftp, user="big", timeout=15)
            c.cmd("TYPE I", "200")
            _, d = c.epsv()
            c.send(f"APPE huge{i}.bin")
            c.expect("150")
            d.sendall(b"tail")
            d.close()
            replies[f"appe{i}"] = c.reply()
        except Exception as e:
            replies[f"appe{i}"] = f"{type(e).__name__}: {e}"

    srv.begin()
    threads = [threading.Thread(target=victim, daemon=True)]
    threads[0].start()
    time.sleep(0.3)
    threads += [threading.Thread(target=appe, args=(i,), daemon=True) for i in range(2)]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    cpu0 = srv.cpu_seconds()
    time.sleep(1)
    idle_cpu = srv.cpu_seconds() - cpu0
    for name in ("victim", "appe0", "appe1"):
        r = replies.get(name, "still waiting")
        check(r.startswith("226"), f"{name}: {r}", problems)
    check(idle_cpu < 0.2, f"the server used {idle_cpu:.1f} s of CPU in 1 s with nothing to do", problems)
    if problems and srv.alive():
        srv.proc.kill()  # a spinning loop answers nobody, the probe included
    else:
        check(on_disk(srv, "victim.bin") == want, "victim.bin differs", problems)
    return problems, (", ".join(f"{n} {replies.get(n, '-')[:3]}" for n in ("victim", "appe0", "appe1"))
                      + f"; CPU after {idle_cpu:.2f} s in 1 s")


def huge_files(srv):
    for i in range(2):
        ftpattack.make_file(os.path.join(srv.home("big"), f"huge{i}.bin"), 1 << 30, seed=b"huge%d" % i)


def resume_chain(srv):
    """One 6 MiB file uploaded in 20 broken pieces (seeded): each step
    resumes by APPE (from SIZE) or by REST k + STOR with k anywhere up to
    SIZE (rewinding too), sends part of the rest and resets both
    connections; the last step sends everything. The file must be whole,
    and SIZE never more than the file."""
    problems = []
    rng = random.Random(f"{SEED}-chain")
    data = blob("chain", 6 * MIB)
    srv.begin()
    steps = []
    for step in range(20):
        last = step == 19
        c = Ftp(srv.ftp, user="big")
        c.cmd("TYPE I", "200")
        append = rng.random() < 0.5
        for _ in range(50):  # while the reset upload before still holds the path: 450
            r = c.cmd("SIZE chain.bin")
            size = int(r.split()[1]) if r.startswith("213") else 0
            if append:
                verb, start = "APPE", size
            else:
                verb, start = "STOR", rng.randint(0, size)
                c.cmd(f"REST {start}", "350")
            _, d = c.epsv()
            c.send(f"{verb} chain.bin")
            r = c.reply()
            if not r.startswith("450"):
                break
            d.close()
            time.sleep(0.1)
        check(size <= len(data), f"step {step}: SIZE {size}", problems)
        check(r.startswith("150"), f"step {step}: {verb}: {r!r}", problems)
        end = len(data) if last else rng.randint(start, len(data))
        d.sendall(data[start:end])
        if last:
            d.close()
            r = c.reply()
            check(r.startswith("226"), f"the last step: {r!r}", problems)
            c.close()
        else:
            time.sleep(rng.random() * 0.05)
            rst_close(d)
            rst_close(c.s)
            time.sleep(0.05)
        steps.append(f"{verb[0]}{start >> 10}-{end >> 10}")
    check(on_disk(srv, "chain.bin") == md5(data), "chain.bin differs", problems)
    return problems, "KiB ranges " + " ".join(steps[:8]) + " ..."


def edges(srv):
    """A zero-byte STOR; a data connection half-closed by the client
    while it reads on; the data sent before the STOR; APPE onto a stored
    file; REST into a stored file; a reset upload finished by APPE; an
    urgent (out-of-band) byte on the data connection, which TCP keeps out
    of the stream: the bytes after it must land as they do when copied."""
    problems = []
    notes = []
    srv.begin()
    r = stor(srv.ftp, "zero.bin", b"")
    path = os.path.join(srv.home("big"), "zero.bin")
    check(r.startswith("226") and os.path.getsize(path) == 0, f"zero-byte STOR: {r!r}", problems)
    notes.append(f"zero {r[:3]}")
    # Half-closed: the client shuts its sending side and waits for ours.
    data = blob("half", 3 * MIB)
    c, d = begin_upload(srv.ftp, "big", "STOR half.bin")
    d.sendall(data)
    d.shutdown(socket.SHUT_WR)
    r = c.reply()
    d.settimeout(5)
    closed = d.recv(1) == b""
    d.close()
    c.close()
    check(r.startswith("226") and on_disk(srv, "half.bin") == md5(data), f"half-closed: {r!r}", problems)
    check(closed, "the server kept the half-closed data connection", problems)
    notes.append(f"half-close {r[:3]}")
    # The data first, then the STOR.
    data = blob("early", 2 * MIB + 7)
    c = Ftp(srv.ftp, user="big")
    c.cmd("TYPE I", "200")
    _, d = c.epsv()
    threading.Thread(target=lambda: (d.sendall(data), d.close()), daemon=True).start()
    time.sleep(0.3)
    r = c.cmd("STOR early.bin")
    if r.startswith("150"):
        r = c.reply()
    c.close()
    check(r.startswith("226") and on_disk(srv, "early.bin") == md5(data), f"data first: {r!r}", problems)
    notes.append(f"data-first {r[:3]}")
    # APPE onto a stored file, REST into one.
    a, b = blob("a", 2 * MIB + 3), blob("b", 3 * MIB + 5)
    stor(srv.ftp, "ab.bin", a)
    r = stor(srv.ftp, "ab.bin", b, verb="APPE")
    check(r.startswith("226") and on_disk(srv, "ab.bin") == md5(a + b), f"APPE: {r!r}", problems)
    r2 = stor(srv.ftp, "ab.bin", b, rest=1_000_001)
    check(r2.startswith("226") and on_disk(srv, "ab.bin") == md5((a + b)[:1_000_001] + b),
          f"REST into a stored file: {r2!r}", problems)
    notes.append(f"APPE {r[:3]}, REST {r2[:3]}")
    # Reset mid-upload, then curl -C - style: SIZE + APPE.
    data = blob("appe", 5 * MIB)
    c, d = begin_upload(srv.ftp, "big", "STOR appe.bin")
    d.sendall(data[:3 * MIB + 99])
    time.sleep(0.2)
    rst_close(d)
    lost = c.reply()
    size = int(c.cmd("SIZE appe.bin", "213").split()[1])
    r = stor(srv.ftp, "appe.bin", data[size:], verb="APPE", session=c)
    c.close()
    check(r.startswith("226") and on_disk(srv, "appe.bin") == md5(data),
          f"APPE after a reset ({lost[:3]}, SIZE {size}): {r!r}", problems)
    notes.append(f"reset {lost[:3]} + APPE from {size} {r[:3]}")
    # An urgent byte: the bytes around it are the stream, it is not.
    before, after = blob("urg1", 100_000), blob("urg2", 100_000)
    for wait in (0.0, 0.3):
        c, d = begin_upload(srv.ftp, "big", "STOR urgent.bin")
        d.sendall(before)
        d.send(b"!", socket.MSG_OOB)
        time.sleep(wait)
        d.sendall(after)
        d.close()
        r = c.reply()
        c.close()
        got = os.path.getsize(os.path.join(srv.home("big"), "urgent.bin"))
        check(r.startswith("226") and on_disk(srv, "urgent.bin") == md5(before + after),
              f"urgent byte, {wait}s before the rest: {r[:3]}, {got} of {len(before + after)} bytes",
              problems)
        notes.append(f"urgent {r[:3]} {got} B")
    return problems, "; ".join(notes)


ATTACKS = {
    "many-stor": many_stor,
    "drip": drip,
    "kill-random": kill_random,
    "abor-quit-lock-quota": abor_quit_lock_quota,
    "nofile": nofile,
    "nofile-waiting": nofile_waiting,
    "stall": stall,
    "slow-jobs": slow_jobs,
    "resume-chain": resume_chain,
    "edges": edges,
}

OPTIONS = {
    "abor-quit-lock-quota": {"users": [("tiny", TINY_QUOTA)]},
    "nofile": {"wrap": ["prlimit", "--nofile=200:200"]},
    "nofile-waiting": {"wrap": ["prlimit", "--nofile=200:200"]},
    "stall": {"args": ["--idle-timeout", "2s"]},
    "slow-jobs": {"args": ["--idle-timeout", "300ms"]},
}

# Fixtures made before the probe starts.
SETUP = {"slow-jobs": huge_files}


def main():
    print(f"seed {SEED} (SKIFF_SEED={SEED} repeats it)", flush=True)
    ftpattack.run(ATTACKS, SETUP, sys.argv[1:], OPTIONS)


if __name__ == "__main__":
    main()
