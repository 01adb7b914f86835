//! What only the client's tests need: which `skiffd` to run, `skiff`
//! commands with a clean environment, and a terminal ([`pty`]). The
//! harness itself (the server process, temp dirs, bounded runs) is the
//! workspace's test kit, `testkit`.

#![allow(dead_code)]

pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The server binary: `$SKIFFD`, or `skiffd` next to `skiff`.
pub fn skiffd() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFFD") {
        return bin.into();
    }
    skiffd_beside_skiff()
}

/// `skiffd` next to `skiff`, as `cargo test --workspace` builds it.
pub fn skiffd_beside_skiff() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff")).with_file_name("skiffd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`, which builds skiffd too",
        bin.display()
    );
    bin
}

/// A `skiff` command with a clean environment: no address, user or
/// password leaks in from the caller; `password` sets SKIFF_PASSWORD.
pub fn skiff_command(args: &[&str], password: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(args)
        .env_remove("SKIFF_ADDR")
        .env_remove("SKIFF_USER")
        .env_remove("SKIFF_PASSWORD")
        .env_remove("SKIFF_TLS_CA")
        .env_remove("SKIFF_KNOWN_HOSTS");
    if let Some(p) = password {
        cmd.env("SKIFF_PASSWORD", p);
    }
    cmd
}

/// Asserts that `skiff ARGS` succeeded; returns its stdout as text.
pub fn success_stdout(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "skiff {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}
