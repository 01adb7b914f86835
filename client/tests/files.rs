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

use serde_json::json;
use skiff::client::Client;

use common::{skiff_command, skiffd, success_stdout};
use testkit::{Guard, Server, TempDir, data_dir_with_users, drain, lines, md5_hex, run};

/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The test users' password.
const PASSWORD: &str = "s3cret pass";

/// Creates `alice` (10M quota, exec) and `bob` (no quota), then serves the
/// framed protocol on a free loopback port.
fn start() -> Server {
    let bin = skiffd();
    let users: &[&[&str]] = &[&["alice", "--quota", "10M", "--exec"], &["bob"]];
    let dir = data_dir_with_users(&bin, users, PASSWORD, RUN_LIMIT);
    Server::serve(&bin, dir, &[])
}

/// Runs `skiff --addr ADDR --user alice ARGS` against `server`, password
/// from the environment.
fn alice(server: &Server, args: &[&str]) -> Output {
    let mut all = vec!["--addr", &server.framed, "--user", "alice"];
    all.extend_from_slice(args);
    skiff(&all, b"", Some(PASSWORD))
}

/// [`alice`], asserting success; returns stdout.
fn alice_ok(server: &Server, args: &[&str]) -> String {
    success_stdout(args, alice(server, args))
}

/// A library connection logged in as `user`.
fn login(server: &Server, user: &str) -> Client {
    testkit::login(&server.framed, user, PASSWORD).0
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

/// The names `ls` printed (the last word of each line).
fn names(ls: &str) -> Vec<&str> {
    ls.lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect()
}

#[test]
fn put_then_get_round_trips_three_mib() {
    let server = start();
    let local = TempDir::new("local");
    let data = random_bytes(3 << 20 | 12345, 7);
    std::fs::write(local.path("big.bin"), &data).unwrap();

    alice_ok(&server, &["put", &local.str("big.bin")]);
    let ls = alice_ok(&server, &["ls"]);
    let line = ls
        .lines()
        .find(|l| l.ends_with(" big.bin"))
        .unwrap_or_else(|| panic!("big.bin not listed: {ls}"));
    assert!(line.starts_with('-'), "{line}");
    assert!(line.contains(&format!(" {} ", data.len())), "{line}");

    alice_ok(&server, &["get", "big.bin", &local.str("copy.bin")]);
    let copy = std::fs::read(local.path("copy.bin")).unwrap();
    assert!(copy == data, "the copy differs from the original");
    assert!(!local.path("copy.bin.part").exists(), "the .part was left");

    // A second put of the same file is a plain, complete upload. With -v
    // (or on a terminal) its last line tells the time and the rate.
    let out = alice(&server, &["--verbose", "put", &local.str("big.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_rate_line(
        &line,
        &format!("big.bin: 3.0 MiB ({} bytes) in ", data.len()),
    );
    let out = alice(&server, &["-v", "get", "big.bin", &local.str("again.bin")]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_rate_line(
        &line,
        &format!("again.bin: 3.0 MiB ({} bytes) in ", data.len()),
    );
    // Piped without -v, the line stays as scripts know it.
    let line = alice_ok(&server, &["put", &local.str("big.bin")]);
    assert!(
        line.ends_with(&format!("big.bin: 3.0 MiB ({} bytes)\n", data.len())),
        "{line}"
    );
}

/// Asserts that `line` holds `head`, then `SECONDS s, RATE/s` and ends there.
fn assert_rate_line(line: &str, head: &str) {
    let (_, tail) = line
        .split_once(head)
        .unwrap_or_else(|| panic!("no {head:?} in {line:?}"));
    let (secs, rate) = tail
        .trim_end()
        .split_once(" s, ")
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    assert!(secs.parse::<f64>().is_ok(), "{line:?}");
    assert!(rate.ends_with("/s") && rate.contains("iB"), "{line:?}");
}

#[test]
fn ls_lists_a_directory_larger_than_one_page() {
    let server = start();
    // 10,001 entries: more than the old cap of 10,000, and many pages.
    let make = "mkdir big && cd big && seq -f IMG_%05g.jpg 0 10000 | xargs touch";
    alice_ok(&server, &["exec", make]);
    let ls = alice_ok(&server, &["ls", "big"]);
    let listed = names(&ls);
    assert_eq!(listed.len(), 10_001);
    assert_eq!(listed.first(), Some(&"IMG_00000.jpg"));
    assert_eq!(listed.last(), Some(&"IMG_10000.jpg"));
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[test]
fn directories_ls_cd_pwd_mkdir_rm() {
    let server = start();
    let local = TempDir::new("local");
    std::fs::write(local.path("note.txt"), b"hello\n").unwrap();

    alice_ok(&server, &["mkdir", "docs"]);
    alice_ok(&server, &["put", &local.str("note.txt"), "docs/"]);
    let ls = alice_ok(&server, &["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("d ") && l.ends_with(" docs")),
        "{ls}"
    );
    let ls = alice_ok(&server, &["ls", "docs"]);
    assert_eq!(names(&ls), ["note.txt"], "{ls}");
    assert!(ls.contains(" 6 "), "size 6 in {ls}");

    let out = alice(&server, &["mkdir", "docs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: exists: "),
        "{}",
        stderr(&out)
    );
    let out = alice(&server, &["rm", "docs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not_empty"), "{}", stderr(&out));

    // cd and pwd only mean something within one session: the shell.
    let out = skiff(
        &["--addr", &server.framed, "--user", "alice", "shell"],
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

    alice_ok(&server, &["rm", "docs/note.txt"]);
    alice_ok(&server, &["rm", "docs"]);
    assert_eq!(alice_ok(&server, &["ls"]), "");
    let quota = alice_ok(&server, &["quota"]);
    assert!(quota.starts_with("used 0 B of 10.0 MiB"), "{quota}");
}

#[test]
fn ls_long_human_and_json() {
    let server = start();
    let local = TempDir::new("local");
    std::fs::write(local.path("k.bin"), vec![7u8; 1536]).unwrap();
    alice_ok(&server, &["put", &local.str("k.bin")]);
    alice_ok(&server, &["mkdir", "d"]);

    let long = alice_ok(&server, &["ls"]);
    assert_eq!(alice_ok(&server, &["ls", "-l"]), long);
    assert!(
        long.lines()
            .any(|l| l.starts_with('-') && l.contains(" 1536 ")),
        "{long}"
    );
    let human = alice_ok(&server, &["ls", "-h"]);
    let line = human.lines().find(|l| l.ends_with(" k.bin")).unwrap();
    assert!(line.contains(" 1.5 KiB "), "{human}");
    assert_eq!(names(&human), ["d", "k.bin"]);

    let json = alice_ok(&server, &["ls", "--json"]);
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(entries.len(), 2, "{json}");
    assert_eq!(entries[0]["name"], "d");
    assert_eq!(entries[0]["kind"], "dir");
    assert_eq!(entries[1]["name"], "k.bin");
    assert_eq!(entries[1]["size"], 1536);
    assert!(entries[1]["mtime"].as_i64().unwrap() > 1_000_000_000);
    // --help still works with -h taken.
    let help = alice_ok(&server, &["ls", "--help"]);
    assert!(help.contains("--json"), "{help}");
}

#[test]
fn over_quota_is_refused_and_stores_nothing() {
    let server = start();
    let local = TempDir::new("local");
    std::fs::write(local.path("huge.bin"), random_bytes(11 << 20, 3)).unwrap();
    let out = alice(&server, &["put", &local.str("huge.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: quota_exceeded: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(alice_ok(&server, &["ls"]), "");
    assert!(alice_ok(&server, &["quota"]).starts_with("used 0 B"));
}

#[test]
fn missing_file_and_bad_password() {
    let server = start();
    let local = TempDir::new("local");
    let out = alice(&server, &["get", "nope.txt", &local.str("nope.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: not_found: "),
        "{}",
        stderr(&out)
    );
    assert!(!local.path("nope.txt").exists());
    assert!(!local.path("nope.txt.part").exists());

    let out = skiff(
        &["--addr", &server.framed, "--user", "alice", "ls"],
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
    let out = skiff(&["--addr", &server.framed, "ls"], b"", Some(PASSWORD));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn get_resumes_from_a_part_file() {
    let server = start();
    let local = TempDir::new("local");
    let data = random_bytes((2 << 20) + 777, 11);
    std::fs::write(local.path("src.bin"), &data).unwrap();
    alice_ok(&server, &["put", &local.str("src.bin"), "r.bin"]);

    let prefix = (1 << 20) + 123;
    std::fs::write(local.path("r.bin.part"), &data[..prefix]).unwrap();
    // Said without -v too.
    let out = alice(&server, &["get", "r.bin", &local.str("r.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming at {prefix}")),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read(local.path("r.bin")).unwrap() == data);
    assert!(!local.path("r.bin.part").exists());

    // A part with the wrong bytes fails the check, so the download
    // starts over from nothing and lands the right bytes.
    let mut wrong = data[..prefix].to_vec();
    wrong[5] ^= 0xff;
    std::fs::write(local.path("w.bin.part"), &wrong).unwrap();
    let out = alice(&server, &["--verbose", "get", "r.bin", &local.str("w.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("starting over"), "{}", stderr(&out));
    assert!(std::fs::read(local.path("w.bin")).unwrap() == data);
    assert!(!local.path("w.bin.part").exists());
}

/// Resumed gets whose part and body each span more buffers than the
/// hashing thread holds (so buffers are recycled in both phases), at a
/// prefix that is no multiple of any buffer, and a part that already holds
/// the whole file: all verify and land.
#[test]
fn resumed_get_with_long_prefix_and_body_verifies() {
    let server = start();
    let local = TempDir::new("local");
    let data = random_bytes((5 << 20) + 4099, 23);
    std::fs::write(local.path("src.bin"), &data).unwrap();
    alice_ok(&server, &["put", &local.str("src.bin"), "long.bin"]);

    for (name, prefix) in [
        ("a.bin", (2 << 20) + 1),
        ("b.bin", 1),
        ("c.bin", data.len() - 1),
        ("d.bin", data.len()),
    ] {
        std::fs::write(local.path(&format!("{name}.part")), &data[..prefix]).unwrap();
        let out = alice(&server, &["--verbose", "get", "long.bin", &local.str(name)]);
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
    alice_ok(&server, &["get", "long.bin", &local.str("e.bin")]);
    assert!(std::fs::read(local.path("e.bin")).unwrap() == data);

    // A wrong byte deep in a long part is caught; the download starts
    // over (saying so on stderr, even without -v) and lands the right
    // bytes.
    let mut wrong = data[..(3 << 20) + 7].to_vec();
    wrong[(3 << 20) - 5] ^= 1;
    std::fs::write(local.path("w.bin.part"), &wrong).unwrap();
    let out = alice(&server, &["get", "long.bin", &local.str("w.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("resuming at {}\n", wrong.len())),
        "{err}"
    );
    assert!(err.ends_with("; starting over\n"), "{err}");
    assert!(std::fs::read(local.path("w.bin")).unwrap() == data);
    assert!(!local.path("w.bin.part").exists());
}

#[test]
fn interrupted_put_resumes() {
    let server = start();
    let local = TempDir::new("local");
    let data = random_bytes((3 << 20) + 5, 5);
    std::fs::write(local.path("cut.bin"), &data).unwrap();
    let half = data.len() / 2;

    // Announce the upload, send half the bytes, and vanish.
    {
        let mut c = login(&server, "alice");
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
    assert_eq!(alice_ok(&server, &["ls"]), "");

    // Give the server a bounded moment to notice the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        thread::sleep(Duration::from_millis(100));
        let out = alice(&server, &["--verbose", "put", &local.str("cut.bin")]);
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

    alice_ok(&server, &["get", "cut.bin", &local.str("back.bin")]);
    assert!(std::fs::read(local.path("back.bin")).unwrap() == data);
}

#[test]
fn shell_fed_by_stdin_logs_in_and_transfers() {
    let server = start();
    let local = TempDir::new("local");
    let data = random_bytes(300_000, 9);
    std::fs::write(local.path("up.bin"), &data).unwrap();
    // The password is the line after `login`.
    let script = format!(
        "login alice\n{PASSWORD}\nmkdir box\ncd box\nput {up} up.bin\nls\nget up.bin {down}\nquota\npwd\n",
        up = local.str("up.bin"),
        down = local.str("down.bin"),
    );
    let out = skiff(
        &["--addr", &server.framed, "shell"],
        script.as_bytes(),
        None,
    );
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
        &["--addr", &server.framed, "shell"],
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
    let server = start();
    // bob, on the library, hears a one-shot `say` from alice.
    let mut bob = login(&server, "bob");
    alice_ok(&server, &["say", "bob", "hello", "bob"]);
    let msg = bob.recv().expect("a pushed message");
    assert_eq!(msg.header.op, "msg");
    assert_eq!(msg.header.str("from"), Some("alice"));
    assert_eq!(msg.body, b"hello bob");

    // alice's shell shows what bob says between its commands.
    let mut child = skiff_command(
        &["--addr", &server.framed, "--user", "alice", "shell"],
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

/// After three wrong passwords the server locks logins as that user from
/// this address, doubling the lock with each further failure. skiff then
/// says how long to wait (from `retry_after`) instead of "wrong password",
/// in one-shot commands and in the shell, and exits 1.
#[test]
fn throttled_login_says_when_to_retry() {
    let server = start();
    let mut c = Client::connect(&server.framed).expect("connect");
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Five counted failures leave a lock of 4 s: time enough for the skiff
    // runs below, however slow the machine. Attempts while locked are not
    // counted, so wait each lock out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    while failures < 5 {
        assert!(
            Instant::now() < deadline,
            "only {failures} failures counted"
        );
        let wrong = json!({"op": "login", "user": "alice", "password": "wrong"});
        match c
            .request(wrong, &[])
            .map_err(|e| e.code().map(str::to_string))
        {
            Err(Some(code)) if code == "auth_failed" => failures += 1,
            Err(Some(code)) if code == "too_busy" => thread::sleep(Duration::from_millis(100)),
            other => panic!("unexpected login reply {other:?}"),
        }
    }

    let expect_throttled = |out: &Output| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        let err = stderr(out);
        let secs = err
            .strip_prefix("error: too_busy: too many failed logins, retry in ")
            .and_then(|rest| rest.strip_suffix(" s\n"))
            .unwrap_or_else(|| panic!("not a throttle message: {err:?}"));
        let secs: u64 = secs.parse().expect("seconds");
        assert!((1..=4).contains(&secs), "{err}");
    };
    // The right password does not help while the lock holds.
    expect_throttled(&alice(&server, &["ls"]));
    let out = skiff(
        &["--addr", &server.framed, "--user", "alice", "shell"],
        b"pwd\n",
        Some(PASSWORD),
    );
    expect_throttled(&out);
    assert!(out.stdout.is_empty());
    // Someone else on the same address is not locked out.
    let out = skiff(
        &["--addr", &server.framed, "--user", "bob", "ls"],
        b"",
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `--password-stdin` takes the first line of stdin as the password and
/// leaves the rest of the input alone (here for `exec`'s command).
#[test]
fn password_stdin_reads_the_first_line_only() {
    let server = start();
    let login = [
        "--addr",
        &server.framed,
        "--user",
        "alice",
        "--password-stdin",
    ];
    let with = |args: &[&str], stdin: &[u8]| {
        let mut all = login.to_vec();
        all.extend_from_slice(args);
        // No SKIFF_PASSWORD: the password can only come from stdin.
        skiff(&all, stdin, None)
    };
    let out = with(&["quota"], format!("{PASSWORD}\n").as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("used 0 B"));

    let out = with(
        &["exec", "cat"],
        format!("{PASSWORD}\nline two\nline three\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"line two\nline three\n");

    // The shell's commands follow the password line.
    let out = with(
        &["shell"],
        format!("{PASSWORD}\nmkdir box\ncd box\npwd\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"/box\n");

    let out = with(&["ls"], b"wrong\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: auth_failed: "),
        "{}",
        stderr(&out)
    );
    let out = with(&["ls"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("standard input is empty"),
        "{}",
        stderr(&out)
    );
}

/// `put FILE DIR` into an existing remote directory stores DIR/FILE, as
/// cp and scp do; a REMOTE that is not a directory is the new name. The
/// shell's cwd is where it was after the probe.
#[test]
fn put_into_an_existing_remote_directory_keeps_the_name() {
    let server = start();
    let local = TempDir::new("local");
    std::fs::write(local.path("notes.bin"), b"some notes\n").unwrap();
    alice_ok(&server, &["mkdir", "docs"]);

    let out = alice_ok(&server, &["put", &local.str("notes.bin"), "docs"]);
    assert!(out.contains(" -> docs/notes.bin: "), "{out}");
    assert_eq!(names(&alice_ok(&server, &["ls", "docs"])), ["notes.bin"]);
    // Again: the same file is replaced, not refused.
    alice_ok(&server, &["put", &local.str("notes.bin"), "docs"]);
    // Not a directory: REMOTE is the name.
    let out = alice_ok(&server, &["put", &local.str("notes.bin"), "renamed.bin"]);
    assert!(out.contains(" -> renamed.bin: "), "{out}");
    let out = alice_ok(&server, &["put", &local.str("notes.bin"), "docs/notes.bin"]);
    assert!(out.contains(" -> docs/notes.bin: "), "{out}");
    assert_eq!(names(&alice_ok(&server, &["ls"])), ["docs", "renamed.bin"]);

    let script = format!(
        "mkdir docs/sub\ncd docs\nput {} sub\npwd\nls sub\n",
        local.str("notes.bin")
    );
    let out = skiff(
        &["--addr", &server.framed, "--user", "alice", "shell"],
        script.as_bytes(),
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains(" -> sub/notes.bin: "), "{stdout}");
    assert_eq!(lines[1], "/docs", "{stdout}");
    assert!(lines[2].ends_with(" notes.bin"), "{stdout}");
}

/// A file the quota cannot hold is refused before it is hashed (a sparse
/// 100 GiB file would take minutes to hash), in human sizes. Replacing a
/// file counts its bytes as free, so a larger version still fits.
#[test]
fn over_quota_put_is_refused_before_hashing() {
    let server = start();
    let local = TempDir::new("local");
    let huge = std::fs::File::create(local.path("huge.bin")).unwrap();
    huge.set_len(100 << 30).unwrap();
    drop(huge);
    let started = Instant::now();
    let out = alice(&server, &["put", &local.str("huge.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: quota_exceeded: huge.bin: needs 100.0 GiB, 10.0 MiB free (quota 10.0 MiB)\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    std::fs::write(local.path("six.bin"), random_bytes(6 << 20, 1)).unwrap();
    std::fs::write(local.path("eight.bin"), random_bytes(8 << 20, 2)).unwrap();
    alice_ok(&server, &["put", &local.str("six.bin"), "r.bin"]);
    let out = alice(&server, &["put", &local.str("eight.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: quota_exceeded: eight.bin: needs 8.0 MiB, 4.0 MiB free (quota 10.0 MiB)\n"
    );
    // Over r.bin, only 2 MiB more are needed.
    alice_ok(&server, &["put", &local.str("eight.bin"), "r.bin"]);
    assert!(alice_ok(&server, &["quota"]).starts_with("used 8.0 MiB of 10.0 MiB"));
}

/// A `get` resumed from a part of an older version of the file (changed,
/// or shrunk below the part) starts over once and lands the new version.
#[test]
fn get_starts_over_when_the_remote_file_changed() {
    let server = start();
    let local = TempDir::new("local");
    let old = random_bytes((2 << 20) + 99, 31);
    let new = random_bytes((2 << 20) + 99, 32);
    std::fs::write(local.path("old.bin"), &old).unwrap();
    std::fs::write(local.path("new.bin"), &new).unwrap();
    alice_ok(&server, &["put", &local.str("new.bin"), "f.bin"]);

    // Interrupted while the server still had the old version.
    std::fs::write(local.path("f.bin.part"), &old[..1 << 20]).unwrap();
    let out = alice(&server, &["-v", "get", "f.bin", &local.str("f.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("resuming at {}", 1 << 20)), "{err}");
    assert!(err.contains("came from another version of f.bin"), "{err}");
    assert!(err.contains("; starting over\n"), "{err}");
    assert!(std::fs::read(local.path("f.bin")).unwrap() == new);
    assert!(!local.path("f.bin.part").exists());

    // The file shrank below what the part holds.
    let short = random_bytes(1000, 33);
    std::fs::write(local.path("short.bin"), &short).unwrap();
    alice_ok(&server, &["put", &local.str("short.bin"), "f.bin"]);
    std::fs::write(local.path("g.bin.part"), &new[..5000]).unwrap();
    let out = alice(&server, &["-v", "get", "f.bin", &local.str("g.bin")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("starting over"), "{}", stderr(&out));
    assert_eq!(std::fs::read(local.path("g.bin")).unwrap(), short);
}

/// On a terminal the shell takes SKIFF_PASSWORD, as one-shot commands
/// do, instead of prompting, and saves its history after each command. The shell runs on a pseudo-terminal in a
/// session of its own: no controlling terminal, so a prompt could only
/// fail.
#[test]
fn shell_on_a_terminal_takes_the_password_from_the_environment() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let server = start();
    let (mut master, slave) = {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the ints we pass and
        // reads nothing from the null name, termios and winsize pointers.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and belong to no one else.
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(master)),
                OwnedFd::from_raw_fd(slave),
            )
        }
    };
    let home = TempDir::new("home");
    let mut cmd = skiff_command(
        &["--addr", &server.framed, "--user", "alice", "shell"],
        Some(PASSWORD),
    );
    cmd.env("TERM", "dumb")
        .env("HOME", home.root())
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start skiff shell");
    // Our copies of the slave end went with `cmd`; the master reads EOF
    // (EIO) once the shell exits.
    drop(cmd);
    let mut guard = Guard(child);
    let rx = lines(master.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("logged in as alice") => break,
            Ok(line) => seen.push(line),
            Err(e) => panic!("the shell did not log in ({e:?}); it printed {seen:?}"),
        }
    }
    // History is saved after each command, before the shell ends.
    master.write_all(b"mkdir typed-here\n").unwrap();
    let history = home.path(".skiff_history");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&history).is_ok_and(|h| h.contains("mkdir typed-here")) {
        assert!(
            Instant::now() < deadline,
            "no history saved in {}",
            history.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
    master.write_all(b"quit\n").unwrap();
    let status = testkit::wait_bounded(&mut guard.0, RUN_LIMIT, "skiff shell");
    assert!(status.success(), "{status}; it printed {seen:?}");
    assert_eq!(names(&alice_ok(&server, &["ls"])), ["typed-here"]);
}
