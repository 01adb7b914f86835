//! Protocol vocabulary shared by server and client: error codes, the
//! version, and the list of ops (see `docs/protocol.md`).

use std::fmt;
use std::str::FromStr;

/// Protocol version spoken (the `proto` field of `hello`).
pub const PROTO_VERSION: u32 = 1;

/// Error codes of PROTOCOL.md section 2. Clients branch on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The byte stream broke the framing rules; the connection closes.
    BadFrame,
    /// A well-framed request with missing or invalid fields.
    BadRequest,
    /// The op is not known.
    UnknownOp,
    /// The op needs a login first.
    AuthRequired,
    /// Unknown user or wrong password (never says which).
    AuthFailed,
    /// The user lacks the right for this op.
    Forbidden,
    /// No such file or directory.
    NotFound,
    /// The target already exists.
    Exists,
    /// A path component is not a directory.
    NotADirectory,
    /// The op wants a file but found a directory.
    IsADirectory,
    /// A directory to remove is not empty.
    NotEmpty,
    /// The upload would pass the user's quota.
    QuotaExceeded,
    /// The uploaded bytes do not match the declared MD5.
    ChecksumMismatch,
    /// A limit on connections or work was reached; try later.
    TooBusy,
    /// A deadline passed.
    Timeout,
    /// The server's file system failed.
    Io,
    /// A bug in the server.
    Internal,
}

impl Code {
    /// Every code, in the order PROTOCOL.md lists them.
    pub const ALL: [Code; 17] = [
        Code::BadFrame,
        Code::BadRequest,
        Code::UnknownOp,
        Code::AuthRequired,
        Code::AuthFailed,
        Code::Forbidden,
        Code::NotFound,
        Code::Exists,
        Code::NotADirectory,
        Code::IsADirectory,
        Code::NotEmpty,
        Code::QuotaExceeded,
        Code::ChecksumMismatch,
        Code::TooBusy,
        Code::Timeout,
        Code::Io,
        Code::Internal,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadFrame => "bad_frame",
            Code::BadRequest => "bad_request",
            Code::UnknownOp => "unknown_op",
            Code::AuthRequired => "auth_required",
            Code::AuthFailed => "auth_failed",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::Exists => "exists",
            Code::NotADirectory => "not_a_directory",
            Code::IsADirectory => "is_a_directory",
            Code::NotEmpty => "not_empty",
            Code::QuotaExceeded => "quota_exceeded",
            Code::ChecksumMismatch => "checksum_mismatch",
            Code::TooBusy => "too_busy",
            Code::Timeout => "timeout",
            Code::Io => "io",
            Code::Internal => "internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Code {
    type Err = ();
    fn from_str(s: &str) -> Result<Code, ()> {
        Code::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Parses a byte size: a plain number, or one with a binary suffix
/// (`K`, `M`, `G`, `T`; `10M` is 10 MiB). Optional trailing `B`/`iB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {text:?}")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {text:?} (use e.g. 1048576, 512K, 10M, 1G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration: plain seconds (`300`), or with a unit
/// (`250ms`, `30s`, `5m`, `2h`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use e.g. 30, 250ms, 30s, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in duration {text:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in Code::ALL {
            assert_eq!(c.as_str().parse::<Code>(), Ok(c));
        }
        assert!("nope".parse::<Code>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
