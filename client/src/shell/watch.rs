//! The connection while the prompt waits for a line.
//!
//! The line editor (rustyline) blocks in its own read of the terminal and
//! offers no hook into its wait, so the socket is watched on a second
//! thread, which owns the connection until the line is entered:
//!
//! ```text
//!   main thread:    editor.readline ··· (completion asks ──▶ List) ··· line entered ──▶ Stop
//!                                                                                      │
//!   watch thread:   poll(wake pipe, socket, keepalive timer)                           │
//!                     socket: msg ──▶ printer (drawn above the prompt, line redrawn)   │
//!                             closed ──▶ say so, redial, log in again                  │
//!                     timer:  echo of 0 bytes, so the server's idle timeout never hits │
//!                     wake:   List ──▶ ls, answer; Stop ──▶ hand the connection back ◀─┘
//! ```
//!
//! rustyline's external printer does the drawing: it clears the prompt
//! line, prints the message, and redraws the prompt with the partial
//! line and the cursor where they were. Only one thread uses the
//! connection at a time, so frames never interleave.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use skiff::client::{Client, ClientError};

use super::session::Session;
use crate::cmd::{self, CmdError};
use crate::files::{self, Entry};

/// How often an idle shell shows the server it is alive: half the
/// server's default idle timeout (300 s), so one lost beat is survived.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(150);

/// How long a completion waits for its listing before it gives up (the
/// line editor is frozen meanwhile).
const LIST_WAIT: Duration = Duration::from_secs(5);

/// After a message, how long to wait for more that may already sit in
/// the client's read buffer, where `poll` cannot see them (see
/// [`Watch::take_frame`]).
const BUFFERED_PROBE: Duration = Duration::from_millis(200);

/// Most messages shown in a row before the thread looks at its requests.
const MAX_BURST: usize = 256;

/// Where the thread shows what it has to say, above the prompt.
pub type Printer = Box<dyn FnMut(String) + Send>;

/// What the main thread asks of the watching thread.
enum Request {
    /// List a remote directory (`None`: the cwd) for completion.
    List {
        dir: Option<String>,
        reply: Sender<Result<Vec<Entry>, CmdError>>,
    },
    /// The line was entered: hand the connection back.
    Stop,
}

/// A way to send [`Request`]s and wake the thread to read them.
#[derive(Clone)]
struct Mailbox {
    requests: Sender<Request>,
    /// Write end of the wake pipe (shared: any byte wakes the thread).
    wake: std::sync::Arc<File>,
}

impl Mailbox {
    fn send(&self, request: Request) -> bool {
        if self.requests.send(request).is_err() {
            return false;
        }
        // A full pipe already holds a wake-up, so a failed write loses nothing.
        let _ = (&*self.wake).write(&[1]);
        true
    }
}

/// Lists remote directories for tab completion while the prompt waits.
#[derive(Clone)]
pub struct Lister(Mailbox);

impl Lister {
    /// The entries of `dir` (`None`: the cwd); `None` when there is no
    /// connection or no answer in time: completion then offers nothing.
    pub fn list(&self, dir: Option<&str>) -> Option<Vec<Entry>> {
        let (reply, answer) = mpsc::channel();
        let dir = dir.map(str::to_string);
        if !self.0.send(Request::List { dir, reply }) {
            return None;
        }
        answer.recv_timeout(LIST_WAIT).ok()?.ok()
    }
}

/// The watching thread, running until [`Watcher::stop`].
pub struct Watcher {
    mailbox: Mailbox,
    /// The session as it was handed over, in case the thread is lost.
    fallback: Session,
    thread: JoinHandle<(Option<Client>, Session)>,
}

impl Watcher {
    /// Hands `client` (if the shell has one) and `session` to a new
    /// thread; `keepalive` of `None` sends none.
    pub fn start(
        client: Option<Client>,
        session: Session,
        keepalive: Option<Duration>,
        print: Printer,
    ) -> std::io::Result<Watcher> {
        let (wake_rx, wake_tx) = crate::sys::pipe()?;
        let (requests, inbox) = mpsc::channel();
        let fallback = session.clone();
        let mut watch = Watch {
            client,
            session,
            keepalive,
            print,
            wake: wake_rx,
            inbox,
        };
        let thread = thread::Builder::new()
            .name("shell-watch".into())
            .spawn(move || {
                watch.run();
                (watch.client, watch.session)
            })?;
        Ok(Watcher {
            mailbox: Mailbox {
                requests,
                wake: std::sync::Arc::new(wake_tx),
            },
            fallback,
            thread,
        })
    }

    /// A handle for completion to list remote directories.
    pub fn lister(&self) -> Lister {
        Lister(self.mailbox.clone())
    }

    /// Stops the thread; returns the connection (`None` if it broke and
    /// could not be redialled) and the session, whose login and cwd a
    /// redial may have changed.
    pub fn stop(self) -> (Option<Client>, Session) {
        self.mailbox.send(Request::Stop);
        match self.thread.join() {
            Ok(back) => back,
            // The thread only panics on a bug; the shell goes on without
            // the connection and redials at the next command.
            Err(_) => (None, self.fallback),
        }
    }
}

/// The watching thread's state.
struct Watch {
    client: Option<Client>,
    session: Session,
    keepalive: Option<Duration>,
    print: Printer,
    /// Read end of the wake pipe.
    wake: File,
    inbox: Receiver<Request>,
}

/// The descriptor of the connection's socket.
fn socket_fd(client: &Client) -> RawFd {
    client.stream().as_raw_fd()
}

impl Watch {
    fn run(&mut self) {
        let mut next_beat = self.keepalive.map(|k| Instant::now() + k);
        loop {
            let mut fds = vec![self.wake.as_raw_fd()];
            fds.extend(self.client.as_ref().map(socket_fd));
            let wait = match (&self.client, next_beat) {
                (Some(_), Some(at)) => Some(at.saturating_duration_since(Instant::now())),
                _ => None,
            };
            let ready = match crate::sys::wait_readable(&fds, wait) {
                Ok(ready) => ready,
                Err(e) => {
                    (self.print)(format!("warning: cannot watch the connection: {e}"));
                    // Nothing else can wake us: wait for the line.
                    self.wait_for_stop();
                    return;
                }
            };
            if ready[0] && !self.serve_requests() {
                return;
            }
            if ready.get(1) == Some(&true) {
                self.read_pushes();
            }
            if let Some(at) = next_beat
                && Instant::now() >= at
            {
                self.beat();
                next_beat = self.keepalive.map(|k| Instant::now() + k);
            }
        }
    }

    /// Answers what the main thread asked; false once it asked to stop.
    fn serve_requests(&mut self) -> bool {
        let mut sink = [0u8; 64];
        // Draining the wake bytes; the requests themselves are in the inbox.
        let _ = self.wake.read(&mut sink);
        while let Ok(request) = self.inbox.try_recv() {
            match request {
                Request::Stop => return false,
                Request::List { dir, reply } => {
                    let Some(client) = self.client.as_mut() else {
                        let _ = reply.send(Err(CmdError::Connection("not connected".into())));
                        continue;
                    };
                    let mut pushed = Vec::new();
                    let listed = files::ls(client, dir.as_deref(), &mut |f| pushed.push(f));
                    if listed.as_ref().is_err_and(CmdError::breaks_connection) {
                        self.client = None;
                    }
                    let _ = reply.send(listed);
                    // Printed after the answer: the editor is waiting for it
                    // and only then reads what the printer sends.
                    for f in pushed {
                        (self.print)(files::push_text(&f));
                    }
                }
            }
        }
        true
    }

    /// Used when the socket cannot be watched: the main thread still needs
    /// its answers, and its Stop.
    fn wait_for_stop(&mut self) {
        while let Ok(request) = self.inbox.recv() {
            match request {
                Request::Stop => return,
                Request::List { reply, .. } => {
                    let _ = reply.send(Err(CmdError::Connection("not watched".into())));
                }
            }
        }
    }

    /// Reads the frame the socket announced, and any more already received.
    fn read_pushes(&mut self) {
        if !self.take_frame(false) {
            return;
        }
        // Bounded: a flood of messages cannot keep the line from coming back.
        for _ in 0..MAX_BURST {
            if !self.take_frame(true) {
                return;
            }
        }
    }

    /// Reads one frame and shows it; true if it was a message.
    ///
    /// With `probe`, the frame may not be there at all. `poll` sees only
    /// the socket, not the frames the client already pulled into its read
    /// buffer, so the read is tried with a short timeout: a frame already
    /// there returns at once, an empty buffer fails after
    /// [`BUFFERED_PROBE`] without consuming anything.
    fn take_frame(&mut self, probe: bool) -> bool {
        let Some(client) = self.client.as_mut() else {
            return false;
        };
        let probe = probe
            && !client.stream().has_buffered()
            && !crate::sys::readable_now(socket_fd(client));
        if probe
            && client
                .stream()
                .set_read_timeout(Some(BUFFERED_PROBE))
                .is_err()
        {
            return false;
        }
        let got = client.recv();
        if probe {
            // If restoring fails the socket is broken, and the next use says so.
            let _ = client.stream().set_read_timeout(Some(cmd::REPLY_TIMEOUT));
        }
        match got {
            Ok(f) if f.header.op == "msg" && f.header.id.is_none() => {
                (self.print)(files::push_text(&f));
                true
            }
            // Nothing was asked, so any other frame is the server's last
            // word before it closes (an idle timeout, a shutdown).
            Ok(f) => {
                self.closed_because(files::last_word(&f));
                false
            }
            Err(ClientError::Io(e))
                if probe
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                false
            }
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.closed("");
                false
            }
            Err(e) => {
                self.closed(&format!(" ({e})"));
                false
            }
        }
    }

    /// Sends the keepalive, an `echo` of nothing: the cheapest request
    /// there is, open before a login too.
    fn beat(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let mut echo = Map::new();
        echo.insert("op".into(), Value::from("echo"));
        let mut pushed = Vec::new();
        let answer = client.request_with(echo, &[], |f| pushed.push(f));
        for f in pushed {
            (self.print)(files::push_text(&f));
        }
        if let Err(e) = answer {
            self.closed(&format!(" ({e})"));
        }
    }

    /// The server closed the connection: say so, and dial again at once so
    /// that messages keep coming.
    fn closed(&mut self, why: &str) {
        self.closed_because(format!("the server closed the connection{why}"));
    }

    /// [`Self::closed`], said as `what`.
    fn closed_because(&mut self, what: String) {
        self.client = None;
        (self.print)(format!("{what}; reconnecting"));
        let print = &mut self.print;
        match self.session.redial(&mut |s| print(s)) {
            Ok(client) => self.client = Some(client),
            Err(e) => (self.print)(format!(
                "cannot reconnect: {e}; the next command tries again"
            )),
        }
    }
}
