//! The conversation: where in a request the connection is, and what the
//! handlers said comes next.
//!
//! ```text
//!               header of a request without body
//!            ┌───────────────────────────────────┐
//!            ▼                                   │
//!   ──▶   Idle ──── header with body ────▶  Body(sink) ── end of body ──┐
//!          ▲ │ ▲                               │  ▲                     │
//!          │ │ │                    batch full │  │ job back            │
//!          │ │ │                               ▼  │                     │
//!          │ │ └──── job back ─────────── Waiting(job) ◀── login, ls, get, put, end of upload
//!          │ └──── get, MD5 known ──▶ Sending ──┐                       │
//!          │                   not cached │ ▲   │                       │
//!          │                              ▼ │   │                       │
//!          │                   Waiting(warm for get)                    │
//!          └────────────── file sent ◀──────────┘◀──────────────────────┘
//!   any state ── bye, bad frame, peer gone, idle timeout ──▶ Closing ──▶ done
//!                          (output flushed first; after a job in flight, once it is back)
//! ```
//!
//! Every change of state goes through [`Conn::set_state`], which logs it
//! at debug level (`RUST_LOG=skiffd_core::conn=debug`).

use std::fmt;

use log::{debug, info};
use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::Code;

use super::Conn;
use crate::ctx::{Ctx, Submission};
use crate::handlers::files::Sending;
use crate::handlers::{self, Job, Next, Sink, Then};

/// Where in the conversation a connection is.
pub(super) enum State {
    /// Between requests: the next bytes start a frame.
    Idle,
    /// Passing the current request's body to a sink.
    Body {
        /// The request id, for the reply sent when the body ends.
        id: Option<Number>,
        /// Where the body goes.
        sink: Sink,
    },
    /// Waiting for a job on a worker thread (see [`crate::pool`]); the
    /// connection is not read meanwhile, and later requests wait. Boxed:
    /// idle connections are many, jobs in flight few.
    Waiting(Box<Waiting>),
    /// Sending a file as the socket takes it; later requests wait.
    /// Boxed, as `Waiting` is: sends in flight are few.
    Sending {
        /// The file and how much of it is left.
        send: Box<Sending>,
    },
    /// Flushing output, then closing; the reason is for the log.
    Closing(&'static str),
}

/// A request whose job is on a worker.
pub(super) struct Waiting {
    /// The request id.
    pub(super) id: Option<Number>,
    /// The job's name, for the log.
    pub(super) job: &'static str,
    /// What to do with its result.
    pub(super) then: Then,
    /// Client bytes the job carries (see [`Job::holds`]).
    pub(super) holds: usize,
    /// Closing was decided meanwhile, for this reason: the job's result
    /// must still reach `then` (it may settle quota or land a file), so
    /// the close waits for it.
    pub(super) close_after: Option<&'static str>,
}

impl State {
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Body { sink, .. } => sink.name(),
            State::Waiting(w) => w.job,
            State::Sending { .. } => "sending-file",
            State::Closing(_) => "closing",
        }
    }

    /// Output holds whole frames only: an unsolicited frame may go next.
    pub(super) fn at_frame_boundary(&self) -> bool {
        !matches!(
            self,
            State::Body {
                sink: Sink::Echo { .. },
                ..
            } | State::Sending { .. }
        )
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Conn {
    /// Whether the reactor should give this connection another turn even
    /// without a socket event: it copies a file through its buffer
    /// ([`Conn::work`]), or it has decoded its share of requests for this
    /// turn and more are buffered.
    pub(super) fn has_work(&self) -> bool {
        match &self.state {
            // The next buffer-full is read once this one is all written:
            // then it takes this one's allocation (`Sending::spare`), and
            // the socket still has the TLS layer's output to drain.
            State::Sending { send, .. } => !send.zero_copy && self.outbox.out.is_empty(),
            _ => self.inbox.turn_limited,
        }
    }

    /// The next buffer-full of a file being copied into the output: read by
    /// a worker, which the connection waits for (its result continues the
    /// send, see [`Sending::read_job`]).
    pub(super) fn work(&mut self, ctx: &mut Ctx) {
        if !matches!(self.state, State::Sending { .. }) {
            return;
        }
        let State::Sending { send } = self.set_state(State::Idle) else {
            return;
        };
        let job = send.read_job(ctx.limits.out_high, self.session.key);
        // A step of a request under way: never refused (see `must_run`).
        self.first_step = false;
        self.start_job(None, job, ctx);
    }

    /// The request is done: pushed frames go out, then waiting requests run.
    pub(super) fn finish_request(&mut self, ctx: &mut Ctx) {
        self.set_state(State::Idle);
        self.emit_pushed();
        self.consume_buffered(ctx);
        self.settle_eof();
    }

    /// The socket took `n` bytes of the file being sent; 0 means the file
    /// ended early (it shrank), which leaves the stream out of sync.
    pub(super) fn file_sent(&mut self, n: usize, ctx: &mut Ctx) {
        let State::Sending { send, .. } = &mut self.state else {
            return;
        };
        if n == 0 {
            info!("conn {}: file ended early during get", self.session.key);
            self.close("file changed during get");
            return;
        }
        self.last_active = ctx.now;
        send.sent(n as u64);
        if send.remaining == 0 {
            self.finish_request(ctx);
        } else if send.wants_warming() {
            // The file is cold: its next window is read in (the disk has
            // already started on it) before any more is sent.
            self.warm(ctx);
        }
    }

    /// The reactor found the `len` bytes at `offset` of the file being
    /// sent not (all) in the page cache.
    pub(super) fn file_not_cached(&mut self, offset: u64, len: u64, ctx: &mut Ctx) {
        let State::Sending { send } = &self.state else {
            return; // nothing on offer: a stray report
        };
        if !send.zero_copy || send.position != offset || len == 0 {
            return;
        }
        debug!(
            "conn {}: {len} bytes at {offset} not in the page cache",
            self.session.key
        );
        self.warm(ctx);
    }

    /// Hands the file to a worker that reads its next window into the
    /// page cache ([`crate::warm`]); the send goes on when it is back.
    fn warm(&mut self, ctx: &mut Ctx) {
        let State::Sending { send } = self.set_state(State::Idle) else {
            return;
        };
        ctx.stats.warmed_windows += 1;
        let job = send.warm_job(self.session.key);
        // A step of a request under way: never refused (see `must_run`).
        self.first_step = false;
        self.start_job(None, job, ctx);
    }

    /// The socket cannot take a file directly: copy through the buffer.
    pub(super) fn zero_copy_unavailable(&mut self) {
        if let State::Sending { send, .. } = &mut self.state {
            debug!(
                "conn {}: no sendfile here; copying instead",
                self.session.key
            );
            send.zero_copy = false;
        }
    }

    /// A command ended: its one `exit` frame.
    pub fn exec_exit(&mut self, id: &Number, code: Option<i32>, signal: Option<i32>) {
        self.session.running.retain(|r| r != id);
        let mut frame = Vec::with_capacity(64);
        skiff::frame::HeaderWriter::new(&mut frame, "exit")
            .field("id", id)
            .field("code", code)
            .field("signal", signal)
            .finish();
        self.push_frame(frame);
        self.close_when_drained();
    }

    /// A command could not be started.
    pub fn exec_failed(&mut self, id: &Number, code: Code, message: &str) {
        self.session.running.retain(|r| r != id);
        let mut frame = Vec::new();
        handlers::error(&mut frame, Some(id), code, message);
        self.push_frame(frame);
        self.close_when_drained();
    }

    /// Closing was decided (output may still be flushing, or a job may
    /// still have to come back).
    pub fn is_closing(&self) -> bool {
        match &self.state {
            State::Closing(_) => true,
            State::Waiting(w) => w.close_after.is_some(),
            _ => false,
        }
    }

    /// Shutting down and no command left: send what is queued and close.
    pub(super) fn close_when_drained(&mut self) {
        if self.draining && self.session.running.is_empty() && !self.is_closing() {
            self.emit_pushed();
            self.close("server shutting down");
        }
    }

    /// users.json changed: a session whose user was deleted, or whose
    /// password changed since the login, is told why (an `error` frame
    /// with no id, `auth_required`) and closed. Its commands end with the
    /// connection.
    pub fn recheck_login(&mut self, users: &crate::users::UserDb) {
        if self.is_closing() {
            return;
        }
        let Some(why) = handlers::auth::revoked(&self.session, users) else {
            return;
        };
        info!(
            "conn {}: {}: {why}; closing",
            self.session.key,
            self.session.user.as_deref().unwrap_or("?")
        );
        // Inside a reply body a frame would corrupt the stream: then the
        // close alone has to say it.
        if self.at_frame_boundary() {
            handlers::error(self.outbox.out.writer(), None, Code::AuthRequired, why);
        }
        self.close("account deleted or password changed");
    }

    pub(super) fn on_header(&mut self, header: Header, ctx: &mut Ctx) {
        debug!(
            "conn {}: frame op={} id={} size={}",
            self.session.key,
            header.op,
            header
                .id
                .as_ref()
                .map_or("-".to_string(), Number::to_string),
            header.size
        );
        ctx.stats.requests += 1;
        self.inbox.requests_this_turn += 1;
        let id = header.id.clone();
        let size = header.size;
        let next = handlers::request(header, &mut self.session, self.outbox.out.writer(), ctx);
        self.first_step = true;
        self.apply(id, next, size, ctx);
        self.first_step = false;
    }

    /// Moves to what a handler said comes next for request `id`, whose
    /// body has `size` bytes still to come.
    pub(super) fn apply(&mut self, id: Option<Number>, next: Next, size: u64, ctx: &mut Ctx) {
        let to = match next {
            Next::Body(sink) => State::Body { id, sink },
            Next::Send(send) => State::Sending {
                send: Box::new(send),
            },
            // A body nobody wants is still read, so framing stays in sync.
            Next::Done if size > 0 => State::Body {
                id,
                sink: Sink::Discard,
            },
            Next::Done => return,
            Next::Job(job) => return self.start_job(id, job, ctx),
            // `bye` carries no body worth reading.
            Next::Close(why) => return self.close(why),
        };
        self.set_state(to);
    }

    /// Hands the job's blocking part to the reactor (for the pool) and
    /// waits for its result.
    pub(super) fn start_job(&mut self, id: Option<Number>, job: Job, ctx: &mut Ctx) {
        ctx.jobs.push(Submission {
            must_run: !self.first_step,
            conn: self.session.key,
            name: job.name,
            lane: job.lane,
            work: job.work,
        });
        self.set_state(State::Waiting(Box::new(Waiting {
            id,
            job: job.name,
            then: job.then,
            holds: job.holds,
            close_after: None,
        })));
    }

    pub(super) fn on_body(&mut self, chunk: &[u8], ctx: &mut Ctx) {
        let State::Body { sink, .. } = &mut self.state else {
            return;
        };
        if handlers::body(sink, chunk, &self.session, self.outbox.out.writer(), ctx) {
            // An upload's batch is full.
            self.flush_sink(ctx);
        }
    }

    /// Hands what the body's sink collected to a worker: the body waits,
    /// unread, until the job is back and says to go on.
    pub(super) fn flush_sink(&mut self, ctx: &mut Ctx) {
        if !matches!(self.state, State::Body { .. }) {
            return;
        }
        let State::Body { id, sink } = self.set_state(State::Idle) else {
            return;
        };
        let next = handlers::flush(sink);
        self.apply(id, next, 0, ctx);
    }

    pub(super) fn on_end(&mut self, ctx: &mut Ctx) {
        if !matches!(self.state, State::Body { .. }) {
            return;
        }
        let State::Body { id, sink } = self.set_state(State::Idle) else {
            return;
        };
        let next = handlers::end(
            sink,
            id.as_ref(),
            &mut self.session,
            self.outbox.out.writer(),
            ctx,
        );
        self.apply(id, next, 0, ctx);
        self.emit_pushed();
    }

    pub(super) fn close(&mut self, why: &'static str) {
        if let State::Waiting(w) = &mut self.state {
            debug!(
                "conn {}: closing ({why}) once its job is back",
                self.session.key
            );
            w.close_after.get_or_insert(why);
            self.inbox.input = Vec::new();
            self.inbox.paused = false;
            return;
        }
        self.set_state(State::Closing(why));
        self.inbox.input = Vec::new();
        self.inbox.paused = false;
    }

    /// The one place the state changes, so the log tells the story;
    /// returns the state left.
    pub(super) fn set_state(&mut self, to: State) -> State {
        match &to {
            State::Closing(why) => debug!(
                "conn {}: state {} -> closing ({why})",
                self.session.key,
                self.state.name()
            ),
            _ => debug!(
                "conn {}: state {} -> {}",
                self.session.key,
                self.state.name(),
                to.name()
            ),
        }
        std::mem::replace(&mut self.state, to)
    }
}
