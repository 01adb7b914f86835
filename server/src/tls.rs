//! TLS on the wire: the server's certificate ([`cert`]), the one
//! `rustls::ServerConfig` every TLS connection shares, and the sans-I/O
//! layer each TLS connection puts between its socket and its engine
//! ([`session`]).
//!
//! TLS listeners are ports of their own (`--tls-listen`): a connection is
//! TLS from its first byte, never upgraded midway (STARTTLS), so there is
//! no plaintext moment for an attacker to strip the upgrade from.
//!
//! The crypto is rustls with the `ring` provider, chosen for size: the
//! whole TLS stack adds a few hundred KiB to `skiffd`.

pub mod cert;
mod selfsigned;
pub mod session;

/// The `tls_session` fuzz target's check, compiled from the fuzz package
/// so that `session`'s tests replay its corpus on stable.
#[cfg(test)]
#[path = "../../fuzz/src/tls.rs"]
mod fuzz_checks;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

use rustls::crypto::ring::{cipher_suite, kx_group, sign};
use rustls::crypto::{CryptoProvider, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
pub use session::{Received, TlsError, TlsSession};

pub use cert::Identity;

/// Builds the configuration every TLS connection shares: TLS 1.3 (the
/// only version built in), no client certificates, and an in-memory cache
/// of sessions so that a client's next connection (an FTP data connection,
/// a reconnecting shell) skips the full handshake.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            format!(
                "{}: the key does not fit the certificate, or is not an ECDSA \
                 (P-256, P-384) or Ed25519 key, the kinds skiffd signs with: {e}",
                identity.cert_path.display()
            )
        })?;
    // A TLS 1.3 client resumes with a ticket naming a session kept here:
    // an FTP data connection under `PROT P` resumes its control
    // connection's session (lftp and curl do; some servers demand it).
    // Bounded: when it is full, old sessions go, and their clients just
    // do a full handshake.
    config.session_storage = Arc::new(ReusableSessions(ServerSessionMemoryCache::new(
        SESSION_CACHE,
    )));
    Ok(Arc::new(config))
}

/// TLS sessions kept for resumption: a few hundred bytes each.
const SESSION_CACHE: usize = 256;

/// The session cache, with tickets that can be used more than once.
///
/// rustls forgets a TLS 1.3 session as it is resumed (`take`), as a
/// server accepting 0-RTT data must, lest that data be replayed. skiffd
/// accepts no early data, and an FTP client resumes the control
/// connection's session for every data connection (GnuTLS, in lftp, keeps
/// presenting the same ticket): with `take` only its first transfer would
/// resume. So a resumed session stays, until the cache's bound evicts it.
#[derive(Debug)]
struct ReusableSessions(Arc<ServerSessionMemoryCache>);

impl StoresServerSessions for ReusableSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }

    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

/// The cryptography TLS connections use: ring's, less what a server that
/// asks no client for a certificate never uses. It is assembled here
/// piece by piece rather than trimmed from rustls's `default_provider()`,
/// because whatever that function names (RSA signing, the algorithms for
/// checking certificates) stays in the binary even if it is replaced
/// afterwards. Key exchange by X25519 or P-256, which every client offers;
/// AES-GCM, and ChaCha20-Poly1305 for machines without AES instructions.
fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        // Only for checking client certificates, which skiffd never asks for.
        signature_verification_algorithms: WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        secure_random: &SystemRandom,
        key_provider: &EcKeys,
    }
}

/// The server's randomness (handshake nonces, key shares): the kernel's,
/// through ring.
#[derive(Debug)]
struct SystemRandom;

impl SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// Loads the certificate's private key: elliptic-curve keys only. RSA
/// signing is ring's largest piece of code after its P-256 tables, and an
/// RSA certificate can always be replaced by an ECDSA one (which is also
/// what skiffd makes on first start, and what ACME authorities issue on
/// request).
#[derive(Debug)]
struct EcKeys;

impl KeyProvider for EcKeys {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        if let Ok(ecdsa) = sign::any_ecdsa_type(&key) {
            return Ok(ecdsa);
        }
        match &key {
            PrivateKeyDer::Pkcs8(pkcs8) => sign::any_eddsa_type(pkcs8),
            _ => Err(rustls::Error::General(
                "not an ECDSA or Ed25519 private key".into(),
            )),
        }
    }
}

/// A fatal TLS alert record (`handshake_failure`), for a TLS client that
/// reached a plain port: its TLS library then reports a refused handshake
/// instead of garbage, and skiff can name the likely mistake.
pub const REFUSAL_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];

/// Whether the first bytes of a connection on a plain framed port are the
/// start of a TLS handshake. A frame starts with its header length, a
/// 32-bit number at most 65536, so its first byte is 0; a TLS record
/// starts with 0x16 (handshake) and the major version 3.
///
/// The reactor calls this on a plain framed connection's first read,
/// before the bytes reach the engine (which would answer `bad_frame` in
/// JSON the TLS client cannot read): on a match it logs one line, writes
/// [`REFUSAL_ALERT`] and closes that connection.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(
        first,
        [session::HANDSHAKE_RECORD] | [session::HANDSHAKE_RECORD, 3, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_told_from_a_frame() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x16]), "split after the first byte");
        assert!(!looks_like_tls(b"\0\0\0\x0f{\"op\":\"hello\"}"));
        assert!(!looks_like_tls(&[0x16, 0x00]));
        assert!(!looks_like_tls(b""));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
    }

    #[test]
    fn a_real_client_hello_is_recognised() {
        use rustls::pki_types::ServerName;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert!(looks_like_tls(&hello));
        // And the frame decoder would have refused it as a header length.
        let len = u32::from_be_bytes(hello[..4].try_into().unwrap());
        assert!(len as usize > skiff::frame::MAX_HEADER);
    }

    #[test]
    fn elliptic_curve_keys_load_and_rsa_keys_are_refused() {
        let made = selfsigned::generate(&["localhost".into()]).unwrap();
        let p256 = PrivateKeyDer::Pkcs8(made.key_der.into());
        let signer = EcKeys.load_private_key(p256).unwrap();
        assert_eq!(signer.algorithm(), rustls::SignatureAlgorithm::ECDSA);

        let rng = ring::rand::SystemRandom::new();
        let ed25519 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed25519 = PrivateKeyDer::Pkcs8(ed25519.as_ref().to_vec().into());
        let signer = EcKeys.load_private_key(ed25519).unwrap();
        assert_eq!(signer.algorithm(), rustls::SignatureAlgorithm::ED25519);

        // PKCS#1 is RSA's own key format: refused by its kind alone.
        let rsa = PrivateKeyDer::Pkcs1(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        let err = EcKeys.load_private_key(rsa).err().unwrap();
        assert!(err.to_string().contains("not an ECDSA or Ed25519"), "{err}");
    }

    #[test]
    fn the_refusal_alert_is_a_fatal_alert_record() {
        assert_eq!(REFUSAL_ALERT[0], 0x15, "content type alert");
        assert_eq!(u16::from_be_bytes([REFUSAL_ALERT[3], REFUSAL_ALERT[4]]), 2);
        assert_eq!(REFUSAL_ALERT[5], 2, "level fatal");
    }
}
