//! Listening sockets: accepting stream clients within a turn's budget,
//! admitting or refusing them (`--max-conns`, per-IP limit), and answering
//! UDP datagrams.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use log::{debug, info, warn};
use mio::Interest;
use mio::net::{TcpListener, UdpSocket, UnixListener};

use skiff::proto::Code;

use super::client::{Client, Protocol, Stream};
use super::ftp::FtpClient;
use super::{ACCEPT_BUDGET, Config, DATAGRAM_BUDGET, Reactor, Source};
use crate::conn::Conn;
use crate::handlers::{self, raw_echo::RawEcho};
use crate::tls::session::TlsSession;
use crate::udp;
use skiffd_core::ftp::FtpSession;

/// What a stream listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Framed,
    FramedTls,
    RawEcho,
    Ftp,
}

/// A listening socket and the service behind it.
pub(super) enum Listener {
    Framed(TcpListener),
    FramedUnix(UnixListener, PathBuf),
    FramedTls(TcpListener),
    RawEcho(TcpListener),
    Ftp(TcpListener),
    UdpTime(UdpSocket),
    UdpEcho(UdpSocket),
}

impl Listener {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Listener::Framed(_) => "framed",
            Listener::FramedUnix(..) => "framed-unix",
            Listener::FramedTls(_) => "tls",
            Listener::RawEcho(_) => "raw-echo",
            Listener::Ftp(_) => "ftp",
            Listener::UdpTime(_) => "udp-time",
            Listener::UdpEcho(_) => "udp-echo",
        }
    }

    pub(super) fn local_addr(&self) -> String {
        let addr = match self {
            Listener::Framed(l)
            | Listener::FramedTls(l)
            | Listener::RawEcho(l)
            | Listener::Ftp(l) => l.local_addr(),
            Listener::UdpTime(s) | Listener::UdpEcho(s) => s.local_addr(),
            Listener::FramedUnix(_, path) => return path.display().to_string(),
        };
        addr.map_or_else(|e| format!("? ({e})"), |a| a.to_string())
    }

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Framed(l)
            | Listener::FramedTls(l)
            | Listener::RawEcho(l)
            | Listener::Ftp(l) => l,
            Listener::FramedUnix(l, _) => l,
            Listener::UdpTime(s) | Listener::UdpEcho(s) => s,
        }
    }
}

impl Listener {
    /// Binds every listener `config` names, in a fixed order (framed TCP,
    /// framed Unix, TLS, raw echo, FTP, UDP time, UDP echo); an error
    /// names the service and the address.
    pub(super) fn bind_all(config: &Config) -> io::Result<Vec<Listener>> {
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
        for &a in &config.tls {
            listeners.push(Listener::FramedTls(
                crate::listen::tcp(a, config.backlog).map_err(|e| with("tls", &a, e))?,
            ));
        }
        for &a in &config.raw_echo {
            listeners.push(Listener::RawEcho(
                crate::listen::tcp(a, config.backlog).map_err(|e| with("raw-echo", &a, e))?,
            ));
        }
        for &a in &config.ftp {
            listeners.push(Listener::Ftp(
                crate::listen::tcp(a, config.backlog).map_err(|e| with("ftp", &a, e))?,
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
        Ok(listeners)
    }
}

impl Reactor {
    pub(super) fn serve_listener(&mut self, i: usize) {
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
            let kind = match listener {
                Listener::FramedTls(_) => Kind::FramedTls,
                Listener::RawEcho(_) => Kind::RawEcho,
                Listener::Ftp(_) => Kind::Ftp,
                _ => Kind::Framed,
            };
            let accepted = match listener {
                Listener::Framed(l)
                | Listener::FramedTls(l)
                | Listener::RawEcho(l)
                | Listener::Ftp(l) => l.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Some(a.ip()), a.to_string())
                }),
                Listener::FramedUnix(l, _) => l
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), None, "unix".to_string())),
                Listener::UdpTime(_) | Listener::UdpEcho(_) => return false,
            };
            match accepted {
                Ok((stream, ip, peer)) => self.admit(stream, ip, &peer, kind),
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

    /// Registers a new client, or refuses it with `too_busy` (`421` on
    /// FTP). FTP data connections count as connections too.
    fn admit(&mut self, mut stream: Stream, ip: Option<IpAddr>, peer: &str, kind: Kind) {
        self.stats.accepted += 1;
        let over_total = self.clients.len() + self.ftp_data_conns >= self.config.max_conns;
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
            // A fresh socket's send buffer is empty, so this small write
            // completes or fails at once; it never blocks.
            match kind {
                Kind::Framed => {
                    let mut frame = Vec::new();
                    handlers::error(&mut frame, None, Code::TooBusy, &why);
                    let _ = stream.write(&frame);
                }
                Kind::Ftp => {
                    let _ = stream.write(format!("421 {why}.\r\n").as_bytes());
                }
                // No handshake has happened: nothing the client could read.
                Kind::FramedTls | Kind::RawEcho => {}
            }
            return;
        }
        let now = self.now;
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
        let mut tls = None;
        let protocol = match kind {
            Kind::RawEcho => Protocol::RawEcho(RawEcho::new(now)),
            Kind::Framed => {
                Protocol::Framed(Box::new(Conn::new(key, ip, now, &self.config.limits)))
            }
            Kind::FramedTls => {
                let Some(config) = &self.config.tls_config else {
                    return; // main sets it whenever it asks for a TLS listener
                };
                let timeout = self.config.limits.tls_handshake_timeout;
                match TlsSession::new(Arc::clone(config), now, timeout) {
                    Ok(session) => tls = Some(Box::new(session)),
                    Err(e) => {
                        warn!("conn {key}: {e}");
                        return;
                    }
                }
                Protocol::Framed(Box::new(Conn::new(key, ip, now, &self.config.limits)))
            }
            Kind::Ftp => {
                let (Stream::Tcp(tcp), Some(peer_ip)) = (&stream, ip) else {
                    return; // FTP listens on TCP only
                };
                // Python's ftplib sends `ABOR\r\n` as TCP urgent data, whose
                // last byte the kernel would take out of the stream: keep it
                // in, or the line never ends (vsftpd does the same).
                if let Err(e) = socket2::SockRef::from(tcp).set_out_of_band_inline(true) {
                    debug!("ftp: cannot keep urgent data inline for {peer}: {e}");
                }
                let local = match tcp.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("ftp: cannot read the local address of {peer}: {e}");
                        return;
                    }
                };
                let timeout = self.config.limits.ftp_passive_timeout;
                let mut session = FtpSession::new(key, peer_ip, now, timeout);
                if self.config.tls_config.is_some() {
                    session.offer_tls(self.config.ftp_require_tls);
                }
                session.hash_uploads(self.config.ftp_hash_uploads);
                Protocol::Ftp(Box::new(FtpClient::new(session, local)))
            }
        };
        entry.insert(Client {
            stream,
            protocol,
            tls,
            fresh: true,
            peer_ip: ip,
            interest: Interest::READABLE,
            readable: true,
            read_closed: false,
            writable: true,
            queued: false,
            awaits_handshake: false,
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
            match kind {
                Kind::Framed => "",
                Kind::FramedTls => " (tls)",
                Kind::RawEcho => " (raw echo)",
                Kind::Ftp => " (ftp)",
            }
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
}
