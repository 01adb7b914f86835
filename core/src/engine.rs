//! The contract between the reactor and any kind of connection.
//!
//! An [`Engine`] is a connection's protocol as a state machine: it never
//! sees a socket, a disk or a clock. The reactor tells it what happened
//! (`handle_*`, with `now` inside [`Ctx`]), then asks what to do
//! ([`Engine::poll_transmit`] and the queries), in the manner of
//! quinn-proto's `Connection`. The framed connection
//! ([`crate::conn::Conn`]) and the raw echo
//! ([`crate::handlers::raw_echo::RawEcho`]) implement it; so does any
//! new kind of connection, and a layer under one (an engine wrapping
//! another) implements it by forwarding.
//!
//! **Call order.** Within one turn of the reactor for one connection:
//!
//! ```text
//!   start_turn(ctx)                       work owed from earlier turns (a file copied through
//!                                         the buffer, requests left over from the last share)
//!   while wants_read() and the socket has bytes:
//!     handle_input(bytes, ctx)            bytes read; the engine may lend parts of `bytes`
//!     poll_transmit(bytes) → write → handle_written(n, ctx)   (repeat while the socket takes it)
//!     release_input(bytes, ctx)           `bytes` is about to be reused: copy what is still lent
//!   end_turn(ctx)                         the turn's reads are over
//!   poll_transmit(&[]) → write → handle_written(n, ctx)       (repeat while the socket takes it)
//!
//!   between turns, whenever it happens:
//!   handle_eof(ctx)                       the peer finished sending
//!   handle_timeout(ctx)                   deadline() has passed
//!   handle_job_done(result, ctx)          a job this engine handed out is back
//!   handle_job_refused(ctx)               the pool's queue was full
//!   handle_file_not_cached(offset, len, ctx)  instead of a sendfile: see "Cold pages"
//!   handle_reset()                        the socket failed: drop what is queued
//!   shut_down()                           the server is stopping: finish politely
//!
//!   queries, at any time: wants_read, wants_turn, deadline, is_done, job_in_flight, buffered_bytes
//! ```
//!
//! **Transmit.** [`Engine::poll_transmit`] says what to send next: bytes
//! (several slices, for one `writev`), a range of a file (`sendfile`) or
//! the contents of a command's pipe (`splice`). The reactor sends what the
//! socket takes, within its budget, and reports it with
//! [`Engine::handle_written`]; `n` always counts bytes of the transmit
//! just polled. Zero for a file or a pipe means that source ended before
//! the promised length. If the kernel cannot `sendfile` to this socket the
//! reactor says so with [`Engine::handle_zero_copy_refused`] and the
//! engine sends the file another way.
//!
//! **Cold pages.** `sendfile` from pages not in the page cache reads the
//! disk, and the loop would wait for it. So before sending a
//! [`Transmit::File`] the reactor asks the kernel (without waiting)
//! whether the range it is about to send, `[offset, offset + n)`, is all
//! cached. If not, it sends nothing and calls
//! [`Engine::handle_file_not_cached`] with that range instead; the engine
//! hands a job to the pool that reads it in ([`crate::warm`]) and offers
//! nothing until the job is back (`job_in_flight`). A range a job just
//! read is offered `warmed`: it is still asked about (its pages may have
//! been evicted since, and are then read in again), but where the kernel
//! cannot tell (no `cachestat`) it is sent, where another range is handed
//! back. A report that does not match the file on offer (another offset,
//! no file) is ignored.
//!
//! **Lending.** Bytes passed to `handle_input` may stay in the reactor's
//! read buffer instead of being copied (a plain echo body): the engine
//! records them as [`Lent`] ranges, `poll_transmit(bytes)` returns them
//! interleaved with its own queued bytes, and `release_input(bytes)` copies
//! only what the socket did not take.
//!
//! **Calls out of order** have defined results, which the tests assert
//! (nothing here is a `debug_assert`):
//! - `poll_transmit` with bytes that cannot be those still lent (too
//!   short to hold the lent ranges; an empty slice is the usual mistake) returns
//!   `None` (the reactor must release the input first);
//! - `handle_input` while bytes are still lent, or `release_input` with bytes
//!   that cannot be them: the lent bytes are lost, so the stream cannot be
//!   completed; the engine drops its output and closes;
//! - `handle_written(n)` with `n` beyond what was offered counts as all of
//!   it;
//! - `handle_job_done` or `handle_job_refused` with no job out, and any
//!   input once `is_done()`, are ignored;
//! - `handle_timeout` before the deadline does nothing.

use std::any::Any;
use std::fs::File;
use std::ops::Range;
use std::time::Instant;

use crate::command::Fd;
use crate::ctx::Ctx;
use crate::limits::Limits;

/// At most this many ranges of one input are lent (each is an iovec);
/// later bodies are copied.
pub const MAX_LENT: usize = 32;

/// Most slices in one [`Transmit::Bytes`]: queued bytes before, between
/// and after [`MAX_LENT`] lent ranges.
pub const MAX_PARTS: usize = 2 * MAX_LENT + 1;

/// What to send to the socket next.
#[derive(Debug)]
pub enum Transmit<'a> {
    /// Bytes, in order, in at most [`MAX_PARTS`] non-empty slices.
    Bytes(Parts<'a>),
    /// `len` bytes of `file` from its current offset, by `sendfile`.
    File {
        /// The open file.
        file: &'a File,
        /// Its current offset, where the bytes come from.
        offset: u64,
        /// Bytes to send (at most what is left of the file's part).
        len: u64,
        /// A job has just read these bytes into the page cache (see "Cold
        /// pages" in the module doc).
        warmed: bool,
    },
    /// `len` bytes waiting in a command's pipe, by `splice`. The reactor
    /// owns the pipe; this names it.
    Pipe {
        /// Slab key of the command (in the reactor's children).
        child: usize,
        /// Which of its pipes.
        fd: Fd,
        /// Bytes still to move.
        len: usize,
    },
}

/// A range of the caller's input that belongs in the output right after
/// the first `at` queued bytes. `u32` keeps the list small: lending stops
/// at 4 GiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lent {
    /// Queued bytes that go out before this range.
    pub at: u32,
    /// Where the range is in the input.
    pub range: Range<u32>,
}

impl Lent {
    /// The range as indices.
    pub fn range(&self) -> Range<usize> {
        self.range.start as usize..self.range.end as usize
    }
}

/// The slices of a [`Transmit::Bytes`]: queued bytes interleaved with
/// ranges lent from the input, empty slices skipped. Out-of-range
/// offsets yield nothing rather than panic.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    /// The engine's queued bytes (the first piece of them).
    queued: &'a [u8],
    /// Lent ranges, in output order.
    lent: &'a [Lent],
    /// The input the ranges point into.
    input: &'a [u8],
    /// Next piece: even `2i` is the queued bytes before `lent[i]` (or
    /// after the last), odd `2i + 1` is `lent[i]` itself.
    next: usize,
}

impl<'a> Parts<'a> {
    /// One slice of queued bytes.
    pub fn one(queued: &'a [u8]) -> Parts<'a> {
        Parts::lending(queued, &[], &[])
    }

    /// Queued bytes with `lent` ranges of `input` placed among them.
    pub fn lending(queued: &'a [u8], lent: &'a [Lent], input: &'a [u8]) -> Parts<'a> {
        Parts {
            queued,
            lent,
            input,
            next: 0,
        }
    }

    /// The one slice, when nothing is lent (the common case, which the
    /// reactor sends with a plain `write`).
    pub fn single(&self) -> Option<&'a [u8]> {
        self.lent.is_empty().then_some(self.queued)
    }

    /// Total bytes in all parts.
    pub fn len(&self) -> usize {
        self.clone().map(<[u8]>::len).sum()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.next <= 2 * self.lent.len() {
            let piece = self.next;
            self.next += 1;
            let i = piece / 2;
            let part = if piece % 2 == 1 {
                self.input.get(self.lent[i].range())
            } else {
                let from = if i == 0 {
                    0
                } else {
                    self.lent[i - 1].at as usize
                };
                let to = self
                    .lent
                    .get(i)
                    .map_or(self.queued.len(), |lent| lent.at as usize);
                self.queued.get(from..to)
            };
            match part {
                Some(part) if !part.is_empty() => return Some(part),
                _ => {}
            }
        }
        None
    }
}

/// One connection's protocol, driven by the reactor (see the module doc
/// for the order of calls and what a call out of order does).
pub trait Engine {
    /// A new turn begins: do a bounded step of work owed from earlier
    /// turns (see [`Engine::wants_turn`]).
    fn start_turn(&mut self, ctx: &mut Ctx);

    /// Bytes read from the socket (only asked while [`Engine::wants_read`]).
    /// Parts may stay lent from `bytes` until [`Engine::release_input`].
    fn handle_input(&mut self, bytes: &[u8], ctx: &mut Ctx);

    /// The reactor is done with the `bytes` it passed to
    /// [`Engine::handle_input`]: copy whatever lent part was not sent.
    fn release_input(&mut self, bytes: &[u8], ctx: &mut Ctx);

    /// The turn's reads are over (bytes collected for a job may go now).
    fn end_turn(&mut self, ctx: &mut Ctx);

    /// What to send next, or `None`. `input` is the input still lent (as
    /// passed to `handle_input`), or empty once released.
    fn poll_transmit<'a>(&'a mut self, input: &'a [u8]) -> Option<Transmit<'a>>;

    /// The socket took `n` bytes of the transmit just polled (for a file
    /// or a pipe, 0 means the source ended early).
    fn handle_written(&mut self, n: usize, ctx: &mut Ctx);

    /// The kernel cannot `sendfile` to this socket: send files another way.
    fn handle_zero_copy_refused(&mut self);

    /// The `len` bytes at `offset` of the file on offer are not all in the
    /// page cache (or the kernel cannot say): bring them in on a worker
    /// before offering them again.
    fn handle_file_not_cached(&mut self, offset: u64, len: u64, ctx: &mut Ctx);

    /// The peer finished sending.
    fn handle_eof(&mut self, ctx: &mut Ctx);

    /// [`Engine::deadline`] has passed (or may have: a call before it is
    /// harmless).
    fn handle_timeout(&mut self, ctx: &mut Ctx);

    /// The result of the job this engine handed out through `ctx.jobs`.
    fn handle_job_done(&mut self, result: Box<dyn Any + Send>, ctx: &mut Ctx);

    /// The pool would not take the job this engine handed out.
    fn handle_job_refused(&mut self, ctx: &mut Ctx);

    /// The socket failed: nothing more can be read or written.
    fn handle_reset(&mut self);

    /// The server is stopping: finish (flush, say goodbye) and close.
    fn shut_down(&mut self);

    /// Whether the reactor should read from the socket now. False is
    /// backpressure: the engine holds enough.
    fn wants_read(&self, limits: &Limits) -> bool;

    /// Whether the engine is owed a turn even without a socket event.
    fn wants_turn(&self, limits: &Limits) -> bool;

    /// When [`Engine::handle_timeout`] should next be called.
    fn deadline(&self, limits: &Limits) -> Option<Instant>;

    /// Closed, nothing left to send and no job out: the reactor may drop it.
    fn is_done(&self) -> bool;

    /// A job of this engine is on a worker: it must come back (through
    /// `handle_job_done`) before the connection may go, even if closed.
    fn job_in_flight(&self) -> bool;

    /// Memory its buffers hold, in bytes, for the server's budget.
    fn buffered_bytes(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(parts: Parts) -> Vec<u8> {
        parts.flatten().copied().collect()
    }

    #[test]
    fn parts_interleave_queued_bytes_and_lent_ranges() {
        let queued = b"HEAD1HEAD2tail";
        let input = b"xxBODY1yyBODY2";
        let lent = [
            Lent { at: 5, range: 2..7 },
            Lent {
                at: 10,
                range: 9..14,
            },
        ];
        let parts = Parts::lending(queued, &lent, input);
        assert_eq!(parts.len(), 24);
        assert_eq!(parts.clone().count(), 5);
        assert_eq!(collect(parts), b"HEAD1BODY1HEAD2BODY2tail");
    }

    #[test]
    fn parts_skip_empty_pieces_and_never_panic_on_bad_offsets() {
        let lent = [Lent { at: 0, range: 0..3 }];
        let parts = Parts::lending(b"", &lent, b"abc");
        assert_eq!(parts.clone().count(), 1);
        assert_eq!(collect(parts), b"abc");
        // Ranges past the input (the wrong input was passed): nothing.
        let bad = [Lent {
            at: 99,
            range: 5..50,
        }];
        assert_eq!(collect(Parts::lending(b"q", &bad, b"abc")), b"");
        assert!(Parts::one(b"").is_empty());
        assert_eq!(collect(Parts::one(b"xyz")), b"xyz");
    }
}
