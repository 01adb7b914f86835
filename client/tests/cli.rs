//! End to end: a real `skiffd` on ephemeral ports, driven by the `skiff`
//! binary as a user would run it.
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`. Setting `SKIFFD` to another executable tests the client
//! against that server instead (it must take the same arguments and print
//! the same `listening ...` lines).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{skiff_command, skiffd, success_stdout};
use testkit::{Server, data_dir_with_users, run};

/// How long one `skiff` run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// A user every server has (`stats` needs a login), and its password.
const USER: &str = "tester";
const PASSWORD: &str = "tester-password";

/// Creates [`USER`], then starts skiffd on port 0 everywhere.
fn start() -> Server {
    let bin = skiffd();
    let dir = data_dir_with_users(&bin, &[&[USER]], PASSWORD, RUN_LIMIT);
    Server::serve(
        &bin,
        dir,
        &[
            "--udp-time",
            "127.0.0.1:0",
            "--udp-echo",
            "127.0.0.1:0",
            "--raw-echo",
            "127.0.0.1:0",
        ],
    )
}

/// Runs `skiff` with `args` and `stdin`, bounded by [`RUN_LIMIT`]; the
/// password of [`USER`] is in SKIFF_PASSWORD.
fn skiff(args: &[&str], stdin: &[u8]) -> Output {
    run(&mut skiff_command(args, Some(PASSWORD)), stdin, RUN_LIMIT)
}

/// Runs `skiff`, asserts success, and returns stdout as text.
fn ok(args: &[&str]) -> String {
    ok_with_stdin(args, b"")
}

/// [`ok`] with input on stdin.
fn ok_with_stdin(args: &[&str], stdin: &[u8]) -> String {
    success_stdout(args, skiff(args, stdin))
}

#[test]
fn hello_reports_the_protocol() {
    let server = start();
    let out = ok(&["--addr", &server.framed, "hello"]);
    assert!(out.contains("proto: 1\n"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("server: ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("version: ")), "{out}");
    let ops = out
        .lines()
        .find_map(|l| l.strip_prefix("ops: "))
        .unwrap_or_else(|| panic!("no ops line: {out}"));
    let ops: Vec<&str> = ops.split_whitespace().collect();
    for op in ["hello", "echo", "stats"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
}

#[test]
fn echo_prints_the_body_and_a_newline() {
    let server = start();
    let addr = &server.framed;
    assert_eq!(
        ok(&["--addr", addr, "echo", "hello, World"]),
        "hello, World\n"
    );
    assert_eq!(
        ok(&["--addr", addr, "echo", "--upper", "hello,", "World 1é"]),
        "HELLO, WORLD 1é\n"
    );
    // Text that looks like an option still goes through after `--`.
    assert_eq!(ok(&["--addr", addr, "echo", "--", "-n"]), "-n\n");
}

#[test]
fn address_comes_from_the_environment_too() {
    let server = start();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["echo", "via env"])
        .env("SKIFF_ADDR", &server.framed)
        .stdin(Stdio::null())
        .output()
        .expect("run skiff");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"via env\n");
}

#[test]
fn time_and_udp_echo() {
    let server = start();
    let udp = server.listener("udp-time");
    let year = Command::new("date").arg("+%Y").output().expect("run date");
    let year = String::from_utf8_lossy(&year.stdout).trim().to_string();
    assert_eq!(
        ok(&["time", "%Y", "--udp", udp]).trim_end_matches('\n'),
        year
    );
    // Default format: %Y-%m-%d %H:%M:%S.
    let now = ok(&["time", "--udp", udp]);
    let now = now.trim_end_matches('\n');
    assert_eq!(now.len(), 19, "{now:?}");
    assert_eq!(&now[4..5], "-", "{now:?}");
    assert_eq!(&now[13..14], ":", "{now:?}");

    // A format the service refuses is a failure, said on stderr.
    let bad = skiff(&["time", "%Q", "--udp", udp], b"");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(bad.stdout.is_empty(), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad_format"),
        "{bad:?}"
    );

    let echo = server.listener("udp-echo");
    assert_eq!(
        ok(&["udp-echo", "--udp", echo, "ping", "pong"]),
        "ping pong\n"
    );
}

/// Without `--udp`, `time` and `udp-echo` ask the host of `--addr` (or
/// SKIFF_ADDR) on the services' usual ports, 9998 and 9997. A stand-in
/// answers there on 127.0.0.77, a loopback address nothing else uses, so
/// a reply can only come if skiff took the host from `--addr`.
#[test]
fn udp_services_default_to_the_host_of_the_server_address() {
    let host = "127.0.0.77";
    let bind = |port: u16| {
        let sock = std::net::UdpSocket::bind((host, port)).unwrap_or_else(|e| {
            panic!("cannot bind {host}:{port} for the stand-in service ({e}); is something bound to 0.0.0.0:{port}?")
        });
        sock.set_read_timeout(Some(RUN_LIMIT)).expect("timeout");
        sock
    };
    let (time, echo) = (bind(9998), bind(9997));
    // Each answers one datagram with its own name, then ends.
    let answer = |sock: std::net::UdpSocket, name: &'static str| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        })
    };
    let time = answer(time, "stand-in time");
    let echo = answer(echo, "stand-in echo");
    // No framed server is needed: the UDP commands never dial it.
    let addr = format!("{host}:1");
    assert_eq!(ok(&["--addr", &addr, "time", "%Y"]), "stand-in time\n");
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["udp-echo", "ping"])
        .env("SKIFF_ADDR", &addr)
        .stdin(Stdio::null())
        .output()
        .expect("run skiff");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"stand-in echo\n");
    time.join().unwrap();
    echo.join().unwrap();
}

#[test]
fn stats_pretty_and_json() {
    let server = start();
    let addr = &server.framed;
    // Without a login the server refuses, and says why.
    let out = skiff(&["--addr", addr, "stats"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: auth_required: "),
        "{out:?}"
    );
    let pretty = ok(&["--addr", addr, "--user", USER, "stats"]);
    for key in [
        "connections",
        "uptime_s",
        "bytes_in",
        "bytes_out",
        "children",
    ] {
        assert!(
            pretty.lines().any(|l| l.starts_with(&format!("{key}: "))),
            "{key} missing: {pretty}"
        );
    }
    let json = ok(&["--addr", addr, "--user", USER, "stats", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("stats --json is JSON");
    // This very request's connection is open while the server counts.
    let connections = value["connections"].as_u64();
    assert!(connections.is_some_and(|n| n >= 1), "{json}");
}

#[test]
fn shell_reads_commands_from_a_pipe() {
    let server = start();
    let out = ok_with_stdin(
        &["--addr", &server.framed, "shell"],
        b"echo hi\necho --upper 'a  b'\nquit\necho never\n",
    );
    assert_eq!(out, "hi\nA  B\n");

    let out = ok_with_stdin(
        &[
            "--addr",
            &server.framed,
            "shell",
            "--udp",
            server.listener("udp-time"),
        ],
        b"hello\n\n# a comment\ntime %Y\nhelp\n",
    );
    assert!(out.contains("proto: 1\n"), "{out}");
    assert!(out.contains("quit"), "help lists quit: {out}");
}

#[test]
fn shell_reports_errors_and_keeps_going() {
    let server = start();
    let out = skiff(
        &["--addr", &server.framed, "shell"],
        b"frobnicate\necho still here\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("frobnicate"), "{stderr}");
    assert!(stderr.contains("help"), "hint at help: {stderr}");
    assert_eq!(out.stdout, b"still here\n");
    // The status is that of the last command, which succeeded.
    assert!(out.status.success());

    let out = skiff(&["--addr", &server.framed, "shell"], b"bogus\n");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn closed_port_is_a_clear_connection_error() {
    // Bind then drop a listener: the port is now (almost surely) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = skiff(&["--addr", &addr, "hello"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: connection: "), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = skiff(&["--addr", "no-port", "hello"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn usage_errors_exit_2() {
    let out = skiff(&["echo"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = skiff(&["no-such-command"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        for word in ["ls", "put", "swarm", "addr", "password-stdin"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let page = ok(&["man"]);
    assert!(page.contains(".TH skiff 1"), "{page}");
    assert!(page.contains("completions"), "{page}");
    assert_eq!(skiff(&["completions", "tcsh"], b"").status.code(), Some(2));
}

#[test]
fn a_port_that_is_not_skiffd_says_so() {
    // A stand-in that answers anything with an HTTP error, as a web
    // server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let http = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = skiff(&["--addr", &addr, "hello"], b"");
    http.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is this skiffd's framed port?"), "{err}");
}
