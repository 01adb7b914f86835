//! Request handlers, one module per service. A handler gets a parsed
//! header, the session and the output buffer; it writes its reply and says
//! what should happen to the request's body. Handlers never touch sockets
//! or `mio`: the connection and the reactor do that.

pub mod basic;
pub mod raw_echo;
pub mod udp;

use serde_json::Number;

use skiff::frame::{Header, HeaderWriter};
use skiff::proto::Code;

use crate::conn::Ctx;

/// Who is logged in on a connection, and where they are. Empty until the
/// file service adds logins.
#[derive(Debug, Default)]
pub struct Session {}

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
}

impl Sink {
    /// The state name for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Discard => "discard-body",
            Sink::Echo { .. } => "echo-body",
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
    /// Flush the reply, then close, for this reason.
    Close(&'static str),
}

/// Handles one request header, writing its reply (or the start of it).
pub fn request(header: Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    if header.bad_id {
        error(out, None, Code::BadRequest, "\"id\" must be an integer");
        return Next::Done;
    }
    match header.op.as_str() {
        "hello" => basic::hello(id, out),
        "echo" => basic::echo(&header, out),
        "bye" => {
            ok(out, id).finish();
            Next::Close("bye")
        }
        "stats" => basic::stats(id, out, ctx),
        op => {
            let _ = session;
            let op: String = op.chars().take(64).collect();
            error(out, id, Code::UnknownOp, &format!("unknown op {op:?}"));
            Next::Done
        }
    }
}

/// Passes one piece of a body to its sink.
pub fn body(sink: &mut Sink, chunk: &[u8], out: &mut Vec<u8>, _ctx: &mut Ctx) {
    match sink {
        Sink::Discard => {}
        Sink::Echo { upper } => basic::echo_body(*upper, chunk, out),
    }
}

/// The body ended: finish the request.
pub fn end(
    sink: Sink,
    _id: Option<&Number>,
    _session: &mut Session,
    _out: &mut Vec<u8>,
    _ctx: &mut Ctx,
) {
    match sink {
        Sink::Discard | Sink::Echo { .. } => {}
    }
}

/// Starts an `ok` reply for request `id`; add fields, then `finish()`.
pub fn ok<'a>(out: &'a mut Vec<u8>, id: Option<&Number>) -> HeaderWriter<'a> {
    HeaderWriter::new(out, "ok").opt("id", id)
}

/// Writes a whole `error` reply.
pub fn error(out: &mut Vec<u8>, id: Option<&Number>, code: Code, message: &str) {
    HeaderWriter::new(out, "error")
        .opt("id", id)
        .field("code", code)
        .field("message", message)
        .finish();
}
