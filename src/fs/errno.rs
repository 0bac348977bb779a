//! The one place where errors become errno values for the mount.
//!
//! [`store_errno`] maps [`StoreError`] variants to distinct, meaningful errno values;
//! [`VfsError`] is what the view ([`super::vfs`]) returns and carries either a
//! decision of its own (EROFS, EINVAL, ...) or a store error. Anything unexpected is
//! EIO with a log line, never a silent ENOENT.

use crate::error::ErrorKind;
use crate::store::StoreError;

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
    /// EISDIR: a directory where a file was expected.
    #[error("is a directory")]
    IsDir,
    /// ENODATA: no extended attribute of that name.
    #[error("no such attribute")]
    NoXattr,
    /// A store operation failed; mapped by [`store_errno`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a blob file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A lookup under a pull-through registry failed: the errno
    /// `super::pull_through` chose (and logged), and why.
    #[error("{1}")]
    PullThrough(i32, String),
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
            VfsError::IsDir => libc::EISDIR,
            VfsError::NoXattr => libc::ENODATA,
            VfsError::Store(error) => store_errno(error),
            VfsError::PullThrough(errno, _) => *errno,
            VfsError::Io(error) => match (error.raw_os_error(), ErrorKind::of_io(error)) {
                (Some(code), _) if code == libc::ENOENT => libc::ENOENT,
                (_, Some(ErrorKind::NoSpace)) => libc::ENOSPC,
                (_, Some(ErrorKind::PermissionDenied)) => libc::EACCES,
                _ => {
                    log::error!("blob I/O: {error}");
                    libc::EIO
                }
            },
        }
    }
}

/// Maps a store error to errno by its [`ErrorKind`]: NotFound ENOENT, AlreadyExists
/// EEXIST, Busy EBUSY, NotEmpty ENOTEMPTY, InvalidInput EINVAL, NoSpace ENOSPC,
/// PermissionDenied EACCES; anything else (bad stored data included) is EIO and
/// logged, because it means the store itself is in trouble.
pub fn store_errno(error: &StoreError) -> i32 {
    match error.kind() {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::AlreadyExists => libc::EEXIST,
        ErrorKind::Busy => libc::EBUSY,
        ErrorKind::NotEmpty => libc::ENOTEMPTY,
        ErrorKind::InvalidInput => libc::EINVAL,
        ErrorKind::NoSpace => {
            log::error!("{error}");
            libc::ENOSPC
        }
        ErrorKind::PermissionDenied => {
            log::error!("{error}");
            libc::EACCES
        }
        _ => {
            log::error!("store: {error}");
            libc::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceError;
    use crate::store::CasError;

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
            (
                StoreError::Cas(CasError::Io {
                    path: "tmp/blob".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                }),
                libc::ENOSPC,
            ),
            (
                StoreError::BadImage {
                    what: "x".into(),
                    problem: "y".into(),
                },
                libc::EIO,
            ),
        ];
        for (error, errno) in cases {
            assert_eq!(store_errno(&error), errno, "{error:?}");
            assert_eq!(VfsError::Store(error).errno(), errno);
        }
    }
}
