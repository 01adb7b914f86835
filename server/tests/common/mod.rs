//! Starts a real skiffd on free ports and finds its addresses.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use skiff::client::{Client, Frame};

/// A skiffd child process, killed on drop.
pub struct Server {
    pub child: Child,
    pub framed: String,
    pub unix: Option<String>,
    pub udp_time: Option<String>,
    pub udp_echo: Option<String>,
    pub raw_echo: Option<String>,
    pub dir: PathBuf,
    /// Lines the server printed after startup (its log is on stderr).
    pub stdout: mpsc::Receiver<String>,
    /// The password of the `demo` user, if this start created it.
    pub demo_password: Option<String>,
}

/// A fresh, empty directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    /// Starts skiffd with every service on 127.0.0.1 port 0 plus `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_env(extra, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = temp_dir("srv");
        let sock = dir.join("skiffd.sock");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--unix".into(),
            sock.display().to_string(),
            "--udp-time".into(),
            "127.0.0.1:0".into(),
            "--udp-echo".into(),
            "127.0.0.1:0".into(),
            "--raw-echo".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::start_with_env(&args, dir, env)
    }

    /// Starts skiffd with exactly `args`.
    pub fn start_with(args: &[String], dir: PathBuf) -> Server {
        Server::start_with_env(args, dir, &[])
    }

    /// Starts skiffd with exactly `args`, in `dir` as its working
    /// directory, so relative paths in `args` start there.
    pub fn start_in(args: &[String], dir: PathBuf) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiffd"));
        command.current_dir(&dir);
        Server::spawn(command, args, dir, &[])
    }

    /// Starts skiffd with exactly `args` and extra environment variables.
    pub fn start_with_env(args: &[String], dir: PathBuf, env: &[(&str, &str)]) -> Server {
        Server::spawn(Command::new(env!("CARGO_BIN_EXE_skiffd")), args, dir, env)
    }

    /// Runs `command` (skiffd) with `args` and waits for its startup lines.
    fn spawn(mut command: Command, args: &[String], dir: PathBuf, env: &[(&str, &str)]) -> Server {
        let fresh = !dir.join("data").join("users.json").exists();
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start skiffd");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            framed: String::new(),
            unix: None,
            udp_time: None,
            udp_echo: None,
            raw_echo: None,
            dir,
            stdout: rx,
            demo_password: None,
        };
        let expected = args.iter().filter(|a| {
            [
                "--listen",
                "--unix",
                "--udp-time",
                "--udp-echo",
                "--raw-echo",
            ]
            .contains(&a.as_str())
        });
        let expected = expected.count();
        let mut seen = 0;
        while seen < expected {
            let line = server
                .stdout
                .recv_timeout(Duration::from_secs(10))
                .expect("skiffd did not print its listening lines within 10 s");
            let mut words = line.split_whitespace();
            if words.next() != Some("listening") {
                continue;
            }
            let (Some(kind), Some(addr)) = (words.next(), words.next()) else {
                continue;
            };
            let addr = addr.to_string();
            match kind {
                "framed" => server.framed = addr,
                "framed-unix" => server.unix = Some(format!("unix:{addr}")),
                "udp-time" => server.udp_time = Some(addr),
                "udp-echo" => server.udp_echo = Some(addr),
                "raw-echo" => server.raw_echo = Some(addr),
                _ => continue,
            }
            seen += 1;
        }
        // On a fresh data dir the next line names the demo user's password.
        if fresh {
            let line = server
                .stdout
                .recv_timeout(Duration::from_secs(10))
                .expect("a fresh skiffd prints the demo password");
            server.demo_password = line
                .strip_prefix("created user demo with password ")
                .map(str::to_string);
        }
        server
    }

    /// A client logged in as `demo` (servers started on a fresh data dir).
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

    /// A connected client with a 10 s read timeout, so no test hangs.
    pub fn client(&self) -> Client {
        connect(&self.framed)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's `stats` reply.
    pub fn stats(&self) -> Value {
        let mut c = self.demo_client();
        let f = c.request(json!({"op":"stats"}), b"").unwrap();
        Value::Object(f.header.fields)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects with a 10 s read timeout.
pub fn connect(addr: &str) -> Client {
    let c = Client::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c
}

/// Sends a request and returns the reply, errors included.
pub fn roundtrip(c: &mut Client, header: Value, body: &[u8]) -> Frame {
    let Value::Object(map) = header else { panic!() };
    c.send(map, body).unwrap();
    c.recv().unwrap()
}

/// Asserts the peer closed the connection (EOF, or a reset).
pub fn assert_closed(c: &mut Client) {
    match c.recv() {
        Err(skiff::client::ClientError::Io(_)) => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Adds user `name` with `password` to the data dir of a server not
/// started yet (`extra`: e.g. `--quota 1M`, `--exec`). It creates the home.
pub fn add_user(data_dir: &Path, name: &str, password: &str, extra: &[&str]) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["user", "add", name, "--password-stdin", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success(), "user add {name} failed");
}

/// Starts skiffd (framed TCP only) on a data dir prepared by `prepare`,
/// which gets the data dir before the server starts.
pub fn start_prepared(prepare: impl FnOnce(&Path)) -> Server {
    let dir = temp_dir("prepared");
    let data = dir.join("data");
    prepare(&data);
    let args: Vec<String> = [
        "serve",
        "--data-dir",
        &path_str(&data),
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Server::start_with(&args, dir)
}
