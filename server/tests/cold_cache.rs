//! Files whose pages are not in the page cache: `get` and `RETR` have a
//! worker read each window in before `sendfile` sends it, so the loop
//! never waits for the disk; files that are cached take no such job. The
//! files are dropped from the cache with `posix_fadvise(DONTNEED)` after
//! an fsync (not `drop_caches`, which would hit the whole machine).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde_json::json;
use skiff::client::Client;
use testkit::{get, md5_hex, put};

use common::ftp::{PASSWORD, home, python, start};

/// Pages of `path` in the page cache (`cachestat(2)`, number 451).
fn cached_pages(path: &Path) -> u64 {
    let file = File::open(path).unwrap();
    let range = [0u64, 0]; // offset 0, length 0: the whole file
    let mut stat = [0u64; 5];
    // SAFETY: the kernel reads two u64s and writes five, the layouts of
    // struct cachestat_range and struct cachestat; the fd is open.
    let r = unsafe {
        libc::syscall(
            451,
            file.as_raw_fd(),
            range.as_ptr(),
            stat.as_mut_ptr(),
            0u32,
        )
    };
    assert_eq!(r, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat[0]
}

/// The size of a memory page.
fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}

/// Writes `path`'s dirty pages out, then asks the kernel to drop them all.
fn drop_from_cache(path: &Path) {
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise takes integers only; the fd is open.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_eq!(
        cached_pages(path),
        0,
        "{path:?} is still cached: on tmpfs pages cannot be dropped; set TMPDIR to a disk"
    );
}

/// The server's count of windows read in by workers.
fn warmed_windows(c: &mut Client) -> u64 {
    let stats = c.request(json!({"op":"stats"}), b"").unwrap();
    stats
        .header
        .u64("warmed_windows")
        .expect("stats has warmed_windows")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn a_get_of_a_file_dropped_from_the_page_cache_is_read_in_by_workers() {
    let server = start("100M", &[]);
    let (mut c, _) = testkit::login(&server.framed, "alice", PASSWORD);
    // 12 MiB: three windows of 4 MiB. Uploaded, so its MD5 is known and
    // nothing reads the file before the body goes.
    let bytes = pattern(12 << 20);
    put(&mut c, "cold.bin", &bytes).unwrap();
    let path = home(&server).join("cold.bin");
    drop_from_cache(&path);
    let before = warmed_windows(&mut c);
    let (got, md5) = get(&mut c, "cold.bin").unwrap();
    assert!(got == bytes, "the body came back changed");
    assert_eq!(md5, md5_hex(&bytes));
    // A job per window (another for a window whose pages were evicted
    // between its job and its sendfile, on a machine short of memory).
    let cold = warmed_windows(&mut c) - before;
    assert!(cold >= 3, "{cold} windows warmed");
    // The jobs left the file cached: a second get takes none.
    assert_eq!(cached_pages(&path), (12u64 << 20).div_ceil(page_size()));
    let (got, _) = get(&mut c, "cold.bin").unwrap();
    assert!(got == bytes);
    assert_eq!(
        warmed_windows(&mut c) - before,
        cold,
        "a cached file was warmed"
    );
    // A range from an offset: one window (the last 2 MiB).
    drop_from_cache(&path);
    let f = c
        .request(
            json!({"op":"get","path":"cold.bin","offset":10u64 << 20}),
            b"",
        )
        .unwrap();
    assert!(f.body == bytes[10 << 20..]);
    assert!(warmed_windows(&mut c) - before > cold);
}

#[test]
fn a_retr_of_a_file_dropped_from_the_page_cache_arrives_whole() {
    let server = start("100M", &[]);
    let bytes = pattern(9 << 20);
    let path = home(&server).join("cold.bin");
    std::fs::write(&path, &bytes).unwrap();
    let (mut c, _) = testkit::login(&server.framed, "alice", PASSWORD);
    let script = format!(
        r#"
import ftplib, hashlib, io, os, sys
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
path = os.path.join(home, "cold.bin")
def drop():
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
f = ftplib.FTP()
f.connect("127.0.0.1", port, timeout=60)
f.login("alice", password)
drop()
buf = io.BytesIO()
f.retrbinary("RETR cold.bin", buf.write)
assert hashlib.md5(buf.getvalue()).hexdigest() == "{md5}", "RETR came back changed"
drop()
buf = io.BytesIO()
f.retrbinary("RETR cold.bin", buf.write, rest=8 << 20)
assert buf.getvalue() == open(path, "rb").read()[8 << 20:], "REST+RETR came back changed"
f.quit()
print("OK")
"#,
        md5 = md5_hex(&bytes)
    );
    let before = warmed_windows(&mut c);
    python(&server, &script);
    // 9 MiB in windows at 0, 4 and 8 MiB; then 1 MiB from 8 MiB (more
    // if pages were evicted between a job and its sendfile).
    let cold = warmed_windows(&mut c) - before;
    assert!(cold >= 4, "{cold} windows warmed");
    // Now cached: a plain RETR takes no job.
    python(
        &server,
        r#"
import ftplib, io, sys
f = ftplib.FTP()
f.connect("127.0.0.1", int(sys.argv[1]), timeout=60)
f.login("alice", sys.argv[2])
buf = io.BytesIO()
f.retrbinary("RETR cold.bin", buf.write)
assert len(buf.getvalue()) == 9 << 20
f.quit()
print("OK")
"#,
    );
    assert_eq!(
        warmed_windows(&mut c) - before,
        cold,
        "a cached file was warmed"
    );
}

/// Without `cachestat(2)` (a kernel before 6.5; `SKIFFD_CACHESTAT=off`
/// takes the same path) the kernel cannot tell what is cached: every
/// window of a `get` is read in by a worker, and the file arrives whole.
#[test]
fn without_cachestat_every_window_is_read_in_by_a_worker() {
    let server = common::start_env(&[], &[("SKIFFD_CACHESTAT", "off")]);
    let mut c = server.demo_client();
    let bytes = pattern(12 << 20);
    put(&mut c, "warm.bin", &bytes).unwrap();
    let before = warmed_windows(&mut c);
    for round in 1..=2 {
        let (got, md5) = get(&mut c, "warm.bin").unwrap();
        assert!(got == bytes, "the body came back changed");
        assert_eq!(md5, md5_hex(&bytes));
        // Cached or not, each of the three 4 MiB windows took a job.
        let warmed = warmed_windows(&mut c) - before;
        assert!(
            warmed >= 3 * round,
            "round {round}: {warmed} windows warmed"
        );
    }
}
