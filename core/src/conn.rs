//! One framed connection as a sans-I/O state machine.
//!
//! A [`Conn`] never sees a socket, a disk or a clock. Its contract with
//! the reactor, in the order the reactor calls it within one turn:
//!
//! ```text
//!   start_turn()                      a new turn: MAX_REQUESTS_PER_TURN more requests may be decoded
//!   work() if has_work()              copy a file into the output (no sendfile), or nothing
//!   handle_input(bytes)               bytes read from the socket (only while wants_read())
//!     output_parts(bytes) → handle_written(n) → release_input(bytes)
//!                                     write what is queued, with echo bodies still lent from `bytes`
//!   end_turn()                        the turn's reads are over: an upload's partial batch goes to a worker
//!   output() → handle_written(n)      write what is queued; file_to_send() → handle_file_sent(n)
//!
//!   at any time, between turns:
//!   handle_eof()                      the peer finished sending
//!   handle_timeout()                  deadline() has passed
//!   handle_job_done(result)           a job this connection handed out is back (see below)
//!   handle_job_refused()              the pool's queue was full
//!   handle_reset()                    the socket failed: drop what is queued
//!   shut_down()                       the server is stopping
//!
//!   and it answers: wants_read(), deadline(), has_work(), job_in_flight(), is_done()
//! ```
//!
//! Time comes in as `now` inside [`Ctx`], so tests run on virtual time.
//!
//! **Jobs.** A handler that needs the disk or a slow CPU job returns a
//! [`Job`]; the connection pushes its blocking half onto `Ctx::jobs` for
//! the reactor to give the worker pool, and waits (`Waiting`): it reads
//! nothing and decodes nothing until [`Conn::handle_job_done`] brings the
//! result to the job's `then`. A close decided meanwhile waits for that
//! result too, because it may settle quota or land a file, and the
//! reactor keeps the connection until [`Conn::job_in_flight`] is false.
//!
//! One exception to "the connection owns its bytes": a plain echo body
//! that arrived in the reactor's read buffer is not copied into the
//! output. It stays *lent* ([`Conn::output_parts`]) until the reactor has
//! written what it could and called [`Conn::release_input`], which copies
//! only the unwritten rest. That copy was a third of the CPU of a 16 KiB
//! echo; tokio's echo pays it too (BENCHMARKS.md §8c).
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
//!          └────────────── file sent ◀──────────┘◀──────────────────────┘
//!   any state ── bye, bad frame, peer gone, idle timeout ──▶ Closing ──▶ done
//!                          (output flushed first; after a job in flight, once it is back)
//! ```
//!
//! Orthogonal to the state is backpressure: once queued output passes the
//! high-water mark the connection stops consuming input (and so the
//! reactor stops reading its socket) until the peer has read it down to
//! the low-water mark. Input is therefore bounded by one frame head plus
//! one read, output by the high-water mark plus one body chunk.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use log::{debug, info};
use serde_json::Number;

use skiff::frame::{Decoded, Decoder, Header, MAX_HEAD};
use skiff::proto::Code;

use crate::buffer::{OutBuf, SharedFrame};
use crate::ctx::{Ctx, Submission};
use crate::engine::{Engine, Lent, MAX_LENT, Parts, Transmit};
use crate::handlers::files::{Sending, Step};
use crate::handlers::{self, Job, Next, Session, Sink, Then};
use crate::limits::{Limits, PRESSURE_HIGH};

/// Most requests decoded per connection per turn: a pipeline of cheap
/// requests waits for the next turn like everyone else.
pub const MAX_REQUESTS_PER_TURN: u16 = 32;

/// Echo bodies at least this big are written from the read buffer they
/// arrived in; smaller ones are cheaper to copy than a second iovec.
const LEND_MIN: usize = 1024;

/// Shared frames at least this big are written from the one copy all
/// recipients share; smaller ones are cheaper to copy than to reference
/// (and write with a `write` of their own).
const SHARE_MIN: usize = 1024;

/// Where in the conversation a connection is.
enum State {
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
    Sending {
        /// The file and how much of it is left.
        send: Sending,
    },
    /// Flushing output, then closing; the reason is for the log.
    Closing(&'static str),
}

/// A request whose job is on a worker.
struct Waiting {
    /// The request id.
    id: Option<Number>,
    /// The job's name, for the log.
    job: &'static str,
    /// What to do with its result.
    then: Then,
    /// Client bytes the job carries (see [`Job::holds`]).
    holds: usize,
    /// Closing was decided meanwhile, for this reason: the job's result
    /// must still reach `then` (it may settle quota or land a file), so
    /// the close waits for it.
    close_after: Option<&'static str>,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Body { sink, .. } => sink.name(),
            State::Waiting(w) => w.job,
            State::Sending { .. } => "sending-file",
            State::Closing(_) => "closing",
        }
    }

    /// Output holds whole frames only: an unsolicited frame may go next.
    fn at_frame_boundary(&self) -> bool {
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

/// A whole frame waiting in the push queue for a frame boundary.
#[derive(Debug)]
enum Pushed {
    /// This connection's own copy (command output, small messages).
    Owned(Vec<u8>),
    /// A frame many connections share (a big `msg`).
    Shared(Rc<SharedFrame>),
}

impl Pushed {
    fn len(&self) -> usize {
        match self {
            Pushed::Owned(frame) => frame.len(),
            Pushed::Shared(frame) => frame.len(),
        }
    }
}

/// Unsolicited frames waiting for the output to reach a frame boundary.
/// Boxed in [`Conn`], which has none most of the time.
#[derive(Debug, Default)]
struct PushQueue {
    frames: VecDeque<Pushed>,
    /// Bytes in `frames`, shared frames included (the push limits are
    /// about how far behind this reader is).
    bytes: usize,
    /// Bytes of shared frames in `frames` (the buffer budget counts them
    /// once for all holders, not here).
    shared: usize,
}

/// A command output frame in flight: its header is in the output, its
/// `remaining` body bytes are still in the command's pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Slab key of the command (in the reactor's children).
    pub child: usize,
    /// Which pipe: standard output or error.
    pub fd: crate::command::Fd,
    /// Body bytes still to move.
    pub remaining: usize,
}

/// A framed connection's protocol state.
pub struct Conn {
    /// Slab key of this connection, for the log.
    key: usize,
    /// Splits the input into headers and body pieces.
    decoder: Decoder,
    /// Input not consumed yet: a partial frame head, or everything that
    /// arrived while output was above the high-water mark. Empty (and
    /// unallocated) most of the time.
    input: Vec<u8>,
    /// Output waiting for the socket.
    out: OutBuf,
    /// The current step of the conversation.
    state: State,
    /// Input is held back because output is above the high-water mark.
    paused: bool,
    /// The peer has finished sending.
    eof: bool,
    /// Input is held back because a command's stdin is full.
    held: bool,
    /// Who is logged in on this connection, and where they are.
    session: Session,
    /// Pushed frames waiting for the output to reach a frame boundary.
    pushed: Option<Box<PushQueue>>,
    /// Since when queued output has been over the soft push limit.
    over_soft_since: Option<Instant>,
    /// A command's output frame whose body is still in the command's pipe,
    /// to be moved to the socket by the reactor with `splice`.
    splice: Option<Splice>,
    /// Last time bytes moved in either direction.
    last_active: Instant,
    /// Echo bodies that belong in the output but still sit in the input
    /// the reactor passed to `handle_input`, in output order. Empty (and
    /// unallocated) outside `handle_input` .. `release_input`.
    lent: Vec<Lent>,
    /// Requests decoded since the reactor's last [`Conn::start_turn`].
    requests_this_turn: u16,
    /// A request's header is being handled: a job it asks for is its
    /// first, which the pool may refuse (see [`Submission::must_run`]).
    first_step: bool,
    /// Decoding stopped at [`MAX_REQUESTS_PER_TURN`] with input left: the
    /// reactor owes this connection another turn.
    turn_limited: bool,
    /// The server is shutting down and waits for this connection's
    /// commands: no request is read, and the connection closes once the
    /// last command's `exit` frame is queued.
    draining: bool,
}

/// The high- and low-water marks for output now: the configured ones, or
/// [`PRESSURE_HIGH`] while connections together hold more than half the
/// server's budget (so a swarm of slow readers cannot each fill 256 KiB).
fn water_marks(ctx: &Ctx) -> (usize, usize) {
    let limits = ctx.limits;
    if limits.under_pressure(ctx.stats.buffered_total()) {
        (PRESSURE_HIGH.min(limits.out_high), limits.out_low)
    } else {
        (limits.out_high, limits.out_low)
    }
}

impl Conn {
    /// A fresh connection with slab key `key`.
    pub fn new(key: usize, peer: Option<IpAddr>, now: Instant, limits: &Limits) -> Conn {
        Conn {
            key,
            decoder: Decoder::new(limits.max_body),
            input: Vec::new(),
            out: OutBuf::default(),
            state: State::Idle,
            paused: false,
            eof: false,
            held: false,
            session: Session::new(key, peer),
            pushed: None,
            over_soft_since: None,
            splice: None,
            last_active: now,
            lent: Vec::new(),
            requests_this_turn: 0,
            first_step: false,
            turn_limited: false,
            draining: false,
        }
    }

    /// A new turn of the reactor's loop begins for this connection: it
    /// may decode [`MAX_REQUESTS_PER_TURN`] more requests.
    fn begin_turn(&mut self) {
        self.requests_this_turn = 0;
        self.turn_limited = false;
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.session.user.as_deref()
    }

    /// Queues an unsolicited `msg` frame, shared with the message's other
    /// recipients. It goes out at the next frame boundary. A peer that
    /// lets pushed output pile up past the hard limit is cut off at once;
    /// past the soft limit, after a while. Shared bytes count here in
    /// full: the limits measure how far behind this reader is.
    pub fn push_message(&mut self, frame: &Rc<SharedFrame>, now: Instant, limits: &Limits) {
        if self.is_closing() {
            return;
        }
        let queued = self.out.len() + self.pushed_len() + frame.len();
        if queued > limits.push_hard {
            info!(
                "conn {}: {queued} bytes of output pending: over the hard limit",
                self.key
            );
            self.drop_output();
            self.close("output over the hard limit");
            return;
        }
        if queued > limits.push_soft && self.over_soft_since.is_none() {
            debug!("conn {}: output over the soft limit", self.key);
            self.over_soft_since = Some(now);
        }
        if frame.len() < SHARE_MIN {
            self.queue_push(Pushed::Owned(frame.bytes().to_vec()));
        } else {
            self.queue_push(Pushed::Shared(Rc::clone(frame)));
        }
    }

    /// Queues a whole frame to go out at the next frame boundary.
    fn queue_push(&mut self, frame: Pushed) {
        if self.is_closing() {
            return;
        }
        let queue = self.pushed.get_or_insert_default();
        queue.bytes += frame.len();
        if let Pushed::Shared(shared) = &frame {
            queue.shared += shared.len();
        }
        queue.frames.push_back(frame);
        self.emit_pushed();
    }

    /// Bytes of pushed frames not yet in the output.
    fn pushed_len(&self) -> usize {
        self.pushed.as_ref().map_or(0, |queue| queue.bytes)
    }

    /// Throws away all queued output, before cutting the peer off.
    fn drop_output(&mut self) {
        self.out = OutBuf::default();
        self.pushed = None;
    }

    /// Holds or releases input while a command's stdin buffer is full.
    /// Released input is consumed on the next turn (the reactor reads
    /// again because [`Conn::wants_read`] turns true).
    pub fn hold_input(&mut self, held: bool) {
        if self.held != held {
            debug!(
                "conn {}: input {}",
                self.key,
                if held {
                    "held for a command's stdin"
                } else {
                    "released"
                }
            );
            self.held = held;
        }
    }

    /// Consumes input that waited while it was held back.
    fn resume(&mut self, ctx: &mut Ctx) {
        if !self.held && !self.paused && !self.input.is_empty() && !self.is_closing() {
            self.consume_buffered(ctx);
            self.settle_eof();
        }
    }

    /// Whether a command's output may be read for this connection now:
    /// its output pipes are read only while this is true, so a client
    /// that does not read stalls the command, not the server's memory.
    pub fn has_room(&self, limits: &Limits) -> bool {
        !self.is_closing() && self.out.len() + self.pushed_len() < limits.out_high
    }

    /// A piece of a command's standard output (`out`) or error (`err`).
    /// Written straight into the output when nothing waits ahead of it
    /// (one copy: pipe buffer to output), else queued for the next frame
    /// boundary.
    pub fn exec_output(&mut self, id: &Number, stream: &str, bytes: &[u8]) {
        if self.is_closing() {
            return;
        }
        let direct = self.pushed.is_none() && self.at_frame_boundary();
        let mut queued = Vec::new();
        let out = if direct {
            self.out.writer()
        } else {
            &mut queued
        };
        out.reserve(bytes.len() + 48);
        skiff::frame::HeaderWriter::new(out, stream)
            .field("id", id)
            .field("size", bytes.len())
            .finish();
        out.extend_from_slice(bytes);
        if !direct {
            self.push_frame(queued);
        }
    }

    /// Whether a command's output may be taken for this connection now:
    /// room below the high-water mark, and no spliced frame in flight.
    pub fn ready_for_command_output(&self, limits: &Limits) -> bool {
        self.splice.is_none() && self.has_room(limits)
    }

    /// Whether a command's output may start a spliced frame now: only
    /// between frames, with nothing queued ahead of it, so the body can go
    /// from the pipe to the socket right behind its header.
    pub fn can_splice(&self) -> bool {
        self.splice.is_none()
            && self.out.is_empty()
            && self.pushed.is_none()
            && self.at_frame_boundary()
    }

    /// Starts an `out`/`err` frame of `len` bytes whose body the reactor
    /// moves from command `child`'s pipe `fd` (the bytes are already in
    /// the pipe: the reactor counted them).
    pub fn begin_splice(
        &mut self,
        id: &Number,
        stream: &str,
        len: usize,
        child: usize,
        fd: crate::command::Fd,
    ) {
        skiff::frame::HeaderWriter::new(self.out.writer(), stream)
            .field("id", id)
            .field("size", len)
            .finish();
        self.splice = Some(Splice {
            child,
            fd,
            remaining: len,
        });
    }

    /// Whether a spliced frame from command `child` is in flight: the
    /// command's pipes must stay open until it is done.
    pub fn splicing_from(&self, child: usize) -> bool {
        self.splice.is_some_and(|s| s.child == child)
    }

    /// The socket took `n` bytes of the spliced body; 0 means the pipe
    /// ended before the length its header promised.
    fn spliced(&mut self, n: usize, now: Instant) {
        let Some(s) = &mut self.splice else { return };
        if n == 0 {
            info!("conn {}: a command's output ended mid-frame", self.key);
            self.splice = None;
            self.drop_output();
            self.close("a command's output ended mid-frame");
            return;
        }
        s.remaining -= n.min(s.remaining);
        self.last_active = now;
        if s.remaining == 0 {
            self.splice = None;
            self.emit_pushed();
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

    /// Queues a whole frame to go out at the next frame boundary.
    fn push_frame(&mut self, frame: Vec<u8>) {
        self.queue_push(Pushed::Owned(frame));
    }

    /// Whether the reactor should give this connection another turn even
    /// without a socket event: it copies a file through its buffer
    /// ([`Conn::work`]), or it has decoded its share of requests for this
    /// turn and more are buffered.
    fn has_work(&self, limits: &Limits) -> bool {
        match &self.state {
            State::Sending { send, .. } => !send.zero_copy && self.out.len() <= limits.out_low,
            _ => self.turn_limited,
        }
    }

    /// One bounded step of copying a file into the output; then, if it
    /// finished, the requests that waited behind it.
    fn work(&mut self, ctx: &mut Ctx) {
        let State::Sending { send, .. } = &mut self.state else {
            return;
        };
        match send.step(self.out.writer(), ctx.limits.out_high, self.key) {
            Step::More => {}
            Step::Done => self.finish_request(ctx),
            Step::Close(why) => self.close(why),
        }
    }

    /// The request is done: pushed frames go out, then waiting requests run.
    fn finish_request(&mut self, ctx: &mut Ctx) {
        self.set_state(State::Idle);
        self.emit_pushed();
        self.consume_buffered(ctx);
        self.settle_eof();
    }

    /// The socket took `n` bytes of the file being sent; 0 means the file
    /// ended early (it shrank), which leaves the stream out of sync.
    fn file_sent(&mut self, n: usize, ctx: &mut Ctx) {
        let State::Sending { send, .. } = &mut self.state else {
            return;
        };
        if n == 0 {
            info!("conn {}: file ended early during get", self.key);
            self.close("file changed during get");
            return;
        }
        self.last_active = ctx.now;
        send.remaining = send.remaining.saturating_sub(n as u64);
        if send.remaining == 0 {
            self.finish_request(ctx);
        }
    }

    /// The socket cannot take a file directly: copy through the buffer.
    fn zero_copy_unavailable(&mut self) {
        if let State::Sending { send, .. } = &mut self.state {
            debug!("conn {}: no sendfile here; copying instead", self.key);
            send.zero_copy = false;
        }
    }

    /// The socket took `n` queued bytes, with lent ones among them (more
    /// than are queued counts as all of them).
    fn bytes_written(&mut self, n: usize, ctx: &mut Ctx) {
        self.last_active = ctx.now;
        let mut n = n.min(self.out.len() + self.lent_len());
        if self.lent.is_empty() {
            self.out.consume(n);
            self.after_written(ctx);
            return;
        }
        // Walk the parts: queued bytes up to the first lent body, the
        // body, queued bytes up to the next one, ...
        let mut done = 0;
        while n > 0 {
            let Some(first) = self.lent.get(done) else {
                self.out.consume(n);
                break;
            };
            let queued = (first.at as usize).min(n);
            if queued > 0 {
                self.out.consume(queued);
                for lent in &mut self.lent[done..] {
                    lent.at -= queued as u32;
                }
                n -= queued;
            }
            let lent = &mut self.lent[done];
            let from_body = n.min(lent.range().len());
            lent.range.start += from_body as u32;
            n -= from_body;
            if lent.range.is_empty() {
                done += 1;
            }
        }
        self.lent.drain(..done);
        if self.lent.is_empty() {
            self.lent = Vec::new();
            self.after_written(ctx);
        }
        // Otherwise output appended now could land ahead of lent bytes;
        // `release_input` finishes the job.
    }

    /// Whether `input` can be the input bodies are lent from: it holds
    /// every lent range. (Anything shorter is another buffer, or none.)
    fn lent_fits(&self, input: &[u8]) -> bool {
        self.lent
            .last()
            .is_none_or(|last| last.range.end as usize <= input.len())
    }

    /// Input lent to the output was not handed back (see the contract in
    /// [`crate::engine`]): those bytes are gone, so the stream cannot be
    /// completed. Drop the output and close.
    fn lose_lent_input(&mut self) {
        info!(
            "conn {}: input lent to the output was not released; closing",
            self.key
        );
        self.lent = Vec::new();
        self.drop_output();
        self.close("lent input lost");
    }

    /// What output may do once some of it is gone: lift the soft-limit
    /// clock, place shared frames that waited for lent input, lift
    /// backpressure.
    fn after_written(&mut self, ctx: &mut Ctx) {
        self.emit_pushed();
        if self.over_soft_since.is_some()
            && self.out.len() + self.pushed_len() <= ctx.limits.push_soft
        {
            self.over_soft_since = None;
        }
        let (high, low) = water_marks(ctx);
        if self.paused && self.out.len() <= low.min(high) {
            self.paused = false;
            debug!(
                "conn {}: backpressure off ({} bytes queued)",
                self.key,
                self.out.len()
            );
            self.consume_buffered(ctx);
            self.settle_eof();
        }
    }

    /// Some output is still in the input given to `handle_input`: write
    /// it with [`Conn::output_parts`] before `release_input`.
    fn is_lending(&self) -> bool {
        !self.lent.is_empty()
    }

    /// The first piece of the queued bytes (tests look at it directly).
    #[cfg(test)]
    fn output(&self) -> &[u8] {
        self.out.pending()
    }

    fn idle_deadline(&self, limits: &Limits) -> Instant {
        match self.state {
            State::Closing(_) => self.last_active + limits.close_grace,
            _ => self.last_active + limits.idle_timeout,
        }
    }

    /// Output holds whole frames only, and no spliced body is pending.
    fn at_frame_boundary(&self) -> bool {
        self.splice.is_none() && self.state.at_frame_boundary()
    }

    /// Moves pushed frames to the output if it is between frames: owned
    /// ones by copying, shared ones by reference.
    fn emit_pushed(&mut self) {
        if !self.at_frame_boundary() || self.is_closing() {
            return;
        }
        let lending = self.is_lending();
        let Some(queue) = &mut self.pushed else {
            return;
        };
        while let Some(next) = queue.frames.front() {
            // A shared frame's place is a position in the queued bytes,
            // which copying lent echo bodies into them would move: it
            // waits (with what follows it) until the input is released.
            if matches!(next, Pushed::Shared(_)) && lending {
                return;
            }
            let Some(next) = queue.frames.pop_front() else {
                break;
            };
            queue.bytes -= next.len();
            match next {
                Pushed::Owned(frame) => self.out.writer().extend_from_slice(&frame),
                Pushed::Shared(frame) => {
                    queue.shared -= frame.len();
                    self.out.push_shared(frame);
                }
            }
        }
        self.pushed = None;
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
    fn close_when_drained(&mut self) {
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
            self.key,
            self.session.user.as_deref().unwrap_or("?")
        );
        // Inside a reply body a frame would corrupt the stream: then the
        // close alone has to say it.
        if self.at_frame_boundary() {
            handlers::error(self.out.writer(), None, Code::AuthRequired, why);
        }
        self.close("account deleted or password changed");
    }

    fn consume_buffered(&mut self, ctx: &mut Ctx) {
        // With no bytes left, only a body that has just ended has anything
        // to decode (its end, which the decoder reports on the next call);
        // that happens when a job took the body's last bytes.
        if self.input.is_empty() && !matches!(self.state, State::Body { .. }) {
            return;
        }
        let input = std::mem::take(&mut self.input);
        let used = self.consume(&input, false, ctx);
        if !self.is_closing() && used < input.len() {
            self.input = input;
            self.input.drain(..used);
        }
    }

    /// Decodes and handles as much of `input` as it may; returns how many
    /// bytes it used. With `may_lend`, `input` outlives this call until
    /// `release_input`, so echo bodies may stay in it.
    fn consume(&mut self, input: &[u8], may_lend: bool, ctx: &mut Ctx) -> usize {
        let mut used = 0;
        while !self.is_closing()
            && !self.draining
            && !self.held
            && !matches!(self.state, State::Waiting(_) | State::Sending { .. })
        {
            if self.requests_this_turn >= MAX_REQUESTS_PER_TURN {
                // Fair share: the rest waits for this connection's next
                // turn (`has_work` tells the reactor it is owed one).
                // More may wait in the socket even if this input is used
                // up, and no new edge would announce it: always owe a turn.
                self.turn_limited = true;
                break;
            }
            let queued = self.out.len() + self.lent_len();
            if queued >= water_marks(ctx).0 {
                if !self.paused {
                    self.paused = true;
                    // Lent echo bodies are output too (they wait in the
                    // input buffer instead of being copied), so they count.
                    debug!("conn {}: backpressure on ({queued} bytes queued)", self.key);
                }
                break;
            }
            match self.decoder.decode(&input[used..]) {
                Ok(None) => break,
                Ok(Some((n, decoded))) => {
                    let at = used;
                    used += n;
                    match decoded {
                        Decoded::Header(header) => self.on_header(header, ctx),
                        Decoded::Body(chunk) if may_lend && self.may_lend(chunk.len(), used) => {
                            debug!(
                                "conn {}: echo body of {} bytes goes out from the read buffer",
                                self.key,
                                chunk.len()
                            );
                            self.lent.push(Lent {
                                at: self.out.len() as u32,
                                range: at as u32..used as u32,
                            });
                        }
                        Decoded::Body(chunk) => self.on_body(chunk, ctx),
                        Decoded::End => self.on_end(ctx),
                    }
                }
                Err(e) => {
                    info!("conn {}: bad frame: {e}", self.key);
                    handlers::error(self.out.writer(), None, Code::BadFrame, &e.to_string());
                    self.close("bad frame");
                }
            }
        }
        used
    }

    /// Whether this body chunk can stay in the input instead of being
    /// copied: a plain echo, big enough to be worth it.
    fn may_lend(&self, len: usize, end: usize) -> bool {
        len >= LEND_MIN
            && self.lent.len() < MAX_LENT
            // Lent bodies are placed by offsets into the queued bytes,
            // which a shared frame would split.
            && !self.out.has_shared()
            && end <= u32::MAX as usize
            && self.out.len() <= u32::MAX as usize
            && matches!(
                self.state,
                State::Body {
                    sink: Sink::Echo { upper: false },
                    ..
                }
            )
    }

    fn lent_len(&self) -> usize {
        self.lent.iter().map(|l| l.range().len()).sum()
    }

    /// At end of input with no whole frame left to act on, close.
    fn settle_eof(&mut self) {
        // Requests still waiting behind a job or a turn's limit are
        // answered first.
        if self.eof
            && !self.paused
            && !self.is_closing()
            && !self.job_in_flight()
            && !self.turn_limited
        {
            let why = if self.decoder.at_boundary() && self.input.is_empty() {
                "peer closed"
            } else {
                "peer closed mid-frame"
            };
            self.close(why);
        }
    }

    fn on_header(&mut self, header: Header, ctx: &mut Ctx) {
        debug!(
            "conn {}: frame op={} id={} size={}",
            self.key,
            header.op,
            header
                .id
                .as_ref()
                .map_or("-".to_string(), Number::to_string),
            header.size
        );
        ctx.stats.requests += 1;
        self.requests_this_turn += 1;
        let id = header.id.clone();
        let size = header.size;
        let next = handlers::request(header, &mut self.session, self.out.writer(), ctx);
        self.first_step = true;
        self.apply(id, next, size, ctx);
        self.first_step = false;
    }

    /// Moves to what a handler said comes next for request `id`, whose
    /// body has `size` bytes still to come.
    fn apply(&mut self, id: Option<Number>, next: Next, size: u64, ctx: &mut Ctx) {
        match next {
            Next::Body(sink) => self.set_state(State::Body { id, sink }),
            Next::Job(job) => self.start_job(id, job, ctx),
            Next::Send(send) => self.set_state(State::Sending { send }),
            // A body nobody wants is still read, so framing stays in sync.
            Next::Done if size > 0 => self.set_state(State::Body {
                id,
                sink: Sink::Discard,
            }),
            Next::Done => {}
            Next::Close(why) => {
                // `bye` carries no body worth reading.
                self.close(why);
            }
        }
    }

    /// Hands the job's blocking part to the reactor (for the pool) and
    /// waits for its result.
    fn start_job(&mut self, id: Option<Number>, job: Job, ctx: &mut Ctx) {
        ctx.jobs.push(Submission {
            must_run: !self.first_step,
            conn: self.key,
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

    fn on_body(&mut self, chunk: &[u8], ctx: &mut Ctx) {
        let State::Body { sink, .. } = &mut self.state else {
            return;
        };
        if handlers::body(sink, chunk, &self.session, self.out.writer(), ctx) {
            // An upload's batch is full.
            self.flush_sink(ctx);
        }
    }

    /// Hands what the body's sink collected to a worker: the body waits,
    /// unread, until the job is back and says to go on.
    fn flush_sink(&mut self, ctx: &mut Ctx) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Body { id, sink } = state else {
            self.state = state;
            return;
        };
        let next = handlers::flush(sink);
        self.apply(id, next, 0, ctx);
    }

    fn on_end(&mut self, ctx: &mut Ctx) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Body { id, sink } = state else {
            self.state = state;
            return;
        };
        debug!("conn {}: state {} -> idle", self.key, sink.name());
        let next = handlers::end(sink, id.as_ref(), &mut self.session, self.out.writer(), ctx);
        self.apply(id, next, 0, ctx);
        self.emit_pushed();
    }

    fn close(&mut self, why: &'static str) {
        if let State::Waiting(w) = &mut self.state {
            debug!("conn {}: closing ({why}) once its job is back", self.key);
            w.close_after.get_or_insert(why);
            self.input = Vec::new();
            self.paused = false;
            return;
        }
        self.set_state(State::Closing(why));
        self.input = Vec::new();
        self.paused = false;
    }

    /// The one place the state changes, so the log tells the story.
    fn set_state(&mut self, to: State) {
        match &to {
            State::Closing(why) => debug!(
                "conn {}: state {} -> closing ({why})",
                self.key,
                self.state.name()
            ),
            _ => debug!(
                "conn {}: state {} -> {}",
                self.key,
                self.state.name(),
                to.name()
            ),
        }
        self.state = to;
    }
}

impl Engine for Conn {
    /// A new turn: [`MAX_REQUESTS_PER_TURN`] more requests may be decoded;
    /// one bounded step of copying a file into the output, and the input
    /// that waited while it was held back.
    fn start_turn(&mut self, ctx: &mut Ctx) {
        self.begin_turn();
        if self.has_work(ctx.limits) {
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
        if self.input.is_empty() {
            // The common case: consume straight from the reactor's read
            // buffer and keep only a partial frame head, if any.
            let used = self.consume(bytes, true, ctx);
            if !matches!(self.state, State::Closing(_)) {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            self.input.extend_from_slice(bytes);
            self.consume_buffered(ctx);
        }
        self.settle_eof();
    }

    /// The reactor is done with the input it passed to `handle_input`:
    /// whatever lent part of it was not written yet is copied now.
    fn release_input(&mut self, input: &[u8], ctx: &mut Ctx) {
        if self.lent.is_empty() {
            return;
        }
        if !self.lent_fits(input) {
            self.lose_lent_input();
            return;
        }
        // Shared frames are never placed while input is lent (see
        // `emit_pushed`), so the queued bytes are all in one piece.
        debug_assert!(!self.out.has_shared());
        let mut rebuilt = Vec::with_capacity(self.out.len() + self.lent_len());
        let queued = self.out.pending();
        let mut from = 0;
        for lent in &self.lent {
            rebuilt.extend_from_slice(&queued[from..lent.at as usize]);
            rebuilt.extend_from_slice(&input[lent.range()]);
            from = lent.at as usize;
        }
        rebuilt.extend_from_slice(&queued[from..]);
        self.out = OutBuf::from(rebuilt);
        self.lent = Vec::new();
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
            if !self.lent_fits(input) {
                return None; // the reactor must pass the input it lent us
            }
            return Some(Transmit::Bytes(Parts::lending(
                self.out.pending(),
                &self.lent,
                input,
            )));
        }
        if !self.out.is_empty() {
            return Some(Transmit::Bytes(Parts::single(self.out.pending())));
        }
        if let State::Sending { send } = &self.state
            && send.zero_copy
        {
            return Some(Transmit::File {
                file: &send.file,
                len: send.remaining,
            });
        }
        self.splice.map(|s| Transmit::Pipe {
            child: s.child,
            fd: s.fd,
            len: s.remaining,
        })
    }

    /// The socket took `n` bytes of [`Conn::output`] (or of
    /// [`Conn::output_parts`], in order).
    fn handle_written(&mut self, n: usize, ctx: &mut Ctx) {
        if self.is_lending() || !self.out.is_empty() {
            self.bytes_written(n, ctx);
        } else if matches!(&self.state, State::Sending { send } if send.zero_copy) {
            self.file_sent(n, ctx);
        } else if self.splice.is_some() {
            self.spliced(n, ctx.now);
        } else {
            // Nothing was offered: nothing to count, but output may move on.
            self.after_written(ctx);
        }
    }

    fn handle_zero_copy_refused(&mut self) {
        self.zero_copy_unavailable();
    }

    /// The peer shut down its sending side.
    fn handle_eof(&mut self, _ctx: &mut Ctx) {
        self.eof = true;
        self.settle_eof();
    }

    /// The deadline from [`Conn::deadline`] has passed.
    fn handle_timeout(&mut self, ctx: &mut Ctx) {
        if let Some(since) = self.over_soft_since
            && ctx.now >= since + ctx.limits.push_soft_time
            && !self.is_closing()
        {
            info!(
                "conn {}: output over the soft limit for {:?}",
                self.key, ctx.limits.push_soft_time
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
                    self.key,
                    self.out.len()
                );
                self.out = OutBuf::default();
            }
            _ => {
                // Say why, unless a reply body is half sent: a frame
                // inside it would corrupt the stream, so then just close.
                if self.at_frame_boundary() {
                    let message = format!("idle for {:?}", ctx.limits.idle_timeout);
                    handlers::error(self.out.writer(), None, Code::Timeout, &message);
                }
                self.close("idle timeout");
            }
        }
    }

    /// The result of the job this connection waits for.
    fn handle_job_done(&mut self, result: Box<dyn Any + Send>, ctx: &mut Ctx) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Waiting(waiting) = state else {
            self.state = state; // not waiting: a stray result, ignored
            return;
        };
        let Waiting {
            id,
            job,
            then,
            close_after,
            ..
        } = *waiting;
        debug!("conn {}: job {job} done", self.key);
        self.last_active = ctx.now;
        let next = then(
            result,
            id.as_ref(),
            &mut self.session,
            self.out.writer(),
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
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Waiting(waiting) = state else {
            self.state = state;
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
            self.key
        );
        handlers::error(
            self.out.writer(),
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
        !self.paused
            && !self.draining
            && !self.held
            && !self.eof
            && self.input.len() < MAX_HEAD
            && !self.is_closing()
            && !self.job_in_flight()
            && self.requests_this_turn < MAX_REQUESTS_PER_TURN
    }

    /// Owed a turn without a socket event: it copies a file through its
    /// buffer, or it decoded its share of requests and more are buffered.
    fn wants_turn(&self, limits: &Limits) -> bool {
        self.has_work(limits)
    }

    /// When [`Conn::handle_timeout`] should next be called.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let mut at = self.idle_deadline(limits);
        if let Some(since) = self.over_soft_since {
            at = at.min(since + limits.push_soft_time);
        }
        Some(at)
    }

    /// Closed, nothing left to write and no job out: the reactor may drop it.
    fn is_done(&self) -> bool {
        matches!(self.state, State::Closing(_)) && self.out.is_empty() && self.lent.is_empty()
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
            _ => 0,
        };
        self.input.capacity()
            + self.out.capacity()
            + self.pushed.as_ref().map_or(0, |queue| {
                std::mem::size_of::<PushQueue>()
                    + queue.frames.capacity() * std::mem::size_of::<Pushed>()
                    + (queue.bytes - queue.shared)
            })
            + self.lent.capacity() * std::mem::size_of::<Lent>()
            + sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Action;
    use crate::services::Services;
    use crate::stats::Stats;
    use rand::RngExt;
    use serde_json::{Value, json};
    use skiff::frame::encode_header;
    use std::time::Duration;

    /// The byte slices the connection offers the socket now (with bodies
    /// lent from `input`), as the reactor would write them.
    fn transmitted<'a>(conn: &'a mut Conn, input: &'a [u8]) -> Vec<&'a [u8]> {
        match conn.poll_transmit(input) {
            Some(Transmit::Bytes(parts)) => parts.collect(),
            None => Vec::new(),
            Some(other) => panic!("expected bytes, got {other:?}"),
        }
    }

    fn frame(mut header: Value, body: &[u8]) -> Vec<u8> {
        header["size"] = body.len().into();
        let mut out = Vec::new();
        encode_header(&mut out, &header).unwrap();
        out.extend_from_slice(body);
        out
    }

    /// A connection with virtual time and a peer that reads everything.
    struct Harness {
        conn: Conn,
        limits: Limits,
        stats: Stats,
        services: Services,
        actions: Vec<Action>,
        jobs: Vec<Submission>,
        now: Instant,
        received: Vec<u8>,
    }

    impl Harness {
        fn new(limits: Limits) -> Harness {
            let now = Instant::now();
            let dir = std::env::temp_dir().join(format!("skiff-conn-test-{}", std::process::id()));
            Harness {
                conn: Conn::new(1, None, now, &limits),
                stats: Stats::new(now),
                services: Services::new(dir.clone(), crate::users::UserDb::load(&dir).unwrap()),
                actions: Vec::new(),
                jobs: Vec::new(),
                limits,
                now,
                received: Vec::new(),
            }
        }

        /// What the reactor does between events: runs the jobs the
        /// connection handed out (inline, as a worker would) and gives it
        /// the turns it is owed.
        fn settle(&mut self) {
            for _ in 0..100_000 {
                if let Some(job) = self.jobs.pop() {
                    let result = (job.work)();
                    self.with(|conn, ctx| conn.handle_job_done(result, ctx));
                } else if self.conn.has_work(&self.limits) {
                    self.with(|conn, ctx| conn.start_turn(ctx));
                } else {
                    // The turn ends: a partial batch goes to its worker.
                    self.with(|conn, ctx| conn.end_turn(ctx));
                    if self.jobs.is_empty() {
                        return;
                    }
                }
            }
            panic!("the connection never settled");
        }

        fn with<R>(&mut self, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
            let mut ctx = Ctx {
                now: self.now,
                limits: &self.limits,
                stats: &mut self.stats,
                services: &mut self.services,
                actions: &mut self.actions,
                jobs: &mut self.jobs,
            };
            f(&mut self.conn, &mut ctx)
        }

        fn tick(&mut self) {
            self.with(|conn, ctx| conn.handle_timeout(ctx));
        }

        /// Bytes arrive; the reactor writes nothing before releasing them.
        fn feed(&mut self, bytes: &[u8]) {
            self.feed_and_drain(bytes, 0);
        }

        /// Bytes arrive and the peer reads up to `max` bytes of the answer
        /// before the input is released, as in the reactor's read loop.
        fn feed_and_drain(&mut self, bytes: &[u8], max: usize) -> usize {
            self.with(|conn, ctx| conn.handle_input(bytes, ctx));
            let mut n = 0;
            for part in transmitted(&mut self.conn, bytes) {
                let take = part.len().min(max - n);
                self.received.extend_from_slice(&part[..take]);
                n += take;
            }
            if n > 0 {
                self.with(|conn, ctx| conn.handle_written(n, ctx));
            }
            self.with(|conn, ctx| conn.release_input(bytes, ctx));
            self.settle();
            n
        }

        /// The peer reads up to `max` bytes.
        fn drain(&mut self, max: usize) -> usize {
            // Bytes only: a file or a pipe is the reactor's to move.
            let part = match self.conn.poll_transmit(&[]) {
                Some(Transmit::Bytes(mut parts)) => parts.next().unwrap_or_default(),
                None => &[],
                Some(_) => return 0,
            };
            let n = part.len().min(max);
            self.received.extend_from_slice(&part[..n]);
            self.with(|conn, ctx| conn.handle_written(n, ctx));
            self.settle();
            n
        }

        fn drain_all(&mut self) {
            while self.drain(usize::MAX) > 0 {}
        }

        /// Decodes every whole frame received so far.
        fn frames(&self) -> Vec<(Header, Vec<u8>)> {
            let mut d = Decoder::new(u64::MAX);
            let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
            let mut pos = 0;
            while let Some((n, what)) = d.decode(&self.received[pos..]).unwrap() {
                pos += n;
                match what {
                    Decoded::Header(h) => out.push((h, Vec::new())),
                    Decoded::Body(b) => out.last_mut().unwrap().1.extend_from_slice(b),
                    Decoded::End => {}
                }
            }
            out
        }
    }

    fn script() -> Vec<u8> {
        let mut input = Vec::new();
        input.extend(frame(json!({"op":"hello","id":1}), b""));
        input.extend(frame(json!({"op":"echo","id":2}), b"sticky"));
        input.extend(frame(
            json!({"op":"echo","id":3,"upper":true}),
            b"packets \xff!",
        ));
        input.extend(frame(json!({"op":"nope","id":4}), b"ignored body"));
        input.extend(frame(json!({"op":"echo","id":5}), b""));
        input.extend(frame(json!({"op":"echo","id":6}), &big_body()));
        input.extend(frame(json!({"op":"echo","id":7}), &big_body()[1000..]));
        input.extend(frame(json!({"op":"echo","id":8}), b"after the big ones"));
        input
    }

    /// Big enough to be lent rather than copied when it arrives whole.
    fn big_body() -> Vec<u8> {
        (0..3000u32).map(|i| (i % 251) as u8).collect()
    }

    fn check_script_replies(frames: &[(Header, Vec<u8>)]) {
        let ids: Vec<_> = frames
            .iter()
            .map(|(h, _)| h.id.clone().unwrap().as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(frames[0].0.op, "ok");
        assert_eq!(frames[0].0.u64("proto"), Some(1));
        assert_eq!(frames[1].1, b"sticky");
        assert_eq!(frames[2].1, b"PACKETS \xff!");
        assert_eq!(frames[3].0.str("code"), Some("unknown_op"));
        assert_eq!((frames[4].0.op.as_str(), frames[4].1.len()), ("ok", 0));
        assert_eq!(frames[5].1, big_body());
        assert_eq!(frames[6].1, big_body()[1000..]);
        assert_eq!(frames[7].1, b"after the big ones");
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut h = Harness::new(Limits::default());
        for b in script() {
            h.feed(&[b]);
            h.drain(1);
        }
        h.drain_all();
        check_script_replies(&h.frames());
        assert!(!h.conn.is_closing());
    }

    #[test]
    fn random_splits_and_short_writes() {
        let mut rng = rand::rng();
        let input = script();
        for _ in 0..200 {
            let mut h = Harness::new(Limits::default());
            let mut pos = 0;
            while pos < input.len() {
                let n = rng.random_range(1..=input.len() - pos);
                // Short writes both while a body may be lent and after.
                h.feed_and_drain(&input[pos..pos + n], rng.random_range(0..5000));
                pos += n;
                h.drain(rng.random_range(0..64));
            }
            h.drain_all();
            check_script_replies(&h.frames());
        }
    }

    /// Random echo traffic (plain and upper, 0 B to 40 KB, so some bodies
    /// are lent and some copied), cut at random, with a peer that reads a
    /// random amount while input may be lent and after, and a small
    /// high-water mark so backpressure comes and goes: every reply comes
    /// back whole and in order.
    #[test]
    fn random_echo_traffic_survives_any_cuts_and_reads() {
        let mut rng = rand::rng();
        for _ in 0..25 {
            let limits = Limits {
                out_high: 8 << 10,
                out_low: 2 << 10,
                ..Limits::default()
            };
            let mut h = Harness::new(limits);
            let mut input = Vec::new();
            let mut want = Vec::new();
            for i in 0..40u32 {
                let len = [0, 7, 1023, 1024, 3000, 40_000][rng.random_range(0..6)];
                let body: Vec<u8> = (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect();
                let upper = rng.random_range(0..3) == 0;
                input.extend(frame(json!({"op":"echo","id":i,"upper":upper}), &body));
                want.push(if upper {
                    body.to_ascii_uppercase()
                } else {
                    body
                });
            }
            let mut pos = 0;
            let mut rounds = 0;
            while pos < input.len() || !h.conn.output().is_empty() {
                rounds += 1;
                assert!(rounds < 100_000);
                if h.conn.wants_read(&h.limits) && pos < input.len() {
                    let n = rng.random_range(1..=(input.len() - pos).min(70_000));
                    h.feed_and_drain(&input[pos..pos + n], rng.random_range(0..20_000));
                    pos += n;
                }
                h.drain(rng.random_range(0..20_000));
            }
            let frames = h.frames();
            assert_eq!(frames.len(), want.len());
            for (i, ((hd, body), want)) in frames.iter().zip(&want).enumerate() {
                assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
                assert!(body == want, "reply {i} differs ({} bytes)", want.len());
            }
        }
    }

    #[test]
    fn a_thousand_pipelined_frames_in_one_read() {
        let mut h = Harness::new(Limits::default());
        let mut input = Vec::new();
        for i in 0..1000u32 {
            input.extend(frame(
                json!({"op":"echo","id":i}),
                format!("m{i}").as_bytes(),
            ));
        }
        h.feed(&input);
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.len(), 1000);
        for (i, (hd, body)) in frames.iter().enumerate() {
            assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
            assert_eq!(body, format!("m{i}").as_bytes());
        }
    }

    #[test]
    fn a_big_echo_body_is_written_from_the_input_not_copied() {
        let mut h = Harness::new(Limits::default());
        let input = frame(json!({"op":"echo","id":1}), &[b'z'; 16 << 10]);
        h.with(|conn, ctx| conn.handle_input(&input, ctx));
        assert!(
            h.conn.buffered_bytes() < 1024,
            "{}",
            h.conn.buffered_bytes()
        );
        let parts = transmitted(&mut h.conn, &input);
        let [queued, lent] = parts[..] else {
            panic!("{} parts", parts.len())
        };
        // The reply header is queued; the body is the request's own bytes.
        assert!(queued.len() < 64, "queued {} bytes", queued.len());
        assert_eq!(lent.len(), 16 << 10);
        assert_eq!(lent.as_ptr(), input[input.len() - (16 << 10)..].as_ptr());
        // The socket takes the header and part of the body; the rest is
        // copied when the input is released.
        let n = queued.len() + 1000;
        h.received.extend_from_slice(queued);
        h.received.extend_from_slice(&lent[..1000]);
        h.with(|conn, ctx| conn.handle_written(n, ctx));
        h.with(|conn, ctx| conn.release_input(&input, ctx));
        assert_eq!(h.conn.output().len(), (16 << 10) - 1000);
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1, vec![b'z'; 16 << 10]);
        assert_eq!(h.conn.buffered_bytes(), 0);
    }

    #[test]
    fn pipelined_big_echoes_keep_their_order() {
        let mut h = Harness::new(Limits::default());
        let mut input = Vec::new();
        for i in 0..5u8 {
            input.extend(frame(
                json!({"op":"echo","id":i}),
                &vec![b'a' + i; 2000 + i as usize],
            ));
        }
        h.with(|conn, ctx| conn.handle_input(&input, ctx));
        // Reply header, lent body, five times over: nothing copied.
        let parts = transmitted(&mut h.conn, &input);
        assert_eq!(parts.len(), 10);
        for (i, body) in parts.iter().skip(1).step_by(2).enumerate() {
            let within = body.as_ptr() as usize - input.as_ptr() as usize;
            assert_eq!(&input[within..within + body.len()], *body);
            assert_eq!(body.len(), 2000 + i);
        }
        // The socket takes 3000 bytes (into the second body); the rest is
        // kept in order when the input is released.
        let mut taken = 0;
        for part in &parts {
            let n = part.len().min(3000 - taken);
            h.received.extend_from_slice(&part[..n]);
            taken += n;
        }
        h.with(|conn, ctx| conn.handle_written(3000, ctx));
        h.with(|conn, ctx| conn.release_input(&input, ctx));
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.len(), 5);
        for (i, (hd, body)) in frames.iter().enumerate() {
            assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
            assert_eq!(body, &vec![b'a' + i as u8; 2000 + i]);
        }
    }

    /// Feeds a 1 MiB upper-case echo in 64 KiB reads for as long as the
    /// connection wants input; nobody reads the answer.
    fn fill_until_paused(h: &mut Harness) -> usize {
        let input = frame(
            json!({"op":"echo","id":1,"upper":true}),
            &vec![b'a'; 1 << 20],
        );
        let mut pos = 0;
        while pos < input.len() && h.conn.wants_read(&h.limits) {
            let n = (64 << 10).min(input.len() - pos);
            h.feed(&input[pos..pos + n]);
            pos += n;
        }
        h.conn.output().len()
    }

    #[test]
    fn server_wide_pressure_lowers_the_high_water_mark() {
        let mut calm = Harness::new(Limits::default());
        assert!(fill_until_paused(&mut calm) >= 256 << 10);
        let mut pressed = Harness::new(Limits::default());
        pressed.stats.buffered = Limits::default().out_total / 2 + 1;
        let queued = fill_until_paused(&mut pressed);
        assert!(
            (PRESSURE_HIGH..=(64 << 10) + 64).contains(&queued),
            "{queued} bytes queued under pressure"
        );
        // Once the pressure is gone and the peer reads, it all flows.
        pressed.stats.buffered = 0;
        pressed.drain_all();
        assert!(pressed.conn.wants_read(&pressed.limits));
    }

    #[test]
    fn backpressure_bounds_memory_for_a_peer_that_never_reads() {
        backpressure_bounds_memory(true);
    }

    #[test]
    fn backpressure_bounds_memory_with_lent_echo_bodies() {
        backpressure_bounds_memory(false);
    }

    fn backpressure_bounds_memory(upper: bool) {
        let limits = Limits {
            out_high: 64 << 10,
            out_low: 16 << 10,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        let body = vec![b'a'; 16 << 20];
        let mut input = frame(json!({"op":"echo","id":1,"upper":upper}), &body);
        input.extend(frame(json!({"op":"echo","id":2}), b"after"));
        // The "socket" delivers 64 KiB at a time, but only while the
        // connection asks for more, as the reactor does.
        let mut pos = 0;
        while pos < input.len() && h.conn.wants_read(&h.limits) {
            let n = (64 << 10).min(input.len() - pos);
            h.feed(&input[pos..pos + n]);
            pos += n;
        }
        assert!(
            pos < 1 << 20,
            "read {pos} bytes from a peer that does not read"
        );
        assert!(
            h.conn.buffered_bytes() < 512 << 10,
            "holds {}",
            h.conn.buffered_bytes()
        );
        // Now the peer reads; everything flows and arrives intact.
        let mut rounds = 0;
        while pos < input.len() || !h.conn.output().is_empty() {
            rounds += 1;
            assert!(rounds < 100_000);
            if h.conn.wants_read(&h.limits) && pos < input.len() {
                let n = (64 << 10).min(input.len() - pos);
                h.feed_and_drain(&input[pos..pos + n], 16 << 10);
                pos += n;
            }
            h.drain(32 << 10);
            assert!(h.conn.buffered_bytes() < 512 << 10);
        }
        let frames = h.frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1.len(), 16 << 20);
        let want = if upper { b'A' } else { b'a' };
        assert!(frames[0].1.iter().all(|&b| b == want));
        assert_eq!(frames[1].1, b"after");
    }

    #[test]
    fn bad_frames_get_bad_frame_and_close() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 0],
            vec![0, 1, 0, 1],
            [&[0, 0, 0, 5][..], b"{nope"].concat(),
            [&[0, 0, 0, 2][..], b"[]"].concat(),
            [&[0, 0, 0, 2][..], b"{}"].concat(),
            [&[0, 0, 0, 23][..], br#"{"op":"echo","size":-1}"#].concat(),
            frame(json!({"op":"echo","size":0}), b"")
                .into_iter()
                .chain(frame(json!({"op":"echo"}), &[0; 11]))
                .collect(),
        ];
        for (i, case) in cases.iter().enumerate() {
            let limits = Limits {
                max_body: 10,
                ..Limits::default()
            };
            let mut h = Harness::new(limits);
            h.feed(case);
            h.feed(&frame(json!({"op":"echo","id":9}), b"never"));
            h.drain_all();
            let frames = h.frames();
            let last = frames.last().unwrap();
            assert_eq!(last.0.str("code"), Some("bad_frame"), "case {i}");
            assert!(!last.0.str("message").unwrap().is_empty());
            assert!(h.conn.is_done(), "case {i}");
            assert!(
                frames
                    .iter()
                    .all(|(hd, _)| hd.id.is_none() || hd.op != "ok" || hd.id != Some(9.into()))
            );
        }
    }

    #[test]
    fn unknown_op_and_bad_id_keep_the_connection() {
        let mut h = Harness::new(Limits::default());
        h.feed(&frame(json!({"op":"frobnicate","id":1}), b"xyz"));
        h.feed(&frame(json!({"op":"echo","id":"one"}), b"xyz"));
        h.feed(&frame(json!({"op":"echo","id":3}), b"ok"));
        h.drain_all();
        let f = h.frames();
        assert_eq!(f[0].0.str("code"), Some("unknown_op"));
        assert_eq!(f[1].0.str("code"), Some("bad_request"));
        assert_eq!(f[2].1, b"ok");
        assert!(!h.conn.is_closing());
    }

    #[test]
    fn bye_flushes_then_closes() {
        let mut h = Harness::new(Limits::default());
        let mut input = frame(json!({"op":"echo","id":1}), b"a");
        input.extend(frame(json!({"op":"bye","id":2}), b""));
        input.extend(frame(json!({"op":"echo","id":3}), b"b"));
        h.feed(&input);
        assert!(h.conn.is_closing() && !h.conn.is_done());
        h.drain_all();
        let f = h.frames();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[1].0.op.as_str(), f[1].0.id.clone()),
            ("ok", Some(2.into()))
        );
        assert!(h.conn.is_done());
    }

    #[test]
    fn eof_after_pipelined_requests_answers_them_all() {
        let mut h = Harness::new(Limits::default());
        h.feed(&script());
        h.with(|conn, ctx| conn.handle_eof(ctx));
        assert!(h.conn.is_closing());
        h.drain_all();
        check_script_replies(&h.frames());
        assert!(h.conn.is_done());
    }

    #[test]
    fn idle_timeout_on_virtual_time() {
        let mut h = Harness::new(Limits::default());
        h.feed(&frame(json!({"op":"echo","id":1}), b"x")[..7]);
        let deadline = h.conn.deadline(&h.limits);
        assert_eq!(deadline, Some(h.now + Duration::from_secs(300)));
        h.now += Duration::from_secs(299);
        h.tick();
        assert!(!h.conn.is_closing());
        h.now += Duration::from_secs(2);
        h.tick();
        assert!(h.conn.is_closing());
        h.drain_all();
        assert_eq!(h.frames()[0].0.str("code"), Some("timeout"));
        assert!(h.conn.is_done());
    }

    #[test]
    fn idle_timeout_mid_body_closes_without_a_frame_inside_the_body() {
        let mut h = Harness::new(Limits::default());
        let whole = frame(json!({"op":"echo","id":1}), b"0123456789");
        h.feed(&whole[..whole.len() - 7]); // header and 3 of 10 body bytes
        h.now += Duration::from_secs(301);
        h.tick();
        assert!(h.conn.is_closing());
        h.drain_all();
        // exactly the reply header and the 3 echoed bytes: nothing else
        let mut expect = Vec::new();
        skiff::frame::HeaderWriter::new(&mut expect, "ok")
            .field("id", 1)
            .field("size", 10)
            .finish();
        expect.extend_from_slice(b"012");
        assert_eq!(h.received, expect);
    }

    #[test]
    fn command_output_never_lands_inside_another_reply() {
        let mut h = Harness::new(Limits::default());
        let whole = frame(json!({"op":"echo","id":1}), b"0123456789");
        h.feed(&whole[..whole.len() - 5]); // echo reply is half written
        let id = serde_json::Number::from(7);
        h.conn.exec_output(&id, "out", b"from the command");
        h.conn.exec_exit(&id, Some(0), None);
        h.drain_all();
        h.feed(&whole[whole.len() - 5..]);
        h.conn.exec_output(&id, "err", b"direct"); // at a boundary now
        h.drain_all();
        let frames = h.frames();
        let ops: Vec<_> = frames.iter().map(|(hd, _)| hd.op.as_str()).collect();
        assert_eq!(ops, ["ok", "out", "exit", "err"]);
        assert_eq!(frames[0].1, b"0123456789");
        assert_eq!(frames[1].1, b"from the command");
        assert_eq!(frames[3].1, b"direct");
    }

    #[test]
    fn an_idle_connection_is_small() {
        // The aim is under 1 KiB of server memory per idle client;
        // this is the state machine's share of it (the reactor adds its
        // Client wrapper, the kernel the socket).
        assert!(
            std::mem::size_of::<Conn>() <= 400,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }

    /// A `msg` frame from `demo`, shared through the harness's counter.
    fn shared_msg(h: &Harness, body: &[u8]) -> Rc<SharedFrame> {
        let mut frame = Vec::new();
        skiff::frame::HeaderWriter::new(&mut frame, "msg")
            .field("from", "demo")
            .field("size", body.len())
            .finish();
        frame.extend_from_slice(body);
        SharedFrame::new(frame, &h.stats.shared)
    }

    #[test]
    fn a_message_header_alone_reserves_nothing_and_its_bytes_count() {
        let mut h = Harness::new(Limits::default());
        // Logged in as demo, who is in the user list (a session whose
        // user is not is ended at its next request).
        h.services.users.add("demo", "pw", None, false).unwrap();
        let hash = h.services.users.get("demo").unwrap().hash.clone();
        h.conn.session.user = Some("demo".into());
        h.conn.session.login_hash = Some(hash.into_boxed_str());
        let size = 64 << 10;
        let whole = frame(json!({"op":"say","id":1,"to":"*"}), &vec![b'm'; size]);
        let head = whole.len() - size;
        h.feed(&whole[..head]);
        let State::Body {
            sink: Sink::Message { body, .. },
            ..
        } = &h.conn.state
        else {
            panic!("not collecting a message: {}", h.conn.state.name());
        };
        assert_eq!(body.capacity(), 0, "reserved before any byte arrived");
        // What arrives is held, and counted in the buffer budget.
        h.feed(&whole[head..head + 1000]);
        let held = h.conn.buffered_bytes();
        assert!((1000..4096).contains(&held), "{held} bytes counted");
        h.feed(&whole[head + 1000..]);
        h.drain_all();
        assert_eq!(h.frames()[0].0.op, "ok");
        assert_eq!(h.actions.len(), 1);
        assert_eq!(h.conn.buffered_bytes(), 0);
    }

    #[test]
    fn a_shared_message_waits_for_a_frame_boundary_and_is_counted_once() {
        let mut h = Harness::new(Limits::default());
        let body = vec![b's'; 5000];
        let msg = shared_msg(&h, &body);
        let msg_len = msg.len();
        assert_eq!(h.stats.shared.get(), msg_len);
        // An echo reply is half sent: the message must wait for its end.
        let echo = frame(json!({"op":"echo","id":1,"upper":true}), &[b'e'; 3000]);
        h.feed(&echo[..echo.len() - 1000]);
        h.conn.push_message(&msg, h.now, &Limits::default());
        h.drain(700);
        // A second message arrives between frames; it goes by reference.
        h.feed(&echo[echo.len() - 1000..]);
        h.conn.push_message(&msg, h.now, &Limits::default());
        h.feed(&frame(json!({"op":"echo","id":2}), b"after"));
        // Held twice, by reference: counted once, outside the connection.
        assert!(h.conn.buffered_bytes() < 4096 + 1000);
        assert!(h.conn.output().len() <= msg_len);
        drop(msg);
        assert_eq!(h.stats.shared.get(), msg_len);
        for step in [1, 10, 100, 100_000] {
            h.drain(step);
        }
        h.drain_all();
        let frames = h.frames();
        let ops: Vec<_> = frames.iter().map(|(hd, _)| hd.op.as_str()).collect();
        assert_eq!(ops, ["ok", "msg", "msg", "ok"]);
        assert_eq!(frames[0].1, vec![b'E'; 3000]);
        assert_eq!(frames[1].1, body);
        assert_eq!(frames[2].1, body);
        assert_eq!(frames[3].1, b"after");
        assert_eq!(h.stats.shared.get(), 0, "the last reference is gone");
        assert_eq!(h.conn.buffered_bytes(), 0);
    }

    #[test]
    fn idle_connection_holds_no_buffers() {
        let mut h = Harness::new(Limits::default());
        for i in 0..10 {
            h.feed(&frame(json!({"op":"echo","id":i}), &[b'x'; 4000]));
            h.drain_all();
        }
        assert_eq!(h.conn.buffered_bytes(), 0);
    }

    /// A harness whose data dir has user `alice` (password `pw`, 1 MiB
    /// quota), logged in, with `hello.txt` in her home.
    fn logged_in() -> Harness {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skiff-conn-jobs-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut users = crate::users::UserDb::load(&dir).unwrap();
        users.add("alice", "pw", Some(1 << 20), false).unwrap();
        users.save().unwrap();
        crate::users::create_home(&dir, "alice").unwrap();
        std::fs::write(dir.join("homes/alice/hello.txt"), b"hello").unwrap();
        let mut h = Harness::new(Limits::default());
        h.services = Services::new(dir.clone(), crate::users::UserDb::load(&dir).unwrap());
        h.feed(&frame(
            json!({"op":"login","id":0,"user":"alice","password":"pw"}),
            b"",
        ));
        h.drain_all();
        assert_eq!(h.frames()[0].0.op, "ok", "login");
        h.received.clear();
        h
    }

    /// Feeds bytes without running the jobs they start.
    fn feed_only(h: &mut Harness, bytes: &[u8]) {
        h.with(|conn, ctx| conn.handle_input(bytes, ctx));
        h.with(|conn, ctx| conn.release_input(bytes, ctx));
    }

    #[test]
    fn every_op_that_touches_the_disk_waits_for_a_job() {
        let mut h = logged_in();
        let body = b"uploaded";
        let md5 = crate::services::digests::hex(&<md5::Md5 as md5::Digest>::digest(body).into());
        let requests = [
            json!({"op":"cd","id":1,"path":"/"}),
            json!({"op":"ls","id":2}),
            json!({"op":"mkdir","id":3,"path":"d"}),
            json!({"op":"get","id":4,"path":"hello.txt"}),
            json!({"op":"rm","id":5,"path":"d"}),
            json!({"op":"put","id":6,"path":"up.txt","length":body.len(),"md5":md5}),
        ];
        for (i, request) in requests.iter().enumerate() {
            feed_only(&mut h, &frame(request.clone(), b""));
            // Nothing answered and nothing more read until the job is back.
            assert!(
                h.conn.output().is_empty(),
                "{request}: answered on the loop"
            );
            assert_eq!(h.jobs.len(), 1, "{request}: no job");
            assert!(!h.conn.wants_read(&h.limits), "{request}: still reading");
            h.settle();
            // No sendfile here: the body is copied through the buffer.
            h.conn.handle_zero_copy_refused();
            h.settle();
            h.drain_all();
            let frames = h.frames();
            assert_eq!(frames.len(), i + 1, "{request}");
            assert_eq!(frames[i].0.op, "ok", "{request}: {:?}", frames[i].0);
        }
        // The upload's last step (fsync and rename) is a job as well.
        feed_only(&mut h, &frame(json!({"op":"data","id":6}), body));
        assert!(h.conn.output().is_empty(), "stored on the loop");
        assert_eq!(h.jobs.len(), 1);
        h.settle();
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.last().unwrap().0.str("md5"), Some(md5.as_str()));
        assert_eq!(
            std::fs::read(h.services.data_dir.join("homes/alice/up.txt")).unwrap(),
            body
        );
    }

    #[test]
    fn a_job_in_flight_holds_back_later_requests_and_a_close() {
        let mut h = logged_in();
        let mut bytes = frame(json!({"op":"ls","id":1}), b"");
        bytes.extend(frame(json!({"op":"echo","id":2}), b"after"));
        feed_only(&mut h, &bytes);
        h.with(|conn, ctx| conn.handle_eof(ctx));
        // The peer is gone, but the job's result must still come back.
        assert!(h.conn.job_in_flight());
        assert!(!h.conn.is_done());
        h.settle();
        h.drain_all();
        let frames = h.frames();
        let ids: Vec<_> = frames.iter().map(|(hd, _)| hd.id.clone()).collect();
        assert_eq!(ids, [Some(1.into()), Some(2.into())]);
        assert_eq!(frames[1].1, b"after");
        assert!(h.conn.is_done());
    }

    #[test]
    fn a_pipeline_is_decoded_a_share_per_turn() {
        let mut h = Harness::new(Limits::default());
        let mut bytes = Vec::new();
        for i in 0..100 {
            bytes.extend(frame(json!({"op":"echo","id":i}), b"x"));
        }
        h.with(|conn, ctx| {
            conn.start_turn(ctx);
            conn.handle_input(&bytes, ctx);
            conn.release_input(&bytes, ctx);
        });
        assert_eq!(h.stats.requests, u64::from(MAX_REQUESTS_PER_TURN));
        assert!(h.conn.has_work(&h.limits), "owed another turn");
        assert!(!h.conn.wants_read(&h.limits), "its share is used up");
        h.settle();
        h.drain_all();
        assert_eq!(h.frames().len(), 100);
    }

    /// Random requests, some valid and many not, with hostile numbers and
    /// paths, through a logged-in connection with a real data dir. The
    /// connection must answer each one (by id) and never panic. Set
    /// `SKIFF_SEED` to replay a failure.
    #[test]
    fn random_requests_with_hostile_fields_are_all_answered() {
        use rand::{RngExt, SeedableRng};
        let seed: u64 = std::env::var("SKIFF_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("seed {seed} (SKIFF_SEED={seed} replays it)");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ops = [
            "pwd", "cd", "ls", "mkdir", "rm", "quota", "get", "put", "data", "say", "stats",
            "hello", "echo", "login", "nope",
        ];
        let values = [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1e300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(""),
            json!("."),
            json!(".."),
            json!("/"),
            json!("../../etc/passwd"),
            json!("hello.txt"),
            json!("d/../../x"),
            json!("a\u{0}b"),
            json!("x".repeat(5000)),
            json!(null),
            json!(true),
            json!([1, 2]),
            json!({"k": "v"}),
            json!("0123456789abcdef0123456789abcdef"),
        ];
        let fields = [
            "path", "offset", "length", "md5", "to", "upper", "user", "password", "discard",
        ];
        let mut h = logged_in();
        let mut sent = 0;
        for i in 0..600u64 {
            let op = ops[rng.random_range(0..ops.len())];
            let mut header = json!({"op": op, "id": i});
            for _ in 0..rng.random_range(0..4) {
                let f = fields[rng.random_range(0..fields.len())];
                header[f] = values[rng.random_range(0..values.len())].clone();
            }
            let body: Vec<u8> = if op == "echo" || rng.random_range(0..4) == 0 {
                vec![b'z'; rng.random_range(0..64)]
            } else {
                Vec::new()
            };
            let bytes = frame(header, &body);
            // Arrives in random pieces.
            let mut at = 0;
            while at < bytes.len() {
                let n = rng.random_range(1..=bytes.len() - at);
                h.feed(&bytes[at..at + n]);
                at += n;
            }
            // No sendfile in memory: a `get` body is copied instead.
            h.conn.handle_zero_copy_refused();
            h.settle();
            h.drain_all();
            sent += 1;
            if h.conn.is_closing() {
                break;
            }
        }
        let frames = h.frames();
        let replies = frames.iter().filter(|(hd, _)| hd.id.is_some()).count();
        println!("{sent} requests, {replies} replies");
        if h.conn.is_closing() {
            let last = &frames.last().unwrap().0;
            assert_eq!(last.str("code"), Some("bad_frame"), "seed {seed}");
        } else {
            assert_eq!(replies, sent, "seed {seed}: every request answered");
        }
    }

    #[test]
    fn an_upload_fed_like_the_reactor_reads_lands_whole() {
        // 2 MiB in 64 KiB reads, four a turn: the last batch fills with
        // the body's last byte, so the body's end is decoded only after
        // that batch's job is back.
        let mut h = logged_in();
        let body = vec![1u8; 2 << 20];
        if let Some(account) = &h.conn.session.account {
            account.borrow_mut().quota = None;
        }
        let md5 = crate::services::digests::hex(&<md5::Md5 as md5::Digest>::digest(&body).into());
        h.feed(&frame(
            json!({"op":"put","id":7,"path":"big.bin","length":body.len(),"md5":md5}),
            b"",
        ));
        h.drain_all();
        h.received.clear();
        // The header alone, as a client that writes it first is read.
        let full = frame(json!({"op":"data","id":7}), &body);
        let head = full.len() - body.len();
        feed_only(&mut h, &full[..head]);
        let mut bytes = full[head..].to_vec();
        // Turns of up to four 64 KiB reads, as the reactor does; the
        // socket is read only while the connection wants it.
        for _ in 0..10_000 {
            if bytes.is_empty() && h.jobs.is_empty() {
                break;
            }
            h.with(|conn, ctx| conn.start_turn(ctx));
            for _ in 0..4 {
                if bytes.is_empty() || !h.conn.wants_read(&h.limits) {
                    break;
                }
                let n = bytes.len().min(64 << 10);
                let read: Vec<u8> = bytes.drain(..n).collect();
                feed_only(&mut h, &read);
            }
            h.with(|conn, ctx| conn.end_turn(ctx));
            while let Some(job) = h.jobs.pop() {
                let result = (job.work)();
                h.with(|conn, ctx| conn.handle_job_done(result, ctx));
            }
        }
        h.drain_all();
        let frames = h.frames();
        assert_eq!(
            frames.last().map(|f| f.0.op.clone()),
            Some("ok".into()),
            "{frames:?}"
        );
        assert_eq!(frames.last().unwrap().0.str("md5"), Some(md5.as_str()));
    }

    #[test]
    fn a_share_used_up_exactly_still_owes_a_turn() {
        // The turn's last request ends exactly where the read ended: the
        // socket may hold the rest of the pipeline, and no new edge will
        // say so, so the connection must still ask for another turn.
        let mut h = Harness::new(Limits::default());
        let mut bytes = Vec::new();
        for i in 0..MAX_REQUESTS_PER_TURN {
            bytes.extend(frame(json!({"op":"echo","id":i}), b"x"));
        }
        h.with(|conn, ctx| {
            conn.start_turn(ctx);
            conn.handle_input(&bytes, ctx);
            conn.release_input(&bytes, ctx);
        });
        assert!(!h.conn.wants_read(&h.limits));
        assert!(
            h.conn.has_work(&h.limits),
            "no turn owed: the pipeline would hang"
        );
    }

    #[test]
    fn a_close_decided_during_a_job_survives_the_next_step() {
        // get of an unhashed file: open, then hash. A shutdown during the
        // first job must still close after the second.
        let mut h = logged_in();
        feed_only(
            &mut h,
            &frame(json!({"op":"get","id":1,"path":"hello.txt"}), b""),
        );
        assert_eq!(h.jobs.len(), 1);
        h.conn.shut_down();
        let open = h.jobs.pop().unwrap();
        let result = (open.work)();
        h.with(|conn, ctx| conn.handle_job_done(result, ctx));
        assert!(h.conn.job_in_flight(), "the hash is the next step");
        assert!(h.conn.is_closing());
        h.settle();
        h.conn.handle_zero_copy_refused();
        h.settle();
        h.drain_all();
        assert!(h.conn.is_done(), "the close was lost on the way");
    }

    /// An echo whose 16 KiB body is lent from `input`, after `handle_input`.
    fn lending(h: &mut Harness) -> Vec<u8> {
        let input = frame(json!({"op":"echo","id":1}), &[b'z'; 16 << 10]);
        h.with(|conn, ctx| conn.handle_input(&input, ctx));
        assert_eq!(transmitted(&mut h.conn, &input).len(), 2, "lent");
        input
    }

    #[test]
    fn asking_for_output_without_the_lent_input_gets_nothing_until_released() {
        let mut h = Harness::new(Limits::default());
        let input = lending(&mut h);
        assert!(h.conn.poll_transmit(&[]).is_none());
        assert!(h.conn.poll_transmit(&input[..100]).is_none());
        h.with(|conn, ctx| conn.release_input(&input, ctx));
        h.drain_all();
        assert_eq!(h.frames()[0].1, vec![b'z'; 16 << 10]);
        assert!(!h.conn.is_closing());
    }

    #[test]
    fn input_before_the_lent_input_is_released_closes_without_output() {
        let mut h = Harness::new(Limits::default());
        let input = lending(&mut h);
        let next = frame(json!({"op":"echo","id":2}), b"x");
        h.with(|conn, ctx| conn.handle_input(&next, ctx));
        assert!(h.conn.is_done(), "the stream cannot be completed");
        assert!(h.conn.poll_transmit(&input).is_none());
        // Later calls are ignored.
        h.with(|conn, ctx| conn.release_input(&input, ctx));
        h.with(|conn, ctx| conn.handle_input(&next, ctx));
        assert!(h.conn.is_done() && h.received.is_empty());
    }

    #[test]
    fn releasing_other_bytes_than_the_lent_input_closes_without_output() {
        let mut h = Harness::new(Limits::default());
        lending(&mut h);
        h.with(|conn, ctx| conn.release_input(&[], ctx));
        assert!(h.conn.is_done());
        assert_eq!(h.conn.buffered_bytes(), 0);
    }

    #[test]
    fn more_written_than_offered_counts_as_all_of_it() {
        let mut h = Harness::new(Limits::default());
        let input = lending(&mut h);
        h.with(|conn, ctx| conn.handle_written(usize::MAX, ctx));
        h.with(|conn, ctx| conn.release_input(&input, ctx));
        assert!(h.conn.poll_transmit(&[]).is_none());
        h.feed(&frame(json!({"op":"echo","id":2}), b"ok"));
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.len(), 1, "the first reply counted as sent");
        assert_eq!(frames[0].1, b"ok");
    }

    #[test]
    fn stray_job_results_and_early_timeouts_change_nothing() {
        let mut h = Harness::new(Limits::default());
        h.with(|conn, ctx| conn.handle_job_done(Box::new(7u32), ctx));
        h.with(|conn, ctx| conn.handle_job_refused(ctx));
        h.tick();
        assert!(!h.conn.is_closing() && !h.conn.job_in_flight());
        assert!(
            h.conn.poll_transmit(&[]).is_none(),
            "no reply to a stray result"
        );
        h.feed(&frame(json!({"op":"echo","id":1}), b"still here"));
        h.drain_all();
        assert_eq!(h.frames()[0].1, b"still here");
    }

    #[test]
    fn a_pipe_that_ends_before_its_frame_closes_the_connection() {
        let mut h = Harness::new(Limits::default());
        let id = Number::from(9);
        assert!(h.conn.can_splice());
        h.conn
            .begin_splice(&id, "out", 100, 3, crate::command::Fd::Stdout);
        h.drain_all(); // the frame's header
        match h.conn.poll_transmit(&[]) {
            Some(Transmit::Pipe { child, fd, len }) => {
                assert_eq!((child, fd, len), (3, crate::command::Fd::Stdout, 100));
            }
            other => panic!("expected the pipe, got {other:?}"),
        }
        h.with(|conn, ctx| conn.handle_written(40, ctx));
        assert!(h.conn.splicing_from(3) && !h.conn.is_closing());
        h.with(|conn, ctx| conn.handle_written(0, ctx));
        assert!(
            h.conn.is_done(),
            "60 bytes short: the stream is out of sync"
        );
        assert!(!h.conn.splicing_from(3));
    }
}
