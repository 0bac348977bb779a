//! The mounted tree as a plain view over the [`Store`], knowing nothing of FUSE.
//!
//! Owns: the [`Vfs`] itself: its inode table (numbering in `super::inodes`), the
//! small caches of store reads the node kinds share (repositories, manifest views,
//! the image trees of `super::image_view`), holding and forgetting kernel
//! references, and the sweep of numbers of things gone. What each node is lives in
//! `super::nodes`; the FUSE-facing operations are in `super::read` and
//! `super::write`, link resolution in `super::links`. Must not touch blob bytes
//! (the adapter opens files) and must not know about TTLs or replies.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::digest::Digest;
use crate::layer::NodeId;
use crate::store::{ManifestView, RepoRow, Store};

use super::attr::{Attr, DirEntry, Ino, NodeType};
use super::errno::VfsError;
use super::image_view::{ImageTree, ImageViews, TreeCacheStats};
use super::inodes::{InodeTable, TableStats};
use super::layout::LayoutState;
use super::lock;
use super::nodes::{Lives, ManifestAt, Node, RepoKey, Result, TreeKind};
use super::write::MkdirState;

/// Manifests whose [`ManifestView`] is kept in memory (a few hundred bytes each;
/// reading one again costs a few metadata queries and a parse of the manifest).
const MANIFEST_VIEWS: usize = 4096;

/// Sizes of the view's tables and caches, for the statistics hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VfsStats {
    /// The inode table.
    pub(crate) table: TableStats,
    /// Manifest views in memory.
    pub(crate) manifest_views: usize,
    /// Trees of the image views in memory.
    pub(crate) trees: TreeCacheStats,
}

/// Listing of repositories, cached until the store's change token moves.
#[derive(Debug, Default)]
struct RepoCache {
    token: Option<u64>,
    repos: Arc<Vec<RepoRow>>,
}

/// What one sweep already asked the store.
#[derive(Default)]
struct SweepCache {
    repos: Option<Arc<Vec<RepoRow>>>,
    registries: Option<HashSet<String>>,
    tags: HashMap<RepoKey, HashSet<String>>,
    manifests: HashMap<RepoKey, HashSet<Digest>>,
}

/// The view. Every method takes `&self`; tables sit behind short-held mutexes.
#[derive(Debug)]
pub(crate) struct Vfs {
    store: Arc<Store>,
    images: ImageViews,
    pub(super) mountpoint: PathBuf,
    pub(super) read_only: bool,
    mount_time_ns: i64,
    table: Mutex<InodeTable>,
    views: Mutex<LruCache<Digest, Arc<ManifestView>>>,
    repo_cache: Mutex<RepoCache>,
    /// What this mount's `mkdir`s made (see [`MkdirState`]).
    mkdirs: MkdirState,
    /// Files tools are writing through repositories' OCI layouts.
    layout: LayoutState,
    /// Set while one thread sweeps unheld inode numbers.
    sweeping: AtomicBool,
}

impl Vfs {
    /// A view of `store` as mounted at `mountpoint` (absolute; used to resolve
    /// absolute link targets); `cache_cap` bounds `STORE/cache/`.
    pub(crate) fn new(
        store: Arc<Store>,
        mountpoint: PathBuf,
        read_only: bool,
        cache_cap: u64,
    ) -> Self {
        Vfs {
            images: ImageViews::new(store.clone(), cache_cap),
            store,
            mountpoint,
            read_only,
            mount_time_ns: crate::store::meta::now_ns(),
            table: Mutex::new(InodeTable::new()),
            views: Mutex::new(LruCache::new(
                NonZeroUsize::new(MANIFEST_VIEWS).unwrap_or(NonZeroUsize::MIN),
            )),
            repo_cache: Mutex::new(RepoCache::default()),
            mkdirs: MkdirState::default(),
            layout: LayoutState::new(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The store behind the view.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The image views (trees and file contents).
    pub(crate) fn images(&self) -> &ImageViews {
        &self.images
    }

    /// When the mount started (the root's mtime).
    pub(super) fn mount_time_ns(&self) -> i64 {
        self.mount_time_ns
    }

    /// What this mount's `mkdir`s made.
    pub(super) fn mkdirs(&self) -> &MkdirState {
        &self.mkdirs
    }

    /// The files tools are writing through repositories' OCI layouts.
    pub(super) fn layout(&self) -> &LayoutState {
        &self.layout
    }

    // ---- inode numbers ----

    /// The node number `ino` stands for.
    pub(super) fn node(&self, ino: Ino) -> Result<Node> {
        lock(&self.table).node(ino).ok_or(VfsError::NotFound)
    }

    /// The number of `node` (not below a view's root) without a kernel reference:
    /// for listings and `..`.
    pub(super) fn ino_of(&self, node: &Node) -> Ino {
        lock(&self.table).ino_of(node)
    }

    /// The base of the block of numbers of view `kind` of `at`, whose tree has
    /// `len` nodes: node `id` below the view's root is `base + id`.
    pub(super) fn tree_base(&self, at: &ManifestAt, kind: TreeKind, len: usize) -> Ino {
        lock(&self.table).tree_base(&at.repo, &at.digest, kind, len)
    }

    /// Numbers `node` and counts one kernel reference to it in the same step, so a
    /// FORGET racing on another thread cannot drop the number in between. The
    /// caller hands the number to the kernel in an entry reply, or gives the
    /// reference back with [`Vfs::forget`].
    pub(super) fn hold(&self, node: &Node) -> Result<Ino> {
        if let Node::Tree(tree) = node {
            if tree.id != NodeId::ROOT {
                let at = &tree.at;
                let len = self.tree(&at.digest, tree.view)?.tree.len();
                return Ok(
                    lock(&self.table).hold_tree_node(&at.repo, &at.digest, tree.view, len, tree.id)
                );
            }
        }
        Ok(lock(&self.table).hold_node(node))
    }

    /// The attributes of `node` with one kernel reference counted (see
    /// [`Vfs::hold`]); the reference is given back when the node has none (it went
    /// away meanwhile).
    pub(super) fn hold_attr(&self, node: &Node) -> Result<Attr> {
        let ino = self.hold(node)?;
        node.kind()
            .attr(self, ino)
            .inspect_err(|_| self.forget(ino, 1))
    }

    /// Counts one kernel reference to number `ino` and returns its node; `None`
    /// when the number is unknown (never given, or dropped).
    pub(super) fn hold_number(&self, ino: Ino) -> Option<Node> {
        lock(&self.table).hold(ino)
    }

    /// After a rename the moved node keeps its number under its new name.
    pub(super) fn renamed(&self, from: &Node, to: &Node) {
        lock(&self.table).rename(from, to);
    }

    /// FUSE FORGET: the kernel dropped `count` references to `ino`. A node (or a
    /// view's block of numbers) it holds no more keeps its number while it exists;
    /// when the unheld numbers have doubled, a sweep drops those of things gone.
    pub(crate) fn forget(&self, ino: Ino, count: u64) {
        let due = {
            let mut table = lock(&self.table);
            table.forget(ino, count);
            table.sweep_due()
        };
        if due && !self.sweeping.swap(true, Ordering::AcqRel) {
            self.sweep();
            self.sweeping.store(false, Ordering::Release);
        }
    }

    /// Drops the unheld numbers of things no longer in the store. The store is
    /// asked outside the table lock, a few queries per repository; a number
    /// looked up again meanwhile is kept.
    pub(crate) fn sweep(&self) {
        let unheld = lock(&self.table).unheld_nodes();
        let mut known = SweepCache::default();
        let gone: Vec<Ino> = unheld
            .into_iter()
            .filter(|(_, node)| !self.still_exists(node, &mut known))
            .map(|(ino, _)| ino)
            .collect();
        log::debug!("inode sweep: {} numbers of things gone", gone.len());
        lock(&self.table).drop_unheld(&gone);
    }

    /// Whether what `node` stands for is still in the store. Any error counts as
    /// "exists": only a sure absence drops a number.
    fn still_exists(&self, node: &Node, known: &mut SweepCache) -> bool {
        let repos = match &known.repos {
            Some(repos) => repos.clone(),
            None => match self.all_repos() {
                Ok(repos) => known.repos.insert(repos).clone(),
                Err(_) => return true,
            },
        };
        let has_repo = |repo: &RepoKey| {
            repos
                .iter()
                .any(|r| r.registry == repo.registry && r.name == repo.repository)
        };
        match node.kind().lives() {
            Lives::Always => true,
            Lives::Namespace { registry, path } => {
                let registries = match &known.registries {
                    Some(names) => names,
                    None => match self.store.registries() {
                        Ok(rows) => known
                            .registries
                            .insert(rows.into_iter().map(|r| r.name).collect()),
                        Err(_) => return true,
                    },
                };
                registries.contains(registry)
                    && (path.is_empty()
                        || repos.iter().any(|r| {
                            r.registry == registry
                                && (r.name == path
                                    || r.name
                                        .strip_prefix(path)
                                        .is_some_and(|rest| rest.starts_with('/')))
                        }))
            }
            Lives::Repo(repo) => has_repo(repo),
            Lives::Staged(name) => self.layout.file(name).is_some(),
            Lives::StagingDir(dir) => self.layout.dir(&dir.repo, &dir.name).is_some(),
            Lives::Tag(repo, tag) => {
                if !has_repo(repo) {
                    return false;
                }
                if !known.tags.contains_key(repo) {
                    match self.store.tags(&repo.registry, &repo.repository) {
                        Ok(rows) => {
                            known
                                .tags
                                .insert(repo.clone(), rows.into_iter().map(|t| t.name).collect());
                        }
                        Err(_) => return true,
                    }
                }
                known.tags[repo].contains(tag)
            }
            Lives::Manifest(at) => {
                let repo = &at.repo;
                if !has_repo(repo) {
                    return false;
                }
                if !known.manifests.contains_key(repo) {
                    match self
                        .store
                        .repository_manifests(&repo.registry, &repo.repository)
                    {
                        Ok(digests) => {
                            known
                                .manifests
                                .insert(repo.clone(), digests.into_iter().collect());
                        }
                        Err(_) => return true,
                    }
                }
                known.manifests[repo].contains(&at.digest)
            }
        }
    }

    /// The directories the kernel holds whose listing can change: the root, the
    /// registry tree, `tags/` and `manifests/` of repositories.
    pub(crate) fn changing_dirs(&self) -> Vec<Ino> {
        lock(&self.table).held_nodes(|node| node.kind().listing_changes())
    }

    /// Sizes of the tables and caches, for the statistics hook.
    pub(crate) fn stats(&self) -> VfsStats {
        VfsStats {
            table: lock(&self.table).stats(),
            manifest_views: lock(&self.views).len(),
            trees: self.images.stats(),
        }
    }

    /// A listing of directory `ino` (whose parent is `parent`): `.` and `..`, then
    /// `children` numbered without kernel references.
    pub(super) fn listing(
        &self,
        ino: Ino,
        parent: &Node,
        children: Vec<(String, Node, NodeType)>,
    ) -> Vec<DirEntry> {
        let parent_ino = self.ino_of(parent);
        let mut entries = DirEntry::dots(ino, parent_ino);
        entries.reserve(children.len());
        let mut table = lock(&self.table);
        entries.extend(children.into_iter().map(|(name, node, kind)| DirEntry {
            name: name.into_bytes(),
            ino: table.ino_of(&node),
            kind,
            node: Some(node),
        }));
        entries
    }

    // ---- store reads, with the small caches ----

    fn all_repos(&self) -> Result<Arc<Vec<RepoRow>>> {
        // Read the token first: a change racing the query then only causes a re-read.
        let token = self.store.change_token().ok();
        if let Some(token) = token {
            let cache = lock(&self.repo_cache);
            if cache.token == Some(token) {
                return Ok(cache.repos.clone());
            }
        }
        let repos = Arc::new(self.store.repositories(None)?);
        let mut cache = lock(&self.repo_cache);
        cache.token = token;
        cache.repos = repos.clone();
        Ok(repos)
    }

    /// When `registry` was made, if it exists.
    pub(super) fn registry_created(&self, registry: &str) -> Result<Option<i64>> {
        Ok(self
            .store
            .registries()?
            .into_iter()
            .find(|r| r.name == registry)
            .map(|r| r.created_ns))
    }

    /// What a namespace holds: whether it is a repository (its creation time), and
    /// the next path components of deeper repositories.
    pub(super) fn namespace(
        &self,
        registry: &str,
        path: &str,
    ) -> Result<(Option<i64>, BTreeSet<String>)> {
        let repos = self.all_repos()?;
        let mut is_repo = None;
        let mut children = BTreeSet::new();
        for repo in repos.iter().filter(|r| r.registry == registry) {
            if repo.name == path {
                is_repo = Some(repo.created_ns);
                continue;
            }
            let rest = if path.is_empty() {
                Some(repo.name.as_str())
            } else {
                repo.name
                    .strip_prefix(path)
                    .and_then(|rest| rest.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                let next = rest.split('/').next().unwrap_or(rest);
                children.insert(next.to_string());
            }
        }
        Ok((is_repo, children))
    }

    /// The store's view of manifest `manifest` (kept: it never changes).
    pub(super) fn view(&self, manifest: &Digest) -> Result<Arc<ManifestView>> {
        if let Some(view) = lock(&self.views).get(manifest) {
            return Ok(view.clone());
        }
        let view = Arc::new(
            self.store
                .manifest_view(manifest)?
                .ok_or(VfsError::NotFound)?,
        );
        lock(&self.views).put(*manifest, view.clone());
        Ok(view)
    }

    /// The tree of an image view of `digest`.
    pub(super) fn tree(&self, digest: &Digest, kind: TreeKind) -> Result<Arc<ImageTree>> {
        let view = self.view(digest)?;
        if !view.is_image() {
            return Err(VfsError::NotFound);
        }
        let tree = match kind {
            TreeKind::Rootfs => self.images.rootfs(digest, || {
                view.stored_layers()
                    .map(|(_, layer)| layer.digest)
                    .collect()
            })?,
            TreeKind::LayerFiles(position) => {
                let layer = view.stored_layer(position).ok_or(VfsError::NotFound)?;
                self.images.layer_files(&layer.digest)?
            }
        };
        Ok(tree)
    }
}
