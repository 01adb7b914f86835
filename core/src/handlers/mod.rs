//! Request handlers, one module per service. A handler gets a parsed
//! header, the session and the output buffer; it writes its reply and says
//! what happens next ([`Next`]): nothing, a body to stream somewhere, a
//! [`Job`] for a worker thread, a file to send, or a close. Handlers never
//! touch sockets or `mio`, and never make a call that can wait on a disk:
//! what needs one (opening, listing, removing, hashing, fsyncing a user's
//! file, argon2) is a job, whose result comes back to the handler's
//! `then` on the loop thread.

pub mod auth;
pub mod basic;
pub mod chat;
pub mod exec;
pub mod files;
pub mod listing;
pub mod raw_echo;
pub mod upload;

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use serde_json::Number;

use skiff::frame::{Header, HeaderWriter};
use skiff::proto::Code;

use crate::ctx::Ctx;
use crate::pool::{Lane, Work};

/// Who is logged in on a connection, and where they are.
#[derive(Debug)]
pub struct Session {
    /// Slab key of the connection (for the log and for `say`).
    pub key: usize,
    /// The peer's address, for login throttling (None on Unix sockets).
    pub peer: Option<IpAddr>,
    /// The logged-in user.
    pub user: Option<String>,
    /// The user's account (home, quota), shared by their sessions.
    pub account: Option<Rc<RefCell<crate::services::account::Account>>>,
    /// Current directory, as the user sees it.
    pub cwd: String,
    /// May run commands (`exec`).
    pub exec: bool,
    /// An upload announced by `put`, waiting for its `data` frame.
    pub upload: Option<Box<upload::Upload>>,
    /// Ids of this connection's commands still running.
    pub running: Vec<Number>,
    /// Counts this session as one of its user's while it is logged in.
    pub presence: Option<crate::services::online::Presence>,
    /// The password hash the user logged in with: when users.json holds
    /// another one (or none), the session has lost its right to run.
    /// (A boxed str: one idle connection should stay small.)
    pub login_hash: Option<Box<str>>,
}

impl Session {
    /// A session nobody has logged in to yet.
    pub fn new(key: usize, peer: Option<IpAddr>) -> Session {
        Session {
            key,
            peer,
            user: None,
            account: None,
            cwd: "/".into(),
            exec: false,
            upload: None,
            running: Vec::new(),
            presence: None,
            login_hash: None,
        }
    }
}

/// Where a request's body goes while it streams in.
#[derive(Debug)]
pub enum Sink {
    /// Thrown away: the request was refused or needs no body.
    Discard,
    /// Copied back to the client, upper-cased if asked.
    Echo {
        /// Turn `a`-`z` into `A`-`Z`.
        upper: bool,
    },
    /// Written to a partial upload and hashed on the way.
    Upload(Box<upload::Upload>),
    /// Standard input for a running command.
    Stdin {
        /// The command's request id.
        id: Number,
        /// Close its standard input at the end of the body.
        eof: bool,
    },
    /// A chat message, collected (it is small and bounded).
    Message {
        /// The recipient.
        to: String,
        /// The message so far: it grows as bytes arrive, so a header
        /// alone costs nothing.
        body: Vec<u8>,
    },
}

impl Sink {
    /// Memory the sink holds, for the server's buffer budget.
    pub fn buffered_bytes(&self) -> usize {
        match self {
            Sink::Message { body, .. } => body.capacity(),
            Sink::Upload(upload) => upload.buffered_bytes(),
            _ => 0,
        }
    }

    /// Whether it holds collected bytes that a worker should take
    /// ([`flush`]) before more arrive.
    pub fn has_pending(&self) -> bool {
        matches!(self, Sink::Upload(upload) if upload.has_pending())
    }

    /// The state name for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Discard => "discard-body",
            Sink::Echo { .. } => "echo-body",
            Sink::Upload(_) => "upload-body",
            Sink::Stdin { .. } => "stdin-body",
            Sink::Message { .. } => "message-body",
        }
    }
}

/// What the connection does after a request's header was handled.
#[derive(Debug)]
pub enum Next {
    /// The reply is written; any body is discarded.
    Done,
    /// Stream the body into this sink.
    Body(Sink),
    /// Run this job on a worker; the connection waits for its result
    /// (and is not read meanwhile).
    Job(Job),
    /// Send a file as the socket takes it; later requests wait their turn.
    Send(files::Sending),
    /// Flush the reply, then close, for this reason.
    Close(&'static str),
}

/// What a handler does with a job's result, back on the loop thread: it
/// gets the request id, the session and the output, and says what is next
/// (often another job, so one request can take several round trips).
pub type Then = Box<
    dyn FnOnce(Box<dyn Any + Send>, Option<&Number>, &mut Session, &mut Vec<u8>, &mut Ctx) -> Next,
>;

/// Work that must not run on the loop: `work` runs on a worker thread of
/// [`crate::pool`] with owned inputs; `then` runs on the loop with its
/// result.
pub struct Job {
    /// For the log.
    pub name: &'static str,
    /// Which of the pool's queues it waits in.
    pub lane: Lane,
    /// The blocking part.
    pub work: Work,
    /// The part that touches connection state.
    pub then: Then,
    /// Bytes of client data the job carries (a batch of an upload), for
    /// the buffer budget while it is away.
    pub holds: usize,
}

impl Job {
    /// A job whose `work` returns a `T` that `then` takes back.
    pub fn new<T: Send + 'static>(
        name: &'static str,
        lane: Lane,
        work: impl FnOnce() -> T + Send + 'static,
        then: impl FnOnce(T, Option<&Number>, &mut Session, &mut Vec<u8>, &mut Ctx) -> Next + 'static,
    ) -> Job {
        Job {
            name,
            lane,
            holds: 0,
            work: Box::new(move || Box::new(work()) as Box<dyn Any + Send>),
            then: Box::new(move |result, id, session, out, ctx| {
                match result.downcast::<T>() {
                    Ok(value) => then(*value, id, session, out, ctx),
                    // Cannot happen: `work` above made the box.
                    Err(_) => {
                        error(out, id, Code::Internal, "a job returned the wrong type");
                        Next::Done
                    }
                }
            }),
        }
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Job({}, {:?})", self.name, self.lane)
    }
}

/// Handles one request header, writing its reply (or the start of it).
pub fn request(header: Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    if header.bad_id {
        error(out, None, Code::BadRequest, "\"id\" must be an integer");
        return Next::Done;
    }
    match header.op.as_str() {
        "hello" => return basic::hello(id, out),
        "echo" => return basic::echo(&header, out),
        "bye" => {
            ok(out, id).finish();
            return Next::Close("bye");
        }
        "login" => return auth::login(&header, session, out, ctx),
        _ => {}
    }
    if session.user.is_none() {
        if is_known_op(&header.op) {
            error(
                out,
                id,
                Code::AuthRequired,
                &format!("{} needs a login", header.op),
            );
        } else {
            unknown(&header.op, id, out);
        }
        return Next::Done;
    }
    // users.json is reread by the reactor once a second and at each
    // login; a request only looks at what was read.
    if let Some(why) = auth::revoked(session, &ctx.services.users) {
        error(out, id, Code::AuthRequired, why);
        return Next::Close("account deleted or password changed");
    }
    match header.op.as_str() {
        "stats" => basic::stats(id, out, ctx),
        "pwd" | "cd" | "ls" | "mkdir" | "rm" | "quota" | "get" | "put" | "data" => {
            files::request(&header, session, out, ctx)
        }
        "say" => chat::say(&header, out),
        "exec" => exec::exec(&header, session, out, ctx),
        "stdin" => exec::stdin(&header, session, out, ctx),
        "cancel" => exec::cancel(&header, session, out, ctx),
        op => {
            unknown(op, id, out);
            Next::Done
        }
    }
}

fn is_known_op(op: &str) -> bool {
    basic::OPS.contains(&op)
}

fn unknown(op: &str, id: Option<&Number>, out: &mut Vec<u8>) {
    let op: String = op.chars().take(64).collect();
    error(out, id, Code::UnknownOp, &format!("unknown op {op:?}"));
}

/// Passes one piece of a body to its sink.
/// Returns true when the sink has collected enough to hand to a worker:
/// the connection then passes it to [`flush`] and waits for the job.
pub fn body(
    sink: &mut Sink,
    chunk: &[u8],
    session: &Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) -> bool {
    match sink {
        Sink::Stdin { id, .. } => exec::stdin_body(id, chunk, session, ctx),
        Sink::Discard => {}
        Sink::Echo { upper } => basic::echo_body(*upper, chunk, out),
        Sink::Upload(upload) => return upload.take(chunk),
        Sink::Message { body, .. } => chat::collect(body, chunk),
    }
    false
}

/// A sink's collected bytes go to a worker (an upload's next batch, to be
/// appended and hashed); the body streams on when the job is back.
pub fn flush(sink: Sink) -> Next {
    match sink {
        Sink::Upload(upload) => upload::write_batch(upload),
        other => Next::Body(other),
    }
}

/// The body ended: finish the request.
pub fn end(
    sink: Sink,
    id: Option<&Number>,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) -> Next {
    match sink {
        Sink::Discard | Sink::Echo { .. } => {}
        Sink::Upload(upload) => return upload::finish_upload(*upload, id, out),
        Sink::Message { to, body, .. } => chat::deliver(to, body, id, session, out, ctx),
        Sink::Stdin { id, eof } => exec::stdin_end(id, eof, session, ctx),
    }
    Next::Done
}

/// Starts an `ok` reply for request `id`; add fields, then `finish()`.
pub fn ok<'a>(out: &'a mut Vec<u8>, id: Option<&Number>) -> HeaderWriter<'a> {
    HeaderWriter::new(out, "ok").opt("id", id)
}

/// Writes a whole `error` reply.
pub fn error(out: &mut Vec<u8>, id: Option<&Number>, code: Code, message: &str) {
    error_with(out, id, code, message).finish();
}

/// Starts an `error` reply that carries more fields; then `finish()`.
pub fn error_with<'a>(
    out: &'a mut Vec<u8>,
    id: Option<&Number>,
    code: Code,
    message: &str,
) -> HeaderWriter<'a> {
    HeaderWriter::new(out, "error")
        .opt("id", id)
        .field("code", code)
        .field("message", message)
}
