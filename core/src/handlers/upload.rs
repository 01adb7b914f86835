//! Uploads: `put` announces a file, `data` streams it.
//!
//! The body goes into a partial file outside the home, hashed on the way;
//! only a whole, verified file is renamed into place, so an interrupted or
//! mismatched upload never touches the file that was there. The partial
//! file is kept, so the same `put` can resume.
//!
//! ```text
//!  put ─▶ claim the partial ─▶ [quick] check parent, target, kept part
//!          (or too_busy)       ─▶ quota (maybe [quick] discard parked)
//!                              ─▶ [bulk] open, trim, hash the kept part
//!                              ─▶ reserve quota, reply `offset`
//!  data ─▶ body collected in batches of 256 KiB; each batch: [bulk]
//!          append + hash (the connection waits, unread, meanwhile)
//!       ─▶ [bulk] the last batch, MD5 final ─▶ matches? ─▶ [bulk] fsync,
//!          rename into the home ─▶ `ok`
//!                     └─▶ [quick] delete the partial ─▶ checksum_mismatch
//! ```
//!
//! - **One upload per partial file.** The partial's name derives from the
//!   path, length and MD5, so two sessions putting the same file would
//!   share it; a [`Claim`] makes the second get `too_busy` instead.
//! - **Quota** is reserved at `put` from the declared length (concurrent
//!   uploads of one user cannot together pass it) and settled on the real
//!   size when the file lands.
//! - **A full disk** discards the partial at once: the bytes cannot land,
//!   and keeping them would keep the disk full for every user.
//! - **`put` with `discard: true`** deletes a kept partial without
//!   uploading, for a client that gives up on a resume.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::rc::Rc;

use log::{debug, info};
use md5::{Digest, Md5};
use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::Code;

use super::files::{Refusal, resolve};
use super::{Job, Next, Session, Sink, error, ok};
use crate::jail;
use crate::pool::Lane;
use crate::services::account::{self, Account, PathLock};
use crate::services::digests::{self, FileKey, hex, parse_md5};
use crate::upload_pipe::UploadPipe;

/// Bytes of an upload handed to writeback at a time.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Body bytes collected before a worker appends and hashes them. Writing
/// happens off the loop because a `write` can wait on the disk: once the
/// kernel's dirty pages pass its limit, it makes writers sleep.
pub const WRITE_BATCH: usize = 256 << 10;

/// A partial file claimed by one upload. While a claim lives, no other
/// `put` can use the same partial, and discarding parked partials spares
/// it; dropping the claim releases it.
#[derive(Debug)]
pub struct Claim {
    account: Rc<RefCell<Account>>,
    name: String,
}

impl Claim {
    /// Claims the partial file `name` (for an upload of `target`), or says
    /// that another upload holds it.
    pub fn take(
        account: &Rc<RefCell<Account>>,
        name: String,
        target: &str,
    ) -> Result<Claim, Refusal> {
        let mut a = account.borrow_mut();
        if a.active.contains(&name) {
            return Err((
                Code::TooBusy,
                format!(
                    "{target}: another session is uploading this file right now; try again when it is done"
                ),
            ));
        }
        a.active.push(name.clone());
        Ok(Claim {
            account: account.clone(),
            name,
        })
    }

    /// The claimed partial file's name (in the account's partial directory).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account whose partial file this is.
    pub fn account(&self) -> &Rc<RefCell<Account>> {
        &self.account
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut a = self.account.borrow_mut();
        if let Some(i) = a.active.iter().position(|n| *n == self.name) {
            a.active.swap_remove(i);
        }
    }
}

/// Bytes of quota held for an upload in progress; given back on drop,
/// whether the upload lands, fails or its connection dies.
#[derive(Debug)]
pub struct Reservation {
    account: Rc<RefCell<Account>>,
    bytes: u64,
}

impl Reservation {
    /// Holds `bytes` of `account`'s quota (the caller checked they fit).
    pub fn hold(account: &Rc<RefCell<Account>>, bytes: u64) -> Reservation {
        let mut a = account.borrow_mut();
        a.reserved = a.reserved.saturating_add(bytes);
        Reservation {
            account: account.clone(),
            bytes,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds `more` bytes on top (the caller checked they fit).
    pub fn grow(&mut self, more: u64) {
        let mut a = self.account.borrow_mut();
        a.reserved = a.reserved.saturating_add(more);
        self.bytes = self.bytes.saturating_add(more);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut a = self.account.borrow_mut();
        a.reserved = a.reserved.saturating_sub(self.bytes);
    }
}

/// An upload announced by `put`: where it goes and what it must be.
#[derive(Debug)]
pub struct Upload {
    /// The request id of the `put`; its `data` frame must carry it too.
    id: Option<Number>,
    /// Destination, as the user sees it.
    path: String,
    /// Declared whole length.
    length: u64,
    /// Declared MD5 of the whole file.
    md5: [u8; 16],
    /// The partial file and the MD5 of what it holds; `None` only while
    /// a worker appends a batch to it.
    disk: Option<Partial>,
    /// Body bytes received and not yet handed to a worker (at most about
    /// [`WRITE_BATCH`]); the allocation is reused from batch to batch.
    pending: Vec<u8>,
    /// The first write error, if any: the rest of the body is swallowed.
    failed: Option<io::Error>,
    /// Quota held until the upload ends.
    reservation: Reservation,
    /// The partial file is still there (not landed, not thrown away): when
    /// the upload ends it stays parked for a resume.
    keeps_partial: bool,
    /// This upload's hold on its partial file (dropped after the above).
    claim: Claim,
    /// This upload's hold on its target path, kept only to be dropped
    /// with it.
    _lock: PathLock,
}

/// An upload's partial file, as it travels to a worker and back.
#[derive(Debug)]
pub struct Partial {
    /// The file, open for appending.
    pub file: File,
    /// MD5 of the bytes written so far; `None` for an upload that is not
    /// hashed on the way (FTP's, unless asked: see
    /// [`crate::ftp::store`]).
    pub hasher: Option<Md5>,
    /// Bytes in the file.
    pub written: u64,
}

impl Partial {
    /// Appends and hashes `bytes` (on a worker: `write` may wait on the
    /// disk), and starts writeback of each finished 8 MiB, so the fsync
    /// before the rename finds little left to do.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.grew(bytes.len() as u64);
        Ok(())
    }

    /// Appends the bytes waiting in `pipe` (on a worker, as [`Partial::append`]).
    /// They are never seen here, so an upload hashed on the way must not
    /// receive through a pipe: refused if it does.
    pub fn append_pipe(&mut self, pipe: &mut UploadPipe) -> io::Result<()> {
        if self.hasher.is_some() {
            return Err(io::Error::other(
                "a hashed upload cannot take bytes from a pipe",
            ));
        }
        let (moved, result) = pipe.drain_into(&self.file);
        self.grew(moved);
        result
    }

    /// `n` bytes were appended: count them, and start writeback of each
    /// finished [`WRITEBACK_STEP`].
    fn grew(&mut self, n: u64) {
        let before = self.written;
        self.written = self.written.saturating_add(n);
        if before / WRITEBACK_STEP != self.written / WRITEBACK_STEP {
            let end = self.written / WRITEBACK_STEP * WRITEBACK_STEP;
            skiff::os::start_writeback(&self.file, end - WRITEBACK_STEP, WRITEBACK_STEP);
        }
    }

    /// The MD5 of what the file holds, if it was hashed on the way.
    pub fn digest(&self) -> Option<[u8; 16]> {
        self.hasher.clone().map(|h| h.finalize().into())
    }
}

/// Counts an upload's kept partial file as parked in `account`, by its
/// size on disk (an `fstat` of the open file: no path walk, no disk wait).
pub fn park(disk: Option<&Partial>, account: &RefCell<Account>) {
    let size = disk.map_or(0, |d| d.file.metadata().map_or(d.written, |m| m.len()));
    let mut account = account.borrow_mut();
    account.parked = account.parked.saturating_add(size);
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.keeps_partial {
            park(self.disk.as_ref(), &self.reservation.account);
        }
    }
}

impl Upload {
    /// Takes one piece of the body; says whether enough is collected to
    /// hand to a worker ([`write_batch`]).
    pub fn take(&mut self, chunk: &[u8]) -> bool {
        if self.failed.is_some() {
            return false; // swallowed: the upload has failed
        }
        self.pending.extend_from_slice(chunk);
        self.pending.len() >= WRITE_BATCH
    }

    /// Memory this upload holds for body bytes (for the buffer budget).
    pub fn buffered_bytes(&self) -> usize {
        self.pending.capacity()
    }

    /// Body bytes collected and not yet handed to a worker.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() && self.disk.is_some()
    }

    /// Bytes in the partial file.
    fn written(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.written)
    }
}

/// Hands the collected body bytes to a worker, which appends and hashes
/// them; when it is done, the body streams on.
pub fn write_batch(mut upload: Box<Upload>) -> Next {
    let Some(mut disk) = upload.disk.take() else {
        return Next::Body(Sink::Upload(upload));
    };
    let batch = std::mem::take(&mut upload.pending);
    let holds = batch.capacity();
    let mut job = Job::new(
        "write",
        Lane::Bulk,
        move || {
            let appended = disk.append(&batch);
            (disk, appended, batch)
        },
        move |(disk, appended, mut batch), _id, _session, _out, _ctx| {
            upload.disk = Some(disk);
            if let Err(e) = appended {
                upload.failed = Some(e);
            }
            batch.clear();
            upload.pending = batch;
            Next::Body(Sink::Upload(upload))
        },
    );
    job.holds = holds;
    Next::Job(job)
}

/// The partial file's name for (path, length, md5): the same upload
/// always finds its own kept part, a different one never does.
fn partial_name(target: &str, length: u64, md5: &[u8; 16]) -> String {
    let mut h = Md5::new();
    h.update(target.as_bytes());
    h.update(length.to_be_bytes());
    h.update(md5);
    format!("{}.part", hex(&h.finalize().into()))
}

/// What the disk says about a planned upload.
struct Facts {
    /// Size of the file it replaces (0 if none).
    existing: u64,
    /// Bytes kept from an interrupted upload of the same file.
    kept: u64,
}

/// An upload checked against the disk, not yet started.
struct Plan {
    target: String,
    length: u64,
    md5: [u8; 16],
    claim: Claim,
    lock: PathLock,
    /// Quota it needs: its length less the file it replaces.
    need: u64,
    /// Size of its partial file when checked (counted in `parked`).
    kept: u64,
}

/// `put` with `path`, `length`, `md5` (and optionally `discard: true`).
pub fn put(
    header: &Header,
    session: &mut Session,
    account: Rc<RefCell<Account>>,
) -> Result<Next, Refusal> {
    // A new put replaces one announced earlier on this connection (and
    // releases its claim, in case it is the same file).
    session.upload = None;
    let target = resolve(header, session, true)?;
    let length = header.u64("length").ok_or((
        Code::BadRequest,
        "\"length\" (a non-negative integer) is required".into(),
    ))?;
    let md5 = header.str("md5").and_then(parse_md5).ok_or((
        Code::BadRequest,
        "\"md5\" (32 hex digits) is required".into(),
    ))?;
    let name = jail::file_name(&target).ok_or((Code::IsADirectory, "/: is a directory".into()))?;
    if name.starts_with(".skiff") {
        return Err((
            Code::BadRequest,
            format!("{name}: names starting with .skiff are reserved"),
        ));
    }
    let claim = Claim::take(&account, partial_name(&target, length, &md5), &target)?;
    if header.flag("discard") {
        return Ok(discard(claim));
    }
    let lock = PathLock::take(&account, &target)?;
    let (home, partial) = {
        let a = account.borrow();
        (a.home.clone(), a.partial.clone())
    };
    let checked = target.clone();
    let partial_file = claim.name.clone();
    Ok(Next::Job(Job::new(
        "put-check",
        Lane::Quick,
        move || -> Result<Facts, Refusal> {
            // The parent must be a directory inside the home; the target,
            // if it exists, a regular file.
            let parent = jail::parent(&checked);
            let pmeta = home
                .metadata(jail::relative(parent))
                .map_err(|e| jail::io_error(&e, parent))?;
            if !pmeta.is_dir() {
                return Err((Code::NotADirectory, format!("{parent}: not a directory")));
            }
            let existing = match home.symlink_metadata(jail::relative(&checked)) {
                Ok(m) if m.is_dir() => {
                    return Err((Code::IsADirectory, format!("{checked}: is a directory")));
                }
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => return Err((Code::Forbidden, format!("{checked}: not a regular file"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(jail::io_error(&e, &checked)),
            };
            let kept = partial.metadata(&partial_file).map_or(0, |m| m.len());
            Ok(Facts { existing, kept })
        },
        move |facts, id, _session, out, _ctx| match facts {
            Ok(facts) => make_room(
                Plan {
                    target,
                    length,
                    md5,
                    claim,
                    lock,
                    // Replacing a file frees its bytes when the new one lands.
                    need: length.saturating_sub(facts.existing),
                    kept: facts.kept,
                },
                id,
                out,
            ),
            Err((code, message)) => {
                error(out, id, code, &message);
                Next::Done
            }
        },
    )))
}

/// Checks the quota; discards parked partials of other uploads if that
/// makes room, else refuses.
fn make_room(plan: Plan, id: Option<&Number>, out: &mut Vec<u8>) -> Next {
    let account_rc = plan.claim.account.clone();
    let account = account_rc.borrow();
    let own_parked = plan.kept.min(account.parked);
    if account.fits(plan.need, own_parked) {
        drop(account);
        return open_upload(plan);
    }
    if account.parked <= own_parked {
        refuse_quota(&plan, &account, own_parked, id, out);
        return Next::Done;
    }
    let want = account.shortfall(plan.need, own_parked);
    let partial = account.partial.clone();
    let spare = account.active.clone();
    drop(account);
    Next::Job(Job::new(
        "discard-parked",
        Lane::Quick,
        move || account::discard_parked(&partial, want, &spare),
        move |freed, id, _session, out, _ctx| {
            let account_rc = plan.claim.account.clone();
            let mut account = account_rc.borrow_mut();
            account.parked = account.parked.saturating_sub(freed);
            let own_parked = plan.kept.min(account.parked);
            if !account.fits(plan.need, own_parked) {
                refuse_quota(&plan, &account, own_parked, id, out);
                return Next::Done;
            }
            drop(account);
            open_upload(plan)
        },
    ))
}

fn refuse_quota(
    plan: &Plan,
    account: &Account,
    own_parked: u64,
    id: Option<&Number>,
    out: &mut Vec<u8>,
) {
    let message = format!(
        "{}: {} bytes would pass your quota ({} used, {} reserved by uploads in progress, {} parked in unfinished ones, quota {})",
        plan.target,
        plan.length,
        account.used,
        account.reserved,
        account.parked.saturating_sub(own_parked),
        account.quota.unwrap_or(0)
    );
    error(out, id, Code::QuotaExceeded, &message);
}

/// Opens the partial file, keeps what an earlier attempt left (if it is
/// not longer than the file), and hashes that kept part, on a worker;
/// then reserves the quota and answers `put` with the offset to send from.
fn open_upload(plan: Plan) -> Next {
    let partial = plan.claim.account.borrow().partial.clone();
    let name = plan.claim.name.clone();
    let length = plan.length;
    Next::Job(Job::new(
        "put-open",
        Lane::Bulk,
        move || -> io::Result<(File, Md5, u64)> {
            let mut options = cap_std::fs::OpenOptions::new();
            options.read(true).write(true).create(true);
            let mut file = partial.open_with(&name, &options)?.into_std();
            let mut kept = file.metadata()?.len();
            if kept > length {
                kept = 0;
            }
            file.set_len(kept)?;
            let (hasher, kept) = digests::hash_prefix(&file, kept)?;
            file.seek(SeekFrom::Start(kept))?;
            Ok((file, hasher, kept))
        },
        move |opened, id, session, out, _ctx| {
            let (file, hasher, kept) = match opened {
                Ok(v) => v,
                Err(e) => {
                    error(out, id, Code::Io, &format!("cannot start the upload: {e}"));
                    return Next::Done;
                }
            };
            let account_rc = plan.claim.account.clone();
            let mut account = account_rc.borrow_mut();
            let own_parked = plan.kept.min(account.parked);
            if !account.fits(plan.need, own_parked) {
                // Others reserved meanwhile.
                refuse_quota(&plan, &account, own_parked, id, out);
                return Next::Done;
            }
            account.parked -= own_parked;
            account.reserved = account.reserved.saturating_add(plan.need);
            drop(account);
            if kept > 0 {
                debug!("conn {}: resuming {} at {kept}", session.key, plan.target);
            }
            let upload = Upload {
                id: id.cloned(),
                path: plan.target,
                length: plan.length,
                md5: plan.md5,
                disk: Some(Partial {
                    file,
                    hasher: Some(hasher),
                    written: kept,
                }),
                pending: Vec::new(),
                failed: None,
                reservation: Reservation {
                    account: account_rc,
                    bytes: plan.need,
                },
                keeps_partial: true,
                claim: plan.claim,
                _lock: plan.lock,
            };
            ok(out, id).field("offset", kept).finish();
            session.upload = Some(Box::new(upload));
            Next::Done
        },
    ))
}

/// `put` with `discard: true`: deletes the partial file kept for this
/// path, length and MD5, and says how many bytes it held.
fn discard(claim: Claim) -> Next {
    let partial = claim.account.borrow().partial.clone();
    let name = claim.name.clone();
    Next::Job(Job::new(
        "discard",
        Lane::Quick,
        move || -> io::Result<u64> {
            let len = match partial.metadata(&name) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            partial.remove_file(&name)?;
            Ok(len)
        },
        move |removed, id, _session, out, _ctx| {
            match removed {
                Ok(bytes) => {
                    let mut account = claim.account.borrow_mut();
                    account.parked = account.parked.saturating_sub(bytes);
                    ok(out, id).field("discarded", bytes).finish();
                }
                Err(e) => error(out, id, Code::Io, &format!("cannot discard: {e}")),
            }
            Next::Done
        },
    ))
}

/// `data` with the id of the `put` before it: the body is the file from
/// the offset `put` answered.
pub fn data(header: &Header, session: &mut Session) -> Result<Next, Refusal> {
    let Some(upload) = session.upload.take() else {
        return Err((Code::BadRequest, "data without a put before it".into()));
    };
    if header.id != upload.id {
        let message = "data must carry the id of its put".to_string();
        session.upload = Some(upload);
        return Err((Code::BadRequest, message));
    }
    let expected = upload.length - upload.written();
    if header.size != expected {
        let message = format!(
            "data size must be length - offset = {expected}, not {}",
            header.size
        );
        session.upload = Some(upload);
        return Err((Code::BadRequest, message));
    }
    Ok(Next::Body(Sink::Upload(upload)))
}

/// Whether a write failed because the disk (or the user's file-system
/// quota) is full.
pub fn disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The `data` body has ended: write the last batch and finish the MD5 on
/// a worker, then verify, then make the file visible.
pub fn finish_upload(mut upload: Upload, id: Option<&Number>, out: &mut Vec<u8>) -> Next {
    if let Some(e) = upload.failed.take() {
        return failed(upload, e, id, out);
    }
    let Some(mut disk) = upload.disk.take() else {
        error(out, id, Code::Internal, "the upload lost its file");
        return Next::Done;
    };
    let batch = std::mem::take(&mut upload.pending);
    Next::Job(Job::new(
        "verify",
        Lane::Bulk,
        move || {
            let appended = disk.append(&batch);
            let digest = disk.digest();
            (disk, appended, digest)
        },
        move |(disk, appended, digest), id, _session, out, _ctx| {
            let written = disk.written;
            upload.disk = Some(disk);
            if let Err(e) = appended {
                return failed(upload, e, id, out);
            }
            // A `put` is always hashed on the way (`None` never matches).
            let digest = match digest {
                Some(d) if d == upload.md5 && written == upload.length => d,
                _ => {
                    let got = digest.map_or_else(|| "unknown".to_string(), |d| hex(&d));
                    info!("upload of {} failed verification: got {got}", upload.path);
                    let message = format!(
                        "{}: MD5 of the received bytes is {got}; nothing was replaced",
                        upload.path
                    );
                    return delete_partial(upload, Code::ChecksumMismatch, message);
                }
            };
            store(upload, digest)
        },
    ))
}

/// Writing the body failed: on a full disk the partial goes (keeping it
/// would keep the disk full for everyone); otherwise it stays for a resume.
fn failed(upload: Upload, e: io::Error, id: Option<&Number>, out: &mut Vec<u8>) -> Next {
    if disk_full(&e) {
        let message = format!(
            "{}: writing failed: {e}; the partial upload was discarded to give the space back",
            upload.path
        );
        return delete_partial(upload, Code::Io, message);
    }
    let message = format!("{}: writing failed: {e}", upload.path);
    error(out, id, Code::Io, &message);
    Next::Done
}

/// Deletes the upload's partial file on a worker, then answers `code`.
fn delete_partial(mut upload: Upload, code: Code, message: String) -> Next {
    let (partial, name) = {
        let a = upload.claim.account.borrow();
        (a.partial.clone(), upload.claim.name.clone())
    };
    // From here on the partial is not parked, whatever happens to it.
    upload.keeps_partial = false;
    Next::Job(Job::new(
        "discard",
        Lane::Quick,
        move || partial.remove_file(&name),
        move |_removed, id, _session, out, _ctx| {
            drop(upload);
            error(out, id, code, &message);
            Next::Done
        },
    ))
}

/// Makes a whole partial file visible at `path` (virtual) of `home`:
/// fsync, rename from `partial/name`, fsync the directory (so the rename
/// survives a crash too). Returns the size of the file it replaced (0 if
/// none) and the new file's key. For a worker.
pub fn land(
    file: File,
    home: &cap_std::fs::Dir,
    partial: &cap_std::fs::Dir,
    name: &str,
    path: &str,
) -> Result<(u64, FileKey), Refusal> {
    let rel = jail::relative(path);
    file.sync_all().map_err(|e| jail::io_error(&e, path))?;
    let replaced = home
        .symlink_metadata(&rel)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    partial
        .rename(name, home, &rel)
        .map_err(|e| jail::io_error(&e, path))?;
    if let Ok(parent) = home.open_dir(jail::relative(jail::parent(path))) {
        let _ = parent.into_std_file().sync_all();
    }
    let meta = file.metadata().map_err(|e| jail::io_error(&e, path))?;
    Ok((replaced, FileKey::of(&meta)))
}

/// Makes a verified upload visible ([`land`]) on a worker.
fn store(mut upload: Upload, digest: [u8; 16]) -> Next {
    let (home, partial) = {
        let a = upload.claim.account.borrow();
        (a.home.clone(), a.partial.clone())
    };
    let name = upload.claim.name.clone();
    let path = upload.path.clone();
    let file = match &upload.disk {
        Some(d) => d.file.try_clone(),
        None => Err(io::Error::other("the upload lost its file")),
    };
    Next::Job(Job::new(
        "store",
        Lane::Bulk,
        move || {
            land(
                file.map_err(|e| (Code::Io, e.to_string()))?,
                &home,
                &partial,
                &name,
                &path,
            )
        },
        move |stored, id, _session, out, ctx| {
            let (replaced, key) = match stored {
                Ok(v) => v,
                Err((code, message)) => {
                    error(out, id, code, &message);
                    return Next::Done;
                }
            };
            upload.keeps_partial = false;
            {
                let mut account = upload.claim.account.borrow_mut();
                account.used = account
                    .used
                    .saturating_sub(replaced)
                    .saturating_add(upload.length);
            }
            ctx.services.digests.remember(key, digest);
            info!(
                "stored {} ({} bytes, md5 {})",
                upload.path,
                upload.length,
                hex(&digest)
            );
            ok(out, id)
                .field("length", upload.length)
                .field("md5", hex(&digest))
                .finish();
            Next::Done
        },
    ))
}
