//! `skiffd user add|del|passwd|list`: managing the user store from the
//! command line. A running server picks changes up at the next login.

use std::io::BufRead;
use std::path::Path;

use clap::Subcommand;

use crate::users::{UserDb, create_home};

/// The `skiffd user` subcommands.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// Login name (1-32 of a-z 0-9 _ . -).
        name: String,
        /// Disk quota: bytes, or with a suffix (10M = 10 MiB, 1G = 1 GiB).
        #[arg(long, value_parser = skiff::proto::parse_size)]
        quota: Option<u64>,
        /// Allow running commands (exec).
        #[arg(long)]
        exec: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user (their home is kept unless --purge).
    Del {
        /// Login name.
        name: String,
        /// Also delete the user's home and partial uploads.
        #[arg(long)]
        purge: bool,
    },
    /// Change a user's password.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password("password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password)
}

/// A size for people: `100 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Runs one `skiffd user` command on the store in `data_dir`.
pub fn run(data_dir: &Path, command: UserCommand) -> Result<(), String> {
    let mut db = UserDb::load(data_dir).map_err(|e| e.to_string())?;
    match command {
        UserCommand::Add {
            name,
            quota,
            exec,
            password_stdin,
        } => {
            if db.get(&name).is_some() {
                return Err(format!("user {name} already exists"));
            }
            let password = read_password(password_stdin)?;
            db.add(&name, &password, quota, exec)
                .map_err(|e| e.to_string())?;
            create_home(data_dir, &name)
                .map_err(|e| format!("cannot create the home of {name}: {e}"))?;
            db.save().map_err(|e| format!("cannot save users: {e}"))?;
            println!("added {name}");
        }
        UserCommand::Del { name, purge } => {
            db.remove(&name).map_err(|e| e.to_string())?;
            db.save().map_err(|e| format!("cannot save users: {e}"))?;
            if purge {
                for dir in [
                    UserDb::home(data_dir, &name),
                    data_dir.join("partial").join(&name),
                ] {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
                    }
                }
            }
            println!("deleted {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            if db.get(&name).is_none() {
                return Err(format!("no user {name}"));
            }
            let password = read_password(password_stdin)?;
            db.set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            db.save().map_err(|e| format!("cannot save users: {e}"))?;
            println!("changed the password of {name}");
        }
        UserCommand::List => {
            for u in db.names() {
                let quota = u.quota.map_or("unlimited".to_string(), human);
                println!(
                    "{:<32} quota {:<12} exec {}",
                    u.name,
                    quota,
                    if u.exec { "yes" } else { "no" }
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(100 << 20), "100 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
