//! End to end: `skiff exec` and the shell's `!CMD` against a real `skiffd`
//! (users created with `skiffd user add`, one with `--exec`), driven by the
//! `skiff` binary as a user would run it.
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`; `SKIFFD` may name another server binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to report its listener.
const STARTUP: Duration = Duration::from_secs(10);
/// Most stdout lines read while waiting for it.
const STARTUP_LINES: usize = 50;
/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// The test users' password.
const PASSWORD: &str = "s3cret pass";

/// A running process, killed (and reaped) on drop however the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running server over its own data directory; killed and removed on
/// drop.
struct Server {
    child: Option<Guard>,
    dir: PathBuf,
    addr: String,
}

impl Server {
    /// Creates `alice` (exec right) and `bob` (none), then serves the
    /// framed protocol on a free loopback port.
    fn start() -> Server {
        let mut server = Server {
            child: None,
            dir: temp_dir("data"),
            addr: String::new(),
        };
        server.add_user(&["alice", "--exec"]);
        server.add_user(&["bob"]);
        let bin = skiffd();
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&server.dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout was piped");
        server.child = Some(Guard(child));
        server.addr = read_framed_addr(stdout);
        server
    }

    /// `skiffd user add NAME ARGS... --password-stdin --data-dir DIR`.
    fn add_user(&self, args: &[&str]) {
        let out = run(
            Command::new(skiffd())
                .args(["user", "add"])
                .args(args)
                .arg("--password-stdin")
                .arg("--data-dir")
                .arg(&self.dir),
            format!("{PASSWORD}\n").as_bytes(),
        );
        assert!(
            out.status.success(),
            "skiffd user add {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skiff --addr ADDR --user USER ARGS...`, password from the
    /// environment.
    fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args(["--addr", &self.addr, "--user", user])
            .args(args)
            .env_remove("SKIFF_ADDR")
            .env_remove("SKIFF_USER")
            .env("SKIFF_PASSWORD", PASSWORD);
        cmd
    }

    /// Runs `skiff --user USER ARGS...` with `stdin`.
    fn skiff(&self, user: &str, args: &[&str], stdin: &[u8]) -> Output {
        run(&mut self.command(user, args), stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads stdout on a helper thread until `listening framed ADDR`, bounded
/// in time and lines; the thread then keeps draining the pipe.
fn read_framed_addr(stdout: ChildStdout) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + STARTUP;
    let mut seen = Vec::new();
    for _ in 0..STARTUP_LINES {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("skiffd did not say where it listens ({e:?}): {seen:?}"));
        if let Some(addr) = line.strip_prefix("listening framed ") {
            return addr.trim().to_string();
        }
        seen.push(line);
    }
    panic!("no `listening framed` line in {STARTUP_LINES} lines: {seen:?}");
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
fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-exec-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Waits for a child, bounded by [`RUN_LIMIT`] (killed past it).
fn wait_bounded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command with `stdin` (then closed), bounded by [`RUN_LIMIT`].
fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let mut child = Guard(child);
    let mut input = child.0.stdin.take().expect("stdin was piped");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = drain(child.0.stdout.take().expect("stdout was piped"));
    let err = drain(child.0.stderr.take().expect("stderr was piped"));
    let status = wait_bounded(&mut child.0, &format!("{cmd:?}"));
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn streams_go_to_their_places_and_the_exit_code_comes_back() {
    let server = Server::start();
    let out = server.skiff("alice", &["exec", "echo out; echo err >&2; exit 7"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    // Words are joined as ssh joins them; options after CMD are its own.
    let out = server.skiff("alice", &["exec", "echo", "-n", "a", "b"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a b");
}

#[test]
fn a_signal_becomes_128_plus_its_number() {
    let server = Server::start();
    let out = server.skiff("alice", &["exec", "kill -TERM $$"], b"");
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
}

#[test]
fn stdin_is_forwarded_to_its_end() {
    let server = Server::start();
    let out = server.skiff("alice", &["exec", "tr a-z A-Z"], b"hello\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\n");
    // Many chunks, in order, then eof.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = server.skiff("alice", &["exec", "tr a-z A-Z | wc -c"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3000000");
    let out = server.skiff("alice", &["exec", "cksum"], &data);
    let local = run(Command::new("cksum").stdin(Stdio::piped()), &data);
    assert_eq!(text(&out.stdout), text(&local.stdout));
}

#[test]
fn without_the_exec_right_it_is_forbidden() {
    let server = Server::start();
    let out = server.skiff("bob", &["exec", "true"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("error: forbidden: "),
        "{}",
        text(&out.stderr)
    );
    // In the shell too, and the session goes on in step.
    let out = server.skiff("bob", &["shell"], b"!true\npwd\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "/\n");
}

#[test]
fn ctrl_c_cancels_the_remote_command() {
    let server = Server::start();
    let child = server
        .command("alice", &["exec", "echo started; sleep 30; echo never"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff");
    let mut child = Guard(child);
    let err = drain(child.0.stderr.take().expect("stderr was piped"));
    // Output arrives as it is written, long before the command ends.
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("stdout was piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("`started` did not arrive while the command ran");
    assert_eq!(first, "started");
    let start = Instant::now();
    let pid = i32::try_from(child.0.id()).expect("pid");
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = wait_bounded(&mut child.0, "skiff exec after Ctrl-C");
    assert_eq!(status.code(), Some(143), "{}", text(&err.join().unwrap()));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(rx.try_iter().all(|l| l != "never"));
}

#[test]
fn the_shell_runs_commands_in_its_cwd() {
    let server = Server::start();
    let script = "!echo hi\nmkdir docs\ncd docs\n!pwd\n!cat\ncd ..\n!pwd; exit 3\n";
    let out = server.skiff("alice", &["shell"], script.as_bytes());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{}", text(&out.stderr));
    assert_eq!(lines[0], "hi");
    // The server shows its own path of the home.
    assert!(lines[1].ends_with("/alice/docs"), "{stdout}");
    assert!(lines[2].ends_with("/alice"), "{stdout}");
    // `!cat` ended (its stdin is empty); the status is the last command's.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}
