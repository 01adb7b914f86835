//! End-to-end tests of skiffd's foundation: frames, echo, bad input,
//! limits, UDP, raw echo and shutdown, against a real server process.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Map, json};

use common::start;
use testkit::{TempDir, assert_closed, connect, frame_bytes, header_bytes, roundtrip};

#[test]
fn hello_echo_stats_over_tcp_and_unix() {
    let server = start(&[]);
    for addr in [server.framed.clone(), server.unix()] {
        let mut c = connect(&addr);
        let hello = c.request(json!({"op":"hello"}), b"").unwrap();
        assert_eq!(hello.header.str("server"), Some("skiffd"));
        assert_eq!(hello.header.u64("proto"), Some(1));
        let echo = c.request(json!({"op":"echo"}), b"sticky packets").unwrap();
        assert_eq!(echo.body, b"sticky packets");
        let upper = c
            .request(json!({"op":"echo","upper":true}), b"abc\xffxyz 123")
            .unwrap();
        assert_eq!(upper.body, b"ABC\xffXYZ 123");
    }
    let stats = server.stats();
    for key in [
        "connections",
        "uptime_s",
        "bytes_in",
        "bytes_out",
        "children",
        "cpu_user_s",
        "cpu_sys_s",
        "rss_bytes",
    ] {
        assert!(stats.get(key).is_some(), "stats lacks {key}: {stats}");
    }
    assert!(stats["bytes_in"].as_u64().unwrap() > 0);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn many_frames_in_one_write_and_one_frame_in_many() {
    let server = start(&[]);
    let mut s = TcpStream::connect(&server.framed).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 500 requests in a single write: the server must find every boundary.
    let mut batch = Vec::new();
    for i in 0..500u32 {
        batch.extend(frame_bytes(
            json!({"op":"echo","id":i}),
            i.to_string().as_bytes(),
        ));
    }
    // and one request dribbled a byte per write
    let dribble = frame_bytes(json!({"op":"echo","id":500,"upper":true}), b"split");
    s.write_all(&batch).unwrap();
    for b in &dribble {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut c = skiff::client::Client::from_stream(skiff::client::Stream::Tcp(s)).unwrap();
    for i in 0..500u64 {
        let f = c.recv().unwrap();
        assert_eq!(
            f.header.id.as_ref().and_then(|n| n.as_u64()),
            Some(i),
            "replies in order"
        );
        assert_eq!(f.body, i.to_string().as_bytes());
    }
    assert_eq!(c.recv().unwrap().body, b"SPLIT");
}

#[test]
fn each_malformed_frame_gets_bad_frame_and_only_that_connection_closes() {
    let server = start(&["--max-body", "1M"]);
    let mut bystander = server.client();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero header length", vec![0, 0, 0, 0]),
        ("header over 64 KiB", (65537u32).to_be_bytes().to_vec()),
        ("not JSON", [&5u32.to_be_bytes()[..], b"{oops"].concat()),
        (
            "not UTF-8",
            [&4u32.to_be_bytes()[..], b"\"\xff\xfe\""].concat(),
        ),
        (
            "not an object",
            [&7u32.to_be_bytes()[..], b"[1,2,3]"].concat(),
        ),
        (
            "no op",
            [&11u32.to_be_bytes()[..], b"{\"id\":1234}"].concat(),
        ),
        (
            "op not a string",
            [&8u32.to_be_bytes()[..], b"{\"op\":1}"].concat(),
        ),
        (
            "negative size",
            [&23u32.to_be_bytes()[..], br#"{"op":"echo","size":-5}"#].concat(),
        ),
        (
            "string size",
            [&24u32.to_be_bytes()[..], br#"{"op":"echo","size":"5"}"#].concat(),
        ),
        ("body over limit", {
            header_bytes(json!({"op":"echo","size": 2 << 20}))
        }),
    ];
    for (what, bytes) in cases {
        let mut c = server.client();
        c.send_raw(&bytes).unwrap();
        let f = c.recv().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(f.header.op, "error", "{what}");
        assert_eq!(f.header.str("code"), Some("bad_frame"), "{what}");
        assert!(!f.header.str("message").unwrap_or("").is_empty(), "{what}");
        assert_closed(&mut c);
        // the other client noticed nothing
        let echo = bystander
            .request(json!({"op":"echo"}), what.as_bytes())
            .unwrap();
        assert_eq!(echo.body, what.as_bytes());
    }
}

#[test]
fn unknown_op_and_bad_id_leave_the_connection_usable() {
    let server = start(&[]);
    let mut c = server.client();
    let f = roundtrip(&mut c, json!({"op":"teleport","id":1}), b"with a body");
    assert_eq!(
        (f.header.op.as_str(), f.header.str("code")),
        ("error", Some("unknown_op"))
    );
    assert_eq!(f.header.id.as_ref().and_then(|n| n.as_u64()), Some(1));
    let f = roundtrip(&mut c, json!({"op":"echo","id":[1]}), b"x");
    assert_eq!(f.header.str("code"), Some("bad_request"));
    assert_eq!(
        c.request(json!({"op":"echo"}), b"still here").unwrap().body,
        b"still here"
    );
}

#[test]
fn bye_answers_then_closes() {
    let server = start(&[]);
    let mut c = server.client();
    let f = c.request(json!({"op":"bye"}), b"").unwrap();
    assert_eq!(f.header.op, "ok");
    assert_closed(&mut c);
}

#[test]
fn sixteen_mib_echo_streams_through() {
    let server = start(&[]);
    let mut c = server.client();
    let body: Vec<u8> = (0..16u32 << 20)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i % 26) as usize])
        .collect();
    let stream = c.stream().try_clone().unwrap();
    // The server streams the reply while the request still arrives, so
    // the sender must run beside the reader (as any client must).
    let sender = {
        let body = body.clone();
        std::thread::spawn(move || {
            let mut w = skiff::client::Client::from_stream(stream).unwrap();
            let mut h = Map::new();
            h.insert("op".into(), "echo".into());
            h.insert("upper".into(), true.into());
            w.send(h, &body).unwrap();
        })
    };
    let header = c.recv_header().unwrap();
    assert_eq!(header.size, 16 << 20);
    let mut got = Vec::with_capacity(16 << 20);
    c.read_body(header.size, &mut got, |_| {}).unwrap();
    sender.join().unwrap();
    assert!(
        got.iter()
            .zip(&body)
            .all(|(g, b)| *g == b.to_ascii_uppercase())
    );
    assert_eq!(got.len(), body.len());
}

/// Big echo bodies are written from the server's read buffer; with 2.5
/// MB in flight the socket takes them in pieces and backpressure kicks
/// in. Every byte must still come back, in order.
#[test]
fn many_pipelined_big_echoes_arrive_intact() {
    let server = start(&["--out-high-water", "256K"]);
    let s = TcpStream::connect(&server.framed).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let bodies: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            let len = [0, 10, 1023, 1024, 1500, 16 << 10, 40_000][i as usize % 7];
            (0..len).map(|j| (i * 7 + j as u32 % 251) as u8).collect()
        })
        .collect();
    let mut requests = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        requests.extend(frame_bytes(json!({"op":"echo","id":i}), body));
    }
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&requests).unwrap());
    let mut c = skiff::client::Client::from_stream(skiff::client::Stream::Tcp(s)).unwrap();
    for (i, body) in bodies.iter().enumerate() {
        let f = c.recv().unwrap();
        assert_eq!(
            f.header.id.as_ref().and_then(|n| n.as_u64()),
            Some(i as u64)
        );
        assert!(f.body == *body, "body {i} of {} bytes differs", body.len());
    }
    writer.join().unwrap();
}

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory() {
    let server = start(&["--out-high-water", "64K"]);
    let mut s = TcpStream::connect(&server.framed).unwrap();
    s.set_nonblocking(true).unwrap();
    let header = header_bytes(json!({"op":"echo","size": 1u64 << 30}));
    s.write_all(&header).unwrap_or(());
    // Push up to 1 GiB without ever reading; stop when the kernel says full.
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = header.len();
    let start = Instant::now();
    let mut stalls = 0;
    while sent < (1 << 30) && start.elapsed() < Duration::from_secs(20) {
        match s.write(&chunk) {
            Ok(n) => {
                sent += n;
                stalls = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalls += 1;
                if stalls > 50 {
                    break; // the server stopped reading: backpressure holds
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        sent < 256 << 20,
        "server kept reading from a client that never reads: {sent} bytes"
    );
    let stats = server.stats();
    let rss = stats["rss_bytes"].as_u64().unwrap();
    assert!(rss < 64 << 20, "server RSS {rss}");
    // and the loop still serves others promptly
    let mut other = server.client();
    let t = Instant::now();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"hi").unwrap().body,
        b"hi"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Many clients that send big echoes and never read could each fill a
/// high-water mark of output (80 x 256 KiB here). Together they must stay within
/// `--out-total`: connections pause early under pressure, and the ones
/// holding the most are closed when that is not enough.
#[test]
fn slow_readers_together_stay_within_the_buffer_budget() {
    let server = start(&["--out-high-water", "256K", "--out-total", "1M"]);
    // Each echo is bigger than the kernel's largest send buffer (4 MiB
    // here), so what a client sends beyond that must wait in the server.
    const SIZE: usize = 16 << 20;
    let header = header_bytes(json!({"op":"echo","size": SIZE}));
    let mut clients = Vec::new();
    for _ in 0..80 {
        let addr: std::net::SocketAddr = server.framed.parse().unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small receive window keeps the kernel from absorbing the
        // answers, so they pile up in the server, as with slow readers.
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.write_all(&header).unwrap();
        s.set_nonblocking(true).unwrap();
        clients.push((s, header.len()));
    }
    // Send bodies round-robin for as long as the server takes them.
    let chunk = vec![b'x'; 64 << 10];
    let mut idle_rounds = 0;
    for _ in 0..2000 {
        let mut progress = false;
        for (s, sent) in &mut clients {
            if *sent >= SIZE {
                continue;
            }
            if let Ok(n) = s.write(&chunk[..chunk.len().min(SIZE - *sent)]) {
                *sent += n;
                progress |= n > 0;
            }
        }
        idle_rounds = if progress { 0 } else { idle_rounds + 1 };
        if idle_rounds > 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each client still open now pauses with at least 16 KiB waiting (its
    // kernel send buffer is full): 80 of them cannot all fit in 1 MiB.
    // Wait until the server has settled (two equal samples).
    let mut stats = server.stats();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let again = server.stats();
        let settled = again["buffered_bytes"] == stats["buffered_bytes"]
            && again["evicted"] == stats["evicted"];
        stats = again;
        if settled {
            break;
        }
    }
    let buffered = stats["buffered_bytes"].as_u64().unwrap();
    assert!(buffered <= 1 << 20, "{buffered} bytes buffered: {stats}");
    let evicted = stats["evicted"].as_u64().unwrap();
    assert!(evicted >= 1, "{stats}");
    // The evicted ones are gone; the stats client is one of those open.
    assert_eq!(stats["connections"].as_u64(), Some(81 - evicted), "{stats}");
    // The loop still serves everyone else.
    let mut other = server.client();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"hi").unwrap().body,
        b"hi"
    );
}

#[test]
fn a_client_stalled_mid_frame_does_not_stall_others() {
    let server = start(&[]);
    let mut stalled = TcpStream::connect(&server.framed).unwrap();
    let bytes = frame_bytes(json!({"op":"echo","id":1}), b"never finished");
    stalled.write_all(&bytes[..2]).unwrap(); // half a length prefix
    let mut stalled2 = TcpStream::connect(&server.framed).unwrap();
    stalled2.write_all(&bytes[..bytes.len() - 3]).unwrap(); // most of a body
    let mut c = server.client();
    for i in 0..100 {
        assert_eq!(
            c.request(json!({"op":"echo"}), format!("{i}").as_bytes())
                .unwrap()
                .body,
            format!("{i}").as_bytes()
        );
    }
    // the stalled one completes its frame later and is answered
    stalled2.write_all(&bytes[bytes.len() - 3..]).unwrap();
    let mut c2 = skiff::client::Client::from_stream(skiff::client::Stream::Tcp(stalled2)).unwrap();
    c2.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(c2.recv().unwrap().body, b"never finished");
}

#[test]
fn thousands_of_connections_do_not_stall_the_loop() {
    let server = start(&[]);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&server.framed).unwrap());
    }
    let mut c = server.client();
    assert_eq!(c.request(json!({"op":"echo"}), b"x").unwrap().body, b"x");
    let stats = server.stats();
    assert!(stats["connections"].as_u64().unwrap() >= 2001, "{stats}");
    // every one of them is still served
    for s in idle.iter().step_by(97) {
        let mut c =
            skiff::client::Client::from_stream(skiff::client::Stream::Tcp(s.try_clone().unwrap()))
                .unwrap();
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(
            c.request(json!({"op":"echo"}), b"late").unwrap().body,
            b"late"
        );
    }
}

#[test]
fn connection_limits_answer_too_busy() {
    let server = start(&["--max-conns", "3"]);
    let held: Vec<_> = (0..3).map(|_| server.client()).collect();
    // make sure all three are accepted before the fourth arrives
    let mut first = connect(&server.framed);
    let f = first.recv().unwrap();
    assert_eq!(f.header.str("code"), Some("too_busy"));
    assert_closed(&mut first);
    drop(held);
    // room again once they are gone (closing is noticed on the next turn)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = server.client();
        match c.request(json!({"op":"echo"}), b"in") {
            Ok(f) => {
                assert_eq!(f.body, b"in");
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Some("too_busy"));
                assert!(Instant::now() < deadline, "never got room back");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    let per_ip = start(&["--max-conns-per-ip", "2"]);
    let _a = per_ip.client();
    let _b = per_ip.client();
    let mut c = per_ip.client();
    assert_eq!(c.recv().unwrap().header.str("code"), Some("too_busy"));
    assert_closed(&mut c);
}

#[test]
fn idle_connections_are_closed_with_timeout() {
    let server = start(&["--idle-timeout", "300ms"]);
    let mut c = server.client();
    assert_eq!(c.request(json!({"op":"echo"}), b"a").unwrap().body, b"a");
    let start = Instant::now();
    let f = c.recv().unwrap();
    assert_eq!(f.header.str("code"), Some("timeout"));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_closed(&mut c);
}

#[test]
fn udp_time_and_echo() {
    let server = start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let time = server.listener("udp-time").to_string();
    let ask = |req: &[u8], to: &str| -> Vec<u8> {
        // UDP may drop; try a few times before failing.
        for _ in 0..5 {
            sock.send_to(req, to).unwrap();
            let mut buf = vec![0u8; 65536];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                buf.truncate(n);
                return buf;
            }
        }
        panic!("no reply from {to}");
    };
    let year = String::from_utf8(ask(b"%Y", &time)).unwrap();
    assert_eq!(year.len(), 4);
    assert!(year.parse::<u32>().unwrap() >= 2024);
    let default = String::from_utf8(ask(b"", &time)).unwrap();
    assert_eq!(default.len(), 19, "{default}");
    assert!(!default.ends_with('\n'));
    let bad = String::from_utf8(ask(b"%Y %Q", &time)).unwrap();
    assert!(bad.starts_with("error:"), "{bad}");
    let not_utf8 = String::from_utf8(ask(b"\xff", &time)).unwrap();
    assert!(not_utf8.starts_with("error:"));

    let echo = server.listener("udp-echo").to_string();
    assert_eq!(ask(b"ping \x00\xff", &echo), b"ping \x00\xff");
    assert_eq!(ask(b"", &echo), b"");
    // the server is still fine
    assert_eq!(
        server
            .client()
            .request(json!({"op":"echo"}), b"ok")
            .unwrap()
            .body,
        b"ok"
    );
}

#[test]
fn raw_echo_upper_cases_a_byte_stream() {
    let server = start(&[]);
    let mut s = TcpStream::connect(server.listener("raw-echo")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello, nc\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"HELLO, NC\n");
}

/// A request and the end of the stream that arrive together, while the
/// server is not looking, come as one readiness event. Both must be seen:
/// the answer, then the close (not the answer, then an idle wait).
#[test]
fn data_and_fin_in_one_event_get_answered_and_closed() {
    let server = start(&[]);
    let mut raw = Vec::new();
    let mut framed = Vec::new();
    for _ in 0..10 {
        // Make sure each connection is accepted and registered first.
        let mut s = TcpStream::connect(server.listener("raw-echo")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"X");
        raw.push(s);
        let mut s = TcpStream::connect(&server.framed).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&frame_bytes(json!({"op":"hello"}), b""))
            .unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut head = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut head).unwrap();
        framed.push(s);
    }
    // Stopped, the server sees data and FIN land before it polls again.
    server.signal("STOP");
    for s in &mut raw {
        s.write_all(b"last words").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let request = frame_bytes(json!({"op":"echo","id":7}), b"last words");
    for s in &mut framed {
        s.write_all(&request).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    server.signal("CONT");
    for (i, s) in raw.iter_mut().chain(framed.iter_mut()).enumerate() {
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: {e} after {} bytes", got.len()));
        if i < 10 {
            assert_eq!(got, b"LAST WORDS");
        } else {
            assert!(got.ends_with(b"last words"), "connection {i}: {got:?}");
        }
    }
}

#[test]
fn sigterm_says_bye_flushes_and_exits_zero() {
    let mut server = start(&["--shutdown-grace", "3s"]);
    let mut c = server.client();
    assert_eq!(
        c.request(json!({"op":"echo"}), b"before").unwrap().body,
        b"before"
    );
    let unix = server.unix();
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("skiffd did not exit");
    assert!(status.success(), "{status:?}");
    // The client is told before the close.
    let bye = c.recv().expect("the shutdown notice");
    assert_eq!(bye.header.op, "bye", "{:?}", bye.header);
    assert_eq!(bye.header.str("reason"), Some("server shutting down"));
    assert!(bye.header.id.is_none());
    assert_closed(&mut c);
    assert!(
        TcpStream::connect(&server.framed).is_err(),
        "still accepting after shutdown"
    );
    assert!(
        !std::path::Path::new(unix.trim_start_matches("unix:")).exists(),
        "unix socket left behind"
    );
}

#[test]
fn no_arguments_means_loopback_defaults_and_bad_flags_fail_cleanly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["serve", "--max-body", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["serve", "--out-high-water", "1M", "--out-total", "2M"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out-total"));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
}

#[test]
fn serve_flags_without_the_serve_command_serve() {
    let dir = TempDir::new("no-serve");
    let args: Vec<String> = ["--data-dir", &dir.str("data"), "--listen", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = common::start_with(&args, dir);
    let mut c = server.client();
    let f = c.request(json!({"op":"hello"}), b"").unwrap();
    assert_eq!(f.header.str("server"), Some("skiffd"));
}

#[test]
fn a_listener_without_a_host_is_a_usage_error_with_a_hint() {
    for args in [
        &["serve", "--listen", "9999"][..],
        &["--listen", "9999"],
        &["serve", "--udp-time", "9998"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let port = args.last().unwrap();
        assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    }
}

#[test]
fn serve_help_shows_every_default_and_how_listeners_combine() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for default in [
        "127.0.0.1:9999",
        "127.0.0.1:9998",
        "127.0.0.1:9997",
        "127.0.0.1:9996",
        "127.0.0.1:2121",
        "127.0.0.1:9995",
        "./skiff-data",
        "[default: 64G]",
        "[default: 5s]",
    ] {
        assert!(help.contains(default), "{default} missing from:\n{help}");
    }
    // Every flag but --help says its default (on its own line, or on the
    // lines under it when the help is laid out that way).
    let options = help.split_once("Options:").map(|(_, rest)| rest).unwrap();
    let mut entries: Vec<String> = Vec::new();
    for line in options.lines().skip(1) {
        if !line.is_empty() && !line.starts_with(' ') {
            break; // the text after the options
        }
        if line.trim_start().starts_with('-') {
            entries.push(line.to_string());
        } else if let Some(entry) = entries.last_mut() {
            entry.push_str(line);
        }
    }
    assert!(entries.len() > 20, "{entries:?}");
    for entry in entries.iter().filter(|e| !e.contains("--help")) {
        assert!(entry.contains("[default: "), "no default: {entry}");
    }
    assert!(help.contains("nothing else"), "{help}");
}

#[test]
fn completions_and_the_man_page_are_printed_and_unknown_shells_refused() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for word in ["serve", "user", "listen", "data-dir"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let page = run(&["man"]);
    assert!(page.contains(".TH SKIFFD 1"), "{page}");
    assert!(page.contains("serve"), "{page}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
