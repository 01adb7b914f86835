//! `skiff swarm`: a load generator in one thread, on its own mio loop.
//!
//! ```text
//!   skiff swarm --conns N --duration 30s [--rate R] [--pipeline P] [--ramp 5s]
//!               [--mix echo:64=90,get:/f=5,exec:true=5] [--login USER] [--json]
//!
//!   ┌────────────── reactor (mio Poll, one thread) ───────────────┐
//!   │ ramp: open k connections by now   schedule: k requests due  │
//!   │          │                                │                 │
//!   │          ▼                                ▼                 │
//!   │  Slab<Entry>  token = slab key ──▶ Entry { socket, Conn }   │
//!   │     read until WouldBlock ──bytes──▶ Conn::handle_input     │
//!   │     write until WouldBlock ◀─bytes── Conn::output           │
//!   └──────────────────────────────┬──────────────────────────────┘
//!                                  ▼
//!             Stats: latency + connect HdrHistograms, errors by kind
//! ```
//!
//! Design:
//! - [`conn::Conn`] is sans-I/O: it turns requests into bytes and reply
//!   bytes into verdicts, and never touches a socket, so its tests feed it
//!   replies split at every byte. Every reply is checked (id, op, echo body
//!   regenerated from the id, `get` body against its md5); a wrong answer
//!   is an error by kind, never a latency sample.
//! - Memory per connection is small and lazy: one 64 KiB read buffer is
//!   shared by all connections; a connection keeps only a frame head split
//!   across reads and its unsent output, and frees either once it has
//!   grown and emptied. 100,000 connections cost little more than their
//!   kernel sockets.
//! - Past ~28,000 connections one source address runs out of ephemeral
//!   ports (and connect() slows down long before), so against a loopback
//!   target each socket is bound to one of 127.0.0.2, .3, ... (round
//!   robin, a quarter of the port range each) before a non-blocking
//!   connect. The soft `RLIMIT_NOFILE` is raised to the hard limit; if
//!   that still cannot hold N connections the swarm says so, runs with
//!   what fits and counts the rest as `fd_limit` errors.
//! - Closed loop (default): each connection keeps `--pipeline` requests in
//!   flight; latency counts from the moment a request is queued.
//!   Open loop (`--rate R`): request k is due at a fixed time (the rate
//!   ramps up with `--ramp`), goes to the next connection with a free
//!   slot, and its latency counts from that *intended* time, so a stalled
//!   server cannot hide its stall by slowing the swarm down (no
//!   coordinated omission, as in wrk2). Requests that fell due but never
//!   found a free slot before the end are reported as `unsent`.
//! - A connection the server closes, or whose replies break framing or
//!   carry an unknown id, is not reopened: its requests in flight count
//!   as errors (`closed`, `bad_frame`, `wrong_id`, `unanswered`), and the
//!   report's `conns_max_up` shows how many were ever up together.
//! - The run stops itself at `--duration`; requests in flight then get a
//!   bounded drain ([`reactor::DRAIN`]) and the unanswered ones are
//!   errors. Exit code 0 means no error of any kind.
//!
//! Is the swarm itself the bottleneck? The report gives the swarm's own
//! CPU time (getrusage) next to the wall time, and µs of it per request.
//! The swarm is one thread: at 90% or more of one core the numbers
//! measure the swarm, not the server (the report says so). Compare with
//! the server's CPU per request (from its `stats` op, sampled before and
//! after): if the server is mostly idle while the swarm is busy, the
//! limit is the client. On a loopback test both share the machine's
//! cores: swarm CPU + server CPU close to the number of cores means the
//! machine is the limit; both well below it with high latency means
//! something else waits (other processes: check the load average). Give
//! the swarm its own core (`taskset -c 1 skiff swarm ...`, server on
//! another), or run two swarms and add up their throughput.

mod conn;
mod mix;
mod reactor;
mod report;

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use mix::{Mix, parse_duration};
use reactor::{Plan, Progress, Target};
use report::{Probe, Report};

use crate::files::{self, PasswordSource};
use crate::sys;

/// Descriptors kept free for stdio, the poll, the stats probe and slack.
const FD_RESERVE: u64 = 32;
/// Connections per source address, when the port range cannot be read.
const DEFAULT_PER_SOURCE: usize = 7_000;

/// Options of `skiff swarm`.
#[derive(clap::Args)]
pub struct SwarmArgs {
    /// Connections to open (up to 100,000; loopback source addresses are spread)
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// How long to send load, e.g. 30s, 500ms, 2m
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open loop: total requests per second over all connections
    /// (default: closed loop, each connection keeps --pipeline in flight)
    #[arg(long)]
    rate: Option<f64>,
    /// Requests in flight per connection, at most
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open the connections (and ramp an open loop's rate) over this time
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ramp: Duration,
    /// Weighted ops, op:arg=weight,...: echo:SIZE, get:PATH, exec:CMD
    #[arg(long, default_value = "echo:64", value_parser = Mix::parse)]
    mix: Mix,
    /// Log in as this user on every connection (as the global --user
    /// does; the password comes as for any login, e.g. SKIFF_PASSWORD)
    #[arg(long)]
    login: Option<String>,
    /// Print the report as one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Show live progress on stderr even when it is not a terminal
    #[arg(long)]
    progress: bool,
}

/// Who the swarm logs in as: `--login`, or the global `--user` (or
/// SKIFF_USER), which means the same for every other command; and where
/// that login's password comes from.
pub struct Login<'a> {
    /// The global `--user`.
    pub user: Option<&'a str>,
    /// Where the password comes from.
    pub password: PasswordSource,
}

/// Runs the swarm against `addr`; returns the process exit code: 0 with
/// no errors, 1 with errors, 2 if the run could not start.
pub fn run(addr: &str, args: SwarmArgs, login: Login) -> i32 {
    match run_inner(addr, args, login) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("skiff swarm: {msg}");
            2
        }
    }
}

fn run_inner(addr: &str, args: SwarmArgs, login: Login) -> Result<i32, String> {
    if args.conns == 0 || args.pipeline == 0 {
        return Err("--conns and --pipeline must be at least 1".into());
    }
    if args.duration.is_zero() {
        // Nothing would be measured, and every rate would divide by ~0.
        return Err("--duration must be longer than 0".into());
    }
    if !args.ramp.is_zero() && args.ramp >= args.duration {
        return Err(format!(
            "--ramp {:?} must be shorter than --duration {:?}",
            args.ramp, args.duration
        ));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "--rate {r}: must be a positive number of requests/s"
            ));
        }
    }
    let user = match (args.login.as_deref(), login.user) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "--login {a} and --user {b} name different users; give one"
            ));
        }
        (a, b) => a.or(b),
    };
    let login = match user {
        Some(user) => {
            let password = files::read_password(user, login.password).map_err(|e| e.to_string())?;
            Some((user.to_string(), password))
        }
        None if args.mix.needs_login() => {
            return Err(format!(
                "--mix {}: get and exec need a login: --login USER (or --user USER)",
                args.mix
            ));
        }
        None => None,
    };
    let target = resolve(addr)?;
    let tls = match addr.strip_prefix("tls://") {
        Some(host_port) => Some(tls_for(addr, host_port)?),
        None => None,
    };
    let sources = match &target {
        Target::Tcp(SocketAddr::V4(a)) if a.ip().is_loopback() => {
            let per = per_source_ports();
            let k = args.conns.div_ceil(per).clamp(1, 250);
            (0..k)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                .collect()
        }
        _ => Vec::new(),
    };

    let mut fd_short = 0;
    let mut conns = args.conns;
    let want = args.conns as u64 + FD_RESERVE;
    match skiff::os::raise_nofile_limit(want) {
        Ok(limit) if limit < want => {
            let fit = limit.saturating_sub(FD_RESERVE) as usize;
            eprintln!(
                "skiff swarm: the open-file limit (RLIMIT_NOFILE, hard limit {limit}) \
                 holds only {fit} of {} connections; running with {fit}, the rest \
                 count as fd_limit errors (raise it with `ulimit -Hn` as root)",
                args.conns
            );
            fd_short = (args.conns - fit.min(args.conns)) as u64;
            conns = fit.min(args.conns);
        }
        Ok(_) => {}
        Err(e) => eprintln!("skiff swarm: cannot read or raise RLIMIT_NOFILE: {e}"),
    }
    if conns == 0 {
        return Err("no connection fits under the open-file limit".into());
    }

    let progress = if sys::stderr_is_tty() {
        Progress::Line
    } else if args.progress {
        Progress::Lines
    } else {
        Progress::Off
    };
    let mut probe = Probe::new(addr, login.clone());
    let before = probe.sample();
    let plan = Plan {
        target,
        tls,
        conns,
        duration: args.duration,
        ramp: args.ramp,
        rate: args.rate,
        pipeline: args.pipeline,
        mix: args.mix.clone(),
        login,
        sources,
        progress,
    };
    let cpu0 = skiff::os::cpu_time().total();
    let outcome = reactor::run(&plan).map_err(|e| format!("event loop failed: {e}"))?;
    let cpu = skiff::os::cpu_time().total().saturating_sub(cpu0);
    let after = probe.sample();
    drop(probe);

    let mut stats = outcome.stats;
    stats.error_n("fd_limit", fd_short);
    let report = Report {
        addr: addr.to_string(),
        conns: args.conns,
        opened: outcome.opened,
        max_up: outcome.max_up,
        rate: args.rate,
        pipeline: args.pipeline,
        unsent: outcome.unsent,
        mix: args.mix.to_string(),
        elapsed: outcome.elapsed,
        requested: args.duration,
        ok: stats.ok,
        answered: stats.answered,
        // An op that never got a correct answer has no histogram yet.
        latency_by_op: {
            let mut by_op = std::mem::take(&mut stats.latency_by_op).into_iter();
            args.mix
                .ops()
                .map(|op| {
                    let h = by_op
                        .next()
                        .unwrap_or_else(|| hdrhistogram::Histogram::new_from(&stats.latency));
                    (op.to_string(), h)
                })
                .collect()
        },
        latency: stats.latency,
        connect: stats.connect,
        handshake: plan.tls.is_some().then_some(stats.handshake),
        errors: stats.errors.into_iter().collect(),
        cpu,
        server: before.and_then(|b| after.map(|a| (b, a))),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.error_total() == 0 { 0 } else { 1 })
}

/// TLS for every connection of a run at `tls://HOST:PORT`: one connection
/// first, as any command makes it (trust on first use, the known-hosts
/// pin or `--tls-ca`), then the certificate it met is the only one the
/// run's connections accept.
fn tls_for(addr: &str, host_port: &str) -> Result<reactor::Tls, String> {
    let client = crate::cmd::connect(addr).map_err(|e| e.to_string())?;
    let skiff::client::Stream::Tls(stream) = client.stream() else {
        return Err(format!("{addr}: not a TLS connection"));
    };
    let trust = skiff::tls::Trust::Pinned(stream.fingerprint().to_string());
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    Ok(reactor::Tls {
        config: skiff::tls::client_config(&trust).map_err(|e| e.to_string())?,
        name: skiff::tls::server_name(host).map_err(|e| e.to_string())?,
    })
}

/// `HOST:PORT` or `tls://HOST:PORT` (IPv4 preferred), or `unix:PATH`.
fn resolve(addr: &str) -> Result<Target, String> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let addr = addr.strip_prefix("tls://").unwrap_or(addr);
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .map(Target::Tcp)
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// Connections given to one source address. connect() takes even ports
/// first and scans past ports in use once it wraps around, so a source
/// filled past half the ephemeral range makes every connect slow (seen:
/// 60% of the swarm's CPU in `__inet_hash_connect` at 19,000 connections
/// from one address). A quarter of the range keeps the scan short.
fn per_source_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some((hi.saturating_sub(lo) + 1) / 4)
        })
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PER_SOURCE)
}
