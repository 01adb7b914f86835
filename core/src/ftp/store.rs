//! What `STOR` and `APPE` write into: the framed protocol's upload rules
//! ([`crate::handlers::upload`]) with FTP's way of saying things.
//!
//! The bytes go into a partial file outside the home (through two pipes,
//! by `splice`, when they need not be seen: [`crate::upload_pipe`]; else
//! copied through two buffers, and hashed on the way with
//! `--ftp-hash-uploads`), and the file appears at its path only when the
//! client has closed the data connection: an interrupted `STOR` leaves
//! the old file whole.
//! FTP declares neither length nor MD5 up front, so the partial is named
//! after the path alone, and kept when a transfer breaks off:
//!
//! ```text
//!   what a path "has", for SIZE and for resuming:
//!       the kept partial of an interrupted upload, if there is one,
//!       else the stored file
//!   STOR            starts from nothing (a kept partial is discarded)
//!   REST n + STOR   keeps the first n bytes of that, then appends
//!   APPE            keeps all of it, then appends
//! ```
//!
//! So `curl -C -` (`SIZE`, then `APPE`) and `REST`+`STOR` clients resume
//! an interrupted upload where it stopped, and appending to a stored file
//! copies it into the partial first (on a worker), so even an `APPE`
//! that breaks off leaves the stored file as it was.
//!
//! **Quota.** `ALLO n` reserves `n` bytes at once. Beyond what is
//! reserved, each chunk is admitted only as far as the quota has room
//! (the bytes of the file being replaced are credited, since they go when
//! the new one lands). Partials of other, abandoned uploads are discarded
//! for room first, oldest first, as for `put`; then the transfer stops
//! with `552` and the partial is kept, for a `REST`+`STOR` once room is
//! made.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use cap_std::fs::Dir;
use md5::{Digest, Md5};

use crate::handlers::files::{Refusal, open_regular};
use crate::handlers::upload::{self, Claim, Partial, Reservation};
use crate::jail;
use crate::services::account::{Account, PathLock};
use crate::services::digests::{self, FileKey, hex};
use crate::upload_pipe::{PipeSlot, UploadPipe};
use skiff::proto::Code;

/// Bytes collected before a worker appends them (as for `put`), while
/// the server's buffers are under pressure.
pub const WRITE_BATCH: usize = upload::WRITE_BATCH;
/// Bytes collected before a worker appends them otherwise: each batch
/// costs a hand-off to a worker and back (two wake-ups), so larger ones
/// cost less CPU per GiB (BENCHMARKS.md §19f). Two of them per upload are
/// the most an upload holds.
pub const STREAM_BATCH: usize = 1 << 20;

/// The partial file's name for an FTP upload of `target`: one per path,
/// never the name of a framed `put`'s partial (those end in `.part` after
/// 32 hex digits; these start with `ftp-`).
pub fn partial_name(target: &str) -> String {
    let digest: [u8; 16] = Md5::digest(target.as_bytes()).into();
    format!("ftp-{}.part", hex(&digest))
}

/// How the client asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `STOR`: from nothing.
    Fresh,
    /// `REST n` then `STOR`: keep the first n bytes.
    At(u64),
    /// `APPE`: keep everything.
    Append,
}

/// What the upload's first bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Nothing: an empty partial.
    Empty,
    /// The first n bytes of the kept partial.
    Kept(u64),
    /// The first n bytes of the stored file, copied.
    Stored(u64),
}

impl Base {
    /// Bytes the partial holds once opened.
    pub fn bytes(self) -> u64 {
        match self {
            Base::Empty => 0,
            Base::Kept(n) | Base::Stored(n) => n,
        }
    }
}

/// What the disk says about a planned upload.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Size of the stored file it would replace (0 if none).
    pub existing: u64,
    /// Size of the kept partial (0 if none).
    pub kept: u64,
}

/// Checks a planned upload of `target`: its parent must be a directory of
/// the home, the target (if any) a regular file. For a worker.
pub fn check(home: &Dir, partial: &Dir, name: &str, target: &str) -> Result<Facts, Refusal> {
    let parent = jail::parent(target);
    let pmeta = home
        .metadata(jail::relative(parent))
        .map_err(|e| jail::io_error(&e, parent))?;
    if !pmeta.is_dir() {
        return Err((Code::NotADirectory, format!("{parent}: not a directory")));
    }
    let existing = match home.symlink_metadata(jail::relative(target)) {
        Ok(m) if m.is_dir() => {
            return Err((Code::IsADirectory, format!("{target}: is a directory")));
        }
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err((Code::Forbidden, format!("{target}: not a regular file"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(jail::io_error(&e, target)),
    };
    let kept = partial.metadata(name).map_or(0, |m| m.len());
    Ok(Facts { existing, kept })
}

/// Where the upload starts, or why it cannot (the text of a `554`).
pub fn choose_base(start: Start, facts: Facts) -> Result<Base, String> {
    let (from, have) = if facts.kept > 0 {
        ("the interrupted upload", facts.kept)
    } else {
        ("the file", facts.existing)
    };
    let base = |n: u64| {
        if n == 0 {
            Base::Empty
        } else if facts.kept > 0 {
            Base::Kept(n)
        } else {
            Base::Stored(n)
        }
    };
    match start {
        Start::Fresh | Start::At(0) => Ok(Base::Empty),
        Start::At(n) if n <= have => Ok(base(n)),
        Start::At(n) => Err(format!("cannot restart at {n}: {from} has {have} bytes")),
        Start::Append => Ok(base(have)),
    }
}

/// Opens the partial file `name` holding `base`'s bytes, positioned at
/// its end, with their MD5 if the upload is `hashed` on the way. For a
/// worker (it may copy or hash a big file).
pub fn open(
    home: &Dir,
    partial: &Dir,
    name: &str,
    target: &str,
    base: Base,
    hashed: bool,
) -> io::Result<Partial> {
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    let mut file = partial.open_with(name, &options)?.into_std();
    let (hasher, written) = match base {
        Base::Empty => {
            file.set_len(0)?;
            (hashed.then(Md5::new), 0)
        }
        Base::Kept(n) => {
            if file.metadata()?.len() < n {
                return Err(io::Error::other("the interrupted upload shrank"));
            }
            file.set_len(n)?;
            if hashed {
                let (hasher, n) = digests::hash_prefix(&file, n)?;
                (Some(hasher), n)
            } else {
                (None, n)
            }
        }
        Base::Stored(n) => {
            file.set_len(0)?;
            let (stored, _) = open_regular(home, target).map_err(|(_, m)| io::Error::other(m))?;
            (copy_prefix(&stored, &mut file, n, hashed)?, n)
        }
    };
    file.seek(SeekFrom::Start(written))?;
    Ok(Partial {
        file,
        hasher,
        written,
    })
}

/// Copies the first `len` bytes of `from` into `to`, hashing them if
/// `hashed`; without hashing the kernel copies (`copy_file_range`), and
/// the bytes never pass through this process.
fn copy_prefix(from: &File, to: &mut File, len: u64, hashed: bool) -> io::Result<Option<Md5>> {
    if !hashed {
        let copied = io::copy(&mut from.take(len), to)?;
        if copied != len {
            return Err(io::Error::other("the file shrank while it was copied"));
        }
        return Ok(None);
    }
    let mut from = from;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let got = from.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::other("the file shrank while it was copied"));
        }
        to.write_all(&buf[..got])?;
        hasher.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(Some(hasher))
}

/// An upload in progress.
#[derive(Debug)]
pub struct Store {
    /// The target, as the user sees it.
    pub path: String,
    /// The partial file; `None` while a worker appends to it.
    disk: Option<Partial>,
    /// Bytes in the partial or on their way to it (the base included):
    /// known while the file is out on a worker, so the quota admits the
    /// next batch's bytes meanwhile.
    handed: u64,
    /// Bytes received and not yet handed to a worker, copied here. They
    /// follow those waiting in `pipe`, if any.
    pending: Vec<u8>,
    /// The pipe the reactor splices the socket's bytes into, when the
    /// upload receives through pipes (`pipe_slot` is held).
    pipe: Option<UploadPipe>,
    /// The other pipe, empty, while `pipe` fills; `None` while a worker
    /// empties it.
    spare_pipe: Option<UploadPipe>,
    /// The pipe took no more though the socket had bytes: it is full in
    /// the kernel's count (of pages) before ours (of bytes).
    pipe_full: bool,
    /// This upload's right to receive through pipes; without it, bytes
    /// are copied.
    pipe_slot: Option<PipeSlot>,
    /// How many of them make a batch: [`STREAM_BATCH`], or [`WRITE_BATCH`]
    /// while the server's buffers are under pressure.
    batch: usize,
    /// The other of the two batch buffers, empty: while a worker writes
    /// one, the loop receives into the other.
    spare: Vec<u8>,
    /// The first write error: the rest of the transfer is refused.
    pub failed: Option<io::Error>,
    /// Size of the file this upload replaces: credited against the quota.
    existing: u64,
    /// Quota held for this upload: `ALLO`'s, grown as bytes arrive.
    reservation: Reservation,
    /// The quota ran out: what fit was taken, the rest is refused.
    pub over_quota: bool,
    /// A chunk held back until parked partials are discarded for room.
    blocked: Vec<u8>,
    /// Parked partials may still be discarded for room.
    may_discard: bool,
    /// The partial is still there (not landed, not thrown away).
    keeps_partial: bool,
    /// This upload's hold on its partial file.
    claim: Claim,
    /// This upload's hold on its target path.
    _lock: PathLock,
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.keeps_partial {
            upload::park(self.disk.as_ref(), self.claim.account());
        }
    }
}

/// A partial file and a batch of bytes on their way to a worker.
pub type Batch = (Partial, Received);

/// Bytes received for a worker to append: first those waiting in a pipe,
/// then those copied into memory.
#[derive(Debug, Default)]
pub struct Received {
    /// A pipe holding the batch's first bytes.
    pub pipe: Option<UploadPipe>,
    /// Bytes copied, after the pipe's.
    pub bytes: Vec<u8>,
}

impl Received {
    /// Appends the batch to `disk`, in order. For a worker.
    pub fn write_to(&mut self, disk: &mut Partial) -> io::Result<()> {
        if let Some(pipe) = &mut self.pipe {
            disk.append_pipe(pipe)?;
        }
        disk.append(&self.bytes)
    }

    /// Bytes in the batch.
    fn bytes_in(&self) -> usize {
        self.piped() + self.bytes.len()
    }

    /// Memory the batch holds (the pipe's bytes and the buffer).
    pub fn holds(&self) -> usize {
        self.piped() + self.bytes.capacity()
    }

    fn piped(&self) -> usize {
        self.pipe.as_ref().map_or(0, UploadPipe::len)
    }
}

/// The two pipes of an upload received by `splice`, and its right to them.
#[derive(Debug)]
pub struct Pipes {
    /// The pipe filled first.
    pub filling: UploadPipe,
    /// The pipe filled while a worker empties the first.
    pub spare: UploadPipe,
    /// Its slot among [`crate::upload_pipe::MOST_UPLOADS`].
    pub slot: PipeSlot,
}

/// Opens an upload's two pipes, or says why not (the upload then copies
/// its bytes). For a worker, with the partial file.
pub fn open_pipes() -> io::Result<(UploadPipe, UploadPipe)> {
    Ok((UploadPipe::open()?, UploadPipe::open()?))
}

impl Store {
    /// An upload into `disk` (already holding its base), holding
    /// `reservation`; received through `pipes` if there are some.
    pub fn new(
        path: String,
        disk: Partial,
        existing: u64,
        reservation: Reservation,
        claim: Claim,
        lock: PathLock,
        pipes: Option<Pipes>,
    ) -> Store {
        // (A hashed upload is given none: its worker could not hash what
        // a pipe holds, and `Partial::append_pipe` refuses it.)
        let (pipe, spare_pipe, pipe_slot) = match pipes {
            Some(p) => (Some(p.filling), Some(p.spare), Some(p.slot)),
            None => (None, None, None),
        };
        Store {
            path,
            handed: disk.written,
            disk: Some(disk),
            pending: Vec::new(),
            pipe,
            spare_pipe,
            pipe_full: false,
            pipe_slot,
            batch: STREAM_BATCH,
            spare: Vec::new(),
            failed: None,
            existing,
            reservation,
            over_quota: false,
            blocked: Vec::new(),
            may_discard: true,
            keeps_partial: true,
            claim,
            _lock: lock,
        }
    }

    /// Bytes received so far, the base included.
    pub fn received(&self) -> u64 {
        self.handed
            .saturating_add(self.piped() as u64)
            .saturating_add(self.pending.len() as u64)
    }

    /// Bytes waiting in the pipe being filled.
    fn piped(&self) -> usize {
        self.pipe.as_ref().map_or(0, UploadPipe::len)
    }

    /// Where the reactor should splice the socket's bytes, and how many
    /// at most: `None` when they must be read and copied instead
    /// ([`Store::take`]), which is also the way every limit is found
    /// (the quota, a failure, the batch being full). Bytes go into the
    /// pipe only while no copied ones wait, so a batch's pipe bytes
    /// always come before its copied ones.
    pub fn splice_into(&self) -> Option<(std::os::fd::BorrowedFd<'_>, usize)> {
        let pipe = self.pipe.as_ref()?;
        if self.pipe_slot.is_none()
            || !self.pending.is_empty()
            || self.pipe_full
            || self.failed.is_some()
            || self.over_quota
            || self.blocked()
        {
            return None;
        }
        let want = self.batch.saturating_sub(pipe.len()).min(pipe.room());
        let room = self.admits(want);
        (room > 0).then(|| (pipe.input(), room))
    }

    /// How many of `want` more bytes the quota admits as they come,
    /// without holding any back (no parked partial is discarded for them).
    fn admits(&self, want: usize) -> usize {
        let after = self.received().saturating_add(want as u64);
        let more = after
            .saturating_sub(self.existing)
            .saturating_sub(self.reservation.bytes());
        if more == 0 {
            return want;
        }
        let a = self.claim.account().borrow();
        let short = more.saturating_sub(room(&a, more));
        want.saturating_sub(usize::try_from(short).unwrap_or(usize::MAX))
    }

    /// The reactor spliced `n` bytes into the pipe (at most what
    /// [`Store::splice_into`] said): the reservation grows to hold them.
    pub fn spliced(&mut self, n: usize) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        pipe.filled(n);
        let more = self
            .received()
            .saturating_sub(self.existing)
            .saturating_sub(self.reservation.bytes());
        if more > 0 {
            let room = room(&self.claim.account().borrow(), more);
            self.reservation.grow(room);
            if room < more {
                // More than was admitted: the rest of the upload is refused.
                self.over_quota = true;
            }
        }
    }

    /// The pipe took nothing though the socket has bytes: it goes to a
    /// worker as it is. (The bytes may also have come just after the
    /// refusal, from an empty socket: then a pipe with bytes goes early,
    /// a smaller batch; an empty one cannot be full, and is offered again.)
    pub fn pipe_is_full(&mut self) {
        if self.piped() > 0 {
            self.pipe_full = true;
        }
    }

    /// The socket cannot splice: the rest of the upload is copied (what
    /// a pipe holds still goes to the file first).
    pub fn stop_splicing(&mut self) {
        self.pipe_slot = None;
        self.spare_pipe = None;
        if self.piped() == 0 {
            self.pipe = None;
        }
    }

    /// Takes as much of `chunk` as the quota admits; returns how much.
    /// Less than all of it sets [`Store::over_quota`]. When partials of
    /// other, abandoned uploads hold quota, a chunk that does not fit is
    /// held back whole instead ([`Store::blocked`]): discarding them may
    /// make room, and no byte may be skipped if the upload goes on.
    pub fn take(&mut self, chunk: &[u8]) -> usize {
        if self.failed.is_some() || self.over_quota || self.blocked() {
            return 0;
        }
        let after = self.received().saturating_add(chunk.len() as u64);
        let need = after.saturating_sub(self.existing);
        let more = need.saturating_sub(self.reservation.bytes());
        let admitted = if more == 0 {
            chunk.len()
        } else {
            let (room, parked) = {
                let a = self.claim.account().borrow();
                (room(&a, more), a.parked)
            };
            if room < more && parked > 0 && self.may_discard {
                self.blocked.extend_from_slice(chunk);
                return chunk.len();
            }
            self.reservation.grow(room);
            if room < more {
                self.over_quota = true;
                // `room` fewer than `more`, and `more` ≤ chunk.len().
                chunk.len() - usize::try_from(more - room).unwrap_or(chunk.len())
            } else {
                chunk.len()
            }
        };
        self.pending.extend_from_slice(&chunk[..admitted]);
        admitted
    }

    /// A chunk waits for parked partials to be discarded (see [`Store::take`]).
    pub fn blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Quota bytes the held-back chunk needs beyond what there is room for.
    pub fn shortfall(&self) -> u64 {
        let after = self.received().saturating_add(self.blocked.len() as u64);
        let more = after
            .saturating_sub(self.existing)
            .saturating_sub(self.reservation.bytes());
        let a = self.claim.account().borrow();
        more.saturating_sub(room(&a, more))
    }

    /// Parked partials were discarded (`freed` bytes): the held-back chunk
    /// is taken again. When nothing could be freed, no chunk is held back
    /// again: the quota is simply full.
    pub fn unblock(&mut self, freed: u64) {
        if freed == 0 {
            self.may_discard = false;
        }
        let chunk = std::mem::take(&mut self.blocked);
        self.take(&chunk);
    }

    /// Whether a worker is appending a batch to the partial now.
    pub fn writing(&self) -> bool {
        self.disk.is_none()
    }

    /// Whether a batch should go to a worker now.
    pub fn batch_full(&self) -> bool {
        self.pipe_full || self.piped().saturating_add(self.pending.len()) >= self.batch
    }

    /// Whether bytes wait to be written (and the file is here to take them).
    pub fn has_pending(&self) -> bool {
        (self.piped() > 0 || !self.pending.is_empty()) && self.disk.is_some()
    }

    /// Whether the received bytes all wait in a pipe that still has room.
    pub fn filling_pipe(&self) -> bool {
        self.piped() > 0 && self.pending.is_empty() && !self.batch_full()
    }

    /// The partial and the collected bytes, for a worker to append. A
    /// pipe with bytes goes with them, and the spare one is filled next.
    pub fn take_batch(&mut self) -> Option<Batch> {
        let disk = self.disk.take()?;
        let pipe = if self.piped() > 0 {
            std::mem::replace(&mut self.pipe, self.spare_pipe.take())
        } else {
            None
        };
        self.pipe_full = false;
        let bytes = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        let batch = Received { pipe, bytes };
        self.handed = disk.written.saturating_add(batch.bytes_in() as u64);
        Some((disk, batch))
    }

    /// A batch is back from the worker.
    pub fn put_back(&mut self, disk: Partial, batch: Received, written: io::Result<()>) {
        // A failed append may have written part of the batch.
        self.handed = disk.written;
        self.disk = Some(disk);
        let failed = written.is_err();
        if let Err(e) = written {
            self.failed.get_or_insert(e);
        }
        let Received { pipe, mut bytes } = batch;
        // An emptied pipe is filled again; one a failure left bytes in
        // goes (they would come before the next batch's).
        if let Some(p) = pipe.filter(|p| p.is_empty() && !failed && self.pipe_slot.is_some()) {
            if self.pipe.is_none() {
                self.pipe = Some(p);
            } else {
                self.spare_pipe = Some(p);
            }
        }
        bytes.clear();
        if self.pending.is_empty() {
            self.pending = bytes;
        } else {
            self.spare = bytes;
        }
    }

    /// Sizes batches for the server's buffers: small under `pressure`
    /// (and the allocations shrunk to match), large otherwise.
    pub fn fit_batch(&mut self, pressure: bool) {
        self.batch = if pressure { WRITE_BATCH } else { STREAM_BATCH };
        if pressure {
            self.spare.shrink_to(WRITE_BATCH);
            if self.pending.len() <= WRITE_BATCH {
                self.pending.shrink_to(WRITE_BATCH);
            }
        }
    }

    /// Memory held for received bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.capacity() + self.spare.capacity() + self.blocked.capacity() + self.piped()
    }

    /// What a worker needs to land the upload: the partial's directory and
    /// name, and the home.
    pub fn dirs(&self) -> (std::sync::Arc<Dir>, std::sync::Arc<Dir>, String) {
        let a = self.claim.account().borrow();
        (
            a.home.clone(),
            a.partial.clone(),
            self.claim.name().to_string(),
        )
    }

    /// The account the upload belongs to.
    pub fn account(&self) -> Rc<RefCell<Account>> {
        self.claim.account().clone()
    }

    /// The upload landed: the file it replaced (`replaced` bytes) is gone
    /// and the new one counts as used; the reservation is given back.
    pub fn landed(&mut self, replaced: u64, length: u64) {
        self.keeps_partial = false;
        let mut a = self.claim.account().borrow_mut();
        a.used = a.used.saturating_sub(replaced).saturating_add(length);
    }

    /// The partial was deleted (a full disk): nothing stays parked.
    pub fn discarded(&mut self) {
        self.keeps_partial = false;
    }
}

/// How many of `more` bytes the quota has room for.
fn room(account: &Account, more: u64) -> u64 {
    let Some(quota) = account.quota else {
        return more;
    };
    let held = account
        .used
        .saturating_add(account.reserved)
        .saturating_add(account.parked);
    quota.saturating_sub(held).min(more)
}

/// What finishing on a worker came to.
pub struct Finished {
    /// The partial file, back.
    pub disk: Partial,
    /// The landed file's MD5 (if it was hashed on the way), the size it
    /// replaced and its key; or why it failed.
    pub result: io::Result<(Option<[u8; 16]>, u64, FileKey)>,
}

/// Appends the last batch, finishes the MD5 (if hashed) and lands the
/// file. For a worker.
pub fn finish(
    (mut disk, mut batch): Batch,
    home: &Dir,
    partial: &Dir,
    name: &str,
    path: &str,
) -> Finished {
    let result = (|| {
        batch.write_to(&mut disk)?;
        let digest = disk.digest();
        let file = disk.file.try_clone()?;
        let (replaced, key) =
            upload::land(file, home, partial, name, path).map_err(|(_, m)| io::Error::other(m))?;
        Ok((digest, replaced, key))
    })();
    Finished { disk, result }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_the_kept_partial_first_then_the_stored_file() {
        let f = |existing, kept| Facts { existing, kept };
        assert_eq!(choose_base(Start::Fresh, f(10, 5)), Ok(Base::Empty));
        assert_eq!(choose_base(Start::At(0), f(10, 5)), Ok(Base::Empty));
        assert_eq!(choose_base(Start::At(3), f(10, 5)), Ok(Base::Kept(3)));
        assert!(choose_base(Start::At(6), f(10, 5)).is_err());
        assert_eq!(choose_base(Start::At(10), f(10, 0)), Ok(Base::Stored(10)));
        assert!(choose_base(Start::At(u64::MAX), f(10, 0)).is_err());
        assert_eq!(choose_base(Start::Append, f(10, 5)), Ok(Base::Kept(5)));
        assert_eq!(choose_base(Start::Append, f(10, 0)), Ok(Base::Stored(10)));
        assert_eq!(choose_base(Start::Append, f(0, 0)), Ok(Base::Empty));
    }

    #[test]
    fn partial_names_differ_by_path_and_from_framed_ones() {
        assert_ne!(partial_name("/a"), partial_name("/b"));
        assert!(partial_name("/a").starts_with("ftp-"));
    }
}
