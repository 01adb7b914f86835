//! The swarm's mio loop: owns every socket, opens connections on the ramp,
//! hands bytes to each [`Conn`], paces the open-loop schedule and stops
//! the run by itself.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::conn::{Conn, Phase, Stats};
use super::mix::Mix;
use crate::sys;

/// How long requests still in flight at the end may take to come back.
pub const DRAIN: Duration = Duration::from_secs(2);
/// Most connections opened per loop turn, so replies on the connections
/// already up are not starved while thousands connect.
const OPEN_BATCH: usize = 512;
/// One read buffer shared by all connections: a connection only keeps a
/// frame head split across reads.
const READ_BUF: usize = 64 * 1024;

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:PATH`).
    Unix(PathBuf),
}

/// How to show live progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not at all.
    Off,
    /// One line rewritten in place (a terminal).
    Line,
    /// One line per second (a log).
    Lines,
}

/// TLS on every connection: whom to trust, and the server's name.
pub struct Tls {
    /// The client configuration (the certificate pinned before the run).
    pub config: std::sync::Arc<ClientConfig>,
    /// The name (or address) the certificate is checked against.
    pub name: ServerName<'static>,
}

/// Everything the loop needs to know about the run.
pub struct Plan {
    /// Where to connect.
    pub target: Target,
    /// TLS over each connection (`tls://` addresses).
    pub tls: Option<Tls>,
    /// Connections to open.
    pub conns: usize,
    /// How long to send load.
    pub duration: Duration,
    /// Time over which connections (and an open loop's rate) ramp up.
    pub ramp: Duration,
    /// Open loop at this many requests/s in total; `None`: closed loop.
    pub rate: Option<f64>,
    /// Most requests in flight per connection.
    pub pipeline: usize,
    /// What to send.
    pub mix: Mix,
    /// User and password to log in with on each connection.
    pub login: Option<(String, String)>,
    /// Source addresses to bind to, round robin (empty: let the kernel pick).
    pub sources: Vec<Ipv4Addr>,
    /// Live progress on stderr.
    pub progress: Progress,
}

/// What the loop measured.
pub struct Outcome {
    /// Samples and errors.
    pub stats: Stats,
    /// From the first connect to the end of the drain.
    pub elapsed: Duration,
    /// Connections attempted.
    pub opened: usize,
    /// Most connections up at once.
    pub max_up: usize,
    /// Open loop: requests due before the end that never got a free slot
    /// (a backlog: the server fell behind the rate).
    pub unsent: Option<u64>,
}

/// A TCP or Unix stream, registered with the poll.
enum Sock {
    /// TCP.
    Tcp(TcpStream),
    /// Unix.
    Unix(UnixStream),
}

impl Sock {
    /// `Ok(true)` once connected, `Ok(false)` while the connect is under
    /// way, `Err` if it failed.
    fn connect_done(&self) -> io::Result<bool> {
        let (err, peer) = match self {
            Sock::Tcp(s) => (s.take_error(), s.peer_addr().map(drop)),
            Sock::Unix(s) => (s.take_error(), s.peer_addr().map(drop)),
        };
        if let Some(e) = err? {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Sock {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.register(r, t, i),
            Sock::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.reregister(r, t, i),
            Sock::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.deregister(r),
            Sock::Unix(s) => s.deregister(r),
        }
    }
}

/// Opens a socket and starts a non-blocking connect, bound to `source`
/// first if given.
fn open(target: &Target, source: Option<Ipv4Addr>) -> io::Result<Sock> {
    let addr = match target {
        Target::Unix(path) => return UnixStream::connect(path).map(Sock::Unix),
        Target::Tcp(addr) => *addr,
    };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    // small requests must not wait for Nagle's timer
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        sys::bind_address_no_port(&sock)?;
        sock.bind(&SocketAddr::from((ip, 0)).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(Sock::Tcp(TcpStream::from_std(std::net::TcpStream::from(
        sock,
    ))))
}

/// The error kind a failed connect is counted under.
fn connect_kind(e: &io::Error) -> &'static str {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::ConnectionRefused, _) => "connect_refused",
        (io::ErrorKind::TimedOut, _) => "connect_timeout",
        (io::ErrorKind::AddrNotAvailable, _) => "connect_no_port",
        (_, Some(libc::EMFILE | libc::ENFILE)) => "connect_no_fd",
        (_, Some(libc::EAGAIN)) => "connect_backlog_full",
        _ => "connect_failed",
    }
}

/// An open loop's timetable: request `k` is due at `intended(k)`. The rate
/// ramps up linearly with the connections, so the ramp is not a backlog.
struct Schedule {
    /// When the run started.
    start: Instant,
    /// Requests per second once ramped up.
    rate: f64,
    /// Length of the ramp, in seconds.
    ramp: f64,
    /// The next request to send.
    next: u64,
}

impl Schedule {
    /// How many requests the timetable holds up to `t`, as a real number:
    /// request `k` is due when this reaches `k`.
    fn amount(&self, t: Instant) -> f64 {
        let t = t.saturating_duration_since(self.start).as_secs_f64();
        if t < self.ramp {
            self.rate * t * t / (2.0 * self.ramp)
        } else {
            self.rate * (t - self.ramp / 2.0)
        }
    }

    /// How many requests are due by `now` (those with `intended <= now`).
    fn due(&self, now: Instant) -> u64 {
        self.amount(now) as u64 + 1
    }

    /// How many requests are due strictly before `end`.
    fn due_before(&self, end: Instant) -> u64 {
        self.amount(end).ceil() as u64
    }

    /// When request `k` is due: the inverse of [`Schedule::due`].
    fn intended(&self, k: u64) -> Instant {
        let k = k as f64;
        let t = if k < self.rate * self.ramp / 2.0 {
            (2.0 * self.ramp * k / self.rate).sqrt()
        } else {
            k / self.rate + self.ramp / 2.0
        };
        self.start + Duration::from_secs_f64(t)
    }
}

/// One connection: its socket and its protocol engine.
struct Entry {
    /// The socket.
    sock: Sock,
    /// TLS between the socket and the engine, with the time the handshake
    /// began; `None` on a plain connection.
    tls: Option<(Box<ClientConnection>, Instant)>,
    /// The protocol engine.
    conn: Conn,
    /// When the connect began (connect time counts from here).
    started: Instant,
    /// The interest registered now, so the registry is touched only on
    /// change.
    interest: Interest,
    /// Queued in the open loop's list of connections with a free slot.
    in_ready: bool,
    /// Counted in the connections up.
    up: bool,
}

impl Entry {
    /// Interest follows state: writable while connecting or while output
    /// waits, readable always.
    fn wanted(&self) -> Interest {
        let tls_out = self.tls.as_ref().is_some_and(|(t, _)| t.wants_write());
        if self.conn.phase() == Phase::Connecting || !self.conn.output().is_empty() || tls_out {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Writes until done or `WouldBlock`; a broken socket closes the
    /// connection. Over TLS the engine's bytes are encrypted first, as
    /// the session takes them.
    fn flush(&mut self, stats: &mut Stats) {
        if let Some((tls, _)) = &mut self.tls {
            loop {
                if !tls.is_handshaking() && !self.conn.output().is_empty() {
                    match tls.writer().write(self.conn.output()) {
                        Ok(n) if n > 0 => self.conn.consumed(n),
                        _ => {}
                    }
                }
                if !tls.wants_write() || self.conn.phase() == Phase::Closed {
                    return;
                }
                match tls.write_tls(&mut self.sock) {
                    Ok(0) => self.conn.closed_by_peer(stats),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => self.conn.closed_by_peer(stats),
                }
            }
        }
        while !self.conn.output().is_empty() && self.conn.phase() != Phase::Closed {
            match self.sock.write(self.conn.output()) {
                Ok(0) => self.conn.closed_by_peer(stats),
                Ok(n) => self.conn.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.conn.closed_by_peer(stats),
            }
        }
    }

    /// Reads until `WouldBlock`, end of stream or a fatal reply. Returns
    /// true when a TLS handshake finished on the way.
    fn fill_from_socket(&mut self, buf: &mut [u8], stats: &mut Stats) -> bool {
        let mut handshake_done = false;
        while self.conn.phase() != Phase::Closed {
            match self.sock.read(buf) {
                Ok(0) => self.conn.closed_by_peer(stats),
                Ok(n) => match &mut self.tls {
                    None => self.conn.handle_input(&buf[..n], Instant::now(), stats),
                    Some((tls, _)) => {
                        let was_handshaking = tls.is_handshaking();
                        match decrypt(tls, &buf[..n]) {
                            Ok(plain) => {
                                handshake_done |= was_handshaking && !tls.is_handshaking();
                                if !plain.is_empty() {
                                    self.conn.handle_input(&plain, Instant::now(), stats);
                                }
                            }
                            Err(_) => {
                                stats.error("tls");
                                self.conn.closed_by_peer(stats);
                            }
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.conn.closed_by_peer(stats),
            }
        }
        handshake_done
    }
}

/// Decrypts `ciphertext`, returning the plaintext it carried.
fn decrypt(tls: &mut ClientConnection, mut ciphertext: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plain = Vec::new();
    while !ciphertext.is_empty() {
        if tls.read_tls(&mut ciphertext).is_err() {
            return Err(rustls::Error::General("read_tls".into()));
        }
        let state = tls.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            if tls.reader().read_exact(&mut plain[start..]).is_err() {
                return Err(rustls::Error::General("reader".into()));
            }
        }
        if state.peer_has_closed() {
            break;
        }
    }
    Ok(plain)
}

/// The loop's state between turns.
struct Reactor<'p> {
    /// The run.
    plan: &'p Plan,
    /// The poll.
    poll: Poll,
    /// Connections; a token is a slab key.
    conns: Slab<Entry>,
    /// Samples and errors.
    stats: Stats,
    /// Open loop: connections that may have a free slot, round robin.
    ready: VecDeque<usize>,
    /// Open loop: the timetable.
    schedule: Option<Schedule>,
    /// Connections to remove after this batch of events.
    to_close: Vec<usize>,
    /// Connections attempted.
    opened: usize,
    /// Connections up now.
    up: usize,
    /// Most connections up at once.
    max_up: usize,
}

impl Reactor<'_> {
    /// Starts connection number `n` (round robin over the sources).
    fn open_one(&mut self, n: usize) {
        let source = match self.plan.sources.len() {
            0 => None,
            k => Some(self.plan.sources[n % k]),
        };
        let now = Instant::now();
        let mut sock = match open(&self.plan.target, source) {
            Ok(s) => s,
            Err(e) => {
                self.stats.error(connect_kind(&e));
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = sock.register(self.poll.registry(), Token(key), interest) {
            self.stats.error(connect_kind(&e));
            return;
        }
        entry.insert(Entry {
            sock,
            tls: None,
            conn: Conn::new(n as u64),
            started: now,
            interest,
            in_ready: false,
            up: false,
        });
    }

    /// Everything one readiness event (or a fresh connect) calls for.
    fn drive(&mut self, key: usize, readable: bool, buf: &mut [u8]) {
        let plan = self.plan;
        let Some(e) = self.conns.get_mut(key) else {
            return; // a stale token: the connection is gone
        };
        if e.conn.phase() == Phase::Connecting {
            match e.sock.connect_done() {
                Ok(false) => return,
                Ok(true) if e.up => {} // TLS still shaking hands
                Ok(true) => {
                    let now = Instant::now();
                    let us = now.duration_since(e.started).as_micros();
                    self.stats
                        .connect
                        .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                    e.up = true;
                    self.up += 1;
                    self.max_up = self.max_up.max(self.up);
                    match &plan.tls {
                        // The engine starts once the handshake is done.
                        Some(tls) => match ClientConnection::new(
                            std::sync::Arc::clone(&tls.config),
                            tls.name.clone(),
                        ) {
                            Ok(c) => e.tls = Some((Box::new(c), now)),
                            Err(_) => {
                                self.stats.error("tls");
                                e.conn.stop();
                            }
                        },
                        None => {
                            let login = plan.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                            e.conn.connected(login, now);
                        }
                    }
                }
                Err(err) => {
                    self.stats.error(connect_kind(&err));
                    e.conn.stop();
                }
            }
        }
        if readable && e.fill_from_socket(buf, &mut self.stats) {
            let now = Instant::now();
            if let Some((_, began)) = &e.tls {
                let us = now.duration_since(*began).as_micros();
                self.stats
                    .handshake
                    .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
            }
            let login = plan.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            e.conn.connected(login, now);
        }
        if self.schedule.is_none() {
            e.conn.fill(&plan.mix, plan.pipeline, Instant::now());
        } else if !e.in_ready && e.conn.can_send(plan.pipeline) {
            e.in_ready = true;
            self.ready.push_back(key);
        }
        e.flush(&mut self.stats);
        self.settle(key);
    }

    /// Re-registers on a change of interest; queues a closed connection
    /// for removal after the batch.
    fn settle(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        if e.conn.phase() == Phase::Closed {
            self.to_close.push(key);
            return;
        }
        let want = e.wanted();
        if want != e.interest {
            if let Err(err) = e.sock.reregister(self.poll.registry(), Token(key), want) {
                self.stats.error(connect_kind(&err));
                e.conn.closed_by_peer(&mut self.stats);
                self.to_close.push(key);
                return;
            }
            e.interest = want;
        }
    }

    /// Removes connections closed in this batch (close late: a key is
    /// reused only after its events were seen).
    fn close_pending(&mut self) {
        for key in self.to_close.drain(..) {
            if let Some(e) = self.conns.try_remove(key) {
                if e.up {
                    self.up -= 1;
                }
            }
        }
    }

    /// Open loop: sends every due request that has a free slot, each
    /// stamped with its own intended time.
    fn dispatch(&mut self, now: Instant) {
        // taken out for the loop, so `self` stays free for `settle`
        let Some(mut schedule) = self.schedule.take() else {
            return;
        };
        let due = schedule.due(now);
        while schedule.next < due {
            let Some(key) = self.ready.pop_front() else {
                break; // backlog: latency keeps counting from intended times
            };
            let Some(e) = self.conns.get_mut(key) else {
                continue;
            };
            e.in_ready = false;
            if !e.conn.can_send(self.plan.pipeline) {
                continue;
            }
            e.conn
                .send_one(&self.plan.mix, schedule.intended(schedule.next));
            schedule.next += 1;
            e.flush(&mut self.stats);
            if e.conn.can_send(self.plan.pipeline) {
                e.in_ready = true;
                self.ready.push_back(key);
            }
            self.settle(key);
        }
        self.schedule = Some(schedule);
    }
}

/// Runs the whole swarm; returns when the run and its drain are over.
pub fn run(plan: &Plan) -> io::Result<Outcome> {
    let start = Instant::now();
    let end = start + plan.duration;
    let drain_end = end + DRAIN;
    let mut r = Reactor {
        plan,
        poll: Poll::new()?,
        conns: Slab::with_capacity(plan.conns.min(1 << 16)),
        stats: Stats::new(),
        ready: VecDeque::new(),
        schedule: plan.rate.map(|rate| Schedule {
            start,
            rate,
            ramp: plan.ramp.as_secs_f64(),
            next: 0,
        }),
        to_close: Vec::new(),
        opened: 0,
        up: 0,
        max_up: 0,
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF];
    let mut stopping = false;
    let mut progress = ProgressLine::new(plan.progress, start);
    loop {
        let now = Instant::now();
        if !stopping && now >= end {
            stopping = true;
            for (key, e) in r.conns.iter_mut() {
                if e.conn.phase() == Phase::Connecting {
                    // never came up within the run: that is a failure too
                    r.stats.error("connect_timeout");
                }
                e.conn.stop();
                if e.conn.phase() == Phase::Closed {
                    r.to_close.push(key);
                }
            }
            r.close_pending();
        }
        if stopping && (r.conns.is_empty() || now >= drain_end) {
            for (_, e) in r.conns.iter_mut() {
                e.conn.abandon(&mut r.stats);
            }
            r.conns.clear();
            break;
        }
        let mut next_wake = if stopping { drain_end } else { end };
        if !stopping {
            let target = ramp_target(plan, now.duration_since(start));
            let batch_end = target.min(r.opened + OPEN_BATCH);
            while r.opened < batch_end {
                let n = r.opened;
                r.opened += 1;
                r.open_one(n);
            }
            if r.opened < plan.conns {
                let at = if r.opened < target {
                    now
                } else {
                    start + plan.ramp.mul_f64(r.opened as f64 / plan.conns as f64)
                };
                next_wake = next_wake.min(at);
            }
            r.dispatch(now);
            if let Some(s) = &r.schedule {
                // With a backlog the next due time is already past; the
                // wake-up then comes from a reply freeing a slot, not a
                // zero timeout that would spin.
                let at = s.intended(s.next);
                if at > now {
                    next_wake = next_wake.min(at);
                }
            }
        }
        r.close_pending();
        next_wake = next_wake.min(progress.tick(now, &r));
        let timeout = next_wake.saturating_duration_since(Instant::now());
        match r.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            r.drive(ev.token().0, readable, &mut buf);
        }
        r.close_pending();
    }
    progress.finish();
    let unsent = r
        .schedule
        .as_ref()
        .map(|s| s.due_before(end).saturating_sub(s.next));
    Ok(Outcome {
        unsent,
        stats: r.stats,
        elapsed: start.elapsed(),
        opened: r.opened,
        max_up: r.max_up,
    })
}

/// How many connections should have been opened `t` into the run.
fn ramp_target(plan: &Plan, t: Duration) -> usize {
    if plan.ramp.is_zero() || t >= plan.ramp {
        return plan.conns;
    }
    let n = (plan.conns as f64 * t.as_secs_f64() / plan.ramp.as_secs_f64()) as usize + 1;
    n.min(plan.conns)
}

/// The live one-line progress report.
struct ProgressLine {
    /// How to print.
    mode: Progress,
    /// When the run started.
    start: Instant,
    /// When the next line is due.
    next: Instant,
    /// Correct replies at the last line.
    last_ok: u64,
    /// When the last line was printed.
    last_at: Instant,
}

impl ProgressLine {
    fn new(mode: Progress, start: Instant) -> ProgressLine {
        ProgressLine {
            mode,
            start,
            next: start + Duration::from_secs(1),
            last_ok: 0,
            last_at: start,
        }
    }

    /// Prints a line if one is due; returns when the next is.
    fn tick(&mut self, now: Instant, r: &Reactor<'_>) -> Instant {
        if self.mode == Progress::Off {
            return now + Duration::from_secs(3600);
        }
        if now >= self.next {
            let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
            let rps = (r.stats.ok - self.last_ok) as f64 / dt;
            let line = format!(
                "[{:>4.0}s] conns {}/{} up, {:.0} req/s, {} ok, {} errors",
                now.duration_since(self.start).as_secs_f64(),
                r.up,
                r.plan.conns,
                rps,
                r.stats.ok,
                r.stats.error_total()
            );
            if self.mode == Progress::Line {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            self.last_ok = r.stats.ok;
            self.last_at = now;
            self.next += Duration::from_secs(1);
            if self.next <= now {
                self.next = now + Duration::from_secs(1);
            }
        }
        self.next
    }

    fn finish(&self) {
        if self.mode == Progress::Line && self.last_at > self.start {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_inverts_and_ramps() {
        let start = Instant::now();
        for ramp in [0.0, 2.0] {
            let s = Schedule {
                start,
                rate: 1000.0,
                ramp,
                next: 0,
            };
            assert_eq!(s.due(start), 1, "request 0 is due at once");
            for k in [1u64, 10, 999, 1000, 5000] {
                let at = s.intended(k);
                assert!(
                    s.due(at + Duration::from_micros(1)) > k,
                    "ramp {ramp} k {k}"
                );
                assert!(
                    s.due(at - Duration::from_micros(1)) <= k,
                    "ramp {ramp} k {k}"
                );
            }
            // after the ramp the full rate holds
            let a = s.due(start + Duration::from_secs(5));
            let b = s.due(start + Duration::from_secs(6));
            assert!((b - a).abs_diff(1000) <= 1);
        }
        let s = Schedule {
            start,
            rate: 1000.0,
            ramp: 2.0,
            next: 0,
        };
        // half the requests of a flat start over the ramp
        assert!(s.due(start + Duration::from_secs(2)).abs_diff(1001) <= 1);
        assert_eq!(s.due_before(start + Duration::from_secs(3)), 2000);
        assert_eq!(s.due_before(start), 0);
    }
}
