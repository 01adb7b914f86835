//! The user store: one JSON file, `DATA_DIR/users.json`, rewritten
//! atomically (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old list or the new one, never half of each.
//!
//! Passwords are stored as argon2id PHC strings (salt and parameters
//! inside, so parameters can change later without breaking old hashes).
//! A check runs on the server's single loop thread, so the parameters
//! trade KDF strength against loop latency: [`KDF_MEMORY_KIB`] of memory
//! and [`KDF_PASSES`] passes take about 2–3 ms here (see BENCHMARKS.md),
//! short enough that a login does not hold up other clients noticeably,
//! and repeated failures are throttled by the server (see
//! `handlers::auth`) rather than by making each check slower.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

/// Argon2 memory cost, KiB.
pub const KDF_MEMORY_KIB: u32 = 2048;
/// Argon2 passes.
pub const KDF_PASSES: u32 = 2;

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// argon2id PHC string.
    pub hash: String,
    /// Most bytes the home may hold (None: unlimited).
    pub quota: Option<u64>,
    /// May run commands with `exec`.
    pub exec: bool,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    users: Vec<UserRecord>,
}

/// Why a change to the user store was refused.
#[derive(Debug)]
pub enum UserError {
    /// Names are 1–32 of `a-z 0-9 _ . -`, not starting with `.` or `-`.
    BadName(String),
    /// The user exists already.
    Exists(String),
    /// No such user.
    NotFound(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::BadName(n) => write!(
                f,
                "bad user name {n:?}: use 1 to 32 of a-z 0-9 _ . -, not starting with . or -"
            ),
            UserError::Exists(n) => write!(f, "user {n} already exists"),
            UserError::NotFound(n) => write!(f, "no user {n}"),
        }
    }
}

impl std::error::Error for UserError {}

/// All users, by name.
#[derive(Debug)]
pub struct UserDb {
    /// Path of users.json.
    path: PathBuf,
    /// Records by name (sorted, so `list` and the file are stable).
    users: BTreeMap<String, UserRecord>,
}

fn kdf() -> Argon2<'static> {
    let params = Params::new(KDF_MEMORY_KIB, KDF_PASSES, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    kdf()
        .hash_password(password.as_bytes())
        .expect("argon2 hashing with valid parameters does not fail")
        .to_string()
}

/// Checked against when the user does not exist, so that an unknown user
/// costs the same KDF run as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no user has this password"))
}

fn check(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => kdf().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Checks a user name.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

impl UserDb {
    /// Reads `data_dir/users.json`; a missing file is an empty store.
    pub fn load(data_dir: &Path) -> io::Result<UserDb> {
        let path = data_dir.join("users.json");
        let users = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: FileFormat = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is damaged: {e}", path.display()),
                    )
                })?;
                file.users
                    .into_iter()
                    .map(|u| (u.name.clone(), u))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(UserDb { path, users })
    }

    /// Writes the store atomically, readable by its owner only.
    pub fn save(&self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".users.json.tmp-{}", std::process::id()));
        let file = FileFormat {
            version: 1,
            users: self.users.values().cloned().collect(),
        };
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &file)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// One user.
    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    /// Adds a user.
    pub fn add(
        &mut self,
        name: &str,
        password: &str,
        quota: Option<u64>,
        exec: bool,
    ) -> Result<(), UserError> {
        if !valid_name(name) {
            return Err(UserError::BadName(name.to_string()));
        }
        if self.users.contains_key(name) {
            return Err(UserError::Exists(name.to_string()));
        }
        let record = UserRecord {
            name: name.to_string(),
            hash: hash_password(password),
            quota,
            exec,
        };
        self.users.insert(name.to_string(), record);
        Ok(())
    }

    /// Removes a user.
    pub fn remove(&mut self, name: &str) -> Result<UserRecord, UserError> {
        self.users
            .remove(name)
            .ok_or_else(|| UserError::NotFound(name.to_string()))
    }

    /// Sets a new password.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UserError> {
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| UserError::NotFound(name.to_string()))?;
        user.hash = hash_password(password);
        Ok(())
    }

    /// All users, sorted by name.
    pub fn names(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    /// No users at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Verifies a login. Unknown user and wrong password both give `None`
    /// after the same KDF work.
    pub fn verify(&self, name: &str, password: &str) -> Option<&UserRecord> {
        match self.users.get(name) {
            Some(user) => check(password, &user.hash).then_some(user),
            None => {
                check(password, dummy_hash());
                None
            }
        }
    }

    /// A user's home directory.
    pub fn home(data_dir: &Path, name: &str) -> PathBuf {
        data_dir.join("homes").join(name)
    }
}

/// On first start (no users at all), adds `demo` with a random password,
/// the exec right and a 100 MiB quota, and returns the password to show
/// once.
pub fn ensure_demo_user(db: &mut UserDb, data_dir: &Path) -> io::Result<Option<String>> {
    if !db.is_empty() {
        return Ok(None);
    }
    let password = random_password();
    db.add("demo", &password, Some(100 << 20), true)
        .map_err(io::Error::other)?;
    create_home(data_dir, "demo")?;
    db.save()?;
    Ok(Some(password))
}

/// Creates a user's home, private to the server's user.
pub fn create_home(data_dir: &Path, name: &str) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(UserDb::home(data_dir, name))
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system RNG works");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-users-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn add_verify_save_load() {
        let d = dir("basic");
        let mut db = UserDb::load(&d).unwrap();
        assert!(db.is_empty());
        db.add("alice", "pw", Some(10), true).unwrap();
        assert!(matches!(
            db.add("alice", "x", None, false),
            Err(UserError::Exists(_))
        ));
        assert!(db.verify("alice", "pw").is_some());
        assert!(db.verify("alice", "wrong").is_none());
        assert!(db.verify("nobody", "pw").is_none());
        db.save().unwrap();
        let again = UserDb::load(&d).unwrap();
        assert_eq!(again.get("alice"), db.get("alice"));
        assert!(again.verify("alice", "pw").is_some());
        let text = std::fs::read_to_string(d.join("users.json")).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("\"pw\""));
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "users.json")
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "A",
            "a\0b",
            &"x".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["a", "bob_2", "x.y-z", &"x".repeat(32)] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let d = dir("damaged");
        std::fs::write(d.join("users.json"), "{not json").unwrap();
        let e = UserDb::load(&d).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn demo_only_when_empty() {
        let d = dir("demo");
        let mut db = UserDb::load(&d).unwrap();
        let pw = ensure_demo_user(&mut db, &d).unwrap().unwrap();
        assert_eq!(pw.len(), 16);
        assert!(db.verify("demo", &pw).is_some());
        assert!(UserDb::home(&d, "demo").is_dir());
        assert!(ensure_demo_user(&mut db, &d).unwrap().is_none());
    }

    #[test]
    fn unknown_users_cost_a_kdf_run_too() {
        // Both paths go through `check`, which always runs argon2: the
        // dummy hash parses and uses the same parameters as real ones.
        assert!(PasswordHash::new(dummy_hash()).is_ok());
        assert!(dummy_hash().contains(&format!("m={KDF_MEMORY_KIB},t={KDF_PASSES}")));
    }
}
