//! The file service as the client sees it: `login`, `pwd`, `cd`, `ls`,
//! `mkdir`, `rm`, `quota`, `say`, and the two transfers, `get` and `put`.
//! The shell and the one-shot commands run this very code.
//!
//! Transfers never hold a file in memory: bodies go through a few 256 KiB
//! buffers straight into the file (or from it). The MD5 is computed on a
//! thread of its own that gets the same buffers over a bounded channel, so
//! hashing overlaps with receiving and writing instead of adding to them.
//!
//! ```text
//!   get:  [LOCAL.part exists? hash it, offset = its length]
//!         get{path, offset} ──▶ ok{length, md5, offset, size} + body
//!         body ──▶ append to LOCAL.part (writeback every 8 MiB), MD5 on a
//!         second thread ──▶ fsync, compare ──▶ rename to LOCAL
//!         [resumed, and the MD5 differs or the offset is past the end:
//!          the part is stale ──▶ delete it, start over once from 0]
//!
//!   put:  [REMOTE a directory? (cd probe) ──▶ REMOTE/NAME]
//!         quota ──▶ refuse early if it cannot fit (hashing can take minutes)
//!         hash LOCAL ──▶ put{path, length, md5} ──▶ ok{offset}
//!         data{same id, size = length − offset} + bytes from offset
//!         ──▶ ok{length, md5} | error checksum_mismatch
//! ```
//!
//! Pushed `msg` frames (from `say`) may arrive before any reply; every
//! function here takes a `push` callback and hands them to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use skiff::client::{Client, Frame};
use skiff::frame::Header;

use crate::cmd::{self, CmdError, output_error};

/// Where pushed messages go: called with each `msg` frame as it arrives.
pub type Push<'a> = &'a mut dyn FnMut(Frame);

/// Bytes read from a local file per step (hashing and uploading), and the
/// size of the buffers `get` hands to the hashing thread.
const CHUNK: usize = 256 * 1024;
/// Buffers of [`CHUNK`] bytes shared with the hashing thread: a file of any
/// size costs at most this many.
const HASH_BUFFERS: usize = 4;
/// `get` asks the kernel to start writing back every this many bytes, so
/// the final fsync has little left to do.
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Files at least this large get a progress bar while they are hashed.
const HASH_BAR_MIN: u64 = 16 << 20;
/// Largest pushed message body kept for display; the rest is skipped.
const MAX_PUSH_BODY: u64 = 1 << 20;

/// Options shared by the transfers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// Tell the time and rate of each transfer even when stdout is not
    /// a terminal.
    pub verbose: bool,
}

impl Opts {
    /// Whether a transfer's last line tells its time and rate: on a
    /// terminal, where a person watches, or when asked with `-v`. Piped
    /// output keeps the short line scripts may already read.
    fn detailed(self) -> bool {
        self.verbose || io::stdout().is_terminal()
    }
}

/// Prints a pushed message as `[from] text` on stderr.
pub fn show_push(frame: Frame) {
    eprintln!("{}", push_text(&frame));
}

/// A pushed message as a person reads it: `[from] text`.
/// Why the server ended a connection nobody was waiting on, from the last
/// frame it sent: its shutdown notice, or an `error` (idle timeout,
/// account deleted).
pub fn last_word(frame: &Frame) -> String {
    if skiff::client::is_shutdown(&frame.header) {
        return "the server is shutting down".into();
    }
    match (frame.header.str("code"), frame.header.str("message")) {
        (Some(code), Some(message)) => {
            format!("the server closed the connection ({code}: {message})")
        }
        _ => format!(
            "the server closed the connection (after a {:?} frame)",
            frame.header.op
        ),
    }
}

pub fn push_text(frame: &Frame) -> String {
    format!(
        "[{}] {}",
        frame.header.str("from").unwrap_or("?"),
        String::from_utf8_lossy(&frame.body).trim_end_matches('\n')
    )
}

/// Sends a request with no body and returns its `ok` reply.
fn call(client: &mut Client, header: Value, push: Push) -> Result<Frame, CmdError> {
    let Value::Object(map) = header else {
        unreachable!("request headers are JSON objects");
    };
    let reply = client.request_with(map, &[], &mut *push)?;
    expect_ok(&reply.header)?;
    Ok(reply)
}

/// Checks that a reply is an `ok` (errors were already turned into `Err`).
fn expect_ok(header: &Header) -> Result<(), CmdError> {
    if header.op == "ok" {
        Ok(())
    } else {
        Err(CmdError::BadReply(format!(
            "expected an ok or error reply, got {:?}",
            header.op
        )))
    }
}

/// A field the protocol promises in a reply.
fn need_u64(header: &Header, key: &str) -> Result<u64, CmdError> {
    header
        .u64(key)
        .ok_or_else(|| CmdError::BadReply(format!("{} reply has no integer {key:?}", header.op)))
}

/// Reads frames until the reply to request `id`; pushed messages before it
/// go to `push`. An `error` reply becomes [`CmdError::Server`] (see
/// [`server_error`]). The reply's body, if any, is left for the caller to
/// read.
fn reply_header(client: &mut Client, id: u64, push: Push) -> Result<Header, CmdError> {
    loop {
        let header = client.recv_header()?;
        if header.op == "msg" && header.id.is_none() {
            let keep = header.size.min(MAX_PUSH_BODY);
            let mut body = Vec::with_capacity(keep as usize);
            client
                .read_body(keep, &mut body, |_| {})
                .map_err(cmd::io_error)?;
            client
                .read_body(header.size - keep, &mut io::sink(), |_| {})
                .map_err(cmd::io_error)?;
            push(Frame { header, body });
            continue;
        }
        if skiff::client::is_shutdown(&header) {
            return Err(cmd::io_error(skiff::client::shutting_down()));
        }
        if header.id.as_ref().and_then(|n| n.as_u64()) != Some(id) {
            return Err(CmdError::BadReply(format!(
                "expected the reply to request {id}, got {:?} for {:?}",
                header.op, header.id
            )));
        }
        if header.op == "error" {
            // Error replies carry no body, but stay in step if one does.
            client
                .read_body(header.size, &mut io::sink(), |_| {})
                .map_err(cmd::io_error)?;
            return Err(server_error(&header));
        }
        expect_ok(&header)?;
        return Ok(header);
    }
}

/// An `error` reply as a [`CmdError::Server`]. A login refused because of
/// earlier failures (`too_busy` with `"reason": "throttled"`) is said in
/// plain words, with the wait the server asks for in `retry_after`: the
/// password was not even checked, so "wrong password" would mislead.
fn server_error(header: &Header) -> CmdError {
    let code = header.str("code").unwrap_or("?").to_string();
    let throttled_for = header
        .u64("retry_after")
        .filter(|_| code == "too_busy" && header.str("reason") == Some("throttled"));
    let message = match throttled_for {
        Some(secs) => format!("too many failed logins, retry in {secs} s"),
        None => header.str("message").unwrap_or("").to_string(),
    };
    CmdError::Server { code, message }
}

/// Sends a bodiless header with a fresh id; returns the id.
fn send_request(client: &mut Client, header: Value) -> Result<u64, CmdError> {
    let Value::Object(mut map) = header else {
        unreachable!("request headers are JSON objects");
    };
    let id = client.next_id();
    map.insert("id".into(), id.into());
    client.send_header(map, 0).map_err(cmd::io_error)?;
    Ok(id)
}

/// What a successful login tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInfo {
    /// The user, as the server spells it.
    pub user: String,
    /// The session's current directory (`/` after a login).
    pub cwd: String,
    /// The user's quota in bytes (None: unlimited).
    pub quota: Option<u64>,
    /// Bytes the user stores.
    pub used: u64,
}

/// `login`.
pub fn login(
    client: &mut Client,
    user: &str,
    password: &str,
    push: Push,
) -> Result<LoginInfo, CmdError> {
    // Not `call`: its error path keeps only code and message, and a
    // throttled login's `retry_after` is what the user needs to know.
    let id = send_request(
        client,
        json!({"op": "login", "user": user, "password": password}),
    )?;
    let h = &reply_header(client, id, push)?;
    Ok(LoginInfo {
        user: h.str("user").unwrap_or(user).to_string(),
        cwd: h.str("cwd").unwrap_or("/").to_string(),
        quota: h.u64("quota"),
        used: h.u64("used").unwrap_or(0),
    })
}

/// Where a command finds the password for its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// `SKIFF_PASSWORD`, else a prompt on the terminal without echo.
    EnvOrPrompt,
    /// The first line of standard input (`--password-stdin`), so a script
    /// can pipe it in without putting it in the environment.
    StdinLine,
}

/// The password for `user`, from where `source` says.
pub fn read_password(user: &str, source: PasswordSource) -> Result<String, CmdError> {
    match source {
        PasswordSource::StdinLine => password_from_stdin(user),
        PasswordSource::EnvOrPrompt => match password_from_env()? {
            Some(p) => Ok(p),
            None => prompt_password(user),
        },
    }
}

/// `SKIFF_PASSWORD`, if it is set.
pub fn password_from_env() -> Result<Option<String>, CmdError> {
    std::env::var_os("SKIFF_PASSWORD")
        .map(|p| {
            p.into_string()
                .map_err(|_| CmdError::Usage("SKIFF_PASSWORD is not UTF-8".into()))
        })
        .transpose()
}

/// The next line of standard input, without its line end. It is read
/// through the process-wide `io::stdin()` buffer, so whatever follows the
/// line (a shell script, input forwarded to `exec`) is still there for the
/// next reader.
pub fn password_from_stdin(user: &str) -> Result<String, CmdError> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(CmdError::Usage(format!(
            "no password for {user}: standard input is empty"
        ))),
        Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_string()),
        Err(e) => Err(CmdError::Usage(format!(
            "reading the password from standard input: {e}"
        ))),
    }
}

/// Asks for `user`'s password on the terminal, without echo.
pub fn prompt_password(user: &str) -> Result<String, CmdError> {
    rpassword::prompt_password(format!("password for {user}: ")).map_err(|e| {
        CmdError::Usage(format!(
            "cannot read a password from the terminal ({e}); set SKIFF_PASSWORD or use --password-stdin"
        ))
    })
}

/// `pwd`: returns the session's current directory.
pub fn pwd(client: &mut Client, push: Push) -> Result<String, CmdError> {
    let reply = call(client, json!({"op": "pwd"}), push)?;
    cwd_of(&reply.header)
}

/// `cd`: returns the new current directory.
pub fn cd(client: &mut Client, path: &str, push: Push) -> Result<String, CmdError> {
    let reply = call(client, json!({"op": "cd", "path": path}), push)?;
    cwd_of(&reply.header)
}

fn cwd_of(header: &Header) -> Result<String, CmdError> {
    header
        .str("cwd")
        .map(str::to_string)
        .ok_or_else(|| CmdError::BadReply("reply has no \"cwd\"".into()))
}

/// `mkdir`.
pub fn mkdir(client: &mut Client, path: &str, push: Push) -> Result<(), CmdError> {
    call(client, json!({"op": "mkdir", "path": path}), push).map(drop)
}

/// `rm`: a file or an empty directory.
pub fn rm(client: &mut Client, path: &str, push: Push) -> Result<(), CmdError> {
    call(client, json!({"op": "rm", "path": path}), push).map(drop)
}

/// `say`: sends `text` to `to` (a user, or `*` for everyone else).
pub fn say(client: &mut Client, to: &str, text: &[u8], push: Push) -> Result<(), CmdError> {
    let Value::Object(map) = json!({"op": "say", "to": to}) else {
        unreachable!("a JSON object");
    };
    let reply = client.request_with(map, text, &mut *push)?;
    expect_ok(&reply.header)
}

/// One line of an `ls` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// `file` or `dir`.
    pub kind: String,
    /// Bytes.
    pub size: u64,
    /// Last change, Unix seconds.
    pub mtime: i64,
}

impl Entry {
    fn from_json(v: &Value) -> Option<Entry> {
        Some(Entry {
            name: v.get("name")?.as_str()?.to_string(),
            kind: v.get("kind")?.as_str()?.to_string(),
            size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
            mtime: v.get("mtime").and_then(Value::as_i64).unwrap_or(0),
        })
    }

    /// As `ls -l` shows it: kind, size, local date, name.
    pub fn line(&self) -> String {
        self.line_in(false)
    }

    /// [`Entry::line`], the size in binary units (`1.5 KiB`) when `human`.
    pub fn line_in(&self, human: bool) -> String {
        let kind = match self.kind.as_str() {
            "dir" => 'd',
            "file" => '-',
            _ => '?',
        };
        let size = if human {
            human_size(self.size)
        } else {
            self.size.to_string()
        };
        format!(
            "{kind} {size:>12} {} {}",
            crate::sys::local_time(self.mtime),
            escaped_name(&self.name)
        )
    }

    /// One line of JSON, with the fields of the protocol's `ls` entry.
    pub fn json(&self) -> String {
        json!({"name": self.name, "kind": self.kind, "size": self.size, "mtime": self.mtime})
            .to_string()
    }
}

/// A file name as one line of `ls -l` shows it: a newline (or any other
/// control character) in a name would otherwise split the line and forge
/// an entry, so these are written as escapes, and so is the backslash, so
/// that the escapes cannot be confused with a name that holds them. Other
/// names are shown as they are (`--json` always gives the exact name).
pub fn escaped_name(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(|c| c.is_control() || c == '\\') {
        return name.into();
    }
    let mut shown = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\t' => shown.push_str("\\t"),
            '\r' => shown.push_str("\\r"),
            '\\' => shown.push_str("\\\\"),
            c if c.is_control() => shown.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => shown.push(c),
        }
    }
    shown.into()
}

/// `ls`: returns the entries of `path` (the cwd when None), every page of
/// them.
pub fn ls(client: &mut Client, path: Option<&str>, push: Push) -> Result<Vec<Entry>, CmdError> {
    let mut all = Vec::new();
    ls_pages(client, path, push, |page| {
        all.extend(page);
        Ok(())
    })?;
    Ok(all)
}

/// `ls`, page by page: a reply with `next` has more entries from that
/// offset on, so `each` gets every page until one comes without `next`.
/// A large directory is printed as it arrives, never held whole.
pub fn ls_pages(
    client: &mut Client,
    path: Option<&str>,
    push: Push,
    mut each: impl FnMut(Vec<Entry>) -> Result<(), CmdError>,
) -> Result<(), CmdError> {
    let mut offset = 0;
    loop {
        let mut header = json!({"op": "ls"});
        if let Some(p) = path {
            header["path"] = json!(p);
        }
        if offset > 0 {
            header["offset"] = json!(offset);
        }
        let reply = call(client, header, &mut *push)?;
        let Some(Value::Array(list)) = reply.header.fields.get("entries") else {
            return Err(CmdError::BadReply(
                "ls reply has no \"entries\" list".into(),
            ));
        };
        let page = list
            .iter()
            .map(|v| {
                Entry::from_json(v).ok_or_else(|| {
                    CmdError::BadReply(format!("ls entry without name or kind: {v}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        each(page)?;
        match reply.header.fields.get("next") {
            None | Some(Value::Null) => return Ok(()),
            // Each page must move forward, or a confused server would
            // keep us asking for ever.
            Some(next) => match next.as_u64() {
                Some(next) if next > offset => offset = next,
                _ => {
                    return Err(CmdError::BadReply(format!(
                        "ls reply has \"next\": {next} after offset {offset}"
                    )));
                }
            },
        }
    }
}

/// How `ls` prints its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LsFormat {
    /// Kind, size in bytes, date, name (`ls -l`).
    #[default]
    Long,
    /// The same with sizes in binary units (`ls -lh`).
    Human,
    /// One JSON object per line, for scripts.
    Json,
}

impl LsFormat {
    /// The format asked for by `ls` options (`-l`, `-h`, `-lh`, `--json`);
    /// `None` for a word that is not one of them.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Option<LsFormat> {
        let (mut human, mut json) = (false, false);
        for flag in flags {
            match flag {
                "-l" | "--long" => {}
                "-h" | "-lh" | "-hl" | "--human" => human = true,
                "--json" => json = true,
                _ => return None,
            }
        }
        // JSON carries exact numbers; a human size would only lose digits.
        Some(match (json, human) {
            (true, _) => LsFormat::Json,
            (false, true) => LsFormat::Human,
            (false, false) => LsFormat::Long,
        })
    }

    /// One entry in this format.
    pub fn line(self, e: &Entry) -> String {
        match self {
            LsFormat::Long => e.line_in(false),
            LsFormat::Human => e.line_in(true),
            LsFormat::Json => e.json(),
        }
    }
}

/// `ls` printed one entry per line.
pub fn print_ls(
    client: &mut Client,
    path: Option<&str>,
    format: LsFormat,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    ls_pages(client, path, push, |page| {
        for e in page {
            writeln!(out, "{}", format.line(&e)).map_err(output_error)?;
        }
        Ok(())
    })
}

/// `quota`: returns (quota, used, parked); `parked` (bytes kept for
/// unfinished uploads) is 0 from servers that do not report it.
pub fn quota(client: &mut Client, push: Push) -> Result<(Option<u64>, u64, u64), CmdError> {
    let reply = call(client, json!({"op": "quota"}), push)?;
    Ok((
        reply.header.u64("quota"),
        need_u64(&reply.header, "used")?,
        reply.header.u64("parked").unwrap_or(0),
    ))
}

/// `quota` printed in human sizes.
pub fn print_quota(client: &mut Client, push: Push, out: &mut dyn Write) -> Result<(), CmdError> {
    let (limit, used, parked) = quota(client, push)?;
    let mut line = quota_line(limit, used);
    if parked > 0 {
        line += &format!(
            "; {} kept for unfinished uploads (given up when the room is needed)",
            human_size(parked)
        );
    }
    writeln!(out, "{line}").map_err(output_error)
}

/// `used 1.5 MiB of 10.0 MiB (15%), 8.5 MiB free`, or `used 3 B (no quota)`.
pub fn quota_line(limit: Option<u64>, used: u64) -> String {
    match limit {
        None => format!("used {} (no quota)", human_size(used)),
        Some(q) => {
            let pct = if q == 0 {
                100
            } else {
                (u128::from(used) * 100 / u128::from(q)) as u64
            };
            format!(
                "used {} of {} ({pct}%), {} free",
                human_size(used),
                human_size(q),
                human_size(q.saturating_sub(used))
            )
        }
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `10.0 MiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A progress bar on stderr for `len` bytes; hidden unless stderr is a
/// terminal, so pipes and tests stay clean.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:24!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An MD5 computed on a thread of its own. The caller fills buffers taken
/// from [`HashThread::buffer`] and passes them on with [`HashThread::feed`];
/// the thread hashes them in order and sends them back to be filled again,
/// so memory stays at [`HASH_BUFFERS`] chunks however large the file.
struct HashThread {
    /// Filled buffers, to be hashed (None once the input is complete).
    full: Option<SyncSender<Vec<u8>>>,
    /// Hashed buffers, empty again.
    empty: Receiver<Vec<u8>>,
    /// Buffers allocated so far (at most [`HASH_BUFFERS`]).
    made: usize,
    /// The thread; it returns the digest state when `full` closes.
    thread: Option<JoinHandle<Md5>>,
}

impl HashThread {
    /// Starts the thread with a fresh MD5.
    fn start() -> Result<HashThread, CmdError> {
        let (full, to_hash) = mpsc::sync_channel::<Vec<u8>>(HASH_BUFFERS);
        // Unbounded, yet never holds more than the HASH_BUFFERS that exist.
        let (done, empty): (Sender<Vec<u8>>, _) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("md5".into())
            .spawn(move || {
                let mut md5 = Md5::new();
                for mut buf in to_hash {
                    md5.update(&buf);
                    buf.clear();
                    // Nobody takes buffers back once the feeder is done.
                    let _ = done.send(buf);
                }
                md5
            })
            .map_err(|e| CmdError::local(format!("cannot start the hashing thread: {e}")))?;
        Ok(HashThread {
            full: Some(full),
            empty,
            made: 0,
            thread: Some(thread),
        })
    }

    /// An empty buffer with room for [`CHUNK`] bytes; waits for the thread
    /// to hand one back when all of them are in use.
    fn buffer(&mut self) -> Vec<u8> {
        if let Ok(buf) = self.empty.try_recv() {
            return buf;
        }
        if self.made < HASH_BUFFERS {
            self.made += 1;
            return Vec::with_capacity(CHUNK);
        }
        // An error means the thread is gone; `finish` reports that.
        self.empty
            .recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK))
    }

    /// Hands a filled buffer to the thread (empty ones are not sent).
    fn feed(&mut self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if let Some(full) = &self.full {
            // An error means the thread is gone; `finish` reports that.
            let _ = full.send(buf);
        }
    }

    /// Waits for everything fed to be hashed and returns the state.
    fn finish(mut self) -> Result<Md5, CmdError> {
        self.full = None;
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| CmdError::local("the hashing thread failed".into()))
    }
}

impl Drop for HashThread {
    /// Given up on (an error): closes the input and waits for the thread,
    /// which has at most [`HASH_BUFFERS`] buffers left to hash.
    fn drop(&mut self) {
        self.full = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Feeds exactly `len` bytes of `file` (from where it stands) to `hasher`.
fn hash_into(
    file: &mut File,
    len: u64,
    hasher: &mut HashThread,
    what: &str,
) -> Result<(), CmdError> {
    let bar = if len >= HASH_BAR_MIN {
        bar(len, &format!("hashing {what}"))
    } else {
        ProgressBar::hidden()
    };
    let mut left = len;
    while left > 0 {
        let mut buf = hasher.buffer();
        let want = CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX));
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match file.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(CmdError::local(format!(
                        "{what}: the file shrank while it was being read"
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CmdError::local(format!("{what}: {e}"))),
            }
        }
        hasher.feed(buf);
        left -= want as u64;
        bar.inc(want as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Where `get` puts the body: gathered into [`CHUNK`]-byte buffers, each
/// written to the part file, then handed to the hashing thread. Remembers
/// whether a failure was its own (the local file) rather than the
/// network's, and starts writeback every [`WRITEBACK_EVERY`] bytes.
struct PartWriter {
    file: File,
    hasher: HashThread,
    /// The buffer being filled.
    buf: Vec<u8>,
    /// File offset where the next write lands.
    end: u64,
    /// File offset up to which writeback was started.
    synced: u64,
    failed: bool,
}

impl PartWriter {
    /// Writes the buffer to the file and passes it to the hashing thread.
    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            self.failed = true;
            return Err(e);
        }
        self.end += self.buf.len() as u64;
        if self.end - self.synced >= WRITEBACK_EVERY {
            skiff::os::start_writeback(&self.file, self.synced, self.end - self.synced);
            self.synced = self.end;
        }
        let next = self.hasher.buffer();
        let full = std::mem::replace(&mut self.buf, next);
        self.hasher.feed(full);
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.write_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()
    }
}

/// The last component of a remote path (`a/b/c.txt` → `c.txt`), if it
/// names something a local file can be called.
pub fn remote_basename(remote: &str) -> Option<&str> {
    let name = remote.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// Where `get REMOTE [LOCAL]` stores the file: LOCAL, or LOCAL/NAME when
/// LOCAL is a directory, or NAME in the current directory.
pub fn local_target(remote: &str, local: Option<&Path>) -> Result<PathBuf, CmdError> {
    let name = remote_basename(remote);
    let need_name = || {
        name.ok_or_else(|| {
            CmdError::Usage(format!(
                "{remote:?} does not end in a file name; say where to store it: get REMOTE LOCAL"
            ))
        })
    };
    match local {
        None => Ok(PathBuf::from(need_name()?)),
        Some(dir) if dir.is_dir() => Ok(dir.join(need_name()?)),
        Some(path) => Ok(path.to_path_buf()),
    }
}

/// `LOCAL.part`: where a download grows until it is verified.
pub fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

/// Where `put LOCAL [REMOTE]` stores the file: REMOTE, REMOTE/NAME when
/// REMOTE ends in `/`, or NAME in the session's cwd.
pub fn remote_target(local: &Path, remote: Option<&str>) -> Result<String, CmdError> {
    let name = || {
        local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            CmdError::Usage(format!(
                "{} has no UTF-8 file name; say where to store it: put LOCAL REMOTE",
                local.display()
            ))
        })
    };
    match remote {
        None => Ok(name()?.to_string()),
        Some(r) if r.ends_with('/') => Ok(format!("{r}{}", name()?)),
        Some(r) => Ok(r.to_string()),
    }
}

/// Why one download attempt failed.
enum FetchError {
    /// `LOCAL.part` does not belong to the file now on the server (it
    /// changed or shrank since the download began): resuming from it can
    /// never succeed, but starting over can. Says why, for `-v`.
    StalePart(String),
    /// Anything else.
    Failed(CmdError),
}

impl From<CmdError> for FetchError {
    fn from(e: CmdError) -> Self {
        FetchError::Failed(e)
    }
}

/// What one download attempt moved.
struct Fetched {
    /// The whole file.
    length: u64,
    /// Where the download started (what `LOCAL.part` already held).
    offset: u64,
}

/// `get REMOTE [LOCAL]`: downloads into `LOCAL.part` (resuming from what
/// it holds), verifies the MD5 of the whole file, then renames it to
/// LOCAL. A part that turns out to come from an older version of the
/// remote file is deleted and the download starts over, once.
pub fn get(
    client: &mut Client,
    remote: &str,
    local: Option<&Path>,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let started = Instant::now();
    let target = local_target(remote, local)?;
    let part = part_path(&target);
    let fetched = match fetch(client, remote, &target, &part, &mut *push) {
        Ok(fetched) => fetched,
        Err(FetchError::StalePart(why)) => {
            eprintln!("{why}; starting over");
            fs::remove_file(&part)
                .map_err(|e| CmdError::local(format!("{}: {e}", part.display())))?;
            match fetch(client, remote, &target, &part, push) {
                Ok(fetched) => fetched,
                Err(FetchError::Failed(e)) => return Err(e),
                // Without a part there is nothing stale to blame.
                Err(FetchError::StalePart(why)) => {
                    return Err(CmdError::Server {
                        code: "checksum_mismatch".into(),
                        message: why,
                    });
                }
            }
        }
        Err(FetchError::Failed(e)) => return Err(e),
    };
    let shown = target.display().to_string();
    fs::rename(&part, &target)
        .map_err(|e| CmdError::local(format!("rename {} to {shown}: {e}", part.display())))?;
    let summary = Summary {
        length: fetched.length,
        moved: fetched.length - fetched.offset,
        elapsed: started.elapsed(),
    };
    writeln!(
        out,
        "{remote} -> {shown}: {}",
        summary.text(opts.detailed())
    )
    .map_err(output_error)
}

/// One download attempt into `part`, resuming from what it holds; on
/// success `part` holds the whole, verified file.
fn fetch(
    client: &mut Client,
    remote: &str,
    target: &Path,
    part: &Path,
    push: Push,
) -> Result<Fetched, FetchError> {
    let mut hasher = HashThread::start()?;
    let offset = match fs::metadata(part) {
        Ok(meta) if meta.is_file() => {
            let mut f = File::open(part)
                .map_err(|e| CmdError::local(format!("{}: {e}", part.display())))?;
            hash_into(&mut f, meta.len(), &mut hasher, &part.display().to_string())?;
            meta.len()
        }
        Ok(_) => {
            return Err(CmdError::local(format!(
                "{} is in the way and is not a file",
                part.display()
            ))
            .into());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent.filter(|d| !d.is_dir()) {
                return Err(
                    CmdError::local(format!("{}: no such local directory", dir.display())).into(),
                );
            }
            0
        }
        Err(e) => return Err(CmdError::local(format!("{}: {e}", part.display())).into()),
    };
    if offset > 0 {
        // Always said (on stderr): a transfer that skips most of a file
        // should not look like a suspiciously fast one.
        eprintln!("resuming at {offset}");
    }
    let request = if offset > 0 {
        json!({"op": "get", "path": remote, "offset": offset})
    } else {
        json!({"op": "get", "path": remote})
    };
    let id = send_request(client, request)?;
    let reply = match reply_header(client, id, push) {
        // The only offset the server refuses is one past the end: the
        // remote file shrank since the part was written.
        Err(CmdError::Server { code, message }) if offset > 0 && code == "bad_request" => {
            return Err(FetchError::StalePart(format!(
                "{} holds {offset} bytes, more than {remote} now has ({message})",
                part.display()
            )));
        }
        other => other?,
    };
    let length = need_u64(&reply, "length")?;
    let want = reply
        .str("md5")
        .ok_or_else(|| CmdError::BadReply("get reply has no \"md5\"".into()))?
        .to_ascii_lowercase();
    let got_offset = reply.u64("offset").unwrap_or(0);
    if got_offset != offset || length < offset || reply.size != length - offset {
        return Err(CmdError::BadReply(format!(
            "asked for {remote} from {offset}: got offset {got_offset}, length {length}, size {}",
            reply.size
        ))
        .into());
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .map_err(|e| CmdError::Local {
            message: format!("{}: {e}", part.display()),
            // The body is on its way and nobody reads it.
            broken: reply.size > 0,
        })?;
    let buf = hasher.buffer();
    let mut writer = PartWriter {
        file,
        hasher,
        buf,
        end: offset,
        synced: offset,
        failed: false,
    };
    let progress = bar(length, remote_basename(remote).unwrap_or(remote));
    progress.set_position(offset);
    let copied = client
        .read_body(reply.size, &mut writer, |n| progress.inc(n as u64))
        .and_then(|()| writer.flush());
    progress.finish_and_clear();
    if let Err(e) = copied {
        return Err(if writer.failed {
            CmdError::Local {
                message: format!("{}: {e}", part.display()),
                broken: true,
            }
        } else {
            cmd::io_error(e)
        }
        .into());
    }
    let PartWriter { file, hasher, .. } = writer;
    // The hashing thread finishes its last buffers meanwhile.
    file.sync_all()
        .map_err(|e| CmdError::local(format!("{}: {e}", part.display())))?;
    drop(file);
    let md5 = hasher.finish()?;
    let got = hex(&md5.finalize());
    if got != want {
        // A resumed download that fails the check most likely began on
        // another version of the file: its first `offset` bytes are stale.
        return Err(if offset > 0 {
            FetchError::StalePart(format!(
                "{}: the first {offset} bytes came from another version of {remote} \
                 (the whole file has MD5 {got}, the server says {want})",
                part.display()
            ))
        } else {
            FetchError::Failed(CmdError::Server {
                code: "checksum_mismatch".into(),
                message: format!(
                    "{remote}: received bytes have MD5 {got}, the server says {want}; kept {}",
                    part.display()
                ),
            })
        });
    }
    Ok(Fetched { length, offset })
}

/// `get REMOTE -`: the file's bytes straight to `out`, as `cat` would
/// print them. No part file, so nothing to resume; the MD5 is still
/// checked at the end, and a mismatch is an error (after the bytes went
/// out: a pipe cannot take them back).
pub fn cat(
    client: &mut Client,
    remote: &str,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let id = send_request(client, json!({"op": "get", "path": remote}))?;
    let reply = reply_header(client, id, push)?;
    let length = need_u64(&reply, "length")?;
    let want = reply
        .str("md5")
        .ok_or_else(|| CmdError::BadReply("get reply has no \"md5\"".into()))?
        .to_ascii_lowercase();
    if reply.size != length {
        return Err(CmdError::BadReply(format!(
            "asked for all of {remote}: got {} of {length} bytes",
            reply.size
        )));
    }
    /// Writes to `out` and hashes what was written.
    struct Tee<'a> {
        out: &'a mut dyn Write,
        md5: Md5,
        failed: bool,
    }
    impl Write for Tee<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = self.out.write(data).inspect_err(|_| self.failed = true)?;
            self.md5.update(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.out.flush().inspect_err(|_| self.failed = true)
        }
    }
    let mut tee = Tee {
        out,
        md5: Md5::new(),
        failed: false,
    };
    let copied = client
        .read_body(reply.size, &mut tee, |_| {})
        .and_then(|()| tee.flush());
    if let Err(e) = copied {
        return Err(if tee.failed {
            // The rest of the body is unread.
            CmdError::Local {
                message: format!("output: {e}"),
                broken: true,
            }
        } else {
            cmd::io_error(e)
        });
    }
    let got = hex(&tee.md5.finalize());
    if got != want {
        return Err(CmdError::Server {
            code: "checksum_mismatch".into(),
            message: format!("{remote}: received bytes have MD5 {got}, the server says {want}"),
        });
    }
    Ok(())
}

/// The last line of a transfer: size, and on a terminal (or with `-v`)
/// how long it took and how fast it went.
struct Summary {
    /// The whole file.
    length: u64,
    /// Bytes that crossed the network this time (less after a resume).
    moved: u64,
    /// From the start of the command to the verified file.
    elapsed: Duration,
}

impl Summary {
    /// `2.9 MiB (3000000 bytes)`, with `detailed`:
    /// `2.9 MiB (3000000 bytes) in 0.4 s, 7.1 MiB/s`, or after a resume
    /// `2.9 MiB (3000000 bytes), 1.2 MiB of it in 0.2 s, 6.0 MiB/s`.
    fn text(&self, detailed: bool) -> String {
        let mut s = format!("{} ({} bytes)", human_size(self.length), self.length);
        if detailed {
            let secs = self.elapsed.as_secs_f64();
            // A transfer too quick to time has no meaningful rate.
            let rate = (self.moved as f64 / secs.max(1e-3)) as u64;
            if self.moved < self.length {
                s += &format!(", {} of it", human_size(self.moved));
            }
            s += &format!(" in {secs:.1} s, {}/s", human_size(rate));
        }
        s
    }
}

/// Where `put` stores the file: [`remote_target`], except that a REMOTE
/// naming an existing directory on the server gets LOCAL's name inside it,
/// as `cp` and `scp` do.
fn put_target(
    client: &mut Client,
    local: &Path,
    remote: Option<&str>,
    push: Push,
) -> Result<String, CmdError> {
    let target = remote_target(local, remote)?;
    match remote {
        Some(r) if !r.ends_with('/') && is_remote_dir(client, r, push)? => {
            remote_target(local, Some(&format!("{r}/")))
        }
        _ => Ok(target),
    }
}

/// Whether `path` is a directory on the server. Found out with `cd`, which
/// costs the same however many entries the directory has (`ls` would list
/// them all), and then undone, so the session's cwd does not change.
pub fn is_remote_dir(client: &mut Client, path: &str, push: Push) -> Result<bool, CmdError> {
    let cwd = pwd(client, &mut *push)?;
    match cd(client, path, &mut *push) {
        Ok(_) => {
            cd(client, &cwd, push)?;
            Ok(true)
        }
        // Missing, a file, or out of reach: not a directory to put into.
        Err(CmdError::Server { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Refuses an upload the quota cannot hold before the file is hashed,
/// which takes minutes for a large one. Replacing a file frees its bytes,
/// so those count as room. The server checks again at `put`: what others
/// reserve meanwhile can still make it refuse.
fn check_room(client: &mut Client, remote: &str, length: u64, push: Push) -> Result<(), CmdError> {
    let (limit, used, _) = quota(client, &mut *push)?;
    let Some(limit) = limit else {
        return Ok(());
    };
    let free = limit.saturating_sub(used);
    if length <= free {
        return Ok(());
    }
    let replaced = match ls(client, Some(remote), push) {
        Ok(entries) => match entries.as_slice() {
            [e] if e.kind == "file" && Some(e.name.as_str()) == remote_basename(remote) => e.size,
            _ => 0,
        },
        // Usually not_found: nothing is replaced.
        Err(CmdError::Server { .. }) => 0,
        Err(e) => return Err(e),
    };
    let need = length.saturating_sub(replaced);
    if need <= free {
        return Ok(());
    }
    Err(CmdError::Server {
        code: "quota_exceeded".into(),
        message: format!(
            "{remote}: needs {}, {} free (quota {})",
            human_size(need),
            human_size(free),
            human_size(limit)
        ),
    })
}

/// `put LOCAL [REMOTE]`: checks the quota, hashes LOCAL, announces it,
/// sends what the server does not hold yet, and checks the server's
/// verdict.
pub fn put(
    client: &mut Client,
    local: &Path,
    remote: Option<&str>,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    put_as(
        client,
        local,
        &local.display().to_string(),
        remote,
        opts,
        push,
        out,
    )
}

/// [`put`], naming the local file `shown` in messages (a spooled stdin
/// is `-`, not its temporary file).
pub fn put_as(
    client: &mut Client,
    local: &Path,
    shown: &str,
    remote: Option<&str>,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let started = Instant::now();
    let shown = shown.to_string();
    let mut file = File::open(local).map_err(|e| CmdError::local(format!("{shown}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| CmdError::local(format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(CmdError::local(format!("{shown} is not a file")));
    }
    let length = meta.len();
    let remote = put_target(client, local, remote, &mut *push)?;
    check_room(client, &remote, length, &mut *push)?;
    let mut hasher = HashThread::start()?;
    hash_into(&mut file, length, &mut hasher, &shown)?;
    let digest = hex(&hasher.finish()?.finalize());

    let id = send_request(
        client,
        json!({"op": "put", "path": remote, "length": length, "md5": digest}),
    )?;
    let reply = reply_header(client, id, &mut *push)?;
    let offset = need_u64(&reply, "offset")?;
    if offset > length {
        return Err(CmdError::BadReply(format!(
            "server holds {offset} bytes of a {length}-byte upload"
        )));
    }
    if offset > 0 {
        // Always said (on stderr): a transfer that skips most of a file
        // should not look like a suspiciously fast one.
        eprintln!("resuming at {offset}");
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| CmdError::local(format!("{shown}: {e}")))?;

    let size = length - offset;
    let mut data = Map::new();
    data.insert("op".into(), "data".into());
    data.insert("id".into(), id.into());
    client.send_header(data, size).map_err(cmd::io_error)?;
    let progress = bar(
        length,
        local.file_name().and_then(|n| n.to_str()).unwrap_or(&shown),
    );
    progress.set_position(offset);
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                progress.finish_and_clear();
                // The frame promised bytes we no longer have.
                return Err(CmdError::Local {
                    message: format!("{shown} shrank while it was being sent"),
                    broken: true,
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.finish_and_clear();
                return Err(CmdError::Local {
                    message: format!("{shown}: {e}"),
                    broken: true,
                });
            }
        };
        if let Err(e) = client.send_body(&buf[..n]) {
            progress.finish_and_clear();
            return Err(cmd::io_error(e));
        }
        left -= n as u64;
        progress.inc(n as u64);
    }
    let flushed = client.flush();
    progress.finish_and_clear();
    flushed.map_err(cmd::io_error)?;

    let done = reply_header(client, id, push)?;
    let stored = need_u64(&done, "length")?;
    let stored_md5 = done.str("md5").unwrap_or("").to_ascii_lowercase();
    if stored != length || stored_md5 != digest {
        return Err(CmdError::BadReply(format!(
            "sent {length} bytes with MD5 {digest}; the server says it stored {stored} with MD5 {stored_md5:?}"
        )));
    }
    let summary = Summary {
        length,
        moved: size,
        elapsed: started.elapsed(),
    };
    writeln!(
        out,
        "{shown} -> {remote}: {}",
        summary.text(opts.detailed())
    )
    .map_err(output_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_stay_on_one_line() {
        assert_eq!(escaped_name("plain name.txt"), "plain name.txt");
        assert_eq!(escaped_name("two\nlines"), "two\\nlines");
        assert_eq!(escaped_name("tab\there"), "tab\\there");
        assert_eq!(escaped_name("back\\slash"), "back\\\\slash");
        assert_eq!(escaped_name("bell\u{7}"), "bell\\u{7}");
        assert!(!escaped_name("a\nb\rc").contains(['\n', '\r']));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn quota_lines() {
        assert_eq!(quota_line(None, 3), "used 3 B (no quota)");
        assert_eq!(
            quota_line(Some(10 << 20), 1 << 20),
            "used 1.0 MiB of 10.0 MiB (10%), 9.0 MiB free"
        );
        assert_eq!(quota_line(Some(0), 0), "used 0 B of 0 B (100%), 0 B free");
    }

    #[test]
    fn targets() {
        assert_eq!(
            local_target("a/b/c.txt", None).unwrap(),
            PathBuf::from("c.txt")
        );
        assert_eq!(
            local_target("c.txt", Some(Path::new("/nonexistent/x"))).unwrap(),
            PathBuf::from("/nonexistent/x")
        );
        let tmp = std::env::temp_dir();
        assert_eq!(local_target("/d/c", Some(&tmp)).unwrap(), tmp.join("c"));
        assert!(local_target("dir/", None).is_err());
        assert!(local_target("..", None).is_err());
        assert_eq!(
            part_path(Path::new("x/y.bin")),
            PathBuf::from("x/y.bin.part")
        );
        assert_eq!(
            remote_target(Path::new("/tmp/f.txt"), None).unwrap(),
            "f.txt"
        );
        assert_eq!(
            remote_target(Path::new("/tmp/f.txt"), Some("docs/")).unwrap(),
            "docs/f.txt"
        );
        assert_eq!(
            remote_target(Path::new("f.txt"), Some("g.txt")).unwrap(),
            "g.txt"
        );
    }

    #[test]
    fn ls_lines() {
        let e = Entry::from_json(&json!({"name": "a b", "kind": "dir", "size": 4096, "mtime": 0}))
            .unwrap();
        let line = e.line();
        assert!(line.starts_with("d         4096 "), "{line}");
        assert!(line.ends_with(" a b"), "{line}");
        assert_eq!(crate::sys::local_time(0).len(), 16);
        assert!(Entry::from_json(&json!({"kind": "file"})).is_none());
        let f = Entry::from_json(&json!({"name": "f", "kind": "file", "size": 1536, "mtime": 7}))
            .unwrap();
        assert!(
            f.line_in(true).starts_with("-      1.5 KiB "),
            "{}",
            f.line_in(true)
        );
        assert_eq!(
            serde_json::from_str::<Value>(&f.json()).unwrap(),
            json!({"name": "f", "kind": "file", "size": 1536, "mtime": 7})
        );
        assert_eq!(LsFormat::from_flags(["-l"]), Some(LsFormat::Long));
        assert_eq!(LsFormat::from_flags(["-lh"]), Some(LsFormat::Human));
        assert_eq!(LsFormat::from_flags(["-h", "--json"]), Some(LsFormat::Json));
        assert_eq!(LsFormat::from_flags(["-x"]), None);
    }

    #[test]
    fn hashes_in_chunks() {
        let path = std::env::temp_dir().join(format!("skiff-hash-test-{}", std::process::id()));
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i * 7) as u8).collect();
        fs::write(&path, &data).unwrap();
        let mut hasher = HashThread::start().unwrap();
        let mut f = File::open(&path).unwrap();
        hash_into(&mut f, data.len() as u64, &mut hasher, "t").unwrap();
        // More than HASH_BUFFERS chunks in a row: buffers come back.
        for _ in 0..3 {
            let mut f = File::open(&path).unwrap();
            hash_into(&mut f, data.len() as u64, &mut hasher, "t").unwrap();
        }
        let got = hex(&hasher.finish().unwrap().finalize());
        assert_eq!(got, hex(&Md5::digest(data.repeat(4))));
        // Asking for more than is there is an error, not a short hash.
        let mut hasher = HashThread::start().unwrap();
        let mut f = File::open(&path).unwrap();
        assert!(hash_into(&mut f, data.len() as u64 + 1, &mut hasher, "t").is_err());
        drop(hasher);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
