//! One user's storage: their home, their partial uploads, and the quota
//! bookkeeping all their sessions share.
//!
//! The numbers live on the loop thread (an `Rc<RefCell<Account>>` per
//! user); the directory handles are `Arc<Dir>`, so a job on a worker can
//! take its own reference to the home without borrowing the account.
//!
//! ```text
//!   quota ≥ used + reserved + parked
//!           │      │          └ partial files of unfinished uploads
//!           │      └ promised to uploads in progress (by their length)
//!           └ bytes of files in the home
//! ```

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use cap_std::fs::Dir;
use log::info;

use skiff::proto::Code;

/// One user's storage, shared by all their sessions.
pub struct Account {
    /// The user's home: every path they name is resolved beneath it.
    pub home: Arc<Dir>,
    /// Partial uploads, outside the home so `ls` never shows them.
    pub partial: Arc<Dir>,
    /// Bytes stored in the home.
    pub used: u64,
    /// Bytes promised to uploads in progress.
    pub reserved: u64,
    /// Bytes in partial uploads no connection is sending: kept so the
    /// upload can resume, and counted against the quota meanwhile (else
    /// abandoned uploads could fill the disk past any quota). A `put`
    /// that needs their room discards them, oldest first.
    pub parked: u64,
    /// Partial files that an upload has claimed (see `upload::Claim`):
    /// never shared, never discarded.
    pub active: Vec<String>,
    /// Paths of the home an upload or an `rm` is changing now (see
    /// [`PathLock`]).
    pub changing: Vec<String>,
    /// Most bytes the home may hold (None: unlimited).
    pub quota: Option<u64>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("used", &self.used)
            .field("reserved", &self.reserved)
            .field("parked", &self.parked)
            .field("quota", &self.quota)
            .finish()
    }
}

impl Account {
    /// Opens (creating if needed) the home and partial directories of
    /// `user` and measures what they hold. It walks the whole home, so it
    /// runs on a worker, once per user per server start; after that
    /// `used` is kept up to date by put and rm.
    pub fn open(data_dir: &Path, user: &str, quota: Option<u64>) -> io::Result<Account> {
        let authority = cap_std::ambient_authority();
        let home_path = crate::users::UserDb::home(data_dir, user);
        let partial_path = data_dir.join("partial").join(user);
        // Private like the homes: partial uploads are user data too.
        use std::os::unix::fs::DirBuilderExt;
        for p in [&home_path, &partial_path] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)?;
        }
        let home = Dir::open_ambient_dir(&home_path, authority)?;
        let partial = Dir::open_ambient_dir(&partial_path, authority)?;
        let used = disk_usage(&home)?;
        let parked = disk_usage(&partial)?;
        Ok(Account {
            home: Arc::new(home),
            partial: Arc::new(partial),
            used,
            reserved: 0,
            parked,
            active: Vec::new(),
            changing: Vec::new(),
            quota,
        })
    }

    /// Whether `need` more bytes fit in the quota, given that `own_parked`
    /// of the parked bytes belong to the upload asking (they move into its
    /// reservation). Saturating: a user without a quota always fits, and
    /// no sum can wrap around.
    pub fn fits(&self, need: u64, own_parked: u64) -> bool {
        let Some(quota) = self.quota else {
            return true;
        };
        let held = self
            .used
            .saturating_add(self.reserved)
            .saturating_add(self.parked.saturating_sub(own_parked));
        held.saturating_add(need) <= quota
    }

    /// How many parked bytes must go for `need` to fit (0 if it fits).
    pub fn shortfall(&self, need: u64, own_parked: u64) -> u64 {
        let Some(quota) = self.quota else {
            return 0;
        };
        let held = self
            .used
            .saturating_add(self.reserved)
            .saturating_add(self.parked.saturating_sub(own_parked));
        held.saturating_add(need).saturating_sub(quota)
    }
}

/// A path of the home that one upload (from `put` until it lands or
/// fails) or one `rm` is changing. `used` is adjusted by the size of the
/// file a rename replaces or an unlink removes, measured on a worker just
/// before; two of them at once on one path would both count the same old
/// file. So while the lock lives, another `put` or `rm` of the path gets
/// `too_busy`; dropping the lock releases it.
#[derive(Debug)]
pub struct PathLock {
    account: Rc<RefCell<Account>>,
    path: String,
}

impl PathLock {
    /// Locks `path` (virtual) of `account`'s home, or says who holds it.
    pub fn take(account: &Rc<RefCell<Account>>, path: &str) -> Result<PathLock, (Code, String)> {
        let mut a = account.borrow_mut();
        if a.changing.iter().any(|p| p == path) {
            return Err((
                Code::TooBusy,
                format!(
                    "{path}: another upload or rm of it is in progress; try again when it is done"
                ),
            ));
        }
        a.changing.push(path.to_string());
        Ok(PathLock {
            account: account.clone(),
            path: path.to_string(),
        })
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        let mut a = self.account.borrow_mut();
        if let Some(i) = a.changing.iter().position(|p| *p == self.path) {
            a.changing.swap_remove(i);
        }
    }
}

/// Bytes of regular files beneath `dir`, at any depth.
///
/// Depth-first with an explicit stack instead of recursion, so a home
/// nested 100,000 levels deep cannot overflow the worker's stack, and
/// with no depth cap, so no file escapes the count. Each pending
/// subdirectory is held as (its parent's handle, its name) and opened
/// only when its turn comes: open descriptors grow with the depth of the
/// tree, not with its width. Symlinks and special files count nothing.
fn disk_usage(dir: &Dir) -> io::Result<u64> {
    let mut total: u64 = 0;
    let mut pending: Vec<(Arc<Dir>, OsString)> = Vec::new();
    let mut current = Arc::new(dir.try_clone()?);
    loop {
        for entry in current.entries()? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push((current.clone(), entry.file_name()));
            } else if kind.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
        let Some((parent, name)) = pending.pop() else {
            return Ok(total);
        };
        current = Arc::new(parent.open_dir(&name)?);
    }
}

/// Deletes parked partial uploads in `partial`, oldest first, until
/// `want` bytes are freed or none is left; names in `spare` (claimed by
/// uploads in progress) are never touched. Returns the bytes freed. For a
/// worker: it lists and unlinks.
pub fn discard_parked(partial: &Dir, want: u64, spare: &[String]) -> u64 {
    let Ok(entries) = partial.entries() else {
        return 0;
    };
    let mut parked: Vec<(std::time::SystemTime, String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            let when = meta.modified().ok()?.into_std();
            Some((when, name, meta.len()))
        })
        .filter(|(_, name, _)| !spare.contains(name))
        .collect();
    parked.sort();
    let mut freed: u64 = 0;
    for (_, name, len) in parked {
        if freed >= want {
            break;
        }
        if partial.remove_file(&name).is_ok() {
            info!("discarded the parked partial upload {name} ({len} bytes) for room");
            freed = freed.saturating_add(len);
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(quota: Option<u64>, used: u64, reserved: u64, parked: u64) -> Account {
        let dir = std::env::temp_dir();
        let open = || Arc::new(Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).unwrap());
        Account {
            home: open(),
            partial: open(),
            used,
            reserved,
            parked,
            active: Vec::new(),
            changing: Vec::new(),
            quota,
        }
    }

    #[test]
    fn no_quota_always_fits_even_with_parked_bytes() {
        let a = account(None, u64::MAX, u64::MAX, u64::MAX);
        assert!(a.fits(u64::MAX, 5));
        assert_eq!(a.shortfall(u64::MAX, 0), 0);
    }

    #[test]
    fn own_parked_bytes_are_not_counted_twice() {
        let a = account(Some(100), 40, 0, 50);
        assert!(!a.fits(60, 0));
        assert_eq!(a.shortfall(60, 0), 50);
        assert!(a.fits(60, 50));
        assert!(!a.fits(61, 50));
        assert_eq!(a.shortfall(61, 50), 1);
    }

    #[test]
    fn usage_counts_files_at_any_depth() {
        let root = std::env::temp_dir().join(format!("skiff-usage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut deep = root.clone();
        for _ in 0..200 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.join("top"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
        assert_eq!(disk_usage(&dir).unwrap(), 1024);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
