//! A full disk, end to end: skiffd with its data dir on a tmpfs of a few
//! MiB, uploads by FTP `STOR` and by the framed `put` that do not fit.
//! Each must be refused with its documented reply (FTP `452`, framed
//! `io`), leave the old file whole, give the space back (the partial is
//! deleted: a smaller upload then fits), and leave the server serving.
//!
//! The tmpfs is mounted in a mount namespace of skiffd's own, made with
//! `unshare --user --map-root-user --mount` (util-linux): no root needed
//! where unprivileged user namespaces are allowed (Debian's default), and
//! nothing to unmount: the mount goes with the process. The test reads
//! the data dir through `/proc/PID/root`, skiffd's view of the files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::{Server, TempDir, code, get, md5_hex, put, run};

use common::ftp::{PASSWORD, python};

/// The size of the disk skiffd gets.
const DISK: &str = "4m";
/// A file that cannot fit on [`DISK`], and one that fits beside an old
/// file of [`OLD`] bytes.
const TOO_BIG: usize = 6 << 20;
const FITS: usize = 5 << 19; // 2.5 MiB
/// The file already at the target, which must survive.
const OLD: usize = 1 << 20;

/// Mounts a tmpfs of `$1` on `$3`, copies the prepared data dir `$2` in,
/// then runs skiffd `$4` with the rest of the arguments.
const MOUNT_AND_RUN: &str = r#"size=$1 stage=$2 data=$3 skiffd=$4; shift 4
mount -t tmpfs -o "size=$size,mode=0700" skiff-full-disk "$data" || exit 70
cp -a "$stage/." "$data/" || exit 71
exec "$skiffd" "$@""#;

/// skiffd on a small disk of its own.
struct SmallDisk {
    server: Server,
    /// The data dir's path, as skiffd sees it.
    data: PathBuf,
}

impl SmallDisk {
    /// Starts skiffd (framed and FTP listeners) with users `alice` and
    /// `bob` (no quota: the disk is the limit) on a tmpfs of [`DISK`];
    /// `prepare` gets the data dir before it is copied onto the disk.
    fn start(prepare: impl FnOnce(&Path)) -> SmallDisk {
        user_namespaces_work();
        let dir = TempDir::new("full-disk");
        let stage = dir.path("stage");
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        for user in ["alice", "bob"] {
            common::add_user(&stage, user, PASSWORD, &[]);
        }
        prepare(&stage);
        let mut command = Command::new("unshare");
        command
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .args([MOUNT_AND_RUN, "sh", DISK])
            .args([&stage, &data, common::skiffd()]);
        let args: Vec<String> = [
            "serve",
            "--data-dir",
            &testkit::server::path_str(&data),
            "--listen",
            "127.0.0.1:0",
            "--ftp",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec();
        // The staged dir has users.json: no demo user is made.
        let server = Server::spawn(command, &args, dir, stage);
        SmallDisk { server, data }
    }

    /// `path` under the data dir, as skiffd sees it (on the tmpfs).
    fn inside(&self, path: &str) -> PathBuf {
        let root = PathBuf::from(format!("/proc/{}/root", self.server.pid()));
        root.join(self.data.strip_prefix("/").unwrap()).join(path)
    }

    /// The partial uploads kept for `user`.
    fn partials(&self, user: &str) -> Vec<String> {
        match std::fs::read_dir(self.inside(&format!("partial/{user}"))) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("partial/{user}: {e}"),
        }
    }

    fn login(&self, user: &str) -> skiff::client::Client {
        testkit::login(&self.server.framed, user, PASSWORD).0
    }
}

/// Fails with what to do when this machine cannot make the namespace.
fn user_namespaces_work() {
    let out = run(
        Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]),
        b"",
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "these tests mount a tmpfs in a user namespace of their own, and \
         `unshare --user --map-root-user --mount true` failed: {}\n\
         Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; \
         on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0), or run the tests as root.",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes that differ from one file to the next.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What every script here starts with.
const PRELUDE: &str = r#"
import ftplib, hashlib, io, socket, sys
port, password = int(sys.argv[1]), sys.argv[2]
def connect(user="alice"):
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=20)
    f.login(user, password)
    return f
def pattern(n, seed):
    return bytes((i * 31 + seed) % 256 for i in range(256)) * (n // 256)
def download(f, name):
    buf = io.BytesIO()
    f.retrbinary("RETR " + name, buf.write)
    return buf.getvalue()
def expect(what, got, want):
    assert got == want, f"{what}: got {got!r:.200}, want {want!r:.200}"
def refused_stor(f, cmd, data):
    """The reply to an upload the server gives up on. It closes the data
    connection at once, so the client's send may fail first (a reset):
    the reply is on the control connection either way."""
    try:
        f.storbinary(cmd, io.BytesIO(data))
    except ftplib.error_temp as e:
        return str(e)
    except (ConnectionResetError, BrokenPipeError):
        try:
            f.voidresp()
        except ftplib.error_temp as e:
            return str(e)
    raise AssertionError(f"{cmd} of {len(data)} bytes was stored")
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}TOO_BIG, FITS, OLD = {TOO_BIG}, {FITS}, {OLD}\n{body}")
}

#[test]
fn ftp_stor_on_a_full_disk_gets_452_and_gives_the_space_back() {
    let disk = SmallDisk::start(|data| {
        std::fs::write(data.join("homes/alice/keep.bin"), pattern(OLD, 1)).unwrap();
    });
    python(
        &disk.server,
        &script(
            r#"
bystander = connect("bob")
f = connect()
e = refused_stor(f, "STOR keep.bin", pattern(TOO_BIG, 2))
assert e.startswith("452 "), e
# The old file is whole, and the session goes on.
expect("old file", download(f, "keep.bin"), pattern(OLD, 1))
expect("size", f.size("keep.bin"), OLD)
# The space came back: an upload that fits only without the partial lands.
f.storbinary("STOR keep.bin", io.BytesIO(pattern(FITS, 3)))
expect("new file", download(f, "keep.bin"), pattern(FITS, 3))
f.quit()
# Another session, open all along, was served all along.
expect("bystander", bystander.sendcmd("NOOP")[:3], "200")
bystander.storbinary("STOR small.txt", io.BytesIO(b"still here"))
expect("bystander's file", download(bystander, "small.txt"), b"still here")
bystander.quit()
print("OK")
"#,
        ),
    );
    assert_eq!(disk.partials("alice"), Vec::<String>::new());
    assert_eq!(
        std::fs::read(disk.inside("homes/alice/keep.bin")).unwrap(),
        pattern(FITS, 3)
    );
}

#[test]
fn framed_put_on_a_full_disk_gets_io_and_gives_the_space_back() {
    let disk = SmallDisk::start(|data| {
        std::fs::write(data.join("homes/bob/keep.bin"), pattern(OLD, 1)).unwrap();
    });
    let mut bystander = disk.login("alice");
    let mut c = disk.login("bob");
    match put(&mut c, "keep.bin", &pattern(TOO_BIG, 2)) {
        Err(skiff::client::ClientError::Server { code, message }) => {
            assert_eq!(code, "io", "{message}");
            assert!(message.contains("discarded"), "{message}");
        }
        other => panic!("a file larger than the disk: {other:?}"),
    }
    assert_eq!(disk.partials("bob"), Vec::<String>::new());
    // The old file is whole, and the connection goes on.
    let (old, md5) = get(&mut c, "keep.bin").unwrap();
    assert_eq!(old, pattern(OLD, 1));
    assert_eq!(md5, md5_hex(&pattern(OLD, 1)));
    // The space came back.
    put(&mut c, "keep.bin", &pattern(FITS, 3)).unwrap();
    assert_eq!(get(&mut c, "keep.bin").unwrap().0, pattern(FITS, 3));
    // Another session was served all along.
    let reply = bystander
        .request(json!({"op": "ls", "path": "/"}), b"")
        .unwrap();
    assert!(reply.header.fields.get("entries").is_some(), "{reply:?}");
    put(&mut bystander, "small.txt", b"still here").unwrap();
    assert_eq!(get(&mut bystander, "small.txt").unwrap().0, b"still here");
    // A put declared larger than the disk but within the quota is refused
    // only when the disk fills, with the same reply.
    assert_eq!(code(put(&mut c, "other.bin", &pattern(TOO_BIG, 4))), "io");
    assert_eq!(disk.partials("bob"), Vec::<String>::new());
}

/// Two FTP sessions that each fit on the disk alone, sending a chunk in
/// turn, so the disk fills while both are under way.
#[test]
fn two_sessions_filling_the_disk_at_once_both_end_cleanly() {
    let disk = SmallDisk::start(|_| {});
    python(
        &disk.server,
        &script(
            r#"
EACH = 3 << 20
sessions = [connect("alice"), connect("bob")]
data = [pattern(EACH, 5), pattern(EACH, 6)]
conns = [f.transfercmd("STOR both.bin") for f in sessions]
sent = [0, 0]
broken = [False, False]
chunk = 64 << 10
while not all(broken[i] or sent[i] == EACH for i in range(2)):
    for i in range(2):
        if broken[i] or sent[i] == EACH:
            continue
        try:
            conns[i].sendall(data[i][sent[i]:sent[i] + chunk])
            sent[i] += chunk
        except OSError:
            broken[i] = True  # the server gave up on this upload
for c in conns:
    c.close()
codes = []
for f in sessions:
    try:
        codes.append(f.voidresp()[:3])
    except ftplib.error_temp as e:
        codes.append(str(e)[:3])
assert "452" in codes, f"6 MiB on a 4 MiB disk, and no 452: {codes}"
assert set(codes) <= {"226", "452"}, codes
for f, code, want in zip(sessions, codes, data):
    if code == "226":
        expect("landed", download(f, "both.bin"), want)
        f.delete("both.bin")
    else:
        try:
            f.size("both.bin")
            raise AssertionError("a failed upload left a file")
        except ftplib.error_perm as e:
            assert str(e).startswith("550"), e
# Everything is given back: each fits again, one after the other.
for f, want in zip(sessions, data):
    f.storbinary("STOR again.bin", io.BytesIO(want))
    expect("again", download(f, "again.bin"), want)
    f.delete("again.bin")
    f.quit()
print("OK")
"#,
        ),
    );
    assert_eq!(disk.partials("alice"), Vec::<String>::new());
    assert_eq!(disk.partials("bob"), Vec::<String>::new());
}
