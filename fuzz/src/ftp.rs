//! The checks of the `ftp_line` and `ftp_session` targets: FTP's control
//! connection, from the bytes a client sends to the replies it reads.
//!
//! `core/tests/fuzz_corpus.rs` pulls this file in with `#[path]`; both
//! builds see the core as the crate `skiffd_core`, so this file names
//! nothing through `crate::`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use skiffd_core::ctx::{Action, Ctx, Submission};
use skiffd_core::engine::{Engine, Transmit};
use skiffd_core::ftp::command::{self, Refused, VERBS};
use skiffd_core::ftp::line::{Line, LineReader, MAX_LINE};
use skiffd_core::ftp::{DataIn, DataOut, DataRequest, FtpSession};
use skiffd_core::limits::Limits;
use skiffd_core::services::Services;
use skiffd_core::stats::Stats;
use skiffd_core::users::UserDb;

/// Cutting `data` into lines must never panic and must not depend on how
/// the bytes arrive (whole, one at a time, or in reads whose sizes come
/// from the bytes); every line is at most [`MAX_LINE`] bytes without a
/// line end; and parsing a line either finds the verb its first word
/// names, with the rest as its argument, or refuses it printably.
pub fn check_ftp_line(data: &[u8]) {
    let whole = lines_in_chunks(data, |_| data.len());
    let bytewise = lines_in_chunks(data, |_| 1);
    let from_input = lines_in_chunks(data, |i| usize::from(data[i % data.len()]) + 1);
    assert_eq!(bytewise, whole, "one byte at a time");
    assert_eq!(from_input, whole, "chunk sizes taken from the input");
    for line in &whole {
        let Line::Command(line) = line else {
            continue;
        };
        assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
        assert!(!line.contains(&b'\n'), "a line end inside a line");
        check_parse(line);
    }
}

/// Feeds `data` to a [`LineReader`] in reads of `chunk(offset)` bytes,
/// taking each line as it ends (as the session does); returns them.
fn lines_in_chunks(data: &[u8], chunk: impl Fn(usize) -> usize) -> Vec<Line> {
    let mut reader = LineReader::default();
    let mut lines = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + chunk(at).max(1)).min(data.len());
        let mut read = &data[at..end];
        while !read.is_empty() {
            let used = reader.push(read);
            assert!(used > 0 && used <= read.len(), "push used {used} bytes");
            read = &read[used..];
            while let Some(line) = reader.next_line() {
                lines.push(line);
            }
            // A line and a little: never the whole stream.
            assert!(reader.buffered_bytes() <= 2 * MAX_LINE + 64);
        }
        at = end;
    }
    lines
}

/// What [`command::parse`] makes of one line agrees with the line.
fn check_parse(line: &[u8]) {
    let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (word, rest) = (&line[..word_end], line.get(word_end + 1..).unwrap_or(&[]));
    match command::parse(line) {
        Ok(c) => {
            let (name, _) = VERBS
                .iter()
                .find(|(_, v)| *v == c.verb)
                .expect("a parsed verb is in the table");
            // Aliases (XPWD for PWD) map to one verb: the word names one
            // of the entries with this verb.
            assert!(
                VERBS
                    .iter()
                    .any(|(n, v)| *v == c.verb && n.as_bytes().eq_ignore_ascii_case(word)),
                "{word:?} parsed as {name}"
            );
            assert_eq!(
                c.arg.as_bytes(),
                rest,
                "the argument is the rest of the line"
            );
        }
        Err(Refused::Unknown(shown)) => {
            assert!(shown.chars().count() <= 16, "{shown:?} is too long to show");
            assert!(shown.bytes().all(|b| b.is_ascii_graphic() || b == b'?'));
            assert!(
                !VERBS
                    .iter()
                    .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(word)),
                "{word:?} is a known verb"
            );
        }
        Err(Refused::NotUtf8) => assert!(std::str::from_utf8(rest).is_err()),
    }
}

/// alice's password in the fuzzed data dir.
const PASSWORD: &str = "pw";
/// alice's quota: what the fuzzer's uploads can take from the disk.
const QUOTA: u64 = 1 << 20;
/// The client's address; data connections from elsewhere are refused.
const PEER: &str = "127.0.0.1";

/// An FTP session driven as the reactor drives it, by a script the input
/// is read as: it must never panic; every reply is whole `CR LF` lines of
/// the forms RFC 959 allows; and however the script ends, closing the
/// data connection and letting time pass leaves a session that reads
/// again or is closing, never one stuck.
///
/// The first byte chooses whether the harness logs in as `alice` first
/// (bit 0), whether `AUTH TLS` is offered (bit 1: the harness then
/// plays the TLS layer, which passes the bytes through) and whether no
/// file is in the page cache (bit 2: every range `RETR` offers that no
/// job has just read in is reported not cached, so workers read it in). The rest is
/// operations, each a byte `op` and what it needs:
///
/// | `op % 8` | operation |
/// |---|---|
/// | 0, 1, 2 | control bytes: a length byte `n`, then `n` bytes |
/// | 3 | connect to the passive port; from another address if `op & 8` |
/// | 4 | data bytes: a length byte `n`, then `n` bytes (all the same byte if `op & 8`, times 256) |
/// | 5 | the data connection ends: end of stream if `op & 8`, else reset |
/// | 6 | time passes: the next byte × 100 ms |
/// | 7 | the client stops reading the data connection (`op & 8`) or reads it again |
pub fn check_ftp_session(data: &[u8]) {
    let Some((&flags, mut script)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(flags & 2 != 0);
    h.cold = flags & 4 != 0;
    if flags & 1 != 0 {
        h.control(format!("USER alice\r\nPASS {PASSWORD}\r\n").as_bytes());
    }
    while let Some((&op, rest)) = script.split_first() {
        script = rest;
        match op % 8 {
            0..=2 => {
                let bytes = take_counted(&mut script);
                h.control(bytes);
            }
            3 => {
                let from = if op & 8 != 0 { "10.0.0.9" } else { PEER };
                h.connect(from.parse().expect("an address"));
            }
            4 => {
                let bytes = take_counted(&mut script);
                if op & 8 != 0 {
                    let fill = bytes.first().copied().unwrap_or(0);
                    h.data(&vec![fill; bytes.len() * 256]);
                } else {
                    h.data(bytes);
                }
            }
            5 => h.data_end(op & 8 != 0),
            6 => {
                let tenths = script.first().copied().unwrap_or(0);
                script = script.get(1..).unwrap_or(&[]);
                h.advance(Duration::from_millis(100) * u32::from(tenths));
            }
            _ => {
                h.read_data = op & 8 == 0;
                h.settle();
            }
        }
    }
    h.finish();
}

/// A length byte, then that many bytes (fewer at the end of the input).
fn take_counted<'a>(script: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = script.split_first() else {
        *script = &[];
        return &[];
    };
    let n = usize::from(n).min(rest.len());
    *script = &rest[n..];
    &rest[..n]
}

static DATA_DIR: OnceLock<(PathBuf, UserDb)> = OnceLock::new();

fn data_dir_made() -> Option<&'static (PathBuf, UserDb)> {
    DATA_DIR.get()
}

/// The data dir every fuzzed session shares: `alice`, whose password hash
/// is made with the smallest argon2 parameters (a login is then cheap
/// enough to fuzz; the parameters are read from the hash), and her home.
fn data_dir() -> &'static (PathBuf, UserDb) {
    DATA_DIR.get_or_init(|| {
        use argon2::password_hash::PasswordHasher;
        // In memory where there is a tmpfs for it: an upload's landing
        // syncs the file and its directory, which on a disk costs more
        // than the rest of an input.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("skiff-fuzz-ftp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a data dir");
        let params = argon2::Params::new(8, 1, 1, None).expect("argon2 parameters");
        let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(PASSWORD.as_bytes())
            .expect("a hash")
            .to_string();
        let users = serde_json::json!({"version": 1, "users": [
            {"name": "alice", "hash": hash, "quota": QUOTA, "exec": false}
        ]});
        std::fs::write(dir.join("users.json"), users.to_string()).expect("users.json");
        let users = UserDb::load(&dir).expect("the users just written");
        (dir, users)
    })
}

/// Removes the data dir [`check_ftp_session`] made, if it made one (a
/// fuzzer's is left behind when it stops; a test's need not be).
pub fn remove_ftp_data_dir() {
    if let Some((dir, _)) = data_dir_made() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Empties alice's home and partial uploads, and puts back the files the
/// seeds name: each input starts from the same disk.
fn reset_home(dir: &Path) {
    for sub in ["homes", "partial"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    skiffd_core::users::create_home(dir, "alice").expect("a home");
    let home = dir.join("homes/alice");
    std::fs::write(home.join("hello.txt"), b"hello\r\n").expect("a file");
    std::fs::create_dir(home.join("docs")).expect("a directory");
    std::fs::write(home.join("docs/big.bin"), vec![7u8; 100_000]).expect("a file");
}

/// A session and what the reactor would do around it (as in the core's
/// own FTP tests, without a socket).
struct Harness {
    s: FtpSession,
    limits: Limits,
    stats: Stats,
    services: Services,
    actions: Vec<Action>,
    jobs: Vec<Submission>,
    now: Instant,
    /// Every byte of reply the client has read.
    replies: Vec<u8>,
    listening: bool,
    connected: bool,
    /// The client reads the data connection.
    read_data: bool,
    /// No range of a file is in the page cache.
    cold: bool,
}

impl Harness {
    fn new(offer_tls: bool) -> Harness {
        let (dir, users) = data_dir();
        reset_home(dir);
        let now = Instant::now();
        let limits = Limits::default();
        let mut s = FtpSession::new(
            7,
            PEER.parse().expect("an address"),
            now,
            limits.ftp_passive_timeout,
        );
        if offer_tls {
            s.offer_tls(false);
        }
        let mut h = Harness {
            s,
            limits,
            stats: Stats::new(now),
            services: Services::new(dir.clone(), users.clone()),
            actions: Vec::new(),
            jobs: Vec::new(),
            now,
            replies: Vec::new(),
            listening: false,
            connected: false,
            read_data: true,
            cold: false,
        };
        h.settle();
        h
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut FtpSession, &mut Ctx) -> R) -> R {
        let mut ctx = Ctx {
            now: self.now,
            limits: &self.limits,
            stats: &mut self.stats,
            services: &mut self.services,
            actions: &mut self.actions,
            jobs: &mut self.jobs,
        };
        f(&mut self.s, &mut ctx)
    }

    /// The client sends `bytes` on the control connection, as far as the
    /// session reads; what it does not read yet is sent after turns.
    fn control(&mut self, mut bytes: &[u8]) {
        for _ in 0..1000 {
            if bytes.is_empty() || self.s.is_closing() {
                return;
            }
            if !self.s.wants_read(&self.limits) {
                // Waiting for a transfer to end: time passes.
                self.advance(Duration::from_secs(10));
                if !self.s.wants_read(&self.limits) {
                    self.data_end(false);
                }
                continue;
            }
            // A read of at most 4 KiB, as a socket gives.
            let n = bytes.len().min(4096);
            let (read, rest) = bytes.split_at(n);
            self.with(|s, ctx| {
                s.start_turn(ctx);
                s.handle_input(read, ctx);
            });
            bytes = rest;
            self.settle();
        }
        panic!("the session would not read its control connection");
    }

    fn connect(&mut self, from: IpAddr) {
        if !self.listening {
            return;
        }
        if self.with(|s, ctx| s.handle_data_connected(from, ctx)) {
            self.listening = false;
            self.connected = true;
        }
        self.settle();
    }

    /// The client sends `bytes` on the data connection; they go where
    /// the session says, as the reactor would put them: read and handed
    /// over, or spliced into the upload's pipe (a write here, which never
    /// waits: a pipe full in pages first is reported as full).
    fn data(&mut self, mut bytes: &[u8]) {
        let mut refused = 0;
        while self.connected && !bytes.is_empty() && refused < 2 {
            let n = bytes.len().min(64 << 10);
            let spliced = match self.s.data_input() {
                DataIn::Nothing => break,
                DataIn::Bytes => None,
                DataIn::Pipe { pipe, room } => Some(write_pipe(pipe, &bytes[..n.min(room)])),
            };
            let taken = match spliced {
                None => {
                    self.with(|s, ctx| s.handle_data_input(&bytes[..n], ctx));
                    n
                }
                Some((written, full)) => {
                    if written > 0 {
                        self.with(|s, ctx| s.handle_data_spliced(written, ctx));
                    }
                    if full {
                        self.with(|s, ctx| s.handle_data_pipe_full(ctx));
                    }
                    written
                }
            };
            refused = if taken == 0 { refused + 1 } else { 0 };
            bytes = &bytes[taken..];
            self.settle();
        }
    }

    /// The client ends the data connection: `eof` (it closes after its
    /// last byte), or a reset.
    fn data_end(&mut self, eof: bool) {
        if !self.connected {
            return;
        }
        if eof {
            self.with(|s, ctx| s.handle_data_eof(ctx));
        } else {
            self.connected = false;
            self.with(|s, ctx| s.handle_data_closed(ctx));
        }
        self.settle();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.with(|s, ctx| s.handle_timeout(ctx));
        self.settle();
    }

    /// What the reactor does until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if self.step() {
                continue;
            }
            self.with(|s, ctx| s.end_turn(ctx));
            if !self.step() {
                self.check_replies();
                return;
            }
        }
        panic!("the session never settled");
    }

    /// One thing the reactor would do; false if there was nothing.
    fn step(&mut self) -> bool {
        if let Some(r) = self.s.poll_data_request() {
            match r {
                DataRequest::Listen => {
                    self.connected = false;
                    self.listening = true;
                    let addr: SocketAddr = "127.0.0.1:50123".parse().expect("an address");
                    self.with(|s, ctx| s.handle_passive_bound(addr, ctx));
                }
                DataRequest::CloseListener => self.listening = false,
                DataRequest::CloseData => {
                    self.connected = false;
                    self.with(|s, ctx| s.handle_data_closed(ctx));
                }
            }
            return true;
        }
        if let Some(job) = self.jobs.pop() {
            let result = (job.work)();
            self.with(|s, ctx| s.handle_job_done(result, ctx));
            return true;
        }
        // The reactor's actions (a revoked login, say) are not modelled.
        self.actions.clear();
        if self.s.wants_control_tls() {
            self.s.handle_control_tls_started();
            return true;
        }
        let out = match self.s.poll_transmit(&[]) {
            Some(Transmit::Bytes(parts)) => parts.flatten().copied().collect::<Vec<u8>>(),
            Some(_) => panic!("the control connection offered a file or a pipe"),
            None => Vec::new(),
        };
        if !out.is_empty() {
            self.replies.extend_from_slice(&out);
            self.with(|s, ctx| s.handle_written(out.len(), ctx));
            return true;
        }
        if self.connected && self.read_data {
            match self.s.data_output() {
                DataOut::Bytes(b) => {
                    let n = b.len();
                    self.with(|s, ctx| s.handle_data_written(n, ctx));
                    return true;
                }
                DataOut::File {
                    offset,
                    len,
                    warmed: false,
                    ..
                } if self.cold => {
                    let n = len.min(256 << 10);
                    self.with(|s, ctx| s.handle_data_file_not_cached(offset, n, ctx));
                    return true;
                }
                DataOut::File { len: n, .. } => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX).min(256 << 10);
                    self.with(|s, ctx| s.handle_data_file_sent(n, ctx));
                    return true;
                }
                DataOut::Nothing => {}
            }
        }
        if self.s.wants_turn(&self.limits) {
            self.with(|s, ctx| s.start_turn(ctx));
            return true;
        }
        false
    }

    /// Every reply so far is whole lines: `ddd text` ends a reply, `ddd-`
    /// begins a longer one whose middle lines start with a space.
    fn check_replies(&self) {
        assert!(
            self.replies.is_empty() || self.replies.ends_with(b"\r\n"),
            "a reply line was left unfinished"
        );
        let mut open: Option<&[u8]> = None;
        for line in self.replies.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue; // after the last line end
            }
            let line = line
                .strip_suffix(b"\r")
                .expect("every line ends with CR LF");
            assert!(!line.contains(&b'\r'), "a bare CR in {line:?}");
            let coded = line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit);
            match open {
                Some(code) if coded && &line[..3] == code && line[3] == b' ' => open = None,
                Some(_) => assert!(
                    line.first() == Some(&b' '),
                    "a middle line without its space: {:?}",
                    String::from_utf8_lossy(line)
                ),
                None => {
                    assert!(coded, "not a reply: {:?}", String::from_utf8_lossy(line));
                    match line[3] {
                        b' ' => {}
                        b'-' => open = Some(&line[..3]),
                        _ => panic!("not a reply: {:?}", String::from_utf8_lossy(line)),
                    }
                }
            }
        }
        assert!(open.is_none(), "a multi-line reply never ended");
    }

    /// However the script ended: the data connection goes, time passes,
    /// and the session reads again (or is closing).
    fn finish(&mut self) {
        self.read_data = true;
        for _ in 0..100 {
            if self.s.is_closing() || (self.s.wants_read(&self.limits) && !self.s.job_in_flight()) {
                break;
            }
            if self.connected {
                self.data_end(false);
            }
            self.advance(self.limits.ftp_passive_timeout);
        }
        assert!(
            self.s.is_closing() || self.s.wants_read(&self.limits),
            "the session stopped reading for good"
        );
        assert!(self.jobs.is_empty(), "a job was left behind");
        if std::env::var_os("SKIFF_FUZZ_SHOW").is_some() {
            // To see what an input does: its whole conversation.
            eprintln!("{}", String::from_utf8_lossy(&self.replies));
        }
    }
}

/// Writes what a pipe takes of `bytes` without waiting, as `splice` with
/// `SPLICE_F_NONBLOCK` would move it; says how much, and whether the pipe
/// refused the rest (full).
fn write_pipe(pipe: std::os::fd::BorrowedFd, bytes: &[u8]) -> (usize, bool) {
    let flags = rustix::fs::fcntl_getfl(pipe).expect("pipe flags");
    rustix::fs::fcntl_setfl(pipe, flags | rustix::fs::OFlags::NONBLOCK).expect("pipe flags");
    let mut at = 0;
    while at < bytes.len() {
        match rustix::io::write(pipe, &bytes[at..]) {
            Ok(n) => at += n,
            Err(rustix::io::Errno::AGAIN) => return (at, true),
            Err(e) => panic!("write the pipe: {e}"),
        }
    }
    (at, false)
}
