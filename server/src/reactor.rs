//! The event loop: one thread, one `mio::Poll`, every socket.
//!
//! This is the only module that calls `poll`, `read`, `write`, `accept`,
//! `recv_from`, `send_to` and the registry. Protocol decisions belong to
//! the connection state machines ([`Conn`], [`RawEcho`]); the reactor
//! moves bytes between them and the kernel and keeps four promises:
//!
//! - **Drain until `WouldBlock`.** Readiness is edge-triggered: an event
//!   comes once, and the next only after an operation would block. Each
//!   client remembers whether it may still be readable or writable.
//! - **Fairness.** No client gets more than [`READ_BUDGET`] bytes read or
//!   [`WRITE_BUDGET`] written per turn, no listener more than
//!   [`ACCEPT_BUDGET`] accepts: a source still ready after its budget goes
//!   on the `ready` list, served before the loop sleeps again.
//! - **Backpressure.** A client is read only while its state machine wants
//!   input; interest is derived from that and from pending output, and
//!   the registry is touched only when it changes.
//! - **Close late.** Finished clients are collected during a batch and
//!   removed after it, so a reused slab key never sees a stale event.
//!
//! ```text
//!   poll(timeout = earliest deadline, or 0 if anything is still ready)
//!     ├─ signal   → begin shutdown
//!     ├─ jobs     → hand finished jobs' results to their connections
//!     ├─ listener → accept ≤ ACCEPT_BUDGET / answer datagrams
//!     └─ client   → write first, read ≤ READ_BUDGET and ≤ MAX_REQUESTS_PER_TURN
//!                   requests, feed the state machine, write; queue its jobs
//!   serve the ready list · fire timers · close what finished
//! ```

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use skiff::proto::Code;

use crate::buffer::SharedFrame;
use crate::children::{ChildProc, Fd};

mod commands;
use crate::conn::{Conn, Ctx, Limits, MAX_LENT};
use crate::handlers::{self, Action, Services, Submission, raw_echo::RawEcho};
use crate::pool::Pool;
use crate::stats::Stats;
use crate::udp;

/// Bytes read per `read` call (the size of the shared read buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read from one client per turn before others are served.
pub const READ_BUDGET: usize = 256 * 1024;
/// Most bytes written to one client per turn.
pub const WRITE_BUDGET: usize = 256 * 1024;
/// Most connections accepted from one listener per turn.
pub const ACCEPT_BUDGET: usize = 64;
/// Most datagrams answered from one UDP socket per turn.
const DATAGRAM_BUDGET: usize = 64;
/// Most sessions `say`s reach per turn, all of them together: a message
/// to everyone is queued for a few hundred recipients, then the loop
/// serves other clients before it goes on.
const FANOUT_RECIPIENTS: usize = 256;
/// Most time `say`s spend reaching recipients per turn. Each recipient
/// reached is written to at once, and what a write costs is mostly the
/// kernel's: with recipients that do not read, a 64 KiB write measured
/// 0.1 to 0.7 ms (the loopback peer's queue is pruned inside the call),
/// so a count alone cannot bound the stall.
const FANOUT_TIME: Duration = Duration::from_millis(2);
/// Most connections looked at per turn while finding recipients.
const FANOUT_SCAN: usize = 16 << 10;
/// Free heap memory is given back to the kernel (`malloc_trim`) once the
/// server's buffers have fallen this far below their peak since the last
/// time: rarely, and only after a burst worth giving back.
const TRIM_AFTER_FALL: usize = 16 << 20;

/// Everything `skiffd serve` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// Framed protocol over TCP.
    pub framed: Vec<SocketAddr>,
    /// Framed protocol over Unix sockets.
    pub unix: Vec<PathBuf>,
    /// UDP time service.
    pub udp_time: Vec<SocketAddr>,
    /// UDP echo service.
    pub udp_echo: Vec<SocketAddr>,
    /// Raw upper-casing TCP echo.
    pub raw_echo: Vec<SocketAddr>,
    /// Per-connection limits.
    pub limits: Limits,
    /// Most connections open at once.
    pub max_conns: usize,
    /// Most connections from one IP address.
    pub max_conns_per_ip: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// How long a graceful shutdown may take to flush.
    pub shutdown_grace: Duration,
    /// Most commands running at once, server-wide.
    pub exec_max: usize,
    /// Most output bytes one command may produce before it is ended.
    pub exec_max_output: u64,
}

/// What a token stands for. Tokens are typed slab keys: the low two bits
/// say which table, the rest index it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    /// The worker pool finished jobs (its `Waker`).
    Jobs,
    Listener(usize),
    Client(usize),
    Child(usize, Fd),
}

impl Source {
    fn token(self) -> Token {
        Token(match self {
            Source::Signals => 0,
            Source::Jobs => 4,
            Source::Listener(i) => (i << 2) | 1,
            Source::Client(k) => (k << 2) | 2,
            Source::Child(k, fd) => (((k << 2) | fd as usize) << 2) | 3,
        })
    }

    fn from_token(t: Token) -> Option<Source> {
        match t.0 & 3 {
            0 if t.0 == 0 => Some(Source::Signals),
            0 if t.0 == 4 => Some(Source::Jobs),
            1 => Some(Source::Listener(t.0 >> 2)),
            2 => Some(Source::Client(t.0 >> 2)),
            3 => Some(Source::Child(t.0 >> 4, Fd::from_bits(t.0 >> 2))),
            _ => None,
        }
    }
}

/// A `say` on its way to its recipients, at most a turn's fan-out
/// budget at a time.
struct Broadcast {
    /// Slab key of the sender, who does not get its own message.
    from_key: usize,
    /// The recipient user, or `*`.
    to: String,
    /// The `msg` frame every recipient gets a reference to.
    frame: Rc<SharedFrame>,
    /// The next slab key to look at.
    next: usize,
    /// Sessions reached so far, for the log.
    reached: usize,
}

/// A listening socket and the service behind it.
enum Listener {
    Framed(TcpListener),
    FramedUnix(UnixListener, PathBuf),
    RawEcho(TcpListener),
    UdpTime(UdpSocket),
    UdpEcho(UdpSocket),
}

impl Listener {
    fn name(&self) -> &'static str {
        match self {
            Listener::Framed(_) => "framed",
            Listener::FramedUnix(..) => "framed-unix",
            Listener::RawEcho(_) => "raw-echo",
            Listener::UdpTime(_) => "udp-time",
            Listener::UdpEcho(_) => "udp-echo",
        }
    }

    fn local_addr(&self) -> String {
        let addr = match self {
            Listener::Framed(l) | Listener::RawEcho(l) => l.local_addr(),
            Listener::UdpTime(s) | Listener::UdpEcho(s) => s.local_addr(),
            Listener::FramedUnix(_, path) => return path.display().to_string(),
        };
        addr.map_or_else(|e| format!("? ({e})"), |a| a.to_string())
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Framed(l) | Listener::RawEcho(l) => l,
            Listener::FramedUnix(l, _) => l,
            Listener::UdpTime(s) | Listener::UdpEcho(s) => s,
        }
    }
}

/// A connected stream socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
}

/// The protocol engine behind a client socket.
enum Engine {
    Framed(Box<Conn>),
    Raw(RawEcho),
}

impl Engine {
    fn output(&self) -> &[u8] {
        match self {
            Engine::Framed(c) => c.output(),
            Engine::Raw(r) => r.output(),
        }
    }
}

/// One client: its socket, its state machine, and what the reactor
/// remembers about its readiness.
struct Client {
    /// The socket.
    stream: Stream,
    /// The protocol state machine.
    engine: Engine,
    /// Peer address, for the per-IP limit (None for Unix sockets).
    peer_ip: Option<IpAddr>,
    /// Interest currently registered.
    interest: Interest,
    /// No read has hit `WouldBlock` since the last readable event.
    readable: bool,
    /// The poll said the peer finished sending (or the socket failed):
    /// read until the end, since no further edge will announce it.
    read_closed: bool,
    /// No write has hit `WouldBlock` since the last writable event.
    writable: bool,
    /// On the ready list already.
    queued: bool,
    /// The deadline this client has in the timer heap.
    timer: Option<Instant>,
    /// Set when the socket failed: close without flushing.
    broken: Option<String>,
    /// Buffer bytes this client counts for in `Stats::buffered`.
    buffered: usize,
}

impl Client {
    fn wants_read(&self, limits: &Limits) -> bool {
        self.broken.is_none()
            && match &self.engine {
                Engine::Framed(c) => c.wants_read(),
                Engine::Raw(r) => r.wants_read(limits),
            }
    }

    fn output(&self) -> &[u8] {
        self.engine.output()
    }

    /// Brings `stats.buffered` up to date with this client's buffers.
    fn account(&mut self, stats: &mut Stats) {
        let now = match &self.engine {
            Engine::Framed(c) => c.buffered_bytes(),
            Engine::Raw(r) => r.buffered_bytes(),
        };
        stats.buffered = stats.buffered - self.buffered + now;
        self.buffered = now;
    }

    fn deadline(&self, limits: &Limits) -> Instant {
        match &self.engine {
            Engine::Framed(c) => c.deadline(limits),
            Engine::Raw(r) => r.deadline(limits),
        }
    }

    fn is_done(&self) -> bool {
        if self.job_in_flight() {
            return false; // close late: the job's result comes back first
        }
        self.broken.is_some()
            || match &self.engine {
                Engine::Framed(c) => c.is_done(),
                Engine::Raw(r) => r.is_done(),
            }
    }

    /// The socket failed, or the server gives up on this client: nothing
    /// more is read or written, and its state machine drops what it
    /// queued (a job in flight still comes back before the client goes).
    fn fail(&mut self, why: String) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(why);
        if let Engine::Framed(c) = &mut self.engine {
            c.handle_reset();
        }
    }

    fn job_in_flight(&self) -> bool {
        matches!(&self.engine, Engine::Framed(c) if c.job_in_flight())
    }

    /// Bytes wait for the socket: queued output, or a file to send.
    fn wants_write(&self) -> bool {
        !self.output().is_empty()
            || matches!(&self.engine, Engine::Framed(c)
                if c.file_to_send().is_some() || c.splice_pending().is_some())
    }

    fn desired_interest(&self, limits: &Limits) -> Interest {
        match (self.wants_read(limits), self.wants_write()) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // Nothing to wait for but the peer hanging up.
            _ => Interest::READABLE,
        }
    }
}

/// The server: its poll, its sources and its counters.
pub struct Reactor {
    poll: Poll,
    /// Listening sockets; a slot is emptied at shutdown.
    listeners: Vec<Option<Listener>>,
    /// SIGINT/SIGTERM, delivered through a pipe registered with the poll.
    signals: Signals,
    /// Connected clients, keyed by slab key (= token >> 2).
    clients: Slab<Client>,
    /// Sources that may still be ready after using up their budget.
    ready: VecDeque<Source>,
    /// Listeners on the ready list already.
    listener_queued: Vec<bool>,
    /// Client deadlines, earliest first; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open connections per peer IP.
    per_ip: HashMap<IpAddr, usize>,
    /// Clients to remove after the current batch.
    to_close: Vec<usize>,
    /// The one read buffer all clients share: input is consumed from it
    /// directly, so idle clients hold none.
    scratch: Box<[u8]>,
    /// Startup settings.
    config: Config,
    /// Counters for `stats`.
    stats: Stats,
    /// Users, accounts and caches the handlers share.
    services: Services,
    /// Work the state machines handed out during the current turn.
    actions: Vec<Action>,
    /// Jobs the state machines handed out, on their way to the pool.
    jobs: Vec<Submission>,
    /// The worker threads that run jobs (see [`crate::pool`]).
    pool: Pool,
    /// An accept failed for lack of resources; retry after a close.
    accept_paused: bool,
    /// `splice` from a pipe to a client socket works here (it is turned
    /// off for good if the kernel ever refuses it).
    splice_works: bool,
    /// Running commands, keyed by slab key (= token >> 4).
    children: Slab<ChildProc>,
    /// Command deadlines (timeout, kill grace, drain grace); stale
    /// entries only cause a harmless extra look.
    child_timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Keeps each command's whole process tree tied to the command.
    containment: crate::containment::Containment,
    /// Set once shutdown began: the time by which we exit regardless.
    shutdown_by: Option<Instant>,
    /// `say`s not yet queued for all their recipients, oldest first.
    broadcasts: VecDeque<Broadcast>,
    /// The most buffer bytes held since free heap memory was last given
    /// back to the kernel.
    buffered_peak: usize,
}

impl Reactor {
    /// Binds every listener of `config` and prepares the loop.
    pub fn bind(config: Config, services: Services) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        let with = |what: &str, addr: &dyn std::fmt::Display, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot listen ({what}) on {addr}: {e}"))
        };
        for &a in &config.framed {
            listeners.push(Listener::Framed(
                crate::listen::tcp(a, config.backlog).map_err(|e| with("framed", &a, e))?,
            ));
        }
        for p in &config.unix {
            let l = crate::listen::unix(p, config.backlog)
                .map_err(|e| with("framed-unix", &p.display(), e))?;
            listeners.push(Listener::FramedUnix(l, p.clone()));
        }
        for &a in &config.raw_echo {
            listeners.push(Listener::RawEcho(
                crate::listen::tcp(a, config.backlog).map_err(|e| with("raw-echo", &a, e))?,
            ));
        }
        for &a in &config.udp_time {
            listeners.push(Listener::UdpTime(
                crate::listen::udp(a).map_err(|e| with("udp-time", &a, e))?,
            ));
        }
        for &a in &config.udp_echo {
            listeners.push(Listener::UdpEcho(
                crate::listen::udp(a).map_err(|e| with("udp-echo", &a, e))?,
            ));
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                l.source(),
                Source::Listener(i).token(),
                Interest::READABLE,
            )?;
        }
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, Source::Signals.token(), Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Jobs.token())?);
        let pool = Pool::start(
            Arc::new(move || {
                // Fails only if the eventfd is gone, and then so is the loop.
                let _ = waker.wake();
            }),
            crate::pool::Hooks {
                start: crate::sys::lower_thread_priority,
                idle: crate::users::release_kdf_memory,
            },
        )?;
        let now = Instant::now();
        Ok(Reactor {
            poll,
            listener_queued: vec![false; listeners.len()],
            listeners: listeners.into_iter().map(Some).collect(),
            signals,
            clients: Slab::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            per_ip: HashMap::new(),
            to_close: Vec::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            config,
            stats: Stats::new(now),
            services,
            actions: Vec::new(),
            jobs: Vec::new(),
            pool,
            accept_paused: false,
            splice_works: true,
            children: Slab::new(),
            child_timers: BinaryHeap::new(),
            containment: crate::containment::Containment::start(),
            shutdown_by: None,
            broadcasts: VecDeque::new(),
            buffered_peak: 0,
        })
    }

    /// `(service, address)` of every listener, for the startup lines.
    pub fn local_addrs(&self) -> Vec<(&'static str, String)> {
        self.listeners
            .iter()
            .flatten()
            .map(|l| (l.name(), l.local_addr()))
            .collect()
    }

    /// Runs until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                self.dispatch(event);
            }
            self.serve_ready();
            self.fire_timers();
            self.fire_child_timers();
            self.run_actions();
            self.evict_over_budget();
            self.close_finished();
            self.give_back_memory();
            if let Some(by) = self.shutdown_by {
                if self.clients.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if Instant::now() >= by {
                    warn!(
                        "shutdown deadline passed; dropping {} connections",
                        self.clients.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Zero while anything is still ready; else until the earliest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() || !self.broadcasts.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let next = match (self.timers.peek(), self.child_timers.peek()) {
            (Some(Reverse((a, _))), Some(Reverse((b, _)))) => Some(*a.min(b)),
            (a, b) => a.or(b).map(|Reverse((t, _))| *t),
        };
        let next = match (next, self.shutdown_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|t| t.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &Event) {
        match Source::from_token(event.token()) {
            Some(Source::Signals) => self.on_signal(),
            Some(Source::Jobs) => self.on_jobs_done(),
            Some(Source::Listener(i)) => self.serve_listener(i),
            Some(Source::Child(ck, fd)) => {
                let Some(child) = self.children.get_mut(ck) else {
                    return;
                };
                match fd {
                    Fd::Stdout => child.readable[0] = true,
                    Fd::Stderr => child.readable[1] = true,
                    Fd::Stdin => {}
                    Fd::Exit => child.exit_ready = true,
                }
                self.drive_child(ck);
            }
            Some(Source::Client(k)) => {
                let Some(client) = self.clients.get_mut(k) else {
                    return; // a stale event for a closed client
                };
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    debug!("conn {k}: readable");
                    client.readable = true;
                }
                if event.is_read_closed() || event.is_error() {
                    client.read_closed = true;
                }
                if event.is_error() {
                    // Reset by the peer: nobody is left to answer, so its
                    // pipelined requests are not worth a worker's time.
                    client.fail("socket error".into());
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    debug!("conn {k}: writable");
                    client.writable = true;
                }
                self.drive(k);
            }
            None => {}
        }
    }

    /// One turn for each source that used up its budget last time.
    fn serve_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(source) = self.ready.pop_front() else {
                break;
            };
            match source {
                Source::Listener(i) => {
                    self.listener_queued[i] = false;
                    self.serve_listener(i);
                }
                Source::Client(k) => {
                    if let Some(c) = self.clients.get_mut(k) {
                        c.queued = false;
                        self.drive(k);
                    }
                }
                Source::Child(ck, _) => {
                    if let Some(ch) = self.children.get_mut(ck) {
                        ch.queued = false;
                        self.drive_child(ck);
                    }
                }
                Source::Signals | Source::Jobs => {}
            }
        }
    }

    fn serve_listener(&mut self, i: usize) {
        let Some(Some(listener)) = self.listeners.get_mut(i) else {
            return;
        };
        let still_ready = match listener {
            Listener::UdpTime(_) | Listener::UdpEcho(_) => self.answer_datagrams(i),
            _ => self.accept(i),
        };
        if still_ready && !self.listener_queued[i] {
            self.listener_queued[i] = true;
            self.ready.push_back(Source::Listener(i));
        }
    }

    /// Accepts up to [`ACCEPT_BUDGET`] connections; true if more may wait.
    fn accept(&mut self, i: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Some(listener)) = self.listeners.get_mut(i) else {
                return false;
            };
            let raw = matches!(listener, Listener::RawEcho(_));
            let accepted = match listener {
                Listener::Framed(l) | Listener::RawEcho(l) => l.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Some(a.ip()), a.to_string())
                }),
                Listener::FramedUnix(l, _) => l
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), None, "unix".to_string())),
                Listener::UdpTime(_) | Listener::UdpEcho(_) => return false,
            };
            match accepted {
                Ok((stream, ip, peer)) => self.admit(stream, ip, &peer, raw),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // Interrupted, or a peer that gave up while queued: next.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the
                    // peer waits in the backlog. Retrying now would spin,
                    // so accepting resumes when a client closes.
                    warn!("accept failed: {e}; pausing accepts until a connection closes");
                    self.accept_paused = true;
                    return false;
                }
            }
        }
        true
    }

    /// Registers a new client, or refuses it with `too_busy`.
    fn admit(&mut self, mut stream: Stream, ip: Option<IpAddr>, peer: &str, raw: bool) {
        self.stats.accepted += 1;
        let over_total = self.clients.len() >= self.config.max_conns;
        let from_ip = ip.map_or(0, |ip| self.per_ip.get(&ip).copied().unwrap_or(0));
        let over_ip = from_ip >= self.config.max_conns_per_ip;
        if over_total || over_ip || self.shutdown_by.is_some() {
            self.stats.refused += 1;
            let why = if over_total {
                format!(
                    "server is at its limit of {} connections",
                    self.config.max_conns
                )
            } else if over_ip {
                format!("{} connections from your address already", from_ip)
            } else {
                "server is shutting down".to_string()
            };
            info!("refused {peer}: too_busy: {why}");
            if !raw {
                // A fresh socket's send buffer is empty, so this small
                // write completes or fails at once; it never blocks.
                let mut frame = Vec::new();
                handlers::error(&mut frame, None, Code::TooBusy, &why);
                let _ = stream.write(&frame);
            }
            return;
        }
        let now = Instant::now();
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let token = Source::Client(key).token();
        if let Err(e) = self
            .poll
            .registry()
            .register(stream.source(), token, Interest::READABLE)
        {
            warn!("cannot register {peer}: {e}");
            return;
        }
        let engine = if raw {
            Engine::Raw(RawEcho::new(now))
        } else {
            Engine::Framed(Box::new(Conn::new(key, ip, now, &self.config.limits)))
        };
        entry.insert(Client {
            stream,
            engine,
            peer_ip: ip,
            interest: Interest::READABLE,
            readable: true,
            read_closed: false,
            writable: true,
            queued: false,
            timer: None,
            broken: None,
            buffered: 0,
        });
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
        self.stats.connections += 1;
        debug!(
            "conn {key}: accepted {peer}{}",
            if raw { " (raw echo)" } else { "" }
        );
        self.drive(key);
    }

    /// Answers up to [`DATAGRAM_BUDGET`] datagrams; true if more may wait.
    fn answer_datagrams(&mut self, i: usize) -> bool {
        let Some(Some(listener)) = self.listeners.get_mut(i) else {
            return false;
        };
        let (socket, time) = match listener {
            Listener::UdpTime(s) => (s, true),
            Listener::UdpEcho(s) => (s, false),
            _ => return false,
        };
        for _ in 0..DATAGRAM_BUDGET {
            let (n, from) = match socket.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; they
                    // concern one peer, not the socket.
                    debug!("udp recv: {e}");
                    continue;
                }
            };
            self.stats.datagrams += 1;
            let request = &self.scratch[..n];
            let reply = if time {
                match udp::time_reply(request) {
                    Some(reply) => reply,
                    None => continue, // no reply may amplify
                }
            } else {
                request.to_vec()
            };
            // UDP may drop: a full send buffer drops this reply rather
            // than queueing it and growing memory.
            if let Err(e) = socket.send_to(&reply, from) {
                debug!("udp reply to {from} dropped: {e}");
            }
        }
        true
    }

    /// One turn for client `k`, then let its commands' output flow if it
    /// has room for it again.
    fn drive(&mut self, k: usize) {
        self.drive_client(k);
        self.submit_jobs();
        self.resume_children_of(k);
    }

    /// Hands the jobs the state machines asked for to the pool; a job the
    /// pool refuses (its queue is full) is answered `too_busy`.
    fn submit_jobs(&mut self) {
        while let Some(job) = self.jobs.pop() {
            let Submission {
                conn,
                name,
                lane,
                work,
            } = job;
            if self.pool.submit(conn, name, lane, work).is_err() {
                self.with_framed(conn, Instant::now(), |c, ctx| c.handle_job_refused(ctx));
                if let Some(client) = self.clients.get_mut(conn)
                    && !client.queued
                {
                    client.queued = true;
                    self.ready.push_back(Source::Client(conn));
                }
            }
        }
    }

    /// Results of finished jobs go to the connections that wait for them,
    /// which then get a turn (to write the reply, to take the next request).
    fn on_jobs_done(&mut self) {
        let finished: Vec<_> = self.pool.finished().collect();
        let now = Instant::now();
        for done in finished {
            // The client is there: one waiting for a job is never removed.
            self.with_framed(done.conn, now, |c, ctx| c.handle_job_done(done.result, ctx));
            self.drive(done.conn);
        }
    }

    /// Runs `f` on client `k`'s framed state machine, with the context
    /// borrowed from the reactor; nothing if there is no such client.
    fn with_framed(&mut self, k: usize, now: Instant, f: impl FnOnce(&mut Conn, &mut Ctx)) {
        let Some(Client {
            engine: Engine::Framed(c),
            ..
        }) = self.clients.get_mut(k)
        else {
            return;
        };
        let mut env = Env {
            limits: &self.config.limits,
            stats: &mut self.stats,
            services: &mut self.services,
            actions: &mut self.actions,
            jobs: &mut self.jobs,
            children: &self.children,
            splice_works: &mut self.splice_works,
        };
        f(c, &mut env.ctx(now));
    }

    /// One turn for client `k`: write, read within budget, feed the state
    /// machine, write again; then update interest, ready list and timer.
    fn drive_client(&mut self, k: usize) {
        let Reactor {
            clients,
            stats,
            services,
            actions,
            config,
            scratch,
            ready,
            timers,
            to_close,
            poll,
            children,
            splice_works,
            jobs,
            ..
        } = self;
        let Some(client) = clients.get_mut(k) else {
            return;
        };
        let limits = &config.limits;
        // One clock read per turn: deadlines need no finer time than that.
        let now = Instant::now();
        let mut env = Env {
            limits,
            stats,
            services,
            actions,
            jobs,
            children,
            splice_works,
        };
        let mut write_budget = WRITE_BUDGET;
        flush(k, client, &mut env, now, &mut write_budget);
        // One bounded step of server-side work (hashing, file sending),
        // then back to the loop: a 1 GiB file never holds it for long.
        if let Engine::Framed(c) = &mut client.engine {
            c.start_turn();
            if c.has_work(limits) {
                c.work(&mut env.ctx(now));
            }
            c.resume(&mut env.ctx(now));
            if client.wants_write() {
                flush(k, client, &mut env, now, &mut write_budget);
            }
        }
        let mut read_budget = READ_BUDGET;
        while client.readable && client.wants_read(limits) && read_budget > 0 {
            match client.stream.read(scratch) {
                Ok(0) => {
                    client.readable = false;
                    debug!("conn {k}: peer finished sending");
                    match &mut client.engine {
                        Engine::Framed(c) => c.handle_eof(),
                        Engine::Raw(r) => r.handle_eof(),
                    }
                }
                Ok(n) => {
                    debug!("conn {k}: read {n} bytes");
                    read_budget = read_budget.saturating_sub(n);
                    // A short read emptied the socket's receive queue. The
                    // next read would only say WouldBlock, and on Linux any
                    // byte (or FIN) that arrives later raises a new edge,
                    // so skip that read: it was half the syscalls of a
                    // small request. (The general rule, and mio's, is to
                    // read until WouldBlock; this is the one place we rely
                    // on how Linux epoll reports stream sockets.) A FIN
                    // that came with the data raises no new edge, so once
                    // the poll has reported one, read on to the end.
                    if n < scratch.len() && !client.read_closed {
                        client.readable = false;
                    }
                    env.stats.bytes_in += n as u64;
                    let input = &scratch[..n];
                    match &mut client.engine {
                        Engine::Framed(c) => c.handle_input(input, &mut env.ctx(now)),
                        Engine::Raw(r) => r.handle_input(input, now),
                    }
                    // Answer at once: replies leave while the request's
                    // bytes are still hot, and a drained output keeps
                    // backpressure from kicking in needlessly. An echo
                    // body may go straight from `input`; what the socket
                    // did not take is copied when `input` is released.
                    flush_with(k, client, &mut env, now, &mut write_budget, input);
                    if let Engine::Framed(c) = &mut client.engine {
                        c.release_input(input, &mut env.ctx(now));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => client.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => client.fail(format!("read: {e}")),
            }
        }
        flush(k, client, &mut env, now, &mut write_budget);
        client.account(env.stats);

        if client.is_done() {
            to_close.push(k);
            return;
        }
        let more_to_read = client.readable && client.wants_read(limits);
        let more_to_write = client.writable && client.wants_write();
        let more_work = matches!(&client.engine, Engine::Framed(c) if c.has_work(limits));
        if (more_to_read || more_to_write || more_work) && !client.queued {
            client.queued = true;
            ready.push_back(Source::Client(k));
        }
        let want = client.desired_interest(limits);
        if want != client.interest {
            debug!("conn {k}: interest {:?} -> {:?}", client.interest, want);
            if let Err(e) =
                poll.registry()
                    .reregister(client.stream.source(), Source::Client(k).token(), want)
            {
                client.fail(format!("reregister: {e}"));
                to_close.push(k);
                return;
            }
            client.interest = want;
        }
        schedule(k, client, limits, timers);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((t, k))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(client) = self.clients.get_mut(k) else {
                continue;
            };
            if client.timer != Some(t) {
                continue; // superseded by an earlier deadline, or a reused key
            }
            client.timer = None;
            let limits = &self.config.limits;
            let mut env = Env {
                limits,
                stats: &mut self.stats,
                services: &mut self.services,
                actions: &mut self.actions,
                jobs: &mut self.jobs,
                children: &self.children,
                splice_works: &mut self.splice_works,
            };
            match &mut client.engine {
                Engine::Framed(c) => c.handle_timeout(&mut env.ctx(now)),
                Engine::Raw(r) => {
                    if now >= r.deadline(limits) {
                        client.fail("idle timeout".into());
                    }
                }
            }
            self.drive(k);
        }
    }

    /// Carries out what the state machines asked for this turn, and a
    /// turn's share of delivering `say`s.
    fn run_actions(&mut self) {
        self.run_pending_actions();
        self.fan_out();
        // The recipients' turns may have asked for more.
        self.run_pending_actions();
    }

    fn run_pending_actions(&mut self) {
        // In order: stdin pieces must reach the child as they were sent.
        while !self.actions.is_empty() {
            for action in std::mem::take(&mut self.actions) {
                self.run_action(action);
            }
        }
    }

    /// Queues pending `say`s for their recipients, within the turn's
    /// budget ([`FANOUT_RECIPIENTS`], [`FANOUT_TIME`], [`FANOUT_SCAN`]),
    /// oldest first, so each recipient gets messages in the order they
    /// were sent. Every recipient holds a reference to the same frame,
    /// and is given its turn at once, which writes what its socket takes.
    fn fan_out(&mut self) {
        let started = Instant::now();
        let (mut reached, mut looked) = (0, 0);
        while reached < FANOUT_RECIPIENTS && looked < FANOUT_SCAN {
            let Some(b) = self.broadcasts.front_mut() else {
                break;
            };
            if b.next >= self.clients.capacity() {
                debug!("say to {}: {} sessions", b.to, b.reached);
                self.broadcasts.pop_front();
                continue;
            }
            let k = b.next;
            b.next += 1;
            looked += 1;
            let Some(Client {
                engine: Engine::Framed(c),
                ..
            }) = self.clients.get_mut(k)
            else {
                continue;
            };
            let wanted = k != b.from_key && c.user().is_some_and(|u| b.to == "*" || u == b.to);
            if !wanted {
                continue;
            }
            c.push_message(&b.frame, started, &self.config.limits);
            b.reached += 1;
            reached += 1;
            self.drive(k);
            if started.elapsed() >= FANOUT_TIME {
                break;
            }
        }
    }

    fn run_action(&mut self, action: Action) {
        {
            match action {
                Action::Say {
                    from_key,
                    to,
                    frame,
                } => self.broadcasts.push_back(Broadcast {
                    from_key,
                    to,
                    frame,
                    next: 0,
                    reached: 0,
                }),
                Action::Spawn(req) => self.spawn(req),
                Action::Stdin {
                    conn,
                    id,
                    bytes,
                    eof,
                } => self.feed_stdin(conn, &id, &bytes, eof),
                Action::Cancel { conn, id } => self.cancel_command(conn, &id),
            }
        }
    }

    /// The hard bound on client buffers: while all connections together
    /// hold more than `--out-total`, the ones holding the most are closed
    /// without flushing (Redis's `maxmemory-clients` does the same). Below
    /// half of it nothing happens; in between, connections pause early
    /// (see `conn::water_marks`) and `say` is refused, which is logged as
    /// it starts and ends.
    fn evict_over_budget(&mut self) {
        let limit = self.config.limits.out_total;
        // The peak before evictions: their memory is freed too.
        self.buffered_peak = self.buffered_peak.max(self.stats.buffered_total());
        let pressure = self
            .config
            .limits
            .under_pressure(self.stats.buffered_total());
        if pressure != self.stats.pressure {
            self.stats.pressure = pressure;
            info!(
                "buffer pressure {}: connections hold {} bytes (budget {limit}); they pause at {}",
                if pressure { "on" } else { "off" },
                self.stats.buffered_total(),
                if pressure {
                    "16 KiB"
                } else {
                    "their high-water mark"
                }
            );
        }
        if self.stats.buffered_total() <= limit {
            return;
        }
        // Usually a few connections must go, out of many: a heap built in
        // linear time and popped a few times, rather than a sort of all.
        let mut holders: BinaryHeap<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.broken.is_none() && c.buffered > 0)
            .map(|(k, c)| (c.buffered, k))
            .collect();
        while let Some((held, k)) = holders.pop() {
            if self.stats.buffered_total() <= limit {
                break;
            }
            info!(
                "conn {k}: closed: connections hold {} buffer bytes, over --out-total {limit}; it held {held}",
                self.stats.buffered_total()
            );
            let client = &mut self.clients[k];
            client.fail("over the server's buffer budget".into());
            self.stats.buffered -= held;
            client.buffered = 0;
            self.stats.evicted += 1;
            self.to_close.push(k);
        }
    }

    /// glibc keeps freed memory on its heap for reuse, and gives back to
    /// the kernel only what lies at the top of it: after a burst, the
    /// buffers of many closed connections would stay resident for good.
    /// So once buffers have fallen [`TRIM_AFTER_FALL`] below their peak,
    /// and to half of it, free heap pages are returned (`malloc_trim`).
    /// Each call needs another rise and fall of that size, so it runs
    /// rarely; it costs a walk over the heap's free blocks.
    fn give_back_memory(&mut self) {
        let held = self.stats.buffered_total();
        if self.buffered_peak - held < TRIM_AFTER_FALL || held > self.buffered_peak / 2 {
            return;
        }
        let started = Instant::now();
        crate::sys::release_free_heap();
        info!(
            "buffers fell from {} to {held} bytes: free heap memory given back in {:?} (RSS now {} bytes)",
            self.buffered_peak,
            started.elapsed(),
            skiff::os::rss_bytes()
        );
        self.buffered_peak = held;
    }

    fn close_finished(&mut self) {
        if self.accept_paused && !self.to_close.is_empty() {
            self.accept_paused = false;
            for i in 0..self.listeners.len() {
                if !self.listener_queued[i] {
                    self.listener_queued[i] = true;
                    self.ready.push_back(Source::Listener(i));
                }
            }
        }
        for k in std::mem::take(&mut self.to_close) {
            match self.clients.get(k) {
                None => continue, // listed twice in one batch
                // Evicted or broken while a job is out: removed once the
                // job's result is back (the client's next turn lists it).
                Some(c) if c.job_in_flight() => continue,
                Some(_) => {}
            }
            let mut client = self.clients.remove(k);
            let _ = self.poll.registry().deregister(client.stream.source());
            // A client that goes takes its commands with it.
            let now = Instant::now();
            for (ck, ch) in self.children.iter_mut() {
                if ch.conn == Some(k) {
                    ch.conn = None;
                    ch.terminate(now, "client gone");
                    self.child_timers.push(Reverse((ch.next_wakeup(), ck)));
                }
            }
            if let Some(ip) = client.peer_ip
                && let Entry::Occupied(mut e) = self.per_ip.entry(ip)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            self.stats.connections -= 1;
            self.stats.buffered -= client.buffered;
            match &client.broken {
                Some(why) => debug!("conn {k}: closed ({why})"),
                None => debug!("conn {k}: closed"),
            }
        }
    }

    fn on_signal(&mut self) {
        let got: Vec<i32> = self.signals.pending().collect();
        if got.is_empty() {
            return;
        }
        if self.shutdown_by.is_some() {
            warn!("second signal: exiting now");
            std::process::exit(0);
        }
        info!(
            "signal {}: shutting down (no new connections; flushing {} clients, at most {:?})",
            got[0],
            self.clients.len(),
            self.config.shutdown_grace
        );
        self.shutdown_by = Some(Instant::now() + self.config.shutdown_grace);
        for slot in &mut self.listeners {
            if let Some(mut l) = slot.take() {
                let _ = self.poll.registry().deregister(l.source());
                if let Listener::FramedUnix(_, path) = &l {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let now = Instant::now();
        for (ck, ch) in self.children.iter_mut() {
            ch.terminate(now, "server shutting down");
            self.child_timers.push(Reverse((ch.next_wakeup(), ck)));
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for k in keys {
            let client = &mut self.clients[k];
            match &mut client.engine {
                Engine::Framed(c) => c.shut_down(),
                Engine::Raw(r) => r.handle_eof(),
            }
            self.drive(k);
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        for l in self.listeners.iter().flatten() {
            if let Listener::FramedUnix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// What the state machines may use beyond themselves, borrowed from the
/// reactor for one client's turn.
struct Env<'a> {
    limits: &'a Limits,
    stats: &'a mut Stats,
    services: &'a mut Services,
    actions: &'a mut Vec<Action>,
    jobs: &'a mut Vec<Submission>,
    /// Commands, for the pipes spliced frames come from.
    children: &'a Slab<ChildProc>,
    /// See [`Reactor::splice_works`].
    splice_works: &'a mut bool,
}

impl Env<'_> {
    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            limits: self.limits,
            stats: self.stats,
            services: self.services,
            actions: self.actions,
            jobs: self.jobs,
        }
    }
}

/// Writes queued output until it is gone, the socket would block, or the
/// turn's budget is spent.
fn flush(k: usize, client: &mut Client, env: &mut Env, now: Instant, budget: &mut usize) {
    flush_with(k, client, env, now, budget, &[]);
}

/// [`flush`], right after `handle_input(input)`: the output may include
/// echo bodies still in `input`, written with the queued bytes in one
/// `writev`.
fn flush_with(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
    input: &[u8],
) {
    while client.writable && *budget > 0 && client.broken.is_none() {
        let written = match &client.engine {
            Engine::Framed(c) if c.is_lending() => {
                // Reply headers interleaved with echo bodies still in
                // `input`: one writev.
                let mut parts = [IoSlice::new(&[]); 2 * MAX_LENT + 1];
                let (mut count, mut total) = (0, 0);
                for part in c.output_parts(input) {
                    let part = &part[..part.len().min(*budget - total)];
                    if part.is_empty() {
                        break;
                    }
                    parts[count] = IoSlice::new(part);
                    count += 1;
                    total += part.len();
                }
                client.stream.write_vectored(&parts[..count])
            }
            engine => {
                let out = engine.output();
                if out.is_empty() {
                    if !send_file(k, client, env, now, budget)
                        && !send_spliced(k, client, env, now, budget)
                    {
                        return;
                    }
                    continue;
                }
                client.stream.write(&out[..out.len().min(*budget)])
            }
        };
        match written {
            Ok(0) => client.fail("write returned 0".into()),
            Ok(n) => {
                *budget -= n;
                env.stats.bytes_out += n as u64;
                match &mut client.engine {
                    Engine::Framed(c) => c.handle_written(n, &mut env.ctx(now)),
                    Engine::Raw(r) => r.handle_written(n, now),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!("conn {k}: socket full, output waits");
                client.writable = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => client.fail(format!("write: {e}")),
        }
    }
}

/// Moves a `get` body from the file to the socket inside the kernel.
/// Returns false when there is nothing to send this way.
fn send_file(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
) -> bool {
    let Client {
        stream,
        engine: Engine::Framed(c),
        ..
    } = client
    else {
        return false;
    };
    let Some((file, remaining)) = c.file_to_send() else {
        return false;
    };
    let count = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(*budget);
    let sent = crate::sys::sendfile(stream.as_fd(), std::os::fd::AsFd::as_fd(file), count);
    match sent {
        Ok(n) => {
            *budget = budget.saturating_sub(n.max(1));
            env.stats.bytes_out += n as u64;
            c.handle_file_sent(n, &mut env.ctx(now));
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            debug!("conn {k}: socket full during sendfile");
            client.writable = false;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            c.zero_copy_unavailable();
            return false;
        }
        Err(e) => client.fail(format!("sendfile: {e}")),
    }
    true
}

/// Moves a command's output frame body from its pipe to the socket inside
/// the kernel. Returns false when there is nothing to move this way.
fn send_spliced(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
) -> bool {
    let Client {
        stream,
        engine: Engine::Framed(c),
        ..
    } = client
    else {
        return false;
    };
    let Some(splice) = c.splice_pending() else {
        return false;
    };
    let pipe = env
        .children
        .get(splice.child)
        .and_then(|ch| match splice.fd {
            Fd::Stdout => ch.stdout.as_ref(),
            _ => ch.stderr.as_ref(),
        });
    let Some(pipe) = pipe else {
        // Cannot happen: a command is kept while a frame from it is in flight.
        client.fail("a command's pipe vanished mid-frame".into());
        return false;
    };
    let count = splice.remaining.min(*budget);
    match crate::sys::splice(std::os::fd::AsFd::as_fd(pipe), stream.as_fd(), count) {
        Ok(0) => client.fail("a command's pipe ended mid-frame".into()),
        Ok(n) => {
            *budget = budget.saturating_sub(n);
            env.stats.bytes_out += n as u64;
            c.handle_spliced(n, now);
        }
        // The pipe holds the bytes (they were counted): the socket is full.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            debug!("conn {k}: socket full during splice");
            client.writable = false;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => {
            if e.raw_os_error() == Some(libc::EINVAL) {
                warn!("splice refused ({e}); command output is copied from now on");
                *env.splice_works = false;
            }
            client.fail(format!("splice: {e}"));
        }
    }
    true
}

/// Puts the client's deadline in the heap unless an earlier one is there.
fn schedule(
    k: usize,
    client: &mut Client,
    limits: &Limits,
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
) {
    let deadline = client.deadline(limits);
    if client.timer.is_none_or(|t| deadline < t) {
        client.timer = Some(deadline);
        timers.push(Reverse((deadline, k)));
    }
}
