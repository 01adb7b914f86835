//! Replays the FTP fuzz corpus on stable, so that `cargo test` guards
//! what the fuzzers (`fuzz/`, nightly only) found: every file in
//! `fuzz/corpus/ftp_line/` and `fuzz/corpus/ftp_session/` goes through the
//! same check function the target runs under libFuzzer.
//!
//! The checks are compiled from the fuzz package's own source file rather
//! than copied here, so the two cannot drift apart.

#[path = "../../fuzz/src/ftp.rs"]
mod checks;

#[path = "../../fuzz/src/replay.rs"]
mod corpus;

/// Runs `check` on every file of `fuzz/corpus/<target>`.
fn replay(target: &str, check: fn(&[u8])) {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn ftp_line_corpus() {
    replay("ftp_line", checks::check_ftp_line);
}

#[test]
fn ftp_session_corpus() {
    replay("ftp_session", checks::check_ftp_session);
    checks::remove_ftp_data_dir();
}
