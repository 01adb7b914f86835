//! The skiff wire protocol, shared by the server (`skiffd`) and the client
//! (`skiff`): the frame codec ([`frame`]), the protocol's vocabulary
//! ([`proto`]), a small blocking client ([`client`]), over TLS too with the
//! `tls` feature (`tls`), and the few OS calls both binaries make ([`os`]). No mio: the server's loop is in `skiffd`,
//! its sans-I/O core in `skiffd-core`.

#![deny(unsafe_code)]

pub mod client;
pub mod frame;
#[allow(unsafe_code)] // the one module that calls libc directly
pub mod os;
pub mod proto;
#[cfg(feature = "tls")]
pub mod tls;
