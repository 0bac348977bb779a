//! Blob files only: `STORE/blobs/sha256/<hex>`, written through `STORE/tmp/`.
//!
//! A blob is hashed while it is written to a temp file inside the store, verified
//! against what the caller expects, fsynced, made read-only and renamed into place;
//! the directory is fsynced too. It is never modified in place. This module knows
//! nothing of metadata: whether a blob may be deleted is decided in `meta`/`Store`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::verify::VerifiedFiles;
use crate::digest::{Digest, Hasher};

/// Errors writing or reading blob files.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// I/O failure on a store path.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading the source of a blob failed.
    #[error("reading {what}: {source}")]
    Source {
        /// What was being read.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing a blob's temp file failed (a full disk shows here).
    #[error("{what}: writing {path}: {source}")]
    Write {
        /// The blob being written.
        what: String,
        /// The temp file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The bytes do not hash to the expected digest.
    #[error("{what}: digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// What was being written.
        what: String,
        /// The digest the descriptor promised.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// The byte count differs from the descriptor's size.
    #[error("{what}: size mismatch: descriptor says {expected} bytes, content has {actual}")]
    SizeMismatch {
        /// What was being written.
        what: String,
        /// The size the descriptor promised.
        expected: u64,
        /// The actual size.
        actual: u64,
    },
    /// A stored blob file no longer hashes to its name: damaged on disk.
    #[error("{path}: damaged: content hashes to {actual}")]
    Damaged {
        /// The blob file.
        path: PathBuf,
        /// What its bytes hash to now.
        actual: Digest,
    },
}

/// A write error naming the blob and its temp file. tempfile wraps the OS error
/// with the path; the path is said once, so unwrap it.
fn write_error(what: &str, path: &Path, source: io::Error) -> CasError {
    CasError::Write {
        what: what.to_string(),
        path: path.to_path_buf(),
        source: os_error(source),
    }
}

/// The OS error inside a wrapper that only added a path (tempfile's keeps the kind
/// but hides the code), else `error` itself.
fn os_error(error: io::Error) -> io::Error {
    if error.raw_os_error().is_some() {
        return error;
    }
    match error.kind() {
        io::ErrorKind::StorageFull => io::Error::from_raw_os_error(libc::ENOSPC),
        io::ErrorKind::QuotaExceeded => io::Error::from_raw_os_error(libc::EDQUOT),
        io::ErrorKind::PermissionDenied => io::Error::from_raw_os_error(libc::EACCES),
        _ => error,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CasError + '_ {
    move |source| CasError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the writer expects of a blob.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// The digest from the descriptor.
    pub digest: Digest,
    /// The size from the descriptor.
    pub size: u64,
}

/// The blob-file half of the store.
#[derive(Debug, Clone)]
pub struct Cas {
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    verified: Arc<VerifiedFiles>,
}

impl Cas {
    /// Opens (creating if needed) the blob and temp directories under `store_root`.
    pub fn open(store_root: &Path) -> Result<Self, CasError> {
        let blobs_dir = store_root.join("blobs").join("sha256");
        let tmp_dir = store_root.join("tmp");
        for dir in [&blobs_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(Cas {
            blobs_dir,
            tmp_dir,
            verified: Arc::new(VerifiedFiles::persistent(&store_root.join("verified.db"))),
        })
    }

    /// The directory holding blob files.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs_dir
    }

    /// The staging directory.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// Where the blob with `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir.join(digest.hex())
    }

    /// True when the blob file exists.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, CasError> {
        let path = self.path(digest);
        File::open(&path).map_err(io_err(&path))
    }

    /// Opens a blob for serving its bytes, having checked that they still hash to
    /// `digest`: the first open in this process hashes the whole file (about 0.6 s
    /// per GiB here), later opens of the unchanged file only `fstat` it. A damaged
    /// file is [`CasError::Damaged`], never handed out.
    pub fn open_verified(&self, digest: &Digest) -> Result<File, CasError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(io_err(&path))?;
        match self.verified.check(&file, digest.as_bytes()) {
            Ok(None) => Ok(file),
            Ok(Some(actual)) => {
                log::error!("blob {digest} is damaged on disk: its bytes hash to {actual}");
                Err(CasError::Damaged { path, actual })
            }
            Err(source) => Err(CasError::Io { path, source }),
        }
    }

    /// Opens a blob if it can be served without hashing it now (hashed before by
    /// this process, unchanged since); `Ok(None)` when [`Cas::open_verified`] has
    /// work to do.
    pub fn open_if_verified(&self, digest: &Digest) -> Result<Option<File>, CasError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(io_err(&path))?;
        match self.verified.is_verified(&file, digest.as_bytes()) {
            Ok(true) => Ok(Some(file)),
            Ok(false) => Ok(None),
            Err(source) => Err(CasError::Io { path, source }),
        }
    }

    /// The memo of files hashed by this process (blob files and unpacked content).
    pub(crate) fn verified_files(&self) -> &VerifiedFiles {
        &self.verified
    }

    /// Reads a whole blob into memory and checks its digest, refusing blobs larger
    /// than `limit`.
    pub fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, CasError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > limit {
            return Err(CasError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "blob larger than allowed"),
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            log::error!("blob {digest} is damaged on disk: its bytes hash to {actual}");
            return Err(CasError::Damaged { path, actual });
        }
        Ok(bytes)
    }

    /// Starts writing a blob: bytes go to a temp file in tmp/ and are hashed on the
    /// way; [`BlobWriter::finish`] verifies and renames it into place.
    pub fn writer(&self, expected: Option<Expected>, what: &str) -> Result<BlobWriter, CasError> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("blob-{}-", std::process::id()))
            .tempfile_in(&self.tmp_dir)
            .map_err(io_err(&self.tmp_dir))?;
        Ok(BlobWriter {
            temp: std::io::BufWriter::with_capacity(1 << 20, temp),
            hasher: Hasher::new(),
            expected,
            what: what.to_string(),
            blobs_dir: self.blobs_dir.clone(),
            verified: self.verified.clone(),
        })
    }

    /// Streams `reader` into the store, verifying it against `expected`.
    ///
    /// Returns the digest, the size and whether a new file was created (false when an
    /// identical blob was already present: the temp copy is dropped). On any mismatch
    /// nothing is left behind. `what` names the blob in errors.
    pub fn write(
        &self,
        reader: &mut dyn Read,
        expected: Option<Expected>,
        what: &str,
    ) -> Result<(Digest, u64, bool), CasError> {
        let mut writer = self.writer(expected, what)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CasError::Source {
                        what: what.to_string(),
                        source,
                    })
                }
            };
            writer.write_checked(&buf[..n])?;
        }
        writer.finish()
    }

    /// Writes an in-memory blob (manifests, configs), verifying it against `expected`.
    pub fn write_bytes(
        &self,
        bytes: &[u8],
        expected: Option<Expected>,
        what: &str,
    ) -> Result<(Digest, u64, bool), CasError> {
        self.write(&mut &bytes[..], expected, what)
    }

    /// Removes a blob file; a missing file is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), CasError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CasError::Io { path, source }),
        }
    }

    /// Every file in the blob directory: `Ok(digest)` for well-named ones, `Err(name)`
    /// for anything else (which no metadata can reference).
    pub fn list(&self) -> Result<Vec<Result<Digest, String>>, CasError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs_dir).map_err(io_err(&self.blobs_dir))? {
            let entry = entry.map_err(io_err(&self.blobs_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push(Digest::from_hex(&name).map_err(|_| name));
        }
        Ok(out)
    }

    /// Re-hashes a blob file. `Ok(None)` when it is missing.
    pub fn rehash(&self, digest: &Digest) -> Result<Option<(Digest, u64)>, CasError> {
        let path = self.path(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CasError::Io { path, source }),
        };
        Hasher::file(&file).map(Some).map_err(io_err(&path))
    }

    /// Makes file `path` (on the store's filesystem, already hashed by the caller
    /// and found to be blob `digest`) the blob itself: synced, made read-only,
    /// renamed into `blobs/`, and trusted by the verified-file memo (the caller
    /// wrote it alone). Saves copying a blob that was assembled in place (a lazy
    /// layer's fetched ranges). `false` when the blob was there already (the file
    /// is left where it is).
    pub(crate) fn adopt(&self, path: &Path, digest: &Digest) -> Result<bool, CasError> {
        let final_path = self.path(digest);
        if final_path.exists() {
            return Ok(false);
        }
        let file = File::open(path).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)).map_err(io_err(path))?;
        fs::rename(path, &final_path).map_err(io_err(&final_path))?;
        sync_dir(&self.blobs_dir)?;
        self.verified.trust(&file, digest.as_bytes());
        Ok(true)
    }

    /// Creates a file in tmp/ for callers staging derived data (exports, archives).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, CasError> {
        tempfile::Builder::new()
            .prefix(&format!("stage-{}-", std::process::id()))
            .tempfile_in(&self.tmp_dir)
            .map_err(io_err(&self.tmp_dir))
    }
}

/// A blob being written; see [`Cas::writer`]. Dropping it unfinished removes the
/// temp file.
pub struct BlobWriter {
    temp: std::io::BufWriter<tempfile::NamedTempFile>,
    hasher: Hasher,
    expected: Option<Expected>,
    what: String,
    blobs_dir: PathBuf,
    verified: Arc<VerifiedFiles>,
}

impl BlobWriter {
    /// Appends bytes, failing early when they exceed the expected size.
    pub fn write_checked(&mut self, data: &[u8]) -> Result<(), CasError> {
        self.hasher.update(data);
        if let Some(exp) = self.expected {
            if self.hasher.len() > exp.size {
                return Err(CasError::SizeMismatch {
                    what: self.what.clone(),
                    expected: exp.size,
                    actual: self.hasher.len(),
                });
            }
        }
        let result = self.temp.write_all(data);
        result.map_err(|source| write_error(&self.what, self.temp.get_ref().path(), source))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies digest and size, then makes the blob durable and visible. Returns the
    /// digest, size and whether a new file was created.
    pub fn finish(mut self) -> Result<(Digest, u64, bool), CasError> {
        let (digest, size) = self.hasher.finish();
        if let Some(exp) = self.expected {
            if size != exp.size {
                return Err(CasError::SizeMismatch {
                    what: self.what,
                    expected: exp.size,
                    actual: size,
                });
            }
            if digest != exp.digest {
                return Err(CasError::DigestMismatch {
                    what: self.what,
                    expected: exp.digest,
                    actual: digest,
                });
            }
        }
        let final_path = self.blobs_dir.join(digest.hex());
        if final_path.exists() {
            return Ok((digest, size, false));
        }
        if let Err(source) = self.temp.flush() {
            return Err(write_error(&self.what, self.temp.get_ref().path(), source));
        }
        let temp = self.temp.into_inner().map_err(|e| CasError::Io {
            path: final_path.clone(),
            source: e.into_error(),
        })?;
        temp.as_file().sync_all().map_err(io_err(temp.path()))?;
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o444))
            .map_err(io_err(temp.path()))?;
        let file = temp.persist(&final_path).map_err(|e| CasError::Io {
            path: final_path.clone(),
            source: e.error,
        })?;
        sync_dir(&self.blobs_dir)?;
        // Written and hashed by this process alone (a temp file nobody else opens):
        // its first open for serving need not hash it again (nor another process's:
        // large files go into the store's persisted memo).
        self.verified.trust(&file, digest.as_bytes());
        Ok((digest, size, true))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_checked(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// fsyncs a directory so a rename into it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CasError> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(io_err(dir))?;
    handle.sync_all().map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_and_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let exp = Expected { digest, size: 5 };
        let (d, n, created) = cas.write_bytes(b"hello", Some(exp), "x").unwrap();
        assert_eq!((d, n, created), (digest, 5, true));
        let (_, _, created) = cas.write_bytes(b"hello", Some(exp), "x").unwrap();
        assert!(!created);
        let mode = fs::metadata(cas.path(&digest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(cas.rehash(&digest).unwrap(), Some((digest, 5)));
    }

    #[test]
    fn open_verified_hashes_once_and_notices_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data = vec![7u8; 3 << 20];
        let (digest, _, _) = cas.write_bytes(&data, None, "x").unwrap();
        // Concurrent first opens all succeed (one hashes, the others wait for it).
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cas.open_verified(&digest).unwrap());
            }
        });
        assert_eq!(cas.verified.counts(), (1, 0));
        let mut read = Vec::new();
        cas.open_verified(&digest)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, data);

        // Damage after verification changes the file's stamp: hashed again, refused.
        let path = cas.path(&digest);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut damaged = data.clone();
        damaged[2 << 20] ^= 1;
        fs::write(&path, &damaged).unwrap();
        let error = cas.open_verified(&digest).unwrap_err();
        assert!(
            matches!(error, CasError::Damaged { actual, .. } if actual == Digest::of(&damaged))
        );
        assert!(error.to_string().contains("damaged"), "{error}");
        // Small blobs read into memory are checked too.
        assert!(matches!(
            cas.read(&digest, 4 << 20),
            Err(CasError::Damaged { .. })
        ));
        // Repaired bytes read again.
        fs::write(&path, &data).unwrap();
        assert!(cas.open_verified(&digest).is_ok());
        assert_eq!(cas.read(&digest, 4 << 20).unwrap(), data);
        // A missing blob is NotFound, as before.
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            cas.open_verified(&digest),
            Err(CasError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn mismatches_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let wrong = Expected {
            digest: Digest::of(b"other"),
            size: 5,
        };
        assert!(matches!(
            cas.write_bytes(b"hello", Some(wrong), "x"),
            Err(CasError::DigestMismatch { .. })
        ));
        let short = Expected {
            digest: Digest::of(b"hello"),
            size: 3,
        };
        assert!(matches!(
            cas.write_bytes(b"hello", Some(short), "x"),
            Err(CasError::SizeMismatch { .. })
        ));
        assert_eq!(fs::read_dir(cas.tmp_dir()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(cas.blobs_dir()).unwrap().count(), 0);
    }
}
