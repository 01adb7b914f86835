//! `skiff shell`: an interactive prompt over one framed connection.
//!
//! ```text
//!   line ──▶ parse_line ──▶ (name, words, rest) ──▶ COMMANDS[name].run
//!                                                       │
//!               error: CODE: MESSAGE on stderr ◀── Err ─┤
//!               connection dropped, redialled  ◀── broken connection
//! ```
//!
//! Commands live in one table, [`COMMANDS`]: adding one is one entry and
//! one function. A line starting with
//! `!` is dispatched to the entry named `"!"` with the rest of the line
//! untouched: `!CMD` runs CMD on the server (exec) in the session's cwd,
//! verbatim, with its output as it arrives and an empty stdin; Ctrl-C
//! cancels it, and its status becomes the shell's.
//!
//! On a terminal the prompt has line editing and history (rustyline);
//! otherwise lines are read plainly from stdin with no prompt, so the
//! shell can be driven by a pipe or a script. The exit status is that of
//! the last command run, as with `sh`.
//!
//! After `login` the prompt is `user:cwd>`, and the user and password are
//! kept in memory for the session: when the connection breaks, the next
//! command redials, logs in again and returns to the cwd.
//!
//! On a terminal, while the prompt waits, a second thread watches the
//! connection ([`watch`]): messages pushed by `say` appear at once above
//! the prompt, a keepalive keeps the server's idle timeout away, and a
//! connection the server closes is redialled on the spot. Tab completes
//! command names and paths ([`complete`]). Ctrl-C during `get` or `put`
//! aborts only the transfer; what was moved stays for a resume. Without a
//! terminal, messages are shown on stderr as `[from] text` with the next
//! command.

mod complete;
mod local;
mod session;
mod watch;

use std::io::{self, BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor, ExternalPrinter};
use skiff::client::Client;

use crate::batch;
use crate::cmd::{self, CmdError};
use crate::exec;
use crate::files;
use crate::interrupt::OnInterrupt;
use complete::ShellHelper;
use session::Session;
use watch::Watcher;

/// Options of `skiff shell`.
#[derive(clap::Args)]
pub struct ShellArgs {
    /// Address of the UDP time service used by `time` [default: the host
    /// of --addr, port 9998]
    #[arg(long = "udp", value_name = "ADDR")]
    pub udp_time: Option<String>,
    /// On a terminal, send a keepalive this often while the prompt waits,
    /// so the server's idle timeout (300 s by default) never closes the
    /// shell; 0 sends none [default: 150s]
    #[arg(long, value_name = "DURATION", value_parser = skiff::proto::parse_duration)]
    pub keepalive: Option<Duration>,
}

/// Options of the shell that come from the global command line.
pub struct Options {
    /// Log in as this user at start.
    pub user: Option<String>,
    /// Where the password for that first login comes from.
    pub password: files::PasswordSource,
    /// Transfer options.
    pub opts: files::Opts,
}

/// What the loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Leave the shell.
    Quit,
}

/// One parsed input line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The command word (`"!"` for a `!cmd` line).
    pub name: String,
    /// The arguments after the command word, with quotes and escapes
    /// resolved.
    pub args: Vec<String>,
    /// The raw text after the command word, leading blanks removed: for
    /// commands that take free text and must see it unchanged.
    pub rest: String,
}

/// One entry of the command table.
pub struct Entry {
    /// The word that runs it.
    pub name: &'static str,
    /// Other words that run it.
    pub aliases: &'static [&'static str],
    /// The argument synopsis shown by `help`.
    pub usage: &'static str,
    /// One line for `help`.
    pub about: &'static str,
    /// Runs the command.
    pub run: fn(&mut Shell, &Line) -> Result<Flow, CmdError>,
}

/// Every shell command, in the order `help` lists them.
pub const COMMANDS: &[Entry] = &[
    Entry {
        name: "hello",
        aliases: &[],
        usage: "",
        about: "show the server's name, version and ops",
        run: run_hello,
    },
    Entry {
        name: "echo",
        aliases: &[],
        usage: "[--upper] TEXT...",
        about: "have the server echo TEXT (upper-cased with --upper)",
        run: run_echo,
    },
    Entry {
        name: "stats",
        aliases: &[],
        usage: "[--json]",
        about: "show the server's counters",
        run: run_stats,
    },
    Entry {
        name: "time",
        aliases: &[],
        usage: "[FORMAT]",
        about: "ask the UDP time service (strftime FORMAT)",
        run: run_time,
    },
    Entry {
        name: "login",
        aliases: &[],
        usage: "USER",
        about: "log in (asks for the password)",
        run: run_login,
    },
    Entry {
        name: "pwd",
        aliases: &[],
        usage: "",
        about: "show the current directory on the server",
        run: run_pwd,
    },
    Entry {
        name: "cd",
        aliases: &[],
        usage: "PATH",
        about: "change the current directory on the server",
        run: run_cd,
    },
    Entry {
        name: "ls",
        aliases: &["dir"],
        usage: "[-h] [--json] [PATH]",
        about: "list a directory: kind, size, date, name (-h: human sizes)",
        run: run_ls,
    },
    Entry {
        name: "mkdir",
        aliases: &[],
        usage: "PATH",
        about: "create a directory",
        run: run_mkdir,
    },
    Entry {
        name: "rm",
        aliases: &[],
        usage: "PATH",
        about: "remove a file or an empty directory",
        run: run_rm,
    },
    Entry {
        name: "quota",
        aliases: &[],
        usage: "",
        about: "show how much of the quota is used",
        run: run_quota,
    },
    Entry {
        name: "get",
        aliases: &[],
        usage: "[-r] REMOTE... [LOCAL]",
        about: "download files, -r directories (resumes LOCAL.part); LOCAL - is stdout",
        run: run_get,
    },
    Entry {
        name: "put",
        aliases: &[],
        usage: "[-r] LOCAL... [REMOTE]",
        about: "upload files, -r directories (resumes an interrupted upload)",
        run: run_put,
    },
    Entry {
        name: "lcd",
        aliases: &[],
        usage: "[DIR]",
        about: "change the local directory (default: HOME)",
        run: run_lcd,
    },
    Entry {
        name: "lpwd",
        aliases: &[],
        usage: "",
        about: "show the local directory",
        run: run_lpwd,
    },
    Entry {
        name: "lls",
        aliases: &[],
        usage: "[PATH]",
        about: "list a local directory, as ls does",
        run: run_lls,
    },
    Entry {
        name: "say",
        aliases: &[],
        usage: "USER|* TEXT...",
        about: "send a message to a user, or * for everyone",
        run: run_say,
    },
    Entry {
        name: "!",
        aliases: &[],
        usage: "CMD",
        about: "run CMD on the server in the current directory (needs the exec right)",
        run: run_exec,
    },
    Entry {
        name: "help",
        aliases: &["?"],
        usage: "",
        about: "list the commands",
        run: run_help,
    },
    Entry {
        name: "quit",
        aliases: &["exit"],
        usage: "",
        about: "leave the shell; so does Ctrl-D",
        run: run_quit,
    },
];

/// The shell's state between commands.
pub struct Shell {
    /// Where the server is, who is logged in, and the cwd.
    session: Session,
    /// Where the UDP time service is.
    udp_time: String,
    /// The framed connection; `None` after it broke, until the next
    /// command that needs it redials.
    client: Option<Client>,
    /// Exit status of the last command, returned when the shell ends.
    status: i32,
    /// The status a command that succeeded asks for instead of 0 (a
    /// remote command's own status).
    exit_status: Option<i32>,
    /// Transfer options.
    opts: files::Opts,
    /// Stdin is a terminal (passwords are prompted for without echo).
    terminal: bool,
    /// How often the prompt sends a keepalive; `None` for never.
    keepalive: Option<Duration>,
}

impl Shell {
    /// The connection, redialled if the last one broke. A redial starts a
    /// fresh session, so the login and the cwd are restored here.
    fn client(&mut self) -> Result<&mut Client, CmdError> {
        if self.client.is_none() {
            let client = self.session.redial(&mut |notice| eprintln!("{notice}"))?;
            self.client = Some(client);
        }
        // Just ensured above; the Option only exists to model "broken".
        self.client
            .as_mut()
            .ok_or_else(|| CmdError::Connection("not connected".into()))
    }

    /// Shows messages pushed while the prompt waited, without blocking
    /// (when no watching thread did it already). A connection the server
    /// closed meanwhile is dropped: the next command redials and logs in
    /// again.
    fn drain_pushes(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let fd = client.stream().as_raw_fd();
        // Bounded: a flood of messages cannot keep the prompt from running.
        for _ in 0..256 {
            if !client.stream().has_buffered() && !crate::sys::readable_now(fd) {
                return;
            }
            match client.recv() {
                Ok(f) if f.header.op == "msg" && f.header.id.is_none() => files::show_push(f),
                // Nothing was asked, so any other frame is the server's
                // last word before it closes (an idle timeout, a shutdown).
                Ok(f) => {
                    eprintln!("{}; reconnecting", files::last_word(&f));
                    self.client = None;
                    return;
                }
                Err(_) => {
                    eprintln!("the server closed the connection; reconnecting");
                    self.client = None;
                    return;
                }
            }
        }
    }

    /// The password for `user`: SKIFF_PASSWORD if set, as for one-shot
    /// commands; else a prompt without echo on a terminal, or the next
    /// input line from a script.
    fn read_password(&self, user: &str) -> Result<String, CmdError> {
        if let Some(p) = files::password_from_env()? {
            return Ok(p);
        }
        if self.terminal {
            return files::prompt_password(user);
        }
        files::password_from_stdin(user).map_err(|_| {
            CmdError::Usage(format!(
                "no password for {user}: the input ended (or set SKIFF_PASSWORD)"
            ))
        })
    }

    /// Logs in as `user` with the password from `source`, and remembers
    /// both for redials.
    fn do_login(
        &mut self,
        user: &str,
        source: files::PasswordSource,
    ) -> Result<files::LoginInfo, CmdError> {
        let password = match source {
            files::PasswordSource::StdinLine => files::password_from_stdin(user)?,
            files::PasswordSource::EnvOrPrompt => self.read_password(user)?,
        };
        let info = files::login(self.client()?, user, &password, &mut files::show_push)?;
        self.session.login = Some((info.user.clone(), password));
        self.session.cwd = info.cwd.clone();
        Ok(info)
    }

    /// Runs one input line and records its status.
    fn execute(&mut self, input: &str) -> Flow {
        self.drain_pushes();
        let line = match parse_line(input) {
            Ok(Some(line)) => line,
            Ok(None) => return Flow::Continue,
            Err(e) => {
                self.status = cmd::report(Err(e));
                return Flow::Continue;
            }
        };
        let Some(entry) = find(&line.name) else {
            self.status = cmd::report(Err(CmdError::Usage(format!(
                "unknown command {:?}; type help for the list",
                line.name
            ))));
            return Flow::Continue;
        };
        match (entry.run)(self, &line) {
            Ok(flow) => {
                // `quit` keeps the status of the command before it, as `exit` does in sh.
                if flow == Flow::Continue {
                    self.status = self.exit_status.take().unwrap_or(0);
                }
                flow
            }
            Err(e) => {
                if e.breaks_connection() {
                    self.client = None;
                }
                self.status = cmd::report(Err(e));
                Flow::Continue
            }
        }
    }
}

/// Looks a command word up in [`COMMANDS`].
fn find(name: &str) -> Option<&'static Entry> {
    COMMANDS
        .iter()
        .find(|e| e.name == name || e.aliases.contains(&name))
}

/// Splits a line into command word, arguments and raw rest. `Ok(None)`
/// for a blank line or a `#` comment.
pub fn parse_line(input: &str) -> Result<Option<Line>, CmdError> {
    let input = input.trim();
    if input.is_empty() || input.starts_with('#') {
        return Ok(None);
    }
    let (name, rest) = match input.strip_prefix('!') {
        Some(rest) => ("!".to_string(), rest.trim_start()),
        None => {
            let end = input.find(char::is_whitespace).unwrap_or(input.len());
            (input[..end].to_string(), input[end..].trim_start())
        }
    };
    Ok(Some(Line {
        name,
        args: split_words(rest)?,
        rest: rest.to_string(),
    }))
}

/// Splits text into words as a POSIX shell would for plain words: blanks
/// separate, `'...'` is literal, `"..."` allows `\"` and `\\`, and a
/// backslash outside quotes takes the next character literally.
pub fn split_words(text: &str) -> Result<Vec<String>, CmdError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(CmdError::Usage("unterminated ' quote".into())),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(CmdError::Usage("unterminated \" quote".into())),
                        },
                        Some(c) => w.push(c),
                        None => return Err(CmdError::Usage("unterminated \" quote".into())),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                w.push(chars.next().unwrap_or('\\'));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Rejects arguments for commands that take none.
fn no_args(line: &Line) -> Result<(), CmdError> {
    match line.args.first() {
        None => Ok(()),
        Some(a) => Err(CmdError::Usage(format!(
            "{} takes no arguments (got {a:?})",
            line.name
        ))),
    }
}

fn run_hello(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    no_args(line)?;
    cmd::hello(shell.client()?, &mut io::stdout().lock())?;
    Ok(Flow::Continue)
}

fn run_echo(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let mut args = line.args.as_slice();
    let mut upper = false;
    // Only leading options count, and `--` ends them, so any text can be echoed.
    while let Some(first) = args.first() {
        match first.as_str() {
            "--upper" | "-u" => upper = true,
            "--" => {
                args = &args[1..];
                break;
            }
            _ => break,
        }
        args = &args[1..];
    }
    if args.is_empty() {
        return Err(CmdError::Usage("echo [--upper] TEXT...".into()));
    }
    let text = args.join(" ");
    cmd::echo(
        shell.client()?,
        text.as_bytes(),
        upper,
        &mut io::stdout().lock(),
    )?;
    Ok(Flow::Continue)
}

fn run_stats(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let as_json = match line.args.as_slice() {
        [] => false,
        [flag] if flag == "--json" => true,
        _ => return Err(CmdError::Usage("stats [--json]".into())),
    };
    cmd::stats(shell.client()?, as_json, &mut io::stdout().lock())?;
    Ok(Flow::Continue)
}

fn run_time(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    // Words are rejoined so `time %H:%M %Z` needs no quotes.
    let format = line.args.join(" ");
    cmd::time(&shell.udp_time, &format, &mut io::stdout().lock())?;
    Ok(Flow::Continue)
}

/// The one argument of a command that takes exactly one.
fn one_arg<'a>(line: &'a Line, what: &str) -> Result<&'a str, CmdError> {
    match line.args.as_slice() {
        [a] => Ok(a),
        _ => Err(CmdError::Usage(format!("{} {what}", line.name))),
    }
}

fn run_login(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let user = one_arg(line, "USER")?;
    let info = shell.do_login(user, files::PasswordSource::EnvOrPrompt)?;
    println!(
        "logged in as {}; {}",
        info.user,
        files::quota_line(info.quota, info.used)
    );
    Ok(Flow::Continue)
}

fn run_pwd(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    no_args(line)?;
    let cwd = files::pwd(shell.client()?, &mut files::show_push)?;
    println!("{cwd}");
    shell.session.cwd = cwd;
    Ok(Flow::Continue)
}

fn run_cd(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let path = one_arg(line, "PATH")?;
    shell.session.cwd = files::cd(shell.client()?, path, &mut files::show_push)?;
    Ok(Flow::Continue)
}

fn run_ls(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let usage = || CmdError::Usage("ls [-l] [-h] [--json] [PATH]".into());
    let (flags, paths): (Vec<&String>, Vec<&String>) =
        line.args.iter().partition(|a| a.starts_with('-'));
    let format = files::LsFormat::from_flags(flags.iter().map(|f| f.as_str())).ok_or_else(usage)?;
    let path = match paths.as_slice() {
        [] => None,
        [p] => Some(p.as_str()),
        _ => return Err(usage()),
    };
    let mut out = io::stdout().lock();
    files::print_ls(
        shell.client()?,
        path,
        format,
        &mut files::show_push,
        &mut out,
    )?;
    Ok(Flow::Continue)
}

fn run_mkdir(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let path = one_arg(line, "PATH")?;
    files::mkdir(shell.client()?, path, &mut files::show_push)?;
    Ok(Flow::Continue)
}

fn run_rm(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let path = one_arg(line, "PATH")?;
    files::rm(shell.client()?, path, &mut files::show_push)?;
    Ok(Flow::Continue)
}

fn run_quota(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    no_args(line)?;
    let mut out = io::stdout().lock();
    files::print_quota(shell.client()?, &mut files::show_push, &mut out)?;
    Ok(Flow::Continue)
}

/// The arguments of `get`/`put` after an optional leading `-r`.
fn transfer_args(line: &Line) -> (bool, &[String]) {
    match line.args.split_first() {
        Some((flag, rest)) if flag == "-r" => (true, rest),
        _ => (false, &line.args),
    }
}

fn run_get(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let (recursive, paths) = transfer_args(line);
    if paths.is_empty() {
        return Err(CmdError::Usage("get [-r] REMOTE... [LOCAL]".into()));
    }
    let opts = shell.opts;
    interruptible(shell, "get", |client| {
        let mut out = io::stdout().lock();
        batch::get(
            client,
            paths,
            recursive,
            opts,
            &mut files::show_push,
            &mut out,
        )
    })
}

fn run_put(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let (recursive, paths) = transfer_args(line);
    if paths.is_empty() {
        return Err(CmdError::Usage("put [-r] LOCAL... [REMOTE]".into()));
    }
    // The shell's stdin is its own input (the terminal, or the script).
    if paths.iter().any(|p| p == "-") {
        return Err(CmdError::Usage(
            "put - reads stdin, which is the shell's own input: use skiff put - REMOTE".into(),
        ));
    }
    let opts = shell.opts;
    interruptible(shell, "put", |client| {
        let mut out = io::stdout().lock();
        batch::put(
            client,
            paths,
            recursive,
            opts,
            &mut files::show_push,
            &mut out,
        )
    })
}

/// Runs a transfer so that Ctrl-C on a terminal aborts it and nothing
/// else. The socket is shut down, which ends the transfer's read or write
/// at once, however long it would have waited; the connection is then
/// out of step, so it is dropped and the next command redials. What was
/// moved stays: `LOCAL.part` for `get`, the server's partial upload for
/// `put`, and the same command resumes from there. (Hashing a large file
/// before `put` touches no socket: Ctrl-C takes effect when it is done.)
fn interruptible(
    shell: &mut Shell,
    what: &str,
    transfer: impl FnOnce(&mut Client) -> Result<(), CmdError>,
) -> Result<Flow, CmdError> {
    let terminal = shell.terminal;
    let client = shell.client()?;
    let stopped = Arc::new(AtomicBool::new(false));
    let armed = if terminal {
        let socket = client.stream().try_clone().map_err(cmd::io_error)?;
        let stopped = Arc::clone(&stopped);
        Some(OnInterrupt::arm(move || {
            stopped.store(true, Ordering::SeqCst);
            let _ = socket.shutdown_both();
        }))
    } else {
        None
    };
    let result = transfer(client);
    drop(armed);
    if stopped.load(Ordering::SeqCst) {
        shell.client = None;
        return Err(CmdError::Interrupted(format!(
            "{what} stopped by Ctrl-C; the same {what} resumes where it stopped"
        )));
    }
    result.map(|()| Flow::Continue)
}

fn run_say(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let [to, text @ ..] = line.args.as_slice() else {
        return Err(CmdError::Usage("say USER|* TEXT...".into()));
    };
    if text.is_empty() {
        return Err(CmdError::Usage("say USER|* TEXT...".into()));
    }
    let text = text.join(" ");
    files::say(shell.client()?, to, text.as_bytes(), &mut files::show_push)?;
    Ok(Flow::Continue)
}

fn run_exec(shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    if line.rest.is_empty() {
        return Err(CmdError::Usage("!CMD".into()));
    }
    // stdout unlocked: a pushed message on stderr must not wait for it.
    let result = exec::in_session(
        shell.client()?,
        &line.rest,
        &mut io::stdout(),
        &mut io::stderr(),
        &mut files::show_push,
    );
    match result {
        Ok(status) => {
            shell.exit_status = Some(status);
            Ok(Flow::Continue)
        }
        Err(e) => {
            if matches!(e, CmdError::Output(_)) {
                // The command's remaining frames are unread.
                shell.client = None;
            }
            Err(e)
        }
    }
}

fn run_lcd(_shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let dir = match line.args.as_slice() {
        [] => None,
        [d] => Some(d.as_str()),
        _ => return Err(CmdError::Usage("lcd [DIR]".into())),
    };
    println!("{}", local::lcd(dir)?.display());
    Ok(Flow::Continue)
}

fn run_lpwd(_shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    no_args(line)?;
    println!("{}", local::lpwd()?.display());
    Ok(Flow::Continue)
}

fn run_lls(_shell: &mut Shell, line: &Line) -> Result<Flow, CmdError> {
    let path = match line.args.as_slice() {
        [] => None,
        [p] => Some(p.as_str()),
        _ => return Err(CmdError::Usage("lls [PATH]".into())),
    };
    local::lls(path, &mut io::stdout().lock())?;
    Ok(Flow::Continue)
}

fn run_help(_shell: &mut Shell, _line: &Line) -> Result<Flow, CmdError> {
    let mut out = io::stdout().lock();
    let synopsis = |e: &Entry| {
        let mut s = e.name.to_string();
        if !e.usage.is_empty() {
            s = format!("{s} {}", e.usage);
        }
        s
    };
    let width = COMMANDS
        .iter()
        .map(|e| synopsis(e).len())
        .max()
        .unwrap_or(0);
    for e in COMMANDS {
        let mut about = e.about.to_string();
        if !e.aliases.is_empty() {
            about = format!("{about} (also: {})", e.aliases.join(", "));
        }
        writeln!(out, "  {:width$}  {about}", synopsis(e)).map_err(cmd::output_error)?;
    }
    Ok(Flow::Continue)
}

fn run_quit(_shell: &mut Shell, _line: &Line) -> Result<Flow, CmdError> {
    Ok(Flow::Quit)
}

/// Where history is kept: `$HOME/.skiff_history`, or nowhere without HOME.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".skiff_history"))
}

/// Runs the shell against `addr`; returns the process exit status.
pub fn run(addr: &str, args: ShellArgs, options: Options) -> i32 {
    let client = match cmd::connect(addr) {
        Ok(c) => c,
        Err(e) => return cmd::report(Err(e)),
    };
    let terminal = io::stdin().is_terminal();
    let mut shell = Shell {
        session: Session {
            addr: addr.to_string(),
            login: None,
            cwd: "/".into(),
        },
        udp_time: cmd::udp_service_addr(args.udp_time.as_deref(), addr, cmd::UDP_TIME_PORT),
        client: Some(client),
        status: 0,
        exit_status: None,
        opts: options.opts,
        terminal,
        keepalive: match args.keepalive {
            None => Some(watch::KEEPALIVE_EVERY),
            Some(every) if every.is_zero() => None,
            every => every,
        },
    };
    if let Some(user) = &options.user {
        // A shell that cannot log in as asked would only fail command after command.
        match shell.do_login(user, options.password) {
            // A script gets only the output of its own commands.
            Ok(info) if terminal => println!(
                "logged in as {}; {}",
                info.user,
                files::quota_line(info.quota, info.used)
            ),
            Ok(_) => {}
            Err(e) => return cmd::report(Err(e)),
        }
    }
    if terminal {
        interactive(&mut shell);
    } else {
        scripted(&mut shell);
    }
    shell.status
}

/// Terminal input: line editing, history and completion, with the
/// connection watched while the prompt waits. Falls back to plain reading
/// if the terminal cannot be driven.
fn interactive(shell: &mut Shell) {
    // List: Tab completes what all candidates share, a second Tab lists
    // them, as in bash.
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skiff: no line editing ({e}); reading plain lines");
            return scripted(shell);
        }
    };
    editor.set_helper(Some(ShellHelper::default()));
    let history = history_path();
    if let Some(path) = &history {
        // A missing or unreadable history file is normal on first use.
        let _ = editor.load_history(path);
    }
    println!(
        "connected to {}; type help for commands, quit or Ctrl-D to leave",
        shell.session.addr
    );
    loop {
        let watcher = start_watch(shell, &mut editor);
        if let Some(helper) = editor.helper() {
            helper.begin_line(watcher.as_ref().map(Watcher::lister));
        }
        let read = editor.readline(&shell.session.prompt());
        if let Some(helper) = editor.helper() {
            helper.begin_line(None);
        }
        if let Some(watcher) = watcher {
            (shell.client, shell.session) = watcher.stop();
        }
        match read {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    // Saved at once, not only on quit: a shell that is
                    // killed or loses its terminal keeps what was typed.
                    if let Some(path) = &history {
                        let _ = editor.save_history(path);
                    }
                }
                if shell.execute(&line) == Flow::Quit {
                    break;
                }
            }
            // Ctrl-C abandons the line being typed, as in sh.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: input: {e}");
                shell.status = 2;
                break;
            }
        }
    }
    if let Some(path) = &history {
        // History is a convenience; failing to save it must not fail the shell.
        let _ = editor.save_history(path);
    }
}

/// Hands the connection to a watching thread for the time the prompt
/// waits. `None` when the editor cannot print from another thread (its
/// output is not a terminal): then messages wait for the next command.
fn start_watch(
    shell: &mut Shell,
    editor: &mut Editor<ShellHelper, FileHistory>,
) -> Option<Watcher> {
    let mut printer = editor.create_external_printer().ok()?;
    let print: watch::Printer = Box::new(move |text| {
        // A lost message is not worth stopping for.
        let _ = printer.print(text);
    });
    match Watcher::start(
        shell.client.take(),
        shell.session.clone(),
        shell.keepalive,
        print,
    ) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            // The connection went with the failed start; the next command redials.
            eprintln!("warning: cannot watch the connection ({e}); messages wait for Enter");
            None
        }
    }
}

/// Non-terminal input: one command per line, no prompt, until EOF or quit.
fn scripted(shell: &mut Shell) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Locked per line: `login` reads its password line from the same stdin.
        let read = io::stdin().lock().read_until(b'\n', &mut buf);
        match read {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if shell.execute(&line) == Flow::Quit {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("error: input: {e}");
                shell.status = 2;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(words("  a  b "), ["a", "b"]);
        assert_eq!(
            words(r#"'a  b' "c \"d\"" e\ f"#),
            ["a  b", r#"c "d""#, "e f"]
        );
        assert_eq!(words(r#"x''y "" """#), ["xy", "", ""]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
    }

    #[test]
    fn parses_lines() {
        assert_eq!(parse_line("   ").unwrap(), None);
        assert_eq!(parse_line("# note").unwrap(), None);
        let l = parse_line("echo --upper  hi  there").unwrap().unwrap();
        assert_eq!(l.name, "echo");
        assert_eq!(l.args, ["--upper", "hi", "there"]);
        assert_eq!(l.rest, "--upper  hi  there");
        let l = parse_line("!ls -l 'a b'").unwrap().unwrap();
        assert_eq!(l.name, "!");
        assert_eq!(l.rest, "ls -l 'a b'");
    }

    #[test]
    fn table_is_consistent() {
        for (i, e) in COMMANDS.iter().enumerate() {
            for name in std::iter::once(&e.name).chain(e.aliases) {
                let first = COMMANDS
                    .iter()
                    .position(|o| o.name == *name || o.aliases.contains(name));
                assert_eq!(first, Some(i), "{name} is claimed twice");
            }
        }
        assert!(find("exit").is_some());
        assert!(find("nope").is_none());
    }
}
