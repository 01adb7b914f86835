//! The parts of skiff that the server (`skiffd`) and the client (`skiff`)
//! share: the frame codec, the protocol's vocabulary, a small blocking
//! client and the few OS calls both make. The server's reactor lives in the `skiffd` binary.

pub mod client;
pub mod frame;
pub mod os;
pub mod proto;
