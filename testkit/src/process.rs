//! Child processes a test can always get rid of: killed on drop, waited
//! for with a limit, their pipes read on threads so a full pipe never
//! stalls them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A running process, killed (and reaped) on drop however the test ends.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// Waits for a child, bounded by `limit` (killed past it, and the test
/// fails naming `what`).
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

/// Runs a command with `stdin` (then closed), bounded by `limit`;
/// stdout and stderr are captured.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
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
