//! One client's turn: its socket, its state machine, and what the
//! reactor remembers about its readiness. `drive_client` writes first,
//! reads within the turn's budget, feeds the state machine, writes again,
//! then derives interest, the ready list and the timer from the new state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::hash_map::Entry;
use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;
use std::time::Instant;

use log::{debug, info};
use mio::Interest;
use mio::net::{TcpStream, UnixStream};
use slab::Slab;

use super::config::Config;
use super::ftp::{FtpClient, FtpEnv, data_requests, drive_data};
use super::handshakes;
use super::output::{Budget, flush};
use super::{READ_BUDGET, Reactor, Source};
use crate::children::ChildProc;
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::ctx::{Action, Submission};
use crate::engine::Engine;
use crate::handlers::raw_echo::RawEcho;
use crate::limits::Limits;
use crate::services::Services;
use crate::stats::Stats;
use crate::tls::{self, Received, TlsError, TlsSession};

/// A connected stream socket.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    pub(super) fn write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
}

/// The state machine behind a client socket. Everything every kind of
/// connection does goes through [`Engine`] ([`Protocol::engine_mut`]):
/// reading, writing, timers, jobs, closing. What only the framed protocol
/// does — chat pushes, command output and the splicing of it, rechecking
/// a login — stays on [`Conn`] itself ([`Protocol::framed`]): it is how
/// that protocol reaches the reactor's other tables (commands,
/// broadcasts), not part of a connection's contract with its socket.
pub(super) enum Protocol {
    Framed(Box<Conn>),
    RawEcho(RawEcho),
    /// An FTP control connection, with its data sockets.
    Ftp(Box<FtpClient>),
}

impl Protocol {
    pub(super) fn engine(&self) -> &dyn Engine {
        match self {
            Protocol::Framed(c) => &**c,
            Protocol::RawEcho(r) => r,
            Protocol::Ftp(f) => &f.session,
        }
    }

    pub(super) fn engine_mut(&mut self) -> &mut dyn Engine {
        match self {
            Protocol::Framed(c) => &mut **c,
            Protocol::RawEcho(r) => r,
            Protocol::Ftp(f) => &mut f.session,
        }
    }

    /// The FTP session and its data sockets, for what only FTP does.
    pub(super) fn ftp(&mut self) -> Option<&mut FtpClient> {
        match self {
            Protocol::Ftp(f) => Some(f),
            _ => None,
        }
    }

    /// The framed connection, for what only it does.
    pub(super) fn framed(&mut self) -> Option<&mut Conn> {
        match self {
            Protocol::Framed(c) => Some(c),
            _ => None,
        }
    }
}

/// One client: its socket, its state machine, and what the reactor
/// remembers about its readiness.
pub(super) struct Client {
    /// The socket.
    pub(super) stream: Stream,
    /// The protocol state machine.
    pub(super) protocol: Protocol,
    /// TLS between the socket and the state machine, on a TLS listener's
    /// connections (boxed: a plain connection pays one pointer for it).
    pub(super) tls: Option<Box<TlsSession>>,
    /// Nothing has been read yet (the first bytes say whether a TLS
    /// client reached a plain port).
    pub(super) fresh: bool,
    /// Peer address, for the per-IP limit (None for Unix sockets).
    pub(super) peer_ip: Option<IpAddr>,
    /// Interest currently registered.
    pub(super) interest: Interest,
    /// No read has hit `WouldBlock` since the last readable event.
    pub(super) readable: bool,
    /// The poll said the peer finished sending (or the socket failed):
    /// read until the end, since no further edge will announce it.
    pub(super) read_closed: bool,
    /// No write has hit `WouldBlock` since the last writable event.
    pub(super) writable: bool,
    /// On the ready list already.
    pub(super) queued: bool,
    /// On the handshake queue already (see `handshakes`).
    pub(super) awaits_handshake: bool,
    /// The deadline this client has in the timer heap.
    pub(super) timer: Option<Instant>,
    /// Set when the socket failed: close without flushing.
    pub(super) broken: Option<String>,
    /// Buffer bytes this client counts for in `Stats::buffered`.
    pub(super) buffered: usize,
}

impl Client {
    pub(super) fn wants_read(&self, limits: &Limits) -> bool {
        self.broken.is_none()
            && self.protocol.engine().wants_read(limits)
            && self.tls.as_ref().is_none_or(|t| t.wants_read())
    }

    /// Brings `stats.buffered` up to date with this client's buffers.
    pub(super) fn account(&mut self, stats: &mut Stats) {
        let tls = self.tls.as_ref().map_or(0, |t| t.buffered_bytes())
            + match &self.protocol {
                Protocol::Ftp(f) => f.tls_buffered(),
                _ => 0,
            };
        let now = self.protocol.engine().buffered_bytes() + tls;
        stats.buffered = stats.buffered - self.buffered + now;
        self.buffered = now;
    }

    pub(super) fn is_done(&self) -> bool {
        if self.job_in_flight() {
            return false; // close late: the job's result comes back first
        }
        self.broken.is_some() || self.protocol.engine().is_done()
    }

    /// The socket failed, or the server gives up on this client: nothing
    /// more is read or written, and its state machine drops what it
    /// queued (a job in flight still comes back before the client goes).
    pub(super) fn fail(&mut self, why: String) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(why);
        self.protocol.engine_mut().handle_reset();
    }

    pub(super) fn job_in_flight(&self) -> bool {
        self.protocol.engine().job_in_flight()
    }

    /// Something waits for the socket: bytes, a file, a pipe. Over TLS:
    /// ciphertext, or plaintext the session can take (not before the
    /// handshake is done).
    pub(super) fn wants_write(&mut self) -> bool {
        if let Some(tls) = &self.tls {
            if tls.wants_write() {
                return true;
            }
            if tls.is_handshaking() {
                return false;
            }
        }
        self.protocol.engine_mut().poll_transmit(&[]).is_some()
    }

    /// When this client needs a timer: its state machine's deadline, or
    /// its TLS handshake's if that is earlier.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let mut engine = self.protocol.engine().deadline(limits);
        if let Protocol::Ftp(f) = &self.protocol
            && let Some(h) = f.handshake_deadline()
        {
            engine = Some(engine.map_or(h, |e| e.min(h)));
        }
        match self.tls.as_ref().and_then(|t| t.handshake_deadline()) {
            Some(h) => Some(engine.map_or(h, |e| e.min(h))),
            None => engine,
        }
    }
}

impl Reactor {
    /// Gives each client whose deadline has passed `handle_timeout` and a
    /// turn; heap entries a later deadline replaced are skipped. The
    /// clients due are taken from the heap first: an engine that leaves
    /// its deadline in the past (it waits for a job before it can act)
    /// comes up again next turn, not over and over inside this one, where
    /// the loop would never poll for the job's result.
    pub(super) fn fire_timers(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        while let Some(&Reverse((t, k))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            due.push((t, k));
        }
        for (t, k) in due {
            let Some(client) = self.clients.get_mut(k) else {
                continue;
            };
            if client.timer != Some(t) {
                continue; // superseded by an earlier deadline, or a reused key
            }
            client.timer = None;
            if let Some(tls) = &client.tls
                && tls.handshake_deadline().is_some_and(|d| now >= d)
            {
                info!(
                    "conn {k}: TLS handshake not done after {:?}: closed",
                    self.config.limits.tls_handshake_timeout
                );
                client.fail("TLS handshake timed out".into());
            }
            self.data_handshake_timeout(k, now);
            self.with_engine(k, now, |e, ctx| e.handle_timeout(ctx));
            self.drive(k);
        }
    }

    /// Closes client `k`'s FTP data connection if its TLS handshake is
    /// overdue (its session then answers `425`/`426` on the control one).
    fn data_handshake_timeout(&mut self, k: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(k) else {
            return;
        };
        let Some(f) = client.protocol.ftp() else {
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
        let Some(ip) = f.handshake_timed_out(k, self.poll.registry(), &mut env, now) else {
            return;
        };
        self.ftp_data_conns = self.ftp_data_conns.saturating_sub(1);
        if let Entry::Occupied(mut e) = self.per_ip.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Close late: removes the clients that finished during this batch (a
    /// client whose job is still out stays until it is back), and lets
    /// paused accepts resume now that descriptors are free.
    pub(super) fn close_finished(&mut self) {
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
            // An FTP session's data sockets go with it.
            if let Some(f) = client.protocol.ftp()
                && let Some(ip) = f.close_all(self.poll.registry())
            {
                self.ftp_data_conns = self.ftp_data_conns.saturating_sub(1);
                if let Entry::Occupied(mut e) = self.per_ip.entry(ip) {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
            }
            // A client that goes takes its commands with it.
            let now = self.now;
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

    /// One turn for client `k`: write, read within budget, feed the state
    /// machine, write again; then update interest, ready list and timer.
    pub(super) fn drive_client(&mut self, k: usize) {
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
            per_ip,
            ftp_next_port,
            ftp_data_conns,
            now,
            plaintext,
            share,
            handshake_queue,
            handshakes_left,
            ..
        } = self;
        let clients_open = clients.len();
        let Some(client) = clients.get_mut(k) else {
            return;
        };
        let limits = &config.limits;
        let now = *now;
        let mut env = Env {
            limits,
            stats,
            services,
            actions,
            jobs,
            children,
            splice_works,
        };
        // The FTP data side's borrows of the loop, made where needed (the
        // read below shares `scratch` and `plaintext`).
        macro_rules! ftp_env {
            () => {
                FtpEnv {
                    registry: poll.registry(),
                    scratch,
                    passive: &config.ftp_passive,
                    next_port: ftp_next_port,
                    data_conns: ftp_data_conns,
                    per_ip,
                    clients: clients_open,
                    max_conns: config.max_conns,
                    max_conns_per_ip: config.max_conns_per_ip,
                    tls: config.tls_config.as_ref(),
                    handshake_timeout: config.limits.tls_handshake_timeout,
                    plaintext,
                    share: *share,
                    handshakes_left,
                }
            };
        }
        // What an FTP session asked of its data side since its last turn
        // (a timer may have ended a passive listener) is done before its
        // replies go: a `425` must not reach a client while the port it
        // speaks of still accepts.
        if let Some(f) = client.protocol.ftp() {
            data_requests(k, f, &mut env, &mut ftp_env!(), now);
        }
        let mut write_budget = Budget::new(*share);
        flush(k, client, &mut env, now, &mut write_budget, &[]);
        // One bounded step of server-side work (a file copied through the
        // buffer, requests left from the last share), then back to the
        // loop: a 1 GiB file never holds it for long.
        client.protocol.engine_mut().start_turn(&mut env.ctx(now));
        flush(k, client, &mut env, now, &mut write_budget, &[]);
        start_control_tls(k, client, config, now);
        let ftp_control = matches!(client.protocol, Protocol::Ftp(_));
        // A handshake step is the one read whose CPU does not scale with
        // its bytes: a few per turn (`handshakes`), the rest wait unread.
        let handshake_waits = client.readable
            && client.tls.as_ref().is_some_and(|t| t.is_handshaking())
            && client.wants_read(limits)
            && !handshakes::take_step(handshakes_left);
        let mut read_budget = READ_BUDGET;
        while !handshake_waits && client.readable && client.wants_read(limits) && read_budget > 0 {
            match client.stream.read(scratch) {
                Ok(0) => {
                    client.readable = false;
                    debug!("conn {k}: peer finished sending");
                    if let Some(tls) = &mut client.tls
                        && !tls.handle_eof()
                    {
                        debug!("conn {k}: TLS ended without close_notify");
                    }
                    client.protocol.engine_mut().handle_eof(&mut env.ctx(now));
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
                    // Not on FTP: a client aborting a transfer sends the
                    // Telnet Synch as TCP urgent data, and a read stops at
                    // the urgent mark with the `ABOR` still behind it.
                    if n < scratch.len() && !client.read_closed && !ftp_control {
                        client.readable = false;
                    }
                    env.stats.bytes_in += n as u64;
                    let fresh = std::mem::replace(&mut client.fresh, false);
                    let mut peer_closed = false;
                    let input: &[u8] = if let Some(session) = client.tls.as_deref_mut() {
                        match decrypt(k, session, &scratch[..n], plaintext) {
                            Ok(closed) => {
                                peer_closed = closed;
                                plaintext
                            }
                            Err(e) => {
                                // One line, then the alert rustls queued
                                // (if the socket takes it), then close.
                                info!("conn {k}: {e}");
                                let _ = client.stream.write(session.output());
                                client.fail(e.to_string());
                                break;
                            }
                        }
                    } else if fresh && tls::looks_like_tls(&scratch[..n]) {
                        refuse_tls(k, client);
                        break;
                    } else {
                        &scratch[..n]
                    };
                    if input.is_empty() {
                        // Handshake records only: send the replies.
                        flush(k, client, &mut env, now, &mut write_budget, &[]);
                    } else {
                        let engine = client.protocol.engine_mut();
                        engine.handle_input(input, &mut env.ctx(now));
                        // Answer at once: replies leave while the request's
                        // bytes are still hot, and a drained output keeps
                        // backpressure from kicking in needlessly. An echo
                        // body may go straight from `input`; what the socket
                        // did not take is copied when `input` is released.
                        flush(k, client, &mut env, now, &mut write_budget, input);
                        let engine = client.protocol.engine_mut();
                        engine.release_input(input, &mut env.ctx(now));
                    }
                    if peer_closed {
                        debug!("conn {k}: peer said goodbye (close_notify)");
                        client.readable = false;
                        client.protocol.engine_mut().handle_eof(&mut env.ctx(now));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    debug!("conn {k}: nothing more to read");
                    client.readable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => client.fail(format!("read: {e}")),
            }
        }
        // An FTP session's data connection: its bytes move in the same
        // turn, before `end_turn` hands an upload's batch to a worker.
        if let Some(f) = client.protocol.ftp() {
            drive_data(k, f, &mut env, &mut ftp_env!(), now);
        }
        client.protocol.engine_mut().end_turn(&mut env.ctx(now));
        flush(k, client, &mut env, now, &mut write_budget, &[]);
        start_control_tls(k, client, config, now);
        // A TLS connection that is done says goodbye (close_notify), so
        // the peer knows the stream was not cut short. One try: the socket
        // closes next whether it took it or not.
        if let Some(tls) = &mut client.tls
            && client.broken.is_none()
            && client.protocol.engine().is_done()
        {
            tls.close();
            flush(k, client, &mut env, now, &mut write_budget, &[]);
        }
        // Nothing more to send and nothing on its way: a TLS output
        // buffer kept for a transfer goes.
        if !client.job_in_flight()
            && !client.wants_write()
            && let Some(tls) = &mut client.tls
        {
            tls.release_idle();
        }
        client.account(env.stats);

        if client.is_done() {
            to_close.push(k);
            return;
        }
        let (wants_read, wants_write) = (client.wants_read(limits), client.wants_write());
        let more_to_read = client.readable && wants_read && !handshake_waits;
        let more_to_write = client.writable && wants_write;
        let more_work = client.protocol.engine().wants_turn(limits)
            || client.protocol.ftp().is_some_and(|f| f.still_ready());
        if (more_to_read || more_to_write || more_work) && !client.queued {
            client.queued = true;
            ready.push_back(Source::Client(k));
        }
        let data_waits = client
            .protocol
            .ftp()
            .is_some_and(|f| f.awaits_handshake_step());
        if (handshake_waits || data_waits) && !client.awaits_handshake {
            debug!("conn {k}: waits for a handshake step (this turn's are taken)");
            client.awaits_handshake = true;
            handshake_queue.push_back(k);
        }
        let want = interest(wants_read, wants_write);
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
}

/// What the state machines may use beyond themselves, borrowed from the
/// reactor for one client's turn.
pub(super) struct Env<'a> {
    pub(super) limits: &'a Limits,
    pub(super) stats: &'a mut Stats,
    pub(super) services: &'a mut Services,
    pub(super) actions: &'a mut Vec<Action>,
    pub(super) jobs: &'a mut Vec<Submission>,
    /// Commands, for the pipes spliced frames come from.
    pub(super) children: &'a Slab<ChildProc>,
    /// See [`Reactor::splice_works`].
    pub(super) splice_works: &'a mut bool,
}

impl Env<'_> {
    pub(super) fn ctx(&mut self, now: Instant) -> Ctx<'_> {
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

/// The interest a client needs: derived from its state, never set by hand.
pub(super) fn interest(wants_read: bool, wants_write: bool) -> Interest {
    match (wants_read, wants_write) {
        (true, true) => Interest::READABLE | Interest::WRITABLE,
        (false, true) => Interest::WRITABLE,
        // Nothing to wait for but the peer hanging up.
        _ => Interest::READABLE,
    }
}

/// Decrypts what a TLS client sent into `plaintext` (cleared first);
/// true once the peer has said goodbye (`close_notify`).
fn decrypt(
    k: usize,
    session: &mut TlsSession,
    ciphertext: &[u8],
    plaintext: &mut Vec<u8>,
) -> Result<bool, TlsError> {
    plaintext.clear();
    let was_handshaking = session.is_handshaking();
    let received = session.handle_ciphertext(ciphertext, plaintext)?;
    if was_handshaking && !session.is_handshaking() {
        debug!("conn {k}: TLS handshake done ({})", session.describe());
    }
    Ok(received == Received::Closed)
}

/// An FTP session answered `AUTH TLS` and its `234` is out: from here on
/// its control connection's bytes go through TLS. The session read nothing
/// since the command and dropped what came with it, so the first byte the
/// TLS layer sees is the client's; clear text there fails as "not TLS".
fn start_control_tls(k: usize, client: &mut Client, config: &Config, now: Instant) {
    let Some(f) = client.protocol.ftp() else {
        return;
    };
    if !f.session.wants_control_tls() || client.tls.is_some() {
        return;
    }
    let Some(tls_config) = &config.tls_config else {
        // Cannot happen: AUTH TLS is offered only with a configuration.
        client.fail("AUTH TLS without a TLS configuration".into());
        return;
    };
    let timeout = config.limits.tls_handshake_timeout;
    match TlsSession::new(std::sync::Arc::clone(tls_config), now, timeout) {
        Ok(session) => {
            debug!("ftp {k}: AUTH TLS: the control connection's handshake begins");
            client.tls = Some(Box::new(session));
            if let Some(f) = client.protocol.ftp() {
                f.session.handle_control_tls_started();
            }
        }
        Err(e) => {
            info!("ftp {k}: AUTH TLS: {e}");
            client.fail(e.to_string());
        }
    }
}

/// A TLS handshake reached a plain framed port: one log line, a TLS alert
/// its library can report (instead of a JSON error it cannot read), and
/// the connection closes.
fn refuse_tls(k: usize, client: &mut Client) {
    info!("conn {k}: a TLS handshake on a plain port (TLS clients use --tls-listen's port)");
    let _ = client.stream.write(&tls::REFUSAL_ALERT);
    client.fail("TLS on a plain port".into());
}

/// Puts the client's deadline in the heap unless an earlier one is there.
pub(super) fn schedule(
    k: usize,
    client: &mut Client,
    limits: &Limits,
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
) {
    let Some(deadline) = client.deadline(limits) else {
        return;
    };
    if client.timer.is_none_or(|t| deadline < t) {
        client.timer = Some(deadline);
        timers.push(Reverse((deadline, k)));
    }
}
