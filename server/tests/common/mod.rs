//! The server's tests start the skiffd this package builds; the harness
//! itself (the process, its listeners, sessions, frames) is the
//! workspace's test kit, `testkit`.

#![allow(dead_code)]

pub mod ftp;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::server::path_str;
use testkit::{Server, TempDir};

/// How long a `skiffd user` command may take (one argon2 hash).
pub const USER_LIMIT: Duration = Duration::from_secs(30);

/// The skiffd this package builds.
pub fn skiffd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_skiffd"))
}

/// Starts skiffd with every service on 127.0.0.1 port 0 (framed TCP and
/// Unix socket, UDP time and echo, raw echo) plus `extra` flags, on a
/// fresh data dir: it creates `demo`.
pub fn start(extra: &[&str]) -> Server {
    start_env(extra, &[])
}

/// Like [`start`], with extra environment variables.
pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let dir = TempDir::new("srv");
    let data = dir.path("data");
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        path_str(&data),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--unix".into(),
        dir.str("skiffd.sock"),
        "--udp-time".into(),
        "127.0.0.1:0".into(),
        "--udp-echo".into(),
        "127.0.0.1:0".into(),
        "--raw-echo".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut command = Command::new(skiffd());
    command.envs(env.iter().copied());
    Server::spawn(command, &args, dir, data)
}

/// Starts skiffd with exactly `args`, whose `--data-dir` is `dir/data`.
pub fn start_with(args: &[String], dir: TempDir) -> Server {
    let data = dir.path("data");
    Server::spawn(Command::new(skiffd()), args, dir, data)
}

/// Starts skiffd with exactly `args` in `dir` as its working directory,
/// so a relative `--data-dir data` there is `dir/data`.
pub fn start_in(args: &[String], dir: TempDir) -> Server {
    let data = dir.path("data");
    let mut command = Command::new(skiffd());
    command.current_dir(dir.root());
    Server::spawn(command, args, dir, data)
}

/// `serve --data-dir DATA --listen 127.0.0.1:0`, as a command line.
pub fn serve_args(data: &Path) -> Vec<String> {
    [
        "serve",
        "--data-dir",
        &path_str(data),
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts skiffd (framed TCP only) on a data dir prepared by `prepare`,
/// which gets the data dir before the server starts.
pub fn start_prepared(prepare: impl FnOnce(&Path)) -> Server {
    let dir = TempDir::new("prepared");
    let data = dir.path("data");
    prepare(&data);
    start_with(&serve_args(&data), dir)
}

/// Adds user `name` with `password` to the data dir of a server (running
/// or not yet started); `extra`: e.g. `--quota 1M`, `--exec`. It creates
/// the home.
pub fn add_user(data_dir: &Path, name: &str, password: &str, extra: &[&str]) {
    let mut args = vec![name];
    args.extend_from_slice(extra);
    testkit::add_user(skiffd(), data_dir, &args, password, USER_LIMIT);
}
