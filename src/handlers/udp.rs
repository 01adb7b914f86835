//! The datagram services of PROTOCOL.md section 4: time and echo.
//!
//! Each datagram is answered on its own, at once, from this pure function:
//! nothing is buffered per client, so a UDP flood costs no memory.

use crate::sys;

/// Largest UDP payload over IPv4; every reply must fit in one datagram.
pub const MAX_DATAGRAM: usize = 65507;

/// The format used for an empty request.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Conversion characters `strftime` defines (C99, POSIX and glibc's `%P`, `%s`, `%k`, `%l`, `%+`).
const CONVERSIONS: &[u8] = b"aAbBcCdDeFgGhHIjklmMnOpPrRsStTuUVwWxXyYzZ+%";

/// The time service's answer to one datagram: the local time in the
/// requested format, or a text starting `error:` saying what was wrong.
pub fn time_reply(request: &[u8]) -> Vec<u8> {
    let format = match std::str::from_utf8(request) {
        Ok("") => DEFAULT_TIME_FORMAT,
        Ok(f) => f,
        Err(_) => return b"error: format is not UTF-8".to_vec(),
    };
    if let Err(e) = check_format(format) {
        return format!("error: {e}").into_bytes();
    }
    match sys::strftime_local(format, MAX_DATAGRAM) {
        Some(text) => text.into_bytes(),
        None => b"error: the formatted time does not fit in one datagram".to_vec(),
    }
}

/// Checks a format before C sees it: glibc would copy unknown conversions
/// through silently, and a NUL would cut the format short.
fn check_format(format: &str) -> Result<(), String> {
    let bytes = format.as_bytes();
    if bytes.contains(&0) {
        return Err("format contains a NUL byte".into());
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && b"_-0^#".contains(&bytes[i]) {
            i += 1;
        }
        let digits = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i - digits > 4 {
            return Err(format!("field width at byte {start} is too large"));
        }
        if i < bytes.len() && (bytes[i] == b'E' || bytes[i] == b'O') {
            i += 1;
        }
        match bytes.get(i) {
            Some(c) if CONVERSIONS.contains(c) => i += 1,
            Some(_) => {
                let end = (i + 1..=bytes.len())
                    .find(|&e| format.is_char_boundary(e))
                    .unwrap_or(bytes.len());
                return Err(format!(
                    "unknown conversion {:?} at byte {start}",
                    &format[start..end]
                ));
            }
            None => return Err(format!("format ends inside a conversion at byte {start}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn formats_time() {
        let year = text(time_reply(b"%Y"));
        assert_eq!(year.len(), 4, "{year}");
        let full = text(time_reply(b""));
        assert_eq!(full.len(), "2026-11-23 04:50:52".len(), "{full}");
        assert!(text(time_reply(b"day %-d, %%")).starts_with("day "));
        assert!(text(time_reply(b"%Ey %Od %_5H")).len() >= 8);
    }

    #[test]
    fn invalid_formats_get_error_text() {
        for bad in [
            &b"%Q"[..],
            b"abc %",
            b"%5",
            b"\xff%Y",
            b"%Y\0",
            b"%99999Y",
            "%\u{e9}".as_bytes(),
        ] {
            let reply = text(time_reply(bad));
            assert!(reply.starts_with("error: "), "{bad:?} -> {reply}");
        }
    }

    #[test]
    fn huge_output_does_not_fit_one_datagram() {
        let format = "%c".repeat(10_000);
        assert!(text(time_reply(format.as_bytes())).starts_with("error: "));
    }
}
