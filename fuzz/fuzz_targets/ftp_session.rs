//! Arbitrary bytes as a script for an FTP session (control bytes, data
//! connections, time): see [`skiff_fuzz::check_ftp_session`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_fuzz::check_ftp_session(data));
