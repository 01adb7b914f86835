//! Arbitrary bytes as one frame header (and as the text of a size or
//! duration): see [`skiff_fuzz::check_header`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_fuzz::check_header(data));
