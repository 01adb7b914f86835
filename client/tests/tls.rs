//! `skiff --addr tls://...` against a real skiffd: trust on first use,
//! the same certificate accepted later, a changed one refused loudly, a
//! real authority with `--tls-ca`, and every kind of command over TLS.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{skiff_command, skiffd};
use testkit::{Server, TempDir, data_dir_with_users, run};

const RUN_LIMIT: Duration = Duration::from_secs(20);
const USER: &str = "tester";
const PASSWORD: &str = "tester-password";

/// A server with a TLS listener on `dir` (a data dir with [`USER`]), and
/// its TLS address as the client writes it.
fn start(dir: TempDir) -> (Server, String) {
    let server = Server::serve(&skiffd(), dir, &["--tls-listen", "127.0.0.1:0"]);
    let addr = format!("tls://{}", server.listener("tls"));
    (server, addr)
}

fn skiff(known_hosts: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec!["--known-hosts", known_hosts.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&mut skiff_command(&all, Some(PASSWORD)), b"", RUN_LIMIT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn first_use_pins_the_certificate_and_a_changed_one_is_refused() {
    let dir = data_dir_with_users(&skiffd(), &[&[USER]], PASSWORD, RUN_LIMIT);
    let (server, addr) = start(dir);
    let client_dir = TempDir::new("known");
    let known = client_dir.path("known_hosts");

    // First use: accepted, pinned, and said so on stderr.
    let out = skiff(&known, &["--addr", &addr, "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("proto"), "{}", text(&out.stdout));
    let served = std::fs::read_to_string(server.data_dir().join("tls/cert.pem")).unwrap();
    assert!(served.starts_with("-----BEGIN CERTIFICATE-----"));
    let pins = std::fs::read_to_string(&known).unwrap();
    let host = addr.trim_start_matches("tls://");
    let line = pins
        .lines()
        .find(|l| l.starts_with(host))
        .unwrap_or_else(|| panic!("no pin for {host}: {pins}"));
    let fingerprint = line.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        text(&out.stderr).contains(&fingerprint),
        "{}",
        text(&out.stderr)
    );

    // Same certificate: accepted quietly; commands that log in work too.
    let out = skiff(&known, &["--addr", &addr, "--user", USER, "quota"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("first TLS connection"));

    // A new certificate at the same address (the old one's files gone):
    // refused, with both fingerprints and the line to remove.
    let dir = server.kill();
    std::fs::remove_dir_all(dir.path("tls")).unwrap();
    let port = host.rsplit_once(':').unwrap().1;
    let server = Server::serve(
        &skiffd(),
        dir,
        &["--tls-listen", &format!("127.0.0.1:{port}")],
    );
    let out = skiff(&known, &["--addr", &addr, "hello"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("CERTIFICATE HAS CHANGED"), "{err}");
    assert!(err.contains(&fingerprint), "{err}");
    assert!(err.contains(&format!("{}:2", known.display())), "{err}");
    assert!(out.stdout.is_empty());
    drop(server);
}

#[test]
fn a_real_authority_with_tls_ca_checks_the_name() {
    let dir = data_dir_with_users(&skiffd(), &[&[USER]], PASSWORD, RUN_LIMIT);
    let (server, addr) = start(dir);
    let client_dir = TempDir::new("ca");
    let known = client_dir.path("known_hosts");
    let ca = server.data_dir().join("tls/cert.pem");
    let ca = ca.to_str().unwrap();
    // The certificate names 127.0.0.1 and localhost.
    let out = skiff(&known, &["--tls-ca", ca, "--addr", &addr, "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!known.exists(), "nothing is pinned with --tls-ca");
    let localhost = addr.replace("127.0.0.1", "localhost");
    let out = skiff(&known, &["--tls-ca", ca, "--addr", &localhost, "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn files_the_shell_and_exec_work_over_tls() {
    let dir = data_dir_with_users(&skiffd(), &[&[USER, "--exec"]], PASSWORD, RUN_LIMIT);
    let (_server, addr) = start(dir);
    let client_dir = TempDir::new("files");
    let known = client_dir.path("known_hosts");
    let local = client_dir.path("up.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &bytes).unwrap();
    let user = ["--addr", addr.as_str(), "--user", USER];

    let put = [&user[..], &["put", local.to_str().unwrap(), "up.bin"]].concat();
    let out = skiff(&known, &put);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = client_dir.path("back.bin");
    let get = [&user[..], &["get", "up.bin", back.to_str().unwrap()]].concat();
    let out = skiff(&known, &get);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "the file came back changed"
    );

    let exec = [&user[..], &["exec", "echo out; echo err >&2; exit 3"]].concat();
    let out = skiff(&known, &exec);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"));

    let shell = [&user[..], &["shell"]].concat();
    let mut all = vec!["--known-hosts", known.to_str().unwrap()];
    all.extend_from_slice(&shell);
    let out = run(
        &mut skiff_command(&all, Some(PASSWORD)),
        b"pwd\nls\necho hi\n",
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("up.bin") && shown.contains("hi"), "{shown}");
}

#[test]
fn a_tls_address_at_a_plain_port_says_which_port_to_use() {
    let dir = data_dir_with_users(&skiffd(), &[&[USER]], PASSWORD, RUN_LIMIT);
    let (server, _) = start(dir);
    let client_dir = TempDir::new("plain");
    let known = client_dir.path("known_hosts");
    let addr = format!("tls://{}", server.framed);
    let out = skiff(&known, &["--addr", &addr, "hello"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("is this skiffd's TLS port?"), "{err}");
}
