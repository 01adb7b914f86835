//! One framed connection as a sans-I/O state machine.
//!
//! A [`Conn`] never sees a socket, a disk or a clock. The reactor drives
//! it through the [`Engine`] contract (written down in [`crate::engine`]),
//! in this order within one turn:
//!
//! ```text
//!   start_turn(ctx)                   MAX_REQUESTS_PER_TURN more requests may be decoded; one step
//!                                     of a file copied through the buffer; input that waited
//!   handle_input(bytes, ctx)          bytes read from the socket (only while wants_read())
//!     poll_transmit(bytes) → handle_written(n)    queued replies, echo bodies still lent from `bytes`
//!     release_input(bytes, ctx)       what is still lent is copied now
//!   end_turn(ctx)                     an upload's partial batch goes to a worker
//!   poll_transmit(&[]) → handle_written(n)        bytes, then a file (sendfile) or a command's pipe (splice)
//!
//!   between turns: handle_eof, handle_timeout, handle_job_done, handle_job_refused,
//!                  handle_reset, shut_down
//!   queries:       wants_read, wants_turn, deadline, is_done, job_in_flight, buffered_bytes
//! ```
//!
//! Time comes in as `now` inside [`Ctx`], so the tests run on virtual time.
//! Beyond the contract, the reactor reaches a framed connection for what
//! only it does: chat ([`Conn::push_message`]), commands' output
//! ([`Conn::exec_output`], [`Conn::begin_splice`], [`Conn::exec_exit`]),
//! and rechecking a login ([`Conn::recheck_login`]).
//!
//! It is three parts, one file each:
//!
//! ```text
//!   socket bytes ──▶ inbox ──────────▶ conversation ──────────▶ outbox ──▶ poll_transmit
//!                    decoder,          Idle/Body/Waiting/       queued bytes, lent bodies,
//!                    request budget    Sending/Closing,         file, splice, push queue,
//!                    per turn          handlers, jobs           water marks
//! ```
//!
//! - `inbox.rs`: frame decoding, the per-turn request budget, input that
//!   waits (backpressure, a job, a full stdin);
//! - `conversation.rs`: the states, every change through `set_state` (so
//!   `RUST_LOG=debug` tells it), and the dispatch to the handlers;
//! - `outbox.rs`: the output lanes, the push queue for unsolicited frames,
//!   the water marks and the push limits.
//!
//! **Jobs.** A handler that needs the disk or a slow CPU job returns a
//! [`crate::handlers::Job`]; the connection pushes its blocking half onto
//! `Ctx::jobs` for the reactor to give the worker pool, and waits
//! (`Waiting`): it reads nothing and decodes nothing until
//! `handle_job_done` brings the result to the job's `then`. A close
//! decided meanwhile waits for that result too, because it may settle
//! quota or land a file, and the reactor keeps the connection until
//! `job_in_flight` is false.
//!
//! **Lending.** One exception to "the connection owns its bytes": a plain
//! echo body that arrived in the reactor's read buffer is not copied into
//! the output. It stays *lent* until the reactor has written what it could
//! and called `release_input`, which copies only the unwritten rest. That
//! copy was a third of the CPU of a 16 KiB echo; tokio's echo pays it too
//! (BENCHMARKS.md §8c).
//!
//! **Backpressure** is orthogonal to the state: once queued output passes
//! the high-water mark the connection stops consuming input (and so the
//! reactor stops reading its socket) until the peer has read it down to
//! the low-water mark. Input is therefore bounded by one frame head plus
//! one read, output by the high-water mark plus one body chunk.

use std::any::Any;
use std::net::IpAddr;
use std::time::Instant;

use log::{debug, info};

use skiff::frame::MAX_HEAD;
use skiff::proto::Code;

use crate::buffer::OutBuf;
use crate::ctx::Ctx;
use crate::engine::{Engine, Parts, Transmit};
use crate::handlers::{self, Session};
use crate::limits::Limits;

mod conversation;
mod inbox;
mod outbox;
#[cfg(test)]
mod tests;

use conversation::{State, Waiting};
use inbox::Inbox;
pub use inbox::MAX_REQUESTS_PER_TURN;
use outbox::Outbox;

/// A framed connection's protocol state.
pub struct Conn {
    /// Bytes read and not yet acted on, and the per-turn request budget.
    inbox: Inbox,
    /// Everything on its way to the socket.
    outbox: Outbox,
    /// The current step of the conversation.
    state: State,
    /// Who is logged in on this connection, and where they are; also
    /// holds the slab key, for the log.
    session: Session,
    /// A request's header is being handled: a job it asks for is its
    /// first, which the pool may refuse (see
    /// [`crate::ctx::Submission::must_run`]).
    first_step: bool,
    /// The server is shutting down and waits for this connection's
    /// commands: no request is read, and the connection closes once the
    /// last command's `exit` frame is queued.
    draining: bool,
    /// Last time bytes moved in either direction.
    last_active: Instant,
}

impl Conn {
    /// A fresh connection with slab key `key`.
    pub fn new(key: usize, peer: Option<IpAddr>, now: Instant, limits: &Limits) -> Conn {
        Conn {
            inbox: Inbox::new(limits.max_body),
            outbox: Outbox::default(),
            state: State::Idle,
            session: Session::new(key, peer),
            first_step: false,
            draining: false,
            last_active: now,
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.session.user.as_deref()
    }

    pub(super) fn idle_deadline(&self, limits: &Limits) -> Instant {
        match self.state {
            State::Closing(_) => self.last_active + limits.close_grace,
            _ => self.last_active + limits.idle_timeout,
        }
    }
}

impl Engine for Conn {
    /// A new turn: [`MAX_REQUESTS_PER_TURN`] more requests may be decoded;
    /// one bounded step of copying a file into the output, and the input
    /// that waited while it was held back.
    fn start_turn(&mut self, ctx: &mut Ctx) {
        self.begin_turn();
        if self.has_work() {
            self.work(ctx);
        }
        self.resume(ctx);
    }

    /// Takes bytes read from the socket.
    fn handle_input(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        self.last_active = ctx.now;
        if matches!(self.state, State::Closing(_)) {
            return;
        }
        if self.is_lending() {
            // The bytes lent from the previous input are gone.
            self.lose_lent_input();
            return;
        }
        if self.inbox.input.is_empty() {
            // The common case: consume straight from the reactor's read
            // buffer and keep only a partial frame head, if any.
            let used = self.consume(bytes, true, ctx);
            if !matches!(self.state, State::Closing(_)) {
                self.inbox.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            self.inbox.input.extend_from_slice(bytes);
            self.consume_buffered(ctx);
        }
        self.settle_eof();
    }

    /// The reactor is done with the input it passed to `handle_input`:
    /// whatever lent part of it was not written yet is copied now.
    fn release_input(&mut self, input: &[u8], ctx: &mut Ctx) {
        if self.outbox.lent.is_empty() {
            return;
        }
        if !self.lent_fits(input) {
            self.lose_lent_input();
            return;
        }
        self.outbox.release(input);
        self.after_written(ctx);
    }

    /// The reactor has read what it could this turn: body bytes a sink
    /// collected (an upload's partial batch) go to a worker now rather than
    /// wait for more, so what arrived is on disk even if the client stops
    /// sending here.
    fn end_turn(&mut self, ctx: &mut Ctx) {
        let State::Body { sink, .. } = &self.state else {
            return;
        };
        if sink.has_pending() {
            self.flush_sink(ctx);
        }
    }

    /// Queued bytes (with bodies still lent from `input`) first; once
    /// they are gone, a file being sent, or a command's output being spliced.
    fn poll_transmit<'a>(&'a mut self, input: &'a [u8]) -> Option<Transmit<'a>> {
        if self.is_lending() {
            // `None` means `input` is not what was lent: the reactor must
            // pass that, or release it first.
            return self.outbox.transmit(input).map(Transmit::Bytes);
        }
        if !self.outbox.out.is_empty() {
            return Some(Transmit::Bytes(Parts::one(self.outbox.out.pending())));
        }
        if let State::Sending { send } = &self.state
            && send.zero_copy
        {
            let (offset, len, warmed) = send.file_offer();
            return Some(Transmit::File {
                file: &send.file,
                offset,
                len,
                warmed,
            });
        }
        self.outbox.splice.map(|s| Transmit::Pipe {
            child: s.child,
            fd: s.fd,
            len: s.remaining,
        })
    }

    /// The socket took `n` bytes of what `poll_transmit` offered: queued
    /// (and lent) bytes, else the file, else the spliced pipe, the same
    /// order `poll_transmit` looks in.
    fn handle_written(&mut self, n: usize, ctx: &mut Ctx) {
        if self.is_lending() || !self.outbox.out.is_empty() {
            self.bytes_written(n, ctx);
        } else if matches!(&self.state, State::Sending { send } if send.zero_copy) {
            self.file_sent(n, ctx);
        } else if self.outbox.splice.is_some() {
            self.spliced(n, ctx.now);
        } else {
            // Nothing was offered: nothing to count, but output may move on.
            self.after_written(ctx);
        }
    }

    fn handle_zero_copy_refused(&mut self) {
        self.zero_copy_unavailable();
    }

    /// Part of the file being sent is not in the page cache: a worker
    /// reads it in, and the send waits for that.
    fn handle_file_not_cached(&mut self, offset: u64, len: u64, ctx: &mut Ctx) {
        self.file_not_cached(offset, len, ctx);
    }

    /// The peer shut down its sending side.
    fn handle_eof(&mut self, _ctx: &mut Ctx) {
        self.inbox.eof = true;
        self.settle_eof();
    }

    /// The deadline from [`Conn::deadline`] has passed.
    fn handle_timeout(&mut self, ctx: &mut Ctx) {
        if let Some(since) = self.outbox.over_soft_since
            && ctx.now >= since + ctx.limits.push_soft_time
            && !self.is_closing()
        {
            info!(
                "conn {}: output over the soft limit for {:?}",
                self.session.key, ctx.limits.push_soft_time
            );
            self.drop_output();
            self.close("output over the soft limit too long");
            return;
        }
        if ctx.now < self.idle_deadline(ctx.limits) {
            return;
        }
        if self.job_in_flight() {
            // The client waits for us, not the other way round.
            self.last_active = ctx.now;
            return;
        }
        if !self.session.running.is_empty() && !self.is_closing() {
            // A quiet command is not an idle client: its run time is
            // bounded by --exec-max-time instead.
            self.last_active = ctx.now;
            return;
        }
        match self.state {
            State::Closing(_) => {
                // The peer would not read its last bytes: give up on them.
                debug!(
                    "conn {}: dropping {} unread bytes",
                    self.session.key,
                    self.outbox.out.len()
                );
                self.outbox.out = OutBuf::default();
            }
            _ => {
                // Say why, unless a reply body is half sent: a frame
                // inside it would corrupt the stream, so then just close.
                if self.at_frame_boundary() {
                    let message = format!("idle for {:?}", ctx.limits.idle_timeout);
                    handlers::error(self.outbox.out.writer(), None, Code::Timeout, &message);
                }
                self.close("idle timeout");
            }
        }
    }

    /// The result of the job this connection waits for.
    fn handle_job_done(&mut self, result: Box<dyn Any + Send>, ctx: &mut Ctx) {
        if !self.job_in_flight() {
            return; // not waiting: a stray result, ignored
        }
        let State::Waiting(waiting) = self.set_state(State::Idle) else {
            return;
        };
        let Waiting {
            id,
            job,
            then,
            close_after,
            ..
        } = *waiting;
        debug!("conn {}: job {job} done", self.session.key);
        self.last_active = ctx.now;
        let next = then(
            result,
            id.as_ref(),
            &mut self.session,
            self.outbox.out.writer(),
            ctx,
        );
        self.apply(id, next, 0, ctx);
        if let State::Waiting(w) = &mut self.state {
            // The next step of the same request: a close decided meanwhile
            // waits for that one too.
            if w.close_after.is_none() {
                w.close_after = close_after;
            }
            return;
        }
        if let Some(why) = close_after {
            self.close(why);
            return;
        }
        self.emit_pushed();
        self.consume_buffered(ctx);
        self.settle_eof();
    }

    /// The pool would not take this connection's job (its queue is full):
    /// the request is answered `too_busy` and the next one may run.
    fn handle_job_refused(&mut self, ctx: &mut Ctx) {
        if !self.job_in_flight() {
            return; // not waiting: nothing to refuse
        }
        let State::Waiting(waiting) = self.set_state(State::Idle) else {
            return;
        };
        let Waiting {
            id,
            job,
            close_after,
            ..
        } = *waiting;
        info!(
            "conn {}: job {job} refused: the worker queue is full",
            self.session.key
        );
        handlers::error(
            self.outbox.out.writer(),
            id.as_ref(),
            Code::TooBusy,
            "the server's workers are busy; try again shortly",
        );
        if let Some(why) = close_after {
            self.close(why);
            return;
        }
        self.finish_request(ctx);
    }

    /// The socket failed (the peer reset it): nothing more can be read or
    /// written, so queued output and pipelined requests are dropped. A job
    /// in flight still comes back first.
    fn handle_reset(&mut self) {
        self.drop_output();
        if !self.is_closing() {
            self.close("connection reset");
        }
    }

    /// Asks the connection to finish (server shutdown): the client is
    /// told (`bye`, between frames), no more requests are read, queued
    /// output is still flushed, and running commands (which the reactor
    /// is ending) still get their `exit` frames out before the close.
    fn shut_down(&mut self) {
        if self.is_closing() || self.draining {
            return;
        }
        let mut bye = Vec::with_capacity(64);
        skiff::frame::HeaderWriter::new(&mut bye, "bye")
            .field("reason", "server shutting down")
            .finish();
        self.push_frame(bye);
        self.draining = true;
        self.close_when_drained();
    }

    /// Whether the reactor should read more from the socket.
    fn wants_read(&self, _limits: &Limits) -> bool {
        !self.inbox.paused
            && !self.draining
            && !self.inbox.held
            && !self.inbox.eof
            && self.inbox.input.len() < MAX_HEAD
            && !self.is_closing()
            && !self.job_in_flight()
            && self.inbox.requests_this_turn < MAX_REQUESTS_PER_TURN
    }

    /// Owed a turn without a socket event: it copies a file through its
    /// buffer, or it decoded its share of requests and more are buffered.
    fn wants_turn(&self, _limits: &Limits) -> bool {
        self.has_work()
    }

    /// When [`Conn::handle_timeout`] should next be called.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let mut at = self.idle_deadline(limits);
        if let Some(since) = self.outbox.over_soft_since {
            at = at.min(since + limits.push_soft_time);
        }
        Some(at)
    }

    /// Closed, nothing left to write and no job out: the reactor may drop it.
    fn is_done(&self) -> bool {
        matches!(self.state, State::Closing(_)) && self.outbox.is_empty()
    }

    /// A job of this connection is on a worker: its result must come back
    /// through [`Conn::handle_job_done`] before the connection may go.
    fn job_in_flight(&self) -> bool {
        matches!(self.state, State::Waiting(_))
    }

    /// Memory held by buffers, in bytes (for the server's budget): input,
    /// output, queued pushes, and a chat message being collected. Shared
    /// frames count once for all holders (in `Stats::shared`), so here
    /// only the references to them count.
    fn buffered_bytes(&self) -> usize {
        let sink = match &self.state {
            State::Body { sink, .. } => sink.buffered_bytes(),
            State::Waiting(w) => w.holds,
            State::Sending { send } => send.spare.capacity(),
            _ => 0,
        };
        self.inbox.input.capacity() + self.outbox.buffered_bytes() + sink
    }
}
