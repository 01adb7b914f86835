//! The datagram services of PROTOCOL.md section 4: time and echo.
//!
//! Each datagram is answered on its own, at once, from this pure function:
//! nothing is buffered per client, so a UDP flood costs no memory.
//!
//! UDP has no handshake, so a request's source address can be forged and
//! the reply sent to a victim. A reply much larger than its request turns
//! the server into an amplifier (the NTP `monlist` attacks; RFC 867
//! daytime servers were abused the same way). So a time reply is never
//! larger than [`reply_limit`] of its request: at most three times the
//! request's bytes on the wire, the limit QUIC puts on a server before it
//! has proof of the client's address (RFC 9000, section 8).

use crate::sys;

/// Largest UDP payload over IPv4; every reply must fit in one datagram.
pub const MAX_DATAGRAM: usize = 65507;

/// Most bytes a reply may put on the wire per byte of its request.
pub const AMPLIFICATION: usize = 3;

/// Bytes of IPv4 and UDP header every datagram carries (20 + 8): the
/// sender pays them for the request and the victim for the reply.
pub const WIRE_OVERHEAD: usize = 28;

/// The format used for an empty request.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Conversion characters `strftime` defines (C99, POSIX and glibc's `%P`, `%s`, `%k`, `%l`, `%+`).
const CONVERSIONS: &[u8] = b"aAbBcCdDeFgGhHIjklmMnOpPrRsStTuUVwWxXyYzZ+%";

/// Most payload bytes a reply to a `request_len`-byte request may carry:
/// [`AMPLIFICATION`] times the request on the wire, headers included,
/// minus the reply's own headers. Counting the headers is what keeps the
/// empty request working: its reply may carry 3 × 28 − 28 = 56 bytes,
/// room for the default format's 19. A payload of `n` bytes may get
/// `3n + 56`, and never more than one datagram.
pub fn reply_limit(request_len: usize) -> usize {
    request_len
        .saturating_add(WIRE_OVERHEAD)
        .saturating_mul(AMPLIFICATION)
        .saturating_sub(WIRE_OVERHEAD)
        .min(MAX_DATAGRAM)
}

/// The time service's answer to one datagram: the local time in the
/// requested format, or a text starting `error:` saying what was wrong.
/// `None` means no reply at all: even the error would be larger than
/// [`reply_limit`] allows (it never is today; the check stays so that a
/// longer message can never reopen the amplifier).
pub fn time_reply(request: &[u8]) -> Option<Vec<u8>> {
    let limit = reply_limit(request.len());
    let reply = match format_time(request, limit) {
        Ok(text) => text.into_bytes(),
        Err(e) => format!("error: {e}").into_bytes(),
    };
    (reply.len() <= limit).then_some(reply)
}

/// The local time in the requested format, in at most `limit` bytes.
fn format_time(request: &[u8], limit: usize) -> Result<String, String> {
    let format = match std::str::from_utf8(request) {
        Ok("") => DEFAULT_TIME_FORMAT,
        Ok(f) => f,
        Err(_) => return Err("format is not UTF-8".into()),
    };
    check_format(format)?;
    // strftime itself stops at the limit: a huge result is never built.
    sys::strftime_local(format, limit)
        .ok_or_else(|| format!("reply over {limit} bytes (3x the request)"))
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

    fn text(b: Option<Vec<u8>>) -> String {
        String::from_utf8(b.expect("a reply")).unwrap()
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

    #[test]
    fn the_limit_counts_headers_and_stays_in_one_datagram() {
        assert_eq!(reply_limit(0), 56);
        assert_eq!(reply_limit(1), 59);
        assert_eq!(reply_limit(6), 74);
        assert_eq!(reply_limit(MAX_DATAGRAM), MAX_DATAGRAM);
        assert_eq!(reply_limit(usize::MAX), MAX_DATAGRAM);
        for n in 0..2000 {
            let wire_in = n + WIRE_OVERHEAD;
            let wire_out = reply_limit(n) + WIRE_OVERHEAD;
            assert!(wire_out <= AMPLIFICATION * wire_in, "{n}");
        }
    }

    #[test]
    fn no_reply_is_more_than_three_times_its_request_on_the_wire() {
        let requests: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"%c".to_vec(),
            b"%9999Y".to_vec(),
            b"%4000c".to_vec(),
            b"%c%c%c".to_vec(),
            b"%Q".to_vec(),
            b"\xff".to_vec(),
            b"%".to_vec(),
            "%\u{10ffff}".as_bytes().to_vec(),
            "%c".repeat(5000).into_bytes(),
            "%_9999c".repeat(8).into_bytes(),
        ];
        for r in requests {
            let limit = reply_limit(r.len());
            if let Some(reply) = time_reply(&r) {
                assert!(reply.len() <= limit, "{r:?}: {} > {limit}", reply.len());
                assert!((reply.len() + WIRE_OVERHEAD) <= 3 * (r.len() + WIRE_OVERHEAD));
            }
        }
    }

    #[test]
    fn short_formats_still_work_and_long_results_get_a_short_error() {
        assert_eq!(text(time_reply(b"")).len(), 19);
        assert_eq!(
            text(time_reply(b"%c")).len(),
            "Mon Nov 23 05:05:31 2026".len()
        );
        // 6 bytes asking for 9999: the attack that gave 1666x.
        let reply = text(time_reply(b"%9999Y"));
        assert!(reply.starts_with("error: "), "{reply}");
        assert!(reply.len() <= reply_limit(6), "{reply}");
        // Three times a long request is plenty for a long format.
        assert_eq!(text(time_reply(b"%64Y")).len(), 64);
    }
}
