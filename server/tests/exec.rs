//! End-to-end tests of exec: streaming output, exit codes, stdin, cancel,
//! timeouts, daemons, backpressure, limits.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::Client;

use common::start;
use testkit::{Server, TempDir, obj};

/// What one command sent back.
#[derive(Debug, Default)]
struct Run {
    out: Vec<u8>,
    err: Vec<u8>,
    code: Option<i64>,
    signal: Option<i64>,
    frames: Vec<String>,
}

/// Reads frames for `id` until its exit frame.
fn collect(c: &mut Client, id: u64) -> Run {
    let mut run = Run::default();
    loop {
        let f = c.recv().expect("frame");
        assert_eq!(
            f.header.id.as_ref().and_then(|n| n.as_u64()),
            Some(id),
            "{:?}",
            f.header
        );
        run.frames.push(f.header.op.clone());
        match f.header.op.as_str() {
            "out" => run.out.extend_from_slice(&f.body),
            "err" => run.err.extend_from_slice(&f.body),
            "exit" => {
                run.code = f.header.fields.get("code").and_then(Value::as_i64);
                run.signal = f.header.fields.get("signal").and_then(Value::as_i64);
                return run;
            }
            "error" => panic!("error: {:?}", f.header),
            other => panic!("unexpected {other}"),
        }
    }
}

fn exec(c: &mut Client, cmd: &str) -> Run {
    let id = c.next_id();
    c.send(obj(json!({"op":"exec","id":id,"cmd":cmd})), b"")
        .unwrap();
    collect(c, id)
}

fn demo(server: &Server) -> Client {
    server.demo_client()
}

#[test]
fn a_relative_data_dir_gives_commands_an_absolute_home() {
    let dir = TempDir::new("relative");
    let args: Vec<String> = ["serve", "--data-dir", "data", "--listen", "127.0.0.1:0"]
        .into_iter()
        .map(str::to_string)
        .collect();
    let server = common::start_in(&args, dir);
    let mut c = demo(&server);
    let home = server.dir().join("data/homes/demo").canonicalize().unwrap();
    let r = exec(&mut c, "cd && pwd && echo x > ~/f && cat ~/f");
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        format!("{}\nx\n", home.display()),
        "stderr: {}",
        String::from_utf8_lossy(&r.err)
    );
    assert_eq!(r.code, Some(0));
    assert_eq!(std::fs::read(home.join("f")).unwrap(), b"x\n");
}

#[test]
fn output_streams_and_exit_codes_arrive() {
    let server = start(&[]);
    let mut c = demo(&server);
    let r = exec(&mut c, "echo hello; echo oops >&2; exit 3");
    assert_eq!(r.out, b"hello\n");
    assert_eq!(r.err, b"oops\n");
    assert_eq!(r.code, Some(3));
    assert_eq!(r.signal, None);
    // no output at all: just exit (the tutorials' first wall)
    let r = exec(&mut c, "true");
    assert_eq!(r.frames, ["exit"]);
    assert_eq!(r.code, Some(0));
    // large output arrives whole and in order (the third wall)
    let r = exec(&mut c, "seq 1 200000");
    let expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert!(r.out == expected.as_bytes(), "{} bytes", r.out.len());
    // runs in the home, with a clean environment
    let r = exec(&mut c, "pwd; echo $USER; env | wc -l");
    let text = String::from_utf8(r.out).unwrap();
    assert!(
        text.contains("homes/demo\n") && text.contains("\ndemo\n"),
        "{text}"
    );
}

#[test]
fn stdin_is_fed_and_closed() {
    let server = start(&[]);
    let mut c = demo(&server);
    let id = c.next_id();
    c.send(
        obj(json!({"op":"exec","id":id,"cmd":"tr a-z A-Z; echo done"})),
        b"",
    )
    .unwrap();
    c.send(obj(json!({"op":"stdin","id":id})), b"abc ").unwrap();
    c.send(obj(json!({"op":"stdin","id":id,"eof":true})), b"xyz\n")
        .unwrap();
    let r = collect(&mut c, id);
    assert_eq!(r.out, b"ABC XYZ\ndone\n");
    // unknown ids
    let f = c.request(json!({"op":"stdin","id":999}), b"x");
    assert_eq!(f.unwrap_err().code(), Some("not_found"));
    let f = c.request(json!({"op":"cancel","id":998}), b"");
    assert_eq!(f.unwrap_err().code(), Some("not_found"));
}

#[test]
fn cancel_and_timeout_end_the_group() {
    let server = start(&[]);
    let mut c = demo(&server);
    let id = c.next_id();
    c.send(
        obj(json!({"op":"exec","id":id,"cmd":"sleep 30 & sleep 30; echo never"})),
        b"",
    )
    .unwrap();
    // the loop stays responsive meanwhile
    let mut other = server.client();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"x").unwrap().body,
        b"x"
    );
    let start = Instant::now();
    c.send(obj(json!({"op":"cancel","id":id})), b"").unwrap();
    let r = collect(&mut c, id);
    assert_eq!(r.signal, Some(15), "{r:?}");
    assert!(r.out.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
    // a command that ignores SIGTERM gets SIGKILL after the grace
    let id = c.next_id();
    c.send(
        obj(json!({"op":"exec","id":id,"cmd":"trap '' TERM; sleep 30","timeout":0.3})),
        b"",
    )
    .unwrap();
    let r = collect(&mut c, id);
    assert_eq!(r.signal, Some(9), "{r:?}");
}

#[test]
fn a_daemon_holding_the_pipes_does_not_hang_the_session() {
    let server = start(&[]);
    let mut c = demo(&server);
    let start = Instant::now();
    let r = exec(&mut c, "sleep 20 & echo started");
    assert_eq!(r.out, b"started\n");
    assert_eq!(r.code, Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // a command that closes stdout and keeps running still ends normally
    let r = exec(&mut c, "exec >&- 2>&-; sleep 0.2");
    assert_eq!(r.code, Some(0));
}

#[test]
fn a_client_that_does_not_read_stalls_the_command_not_the_server() {
    let server = start(&["--out-high-water", "64K"]);
    let mut c = demo(&server);
    let id = c.next_id();
    c.send(obj(json!({"op":"exec","id":id,"cmd":"yes"})), b"")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stats = server.stats();
    let rss = stats["rss_bytes"].as_u64().unwrap();
    assert!(rss < 32 << 20, "server RSS {rss} while yes runs unread");
    let mut other = server.client();
    let t = Instant::now();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"still").unwrap().body,
        b"still"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // the bytes that did arrive are intact
    let f = c.recv().unwrap();
    assert_eq!(f.header.op, "out");
    assert!(f.body.chunks(2).all(|p| p == b"y\n" || p == b"y"));
    c.send(obj(json!({"op":"cancel","id":id})), b"").unwrap();
}

#[test]
fn rights_and_limits() {
    let server = start(&["--exec-per-conn", "2"]);
    let mut c = server.client();
    assert_eq!(
        c.request(json!({"op":"exec","cmd":"true"}), b"")
            .unwrap_err()
            .code(),
        Some("auth_required")
    );
    let mut c = demo(&server);
    for id in [101, 102] {
        c.send(obj(json!({"op":"exec","id":id,"cmd":"sleep 5"})), b"")
            .unwrap();
    }
    let f = c.request(json!({"op":"exec","cmd":"true"}), b"");
    assert_eq!(f.unwrap_err().code(), Some("too_busy"));
    c.send(obj(json!({"op":"exec","id":101,"cmd":"true"})), b"")
        .unwrap();
    assert_eq!(
        c.recv().unwrap().header.str("code"),
        Some("bad_request"),
        "a running id cannot be reused"
    );
    let f = c.request(json!({"op":"exec"}), b"");
    assert_eq!(f.unwrap_err().code(), Some("bad_request"));
    drop(c); // takes its commands with it
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if server.stats()["children"].as_u64() == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "commands outlived their client");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_quiet_command_outlives_the_idle_timeout() {
    let server = start(&["--idle-timeout", "300ms"]);
    let mut c = demo(&server);
    let r = exec(&mut c, "sleep 1; echo done");
    assert_eq!(r.out, b"done\n");
    assert_eq!(r.code, Some(0));
}

#[test]
fn a_command_that_cannot_start_gets_an_error_with_its_id() {
    let server = start(&[]);
    let mut c = demo(&server);
    c.request(json!({"op":"mkdir","path":"gone"}), b"").unwrap();
    c.request(json!({"op":"cd","path":"gone"}), b"").unwrap();
    let mut other = demo(&server);
    other
        .request(json!({"op":"rm","path":"/gone"}), b"")
        .unwrap();
    c.send(obj(json!({"op":"exec","id":41,"cmd":"true"})), b"")
        .unwrap();
    let f = c.recv().unwrap();
    assert_eq!(
        (f.header.op.as_str(), f.header.str("code")),
        ("error", Some("io")),
        "{:?}",
        f.header
    );
    assert_eq!(f.header.id.as_ref().and_then(|n| n.as_u64()), Some(41));
    // the id is free again and the session still works
    c.request(json!({"op":"cd","path":"/"}), b"").unwrap();
    assert_eq!(exec(&mut c, "echo ok").out, b"ok\n");
}

#[test]
fn a_flood_of_exec_requests_meets_the_server_wide_limit() {
    let server = start(&["--exec-max", "3", "--exec-per-conn", "8"]);
    let mut a = demo(&server);
    let mut b = demo(&server);
    for id in 1..=2 {
        a.send(obj(json!({"op":"exec","id":id,"cmd":"sleep 3"})), b"")
            .unwrap();
    }
    // a's two are running before b floods (they may arrive in two reads)
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats()["children"].as_u64() != Some(2) {
        assert!(Instant::now() < deadline, "a's commands never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // b floods: one fits, the rest are refused with too_busy, each by id
    for id in 10..20 {
        b.send(obj(json!({"op":"exec","id":id,"cmd":"sleep 3"})), b"")
            .unwrap();
    }
    let mut refused = Vec::new();
    while refused.len() < 9 {
        let f = b.recv().unwrap();
        assert_eq!(f.header.str("code"), Some("too_busy"), "{:?}", f.header);
        refused.push(f.header.id.unwrap().as_u64().unwrap());
    }
    assert_eq!(refused.len(), 9);
    assert_eq!(server.stats()["children"].as_u64(), Some(3));
    // and the loop is still quick for everyone
    let t = Instant::now();
    assert_eq!(
        server
            .client()
            .request(json!({"op":"echo"}), b"x")
            .unwrap()
            .body,
        b"x"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_stalled_stream_cancelled_then_drained_ends_with_its_exit_frame() {
    let server = start(&["--out-high-water", "64K"]);
    let mut c = demo(&server);
    let id = c.next_id();
    c.send(obj(json!({"op":"exec","id":id,"cmd":"yes"})), b"")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200)); // stalled: nobody reads
    c.send(obj(json!({"op":"cancel","id":id})), b"").unwrap();
    std::thread::sleep(Duration::from_millis(800)); // past the drain grace
    let start = Instant::now();
    let r = collect(&mut c, id); // reads out frames until exit (10 s read timeout)
    assert_eq!(r.signal, Some(15), "{:?}", r.frames.last());
    assert!(r.out.chunks(2).all(|p| p == b"y\n" || p == b"y"));
    assert!(start.elapsed() < Duration::from_secs(5));
    // and the server was not spinning meanwhile: it still answers at once
    let t = Instant::now();
    assert_eq!(
        server
            .client()
            .request(json!({"op":"echo"}), b"x")
            .unwrap()
            .body,
        b"x"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}
