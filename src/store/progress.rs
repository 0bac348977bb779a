//! How the store reports progress: a trait the library calls and a front end (the
//! CLI draws bars with indicatif) implements. The library never looks at a terminal.
//!
//! Shaped for transfers of many blobs at once (a pull fetches blobs in parallel):
//! every call names its blob, and calls may come from several threads.
//! Owns: the trait. Must not touch: terminals, the store's data.

use crate::digest::Digest;
use crate::store::BlobKind;

/// Receives the progress of an import (and of the blob transfers that follow it).
///
/// Every method has an empty default, so an implementation picks what it shows.
/// Calls are cheap and frequent (once per chunk read); they may come from several
/// threads at once, each about its own blob.
pub trait Progress: Send + Sync {
    /// Blob `digest` (of `kind`, `size` bytes by its descriptor) starts being read
    /// from the source.
    fn blob_started(&self, digest: &Digest, kind: BlobKind, size: u64) {
        let _ = (digest, kind, size);
    }
    /// `bytes` more bytes of blob `digest` were read from the source.
    fn blob_bytes(&self, digest: &Digest, bytes: u64) {
        let _ = (digest, bytes);
    }
    /// Blob `digest` is verified and stored.
    fn blob_done(&self, digest: &Digest) {
        let _ = digest;
    }
    /// Blob `digest` (`size` bytes) was stored already: nothing is transferred.
    fn blob_skipped(&self, digest: &Digest, kind: BlobKind, size: u64) {
        let _ = (digest, kind, size);
    }
    /// The operation ended, successfully or not: nothing more will be reported.
    fn finished(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A reader that reports the bytes read through it as progress of one blob, and
/// adds them to a running total shared by every blob of one transfer.
pub(crate) struct ProgressReader<'a, R> {
    pub(crate) inner: R,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) digest: Digest,
    pub(crate) total: &'a std::sync::atomic::AtomicU64,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.blob_bytes(&self.digest, n as u64);
        self.total
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
