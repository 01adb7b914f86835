//! The frame codec: the cure for "sticky packets", shared by server and client.
//!
//! TCP delivers a byte stream, not messages. Every message therefore travels
//! as a frame:
//!
//! ```text
//! +-------------------+---------------------------+------------------------+
//! | H: u32 big-endian | H bytes: a JSON object    | body: exactly          |
//! | 1 <= H <= 65536   | in UTF-8, with "op"       | header.size bytes      |
//! +-------------------+---------------------------+------------------------+
//! ```
//!
//! [`Decoder`] is sans-I/O: it is handed whatever bytes happen to be
//! buffered, says how many it used and what they made, and never needs a
//! whole body in memory — a body comes out as slices of the input, so a
//! 1 GiB upload passes through a 64 KiB buffer. Its state is two words:
//!
//! ```text
//!            4+H bytes buffered             size bytes passed on
//!   AwaitHeader ───────────────▶ Body{remaining} ───────────────▶ AwaitHeader
//!        ▲  need more: Ok(None)        │ remaining == 0: End
//!        └─────────────────────────────┘
//! ```
//!
//! Limits are checked before anything is buffered: the length prefix is
//! judged as soon as its four bytes are visible, and `size` against the
//! body limit as soon as the header parses.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Number, Value};

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Largest header the protocol allows, in bytes.
pub const MAX_HEADER: usize = 65536;
/// Most bytes a whole frame head (prefix plus header) can take.
pub const MAX_HEAD: usize = PREFIX_LEN + MAX_HEADER;

/// Why a byte stream is not a valid sequence of frames. Each one means the
/// stream is out of sync for good: the connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix was 0.
    EmptyHeader,
    /// The length prefix was above [`MAX_HEADER`].
    HeaderTooLarge(u32),
    /// The header bytes were not UTF-8 JSON.
    NotJson(String),
    /// The header was JSON but not an object.
    NotObject,
    /// The header had no string `op`.
    MissingOp,
    /// `size` was present but not a non-negative integer.
    BadSize,
    /// `size` was above the receiver's body limit.
    BodyTooLarge {
        /// The declared body length.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::EmptyHeader => write!(f, "header length is 0"),
            FrameError::HeaderTooLarge(n) => {
                write!(f, "header length {n} is above the limit of {MAX_HEADER}")
            }
            FrameError::NotJson(e) => write!(f, "header is not UTF-8 JSON: {e}"),
            FrameError::NotObject => write!(f, "header is not a JSON object"),
            FrameError::MissingOp => write!(f, "header has no string \"op\""),
            FrameError::BadSize => write!(f, "\"size\" is not a non-negative integer"),
            FrameError::BodyTooLarge { size, limit } => {
                write!(f, "body of {size} bytes is above the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A parsed frame header. `op`, `id` and `size` are lifted out; every other
/// field stays in `fields` for the handler of that op to read.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// What the frame asks for or answers.
    pub op: String,
    /// The client's request id, copied into every frame about the request.
    pub id: Option<Number>,
    /// `id` was present but not an integer: the request gets `bad_request`.
    pub bad_id: bool,
    /// Length of the body that follows the header.
    pub size: u64,
    /// All other header fields.
    pub fields: Map<String, Value>,
}

impl Header {
    /// Parses and validates header bytes (without the length prefix).
    ///
    /// `op`, `size` and `id` are picked out while the object is read, so
    /// they never enter (and leave) the field map: a plain `echo` header
    /// allocates no map at all. This is the hot path of every request.
    pub fn parse(bytes: &[u8]) -> Result<Header, FrameError> {
        match parse_plain(bytes) {
            Some(header) => Ok(header),
            None => Header::parse_with_serde(bytes),
        }
    }

    /// The general route alone: serde_json, through `RawHeader`.
    /// [`Header::parse`] is this with [`parse_plain`] tried first; both
    /// are public so that the fuzz checks (`fuzz/src/lib.rs`) can hold
    /// the two routes against each other.
    pub fn parse_with_serde(bytes: &[u8]) -> Result<Header, FrameError> {
        let raw: RawHeader =
            serde_json::from_slice(bytes).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let RawHeader::Object {
            op,
            size,
            id,
            fields,
        } = raw
        else {
            return Err(FrameError::NotObject);
        };
        let op = match op {
            Some(Value::String(op)) => op,
            _ => return Err(FrameError::MissingOp),
        };
        let size = match size {
            None => 0,
            Some(Value::Number(n)) => n.as_u64().ok_or(FrameError::BadSize)?,
            Some(_) => return Err(FrameError::BadSize),
        };
        let (id, bad_id) = match id {
            None | Some(Value::Null) => (None, false),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => (Some(n), false),
            Some(_) => (None, true),
        };
        Ok(Header {
            op,
            id,
            bad_id,
            size,
            fields,
        })
    }

    /// A string field, if present and a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// A non-negative integer field, if present and one.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    /// A boolean field; absent or not a boolean reads as `false`.
    pub fn flag(&self, key: &str) -> bool {
        self.fields
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// The common header, read without serde_json: one flat object whose
/// values are ASCII strings without escapes, non-negative integers,
/// `true`, `false` or `null`, with a string `op`. It was 60 % of the
/// server's user-space time per small echo (BENCHMARKS.md §8c). Anything
/// else (escapes, non-ASCII, floats, negative numbers, nesting, bad
/// syntax, a bad `op`, `id` or `size`) gives `None` and goes to
/// serde_json, which alone decides what is an error. Whenever it answers,
/// it must answer exactly what [`Header::parse_with_serde`] would.
pub fn parse_plain(bytes: &[u8]) -> Option<Header> {
    // One UTF-8 check for the whole header; strings are then slices of it.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scanner { text, bytes, at: 0 };
    s.skip_ws();
    s.expect(b'{')?;
    s.skip_ws();
    let (mut op, mut size, mut id) = (None, None, None);
    let mut fields = Map::new();
    if !s.accept(b'}') {
        loop {
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            match (key, s.scalar()?) {
                ("op", Plain::Str(v)) => op = Some(v),
                ("size", Plain::Int(n)) => size = Some(n),
                ("id", Plain::Int(n)) => id = Some(Some(Number::from(n))),
                ("id", Plain::Null) => id = Some(None),
                ("op" | "size" | "id", _) => return None,
                (key, value) => {
                    fields.insert(key.to_string(), value.into());
                }
            }
            s.skip_ws();
            if s.accept(b',') {
                s.skip_ws();
                continue;
            }
            s.expect(b'}')?;
            break;
        }
    }
    s.skip_ws();
    if s.at != bytes.len() {
        return None;
    }
    Some(Header {
        op: op?.to_string(),
        id: id.flatten(),
        bad_id: false,
        size: size.unwrap_or(0),
        fields,
    })
}

/// A value [`parse_plain`] understands.
enum Plain<'a> {
    Str(&'a str),
    Int(u64),
    Bool(bool),
    Null,
}

impl From<Plain<'_>> for Value {
    fn from(p: Plain<'_>) -> Value {
        match p {
            Plain::Str(s) => Value::String(s.to_string()),
            Plain::Int(n) => Value::Number(n.into()),
            Plain::Bool(b) => Value::Bool(b),
            Plain::Null => Value::Null,
        }
    }
}

/// A cursor over header bytes for [`parse_plain`]; every method returns
/// `None` for anything outside the plain subset.
struct Scanner<'a> {
    text: &'a str,
    /// `text` as bytes, for scanning.
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn accept(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += hit as usize;
        hit
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.accept(byte).then_some(())
    }

    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => break,
                // Escapes, control characters and non-ASCII: serde_json.
                0x20..=0x7f if self.bytes[self.at] != b'\\' => self.at += 1,
                _ => return None,
            }
        }
        // Both ends are ASCII quotes, so char boundaries: this cannot fail.
        let s = self.text.get(start..self.at)?;
        self.at += 1;
        Some(s)
    }

    fn scalar(&mut self) -> Option<Plain<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Plain::Str),
            b'0'..=b'9' => {
                let start = self.at;
                let mut n: u64 = 0;
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                    self.at += 1;
                }
                // Leading zeros are not JSON; fractions and exponents are
                // not plain. Either way the next byte is not a delimiter.
                if self.bytes[start] == b'0' && self.at - start > 1 {
                    return None;
                }
                Some(Plain::Int(n))
            }
            _ => {
                let rest = &self.bytes[self.at..];
                let (value, len) = if rest.starts_with(b"true") {
                    (Plain::Bool(true), 4)
                } else if rest.starts_with(b"false") {
                    (Plain::Bool(false), 5)
                } else if rest.starts_with(b"null") {
                    (Plain::Null, 4)
                } else {
                    return None;
                };
                self.at += len;
                Some(value)
            }
        }
    }
}

/// A header as read, before validation: any JSON value, with an object's
/// three framing fields held apart from the rest.
enum RawHeader {
    Object {
        op: Option<Value>,
        size: Option<Value>,
        id: Option<Value>,
        fields: Map<String, Value>,
    },
    NotObject,
}

/// A key of a header object: the three the framing needs, or another.
enum Key {
    Op,
    Size,
    Id,
    Other(String),
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "op" => Key::Op,
                    "size" => Key::Size,
                    "id" => Key::Id,
                    other => Key::Other(other.to_string()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawHeader, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let (mut op, mut size, mut id) = (None, None, None);
                let mut fields = Map::new();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Op => op = Some(map.next_value()?),
                        Key::Size => size = Some(map.next_value()?),
                        Key::Id => id = Some(map.next_value()?),
                        Key::Other(k) => {
                            fields.insert(k, map.next_value()?);
                        }
                    }
                }
                Ok(RawHeader::Object {
                    op,
                    size,
                    id,
                    fields,
                })
            }
            // Anything but an object is read to its end (so the JSON is
            // still checked) and then refused.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawHeader, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawHeader::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
            fn visit_unit<E>(self) -> Result<RawHeader, E> {
                Ok(RawHeader::NotObject)
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

/// What one step of decoding produced.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// A whole header; its body (possibly empty) follows.
    Header(Header),
    /// The next piece of the current body, borrowed from the input.
    Body(&'a [u8]),
    /// The current body is complete; the next frame starts.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHeader,
    Body { remaining: u64 },
}

/// Incremental, allocation-free (but for the parsed header) frame decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Where in the frame the next byte belongs.
    state: State,
    /// Largest body accepted; `size` above it is a [`FrameError`].
    max_body: u64,
}

impl Decoder {
    /// A decoder that refuses bodies above `max_body` bytes.
    pub fn new(max_body: u64) -> Decoder {
        Decoder {
            state: State::AwaitHeader,
            max_body,
        }
    }

    /// Decodes one step from `input`: `Ok(Some((used, what)))` consumed
    /// `used` bytes; `Ok(None)` needs more input first (see
    /// [`Decoder::needed`]); `Err` means the stream is corrupt.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<Option<(usize, Decoded<'a>)>, FrameError> {
        match self.state {
            State::AwaitHeader => {
                let Some(prefix) = input.first_chunk::<PREFIX_LEN>() else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(*prefix);
                if len == 0 {
                    return Err(FrameError::EmptyHeader);
                }
                if len as usize > MAX_HEADER {
                    return Err(FrameError::HeaderTooLarge(len));
                }
                let end = PREFIX_LEN + len as usize;
                let Some(bytes) = input.get(PREFIX_LEN..end) else {
                    return Ok(None);
                };
                let header = Header::parse(bytes)?;
                if header.size > self.max_body {
                    return Err(FrameError::BodyTooLarge {
                        size: header.size,
                        limit: self.max_body,
                    });
                }
                self.state = State::Body {
                    remaining: header.size,
                };
                Ok(Some((end, Decoded::Header(header))))
            }
            State::Body { remaining: 0 } => {
                self.state = State::AwaitHeader;
                Ok(Some((0, Decoded::End)))
            }
            State::Body { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                self.state = State::Body {
                    remaining: remaining - n as u64,
                };
                Ok(Some((n, Decoded::Body(&input[..n]))))
            }
        }
    }

    /// How many bytes the current partial frame head needs in one
    /// contiguous buffer, given `buffered` bytes of it (0 while in a body).
    pub fn needed(&self, buffered: &[u8]) -> usize {
        match (self.state, buffered.first_chunk::<PREFIX_LEN>()) {
            (State::AwaitHeader, None) => PREFIX_LEN,
            (State::AwaitHeader, Some(p)) => {
                PREFIX_LEN + (u32::from_be_bytes(*p) as usize).min(MAX_HEADER)
            }
            (State::Body { .. }, _) => 0,
        }
    }

    /// Body bytes still to come for the current frame (0 between frames).
    pub fn body_remaining(&self) -> u64 {
        match self.state {
            State::AwaitHeader => 0,
            State::Body { remaining } => remaining,
        }
    }

    /// True between frames: nothing of a frame has been consumed.
    pub fn at_boundary(&self) -> bool {
        self.state == State::AwaitHeader
    }
}

/// Writes one header into `out`: a placeholder prefix, then the JSON
/// object field by field (in the order given, `op` first), then the real
/// prefix. No intermediate map is built, which keeps the hot reply path
/// free of allocations.
pub struct HeaderWriter<'a> {
    /// The buffer the frame is appended to.
    out: &'a mut Vec<u8>,
    /// Where this frame's length prefix sits in `out`.
    start: usize,
}

impl<'a> HeaderWriter<'a> {
    /// Starts a header with the given `op` (one of our own plain names).
    pub fn new(out: &'a mut Vec<u8>, op: &str) -> HeaderWriter<'a> {
        let start = out.len();
        out.extend_from_slice(&[0; PREFIX_LEN]);
        debug_assert!(
            op.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        );
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(op.as_bytes());
        out.push(b'"');
        HeaderWriter { out, start }
    }

    /// Adds `key: value`. Keys are our own plain names; values are escaped.
    pub fn field(self, key: &str, value: impl Serialize) -> Self {
        // Keys are our own plain names: no need to run them through the
        // escaping serializer on every reply.
        debug_assert!(
            key.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        );
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        write_json(self.out, value);
        self
    }

    /// Adds `key: value` when `value` is `Some`.
    pub fn opt(self, key: &str, value: Option<impl Serialize>) -> Self {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// Closes the object and patches the length prefix, or, if the header
    /// came out above [`MAX_HEADER`], removes it and says so.
    pub fn try_finish(self) -> Result<(), FrameError> {
        let len = self.out.len() + 1 - self.start - PREFIX_LEN;
        if len > MAX_HEADER {
            self.out.truncate(self.start);
            return Err(FrameError::HeaderTooLarge(len as u32));
        }
        self.finish();
        Ok(())
    }

    /// Closes the object and patches the length prefix.
    ///
    /// # Panics
    /// If the header came out above [`MAX_HEADER`]: a bug in the caller,
    /// which must bound what it puts in a header.
    pub fn finish(self) {
        self.out.push(b'}');
        let len = self.out.len() - self.start - PREFIX_LEN;
        assert!(len <= MAX_HEADER, "header of {len} bytes is too large");
        self.out[self.start..self.start + PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_json(out: &mut Vec<u8>, value: impl Serialize) {
    // Writing to a Vec cannot fail, and every value we serialize (strings,
    // numbers, our own structs and serde_json Values) is representable.
    serde_json::to_writer(out, &value).expect("serializing to a Vec never fails");
}

/// Encodes a header from any serializable object (a `serde_json` map, say).
pub fn encode_header(out: &mut Vec<u8>, header: &impl Serialize) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    write_json(out, header);
    let len = out.len() - start - PREFIX_LEN;
    if len > MAX_HEADER {
        out.truncate(start);
        return Err(FrameError::HeaderTooLarge(len as u32));
    }
    out[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;
    use serde_json::json;
    use testkit::{frame_bytes, seeded_rng};

    /// Feeds `input` through a decoder in the given chunk sizes (cycled),
    /// buffering partial heads as a real receiver would.
    fn decode_in_chunks(
        input: &[u8],
        sizes: &[usize],
    ) -> Result<Vec<(Header, Vec<u8>)>, FrameError> {
        let mut d = Decoder::new(1 << 30);
        let mut pending: Vec<u8> = Vec::new();
        let mut frames: Vec<(Header, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = sizes[i % sizes.len()].min(input.len() - pos);
            i += 1;
            pending.extend_from_slice(&input[pos..pos + n]);
            pos += n;
            let mut used = 0;
            while let Some((n, what)) = d.decode(&pending[used..])? {
                used += n;
                match what {
                    Decoded::Header(h) => frames.push((h, Vec::new())),
                    Decoded::Body(b) => frames.last_mut().unwrap().1.extend_from_slice(b),
                    Decoded::End => {}
                }
            }
            pending.drain(..used);
        }
        assert!(pending.len() < MAX_HEAD + 1);
        Ok(frames)
    }

    #[test]
    fn splits_at_every_byte_boundary() {
        let mut input = frame_bytes(json!({"op":"echo","id":7}), b"hello");
        input.extend(frame_bytes(json!({"op":"bye"}), b""));
        let whole = decode_in_chunks(&input, &[input.len()]).unwrap();
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].0.op, "echo");
        assert_eq!(whole[0].0.id, Some(7.into()));
        assert_eq!(whole[0].1, b"hello");
        for split in 1..input.len() {
            let got = decode_in_chunks(&input, &[split, input.len()]).unwrap();
            assert_eq!(got, whole, "split at {split}");
        }
        assert_eq!(decode_in_chunks(&input, &[1]).unwrap(), whole);
    }

    #[test]
    fn a_thousand_frames_in_one_read() {
        let mut input = Vec::new();
        for i in 0..1000u32 {
            input.extend(frame_bytes(json!({"op":"echo","id":i}), &i.to_be_bytes()));
        }
        let got = decode_in_chunks(&input, &[input.len()]).unwrap();
        assert_eq!(got.len(), 1000);
        for (i, (h, body)) in got.iter().enumerate() {
            assert_eq!(h.id, Some((i as u32).into()));
            assert_eq!(body, &(i as u32).to_be_bytes());
        }
    }

    #[test]
    fn random_splits_agree_with_whole() {
        let mut rng = seeded_rng("random_splits_agree_with_whole");
        let mut input = Vec::new();
        for i in 0..200u32 {
            let body: Vec<u8> = (0..rng.random_range(0..3000))
                .map(|_| rng.random())
                .collect();
            input.extend(frame_bytes(
                json!({"op":"echo","id":i,"pad":"x".repeat(i as usize)}),
                &body,
            ));
        }
        let whole = decode_in_chunks(&input, &[input.len()]).unwrap();
        for _ in 0..20 {
            let sizes: Vec<usize> = (0..50).map(|_| rng.random_range(1..5000)).collect();
            assert_eq!(decode_in_chunks(&input, &sizes).unwrap(), whole);
        }
    }

    #[test]
    fn body_is_passed_on_without_waiting_for_all_of_it() {
        let mut d = Decoder::new(1 << 40);
        let mut input = Vec::new();
        encode_header(&mut input, &json!({"op":"put","size": 1u64 << 39})).unwrap();
        input.extend_from_slice(b"abc");
        let (n, what) = d.decode(&input).unwrap().unwrap();
        assert!(matches!(what, Decoded::Header(ref h) if h.size == 1 << 39));
        let (m, what) = d.decode(&input[n..]).unwrap().unwrap();
        assert_eq!((m, what), (3, Decoded::Body(b"abc")));
        assert_eq!(d.body_remaining(), (1 << 39) - 3);
    }

    #[test]
    fn prefix_limits_are_checked_before_buffering() {
        let mut d = Decoder::new(10);
        assert_eq!(d.decode(&[0, 0, 0]), Ok(None));
        assert_eq!(d.decode(&[0, 0, 0, 0]), Err(FrameError::EmptyHeader));
        let over = (MAX_HEADER as u32 + 1).to_be_bytes();
        assert_eq!(
            Decoder::new(10).decode(&over),
            Err(FrameError::HeaderTooLarge(MAX_HEADER as u32 + 1))
        );
        // exactly the limit is fine: it just needs more bytes
        let at = (MAX_HEADER as u32).to_be_bytes();
        assert_eq!(Decoder::new(10).decode(&at), Ok(None));
        assert_eq!(Decoder::new(10).needed(&at), MAX_HEAD);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let raw = |s: &[u8]| {
            let mut v = (s.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(s);
            match Decoder::new(100).decode(&v) {
                Ok(Some((_, Decoded::Header(h)))) => Ok(h),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        assert!(matches!(raw(b"{nope"), Err(FrameError::NotJson(_))));
        assert!(matches!(raw(b"\xff\xfe"), Err(FrameError::NotJson(_))));
        assert_eq!(raw(b"[1,2]"), Err(FrameError::NotObject));
        assert_eq!(raw(b"\"op\""), Err(FrameError::NotObject));
        assert_eq!(raw(b"null"), Err(FrameError::NotObject));
        assert_eq!(raw(b"12"), Err(FrameError::NotObject));
        assert!(matches!(raw(b"[1,2"), Err(FrameError::NotJson(_))));
        assert!(matches!(
            raw(b"{\"op\":\"x\"} junk"),
            Err(FrameError::NotJson(_))
        ));
        let h = raw(b"{\"op\":\"x\",\"path\":\"a\",\"id\":3,\"size\":0,\"n\\u0061me\":1}").unwrap();
        assert_eq!(
            (h.op.as_str(), h.id.clone(), h.str("path")),
            ("x", Some(3.into()), Some("a"))
        );
        assert_eq!(h.u64("name"), Some(1), "escaped keys are read too");
        assert_eq!(h.fields.len(), 2, "op, id and size stay out of the fields");
        assert_eq!(raw(b"{}"), Err(FrameError::MissingOp));
        assert_eq!(raw(b"{\"op\":5}"), Err(FrameError::MissingOp));
        assert_eq!(raw(b"{\"op\":\"x\",\"size\":-1}"), Err(FrameError::BadSize));
        assert_eq!(
            raw(b"{\"op\":\"x\",\"size\":1.5}"),
            Err(FrameError::BadSize)
        );
        assert_eq!(
            raw(b"{\"op\":\"x\",\"size\":\"3\"}"),
            Err(FrameError::BadSize)
        );
        assert_eq!(
            raw(b"{\"op\":\"x\",\"size\":101}"),
            Err(FrameError::BodyTooLarge {
                size: 101,
                limit: 100
            })
        );
        let h = raw(b"{\"op\":\"x\",\"id\":\"a\"}").unwrap();
        assert!(h.bad_id && h.id.is_none());
    }

    #[test]
    fn header_writer_round_trips() {
        let mut out = Vec::new();
        HeaderWriter::new(&mut out, "ok")
            .field("id", 3)
            .field("msg", "quote \" and \u{1}")
            .opt("none", None::<u8>)
            .field("size", 2)
            .finish();
        out.extend_from_slice(b"hi");
        let got = decode_in_chunks(&out, &[1]).unwrap();
        assert_eq!(got[0].0.op, "ok");
        assert_eq!(got[0].0.str("msg"), Some("quote \" and \u{1}"));
        assert!(!got[0].0.fields.contains_key("none"));
        assert_eq!(got[0].1, b"hi");
        assert!(out.starts_with(&[0, 0, 0]) && out[4..].starts_with(b"{\"op\":\"ok\""));
    }

    /// A float a header carries is read as the nearest f64, and written
    /// and read again without drifting: serde_json's default float parser
    /// read `1e-298` one step off, so the number changed on every trip.
    #[test]
    fn floats_read_back_exactly() {
        let h = Header::parse(br#"{"op":"exec","timeout":1e-298}"#).unwrap();
        assert_eq!(h.fields["timeout"].as_f64(), Some(1e-298));
        for x in [1e-298, 0.1, 2.5e-308, 1.7976931348623157e308, 1.0 / 3.0] {
            let mut out = Vec::new();
            HeaderWriter::new(&mut out, "ok").field("t", x).finish();
            let got = decode_in_chunks(&out, &[out.len()]).unwrap();
            assert_eq!(got[0].0.fields["t"].as_f64(), Some(x), "{x:e}");
        }
    }

    #[test]
    fn plain_headers_take_the_fast_path() {
        for text in [
            r#"{"op":"echo","id":1,"size":64}"#,
            r#" { "op" : "get" , "path" : "/a b.txt", "offset": 0, "upper": true, "x": null } "#,
            r#"{"op":"hello"}"#,
            r#"{"size":18446744073709551615,"op":"echo","id":null}"#,
        ] {
            let fast = parse_plain(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                fast,
                Header::parse_with_serde(text.as_bytes()).unwrap(),
                "{text}"
            );
        }
        for text in [
            r#"{"op":"echo","id":-1}"#,
            r#"{"op":"echo","size":1.0}"#,
            r#"{"op":"\u0065cho"}"#,
            r#"{"op":"échо"}"#,
            r#"{"op":"echo","id":01}"#,
            r#"{"op":"echo","x":[1]}"#,
            r#"{"op":"echo","size":18446744073709551616}"#,
            r#"{"op":"echo"} x"#,
            r#"{"op":"echo",}"#,
        ] {
            assert!(parse_plain(text.as_bytes()).is_none(), "{text}");
        }
    }

    /// Random headers, valid and broken: whenever the fast path answers,
    /// serde_json agrees, and the answer from `parse` is always serde's.
    #[test]
    fn fast_path_agrees_with_serde_json() {
        let mut rng = seeded_rng("fast_path_agrees_with_serde_json");
        let keys = ["op", "id", "size", "upper", "path", "op ", "", "a\\\"b"];
        let values = [
            r#""echo""#,
            r#""""#,
            r#""a\"b""#,
            r#""tab\tx""#,
            r#""ü""#,
            "0",
            "7",
            "-3",
            "01",
            "1.5",
            "2e3",
            "18446744073709551615",
            "18446744073709551616",
            "true",
            "false",
            "null",
            "nul",
            "[1]",
            "{}",
            r#"{"a":1}"#,
            "tru",
            "-0",
        ];
        let ws = ["", " ", "\n", "\t ", "\r"];
        let mut fast_hits = 0;
        for _ in 0..20_000 {
            let mut text = String::from(ws[rng.random_range(0..ws.len())]);
            text.push('{');
            let with_op = rng.random_range(0..4) > 0;
            if with_op {
                text.push_str(r#""op":"echo""#);
            }
            for i in 0..rng.random_range(0..4) {
                if i > 0 || with_op {
                    text.push(',');
                }
                text.push_str(ws[rng.random_range(0..ws.len())]);
                text.push_str(&format!("\"{}\"", keys[rng.random_range(0..keys.len())]));
                text.push_str(ws[rng.random_range(0..ws.len())]);
                text.push(':');
                text.push_str(values[rng.random_range(0..values.len())]);
            }
            text.push('}');
            text.push_str(ws[rng.random_range(0..ws.len())]);
            let mut bytes = text.into_bytes();
            // Sometimes break it: drop, change or add a byte.
            if rng.random_range(0..4) == 0 && !bytes.is_empty() {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes[at] = rng.random(),
                    _ => {
                        let junk = b"{}[],:\"\\ 0a-.";
                        bytes.insert(at, junk[rng.random_range(0..junk.len())]);
                    }
                }
            }
            let slow = Header::parse_with_serde(&bytes);
            if let Some(fast) = parse_plain(&bytes) {
                fast_hits += 1;
                assert_eq!(Ok(fast), slow, "{}", String::from_utf8_lossy(&bytes));
            }
            assert_eq!(Header::parse(&bytes).ok(), slow.ok());
        }
        assert!(fast_hits > 1000, "fast path taken {fast_hits} times");
    }
}
