//! End to end: transfers as scp and lftp do them, through the `skiff`
//! binary against a real `skiffd`: several files at once, whole trees
//! with `-r`, and `-` for stdin and stdout.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{skiff_command, skiffd, success_stdout};
use testkit::{Server, TempDir, data_dir_with_users, run};

/// How long one `skiff` (or `skiffd user add`) run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The test user's password.
const PASSWORD: &str = "s3cret pass";

/// Serves `alice`; returns the server and her home.
fn server() -> Server {
    let bin = skiffd();
    let dir = data_dir_with_users(&bin, &[&["alice"]], PASSWORD, RUN_LIMIT);
    Server::serve(&bin, dir, &[])
}

/// `skiff --addr ADDR --user alice ARGS` with `stdin`, run in `cwd`.
fn alice(server: &Server, cwd: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["--addr", &server.framed, "--user", "alice"];
    all.extend_from_slice(args);
    let mut cmd = skiff_command(&all, Some(PASSWORD));
    cmd.current_dir(cwd);
    run(&mut cmd, stdin, RUN_LIMIT)
}

fn alice_ok(server: &Server, cwd: &Path, args: &[&str]) -> String {
    success_stdout(args, alice(server, cwd, args, b""))
}

/// Every file under `root`, as (relative path, content), and every
/// directory as (relative path/, empty): a tree to compare.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    // Bounded: a test tree has a handful of directories.
    for _ in 0..100 {
        let Some(dir) = todo.pop() else { break };
        for item in fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                todo.push(path);
            } else {
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    assert!(todo.is_empty(), "tree too deep");
    out.sort();
    out
}

#[test]
fn several_files_go_into_a_directory_both_ways() {
    let server = server();
    let here = TempDir::new("here");
    fs::write(here.path("a.txt"), b"aaa").unwrap();
    fs::write(here.path("b.txt"), b"bb").unwrap();
    alice_ok(&server, here.root(), &["mkdir", "in"]);
    let said = alice_ok(&server, here.root(), &["put", "a.txt", "b.txt", "in"]);
    assert_eq!(said.lines().count(), 2, "{said}");
    let home = server.data_dir().join("homes/alice");
    assert_eq!(fs::read(home.join("in/a.txt")).unwrap(), b"aaa");
    assert_eq!(fs::read(home.join("in/b.txt")).unwrap(), b"bb");

    fs::create_dir(here.path("back")).unwrap();
    alice_ok(
        &server,
        here.root(),
        &["get", "in/a.txt", "in/b.txt", "back"],
    );
    assert_eq!(fs::read(here.path("back/a.txt")).unwrap(), b"aaa");
    assert_eq!(fs::read(here.path("back/b.txt")).unwrap(), b"bb");

    // Several sources into something that is not a directory: refused,
    // before anything is sent.
    let out = alice(
        &server,
        here.root(),
        &["put", "a.txt", "b.txt", "in/a.txt"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = alice(
        &server,
        here.root(),
        &["get", "in/a.txt", "in/b.txt", "nowhere"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!here.path("nowhere").exists());
}

#[test]
fn recursive_put_and_get_copy_a_tree() {
    let server = server();
    let here = TempDir::new("here");
    let src = here.path("proj");
    fs::create_dir_all(src.join("src/deep")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("README"), b"read me").unwrap();
    fs::write(src.join("src/main.rs"), b"fn main() {}").unwrap();
    fs::write(src.join("src/deep/x y.bin"), [0u8, 1, 2, 255]).unwrap();

    // Without -r a directory is refused, and says how.
    let out = alice(&server, here.root(), &["put", "proj"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-r"));

    alice_ok(&server, here.root(), &["put", "-r", "proj"]);
    let home = server.data_dir().join("homes/alice");
    assert_eq!(tree(&home.join("proj")), tree(&src));
    // Into an existing remote directory it keeps its name, as cp -r does.
    alice_ok(&server, here.root(), &["mkdir", "backup"]);
    alice_ok(&server, here.root(), &["put", "-r", "proj", "backup"]);
    assert_eq!(tree(&home.join("backup/proj")), tree(&src));

    let out = alice(&server, here.root(), &["get", "proj", "copy"], b"");
    assert_eq!(out.status.code(), Some(1), "a directory without -r");
    alice_ok(&server, here.root(), &["get", "-r", "proj", "copy"]);
    assert_eq!(tree(&here.path("copy")), tree(&src));
    alice_ok(&server, here.root(), &["get", "-r", "backup/proj", "copy"]);
    assert_eq!(tree(&here.path("copy/proj")), tree(&src));
}

#[test]
fn dash_is_stdin_for_put_and_stdout_for_get() {
    let server = server();
    let here = TempDir::new("here");
    // Seeded bytes, more than one read of stdin.
    let mut x: u32 = 0x2545_f491;
    let data: Vec<u8> = (0..700_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let out = alice(&server, here.root(), &["put", "-", "piped.bin"], &data);
    success_stdout(&["put"], out);
    let home = server.data_dir().join("homes/alice");
    assert_eq!(fs::read(home.join("piped.bin")).unwrap(), data);
    // The spool is gone.
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("skiff-stdin-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = alice(&server, here.root(), &["get", "piped.bin", "-"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, data);
    assert!(!here.path("-").exists());
    // stdin needs a name on the server.
    let out = alice(&server, here.root(), &["put", "-"], b"x");
    assert_eq!(out.status.code(), Some(2));
}
