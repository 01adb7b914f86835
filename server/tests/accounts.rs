//! Sessions follow `skiffd user del` and `skiffd user passwd` on a
//! running server: the sessions that lost their right are told why and
//! closed, others go on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use skiff::client::Client;

use common::{USER_LIMIT, add_user, skiffd, start_prepared};
use testkit::{Server, assert_closed, roundtrip, run};

fn alice_and_bob() -> Server {
    start_prepared(|data| {
        add_user(data, "alice", "alice pw", &["--exec"]);
        add_user(data, "bob", "bob pw", &[]);
    })
}

fn logged_in(server: &Server, user: &str, password: &str) -> Client {
    testkit::login(&server.framed, user, password).0
}

/// `skiffd user ARGS... --data-dir DATA`, with `stdin`, asserting success.
fn user_cmd(data: &Path, args: &[&str], stdin: &str) {
    let mut command = Command::new(skiffd());
    command.arg("user").args(args).arg("--data-dir").arg(data);
    let out = run(&mut command, stdin.as_bytes(), USER_LIMIT);
    assert!(
        out.status.success(),
        "skiffd user {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_deleted_users_idle_session_is_told_why_and_closed() {
    let server = alice_and_bob();
    let mut alice = logged_in(&server, "alice", "alice pw");
    let mut bob = logged_in(&server, "bob", "bob pw");
    let start = Instant::now();
    user_cmd(server.data_dir(), &["del", "alice"], "");
    // alice asks nothing: the server's own look at users.json must find it
    // (the client's read timeout is 10 s; the check runs once a second).
    let frame = alice.recv().expect("a frame before the close");
    assert_eq!(frame.header.op, "error");
    assert_eq!(frame.header.str("code"), Some("auth_required"));
    assert_eq!(
        frame.header.str("message"),
        Some("your account was deleted")
    );
    assert!(frame.header.id.is_none(), "{:?}", frame.header);
    assert_closed(&mut alice);
    assert!(start.elapsed() < Duration::from_secs(5));
    // bob is untouched.
    let f = roundtrip(&mut bob, json!({"op":"pwd","id":1}), b"");
    assert_eq!(f.header.op, "ok", "{:?}", f.header);
}

#[test]
fn a_changed_password_ends_sessions_opened_with_the_old_one() {
    let server = alice_and_bob();
    let mut old = logged_in(&server, "alice", "alice pw");
    user_cmd(
        server.data_dir(),
        &["passwd", "alice", "--password-stdin"],
        "new pw\n",
    );
    // The server's once-a-second look at users.json finds the change and
    // says so, unasked, before closing.
    let f = old.recv().expect("a frame before the close");
    assert_eq!(f.header.op, "error", "{:?}", f.header);
    assert_eq!(f.header.str("code"), Some("auth_required"));
    assert!(
        f.header
            .str("message")
            .unwrap_or("")
            .contains("password was changed"),
        "{:?}",
        f.header
    );
    assert_closed(&mut old);
    // The new password opens a session that works and stays.
    let mut new = logged_in(&server, "alice", "new pw");
    std::thread::sleep(Duration::from_millis(1500));
    let f = roundtrip(&mut new, json!({"op":"pwd","id":2}), b"");
    assert_eq!(f.header.op, "ok", "{:?}", f.header);
}

#[test]
fn a_deleted_users_session_is_closed_while_its_command_runs() {
    let server = alice_and_bob();
    let mut alice = logged_in(&server, "alice", "alice pw");
    let started = roundtrip(
        &mut alice,
        json!({"op":"exec","id":3,"cmd":"echo started; sleep 30"}),
        b"",
    );
    assert_eq!(started.header.op, "out", "{:?}", started.header);
    let start = Instant::now();
    user_cmd(server.data_dir(), &["del", "alice"], "");
    let frame = alice.recv().expect("a frame before the close");
    assert_eq!(
        frame.header.str("code"),
        Some("auth_required"),
        "{:?}",
        frame.header
    );
    assert_closed(&mut alice);
    assert!(start.elapsed() < Duration::from_secs(5));
}
