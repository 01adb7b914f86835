//! The shell's local side, as in sftp and lftp: `lcd`, `lpwd` and `lls`
//! act on this machine's current directory, which is where `get` stores
//! and `put` looks for relative paths.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cmd::{CmdError, output_error};
use crate::files::Entry;

/// `lcd [DIR]`: changes the local directory (to `$HOME` without DIR).
pub fn lcd(dir: Option<&str>) -> Result<PathBuf, CmdError> {
    let target = match dir {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| CmdError::Usage("lcd DIR (HOME is not set)".into()))?,
    };
    std::env::set_current_dir(&target)
        .map_err(|e| CmdError::local(format!("{}: {e}", target.display())))?;
    lpwd()
}

/// `lpwd`: the local directory.
pub fn lpwd() -> Result<PathBuf, CmdError> {
    std::env::current_dir().map_err(|e| CmdError::local(format!("current directory: {e}")))
}

/// One local entry in the shape of a remote one, so both list alike.
fn entry(name: String, meta: &std::fs::Metadata) -> Entry {
    Entry {
        name,
        kind: if meta.is_dir() { "dir" } else { "file" }.into(),
        size: if meta.is_dir() { 0 } else { meta.len() },
        mtime: meta.mtime(),
    }
}

/// The entries of a local directory (or the one entry of a file), sorted
/// by name as the server sorts its listings.
pub fn entries(path: &Path) -> Result<Vec<Entry>, CmdError> {
    let fail = |e: io::Error| CmdError::local(format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_dir() {
        let name = path.file_name().unwrap_or(path.as_os_str());
        return Ok(vec![entry(name.to_string_lossy().into_owned(), &meta)]);
    }
    let mut list = Vec::new();
    for item in std::fs::read_dir(path).map_err(fail)? {
        let item = item.map_err(fail)?;
        // Followed, as `ls -L` does; a dangling link is shown as is.
        let meta = match std::fs::metadata(item.path()) {
            Ok(m) => m,
            Err(_) => item.metadata().map_err(fail)?,
        };
        list.push(entry(
            item.file_name().to_string_lossy().into_owned(),
            &meta,
        ));
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// `lls [PATH]`: a local listing, in the format of `ls`.
pub fn lls(path: Option<&str>, out: &mut dyn Write) -> Result<(), CmdError> {
    for e in entries(Path::new(path.unwrap_or(".")))? {
        writeln!(out, "{}", e.line()).map_err(output_error)?;
    }
    Ok(())
}
