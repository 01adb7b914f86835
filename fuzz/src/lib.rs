//! The properties the fuzz targets check, one module per part of skiff.
//!
//! They live here, not in the targets, so that two builds can run them:
//!
//! - `fuzz/fuzz_targets/*.rs`, under libFuzzer (`cargo fuzz run`, nightly),
//!   which calls them with generated inputs;
//! - an ordinary test in the package the code belongs to, on stable, which
//!   pulls the module's file in with `#[path]` and calls its check on every
//!   file of `fuzz/corpus/<target>/`, so that `cargo test` keeps every
//!   input the fuzzer ever found interesting passing.
//!
//! | module | targets | replayed by |
//! |---|---|---|
//! | [`frame`] | `decoder`, `header` | `proto/tests/fuzz_corpus.rs` |
//! | [`ftp`] | `ftp_line`, `ftp_session` | `core/tests/fuzz_corpus.rs` |
//! | [`tls`] | `tls_session` | a unit test in `server/src/tls/session.rs` |
//!
//! A check "fails" by panicking, which is what libFuzzer reports as a
//! crash and what `cargo test` reports as a failed test.

pub mod frame;
pub mod ftp;
pub mod tls;

/// The server's TLS layer, compiled from its source: `skiffd` is a binary
/// with no library to depend on. [`tls`] reaches it as `super::session`,
/// as it does inside the server.
#[path = "../../server/src/tls/session.rs"]
#[allow(dead_code)]
pub mod session;

/// The server's self-signed certificate maker, for the certificate the
/// fuzzed TLS sessions present.
#[path = "../../server/src/tls/selfsigned.rs"]
#[allow(dead_code)]
mod selfsigned;

pub use frame::{check_decoder, check_header};
pub use ftp::{check_ftp_line, check_ftp_session};
pub use tls::check_tls_session;

/// The TLS configurations [`check_tls_session`] needs, made once per
/// process: the server's with a fresh self-signed certificate, and a
/// client's that trusts it.
pub fn tls_configs() -> &'static tls::Configs {
    static CONFIGS: std::sync::OnceLock<tls::Configs> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        let made = selfsigned::generate(&["localhost".into()]).expect("a certificate");
        tls::Configs::new(made.cert_der, made.key_der)
    })
}
