//! The control connection's input, cut into command lines.
//!
//! FTP commands are Telnet lines: text up to CR LF (a bare LF is taken
//! too, as every server does). Two things make it more than `split`:
//!
//! - **Telnet commands** may sit in the stream. A client aborting a
//!   transfer sends `IAC IP` and `IAC DM` (the "Synch") before `ABOR`
//!   (RFC 959 §4.1.3); Python's `ftplib` sends `IAC IP IAC` in-band and the
//!   `DM` as TCP urgent data, which without `SO_OOBINLINE` never reaches
//!   the stream, so the `IAC` before `ABOR` stands alone. The reader drops
//!   `IAC x` for every Telnet command `x`, the three bytes of an option
//!   negotiation (`IAC WILL/WONT/DO/DONT opt`, which a server may refuse
//!   by ignoring), and a lone `IAC` before a plain byte; `IAC IAC` is a
//!   data byte 255.
//! - **A bound.** A line longer than [`MAX_LINE`] is not kept: the reader
//!   swallows it up to its end and reports [`Line::TooLong`] once, so a
//!   client sending a gigabyte without a newline costs [`MAX_LINE`] bytes.
//!
//! ```text
//!   bytes ─▶ push() ─▶ [ line so far, ≤ MAX_LINE ] ─▶ next() ─▶ Line::Command(bytes)
//!                          └ over MAX_LINE: skip to LF ─▶ Line::TooLong
//! ```

/// Longest command line kept, in bytes, without its line end. A path may
/// be [`crate::jail::MAX_PATH`] bytes, plus a verb and a space.
pub const MAX_LINE: usize = crate::jail::MAX_PATH + 16;

/// Telnet "interpret as command".
const IAC: u8 = 255;
/// The first Telnet command byte (`SE`); lower bytes after an `IAC` are
/// not commands.
const FIRST_COMMAND: u8 = 240;
/// `WILL`, `WONT`, `DO`, `DONT`: option negotiations, followed by an option.
const NEGOTIATION: std::ops::RangeInclusive<u8> = 251..=254;

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// One command line, without its line end and Telnet commands.
    Command(Vec<u8>),
    /// A line longer than [`MAX_LINE`] ended; it was dropped.
    TooLong,
}

/// Where the reader is within the Telnet stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    /// Plain text.
    Text,
    /// After an `IAC`.
    Command,
    /// After `IAC WILL` (or `WONT`, `DO`, `DONT`): the option byte follows.
    Option,
}

/// Collects the input into lines.
#[derive(Debug)]
pub struct LineReader {
    /// The current line so far (Telnet commands removed). Unallocated
    /// between lines.
    line: Vec<u8>,
    /// Whole lines not taken yet, each with its line end cut off, and
    /// whether it was too long. At most a few: the session stops reading
    /// while any wait (see [`LineReader::has_line`]).
    ready: std::collections::VecDeque<Line>,
    /// The current line passed [`MAX_LINE`]: its bytes are dropped.
    overlong: bool,
    /// Telnet state between two calls of `push`.
    telnet: Telnet,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader {
            line: Vec::new(),
            ready: std::collections::VecDeque::new(),
            overlong: false,
            telnet: Telnet::Text,
        }
    }
}

impl LineReader {
    /// Takes bytes read from the socket; returns how many it used. It
    /// stops after the first whole line, so the caller can handle it
    /// before the next (a line may change what the reader should do next,
    /// `QUIT` for one); the rest is for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            match self.telnet {
                Telnet::Command => {
                    self.telnet = Telnet::Text;
                    if b == IAC {
                        self.keep(b);
                    } else if NEGOTIATION.contains(&b) {
                        self.telnet = Telnet::Option;
                    } else if b < FIRST_COMMAND {
                        // A lone IAC (its DM went out of band): the byte
                        // is text.
                        if self.text(b) {
                            return i + 1;
                        }
                    }
                    // else IP, DM, AYT, ...: dropped
                }
                Telnet::Option => self.telnet = Telnet::Text,
                Telnet::Text if b == IAC => self.telnet = Telnet::Command,
                Telnet::Text => {
                    if self.text(b) {
                        return i + 1;
                    }
                }
            }
        }
        bytes.len()
    }

    /// One text byte; true if it ended a line.
    fn text(&mut self, b: u8) -> bool {
        if b != b'\n' {
            self.keep(b);
            return false;
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let line = if self.overlong || self.line.len() > MAX_LINE {
            Line::TooLong
        } else {
            Line::Command(std::mem::take(&mut self.line))
        };
        self.line = Vec::new();
        self.overlong = false;
        self.ready.push_back(line);
        true
    }

    fn keep(&mut self, b: u8) {
        if self.overlong {
            return;
        }
        // One byte of slack for the CR before the LF.
        if self.line.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
            return;
        }
        self.line.push(b);
    }

    /// Whether a whole line waits to be taken.
    pub fn has_line(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next whole line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        self.ready.pop_front()
    }

    /// Whether a line has begun and not ended (for "closed mid-line").
    pub fn mid_line(&self) -> bool {
        !self.line.is_empty() || self.overlong
    }

    /// Memory held, in bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.line.capacity()
            + self
                .ready
                .iter()
                .map(|l| match l {
                    Line::Command(v) => v.capacity(),
                    Line::TooLong => 0,
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `bytes` holds, fed in pieces of `step` bytes.
    fn lines(bytes: &[u8], step: usize) -> Vec<Line> {
        let mut r = LineReader::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            let mut at = 0;
            while at < piece.len() {
                at += r.push(&piece[at..]);
                while let Some(l) = r.next_line() {
                    out.push(l);
                }
            }
        }
        out
    }

    fn cmd(s: &str) -> Line {
        Line::Command(s.as_bytes().to_vec())
    }

    #[test]
    fn crlf_and_bare_lf_at_every_split() {
        let input = b"USER a\r\nPASS b\nNOOP\r\n\r\n";
        for step in 1..input.len() {
            assert_eq!(
                lines(input, step),
                [cmd("USER a"), cmd("PASS b"), cmd("NOOP"), cmd("")],
                "step {step}"
            );
        }
    }

    #[test]
    fn telnet_synch_before_abor_in_every_form() {
        // IP and DM in-band; DM out of band (a lone IAC); a negotiation;
        // an escaped 255 in a name.
        let forms: [&[u8]; 4] = [
            b"\xff\xf4\xff\xf2ABOR\r\n",
            b"\xff\xf4\xffABOR\r\n",
            b"\xff\xfb\x01ABOR\r\n",
            b"\xf2ABOR\r\n",
        ];
        for form in &forms[..3] {
            for step in 1..form.len() {
                assert_eq!(lines(form, step), [cmd("ABOR")], "{form:?} step {step}");
            }
        }
        // A DM without its IAC is a plain (non-UTF-8) byte of the line.
        assert_eq!(lines(forms[3], 1), [Line::Command(b"\xf2ABOR".to_vec())]);
        assert_eq!(
            lines(b"STOR a\xff\xffb\r\n", 1),
            [Line::Command(b"STOR a\xffb".to_vec())]
        );
    }

    #[test]
    fn an_overlong_line_is_dropped_and_reported_once_without_growing() {
        let mut r = LineReader::default();
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..64 {
            assert_eq!(r.push(&chunk), chunk.len());
            assert!(r.buffered_bytes() <= 2 * MAX_LINE, "{}", r.buffered_bytes());
            assert!(!r.has_line());
        }
        let rest = b"\r\nNOOP\r\n";
        let used = r.push(rest);
        assert_eq!(r.next_line(), Some(Line::TooLong));
        r.push(&rest[used..]);
        assert_eq!(r.next_line(), Some(cmd("NOOP")));
        // A line of exactly MAX_LINE bytes is kept.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(lines(&exact, 4096), [Line::Command(vec![b'y'; MAX_LINE])]);
        let mut over = vec![b'y'; MAX_LINE + 2];
        over.push(b'\n');
        assert_eq!(lines(&over, 4096), [Line::TooLong]);
    }

    #[test]
    fn push_stops_after_each_line() {
        let mut r = LineReader::default();
        let input = b"NOOP\r\nNOOP\r\nNO";
        assert_eq!(r.push(input), 6);
        assert_eq!(r.push(&input[6..]), 6);
        assert_eq!(r.push(&input[12..]), 2);
        assert!(r.mid_line());
        assert_eq!(r.next_line(), Some(cmd("NOOP")));
        assert_eq!(r.next_line(), Some(cmd("NOOP")));
        assert_eq!(r.next_line(), None);
    }
}
