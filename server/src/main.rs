//! `skiffd`: one thread, one poll loop, every client.
//!
//! Run with no arguments to serve on loopback defaults; `RUST_LOG=debug`
//! narrates the loop.

#![deny(unsafe_code)]

mod children;
mod cli;
mod containment;
mod listen;
mod reactor;
#[allow(unsafe_code)] // the one module that calls libc directly
mod sys;
mod tls;
mod udp;
mod usercli;

// The sans-I/O core, under the names the server's modules use for it.
use skiffd_core::{buffer, conn, ctx, engine, handlers, limits, pool, services, stats, users};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use log::{info, warn};

use crate::cli::{Action, ServeArgs};
use crate::limits::Limits;
use crate::reactor::{Config, Reactor};

/// Where the TLS listener is when no listener flag is given: on loopback
/// beside the other services, so a first start can be reached over TLS at
/// once, and moving it to a network is one flag.
const DEFAULT_TLS: &str = "127.0.0.1:9995";

impl ServeArgs {
    /// No listener flag was given: every service gets its loopback default.
    fn defaults(&self) -> bool {
        self.listen.is_empty()
            && self.unix.is_empty()
            && self.udp_time.is_empty()
            && self.udp_echo.is_empty()
            && self.raw_echo.is_empty()
            && self.ftp.is_empty()
            && self.tls_listen.is_empty()
    }

    /// The addresses of one kind of listener: those named, or `default`
    /// when no listener flag was given.
    fn pick(&self, list: &[String], default: &str) -> Result<Vec<SocketAddr>, String> {
        let named = [default.to_string()];
        let list = if self.defaults() { &named[..] } else { list };
        let mut out = Vec::new();
        for a in list {
            out.extend(listen::resolve(a).map_err(|e| format!("{a}: {e}"))?);
        }
        Ok(out)
    }

    /// The TLS listeners' addresses.
    fn tls_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.pick(&self.tls_listen, DEFAULT_TLS)
    }

    /// The settings for the reactor; `tls_config` is added by `serve`
    /// once the certificate is read.
    fn config(&self) -> Result<Config, String> {
        let pick = |list: &[String], default: &str| self.pick(list, default);
        let out_high =
            usize::try_from(self.out_high_water).map_err(|_| "--out-high-water is too large")?;
        if out_high < 1024 {
            return Err("--out-high-water must be at least 1K".into());
        }
        let out_total = usize::try_from(self.out_total).map_err(|_| "--out-total is too large")?;
        if out_total < out_high * 4 {
            // One connection's own limits (its chat queue may reach 4x the
            // high-water mark) must never be enough to get it evicted.
            return Err("--out-total must be at least 4 times --out-high-water".into());
        }
        Ok(Config {
            framed: pick(&self.listen, "127.0.0.1:9999")?,
            unix: self.unix.clone(),
            udp_time: pick(&self.udp_time, "127.0.0.1:9998")?,
            udp_echo: pick(&self.udp_echo, "127.0.0.1:9997")?,
            raw_echo: pick(&self.raw_echo, "127.0.0.1:9996")?,
            ftp: pick(&self.ftp, "127.0.0.1:2121")?,
            tls: self.tls_addrs()?,
            tls_config: None,
            ftp_require_tls: self.ftp_require_tls,
            ftp_hash_uploads: self.ftp_hash_uploads,
            ftp_passive: reactor::FtpPassive {
                ports: self.ftp_passive,
                advertise: self.ftp_advertise,
            },
            limits: Limits {
                max_body: self.max_body,
                out_high,
                out_low: out_high / 4,
                out_total,
                idle_timeout: self.idle_timeout,
                close_grace: Duration::from_secs(10),
                // Pushed chat cannot be paused at its source: allow a few
                // high-water marks of it, then cut the reader off.
                push_hard: out_high * 4,
                push_soft: out_high,
                push_soft_time: Duration::from_secs(10),
                exec_per_conn: self.exec_per_conn,
                exec_max_time: self.exec_max_time,
                tls_handshake_timeout: self.tls_handshake_timeout,
                ftp_passive_timeout: self.ftp_passive_timeout,
            },
            max_conns: self.max_conns,
            max_conns_per_ip: self.max_conns_per_ip,
            backlog: self.backlog,
            shutdown_grace: self.shutdown_grace,
            exec_max: self.exec_max,
            exec_max_output: self.exec_max_output,
        })
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    sys::return_large_frees_to_os();
    let mut config = args.config()?;
    let tls_addrs = args.tls_addrs()?;
    let data_dir = absolute_data_dir(&args.data_dir)?;
    // Read or made now, written once the listeners are bound (as the demo
    // user is); the configuration is built once, here, for every TLS
    // connection to share.
    // FTP's AUTH TLS uses the same certificate as the TLS listener.
    let cert_addrs: Vec<_> = tls_addrs.iter().chain(&config.ftp).copied().collect();
    let mut identity = match (&args.tls_cert, &args.tls_key) {
        _ if cert_addrs.is_empty() => None,
        (Some(cert), Some(key)) => Some(tls::Identity::from_files(cert, key)?),
        _ => Some(tls::Identity::load_or_generate(
            &data_dir,
            &tls::cert::names_for(&cert_addrs),
        )?),
    };
    config.tls_config = identity.as_ref().map(tls::server_config).transpose()?;
    match skiff::os::raise_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Keep a few descriptors for listeners, files and pipes,
            // and those of the uploads received through pipes.
            let spare = 64 + skiffd_core::upload_pipe::MOST_DESCRIPTORS;
            let fit = (limit as usize).saturating_sub(spare);
            if config.max_conns > fit {
                info!(
                    "open-file limit is {limit}: serving at most {fit} connections, not {}",
                    config.max_conns
                );
                config.max_conns = fit;
            }
        }
        Err(e) => warn!("cannot read the open-file limit: {e}"),
    }
    let mut users = users::UserDb::load(&data_dir)
        .map_err(|e| format!("cannot read users from {}: {e}", data_dir.display()))?;
    // The demo user is made in memory now and written only once every
    // listener is bound: a start that fails must leave no user behind
    // whose password nobody saw.
    let demo_password = users::add_demo_user(&mut users);
    let users_to_save = demo_password.as_ref().map(|_| users.clone());
    let services = services::Services::new(data_dir.clone(), users);
    let mut reactor = Reactor::bind(config, services).map_err(|e| e.to_string())?;
    if let Some(users) = users_to_save {
        users::save_demo_user(&users, &data_dir)
            .map_err(|e| format!("cannot create the demo user: {e}"))?;
    }
    let new_certificate = identity.as_ref().is_some_and(tls::Identity::is_new);
    if let Some(identity) = &mut identity {
        identity.save().map_err(|e| {
            format!(
                "cannot save the TLS certificate {}: {e}",
                identity.cert_path.display()
            )
        })?;
    }
    let listening = reactor.local_addrs();
    for (name, addr) in &listening {
        println!("listening {name} {addr}");
    }
    if let Some(password) = &demo_password {
        // Shown once: only its hash is stored.
        println!("created user demo with password {password}");
    }
    if let Some(identity) = &identity {
        // The first TLS listener's real address (port 0 is a free port).
        let tls_addr = listening
            .iter()
            .find(|(name, _)| *name == "tls")
            .map(|(_, addr)| addr.clone());
        if new_certificate {
            let user = demo_password.as_ref().map(|_| "demo");
            print!(
                "{}",
                new_certificate_notice(identity, tls_addr.as_deref(), user)
            );
        }
        info!(
            "TLS certificate {}, SHA-256 {}",
            identity.cert_path.display(),
            identity.fingerprint()
        );
    }
    info!("data dir {}", data_dir.display());
    reactor.run().map_err(|e| format!("event loop failed: {e}"))
}

/// What the start that made the server's certificate tells its user: the
/// fingerprint, and how to connect so that the client checks it.
fn new_certificate_notice(
    identity: &tls::Identity,
    tls_addr: Option<&str>,
    user: Option<&str>,
) -> String {
    let mut notice = format!(
        "created TLS certificate {}, SHA-256 fingerprint\n  {}\n",
        identity.cert_path.display(),
        identity.fingerprint()
    );
    if let Some(addr) = tls_addr {
        let user = user.map(|u| format!(" --user {u}")).unwrap_or_default();
        notice.push_str(&format!(
            "connect securely: skiff --addr tls://{addr}{user} hello\n  \
             (the first connection pins this fingerprint: check that skiff shows the same)\n"
        ));
    }
    notice
}

/// Creates the data directory if needed and returns its absolute, real
/// path. Everything after startup uses this path: commands get their
/// home from it as `HOME`, and a relative one would mean nothing to them
/// (`cd && pwd` in a command's own working directory).
fn absolute_data_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))
}

/// Writes text to standard output; a closed pipe (`skiffd man | head`)
/// is an error to report, not a panic as `print!` would make it.
fn print(text: &str) -> Result<(), String> {
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let action = match cli::parse(std::env::args_os().collect()) {
        Ok(action) => action,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        Action::Serve(args) => serve(*args),
        Action::User { data_dir, command } => usercli::run(&data_dir, command),
        Action::Completions(shell) => print(shell.script()),
        Action::Man => print(cli::MAN_PAGE),
        Action::Print(text) => print(&text),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiffd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn a_new_certificate_is_announced_with_its_fingerprint_and_how_to_connect() {
        let dir = std::env::temp_dir().join(format!("skiffd-notice-{}", std::process::id()));
        let identity = tls::Identity::load_or_generate(&dir, &["localhost".into()]).unwrap();
        let notice = new_certificate_notice(&identity, Some("127.0.0.1:9995"), Some("demo"));
        let lines: Vec<&str> = notice.lines().collect();
        assert_eq!(lines.len(), 4, "{notice}");
        assert!(lines[0].contains("tls/cert.pem"), "{notice}");
        assert_eq!(lines[1].trim(), identity.fingerprint());
        assert_eq!(
            lines[2],
            "connect securely: skiff --addr tls://127.0.0.1:9995 --user demo hello"
        );
        assert!(lines[3].contains("pins this fingerprint"));
        let quiet = new_certificate_notice(&identity, None, None);
        assert_eq!(quiet.lines().count(), 2);
    }

    #[test]
    fn tls_listens_on_loopback_by_default_and_only_when_named_otherwise() {
        let args = |line: &[&str]| match cli::parse(line.iter().map(OsString::from).collect()) {
            Ok(Action::Serve(args)) => args,
            _ => panic!("not serve"),
        };
        let all = args(&["skiffd", "serve"]);
        assert_eq!(
            all.tls_addrs().unwrap(),
            ["127.0.0.1:9995".parse().unwrap()]
        );
        let framed_only = args(&["skiffd", "serve", "--listen", "127.0.0.1:0"]);
        assert!(framed_only.tls_addrs().unwrap().is_empty());
        let tls_only = args(&["skiffd", "serve", "--tls-listen", "127.0.0.1:0"]);
        assert_eq!(
            tls_only.tls_addrs().unwrap(),
            ["127.0.0.1:0".parse().unwrap()]
        );
        assert!(tls_only.config().unwrap().framed.is_empty());
    }

    #[test]
    fn the_handshake_and_passive_timeouts_are_flags_and_never_zero() {
        let config = |line: &[&str]| match cli::parse(line.iter().map(OsString::from).collect()) {
            Ok(Action::Serve(args)) => args.config(),
            _ => Err("not serve".to_string()),
        };
        let defaults = config(&["skiffd", "serve"]).unwrap();
        assert_eq!(
            defaults.limits.tls_handshake_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(defaults.limits.ftp_passive_timeout, Duration::from_secs(30));
        assert!(!defaults.ftp_hash_uploads);
        let set = config(&[
            "skiffd",
            "serve",
            "--tls-handshake-timeout",
            "250ms",
            "--ftp-passive-timeout",
            "2m",
            "--ftp-hash-uploads",
        ])
        .unwrap();
        assert_eq!(set.limits.tls_handshake_timeout, Duration::from_millis(250));
        assert_eq!(set.limits.ftp_passive_timeout, Duration::from_secs(120));
        assert!(set.ftp_hash_uploads);
        for flag in ["--tls-handshake-timeout", "--ftp-passive-timeout"] {
            for bad in ["0", "0ms", "-1", "soon"] {
                assert!(
                    config(&["skiffd", "serve", flag, bad]).is_err(),
                    "{flag} {bad}"
                );
            }
        }
    }
}
