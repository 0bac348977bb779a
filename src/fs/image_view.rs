//! The image views under a manifest: `rootfs/` (every layer merged) and
//! `layers/NNN/files/` (one layer's own entries), and the file contents behind them.
//!
//! Owns: the caches of built trees — merged rootfs trees by manifest digest (shared
//! by every repository that shows the manifest, so one image merges once per mount)
//! and per-layer trees by layer digest (shared by every image holding the layer),
//! each bounded by a number of trees and by their estimated size —,
//! the cache of unpacked layer indexes, and opening a file's content: the first open
//! of a file of a layer unpacks that whole layer into `STORE/cache/` (the store's
//! flock makes concurrent processes unpack it once), then trims `cache/` to its cap.
//! Must not know about FUSE, inode numbers or replies.
//!
//! Building a tree reads only layer indexes (written at import), never a layer blob,
//! so listing a freshly imported image costs index loading and merging only.

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;

use crate::digest::Digest;
use crate::layer::{self, CacheDir, LayerIndex, MergedTree, NodeId, NodeKind, Tree};
use crate::store::{Store, StoreError};

use super::lock;

/// Merged rootfs trees kept in memory (a tree costs about 150 bytes per path).
const ROOTFS_TREES: usize = 16;
/// Estimated bytes of merged rootfs trees kept in memory (one bigger tree is kept
/// alone).
const ROOTFS_TREE_BYTES: u64 = 128 << 20;
/// Per-layer trees kept in memory.
const LAYER_TREES: usize = 64;
/// Estimated bytes of per-layer trees kept in memory.
const LAYER_TREE_BYTES: u64 = 64 << 20;
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
    /// What the tree costs in memory, roughly (the caches' bound).
    estimated_bytes: u64,
}

/// Bookkeeping bytes of one heap allocation, roughly (glibc malloc).
const ALLOCATION_OVERHEAD: usize = 16;

impl ImageTree {
    fn new(tree: Tree) -> ImageTree {
        use std::mem::size_of;
        let mut parents = vec![NodeId::ROOT; tree.len()];
        let mut bytes = size_of::<ImageTree>() + parents.len() * size_of::<NodeId>();
        for index in 0..tree.len() {
            let id = NodeId(index as u32);
            let node = tree.node(id);
            bytes += size_of::<layer::Node>() + size_of::<Box<[(Box<[u8]>, NodeId)]>>();
            if let Some(target) = &node.symlink_target {
                bytes += target.len() + ALLOCATION_OVERHEAD;
            }
            for xattr in node.xattrs.iter() {
                bytes += size_of::<layer::Xattr>()
                    + xattr.name.len()
                    + xattr.value.len()
                    + 2 * ALLOCATION_OVERHEAD;
            }
            if node.kind != NodeKind::Dir {
                continue;
            }
            let children = tree.children(id);
            bytes += ALLOCATION_OVERHEAD;
            for (name, child) in children {
                bytes += size_of::<(Box<[u8]>, NodeId)>() + name.len() + ALLOCATION_OVERHEAD;
                if let Some(slot) = parents.get_mut(child.index()) {
                    *slot = id;
                }
            }
        }
        ImageTree {
            tree,
            parents,
            estimated_bytes: bytes as u64,
        }
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

/// A cache slot and the estimated bytes of its tree (0 until built).
#[derive(Debug)]
struct CachedTree {
    slot: Slot,
    bytes: u64,
}

/// Built trees by digest, least recently used evicted beyond a number of trees or
/// an estimated size. A tree evicted while in use lives on with its users; the
/// next request builds it again (the same tree: building is deterministic).
#[derive(Debug)]
struct TreeCache {
    slots: LruCache<Digest, CachedTree>,
    bytes: u64,
    max_trees: usize,
    max_bytes: u64,
}

impl TreeCache {
    fn new(max_trees: usize, max_bytes: u64) -> TreeCache {
        TreeCache {
            slots: LruCache::unbounded(),
            bytes: 0,
            max_trees,
            max_bytes,
        }
    }

    /// The slot of `key`, made empty if missing.
    fn slot(&mut self, key: &Digest) -> Slot {
        let slot = self
            .slots
            .get_or_insert(*key, || CachedTree {
                slot: Slot::default(),
                bytes: 0,
            })
            .slot
            .clone();
        self.trim();
        slot
    }

    /// Records the size of the tree just built into `slot` (unless the slot was
    /// evicted meanwhile), then trims.
    fn filled(&mut self, key: &Digest, slot: &Slot, bytes: u64) {
        if let Some(cached) = self.slots.get_mut(key) {
            if Arc::ptr_eq(&cached.slot, slot) {
                self.bytes = self.bytes - cached.bytes + bytes;
                cached.bytes = bytes;
            }
        }
        self.trim();
    }

    /// Evicts the least recently used trees while over a bound, never the most
    /// recently used one.
    fn trim(&mut self) {
        while (self.slots.len() > self.max_trees || self.bytes > self.max_bytes)
            && self.slots.len() > 1
        {
            match self.slots.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.bytes,
                None => break,
            }
        }
    }

    fn stats(&self) -> (usize, u64) {
        (self.slots.len(), self.bytes)
    }
}

/// Sizes of the tree caches, for the statistics hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TreeCacheStats {
    /// Merged rootfs trees cached.
    pub(crate) rootfs_trees: usize,
    /// Their estimated bytes.
    pub(crate) rootfs_bytes: u64,
    /// Per-layer trees cached.
    pub(crate) layer_trees: usize,
    /// Their estimated bytes.
    pub(crate) layer_bytes: u64,
    /// Unpacked layer indexes cached.
    pub(crate) unpacked_indexes: usize,
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Trees and contents of the image views, shared by the whole mount.
#[derive(Debug)]
pub(crate) struct ImageViews {
    store: Arc<Store>,
    cache_cap: u64,
    rootfs: Mutex<TreeCache>,
    layer_files: Mutex<TreeCache>,
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
            rootfs: Mutex::new(TreeCache::new(ROOTFS_TREES, ROOTFS_TREE_BYTES)),
            layer_files: Mutex::new(TreeCache::new(LAYER_TREES, LAYER_TREE_BYTES)),
            unpacked: Mutex::new(LruCache::new(capacity(UNPACKED_INDEXES))),
        }
    }

    /// Sizes of the caches.
    pub(crate) fn stats(&self) -> TreeCacheStats {
        let (rootfs_trees, rootfs_bytes) = lock(&self.rootfs).stats();
        let (layer_trees, layer_bytes) = lock(&self.layer_files).stats();
        TreeCacheStats {
            rootfs_trees,
            rootfs_bytes,
            layer_trees,
            layer_bytes,
            unpacked_indexes: lock(&self.unpacked).len(),
        }
    }

    fn cached(
        cache: &Mutex<TreeCache>,
        key: &Digest,
        build: impl FnOnce() -> Result<MergedTree, StoreError>,
        what: &dyn Fn() -> String,
    ) -> Result<Arc<ImageTree>, StoreError> {
        let slot = lock(cache).slot(key);
        // Lock order: a slot, then the cache (never the other way round).
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
            "{}: {} nodes ({} bytes) built in {:.1?}",
            what(),
            tree.tree.len(),
            tree.estimated_bytes,
            started.elapsed()
        );
        *filled = Some(tree.clone());
        lock(cache).filled(key, &slot, tree.estimated_bytes);
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
            .map_err(|e| StoreError::layer(layer, e))?;
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

    /// Opens the content of entry `entry` of `layer` if that needs no work now (the
    /// layer is unpacked and known here, the file checked before); `None` when
    /// [`ImageViews::open_content`] has unpacking or hashing to do.
    pub(crate) fn open_content_if_ready(&self, layer: &Digest, entry: u32) -> Option<File> {
        let known = lock(&self.unpacked).get(layer).cloned();
        let Some(unpacked) = known else {
            // A file of a lazy layer fetched before: no waiting behind a fetch.
            return self.store.open_lazy_entry_if_ready(layer, entry as usize);
        };
        self.store
            .open_layer_content_if_verified(layer, &unpacked.cache, &unpacked.index, entry as usize)
            .ok()
            .flatten()
    }

    /// Opens the content of entry `entry` of `layer`, unpacking the layer first if
    /// needed. Content that went missing or is damaged (evicted, a crash while
    /// unpacking, a truncated file) is unpacked again, never served.
    pub(crate) fn open_content(&self, layer: &Digest, entry: u32) -> Result<File, StoreError> {
        let entry = entry as usize;
        // A lazy layer: the file is fetched by ranges and materialized alone (with
        // its neighbours in the same spans), not the whole layer.
        if let Some(file) = self.store.open_lazy_entry(layer, entry)? {
            return Ok(file);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn build(cache: &mut TreeCache, n: u8, bytes: u64) -> Slot {
        let slot = cache.slot(&digest(n));
        cache.filled(&digest(n), &slot, bytes);
        slot
    }

    #[test]
    fn tree_cache_is_bounded_by_count_and_by_bytes() {
        let mut cache = TreeCache::new(3, 100);
        build(&mut cache, 1, 40);
        build(&mut cache, 2, 40);
        assert_eq!(cache.stats(), (2, 80));
        // Using 1 makes 2 the least recently used.
        cache.slot(&digest(1));
        build(&mut cache, 3, 40);
        assert_eq!(cache.stats(), (2, 80), "over 100 bytes: 2 evicted");
        assert!(cache.slots.contains(&digest(1)) && cache.slots.contains(&digest(3)));
        build(&mut cache, 4, 500);
        assert_eq!(
            cache.stats(),
            (1, 500),
            "a tree over the budget is kept alone"
        );
        for n in 5..=8 {
            build(&mut cache, n, 0);
        }
        assert_eq!(cache.stats(), (3, 0), "at most three trees");
    }

    #[test]
    fn a_slot_evicted_while_building_is_not_counted() {
        let mut cache = TreeCache::new(1, 100);
        let building = cache.slot(&digest(1));
        build(&mut cache, 2, 10);
        assert!(!cache.slots.contains(&digest(1)));
        cache.filled(&digest(1), &building, 50);
        assert_eq!(cache.stats(), (1, 10));
        // A new slot for the same key is a different slot.
        let fresh = cache.slot(&digest(1));
        cache.filled(&digest(1), &building, 50);
        assert_eq!(cache.stats(), (1, 0));
        cache.filled(&digest(1), &fresh, 30);
        assert_eq!(cache.stats(), (1, 30));
    }
}
