//! [`FtpSession`]: the control connection's state, its input and output,
//! its jobs and its timers. The commands are in [`super::verbs`], the
//! data connection and transfers in [`super::transfer`].

use std::any::Any;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::command::{self, Command, Refused};
use super::line::{Line, LineReader};
use super::reply;
use super::transfer::Data;
use crate::buffer::OutBuf;
use crate::ctx::Ctx;
use crate::ctx::Submission;
use crate::engine::{Engine, Parts, Transmit};
use crate::handlers::Session;
use crate::handlers::upload::Reservation;
use crate::limits::Limits;
use crate::pool::{Lane, Work};
use skiff::proto::Code;

/// Most command lines handled per session per turn.
pub const MAX_COMMANDS_PER_TURN: u16 = 8;
/// Replies queued above which no more commands are handled until the
/// client has read some: a client that pipelines without reading its
/// replies fills its socket, not the server's memory.
pub const REPLIES_HIGH: usize = 64 << 10;
/// Commands held back behind a transfer at most (each at most a line):
/// more are not read until it ends.
const MAX_DEFERRED: usize = 4;
/// Failed `PASS` commands after which the session is closed (the
/// server-wide throttle then decides how soon the next try is answered).
const MAX_LOGIN_FAILURES: u8 = 3;

/// What a job's result does, back on the loop.
pub(super) type Then = Box<dyn FnOnce(Box<dyn Any + Send>, &mut FtpSession, &mut Ctx)>;

/// Work for the pool, and what to do with its result (an FTP session's
/// counterpart of [`crate::handlers::Job`], whose `then` writes framed
/// replies).
pub(super) struct FtpJob {
    name: &'static str,
    lane: Lane,
    work: Work,
    then: Then,
    /// Client bytes the job carries, for the buffer budget.
    pub(super) holds: usize,
}

/// A job whose `work` returns a `T` that `then` takes back.
pub(super) fn job<T: Send + 'static>(
    name: &'static str,
    lane: Lane,
    work: impl FnOnce() -> T + Send + 'static,
    then: impl FnOnce(T, &mut FtpSession, &mut Ctx) + 'static,
) -> FtpJob {
    FtpJob {
        name,
        lane,
        holds: 0,
        work: Box::new(move || Box::new(work()) as Box<dyn Any + Send>),
        then: Box::new(move |result, session, ctx| match result.downcast::<T>() {
            Ok(value) => then(*value, session, ctx),
            // Cannot happen: `work` above made the box.
            Err(_) => session.reply(451, "Internal error: a job returned the wrong type."),
        }),
    }
}

/// A job out on a worker.
struct Waiting {
    name: &'static str,
    then: Then,
    holds: usize,
}

/// One FTP control connection, with the data connection it owns.
pub struct FtpSession {
    /// Slab key of the control connection, for the log and the pool.
    pub(super) key: usize,
    /// The client's address: data connections must come from it.
    pub(super) peer: IpAddr,
    /// How long a passive listener or an unused data connection lives.
    pub(super) passive_timeout: Duration,
    /// Command lines being cut from the input.
    lines: LineReader,
    /// Input read from the socket; the bytes from `input_at` on are not
    /// cut into lines yet (they wait while a job is out).
    input: Vec<u8>,
    /// How much of `input` the line reader has taken. An offset, not a
    /// `drain` per line: a read of 64 KiB of pipelined `NOOP`s is ten
    /// thousand lines, and moving the rest down after each one would cost
    /// the server quadratic time in what a client sends.
    input_at: usize,
    /// Replies waiting for the socket.
    out: OutBuf,
    /// Who is logged in, their account and cwd (the framed protocol's
    /// session: same login, same revocation).
    pub(super) session: Session,
    /// The name `USER` gave, waiting for `PASS`.
    pub(super) user_name: Option<String>,
    /// Failed `PASS` on this connection.
    pub(super) login_failures: u8,
    /// `REST`'s offset for the next transfer.
    pub(super) rest: u64,
    /// `RNFR`'s path, for the `RNTO` right after it.
    pub(super) rename_from: Option<String>,
    /// Quota `ALLO` reserved for the next upload.
    pub(super) allo: Option<Reservation>,
    /// `EPSV ALL`: PASV is refused from now on.
    pub(super) epsv_all: bool,
    /// Uploads are hashed as they arrive (`--ftp-hash-uploads`), rather
    /// than when `HASH`/`XMD5` first asks.
    pub(super) hash_uploads: bool,
    /// The job out on a worker, if any: nothing is read meanwhile.
    job: Option<Waiting>,
    /// A command line is being handled (its first job may be refused).
    first_step: bool,
    /// Commands handled since the reactor's last `start_turn`.
    commands_this_turn: u16,
    /// Commands that arrived during a transfer and wait for its end.
    deferred: std::collections::VecDeque<Command>,
    /// The data connection and the transfer on it.
    pub(super) data: Data,
    /// Last time bytes moved on the control or data connection.
    pub(super) last_active: Instant,
    /// Closing for this reason: replies are flushed, then done.
    closing: Option<&'static str>,
    /// The peer finished sending on the control connection.
    eof: bool,
    /// TLS: offered, required, on the control connection, on data.
    pub(super) security: super::security::Security,
}

impl FtpSession {
    /// A new session, greeting the client. `passive_timeout` is
    /// [`Limits::ftp_passive_timeout`].
    pub fn new(key: usize, peer: IpAddr, now: Instant, passive_timeout: Duration) -> FtpSession {
        let peer = peer.to_canonical();
        let mut s = FtpSession {
            key,
            peer,
            passive_timeout,
            lines: LineReader::default(),
            input: Vec::new(),
            input_at: 0,
            out: OutBuf::default(),
            session: Session::new(key, Some(peer)),
            user_name: None,
            login_failures: 0,
            rest: 0,
            rename_from: None,
            allo: None,
            epsv_all: false,
            hash_uploads: false,
            job: None,
            first_step: false,
            commands_this_turn: 0,
            deferred: std::collections::VecDeque::new(),
            data: Data::new(now),
            last_active: now,
            closing: None,
            eof: false,
            security: Default::default(),
        };
        s.reply(220, "skiffd FTP ready.");
        s
    }

    /// Hashes uploads (MD5) as they arrive, so `HASH`/`XMD5` answer a
    /// fresh upload at once. Off by default: MD5 costs more CPU than
    /// receiving and writing the bytes together, and most FTP clients
    /// never ask; unasked, the first `HASH` reads the file once and the
    /// answer is cached.
    pub fn hash_uploads(&mut self, on: bool) {
        self.hash_uploads = on;
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.session.user.as_deref()
    }

    // ----- control connection: input --------------------------------

    /// Handles buffered command lines while it may.
    pub(super) fn run(&mut self, ctx: &mut Ctx) {
        loop {
            if !self.may_handle() {
                break;
            }
            if !self.data.busy()
                && let Some(cmd) = self.deferred.pop_front()
            {
                self.dispatch(cmd, ctx);
                continue;
            }
            if self.deferred.len() >= MAX_DEFERRED {
                break;
            }
            if !self.lines.has_line() {
                if !self.input_pending() {
                    break;
                }
                let used = self.lines.push(&self.input[self.input_at..]);
                self.input_at += used;
                continue;
            }
            if self.commands_this_turn >= MAX_COMMANDS_PER_TURN {
                break; // the rest waits for the next turn (see `has_work`)
            }
            let Some(line) = self.lines.next_line() else {
                break;
            };
            self.commands_this_turn += 1;
            ctx.stats.requests += 1;
            self.on_line(line, ctx);
        }
        if !self.input_pending() && self.input.capacity() > 0 {
            self.input = Vec::new();
            self.input_at = 0;
        }
        self.settle_eof();
    }

    /// Whether some input is not cut into lines yet.
    fn input_pending(&self) -> bool {
        self.input_at < self.input.len()
    }

    /// Whether commands wait to be handled: input not cut yet, a line,
    /// or commands that waited for a transfer that has ended.
    fn has_commands(&self) -> bool {
        let busy = self.data.busy();
        let unread = self.input_pending() || self.lines.has_line();
        (!self.deferred.is_empty() && !busy)
            || (unread && (!busy || self.deferred.len() < MAX_DEFERRED))
    }

    /// Whether a command may be handled now: not closing, no job out, no
    /// listener being bound (a PASV's reply must come first), and the
    /// client reads its replies.
    fn may_handle(&self) -> bool {
        self.closing.is_none()
            && !self.tls_starting()
            && self.job.is_none()
            && !self.data.binding()
            && self.out.len() < REPLIES_HIGH
    }

    fn settle_eof(&mut self) {
        if self.eof
            && self.closing.is_none()
            && self.job.is_none()
            && !self.data.binding()
            && !self.input_pending()
            && !self.lines.has_line()
            && !self.has_commands()
        {
            self.close("peer closed");
        }
    }

    fn on_line(&mut self, line: Line, ctx: &mut Ctx) {
        let bytes = match line {
            Line::Command(bytes) => bytes,
            Line::TooLong => {
                self.reply(500, "Command line too long.");
                return;
            }
        };
        let cmd = match command::parse(&bytes) {
            Ok(cmd) => cmd,
            Err(Refused::Unknown(verb)) => {
                debug!("ftp {}: unknown command {verb:?}", self.key);
                self.reply(500, &format!("Unknown command {verb:?}."));
                return;
            }
            Err(Refused::NotUtf8) => {
                self.reply(501, "Arguments must be UTF-8.");
                return;
            }
        };
        // During a transfer only ABOR, STAT, NOOP and QUIT are answered
        // (RFC 959 §4.1.3); the rest waits for its end, and so does
        // everything behind a command that waits, but ABOR.
        let waits = !cmd.verb.during_transfer()
            || (!self.deferred.is_empty() && cmd.verb != command::Verb::Abor);
        if self.data.busy() && waits {
            self.deferred.push_back(cmd);
            return;
        }
        self.dispatch(cmd, ctx);
    }

    fn dispatch(&mut self, cmd: Command, ctx: &mut Ctx) {
        if cmd.verb == command::Verb::Pass {
            debug!("ftp {}: PASS ****", self.key);
        } else {
            debug!("ftp {}: {:?} {:?}", self.key, cmd.verb, cmd.arg);
        }
        self.last_active = ctx.now;
        if self.session.user.is_some()
            && let Some(why) = crate::handlers::auth::revoked(&self.session, &ctx.services.users)
        {
            self.reply(421, why);
            self.close("account deleted or password changed");
            return;
        }
        self.first_step = true;
        self.command(cmd, ctx);
        self.first_step = false;
    }

    /// Drops every command received and not run yet (see `AUTH TLS`).
    pub(super) fn discard_input(&mut self) {
        if !self.input.is_empty() || self.lines.has_line() || !self.deferred.is_empty() {
            info!(
                "ftp {}: dropped what came in clear text after AUTH TLS",
                self.key
            );
        }
        self.input = Vec::new();
        self.lines = LineReader::default();
        self.deferred.clear();
    }

    // ----- control connection: output -------------------------------

    /// Every reply queued has been written.
    pub(super) fn replies_flushed(&self) -> bool {
        self.out.is_empty()
    }

    /// Appends a one-line reply.
    pub(super) fn reply(&mut self, code: u16, text: &str) {
        reply::line(self.out.writer(), code, text);
    }

    /// Appends a multi-line reply.
    pub(super) fn reply_multi<S: AsRef<str>>(
        &mut self,
        code: u16,
        first: &str,
        middle: &[S],
        last: &str,
    ) {
        reply::multi(self.out.writer(), code, first, middle, last);
    }

    /// A refused request, as a reply.
    pub(super) fn refuse(&mut self, (code, message): (Code, String)) {
        self.reply(ftp_code(code), &message);
    }

    // ----- jobs --------------------------------------------------------

    /// A job is out on a worker.
    pub(super) fn job_out(&self) -> bool {
        self.job.is_some()
    }

    /// Hands a job to the reactor for the pool; nothing is read until its
    /// result is back.
    pub(super) fn start_job(&mut self, job: FtpJob, ctx: &mut Ctx) {
        debug!("ftp {}: job {}", self.key, job.name);
        ctx.jobs.push(Submission {
            must_run: !self.first_step,
            conn: self.key,
            name: job.name,
            lane: job.lane,
            work: job.work,
        });
        self.job = Some(Waiting {
            name: job.name,
            then: job.then,
            holds: job.holds,
        });
    }

    fn after_job(&mut self, ctx: &mut Ctx) {
        if self.job.is_some() {
            return;
        }
        if self.closing.is_some() {
            self.drop_data();
            return;
        }
        self.after_data_step(ctx);
        self.run(ctx);
    }

    // ----- time and the end ---------------------------------------------

    /// Closes: replies are flushed, the data connection and listener are
    /// given up, and an upload in progress keeps its partial file.
    pub(super) fn close(&mut self, why: &'static str) {
        if self.closing.is_some() {
            return;
        }
        debug!("ftp {}: closing ({why})", self.key);
        self.closing = Some(why);
        self.input = Vec::new();
        self.input_at = 0;
        self.lines = LineReader::default();
        self.deferred = std::collections::VecDeque::new();
        // A job out may hold an upload's file: its transfer goes when the
        // job is back (see `after_job`), so the partial is counted.
        if self.job.is_none() {
            self.drop_data();
        }
    }

    /// Closing was decided.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// users.json changed: a session whose user was deleted or whose
    /// password changed is told and closed.
    pub fn recheck_login(&mut self, users: &crate::users::UserDb) {
        if self.closing.is_some() {
            return;
        }
        if let Some(why) = crate::handlers::auth::revoked(&self.session, users) {
            self.reply(421, why);
            self.close("account deleted or password changed");
        }
    }

    /// Counts a failed login; true if the session should close.
    pub(super) fn login_failed(&mut self) -> bool {
        self.login_failures = self.login_failures.saturating_add(1);
        self.login_failures >= MAX_LOGIN_FAILURES
    }
}

/// The control connection's side of the [`Engine`] contract; the data
/// connection's is `transfer.rs`: [`FtpSession::poll_data_request`] and the
/// `handle_data_*` calls.
impl Engine for FtpSession {
    /// A new turn: [`MAX_COMMANDS_PER_TURN`] more commands may be handled;
    /// a buffer-full of a file copied to the data connection (where
    /// `sendfile` is missing), and the commands that waited.
    fn start_turn(&mut self, ctx: &mut Ctx) {
        self.commands_this_turn = 0;
        self.data_work(ctx);
        self.run(ctx);
    }

    /// Bytes read from the control socket (only while `wants_read`).
    fn handle_input(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        self.last_active = ctx.now;
        if self.closing.is_some() || self.tls_starting() {
            return; // after AUTH TLS, clear text is never run
        }
        if !self.input_pending() {
            self.input.clear();
            self.input_at = 0;
        }
        self.input.extend_from_slice(bytes);
        self.run(ctx);
    }

    /// Nothing is lent from the input: every byte is copied into the
    /// line reader.
    fn release_input(&mut self, _bytes: &[u8], _ctx: &mut Ctx) {}

    /// The reactor has read what it could this turn: received upload
    /// bytes go to a worker now, rather than wait for a full batch.
    fn end_turn(&mut self, ctx: &mut Ctx) {
        self.flush_upload(ctx);
    }

    /// Replies waiting for the control socket (the data connection's
    /// output is [`FtpSession::data_output`]).
    fn poll_transmit<'a>(&'a mut self, _input: &'a [u8]) -> Option<Transmit<'a>> {
        let pending = self.out.pending();
        (!pending.is_empty()).then(|| Transmit::Bytes(Parts::one(pending)))
    }

    /// The control socket took `n` bytes of what `poll_transmit` offered.
    fn handle_written(&mut self, n: usize, ctx: &mut Ctx) {
        let before = self.out.len();
        self.out.consume(n);
        self.last_active = ctx.now;
        if before >= REPLIES_HIGH && self.out.len() < REPLIES_HIGH {
            // Commands that waited for the client to read may go on.
            self.run(ctx);
        }
    }

    /// The control connection never sends a file.
    fn handle_zero_copy_refused(&mut self) {}

    /// The control connection never offers a file (the data side has
    /// [`FtpSession::handle_data_file_not_cached`]).
    fn handle_file_not_cached(&mut self, _offset: u64, _len: u64, _ctx: &mut Ctx) {}

    /// The peer shut down its side of the control connection.
    fn handle_eof(&mut self, ctx: &mut Ctx) {
        self.eof = true;
        self.run(ctx);
    }

    /// The deadline has passed (extra calls are harmless).
    fn handle_timeout(&mut self, ctx: &mut Ctx) {
        self.data_timeout(ctx);
        if ctx.now < self.last_active + ctx.limits.idle_timeout
            && !(self.closing.is_some() && ctx.now >= self.last_active + ctx.limits.close_grace)
        {
            return;
        }
        if self.job.is_some() || (self.data.busy() && self.closing.is_none()) {
            // The client waits for us, or a transfer moves (its own
            // clock is in `data_timeout`).
            self.last_active = ctx.now;
            return;
        }
        if self.closing.is_some() {
            debug!("ftp {}: dropping {} unread bytes", self.key, self.out.len());
            self.out = OutBuf::default();
            return;
        }
        self.reply(421, "Timeout.");
        self.close("idle timeout");
    }

    /// The result of this session's job.
    fn handle_job_done(&mut self, result: Box<dyn Any + Send>, ctx: &mut Ctx) {
        let Some(waiting) = self.job.take() else {
            return; // a stray result
        };
        debug!("ftp {}: job {} done", self.key, waiting.name);
        self.last_active = ctx.now;
        (waiting.then)(result, self, ctx);
        self.after_job(ctx);
    }

    /// The pool would not take this session's job (its queue is full).
    fn handle_job_refused(&mut self, ctx: &mut Ctx) {
        let Some(waiting) = self.job.take() else {
            return;
        };
        info!(
            "ftp {}: job {} refused: the worker queue is full",
            self.key, waiting.name
        );
        self.reply(450, "The server is busy; try again shortly.");
        self.after_job(ctx);
    }

    /// The control socket failed: nothing more can be written.
    fn handle_reset(&mut self) {
        self.out = OutBuf::default();
        self.close("connection reset");
    }

    /// The server is stopping: say so and close.
    fn shut_down(&mut self) {
        if self.closing.is_none() {
            self.reply(421, "Server shutting down.");
            self.close("server shutting down");
        }
    }

    /// Whether the reactor should read the control socket.
    fn wants_read(&self, _limits: &Limits) -> bool {
        self.closing.is_none()
            && !self.tls_starting()
            && !self.eof
            && self.job.is_none()
            && !self.data.binding()
            && !self.input_pending()
            && !self.lines.has_line()
            && self.deferred.len() < MAX_DEFERRED
            && self.out.len() < REPLIES_HIGH
            && self.commands_this_turn < MAX_COMMANDS_PER_TURN
    }

    /// Whether the reactor owes this session a turn without a socket
    /// event: commands wait past the turn's share, or a file is copied
    /// to the data connection (no `sendfile`).
    fn wants_turn(&self, _limits: &Limits) -> bool {
        // A share used up owes a turn even with nothing buffered: more may
        // wait in the socket, and no new edge would say so.
        let owed = self.commands_this_turn >= MAX_COMMANDS_PER_TURN && !self.eof;
        ((self.has_commands() || owed) && self.may_handle()) || self.data_has_work()
    }

    /// When `handle_timeout` should next be called.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let control = if self.closing.is_some() {
            self.last_active + limits.close_grace
        } else {
            self.last_active + limits.idle_timeout
        };
        Some(match self.data_deadline(limits) {
            Some(at) => at.min(control),
            None => control,
        })
    }

    /// Closed, nothing left to write, no job out: the reactor may drop the
    /// session (and any data socket or listener it still has for it).
    fn is_done(&self) -> bool {
        self.closing.is_some() && self.out.is_empty() && self.job.is_none()
    }

    /// A job of this session is on a worker: its result must come back
    /// before the session may go.
    fn job_in_flight(&self) -> bool {
        self.job_out()
    }

    /// Memory held by buffers, in bytes (for the server's budget).
    fn buffered_bytes(&self) -> usize {
        self.input.capacity()
            + self.lines.buffered_bytes()
            + self.out.capacity()
            + self.data.buffered_bytes()
            + self.job.as_ref().map_or(0, |j| j.holds)
            + self
                .deferred
                .iter()
                .map(|c| c.arg.capacity())
                .sum::<usize>()
    }
}

/// The FTP reply code for a refusal of the shared handlers.
pub(super) fn ftp_code(code: Code) -> u16 {
    match code {
        Code::QuotaExceeded => 552,
        Code::TooBusy => 450,
        Code::BadRequest => 553,
        Code::NotFound
        | Code::Forbidden
        | Code::Exists
        | Code::NotADirectory
        | Code::IsADirectory
        | Code::NotEmpty
        | Code::AuthRequired => 550,
        _ => 451,
    }
}
