//! `skiff`: the client of skiffd.

mod swarm;

use clap::{Parser, Subcommand};

/// Command-line client for skiffd.
#[derive(Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    /// Server address: HOST:PORT or unix:PATH
    #[arg(long, global = true, default_value = "127.0.0.1:9999", env = "SKIFF_ADDR")]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive the server with many connections and report what it takes
    Swarm(swarm::SwarmArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Swarm(args) => swarm::run(&cli.addr, args),
    };
    std::process::exit(code);
}
