//! The FUSE mount (SPEC section 3): the only module that imports `fuser`.
//!
//! - [`nodes`]: every kind of node of the tree, each described once (name,
//!   children, attributes, link target, content, accepted writes) behind one trait;
//!   adding a kind of directory means adding one module there and registering it.
//! - [`vfs`]: the tree as a view over the store, knowing nothing of FUSE: its
//!   caches of store reads, kernel references and the sweep; [`read`] and
//!   [`write`] are its operations, [`links`] resolves link targets.
//! - [`inodes`]: the inode table (numbers follow the kernel's lookup counts).
//! - [`attr`]: the plain types answers are made of (attributes, entries).
//! - [`image_view`]: the image views `rootfs/` and `layers/NNN/files/`: cached trees
//!   and file contents from the unpack cache.
//! - [`fuse`]: the thin adapter: handle tables, passthrough, TTLs, replies.
//! - [`errno`]: the one mapping from errors to errno values.
//! - [`pull_through`]: `mount --pull-through`: lookups of tags the store lacks
//!   under the named registries pull them (lazily), off the FUSE workers.
//! - this file: mount plumbing: options, foreground mount with clean unmount on
//!   SIGINT/SIGTERM, background mount for tests and embedders, and [`unmount`],
//!   which also cleans up after a daemon that died.
//!
//! Caching: everything under `manifests/sha256:<hex>/` is immutable and cached by
//! the kernel for a day (entries, attributes, and the contents of files under
//! 1 MiB with `FOPEN_KEEP_CACHE`; bigger files use passthrough). The kernel keeps
//! every directory listing (no OPENDIR at all: see `fuse::ImageFs::opendir`), and
//! link targets (`FUSE_CACHE_SYMLINKS`). The registry tree (registries,
//! repositories, `tags/`, `manifests/`, tags) is cached for a minute too, and
//! [`DirInvalidator`] drops exactly what changed when the store changes, so
//! changes by other processes show within 1 s. Listings carry attributes
//! (READDIRPLUS).
//!
//! Memory: the daemon follows the kernel's lookup counts and FORGETs (see [`inodes`]);
//! an inode the kernel no longer holds keeps its number (stable while mounted, as
//! SPEC asks) in a small table entry until a sweep finds its thing gone from the
//! store. Everything big sits in bounded caches, so a mount browsed for days
//! levels off. The hidden extended attribute
//! `user.imagefs.stats` of the mount root shows the sizes (see [`fuse`]).
//!
//! The unpack cache (`STORE/cache/`) is kept under [`MountOptions::cache_size`]:
//! after every layer unpack and every [`TRIM_INTERVAL`] from a background thread
//! (other processes add to the cache too).

mod attr;
mod errno;
mod fuse;
mod image_view;
mod inodes;
mod layout;
mod links;
mod nodes;
mod pull_through;
mod read;
mod vfs;
#[cfg(test)]
mod vfs_tests;
mod write;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::store::{Store, DEFAULT_CACHE_SIZE};

pub use pull_through::{PullThroughOptions, FAILURE_PERIOD, MISS_PERIOD};

// The mount's tables stay consistent across a panic of another holder (each
// update is one insert or remove), so a poisoned lock is taken as it is.
use crate::sys::lock;

/// Default number of threads serving requests.
pub const DEFAULT_THREADS: usize = 4;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let users other than the mount owner in (`allow_other`); off by default.
    pub allow_other: bool,
    /// Refuse every change with EROFS (also mounts with `ro`).
    pub read_only: bool,
    /// Threads serving FUSE requests.
    pub threads: usize,
    /// Cap on `STORE/cache/` in bytes; `None` means [`DEFAULT_CACHE_SIZE`] (the CLI
    /// fills in `$IMAGEFS_CACHE_SIZE`).
    pub cache_size: Option<u64>,
    /// `--pull-through`: registries whose tags the store lacks are pulled when
    /// looked up (see [`PullThroughOptions`]); `None`: the mount never goes to the
    /// network.
    pub pull_through: Option<PullThroughOptions>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            threads: DEFAULT_THREADS,
            cache_size: None,
            pull_through: None,
        }
    }
}

/// Errors of mount plumbing (requests inside a mount answer errno instead).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The mountpoint is unusable.
    #[error("{}: {reason}", path.display())]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// mount(2) or the FUSE session failed.
    #[error("mounting {}: {source}", path.display())]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Nothing is mounted there.
    #[error("{}: not mounted", .0.display())]
    NotMounted(PathBuf),
    /// Unmounting failed.
    #[error("unmounting {}: {reason}", path.display())]
    Unmount {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--pull-through` names something that cannot be pulled from.
    #[error("--pull-through: {0}")]
    PullThrough(String),
    /// Other I/O (signal pipe, mount table).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn io_error(what: &str) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        what: what.to_string(),
        source,
    }
}

/// Kernel-side facts about a running mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassthroughState {
    /// The session has not finished its handshake yet.
    Unknown,
    /// Reads are served by imagefs from the blob files.
    Off,
    /// Reads go straight to the blob files in the kernel (FUSE passthrough).
    On,
}

fn fuser_config(options: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("imagefs".into()),
        // Kernel option: the mount shows as type `fuse.imagefs`.
        MountOption::CUSTOM("subtype=imagefs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if options.read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config
}

/// How many stacked filesystems lie below the blob files (1 when the store is on
/// overlayfs): passthrough must declare one more than that.
fn backing_stack_depth(store_root: &Path) -> u32 {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    let c_path = match CString::new(store_root.as_os_str().as_bytes()) {
        Ok(path) => path,
        Err(_) => return 0,
    };
    let mut out = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a valid C string and writable memory of the right size.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    let stat = unsafe { out.assume_init() };
    u32::from(stat.f_type == OVERLAYFS_SUPER_MAGIC)
}

/// How often the mount trims `cache/` to its cap besides after its own unpacks.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// A background thread trimming the cache every [`TRIM_INTERVAL`]; it stops when
/// this is dropped (with the filesystem, at unmount).
#[derive(Debug)]
pub(crate) struct Trimmer {
    _stop: mpsc::Sender<()>,
}

impl Trimmer {
    fn start(store: Arc<Store>, cap: u64) -> Option<Trimmer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("imagefs-trim".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TRIM_INTERVAL)
                {
                    match store.trim_cache(cap) {
                        Ok(0) => {}
                        Ok(freed) => log::info!("cache trimmed to its cap: {freed} bytes evicted"),
                        Err(error) => log::error!("trimming the cache: {error}"),
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Trimmer { _stop: stop }),
            Err(error) => {
                log::error!("cache trimming thread: {error}; trimming only after unpacks");
                None
            }
        }
    }
}

/// How often the mount looks for changes to the store made by anyone.
pub const CHANGE_POLL: Duration = Duration::from_millis(200);

/// The kernel keeps every directory listing (see `fuse::ImageFs::opendir`), and
/// the names, attributes and link targets of the registry tree (root, registries,
/// repository paths, `tags/`, `manifests/`, tags) for [`fuse::EXPLICIT_TTL`]. This
/// thread tells it to forget exactly what changed whenever the store's change
/// token moves (a commit by any process, this one included): [`vfs::Vfs::refresh`]
/// finds the repositories whose tags changed and the namespaces that gained or
/// lost a repository, and the kernel is sent `inval_entry` for changed names and
/// `inval_inode` for changed nodes (their attributes, listings and link targets).
/// With [`CHANGE_POLL`], a change shows in every mount within 1 s. If the store
/// cannot be read, every such node the kernel holds is dropped instead. The thread
/// ends with the filesystem.
struct DirInvalidator;

/// Tells the kernel to forget one changed node or name. ENOENT means the kernel no
/// longer has it: nothing to drop.
fn invalidate(notifier: &fuser::Notifier, item: &vfs::Stale) {
    let _ = match item {
        vfs::Stale::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
        vfs::Stale::Entry(dir, name) => {
            notifier.inval_entry(fuser::INodeNo(*dir), std::ffi::OsStr::new(name))
        }
    };
}

impl DirInvalidator {
    fn start(view: std::sync::Weak<vfs::Vfs>, notifier: fuser::Notifier) {
        // The token and the state of the store as the mount starts (before it
        // answers anything): any later change is compared with these.
        let mut seen = view.upgrade().and_then(|v| {
            if let Err(error) = v.refresh() {
                log::debug!("change watcher: {error}");
            }
            v.store().change_token().ok()
        });
        let rounds = view
            .upgrade()
            .map(|v| v.changes.clone())
            .unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("imagefs-changes".into())
            .spawn(move || {
                // What the last change dropped is dropped once more a round later: a
                // reply computed just before a commit can reach the kernel just after
                // that commit's invalidation, and would otherwise be kept for the
                // whole TTL.
                let mut again: Vec<vfs::Stale> = Vec::new();
                loop {
                    // Waits holding no reference to the view, so that it is dropped
                    // (and its staging files removed) as soon as the filesystem ends.
                    let request = rounds.next_round(CHANGE_POLL);
                    let Some(view) = view.upgrade() else {
                        return;
                    };
                    for item in std::mem::take(&mut again) {
                        invalidate(&notifier, &item);
                    }
                    let token = match view.store().change_token() {
                        Ok(token) => token,
                        Err(error) => {
                            log::debug!("change token: {error}");
                            view.changes.round_done(request);
                            continue;
                        }
                    };
                    if seen == Some(token) {
                        view.changes.round_done(request);
                        continue;
                    }
                    let stale = view.refresh().unwrap_or_else(|error| {
                        log::warn!("change watcher: {error}; dropping every changing node");
                        view.changing_nodes()
                            .into_iter()
                            .map(vfs::Stale::Inode)
                            .collect()
                    });
                    view.count_invalidations(stale.len());
                    for item in &stale {
                        invalidate(&notifier, item);
                    }
                    again = stale;
                    seen = Some(token);
                    view.changes.round_done(request);
                }
            });
        if let Err(error) = spawned {
            log::error!("change watcher thread: {error}; the registry tree may stay stale");
        }
    }
}

/// Makes the filesystem and its session, mounted.
fn new_session(
    store: Arc<Store>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<(Session<fuse::ImageFs>, PathBuf, fuse::PassthroughReport), FsError> {
    let canonical = mountpoint.canonicalize().map_err(|e| FsError::Mountpoint {
        path: mountpoint.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !canonical.is_dir() {
        return Err(FsError::Mountpoint {
            path: mountpoint.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if let Some(through) = &options.pull_through {
        through
            .validate()
            .map_err(|e| FsError::PullThrough(e.to_string()))?;
    }
    let depth = backing_stack_depth(store.root());
    let cache_cap = options.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
    let trimmer = Trimmer::start(store.clone(), cache_cap);
    let mut view = vfs::Vfs::new(store, canonical.clone(), options.read_only, cache_cap);
    if let Some(through) = &options.pull_through {
        view = view.with_pull_through(through.clone());
    }
    let view = Arc::new(view);
    let (filesystem, report) = fuse::ImageFs::new(view.clone(), depth, trimmer);
    let session =
        Session::new(filesystem, &canonical, &fuser_config(options)).map_err(|source| {
            FsError::Mount {
                path: canonical.clone(),
                source,
            }
        })?;
    DirInvalidator::start(Arc::downgrade(&view), session.notifier());
    Ok((session, canonical, report))
}

fn passthrough_state(report: &fuse::PassthroughReport) -> PassthroughState {
    match report.load(Ordering::Relaxed) {
        1 => PassthroughState::Off,
        fuse::PASSTHROUGH_ON => PassthroughState::On,
        _ => PassthroughState::Unknown,
    }
}

/// A mount served by background threads; dropping it unmounts.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    passthrough: fuse::PassthroughReport,
}

impl MountHandle {
    /// The canonical mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether FUSE passthrough was negotiated with the kernel.
    pub fn passthrough(&self) -> PassthroughState {
        passthrough_state(&self.passthrough)
    }

    /// Unmounts and waits for the serving threads. A busy mount is detached lazily
    /// (it disappears from the namespace now, and ends when its last file closes).
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), FsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if is_mounted(&self.mountpoint).unwrap_or(false) {
            if let Err(error) = umount_path(&self.mountpoint, 0) {
                log::debug!("umount {}: {error}; detaching", self.mountpoint.display());
                unmount(&self.mountpoint)?;
            }
        }
        session.join().map_err(|source| FsError::Mount {
            path: self.mountpoint.clone(),
            source,
        })
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_inner() {
            log::warn!("{error}");
        }
    }
}

/// Mounts `store` at `mountpoint` and serves it from background threads until the
/// returned handle is dropped or [`MountHandle::unmount`] is called.
pub fn spawn_mount(
    store: Arc<Store>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<MountHandle, FsError> {
    let (session, canonical, report) = new_session(store, mountpoint, options)?;
    let session = session.spawn().map_err(|source| FsError::Mount {
        path: canonical.clone(),
        source,
    })?;
    Ok(MountHandle {
        session: Some(session),
        mountpoint: canonical,
        passthrough: report,
    })
}

/// Write end of the self-pipe the signal handler writes to (-1 when none).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_terminate(_signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Installs `handler` for SIGINT and SIGTERM; returns the previous actions.
fn set_signal_handlers(handler: libc::sighandler_t) -> [libc::sigaction; 2] {
    let mut previous = [unsafe { std::mem::zeroed::<libc::sigaction>() }; 2];
    for (slot, signal) in previous.iter_mut().zip([libc::SIGINT, libc::SIGTERM]) {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the
        // handler only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, slot);
        }
    }
    previous
}

fn restore_signal_handlers(previous: &[libc::sigaction; 2]) {
    for (action, signal) in previous.iter().zip([libc::SIGINT, libc::SIGTERM]) {
        // SAFETY: restoring actions that sigaction returned earlier.
        unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) };
    }
}

/// Mounts `store` at `mountpoint` and serves it on this thread until it is
/// unmounted (by [`unmount`], `umount`, or SIGINT/SIGTERM, which unmount cleanly).
pub fn mount_foreground(
    store: Arc<Store>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<(), FsError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a writable array of two ints, as pipe2 wants.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_error("signal pipe")(io::Error::last_os_error()));
    }
    let [read_fd, write_fd] = fds;
    let (mut session, canonical, report) = match new_session(store, mountpoint, options) {
        Ok(parts) => parts,
        Err(error) => {
            // SAFETY: both descriptors came from pipe2 above and are closed once.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
            return Err(error);
        }
    };
    log::info!(
        "mounted {} (passthrough {:?})",
        canonical.display(),
        passthrough_state(&report)
    );
    let mut unmounter = session.unmount_callable();
    SIGNAL_PIPE.store(write_fd, Ordering::Relaxed);
    let previous = set_signal_handlers(on_terminate as *const () as libc::sighandler_t);
    let watched = canonical.clone();
    let watcher = std::thread::Builder::new()
        .name("imagefs-signals".into())
        .spawn(move || loop {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid buffer from our own pipe.
            let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n != 1 || byte != 1 {
                return;
            }
            log::info!("signal received: unmounting {}", watched.display());
            if let Err(error) = unmounter.unmount() {
                log::info!("umount: {error}; detaching");
            }
            if is_mounted(&watched).unwrap_or(false) {
                if let Err(error) = unmount(&watched) {
                    log::error!("{error}");
                }
            }
        })
        .map_err(io_error("signal thread"));
    let result = match watcher {
        Ok(watcher) => {
            let served = session.run().map_err(|source| FsError::Mount {
                path: canonical.clone(),
                source,
            });
            // Wake the watcher with a "stop" byte and wait for it.
            let stop = 0u8;
            // SAFETY: writing one valid byte to our own pipe.
            unsafe { libc::write(write_fd, (&stop as *const u8).cast(), 1) };
            let _ = watcher.join();
            served
        }
        Err(error) => Err(error),
    };
    restore_signal_handlers(&previous);
    SIGNAL_PIPE.store(-1, Ordering::Relaxed);
    // SAFETY: both descriptors came from pipe2 above and are closed once, after the
    // handler was uninstalled and the watcher joined.
    unsafe {
        libc::close(read_fd);
        libc::close(write_fd);
    }
    result
}

/// Makes `path` absolute without touching the filesystem (a dead FUSE mount
/// cannot be stat'ed), resolving `.` and `..` lexically.
fn absolute_lexical(path: &Path) -> Result<PathBuf, FsError> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(io_error("current directory"))?
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,...`).
    pub mount_options: String,
    /// Filesystem type (`fuse.imagefs`).
    pub fstype: String,
    /// Source (`imagefs`).
    pub source: String,
}

/// Undoes the octal escapes of mountinfo (`\040` for a space).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            if let Ok(value) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Every mount of this process's mount namespace.
pub fn mounts() -> Result<Vec<MountInfo>, FsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_error("/proc/self/mountinfo"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            continue;
        }
        out.push(MountInfo {
            mountpoint: unescape_mountinfo(left[4]),
            mount_options: left[5].to_string(),
            fstype: right[0].to_string(),
            source: unescape_mountinfo(right[1]).to_string_lossy().into_owned(),
        });
    }
    Ok(out)
}

/// The FUSE mounts at `mountpoint`, innermost last.
pub fn fuse_mounts_at(mountpoint: &Path) -> Result<Vec<MountInfo>, FsError> {
    let path = absolute_lexical(mountpoint)?;
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mountpoint == path && m.fstype.starts_with("fuse"))
        .collect())
}

/// True when a FUSE filesystem is mounted at `mountpoint`.
pub fn is_mounted(mountpoint: &Path) -> Result<bool, FsError> {
    Ok(!fuse_mounts_at(mountpoint)?.is_empty())
}

fn umount_path(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts the imagefs (any FUSE filesystem) at `mountpoint`, also when its daemon
/// died: as root with a lazy `umount2(MNT_DETACH)`, else with `fusermount3 -uz`.
/// A daemon still serving it sees the disconnect and exits.
pub fn unmount(mountpoint: &Path) -> Result<(), FsError> {
    let path = absolute_lexical(mountpoint)?;
    if !is_mounted(&path)? {
        return Err(FsError::NotMounted(path));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return umount_path(&path, libc::MNT_DETACH).map_err(|e| FsError::Unmount {
            path,
            reason: e.to_string(),
        });
    }
    let output = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&path)
        .output()
        .map_err(|e| FsError::Unmount {
            path: path.clone(),
            reason: format!("running fusermount3: {e}"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FsError::Unmount {
            path,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo("/tmp/a\\040b"),
            PathBuf::from("/tmp/a b")
        );
        assert_eq!(unescape_mountinfo("/x\\"), PathBuf::from("/x\\"));
    }

    #[test]
    fn lexical_absolute_paths() {
        assert_eq!(
            absolute_lexical(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert!(absolute_lexical(Path::new("x")).unwrap().is_absolute());
    }

    #[test]
    fn options_harden_the_mount() {
        let config = fuser_config(&MountOptions::default());
        for wanted in [
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ] {
            assert!(config.mount_options.contains(&wanted));
        }
        assert_eq!(config.acl, SessionACL::Owner);
        assert!(!config.mount_options.contains(&MountOption::RO));
        let config = fuser_config(&MountOptions {
            read_only: true,
            allow_other: true,
            ..Default::default()
        });
        assert!(config.mount_options.contains(&MountOption::RO));
        assert_eq!(config.acl, SessionACL::All);
    }
}
