//! What each FTP command does. Everything that touches the disk is a job
//! (see [`super::session::job`]); every path goes through the jail
//! ([`crate::jail::resolve`], then the home's `Dir`).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use cap_std::fs::{Dir, MetadataExt};
use log::{info, warn};

use super::command::{Command, VERBS, Verb};
use super::listing::{self, Cursor, Format};
use super::session::{FtpSession, job};
use super::store::{self, Start, Store};
use super::transfer::Flow;
use crate::conn::Ctx;
use crate::handlers::account::{self, Account, PathLock};
use crate::handlers::digests::{FileKey, hex};
use crate::handlers::files::{Refusal, Sending, open_regular};
use crate::handlers::upload::{Claim, Reservation};
use crate::jail;
use crate::pool::Lane;
use skiff::proto::Code;

/// The `FEAT` lines (RFC 2389), in the order vsftpd and ProFTPD print them.
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
];

impl FtpSession {
    /// Handles one command.
    pub(super) fn command(&mut self, cmd: Command, ctx: &mut Ctx) {
        let Command { verb, arg } = cmd;
        if self.session.user.is_none() && !verb.before_login() {
            self.reply(530, "Please log in with USER and PASS.");
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
            Verb::Auth | Verb::Pbsz | Verb::Prot => {
                self.reply(502, "TLS is not available on this port.")
            }
            Verb::Rein => self.reply(502, "REIN is not supported; reconnect instead."),
            Verb::Smnt => self.reply(502, "SMNT is not supported."),
            Verb::Site => self.reply(502, "SITE commands are not supported."),
        }
    }

    // ----- login -------------------------------------------------------

    fn user_verb(&mut self, arg: String) {
        if self.session.user.is_some() {
            self.reply(530, "Already logged in; reconnect to change user.");
        } else if arg.is_empty() {
            self.reply(501, "USER needs a name.");
        } else {
            self.user_name = Some(arg);
            self.reply(331, "Please specify the password.");
        }
    }

    fn pass(&mut self, password: String, ctx: &mut Ctx) {
        if self.session.user.is_some() {
            self.reply(230, "Already logged in.");
            return;
        }
        let Some(user) = self.user_name.take() else {
            self.reply(503, "Login with USER first.");
            return;
        };
        let wait = ctx.services.throttle.locked_for(self.peer, &user, ctx.now);
        if !wait.is_zero() {
            let secs = wait.as_millis().div_ceil(1000);
            self.reply(
                530,
                &format!("Too many failed logins for {user}; retry in {secs} s."),
            );
            return;
        }
        ctx.services.reload_users_if_changed();
        let record = ctx
            .services
            .users
            .get(&user)
            .map(|r| (r.hash.clone(), r.quota));
        let checked = record.as_ref().map(|r| r.0.clone());
        let check = job(
            "login",
            Lane::Quick,
            move || crate::users::check_password(&password, checked.as_deref()),
            move |matches, s: &mut FtpSession, ctx| match record {
                Some((hash, quota)) if matches => {
                    ctx.services.throttle.succeed(s.peer, &user);
                    s.session.login_hash = Some(hash.into_boxed_str());
                    s.open_account(user, quota, ctx);
                }
                _ => {
                    ctx.services.throttle.fail(s.peer, &user, ctx.now);
                    warn!("ftp {}: login failed for {user:?} from {}", s.key, s.peer);
                    s.reply(530, "Login incorrect.");
                    if s.login_failed() {
                        s.reply(421, "Too many failed logins.");
                        s.close("too many failed logins");
                    }
                }
            },
        );
        self.start_job(check, ctx);
    }

    fn open_account(&mut self, user: String, quota: Option<u64>, ctx: &mut Ctx) {
        if let Some(a) = ctx.services.accounts.get(&user) {
            a.borrow_mut().quota = quota;
            let a = a.clone();
            self.logged_in(user, a, ctx);
            return;
        }
        let data_dir = ctx.services.data_dir.clone();
        let name = user.clone();
        let open = job(
            "open-home",
            Lane::Bulk,
            move || Account::open(&data_dir, &name, quota),
            move |opened, s: &mut FtpSession, ctx| match crate::handlers::auth::adopt_account(
                &mut ctx.services.accounts,
                &user,
                opened,
            ) {
                Ok(a) => s.logged_in(user, a, ctx),
                Err(e) => {
                    s.session.login_hash = None;
                    s.reply(530, &format!("Cannot open your home: {e}"));
                }
            },
        );
        self.start_job(open, ctx);
    }

    fn logged_in(
        &mut self,
        user: String,
        account: std::rc::Rc<std::cell::RefCell<Account>>,
        ctx: &mut Ctx,
    ) {
        info!("ftp {}: user {user} logged in", self.key);
        self.session.presence = Some(ctx.services.online.enter(&user));
        self.session.account = Some(account);
        self.session.cwd = "/".into();
        self.session.user = Some(user);
        self.reply(230, "Login successful.");
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

    // ----- paths and jobs ---------------------------------------------

    /// `arg` resolved against the cwd, or a refusal already replied.
    fn path(&mut self, arg: &str, required: bool) -> Option<String> {
        if arg.is_empty() && required {
            self.reply(501, "A path is required.");
            return None;
        }
        let arg = if arg.is_empty() { "." } else { arg };
        match jail::resolve(&self.session.cwd, arg) {
            Ok(p) => Some(p),
            Err((_, message)) => {
                self.reply(553, &message);
                None
            }
        }
    }

    fn account(&self) -> Option<std::rc::Rc<std::cell::RefCell<Account>>> {
        self.session.account.clone()
    }

    fn home(&self) -> Option<Arc<Dir>> {
        self.session
            .account
            .as_ref()
            .map(|a| a.borrow().home.clone())
    }

    /// A quick job on the user's home; a refusal becomes its reply.
    fn home_job<T: Send + 'static>(
        &mut self,
        name: &'static str,
        work: impl FnOnce(&Dir) -> Result<T, Refusal> + Send + 'static,
        then: impl FnOnce(T, &mut FtpSession, &mut Ctx) + 'static,
        ctx: &mut Ctx,
    ) {
        let Some(home) = self.home() else {
            self.reply(530, "Please log in with USER and PASS.");
            return;
        };
        let j = job(
            name,
            Lane::Quick,
            move || work(&home),
            move |result, s: &mut FtpSession, ctx| match result {
                Ok(v) => then(v, s, ctx),
                Err(refusal) => s.refuse(refusal),
            },
        );
        self.start_job(j, ctx);
    }

    fn cwd(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        self.home_job(
            "cwd",
            move |home| {
                let meta = home
                    .metadata(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                if meta.is_dir() {
                    Ok(target)
                } else {
                    Err((Code::NotADirectory, format!("{target}: not a directory")))
                }
            },
            |target, s, _ctx| {
                s.session.cwd = target;
                s.reply(250, "Directory successfully changed.");
            },
            ctx,
        );
    }

    fn list(&mut self, arg: &str, format: Format, ctx: &mut Ctx) {
        // `ls` options some clients send (`-a`, `-la`): ignored.
        let mut arg = arg;
        while arg.starts_with('-') {
            arg = arg.find(' ').map_or("", |i| arg[i + 1..].trim_start());
        }
        if !self.data_ready_or_refuse() {
            return;
        }
        let Some(target) = self.path(arg, false) else {
            return;
        };
        self.rest = 0;
        self.home_job(
            "list",
            move |home| {
                if format == Format::Facts
                    && !home
                        .metadata(jail::relative(&target))
                        .map_err(|e| jail::io_error(&e, &target))?
                        .is_dir()
                {
                    return Err((Code::NotADirectory, format!("{target}: not a directory")));
                }
                Cursor::open(home, &target, format)
            },
            |(cursor, page), s, ctx| {
                s.queue_data(&page);
                let flow = Flow::Send {
                    file: None,
                    listing: Some(Box::new(cursor)),
                };
                s.begin(flow, "Here comes the directory listing.".into(), ctx);
            },
            ctx,
        );
    }

    fn mlst(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, false) else {
            return;
        };
        self.home_job(
            "mlst",
            move |home| {
                let meta = home
                    .metadata(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                if !meta.is_dir() && !meta.is_file() {
                    return Err((Code::Forbidden, format!("{target}: not a regular file")));
                }
                Ok(format!("{} {target}", listing::facts(&meta)))
            },
            |line, s, _ctx| s.reply_multi(250, "Listing", &[line], "End"),
            ctx,
        );
    }

    fn size(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        let Some(account) = self.account() else {
            return;
        };
        let partial = account.borrow().partial.clone();
        let kept = store::partial_name(&target);
        self.home_job(
            "size",
            move |home| {
                // An interrupted upload's size is where it resumes.
                if let Ok(m) = partial.metadata(&kept)
                    && m.len() > 0
                {
                    return Ok(m.len());
                }
                let meta = home
                    .metadata(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                if meta.is_file() {
                    Ok(meta.len())
                } else {
                    Err((Code::IsADirectory, format!("{target}: not a regular file")))
                }
            },
            |len, s, _ctx| s.reply(213, &len.to_string()),
            ctx,
        );
    }

    fn mdtm(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        self.home_job(
            "mdtm",
            move |home| {
                let meta = home
                    .metadata(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                if meta.is_file() {
                    Ok(listing::time_val(listing::seconds(&meta)))
                } else {
                    Err((Code::IsADirectory, format!("{target}: not a regular file")))
                }
            },
            |time, s, _ctx| s.reply(213, &time),
            ctx,
        );
    }

    // ----- transfers ---------------------------------------------------

    fn retr(&mut self, arg: &str, ctx: &mut Ctx) {
        if !self.data_ready_or_refuse() {
            return;
        }
        let Some(target) = self.path(arg, true) else {
            return;
        };
        let offset = std::mem::take(&mut self.rest);
        let shown = target.clone();
        self.home_job(
            "retr-open",
            move |home| -> Result<Result<(File, u64), String>, Refusal> {
                let (mut file, meta) = open_regular(home, &target)?;
                let len = meta.len();
                if offset > len {
                    return Ok(Err(format!(
                        "Cannot restart at {offset}: {target} has {len} bytes."
                    )));
                }
                // lseek moves a number in the kernel: no disk wait.
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| jail::io_error(&e, &target))?;
                Ok(Ok((file, len)))
            },
            move |opened, s, ctx| match opened {
                Err(text) => s.reply(554, &text),
                Ok((file, len)) => {
                    let flow = Flow::Send {
                        file: Some(Sending {
                            file,
                            remaining: len - offset,
                            zero_copy: true,
                        }),
                        listing: None,
                    };
                    let opening =
                        format!("Opening BINARY mode data connection for {shown} ({len} bytes).");
                    s.begin(flow, opening, ctx);
                }
            },
            ctx,
        );
    }

    fn store(&mut self, arg: &str, start: Start, ctx: &mut Ctx) {
        if !self.data_ready_or_refuse() {
            return;
        }
        let Some(target) = self.path(arg, true) else {
            return;
        };
        let Some(account) = self.account() else {
            return;
        };
        let Some(name) = jail::file_name(&target) else {
            self.reply(553, "/: is a directory.");
            return;
        };
        if name.starts_with(".skiff") {
            self.reply(
                553,
                &format!("{name}: names starting with .skiff are reserved."),
            );
            return;
        }
        let claim = match Claim::take(&account, store::partial_name(&target), &target) {
            Ok(c) => c,
            Err(refusal) => return self.refuse(refusal),
        };
        let lock = match PathLock::take(&account, &target) {
            Ok(l) => l,
            Err(refusal) => return self.refuse(refusal),
        };
        let allo = self.allo.take();
        let (home, partial) = {
            let a = account.borrow();
            (a.home.clone(), a.partial.clone())
        };
        let partial_file = claim.name().to_string();
        let checked = target.clone();
        let check = job(
            "stor-check",
            Lane::Quick,
            move || store::check(&home, &partial, &partial_file, &checked),
            move |facts, s: &mut FtpSession, ctx| {
                let facts = match facts {
                    Ok(f) => f,
                    Err(refusal) => return s.refuse(refusal),
                };
                let base = match store::choose_base(start, facts) {
                    Ok(b) => b,
                    Err(text) => return s.reply(554, &text),
                };
                let allo_bytes = allo.as_ref().map_or(0, Reservation::bytes);
                let need = base
                    .bytes()
                    .saturating_sub(facts.existing)
                    .saturating_sub(allo_bytes);
                {
                    let a = account.borrow();
                    let own_parked = facts.kept.min(a.parked);
                    if !a.fits(need, own_parked) {
                        return s.reply(552, &quota_text(&target, &a));
                    }
                }
                let (home, partial) = {
                    let a = account.borrow();
                    (a.home.clone(), a.partial.clone())
                };
                let name = claim.name().to_string();
                let opened_target = target.clone();
                let open = job(
                    "stor-open",
                    Lane::Bulk,
                    move || store::open(&home, &partial, &name, &opened_target, base),
                    move |opened, s: &mut FtpSession, ctx| {
                        let disk = match opened {
                            Ok(d) => d,
                            Err(e) => {
                                return s.reply(451, &format!("Cannot start the upload: {e}"));
                            }
                        };
                        {
                            let mut a = account.borrow_mut();
                            let own_parked = facts.kept.min(a.parked);
                            if !a.fits(need, own_parked) {
                                // Others reserved meanwhile.
                                let text = quota_text(&target, &a);
                                drop(a);
                                return s.reply(552, &text);
                            }
                            a.parked -= own_parked;
                        }
                        let mut reservation =
                            allo.unwrap_or_else(|| Reservation::hold(&account, 0));
                        reservation.grow(need);
                        let from = disk.written;
                        let store = Store::new(
                            target.clone(),
                            disk,
                            facts.existing,
                            reservation,
                            claim,
                            lock,
                        );
                        let opening = if from > 0 {
                            format!("Ok to send data for {target} from byte {from}.")
                        } else {
                            format!("Ok to send data for {target}.")
                        };
                        s.begin(Flow::Receive(Box::new(store)), opening, ctx);
                    },
                );
                s.start_job(open, ctx);
            },
        );
        self.start_job(check, ctx);
    }

    fn allo(&mut self, arg: &str, ctx: &mut Ctx) {
        // "ALLO n" or "ALLO n R m": the first number is the size.
        let Some(Ok(bytes)) = arg.split_whitespace().next().map(str::parse::<u64>) else {
            self.reply(501, "ALLO needs a size in bytes.");
            return;
        };
        self.allo = None;
        let Some(account) = self.account() else {
            return;
        };
        if account.borrow().quota.is_none() || bytes == 0 {
            self.reply(202, "No storage allocation necessary.");
            return;
        }
        self.reserve(account, bytes, true, ctx);
    }

    /// Reserves `bytes` for the next upload; if the quota has no room but
    /// parked partials of abandoned uploads hold some, discards them
    /// (oldest first, as `put` does) and tries once more.
    fn reserve(
        &mut self,
        account: std::rc::Rc<std::cell::RefCell<Account>>,
        bytes: u64,
        may_discard: bool,
        ctx: &mut Ctx,
    ) {
        let a = account.borrow();
        if a.fits(bytes, 0) {
            drop(a);
            self.allo = Some(Reservation::hold(&account, bytes));
            self.reply(200, &format!("{bytes} bytes reserved."));
            return;
        }
        if !may_discard || a.parked == 0 {
            let text = quota_text(&format!("ALLO {bytes}"), &a);
            drop(a);
            self.reply(552, &text);
            return;
        }
        let want = a.shortfall(bytes, 0);
        let partial = a.partial.clone();
        let spare = a.active.clone();
        drop(a);
        let discard = job(
            "discard-parked",
            Lane::Quick,
            move || account::discard_parked(&partial, want, &spare),
            move |freed, s: &mut FtpSession, ctx| {
                {
                    let mut a = account.borrow_mut();
                    a.parked = a.parked.saturating_sub(freed);
                }
                s.reserve(account, bytes, false, ctx);
            },
        );
        self.start_job(discard, ctx);
    }

    // ----- changing the tree ------------------------------------------

    fn dele(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        let Some(account) = self.account() else {
            return;
        };
        let lock = match PathLock::take(&account, &target) {
            Ok(l) => l,
            Err(refusal) => return self.refuse(refusal),
        };
        self.home_job(
            "dele",
            move |home| {
                let rel = jail::relative(&target);
                let meta = home
                    .symlink_metadata(&rel)
                    .map_err(|e| jail::io_error(&e, &target))?;
                if meta.is_dir() {
                    return Err((
                        Code::IsADirectory,
                        format!("{target}: is a directory; use RMD"),
                    ));
                }
                home.remove_file(&rel)
                    .map_err(|e| jail::io_error(&e, &target))?;
                Ok(if meta.is_file() { meta.len() } else { 0 })
            },
            move |freed, s, _ctx| {
                // Held until `used` is settled (see `PathLock`).
                let _lock = lock;
                if let Some(a) = &s.session.account {
                    let mut a = a.borrow_mut();
                    a.used = a.used.saturating_sub(freed);
                }
                s.reply(250, "Delete operation successful.");
            },
            ctx,
        );
    }

    fn mkd(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        self.home_job(
            "mkd",
            move |home| {
                home.create_dir(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                Ok(target)
            },
            |target, s, _ctx| {
                let text = format!("{} created", super::reply::quoted(&target));
                s.reply(257, &text);
            },
            ctx,
        );
    }

    fn rmd(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        if target == "/" {
            self.reply(550, "/: your home cannot be removed.");
            return;
        }
        self.home_job(
            "rmd",
            move |home| {
                home.remove_dir(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))
            },
            |(), s, _ctx| s.reply(250, "Remove directory operation successful."),
            ctx,
        );
    }

    fn rnfr(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        if target == "/" {
            self.reply(550, "/: your home cannot be renamed.");
            return;
        }
        self.home_job(
            "rnfr",
            move |home| {
                home.symlink_metadata(jail::relative(&target))
                    .map_err(|e| jail::io_error(&e, &target))?;
                Ok(target)
            },
            |target, s, _ctx| {
                s.rename_from = Some(target);
                s.reply(350, "Ready for RNTO.");
            },
            ctx,
        );
    }

    fn rnto(&mut self, from: String, arg: &str, ctx: &mut Ctx) {
        let Some(to) = self.path(arg, true) else {
            return;
        };
        let Some(account) = self.account() else {
            return;
        };
        match jail::file_name(&to) {
            None => return self.reply(553, "/: cannot be a rename target."),
            Some(n) if n.starts_with(".skiff") => {
                return self.reply(
                    553,
                    &format!("{n}: names starting with .skiff are reserved."),
                );
            }
            Some(_) => {}
        }
        // Both paths change: no upload or DELE of either meanwhile.
        let lock_from = match PathLock::take(&account, &from) {
            Ok(l) => l,
            Err(refusal) => return self.refuse(refusal),
        };
        let lock_to = if to == from {
            None
        } else {
            match PathLock::take(&account, &to) {
                Ok(l) => Some(l),
                Err(refusal) => return self.refuse(refusal),
            }
        };
        self.home_job(
            "rnto",
            move |home| {
                let (rf, rt) = (jail::relative(&from), jail::relative(&to));
                let old = home
                    .symlink_metadata(&rf)
                    .map_err(|e| jail::io_error(&e, &from))?;
                // A file the rename replaces leaves the home; the same
                // file under two names (or one) replaces nothing.
                let replaced = match home.symlink_metadata(&rt) {
                    Ok(m) if m.is_file() && (m.dev(), m.ino()) != (old.dev(), old.ino()) => m.len(),
                    _ => 0,
                };
                home.rename(&rf, home, &rt)
                    .map_err(|e| jail::io_error(&e, &to))?;
                Ok(replaced)
            },
            move |replaced, s, _ctx| {
                let _locks = (lock_from, lock_to);
                if let Some(a) = &s.session.account {
                    let mut a = a.borrow_mut();
                    a.used = a.used.saturating_sub(replaced);
                }
                s.reply(250, "Rename successful.");
            },
            ctx,
        );
    }

    // ----- checksums ---------------------------------------------------

    /// `HASH` (draft-bryan-ftpext-hash, MD5 only) or ProFTPD's `XMD5`: the
    /// MD5 computed when the file was uploaded, or hashed once on a worker
    /// and cached (see [`crate::handlers::digests`]).
    fn hash(&mut self, arg: &str, xmd5: bool, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        let digests = ctx.services.digests.clone();
        let shown = target.clone();
        self.home_job(
            "hash-open",
            move |home| {
                let (file, meta) = open_regular(home, &target)?;
                Ok((file, FileKey::of(&meta)))
            },
            move |(file, key), s, ctx| {
                let answer = move |digest: [u8; 16], s: &mut FtpSession| {
                    if xmd5 {
                        s.reply(250, &hex(&digest));
                    } else {
                        s.reply(213, &format!("MD5 0-{} {} {shown}", key.len, hex(&digest)));
                    }
                };
                if let Some(digest) = digests.cached(&key) {
                    return answer(digest, s);
                }
                let hashing = job(
                    "hash",
                    Lane::Hash,
                    move || digests.digest_of(&file, key),
                    move |digest, s: &mut FtpSession, _ctx| match digest {
                        Ok(d) => answer(d, s),
                        Err(message) => s.reply(451, &message),
                    },
                );
                s.start_job(hashing, ctx);
            },
            ctx,
        );
    }
}

/// Why an upload does not fit, with the numbers.
fn quota_text(what: &str, a: &Account) -> String {
    format!(
        "{what}: quota exceeded ({} used, {} reserved by uploads in progress, {} parked in unfinished ones, quota {}).",
        a.used,
        a.reserved,
        a.parked,
        a.quota.unwrap_or(0)
    )
}
