//! A pipe an upload's bytes wait in on their way from the socket to the
//! file, so that they never pass through this process (what Samba calls
//! "recvfile"):
//!
//! ```text
//!   data socket ──splice, on the loop──▶ pipe ──splice, on a worker──▶ partial file
//!                 (SPLICE_F_NONBLOCK)          (may wait on the disk)
//! ```
//!
//! A `read` into a buffer and a `write` from it copy every byte twice;
//! here the first `splice` hands the socket's pages to the pipe without
//! copying them, and only the second copies, into the page cache. An
//! upload has two pipes, as it had two buffers: the loop fills one while
//! a worker empties the other.
//!
//! **Who counts what.** The loop counts the bytes it put into a pipe
//! ([`UploadPipe::filled`]) and never puts in more than
//! [`CAPACITY`]; a worker takes exactly that many out
//! ([`UploadPipe::drain_into`]), so the count is never a guess. A pipe's
//! capacity is kept in pages, though, and a socket may hand over pieces
//! smaller than a page: a pipe can refuse bytes before the count says it
//! is full. The reactor tells that apart from an empty socket (both
//! answer `EAGAIN`) by peeking at the socket.
//!
//! **Limits.** Pipes cost descriptors beyond the connections
//! `--max-conns` counts, and the kernel lets one user hold only so many
//! pipe pages (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default):
//! at most [`MOST_UPLOADS`] uploads receive through pipes at once
//! ([`PipeSlots`]); others, and any upload whose pipes the kernel
//! refuses, copy through a buffer as before.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use rustix::pipe::{PipeFlags, SpliceFlags};

/// Bytes one pipe holds: the most an unprivileged process may ask for
/// (`/proc/sys/fs/pipe-max-size`), and one batch of an upload.
pub const CAPACITY: usize = 1 << 20;

/// Uploads that may receive through pipes at once: two pipes each, so
/// four descriptors and up to 2 MiB of kernel memory.
pub const MOST_UPLOADS: usize = 16;

/// Descriptors all upload pipes together may hold: what the server keeps
/// free below its open-file limit for them.
pub const MOST_DESCRIPTORS: usize = MOST_UPLOADS * 4;

/// A pipe and the count of bytes waiting in it.
#[derive(Debug)]
pub struct UploadPipe {
    read: OwnedFd,
    write: OwnedFd,
    len: usize,
}

impl UploadPipe {
    /// A pipe of [`CAPACITY`] bytes. Fails if the kernel will not make
    /// one that large (the user holds too many pipe pages already).
    pub fn open() -> io::Result<UploadPipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let size = rustix::pipe::fcntl_setpipe_size(&write, CAPACITY)?;
        if size < CAPACITY {
            return Err(io::Error::other(format!("the pipe holds {size} bytes")));
        }
        Ok(UploadPipe {
            read,
            write,
            len: 0,
        })
    }

    /// The end the reactor splices the socket's bytes into. It must use
    /// `SPLICE_F_NONBLOCK`: the pipe itself is blocking, for the worker.
    pub fn input(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Bytes waiting in the pipe.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes wait.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the count says still fit.
    pub fn room(&self) -> usize {
        CAPACITY.saturating_sub(self.len)
    }

    /// The reactor put `n` more bytes in.
    pub fn filled(&mut self, n: usize) {
        self.len = self.len.saturating_add(n);
    }

    /// Moves every waiting byte into `file` at its current position. For
    /// a worker: the write may wait on the disk. Returns how many moved,
    /// and the error that stopped it early (the pipe still holds the
    /// rest, and must not be filled again).
    pub fn drain_into(&mut self, file: &File) -> (u64, io::Result<()>) {
        let mut moved = 0u64;
        // Never waits on the pipe: the bytes are in it already, and only
        // this thread has it now, so a count the pipe does not hold is an
        // error, not a worker blocked for good. (Not `SPLICE_F_NONBLOCK`:
        // it makes the write into the file give up early, 13 times slower.)
        match rustix::io::ioctl_fionread(&self.read) {
            Ok(held) if usize::try_from(held).is_ok_and(|h| h >= self.len) => {}
            Ok(_) => return (0, Err(io::Error::other("the pipe holds fewer bytes"))),
            Err(e) => return (0, Err(e.into())),
        }
        while self.len > 0 {
            match rustix::pipe::splice(&self.read, None, file, None, self.len, SpliceFlags::MOVE) {
                Ok(0) => {
                    // Cannot happen while the count is right: say so
                    // rather than spin.
                    return (moved, Err(io::Error::other("the pipe held fewer bytes")));
                }
                Ok(n) => {
                    self.len = self.len.saturating_sub(n);
                    moved = moved.saturating_add(n as u64);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return (moved, Err(e.into())),
            }
        }
        (moved, Ok(()))
    }
}

/// The count of uploads receiving through pipes, shared by every session
/// on the loop (see [`MOST_UPLOADS`]).
#[derive(Debug, Default, Clone)]
pub struct PipeSlots(Rc<Cell<usize>>);

/// One upload's right to its pipes; given back when dropped.
#[derive(Debug)]
pub struct PipeSlot(Rc<Cell<usize>>);

impl PipeSlots {
    /// A slot, if fewer than [`MOST_UPLOADS`] are taken.
    pub fn take(&self) -> Option<PipeSlot> {
        let taken = self.0.get();
        if taken >= MOST_UPLOADS {
            return None;
        }
        self.0.set(taken + 1);
        Some(PipeSlot(Rc::clone(&self.0)))
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.0.get()
    }
}

impl Drop for PipeSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn bytes_put_in_come_out_into_the_file_in_order() {
        let mut pipe = UploadPipe::open().expect("pipe");
        let mut writer = std::fs::File::from(pipe.write.try_clone().expect("dup"));
        writer.write_all(b"hello, ").expect("write");
        pipe.filled(7);
        writer.write_all(b"pipe").expect("write");
        pipe.filled(4);
        assert_eq!(pipe.len(), 11);
        assert_eq!(pipe.room(), CAPACITY - 11);
        let mut file = tempfile_in_temp_dir("order");
        file.write_all(b">").expect("write");
        let (moved, result) = pipe.drain_into(&file);
        result.expect("drain");
        assert_eq!(moved, 11);
        assert!(pipe.is_empty());
        file.seek(SeekFrom::Start(0)).expect("seek");
        let mut back = String::new();
        file.read_to_string(&mut back).expect("read");
        assert_eq!(back, ">hello, pipe");
    }

    #[test]
    fn a_count_larger_than_the_pipe_is_an_error_not_a_hang() {
        let mut pipe = UploadPipe::open().expect("pipe");
        let mut writer = std::fs::File::from(pipe.write.try_clone().expect("dup"));
        writer.write_all(b"abc").expect("write");
        drop(writer);
        pipe.filled(3);
        // The write end stays open: a blocking read past the three bytes
        // would wait for more.
        pipe.len = 5;
        let file = tempfile_in_temp_dir("short");
        // On a thread, so that a drain that waits fails the test instead
        // of hanging it (the pipe's write end stays open over there).
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let drained = pipe.drain_into(&file);
            let _ = done.send((drained.0, drained.1.is_err()));
            drop(pipe);
        });
        let got = result.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok((0, true)), "nothing moved: an error");
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = PipeSlots::default();
        let held: Vec<_> = (0..MOST_UPLOADS).map(|_| slots.take()).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(slots.take().is_none());
        drop(held);
        assert_eq!(slots.taken(), 0);
        assert!(slots.take().is_some());
    }

    fn tempfile_in_temp_dir(name: &str) -> File {
        let path = std::env::temp_dir().join(format!("skiff-pipe-{}-{name}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("file");
        std::fs::remove_file(&path).expect("unlink");
        file
    }
}
