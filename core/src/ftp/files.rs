//! The commands on files and directories that need no data connection:
//! `CWD`, `MLST`, `SIZE`, `MDTM`, `DELE`, `MKD`, `RMD`, `RNFR`/`RNTO`,
//! `HASH`/`XMD5`; and the helpers every path command uses.

use std::sync::Arc;

use cap_std::fs::{Dir, MetadataExt};

use super::listing;
use super::session::{FtpSession, job};
use super::store;
use crate::ctx::Ctx;
use crate::handlers::files::{Refusal, open_regular};
use crate::jail;
use crate::pool::Lane;
use crate::services::account::{Account, PathLock};
use crate::services::digests::{FileKey, hex};
use skiff::proto::Code;

impl FtpSession {
    /// `arg` resolved against the cwd, or a refusal already replied.
    pub(super) fn path(&mut self, arg: &str, required: bool) -> Option<String> {
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

    pub(super) fn account(&self) -> Option<std::rc::Rc<std::cell::RefCell<Account>>> {
        self.session.account.clone()
    }

    pub(super) fn home(&self) -> Option<Arc<Dir>> {
        self.session
            .account
            .as_ref()
            .map(|a| a.borrow().home.clone())
    }

    /// A quick job on the user's home; a refusal becomes its reply.
    pub(super) fn home_job<T: Send + 'static>(
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

    pub(super) fn cwd(&mut self, arg: &str, ctx: &mut Ctx) {
        let Some(target) = self.path(arg, true) else {
            return;
        };
        self.home_job(
            "cwd",
            move |home| crate::handlers::files::directory(home, target),
            |target, s, _ctx| {
                s.session.cwd = target;
                s.reply(250, "Directory successfully changed.");
            },
            ctx,
        );
    }

    pub(super) fn mlst(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn size(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn mdtm(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn dele(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn mkd(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn rmd(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn rnfr(&mut self, arg: &str, ctx: &mut Ctx) {
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

    pub(super) fn rnto(&mut self, from: String, arg: &str, ctx: &mut Ctx) {
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

    /// `HASH` (draft-bryan-ftpext-hash, MD5 only) or ProFTPD's `XMD5`: the
    /// MD5 computed when the file was uploaded, or hashed once on a worker
    /// and cached (see [`crate::services::digests`]).
    pub(super) fn hash(&mut self, arg: &str, xmd5: bool, ctx: &mut Ctx) {
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
