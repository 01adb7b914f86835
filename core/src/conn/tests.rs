//! The framed connection driven in memory: every split of the input,
//! short writes, virtual time, jobs run inline, calls out of order.

use std::rc::Rc;
use std::time::Duration;

use rand::RngExt;
use serde_json::{Number, json};

use skiff::frame::{Decoded, Decoder, Header};
use testkit::{frame_bytes, seeded_rng};

use super::*;
use crate::buffer::SharedFrame;
use crate::ctx::{Action, Submission};
use crate::handlers::Sink;
use crate::limits::PRESSURE_HIGH;
use crate::services::Services;
use crate::stats::Stats;

/// The byte slices the connection offers the socket now (with bodies
/// lent from `input`), as the reactor would write them.
fn transmitted<'a>(conn: &'a mut Conn, input: &'a [u8]) -> Vec<&'a [u8]> {
    match conn.poll_transmit(input) {
        Some(Transmit::Bytes(parts)) => parts.collect(),
        None => Vec::new(),
        Some(other) => panic!("expected bytes, got {other:?}"),
    }
}

/// A connection with virtual time and a peer that reads everything.
struct Harness {
    conn: Conn,
    limits: Limits,
    stats: Stats,
    services: Services,
    actions: Vec<Action>,
    jobs: Vec<Submission>,
    now: Instant,
    received: Vec<u8>,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let now = Instant::now();
        let dir = std::env::temp_dir().join(format!("skiff-conn-test-{}", std::process::id()));
        Harness {
            conn: Conn::new(1, None, now, &limits),
            stats: Stats::new(now),
            services: Services::new(dir.clone(), crate::users::UserDb::load(&dir).unwrap()),
            actions: Vec::new(),
            jobs: Vec::new(),
            limits,
            now,
            received: Vec::new(),
        }
    }

    /// What the reactor does between events: runs the jobs the
    /// connection handed out (inline, as a worker would) and gives it
    /// the turns it is owed.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if let Some(job) = self.jobs.pop() {
                let result = (job.work)();
                self.with(|conn, ctx| conn.handle_job_done(result, ctx));
            } else if self.conn.has_work() {
                self.with(|conn, ctx| conn.start_turn(ctx));
            } else {
                // The turn ends: a partial batch goes to its worker.
                self.with(|conn, ctx| conn.end_turn(ctx));
                if self.jobs.is_empty() {
                    return;
                }
            }
        }
        panic!("the connection never settled");
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
        let mut ctx = Ctx {
            now: self.now,
            limits: &self.limits,
            stats: &mut self.stats,
            services: &mut self.services,
            actions: &mut self.actions,
            jobs: &mut self.jobs,
        };
        f(&mut self.conn, &mut ctx)
    }

    fn tick(&mut self) {
        self.with(|conn, ctx| conn.handle_timeout(ctx));
    }

    /// Bytes arrive; the reactor writes nothing before releasing them.
    fn feed(&mut self, bytes: &[u8]) {
        self.feed_and_drain(bytes, 0);
    }

    /// Bytes arrive and the peer reads up to `max` bytes of the answer
    /// before the input is released, as in the reactor's read loop.
    fn feed_and_drain(&mut self, bytes: &[u8], max: usize) -> usize {
        self.with(|conn, ctx| conn.handle_input(bytes, ctx));
        let mut n = 0;
        for part in transmitted(&mut self.conn, bytes) {
            let take = part.len().min(max - n);
            self.received.extend_from_slice(&part[..take]);
            n += take;
        }
        if n > 0 {
            self.with(|conn, ctx| conn.handle_written(n, ctx));
        }
        self.with(|conn, ctx| conn.release_input(bytes, ctx));
        self.settle();
        n
    }

    /// The peer reads up to `max` bytes.
    fn drain(&mut self, max: usize) -> usize {
        // Bytes only: a file or a pipe is the reactor's to move.
        let part = match self.conn.poll_transmit(&[]) {
            Some(Transmit::Bytes(mut parts)) => parts.next().unwrap_or_default(),
            None => &[],
            Some(_) => return 0,
        };
        let n = part.len().min(max);
        self.received.extend_from_slice(&part[..n]);
        self.with(|conn, ctx| conn.handle_written(n, ctx));
        self.settle();
        n
    }

    fn drain_all(&mut self) {
        while self.drain(usize::MAX) > 0 {}
    }

    /// Decodes every whole frame received so far.
    fn frames(&self) -> Vec<(Header, Vec<u8>)> {
        let mut d = Decoder::new(u64::MAX);
        let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        while let Some((n, what)) = d.decode(&self.received[pos..]).unwrap() {
            pos += n;
            match what {
                Decoded::Header(h) => out.push((h, Vec::new())),
                Decoded::Body(b) => out.last_mut().unwrap().1.extend_from_slice(b),
                Decoded::End => {}
            }
        }
        out
    }
}

fn script() -> Vec<u8> {
    let mut input = Vec::new();
    input.extend(frame_bytes(json!({"op":"hello","id":1}), b""));
    input.extend(frame_bytes(json!({"op":"echo","id":2}), b"sticky"));
    input.extend(frame_bytes(
        json!({"op":"echo","id":3,"upper":true}),
        b"packets \xff!",
    ));
    input.extend(frame_bytes(json!({"op":"nope","id":4}), b"ignored body"));
    input.extend(frame_bytes(json!({"op":"echo","id":5}), b""));
    input.extend(frame_bytes(json!({"op":"echo","id":6}), &big_body()));
    input.extend(frame_bytes(
        json!({"op":"echo","id":7}),
        &big_body()[1000..],
    ));
    input.extend(frame_bytes(
        json!({"op":"echo","id":8}),
        b"after the big ones",
    ));
    input
}

/// Big enough to be lent rather than copied when it arrives whole.
fn big_body() -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8).collect()
}

fn check_script_replies(frames: &[(Header, Vec<u8>)]) {
    let ids: Vec<_> = frames
        .iter()
        .map(|(h, _)| h.id.clone().unwrap().as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(frames[0].0.op, "ok");
    assert_eq!(frames[0].0.u64("proto"), Some(1));
    assert_eq!(frames[1].1, b"sticky");
    assert_eq!(frames[2].1, b"PACKETS \xff!");
    assert_eq!(frames[3].0.str("code"), Some("unknown_op"));
    assert_eq!((frames[4].0.op.as_str(), frames[4].1.len()), ("ok", 0));
    assert_eq!(frames[5].1, big_body());
    assert_eq!(frames[6].1, big_body()[1000..]);
    assert_eq!(frames[7].1, b"after the big ones");
}

#[test]
fn one_byte_at_a_time() {
    let mut h = Harness::new(Limits::default());
    for b in script() {
        h.feed(&[b]);
        h.drain(1);
    }
    h.drain_all();
    check_script_replies(&h.frames());
    assert!(!h.conn.is_closing());
}

#[test]
fn random_splits_and_short_writes() {
    let mut rng = seeded_rng("random_splits_and_short_writes");
    let input = script();
    for _ in 0..200 {
        let mut h = Harness::new(Limits::default());
        let mut pos = 0;
        while pos < input.len() {
            let n = rng.random_range(1..=input.len() - pos);
            // Short writes both while a body may be lent and after.
            h.feed_and_drain(&input[pos..pos + n], rng.random_range(0..5000));
            pos += n;
            h.drain(rng.random_range(0..64));
        }
        h.drain_all();
        check_script_replies(&h.frames());
    }
}

/// Random echo traffic (plain and upper, 0 B to 40 KB, so some bodies
/// are lent and some copied), cut at random, with a peer that reads a
/// random amount while input may be lent and after, and a small
/// high-water mark so backpressure comes and goes: every reply comes
/// back whole and in order.
#[test]
fn random_echo_traffic_survives_any_cuts_and_reads() {
    let mut rng = seeded_rng("random_echo_traffic_survives_any_cuts_and_reads");
    for _ in 0..25 {
        let limits = Limits {
            out_high: 8 << 10,
            out_low: 2 << 10,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        let mut input = Vec::new();
        let mut want = Vec::new();
        for i in 0..40u32 {
            let len = [0, 7, 1023, 1024, 3000, 40_000][rng.random_range(0..6)];
            let body: Vec<u8> = (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect();
            let upper = rng.random_range(0..3) == 0;
            input.extend(frame_bytes(
                json!({"op":"echo","id":i,"upper":upper}),
                &body,
            ));
            want.push(if upper {
                body.to_ascii_uppercase()
            } else {
                body
            });
        }
        let mut pos = 0;
        let mut rounds = 0;
        while pos < input.len() || !h.conn.output().is_empty() {
            rounds += 1;
            assert!(rounds < 100_000);
            if h.conn.wants_read(&h.limits) && pos < input.len() {
                let n = rng.random_range(1..=(input.len() - pos).min(70_000));
                h.feed_and_drain(&input[pos..pos + n], rng.random_range(0..20_000));
                pos += n;
            }
            h.drain(rng.random_range(0..20_000));
        }
        let frames = h.frames();
        assert_eq!(frames.len(), want.len());
        for (i, ((hd, body), want)) in frames.iter().zip(&want).enumerate() {
            assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
            assert!(body == want, "reply {i} differs ({} bytes)", want.len());
        }
    }
}

#[test]
fn a_thousand_pipelined_frames_in_one_read() {
    let mut h = Harness::new(Limits::default());
    let mut input = Vec::new();
    for i in 0..1000u32 {
        input.extend(frame_bytes(
            json!({"op":"echo","id":i}),
            format!("m{i}").as_bytes(),
        ));
    }
    h.feed(&input);
    h.drain_all();
    let frames = h.frames();
    assert_eq!(frames.len(), 1000);
    for (i, (hd, body)) in frames.iter().enumerate() {
        assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
        assert_eq!(body, format!("m{i}").as_bytes());
    }
}

#[test]
fn a_big_echo_body_is_written_from_the_input_not_copied() {
    let mut h = Harness::new(Limits::default());
    let input = frame_bytes(json!({"op":"echo","id":1}), &[b'z'; 16 << 10]);
    h.with(|conn, ctx| conn.handle_input(&input, ctx));
    assert!(
        h.conn.buffered_bytes() < 1024,
        "{}",
        h.conn.buffered_bytes()
    );
    let parts = transmitted(&mut h.conn, &input);
    let [queued, lent] = parts[..] else {
        panic!("{} parts", parts.len())
    };
    // The reply header is queued; the body is the request's own bytes.
    assert!(queued.len() < 64, "queued {} bytes", queued.len());
    assert_eq!(lent.len(), 16 << 10);
    assert_eq!(lent.as_ptr(), input[input.len() - (16 << 10)..].as_ptr());
    // The socket takes the header and part of the body; the rest is
    // copied when the input is released.
    let n = queued.len() + 1000;
    h.received.extend_from_slice(queued);
    h.received.extend_from_slice(&lent[..1000]);
    h.with(|conn, ctx| conn.handle_written(n, ctx));
    h.with(|conn, ctx| conn.release_input(&input, ctx));
    assert_eq!(h.conn.output().len(), (16 << 10) - 1000);
    h.drain_all();
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1, vec![b'z'; 16 << 10]);
    assert_eq!(h.conn.buffered_bytes(), 0);
}

#[test]
fn pipelined_big_echoes_keep_their_order() {
    let mut h = Harness::new(Limits::default());
    let mut input = Vec::new();
    for i in 0..5u8 {
        input.extend(frame_bytes(
            json!({"op":"echo","id":i}),
            &vec![b'a' + i; 2000 + i as usize],
        ));
    }
    h.with(|conn, ctx| conn.handle_input(&input, ctx));
    // Reply header, lent body, five times over: nothing copied.
    let parts = transmitted(&mut h.conn, &input);
    assert_eq!(parts.len(), 10);
    for (i, body) in parts.iter().skip(1).step_by(2).enumerate() {
        let within = body.as_ptr() as usize - input.as_ptr() as usize;
        assert_eq!(&input[within..within + body.len()], *body);
        assert_eq!(body.len(), 2000 + i);
    }
    // The socket takes 3000 bytes (into the second body); the rest is
    // kept in order when the input is released.
    let mut taken = 0;
    for part in &parts {
        let n = part.len().min(3000 - taken);
        h.received.extend_from_slice(&part[..n]);
        taken += n;
    }
    h.with(|conn, ctx| conn.handle_written(3000, ctx));
    h.with(|conn, ctx| conn.release_input(&input, ctx));
    h.drain_all();
    let frames = h.frames();
    assert_eq!(frames.len(), 5);
    for (i, (hd, body)) in frames.iter().enumerate() {
        assert_eq!(hd.id.as_ref().unwrap().as_u64(), Some(i as u64));
        assert_eq!(body, &vec![b'a' + i as u8; 2000 + i]);
    }
}

/// Feeds a 1 MiB upper-case echo in 64 KiB reads for as long as the
/// connection wants input; nobody reads the answer.
fn fill_until_paused(h: &mut Harness) -> usize {
    let input = frame_bytes(
        json!({"op":"echo","id":1,"upper":true}),
        &vec![b'a'; 1 << 20],
    );
    let mut pos = 0;
    while pos < input.len() && h.conn.wants_read(&h.limits) {
        let n = (64 << 10).min(input.len() - pos);
        h.feed(&input[pos..pos + n]);
        pos += n;
    }
    h.conn.output().len()
}

#[test]
fn server_wide_pressure_lowers_the_high_water_mark() {
    let mut calm = Harness::new(Limits::default());
    assert!(fill_until_paused(&mut calm) >= 256 << 10);
    let mut pressed = Harness::new(Limits::default());
    pressed.stats.buffered = Limits::default().out_total / 2 + 1;
    let queued = fill_until_paused(&mut pressed);
    assert!(
        (PRESSURE_HIGH..=(64 << 10) + 64).contains(&queued),
        "{queued} bytes queued under pressure"
    );
    // Once the pressure is gone and the peer reads, it all flows.
    pressed.stats.buffered = 0;
    pressed.drain_all();
    assert!(pressed.conn.wants_read(&pressed.limits));
}

#[test]
fn backpressure_bounds_memory_for_a_peer_that_never_reads() {
    backpressure_bounds_memory(true);
}

#[test]
fn backpressure_bounds_memory_with_lent_echo_bodies() {
    backpressure_bounds_memory(false);
}

fn backpressure_bounds_memory(upper: bool) {
    let limits = Limits {
        out_high: 64 << 10,
        out_low: 16 << 10,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    let body = vec![b'a'; 16 << 20];
    let mut input = frame_bytes(json!({"op":"echo","id":1,"upper":upper}), &body);
    input.extend(frame_bytes(json!({"op":"echo","id":2}), b"after"));
    // The "socket" delivers 64 KiB at a time, but only while the
    // connection asks for more, as the reactor does.
    let mut pos = 0;
    while pos < input.len() && h.conn.wants_read(&h.limits) {
        let n = (64 << 10).min(input.len() - pos);
        h.feed(&input[pos..pos + n]);
        pos += n;
    }
    assert!(
        pos < 1 << 20,
        "read {pos} bytes from a peer that does not read"
    );
    assert!(
        h.conn.buffered_bytes() < 512 << 10,
        "holds {}",
        h.conn.buffered_bytes()
    );
    // Now the peer reads; everything flows and arrives intact.
    let mut rounds = 0;
    while pos < input.len() || !h.conn.output().is_empty() {
        rounds += 1;
        assert!(rounds < 100_000);
        if h.conn.wants_read(&h.limits) && pos < input.len() {
            let n = (64 << 10).min(input.len() - pos);
            h.feed_and_drain(&input[pos..pos + n], 16 << 10);
            pos += n;
        }
        h.drain(32 << 10);
        assert!(h.conn.buffered_bytes() < 512 << 10);
    }
    let frames = h.frames();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].1.len(), 16 << 20);
    let want = if upper { b'A' } else { b'a' };
    assert!(frames[0].1.iter().all(|&b| b == want));
    assert_eq!(frames[1].1, b"after");
}

#[test]
fn bad_frames_get_bad_frame_and_close() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 0],
        vec![0, 1, 0, 1],
        [&[0, 0, 0, 5][..], b"{nope"].concat(),
        [&[0, 0, 0, 2][..], b"[]"].concat(),
        [&[0, 0, 0, 2][..], b"{}"].concat(),
        [&[0, 0, 0, 23][..], br#"{"op":"echo","size":-1}"#].concat(),
        frame_bytes(json!({"op":"echo","size":0}), b"")
            .into_iter()
            .chain(frame_bytes(json!({"op":"echo"}), &[0; 11]))
            .collect(),
    ];
    for (i, case) in cases.iter().enumerate() {
        let limits = Limits {
            max_body: 10,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        h.feed(case);
        h.feed(&frame_bytes(json!({"op":"echo","id":9}), b"never"));
        h.drain_all();
        let frames = h.frames();
        let last = frames.last().unwrap();
        assert_eq!(last.0.str("code"), Some("bad_frame"), "case {i}");
        assert!(!last.0.str("message").unwrap().is_empty());
        assert!(h.conn.is_done(), "case {i}");
        assert!(
            frames
                .iter()
                .all(|(hd, _)| hd.id.is_none() || hd.op != "ok" || hd.id != Some(9.into()))
        );
    }
}

#[test]
fn unknown_op_and_bad_id_keep_the_connection() {
    let mut h = Harness::new(Limits::default());
    h.feed(&frame_bytes(json!({"op":"frobnicate","id":1}), b"xyz"));
    h.feed(&frame_bytes(json!({"op":"echo","id":"one"}), b"xyz"));
    h.feed(&frame_bytes(json!({"op":"echo","id":3}), b"ok"));
    h.drain_all();
    let f = h.frames();
    assert_eq!(f[0].0.str("code"), Some("unknown_op"));
    assert_eq!(f[1].0.str("code"), Some("bad_request"));
    assert_eq!(f[2].1, b"ok");
    assert!(!h.conn.is_closing());
}

#[test]
fn bye_flushes_then_closes() {
    let mut h = Harness::new(Limits::default());
    let mut input = frame_bytes(json!({"op":"echo","id":1}), b"a");
    input.extend(frame_bytes(json!({"op":"bye","id":2}), b""));
    input.extend(frame_bytes(json!({"op":"echo","id":3}), b"b"));
    h.feed(&input);
    assert!(h.conn.is_closing() && !h.conn.is_done());
    h.drain_all();
    let f = h.frames();
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[1].0.op.as_str(), f[1].0.id.clone()),
        ("ok", Some(2.into()))
    );
    assert!(h.conn.is_done());
}

#[test]
fn eof_after_pipelined_requests_answers_them_all() {
    let mut h = Harness::new(Limits::default());
    h.feed(&script());
    h.with(|conn, ctx| conn.handle_eof(ctx));
    assert!(h.conn.is_closing());
    h.drain_all();
    check_script_replies(&h.frames());
    assert!(h.conn.is_done());
}

#[test]
fn idle_timeout_on_virtual_time() {
    let mut h = Harness::new(Limits::default());
    h.feed(&frame_bytes(json!({"op":"echo","id":1}), b"x")[..7]);
    let deadline = h.conn.deadline(&h.limits);
    assert_eq!(deadline, Some(h.now + Duration::from_secs(300)));
    h.now += Duration::from_secs(299);
    h.tick();
    assert!(!h.conn.is_closing());
    h.now += Duration::from_secs(2);
    h.tick();
    assert!(h.conn.is_closing());
    h.drain_all();
    assert_eq!(h.frames()[0].0.str("code"), Some("timeout"));
    assert!(h.conn.is_done());
}

#[test]
fn idle_timeout_mid_body_closes_without_a_frame_inside_the_body() {
    let mut h = Harness::new(Limits::default());
    let whole = frame_bytes(json!({"op":"echo","id":1}), b"0123456789");
    h.feed(&whole[..whole.len() - 7]); // header and 3 of 10 body bytes
    h.now += Duration::from_secs(301);
    h.tick();
    assert!(h.conn.is_closing());
    h.drain_all();
    // exactly the reply header and the 3 echoed bytes: nothing else
    let mut expect = Vec::new();
    skiff::frame::HeaderWriter::new(&mut expect, "ok")
        .field("id", 1)
        .field("size", 10)
        .finish();
    expect.extend_from_slice(b"012");
    assert_eq!(h.received, expect);
}

#[test]
fn command_output_never_lands_inside_another_reply() {
    let mut h = Harness::new(Limits::default());
    let whole = frame_bytes(json!({"op":"echo","id":1}), b"0123456789");
    h.feed(&whole[..whole.len() - 5]); // echo reply is half written
    let id = serde_json::Number::from(7);
    h.conn.exec_output(&id, "out", b"from the command");
    h.conn.exec_exit(&id, Some(0), None);
    h.drain_all();
    h.feed(&whole[whole.len() - 5..]);
    h.conn.exec_output(&id, "err", b"direct"); // at a boundary now
    h.drain_all();
    let frames = h.frames();
    let ops: Vec<_> = frames.iter().map(|(hd, _)| hd.op.as_str()).collect();
    assert_eq!(ops, ["ok", "out", "exit", "err"]);
    assert_eq!(frames[0].1, b"0123456789");
    assert_eq!(frames[1].1, b"from the command");
    assert_eq!(frames[3].1, b"direct");
}

#[test]
fn an_idle_connection_is_small() {
    // The aim is under 1 KiB of server memory per idle client;
    // this is the state machine's share of it (the reactor adds its
    // Client wrapper, the kernel the socket).
    assert!(
        std::mem::size_of::<Conn>() <= 400,
        "Conn is {} bytes",
        std::mem::size_of::<Conn>()
    );
}

/// A `msg` frame from `demo`, shared through the harness's counter.
fn shared_msg(h: &Harness, body: &[u8]) -> Rc<SharedFrame> {
    let mut frame = Vec::new();
    skiff::frame::HeaderWriter::new(&mut frame, "msg")
        .field("from", "demo")
        .field("size", body.len())
        .finish();
    frame.extend_from_slice(body);
    SharedFrame::new(frame, &h.stats.shared)
}

#[test]
fn a_message_header_alone_reserves_nothing_and_its_bytes_count() {
    let mut h = Harness::new(Limits::default());
    // Logged in as demo, who is in the user list (a session whose
    // user is not is ended at its next request).
    h.services.users.add("demo", "pw", None, false).unwrap();
    let hash = h.services.users.get("demo").unwrap().hash.clone();
    h.conn.session.user = Some("demo".into());
    h.conn.session.login_hash = Some(hash.into_boxed_str());
    let size = 64 << 10;
    let whole = frame_bytes(json!({"op":"say","id":1,"to":"*"}), &vec![b'm'; size]);
    let head = whole.len() - size;
    h.feed(&whole[..head]);
    let State::Body {
        sink: Sink::Message { body, .. },
        ..
    } = &h.conn.state
    else {
        panic!("not collecting a message: {}", h.conn.state.name());
    };
    assert_eq!(body.capacity(), 0, "reserved before any byte arrived");
    // What arrives is held, and counted in the buffer budget.
    h.feed(&whole[head..head + 1000]);
    let held = h.conn.buffered_bytes();
    assert!((1000..4096).contains(&held), "{held} bytes counted");
    h.feed(&whole[head + 1000..]);
    h.drain_all();
    assert_eq!(h.frames()[0].0.op, "ok");
    assert_eq!(h.actions.len(), 1);
    assert_eq!(h.conn.buffered_bytes(), 0);
}

#[test]
fn a_shared_message_waits_for_a_frame_boundary_and_is_counted_once() {
    let mut h = Harness::new(Limits::default());
    let body = vec![b's'; 5000];
    let msg = shared_msg(&h, &body);
    let msg_len = msg.len();
    assert_eq!(h.stats.shared.get(), msg_len);
    // An echo reply is half sent: the message must wait for its end.
    let echo = frame_bytes(json!({"op":"echo","id":1,"upper":true}), &[b'e'; 3000]);
    h.feed(&echo[..echo.len() - 1000]);
    h.conn.push_message(&msg, h.now, &Limits::default());
    h.drain(700);
    // A second message arrives between frames; it goes by reference.
    h.feed(&echo[echo.len() - 1000..]);
    h.conn.push_message(&msg, h.now, &Limits::default());
    h.feed(&frame_bytes(json!({"op":"echo","id":2}), b"after"));
    // Held twice, by reference: counted once, outside the connection.
    assert!(h.conn.buffered_bytes() < 4096 + 1000);
    assert!(h.conn.output().len() <= msg_len);
    drop(msg);
    assert_eq!(h.stats.shared.get(), msg_len);
    for step in [1, 10, 100, 100_000] {
        h.drain(step);
    }
    h.drain_all();
    let frames = h.frames();
    let ops: Vec<_> = frames.iter().map(|(hd, _)| hd.op.as_str()).collect();
    assert_eq!(ops, ["ok", "msg", "msg", "ok"]);
    assert_eq!(frames[0].1, vec![b'E'; 3000]);
    assert_eq!(frames[1].1, body);
    assert_eq!(frames[2].1, body);
    assert_eq!(frames[3].1, b"after");
    assert_eq!(h.stats.shared.get(), 0, "the last reference is gone");
    assert_eq!(h.conn.buffered_bytes(), 0);
}

#[test]
fn idle_connection_holds_no_buffers() {
    let mut h = Harness::new(Limits::default());
    for i in 0..10 {
        h.feed(&frame_bytes(json!({"op":"echo","id":i}), &[b'x'; 4000]));
        h.drain_all();
    }
    assert_eq!(h.conn.buffered_bytes(), 0);
}

/// A harness whose data dir has user `alice` (password `pw`, 1 MiB
/// quota), logged in, with `hello.txt` in her home.
fn logged_in() -> Harness {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-conn-jobs-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut users = crate::users::UserDb::load(&dir).unwrap();
    users.add("alice", "pw", Some(1 << 20), false).unwrap();
    users.save().unwrap();
    crate::users::create_home(&dir, "alice").unwrap();
    std::fs::write(dir.join("homes/alice/hello.txt"), b"hello").unwrap();
    let mut h = Harness::new(Limits::default());
    h.services = Services::new(dir.clone(), crate::users::UserDb::load(&dir).unwrap());
    h.feed(&frame_bytes(
        json!({"op":"login","id":0,"user":"alice","password":"pw"}),
        b"",
    ));
    h.drain_all();
    assert_eq!(h.frames()[0].0.op, "ok", "login");
    h.received.clear();
    h
}

/// Feeds bytes without running the jobs they start.
fn feed_only(h: &mut Harness, bytes: &[u8]) {
    h.with(|conn, ctx| conn.handle_input(bytes, ctx));
    h.with(|conn, ctx| conn.release_input(bytes, ctx));
}

#[test]
fn every_op_that_touches_the_disk_waits_for_a_job() {
    let mut h = logged_in();
    let body = b"uploaded";
    let md5 = crate::services::digests::hex(&<md5::Md5 as md5::Digest>::digest(body).into());
    let requests = [
        json!({"op":"cd","id":1,"path":"/"}),
        json!({"op":"ls","id":2}),
        json!({"op":"mkdir","id":3,"path":"d"}),
        json!({"op":"get","id":4,"path":"hello.txt"}),
        json!({"op":"rm","id":5,"path":"d"}),
        json!({"op":"put","id":6,"path":"up.txt","length":body.len(),"md5":md5}),
    ];
    for (i, request) in requests.iter().enumerate() {
        feed_only(&mut h, &frame_bytes(request.clone(), b""));
        // Nothing answered and nothing more read until the job is back.
        assert!(
            h.conn.output().is_empty(),
            "{request}: answered on the loop"
        );
        assert_eq!(h.jobs.len(), 1, "{request}: no job");
        assert!(!h.conn.wants_read(&h.limits), "{request}: still reading");
        h.settle();
        // No sendfile here: the body is copied through the buffer.
        h.conn.handle_zero_copy_refused();
        h.settle();
        h.drain_all();
        let frames = h.frames();
        assert_eq!(frames.len(), i + 1, "{request}");
        assert_eq!(frames[i].0.op, "ok", "{request}: {:?}", frames[i].0);
    }
    // The upload's last step (fsync and rename) is a job as well.
    feed_only(&mut h, &frame_bytes(json!({"op":"data","id":6}), body));
    assert!(h.conn.output().is_empty(), "stored on the loop");
    assert_eq!(h.jobs.len(), 1);
    h.settle();
    h.drain_all();
    let frames = h.frames();
    assert_eq!(frames.last().unwrap().0.str("md5"), Some(md5.as_str()));
    assert_eq!(
        std::fs::read(h.services.data_dir.join("homes/alice/up.txt")).unwrap(),
        body
    );
}

#[test]
fn a_file_copied_through_the_buffer_is_read_by_workers_never_on_the_loop() {
    let mut h = logged_in();
    let big: Vec<u8> = (0..3 * h.limits.out_high + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(h.services.data_dir.join("homes/alice/big.bin"), &big).unwrap();
    feed_only(
        &mut h,
        &frame_bytes(json!({"op":"get","id":1,"path":"big.bin"}), b""),
    );
    h.settle(); // opening and hashing: the reply header is queued
    // As under TLS: no sendfile, every byte goes through the buffer.
    h.conn.handle_zero_copy_refused();
    let mut reads = 0;
    // Where each buffer-full sits in memory when it joins the output.
    let mut batches = Vec::new();
    for _ in 0..1000 {
        if h.conn.has_work() {
            let before = h.conn.output().len();
            h.with(|conn, ctx| conn.start_turn(ctx));
            assert_eq!(h.conn.output().len(), before, "the loop read the file");
            assert_eq!(h.jobs.len(), 1, "a turn hands out one read");
            assert!(h.conn.job_in_flight());
        }
        if let Some(job) = h.jobs.pop() {
            reads += 1;
            let result = (job.work)();
            h.with(|conn, ctx| conn.handle_job_done(result, ctx));
            assert!(h.conn.output().len() <= h.limits.out_high + 1024);
            batches.push(h.conn.output().as_ptr() as usize);
        }
        // The socket takes everything queued.
        while let Some(Transmit::Bytes(parts)) = h.conn.poll_transmit(&[]) {
            let bytes: Vec<u8> = parts.flatten().copied().collect();
            h.received.extend_from_slice(&bytes);
            h.with(|conn, ctx| conn.handle_written(bytes.len(), ctx));
        }
        if h.conn.has_work() && reads > 0 {
            // Drained, and more to read: the buffer waits for the next
            // buffer-full, and counts against the server's budget.
            assert!(h.conn.buffered_bytes() >= h.limits.out_high);
        }
        if !h.conn.has_work() && h.jobs.is_empty() && !h.conn.job_in_flight() {
            break;
        }
    }
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].1 == big, "the body came back changed");
    assert_eq!(reads, 4, "a buffer-full per read");
    assert!(
        batches.iter().all(|&at| at == batches[0]),
        "every buffer-full reuses the first one's allocation: {batches:x?}"
    );
    // The connection takes requests again.
    feed_only(&mut h, &frame_bytes(json!({"op":"pwd","id":2}), b""));
    h.drain_all();
    assert_eq!(h.frames().len(), 2);
}

#[test]
fn a_job_in_flight_holds_back_later_requests_and_a_close() {
    let mut h = logged_in();
    let mut bytes = frame_bytes(json!({"op":"ls","id":1}), b"");
    bytes.extend(frame_bytes(json!({"op":"echo","id":2}), b"after"));
    feed_only(&mut h, &bytes);
    h.with(|conn, ctx| conn.handle_eof(ctx));
    // The peer is gone, but the job's result must still come back.
    assert!(h.conn.job_in_flight());
    assert!(!h.conn.is_done());
    h.settle();
    h.drain_all();
    let frames = h.frames();
    let ids: Vec<_> = frames.iter().map(|(hd, _)| hd.id.clone()).collect();
    assert_eq!(ids, [Some(1.into()), Some(2.into())]);
    assert_eq!(frames[1].1, b"after");
    assert!(h.conn.is_done());
}

#[test]
fn a_pipeline_is_decoded_a_share_per_turn() {
    let mut h = Harness::new(Limits::default());
    let mut bytes = Vec::new();
    for i in 0..100 {
        bytes.extend(frame_bytes(json!({"op":"echo","id":i}), b"x"));
    }
    h.with(|conn, ctx| {
        conn.start_turn(ctx);
        conn.handle_input(&bytes, ctx);
        conn.release_input(&bytes, ctx);
    });
    assert_eq!(h.stats.requests, u64::from(MAX_REQUESTS_PER_TURN));
    assert!(h.conn.has_work(), "owed another turn");
    assert!(!h.conn.wants_read(&h.limits), "its share is used up");
    h.settle();
    h.drain_all();
    assert_eq!(h.frames().len(), 100);
}

/// Random requests, some valid and many not, with hostile numbers and
/// paths, through a logged-in connection with a real data dir. The
/// connection must answer each one (by id) and never panic.
#[test]
fn random_requests_with_hostile_fields_are_all_answered() {
    let mut rng = seeded_rng("random_requests_with_hostile_fields_are_all_answered");
    let ops = [
        "pwd", "cd", "ls", "mkdir", "rm", "quota", "get", "put", "data", "say", "stats", "hello",
        "echo", "login", "nope",
    ];
    let values = [
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("."),
        json!(".."),
        json!("/"),
        json!("../../etc/passwd"),
        json!("hello.txt"),
        json!("d/../../x"),
        json!("a\u{0}b"),
        json!("x".repeat(5000)),
        json!(null),
        json!(true),
        json!([1, 2]),
        json!({"k": "v"}),
        json!("0123456789abcdef0123456789abcdef"),
    ];
    let fields = [
        "path", "offset", "length", "md5", "to", "upper", "user", "password", "discard",
    ];
    let mut h = logged_in();
    let mut sent = 0;
    for i in 0..600u64 {
        let op = ops[rng.random_range(0..ops.len())];
        let mut header = json!({"op": op, "id": i});
        for _ in 0..rng.random_range(0..4) {
            let f = fields[rng.random_range(0..fields.len())];
            header[f] = values[rng.random_range(0..values.len())].clone();
        }
        let body: Vec<u8> = if op == "echo" || rng.random_range(0..4) == 0 {
            vec![b'z'; rng.random_range(0..64)]
        } else {
            Vec::new()
        };
        let bytes = frame_bytes(header, &body);
        // Arrives in random pieces.
        let mut at = 0;
        while at < bytes.len() {
            let n = rng.random_range(1..=bytes.len() - at);
            h.feed(&bytes[at..at + n]);
            at += n;
        }
        // No sendfile in memory: a `get` body is copied instead.
        h.conn.handle_zero_copy_refused();
        h.settle();
        h.drain_all();
        sent += 1;
        if h.conn.is_closing() {
            break;
        }
    }
    let frames = h.frames();
    let replies = frames.iter().filter(|(hd, _)| hd.id.is_some()).count();
    println!("{sent} requests, {replies} replies");
    if h.conn.is_closing() {
        let last = &frames.last().unwrap().0;
        assert_eq!(last.str("code"), Some("bad_frame"));
    } else {
        assert_eq!(replies, sent, "every request answered");
    }
}

#[test]
fn an_upload_fed_like_the_reactor_reads_lands_whole() {
    // 2 MiB in 64 KiB reads, four a turn: the last batch fills with
    // the body's last byte, so the body's end is decoded only after
    // that batch's job is back.
    let mut h = logged_in();
    let body = vec![1u8; 2 << 20];
    if let Some(account) = &h.conn.session.account {
        account.borrow_mut().quota = None;
    }
    let md5 = crate::services::digests::hex(&<md5::Md5 as md5::Digest>::digest(&body).into());
    h.feed(&frame_bytes(
        json!({"op":"put","id":7,"path":"big.bin","length":body.len(),"md5":md5}),
        b"",
    ));
    h.drain_all();
    h.received.clear();
    // The header alone, as a client that writes it first is read.
    let full = frame_bytes(json!({"op":"data","id":7}), &body);
    let head = full.len() - body.len();
    feed_only(&mut h, &full[..head]);
    let mut bytes = full[head..].to_vec();
    // Turns of up to four 64 KiB reads, as the reactor does; the
    // socket is read only while the connection wants it.
    for _ in 0..10_000 {
        if bytes.is_empty() && h.jobs.is_empty() {
            break;
        }
        h.with(|conn, ctx| conn.start_turn(ctx));
        for _ in 0..4 {
            if bytes.is_empty() || !h.conn.wants_read(&h.limits) {
                break;
            }
            let n = bytes.len().min(64 << 10);
            let read: Vec<u8> = bytes.drain(..n).collect();
            feed_only(&mut h, &read);
        }
        h.with(|conn, ctx| conn.end_turn(ctx));
        while let Some(job) = h.jobs.pop() {
            let result = (job.work)();
            h.with(|conn, ctx| conn.handle_job_done(result, ctx));
        }
    }
    h.drain_all();
    let frames = h.frames();
    assert_eq!(
        frames.last().map(|f| f.0.op.clone()),
        Some("ok".into()),
        "{frames:?}"
    );
    assert_eq!(frames.last().unwrap().0.str("md5"), Some(md5.as_str()));
}

#[test]
fn a_share_used_up_exactly_still_owes_a_turn() {
    // The turn's last request ends exactly where the read ended: the
    // socket may hold the rest of the pipeline, and no new edge will
    // say so, so the connection must still ask for another turn.
    let mut h = Harness::new(Limits::default());
    let mut bytes = Vec::new();
    for i in 0..MAX_REQUESTS_PER_TURN {
        bytes.extend(frame_bytes(json!({"op":"echo","id":i}), b"x"));
    }
    h.with(|conn, ctx| {
        conn.start_turn(ctx);
        conn.handle_input(&bytes, ctx);
        conn.release_input(&bytes, ctx);
    });
    assert!(!h.conn.wants_read(&h.limits));
    assert!(h.conn.has_work(), "no turn owed: the pipeline would hang");
}

#[test]
fn a_close_decided_during_a_job_survives_the_next_step() {
    // get of an unhashed file: open, then hash. A shutdown during the
    // first job must still close after the second.
    let mut h = logged_in();
    feed_only(
        &mut h,
        &frame_bytes(json!({"op":"get","id":1,"path":"hello.txt"}), b""),
    );
    assert_eq!(h.jobs.len(), 1);
    h.conn.shut_down();
    let open = h.jobs.pop().unwrap();
    let result = (open.work)();
    h.with(|conn, ctx| conn.handle_job_done(result, ctx));
    assert!(h.conn.job_in_flight(), "the hash is the next step");
    assert!(h.conn.is_closing());
    h.settle();
    h.conn.handle_zero_copy_refused();
    h.settle();
    h.drain_all();
    assert!(h.conn.is_done(), "the close was lost on the way");
}

/// An echo whose 16 KiB body is lent from `input`, after `handle_input`.
fn lending(h: &mut Harness) -> Vec<u8> {
    let input = frame_bytes(json!({"op":"echo","id":1}), &[b'z'; 16 << 10]);
    h.with(|conn, ctx| conn.handle_input(&input, ctx));
    assert_eq!(transmitted(&mut h.conn, &input).len(), 2, "lent");
    input
}

#[test]
fn asking_for_output_without_the_lent_input_gets_nothing_until_released() {
    let mut h = Harness::new(Limits::default());
    let input = lending(&mut h);
    assert!(h.conn.poll_transmit(&[]).is_none());
    assert!(h.conn.poll_transmit(&input[..100]).is_none());
    h.with(|conn, ctx| conn.release_input(&input, ctx));
    h.drain_all();
    assert_eq!(h.frames()[0].1, vec![b'z'; 16 << 10]);
    assert!(!h.conn.is_closing());
}

#[test]
fn input_before_the_lent_input_is_released_closes_without_output() {
    let mut h = Harness::new(Limits::default());
    let input = lending(&mut h);
    let next = frame_bytes(json!({"op":"echo","id":2}), b"x");
    h.with(|conn, ctx| conn.handle_input(&next, ctx));
    assert!(h.conn.is_done(), "the stream cannot be completed");
    assert!(h.conn.poll_transmit(&input).is_none());
    // Later calls are ignored.
    h.with(|conn, ctx| conn.release_input(&input, ctx));
    h.with(|conn, ctx| conn.handle_input(&next, ctx));
    assert!(h.conn.is_done() && h.received.is_empty());
}

#[test]
fn releasing_other_bytes_than_the_lent_input_closes_without_output() {
    let mut h = Harness::new(Limits::default());
    lending(&mut h);
    h.with(|conn, ctx| conn.release_input(&[], ctx));
    assert!(h.conn.is_done());
    assert_eq!(h.conn.buffered_bytes(), 0);
}

#[test]
fn more_written_than_offered_counts_as_all_of_it() {
    let mut h = Harness::new(Limits::default());
    let input = lending(&mut h);
    h.with(|conn, ctx| conn.handle_written(usize::MAX, ctx));
    h.with(|conn, ctx| conn.release_input(&input, ctx));
    assert!(h.conn.poll_transmit(&[]).is_none());
    h.feed(&frame_bytes(json!({"op":"echo","id":2}), b"ok"));
    h.drain_all();
    let frames = h.frames();
    assert_eq!(frames.len(), 1, "the first reply counted as sent");
    assert_eq!(frames[0].1, b"ok");
}

#[test]
fn stray_job_results_and_early_timeouts_change_nothing() {
    let mut h = Harness::new(Limits::default());
    h.with(|conn, ctx| conn.handle_job_done(Box::new(7u32), ctx));
    h.with(|conn, ctx| conn.handle_job_refused(ctx));
    h.tick();
    assert!(!h.conn.is_closing() && !h.conn.job_in_flight());
    assert!(
        h.conn.poll_transmit(&[]).is_none(),
        "no reply to a stray result"
    );
    h.feed(&frame_bytes(json!({"op":"echo","id":1}), b"still here"));
    h.drain_all();
    assert_eq!(h.frames()[0].1, b"still here");
}

#[test]
fn a_pipe_that_ends_before_its_frame_closes_the_connection() {
    let mut h = Harness::new(Limits::default());
    let id = Number::from(9);
    assert!(h.conn.can_splice());
    h.conn
        .begin_splice(&id, "out", 100, 3, crate::command::Fd::Stdout);
    h.drain_all(); // the frame's header
    match h.conn.poll_transmit(&[]) {
        Some(Transmit::Pipe { child, fd, len }) => {
            assert_eq!((child, fd, len), (3, crate::command::Fd::Stdout, 100));
        }
        other => panic!("expected the pipe, got {other:?}"),
    }
    h.with(|conn, ctx| conn.handle_written(40, ctx));
    assert!(h.conn.splicing_from(3) && !h.conn.is_closing());
    h.with(|conn, ctx| conn.handle_written(0, ctx));
    assert!(
        h.conn.is_done(),
        "60 bytes short: the stream is out of sync"
    );
    assert!(!h.conn.splicing_from(3));
}

/// What the reactor's `sendfile` would do with the file on offer: move up
/// to `max` bytes from the file's offset into `received`. The offer's
/// offset, length and `warmed` come back too.
fn sendfile(h: &mut Harness, max: u64) -> Option<(u64, u64, bool)> {
    use std::io::{Read, Seek};
    let Some(Transmit::File {
        file,
        offset,
        len,
        warmed,
    }) = h.conn.poll_transmit(&[])
    else {
        return None;
    };
    let mut file = file;
    assert_eq!(
        file.stream_position().unwrap(),
        offset,
        "offset is not the file's"
    );
    let mut buf = vec![0u8; len.min(max) as usize];
    file.read_exact(&mut buf).unwrap();
    h.received.extend_from_slice(&buf);
    h.with(|conn, ctx| conn.handle_written(buf.len(), ctx));
    Some((offset, len, warmed))
}

#[test]
fn a_file_not_in_the_page_cache_is_read_in_by_a_worker_before_sendfile() {
    use crate::warm::WINDOW;
    const MIB: u64 = 1 << 20;
    let mut h = logged_in();
    let size = 2 * WINDOW + 123;
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(h.services.data_dir.join("homes/alice/big.bin"), &big).unwrap();
    feed_only(
        &mut h,
        &frame_bytes(json!({"op":"get","id":1,"path":"big.bin"}), b""),
    );
    h.settle(); // open and hash
    h.drain_all(); // the reply header
    // A first MiB the kernel says is cached goes by sendfile.
    assert_eq!(sendfile(&mut h, MIB), Some((0, size, false)));
    assert!(h.jobs.is_empty());
    // Reports that do not match the file on offer are ignored.
    h.with(|conn, ctx| conn.handle_file_not_cached(0, MIB, ctx));
    h.with(|conn, ctx| conn.handle_file_not_cached(MIB, 0, ctx));
    assert!(h.jobs.is_empty() && !h.conn.job_in_flight());
    // The next MiB is not cached: a job, and nothing on offer meanwhile.
    h.with(|conn, ctx| conn.handle_file_not_cached(MIB, MIB, ctx));
    assert_eq!(h.jobs.len(), 1);
    assert_eq!(h.jobs[0].name, "warm for get");
    assert!(h.conn.job_in_flight());
    assert!(
        h.conn.poll_transmit(&[]).is_none(),
        "sent while the job is out"
    );
    assert!(!h.conn.wants_read(&h.limits));
    assert_eq!(h.stats.warmed_windows, 1);
    let job = h.jobs.pop().unwrap();
    let result = (job.work)();
    h.with(|conn, ctx| conn.handle_job_done(result, ctx));
    // The window the job read is offered whole, as warmed.
    assert_eq!(sendfile(&mut h, 3 * MIB), Some((MIB, WINDOW, true)));
    // Its last MiB was evicted meanwhile, say: that window is read in
    // again, and offered again.
    h.with(|conn, ctx| conn.handle_file_not_cached(4 * MIB, MIB, ctx));
    assert_eq!(h.jobs.len(), 1);
    let job = h.jobs.pop().unwrap();
    let result = (job.work)();
    h.with(|conn, ctx| conn.handle_job_done(result, ctx));
    assert_eq!(sendfile(&mut h, 3 * MIB), Some((4 * MIB, WINDOW, true)));
    assert_eq!(sendfile(&mut h, 3 * MIB), Some((7 * MIB, MIB, true)));
    // The window is sent and the file is cold: the next job goes out at
    // once, without a report.
    assert_eq!(h.jobs.len(), 1, "the next window is not warmed");
    assert!(h.conn.poll_transmit(&[]).is_none());
    let mut jobs = 2;
    loop {
        while let Some(job) = h.jobs.pop() {
            jobs += 1;
            let result = (job.work)();
            h.with(|conn, ctx| conn.handle_job_done(result, ctx));
        }
        match sendfile(&mut h, 3 * MIB) {
            Some((_, _, warmed)) => assert!(warmed),
            None => break,
        }
    }
    // Windows at 1 MiB, at 4 MiB again, and at 8 MiB for the last 123 bytes.
    assert_eq!(jobs, 3);
    assert_eq!(h.stats.warmed_windows, 3);
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].1 == big, "the body came back changed");
    // The connection takes requests again.
    feed_only(&mut h, &frame_bytes(json!({"op":"pwd","id":2}), b""));
    h.drain_all();
    assert_eq!(h.frames().len(), 2);
}

#[test]
fn a_file_that_shrinks_before_its_window_is_warmed_closes_the_stream() {
    let mut h = logged_in();
    let path = h.services.data_dir.join("homes/alice/big.bin");
    std::fs::write(&path, vec![5u8; 300_000]).unwrap();
    feed_only(
        &mut h,
        &frame_bytes(json!({"op":"get","id":1,"path":"big.bin"}), b""),
    );
    h.settle();
    h.drain_all();
    h.with(|conn, ctx| conn.handle_file_not_cached(0, 300_000, ctx));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let job = h.jobs.pop().unwrap();
    let result = (job.work)();
    h.with(|conn, ctx| conn.handle_job_done(result, ctx));
    assert!(h.conn.is_closing(), "a short body would desync the stream");
    assert!(h.conn.poll_transmit(&[]).is_none());
    assert!(h.conn.is_done());
}
