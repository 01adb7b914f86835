//! A user's view of the file system: `/` is their home, and nothing
//! outside it can be named.
//!
//! Two layers keep the jail:
//!
//! 1. **Virtual paths** are resolved lexically here: a relative path starts
//!    at the session's `cwd`, an absolute one at the home, `.` is dropped
//!    and `..` pops a component but never climbs above `/`. What comes out
//!    is a clean path with no `..` at all.
//! 2. **The kernel** then opens that path relative to a directory handle on
//!    the home (`cap_std::fs::Dir`, which uses `openat2` with
//!    `RESOLVE_BENEATH` where the kernel has it): a symlink that leads
//!    outside the home, planted by anyone, fails with an error instead of
//!    being followed, and there is no window between a check and a use.

use std::io;
use std::path::PathBuf;

use skiff::proto::Code;

/// Longest virtual path accepted, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest single name accepted, in bytes (the common file-system limit).
pub const MAX_NAME: usize = 255;

/// Resolves `path` against `cwd` (both virtual). Returns the new virtual
/// path, always starting with `/`.
pub fn resolve(cwd: &str, path: &str) -> Result<String, (Code, String)> {
    if path.len() > MAX_PATH {
        return Err((
            Code::BadRequest,
            format!("path is longer than {MAX_PATH} bytes"),
        ));
    }
    if path.contains('\0') {
        return Err((Code::BadRequest, "path contains a NUL byte".into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.extend(cwd.split('/').filter(|p| !p.is_empty()));
    }
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name if name.len() > MAX_NAME => {
                return Err((
                    Code::BadRequest,
                    format!("a name is longer than {MAX_NAME} bytes"),
                ));
            }
            name => parts.push(name),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The path to hand to the home's `Dir`: relative, `.` for the home itself.
pub fn relative(virtual_path: &str) -> PathBuf {
    let rel = virtual_path.trim_start_matches('/');
    if rel.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(rel)
    }
}

/// The last component of a virtual path (`None` for `/`).
pub fn file_name(virtual_path: &str) -> Option<&str> {
    virtual_path.rsplit('/').next().filter(|n| !n.is_empty())
}

/// The parent directory of a virtual path.
pub fn parent(virtual_path: &str) -> &str {
    match virtual_path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &virtual_path[..i],
    }
}

/// Maps a file-system error to a protocol error code and a message that
/// names the user's path, never the server's.
pub fn io_error(e: &io::Error, virtual_path: &str) -> (Code, String) {
    use io::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::Exists,
        K::NotADirectory => Code::NotADirectory,
        K::IsADirectory => Code::IsADirectory,
        K::DirectoryNotEmpty => Code::NotEmpty,
        // cap-std's answer to a path (a symlink) that leads outside the home
        K::PermissionDenied => Code::Forbidden,
        K::InvalidInput | K::InvalidFilename => Code::BadRequest,
        K::StorageFull | K::QuotaExceeded => Code::QuotaExceeded,
        _ if e.raw_os_error() == Some(libc::ELOOP) => Code::Forbidden,
        _ => Code::Io,
    };
    let what = match code {
        Code::NotFound => "no such file or directory",
        Code::Exists => "already exists",
        Code::NotADirectory => "not a directory",
        Code::IsADirectory => "is a directory",
        Code::NotEmpty => "directory not empty",
        Code::Forbidden => "not accessible (it leads outside your home, or permission is denied)",
        _ => "file system error",
    };
    (code, format!("{virtual_path}: {what}"))
}

/// True if `p` is a plain relative path with no `..` (what [`relative`] makes).
#[cfg(test)]
pub fn is_clean(p: &std::path::Path) -> bool {
    p.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_stops_at_root() {
        assert_eq!(resolve("/", "..").unwrap(), "/");
        assert_eq!(
            resolve("/a/b", "../../../../etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(resolve("/a/b", "../c/./d/").unwrap(), "/a/c/d");
        assert_eq!(resolve("/a", "").unwrap(), "/a");
    }

    #[test]
    fn absolute_paths_are_home_relative() {
        assert_eq!(resolve("/x/y", "/etc/shadow").unwrap(), "/etc/shadow");
        assert_eq!(relative("/etc/shadow"), PathBuf::from("etc/shadow"));
        assert_eq!(relative("/"), PathBuf::from("."));
        assert!(is_clean(&relative(
            &resolve("/", "../../..//a/../../b").unwrap()
        )));
    }

    #[test]
    fn bad_names_are_bad_requests() {
        assert_eq!(resolve("/", "a\0b").unwrap_err().0, Code::BadRequest);
        assert_eq!(
            resolve("/", &"x".repeat(256)).unwrap_err().0,
            Code::BadRequest
        );
        assert_eq!(
            resolve("/", &"a/".repeat(3000)).unwrap_err().0,
            Code::BadRequest
        );
    }

    #[test]
    fn names_and_parents() {
        assert_eq!(file_name("/a/b.txt"), Some("b.txt"));
        assert_eq!(file_name("/"), None);
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
    }
}
