//! One connection's TLS, between its socket and its engine, with no I/O:
//! the reactor reads and writes the socket and hands the bytes across.
//!
//! ```text
//!   socket ─ciphertext─▶ handle_ciphertext ─plaintext─▶ engine.handle_input
//!   engine.output ─plaintext─▶ write_plaintext ─▶ output() ─ciphertext─▶ socket
//!                                                 handle_written(n) ◀─┘
//! ```
//!
//! It is `rustls::ServerConnection` used as rustls's `tlsserver-mio`
//! example uses it (`read_tls` → `process_new_packets` → plaintext;
//! plaintext → `writer()` → `write_tls`), except that both sides go
//! through byte slices rather than the socket, so that it can be tested
//! without one and so that the reactor keeps its own read buffer and
//! write budget.
//!
//! Every byte is bounded. Incoming, [`TlsSession::handle_ciphertext`]
//! decrypts all it is given into the caller's buffer, so plaintext never
//! waits inside rustls, and rustls itself holds at most one partial record
//! (16 KiB and a little; 64 KiB for a handshake message). Outgoing,
//! ciphertext waits in this session's own buffer, which
//! [`TlsSession::write_plaintext`] fills to at most [`OUT_LIMIT`]; rustls's
//! buffers are emptied into it at once.
//!
//! The contract, for the reactor:
//!
//! 1. Read from the socket only while [`TlsSession::wants_read`] and the
//!    engine's own `wants_read` say so; pass what came to
//!    [`TlsSession::handle_ciphertext`], then the plaintext it produced to
//!    the engine. An error ends the connection: write what
//!    [`TlsSession::output`] holds (an alert telling the peer why) if the
//!    socket takes it, log the error once, close.
//! 2. Move the engine's output with [`TlsSession::write_plaintext`] (it
//!    takes nothing until the handshake is done) and tell the engine how
//!    much was taken, as if the socket had taken it.
//! 3. Write [`TlsSession::output`] to the socket, then
//!    [`TlsSession::handle_written`]. Ask for `WRITABLE` while
//!    [`TlsSession::wants_write`].
//! 4. At the socket's end of stream, [`TlsSession::handle_eof`]; to close,
//!    [`TlsSession::close`] and write the rest of the output.

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

/// Most ciphertext one connection holds for its socket. A few records: a
/// full write budget goes out in a few rounds of encrypting and writing,
/// and a client that does not read costs no more than this.
pub const OUT_LIMIT: usize = 64 * 1024;

/// An output buffer at most this big is kept by [`TlsSession::release_idle`]
/// (small replies reuse it); a bigger one is freed, so idle connections
/// hold none.
const KEEP_OUT: usize = 4 * 1024;

/// What [`OUT_LIMIT`] bytes of plaintext can grow to as records: a 5-byte
/// header, a content type byte and a 16-byte tag per 16 KiB record, and
/// room for the one record that may straddle the limit.
const OUT_CAPACITY: usize = OUT_LIMIT + 16 * 1024 + 4 * 22;

/// What rustls keeps to read records into, once a connection has sent
/// anything: it grows to hold a whole record while one arrives, and
/// shrinks back to this between records.
const RUSTLS_READ_BUFFER: usize = 4096;

/// The first byte of a TLS record carrying a handshake message: every TLS
/// connection starts with one (the ClientHello).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Why a TLS connection ends.
#[derive(Debug)]
pub enum TlsError {
    /// The first bytes are not a TLS handshake: a client speaking the
    /// plain protocol (or HTTP, or anything else) to the TLS port.
    NotTls {
        /// Up to the first 8 bytes received.
        start: Vec<u8>,
    },
    /// The handshake failed: no common version or cipher suite, a client
    /// that refused our certificate (it says so with an alert), bytes that
    /// are not valid TLS.
    Handshake(rustls::Error),
    /// The peer broke the protocol after the handshake (a record that does
    /// not decrypt, an unexpected message).
    Protocol(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotTls { start } => {
                write!(f, "not TLS: the client's first bytes are ")?;
                for b in start {
                    write!(f, "{}", std::ascii::escape_default(*b))?;
                }
                if start.first() == Some(&0) {
                    // Every frame starts with a 0: its length is < 2^24.
                    write!(f, " (a plain skiff frame? the client needs tls://)")?;
                } else if start.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                    write!(f, " (plain text)")?;
                }
                Ok(())
            }
            TlsError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            TlsError::Protocol(e) => write!(f, "TLS error: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What [`TlsSession::handle_ciphertext`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// More may come.
    Open,
    /// The peer sent `close_notify`: it will send nothing more (give the
    /// engine its end of stream).
    Closed,
}

/// One connection's TLS state and the ciphertext waiting for its socket.
pub struct TlsSession {
    /// rustls's state machine: handshake, keys, records.
    conn: ServerConnection,
    /// Ciphertext for the socket; `out[out_start..]` is still unwritten.
    out: Vec<u8>,
    out_start: usize,
    /// Bytes received so far, to check the first and count the rest.
    received: u64,
    /// Where the incoming stream is in its records.
    records: Records,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// We sent `close_notify`: no more plaintext is taken.
    closing: bool,
    /// When the handshake must be done by: the connection's start plus
    /// [`Limits::tls_handshake_timeout`](crate::limits::Limits::tls_handshake_timeout).
    deadline: Instant,
}

impl TlsSession {
    /// A session for a new connection, whose handshake must be done within
    /// `handshake_timeout` from `now`. `config` is built once at startup
    /// and shared by every connection.
    pub fn new(
        config: Arc<ServerConfig>,
        now: Instant,
        handshake_timeout: Duration,
    ) -> Result<TlsSession, TlsError> {
        let mut conn = ServerConnection::new(config).map_err(TlsError::Handshake)?;
        // Emptied into `out` after every call anyway; this holds rustls
        // to the same bound should that ever change.
        conn.set_buffer_limit(Some(OUT_LIMIT));
        Ok(TlsSession {
            conn,
            out: Vec::new(),
            out_start: 0,
            received: 0,
            records: Records::default(),
            peer_closed: false,
            closing: false,
            deadline: now + handshake_timeout,
        })
    }

    /// Takes ciphertext read from the socket, all of it, and appends the
    /// plaintext it carried to `plaintext`: at most the bytes given, plus
    /// one record's worth (16 KiB) begun by an earlier call. Handshake
    /// replies and alerts go to [`TlsSession::output`], even when this
    /// fails.
    pub fn handle_ciphertext(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        if self.received == 0
            && let Some(&first) = ciphertext.first()
            && first != HANDSHAKE_RECORD
        {
            let start = ciphertext[..ciphertext.len().min(8)].to_vec();
            return Err(TlsError::NotTls { start });
        }
        self.received += ciphertext.len() as u64;
        self.records.advance(ciphertext);
        // An empty slice would read as the end of the stream.
        while !ciphertext.is_empty() && !self.peer_closed {
            // Reads at most one buffer's worth (a few KiB): loop.
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break,
                Ok(_) => {}
                // Only rustls's own limits fail a read from a slice (a
                // handshake message over 64 KiB, a full plaintext buffer,
                // which draining below after every read prevents).
                Err(e) => {
                    let e = rustls::Error::General(e.to_string());
                    return Err(self.failure(e));
                }
            }
            let processed = self.conn.process_new_packets();
            // What rustls wants to send (its handshake flight, or the
            // alert that says why it gives up) goes out either way.
            self.drain_tls();
            let state = processed.map_err(|e| self.failure(e))?;
            if state.plaintext_bytes_to_read() > 0 {
                plaintext.reserve(state.plaintext_bytes_to_read());
                let mut reader = self.conn.reader();
                while let Ok(chunk) = reader.fill_buf() {
                    if chunk.is_empty() {
                        break;
                    }
                    let n = chunk.len();
                    plaintext.extend_from_slice(chunk);
                    reader.consume(n);
                }
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
        }
        Ok(if self.peer_closed {
            Received::Closed
        } else {
            Received::Open
        })
    }

    /// The socket reached its end. Returns whether the peer said goodbye
    /// first (`close_notify`): when it did not, the stream may have been
    /// cut short by someone else, and whatever the engine makes of the
    /// last bytes should not be trusted as complete. (Every skiff frame
    /// carries its own length, so a cut frame is seen as one anyway.)
    pub fn handle_eof(&mut self) -> bool {
        self.peer_closed
    }

    /// Encrypts as much of `plaintext` as the output has room for and
    /// returns how many bytes it took: none while the handshake is still
    /// going (the engine keeps its bytes until then) or after
    /// [`TlsSession::close`].
    pub fn write_plaintext(&mut self, plaintext: &[u8]) -> usize {
        if self.conn.is_handshaking() || self.closing {
            return 0;
        }
        let room = OUT_LIMIT.saturating_sub(self.output().len());
        let take = room.min(plaintext.len());
        if take == 0 {
            return 0;
        }
        // Bulk output (a file) comes in buffer-fulls: one allocation for
        // all of them, kept until the connection has nothing more to send
        // (`release_idle`), rather than one that grows by doubling and
        // is freed every time the socket empties it.
        if self.out_start > 0 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        if take > KEEP_OUT && self.out.capacity() < OUT_CAPACITY {
            self.out.reserve_exact(OUT_CAPACITY - self.out.len());
        }
        // Writing to rustls's buffer cannot fail; it may take less.
        let taken = self.conn.writer().write(&plaintext[..take]).unwrap_or(0);
        self.drain_tls();
        taken
    }

    /// Ciphertext waiting for the socket.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// The socket took `n` bytes of [`TlsSession::output`].
    pub fn handle_written(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out_start = 0;
            self.out.clear();
        }
    }

    /// The connection has nothing more to send for now: frees a big
    /// output buffer once it is empty, so an idle connection holds none.
    pub fn release_idle(&mut self) {
        if self.output().is_empty() && self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
            self.out_start = 0;
        }
    }

    /// Whether to read the socket: not once the peer has said goodbye,
    /// and not while a full output waits for a peer that does not read
    /// (what it sends could make us answer, and the answers would pile up).
    pub fn wants_read(&self) -> bool {
        !self.peer_closed && self.output().len() < OUT_LIMIT
    }

    /// Ciphertext waits for the socket.
    pub fn wants_write(&self) -> bool {
        !self.output().is_empty()
    }

    /// The handshake is not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// When the handshake must be done by, while it is not.
    pub fn handshake_deadline(&self) -> Option<Instant> {
        self.is_handshaking().then_some(self.deadline)
    }

    /// Says goodbye (`close_notify`): write the rest of the output, then
    /// close the socket. No more plaintext is taken.
    pub fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
            self.drain_tls();
        }
    }

    /// Bytes this session holds for the server's buffer budget: its
    /// output buffer, rustls's read buffer, and the part of a record that
    /// has arrived (rustls keeps it until the rest comes).
    pub fn buffered_bytes(&self) -> usize {
        let reading = if self.received > 0 {
            RUSTLS_READ_BUFFER + self.records.partial
        } else {
            0
        };
        self.out.capacity() + reading
    }

    /// The negotiated protocol version and cipher suite, for the log.
    pub fn describe(&self) -> String {
        match (
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite(),
        ) {
            (Some(v), Some(s)) => {
                let kind = match self.conn.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => ", resumed",
                    _ => "",
                };
                format!("{v:?} {:?}{kind}", s.suite())
            }
            _ => "handshaking".into(),
        }
    }

    /// Moves everything rustls has to send into `out`.
    fn drain_tls(&mut self) {
        while self.conn.wants_write() {
            // Writing to a Vec cannot fail.
            if self.conn.write_tls(&mut self.out).unwrap_or(0) == 0 {
                break;
            }
        }
    }

    fn failure(&self, e: rustls::Error) -> TlsError {
        if self.conn.is_handshaking() {
            TlsError::Handshake(e)
        } else {
            TlsError::Protocol(e)
        }
    }
}

/// Where a stream of TLS records is: how much of the record under way has
/// arrived. Each record is a 5-byte header (type, version, a 16-bit
/// length) and that many bytes.
#[derive(Debug, Default)]
struct Records {
    header: [u8; 5],
    /// Header bytes seen of the record under way.
    header_len: usize,
    /// Its body bytes still to come, once the header is whole.
    body_left: usize,
    /// Its bytes seen so far, header included.
    partial: usize,
}

impl Records {
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.header_len < self.header.len() {
                let take = (self.header.len() - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                self.partial += take;
                bytes = &bytes[take..];
                if self.header_len == self.header.len() {
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
            } else {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                self.partial += take;
                bytes = &bytes[take..];
            }
            if self.header_len == self.header.len() && self.body_left == 0 {
                *self = Records::default(); // the record is whole
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A real rustls client, in memory, against the session.

    use super::*;
    use crate::tls::cert::Identity;
    use crate::tls::server_config;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// The handshake timeout of the sessions under test.
    const TIMEOUT: Duration = Duration::from_secs(10);
    use std::io::Read;

    /// A server config and a client config that trusts its certificate.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let dir = std::env::temp_dir().join(format!("skiffd-session-{}", std::process::id()));
        let names = ["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let identity = Identity::load_or_generate(&dir, &names).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let server = server_config(&identity).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    fn client(config: &Arc<ClientConfig>) -> ClientConnection {
        let name = ServerName::try_from("localhost").unwrap();
        ClientConnection::new(Arc::clone(config), name).unwrap()
    }

    /// Everything the client has to send.
    fn from_client(c: &mut ClientConnection) -> Vec<u8> {
        let mut bytes = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// Gives the client everything the session has to send, as a socket
    /// that takes `chunk` bytes at a time would; returns the plaintext.
    fn to_client(s: &mut TlsSession, c: &mut ClientConnection, chunk: usize) -> Vec<u8> {
        let mut plain = Vec::new();
        while !s.output().is_empty() {
            let n = s.output().len().min(chunk);
            let mut bytes = &s.output()[..n];
            while !bytes.is_empty() {
                c.read_tls(&mut bytes).unwrap();
                c.process_new_packets().unwrap();
                // Drained as it comes: the client's buffer is bounded too.
                let mut buf = [0u8; 4096];
                loop {
                    match c.reader().read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => plain.extend_from_slice(&buf[..k]),
                        Err(_) => break, // WouldBlock: nothing more yet
                    }
                }
            }
            s.handle_written(n);
        }
        plain
    }

    /// Runs the handshake to its end, `chunk` bytes per "read".
    fn handshake(s: &mut TlsSession, c: &mut ClientConnection, chunk: usize) {
        let mut plain = Vec::new();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return;
            }
            for piece in from_client(c).chunks(chunk) {
                assert_eq!(
                    s.handle_ciphertext(piece, &mut plain).unwrap(),
                    Received::Open
                );
            }
            to_client(s, c, chunk);
        }
        panic!("the handshake did not finish in 10 rounds");
    }

    #[test]
    fn plaintext_crosses_both_ways_at_any_split() {
        let (server, client_config) = configs();
        for chunk in [1, 7, 100, 4096, 1 << 20] {
            let mut s = TlsSession::new(Arc::clone(&server), Instant::now(), TIMEOUT).unwrap();
            let mut c = client(&client_config);
            handshake(&mut s, &mut c, chunk);
            assert!(s.describe().contains("TLS"), "{}", s.describe());

            // Client to server: a frame-sized message and a big one.
            let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            for message in [&b"\0\0\0\x0f{\"op\":\"hello\"}"[..], &big] {
                let mut plain = Vec::new();
                let mut given = 0;
                let mut rest = message;
                while !rest.is_empty() {
                    // The client's own buffer is bounded: send as it takes.
                    let n = c.writer().write(rest).unwrap();
                    rest = &rest[n..];
                    for piece in from_client(&mut c).chunks(chunk) {
                        let before = plain.len();
                        s.handle_ciphertext(piece, &mut plain).unwrap();
                        given += piece.len();
                        // Never more plaintext than ciphertext, and no more
                        // in one call than its bytes and one record.
                        assert!(plain.len() <= given);
                        assert!(plain.len() - before <= piece.len() + 16 * 1024);
                    }
                }
                assert_eq!(plain, message, "chunk {chunk}");
            }

            // Server to client: written in as many pieces as the output
            // takes, every byte accounted for.
            let mut rest = &big[..];
            let mut got = Vec::new();
            while !rest.is_empty() {
                let taken = s.write_plaintext(rest);
                assert!(taken > 0);
                assert!(s.output().len() <= OUT_LIMIT + 1024);
                rest = &rest[taken..];
                got.extend(to_client(&mut s, &mut c, chunk));
            }
            assert_eq!(got, big, "chunk {chunk}");
            assert!(!s.wants_write());
        }
    }

    #[test]
    fn nothing_is_taken_before_the_handshake_and_a_full_output_stops_taking() {
        let (server, client_config) = configs();
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        assert_eq!(s.write_plaintext(b"too early"), 0);
        let mut c = client(&client_config);
        handshake(&mut s, &mut c, 1 << 20);
        let big = vec![7u8; 4 * OUT_LIMIT];
        let mut taken = 0;
        // The socket takes nothing: the output fills, then refuses.
        for _ in 0..100 {
            taken += s.write_plaintext(&big[taken..]);
        }
        assert!((OUT_LIMIT / 2..=OUT_LIMIT).contains(&taken), "{taken}");
        assert!(s.output().len() <= OUT_LIMIT + 1024);
        assert!(!s.wants_read(), "a full output stops reading");
        assert_eq!(to_client(&mut s, &mut c, 1 << 20), big[..taken]);
        assert!(s.wants_read());
        assert!(
            s.buffered_bytes() >= RUSTLS_READ_BUFFER + OUT_LIMIT,
            "the output is kept while more may come"
        );
        s.release_idle();
        assert_eq!(
            s.buffered_bytes(),
            RUSTLS_READ_BUFFER,
            "the big output was freed; rustls keeps its read buffer"
        );
        // Half a record from the client counts until the rest comes.
        c.writer().write_all(&[1u8; 1000]).unwrap();
        let record = from_client(&mut c);
        let (first, rest) = record.split_at(600);
        let mut plain = Vec::new();
        s.handle_ciphertext(first, &mut plain).unwrap();
        assert!(plain.is_empty());
        assert_eq!(s.buffered_bytes(), RUSTLS_READ_BUFFER + 600);
        s.handle_ciphertext(rest, &mut plain).unwrap();
        assert_eq!(plain, [1u8; 1000]);
        assert_eq!(s.buffered_bytes(), RUSTLS_READ_BUFFER);
    }

    #[test]
    fn records_are_followed_across_any_split() {
        // Three records: 3, 0 and 300 body bytes.
        let mut stream = vec![0x17, 3, 3, 0, 3, 1, 2, 3, 0x17, 3, 3, 0, 0];
        stream.extend([0x17, 3, 3, 1, 44]);
        stream.extend([9u8; 300]);
        for split in 1..stream.len() {
            let mut r = Records::default();
            r.advance(&stream[..split]);
            let ends = [8usize, 13, stream.len()];
            let start = ends
                .iter()
                .rev()
                .find(|&&e| e <= split)
                .copied()
                .unwrap_or(0);
            assert_eq!(r.partial, split - start, "split {split}");
            r.advance(&stream[split..]);
            assert_eq!(r.partial, 0, "split {split}");
        }
    }

    #[test]
    fn close_notify_both_ways() {
        let (server, client_config) = configs();
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        let mut c = client(&client_config);
        handshake(&mut s, &mut c, 1 << 20);
        c.writer().write_all(b"last words").unwrap();
        c.send_close_notify();
        let mut plain = Vec::new();
        let got = s
            .handle_ciphertext(&from_client(&mut c), &mut plain)
            .unwrap();
        assert_eq!(got, Received::Closed);
        assert_eq!(plain, b"last words");
        assert!(!s.wants_read());
        assert!(s.handle_eof(), "a clean end");

        s.close();
        assert_eq!(s.write_plaintext(b"after close"), 0);
        to_client(&mut s, &mut c, 1 << 20);
        let mut buf = [0u8; 16];
        assert_eq!(
            c.reader().read(&mut buf).unwrap(),
            0,
            "client saw close_notify"
        );
    }

    #[test]
    fn an_end_without_close_notify_is_reported_as_unclean() {
        let (server, client_config) = configs();
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        let mut c = client(&client_config);
        handshake(&mut s, &mut c, 1 << 20);
        assert!(!s.handle_eof());
    }

    #[test]
    fn plaintext_on_the_tls_port_is_refused_with_a_clear_error() {
        let (server, _) = configs();
        let frame = b"\0\0\0\x0f{\"op\":\"hello\"}";
        let mut s = TlsSession::new(Arc::clone(&server), Instant::now(), TIMEOUT).unwrap();
        let err = s.handle_ciphertext(frame, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TlsError::NotTls { .. }));
        let text = err.to_string();
        assert!(
            text.contains("plain skiff frame") && text.contains("tls://"),
            "{text}"
        );

        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        let err = s
            .handle_ciphertext(b"GET / HTTP/1.1\r\n", &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "not TLS: the client's first bytes are GET / HT (plain text)"
        );
    }

    #[test]
    fn garbage_after_a_handshake_record_byte_fails_the_handshake_with_an_alert() {
        let (server, _) = configs();
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        // A handshake record header, then a message that is not a ClientHello.
        let bad = [0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0x00, 0x00, 0x01, 0x00];
        let err = s.handle_ciphertext(&bad, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TlsError::Handshake(_)), "{err}");
        assert!(err.to_string().starts_with("TLS handshake failed"), "{err}");
        // The alert telling the peer why is waiting for the socket.
        assert_eq!(s.output().first(), Some(&0x15), "an alert record");
    }

    #[test]
    fn a_client_checking_names_accepts_the_certificate_for_loopback() {
        let (server, client_config) = configs();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let name = ServerName::try_from(name).unwrap();
            let mut c = ClientConnection::new(Arc::clone(&client_config), name).unwrap();
            let mut s = TlsSession::new(Arc::clone(&server), Instant::now(), TIMEOUT).unwrap();
            handshake(&mut s, &mut c, 1 << 20);
        }
        let elsewhere = ServerName::try_from("example.com").unwrap();
        let mut c = ClientConnection::new(client_config, elsewhere).unwrap();
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        s.handle_ciphertext(&from_client(&mut c), &mut Vec::new())
            .unwrap();
        let mut flight = s.output();
        while !flight.is_empty() {
            c.read_tls(&mut flight).unwrap();
        }
        let err = c.process_new_packets().unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[test]
    fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
        let (server, _) = configs();
        // A client whose only root is some other certificate.
        let other = crate::tls::selfsigned::generate(&["localhost".into()]).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(other.cert_der.into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c = client(&Arc::new(config));
        let mut s = TlsSession::new(server, Instant::now(), TIMEOUT).unwrap();
        s.handle_ciphertext(&from_client(&mut c), &mut Vec::new())
            .unwrap();
        // The client rejects the server's flight and sends an alert.
        let mut flight = s.output();
        while !flight.is_empty() {
            c.read_tls(&mut flight).unwrap();
        }
        assert!(c.process_new_packets().is_err());
        let alert = from_client(&mut c);
        let err = s.handle_ciphertext(&alert, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TlsError::Handshake(_)), "{err}");
        assert!(
            err.to_string().contains("UnknownCA") || err.to_string().contains("alert"),
            "{err}"
        );
    }

    /// Every input of the `tls_session` fuzz target's corpus passes its
    /// check against the server's own configuration.
    #[test]
    fn the_fuzz_corpus_passes() {
        let (server, client) = configs();
        let configs = crate::tls::fuzz_checks::Configs { server, client };
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tls_session");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let passed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::tls::fuzz_checks::check_tls_session(&configs, &data)
            }));
            assert!(passed.is_ok(), "{} fails its check", file.display());
        }
    }
}
