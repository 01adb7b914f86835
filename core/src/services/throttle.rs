//! The throttle of failed logins, per (client address, user name).
//!
//! After [`FREE_FAILURES`] failures, that pair is locked for a time that
//! doubles with each further failure, from [`BASE_LOCK`] up to
//! [`MAX_LOCK`]; failures are forgotten [`FORGET_AFTER`] after the last
//! one. How `login` uses it is told in `crate::handlers::auth`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

    pub(crate) fn fail(&mut self, ip: IpAddr, user: &str, now: Instant) {
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

    pub(crate) fn succeed(&mut self, ip: IpAddr, user: &str) {
        self.failures.remove(&(ip, user.to_string()));
    }
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
