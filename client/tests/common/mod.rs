//! The harness every client test binary shares: finding `skiffd`, temp
//! directories, users made with `skiffd user add`, a server on ephemeral
//! loopback ports (killed on drop), and `skiff` runs bounded in time.
//!
//! Each test file adds its own `impl Server { fn start() ... }` with the
//! users and listeners it needs; every wait here is bounded.

#![allow(dead_code)]

pub mod pty;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to report its listeners.
pub const STARTUP: Duration = Duration::from_secs(10);
/// Most stdout lines read while waiting for them.
pub const STARTUP_LINES: usize = 50;

/// The server binary: `$SKIFFD`, or `skiffd` next to `skiff`.
pub fn skiffd() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFFD") {
        return bin.into();
    }
    skiffd_beside_skiff()
}

/// `skiffd` next to `skiff`, as `cargo test --workspace` builds it.
pub fn skiffd_beside_skiff() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff")).with_file_name("skiffd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`, which builds skiffd too",
        bin.display()
    );
    bin
}

/// A fresh, unique directory under the system temp dir, named after the
/// test binary and `what`.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-{}-test-{what}-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A [`temp_dir`], removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        TempDir(temp_dir(what))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// [`TempDir::path`] as text, for a command line.
    pub fn str(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running process, killed (and reaped) on drop however the test ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `BIN user add ARGS... --password-stdin --data-dir DIR` with `password`
/// on stdin, bounded by `limit`; asserts success.
pub fn add_user(bin: &Path, dir: &Path, args: &[&str], password: &str, limit: Duration) {
    let out = run(
        Command::new(bin)
            .args(["user", "add"])
            .args(args)
            .arg("--password-stdin")
            .arg("--data-dir")
            .arg(dir),
        format!("{password}\n").as_bytes(),
        limit,
    );
    assert!(
        out.status.success(),
        "skiffd user add {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh data directory with `users` made by [`add_user`] (each entry
/// `NAME ARGS...`), all with `password`.
pub fn data_dir_with_users(
    bin: &Path,
    users: &[&[&str]],
    password: &str,
    limit: Duration,
) -> TempDir {
    let dir = TempDir::new("data");
    for args in users {
        add_user(bin, dir.root(), args, password, limit);
    }
    dir
}

/// A running server over its own data directory; killed, then its
/// directory removed, on drop.
pub struct Server {
    // Fields drop in order: the process dies before its directory goes.
    child: Guard,
    dir: TempDir,
    /// Where the framed listener is.
    pub addr: String,
    /// Every listener reported so far: name (`framed`, `udp-time`, ...) to
    /// address.
    addrs: HashMap<String, String>,
    /// Its stdout, line by line (a thread keeps draining the pipe).
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `BIN serve --data-dir DIR --listen 127.0.0.1:0 ARGS...`
    /// (stdout read here, stderr as given) and waits, within [`STARTUP`]
    /// and [`STARTUP_LINES`], until it reports its `framed` listener and
    /// every one in `also`. From here on the server owns `dir`.
    pub fn serve(bin: &Path, dir: TempDir, args: &[&str], stderr: Stdio, also: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.root())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout was piped");
        // From here on the guard owns the child, so a failed wait kills it.
        let mut server = Server {
            child: Guard(child),
            dir,
            addr: String::new(),
            addrs: HashMap::new(),
            lines: lines(stdout),
        };
        let mut needed = vec!["framed"];
        needed.extend_from_slice(also);
        server.wait_listeners(&needed);
        server.addr = server.listener("framed").to_string();
        server
    }

    /// Sends SIGTERM: the server begins its graceful shutdown.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.0.id()).expect("pid");
        // SAFETY: a plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// The server's data directory (`homes/USER` are the users' homes).
    pub fn data_dir(&self) -> &Path {
        self.dir.root()
    }

    /// The address of one listener.
    pub fn listener(&self, name: &str) -> &str {
        &self.addrs[name]
    }

    /// Reads `listening NAME ADDR` lines until every `needed` listener is
    /// known, bounded in lines and in time.
    fn wait_listeners(&mut self, needed: &[&str]) {
        let deadline = Instant::now() + STARTUP;
        let mut seen = Vec::new();
        for _ in 0..STARTUP_LINES {
            if needed.iter().all(|n| self.addrs.contains_key(*n)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!(
                    "skiffd did not report its listeners {needed:?} ({e:?}); it printed: {seen:?}"
                ),
            };
            let mut words = line.split_whitespace();
            if let (Some("listening"), Some(name), Some(addr)) =
                (words.next(), words.next(), words.next())
            {
                self.addrs.insert(name.to_string(), addr.to_string());
            }
            seen.push(line);
        }
        if needed.iter().all(|n| self.addrs.contains_key(*n)) {
            return;
        }
        panic!("skiffd did not report {needed:?} in {STARTUP_LINES} lines: {seen:?}");
    }

    /// The rest of the next stdout line starting with `prefix`, read
    /// within [`STARTUP`] and [`STARTUP_LINES`].
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP;
        for _ in 0..STARTUP_LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("skiffd did not print `{prefix}...`"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
        panic!("skiffd printed {STARTUP_LINES} lines without `{prefix}...`");
    }
}

/// Reads a pipe line by line on a helper thread (a blocking read cannot
/// time out; take lines with `recv_timeout`). The thread reads to the end
/// even when nobody listens any more, so the writer never blocks on a full
/// pipe.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Reads a pipe to its end on a thread.
pub fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for a child, bounded by `limit` (killed past it).
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command with `stdin` (then closed), bounded by `limit`.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let mut child = Guard(child);
    let mut input = child.0.stdin.take().expect("stdin was piped");
    let stdin = stdin.to_vec();
    // Writing and reading on other threads, so neither side's full pipe can
    // stall the other while we poll for exit.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = drain(child.0.stdout.take().expect("stdout was piped"));
    let err = drain(child.0.stderr.take().expect("stderr was piped"));
    let status = wait_bounded(&mut child.0, limit, &format!("{cmd:?}"));
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A `skiff` command with a clean environment: no address, user or
/// password leaks in from the caller; `password` sets SKIFF_PASSWORD.
pub fn skiff_command(args: &[&str], password: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(args)
        .env_remove("SKIFF_ADDR")
        .env_remove("SKIFF_USER")
        .env_remove("SKIFF_PASSWORD");
    if let Some(p) = password {
        cmd.env("SKIFF_PASSWORD", p);
    }
    cmd
}

/// Asserts that `skiff ARGS` succeeded; returns its stdout as text.
pub fn success_stdout(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "skiff {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}
