//! `exec`, `stdin` and `cancel`: the connection's side of remote
//! commands. Spawning, pipes and signals are the reactor's business (see
//! the server's `children` module); here a request is checked and turned into an
//! [`Action`], and the session remembers which ids are running, so a
//! `stdin` or `cancel` for an unknown id is refused at once.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Number, Value};

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Next, Session, Sink, error};
use crate::command::Spawn;
use crate::ctx::Action;
use crate::ctx::Ctx;
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
    let timeout = match timeout(header.fields.get("timeout"), ctx.limits.exec_max_time) {
        Ok(t) => t,
        Err(message) => return refuse(out, Code::BadRequest, &message),
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

/// The run time a request asks for: `timeout` in seconds, at most `max`
/// (also the default). Zero, negative, NaN, infinite and non-numbers are
/// refused rather than guessed at; a finite number above `max`, however
/// huge, is clamped to it, as docs/protocol.md promises.
///
/// The comparison happens in `f64`, before a `Duration` exists:
/// `Duration::from_secs_f64` panics on values it cannot hold (`1e300`),
/// and a panic here would end the server for every client.
fn timeout(value: Option<&Value>, max: Duration) -> Result<Duration, String> {
    let not_a_number = || "\"timeout\" must be a number of seconds".to_string();
    let as_sent = match value {
        None | Some(Value::Null) => return Ok(max),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(not_a_number()),
    };
    let secs = as_sent.as_f64().ok_or_else(not_a_number)?;
    if !secs.is_finite() || secs <= 0.0 {
        // The number as the client wrote it: `-1e300`, not 301 digits.
        return Err(format!(
            "\"timeout\" must be a positive, finite number of seconds, not {as_sent}"
        ));
    }
    if secs >= max.as_secs_f64() {
        return Ok(max);
    }
    // Below `max`, so finite, positive and in range: this cannot fail.
    Duration::try_from_secs_f64(secs).map_err(|e| format!("\"timeout\" {secs}: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: Duration = Duration::from_secs(3600);

    fn t(v: Value) -> Result<Duration, String> {
        timeout(Some(&v), MAX)
    }

    #[test]
    fn a_missing_or_null_timeout_is_the_cap() {
        assert_eq!(timeout(None, MAX), Ok(MAX));
        assert_eq!(t(Value::Null), Ok(MAX));
    }

    #[test]
    fn ordinary_timeouts_are_kept_to_the_nanosecond() {
        assert_eq!(t(json!(5)), Ok(Duration::from_secs(5)));
        assert_eq!(t(json!(0.25)), Ok(Duration::from_millis(250)));
        assert_eq!(t(json!(1e-9)), Ok(Duration::from_nanos(1)));
        assert_eq!(t(json!(3599.5)), Ok(Duration::from_millis(3_599_500)));
    }

    #[test]
    fn huge_finite_timeouts_are_clamped_not_a_panic() {
        for v in [
            json!(3600),
            json!(3600.000001),
            json!(1e300),
            json!(f64::MAX),
            json!(u64::MAX),
            json!(1.8446744073709552e19),
        ] {
            assert_eq!(t(v.clone()), Ok(MAX), "{v}");
        }
        // The cap itself may be anything an operator configured.
        let odd = Duration::new(u64::MAX, 999_999_999);
        assert_eq!(timeout(Some(&json!(1e300)), odd), Ok(odd));
        assert_eq!(timeout(Some(&json!(2)), odd), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn zero_negative_and_non_numbers_are_bad_requests() {
        for v in [
            json!(0),
            json!(0.0),
            json!(-0.0),
            json!(-1),
            json!(-1e300),
            json!(i64::MIN),
            json!("5"),
            json!(true),
            json!([1]),
            json!({"s": 1}),
        ] {
            let e = t(v.clone()).expect_err(&v.to_string());
            assert!(e.contains("\"timeout\""), "{e}");
        }
    }

    #[test]
    fn nan_and_infinity_are_bad_requests() {
        // JSON text cannot spell them, but a Number built in code could
        // hold them in some serde_json configurations; the check must not
        // rely on the parser.
        for secs in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let v = serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number);
            if v.is_null() {
                continue; // this serde_json refuses them already
            }
            assert!(t(v).is_err(), "{secs}");
        }
        let e = t(json!(-2.5)).unwrap_err();
        assert!(e.contains("-2.5"), "{e}");
        let e = t(json!(-1e300)).unwrap_err();
        assert!(e.len() < 80, "{e}");
    }
}
