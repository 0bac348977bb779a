//! Hash-on-first-open for files named by the sha256 of their bytes: blob files and
//! unpacked content files. What the mount serves is checked once, and again
//! whenever the file changes.
//!
//! A file is remembered by `(dev, ino)` with the stamp it had when it hashed right:
//! size, mtime and ctime. Changing a read-only file's bytes takes a chmod and a write,
//! and replacing it takes a new inode; each moves the stamp, so the next open hashes
//! again. mtime can be set back by the file's owner (`touch -d`), but ctime cannot:
//! the kernel sets it to the current time on every change of the bytes or the
//! inode, and no system call sets it to another value (only changing the system
//! clock or writing the raw device, both root-only, could). Decay that leaves the
//! stamp alone (bit rot under a cached stamp) is what `imagefs fsck` is for.
//!
//! Stamps of files of at least [`PERSIST_MIN_SIZE`] are also kept in
//! `STORE/verified.db` (see `meta::verified`) by the store's own memo, so a blob
//! hashed by one process (an import writing it, or a mount) is not hashed again by
//! the next mount while it stays unchanged. Smaller files hash faster than a
//! database lookup and are only remembered in memory.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::Connection;

use super::meta::verified::{self as persisted, FileStamp};

use lru::LruCache;

use crate::digest::{Digest, Hasher};

/// How many verified files are remembered; older ones are simply hashed again on
/// their next open. About 100 bytes each.
const REMEMBERED: usize = 1 << 18;

type FileKey = (u64, u64);

/// Files at least this big have their stamps kept across processes (hashing less
/// costs less than a database lookup).
pub(crate) const PERSIST_MIN_SIZE: u64 = 1 << 20;

/// What a file looked like when it hashed right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    expected: [u8; 32],
}

impl Stamp {
    fn persisted(&self) -> FileStamp {
        FileStamp {
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
            digest: self.expected,
        }
    }

    fn of(meta: &Metadata, expected: &[u8; 32]) -> Self {
        Stamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            expected: *expected,
        }
    }
}

/// The verified-file memo; see the module documentation.
#[derive(Debug)]
pub(crate) struct VerifiedFiles {
    stamps: Mutex<LruCache<FileKey, Stamp>>,
    /// Files being hashed now: concurrent first opens of one big file hash it once.
    in_flight: Mutex<std::collections::HashMap<FileKey, Arc<Mutex<()>>>>,
    /// Where the persisted memo lives, for big files (see the module documentation).
    persist_path: Option<PathBuf>,
    /// The persisted memo, opened on first use (commands that never verify a big
    /// file never open it); `None` inside when it cannot be opened.
    persisted: OnceLock<Option<Mutex<Connection>>>,
}

impl Default for VerifiedFiles {
    fn default() -> Self {
        VerifiedFiles {
            // Unbounded, capped by hand: `LruCache::new` would allocate room for
            // every entry up front (about 10 MiB) in every process.
            stamps: Mutex::new(LruCache::unbounded()),
            in_flight: Mutex::default(),
            persist_path: None,
            persisted: OnceLock::new(),
        }
    }
}

use crate::sys::lock;

impl VerifiedFiles {
    /// A memo that also keeps the stamps of big files in the database at `path`;
    /// one that cannot be opened is logged and left out (files are hashed instead).
    pub(crate) fn persistent(path: &Path) -> Self {
        VerifiedFiles {
            persist_path: Some(path.to_path_buf()),
            ..VerifiedFiles::default()
        }
    }

    /// Whether `key` with `stamp` is known verified: in memory, or recorded by an
    /// earlier process (then remembered in memory too).
    fn known(&self, key: FileKey, stamp: &Stamp) -> bool {
        if lock(&self.stamps).get(&key) == Some(stamp) {
            return true;
        }
        let Some(conn) = self.persisted_for(stamp) else {
            return false;
        };
        let recorded = persisted::recorded(&lock(conn), key.0, key.1);
        match recorded {
            Ok(Some(row)) if row == stamp.persisted() => {
                self.remember_here(key, *stamp);
                true
            }
            Ok(_) => false,
            Err(error) => {
                log::debug!("verified-file memo: {error}");
                false
            }
        }
    }

    fn persisted_for(&self, stamp: &Stamp) -> Option<&Mutex<Connection>> {
        if stamp.size < PERSIST_MIN_SIZE {
            return None;
        }
        let path = self.persist_path.as_deref()?;
        self.persisted
            .get_or_init(|| match persisted::open_memo(path) {
                Ok(conn) => Some(Mutex::new(conn)),
                Err(error) => {
                    log::warn!("{}: {error}; big files are hashed again", path.display());
                    None
                }
            })
            .as_ref()
    }

    /// Checks that the open `file` hashes to `expected` (sha256). `Ok(None)` when it
    /// does, `Ok(Some(actual))` when its bytes hash to something else.
    pub(crate) fn check(&self, file: &File, expected: &[u8; 32]) -> io::Result<Option<Digest>> {
        self.check_with(file, expected, |file| {
            Hasher::file(file).map(|(digest, _)| digest)
        })
    }

    /// [`VerifiedFiles::check`] with another way of hashing the file (sparse content
    /// files are named by their map and data segments).
    pub(crate) fn check_with(
        &self,
        file: &File,
        expected: &[u8; 32],
        hash: impl FnOnce(&File) -> io::Result<Digest>,
    ) -> io::Result<Option<Digest>> {
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        let stamp = Stamp::of(&meta, expected);
        if self.known(key, &stamp) {
            return Ok(None);
        }
        let gate = lock(&self.in_flight).entry(key).or_default().clone();
        let result = {
            let _hashing = lock(&gate);
            if self.known(key, &stamp) {
                Ok(None)
            } else {
                crate::failpoint::hit("verify.hash");
                hash(file).map(|actual| {
                    if actual.as_bytes() == expected {
                        self.remember(key, stamp);
                        None
                    } else {
                        Some(actual)
                    }
                })
            }
        };
        let mut in_flight = lock(&self.in_flight);
        // The map's reference plus ours: nobody else waits on this gate.
        if Arc::strong_count(&gate) == 2 {
            in_flight.remove(&key);
        }
        result
    }

    /// Whether `file` is known to hash to `expected` without hashing it now.
    pub(crate) fn is_verified(&self, file: &File, expected: &[u8; 32]) -> io::Result<bool> {
        let meta = file.metadata()?;
        let stamp = Stamp::of(&meta, expected);
        Ok(self.known((meta.dev(), meta.ino()), &stamp))
    }

    /// Records `file` as holding the bytes that hash to `expected`, for a file this
    /// process has just written and hashed itself.
    pub(crate) fn trust(&self, file: &File, expected: &[u8; 32]) {
        if let Ok(meta) = file.metadata() {
            self.remember((meta.dev(), meta.ino()), Stamp::of(&meta, expected));
        }
    }

    fn remember(&self, key: FileKey, stamp: Stamp) {
        if let Some(conn) = self.persisted_for(&stamp) {
            if let Err(error) = persisted::record(&lock(conn), key.0, key.1, &stamp.persisted()) {
                log::debug!("verified-file memo: {error}");
            }
        }
        self.remember_here(key, stamp);
    }

    /// Remembers in memory only.
    fn remember_here(&self, key: FileKey, stamp: Stamp) {
        let mut stamps = lock(&self.stamps);
        stamps.put(key, stamp);
        while stamps.len() > REMEMBERED {
            stamps.pop_lru();
        }
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (lock(&self.stamps).len(), lock(&self.in_flight).len())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fs::{self, File};
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn hashing<'a>(count: &'a Cell<u32>) -> impl FnOnce(&File) -> io::Result<Digest> + 'a {
        move |file| {
            count.set(count.get() + 1);
            Hasher::file(file).map(|(digest, _)| digest)
        }
    }

    #[test]
    fn big_files_stay_verified_across_processes_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("verified.db");
        let path = dir.path().join("blob");
        let data = vec![3u8; 2 << 20];
        fs::write(&path, &data).unwrap();
        let expected = *Digest::of(&data).as_bytes();
        let hashed = Cell::new(0);

        let first = VerifiedFiles::persistent(&db);
        let file = File::open(&path).unwrap();
        assert_eq!(
            first
                .check_with(&file, &expected, hashing(&hashed))
                .unwrap(),
            None
        );
        assert_eq!(hashed.get(), 1);

        // Another process (a new memo on the same database) trusts the stamp.
        let second = VerifiedFiles::persistent(&db);
        assert!(second.is_verified(&file, &expected).unwrap());
        assert_eq!(
            second
                .check_with(&file, &expected, hashing(&hashed))
                .unwrap(),
            None
        );
        assert_eq!(hashed.get(), 1);
        // Not for another digest.
        assert!(!second.is_verified(&file, &[0u8; 32]).unwrap());

        // Bytes changed and mtime put back: ctime still moved, so it is hashed again
        // and refused.
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut damaged = data.clone();
        damaged[1 << 20] ^= 1;
        fs::write(&path, &damaged).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let third = VerifiedFiles::persistent(&db);
        let file = File::open(&path).unwrap();
        assert!(!third.is_verified(&file, &expected).unwrap());
        let actual = third
            .check_with(&file, &expected, hashing(&hashed))
            .unwrap();
        assert_eq!(actual, Some(Digest::of(&damaged)));
        assert_eq!(hashed.get(), 2);
    }

    #[test]
    fn small_files_are_remembered_in_memory_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("verified.db");
        let path = dir.path().join("small");
        fs::write(&path, b"small").unwrap();
        let expected = *Digest::of(b"small").as_bytes();
        let hashed = Cell::new(0);
        let file = File::open(&path).unwrap();
        let first = VerifiedFiles::persistent(&db);
        first
            .check_with(&file, &expected, hashing(&hashed))
            .unwrap();
        first
            .check_with(&file, &expected, hashing(&hashed))
            .unwrap();
        assert_eq!(hashed.get(), 1);
        let second = VerifiedFiles::persistent(&db);
        second
            .check_with(&file, &expected, hashing(&hashed))
            .unwrap();
        assert_eq!(hashed.get(), 2);
        // Nothing needed the database: it was never made.
        assert!(!db.exists());
    }
}
