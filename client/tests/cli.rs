//! End to end: a real `skiffd` on ephemeral ports, driven by the `skiff`
//! binary as a user would run it.
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`. Setting `SKIFFD` to another executable tests the client
//! against that server instead (it must take the same arguments and print
//! the same `listening ...` lines).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to report its listeners.
const STARTUP: Duration = Duration::from_secs(10);
/// Most stdout lines read while waiting for the listeners.
const STARTUP_LINES: usize = 50;
/// How long one `skiff` run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// A user every server has (`stats` needs a login), and its password.
const USER: &str = "tester";
const PASSWORD: &str = "tester-password";

/// A running server, killed when the test ends however it ends.
struct Server {
    /// The skiffd process.
    child: Child,
    /// Its data directory, removed on drop.
    dir: PathBuf,
    /// Listener name (`framed`, `udp-time`, ...) to address.
    addrs: HashMap<String, String>,
}

impl Server {
    /// Starts skiffd on port 0 everywhere and waits for its listeners.
    fn start() -> Server {
        let bin = skiffd();
        let dir = temp_dir();
        let added = run(
            Command::new(&bin)
                .args(["user", "add", USER, "--password-stdin", "--data-dir"])
                .arg(&dir),
            format!("{PASSWORD}\n").as_bytes(),
        );
        assert!(added.status.success(), "skiffd user add: {added:?}");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--udp-time", "127.0.0.1:0"])
            .args(["--udp-echo", "127.0.0.1:0"])
            .args(["--raw-echo", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout was piped");
        // From here on the guard owns the child, so a failed wait kills it.
        let mut server = Server {
            child,
            dir,
            addrs: HashMap::new(),
        };
        server.addrs = read_listeners(stdout);
        server
    }

    /// The address of one listener.
    fn addr(&self, name: &str) -> &str {
        &self.addrs[name]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Listeners every test needs before it may start.
const NEEDED: [&str; 3] = ["framed", "udp-time", "udp-echo"];

/// Reads `listening NAME ADDR` lines on a helper thread (a blocking read
/// cannot time out) until every [`NEEDED`] listener is known, bounded in
/// lines and in time. The thread then keeps draining stdout so the server
/// never blocks writing to a full pipe.
fn read_listeners(stdout: ChildStdout) -> HashMap<String, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // After startup nobody listens: the line is dropped, the pipe still drained.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + STARTUP;
    let mut addrs = HashMap::new();
    let mut seen = Vec::new();
    for _ in 0..STARTUP_LINES {
        if NEEDED.iter().all(|n| addrs.contains_key(*n)) {
            return addrs;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("skiffd did not report its listeners ({e:?}); it printed: {seen:?}"),
        };
        let mut words = line.split_whitespace();
        if let (Some("listening"), Some(name), Some(addr)) =
            (words.next(), words.next(), words.next())
        {
            addrs.insert(name.to_string(), addr.to_string());
        }
        seen.push(line);
    }
    if NEEDED.iter().all(|n| addrs.contains_key(*n)) {
        return addrs;
    }
    panic!("skiffd did not report {NEEDED:?} in {STARTUP_LINES} lines: {seen:?}");
}

/// The server binary: `$SKIFFD`, or `skiffd` next to `skiff`.
fn skiffd() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFFD") {
        return bin.into();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff")).with_file_name("skiffd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`, which builds skiffd too",
        bin.display()
    );
    bin
}

/// A fresh, unique directory under the system temp dir.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-cli-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs `skiff` with `args` and `stdin`, bounded by [`RUN_LIMIT`]; the
/// password of [`USER`] is in SKIFF_PASSWORD.
fn skiff(args: &[&str], stdin: &[u8]) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            // A SKIFF_ADDR or SKIFF_USER in the caller's environment must not leak in.
            .env_remove("SKIFF_ADDR")
            .env_remove("SKIFF_USER")
            .env("SKIFF_PASSWORD", PASSWORD),
        stdin,
    )
}

/// Runs a command with `stdin`, bounded by [`RUN_LIMIT`].
fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let mut input = child.stdin.take().expect("stdin was piped");
    let stdin = stdin.to_vec();
    // Writing and reading on other threads, so neither side's full pipe can
    // stall the other while we poll for exit.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = drain(child.stdout.take().expect("stdout was piped"));
    let err = drain(child.stderr.take().expect("stderr was piped"));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for skiff") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `skiff`, asserts success, and returns stdout as text.
fn ok(args: &[&str]) -> String {
    ok_with_stdin(args, b"")
}

/// [`ok`] with input on stdin.
fn ok_with_stdin(args: &[&str], stdin: &[u8]) -> String {
    let out = skiff(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "skiff {args:?} failed ({}): {stderr}",
        out.status
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

#[test]
fn hello_reports_the_protocol() {
    let server = Server::start();
    let out = ok(&["--addr", server.addr("framed"), "hello"]);
    assert!(out.contains("proto: 1\n"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("server: ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("version: ")), "{out}");
    let ops = out
        .lines()
        .find_map(|l| l.strip_prefix("ops: "))
        .unwrap_or_else(|| panic!("no ops line: {out}"));
    let ops: Vec<&str> = ops.split_whitespace().collect();
    for op in ["hello", "echo", "stats"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
}

#[test]
fn echo_prints_the_body_and_a_newline() {
    let server = Server::start();
    let addr = server.addr("framed");
    assert_eq!(
        ok(&["--addr", addr, "echo", "hello, World"]),
        "hello, World\n"
    );
    assert_eq!(
        ok(&["--addr", addr, "echo", "--upper", "hello,", "World 1é"]),
        "HELLO, WORLD 1é\n"
    );
    // Text that looks like an option still goes through after `--`.
    assert_eq!(ok(&["--addr", addr, "echo", "--", "-n"]), "-n\n");
}

#[test]
fn address_comes_from_the_environment_too() {
    let server = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["echo", "via env"])
        .env("SKIFF_ADDR", server.addr("framed"))
        .stdin(Stdio::null())
        .output()
        .expect("run skiff");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"via env\n");
}

#[test]
fn time_and_udp_echo() {
    let server = Server::start();
    let udp = server.addr("udp-time");
    let year = Command::new("date").arg("+%Y").output().expect("run date");
    let year = String::from_utf8_lossy(&year.stdout).trim().to_string();
    assert_eq!(
        ok(&["time", "%Y", "--udp", udp]).trim_end_matches('\n'),
        year
    );
    // Default format: %Y-%m-%d %H:%M:%S.
    let now = ok(&["time", "--udp", udp]);
    let now = now.trim_end_matches('\n');
    assert_eq!(now.len(), 19, "{now:?}");
    assert_eq!(&now[4..5], "-", "{now:?}");
    assert_eq!(&now[13..14], ":", "{now:?}");

    let echo = server.addr("udp-echo");
    assert_eq!(
        ok(&["udp-echo", "--udp", echo, "ping", "pong"]),
        "ping pong\n"
    );
}

#[test]
fn stats_pretty_and_json() {
    let server = Server::start();
    let addr = server.addr("framed");
    // Without a login the server refuses, and says why.
    let out = skiff(&["--addr", addr, "stats"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: auth_required: "),
        "{out:?}"
    );
    let pretty = ok(&["--addr", addr, "--user", USER, "stats"]);
    for key in [
        "connections",
        "uptime_s",
        "bytes_in",
        "bytes_out",
        "children",
    ] {
        assert!(
            pretty.lines().any(|l| l.starts_with(&format!("{key}: "))),
            "{key} missing: {pretty}"
        );
    }
    let json = ok(&["--addr", addr, "--user", USER, "stats", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("stats --json is JSON");
    // This very request's connection is open while the server counts.
    let connections = value["connections"].as_u64();
    assert!(connections.is_some_and(|n| n >= 1), "{json}");
}

#[test]
fn shell_reads_commands_from_a_pipe() {
    let server = Server::start();
    let out = ok_with_stdin(
        &["--addr", server.addr("framed"), "shell"],
        b"echo hi\necho --upper 'a  b'\nquit\necho never\n",
    );
    assert_eq!(out, "hi\nA  B\n");

    let out = ok_with_stdin(
        &[
            "--addr",
            server.addr("framed"),
            "shell",
            "--udp",
            server.addr("udp-time"),
        ],
        b"hello\n\n# a comment\ntime %Y\nhelp\n",
    );
    assert!(out.contains("proto: 1\n"), "{out}");
    assert!(out.contains("quit"), "help lists quit: {out}");
}

#[test]
fn shell_reports_errors_and_keeps_going() {
    let server = Server::start();
    let out = skiff(
        &["--addr", server.addr("framed"), "shell"],
        b"frobnicate\necho still here\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("frobnicate"), "{stderr}");
    assert!(stderr.contains("help"), "hint at help: {stderr}");
    assert_eq!(out.stdout, b"still here\n");
    // The status is that of the last command, which succeeded.
    assert!(out.status.success());

    let out = skiff(&["--addr", server.addr("framed"), "shell"], b"bogus\n");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn closed_port_is_a_clear_connection_error() {
    // Bind then drop a listener: the port is now (almost surely) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = skiff(&["--addr", &addr, "hello"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: connection: "), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = skiff(&["--addr", "no-port", "hello"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn usage_errors_exit_2() {
    let out = skiff(&["echo"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = skiff(&["no-such-command"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
