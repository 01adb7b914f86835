//! Replays the fuzz corpus on stable, so that `cargo test` guards what
//! the fuzzers (`fuzz/`, nightly only) found: every file in
//! `fuzz/corpus/<target>/` goes through the same check function the
//! target runs under libFuzzer.
//!
//! The checks are compiled from the fuzz package's own source file rather
//! than copied here, so the two cannot drift apart.

#[path = "../../fuzz/src/frame.rs"]
mod checks;

#[path = "../../fuzz/src/replay.rs"]
mod corpus;

/// Runs `check` on every file of `fuzz/corpus/<target>`.
fn replay(target: &str, check: fn(&[u8])) {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn decoder_corpus() {
    replay("decoder", checks::check_decoder);
}

#[test]
fn header_corpus() {
    replay("header", checks::check_header);
}
