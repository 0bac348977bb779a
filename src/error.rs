//! The crate's error type: one variant per module error, gathered here.
//!
//! Policy: library code returns typed errors and never panics on bad input. The FUSE
//! layer maps them to errno in one place (`fs::errno`), the CLI prints them once as
//! `imagefs: <what>: <why>`.

use crate::archive::ArchiveError;
use crate::digest::DigestError;
use crate::image::ImageError;
use crate::layer::LayerError;
use crate::reference::ReferenceError;
use crate::store::StoreError;

/// Any imagefs error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A malformed reference or name.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Malformed or unsupported image JSON.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An import source or export target that could not be read or written.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A layer that cannot be read, indexed or cached.
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
