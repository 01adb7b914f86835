//! `say`: chat between logged-in users. The message is collected (it is
//! small and bounded), made into one `msg` frame, and handed to the
//! reactor, which gives every recipient session a reference to that same
//! frame. Pushed output cannot be paused at its source, so recipients
//! that do not read are cut off by the output limits in [`crate::conn`],
//! and a `say` is refused while the server's buffers are under pressure.
//!
//! A `say` to a user who has no session open is refused with `not_found`
//! rather than answered `ok`: nothing is kept for later, so the sender
//! must learn that nobody got the message; who is online is counted in
//! [`crate::services::online`].

use serde_json::Number;

use skiff::frame::{Header, HeaderWriter};
use skiff::proto::Code;

use super::{Next, Session, Sink, error, ok};
use crate::buffer::SharedFrame;
use crate::ctx::Action;
use crate::ctx::Ctx;

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
    // Nothing is allocated for a body that has not arrived: a peer that
    // sends headers and no bodies must not make the server reserve
    // 64 KiB for each.
    Next::Body(Sink::Message {
        to: to.to_string(),
        body: Vec::new(),
    })
}

/// One piece of a message body. The buffer grows with what arrived
/// (doubling, so never more than twice that) and never past the largest
/// message.
pub fn collect(body: &mut Vec<u8>, chunk: &[u8]) {
    let needed = body.len() + chunk.len();
    if needed > body.capacity() {
        let target = needed
            .max(2 * body.capacity())
            .min((MAX_MESSAGE as usize).max(needed));
        body.reserve_exact(target - body.len());
    }
    body.extend_from_slice(chunk);
}

/// The message is complete: build its `msg` frame, hand it to the
/// reactor and confirm; or refuse it while the server's buffers are
/// under pressure.
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
    // The sender's own connection never gets its message, so it does
    // not count as a reader.
    let own = usize::from(session.user.as_deref() == Some(to.as_str()));
    if to != "*" && ctx.services.online.sessions(&to).saturating_sub(own) == 0 {
        error(
            out,
            id,
            Code::NotFound,
            &format!("nobody is logged in as {to}; the message was not sent"),
        );
        return;
    }
    let from = session.user.as_deref().unwrap_or_default();
    let mut frame = Vec::with_capacity(body.len() + 64);
    HeaderWriter::new(&mut frame, "msg")
        .field("from", from)
        .field("size", body.len())
        .finish();
    frame.extend_from_slice(&body);
    drop(body);
    // Recipients that do not read keep their references, so new messages
    // would pile up; under pressure (where every connection already
    // pauses early) the sender is asked to wait instead. The frame is
    // counted the moment it exists, so a burst of `say`s sees its own
    // earlier messages.
    let held = ctx.stats.buffered_total();
    if ctx.limits.under_pressure(held + frame.len()) {
        error(
            out,
            id,
            Code::TooBusy,
            &format!(
                "the server's buffers are under pressure ({held} bytes held, budget {}); \
                 the message was not sent, try again later",
                ctx.limits.out_total
            ),
        );
        return;
    }
    ctx.actions.push(Action::Say {
        from_key: session.key,
        to,
        frame: SharedFrame::new(frame, &ctx.stats.shared),
    });
    ok(out, id).finish();
}
