//! End to end over TLS: a real skiffd with a TLS listener, the client's
//! own TLS code (`skiff::tls`), framed requests of every kind, and what
//! the server does with handshakes that fail or land on the wrong port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::RngExt;
use serde_json::json;
use skiff::client::{Client, Stream};
use skiff::tls::{self, FingerprintMismatch, Trust};
use testkit::session::{get, put, roundtrip};
use testkit::{Server, seeded_rng};

/// A server with framed TCP and TLS listeners on fresh ports, and the
/// fingerprint it printed for the certificate it made.
fn start() -> (Server, String) {
    let mut server = common::start(&["--tls-listen", "127.0.0.1:0"]);
    server.wait_line("created TLS certificate ");
    let fingerprint = server
        .next_line(Duration::from_secs(10))
        .expect("the fingerprint line")
        .trim()
        .to_string();
    (server, fingerprint)
}

fn tcp(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A framed client over TLS, trusting `trust`.
fn tls_client(server: &Server, trust: &Trust) -> Client {
    let stream = tls::connect(tcp(server.listener("tls")), "127.0.0.1", trust).unwrap();
    Client::from_stream(Stream::Tls(stream)).unwrap()
}

fn demo(server: &Server, fingerprint: &str) -> Client {
    let mut c = tls_client(server, &Trust::Pinned(fingerprint.to_string()));
    let password = server.demo_password.clone().unwrap();
    c.request(json!({"op":"login","user":"demo","password":password}), b"")
        .unwrap();
    c
}

#[test]
fn the_printed_fingerprint_is_the_certificate_served() {
    let (server, printed) = start();
    let stream = tls::connect(tcp(server.listener("tls")), "127.0.0.1", &Trust::FirstUse).unwrap();
    assert_eq!(stream.fingerprint(), printed);
    assert_eq!(printed.len(), 32 * 3 - 1, "{printed}");
}

#[test]
fn framed_requests_of_every_kind_work_over_tls() {
    let (server, fingerprint) = start();
    let mut c = tls_client(&server, &Trust::Pinned(fingerprint.clone()));
    let hello = c.request(json!({"op":"hello"}), b"").unwrap();
    assert_eq!(hello.header.u64("proto"), Some(1));
    // Echo bodies are lent from the read buffer on a plain connection;
    // over TLS they are encrypted from it: small, upper-cased, and big.
    let reply = c
        .request(json!({"op":"echo","upper":true}), b"over tls")
        .unwrap();
    assert_eq!(reply.body, b"OVER TLS");
    let mut rng = seeded_rng("tls echo");
    let big: Vec<u8> = (0..3 << 20).map(|_| rng.random()).collect();
    let reply = c.request(json!({"op":"echo"}), &big).unwrap();
    assert!(reply.body == big, "a 3 MiB echo came back changed");
    // Many requests in one write, answered in order.
    for id in 0..50u64 {
        c.send_header(
            serde_json::from_value(json!({"op":"echo","id":id})).unwrap(),
            8,
        )
        .unwrap();
        c.send_body(&id.to_be_bytes()).unwrap();
    }
    c.flush().unwrap();
    for id in 0..50u64 {
        let f = c.recv().unwrap();
        assert_eq!(f.header.id.as_ref().and_then(|i| i.as_u64()), Some(id));
        assert_eq!(f.body, id.to_be_bytes());
    }

    // Files both ways: a put that the server checks, a get that it reads
    // and encrypts in bounded pieces.
    let mut c = demo(&server, &fingerprint);
    let file: Vec<u8> = (0..5 << 20).map(|_| rng.random()).collect();
    let stored = put(&mut c, "blob.bin", &file).unwrap();
    assert_eq!(stored.header.u64("length"), Some(file.len() as u64));
    let (back, md5) = get(&mut c, "blob.bin").unwrap();
    assert!(back == file, "the file came back changed");
    assert_eq!(md5, testkit::wire::md5_hex(&file));
    let ls = c.request(json!({"op":"ls"}), b"").unwrap();
    assert!(ls.header.fields["entries"].to_string().contains("blob.bin"));

    // A command's output, which is spliced to a plain socket, is copied
    // and encrypted here.
    let id = c.next_id();
    let cmd = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo done >&2";
    c.send(
        serde_json::from_value(json!({"op":"exec","id":id,"cmd":cmd})).unwrap(),
        b"",
    )
    .unwrap();
    let (mut out, mut err) = (0usize, Vec::new());
    loop {
        let f = c.recv().unwrap();
        match f.header.op.as_str() {
            "out" => out += f.body.iter().filter(|&&b| b == b'x').count(),
            "err" => err.extend_from_slice(&f.body),
            "exit" => {
                assert_eq!(f.header.fields["code"], json!(0));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(out, 300_000);
    assert_eq!(err, b"done\n");

    // bye: the server answers, says goodbye in TLS too, and closes.
    let bye = roundtrip(&mut c, json!({"op":"bye"}), b"");
    assert_eq!(bye.header.op, "ok");
    let mut rest = Vec::new();
    let end = Read::read_to_end(&mut StreamReader(c), &mut rest);
    assert!(
        end.is_ok(),
        "a clean end (close_notify), not a cut: {end:?}"
    );
}

/// Reads what is left of a client's stream.
struct StreamReader(Client);

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut stream = self.0.stream().try_clone()?;
        stream.read(buf)
    }
}

#[test]
fn a_certificate_other_than_the_pinned_one_is_refused() {
    let (server, fingerprint) = start();
    let mut other = fingerprint.into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let other = String::from_utf8(other).unwrap();
    let err = tls::connect(
        tcp(server.listener("tls")),
        "127.0.0.1",
        &Trust::Pinned(other.clone()),
    )
    .unwrap_err();
    let mismatch = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<FingerprintMismatch>())
        .unwrap_or_else(|| panic!("not a mismatch: {err}"));
    assert_eq!(mismatch.pinned, other);
    // And the certificate names loopback, for clients that check names
    // against the certificate itself as their authority.
    let pem = std::fs::read(server.data_dir().join("tls/cert.pem")).unwrap();
    let trust = Trust::authorities_from_pem(&pem).unwrap();
    let mut c = tls_client(&server, &trust);
    c.request(json!({"op":"hello"}), b"").unwrap();
}

#[test]
fn bad_handshakes_close_only_their_connection() {
    let (server, fingerprint) = start();
    // Someone is connected and stays served throughout.
    let mut steady = tls_client(&server, &Trust::Pinned(fingerprint.clone()));
    let mut plain = server.client();

    // Garbage after a handshake record header: an alert, then the end.
    let mut s = tcp(server.listener("tls"));
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0, 0, 1, 0])
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.first(), Some(&0x15), "an alert record: {got:?}");

    // A plain frame on the TLS port: closed without a reply.
    let mut s = tcp(server.listener("tls"));
    s.write_all(b"\0\0\0\x0f{\"op\":\"hello\"}").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "no frame goes back in the clear: {got:?}");

    // A TLS client on the plain port: a TLS alert it can read, and a
    // handshake failure that says so.
    let err = tls::connect(tcp(&server.framed), "127.0.0.1", &Trust::FirstUse).unwrap_err();
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");

    // A client that connects and stops halfway through its hello.
    let mut half = tcp(server.listener("tls"));
    half.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();

    for c in [&mut steady, &mut plain] {
        let reply = c.request(json!({"op":"echo"}), b"still here").unwrap();
        assert_eq!(reply.body, b"still here");
    }
    let mut fresh = tls_client(&server, &Trust::Pinned(fingerprint));
    fresh.request(json!({"op":"hello"}), b"").unwrap();
}

#[test]
fn a_restart_keeps_the_certificate_and_prints_no_new_one() {
    let (server, fingerprint) = start();
    let dir = server.kill();
    let data = dir.path("data");
    let mut args = common::serve_args(&data);
    args.extend(["--tls-listen".to_string(), "127.0.0.1:0".to_string()]);
    let server = common::start_with(&args, dir);
    let stream = tls::connect(tcp(server.listener("tls")), "127.0.0.1", &Trust::FirstUse).unwrap();
    assert_eq!(stream.fingerprint(), fingerprint);
    // Its startup lines are over; nothing about a new certificate came.
    while let Some(line) = server.next_line(Duration::from_millis(300)) {
        assert!(!line.contains("created TLS certificate"), "{line}");
    }
}
