//! Sessions through the blocking client (`skiff::client`), with a read
//! timeout on every connection so no test waits forever, and the request
//! helpers several test files need.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::{Client, ClientError, Frame};

use crate::wire::{md5_hex, obj};

/// How long any one read on a test connection may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `addr` (`HOST:PORT` or `unix:PATH`) with a [`READ_TIMEOUT`].
pub fn connect(addr: &str) -> Client {
    let c = Client::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.stream()
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set a read timeout");
    c
}

/// A connection to `addr` logged in as `user`; returns it with the login
/// reply.
///
/// # Panics
/// If the login fails.
pub fn login(addr: &str, user: &str, password: &str) -> (Client, Frame) {
    let mut c = connect(addr);
    let reply = c
        .request(json!({"op":"login","user":user,"password":password}), b"")
        .unwrap_or_else(|e| panic!("login {user}: {e:?}"));
    (c, reply)
}

/// Sends a request and returns the reply, errors included.
pub fn roundtrip(c: &mut Client, header: Value, body: &[u8]) -> Frame {
    c.send(obj(header), body).expect("send");
    c.recv().expect("a reply within the read timeout")
}

/// Asserts the peer closed the connection (EOF, or a reset).
pub fn assert_closed(c: &mut Client) {
    match c.recv() {
        Err(ClientError::Io(_)) => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

/// The code of an error reply.
///
/// # Panics
/// If `r` is a success or not a reply at all.
pub fn code(r: Result<Frame, ClientError>) -> String {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// A whole upload: `put` (resuming where the server says), then `data`
/// with the rest; returns the final reply.
pub fn put(c: &mut Client, path: &str, bytes: &[u8]) -> Result<Frame, ClientError> {
    let id = c.next_id();
    let md5 = md5_hex(bytes);
    c.send(
        obj(json!({"op":"put","id":id,"path":path,"length":bytes.len(),"md5":md5})),
        b"",
    )?;
    let f = c.recv()?.into_result()?;
    let offset = f.header.u64("offset").expect("put's ok has an offset");
    let offset = usize::try_from(offset).expect("offset fits memory");
    c.send(obj(json!({"op":"data","id":id})), &bytes[offset..])?;
    c.recv()?.into_result()
}

/// A whole download: the body and the MD5 the server gave.
///
/// # Panics
/// If the body is not as long as the reply says the file is.
pub fn get(c: &mut Client, path: &str) -> Result<(Vec<u8>, String), ClientError> {
    let f = c.request(json!({"op":"get","path":path}), b"")?;
    assert_eq!(f.header.u64("length"), Some(f.body.len() as u64));
    let md5 = f.header.str("md5").expect("get's ok has an md5");
    Ok((f.body, md5.to_string()))
}

/// Polls until `f` holds, at most 10 s; the test fails naming `what`.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
