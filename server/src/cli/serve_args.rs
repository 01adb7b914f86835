//! The options of `skiffd serve` as types: each value is checked here,
//! so a mistake is a usage error that names the option.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use skiff::proto::{parse_duration, parse_size};

/// The options of `skiffd serve`, typed. Listener options repeat (see
/// `SERVE.after`); the others hold their default until given.
#[derive(Debug, Default)]
pub struct ServeArgs {
    pub data_dir: PathBuf,
    pub listen: Vec<String>,
    pub unix: Vec<PathBuf>,
    pub udp_time: Vec<String>,
    pub udp_echo: Vec<String>,
    pub raw_echo: Vec<String>,
    pub ftp: Vec<String>,
    pub ftp_passive: Option<(u16, u16)>,
    pub ftp_advertise: Option<std::net::IpAddr>,
    pub ftp_require_tls: bool,
    pub ftp_hash_uploads: bool,
    pub ftp_passive_timeout: Duration,
    pub tls_listen: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_handshake_timeout: Duration,
    pub max_body: u64,
    pub idle_timeout: Duration,
    pub max_conns: usize,
    pub max_conns_per_ip: usize,
    pub out_high_water: u64,
    pub out_total: u64,
    pub backlog: i32,
    pub exec_per_conn: usize,
    pub exec_max: usize,
    pub exec_max_time: Duration,
    pub exec_max_output: u64,
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    /// Sets one option from its value (ignored for a switch). The error
    /// says what is wrong with the value; the caller names the option.
    pub(super) fn set(&mut self, long: &str, value: &OsStr) -> Result<(), String> {
        let text = || text(value);
        match long {
            "data-dir" => self.data_dir = value.into(),
            "listen" => self.listen.push(host_port(text()?)?),
            "unix" => self.unix.push(value.into()),
            "udp-time" => self.udp_time.push(host_port(text()?)?),
            "udp-echo" => self.udp_echo.push(host_port(text()?)?),
            "raw-echo" => self.raw_echo.push(host_port(text()?)?),
            "ftp" => self.ftp.push(host_port(text()?)?),
            "ftp-passive" => self.ftp_passive = Some(port_range(text()?)?),
            "ftp-advertise" => {
                let addr = text()?.parse().map_err(|_| "expected an IP address")?;
                self.ftp_advertise = Some(addr);
            }
            "ftp-require-tls" => self.ftp_require_tls = true,
            "ftp-hash-uploads" => self.ftp_hash_uploads = true,
            "ftp-passive-timeout" => self.ftp_passive_timeout = positive_duration(text()?)?,
            "tls-listen" => self.tls_listen.push(host_port(text()?)?),
            "tls-cert" => self.tls_cert = Some(value.into()),
            "tls-key" => self.tls_key = Some(value.into()),
            "tls-handshake-timeout" => self.tls_handshake_timeout = positive_duration(text()?)?,
            "max-body" => self.max_body = parse_size(text()?)?,
            "idle-timeout" => self.idle_timeout = parse_duration(text()?)?,
            "max-conns" => self.max_conns = number(text()?)?,
            "max-conns-per-ip" => self.max_conns_per_ip = number(text()?)?,
            "out-high-water" => self.out_high_water = parse_size(text()?)?,
            "out-total" => self.out_total = parse_size(text()?)?,
            // Non-negative: Linux reads a negative backlog as "the maximum".
            "backlog" => self.backlog = number(text()?)?,
            "exec-per-conn" => self.exec_per_conn = number(text()?)?,
            "exec-max" => self.exec_max = number(text()?)?,
            "exec-max-time" => self.exec_max_time = parse_duration(text()?)?,
            "exec-max-output" => self.exec_max_output = parse_size(text()?)?,
            "shutdown-grace" => self.shutdown_grace = parse_duration(text()?)?,
            _ => return Err(format!("serve has no option --{long}")),
        }
        Ok(())
    }
}

/// Checks that a listener address has the form HOST:PORT, so that a
/// mistake is a usage error (exit 2) that says what to write. Names are
/// resolved later, at startup.
pub fn host_port(value: &str) -> Result<String, String> {
    let port_only = value.parse::<u16>().is_ok();
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_string())
        }
        _ if port_only => Err(format!(
            "a listener needs a host too: 127.0.0.1:{value} (this machine only) \
             or 0.0.0.0:{value} (every network)"
        )),
        _ => Err("expected HOST:PORT, such as 127.0.0.1:9999".into()),
    }
}

/// Parses a duration that must not be zero: a timeout of nothing would
/// end every handshake or passive listener before the client could act.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err(format!("{value:?} is no time at all; give at least 1ms")),
        d => Ok(d),
    }
}

/// Parses `LO-HI`, a range of ports for FTP's passive listeners.
fn port_range(value: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("expected LO-HI with 1 <= LO <= HI <= 65535, such as 40000-40999, not {value:?}")
    };
    let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
    let (lo, hi) = (
        lo.parse::<u16>().map_err(|_| bad())?,
        hi.parse::<u16>().map_err(|_| bad())?,
    );
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// A whole number in decimal digits that fits `T` (so never negative).
fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse() {
        Ok(n) if digits => Ok(n),
        _ if digits => Err(format!("{value} is too large")),
        _ => Err(format!("expected a whole number, not {value:?}")),
    }
}

/// A value that must be text (anything but a path).
pub(super) fn text(value: &OsStr) -> Result<&str, String> {
    value
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", value.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_addresses_need_a_host_and_a_port() {
        assert_eq!(host_port("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(host_port("[::1]:9999").as_deref(), Ok("[::1]:9999"));
        assert_eq!(host_port("localhost:80").as_deref(), Ok("localhost:80"));
        assert!(host_port("9999").unwrap_err().contains("127.0.0.1:9999"));
        for bad in ["", ":9999", "host", "host:", "host:99999", "host:port"] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_whole_and_fit() {
        assert_eq!(number::<usize>("65536"), Ok(65536));
        assert!(number::<i32>("-1").unwrap_err().contains("whole number"));
        assert!(
            number::<i32>("4294967296")
                .unwrap_err()
                .contains("too large")
        );
        for bad in ["", "1.5", "0x10", " 1"] {
            assert!(number::<usize>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(port_range("1-65535"), Ok((1, 65535)));
        for bad in ["0-1", "5-3", "1", "1-65536", "a-b"] {
            assert!(port_range(bad).is_err(), "{bad:?}");
        }
    }
}
