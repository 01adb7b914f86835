//! skiffd's FTP: one control connection as a sans-I/O state machine,
//! with the data connection it owns, for the clients people already have
//! (curl, lftp, FileZilla, rclone, wget, Python's `ftplib`).
//!
//! An [`FtpSession`] speaks RFC 959 with the extensions of RFC 2389
//! (`FEAT`, `OPTS`), 2428 (`EPSV`), 3659 (`SIZE`, `MDTM`, `REST STREAM`,
//! `MLST`, `MLSD`) and 2640 (`UTF8`), over the framed protocol's users,
//! jail, quotas and atomic uploads (see `docs/ftp.md`). Like
//! [`crate::conn::Conn`] it never sees a socket, a disk or a clock: the
//! reactor reads and writes, the worker pool runs its jobs, and time comes
//! in as `Ctx::now`.
//!
//! # The contract
//!
//! ```text
//!   control connection (one per session): the [`Engine`](crate::engine::Engine) contract
//!     start_turn(ctx)               a new turn: MAX_COMMANDS_PER_TURN more commands; commands
//!                                   that waited, a file copied to the data connection where
//!                                   sendfile is missing
//!     handle_input(bytes)           bytes read (only while wants_read); nothing is lent
//!     poll_transmit → handle_written(n)   replies (bytes only)
//!     end_turn()                    the turn's reads are over: received upload bytes go to a worker
//!     handle_eof / handle_reset / handle_timeout / handle_job_done / handle_job_refused / shut_down
//!     wants_read, wants_turn (commands wait, or a turn is owed after a full share: more may
//!     wait in the socket with no new edge), deadline, is_done, job_in_flight, buffered_bytes
//!
//!   data connection (at most one listener and one connection per session)
//!     poll_data_request()           until None, after every call above:
//!       Listen        bind a listener from --ftp-passive (closing this session's old
//!                     listener and data connection), then handle_passive_bound(addr to
//!                     announce: --ftp-advertise or the control socket's local IP, and
//!                     the port) or handle_passive_failed()
//!       CloseListener close the listener
//!       CloseData     close the data connection, then handle_data_closed()
//!                     (always, even if it was already gone)
//!     handle_data_connected(peer)   a connection was accepted on the listener: true keeps
//!                                   it (close the listener), false refuses it (close it,
//!                                   keep listening): only the control peer's IP is kept
//!     data_output() → handle_data_written(n) / handle_data_file_sent(n)
//!                                   Bytes to write, or a File range for sendfile;
//!                                   data_zero_copy_unavailable() falls back to copying
//!     data_input() → Bytes: read, then handle_data_input(bytes)
//!                  → Pipe { pipe, room }: splice ≤ room bytes into the pipe, then
//!                    handle_data_spliced(n); the pipe full while the socket has bytes:
//!                    handle_data_pipe_full(); no splice (or TLS): data_splice_unavailable()
//!     handle_data_eof()             the client finished sending
//!     wants_data_read()             data_input() is not Nothing
//!     handle_data_closed()          the data connection failed (reset) or was closed
//!     (every call may queue replies: flush the control connection after it)
//!
//!   jobs go out through ctx.jobs (conn = the session's key) like the framed connection's
//! ```
//!
//! Nothing is read from either connection while a job is out or a `PASV`
//! waits for its listener (its reply must come first), except an upload's
//! data connection while a worker appends the batch before: hashing and
//! writing on a worker overlap with receiving on the loop. A session handles
//! at most [`MAX_COMMANDS_PER_TURN`] commands per turn, so a pipeline of
//! cheap commands waits like everyone else, and none while
//! [`REPLIES_HIGH`] bytes of replies wait for a client that does not read
//! them. A command that arrives during a transfer waits for its end
//! (a few at most), except `ABOR`, `STAT`, `NOOP` and `QUIT`.
//!
//! ```text
//!   control:  220 ─USER/PASS (argon2 job)─▶ logged in ─ commands ─▶ QUIT/421 ─▶ closing ─▶ done
//!   data:     (transfer.rs) Off ─PASV─▶ Listening ─connect─▶ Connected ─▶ transfer ─▶ Off
//! ```
//!
//! The modules: [`line`](mod@line) cuts the input into command lines (Telnet
//! commands out, a bound on length), [`command`] parses them, [`reply`]
//! writes replies, `verbs` dispatches them to `login`, `files` and
//! `retr_stor`, `transfer` drives the data connection (`receive`, an
//! upload on it), [`store`] is an upload, [`listing`] formats
//! `LIST`, `NLST` and `MLSD`.

pub mod command;
mod files;
pub mod line;
pub mod listing;
mod login;
mod receive;
pub mod reply;
mod retr_stor;
mod security;
mod session;
pub mod store;
mod transfer;
mod verbs;

#[cfg(test)]
mod tests;

pub use session::{FtpSession, MAX_COMMANDS_PER_TURN, REPLIES_HIGH};
pub use transfer::{DataIn, DataOut, DataRequest};
