//! The store: blob files (`cas`) plus metadata (`meta`), and the operations that
//! keep them consistent.
//!
//! On disk:
//! ```text
//! STORE/
//!   blobs/sha256/<hex>   every blob exactly once, read-only files
//!   imagefs.db           SQLite (WAL): registries, repositories, tags, references, counts, leases
//!   verified.db          SQLite (WAL): stamps of big files hashed right (derived; deletable)
//!   tmp/                 staging for blobs being written (never read as content)
//!   cache/               derived data only (layer indexes, unpacked files); deletable
//! ```
//!
//! Ordering rules that make crashes and concurrent processes safe:
//! 1. A blob file is durable (fsync + rename) before any row references it.
//! 2. An import takes a *lease* on every digest it will reference before it looks
//!    for or writes the file, and drops the leases in the transaction that records
//!    the references.
//! 3. Deleting works in two steps: the metadata transaction removes rows whose count
//!    reached zero; then, holding the write lock again, each file is unlinked only if
//!    no row and no live lease names it. A crash between the steps leaves only
//!    unreferenced files, which `fsck --repair` and `gc` remove.

pub(crate) mod cas;
mod import;
pub(crate) mod index_artifact;
mod layers;
mod lazy;
pub(crate) mod meta;
mod pipeline;
mod progress;
mod pull;
mod push;
mod staging;
mod verify;
mod view;
mod why;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use cas::{Cas, CasError};
pub use import::{
    ImageWarnings, ImportOptions, ImportReport, DEFAULT_IMPORT_JOBS, DEFAULT_PULL_JOBS,
};
pub use index_artifact::AttachedIndex;
pub use layers::{EntryWarning, LayerWarnings, WARNINGS_KEPT};
pub use lazy::{LazyProgress, SMALL_LAYER};
pub use meta::{
    BlobInfo, BlobKind, BlobState, Edge, EdgeKind, MetaError, Origin, PlatformRow, RepoRow, TagRow,
};
pub use progress::{NoProgress, Progress};
pub use pull::{digest_tag, parse_platform, platform_text, PullOptions, PullReport};
pub use push::{PushOptions, PushReport};
pub(crate) use staging::TagChange;
pub use staging::DEFAULT_LAYOUT_GRACE;
pub use view::{ConfigView, LayerView, ManifestKind, ManifestView, PlatformView};
pub use why::{
    short_digest, Chain, FreedBlob, FreedBlobs, LeaseHolder, Step, TagBytes, Via, WhyReport,
};

use crate::archive::ArchiveError;
use crate::digest::{DiffId, Digest};
use crate::image::ImageError;
use crate::layer::LayerError;
use crate::reference::{self, Reference, ReferenceError, Target};

/// Largest manifest, index or config blob read into memory.
pub const MAX_JSON_BLOB: u64 = 4 << 20;

/// Errors from store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Something named does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// Something to create exists already.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// Still referenced by something else.
    #[error("{0}")]
    Busy(String),
    /// A directory-like thing that is not empty.
    #[error("{0}: not empty")]
    NotEmpty(String),
    /// A request that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// A name or reference is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Metadata failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Blob file failure.
    #[error(transparent)]
    Cas(#[from] CasError),
    /// An image source could not be opened or read (it says which file or member).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A registry refused, failed or lied (it names the registry, the object and the
    /// problem).
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Reading a blob's bytes from an image source failed.
    #[error("{what}: {source}")]
    SourceRead {
        /// Which blob of which source.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Image JSON (index, manifest, config) that was refused.
    #[error("{what}: {source}")]
    Image {
        /// Which blob of which source.
        what: String,
        /// Why it was refused.
        source: ImageError,
    },
    /// A layer's tar stream or its cache could not be read.
    #[error("{what}: {source}")]
    Layer {
        /// Which layer (and of which source, during an import).
        what: String,
        /// The error.
        source: LayerError,
    },
    /// An image that breaks a rule of the format or of the store (nesting too deep,
    /// a JSON blob too large, an unsupported layer type, counts that disagree).
    #[error("{what}: {problem}")]
    BadImage {
        /// Which blob of which source.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A layer whose uncompressed content is not what the image config says.
    #[error(
        "{what}: uncompressed content hashes to {actual}, but the config's diff_ids say {expected}"
    )]
    DiffIdMismatch {
        /// Which layer of which source.
        what: String,
        /// The digest of the uncompressed stream.
        actual: DiffId,
        /// The config's diff_id for it.
        expected: DiffId,
    },
    /// The image asked for by name is not in the source, or is not one image.
    #[error("{source_name}: {source}")]
    SelectImage {
        /// The source.
        source_name: String,
        /// Why no one image answers to the name.
        source: ArchiveError,
    },
    /// An import source without images.
    #[error("{source_name}: holds no image")]
    NoImage {
        /// The source.
        source_name: String,
    },
    /// An import into one reference from a source of several different images,
    /// without a name to pick one.
    #[error("{source_name}: holds {count} images; pick one by its name (names: {})", names.join(", "))]
    AmbiguousSource {
        /// The source.
        source_name: String,
        /// How many different images it holds.
        count: usize,
        /// The names they carry.
        names: Vec<String>,
    },
    /// An image whose name in the source is missing or only a tag, imported
    /// without a reference to store it under.
    #[error("{source_name}: image {manifest} has {}; give a reference to store it under", match name { Some(tag) => format!("only the tag {tag:?} as its name"), None => "no name".into() })]
    UnnamedImage {
        /// The source.
        source_name: String,
        /// The image's top manifest or index.
        manifest: Digest,
        /// The name it carries, when only a tag.
        name: Option<String>,
    },
    /// An image name in the source that is not a valid reference.
    #[error("{source_name}: image name {name:?}: {reason}")]
    BadImageName {
        /// The source.
        source_name: String,
        /// The name as the source gives it.
        name: String,
        /// Why it is not a reference.
        reason: ReferenceError,
    },
    /// A layer's derived data in `cache/` is unusable or does not match the blob.
    #[error("layer {layer}: {problem}")]
    LayerCache {
        /// The layer blob.
        layer: Digest,
        /// What is wrong.
        problem: String,
    },
    /// A thread of the import pipeline panicked (a bug).
    #[error("{what}: the {stage} panicked")]
    Panicked {
        /// Which blob was being processed.
        what: String,
        /// Which stage.
        stage: &'static str,
    },
    /// Writing would leave (or leaves) the store's filesystem without free space.
    #[error("{0}")]
    NoSpace(String),
    /// Other I/O on the store.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// A layer error about stored layer `layer`.
    pub(crate) fn layer(layer: &Digest, source: LayerError) -> Self {
        StoreError::Layer {
            what: format!("layer {layer}"),
            source,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Meta(MetaError::Sqlite(e))
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The default store location: `$IMAGEFS_STORE`, else `/var/lib/imagefs` for root,
/// else `$XDG_DATA_HOME/imagefs` (`~/.local/share/imagefs`).
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMAGEFS_STORE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/imagefs");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("imagefs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/imagefs")
}

/// A registry as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistryInfo {
    /// Name.
    pub name: String,
    /// Creation time (ns since the epoch).
    pub created_ns: i64,
}

/// One line of [`Store::list`]: a tag with its image, or an empty repository
/// (`tag` None), or an empty registry (`repository` None).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListEntry {
    /// Registry.
    pub registry: String,
    /// Repository path.
    pub repository: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// The manifest the tag points at.
    pub digest: Option<Digest>,
    /// Its media type.
    pub media_type: Option<String>,
    /// The image's size (every blob it reaches, once).
    pub size: Option<u64>,
}

/// Space accounting for `df`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DfReport {
    /// Bytes in all stored blobs (each counted once).
    pub stored_bytes: u64,
    /// Number of stored blobs.
    pub blob_count: u64,
    /// Bytes the images would take if every repository stored its own copy.
    pub logical_bytes: u64,
    /// Bytes of blobs used by more than one repository.
    pub shared_bytes: u64,
    /// Bytes of blobs used by exactly one repository.
    pub unique_bytes: u64,
    /// Bytes in cache/ (fetched ranges of lazy layers included).
    pub cache_bytes: u64,
    /// Layers pulled lazily and not complete yet (no file in blobs/).
    pub lazy_layers: u64,
    /// Of those layers' bytes, fetched so far (kept in cache/).
    pub lazy_fetched_bytes: u64,
    /// Of those layers' bytes, not fetched yet.
    pub lazy_missing_bytes: u64,
    /// Per registry.
    pub registries: Vec<DfEntry>,
    /// Per repository.
    pub repositories: Vec<DfEntry>,
}

/// One line of `df`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DfEntry {
    /// `registry` or `registry/repository`.
    pub name: String,
    /// Bytes reachable from its tags (each blob once).
    pub total_bytes: u64,
    /// Of those, bytes no other registry/repository references: what deleting it frees.
    pub unique_bytes: u64,
    /// Of those, bytes shared with others.
    pub shared_bytes: u64,
}

/// Findings of `fsck`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FsckReport {
    /// Blobs checked by re-hashing.
    pub blobs_checked: u64,
    /// Referenced blobs whose file is missing.
    pub missing: Vec<String>,
    /// Referenced blobs whose bytes do not match their digest or size.
    pub corrupt: Vec<String>,
    /// Wrong reference counts (`digest: stored -> actual`).
    pub bad_counts: Vec<String>,
    /// References to things not stored.
    pub dangling: Vec<String>,
    /// Unreferenced files in blobs/ and tmp/ (leftovers of crashes).
    pub leftovers: Vec<String>,
    /// Unpacked content files checked by re-hashing (derived data in cache/).
    pub cache_files_checked: u64,
    /// Unpacked content files whose bytes no longer match their name; `--repair`
    /// drops their layer's unpacked contents (rebuilt from the blob on next use).
    pub cache_damaged: Vec<String>,
    /// Lazy layers (`pull --lazy`): no file in blobs/ yet, not missing; their
    /// fetched ranges are checked against the span digests (damage goes to
    /// `cache_damaged`).
    pub lazy: Vec<String>,
    /// Layers whose bytes failed their digest or the config's diff_id (fetched
    /// lazily, or written through a layout and checked after the commit): reads give
    /// EIO until a pull fetches them again.
    pub bad: Vec<String>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
}

impl FsckReport {
    /// True when nothing referenced is missing or corrupt and counts are right.
    pub fn is_healthy(&self) -> bool {
        self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.bad_counts.is_empty()
            && self.dangling.is_empty()
            && self.cache_damaged.is_empty()
            && self.bad.is_empty()
    }
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Unreferenced blob files removed.
    pub blobs_removed: u64,
    /// Bytes freed from blobs/.
    pub blob_bytes_freed: u64,
    /// Temp files removed.
    pub temp_removed: u64,
    /// Dead leases dropped.
    pub leases_expired: u64,
    /// Cache entries removed.
    pub cache_entries_removed: u64,
    /// Bytes of unpacked layer contents evicted to respect the cache cap.
    pub cache_bytes_evicted: u64,
}

/// Default cap on `cache/`: 10 GiB, unless `IMAGEFS_CACHE_SIZE` says otherwise.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

/// The store. Cheap to share between threads; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cas: Cas,
    conn: Mutex<Connection>,
    local_changes: AtomicU64,
    /// Registry clients of lazy layers (`store/lazy.rs`).
    lazy: lazy::LazyState,
    /// Layers renamed in through a layout, indexed in the background (`staging.rs`).
    prepared: staging::PreparedLayers,
    /// The last `PRAGMA data_version` read and when (see `recent_change_token`).
    data_version_seen: Mutex<Option<(std::time::Instant, i64)>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io_error(root))?;
        let root = root.canonicalize().map_err(io_error(root))?;
        let cas = Cas::open(&root)?;
        let cache = root.join("cache");
        std::fs::create_dir_all(&cache).map_err(io_error(&cache))?;
        let conn = meta::open(&root.join("imagefs.db"))?;
        Ok(Store {
            root,
            cas,
            conn: Mutex::new(conn),
            local_changes: AtomicU64::new(0),
            lazy: lazy::LazyState::default(),
            prepared: staging::PreparedLayers::default(),
            data_version_seen: Mutex::new(None),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls
        // back the open transaction when it is dropped.
        crate::sys::lock(&self.conn)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob files (inside the crate only: writing blobs outside an import's
    /// leases would race with deletion).
    pub(crate) fn cas(&self) -> &Cas {
        &self.cas
    }

    /// The cache directory (derived data only).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where derived data of one layer blob lives; deleted with the blob.
    pub(crate) fn layer_cache_dir(&self, layer: &Digest) -> PathBuf {
        self.root.join("cache").join("layers").join(layer.hex())
    }

    /// Path of a blob file.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.cas.path(digest)
    }

    /// Reads a small blob (manifest, index, config) into memory.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        Ok(self.cas.read(digest, MAX_JSON_BLOB)?)
    }

    /// A token that changes whenever any process commits a change to the metadata.
    pub(crate) fn change_token(&self) -> Result<u64> {
        let version = meta::data_version(&self.conn())?;
        *crate::sys::lock(&self.data_version_seen) = Some((std::time::Instant::now(), version));
        Ok(self.token_with(version))
    }

    /// The change token of other processes' `data_version` and this one's changes.
    fn token_with(&self, version: i64) -> u64 {
        (version as u64).wrapping_add(self.local_changes.load(Ordering::Relaxed) << 32)
    }

    /// [`Store::change_token`], reusing the other processes' part when it was read
    /// less than `fresh` ago: this process's own changes always count at once,
    /// other processes' within `fresh`. Reading it costs SQLite a read transaction
    /// (locks, a `fcntl`), which a walk of the mount asked several times per
    /// directory.
    pub(crate) fn recent_change_token(&self, fresh: std::time::Duration) -> Result<u64> {
        let seen = *crate::sys::lock(&self.data_version_seen);
        match seen {
            Some((at, version)) if at.elapsed() < fresh => Ok(self.token_with(version)),
            _ => self.change_token(),
        }
    }

    fn note_change(&self) {
        self.local_changes.fetch_add(1, Ordering::Relaxed);
    }

    // ---- reading ----

    /// Every registry.
    pub fn registries(&self) -> Result<Vec<RegistryInfo>> {
        Ok(meta::registries(&self.conn())?
            .into_iter()
            .map(|(name, created_ns)| RegistryInfo { name, created_ns })
            .collect())
    }

    /// Repositories of one registry, or of all.
    pub fn repositories(&self, registry: Option<&str>) -> Result<Vec<RepoRow>> {
        Ok(meta::repositories(&self.conn(), registry)?)
    }

    /// Repositories of `registry` at or below path `path` (all when empty), sorted,
    /// with their creation times (one indexed range scan).
    pub fn repositories_under(&self, registry: &str, path: &str) -> Result<Vec<(String, i64)>> {
        Ok(meta::repositories_under(&self.conn(), registry, path)?)
    }

    /// Every repository with a print of its tags' state (one scan), to find out
    /// which repositories changed since an earlier call.
    pub(crate) fn repository_prints(&self) -> Result<Vec<((String, String), meta::RepoPrint)>> {
        Ok(meta::repository_prints(&self.conn())?)
    }

    /// Registries, repositories and tags whose `REGISTRY/REPOSITORY[:TAG]` is `prefix`
    /// or starts with `prefix` followed by `/` or `:` (everything for an empty
    /// prefix), with each image's size; empty registries and repositories too.
    /// Costs one indexed query plus a few per distinct manifest, whatever the
    /// number of tags.
    pub fn list(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let prefix = prefix.trim_end_matches('/');
        let (registry, rest) = match prefix.split_once('/') {
            Some((registry, rest)) => (Some(registry), Some(rest)),
            None if prefix.is_empty() => (None, None),
            None => (Some(prefix.split(':').next().unwrap_or(prefix)), None),
        };
        // `dev/app:1`: repository `app`, tags `1`; `dev/app`: `app` and below.
        let (path, tag) = match rest {
            Some(rest) => match rest.split_once(':') {
                Some((path, tag)) => (Some(path), Some(tag)),
                None => (Some(rest), None),
            },
            None => (None, None),
        };
        let matches = |name: &str| {
            prefix.is_empty()
                || name == prefix
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':'))
        };
        let rows = meta::listing(&self.conn(), registry, path)?;
        let mut described: HashMap<Digest, (Option<String>, u64)> = HashMap::new();
        let mut out = Vec::new();
        for row in rows {
            let entry = match (&row.repository, &row.tag) {
                (None, _) if !matches(&row.registry) || path.is_some() => continue,
                (Some(repository), None)
                    if tag.is_some() || !matches(&format!("{}/{repository}", row.registry)) =>
                {
                    continue
                }
                (Some(repository), Some((name, _))) => {
                    let full = format!("{}/{repository}", row.registry);
                    if !matches(&full) && !matches(&format!("{full}:{name}")) {
                        continue;
                    }
                    row
                }
                _ => row,
            };
            let image = match &entry.tag {
                Some((_, manifest)) => Some(match described.get(manifest) {
                    Some(known) => known.clone(),
                    None => {
                        let media_type = self.blob(manifest)?.map(|i| i.media_type);
                        let known = (media_type, self.image_size(manifest)?);
                        described.insert(*manifest, known.clone());
                        known
                    }
                }),
                None => None,
            };
            out.push(ListEntry {
                registry: entry.registry,
                repository: entry.repository,
                tag: entry.tag.as_ref().map(|(name, _)| name.clone()),
                digest: entry.tag.map(|(_, digest)| digest),
                media_type: image
                    .as_ref()
                    .and_then(|(media_type, _)| media_type.clone()),
                size: image.map(|(_, size)| size),
            });
        }
        Ok(out)
    }

    /// One repository.
    pub fn repository(&self, registry: &str, repository: &str) -> Result<Option<RepoRow>> {
        Ok(meta::repository(&self.conn(), registry, repository)?)
    }

    fn require_repository(
        &self,
        conn: &Connection,
        registry: &str,
        repository: &str,
    ) -> Result<RepoRow> {
        meta::repository(conn, registry, repository)?
            .ok_or_else(|| StoreError::NotFound(format!("repository {registry}/{repository}")))
    }

    /// Tags of a repository.
    pub fn tags(&self, registry: &str, repository: &str) -> Result<Vec<TagRow>> {
        let conn = self.conn();
        let repo = self.require_repository(&conn, registry, repository)?;
        Ok(meta::tags(&conn, repo.id)?)
    }

    /// A repository's row and tags, with those of up to `ahead` repositories of
    /// the registry that follow it in name order (see
    /// [`meta::repositories_tags_from`]); empty when the repository is not there.
    pub fn repository_tags_ahead(
        &self,
        registry: &str,
        repository: &str,
        ahead: u32,
    ) -> Result<Vec<(RepoRow, Vec<TagRow>)>> {
        let found = meta::repositories_tags_from(&self.conn(), registry, repository, ahead + 1)?;
        Ok(match found.first() {
            Some((first, _)) if first.name == repository => found,
            _ => Vec::new(),
        })
    }

    /// One tag.
    pub fn tag_info(&self, registry: &str, repository: &str, tag: &str) -> Result<Option<TagRow>> {
        let conn = self.conn();
        let Some(repo) = meta::repository(&conn, registry, repository)? else {
            return Ok(None);
        };
        Ok(meta::tag(&conn, repo.id, tag)?)
    }

    /// Every manifest reachable from a repository's tags.
    pub fn repository_manifests(&self, registry: &str, repository: &str) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let repo = self.require_repository(&conn, registry, repository)?;
        Ok(meta::repository_manifests(&conn, repo.id)?)
    }

    /// A stored blob's metadata.
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        Ok(meta::blob(&self.conn(), digest)?)
    }

    /// Edges out of a manifest or index.
    pub fn edges(&self, digest: &Digest) -> Result<Vec<Edge>> {
        Ok(meta::edges(&self.conn(), digest)?)
    }

    /// Resolves a reference to the manifest it names. A digest reference must be a
    /// manifest reachable from that repository.
    pub fn resolve(&self, reference: &Reference) -> Result<Digest> {
        let conn = self.conn();
        let repo = self.require_repository(&conn, &reference.registry, &reference.repository)?;
        match &reference.target {
            Target::Tag(tag) => meta::tag(&conn, repo.id, tag)?
                .map(|t| t.manifest)
                .ok_or_else(|| StoreError::NotFound(format!("tag {reference}"))),
            Target::Digest(digest) => {
                if meta::repository_manifests(&conn, repo.id)?.contains(digest) {
                    Ok(*digest)
                } else {
                    Err(StoreError::NotFound(format!("manifest {reference}")))
                }
            }
        }
    }

    /// Every blob reachable from `top` (itself first, each once), following the
    /// edges that keep blobs alive (not `subject`).
    pub fn reachable_blobs(&self, top: &Digest) -> Result<Vec<BlobInfo>> {
        let conn = self.conn();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut work = vec![*top];
        while let Some(digest) = work.pop() {
            if !seen.insert(digest) {
                continue;
            }
            let info = meta::blob(&conn, &digest)?
                .ok_or_else(|| StoreError::NotFound(format!("blob {digest}")))?;
            for edge in meta::edges(&conn, &digest)?.into_iter().rev() {
                if edge.counted && edge.kind != EdgeKind::Subject {
                    work.push(edge.child);
                }
            }
            out.push(info);
        }
        Ok(out)
    }

    /// Bytes of every blob an image (or index) needs, each counted once.
    pub fn image_size(&self, top: &Digest) -> Result<u64> {
        Ok(self.reachable_blobs(top)?.iter().map(|b| b.size).sum())
    }

    // ---- tagging ----

    /// Points `destination` (a tag reference) at `manifest`, which must be a stored
    /// manifest or index (any registry). With `replace` false an existing tag is
    /// `AlreadyExists`. Creates the registry and repository as needed. No data is copied.
    pub fn set_tag(&self, destination: &Reference, manifest: &Digest, replace: bool) -> Result<()> {
        self.set_tags(std::slice::from_ref(destination), manifest, replace)
    }

    /// [`Store::set_tag`] for many destinations in one transaction (all or none):
    /// the bulk path for tools and benchmarks that make thousands of tags.
    pub fn set_tags(
        &self,
        destinations: &[Reference],
        manifest: &Digest,
        replace: bool,
    ) -> Result<()> {
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let info = meta::blob(&tx, manifest)?
                .ok_or_else(|| StoreError::NotFound(format!("manifest {manifest}")))?;
            if !matches!(info.kind, BlobKind::Manifest | BlobKind::Index) {
                return Err(StoreError::Invalid(format!(
                    "{manifest} is a {:?} blob, not a manifest",
                    info.kind
                )));
            }
            for destination in destinations {
                let Some(tag) = destination.tag() else {
                    return Err(StoreError::Invalid(format!(
                        "{destination}: a tag is needed here, not a digest"
                    )));
                };
                let (repo_id, _) =
                    meta::ensure_repository(&tx, &destination.registry, &destination.repository)?;
                if !replace && meta::tag(&tx, repo_id, tag)?.is_some() {
                    return Err(StoreError::AlreadyExists(format!("tag {destination}")));
                }
                meta::set_tag(&tx, repo_id, tag, manifest, &mut doomed)?;
            }
            crate::failpoint::hit("tag.before_commit");
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)
    }

    /// Tags `destination` with what `source` resolves to.
    pub fn tag(
        &self,
        source: &Reference,
        destination: &Reference,
        replace: bool,
    ) -> Result<Digest> {
        let manifest = self.resolve(source)?;
        self.set_tag(destination, &manifest, replace)?;
        Ok(manifest)
    }

    /// Removes a tag (or, for a digest reference, every tag of that repository that
    /// reaches the manifest); blobs nothing references any more are deleted from disk
    /// before this returns. Returns the digests deleted.
    pub fn untag(&self, reference: &Reference) -> Result<Vec<Digest>> {
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let repo = self.require_repository(&tx, &reference.registry, &reference.repository)?;
            match &reference.target {
                Target::Tag(tag) => {
                    if meta::remove_tag(&tx, repo.id, tag, &mut doomed)?.is_none() {
                        return Err(StoreError::NotFound(format!("tag {reference}")));
                    }
                }
                Target::Digest(digest) => {
                    let removed = remove_manifest_tags(&tx, repo.id, digest, &mut doomed)?;
                    if removed == 0 {
                        return Err(StoreError::NotFound(format!("manifest {reference}")));
                    }
                }
            }
            crate::failpoint::hit("rm.before_commit");
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)?;
        Ok(doomed)
    }

    /// Moves a tag atomically, replacing `destination` if it exists. Between
    /// repositories or registries this is a promotion; nothing is copied.
    pub fn move_tag(&self, source: &Reference, destination: &Reference) -> Result<()> {
        let (Some(source_tag), Some(destination_tag)) = (source.tag(), destination.tag()) else {
            return Err(StoreError::Invalid("mv works on tags, not digests".into()));
        };
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let source_repo = self.require_repository(&tx, &source.registry, &source.repository)?;
            let manifest = meta::tag(&tx, source_repo.id, source_tag)?
                .ok_or_else(|| StoreError::NotFound(format!("tag {source}")))?
                .manifest;
            if source == destination {
                return Ok(());
            }
            let (destination_repo, _) =
                meta::ensure_repository(&tx, &destination.registry, &destination.repository)?;
            // Count the new name first so the manifest never drops to zero in between.
            meta::set_tag(
                &tx,
                destination_repo,
                destination_tag,
                &manifest,
                &mut doomed,
            )?;
            meta::remove_tag(&tx, source_repo.id, source_tag, &mut doomed)?;
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)
    }

    /// Deletes a manifest from a repository: every tag there that points at it.
    /// `Busy` if an index reachable from this repository's tags still references it.
    pub fn remove_manifest(
        &self,
        registry: &str,
        repository: &str,
        manifest: &Digest,
    ) -> Result<()> {
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let repo = self.require_repository(&tx, registry, repository)?;
            let reachable = meta::repository_manifests(&tx, repo.id)?;
            if !reachable.contains(manifest) {
                return Err(StoreError::NotFound(format!(
                    "manifest {registry}/{repository}@{manifest}"
                )));
            }
            for (parent, kind) in meta::parents(&tx, manifest)? {
                if kind == EdgeKind::Manifest && reachable.contains(&parent) {
                    return Err(StoreError::Busy(format!(
                        "{registry}/{repository}@{manifest}: still referenced by index {parent}"
                    )));
                }
            }
            remove_manifest_tags(&tx, repo.id, manifest, &mut doomed)?;
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)
    }

    // ---- registries and repositories ----

    /// Creates an empty registry. `AlreadyExists` if it exists.
    pub fn create_registry(&self, name: &str) -> Result<()> {
        reference::validate_registry(name)?;
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let (_, created) = meta::ensure_registry(&tx, name)?;
            if !created {
                return Err(StoreError::AlreadyExists(format!("registry {name}")));
            }
            tx.commit()?;
        }
        self.note_change();
        Ok(())
    }

    /// Creates an empty repository (and its registry). `AlreadyExists` if it exists.
    pub fn create_repository(&self, registry: &str, repository: &str) -> Result<()> {
        reference::validate_registry(registry)?;
        reference::validate_repository(repository)?;
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let (_, created) = meta::ensure_repository(&tx, registry, repository)?;
            if !created {
                return Err(StoreError::AlreadyExists(format!(
                    "repository {registry}/{repository}"
                )));
            }
            tx.commit()?;
        }
        self.note_change();
        Ok(())
    }

    /// Removes a registry with no repositories (`NotEmpty` otherwise).
    pub fn remove_registry(&self, name: &str) -> Result<()> {
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            if meta::registry_id(&tx, name)?.is_none() {
                return Err(StoreError::NotFound(format!("registry {name}")));
            }
            if !meta::delete_registry_if_empty(&tx, name)? {
                return Err(StoreError::NotEmpty(format!("registry {name}")));
            }
            tx.commit()?;
        }
        self.note_change();
        Ok(())
    }

    /// Removes a repository. Without `recursive` it must have no tags (`NotEmpty`);
    /// with it, every tag goes and blobs only it referenced are deleted.
    pub fn remove_repository(
        &self,
        registry: &str,
        repository: &str,
        recursive: bool,
    ) -> Result<()> {
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let repo = self.require_repository(&tx, registry, repository)?;
            let tags = meta::tags(&tx, repo.id)?;
            if !tags.is_empty() && !recursive {
                return Err(StoreError::NotEmpty(format!(
                    "repository {registry}/{repository}"
                )));
            }
            for tag in tags {
                meta::remove_tag(&tx, repo.id, &tag.name, &mut doomed)?;
            }
            meta::delete_repository(&tx, repo.id)?;
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)
    }

    // ---- deletion, gc, fsck ----

    /// Second step of every deletion: unlinks blob files whose rows are gone, unless
    /// a live lease protects them, with their derived cache.
    fn delete_unreferenced(&self, doomed: &[Digest]) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        crate::failpoint::hit("delete.before_unlink");
        let mut conn = self.conn();
        // Holding the write lock: no import can take a lease between check and unlink.
        let tx = meta::write_tx(&mut conn)?;
        for digest in doomed {
            if meta::blob(&tx, digest)?.is_some() || meta::is_leased(&tx, digest)? {
                continue;
            }
            self.cas.remove(digest)?;
            self.remove_cache_of(digest);
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_cache_of(&self, digest: &Digest) -> u64 {
        let dir = self.layer_cache_dir(digest);
        if dir.exists() && std::fs::remove_dir_all(&dir).is_ok() {
            return 1;
        }
        0
    }

    /// Removes leftovers: unreferenced, unleased blob files, stale temp files, dead
    /// leases, and cache entries of blobs that are gone.
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_with_cache_cap(None)
    }

    /// [`Store::gc`], then evicts least recently used unpacked layers until `cache/`
    /// holds at most `cache_cap` bytes (when given).
    pub fn gc_with_cache_cap(&self, cache_cap: Option<u64>) -> Result<GcReport> {
        let mut report = GcReport::default();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            report.leases_expired = meta::expire_leases(&tx)? as u64;
            tx.commit()?;
        }
        // Candidates are found without the lock, then re-checked under it.
        let candidates: Vec<Digest> = {
            let conn = self.conn();
            let mut out = Vec::new();
            for digest in self.cas.list()?.into_iter().flatten() {
                if meta::blob(&conn, &digest)?.is_none() {
                    out.push(digest);
                }
            }
            out
        };
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            for digest in &candidates {
                if meta::blob(&tx, digest)?.is_some() || meta::is_leased(&tx, digest)? {
                    continue;
                }
                let size = std::fs::metadata(self.cas.path(digest))
                    .map(|m| m.len())
                    .unwrap_or(0);
                crate::failpoint::hit("gc.before_unlink");
                self.cas.remove(digest)?;
                report.blobs_removed += 1;
                report.blob_bytes_freed += size;
                report.cache_entries_removed += self.remove_cache_of(digest);
            }
            tx.commit()?;
        }
        report.temp_removed = self.remove_stale_temp()?;
        report.cache_entries_removed += self.remove_orphan_cache()?;
        if let Some(cap) = cache_cap {
            report.cache_bytes_evicted = self.trim_cache(cap)?;
        }
        self.note_change();
        Ok(report)
    }

    /// Temp files whose writer process is gone (the pid is in the name): blobs an
    /// import was writing, staged derived data, and the staging files of layout
    /// writes through a mount (`layout-<pid>-<n>`).
    fn remove_stale_temp(&self) -> Result<u64> {
        let mut removed = 0;
        for name in self.stale_temp_files()? {
            let path = self.root.join(&name);
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if result.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Cache directories of layers that are no longer stored (and that no import in
    /// progress holds a lease on: it may be writing the index right now).
    fn remove_orphan_cache(&self) -> Result<u64> {
        let dir = self.cache_dir().join("layers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut conn = self.conn();
        let tx = meta::write_tx(&mut conn)?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = match Digest::from_hex(&name) {
                Ok(digest) => meta::blob(&tx, &digest)?.is_some() || meta::is_leased(&tx, &digest)?,
                Err(_) => false,
            };
            if !keep && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Re-hashes every blob, checks every reference and count, finds leftovers. With
    /// `repair`, fixes counts and removes leftovers (never a referenced blob).
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let blobs = meta::all_blobs(&self.conn())?;
        let stored: HashSet<Digest> = blobs.iter().map(|b| b.digest).collect();
        for info in &blobs {
            if info.state != BlobState::Present {
                continue; // check_lazy_layers below
            }
            report.blobs_checked += 1;
            match self.cas.rehash(&info.digest)? {
                // Unless it went meanwhile with its row (a concurrent rm), or its
                // row stopped claiming a file (a layer marked bad).
                None if self.blob(&info.digest)?.map(|now| now.state)
                    == Some(BlobState::Present) =>
                {
                    report
                        .missing
                        .push(format!("{} ({:?})", info.digest, info.kind))
                }
                None => {}
                Some((actual, size)) if actual != info.digest || size != info.size => {
                    report.corrupt.push(format!(
                        "{}: content hashes to {actual} ({size} bytes, {} expected)",
                        info.digest, info.size
                    ))
                }
                Some(_) => {}
            }
        }
        let recount = meta::recount(&self.conn())?;
        let stored_counts: HashMap<Digest, u64> =
            blobs.iter().map(|b| (b.digest, b.refcount)).collect();
        let mut fixes = Vec::new();
        for (digest, actual) in recount {
            let recorded = stored_counts.get(&digest).copied().unwrap_or(0);
            if recorded as i64 != actual {
                report
                    .bad_counts
                    .push(format!("{digest}: count {recorded}, references {actual}"));
                fixes.push((digest, actual));
            }
        }
        report.dangling = meta::dangling(&self.conn())?;
        let damaged_layers = self.check_unpacked(&mut report)?;
        self.check_lazy_layers(&mut report, repair)?;
        for entry in self.cas.list()? {
            match entry {
                Ok(digest) if stored.contains(&digest) => {}
                Ok(digest) => {
                    if !meta::is_leased(&self.conn(), &digest)? {
                        report
                            .leftovers
                            .push(format!("blobs/sha256/{}", digest.hex()));
                    }
                }
                Err(name) => report.leftovers.push(format!("blobs/sha256/{name}")),
            }
        }
        report.leftovers.extend(self.stale_temp_files()?);
        if repair {
            if !fixes.is_empty() {
                let mut doomed = Vec::new();
                {
                    let mut conn = self.conn();
                    let tx = meta::write_tx(&mut conn)?;
                    for (digest, actual) in &fixes {
                        if *actual > 0 {
                            meta::set_refcount(&tx, digest, *actual)?;
                        } else {
                            // Unreferenced rows: release them as a last tag would.
                            meta::set_refcount(&tx, digest, 1)?;
                            meta::release(&tx, digest, &mut doomed)?;
                        }
                        report
                            .repaired
                            .push(format!("{digest}: count set to {actual}"));
                    }
                    tx.commit()?;
                }
                self.delete_unreferenced(&doomed)?;
            }
            for layer in damaged_layers {
                self.evict_unpacked(&layer)?;
                report.repaired.push(format!(
                    "cache/layers/{}: unpacked contents dropped",
                    layer.hex()
                ));
            }
            for entry in self.cas.list()? {
                if let Err(name) = entry {
                    let path = self.cas.blobs_dir().join(&name);
                    if std::fs::remove_file(&path).is_ok() {
                        report.repaired.push(format!("removed blobs/sha256/{name}"));
                    }
                }
            }
            let gc = self.gc()?;
            if gc.blobs_removed + gc.temp_removed + gc.cache_entries_removed > 0 {
                report.repaired.push(format!(
                    "gc removed {} blobs, {} temp files, {} cache entries",
                    gc.blobs_removed, gc.temp_removed, gc.cache_entries_removed
                ));
            }
        }
        Ok(report)
    }

    /// Space accounting.
    pub fn df(&self) -> Result<DfReport> {
        let conn = self.conn();
        let blobs = meta::all_blobs(&conn)?;
        let present = |b: &&BlobInfo| b.state == BlobState::Present;
        let mut report = DfReport {
            stored_bytes: blobs.iter().filter(present).map(|b| b.size).sum(),
            blob_count: blobs.iter().filter(present).count() as u64,
            ..Default::default()
        };
        let absent: Vec<Digest> = blobs
            .iter()
            .filter(|b| b.state != BlobState::Present)
            .map(|b| b.digest)
            .collect();
        // What each repository reaches: its distinct tag targets, each manifest's
        // reach asked once (thousands of repositories share a few images).
        let targets = meta::tag_targets(&conn)?;
        let mut reach_of: HashMap<Digest, Vec<(Digest, u64)>> = HashMap::new();
        for (_, manifest) in &targets {
            if !reach_of.contains_key(manifest) {
                reach_of.insert(*manifest, meta::reach(&conn, manifest)?);
            }
        }
        let all_repos = meta::repositories(&conn, None)?;
        drop(conn);
        let repo_index: HashMap<i64, usize> = all_repos
            .iter()
            .enumerate()
            .map(|(index, repo)| (repo.id, index))
            .collect();
        // blob -> (size, repositories using it), repositories by index.
        let mut users: HashMap<Digest, (u64, Vec<usize>)> = HashMap::new();
        for (repo_id, manifest) in &targets {
            let Some(&index) = repo_index.get(repo_id) else {
                continue;
            };
            for (digest, size) in &reach_of[manifest] {
                let (_, list) = users.entry(*digest).or_insert_with(|| (*size, Vec::new()));
                // Targets come sorted by repository: a repeat is the last one pushed.
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
        }
        let mut repos: BTreeMap<String, DfEntry> = BTreeMap::new();
        let mut registries: BTreeMap<String, DfEntry> = BTreeMap::new();
        let mut repo_totals: Vec<DfEntry> = vec![DfEntry::default(); all_repos.len()];
        for (size, repo_list) in users.values_mut() {
            repo_list.sort_unstable();
            repo_list.dedup();
            let registry_set: BTreeSet<&str> = repo_list
                .iter()
                .map(|&i| all_repos[i].registry.as_str())
                .collect();
            report.logical_bytes += *size * repo_list.len() as u64;
            if repo_list.len() > 1 {
                report.shared_bytes += *size;
            } else {
                report.unique_bytes += *size;
            }
            for &index in repo_list.iter() {
                let entry = &mut repo_totals[index];
                entry.total_bytes += *size;
                if repo_list.len() == 1 {
                    entry.unique_bytes += *size;
                } else {
                    entry.shared_bytes += *size;
                }
            }
            for registry in &registry_set {
                let entry = registries.entry((*registry).to_string()).or_default();
                entry.total_bytes += *size;
                if registry_set.len() == 1 {
                    entry.unique_bytes += *size;
                } else {
                    entry.shared_bytes += *size;
                }
            }
        }
        for (repo, totals) in all_repos.iter().zip(repo_totals) {
            repos.insert(format!("{}/{}", repo.registry, repo.name), totals);
        }
        for registry in self.registries()? {
            registries.entry(registry.name).or_default();
        }
        report.registries = registries
            .into_iter()
            .map(|(name, e)| DfEntry { name, ..e })
            .collect();
        report.repositories = repos
            .into_iter()
            .map(|(name, e)| DfEntry { name, ..e })
            .collect();
        report.cache_bytes = dir_size(&self.cache_dir());
        for layer in &absent {
            let progress = self.lazy_progress(layer)?;
            report.lazy_layers += 1;
            report.lazy_fetched_bytes += progress.fetched_bytes;
            report.lazy_missing_bytes += progress.total_bytes - progress.fetched_bytes;
        }
        Ok(report)
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout directory.
    Oci,
    /// A tar of an OCI image layout.
    OciArchive,
    /// A `docker save` tarball.
    DockerArchive,
}

impl crate::archive::BlobReader for Store {
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        let path = self.cas.path(digest);
        Ok(Box::new(std::fs::File::open(path)?))
    }
    fn blob_size(&self, digest: &Digest) -> std::io::Result<u64> {
        Ok(std::fs::metadata(self.cas.path(digest))?.len())
    }
}

impl Store {
    /// Writes the images `references` name to `path` in `format`. Every blob is
    /// re-verified on the way out.
    pub fn export(
        &self,
        references: &[Reference],
        path: &Path,
        format: ExportFormat,
    ) -> Result<()> {
        let mut images = Vec::new();
        for reference in references {
            let digest = self.resolve(reference)?;
            // A lazy image is completed first (its layers fetched and checked).
            self.complete_image(&digest)?;
            let info = self
                .blob(&digest)?
                .ok_or_else(|| StoreError::NotFound(format!("manifest {digest}")))?;
            images.push(crate::archive::ExportImage {
                name: reference.to_string(),
                tag: reference.tag().map(str::to_string),
                descriptor: crate::image::Descriptor::new(info.media_type, digest, info.size),
            });
        }
        let result = match format {
            ExportFormat::Oci => crate::archive::write_oci_layout(path, &images, self),
            ExportFormat::OciArchive => crate::archive::write_oci_archive(path, &images, self),
            ExportFormat::DockerArchive => {
                crate::archive::write_docker_archive(path, &images, self)
            }
        };
        Ok(result?)
    }
}

/// Removes every tag of a repository that points at `manifest`; returns how many.
fn remove_manifest_tags(
    tx: &rusqlite::Transaction<'_>,
    repository_id: i64,
    manifest: &Digest,
    doomed: &mut Vec<Digest>,
) -> Result<usize> {
    let mut removed = 0;
    for tag in meta::tags(tx, repository_id)? {
        if tag.manifest == *manifest {
            meta::remove_tag(tx, repository_id, &tag.name, doomed)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Wraps an I/O error with the store path it happened on.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Disk space used by files under `dir` (allocated blocks; 0 when missing).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                // Disk use, not length: the holes of sparse content cost nothing.
                Ok(_) => {
                    total += entry
                        .metadata()
                        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                        .unwrap_or(0)
                }
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
