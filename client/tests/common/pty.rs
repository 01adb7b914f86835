//! A program under a pseudo-terminal, as a person at a terminal runs it:
//! its stdin, stdout and stderr are the terminal, the terminal is its
//! controlling one (so Ctrl-C typed there sends SIGINT), and what it
//! draws is read back as text.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{Guard, wait_bounded};

/// A running program on its own terminal; killed on drop.
pub struct Pty {
    master: File,
    chunks: mpsc::Receiver<Vec<u8>>,
    /// Everything the program drew so far, escapes included.
    seen: String,
    /// Where the next [`Pty::expect`] starts looking.
    mark: usize,
    child: Guard,
}

impl Pty {
    /// Starts `cmd` on a new 80x24 terminal, with `TERM=xterm` so line
    /// editors drive it as a real one.
    pub fn spawn(mut cmd: Command) -> Pty {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the ints we pass,
        // reads the winsize we own, and nothing from the null pointers.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and belong to no one else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.env("TERM", "xterm")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe, as code between
        // fork and exec must be.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = Guard(cmd.spawn().expect("start the program on a pty"));
        // Our copies of the slave end went with `cmd`: the master reads
        // EOF (EIO) once the program exits.
        drop(cmd);
        let (tx, chunks) = mpsc::channel();
        let mut reader = master.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty {
            master,
            chunks,
            seen: String::new(),
            mark: 0,
            child,
        }
    }

    /// Types `text` (`\r` is Enter, `\t` Tab, `\x03` Ctrl-C).
    pub fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits, within `limit`, until `needle` is drawn after the mark;
    /// returns what was drawn up to it, and moves the mark past it.
    pub fn expect(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.seen[self.mark..].find(needle) {
                let end = self.mark + at + needle.len();
                let got = self.seen[self.mark..end].to_string();
                self.mark = end;
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen += &String::from_utf8_lossy(&chunk),
                Err(e) => panic!(
                    "{needle:?} was not drawn within {limit:?} ({e:?}); after the mark: {:?}",
                    &self.seen[self.mark..]
                ),
            }
        }
    }

    /// Everything drawn so far, after reading what is there for `settle`.
    pub fn all(&mut self, settle: Duration) -> &str {
        let deadline = Instant::now() + settle;
        while let Ok(chunk) = self
            .chunks
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen += &String::from_utf8_lossy(&chunk);
        }
        &self.seen
    }

    /// Waits for the program to exit, within `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        wait_bounded(&mut self.child.0, limit, "the program on the pty")
    }
}
