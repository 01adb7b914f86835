//! The outbox: everything on its way to the socket, in order.
//!
//! ```text
//!   queued bytes (OutBuf: owned bytes, and shared frames by reference)
//!     with echo bodies lent from the read buffer placed among them (Lent)
//!   then, once they are written:
//!     a file by sendfile (the conversation's Sending state), or
//!     a command's output by splice (Splice: its header is queued, its body in the pipe)
//!   push queue: whole unsolicited frames (chat, command output, bye) that
//!     wait for a frame boundary, so they never land inside another reply
//! ```
//!
//! The reactor sees it through [`crate::engine::Engine::poll_transmit`].
//! Its limits: above the high-water mark the inbox stops decoding
//! (backpressure, `paused`) until the peer has read it down to the
//! low-water mark; pushed output, which cannot be paused at its source,
//! closes the connection past a hard limit at once and past a soft limit
//! after a while.

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use log::{debug, info};
use serde_json::Number;

use super::Conn;
use super::conversation::State;
use crate::buffer::{OutBuf, SharedFrame};
use crate::ctx::Ctx;
use crate::engine::{Lent, MAX_LENT, Parts};
use crate::limits::{Limits, PRESSURE_HIGH};

/// Shared frames at least this big are written from the one copy all
/// recipients share; smaller ones are cheaper to copy than to reference
/// (and write with a `write` of their own).
const SHARE_MIN: usize = 1024;

/// A whole frame waiting in the push queue for a frame boundary.
#[derive(Debug)]
pub(super) enum Pushed {
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
pub(super) struct PushQueue {
    pub(super) frames: VecDeque<Pushed>,
    /// Bytes in `frames`, shared frames included (the push limits are
    /// about how far behind this reader is).
    pub(super) bytes: usize,
    /// Bytes of shared frames in `frames` (the buffer budget counts them
    /// once for all holders, not here).
    pub(super) shared: usize,
}

/// A command output frame in flight: its header is in the output, its
/// `remaining` body bytes are still in the command's pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Splice {
    /// Slab key of the command (in the reactor's children).
    pub child: usize,
    /// Which pipe: standard output or error.
    pub fd: crate::command::Fd,
    /// Body bytes still to move.
    pub remaining: usize,
}

/// A framed connection's output lanes.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Output waiting for the socket.
    pub(super) out: OutBuf,
    /// Echo bodies that belong in the output but still sit in the input
    /// the reactor passed to `handle_input`, in output order. Empty (and
    /// unallocated) outside `handle_input` .. `release_input`.
    pub(super) lent: Vec<Lent>,
    /// Pushed frames waiting for the output to reach a frame boundary.
    pub(super) pushed: Option<Box<PushQueue>>,
    /// Since when queued output has been over the soft push limit.
    pub(super) over_soft_since: Option<Instant>,
    /// A command's output frame whose body is still in the command's pipe,
    /// to be moved to the socket by the reactor with `splice`.
    pub(super) splice: Option<Splice>,
}

impl Outbox {
    /// The input is released: lent bodies not written yet are copied into
    /// the queued bytes, in their places (`input` holds them all).
    pub(super) fn release(&mut self, input: &[u8]) {
        // Shared frames are never placed while input is lent (see
        // `Conn::emit_pushed`), so the queued bytes are all in one piece.
        debug_assert!(!self.out.has_shared());
        let mut rebuilt = Vec::with_capacity(self.pending_len());
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
    }

    /// Bytes queued or lent: what the water marks measure.
    pub(super) fn pending_len(&self) -> usize {
        self.out.len() + self.lent_len()
    }

    /// Bytes still lent from the input.
    pub(super) fn lent_len(&self) -> usize {
        self.lent.iter().map(|l| l.range().len()).sum()
    }

    /// Nothing queued and nothing lent.
    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty() && self.lent.is_empty()
    }

    /// Whether one more body ending at `end` in the input can be lent:
    /// lent bodies are iovecs, so few per read, and they are placed by
    /// `u32` offsets into the queued bytes, which a shared frame would
    /// split.
    pub(super) fn can_lend(&self, end: usize) -> bool {
        self.lent.len() < MAX_LENT
            && !self.out.has_shared()
            && end <= u32::MAX as usize
            && self.out.len() <= u32::MAX as usize
    }

    /// Places `range` of the current input in the output, after what is
    /// queued now (the caller checked [`Conn::may_lend`]).
    pub(super) fn lend(&mut self, range: Range<usize>) {
        self.lent.push(Lent {
            at: self.out.len() as u32,
            range: range.start as u32..range.end as u32,
        });
    }

    /// The bytes to write now: the queued ones with the lent ones among
    /// them; `None` if there are none, or if `input` cannot be the input
    /// they are lent from.
    pub(super) fn transmit<'a>(&'a self, input: &'a [u8]) -> Option<Parts<'a>> {
        if !self.lent.is_empty() {
            let fits = self
                .lent
                .last()
                .is_none_or(|last| last.range.end as usize <= input.len());
            return fits.then(|| Parts::lending(self.out.pending(), &self.lent, input));
        }
        (!self.out.is_empty()).then(|| Parts::one(self.out.pending()))
    }

    /// Memory held, for the server's budget. Shared frames count once for
    /// all holders (in `Stats::shared`), so here only the references.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.out.capacity()
            + self.pushed.as_ref().map_or(0, |queue| {
                std::mem::size_of::<PushQueue>()
                    + queue.frames.capacity() * std::mem::size_of::<Pushed>()
                    + (queue.bytes - queue.shared)
            })
            + self.lent.capacity() * std::mem::size_of::<Lent>()
    }
}

/// The high- and low-water marks for output now: the configured ones, or
/// [`PRESSURE_HIGH`] while connections together hold more than half the
/// server's budget (so a swarm of slow readers cannot each fill 256 KiB).
pub(super) fn water_marks(ctx: &Ctx) -> (usize, usize) {
    let limits = ctx.limits;
    if limits.under_pressure(ctx.stats.buffered_total()) {
        (PRESSURE_HIGH.min(limits.out_high), limits.out_low)
    } else {
        (limits.out_high, limits.out_low)
    }
}

impl Conn {
    /// Queues an unsolicited `msg` frame, shared with the message's other
    /// recipients. It goes out at the next frame boundary. A peer that
    /// lets pushed output pile up past the hard limit is cut off at once;
    /// past the soft limit, after a while. Shared bytes count here in
    /// full: the limits measure how far behind this reader is.
    pub fn push_message(&mut self, frame: &Rc<SharedFrame>, now: Instant, limits: &Limits) {
        if self.is_closing() {
            return;
        }
        let queued = self.outbox.out.len() + self.pushed_len() + frame.len();
        if queued > limits.push_hard {
            info!(
                "conn {}: {queued} bytes of output pending: over the hard limit",
                self.session.key
            );
            self.drop_output();
            self.close("output over the hard limit");
            return;
        }
        if queued > limits.push_soft && self.outbox.over_soft_since.is_none() {
            debug!("conn {}: output over the soft limit", self.session.key);
            self.outbox.over_soft_since = Some(now);
        }
        if frame.len() < SHARE_MIN {
            self.queue_push(Pushed::Owned(frame.bytes().to_vec()));
        } else {
            self.queue_push(Pushed::Shared(Rc::clone(frame)));
        }
    }

    /// Queues a whole frame to go out at the next frame boundary.
    pub(super) fn queue_push(&mut self, frame: Pushed) {
        if self.is_closing() {
            return;
        }
        let queue = self.outbox.pushed.get_or_insert_default();
        queue.bytes += frame.len();
        if let Pushed::Shared(shared) = &frame {
            queue.shared += shared.len();
        }
        queue.frames.push_back(frame);
        self.emit_pushed();
    }

    /// Queues a whole frame to go out at the next frame boundary.
    pub(super) fn push_frame(&mut self, frame: Vec<u8>) {
        self.queue_push(Pushed::Owned(frame));
    }

    /// Bytes of pushed frames not yet in the output.
    pub(super) fn pushed_len(&self) -> usize {
        self.outbox.pushed.as_ref().map_or(0, |queue| queue.bytes)
    }

    /// Throws away all queued output, before cutting the peer off.
    pub(super) fn drop_output(&mut self) {
        self.outbox.out = OutBuf::default();
        self.outbox.pushed = None;
    }

    /// Whether a command's output may be read for this connection now:
    /// its output pipes are read only while this is true, so a client
    /// that does not read stalls the command, not the server's memory.
    pub fn has_room(&self, limits: &Limits) -> bool {
        !self.is_closing() && self.outbox.out.len() + self.pushed_len() < limits.out_high
    }

    /// A piece of a command's standard output (`out`) or error (`err`).
    /// Written straight into the output when nothing waits ahead of it
    /// (one copy: pipe buffer to output), else queued for the next frame
    /// boundary.
    pub fn exec_output(&mut self, id: &Number, stream: &str, bytes: &[u8]) {
        if self.is_closing() {
            return;
        }
        let direct = self.outbox.pushed.is_none() && self.at_frame_boundary();
        let mut queued = Vec::new();
        let out = if direct {
            self.outbox.out.writer()
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
        self.outbox.splice.is_none() && self.has_room(limits)
    }

    /// Whether a command's output may start a spliced frame now: only
    /// between frames, with nothing queued ahead of it, so the body can go
    /// from the pipe to the socket right behind its header.
    pub fn can_splice(&self) -> bool {
        self.outbox.splice.is_none()
            && self.outbox.out.is_empty()
            && self.outbox.pushed.is_none()
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
        skiff::frame::HeaderWriter::new(self.outbox.out.writer(), stream)
            .field("id", id)
            .field("size", len)
            .finish();
        self.outbox.splice = Some(Splice {
            child,
            fd,
            remaining: len,
        });
    }

    /// Whether a spliced frame from command `child` is in flight: the
    /// command's pipes must stay open until it is done.
    pub fn splicing_from(&self, child: usize) -> bool {
        self.outbox.splice.is_some_and(|s| s.child == child)
    }

    /// The socket took `n` bytes of the spliced body; 0 means the pipe
    /// ended before the length its header promised.
    pub(super) fn spliced(&mut self, n: usize, now: Instant) {
        let Some(s) = &mut self.outbox.splice else {
            return;
        };
        if n == 0 {
            info!(
                "conn {}: a command's output ended mid-frame",
                self.session.key
            );
            self.outbox.splice = None;
            self.drop_output();
            self.close("a command's output ended mid-frame");
            return;
        }
        s.remaining -= n.min(s.remaining);
        self.last_active = now;
        if s.remaining == 0 {
            self.outbox.splice = None;
            self.emit_pushed();
        }
    }

    /// The socket took `n` queued bytes, with lent ones among them (more
    /// than are queued counts as all of them).
    pub(super) fn bytes_written(&mut self, n: usize, ctx: &mut Ctx) {
        self.last_active = ctx.now;
        let mut n = n.min(self.outbox.out.len() + self.outbox.lent_len());
        if self.outbox.lent.is_empty() {
            match &mut self.state {
                State::Sending { send } if !send.zero_copy => {
                    if let Some(spare) = self.outbox.out.consume_and_reclaim(n) {
                        send.spare = spare;
                    }
                }
                _ => self.outbox.out.consume(n),
            }
            self.after_written(ctx);
            return;
        }
        // Walk the parts: queued bytes up to the first lent body, the
        // body, queued bytes up to the next one, ...
        let mut done = 0;
        while n > 0 {
            let Some(first) = self.outbox.lent.get(done) else {
                self.outbox.out.consume(n);
                break;
            };
            let queued = (first.at as usize).min(n);
            if queued > 0 {
                self.outbox.out.consume(queued);
                for lent in &mut self.outbox.lent[done..] {
                    lent.at -= queued as u32;
                }
                n -= queued;
            }
            let lent = &mut self.outbox.lent[done];
            let from_body = n.min(lent.range().len());
            lent.range.start += from_body as u32;
            n -= from_body;
            if lent.range.is_empty() {
                done += 1;
            }
        }
        self.outbox.lent.drain(..done);
        if self.outbox.lent.is_empty() {
            self.outbox.lent = Vec::new();
            self.after_written(ctx);
        }
        // Otherwise output appended now could land ahead of lent bytes;
        // `release_input` finishes the job.
    }

    /// Whether `input` can be the input bodies are lent from: it holds
    /// every lent range. (Anything shorter is another buffer, or none.)
    pub(super) fn lent_fits(&self, input: &[u8]) -> bool {
        self.outbox
            .lent
            .last()
            .is_none_or(|last| last.range.end as usize <= input.len())
    }

    /// Input lent to the output was not handed back (see the contract in
    /// [`crate::engine`]): those bytes are gone, so the stream cannot be
    /// completed. Drop the output and close.
    pub(super) fn lose_lent_input(&mut self) {
        info!(
            "conn {}: input lent to the output was not released; closing",
            self.session.key
        );
        self.outbox.lent = Vec::new();
        self.drop_output();
        self.close("lent input lost");
    }

    /// What output may do once some of it is gone: lift the soft-limit
    /// clock, place shared frames that waited for lent input, lift
    /// backpressure.
    pub(super) fn after_written(&mut self, ctx: &mut Ctx) {
        self.emit_pushed();
        if self.outbox.over_soft_since.is_some()
            && self.outbox.out.len() + self.pushed_len() <= ctx.limits.push_soft
        {
            self.outbox.over_soft_since = None;
        }
        let (high, low) = water_marks(ctx);
        if self.inbox.paused && self.outbox.out.len() <= low.min(high) {
            self.inbox.paused = false;
            debug!(
                "conn {}: backpressure off ({} bytes queued)",
                self.session.key,
                self.outbox.out.len()
            );
            self.consume_buffered(ctx);
            self.settle_eof();
        }
    }

    /// Some output is still in the input given to `handle_input`, until
    /// `release_input`.
    pub(super) fn is_lending(&self) -> bool {
        !self.outbox.lent.is_empty()
    }

    /// Output holds whole frames only, and no spliced body is pending:
    /// an unsolicited frame may go next.
    pub(super) fn at_frame_boundary(&self) -> bool {
        self.outbox.splice.is_none() && self.state.at_frame_boundary()
    }

    /// Moves pushed frames to the output if it is between frames: owned
    /// ones by copying, shared ones by reference.
    pub(super) fn emit_pushed(&mut self) {
        if !self.at_frame_boundary() || self.is_closing() {
            return;
        }
        let lending = self.is_lending();
        let Some(queue) = &mut self.outbox.pushed else {
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
                Pushed::Owned(frame) => self.outbox.out.writer().extend_from_slice(&frame),
                Pushed::Shared(frame) => {
                    queue.shared -= frame.len();
                    self.outbox.out.push_shared(frame);
                }
            }
        }
        self.outbox.pushed = None;
    }

    /// The first piece of the queued bytes (tests look at it directly).
    #[cfg(test)]
    pub(super) fn output(&self) -> &[u8] {
        self.outbox.out.pending()
    }
}
