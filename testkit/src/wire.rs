//! Frames as bytes, built by the wire contract (PROTOCOL.md section 1):
//! a 4-byte big-endian header length, the header as JSON, the body.
//!
//! Written here with `serde_json` alone rather than with `skiff::frame`,
//! so the bytes a test feeds the decoder, the connection or the server do
//! not come from the code under test.

use md5::{Digest, Md5};
use serde_json::{Map, Value};

/// One frame: `header` with `size` set to the body's length, then `body`.
///
/// # Panics
/// If `header` is not a JSON object.
pub fn frame_bytes(header: Value, body: &[u8]) -> Vec<u8> {
    let mut header = obj(header);
    header.insert("size".into(), body.len().into());
    let mut out = header_bytes(Value::Object(header));
    out.extend_from_slice(body);
    out
}

/// The length prefix and `header` exactly as given: a frame with no body,
/// or the head of one whose `size` bytes the test sends later (or never).
///
/// # Panics
/// If `header` is not a JSON object.
pub fn header_bytes(header: Value) -> Vec<u8> {
    let head = serde_json::to_vec(&obj(header)).expect("a JSON object serializes");
    let len = u32::try_from(head.len()).expect("a test header fits a u32");
    let mut out = Vec::with_capacity(4 + head.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out
}

/// The map inside a `json!({...})`, for the client's `send`.
///
/// # Panics
/// If `v` is not an object.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}

/// MD5 of `bytes` in lower-case hex, as `put` and `get` carry it.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_is_length_header_body() {
        let bytes = frame_bytes(json!({"op":"echo"}), b"hi");
        let head = br#"{"op":"echo","size":2}"#;
        assert_eq!(&bytes[..4], &(head.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..4 + head.len()], head);
        assert_eq!(&bytes[4 + head.len()..], b"hi");
    }

    #[test]
    fn md5_of_nothing() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
