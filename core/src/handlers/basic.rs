//! The ops open to everyone: `hello`, `echo` and `stats` (`bye` is one
//! line in the dispatcher).

use serde_json::Number;

use skiff::frame::Header;
use skiff::proto::PROTO_VERSION;

use super::{Next, Sink, ok};
use crate::ctx::Ctx;

/// Ops this server understands, as `hello` reports them.
pub const OPS: &[&str] = &[
    "hello", "echo", "bye", "login", "stats", "pwd", "cd", "ls", "mkdir", "rm", "quota", "get",
    "put", "data", "say", "exec", "stdin", "cancel",
];

/// `hello`: who we are and what we speak.
pub fn hello(id: Option<&Number>, out: &mut Vec<u8>) -> Next {
    ok(out, id)
        .field("server", "skiffd")
        .field("version", env!("CARGO_PKG_VERSION"))
        .field("proto", PROTO_VERSION)
        .field("ops", OPS)
        .finish();
    Next::Done
}

/// `echo`: the reply's header goes out at once, and the body follows as
/// it arrives, so a 16 MiB echo never sits whole in memory.
pub fn echo(header: &Header, out: &mut Vec<u8>) -> Next {
    ok(out, header.id.as_ref())
        .field("size", header.size)
        .finish();
    Next::Body(Sink::Echo {
        upper: header.flag("upper"),
    })
}

/// One piece of an echo body.
pub fn echo_body(upper: bool, chunk: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(chunk);
    if upper {
        out[start..].make_ascii_uppercase();
    }
}

/// `stats`: the counters, plus this process's CPU time and memory, so a
/// load generator can compute CPU per request from two samples.
pub fn stats(id: Option<&Number>, out: &mut Vec<u8>, ctx: &mut Ctx) -> Next {
    let s = &*ctx.stats;
    let cpu = skiff::os::cpu_time();
    ok(out, id)
        .field("connections", s.connections)
        .field("uptime_s", ctx.now.duration_since(s.started).as_secs())
        .field("bytes_in", s.bytes_in)
        .field("bytes_out", s.bytes_out)
        .field("children", s.children)
        .field("accepted", s.accepted)
        .field("refused", s.refused)
        .field("requests", s.requests)
        .field("datagrams", s.datagrams)
        .field("buffered_bytes", s.buffered_total())
        .field("evicted", s.evicted)
        .field("warmed_windows", s.warmed_windows)
        .field("cpu_user_s", cpu.user.as_secs_f64())
        .field("cpu_sys_s", cpu.system.as_secs_f64())
        .field("rss_bytes", skiff::os::rss_bytes())
        .field("max_rss_bytes", cpu.max_rss)
        .field("pid", std::process::id())
        .finish();
    Next::Done
}
