//! Hostile input against exec and the UDP time service: numbers that
//! cannot become a `Duration`, reflection amplification, and daemons that
//! try to outlive their command.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use skiff::client::Client;

use common::{start, start_env};
use testkit::{Server, obj};

/// Reads frames for `id` until its `exit` (or `error`) frame; returns
/// that last frame's header and all `out` bytes.
fn finish(c: &mut Client, id: u64) -> (Map<String, Value>, Vec<u8>) {
    let mut out = Vec::new();
    loop {
        let f = c.recv().expect("a frame within the read timeout");
        assert_eq!(f.header.id.as_ref().and_then(|n| n.as_u64()), Some(id));
        match f.header.op.as_str() {
            "out" => out.extend_from_slice(&f.body),
            "err" => {}
            "exit" | "error" => {
                let mut h = f.header.fields.clone();
                h.insert("op".into(), f.header.op.clone().into());
                return (h, out);
            }
            other => panic!("unexpected {other}"),
        }
    }
}

/// Reads `out` frames of `id` until `want` has arrived.
fn wait_output(c: &mut Client, id: u64, want: &[u8]) {
    let mut out = Vec::new();
    while !out.ends_with(want) {
        let f = c.recv().expect("output within the read timeout");
        assert_eq!(f.header.op, "out", "{:?}", f.header);
        assert_eq!(f.header.id.as_ref().and_then(|n| n.as_u64()), Some(id));
        out.extend_from_slice(&f.body);
    }
}

fn exec_frame(id: u64, cmd: &str, timeout: Option<Value>) -> Map<String, Value> {
    let mut m = obj(json!({"op":"exec","id":id,"cmd":cmd}));
    if let Some(t) = timeout {
        m.insert("timeout".into(), t);
    }
    m
}

// ---- 1. numbers from the client ----------------------------------------

#[test]
fn absurd_timeouts_get_bad_request_or_the_cap_and_the_server_lives() {
    let server = start(&["--exec-max-time", "2s"]);
    let mut c = server.demo_client();
    // Finite but beyond any Duration: clamped to --exec-max-time, not a panic.
    for t in [json!(1e300), json!(f64::MAX), json!(u64::MAX), json!(1e20)] {
        let id = c.next_id();
        c.send(exec_frame(id, "true", Some(t.clone())), b"")
            .unwrap();
        let (h, _) = finish(&mut c, id);
        assert_eq!(h["op"], "exit", "timeout {t}: {h:?}");
        assert_eq!(h["code"], 0, "timeout {t}: {h:?}");
    }
    // The clamp is real: 1e300 s still ends at the 2 s cap.
    let id = c.next_id();
    let start = Instant::now();
    c.send(exec_frame(id, "sleep 30", Some(json!(1e300))), b"")
        .unwrap();
    let (h, _) = finish(&mut c, id);
    assert_eq!(h["signal"], 15, "{h:?}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // Zero, negative, and not a number: refused, with the id, nothing runs.
    for t in [
        json!(0),
        json!(-1),
        json!(-0.5),
        json!(-1e300),
        json!(i64::MIN),
        json!("10"),
        json!(true),
        json!([1]),
        json!({}),
    ] {
        let id = c.next_id();
        c.send(exec_frame(id, "touch ran", Some(t.clone())), b"")
            .unwrap();
        let (h, _) = finish(&mut c, id);
        assert_eq!(h["op"], "error", "timeout {t}: {h:?}");
        assert_eq!(h["code"], "bad_request", "timeout {t}: {h:?}");
        let message = h["message"].as_str().unwrap();
        assert!(message.contains("timeout"), "{message}");
    }
    assert!(!home(&server).join("ran").exists());
    // A tiny positive timeout is a real (immediate) timeout.
    let id = c.next_id();
    c.send(exec_frame(id, "sleep 30", Some(json!(1e-9))), b"")
        .unwrap();
    let (h, _) = finish(&mut c, id);
    assert_eq!(h["op"], "exit", "{h:?}");
    // Extreme ids are just ids.
    for id in [json!(u64::MAX), json!(i64::MIN), json!(0)] {
        let mut m = obj(json!({"op":"exec","cmd":"echo hi"}));
        m.insert("id".into(), id.clone());
        c.send(m, b"").unwrap();
        let f = c.recv().unwrap();
        assert_eq!(f.header.op, "out");
        assert_eq!(json!(f.header.id), id);
        let f = c.recv().unwrap();
        assert_eq!(f.header.op, "exit");
    }
    // Everyone else is still served.
    let mut other = server.client();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"ok").unwrap().body,
        b"ok"
    );
}

// ---- 2. UDP amplification ----------------------------------------------

fn udp_ask(sock: &UdpSocket, to: &str, request: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    // UDP may lose a datagram: a few tries, each with a short timeout.
    for _ in 0..5 {
        sock.send_to(request, to).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

#[test]
fn a_time_reply_is_never_more_than_three_times_its_request_on_the_wire() {
    let server = start(&[]);
    let time = server.listener("udp-time").to_string();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let on_the_wire = |n: usize| n + 28; // IPv4 + UDP headers
    // The amplifier of old: 6 bytes in, 9999 out.
    let reply = udp_ask(&sock, &time, b"%9999Y").expect("a short error");
    assert!(
        reply.starts_with(b"error: "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        on_the_wire(reply.len()) <= 3 * on_the_wire(6),
        "{} bytes",
        reply.len()
    );
    // Long formats of every kind stay within the bound.
    for request in [
        "%c".repeat(500),
        "%4000c".into(),
        "%_9999Y%_9999Y".into(),
        "x".repeat(3000),
        "%c%c%c%c".into(),
    ] {
        if let Some(reply) = udp_ask(&sock, &time, request.as_bytes()) {
            assert!(
                on_the_wire(reply.len()) <= 3 * on_the_wire(request.len()),
                "{} bytes for a {}-byte request",
                reply.len(),
                request.len()
            );
        }
    }
    // Ordinary requests, the empty one included, still get the time.
    let default = udp_ask(&sock, &time, b"").expect("the default format");
    assert_eq!(default.len(), "2026-11-23 05:05:31".len());
    let c = udp_ask(&sock, &time, b"%c").expect("%c");
    assert!(!c.starts_with(b"error"), "{}", String::from_utf8_lossy(&c));
    let x = udp_ask(&sock, &time, "x".repeat(3000).as_bytes()).expect("plain text");
    assert_eq!(x.len(), 3000);
}

// ---- 3. daemons that try to outlive their command -----------------------

fn home(server: &Server) -> PathBuf {
    server.data_dir().join("homes").join("demo")
}

/// The pid a command wrote to `name` in the demo home.
fn pid_in(server: &Server, name: &str) -> u32 {
    let path = home(server).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path:?}: {text:?}"))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (at most 10 s) until `pid` is gone from /proc: dead and reaped.
fn assert_gone(pid: u32, what: &str) {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(10) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Do not leave it running after the test.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what}: daemon {pid} survived 10 s: {stat}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a `setsid` daemon (a new session, so out of the command's group)
/// that writes its pid to `daemon.pid`, then prints `started`.
const SETSID_DAEMON: &str = "setsid sleep 1000 & echo $! > daemon.pid; echo started";
/// The same after a double fork: the daemon is orphaned at once.
const DOUBLE_FORK_DAEMON: &str = "(setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000' \
     </dev/null >/dev/null 2>&1 &); \
     while [ ! -s daemon.pid ]; do sleep 0.01; done; echo started";

fn daemon_ends_with_its_command(server: &Server) {
    let mut c = server.demo_client();
    for (cmd, how) in [
        (SETSID_DAEMON, "setsid"),
        (DOUBLE_FORK_DAEMON, "double fork"),
    ] {
        let id = c.next_id();
        c.send(exec_frame(id, cmd, None), b"").unwrap();
        let (h, out) = finish(&mut c, id);
        assert_eq!(out, b"started\n", "{how}: {h:?}");
        assert_eq!(h["code"], 0, "{how}: {h:?}");
        assert_gone(pid_in(server, "daemon.pid"), how);
    }
}

#[test]
fn a_daemon_ends_with_its_command() {
    daemon_ends_with_its_command(&start(&[]));
}

#[test]
fn a_daemon_ends_with_its_command_without_cgroups() {
    daemon_ends_with_its_command(&start_env(&[], &[("SKIFFD_CGROUPS", "off")]));
}

fn daemon_ends_with_cancel_timeout_and_disconnect(server: &Server) {
    let forever = "setsid sleep 1000 & echo $! > daemon.pid; echo started; sleep 1000";
    // cancel
    let mut c = server.demo_client();
    let id = c.next_id();
    c.send(exec_frame(id, forever, None), b"").unwrap();
    wait_output(&mut c, id, b"started\n");
    let pid = pid_in(server, "daemon.pid");
    assert!(alive(pid));
    c.send(obj(json!({"op":"cancel","id":id})), b"").unwrap();
    let (h, _) = finish(&mut c, id);
    assert_eq!(h["signal"], 15, "{h:?}");
    assert_gone(pid, "cancel");
    // timeout
    let id = c.next_id();
    c.send(exec_frame(id, forever, Some(json!(1))), b"")
        .unwrap();
    wait_output(&mut c, id, b"started\n");
    let pid = pid_in(server, "daemon.pid");
    let (h, _) = finish(&mut c, id);
    assert_eq!(h["signal"], 15, "{h:?}");
    assert_gone(pid, "timeout");
    // the client goes away
    let id = c.next_id();
    c.send(exec_frame(id, forever, None), b"").unwrap();
    wait_output(&mut c, id, b"started\n");
    let pid = pid_in(server, "daemon.pid");
    drop(c);
    assert_gone(pid, "disconnect");
}

#[test]
fn a_daemon_ends_with_cancel_timeout_and_disconnect() {
    daemon_ends_with_cancel_timeout_and_disconnect(&start(&[]));
}

#[test]
fn a_daemon_ends_with_cancel_timeout_and_disconnect_without_cgroups() {
    daemon_ends_with_cancel_timeout_and_disconnect(&start_env(&[], &[("SKIFFD_CGROUPS", "off")]));
}

fn orphans_of_a_running_command_survive_another_ending(server: &Server) {
    let mut long = server.demo_client();
    let id = long.next_id();
    long.send(
        exec_frame(
            id,
            &DOUBLE_FORK_DAEMON.replace("started", "started; sleep 1000"),
            None,
        ),
        b"",
    )
    .unwrap();
    wait_output(&mut long, id, b"started\n");
    let pid = pid_in(server, "daemon.pid");
    // Another command starts and ends while the first still runs: the
    // first one's orphan must survive it (and the sweeps that follow).
    let mut short = server.demo_client();
    let other = short.next_id();
    short.send(exec_frame(other, "true", None), b"").unwrap();
    let (h, _) = finish(&mut short, other);
    assert_eq!(h["code"], 0);
    std::thread::sleep(Duration::from_millis(600));
    assert!(alive(pid), "the orphan of a running command was killed");
    long.send(obj(json!({"op":"cancel","id":id})), b"").unwrap();
    finish(&mut long, id);
    assert_gone(pid, "cancel of the long command");
}

#[test]
fn orphans_of_a_running_command_are_left_alone() {
    orphans_of_a_running_command_survive_another_ending(&start(&[]));
}

#[test]
fn orphans_of_a_running_command_are_left_alone_without_cgroups() {
    orphans_of_a_running_command_survive_another_ending(&start_env(
        &[],
        &[("SKIFFD_CGROUPS", "off")],
    ));
}

#[test]
fn a_bounded_fork_bomb_ends_with_its_timeout() {
    let server = start(&["--exec-max-time", "1s"]);
    let mut c = server.demo_client();
    let id = c.next_id();
    // A sleep length no other process uses, to find the bomb's daemons.
    let token = format!("1000.{}", server.pid());
    // 300 daemons, half of them double-forked, every one out of the
    // command's process group; bounded so that it cannot starve the
    // machine of pids. The 1 s cap ends the command.
    let bomb = format!(
        "i=0; while [ $i -lt 150 ]; do setsid sleep {token} & \
         (setsid sleep {token} </dev/null >/dev/null 2>&1 &); i=$((i+1)); done; \
         echo started; sleep 1000"
    );
    c.send(exec_frame(id, &bomb, None), b"").unwrap();
    let (h, _) = finish(&mut c, id);
    assert_eq!(h["op"], "exit", "{h:?}");
    // Within a bounded wait no daemon is left, and skiffd has reaped them
    // all (a zombie has no command line, so count skiffd's children too).
    let start = Instant::now();
    loop {
        let daemons = processes_running(&["sleep", &token]);
        let children = children_of(server.pid());
        if daemons.is_empty() && children == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            for pid in &daemons {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!(
                "{} daemons and {children} children of skiffd left",
                daemons.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut other = server.client();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"ok").unwrap().body,
        b"ok"
    );
}

/// Pids of the processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// How many processes have `pid` as their parent (zombies included).
fn children_of(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|s| s.split_whitespace().count())
        .sum()
}
