//! End to end: `skiff swarm` against a real `skiffd` on an ephemeral
//! loopback port. Each run is a couple of seconds: the swarm stops itself.
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`.

mod common;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use skiff::client::Client;

use common::{skiff_command, skiffd_beside_skiff};
use testkit::{Server, TempDir, md5_hex, run};

/// How long one swarm run may take before the test fails (a 2 s run plus
/// its bounded drain and two stats samples is far below this).
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Starts the skiffd next to `skiff` (never `$SKIFFD`) with extra `serve`
/// arguments, on a fresh data dir: it creates `demo`.
fn start_with(extra: &[&str]) -> Server {
    Server::serve(&skiffd_beside_skiff(), TempDir::new("data"), extra)
}

/// Runs `skiff --addr ADDR swarm ARGS`, bounded by [`RUN_LIMIT`].
fn swarm(addr: &str, args: &[&str]) -> Output {
    swarm_as(addr, args, None)
}

/// [`swarm`] with `SKIFF_PASSWORD` set to `password`.
fn swarm_as(addr: &str, args: &[&str], password: Option<&str>) -> Output {
    let mut all = vec!["--addr", addr, "swarm"];
    all.extend_from_slice(args);
    run(&mut skiff_command(&all, password), b"", RUN_LIMIT)
}

/// The `--json` report of a run, with stderr in the panic message.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn closed_loop_fifty_connections_without_errors() {
    let server = start_with(&[]);
    let out = swarm(
        &server.framed,
        &["--conns", "50", "--duration", "2s", "--json"],
    );
    let r = report(&out);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["conns_max_up"], 50, "{r}");
    assert_eq!(r["connect_us"]["samples"], 50, "{r}");
    assert!(r["latency_us"]["p99"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
}

#[test]
fn over_tls_every_connection_shakes_hands_and_every_reply_is_checked() {
    let server = start_with(&["--tls-listen", "127.0.0.1:0"]);
    let known = TempDir::new("swarm-known");
    let known_hosts = known.str("known_hosts");
    let addr = format!("tls://{}", server.listener("tls"));
    let password = server.demo_password.clone().unwrap();
    let out = run(
        &mut skiff_command(
            &[
                "--known-hosts",
                &known_hosts,
                "--addr",
                &addr,
                "swarm",
                "--conns",
                "20",
                "--duration",
                "2s",
                "--login",
                "demo",
                "--mix",
                "echo:64=3,echo:100K=1",
                "--json",
            ],
            Some(&password),
        ),
        b"",
        RUN_LIMIT,
    );
    let r = report(&out);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["tls_handshakes"], 20, "{r}");
    assert_eq!(r["tls_handshake_us"]["samples"], 20, "{r}");
    assert!(r["tls_handshakes_per_s"].as_f64().unwrap() > 0.0, "{r}");
    // The run pinned the certificate as any command would.
    let pins = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(pins.contains(server.listener("tls")), "{pins}");
    // A plain run has no TLS figures.
    let plain = report(&swarm(
        &server.framed,
        &["--conns", "2", "--duration", "1s", "--json"],
    ));
    assert_eq!(plain["tls_handshakes"], Value::Null, "{plain}");
}

#[test]
fn open_loop_keeps_its_rate() {
    let server = start_with(&[]);
    let out = swarm(
        &server.framed,
        &[
            "--conns",
            "20",
            "--duration",
            "2s",
            "--rate",
            "500",
            "--pipeline",
            "2",
            "--mix",
            "echo:16=3,echo:4K=1",
            "--json",
        ],
    );
    let r = report(&out);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["mode"], "open", "{r}");
    // 500/s for 2 s is 1000 requests; the schedule neither races ahead nor
    // (on an idle loopback server) falls far behind
    let n = r["requests"].as_u64().unwrap();
    assert!((900..=1001).contains(&n), "{n} requests: {r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
}

#[test]
fn logged_in_mix_of_echo_get_and_exec() {
    let server = start_with(&[]);
    let password = server
        .demo_password
        .clone()
        .expect("a fresh start creates demo");
    // a file to fetch, uploaded as the protocol says: put, then data
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let md5 = md5_hex(&data);
    let mut c = Client::connect(&server.framed).expect("connect");
    c.request(json!({"op":"login","user":"demo","password":password}), b"")
        .expect("login");
    let put = json!({"op":"put","id":1,"path":"/f","length":data.len(),"md5":md5});
    let Value::Object(put) = put else {
        unreachable!()
    };
    c.send(put, b"").expect("send put");
    let ok = c
        .recv()
        .expect("put reply")
        .into_result()
        .expect("put accepted");
    assert_eq!(ok.header.u64("offset"), Some(0));
    let Value::Object(frame) = json!({"op":"data","id":1}) else {
        unreachable!()
    };
    c.send(frame, &data).expect("send data");
    c.recv()
        .expect("data reply")
        .into_result()
        .expect("upload stored");

    let out = swarm_as(
        &server.framed,
        &[
            "--conns",
            "10",
            "--duration",
            "1s",
            "--pipeline",
            "2",
            // The global --user logs in just as --login does.
            "--user",
            "demo",
            "--mix",
            "echo:64=3,get:/f=1,exec:true=1",
            "--json",
        ],
        Some(&password),
    );
    let r = report(&out);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
    // Each op of the mix has its own latency, and together they are all.
    let by_op = r["latency_us_by_op"].as_array().expect("a list");
    let ops: Vec<&str> = by_op.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["echo:64", "get:/f", "exec:true"], "{r}");
    let samples: Vec<u64> = by_op
        .iter()
        .map(|o| o["latency_us"]["samples"].as_u64().unwrap_or(0))
        .collect();
    assert!(samples.iter().all(|&n| n > 0), "{r}");
    assert_eq!(
        samples.iter().sum::<u64>(),
        r["requests"].as_u64().unwrap(),
        "{r}"
    );

    // Two different users is a usage error, not a silent pick.
    let out = swarm_as(
        &server.framed,
        &["--user", "demo", "--login", "other", "--duration", "1s"],
        Some(&password),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--login other and --user demo"), "{err}");

    // a wrong password fails every login, and says so
    let out = swarm_as(
        &server.framed,
        &[
            "--conns",
            "3",
            "--duration",
            "300ms",
            "--login",
            "demo",
            "--json",
        ],
        Some("not the password"),
    );
    let r = report(&out);
    assert_eq!(r["errors_by_kind"]["login_auth_failed"], 3, "{r}");
    assert_eq!(out.status.code(), Some(1), "{r}");
}

/// The text report for one connection says so in the singular, and a
/// mix of one op has no per-op lines.
#[test]
fn text_report_for_one_connection() {
    let server = start_with(&[]);
    let out = swarm(&server.framed, &["--conns", "1", "--duration", "300ms"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": 1 connection (1 up at most)"), "{text}");
    assert!(!text.contains("  echo:64  "), "{text}");
}

#[test]
fn unix_socket_target() {
    let dir = TempDir::new("sock");
    let sock = dir.str("skiffd.sock");
    let sock = sock.as_str();
    let server = start_with(&["--unix", sock]);
    let out = swarm(
        &format!("unix:{sock}"),
        &[
            "--conns",
            "10",
            "--duration",
            "1s",
            "--pipeline",
            "4",
            "--json",
        ],
    );
    let r = report(&out);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
    drop(server);
}

#[test]
fn a_refused_connect_is_an_error_and_exit_code_1() {
    // a port that was free a moment ago: nothing listens there now
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = swarm(
        &format!("127.0.0.1:{port}"),
        &["--conns", "3", "--duration", "300ms", "--json"],
    );
    let r = report(&out);
    assert_eq!(r["errors_by_kind"]["connect_refused"], 3, "{r}");
    assert_eq!(r["requests"], 0, "{r}");
    assert_eq!(out.status.code(), Some(1), "{r}");
}

#[test]
fn bad_options_are_refused_up_front() {
    let out = swarm("127.0.0.1:1", &["--mix", "echo:64=9,get:/f=1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--login"), "{err}");
    // --password-stdin (a global flag) with nothing on stdin: no password.
    let out = swarm("127.0.0.1:1", &["--login", "ann", "--password-stdin"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("standard input is empty"), "{err}");
    let out = swarm("127.0.0.1:1", &["--duration", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--duration must be longer than 0"), "{err}");
    let out = swarm("127.0.0.1:1", &["--ramp", "3s", "--duration", "2s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ramp"));
}
