//! The checks of the `decoder` and `header` targets: the framed
//! protocol's parsers.
//!
//! `tests/fuzz_corpus.rs` in the skiff package pulls this file in with
//! `#[path]` and runs it on `fuzz/corpus/decoder` and `fuzz/corpus/header`.
//! That build sees the skiff library as the crate `skiff` too, so this
//! file names nothing through `crate::` and needs nothing but skiff and
//! serde_json.

use skiff::frame::{self, Decoded, Decoder, FrameError, Header, MAX_HEAD};
use skiff::proto;

/// The body limit the decoder check uses: small enough that hand-written
/// and fuzzed frames reach [`FrameError::BodyTooLarge`], large enough for
/// any body that fits in a fuzz input.
pub const MAX_BODY: u64 = 1 << 20;

/// Decoding `data` must never panic, and must not depend on how the bytes
/// were split into reads: whole, one byte at a time, and in chunks whose
/// sizes come from `data` itself all give the same frames, or the same
/// error after the same frames.
///
/// Taking the chunk sizes from the input (rather than from a prefix of
/// it) keeps every corpus file a plain byte stream a client could have
/// sent, while still letting the fuzzer move the split points by
/// changing bytes.
pub fn check_decoder(data: &[u8]) {
    let whole = decode_in_chunks(data, |_| data.len());
    let bytewise = decode_in_chunks(data, |_| 1);
    let from_input = decode_in_chunks(data, |i| usize::from(data[i % data.len()]) + 1);
    assert_eq!(bytewise, whole, "one byte at a time");
    assert_eq!(from_input, whole, "chunk sizes taken from the input");
}

/// One thing a receiver learns from the decoder. Consecutive body pieces
/// are joined, since where a body is cut depends on the reads.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A frame header.
    Header(Header),
    /// All body bytes that came between two other events.
    Body(Vec<u8>),
    /// The end of a frame's body.
    End,
}

/// Everything a receiver saw from one byte stream.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// The frames, in order.
    pub events: Vec<Event>,
    /// How the stream ended: the error that stopped it, or, when the bytes
    /// ran out, how many were left buffered and how much of a body was
    /// still owed.
    pub end: Result<(usize, u64), FrameError>,
}

/// Feeds `data` to a fresh decoder in chunks of `chunk(i)` bytes for the
/// i-th read, the way `Conn` does: bytes the decoder did not use yet stay
/// buffered in front of the next read. Checks the decoder's contract on
/// every step.
fn decode_in_chunks(data: &[u8], chunk: impl Fn(usize) -> usize) -> Outcome {
    let mut decoder = Decoder::new(MAX_BODY);
    let mut buffered: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    // The body length the last header announced, and how much came so far.
    let mut body: Option<(u64, u64)> = None;
    let mut pos = 0;
    let mut reads = 0;
    while pos < data.len() {
        let n = chunk(reads).clamp(1, data.len() - pos);
        reads += 1;
        buffered.extend_from_slice(&data[pos..pos + n]);
        pos += n;
        let mut used = 0;
        loop {
            let input = &buffered[used..];
            match decoder.decode(input) {
                Ok(None) => {
                    // "Need more" must be true, and the amount bounded, or
                    // a receiver would wait forever or buffer without limit.
                    if decoder.at_boundary() {
                        let needed = decoder.needed(input);
                        assert!(needed > input.len() && needed <= MAX_HEAD);
                    } else {
                        assert!(input.is_empty(), "a body waits with bytes at hand");
                    }
                    break;
                }
                Ok(Some((n, what))) => {
                    assert!(n <= input.len(), "used more than it was given");
                    used += n;
                    match what {
                        Decoded::Header(h) => {
                            assert!(body.is_none(), "a header inside a body");
                            assert_eq!(n, frame::PREFIX_LEN + header_len(input));
                            assert!(h.size <= MAX_BODY);
                            body = Some((h.size, 0));
                            events.push(Event::Header(h));
                        }
                        Decoded::Body(piece) => {
                            let (size, got) = body.as_mut().expect("a body before any header");
                            assert!(!piece.is_empty() && piece.len() == n);
                            *got += piece.len() as u64;
                            assert!(*got <= *size, "more body than the header announced");
                            assert_eq!(decoder.body_remaining(), *size - *got);
                            match events.last_mut() {
                                Some(Event::Body(joined)) => joined.extend_from_slice(piece),
                                _ => events.push(Event::Body(piece.to_vec())),
                            }
                        }
                        Decoded::End => {
                            assert_eq!(n, 0);
                            let (size, got) = body.take().expect("an end before any header");
                            assert_eq!(got, size, "the body ended early");
                            assert!(decoder.at_boundary());
                            events.push(Event::End);
                        }
                    }
                }
                Err(e) => {
                    return Outcome {
                        events,
                        end: Err(e),
                    };
                }
            }
        }
        buffered.drain(..used);
    }
    Outcome {
        events,
        end: Ok((buffered.len(), decoder.body_remaining())),
    }
}

/// The header length a frame head in `input` announces.
fn header_len(input: &[u8]) -> usize {
    let prefix = input
        .first_chunk()
        .expect("a header came from a whole prefix");
    u32::from_be_bytes(*prefix) as usize
}

/// Header text from a client must never panic anything that reads it:
///
/// - the plain scanner, whenever it answers, agrees with serde_json, and
///   [`Header::parse`] always gives serde_json's answer;
/// - a header that parses, written out again with
///   [`frame::encode_header`], parses to the same header;
/// - [`proto::parse_size`] and [`proto::parse_duration`] (the server's
///   size and duration options) do not panic on the same bytes as text,
///   and a size they accept reads back the same.
pub fn check_header(data: &[u8]) {
    let general = Header::parse_with_serde(data);
    if let Some(fast) = frame::parse_plain(data) {
        assert_eq!(
            Ok(fast),
            general,
            "the plain scanner disagrees with serde_json"
        );
    }
    assert_eq!(Header::parse(data), general);
    if let Ok(header) = general {
        check_header_round_trip(header);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(n) = proto::parse_size(text) {
            assert_eq!(proto::parse_size(&n.to_string()), Ok(n), "{text:?}");
        }
        let _ = proto::parse_duration(text);
    }
}

/// Writes `header` out as a sender would and reads it back.
fn check_header_round_trip(header: Header) {
    let mut object = header.fields.clone();
    object.insert("op".into(), header.op.clone().into());
    object.insert("size".into(), header.size.into());
    if let Some(id) = &header.id {
        object.insert("id".into(), id.clone().into());
    }
    let mut out = Vec::new();
    // Escaping can make a header longer than the one that came in; one
    // that no longer fits is the writer's refusal, not a disagreement.
    if frame::encode_header(&mut out, &object).is_err() {
        return;
    }
    let again = Header::parse(&out[frame::PREFIX_LEN..]).expect("our own header parses");
    // A bad id is reported, not kept, so it cannot survive the trip.
    let expected = Header {
        bad_id: false,
        ..header
    };
    assert_eq!(again, expected, "{}", String::from_utf8_lossy(&out));
}
