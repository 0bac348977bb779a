//! Small wrappers over system calls that several modules need.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Free and total bytes of the filesystem holding `file`, as `df` shows them (space
/// reserved for root does not count as free).
pub(crate) fn filesystem_space(file: &File) -> io::Result<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs writes a statvfs into the pointer we own; the descriptor is
    // open for the duration of the call.
    let rc = unsafe { libc::fstatvfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize;
    Ok((
        stat.f_bavail.saturating_mul(block),
        stat.f_blocks.saturating_mul(block),
    ))
}

/// The free space to keep on a filesystem of `total` bytes when writing derived or
/// staged data: 1 GiB, or 5% on filesystems under 20 GiB.
pub(crate) fn keep_free(total: u64) -> u64 {
    (1u64 << 30).min(total / 20)
}
