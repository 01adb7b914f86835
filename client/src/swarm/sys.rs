//! The swarm's few direct libc calls, kept together so that the only
//! `unsafe` of the load generator sits in one screenful.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when the soft one is
/// below `want` descriptors. Returns the soft limit now in force.
// rlim_t is u64 on Linux but not everywhere: the casts are for the others
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want as libc::rlim_t || lim.rlim_cur == lim.rlim_max {
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

/// CPU time this process has used so far (user + system).
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct we own;
    // RUSAGE_SELF cannot fail with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// True if standard error is a terminal (live progress makes sense).
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

/// Asks the kernel not to reserve a port at `bind` time, only at
/// `connect`, where a port may be shared as long as the 4-tuple is
/// unique: bound to its own source address, each socket still gets the
/// whole ephemeral range per destination (Linux 4.2+; socket2 has no
/// setter for it).
pub fn bind_address_no_port(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt only reads `on` for the given length; the
    // descriptor belongs to the socket borrowed for this call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
