//! A real `skiffd` for a test: started on ephemeral loopback ports, its
//! listeners read from the `listening NAME ADDR` lines it prints, killed
//! and its directory removed on drop.
//!
//! Every wait is bounded: startup by [`STARTUP`] and [`STARTUP_LINES`],
//! `skiffd user` commands by the limit their caller gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::Client;

use crate::process::{Guard, lines, run, wait_bounded};
use crate::session::connect;
use crate::temp::TempDir;

/// How long a server may take to report its listeners.
pub const STARTUP: Duration = Duration::from_secs(10);
/// Most stdout lines read while waiting for them.
pub const STARTUP_LINES: usize = 50;

/// The listener flags of `skiffd serve` and the name each listener has in
/// the `listening NAME ADDR` line: a start waits for every one its
/// arguments ask for.
const LISTENERS: [(&str, &str); 7] = [
    ("--listen", "framed"),
    ("--unix", "framed-unix"),
    ("--udp-time", "udp-time"),
    ("--udp-echo", "udp-echo"),
    ("--raw-echo", "raw-echo"),
    ("--ftp", "ftp"),
    ("--tls-listen", "tls"),
];

/// A running skiffd; killed, then its directory removed, on drop.
pub struct Server {
    // Fields drop in order: the process dies before its directory goes.
    child: Guard,
    /// Removed on drop; taken out by [`Server::kill`] for a restart.
    dir: Option<TempDir>,
    /// Its `--data-dir`.
    data: PathBuf,
    /// Where the framed TCP listener is (`--listen`).
    pub framed: String,
    /// Every listener it reported: name (`framed`, `udp-time`, ...) to
    /// address.
    listeners: HashMap<String, String>,
    /// Its stdout, line by line after the startup lines (a thread keeps
    /// draining the pipe; its log is on stderr).
    stdout: mpsc::Receiver<String>,
    /// The password of the `demo` user, if this start created it (a first
    /// start on a data dir without users does, and prints it once).
    pub demo_password: Option<String>,
}

impl Server {
    /// Starts `bin serve --data-dir DIR --listen 127.0.0.1:0 ARGS...`,
    /// with `dir` (which the server then owns) as its data directory.
    pub fn serve(bin: &Path, dir: TempDir, args: &[&str]) -> Server {
        let data = dir.root().to_path_buf();
        let mut all: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            path_str(&data),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Server::spawn(Command::new(bin), &all, dir, data)
    }

    /// Runs `command` (a skiffd, with whatever working directory and
    /// environment the caller set) with exactly `args`, and waits for the
    /// listeners those arguments ask for and, on a data dir without users,
    /// the demo password. `data` is the data directory the arguments name;
    /// `dir` (usually holding it) is the server's from now on.
    ///
    /// The log goes to the test's stderr at `RUST_LOG=$SKIFF_TEST_LOG`,
    /// `warn` by default.
    pub fn spawn(mut command: Command, args: &[String], dir: TempDir, data: PathBuf) -> Server {
        let fresh = !data.join("users.json").exists();
        let mut child = command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout was piped");
        // From here on the guard owns the child, so a failed wait kills it.
        let mut server = Server {
            child: Guard(child),
            dir: Some(dir),
            data,
            framed: String::new(),
            listeners: HashMap::new(),
            stdout: lines(stdout),
            demo_password: None,
        };
        let needed: Vec<&str> = LISTENERS
            .iter()
            .filter(|(flag, _)| args.iter().any(|a| a == flag))
            .map(|&(_, name)| name)
            .collect();
        server.wait_listeners(&needed);
        if let Some(framed) = server.listeners.get("framed") {
            server.framed = framed.clone();
        }
        if fresh {
            server.demo_password = Some(server.wait_line("created user demo with password "));
        }
        server
    }

    /// Reads `listening NAME ADDR` lines until every `needed` listener is
    /// known, bounded in lines and in time.
    fn wait_listeners(&mut self, needed: &[&str]) {
        let deadline = Instant::now() + STARTUP;
        let mut seen = Vec::new();
        for _ in 0..STARTUP_LINES {
            if needed.iter().all(|n| self.listeners.contains_key(*n)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.stdout.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!(
                    "skiffd did not report its listeners {needed:?} ({e:?}); it printed: {seen:?}"
                ),
            };
            let mut words = line.split_whitespace();
            if let (Some("listening"), Some(name), Some(addr)) =
                (words.next(), words.next(), words.next())
            {
                self.listeners.insert(name.to_string(), addr.to_string());
            }
            seen.push(line);
        }
        if !needed.iter().all(|n| self.listeners.contains_key(*n)) {
            panic!("skiffd did not report {needed:?} in {STARTUP_LINES} lines: {seen:?}");
        }
    }

    /// The rest of the next stdout line starting with `prefix`, read
    /// within [`STARTUP`] and [`STARTUP_LINES`].
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP;
        for _ in 0..STARTUP_LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("skiffd did not print `{prefix}...`"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
        panic!("skiffd printed {STARTUP_LINES} lines without `{prefix}...`");
    }

    /// The next stdout line, if one comes within `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.stdout.recv_timeout(limit).ok()
    }

    /// The address of listener `name` (`framed`, `framed-unix`,
    /// `udp-time`, `udp-echo`, `raw-echo`, `ftp`, `tls`).
    ///
    /// # Panics
    /// If the server has no such listener.
    pub fn listener(&self, name: &str) -> &str {
        self.listeners
            .get(name)
            .unwrap_or_else(|| panic!("no {name} listener: {:?}", self.listeners))
    }

    /// The framed Unix socket as the client's address (`unix:PATH`).
    pub fn unix(&self) -> String {
        format!("unix:{}", self.listener("framed-unix"))
    }

    /// Its data directory (`homes/USER` are the users' homes).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory it owns (its data dir is usually inside).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory is held").root()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends `signal` (a `kill -SIGNAL` name: `TERM`, `INT`, `HUP`...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Sends SIGTERM: the server begins its graceful shutdown.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, no chance to clean up; hands back its directory, whole,
    /// for a restart on the same data.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.0.kill();
        wait_bounded(&mut self.child.0, STARTUP, "the killed skiffd");
        self.dir.take().expect("the directory is held")
    }

    /// A connected client with a 10 s read timeout, so no test hangs.
    pub fn client(&self) -> Client {
        connect(&self.framed)
    }

    /// A client logged in as `demo` (servers started on a data dir
    /// without users).
    pub fn demo_client(&self) -> Client {
        let mut c = self.client();
        let password = self
            .demo_password
            .clone()
            .expect("this server created no demo user");
        c.request(json!({"op":"login","user":"demo","password":password}), b"")
            .expect("demo login");
        c
    }

    /// The server's `stats` reply (asked as `demo`).
    pub fn stats(&self) -> Value {
        let mut c = self.demo_client();
        let f = c.request(json!({"op":"stats"}), b"").expect("stats");
        Value::Object(f.header.fields)
    }
}

/// `BIN user add ARGS... --password-stdin --data-dir DIR` with `password`
/// on stdin, bounded by `limit`; asserts success. ARGS is the name and
/// any flags (`--quota 1M`, `--exec`). It creates the home.
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

/// A path as text, for a command line.
pub fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}
