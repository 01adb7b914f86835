//! The one-shot commands (`hello`, `echo`, `time`, `udp-echo`, `stats`)
//! and what they share with the shell: connecting with bounded waits,
//! turning every failure into one [`CmdError`], and printing replies.
//!
//! Each command writes to a `&mut dyn Write` rather than to stdout
//! directly, so the shell runs the very same code.

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value, json};
use skiff::client::{Client, ClientError, Frame, Stream};
use skiff::tls::{self, FingerprintMismatch, TlsStream, Trust};

use crate::known_hosts::{self, KnownHosts, Pin};

/// How long a TCP connect may take before we give up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait for any one reply (or for a stalled send) on the framed
/// connection: a hung server must not hang the client forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for a datagram reply: UDP may silently drop it.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(2);
/// Port of the UDP time service, on the framed server's host unless
/// `--udp` says otherwise.
pub const UDP_TIME_PORT: u16 = 9998;
/// Port of the UDP echo service, likewise.
pub const UDP_ECHO_PORT: u16 = 9997;

/// Why a command failed. Displayed as `CODE: MESSAGE`, where CODE is the
/// server's code for server errors and a client-side word otherwise.
#[derive(Debug)]
pub enum CmdError {
    /// The server answered with an `error` frame.
    Server {
        /// The protocol's error code (`not_found`, ...).
        code: String,
        /// The server's text for people.
        message: String,
    },
    /// The command line was wrong.
    Usage(String),
    /// We could not connect, or the connection broke.
    Connection(String),
    /// The server (or datagram service) did not answer in time.
    Timeout(String),
    /// The server's reply was not what the protocol promises.
    BadReply(String),
    /// Writing our own output failed.
    Output(io::Error),
    /// Ctrl-C stopped the command (a shell transfer); the connection is
    /// out of step.
    Interrupted(String),
    /// A local file could not be read or written (a transfer's source or
    /// target).
    Local {
        /// What failed, with the path.
        message: String,
        /// The failure left a frame half sent or half read, so the
        /// connection is out of step.
        broken: bool,
    },
}

impl CmdError {
    /// The code printed before the message.
    pub fn code(&self) -> &str {
        match self {
            CmdError::Server { code, .. } => code,
            CmdError::Usage(_) => "usage",
            CmdError::Connection(_) => "connection",
            CmdError::Timeout(_) => "timeout",
            CmdError::BadReply(_) => "bad_reply",
            CmdError::Output(_) => "output",
            CmdError::Interrupted(_) => "interrupted",
            CmdError::Local { .. } => "local",
        }
    }

    /// A local file failure that leaves the connection in step.
    pub fn local(message: String) -> CmdError {
        CmdError::Local {
            message,
            broken: false,
        }
    }

    /// The process exit status for this error: 1 when the server said no
    /// (or a transfer's local file failed), 2 when we never got a usable
    /// answer (usage, connection, timeout, garbage), so scripts can tell
    /// "refused" from "unreachable".
    pub fn exit_code(&self) -> i32 {
        match self {
            CmdError::Server { .. } | CmdError::Local { .. } => 1,
            // As a shell reports a command ended by SIGINT.
            CmdError::Interrupted(_) => 130,
            _ => 2,
        }
    }

    /// True if the framed connection can no longer be trusted to be in
    /// sync and must be dropped (the shell reconnects on the next command).
    pub fn breaks_connection(&self) -> bool {
        match self {
            CmdError::Connection(_)
            | CmdError::Timeout(_)
            | CmdError::BadReply(_)
            | CmdError::Interrupted(_) => true,
            CmdError::Server { code, .. } => code == "bad_frame",
            CmdError::Local { broken, .. } => *broken,
            CmdError::Usage(_) | CmdError::Output(_) => false,
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message: &dyn fmt::Display = match self {
            CmdError::Server { message, .. } => message,
            CmdError::Usage(m)
            | CmdError::Connection(m)
            | CmdError::Timeout(m)
            | CmdError::BadReply(m)
            | CmdError::Interrupted(m)
            | CmdError::Local { message: m, .. } => m,
            CmdError::Output(e) => e,
        };
        write!(f, "{}: {}", self.code(), message)
    }
}

impl From<ClientError> for CmdError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server { code, message } => CmdError::Server { code, message },
            ClientError::Io(e) => io_error(e),
            // Not frames at all: most likely another service on that port
            // (the raw echo, an HTTP server), not a skiffd.
            ClientError::Frame(e) => CmdError::BadReply(format!(
                "the reply is not a skiff frame ({e}): is this skiffd's framed port?"
            )),
        }
    }
}

/// Classifies an I/O error on the framed connection.
pub fn io_error(e: io::Error) -> CmdError {
    match e.kind() {
        // A read timeout shows up as either, depending on the platform.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CmdError::Timeout(format!(
            "no reply from the server within {} s (is this skiffd's framed port?)",
            REPLY_TIMEOUT.as_secs()
        )),
        io::ErrorKind::UnexpectedEof => {
            CmdError::Connection("the server closed the connection".into())
        }
        io::ErrorKind::InvalidData => CmdError::BadReply(e.to_string()),
        _ => CmdError::Connection(e.to_string()),
    }
}

/// Maps a failure to write our own output.
pub fn output_error(e: io::Error) -> CmdError {
    CmdError::Output(e)
}

/// Prints `error: CODE: MESSAGE` (unless the reader of our output went
/// away, which is not worth a message) and returns the exit status.
pub fn report(result: Result<(), CmdError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(CmdError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// How `tls://` addresses are trusted, from the command line.
#[derive(Debug, Default, Clone)]
pub struct TlsOptions {
    /// `--tls-ca`: check certificates against these authorities instead
    /// of pinning them.
    pub ca: Option<PathBuf>,
    /// `--known-hosts`: where pins are kept (default `~/.skiff_known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

/// Set once at startup: every connection, wherever the shell or a
/// command opens it, is trusted the same way.
static TLS_OPTIONS: OnceLock<TlsOptions> = OnceLock::new();

/// Sets how `tls://` addresses are trusted (once, before connecting).
pub fn set_tls_options(options: TlsOptions) {
    let _ = TLS_OPTIONS.set(options);
}

/// Connects to `HOST:PORT`, `unix:PATH` or `tls://HOST:PORT`, with bounded
/// waits for the connect itself (and the TLS handshake) and for every
/// later reply.
pub fn connect(addr: &str) -> Result<Client, CmdError> {
    let fail = |e: io::Error| {
        // The hint only fits when the address itself made sense.
        let hint = match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                " (is skiffd running there?)"
            }
            _ => "",
        };
        CmdError::Connection(format!("cannot connect to {addr}: {e}{hint}"))
    };
    let stream = if let Some(path) = addr.strip_prefix("unix:") {
        let s = UnixStream::connect(path).map_err(fail)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(fail)?;
        s.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(fail)?;
        Stream::Unix(s)
    } else {
        let host_port = addr.strip_prefix("tls://").unwrap_or(addr);
        let s = connect_tcp(host_port).map_err(fail)?;
        s.set_nodelay(true).map_err(fail)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(fail)?;
        s.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(fail)?;
        if host_port.len() < addr.len() {
            Stream::Tls(connect_tls(s, host_port)?)
        } else {
            Stream::Tcp(s)
        }
    };
    Client::from_stream(stream).map_err(fail)
}

/// The TLS handshake over `tcp` with the server at `host_port`, trusting
/// it as `--tls-ca` or the known-hosts file says.
fn connect_tls(tcp: TcpStream, host_port: &str) -> Result<TlsStream, CmdError> {
    let options = TLS_OPTIONS.get_or_init(TlsOptions::default);
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    let failed = |e: io::Error| {
        // A TLS client at a plain port: skiffd answers with an alert.
        let hint = if e.to_string().contains("HandshakeFailure") {
            " (is this skiffd's TLS port? --tls-listen, 127.0.0.1:9995 by default)"
        } else {
            ""
        };
        CmdError::Connection(format!("TLS with {host_port}: {e}{hint}"))
    };
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca)
            .map_err(|e| CmdError::Usage(format!("--tls-ca {}: {e}", ca.display())))?;
        let trust = Trust::authorities_from_pem(&pem)
            .map_err(|e| CmdError::Usage(format!("--tls-ca {}: {e}", ca.display())))?;
        return tls::connect(tcp, host, &trust).map_err(failed);
    }
    let path = options
        .known_hosts
        .clone()
        .or_else(known_hosts::default_path)
        .ok_or_else(|| {
            CmdError::Usage("HOME is not set: give --known-hosts FILE or --tls-ca FILE".into())
        })?;
    let mut known = KnownHosts::load(&path)
        .map_err(|e| CmdError::Usage(format!("cannot read {}: {e}", path.display())))?;
    match known.lookup(host_port) {
        Pin::Pinned { fingerprint, line } => tls::connect(tcp, host, &Trust::Pinned(fingerprint))
            .map_err(|e| {
                match e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<FingerprintMismatch>())
                {
                    Some(m) => CmdError::Connection(known_hosts::changed_warning(
                        host_port,
                        &m.seen,
                        &m.pinned,
                        known.path(),
                        line,
                    )),
                    None => failed(e),
                }
            }),
        Pin::Unknown => {
            let stream = tls::connect(tcp, host, &Trust::FirstUse).map_err(failed)?;
            known.pin(host_port, stream.fingerprint()).map_err(|e| {
                CmdError::Usage(format!(
                    "cannot pin the certificate in {}: {e}",
                    path.display()
                ))
            })?;
            eprintln!(
                "skiff: first TLS connection to {host_port}; its certificate's SHA-256 \
                 fingerprint is\n  {}\nskiff pinned it in {} and will refuse any other. \
                 Check it against the one skiffd printed when it made the certificate.",
                stream.fingerprint(),
                path.display()
            );
            Ok(stream)
        }
    }
}

/// `TcpStream::connect` has no timeout, so try each resolved address with
/// one, keeping the last error for the message.
fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing");
    for sa in resolve(addr)? {
        match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Resolves `HOST:PORT`, with a hint in the error when the port is missing.
fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    addr.to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| io::Error::new(e.kind(), format!("{e} (expected HOST:PORT or unix:PATH)")))
}

/// Sends one request and returns the reply frame.
pub fn request(client: &mut Client, header: Value, body: &[u8]) -> Result<Frame, CmdError> {
    let reply = client.request(header, body)?;
    if reply.header.op != "ok" {
        return Err(CmdError::BadReply(format!(
            "expected an ok or error reply, got {:?}",
            reply.header.op
        )));
    }
    Ok(reply)
}

/// `hello`: prints who the server is and what it speaks.
pub fn hello(client: &mut Client, out: &mut dyn Write) -> Result<(), CmdError> {
    let reply = request(client, json!({"op": "hello"}), &[])?;
    let f = &reply.header.fields;
    let ops = match f.get("ops") {
        Some(Value::Array(ops)) => ops.iter().map(plain).collect::<Vec<_>>().join(" "),
        other => other.map_or_else(|| "-".into(), plain),
    };
    writeln!(
        out,
        "server: {}\nversion: {}\nproto: {}\nops: {}",
        f.get("server").map_or_else(|| "-".into(), plain),
        f.get("version").map_or_else(|| "-".into(), plain),
        f.get("proto").map_or_else(|| "-".into(), plain),
        ops
    )
    .map_err(output_error)
}

/// `echo`: prints the echoed body byte for byte, then a newline.
pub fn echo(
    client: &mut Client,
    text: &[u8],
    upper: bool,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let header = if upper {
        json!({"op": "echo", "upper": true})
    } else {
        json!({"op": "echo"})
    };
    let reply = request(client, header, text)?;
    out.write_all(&reply.body).map_err(output_error)?;
    out.write_all(b"\n").map_err(output_error)
}

/// `stats`: prints the server's counters, one `key: value` per line, or
/// the reply's fields as one line of JSON.
pub fn stats(client: &mut Client, as_json: bool, out: &mut dyn Write) -> Result<(), CmdError> {
    let reply = request(client, json!({"op": "stats"}), &[])?;
    print_fields(&reply.header.fields, as_json, out)
}

/// Prints a reply's fields (the header without `op`, `id`, `size`).
pub fn print_fields(
    fields: &Map<String, Value>,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    if as_json {
        let text = Value::Object(fields.clone()).to_string();
        return writeln!(out, "{text}").map_err(output_error);
    }
    for (key, value) in fields {
        writeln!(out, "{key}: {}", plain(value)).map_err(output_error)?;
    }
    Ok(())
}

/// A value as people read it: strings without quotes, `-` for null,
/// anything else as compact JSON.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Where a UDP service is: `explicit` (`--udp`) if given, else `port` on
/// the host of the framed address `addr`, since skiffd serves them all. A
/// Unix-socket server has no host, so that case means this machine.
pub fn udp_service_addr(explicit: Option<&str>, addr: &str, port: u16) -> String {
    if let Some(udp) = explicit {
        return udp.to_string();
    }
    let host = match addr.rsplit_once(':') {
        _ if addr.starts_with("unix:") => "127.0.0.1",
        // `[::1]:9999` keeps its brackets, which `[::1]:9998` needs too.
        Some((host, _)) if !host.is_empty() => host,
        _ => "127.0.0.1",
    };
    format!("{host}:{port}")
}

/// Sends one datagram to `addr` and waits (bounded) for one back.
pub fn udp_request(addr: &str, payload: &[u8]) -> Result<Vec<u8>, CmdError> {
    let fail = |what: &str, e: io::Error| CmdError::Connection(format!("udp {addr}: {what}: {e}"));
    let target = *resolve(addr)
        .map_err(|e| fail("resolve", e))?
        .first()
        .ok_or_else(|| CmdError::Connection(format!("udp {addr}: resolved to nothing")))?;
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).map_err(|e| fail("bind", e))?;
    // Connecting filters out datagrams from anyone else and turns an ICMP
    // "port unreachable" into a clear error instead of a silent timeout.
    sock.connect(target).map_err(|e| fail("connect", e))?;
    sock.set_read_timeout(Some(UDP_TIMEOUT))
        .map_err(|e| fail("set timeout", e))?;
    sock.send(payload).map_err(|e| fail("send", e))?;
    // 65535 covers the largest possible datagram, so nothing is truncated.
    let mut buf = vec![0u8; 65535];
    match sock.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(CmdError::Timeout(format!(
                "no reply from udp {addr} within {} s",
                UDP_TIMEOUT.as_secs()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(CmdError::Connection(
            format!("udp {addr}: nothing is listening there"),
        )),
        Err(e) => Err(fail("receive", e)),
    }
}

/// `time`: asks the UDP time service; an empty format means the server's
/// default (`%Y-%m-%d %H:%M:%S`).
pub fn time(udp: &str, format: &str, out: &mut dyn Write) -> Result<(), CmdError> {
    let reply = udp_request(udp, format.as_bytes())?;
    time_reply(format, reply, out)
}

/// Prints a time reply, or turns the service's `error: ...` answer into a
/// failure (exit 1). A format that itself starts with `error:` makes the
/// two look alike; its output is then printed as it came.
fn time_reply(format: &str, reply: Vec<u8>, out: &mut dyn Write) -> Result<(), CmdError> {
    if let Some(why) = reply.strip_prefix(b"error: ")
        && !format.starts_with("error:")
    {
        return Err(CmdError::Server {
            code: "bad_format".into(),
            message: String::from_utf8_lossy(why).into_owned(),
        });
    }
    out.write_all(&reply).map_err(output_error)?;
    out.write_all(b"\n").map_err(output_error)
}

/// `udp-echo`: sends `text` to the UDP echo service and prints what comes back.
pub fn udp_echo(udp: &str, text: &[u8], out: &mut dyn Write) -> Result<(), CmdError> {
    let reply = udp_request(udp, text)?;
    out.write_all(&reply).map_err(output_error)?;
    out.write_all(b"\n").map_err(output_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_errors_fail_unless_the_format_asked_for_that_text() {
        let mut out = Vec::new();
        time_reply("%H", b"12".to_vec(), &mut out).unwrap();
        assert_eq!(out, b"12\n");
        let e = time_reply("%Q", b"error: bad directive %Q".to_vec(), &mut out).unwrap_err();
        assert_eq!((e.code(), e.exit_code()), ("bad_format", 1));
        out.clear();
        time_reply("error: %H", b"error: 12".to_vec(), &mut out).unwrap();
        assert_eq!(out, b"error: 12\n");
    }

    #[test]
    fn exit_codes_split_refused_from_unreachable() {
        let server = CmdError::from(ClientError::Server {
            code: "not_found".into(),
            message: "no such file".into(),
        });
        assert_eq!(server.exit_code(), 1);
        assert_eq!(server.to_string(), "not_found: no such file");
        let eof = CmdError::from(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
        assert_eq!(eof.exit_code(), 2);
        assert!(eof.breaks_connection());
        assert_eq!(CmdError::Usage("x".into()).to_string(), "usage: x");
    }

    #[test]
    fn udp_services_default_to_the_host_of_the_framed_address() {
        let at = |explicit, addr| udp_service_addr(explicit, addr, UDP_TIME_PORT);
        assert_eq!(at(None, "127.0.0.1:9999"), "127.0.0.1:9998");
        assert_eq!(at(None, "skiff.example:7000"), "skiff.example:9998");
        assert_eq!(at(None, "[::1]:9999"), "[::1]:9998");
        assert_eq!(at(None, "unix:/run/skiff.sock"), "127.0.0.1:9998");
        assert_eq!(at(Some("10.0.0.1:5"), "skiff.example:7000"), "10.0.0.1:5");
    }

    #[test]
    fn plain_values() {
        assert_eq!(plain(&json!("a b")), "a b");
        assert_eq!(plain(&json!(3)), "3");
        assert_eq!(plain(&Value::Null), "-");
        assert_eq!(plain(&json!({"k": [1]})), r#"{"k":[1]}"#);
    }

    #[test]
    fn bad_address_is_a_connection_error() {
        let Err(e) = connect("no-port-here") else {
            panic!("connected to nothing");
        };
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }
}
