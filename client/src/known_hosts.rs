//! Which TLS certificate each server had the first time: trust on first
//! use, as ssh keeps host keys.
//!
//! The file (`~/.skiff_known_hosts` unless `--known-hosts` says otherwise)
//! has one line per server, `HOST:PORT FINGERPRINT`, the fingerprint being
//! the SHA-256 of the server's certificate as skiffd prints it on the start
//! that made it. The first connection to a server adds its line; later ones
//! accept that certificate and no other. When a server's certificate
//! changes, skiff refuses to connect and says which line to remove, once
//! you know the change is the server's and not someone in between.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The default file: beside the shell's history, in the home directory.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".skiff_known_hosts"))
}

/// What the file says about a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// No line for this server yet: first use.
    Unknown,
    /// The fingerprint pinned for it, on line `line` (from 1).
    Pinned { fingerprint: String, line: usize },
}

/// The pins read from a known-hosts file.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    /// `(host, fingerprint, line number)`, in file order.
    entries: Vec<(String, String, usize)>,
}

impl KnownHosts {
    /// Reads `path`; a file that does not exist yet holds no pins.
    pub fn load(path: &Path) -> io::Result<KnownHosts> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            if let (Some(host), Some(fp)) = (words.next(), words.next()) {
                entries.push((host.to_string(), fp.to_ascii_uppercase(), i + 1));
            }
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The file these pins came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pin for `host` (`HOST:PORT` as the user wrote it). The first
    /// line for a host wins, as in ssh.
    pub fn lookup(&self, host: &str) -> Pin {
        match self.entries.iter().find(|(h, _, _)| h == host) {
            Some((_, fp, line)) => Pin::Pinned {
                fingerprint: fp.clone(),
                line: *line,
            },
            None => Pin::Unknown,
        }
    }

    /// Adds a line pinning `fingerprint` for `host`, creating the file (and
    /// its directory) if needed.
    pub fn pin(&mut self, host: &str, fingerprint: &str) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let before = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        if before.is_empty() {
            text.push_str(
                "# skiff known hosts: HOST:PORT and the SHA-256 fingerprint of its TLS certificate\n",
            );
        } else if !before.ends_with('\n') {
            text.push('\n');
        }
        // The header, if this is the file's first line, comes before it.
        let line = before.lines().count() + usize::from(before.is_empty()) + 1;
        text.push_str(&format!("{host} {fingerprint}\n"));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(text.as_bytes())?;
        self.entries
            .push((host.to_string(), fingerprint.to_string(), line));
        Ok(())
    }
}

/// The message for a certificate that changed: loud, with both
/// fingerprints and the line to remove.
pub fn changed_warning(host: &str, seen: &str, pinned: &str, file: &Path, line: usize) -> String {
    format!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: THE SERVER'S TLS CERTIFICATE HAS CHANGED!   @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         Someone could be intercepting this connection, or the server has a\n\
         new certificate. skiff did not send it anything.\n\
         The server at {host} sent a certificate with SHA-256 fingerprint\n  \
         {seen}\n\
         but {file}:{line} pins\n  \
         {pinned}\n\
         If the server's owner confirms the new fingerprint, remove line {line} of\n\
         {file} and connect again.",
        file = file.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AA:BB";
    const B: &str = "CC:DD";

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-kh-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub").join("known_hosts")
    }

    #[test]
    fn first_use_pins_then_the_same_passes_and_a_change_is_caught() {
        let path = temp("tofu");
        let mut known = KnownHosts::load(&path).unwrap();
        assert_eq!(known.lookup("127.0.0.1:9995"), Pin::Unknown);
        known.pin("127.0.0.1:9995", A).unwrap();

        // A later run reads the pin back from the file.
        let known = KnownHosts::load(&path).unwrap();
        let pin = known.lookup("127.0.0.1:9995");
        assert_eq!(
            pin,
            Pin::Pinned {
                fingerprint: A.into(),
                line: 2
            }
        );
        // Same fingerprint: passes; another: caught, with its line.
        let Pin::Pinned { fingerprint, line } = pin else {
            unreachable!()
        };
        assert_eq!(fingerprint, A);
        assert_ne!(fingerprint, B);
        let warning = changed_warning("127.0.0.1:9995", B, &fingerprint, known.path(), line);
        assert!(warning.contains(A) && warning.contains(B), "{warning}");
        assert!(
            warning.contains(&format!("{}:2", path.display())),
            "{warning}"
        );
        assert!(warning.contains("remove line 2"), "{warning}");
        // Other servers are still unknown.
        assert_eq!(known.lookup("127.0.0.1:9996"), Pin::Unknown);
        assert_eq!(known.lookup("localhost:9995"), Pin::Unknown);
    }

    #[test]
    fn lines_are_numbered_as_an_editor_shows_them() {
        let path = temp("lines");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // The last line has no newline: the pin goes on a line of its own.
        fs::write(
            &path,
            "# mine\n\nhost:1 aa:bb\nbroken-line\nhost:2 CC:DD extra words",
        )
        .unwrap();
        let mut known = KnownHosts::load(&path).unwrap();
        assert_eq!(
            known.lookup("host:1"),
            Pin::Pinned {
                fingerprint: "AA:BB".into(),
                line: 3
            }
        );
        assert_eq!(
            known.lookup("host:2"),
            Pin::Pinned {
                fingerprint: B.into(),
                line: 5
            }
        );
        assert_eq!(known.lookup("broken-line"), Pin::Unknown);
        known.pin("host:3", A).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().nth(5), Some("host:3 AA:BB"));
        assert_eq!(
            KnownHosts::load(&path).unwrap().lookup("host:3"),
            Pin::Pinned {
                fingerprint: A.into(),
                line: 6
            }
        );
    }
}
