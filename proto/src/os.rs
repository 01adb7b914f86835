//! The calls to the OS that both binaries make, each behind a safe
//! function; every `unsafe` block says why it is sound. What only one
//! binary needs stays in its own module (`skiffd`'s `sys`, `skiff`'s
//! `sys`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// CPU time this process has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Time spent in our own code.
    pub user: Duration,
    /// Time spent in the kernel on our behalf (most of a network server's).
    pub system: Duration,
    /// Peak resident set size, in bytes.
    pub max_rss: u64,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// Reads `getrusage(RUSAGE_SELF)`.
pub fn cpu_time() -> CpuTime {
    // SAFETY: rusage is plain old data, so all-zero is a valid value, and
    // getrusage only writes into the struct we pass it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is always valid and `ru` is a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return CpuTime::default();
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    CpuTime {
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss: ru.ru_maxrss as u64 * 1024,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when the soft one is
/// below `want` descriptors (`u64::MAX`: whenever it is below the hard
/// one), so many connections work without the user running `ulimit -n`.
/// Returns the soft limit now in force.
// rlim_t is u64 on Linux but not everywhere: the casts are for the others
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur as u64 >= want || lim.rlim_cur == lim.rlim_max {
        return Ok(lim.rlim_cur as u64);
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass; raising the soft
    // limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur as u64)
}

/// Asks the kernel to start writing a file range to disk without waiting
/// for it (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Best effort: an
/// error only means the later fsync has more to do.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    // SAFETY: the descriptor is borrowed from a live File for the call;
    // the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Current resident set size in bytes, from `/proc/self/statm` (0 if unknown).
pub fn rss_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_and_fd_limit_are_read() {
        assert!(cpu_time().max_rss > 0);
        // Asking for no more than we have changes nothing.
        let now = raise_nofile_limit(0).unwrap();
        assert!(now > 0);
        assert_eq!(raise_nofile_limit(0).unwrap(), now);
        assert!(rss_bytes() > 0);
    }
}
