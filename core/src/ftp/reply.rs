//! Writing FTP replies: `code text CR LF`, or several lines whose first
//! is `code-text` and whose last is `code text` (RFC 959 §4.2).
//!
//! Text that came from the client (a path, a user name) is written with
//! any CR or LF replaced, so nothing a client names can end a reply line
//! early or forge another reply.

/// Appends a one-line reply.
pub fn line(out: &mut Vec<u8>, code: u16, text: &str) {
    out.extend_from_slice(format!("{code} ").as_bytes());
    text_into(out, text);
    out.extend_from_slice(b"\r\n");
}

/// Appends a reply of several lines: `first` after `code-`, each of
/// `middle` indented by one space (so none can look like an end line),
/// and `last` after `code `.
pub fn multi<S: AsRef<str>>(out: &mut Vec<u8>, code: u16, first: &str, middle: &[S], last: &str) {
    out.extend_from_slice(format!("{code}-").as_bytes());
    text_into(out, first);
    out.extend_from_slice(b"\r\n");
    for m in middle {
        out.push(b' ');
        text_into(out, m.as_ref());
        out.extend_from_slice(b"\r\n");
    }
    line(out, code, last);
}

/// A path for a `257` reply: in double quotes, a quote inside doubled
/// (RFC 959 appendix II).
pub fn quoted(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\"\""))
}

fn text_into(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cannot_be_split_by_what_a_client_named() {
        let mut out = Vec::new();
        line(&mut out, 550, "a\r\n230 b: no such file");
        assert_eq!(out, b"550 a  230 b: no such file\r\n");
        out.clear();
        multi(&mut out, 211, "Features:", &["EPSV", "REST STREAM"], "End");
        assert_eq!(
            out,
            b"211-Features:\r\n EPSV\r\n REST STREAM\r\n211 End\r\n"
        );
        assert_eq!(quoted("/say \"hi\""), "\"/say \"\"hi\"\"\"");
    }
}
