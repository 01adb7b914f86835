//! Explicit FTPS end to end: `AUTH TLS` on the control connection and TLS
//! on `PROT P` data connections, with `curl`, `lftp` and Python's
//! `ftplib.FTP_TLS` against a real skiffd and its self-signed certificate;
//! what is pipelined behind `AUTH TLS` in clear text, `--ftp-require-tls`,
//! and a broken data handshake.

mod common;

use std::path::Path;
use std::process::Command;

use testkit::{Server, TempDir, run};

use common::ftp::{LIMIT, PASSWORD, home, port};

/// A server with FTP (and so a certificate), user `alice`, and `extra` flags.
fn start(extra: &[&str]) -> Server {
    common::ftp::start("100M", extra)
}

/// Runs a Python script after [`PRELUDE`], with the port, password and
/// home as arguments; it must print `OK` last.
fn python(server: &Server, script: &str) -> String {
    common::ftp::python(server, &format!("{PRELUDE}{script}"))
}

/// Runs a tool (curl, lftp) in `cwd`; returns its status and output.
fn tool(cwd: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = run(
        Command::new(program).current_dir(cwd).args(args),
        b"",
        LIMIT,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What every script starts with: an FTP_TLS client that resumes the
/// control connection's TLS session on data connections (as lftp and
/// curl do) and records whether each did.
const PRELUDE: &str = r#"
import ftplib, io, os, socket, ssl, sys
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resumed = []
class Resuming(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
            resumed.append(conn.session_reused)
        return conn, size
def context():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c
def connect():
    f = Resuming(context=context())
    f.connect("127.0.0.1", port, timeout=20)
    return f
def expect(what, got, want):
    assert got == want, f"{what}: got {got!r:.300}, want {want!r:.300}"
def fails(code, call, *args):
    try:
        call(*args)
    except ftplib.error_perm as e:
        assert str(e).startswith(code), f"{call.__name__}{args}: {e}"
        return
    raise AssertionError(f"{call.__name__}{args} succeeded; {code} expected")
"#;

#[test]
fn ftplib_over_tls_logs_in_and_moves_files_resuming_the_session() {
    let server = start(&[]);
    python(
        &server,
        r#"
f = connect()
feat = f.sendcmd("FEAT").replace("\r", "") + "\n"
for line in ("AUTH TLS", "PBSZ", "PROT"):
    assert " " + line + "\n" in feat, (line, feat)
fails("503", f.sendcmd, "PROT P")
f.auth()
expect("tls", f.sock.version(), "TLSv1.3")
f.login("alice", password)
f.prot_p()
data = os.urandom(3_000_000)
f.storbinary("STOR blob.bin", io.BytesIO(data))
buf = io.BytesIO()
f.retrbinary("RETR blob.bin", buf.write)
expect("retr", buf.getvalue(), data)
assert "blob.bin" in f.nlst()
f.sendcmd("REST 1000")
buf = io.BytesIO()
f.retrbinary("RETR blob.bin", buf.write, rest=1000)
expect("resumed retr", buf.getvalue(), data[1000:])
expect("data connections resumed the control's TLS session", resumed, [True] * 4)
f.prot_c()
buf = io.BytesIO()
f.retrbinary("RETR blob.bin", buf.write)
expect("clear retr", buf.getvalue(), data)
f.quit()
print("OK")
"#,
    );
    let stored = std::fs::read(home(&server).join("blob.bin")).unwrap();
    assert_eq!(stored.len(), 3_000_000);
}

#[test]
fn curl_lists_downloads_and_uploads_over_tls() {
    let server = start(&[]);
    let work = TempDir::new("curl-tls");
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(work.path("up.bin"), &blob).unwrap();
    let url = format!("ftp://alice:open%20sesame@127.0.0.1:{}", port(&server));
    let tls = ["-sS", "--ssl-reqd", "-k"];
    let (ok, out) = tool(
        work.root(),
        "curl",
        &[&tls[..], &["-T", "up.bin", &format!("{url}/up.bin")]].concat(),
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(home(&server).join("up.bin")).unwrap(), blob);
    let (ok, listing) = tool(
        work.root(),
        "curl",
        &[&tls[..], &[&format!("{url}/")]].concat(),
    );
    assert!(
        ok && listing.contains(" 2000000 ") && listing.contains("up.bin"),
        "{listing}"
    );
    let (ok, out) = tool(
        work.root(),
        "curl",
        &[&tls[..], &["-o", "down.bin", &format!("{url}/up.bin")]].concat(),
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(work.path("down.bin")).unwrap(), blob);
}

/// lftp verifies the certificate (against the one skiffd made, by its
/// IP address), and uses TLS on its own once FEAT offers `AUTH TLS`.
#[test]
fn lftp_with_forced_tls_lists_gets_puts_and_mirrors() {
    let server = start(&[]);
    let work = TempDir::new("lftp-tls");
    let local = work.path("tree");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    std::fs::write(local.join("a.txt"), b"alpha\n").unwrap();
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(local.join("sub/big.bin"), &big).unwrap();
    let script = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:ca-file {}; set net:max-retries 1; \
         open -u alice,'{PASSWORD}' -p {} 127.0.0.1; \
         mirror -R tree tree; put tree/a.txt -o one.txt; get one.txt -o got.txt; \
         mirror tree back; ls; bye",
        server.data_dir().join("tls/cert.pem").display(),
        port(&server)
    );
    let (ok, out) = tool(work.root(), "lftp", &["-c", &script]);
    assert!(ok, "{out}");
    assert!(out.contains("one.txt") && out.contains("tree"), "{out}");
    assert_eq!(
        std::fs::read(home(&server).join("tree/sub/big.bin")).unwrap(),
        big
    );
    assert_eq!(std::fs::read(work.path("got.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(work.path("back/sub/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(work.path("back/a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn clear_text_behind_auth_tls_is_never_run() {
    let server = start(&[]);
    std::fs::write(home(&server).join("keep.txt"), b"keep").unwrap();
    python(
        &server,
        r#"
def raw():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    r = s.makefile("rb")
    assert r.readline().startswith(b"220")
    return s, r
# Pipelined in the same segment as AUTH TLS: dropped, not run after the
# handshake as if it had come through TLS.
s, r = raw()
s.sendall(b"AUTH TLS\r\nUSER alice\r\nPASS " + password.encode() + b"\r\nDELE keep.txt\r\n")
expect("auth", r.readline(), b"234 AUTH TLS ok: start the TLS handshake.\r\n")
t = context().wrap_socket(s, server_hostname="127.0.0.1")
t.sendall(b"NOOP\r\n")
tr = t.makefile("rb")
expect("first reply inside TLS", tr.readline(), b"200 NOOP ok.\r\n")
t.sendall(b"PWD\r\n")
assert tr.readline().startswith(b"530"), "the clear-text login must not count"
t.close()
# Sent in clear text after the 234, where a handshake belongs: the
# connection closes; nothing runs.
s, r = raw()
s.sendall(b"AUTH TLS\r\n")
expect("auth", r.readline(), b"234 AUTH TLS ok: start the TLS handshake.\r\n")
s.sendall(b"USER alice\r\nPASS " + password.encode() + b"\r\nDELE keep.txt\r\n")
rest = r.read()
assert b"230" not in rest and b"250" not in rest, rest
s.close()
assert os.path.exists(os.path.join(home, "keep.txt"))
# And the server still serves.
f = connect()
f.auth()
f.login("alice", password)
f.quit()
print("OK")
"#,
    );
}

#[test]
fn require_tls_refuses_clear_logins_and_clear_data() {
    let server = start(&["--ftp-require-tls"]);
    python(
        &server,
        r#"
f = ftplib.FTP()
f.connect("127.0.0.1", port, timeout=20)
fails("530", f.login, "alice", password)
try:
    f.sendcmd("PASS " + password)
    raise AssertionError("PASS in clear text accepted")
except ftplib.error_perm as e:
    assert "AUTH TLS" in str(e), e
f.close()
f = connect()
f.auth()
f.login("alice", password)
fails("521", f.nlst)
f.sendcmd("PBSZ 0")
fails("534", f.sendcmd, "PROT C")
f.sendcmd("PROT P")
f._prot_p = True
f.storbinary("STOR x.txt", io.BytesIO(b"secret"))
expect("nlst", f.nlst(), ["x.txt"])
f.quit()
print("OK")
"#,
    );
    let work = TempDir::new("curl-plain");
    let url = format!("ftp://alice:open%20sesame@127.0.0.1:{}/", port(&server));
    let (ok, out) = tool(work.root(), "curl", &["-sS", &url]);
    assert!(!ok && out.contains("530"), "a clear login must fail: {out}");
}

#[test]
fn a_broken_data_handshake_fails_the_transfer_not_the_session() {
    let server = start(&[]);
    std::fs::write(home(&server).join("f.bin"), vec![7u8; 100_000]).unwrap();
    python(
        &server,
        r#"
f = connect()
f.auth()
f.login("alice", password)
f.prot_p()
host, dport = f.makepasv()
d = socket.create_connection((host, dport), timeout=20)
f.putcmd("RETR f.bin")
expect("150", f.getresp()[:3], "150")
d.sendall(b"this is not a TLS ClientHello\r\n")
try:
    f.getresp()
    raise AssertionError("the transfer succeeded")
except (ftplib.error_temp, ftplib.error_perm) as e:
    assert str(e)[:3] in ("425", "426"), e
d.close()
# The control connection goes on, and the next transfer works.
expect("noop", f.voidcmd("NOOP")[:3], "200")
buf = io.BytesIO()
f.retrbinary("RETR f.bin", buf.write)
got = buf.getvalue()
expect("retr", (len(got), set(got)), (100_000, {7}))
f.quit()
print("OK")
"#,
    );
}

/// A client that connects to the passive port under `PROT P` and never
/// starts its TLS handshake holds the connection only for
/// `--tls-handshake-timeout`: a transfer on it gets `426`, one asked for
/// afterwards `425`, and the control connection keeps working.
#[test]
fn a_data_connection_that_never_handshakes_is_closed_at_the_deadline() {
    let server = start(&["--tls-handshake-timeout", "500ms"]);
    std::fs::write(home(&server).join("f.bin"), vec![9u8; 50_000]).unwrap();
    python(
        &server,
        r#"
import time
def closed_by_server(d):
    try:
        return d.recv(1) == b""
    except ConnectionResetError:
        return True
f = connect()
f.auth()
f.login("alice", password)
f.prot_p()
# A transfer begun on a connection that stays silent.
host, dport = f.makepasv()
d = socket.create_connection((host, dport), timeout=20)
started = time.monotonic()
f.putcmd("RETR f.bin")
expect("150", f.getresp()[:3], "150")
try:
    f.getresp()
    raise AssertionError("the transfer succeeded without a handshake")
except ftplib.error_temp as e:
    assert str(e).startswith("426"), e
waited = time.monotonic() - started
assert 0.4 <= waited < 5, f"426 after {waited:.2f} s, not the 500 ms deadline"
assert closed_by_server(d), "the data connection is still open"
d.close()
# A silent connection with no transfer yet: closed at the deadline too,
# so the transfer asked for next has no data connection.
host, dport = f.makepasv()
d = socket.create_connection((host, dport), timeout=20)
started = time.monotonic()
assert closed_by_server(d), "the data connection is still open"
waited = time.monotonic() - started
assert 0.3 <= waited < 5, f"closed after {waited:.2f} s, not the 500 ms deadline"
d.close()
try:
    f.sendcmd("RETR f.bin")
    raise AssertionError("RETR without a data connection succeeded")
except ftplib.error_temp as e:
    assert str(e).startswith("425"), e
# The session goes on: commands, and a transfer that does handshake.
expect("noop", f.voidcmd("NOOP")[:3], "200")
buf = io.BytesIO()
f.retrbinary("RETR f.bin", buf.write)
got = buf.getvalue()
expect("retr", (len(got), set(got)), (50_000, {9}))
f.quit()
print("OK")
"#,
    );
}
