//! Replays a fuzz target's corpus on stable Rust: included by the tests
//! that guard what the fuzzers found (`core/tests/fuzz_corpus.rs`,
//! `proto/tests/fuzz_corpus.rs`), not part of the fuzz package itself.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// Runs `check` on every file of `fuzz/corpus/<target>`, and names each
/// file that fails. `manifest_dir` is the including crate's
/// `CARGO_MANIFEST_DIR` (a sibling of `fuzz/`).
pub fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let dir = Path::new(manifest_dir).join("../fuzz/corpus").join(target);
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
