//! End to end: `skiff shell` as a person uses it, on a pseudo-terminal
//! (line editing, live messages, keepalive, Ctrl-C, completion), and the
//! local commands fed by a pipe. Each test runs its own `skiffd`.

mod common;

use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use skiff::client::Client;

use common::pty::Pty;
use common::{skiff_command, skiffd, success_stdout};
use testkit::{Server, TempDir, data_dir_with_users, run};

/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long the shell may take to draw what a step expects.
const DRAW: Duration = Duration::from_secs(20);
/// The test users' password.
const PASSWORD: &str = "s3cret pass";
/// alice's prompt in her home.
const PROMPT: &str = "alice:/> ";

/// Serves `alice` and `bob` with the extra server `args`.
fn server(args: &[&str]) -> Server {
    let bin = skiffd();
    let users: &[&[&str]] = &[&["alice"], &["bob"]];
    let dir = data_dir_with_users(&bin, users, PASSWORD, RUN_LIMIT);
    Server::serve(&bin, dir, args)
}

/// `skiff shell` logged in as alice on a terminal, in the local directory
/// `cwd`, with the extra shell `args`; returns once the first prompt is drawn.
fn alice_shell(server: &Server, cwd: &TempDir, args: &[&str]) -> Pty {
    let mut all = vec!["--addr", &server.framed, "--user", "alice", "shell"];
    all.extend_from_slice(args);
    let mut cmd = skiff_command(&all, Some(PASSWORD));
    cmd.env("HOME", cwd.root()).current_dir(cwd.root());
    let mut pty = Pty::spawn(cmd);
    pty.expect("logged in as alice", DRAW);
    pty.expect(PROMPT, DRAW);
    pty
}

/// `skiff --user bob say alice TEXT`, asserting success.
fn bob_says(server: &Server, text: &str) {
    let args = [
        "--addr",
        &server.framed,
        "--user",
        "bob",
        "say",
        "alice",
        text,
    ];
    success_stdout(&args, bob(&args));
}

fn bob(args: &[&str]) -> Output {
    run(&mut skiff_command(args, Some(PASSWORD)), b"", RUN_LIMIT)
}

/// Types `quit` and asserts the shell ends with status 0.
fn quit(mut pty: Pty) {
    pty.send("quit\r");
    let status = pty.wait(RUN_LIMIT);
    assert!(status.success(), "{status}");
}

#[test]
fn messages_appear_above_the_prompt_while_it_waits() {
    let server = server(&[]);
    let cwd = TempDir::new("cwd");
    let mut pty = alice_shell(&server, &cwd, &[]);
    // Half a command typed, and no Enter: the message must still show.
    pty.send("ech");
    pty.expect("ech", DRAW);
    bob_says(&server, "hello live");
    pty.expect("[bob] hello live", DRAW);
    // The prompt and the partial line come back below the message...
    pty.expect(&format!("{PROMPT}ech"), DRAW);
    // ...and typing goes on where it was.
    pty.send("o --upper done\r");
    pty.expect("DONE", DRAW);
    pty.expect(PROMPT, DRAW);

    // Two messages sent back to back (likely one read for the shell):
    // both show, and the next line still runs at once.
    let mut bob = Client::connect(&server.framed).expect("connect");
    bob.request(
        json!({"op": "login", "user": "bob", "password": PASSWORD}),
        &[],
    )
    .expect("login");
    for (id, text) in [(10, "first"), (11, "second")] {
        let Value::Object(say) = json!({"op": "say", "id": id, "to": "alice"}) else {
            unreachable!()
        };
        bob.send(say, text.as_bytes()).expect("say");
    }
    for _ in 0..2 {
        let reply = bob.recv().expect("say reply");
        assert_eq!(reply.header.op, "ok");
    }
    pty.expect("[bob] first", DRAW);
    pty.expect("[bob] second", DRAW);
    pty.send("echo --upper quick\r");
    pty.expect("QUICK", Duration::from_secs(5));
    quit(pty);
}

#[test]
fn an_idle_shell_is_kept_alive() {
    let server = server(&["--idle-timeout", "1s"]);
    let cwd = TempDir::new("cwd");
    let mut pty = alice_shell(&server, &cwd, &["--keepalive", "250ms"]);
    // Three idle timeouts long: without the keepalive the server closes it.
    thread::sleep(Duration::from_secs(3));
    bob_says(&server, "still there?");
    pty.expect("[bob] still there?", DRAW);
    let all = pty.all(Duration::from_millis(200)).to_string();
    assert!(
        !all.contains("closed"),
        "the connection was closed: {all:?}"
    );
    quit(pty);
}

#[test]
fn a_closed_shell_says_so_and_logs_in_again() {
    let server = server(&["--idle-timeout", "2s"]);
    let cwd = TempDir::new("cwd");
    let mut pty = alice_shell(&server, &cwd, &["--keepalive", "0"]);
    pty.send("mkdir docs\r");
    pty.expect(PROMPT, DRAW);
    pty.send("cd docs\r");
    pty.expect("alice:/docs> ", DRAW);
    // With no keepalive the server's idle timeout closes the connection;
    // the shell tells why, dials again and returns to the cwd, unasked.
    let said = pty.expect("the server closed the connection", DRAW);
    assert!(!said.contains("unexpected"), "{said:?}");
    pty.expect("(timeout", DRAW);
    pty.expect("reconnected; logged in again as alice", DRAW);
    // A message sent now reaches the new connection at once.
    bob_says(&server, "welcome back");
    pty.expect("[bob] welcome back", DRAW);
    pty.send("pwd\r");
    pty.expect("/docs\r\n", DRAW);
    quit(pty);
}

#[test]
fn ctrl_c_stops_a_transfer_and_not_the_shell() {
    let server = server(&[]);
    // Big enough that a debug-built client (hashing as it receives) is
    // still busy when Ctrl-C comes; sparse, so it costs no disk.
    let length: u64 = 256 << 20;
    let big = server.data_dir().join("homes/alice/big.bin");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(length))
        .expect("create big.bin");
    let cwd = TempDir::new("cwd");
    let mut pty = alice_shell(&server, &cwd, &[]);
    pty.send("get big.bin\r");
    // The progress bar shows the transfer under way.
    pty.expect("eta", DRAW);
    pty.send("\x03");
    pty.expect("interrupted: get stopped by Ctrl-C", DRAW);
    pty.expect(PROMPT, DRAW);
    let part = std::fs::metadata(cwd.path("big.bin.part")).expect("big.bin.part is kept");
    assert!(
        part.len() < length,
        "the whole file came before Ctrl-C ({} bytes)",
        part.len()
    );
    assert!(!cwd.path("big.bin").exists());
    // The shell is still there, on a new connection, logged in.
    pty.send("echo after\r");
    pty.expect("after\r\n", DRAW);
    pty.send("ls\r");
    pty.expect("big.bin", DRAW);
    pty.expect(PROMPT, DRAW);
    quit(pty);
}

#[test]
fn tab_completes_commands_and_paths() {
    let server = server(&[]);
    let home = server.data_dir().join("homes/alice");
    std::fs::write(home.join("notes 2026.txt"), b"remote notes\n").unwrap();
    std::fs::create_dir(home.join("docs")).unwrap();
    std::fs::write(home.join("docs/inner.txt"), b"inner\n").unwrap();
    let cwd = TempDir::new("cwd");
    std::fs::create_dir(cwd.path("local dir")).unwrap();
    std::fs::write(cwd.path("upload-me.txt"), b"up\n").unwrap();
    let mut pty = alice_shell(&server, &cwd, &[]);

    // A command name, then a remote file whose name needs an escape.
    pty.send("ge\tno\t\r");
    pty.expect("notes 2026.txt -> notes 2026.txt", DRAW);
    pty.expect(PROMPT, DRAW);
    assert_eq!(
        std::fs::read(cwd.path("notes 2026.txt")).unwrap(),
        b"remote notes\n"
    );
    // A remote directory, then a file inside it (listed through it).
    pty.send("cd d\t\r");
    pty.expect("alice:/docs> ", DRAW);
    pty.send("get /docs/in\t\r");
    pty.expect("/docs/inner.txt -> inner.txt", DRAW);
    assert!(cwd.path("inner.txt").exists());
    // Local paths for put and lcd.
    pty.send("put up\t\r");
    pty.expect("upload-me.txt -> upload-me.txt", DRAW);
    assert!(home.join("docs/upload-me.txt").exists());
    pty.send("lcd loc\t\r");
    pty.expect("local dir\r\n", DRAW);
    pty.send("qui\t\r");
    let status = pty.wait(RUN_LIMIT);
    assert!(status.success(), "{status}");
}

#[test]
fn lcd_lpwd_lls_act_on_this_machine() {
    let server = server(&[]);
    let here = TempDir::new("local");
    std::fs::create_dir(here.path("sub")).unwrap();
    std::fs::write(here.path("sub/file.txt"), b"12345").unwrap();
    let dir = here.str("sub");
    let script = format!("lcd {dir}\nlpwd\nlls\nlls file.txt\nlcd /nonexistent-skiff-dir\n");
    let mut cmd = skiff_command(
        &["--addr", &server.framed, "--user", "alice", "shell"],
        Some(PASSWORD),
    );
    let out = run(&mut cmd, script.as_bytes(), RUN_LIMIT);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    // The path lcd printed and lpwd shows is the directory itself.
    let shown = Path::new(lines[0]).canonicalize().unwrap();
    assert_eq!(shown, Path::new(&dir).canonicalize().unwrap());
    assert_eq!(lines[1], lines[0]);
    // lls lists like ls: kind, size, date, name; once for the directory,
    // once for the file by name.
    assert_eq!(lines.len(), 4, "{stdout}");
    for line in &lines[2..] {
        assert!(line.starts_with("-            5 "), "{line:?}");
        assert!(line.ends_with(" file.txt"), "{line:?}");
    }
    assert!(stderr.contains("/nonexistent-skiff-dir"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failed lcd is the last status"
    );
}
