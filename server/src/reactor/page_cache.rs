//! Whether a range of a file is in the page cache, asked before every
//! `sendfile` (see "Cold pages" in `crate::engine`): `sendfile` from pages not cached reads the disk, and
//! the loop would wait for it. The answer comes from `cachestat(2)`,
//! which looks at the cache's index and never waits.
//!
//! A kernel without it (before 6.5, or a seccomp filter that forbids it)
//! answers `ENOSYS`: then no range is known to be cached, so every window
//! of every file is read in by a worker before it is sent (and, having
//! just been read, is then sent without asking). That is
//! correct and slower (a job per 4 MiB, whose read finds the pages
//! cached when they are); the `ENOSYS` is remembered, and logged, once.
//! `SKIFFD_CACHESTAT=off` takes that path on any kernel.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};

/// `cachestat(2)` answered `ENOSYS`: it is not asked again.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Set this variable to `off` in skiffd's environment to behave as on a
/// kernel without `cachestat(2)` (to try, test or measure that path).
pub const CACHESTAT_ENV: &str = "SKIFFD_CACHESTAT";

/// The variable says `off` (read once).
fn turned_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| {
        let off = std::env::var_os(CACHESTAT_ENV).is_some_and(|v| v == "off");
        if off {
            warn!(
                "{CACHESTAT_ENV}=off: every window of a file is read in by a worker \
                 before sendfile sends it"
            );
        }
        off
    })
}

/// Whether every page of `file`'s bytes `[offset, offset + len)` is in
/// the page cache; `None` when the kernel cannot tell.
pub(super) fn cached(file: &File, offset: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    if NO_CACHESTAT.load(Ordering::Relaxed) || turned_off() {
        return None;
    }
    static PAGE: OnceLock<u64> = OnceLock::new();
    let page = *PAGE.get_or_init(crate::sys::page_size);
    let first = offset / page;
    let last = offset.saturating_add(len - 1) / page;
    let pages = last - first + 1;
    match crate::sys::cached_pages(file.as_fd(), offset, len) {
        Ok(cached) => Some(cached >= pages),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            warn!(
                "cachestat(2) is not available (Linux before 6.5?): every window of a file \
                 is read in by a worker before sendfile sends it"
            );
            NO_CACHESTAT.store(true, Ordering::Relaxed);
            None
        }
        Err(e) => {
            debug!("cachestat failed ({e}): as if it could not tell");
            None
        }
    }
}
