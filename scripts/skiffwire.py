"""skiff's wire format for the bench scripts: frames, a login, a reader.

The framing is PROTOCOL.md section 1: a 4-byte big-endian length H
(1..65536), H bytes of a JSON object (the header, with a string `op`),
then exactly header.size bytes of body (absent size means 0). Standard
library only, like the minimal client in PROTOCOL.md section 5.

Every read here is bounded: a header is at most 65536 bytes, a body kept
in memory at most `max_body` bytes (recv), and a body that is dropped is
read in pieces of at most `gulp` bytes (Reader), so a wrong length from
the other side raises instead of allocating gigabytes.

    send(sock, {"op": "echo", "id": 1}, b"hi")   # size filled in
    header, body = recv(sock)
    sock = connect(port); login(sock, "bench", "pw")
    r = Reader(sock); header, size = r.next()    # body read and dropped

The scripts find this module by PYTHONPATH=scripts (set by the shell
scripts) or, for a script in this directory, by Python's own sys.path.
"""

import json
import socket
import struct

MAX_HEADER = 65536
PREFIX = struct.Struct("!I")


class FrameError(ValueError):
    """The other side sent bytes that are not a frame."""


def frame(header, body=b""):
    """The bytes of one frame. `size` is set to len(body) unless the
    header names it: a header given its own size announces a body the
    caller sends separately (a `data` frame whose body goes by sendfile)."""
    if "size" not in header:
        header = dict(header, size=len(body))
    h = json.dumps(header, separators=(",", ":")).encode()
    if not 1 <= len(h) <= MAX_HEADER:
        raise FrameError(f"header of {len(h)} bytes")
    return PREFIX.pack(len(h)) + h + body


def send(sock, header, body=b""):
    """Sends one frame (see frame)."""
    sock.sendall(frame(header, body))


def parse_header(raw):
    """A header's JSON bytes -> (dict, body size), checked as PROTOCOL.md
    section 1 says a receiver must."""
    try:
        h = json.loads(raw)
    except ValueError as e:
        raise FrameError(f"header is not JSON: {e}") from None
    if not isinstance(h, dict) or not isinstance(h.get("op"), str):
        raise FrameError(f"header is not an object with a string op: {raw[:80]!r}")
    size = h.get("size", 0)
    if size is None:
        size = 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FrameError(f"bad size {size!r}")
    return h, size


def header_length(prefix):
    """The H of a 4-byte prefix, checked."""
    (n,) = PREFIX.unpack(prefix)
    if not 1 <= n <= MAX_HEADER:
        raise FrameError(f"header length {n}")
    return n


def recv_exact(sock, n):
    """Exactly n bytes (callers bound n); ConnectionError at EOF."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("the server closed the connection")
        got += k
    return bytes(buf)


def recv_header(sock):
    """The next frame's header and body size; the body is left unread."""
    n = header_length(recv_exact(sock, PREFIX.size))
    return parse_header(recv_exact(sock, n))


def recv(sock, max_body=64 << 20):
    """One whole frame: (header, body). A body over max_body raises:
    read such a frame with recv_header and skip_body, or a Reader."""
    h, size = recv_header(sock)
    if size > max_body:
        raise FrameError(f"a body of {size} bytes (max_body is {max_body})")
    return h, recv_exact(sock, size)


def skip_body(sock, size, gulp=1 << 20):
    """Reads and drops size bytes, gulp bytes at most per read."""
    scratch = memoryview(bytearray(min(size, gulp)))
    while size:
        k = sock.recv_into(scratch, min(size, len(scratch)))
        if not k:
            raise ConnectionError("the server closed the connection")
        size -= k


def connect(port, host="127.0.0.1", timeout=None):
    """A TCP connection with Nagle off; timeout (seconds) bounds every
    later blocking call on it."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def login(sock, user, password, rid=0):
    """Logs in; returns the ok header, raises RuntimeError otherwise."""
    send(sock, {"op": "login", "id": rid, "user": user, "password": password})
    h, _ = recv(sock)
    if h.get("op") != "ok":
        raise RuntimeError(f"login {user}: {h}")
    return h


class Reader:
    """Frames from one socket, read in gulps of up to `gulp` bytes; bodies
    are counted and dropped, never kept. Two ways to use it:

    - blocking: next() returns (header, body size) once the whole frame
      has been read;
    - non-blocking (socket set non-blocking, driven by select): feed()
      reads what is there and appends each header to `frames` as soon as
      the header is complete, before its body has arrived.
    """

    def __init__(self, sock, gulp=1 << 20):
        self.sock, self.gulp = sock, gulp
        self.buf = bytearray()
        self.skip = 0  # body bytes of the newest header still to drop
        self.frames = []
        self.scratch = memoryview(bytearray(gulp))

    def _read(self):
        """One read; False at EOF. Inside a body with nothing buffered,
        reads at most the rest of that body, straight into scratch."""
        if self.skip and not self.buf:
            k = self.sock.recv_into(self.scratch, min(self.skip, self.gulp))
            self.skip -= k
            return k > 0
        chunk = self.sock.recv(self.gulp)
        self.buf += chunk
        return bool(chunk)

    def _parse(self):
        while True:
            if self.skip:
                k = min(self.skip, len(self.buf))
                del self.buf[:k]
                self.skip -= k
                if self.skip:
                    return
            if len(self.buf) < PREFIX.size:
                return
            n = header_length(bytes(self.buf[:PREFIX.size]))
            if len(self.buf) < PREFIX.size + n:
                return
            h, size = parse_header(bytes(self.buf[PREFIX.size:PREFIX.size + n]))
            del self.buf[:PREFIX.size + n]
            self.frames.append(h)
            self.skip = size

    def feed(self):
        """Reads what is there (non-blocking socket); False on EOF/reset."""
        try:
            alive = self._read()
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionError:
            return False
        self._parse()
        return alive

    def next(self):
        """Blocking: the next frame's (header, body size), its body read
        and dropped."""
        while not self.frames:
            self._more()
        h = self.frames.pop(0)
        while self.skip and not self.frames:  # h is the newest: finish its body
            self._more()
        size = h.get("size", 0) or 0
        return h, size

    def _more(self):
        if not self._read():
            raise ConnectionError("the server closed the connection")
        self._parse()
