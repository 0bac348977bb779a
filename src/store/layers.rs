//! Derived data of layer blobs in `STORE/cache/layers/<layer hex>/`: the entry index
//! and, once something inside the layer is read, its unpacked file contents.
//!
//! ```text
//! cache/layers/<layer hex>/
//!   index/<hex>.idx   entry index, content = offsets in the stream (built at import,
//!                     or rebuilt from the blob when missing or corrupt)
//!   index/<hex>.zran  gzip layers: the seekable index (layer::zran), checkpoints to
//!                     read any range of the uncompressed stream; built in the same
//!                     pass as the entry index, rebuilt with it
//!   unpacked.idx      entry index whose regular files point into content/; written
//!                     last, so a crash while unpacking leaves no usable unpacked.idx
//!                     and the layer is unpacked again. Its mtime is the LRU clock.
//!   content/, tmp/    file contents by sha256 (layer::CacheDir layout)
//!   lock              flock: one process unpacks a layer at a time
//! ```
//! Everything of a layer lives under its own directory, so deleting the blob (or
//! evicting it) is one `remove_dir_all`. Identical files are stored once per layer,
//! not across layers: eviction and deletion stay a directory removal, with no
//! reference counting of shared content.

use std::fs::{self, File};
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::SystemTime;

use crate::digest::{DiffId, Digest, HashingReader};
use crate::image::LayerCompression;
use crate::layer::{self, CacheDir, DiscardSink, GzipCheckpoints, GzipIndex, LayerIndex};
use crate::store::pipeline::IndexedLayer;
use crate::store::{io_error, Store, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;

const UNPACKED: &str = "unpacked.idx";
const LOCK: &str = "lock";

/// Unpacked files up to this size are hashed on their first open by whichever
/// thread opens them (see `open_cached`).
const HASH_INLINE_MAX: u64 = 64 * 1024;

fn layer_error(layer: &Digest, e: impl Into<layer::LayerError>) -> StoreError {
    StoreError::layer(layer, e.into())
}

fn layer_problem(layer: &Digest, problem: impl Into<String>) -> StoreError {
    StoreError::LayerCache {
        layer: *layer,
        problem: problem.into(),
    }
}

/// An exclusive `flock` held until dropped.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io_error(path)(std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing would release it anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Most warnings kept per layer in a [`LayerWarnings`]; the rest are only counted.
pub const WARNINGS_KEPT: usize = 10;

/// Entries of one layer that the image's `rootfs/` leaves out or changes: hostile or
/// malformed tar entries, skipped rather than failing the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerWarnings {
    /// Position of the layer in its manifest (`layers/NNN/` in the mount).
    pub position: usize,
    /// The layer blob.
    pub layer: Digest,
    /// How many entries were skipped or changed.
    pub total: usize,
    /// The first [`WARNINGS_KEPT`] of them, in tar order.
    pub warnings: Vec<EntryWarning>,
}

/// One skipped or changed entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryWarning {
    /// The entry's path as the tar has it (invalid UTF-8 replaced; it may hold
    /// control characters: escape it before printing to a terminal).
    pub path: String,
    /// What was wrong and what was done, e.g. `entry skipped: path has a '..'
    /// component`.
    pub reason: String,
}

/// Groups [`layer::skipped_entries`] of an image with layer blobs `layers` (base
/// first, matching `indexes`) by layer, keeping [`WARNINGS_KEPT`] of each.
pub(crate) fn layer_warnings(layers: &[Digest], indexes: &[&LayerIndex]) -> Vec<LayerWarnings> {
    let mut out: Vec<LayerWarnings> = Vec::new();
    for warning in layer::skipped_entries(indexes) {
        let position = warning.layer as usize;
        if out.last().is_none_or(|last| last.position != position) {
            out.push(LayerWarnings {
                position,
                layer: layers[position],
                total: 0,
                warnings: Vec::new(),
            });
        }
        let current = out.last_mut().expect("pushed above");
        current.total += 1;
        if current.warnings.len() < WARNINGS_KEPT {
            current.warnings.push(EntryWarning {
                path: String::from_utf8_lossy(&warning.path).into_owned(),
                reason: warning.reason,
            });
        }
    }
    out
}

/// A layer's cache state on disk, as `gc` and `df` see it.
#[derive(Debug, Clone)]
pub struct CachedLayer {
    /// The layer blob.
    pub layer: Digest,
    /// Bytes its directory holds.
    pub bytes: u64,
    /// Last use of its unpacked contents, if unpacked.
    pub last_used: Option<SystemTime>,
}

impl Store {
    fn layer_cache(&self, layer: &Digest) -> Result<CacheDir> {
        let dir = self.layer_cache_dir(layer);
        CacheDir::new(&dir).map_err(|e| layer_error(layer, e))
    }

    fn layer_compression(&self, layer: &Digest) -> Result<LayerCompression> {
        let info = self
            .blob(layer)?
            .ok_or_else(|| StoreError::NotFound(format!("layer {layer}")))?;
        LayerCompression::from_media_type(&info.media_type).ok_or_else(|| {
            StoreError::Invalid(format!(
                "{layer}: {} is not a layer media type",
                info.media_type
            ))
        })
    }

    /// Refuses an index whose stream digest differs from the diff_id recorded at
    /// import (the blob changed on disk: corruption).
    fn check_diff_id(&self, layer: &Digest, index: &LayerIndex) -> Result<()> {
        let recorded = self.blob(layer)?.and_then(|info| info.diff_id);
        match recorded {
            Some(diff_id) if diff_id != index.diff_id.0 => Err(layer_problem(
                layer,
                format!(
                    "blob is corrupt: its content unpacks to {}, but {} was verified at import (run imagefs fsck)",
                    index.diff_id, diff_id
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Writes the entry index of a layer and, for a gzip layer, its seekable index
    /// (import calls this with what it built while verifying the layer, so indexing
    /// costs no extra pass).
    pub(crate) fn save_layer_index(&self, layer: &Digest, indexed: &IndexedLayer) -> Result<()> {
        let cache = self.layer_cache(layer)?;
        if let Some(checkpoints) = &indexed.checkpoints {
            self.save_gzip_index(layer, &cache, indexed.index.diff_id, checkpoints.clone())?;
        }
        indexed
            .index
            .write_to(&cache.index_path(layer))
            .map_err(|e| layer_error(layer, e))
    }

    fn save_gzip_index(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        diff_id: DiffId,
        checkpoints: GzipCheckpoints,
    ) -> Result<GzipIndex> {
        let index =
            GzipIndex::new(*layer, diff_id, checkpoints).map_err(|e| layer_error(layer, e))?;
        let path = cache.gzip_index_path(layer);
        index
            .write_to(&path)
            .map_err(|e| layer_error(layer, layer::ZranError::Io(e)))?;
        Ok(index)
    }

    /// True when the layer's entry index is in the cache (nothing to fetch or build).
    pub(crate) fn layer_index_cached(&self, layer: &Digest) -> bool {
        let dir = self.layer_cache_dir(layer);
        let path = dir
            .join(layer::INDEX_DIR)
            .join(format!("{}.idx", layer.hex()));
        LayerIndex::read_from(&path).is_ok()
    }

    /// The layer's entry index: the unpacked one when the layer is unpacked, else the
    /// stream index, rebuilt from the blob when missing or corrupt.
    pub(crate) fn layer_index(&self, layer: &Digest) -> Result<LayerIndex> {
        let cache = self.layer_cache(layer)?;
        if let Ok(index) = LayerIndex::read_from(&cache.root().join(UNPACKED)) {
            return Ok(index);
        }
        let path = cache.index_path(layer);
        match LayerIndex::read_from(&path) {
            Ok(index) => Ok(index),
            Err(_) => {
                let _lock = FileLock::acquire(&cache.root().join(LOCK))?;
                // Another process may have built it while we waited.
                if let Ok(index) = LayerIndex::read_from(&path) {
                    return Ok(index);
                }
                Ok(self.rebuild_indexes(layer, &cache)?.0)
            }
        }
    }

    /// The seekable index of a gzip layer whose blob is in the store (`None` for
    /// other compressions), rebuilt from the blob with the entry index when missing,
    /// corrupt, or not for this blob.
    pub fn gzip_index(&self, layer: &Digest) -> Result<Option<GzipIndex>> {
        if self.layer_compression(layer)? != LayerCompression::Gzip {
            return Ok(None);
        }
        let cache = self.layer_cache(layer)?;
        let path = cache.gzip_index_path(layer);
        let usable = |index: GzipIndex| (index.layer() == *layer).then_some(index);
        if let Some(index) = GzipIndex::read_from(&path).ok().and_then(usable) {
            return Ok(Some(index));
        }
        let _lock = FileLock::acquire(&cache.root().join(LOCK))?;
        if let Some(index) = GzipIndex::read_from(&path).ok().and_then(usable) {
            return Ok(Some(index));
        }
        Ok(self.rebuild_indexes(layer, &cache)?.1)
    }

    /// Reads the blob once to rebuild the entry index and, for a gzip layer, the
    /// seekable index; checks the diff_id and saves both. Call with the layer's lock.
    fn rebuild_indexes(
        &self,
        layer: &Digest,
        cache: &CacheDir,
    ) -> Result<(LayerIndex, Option<GzipIndex>)> {
        if self.is_absent(layer)? {
            return self.index_lazy_layer(layer, cache);
        }
        let compression = self.layer_compression(layer)?;
        let blob = self.cas.open_blob(layer)?;
        // Hashed on the way, to tell a corrupt blob from a lying config below.
        let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, blob));
        let (index, checkpoints) = if compression == LayerCompression::Gzip {
            let mut builder =
                layer::GzipIndexBuilder::new(&mut reader).map_err(|e| layer_error(layer, e))?;
            let index = layer::index_layer(&mut builder, &mut DiscardSink)
                .map_err(|e| layer_error(layer, e))?;
            let checkpoints = builder.finish().map_err(|e| layer_error(layer, e))?;
            (index, Some(checkpoints))
        } else {
            let stream = layer::open_layer_stream(&mut reader, compression)
                .map_err(|e| layer_error(layer, e))?;
            let index =
                layer::index_layer(stream, &mut DiscardSink).map_err(|e| layer_error(layer, e))?;
            (index, None)
        };
        if let Err(e) = self.check_diff_id(layer, &index) {
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| layer_error(layer, layer::LayerError::Io(e)))?;
            if reader.finish().0 == *layer {
                // The bytes are the blob's: the config's diff_id was never true. Only
                // a layout write committed before its check (which a crash cut
                // short) records one unchecked; the layer goes bad as there.
                self.mark_stored_layer_bad(
                    layer,
                    &format!(
                        "its content unpacks to {}, not to the config's diff_id",
                        index.diff_id
                    ),
                )?;
                return Err(super::lazy::bad_layer(layer));
            }
            return Err(e);
        }
        let gzip = match checkpoints {
            Some(checkpoints) => {
                Some(self.save_gzip_index(layer, cache, index.diff_id, checkpoints)?)
            }
            None => None,
        };
        index
            .write_to(&cache.index_path(layer))
            .map_err(|e| layer_error(layer, e))?;
        Ok((index, gzip))
    }

    /// The stream entry index and, when `gzip`, the seekable index of a layer as
    /// `cache/` holds them, when both are there, valid and for this layer.
    fn read_cached_indexes(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        gzip: bool,
    ) -> Option<(LayerIndex, Option<GzipIndex>)> {
        let entries = LayerIndex::read_from(&cache.index_path(layer)).ok()?;
        let seekable = if gzip {
            let index = GzipIndex::read_from(&cache.gzip_index_path(layer)).ok()?;
            if index.layer() != *layer || index.diff_id() != entries.diff_id {
                return None;
            }
            Some(index)
        } else {
            None
        };
        Some((entries, seekable))
    }

    /// True when the layer's cache holds its entry index and, for a gzip layer
    /// (`gzip`), its seekable index (index artifacts: nothing to fetch).
    pub(crate) fn has_cached_indexes(&self, layer: &Digest, gzip: bool) -> bool {
        if !self.layer_cache_dir(layer).exists() {
            return false;
        }
        self.layer_cache(layer)
            .ok()
            .and_then(|cache| self.read_cached_indexes(layer, &cache, gzip))
            .is_some()
    }

    /// The stream entry index (never the unpacked one) and, for a gzip layer, the
    /// seekable index, as an index artifact carries them: from `cache/`, or rebuilt
    /// from the blob when missing and the blob is here. `None` for a layer that has
    /// neither its blob nor its indexes (a lazy layer not indexed yet).
    pub(crate) fn artifact_indexes(
        &self,
        layer: &Digest,
    ) -> Result<Option<(LayerIndex, Option<GzipIndex>)>> {
        let gzip = self.layer_compression(layer)? == LayerCompression::Gzip;
        let cache = self.layer_cache(layer)?;
        let found = match self.read_cached_indexes(layer, &cache, gzip) {
            Some(found) => found,
            None => {
                if !self.blob_path(layer).exists() {
                    return Ok(None);
                }
                let _lock = FileLock::acquire(&cache.root().join(LOCK))?;
                match self.read_cached_indexes(layer, &cache, gzip) {
                    Some(found) => found,
                    None => self.rebuild_indexes(layer, &cache)?,
                }
            }
        };
        self.check_diff_id(layer, &found.0)?;
        Ok(Some(found))
    }

    /// Saves indexes fetched from an index artifact (the caller checked them against
    /// the layer) into the layer's cache. Never replaces what the store built: when
    /// the blob is here nothing is saved (the store indexes its own blob, `false`),
    /// and an index file already valid for this layer is kept. `true` when the
    /// layer's cache now holds its indexes.
    pub(crate) fn save_fetched_indexes(
        &self,
        layer: &Digest,
        entries: &LayerIndex,
        gzip: Option<&GzipIndex>,
    ) -> Result<bool> {
        if self.blob_path(layer).exists() {
            return Ok(false);
        }
        let cache = self.layer_cache(layer)?;
        let _lock = FileLock::acquire(&cache.root().join(LOCK))?;
        if self.blob_path(layer).exists() {
            return Ok(false);
        }
        let entries_path = cache.index_path(layer);
        let existing = LayerIndex::read_from(&entries_path).ok();
        if existing
            .as_ref()
            .is_some_and(|e| e.diff_id != entries.diff_id)
        {
            // Something else sits there for this layer: not ours to judge or replace.
            return Ok(false);
        }
        if let Some(gzip) = gzip {
            let path = cache.gzip_index_path(layer);
            let kept = GzipIndex::read_from(&path)
                .ok()
                .is_some_and(|index| index.layer() == *layer);
            if !kept {
                gzip.write_to(&path)
                    .map_err(|e| layer_error(layer, layer::ZranError::Io(e)))?;
            }
        }
        if existing.is_none() {
            entries
                .write_to(&entries_path)
                .map_err(|e| layer_error(layer, e))?;
        }
        Ok(true)
    }

    /// What the merged rootfs of an image with layer blobs `layers` (base first)
    /// leaves out, for each layer that has something (by the layer module's rules
    /// for skipped entries).
    /// Reads the layers' indexes, rebuilding any the cache lost.
    pub fn skipped_entries(&self, layers: &[Digest]) -> Result<Vec<LayerWarnings>> {
        let indexes = layers
            .iter()
            .map(|layer| self.layer_index(layer))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&LayerIndex> = indexes.iter().collect();
        Ok(layer_warnings(layers, &refs))
    }

    /// Unpacks every regular file of the layer into its cache directory (once; other
    /// processes wait and reuse the result) and returns the unpacked index.
    pub(crate) fn unpack_layer(&self, layer: &Digest) -> Result<LayerIndex> {
        let cache = self.layer_cache(layer)?;
        let unpacked = cache.root().join(UNPACKED);
        if let Ok(index) = LayerIndex::read_from(&unpacked) {
            touch(&unpacked);
            return Ok(index);
        }
        let _lock = FileLock::acquire(&cache.root().join(LOCK))?;
        if let Ok(index) = LayerIndex::read_from(&unpacked) {
            touch(&unpacked);
            return Ok(index);
        }
        self.check_room_to_unpack(layer, &cache)?;
        // Contents without an unpacked.idx are a crashed unpack's: start afresh, so
        // that every content file below was written (and hashed) by this unpack.
        for sub in [layer::CONTENT_DIR, layer::TMP_DIR] {
            let _ = fs::remove_dir_all(cache.root().join(sub));
        }
        let cache = CacheDir::new(cache.root()).map_err(|e| layer_error(layer, e))?;
        let compression = self.layer_compression(layer)?;
        let blob = self.cas.open_blob(layer)?;
        let stream = layer::open_layer_stream(BufReader::with_capacity(1 << 20, blob), compression)
            .map_err(|e| layer_error(layer, e))?;
        crate::failpoint::hit("unpack.start");
        let index = layer::unpack_layer(stream, &cache).map_err(|e| layer_error(layer, e))?;
        // The unpack read the whole blob: a blob damaged on disk since import shows
        // here, and nothing from it is served.
        if let Err(e) = self.check_diff_id(layer, &index) {
            // We hold the layer's lock: drop the contents here, not via evict_unpacked.
            for sub in [layer::CONTENT_DIR, layer::TMP_DIR] {
                let _ = fs::remove_dir_all(cache.root().join(sub));
            }
            return Err(e);
        }
        crate::failpoint::hit("unpack.before_index");
        self.save_unpacked_index(layer, &cache, &index)?;
        Ok(index)
    }

    /// Saves `index` as the layer's unpacked index (every regular file's content in
    /// `cache`, just written or checked by this process, which therefore trusts
    /// them: their first open need not hash them again). The caller holds the
    /// layer's lock.
    pub(crate) fn save_unpacked_index(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        index: &LayerIndex,
    ) -> Result<()> {
        index
            .write_to(&cache.root().join(UNPACKED))
            .map_err(|e| layer_error(layer, e))?;
        let mut seen = std::collections::HashSet::new();
        for entry in &index.entries {
            if let layer::ContentRef::Cached(id) = entry.content {
                if seen.insert(id) {
                    if let Ok(file) = File::open(cache.content_path(&id)) {
                        self.cas.verified_files().trust(&file, &id.0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses to unpack a layer whose files would not fit on the store's filesystem
    /// with [`crate::sys::keep_free`] to spare: a small blob of very compressible data
    /// (a "zip bomb" layer) must not fill the disk the metadata database lives on.
    /// Counts the data of every regular file (holes of sparse files excluded, and
    /// without deduplication, so it errs on the side of room).
    fn check_room_to_unpack(&self, layer: &Digest, cache: &CacheDir) -> Result<()> {
        let index = self.layer_index(layer)?;
        let needed: u64 = index
            .entries
            .iter()
            .filter(|e| e.kind == layer::EntryKind::File)
            .map(|e| match &e.sparse {
                Some(chunks) => chunks.iter().map(|c| c.len).sum(),
                None => e.size,
            })
            .fold(0u64, u64::saturating_add);
        let root = cache.root();
        let dir = File::open(root).map_err(io_error(root))?;
        let (free, total) = crate::sys::filesystem_space(&dir).map_err(io_error(root))?;
        let keep = crate::sys::keep_free(total);
        if needed.saturating_add(keep) > free {
            return Err(StoreError::NoSpace(format!(
                "layer {layer}: unpacking its files needs {needed} bytes, the store's \
                 filesystem has {free} free and {keep} must stay free"
            )));
        }
        Ok(())
    }

    /// Opens the cached content of entry `entry` of an unpacked layer index, hashed
    /// on its first open in this process (content files are named by their sha256).
    /// `cache` is the layer's cache directory (`CacheDir::new(layer_cache_dir(..))`),
    /// kept by callers that open many files. A missing, wrong-sized or damaged
    /// content file is an error: unpack the layer again.
    pub(crate) fn open_layer_content(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        index: &LayerIndex,
        entry: usize,
    ) -> Result<File> {
        self.open_cached(layer, cache, index, entry, true)?
            .ok_or_else(|| layer_problem(layer, "content not checked"))
    }

    /// [`Store::open_layer_content`] when it needs no hashing now; `Ok(None)` when
    /// the content file has not been checked by this process yet.
    pub(crate) fn open_layer_content_if_verified(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        index: &LayerIndex,
        entry: usize,
    ) -> Result<Option<File>> {
        self.open_cached(layer, cache, index, entry, false)
    }

    fn open_cached(
        &self,
        layer: &Digest,
        cache: &CacheDir,
        index: &LayerIndex,
        entry: usize,
        may_hash: bool,
    ) -> Result<Option<File>> {
        let entry = index
            .entries
            .get(entry)
            .ok_or_else(|| layer_problem(layer, format!("no entry {entry}")))?;
        let (file, path) =
            match layer::open_content(cache, entry).map_err(|e| layer_error(layer, e))? {
                layer::Content::Cached { file, path } => (file, path),
                layer::Content::InStream { .. } => {
                    return Err(layer_problem(layer, "layer is not unpacked"))
                }
            };
        let layer::ContentRef::Cached(id) = entry.content else {
            return Err(layer_problem(layer, "cached content without an id"));
        };
        let verified = self.cas().verified_files();
        // A small file is hashed here whatever the caller asked: that is one read
        // of a few blocks, as a READ request does, and cheaper than handing the
        // open to another thread and back (a cold `grep -r` opens thousands).
        if !may_hash && entry.size > HASH_INLINE_MAX {
            return match verified.is_verified(&file, &id.0) {
                Ok(true) => Ok(Some(file)),
                Ok(false) => Ok(None),
                Err(e) => Err(io_error(&path)(e)),
            };
        }
        let checked = verified.check_with(&file, &id.0, |file| {
            layer::content_file_id(file, entry).map(|id| Digest::from_bytes(id.0))
        });
        match checked {
            Ok(None) => Ok(Some(file)),
            Ok(Some(actual)) => Err(layer_problem(
                layer,
                format!(
                    "cached content {} is damaged: its bytes hash to {actual}",
                    path.display()
                ),
            )),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Every layer with a cache directory, with its size and last use.
    pub(crate) fn cached_layers(&self) -> Result<Vec<CachedLayer>> {
        let dir = self.cache_dir().join("layers");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(layer) = Digest::from_hex(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            // Unpacked contents, or a lazy layer's fetched ranges and files.
            let last_used = [UNPACKED, "ranges/contents"]
                .iter()
                .filter_map(|name| fs::metadata(entry.path().join(name)).ok())
                .filter_map(|m| m.modified().ok())
                .max();
            out.push(CachedLayer {
                layer,
                bytes: super::dir_size(&entry.path()),
                last_used,
            });
        }
        Ok(out)
    }

    /// Evicts unpacked contents, least recently used first, until the cache holds at
    /// most `cap` bytes. Indexes stay (they are small and make the next look cheap).
    /// Returns the bytes freed. Open files keep reading: eviction only unlinks.
    pub(crate) fn trim_cache(&self, cap: u64) -> Result<u64> {
        let mut layers = self.cached_layers()?;
        let mut total: u64 = layers.iter().map(|l| l.bytes).sum();
        if total <= cap {
            return Ok(0);
        }
        layers.retain(|l| l.last_used.is_some());
        layers.sort_by_key(|l| l.last_used);
        let mut freed = 0;
        for cached in layers {
            if total <= cap {
                break;
            }
            let gained = self.evict_unpacked(&cached.layer)?;
            freed += gained;
            total = total.saturating_sub(gained);
        }
        Ok(freed)
    }
}

impl Store {
    /// Re-hashes every unpacked content file (each is named by its sha256) into
    /// `report`; returns the layers holding a damaged one.
    pub(crate) fn check_unpacked(&self, report: &mut super::FsckReport) -> Result<Vec<Digest>> {
        let mut damaged = Vec::new();
        for cached in self.cached_layers()? {
            let dir = self.layer_cache_dir(&cached.layer);
            // Contents without an unpacked.idx are a crashed unpack's: never served,
            // dropped by the next unpack of the layer.
            let Ok(index) = LayerIndex::read_from(&dir.join(UNPACKED)) else {
                continue;
            };
            let cache = CacheDir::new(&dir).map_err(|e| layer_error(&cached.layer, e))?;
            let mut seen = std::collections::HashSet::new();
            let mut bad = false;
            for entry in &index.entries {
                let layer::ContentRef::Cached(id) = entry.content else {
                    continue;
                };
                if !seen.insert(id) {
                    continue;
                }
                report.cache_files_checked += 1;
                let path = cache.content_path(&id);
                // Opened as the mount opens it (which checks the size), then hashed.
                let actual = match layer::open_content(&cache, entry) {
                    Ok(layer::Content::Cached { file, .. }) => {
                        layer::content_file_id(&file, entry).map_err(layer::LayerError::from)
                    }
                    Ok(layer::Content::InStream { .. }) => continue,
                    Err(e) => Err(e),
                };
                let problem = match actual {
                    Ok(actual) if actual == id => continue,
                    Ok(actual) => format!("bytes hash to {}", actual.hex()),
                    Err(e) => e.to_string(),
                };
                let shown = path.strip_prefix(self.root()).unwrap_or(&path);
                report
                    .cache_damaged
                    .push(format!("{}: {problem}", shown.display()));
                bad = true;
            }
            if bad {
                damaged.push(cached.layer);
            }
        }
        Ok(damaged)
    }

    /// True when the layer's contents are unpacked (its `unpacked.idx` exists).
    pub(crate) fn cached_layer_is_unpacked(&self, layer: &Digest) -> Result<bool> {
        Ok(self.layer_cache_dir(layer).join(UNPACKED).exists())
    }

    /// Drops the unpacked contents of one layer (its index stays), so the next
    /// [`Store::unpack_layer`] starts from nothing: eviction, and recovery from a
    /// damaged content file. Open files keep reading. Returns the bytes freed.
    pub(crate) fn evict_unpacked(&self, layer: &Digest) -> Result<u64> {
        let dir = self.layer_cache_dir(layer);
        if !dir.exists() {
            return Ok(0);
        }
        let _lock = FileLock::acquire(&dir.join(LOCK))?;
        let before = super::dir_size(&dir);
        // unpacked.idx first: from then on nobody trusts content/. A lazy layer's
        // fetched ranges and its record of materialized files go with them.
        let _ = fs::remove_file(dir.join(UNPACKED));
        for sub in ["ranges", layer::CONTENT_DIR, layer::TMP_DIR] {
            let _ = fs::remove_dir_all(dir.join(sub));
        }
        Ok(before.saturating_sub(super::dir_size(&dir)))
    }
}

/// Marks a layer as just used (the LRU clock); failure only costs LRU precision.
fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use crate::layer::{self, EntryKind, GzipIndex};
    use crate::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
    use crate::store::{BlobKind, ImportOptions, Store};
    use crate::Reference;

    /// Import saves the seekable index of a gzip layer (none for zstd), the store
    /// rebuilds it when lost or damaged, reads through it give the files' bytes, and
    /// removing the image removes it with the layer's cache.
    #[test]
    fn import_saves_the_seekable_index_and_removal_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let gzip_layer = LayerSpec::parse(
            "file /big 0644 @text:3000000:big; file /small 0644 \"x\"; hardlink /link /big",
        )
        .unwrap();
        let zstd_layer = LayerSpec::parse("file /z 0644 @text:2000").unwrap();
        let image = ImageBuilder::new()
            .layer(&gzip_layer, Compression::Gzip)
            .layer(&zstd_layer, Compression::Zstd)
            .build()
            .unwrap();
        let layout = dir.path().join("layout");
        sample::write_oci_layout(&layout, &[(Some("t:1"), &Built::from(image))]).unwrap();
        store
            .import(&layout, None, &ImportOptions::default())
            .unwrap();
        let reference = Reference::parse("local/t:1").unwrap();
        let top = store.resolve(&reference).unwrap();
        let layers: Vec<_> = store
            .reachable_blobs(&top)
            .unwrap()
            .into_iter()
            .filter(|b| b.kind == BlobKind::Layer)
            .map(|b| b.digest)
            .collect();
        assert_eq!(layers.len(), 2);
        let mut seen_gzip = 0;
        for layer in &layers {
            let path = store.layer_cache(layer).unwrap().gzip_index_path(layer);
            let Some(index) = store.gzip_index(layer).unwrap() else {
                assert!(!path.exists(), "a zstd layer got a seekable index");
                continue;
            };
            seen_gzip += 1;
            assert!(path.exists(), "import did not save the seekable index");
            assert_eq!(index.layer(), *layer);
            let entries = store.layer_index(layer).unwrap();
            assert_eq!(index.diff_id(), entries.diff_id);
            let blob = std::fs::File::open(store.blob_path(layer)).unwrap();
            for (position, entry) in entries.entries.iter().enumerate() {
                if !matches!(entry.kind, EntryKind::File | EntryKind::Hardlink) {
                    continue;
                }
                let mut through_index = Vec::new();
                for piece in layer::zran::entry_data(&entries, position, 0..u64::MAX).unwrap() {
                    match piece {
                        layer::zran::DataPiece::Stream(range) => {
                            through_index.extend(index.read(&blob, range).unwrap())
                        }
                        layer::zran::DataPiece::Hole(len) => {
                            through_index.resize(through_index.len() + len as usize, 0)
                        }
                    }
                }
                let expected = match &*entry.path {
                    b"small" => b"x".to_vec(),
                    _ => sample::text_bytes(b"big", 3_000_000),
                };
                assert!(through_index == expected, "{:?}", entry.path);
            }
            // Lost, then damaged: rebuilt from the blob, the same.
            std::fs::remove_file(&path).unwrap();
            assert_eq!(store.gzip_index(layer).unwrap().as_ref(), Some(&index));
            let mut bytes = std::fs::read(&path).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(store.gzip_index(layer).unwrap().as_ref(), Some(&index));
            assert_eq!(GzipIndex::read_from(&path).unwrap(), index);
        }
        assert_eq!(seen_gzip, 1);
        store.untag(&reference).unwrap();
        for layer in &layers {
            assert!(!store.layer_cache_dir(layer).exists(), "cache left behind");
        }
    }
}
