//! Transfers as scp and lftp do them, on top of the one-file `get` and
//! `put` of [`crate::files`]:
//!
//! ```text
//!   get [-r] REMOTE... [LOCAL]    several sources: LOCAL must be a directory
//!   put [-r] LOCAL...  [REMOTE]   several sources: REMOTE must be a directory
//!   -r                            a directory source is copied whole:
//!                                 get recreates its tree here, put makes the
//!                                 remote directories it needs
//!   get REMOTE -                  the file to stdout (checked, not resumable)
//!   put - REMOTE                  stdin, spooled to a temporary file first:
//!                                 put must announce length and MD5 up front
//! ```
//!
//! A copied tree lands in `DEST/NAME` when DEST is an existing directory,
//! else DEST itself is created, as `cp -r` does. Every file goes through
//! the one-file transfer, so each one resumes and is verified by itself.
//! The first failure stops the batch: run it again and what is done is
//! quickly skipped over by the resumes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use skiff::client::Client;

use crate::cmd::CmdError;
use crate::files::{self, Opts, Push};

/// Deepest tree `-r` follows: deeper is a loop (links) or a mistake.
const MAX_DEPTH: usize = 64;

/// Splits `get`/`put` arguments into the sources and the destination
/// (the last one, when there are two or more).
fn sources_and_dest(paths: &[String]) -> (&[String], Option<&str>) {
    match paths {
        [] | [_] => (paths, None),
        [sources @ .., dest] => (sources, Some(dest.as_str())),
    }
}

/// `dir/name` on the server.
fn remote_join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A name from a server listing that is safe to create here: one plain
/// component, so no listing can make us write outside the target.
fn safe_name(name: &str) -> Result<&str, CmdError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(CmdError::BadReply(format!(
            "the server listed an entry named {name:?}"
        )));
    }
    Ok(name)
}

/// `get [-r] REMOTE... [LOCAL]`.
pub fn get(
    client: &mut Client,
    paths: &[String],
    recursive: bool,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let (sources, dest) = sources_and_dest(paths);
    if sources.is_empty() {
        return Err(CmdError::Usage("get [-r] REMOTE... [LOCAL]".into()));
    }
    if dest == Some("-") {
        return match sources {
            [one] if !recursive => files::cat(client, one, push, out),
            _ => Err(CmdError::Usage(
                "get REMOTE - writes one file to stdout (no -r, one REMOTE)".into(),
            )),
        };
    }
    let dest = dest.map(Path::new);
    if sources.len() > 1 && !dest.is_some_and(Path::is_dir) {
        return Err(CmdError::Usage(format!(
            "several files go into a directory, and {} is not one",
            dest.unwrap_or(Path::new(".")).display()
        )));
    }
    for source in sources {
        if !files::is_remote_dir(client, source, &mut *push)? {
            files::get(client, source, dest, opts, &mut *push, out)?;
            continue;
        }
        if !recursive {
            return Err(CmdError::local(format!(
                "{source} is a directory; get -r copies it whole"
            )));
        }
        let name = files::remote_basename(source);
        let base = match (dest, name) {
            (Some(d), Some(n)) if d.is_dir() => d.join(n),
            (Some(d), _) => d.to_path_buf(),
            (None, Some(n)) => PathBuf::from(n),
            // `get -r /` or `.`: its content goes here.
            (None, None) => PathBuf::from("."),
        };
        get_tree(client, source, &base, 0, opts, push, out)?;
    }
    Ok(())
}

/// Copies the remote directory `remote` into `local`, created if needed.
fn get_tree(
    client: &mut Client,
    remote: &str,
    local: &Path,
    depth: usize,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    if depth > MAX_DEPTH {
        return Err(CmdError::local(format!(
            "{remote}: more than {MAX_DEPTH} directories deep"
        )));
    }
    fs::create_dir_all(local).map_err(|e| CmdError::local(format!("{}: {e}", local.display())))?;
    for entry in files::ls(client, Some(remote), &mut *push)? {
        let name = safe_name(&entry.name)?;
        let from = remote_join(remote, name);
        let to = local.join(name);
        if entry.kind == "dir" {
            get_tree(client, &from, &to, depth + 1, opts, &mut *push, out)?;
        } else {
            files::get(client, &from, Some(&to), opts, &mut *push, out)?;
        }
    }
    Ok(())
}

/// `put [-r] LOCAL... [REMOTE]`.
pub fn put(
    client: &mut Client,
    paths: &[String],
    recursive: bool,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let (sources, dest) = sources_and_dest(paths);
    if sources.is_empty() {
        return Err(CmdError::Usage("put [-r] LOCAL... [REMOTE]".into()));
    }
    if sources.iter().any(|s| s == "-") {
        return match (sources, dest) {
            ([_], Some(remote)) => put_stdin(client, remote, opts, push, out),
            _ => Err(CmdError::Usage(
                "put - REMOTE reads one file from stdin, and needs its name".into(),
            )),
        };
    }
    if sources.len() > 1 {
        let dir = dest.unwrap_or(".");
        if !files::is_remote_dir(client, dir, &mut *push)? {
            return Err(CmdError::Usage(format!(
                "several files go into a directory, and {dir} is not one on the server"
            )));
        }
    }
    for source in sources {
        let local = Path::new(source);
        if !local.is_dir() {
            files::put(client, local, dest, opts, &mut *push, out)?;
            continue;
        }
        if !recursive {
            return Err(CmdError::local(format!(
                "{source} is a directory; put -r copies it whole"
            )));
        }
        let name = local
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name()?.to_str().map(str::to_string));
        let base = match (dest, name) {
            (Some(d), Some(n)) if files::is_remote_dir(client, d, &mut *push)? => {
                remote_join(d, &n)
            }
            (Some(d), _) => d.to_string(),
            (None, Some(n)) => n,
            (None, None) => {
                return Err(CmdError::Usage(format!(
                    "{source} has no UTF-8 name; say where to store it: put -r LOCAL REMOTE"
                )));
            }
        };
        put_tree(client, local, &base, 0, opts, push, out)?;
    }
    Ok(())
}

/// Copies the local directory `local` to `remote`, making the remote
/// directories as needed.
fn put_tree(
    client: &mut Client,
    local: &Path,
    remote: &str,
    depth: usize,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    if depth > MAX_DEPTH {
        return Err(CmdError::local(format!(
            "{}: more than {MAX_DEPTH} directories deep",
            local.display()
        )));
    }
    match files::mkdir(client, remote, &mut *push) {
        Err(CmdError::Server { code, .. }) if code == "exists" => {}
        other => other?,
    }
    let fail = |e: io::Error| CmdError::local(format!("{}: {e}", local.display()));
    let mut items: Vec<_> = fs::read_dir(local)
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    items.sort_by_key(|i| i.file_name());
    for item in items {
        let path = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            return Err(CmdError::local(format!(
                "{}: not a UTF-8 name, which the server cannot store",
                path.display()
            )));
        };
        let to = remote_join(remote, &name);
        // Links to directories are not followed: they could loop.
        let is_dir = item.file_type().map_err(fail)?.is_dir();
        if is_dir {
            put_tree(client, &path, &to, depth + 1, opts, &mut *push, out)?;
        } else {
            files::put(client, &path, Some(&to), opts, &mut *push, out)?;
        }
    }
    Ok(())
}

/// A temporary file that is removed when dropped.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `put - REMOTE`: stdin is copied to a private temporary file first,
/// because `put` announces the length and the MD5 before the first byte.
fn put_stdin(
    client: &mut Client,
    remote: &str,
    opts: Opts,
    push: Push,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    if remote.ends_with('/') || files::is_remote_dir(client, remote, &mut *push)? {
        return Err(CmdError::Usage(format!(
            "{remote} is a directory; put - REMOTE needs a file name"
        )));
    }
    let path = std::env::temp_dir().join(format!(
        "skiff-stdin-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let spool = Spool(path);
    let fail =
        |e: io::Error| CmdError::local(format!("spooling stdin to {}: {e}", spool.0.display()));
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&spool.0)
        .map_err(fail)?;
    io::copy(&mut io::stdin().lock(), &mut file).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    files::put_as(client, &spool.0, "-", Some(remote), opts, push, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_of_several_is_the_destination() {
        let paths = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let one = paths(&["a"]);
        assert_eq!(sources_and_dest(&one), (&one[..], None));
        let three = paths(&["a", "b", "dir"]);
        assert_eq!(sources_and_dest(&three), (&three[..2], Some("dir")));
        assert_eq!(remote_join("d", "f"), "d/f");
        assert_eq!(remote_join("/", "f"), "/f");
        assert_eq!(remote_join("", "f"), "f");
        assert!(safe_name("..").is_err());
        assert!(safe_name("a/b").is_err());
        assert_eq!(safe_name("a b").unwrap(), "a b");
    }
}
