//! The parts of skiff that the server (`skiffd`) and the client (`skiff`)
//! share: the frame codec, the protocol's vocabulary and a small blocking
//! client. The server's reactor lives in the `skiffd` binary.

pub mod client;
pub mod frame;
pub mod proto;
