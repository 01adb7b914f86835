//! `login`, and the throttling of repeated failures.
//!
//! The password check (argon2, tens of milliseconds) runs on a worker, and
//! so does the first login's walk of the user's home (see
//! [`crate::pool`]): the loop serves everyone else meanwhile. Unknown
//! users are checked against a dummy hash, so both kinds of failure cost
//! the same and read the same.
//!
//! Failures are counted per (client address, user name) by
//! [`crate::services::throttle`]: after a few of them, that pair is locked
//! for a time that doubles with each further failure. A login for a
//! locked pair is answered at once with `too_busy`, `"reason":
//! "throttled"` and `retry_after` (seconds), without running the KDF: a
//! flood of guesses neither burns CPU nor gets a verdict. Attempts while
//! locked do not count as failures, so waiting out the lock always works,
//! and failures are forgotten a while after the last one, so a
//! typo a week does not add up. Other users behind the same address (a
//! NAT, a shared host) are not affected by someone else's failures.

use std::cell::RefCell;
use std::rc::Rc;

use log::{info, warn};
use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Job, Next, Session, error, ok};
use crate::ctx::Ctx;
use crate::pool::Lane;
use crate::services::account::Account;

const FAILED: &str = "unknown user or wrong password";

/// `login` with `user` and `password`.
pub fn login(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    let (Some(user), Some(password)) = (header.str("user"), header.str("password")) else {
        error(
            out,
            id,
            Code::BadRequest,
            "login needs \"user\" and \"password\" strings",
        );
        return Next::Done;
    };
    let now = ctx.now;
    if let Some(ip) = session.peer {
        let wait = ctx.services.throttle.locked_for(ip, user, now);
        if !wait.is_zero() {
            // Whole seconds, rounded up, so that waiting that long works.
            let secs = wait.as_millis().div_ceil(1000);
            let message = format!("too many failed logins for {user} from {ip}; retry in {secs} s");
            super::error_with(out, id, Code::TooBusy, &message)
                .field("reason", "throttled")
                .field("retry_after", secs)
                .finish();
            return Next::Done;
        }
    }
    let services = &mut *ctx.services;
    services.reload_users_if_changed();
    let record = services
        .users
        .get(user)
        .map(|r| (r.hash.clone(), r.quota, r.exec));
    let hash = record.as_ref().map(|r| r.0.clone());
    let password = password.to_string();
    let user = user.to_string();
    let checked = hash.clone();
    Next::Job(Job::new(
        "login",
        Lane::Quick,
        move || crate::users::check_password(&password, checked.as_deref()),
        move |matches, id, session, out, ctx| match record {
            Some((_, quota, exec)) if matches => {
                if let Some(ip) = session.peer {
                    ctx.services.throttle.succeed(ip, &user);
                }
                session.login_hash = hash.map(String::into_boxed_str);
                open_account(user, quota, exec, id, session, out, ctx)
            }
            _ => {
                if let Some(ip) = session.peer {
                    ctx.services.throttle.fail(ip, &user, ctx.now);
                }
                warn!(
                    "login failed for {user:?} from {}",
                    session
                        .peer
                        .map_or("unix socket".into(), |ip| ip.to_string())
                );
                error(out, id, Code::AuthFailed, FAILED);
                Next::Done
            }
        },
    ))
}

/// The password was right: find the user's account, or open it on a
/// worker (it walks the home to measure it), then finish the login.
/// The session is counted as its user's from then on (replacing an
/// earlier login's presence takes it off that user's count).
fn open_account(
    user: String,
    quota: Option<u64>,
    exec: bool,
    id: Option<&Number>,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) -> Next {
    if let Some(a) = ctx.services.accounts.get(&user) {
        a.borrow_mut().quota = quota;
        let account = a.clone();
        session.presence = Some(ctx.services.online.enter(&user));
        return logged_in(user, quota, exec, account, id, session, out);
    }
    let data_dir = ctx.services.data_dir.clone();
    let name = user.clone();
    Next::Job(Job::new(
        "open-home",
        Lane::Bulk,
        move || Account::open(&data_dir, &name, quota),
        move |opened, id, session, out, ctx| {
            let account = match adopt_account(&mut ctx.services.accounts, &user, opened) {
                Ok(a) => a,
                Err(e) => {
                    error(out, id, Code::Io, &format!("cannot open your home: {e}"));
                    return Next::Done;
                }
            };
            session.presence = Some(ctx.services.online.enter(&user));
            logged_in(user, quota, exec, account, id, session, out)
        },
    ))
}

/// The account a worker opened for `user` (see [`Account::open`]), now
/// shared by all their sessions; or the one another session of the same
/// user opened first meanwhile.
pub fn adopt_account(
    accounts: &mut std::collections::HashMap<String, Rc<RefCell<Account>>>,
    user: &str,
    opened: std::io::Result<Account>,
) -> std::io::Result<Rc<RefCell<Account>>> {
    if let Some(a) = accounts.get(user) {
        return Ok(a.clone());
    }
    let a = Rc::new(RefCell::new(opened?));
    accounts.insert(user.to_string(), a.clone());
    Ok(a)
}

/// Why a logged-in session may no longer run anything: its user was
/// deleted, or its password changed since the login (whoever changed it
/// meant to shut the old holders of the password out). None if it may.
pub fn revoked(session: &Session, users: &crate::users::UserDb) -> Option<&'static str> {
    let user = session.user.as_deref()?;
    match users.get(user) {
        None => Some("your account was deleted"),
        Some(record) if session.login_hash.as_deref() != Some(record.hash.as_str()) => {
            Some("your password was changed; log in again")
        }
        Some(_) => None,
    }
}

fn logged_in(
    user: String,
    quota: Option<u64>,
    exec: bool,
    account: Rc<RefCell<Account>>,
    id: Option<&Number>,
    session: &mut Session,
    out: &mut Vec<u8>,
) -> Next {
    info!("conn {}: user {user} logged in", session.key);
    session.cwd = "/".into();
    session.exec = exec;
    session.upload = None;
    let used = account.borrow().used;
    session.account = Some(account);
    ok(out, id)
        .field("user", &user)
        .field("cwd", "/")
        .field("quota", quota)
        .field("used", used)
        .finish();
    session.user = Some(user);
    Next::Done
}
