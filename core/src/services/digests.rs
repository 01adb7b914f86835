//! MD5s of stored files: computed at most once per file content, shared
//! by every `get` that asks, and kept in a cache.
//!
//! A `get` answers with the whole file's MD5 before the first body byte,
//! so an unhashed file must be read once in full first. That is a job for
//! a worker (see [`crate::pool`]); this module makes sure that 200 clients
//! fetching the same new 64 MiB file cost one hash, not 200:
//!
//! - the cache maps a file's content identity ([`FileKey`]) to its MD5;
//! - a *flight* is a hash in progress: the first worker to need a digest
//!   computes it, later ones wait for that flight's result instead of
//!   reading the file again, then everybody finds it in the cache.
//!
//! The cache is behind a `Mutex` because the loop (uploads verified on
//! arrival) and the workers both fill it; each lock is held for a map
//! lookup or insert, never across I/O.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use md5::{Digest, Md5};

/// Cached MD5s kept at most (one entry is ~64 bytes).
const MD5_CACHE_MAX: usize = 65536;
/// Bytes read per `read_at` while hashing.
const READ_CHUNK: usize = 64 * 1024;

/// Identity of a file's content: a changed file gets a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    /// The file's length, which is also how much a hash reads.
    pub len: u64,
    mtime_ns: i128,
}

impl FileKey {
    /// The key of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A hash in progress, and its result once there.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Result<[u8; 16], String>>>,
    done: Condvar,
}

/// Digest by (device, inode), with the full key to check it is current:
/// one entry per file, however often it changes.
type Cache = HashMap<(u64, u64), (FileKey, [u8; 16])>;

/// The cache and the flights.
#[derive(Default)]
pub struct Digests {
    /// Known digests.
    cache: Mutex<Cache>,
    /// Hashes being computed now, by key.
    flights: Mutex<HashMap<FileKey, Arc<Flight>>>,
}

/// Locks, shrugging off poisoning: the maps stay consistent whatever a
/// panicking holder did (each update is one insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Digests {
    /// The cached MD5 of the content `key` names, if known.
    pub fn cached(&self, key: &FileKey) -> Option<[u8; 16]> {
        lock(&self.cache)
            .get(&(key.dev, key.ino))
            .filter(|(k, _)| k == key)
            .map(|(_, d)| *d)
    }

    /// Remembers the MD5 of `key`'s content.
    pub fn remember(&self, key: FileKey, digest: [u8; 16]) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MD5_CACHE_MAX && !cache.contains_key(&(key.dev, key.ino)) {
            // Forget an arbitrary entry: a miss only costs one re-hash.
            if let Some(k) = cache.keys().next().copied() {
                cache.remove(&k);
            }
        }
        cache.insert((key.dev, key.ino), (key, digest));
    }

    /// The MD5 of `file`, whose content is `key`: from the cache, from a
    /// hash another worker is computing right now, or hashed here. Blocks
    /// for as long as reading the file takes: for a worker only.
    pub fn digest_of(&self, file: &File, key: FileKey) -> Result<[u8; 16], String> {
        if let Some(d) = self.cached(&key) {
            return Ok(d);
        }
        let (flight, leader) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(key, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = lock(&flight.result);
            loop {
                if let Some(r) = result.as_ref() {
                    return r.clone();
                }
                result = flight.done.wait(result).unwrap_or_else(|e| e.into_inner());
            }
        }
        let result = hash_file(file, key.len);
        if let Ok(d) = &result {
            self.remember(key, *d);
        }
        *lock(&flight.result) = Some(result.clone());
        flight.done.notify_all();
        lock(&self.flights).remove(&key);
        result
    }
}

/// MD5 of the first `len` bytes of `file`, read with `pread` (the file's
/// position is left alone for the send that follows).
pub fn hash_file(file: &File, len: u64) -> Result<[u8; 16], String> {
    let (hasher, _) = hash_prefix(file, len).map_err(|e| format!("reading failed: {e}"))?;
    Ok(hasher.finalize().into())
}

/// Feeds the first `len` bytes of `file` to a new hasher; returns it with
/// the bytes it saw. Fewer than `len` bytes means the file shrank: an
/// error, since the digest would describe another file.
pub fn hash_prefix(file: &File, len: u64) -> io::Result<(Md5, u64)> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut done: u64 = 0;
    while done < len {
        let want = usize::try_from(len - done).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
        match file.read_at(&mut buf[..want], done) {
            Ok(0) => {
                return Err(io::Error::other(
                    "the file changed while it was being hashed",
                ));
            }
            Ok(got) => {
                hasher.update(&buf[..got]);
                done += got as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hasher, done))
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A digest from 32 hex digits.
pub fn parse_md5(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn md5_hex_round_trip() {
        let d: [u8; 16] = Md5::digest(b"hello").into();
        assert_eq!(hex(&d), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(parse_md5(&hex(&d)), Some(d));
        assert_eq!(parse_md5("xyz"), None);
        assert_eq!(parse_md5(&"g".repeat(32)), None);
        assert_eq!(parse_md5(&"é".repeat(16)), None);
    }

    #[test]
    fn many_askers_at_once_hash_the_file_once() {
        let path = std::env::temp_dir().join(format!("skiff-flight-{}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        let body = vec![7u8; 3 << 20];
        f.write_all(&body).unwrap();
        drop(f);
        let digests = Arc::new(Digests::default());
        let meta = std::fs::metadata(&path).unwrap();
        let key = FileKey::of(&meta);
        let want: [u8; 16] = Md5::digest(&body).into();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let d = digests.clone();
                let file = File::open(&path).unwrap();
                std::thread::spawn(move || d.digest_of(&file, key))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(want));
        }
        assert_eq!(digests.cached(&key), Some(want));
        assert!(lock(&digests.flights).is_empty());
        // A shorter file than its key says is an error, not a wrong digest.
        let file = File::open(&path).unwrap();
        assert!(hash_file(&file, (3 << 20) + 1).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
