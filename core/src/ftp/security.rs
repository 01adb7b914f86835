//! Explicit FTPS (RFC 4217): `AUTH TLS`, `PBSZ`, `PROT`, and what
//! `--ftp-require-tls` refuses. The session only decides; the reactor
//! owns TLS:
//!
//! ```text
//!   AUTH TLS ─▶ 234, then nothing more is read and what was read after
//!               the command is discarded (a client cannot pipeline plain
//!               commands behind it to run inside the TLS session);
//!               wants_control_tls() once the 234 is flushed ─▶ the
//!               reactor puts TLS under the control socket and calls
//!               handle_control_tls_started()
//!   PBSZ 0   ─▶ 200 PBSZ=0         (after AUTH)
//!   PROT P   ─▶ 200; data connections accepted from now on are TLS
//!               (data_private()), a RETR is read by workers a chunk at
//!               a time and encrypted on the loop: no sendfile
//!   PROT C   ─▶ 200 (534 when TLS is required)
//! ```

use super::command::Verb;
use super::session::FtpSession;

/// Where the control connection is with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum ControlTls {
    /// Clear text.
    #[default]
    Plain,
    /// `234` was queued: once it is written, the reactor starts TLS.
    Starting,
    /// TLS is under the control connection.
    On,
}

/// A session's TLS settings.
#[derive(Debug, Default)]
pub(super) struct Security {
    /// The server has a certificate for this listener: `AUTH TLS` works.
    pub(super) offered: bool,
    /// `--ftp-require-tls`: no login and no clear data before TLS.
    pub(super) required: bool,
    pub(super) control: ControlTls,
    /// `PBSZ` was given (after `AUTH`).
    pub(super) pbsz: bool,
    /// `PROT P`: data connections are TLS.
    pub(super) private: bool,
}

impl FtpSession {
    /// Lets this session's client ask for TLS (`AUTH TLS`); with
    /// `required`, it must before it logs in or moves data.
    pub fn offer_tls(&mut self, required: bool) {
        self.security.offered = true;
        self.security.required = required;
    }

    /// The reactor should start TLS on the control connection now: `AUTH
    /// TLS` was answered and its `234` has been written.
    pub fn wants_control_tls(&self) -> bool {
        self.security.control == ControlTls::Starting && self.replies_flushed()
    }

    /// TLS is now under the control connection: what comes next is read
    /// through it.
    pub fn handle_control_tls_started(&mut self) {
        if self.security.control == ControlTls::Starting {
            self.security.control = ControlTls::On;
        }
    }

    /// Whether the control connection waits for its TLS to start (nothing
    /// is read or handled meanwhile).
    pub(super) fn tls_starting(&self) -> bool {
        self.security.control == ControlTls::Starting
    }

    /// Whether a data connection accepted now must speak TLS (`PROT P`).
    pub fn data_private(&self) -> bool {
        self.security.private
    }

    /// What `--ftp-require-tls` refuses, before the command runs: a login
    /// in clear text, and data in clear text. True if it refused.
    pub(super) fn refused_by_policy(&mut self, verb: Verb) -> bool {
        if !self.security.required {
            return false;
        }
        match verb {
            Verb::User | Verb::Pass if self.security.control != ControlTls::On => {
                self.reply(
                    530,
                    "This server requires TLS: send AUTH TLS before logging in.",
                );
                true
            }
            Verb::List | Verb::Nlst | Verb::Mlsd | Verb::Retr | Verb::Stor | Verb::Appe
                if !self.security.private =>
            {
                self.reply(
                    521,
                    "This server requires protected data connections: send PBSZ 0 and PROT P.",
                );
                true
            }
            _ => false,
        }
    }

    /// `AUTH TLS` (`AUTH SSL` and `AUTH TLS-C` are the same here).
    pub(super) fn auth(&mut self, arg: &str) {
        if !self.security.offered {
            self.reply(502, "TLS is not available on this port.");
            return;
        }
        if !matches!(arg.to_ascii_uppercase().as_str(), "TLS" | "TLS-C" | "SSL") {
            self.reply(504, "AUTH TLS only.");
            return;
        }
        if self.security.control != ControlTls::Plain {
            self.reply(503, "TLS is already on.");
            return;
        }
        if self.session.user.is_some() {
            self.reply(503, "AUTH TLS must come before logging in.");
            return;
        }
        self.reply(234, "AUTH TLS ok: start the TLS handshake.");
        self.security.control = ControlTls::Starting;
        // A half-given login does not carry over into the TLS session.
        self.user_name = None;
        // Whatever the client sent behind AUTH in clear text is dropped,
        // never run: else an attacker on the path could add commands that
        // the server would take as coming through TLS.
        self.discard_input();
    }

    /// `PBSZ`: the buffer size is 0 for TLS (RFC 4217 §8).
    pub(super) fn pbsz(&mut self, arg: &str) {
        if self.security.control != ControlTls::On {
            self.reply(503, "PBSZ needs AUTH TLS first.");
            return;
        }
        if arg.trim().parse::<u64>().is_err() {
            self.reply(501, "PBSZ needs a number (0).");
            return;
        }
        self.security.pbsz = true;
        self.reply(200, "PBSZ=0");
    }

    /// `PROT P` or `PROT C`.
    pub(super) fn prot(&mut self, arg: &str) {
        if !self.security.pbsz {
            self.reply(503, "PROT needs AUTH TLS and PBSZ first.");
            return;
        }
        match arg.trim().to_ascii_uppercase().as_str() {
            "P" => {
                self.security.private = true;
                self.reply(200, "Protection level set to P: data connections use TLS.");
            }
            "C" if self.security.required => self.reply(
                534,
                "This server requires protected data connections (PROT P).",
            ),
            "C" => {
                self.security.private = false;
                self.reply(
                    200,
                    "Protection level set to C: data connections are clear.",
                );
            }
            "S" | "E" => self.reply(536, "PROT P or C only."),
            _ => self.reply(504, "PROT P or C only."),
        }
    }
}
