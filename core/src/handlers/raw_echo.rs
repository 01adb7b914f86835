//! The tutorials' very first program: a raw TCP upper-casing echo. No
//! frames, just bytes in, upper-cased bytes out, so `nc` can talk to it.

use std::time::Instant;

use crate::buffer::OutBuf;
use crate::limits::Limits;

/// One raw echo connection: no state beyond its output.
#[derive(Debug)]
pub struct RawEcho {
    /// Upper-cased bytes waiting for the socket.
    out: OutBuf,
    /// The peer has finished sending.
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

    /// Takes bytes read from the socket.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.last_active = now;
        let w = self.out.writer();
        let start = w.len();
        w.extend_from_slice(bytes);
        w[start..].make_ascii_uppercase();
    }

    /// The peer finished sending: flush, then close.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The socket took `n` bytes.
    pub fn handle_written(&mut self, n: usize, now: Instant) {
        self.out.consume(n);
        self.last_active = now;
    }

    /// Bytes to write.
    pub fn output(&self) -> &[u8] {
        self.out.pending()
    }

    /// Memory held by its buffer, in bytes (for the server's budget).
    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// Read only while the peer keeps up with its echo.
    pub fn wants_read(&self, limits: &Limits) -> bool {
        !self.eof && self.out.len() < limits.out_high
    }

    /// When to close it for idleness.
    pub fn deadline(&self, limits: &Limits) -> Instant {
        self.last_active + limits.idle_timeout
    }

    /// Done once the peer is gone and its echo flushed.
    pub fn is_done(&self) -> bool {
        self.eof && self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_and_flushes_before_close() {
        let now = Instant::now();
        let limits = Limits::default();
        let mut e = RawEcho::new(now);
        e.handle_input(b"hello, \xc3\xa9 world\n", now);
        assert_eq!(e.output(), b"HELLO, \xc3\xa9 WORLD\n");
        e.handle_eof();
        assert!(!e.wants_read(&limits) && !e.is_done());
        e.handle_written(e.output().len(), now);
        assert!(e.is_done());
    }
}
