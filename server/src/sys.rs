//! The one module of `skiffd` that talks to libc directly (the calls the
//! client makes too are in the protocol library's `skiff::os`). Each
//! `unsafe` block says why it is sound; everything outside gets a safe
//! function.

use std::io;

/// Formats the current local time with C's `strftime`.
///
/// `format` must already have been checked by the caller (no NUL); the
/// result must fit in `max` bytes, or this returns `None`.
pub fn strftime_local(format: &str, max: usize) -> Option<String> {
    // A trailing space tells "empty result" apart from "did not fit": both
    // make strftime return 0, but with the space a real result is never empty.
    let mut fmt = Vec::with_capacity(format.len() + 2);
    fmt.extend_from_slice(format.as_bytes());
    fmt.extend_from_slice(b" \0");
    // SAFETY: time(NULL) has no preconditions.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: tm is plain old data; all-zero is a valid value to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; localtime_r is the thread-safe form
    // and writes only into `tm`. It returns NULL only for absurd times.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let mut buf = vec![0u8; max + 1];
    // SAFETY: `buf` has `buf.len()` writable bytes, `fmt` is NUL-terminated
    // with no interior NUL (checked by the caller), and `tm` was filled above.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr().cast(), &tm) };
    if n == 0 {
        return None;
    }
    buf.truncate(n - 1); // drop our trailing space
    String::from_utf8(buf).ok()
}

/// Makes glibc hand large blocks (argon2's 4 MiB working area, big
/// output buffers) back to the kernel when they are freed. By default
/// glibc raises its mmap threshold after the first such free, and later
/// large blocks then stay resident on the heap for good: an idle server
/// would keep a login's 4 MiB forever.
pub fn return_large_frees_to_os() {
    // SAFETY: mallopt only changes allocator tuning; setting the threshold
    // also turns off its dynamic adjustment. It is called once, at startup,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Gives free heap memory back to the kernel (glibc's `malloc_trim`).
/// glibc returns memory on its own only from the top of the heap; free
/// blocks below a block still in use stay resident until this call,
/// which releases every whole free page. It walks the heap's free
/// blocks, so it is for after a burst, not for every turn.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only changes the allocator's own bookkeeping and
    // page mappings of memory that is free; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Copies up to `count` bytes from `file` (at its offset, which advances)
/// to `socket` inside the kernel: no copy through user space.
pub fn sendfile(
    socket: std::os::fd::BorrowedFd,
    file: std::os::fd::BorrowedFd,
    count: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are borrowed, so open for the whole call; a
    // null offset tells the kernel to use and advance the file's own.
    let n = unsafe {
        libc::sendfile(
            socket.as_raw_fd(),
            file.as_raw_fd(),
            std::ptr::null_mut(),
            count,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `cachestat(2)` has this number on every architecture (Linux 6.5+;
/// the libc crate does not name it for all of them yet).
const SYS_CACHESTAT: libc::c_long = 451;

/// The range `cachestat(2)` asks about (`struct cachestat_range`).
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// What `cachestat(2)` reports (`struct cachestat`): pages of the range
/// in the page cache, of them dirty and under writeback, and pages
/// evicted (recently or not).
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// How many pages of `file`'s bytes `[offset, offset + len)` are in the
/// page cache (`cachestat(2)`, Linux 6.5+: `ENOSYS` before). It looks at
/// the cache's index only, so it never waits for a disk. `len` must not
/// be 0 (which would mean "to the end of the file").
pub fn cached_pages(file: std::os::fd::BorrowedFd, offset: u64, len: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: the kernel reads `range` and writes one `struct cachestat`
    // into `stat`, both live locals laid out as the kernel's structs
    // (`repr(C)`, five and two u64s); the descriptor is borrowed for the
    // call; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0 as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.nr_cache)
}

/// The size of a memory page, which the page cache counts in.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Bytes waiting in a pipe (`FIONREAD`).
pub fn pipe_available(pipe: std::os::fd::BorrowedFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // at a live local; the descriptor is borrowed for the call.
    if unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Moves up to `len` bytes between a pipe and a socket (either way) inside
/// the kernel (`splice`), without blocking on either: the socket is
/// non-blocking, and `SPLICE_F_NONBLOCK` makes the pipe so for this call.
pub fn splice(
    from: std::os::fd::BorrowedFd,
    to: std::os::fd::BorrowedFd,
    len: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are borrowed for the call; null offsets
    // (required for a pipe, and for a socket) touch no memory of ours.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Opens a pidfd for `pid`: a descriptor that becomes readable when the
/// process exits, so child exits arrive through the poll like any socket
/// (Linux 5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor and nobody else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to every process in the group `pgid`.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = real_pid(pgid)?;
    // SAFETY: kill has no memory-safety preconditions; a negative pid
    // names a process group (`real_pid` made sure it is above 1).
    if unsafe { libc::kill(-pgid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to the one process `pid`.
pub fn kill_process(pid: u32, signal: i32) -> io::Result<()> {
    let pid = real_pid(pid)?;
    // SAFETY: kill has no memory-safety preconditions; `pid` is positive
    // and above 1, so it names exactly one process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pid as `kill` and `waitpid` take it, refusing the values with a
/// special meaning there: 0 (our group), 1 (init, or with a minus sign
/// every process we may signal) and anything that would turn negative.
fn real_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 1 => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        )),
    }
}

/// Makes skiffd the "child subreaper" of everything it starts: a process
/// whose parent exits is handed to skiffd instead of to init, so a
/// command's orphans (daemons included) stay where skiffd can find, kill
/// and reap them.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes integers only and
    // changes one flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps `pid` if it is a child of ours that has exited; never waits.
/// True if it was reaped.
///
/// Only for children nobody else waits for: the commands' own shells are
/// reaped through their `std::process::Child`.
pub fn reap_if_exited(pid: u32) -> bool {
    let Ok(pid) = real_pid(pid) else {
        return false;
    };
    let mut status = 0;
    // SAFETY: waitpid writes one c_int through a pointer to a live local;
    // WNOHANG makes it return at once.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) > 0 }
}

/// Makes the child that `command` spawns move itself into a cgroup
/// before it runs anything: it writes "0" ("the writer") to that cgroup's
/// `cgroup.procs`, open as `procs`. Everything the command then starts
/// is born inside the cgroup, so no fork can race the move.
///
/// `procs` must stay open until `spawn` returns (it is close-on-exec, so
/// the command never sees it).
pub fn join_cgroup_before_exec(command: &mut std::process::Command, procs: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = procs.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one write(2) of
    // a static buffer and reads errno, and allocates nothing. The fd is
    // valid there because the caller keeps `procs` open across spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Takes an exclusive `flock` on `file`, waiting for other holders
/// (for the short CLI commands that edit users.json; never on the loop).
pub fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor borrowed from a live File; no
        // memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cachestat_counts_the_pages_of_a_file_just_written() {
        use std::os::fd::AsFd;
        let path = std::env::temp_dir().join(format!("skiffd-cachestat-{}", std::process::id()));
        std::fs::write(&path, vec![1u8; 64 * 1024]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let pages = (64 * 1024) / page_size();
        // Just written: every page is in the cache (dirty or not).
        assert_eq!(cached_pages(file.as_fd(), 0, 64 * 1024).unwrap(), pages);
        assert_eq!(cached_pages(file.as_fd(), 0, 1).unwrap(), 1);
        // Past the end there is nothing.
        assert_eq!(cached_pages(file.as_fd(), 1 << 20, 4096).unwrap(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn strftime_formats_and_bounds() {
        let year = strftime_local("%Y", 64).unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.starts_with('2'));
        assert_eq!(strftime_local("", 64).as_deref(), Some(""));
        assert_eq!(strftime_local("%Y", 3), None);
    }
}
