//! Writing a client's output: queued bytes (with echo bodies still lent
//! from the read buffer, in one `writev`), a file body by `sendfile`, a
//! command's output by `splice`; each within the turn's write budget.

use std::io::{self, IoSlice};
use std::time::Instant;

use log::{debug, warn};

use super::client::{Client, Engine, Env};
use crate::children::Fd;
use crate::conn::MAX_LENT;

/// Writes queued output until it is gone, the socket would block, or the
/// turn's budget is spent.
pub(super) fn flush(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
) {
    flush_with(k, client, env, now, budget, &[]);
}

/// [`flush`], right after `handle_input(input)`: the output may include
/// echo bodies still in `input`, written with the queued bytes in one
/// `writev`.
pub(super) fn flush_with(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
    input: &[u8],
) {
    while client.writable && *budget > 0 && client.broken.is_none() {
        let written = match &client.engine {
            Engine::Framed(c) if c.is_lending() => {
                // Reply headers interleaved with echo bodies still in
                // `input`: one writev.
                let mut parts = [IoSlice::new(&[]); 2 * MAX_LENT + 1];
                let (mut count, mut total) = (0, 0);
                for part in c.output_parts(input) {
                    let part = &part[..part.len().min(*budget - total)];
                    if part.is_empty() {
                        break;
                    }
                    parts[count] = IoSlice::new(part);
                    count += 1;
                    total += part.len();
                }
                client.stream.write_vectored(&parts[..count])
            }
            engine => {
                let out = engine.output();
                if out.is_empty() {
                    if !send_file(k, client, env, now, budget)
                        && !send_spliced(k, client, env, now, budget)
                    {
                        return;
                    }
                    continue;
                }
                client.stream.write(&out[..out.len().min(*budget)])
            }
        };
        match written {
            Ok(0) => client.fail("write returned 0".into()),
            Ok(n) => {
                *budget -= n;
                env.stats.bytes_out += n as u64;
                match &mut client.engine {
                    Engine::Framed(c) => c.handle_written(n, &mut env.ctx(now)),
                    Engine::Raw(r) => r.handle_written(n, now),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!("conn {k}: socket full, output waits");
                client.writable = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => client.fail(format!("write: {e}")),
        }
    }
}

/// Moves a `get` body from the file to the socket inside the kernel.
/// Returns false when there is nothing to send this way.
pub(super) fn send_file(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
) -> bool {
    let Client {
        stream,
        engine: Engine::Framed(c),
        ..
    } = client
    else {
        return false;
    };
    let Some((file, remaining)) = c.file_to_send() else {
        return false;
    };
    let count = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(*budget);
    let sent = crate::sys::sendfile(stream.as_fd(), std::os::fd::AsFd::as_fd(file), count);
    match sent {
        Ok(n) => {
            *budget = budget.saturating_sub(n.max(1));
            env.stats.bytes_out += n as u64;
            c.handle_file_sent(n, &mut env.ctx(now));
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            debug!("conn {k}: socket full during sendfile");
            client.writable = false;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            c.zero_copy_unavailable();
            return false;
        }
        Err(e) => client.fail(format!("sendfile: {e}")),
    }
    true
}

/// Moves a command's output frame body from its pipe to the socket inside
/// the kernel. Returns false when there is nothing to move this way.
pub(super) fn send_spliced(
    k: usize,
    client: &mut Client,
    env: &mut Env,
    now: Instant,
    budget: &mut usize,
) -> bool {
    let Client {
        stream,
        engine: Engine::Framed(c),
        ..
    } = client
    else {
        return false;
    };
    let Some(splice) = c.splice_pending() else {
        return false;
    };
    let pipe = env
        .children
        .get(splice.child)
        .and_then(|ch| match splice.fd {
            Fd::Stdout => ch.stdout.as_ref(),
            _ => ch.stderr.as_ref(),
        });
    let Some(pipe) = pipe else {
        // Cannot happen: a command is kept while a frame from it is in flight.
        client.fail("a command's pipe vanished mid-frame".into());
        return false;
    };
    let count = splice.remaining.min(*budget);
    match crate::sys::splice(std::os::fd::AsFd::as_fd(pipe), stream.as_fd(), count) {
        Ok(0) => client.fail("a command's pipe ended mid-frame".into()),
        Ok(n) => {
            *budget = budget.saturating_sub(n);
            env.stats.bytes_out += n as u64;
            c.handle_spliced(n, now);
        }
        // The pipe holds the bytes (they were counted): the socket is full.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            debug!("conn {k}: socket full during splice");
            client.writable = false;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => {
            if e.raw_os_error() == Some(libc::EINVAL) {
                warn!("splice refused ({e}); command output is copied from now on");
                *env.splice_works = false;
            }
            client.fail(format!("splice: {e}"));
        }
    }
    true
}
