//! One swarm connection as a sans-I/O state machine: bytes and `now` in,
//! bytes to send and verdicts (latency samples, errors) out. The reactor
//! owns the socket; tests drive this with plain byte slices.
//!
//! ```text
//!              connected(), --login            ok to login
//!  Connecting ───────────────────▶ LoggingIn ─────────────▶ Running
//!       │        connected(), no login                        │ stop()
//!       └─────────────────────────────────────────────────▶  ▼
//!                                                          Draining
//!  any state ── corrupt stream, wrong id, failed login, EOF ──▶ Closed
//! ```
//!
//! Every reply is checked before it counts: its `id` must be one in
//! flight (replies to everything but `exec` in request order), its `op`
//! the expected one, and its body what was asked for: an echo body is
//! regenerated from the request id and compared byte by byte as it
//! streams past; a `get` body is hashed and compared with `md5`. A wrong
//! answer is counted under its kind in [`Stats::errors`], never as a
//! latency sample.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use hdrhistogram::Histogram;
use md5::{Digest, Md5};
use skiff::frame::{Decoded, Decoder, Header, HeaderWriter};

use super::mix::{Mix, Op};

/// Largest reply body accepted; above it the stream is treated as corrupt.
/// Echo bodies are at most 16 MiB; files fetched by `get` may be larger.
const MAX_BODY: u64 = 1 << 40;
/// Output queued beyond this stops new requests until the socket drains.
const OUT_HIGH: usize = 64 * 1024;
/// Buffers that grew past this are freed once empty, so that 100,000 idle
/// connections hold almost nothing.
const KEEP_CAPACITY: usize = 4096;

/// What a run has measured so far; shared by all connections.
pub struct Stats {
    /// Requests answered correctly.
    pub ok: u64,
    /// Requests answered at all, rightly or wrongly (server work done).
    pub answered: u64,
    /// Latency of correct answers, in µs, from the intended send time.
    pub latency: Histogram<u64>,
    /// The same, for each op of the mix by its index (see `Mix::pick`):
    /// a slow `get` hides in the overall figures when echoes dominate.
    pub latency_by_op: Vec<Histogram<u64>>,
    /// Connect time (socket created to connected), in µs.
    pub connect: Histogram<u64>,
    /// TLS handshake time (connected to handshake done), in µs.
    pub handshake: Histogram<u64>,
    /// Errors by kind: a server error code, or one of the swarm's own
    /// kinds (`wrong_id`, `bad_body`, `closed`, `unanswered`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty statistics; histograms cover 1 µs to 1 hour at 3 digits.
    pub fn new() -> Stats {
        Stats {
            ok: 0,
            answered: 0,
            latency: latency_histogram(),
            latency_by_op: Vec::new(),
            connect: latency_histogram(),
            handshake: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }

    /// Counts `n` errors of `kind`.
    pub fn error_n(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        // get_mut first: the common repeat of a kind allocates nothing
        match self.errors.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                self.errors.insert(kind.to_string(), n);
            }
        }
    }

    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        self.error_n(kind, 1);
    }

    /// All errors counted.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Records a correct answer to a request of the mix's op `op`.
    fn sample(&mut self, op: usize, intended: Instant, now: Instant) {
        let us = now.saturating_duration_since(intended).as_micros();
        let us = u64::try_from(us).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(us);
        if self.latency_by_op.len() <= op {
            self.latency_by_op.resize_with(op + 1, latency_histogram);
        }
        self.latency_by_op[op].saturating_record(us);
        self.ok += 1;
    }
}

/// A histogram of µs from 1 µs to 1 hour, at 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The non-blocking connect has not completed.
    Connecting,
    /// The login request is in flight; no load yet.
    LoggingIn,
    /// Sending load.
    Running,
    /// The run is over: no new requests, waiting for the ones in flight.
    Draining,
    /// Done, by the end of the run or a fatal error: the reactor closes it.
    Closed,
}

/// What a request in flight expects back.
#[derive(Debug)]
enum Expect {
    /// `ok` with no body.
    Login,
    /// `ok` + exactly this many bytes of the id's pattern.
    Echo(u64),
    /// `ok` + a body whose MD5 is the reply's `md5`.
    Get,
    /// Any `out`/`err` frames, then `exit` with code 0.
    Exec,
}

/// A request sent and not yet fully answered.
#[derive(Debug)]
struct Pending {
    /// The request id.
    id: u64,
    /// When it should have been sent: latency counts from here.
    intended: Instant,
    /// Index of its op in the mix (0 for the login, which is no sample).
    op: usize,
    /// What a correct answer looks like.
    expect: Expect,
}

/// What to do with the body of the frame being received.
enum Rx {
    /// Between frames.
    Idle,
    /// Swallow the body (pushed messages, exec output, error frames).
    Skip,
    /// Compare with the echo pattern of `id`.
    Echo {
        /// Request id: the pattern's seed.
        id: u64,
        /// Body bytes seen so far.
        offset: u64,
        /// First wrong byte seen (the body is still consumed).
        bad: bool,
    },
    /// Hash for comparison with the announced MD5.
    Get {
        /// Running hash of the body.
        md5: Box<Md5>,
        /// The reply's `md5`, lower-case hex; `None` if it was missing.
        want: Option<String>,
    },
}

/// What the frame being received will settle when it ends.
enum Settle {
    /// Nothing (pushed messages, exec output).
    Nothing,
    /// The request `id` is answered correctly (pending body checks).
    Ok(u64),
    /// The login succeeded.
    LoggedIn,
    /// The request `id` is answered wrongly, with this error kind.
    Fail(u64, String),
}

/// One connection's protocol engine.
pub struct Conn {
    /// Where the connection is in its life.
    phase: Phase,
    /// The frame decoder over the reply stream.
    decoder: Decoder,
    /// A frame head split across reads, kept until it is whole (empty and
    /// unallocated almost always).
    head: Vec<u8>,
    /// Bytes for the socket; `out[out_pos..]` are still unsent.
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    out_pos: usize,
    /// Requests sent and not yet answered, in sending order.
    inflight: VecDeque<Pending>,
    /// The id of the next request.
    next_id: u64,
    /// The body handling of the frame being received.
    rx: Rx,
    /// The verdict of the frame being received.
    settle: Settle,
    /// xorshift state for picking ops from the mix.
    rng: u64,
}

/// Body byte `pos` of the echo request `id`: distinct for neighbouring ids
/// and cheap enough to check every byte of a 16 MiB body.
#[cfg(test)]
fn pattern_byte(id: u64, pos: u64) -> u8 {
    pattern_at(splitmix(id), pos)
}

fn pattern_at(seed: u64, pos: u64) -> u8 {
    ((seed >> ((pos % 8) * 8)) as u8) ^ ((pos / 8) as u8)
}

/// The 8 pattern bytes at offsets `8 * block ..`: the same bytes
/// [`pattern_at`] gives one by one, as one word.
fn pattern_block(seed: u64, block: u64) -> u64 {
    seed ^ (0x0101_0101_0101_0101 * u64::from(block as u8))
}

/// Splits a body piece at offset `start` into a head before the first
/// 8-byte boundary, whole 8-byte blocks, and a tail.
fn pattern_split(start: u64, len: usize) -> (usize, usize) {
    let head = ((8 - start % 8) % 8).min(len as u64) as usize;
    let blocks = (len - head) / 8 * 8;
    (head, head + blocks)
}

/// Fills `out` with the pattern of `id` from body offset `start`. Word
/// at a time: the swarm's own CPU is part of what it measures, and bodies
/// go up to 16 MiB.
fn pattern_fill(id: u64, start: u64, out: &mut [u8]) {
    let seed = splitmix(id);
    let (head, tail) = pattern_split(start, out.len());
    for (i, b) in out[..head].iter_mut().enumerate() {
        *b = pattern_at(seed, start + i as u64);
    }
    let first = (start + head as u64) / 8;
    for (j, chunk) in out[head..tail].chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_block(seed, first + j as u64).to_le_bytes());
    }
    for (i, b) in out[tail..].iter_mut().enumerate() {
        *b = pattern_at(seed, start + (tail + i) as u64);
    }
}

/// True if `bytes` are the pattern of `id` from body offset `start`.
fn pattern_matches(id: u64, start: u64, bytes: &[u8]) -> bool {
    let seed = splitmix(id);
    let (head, tail) = pattern_split(start, bytes.len());
    let first = (start + head as u64) / 8;
    bytes[..head]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_at(seed, start + i as u64))
        && bytes[head..tail].chunks_exact(8).enumerate().all(|(j, c)| {
            u64::from_le_bytes(c.try_into().expect("8 bytes"))
                == pattern_block(seed, first + j as u64)
        })
        && bytes[tail..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_at(seed, start + (tail + i) as u64))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Conn {
    /// A connection whose connect is under way; `seed` varies the op picks
    /// between connections.
    pub fn new(seed: u64) -> Conn {
        Conn {
            phase: Phase::Connecting,
            decoder: Decoder::new(MAX_BODY),
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            inflight: VecDeque::new(),
            next_id: 1,
            rx: Rx::Idle,
            settle: Settle::Nothing,
            rng: splitmix(seed) | 1,
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Requests in flight.
    #[cfg(test)]
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The one place the phase changes, so the legal moves are checked
    /// in one spot (in debug builds: tests).
    fn set_phase(&mut self, to: Phase) {
        use Phase::*;
        debug_assert!(
            matches!(
                (self.phase, to),
                (Connecting, LoggingIn | Running | Closed)
                    | (LoggingIn, Running | Draining | Closed)
                    | (Running, Draining | Closed)
                    | (Draining, Closed)
            ) || self.phase == to,
            "swarm conn: {:?} -> {to:?} is not a move",
            self.phase
        );
        self.phase = to;
    }

    /// The connect completed. With `login` (user, password) the login
    /// request goes first and load waits for its `ok`.
    pub fn connected(&mut self, login: Option<(&str, &str)>, now: Instant) {
        if self.phase != Phase::Connecting {
            return;
        }
        match login {
            Some((user, password)) => {
                let id = self.take_id();
                HeaderWriter::new(&mut self.out, "login")
                    .field("id", id)
                    .field("user", user)
                    .field("password", password)
                    .finish();
                self.inflight.push_back(Pending {
                    id,
                    intended: now,
                    op: 0,
                    expect: Expect::Login,
                });
                self.set_phase(Phase::LoggingIn);
            }
            None => self.set_phase(Phase::Running),
        }
    }

    /// True if a new request may be queued now: running, fewer than
    /// `pipeline` in flight, and the output below its high-water mark.
    pub fn can_send(&self, pipeline: usize) -> bool {
        self.phase == Phase::Running
            && self.inflight.len() < pipeline
            && self.out.len() - self.out_pos < OUT_HIGH
    }

    /// Queues one request picked from `mix`, intended to go out at
    /// `intended` (now, in a closed loop; its slot in the schedule, in an
    /// open loop).
    pub fn send_one(&mut self, mix: &Mix, intended: Instant) {
        // xorshift64: op picks need to be spread, not unpredictable
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (op_index, op) = mix.pick(self.rng);
        let id = self.take_id();
        let expect = match op {
            Op::Echo(size) => {
                HeaderWriter::new(&mut self.out, "echo")
                    .field("id", id)
                    .field("size", size)
                    .finish();
                let start = self.out.len();
                self.out.resize(start + *size as usize, 0);
                pattern_fill(id, 0, &mut self.out[start..]);
                Expect::Echo(*size)
            }
            Op::Get(path) => {
                HeaderWriter::new(&mut self.out, "get")
                    .field("id", id)
                    .field("path", path)
                    .finish();
                Expect::Get
            }
            Op::Exec(cmd) => {
                HeaderWriter::new(&mut self.out, "exec")
                    .field("id", id)
                    .field("cmd", cmd)
                    .finish();
                Expect::Exec
            }
        };
        self.inflight.push_back(Pending {
            id,
            intended,
            op: op_index,
            expect,
        });
    }

    /// Closed loop: tops the connection up to `pipeline` requests in flight.
    pub fn fill(&mut self, mix: &Mix, pipeline: usize, now: Instant) {
        while self.can_send(pipeline) {
            self.send_one(mix, now);
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Bytes waiting for the socket.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// The socket took `n` bytes of [`Conn::output`].
    pub fn consumed(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out_pos = 0;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
    }

    /// The run is over: send nothing new; close once nothing is in flight.
    pub fn stop(&mut self) {
        match self.phase {
            Phase::Connecting => self.set_phase(Phase::Closed),
            Phase::LoggingIn | Phase::Running | Phase::Draining => {
                self.set_phase(if self.inflight.is_empty() {
                    Phase::Closed
                } else {
                    Phase::Draining
                });
            }
            Phase::Closed => {}
        }
    }

    /// The drain time is up: whatever is still in flight was never
    /// answered.
    pub fn abandon(&mut self, stats: &mut Stats) {
        stats.error_n("unanswered", self.inflight.len() as u64);
        self.inflight.clear();
        self.set_phase(Phase::Closed);
    }

    /// The server closed the connection (or it broke): requests in flight
    /// are lost, and a connection lost while running is an error itself.
    pub fn closed_by_peer(&mut self, stats: &mut Stats) {
        if self.phase == Phase::Closed {
            return;
        }
        let lost = self.inflight.len() as u64;
        if lost > 0 || self.phase != Phase::Draining {
            stats.error_n("closed", lost.max(1));
        }
        self.inflight.clear();
        self.set_phase(Phase::Closed);
    }

    /// Feeds bytes read from the socket, settling every reply they
    /// complete. After a fatal error the connection is
    /// [`Phase::Closed`] and the rest of the input is ignored.
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant, stats: &mut Stats) {
        while !input.is_empty() && self.phase != Phase::Closed {
            if !self.head.is_empty() {
                // a frame head straddles reads: gather exactly its bytes
                // (never a body) in `head`, then decode it from there; a
                // bad length prefix fails as soon as its 4 bytes are in
                let need = self.decoder.needed(&self.head);
                let take = need.saturating_sub(self.head.len()).min(input.len());
                self.head.extend_from_slice(&input[..take]);
                input = &input[take..];
                let head = std::mem::take(&mut self.head);
                match self.decoder.decode(&head) {
                    Ok(None) => {
                        self.head = head;
                        continue;
                    }
                    Ok(Some((used, Decoded::Header(h)))) => {
                        debug_assert_eq!(used, head.len());
                        self.on_header(h, stats);
                    }
                    Ok(Some(_)) => unreachable!("between frames the decoder yields headers"),
                    Err(_) => self.corrupt(stats),
                }
                if head.capacity() <= KEEP_CAPACITY {
                    self.head = head;
                    self.head.clear();
                }
                continue;
            }
            match self.decoder.decode(input) {
                Ok(Some((used, what))) => {
                    input = &input[used..];
                    match what {
                        Decoded::Header(h) => self.on_header(h, stats),
                        Decoded::Body(b) => self.on_body(b),
                        Decoded::End => self.on_end(now, stats),
                    }
                }
                Ok(None) => {
                    // only a partial head says "need more"; keep it
                    self.head.extend_from_slice(input);
                    input = &[];
                }
                Err(_) => self.corrupt(stats),
            }
        }
        // A body of 0 bytes ends without needing input: settle it now so
        // the pipeline refills without waiting for the next read.
        while self.phase != Phase::Closed
            && !self.decoder.at_boundary()
            && self.decoder.body_remaining() == 0
        {
            match self.decoder.decode(&[]) {
                Ok(Some((_, Decoded::End))) => self.on_end(now, stats),
                _ => break,
            }
        }
    }

    /// The reply stream broke framing. Only the kind is counted: the
    /// detail differs per connection and would flood the error table.
    fn corrupt(&mut self, stats: &mut Stats) {
        self.fatal("bad_frame", stats);
    }

    /// Counts `kind` once, plus every other request in flight as
    /// `unanswered`, and closes: the stream can no longer be trusted.
    fn fatal(&mut self, kind: &str, stats: &mut Stats) {
        stats.error(kind);
        let rest = self.inflight.len() as u64;
        stats.error_n("unanswered", rest.saturating_sub(1));
        self.inflight.clear();
        self.rx = Rx::Idle;
        self.settle = Settle::Nothing;
        self.set_phase(Phase::Closed);
    }

    fn on_header(&mut self, h: Header, stats: &mut Stats) {
        self.rx = Rx::Skip;
        self.settle = Settle::Nothing;
        let id = h.id.as_ref().and_then(|n| n.as_u64());
        if h.op == "msg" && id.is_none() {
            return; // pushed by `say`: not ours to judge
        }
        let Some(id) = id else {
            // an error without id (bad_frame before closing, say)
            if h.op == "error" {
                let code = h.str("code").unwrap_or("error").to_string();
                self.fatal(&code, stats);
            } else {
                self.fatal("wrong_id", stats);
            }
            return;
        };
        let Some(pos) = self.inflight.iter().position(|p| p.id == id) else {
            self.fatal("wrong_id", stats);
            return;
        };
        let p = &self.inflight[pos];
        // Replies to everything but exec come in request order; exec
        // frames may come between them.
        let is_stream = matches!(p.expect, Expect::Exec);
        let skipped_non_stream = self
            .inflight
            .iter()
            .take(pos)
            .any(|q| !matches!(q.expect, Expect::Exec));
        if !is_stream && skipped_non_stream {
            self.settle = Settle::Fail(id, "out_of_order".into());
            return;
        }
        if h.op == "error" {
            let code = h.str("code").unwrap_or("error");
            if matches!(p.expect, Expect::Login) {
                self.fatal(&format!("login_{code}"), stats);
                return;
            }
            self.settle = Settle::Fail(id, code.to_string());
            return;
        }
        self.settle = match (&p.expect, h.op.as_str()) {
            (Expect::Login, "ok") => Settle::LoggedIn,
            (Expect::Echo(n), "ok") if h.size == *n => {
                self.rx = Rx::Echo {
                    id,
                    offset: 0,
                    bad: false,
                };
                Settle::Ok(id)
            }
            (Expect::Echo(_), "ok") => Settle::Fail(id, "bad_size".into()),
            (Expect::Get, "ok") => {
                self.rx = Rx::Get {
                    md5: Box::new(Md5::new()),
                    want: h.str("md5").map(str::to_ascii_lowercase),
                };
                Settle::Ok(id)
            }
            (Expect::Exec, "out" | "err") => Settle::Nothing,
            (Expect::Exec, "exit") => match (h.fields.get("code").and_then(|c| c.as_i64()), h.size)
            {
                (Some(0), 0) => Settle::Ok(id),
                _ => Settle::Fail(id, "exec_failed".into()),
            },
            _ => Settle::Fail(id, "wrong_op".into()),
        };
    }

    fn on_body(&mut self, body: &[u8]) {
        match &mut self.rx {
            Rx::Idle | Rx::Skip => {}
            Rx::Echo { id, offset, bad } => {
                if !*bad {
                    let (id, start) = (*id, *offset);
                    *bad = !pattern_matches(id, start, body);
                }
                *offset += body.len() as u64;
            }
            Rx::Get { md5, .. } => md5.update(body),
        }
    }

    fn on_end(&mut self, now: Instant, stats: &mut Stats) {
        let rx = std::mem::replace(&mut self.rx, Rx::Idle);
        let settle = std::mem::replace(&mut self.settle, Settle::Nothing);
        let verdict = match settle {
            Settle::Nothing => return,
            Settle::LoggedIn => {
                self.inflight.retain(|p| !matches!(p.expect, Expect::Login));
                if self.phase == Phase::LoggingIn {
                    self.set_phase(Phase::Running);
                } else if self.phase == Phase::Draining && self.inflight.is_empty() {
                    self.set_phase(Phase::Closed);
                }
                return;
            }
            Settle::Fail(id, kind) => (id, Err(kind)),
            Settle::Ok(id) => match rx {
                Rx::Echo { bad: true, .. } => (id, Err("bad_body".to_string())),
                Rx::Get { md5, want } => {
                    let got = hex(&md5.finalize());
                    if want.as_deref() == Some(got.as_str()) {
                        (id, Ok(()))
                    } else {
                        (id, Err("bad_md5".to_string()))
                    }
                }
                _ => (id, Ok(())),
            },
        };
        let (id, result) = verdict;
        let Some(pos) = self.inflight.iter().position(|p| p.id == id) else {
            return;
        };
        let p = self.inflight.remove(pos).expect("position is in range");
        stats.answered += 1;
        match result {
            Ok(()) => stats.sample(p.op, p.intended, now),
            Err(kind) => stats.error(&kind),
        }
        if self.phase == Phase::Draining && self.inflight.is_empty() {
            self.set_phase(Phase::Closed);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;
    use serde_json::json;
    use std::time::Duration;
    use testkit::{frame_bytes, seeded_rng};

    fn echo_body(id: u64, n: u64) -> Vec<u8> {
        (0..n).map(|i| pattern_byte(id, i)).collect()
    }

    /// Parses everything a connection has queued into (header, body) pairs.
    fn sent(conn: &mut Conn) -> Vec<(Header, Vec<u8>)> {
        let bytes = conn.output().to_vec();
        conn.consumed(bytes.len());
        let mut d = Decoder::new(1 << 30);
        let mut rest = &bytes[..];
        let mut frames: Vec<(Header, Vec<u8>)> = Vec::new();
        while let Some((n, what)) = d.decode(rest).unwrap() {
            rest = &rest[n..];
            match what {
                Decoded::Header(h) => frames.push((h, Vec::new())),
                Decoded::Body(b) => frames.last_mut().unwrap().1.extend_from_slice(b),
                Decoded::End => {}
            }
        }
        assert!(rest.is_empty());
        frames
    }

    fn running(mix: &str, pipeline: usize) -> (Conn, Mix, Instant) {
        let mix = Mix::parse(mix).unwrap();
        let mut c = Conn::new(1);
        let t0 = Instant::now();
        c.connected(None, t0);
        assert_eq!(c.phase(), Phase::Running);
        c.fill(&mix, pipeline, t0);
        (c, mix, t0)
    }

    /// The server's correct answers to everything sent.
    fn answers(frames: &[(Header, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (h, body) in frames {
            let id = h.id.clone().unwrap();
            out.extend(frame_bytes(json!({"op":"ok","id":id}), body));
        }
        out
    }

    #[test]
    fn pattern_pieces_agree_with_the_whole() {
        let whole: Vec<u8> = (0..4200).map(|i| pattern_byte(42, i)).collect();
        for start in 0..20 {
            for len in [0, 1, 7, 8, 9, 37, 4100] {
                let mut piece = vec![0u8; len];
                pattern_fill(42, start, &mut piece);
                let s = start as usize;
                assert_eq!(&piece[..], &whole[s..s + len], "{start}+{len}");
                assert!(pattern_matches(42, start, &piece));
                for wrong in 0..len {
                    let mut bad = piece.clone();
                    bad[wrong] ^= 0x80;
                    assert!(!pattern_matches(42, start, &bad), "{start}+{len} @{wrong}");
                }
            }
        }
        let mut piece = [0u8; 37];
        pattern_fill(42, 13, &mut piece);
        assert!(!pattern_matches(43, 13, &piece));
        assert!(!pattern_matches(42, 14, &piece));
    }

    #[test]
    fn echo_requests_carry_distinct_patterns() {
        let (mut c, _, _) = running("echo:64", 3);
        let reqs = sent(&mut c);
        assert_eq!(reqs.len(), 3);
        for (h, body) in &reqs {
            assert_eq!(h.op, "echo");
            let id = h.id.as_ref().unwrap().as_u64().unwrap();
            assert_eq!(body, &echo_body(id, 64));
        }
        assert_ne!(reqs[0].1, reqs[1].1);
        assert_eq!(c.inflight(), 3);
        assert!(!c.can_send(3));
    }

    #[test]
    fn replies_split_at_every_byte_are_accepted() {
        let (c0, mix, t0) = running("echo:40", 2);
        let mut c0 = c0;
        let reqs = sent(&mut c0);
        let input = answers(&reqs);
        for split in 0..=input.len() {
            let (mut c, _, t) = running("echo:40", 2);
            sent(&mut c);
            let mut stats = Stats::new();
            let later = t + Duration::from_millis(3);
            c.handle_input(&input[..split], later, &mut stats);
            c.handle_input(&input[split..], later, &mut stats);
            assert_eq!(stats.ok, 2, "split at {split}");
            assert!(
                stats.errors.is_empty(),
                "split at {split}: {:?}",
                stats.errors
            );
            assert_eq!(c.inflight(), 0);
            assert!(stats.latency.max() >= 3000);
        }
        // and one byte at a time
        let (mut c, _, _) = running("echo:40", 2);
        sent(&mut c);
        let mut stats = Stats::new();
        for b in &input {
            c.handle_input(std::slice::from_ref(b), t0, &mut stats);
        }
        assert_eq!((stats.ok, stats.error_total()), (2, 0));
        c.fill(&mix, 2, t0);
        assert_eq!(c.inflight(), 2, "the pipeline refills");
    }

    #[test]
    fn pipelined_replies_in_one_read() {
        let (mut c, mix, t0) = running("echo:0=1,echo:300=1", 50);
        let reqs = sent(&mut c);
        assert_eq!(reqs.len(), 50);
        let mut stats = Stats::new();
        c.handle_input(&answers(&reqs), t0, &mut stats);
        assert_eq!((stats.ok, stats.error_total()), (50, 0));
        c.fill(&mix, 50, t0);
        assert_eq!(c.inflight(), 50);
    }

    #[test]
    fn random_chunks_of_a_long_mixed_pipeline() {
        let mut rng = seeded_rng("random_chunks_of_a_long_mixed_pipeline");
        for round in 0..20 {
            let (mut c, mix, t0) = running("echo:0=1,echo:7=2,echo:3000=1,echo:9K=1", 20);
            let mut stats = Stats::new();
            let mut total = 0;
            for _ in 0..5 {
                let input = answers(&sent(&mut c));
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let n = rng.random_range(1..=7000).min(rest.len());
                    c.handle_input(&rest[..n], t0, &mut stats);
                    rest = &rest[n..];
                }
                total += 20;
                assert_eq!(stats.ok, total, "round {round}: {:?}", stats.errors);
                c.fill(&mix, 20, t0);
            }
        }
    }

    #[test]
    fn short_writes_resume_where_they_stopped() {
        let (mut c, _, _) = running("echo:100", 3);
        let whole = c.output().to_vec();
        let mut written = Vec::new();
        while !c.output().is_empty() {
            let n = c.output().len().min(7);
            written.extend_from_slice(&c.output()[..n]);
            c.consumed(n);
        }
        assert_eq!(written, whole);
    }

    #[test]
    fn a_wrong_echo_body_is_an_error_not_a_sample() {
        let (mut c, _, t0) = running("echo:64", 2);
        let reqs = sent(&mut c);
        let mut input = Vec::new();
        let mut wrong = reqs[0].1.clone();
        wrong[63] ^= 1;
        input.extend(frame_bytes(json!({"op":"ok","id":reqs[0].0.id}), &wrong));
        input.extend(frame_bytes(
            json!({"op":"ok","id":reqs[1].0.id}),
            &reqs[1].1,
        ));
        let mut stats = Stats::new();
        c.handle_input(&input, t0, &mut stats);
        assert_eq!(stats.ok, 1);
        assert_eq!(stats.answered, 2);
        assert_eq!(stats.errors.get("bad_body"), Some(&1));
        assert_eq!(stats.latency.len(), 1);
        assert_eq!(
            c.phase(),
            Phase::Running,
            "a wrong body does not break framing"
        );
    }

    #[test]
    fn another_requests_body_is_wrong_too() {
        let (mut c, _, t0) = running("echo:64", 2);
        let reqs = sent(&mut c);
        // the server swapped the bodies of two requests
        let mut input = frame_bytes(json!({"op":"ok","id":reqs[0].0.id}), &reqs[1].1);
        input.extend(frame_bytes(
            json!({"op":"ok","id":reqs[1].0.id}),
            &reqs[0].1,
        ));
        let mut stats = Stats::new();
        c.handle_input(&input, t0, &mut stats);
        assert_eq!((stats.ok, stats.errors.get("bad_body")), (0, Some(&2)));
    }

    #[test]
    fn a_wrong_id_is_an_error_and_closes() {
        let (mut c, _, t0) = running("echo:8", 3);
        let reqs = sent(&mut c);
        let mut stats = Stats::new();
        c.handle_input(
            &frame_bytes(json!({"op":"ok","id":999}), &reqs[0].1),
            t0,
            &mut stats,
        );
        assert_eq!(stats.ok, 0);
        assert_eq!(stats.errors.get("wrong_id"), Some(&1));
        assert_eq!(stats.errors.get("unanswered"), Some(&2));
        assert_eq!(c.phase(), Phase::Closed);
    }

    #[test]
    fn replies_out_of_order_and_wrong_sizes_are_errors() {
        let (mut c, _, t0) = running("echo:8", 2);
        let reqs = sent(&mut c);
        let mut stats = Stats::new();
        c.handle_input(&answers(&reqs[1..]), t0, &mut stats);
        assert_eq!(stats.errors.get("out_of_order"), Some(&1));
        let short = &reqs[0].1[..4];
        c.handle_input(
            &frame_bytes(json!({"op":"ok","id":reqs[0].0.id}), short),
            t0,
            &mut stats,
        );
        assert_eq!(stats.errors.get("bad_size"), Some(&1));
        assert_eq!(stats.ok, 0);
    }

    #[test]
    fn server_errors_are_counted_by_code() {
        let (mut c, _, t0) = running("echo:8", 2);
        let reqs = sent(&mut c);
        let mut stats = Stats::new();
        let busy = json!({"op":"error","id":reqs[0].0.id,"code":"too_busy","message":"later"});
        let mut input = frame_bytes(busy, b"");
        input.extend(frame_bytes(
            json!({"op":"ok","id":reqs[1].0.id}),
            &reqs[1].1,
        ));
        c.handle_input(&input, t0, &mut stats);
        assert_eq!((stats.ok, stats.errors.get("too_busy")), (1, Some(&1)));
        assert_eq!(c.phase(), Phase::Running);
        // a bad_frame without id comes just before the server closes
        c.fill(&Mix::parse("echo:8").unwrap(), 2, t0);
        c.handle_input(
            &frame_bytes(json!({"op":"error","code":"bad_frame","message":"x"}), b""),
            t0,
            &mut stats,
        );
        assert_eq!(stats.errors.get("bad_frame"), Some(&1));
        assert_eq!(c.phase(), Phase::Closed);
    }

    #[test]
    fn a_corrupt_stream_closes() {
        let (mut c, _, t0) = running("echo:8", 1);
        let mut stats = Stats::new();
        c.handle_input(&[0, 0, 0, 0, 1], t0, &mut stats);
        assert_eq!(stats.errors.get("bad_frame"), Some(&1));
        assert_eq!(c.phase(), Phase::Closed);
    }

    #[test]
    fn an_oversized_prefix_split_across_reads_fails_without_buffering() {
        let (mut c, _, t0) = running("echo:8", 1);
        let mut stats = Stats::new();
        c.handle_input(&[0, 2], t0, &mut stats);
        assert_eq!(c.phase(), Phase::Running);
        c.handle_input(&[0, 1, b'{'], t0, &mut stats);
        assert_eq!(stats.errors.get("bad_frame"), Some(&1));
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c.head.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn pushed_messages_are_skipped() {
        let (mut c, _, t0) = running("echo:8", 1);
        let reqs = sent(&mut c);
        let mut input = frame_bytes(json!({"op":"msg","from":"ann"}), b"hi there");
        input.extend(answers(&reqs));
        let mut stats = Stats::new();
        c.handle_input(&input, t0, &mut stats);
        assert_eq!((stats.ok, stats.error_total()), (1, 0));
    }

    #[test]
    fn login_comes_first_and_gates_the_load() {
        let mix = Mix::parse("echo:8").unwrap();
        let mut c = Conn::new(7);
        let t0 = Instant::now();
        c.connected(Some(("ann", "pw")), t0);
        assert_eq!(c.phase(), Phase::LoggingIn);
        c.fill(&mix, 4, t0);
        let login = sent(&mut c);
        assert_eq!(login.len(), 1, "nothing but the login before its ok");
        assert_eq!(login[0].0.op, "login");
        assert_eq!(login[0].0.str("user"), Some("ann"));
        assert_eq!(login[0].0.str("password"), Some("pw"));
        let mut stats = Stats::new();
        let ok = json!({"op":"ok","id":login[0].0.id,"user":"ann","cwd":"/"});
        c.handle_input(&frame_bytes(ok, b""), t0, &mut stats);
        assert_eq!(c.phase(), Phase::Running);
        assert_eq!(stats.ok, 0, "a login is not a load sample");
        c.fill(&mix, 4, t0);
        assert_eq!(sent(&mut c).len(), 4);

        let mut c = Conn::new(8);
        c.connected(Some(("ann", "bad")), t0);
        let login = sent(&mut c);
        let no = json!({"op":"error","id":login[0].0.id,"code":"auth_failed","message":"no"});
        c.handle_input(&frame_bytes(no, b""), t0, &mut stats);
        assert_eq!(stats.errors.get("login_auth_failed"), Some(&1));
        assert_eq!(c.phase(), Phase::Closed);
    }

    #[test]
    fn get_bodies_are_checked_against_md5() {
        let (mut c, _, t0) = running("get:/f", 2);
        let reqs = sent(&mut c);
        assert_eq!(reqs[0].0.str("path"), Some("/f"));
        let data = b"file contents";
        let md5 = hex(&Md5::digest(data));
        let mut stats = Stats::new();
        let mut input = frame_bytes(
            json!({"op":"ok","id":reqs[0].0.id,"length":13,"md5":md5,"offset":0}),
            data,
        );
        input.extend(frame_bytes(
            json!({"op":"ok","id":reqs[1].0.id,"length":13,"md5":md5,"offset":0}),
            b"file contentz",
        ));
        for b in &input {
            c.handle_input(std::slice::from_ref(b), t0, &mut stats);
        }
        assert_eq!((stats.ok, stats.errors.get("bad_md5")), (1, Some(&1)));
    }

    #[test]
    fn exec_streams_interleave_with_other_replies() {
        let (mut c, _, t0) = running("exec:true=1,echo:4=1", 6);
        let reqs = sent(&mut c);
        let mut input = Vec::new();
        // exec output first, then all non-exec replies in order, then exits
        for (h, _) in reqs.iter().filter(|r| r.0.op == "exec") {
            input.extend(frame_bytes(json!({"op":"out","id":h.id}), b"x\n"));
            input.extend(frame_bytes(json!({"op":"err","id":h.id}), b""));
        }
        let echoes: Vec<_> = reqs.iter().filter(|r| r.0.op == "echo").cloned().collect();
        input.extend(answers(&echoes));
        for (h, _) in reqs.iter().filter(|r| r.0.op == "exec") {
            input.extend(frame_bytes(
                json!({"op":"exit","id":h.id,"code":0,"signal":null}),
                b"",
            ));
        }
        let mut stats = Stats::new();
        c.handle_input(&input, t0, &mut stats);
        assert_eq!(
            (stats.ok, stats.error_total()),
            (6, 0),
            "{:?}",
            stats.errors
        );

        let (mut c, _, t0) = running("exec:false", 1);
        let reqs = sent(&mut c);
        let exit = json!({"op":"exit","id":reqs[0].0.id,"code":1,"signal":null});
        c.handle_input(&frame_bytes(exit, b""), t0, &mut stats);
        assert_eq!(stats.errors.get("exec_failed"), Some(&1));
    }

    #[test]
    fn draining_closes_when_the_last_reply_lands() {
        let (mut c, _, t0) = running("echo:8", 2);
        let reqs = sent(&mut c);
        c.stop();
        assert_eq!(c.phase(), Phase::Draining);
        assert!(!c.can_send(2));
        let mut stats = Stats::new();
        c.handle_input(&answers(&reqs), t0, &mut stats);
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!((stats.ok, stats.error_total()), (2, 0));

        let (mut c, _, _) = running("echo:8", 3);
        c.stop();
        c.abandon(&mut stats);
        assert_eq!(stats.errors.get("unanswered"), Some(&3));
        let (mut c, _, _) = running("echo:8", 2);
        c.closed_by_peer(&mut stats);
        assert_eq!(stats.errors.get("closed"), Some(&2));
    }

    #[test]
    fn idle_connections_hold_no_buffers() {
        // 100,000 connections: about 20 MB of state besides the sockets
        assert!(std::mem::size_of::<Conn>() <= 256);
        let (mut c, mix, t0) = running("echo:16K", 1);
        let reqs = sent(&mut c);
        assert_eq!(
            c.out.capacity(),
            0,
            "a big output buffer is freed once sent"
        );
        let mut stats = Stats::new();
        let input = answers(&reqs);
        // the head split across reads is the only thing buffered
        c.handle_input(&input[..2], t0, &mut stats);
        assert_eq!(c.head.len(), 2);
        c.handle_input(&input[2..], t0, &mut stats);
        assert!(c.head.is_empty());
        assert_eq!(stats.ok, 1);
        c.fill(&mix, 1, t0);
        assert!(c.output().len() > 16384);
    }
}
