//! Actions the state machines hand out: spawns, stdin, cancels, and chat
//! messages, whose delivery to many sessions is spread over turns.

use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;

use super::Reactor;
use super::client::{Client, Protocol};
use crate::buffer::SharedFrame;
use crate::ctx::Action;

/// Most sessions `say`s reach per turn, all of them together: a message
/// to everyone is queued for a few hundred recipients, then the loop
/// serves other clients before it goes on.
const FANOUT_RECIPIENTS: usize = 256;
/// Most time `say`s spend reaching recipients per turn. Each recipient
/// reached is written to at once, and what a write costs is mostly the
/// kernel's: with recipients that do not read, a 64 KiB write measured
/// 0.1 to 0.7 ms (the loopback peer's queue is pruned inside the call),
/// so a count alone cannot bound the stall.
const FANOUT_TIME: Duration = Duration::from_millis(2);
/// Most connections looked at per turn while finding recipients.
const FANOUT_SCAN: usize = 16 << 10;

/// A `say` on its way to its recipients, at most a turn's fan-out
/// budget at a time.
pub(super) struct Broadcast {
    /// Slab key of the sender, who does not get its own message.
    from_key: usize,
    /// The recipient user, or `*`.
    to: String,
    /// The `msg` frame every recipient gets a reference to.
    frame: Rc<SharedFrame>,
    /// The next slab key to look at.
    next: usize,
    /// Sessions reached so far, for the log.
    reached: usize,
}

impl Reactor {
    /// Carries out what the state machines asked for this turn, and a
    /// turn's share of delivering `say`s.
    pub(super) fn run_actions(&mut self) {
        self.run_pending_actions();
        self.fan_out();
        // The recipients' turns may have asked for more.
        self.run_pending_actions();
    }

    pub(super) fn run_pending_actions(&mut self) {
        // In order: stdin pieces must reach the child as they were sent.
        while !self.actions.is_empty() {
            for action in std::mem::take(&mut self.actions) {
                self.run_action(action);
            }
        }
    }

    /// Queues pending `say`s for their recipients, within the turn's
    /// budget ([`FANOUT_RECIPIENTS`], [`FANOUT_TIME`], [`FANOUT_SCAN`]),
    /// oldest first, so each recipient gets messages in the order they
    /// were sent. Every recipient holds a reference to the same frame,
    /// and is given its turn at once, which writes what its socket takes.
    pub(super) fn fan_out(&mut self) {
        let started = Instant::now();
        let (mut reached, mut looked) = (0, 0);
        while reached < FANOUT_RECIPIENTS && looked < FANOUT_SCAN {
            let Some(b) = self.broadcasts.front_mut() else {
                break;
            };
            if b.next >= self.clients.capacity() {
                debug!("say to {}: {} sessions", b.to, b.reached);
                self.broadcasts.pop_front();
                continue;
            }
            let k = b.next;
            b.next += 1;
            looked += 1;
            let Some(Client {
                protocol: Protocol::Framed(c),
                ..
            }) = self.clients.get_mut(k)
            else {
                continue;
            };
            let wanted = k != b.from_key && c.user().is_some_and(|u| b.to == "*" || u == b.to);
            if !wanted {
                continue;
            }
            c.push_message(&b.frame, self.now, &self.config.limits);
            b.reached += 1;
            reached += 1;
            self.drive(k);
            if started.elapsed() >= FANOUT_TIME {
                break;
            }
        }
    }

    pub(super) fn run_action(&mut self, action: Action) {
        {
            match action {
                Action::Say {
                    from_key,
                    to,
                    frame,
                } => self.broadcasts.push_back(Broadcast {
                    from_key,
                    to,
                    frame,
                    next: 0,
                    reached: 0,
                }),
                Action::Spawn(req) => self.spawn(req),
                Action::Stdin {
                    conn,
                    id,
                    bytes,
                    eof,
                } => self.feed_stdin(conn, &id, &bytes, eof),
                Action::Cancel { conn, id } => self.cancel_command(conn, &id),
            }
        }
    }
}
