#!/usr/bin/env python3
"""FTP load for scripts/bench-ftp.sh: the same client against every server.

    ftpload.py idle  HOST PORT USER PASS N        hold N logged-in sessions
    ftpload.py fetch HOST PORT USER PASS C SECS   C clients RETR small files
    ftpload.py list  HOST PORT USER PASS DIR REPS time LIST and MLSD of DIR
    ftpload.py phases HOST PORT USER PASS N       one client, N fetches, timed by step

`idle` logs N sessions in (a few at a time, so a server with a slow
password hash is not judged on its accept queue), prints "ready N" and
holds them until its standard input closes.

`fetch` runs C clients, each logged in once, fetching small-0 .. small-99
in a loop over passive data connections for SECS seconds, and prints
requests per second and the latency quantiles of one whole RETR (PASV,
connect, RETR, read to the end, 226).

`list` prints the median seconds of REPS LISTs and REPS MLSDs of DIR.

`phases` is `fetch` with one client, one RETR after the other, and the
median milliseconds of each step: EPSV to its 229, the data connection's
connect, RETR to its 150, 150 to the data's end, the end to the 226.

Plain asyncio and the FTP replies, nothing else: ftplib is blocking, and
100 threads of it would measure Python, not the server.
"""

import asyncio
import multiprocessing
import statistics
import sys
import time


class Ftp:
    """One control connection, speaking just enough FTP for the bench."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    async def open(self, user, password):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        await self.expect("220")
        await self.cmd(f"USER {user}", "331")
        await self.cmd(f"PASS {password}", "230")
        await self.cmd("TYPE I", "200")

    async def reply(self):
        """One reply; multi-line replies end at "NNN " (RFC 959 4.2)."""
        line = (await self.r.readline()).decode("utf-8", "replace")
        if not line:
            raise ConnectionError("control connection closed")
        code = line[:3]
        if line[3:4] == "-":
            while True:
                more = (await self.r.readline()).decode("utf-8", "replace")
                if not more:
                    raise ConnectionError("closed in a multi-line reply")
                if more.startswith(code + " "):
                    break
        return code, line

    async def expect(self, prefix):
        code, line = await self.reply()
        if not code.startswith(prefix):
            raise RuntimeError(f"expected {prefix}, got {line.strip()}")
        return line

    async def cmd(self, text, prefix):
        self.w.write(text.encode() + b"\r\n")
        await self.w.drain()
        return await self.expect(prefix)

    async def passive(self):
        """EPSV, the mode every client here would pick on loopback."""
        line = await self.cmd("EPSV", "229")
        port = int(line.split("|")[3])
        return await asyncio.open_connection(self.host, port)

    async def transfer(self, command):
        """Runs one data command and returns the bytes that came back."""
        dr, dw = await self.passive()
        self.w.write(command.encode() + b"\r\n")
        await self.w.drain()
        await self.expect("1")
        chunks = []
        while True:
            chunk = await dr.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
        dw.close()
        await self.expect("226")
        return b"".join(chunks)

    async def close(self):
        try:
            await self.cmd("QUIT", "221")
        except (ConnectionError, RuntimeError):
            pass
        self.w.close()


async def idle(host, port, user, password, n):
    sessions = []
    gate = asyncio.Semaphore(8)

    async def one():
        async with gate:
            s = Ftp(host, port)
            await s.open(user, password)
            sessions.append(s)

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"ready {len(sessions)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in sessions:
        s.w.close()


async def fetch_part(host, port, user, password, clients, secs, start_at):
    """One process's share of `fetch`: its latencies and error count."""
    latencies = []
    errors = 0
    sessions = []
    gate = asyncio.Semaphore(8)

    async def login():
        async with gate:
            s = Ftp(host, port)
            await s.open(user, password)
            sessions.append(s)

    # Log everyone in first: the clock measures fetches, not logins.
    await asyncio.gather(*(login() for _ in range(clients)))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + secs

    async def client(i, s):
        nonlocal errors
        k = i
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                await s.transfer(f"RETR small-{k % 100}")
            except (ConnectionError, RuntimeError, OSError) as e:
                errors += 1
                if errors <= 3:
                    print(f"client {i}: {e}", file=sys.stderr)
                continue
            latencies.append(time.monotonic() - t)
            k += 1
        await s.close()

    await asyncio.gather(*(client(i, s) for i, s in enumerate(sessions)))
    return latencies, errors


def fetch_process(args):
    return asyncio.run(fetch_part(*args))


def fetch(host, port, user, password, clients, secs):
    """Spreads the clients over a few processes (one Python process tops
    out near 1,000 fetches a second, below what the servers can do), all
    starting their clocks at the same moment, after every login."""
    procs = min(4, clients)
    start_at = time.time() + 5 + clients * 0.05
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with multiprocessing.Pool(procs) as pool:
        parts = pool.map(
            fetch_process, [(host, port, user, password, n, secs, start_at) for n in shares]
        )
    latencies = sorted(x for part, _ in parts for x in part)
    errors = sum(e for _, e in parts)
    if len(latencies) < 2:
        sys.exit(f"only {len(latencies)} fetches succeeded, {errors} failed")
    q = statistics.quantiles(latencies, n=100)
    print(
        f"requests={len(latencies)} errors={errors} req_per_s={len(latencies) / secs:.0f} "
        f"p50_ms={q[49] * 1000:.2f} p99_ms={q[98] * 1000:.2f}"
    )


async def listing(host, port, user, password, directory, reps):
    s = Ftp(host, port)
    await s.open(user, password)
    for command in ("LIST", "MLSD"):
        times, lines = [], 0
        try:
            for _ in range(reps):
                t = time.monotonic()
                body = await s.transfer(f"{command} {directory}")
                times.append(time.monotonic() - t)
                lines = body.count(b"\n")
        except RuntimeError as e:
            print(f"{command.lower()}=unsupported({e})")
            continue
        print(f"{command.lower()}_s={statistics.median(times):.4f} {command.lower()}_lines={lines}")
    await s.close()


async def phases(host, port, user, password, n):
    s = Ftp(host, port)
    await s.open(user, password)
    steps = {k: [] for k in ("epsv", "connect", "retr_150", "data", "end_226")}
    for i in range(n):
        t0 = time.monotonic()
        line = await s.cmd("EPSV", "229")
        t1 = time.monotonic()
        dr, dw = await asyncio.open_connection(host, int(line.split("|")[3]))
        t2 = time.monotonic()
        s.w.write(f"RETR small-{i % 100}\r\n".encode())
        await s.w.drain()
        await s.expect("1")
        t3 = time.monotonic()
        while await dr.read(65536):
            pass
        dw.close()
        t4 = time.monotonic()
        await s.expect("226")
        t5 = time.monotonic()
        for k, a, b in (("epsv", t0, t1), ("connect", t1, t2), ("retr_150", t2, t3),
                        ("data", t3, t4), ("end_226", t4, t5)):
            steps[k].append((b - a) * 1000)
    await s.close()
    print(" ".join(f"{k}_ms={statistics.median(v):.3f}" for k, v in steps.items()))


def main():
    mode, host, port, user, password = sys.argv[1:6]
    port = int(port)
    if mode == "idle":
        asyncio.run(idle(host, port, user, password, int(sys.argv[6])))
    elif mode == "fetch":
        fetch(host, port, user, password, int(sys.argv[6]), float(sys.argv[7]))
    elif mode == "list":
        asyncio.run(listing(host, port, user, password, sys.argv[6], int(sys.argv[7])))
    elif mode == "phases":
        asyncio.run(phases(host, port, user, password, int(sys.argv[6])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
