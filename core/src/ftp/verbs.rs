//! What each FTP command does: the dispatch, and the commands that only
//! answer (settings, `STAT`, `HELP`). Login is in [`super::login`], the
//! commands on files and directories in [`super::files`], the ones that
//! use the data connection in [`super::retr_stor`]. Everything that
//! touches the disk is a job (see [`super::session::job`]); every path
//! goes through the jail ([`crate::jail::resolve`], then the home's `Dir`).

use super::command::{Command, VERBS, Verb};
use super::listing::Format;
use super::session::FtpSession;
use super::store::Start;
use crate::ctx::Ctx;

const FEATURES: &[&str] = &[
    "EPSV",
    "PASV",
    "MDTM",
    "SIZE",
    "REST STREAM",
    "TVFS",
    "UTF8",
    "MLST type*;size*;modify*;perm*;unique*;",
    "HASH MD5*",
    "XMD5",
    "AUTH TLS",
    "PBSZ",
    "PROT",
];

impl FtpSession {
    /// Handles one command.
    pub(super) fn command(&mut self, cmd: Command, ctx: &mut Ctx) {
        let Command { verb, arg } = cmd;
        if self.session.user.is_none() && !verb.before_login() {
            self.reply(530, "Please log in with USER and PASS.");
            return;
        }
        if self.refused_by_policy(verb) {
            return;
        }
        // RNTO must come right after RNFR.
        let rename_from = self.rename_from.take();
        match verb {
            Verb::User => self.user_verb(arg),
            Verb::Pass => self.pass(arg, ctx),
            Verb::Acct => self.reply(202, "ACCT is not needed."),
            Verb::Syst => self.reply(215, "UNIX Type: L8"),
            Verb::Feat => self.reply_multi(211, "Features:", FEATURES, "End"),
            Verb::Opts => self.opts(&arg),
            Verb::Pwd => {
                let text = format!(
                    "{} is the current directory",
                    super::reply::quoted(&self.session.cwd)
                );
                self.reply(257, &text);
            }
            Verb::Cwd => self.cwd(&arg, ctx),
            Verb::Cdup => self.cwd("..", ctx),
            Verb::Type => match arg.to_ascii_uppercase().as_str() {
                "A" | "A N" => {
                    self.reply(200, "Switching to ASCII mode (files are sent as they are).")
                }
                "I" | "L 8" => self.reply(200, "Switching to Binary mode."),
                _ => self.reply(504, "TYPE A or I only."),
            },
            Verb::Mode => match arg.to_ascii_uppercase().as_str() {
                "S" => self.reply(200, "Mode set to S."),
                _ => self.reply(504, "MODE S only."),
            },
            Verb::Stru => match arg.to_ascii_uppercase().as_str() {
                "F" => self.reply(200, "Structure set to F."),
                _ => self.reply(504, "STRU F only."),
            },
            Verb::Pasv if self.epsv_all => self.reply(501, "PASV is refused after EPSV ALL."),
            Verb::Pasv => self.listen(false),
            Verb::Epsv => match arg.to_ascii_uppercase().as_str() {
                "ALL" => {
                    self.epsv_all = true;
                    self.reply(200, "EPSV ALL ok.");
                }
                "" | "1" | "2" => self.listen(true),
                _ => self.reply(522, "Network protocol not supported, use (1,2)"),
            },
            Verb::Port | Verb::Eprt => self.reply(502, "Active mode is off; use PASV or EPSV."),
            Verb::List => self.list(&arg, Format::Long, ctx),
            Verb::Nlst => self.list(&arg, Format::Names, ctx),
            Verb::Mlsd => self.list(&arg, Format::Facts, ctx),
            Verb::Mlst => self.mlst(&arg, ctx),
            Verb::Size => self.size(&arg, ctx),
            Verb::Mdtm => self.mdtm(&arg, ctx),
            Verb::Rest => self.rest_verb(&arg),
            Verb::Retr => self.retr(&arg, ctx),
            Verb::Stor => {
                let start = match std::mem::take(&mut self.rest) {
                    0 => Start::Fresh,
                    n => Start::At(n),
                };
                self.store(&arg, start, ctx);
            }
            Verb::Appe => {
                self.rest = 0;
                self.store(&arg, Start::Append, ctx);
            }
            Verb::Stou => self.reply(502, "STOU is not supported; name the file with STOR."),
            Verb::Dele => self.dele(&arg, ctx),
            Verb::Mkd => self.mkd(&arg, ctx),
            Verb::Rmd => self.rmd(&arg, ctx),
            Verb::Rnfr => self.rnfr(&arg, ctx),
            Verb::Rnto => match rename_from {
                Some(from) => self.rnto(from, &arg, ctx),
                None => self.reply(503, "RNFR required first."),
            },
            Verb::Allo => self.allo(&arg, ctx),
            Verb::Stat => self.stat(&arg),
            Verb::Help => {
                let mut names: Vec<&str> = VERBS.iter().map(|(n, _)| *n).collect();
                names.sort_unstable();
                let lines: Vec<String> = names.chunks(10).map(|c| c.join(" ")).collect();
                self.reply_multi(
                    214,
                    "The following commands are recognized.",
                    &lines,
                    "Help OK.",
                );
            }
            Verb::Noop => self.reply(200, "NOOP ok."),
            Verb::Abor => self.abort(ctx),
            Verb::Quit => {
                if self.data.busy() {
                    self.quit_when_done();
                } else {
                    self.reply(221, "Goodbye.");
                    self.close("quit");
                }
            }
            Verb::Hash => self.hash(&arg, false, ctx),
            Verb::Xmd5 => self.hash(&arg, true, ctx),
            Verb::Auth => self.auth(&arg),
            Verb::Pbsz => self.pbsz(&arg),
            Verb::Prot => self.prot(&arg),
            Verb::Ccc => self.reply(
                502,
                "CCC is not supported: the control connection stays encrypted.",
            ),
            Verb::Rein => self.reply(502, "REIN is not supported; reconnect instead."),
            Verb::Smnt => self.reply(502, "SMNT is not supported."),
            Verb::Site => self.reply(502, "SITE commands are not supported."),
        }
    }

    // ----- settings ----------------------------------------------------

    fn opts(&mut self, arg: &str) {
        let mut words = arg.split_whitespace();
        let option = words.next().unwrap_or("").to_ascii_uppercase();
        let value = words.next().unwrap_or("").to_ascii_uppercase();
        match (option.as_str(), value.as_str()) {
            ("UTF8", "ON" | "") => self.reply(200, "Always in UTF8 mode."),
            ("UTF8", _) => self.reply(504, "UTF8 is always on."),
            ("MLST", _) => self.reply(200, "MLST OPTS type;size;modify;perm;unique;"),
            ("HASH", "" | "MD5") => self.reply(200, "MD5"),
            ("HASH", _) => self.reply(504, "Unsupported algorithm; MD5 only."),
            _ => self.reply(501, "Option not understood."),
        }
    }

    fn rest_verb(&mut self, arg: &str) {
        // Digits only, and no more than fit in a u64: "18446744073709551616"
        // and "-1" are refused, never wrapped.
        match arg.trim().parse::<u64>() {
            Ok(n) if arg.trim().bytes().all(|b| b.is_ascii_digit()) => {
                self.rest = n;
                self.reply(350, &format!("Restart position accepted ({n})."));
            }
            _ => self.reply(501, "REST needs a non-negative byte offset."),
        }
    }

    fn stat(&mut self, arg: &str) {
        if !arg.is_empty() {
            self.reply(504, "STAT with a path is not supported; use LIST or MLST.");
            return;
        }
        let mut lines = vec![
            format!("Connected from {}", self.peer),
            format!(
                "Logged in as {}",
                self.session.user.as_deref().unwrap_or("nobody")
            ),
            "TYPE: BINARY, MODE: S, STRU: F".to_string(),
        ];
        lines.push(
            if self.data.busy() {
                "A transfer is in progress"
            } else {
                "No transfer in progress"
            }
            .to_string(),
        );
        self.reply_multi(211, "skiffd FTP status:", &lines, "End of status.");
    }
}
