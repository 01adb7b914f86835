//! What the FTP and FTPS tests share: a server with FTP and one user, and
//! a way to run a Python client script against it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::{Server, TempDir, run};

use super::{serve_args, start_with};

/// `alice`'s password.
pub const PASSWORD: &str = "open sesame";
/// How long one client run may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// A server with FTP on 127.0.0.1 port 0 (and so a certificate), user
/// `alice` with `quota`, and `extra` flags.
pub fn start(quota: &str, extra: &[&str]) -> Server {
    let dir = TempDir::new("ftp");
    let data = dir.path("data");
    super::add_user(&data, "alice", PASSWORD, &["--quota", quota]);
    let mut args = serve_args(&data);
    args.extend(["--ftp", "127.0.0.1:0"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    start_with(&args, dir)
}

/// The FTP listener's port.
pub fn port(server: &Server) -> String {
    let addr = server.listener("ftp");
    addr.rsplit_once(':').expect("HOST:PORT").1.to_string()
}

/// `alice`'s home on disk.
pub fn home(server: &Server) -> PathBuf {
    server.data_dir().join("homes/alice")
}

/// Runs a Python script with the port, password and home as arguments;
/// it must print `OK` last.
pub fn python(server: &Server, script: &str) -> String {
    let out = run(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(port(server))
            .arg(PASSWORD)
            .arg(home(server)),
        b"",
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "python failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}
