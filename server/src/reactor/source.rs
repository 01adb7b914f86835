//! Tokens: what an event is for. A token is a typed slab key: its low
//! three bits say which table (signals and the job waker, listeners,
//! clients, commands' descriptors, FTP data sockets), the rest index it.
//! An event for a key that is no longer in its table is stale and ignored.

use mio::Token;

use crate::children::Fd;

/// Bits of a token that say which table it is for.
const TAG_BITS: u32 = 3;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;

/// Which of an FTP session's data sockets an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DataSocket {
    /// Its passive listener.
    Listener,
    /// Its data connection.
    Connection,
}

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Signals,
    /// The worker pool finished jobs (its `Waker`).
    Jobs,
    Listener(usize),
    Client(usize),
    Child(usize, Fd),
    /// A data socket of the FTP session that is client `k`.
    FtpData(usize, DataSocket),
}

impl Source {
    pub(super) fn token(self) -> Token {
        Token(match self {
            Source::Signals => 0,
            Source::Jobs => 1 << TAG_BITS,
            Source::Listener(i) => (i << TAG_BITS) | 1,
            Source::Client(k) => (k << TAG_BITS) | 2,
            Source::Child(k, fd) => (((k << 2) | fd_bits(fd)) << TAG_BITS) | 3,
            Source::FtpData(k, part) => (((k << 1) | part as usize) << TAG_BITS) | 4,
        })
    }

    pub(super) fn from_token(t: Token) -> Option<Source> {
        let key = t.0 >> TAG_BITS;
        match t.0 & TAG_MASK {
            0 if key == 0 => Some(Source::Signals),
            0 if key == 1 => Some(Source::Jobs),
            1 => Some(Source::Listener(key)),
            2 => Some(Source::Client(key)),
            3 => Some(Source::Child(key >> 2, fd_from_bits(key))),
            4 => Some(Source::FtpData(
                key >> 1,
                if key & 1 == 0 {
                    DataSocket::Listener
                } else {
                    DataSocket::Connection
                },
            )),
            _ => None,
        }
    }
}

/// The two bits a command's descriptor takes in its token.
fn fd_bits(fd: Fd) -> usize {
    match fd {
        Fd::Stdout => 0,
        Fd::Stderr => 1,
        Fd::Stdin => 2,
        Fd::Exit => 3,
    }
}

fn fd_from_bits(bits: usize) -> Fd {
    match bits & 3 {
        0 => Fd::Stdout,
        1 => Fd::Stderr,
        2 => Fd::Stdin,
        _ => Fd::Exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_its_token() {
        let sources = [
            Source::Signals,
            Source::Jobs,
            Source::Listener(0),
            Source::Listener(7),
            Source::Client(0),
            Source::Client(123_456),
            Source::Child(0, Fd::Stdout),
            Source::Child(9, Fd::Stderr),
            Source::Child(9, Fd::Stdin),
            Source::Child(1 << 20, Fd::Exit),
            Source::FtpData(0, DataSocket::Listener),
            Source::FtpData(77, DataSocket::Connection),
        ];
        for s in sources {
            assert_eq!(Source::from_token(s.token()), Some(s), "{s:?}");
        }
        assert_eq!(Source::from_token(Token(7)), None);
    }
}
