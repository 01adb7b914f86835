//! Replays the fuzz corpus on stable, so that `cargo test` guards what
//! the fuzzers (`fuzz/`, nightly only) found: every file in
//! `fuzz/corpus/<target>/` goes through the same check function the
//! target runs under libFuzzer.
//!
//! The checks are compiled from the fuzz package's own source file rather
//! than copied here, so the two cannot drift apart.

#[path = "../../fuzz/src/frame.rs"]
mod checks;

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// Runs `check` on every file of `fuzz/corpus/<target>`, and names each
/// file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = fs::read(file).unwrap();
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failing corpus files: {failed:#?}");
}

#[test]
fn decoder_corpus() {
    replay("decoder", checks::check_decoder);
}

#[test]
fn header_corpus() {
    replay("header", checks::check_header);
}
