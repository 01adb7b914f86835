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
            Source::Child(k, fd) => (((k << 2) | fd as usize) << 2) | 3,
        })
    }

    pub(super) fn from_token(t: Token) -> Option<Source> {
        match t.0 & 3 {
            0 if t.0 == 0 => Some(Source::Signals),
            0 if t.0 == 4 => Some(Source::Jobs),
            1 => Some(Source::Listener(t.0 >> 2)),
            2 => Some(Source::Client(t.0 >> 2)),
            3 => Some(Source::Child(t.0 >> 4, Fd::from_bits(t.0 >> 2))),
            _ => None,
        }
    }
}
