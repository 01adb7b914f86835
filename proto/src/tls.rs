//! TLS for the blocking client: a [`TlsStream`] that reads and writes
//! plaintext over a TCP socket, and the ways to trust a server ([`Trust`]).
//!
//! skiffd's own certificate is usually self-signed, so no authority can
//! vouch for it. The client then trusts it as ssh trusts a host key: the
//! first connection accepts whatever certificate comes and reports its
//! SHA-256 fingerprint for the caller to pin ([`Trust::FirstUse`]); later
//! connections accept exactly that certificate and no other
//! ([`Trust::Pinned`]). In either case the server must prove it holds the
//! certificate's private key, as the handshake's signature is checked.
//! With a real certificate the client checks it against authorities
//! instead ([`Trust::Authorities`]), names and dates included.
//!
//! A `TlsStream` may be cloned for a second thread (one reads a command's
//! output while the other feeds its input), as a `TcpStream` can: the
//! clones share one TLS session behind a lock that is never held while
//! waiting for the network.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How the client decides to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates that chain to these authorities and name the host.
    Authorities(Arc<RootCertStore>),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned(String),
    /// Any certificate, its fingerprint reported for the caller to pin.
    FirstUse,
}

impl Trust {
    /// Authorities read from a PEM file (`--tls-ca`).
    pub fn authorities_from_pem(pem: &[u8]) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable authority certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
        }
        Ok(Trust::Authorities(Arc::new(roots)))
    }
}

/// The server's certificate is not the one pinned for it: the error
/// inside the `io::Error` that [`connect`] returns then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintMismatch {
    /// The pinned fingerprint.
    pub pinned: String,
    /// The fingerprint of the certificate the server sent.
    pub seen: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's TLS certificate (SHA-256 {}) is not the one pinned for it ({})",
            self.seen, self.pinned
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// The SHA-256 fingerprint of a DER certificate, as skiffd prints it and
/// as `openssl x509 -noout -fingerprint -sha256` does: upper-case hex
/// bytes joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Runs the TLS handshake over `tcp` (whose timeouts bound it) with the
/// server at `host` (a name or an IP address, as given in the address).
/// A certificate that is not the pinned one fails with an `io::Error`
/// holding a [`FingerprintMismatch`].
pub fn connect(tcp: TcpStream, host: &str, trust: &Trust) -> io::Result<TlsStream> {
    let (config, seen) = config_for(trust)?;
    handshake(tcp, host, config, move || seen.seen()).map_err(|e| match trust {
        Trust::Pinned(pinned) => match pin_seen_after_failure(&e) {
            Some(seen) if seen != *pinned => io::Error::new(
                io::ErrorKind::InvalidData,
                FingerprintMismatch {
                    pinned: pinned.clone(),
                    seen,
                },
            ),
            _ => e,
        },
        _ => e,
    })
}

/// A client configuration that trusts as `trust` says, for callers that
/// run their own TLS sessions (the load generator, on a non-blocking
/// loop). It has no fingerprint to report: pin first with [`connect`].
pub fn client_config(trust: &Trust) -> io::Result<Arc<ClientConfig>> {
    config_for(trust).map(|(config, _)| Arc::new(config))
}

/// The name TLS uses for `host` (as written in an address: a name, an
/// IPv4 address, or an IPv6 address in brackets). A name is checked
/// against the certificate and sent as SNI; an address is checked against
/// the certificate's IP entries.
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map(|n| n.to_owned())
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host}: not a host name"),
            )
        })
}

/// Which certificate a verifier saw last.
trait Seen: Send + Sync {
    fn seen(&self) -> Option<String>;
}

/// The configuration for `trust`, and its verifier (to ask which
/// certificate the server showed).
fn config_for(trust: &Trust) -> io::Result<(ClientConfig, Arc<dyn Seen>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    Ok(match trust {
        Trust::Authorities(roots) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), provider)
                .build()
                .map_err(io::Error::other)?;
            // Noted as well, so that the stream can report it.
            let noting = Arc::new(NotingVerifier {
                inner: verifier,
                seen: Mutex::new(None),
            });
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(noting.clone())
                .with_no_client_auth();
            (config, noting)
        }
        Trust::Pinned(_) | Trust::FirstUse => {
            let pin = Arc::new(PinVerifier {
                pinned: match trust {
                    Trust::Pinned(fp) => Some(fp.clone()),
                    _ => None,
                },
                seen: Mutex::new(None),
                algorithms: provider.signature_verification_algorithms,
            });
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(pin.clone())
                .with_no_client_auth();
            (config, pin)
        }
    })
}

/// The fingerprint a failed handshake carried out (see [`handshake`]).
fn pin_seen_after_failure(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<HandshakeFailed>())
        .and_then(|f| f.seen.clone())
}

/// A handshake that failed, and the certificate the server showed, if any.
#[derive(Debug)]
struct HandshakeFailed {
    error: io::Error,
    seen: Option<String>,
}

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed: {}", self.error)
    }
}

impl std::error::Error for HandshakeFailed {}

/// Drives the handshake to its end; `seen` tells which certificate the
/// server showed.
fn handshake(
    mut tcp: TcpStream,
    host: &str,
    config: ClientConfig,
    seen: impl Fn() -> Option<String>,
) -> io::Result<TlsStream> {
    let mut conn =
        ClientConnection::new(Arc::new(config), server_name(host)?).map_err(io::Error::other)?;
    let result = (|| {
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        Ok::<(), io::Error>(())
    })();
    if let Err(error) = result {
        let kind = error.kind();
        return Err(io::Error::new(
            kind,
            HandshakeFailed {
                error,
                seen: seen(),
            },
        ));
    }
    let fingerprint = seen().unwrap_or_default();
    Ok(TlsStream {
        tcp,
        shared: Arc::new(Shared {
            session: Mutex::new(Session {
                conn,
                unread: Vec::new(),
            }),
            sending: Mutex::new(()),
            fingerprint,
        }),
    })
}

/// A TLS connection over TCP: plaintext in, plaintext out.
#[derive(Debug)]
pub struct TlsStream {
    /// This handle's descriptor of the shared socket.
    tcp: TcpStream,
    shared: Arc<Shared>,
}

/// What the clones of a [`TlsStream`] share.
#[derive(Debug)]
struct Shared {
    /// The session. Locked only to move bytes in or out, never across a
    /// read or write of the socket.
    session: Mutex<Session>,
    /// Held from sealing records to handing them to the socket, so that
    /// records of two handles reach the wire in the order of their
    /// sequence numbers.
    sending: Mutex<()>,
    /// The server certificate's SHA-256 fingerprint.
    fingerprint: String,
}

/// The TLS state the handles of one stream share.
#[derive(Debug)]
struct Session {
    /// Keys, sequence numbers, buffered records.
    conn: ClientConnection,
    /// Ciphertext read from the socket but not yet given to `conn`, which
    /// takes more only once its plaintext has been read.
    unread: Vec<u8>,
}

/// Most ciphertext read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

impl TlsStream {
    /// The SHA-256 fingerprint of the certificate the server showed.
    pub fn fingerprint(&self) -> &str {
        &self.shared.fingerprint
    }

    /// The TCP socket under the session (timeouts, descriptor, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// A second handle on the same session.
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: self.tcp.try_clone()?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Plaintext already decrypted and waiting: a poll on the socket would
    /// not show it.
    pub fn has_buffered(&self) -> bool {
        let mut session = self.session();
        !session.unread.is_empty()
            || session
                .conn
                .process_new_packets()
                .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }

    /// Says goodbye (`close_notify`) and shuts the sending half of the
    /// socket; the server's last bytes can still be read.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let _order = lock(&self.shared.sending);
        let records = {
            let mut session = self.session();
            session.conn.send_close_notify();
            sealed(&mut session.conn)
        };
        (&self.tcp).write_all(&records)?;
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.shared.session)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut session = self.session();
            match session.conn.reader().read(buf) {
                // Ok(0) after the server's close_notify: the end.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // UnexpectedEof: the socket ended without close_notify.
                Err(e) => return Err(e),
            }
            if !session.unread.is_empty() {
                let unread = std::mem::take(&mut session.unread);
                session.feed(&unread)?;
                continue;
            }
            drop(session);
            // Wait for the network without the lock: the other handle
            // may want to send meanwhile.
            let mut ciphertext = [0u8; READ_CHUNK];
            let n = self.tcp.read(&mut ciphertext)?;
            self.session().feed(&ciphertext[..n])?;
        }
    }
}

impl Session {
    /// Decrypts `ciphertext` (empty: the socket's end) until plaintext
    /// waits to be read; what is left waits in `unread`, so the session
    /// never holds more than a record or so of plaintext.
    fn feed(&mut self, mut ciphertext: &[u8]) -> io::Result<()> {
        loop {
            // An empty slice tells rustls of the end.
            self.conn.read_tls(&mut ciphertext)?;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if ciphertext.is_empty() {
                return Ok(());
            }
            if !self.conn.wants_read() {
                self.unread.extend_from_slice(ciphertext);
                return Ok(());
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _order = lock(&self.shared.sending);
        let (taken, records) = {
            let mut session = self.session();
            let taken = session.conn.writer().write(buf)?;
            (taken, sealed(&mut session.conn))
        };
        self.tcp.write_all(&records)?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Takes every record the session has ready to send.
fn sealed(conn: &mut ClientConnection) -> Vec<u8> {
    let mut records = Vec::new();
    while conn.wants_write() {
        // Writing to a Vec cannot fail.
        if conn.write_tls(&mut records).unwrap_or(0) == 0 {
            break;
        }
    }
    records
}

/// A poisoned lock means a thread panicked mid-operation; the session
/// state is still consistent enough to fail cleanly on the next use.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts the pinned certificate, or any on first use, noting which one
/// it saw; checks the handshake's signature against it either way.
#[derive(Debug)]
struct PinVerifier {
    pinned: Option<String>,
    seen: Mutex<Option<String>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Seen for PinVerifier {
    fn seen(&self) -> Option<String> {
        lock(&self.seen).clone()
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity);
        *lock(&self.seen) = Some(seen.clone());
        match &self.pinned {
            Some(pinned) if *pinned != seen => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The usual verification by authorities, noting the certificate seen.
#[derive(Debug)]
struct NotingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<String>>,
}

impl Seen for NotingVerifier {
    fn seen(&self) -> Option<String> {
        lock(&self.seen).clone()
    }
}

impl ServerCertVerifier for NotingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *lock(&self.seen) = Some(fingerprint(end_entity));
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! A small blocking rustls server in a thread, on loopback, that
    //! echoes what it reads.

    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    /// A certificate for `localhost` and its server config.
    fn server_config() -> (CertificateDer<'static>, Arc<ServerConfig>) {
        let (cert, _, config) = server_config_pem();
        (cert, config)
    }

    /// The same, with the certificate's PEM text.
    fn server_config_pem() -> (CertificateDer<'static>, String, Arc<ServerConfig>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = made.cert.pem();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        (cert, pem, Arc::new(config))
    }

    /// Serves one connection, echoing everything; returns its address.
    fn echo_server(config: Arc<ServerConfig>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = ServerConnection::new(config).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 8192];
            // Ends on EOF, close_notify or a failed handshake.
            while let Ok(n) = tls.read(&mut buf) {
                if n == 0 || tls.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        addr
    }

    fn dial(addr: std::net::SocketAddr) -> TcpStream {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp
    }

    fn round_trip(stream: &mut TlsStream, bytes: &[u8]) -> Vec<u8> {
        stream.write_all(bytes).unwrap();
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).unwrap();
        back
    }

    #[test]
    fn first_use_reports_the_fingerprint_and_pinning_it_works_next_time() {
        let (cert, config) = server_config();
        let addr = echo_server(Arc::clone(&config));
        let mut first = connect(dial(addr), "127.0.0.1", &Trust::FirstUse).unwrap();
        assert_eq!(first.fingerprint(), fingerprint(&cert));
        assert_eq!(round_trip(&mut first, b"hello"), b"hello");

        let addr = echo_server(config);
        let pinned = Trust::Pinned(fingerprint(&cert));
        let mut again = connect(dial(addr), "127.0.0.1", &pinned).unwrap();
        assert_eq!(round_trip(&mut again, b"again"), b"again");
    }

    #[test]
    fn another_certificate_than_the_pinned_one_is_refused_with_both_fingerprints() {
        let (cert, config) = server_config();
        let addr = echo_server(config);
        let pinned = "AB:".repeat(31) + "AB";
        let err = connect(dial(addr), "127.0.0.1", &Trust::Pinned(pinned.clone())).unwrap_err();
        let mismatch = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<FingerprintMismatch>())
            .unwrap_or_else(|| panic!("not a mismatch: {err}"));
        assert_eq!(mismatch.pinned, pinned);
        assert_eq!(mismatch.seen, fingerprint(&cert));
    }

    #[test]
    fn authorities_check_the_chain_and_the_name() {
        let (cert, pem, config) = server_config_pem();
        let trust = Trust::authorities_from_pem(pem.as_bytes()).unwrap();
        let mut ok = connect(dial(echo_server(Arc::clone(&config))), "localhost", &trust).unwrap();
        assert_eq!(round_trip(&mut ok, b"signed"), b"signed");
        assert_eq!(ok.fingerprint(), fingerprint(&cert));

        // The certificate names localhost, not 127.0.0.1.
        let err = connect(dial(echo_server(Arc::clone(&config))), "127.0.0.1", &trust).unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");

        // Another authority vouches for nothing here.
        let (other, _) = server_config();
        let mut roots = RootCertStore::empty();
        roots.add(other).unwrap();
        let stranger = Trust::Authorities(Arc::new(roots));
        let err = connect(dial(echo_server(config)), "localhost", &stranger).unwrap_err();
        // (Both certificates have rcgen's subject name, so webpki takes the
        // stranger for the issuer and finds the signature is not its.)
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );

        assert!(Trust::authorities_from_pem(b"nothing here").is_err());
    }

    #[test]
    fn two_handles_read_and_write_at_once() {
        let (_, config) = server_config();
        let addr = echo_server(config);
        let mut reader = connect(dial(addr), "127.0.0.1", &Trust::FirstUse).unwrap();
        let mut writer = reader.try_clone().unwrap();
        // More than the socket buffers hold both ways: the writer blocks
        // unless the reader drains the echo at the same time.
        let total = 4 << 20;
        let sending = thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..total / chunk.len() {
                writer.write_all(&chunk).unwrap();
            }
            writer.shutdown_write().unwrap();
        });
        let mut got = 0;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&b| b == b'x'));
                    got += n;
                }
                Err(e) => panic!("after {got} bytes: {e}"),
            }
        }
        sending.join().unwrap();
        assert_eq!(got, total, "every byte echoed, then close_notify");
    }
}
