//! The inbox: bytes from the socket become requests. The decoder splits
//! them into headers and body pieces; the conversation
//! ([`super::conversation`]) acts on each. At most
//! [`MAX_REQUESTS_PER_TURN`] requests are decoded per turn, and nothing is
//! decoded while the output is over its high-water mark, while a job or
//! a file is in progress, or while a command's stdin is full: what arrives
//! meanwhile waits here, bounded because the reactor stops reading.
//!
//! Decoding works straight on the reactor's read buffer; only a partial
//! frame head, or input that had to wait, is copied into [`Inbox::input`].
//! A plain echo body may even stay in the read buffer until it is written
//! (it is *lent* to the outbox, see [`crate::engine::Lent`]).

use log::{debug, info};
use skiff::frame::{Decoded, Decoder};
use skiff::proto::Code;

use super::Conn;
use super::conversation::State;
use super::outbox::water_marks;
use crate::ctx::Ctx;
use crate::engine::Engine;
use crate::handlers::{self, Sink};

/// Most requests decoded per connection per turn: a pipeline of cheap
/// requests waits for the next turn like everyone else.
pub const MAX_REQUESTS_PER_TURN: u16 = 32;

/// Echo bodies at least this big are written from the read buffer they
/// arrived in; smaller ones are cheaper to copy than a second iovec.
const LEND_MIN: usize = 1024;

/// What the connection has read and not yet acted on.
pub(super) struct Inbox {
    /// Splits the input into headers and body pieces.
    pub(super) decoder: Decoder,
    /// Input not consumed yet: a partial frame head, or everything that
    /// arrived while decoding had to wait. Empty (and unallocated) most of
    /// the time.
    pub(super) input: Vec<u8>,
    /// Requests decoded since the turn began.
    pub(super) requests_this_turn: u16,
    /// Decoding stopped at [`MAX_REQUESTS_PER_TURN`] with input left: the
    /// reactor owes this connection another turn.
    pub(super) turn_limited: bool,
    /// Output went over the high-water mark: input is not consumed until
    /// the peer has read it down to the low-water mark (backpressure).
    pub(super) paused: bool,
    /// Input is held back because a command's stdin is full.
    pub(super) held: bool,
    /// The peer has finished sending.
    pub(super) eof: bool,
}

impl Inbox {
    /// An empty inbox refusing bodies over `max_body` bytes.
    pub(super) fn new(max_body: u64) -> Inbox {
        Inbox {
            decoder: Decoder::new(max_body),
            input: Vec::new(),
            requests_this_turn: 0,
            turn_limited: false,
            paused: false,
            held: false,
            eof: false,
        }
    }
}

impl Conn {
    /// A new turn of the reactor's loop begins for this connection: it
    /// may decode [`MAX_REQUESTS_PER_TURN`] more requests.
    pub(super) fn begin_turn(&mut self) {
        self.inbox.requests_this_turn = 0;
        self.inbox.turn_limited = false;
    }

    /// Holds or releases input while a command's stdin buffer is full.
    /// Released input is consumed on the next turn (the reactor reads
    /// again because [`Conn::wants_read`] turns true).
    pub fn hold_input(&mut self, held: bool) {
        if self.inbox.held != held {
            debug!(
                "conn {}: input {}",
                self.session.key,
                if held {
                    "held for a command's stdin"
                } else {
                    "released"
                }
            );
            self.inbox.held = held;
        }
    }

    /// Consumes input that waited while it was held back.
    pub(super) fn resume(&mut self, ctx: &mut Ctx) {
        if !self.inbox.held
            && !self.inbox.paused
            && !self.inbox.input.is_empty()
            && !self.is_closing()
        {
            self.consume_buffered(ctx);
            self.settle_eof();
        }
    }

    pub(super) fn consume_buffered(&mut self, ctx: &mut Ctx) {
        // With no bytes left, only a body that has just ended has anything
        // to decode (its end, which the decoder reports on the next call);
        // that happens when a job took the body's last bytes.
        if self.inbox.input.is_empty() && !matches!(self.state, State::Body { .. }) {
            return;
        }
        let input = std::mem::take(&mut self.inbox.input);
        let used = self.consume(&input, false, ctx);
        if !self.is_closing() && used < input.len() {
            self.inbox.input = input;
            self.inbox.input.drain(..used);
        }
    }

    /// Decodes and handles as much of `input` as it may; returns how many
    /// bytes it used. With `may_lend`, `input` outlives this call until
    /// `release_input`, so echo bodies may stay in it.
    pub(super) fn consume(&mut self, input: &[u8], may_lend: bool, ctx: &mut Ctx) -> usize {
        let mut used = 0;
        while !self.is_closing()
            && !self.draining
            && !self.inbox.held
            && !matches!(self.state, State::Waiting(_) | State::Sending { .. })
        {
            if self.inbox.requests_this_turn >= MAX_REQUESTS_PER_TURN {
                // Fair share: the rest waits for this connection's next
                // turn (`wants_turn` tells the reactor it is owed one).
                // More may wait in the socket even if this input is used
                // up, and no new edge would announce it: always owe a turn.
                self.inbox.turn_limited = true;
                break;
            }
            let queued = self.outbox.out.len() + self.outbox.lent_len();
            if queued >= water_marks(ctx).0 {
                if !self.inbox.paused {
                    self.inbox.paused = true;
                    // Lent echo bodies are output too (they wait in the
                    // input buffer instead of being copied), so they count.
                    debug!(
                        "conn {}: backpressure on ({queued} bytes queued)",
                        self.session.key
                    );
                }
                break;
            }
            match self.inbox.decoder.decode(&input[used..]) {
                Ok(None) => break,
                Ok(Some((n, decoded))) => {
                    let at = used;
                    used += n;
                    match decoded {
                        Decoded::Header(header) => self.on_header(header, ctx),
                        Decoded::Body(chunk) if may_lend && self.may_lend(chunk.len(), used) => {
                            debug!(
                                "conn {}: echo body of {} bytes goes out from the read buffer",
                                self.session.key,
                                chunk.len()
                            );
                            self.outbox.lend(at..used);
                        }
                        Decoded::Body(chunk) => self.on_body(chunk, ctx),
                        Decoded::End => self.on_end(ctx),
                    }
                }
                Err(e) => {
                    info!("conn {}: bad frame: {e}", self.session.key);
                    handlers::error(
                        self.outbox.out.writer(),
                        None,
                        Code::BadFrame,
                        &e.to_string(),
                    );
                    self.close("bad frame");
                }
            }
        }
        used
    }

    /// Whether this body chunk can stay in the input instead of being
    /// copied: a plain echo, big enough to be worth it.
    pub(super) fn may_lend(&self, len: usize, end: usize) -> bool {
        len >= LEND_MIN
            && self.outbox.can_lend(end)
            && matches!(
                self.state,
                State::Body {
                    sink: Sink::Echo { upper: false },
                    ..
                }
            )
    }

    /// At end of input with no whole frame left to act on, close.
    pub(super) fn settle_eof(&mut self) {
        // Requests still waiting behind a job or a turn's limit are
        // answered first.
        if self.inbox.eof
            && !self.inbox.paused
            && !self.is_closing()
            && !self.job_in_flight()
            && !self.inbox.turn_limited
        {
            let why = if self.inbox.decoder.at_boundary() && self.inbox.input.is_empty() {
                "peer closed"
            } else {
                "peer closed mid-frame"
            };
            self.close(why);
        }
    }
}
