//! The data connection and the transfers on it.
//!
//! The reactor owns the sockets; the session says what it wants done
//! with them ([`DataRequest`]) and is told what happened (`handle_*`).
//!
//! ```text
//!   passive side                      transfer side
//!   ────────────                      ─────────────
//!   Off ─PASV/EPSV─▶ Binding          Idle ─RETR/LIST/STOR─▶ (job: open, list, check)
//!        (Listen)       │ bound: 227/229        │ ready
//!                       ▼                       ▼
//!                   Listening ── timeout ─▶ Off (425 to a waiting transfer)
//!                       │ connected (from the control peer's IP only)
//!                       ▼
//!                   Connected ───────────▶ Running ── 150, bytes move ──┐
//!                                             │ ABOR: CloseData          │ all sent / EOF and landed
//!                                             ▼                          ▼
//!                                          Aborting                   Closing(226 / 552 / 451)
//!                                             │ closed: 426, 226         │ closed: the reply
//!                                             └────────▶ Idle ◀──────────┘
//! ```
//!
//! A reply that ends a transfer goes out only once the reactor says the
//! data connection is closed, so a client that reads the reply knows it
//! has every byte. One passive listener and one data connection per
//! session: `PASV` again replaces both.

use std::collections::VecDeque;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::Instant;

use log::{debug, info};

use super::listing::Cursor;
use super::session::{FtpSession, job};
use super::store::Store;
use crate::buffer::OutBuf;
use crate::ctx::Ctx;
use crate::handlers::files::{Sending, Step};
use crate::limits::Limits;
use crate::pool::Lane;

/// What the session asks of the reactor's data sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRequest {
    /// Bind a passive listener (closing any listener and data connection
    /// this session has), then call [`FtpSession::handle_passive_bound`]
    /// with the address to announce, or
    /// [`FtpSession::handle_passive_failed`].
    Listen,
    /// Close the passive listener.
    CloseListener,
    /// Close the data connection (after what was queued on it is
    /// written), then call [`FtpSession::handle_data_closed`].
    CloseData,
}

/// What to write to the data connection now.
#[derive(Debug)]
pub enum DataOut<'a> {
    /// Nothing (yet).
    Nothing,
    /// These bytes; then [`FtpSession::handle_data_written`].
    Bytes(&'a [u8]),
    /// Up to `len` bytes of `file`, from its current position `offset`,
    /// with `sendfile(2)`; then [`FtpSession::handle_data_file_sent`].
    /// The reactor first asks the kernel whether the range it sends is in
    /// the page cache, and if not calls
    /// [`FtpSession::handle_data_file_not_cached`] instead (as in the
    /// framed connection's contract, [`crate::engine`]; `warmed` as there).
    File {
        /// The open file.
        file: &'a File,
        /// Its current offset.
        offset: u64,
        /// Most bytes to send.
        len: u64,
        /// A job has just read these bytes into the page cache.
        warmed: bool,
    },
}

/// Where to put what is read from the data connection now.
#[derive(Debug)]
pub enum DataIn<'a> {
    /// Nothing: do not read.
    Nothing,
    /// Read into a buffer; then [`FtpSession::handle_data_input`].
    Bytes,
    /// Move up to `room` bytes from the socket into `pipe` with
    /// `splice(2)` and `SPLICE_F_NONBLOCK` (never more: the quota
    /// admitted that many); then [`FtpSession::handle_data_spliced`]. A
    /// pipe that takes nothing while the socket still has bytes (both say
    /// `EAGAIN`; a peek tells them apart):
    /// [`FtpSession::handle_data_pipe_full`]. A socket that cannot
    /// splice, or one under TLS: [`FtpSession::data_splice_unavailable`],
    /// and read instead.
    Pipe {
        /// The pipe's input end.
        pipe: BorrowedFd<'a>,
        /// Most bytes to move.
        room: usize,
    },
}

/// The passive side: listener and connection.
#[derive(Debug)]
pub(super) enum Passive {
    /// Neither.
    Off,
    /// A listener was asked for.
    Binding { epsv: bool },
    /// Announced; waiting for the client to connect.
    Listening { since: Instant },
    /// The client connected (the reactor dropped the listener).
    Connected { since: Instant },
}

/// What moves on the data connection.
pub(super) enum Flow {
    /// Bytes (a listing, page by page) or a file, to the client.
    Send {
        /// A file being sent.
        file: Option<Sending>,
        /// A listing with pages still to build.
        listing: Option<Box<Cursor>>,
    },
    /// An upload from the client.
    Receive(Box<Store>),
}

/// The transfer.
pub(super) enum Transfer {
    /// None.
    Idle,
    /// Ready, waiting for the client's data connection; the text of the
    /// `150` that starts it.
    Awaiting(Flow, String),
    /// Bytes move.
    Running(Flow),
    /// An upload's last batch is being written and landed (a job).
    Finishing,
    /// Done: the data connection is closing; this reply follows.
    Closing(u16, String),
    /// Aborted: the data connection is closing; `426`, `226` follow.
    Aborting,
}

/// The data connection's side of a session.
pub(super) struct Data {
    pub(super) passive: Passive,
    pub(super) transfer: Transfer,
    /// Requests for the reactor, oldest first (at most a few).
    requests: VecDeque<DataRequest>,
    /// Bytes for the data connection (a listing page, a copied file).
    out: OutBuf,
    /// The client finished sending (an upload's end).
    pub(super) eof: bool,
    /// The data connection went away on its own during a transfer.
    pub(super) lost: bool,
    /// Last time bytes moved on the data connection.
    progress: Instant,
    /// `ABOR` came while the transfer was already finishing: its reply
    /// follows the transfer's.
    abor_after: bool,
    /// `QUIT` came during the transfer: it closes the session after it.
    quit: bool,
}

impl Transfer {
    fn name(&self) -> &'static str {
        match self {
            Transfer::Idle => "idle",
            Transfer::Awaiting(Flow::Send { .. }, _) => "awaiting-connection (send)",
            Transfer::Awaiting(Flow::Receive(_), _) => "awaiting-connection (receive)",
            Transfer::Running(Flow::Send { .. }) => "sending",
            Transfer::Running(Flow::Receive(_)) => "receiving",
            Transfer::Finishing => "landing",
            Transfer::Closing(..) => "closing-data",
            Transfer::Aborting => "aborting",
        }
    }
}

impl Data {
    pub(super) fn new(now: Instant) -> Data {
        Data {
            passive: Passive::Off,
            transfer: Transfer::Idle,
            requests: VecDeque::new(),
            out: OutBuf::default(),
            eof: false,
            lost: false,
            progress: now,
            abor_after: false,
            quit: false,
        }
    }

    /// A transfer command is under way: later commands (but ABOR, STAT,
    /// QUIT, NOOP) wait.
    pub(super) fn busy(&self) -> bool {
        !matches!(self.transfer, Transfer::Idle)
    }

    /// A listener was asked for and not reported yet.
    pub(super) fn binding(&self) -> bool {
        matches!(self.passive, Passive::Binding { .. })
    }

    fn request(&mut self, r: DataRequest) {
        if self.requests.back() != Some(&r) {
            self.requests.push_back(r);
        }
    }

    pub(super) fn buffered_bytes(&self) -> usize {
        let flow = |f: &Flow| match f {
            Flow::Send { listing, file } => {
                listing.as_ref().map_or(0, |c| c.held_bytes())
                    + file.as_ref().map_or(0, |f| f.spare.capacity())
            }
            Flow::Receive(store) => store.buffered_bytes(),
        };
        self.out.capacity()
            + match &self.transfer {
                Transfer::Awaiting(f, _) | Transfer::Running(f) => flow(f),
                _ => 0,
            }
    }
}

impl FtpSession {
    // ----- the reactor's side -----------------------------------------

    /// The next thing to do with the data sockets, if any.
    pub fn poll_data_request(&mut self) -> Option<DataRequest> {
        self.data.requests.pop_front()
    }

    /// The passive listener is bound; `addr` is what to announce (the
    /// `--ftp-advertise` address or the control socket's local address,
    /// with the bound port).
    pub fn handle_passive_bound(&mut self, addr: SocketAddr, ctx: &mut Ctx) {
        let Passive::Binding { epsv } = self.data.passive else {
            self.data.request(DataRequest::CloseListener);
            return;
        };
        if epsv {
            self.reply(
                229,
                &format!("Entering Extended Passive Mode (|||{}|)", addr.port()),
            );
        } else {
            let ip = match addr.ip().to_canonical() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => {
                    self.data.passive = Passive::Off;
                    self.data.request(DataRequest::CloseListener);
                    self.reply(425, "PASV needs IPv4; use EPSV.");
                    self.run(ctx);
                    return;
                }
            };
            let [a, b, c, d] = ip.octets();
            let port = addr.port();
            self.reply(
                227,
                &format!(
                    "Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                    port >> 8,
                    port & 0xff
                ),
            );
        }
        debug!("ftp {}: passive listener on port {}", self.key, addr.port());
        self.data.passive = Passive::Listening { since: ctx.now };
        self.run(ctx);
    }

    /// No passive port could be bound.
    pub fn handle_passive_failed(&mut self, ctx: &mut Ctx) {
        if matches!(self.data.passive, Passive::Binding { .. }) {
            self.data.passive = Passive::Off;
            self.reply(425, "No passive port is free; try again shortly.");
            self.run(ctx);
        }
    }

    /// A connection came to the passive listener from `peer`. False: the
    /// reactor closes that connection (and keeps listening). True: it
    /// keeps it as the data connection and closes the listener.
    pub fn handle_data_connected(&mut self, peer: IpAddr, ctx: &mut Ctx) -> bool {
        if !matches!(self.data.passive, Passive::Listening { .. }) {
            return false;
        }
        if peer.to_canonical() != self.peer {
            info!(
                "ftp {}: data connection from {peer} refused: the control connection is from {}",
                self.key, self.peer
            );
            return false;
        }
        debug!("ftp {}: data connection open", self.key);
        self.data.passive = Passive::Connected { since: ctx.now };
        self.data.progress = ctx.now;
        self.data.eof = false;
        self.data.lost = false;
        if let Transfer::Awaiting(..) = self.data.transfer {
            let Transfer::Awaiting(flow, opening) = self.set_transfer(Transfer::Idle) else {
                return true;
            };
            self.run_flow(flow, &opening, ctx);
        }
        true
    }

    /// What to write to the data connection now.
    pub fn data_output(&self) -> DataOut<'_> {
        if !matches!(self.data.transfer, Transfer::Running(_)) {
            return DataOut::Nothing;
        }
        if !self.data.out.is_empty() {
            return DataOut::Bytes(self.data.out.pending());
        }
        match &self.data.transfer {
            Transfer::Running(Flow::Send {
                file: Some(send), ..
            }) if send.zero_copy && send.remaining > 0 => {
                let (offset, len, warmed) = send.file_offer();
                DataOut::File {
                    file: &send.file,
                    offset,
                    len,
                    warmed,
                }
            }
            _ => DataOut::Nothing,
        }
    }

    /// The data connection took `n` bytes of [`DataOut::Bytes`].
    pub fn handle_data_written(&mut self, n: usize, ctx: &mut Ctx) {
        match &mut self.data.transfer {
            // A file copied through the buffer: keep the allocation for
            // the next buffer-full (see `OutBuf::consume_and_reclaim`).
            Transfer::Running(Flow::Send {
                file: Some(send), ..
            }) if !send.zero_copy => {
                if let Some(spare) = self.data.out.consume_and_reclaim(n) {
                    send.spare = spare;
                }
            }
            _ => self.data.out.consume(n),
        }
        self.progress(ctx);
        self.data_work(ctx);
        self.pump_send(ctx);
    }

    /// The data connection took `n` bytes of [`DataOut::File`]; 0 means
    /// the file ended early (it shrank).
    pub fn handle_data_file_sent(&mut self, n: usize, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Send {
            file: Some(send), ..
        }) = &mut self.data.transfer
        else {
            return;
        };
        if n == 0 {
            info!("ftp {}: file ended early during RETR", self.key);
            self.end_transfer(451, "The file changed while it was sent; transfer aborted.");
            return;
        }
        send.sent(n as u64);
        let cold = send.wants_warming();
        self.progress(ctx);
        if cold {
            // The file is cold: its next window is read in (the disk has
            // already started on it) before any more is sent.
            self.warm_data(ctx);
            return;
        }
        self.pump_send(ctx);
    }

    /// The reactor found the `len` bytes at `offset` of the file on offer
    /// not (all) in the page cache: a worker reads them in first.
    pub fn handle_data_file_not_cached(&mut self, offset: u64, len: u64, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Send {
            file: Some(send), ..
        }) = &self.data.transfer
        else {
            return; // nothing on offer: a stray report
        };
        if !send.zero_copy || send.position != offset || len == 0 || self.job_out() {
            return;
        }
        debug!(
            "ftp {}: {len} bytes at {offset} not in the page cache",
            self.key
        );
        self.warm_data(ctx);
    }

    /// Hands the file being sent to a worker that reads its next window
    /// into the page cache ([`crate::warm`]); `sendfile` goes on from
    /// there when it is back.
    fn warm_data(&mut self, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Send { file, .. }) = &mut self.data.transfer else {
            return;
        };
        let Some(mut send) = file.take() else {
            return;
        };
        ctx.stats.warmed_windows += 1;
        let key = self.key;
        let warm = job(
            "retr-warm",
            Lane::Bulk,
            move || {
                let whole = send.warm_window(key);
                (send, whole)
            },
            |(send, whole): (Sending, bool), s: &mut FtpSession, _ctx| {
                let Transfer::Running(Flow::Send { file, .. }) = &mut s.data.transfer else {
                    return; // aborted meanwhile: the file closes here
                };
                *file = Some(send);
                if !whole {
                    s.end_transfer(451, "The file changed while it was sent; transfer aborted.");
                }
            },
        );
        self.start_job(warm, ctx);
    }

    /// The data socket cannot take a file directly: copy through the buffer.
    pub fn data_zero_copy_unavailable(&mut self) {
        if let Transfer::Running(Flow::Send {
            file: Some(send), ..
        }) = &mut self.data.transfer
        {
            send.zero_copy = false;
        }
    }

    /// Whether the reactor should read the data connection.
    pub fn wants_data_read(&self) -> bool {
        matches!(&self.data.transfer, Transfer::Running(Flow::Receive(store))
            if !store.batch_full() && !store.over_quota && !store.blocked() && store.failed.is_none()
                // While a worker appends one batch, the next is received.
                && (!self.job_out() || store.writing()))
            && !self.data.eof
    }

    /// Where the reactor should put what it reads from the data
    /// connection now ([`DataIn`]).
    pub fn data_input(&self) -> DataIn<'_> {
        if !self.wants_data_read() {
            return DataIn::Nothing;
        }
        match &self.data.transfer {
            Transfer::Running(Flow::Receive(store)) => match store.splice_into() {
                Some((pipe, room)) => DataIn::Pipe { pipe, room },
                None => DataIn::Bytes,
            },
            _ => DataIn::Nothing,
        }
    }

    /// `n` bytes of the upload were spliced into the pipe of
    /// [`DataIn::Pipe`].
    pub fn handle_data_spliced(&mut self, n: usize, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(store)) = &mut self.data.transfer else {
            return;
        };
        store.fit_batch(ctx.stats.pressure);
        store.spliced(n);
        self.progress(ctx);
        self.settle_upload(ctx);
    }

    /// The pipe of [`DataIn::Pipe`] took nothing though the socket has
    /// bytes: it goes to a worker as it is.
    pub fn handle_data_pipe_full(&mut self, ctx: &mut Ctx) {
        if let Transfer::Running(Flow::Receive(store)) = &mut self.data.transfer {
            store.pipe_is_full();
            self.settle_upload(ctx);
        }
    }

    /// The data connection cannot splice into a pipe: copy instead.
    pub fn data_splice_unavailable(&mut self) {
        if let Transfer::Running(Flow::Receive(store)) = &mut self.data.transfer {
            store.stop_splicing();
        }
    }

    /// Bytes read from the data connection.
    pub fn handle_data_input(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(store)) = &mut self.data.transfer else {
            return; // not receiving: dropped
        };
        store.fit_batch(ctx.stats.pressure);
        store.take(bytes);
        self.progress(ctx);
        self.settle_upload(ctx);
    }

    /// The client finished sending on the data connection.
    pub fn handle_data_eof(&mut self, ctx: &mut Ctx) {
        self.data.eof = true;
        self.settle_upload(ctx);
    }

    /// The data connection is closed: asked for by [`DataRequest::CloseData`],
    /// or lost (reset by the client).
    pub fn handle_data_closed(&mut self, ctx: &mut Ctx) {
        if matches!(self.data.passive, Passive::Connected { .. }) {
            self.data.passive = Passive::Off;
        }
        match &self.data.transfer {
            Transfer::Running(Flow::Receive(_)) => {
                // An upload ends on EOF; a close without one is a break
                // (what was written is kept).
                self.data.lost = true;
                self.settle_upload(ctx);
                return;
            }
            Transfer::Finishing => {
                // The upload is landing: its reply follows then.
                self.data.lost = true;
                return;
            }
            Transfer::Idle | Transfer::Awaiting(..) => return,
            _ => {}
        }
        match self.set_transfer(Transfer::Idle) {
            Transfer::Closing(code, text) => self.reply(code, &text),
            Transfer::Aborting => {
                self.reply(426, "Connection closed; transfer aborted.");
                self.reply(226, "ABOR command successful.");
            }
            _ => self.reply(426, "Data connection lost; transfer aborted."),
        }
        if std::mem::take(&mut self.data.abor_after) {
            self.reply(226, "ABOR command successful.");
        }
        self.transfer_over(ctx);
    }

    /// The one place the transfer changes, so the log tells its story.
    /// Returns what it was.
    pub(super) fn set_transfer(&mut self, to: Transfer) -> Transfer {
        let from = std::mem::replace(&mut self.data.transfer, to);
        if matches!(from, Transfer::Running(_))
            && matches!(
                self.data.transfer,
                Transfer::Idle | Transfer::Closing(..) | Transfer::Aborting
            )
        {
            // What the ended transfer had not sent yet (a chunk of a
            // copied file) must not open the next one.
            self.data.out = OutBuf::default();
        }
        if from.name() != self.data.transfer.name() {
            debug!(
                "ftp {}: transfer {} -> {}",
                self.key,
                from.name(),
                self.data.transfer.name()
            );
        }
        from
    }

    // ----- starting a transfer ----------------------------------------

    /// Queues bytes for the data connection (a listing's first page).
    pub(super) fn queue_data(&mut self, bytes: &[u8]) {
        self.data.out.writer().extend_from_slice(bytes);
    }

    /// Whether a transfer command may go ahead: a passive listener or data
    /// connection must be there (active mode is off). Replies 425 if not.
    pub(super) fn data_ready_or_refuse(&mut self) -> bool {
        if matches!(self.data.passive, Passive::Off) {
            self.reply(425, "Use PASV or EPSV first.");
            return false;
        }
        true
    }

    /// Starts `flow` with a `150` as soon as the data connection is there.
    pub(super) fn begin(&mut self, flow: Flow, opening: String, ctx: &mut Ctx) {
        match self.data.passive {
            Passive::Connected { .. } => self.run_flow(flow, &opening, ctx),
            Passive::Binding { .. } | Passive::Listening { .. } => {
                self.set_transfer(Transfer::Awaiting(flow, opening));
            }
            Passive::Off => {
                // The listener timed out while the file was opened.
                self.reply(425, "No data connection.");
            }
        }
    }

    fn run_flow(&mut self, flow: Flow, opening: &str, ctx: &mut Ctx) {
        self.reply(150, opening);
        self.set_transfer(Transfer::Running(flow));
        self.data.progress = ctx.now;
        self.pump_send(ctx);
        self.settle_upload(ctx);
    }

    /// Ends the transfer: close the data connection, then this reply.
    pub(super) fn end_transfer(&mut self, code: u16, text: &str) {
        if code >= 400 {
            info!("ftp {}: transfer failed: {code} {text}", self.key);
        }
        self.set_transfer(Transfer::Closing(code, text.to_string()));
        self.data.request(DataRequest::CloseData);
    }

    fn progress(&mut self, ctx: &Ctx) {
        self.data.progress = ctx.now;
        self.last_active = ctx.now;
    }

    /// The transfer and its reply are over: what waited may run.
    pub(super) fn transfer_over(&mut self, ctx: &mut Ctx) {
        if self.quit_after_transfer() {
            return;
        }
        self.run(ctx);
    }

    fn quit_after_transfer(&mut self) -> bool {
        if self.data.quit {
            self.reply(221, "Goodbye.");
            self.close("quit");
            return true;
        }
        false
    }

    // ----- sending ----------------------------------------------------

    /// Moves a send along: the next listing page, or the end.
    fn pump_send(&mut self, ctx: &mut Ctx) {
        if self.job_out() || !self.data.out.is_empty() {
            return;
        }
        let Transfer::Running(Flow::Send { file, listing }) = &mut self.data.transfer else {
            return;
        };
        if file.as_ref().is_some_and(|f| f.remaining > 0) {
            return;
        }
        if let Some(mut cursor) = listing.take() {
            if cursor.more() {
                let page = job(
                    "list-page",
                    Lane::Quick,
                    move || {
                        let page = cursor.page();
                        (cursor, page)
                    },
                    |(cursor, page), s: &mut FtpSession, _ctx| {
                        if let Transfer::Running(Flow::Send { listing, .. }) = &mut s.data.transfer
                        {
                            *listing = Some(cursor);
                            s.data.out.writer().extend_from_slice(&page);
                        }
                    },
                );
                self.start_job(page, ctx);
                return;
            }
            if cursor.truncated {
                self.end_transfer(
                    226,
                    &format!(
                        "Transfer complete; the listing stopped at {} entries.",
                        super::listing::MAX_ENTRIES
                    ),
                );
                return;
            }
        }
        self.end_transfer(226, "Transfer complete.");
    }

    /// A file is sent by copying (TLS on the data connection, or no
    /// `sendfile`) and its buffer has room for the next chunk.
    pub(super) fn data_has_work(&self) -> bool {
        !self.job_out()
            && matches!(&self.data.transfer, Transfer::Running(Flow::Send { file: Some(send), .. })
            if !send.zero_copy && send.remaining > 0 && self.data.out.is_empty())
    }

    /// Reads the next buffer-full of a file being copied, on a worker (a
    /// read can wait on the disk); back on the loop it joins the data
    /// connection's output, where TLS, if any, encrypts it.
    pub(super) fn data_work(&mut self, ctx: &mut Ctx) {
        if !self.data_has_work() {
            return;
        }
        let Transfer::Running(Flow::Send { file, .. }) = &mut self.data.transfer else {
            return;
        };
        let Some(mut send) = file.take() else {
            return;
        };
        let limit = ctx.limits.out_high.saturating_sub(self.data.out.len());
        let key = self.key;
        let mut read = job(
            "retr-read",
            Lane::Bulk,
            move || {
                let mut bytes = std::mem::take(&mut send.spare);
                let step = send.step(&mut bytes, limit, key);
                (send, bytes, step)
            },
            |(send, bytes, step): (Sending, Vec<u8>, Step), s: &mut FtpSession, _ctx| {
                let Transfer::Running(Flow::Send { file, .. }) = &mut s.data.transfer else {
                    return; // aborted meanwhile: the file closes here
                };
                *file = Some(send);
                if s.data.out.is_empty() {
                    s.data.out = OutBuf::from(bytes); // no copy
                } else {
                    s.data.out.writer().extend_from_slice(&bytes);
                }
                if let Step::Close(_) = step {
                    s.data.out = OutBuf::default();
                    s.end_transfer(451, "The file changed while it was sent; transfer aborted.");
                }
            },
        );
        // The bytes it brings back count while it is away.
        read.holds = limit;
        self.start_job(read, ctx);
    }

    /// A job came back: see what the transfer can do now.
    pub(super) fn after_data_step(&mut self, ctx: &mut Ctx) {
        self.pump_send(ctx);
        self.settle_upload(ctx);
    }

    // ----- ABOR, timers, the end -------------------------------------

    /// `ABOR`.
    pub(super) fn abort(&mut self, ctx: &mut Ctx) {
        match &self.data.transfer {
            Transfer::Idle => {
                self.drop_passive();
                self.reply(225, "No transfer to ABOR.");
            }
            Transfer::Awaiting(..) => {
                self.set_transfer(Transfer::Idle);
                self.data.out = OutBuf::default();
                self.drop_passive();
                self.reply(426, "Transfer aborted.");
                self.reply(226, "ABOR command successful.");
                self.transfer_over(ctx);
            }
            Transfer::Running(_) => {
                // An upload's partial is kept (the store parks it when it
                // goes); bytes not yet written are dropped: SIZE says
                // where to resume.
                self.set_transfer(Transfer::Aborting);
                self.data.out = OutBuf::default();
                self.data.request(DataRequest::CloseData);
            }
            // Finishing, or closing already: ABOR's reply follows the
            // transfer's.
            _ => self.data.abor_after = true,
        }
    }

    /// Closes the passive listener and the data connection, if any.
    fn drop_passive(&mut self) {
        match self.data.passive {
            Passive::Off => {}
            Passive::Binding { .. } | Passive::Listening { .. } => {
                self.data.request(DataRequest::CloseListener)
            }
            Passive::Connected { .. } => self.data.request(DataRequest::CloseData),
        }
        self.data.passive = Passive::Off;
    }

    /// `PASV` or `EPSV`: a new listener replaces what there was.
    pub(super) fn listen(&mut self, epsv: bool) {
        if let Passive::Connected { .. } = self.data.passive {
            self.data.request(DataRequest::CloseData);
        }
        self.data.passive = Passive::Binding { epsv };
        self.data.request(DataRequest::Listen);
    }

    /// Everything of the data side goes: the session is closing.
    pub(super) fn drop_data(&mut self) {
        self.set_transfer(Transfer::Idle);
        self.data.out = OutBuf::default();
        self.drop_passive();
    }

    /// `QUIT` during a transfer waits for its end.
    pub(super) fn quit_when_done(&mut self) {
        self.data.quit = true;
    }

    pub(super) fn data_deadline(&self, limits: &Limits) -> Option<Instant> {
        let waiting = match self.data.passive {
            Passive::Listening { since } => Some(since + self.passive_timeout),
            Passive::Connected { since } if !self.data.busy() => Some(since + self.passive_timeout),
            _ => None,
        };
        let stalled = match self.data.transfer {
            // A job out: the transfer waits for a worker, not for the
            // client, and a deadline passed meanwhile would fall due
            // again at once, turn after turn (the reactor would spin).
            // It is looked at again when the job is back.
            Transfer::Running(_) if self.job_out() => None,
            Transfer::Running(_) | Transfer::Closing(..) | Transfer::Aborting => {
                Some(self.data.progress + limits.idle_timeout)
            }
            _ => None,
        };
        match (waiting, stalled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn data_timeout(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        match self.data.passive {
            Passive::Listening { since } if now >= since + self.passive_timeout => {
                info!(
                    "ftp {}: nobody connected to the passive port; closing it",
                    self.key
                );
                self.data.passive = Passive::Off;
                self.data.request(DataRequest::CloseListener);
                if let Transfer::Awaiting(..) = self.data.transfer {
                    self.set_transfer(Transfer::Idle);
                    self.data.out = OutBuf::default();
                    self.reply(425, "No data connection came; the passive port is closed.");
                    self.transfer_over(ctx);
                }
                return;
            }
            Passive::Connected { since }
                if !self.data.busy() && now >= since + self.passive_timeout =>
            {
                self.data.passive = Passive::Off;
                self.data.request(DataRequest::CloseData);
                return;
            }
            _ => {}
        }
        let stalled = now >= self.data.progress + ctx.limits.idle_timeout;
        match &self.data.transfer {
            Transfer::Running(Flow::Receive(store))
                if stalled && !self.job_out() && store.has_pending() && store.failed.is_none() =>
            {
                // What arrived goes to disk first, so SIZE says where to
                // resume (a pipe with room holds its bytes past the turn);
                // the deadline, passed, comes again once it is written.
                self.write_batch(ctx);
            }
            Transfer::Running(_) if stalled && !self.job_out() => {
                info!(
                    "ftp {}: data connection stalled; aborting the transfer",
                    self.key
                );
                self.data.out = OutBuf::default();
                self.end_transfer(426, "Data connection stalled; transfer aborted.");
            }
            Transfer::Closing(..) | Transfer::Aborting if stalled => {
                // The reactor never reported the close: give up on it.
                self.data.progress = now;
                self.handle_data_closed(ctx);
            }
            _ => {}
        }
    }
}
