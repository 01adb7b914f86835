//! `say`: chat between logged-in users. The message is collected (it is
//! small and bounded), then handed to the reactor, which pushes a `msg`
//! frame to every recipient session. Pushed output cannot be paused at its
//! source, so recipients that do not read are cut off by the output limits
//! in [`crate::conn`].

use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Action, Next, Session, Sink, error, ok};
use crate::conn::Ctx;

/// Longest message body, in bytes.
pub const MAX_MESSAGE: u64 = 64 * 1024;

/// `say` with `to` and a body.
pub fn say(header: &Header, out: &mut Vec<u8>) -> Next {
    let id = header.id.as_ref();
    let Some(to) = header.str("to") else {
        error(
            out,
            id,
            Code::BadRequest,
            "say needs \"to\": a user, or \"*\" for everyone",
        );
        return Next::Done;
    };
    if header.size > MAX_MESSAGE {
        error(
            out,
            id,
            Code::BadRequest,
            &format!("a message may have at most {MAX_MESSAGE} bytes"),
        );
        return Next::Done;
    }
    Next::Body(Sink::Message {
        to: to.to_string(),
        body: Vec::with_capacity(header.size as usize),
    })
}

/// The message is complete: hand it to the reactor and confirm.
pub fn deliver(
    to: String,
    body: Vec<u8>,
    id: Option<&Number>,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) {
    if to != "*" && ctx.services.users.get(&to).is_none() {
        error(out, id, Code::NotFound, &format!("no user {to:?}"));
        return;
    }
    let from = session.user.clone().unwrap_or_default();
    ctx.actions.push(Action::Say {
        from_key: session.key,
        from,
        to,
        body,
    });
    ok(out, id).finish();
}
