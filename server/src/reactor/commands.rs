//! The reactor's side of remote commands: spawning, registering a
//! child's pipes and pidfd, moving bytes between them and the client's
//! state machine, reaping, and the command timers. Split from
//! `reactor.rs` to keep each file readable in one sitting; it is still
//! the reactor (only it touches the registry and the pipes).
//!
//! It also runs the sweep of `crate::containment` on a timer: while
//! commands run and after each one ends, orphaned processes are reaped or
//! killed, so nothing a command started outlives it.

use std::cmp::Reverse;
use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, info, warn};
use mio::Interest;

use skiff::proto::Code;

use super::{Client, Protocol, READ_BUDGET, Reactor, Source};
use crate::children::{ChildProc, Fd, STDIN_BUFFER};
use crate::containment::{LiveCommand, SWEEP_EVERY};

/// Largest body of one spliced output frame (a pipe holds 64 KiB by default).
const SPLICE_FRAME_MAX: usize = 1 << 20;

/// The key of the orphan sweep in `child_timers`, next to the commands'
/// own slab keys (which never come near it).
const SWEEP_TIMER: usize = usize::MAX;

impl Reactor {
    /// Buffers bytes (and maybe the end) for a command's standard input.
    pub(super) fn feed_stdin(
        &mut self,
        conn: usize,
        id: &serde_json::Number,
        bytes: &[u8],
        eof: bool,
    ) {
        let Some(ck) = self.find_child(conn, id) else {
            return;
        };
        let ch = &mut self.children[ck];
        if ch.stdin.is_some() {
            ch.stdin_buf.extend_from_slice(bytes);
        }
        ch.stdin_eof |= eof;
        if ch.stdin_buf.len() > STDIN_BUFFER
            && let Some(Client {
                protocol: Protocol::Framed(c),
                ..
            }) = self.clients.get_mut(conn)
        {
            // The command reads slower than the client sends: stop
            // reading the client until it catches up.
            c.hold_input(true);
        }
        self.drive_child(ck);
    }

    /// Starts ending a command's process group (its `exit` frame follows).
    pub(super) fn cancel_command(&mut self, conn: usize, id: &serde_json::Number) {
        let Some(ck) = self.find_child(conn, id) else {
            return;
        };
        self.children[ck].terminate(self.now, "cancel");
        let at = self.children[ck].next_wakeup();
        self.child_timers.push(Reverse((at, ck)));
    }

    fn find_child(&self, conn: usize, id: &serde_json::Number) -> Option<usize> {
        self.children
            .iter()
            .find(|(_, ch)| ch.conn == Some(conn) && &ch.id == id)
            .map(|(ck, _)| ck)
    }

    pub(super) fn spawn(&mut self, req: crate::children::Spawn) {
        let (conn, id) = (req.conn, req.id.clone());
        let now = self.now;
        let refused = if self.children.len() >= self.config.exec_max {
            Some((
                Code::TooBusy,
                format!("the server runs {} commands already", self.children.len()),
            ))
        } else {
            let cgroup = self.containment.cgroup_for_command();
            match ChildProc::spawn(&req, now, cgroup) {
                Ok(child) => {
                    let running = self.children.len() + 1;
                    let entry = self.children.vacant_entry();
                    let ck = entry.key();
                    let child = entry.insert(child);
                    let registry = self.poll.registry();
                    let registered = (|| {
                        if let Some(p) = &mut child.stdout {
                            registry.register(
                                p,
                                Source::Child(ck, Fd::Stdout).token(),
                                Interest::READABLE,
                            )?;
                        }
                        if let Some(p) = &mut child.stderr {
                            registry.register(
                                p,
                                Source::Child(ck, Fd::Stderr).token(),
                                Interest::READABLE,
                            )?;
                        }
                        if let Some(p) = &mut child.stdin {
                            registry.register(
                                p,
                                Source::Child(ck, Fd::Stdin).token(),
                                Interest::WRITABLE,
                            )?;
                        }
                        use std::os::fd::AsRawFd;
                        registry.register(
                            &mut mio::unix::SourceFd(&child.pidfd.as_raw_fd()),
                            Source::Child(ck, Fd::Exit).token(),
                            Interest::READABLE,
                        )
                    })();
                    if let Err(e) = registered {
                        warn!("exec {id}: cannot register its pipes: {e}");
                        child.conn = None;
                        child.terminate(now, "registration failed");
                    }
                    info!(
                        "conn {conn}: exec {id}: started pid {} ({running} running)",
                        child.pgid
                    );
                    self.child_timers.push(Reverse((child.next_wakeup(), ck)));
                    self.stats.children = self.children.len();
                    self.schedule_sweep(now + SWEEP_EVERY);
                    self.drive_child(ck);
                    None
                }
                Err(e) => Some((Code::Io, format!("cannot start the command: {e}"))),
            }
        };
        if let Some((code, message)) = refused
            && let Some(Client {
                protocol: Protocol::Framed(c),
                ..
            }) = self.clients.get_mut(conn)
        {
            c.exec_failed(&id, code, &message);
            self.drive(conn);
        }
    }

    /// One turn for a command: feed its stdin, read its output while its
    /// connection has room (backpressure reaches the child, which blocks
    /// in its own write), reap it, and send `exit` when it is all done.
    pub(super) fn drive_child(&mut self, ck: usize) {
        let now = self.now;
        let Reactor {
            children,
            clients,
            scratch,
            poll,
            config,
            ready,
            splice_works,
            ..
        } = self;
        let Some(ch) = children.get_mut(ck) else {
            return;
        };
        let registry = poll.registry();
        if let Some(sender) = &mut ch.stdin {
            let mut closed = false;
            while !ch.stdin_buf.is_empty() {
                match sender.write(&ch.stdin_buf) {
                    Ok(n) => {
                        ch.stdin_buf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The command closed its stdin: what is left is moot.
                        ch.stdin_buf = Vec::new();
                        closed = true;
                    }
                }
            }
            if closed || (ch.stdin_buf.is_empty() && ch.stdin_eof) {
                let _ = registry.deregister(sender);
                ch.stdin = None;
            }
        }
        if ch.stdin_buf.len() <= STDIN_BUFFER / 2
            && let Some(Client {
                protocol: Protocol::Framed(c),
                ..
            }) = ch.conn.and_then(|k| clients.get_mut(k))
        {
            c.hold_input(false);
        }
        // A TLS client's bytes are encrypted on their way: no splice.
        let (mut conn, zero_copy) = match ch.conn.and_then(|k| clients.get_mut(k)) {
            Some(Client {
                protocol: Protocol::Framed(c),
                tls,
                ..
            }) => (Some(c), tls.is_none()),
            _ => (None, false),
        };
        let limits = &config.limits;
        for (i, name) in [(0, "out"), (1, "err")] {
            let mut budget = READ_BUDGET;
            while ch.readable[i] && budget > 0 {
                if conn
                    .as_ref()
                    .is_some_and(|c| !c.ready_for_command_output(limits))
                {
                    break; // backpressure: resumed when the client drains
                }
                let pipe = if i == 0 {
                    &mut ch.stdout
                } else {
                    &mut ch.stderr
                };
                let Some(p) = pipe else {
                    ch.readable[i] = false;
                    break;
                };
                // Zero copy when the frame can go out right away: write its
                // header now, sized by what the pipe holds, and let the
                // socket's flush splice the body straight from the pipe.
                if *splice_works
                    && zero_copy
                    && let Some(c) = conn.as_mut()
                    && c.can_splice()
                {
                    use std::os::fd::AsFd;
                    let held = crate::sys::pipe_available(p.as_fd()).unwrap_or(0);
                    if held > 0 {
                        let n = held.min(SPLICE_FRAME_MAX);
                        ch.output += n as u64;
                        let fd = if i == 0 { Fd::Stdout } else { Fd::Stderr };
                        c.begin_splice(&ch.id, name, n, ck, fd);
                        if ch.output > config.exec_max_output {
                            ch.terminate(now, "output limit");
                        }
                        break; // one frame in flight; resumed when it is sent
                    }
                }
                match p.read(scratch) {
                    Ok(0) => {
                        let _ = registry.deregister(p);
                        *pipe = None;
                        ch.readable[i] = false;
                    }
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        ch.output += n as u64;
                        if let Some(c) = conn.as_mut() {
                            c.exec_output(&ch.id, name, &scratch[..n]);
                        }
                        if ch.output > config.exec_max_output {
                            ch.terminate(now, "output limit");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => ch.readable[i] = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        let _ = registry.deregister(p);
                        *pipe = None;
                        ch.readable[i] = false;
                    }
                }
            }
        }
        ch.reap(now);
        let conn_key = ch.conn;
        // A spliced frame in flight still needs its pipe.
        let splicing = conn.as_ref().is_some_and(|c| c.splicing_from(ck));
        let ended = ch.is_finished(now) && !splicing;
        if ended {
            // Dropped at the end of this block, and with it the command's
            // cgroup: whatever is left of its tree is killed.
            let mut ch = children.remove(ck);
            for p in [&mut ch.stdout, &mut ch.stderr].into_iter().flatten() {
                info!(
                    "exec {}: the shell exited but a descendant holds its output; closing the pipe",
                    ch.id
                );
                let _ = registry.deregister(p);
            }
            if let Some(p) = &mut ch.stdin {
                let _ = registry.deregister(p);
            }
            use std::os::fd::AsRawFd;
            let _ = registry.deregister(&mut mio::unix::SourceFd(&ch.pidfd.as_raw_fd()));
            let (code, signal) = ch.exit_fields();
            debug!(
                "exec {}: child exited (code {code:?}, signal {signal:?}) after {} output bytes",
                ch.id, ch.output
            );
            if let Some(c) = conn {
                c.exec_exit(&ch.id, code, signal);
            }
            self.stats.children = self.children.len();
        } else {
            let room = conn
                .as_ref()
                .is_none_or(|c| c.ready_for_command_output(limits));
            if room && (ch.readable[0] || ch.readable[1]) && !ch.queued {
                ch.queued = true;
                ready.push_back(Source::Child(ck, Fd::Stdout));
            }
            // Reaped, output not done: look again at the drain deadline.
            // Once that has passed (a spliced frame held it), the frame's
            // completion wakes the command instead: a timer in the past
            // would fire at once, forever.
            if ch.status.is_some() && ch.next_wakeup() > now {
                self.child_timers.push(Reverse((ch.next_wakeup(), ck)));
            }
        }
        if ended {
            // Its orphans, if any, are no longer owned by a running command.
            self.sweep_orphans();
        }
        if let Some(k) = conn_key {
            self.drive(k);
        }
    }

    /// Reaps and kills what ended commands left (see `crate::containment`),
    /// and looks again soon while there may be more.
    pub(super) fn sweep_orphans(&mut self) {
        let live: Vec<LiveCommand> = self
            .children
            .iter()
            .map(|(_, ch)| LiveCommand {
                pid: ch.pgid,
                started: ch.started,
                cgroup: ch.cgroup.as_ref(),
            })
            .collect();
        let report = self.containment.sweep(&live);
        if report != Default::default() {
            debug!("orphan sweep: {report:?}");
        }
        if report.more_to_do() || !self.children.is_empty() {
            self.schedule_sweep(self.now + SWEEP_EVERY);
        }
    }

    /// Puts a sweep on the command timers, unless one is due by `at`.
    fn schedule_sweep(&mut self, at: Instant) {
        if self.containment.sweep_due.is_some_and(|due| due <= at) {
            return;
        }
        self.containment.sweep_due = Some(at);
        self.child_timers.push(Reverse((at, SWEEP_TIMER)));
    }

    /// Timer turn for commands: timeouts, kill escalation, drain grace.
    pub(super) fn fire_child_timers(&mut self) {
        let now = self.now;
        while let Some(&Reverse((t, ck))) = self.child_timers.peek() {
            if t > now {
                break;
            }
            self.child_timers.pop();
            if ck == SWEEP_TIMER {
                // Only the latest scheduled sweep counts; earlier ones are stale.
                if self.containment.sweep_due == Some(t) {
                    self.containment.sweep_due = None;
                    self.sweep_orphans();
                }
                continue;
            }
            let Some(ch) = self.children.get_mut(ck) else {
                continue;
            };
            ch.tick(now);
            let next = ch.next_wakeup();
            if next > now {
                self.child_timers.push(Reverse((next, ck)));
            }
            self.drive_child(ck);
        }
    }

    /// After a client turn: if it has room again, its commands' output may
    /// flow again.
    pub(super) fn resume_children_of(&mut self, k: usize) {
        let Some(Client {
            protocol: Protocol::Framed(c),
            ..
        }) = self.clients.get(k)
        else {
            return;
        };
        if self.children.is_empty() || !c.ready_for_command_output(&self.config.limits) {
            return;
        }
        for (ck, ch) in self.children.iter_mut() {
            // Readable pipes may flow again; a reaped command may have
            // waited for its last spliced frame before sending `exit`.
            let waiting = ch.readable[0] || ch.readable[1] || ch.status.is_some();
            if ch.conn == Some(k) && waiting && !ch.queued {
                ch.queued = true;
                self.ready.push_back(Source::Child(ck, Fd::Stdout));
            }
        }
    }
}
