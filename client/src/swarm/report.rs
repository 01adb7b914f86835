//! The final report, as text for people or one JSON object for scripts,
//! and the server-side `stats` samples taken around the run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use skiff::client::Client;

/// How long a `stats` sample may take before it is given up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server's `stats` op said at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSample {
    /// `cpu_user_s + cpu_sys_s`, if the server reports both.
    pub cpu_s: Option<f64>,
    /// Open connections.
    pub connections: Option<u64>,
    /// Bytes received so far.
    pub bytes_in: Option<u64>,
    /// Bytes sent so far.
    pub bytes_out: Option<u64>,
    /// Connections refused with `too_busy` so far.
    pub refused: Option<u64>,
    /// Connections closed for the server's buffer budget so far.
    pub evicted: Option<u64>,
}

impl ServerSample {
    /// Reads the fields of a `stats` reply.
    pub fn from_fields(f: &Map<String, Value>) -> ServerSample {
        let num = |k: &str| f.get(k).and_then(Value::as_f64);
        let int = |k: &str| f.get(k).and_then(Value::as_u64);
        ServerSample {
            cpu_s: num("cpu_user_s").zip(num("cpu_sys_s")).map(|(u, s)| u + s),
            connections: int("connections"),
            bytes_in: int("bytes_in"),
            bytes_out: int("bytes_out"),
            refused: int("refused"),
            evicted: int("evicted"),
        }
    }
}

/// The extra connection that samples the server's `stats`, outside the
/// load (it is blocking: two requests per run do not need the loop).
pub struct Probe {
    /// Server address.
    addr: String,
    /// Credentials, when `--login` was given (`stats` may need a login).
    login: Option<(String, String)>,
    /// The connection, kept from the first sample to the second.
    client: Option<Client>,
}

impl Probe {
    /// A probe of `addr`; nothing is connected yet.
    pub fn new(addr: &str, login: Option<(String, String)>) -> Probe {
        Probe {
            addr: addr.to_string(),
            login,
            client: None,
        }
    }

    /// Samples `stats`, reconnecting once if the kept connection broke.
    pub fn sample(&mut self) -> Result<ServerSample, String> {
        match self.try_sample() {
            Ok(s) => Ok(s),
            Err(_) if self.client.take().is_some() => self.try_sample(),
            Err(e) => Err(e),
        }
    }

    fn try_sample(&mut self) -> Result<ServerSample, String> {
        if self.client.is_none() {
            let mut c = crate::cmd::connect(&self.addr).map_err(|e| e.to_string())?;
            c.stream()
                .set_read_timeout(Some(PROBE_TIMEOUT))
                .map_err(|e| e.to_string())?;
            if let Some((user, password)) = &self.login {
                c.request(json!({"op":"login","user":user,"password":password}), b"")
                    .map_err(|e| format!("login: {e}"))?;
            }
            self.client = Some(c);
        }
        let c = self.client.as_mut().expect("connected above");
        let reply = c
            .request(json!({"op":"stats"}), b"")
            .map_err(|e| e.to_string())?;
        Ok(ServerSample::from_fields(&reply.header.fields))
    }
}

/// Everything the report shows.
pub struct Report {
    /// Server address.
    pub addr: String,
    /// Connections asked for.
    pub conns: usize,
    /// Connections attempted.
    pub opened: usize,
    /// Most connections up at once.
    pub max_up: usize,
    /// `Some(rate)` for an open loop.
    pub rate: Option<f64>,
    /// Requests in flight per connection, at most.
    pub pipeline: usize,
    /// Open loop: requests due that never got a free slot.
    pub unsent: Option<u64>,
    /// The op mix, as given back by `Mix`'s `Display`.
    pub mix: String,
    /// Wall time of the run, drain included.
    pub elapsed: Duration,
    /// The `--duration` asked for.
    pub requested: Duration,
    /// Correct replies.
    pub ok: u64,
    /// Requests answered, rightly or wrongly.
    pub answered: u64,
    /// Latency histogram (µs).
    pub latency: Histogram<u64>,
    /// Latency per op of the mix, named as in `--mix`, in its order.
    pub latency_by_op: Vec<(String, Histogram<u64>)>,
    /// Connect time histogram (µs).
    pub connect: Histogram<u64>,
    /// TLS handshake time histogram (µs), on a `tls://` run.
    pub handshake: Option<Histogram<u64>>,
    /// Errors by kind.
    pub errors: Vec<(String, u64)>,
    /// The swarm's own CPU time over the run.
    pub cpu: Duration,
    /// The server's `stats` before and after, or why there are none.
    pub server: Result<(ServerSample, ServerSample), String>,
}

/// Percentiles of a histogram, as (label, quantile).
const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99_9", 0.999),
];

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let mut m = Map::new();
    for (label, q) in QUANTILES {
        m.insert(label.into(), h.value_at_quantile(q).into());
    }
    m.insert("max".into(), h.max().into());
    m.insert("mean".into(), (h.mean().round() as u64).into());
    m.insert("samples".into(), h.len().into());
    Value::Object(m)
}

fn percentile_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let mut s = String::new();
    for (label, q) in QUANTILES {
        s += &format!("{} {}  ", label.replace('_', "."), h.value_at_quantile(q));
    }
    s + &format!("max {}", h.max())
}

impl Report {
    /// All errors counted.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().map(|e| e.1).sum()
    }

    /// Open loop: whether the requests left unsent mean the server could
    /// not keep up. A few are always due in the last moments while every
    /// slot waits for a reply; only a backlog beyond what the rate
    /// schedules in 100 ms, and beyond 1% of all requests due, is the
    /// server's fault.
    fn fell_behind(&self, unsent: u64) -> bool {
        let due = self.ok + self.error_total() + unsent;
        let last_moments = self.rate.map_or(0.0, |r| r * 0.1);
        unsent as f64 > last_moments && unsent * 100 > due
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU spent over the run, and per answered request in µs
    /// (an error reply costs the server work too).
    fn server_cpu(&self) -> Option<(f64, Option<f64>)> {
        let (before, after) = self.server.as_ref().ok()?;
        let cpu = after.cpu_s? - before.cpu_s?;
        let per = (self.answered > 0).then(|| cpu * 1e6 / self.answered as f64);
        Some((cpu, per))
    }

    fn delta(&self, f: impl Fn(&ServerSample) -> Option<u64>) -> Option<u64> {
        let (before, after) = self.server.as_ref().ok()?;
        Some(f(after)?.saturating_sub(f(before)?))
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let cpu = self.cpu.as_secs_f64();
        let server = match (&self.server, self.server_cpu()) {
            (Err(why), _) => json!({"error": why}),
            (Ok((_, after)), cpu) => json!({
                "cpu_s": cpu.map(|c| c.0),
                "cpu_us_per_request": cpu.and_then(|c| c.1),
                "connections_after": after.connections,
                "bytes_in": self.delta(|s| s.bytes_in),
                "bytes_out": self.delta(|s| s.bytes_out),
                "refused": self.delta(|s| s.refused),
                "evicted": self.delta(|s| s.evicted),
            }),
        };
        json!({
            "addr": self.addr,
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "unsent": self.unsent,
            "pipeline": self.pipeline,
            "mix": self.mix,
            "conns": self.conns,
            "conns_opened": self.opened,
            "conns_max_up": self.max_up,
            "duration_s": self.secs(),
            "duration_requested_s": self.requested.as_secs_f64(),
            "requests": self.ok,
            "answered": self.answered,
            "throughput_rps": self.ok as f64 / self.secs(),
            "errors": self.error_total(),
            "errors_by_kind": self.errors.iter().map(|(k, n)| (k.clone(), Value::from(*n))).collect::<Map<String, Value>>(),
            "latency_us": percentiles(&self.latency),
            "latency_us_by_op": self.latency_by_op.iter().map(|(op, h)| json!({"op": op, "latency_us": percentiles(h)})).collect::<Vec<_>>(),
            "connect_us": percentiles(&self.connect),
            "tls_handshakes": self.handshake.as_ref().map(|h| h.len()),
            "tls_handshakes_per_s": self.handshake.as_ref().map(|h| h.len() as f64 / self.secs()),
            "tls_handshake_us": self.handshake.as_ref().map(percentiles),
            "swarm_cpu_s": cpu,
            "swarm_cpu_percent": 100.0 * cpu / self.secs(),
            "swarm_cpu_us_per_request": (self.ok > 0).then(|| cpu * 1e6 / self.ok as f64),
            "server": server,
        })
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        };
        let conns = match self.conns {
            1 => "1 connection".to_string(),
            n => format!("{n} connections"),
        };
        s += &format!(
            "skiff swarm → {}: {conns} ({} up at most), {mode}, pipeline {}, mix {}\n",
            self.addr, self.max_up, self.pipeline, self.mix
        );
        s += &format!(
            "duration     {:.2} s ({:.2} s of load, then the drain)\n",
            self.secs(),
            self.requested.as_secs_f64()
        );
        s += &format!(
            "requests     {} ok, {} errors\n",
            self.ok,
            self.error_total()
        );
        s += &format!("throughput   {:.0} req/s\n", self.ok as f64 / self.secs());
        if let Some(n) = self.unsent.filter(|&n| n > 0) {
            if self.fell_behind(n) {
                s += &format!(
                    "backlog      {n} requests due but never sent: the server fell behind the rate\n"
                );
            } else {
                s += &format!(
                    "backlog      {n} requests fell due at the very end, while every slot was busy\n"
                );
            }
        }
        s += &format!("latency µs   {}\n", percentile_line(&self.latency));
        // One line per op, when there are several to tell apart.
        if self.latency_by_op.len() > 1 {
            let width = self
                .latency_by_op
                .iter()
                .map(|(op, _)| op.chars().count())
                .max()
                .unwrap_or(0);
            for (op, h) in &self.latency_by_op {
                s += &format!("  {op:<width$}  {}\n", percentile_line(h));
            }
        }
        s += &format!("connect µs   {}\n", percentile_line(&self.connect));
        if let Some(h) = &self.handshake {
            s += &format!(
                "tls hs µs    {} ({} handshakes, {:.0}/s)\n",
                percentile_line(h),
                h.len(),
                h.len() as f64 / self.secs()
            );
        }
        if self.errors.is_empty() {
            s += "errors       none\n";
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            s += &format!("errors       {}\n", list.join(", "));
        }
        let cpu = self.cpu.as_secs_f64();
        let share = 100.0 * cpu / self.secs();
        s += &format!("swarm CPU    {cpu:.2} s ({share:.0}% of one core");
        if self.ok > 0 {
            s += &format!(", {:.1} µs/request", cpu * 1e6 / self.ok as f64);
        }
        s += ")";
        if share >= 90.0 {
            s += " — the swarm itself is the bottleneck";
        }
        s += "\n";
        match (&self.server, self.server_cpu()) {
            (Err(why), _) if why.starts_with("auth_required") => {
                s += &format!("server CPU   n/a ({why}; --login USER samples it too)\n")
            }
            (Err(why), _) => s += &format!("server CPU   n/a ({why})\n"),
            (Ok(_), None) => s += "server CPU   n/a (stats has no cpu_user_s/cpu_sys_s)\n",
            (Ok(_), Some((c, per))) => {
                s += &format!("server CPU   {c:.2} s");
                if let Some(per) = per {
                    s += &format!(", {per:.1} µs/request");
                }
                s += "\n";
            }
        }
        if let (Some(i), Some(o)) = (self.delta(|s| s.bytes_in), self.delta(|s| s.bytes_out)) {
            s += &format!("server bytes {i} in, {o} out\n");
        }
        // The server's side of errors: connections it turned away, or
        // closed to stay within its buffer budget (--out-total).
        let refused = self.delta(|s| s.refused).unwrap_or(0);
        let evicted = self.delta(|s| s.evicted).unwrap_or(0);
        if refused > 0 || evicted > 0 {
            s += &format!(
                "server said  {refused} connections refused (too_busy), {evicted} closed over its buffer budget\n"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(server: Result<(ServerSample, ServerSample), String>) -> Report {
        let mut latency = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000 {
            latency.record(v).unwrap();
        }
        Report {
            addr: "127.0.0.1:1".into(),
            conns: 2,
            opened: 2,
            max_up: 2,
            rate: None,
            pipeline: 1,
            unsent: None,
            mix: "echo:64=1".into(),
            elapsed: Duration::from_secs(2),
            requested: Duration::from_secs(2),
            ok: 1000,
            answered: 1000,
            latency_by_op: vec![("echo:64".into(), latency.clone())],
            latency,
            connect: Histogram::new(3).unwrap(),
            handshake: None,
            errors: vec![("too_busy".into(), 3)],
            cpu: Duration::from_millis(500),
            server,
        }
    }

    #[test]
    fn server_cpu_per_request_comes_from_two_samples() {
        let f = |cpu: f64| {
            let m = json!({"cpu_user_s": cpu, "cpu_sys_s": 0.5, "bytes_in": 10, "bytes_out": 20});
            ServerSample::from_fields(m.as_object().unwrap())
        };
        let r = report(Ok((f(1.0), f(1.25))));
        let j = r.to_json();
        assert_eq!(j["server"]["cpu_us_per_request"], 250.0);
        assert_eq!(j["requests"], 1000);
        assert_eq!(j["throughput_rps"], 500.0);
        assert_eq!(j["errors"], 3);
        assert_eq!(j["errors_by_kind"]["too_busy"], 3);
        assert_eq!(j["latency_us"]["p50"], 500);
        assert_eq!(j["connect_us"], Value::Null);
        assert!(
            r.to_text()
                .contains("server CPU   0.25 s, 250.0 µs/request")
        );
        assert!(!r.to_text().contains("server said"));
    }

    #[test]
    fn refusals_and_evictions_during_the_run_are_reported() {
        let f = |refused: u64, evicted: u64| {
            let m = json!({"cpu_user_s": 1.0, "cpu_sys_s": 0.5, "refused": refused, "evicted": evicted});
            ServerSample::from_fields(m.as_object().unwrap())
        };
        let r = report(Ok((f(2, 5), f(3, 12))));
        assert_eq!(r.to_json()["server"]["evicted"], 7);
        assert_eq!(r.to_json()["server"]["refused"], 1);
        assert!(r.to_text().contains(
            "server said  1 connections refused (too_busy), 7 closed over its buffer budget"
        ));
    }

    #[test]
    fn one_connection_is_singular() {
        let mut r = report(Err("x".into()));
        assert!(r.to_text().contains(": 2 connections (2 up at most)"));
        r.conns = 1;
        assert!(r.to_text().contains(": 1 connection (2 up at most)"));
    }

    #[test]
    fn latency_per_op_only_for_a_mix_of_several() {
        let mut r = report(Err("x".into()));
        assert!(!r.to_text().contains("  echo:64  "), "{}", r.to_text());
        let mut slow = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        slow.record(70_000).unwrap();
        r.latency_by_op.push(("get:/big.bin".into(), slow));
        let text = r.to_text();
        assert!(text.contains("\n  echo:64       p50 500  "), "{text}");
        assert!(text.contains("\n  get:/big.bin  p50 70015  "), "{text}");
        let j = r.to_json();
        assert_eq!(j["latency_us_by_op"][1]["op"], "get:/big.bin");
        assert_eq!(j["latency_us_by_op"][1]["latency_us"]["samples"], 1);
    }

    #[test]
    fn a_few_unsent_at_the_end_do_not_blame_the_server() {
        let mut r = report(Err("x".into()));
        r.rate = Some(500.0);
        r.unsent = Some(4);
        assert!(
            r.to_text().contains("4 requests fell due at the very end"),
            "{}",
            r.to_text()
        );
        assert!(!r.to_text().contains("fell behind"));
        r.unsent = Some(400);
        assert!(
            r.to_text().contains("the server fell behind the rate"),
            "{}",
            r.to_text()
        );
    }

    #[test]
    fn missing_cpu_fields_say_na() {
        let bare = ServerSample::from_fields(json!({"connections": 3}).as_object().unwrap());
        let r = report(Ok((bare.clone(), bare)));
        assert!(r.to_text().contains("server CPU   n/a"));
        assert_eq!(r.to_json()["server"]["cpu_s"], Value::Null);
        let r = report(Err("auth_required: log in first".into()));
        assert!(r.to_text().contains("server CPU   n/a (auth_required"));
    }
}
