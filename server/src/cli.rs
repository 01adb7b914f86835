//! The command line of `skiffd`: a table of its commands and their
//! options, one small parser that reads words against that table, and the
//! help text printed from it.
//!
//! ```text
//! skiffd [serve] [OPTIONS]               serve (also with no command at all)
//! skiffd user [--data-dir DIR] add|del|mod|passwd|list [OPTIONS] [NAME]
//! skiffd completions SHELL               a script from contrib/completions/
//! skiffd man                             the page in docs/skiffd.1
//! skiffd help [COMMAND...]               the same as COMMAND... --help
//! ```
//!
//! The command line is small and fixed, so a general argument parser
//! (clap, with its derive, help and error machinery) would be most of
//! what it costs in the binary: see BENCHMARKS.md §14. Here the table
//! (`cli/table.rs`) says which options exist, whether each takes a value,
//! may repeat, and what its default is; [`Words`] sorts the words of the
//! command line into options and positionals against it; `serve` and
//! `user` give the values their types (`cli/serve_args.rs` for serve's),
//! and a value that does not parse is a usage error (exit 2) that names
//! the option.
//!
//! The completion scripts and the man page are static files printed by
//! `completions` and `man`; the tests below check that every command and
//! option in the table appears in each of them, and nothing else, so they
//! cannot drift.

mod serve_args;
mod table;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use skiff::proto::parse_size;

use crate::usercli::{self, UserCommand};

pub use serve_args::ServeArgs;
use serve_args::text;
use table::{COMPLETIONS, MAN, SERVE, SKIFFD, USER, USER_DATA_DIR};

/// One `--long` option of a command.
pub struct Opt {
    /// The name without its dashes: `max-body`.
    pub long: &'static str,
    /// The value's name in help (`SIZE`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
    /// What happens when the option is not given.
    pub default: Default,
    /// May be given more than once (the listeners); any other option
    /// given twice is a usage error rather than a silent "last one wins".
    pub repeats: bool,
}

/// An option's default, as help shows it.
pub enum Default {
    /// None to speak of (a switch that is off, an optional value).
    None,
    /// A value the parser sets before reading the command line, through
    /// the same code as a given value: what help shows is what is used.
    Value(&'static str),
    /// A sentence for help only: the default is decided elsewhere (the
    /// listeners serve their defaults only when no listener is named).
    Note(&'static str),
}

/// A command: a leaf (`serve`, `user add`) or a group of them (`user`).
pub struct Command {
    /// The word that names it: `add`.
    pub name: &'static str,
    /// The whole command as typed: `skiffd user add`.
    pub path: &'static str,
    /// The rest of the usage line: `[OPTIONS] <NAME>`.
    pub usage: &'static str,
    /// The first line of its help, and its line in its group's list.
    pub about: &'static str,
    /// The positional argument and its help, if it takes one.
    pub positional: Option<(&'static str, &'static str)>,
    pub options: &'static [Opt],
    /// The commands of a group.
    pub commands: &'static [&'static Command],
    /// Left out of its group's list (`man` is for packagers).
    pub hidden: bool,
    /// A paragraph printed after the options.
    pub after: &'static str,
}

/// What the command line asks for.
pub enum Action {
    Serve(Box<ServeArgs>),
    User {
        data_dir: PathBuf,
        command: UserCommand,
    },
    Completions(Shell),
    Man,
    /// Help or the version: print it and exit successfully.
    Print(String),
}

/// A command line that does not parse: printed with the command's usage
/// line, exit status 2.
pub struct UsageError {
    pub message: String,
    pub command: &'static Command,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.command;
        write!(
            f,
            "error: {}\n\nUsage: {} {}\n\nFor more information, try '{} --help'.",
            self.message, c.path, c.usage, c.path
        )
    }
}

fn error(command: &'static Command, message: impl Into<String>) -> UsageError {
    UsageError {
        message: message.into(),
        command,
    }
}

/// The shells `skiffd completions` has a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

impl Shell {
    pub const ALL: [(&str, Shell); 5] = [
        ("bash", Shell::Bash),
        ("zsh", Shell::Zsh),
        ("fish", Shell::Fish),
        ("elvish", Shell::Elvish),
        ("powershell", Shell::Powershell),
    ];

    /// The completion script, kept in contrib/completions/ for packagers.
    pub fn script(self) -> &'static str {
        match self {
            Shell::Bash => include_str!("../../contrib/completions/skiffd.bash"),
            Shell::Zsh => include_str!("../../contrib/completions/_skiffd"),
            Shell::Fish => include_str!("../../contrib/completions/skiffd.fish"),
            Shell::Elvish => include_str!("../../contrib/completions/skiffd.elv"),
            Shell::Powershell => include_str!("../../contrib/completions/skiffd.ps1"),
        }
    }
}

/// The man page (roff), printed by `skiffd man`.
pub const MAN_PAGE: &str = include_str!("../../docs/skiffd.1");

/// One word of a command line, sorted against a command's options.
enum Word {
    Help,
    /// An option and its value (empty for a switch).
    Opt(&'static Opt, OsString),
    Positional(OsString),
}

/// The words after the program's name, read one at a time.
struct Words {
    rest: std::vec::IntoIter<OsString>,
    /// After `--`, every word is positional.
    only_positionals: bool,
}

impl Words {
    /// The next word, sorted against the options of `command`.
    fn next(&mut self, command: &'static Command) -> Result<Option<Word>, UsageError> {
        let Some(word) = self.rest.next() else {
            return Ok(None);
        };
        let bytes = word.as_bytes();
        if self.only_positionals || bytes == b"-" || !bytes.starts_with(b"-") {
            return Ok(Some(Word::Positional(word)));
        }
        if bytes == b"--" {
            self.only_positionals = true;
            return self.next(command);
        }
        if bytes == b"-h" || bytes == b"--help" {
            return Ok(Some(Word::Help));
        }
        let unexpected = || {
            error(
                command,
                format!("unexpected argument '{}' found", word.to_string_lossy()),
            )
        };
        let Some(long) = bytes.strip_prefix(b"--") else {
            return Err(unexpected());
        };
        // `--name=value` or `--name value`.
        let (name, inline) = match long.iter().position(|&b| b == b'=') {
            Some(i) => (&long[..i], Some(OsStr::from_bytes(&long[i + 1..]))),
            None => (long, None),
        };
        let Some(opt) = command.options.iter().find(|o| o.long.as_bytes() == name) else {
            return Err(unexpected());
        };
        let value = match (opt.value, inline) {
            (None, None) => OsString::new(),
            (None, Some(value)) => {
                return Err(error(
                    command,
                    format!(
                        "unexpected value '{}' for '--{}' found",
                        value.to_string_lossy(),
                        opt.long
                    ),
                ));
            }
            (Some(_), Some(value)) => value.to_owned(),
            // A value that looks like an option is a forgotten value
            // (`--data-dir --listen ...`); `--data-dir=--odd` still works.
            (Some(_), None) => match self.rest.next() {
                Some(value) if !value.as_bytes().starts_with(b"--") => value,
                _ => {
                    return Err(error(
                        command,
                        format!(
                            "a value is required for '{}' but none was supplied",
                            shown(opt)
                        ),
                    ));
                }
            },
        };
        Ok(Some(Word::Opt(opt, value)))
    }
}

/// `--name <VALUE>`, or `--name` for a switch: how help and errors show an option.
fn shown(opt: &Opt) -> String {
    match opt.value {
        Some(value) => format!("--{} <{value}>", opt.long),
        None => format!("--{}", opt.long),
    }
}

/// Refuses a second use of an option that does not repeat.
fn once(
    command: &'static Command,
    opt: &'static Opt,
    seen: &mut Vec<&'static str>,
) -> Result<(), UsageError> {
    if !opt.repeats && seen.contains(&opt.long) {
        return Err(error(
            command,
            format!(
                "the argument '{}' cannot be used multiple times",
                shown(opt)
            ),
        ));
    }
    seen.push(opt.long);
    Ok(())
}

/// The error for a value that does not parse.
fn invalid(command: &'static Command, opt: &Opt, value: &OsStr, why: &str) -> UsageError {
    error(
        command,
        format!(
            "invalid value '{}' for '{}': {why}",
            value.to_string_lossy(),
            shown(opt)
        ),
    )
}

/// The command line with `serve` put in front when it starts with a flag
/// of `serve` rather than a command: `skiffd --listen ...` is
/// `skiffd serve --listen ...`. Help and version flags are left to the
/// top level.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let starts_with_flag = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-') && !["-h", "--help", "-V", "--version"].contains(&a));
    if starts_with_flag {
        args.insert(1, "serve".into());
    }
    args
}

/// Reads a whole command line, the program's name first.
pub fn parse(args: Vec<OsString>) -> Result<Action, UsageError> {
    let mut words = Words {
        rest: with_default_command(args).into_iter(),
        only_positionals: false,
    };
    words.rest.next(); // the program's name
    let Some(first) = words.rest.next() else {
        return serve(&mut words);
    };
    match first.to_str().unwrap_or("") {
        "-h" | "--help" => Ok(Action::Print(help(&SKIFFD))),
        "-V" | "--version" => Ok(Action::Print(format!(
            "skiffd {}\n",
            env!("CARGO_PKG_VERSION")
        ))),
        "serve" => serve(&mut words),
        "user" => user(&mut words),
        "completions" => completions(&mut words),
        "man" => match words.next(&MAN)? {
            None => Ok(Action::Man),
            Some(Word::Help) => Ok(Action::Print(help(&MAN))),
            Some(Word::Opt(..)) => takes_no_options(&MAN),
            Some(Word::Positional(p)) => Err(unexpected(&MAN, &p)),
        },
        "help" => help_for(&SKIFFD, &mut words),
        _ => Err(error(
            &SKIFFD,
            format!("unrecognized subcommand '{}'", first.to_string_lossy()),
        )),
    }
}

/// For a command without options (`man`, `completions`), whose words
/// are never sorted into one: the parser has no such option to offer.
fn takes_no_options(command: &'static Command) -> Result<Action, UsageError> {
    Err(error(command, "takes no options"))
}

fn unexpected(command: &'static Command, word: &OsStr) -> UsageError {
    error(
        command,
        format!("unexpected argument '{}' found", word.to_string_lossy()),
    )
}

/// `help [COMMAND...]`: the help of the command named, or of `group`.
fn help_for(group: &'static Command, words: &mut Words) -> Result<Action, UsageError> {
    let mut command = group;
    for word in words.rest.by_ref() {
        command = command
            .commands
            .iter()
            .find(|c| OsStr::new(c.name) == word)
            .ok_or_else(|| {
                error(
                    command,
                    format!("unrecognized subcommand '{}'", word.to_string_lossy()),
                )
            })?;
    }
    Ok(Action::Print(help(command)))
}

fn serve(words: &mut Words) -> Result<Action, UsageError> {
    let mut args = ServeArgs::default();
    for opt in SERVE.options {
        if let Default::Value(value) = opt.default {
            args.set(opt.long, OsStr::new(value))
                .map_err(|why| invalid(&SERVE, opt, OsStr::new(value), &why))?;
        }
    }
    let mut seen = Vec::new();
    while let Some(word) = words.next(&SERVE)? {
        match word {
            Word::Help => return Ok(Action::Print(help(&SERVE))),
            Word::Positional(p) => return Err(unexpected(&SERVE, &p)),
            Word::Opt(opt, value) => {
                once(&SERVE, opt, &mut seen)?;
                args.set(opt.long, &value)
                    .map_err(|why| invalid(&SERVE, opt, &value, &why))?;
            }
        }
    }
    // A certificate needs its key, and the other way round.
    match (&args.tls_cert, &args.tls_key) {
        (Some(_), None) => Err(error(&SERVE, "--tls-cert needs --tls-key <FILE> too")),
        (None, Some(_)) => Err(error(&SERVE, "--tls-key needs --tls-cert <FILE> too")),
        _ => Ok(Action::Serve(Box::new(args))),
    }
}

fn completions(words: &mut Words) -> Result<Action, UsageError> {
    let mut shell = None;
    while let Some(word) = words.next(&COMPLETIONS)? {
        match word {
            Word::Help => return Ok(Action::Print(help(&COMPLETIONS))),
            Word::Opt(..) => return takes_no_options(&COMPLETIONS),
            Word::Positional(p) if shell.is_none() => {
                let known = Shell::ALL.iter().find(|(name, _)| OsStr::new(name) == p);
                shell = Some(known.map(|&(_, s)| s).ok_or_else(|| {
                    error(
                        &COMPLETIONS,
                        format!(
                            "invalid value '{}' for '<SHELL>': expected bash, zsh, fish, elvish or powershell",
                            p.to_string_lossy()
                        ),
                    )
                })?);
            }
            Word::Positional(p) => return Err(unexpected(&COMPLETIONS, &p)),
        }
    }
    shell.map(Action::Completions).ok_or_else(|| {
        error(
            &COMPLETIONS,
            "the shell is missing: bash, zsh, fish, elvish or powershell",
        )
    })
}

/// What the words of one `user` command came to, before they are checked
/// against what that command needs.
#[derive(Default)]
struct UserWords {
    name: Option<String>,
    quota: Option<OsString>,
    exec: bool,
    no_exec: bool,
    purge: bool,
    password_stdin: bool,
}

fn user(words: &mut Words) -> Result<Action, UsageError> {
    let mut data_dir = PathBuf::from(match USER_DATA_DIR.default {
        Default::Value(dir) => dir,
        _ => "./skiff-data",
    });
    let mut seen = Vec::new();
    // `--data-dir` may come before the command as well as after it.
    let name = loop {
        match words.next(&USER)? {
            None => {
                return Err(error(
                    &USER,
                    "a command is required: add, del, mod, passwd or list",
                ));
            }
            Some(Word::Help) => return Ok(Action::Print(help(&USER))),
            Some(Word::Opt(opt, value)) => {
                once(&USER, opt, &mut seen)?;
                data_dir = value.into();
            }
            Some(Word::Positional(name)) => break name,
        }
    };
    if name == "help" {
        return help_for(&USER, words);
    }
    let Some(&command) = USER.commands.iter().find(|c| OsStr::new(c.name) == name) else {
        return Err(error(
            &USER,
            format!("unrecognized subcommand '{}'", name.to_string_lossy()),
        ));
    };
    let mut got = UserWords::default();
    while let Some(word) = words.next(command)? {
        match word {
            Word::Help => return Ok(Action::Print(help(command))),
            Word::Positional(p) if got.name.is_none() && command.positional.is_some() => {
                let name = text(&p).map_err(|why| error(command, format!("NAME: {why}")))?;
                got.name = Some(name.to_string());
            }
            Word::Positional(p) => return Err(unexpected(command, &p)),
            Word::Opt(opt, value) => {
                once(command, opt, &mut seen)?;
                match opt.long {
                    "data-dir" => data_dir = value.into(),
                    "quota" => got.quota = Some(value),
                    "exec" => got.exec = true,
                    "no-exec" => got.no_exec = true,
                    "purge" => got.purge = true,
                    "password-stdin" => got.password_stdin = true,
                    other => {
                        return Err(error(
                            command,
                            format!("{} has no option --{other}", command.path),
                        ));
                    }
                }
            }
        }
    }
    let command = user_command(command, got)?;
    Ok(Action::User { data_dir, command })
}

/// Checks the words of one `user` command and gives them their types.
fn user_command(command: &'static Command, got: UserWords) -> Result<UserCommand, UsageError> {
    let name = match (command.positional, got.name) {
        (Some(_), None) => return Err(error(command, "the user's <NAME> is missing")),
        (_, name) => name.unwrap_or_default(),
    };
    // `add` and `mod` read --quota differently (`none` is for `mod`).
    let quota = got.quota.as_deref();
    Ok(match command.name {
        "add" => UserCommand::Add {
            name,
            quota: typed_quota(command, quota, parse_size)?,
            exec: got.exec,
            password_stdin: got.password_stdin,
        },
        "del" => UserCommand::Del {
            name,
            purge: got.purge,
        },
        "mod" => {
            if got.exec && got.no_exec {
                return Err(error(
                    command,
                    "the argument '--exec' cannot be used with '--no-exec'",
                ));
            }
            let quota = typed_quota(command, quota, usercli::parse_quota)?;
            if quota.is_none() && !got.exec && !got.no_exec {
                return Err(error(
                    command,
                    "nothing to change: give --quota <SIZE|none>, --exec or --no-exec",
                ));
            }
            UserCommand::Mod {
                name,
                quota,
                exec: got.exec,
                no_exec: got.no_exec,
            }
        }
        "passwd" => UserCommand::Passwd {
            name,
            password_stdin: got.password_stdin,
        },
        _ => UserCommand::List,
    })
}

/// The value of `--quota`, if given, parsed by `parse`.
fn typed_quota<T>(
    command: &'static Command,
    value: Option<&OsStr>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, UsageError> {
    let (Some(value), Some(opt)) = (value, command.options.iter().find(|o| o.long == "quota"))
    else {
        return Ok(None);
    };
    text(value)
        .and_then(parse)
        .map(Some)
        .map_err(|why| invalid(command, opt, value, &why))
}

/// The help of one command, in the layout clap made familiar.
pub fn help(command: &Command) -> String {
    let mut out = format!(
        "{}\n\nUsage: {} {}\n",
        command.about, command.path, command.usage
    );
    if let Some((name, help)) = command.positional {
        out.push_str(&format!("\nArguments:\n  <{name}>  {help}\n"));
    }
    let listed: Vec<_> = command.commands.iter().filter(|c| !c.hidden).collect();
    if !listed.is_empty() {
        let width = listed
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        out.push_str("\nCommands:\n");
        for c in listed {
            out.push_str(&format!("  {:width$}  {}\n", c.name, c.about));
        }
        let help = "Print this message or the help of the given command";
        out.push_str(&format!("  {:width$}  {help}\n", "help"));
    }
    let mut rows: Vec<(String, String)> = command
        .options
        .iter()
        .map(|o| {
            let default = match o.default {
                Default::None => String::new(),
                Default::Value(d) | Default::Note(d) => format!(" [default: {d}]"),
            };
            (
                format!("      {}", shown(o)),
                format!("{}{default}", o.help),
            )
        })
        .collect();
    rows.push(("  -h, --help".into(), "Print help".into()));
    if std::ptr::eq(command, &SKIFFD) {
        rows.push(("  -V, --version".into(), "Print version".into()));
    }
    let width = rows.iter().map(|(left, _)| left.len()).max().unwrap_or(0);
    out.push_str("\nOptions:\n");
    for (left, right) in rows {
        out.push_str(&format!("{left:width$}  {right}\n"));
    }
    if !command.after.is_empty() {
        out.push_str(&format!("\n{}\n", command.after));
    }
    out
}

#[cfg(test)]
mod tests;
