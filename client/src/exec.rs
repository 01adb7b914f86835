//! `skiff exec CMD...` and the shell's `!CMD`: a command run on the server
//! (PROTOCOL.md section 3), its output streamed back as it comes.
//!
//! ```text
//!   main thread:   exec{id, cmd} ──▶ read frames ──▶ out → stdout (flushed per frame)
//!                                                    err → stderr
//!                                                    msg → [from] text on stderr
//!                                                    exit{code, signal} → status
//!   stdin thread:  local stdin ──chunks──┐
//!   Ctrl-C thread: SIGINT ──cancel once──┴─▶ writer thread ──▶ stdin{id} / stdin{id, eof} / cancel{id}
//! ```
//!
//! The writer thread owns a second [`Client`] on a clone of the socket, so
//! the main thread can block reading while stdin bytes and a cancel go
//! out; frames from the two threads never interleave because, once the
//! writer exists, only it writes.
//!
//! Ctrl-C (see [`crate::interrupt`]): while a command runs, the first
//! Ctrl-C sends `cancel` and the command's `exit` frame is still awaited;
//! a second one, or any Ctrl-C while no command runs, takes the default
//! action (skiff dies of SIGINT).

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Map, Value, json};
use skiff::client::{Client, Frame, Stream};
use skiff::frame::Header;

use crate::cmd::{self, CmdError, output_error};
use crate::files::Push;
use crate::interrupt::OnInterrupt;

/// Bytes of local stdin read (and sent as one `stdin` frame) per step.
const STDIN_CHUNK: usize = 64 * 1024;
/// Frames queued for the writer thread before the stdin reader waits:
/// bounds memory when the server reads slower than our stdin delivers.
const QUEUE: usize = 8;
/// Largest `out`/`err`/`msg` body we accept; the server sends pipe-sized
/// pieces, far smaller.
const MAX_BODY: u64 = 16 << 20;

/// What happens to the command's standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Forward our stdin, chunk by chunk, then `eof` at its end.
    Forward,
    /// Send `eof` at once: a command reading stdin sees it empty.
    Closed,
}

/// How the command ended, from its `exit` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The request id the command ran under.
    pub id: u64,
    /// Its exit code, if it exited.
    pub code: Option<i64>,
    /// The signal that ended it, if one did.
    pub signal: Option<i64>,
}

impl Outcome {
    /// The status a local shell would report: the exit code, or
    /// 128 + signal.
    pub fn status(&self) -> i32 {
        match (self.code, self.signal) {
            (_, Some(sig)) => 128 + (sig.clamp(0, 127) as i32),
            (Some(code), None) => code.clamp(0, 255) as i32,
            // Not what the protocol sends; still a failure.
            (None, None) => 255,
        }
    }
}

/// A frame the writer thread sends.
enum ToServer {
    /// A piece of our stdin.
    Stdin(Vec<u8>),
    /// Our stdin ended.
    Eof,
    /// Ctrl-C: end the command.
    Cancel,
    /// The command ended: the writer thread stops.
    Stop,
}

/// Socket timeouts, put back on drop: a command may stay silent (or not
/// read its stdin) for as long as it likes, as with ssh, but the shell's
/// next request must again be bounded.
struct Timeouts {
    stream: Stream,
    read: Option<Duration>,
    write: Option<Duration>,
}

impl Timeouts {
    /// Clears both timeouts of the socket behind `client`.
    fn clear(client: &Client) -> io::Result<Timeouts> {
        let stream = client.stream().try_clone()?;
        let (read, write) = (stream.read_timeout()?, stream.write_timeout()?);
        let saved = Timeouts {
            stream,
            read,
            write,
        };
        saved.set(None, None)?;
        Ok(saved)
    }

    fn set(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(read)?;
        self.stream.set_write_timeout(write)
    }
}

impl Drop for Timeouts {
    fn drop(&mut self) {
        // If this fails the socket is gone anyway; the next command redials.
        let _ = self.set(self.read, self.write);
    }
}

/// A JSON object literal as a header map.
fn header(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("request headers are JSON objects"),
    }
}

/// The writer thread: sends what it is given until told to stop (or the
/// connection fails; the main thread then sees the failure as it reads).
fn writer(mut client: Client, id: u64, rx: Receiver<ToServer>) {
    while let Ok(msg) = rx.recv() {
        let sent = match msg {
            ToServer::Stdin(bytes) => client.send(header(json!({"op": "stdin", "id": id})), &bytes),
            ToServer::Eof => {
                client.send(header(json!({"op": "stdin", "id": id, "eof": true})), b"")
            }
            ToServer::Cancel => client.send(header(json!({"op": "cancel", "id": id})), b""),
            ToServer::Stop => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Reads our stdin to its end in chunks, handing each to the writer.
fn forward_stdin(tx: SyncSender<ToServer>) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(ToServer::Stdin(buf[..n].to_vec())).is_err() {
                    return; // the command ended
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("warning: reading stdin: {e}; closing the command's stdin");
                break;
            }
        }
    }
    let _ = tx.send(ToServer::Eof);
}

/// Whether `header` is about request `id`.
fn is_for(header: &Header, id: u64) -> bool {
    header.id.as_ref().and_then(|n| n.as_u64()) == Some(id)
}

/// Reads a frame's body whole (bounded).
fn body(client: &mut Client, header: &Header, buf: &mut Vec<u8>) -> Result<(), CmdError> {
    if header.size > MAX_BODY {
        return Err(CmdError::BadReply(format!(
            "{} frame of {} bytes",
            header.op, header.size
        )));
    }
    buf.clear();
    client
        .read_body(header.size, buf, |_| {})
        .map_err(cmd::io_error)
}

/// The server's `error` frame as a [`CmdError`].
fn server_error(header: &Header) -> CmdError {
    CmdError::Server {
        code: header.str("code").unwrap_or("?").to_string(),
        message: header.str("message").unwrap_or("").to_string(),
    }
}

/// Runs `cmd` on the server (in the session's cwd), writing its stdout to
/// `out` and its stderr to `err` as the frames arrive, until its `exit`.
///
/// A connection that stays in use must then be brought back in step:
/// see [`in_session`].
pub fn run(
    client: &mut Client,
    cmd: &str,
    input: Input,
    out: &mut dyn Write,
    err: &mut dyn Write,
    push: Push,
) -> Result<Outcome, CmdError> {
    let id = client.next_id();
    run_as(client, id, cmd, input, out, err, push)
}

/// [`run`] under request id `id`.
fn run_as(
    client: &mut Client,
    id: u64,
    cmd: &str,
    input: Input,
    out: &mut dyn Write,
    err: &mut dyn Write,
    push: Push,
) -> Result<Outcome, CmdError> {
    let _timeouts = Timeouts::clear(client).map_err(cmd::io_error)?;
    let second = Client::from_stream(client.stream().try_clone().map_err(cmd::io_error)?)
        .map_err(cmd::io_error)?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    // Armed before the request goes out, so no Ctrl-C falls in between.
    let cancel = tx.clone();
    let interrupt = OnInterrupt::arm(move || {
        // A terminal has already echoed "^C"; this finishes its line.
        eprintln!(" cancelling the remote command");
        let _ = cancel.send(ToServer::Cancel);
    });
    client
        .send(header(json!({"op": "exec", "id": id, "cmd": cmd})), b"")
        .map_err(cmd::io_error)?;
    if input == Input::Closed {
        client
            .send(header(json!({"op": "stdin", "id": id, "eof": true})), b"")
            .map_err(cmd::io_error)?;
    }
    let writer_thread: JoinHandle<()> = thread::Builder::new()
        .name("exec-writer".into())
        .spawn(move || writer(second, id, rx))
        .map_err(|e| CmdError::Connection(format!("cannot start a thread: {e}")))?;
    if input == Input::Forward {
        let tx = tx.clone();
        // Never joined: it may sit in a read of a stdin that never ends.
        thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || forward_stdin(tx))
            .map_err(|e| CmdError::Connection(format!("cannot start a thread: {e}")))?;
    }
    let result = read_until_exit(client, id, out, err, push);
    drop(interrupt);
    // The writer stops after what is queued before Stop; a full queue
    // (stdin still pouring in) only happens with Forward, whose caller
    // drops the connection anyway, so only the other modes wait for it.
    if tx.try_send(ToServer::Stop).is_ok() && input != Input::Forward {
        let _ = writer_thread.join();
    }
    result
}

/// Reads the command's frames until its `exit`.
fn read_until_exit(
    client: &mut Client,
    id: u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
    push: Push,
) -> Result<Outcome, CmdError> {
    let mut buf = Vec::new();
    loop {
        let header = client.recv_header()?;
        if header.op == "msg" && header.id.is_none() {
            body(client, &header, &mut buf)?;
            push(Frame {
                header,
                body: std::mem::take(&mut buf),
            });
            continue;
        }
        if skiff::client::is_shutdown(&header) {
            // The command is being ended; its `exit` frame still comes.
            body(client, &header, &mut buf)?;
            eprintln!("skiff: the server is shutting down");
            continue;
        }
        if header.op == "error" && (header.id.is_none() || is_for(&header, id)) {
            // e.g. forbidden, too_busy; or the idle timeout (no id)
            body(client, &header, &mut buf)?;
            return Err(server_error(&header));
        }
        if !is_for(&header, id) {
            return Err(CmdError::BadReply(format!(
                "expected frames of command {id}, got {:?} for {:?}",
                header.op, header.id
            )));
        }
        match header.op.as_str() {
            "out" | "err" => {
                body(client, &header, &mut buf)?;
                let w: &mut dyn Write = if header.op == "out" {
                    &mut *out
                } else {
                    &mut *err
                };
                w.write_all(&buf).map_err(output_error)?;
                w.flush().map_err(output_error)?;
            }
            "exit" => {
                body(client, &header, &mut buf)?;
                let num = |k: &str| header.fields.get(k).and_then(Value::as_i64);
                let outcome = Outcome {
                    id,
                    code: num("code"),
                    signal: num("signal"),
                };
                if outcome.code.is_none() && outcome.signal.is_none() {
                    return Err(CmdError::BadReply(
                        "exit frame with neither a code nor a signal".into(),
                    ));
                }
                return Ok(outcome);
            }
            other => {
                return Err(CmdError::BadReply(format!(
                    "unexpected {other:?} frame for command {id}"
                )));
            }
        }
    }
}

/// The shell's `!CMD`: runs `cmd` with an empty stdin and returns its
/// status, leaving the connection in step for the next request. An
/// [`CmdError::Output`] leaves the command's frames unread: the caller
/// must drop the connection (which also ends the command).
pub fn in_session(
    client: &mut Client,
    cmd: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
    push: Push,
) -> Result<i32, CmdError> {
    let id = client.next_id();
    let result = run_as(client, id, cmd, Input::Closed, out, err, &mut *push);
    match result {
        Err(e) if e.breaks_connection() || matches!(e, CmdError::Output(_)) => Err(e),
        // A refused exec (forbidden) still had its eof sent.
        Err(e) => settle(client, id, push).and(Err(e)),
        Ok(outcome) => {
            settle(client, id, push)?;
            Ok(outcome.status())
        }
    }
}

/// Brings a connection back in step after a command: a round trip (an
/// empty `echo`) whose reply comes after any late `not_found` for the
/// command's `stdin`/`cancel`, which are skipped.
fn settle(client: &mut Client, exec_id: u64, push: Push) -> Result<(), CmdError> {
    let id = client.next_id();
    client
        .send(header(json!({"op": "echo", "id": id})), b"")
        .map_err(cmd::io_error)?;
    let mut buf = Vec::new();
    loop {
        let header = client.recv_header()?;
        body(client, &header, &mut buf)?;
        if header.op == "msg" && header.id.is_none() {
            push(Frame {
                header,
                body: std::mem::take(&mut buf),
            });
        } else if is_for(&header, id) {
            return match header.op.as_str() {
                "ok" => Ok(()),
                "error" => Err(server_error(&header)),
                other => Err(CmdError::BadReply(format!("unexpected {other:?} reply"))),
            };
        } else if !(header.op == "error" && is_for(&header, exec_id)) {
            return Err(CmdError::BadReply(format!(
                "unexpected {:?} frame for {:?} after command {exec_id}",
                header.op, header.id
            )));
        }
    }
}

/// `skiff exec`: runs `cmd` with our stdin forwarded and returns the
/// command's status.
///
/// As with `ssh host cmd`, a terminal is forwarded too: it stays in its
/// usual line mode, so each line goes out when Enter is pressed, and
/// Ctrl-D on an empty line reads as the end of stdin, which closes the
/// command's. A command that never reads stdin is not affected: the
/// thread reading our terminal simply ends with skiff.
pub fn one_shot(
    client: &mut Client,
    cmd: &str,
    push: Push,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let outcome = run(client, cmd, Input::Forward, out, &mut io::stderr(), push)?;
    Ok(outcome.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_like_a_shell() {
        let o = |code, signal| Outcome {
            id: 1,
            code,
            signal,
        };
        assert_eq!(o(Some(0), None).status(), 0);
        assert_eq!(o(Some(7), None).status(), 7);
        assert_eq!(o(None, Some(15)).status(), 143);
        assert_eq!(o(None, Some(9)).status(), 137);
        assert_eq!(o(None, None).status(), 255);
    }
}
