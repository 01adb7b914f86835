//! Graceful shutdown: the first SIGINT or SIGTERM stops accepting, ends
//! running commands and lets every client flush within
//! `--shutdown-grace`; a second one exits at once.

use std::cmp::Reverse;

use log::{info, warn};

use super::Reactor;
use super::listeners::Listener;

impl Reactor {
    /// The first SIGINT or SIGTERM starts a graceful shutdown; a second one
    /// exits at once.
    pub(super) fn on_signal(&mut self) {
        let got: Vec<i32> = self.signals.pending().collect();
        if got.is_empty() {
            return;
        }
        if self.shutdown_by.is_some() {
            warn!("second signal: exiting now");
            std::process::exit(0);
        }
        info!(
            "signal {}: shutting down (no new connections; flushing {} clients, at most {:?})",
            got[0],
            self.clients.len(),
            self.config.shutdown_grace
        );
        self.shutdown_by = Some(self.now + self.config.shutdown_grace);
        for slot in &mut self.listeners {
            if let Some(mut l) = slot.take() {
                let _ = self.poll.registry().deregister(l.source());
                if let Listener::FramedUnix(_, path) = &l {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let now = self.now;
        for (ck, ch) in self.children.iter_mut() {
            ch.terminate(now, "server shutting down");
            self.child_timers.push(Reverse((ch.next_wakeup(), ck)));
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.clients[k].protocol.engine_mut().shut_down();
            self.drive(k);
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        for l in self.listeners.iter().flatten() {
            if let Listener::FramedUnix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
