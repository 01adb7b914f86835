//! State shared by every connection on the loop thread: the user
//! database, each user's account (home, quota), the cache of file
//! digests the workers share, the throttle of failed logins, and who is
//! online. Handlers reach it through [`crate::ctx::Ctx::services`].

pub mod account;
pub mod digests;
pub mod online;
pub mod throttle;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use crate::upload_pipe::PipeSlots;
use crate::users::UserDb;
use account::Account;
use digests::Digests;
use online::Online;
use throttle::Throttle;

/// State shared by every connection: users, their accounts, caches.
pub struct Services {
    /// Where users.json, homes and partial uploads live.
    pub data_dir: PathBuf,
    /// The user database (read at startup).
    pub users: UserDb,
    /// Accounts of users logged in at least once since startup.
    pub accounts: HashMap<String, Rc<RefCell<Account>>>,
    /// MD5 of stored files, shared with the workers, so `get` never
    /// hashes a file twice (not even two at once).
    pub digests: Arc<Digests>,
    /// Recent login failures per client address and user.
    pub throttle: Throttle,
    /// Sessions open per user, so `say` can tell when nobody will read.
    pub online: Online,
    /// Uploads receiving through pipes now (they are limited).
    pub upload_pipes: PipeSlots,
    /// Modification time of users.json when it was last read.
    users_mtime: Option<std::time::SystemTime>,
}

impl Services {
    /// Services over `data_dir` with the given users.
    pub fn new(data_dir: PathBuf, users: UserDb) -> Services {
        let users_mtime = Self::users_mtime(&data_dir);
        Services {
            data_dir,
            users,
            accounts: HashMap::new(),
            digests: Arc::default(),
            throttle: Throttle::default(),
            online: Online::default(),
            upload_pipes: PipeSlots::default(),
            users_mtime,
        }
    }

    fn users_mtime(data_dir: &std::path::Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(data_dir.join("users.json"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Rereads users.json if `skiffd user ...` changed it since, so that
    /// added users can log in without a restart and deleted or
    /// re-passworded ones lose their sessions. Costs one `stat` of the
    /// server's own file (in the page cache: no wait on a disk), done at
    /// each login and once a second by the reactor. True if the list was
    /// reloaded.
    pub fn reload_users_if_changed(&mut self) -> bool {
        let mtime = Self::users_mtime(&self.data_dir);
        if mtime == self.users_mtime {
            return false;
        }
        match UserDb::load(&self.data_dir) {
            Ok(users) => {
                log::info!("users.json changed: reloaded");
                self.users = users;
                self.users_mtime = mtime;
                true
            }
            Err(e) => {
                log::warn!("users.json changed but cannot be read ({e}); keeping the old list");
                false
            }
        }
    }
}
