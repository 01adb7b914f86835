//! The user store: one JSON file, `DATA_DIR/users.json`, and one home
//! directory per user, `DATA_DIR/homes/NAME`.
//!
//! ```text
//! {"version": 1,
//!  "users": [{"name": "demo", "hash": "$argon2id$v=19$m=4096,t=2,p=1$SALT$HASH",
//!             "quota": 104857600, "exec": true}]}
//! ```
//!
//! The file is rewritten atomically (temp file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves either the
//! old list or the new one, never half of each; it is readable by its
//! owner only. Loading checks every record (name rules, parseable hash,
//! no duplicates) because the names become directory names under `homes/`:
//! a hand-edited `"../etc"` must be refused, not served.
//!
//! # Password hashing
//!
//! Passwords are stored as argon2id PHC strings. The salt and the
//! parameters are inside the string, so the parameters below can change
//! later: old hashes keep verifying with the parameters they were made
//! with, and `skiffd user passwd` rehashes with the new ones.
//!
//! A login is verified **on a worker thread** (see [`crate::pool`]), never
//! on the loop: the loop hands the password and the stored hash to the
//! pool and serves everyone else meanwhile. So the cost can follow OWASP's
//! minimum for argon2id, [`KDF_MEMORY_KIB`] = 19 MiB and [`KDF_PASSES`] =
//! 2, one lane: about 20-40 ms of a worker's CPU per check. What keeps
//! online guessing slow is the throttle of failed logins per (address,
//! user) in `handlers::auth`; the memory cost makes an offline attack on a
//! stolen `users.json` expensive. Hashes made with the earlier 4 MiB
//! parameters keep verifying (the parameters are read from each hash), and
//! `skiffd user passwd` rehashes with the new ones. An unoptimized (debug)
//! build of argon2 is about 50 times slower unless the `argon2` and
//! `blake2` packages get `opt-level = 3` under `[profile.dev.package.NAME]`.
//!
//! Unknown user and wrong password must be indistinguishable, also by
//! timing: [`check_password`] is given the user's hash or, for an unknown
//! user, none, and then checks against a dummy made with the current
//! parameters; the KDF runs exactly once on every path.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{PasswordHasher, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

/// Argon2 memory cost in KiB (4 MiB): see the module doc for why so low.
pub const KDF_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2 passes over that memory.
pub const KDF_PASSES: u32 = 2;
/// Argon2 lanes: one, since the loop thread computes it alone anyway.
const KDF_LANES: u32 = 1;

/// Name of the store inside the data directory.
const FILE_NAME: &str = "users.json";
/// The only file format version this code reads and writes.
const FORMAT_VERSION: u32 = 1;
/// Longest user name, in bytes (all allowed characters are ASCII).
const MAX_NAME_LEN: usize = 32;
/// Length of the generated demo password: 16 of 55 symbols is ~92 bits.
const DEMO_PASSWORD_LEN: usize = 16;
/// Quota of the demo user.
const DEMO_QUOTA: u64 = 100 << 20;

/// One user, as stored in `users.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name; also the name of the home directory.
    pub name: String,
    /// The password's argon2id hash as a PHC string (salt and parameters inside).
    pub hash: String,
    /// Most bytes the home may hold; `None` is unlimited.
    pub quota: Option<u64>,
    /// Whether the user may run commands with `exec`.
    pub exec: bool,
}

/// The file as serialized: a version first, so a later format can be told apart.
#[derive(Serialize, Deserialize)]
struct FileFormat {
    /// Format version, [`FORMAT_VERSION`].
    version: u32,
    /// All users, sorted by name.
    users: Vec<UserRecord>,
}

/// Why a change to the user store was refused.
#[derive(Debug)]
pub enum UserError {
    /// The name breaks the rules (1–32 of `a-z 0-9 _ . -`, not starting with `.` or `-`).
    BadName(String),
    /// A user of that name exists already.
    Exists(String),
    /// No user of that name.
    NotFound(String),
    /// Reading or writing the store or a home failed.
    Io(io::Error),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::BadName(n) => write!(
                f,
                "bad user name {n:?}: use 1 to {MAX_NAME_LEN} of a-z 0-9 _ . -, \
                 not starting with . or -"
            ),
            UserError::Exists(n) => write!(f, "user {n} already exists"),
            UserError::NotFound(n) => write!(f, "no user {n}"),
            UserError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for UserError {
    fn from(e: io::Error) -> UserError {
        UserError::Io(e)
    }
}

/// All users, by name, and where they are stored.
#[derive(Debug, Clone)]
pub struct UserDb {
    /// Path of `users.json`; `save` writes here.
    path: PathBuf,
    /// Records by name: a `BTreeMap`, so listings and the file are sorted and stable.
    users: BTreeMap<String, UserRecord>,
}

/// The one argon2 configuration new hashes are made with.
fn kdf() -> Argon2<'static> {
    let params = Params::new(KDF_MEMORY_KIB, KDF_PASSES, KDF_LANES, None)
        .expect("the KDF constants are valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt, as a PHC string that
/// records the algorithm and parameters too.
pub fn hash_password(password: &str) -> String {
    kdf()
        .hash_password(password.as_bytes())
        .expect("argon2 fails only if the system RNG does, and then nothing is safe to do")
        .to_string()
}

/// The hash an unknown user's password is checked against, made once per
/// process with the current parameters so it costs what a real check costs.
/// Its password is random and thrown away: nothing can match it.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_password()))
}

#[cfg(test)]
thread_local! {
    /// argon2 runs made by [`check_hash`] on this thread (tests only).
    static KDF_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs the KDF once: does `password` match the PHC string `hash`?
/// Takes tens of milliseconds: call it on a worker thread, never on the
/// loop. The parameters come from the string, so older hashes keep
/// working after the constants change.
fn check_hash(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    #[cfg(test)]
    KDF_RUNS.with(|n| n.set(n.get() + 1));
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let need = params.block_count();
    let mut blocks = kdf_spare().pop().unwrap_or_default();
    if blocks.len() < need {
        blocks.resize(need, argon2::Block::default());
    }
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut blocks[..need])
        .is_ok();
    kdf_spare().push(blocks);
    // `Output`'s equality is constant-time, as in argon2's own verify.
    computed
        && argon2::password_hash::phc::Output::new(out).is_ok_and(|computed| &computed == expected)
}

/// argon2's working areas (19 MiB each) not in use: a check takes one
/// and gives it back, so logins that keep coming reuse them (mapped
/// afresh, each check would cost about 4,900 page faults and an `munmap`,
/// whose TLB shootdown interrupts the loop thread too). At most one per
/// worker that checks passwords. [`release_kdf_memory`] frees them when
/// the pool has been quiet for a moment.
static KDF_SPARE: Mutex<Vec<Vec<argon2::Block>>> = Mutex::new(Vec::new());

/// The spare areas (a panic while holding the lock cannot happen: the
/// list is only pushed and popped).
fn kdf_spare() -> std::sync::MutexGuard<'static, Vec<Vec<argon2::Block>>> {
    KDF_SPARE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Frees argon2's spare working areas. The worker pool calls it from any
/// worker that has been without work for a moment, so an idle server
/// holds none of them.
pub fn release_kdf_memory() {
    let spare = std::mem::take(&mut *kdf_spare());
    drop(spare);
}

/// Does `password` match `hash`, the stored hash of the user logging in?
/// `None` (no such user) is checked against a dummy hash, so an unknown
/// user costs one KDF run too and fails the same way. For a worker thread.
pub fn check_password(password: &str, hash: Option<&str>) -> bool {
    let matches = check_hash(password, hash.unwrap_or_else(|| dummy_hash()));
    hash.is_some() && matches
}

/// Is `name` a valid user name: 1–32 of `a-z 0-9 _ . -`, not starting with
/// `.` or `-`? This excludes `.`, `..`, `/`, NUL and `*` (the chat
/// broadcast address), so a name is always one safe path component.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Like [`valid_name`], as a `Result` for `?`.
pub fn check_name(name: &str) -> Result<(), UserError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_string()))
    }
}

/// An `InvalidData` error naming the damaged file.
fn damaged(path: &Path, why: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is damaged: {why}", path.display()),
    )
}

impl UserDb {
    /// Reads `data_dir/users.json`. A missing file (or data directory) is
    /// an empty store; a file that is not valid JSON of version 1, or holds
    /// a bad name, a duplicate name or an unparseable hash, is an
    /// `InvalidData` error that names the file.
    pub fn load(data_dir: &Path) -> io::Result<UserDb> {
        // Make the dummy hash now (once per process), so that the first
        // login of an unknown user does not take two KDF runs.
        dummy_hash();
        let path = data_dir.join(FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(UserDb {
                    path,
                    users: BTreeMap::new(),
                });
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let file: FileFormat = serde_json::from_slice(&bytes).map_err(|e| damaged(&path, e))?;
        if file.version != FORMAT_VERSION {
            return Err(damaged(
                &path,
                format_args!(
                    "version {} (this skiffd reads version {FORMAT_VERSION})",
                    file.version
                ),
            ));
        }
        let mut users = BTreeMap::new();
        for user in file.users {
            if !valid_name(&user.name) {
                return Err(damaged(
                    &path,
                    format_args!("bad user name {:?}", user.name),
                ));
            }
            if PasswordHash::new(&user.hash).is_err() {
                return Err(damaged(
                    &path,
                    format_args!("the hash of {} is not a PHC string", user.name),
                ));
            }
            if let Some(old) = users.insert(user.name.clone(), user) {
                return Err(damaged(
                    &path,
                    format_args!("user {} appears twice", old.name),
                ));
            }
        }
        Ok(UserDb { path, users })
    }

    /// Writes the store atomically, readable and writable by its owner only
    /// (mode 0600); creates the data directory (mode 0700) if needed.
    pub fn save(&self) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Same directory, so the rename cannot cross file systems; the pid
        // keeps two writing processes off each other's temp file.
        let tmp = dir.join(format!(".{FILE_NAME}.tmp-{}", std::process::id()));
        let file = FileFormat {
            version: FORMAT_VERSION,
            users: self.users.values().cloned().collect(),
        };
        let result = (|| {
            // A temp file left by a crashed process of the same pid may have
            // other permissions: start afresh so `mode` applies.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &file)?;
            f.write_all(b"\n")?;
            // Data on disk before the rename makes it visible.
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename itself on disk.
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }

    /// Path of the `users.json` this store loads from and saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One user's record.
    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    /// Adds a user, hashing the password (one KDF run). Only in memory:
    /// call [`UserDb::save`] to keep it.
    pub fn add(
        &mut self,
        name: &str,
        password: &str,
        quota: Option<u64>,
        exec: bool,
    ) -> Result<(), UserError> {
        check_name(name)?;
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

    /// Removes a user and returns the record. Their home is left alone.
    pub fn remove(&mut self, name: &str) -> Result<UserRecord, UserError> {
        self.users
            .remove(name)
            .ok_or_else(|| UserError::NotFound(name.to_string()))
    }

    /// The record of `name`, to change it.
    fn get_mut(&mut self, name: &str) -> Result<&mut UserRecord, UserError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| UserError::NotFound(name.to_string()))
    }

    /// Sets a new password, hashed with the current parameters.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UserError> {
        self.get_mut(name)?.hash = hash_password(password);
        Ok(())
    }

    /// Sets a user's quota (`None`: unlimited).
    pub fn set_quota(&mut self, name: &str, quota: Option<u64>) -> Result<(), UserError> {
        self.get_mut(name)?.quota = quota;
        Ok(())
    }

    /// Grants or takes away the right to run commands.
    pub fn set_exec(&mut self, name: &str, exec: bool) -> Result<(), UserError> {
        self.get_mut(name)?.exec = exec;
        Ok(())
    }

    /// All users, sorted by name.
    pub fn names(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    /// True if there are no users at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Verifies a login: the user's record if `password` is theirs.
    ///
    /// Unknown user and wrong password both return `None` after the same
    /// work: one KDF run, against the dummy hash for an unknown user. Takes
    /// a few milliseconds of the calling thread (see the module doc).
    #[cfg(test)]
    pub fn verify(&self, name: &str, password: &str) -> Option<&UserRecord> {
        let (user, hash) = self.hash_to_check(name);
        // One KDF run on every path; the result is looked at only after.
        let matches = check_hash(password, hash);
        user.filter(|_| matches)
    }

    /// The record of `name` if any, and the hash a login as `name` is
    /// checked against: theirs, or the dummy. Split from `verify` so tests
    /// can see that an unknown user still gets a real hash to check.
    #[cfg(test)]
    fn hash_to_check(&self, name: &str) -> (Option<&UserRecord>, &str) {
        match self.users.get(name) {
            Some(user) => (Some(user), user.hash.as_str()),
            None => (None, dummy_hash()),
        }
    }

    /// A user's home directory: `data_dir/homes/NAME`. Only meaningful for
    /// a valid name (see [`valid_name`]), which is one path component.
    pub fn home(data_dir: &Path, name: &str) -> PathBuf {
        data_dir.join("homes").join(name)
    }
}

/// Creates a user's home (and `homes/` above it) if missing, mode 0700:
/// private to the account the server runs as. An existing home, such as
/// one kept when its user was deleted, is left as it is.
pub fn create_home(data_dir: &Path, name: &str) -> io::Result<()> {
    let home = UserDb::home(data_dir, name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", home.display())))
}

/// On a first start (no users at all): adds `demo` with a random
/// 16-character password, the exec right and a 100 MiB quota, in memory
/// only, and returns the password, to be shown once (only its hash is
/// kept). Returns `None` and changes nothing if there is any user.
///
/// Nothing is written here: the server saves the store with
/// [`save_demo_user`] only once every listener is bound. A start that
/// fails (a port in use) must not leave a `demo` behind whose password
/// nobody saw, because the next start would then never show one.
pub fn add_demo_user(db: &mut UserDb) -> Option<String> {
    if !db.is_empty() {
        return None;
    }
    let password = random_password();
    db.add("demo", &password, Some(DEMO_QUOTA), true)
        .expect("demo is a valid name, and the store is empty");
    Some(password)
}

/// Creates the demo user's home and saves `db`, which holds it (see
/// [`add_demo_user`]).
pub fn save_demo_user(db: &UserDb, data_dir: &Path) -> io::Result<()> {
    // Home first: if the save then fails, an empty directory is all that is left.
    create_home(data_dir, "demo")?;
    db.save()
}

/// A random password from the system RNG, of letters and digits that
/// cannot be mistaken for each other when read off a screen (no 0/O, 1/l/I).
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // Largest multiple of the alphabet size that fits a byte: bytes at or
    // above it are dropped, so every symbol is equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::with_capacity(DEMO_PASSWORD_LEN);
    let mut bytes = [0u8; 32];
    while password.len() < DEMO_PASSWORD_LEN {
        getrandom::fill(&mut bytes).expect("the system RNG works");
        for &b in bytes.iter().filter(|&&b| usize::from(b) < limit) {
            if password.len() < DEMO_PASSWORD_LEN {
                password.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    password
}

#[cfg(test)]
mod kdf_tests {
    use super::*;

    #[test]
    fn check_password_verifies_with_the_parameters_inside_the_hash() {
        let hash = hash_password("secret");
        assert!(hash.contains(&format!("m={KDF_MEMORY_KIB},t={KDF_PASSES}")));
        assert!(check_password("secret", Some(&hash)));
        assert!(!check_password("Secret", Some(&hash)));
        // No such user: a real check against the dummy, and never a match.
        assert!(!check_password("secret", None));
        // a hash made with other (older, smaller) parameters still verifies
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 2, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(check_password("pw", Some(&other)));
        assert!(!check_password("pw", Some("not a phc string")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh, empty directory for one test.
    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-users-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Names of the files in `d`.
    fn files_in(d: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn add_and_verify() {
        let d = dir("verify");
        let mut db = UserDb::load(&d).unwrap();
        assert!(db.is_empty());
        db.add("alice", "s3cret", Some(10 << 20), true).unwrap();
        assert!(matches!(
            db.add("alice", "x", None, false),
            Err(UserError::Exists(_))
        ));
        let alice = db.verify("alice", "s3cret").expect("right password");
        assert_eq!((alice.quota, alice.exec), (Some(10 << 20), true));
        assert!(db.verify("alice", "wrong").is_none());
        assert!(db.verify("alice", "").is_none());
        assert!(db.verify("nobody", "s3cret").is_none());
        assert!(db.get("alice").unwrap().hash.starts_with(&format!(
            "$argon2id$v=19$m={KDF_MEMORY_KIB},t={KDF_PASSES},p={KDF_LANES}$"
        )));
    }

    #[test]
    fn changes_and_removal() {
        let d = dir("change");
        let mut db = UserDb::load(&d).unwrap();
        db.add("bob", "one", None, false).unwrap();
        db.set_password("bob", "two").unwrap();
        assert!(db.verify("bob", "one").is_none());
        assert!(db.verify("bob", "two").is_some());
        assert!(matches!(
            db.set_password("eve", "x"),
            Err(UserError::NotFound(_))
        ));
        assert_eq!(db.remove("bob").unwrap().name, "bob");
        assert!(matches!(db.remove("bob"), Err(UserError::NotFound(_))));
        assert!(db.is_empty());
    }

    #[test]
    fn names_are_checked() {
        let long = "x".repeat(33);
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "/", "A", "Bob", "a\0b", "a b", "*", "é", &long,
        ] {
            assert!(!valid_name(bad), "{bad:?} accepted");
        }
        let longest = "x".repeat(32);
        for good in ["a", "0", "bob_2", "x.y-z", "a..b", "_x", &longest] {
            assert!(valid_name(good), "{good:?} refused");
        }
        // `add` refuses before hashing anything.
        let mut db = UserDb::load(&dir("names")).unwrap();
        for bad in ["..", "a/b", "", "a\0b", &long] {
            assert!(matches!(
                db.add(bad, "pw", None, false),
                Err(UserError::BadName(_))
            ));
        }
        assert!(db.is_empty());
    }

    #[test]
    fn save_load_round_trip_is_atomic_and_private() {
        let d = dir("roundtrip");
        let mut db = UserDb::load(&d).unwrap();
        db.add("zed", "pz", None, false).unwrap();
        db.add("amy", "pa", Some(1 << 30), true).unwrap();
        db.save().unwrap();
        // Saving again replaces the file, still through a temp file.
        db.save().unwrap();
        assert_eq!(files_in(&d), ["users.json"], "temp files left behind");
        let mode = fs::metadata(d.join("users.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let again = UserDb::load(&d).unwrap();
        let names: Vec<&str> = again.names().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["amy", "zed"]);
        assert_eq!(again.get("amy"), db.get("amy"));
        assert_eq!(again.get("zed"), db.get("zed"));
        assert!(again.verify("amy", "pa").is_some());

        let text = fs::read_to_string(d.join("users.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["users"][1]["quota"], serde_json::Value::Null);
        assert!(!text.contains("\"pa\""), "password stored in clear");
    }

    #[test]
    fn save_creates_a_missing_data_dir() {
        let d = dir("mkdir").join("deeper");
        let mut db = UserDb::load(&d).unwrap();
        db.add("a", "p", None, false).unwrap();
        db.save().unwrap();
        assert_eq!(UserDb::load(&d).unwrap().names().count(), 1);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let d = dir("damaged");
        let good_hash = hash_password("x");
        let cases = [
            "{not json".to_string(),
            String::new(),
            "[]".to_string(),
            r#"{"version":2,"users":[]}"#.to_string(),
            r#"{"version":1,"users":[{"name":"a"}]}"#.to_string(),
            format!(
                r#"{{"version":1,"users":[{{"name":"../etc","hash":"{good_hash}","quota":null,"exec":false}}]}}"#
            ),
            r#"{"version":1,"users":[{"name":"a","hash":"plain","quota":null,"exec":false}]}"#
                .to_string(),
            format!(
                r#"{{"version":1,"users":[{{"name":"a","hash":"{good_hash}","quota":null,"exec":false}},
                {{"name":"a","hash":"{good_hash}","quota":1,"exec":true}}]}}"#
            ),
        ];
        for text in cases {
            fs::write(d.join("users.json"), &text).unwrap();
            let e = UserDb::load(&d).expect_err(&text);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{text}");
            assert!(e.to_string().contains("users.json"), "{e}");
        }
    }

    #[test]
    fn demo_user_only_when_empty() {
        let d = dir("demo");
        let mut db = UserDb::load(&d).unwrap();
        let pw = add_demo_user(&mut db).expect("created");
        assert_eq!(pw.len(), DEMO_PASSWORD_LEN);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
        let demo = db.verify("demo", &pw).expect("demo logs in");
        assert_eq!((demo.quota, demo.exec), (Some(100 << 20), true));
        // Only in memory until saved: a failed start leaves nothing.
        assert!(UserDb::load(&d).unwrap().is_empty());
        assert!(!UserDb::home(&d, "demo").exists());

        save_demo_user(&db, &d).unwrap();
        let home = UserDb::home(&d, "demo");
        assert_eq!(
            fs::metadata(&home).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Saved: a restart finds it, and does not make another.
        let mut again = UserDb::load(&d).unwrap();
        assert!(again.verify("demo", &pw).is_some());
        assert!(add_demo_user(&mut again).is_none());
        assert_eq!(again.names().count(), 1);

        let mut db = UserDb::load(&dir("demo-not")).unwrap();
        db.add("root", "pw", None, true).unwrap();
        assert!(add_demo_user(&mut db).is_none());
        assert!(db.get("demo").is_none());
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), DEMO_PASSWORD_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_users_get_a_real_hash_to_check() {
        // The structural guarantee: `verify` runs `check` on whatever
        // `hash_to_check` returns, and for an unknown user that is a valid
        // hash with the current parameters, so the KDF does the same work.
        let mut db = UserDb::load(&dir("dummy")).unwrap();
        db.add("real", "pw", None, false).unwrap();
        let (user, hash) = db.hash_to_check("ghost");
        assert!(user.is_none());
        let parsed = PasswordHash::new(hash).expect("the dummy is a PHC string");
        let real = PasswordHash::new(&db.get("real").unwrap().hash).unwrap();
        assert_eq!(parsed.algorithm, real.algorithm);
        assert_eq!(parsed.params, real.params);
        assert!(!check_hash("", hash) && !check_hash("pw", hash));
    }

    #[test]
    fn every_verify_runs_the_kdf_exactly_once() {
        // The deterministic form of "unknown user and wrong password take
        // the same time": each path runs argon2 once, on the same kind of
        // hash (see the structural test above). Timing it would be flaky.
        let mut db = UserDb::load(&dir("kdf-runs")).unwrap();
        db.add("real", "pw", None, false).unwrap();
        for (name, password, ok) in [
            ("real", "pw", true),
            ("real", "nope", false),
            ("ghost", "pw", false),
        ] {
            let before = KDF_RUNS.with(|n| n.get());
            assert_eq!(db.verify(name, password).is_some(), ok);
            assert_eq!(KDF_RUNS.with(|n| n.get()) - before, 1, "{name}/{password}");
        }
    }
}
