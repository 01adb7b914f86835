//! Sessions follow `skiffd user del` and `skiffd user passwd` while they
//! run: once a second the loop looks whether users.json changed (one
//! `stat` of the server's own file), and if so every logged-in session is
//! checked against the new list. A deleted user's sessions, and sessions
//! opened with a password that has since changed, are told why and
//! closed, taking their commands with them.

use std::time::Duration;

use super::Reactor;

/// How often users.json is looked at. Requests look at it too, so this
/// only bounds how long an idle session (a shell at its prompt, a long
/// command) outlives its account.
pub(super) const USERS_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Reactor {
    /// If it is time, rereads users.json when it changed and ends the
    /// sessions that lost their right to run.
    pub(super) fn check_users(&mut self) {
        let now = self.now;
        if now < self.users_check_at {
            return;
        }
        self.users_check_at = now + USERS_CHECK_EVERY;
        if !self.services.reload_users_if_changed() {
            return;
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for k in keys {
            let protocol = &mut self.clients[k].protocol;
            if let Some(c) = protocol.framed() {
                c.recheck_login(&self.services.users);
            }
            if let Some(f) = protocol.ftp() {
                f.session.recheck_login(&self.services.users);
            }
            self.drive(k);
        }
    }
}
