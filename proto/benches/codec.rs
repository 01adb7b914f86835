//! Frame codec throughput, with plain `std::time` (no criterion).
//!
//! ```text
//! cargo bench --bench codec                # 7 rounds
//! cargo bench --bench codec -- --rounds 3  # quicker
//! ```
//!
//! For 64 B and 64 KiB bodies it measures, interleaved round by round so
//! that noise hits every variant alike, and prints the median of the
//! rounds (and min..max):
//!
//! - `decode`: a buffer of many `{"op":"echo","id":N,"size":S}` frames fed
//!   to [`Decoder`] in 64 KiB slices, as the server's reactor reads them: a
//!   frame head split across two slices is kept in a small pending buffer,
//!   like `Conn::handle_input` does. Body pieces are borrowed slices: the
//!   decoder never copies them, so only their lengths are summed.
//! - `decode+copy`: the same, but every body piece is appended to an output
//!   `Vec` (what the echo handler does with it).
//! - `encode HeaderWriter`: the server's reply path,
//!   `{"op":"ok","id":N,"size":S}` + the body, appended to a `Vec` that is
//!   cleared every 64 KiB.
//! - `encode encode_header`: the same header from a `serde_json` map.
//! - baselines, same bytes, same run: `memcpy 64K slices` (copying the
//!   whole input buffer 64 KiB at a time: the least a `read` costs),
//!   `frame walk (no JSON)` (following the length prefixes and sizes
//!   without parsing a header: the cost of framing alone) and
//!   `serde_json::Value parse` (parsing each header into a `Value` and
//!   nothing else: the JSON share of a decode); for encoding,
//!   `encode bodies only` (the same bodies appended with no header).
//!
//! Note the inputs (10 MB and 34 MB) do not fit in cache, while encoding
//! copies one hot body: compare decode with the memcpy baseline and
//! encode with the bodies-only baseline.
//!
//! GB/s counts whole frames (prefix + header + body), 1 GB = 1e9 bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use skiff::frame::{Decoded, Decoder, HeaderWriter, MAX_HEAD, encode_header};

/// The server's read size.
const SLICE: usize = 64 * 1024;
/// Aim for about this much work per measurement.
const TARGET: Duration = Duration::from_millis(150);

struct Case {
    name: &'static str,
    body: usize,
    frames: usize,
    /// All frames, back to back, as a client would send them.
    input: Vec<u8>,
    /// Where each header starts and ends (without the prefix), for the
    /// JSON-only baseline.
    headers: Vec<(usize, usize)>,
}

fn case(name: &'static str, body: usize, frames: usize) -> Case {
    let payload: Vec<u8> = (0..body).map(|i| b'a' + (i % 26) as u8).collect();
    let mut input = Vec::new();
    let mut headers = Vec::with_capacity(frames);
    for i in 0..frames {
        let start = input.len();
        encode_header(&mut input, &json!({"op": "echo", "id": i, "size": body})).unwrap();
        headers.push((start + 4, input.len()));
        input.extend_from_slice(&payload);
    }
    Case {
        name,
        body,
        frames,
        input,
        headers,
    }
}

/// Decodes `input` in 64 KiB slices; returns (frames, body bytes).
fn decode(input: &[u8], copy: bool, out: &mut Vec<u8>) -> (usize, usize) {
    let mut d = Decoder::new(u64::MAX);
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_HEAD);
    let (mut frames, mut body) = (0, 0);
    let mut step = |bytes: &[u8], d: &mut Decoder, out: &mut Vec<u8>| -> usize {
        let mut used = 0;
        while let Some((n, what)) = d.decode(&bytes[used..]).expect("valid input") {
            used += n;
            match what {
                Decoded::Header(h) => {
                    black_box(&h);
                    frames += 1;
                }
                Decoded::Body(b) => {
                    body += b.len();
                    if copy {
                        out.extend_from_slice(b);
                        if out.len() >= SLICE {
                            black_box(&out[..]);
                            out.clear();
                        }
                    }
                }
                Decoded::End => {}
            }
        }
        used
    };
    for chunk in input.chunks(SLICE) {
        if pending.is_empty() {
            let used = step(chunk, &mut d, out);
            pending.extend_from_slice(&chunk[used..]);
        } else {
            pending.extend_from_slice(chunk);
            let used = step(&pending, &mut d, out);
            pending.drain(..used);
        }
    }
    assert!(pending.is_empty(), "trailing bytes");
    (frames, body)
}

/// Follows prefixes and sizes without parsing JSON: the framing alone.
/// The size is read from the known header shape (`"size":N}` at the end).
fn walk(input: &[u8]) -> usize {
    let (mut pos, mut frames) = (0, 0);
    while pos < input.len() {
        let h = u32::from_be_bytes(input[pos..pos + 4].try_into().unwrap()) as usize;
        let head = &input[pos + 4..pos + 4 + h];
        let colon = head.iter().rposition(|&b| b == b':').unwrap();
        let mut size = 0usize;
        for &b in &head[colon + 1..h - 1] {
            size = size * 10 + (b - b'0') as usize;
        }
        pos += 4 + h + size;
        frames += 1;
    }
    frames
}

fn memcpy(input: &[u8], scratch: &mut [u8]) {
    for chunk in input.chunks(SLICE) {
        scratch[..chunk.len()].copy_from_slice(chunk);
        black_box(&scratch[..]);
    }
}

fn parse_only(c: &Case) -> usize {
    let mut n = 0;
    for &(a, b) in &c.headers {
        let v: Value = serde_json::from_slice(&c.input[a..b]).unwrap();
        n += black_box(v).as_object().map_or(0, Map::len);
    }
    n
}

/// The server's reply path: HeaderWriter + body, buffer recycled per 64 KiB.
fn encode_writer(c: &Case, body: &[u8], out: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for i in 0..c.frames {
        HeaderWriter::new(out, "ok")
            .field("id", i)
            .field("size", body.len())
            .finish();
        out.extend_from_slice(body);
        if out.len() >= SLICE {
            total += out.len();
            black_box(&out[..]);
            out.clear();
        }
    }
    total + out.len()
}

/// Encode's baseline: the same bodies appended without any header.
fn body_only(c: &Case, body: &[u8], out: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for _ in 0..c.frames {
        out.extend_from_slice(body);
        if out.len() >= SLICE {
            total += out.len();
            black_box(&out[..]);
            out.clear();
        }
    }
    total + out.len()
}

fn encode_map(c: &Case, body: &[u8], out: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for i in 0..c.frames {
        let mut m = Map::new();
        m.insert("op".into(), "ok".into());
        m.insert("id".into(), i.into());
        m.insert("size".into(), body.len().into());
        encode_header(out, &m).unwrap();
        out.extend_from_slice(body);
        if out.len() >= SLICE {
            total += out.len();
            black_box(&out[..]);
            out.clear();
        }
    }
    total + out.len()
}

struct Variant {
    label: &'static str,
    /// Seconds per pass, one entry per round.
    secs: Vec<f64>,
    /// Bytes one pass counts for GB/s.
    bytes: usize,
}

fn time<F: FnMut()>(mut f: F, reps: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn run(c: &Case, rounds: usize) {
    let payload: Vec<u8> = vec![b'x'; c.body];
    let mut out = Vec::with_capacity(2 * SLICE + c.body);
    let mut scratch = vec![0u8; SLICE];
    // Sanity: every variant sees the same frames.
    assert_eq!(
        decode(&c.input, false, &mut out),
        (c.frames, c.frames * c.body)
    );
    assert_eq!(walk(&c.input), c.frames);
    let enc_bytes = encode_writer(c, &payload, &mut out);
    out.clear();
    let n = c.input.len();

    let labels: [(&'static str, usize); 8] = [
        ("decode", n),
        ("decode+copy", n),
        ("encode HeaderWriter", enc_bytes),
        ("encode encode_header", enc_bytes),
        ("baseline: memcpy 64K slices", n),
        ("baseline: frame walk (no JSON)", n),
        ("baseline: serde_json::Value parse", n),
        ("baseline: encode bodies only", enc_bytes),
    ];
    let mut vars: Vec<Variant> = labels
        .iter()
        .map(|&(label, bytes)| Variant {
            label,
            secs: Vec::new(),
            bytes,
        })
        .collect();
    // Pick a repetition count per variant from one warm-up pass.
    let mut reps = [1usize; 8];
    for (i, r) in reps.iter_mut().enumerate() {
        let once = pass(i, c, &payload, &mut out, &mut scratch, 1);
        *r = ((TARGET.as_secs_f64() / once.max(1e-9)) as usize).clamp(1, 100_000);
    }
    for _ in 0..rounds {
        for (i, v) in vars.iter_mut().enumerate() {
            v.secs
                .push(pass(i, c, &payload, &mut out, &mut scratch, reps[i]));
        }
    }
    println!(
        "\n{}: {} frames, body {} B, input {:.1} MB ({} B/frame), median of {} rounds",
        c.name,
        c.frames,
        c.body,
        n as f64 / 1e6,
        n / c.frames,
        rounds
    );
    println!(
        "| {:<34} | {:>12} | {:>9} | {:>19} | {:>10} |",
        "variant", "frames/s", "GB/s", "GB/s min..max", "ns/frame"
    );
    println!(
        "|{:-<36}|{:->14}|{:->11}|{:->21}|{:->12}|",
        "", "", "", "", ""
    );
    for v in &vars {
        let med = median(&v.secs);
        let (lo, hi) = v
            .secs
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &s| (a.min(s), b.max(s)));
        println!(
            "| {:<34} | {:>12.0} | {:>9.2} | {:>8.2} .. {:>8.2} | {:>10.1} |",
            v.label,
            c.frames as f64 / med,
            v.bytes as f64 / med / 1e9,
            v.bytes as f64 / hi / 1e9,
            v.bytes as f64 / lo / 1e9,
            med * 1e9 / c.frames as f64
        );
    }
}

fn pass(
    i: usize,
    c: &Case,
    payload: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut [u8],
    reps: usize,
) -> f64 {
    match i {
        0 => time(
            || _ = black_box(decode(black_box(&c.input), false, out)),
            reps,
        ),
        1 => time(
            || {
                _ = black_box(decode(black_box(&c.input), true, out));
                out.clear();
            },
            reps,
        ),
        2 => time(
            || {
                _ = black_box(encode_writer(c, payload, out));
                out.clear();
            },
            reps,
        ),
        3 => time(
            || {
                _ = black_box(encode_map(c, payload, out));
                out.clear();
            },
            reps,
        ),
        4 => time(|| memcpy(black_box(&c.input), scratch), reps),
        5 => time(|| _ = black_box(walk(black_box(&c.input))), reps),
        6 => time(|| _ = black_box(parse_only(c)), reps),
        _ => time(
            || {
                _ = black_box(body_only(c, payload, out));
                out.clear();
            },
            reps,
        ),
    }
}

fn main() {
    let mut rounds = 7;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--rounds N");
        }
        // `cargo bench` passes `--bench`; other arguments are ignored.
    }
    let cases = [
        case("64 B bodies", 64, 100_000),
        case("64 KiB bodies", 64 * 1024, 512),
    ];
    for c in &cases {
        run(c, rounds);
    }
}
