//! Tokens: what an event is for. A token is a typed slab key: its low two
//! bits say which table (signals and the job waker, listeners, clients,
//! commands' descriptors), the rest index it. An event for a key that is
//! no longer in its table is stale and ignored.

use mio::Token;

use crate::children::Fd;

/// What a token stands for. Tokens are typed slab keys: the low two bits
/// say which table, the rest index it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Signals,
    /// The worker pool finished jobs (its `Waker`).
    Jobs,
    Listener(usize),
    Client(usize),
    Child(usize, Fd),
}

impl Source {
    pub(super) fn token(self) -> Token {
        Token(match self {
            Source::Signals => 0,
            Source::Jobs => 4,
            Source::Listener(i) => (i << 2) | 1,
            Source::Client(k) => (k << 2) | 2,
            Source::Child(k, fd) => (((k << 2) | fd_bits(fd)) << 2) | 3,
        })
    }

    pub(super) fn from_token(t: Token) -> Option<Source> {
        match t.0 & 3 {
            0 if t.0 == 0 => Some(Source::Signals),
            0 if t.0 == 4 => Some(Source::Jobs),
            1 => Some(Source::Listener(t.0 >> 2)),
            2 => Some(Source::Client(t.0 >> 2)),
            3 => Some(Source::Child(t.0 >> 4, fd_from_bits(t.0 >> 2))),
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
        ];
        for source in sources {
            assert_eq!(Source::from_token(source.token()), Some(source));
        }
    }
}
