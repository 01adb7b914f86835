//! `skiff swarm`: a load generator on its own mio loop.

/// Options of `skiff swarm`.
#[derive(clap::Args)]
pub struct SwarmArgs {}

/// Runs the swarm against `addr`; returns the process exit code.
pub fn run(_addr: &str, _args: SwarmArgs) -> i32 {
    eprintln!("skiff swarm: not built yet");
    2
}
