//! Remote commands as the reactor sees them: a child process, its three
//! non-blocking pipes and a pidfd, all registered in the same poll as the
//! sockets. This module spawns and keeps state; `reactor.rs` does the
//! reading, writing and registering.
//!
//! ```text
//!   spawn ─▶ running ──(pidfd readable: reaped)──▶ draining ──(pipes at EOF,
//!              │                                     │        or grace over)──▶ exit frame
//!              └─ cancel / timeout: SIGTERM to the group, SIGKILL after a grace
//! ```
//!
//! The shell runs in its own process group, so `cancel` reaches everything
//! it started that stayed in the group; processes that left it (`setsid`,
//! double forks) are ended with the command by `crate::containment`. When
//! the shell exits while a descendant (a background job,
//! a daemon) still holds its stdout or stderr, the pipes would never reach
//! EOF: after [`DRAIN_GRACE`] they are closed and the `exit` frame is sent
//! anyway.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mio::unix::pipe;
use serde_json::Number;

use crate::containment::{self, CommandCgroup};
use crate::sys;

/// How long output is still read after the shell exited.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long a cancelled group has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Most bytes of standard input buffered for a command.
pub const STDIN_BUFFER: usize = 256 * 1024;

pub use skiffd_core::command::{Fd, Spawn};

/// One running command.
pub struct ChildProc {
    /// Slab key of the connection it belongs to (None once that closed).
    pub conn: Option<usize>,
    /// The request id its frames carry.
    pub id: Number,
    /// The shell process.
    pub child: Child,
    /// Its process group (its own pid).
    pub pgid: u32,
    /// When the shell started, in clock ticks since boot (0 if unknown,
    /// which keeps every orphan alive while this command runs).
    pub started: u64,
    /// The cgroup holding the command's whole tree, if cgroups work here.
    /// Dropping it (when the command is removed) kills what is left.
    pub cgroup: Option<CommandCgroup>,
    /// Standard output, until EOF.
    pub stdout: Option<pipe::Receiver>,
    /// Standard error, until EOF.
    pub stderr: Option<pipe::Receiver>,
    /// Standard input, until `eof` or the child closes it.
    pub stdin: Option<pipe::Sender>,
    /// Bytes waiting for the child to read its standard input.
    pub stdin_buf: Vec<u8>,
    /// Close standard input once `stdin_buf` is written.
    pub stdin_eof: bool,
    /// Readable when the process has exited.
    pub pidfd: OwnedFd,
    /// Output pipes not yet drained to `WouldBlock` (stdout, stderr).
    pub readable: [bool; 2],
    /// The pidfd fired: the process may be reaped.
    pub exit_ready: bool,
    /// How it ended, once reaped.
    pub status: Option<ExitStatus>,
    /// After exit: the time the output pipes are closed regardless.
    pub drain_until: Option<Instant>,
    /// When it is ended as by `cancel`.
    pub deadline: Instant,
    /// When SIGTERM was sent, if it was.
    pub term_sent: Option<Instant>,
    /// Output bytes so far.
    pub output: u64,
    /// On the reactor's ready list already.
    pub queued: bool,
}

impl ChildProc {
    /// Spawns `sh -c cmd` in `cwd`, in a new process group (and in
    /// `cgroup`, if given), with a small clean environment.
    pub fn spawn(
        req: &Spawn,
        now: Instant,
        cgroup: Option<CommandCgroup>,
    ) -> io::Result<ChildProc> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&req.cmd)
            .current_dir(&req.cwd)
            .env_clear()
            .env("HOME", &req.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("USER", &req.user)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(g) = &cgroup {
            sys::join_cgroup_before_exec(&mut command, g.procs());
        }
        let mut child = command.spawn()?;
        let pid = child.id();
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd we could not learn of its exit: undo.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let no_pipe = || io::Error::other("spawn gave no pipe");
        let stdout = pipe::Receiver::from(child.stdout.take().ok_or_else(no_pipe)?);
        let stderr = pipe::Receiver::from(child.stderr.take().ok_or_else(no_pipe)?);
        let stdin = pipe::Sender::from(child.stdin.take().ok_or_else(no_pipe)?);
        stdout.set_nonblocking(true)?;
        stderr.set_nonblocking(true)?;
        stdin.set_nonblocking(true)?;
        Ok(ChildProc {
            conn: Some(req.conn),
            id: req.id.clone(),
            child,
            pgid: pid,
            started: containment::start_ticks(pid).unwrap_or(0),
            cgroup,
            stdout: Some(stdout),
            stderr: Some(stderr),
            stdin: Some(stdin),
            stdin_buf: Vec::new(),
            stdin_eof: false,
            pidfd,
            readable: [true, true],
            exit_ready: false,
            status: None,
            drain_until: None,
            // `timeout` is at most --exec-max-time, which an operator may
            // set past what an Instant can hold: then it never fires.
            deadline: now
                .checked_add(req.timeout)
                .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400)),
            term_sent: None,
            output: 0,
            queued: false,
        })
    }

    /// Starts ending the command: SIGTERM to its group now, SIGKILL after
    /// [`KILL_GRACE`] (see [`ChildProc::tick`]).
    pub fn terminate(&mut self, now: Instant, why: &str) {
        if self.status.is_some() || self.term_sent.is_some() {
            return;
        }
        log::debug!("exec {}: {why}: SIGTERM to group {}", self.id, self.pgid);
        let _ = sys::kill_group(self.pgid, libc::SIGTERM);
        self.term_sent = Some(now);
    }

    /// Acts on the deadlines that have passed: the timeout and the kill
    /// grace.
    pub fn tick(&mut self, now: Instant) {
        if self.status.is_some() {
            return;
        }
        if now >= self.deadline {
            self.terminate(now, "timeout");
        }
        if let Some(t) = self.term_sent
            && now >= t + KILL_GRACE
        {
            log::debug!(
                "exec {}: still running: SIGKILL to group {}",
                self.id,
                self.pgid
            );
            let _ = sys::kill_group(self.pgid, libc::SIGKILL);
        }
    }

    /// The next time [`ChildProc::tick`] or the drain grace needs a look.
    pub fn next_wakeup(&self) -> Instant {
        if let Some(d) = self.drain_until {
            return d;
        }
        match self.term_sent {
            Some(t) => t + KILL_GRACE,
            None => self.deadline,
        }
    }

    /// Reaps the process if it has exited; true once it has.
    pub fn reap(&mut self, now: Instant) -> bool {
        if self.status.is_none()
            && self.exit_ready
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
            self.drain_until = Some(now + DRAIN_GRACE);
        }
        self.status.is_some()
    }

    /// Finished: reaped, and its output read to the end or given up on.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.status.is_some()
            && ((self.stdout.is_none() && self.stderr.is_none())
                || self.drain_until.is_some_and(|d| now >= d))
    }

    /// Exit code and signal for the `exit` frame.
    pub fn exit_fields(&self) -> (Option<i32>, Option<i32>) {
        match self.status {
            Some(s) => (s.code(), s.signal()),
            None => (None, None),
        }
    }
}
