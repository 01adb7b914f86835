//! `login`, and the throttling of repeated failures.
//!
//! The password check (argon2, tens of milliseconds) runs on a worker, and
//! so does the first login's walk of the user's home (see
//! [`crate::pool`]): the loop serves everyone else meanwhile. Unknown
//! users are checked against a dummy hash, so both kinds of failure cost
//! the same and read the same.
//!
//! Failures are counted per (client address, user name). After
//! [`FREE_FAILURES`] of them, that pair is locked for a time that doubles
//! with each further failure, from [`BASE_LOCK`] up to [`MAX_LOCK`]. A
//! login for a locked pair is answered at once with `too_busy`, `"reason":
//! "throttled"` and `retry_after` (seconds), without running the KDF: a
//! flood of guesses neither burns CPU nor gets a verdict. Attempts while
//! locked do not count as failures, so waiting out the lock always works,
//! and failures are forgotten [`FORGET_AFTER`] after the last one, so a
//! typo a week does not add up. Other users behind the same address (a
//! NAT, a shared host) are not affected by someone else's failures.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::Code;

use super::account::Account;
use super::{Job, Next, Session, error, ok};
use crate::conn::Ctx;
use crate::pool::Lane;

/// Failures for one (address, user) before logins for it are locked.
pub const FREE_FAILURES: u32 = 3;
/// Failures are forgotten this long after the last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(900);
/// The first lock; it doubles with each further failure.
pub const BASE_LOCK: Duration = Duration::from_secs(1);
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(60);
/// Pairs remembered at most; beyond, forgotten ones are dropped first.
const MAX_TRACKED: usize = 100_000;

/// Login failures per (client address, user name).
#[derive(Debug, Default)]
pub struct Throttle {
    /// (failures, time of the last one) by address and user.
    failures: HashMap<(IpAddr, String), (u32, Instant)>,
}

impl Throttle {
    /// How much longer logins as `user` from `ip` are locked (zero: not).
    pub fn locked_for(&self, ip: IpAddr, user: &str, now: Instant) -> Duration {
        match self.failures.get(&(ip, user.to_string())) {
            Some(&(n, last)) if n >= FREE_FAILURES => {
                let doublings = (n - FREE_FAILURES).min(16);
                let lock = BASE_LOCK.saturating_mul(1 << doublings).min(MAX_LOCK);
                (last + lock).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Counts a failed login as `user` from `ip`.
    pub fn fail(&mut self, ip: IpAddr, user: &str, now: Instant) {
        if self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        if self.failures.len() >= MAX_TRACKED {
            return; // a flood of names: forget rather than grow
        }
        let e = self
            .failures
            .entry((ip, user.to_string()))
            .or_insert((0, now));
        if now.duration_since(e.1) >= FORGET_AFTER {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    /// Forgets the failures of `user` from `ip` (they logged in).
    pub fn succeed(&mut self, ip: IpAddr, user: &str) {
        self.failures.remove(&(ip, user.to_string()));
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_after_free_failures_per_address_and_user() {
        let mut t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.locked_for(ip, "demo", now), Duration::ZERO);
            t.fail(ip, "demo", now);
        }
        assert_eq!(t.locked_for(ip, "demo", now), BASE_LOCK);
        t.fail(ip, "demo", now);
        assert_eq!(t.locked_for(ip, "demo", now), BASE_LOCK * 2);
        for _ in 0..40 {
            t.fail(ip, "demo", now);
        }
        assert_eq!(t.locked_for(ip, "demo", now), MAX_LOCK);
        // The lock runs out by itself.
        assert_eq!(t.locked_for(ip, "demo", now + MAX_LOCK), Duration::ZERO);
        // Another user on the same address, and the same user elsewhere,
        // are not affected.
        assert_eq!(t.locked_for(ip, "bob", now), Duration::ZERO);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.locked_for(other, "demo", now), Duration::ZERO);
        t.succeed(ip, "demo");
        assert_eq!(t.locked_for(ip, "demo", now), Duration::ZERO);
    }

    #[test]
    fn rare_failures_never_add_up_to_a_lock() {
        let mut t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut now = Instant::now();
        for _ in 0..20 {
            assert_eq!(t.locked_for(ip, "demo", now), Duration::ZERO);
            t.fail(ip, "demo", now);
            now += FORGET_AFTER;
        }
    }
}
