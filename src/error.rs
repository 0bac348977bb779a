//! The crate's error type, one variant per module error gathered here, and the one
//! place that classifies any error by what went wrong ([`ErrorKind`]).
//!
//! Policy: library code returns typed errors and never panics on bad input; every
//! error keeps its source and says what it was about (which blob, which file). The
//! FUSE layer turns an [`ErrorKind`] into errno (`fs::errno`), the CLI prints an
//! error once as `imagefs: <what>: <why>`. Must not know errno values or the CLI.

use std::io;

use crate::archive::{ArchiveError, LimitReason};
use crate::digest::DigestError;
use crate::image::ImageError;
use crate::layer::{LayerError, ZranError};
use crate::reference::ReferenceError;
use crate::store::{CasError, MetaError, StoreError};

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

/// What kind of failure an error is, whatever module it came from: what the mount
/// answers (errno) and what the CLI tells the user depend on this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something named does not exist (a tag, a repository, a blob file).
    NotFound,
    /// Something to create exists already.
    AlreadyExists,
    /// Still in use: referenced by something else, or the database is locked.
    Busy,
    /// A registry or repository that still holds something.
    NotEmpty,
    /// The request itself is wrong: a malformed reference, name or argument.
    InvalidInput,
    /// The data is wrong: an image, archive or layer that is malformed, or bytes that
    /// do not match their digest.
    InvalidData,
    /// The store's filesystem is full or over quota (ENOSPC, EDQUOT), or writing
    /// would leave less free space than the store keeps.
    NoSpace,
    /// The operating system refused access (EACCES, EPERM).
    PermissionDenied,
    /// Anything else: I/O failures, a damaged store, a bug.
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Busy => "busy",
            ErrorKind::NotEmpty => "not empty",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::InvalidData => "invalid data",
            ErrorKind::NoSpace => "no space left on device",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Other => "error",
        })
    }
}

impl ErrorKind {
    /// Classifies an I/O error by its OS error code, looking through wrappers that
    /// add a path (tempfile's, ours); `None` when it says nothing we tell apart.
    pub fn of_io(error: &io::Error) -> Option<ErrorKind> {
        if let Some(code) = error.raw_os_error() {
            return match code {
                libc::ENOSPC | libc::EDQUOT => Some(ErrorKind::NoSpace),
                libc::EACCES | libc::EPERM => Some(ErrorKind::PermissionDenied),
                _ => None,
            };
        }
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                return Some(ErrorKind::NoSpace)
            }
            io::ErrorKind::PermissionDenied => return Some(ErrorKind::PermissionDenied),
            _ => {}
        }
        let mut inner: Option<&(dyn std::error::Error + 'static)> = error
            .get_ref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(current) = inner {
            if let Some(io_error) = current.downcast_ref::<io::Error>() {
                return ErrorKind::of_io(io_error);
            }
            inner = current.source();
        }
        None
    }

    /// [`ErrorKind::of_io`], else `otherwise`.
    fn io_or(error: &io::Error, otherwise: ErrorKind) -> ErrorKind {
        ErrorKind::of_io(error).unwrap_or(otherwise)
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Digest(_) | Error::Reference(_) => ErrorKind::InvalidInput,
            Error::Store(error) => error.kind(),
            Error::Image(_) => ErrorKind::InvalidData,
            Error::Archive(error) => archive_kind(error),
            Error::Layer(error) => layer_kind(error),
        }
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StoreError::Busy(_) => ErrorKind::Busy,
            StoreError::NotEmpty(_) => ErrorKind::NotEmpty,
            StoreError::Invalid(_) | StoreError::Reference(_) => ErrorKind::InvalidInput,
            StoreError::NoSpace(_) => ErrorKind::NoSpace,
            StoreError::Meta(error) => meta_kind(error),
            StoreError::Cas(error) => cas_kind(error),
            StoreError::Archive(error) | StoreError::SelectImage { source: error, .. } => {
                archive_kind(error)
            }
            StoreError::Layer { source, .. } => layer_kind(source),
            StoreError::SourceRead { source, .. } => ErrorKind::io_or(source, ErrorKind::Other),
            StoreError::Io { source, .. } => ErrorKind::io_or(source, ErrorKind::Other),
            StoreError::Image { .. }
            | StoreError::BadImage { .. }
            | StoreError::DiffIdMismatch { .. }
            | StoreError::NoImage { .. }
            | StoreError::AmbiguousSource { .. }
            | StoreError::UnnamedImage { .. }
            | StoreError::BadImageName { .. } => ErrorKind::InvalidData,
            StoreError::LayerCache { .. } | StoreError::Panicked { .. } => ErrorKind::Other,
            StoreError::Remote(error) => remote_kind(error),
        }
    }
}

fn remote_kind(error: &crate::remote::RemoteError) -> ErrorKind {
    use crate::remote::ErrorKind as Remote;
    match error.kind() {
        Remote::NotFound => ErrorKind::NotFound,
        Remote::Unauthorized => ErrorKind::PermissionDenied,
        Remote::StoreOnly | Remote::Config => ErrorKind::InvalidInput,
        Remote::Protocol | Remote::Size | Remote::Digest => ErrorKind::InvalidData,
        _ => ErrorKind::Other,
    }
}

fn meta_kind(error: &MetaError) -> ErrorKind {
    use rusqlite::ErrorCode;
    match error {
        MetaError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => match failure.code {
            ErrorCode::DiskFull => ErrorKind::NoSpace,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::Busy,
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => ErrorKind::PermissionDenied,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    }
}

fn cas_kind(error: &CasError) -> ErrorKind {
    match error {
        // A blob deleted between lookup and open (its last tag went meanwhile): the
        // file is gone, nothing is broken.
        CasError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        CasError::Io { source, .. }
        | CasError::Source { source, .. }
        | CasError::Write { source, .. } => ErrorKind::io_or(source, ErrorKind::Other),
        CasError::DigestMismatch { .. } | CasError::SizeMismatch { .. } => ErrorKind::InvalidData,
        CasError::Damaged { .. } => ErrorKind::Other,
    }
}

fn archive_kind(error: &ArchiveError) -> ErrorKind {
    match error {
        ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        ArchiveError::Io { source, .. } => ErrorKind::io_or(source, ErrorKind::Other),
        ArchiveError::DecompressionLimit {
            reason: LimitReason::DiskSpace { .. },
            ..
        } => ErrorKind::NoSpace,
        ArchiveError::NoSuchImage { .. } | ArchiveError::AmbiguousName { .. } => {
            ErrorKind::InvalidInput
        }
        _ => ErrorKind::InvalidData,
    }
}

fn layer_kind(error: &LayerError) -> ErrorKind {
    match error {
        LayerError::Io(source) => ErrorKind::io_or(source, ErrorKind::Other),
        LayerError::Truncated { .. }
        | LayerError::BadHeader { .. }
        | LayerError::TooManyEntries(_) => ErrorKind::InvalidData,
        LayerError::CorruptIndex(_) | LayerError::NoContent(_) => ErrorKind::Other,
        LayerError::Seekable(ZranError::Io(source))
        | LayerError::Seekable(ZranError::Source { source, .. }) => {
            ErrorKind::io_or(source, ErrorKind::Other)
        }
        LayerError::Seekable(ZranError::OutOfRange { .. }) => ErrorKind::InvalidInput,
        LayerError::Seekable(_) => ErrorKind::InvalidData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_told_apart_through_wrappers() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(ErrorKind::of_io(&full), Some(ErrorKind::NoSpace));
        let quota = io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(ErrorKind::of_io(&quota), Some(ErrorKind::NoSpace));
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(ErrorKind::of_io(&denied), Some(ErrorKind::PermissionDenied));
        // tempfile wraps the OS error with the path, as this does.
        let wrapped = io::Error::new(full.kind(), io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(ErrorKind::of_io(&wrapped), Some(ErrorKind::NoSpace));
        assert_eq!(ErrorKind::of_io(&io::Error::other("x")), None);
    }

    #[test]
    fn store_errors_carry_their_kind() {
        let cases = [
            (StoreError::NotFound("x".into()), ErrorKind::NotFound),
            (StoreError::Busy("x".into()), ErrorKind::Busy),
            (StoreError::Invalid("x".into()), ErrorKind::InvalidInput),
            (
                StoreError::Cas(CasError::Io {
                    path: "tmp/blob".into(),
                    source: io::Error::from_raw_os_error(libc::ENOSPC),
                }),
                ErrorKind::NoSpace,
            ),
            (
                StoreError::Io {
                    path: "store".into(),
                    source: io::Error::from_raw_os_error(libc::EPERM),
                },
                ErrorKind::PermissionDenied,
            ),
            (
                StoreError::BadImage {
                    what: "x".into(),
                    problem: "y".into(),
                },
                ErrorKind::InvalidData,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(Error::from(error).kind(), kind);
        }
    }
}
