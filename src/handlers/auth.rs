//! `login`, and the throttling of repeated failures.
//!
//! A password check runs the slow KDF on the loop thread (a few ms, see
//! [`crate::users`]). Unknown users are checked against a dummy hash, so
//! both kinds of failure cost the same and read the same.
//!
//! After [`FREE_FAILURES`] failures from one address, each further attempt
//! from it is answered `auth_failed` only after a delay that doubles per
//! failure, and without running the KDF at all, so a flood of guesses can
//! neither burn the loop's CPU nor go fast. The delay is a timer on the
//! connection (a held reply), never a `sleep`: everyone else is served
//! meanwhile.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};

use skiff::frame::Header;
use skiff::proto::Code;

use super::files::{Account, Job};
use super::{Next, Session, error, ok};
use crate::conn::Ctx;

/// Failures from one address before replies start being held back.
pub const FREE_FAILURES: u32 = 3;
/// Failures are forgotten after this long without another.
const WINDOW: Duration = Duration::from_secs(600);
/// The first hold-back; it doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest hold-back.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Addresses remembered at most; beyond, stale ones are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// Login failures per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    /// (failures, time of the last one) by address.
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl Throttle {
    /// How long a reply to `ip` is held back now.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        match self.failures.get(&ip) {
            Some(&(n, last)) if n >= FREE_FAILURES && now.duration_since(last) < WINDOW => {
                let doublings = (n - FREE_FAILURES).min(16);
                (BASE_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn fail(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, last)| now.duration_since(*last) < WINDOW);
        }
        let e = self.failures.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    fn succeed(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
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
    let held = session
        .peer
        .map_or(Duration::ZERO, |ip| ctx.services.throttle.delay(ip, now));
    let services = &mut *ctx.services;
    services.reload_users_if_changed();
    let verified = if held > Duration::ZERO {
        None // throttled: answer without spending the KDF
    } else {
        services
            .users
            .verify(user, password)
            .map(|r| (r.quota, r.exec))
    };
    let Some((quota, exec)) = verified else {
        if let Some(ip) = session.peer {
            services.throttle.fail(ip, now);
        }
        warn!(
            "login failed for {user:?} from {}",
            session
                .peer
                .map_or("unix socket".into(), |ip| ip.to_string())
        );
        let mut reply = Vec::new();
        error(&mut reply, id, Code::AuthFailed, FAILED);
        let delay = session
            .peer
            .map_or(Duration::ZERO, |ip| services.throttle.delay(ip, now));
        if delay.is_zero() {
            out.extend_from_slice(&reply);
            return Next::Done;
        }
        return Next::Busy(Job::Delay {
            until: now + delay,
            reply,
        });
    };
    if let Some(ip) = session.peer {
        services.throttle.succeed(ip);
    }
    let account = match services.accounts.get(user) {
        Some(a) => {
            a.borrow_mut().quota = quota;
            a.clone()
        }
        None => match Account::open(&services.data_dir, user, quota) {
            Ok(a) => {
                let a = Rc::new(RefCell::new(a));
                services.accounts.insert(user.to_string(), a.clone());
                a
            }
            Err(e) => {
                error(out, id, Code::Io, &format!("cannot open your home: {e}"));
                return Next::Done;
            }
        },
    };
    info!("conn {}: user {user} logged in", session.key);
    session.user = Some(user.to_string());
    session.cwd = "/".into();
    session.exec = exec;
    session.upload = None;
    let used = account.borrow().used;
    session.account = Some(account);
    ok(out, id)
        .field("user", user)
        .field("cwd", "/")
        .field("quota", quota)
        .field("used", used)
        .finish();
    Next::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_after_free_failures_and_resets() {
        let mut t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.delay(ip, now), Duration::ZERO);
            t.fail(ip, now);
        }
        assert_eq!(t.delay(ip, now), BASE_DELAY);
        t.fail(ip, now);
        assert_eq!(t.delay(ip, now), BASE_DELAY * 2);
        for _ in 0..40 {
            t.fail(ip, now);
        }
        assert_eq!(t.delay(ip, now), MAX_DELAY);
        assert_eq!(t.delay(ip, now + WINDOW), Duration::ZERO);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.delay(other, now), Duration::ZERO);
        t.succeed(ip);
        assert_eq!(t.delay(ip, now), Duration::ZERO);
    }
}
