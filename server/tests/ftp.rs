//! FTP end to end, with the clients people use: Python's `ftplib`, `curl`
//! and `lftp` against a real skiffd on loopback. `.ci/run` installs them.

mod common;

use std::path::Path;
use std::process::Command;

use testkit::{TempDir, run};

use common::ftp::{LIMIT, PASSWORD, home, port, python, start};

/// Runs a tool (curl, lftp) in `cwd`; returns its stdout.
fn tool(cwd: &Path, program: &str, args: &[&str]) -> String {
    let out = run(
        Command::new(program).current_dir(cwd).args(args),
        b"",
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({:?}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What every ftplib script starts with.
const PRELUDE: &str = r#"
import ftplib, hashlib, io, os, socket, struct, sys
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def connect():
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=20)
    return f
def expect(what, got, want):
    assert got == want, f"{what}: got {got!r}, want {want!r}"
def fails(code, call, *args):
    try:
        call(*args)
    except ftplib.error_perm as e:
        assert str(e).startswith(code), f"{call.__name__}{args}: {e}"
        return
    raise AssertionError(f"{call.__name__}{args} succeeded; {code} expected")
def upload(f, name, data):
    f.storbinary("STOR " + name, io.BytesIO(data))
def download(f, name, rest=None):
    buf = io.BytesIO()
    f.retrbinary("RETR " + name, buf.write, rest=rest)
    return buf.getvalue()
"#;

#[test]
fn ftplib_login_commands_transfers_and_the_jail() {
    let server = start("100M", &[]);
    // A symlink out of the home, planted by someone else.
    std::os::unix::fs::symlink("/etc/passwd", home(&server).join("passwd")).unwrap();
    let script = format!(
        "{PRELUDE}{}",
        r#"
f = connect()
fails("530", f.login, "alice", "wrong")
f = connect()
expect("welcome", f.getwelcome(), "220 skiffd FTP ready.")
fails("530", f.sendcmd, "PWD")
f.login("alice", password)
expect("syst", f.sendcmd("SYST"), "215 UNIX Type: L8")
feat = f.sendcmd("FEAT")
for line in ("EPSV", "REST STREAM", "UTF8", "MLST type*;size*;modify*;perm*;unique*;", "HASH MD5*"):
    assert " " + line + "\n" in feat.replace("\r", "") + "\n", (line, feat)
f.sendcmd("OPTS UTF8 ON")
f.sendcmd("TYPE I")
expect("pwd", f.pwd(), "/")
f.mkd("docs")
f.cwd("docs")
expect("pwd", f.pwd(), "/docs")
data = os.urandom(3_000_000) + b"\r\n\n\r"
upload(f, "blob.bin", data)
expect("size", f.size("blob.bin"), len(data))
expect("retr", download(f, "blob.bin"), data)
expect("rest retr", download(f, "blob.bin", rest=2_999_000), data[2_999_000:])
md5 = hashlib.md5(data).hexdigest()
expect("xmd5", f.sendcmd("XMD5 blob.bin"), "250 " + md5)
expect("hash", f.sendcmd("HASH blob.bin"), f"213 MD5 0-{len(data)} {md5} /docs/blob.bin")
assert f.sendcmd("MDTM blob.bin").startswith("213 20"), "mdtm"
expect("nlst", f.nlst(), ["blob.bin"])
lines = []
f.retrlines("LIST -la", lines.append)
assert len(lines) == 1 and lines[0].startswith("-rw") and lines[0].endswith(" blob.bin"), lines
facts = dict(f.mlsd())
expect("mlsd size", facts["blob.bin"]["size"], str(len(data)))
f.rename("blob.bin", "renamed.bin")
fails("550", f.size, "blob.bin")
f.cwd("..")
expect("pwd", f.pwd(), "/")
# The jail: .., absolute paths, a symlink out.
f.cwd("../../..")
expect("pwd after ..", f.pwd(), "/")
fails("550", download, f, "../../../etc/passwd")
fails("550", download, f, "/etc/passwd")
fails("550", download, f, "passwd")
fails("550", f.cwd, "/etc")
names = f.nlst()
assert "passwd" not in names, names
f.delete("docs/renamed.bin")
f.rmd("docs")
expect("empty", f.nlst(), [])
# REST + STOR: an upload broken off (the data connection reset) keeps
# the old file whole and resumes where SIZE says.
upload(f, "big.bin", b"old version")
big = os.urandom(5_000_000)
conn = f.transfercmd("STOR big.bin")
conn.sendall(big[:2_000_000])
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close()
try:
    f.getresp()
    raise AssertionError("a broken upload was taken as whole")
except ftplib.error_temp as e:
    broken = str(e)
assert broken.startswith("426 Data connection lost"), broken
expect("old file intact", open(os.path.join(home, "big.bin"), "rb").read(), b"old version")
kept = f.size("big.bin")
assert 0 < kept <= 2_000_000, kept
assert f"{kept} bytes are kept" in broken, (kept, broken)
f.storbinary("STOR big.bin", io.BytesIO(big[kept:]), rest=kept)
expect("resumed", download(f, "big.bin"), big)
# ABOR mid-transfer: 426, then 226.
conn = f.transfercmd("RETR big.bin")
conn.recv(4096)
resp = f.abort()
conn.close()
if resp.startswith("426"):
    expect("after 426", f.getresp()[:3], "226")
f.sendcmd("NOOP")
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}

#[test]
fn ftplib_quota_552_keeps_the_partial_for_a_resume() {
    let server = start("1M", &[]);
    let script = format!(
        "{PRELUDE}{}",
        r#"
f = connect()
f.login("alice", password)
fails("552", f.sendcmd, "ALLO 2000000")
expect("allo", f.sendcmd("ALLO 1000"), "200 1000 bytes reserved.")
body = os.urandom(2 << 20)
conn = f.transfercmd("STOR big.bin")
try:
    conn.sendall(body)
except OSError:
    pass  # the server closed the data connection at the quota
conn.close()
try:
    f.voidresp()
    raise AssertionError("the upload passed the quota")
except ftplib.error_perm as e:
    assert str(e).startswith("552 Quota exceeded: 1048576 bytes are kept"), e
expect("kept", f.size("big.bin"), 1 << 20)
assert not os.path.exists(os.path.join(home, "big.bin")), "a partial file landed"
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}

#[test]
fn an_urgent_byte_on_the_data_connection_does_not_end_an_upload_early() {
    // TCP keeps an urgent (out-of-band) byte out of the stream, and a read
    // skips it; a splice stops at it, and says 0 once the FIN is in. The
    // bytes after it must land, whichever way the upload receives them.
    let server = start("100M", &[]);
    let script = format!(
        "{PRELUDE}{}",
        r#"
import time
f = connect()
f.login("alice", password)
before, after = os.urandom(100000), os.urandom(100000)
for name, wait in (("at-once.bin", 0.0), ("paused.bin", 0.3)):
    conn = f.transfercmd("STOR " + name)
    conn.sendall(before)
    conn.send(b"!", socket.MSG_OOB)
    time.sleep(wait)
    conn.sendall(after)
    conn.close()
    expect(name, f.voidresp()[:3], "226")
    with open(os.path.join(home, name), "rb") as landed:
        got = landed.read()
    expect(name + " bytes", len(got), len(before) + len(after))
    assert got == before + after, name + ": different bytes"
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}

#[test]
fn a_stalled_upload_is_aborted_and_keeps_every_byte_it_received() {
    // The bytes wait in a pipe that is not full; when the client goes
    // quiet they go to disk before the 426 (a job the session waits for
    // while its deadline has passed), so SIZE says where to resume.
    let server = start("100M", &["--idle-timeout", "1s"]);
    let script = format!(
        "{PRELUDE}{}",
        r#"
import time
f = connect()
f.login("alice", password)
body = os.urandom(300000)
conn = f.transfercmd("STOR stalled.bin")
conn.sendall(body)
started = time.monotonic()
try:
    f.voidresp()
    raise AssertionError("a stalled upload completed")
except ftplib.error_temp as e:
    assert str(e).startswith("426 Data connection stalled"), e
waited = time.monotonic() - started
assert waited < 5, f"the 426 took {waited:.1f} s"
conn.close()
expect("kept", f.size("stalled.bin"), len(body))
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}

#[test]
fn data_connections_come_only_from_the_control_peer_and_count_as_connections() {
    let server = start("1M", &["--max-conns", "2"]);
    let script = format!(
        "{PRELUDE}{}",
        r#"
f = connect()
f.login("alice", password)
resp = f.sendcmd("EPSV")
data_port = int(resp.split("|||")[1].split("|")[0])
# From another address (127.0.0.2 is loopback too): closed at once.
thief = socket.socket()
thief.bind(("127.0.0.2", 0))
thief.settimeout(10)
thief.connect(("127.0.0.1", data_port))
try:
    expect("thief reads", thief.recv(10), b"")
except ConnectionResetError:
    pass
# From the client's own address: the transfer goes ahead.
mine = socket.create_connection(("127.0.0.1", data_port), timeout=10)
f.putcmd("NLST")
expect("150", f.getresp()[:3], "150")
expect("listing", mine.recv(100), b"")
mine.close()
expect("226", f.getresp()[:3], "226")
# The control connection and a data connection are two connections:
# with --max-conns 2 a second session is turned away meanwhile.
resp = f.sendcmd("EPSV")
data_port = int(resp.split("|||")[1].split("|")[0])
held = socket.create_connection(("127.0.0.1", data_port), timeout=10)
f.sendcmd("NOOP")
other = socket.create_connection(("127.0.0.1", port), timeout=10)
greeting = other.recv(200)
assert greeting.startswith(b"421 server is at its limit of 2 connections"), greeting
held.close()
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}

#[test]
fn curl_lists_downloads_uploads_and_resumes() {
    let server = start("100M", &[]);
    let work = TempDir::new("curl");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(work.path("up.bin"), &body).unwrap();
    std::fs::write(work.path("part.bin"), &body[..1_000_000]).unwrap();
    let url = format!("ftp://alice:open%20sesame@127.0.0.1:{}", port(&server));
    tool(
        work.root(),
        "curl",
        &[
            "-sS",
            "--ftp-create-dirs",
            "-T",
            "up.bin",
            &format!("{url}/sub/up.bin"),
        ],
    );
    let listing = tool(work.root(), "curl", &["-sS", &format!("{url}/sub/")]);
    assert!(
        listing.contains(" 3000000 ") && listing.trim_end().ends_with(" up.bin"),
        "{listing}"
    );
    tool(
        work.root(),
        "curl",
        &["-sS", "-o", "down.bin", &format!("{url}/sub/up.bin")],
    );
    assert_eq!(std::fs::read(work.path("down.bin")).unwrap(), body);
    tool(
        work.root(),
        "curl",
        &[
            "-sS",
            "--ftp-method",
            "nocwd",
            "-o",
            "nocwd.bin",
            &format!("{url}/sub/up.bin"),
        ],
    );
    assert_eq!(std::fs::read(work.path("nocwd.bin")).unwrap(), body);
    // Upload resume: a first part, then `-C -` (SIZE, then APPE of the rest).
    tool(
        work.root(),
        "curl",
        &["-sS", "-T", "part.bin", &format!("{url}/res.bin")],
    );
    tool(
        work.root(),
        "curl",
        &["-sS", "-C", "-", "-T", "up.bin", &format!("{url}/res.bin")],
    );
    assert_eq!(std::fs::read(home(&server).join("res.bin")).unwrap(), body);
    // Download resume: REST from what the local file has.
    std::fs::write(work.path("half.bin"), &body[..1_234_567]).unwrap();
    tool(
        work.root(),
        "curl",
        &[
            "-sS",
            "-C",
            "-",
            "-o",
            "half.bin",
            &format!("{url}/res.bin"),
        ],
    );
    assert_eq!(std::fs::read(work.path("half.bin")).unwrap(), body);
}

#[test]
fn lftp_mirrors_a_tree_both_ways_and_pgets() {
    let server = start("100M", &[]);
    let work = TempDir::new("lftp");
    let tree = work.path("tree");
    for (path, len) in [
        ("a/f1", 300_000),
        ("a/f2", 0),
        ("a/b/c/deep", 77),
        ("top.txt", 12),
    ] {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            (0..len).map(|i: u32| (i % 253) as u8).collect::<Vec<u8>>(),
        )
        .unwrap();
    }
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(home(&server).join("big.bin"), &big).unwrap();
    // Clear text: lftp would use AUTH TLS on its own when FEAT offers it
    // (see ftps.rs for that).
    let commands = "set ftp:ssl-allow false; set net:max-retries 1; set net:timeout 20; \
                    mirror -R tree remote; mirror remote back; pget -n 4 big.bin; quit";
    tool(
        work.root(),
        "lftp",
        &[
            "-u",
            &format!("alice,{PASSWORD}"),
            "-p",
            &port(&server),
            "-e",
            commands,
            "127.0.0.1",
        ],
    );
    for path in ["a/f1", "a/f2", "a/b/c/deep", "top.txt"] {
        let want = std::fs::read(tree.join(path)).unwrap();
        assert_eq!(
            std::fs::read(home(&server).join("remote").join(path)).unwrap(),
            want,
            "{path}"
        );
        assert_eq!(
            std::fs::read(work.path("back").join(path)).unwrap(),
            want,
            "{path}"
        );
    }
    assert_eq!(std::fs::read(work.path("big.bin")).unwrap(), big);
}

#[test]
fn an_idle_ftp_session_is_told_and_closed() {
    let server = start("1M", &["--idle-timeout", "1s"]);
    let script = format!(
        "{PRELUDE}{}",
        r#"
f = connect()
f.login("alice", password)
try:
    f.voidresp()
    raise AssertionError("no timeout")
except ftplib.error_temp as e:
    expect("timeout", str(e), "421 Timeout.")
print("OK")
"#
    );
    python(&server, &script);
}

/// A passive listener nobody connects to is closed after
/// `--ftp-passive-timeout`: the transfer waiting for it gets `425`, its
/// port refuses connections from then on, and the session goes on.
#[test]
fn a_passive_port_nobody_connects_to_times_out_with_425_and_is_freed() {
    let server = start("1M", &["--ftp-passive-timeout", "500ms"]);
    std::fs::write(home(&server).join("f.txt"), b"still served").unwrap();
    let script = format!(
        "{PRELUDE}{}",
        r#"
import time
def refused(host, dport):
    # The listener is closed before the 425 is written: by the time the
    # client reads it, the port refuses.
    try:
        socket.create_connection((host, dport), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False
f = connect()
f.login("alice", password)
# A transfer command waiting for a connection that never comes.
host, dport = f.makepasv()
started = time.monotonic()
f.putcmd("RETR f.txt")
try:
    f.getresp()
    raise AssertionError("RETR without a data connection succeeded")
except ftplib.error_temp as e:
    assert str(e).startswith("425"), e
waited = time.monotonic() - started
assert 0.4 <= waited < 5, f"425 after {waited:.2f} s, not the 500 ms timeout"
assert refused(host, dport), "the passive port is still open"
# A listener with no command behind it goes the same way; what comes
# next needs a new PASV.
host, dport = f.makepasv()
time.sleep(1.5)
assert refused(host, dport), "the idle passive port is still open"
try:
    f.sendcmd("RETR f.txt")
    raise AssertionError("RETR without PASV succeeded")
except ftplib.error_temp as e:
    assert str(e).startswith("425"), e
# The control connection was never held up.
expect("noop", f.voidcmd("NOOP")[:3], "200")
expect("retr", download(f, "f.txt"), b"still served")
f.quit()
print("OK")
"#
    );
    python(&server, &script);
}
