//! Who is online: how many sessions each user has open, so `say` can
//! tell when nobody will read a message. A session's [`Presence`] counts
//! from its login until it is dropped, which happens when the reactor
//! removes the connection, so no close has to be reported to the core.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

/// How many sessions each user has open now.
#[derive(Debug, Default)]
pub struct Online {
    /// Open sessions per user name; shared with each session's [`Presence`].
    counts: HashMap<String, Rc<Cell<usize>>>,
}

impl Online {
    /// Counts a new session of `user`, for as long as the result lives.
    pub fn enter(&mut self, user: &str) -> Presence {
        let count = self.counts.entry(user.to_string()).or_default().clone();
        count.set(count.get() + 1);
        Presence(count)
    }

    /// How many sessions `user` has open.
    pub fn sessions(&self, user: &str) -> usize {
        self.counts.get(user).map_or(0, |c| c.get())
    }
}

/// One session's place in [`Online`]: it counts while it lives, and
/// leaves the count when dropped (a new login, or the connection gone).
#[derive(Debug)]
pub struct Presence(Rc<Cell<usize>>);

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_counts_while_it_lives() {
        let mut online = Online::default();
        assert_eq!(online.sessions("bob"), 0);
        let first = online.enter("bob");
        let second = online.enter("bob");
        let alice = online.enter("alice");
        assert_eq!((online.sessions("bob"), online.sessions("alice")), (2, 1));
        drop(first);
        assert_eq!(online.sessions("bob"), 1);
        drop(second);
        drop(alice);
        assert_eq!((online.sessions("bob"), online.sessions("alice")), (0, 0));
    }
}
