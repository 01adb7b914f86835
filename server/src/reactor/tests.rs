//! The reactor itself, on real loopback sockets and in this process: no
//! server binary, no threads of the test's own. A test binds a
//! [`Reactor`] on port 0, connects plain blocking `std` clients, and runs
//! the loop one turn at a time ([`Reactor::turn`]), looking at the
//! reactor's tables between turns. So each test can say *in which turn*
//! something happens, which a test against a server process cannot.
//!
//! What is checked, and by which test:
//! - fairness: a pipeline of hundreds of requests is served
//!   [`MAX_REQUESTS_PER_TURN`] at a time while a single request is
//!   answered at once;
//! - backpressure: a client that does not read is no longer read once
//!   its output passes the high-water mark, and is read again once it
//!   catches up, losing nothing;
//! - eviction: over the `--out-total` budget, the connection holding the
//!   most is closed and a well-behaved one is not;
//! - stale tokens: an event still in a batch for a client that finished
//!   earlier in that batch does not reach the client accepted after it;
//! - close late: a client that goes away, or is evicted, while its job is
//!   on the worker pool stays until the job's result is back;
//! - TLS handshakes: a turn advances at most [`HANDSHAKES_PER_TURN`] of
//!   them however many ClientHellos arrived, answers a plain client in the
//!   same turn, and serves the waiting ones in the next turns with no new
//!   event.
//!
//! Every wait is bounded, by a number of turns or by [`PATIENCE`], and
//! each turn polls for at most [`MAX_WAIT`]; nothing sleeps.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest};
use serde_json::{Value, json};
use socket2::SockRef;
use testkit::{TempDir, frame_bytes};

use super::source::Source;
use super::{Config, HANDSHAKES_PER_TURN, READ_BUDGET, Reactor};
use crate::conn::MAX_REQUESTS_PER_TURN;
use crate::limits::Limits;
use crate::services::Services;
use crate::users::UserDb;

/// Longest one turn waits in `poll` for something to happen.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Longest a test waits for anything (a worker's argon2 run, a socket
/// filling up); far more than any of it takes.
const PATIENCE: Duration = Duration::from_secs(20);

/// A reactor serving the framed protocol on `127.0.0.1:0`, driven turn by
/// turn from the test.
struct Harness {
    reactor: Reactor,
    events: Events,
    addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    tls_addr: Option<SocketAddr>,
    // Dropped last: the reactor's data directory.
    _dir: TempDir,
}

impl Harness {
    /// A reactor with `limits`, no users and an empty data directory.
    fn start(limits: Limits) -> Harness {
        Harness::start_with(limits, None)
    }

    /// The same, with a TLS listener too when `tls` is given.
    fn start_with(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Harness {
        let dir = TempDir::new("reactor");
        let users = UserDb::load(dir.root()).expect("an empty user store loads");
        let services = Services::new(dir.root().to_path_buf(), users);
        let config = Config {
            framed: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            unix: Vec::new(),
            udp_time: Vec::new(),
            udp_echo: Vec::new(),
            raw_echo: Vec::new(),
            ftp: Vec::new(),
            ftp_passive: super::ftp::Passive {
                ports: None,
                advertise: None,
            },
            tls: match tls {
                Some(_) => vec![SocketAddr::from(([127, 0, 0, 1], 0))],
                None => Vec::new(),
            },
            tls_config: tls,
            ftp_require_tls: false,
            ftp_hash_uploads: false,
            limits,
            max_conns: 64,
            max_conns_per_ip: 64,
            backlog: 64,
            shutdown_grace: Duration::from_secs(1),
            exec_max: 1,
            exec_max_output: 1 << 20,
        };
        let reactor = Reactor::bind(config, services).expect("bind on 127.0.0.1:0");
        let addr = reactor.local_addrs()[0]
            .1
            .parse()
            .expect("a TCP listener's address");
        let tls_addr = reactor
            .local_addrs()
            .iter()
            .find(|(name, _)| *name == "tls")
            .map(|(_, a)| a.parse().expect("a TCP listener's address"));
        Harness {
            reactor,
            events: Events::with_capacity(1024),
            addr,
            tls_addr,
            _dir: dir,
        }
    }

    /// One turn of the loop, as `run` does it: poll (not at all while the
    /// ready list has work, else for at most [`MAX_WAIT`]), then the turn.
    fn step(&mut self) {
        let timeout = self.reactor.poll_timeout().unwrap_or(MAX_WAIT);
        self.poll(timeout.min(MAX_WAIT));
        self.reactor.turn(self.events.iter());
    }

    /// Turns until `done` holds; panics after [`PATIENCE`].
    fn step_until(&mut self, what: &str, mut done: impl FnMut(&Harness) -> bool) {
        let give_up = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < give_up, "gave up waiting for {what}");
            self.step();
        }
    }

    /// Polls into `self.events` without dispatching anything.
    fn poll(&mut self, timeout: Duration) {
        match self.reactor.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => panic!("poll: {e}"),
        }
    }

    /// Polls until the events gathered (none dispatched) include one for
    /// each of `sources`; returns them all, in the order they came.
    fn gather(&mut self, sources: &[Source]) -> Vec<Event> {
        let give_up = Instant::now() + PATIENCE;
        let mut batch: Vec<Event> = Vec::new();
        while !sources.iter().all(|s| batch.iter().any(|e| is(e, *s))) {
            assert!(
                Instant::now() < give_up,
                "gave up waiting for events for {sources:?}; got {:?}",
                batch.iter().map(|e| e.token()).collect::<Vec<_>>()
            );
            self.poll(MAX_WAIT);
            batch.extend(self.events.iter().cloned());
        }
        batch
    }

    /// A client connected to the reactor, and its slab key once accepted.
    fn connect(&mut self) -> (TcpStream, usize) {
        let stream = TcpStream::connect(self.addr).expect("connect");
        let key = self.accepted(&stream);
        (stream, key)
    }

    /// Turns until `stream`'s connection is in the slab; its key.
    fn accepted(&mut self, stream: &TcpStream) -> usize {
        let mut key = None;
        self.step_until("the connection to be accepted", |h| {
            key = h.key_of(stream);
            key.is_some()
        });
        key.expect("accepted")
    }

    /// The slab key of the reactor's end of `stream`, if it has one.
    fn key_of(&self, stream: &TcpStream) -> Option<usize> {
        let ours = stream.local_addr().ok()?;
        self.reactor.clients.iter().find_map(|(k, c)| {
            let peer = SockRef::from(&c.stream.as_fd()).peer_addr().ok()?;
            (peer.as_socket() == Some(ours)).then_some(k)
        })
    }
}

/// Whether `event` is for `source`.
fn is(event: &Event, source: Source) -> bool {
    event.token() == source.token()
}

/// Frames a client received, read without blocking.
#[derive(Default)]
struct Received {
    /// Every byte read so far.
    total: usize,
    bytes: Vec<u8>,
    frames: Vec<(Value, Vec<u8>)>,
    /// The reactor closed the connection (EOF, or a reset).
    closed: bool,
}

impl Received {
    /// Reads what `stream` has now and splits off the whole frames.
    fn read(&mut self, stream: &mut TcpStream) {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut chunk = [0; 64 << 10];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.total += n;
                    self.bytes.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        while let Some((frame, used)) = split_frame(&self.bytes) {
            self.frames.push(frame);
            self.bytes.drain(..used);
        }
    }
}

/// The first whole frame in `bytes` (PROTOCOL.md section 1) and how many
/// bytes it took.
fn split_frame(bytes: &[u8]) -> Option<((Value, Vec<u8>), usize)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header: Value = serde_json::from_slice(bytes.get(4..4 + len)?).expect("a JSON header");
    let size = header["size"].as_u64().unwrap_or(0) as usize;
    let body = bytes.get(4 + len..4 + len + size)?.to_vec();
    Some(((header, body), 4 + len + size))
}

/// Writes as much of `pending` as the socket takes now, without blocking.
fn write_some(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    stream.set_nonblocking(true).expect("nonblocking");
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Closes `stream` with a reset rather than a FIN: the reactor sees an
/// error on the socket, the harshest way a peer can leave.
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(stream);
}

/// A login the worker pool must check (argon2 against the dummy hash,
/// since there is no such user): the connection waits for the job.
fn login_frame() -> Vec<u8> {
    frame_bytes(
        json!({"op": "login", "id": 1, "user": "nobody", "password": "wrong"}),
        b"",
    )
}

#[test]
fn a_pipeline_is_served_a_share_per_turn_while_a_single_request_is_answered_at_once() {
    const PIPELINED: usize = 500;
    let share = usize::from(MAX_REQUESTS_PER_TURN);
    let mut h = Harness::start(Limits::default());
    let (mut hog, _) = h.connect();
    let (mut single, _) = h.connect();
    let mut burst = Vec::new();
    for id in 0..PIPELINED {
        burst.extend(frame_bytes(json!({"op": "echo", "id": id}), b"ping"));
    }
    let request = frame_bytes(json!({"op": "echo", "id": 7}), b"alone");
    hog.write_all(&burst).expect("write the pipeline");
    single.write_all(&request).expect("write the request");
    let sent = (burst.len() + request.len()) as u64;

    let (mut hog_got, mut single_got) = (Received::default(), Received::default());
    let mut single_answered = None;
    let mut turns = 0;
    let mut turns_after_all_read = 0;
    while hog_got.frames.len() < PIPELINED {
        turns += 1;
        assert!(turns <= 200, "the pipeline was not served in 200 turns");
        // Once every byte is read, the hog gets no more events: its one
        // turn per loop turn is the ready list's.
        let all_read = h.reactor.stats.bytes_in == sent;
        let before = hog_got.frames.len();
        h.step();
        hog_got.read(&mut hog);
        single_got.read(&mut single);
        let served = hog_got.frames.len() - before;
        if all_read {
            turns_after_all_read += 1;
            assert_eq!(
                served,
                share.min(PIPELINED - before),
                "turn {turns}: a client owed the rest of its pipeline gets one share per turn"
            );
        } else {
            // Its event's turn, then the ready list's.
            assert!(
                served <= 2 * share,
                "turn {turns}: {served} requests of the pipeline served, more than two shares"
            );
        }
        if single_answered.is_none() && !single_got.frames.is_empty() {
            single_answered = Some((turns, hog_got.frames.len()));
        }
    }
    let (turn, hog_served) = single_answered.expect("the single request was answered");
    assert!(
        turn <= 2,
        "the single request waited {turn} turns behind the pipeline"
    );
    assert!(
        hog_served <= 4 * share,
        "{hog_served} of the pipeline's requests were served before the single one"
    );
    assert!(turns_after_all_read >= (PIPELINED - 4 * share) / share);
    let (header, body) = &single_got.frames[0];
    assert_eq!(
        (header["op"].as_str(), header["id"].as_u64()),
        (Some("ok"), Some(7))
    );
    assert_eq!(body, b"alone");
    for (id, (header, body)) in hog_got.frames.iter().enumerate() {
        assert_eq!(header["id"].as_u64(), Some(id as u64), "replies in order");
        assert_eq!(body, b"ping");
    }
}

#[test]
fn a_client_that_does_not_read_is_not_read_while_its_output_is_over_the_high_water_mark() {
    let limits = Limits {
        out_high: 64 << 10,
        out_low: 16 << 10,
        ..Limits::default()
    };
    let (high, low) = (limits.out_high, limits.out_low);
    let mut h = Harness::start(limits);
    let (mut sleeper, k) = h.connect();
    let request = frame_bytes(json!({"op": "echo"}), &[b'z'; 32 << 10]);
    let mut pending = Vec::new();
    let mut requests = 0usize;

    // Requests until the reactor stops reading: bounded by turns, and by
    // what the client may send (far more than any socket buffers hold).
    let mut turns = 0;
    loop {
        let limits = &h.reactor.config.limits;
        match h
            .reactor
            .clients
            .get(k)
            .map(|c| (c.wants_read(limits), &c.broken))
        {
            Some((false, None)) => break,
            Some((true, None)) => {}
            gone => panic!("the client that does not read was closed instead: {gone:?}"),
        }
        turns += 1;
        assert!(
            turns <= 5000 && requests < 4000,
            "still read after {requests} requests the client does not read the replies to"
        );
        // Keep the socket full: the reactor always has more to read.
        while pending.len() < READ_BUDGET {
            pending.extend_from_slice(&request);
            requests += 1;
        }
        write_some(&mut sleeper, &mut pending);
        h.step();
    }
    let client = &h.reactor.clients[k];
    assert_eq!(
        client.interest,
        Interest::WRITABLE,
        "interest in reading is withdrawn"
    );
    assert!(
        client.buffered >= high,
        "paused holding {} bytes, below the high-water mark {high}",
        client.buffered
    );

    // More requests arrive (as many as the kernel takes); none is read.
    let bytes_in = h.reactor.stats.bytes_in;
    for _ in 0..5 {
        pending.extend_from_slice(&request);
        requests += 1;
        write_some(&mut sleeper, &mut pending);
        h.step();
    }
    assert_eq!(
        h.reactor.stats.bytes_in, bytes_in,
        "nothing read while paused"
    );
    assert_eq!(h.reactor.clients[k].interest, Interest::WRITABLE);

    // The client catches up: reading resumes, and every reply comes back.
    let mut got = Received::default();
    let give_up = Instant::now() + PATIENCE;
    let mut resumed = false;
    while got.frames.len() < requests {
        assert!(
            Instant::now() < give_up,
            "{} of {requests} replies",
            got.frames.len()
        );
        write_some(&mut sleeper, &mut pending);
        got.read(&mut sleeper);
        h.step();
        if !resumed && h.reactor.stats.bytes_in > bytes_in {
            resumed = true;
            // Read again only once the output fell from over the
            // high-water mark to the low-water mark: the client took at
            // least the difference.
            assert!(
                got.total >= high - low,
                "read again after the client took only {} bytes",
                got.total
            );
        }
    }
    assert!(resumed, "the reactor read the client again");
    assert!(!got.closed && h.reactor.clients[k].broken.is_none());
    for (header, body) in &got.frames {
        assert_eq!(header["op"], "ok");
        assert_eq!(body.len(), 32 << 10);
    }
}

#[test]
fn over_the_buffer_budget_the_connection_holding_the_most_is_closed() {
    // A budget below the 16 KiB a paused connection holds at least (the
    // high-water mark under pressure): one client that does not read is
    // enough to pass it.
    let limits = Limits {
        out_high: 64 << 10,
        out_low: 16 << 10,
        out_total: 12 << 10,
        ..Limits::default()
    };
    let mut h = Harness::start(limits);
    // A well-behaved client in the middle of a request: it holds a little
    // (the part of the frame head it sent), so the order of eviction
    // matters.
    let (mut polite, p) = h.connect();
    let whole = frame_bytes(
        json!({"op": "echo", "id": 3, "note": "x".repeat(200)}),
        b"hello",
    );
    assert!(whole.len() > 200, "100 bytes end inside the frame's head");
    polite.write_all(&whole[..100]).expect("write");
    h.step_until("the partial frame to be held", |h| {
        h.reactor.clients[p].buffered > 0
    });
    let polite_holds = h.reactor.clients[p].buffered;

    let (mut hog, k) = h.connect();
    let request = frame_bytes(json!({"op": "echo"}), &[b'z'; 32 << 10]);
    let mut pending = Vec::new();
    let give_up = Instant::now() + PATIENCE;
    while h.reactor.clients.contains(k) {
        assert!(
            Instant::now() < give_up,
            "the client holding the most was not closed"
        );
        while pending.len() < READ_BUDGET {
            pending.extend_from_slice(&request);
        }
        write_some(&mut hog, &mut pending);
        h.step();
    }
    assert_eq!(h.reactor.stats.evicted, 1, "one eviction was enough");
    let client = &h.reactor.clients[p];
    assert!(client.broken.is_none(), "the well-behaved client survives");
    assert_eq!(client.buffered, polite_holds);

    // Its request goes on, and is answered.
    polite.write_all(&whole[100..]).expect("write");
    let mut got = Received::default();
    h.step_until("the well-behaved client's reply", |_| {
        got.read(&mut polite);
        !got.frames.is_empty()
    });
    assert_eq!(got.frames[0].0["id"], 3);
    assert_eq!(got.frames[0].1, b"hello");

    // The evicted one finds its connection closed.
    hog.set_nonblocking(false).expect("blocking");
    hog.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut sink = vec![0; 64 << 10];
    loop {
        match hog.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the evicted client is still open: {e}"),
        }
    }
}

#[test]
fn an_event_left_in_a_batch_for_a_finished_client_does_not_reach_the_next_one() {
    let mut h = Harness::start(Limits::default());
    let (mut first, k) = h.connect();
    first.write_all(&login_frame()).expect("write");
    h.step_until("the login's job", |h| h.reactor.clients[k].job_in_flight());

    // One batch, built from real events in an order epoll may give them:
    // the job is back (the first client's reply is due, and writing it
    // fails: the client is finished), a second client connects, and the
    // first one's reset is reported.
    let mut batch = h.gather(&[Source::Jobs]);
    let second = TcpStream::connect(h.addr).expect("connect");
    reset(first);
    batch.extend(h.gather(&[Source::Listener(0), Source::Client(k)]));
    batch.sort_by_key(|e| match Source::from_token(e.token()) {
        Some(Source::Jobs) => 0,
        Some(Source::Client(_)) => 2,
        _ => 1,
    });
    h.reactor.turn(batch.iter());

    assert!(!h.reactor.clients.contains(k), "the first client is gone");
    let second_key = h.key_of(&second);
    let Some(s) = second_key else {
        panic!("the second client was closed by the first one's event");
    };
    assert_ne!(s, k, "a key is not reused within the batch that freed it");
    assert!(h.reactor.clients[s].broken.is_none());
    assert!(!h.reactor.clients[s].read_closed);

    // After the batch the key is free, and the slab gives it out again:
    // only closing late kept the second client off it.
    let (_third, t) = h.connect();
    assert_eq!(t, k, "the slab reuses the freed key");

    // The second client is served.
    let mut second = second;
    second
        .write_all(&frame_bytes(json!({"op": "echo", "id": 2}), b"still here"))
        .expect("write");
    let mut got = Received::default();
    h.step_until("the second client's reply", |_| {
        got.read(&mut second);
        !got.frames.is_empty()
    });
    assert_eq!(got.frames[0].1, b"still here");
}

#[test]
fn a_client_that_leaves_with_a_job_out_stays_until_the_job_is_back() {
    let mut h = Harness::start(Limits::default());
    let (mut client, k) = h.connect();
    client.write_all(&login_frame()).expect("write");
    h.step_until("the login's job", |h| h.reactor.clients[k].job_in_flight());
    reset(client);

    // Turns that see the reset but not the job's result (held back here,
    // as if the worker were still hashing): the client stays.
    let mut held = Vec::new();
    let give_up = Instant::now() + PATIENCE;
    loop {
        match h.reactor.clients.get(k) {
            None => panic!("the client was removed while its job was out"),
            Some(c) if c.broken.is_some() => break,
            Some(_) => {}
        }
        assert!(Instant::now() < give_up, "the reset was never seen");
        h.poll(MAX_WAIT);
        let (jobs, others): (Vec<Event>, Vec<Event>) =
            h.events.iter().cloned().partition(|e| is(e, Source::Jobs));
        held.extend(jobs);
        h.reactor.turn(others.iter());
    }
    for _ in 0..3 {
        h.reactor.turn(std::iter::empty());
    }
    let c = &h.reactor.clients[k];
    assert!(c.job_in_flight(), "the job is still out");
    assert!(
        h.reactor.clients.contains(k),
        "a client with a job out is kept"
    );
    assert_eq!(h.reactor.stats.connections, 1);

    // The result comes back: the client goes, in that same turn or later.
    h.reactor.turn(held.iter());
    h.step_until("the client to be removed", |h| {
        !h.reactor.clients.contains(k)
    });
    assert_eq!(h.reactor.stats.connections, 0);
    assert_eq!(h.reactor.stats.buffered, 0);
}

#[test]
fn a_client_evicted_with_a_job_out_stays_until_the_job_is_back() {
    let limits = Limits {
        out_total: 12 << 10,
        ..Limits::default()
    };
    let mut h = Harness::start(limits);
    let (mut client, k) = h.connect();
    // A login, and behind it a pipeline that waits in the connection's
    // input while the login is checked: more than the whole budget.
    let mut bytes = login_frame();
    while bytes.len() < 40 << 10 {
        bytes.extend(frame_bytes(json!({"op": "echo"}), &[b'p'; 1000]));
    }
    client.write_all(&bytes).expect("write");
    h.step_until("the client to be evicted", |h| {
        h.reactor.clients.get(k).is_none_or(|c| c.broken.is_some())
    });
    assert_eq!(h.reactor.stats.evicted, 1);
    let c = h
        .reactor
        .clients
        .get(k)
        .expect("an evicted client with a job out is kept");
    assert!(c.job_in_flight(), "evicted while its job was out");
    assert_eq!(h.reactor.stats.connections, 1);

    h.step_until("the client to be removed", |h| {
        !h.reactor.clients.contains(k)
    });
    assert_eq!(h.reactor.stats.connections, 0);
}

#[test]
fn a_turn_shares_its_bytes_among_the_clients_it_serves_down_to_a_floor() {
    use super::{TURN_BYTES, WRITE_BUDGET};
    // Alone, a client may move a whole turn's worth: fewer, bigger calls.
    assert_eq!(Reactor::share(0), TURN_BYTES);
    assert_eq!(Reactor::share(1), TURN_BYTES);
    assert_eq!(Reactor::share(2), TURN_BYTES / 2);
    // Busy, each gets the floor, so a turn never waits long on one.
    assert_eq!(Reactor::share(8), WRITE_BUDGET);
    assert_eq!(Reactor::share(10_000), WRITE_BUDGET);
}

/// A server configuration with a fresh self-signed certificate in `dir`,
/// and a client configuration that trusts it.
fn tls_configs(dir: &TempDir) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let identity = crate::tls::Identity::load_or_generate(dir.root(), &["localhost".into()])
        .expect("a self-signed certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.chain[0].clone()).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = crate::tls::server_config(&identity).expect("a server configuration");
    (server, Arc::new(client))
}

/// A TLS client on a blocking-free socket, driven by hand.
struct TlsClient {
    stream: TcpStream,
    key: usize,
    tls: rustls::ClientConnection,
    /// The server's first flight has arrived.
    answered: bool,
}

impl TlsClient {
    /// Writes what the client's TLS has to send (all of it fits a fresh
    /// socket's buffer: a ClientHello, a Finished).
    fn send(&mut self) {
        let mut bytes = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut bytes).expect("to a Vec");
        }
        self.stream
            .write_all(&bytes)
            .expect("write a handshake flight");
    }

    /// Takes what the server sent, answers it; true if anything came.
    fn receive(&mut self) -> bool {
        let mut got = Received::default();
        got.read(&mut self.stream);
        if got.bytes.is_empty() {
            return false;
        }
        let mut bytes = &got.bytes[..];
        while !bytes.is_empty() {
            self.tls.read_tls(&mut bytes).expect("from a slice");
            self.tls
                .process_new_packets()
                .expect("a valid server flight");
        }
        self.answered = true;
        self.send();
        true
    }
}

#[test]
fn a_turn_advances_at_most_its_budget_of_tls_handshakes_and_still_answers_a_plain_client() {
    const CLIENTS: usize = 3 * HANDSHAKES_PER_TURN + 1;
    let certs = TempDir::new("reactor-tls");
    let (server_config, client_config) = tls_configs(&certs);
    let mut h = Harness::start_with(Limits::default(), Some(server_config));
    let tls_addr = h.tls_addr.expect("a TLS listener");
    let (mut plain, plain_key) = h.connect();
    let mut clients: Vec<TlsClient> = (0..CLIENTS)
        .map(|_| {
            let stream = TcpStream::connect(tls_addr).expect("connect");
            let key = h.accepted(&stream);
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
            let tls =
                rustls::ClientConnection::new(Arc::clone(&client_config), name).expect("a client");
            TlsClient {
                stream,
                key,
                tls,
                answered: false,
            }
        })
        .collect();

    // Every ClientHello and a plain echo arrive before one turn runs.
    for c in &mut clients {
        c.send();
    }
    plain
        .write_all(&frame_bytes(json!({"op": "echo", "id": 1}), b"meanwhile"))
        .expect("write the echo");
    let mut sources: Vec<Source> = clients.iter().map(|c| Source::Client(c.key)).collect();
    sources.push(Source::Client(plain_key));
    let batch = h.gather(&sources);
    h.reactor.turn(batch.iter());

    let answered = clients
        .iter_mut()
        .map(|c| c.receive())
        .filter(|&got| got)
        .count();
    assert_eq!(
        answered, HANDSHAKES_PER_TURN,
        "one turn with {CLIENTS} ClientHellos advanced {answered} handshakes"
    );
    let mut plain_got = Received::default();
    plain_got.read(&mut plain);
    assert_eq!(
        plain_got.frames.len(),
        1,
        "the plain client is answered in the same turn"
    );
    assert_eq!(plain_got.frames[0].1, b"meanwhile");
    assert_eq!(
        h.reactor.handshake_queue.len(),
        CLIENTS - HANDSHAKES_PER_TURN
    );

    // The rest are served from the queue, a budget per turn, with no event
    // of their own (their ClientHellos were never read again); every
    // handshake then finishes.
    let give_up = Instant::now() + PATIENCE;
    let mut turns = 1;
    loop {
        let done = clients.iter().all(|c| {
            h.reactor.clients[c.key]
                .tls
                .as_ref()
                .is_some_and(|t| !t.is_handshaking())
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "gave up waiting for the handshakes"
        );
        h.step();
        turns += 1;
        let newly = clients
            .iter_mut()
            .filter(|c| !c.answered)
            .filter_map(|c| c.receive().then_some(()))
            .count();
        assert!(
            newly <= HANDSHAKES_PER_TURN,
            "turn {turns}: {newly} first flights sent, more than the budget"
        );
        for c in clients.iter_mut().filter(|c| c.answered) {
            c.receive(); // tickets after the handshake
        }
    }
    assert!(
        clients
            .iter()
            .all(|c| c.answered && !c.tls.is_handshaking())
    );
    assert!(
        turns >= CLIENTS / HANDSHAKES_PER_TURN,
        "{CLIENTS} handshakes in {turns} turns"
    );
    assert!(h.reactor.handshake_queue.is_empty());
}
