//! The file service: `pwd`, `cd`, `mkdir`, `rm`, `quota`, `get` inside
//! the user's jailed home (see [`crate::jail`]); `ls` is in
//! [`super::listing`], `put` and `data` in [`super::upload`].
//!
//! Every call that touches the disk runs in a [`Job`] on a worker: the
//! handler checks the request on the loop, hands the blocking part owned
//! inputs (an `Arc<Dir>` of the home, a clean relative path), and its
//! `then` writes the reply when the result comes back. So a directory of
//! 200,000 entries, a FIFO planted in a home or a 1 GiB unlink slow down
//! only the client that asked.
//!
//! `get` takes two jobs when the file's MD5 is not known yet: open and
//! `fstat` (quick), then hash (bulk, shared by every `get` of the same
//! file, see [`crate::services::digests`]). Then the body goes out as the socket
//! takes it ([`Sending`]), straight from the page cache where it can.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

use cap_std::fs::{Dir, OpenOptionsExt};
use log::{debug, info, warn};
use serde_json::{Number, Value};

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Job, Next, Session, error, ok};
use crate::ctx::Ctx;
use crate::jail;
use crate::pool::Lane;
use crate::services::account::{Account, PathLock};
use crate::services::digests::{FileKey, hex};
use crate::warm::{WINDOW, Warmth, warm};

/// A refused request: the error code and message for the reply.
pub type Refusal = (Code, String);

/// A file being sent as a `get` body, as the socket takes it: straight
/// from the page cache with `sendfile(2)` by the reactor when `zero_copy`,
/// else read into the output buffer a buffer-full at a time by a worker
/// ([`Sending::read_job`]), as under TLS, which must encrypt every byte.
///
/// A range the reactor finds not cached is first read in by a worker
/// ([`Sending::warm_window`], see [`crate::warm`]), so `sendfile` never
/// waits for the disk on the loop.
#[derive(Debug)]
pub struct Sending {
    /// The file, its offset at the next byte to send (`sendfile` goes on
    /// from it).
    pub file: File,
    /// That offset: where the next byte comes from.
    pub position: u64,
    /// Bytes still to send.
    pub remaining: u64,
    /// The reactor moves the bytes without copying them.
    pub zero_copy: bool,
    /// When copying: the allocation of the last buffer-full, handed back
    /// once the socket has taken it, for the next one (empty otherwise).
    pub spare: Vec<u8>,
    /// What is known of the file's pages in the page cache.
    pub warmth: Warmth,
}

/// What a step of [`Sending::step`] came to.
pub enum Step {
    /// More to send on a later turn.
    More,
    /// All sent: the connection takes the next request.
    Done,
    /// The file shrank: the stream can no longer be kept in sync.
    Close(&'static str),
}

impl Sending {
    /// Sends `remaining` bytes of `file`, which is positioned at `position`.
    pub fn new(file: File, position: u64, remaining: u64, zero_copy: bool) -> Sending {
        Sending {
            file,
            position,
            remaining,
            zero_copy,
            spare: Vec::new(),
            warmth: Warmth::default(),
        }
    }

    /// What to offer `sendfile` now: the offset, how many bytes, and
    /// whether a job has just read them into the page cache.
    pub fn file_offer(&self) -> (u64, u64, bool) {
        let (len, warmed) = self.warmth.offer(self.position, self.remaining);
        (self.position, len, warmed)
    }

    /// The socket took `n` bytes of the file.
    pub fn sent(&mut self, n: u64) {
        let n = n.min(self.remaining);
        self.remaining -= n;
        self.position += n;
    }

    /// Whether the next window should be warmed by a job before any more
    /// is sent: an earlier one was cold, and what was warmed is sent.
    pub fn wants_warming(&self) -> bool {
        self.zero_copy && self.remaining > 0 && self.warmth.warm_next(self.position)
    }

    /// On a worker: reads the next [`WINDOW`] into the page cache (and
    /// starts the kernel on the one after). False if the file ended
    /// before it (it shrank, or cannot be read): the send cannot go on.
    pub fn warm_window(&mut self, key: usize) -> bool {
        let len = self.remaining.min(WINDOW);
        match warm(&self.file, self.position, len) {
            Ok(got) if got == len => {
                self.warmth.warmed(self.position + len);
                true
            }
            Ok(got) => {
                warn!("conn {key}: file ended {got} bytes into a window being warmed");
                false
            }
            Err(e) => {
                warn!("conn {key}: reading a window into the page cache failed: {e}");
                false
            }
        }
    }

    /// A job that reads the next `limit` bytes of the file on a worker (a
    /// read can wait on the disk, which the loop must never do); back on
    /// the loop they join the output, and the send goes on from there
    /// once the socket has taken them.
    pub fn read_job(mut self, limit: usize, key: usize) -> Job {
        let mut job = Job::new(
            "read for get",
            Lane::Bulk,
            move || {
                let mut bytes = std::mem::take(&mut self.spare);
                let step = self.step(&mut bytes, limit, key);
                (self, bytes, step)
            },
            |(send, bytes, step): (Sending, Vec<u8>, Step), _id, _session, out, _ctx| {
                if out.is_empty() {
                    *out = bytes; // the common case: no copy
                } else {
                    out.extend_from_slice(&bytes);
                }
                match step {
                    Step::More => Next::Send(send),
                    Step::Done => Next::Done,
                    Step::Close(why) => Next::Close(why),
                }
            },
        );
        // The bytes it brings back count while it is away.
        job.holds = limit;
        job
    }

    /// A job that reads the next window of the file into the page cache
    /// on a worker ([`Sending::warm_window`]); back on the loop the send
    /// goes on by `sendfile`, from memory.
    pub fn warm_job(mut self, key: usize) -> Job {
        Job::new(
            "warm for get",
            Lane::Bulk,
            move || {
                let whole = self.warm_window(key);
                (self, whole)
            },
            |(send, whole): (Sending, bool), _id, _session, _out, _ctx| {
                if whole {
                    Next::Send(send)
                } else {
                    Next::Close("file changed during get")
                }
            },
        )
    }

    /// Copies up to the high-water mark of the file into `out`.
    ///
    /// `out` is normally the last buffer-full's allocation, handed back
    /// once written ([`Sending::spare`]): a fresh one per buffer-full is
    /// fresh pages from the kernel every time, whose page faults had cost
    /// more CPU than the read. Otherwise it is allocated once at the size
    /// the batch needs. No zero-fill: `read_to_end` reads straight into
    /// the vector's spare capacity.
    pub fn step(&mut self, out: &mut Vec<u8>, out_high: usize, key: usize) -> Step {
        let batch = out_high.saturating_sub(out.len());
        let batch = usize::try_from(self.remaining).map_or(batch, |r| r.min(batch));
        out.reserve_exact(batch);
        while self.remaining > 0 && out.len() < out_high {
            let want = out_high - out.len();
            let want = usize::try_from(self.remaining).map_or(want, |r| r.min(want));
            let start = out.len();
            let limit = u64::try_from(want).unwrap_or(u64::MAX);
            match (&mut self.file).take(limit).read_to_end(out) {
                Ok(0) | Err(_) => {
                    out.truncate(start);
                    warn!("conn {key}: file shrank or failed while being sent");
                    return Step::Close("file changed during get");
                }
                Ok(got) => {
                    self.sent(got as u64);
                }
            }
        }
        if self.remaining == 0 {
            Step::Done
        } else {
            Step::More
        }
    }
}

/// Handles a file-service request (the session is logged in).
pub fn request(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    let Some(account) = session.account.clone() else {
        error(out, id, Code::AuthRequired, "file ops need a login");
        return Next::Done;
    };
    let result = match header.op.as_str() {
        "pwd" => {
            ok(out, id).field("cwd", &session.cwd).finish();
            Ok(Next::Done)
        }
        "quota" => {
            let account = account.borrow();
            ok(out, id)
                .field("quota", account.quota)
                .field("used", account.used)
                .field("parked", account.parked)
                .finish();
            Ok(Next::Done)
        }
        "cd" => cd(header, session, &account.borrow()),
        "ls" => super::listing::ls(header, session, &account.borrow()),
        "mkdir" => mkdir(header, session, &account.borrow()),
        "rm" => rm(header, session, &account),
        "get" => get(header, session, &account.borrow(), ctx),
        "put" => super::upload::put(header, session, account),
        "data" => super::upload::data(header, session),
        op => Err((Code::UnknownOp, format!("unknown op {op:?}"))),
    };
    match result {
        Ok(next) => next,
        Err((code, message)) => {
            debug!(
                "conn {}: {} refused: {code}: {message}",
                session.key, header.op
            );
            error(out, id, code, &message);
            Next::Done
        }
    }
}

/// The `path` field: a string, required or not.
pub fn path_field(header: &Header, required: bool) -> Result<Option<&str>, Refusal> {
    match header.fields.get("path") {
        None if !required => Ok(None),
        Some(Value::String(p)) => Ok(Some(p)),
        _ => Err((Code::BadRequest, "\"path\" (a string) is required".into())),
    }
}

/// The request's path, resolved against the session's cwd (virtual).
pub fn resolve(header: &Header, session: &Session, required: bool) -> Result<String, Refusal> {
    let path = path_field(header, required)?.unwrap_or(".");
    jail::resolve(&session.cwd, path)
}

/// A job's result as an error reply, or the value for the next step.
pub(super) fn reply_or<T>(
    result: Result<T, Refusal>,
    id: Option<&Number>,
    out: &mut Vec<u8>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err((code, message)) => {
            error(out, id, code, &message);
            None
        }
    }
}

/// `target` if it names a directory in `home` (for `cd` and FTP's `CWD`;
/// on a worker: it may wait for the disk).
pub fn directory(home: &Dir, target: String) -> Result<String, Refusal> {
    let meta = home
        .metadata(jail::relative(&target))
        .map_err(|e| jail::io_error(&e, &target))?;
    if meta.is_dir() {
        Ok(target)
    } else {
        Err((Code::NotADirectory, format!("{target}: not a directory")))
    }
}

fn cd(header: &Header, session: &Session, account: &Account) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    let home = account.home.clone();
    Ok(Next::Job(Job::new(
        "cd",
        Lane::Quick,
        move || directory(&home, target),
        |result, id, session, out, _ctx| {
            if let Some(target) = reply_or(result, id, out) {
                session.cwd = target;
                ok(out, id).field("cwd", &session.cwd).finish();
            }
            Next::Done
        },
    )))
}

fn mkdir(header: &Header, session: &Session, account: &Account) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    if target == "/" {
        return Err((Code::Exists, "/: already exists".into()));
    }
    let home = account.home.clone();
    Ok(Next::Job(Job::new(
        "mkdir",
        Lane::Quick,
        move || {
            home.create_dir(jail::relative(&target))
                .map_err(|e| match e.kind() {
                    // mkdir makes one level: "not found" is about the
                    // parent, and naming the new directory would mislead.
                    std::io::ErrorKind::NotFound => (
                        Code::NotFound,
                        format!(
                            "{}: no such directory, so {target} cannot be made in it",
                            jail::parent(&target)
                        ),
                    ),
                    _ => jail::io_error(&e, &target),
                })
                .map(|()| target)
        },
        |result, id, session, out, _ctx| {
            if let Some(target) = reply_or(result, id, out) {
                info!(
                    "user {}: mkdir {target}",
                    session.user.as_deref().unwrap_or("?")
                );
                ok(out, id).finish();
            }
            Next::Done
        },
    )))
}

fn rm(header: &Header, session: &Session, account: &Rc<RefCell<Account>>) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    if target == "/" {
        return Err((Code::Forbidden, "/: your home cannot be removed".into()));
    }
    let lock = PathLock::take(account, &target)?;
    let home = account.borrow().home.clone();
    Ok(Next::Job(Job::new(
        "rm",
        Lane::Quick,
        // Returns the bytes the home no longer holds.
        move || -> Result<(String, u64), Refusal> {
            let rel = jail::relative(&target);
            let meta = home
                .symlink_metadata(&rel)
                .map_err(|e| jail::io_error(&e, &target))?;
            if meta.is_dir() {
                home.remove_dir(&rel)
                    .map_err(|e| jail::io_error(&e, &target))?;
                return Ok((target, 0));
            }
            home.remove_file(&rel)
                .map_err(|e| jail::io_error(&e, &target))?;
            let freed = if meta.is_file() { meta.len() } else { 0 };
            Ok((target, freed))
        },
        move |result, id, session, out, _ctx| {
            // Held until `used` is settled (see `PathLock`).
            let _lock = lock;
            if let Some((target, freed)) = reply_or(result, id, out) {
                if let Some(account) = &session.account {
                    let mut account = account.borrow_mut();
                    account.used = account.used.saturating_sub(freed);
                }
                info!(
                    "user {}: rm {target}",
                    session.user.as_deref().unwrap_or("?")
                );
                ok(out, id).finish();
            }
            Next::Done
        },
    )))
}

/// Opens a regular file of the home for reading, without ever blocking on
/// what is not one: `O_NONBLOCK` makes the open of a FIFO return at once
/// (instead of waiting for a writer forever), and the `fstat` after it
/// refuses everything but a regular file. Symlinks out of the home fail in
/// the open itself (see [`crate::jail`]). For a worker.
pub fn open_regular(home: &Dir, target: &str) -> Result<(File, std::fs::Metadata), Refusal> {
    let mut options = cap_std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = home
        .open_with(jail::relative(target), &options)
        .map_err(|e| jail::io_error(&e, target))?
        .into_std();
    let meta = file.metadata().map_err(|e| jail::io_error(&e, target))?;
    if meta.is_dir() {
        return Err((Code::IsADirectory, format!("{target}: is a directory")));
    }
    if !meta.is_file() {
        return Err((
            Code::Forbidden,
            format!("{target}: not a regular file (a FIFO, socket or device)"),
        ));
    }
    Ok((file, meta))
}

fn get(header: &Header, session: &Session, account: &Account, ctx: &Ctx) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    let offset = match header.fields.get("offset") {
        None => 0,
        Some(v) => v.as_u64().ok_or((
            Code::BadRequest,
            "\"offset\" must be a non-negative integer".into(),
        ))?,
    };
    let home = account.home.clone();
    let digests = ctx.services.digests.clone();
    Ok(Next::Job(Job::new(
        "open",
        Lane::Quick,
        move || -> Result<(File, FileKey), Refusal> {
            let (file, meta) = open_regular(&home, &target)?;
            if offset > meta.len() {
                return Err((
                    Code::BadRequest,
                    format!("offset {offset} is past the end ({} bytes)", meta.len()),
                ));
            }
            Ok((file, FileKey::of(&meta)))
        },
        move |result, id, session, out, _ctx| {
            let Some((file, key)) = reply_or(result, id, out) else {
                return Next::Done;
            };
            if let Some(digest) = digests.cached(&key) {
                return start_send(file, key.len, offset, &digest, id, out);
            }
            debug!(
                "conn {}: no cached MD5; hashing {} bytes on a worker",
                session.key, key.len
            );
            let shared = digests.clone();
            Next::Job(Job::new(
                "hash",
                Lane::Hash,
                move || {
                    let digest = shared.digest_of(&file, key);
                    (file, digest)
                },
                move |(file, digest), id, _session, out, _ctx| match digest {
                    Ok(digest) => start_send(file, key.len, offset, &digest, id, out),
                    Err(message) => {
                        error(out, id, Code::Io, &message);
                        Next::Done
                    }
                },
            ))
        },
    )))
}

/// Writes the `get` reply header and starts sending from `offset`.
fn start_send(
    mut file: File,
    len: u64,
    offset: u64,
    digest: &[u8; 16],
    id: Option<&Number>,
    out: &mut Vec<u8>,
) -> Next {
    let size = len.saturating_sub(offset);
    // lseek only moves a number in the kernel: no disk is involved.
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        error(out, id, Code::Io, &format!("seek failed: {e}"));
        return Next::Done;
    }
    ok(out, id)
        .field("length", len)
        .field("md5", hex(digest))
        .field("offset", offset)
        .field("size", size)
        .finish();
    if size == 0 {
        Next::Done
    } else {
        Next::Send(Sending::new(file, offset, size, true))
    }
}
