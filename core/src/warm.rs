//! Warming: bringing a window of a file into the page cache on a worker,
//! so that the `sendfile` the loop makes next copies from memory and never
//! waits for the disk.
//!
//! `sendfile` from a warm page cache takes microseconds; from a cold one
//! it reads the disk synchronously, and the loop, with every client on
//! it, waits. So before a `sendfile` of a range the reactor asks the
//! kernel whether those pages are cached (`cachestat(2)`, which never
//! waits). If they are not, the engine sending the file is told, and a
//! job on the bulk lane reads the window in ([`warm`]); the transmit
//! waits for it like any other job, then goes on from the cache.
//!
//! ```text
//!   position        warm_to               (file offsets)
//!      │ offered as     │ asked about before every sendfile,
//!      │ `warmed`: a job│ or, once a window was cold, warmed by
//!      ▼ just read it   ▼ the next job straight away
//!   ───┼────────────────┼───────────────────────────────▶
//!                       └── WINDOW ──┘└── WINDOW ──┘
//!                        read by the    asked for (WILLNEED) by the same
//!                        job            job, read by the disk meanwhile
//! ```
//!
//! **Streaming.** A job reads its window and asks the kernel to start
//! reading the next one too (`posix_fadvise(WILLNEED)`, which queues the
//! I/O and returns). Once one window of a file was cold the rest likely
//! is too, so the engine hands out the next job as soon as the window is
//! sent, without asking again: that job mostly waits for I/O already under
//! way and queues the window after it, so the disk keeps reading while the
//! loop sends, and a cold transfer streams at the disk's pace instead of
//! stopping for a whole window's read each time.
//!
//! **Why a job always reads.** `cachestat` counts a page as cached from
//! the moment a read of it is queued, before the data is there: a window
//! the job before asked for (`WILLNEED`) looks cached while the disk is
//! still reading it, and a `sendfile` from it would wait for that I/O on
//! the loop. So a job does not ask, it reads: a `sendfile` of the window
//! to `/dev/null` returns only once the pages hold their data, and copies
//! nothing. A window that was cached after all (a file only partly
//! evicted, or any window on a kernel without `cachestat`) costs a walk
//! of its pages on a worker, not a wait on the loop.
//!
//! **Pages evicted** between the job and the `sendfile` (memory pressure:
//! freshly read pages are the first to go) are caught: the reactor asks
//! about a warmed window too, and one found short is read in again by
//! another job. Only where the kernel cannot tell (no `cachestat`) is a
//! warmed window trusted, so that a send always moves on.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// Bytes one job brings into the page cache: big enough that a job's
/// round trip is rare (one per 4 MiB), small enough that the window
/// after it can be read while this one is sent.
pub const WINDOW: u64 = 4 * 1024 * 1024;

/// Bytes one `pread` of a warming job takes where `sendfile` to
/// `/dev/null` is refused, into a buffer that is thrown away: the read is
/// only there to wait for the pages.
const READ_CHUNK: usize = 128 * 1024;

/// What the engine sending a file knows about its pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmth {
    /// Bytes before this offset were just read in by a job: offered as
    /// `warmed`, and the send stops there for the next job if `cold`.
    warm_to: u64,
    /// A window of this file was found not cached: from now on each
    /// window is warmed by a job before it is sent.
    cold: bool,
}

impl Warmth {
    /// How much of the `remaining` bytes at `position` to offer to
    /// `sendfile` now, and whether a job has just read them in.
    pub fn offer(&self, position: u64, remaining: u64) -> (u64, bool) {
        if position < self.warm_to {
            (remaining.min(self.warm_to - position), true)
        } else {
            (remaining, false)
        }
    }

    /// After a send reached `position` with bytes still to go: whether
    /// the next window should be warmed now, without asking the kernel.
    pub fn warm_next(&self, position: u64) -> bool {
        self.cold && position >= self.warm_to
    }

    /// A job brought the window that ends at `to` into the page cache.
    pub fn warmed(&mut self, to: u64) {
        self.warm_to = to;
        self.cold = true;
    }
}

/// Brings `len` bytes of `file` from `offset` into the page cache (on a
/// worker: it waits for the disk) and asks the kernel to start reading the
/// `len` bytes after them. Returns the bytes found: fewer than `len`
/// means the file ended there (it shrank).
///
/// The window goes by `sendfile` to `/dev/null`: the kernel reads each
/// page in and waits for its data, then throws it away without copying it
/// anywhere. Where that is refused, a `pread` into a buffer that is
/// dropped does the same at the cost of a copy. Neither moves the file's
/// offset, which the loop's `sendfile` goes on from.
pub fn warm(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    // Both windows at once: the kernel queues the I/O and returns, and
    // the reads below then wait for what they need. An error here only
    // loses the read-ahead.
    let _ = rustix::fs::fadvise(
        file,
        offset,
        NonZeroU64::new(len.saturating_mul(2)),
        rustix::fs::Advice::WillNeed,
    );
    match dev_null() {
        Some(null) => match to_null(file, null, offset, len) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                read_through(file, offset, len)
            }
            result => result,
        },
        None => read_through(file, offset, len),
    }
}

/// `/dev/null`, opened once for every worker.
fn dev_null() -> Option<&'static File> {
    static NULL: OnceLock<Option<File>> = OnceLock::new();
    NULL.get_or_init(|| OpenOptions::new().write(true).open("/dev/null").ok())
        .as_ref()
}

/// Sends the window to `null`; returns the bytes there were.
fn to_null(file: &File, null: &File, offset: u64, len: u64) -> io::Result<u64> {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX);
        match rustix::fs::sendfile(null, file, Some(&mut at), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(at - offset)
}

/// Reads the window into a buffer of [`READ_CHUNK`] that is dropped.
fn read_through(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
        match file.read_at(&mut buf[..want], offset + done) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_is_offered_whole_and_asked_about() {
        let w = Warmth::default();
        assert_eq!(w.offer(0, 10 * WINDOW), (10 * WINDOW, false));
        assert!(!w.warm_next(0));
    }

    #[test]
    fn a_warmed_window_is_offered_up_to_its_end_as_warmed() {
        let mut w = Warmth::default();
        w.warmed(WINDOW + 100);
        assert_eq!(w.offer(100, 10 * WINDOW), (WINDOW, true));
        assert_eq!(w.offer(WINDOW, 10), (10, true));
        assert!(!w.warm_next(WINDOW));
        // Past it, the next window is warmed without asking: the file is cold.
        assert!(w.warm_next(WINDOW + 100));
        assert_eq!(w.offer(WINDOW + 100, 5), (5, false));
    }

    #[test]
    fn both_ways_of_reading_in_find_the_same_bytes() {
        let path = std::env::temp_dir().join(format!("skiff-warm2-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 300_000]).unwrap();
        let file = File::open(&path).unwrap();
        let null = dev_null().expect("/dev/null");
        for (offset, len, found) in [
            (0, 200_000, 200_000),
            (200_000, 200_000, 100_000),
            (400_000, 10, 0),
        ] {
            assert_eq!(to_null(&file, null, offset, len).unwrap(), found);
            assert_eq!(read_through(&file, offset, len).unwrap(), found);
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn warm_reads_what_there_is_and_says_where_the_file_ended() {
        let path = std::env::temp_dir().join(format!("skiff-warm-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 300_000]).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(warm(&file, 0, 200_000).unwrap(), 200_000);
        assert_eq!(warm(&file, 200_000, 200_000).unwrap(), 100_000);
        assert_eq!(warm(&file, 400_000, 10).unwrap(), 0);
        // The file's own offset, which sendfile uses, has not moved.
        let mut file = file;
        assert_eq!(std::io::Seek::stream_position(&mut file).unwrap(), 0);
        std::fs::remove_file(&path).unwrap();
    }
}
