//! Everything `skiffd serve` was asked for, as the reactor takes it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::Limits;

/// Everything `skiffd serve` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// Framed protocol over TCP.
    pub framed: Vec<SocketAddr>,
    /// Framed protocol over Unix sockets.
    pub unix: Vec<PathBuf>,
    /// UDP time service.
    pub udp_time: Vec<SocketAddr>,
    /// UDP echo service.
    pub udp_echo: Vec<SocketAddr>,
    /// Raw upper-casing TCP echo.
    pub raw_echo: Vec<SocketAddr>,
    /// FTP control connections.
    pub ftp: Vec<SocketAddr>,
    /// FTP passive ports and the address announced for them.
    pub ftp_passive: super::ftp::Passive,
    /// Framed protocol over TLS.
    pub tls: Vec<SocketAddr>,
    /// The TLS settings every TLS connection shares (set when `tls` or
    /// `ftp` is not empty): FTP offers `AUTH TLS` with it.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// `--ftp-require-tls`: FTP refuses logins and data in clear text.
    pub ftp_require_tls: bool,
    /// `--ftp-hash-uploads`: FTP uploads are hashed as they arrive.
    pub ftp_hash_uploads: bool,
    /// Per-connection limits.
    pub limits: Limits,
    /// Most connections open at once.
    pub max_conns: usize,
    /// Most connections from one IP address.
    pub max_conns_per_ip: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// How long a graceful shutdown may take to flush.
    pub shutdown_grace: Duration,
    /// Most commands running at once, server-wide.
    pub exec_max: usize,
    /// Most output bytes one command may produce before it is ended.
    pub exec_max_output: u64,
}
