//! An FTP session's sockets beyond its control connection: the passive
//! listener and the data connection. The session ([`FtpSession`]) says
//! what it wants done with them ([`DataRequest`]) and what to send; this
//! module binds, accepts, reads, writes (`sendfile` for `RETR`) and closes,
//! and tells the session what happened.
//!
//! ```text
//!   Listen       → bind a port of --ftp-passive on the control socket's
//!                  local address; announce --ftp-advertise or that address
//!   accept       → only from the control peer's IP (the session decides);
//!                  the listener goes once one is kept
//!   data_output  → write / sendfile within the turn's budget (a range
//!                  not in the page cache goes back to the session first)
//!   data_input   → read within the turn's budget, or (a plain upload)
//!                  splice from the socket into the session's pipe within
//!                  the turn's zero-copy share
//!   CloseData    → close, then handle_data_closed
//! ```
//!
//! Both data sockets are registered for reading and writing at once:
//! readiness is edge-triggered, so that costs an event per change, and
//! the flags below remember what is still ready.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use rustls::ServerConfig;

use super::READ_BUDGET;
use super::client::Env;
use super::handshakes;
use super::output::{Budget, Sent, Via};
use super::page_cache;
use super::source::{DataSocket, Source};
use crate::tls::session::OUT_LIMIT;
use crate::tls::{Received, TlsSession};
use skiffd_core::ftp::{DataIn, DataOut, DataRequest, FtpSession};

/// Most ports tried for one passive listener before giving up (`425`).
const BIND_TRIES: usize = 64;
/// Connections accepted on a passive listener per turn (one is kept; the
/// others came from elsewhere and are closed).
const ACCEPTS_PER_TURN: usize = 4;
/// Rounds of requests and I/O per turn: each can make the session ask for
/// more (a reply, a close, a new listener); the rest waits a turn.
const ROUNDS: usize = 8;

/// Where passive ports come from, and what a 227 announces.
#[derive(Debug, Clone)]
pub struct Passive {
    /// The port range (`--ftp-passive LO-HI`); `None`: any free port.
    pub ports: Option<(u16, u16)>,
    /// The address announced (`--ftp-advertise`); `None`: the control
    /// connection's local address.
    pub advertise: Option<IpAddr>,
}

/// An FTP session and its data sockets.
pub(super) struct FtpClient {
    /// The protocol state machine (the control connection's engine).
    pub(super) session: FtpSession,
    /// The control socket's local address: passive ports are bound there.
    local: SocketAddr,
    /// The passive listener, if any.
    listener: Option<TcpListener>,
    /// The listener may have connections waiting.
    acceptable: bool,
    /// The data connection, if any.
    data: Option<DataConn>,
}

/// A data connection and what the reactor remembers about its readiness.
struct DataConn {
    stream: TcpStream,
    /// The peer's address, for the per-IP count.
    ip: IpAddr,
    readable: bool,
    writable: bool,
    /// TLS under it (`PROT P`): the session's bytes are encrypted here.
    tls: Option<Box<TlsSession>>,
    /// The session asked for the close: over TLS the connection stays
    /// until the ciphertext the session counts as sent, and the
    /// `close_notify` after it, have gone out.
    closing: bool,
    /// Its TLS handshake waits for a step of a later turn's budget (see
    /// `handshakes`): not read meanwhile, and not owed a turn for it.
    awaits_handshake_step: bool,
}

impl FtpClient {
    pub(super) fn new(session: FtpSession, local: SocketAddr) -> FtpClient {
        FtpClient {
            session,
            local,
            listener: None,
            acceptable: false,
            data: None,
        }
    }

    /// An event for one of the data sockets.
    pub(super) fn on_event(&mut self, part: DataSocket, readable: bool, writable: bool) {
        match part {
            DataSocket::Listener => self.acceptable |= readable,
            DataSocket::Connection => {
                if let Some(d) = &mut self.data {
                    d.readable |= readable;
                    d.writable |= writable;
                }
            }
        }
    }

    /// Whether the data connection could still move bytes without a new
    /// event (the turn's budget ran out): the client is owed a turn.
    pub(super) fn still_ready(&self) -> bool {
        let data = self.data.as_ref().is_some_and(|d| {
            (d.readable && !d.awaits_handshake_step && self.wants_data_read(d))
                || (d.writable && d.tls.as_ref().is_some_and(|t| t.wants_write()))
                || (d.closing && d.tls.as_ref().is_some_and(|t| !t.is_handshaking()))
                || (d.writable && !matches!(self.session.data_output(), DataOut::Nothing))
        });
        data || (self.acceptable && self.listener.is_some())
    }

    /// The data connection's TLS handshake waits for a step of the
    /// handshake budget: the reactor queues this client for one.
    pub(super) fn awaits_handshake_step(&self) -> bool {
        self.data.as_ref().is_some_and(|d| d.awaits_handshake_step)
    }

    /// Whether to read the data connection: while the session wants
    /// bytes, and over TLS while the handshake is going (it carries no
    /// data yet, and the client waits for our answer).
    fn wants_data_read(&self, d: &DataConn) -> bool {
        match &d.tls {
            Some(t) if t.is_handshaking() => t.wants_read(),
            _ if d.closing => false,
            Some(t) => t.wants_read() && self.session.wants_data_read(),
            None => self.session.wants_data_read(),
        }
    }

    /// Bytes the data connection's TLS holds, for the buffer budget.
    pub(super) fn tls_buffered(&self) -> usize {
        self.data
            .as_ref()
            .and_then(|d| d.tls.as_ref())
            .map_or(0, |t| t.buffered_bytes())
    }

    /// When the data connection's TLS handshake must be done by.
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        self.data
            .as_ref()
            .and_then(|d| d.tls.as_ref())
            .and_then(|t| t.handshake_deadline())
    }

    /// The data connection's TLS handshake took too long: close it (the
    /// session answers on the control connection).
    pub(super) fn handshake_timed_out(
        &mut self,
        k: usize,
        registry: &Registry,
        env: &mut Env,
        now: Instant,
    ) -> Option<IpAddr> {
        if self.handshake_deadline().is_none_or(|d| now < d) {
            return None;
        }
        info!("ftp {k}: data connection: TLS handshake not done in time; closed");
        let mut d = self.data.take()?;
        let _ = registry.deregister(&mut d.stream);
        self.session.handle_data_closed(&mut env.ctx(now));
        Some(d.ip)
    }

    /// Closes both data sockets (the session is going).
    pub(super) fn close_all(&mut self, registry: &Registry) -> Option<IpAddr> {
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        self.data.take().map(|mut d| {
            let _ = registry.deregister(&mut d.stream);
            d.ip
        })
    }
}

/// What the FTP side of a turn may use beyond the client.
pub(super) struct FtpEnv<'a> {
    pub(super) registry: &'a Registry,
    pub(super) scratch: &'a mut [u8],
    pub(super) passive: &'a Passive,
    /// The next passive port to try (rotates through the range).
    pub(super) next_port: &'a mut u16,
    /// Data connections open now (they count against `--max-conns`).
    pub(super) data_conns: &'a mut usize,
    /// Open connections per peer IP (they count against the per-IP limit).
    pub(super) per_ip: &'a mut std::collections::HashMap<IpAddr, usize>,
    /// Clients open now.
    pub(super) clients: usize,
    pub(super) max_conns: usize,
    pub(super) max_conns_per_ip: usize,
    /// The TLS settings, for data connections under `PROT P`.
    pub(super) tls: Option<&'a Arc<ServerConfig>>,
    /// How long a data connection's TLS handshake may take.
    pub(super) handshake_timeout: Duration,
    /// Where decrypted data bytes go before the session takes them.
    pub(super) plaintext: &'a mut Vec<u8>,
    /// The turn's share of zero-copy bytes (see [`Budget`]).
    pub(super) share: usize,
    /// TLS handshake steps this turn may still take (see `handshakes`).
    pub(super) handshakes_left: &'a mut usize,
}

/// Moves client `k`'s data sockets along: the session's requests,
/// accepts, writes and reads, a few rounds within the turn's budgets.
pub(super) fn drive_data(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
) {
    let mut read_budget = READ_BUDGET;
    // Zero-copy bytes (sendfile out, splice in) and copied writes; a data
    // connection moves one way at a time.
    let mut budget = Budget::new(fenv.share);
    for _ in 0..ROUNDS {
        let mut moved = data_requests(k, f, env, fenv, now);
        moved |= accept(k, f, env, fenv, now);
        moved |= write(k, f, env, fenv, now, &mut budget);
        moved |= read(k, f, env, fenv, now, &mut read_budget, &mut budget);
        if !moved {
            return;
        }
    }
}

/// Carries out what the session asked; true if it asked anything.
pub(super) fn data_requests(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
) -> bool {
    let mut any = false;
    while let Some(request) = f.session.poll_data_request() {
        any = true;
        debug!("ftp {k}: data request {request:?}");
        match request {
            DataRequest::Listen => {
                close_listener(f, fenv);
                if let Some(ip) = close_data(f, fenv) {
                    release_ip(fenv, ip);
                    f.session.handle_data_closed(&mut env.ctx(now));
                }
                match bind(k, f.local, fenv) {
                    Ok(mut l) => {
                        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                        let token = Source::FtpData(k, DataSocket::Listener).token();
                        if let Err(e) = fenv.registry.register(&mut l, token, Interest::READABLE) {
                            info!("ftp {k}: cannot register a passive listener: {e}");
                            f.session.handle_passive_failed(&mut env.ctx(now));
                            continue;
                        }
                        f.listener = Some(l);
                        f.acceptable = true;
                        let ip = fenv.passive.advertise.unwrap_or(f.local.ip());
                        f.session
                            .handle_passive_bound(SocketAddr::new(ip, port), &mut env.ctx(now));
                    }
                    Err(e) => {
                        info!("ftp {k}: no passive port: {e}");
                        f.session.handle_passive_failed(&mut env.ctx(now));
                    }
                }
            }
            DataRequest::CloseListener => close_listener(f, fenv),
            DataRequest::CloseData => {
                if let Some(d) = &mut f.data
                    && d.tls.is_some()
                {
                    // The handshake's end (an empty listing can be over
                    // before it is), the rest of the ciphertext, then
                    // close_notify, then the close (in `write_tls`).
                    d.closing = true;
                    continue;
                }
                if let Some(ip) = close_data(f, fenv) {
                    release_ip(fenv, ip);
                }
                f.session.handle_data_closed(&mut env.ctx(now));
            }
        }
    }
    any
}

/// Binds a passive listener on `local`'s address: a port of the range, in
/// turn, or any free one.
fn bind(k: usize, local: SocketAddr, fenv: &mut FtpEnv) -> io::Result<TcpListener> {
    let Some((lo, hi)) = fenv.passive.ports else {
        return crate::listen::tcp(SocketAddr::new(local.ip(), 0), 4);
    };
    let span = usize::from(hi - lo) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "every passive port is in use");
    for _ in 0..span.min(BIND_TRIES) {
        let port = if (lo..=hi).contains(fenv.next_port) {
            *fenv.next_port
        } else {
            lo
        };
        *fenv.next_port = if port >= hi { lo } else { port + 1 };
        match crate::listen::tcp(SocketAddr::new(local.ip(), port), 4) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                debug!("ftp {k}: passive port {port} in use");
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn close_listener(f: &mut FtpClient, fenv: &mut FtpEnv) {
    if let Some(mut l) = f.listener.take() {
        let _ = fenv.registry.deregister(&mut l);
    }
    f.acceptable = false;
}

/// Closes the data connection; returns its peer's IP if there was one.
fn close_data(f: &mut FtpClient, fenv: &mut FtpEnv) -> Option<IpAddr> {
    let mut d = f.data.take()?;
    let _ = fenv.registry.deregister(&mut d.stream);
    // The bytes already written still go out: close(2) sends them first.
    Some(d.ip)
}

fn release_ip(fenv: &mut FtpEnv, ip: IpAddr) {
    *fenv.data_conns = fenv.data_conns.saturating_sub(1);
    if let Some(n) = fenv.per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            fenv.per_ip.remove(&ip);
        }
    }
}

/// Accepts on the passive listener: a connection the session keeps
/// becomes the data connection (and the listener goes); others are closed.
fn accept(k: usize, f: &mut FtpClient, env: &mut Env, fenv: &mut FtpEnv, now: Instant) -> bool {
    if !f.acceptable || f.listener.is_none() || f.data.is_some() {
        return false;
    }
    let mut any = false;
    for _ in 0..ACCEPTS_PER_TURN {
        let Some(listener) = &f.listener else {
            break;
        };
        let (stream, from) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                f.acceptable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                info!("ftp {k}: passive accept failed: {e}");
                f.acceptable = false;
                break;
            }
        };
        any = true;
        let ip = from.ip().to_canonical();
        let total = fenv.clients + *fenv.data_conns;
        let from_ip = fenv.per_ip.get(&ip).copied().unwrap_or(0);
        if total >= fenv.max_conns || from_ip >= fenv.max_conns_per_ip {
            info!("ftp {k}: data connection from {from} refused: connection limit");
            continue; // dropped: the transfer waits, then times out (425)
        }
        if !f.session.handle_data_connected(ip, &mut env.ctx(now)) {
            continue; // not from the control peer: dropped
        }
        let _ = stream.set_nodelay(true);
        let tls = if f.session.data_private() {
            let Some(config) = fenv.tls else {
                // Cannot happen: PROT P needs AUTH TLS, which needs a config.
                f.session.handle_data_closed(&mut env.ctx(now));
                break;
            };
            match TlsSession::new(Arc::clone(config), now, fenv.handshake_timeout) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    info!("ftp {k}: data connection from {from}: {e}");
                    f.session.handle_data_closed(&mut env.ctx(now));
                    break;
                }
            }
        } else {
            None
        };
        let mut stream = stream;
        let token = Source::FtpData(k, DataSocket::Connection).token();
        if let Err(e) =
            fenv.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            info!("ftp {k}: cannot register the data connection: {e}");
            f.session.handle_data_closed(&mut env.ctx(now));
            break;
        }
        *fenv.data_conns += 1;
        *fenv.per_ip.entry(ip).or_insert(0) += 1;
        debug!("ftp {k}: data connection from {from}");
        f.data = Some(DataConn {
            stream,
            ip,
            readable: true,
            writable: true,
            tls,
            closing: false,
            awaits_handshake_step: false,
        });
        close_listener(f, fenv);
        break;
    }
    any
}

/// The data connection failed: close it and tell the session.
fn lose_data(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
    e: &io::Error,
) {
    debug!("ftp {k}: data connection failed: {e}");
    if let Some(ip) = close_data(f, fenv) {
        release_ip(fenv, ip);
    }
    f.session.handle_data_closed(&mut env.ctx(now));
}

/// Writes what the session offers on the data connection.
fn write(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
    budget: &mut Budget,
) -> bool {
    if f.data.as_ref().is_some_and(|d| d.tls.is_some()) {
        return write_tls(k, f, env, fenv, now, budget);
    }
    let mut any = false;
    while budget.left() {
        let Some(d) = &mut f.data else {
            break;
        };
        if !d.writable {
            break;
        }
        let (sent, via) = match f.session.data_output() {
            DataOut::Nothing => break,
            DataOut::Bytes(b) => {
                let b = &b[..b.len().min(budget.room(Via::Write))];
                (d.stream.write(b), Via::Write)
            }
            DataOut::File {
                file,
                offset,
                len,
                warmed,
            } => {
                let count = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .min(budget.room(Via::Sendfile));
                if !page_cache::cached(file, offset, count as u64).unwrap_or(warmed) {
                    // sendfile would read the disk on the loop: the
                    // session has a worker read the range in first.
                    debug!("ftp {k}: {count} bytes at {offset} not in the page cache");
                    f.session
                        .handle_data_file_not_cached(offset, count as u64, &mut env.ctx(now));
                    any = true;
                    break;
                }
                let fd = std::os::fd::AsFd::as_fd(file);
                let socket = std::os::fd::AsFd::as_fd(&d.stream);
                (crate::sys::sendfile(socket, fd, count), Via::Sendfile)
            }
        };
        match Sent::of(sent, via) {
            Sent::Bytes(n) => {
                any = true;
                budget.spend(via, n);
                env.stats.bytes_out += n as u64;
                if via == Via::Sendfile {
                    f.session.handle_data_file_sent(n, &mut env.ctx(now));
                } else {
                    f.session.handle_data_written(n, &mut env.ctx(now));
                }
            }
            Sent::Full => d.writable = false,
            Sent::Interrupted => {}
            Sent::NoSendfile => f.session.data_zero_copy_unavailable(),
            Sent::Lost(e) => {
                lose_data(k, f, env, fenv, now, &e);
                return true;
            }
        }
    }
    any
}

/// [`write`] over TLS: the session's bytes are encrypted into the TLS
/// session's bounded output as it has room, and the ciphertext goes to
/// the socket within the same budget. A file is never offered here: under
/// `PROT P` workers read it into the session's buffer a chunk at a time.
fn write_tls(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
    budget: &mut Budget,
) -> bool {
    let mut any = false;
    loop {
        let Some(d) = &mut f.data else {
            return any;
        };
        let Some(tls) = &mut d.tls else {
            return any;
        };
        while !d.closing && !tls.is_handshaking() && tls.output().len() < OUT_LIMIT {
            let taken = match f.session.data_output() {
                DataOut::Nothing => break,
                DataOut::File { .. } => {
                    f.session.data_zero_copy_unavailable();
                    continue;
                }
                DataOut::Bytes(b) => tls.write_plaintext(b),
            };
            if taken == 0 {
                break;
            }
            any = true;
            f.session.handle_data_written(taken, &mut env.ctx(now));
        }
        if d.closing && !tls.is_handshaking() {
            tls.close(); // once; after the last of the session's bytes
        }
        let out = tls.output();
        if out.is_empty() {
            if d.closing && !tls.is_handshaking() {
                // Everything, close_notify included, went out.
                if let Some(ip) = close_data(f, fenv) {
                    release_ip(fenv, ip);
                }
                f.session.handle_data_closed(&mut env.ctx(now));
                return true;
            }
            return any;
        }
        if !d.writable || !budget.left() {
            return any;
        }
        let room = budget.room(Via::Write);
        match Sent::of(d.stream.write(&out[..out.len().min(room)]), Via::Write) {
            Sent::Bytes(n) => {
                any = true;
                budget.spend(Via::Write, n);
                env.stats.bytes_out += n as u64;
                tls.handle_written(n);
            }
            Sent::Full => {
                d.writable = false;
                return any;
            }
            Sent::Interrupted | Sent::NoSendfile => {}
            Sent::Lost(e) => {
                lose_data(k, f, env, fenv, now, &e);
                return true;
            }
        }
    }
}

/// What one step of receiving on the data connection came to.
enum Spliced {
    /// The session wants the bytes read and copied ([`DataIn::Bytes`]).
    NotOffered,
    /// Bytes moved, or the session was told why not: go on.
    Moved,
    /// Nothing more this turn (the socket is empty, the budget spent, or
    /// the pipe waits for a worker).
    Stop,
    /// The data connection is gone.
    Lost,
}

/// Moves upload bytes from the socket into the session's pipe when it
/// offers one ([`DataIn::Pipe`]): they never pass through this process.
fn splice_in(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
    budget: &mut Budget,
) -> Spliced {
    let Some(d) = &mut f.data else {
        return Spliced::Stop;
    };
    let result = match f.session.data_input() {
        DataIn::Pipe { .. } if d.tls.is_some() => None,
        DataIn::Pipe { pipe, room } => {
            let room = room.min(budget.room(Via::Splice));
            if room == 0 {
                return Spliced::Stop;
            }
            Some(crate::sys::splice(d.stream.as_fd(), pipe, room))
        }
        _ => return Spliced::NotOffered,
    };
    let Some(result) = result else {
        // Under TLS the bytes must be decrypted here.
        f.session.data_splice_unavailable();
        return Spliced::Moved;
    };
    match result {
        // The end, unless bytes wait past an urgent mark (TCP's
        // out-of-band byte, not part of the stream): splice stops at the
        // mark, and says 0 there once the FIN is in, where a read skips
        // it and goes on. A peek tells (it skips the mark too).
        Ok(0) if matches!(d.stream.peek(&mut [0u8]), Ok(n) if n > 0) => {
            debug!("ftp {k}: bytes past an urgent mark: copying the rest");
            f.session.data_splice_unavailable();
            Spliced::Moved
        }
        Ok(0) => {
            d.readable = false;
            f.session.handle_data_eof(&mut env.ctx(now));
            Spliced::Moved
        }
        Ok(n) => {
            budget.spend(Via::Splice, n);
            env.stats.bytes_in += n as u64;
            f.session.handle_data_spliced(n, &mut env.ctx(now));
            Spliced::Moved
        }
        // Both an empty socket and a full pipe say so: a peek tells.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => match d.stream.peek(&mut [0u8]) {
            Ok(0) => {
                d.readable = false;
                f.session.handle_data_eof(&mut env.ctx(now));
                Spliced::Moved
            }
            Ok(_) => {
                debug!("ftp {k}: the upload's pipe is full");
                f.session.handle_data_pipe_full(&mut env.ctx(now));
                Spliced::Stop
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                d.readable = false;
                Spliced::Stop
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Spliced::Moved,
            Err(e) => {
                lose_data(k, f, env, fenv, now, &e);
                Spliced::Lost
            }
        },
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Spliced::Moved,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            debug!("ftp {k}: no splice from the data connection ({e}): copying");
            f.session.data_splice_unavailable();
            Spliced::Moved
        }
        Err(e) => {
            lose_data(k, f, env, fenv, now, &e);
            Spliced::Lost
        }
    }
}

/// Reads the data connection while the session wants bytes: spliced
/// into its pipe, or read into the scratch buffer and handed over.
fn read(
    k: usize,
    f: &mut FtpClient,
    env: &mut Env,
    fenv: &mut FtpEnv,
    now: Instant,
    budget: &mut usize,
    zero_copy: &mut Budget,
) -> bool {
    let mut any = false;
    let mut stepped = false;
    if let Some(d) = &mut f.data {
        d.awaits_handshake_step = false; // decided again below
    }
    while *budget > 0 {
        let ready = f
            .data
            .as_ref()
            .is_some_and(|d| d.readable && f.wants_data_read(d));
        if !ready {
            break;
        }
        let Some(d) = &mut f.data else {
            break;
        };
        // A handshake step costs the loop what a client's does: it comes
        // out of the same budget, and without one the bytes wait unread.
        if !stepped && d.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            d.awaits_handshake_step = !handshakes::take_step(fenv.handshakes_left);
            if d.awaits_handshake_step {
                break;
            }
            stepped = true;
        }
        match splice_in(k, f, env, fenv, now, zero_copy) {
            Spliced::NotOffered => {}
            Spliced::Moved => {
                any = true;
                continue;
            }
            Spliced::Stop => break,
            Spliced::Lost => return true,
        }
        let Some(d) = &mut f.data else {
            break;
        };
        match d.stream.read(fenv.scratch) {
            Ok(0) => {
                any = true;
                d.readable = false;
                if d.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake",
                    );
                    info!("ftp {k}: data connection: {e}");
                    lose_data(k, f, env, fenv, now, &e);
                    return true;
                }
                f.session.handle_data_eof(&mut env.ctx(now));
            }
            Ok(n) => {
                any = true;
                *budget = budget.saturating_sub(n);
                env.stats.bytes_in += n as u64;
                let Some(tls) = &mut d.tls else {
                    f.session
                        .handle_data_input(&fenv.scratch[..n], &mut env.ctx(now));
                    continue;
                };
                fenv.plaintext.clear();
                let was_handshaking = tls.is_handshaking();
                let closed = match tls.handle_ciphertext(&fenv.scratch[..n], fenv.plaintext) {
                    Ok(received) => {
                        if was_handshaking && !tls.is_handshaking() {
                            debug!("ftp {k}: data connection TLS ready ({})", tls.describe());
                        }
                        if !fenv.plaintext.is_empty() {
                            f.session
                                .handle_data_input(fenv.plaintext, &mut env.ctx(now));
                        }
                        received == Received::Closed
                    }
                    Err(e) => {
                        // One line; the alert rustls queued, if the socket
                        // takes it; then only this connection closes, and
                        // the session answers on the control connection.
                        info!("ftp {k}: data connection: {e}");
                        let _ = d.stream.write(tls.output());
                        let e = io::Error::other(e.to_string());
                        lose_data(k, f, env, fenv, now, &e);
                        return true;
                    }
                };
                if closed {
                    d_eof(f, env, now);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => d.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                lose_data(k, f, env, fenv, now, &e);
                return true;
            }
        }
    }
    any
}

/// The client said goodbye on the data connection (`close_notify`).
fn d_eof(f: &mut FtpClient, env: &mut Env, now: Instant) {
    if let Some(d) = &mut f.data {
        d.readable = false;
    }
    f.session.handle_data_eof(&mut env.ctx(now));
}
