//! `exec`, `stdin` and `cancel`: the connection's side of remote
//! commands. Spawning, pipes and signals are the reactor's business (see
//! `crate::children`); here a request is checked and turned into an
//! [`Action`], and the session remembers which ids are running, so a
//! `stdin` or `cancel` for an unknown id is refused at once.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Number, Value};

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Action, Next, Session, Sink, error};
use crate::children::Spawn;
use crate::conn::Ctx;
use crate::jail;

/// `exec` with `cmd` and an optional `timeout` in seconds.
pub fn exec(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    let refuse = |out: &mut Vec<u8>, code, message: &str| {
        error(out, id, code, message);
        Next::Done
    };
    if !session.exec {
        return refuse(out, Code::Forbidden, "you may not run commands");
    }
    let Some(id) = header.id.clone() else {
        return refuse(
            out,
            Code::BadRequest,
            "exec needs an integer \"id\": its frames carry it",
        );
    };
    let Some(cmd) = header.str("cmd") else {
        return refuse(out, Code::BadRequest, "exec needs \"cmd\", a string");
    };
    let max = ctx.limits.exec_max_time;
    let timeout = match header.fields.get("timeout") {
        None | Some(Value::Null) => max,
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => Duration::from_secs_f64(t).min(max),
            _ => {
                return refuse(
                    out,
                    Code::BadRequest,
                    "\"timeout\" must be a positive number of seconds",
                );
            }
        },
    };
    if session.running.contains(&id) {
        return refuse(
            out,
            Code::BadRequest,
            &format!("a command with id {id} is still running"),
        );
    }
    if session.running.len() >= ctx.limits.exec_per_conn {
        let n = ctx.limits.exec_per_conn;
        return refuse(
            out,
            Code::TooBusy,
            &format!("at most {n} commands per connection"),
        );
    }
    let user = session.user.clone().unwrap_or_default();
    let home = crate::users::UserDb::home(&ctx.services.data_dir, &user);
    let cwd: PathBuf = home.join(jail::relative(&session.cwd));
    session.running.push(id.clone());
    ctx.actions.push(Action::Spawn(Spawn {
        conn: session.key,
        id,
        cmd: cmd.to_string(),
        cwd,
        home,
        user,
        timeout,
    }));
    Next::Done
}

fn running_id(header: &Header, session: &Session) -> Result<Number, (Code, String)> {
    let id = header.id.clone().ok_or((
        Code::BadRequest,
        format!("{} needs the \"id\" of a running exec", header.op),
    ))?;
    if !session.running.contains(&id) {
        return Err((Code::NotFound, format!("no running command with id {id}")));
    }
    Ok(id)
}

/// `stdin` with a body, or `eof: true`: feeds a running command.
pub fn stdin(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    match running_id(header, session) {
        Err((code, message)) => {
            error(out, header.id.as_ref(), code, &message);
            Next::Done
        }
        Ok(id) => {
            let eof = header.flag("eof");
            if header.size == 0 {
                stdin_end(id, eof, session, ctx);
                return Next::Done;
            }
            Next::Body(Sink::Stdin { id, eof })
        }
    }
}

/// One piece of a `stdin` body.
pub fn stdin_body(id: &Number, chunk: &[u8], session: &Session, ctx: &mut Ctx) {
    ctx.actions.push(Action::Stdin {
        conn: session.key,
        id: id.clone(),
        bytes: chunk.to_vec(),
        eof: false,
    });
}

/// The end of a `stdin` body.
pub fn stdin_end(id: Number, eof: bool, session: &Session, ctx: &mut Ctx) {
    if eof {
        ctx.actions.push(Action::Stdin {
            conn: session.key,
            id,
            bytes: Vec::new(),
            eof,
        });
    }
}

/// `cancel`: ends a running command; its `exit` frame is the answer.
pub fn cancel(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    match running_id(header, session) {
        Err((code, message)) => error(out, header.id.as_ref(), code, &message),
        Ok(id) => ctx.actions.push(Action::Cancel {
            conn: session.key,
            id,
        }),
    }
    Next::Done
}
