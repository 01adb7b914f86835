//! FtpSession driven byte by byte, with virtual time, a temp data dir,
//! jobs run inline and a pretend reactor for the data connection.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::*;
use crate::ctx::Ctx;
use crate::ctx::{Action, Submission};
use crate::engine::{Engine, Transmit};
use crate::limits::Limits;
use crate::services::Services;
use crate::stats::Stats;

/// The passive timeout of the harness's sessions: the default one.
fn passive_timeout() -> Duration {
    Limits::default().ftp_passive_timeout
}

const PEER: &str = "127.0.0.1";
const ALICE_QUOTA: u64 = 1 << 20;

/// A session and what the reactor would do around it.
struct Harness {
    s: FtpSession,
    limits: Limits,
    stats: Stats,
    services: Services,
    actions: Vec<Action>,
    jobs: Vec<Submission>,
    now: Instant,
    dir: PathBuf,
    /// Replies the client has read, not yet looked at.
    replies: Vec<u8>,
    /// Bytes the client got on the data connection.
    data_in: Vec<u8>,
    listening: bool,
    connected: bool,
    /// Data requests seen, in order.
    seen: Vec<DataRequest>,
    /// Run jobs as they come (false: leave them queued).
    run_jobs: bool,
    /// Read the data connection as bytes come (false: the client stalls).
    read_data: bool,
    /// The data connection has no sendfile, and no splice.
    copy_only: bool,
    /// Bytes the harness spliced into an upload's pipe.
    spliced: usize,
    /// No range of any file is in the page cache, or the kernel cannot
    /// tell: every range not just warmed by a job is reported.
    cold: bool,
    /// What the reactor says a new listener is announced as.
    announce: SocketAddr,
}

impl Harness {
    /// A data dir with `alice` (password `pw`, 1 MiB quota) and `hello.txt`
    /// in her home; the session greeted, not logged in.
    fn new() -> Harness {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skiff-ftp-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut users = crate::users::UserDb::load(&dir).unwrap();
        users.add("alice", "pw", Some(ALICE_QUOTA), false).unwrap();
        users.save().unwrap();
        crate::users::create_home(&dir, "alice").unwrap();
        std::fs::write(dir.join("homes/alice/hello.txt"), b"hello").unwrap();
        let now = Instant::now();
        let mut h = Harness {
            s: FtpSession::new(7, PEER.parse().unwrap(), now, passive_timeout()),
            limits: Limits::default(),
            stats: Stats::new(now),
            services: Services::new(dir.clone(), crate::users::UserDb::load(&dir).unwrap()),
            actions: Vec::new(),
            jobs: Vec::new(),
            now,
            dir,
            replies: Vec::new(),
            data_in: Vec::new(),
            listening: false,
            connected: false,
            seen: Vec::new(),
            run_jobs: true,
            read_data: true,
            copy_only: false,
            spliced: 0,
            cold: false,
            announce: "127.0.0.1:50123".parse().unwrap(),
        };
        h.settle();
        assert_eq!(h.take(), "220 skiffd FTP ready.\r\n");
        h
    }

    /// Logged in as alice.
    fn logged_in() -> Harness {
        let mut h = Harness::new();
        h.send("USER alice\r\nPASS pw\r\n");
        assert_eq!(
            h.take(),
            "331 Please specify the password.\r\n230 Login successful.\r\n"
        );
        h
    }

    fn home(&self) -> PathBuf {
        self.dir.join("homes/alice")
    }

    /// Runs the oldest job waiting (as a worker would), then what follows.
    fn run_one_job(&mut self) -> &'static str {
        let job = self.jobs.remove(0);
        let result = (job.work)();
        self.with(|s, ctx| s.handle_job_done(result, ctx));
        self.settle();
        job.name
    }

    /// The replies the session offers the control socket now.
    fn output(&mut self) -> Vec<u8> {
        match self.s.poll_transmit(&[]) {
            Some(Transmit::Bytes(parts)) => parts.flatten().copied().collect(),
            Some(_) => panic!("the control connection offered a file or a pipe"),
            None => Vec::new(),
        }
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

    /// What the reactor does until nothing moves: data requests, jobs,
    /// owed turns, writes on both connections.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if self.step() {
                continue;
            }
            self.with(|s, ctx| s.end_turn(ctx));
            if !self.step() {
                return;
            }
        }
        panic!("the session never settled");
    }

    /// One thing the reactor would do; false if there was nothing.
    fn step(&mut self) -> bool {
        if let Some(r) = self.s.poll_data_request() {
            self.seen.push(r);
            match r {
                DataRequest::Listen => {
                    self.connected = false;
                    self.listening = true;
                    let addr = self.announce;
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
        if self.run_jobs
            && let Some(job) = self.jobs.pop()
        {
            let result = (job.work)();
            self.with(|s, ctx| s.handle_job_done(result, ctx));
            return true;
        }
        let out = self.output();
        if !out.is_empty() {
            self.replies.extend_from_slice(&out);
            self.with(|s, ctx| s.handle_written(out.len(), ctx));
            return true;
        }
        if self.connected && self.read_data {
            if self.copy_only {
                self.s.data_zero_copy_unavailable();
            }
            match self.s.data_output() {
                DataOut::Bytes(b) => {
                    let b = b.to_vec();
                    self.data_in.extend_from_slice(&b);
                    self.with(|s, ctx| s.handle_data_written(b.len(), ctx));
                    return true;
                }
                DataOut::File {
                    offset,
                    len,
                    warmed: false,
                    ..
                } if self.cold => {
                    let n = len.min(100_000);
                    self.with(|s, ctx| s.handle_data_file_not_cached(offset, n, ctx));
                    return true;
                }
                DataOut::File {
                    mut file, len: n, ..
                } => {
                    let mut buf = vec![0u8; usize::try_from(n).unwrap().min(100_000)];
                    let got = file.read(&mut buf).unwrap();
                    self.data_in.extend_from_slice(&buf[..got]);
                    self.with(|s, ctx| s.handle_data_file_sent(got, ctx));
                    return true;
                }
                DataOut::Nothing => {}
            }
        }
        if self.s.wants_turn(&self.limits) {
            self.with(|s, ctx| {
                s.start_turn(ctx);
            });
            return true;
        }
        false
    }

    /// The client sends `text` on the control connection in one read.
    fn send(&mut self, text: &str) {
        self.feed(text.as_bytes());
    }

    fn feed(&mut self, bytes: &[u8]) {
        assert!(
            self.s.wants_read(&self.limits),
            "fed while the session does not read"
        );
        self.with(|s, ctx| {
            s.start_turn(ctx);
            s.handle_input(bytes, ctx);
        });
        self.settle();
    }

    /// Replies read since the last call.
    fn take(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.replies)).unwrap()
    }

    /// The client connects to the passive port from `ip`.
    fn connect_from(&mut self, ip: &str) -> bool {
        assert!(self.listening, "no listener");
        let ip: IpAddr = ip.parse().unwrap();
        let kept = self.with(|s, ctx| s.handle_data_connected(ip, ctx));
        if kept {
            self.listening = false;
            self.connected = true;
        }
        self.settle();
        kept
    }

    fn connect(&mut self) {
        assert!(self.connect_from(PEER));
    }

    /// EPSV, then connect.
    fn open_data(&mut self) {
        self.send("EPSV\r\n");
        assert_eq!(
            self.take(),
            "229 Entering Extended Passive Mode (|||50123|)\r\n"
        );
        self.connect();
    }

    /// The client sends `bytes` on the data connection as fast as the
    /// session reads them, in reads of `chunk` bytes; then closes it.
    fn upload(&mut self, bytes: &[u8], chunk: usize) {
        let mut at = 0;
        let mut refused = 0;
        while at < bytes.len() && refused < 2 {
            let end = (at + chunk).min(bytes.len());
            let took = self.receive(&bytes[at..end]);
            self.settle();
            // Nothing taken: over quota or failed (the rest is refused),
            // or a pipe full in pages that a worker has emptied since.
            refused = if took == 0 { refused + 1 } else { 0 };
            at += took;
        }
        if self.connected {
            self.with(|s, ctx| s.handle_data_eof(ctx));
            self.settle();
        }
    }

    /// What the reactor does with bytes that arrived on the data
    /// connection: splices as many as the session's pipe may take (and
    /// tells it when the pipe, counted in pages, is full first), or reads
    /// them all. Returns how many were taken.
    fn receive(&mut self, bytes: &[u8]) -> usize {
        if self.copy_only {
            self.s.data_splice_unavailable();
        }
        let spliced = match self.s.data_input() {
            DataIn::Nothing => return 0,
            DataIn::Bytes => None,
            DataIn::Pipe { pipe, room } => {
                // As `splice` with SPLICE_F_NONBLOCK would: never wait.
                let flags = rustix::fs::fcntl_getfl(pipe).unwrap();
                rustix::fs::fcntl_setfl(pipe, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
                let n = room.min(bytes.len());
                let mut at = 0;
                while at < n {
                    match rustix::io::write(pipe, &bytes[at..n]) {
                        Ok(w) => at += w,
                        Err(rustix::io::Errno::AGAIN) => break,
                        Err(e) => panic!("write the pipe: {e}"),
                    }
                }
                Some((at, at < n))
            }
        };
        match spliced {
            Some((n, full)) => {
                self.spliced += n;
                if n > 0 {
                    self.with(|s, ctx| s.handle_data_spliced(n, ctx));
                }
                if full {
                    self.with(|s, ctx| s.handle_data_pipe_full(ctx));
                }
                n
            }
            None => {
                self.with(|s, ctx| s.handle_data_input(bytes, ctx));
                bytes.len()
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.with(|s, ctx| s.handle_timeout(ctx));
        self.settle();
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    crate::services::digests::hex(&Md5::digest(bytes).into())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn login_and_the_commands_every_client_sends_first() {
    let mut h = Harness::new();
    h.send("SYST\r\nFEAT\r\nPWD\r\n");
    let feat = h.take();
    assert!(
        feat.starts_with("215 UNIX Type: L8\r\n211-Features:\r\n EPSV\r\n"),
        "{feat}"
    );
    assert!(feat.contains(" REST STREAM\r\n") && feat.contains(" UTF8\r\n"));
    assert!(feat.contains(" MLST type*;size*;modify*;perm*;unique*;\r\n"));
    assert!(feat.ends_with("211 End\r\n530 Please log in with USER and PASS.\r\n"));
    h.send("PASS pw\r\n");
    assert_eq!(h.take(), "503 Login with USER first.\r\n");
    h.send("user alice\r\npass pw\r\nPWD\r\nTYPE I\r\nTYPE A\r\nTYPE E\r\nMODE S\r\nSTRU F\r\nOPTS UTF8 ON\r\nNOOP\r\n");
    assert_eq!(
        h.take(),
        "331 Please specify the password.\r\n\
         230 Login successful.\r\n\
         257 \"/\" is the current directory\r\n\
         200 Switching to Binary mode.\r\n\
         200 Switching to ASCII mode (files are sent as they are).\r\n\
         504 TYPE A or I only.\r\n\
         200 Mode set to S.\r\n\
         200 Structure set to F.\r\n\
         200 Always in UTF8 mode.\r\n\
         200 NOOP ok.\r\n"
    );
    h.send("PORT 127,0,0,1,4,1\r\nEPRT |1|127.0.0.1|1025|\r\nAUTH TLS\r\nXYZZY\r\nQUIT\r\n");
    assert_eq!(
        h.take(),
        "502 Active mode is off; use PASV or EPSV.\r\n\
         502 Active mode is off; use PASV or EPSV.\r\n\
         502 TLS is not available on this port.\r\n\
         500 Unknown command \"XYZZY\".\r\n\
         221 Goodbye.\r\n"
    );
    assert!(h.s.is_done());
}

#[test]
fn one_byte_at_a_time_gives_the_same_replies() {
    let script =
        "USER alice\r\nPASS pw\nCWD /\r\nPWD\r\nSIZE hello.txt\r\nMDTM nothere\r\nQUIT\r\n";
    let mut whole = Harness::new();
    whole.send(script);
    let expected = whole.take();
    assert!(expected.contains("213 5\r\n"), "{expected}");
    assert!(
        expected.contains("550 /nothere: no such file or directory\r\n"),
        "{expected}"
    );
    let mut h = Harness::new();
    for b in script.bytes() {
        if h.s.is_closing() {
            break;
        }
        h.feed(&[b]);
    }
    assert_eq!(h.take(), expected);
}

#[test]
fn pipelined_commands_are_served_a_share_per_turn() {
    let mut h = Harness::logged_in();
    let many = "NOOP\r\n".repeat(100);
    h.with(|s, ctx| {
        s.start_turn(ctx);
        s.handle_input(many.as_bytes(), ctx);
    });
    let first = String::from_utf8(h.output()).unwrap();
    assert_eq!(
        first.matches("200 NOOP ok.").count(),
        usize::from(MAX_COMMANDS_PER_TURN)
    );
    assert!(!h.s.wants_read(&h.limits), "reads past its share");
    assert!(h.s.wants_turn(&h.limits), "owes itself a turn");
    h.settle();
    assert_eq!(h.take().matches("200 NOOP ok.").count(), 100);
    assert!(h.s.wants_read(&h.limits));
}

#[test]
fn overlong_lines_nul_and_bytes_that_are_not_utf8() {
    let mut h = Harness::logged_in();
    let long = format!("CWD {}\r\nNOOP\r\n", "a".repeat(100_000));
    h.send(&long);
    assert_eq!(h.take(), "500 Command line too long.\r\n200 NOOP ok.\r\n");
    assert!(h.s.buffered_bytes() < 16 << 10, "{}", h.s.buffered_bytes());
    h.feed(b"CWD \xc3\x28\r\nRETR a\x00b\r\n\x00\x01\r\nMKD \r\n");
    assert_eq!(
        h.take(),
        "501 Arguments must be UTF-8.\r\n\
         425 Use PASV or EPSV first.\r\n\
         500 Unknown command \"??\".\r\n\
         501 A path is required.\r\n"
    );
    h.open_data();
    h.feed(b"RETR a\x00b\r\n");
    assert_eq!(h.take(), "553 path contains a NUL byte\r\n");
}

#[test]
fn rest_takes_any_u64_and_refuses_the_rest() {
    let mut h = Harness::logged_in();
    h.send(
        "REST -1\r\nREST 18446744073709551616\r\nREST 1e3\r\nREST\r\nREST 18446744073709551615\r\n",
    );
    assert_eq!(
        h.take(),
        "501 REST needs a non-negative byte offset.\r\n\
         501 REST needs a non-negative byte offset.\r\n\
         501 REST needs a non-negative byte offset.\r\n\
         501 REST needs a non-negative byte offset.\r\n\
         350 Restart position accepted (18446744073709551615).\r\n"
    );
    h.open_data();
    h.send("RETR hello.txt\r\n");
    assert_eq!(
        h.take(),
        "554 Cannot restart at 18446744073709551615: /hello.txt has 5 bytes.\r\n"
    );
    h.send("REST 18446744073709551615\r\nSTOR hello.txt\r\n");
    assert_eq!(
        h.take(),
        "350 Restart position accepted (18446744073709551615).\r\n\
         554 cannot restart at 18446744073709551615: the file has 5 bytes\r\n"
    );
    // The refused REST was used up: a plain RETR starts at 0.
    h.send("REST 2\r\nRETR hello.txt\r\n");
    assert_eq!(h.data_in, b"llo");
}

#[test]
fn failed_logins_are_throttled_like_the_framed_protocol() {
    let mut h = Harness::new();
    h.send("USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS wrong\r\nUSER alice\r\nPASS wrong\r\n");
    assert_eq!(
        h.take(),
        "331 Please specify the password.\r\n530 Login incorrect.\r\n\
         331 Please specify the password.\r\n530 Login incorrect.\r\n\
         331 Please specify the password.\r\n530 Login incorrect.\r\n421 Too many failed logins.\r\n"
    );
    assert!(h.s.is_done());
    // A new session from the same address: refused at once, no password
    // check (no job), even with the right password.
    let now = h.now;
    h.s = FtpSession::new(8, PEER.parse().unwrap(), now, passive_timeout());
    h.send("USER alice\r\n");
    h.take();
    h.with(|s, ctx| {
        s.start_turn(ctx);
        s.handle_input(b"PASS pw\r\n", ctx);
    });
    assert!(h.jobs.is_empty(), "the KDF ran while locked");
    h.settle();
    assert!(
        h.take()
            .starts_with("530 Too many failed logins for alice; retry in ")
    );
    // Once the lock has run out, the right password works.
    h.now += crate::services::throttle::BASE_LOCK;
    h.send("USER alice\r\nPASS pw\r\n");
    assert!(h.take().ends_with("230 Login successful.\r\n"));
}

#[test]
fn every_command_that_touches_the_disk_waits_for_a_job() {
    let mut h = Harness::logged_in();
    h.run_jobs = false;
    for cmd in [
        "CWD /",
        "SIZE hello.txt",
        "MDTM hello.txt",
        "MLST hello.txt",
        "MKD d",
        "RMD d",
        "DELE nothere",
        "RNFR hello.txt",
        "HASH hello.txt",
        "XMD5 hello.txt",
    ] {
        h.send(&format!("{cmd}\r\nNOOP\r\n"));
        assert_eq!(h.take(), "", "{cmd}: answered on the loop");
        assert_eq!(h.jobs.len(), 1, "{cmd}: no job");
        assert!(!h.s.wants_read(&h.limits), "{cmd}: still reading");
        h.run_jobs = true;
        h.settle();
        h.run_jobs = false;
        let replies = h.take();
        assert!(replies.ends_with("200 NOOP ok.\r\n"), "{cmd}: {replies}");
    }
}

#[test]
fn a_retr_sends_the_file_and_226_comes_after_the_data_connection_closed() {
    let mut h = Harness::logged_in();
    let body = pattern(300_000);
    std::fs::write(h.home().join("big.bin"), &body).unwrap();
    h.open_data();
    // The client does not read yet: the 150 comes, the 226 does not.
    h.read_data = false;
    h.send("RETR big.bin\r\n");
    assert_eq!(
        h.take(),
        "150 Opening BINARY mode data connection for /big.bin (300000 bytes).\r\n"
    );
    // NOOP is answered during the transfer; PWD waits for its end.
    h.send("NOOP\r\nPWD\r\n");
    assert_eq!(h.take(), "200 NOOP ok.\r\n");
    h.read_data = true;
    h.settle();
    assert_eq!(h.data_in, body);
    assert_eq!(h.seen.last(), Some(&DataRequest::CloseData));
    assert_eq!(
        h.take(),
        "226 Transfer complete.\r\n257 \"/\" is the current directory\r\n"
    );
    // REST then RETR: the tail, by copying where sendfile is missing.
    h.data_in.clear();
    h.copy_only = true;
    h.open_data();
    h.send("REST 299990\r\nRETR big.bin\r\n");
    assert_eq!(h.data_in, &body[299_990..]);
    assert!(
        h.take()
            .ends_with("(300000 bytes).\r\n226 Transfer complete.\r\n")
    );
}

#[test]
fn the_passive_listener_lifecycle() {
    let mut h = Harness::logged_in();
    h.send("PASV\r\n");
    assert_eq!(
        h.take(),
        "227 Entering Passive Mode (127,0,0,1,195,203).\r\n"
    );
    // A second PASV asks for a new listener (which replaces the first).
    h.send("PASV\r\n");
    assert_eq!(h.seen, [DataRequest::Listen, DataRequest::Listen]);
    h.take();
    // A connection from another address is refused; the listener stays.
    assert!(!h.connect_from("10.9.8.7"));
    assert!(h.listening);
    // A transfer command with nobody connected waits ...
    h.send("LIST\r\n");
    assert_eq!(h.take(), "");
    // ... and gets 425 when the listener times out, which frees the port.
    h.advance(passive_timeout() - Duration::from_secs(1));
    assert_eq!(h.take(), "");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take(),
        "425 No data connection came; the passive port is closed.\r\n"
    );
    assert!(!h.listening);
    // The session goes on; without a new PASV, a transfer is refused.
    h.send("NLST\r\n");
    assert_eq!(h.take(), "425 Use PASV or EPSV first.\r\n");
    // An open data connection nobody uses is closed too.
    h.open_data();
    h.advance(passive_timeout());
    assert!(!h.connected);
    // The listener is announced with the address the reactor gives; an
    // IPv6 one cannot be said in a 227, only in a 229.
    h.announce = "[2001:db8::1]:50000".parse().unwrap();
    h.send("PASV\r\nEPSV\r\n");
    assert_eq!(
        h.take(),
        "425 PASV needs IPv4; use EPSV.\r\n229 Entering Extended Passive Mode (|||50000|)\r\n"
    );
    assert!(h.seen.ends_with(&[
        DataRequest::Listen,
        DataRequest::CloseListener,
        DataRequest::Listen
    ]));
    h.send("EPSV ALL\r\nPASV\r\nEPSV 3\r\n");
    assert_eq!(
        h.take(),
        "200 EPSV ALL ok.\r\n501 PASV is refused after EPSV ALL.\r\n522 Network protocol not supported, use (1,2)\r\n"
    );
}

#[test]
fn listings_in_the_formats_clients_parse() {
    let mut h = Harness::logged_in();
    std::fs::create_dir(h.home().join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc", h.home().join("out")).unwrap();
    h.open_data();
    h.send("LIST -la\r\n");
    assert_eq!(
        h.take(),
        "150 Here comes the directory listing.\r\n226 Transfer complete.\r\n"
    );
    let text = String::from_utf8(std::mem::take(&mut h.data_in)).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 2, "the symlink is left out: {text}");
    assert!(lines[0].starts_with("-rw"), "{text}");
    assert!(lines[0].ends_with(" hello.txt") && lines[1].starts_with("drwx"));
    h.open_data();
    h.send("NLST\r\n");
    assert_eq!(h.data_in, b"hello.txt\r\nsub\r\n");
    h.data_in.clear();
    h.take();
    h.open_data();
    h.send("MLSD\r\n");
    let text = String::from_utf8(std::mem::take(&mut h.data_in)).unwrap();
    assert!(text.starts_with("type=file;size=5;modify="), "{text}");
    assert!(text.contains("type=dir;") && text.ends_with("; sub\r\n"));
    h.take();
    h.open_data();
    h.send("MLSD hello.txt\r\nMLST hello.txt\r\n");
    let replies = h.take();
    assert!(
        replies.starts_with("550 /hello.txt: not a directory\r\n250-Listing\r\n type=file;size=5;"),
        "{replies}"
    );
    assert!(replies.ends_with("; /hello.txt\r\n250 End\r\n"));
    // A directory of many entries goes out page by page, each page a job.
    for i in 0..3000 {
        std::fs::write(h.home().join("sub").join(format!("file-{i:05}")), b"").unwrap();
    }
    h.send("LIST sub\r\n");
    let text = String::from_utf8(std::mem::take(&mut h.data_in)).unwrap();
    assert_eq!(text.lines().count(), 3000);
    assert!(text.lines().all(|l| l.starts_with("-rw")));
    assert!(h.take().ends_with("226 Transfer complete.\r\n"));
}

#[test]
fn a_stor_lands_whole_on_close_and_its_md5_is_known() {
    let mut h = Harness::logged_in();
    std::fs::write(h.home().join("up.bin"), b"old").unwrap();
    h.services.accounts["alice"].borrow_mut().used += 3;
    let body = pattern(700_000);
    h.open_data();
    h.send("STOR up.bin\r\n");
    assert_eq!(h.take(), "150 Ok to send data for /up.bin.\r\n");
    let half = body.len() / 2;
    for piece in body[..half].chunks(10_000) {
        h.with(|s, ctx| s.handle_data_input(piece, ctx));
        h.settle();
    }
    // Until the transfer ends, the old file is there.
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), b"old");
    h.upload(&body[half..], 65536);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
    let used = h.services.accounts["alice"].borrow().used;
    assert_eq!(used, 5 + body.len() as u64);
    h.send("SIZE up.bin\r\nHASH up.bin\r\nXMD5 up.bin\r\nOPTS HASH MD5\r\nOPTS HASH SHA-1\r\n");
    let md5 = md5_hex(&body);
    assert_eq!(
        h.take(),
        format!(
            "213 700000\r\n213 MD5 0-700000 {md5} /up.bin\r\n250 {md5}\r\n200 MD5\r\n504 Unsupported algorithm; MD5 only.\r\n"
        )
    );
}

#[test]
fn an_interrupted_stor_keeps_the_old_file_and_resumes_both_ways() {
    interrupted_stor_resumes(false);
}

#[test]
fn a_resumed_upload_hashed_on_the_way_knows_the_whole_files_md5() {
    interrupted_stor_resumes(true);
}

/// Breaks a `STOR`, resumes it with `REST`+`STOR`, then with `APPE`; with
/// `hashed`, each resume hashes the kept bytes first, so the MD5 known
/// at the end is the whole file's.
fn interrupted_stor_resumes(hashed: bool) {
    let mut h = Harness::logged_in();
    h.with(|s, _| s.hash_uploads(hashed));
    std::fs::write(h.home().join("f.bin"), b"the old one").unwrap();
    h.services.accounts["alice"].borrow_mut().used += 11;
    let body = pattern(600_000);
    h.open_data();
    h.send("STOR f.bin\r\n");
    h.take();
    for piece in body[..400_000].chunks(50_000) {
        h.with(|s, ctx| s.handle_data_input(piece, ctx));
        h.settle();
    }
    // The client's connection breaks.
    h.connected = false;
    h.with(|s, ctx| s.handle_data_closed(ctx));
    h.settle();
    let reply = h.take();
    assert!(
        reply.starts_with("426 Data connection lost; transfer aborted. "),
        "{reply}"
    );
    assert_eq!(
        std::fs::read(h.home().join("f.bin")).unwrap(),
        b"the old one"
    );
    // SIZE says where to resume; REST + STOR resumes there.
    h.send("SIZE f.bin\r\n");
    let size: u64 = h
        .take()
        .trim_end()
        .strip_prefix("213 ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0 && size <= 400_000, "{size}");
    h.open_data();
    h.send(&format!("REST {size}\r\nSTOR f.bin\r\n"));
    assert_eq!(
        h.take(),
        format!(
            "350 Restart position accepted ({size}).\r\n150 Ok to send data for /f.bin from byte {size}.\r\n"
        )
    );
    let at = usize::try_from(size).unwrap();
    h.upload(&body[at..500_000], 30_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(
        std::fs::read(h.home().join("f.bin")).unwrap(),
        &body[..500_000]
    );
    // curl -C -: SIZE, then APPE of the rest (copied from the stored file
    // into a partial, so the stored file stays whole meanwhile).
    h.send("SIZE f.bin\r\n");
    assert_eq!(h.take(), "213 500000\r\n");
    h.open_data();
    h.send("APPE f.bin\r\n");
    assert_eq!(
        h.take(),
        "150 Ok to send data for /f.bin from byte 500000.\r\n"
    );
    h.upload(&body[500_000..], 7_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(std::fs::read(h.home().join("f.bin")).unwrap(), body);
    {
        let a = h.services.accounts["alice"].borrow();
        assert_eq!((a.used, a.reserved, a.parked), (5 + 600_000, 0, 0));
    }
    // Hashed on the way, the digest is known as the file lands; if not,
    // the first HASH computes it (and then it is known).
    let md5 = md5_hex(&body);
    let known = |h: &Harness| {
        let meta = std::fs::metadata(h.home().join("f.bin")).unwrap();
        let key = crate::services::digests::FileKey::of(&meta);
        h.services
            .digests
            .cached(&key)
            .map(|d| crate::services::digests::hex(&d))
    };
    assert_eq!(known(&h), hashed.then(|| md5.clone()));
    h.send("XMD5 f.bin\r\n");
    assert_eq!(h.take(), format!("250 {md5}\r\n"));
    assert_eq!(known(&h), Some(md5));
}

#[test]
fn the_quota_stops_a_stor_with_552_and_keeps_the_partial() {
    let mut h = Harness::logged_in();
    let body = pattern(2 << 20);
    h.send("ALLO 2097152\r\nALLO 1000\r\nALLO x\r\n");
    assert_eq!(
        h.take(),
        "552 ALLO 2097152: quota exceeded (5 used, 0 reserved by uploads in progress, 0 parked in unfinished ones, quota 1048576).\r\n\
         200 1000 bytes reserved.\r\n\
         501 ALLO needs a size in bytes.\r\n"
    );
    assert_eq!(h.services.accounts["alice"].borrow().reserved, 1000);
    h.open_data();
    h.send("STOR big.bin\r\n");
    h.take();
    h.upload(&body, 100_000);
    let room = ALICE_QUOTA - 5;
    assert_eq!(
        h.take(),
        format!(
            "552 Quota exceeded: {room} bytes are kept; REST {room} + STOR resumes once there is room.\r\n"
        )
    );
    assert!(!h.home().join("big.bin").exists());
    {
        let a = h.services.accounts["alice"].borrow();
        assert_eq!((a.used, a.reserved, a.parked), (5, 0, room));
    }
    // Room is made; the upload resumes where it stopped.
    h.send("DELE hello.txt\r\n");
    assert_eq!(h.take(), "250 Delete operation successful.\r\n");
    h.send("SIZE big.bin\r\n");
    assert_eq!(h.take(), format!("213 {room}\r\n"));
    h.open_data();
    h.send(&format!("REST {room}\r\nSTOR big.bin\r\n"));
    h.take();
    let end = usize::try_from(ALICE_QUOTA).unwrap();
    h.upload(&body[usize::try_from(room).unwrap()..end], 100_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(
        std::fs::read(h.home().join("big.bin")).unwrap(),
        &body[..end]
    );
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.used, a.reserved, a.parked), (ALICE_QUOTA, 0, 0));
}

#[test]
fn abor_during_a_transfer_gives_426_then_226() {
    let mut h = Harness::logged_in();
    std::fs::write(h.home().join("big.bin"), pattern(1 << 20)).unwrap();
    h.send("ABOR\r\n");
    assert_eq!(h.take(), "225 No transfer to ABOR.\r\n");
    h.open_data();
    h.read_data = false;
    h.send("RETR big.bin\r\n");
    h.take();
    // ftplib's abort: IAC IP IAC (DM out of band), then ABOR.
    h.feed(b"\xff\xf4\xffABOR\r\n");
    assert_eq!(
        h.take(),
        "426 Connection closed; transfer aborted.\r\n226 ABOR command successful.\r\n"
    );
    assert_eq!(h.seen.last(), Some(&DataRequest::CloseData));
    // Two ABORs in a row: each gets its reply.
    h.open_data();
    h.send("RETR big.bin\r\n");
    h.take();
    h.send("ABOR\r\nABOR\r\n");
    assert_eq!(
        h.take(),
        "426 Connection closed; transfer aborted.\r\n226 ABOR command successful.\r\n\
         226 ABOR command successful.\r\n"
    );
    // An upload aborted keeps what was written.
    h.read_data = true;
    h.open_data();
    h.send("STOR part.bin\r\n");
    h.take();
    h.with(|s, ctx| s.handle_data_input(&pattern(300_000), ctx));
    h.settle();
    h.send("ABOR\r\n");
    assert_eq!(
        h.take(),
        "426 Connection closed; transfer aborted.\r\n226 ABOR command successful.\r\n"
    );
    // What had arrived was written (a full batch goes to a worker at once).
    h.send("SIZE part.bin\r\n");
    assert_eq!(h.take(), "213 300000\r\n");
    assert!(!h.home().join("part.bin").exists());
}

#[test]
fn quit_during_a_transfer_waits_for_its_end() {
    let mut h = Harness::logged_in();
    h.open_data();
    h.read_data = false;
    h.send("RETR hello.txt\r\nQUIT\r\n");
    assert_eq!(
        h.take(),
        "150 Opening BINARY mode data connection for /hello.txt (5 bytes).\r\n"
    );
    assert!(!h.s.is_closing());
    h.read_data = true;
    h.settle();
    assert_eq!(h.take(), "226 Transfer complete.\r\n221 Goodbye.\r\n");
    assert!(h.s.is_done());
}

#[test]
fn the_jail_holds_against_dot_dot_absolute_paths_symlinks_and_fifos() {
    let mut h = Harness::logged_in();
    std::os::unix::fs::symlink("/etc/passwd", h.home().join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", h.home().join("etc")).unwrap();
    let fifo = h.home().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    h.send("CWD ../../..\r\nPWD\r\nCDUP\r\nSIZE /../hello.txt\r\nCWD /etc\r\nSIZE passwd\r\nMDTM /etc/passwd\r\n");
    assert_eq!(
        h.take(),
        "250 Directory successfully changed.\r\n\
         257 \"/\" is the current directory\r\n\
         250 Directory successfully changed.\r\n\
         213 5\r\n\
         550 /etc: not accessible (it leads outside your home, or permission is denied)\r\n\
         550 /passwd: not accessible (it leads outside your home, or permission is denied)\r\n\
         550 /etc/passwd: not accessible (it leads outside your home, or permission is denied)\r\n"
    );
    h.open_data();
    h.send("RETR fifo\r\nRETR passwd\r\nHASH fifo\r\n");
    assert_eq!(
        h.take(),
        "550 /fifo: not a regular file (a FIFO, socket or device)\r\n\
         550 /passwd: not accessible (it leads outside your home, or permission is denied)\r\n\
         550 /fifo: not a regular file (a FIFO, socket or device)\r\n"
    );
    h.send("STOR fifo\r\nSTOR /etc/x\r\nSTOR .skiff-x\r\nDELE /\r\nRMD /\r\n");
    assert_eq!(
        h.take(),
        "550 /fifo: not a regular file\r\n\
         550 /etc: not accessible (it leads outside your home, or permission is denied)\r\n\
         553 .skiff-x: names starting with .skiff are reserved.\r\n\
         550 /: is a directory; use RMD\r\n\
         550 /: your home cannot be removed.\r\n"
    );
}

#[test]
fn make_rename_and_remove() {
    let mut h = Harness::logged_in();
    h.send("MKD d\r\nMKD d\r\nMKD \"q\"\r\nRNTO x\r\nRNFR hello.txt\r\nRNTO d/hi.txt\r\nSIZE d/hi.txt\r\nRMD d\r\nDELE d/hi.txt\r\nRMD d\r\n");
    assert_eq!(
        h.take(),
        "257 \"/d\" created\r\n\
         550 /d: already exists\r\n\
         257 \"/\"\"q\"\"\" created\r\n\
         503 RNFR required first.\r\n\
         350 Ready for RNTO.\r\n\
         250 Rename successful.\r\n\
         213 5\r\n\
         550 /d: directory not empty\r\n\
         250 Delete operation successful.\r\n\
         250 Remove directory operation successful.\r\n"
    );
    assert_eq!(h.services.accounts["alice"].borrow().used, 0);
    // A rename over a file frees the replaced file's bytes.
    std::fs::write(h.home().join("a"), b"12345678").unwrap();
    std::fs::write(h.home().join("b"), b"123").unwrap();
    h.services.accounts["alice"].borrow_mut().used = 11;
    h.send("RNFR a\r\nRNTO b\r\nRNFR b\r\nRNTO b\r\n");
    assert!(h.take().ends_with("250 Rename successful.\r\n"));
    assert_eq!(h.services.accounts["alice"].borrow().used, 8);
}

#[test]
fn an_idle_session_is_told_and_closed() {
    let mut h = Harness::logged_in();
    h.advance(h.limits.idle_timeout - Duration::from_secs(1));
    assert_eq!(h.take(), "");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), "421 Timeout.\r\n");
    assert!(h.s.is_done());
}

#[test]
fn a_peer_that_closes_after_pipelined_commands_gets_them_all() {
    let mut h = Harness::logged_in();
    h.with(|s, ctx| {
        s.start_turn(ctx);
        s.handle_input(b"SIZE hello.txt\r\nPWD\r\n", ctx);
        s.handle_eof(ctx);
    });
    h.settle();
    assert_eq!(h.take(), "213 5\r\n257 \"/\" is the current directory\r\n");
    assert!(h.s.is_done());
}

#[test]
fn an_idle_session_is_small() {
    let h = Harness::logged_in();
    assert_eq!(h.s.buffered_bytes(), 0);
    let size = std::mem::size_of::<FtpSession>();
    assert!(size < 1024, "{size} bytes");
}

#[test]
fn abor_overtakes_commands_waiting_behind_a_transfer() {
    let mut h = Harness::logged_in();
    std::fs::write(h.home().join("big.bin"), pattern(1 << 20)).unwrap();
    h.open_data();
    h.read_data = false;
    h.send("RETR big.bin\r\nPWD\r\nSTAT\r\n");
    assert!(h.take().starts_with("150 "));
    h.send("ABOR\r\n");
    let replies = h.take();
    assert!(
        replies.starts_with(
            "426 Connection closed; transfer aborted.\r\n226 ABOR command successful.\r\n\
             257 \"/\" is the current directory\r\n211-skiffd FTP status:\r\n"
        ),
        "{replies}"
    );
    // At most a few commands wait; then the session stops reading.
    h.open_data();
    h.send("RETR big.bin\r\n");
    h.take();
    h.send("PWD\r\nPWD\r\nPWD\r\nPWD\r\nPWD\r\n");
    assert!(!h.s.wants_read(&h.limits));
    assert_eq!(h.take(), "");
    h.read_data = true;
    h.settle();
    assert_eq!(h.take().matches("257 ").count(), 5);
}

#[test]
fn an_upload_holds_two_large_batches_at_most_and_two_small_ones_under_pressure() {
    for pressure in [false, true] {
        let mut h = Harness::logged_in();
        h.services.accounts["alice"].borrow_mut().quota = None;
        h.open_data();
        h.send("STOR up.bin\r\n");
        h.take();
        h.run_jobs = false; // the worker never finishes the first batch
        h.stats.pressure = pressure;
        let chunk = pattern(64 << 10);
        let mut taken = 0;
        for _ in 0..100 {
            if !h.s.wants_data_read() {
                break;
            }
            h.with(|s, ctx| s.handle_data_input(&chunk, ctx));
            taken += chunk.len();
        }
        let held = h.s.buffered_bytes();
        let batch = if pressure {
            store::WRITE_BATCH
        } else {
            store::STREAM_BATCH
        };
        assert!(
            !h.s.wants_data_read(),
            "reading stops (pressure {pressure})"
        );
        assert_eq!(h.jobs.len(), 1, "one batch on the worker");
        assert!(
            (2 * batch..=2 * batch + chunk.len()).contains(&taken),
            "{taken} bytes taken, batches of {batch}"
        );
        assert!(held <= 2 * (batch + chunk.len()), "{held} bytes held");
    }
}

#[test]
fn a_session_closed_while_a_batch_is_on_a_worker_parks_its_partial() {
    let mut h = Harness::logged_in();
    h.open_data();
    h.send("STOR up.bin\r\n");
    h.take();
    h.run_jobs = false;
    h.stats.pressure = true; // batches of 256 KiB
    h.with(|s, ctx| s.handle_data_input(&pattern(300_000), ctx));
    assert_eq!(h.jobs.len(), 1, "a full batch goes to a worker");
    h.s.handle_reset();
    assert!(!h.s.is_done(), "done with a job out");
    h.run_jobs = true;
    h.settle();
    assert!(h.s.is_done());
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.used, a.reserved, a.parked), (5, 0, 300_000));
    assert!(
        a.active.is_empty() && a.changing.is_empty(),
        "claims released"
    );
}

#[test]
fn the_next_batch_is_received_while_a_worker_appends_one_within_the_quota() {
    let mut h = Harness::logged_in();
    let body = pattern(1_200_000);
    h.open_data();
    h.send("STOR up.bin\r\n");
    h.take();
    h.run_jobs = false;
    h.stats.pressure = true; // batches of 256 KiB
    h.with(|s, ctx| s.handle_data_input(&body[..600_000], ctx));
    assert_eq!(h.jobs.len(), 1, "a full batch goes to a worker");
    assert!(
        h.s.wants_data_read(),
        "the data connection is read while the worker appends"
    );
    // The quota counts the batch on the worker: of the next 600,000
    // bytes only what is left of 1 MiB is taken.
    h.with(|s, ctx| s.handle_data_input(&body[600_000..], ctx));
    assert!(!h.s.wants_data_read(), "over quota: no more reading");
    assert_eq!(h.jobs.len(), 1, "one job at a time");
    h.run_jobs = true;
    h.settle();
    let room = ALICE_QUOTA - 5;
    assert_eq!(
        h.take(),
        format!(
            "552 Quota exceeded: {room} bytes are kept; REST {room} + STOR resumes once there is room.\r\n"
        )
    );
    h.send("SIZE up.bin\r\n");
    assert_eq!(h.take(), format!("213 {room}\r\n"));
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.used, a.reserved, a.parked), (5, 0, room));
    drop(a);
    // What is kept is the first `room` bytes, in order.
    h.services.accounts["alice"].borrow_mut().quota = None;
    h.open_data();
    h.send(&format!("REST {room}\r\nSTOR up.bin\r\n"));
    h.take();
    h.upload(&body[usize::try_from(room).unwrap()..], 100_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
}

/// Random command lines with hostile arguments, cut at random places, to
/// a logged-in session (no data connection ever comes: transfers wait for
/// the passive timeout). Every line must be answered with well-formed
/// replies and nothing may panic or stall. Set `SKIFF_SEED` to replay.
#[test]
fn random_hostile_commands_in_random_pieces_are_all_answered() {
    use rand::{RngExt, SeedableRng};
    let seed: u64 = std::env::var("SKIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("seed {seed} (SKIFF_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut h = Harness::logged_in();
    let verbs: Vec<&str> = super::command::VERBS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "QUIT")
        .chain(["", "FOO", "retr", "Stor"])
        .collect();
    let args: [&[u8]; 16] = [
        b"",
        b"..",
        b"/../../etc/passwd",
        b"hello.txt",
        b"-la",
        b"d",
        b"d/e",
        b"a\x00b",
        b"\xc3\x28",
        b"18446744073709551616",
        b"99999999999999999999999",
        b"-1",
        b"0",
        b"\xff\xf4\xff\xf2",
        b"UTF8 ON",
        b"  spaced  name  ",
    ];
    let mut script = Vec::new();
    let mut lines = 0;
    for _ in 0..300 {
        let verb = verbs[rng.random_range(0..verbs.len())];
        script.extend_from_slice(verb.as_bytes());
        let arg = args[rng.random_range(0..args.len())];
        if !arg.is_empty() {
            script.push(b' ');
            script.extend_from_slice(arg);
        }
        script.extend_from_slice(if rng.random_range(0..4) == 0 {
            b"\n"
        } else {
            b"\r\n"
        });
        lines += 1;
    }
    let mut pos = 0;
    let mut waits = 0;
    while pos < script.len() {
        if !h.s.wants_read(&h.limits) {
            waits += 1;
            assert!(waits < 1000, "the session stopped reading for good");
            h.advance(passive_timeout());
            continue;
        }
        let n = rng.random_range(1..=(script.len() - pos).min(200));
        h.feed(&script[pos..pos + n]);
        pos += n;
    }
    // A transfer still waiting for its data connection (and what waits
    // behind it) ends with the passive timeout.
    for _ in 0..100 {
        if h.s.wants_read(&h.limits) && !h.s.data.busy() {
            break;
        }
        h.advance(passive_timeout());
    }
    assert!(h.s.wants_read(&h.limits) && !h.s.is_closing());
    let replies = h.take();
    let mut finals = 0;
    for line in replies.split_terminator("\r\n") {
        let b = line.as_bytes();
        let code = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit);
        assert!(
            (code && (b[3] == b' ' || b[3] == b'-')) || line.starts_with(' '),
            "malformed reply line {line:?}"
        );
        if code && b[3] == b' ' {
            finals += 1;
        }
    }
    assert!(finals >= lines, "{finals} final replies for {lines} lines");
    let a = h.services.accounts["alice"].borrow();
    assert!(
        a.active.is_empty() && a.changing.is_empty(),
        "a claim or lock leaked"
    );
}

#[test]
fn a_client_that_never_reads_its_replies_cannot_grow_them() {
    let mut h = Harness::logged_in();
    let flood = "HELP\r\n".repeat(20_000);
    let mut fed = 0;
    for _ in 0..100_000 {
        if fed == flood.len() {
            break;
        }
        if h.s.wants_read(&h.limits) {
            let n = (flood.len() - fed).min(64 << 10);
            h.with(|s, ctx| s.handle_input(&flood.as_bytes()[fed..fed + n], ctx));
            fed += n;
        }
        // The reactor's next turn, with a client that reads nothing.
        h.with(|s, ctx| {
            s.start_turn(ctx);
        });
        if !h.s.wants_read(&h.limits) && !h.s.wants_turn(&h.limits) {
            break;
        }
    }
    assert!(fed < flood.len(), "all of it was read");
    let held = h.output().len();
    assert!(held < REPLIES_HIGH + 4096, "{held} bytes of replies held");
    // One read of input waits, and the replies buffer's capacity.
    assert!(
        h.s.buffered_bytes() <= 4 * REPLIES_HIGH,
        "{}",
        h.s.buffered_bytes()
    );
    // The client reads: the rest is served.
    h.settle();
    while fed < flood.len() {
        let n = (flood.len() - fed).min(64 << 10);
        h.feed(&flood.as_bytes()[fed..fed + n]);
        fed += n;
    }
    assert_eq!(h.take().matches("214 Help OK.\r\n").count(), 20_000);
}

#[test]
fn a_session_whose_password_changed_is_told_and_closed() {
    let mut h = Harness::logged_in();
    let mut users = crate::users::UserDb::load(&h.dir).unwrap();
    users.set_password("alice", "new").unwrap();
    // A later mtime than the one the server read.
    std::thread::sleep(Duration::from_millis(20));
    users.save().unwrap();
    assert!(h.services.reload_users_if_changed());
    h.send("PWD\r\n");
    assert_eq!(h.take(), "421 your password was changed; log in again\r\n");
    assert!(h.s.is_done());
    // The reactor's once-a-second check says the same to an idle session.
    let mut h2 = Harness::logged_in();
    let mut users = crate::users::UserDb::load(&h2.dir).unwrap();
    users.remove("alice").unwrap();
    h2.s.recheck_login(&users);
    h2.settle();
    assert_eq!(h2.take(), "421 your account was deleted\r\n");
    assert!(h2.s.is_done());
}

#[test]
fn an_upload_short_of_room_discards_abandoned_partials_first() {
    let mut h = Harness::logged_in();
    let room = ALICE_QUOTA - 5;
    h.open_data();
    h.send("STOR a.bin\r\n");
    h.upload(&pattern(2 << 20), 100_000);
    assert!(h.take().ends_with(&format!("552 Quota exceeded: {room} bytes are kept; REST {room} + STOR resumes once there is room.\r\n")));
    assert_eq!(h.services.accounts["alice"].borrow().parked, room);
    // Another upload needs the room: the abandoned partial goes, every
    // byte of the new one lands.
    let body = pattern(600_000);
    h.open_data();
    h.send("STOR b.bin\r\n");
    h.take();
    h.upload(&body, 70_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(std::fs::read(h.home().join("b.bin")).unwrap(), body);
    h.send("SIZE a.bin\r\n");
    assert_eq!(h.take(), "550 /a.bin: no such file or directory\r\n");
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.used, a.reserved, a.parked), (5 + 600_000, 0, 0));
}

#[test]
fn auth_tls_drops_what_was_pipelined_behind_it_and_waits_for_the_reactor() {
    let mut h = Harness::new();
    h.s.offer_tls(false);
    h.send("AUTH TLS\r\nUSER alice\r\nPASS pw\r\nDELE hello.txt\r\n");
    assert_eq!(h.take(), "234 AUTH TLS ok: start the TLS handshake.\r\n");
    // Written: the reactor starts TLS; until then nothing is read.
    assert!(h.s.wants_control_tls());
    assert!(!h.s.wants_read(&h.limits));
    h.with(|s, ctx| s.handle_input(b"USER alice\r\n", ctx));
    h.settle();
    assert_eq!(h.take(), "", "clear text after AUTH TLS is never run");
    h.s.handle_control_tls_started();
    assert!(!h.s.wants_control_tls());
    assert!(h.home().join("hello.txt").exists());
    assert_eq!(h.s.user(), None);
    h.send("PROT P\r\nPBSZ 0\r\nPROT P\r\nAUTH TLS\r\nUSER alice\r\nPASS pw\r\n");
    assert_eq!(
        h.take(),
        "503 PROT needs AUTH TLS and PBSZ first.\r\n\
         200 PBSZ=0\r\n\
         200 Protection level set to P: data connections use TLS.\r\n\
         503 TLS is already on.\r\n\
         331 Please specify the password.\r\n\
         230 Login successful.\r\n"
    );
    assert!(h.s.data_private());
}

#[test]
fn pbsz_and_prot_need_auth_first_and_feat_lists_them() {
    let mut h = Harness::new();
    h.s.offer_tls(false);
    h.send("PBSZ 0\r\nPROT P\r\nAUTH KERBEROS\r\nCCC\r\nFEAT\r\n");
    let replies = h.take();
    assert!(replies.starts_with(
        "503 PBSZ needs AUTH TLS first.\r\n\
         503 PROT needs AUTH TLS and PBSZ first.\r\n\
         504 AUTH TLS only.\r\n\
         530 Please log in with USER and PASS.\r\n"
    ));
    for feature in [" AUTH TLS\r\n", " PBSZ\r\n", " PROT\r\n"] {
        assert!(replies.contains(feature), "{replies}");
    }
    assert!(!h.s.data_private());
}

#[test]
fn required_tls_refuses_a_clear_login_and_clear_data() {
    let mut h = Harness::new();
    h.s.offer_tls(true);
    h.send("USER alice\r\nPASS pw\r\n");
    assert_eq!(
        h.take(),
        "530 This server requires TLS: send AUTH TLS before logging in.\r\n\
         530 This server requires TLS: send AUTH TLS before logging in.\r\n"
    );
    h.send("AUTH TLS\r\n");
    h.take();
    h.s.handle_control_tls_started();
    h.send("USER alice\r\nPASS pw\r\nPBSZ 0\r\nPROT C\r\nRETR hello.txt\r\nPROT P\r\n");
    assert_eq!(
        h.take(),
        "331 Please specify the password.\r\n\
         230 Login successful.\r\n\
         200 PBSZ=0\r\n\
         534 This server requires protected data connections (PROT P).\r\n\
         521 This server requires protected data connections: send PBSZ 0 and PROT P.\r\n\
         200 Protection level set to P: data connections use TLS.\r\n"
    );
}

#[test]
fn retr_under_prot_p_is_read_by_jobs_never_sent_with_sendfile() {
    let mut h = Harness::new();
    h.s.offer_tls(false);
    h.send("AUTH TLS\r\n");
    h.s.handle_control_tls_started();
    h.send("USER alice\r\nPASS pw\r\nPBSZ 0\r\nPROT P\r\n");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(h.home().join("big.bin"), &big).unwrap();
    h.take();
    h.send("EPSV\r\n");
    h.connect();
    h.run_jobs = false;
    h.send("RETR big.bin\r\n");
    let mut names = Vec::new();
    for _ in 0..1000 {
        assert!(
            !matches!(h.s.data_output(), DataOut::File { .. }),
            "sendfile offered under PROT P"
        );
        let Some(job) = h.jobs.pop() else {
            break;
        };
        names.push(job.name);
        let result = (job.work)();
        h.with(|s, ctx| s.handle_job_done(result, ctx));
        h.settle();
    }
    assert!(h.take().ends_with("226 Transfer complete.\r\n"));
    assert_eq!(h.data_in, big);
    let reads = names.iter().filter(|n| **n == "retr-read").count();
    assert!(reads >= 2, "read in bounded chunks on workers: {names:?}");
}

#[test]
fn a_retr_of_a_file_not_in_the_page_cache_waits_for_workers_to_read_it_in() {
    use crate::warm::WINDOW;
    let mut h = Harness::logged_in();
    // A cached file goes by sendfile alone.
    h.open_data();
    h.send("RETR hello.txt\r\n");
    assert_eq!(h.data_in, b"hello");
    assert_eq!(h.stats.warmed_windows, 0);
    h.take();
    h.data_in.clear();
    // A cold one: each window is read in by a job before it is offered.
    let body = pattern(2 * WINDOW as usize + 5);
    std::fs::write(h.home().join("big.bin"), &body).unwrap();
    h.cold = true;
    h.open_data();
    h.run_jobs = false;
    h.send("RETR big.bin\r\n");
    assert_eq!(h.run_one_job(), "retr-open");
    assert!(h.take().starts_with("150 "));
    assert_eq!(h.jobs.len(), 1);
    assert_eq!(h.jobs[0].name, "retr-warm");
    assert!(
        matches!(h.s.data_output(), DataOut::Nothing),
        "sent while the job is out"
    );
    assert!(h.data_in.is_empty());
    assert!(
        !h.s.wants_read(&h.limits),
        "commands wait for the job like any other"
    );
    h.run_jobs = true;
    h.settle();
    assert!(h.data_in == body, "the body came back changed");
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    // Windows at 0, 4 MiB, and the last 5 bytes.
    assert_eq!(h.stats.warmed_windows, 3);
}

#[test]
fn a_file_that_shrinks_before_its_window_is_warmed_ends_the_retr_with_451() {
    let mut h = Harness::logged_in();
    std::fs::write(h.home().join("big.bin"), pattern(300_000)).unwrap();
    h.cold = true;
    h.open_data();
    h.run_jobs = false;
    h.send("RETR big.bin\r\n");
    assert_eq!(h.run_one_job(), "retr-open");
    assert!(h.take().starts_with("150 "));
    assert_eq!(h.jobs.len(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(h.home().join("big.bin"))
        .unwrap()
        .set_len(10)
        .unwrap();
    h.run_jobs = true;
    h.settle();
    assert!(h.data_in.is_empty());
    assert_eq!(
        h.take(),
        "451 The file changed while it was sent; transfer aborted.\r\n"
    );
}

/// Starts a `STOR` of `name` with no quota, the data connection open.
fn stor_without_quota(h: &mut Harness, name: &str) {
    h.services.accounts["alice"].borrow_mut().quota = None;
    h.open_data();
    h.send(&format!("STOR {name}\r\n"));
    assert_eq!(h.take(), format!("150 Ok to send data for /{name}.\r\n"));
}

#[test]
fn a_plain_upload_is_spliced_through_pipes_and_lands_whole() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    assert_eq!(
        h.services.upload_pipes.taken(),
        1,
        "the upload holds a slot"
    );
    let body = pattern(3 << 20);
    h.upload(&body, 100_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(h.spliced, body.len(), "every byte went through a pipe");
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
    assert_eq!(h.services.upload_pipes.taken(), 0, "the slot is given back");
    // The digest is computed on asking, from the file.
    h.send("XMD5 up.bin\r\n");
    assert_eq!(h.take(), format!("250 {}\r\n", md5_hex(&body)));
}

#[test]
fn an_upload_hashed_on_the_way_or_without_a_slot_copies_its_bytes() {
    for case in ["hashed", "no slot"] {
        let mut h = Harness::logged_in();
        let held: Vec<_> = if case == "hashed" {
            h.with(|s, _| s.hash_uploads(true));
            Vec::new()
        } else {
            let slots = h.services.upload_pipes.clone();
            (0..crate::upload_pipe::MOST_UPLOADS)
                .map(|_| slots.take().unwrap())
                .collect()
        };
        stor_without_quota(&mut h, "up.bin");
        assert!(matches!(h.s.data_input(), DataIn::Bytes), "{case}");
        let body = pattern(500_000);
        h.upload(&body, 64 << 10);
        assert_eq!(h.take(), "226 Transfer complete.\r\n", "{case}");
        assert_eq!(h.spliced, 0, "{case}");
        assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
        drop(held);
    }
}

#[test]
fn bytes_copied_after_spliced_ones_land_after_them() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    let body = pattern(900_000);
    assert_eq!(h.receive(&body[..300_000]), 300_000);
    assert_eq!(h.spliced, 300_000);
    // The connection turns out unable to splice (as under TLS): the
    // rest is copied, and goes after what waits in the pipe.
    h.s.data_splice_unavailable();
    assert!(matches!(h.s.data_input(), DataIn::Bytes));
    h.upload(&body[300_000..], 70_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(h.spliced, 300_000);
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
}

#[test]
fn a_pipe_fills_until_full_then_goes_to_a_worker_while_the_other_fills() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    h.run_jobs = false;
    let body = pattern(3_000_000);
    assert_eq!(h.receive(&body[..100_000]), 100_000);
    h.with(|s, ctx| s.end_turn(ctx));
    assert!(h.jobs.is_empty(), "a pipe with room waits past the turn");
    // The kernel counts the pipe full before we do: it goes as it is.
    h.with(|s, ctx| s.handle_data_pipe_full(ctx));
    assert_eq!(h.jobs.len(), 1, "the pipe went to a worker");
    let DataIn::Pipe { room, .. } = h.s.data_input() else {
        panic!("the other pipe is offered while the worker writes");
    };
    assert_eq!(room, store::STREAM_BATCH);
    // It fills to its batch, then reading stops until the worker is back.
    let mut at = 100_000;
    while at < body.len() {
        let took = h.receive(&body[at..(at + 64_000).min(body.len())]);
        if took == 0 {
            break;
        }
        at += took;
    }
    // (The pipe counts pages: writes that leave a page part-filled fill
    // it before a whole batch of bytes is in.)
    let more = at - 100_000;
    assert!(
        (store::STREAM_BATCH / 2..=store::STREAM_BATCH).contains(&more),
        "{more} bytes more: one batch at most"
    );
    assert!(!h.s.wants_data_read());
    assert!(
        h.s.buffered_bytes() <= 2 * store::STREAM_BATCH,
        "{} bytes held in both pipes",
        h.s.buffered_bytes()
    );
    h.run_jobs = true;
    h.settle();
    h.upload(&body[at..], 64_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    let landed = std::fs::read(h.home().join("up.bin")).unwrap();
    let first_difference = landed.iter().zip(&body).position(|(a, b)| a != b);
    assert_eq!((landed.len(), first_difference), (body.len(), None));
}

#[test]
fn a_pipe_never_takes_more_than_the_quota_has_room_for() {
    let mut h = Harness::logged_in();
    let room = usize::try_from(ALICE_QUOTA - 5).unwrap();
    h.open_data();
    h.send("STOR big.bin\r\n");
    h.take();
    h.stats.pressure = false;
    let body = pattern(2 << 20);
    let DataIn::Pipe { room: offered, .. } = h.s.data_input() else {
        panic!("a pipe is offered");
    };
    assert_eq!(offered, room, "the pipe is offered what the quota admits");
    h.upload(&body, 300_000);
    assert_eq!(h.spliced, room, "spliced up to the quota, not a byte more");
    assert!(
        h.take()
            .starts_with(&format!("552 Quota exceeded: {room} bytes are kept"))
    );
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.used, a.reserved, a.parked), (5, 0, room as u64));
}

#[test]
fn a_session_reset_with_a_pipe_on_a_worker_parks_what_reached_the_file() {
    let mut h = Harness::logged_in();
    h.stats.pressure = true; // batches of 256 KiB
    stor_without_quota(&mut h, "up.bin");
    h.run_jobs = false;
    let body = pattern(400_000);
    let took = h.receive(&body);
    assert_eq!(took, store::WRITE_BATCH, "a batch under pressure");
    assert_eq!(h.jobs.len(), 1, "a full pipe goes to a worker");
    assert_eq!(
        h.receive(&body[took..]),
        body.len() - took,
        "the other fills"
    );
    h.s.handle_reset();
    h.run_jobs = true;
    h.settle();
    assert!(h.s.is_done());
    // The bytes on the worker reached the file; those in the other pipe
    // went with the session.
    let a = h.services.accounts["alice"].borrow();
    assert_eq!(a.parked, store::WRITE_BATCH as u64);
    drop(a);
    assert_eq!(h.services.upload_pipes.taken(), 0);
}

#[test]
fn a_stalled_upload_keeps_what_waits_in_its_pipe() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    let body = pattern(300_000);
    assert_eq!(h.receive(&body), body.len());
    h.settle();
    assert!(h.jobs.is_empty(), "a pipe with room waits past the turn");
    // The client sends no more and does not close.
    h.advance(h.limits.idle_timeout);
    // The deadline comes again once the bytes are written.
    h.advance(Duration::ZERO);
    assert_eq!(
        h.take(),
        "426 Data connection stalled; transfer aborted.\r\n"
    );
    h.send("SIZE up.bin\r\n");
    assert_eq!(h.take(), "213 300000\r\n", "what arrived is kept");
    let a = h.services.accounts["alice"].borrow();
    assert_eq!((a.reserved, a.parked), (0, 300_000));
}

#[test]
fn a_deadline_passed_while_a_job_is_out_does_not_fall_due_again() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    h.run_jobs = false;
    let body = pattern(3 << 20);
    let took = h.receive(&body);
    assert_eq!(took, store::STREAM_BATCH);
    assert_eq!(h.jobs.len(), 1, "a batch is on a (slow) worker");
    // The worker takes longer than the idle timeout: the timer fires,
    // and the next must not be due already (the reactor fires due
    // timers until none is: it would never get to the job's result).
    h.advance(h.limits.idle_timeout);
    let next = Engine::deadline(&h.s, &h.limits).expect("a deadline");
    assert!(next > h.now, "due again at once, {:?} ago", h.now - next);
    assert_eq!(h.take(), "", "no reply while the job is out");
    // Back from the worker, the upload goes on.
    h.run_jobs = true;
    h.settle();
    h.upload(&body[took..], 100_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
}

#[test]
fn an_empty_pipe_said_to_be_full_is_offered_again() {
    let mut h = Harness::logged_in();
    stor_without_quota(&mut h, "up.bin");
    assert!(matches!(h.s.data_input(), DataIn::Pipe { .. }));
    // The socket was empty when the splice ran, and bytes came before the
    // peek: an empty pipe cannot be full, so it is still the way in.
    h.with(|s, ctx| s.handle_data_pipe_full(ctx));
    assert!(matches!(h.s.data_input(), DataIn::Pipe { .. }));
    assert!(h.jobs.is_empty(), "nothing to hand over");
    let body = pattern(200_000);
    h.upload(&body, 50_000);
    assert_eq!(h.take(), "226 Transfer complete.\r\n");
    assert_eq!(h.spliced, body.len());
    assert_eq!(std::fs::read(h.home().join("up.bin")).unwrap(), body);
}
