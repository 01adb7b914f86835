//! One FTP command line, parsed: a verb and its argument.
//!
//! `VERB` or `VERB argument`: the verb is case-insensitive ASCII, the
//! argument is everything after the first space, spaces included (a file
//! name may start or end with one). The argument must be UTF-8 (`OPTS
//! UTF8 ON` is the only mode: RFC 2640), so a name is the same string
//! here as in the framed protocol's `ls`.

/// The commands skiffd knows. The `X` forms of RFC 775 (`XPWD`, `XCWD`,
/// `XCUP`, `XMKD`, `XRMD`) parse as their RFC 959 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    User,
    Pass,
    Acct,
    Syst,
    Feat,
    Opts,
    Pwd,
    Cwd,
    Cdup,
    Type,
    Mode,
    Stru,
    Pasv,
    Epsv,
    Port,
    Eprt,
    List,
    Nlst,
    Mlsd,
    Mlst,
    Size,
    Mdtm,
    Rest,
    Retr,
    Stor,
    Appe,
    Stou,
    Dele,
    Mkd,
    Rmd,
    Rnfr,
    Rnto,
    Allo,
    Stat,
    Help,
    Noop,
    Abor,
    Quit,
    Hash,
    Xmd5,
    Auth,
    Pbsz,
    Prot,
    Ccc,
    Rein,
    Smnt,
    Site,
}

/// Every verb with its name, for parsing and for `HELP`.
pub const VERBS: &[(&str, Verb)] = &[
    ("USER", Verb::User),
    ("PASS", Verb::Pass),
    ("ACCT", Verb::Acct),
    ("SYST", Verb::Syst),
    ("FEAT", Verb::Feat),
    ("OPTS", Verb::Opts),
    ("PWD", Verb::Pwd),
    ("XPWD", Verb::Pwd),
    ("CWD", Verb::Cwd),
    ("XCWD", Verb::Cwd),
    ("CDUP", Verb::Cdup),
    ("XCUP", Verb::Cdup),
    ("TYPE", Verb::Type),
    ("MODE", Verb::Mode),
    ("STRU", Verb::Stru),
    ("PASV", Verb::Pasv),
    ("EPSV", Verb::Epsv),
    ("PORT", Verb::Port),
    ("EPRT", Verb::Eprt),
    ("LIST", Verb::List),
    ("NLST", Verb::Nlst),
    ("MLSD", Verb::Mlsd),
    ("MLST", Verb::Mlst),
    ("SIZE", Verb::Size),
    ("MDTM", Verb::Mdtm),
    ("REST", Verb::Rest),
    ("RETR", Verb::Retr),
    ("STOR", Verb::Stor),
    ("APPE", Verb::Appe),
    ("STOU", Verb::Stou),
    ("DELE", Verb::Dele),
    ("MKD", Verb::Mkd),
    ("XMKD", Verb::Mkd),
    ("RMD", Verb::Rmd),
    ("XRMD", Verb::Rmd),
    ("RNFR", Verb::Rnfr),
    ("RNTO", Verb::Rnto),
    ("ALLO", Verb::Allo),
    ("STAT", Verb::Stat),
    ("HELP", Verb::Help),
    ("NOOP", Verb::Noop),
    ("ABOR", Verb::Abor),
    ("QUIT", Verb::Quit),
    ("HASH", Verb::Hash),
    ("XMD5", Verb::Xmd5),
    ("AUTH", Verb::Auth),
    ("PBSZ", Verb::Pbsz),
    ("PROT", Verb::Prot),
    ("CCC", Verb::Ccc),
    ("REIN", Verb::Rein),
    ("SMNT", Verb::Smnt),
    ("SITE", Verb::Site),
];

impl Verb {
    /// Whether it may be used before logging in.
    pub fn before_login(self) -> bool {
        matches!(
            self,
            Verb::User
                | Verb::Pass
                | Verb::Quit
                | Verb::Feat
                | Verb::Syst
                | Verb::Opts
                | Verb::Help
                | Verb::Noop
                | Verb::Auth
                | Verb::Pbsz
                | Verb::Prot
                | Verb::Abor
        )
    }

    /// Whether it is answered while a transfer runs (RFC 959 §4.1.3 names
    /// ABOR, STAT and QUIT; NOOP is harmless). Others wait for its end.
    pub fn during_transfer(self) -> bool {
        matches!(self, Verb::Abor | Verb::Stat | Verb::Quit | Verb::Noop)
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// What to do.
    pub verb: Verb,
    /// Everything after the first space ("" if none).
    pub arg: String,
}

/// Why a line is not a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// An empty line, or a verb skiffd does not know (printable for the
    /// reply: ASCII, at most 16 characters).
    Unknown(String),
    /// The argument is not UTF-8.
    NotUtf8,
}

/// Parses one line (without its line end).
pub fn parse(line: &[u8]) -> Result<Command, Refused> {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    let known = VERBS
        .iter()
        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(verb))
        .map(|&(_, v)| v);
    let Some(verb) = known else {
        let shown: String = verb
            .iter()
            .take(16)
            .map(|&b| {
                if b.is_ascii_graphic() {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect();
        return Err(Refused::Unknown(shown));
    };
    let arg = std::str::from_utf8(arg).map_err(|_| Refused::NotUtf8)?;
    Ok(Command {
        verb,
        arg: arg.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive_and_arguments_keep_their_spaces() {
        assert_eq!(
            parse(b"stor  two  spaces "),
            Ok(Command {
                verb: Verb::Stor,
                arg: " two  spaces ".into()
            })
        );
        assert_eq!(parse(b"XpWd").unwrap().verb, Verb::Pwd);
        assert_eq!(parse(b"NOOP").unwrap().arg, "");
    }

    #[test]
    fn unknown_verbs_and_bad_bytes_are_refused_printably() {
        assert_eq!(parse(b""), Err(Refused::Unknown(String::new())));
        assert_eq!(parse(b"FOO bar"), Err(Refused::Unknown("FOO".into())));
        assert_eq!(parse(b"\x00\xffXYZ"), Err(Refused::Unknown("??XYZ".into())));
        assert_eq!(parse(&[b'A'; 100]), Err(Refused::Unknown("A".repeat(16))));
        assert_eq!(parse(b"CWD \xff\xfe"), Err(Refused::NotUtf8));
        // NUL is UTF-8: the jail refuses it as a path.
        assert_eq!(parse(b"CWD a\x00b").unwrap().arg, "a\0b");
    }
}
