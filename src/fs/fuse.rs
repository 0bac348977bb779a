//! The thin fuser adapter: turns FUSE requests into [`Vfs`] calls and replies once.
//!
//! Owns: the open-file and open-directory handle tables, FUSE passthrough (backing
//! ids shared per inode, kept alive until the last release), cache TTLs, the
//! conversion of view attributes into `FileAttr`, and the statistics hook
//! ([`STATS_XATTR`]). Decisions about what a path means belong to [`super::vfs`];
//! errno values come from [`super::errno`].
//!
//! Lookup counts: every reply that hands the kernel an inode (entry replies of
//! lookup, mkdir and symlink, READDIRPLUS entries but `.` and `..`) carries one
//! reference the view counted before the reply went out; FORGET and BATCH_FORGET
//! give them back; the view keeps the numbers of things that still exist and drops
//! those of things gone (see `inodes::InodeTable`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use lru::LruCache;

use super::attr::{Attr, DirEntry, FileContent, Ino, NodeType, Volatility, ROOT_INO};
use super::errno::VfsError;
use super::layout::WriteHandle;
use super::lock;
use super::vfs::Vfs;

/// How long the kernel may trust names that can vanish without an explicit
/// invalidation (`manifests/sha256:<hex>` entries). Short, so changes made by other
/// processes show within the 1 s the SPEC promises.
pub(crate) const VOLATILE_TTL: Duration = Duration::from_millis(500);

/// How long the kernel may trust what changes with tags and repositories: the
/// change watcher (`super::DirInvalidator`) invalidates exactly what changed
/// within 1 s of any commit, so this only bounds the damage of a missed case.
pub(crate) const EXPLICIT_TTL: Duration = Duration::from_secs(60);

/// How long the kernel may trust what never changes (everything under manifests/).
pub(crate) const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Directory listings kept for reads that continue past the first batch.
const LISTINGS: usize = 64;

/// Files at least this big are read through FUSE passthrough; smaller ones are
/// served by imagefs and kept in the kernel's page cache across opens.
pub(crate) const PASSTHROUGH_MIN_SIZE: u64 = 1 << 20;

/// A hidden extended attribute of the mount root: the daemon's table and cache
/// sizes as `name=value` lines (`getfattr -n user.imagefs.stats --only-values
/// MOUNT`), for tests and for watching a long-running mount. listxattr does not
/// show it, so copies of the tree never carry it.
pub(crate) const STATS_XATTR: &str = "user.imagefs.stats";

/// Attributes `ls -l` asks of every entry (the SELinux label, POSIX ACLs): when a
/// node lacks them, "not supported" rather than "no such attribute" makes it
/// stop asking for the rest of the mount (coreutils remembers it per st_dev).
const ASKED_BY_LS: [&str; 3] = [
    "security.selinux",
    "system.posix_acl_access",
    "system.posix_acl_default",
];

/// What an open file handle reads from or writes to.
#[derive(Debug)]
enum Opened {
    /// A blob, a layer entry's content, or a staged file.
    File(File),
    /// Bytes made when it was opened (`index.json`, `oci-layout`).
    Bytes(Arc<[u8]>),
    /// A file being written through a repository's OCI layout.
    Write(Arc<Mutex<WriteHandle>>),
}

#[derive(Debug)]
struct OpenBlob {
    opened: Opened,
    /// Held while this handle is open, so the kernel keeps the backing file.
    _backing: Option<Arc<BackingId>>,
}

/// Requests answered, by kind, for the statistics hook: round trips are counted
/// where the kernel sends them, so tests and benchmarks can tell what a walk cost.
#[derive(Debug, Default)]
struct Requests {
    lookup: AtomicU64,
    getattr: AtomicU64,
    readlink: AtomicU64,
    readdir: AtomicU64,
    open: AtomicU64,
    read: AtomicU64,
    release: AtomicU64,
    forget: AtomicU64,
    getxattr: AtomicU64,
    listxattr: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The `Filesystem` implementation over a [`Vfs`].
#[derive(Debug)]
pub(crate) struct ImageFs {
    vfs: Arc<Vfs>,
    uid: u32,
    gid: u32,
    /// Stack depth the store's own filesystem needs below us (1 on overlayfs).
    backing_stack_depth: u32,
    /// Opening files, shared with the slow-open threads.
    opener: Arc<Opener>,
    /// Opens that hash a blob or unpack a layer run here, off the FUSE workers.
    slow_opens: SlowOpens,
    /// Directory listings being read: taken when a read starts at offset 0 and
    /// reused for the following batches, so offsets stay meaningful while a
    /// directory changes (there are no directory handles: see `opendir`).
    listings: Mutex<LruCache<Ino, Arc<Vec<DirEntry>>>>,
    /// Set once `init` ran, for tests and logs.
    passthrough_report: Arc<AtomicU64>,
    /// Keeps the cache trimming thread alive while the filesystem lives.
    _trimmer: Option<super::Trimmer>,
    /// Requests answered, by kind.
    requests: Requests,
}

/// Threads for opens that hash or unpack (see [`SlowOpens`]).
const SLOW_OPEN_THREADS: usize = 4;

/// Opening files: the open-file and backing-id tables, shared by the FUSE workers
/// and the slow-open threads.
#[derive(Debug)]
struct Opener {
    vfs: Arc<Vfs>,
    /// What `init` found out about passthrough (see [`PassthroughReport`]).
    passthrough: PassthroughReport,
    next_handle: AtomicU64,
    files: Mutex<HashMap<u64, OpenBlob>>,
    /// One backing id per inode while any handle of it is open (the kernel wants
    /// the same id reused for every open of one inode).
    backing: Mutex<HashMap<Ino, Weak<BackingId>>>,
}

impl Opener {
    /// Where the bytes of regular file `ino` come from.
    fn content(&self, ino: Ino) -> Result<FileContent, VfsError> {
        self.vfs
            .content_of(ino)?
            .ok_or_else(|| VfsError::Invalid("not a regular file".into()))
    }

    /// Opens `content` — a blob (hashed on its first open, so a damaged one gives
    /// EIO), or a layer entry's content in the unpack cache (unpacking the layer on
    /// first use, which checks its diff_id) — so the open file keeps reading even
    /// if its tag, its blob or its cache entry goes away meanwhile. Without
    /// `may_work`, `Ok(None)` when that needs hashing or unpacking now.
    fn open(&self, content: &FileContent, may_work: bool) -> Result<Option<File>, VfsError> {
        match content {
            FileContent::Blob(digest) => {
                let store = self.vfs.store();
                let cas = store.cas();
                // A lazy layer has no file yet: complete it first (its missing
                // ranges fetched, checked against its digest and diff_id), off the
                // FUSE workers.
                if !cas.contains(digest) && store.is_absent(digest).map_err(VfsError::Store)? {
                    if !may_work {
                        return Ok(None);
                    }
                    store.complete_layer(digest).map_err(VfsError::Store)?;
                }
                let opened = if may_work {
                    cas.open_verified(digest).map(Some)
                } else {
                    cas.open_if_verified(digest)
                };
                opened.map_err(|e| VfsError::Store(e.into()))
            }
            FileContent::LayerEntry { layer, entry } => {
                let images = self.vfs.images();
                if may_work {
                    Ok(Some(images.open_content(layer, *entry)?))
                } else {
                    Ok(images.open_content_if_ready(layer, *entry))
                }
            }
            // Read and write: a backing file shared with writers must take writes.
            FileContent::Staged(path) => Ok(Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)?,
            )),
            FileContent::Fixed(_) | FileContent::IndexJson(_) => {
                Err(VfsError::Invalid("generated content has no file".into()))
            }
        }
    }

    /// Registers a handle of generated bytes and answers the OPEN: read straight
    /// from the handle (direct I/O: the size may have changed since the kernel last
    /// asked), no FLUSH.
    fn reply_bytes(&self, bytes: Vec<u8>, reply: ReplyOpen) {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(
            handle,
            OpenBlob {
                opened: Opened::Bytes(bytes.into()),
                _backing: None,
            },
        );
        reply.opened(
            FileHandle(handle),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    /// Registers a write handle; returns its number and the backing id when the
    /// kernel may write straight to its staging file (`open_backing` registers one).
    fn register_write(
        &self,
        ino: Ino,
        handle: WriteHandle,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> (u64, Option<Arc<BackingId>>) {
        let number = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let backing = if handle.passthrough_ok() {
            self.backing_for(ino, &handle.file, open_backing)
        } else {
            None
        };
        lock(&self.files).insert(
            number,
            OpenBlob {
                opened: Opened::Write(Arc::new(Mutex::new(handle))),
                _backing: backing.clone(),
            },
        );
        (number, backing)
    }

    /// The write handle `fh`, if it is one.
    fn write_handle(&self, fh: u64) -> Option<Arc<Mutex<WriteHandle>>> {
        match &lock(&self.files).get(&fh)?.opened {
            Opened::Write(handle) => Some(handle.clone()),
            _ => None,
        }
    }

    /// Registers an open `file` of `ino` and answers the OPEN. `immutable`: its
    /// bytes never change (blobs, layer entries), unlike a staged file's.
    fn reply_opened(&self, ino: Ino, file: File, immutable: bool, reply: ReplyOpen) {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        // Small files skip passthrough: registering a backing file costs more than
        // the read, and without passthrough FOPEN_KEEP_CACHE lets later opens read
        // from the page cache with no request at all.
        let small = immutable
            && file
                .metadata()
                .map(|m| m.len() < PASSTHROUGH_MIN_SIZE)
                .unwrap_or(false);
        let backing = if small {
            None
        } else {
            self.backing_for(ino, &file, |file| reply.open_backing(file))
        };
        lock(&self.files).insert(
            handle,
            OpenBlob {
                opened: Opened::File(file),
                _backing: backing.clone(),
            },
        );
        // Nothing to do on close of a read: no FLUSH round trip.
        let flags = FopenFlags::FOPEN_NOFLUSH;
        match backing {
            // No FOPEN_KEEP_CACHE here: the kernel refuses the open with EIO when
            // it is combined with passthrough (the backing file's cache serves).
            Some(id) => reply.opened_passthrough(FileHandle(handle), flags, &id),
            // Blob bytes never change: the kernel may keep its page cache across opens.
            None if immutable => {
                reply.opened(FileHandle(handle), flags | FopenFlags::FOPEN_KEEP_CACHE)
            }
            None => reply.opened(FileHandle(handle), flags),
        }
    }

    /// A backing id for `ino`, shared with its other open handles (`open_backing`
    /// registers `file` when there is none).
    fn backing_for(
        &self,
        ino: Ino,
        file: &File,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if self.passthrough.load(Ordering::Relaxed) != PASSTHROUGH_ON {
            return None;
        }
        let mut table = lock(&self.backing);
        if let Some(id) = table.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        match open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                table.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(error) => {
                log::debug!("passthrough refused for inode {ino}, reading instead: {error}");
                None
            }
        }
    }
}

fn reply_open_error(ino: Ino, error: &VfsError, reply: ReplyOpen) {
    if error.errno() == libc::EIO {
        log::error!("open of inode {ino}: {error}");
    }
    reply.error(errno(error));
}

type SlowOpen = Box<dyn FnOnce() + Send>;

/// A few threads running opens that take a while (hashing a blob on its first
/// open, unpacking a layer), in arrival order, so that the FUSE workers stay free
/// for everything else. The threads end when this is dropped (at unmount).
#[derive(Debug)]
struct SlowOpens {
    queue: Mutex<Option<mpsc::Sender<SlowOpen>>>,
}

impl SlowOpens {
    fn start(threads: usize) -> SlowOpens {
        let (queue, jobs) = mpsc::channel::<SlowOpen>();
        let jobs = Arc::new(Mutex::new(jobs));
        let mut started = 0;
        for n in 0..threads {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("imagefs-open-{n}"))
                .spawn(move || loop {
                    let job = lock(&jobs).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => log::error!("slow-open thread: {error}"),
            }
        }
        SlowOpens {
            // Without a thread, opens run where they arrive (see `run`).
            queue: Mutex::new((started > 0).then_some(queue)),
        }
    }

    /// Runs `job` on a slow-open thread, or right here when there is none.
    fn run(&self, job: SlowOpen) {
        let rejected = match &*lock(&self.queue) {
            Some(queue) => queue.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = rejected {
            job();
        }
    }
}

fn errno(error: &VfsError) -> Errno {
    Errno::from_i32(error.errno())
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    // Every name in the tree is UTF-8; anything else cannot exist.
    name.to_str().ok_or(Errno::ENOENT)
}

/// Answers a request that returns nothing but success or an errno.
fn reply_empty(result: Result<(), VfsError>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(errno(&error)),
    }
}

fn system_time(ns: i64) -> SystemTime {
    // Tar mtimes may precede 1970.
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

fn file_type(kind: NodeType) -> FileType {
    match kind {
        NodeType::Directory => FileType::Directory,
        NodeType::File => FileType::RegularFile,
        NodeType::Symlink => FileType::Symlink,
        NodeType::CharDevice => FileType::CharDevice,
        NodeType::BlockDevice => FileType::BlockDevice,
        NodeType::Fifo => FileType::NamedPipe,
    }
}

/// Answers a getxattr/listxattr: the size for a size-0 probe, ERANGE when the
/// caller's buffer is too small, else the bytes.
fn reply_xattr_bytes(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

/// (attribute TTL, entry TTL) for a node.
fn ttls(attr: &Attr) -> (Duration, Duration) {
    if attr.ino == ROOT_INO {
        // Short for the root alone: a `stat` of the mountpoint then reaches the
        // daemon twice a second, so a dead daemon shows (ENOTCONN) at once.
        return (VOLATILE_TTL, VOLATILE_TTL);
    }
    match attr.volatility {
        Volatility::Volatile => (EXPLICIT_TTL, EXPLICIT_TTL),
        Volatility::ImmutableInVolatileDir => (IMMUTABLE_TTL, VOLATILE_TTL),
        Volatility::Immutable => (IMMUTABLE_TTL, IMMUTABLE_TTL),
    }
}

/// The `FileAttr` of `attr`, owned by `uid`/`gid` unless it has an owner of its own.
fn file_attr_as(attr: &Attr, uid: u32, gid: u32) -> FileAttr {
    let time = system_time(attr.mtime_ns);
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks(),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.owner.map_or(uid, |(uid, _)| uid),
        gid: attr.owner.map_or(gid, |(_, gid)| gid),
        // The kernel's dev_t encoding fits in 32 bits for real device numbers.
        rdev: u32::try_from(attr.rdev).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

/// Answers an entry request (lookups: also from the pull-through threads).
fn reply_entry_as(result: Result<Attr, VfsError>, uid: u32, gid: u32, reply: ReplyEntry) {
    match result {
        Ok(attr) => {
            let (attr_ttl, entry_ttl) = ttls(&attr);
            let file_attr = file_attr_as(&attr, uid, gid);
            reply.entry_with_ttls(&attr_ttl, &entry_ttl, &file_attr, Generation(0));
        }
        Err(error) => reply.error(errno(&error)),
    }
}

/// What `init` found out about passthrough: 0 not yet mounted, 1 off,
/// [`PASSTHROUGH_ON`] on.
pub(crate) type PassthroughReport = Arc<AtomicU64>;

/// The [`PassthroughReport`] value for "negotiated".
pub(crate) const PASSTHROUGH_ON: u64 = 2;

impl ImageFs {
    pub(crate) fn new(
        vfs: Arc<Vfs>,
        backing_stack_depth: u32,
        trimmer: Option<super::Trimmer>,
    ) -> (Self, PassthroughReport) {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let report = Arc::new(AtomicU64::new(0));
        let fs = ImageFs {
            vfs: vfs.clone(),
            uid,
            gid,
            backing_stack_depth,
            opener: Arc::new(Opener {
                vfs,
                passthrough: report.clone(),
                next_handle: AtomicU64::new(1),
                files: Mutex::new(HashMap::new()),
                backing: Mutex::new(HashMap::new()),
            }),
            slow_opens: SlowOpens::start(SLOW_OPEN_THREADS),
            listings: Mutex::new(LruCache::new(NonZeroUsize::new(LISTINGS).expect("nonzero"))),
            passthrough_report: report.clone(),
            _trimmer: trimmer,
            requests: Requests::default(),
        };
        (fs, report)
    }

    fn file_attr(&self, attr: &Attr) -> FileAttr {
        file_attr_as(attr, self.uid, self.gid)
    }

    fn reply_entry(&self, result: Result<Attr, VfsError>, reply: ReplyEntry) {
        reply_entry_as(result, self.uid, self.gid, reply)
    }

    /// Drops a listing once a read asks past its end (the kernel's last call for a
    /// directory read gets nothing back), so only listings being read are kept.
    fn done_with_listing(&self, ino: Ino, start: usize, entries: &[DirEntry]) {
        if start >= entries.len() {
            lock(&self.listings).pop(&ino);
        }
    }

    /// The listing of directory `ino` for a read at `offset`: taken afresh at 0,
    /// reused for the batches after it (taken afresh if it was evicted meanwhile).
    fn dir_entries(&self, ino: Ino, offset: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        if offset > 0 {
            if let Some(entries) = lock(&self.listings).get(&ino) {
                return Ok(entries.clone());
            }
        }
        // Built outside the lock; two racing first reads build the same.
        let entries = Arc::new(self.vfs.readdir(ino).map_err(|e| errno(&e))?);
        lock(&self.listings).put(ino, entries.clone());
        Ok(entries)
    }

    fn read_only_reply(&self) -> Errno {
        Errno::EROFS
    }

    /// The value of [`STATS_XATTR`].
    fn stats_text(&self) -> String {
        let view = self.vfs.stats();
        let (table, trees) = (view.table, view.trees);
        let lines = [
            ("pid", u64::from(std::process::id())),
            ("nodes", table.nodes as u64),
            ("held_nodes", table.held_nodes as u64),
            ("blocks", table.blocks as u64),
            ("held_blocks", table.held_blocks as u64),
            ("lookups", table.lookups),
            ("numbered", table.numbered),
            ("unheld", table.unheld as u64),
            ("manifest_views", view.manifest_views as u64),
            ("rootfs_trees", trees.rootfs_trees as u64),
            ("rootfs_tree_bytes", trees.rootfs_bytes),
            ("layer_trees", trees.layer_trees as u64),
            ("layer_tree_bytes", trees.layer_bytes),
            ("unpacked_indexes", trees.unpacked_indexes as u64),
            ("open_files", lock(&self.opener.files).len() as u64),
            ("listings", lock(&self.listings).len() as u64),
            ("backing_ids", lock(&self.opener.backing).len() as u64),
            ("vm_rss_kib", vm_rss_kib().unwrap_or(0)),
            ("sql_statements", crate::store::meta::statements_run()),
            ("token_checks", crate::store::meta::token_checks_run()),
            ("invalidations", self.vfs.invalidations()),
            ("req_lookup", self.requests.lookup.load(Ordering::Relaxed)),
            ("req_getattr", self.requests.getattr.load(Ordering::Relaxed)),
            (
                "req_readlink",
                self.requests.readlink.load(Ordering::Relaxed),
            ),
            ("req_readdir", self.requests.readdir.load(Ordering::Relaxed)),
            ("req_open", self.requests.open.load(Ordering::Relaxed)),
            ("req_read", self.requests.read.load(Ordering::Relaxed)),
            ("req_release", self.requests.release.load(Ordering::Relaxed)),
            ("req_forget", self.requests.forget.load(Ordering::Relaxed)),
            (
                "req_getxattr",
                self.requests.getxattr.load(Ordering::Relaxed),
            ),
            (
                "req_listxattr",
                self.requests.listxattr.load(Ordering::Relaxed),
            ),
        ];
        lines
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status).
fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings carry attributes (no LOOKUP per entry after a readdir); the kernel
        // picks plain or plus reads per directory.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if config.add_capabilities(plus).is_err() {
            log::debug!("kernel without READDIRPLUS");
        }
        // The kernel keeps link targets (tags, platforms, image symlinks) in its page
        // cache: `ls -l tags/` asks no READLINK twice. Tags that move are dropped
        // from it by the change watcher's inval_inode.
        if config
            .add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS)
            .is_err()
        {
            log::debug!("kernel without FUSE_CACHE_SYMLINKS");
        }
        // O_TRUNC arrives with the OPEN (an `index.json` rewritten in place), and
        // tools' writes come in big requests.
        if config
            .add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
            .is_err()
        {
            log::debug!("kernel without FUSE_ATOMIC_O_TRUNC");
        }
        // The kernel would ask for `security.capability` (a GETXATTR round trip)
        // before every write to see whether the write must drop privileges. With
        // HANDLE_KILLPRIV_V2 that is ours to do, and it needs nothing: the only
        // files written through the mount are staging files, which never carry
        // setuid or setgid bits (`Vfs::create_staged`, `chmod_staged`) or file
        // capabilities. A tool writing a blob through the mount saves one round
        // trip per write request.
        if config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_err()
        {
            log::debug!("kernel without FUSE_HANDLE_KILLPRIV_V2");
        }
        if let Err(nearest) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(nearest);
        }
        let wanted = self.backing_stack_depth + 1;
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(wanted).is_ok()
        {
            self.passthrough_report
                .store(PASSTHROUGH_ON, Ordering::Relaxed);
            log::info!("FUSE passthrough negotiated");
        } else {
            self.passthrough_report.store(1, Ordering::Relaxed);
            log::info!("FUSE passthrough not available; serving reads from blob files");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        count(&self.requests.lookup);
        if let Some(remote) = self.vfs.remote_lookup(parent.0, name.as_bytes()) {
            // A tag the store lacks under a pull-through registry: pulled and
            // answered from a thread of its own, so this worker stays free.
            let (uid, gid) = (self.uid, self.gid);
            return remote.spawn(move |result| reply_entry_as(result, uid, gid, reply));
        }
        self.reply_entry(self.vfs.lookup(parent.0, name.as_bytes()), reply);
    }

    // BATCH_FORGET: fuser's default calls this once per inode (its `ForgetOne`
    // type is not exported, so it cannot be overridden).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        count(&self.requests.forget);
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        count(&self.requests.getattr);
        match self.vfs.getattr(ino.0) {
            Ok(attr) => reply.attr(&ttls(&attr).0, &self.file_attr(&attr)),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        let handle = fh.and_then(|fh| self.opener.write_handle(fh.0));
        let result = match &handle {
            Some(handle) => self.vfs.setattr(ino.0, mode, size, Some(&mut lock(handle))),
            None => self.vfs.setattr(ino.0, mode, size, None),
        };
        match result {
            Ok(attr) => reply.attr(&ttls(&attr).0, &self.file_attr(&attr)),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        count(&self.requests.readlink);
        match self.vfs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.read_only_reply());
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(name) => name,
            Err(_) => return reply.error(Errno::EINVAL),
        };
        self.reply_entry(self.vfs.mkdir(parent.0, name), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        reply_empty(self.vfs.unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        reply_empty(self.vfs.rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match link_name.to_str() {
            Some(name) => name,
            None => return reply.error(Errno::EINVAL),
        };
        self.reply_entry(self.vfs.symlink(parent.0, name, target), reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let (Ok(name), Some(newname)) = (name_str(name), newname.to_str()) else {
            return reply.error(Errno::ENOENT);
        };
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        reply_empty(
            self.vfs
                .rename(parent.0, name, newparent.0, newname, no_replace, req.pid()),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.read_only_reply());
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        count(&self.requests.open);
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if flags.acc_mode() != OpenAccMode::O_RDONLY || truncate {
            return match self.vfs.open_write(ino.0, truncate, req.pid()) {
                Ok(handle) => {
                    let (number, backing) = self
                        .opener
                        .register_write(ino.0, handle, |file| reply.open_backing(file));
                    match backing {
                        Some(id) => {
                            reply.opened_passthrough(FileHandle(number), FopenFlags::empty(), &id)
                        }
                        None => reply.opened(FileHandle(number), FopenFlags::FOPEN_DIRECT_IO),
                    }
                }
                Err(error) => reply.error(errno(&error)),
            };
        }
        let content = match self.opener.content(ino.0) {
            Ok(content) => content,
            Err(error) => return reply_open_error(ino.0, &error, reply),
        };
        match &content {
            FileContent::Fixed(bytes) => return self.opener.reply_bytes(bytes.to_vec(), reply),
            FileContent::IndexJson(repo) => {
                return match self.vfs.read_index_json(repo, req.pid()) {
                    Ok(bytes) => self.opener.reply_bytes(bytes, reply),
                    Err(error) => reply_open_error(ino.0, &error, reply),
                }
            }
            FileContent::Staged(_) => {
                return match self.opener.open(&content, true) {
                    Ok(Some(file)) => self.opener.reply_opened(ino.0, file, false, reply),
                    Ok(None) => reply.error(Errno::EIO),
                    Err(error) => reply_open_error(ino.0, &error, reply),
                }
            }
            FileContent::Blob(_) | FileContent::LayerEntry { .. } => {}
        }
        let opened = self
            .opener
            .open(&content, false)
            .map(|file| (file, content));
        match opened {
            Ok((Some(file), _)) => self.opener.reply_opened(ino.0, file, true, reply),
            // Hashing a blob or unpacking a layer takes a while: not on a FUSE
            // worker, so the rest of the mount keeps answering meanwhile.
            Ok((None, content)) => {
                let opener = self.opener.clone();
                self.slow_opens
                    .run(Box::new(move || match opener.open(&content, true) {
                        Ok(Some(file)) => opener.reply_opened(ino.0, file, true, reply),
                        // Not with `may_work`; answered all the same.
                        Ok(None) => reply.error(Errno::EIO),
                        Err(error) => reply_open_error(ino.0, &error, reply),
                    }));
            }
            Err(error) => reply_open_error(ino.0, &error, reply),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        count(&self.requests.read);
        let file = match lock(&self.opener.files).get(&fh.0).map(|open| &open.opened) {
            // A clone of the descriptor, so the table lock is not held during I/O.
            Some(Opened::File(file)) => file.try_clone(),
            Some(Opened::Write(handle)) => lock(handle).file.try_clone(),
            Some(Opened::Bytes(bytes)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                return reply.data(&bytes[start..end]);
            }
            None => return reply.error(Errno::EBADF),
        };
        let file = match file {
            Ok(file) => file,
            Err(error) => return reply.error(Errno::from(error)),
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset.saturating_add(filled as u64)) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::error!("read of inode {}: {error}", _ino.0);
                    return reply.error(Errno::EIO);
                }
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(handle) = self.opener.write_handle(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let written = lock(&handle).write_at(data, offset);
        match written {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Reads are opened with FOPEN_NOFLUSH; a close of a write commits it (an
        // `index.json`, a blob written in place), and its error reaches `close`.
        let Some(handle) = self.opener.write_handle(fh.0) else {
            return reply.ok();
        };
        let flushed = self.vfs.flush_write(&mut lock(&handle));
        reply_empty(flushed, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        count(&self.requests.release);
        let released = lock(&self.opener.files).remove(&fh.0);
        if let Some(OpenBlob {
            opened: Opened::Write(handle),
            ..
        }) = released
        {
            match Arc::try_unwrap(handle) {
                Ok(handle) => self
                    .vfs
                    .release_write(handle.into_inner().unwrap_or_else(|e| e.into_inner())),
                // A write still in flight holds it: its last reference cleans up.
                Err(handle) => {
                    let _ = self.vfs.flush_write(&mut lock(&handle));
                }
            }
        }
        // Forget dead weak entries so the table does not grow with every inode read.
        let mut backing = lock(&self.opener.backing);
        if backing.get(&ino.0).is_some_and(|w| w.strong_count() == 0) {
            backing.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS once makes the kernel stop sending OPENDIR (and RELEASEDIR) for good
        // and open every directory with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR: `find`
        // and `ls` of a directory read before cost no round trip at all. Listings
        // that change (the registry tree, tags/, manifests/) are dropped from the
        // kernel's cache by `super::DirInvalidator` when the store changes, and by
        // the kernel itself when the change comes through this mount.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        count(&self.requests.readdir);
        let entries = match self.dir_entries(ino.0, offset) {
            Ok(entries) => entries,
            Err(error) => return reply.error(error),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        self.done_with_listing(ino.0, start, &entries);
        for (index, entry) in entries.iter().enumerate().skip(start) {
            if reply.add(
                INodeNo(entry.ino),
                (index + 1) as u64,
                file_type(entry.kind),
                OsStr::from_bytes(&entry.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        count(&self.requests.readdir);
        let entries = match self.dir_entries(ino.0, offset) {
            Ok(entries) => entries,
            Err(error) => return reply.error(error),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        self.done_with_listing(ino.0, start, &entries);
        for (index, entry) in entries.iter().enumerate().skip(start) {
            let dot = entry.name == b"." || entry.name == b"..";
            let attr = if dot {
                // The kernel links no dentry for these (nor counts a lookup); only the
                // inode number counts.
                Attr {
                    ino: entry.ino,
                    kind: NodeType::Directory,
                    size: 0,
                    nlink: 2,
                    perm: 0o755,
                    mtime_ns: 0,
                    owner: None,
                    rdev: 0,
                    volatility: Volatility::Volatile,
                }
            } else {
                // The kernel links every other entry it gets: counted here, before
                // the reply goes out.
                match self.vfs.lookup_listed(ino.0, entry) {
                    Ok(attr) => attr,
                    // Gone since the listing was taken (an untag): leave it out.
                    Err(_) => continue,
                }
            };
            // One TTL for both: the entry's, never longer than the attributes'.
            let ttl = ttls(&attr).1;
            if reply.add(
                INodeNo(attr.ino),
                (index + 1) as u64,
                OsStr::from_bytes(&entry.name),
                &ttl,
                &self.file_attr(&attr),
                Generation(0),
            ) {
                // The buffer is full: this entry is not sent, nor its reference.
                if !dot {
                    self.vfs.forget(attr.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match statvfs(self.vfs.store().root()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(error) => {
                log::error!("statfs of the store: {error}");
                reply.error(Errno::EIO);
            }
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.read_only_reply());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        count(&self.requests.getxattr);
        if ino.0 == ROOT_INO && name == STATS_XATTR {
            let text = self.stats_text();
            if size == 0 {
                // Room for the figures to grow before the caller reads them.
                return reply.size(u32::try_from(text.len() + 256).unwrap_or(u32::MAX));
            }
            return reply_xattr_bytes(text.as_bytes(), size, reply);
        }
        match self.vfs.refs_xattr(ino.0, name.as_bytes()) {
            Ok(Some(text)) => {
                if size == 0 {
                    return reply.size(u32::try_from(text.len()).unwrap_or(u32::MAX));
                }
                return reply_xattr_bytes(&text, size, reply);
            }
            Ok(None) => {}
            Err(error) => return reply.error(errno(&error)),
        }
        let result = self.vfs.xattrs(ino.0).and_then(|xattrs| {
            xattrs
                .into_iter()
                .find(|x| &*x.name == name.as_bytes())
                .ok_or(VfsError::NoXattr)
        });
        match result {
            Ok(xattr) => reply_xattr_bytes(&xattr.value, size, reply),
            // A round trip less per entry of every later `ls -l` (see ASKED_BY_LS);
            // a label or ACL a layer's tar carries is still answered above.
            Err(VfsError::NoXattr) if ASKED_BY_LS.iter().any(|asked| name == *asked) => {
                reply.error(Errno::EOPNOTSUPP)
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        count(&self.requests.listxattr);
        match self.vfs.xattrs(ino.0) {
            Ok(xattrs) => {
                // Names, each followed by a NUL, as listxattr(2) returns them.
                let mut names = Vec::new();
                for xattr in xattrs {
                    names.extend_from_slice(&xattr.name);
                    names.push(0);
                }
                reply_xattr_bytes(&names, size, reply);
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.read_only_reply());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let (attr, handle) = match self.vfs.create(parent.0, name, mode & !umask, req.pid()) {
            Ok(created) => created,
            Err(error) => return reply.error(errno(&error)),
        };
        let (number, backing) = self
            .opener
            .register_write(attr.ino, handle, |file| reply.open_backing(file));
        let ttl = ttls(&attr).1;
        let file_attr = self.file_attr(&attr);
        match backing {
            Some(id) => reply.created_passthrough(
                &ttl,
                &file_attr,
                Generation(0),
                FileHandle(number),
                FopenFlags::empty(),
                &id,
            ),
            None => reply.created(
                &ttl,
                &file_attr,
                Generation(0),
                FileHandle(number),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.read_only_reply());
    }
}

/// `statvfs(2)` of a path.
pub(crate) fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and `out` is writable memory of
    // the right size; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    Ok(unsafe { out.assume_init() })
}
