//! Server-wide counters, reported by the `stats` op.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// What the server has done since it started.
#[derive(Debug)]
pub struct Stats {
    /// When the server started.
    pub started: Instant,
    /// Connections open now (framed and raw echo).
    pub connections: usize,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections refused with `too_busy`.
    pub refused: u64,
    /// Frames received since start.
    pub requests: u64,
    /// Bytes read from all connections.
    pub bytes_in: u64,
    /// Bytes written to all connections.
    pub bytes_out: u64,
    /// Child processes running now.
    pub children: usize,
    /// Datagrams answered by the UDP services.
    pub datagrams: u64,
    /// Bytes all connections hold in their own buffers now (as of each
    /// one's last turn).
    pub buffered: usize,
    /// Bytes of frames written to many connections from one copy
    /// ([`crate::buffer::SharedFrame`]), each counted once; always exact.
    pub shared: Rc<Cell<usize>>,
    /// Connections closed because all together held too much.
    pub evicted: u64,
    /// `buffered` is above half the budget: connections pause early.
    pub pressure: bool,
    /// Windows of files a worker read into the page cache because they
    /// were not there when `sendfile` was to send them.
    pub warmed_windows: u64,
}

impl Stats {
    /// Zeroed counters, starting now.
    pub fn new(now: Instant) -> Stats {
        Stats {
            started: now,
            connections: 0,
            accepted: 0,
            refused: 0,
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            children: 0,
            datagrams: 0,
            buffered: 0,
            shared: Rc::new(Cell::new(0)),
            evicted: 0,
            pressure: false,
            warmed_windows: 0,
        }
    }

    /// Buffer memory all connections hold together, shared frames
    /// included: what `--out-total` bounds.
    pub fn buffered_total(&self) -> usize {
        self.buffered + self.shared.get()
    }
}
