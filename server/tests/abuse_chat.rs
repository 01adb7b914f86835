//! End-to-end tests of what `say` lets a client make the server hold:
//! messages being collected count in the buffer budget, and a message to
//! many sessions that do not read stays within it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::{Client, Stream};

use common::start;
use testkit::{Server, connect, frame_bytes};

/// A session logged in as `demo` whose receive buffer is only 4 KiB, so
/// the kernel cannot absorb what it does not read.
fn small_window_session(server: &Server) -> Client {
    let addr: std::net::SocketAddr = server.framed.parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let stream: TcpStream = s.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Client::from_stream(Stream::Tcp(stream)).unwrap();
    let password = server.demo_password.clone().unwrap();
    c.request(json!({"op":"login","user":"demo","password":password}), b"")
        .expect("demo login");
    c
}

/// Polls `stats` (on one connection) until `done` holds, for at most 5 s;
/// returns the last reply.
fn stats_until(stats: &mut Client, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let f = stats.request(json!({"op":"stats"}), b"").unwrap();
        let v = Value::Object(f.header.fields);
        if done(&v) || start.elapsed() > Duration::from_secs(5) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Sessions that announce a 64 KiB message and send most of it: the
/// bytes the server collects for them show in `buffered_bytes`.
#[test]
fn messages_being_collected_count_in_the_buffer_budget() {
    let server = start(&[]);
    let mut stats = server.demo_client();
    let partial = 60_000;
    let mut senders = Vec::new();
    for _ in 0..20 {
        let mut c = server.demo_client();
        let bytes = frame_bytes(json!({"op":"say","to":"*"}), &vec![b'm'; 64 << 10]);
        c.send_raw(&bytes[..bytes.len() - (64 << 10) + partial])
            .unwrap();
        senders.push(c);
    }
    let want = 20 * partial as u64;
    let v = stats_until(&mut stats, |v| n(v, "buffered_bytes") >= want);
    assert!(n(&v, "buffered_bytes") >= want, "{v}");
}

/// With a small budget, collecting messages is bounded like any other
/// buffer: the connections holding the most are closed.
#[test]
fn messages_being_collected_are_evicted_over_the_budget() {
    let server = start(&["--out-high-water", "64K", "--out-total", "1M"]);
    let mut stats = server.demo_client();
    let mut senders = Vec::new();
    for _ in 0..30 {
        let mut c = server.demo_client();
        let bytes = frame_bytes(json!({"op":"say","to":"*"}), &vec![b'm'; 64 << 10]);
        c.send_raw(&bytes[..bytes.len() - 4000]).unwrap();
        senders.push(c);
    }
    // The budget is enforced at the end of each loop turn, so a `stats`
    // answered in the middle of one may see a little more: wait for a
    // turn's end state.
    let v = stats_until(&mut stats, |v| {
        n(v, "evicted") > 0 && n(v, "buffered_bytes") <= 1 << 20
    });
    assert!(n(&v, "evicted") > 0, "{v}");
    assert!(n(&v, "buffered_bytes") <= 1 << 20, "{v}");
}

/// 30 messages of 64 KiB to 40 sessions that never read, with a 1 MiB
/// budget: every `say` is answered (`ok`, or `too_busy` once the
/// messages still held pass half the budget), nobody is evicted, the
/// buffers stay within the budget, and another client is still served.
#[test]
fn messages_to_sessions_that_do_not_read_stay_within_the_budget() {
    let server = start(&["--out-high-water", "64K", "--out-total", "1M"]);
    let mut stats = server.demo_client();
    let readers: Vec<Client> = (0..40).map(|_| small_window_session(&server)).collect();
    let mut sender = server.demo_client();
    let body = vec![b'm'; 64 << 10];
    let mut batch = Vec::new();
    for id in 1..=30 {
        batch.extend(frame_bytes(json!({"op":"say","id":id,"to":"*"}), &body));
    }
    // Sent from a thread: the server reads the batch only as fast as it
    // answers, and this thread reads the answers.
    let mut writer = sender.stream().try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&batch).unwrap());
    let (mut ok, mut busy) = (0, 0);
    let mut most_buffered = 0;
    for id in 1..=30u64 {
        let f = sender.recv().expect("every say is answered");
        assert_eq!(f.header.id.as_ref().and_then(|i| i.as_u64()), Some(id));
        match (f.header.op.as_str(), f.header.str("code")) {
            ("ok", _) => ok += 1,
            ("error", Some("too_busy")) => {
                let message = f.header.str("message").unwrap();
                assert!(message.contains("under pressure"), "{message}");
                busy += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        let v = Value::Object(
            stats
                .request(json!({"op":"stats"}), b"")
                .unwrap()
                .header
                .fields,
        );
        most_buffered = most_buffered.max(n(&v, "buffered_bytes"));
    }
    sending.join().unwrap();
    // How many are refused depends on how much the kernel's socket
    // buffers absorb first (they autotune), so only the sum is certain.
    assert_eq!(ok + busy, 30, "{ok} ok, {busy} too_busy");
    assert!(ok >= 1, "{ok} ok, {busy} too_busy");
    assert!(most_buffered <= 1 << 20, "{most_buffered} bytes buffered");
    let v = stats_until(&mut stats, |_| true);
    assert_eq!(n(&v, "evicted"), 0, "{v}");
    // The loop still answers a newcomer at once.
    let mut probe = connect(&server.framed);
    let start = Instant::now();
    let echo = probe.request(json!({"op":"echo"}), b"ping").unwrap();
    assert_eq!(echo.body, b"ping");
    assert!(start.elapsed() < Duration::from_secs(2));
    // Once the readers are gone, so are the messages they held, and the
    // sender may speak again.
    drop(readers);
    let v = stats_until(&mut stats, |v| n(v, "buffered_bytes") < 64 << 10);
    assert!(n(&v, "buffered_bytes") < 64 << 10, "{v}");
    sender.request(json!({"op":"say","to":"*"}), &body).unwrap();
}
