//! The event loop: one thread, one `mio::Poll`, every socket.
//!
//! This is the only module that calls `poll`, `read`, `write`, `accept`,
//! `recv_from`, `send_to` and the registry. Protocol decisions belong to
//! the connection state machines, which it drives through one contract
//! (`crate::engine::Engine`: `handle_*` in, `poll_transmit` out); it
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
//!
//! A TLS handshake is the one step whose cost does not scale with bytes
//! read (a signature and a key exchange, about half a millisecond), so it
//! has a budget of its own: [`HANDSHAKES_PER_TURN`] per turn, the rest
//! wait their turn in a queue (`handshakes`).
//!
//! This file is the skeleton: the `Reactor`, `run`, `dispatch` and the
//! ready list. Each concern has its own child module:
//!
//! | module | what |
//! |---|---|
//! | `config` | what `skiffd serve` was asked for |
//! | `source` | tokens: which table an event is for |
//! | `listeners` | binding, accepting, admitting or refusing, datagrams |
//! | `client` | one client's turn (`drive_client`), its timers, closing late |
//! | `handshakes` | the per-turn budget of TLS handshake steps, and its queue |
//! | `ftp` | an FTP session's passive listener and data connection |
//! | `output` | the one flush path: `poll_transmit`, then `writev`, `sendfile` or `splice` |
//! | `page_cache` | whether a file's range is cached, asked before `sendfile` (`cachestat`) |
//! | `jobs` | handing jobs to the worker pool and results back |
//! | `broadcast` | actions from handlers; `say` spread over turns |
//! | `memory` | the `--out-total` budget: eviction, giving memory back |
//! | `commands` | running commands: pipes, pidfd, timers, containment |
//! | `accounts` | sessions of deleted or re-passworded users end |
//! | `shutdown` | the first signal drains, the second exits |

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::children::{ChildProc, Fd};

mod accounts;
mod broadcast;
mod client;
mod commands;
mod config;
mod ftp;
mod handshakes;
mod jobs;
mod listeners;
mod memory;
mod output;
mod page_cache;
mod shutdown;
mod source;
#[cfg(test)]
mod tests;

use crate::ctx::{Action, Submission};
use crate::pool::Pool;
use crate::services::Services;
use crate::stats::Stats;
use broadcast::Broadcast;
use client::{Client, Protocol};
pub use config::Config;
pub use ftp::Passive as FtpPassive;
use listeners::Listener;
use source::Source;

/// Bytes read per `read` call (the size of the shared read buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read from one client per turn before others are served.
pub const READ_BUDGET: usize = 256 * 1024;
/// Most bytes copied to one client per turn (and its least share of
/// zero-copy bytes, see [`TURN_BYTES`]).
pub const WRITE_BUDGET: usize = 256 * 1024;
/// Bytes the kernel moves without copying (`sendfile`, `splice`) that a
/// turn shares out among the clients it serves (see `output::Budget`): a
/// client alone may send this much before the loop polls again, eight or
/// more get [`WRITE_BUDGET`] each. Reads and copied writes keep their
/// fixed budgets: their cost grows with every byte (parsing, encrypting).
pub(super) const TURN_BYTES: usize = 2 << 20;
/// Most connections accepted from one listener per turn.
pub const ACCEPT_BUDGET: usize = 64;
/// Most datagrams answered from one UDP socket per turn.
const DATAGRAM_BUDGET: usize = 64;
/// Most TLS connections whose handshake advances in one turn (see
/// `handshakes`).
pub const HANDSHAKES_PER_TURN: usize = 4;
/// The server: its poll, its sources and its counters.
pub struct Reactor {
    poll: Poll,
    /// Listening sockets; a slot is emptied at shutdown.
    listeners: Vec<Option<Listener>>,
    /// SIGINT/SIGTERM, delivered through a pipe registered with the poll.
    signals: Signals,
    /// Connected clients, keyed by slab key (see `source`).
    clients: Slab<Client>,
    /// Sources that may still be ready after using up their budget.
    ready: VecDeque<Source>,
    /// TLS clients waiting to advance their handshake, first come first
    /// served (see `handshakes`).
    handshake_queue: VecDeque<usize>,
    /// Handshake steps this turn may still take.
    handshakes_left: usize,
    /// Listeners on the ready list already.
    listener_queued: Vec<bool>,
    /// Client deadlines, earliest first; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open connections per peer IP.
    per_ip: HashMap<IpAddr, usize>,
    /// Clients to remove after the current batch.
    to_close: Vec<usize>,
    /// Zero-copy bytes each client may send this turn: [`TURN_BYTES`]
    /// shared among the sources the turn serves (see [`Reactor::share`]).
    share: usize,
    /// The one read buffer all clients share: input is consumed from it
    /// directly, so idle clients hold none.
    scratch: Box<[u8]>,
    /// Where a TLS client's input is decrypted to, shared the same way.
    plaintext: Vec<u8>,
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
    /// Running commands, keyed by slab key (see `source`).
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
    /// When users.json is next looked at (see `accounts`).
    users_check_at: Instant,
    /// The next FTP passive port to try.
    ftp_next_port: u16,
    /// FTP data connections open now (they count as connections).
    ftp_data_conns: usize,
    /// The loop's clock, read once per turn right after `poll` returns
    /// and used by everything the turn does: deadlines need no finer time.
    now: Instant,
}

impl Reactor {
    /// Binds every listener of `config` and prepares the loop.
    pub fn bind(config: Config, services: Services) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut listeners = Listener::bind_all(&config)?;
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
            handshake_queue: VecDeque::new(),
            handshakes_left: HANDSHAKES_PER_TURN,
            timers: BinaryHeap::new(),
            per_ip: HashMap::new(),
            to_close: Vec::new(),
            share: WRITE_BUDGET,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            plaintext: Vec::new(),
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
            users_check_at: now + accounts::USERS_CHECK_EVERY,
            ftp_next_port: 0,
            ftp_data_conns: 0,
            now,
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
            self.turn(events.iter());
            if let Some(by) = self.shutdown_by {
                if self.clients.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.now >= by {
                    warn!(
                        "shutdown deadline passed; dropping {} connections",
                        self.clients.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// One turn of the loop for the batch of events one `poll` returned:
    /// dispatch each, serve the ready list, fire timers, and only then
    /// close what finished (close late).
    fn turn<'a, E>(&mut self, events: E)
    where
        E: IntoIterator<Item = &'a Event>,
        E::IntoIter: Clone,
    {
        self.now = Instant::now();
        let events = events.into_iter();
        self.share =
            Reactor::share(events.clone().count() + self.ready.len() + self.handshake_queue.len());
        // Handshakes that waited go first: they came before this batch.
        self.handshakes_left = HANDSHAKES_PER_TURN;
        self.serve_handshake_queue();
        for event in events {
            self.dispatch(event);
        }
        self.serve_ready();
        self.fire_timers();
        self.fire_child_timers();
        self.check_users();
        self.run_actions();
        self.evict_over_budget();
        self.close_finished();
        self.give_back_memory();
    }

    /// Each client's zero-copy budget in a turn serving `sources`
    /// (events and ready sources; a client with both counts twice).
    fn share(sources: usize) -> usize {
        (TURN_BYTES / sources.max(1)).clamp(WRITE_BUDGET, TURN_BYTES)
    }

    /// Zero while anything is still ready; else until the earliest
    /// deadline, by a fresh look at the clock (`now` is as old as the turn).
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() || !self.broadcasts.is_empty() || !self.handshake_queue.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let timers = [self.timers.peek(), self.child_timers.peek()];
        let next = (timers.into_iter().flatten().map(|Reverse((t, _))| *t))
            .chain(self.shutdown_by)
            .fold(self.users_check_at, Instant::min);
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Routes one event to its source by token; an event for a source that is
    /// gone is stale and ignored.
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
            Some(Source::FtpData(k, part)) => {
                let Some(f) = self.clients.get_mut(k).and_then(|c| c.protocol.ftp()) else {
                    return; // a stale event for a closed session
                };
                let gone = event.is_read_closed() || event.is_error();
                f.on_event(
                    part,
                    event.is_readable() || gone,
                    event.is_writable() || event.is_write_closed() || event.is_error(),
                );
                self.drive(k);
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
                Source::Signals | Source::Jobs | Source::FtpData(..) => {}
            }
        }
    }

    /// One turn for client `k`, then let its commands' output flow if it
    /// has room for it again.
    fn drive(&mut self, k: usize) {
        self.drive_client(k);
        self.submit_jobs();
        self.resume_children_of(k);
    }
}
