//! Small wrappers over system calls (and the one poison-ignoring `lock`) that several
//! modules need. Owns no state; must not know the store, the mount or the CLI.

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

/// Locks `mutex`, ignoring poison: every mutex in imagefs guards a cache or a table
/// whose state stays valid when a holder panics (SQLite rolls back an open
/// transaction when it is dropped), so the next caller carries on.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lowers the calling thread's CPU priority to the lowest (`nice` 19; Linux takes
/// a thread id for `setpriority`), for background work that should only use what
/// the foreground leaves. A hint: an error leaves the priority as it was.
pub(crate) fn lower_thread_priority() {
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}
