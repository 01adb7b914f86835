//! skiffd's sans-I/O core: everything the server decides, nothing it does
//! to a socket.
//!
//! - [`conn`]: one framed connection as a state machine (bytes in, bytes
//!   out, `now` passed in), and the [`conn::Ctx`] it works in;
//! - [`handlers`]: what each op does, returning replies, bodies to stream,
//!   and [`handlers::Job`]s for work that may wait on a disk;
//! - [`pool`]: the worker threads that run those jobs;
//! - [`users`], [`jail`], [`buffer`], [`stats`], [`command`]: the user
//!   store, the path jail, output buffers, counters, and what a command
//!   request carries.
//!
//! The crate has no mio and no `unsafe`: the build itself guarantees that
//! nothing here can read a socket or poke at memory. The `skiffd` binary
//! drives it from its reactor.

#![forbid(unsafe_code)]

pub mod buffer;
pub mod command;
pub mod conn;
pub mod ftp;
pub mod handlers;
pub mod jail;
pub mod pool;
pub mod stats;
pub mod users;
