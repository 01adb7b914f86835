//! End to end: `skiff exec` and the shell's `!CMD` against a real `skiffd`
//! (users created with `skiffd user add`, one with `--exec`), driven by the
//! `skiff` binary as a user would run it.
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`; `SKIFFD` may name another server binary.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::pty::Pty;
use common::{skiff_command, skiffd};
use testkit::{Guard, Server, data_dir_with_users, drain, lines, run, wait_bounded};

/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// The test users' password.
const PASSWORD: &str = "s3cret pass";
/// How long a command on a terminal may take to draw what a step expects.
const DRAW: Duration = Duration::from_secs(20);

/// Creates `alice` (exec right) and `bob` (none), then serves the framed
/// protocol on a free loopback port.
fn start() -> Server {
    let bin = skiffd();
    let users: &[&[&str]] = &[&["alice", "--exec"], &["bob"]];
    let dir = data_dir_with_users(&bin, users, PASSWORD, RUN_LIMIT);
    Server::serve(&bin, dir, &[])
}

/// `skiff --addr ADDR --user USER ARGS...` against `server`, password
/// from the environment.
fn command(server: &Server, user: &str, args: &[&str]) -> Command {
    let mut all = vec!["--addr", &server.framed, "--user", user];
    all.extend_from_slice(args);
    skiff_command(&all, Some(PASSWORD))
}

/// Runs `skiff --user USER ARGS...` against `server` with `stdin`.
fn skiff(server: &Server, user: &str, args: &[&str], stdin: &[u8]) -> Output {
    run(&mut command(server, user, args), stdin, RUN_LIMIT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn streams_go_to_their_places_and_the_exit_code_comes_back() {
    let server = start();
    let out = skiff(
        &server,
        "alice",
        &["exec", "echo out; echo err >&2; exit 7"],
        b"",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    // Words are joined as ssh joins them; options after CMD are its own.
    let out = skiff(&server, "alice", &["exec", "echo", "-n", "a", "b"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a b");
}

#[test]
fn a_signal_becomes_128_plus_its_number() {
    let server = start();
    let out = skiff(&server, "alice", &["exec", "kill -TERM $$"], b"");
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
}

#[test]
fn stdin_is_forwarded_to_its_end() {
    let server = start();
    let out = skiff(&server, "alice", &["exec", "tr a-z A-Z"], b"hello\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\n");
    // Many chunks, in order, then eof.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = skiff(&server, "alice", &["exec", "tr a-z A-Z | wc -c"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3000000");
    let out = skiff(&server, "alice", &["exec", "cksum"], &data);
    let local = run(
        Command::new("cksum").stdin(Stdio::piped()),
        &data,
        RUN_LIMIT,
    );
    assert_eq!(text(&out.stdout), text(&local.stdout));
}

#[test]
fn without_the_exec_right_it_is_forbidden() {
    let server = start();
    let out = skiff(&server, "bob", &["exec", "true"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("error: forbidden: "),
        "{}",
        text(&out.stderr)
    );
    // In the shell too, and the session goes on in step.
    let out = skiff(&server, "bob", &["shell"], b"!true\npwd\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "/\n");
}

#[test]
fn ctrl_c_cancels_the_remote_command() {
    let server = start();
    let child = command(
        &server,
        "alice",
        &["exec", "echo started; sleep 30; echo never"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start skiff");
    let mut child = Guard(child);
    let err = drain(child.0.stderr.take().expect("stderr was piped"));
    // Output arrives as it is written, long before the command ends.
    let rx = lines(child.0.stdout.take().expect("stdout was piped"));
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("`started` did not arrive while the command ran");
    assert_eq!(first, "started");
    let start = Instant::now();
    let pid = i32::try_from(child.0.id()).expect("pid");
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = wait_bounded(&mut child.0, RUN_LIMIT, "skiff exec after Ctrl-C");
    assert_eq!(status.code(), Some(143), "{}", text(&err.join().unwrap()));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(rx.try_iter().all(|l| l != "never"));
}

#[test]
fn the_shell_runs_commands_in_its_cwd() {
    let server = start();
    let script = "!echo hi\nmkdir docs\ncd docs\n!pwd\n!cat\ncd ..\n!pwd; exit 3\n";
    let out = skiff(&server, "alice", &["shell"], script.as_bytes());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{}", text(&out.stderr));
    assert_eq!(lines[0], "hi");
    // The server shows its own path of the home.
    assert!(lines[1].ends_with("/alice/docs"), "{stdout}");
    assert!(lines[2].ends_with("/alice"), "{stdout}");
    // `!cat` ended (its stdin is empty); the status is the last command's.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn on_a_terminal_typed_lines_reach_the_command_and_ctrl_d_closes_its_stdin() {
    let server = start();
    let cmd = command(
        &server,
        "alice",
        &["exec", "read x; echo \"got:$x\"; wc -l; echo stdin-closed"],
    );
    let mut pty = Pty::spawn(cmd);
    pty.send("hello\r");
    pty.expect("got:hello", DRAW);
    // Two more lines for `wc -l`, then Ctrl-D on an empty line: the
    // command's stdin must end, or `wc` (and this test) waits forever.
    pty.send("one\rtwo\r");
    pty.expect("two", DRAW);
    pty.send("\x04");
    let rest = pty.expect("stdin-closed", DRAW);
    assert!(
        rest.contains('2'),
        "wc -l did not count two lines: {rest:?}"
    );
    let status = pty.wait(RUN_LIMIT);
    assert!(status.success(), "{status}");
}

#[test]
fn a_server_shutdown_is_announced_and_the_command_status_still_arrives() {
    let server = start();
    let child = command(
        &server,
        "alice",
        &["exec", "echo started; sleep 30; echo never"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start skiff");
    let mut child = Guard(child);
    let err = drain(child.0.stderr.take().expect("stderr was piped"));
    let rx = lines(child.0.stdout.take().expect("stdout was piped"));
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("`started` did not arrive while the command ran");
    assert_eq!(first, "started");
    server.terminate();
    let status = wait_bounded(&mut child.0, RUN_LIMIT, "skiff exec during a shutdown");
    let err = text(&err.join().unwrap());
    // The server ends the command with SIGTERM: 128 + 15, as a shell says,
    // not the 1 of a lost connection.
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("the server is shutting down"), "{err}");
    assert!(!err.contains("closed the connection"), "{err}");
}
