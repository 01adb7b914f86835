//! `skiffd`: one thread, one poll loop, every client.
//!
//! Run with no arguments to serve on loopback defaults; `RUST_LOG=debug`
//! narrates the loop.

#![deny(unsafe_code)]

mod children;
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

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use log::{info, warn};

use skiff::proto::{parse_duration, parse_size};

use crate::limits::Limits;
use crate::reactor::{Config, Reactor};

/// skiffd: a small, fast, single-threaded server.
#[derive(Parser)]
#[command(
    name = "skiffd",
    version,
    about,
    long_about = None,
    after_help = "With no command, or with serve's flags and no command \
                  (skiffd --listen 127.0.0.1:7000), skiffd serves."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve clients (the default when no command is given).
    #[command(after_help = LISTENER_HELP)]
    Serve(Box<ServeArgs>),
    /// Print a completion script for SHELL (e.g. skiffd completions bash > ~/.local/share/bash-completion/completions/skiffd).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): skiffd man > skiffd.1
    #[command(hide = true)]
    Man,
    /// Manage users: add, del, mod, passwd, list.
    User {
        /// Directory for users, homes and uploads.
        #[arg(long, default_value = "./skiff-data", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: usercli::UserCommand,
    },
}

/// How the listener flags combine, shown below `skiffd serve --help`.
const LISTENER_HELP: &str = "\
Listeners: each listener flag may be given more than once. Give none of
them and skiffd serves the loopback defaults shown above. Name any one,
and skiffd serves exactly the listeners you named and nothing else:
--listen 127.0.0.1:7000 alone serves no UDP and no raw echo.";

/// The options of `skiffd serve`. Listener options are repeatable (see
/// [`LISTENER_HELP`]); their defaults are in their help text, because a
/// clap default would be served even when another listener is named.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Directory for users, homes and uploads, made absolute at startup.
    #[arg(long, default_value = "./skiff-data")]
    data_dir: PathBuf,
    /// Framed protocol over TCP, HOST:PORT (port 0 picks a free one)
    /// [default: 127.0.0.1:9999, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    listen: Vec<String>,
    /// Framed protocol over a Unix socket [default: none]
    #[arg(long, value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// UDP time service: a datagram holding a strftime format gets the time
    /// [default: 127.0.0.1:9998, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    udp_time: Vec<String>,
    /// UDP echo service
    /// [default: 127.0.0.1:9997, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    udp_echo: Vec<String>,
    /// Raw TCP upper-casing echo (no frames; try it with nc)
    /// [default: 127.0.0.1:9996, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    raw_echo: Vec<String>,
    /// FTP, for the clients people have (curl, lftp, FileZilla, ftplib):
    /// see docs/ftp.md [default: 127.0.0.1:2121, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    ftp: Vec<String>,
    /// Ports for FTP's passive data connections, LO-HI (open them in a
    /// firewall) [default: any free port]
    #[arg(long, value_name = "LO-HI", value_parser = port_range)]
    ftp_passive: Option<(u16, u16)>,
    /// The address FTP's PASV replies announce, for a server behind NAT
    /// [default: the address the client connected to]
    #[arg(long, value_name = "ADDR")]
    ftp_advertise: Option<std::net::IpAddr>,
    /// FTP refuses USER/PASS before AUTH TLS, and data connections
    /// without PROT P (see docs/ftp.md) [default: off]
    #[arg(long)]
    ftp_require_tls: bool,
    /// FTP hashes uploads (MD5) as they arrive; otherwise the first
    /// HASH/XMD5 reads the file [default: off]
    #[arg(long)]
    ftp_hash_uploads: bool,
    /// How long an FTP passive listener waits for its client to connect
    /// (then its port is freed and the transfer gets 425), and an open
    /// data connection for a transfer command (e.g. 30, 10s, 500ms).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = positive_duration)]
    ftp_passive_timeout: Duration,
    /// Framed protocol over TLS, HOST:PORT (connect with
    /// skiff --addr tls://HOST:PORT)
    /// [default: 127.0.0.1:9995, if no listener flag is given]
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    tls_listen: Vec<String>,
    /// The TLS certificate (PEM; the chain, server's first) [default: a
    /// self-signed one, made on first start in DATA_DIR/tls/]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM; ECDSA or Ed25519, not RSA)
    /// [default: the key made with the certificate, DATA_DIR/tls/key.pem]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a TLS handshake may take: on the TLS listener, after FTP's
    /// AUTH TLS, and on an FTP data connection under PROT P (whose
    /// transfer then gets 425 or 426; the session goes on).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = positive_duration)]
    tls_handshake_timeout: Duration,
    /// Largest request body (bodies are streamed, so this can be large).
    #[arg(long, default_value = "64G", value_name = "SIZE", value_parser = parse_size)]
    max_body: u64,
    /// Close connections idle this long (e.g. 300, 5m, 30s).
    #[arg(long, default_value = "300s", value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Most connections at once; more get `too_busy`.
    #[arg(long, default_value_t = 65536, value_name = "N")]
    max_conns: usize,
    /// Most connections from one IP address; more get `too_busy`.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    max_conns_per_ip: usize,
    /// Queued output per connection above which its input is paused.
    #[arg(long, default_value = "256K", value_name = "SIZE", value_parser = parse_size)]
    out_high_water: u64,
    /// Buffer memory all connections together may hold. Above half of it
    /// connections pause at 16 KiB of output; above it the ones holding
    /// the most are closed.
    #[arg(long, default_value = "64M", value_name = "SIZE", value_parser = parse_size)]
    out_total: u64,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    backlog: i32,
    /// Most commands (exec) running at once per connection.
    #[arg(long, default_value_t = 8, value_name = "N")]
    exec_per_conn: usize,
    /// Most commands running at once in all.
    #[arg(long, default_value_t = 64, value_name = "N")]
    exec_max: usize,
    /// Longest a command may run; also caps a request's `timeout`.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    exec_max_time: Duration,
    /// Most output one command may produce before it is ended.
    #[arg(long, default_value = "16G", value_name = "SIZE", value_parser = parse_size)]
    exec_max_output: u64,
    /// How long SIGINT/SIGTERM may take to flush clients before exiting.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

/// Where the TLS listener is when no listener flag is given: on loopback
/// beside the other services, so a first start can be reached over TLS at
/// once, and moving it to a network is one flag.
const DEFAULT_TLS: &str = "127.0.0.1:9995";

/// Checks that a listener address has the form HOST:PORT, so that a
/// mistake is a usage error (exit 2) that says what to write. Names are
/// resolved later, at startup.
fn host_port(value: &str) -> Result<String, String> {
    let port_only = value.parse::<u16>().is_ok();
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_string())
        }
        _ if port_only => Err(format!(
            "a listener needs a host too: 127.0.0.1:{value} (this machine only) \
             or 0.0.0.0:{value} (every network)"
        )),
        _ => Err("expected HOST:PORT, such as 127.0.0.1:9999".into()),
    }
}

/// Parses a duration that must not be zero: a timeout of nothing would
/// end every handshake or passive listener before the client could act.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err(format!("{value:?} is no time at all; give at least 1ms")),
        d => Ok(d),
    }
}

/// Parses `LO-HI`, a range of ports for FTP's passive listeners.
fn port_range(value: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("expected LO-HI with 1 <= LO <= HI <= 65535, such as 40000-40999, not {value:?}")
    };
    let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
    let (lo, hi) = (
        lo.parse::<u16>().map_err(|_| bad())?,
        hi.parse::<u16>().map_err(|_| bad())?,
    );
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The command line with `serve` put in front when it starts with a flag
/// of `serve` rather than a command: `skiffd --listen ...` is
/// `skiffd serve --listen ...`. Help and version flags are left to the
/// top level.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let starts_with_flag = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-') && !["-h", "--help", "-V", "--version"].contains(&a));
    if starts_with_flag {
        args.insert(1, "serve".into());
    }
    args
}

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
            // Keep a few descriptors for listeners, files and pipes.
            let fit = (limit as usize).saturating_sub(64);
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let command = cli.command.unwrap_or_else(|| {
        let Cli { command } = Cli::parse_from(["skiffd", "serve"]);
        command.expect("serve parses without arguments")
    });
    let result = match command {
        Command::Serve(args) => serve(*args),
        Command::User { data_dir, command } => usercli::run(&data_dir, command),
        Command::Completions { shell } => {
            // Built in memory: clap_complete panics if its writer fails
            // (a closed pipe), a plain write does not.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "skiffd", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map_err(|e| format!("cannot write the completion script: {e}"))
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| format!("cannot write the man page: {e}")),
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

    #[test]
    fn listener_addresses_need_a_host_and_a_port() {
        assert_eq!(host_port("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(host_port("[::1]:9999").as_deref(), Ok("[::1]:9999"));
        assert_eq!(host_port("localhost:80").as_deref(), Ok("localhost:80"));
        assert!(host_port("9999").unwrap_err().contains("127.0.0.1:9999"));
        for bad in ["", ":9999", "host", "host:", "host:99999", "host:port"] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_leading_flag_means_serve() {
        let line = |args: &[&str]| -> Vec<String> {
            let args = args.iter().map(OsString::from).collect();
            with_default_command(args)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            line(&["skiffd", "--listen", "x:1"]),
            ["skiffd", "serve", "--listen", "x:1"]
        );
        for unchanged in [
            &["skiffd"][..],
            &["skiffd", "--help"],
            &["skiffd", "-V"],
            &["skiffd", "user", "list"],
            &["skiffd", "serve", "--listen", "x:1"],
        ] {
            assert_eq!(line(unchanged), unchanged);
        }
    }

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
        let args = |line: &[&str]| {
            let Cli { command } = Cli::parse_from(line);
            match command {
                Some(Command::Serve(args)) => args,
                _ => panic!("not serve"),
            }
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
        // A certificate needs its key, and the other way round.
        for half in [
            &["skiffd", "serve", "--tls-cert", "c.pem"][..],
            &["skiffd", "serve", "--tls-key", "k.pem"],
        ] {
            assert!(Cli::try_parse_from(half).is_err(), "{half:?}");
        }
    }

    #[test]
    fn the_handshake_and_passive_timeouts_are_flags_and_never_zero() {
        let config = |line: &[&str]| {
            let Cli { command } = Cli::try_parse_from(line).map_err(|e| e.to_string())?;
            match command {
                Some(Command::Serve(args)) => args.config(),
                _ => panic!("not serve"),
            }
        };
        let defaults = config(&["skiffd", "serve"]).unwrap().limits;
        assert_eq!(defaults.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(defaults.ftp_passive_timeout, Duration::from_secs(30));
        let set = config(&[
            "skiffd",
            "serve",
            "--tls-handshake-timeout",
            "250ms",
            "--ftp-passive-timeout",
            "2m",
        ])
        .unwrap()
        .limits;
        assert_eq!(set.tls_handshake_timeout, Duration::from_millis(250));
        assert_eq!(set.ftp_passive_timeout, Duration::from_secs(120));
        for flag in ["--tls-handshake-timeout", "--ftp-passive-timeout"] {
            for bad in ["0", "0ms", "-1", "soon"] {
                assert!(
                    config(&["skiffd", "serve", flag, bad]).is_err(),
                    "{flag} {bad}"
                );
            }
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
