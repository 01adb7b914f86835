//! End to end: the file service of a real `skiffd` (users created with
//! `skiffd user add`), driven by the `skiff` binary as a user would run it,
//! and by the library where a test must misbehave on purpose (an upload cut
//! in half).
//!
//! Run with `cargo test --workspace`, which builds `skiffd` next to
//! `skiff`; `SKIFFD` may name another server binary.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::json;
use skiff::client::Client;

use common::{
    Guard, Server, TempDir, data_dir_with_users, drain, lines, run, skiff_command, skiffd,
    success_stdout,
};

/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The test users' password.
const PASSWORD: &str = "s3cret pass";

impl Server {
    /// Creates `alice` (10M quota, exec) and `bob` (no quota), then serves
    /// the framed protocol on a free loopback port.
    fn start() -> Server {
        let bin = skiffd();
        let users: &[&[&str]] = &[&["alice", "--quota", "10M", "--exec"], &["bob"]];
        let dir = data_dir_with_users(&bin, users, PASSWORD, RUN_LIMIT);
        Server::serve(&bin, dir, &[], Stdio::null(), &[])
    }

    /// Runs `skiff --addr ADDR --user alice ARGS`, password from the
    /// environment.
    fn alice(&self, args: &[&str]) -> Output {
        let mut all = vec!["--addr", &self.addr, "--user", "alice"];
        all.extend_from_slice(args);
        skiff(&all, b"", Some(PASSWORD))
    }

    /// [`Server::alice`], asserting success; returns stdout.
    fn alice_ok(&self, args: &[&str]) -> String {
        success_stdout(args, self.alice(args))
    }
    /// A library connection logged in as `user`.
    fn login(&self, user: &str) -> Client {
        let mut c = Client::connect(&self.addr).expect("connect");
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.request(
            json!({"op": "login", "user": user, "password": PASSWORD}),
            &[],
        )
        .expect("login");
        c
    }
}

/// `len` pseudo-random bytes (xorshift; random enough to defeat any
/// accidental pattern, and reproducible).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `skiff` with `args` and `stdin`, bounded by [`RUN_LIMIT`].
fn skiff(args: &[&str], stdin: &[u8], password: Option<&str>) -> Output {
    run(&mut skiff_command(args, password), stdin, RUN_LIMIT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The names `ls` printed (the last word of each line).
fn names(ls: &str) -> Vec<&str> {
    ls.lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect()
}

#[test]
fn put_then_get_round_trips_three_mib() {
    let server = Server::start();
    let local = TempDir::new("local");
    let data = random_bytes(3 << 20 | 12345, 7);
    std::fs::write(local.path("big.bin"), &data).unwrap();

    server.alice_ok(&["put", &local.str("big.bin")]);
    let ls = server.alice_ok(&["ls"]);
    let line = ls
        .lines()
        .find(|l| l.ends_with(" big.bin"))
        .unwrap_or_else(|| panic!("big.bin not listed: {ls}"));
    assert!(line.starts_with('-'), "{line}");
    assert!(line.contains(&format!(" {} ", data.len())), "{line}");

    server.alice_ok(&["get", "big.bin", &local.str("copy.bin")]);
    let copy = std::fs::read(local.path("copy.bin")).unwrap();
    assert!(copy == data, "the copy differs from the original");
    assert!(!local.path("copy.bin.part").exists(), "the .part was left");

    // A second put of the same file is a plain, complete upload.
    let out = server.alice(&["--verbose", "put", &local.str("big.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
}

#[test]
fn directories_ls_cd_pwd_mkdir_rm() {
    let server = Server::start();
    let local = TempDir::new("local");
    std::fs::write(local.path("note.txt"), b"hello\n").unwrap();

    server.alice_ok(&["mkdir", "docs"]);
    server.alice_ok(&["put", &local.str("note.txt"), "docs/"]);
    let ls = server.alice_ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("d ") && l.ends_with(" docs")),
        "{ls}"
    );
    let ls = server.alice_ok(&["ls", "docs"]);
    assert_eq!(names(&ls), ["note.txt"], "{ls}");
    assert!(ls.contains(" 6 "), "size 6 in {ls}");

    let out = server.alice(&["mkdir", "docs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: exists: "),
        "{}",
        stderr(&out)
    );
    let out = server.alice(&["rm", "docs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not_empty"), "{}", stderr(&out));

    // cd and pwd only mean something within one session: the shell.
    let out = skiff(
        &["--addr", &server.addr, "--user", "alice", "shell"],
        b"pwd\ncd docs\npwd\nls\ncd ..\ncd ..\npwd\n",
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Logging in with --user prints nothing when driven by a script.
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "/", "{stdout}");
    assert_eq!(lines[1], "/docs", "{stdout}");
    assert!(lines[2].ends_with(" note.txt"), "{stdout}");
    // `..` never climbs above the home.
    assert_eq!(lines[3], "/", "{stdout}");

    server.alice_ok(&["rm", "docs/note.txt"]);
    server.alice_ok(&["rm", "docs"]);
    assert_eq!(server.alice_ok(&["ls"]), "");
    let quota = server.alice_ok(&["quota"]);
    assert!(quota.starts_with("used 0 B of 10.0 MiB"), "{quota}");
}

#[test]
fn over_quota_is_refused_and_stores_nothing() {
    let server = Server::start();
    let local = TempDir::new("local");
    std::fs::write(local.path("huge.bin"), random_bytes(11 << 20, 3)).unwrap();
    let out = server.alice(&["put", &local.str("huge.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: quota_exceeded: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.alice_ok(&["ls"]), "");
    assert!(server.alice_ok(&["quota"]).starts_with("used 0 B"));
}

#[test]
fn missing_file_and_bad_password() {
    let server = Server::start();
    let local = TempDir::new("local");
    let out = server.alice(&["get", "nope.txt", &local.str("nope.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: not_found: "),
        "{}",
        stderr(&out)
    );
    assert!(!local.path("nope.txt").exists());
    assert!(!local.path("nope.txt.part").exists());

    let out = skiff(
        &["--addr", &server.addr, "--user", "alice", "ls"],
        b"",
        Some("wrong"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: auth_failed: "),
        "{}",
        stderr(&out)
    );

    // No user at all is a usage error.
    let out = skiff(&["--addr", &server.addr, "ls"], b"", Some(PASSWORD));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn get_resumes_from_a_part_file() {
    let server = Server::start();
    let local = TempDir::new("local");
    let data = random_bytes((2 << 20) + 777, 11);
    std::fs::write(local.path("src.bin"), &data).unwrap();
    server.alice_ok(&["put", &local.str("src.bin"), "r.bin"]);

    let prefix = (1 << 20) + 123;
    std::fs::write(local.path("r.bin.part"), &data[..prefix]).unwrap();
    let out = server.alice(&["--verbose", "get", "r.bin", &local.str("r.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming at {prefix}")),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read(local.path("r.bin")).unwrap() == data);
    assert!(!local.path("r.bin.part").exists());

    // A part with the wrong bytes fails the check and is kept.
    let mut wrong = data[..prefix].to_vec();
    wrong[5] ^= 0xff;
    std::fs::write(local.path("w.bin.part"), &wrong).unwrap();
    let out = server.alice(&["get", "r.bin", &local.str("w.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: checksum_mismatch: "),
        "{}",
        stderr(&out)
    );
    assert!(!local.path("w.bin").exists());
    assert_eq!(
        std::fs::metadata(local.path("w.bin.part")).unwrap().len(),
        data.len() as u64
    );
}

/// Resumed gets whose part and body each span more buffers than the
/// hashing thread holds (so buffers are recycled in both phases), at a
/// prefix that is no multiple of any buffer, and a part that already holds
/// the whole file: all verify and land.
#[test]
fn resumed_get_with_long_prefix_and_body_verifies() {
    let server = Server::start();
    let local = TempDir::new("local");
    let data = random_bytes((5 << 20) + 4099, 23);
    std::fs::write(local.path("src.bin"), &data).unwrap();
    server.alice_ok(&["put", &local.str("src.bin"), "long.bin"]);

    for (name, prefix) in [
        ("a.bin", (2 << 20) + 1),
        ("b.bin", 1),
        ("c.bin", data.len() - 1),
        ("d.bin", data.len()),
    ] {
        std::fs::write(local.path(&format!("{name}.part")), &data[..prefix]).unwrap();
        let out = server.alice(&["--verbose", "get", "long.bin", &local.str(name)]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("resuming at {prefix}")),
            "{name}: {}",
            stderr(&out)
        );
        assert!(std::fs::read(local.path(name)).unwrap() == data, "{name}");
        assert!(!local.path(&format!("{name}.part")).exists(), "{name}");
    }

    // A fresh get of the same file, no part: same bytes.
    server.alice_ok(&["get", "long.bin", &local.str("e.bin")]);
    assert!(std::fs::read(local.path("e.bin")).unwrap() == data);

    // A wrong byte deep in a long part is caught, and the part is kept.
    let mut wrong = data[..(3 << 20) + 7].to_vec();
    wrong[(3 << 20) - 5] ^= 1;
    std::fs::write(local.path("w.bin.part"), &wrong).unwrap();
    let out = server.alice(&["get", "long.bin", &local.str("w.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: checksum_mismatch: "),
        "{}",
        stderr(&out)
    );
    assert!(!local.path("w.bin").exists());
    assert_eq!(
        std::fs::metadata(local.path("w.bin.part")).unwrap().len(),
        data.len() as u64
    );
}

#[test]
fn interrupted_put_resumes() {
    let server = Server::start();
    let local = TempDir::new("local");
    let data = random_bytes((3 << 20) + 5, 5);
    std::fs::write(local.path("cut.bin"), &data).unwrap();
    let half = data.len() / 2;

    // Announce the upload, send half the bytes, and vanish.
    {
        let mut c = server.login("alice");
        let reply = c
            .request(
                json!({"op": "put", "path": "cut.bin", "length": data.len(), "md5": md5_hex(&data)}),
                &[],
            )
            .expect("put");
        let id = reply
            .header
            .id
            .as_ref()
            .and_then(|n| n.as_u64())
            .expect("id");
        assert_eq!(reply.header.u64("offset"), Some(0));
        let mut head = serde_json::Map::new();
        head.insert("op".into(), "data".into());
        head.insert("id".into(), id.into());
        c.send_header(head, data.len() as u64).unwrap();
        c.send_body(&data[..half]).unwrap();
        c.flush().unwrap();
        // Let the server take in what was sent before the connection drops.
        thread::sleep(Duration::from_millis(300));
    }
    // The cut upload is invisible.
    assert_eq!(server.alice_ok(&["ls"]), "");

    // Give the server a bounded moment to notice the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        thread::sleep(Duration::from_millis(100));
        let out = server.alice(&["--verbose", "put", &local.str("cut.bin")]);
        if out.status.success() || Instant::now() >= deadline {
            break out;
        }
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let resumed: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("resuming at "))
        .unwrap_or_else(|| panic!("no resume reported: {err}"))
        .trim()
        .parse()
        .expect("a number");
    assert!(
        resumed > 0 && resumed <= half as u64,
        "resumed at {resumed}"
    );

    server.alice_ok(&["get", "cut.bin", &local.str("back.bin")]);
    assert!(std::fs::read(local.path("back.bin")).unwrap() == data);
}

#[test]
fn shell_fed_by_stdin_logs_in_and_transfers() {
    let server = Server::start();
    let local = TempDir::new("local");
    let data = random_bytes(300_000, 9);
    std::fs::write(local.path("up.bin"), &data).unwrap();
    // The password is the line after `login`.
    let script = format!(
        "login alice\n{PASSWORD}\nmkdir box\ncd box\nput {up} up.bin\nls\nget up.bin {down}\nquota\npwd\n",
        up = local.str("up.bin"),
        down = local.str("down.bin"),
    );
    let out = skiff(&["--addr", &server.addr, "shell"], script.as_bytes(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("logged in as alice"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('-') && l.ends_with(" up.bin") && l.contains(" 300000 ")),
        "{stdout}"
    );
    assert!(stdout.contains("used 293.0 KiB of 10.0 MiB"), "{stdout}");
    assert!(stdout.ends_with("/box\n"), "{stdout}");
    assert!(std::fs::read(local.path("down.bin")).unwrap() == data);

    // A wrong password fails the login and the commands after it.
    let out = skiff(
        &["--addr", &server.addr, "shell"],
        b"login alice\nnot it\nls\n",
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: auth_failed: "), "{err}");
    assert!(err.contains("error: auth_required: "), "{err}");
}

#[test]
fn messages_reach_the_shell_and_one_shot_say_sends() {
    let server = Server::start();
    // bob, on the library, hears a one-shot `say` from alice.
    let mut bob = server.login("bob");
    server.alice_ok(&["say", "bob", "hello", "bob"]);
    let msg = bob.recv().expect("a pushed message");
    assert_eq!(msg.header.op, "msg");
    assert_eq!(msg.header.str("from"), Some("alice"));
    assert_eq!(msg.body, b"hello bob");

    // alice's shell shows what bob says between its commands.
    let mut child = skiff_command(
        &["--addr", &server.addr, "--user", "alice", "shell"],
        Some(PASSWORD),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start skiff shell");
    let mut stdin = child.stdin.take().expect("stdin");
    let rx = lines(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let mut guard = Guard(child);
    let wait_line = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => continue,
                Err(e) => panic!("no {want:?} line from the shell: {e:?}"),
            }
        }
    };
    stdin.write_all(b"pwd\n").unwrap();
    wait_line("/");
    // alice is logged in now: bob talks to her while her shell waits.
    bob.request(json!({"op": "say", "to": "alice"}), b"hi alice")
        .expect("say");
    thread::sleep(Duration::from_millis(200));
    stdin.write_all(b"pwd\nsay * back at you\nquit\n").unwrap();
    drop(stdin);
    wait_line("/");
    let msg = bob.recv().expect("alice's broadcast");
    assert_eq!(msg.body, b"back at you");
    let deadline = Instant::now() + RUN_LIMIT;
    while guard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the shell did not quit");
        thread::sleep(Duration::from_millis(10));
    }
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert!(err.contains("[bob] hi alice"), "{err}");
}
