//! `skiff`: the client of skiffd.
//!
//! Exit status: 0 on success, 1 when the server answered with an error
//! (or a transfer's local file failed), 2 for usage errors and when no usable answer came (connection refused
//! or lost, timeout, a reply that breaks the protocol).

#![deny(unsafe_code)]

mod batch;
mod cmd;
mod exec;
mod files;
mod interrupt;
mod known_hosts;
mod shell;
mod swarm;
#[allow(unsafe_code)] // the one module that calls libc directly
mod sys;

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use clap::{Parser, Subcommand};

/// Command-line client for skiffd.
#[derive(Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    /// Server address: HOST:PORT, unix:PATH, or tls://HOST:PORT for TLS
    /// (the certificate is pinned on first use, as ssh does)
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9999",
        env = "SKIFF_ADDR"
    )]
    addr: String,
    /// Log in as this user (file commands; the shell logs in at start).
    /// The password comes from SKIFF_PASSWORD, else a prompt without echo
    #[arg(long, global = true, env = "SKIFF_USER")]
    user: Option<String>,
    /// Read the password from the first line of standard input (the rest
    /// of the input is left for the command: `exec`'s stdin, the shell's
    /// commands)
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Give each transfer's time and rate even when stdout is not a terminal
    #[arg(long, short, global = true)]
    verbose: bool,
    /// tls:// addresses: check the server's certificate against the
    /// authorities in this PEM file (and its name), instead of pinning it
    #[arg(long, global = true, value_name = "FILE", env = "SKIFF_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// tls:// addresses: where the certificates first seen are pinned
    /// [default: ~/.skiff_known_hosts]
    #[arg(long, global = true, value_name = "FILE", env = "SKIFF_KNOWN_HOSTS")]
    known_hosts: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each doc line is its `--help` summary.
#[derive(Subcommand)]
enum Command {
    /// Show the server's name, version, protocol and ops
    Hello,
    /// Have the server echo TEXT back (words are joined by spaces)
    Echo {
        /// The text to send (use -- before text that starts with -)
        #[arg(required = true)]
        text: Vec<OsString>,
        /// Ask the server to upper-case a-z
        #[arg(long, short)]
        upper: bool,
    },
    /// Ask the UDP time service for the server's local time
    Time {
        /// strftime format; the server's default is %Y-%m-%d %H:%M:%S
        #[arg(allow_hyphen_values = true)]
        format: Option<String>,
        /// Address of the UDP time service [default: the host of --addr,
        /// port 9998]
        #[arg(long, value_name = "ADDR")]
        udp: Option<String>,
    },
    /// Send TEXT to the UDP echo service and print what comes back
    UdpEcho {
        /// The text to send (words are joined by spaces)
        #[arg(required = true)]
        text: Vec<OsString>,
        /// Address of the UDP echo service [default: the host of --addr,
        /// port 9997]
        #[arg(long, value_name = "ADDR")]
        udp: Option<String>,
    },
    /// Show the server's counters (needs --user)
    Stats {
        /// Print the reply's fields as one line of JSON
        #[arg(long)]
        json: bool,
    },
    /// Download REMOTE into LOCAL (default: its name here), resuming
    /// LOCAL.part. With several REMOTEs, LOCAL must be a directory;
    /// LOCAL `-` writes one file to stdout
    Get {
        /// Copy directories whole, recreating their tree here
        #[arg(short, long)]
        recursive: bool,
        /// The files on the server, then where to store them (a directory
        /// keeps the remote names)
        #[arg(required = true, value_name = "REMOTE... [LOCAL]")]
        paths: Vec<String>,
    },
    /// Upload LOCAL to REMOTE (default: its name in the home), resuming
    /// an interrupted upload. With several LOCALs, REMOTE must be a
    /// directory. LOCAL `-` reads stdin, which is first copied to a
    /// temporary file: put must tell the length and MD5 before it sends
    Put {
        /// Copy directories whole, making the remote directories as needed
        #[arg(short, long)]
        recursive: bool,
        /// The files to send, then where to store them on the server
        /// (an existing directory, or a name ending in /, keeps the names)
        #[arg(required = true, value_name = "LOCAL... [REMOTE]")]
        paths: Vec<String>,
    },
    /// List a directory on the server (the home by default): kind, size,
    /// date, name
    // -h means human sizes here, as in ls, so help is --help only.
    #[command(disable_help_flag = true)]
    Ls {
        /// The directory (or file) to list
        path: Option<String>,
        /// The long listing (the default; accepted as ls takes it)
        #[arg(short, long)]
        long: bool,
        /// Sizes in binary units (1.5 KiB)
        #[arg(short = 'h', long)]
        human: bool,
        /// One JSON object per entry and line: name, kind, size, mtime
        /// (exact sizes, whatever -h says)
        #[arg(long)]
        json: bool,
        /// Print help
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Create a directory on the server
    Mkdir {
        /// The directory to create
        path: String,
    },
    /// Remove a file or an empty directory on the server
    Rm {
        /// What to remove
        path: String,
    },
    /// Show how much of the quota is used
    Quota,
    /// Send TEXT to USER (or * for everyone else logged in)
    Say {
        /// The recipient, or * for everyone
        to: String,
        /// The message (words are joined by spaces)
        #[arg(required = true)]
        text: Vec<OsString>,
    },
    /// Run CMD on the server (sh -c, in the home; needs the exec right);
    /// exits with its status, 128+N if signal N ended it. Stdin is
    /// forwarded unless it is a terminal; Ctrl-C cancels the command
    Exec {
        /// The command line (words are joined by spaces, as ssh does)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<OsString>,
    },
    /// Interactive prompt (reads plain lines when stdin is not a terminal)
    Shell(shell::ShellArgs),
    /// Drive the server with many connections and report what it takes
    Swarm(swarm::SwarmArgs),
    /// Print a completion script for SHELL (e.g. skiff completions bash > ~/.local/share/bash-completion/completions/skiff)
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): skiff man > skiff.1
    #[command(hide = true)]
    Man,
}

impl Cli {
    /// Where the password for `--user` comes from.
    fn password_source(&self) -> files::PasswordSource {
        if self.password_stdin {
            files::PasswordSource::StdinLine
        } else {
            files::PasswordSource::EnvOrPrompt
        }
    }
}

/// Joins arguments with spaces as raw bytes, so non-UTF-8 text goes out unchanged.
fn join_bytes(words: &[OsString]) -> Vec<u8> {
    words
        .iter()
        .map(|w| w.as_bytes())
        .collect::<Vec<_>>()
        .join(&b' ')
}

/// Connects to `addr` and runs `f` on the connection, printing to stdout.
fn with_client(
    addr: &str,
    f: impl FnOnce(&mut skiff::client::Client, &mut dyn Write) -> Result<(), cmd::CmdError>,
) -> i32 {
    let mut out = io::stdout().lock();
    let result = cmd::connect(addr)
        .and_then(|mut c| f(&mut c, &mut out))
        .and_then(|()| out.flush().map_err(cmd::output_error));
    cmd::report(result)
}

/// Connects, logs in as `--user` / `SKIFF_USER` and runs `f`, printing
/// to stdout; pushed messages go to stderr.
fn with_login(
    cli: &Cli,
    f: impl FnOnce(&mut skiff::client::Client, files::Push, &mut dyn Write) -> Result<(), cmd::CmdError>,
) -> i32 {
    let Some(user) = cli.user.as_deref() else {
        return cmd::report(Err(cmd::CmdError::Usage(
            "this command needs a login: give --user NAME or set SKIFF_USER".into(),
        )));
    };
    let password = match files::read_password(user, cli.password_source()) {
        Ok(p) => p,
        Err(e) => return cmd::report(Err(e)),
    };
    let mut push = files::show_push;
    with_client(&cli.addr, |c, out| {
        files::login(c, user, &password, &mut push)?;
        f(c, &mut push, out)
    })
}

fn main() {
    let cli = Cli::parse();
    cmd::set_tls_options(cmd::TlsOptions {
        ca: cli.tls_ca.clone(),
        known_hosts: cli.known_hosts.clone(),
    });
    let password = cli.password_source();
    let opts = files::Opts {
        verbose: cli.verbose,
    };
    let code = match cli.command {
        Command::Hello => with_client(&cli.addr, cmd::hello),
        Command::Echo { text, upper } => {
            let text = join_bytes(&text);
            with_client(&cli.addr, |c, out| cmd::echo(c, &text, upper, out))
        }
        // `stats` needs a login since the file service landed (PROTOCOL.md 3).
        Command::Stats { json } if cli.user.is_some() => {
            with_login(&cli, |c, _, out| cmd::stats(c, json, out))
        }
        Command::Stats { json } => with_client(&cli.addr, |c, out| cmd::stats(c, json, out)),
        Command::Time { format, ref udp } => {
            let format = format.unwrap_or_default();
            let udp = cmd::udp_service_addr(udp.as_deref(), &cli.addr, cmd::UDP_TIME_PORT);
            cmd::report(cmd::time(&udp, &format, &mut io::stdout().lock()))
        }
        Command::UdpEcho { ref text, ref udp } => {
            let udp = cmd::udp_service_addr(udp.as_deref(), &cli.addr, cmd::UDP_ECHO_PORT);
            cmd::report(cmd::udp_echo(
                &udp,
                &join_bytes(text),
                &mut io::stdout().lock(),
            ))
        }
        Command::Get {
            recursive,
            ref paths,
        } => with_login(&cli, |c, push, out| {
            batch::get(c, paths, recursive, opts, push, out)
        }),
        Command::Put {
            recursive,
            ref paths,
        } => with_login(&cli, |c, push, out| {
            batch::put(c, paths, recursive, opts, push, out)
        }),
        Command::Ls {
            ref path,
            human,
            json,
            ..
        } => {
            let format = match (json, human) {
                (true, _) => files::LsFormat::Json,
                (false, true) => files::LsFormat::Human,
                (false, false) => files::LsFormat::Long,
            };
            with_login(&cli, |c, push, out| {
                files::print_ls(c, path.as_deref(), format, push, out)
            })
        }
        Command::Mkdir { ref path } => with_login(&cli, |c, push, _| files::mkdir(c, path, push)),
        Command::Rm { ref path } => with_login(&cli, |c, push, _| files::rm(c, path, push)),
        Command::Quota => with_login(&cli, |c, push, out| files::print_quota(c, push, out)),
        Command::Say { ref to, ref text } => {
            let text = join_bytes(text);
            with_login(&cli, |c, push, _| files::say(c, to, &text, push))
        }
        Command::Exec { ref cmd } => {
            let mut status = 0;
            let code = match String::from_utf8(join_bytes(cmd)) {
                Ok(cmd) => with_login(&cli, |c, push, out| {
                    status = exec::one_shot(c, &cmd, push, out)?;
                    Ok(())
                }),
                Err(_) => cmd::report(Err(cmd::CmdError::Usage(
                    "the command must be UTF-8 text".into(),
                ))),
            };
            if code != 0 { code } else { status }
        }
        Command::Shell(args) => shell::run(
            &cli.addr,
            args,
            shell::Options {
                user: cli.user.clone(),
                password,
                opts,
            },
        ),
        Command::Completions { shell } => {
            // Built in memory: clap_complete panics if its writer fails
            // (a closed pipe), a plain write does not.
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "skiff", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff: cannot write the completion script: {e}");
                    1
                }
            }
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            match page.render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff: cannot write the man page: {e}");
                    1
                }
            }
        }
        Command::Swarm(args) => swarm::run(
            &cli.addr,
            args,
            swarm::Login {
                user: cli.user.as_deref(),
                password,
            },
        ),
    };
    std::process::exit(code);
}
