//! The world a connection works in, beyond its own state: the time, the
//! limits, the server's counters and shared services, and two lists the
//! reactor empties after each call, of [`Action`]s (work outside the
//! connection: a chat fan-out, a command) and of [`Submission`]s (jobs for
//! the worker pool).
//!
//! It sits below both the connection state machines and the handlers, so
//! that handlers depend only downward: nothing here knows a connection.

use std::rc::Rc;
use std::time::Instant;

use serde_json::Number;

use crate::buffer::SharedFrame;
use crate::limits::Limits;
use crate::pool::{Lane, Work};
use crate::services::Services;
use crate::stats::Stats;

/// What a connection may read and change beyond itself.
pub struct Ctx<'a> {
    /// The loop's idea of the current time.
    pub now: Instant,
    /// Limits for every connection.
    pub limits: &'a Limits,
    /// Server-wide counters (read by `stats`).
    pub stats: &'a mut Stats,
    /// Users, accounts and caches.
    pub services: &'a mut Services,
    /// Work for the reactor, collected during this call.
    pub actions: &'a mut Vec<Action>,
    /// Jobs for the worker pool, collected during this call.
    pub jobs: &'a mut Vec<Submission>,
}

/// Work a connection asks the reactor to do outside its own state.
#[derive(Debug)]
pub enum Action {
    /// Deliver a chat message to `to` (a user, or `*` for everyone else).
    Say {
        /// Slab key of the sending connection (not a recipient of `*`).
        from_key: usize,
        /// Recipient user or `*`.
        to: String,
        /// The whole `msg` frame, one copy for every recipient.
        frame: Rc<SharedFrame>,
    },
    /// Run a command.
    Spawn(crate::command::Spawn),
    /// Bytes (and maybe the end) for a command's standard input.
    Stdin {
        /// Slab key of the connection.
        conn: usize,
        /// The command's request id.
        id: Number,
        /// Bytes to feed.
        bytes: Vec<u8>,
        /// Close its standard input after them.
        eof: bool,
    },
    /// End a command's process group.
    Cancel {
        /// Slab key of the connection.
        conn: usize,
        /// The command's request id.
        id: Number,
    },
}

/// A job's blocking part on its way to the pool.
pub struct Submission {
    /// The job continues a request already under way (its second step, a
    /// batch of a body): the pool takes it even when full, because
    /// refusing it would strand what the first steps hold (a partial
    /// file, quota). Only a request's first job may be refused.
    pub must_run: bool,
    /// Slab key of the connection that waits for it.
    pub conn: usize,
    /// For the log.
    pub name: &'static str,
    /// Which queue.
    pub lane: Lane,
    /// What to run.
    pub work: Work,
}
