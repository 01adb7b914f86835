//! The check of the `tls_session` target: the server's sans-I/O TLS layer
//! (`server/src/tls/session.rs`) fed arbitrary ciphertext.
//!
//! The server's own tests pull this file in with `#[path]` as a module
//! beside `session`, which this file reaches as `super::session` (in the
//! fuzz crate the module sits at the same place).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use super::session::{OUT_LIMIT, Received, TlsSession};

/// The two ends' configurations: the server's, and a client's that
/// trusts its certificate.
pub struct Configs {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl Configs {
    /// Configurations around a certificate and its PKCS#8 key (DER), with
    /// ring's cryptography and TLS 1.3, as the server uses.
    #[allow(dead_code)] // the server's tests use the server's own configuration
    pub fn new(cert: Vec<u8>, key: Vec<u8>) -> Configs {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from(cert);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("the key fits the certificate");
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("a trusted certificate");
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Configs {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }
}

/// How long the fuzzed handshakes may take (never reached: no time passes).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`TlsSession`] must never panic, and must keep its bounds, whatever
/// arrives: the plaintext one read yields is at most what came plus one
/// record; the output waiting for the socket stays within [`OUT_LIMIT`]
/// and a little; nothing is taken from the engine before the handshake
/// is done; and an error is final.
///
/// The first byte chooses the mode. Even: the rest is the client's whole
/// stream, in reads whose sizes come from the bytes (the fuzzer must find
/// its way through a ClientHello). Odd: a real rustls client does the
/// handshake first, then sends the first half of the rest as application
/// data, which must come out as it went in whatever the cuts between
/// reads; then the second half follows as raw ciphertext (forged records
/// after real ones).
pub fn check_tls_session(configs: &Configs, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut s =
        TlsSession::new(Arc::clone(&configs.server), now, HANDSHAKE_TIMEOUT).expect("a session");
    assert_eq!(s.handshake_deadline(), Some(now + HANDSHAKE_TIMEOUT));
    assert_eq!(
        s.write_plaintext(b"early"),
        0,
        "plaintext taken before the handshake"
    );
    if mode % 2 == 0 {
        feed(&mut s, rest, rest);
        return;
    }
    let (plain, garbage) = rest.split_at(rest.len() / 2);
    let mut client = ClientConnection::new(
        Arc::clone(&configs.client),
        ServerName::try_from("localhost").expect("a name"),
    )
    .expect("a client");
    handshake(&mut s, &mut client);
    assert!(!s.is_handshaking() && s.handshake_deadline().is_none());
    // The client's records, cut where the input says.
    std::io::Write::write_all(&mut client.writer(), plain).expect("the client takes it");
    let mut ciphertext = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut ciphertext).expect("to a Vec");
    }
    let got = feed(&mut s, &ciphertext, rest);
    assert_eq!(
        got.as_deref(),
        Some(plain),
        "the plaintext changed on the way"
    );
    // A reply goes out encrypted.
    let taken = s.write_plaintext(plain);
    assert!(taken <= plain.len() && (plain.is_empty() || taken > 0));
    assert!(s.output().len() <= OUT_LIMIT + 1024);
    let n = s.output().len();
    s.handle_written(n);
    assert!(s.output().is_empty());
    feed(&mut s, garbage, garbage);
}

/// Gives `s` the `stream` in reads whose sizes come from `sizes`, writing
/// out whatever it answers; returns the plaintext, or `None` after an
/// error (which ends the connection: nothing more is read).
fn feed(s: &mut TlsSession, stream: &[u8], sizes: &[u8]) -> Option<Vec<u8>> {
    let mut plaintext = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        if !s.wants_read() {
            // The reactor would stop reading until the socket drains.
            let n = s.output().len();
            s.handle_written(n);
            assert!(s.wants_read(), "a session that never reads again");
        }
        let cut = sizes
            .get(i % sizes.len().max(1))
            .map_or(1, |&b| usize::from(b) * 37 + 1);
        i += 1;
        let end = (at + cut).min(stream.len());
        let read = &stream[at..end];
        at = end;
        let before = plaintext.len();
        let result = s.handle_ciphertext(read, &mut plaintext);
        assert!(
            plaintext.len() - before <= read.len() + (16 << 10) + 256,
            "{} bytes of plaintext from {} of ciphertext",
            plaintext.len() - before,
            read.len()
        );
        assert!(
            s.output().len() <= OUT_LIMIT + (16 << 10),
            "output unbounded"
        );
        assert!(
            s.buffered_bytes() <= 4 * OUT_LIMIT + (64 << 10),
            "buffers unbounded"
        );
        match result {
            Ok(Received::Open) => {}
            Ok(Received::Closed) => {
                assert!(!s.wants_read(), "read after close_notify");
                return Some(plaintext);
            }
            Err(_) => return None,
        }
        let n = s.output().len();
        s.handle_written(n);
    }
    Some(plaintext)
}

/// Runs the handshake between `s` and a real client, in memory.
fn handshake(s: &mut TlsSession, c: &mut ClientConnection) {
    for _ in 0..16 {
        if !s.is_handshaking() && !c.is_handshaking() {
            return;
        }
        let mut hello = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut hello).expect("to a Vec");
        }
        let mut plain = Vec::new();
        s.handle_ciphertext(&hello, &mut plain)
            .expect("a real client's handshake");
        assert!(plain.is_empty(), "plaintext during the handshake");
        let mut answer = s.output();
        while !answer.is_empty() {
            c.read_tls(&mut answer).expect("the server's records");
            c.process_new_packets().expect("a valid server flight");
        }
        let n = s.output().len();
        s.handle_written(n);
    }
    panic!("the handshake did not finish");
}
