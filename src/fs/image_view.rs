//! The image views under a manifest: `rootfs/` (every layer merged) and
//! `layers/NNN/files/` (one layer's own entries), and the file contents behind them.
//!
//! Owns: the caches of built trees — merged rootfs trees by manifest digest (shared
//! by every repository that shows the manifest, so one image merges once per mount)
//! and per-layer trees by layer digest (shared by every image holding the layer) —,
//! the cache of unpacked layer indexes, and opening a file's content: the first open
//! of a file of a layer unpacks that whole layer into `STORE/cache/` (the store's
//! flock makes concurrent processes unpack it once), then trims `cache/` to its cap.
//! Must not know about FUSE, inode numbers or replies.
//!
//! Building a tree reads only layer indexes (written at import), never a layer blob,
//! so listing a freshly imported image costs index loading and merging only.

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lru::LruCache;

use crate::digest::Digest;
use crate::layer::{self, CacheDir, LayerIndex, MergedTree, NodeId, NodeKind, Tree};
use crate::store::{Store, StoreError};

/// Merged rootfs trees kept in memory (a tree costs about 150 bytes per path).
const ROOTFS_TREES: usize = 16;
/// Per-layer trees kept in memory.
const LAYER_TREES: usize = 64;
/// Unpacked layer indexes kept in memory (they map entries to content files).
const UNPACKED_INDEXES: usize = 256;
/// Tree warnings logged per tree; the rest are counted.
const LOGGED_WARNINGS: usize = 20;

/// A built tree with the parent of every directory (`..` in listings).
#[derive(Debug)]
pub(crate) struct ImageTree {
    pub(crate) tree: Tree,
    /// `parents[i]` is the directory holding directory `i` (the root: itself). Only
    /// directories have one parent; other nodes (hard links) may have several.
    parents: Vec<NodeId>,
}

impl ImageTree {
    fn new(tree: Tree) -> ImageTree {
        let mut parents = vec![NodeId::ROOT; tree.len()];
        for index in 0..tree.len() {
            let dir = NodeId(index as u32);
            if tree.node(dir).kind != NodeKind::Dir {
                continue;
            }
            for (_, child) in tree.children(dir) {
                if let Some(slot) = parents.get_mut(child.index()) {
                    *slot = dir;
                }
            }
        }
        ImageTree { tree, parents }
    }

    /// The directory holding directory `dir`.
    pub(crate) fn parent(&self, dir: NodeId) -> NodeId {
        self.parents
            .get(dir.index())
            .copied()
            .unwrap_or(NodeId::ROOT)
    }

    /// The node, or `None` for an id that is not in this tree.
    pub(crate) fn get(&self, id: NodeId) -> Option<&layer::Node> {
        self.tree.get(id)
    }
}

/// One cache slot: filled once; concurrent requests for the same tree wait for the
/// first builder instead of merging again.
type Slot = Arc<Mutex<Option<Arc<ImageTree>>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or assignment: a panic cannot leave a half state.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Trees and contents of the image views, shared by the whole mount.
#[derive(Debug)]
pub(crate) struct ImageViews {
    store: Arc<Store>,
    cache_cap: u64,
    rootfs: Mutex<LruCache<Digest, Slot>>,
    layer_files: Mutex<LruCache<Digest, Slot>>,
    unpacked: Mutex<LruCache<Digest, Arc<Unpacked>>>,
}

/// An unpacked layer: its index and its cache directory (made once, so opening a
/// file costs one open and one fstat).
#[derive(Debug)]
struct Unpacked {
    index: LayerIndex,
    cache: CacheDir,
}

impl ImageViews {
    /// Views over `store`; `cache_cap` bounds `STORE/cache/` after every unpack.
    pub(crate) fn new(store: Arc<Store>, cache_cap: u64) -> ImageViews {
        ImageViews {
            store,
            cache_cap,
            rootfs: Mutex::new(LruCache::new(capacity(ROOTFS_TREES))),
            layer_files: Mutex::new(LruCache::new(capacity(LAYER_TREES))),
            unpacked: Mutex::new(LruCache::new(capacity(UNPACKED_INDEXES))),
        }
    }

    fn cached(
        cache: &Mutex<LruCache<Digest, Slot>>,
        key: &Digest,
        build: impl FnOnce() -> Result<MergedTree, StoreError>,
        what: &dyn Fn() -> String,
    ) -> Result<Arc<ImageTree>, StoreError> {
        let slot = lock(cache).get_or_insert(*key, Slot::default).clone();
        let mut filled = lock(&slot);
        if let Some(tree) = filled.as_ref() {
            return Ok(tree.clone());
        }
        let started = Instant::now();
        let merged = build()?;
        for warning in merged.warnings.iter().take(LOGGED_WARNINGS) {
            log::warn!(
                "{}: layer {}: {}: skipped: {}",
                what(),
                warning.layer,
                String::from_utf8_lossy(&warning.path),
                warning.reason
            );
        }
        if merged.warnings.len() > LOGGED_WARNINGS {
            log::warn!(
                "{}: {} more entries skipped",
                what(),
                merged.warnings.len() - LOGGED_WARNINGS
            );
        }
        let tree = Arc::new(ImageTree::new(merged.tree));
        log::debug!(
            "{}: {} nodes built in {:.1?}",
            what(),
            tree.tree.len(),
            started.elapsed()
        );
        *filled = Some(tree.clone());
        Ok(tree)
    }

    /// The merged rootfs of image `manifest`, whose layer blobs `layers` gives, base
    /// first (asked only when the tree must be built: this runs on every getattr).
    /// Node contents name layers by their position in that list.
    pub(crate) fn rootfs(
        &self,
        manifest: &Digest,
        layers: impl FnOnce() -> Vec<Digest>,
    ) -> Result<Arc<ImageTree>, StoreError> {
        Self::cached(
            &self.rootfs,
            manifest,
            || {
                let indexes = layers()
                    .iter()
                    .map(|layer| self.store.layer_index(layer))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&LayerIndex> = indexes.iter().collect();
                Ok(layer::merge_layers(&refs))
            },
            &|| format!("rootfs of {manifest}"),
        )
    }

    /// The tree of one layer's own entries. Node contents name the layer as
    /// position 0 (the tree is shared by images holding the layer at any position).
    pub(crate) fn layer_files(&self, layer: &Digest) -> Result<Arc<ImageTree>, StoreError> {
        Self::cached(
            &self.layer_files,
            layer,
            || Ok(layer::layer_tree(&self.store.layer_index(layer)?, 0)),
            &|| format!("files of layer {layer}"),
        )
    }

    /// Unpacks `layer` (a no-op when another process or an earlier open did) and
    /// remembers its index; trims `cache/` when this call did the unpacking.
    fn unpack(&self, layer: &Digest) -> Result<Arc<Unpacked>, StoreError> {
        let was_unpacked = self.store.cached_layer_is_unpacked(layer).unwrap_or(false);
        let started = Instant::now();
        let index = self.store.unpack_layer(layer)?;
        let cache = CacheDir::new(self.store.layer_cache_dir(layer))
            .map_err(|e| StoreError::Layer(format!("layer {layer}: {e}")))?;
        let unpacked = Arc::new(Unpacked { index, cache });
        lock(&self.unpacked).put(*layer, unpacked.clone());
        if !was_unpacked {
            log::info!("unpacked layer {layer} in {:.1?}", started.elapsed());
        }
        Ok(unpacked)
    }

    /// Brings `cache/` back under its cap (least recently used layers first).
    pub(crate) fn trim(&self) {
        match self.store.trim_cache(self.cache_cap) {
            Ok(0) => {}
            Ok(freed) => log::info!("cache trimmed to its cap: {freed} bytes evicted"),
            Err(error) => log::error!("trimming the cache: {error}"),
        }
    }

    /// Opens the content of entry `entry` of `layer`, unpacking the layer first if
    /// needed. Content that went missing or is damaged (evicted, a crash while
    /// unpacking, a truncated file) is unpacked again, never served.
    pub(crate) fn open_content(&self, layer: &Digest, entry: u32) -> Result<File, StoreError> {
        let entry = entry as usize;
        let known = lock(&self.unpacked).get(layer).cloned();
        let mut unpacked_now = false;
        let unpacked = match known {
            Some(unpacked) => unpacked,
            None => {
                unpacked_now = true;
                self.unpack(layer)?
            }
        };
        let open = |unpacked: &Unpacked| {
            self.store
                .open_layer_content(layer, &unpacked.cache, &unpacked.index, entry)
        };
        let file = match open(&unpacked) {
            Ok(file) => file,
            Err(first) => {
                // Usually an eviction (by this mount's cap or another process), or a
                // damaged content file (hashed on first open).
                log::info!("{first}; unpacking the layer again");
                lock(&self.unpacked).pop(layer);
                // What made the open fail may still be on disk (a wrong-sized file,
                // an unpacked.idx whose contents were removed): start from nothing.
                self.store.evict_unpacked(layer)?;
                unpacked_now = true;
                open(&*self.unpack(layer)?)?
            }
        };
        if unpacked_now {
            // The open file keeps reading even if this evicts its own layer.
            self.trim();
        }
        Ok(file)
    }
}
