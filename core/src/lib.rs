//! skiffd's sans-I/O core: everything the server decides, nothing it does
//! to a socket.
//!
//! - [`limits`], [`ctx`]: the limits every connection obeys and the
//!   world it works in ([`ctx::Ctx`]: time, counters, services, the
//!   actions and jobs it hands out); they know no connection;
//! - [`services`]: state all connections share (users, accounts, digests,
//!   the login throttle, who is online);
//! - [`conn`]: one framed connection as a state machine (bytes in, bytes
//!   out, `now` passed in);
//! - [`handlers`]: what each op does, returning replies, bodies to stream,
//!   and [`handlers::Job`]s for work that may wait on a disk;
//! - [`pool`]: the worker threads that run those jobs;
//! - [`users`], [`jail`], [`buffer`], [`stats`], [`command`], [`warm`],
//!   [`upload_pipe`]: the user store, the path jail, output buffers,
//!   counters, what a command request carries, bringing a file into the
//!   page cache before it is sent, and the pipes an upload's bytes take
//!   from the socket to the file.
//!
//! The modules form layers, each using only those below it
//! (`tests/module_graph.rs` fails on a cycle): `limits`, `buffer`,
//! `stats`, `pool`, `users`, `jail`, `command`, `warm`, `upload_pipe` at the
//! bottom; `services`;
//! `ctx`; `handlers`; `conn` on top.
//!
//! The crate has no mio and no `unsafe`: the build itself guarantees that
//! nothing here can read a socket or poke at memory. The `skiffd` binary
//! drives it from its reactor.

#![forbid(unsafe_code)]

pub mod buffer;
pub mod command;
pub mod conn;
pub mod ctx;
pub mod engine;
pub mod ftp;
pub mod handlers;
pub mod jail;
pub mod limits;
pub mod pool;
pub mod services;
pub mod stats;
pub mod upload_pipe;
pub mod users;
pub mod warm;
