//! Arbitrary bytes as an FTP client's control stream, cut into lines and
//! parsed: see [`skiff_fuzz::check_ftp_line`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_fuzz::check_ftp_line(data));
