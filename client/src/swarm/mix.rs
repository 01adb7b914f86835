//! The swarm's command-line vocabulary: the op mix (`--mix`) and durations.

use std::fmt;
use std::time::Duration;

use skiff::proto::parse_size;

/// Largest echo body the swarm will send: the protocol promises at least
/// 16 MiB, and every byte is generated and checked by the swarm's one thread.
const MAX_ECHO: u64 = 16 << 20;

/// One kind of request the swarm sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `echo` with a body of this many bytes; the reply must carry it back.
    Echo(u64),
    /// `get` of this path; the body must match the reply's `md5`.
    Get(String),
    /// `exec` of this command; it must end with exit code 0.
    Exec(String),
}

impl Op {
    /// True for ops that need `--login` first.
    pub fn needs_login(&self) -> bool {
        !matches!(self, Op::Echo(_))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Echo(n) => write!(f, "echo:{n}"),
            Op::Get(p) => write!(f, "get:{p}"),
            Op::Exec(c) => write!(f, "exec:{c}"),
        }
    }
}

/// A weighted choice of ops: `echo:64=90,get:/f=5,exec:true=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// The ops, each with the running total of weights up to and including
    /// it, so a pick is one scan over a handful of entries.
    entries: Vec<(Op, u64)>,
}

impl Mix {
    /// Parses `op:arg[=weight],...`. A weight is the text after the last
    /// `=` when it is an integer (default 1), so a command may contain `=`
    /// but not `,`.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("empty item in --mix {text:?}"));
            }
            let (spec, weight) = match item.rsplit_once('=') {
                Some((spec, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                    let w: u64 = w
                        .parse()
                        .map_err(|_| format!("weight {w:?} is too large"))?;
                    (spec, w)
                }
                _ => (item, 1),
            };
            let op = parse_op(spec)?;
            total = total
                .checked_add(weight)
                .ok_or_else(|| format!("weights in --mix {text:?} are too large"))?;
            entries.push((op, total));
        }
        if total == 0 {
            return Err(format!("--mix {text:?}: the weights add up to 0"));
        }
        Ok(Mix { entries })
    }

    /// Picks an op for a random number `r` (any u64), by weight. Returns
    /// the op's index (stable, for per-op bookkeeping) and the op.
    pub fn pick(&self, r: u64) -> (usize, &Op) {
        let total = self.entries.last().map_or(1, |e| e.1);
        let x = r % total;
        let i = self
            .entries
            .iter()
            .position(|e| x < e.1)
            .unwrap_or(self.entries.len() - 1);
        (i, &self.entries[i].0)
    }

    /// The ops in the order given.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.entries.iter().map(|e| &e.0)
    }

    /// True if any op needs `--login`.
    pub fn needs_login(&self) -> bool {
        self.ops().any(Op::needs_login)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prev = 0;
        for (i, (op, cum)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}={}", cum - prev)?;
            prev = *cum;
        }
        Ok(())
    }
}

fn parse_op(spec: &str) -> Result<Op, String> {
    let (name, arg) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?} in --mix: expected op:arg, e.g. echo:64"))?;
    match name {
        "echo" => {
            let n = parse_size(arg)?;
            if n > MAX_ECHO {
                return Err(format!("echo:{arg}: at most 16M per echo"));
            }
            Ok(Op::Echo(n))
        }
        "get" if !arg.is_empty() => Ok(Op::Get(arg.to_string())),
        "exec" if !arg.is_empty() => Ok(Op::Exec(arg.to_string())),
        "get" | "exec" => Err(format!("{spec:?} in --mix: {name} needs an argument")),
        _ => Err(format!(
            "unknown op {name:?} in --mix (known: echo:SIZE, get:PATH, exec:CMD)"
        )),
    }
}

/// Parses a duration: `30s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number
/// of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use e.g. 30s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown unit {u:?} in duration {text:?}")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("duration {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_mix_parses() {
        let m = Mix::parse("echo:64=90,get:/f=5,exec:true=5").unwrap();
        let ops: Vec<_> = m.ops().cloned().collect();
        assert_eq!(
            ops,
            [Op::Echo(64), Op::Get("/f".into()), Op::Exec("true".into())]
        );
        assert_eq!(m.to_string(), "echo:64=90,get:/f=5,exec:true=5");
        assert!(m.needs_login());
        assert_eq!(m.pick(0).0, 0);
        assert_eq!(m.pick(89).0, 0);
        assert_eq!(m.pick(90).0, 1);
        assert_eq!(m.pick(95).0, 2);
        assert_eq!(m.pick(100).0, 0, "wraps around the total");
    }

    #[test]
    fn sizes_weights_and_odd_arguments() {
        let m = Mix::parse("echo:16K").unwrap();
        assert_eq!(m.pick(7), (0, &Op::Echo(16384)));
        assert!(!m.needs_login());
        // a command may hold '=' and ':'; only a trailing integer is a weight
        let m = Mix::parse("exec:A=b sh -c 'x:y'").unwrap();
        assert_eq!(m.pick(0).1, &Op::Exec("A=b sh -c 'x:y'".into()));
        let m = Mix::parse("exec:A=1=3, echo:0=1").unwrap();
        assert_eq!(m.to_string(), "exec:A=1=3,echo:0=1");
    }

    #[test]
    fn bad_mixes_are_refused() {
        for bad in [
            "",
            "echo",
            "echo:",
            "echo:12X",
            "echo:17M",
            "nope:1",
            "get:",
            "echo:1=0",
            "echo:1,,echo:2",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "5x", "-1s", "1e999s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
