//! Tab completion: command names as the first word, then paths, remote or
//! local depending on the command and the argument's place.
//!
//! Remote paths come from an `ls` of the word's directory part, asked
//! through the watching thread (which owns the connection while the prompt
//! waits, see [`super::watch`]). Listings are cached per directory until
//! the line is entered, so pressing Tab again costs no round trip.

use std::cell::RefCell;
use std::collections::HashMap;

use rustyline::Context;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;

use super::COMMANDS;
use super::watch::Lister;

/// What the word under the cursor names.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// A shell command (the first word).
    Command,
    /// A path on the server.
    Remote,
    /// A path here.
    Local,
    /// Free text: nothing to offer.
    Text,
}

/// What argument `index` (1 = the first after the command) of `command` is.
/// `get REMOTE... LOCAL` and `put LOCAL... REMOTE` name the other side
/// only after the first argument.
fn kind_of(command: &str, index: usize) -> Kind {
    match (command, index) {
        (_, 0) => Kind::Command,
        ("cd" | "ls" | "dir" | "rm" | "mkdir", _) | ("get", 1) | ("put", 2..) => Kind::Remote,
        ("lcd" | "lls" | "put", _) | ("get", 2..) => Kind::Local,
        _ => Kind::Text,
    }
}

/// One directory entry as completion needs it.
#[derive(Debug, Clone)]
struct Name {
    name: String,
    dir: bool,
}

/// The line editor's helper: completes; hints, highlighting and
/// validation are left at rustyline's defaults (none).
#[derive(Default)]
pub struct ShellHelper {
    /// Asks the server while the prompt waits; `None` outside a prompt or
    /// without a connection.
    lister: RefCell<Option<Lister>>,
    /// Remote listings of this line, by directory.
    cache: RefCell<HashMap<String, Vec<Name>>>,
}

impl ShellHelper {
    /// Called before each prompt: a fresh line forgets old listings.
    pub fn begin_line(&self, lister: Option<Lister>) {
        *self.lister.borrow_mut() = lister;
        self.cache.borrow_mut().clear();
    }

    /// The remote entries of `dir` (`""`: the cwd), from the cache or the
    /// server.
    fn remote(&self, dir: &str) -> Vec<Name> {
        if let Some(names) = self.cache.borrow().get(dir) {
            return names.clone();
        }
        let lister = self.lister.borrow().clone();
        let Some(lister) = lister else {
            return Vec::new();
        };
        // `docs/` is asked as `docs`; `/` stays `/`.
        let asked = match dir.trim_end_matches('/') {
            "" if dir.is_empty() => None,
            "" => Some("/"),
            d => Some(d),
        };
        let names: Vec<Name> = lister
            .list(asked)
            .unwrap_or_default()
            .into_iter()
            .map(|e| Name {
                dir: e.kind == "dir",
                name: e.name,
            })
            .collect();
        self.cache
            .borrow_mut()
            .insert(dir.to_string(), names.clone());
        names
    }
}

/// The entries of a local directory (`""`: the current one).
fn local(dir: &str) -> Vec<Name> {
    let Ok(read) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
        return Vec::new();
    };
    read.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Followed, so a link to a directory completes like one.
            let dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            Some(Name { name, dir })
        })
        .collect()
}

/// The word being typed: where it starts in the line, its text with the
/// shell's escapes undone, and its place (0 = the command word). Words
/// split on unescaped blanks; quotes are not tracked, a backslash is.
fn current_word(before: &str) -> (usize, String, usize) {
    let mut start = 0;
    let mut words_done = 0;
    let mut in_word = false;
    let mut escaped = false;
    for (i, c) in before.char_indices() {
        if !escaped && c == '\\' {
            escaped = true;
            in_word = true;
            continue;
        }
        if !escaped && c.is_whitespace() {
            if in_word {
                words_done += 1;
                in_word = false;
            }
            start = i + c.len_utf8();
            continue;
        }
        escaped = false;
        in_word = true;
    }
    (start, unescape(&before[start..]), words_done)
}

/// Undoes backslash escapes and drops quote characters.
fn unescape(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' | '"' => {}
            c => out.push(c),
        }
    }
    out
}

/// A name as it must be typed: blanks, quotes and backslashes escaped.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '\\' | '\'' | '"' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `docs/no` → (`docs/`, `no`): the directory to list and the prefix of
/// the names that fit.
fn split_dir(word: &str) -> (&str, &str) {
    match word.rfind('/') {
        Some(i) => word.split_at(i + 1),
        None => ("", word),
    }
}

/// Candidates from `names` starting with `prefix`, each the whole word
/// (directory part included), directories ending in `/`. Hidden names
/// only when the prefix asks for them, as in sh.
fn candidates(dir: &str, prefix: &str, names: &[Name]) -> Vec<Pair> {
    let mut out: Vec<Pair> = names
        .iter()
        .filter(|n| n.name.starts_with(prefix))
        .filter(|n| prefix.starts_with('.') || !n.name.starts_with('.'))
        .map(|n| {
            let slash = if n.dir { "/" } else { "" };
            Pair {
                display: format!("{}{slash}", n.name),
                replacement: escape(&format!("{dir}{}{slash}", n.name)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // `!CMD` runs on the server: its words are not ours to complete.
        if before.trim_start().starts_with('!') {
            return Ok((pos, Vec::new()));
        }
        let (start, word, index) = current_word(before);
        let command = before.split_whitespace().next().unwrap_or("");
        let found = match kind_of(command, index) {
            Kind::Command => {
                let mut names: Vec<Pair> = COMMANDS
                    .iter()
                    .flat_map(|e| std::iter::once(&e.name).chain(e.aliases))
                    .filter(|n| *n != &"!" && n.starts_with(word.as_str()))
                    .map(|n| Pair {
                        display: n.to_string(),
                        replacement: format!("{n} "),
                    })
                    .collect();
                names.sort_by(|a, b| a.display.cmp(&b.display));
                names
            }
            Kind::Remote => {
                let (dir, prefix) = split_dir(&word);
                candidates(dir, prefix, &self.remote(dir))
            }
            Kind::Local => {
                let (dir, prefix) = split_dir(&word);
                candidates(dir, prefix, &local(dir))
            }
            Kind::Text => Vec::new(),
        };
        Ok((start, found))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl rustyline::Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_word_under_the_cursor() {
        assert_eq!(current_word(""), (0, String::new(), 0));
        assert_eq!(current_word("ge"), (0, "ge".into(), 0));
        assert_eq!(current_word("get "), (4, String::new(), 1));
        assert_eq!(current_word("get docs/a"), (4, "docs/a".into(), 1));
        assert_eq!(current_word("get a\\ b c"), (9, "c".into(), 2));
        assert_eq!(current_word("get my\\ fi"), (4, "my fi".into(), 1));
        assert_eq!(current_word("  ge"), (2, "ge".into(), 0));
    }

    #[test]
    fn kinds_follow_the_command() {
        assert_eq!(kind_of("ge", 0), Kind::Command);
        assert_eq!(kind_of("get", 1), Kind::Remote);
        assert_eq!(kind_of("get", 2), Kind::Local);
        assert_eq!(kind_of("put", 1), Kind::Local);
        assert_eq!(kind_of("put", 2), Kind::Remote);
        assert_eq!(kind_of("lcd", 1), Kind::Local);
        assert_eq!(kind_of("say", 1), Kind::Text);
    }

    #[test]
    fn candidates_keep_the_directory_and_escape() {
        let names = [
            Name {
                name: "my file".into(),
                dir: false,
            },
            Name {
                name: "music".into(),
                dir: true,
            },
            Name {
                name: ".hidden".into(),
                dir: false,
            },
            Name {
                name: "other".into(),
                dir: false,
            },
        ];
        let got: Vec<String> = candidates("docs/", "m", &names)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(got, ["docs/music/", "docs/my\\ file"]);
        assert_eq!(candidates("", "", &names).len(), 3);
        assert_eq!(candidates("", ".", &names).len(), 1);
        assert_eq!(split_dir("/a/b"), ("/a/", "b"));
        assert_eq!(split_dir("b"), ("", "b"));
        assert_eq!(unescape(&escape("a b'c\\")), "a b'c\\");
    }
}
