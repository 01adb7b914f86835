//! The test kit: what the workspace's tests share, written once.
//!
//! - [`server`]: a real `skiffd` process on ephemeral loopback ports, its
//!   listeners read from its stdout, killed and its directory removed on
//!   drop; users made with `skiffd user add`.
//! - [`session`]: logged-in connections through the blocking client, and
//!   the small request helpers (`put`, `get`, the code of an error).
//! - [`wire`]: frames built by the wire contract (PROTOCOL.md section 1),
//!   not by the codec under test, so a test's input does not trust the
//!   code it checks.
//! - [`seed`]: random generators that print their seed and take
//!   `SKIFF_SEED`, so any failure can be replayed.
//! - [`process`] and [`temp`]: child processes and temp directories with
//!   every wait bounded.
//!
//! A test binary that needs the server names it itself (the server's
//! tests by `env!("CARGO_BIN_EXE_skiffd")`, the client's next to `skiff`),
//! and passes it in: Cargo only tells a package's own tests where its
//! binaries are.

#![forbid(unsafe_code)]

pub mod process;
pub mod seed;
pub mod server;
pub mod session;
pub mod temp;
pub mod wire;

pub use process::{Guard, drain, lines, run, wait_bounded};
pub use seed::seeded_rng;
pub use server::{Server, add_user, data_dir_with_users};
pub use session::{assert_closed, code, connect, eventually, get, login, put, roundtrip};
pub use temp::{TempDir, temp_dir};
pub use wire::{frame_bytes, header_bytes, md5_hex, obj};
