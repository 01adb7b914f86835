//! `skiffd user add|del|mod|passwd|list`: managing the user store from the
//! command line, while the server runs or not.
//!
//! Changes go through [`UserDb::save`], an atomic rename, so a running
//! server never reads half a file; it notices the new file's mtime and
//! rereads it at the next login. Two `skiffd user` commands at once are
//! serialized by an exclusive `flock` on `DATA_DIR/.users.lock` around
//! load, change and save, so neither undoes the other's change. The
//! password is read before the lock is taken, so a prompt waiting for
//! someone to type does not hold up other commands.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::users::{UserDb, check_name, create_home};

/// The `skiffd user` subcommands (their options and help are in `cli`).
#[derive(Debug)]
pub enum UserCommand {
    /// Add a user
    Add {
        /// Login name: 1 to 32 of a-z 0-9 _ . -, not starting with . or -
        name: String,
        /// Disk quota: bytes, or with a suffix (10M = 10 MiB, 1G = 1 GiB); unlimited if not given
        quota: Option<u64>,
        /// Allow running commands (exec)
        exec: bool,
        /// Read the password from the first line of standard input instead of the terminal
        password_stdin: bool,
    },
    /// Delete a user (their home is kept unless --purge)
    Del {
        /// Login name
        name: String,
        /// Also delete the user's home and unfinished uploads
        purge: bool,
    },
    /// Change a quota or the right to run commands (at the user's next login)
    Mod {
        /// Login name
        name: String,
        /// New disk quota: bytes, or with a suffix (10M = 10 MiB), or `none` for unlimited
        quota: Option<Quota>,
        /// Allow running commands (exec)
        exec: bool,
        /// Forbid running commands
        no_exec: bool,
    },
    /// Change a password
    Passwd {
        /// Login name
        name: String,
        /// Read the password from the first line of standard input instead of the terminal
        password_stdin: bool,
    },
    /// List users
    List,
}

/// Runs one `skiffd user` command on the store in `data_dir`. The error is
/// a complete sentence for the terminal.
pub fn run(data_dir: &Path, command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Add {
            name,
            quota,
            exec,
            password_stdin,
        } => {
            check_name(&name).map_err(|e| e.to_string())?;
            // Checked before asking, so nobody types a password in vain;
            // checked again under the lock below.
            if load(data_dir)?.get(&name).is_some() {
                return Err(format!("user {name} already exists"));
            }
            let password = read_password(password_stdin, &name)?;
            let _lock = lock(data_dir)?;
            let mut db = load(data_dir)?;
            db.add(&name, &password, quota, exec)
                .map_err(|e| e.to_string())?;
            let home = UserDb::home(data_dir, &name);
            let existed = home.exists();
            create_home(data_dir, &name)
                .map_err(|e| format!("cannot create the home of {name}: {e}"))?;
            save(&db)?;
            println!(
                "added {name}: quota {}, exec {}, home {}{}",
                quota_text(quota),
                yes_no(exec),
                home.display(),
                if existed {
                    " (existed already: kept)"
                } else {
                    ""
                }
            );
        }
        UserCommand::Del { name, purge } => {
            let _lock = lock(data_dir)?;
            let mut db = load(data_dir)?;
            db.remove(&name).map_err(|e| e.to_string())?;
            save(&db)?;
            let home = UserDb::home(data_dir, &name);
            if purge {
                // The name was valid (it was in the store), so these are
                // single components under data_dir. `remove_dir_all` does
                // not follow symlinks: a link planted in a home is removed,
                // not what it points at.
                for dir in [&home, &data_dir.join("partial").join(&name)] {
                    match std::fs::remove_dir_all(dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(format!(
                                "deleted {name}, but cannot remove {}: {e}",
                                dir.display()
                            ));
                        }
                    }
                }
                println!("deleted {name} and their files");
            } else if home.exists() {
                println!("deleted {name}; home kept at {}", home.display());
            } else {
                println!("deleted {name}");
            }
        }
        UserCommand::Mod {
            name,
            quota,
            exec,
            no_exec,
        } => {
            let _lock = lock(data_dir)?;
            let mut db = load(data_dir)?;
            let change = |e: crate::users::UserError| e.to_string();
            if let Some(Quota(quota)) = quota {
                db.set_quota(&name, quota).map_err(change)?;
            }
            if exec || no_exec {
                db.set_exec(&name, exec).map_err(change)?;
            }
            save(&db)?;
            let user = db.get(&name).ok_or_else(|| format!("no user {name}"))?;
            println!(
                "changed {name}: quota {}, exec {}",
                quota_text(user.quota),
                yes_no(user.exec)
            );
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            if load(data_dir)?.get(&name).is_none() {
                return Err(format!("no user {name}"));
            }
            let password = read_password(password_stdin, &name)?;
            let _lock = lock(data_dir)?;
            let mut db = load(data_dir)?;
            db.set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            save(&db)?;
            println!("changed the password of {name}");
        }
        UserCommand::List => {
            let db = load(data_dir)?;
            if db.is_empty() {
                println!("no users in {}", db.path().display());
            }
            for line in list_lines(&db) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// A quota on the command line: a size, or `none` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota(pub Option<u64>);

/// Parses `--quota` of `user mod`: `none`, or a size such as `10M`.
pub fn parse_quota(value: &str) -> Result<Quota, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Quota(None));
    }
    skiff::proto::parse_size(value)
        .map(|bytes| Quota(Some(bytes)))
        .map_err(|e| format!("{e} (or `none` for unlimited)"))
}

/// The store, with an error that says which file failed.
fn load(data_dir: &Path) -> Result<UserDb, String> {
    UserDb::load(data_dir).map_err(|e| format!("cannot read the users: {e}"))
}

/// Saves the store, with an error that says so.
fn save(db: &UserDb) -> Result<(), String> {
    db.save().map_err(|e| format!("cannot save the users: {e}"))
}

/// Takes the exclusive lock of the store, waiting for another `skiffd user`
/// to finish. Released when the returned file is dropped (or the process ends).
fn lock(data_dir: &Path) -> Result<File, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = data_dir.join(".users.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    crate::sys::lock_exclusive(&file)
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(file)
}

/// Reads the new password of `name`: one line of standard input, or asked
/// twice on the terminal without echo.
fn read_password(from_stdin: bool, name: &str) -> Result<String, String> {
    if from_stdin {
        return read_password_line(&mut io::stdin().lock());
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            format!("cannot ask for the password on the terminal ({e}); use --password-stdin")
        })
    };
    let first = ask(&format!("password for {name}: "))?;
    if first.is_empty() {
        return Err("refusing an empty password".into());
    }
    if ask("again: ")? != first {
        return Err("the two passwords differ; nothing changed".into());
    }
    Ok(first)
}

/// The password on the first line of `input`, without its line ending.
/// Refuses an empty one (including no input at all): an empty password is
/// almost always a script's mistake.
fn read_password_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        return Err("refusing an empty password (standard input's first line is empty)".into());
    }
    Ok(password.to_string())
}

/// One line per user, with a header: name, quota, exec.
fn list_lines(db: &UserDb) -> Vec<String> {
    let mut lines = Vec::new();
    if !db.is_empty() {
        lines.push(format!("{:<32}  {:>12}  exec", "name", "quota"));
    }
    for u in db.names() {
        lines.push(format!(
            "{:<32}  {:>12}  {}",
            u.name,
            quota_text(u.quota),
            yes_no(u.exec)
        ));
    }
    lines
}

/// A quota for people: `100 MiB`, or `unlimited`.
fn quota_text(quota: Option<u64>) -> String {
    quota.map_or_else(|| "unlimited".to_string(), human)
}

/// `yes` or `no`.
fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A size for people in binary units: `100 MiB`, `1.5 KiB`, `512 B`. Exact
/// multiples (as given with `--quota 100M`) are shown without decimals.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    // `scale` is a power of two: a mask tests divisibility.
    if bytes & (scale - 1) == 0 {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        // Tenths, computed in integers: u64 does not fit an f64 exactly.
        let tenths = (u128::from(bytes) * 10 + u128::from(scale) / 2) / u128::from(scale);
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh, empty directory for one test.
    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-usercli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1024), "1 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 << 20), "100 MiB");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human((10 << 20) + 1), "10.0 MiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn password_lines() {
        let read = |s: &str| read_password_line(&mut s.as_bytes());
        assert_eq!(read("hunter2\n"), Ok("hunter2".into()));
        assert_eq!(read("hunter2\r\n"), Ok("hunter2".into()));
        assert_eq!(read("no newline"), Ok("no newline".into()));
        assert_eq!(
            read(" spaces kept \nsecond line\n"),
            Ok(" spaces kept ".into())
        );
        assert!(read("\n").is_err());
        assert!(read("").is_err());
    }

    #[test]
    fn quota_sizes_parse_as_documented() {
        assert_eq!(skiff::proto::parse_size("10M"), Ok(10 << 20));
        assert_eq!(skiff::proto::parse_size("1G"), Ok(1 << 30));
    }

    #[test]
    fn add_passwd_list_del() {
        let d = dir("cycle");
        // `run` with --password-stdin would read the test's stdin, so the
        // password steps are driven through the store like `run` does.
        let mut db = UserDb::load(&d).unwrap();
        db.add("carol", "pw", Some(100 << 20), true).unwrap();
        db.add("dave", "pw", None, false).unwrap();
        db.save().unwrap();
        assert_eq!(
            list_lines(&UserDb::load(&d).unwrap()),
            [
                format!("{:<32}  {:>12}  exec", "name", "quota"),
                format!("{:<32}  {:>12}  yes", "carol", "100 MiB"),
                format!("{:<32}  {:>12}  no", "dave", "unlimited"),
            ]
        );
        run(&d, UserCommand::List).unwrap();

        // Adding an existing user or a bad name fails before any prompt.
        let add = |name: &str| UserCommand::Add {
            name: name.into(),
            quota: None,
            exec: false,
            password_stdin: false,
        };
        assert!(
            run(&d, add("carol"))
                .unwrap_err()
                .contains("already exists")
        );
        assert!(run(&d, add("../x")).unwrap_err().contains("bad user name"));
        let passwd = UserCommand::Passwd {
            name: "nobody".into(),
            password_stdin: false,
        };
        assert!(run(&d, passwd).unwrap_err().contains("no user nobody"));

        // Delete keeps the home; --purge removes it.
        crate::users::create_home(&d, "carol").unwrap();
        crate::users::create_home(&d, "dave").unwrap();
        let del = |name: &str, purge| UserCommand::Del {
            name: name.into(),
            purge,
        };
        run(&d, del("carol", false)).unwrap();
        assert!(UserDb::home(&d, "carol").is_dir());
        run(&d, del("dave", true)).unwrap();
        assert!(!UserDb::home(&d, "dave").exists());
        assert!(
            run(&d, del("dave", true))
                .unwrap_err()
                .contains("no user dave")
        );
        let left = UserDb::load(&d).unwrap();
        assert!(left.is_empty());
        // The lock file is private and not mistaken for anything else.
        let lock_mode = std::fs::metadata(d.join(".users.lock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(lock_mode & 0o777, 0o600);
    }

    #[test]
    fn mod_changes_only_what_it_is_given() {
        let d = dir("mod");
        let mut db = UserDb::load(&d).unwrap();
        db.add("erin", "pw", Some(1 << 20), false).unwrap();
        db.save().unwrap();
        let hash = db.get("erin").unwrap().hash.clone();
        let change = |quota, exec, no_exec| UserCommand::Mod {
            name: "erin".into(),
            quota,
            exec,
            no_exec,
        };
        let erin = || UserDb::load(&d).unwrap().get("erin").cloned().unwrap();

        run(&d, change(None, true, false)).unwrap();
        assert_eq!((erin().quota, erin().exec), (Some(1 << 20), true));
        run(&d, change(Some(Quota(None)), false, false)).unwrap();
        assert_eq!((erin().quota, erin().exec), (None, true));
        run(&d, change(Some(Quota(Some(5 << 30))), false, true)).unwrap();
        assert_eq!((erin().quota, erin().exec), (Some(5 << 30), false));
        assert_eq!(erin().hash, hash, "the password is untouched");

        let ghost = UserCommand::Mod {
            name: "ghost".into(),
            quota: None,
            exec: true,
            no_exec: false,
        };
        assert!(run(&d, ghost).unwrap_err().contains("no user ghost"));
    }

    #[test]
    fn quota_arguments() {
        assert_eq!(parse_quota("none"), Ok(Quota(None)));
        assert_eq!(parse_quota("NONE"), Ok(Quota(None)));
        assert_eq!(parse_quota("10M"), Ok(Quota(Some(10 << 20))));
        assert!(parse_quota("lots").unwrap_err().contains("none"));
    }

    #[test]
    fn list_of_a_missing_data_dir_is_empty() {
        let d = dir("missing").join("not-there");
        run(&d, UserCommand::List).unwrap();
        assert!(!d.exists(), "list must not create anything");
    }

    #[test]
    fn a_damaged_store_is_a_clear_error() {
        let d = dir("damaged");
        std::fs::write(d.join("users.json"), "{").unwrap();
        let e = run(&d, UserCommand::List).unwrap_err();
        assert!(e.contains("users.json is damaged"), "{e}");
    }
}
