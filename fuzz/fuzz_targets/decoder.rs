//! Arbitrary bytes as a client's stream, cut into reads three ways: see
//! [`skiff_fuzz::check_decoder`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_fuzz::check_decoder(data));
