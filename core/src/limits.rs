//! Per-connection limits, fixed at startup: the one module every other
//! part of the core may read, so it depends on nothing.

use std::time::Duration;

/// The high-water mark while all connections together hold more than half
/// of [`Limits::out_total`]: a connection then stops taking requests as
/// soon as this much of its output waits.
pub const PRESSURE_HIGH: usize = 16 << 10;

/// Per-connection limits, fixed at startup.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (a larger `size` is a bad frame).
    pub max_body: u64,
    /// Queued output above which input is no longer consumed.
    pub out_high: usize,
    /// Queued output below which input is consumed again.
    pub out_low: usize,
    /// Buffer bytes all connections together may hold. Above half of it
    /// the high-water mark drops to [`PRESSURE_HIGH`]; above all of it
    /// the reactor closes the connections holding the most.
    pub out_total: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// How long a closing connection may take to read its last bytes.
    pub close_grace: Duration,
    /// Pushed output (chat) above which the connection is cut at once.
    pub push_hard: usize,
    /// Pushed output above which the connection is cut if it stays there
    /// for [`Limits::push_soft_time`].
    pub push_soft: usize,
    /// See [`Limits::push_soft`].
    pub push_soft_time: Duration,
    /// Most commands running at once per connection.
    pub exec_per_conn: usize,
    /// Longest a command may run (also the cap on its `timeout`).
    pub exec_max_time: Duration,
    /// Longest a TLS handshake may take, counted from the connection (or
    /// from `AUTH TLS`): a client that connects and stalls holds a
    /// descriptor and a session, so it gets seconds, not the idle timeout.
    /// On an FTP data connection, the transfer then gets `425`/`426`.
    pub tls_handshake_timeout: Duration,
    /// How long an FTP passive listener waits for its client to connect
    /// (then it is closed and a transfer waiting for it gets `425`), and
    /// an open data connection for a transfer command.
    pub ftp_passive_timeout: Duration,
}

impl Limits {
    /// Connections together hold more than half the buffer budget: each
    /// then pauses at [`PRESSURE_HIGH`].
    pub fn under_pressure(&self, buffered: usize) -> bool {
        buffered > self.out_total / 2
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 64 << 30,
            out_high: 256 << 10,
            out_low: 64 << 10,
            out_total: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            close_grace: Duration::from_secs(10),
            push_hard: 1 << 20,
            push_soft: 256 << 10,
            push_soft_time: Duration::from_secs(10),
            exec_per_conn: 8,
            exec_max_time: Duration::from_secs(3600),
            tls_handshake_timeout: Duration::from_secs(10),
            ftp_passive_timeout: Duration::from_secs(30),
        }
    }
}
