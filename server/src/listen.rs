//! Binding the listening sockets, with the options the tutorials left out:
//! SO_REUSEADDR (restart without waiting out TIME_WAIT), a real backlog,
//! IPv6-only for `[::]` so an IPv4 listener can sit beside it.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Resolves `HOST:PORT` (a literal address or a name such as `localhost`).
pub fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        ));
    }
    Ok(addrs)
}

/// A non-blocking TCP listener.
pub fn tcp(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A non-blocking UDP socket.
pub fn udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// A non-blocking Unix stream listener. A stale socket file left by a
/// crashed server is removed, but only if nothing answers on it: a live
/// server's socket is never stolen.
pub fn unix(path: &Path, backlog: i32) -> io::Result<mio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("a server already listens on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    let std_listener: StdUnixListener = std::os::fd::OwnedFd::from(socket).into();
    Ok(mio::net::UnixListener::from_std(std_listener))
}
