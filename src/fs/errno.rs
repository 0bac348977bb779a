//! The one place where errors become errno values for the mount.
//!
//! [`store_errno`] maps [`StoreError`] variants to distinct, meaningful errno values;
//! [`VfsError`] is what the view ([`super::vfs`]) returns and carries either a
//! decision of its own (EROFS, EINVAL, ...) or a store error. Anything unexpected is
//! EIO with a log line, never a silent ENOENT.

use crate::store::{CasError, StoreError};

/// Why a view operation failed. Each variant names one errno.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VfsError {
    /// ENOENT: the name does not exist (any more).
    #[error("no such file or directory")]
    NotFound,
    /// EEXIST: the name is taken.
    #[error("already exists")]
    Exists,
    /// EINVAL: a bad name or a link target that names no tag or manifest.
    #[error("{0}")]
    Invalid(String),
    /// ENOTEMPTY: a directory that still holds something.
    #[error("directory not empty")]
    NotEmpty,
    /// EROFS: the mount does not allow this change.
    #[error("read-only")]
    ReadOnly,
    /// ENOTDIR: a path component is not a directory.
    #[error("not a directory")]
    NotDir,
    /// ENODATA: no extended attribute of that name.
    #[error("no such attribute")]
    NoXattr,
    /// A store operation failed; mapped by [`store_errno`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a blob file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl VfsError {
    /// The errno this error answers with.
    pub(crate) fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::Exists => libc::EEXIST,
            VfsError::Invalid(_) => libc::EINVAL,
            VfsError::NotEmpty => libc::ENOTEMPTY,
            VfsError::ReadOnly => libc::EROFS,
            VfsError::NotDir => libc::ENOTDIR,
            VfsError::NoXattr => libc::ENODATA,
            VfsError::Store(error) => store_errno(error),
            VfsError::Io(error) => match error.raw_os_error() {
                Some(code) if code == libc::ENOENT => libc::ENOENT,
                _ => {
                    log::error!("blob I/O: {error}");
                    libc::EIO
                }
            },
        }
    }
}

/// Maps a store error to errno: NotFound ENOENT, AlreadyExists EEXIST, Busy EBUSY,
/// NotEmpty ENOTEMPTY, Invalid and Reference EINVAL, NoSpace ENOSPC; anything else is EIO and logged,
/// because it means the store itself is in trouble.
pub fn store_errno(error: &StoreError) -> i32 {
    match error {
        StoreError::NotFound(_) => libc::ENOENT,
        StoreError::AlreadyExists(_) => libc::EEXIST,
        StoreError::Busy(_) => libc::EBUSY,
        StoreError::NotEmpty(_) => libc::ENOTEMPTY,
        StoreError::Invalid(_) | StoreError::Reference(_) => libc::EINVAL,
        StoreError::NoSpace(why) => {
            log::error!("{why}");
            libc::ENOSPC
        }
        // A blob deleted between lookup and open (its last tag went meanwhile): the
        // file is gone, nothing is broken.
        StoreError::Cas(CasError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            libc::ENOENT
        }
        other => {
            log::error!("store: {other}");
            libc::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceError;

    #[test]
    fn store_errors_map_to_distinct_errno() {
        let cases = [
            (StoreError::NotFound("x".into()), libc::ENOENT),
            (
                StoreError::Cas(CasError::Io {
                    path: "blob".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }),
                libc::ENOENT,
            ),
            (StoreError::AlreadyExists("x".into()), libc::EEXIST),
            (StoreError::Busy("x".into()), libc::EBUSY),
            (StoreError::NotEmpty("x".into()), libc::ENOTEMPTY),
            (StoreError::Invalid("x".into()), libc::EINVAL),
            (StoreError::NoSpace("x".into()), libc::ENOSPC),
            (
                StoreError::Reference(ReferenceError::BadTag("-".into())),
                libc::EINVAL,
            ),
            (StoreError::Import("x".into()), libc::EIO),
        ];
        for (error, errno) in cases {
            assert_eq!(store_errno(&error), errno, "{error:?}");
            assert_eq!(VfsError::Store(error).errno(), errno);
        }
    }
}
