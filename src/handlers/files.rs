//! The file service: `pwd`, `cd`, `ls`, `mkdir`, `rm`, `quota`, `get`,
//! `put` + `data`, inside the user's jailed home (see [`crate::jail`]).
//!
//! Nothing here holds a whole file or works on one in a single go:
//!
//! - `get` answers from the MD5 cache, or hashes the file in 1 MiB steps
//!   first ([`Job::Hash`]); then sends it as the socket takes it, one
//!   buffer-full per turn ([`Job::Send`]).
//! - `put` streams the body into a partial file outside the home, hashing
//!   on the way; only a whole, verified file is renamed into place, so an
//!   interrupted or mismatched upload never touches the file that was
//!   there. The partial file is kept, so the same `put` can resume.
//! - Quota is reserved at `put` from the declared length (concurrent
//!   uploads of one user cannot together pass it) and settled on the real
//!   size when the file lands.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::rc::Rc;

use cap_std::fs::Dir;
use log::{debug, info, warn};
use md5::{Digest, Md5};
use serde_json::{Number, Value};

use skiff::frame::Header;
use skiff::proto::Code;

use super::{Next, Session, Sink, error, ok};
use crate::conn::Ctx;
use crate::jail;

/// Bytes hashed per step of a hashing job (about 2 ms of MD5).
const HASH_STEP: usize = 1 << 20;
/// Bytes read from a file per `read` while sending.
const SEND_CHUNK: usize = 64 * 1024;
/// Bytes of an upload handed to writeback at a time.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Cached MD5s kept at most (one entry is ~64 bytes).
const MD5_CACHE_MAX: usize = 65536;

/// One user's storage, shared by all their sessions.
pub struct Account {
    /// The user's home: every path they name is resolved beneath it.
    pub home: Dir,
    /// Partial uploads, outside the home so `ls` never shows them.
    pub partial: Dir,
    /// Bytes stored in the home.
    pub used: u64,
    /// Bytes promised to uploads in progress.
    pub reserved: u64,
    /// Bytes in partial uploads no connection is sending: kept so the
    /// upload can resume, and counted against the quota meanwhile (else
    /// abandoned uploads could fill the disk past any quota). A `put`
    /// that needs their room discards them, oldest first.
    pub parked: u64,
    /// Partial files uploads in progress are writing: never discarded.
    active: Vec<String>,
    /// Most bytes the home may hold (None: unlimited).
    pub quota: Option<u64>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("used", &self.used)
            .field("reserved", &self.reserved)
            .field("parked", &self.parked)
            .field("quota", &self.quota)
            .finish()
    }
}

impl Account {
    /// Opens (creating if needed) the home and partial directories of
    /// `user` and measures what the home holds.
    pub fn open(data_dir: &std::path::Path, user: &str, quota: Option<u64>) -> io::Result<Account> {
        let authority = cap_std::ambient_authority();
        let home_path = crate::users::UserDb::home(data_dir, user);
        let partial_path = data_dir.join("partial").join(user);
        // Private like the homes: partial uploads are user data too.
        use std::os::unix::fs::DirBuilderExt;
        for p in [&home_path, &partial_path] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)?;
        }
        let home = Dir::open_ambient_dir(&home_path, authority)?;
        let partial = Dir::open_ambient_dir(&partial_path, authority)?;
        // One walk per user per server start; after that `used` is kept
        // up to date by put and rm.
        let used = disk_usage(&home, 0)?;
        let parked = disk_usage(&partial, 0)?;
        Ok(Account {
            home,
            partial,
            used,
            reserved: 0,
            parked,
            active: Vec::new(),
            quota,
        })
    }

    fn room(&self) -> u64 {
        match self.quota {
            Some(q) => q.saturating_sub(self.used + self.reserved + self.parked),
            None => u64::MAX,
        }
    }

    /// Deletes parked partial uploads, oldest first, until `need` bytes
    /// fit or none is left; `keep` and uploads in progress are spared.
    fn discard_parked(&mut self, need: u64, keep: &str) {
        let Ok(entries) = self.partial.entries() else {
            return;
        };
        let mut parked: Vec<(std::time::SystemTime, String, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                let when = meta.modified().ok()?.into_std();
                Some((when, name, meta.len()))
            })
            .filter(|(_, name, _)| name != keep && !self.active.contains(name))
            .collect();
        parked.sort();
        for (_, name, len) in parked {
            if self.room() >= need {
                break;
            }
            if self.partial.remove_file(&name).is_ok() {
                info!("discarded the parked partial upload {name} ({len} bytes) for room");
                self.parked = self.parked.saturating_sub(len);
            }
        }
    }
}

fn disk_usage(dir: &Dir, depth: usize) -> io::Result<u64> {
    if depth > 64 {
        return Ok(0);
    }
    let mut total = 0;
    for entry in dir.entries()? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += disk_usage(&entry.open_dir()?, depth + 1)?;
        } else if ft.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Identity of a file's content: a changed file gets a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        }
    }
}

/// MD5 of files we have hashed or verified, by content identity.
#[derive(Debug, Default)]
pub struct Md5Cache {
    /// Digest by (device, inode, length, mtime).
    map: HashMap<(u64, u64), (FileKey, [u8; 16])>,
}

impl Md5Cache {
    fn get(&self, key: &FileKey) -> Option<[u8; 16]> {
        self.map
            .get(&(key.dev, key.ino))
            .filter(|(k, _)| k == key)
            .map(|(_, d)| *d)
    }

    fn put(&mut self, key: FileKey, digest: [u8; 16]) {
        if self.map.len() >= MD5_CACHE_MAX && !self.map.contains_key(&(key.dev, key.ino)) {
            // Forget an arbitrary entry: a miss only costs one re-hash.
            if let Some(k) = self.map.keys().next().copied() {
                self.map.remove(&k);
            }
        }
        self.map.insert((key.dev, key.ino), (key, digest));
    }
}

fn hex(digest: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_md5(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Bytes of quota held for an upload in progress; given back on drop,
/// whether the upload lands, fails or its connection dies.
#[derive(Debug)]
struct Reservation {
    account: Rc<RefCell<Account>>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.account.borrow_mut().reserved -= self.bytes;
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
    /// Name of the partial file in the account's partial directory.
    partial_name: String,
    /// The partial file, open for appending.
    file: File,
    /// MD5 of the bytes written so far.
    hasher: Md5,
    /// Bytes in the partial file.
    written: u64,
    /// The first write error, if any: the rest of the body is swallowed.
    failed: Option<io::Error>,
    /// Quota held until the upload ends.
    reservation: Reservation,
    /// The partial file is still there (not landed, not thrown away): when
    /// the upload ends it stays parked for a resume.
    keeps_partial: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let mut account = self.reservation.account.borrow_mut();
        if let Some(i) = account.active.iter().position(|n| *n == self.partial_name) {
            account.active.swap_remove(i);
        }
        if self.keeps_partial {
            // The file's size, not `written`: a resume still hashing its
            // kept part has written nothing yet.
            account.parked += self.file.metadata().map_or(self.written, |m| m.len());
        }
    }
}

impl Upload {
    /// Appends one piece of the body (called with bounded chunks).
    pub fn write(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.file.write_all(chunk) {
            Ok(()) => {
                self.hasher.update(chunk);
                let before = self.written;
                self.written += chunk.len() as u64;
                // Start writing each finished 8 MiB to disk now, so the
                // fsync before the rename finds little left to do: a 1 GiB
                // upload does not end in a long stall of the loop.
                if before / WRITEBACK_STEP != self.written / WRITEBACK_STEP {
                    let end = self.written / WRITEBACK_STEP * WRITEBACK_STEP;
                    skiff::os::start_writeback(&self.file, end - WRITEBACK_STEP, WRITEBACK_STEP);
                }
            }
            Err(e) => self.failed = Some(e),
        }
    }
}

/// Work done in steps, one per loop turn, while later requests wait.
#[derive(Debug)]
pub enum Job {
    /// Hashing a file before the reply can be written.
    Hash(Box<HashJob>),
    /// Sending a file's bytes as the socket takes them: straight from the
    /// page cache with `sendfile(2)` by the reactor when `zero_copy`, else
    /// copied through the output buffer a buffer-full per turn.
    Send {
        /// The file, positioned at the next byte to send.
        file: File,
        /// Bytes still to send.
        remaining: u64,
        /// The reactor moves the bytes without copying them.
        zero_copy: bool,
    },
    /// A reply held back until a time (login throttling).
    Delay {
        /// When to write it.
        until: std::time::Instant,
        /// The whole reply frame.
        reply: Vec<u8>,
    },
}

/// A hashing job and what to do when it completes.
#[derive(Debug)]
pub struct HashJob {
    file: File,
    hasher: Md5,
    done: u64,
    len: u64,
    then: AfterHash,
}

#[derive(Debug)]
enum AfterHash {
    /// Reply to `get` and send from `offset`.
    Get { key: FileKey, offset: u64 },
    /// The kept part of an interrupted upload is hashed: reply to `put`.
    Resume(Box<Upload>),
}

impl Job {
    /// The job's name for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Hash(_) => "hashing",
            Job::Send { .. } => "sending-file",
            Job::Delay { .. } => "delaying-reply",
        }
    }
}

/// What a step of a job came to.
pub enum Step {
    /// More to do; call again on a later turn.
    More,
    /// Replaced by another job.
    Then(Job),
    /// Done: the connection takes the next request.
    Done,
    /// The stream can no longer be kept in sync: close.
    Close(&'static str),
}

/// Runs one bounded step of `job`.
pub fn step(
    job: &mut Job,
    id: Option<&Number>,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) -> Step {
    match job {
        Job::Delay { until, reply } => {
            if ctx.now < *until {
                return Step::More;
            }
            out.append(reply);
            Step::Done
        }
        Job::Send {
            zero_copy: true, ..
        } => Step::More, // the reactor's turn
        Job::Send {
            file, remaining, ..
        } => {
            while *remaining > 0 && out.len() < ctx.limits.out_high {
                let n = SEND_CHUNK.min(usize::try_from(*remaining).unwrap_or(SEND_CHUNK));
                let start = out.len();
                out.resize(start + n, 0);
                match std::io::Read::read(file, &mut out[start..]) {
                    Ok(0) | Err(_) => {
                        out.truncate(start);
                        warn!(
                            "conn {}: file shrank or failed while being sent",
                            session.key
                        );
                        return Step::Close("file changed during get");
                    }
                    Ok(got) => {
                        out.truncate(start + got);
                        *remaining -= got as u64;
                    }
                }
            }
            if *remaining == 0 {
                Step::Done
            } else {
                Step::More
            }
        }
        Job::Hash(h) => {
            let mut buf = vec![0u8; SEND_CHUNK];
            let mut budget = HASH_STEP;
            while h.done < h.len && budget > 0 {
                let n = SEND_CHUNK.min((h.len - h.done) as usize);
                match h.file.read_at(&mut buf[..n], h.done) {
                    Ok(0) => break,
                    Ok(got) => {
                        h.hasher.update(&buf[..got]);
                        h.done += got as u64;
                        budget = budget.saturating_sub(got);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        error(out, id, Code::Io, &format!("reading failed: {e}"));
                        return Step::Done;
                    }
                }
                if n > 0 && h.done < h.len && budget == 0 {
                    return Step::More;
                }
            }
            if h.done < h.len && budget > 0 {
                error(
                    out,
                    id,
                    Code::Io,
                    "the file changed while it was being hashed",
                );
                return Step::Done;
            }
            let placeholder = Job::Delay {
                until: ctx.now,
                reply: Vec::new(),
            };
            let Job::Hash(h) = std::mem::replace(job, placeholder) else {
                unreachable!()
            };
            let HashJob {
                file,
                hasher,
                then,
                len,
                ..
            } = *h;
            match then {
                AfterHash::Get { key, offset } => {
                    let digest: [u8; 16] = hasher.finalize().into();
                    ctx.services.md5_cache.put(key, digest);
                    start_send(file, len, offset, &digest, id, out)
                }
                AfterHash::Resume(upload) => {
                    // The hasher has seen exactly the kept prefix: the
                    // upload carries on from its state, one pass in all.
                    let mut upload = upload;
                    upload.hasher = hasher;
                    upload.written = len;
                    reply_put(&upload, id, out);
                    session.upload = Some(upload);
                    Step::Done
                }
            }
        }
    }
}

fn start_send(
    mut file: File,
    len: u64,
    offset: u64,
    digest: &[u8; 16],
    id: Option<&Number>,
    out: &mut Vec<u8>,
) -> Step {
    let size = len - offset;
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        error(out, id, Code::Io, &format!("seek failed: {e}"));
        return Step::Done;
    }
    ok(out, id)
        .field("length", len)
        .field("md5", hex(digest))
        .field("offset", offset)
        .field("size", size)
        .finish();
    if size == 0 {
        Step::Done
    } else {
        Step::Then(Job::Send {
            file,
            remaining: size,
            zero_copy: true,
        })
    }
}

fn reply_put(upload: &Upload, id: Option<&Number>, out: &mut Vec<u8>) {
    ok(out, id).field("offset", upload.written).finish();
}

type Refusal = (Code, String);

/// Handles a file-service request (the session is logged in).
pub fn request(header: &Header, session: &mut Session, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let id = header.id.as_ref();
    let result = match header.op.as_str() {
        "pwd" => {
            ok(out, id).field("cwd", &session.cwd).finish();
            Ok(Next::Done)
        }
        "quota" => {
            let account = session.account.as_ref().expect("logged in").borrow();
            ok(out, id)
                .field("quota", account.quota)
                .field("used", account.used)
                .field("parked", account.parked)
                .finish();
            Ok(Next::Done)
        }
        "cd" => cd(header, session, out),
        "ls" => ls(header, session, out),
        "mkdir" => mkdir(header, session, out),
        "rm" => rm(header, session, out),
        "get" => get(header, session, out, ctx),
        "put" => put(header, session, out),
        "data" => data(header, session),
        _ => unreachable!("dispatched by op"),
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

fn path_field(header: &Header, required: bool) -> Result<Option<&str>, Refusal> {
    match header.fields.get("path") {
        None if !required => Ok(None),
        Some(Value::String(p)) => Ok(Some(p)),
        _ => Err((Code::BadRequest, "\"path\" (a string) is required".into())),
    }
}

fn resolve(header: &Header, session: &Session, required: bool) -> Result<String, Refusal> {
    let path = path_field(header, required)?.unwrap_or(".");
    jail::resolve(&session.cwd, path)
}

fn account(session: &Session) -> Rc<RefCell<Account>> {
    session
        .account
        .clone()
        .expect("file ops run only after login")
}

fn cd(header: &Header, session: &mut Session, out: &mut Vec<u8>) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    let account = account(session);
    let meta = account
        .borrow()
        .home
        .metadata(jail::relative(&target))
        .map_err(|e| jail::io_error(&e, &target))?;
    if !meta.is_dir() {
        return Err((Code::NotADirectory, format!("{target}: not a directory")));
    }
    session.cwd = target;
    ok(out, header.id.as_ref())
        .field("cwd", &session.cwd)
        .finish();
    Ok(Next::Done)
}

/// One `ls` entry as the protocol lists it.
#[derive(serde::Serialize)]
struct Entry {
    name: String,
    kind: &'static str,
    size: u64,
    mtime: i64,
}

fn ls(header: &Header, session: &mut Session, out: &mut Vec<u8>) -> Result<Next, Refusal> {
    let target = resolve(header, session, false)?;
    let account = account(session);
    let account = account.borrow();
    let rel = jail::relative(&target);
    let meta = account
        .home
        .metadata(&rel)
        .map_err(|e| jail::io_error(&e, &target))?;
    let mut entries = Vec::new();
    let to_entry = |name: String, m: &cap_std::fs::Metadata| -> Option<Entry> {
        let kind = if m.is_dir() {
            "dir"
        } else if m.is_file() {
            "file"
        } else {
            return None; // symlinks and specials are not the user's files
        };
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Some(Entry {
            name,
            kind,
            size: if m.is_dir() { 0 } else { m.len() },
            mtime,
        })
    };
    if meta.is_file() {
        entries.extend(to_entry(
            jail::file_name(&target).unwrap_or("").to_string(),
            &meta,
        ));
    } else {
        let dir = account
            .home
            .read_dir(&rel)
            .map_err(|e| jail::io_error(&e, &target))?;
        for entry in dir {
            let entry = entry.map_err(|e| jail::io_error(&e, &target))?;
            let Ok(m) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            entries.extend(to_entry(name, &m));
            if entries.len() > 10_000 {
                return Err((
                    Code::TooBusy,
                    format!("{target}: more than 10000 entries; list a subdirectory"),
                ));
            }
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut reply = Vec::new();
    ok(&mut reply, header.id.as_ref())
        .field("entries", &entries)
        .try_finish()
        .map_err(|_| {
            (
                Code::TooBusy,
                format!("{target}: listing does not fit in one header; list a subdirectory"),
            )
        })?;
    out.extend_from_slice(&reply);
    Ok(Next::Done)
}

fn mkdir(header: &Header, session: &mut Session, out: &mut Vec<u8>) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    if target == "/" {
        return Err((Code::Exists, "/: already exists".into()));
    }
    let account = account(session);
    account
        .borrow()
        .home
        .create_dir(jail::relative(&target))
        .map_err(|e| jail::io_error(&e, &target))?;
    info!(
        "user {}: mkdir {target}",
        session.user.as_deref().unwrap_or("?")
    );
    ok(out, header.id.as_ref()).finish();
    Ok(Next::Done)
}

fn rm(header: &Header, session: &mut Session, out: &mut Vec<u8>) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    if target == "/" {
        return Err((Code::Forbidden, "/: your home cannot be removed".into()));
    }
    let account = account(session);
    let mut account = account.borrow_mut();
    let rel = jail::relative(&target);
    let meta = account
        .home
        .symlink_metadata(&rel)
        .map_err(|e| jail::io_error(&e, &target))?;
    if meta.is_dir() {
        account
            .home
            .remove_dir(&rel)
            .map_err(|e| jail::io_error(&e, &target))?;
    } else {
        account
            .home
            .remove_file(&rel)
            .map_err(|e| jail::io_error(&e, &target))?;
        if meta.is_file() {
            account.used = account.used.saturating_sub(meta.len());
        }
    }
    info!(
        "user {}: rm {target}",
        session.user.as_deref().unwrap_or("?")
    );
    ok(out, header.id.as_ref()).finish();
    Ok(Next::Done)
}

fn get(
    header: &Header,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &mut Ctx,
) -> Result<Next, Refusal> {
    let target = resolve(header, session, true)?;
    let offset = match header.fields.get("offset") {
        None => 0,
        Some(v) => v.as_u64().ok_or((
            Code::BadRequest,
            "\"offset\" must be a non-negative integer".into(),
        ))?,
    };
    let account = account(session);
    let file = account
        .borrow()
        .home
        .open(jail::relative(&target))
        .map_err(|e| jail::io_error(&e, &target))?
        .into_std();
    let meta = file.metadata().map_err(|e| jail::io_error(&e, &target))?;
    if meta.is_dir() {
        return Err((Code::IsADirectory, format!("{target}: is a directory")));
    }
    if !meta.is_file() {
        return Err((Code::BadRequest, format!("{target}: not a regular file")));
    }
    let len = meta.len();
    if offset > len {
        return Err((
            Code::BadRequest,
            format!("offset {offset} is past the end ({len} bytes)"),
        ));
    }
    let key = FileKey::of(&meta);
    if let Some(digest) = ctx.services.md5_cache.get(&key) {
        return Ok(
            match start_send(file, len, offset, &digest, header.id.as_ref(), out) {
                Step::Then(job) => Next::Busy(job),
                _ => Next::Done,
            },
        );
    }
    debug!(
        "conn {}: no cached MD5 for {target}; hashing {len} bytes in steps",
        session.key
    );
    Ok(Next::Busy(Job::Hash(Box::new(HashJob {
        file,
        hasher: Md5::new(),
        done: 0,
        len,
        then: AfterHash::Get { key, offset },
    }))))
}

fn put(header: &Header, session: &mut Session, out: &mut Vec<u8>) -> Result<Next, Refusal> {
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
    let account_rc = account(session);
    let mut account = account_rc.borrow_mut();
    // The parent must be a directory inside the home; the target, if it
    // exists, a file.
    let parent = jail::parent(&target);
    let pmeta = account
        .home
        .metadata(jail::relative(parent))
        .map_err(|e| jail::io_error(&e, parent))?;
    if !pmeta.is_dir() {
        return Err((Code::NotADirectory, format!("{parent}: not a directory")));
    }
    let existing = match account.home.symlink_metadata(jail::relative(&target)) {
        Ok(m) if m.is_dir() => {
            return Err((Code::IsADirectory, format!("{target}: is a directory")));
        }
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err((Code::Forbidden, format!("{target}: not a regular file"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(jail::io_error(&e, &target)),
    };
    // Replacing a file frees its bytes when the new one lands.
    let need = length.saturating_sub(existing);
    let partial_name = {
        let mut h = Md5::new();
        h.update(target.as_bytes());
        h.update(length.to_be_bytes());
        h.update(md5);
        format!("{}.part", hex(&h.finalize().into()))
    };
    // This upload's own parked part is already counted; it moves from
    // parked to the reservation.
    let own_parked = if account.active.contains(&partial_name) {
        0
    } else {
        account
            .partial
            .metadata(&partial_name)
            .map_or(0, |m| m.len())
            .min(account.parked)
    };
    if need > account.room() + own_parked {
        account.discard_parked(need - own_parked, &partial_name);
    }
    if need > account.room() + own_parked {
        return Err((
            Code::QuotaExceeded,
            format!(
                "{target}: {length} bytes would pass your quota ({} used, {} reserved by uploads in progress, {} parked in unfinished ones, quota {})",
                account.used,
                account.reserved,
                account.parked - own_parked,
                account.quota.unwrap_or(0)
            ),
        ));
    }
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    let file = account
        .partial
        .open_with(&partial_name, &options)
        .map_err(|e| (Code::Io, format!("cannot start the upload: {e}")))?
        .into_std();
    account.parked -= own_parked;
    account.active.push(partial_name.clone());
    drop(account);
    let mut kept = file.metadata().map(|m| m.len()).unwrap_or(0);
    if kept > length {
        kept = 0;
    }
    let mut file = file;
    file.set_len(kept)
        .and_then(|()| file.seek(SeekFrom::Start(kept)).map(|_| ()))
        .map_err(|e| (Code::Io, e.to_string()))?;
    account_rc.borrow_mut().reserved += need;
    let upload = Upload {
        id: header.id.clone(),
        path: target,
        length,
        md5,
        partial_name,
        file: file.try_clone().map_err(|e| (Code::Io, e.to_string()))?,
        hasher: Md5::new(),
        written: 0,
        failed: None,
        reservation: Reservation {
            account: account_rc,
            bytes: need,
        },
        keeps_partial: true,
    };
    // A new put replaces one announced earlier on this connection.
    session.upload = None;
    if kept == 0 {
        reply_put(&upload, header.id.as_ref(), out);
        session.upload = Some(Box::new(upload));
        return Ok(Next::Done);
    }
    debug!(
        "conn {}: resuming {} at {kept}; hashing the kept part in steps",
        session.key, upload.path
    );
    Ok(Next::Busy(Job::Hash(Box::new(HashJob {
        file,
        hasher: Md5::new(),
        done: 0,
        len: kept,
        then: AfterHash::Resume(Box::new(upload)),
    }))))
}

fn data(header: &Header, session: &mut Session) -> Result<Next, Refusal> {
    let Some(upload) = session.upload.take() else {
        return Err((Code::BadRequest, "data without a put before it".into()));
    };
    if header.id != upload.id {
        let message = "data must carry the id of its put".to_string();
        session.upload = Some(upload);
        return Err((Code::BadRequest, message));
    }
    let expected = upload.length - upload.written;
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

/// The `data` body has ended: verify, then make the file visible.
pub fn finish_upload(mut upload: Upload, id: Option<&Number>, out: &mut Vec<u8>, ctx: &mut Ctx) {
    if let Some(e) = upload.failed.take() {
        // Keep what was written: the client may resume after freeing space.
        error(
            out,
            id,
            Code::Io,
            &format!("{}: writing failed: {e}", upload.path),
        );
        return;
    }
    let digest: [u8; 16] = std::mem::take(&mut upload.hasher).finalize().into();
    let account_rc = upload.reservation.account.clone();
    let mut account = account_rc.borrow_mut();
    if digest != upload.md5 || upload.written != upload.length {
        let _ = account.partial.remove_file(&upload.partial_name);
        upload.keeps_partial = false;
        info!(
            "upload of {} failed verification: got {}",
            upload.path,
            hex(&digest)
        );
        error(
            out,
            id,
            Code::ChecksumMismatch,
            &format!(
                "{}: MD5 of the received bytes is {}; nothing was replaced",
                upload.path,
                hex(&digest)
            ),
        );
        return;
    }
    let rel = jail::relative(&upload.path);
    let old = account
        .home
        .symlink_metadata(&rel)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    let landed = upload.file.sync_all().and_then(|()| {
        account
            .partial
            .rename(&upload.partial_name, &account.home, &rel)
    });
    if let Err(e) = landed {
        let (code, message) = jail::io_error(&e, &upload.path);
        error(out, id, code, &message);
        return;
    }
    upload.keeps_partial = false;
    // The rename must survive a crash too: sync the directory entry.
    if let Ok(parent) = account
        .home
        .open_dir(jail::relative(jail::parent(&upload.path)))
    {
        let _ = parent.into_std_file().sync_all();
    }
    account.used = account.used - old.min(account.used) + upload.length;
    if let Ok(meta) = upload.file.metadata() {
        ctx.services.md5_cache.put(FileKey::of(&meta), digest);
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hex_round_trip() {
        let d: [u8; 16] = Md5::digest(b"hello").into();
        assert_eq!(hex(&d), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(parse_md5(&hex(&d)), Some(d));
        assert_eq!(parse_md5("xyz"), None);
        assert_eq!(parse_md5(&"g".repeat(32)), None);
    }
}
