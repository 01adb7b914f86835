//! The parser against the command lines users type, and the files that
//! describe them.

use super::table::USER_LIST;
use super::*;
use crate::usercli::Quota;
use std::time::Duration;

/// Every command in the table, groups included.
fn all_commands() -> Vec<&'static Command> {
    let mut all = vec![&SKIFFD];
    let mut i = 0;
    while let Some(c) = all.get(i) {
        all.extend(c.commands.iter().copied());
        i += 1;
    }
    all
}

fn parse_words(words: &[&str]) -> Result<Action, UsageError> {
    let mut args = vec![OsString::from("skiffd")];
    args.extend(words.iter().map(OsString::from));
    parse(args)
}

fn serve_args(words: &[&str]) -> ServeArgs {
    match parse_words(words) {
        Ok(Action::Serve(args)) => *args,
        Ok(_) => panic!("{words:?}: not serve"),
        Err(e) => panic!("{words:?}: {e}"),
    }
}

fn usage_error(words: &[&str]) -> String {
    match parse_words(words) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{words:?} parsed"),
    }
}

fn printed(words: &[&str]) -> String {
    match parse_words(words) {
        Ok(Action::Print(text)) => text,
        _ => panic!("{words:?}: nothing printed"),
    }
}

/// A value each option's parser takes, by the value's name.
fn sample(value: &str) -> &'static str {
    match value {
        "HOST:PORT" => "127.0.0.1:0",
        "SIZE" | "SIZE|none" => "10M",
        "DURATION" => "30s",
        "N" => "7",
        "LO-HI" => "40000-40009",
        "ADDR" => "192.0.2.1",
        _ => "some/path",
    }
}

#[test]
fn no_arguments_serve_with_every_default() {
    let args = serve_args(&[]);
    assert_eq!(args.data_dir, PathBuf::from("./skiff-data"));
    assert_eq!(args.max_body, 64 << 30);
    assert_eq!(args.idle_timeout, Duration::from_secs(300));
    assert_eq!((args.max_conns, args.max_conns_per_ip), (65536, 16384));
    assert_eq!((args.out_high_water, args.out_total), (256 << 10, 64 << 20));
    assert_eq!(args.backlog, 4096);
    assert_eq!((args.exec_per_conn, args.exec_max), (8, 64));
    assert_eq!(args.exec_max_time, Duration::from_secs(3600));
    assert_eq!(args.exec_max_output, 16 << 30);
    assert_eq!(args.shutdown_grace, Duration::from_secs(5));
    assert!(args.listen.is_empty() && args.tls_cert.is_none() && !args.ftp_require_tls);
}

#[test]
fn every_serve_option_is_accepted_both_ways() {
    for opt in SERVE.options {
        let value = opt.value.map(sample);
        // The certificate and its key each need the other.
        let partner: &[&str] = match opt.long {
            "tls-cert" => &["--tls-key", "k.pem"],
            "tls-key" => &["--tls-cert", "c.pem"],
            _ => &[],
        };
        let spaced = format!("--{}", opt.long);
        let mut line = vec!["serve", spaced.as_str()];
        line.extend(value);
        line.extend(partner);
        serve_args(&line);
        if let Some(value) = value {
            let joined = format!("--{}={value}", opt.long);
            let mut line = vec!["serve", joined.as_str()];
            line.extend(partner);
            serve_args(&line);
        }
    }
}

#[test]
fn every_user_option_is_accepted() {
    for command in USER.commands {
        for opt in command.options {
            let long = format!("--{}", opt.long);
            let mut line = vec!["user", command.name, long.as_str()];
            line.extend(opt.value.map(sample));
            // `mod` needs something to change besides what is tested.
            if command.name == "mod" && opt.long != "quota" {
                line.extend(["--quota", "1M"]);
            }
            if command.positional.is_some() {
                line.push("bob");
            }
            match parse_words(&line) {
                Ok(Action::User { .. }) => {}
                Ok(_) => panic!("{line:?}: not a user command"),
                Err(e) => panic!("{line:?}: {e}"),
            }
        }
    }
}

#[test]
fn values_are_typed_and_listeners_repeat() {
    let args = serve_args(&[
        "--listen",
        "127.0.0.1:1",
        "--listen=[::1]:2",
        "--max-body",
        "1K",
        "--idle-timeout=250ms",
        "--ftp-passive",
        "40000-40009",
        "--ftp-advertise",
        "192.0.2.1",
        "--ftp-require-tls",
        "--unix",
        "/tmp/s",
    ]);
    assert_eq!(args.listen, ["127.0.0.1:1", "[::1]:2"]);
    assert_eq!(args.max_body, 1024);
    assert_eq!(args.idle_timeout, Duration::from_millis(250));
    assert_eq!(args.ftp_passive, Some((40000, 40009)));
    assert_eq!(args.ftp_advertise, Some("192.0.2.1".parse().unwrap()));
    assert!(args.ftp_require_tls);
    assert_eq!(args.unix, [PathBuf::from("/tmp/s")]);
}

#[test]
fn bad_command_lines_are_usage_errors_that_say_why() {
    for (line, says) in [
        (&["serve", "--bogus"][..], "unexpected argument '--bogus'"),
        (&["--bogus"], "Usage: skiffd serve [OPTIONS]"),
        (&["serve", "extra"], "unexpected argument 'extra'"),
        (&["serve", "-x"], "unexpected argument '-x'"),
        (
            &["serve", "--listen"],
            "a value is required for '--listen <HOST:PORT>'",
        ),
        (
            &["serve", "--data-dir", "--listen", "x:1"],
            "a value is required for '--data-dir",
        ),
        (&["serve", "--listen", "9999"], "127.0.0.1:9999"),
        (
            &["serve", "--max-conns", "x"],
            "invalid value 'x' for '--max-conns <N>'",
        ),
        (&["serve", "--max-conns", "-1"], "expected a whole number"),
        (&["serve", "--backlog", "-1"], "expected a whole number"),
        (&["serve", "--backlog", "99999999999"], "too large"),
        (&["serve", "--max-body", "lots"], "--max-body <SIZE>"),
        (&["serve", "--idle-timeout", "-1s"], "--idle-timeout"),
        (&["serve", "--ftp-passive", "5-3"], "LO <= HI"),
        (
            &["serve", "--ftp-advertise", "nope"],
            "expected an IP address",
        ),
        (
            &["serve", "--ftp-require-tls=yes"],
            "unexpected value 'yes'",
        ),
        (
            &["serve", "--max-body", "1K", "--max-body", "2K"],
            "cannot be used multiple times",
        ),
        (
            &["serve", "--tls-cert", "c.pem"],
            "--tls-cert needs --tls-key",
        ),
        (
            &["serve", "--tls-key", "k.pem"],
            "--tls-key needs --tls-cert",
        ),
        (&["frob"], "unrecognized subcommand 'frob'"),
        (&["user"], "a command is required"),
        (&["user", "frob"], "unrecognized subcommand 'frob'"),
        (&["user", "add"], "<NAME> is missing"),
        (&["user", "add", "a", "b"], "unexpected argument 'b'"),
        (
            &["user", "list", "--purge"],
            "unexpected argument '--purge'",
        ),
        (
            &["user", "list", "--data-dir"],
            "a value is required for '--data-dir <DIR>'",
        ),
        (
            &["user", "add", "--quota", "lots", "bob"],
            "invalid value 'lots' for '--quota <SIZE>'",
        ),
        (&["user", "mod", "bob"], "nothing to change"),
        (
            &["user", "mod", "--exec", "--no-exec", "bob"],
            "cannot be used with",
        ),
        (&["user", "mod", "--quota", "lots", "bob"], "`none`"),
        (&["completions"], "the shell is missing"),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
        (&["completions", "bash", "zsh"], "unexpected argument 'zsh'"),
        (&["man", "x"], "unexpected argument 'x'"),
        (&["help", "frob"], "unrecognized subcommand 'frob'"),
    ] {
        let e = usage_error(line);
        assert!(e.contains(says), "{line:?}: {e:?} does not say {says:?}");
        assert!(
            e.starts_with("error: ") && e.contains("\n\nUsage: skiffd"),
            "{e}"
        );
    }
}

#[test]
fn user_commands_take_data_dir_before_or_after_the_command() {
    let user = |line: &[&str]| match parse_words(line) {
        Ok(Action::User { data_dir, command }) => (data_dir, command),
        Ok(_) => panic!("{line:?}: not user"),
        Err(e) => panic!("{line:?}: {e}"),
    };
    let (dir, command) = user(&[
        "user",
        "--data-dir",
        "/d",
        "add",
        "bob",
        "--quota",
        "1G",
        "--exec",
    ]);
    assert_eq!(dir, PathBuf::from("/d"));
    assert!(
        matches!(command, UserCommand::Add { ref name, quota: Some(q), exec: true, password_stdin: false } if name == "bob" && q == 1 << 30)
    );
    let (dir, command) = user(&["user", "mod", "bob", "--quota=none", "--data-dir=/e"]);
    assert_eq!(dir, PathBuf::from("/e"));
    assert!(matches!(
        command,
        UserCommand::Mod {
            quota: Some(Quota(None)),
            exec: false,
            no_exec: false,
            ..
        }
    ));
    let (dir, command) = user(&["user", "list"]);
    assert_eq!(dir, PathBuf::from("./skiff-data"));
    assert!(matches!(command, UserCommand::List));
    assert!(matches!(
        user(&["user", "del", "--purge", "bob"]).1,
        UserCommand::Del { purge: true, .. }
    ));
    assert!(matches!(
        user(&["user", "passwd", "--password-stdin", "bob"]).1,
        UserCommand::Passwd {
            password_stdin: true,
            ..
        }
    ));
    assert!(
        usage_error(&["user", "--data-dir", "/a", "list", "--data-dir", "/b"])
            .contains("multiple times")
    );
}

#[test]
fn help_and_version_are_printed_for_every_command() {
    assert_eq!(
        printed(&["-V"]),
        format!("skiffd {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(printed(&["--version"]), printed(&["-V"]));
    let top = printed(&["--help"]);
    assert_eq!(printed(&["help"]), top);
    assert!(top.contains("  serve ") && top.contains("  user ") && top.contains("-V, --version"));
    assert!(!top.contains("  man "), "man is for packagers: {top}");
    for command in all_commands() {
        let words: Vec<&str> = command.path.split(' ').skip(1).collect();
        let mut asked = words.clone();
        asked.push("--help");
        let help = printed(&asked);
        assert_eq!(help, super::help(command));
        assert!(help.starts_with(command.about), "{help}");
        assert!(
            help.contains(&format!("Usage: {} ", command.path)),
            "{help}"
        );
        for opt in command.options {
            assert!(help.contains(&shown(opt)), "{}: {help}", opt.long);
        }
        let mut via_help = vec!["help"];
        via_help.extend(&words);
        assert_eq!(printed(&via_help), help, "{via_help:?}");
    }
    // Help wins over what comes before it, as it did.
    assert_eq!(
        printed(&["serve", "--listen=127.0.0.1:0", "--help"]),
        help(&SERVE)
    );
    assert_eq!(
        printed(&["user", "--data-dir", "/x", "list", "-h"]),
        help(&USER_LIST)
    );
}

#[test]
fn a_leading_flag_means_serve() {
    let line = |args: &[&str]| -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        with_default_command(args)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    };
    assert_eq!(
        line(&["skiffd", "--listen", "x:1"]),
        ["skiffd", "serve", "--listen", "x:1"]
    );
    for unchanged in [
        &["skiffd"][..],
        &["skiffd", "--help"],
        &["skiffd", "-V"],
        &["skiffd", "user", "list"],
        &["skiffd", "serve", "--listen", "x:1"],
    ] {
        assert_eq!(line(unchanged), unchanged);
    }
}

#[test]
fn paths_need_not_be_utf8() {
    use std::os::unix::ffi::OsStringExt;
    let odd = OsString::from_vec(b"/tmp/\xff".to_vec());
    let line = vec![
        "skiffd".into(),
        "serve".into(),
        "--data-dir".into(),
        odd.clone(),
    ];
    match parse(line) {
        Ok(Action::Serve(args)) => assert_eq!(args.data_dir.as_os_str(), odd),
        _ => panic!("a non-UTF-8 data dir was refused"),
    }
}

/// The words `--long` of every option and the name of every command,
/// which each completion script and the man page must contain.
fn table_words() -> Vec<String> {
    let mut words = Vec::new();
    for command in all_commands() {
        words.push(command.name.to_string());
        words.extend(command.options.iter().map(|o| format!("--{}", o.long)));
    }
    words.sort();
    words.dedup();
    words
}

/// fish's `complete` names an option `-l long`: this reads it as `--long`.
fn as_long_options(script: &str) -> String {
    let lines = script.lines().map(|line| {
        if line.starts_with("complete ") {
            line.replace(" -l ", " --")
        } else {
            line.to_string()
        }
    });
    lines.collect::<Vec<_>>().join("\n")
}

#[test]
fn completions_and_the_man_page_know_every_command_and_option() {
    // The man page escapes dashes (\-): compare with them unescaped.
    let page = MAN_PAGE.replace("\\-", "-");
    let texts: Vec<(&str, String)> = Shell::ALL
        .iter()
        .map(|&(name, shell)| (name, as_long_options(shell.script())))
        .chain([("man page", page)])
        .collect();
    let words = table_words();
    for (name, text) in &texts {
        for word in &words {
            let found = text.match_indices(word.as_str()).any(|(i, _)| {
                // A whole word: `--exec` is not found inside `--exec-max`.
                let after = text[i + word.len()..].chars().next();
                !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            assert!(found, "{name} does not mention {word}");
        }
        // And nothing the parser no longer knows.
        for (i, _) in text.match_indices("--") {
            let flag: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let known = flag.len() <= 2
                || words.contains(&flag)
                // --addr is the client's, in "connect with skiff --addr".
                || ["--help", "--version", "--addr"].contains(&flag.as_str())
                || !flag[2..].starts_with(|c: char| c.is_ascii_lowercase());
            assert!(known, "{name} mentions {flag}, which skiffd does not take");
        }
    }
}
