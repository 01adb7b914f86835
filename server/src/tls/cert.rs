//! The server's certificate: loaded from PEM files the operator names
//! (`--tls-cert`, `--tls-key`), or made on first start and kept in the
//! data directory, so that `skiffd` with no arguments can serve TLS at once.
//!
//! A generated certificate is self-signed: no authority vouches for it.
//! Clients trust it the way ssh trusts a host key: on first use they pin
//! its SHA-256 fingerprint, which skiffd prints on the start that made it
//! so that a careful user can compare the two.
//!
//! All of this runs at startup, before the loop: reading and writing
//! files here blocks no client.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::selfsigned;

/// Where a generated certificate lives, under the data directory.
const DIR: &str = "tls";
/// The certificate, PEM.
const CERT_FILE: &str = "cert.pem";
/// Its private key, PEM (PKCS#8), readable by the owner only.
const KEY_FILE: &str = "key.pem";

/// A certificate chain and its private key, ready for a `ServerConfig`.
pub struct Identity {
    /// The certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate.
    pub key: PrivateKeyDer<'static>,
    /// The certificate's file.
    pub cert_path: PathBuf,
    /// A certificate made by this start, still to be written: see
    /// [`Identity::save`].
    unsaved: Option<Unsaved>,
}

/// The PEM text of a certificate made in memory.
struct Unsaved {
    cert_pem: String,
    key_pem: String,
    key_path: PathBuf,
}

impl Identity {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8 or
    /// SEC1; an RSA key is read but then refused by `server_config`), as
    /// `--tls-cert` and `--tls-key` name them.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, String> {
        let read = |path: &Path| {
            fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                cert.display()
            ));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
        warn_if_others_can_read(key);
        Ok(Identity {
            chain,
            key: key_der,
            cert_path: cert.to_path_buf(),
            unsaved: None,
        })
    }

    /// The certificate kept in `data_dir` by an earlier start; or, if there
    /// is none, a new self-signed one for `names` (host names and IP
    /// addresses), made in memory: [`Identity::save`] writes it once the
    /// server is sure to start, so a start that fails leaves no
    /// certificate behind whose fingerprint nobody saw.
    pub fn load_or_generate(data_dir: &Path, names: &[String]) -> Result<Identity, String> {
        let dir = data_dir.join(DIR);
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        match (cert.exists(), key.exists()) {
            (true, true) => return Identity::from_files(&cert, &key),
            (true, false) => {
                return Err(format!(
                    "{} has no key beside it ({}): restore the key, or remove the \
                     certificate to have a new one made (clients that pinned the old \
                     one will then refuse the server until their known_hosts line goes)",
                    cert.display(),
                    key.display()
                ));
            }
            // A key alone is what an interrupted first save leaves: the
            // certificate was never shown to anyone, so make a new pair.
            (false, _) => {}
        }
        let made = selfsigned::generate(names)
            .map_err(|e| format!("cannot make a TLS certificate: {e}"))?;
        Ok(Identity {
            chain: vec![CertificateDer::from(made.cert_der.clone())],
            key: PrivateKeyDer::Pkcs8(made.key_der.clone().into()),
            cert_path: cert,
            unsaved: Some(Unsaved {
                cert_pem: selfsigned::pem("CERTIFICATE", &made.cert_der),
                key_pem: selfsigned::pem("PRIVATE KEY", &made.key_der),
                key_path: key,
            }),
        })
    }

    /// Whether this start made the certificate (and should show its
    /// fingerprint to the user).
    pub fn is_new(&self) -> bool {
        self.unsaved.is_some()
    }

    /// Writes a certificate made by [`Identity::load_or_generate`]: the key
    /// first, readable by the owner only, then the certificate, each
    /// through a temporary file and a rename, so that a crash leaves
    /// either a whole file or none. Does nothing for a loaded one.
    pub fn save(&mut self) -> io::Result<()> {
        let Some(unsaved) = &self.unsaved else {
            return Ok(());
        };
        if let Some(dir) = self.cert_path.parent() {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        write_atomically(&unsaved.key_path, unsaved.key_pem.as_bytes(), 0o600)?;
        write_atomically(&self.cert_path, unsaved.cert_pem.as_bytes(), 0o644)?;
        self.unsaved = None;
        Ok(())
    }

    /// The SHA-256 fingerprint of the server's certificate.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509
/// -fingerprint -sha256` prints it: upper-case hex bytes joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The names a generated certificate is made for: loopback, this host's
/// name, and the specific addresses skiffd listens on for TLS. (A pinned
/// certificate is checked by its fingerprint, not its names; the names
/// help clients that check them, such as `curl --cacert`.)
pub fn names_for(listen: &[std::net::SocketAddr]) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    for addr in listen {
        let ip = addr.ip();
        let name = ip.to_string();
        if !ip.is_unspecified() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Writes `bytes` to `path` through `path.tmp` with permission `mode`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Left by a crash mid-write: it never held a whole file.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A private key others can read is a key others may have copied: say so.
fn warn_if_others_can_read(key: &Path) {
    if let Ok(meta) = fs::metadata(key)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{} can be read by other users (mode {:o}): chmod 600 it",
            key.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiffd-cert-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_certificate_is_made_once_saved_private_and_reused() {
        let data = temp_dir("reuse");
        let mut first = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        assert!(first.is_new());
        // Nothing on disk until the server is sure to start.
        assert!(!data.join("tls").exists());
        first.save().unwrap();
        assert!(!first.is_new());
        let key_mode = fs::metadata(data.join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = fs::metadata(data.join("tls")).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert!(!data.join("tls/key.pem.tmp").exists());

        let again = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        assert!(!again.is_new());
        assert_eq!(again.fingerprint(), first.fingerprint());
        assert_eq!(again.chain, first.chain);
        assert_eq!(again.key.secret_der(), first.key.secret_der());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_start_that_never_saved_leaves_nothing_and_the_next_makes_a_new_one() {
        let data = temp_dir("unsaved");
        let first = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        drop(first); // the start failed before save
        let second = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        assert!(second.is_new());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_certificate_without_its_key_is_an_error_not_replaced() {
        let data = temp_dir("nokey");
        let mut made = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        made.save().unwrap();
        fs::remove_file(data.join("tls/key.pem")).unwrap();
        let err = Identity::load_or_generate(&data, &["localhost".into()])
            .err()
            .unwrap();
        assert!(err.contains("no key"), "{err}");
        // A key alone (an interrupted first save) is replaced.
        made.save().unwrap(); // nothing to write: already saved
        fs::remove_file(data.join("tls/cert.pem")).unwrap();
        fs::write(data.join("tls/key.pem"), "stale").unwrap();
        let fresh = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        assert!(fresh.is_new());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn files_named_by_the_operator_are_read_and_bad_ones_named_in_the_error() {
        let data = temp_dir("files");
        let mut made = Identity::load_or_generate(&data, &["localhost".into()]).unwrap();
        made.save().unwrap();
        let (cert, key) = (data.join("tls/cert.pem"), data.join("tls/key.pem"));
        let loaded = Identity::from_files(&cert, &key).unwrap();
        assert_eq!(loaded.fingerprint(), made.fingerprint());

        let junk = data.join("junk.pem");
        fs::write(&junk, "not pem at all\n").unwrap();
        let err = Identity::from_files(&junk, &key).err().unwrap();
        assert!(
            err.contains("junk.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = Identity::from_files(&cert, &junk).err().unwrap();
        assert!(
            err.contains("junk.pem") && err.contains("private key"),
            "{err}"
        );
        let err = Identity::from_files(&data.join("missing.pem"), &key)
            .err()
            .unwrap();
        assert!(
            err.contains("cannot read") && err.contains("missing.pem"),
            "{err}"
        );
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn the_fingerprint_is_sha256_in_openssl_form() {
        // SHA-256 of the empty input, a well-known value.
        let empty = fingerprint(b"");
        assert_eq!(
            empty,
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
        assert_eq!(empty.len(), 32 * 3 - 1);
    }

    #[test]
    fn names_cover_loopback_and_specific_listen_addresses() {
        let names = names_for(&[
            "0.0.0.0:9995".parse().unwrap(),
            "192.0.2.7:9995".parse().unwrap(),
        ]);
        assert!(names.contains(&"localhost".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        assert!(names.contains(&"192.0.2.7".to_string()));
        assert!(!names.contains(&"0.0.0.0".to_string()));
    }
}
