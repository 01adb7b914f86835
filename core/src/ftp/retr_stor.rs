//! The commands that use the data connection: `LIST`, `NLST`, `MLSD`,
//! `RETR`, `STOR`, `APPE`; and `ALLO`, which reserves quota for the next
//! upload. Each checks the request, runs what needs the disk as a job
//! (open, list, check and open the partial), then hands the transfer to
//! [`super::transfer`] to start when the data connection is there.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::rc::Rc;

use log::{debug, info};

use super::listing::{Cursor, Format};
use super::session::{FtpSession, job};
use super::store::{self, Start, Store};
use super::transfer::Flow;
use crate::ctx::Ctx;
use crate::handlers::files::{Refusal, Sending, open_regular};
use crate::handlers::upload::{Claim, Reservation};
use crate::jail;
use crate::pool::Lane;
use crate::services::account::{self, Account, PathLock};
use skiff::proto::Code;

impl FtpSession {
    pub(super) fn list(&mut self, arg: &str, format: Format, ctx: &mut Ctx) {
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

    pub(super) fn retr(&mut self, arg: &str, ctx: &mut Ctx) {
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
                        // TLS encrypts every byte: no sendfile.
                        file: Some(Sending::new(file, offset, len - offset, !s.data_private())),
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

    pub(super) fn store(&mut self, arg: &str, start: Start, ctx: &mut Ctx) {
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
                let plan = Plan {
                    need: base
                        .bytes()
                        .saturating_sub(facts.existing)
                        .saturating_sub(allo_bytes),
                    target,
                    base,
                    facts,
                    allo,
                    claim,
                    lock,
                    account,
                };
                s.stor_room(plan, true, ctx);
            },
        );
        self.start_job(check, ctx);
    }

    /// Checks the quota for what the upload starts with; if partials of
    /// other, abandoned uploads are in the way, discards them (oldest
    /// first, as `put` does) and looks once more.
    fn stor_room(&mut self, plan: Plan, may_discard: bool, ctx: &mut Ctx) {
        let a = plan.account.borrow();
        let own_parked = plan.facts.kept.min(a.parked);
        if a.fits(plan.need, own_parked) {
            drop(a);
            return self.stor_open(plan, ctx);
        }
        if !may_discard || a.parked <= own_parked {
            let text = quota_text(&plan.target, &a);
            drop(a);
            return self.reply(552, &text);
        }
        let want = a.shortfall(plan.need, own_parked);
        drop(a);
        let account = plan.account.clone();
        self.discard_parked(&account, want, ctx, move |_, s, ctx| {
            s.stor_room(plan, false, ctx)
        });
    }

    /// Opens the partial file with its base (copied or hashed on a
    /// worker), reserves the quota and starts the transfer.
    fn stor_open(&mut self, plan: Plan, ctx: &mut Ctx) {
        let (home, partial) = {
            let a = plan.account.borrow();
            (a.home.clone(), a.partial.clone())
        };
        let name = plan.claim.name().to_string();
        let target = plan.target.clone();
        let base = plan.base;
        let hashed = self.hash_uploads;
        // Bytes nobody needs to see (not hashed, not decrypted) go from
        // the socket to the file through pipes, while slots last.
        let slot = if hashed || self.data_private() {
            None
        } else {
            ctx.services.upload_pipes.take()
        };
        let with_pipes = slot.is_some();
        let open = job(
            "stor-open",
            Lane::Bulk,
            move || {
                let disk = store::open(&home, &partial, &name, &target, base, hashed);
                let pipes = with_pipes.then(store::open_pipes);
                (disk, pipes)
            },
            move |(opened, pipes), s: &mut FtpSession, ctx| {
                let pipes = match (pipes, slot) {
                    (Some(Ok((filling, spare))), Some(slot)) => Some(store::Pipes {
                        filling,
                        spare,
                        slot,
                    }),
                    (Some(Err(e)), _) => {
                        debug!("ftp {}: no pipes for the upload ({e}): copying", s.key);
                        None
                    }
                    _ => None,
                };
                let disk = match opened {
                    Ok(d) => d,
                    Err(e) => {
                        info!("ftp {}: cannot start an upload: {e}", s.key);
                        return s.reply(451, &format!("Cannot start the upload: {e}"));
                    }
                };
                let Plan {
                    target,
                    facts,
                    need,
                    allo,
                    claim,
                    lock,
                    account,
                    ..
                } = plan;
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
                let mut reservation = allo.unwrap_or_else(|| Reservation::hold(&account, 0));
                reservation.grow(need);
                let from = disk.written;
                let opening = if from > 0 {
                    format!("Ok to send data for {target} from byte {from}.")
                } else {
                    format!("Ok to send data for {target}.")
                };
                let mut store = Store::new(
                    target,
                    disk,
                    facts.existing,
                    reservation,
                    claim,
                    lock,
                    pipes,
                );
                store.fit_batch(ctx.stats.pressure);
                s.begin(Flow::Receive(Box::new(store)), opening, ctx);
            },
        );
        self.start_job(open, ctx);
    }

    pub(super) fn allo(&mut self, arg: &str, ctx: &mut Ctx) {
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
        account: Rc<RefCell<Account>>,
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
        drop(a);
        self.discard_parked(&account.clone(), want, ctx, move |_, s, ctx| {
            s.reserve(account, bytes, false, ctx)
        });
    }

    /// Discards partials of other, abandoned uploads of `account` on a
    /// worker, oldest first (as `put` does), until `want` bytes are free;
    /// back on the loop, counts them as no longer parked and calls `then`
    /// with the bytes freed.
    pub(super) fn discard_parked(
        &mut self,
        account: &Rc<RefCell<Account>>,
        want: u64,
        ctx: &mut Ctx,
        then: impl FnOnce(u64, &mut FtpSession, &mut Ctx) + 'static,
    ) {
        let (partial, spare) = {
            let a = account.borrow();
            (a.partial.clone(), a.active.clone())
        };
        let account = account.clone();
        let discard = job(
            "discard-parked",
            Lane::Quick,
            move || account::discard_parked(&partial, want, &spare),
            move |freed, s: &mut FtpSession, ctx| {
                {
                    let mut a = account.borrow_mut();
                    a.parked = a.parked.saturating_sub(freed);
                }
                then(freed, s, ctx);
            },
        );
        self.start_job(discard, ctx);
    }
}

/// An upload checked against the disk, not started yet.
struct Plan {
    /// The target, as the user sees it.
    target: String,
    /// What its first bytes come from.
    base: store::Base,
    /// What the disk said.
    facts: store::Facts,
    /// Quota it needs now, beyond what `ALLO` reserved.
    need: u64,
    /// `ALLO`'s reservation, if one was made.
    allo: Option<Reservation>,
    /// The upload's hold on its partial file.
    claim: Claim,
    /// The upload's hold on its target path.
    lock: PathLock,
    /// The user's account.
    account: Rc<RefCell<Account>>,
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
