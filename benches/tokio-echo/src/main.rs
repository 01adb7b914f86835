//! skiff's `echo` op, and nothing else, on a tokio current-thread runtime:
//! the baseline skiffd's CPU per request is compared with.
//!
//! Same work per request as skiffd: read a `u32` big-endian length, read
//! the header, parse it with `serde_json` into a `Value`, answer
//! `{"op":"ok","id":..,"size":..}` and stream the body back. Sockets get
//! `TCP_NODELAY`, as in skiffd; replies are flushed whenever no more input
//! is buffered, so pipelined requests share a write, as in skiffd.
//! Any other op is answered like an empty echo (enough for a probe).
//!
//! Usage: `tokio-echo [ADDR]` (default 127.0.0.1:0); prints
//! `listening framed ADDR` on stdout, like skiffd.

use std::io::Write as _;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

const BUF: usize = 64 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening framed {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve(stream).await;
        });
    }
}

async fn serve(stream: TcpStream) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(BUF, r);
    let mut w = BufWriter::with_capacity(BUF, w);
    let mut head = Vec::with_capacity(256);
    loop {
        let mut prefix = [0u8; 4];
        if r.read_exact(&mut prefix).await.is_err() {
            w.flush().await?;
            return Ok(());
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 || len > 65536 {
            return Ok(());
        }
        head.resize(len, 0);
        r.read_exact(&mut head).await?;
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&head) else {
            return Ok(());
        };
        let id = h.get("id").cloned().unwrap_or(Value::Null);
        let echo = h.get("op").and_then(Value::as_str) == Some("echo");
        let mut size = h.get("size").and_then(Value::as_u64).unwrap_or(0);
        let mut reply = Vec::with_capacity(64);
        reply.extend_from_slice(&[0; 4]);
        write!(
            reply,
            r#"{{"op":"ok","id":{id},"size":{}}}"#,
            if echo { size } else { 0 }
        )?;
        let n = (reply.len() - 4) as u32;
        reply[..4].copy_from_slice(&n.to_be_bytes());
        w.write_all(&reply).await?;
        while size > 0 {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.len().min(size as usize);
            if echo {
                w.write_all(&buf[..n]).await?;
            }
            r.consume(n);
            size -= n as u64;
        }
        if r.buffer().is_empty() {
            w.flush().await?;
        }
    }
}
