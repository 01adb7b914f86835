//! The tutorials' very first program: a raw TCP upper-casing echo. No
//! frames, just bytes in, upper-cased bytes out, so `nc` can talk to it.
//! The smallest [`Engine`]: most of the contract is a no-op here.

use std::any::Any;
use std::time::Instant;

use log::debug;

use crate::buffer::OutBuf;
use crate::ctx::Ctx;
use crate::engine::{Engine, Parts, Transmit};
use crate::limits::Limits;

/// One raw echo connection: no state beyond its output.
#[derive(Debug)]
pub struct RawEcho {
    /// Upper-cased bytes waiting for the socket.
    out: OutBuf,
    /// The peer has finished sending (or the connection was given up):
    /// nothing more is read, and it is done once `out` is flushed.
    eof: bool,
    /// Last time bytes moved.
    last_active: Instant,
}

impl RawEcho {
    /// A fresh connection.
    pub fn new(now: Instant) -> RawEcho {
        RawEcho {
            out: OutBuf::default(),
            eof: false,
            last_active: now,
        }
    }

    /// Ends the connection without flushing.
    fn give_up(&mut self, why: &str) {
        debug!("raw echo: {why}: dropping {} bytes", self.out.len());
        self.out = OutBuf::default();
        self.eof = true;
    }
}

impl Engine for RawEcho {
    fn start_turn(&mut self, _ctx: &mut Ctx) {}

    /// Upper-cases the bytes into the output (they are copied: nothing is
    /// lent).
    fn handle_input(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        if self.eof {
            return;
        }
        self.last_active = ctx.now;
        let w = self.out.writer();
        let start = w.len();
        w.extend_from_slice(bytes);
        w[start..].make_ascii_uppercase();
    }

    fn release_input(&mut self, _bytes: &[u8], _ctx: &mut Ctx) {}

    fn end_turn(&mut self, _ctx: &mut Ctx) {}

    fn poll_transmit<'a>(&'a mut self, _input: &'a [u8]) -> Option<Transmit<'a>> {
        let out = self.out.pending();
        (!out.is_empty()).then(|| Transmit::Bytes(Parts::one(out)))
    }

    fn handle_written(&mut self, n: usize, ctx: &mut Ctx) {
        self.out.consume(n.min(self.out.len()));
        self.last_active = ctx.now;
    }

    /// Never happens: it sends no files.
    fn handle_zero_copy_refused(&mut self) {}

    /// Never offers a file.
    fn handle_file_not_cached(&mut self, _offset: u64, _len: u64, _ctx: &mut Ctx) {}

    /// The peer finished sending: flush, then close.
    fn handle_eof(&mut self, _ctx: &mut Ctx) {
        self.eof = true;
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx) {
        if ctx.now >= self.last_active + ctx.limits.idle_timeout {
            self.give_up("idle timeout");
        }
    }

    /// Never happens: it hands out no jobs.
    fn handle_job_done(&mut self, _result: Box<dyn Any + Send>, _ctx: &mut Ctx) {}

    /// Never happens: it hands out no jobs.
    fn handle_job_refused(&mut self, _ctx: &mut Ctx) {}

    fn handle_reset(&mut self) {
        self.give_up("connection reset");
    }

    /// The server is stopping: flush the echo, then close.
    fn shut_down(&mut self) {
        self.eof = true;
    }

    /// Read only while the peer keeps up with its echo.
    fn wants_read(&self, limits: &Limits) -> bool {
        !self.eof && self.out.len() < limits.out_high
    }

    fn wants_turn(&self, _limits: &Limits) -> bool {
        false
    }

    /// When to close it for idleness.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        Some(self.last_active + limits.idle_timeout)
    }

    /// Done once the peer is gone and its echo flushed.
    fn is_done(&self) -> bool {
        self.eof && self.out.is_empty()
    }

    fn job_in_flight(&self) -> bool {
        false
    }

    /// Memory held by its buffer, in bytes (for the server's budget).
    fn buffered_bytes(&self) -> usize {
        self.out.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{Action, Submission};
    use crate::services::Services;
    use crate::stats::Stats;

    /// Runs `f` with a context at time `now` (the raw echo reads only
    /// the time and the limits).
    fn with_ctx<R>(now: Instant, f: impl FnOnce(&mut Ctx) -> R) -> R {
        let limits = Limits::default();
        let mut stats = Stats::new(now);
        let dir = std::env::temp_dir().join("skiff-raw-echo-test-nonexistent");
        let mut services = Services::new(
            dir.clone(),
            crate::users::UserDb::load(&dir).expect("no users file is an empty list"),
        );
        let (mut actions, mut jobs): (Vec<Action>, Vec<Submission>) = (Vec::new(), Vec::new());
        f(&mut Ctx {
            now,
            limits: &limits,
            stats: &mut stats,
            services: &mut services,
            actions: &mut actions,
            jobs: &mut jobs,
        })
    }

    fn pending(e: &mut RawEcho) -> Vec<u8> {
        match e.poll_transmit(&[]) {
            Some(Transmit::Bytes(parts)) => parts.flatten().copied().collect(),
            Some(other) => panic!("a raw echo sends bytes only, not {other:?}"),
            None => Vec::new(),
        }
    }

    #[test]
    fn upper_cases_and_flushes_before_close() {
        let now = Instant::now();
        let limits = Limits::default();
        let mut e = RawEcho::new(now);
        with_ctx(now, |ctx| e.handle_input(b"hello, \xc3\xa9 world\n", ctx));
        assert_eq!(pending(&mut e), b"HELLO, \xc3\xa9 WORLD\n");
        with_ctx(now, |ctx| e.handle_eof(ctx));
        assert!(!e.wants_read(&limits) && !e.is_done());
        let n = pending(&mut e).len();
        with_ctx(now, |ctx| e.handle_written(n, ctx));
        assert!(e.is_done());
        assert!(e.poll_transmit(&[]).is_none());
    }

    #[test]
    fn calls_out_of_order_have_defined_results() {
        let now = Instant::now();
        let limits = Limits::default();
        let mut e = RawEcho::new(now);
        // A timeout before the deadline does nothing.
        with_ctx(now, |ctx| e.handle_timeout(ctx));
        assert!(!e.is_done() && e.wants_read(&limits));
        // More written than offered counts as all of it.
        with_ctx(now, |ctx| e.handle_input(b"abc", ctx));
        with_ctx(now, |ctx| e.handle_written(100, ctx));
        assert!(pending(&mut e).is_empty());
        // Job results it never asked for are ignored.
        with_ctx(now, |ctx| e.handle_job_done(Box::new(1u8), ctx));
        with_ctx(now, |ctx| e.handle_job_refused(ctx));
        assert!(!e.is_done() && !e.job_in_flight());
        // Past the deadline, the echo is given up unflushed.
        with_ctx(now, |ctx| e.handle_input(b"never read", ctx));
        let late = e.deadline(&limits).expect("a deadline");
        with_ctx(late, |ctx| e.handle_timeout(ctx));
        assert!(e.is_done() && e.buffered_bytes() == 0);
        // Input after the end is ignored.
        with_ctx(late, |ctx| e.handle_input(b"more", ctx));
        assert!(e.is_done());
    }

    #[test]
    fn a_reset_drops_the_echo_and_a_shutdown_flushes_it() {
        let now = Instant::now();
        let mut reset = RawEcho::new(now);
        with_ctx(now, |ctx| reset.handle_input(b"x", ctx));
        reset.handle_reset();
        assert!(reset.is_done());
        let mut stopping = RawEcho::new(now);
        with_ctx(now, |ctx| stopping.handle_input(b"x", ctx));
        stopping.shut_down();
        assert!(!stopping.is_done(), "the echo is flushed first");
        with_ctx(now, |ctx| stopping.handle_written(1, ctx));
        assert!(stopping.is_done());
    }
}
