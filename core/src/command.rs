//! What the core asks the server to run, and the names of a running
//! command's descriptors. The server's `children` module spawns and
//! watches the processes; these are the plain data that cross over.

use std::time::Duration;

use serde_json::Number;

/// Which of a child's descriptors an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
    /// Standard input.
    Stdin = 2,
    /// The pidfd: readable once the process exited.
    Exit = 3,
}

impl Fd {
    /// From the two bits in a token.
    pub fn from_bits(bits: usize) -> Fd {
        match bits & 3 {
            0 => Fd::Stdout,
            1 => Fd::Stderr,
            2 => Fd::Stdin,
            _ => Fd::Exit,
        }
    }
}

/// What to run, for whom: made by the `exec` handler, carried out by
/// the reactor.
#[derive(Debug)]
pub struct Spawn {
    /// Slab key of the connection.
    pub conn: usize,
    /// Request id; every frame about the command carries it.
    pub id: Number,
    /// The command line, for `sh -c`.
    pub cmd: String,
    /// Where it runs (inside the user's home).
    pub cwd: std::path::PathBuf,
    /// The user's home, for `HOME`.
    pub home: std::path::PathBuf,
    /// The user, for `USER`.
    pub user: String,
    /// When to end it as by `cancel`.
    pub timeout: Duration,
}
