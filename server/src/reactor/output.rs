//! Writing a client's output: one loop that asks the state machine what
//! to send ([`Engine::poll_transmit`]), sends it the way its kind asks —
//! bytes by `writev` (with echo bodies still lent from the read buffer), a
//! file by `sendfile` (once its pages are known to be cached), a command's
//! pipe by `splice` — within the turn's
//! write budget, and reports what the socket took
//! ([`Engine::handle_written`]). One ladder of results serves all three.

use std::io::{self, IoSlice};
use std::time::Instant;

use log::{debug, warn};

use super::WRITE_BUDGET;
use super::client::{Client, Env, Stream};
use super::page_cache;
use crate::children::Fd;
use crate::engine::{Engine, MAX_PARTS, Parts, Transmit};
use crate::tls::TlsSession;
use crate::tls::session::OUT_LIMIT;

/// How a transmit is sent, for the results that differ by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Write,
    Sendfile,
    Splice,
}

/// What one client may send in a turn. Bytes copied through this process
/// (a write from its buffers, TLS records) cost the loop by the byte, and
/// get [`WRITE_BUDGET`]. Bytes the kernel moves itself (`sendfile`,
/// `splice`) cost mostly by the call, and get the turn's share
/// ([`super::Reactor::share`]): up to 2 MiB when the client is alone, so a
/// 1 GiB RETR takes a quarter of the calls and turns, and the floor of
/// 256 KiB each when the turn is busy. The send stops when either runs out.
pub(super) struct Budget {
    copied: usize,
    zero_copy: usize,
}

impl Budget {
    pub(super) fn new(share: usize) -> Budget {
        Budget {
            copied: WRITE_BUDGET,
            zero_copy: share.max(WRITE_BUDGET),
        }
    }

    /// Whether more may be sent this turn.
    pub(super) fn left(&self) -> bool {
        self.copied > 0 && self.zero_copy > 0
    }

    /// Most bytes one call of this kind may send now.
    pub(super) fn room(&self, via: Via) -> usize {
        match via {
            Via::Write => self.copied,
            Via::Sendfile | Via::Splice => self.zero_copy,
        }
    }

    /// `n` bytes went (at least 1 is counted, so a source that keeps
    /// ending early cannot spin).
    pub(super) fn spend(&mut self, via: Via, n: usize) {
        let left = match via {
            Via::Write => &mut self.copied,
            Via::Sendfile | Via::Splice => &mut self.zero_copy,
        };
        *left = left.saturating_sub(n.max(1));
    }
}

/// What one `write`, `sendfile` or `splice` to a socket came to: the one
/// error ladder every output path (framed, TLS, FTP data) shares.
pub(super) enum Sent {
    /// `n` bytes went. For a file or a pipe 0 means its source ended early.
    Bytes(usize),
    /// The socket is full: wait for the next writable edge.
    Full,
    /// A signal interrupted the call: try again.
    Interrupted,
    /// The kernel cannot `sendfile` to this socket: copy instead.
    NoSendfile,
    /// The connection is lost.
    Lost(io::Error),
}

impl Sent {
    pub(super) fn of(result: io::Result<usize>, via: Via) -> Sent {
        match result {
            // A socket write of some bytes never returns 0; if it did,
            // retrying would spin.
            Ok(0) if via == Via::Write => {
                Sent::Lost(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"))
            }
            Ok(n) => Sent::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Full,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Sent::Interrupted,
            Err(e)
                if via == Via::Sendfile
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                    ) =>
            {
                Sent::NoSendfile
            }
            Err(e) => Sent::Lost(e),
        }
    }
}

/// Sends what the client's state machine offers until it offers nothing,
/// the socket would block, or the turn's budget is spent. `input` is the
/// read buffer the machine was just given (its echo bodies may go out
/// straight from it), or empty.
pub(super) fn flush(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut Budget,
    input: &[u8],
) {
    if client.tls.is_some() {
        flush_tls(k, client, env, now, budget, input);
        return;
    }
    while client.writable && budget.left() && client.broken.is_none() {
        let Client {
            stream, protocol, ..
        } = &mut *client;
        let engine = protocol.engine_mut();
        let (via, sent) = match engine.poll_transmit(input) {
            None => return,
            Some(Transmit::Bytes(parts)) => match parts.single() {
                // The common case, one slice: a plain `write`.
                Some(bytes) => {
                    let room = budget.room(Via::Write);
                    (Via::Write, stream.write(&bytes[..bytes.len().min(room)]))
                }
                None => (
                    Via::Write,
                    write_parts(stream, parts, budget.room(Via::Write)),
                ),
            },
            Some(Transmit::File {
                file,
                offset,
                len,
                warmed,
            }) => {
                let count = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .min(budget.room(Via::Sendfile));
                if !page_cache::cached(file, offset, count as u64).unwrap_or(warmed) {
                    // sendfile would read the disk on the loop: the state
                    // machine has a worker read the range in first.
                    debug!("conn {k}: {count} bytes at {offset} not in the page cache");
                    engine.handle_file_not_cached(offset, count as u64, &mut env.ctx(now));
                    // It waits for the job now; nothing else is queued
                    // behind a file.
                    return;
                }
                let file = std::os::fd::AsFd::as_fd(file);
                (
                    Via::Sendfile,
                    crate::sys::sendfile(stream.as_fd(), file, count),
                )
            }
            Some(Transmit::Pipe { child, fd, len }) => {
                let pipe = env.children.get(child).and_then(|ch| match fd {
                    Fd::Stdout => ch.stdout.as_ref(),
                    _ => ch.stderr.as_ref(),
                });
                let Some(pipe) = pipe else {
                    // Cannot happen: a command is kept while a frame from it
                    // is in flight.
                    client.fail("a command's pipe vanished mid-frame".into());
                    return;
                };
                let pipe = std::os::fd::AsFd::as_fd(pipe);
                (
                    Via::Splice,
                    crate::sys::splice(pipe, stream.as_fd(), len.min(budget.room(Via::Splice))),
                )
            }
        };
        match Sent::of(sent, via) {
            // For a file or a pipe, 0 means the source ended early: the
            // state machine decides what that does to the stream.
            Sent::Bytes(n) => {
                budget.spend(via, n);
                env.stats.bytes_out += n as u64;
                engine.handle_written(n, &mut env.ctx(now));
            }
            Sent::Full => {
                debug!("conn {k}: socket full, output waits ({via:?})");
                client.writable = false;
            }
            Sent::Interrupted => {}
            Sent::NoSendfile => {
                debug!("conn {k}: no sendfile here; the file is copied instead");
                engine.handle_zero_copy_refused();
            }
            Sent::Lost(e) => {
                if via == Via::Splice && e.raw_os_error() == Some(libc::EINVAL) {
                    warn!("splice refused ({e}); command output is copied from now on");
                    *env.splice_works = false;
                }
                client.fail(format!("{via:?}: {e}"));
            }
        }
    }
}

/// Writes a transmit's slices, within `budget` bytes, with one `writev`.
fn write_parts(stream: &mut Stream, parts: Parts, budget: usize) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_PARTS];
    let (mut count, mut total) = (0, 0);
    for part in parts.take(MAX_PARTS) {
        let part = &part[..part.len().min(budget - total)];
        if part.is_empty() {
            break;
        }
        slices[count] = IoSlice::new(part);
        count += 1;
        total += part.len();
    }
    stream.write_vectored(&slices[..count])
}

/// [`flush`] for a TLS client: the state machine's plaintext is encrypted
/// into the session's bounded output as it has room ([`encrypt`]), and the
/// ciphertext goes to the socket, within the same budget.
///
/// Nothing goes around the copy: `sendfile` and `splice` move bytes from
/// a file or a pipe to the socket inside the kernel, but TLS must encrypt
/// them in user space first. (Kernel TLS would let the kernel encrypt,
/// and so keep `sendfile`; see the README's security section.)
fn flush_tls(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut Budget,
    input: &[u8],
) {
    while client.broken.is_none() {
        let Client {
            stream,
            protocol,
            tls: Some(tls),
            writable,
            ..
        } = &mut *client
        else {
            return;
        };
        encrypt(tls, protocol.engine_mut(), env, now, input);
        let out = tls.output();
        if out.is_empty() || !*writable || !budget.left() {
            return;
        }
        let room = budget.room(Via::Write);
        match Sent::of(stream.write(&out[..out.len().min(room)]), Via::Write) {
            Sent::Bytes(n) => {
                budget.spend(Via::Write, n);
                env.stats.bytes_out += n as u64;
                tls.handle_written(n);
            }
            Sent::Full => {
                debug!("conn {k}: socket full, TLS output waits");
                *writable = false;
            }
            Sent::Interrupted | Sent::NoSendfile => {}
            Sent::Lost(e) => client.fail(format!("write: {e}")),
        }
    }
}

/// Moves the state machine's output into the TLS session while it has
/// room, reporting what it took as written. A file on offer is refused
/// (the machine then copies it through its own buffer); a pipe is never
/// offered, as commands do not splice to a TLS client.
fn encrypt(
    tls: &mut TlsSession,
    engine: &mut dyn Engine,
    env: &mut Env,
    now: Instant,
    input: &[u8],
) {
    while tls.output().len() < OUT_LIMIT && !tls.is_handshaking() {
        let taken = match engine.poll_transmit(input) {
            None | Some(Transmit::Pipe { .. }) => return,
            Some(Transmit::File { .. }) => {
                engine.handle_zero_copy_refused();
                continue;
            }
            Some(Transmit::Bytes(parts)) => {
                let mut taken = 0;
                for part in parts {
                    let n = tls.write_plaintext(part);
                    taken += n;
                    if n < part.len() {
                        break;
                    }
                }
                taken
            }
        };
        if taken == 0 {
            return;
        }
        engine.handle_written(taken, &mut env.ctx(now));
    }
}
