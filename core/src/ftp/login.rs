//! `USER` and `PASS`: the framed protocol's accounts and login throttle.
//! The password check (argon2) and a first login's walk of the home run
//! on workers.

use log::{info, warn};

use super::session::{FtpSession, job};
use crate::ctx::Ctx;
use crate::pool::Lane;
use crate::services::account::Account;

impl FtpSession {
    /// `USER`: the name waits for `PASS` (every name gets `331`, known
    /// or not, so a reply never tells which users exist).
    pub(super) fn user_verb(&mut self, arg: String) {
        if self.session.user.is_some() {
            self.reply(530, "Already logged in; reconnect to change user.");
        } else if arg.is_empty() {
            self.reply(501, "USER needs a name.");
        } else {
            self.user_name = Some(arg);
            self.reply(331, "Please specify the password.");
        }
    }

    /// `PASS`: refused at once while the throttle locks this address and
    /// name; otherwise checked on a worker (unknown users against a dummy
    /// hash, so both failures cost and read the same).
    pub(super) fn pass(&mut self, password: String, ctx: &mut Ctx) {
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
}
