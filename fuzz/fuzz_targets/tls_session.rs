//! Arbitrary bytes as ciphertext for the server's TLS session, from the
//! first byte or after a real handshake: see [`skiff_fuzz::check_tls_session`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_fuzz::check_tls_session(skiff_fuzz::tls_configs(), data));
