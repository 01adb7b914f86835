//! What the core asks the server to run, and the names of a running
//! command's descriptors. The server's `children` module spawns and
//! watches the processes; these are the plain data that cross over.

use std::time::Duration;

use serde_json::Number;

/// Which of a running command's descriptors something is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Standard input.
    Stdin,
    /// The pidfd: readable once the process exited.
    Exit,
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
