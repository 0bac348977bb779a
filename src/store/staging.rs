//! The staging area of writes through a repository's OCI image layout (SPEC
//! section 7), and what such writes do to the store.
//!
//! Owns: the staging files (`STORE/tmp/layout-<pid>-<n>`: the temporary files and
//! the files in tools' own directories that skopeo, umoci and buildah write in a
//! repository directory of the mount), turning one into a blob (hashed, verified,
//! read-only, fsynced, renamed into `blobs/`, protected by a grace lease), the
//! `blobs/sha256/` a layout shows, unlinking a layout blob, and applying the tag
//! changes of a rewritten `index.json`. Must not touch: names in the mount (which
//! staging file a tool calls what is the mount's business), FUSE.
//!
//! Crash safety: a staging file is named after the daemon's pid, so after a crash
//! `gc` (and `fsck --repair`) removes it; a blob renamed into `blobs/` carries a
//! grace lease committed before the rename, so it is either leased or a leftover
//! `gc` removes; tags change only in transactions (the import's, or one here).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::digest::{DiffId, Digest, Hasher};
use crate::image::{self, Descriptor, ImageSource, LayerCompression, Parsed, SourceImage};
use crate::reference::{Reference, Target};
use crate::store::cas::{sync_dir, CasError};
use crate::store::meta::{self, BlobKind, Owner};
use crate::store::pipeline::IndexedLayer;
use crate::store::{io_error, ImportOptions, Store, StoreError, MAX_JSON_BLOB};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a blob written through a layout and not referenced yet is kept.
pub const DEFAULT_LAYOUT_GRACE: Duration = Duration::from_secs(60 * 60);

/// Prefix of staging file names in `tmp/` (then `<pid>-<n>`, which `gc` reads).
const PREFIX: &str = "layout";

/// Numbers staging files within this process.
static NEXT_STAGED: AtomicU64 = AtomicU64::new(0);

/// Layers renamed in through a layout, being indexed in the background so that
/// the `index.json` that names them finds the work done (`Store::take_prepared`):
/// skopeo writes its other blobs meanwhile. At most [`PREPARED_MAX`] at once;
/// what no `index.json` claims is dropped when newer ones need the room.
#[derive(Debug, Default)]
pub(crate) struct PreparedLayers {
    layers: std::sync::Mutex<Vec<(Digest, Arc<Prepared>)>>,
}

const PREPARED_MAX: usize = 8;

/// One layer being indexed, and what became of it.
#[derive(Debug)]
struct Prepared {
    compression: LayerCompression,
    state: std::sync::Mutex<PreparedState>,
    /// Signalled when the indexer finishes and when a claim is settled.
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct PreparedState {
    /// `Some` once the indexer thread is done.
    result: Option<Result<IndexedLayer>>,
    claim: Claim,
}

/// Whether an import committed a tag on the layer before its indexer finished.
#[derive(Debug, Default)]
enum Claim {
    /// No import took it without waiting (`take_prepared` collects the result).
    #[default]
    None,
    /// An import took it and has not committed yet: the indexer waits.
    Pending { expected: DiffId, what: String },
    /// The import committed: the indexer checks the diff_id and keeps the index.
    Committed { expected: DiffId, what: String },
    /// The import failed: nothing of it refers to the layer; the result is dropped.
    Abandoned,
}

/// What [`Store::take_prepared`] found.
pub(crate) enum PreparedLayer {
    /// Indexed: the caller checks it as an import checks a layer.
    Indexed(IndexedLayer),
    /// Still being indexed. The caller commits without waiting and then says so
    /// ([`DeferredCheck::committed`]); the indexer then checks the layer against the
    /// config's diff_id and keeps its indexes, or marks it bad (its blob removed,
    /// reads EIO, `fsck` names it). Dropped uncommitted, the check is abandoned.
    Deferred(DeferredCheck),
}

/// A layer an import commits before its diff_id is checked (see [`PreparedLayer`]).
#[derive(Debug)]
pub(crate) struct DeferredCheck {
    prepared: Arc<Prepared>,
    expected: DiffId,
    settled: bool,
}

impl DeferredCheck {
    /// The diff_id the config gives the layer, recorded until the check.
    pub(crate) fn expected(&self) -> DiffId {
        self.expected
    }

    /// The import committed: the indexer checks the layer when it is done.
    pub(crate) fn committed(mut self) {
        self.settle(true);
    }

    fn settle(&mut self, committed: bool) {
        self.settled = true;
        let mut state = crate::sys::lock(&self.prepared.state);
        state.claim = match std::mem::take(&mut state.claim) {
            Claim::Pending { expected, what } if committed => Claim::Committed { expected, what },
            _ => Claim::Abandoned,
        };
        self.prepared.changed.notify_all();
    }
}

impl Drop for DeferredCheck {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(false);
        }
    }
}

/// The compression of a blob that looks like a layer, from its first bytes.
fn sniff_layer(head: &[u8]) -> Option<LayerCompression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(LayerCompression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(LayerCompression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(LayerCompression::None)
    } else {
        None
    }
}

/// One tag a rewritten `index.json` names or named: what the writer had read and
/// what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagChange {
    /// The tag.
    pub(crate) tag: String,
    /// Its manifest in the index the writer read (`None`: not there).
    pub(crate) read: Option<Digest>,
    /// Its descriptor in the index the writer wrote (`None`: removed).
    pub(crate) wrote: Option<Descriptor>,
}

/// What applying a rewritten `index.json` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayoutApplied {
    /// Tags set (added or moved).
    pub(crate) set: Vec<String>,
    /// Tags removed.
    pub(crate) removed: Vec<String>,
    /// Tags the writer changed but someone else had changed since it read them.
    pub(crate) left_alone: Vec<String>,
}

/// The store's own blobs as an image source: what `index.json` names is imported
/// (verified, recorded with its references) by the import pipeline itself.
struct StoredBlobs<'a> {
    store: &'a Store,
    images: Vec<SourceImage>,
    name: String,
}

impl ImageSource for StoredBlobs<'_> {
    type Error = CasError;

    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, CasError> {
        Ok(Box::new(self.store.cas.open_blob(digest)?))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The lease holder name of a layout.
fn holder(registry: &str, repository: &str) -> String {
    format!("{registry}/{repository}")
}

impl Store {
    /// A new, empty staging file in `tmp/` (mode 0600, opened for reading and
    /// writing).
    pub(crate) fn create_staged(&self) -> Result<(PathBuf, File)> {
        let dir = self.cas.tmp_dir();
        loop {
            let n = NEXT_STAGED.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{PREFIX}-{}-{n}", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                // Left by an earlier process with our pid: take the next number.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(StoreError::Io { path, source }),
            }
        }
    }

    /// Removes a staging file; a missing one is not an error.
    pub(crate) fn remove_staged(&self, path: &Path) {
        if let Err(error) = fs::remove_file(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing staging file {}: {error}", path.display());
            }
        }
    }

    /// Turns staging file `path` into blob `expected` of layout
    /// `registry/repository`: the bytes are hashed (unless `hashed` already says
    /// what they hash to) and must match, else the file is removed and the error is
    /// `Invalid`. A grace lease of `grace` is committed first; then the file is made
    /// read-only, fsynced and renamed into `blobs/` (or dropped when the blob is
    /// there already). Returns whether a new blob file was made.
    pub(crate) fn commit_staged_blob(
        self: &Arc<Self>,
        path: &Path,
        expected: &Digest,
        hashed: Option<(Digest, u64)>,
        (registry, repository): (&str, &str),
        grace: Duration,
    ) -> Result<bool> {
        let file = File::open(path).map_err(io_error(path))?;
        let before = file.metadata().map_err(io_error(path))?;
        let (actual, size) = match hashed {
            Some(known) => known,
            None => Hasher::file(&file).map_err(io_error(path))?,
        };
        if actual != *expected {
            self.remove_staged(path);
            return Err(StoreError::Invalid(format!(
                "{registry}/{repository}/blobs/sha256/{}: the {size} bytes written hash to {actual}; nothing was kept",
                expected.hex()
            )));
        }
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let expires = meta::now_ns().saturating_add(grace.as_nanos() as i64);
            meta::add_grace_lease(
                &tx,
                expected,
                &holder(registry, repository),
                Owner::current(),
                expires,
            )?;
            tx.commit()?;
        }
        let target = self.cas.path(expected);
        let created = if target.exists() {
            self.remove_staged(path);
            false
        } else {
            file.sync_all().map_err(io_error(path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o444)).map_err(io_error(path))?;
            crate::failpoint::hit("layout.before_blob_rename");
            fs::rename(path, &target).map_err(io_error(&target))?;
            sync_dir(self.cas.blobs_dir())?;
            // Hashed just now: its first open for serving need not hash it again,
            // unless the writer (which may still hold it open) wrote since.
            if let (None, Ok(now)) = (hashed, file.metadata()) {
                if now.len() == before.len() && now.modified().ok() == before.modified().ok() {
                    self.cas.verified_files().trust(&file, expected.as_bytes());
                }
            }
            self.prepare_layer(expected, &target);
            true
        };
        self.note_change();
        Ok(created)
    }

    /// Starts indexing blob `digest` (just renamed in at `path`) in the background
    /// when its first bytes say it is a layer: decompressed, its entry index,
    /// diff_id and seekable index built as an import builds them, for
    /// [`Store::take_prepared`]. Anything else (a config, a manifest) is left.
    fn prepare_layer(self: &Arc<Self>, digest: &Digest, path: &Path) {
        let mut head = Vec::with_capacity(512);
        let read = File::open(path).and_then(|file| file.take(512).read_to_end(&mut head));
        let Some(compression) = read.ok().and_then(|_| sniff_layer(&head)) else {
            return;
        };
        let prepared = Arc::new(Prepared {
            compression,
            state: std::sync::Mutex::new(PreparedState::default()),
            changed: std::sync::Condvar::new(),
        });
        {
            let mut layers = crate::sys::lock(&self.prepared.layers);
            if layers.iter().any(|(d, _)| d == digest) {
                return;
            }
            if layers.len() >= PREPARED_MAX {
                layers.remove(0);
            }
            layers.push((*digest, prepared.clone()));
        }
        let path = path.to_path_buf();
        let store = Arc::clone(self);
        let digest = *digest;
        let spawned = std::thread::Builder::new()
            .name("imagefs-prepare".into())
            .spawn(move || {
                // Nothing waits for it (an import that finds it running commits
                // without it): the tool still writing blobs has the CPU first.
                crate::sys::lower_thread_priority();
                crate::failpoint::hit("layout.prepare");
                let what = format!("layer {digest}");
                let indexed = File::open(&path).map_err(io_error(&path)).and_then(|file| {
                    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
                    crate::store::pipeline::write_and_index(&mut reader, None, compression, &what)
                });
                let mut state = crate::sys::lock(&prepared.state);
                state.result = Some(indexed);
                prepared.changed.notify_all();
                while matches!(state.claim, Claim::Pending { .. }) {
                    state = prepared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if let Claim::Committed { expected, what } = std::mem::take(&mut state.claim) {
                    let indexed = state.result.take().expect("set above");
                    drop(state);
                    store.check_deferred_layer(&digest, indexed, expected, &what);
                }
            });
        if spawned.is_err() {
            crate::sys::lock(&self.prepared.layers).retain(|(d, _)| *d != digest);
        }
    }

    /// The indexes of layer `digest` built in the background since it was renamed
    /// in, if they were built for `compression`; `None` when there are none or they
    /// failed (the caller indexes it itself, for the error). Still running: with
    /// `defer` (the config's diff_id and a name for messages) the caller gets a
    /// [`DeferredCheck`] instead of waiting; without, it waits.
    pub(crate) fn take_prepared(
        &self,
        digest: &Digest,
        compression: LayerCompression,
        defer: Option<(DiffId, &str)>,
    ) -> Option<PreparedLayer> {
        let prepared = {
            let mut layers = crate::sys::lock(&self.prepared.layers);
            let at = layers.iter().position(|(d, _)| d == digest)?;
            layers.remove(at).1
        };
        if prepared.compression != compression {
            return None;
        }
        let mut state = crate::sys::lock(&prepared.state);
        if state.result.is_none() {
            if let Some((expected, what)) = defer {
                state.claim = Claim::Pending {
                    expected,
                    what: what.to_string(),
                };
                drop(state);
                return Some(PreparedLayer::Deferred(DeferredCheck {
                    prepared,
                    expected,
                    settled: false,
                }));
            }
        }
        while state.result.is_none() {
            state = prepared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state
            .result
            .take()
            .and_then(|r| r.ok())
            .map(PreparedLayer::Indexed)
    }

    /// The end of a [`DeferredCheck`] of layer `digest`, which a committed tag
    /// reaches: indexes kept when its content matches the config's diff_id, else
    /// the layer marked bad (logged, its blob removed: reads give EIO, `fsck` names
    /// it), as a lazy layer that fails its checks is. Runs on the indexer's thread.
    fn check_deferred_layer(
        &self,
        digest: &Digest,
        indexed: Result<IndexedLayer>,
        expected: DiffId,
        what: &str,
    ) {
        let why = match indexed {
            Ok(indexed) if indexed.index.diff_id == expected => {
                if let Err(e) = self.save_layer_index(digest, &indexed) {
                    log::warn!("{what}: keeping its indexes: {e}");
                }
                return;
            }
            Ok(indexed) => format!(
                "{what}: its content hashes to {}, but the config's diff_id says {expected}",
                indexed.index.diff_id
            ),
            Err(e) => e.to_string(),
        };
        match self.blob(digest) {
            Ok(Some(info)) if info.state == meta::BlobState::Present => {
                if let Err(e) = self.mark_stored_layer_bad(digest, &why) {
                    log::warn!("{what}: removing the bad layer's blob: {e}");
                }
            }
            // Untagged meanwhile (or marked already): nothing refers to it.
            _ => log::warn!("{why}"),
        }
    }

    /// The size of blob `digest` if a layout may show it: its file is there and a
    /// row or a live lease keeps it (a file with neither is a leftover `gc` takes).
    pub(crate) fn layout_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let size = match fs::metadata(self.cas.path(digest)) {
            Ok(metadata) => metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.cas.path(digest),
                    source,
                })
            }
        };
        let conn = self.conn();
        let kept = meta::blob(&conn, digest)?.is_some() || meta::is_leased(&conn, digest)?;
        Ok(kept.then_some(size))
    }

    /// What `blobs/sha256/` of layout `registry/repository` lists: every blob its
    /// tags reach, and the blobs written through it that a grace lease still keeps,
    /// sorted.
    pub(crate) fn layout_blobs(&self, registry: &str, repository: &str) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let repo = self.require_repository(&conn, registry, repository)?;
        let mut digests = meta::repository_reach(&conn, repo.id)?;
        digests.extend(meta::grace_leased(&conn, &holder(registry, repository))?);
        drop(conn);
        digests.sort();
        digests.dedup();
        digests.retain(|digest| self.cas.contains(digest));
        Ok(digests)
    }

    /// `rm blobs/sha256/<hex>` in a layout: `Busy` while anything references the
    /// blob or an import in progress holds it; a blob only grace leases keep is
    /// deleted.
    pub(crate) fn remove_layout_blob(&self, digest: &Digest) -> Result<()> {
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            if let Some(info) = meta::blob(&tx, digest)? {
                return Err(StoreError::Busy(format!(
                    "blob {digest} is still referenced ({} references; `imagefs why {digest}` shows them)",
                    info.refcount
                )));
            }
            if !self.cas.contains(digest) {
                return Err(StoreError::NotFound(format!("blob {digest}")));
            }
            meta::drop_grace_leases(&tx, digest)?;
            if meta::is_leased(&tx, digest)? {
                return Err(StoreError::Busy(format!(
                    "blob {digest} is about to be referenced by an import in progress"
                )));
            }
            self.cas.remove(digest)?;
            tx.commit()?;
        }
        self.remove_cache_of(digest);
        self.note_change();
        Ok(())
    }

    /// Drops the grace leases on every blob `manifest` reaches: once a tag
    /// references them, their count keeps them, and an untag deletes them at once.
    fn release_grace_leases(&self, manifest: &Digest) -> Result<()> {
        let reachable = self.reachable_blobs(manifest)?;
        let mut conn = self.conn();
        let tx = meta::write_tx(&mut conn)?;
        for info in reachable {
            meta::drop_grace_leases(&tx, &info.digest)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Checks a manifest or index that an `index.json` names and the store has not
    /// recorded yet: its file and those of everything it names are there with the
    /// sizes the descriptors give, and it parses. (The import that records it then
    /// verifies every digest and diff_id.)
    fn check_layout_image(&self, descriptor: &Descriptor, depth: usize) -> Result<()> {
        let digest = &descriptor.digest;
        if let Some(info) = meta::blob(&self.conn(), digest)? {
            return check_size(descriptor, info.size);
        }
        if depth > 8 {
            return Err(StoreError::Invalid(format!(
                "{digest}: indexes nested too deeply"
            )));
        }
        let size = fs::metadata(self.cas.path(digest))
            .map_err(|_| StoreError::NotFound(format!("manifest {digest} (not in the store)")))?
            .len();
        check_size(descriptor, size)?;
        let bytes = self.cas.read(digest, MAX_JSON_BLOB)?;
        let parsed = image::parse_top(&bytes, Some(&descriptor.media_type)).map_err(|source| {
            StoreError::Image {
                what: format!("manifest {digest}"),
                source,
            }
        })?;
        match parsed {
            Parsed::Index(index) => {
                for child in &index.manifests {
                    self.check_layout_image(child, depth + 1)?;
                }
            }
            Parsed::Manifest(manifest) => {
                for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    let stored = match meta::blob(&self.conn(), &blob.digest)? {
                        Some(info) => Some(info.size),
                        None => fs::metadata(self.cas.path(&blob.digest))
                            .ok()
                            .map(|m| m.len()),
                    };
                    let stored = stored.ok_or_else(|| {
                        StoreError::NotFound(format!(
                            "blob {} of manifest {digest} (not in the store)",
                            blob.digest
                        ))
                    })?;
                    check_size(blob, stored)?;
                }
            }
        }
        Ok(())
    }

    /// Applies the tag changes of a rewritten `index.json` of layout
    /// `registry/repository` (SPEC section 7): a tag the writer added or moved is set
    /// (its manifest, recorded with everything it references by the import
    /// pipeline, must be in the store), a tag it removed is untagged, and a tag
    /// whose current value is no longer what the writer read is left alone. Every
    /// manifest is checked before any tag changes; the caller serializes writers
    /// of one mount, and each tag changes in a transaction that checks it again.
    pub(crate) fn apply_layout_index(
        &self,
        registry: &str,
        repository: &str,
        changes: &[TagChange],
    ) -> Result<LayoutApplied> {
        for change in changes {
            if let Some(wrote) = &change.wrote {
                crate::reference::validate_tag(&change.tag)?;
                if let Some(info) = self.blob(&wrote.digest)? {
                    if !matches!(info.kind, BlobKind::Manifest | BlobKind::Index) {
                        return Err(StoreError::Invalid(format!(
                            "tag {}: {} is a {:?} blob, not a manifest",
                            change.tag, wrote.digest, info.kind
                        )));
                    }
                }
                self.check_layout_image(wrote, 0)?;
            }
        }
        let current: BTreeMap<String, Digest> = self
            .tags(registry, repository)?
            .into_iter()
            .map(|t| (t.name, t.manifest))
            .collect();
        let mut applied = LayoutApplied::default();
        let mut to_tag = Vec::new();
        for change in changes {
            let now = current.get(&change.tag).copied();
            let wanted = change.wrote.as_ref().map(|d| d.digest);
            if now != change.read {
                if now != wanted {
                    applied.left_alone.push(change.tag.clone());
                }
                continue;
            }
            if now == wanted {
                continue;
            }
            to_tag.push(change);
        }
        for change in to_tag {
            let reference = Reference {
                registry: registry.to_string(),
                repository: repository.to_string(),
                target: Target::Tag(change.tag.clone()),
            };
            match &change.wrote {
                Some(descriptor) if self.blob(&descriptor.digest)?.is_none() => {
                    let source = StoredBlobs {
                        store: self,
                        images: vec![SourceImage {
                            name: None,
                            descriptor: descriptor.clone(),
                        }],
                        name: format!("{registry}/{repository}/index.json"),
                    };
                    let options = ImportOptions {
                        reference: Some(reference),
                        keep_lazy: true,
                        ..ImportOptions::default()
                    };
                    self.import_from(&source, None, &options)?;
                    self.release_grace_leases(&descriptor.digest)?;
                    applied.set.push(change.tag.clone());
                }
                Some(descriptor) => {
                    if self.set_tag_if(&reference, change.read, Some(&descriptor.digest))? {
                        self.release_grace_leases(&descriptor.digest)?;
                        applied.set.push(change.tag.clone());
                    } else {
                        applied.left_alone.push(change.tag.clone());
                    }
                }
                None => {
                    if self.set_tag_if(&reference, change.read, None)? {
                        applied.removed.push(change.tag.clone());
                    } else {
                        applied.left_alone.push(change.tag.clone());
                    }
                }
            }
        }
        Ok(applied)
    }

    /// Sets (`Some`) or removes (`None`) a tag if it still points at `expected`,
    /// in one transaction; false when it does not (someone changed it meanwhile).
    fn set_tag_if(
        &self,
        reference: &Reference,
        expected: Option<Digest>,
        manifest: Option<&Digest>,
    ) -> Result<bool> {
        let tag = reference.tag().expect("layout references are tags");
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            let (repo_id, _) =
                meta::ensure_repository(&tx, &reference.registry, &reference.repository)?;
            let now = meta::tag(&tx, repo_id, tag)?.map(|t| t.manifest);
            if now != expected {
                return Ok(false);
            }
            match manifest {
                Some(manifest) => {
                    meta::set_tag(&tx, repo_id, tag, manifest, &mut doomed)?;
                }
                None => {
                    meta::remove_tag(&tx, repo_id, tag, &mut doomed)?;
                }
            }
            tx.commit()?;
        }
        self.note_change();
        self.delete_unreferenced(&doomed)?;
        Ok(true)
    }

    /// Staging files in `tmp/` whose writer is gone (leftovers of a crash), by
    /// name relative to the store.
    pub(crate) fn stale_temp_files(&self) -> Result<Vec<String>> {
        let dir = self.cas.tmp_dir();
        let entries = fs::read_dir(dir).map_err(io_error(dir))?;
        let mut stale = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !temp_writer_alive(&name) {
                stale.push(format!("tmp/{name}"));
            }
        }
        stale.sort();
        Ok(stale)
    }
}

/// Whether the process that named a temp file (`<prefix>-<pid>-...`) still runs.
pub(crate) fn temp_writer_alive(name: &str) -> bool {
    let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// A descriptor's size must be the blob's.
fn check_size(descriptor: &Descriptor, actual: u64) -> Result<()> {
    if descriptor.size == actual {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "descriptor of {} says {} bytes, but the blob has {actual}",
        descriptor.digest, descriptor.size
    )))
}
