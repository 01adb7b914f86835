//! What the shell must remember to rebuild its session on a new
//! connection: where the server is, who is logged in, and where they were.

use skiff::client::Client;

use crate::cmd::{self, CmdError};
use crate::files;

/// The shell's session, as far as a fresh connection has to restore it.
#[derive(Clone)]
pub struct Session {
    /// Where the framed server is.
    pub addr: String,
    /// User and password of the last successful login, to log in again
    /// after a redial.
    pub login: Option<(String, String)>,
    /// The session's current directory, as the server last reported it.
    pub cwd: String,
}

impl Session {
    /// Dials a new connection and restores the login and the cwd on it.
    /// `notice` gets what a person should know (that we logged in again,
    /// or could not return to the cwd) and pushed messages.
    pub fn redial(&mut self, notice: &mut dyn FnMut(String)) -> Result<Client, CmdError> {
        let mut client = cmd::connect(&self.addr)?;
        let Some((user, password)) = &self.login else {
            notice("reconnected".into());
            return Ok(client);
        };
        let mut push = |f| notice(files::push_text(&f));
        if let Err(e) = files::login(&mut client, user, password, &mut push) {
            if e.code() == "auth_failed" {
                // The password changed: asking again is the user's call.
                self.login = None;
                self.cwd = "/".into();
            }
            return Err(e);
        }
        let mut said = format!("reconnected; logged in again as {user}");
        if self.cwd != "/" {
            match files::cd(&mut client, &self.cwd, &mut push) {
                Ok(cwd) => self.cwd = cwd,
                Err(e) => {
                    said += &format!("\nwarning: cannot return to {}: {e}", self.cwd);
                    self.cwd = "/".into();
                }
            }
        }
        notice(said);
        Ok(client)
    }

    /// `user:cwd> ` after a login, `skiff> ` before.
    pub fn prompt(&self) -> String {
        match &self.login {
            Some((user, _)) => format!("{user}:{}> ", self.cwd),
            None => "skiff> ".to_string(),
        }
    }
}
