//! A small blocking client for the framed protocol: what the `skiff`
//! command and the end-to-end tests speak. (The server never blocks; a
//! one-shot client may.)

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::frame::{self, FrameError, Header, MAX_HEADER, PREFIX_LEN};

/// Largest body [`Client::recv`] buffers whole; larger ones must be read
/// with [`Client::recv_header`] and [`Client::read_body`].
pub const MAX_BUFFERED_BODY: u64 = 64 << 20;

/// A TCP or Unix stream, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `HOST:PORT`
    Tcp(TcpStream),
    /// `unix:PATH`
    Unix(UnixStream),
    /// `tls://HOST:PORT`
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsStream),
}

impl Stream {
    /// Connects to `HOST:PORT`, or to `unix:PATH`. (A TLS connection needs
    /// to know whom to trust: see [`crate::tls::connect`].)
    pub fn connect(addr: &str) -> io::Result<Stream> {
        if addr.starts_with("tls://") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a tls:// address is connected with tls::connect",
            ));
        }
        match addr.strip_prefix("unix:") {
            Some(path) => UnixStream::connect(path).map(Stream::Unix),
            None => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// A second handle on the same stream.
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.try_clone().map(Stream::Tls),
        }
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            Stream::Tcp(s) => s.read_timeout(),
            Stream::Unix(s) => s.read_timeout(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().read_timeout(),
        }
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            Stream::Tcp(s) => s.write_timeout(),
            Stream::Unix(s) => s.write_timeout(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().write_timeout(),
        }
    }

    /// Sets the read timeout (None: block forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().set_read_timeout(t),
        }
    }

    /// Sets the write timeout (None: block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().set_write_timeout(t),
        }
    }

    /// Shuts down the writing half (over TLS, after saying goodbye).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.shutdown_write(),
        }
    }

    /// Shuts down both halves: a blocked read or write on any handle of
    /// this stream returns at once.
    pub fn shutdown_both(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().shutdown(std::net::Shutdown::Both),
        }
    }

    /// Bytes already received and decrypted but not read yet, which a
    /// poll on the socket would not show (only TLS has such bytes).
    pub fn has_buffered(&self) -> bool {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.has_buffered(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.tcp().as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What can go wrong talking to the server.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed.
    Io(io::Error),
    /// The server's bytes were not valid frames.
    Frame(FrameError),
    /// The server answered with an `error` frame.
    Server {
        /// The error code (`auth_failed`, ...).
        code: String,
        /// Text for people.
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "connection: {e}"),
            ClientError::Frame(e) => write!(f, "bad frame from server: {e}"),
            ClientError::Server { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

impl ClientError {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One received frame with its body in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The parsed header.
    pub header: Header,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Frame {
    /// Turns an `error` frame into [`ClientError::Server`].
    pub fn into_result(self) -> Result<Frame, ClientError> {
        if self.header.op == "error" {
            return Err(ClientError::Server {
                code: self.header.str("code").unwrap_or("?").to_string(),
                message: self.header.str("message").unwrap_or("").to_string(),
            });
        }
        Ok(self)
    }
}

/// A blocking connection to skiffd.
pub struct Client {
    /// Buffered reading half.
    reader: BufReader<Stream>,
    /// Buffered writing half; flushed after every whole frame we send.
    writer: BufWriter<Stream>,
    /// The next request id [`Client::request`] uses.
    next_id: u64,
}

impl Client {
    /// Connects to `HOST:PORT` or `unix:PATH`.
    pub fn connect(addr: &str) -> io::Result<Client> {
        let stream = Stream::connect(addr)?;
        Client::from_stream(stream)
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: Stream) -> io::Result<Client> {
        let writer = BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            next_id: 1,
        })
    }

    /// The underlying stream (for timeouts and shutdown).
    pub fn stream(&self) -> &Stream {
        self.reader.get_ref()
    }

    /// Allocates a fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a header announcing `size` body bytes; the caller then sends
    /// exactly that many with [`Client::send_body`].
    pub fn send_header(&mut self, mut header: Map<String, Value>, size: u64) -> io::Result<()> {
        header.insert("size".into(), size.into());
        let mut buf = Vec::new();
        frame::encode_header(&mut buf, &header)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.writer.write_all(&buf)?;
        if size == 0 {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Sends body bytes of the frame begun by [`Client::send_header`].
    pub fn send_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Flushes what was sent.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Sends one whole frame and flushes.
    pub fn send(&mut self, header: Map<String, Value>, body: &[u8]) -> io::Result<()> {
        self.send_header(header, body.len() as u64)?;
        self.writer.write_all(body)?;
        self.writer.flush()
    }

    /// Sends raw bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Reads the next frame header; its body must be read next.
    pub fn recv_header(&mut self) -> Result<Header, ClientError> {
        let mut prefix = [0u8; PREFIX_LEN];
        self.reader.read_exact(&mut prefix)?;
        let len = u32::from_be_bytes(prefix);
        if len == 0 {
            return Err(FrameError::EmptyHeader.into());
        }
        if len as usize > MAX_HEADER {
            return Err(FrameError::HeaderTooLarge(len).into());
        }
        let mut bytes = vec![0u8; len as usize];
        self.reader.read_exact(&mut bytes)?;
        Ok(Header::parse(&bytes)?)
    }

    /// Copies the next `size` body bytes into `out`, in bounded pieces,
    /// calling `progress` with each piece's length.
    pub fn read_body(
        &mut self,
        mut size: u64,
        out: &mut impl Write,
        mut progress: impl FnMut(usize),
    ) -> io::Result<()> {
        while size > 0 {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = chunk.len().min(usize::try_from(size).unwrap_or(usize::MAX));
            out.write_all(&chunk[..n])?;
            self.reader.consume(n);
            progress(n);
            size -= n as u64;
        }
        Ok(())
    }

    /// Reads one whole frame, its body buffered (up to [`MAX_BUFFERED_BODY`]).
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        let header = self.recv_header()?;
        if header.size > MAX_BUFFERED_BODY {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("body of {} bytes is too large to buffer", header.size),
            )));
        }
        let mut body = Vec::with_capacity(header.size as usize);
        self.read_body(header.size, &mut body, |_| {})?;
        Ok(Frame { header, body })
    }

    /// Sends a request with a fresh id and waits for its reply; an `error`
    /// reply becomes [`ClientError::Server`]. Unsolicited `msg` frames that
    /// arrive first are passed to `on_push`.
    pub fn request_with(
        &mut self,
        mut header: Map<String, Value>,
        body: &[u8],
        mut on_push: impl FnMut(Frame),
    ) -> Result<Frame, ClientError> {
        let id = self.next_id();
        header.insert("id".into(), id.into());
        self.send(header, body)?;
        loop {
            let frame = self.recv()?;
            if frame.header.op == "msg" && frame.header.id.is_none() {
                on_push(frame);
                continue;
            }
            if is_shutdown(&frame.header) {
                return Err(shutting_down().into());
            }
            return frame.into_result();
        }
    }

    /// [`Client::request_with`], printing pushed messages to stderr.
    pub fn request(&mut self, header: Value, body: &[u8]) -> Result<Frame, ClientError> {
        let Value::Object(map) = header else {
            panic!("request header must be a JSON object");
        };
        self.request_with(map, body, |m| {
            eprintln!(
                "[{}] {}",
                m.header.str("from").unwrap_or("?"),
                String::from_utf8_lossy(&m.body)
            )
        })
    }
}

/// Whether `header` is the server's notice that it is shutting down: a
/// `bye` it sends unprompted (no `id`), after which it sends only what it
/// still owes (a running command's last frames) and closes.
pub fn is_shutdown(header: &Header) -> bool {
    header.op == "bye" && header.id.is_none()
}

/// The error a request gets when the server shut down instead of
/// answering it.
pub fn shutting_down() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server is shutting down",
    )
}
