//! The mounted tree as a plain view over the [`Store`], knowing nothing of FUSE.
//!
//! Owns: the [`Vfs`] itself: its inode table (numbering in `super::inodes`), the
//! small caches of store reads the node kinds share (repositories, manifest views,
//! the image trees of `super::image_view`), holding and forgetting kernel
//! references, and the sweep of numbers of things gone. What each node is lives in
//! `super::nodes`; the FUSE-facing operations are in `super::read` and
//! `super::write`, link resolution in `super::links`. Must not touch blob bytes
//! (the adapter opens files) and must not know about TTLs or replies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::digest::Digest;
use crate::layer::NodeId;
use crate::store::meta::RepoPrint;
use crate::store::{ManifestView, RegistryInfo, Store};

use super::attr::{Attr, DirEntry, Ino, NodeType};
use super::errno::VfsError;
use super::image_view::{ImageTree, ImageViews, TreeCacheStats};
use super::inodes::{InodeTable, TableStats};
use super::layout::LayoutState;
use super::lock;
use super::nodes::{
    Lives, ManifestAt, ManifestsDir, Namespace, Node, RepoKey, Result, TagsDir, TreeKind,
};
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

/// Repositories whose tags are kept in memory (about 100 bytes a tag).
const REPO_TAGS: usize = 16384;

/// How old a reading of other processes' commits the catalog may go by (SPEC:
/// their changes show within 1 s; this mount's own changes show at once).
const CATALOG_FRESH: std::time::Duration = std::time::Duration::from_millis(10);

/// Repositories whose tags come with those of a repository asked for (the ones
/// after it in name order): a walk lists them next.
const REPO_TAGS_AHEAD: u32 = 63;

/// What a namespace (a registry, or a repository path in it) holds.
#[derive(Debug, Default)]
pub(crate) struct NsInfo {
    /// When the path is itself a repository: its creation time.
    pub(crate) is_repo: Option<i64>,
    /// The next path components of the repositories below it.
    pub(crate) children: BTreeSet<String>,
}

/// A repository's tags: name -> (manifest, last change).
#[derive(Debug)]
pub(crate) struct RepoTags {
    pub(crate) created_ns: i64,
    pub(crate) tags: BTreeMap<String, (Digest, i64)>,
}

impl RepoTags {
    /// When a tag of the repository last changed (`None`: it has no tags).
    pub(crate) fn newest_change(&self) -> Option<i64> {
        self.tags.values().map(|(_, updated_ns)| *updated_ns).max()
    }
}

/// Registries, namespaces and tags as the store had them, each read with one
/// (indexed) query on first use and kept while the store's change token stays
/// the same (one `PRAGMA data_version` per use: a commit by any process shows in
/// the next answer). Exactly what changed is told to the kernel by the change
/// watcher ([`Vfs::refresh`]).
#[derive(Debug)]
struct Catalog {
    /// The store's change token when the entries were read.
    token: Option<u64>,
    /// Moves whenever entries are dropped, so a read that raced a drop is not kept.
    generation: u64,
    registries: Option<Arc<Vec<RegistryInfo>>>,
    namespaces: HashMap<(String, String), Arc<NsInfo>>,
    tags: LruCache<RepoKey, Arc<RepoTags>>,
    /// Tags dropped by a change the watcher has not looked at yet: what the kernel
    /// was told, for [`Vfs::refresh`] to compare with.
    dropped_tags: HashMap<RepoKey, Arc<RepoTags>>,
}

impl Catalog {
    fn new() -> Self {
        Catalog {
            token: None,
            generation: 0,
            registries: None,
            namespaces: HashMap::new(),
            tags: LruCache::new(NonZeroUsize::new(REPO_TAGS).unwrap_or(NonZeroUsize::MIN)),
            dropped_tags: HashMap::new(),
        }
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.registries = None;
        self.namespaces.clear();
        while let Some((repo, tags)) = self.tags.pop_lru() {
            // The oldest drop is what the kernel may still hold.
            self.dropped_tags.entry(repo).or_insert(tags);
        }
    }
}

/// What the change watcher saw last: every repository's print and the registries.
#[derive(Debug, Default)]
struct Seen {
    repos: HashMap<(String, String), RepoPrint>,
    registries: BTreeSet<String>,
}

/// One thing the kernel must forget because the store changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stale {
    /// An inode's attributes, cached listing and link target.
    Inode(Ino),
    /// The name `name` in directory `parent`.
    Entry(Ino, String),
}

/// A repository or path prefix by `(registry, path)`.
type RepoName = (String, String);

/// What one sweep already asked the store.
#[derive(Default)]
struct SweepCache {
    /// Every repository, and every repository path prefix (`(registry, "")` too).
    repos: Option<(HashSet<RepoName>, HashSet<RepoName>)>,
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
    catalog: Mutex<Catalog>,
    /// What the change watcher saw last (`None` before its first look).
    seen: Mutex<Option<Seen>>,
    /// What this mount's `mkdir`s made (see [`MkdirState`]).
    mkdirs: MkdirState,
    /// Files tools are writing through repositories' OCI layouts.
    layout: LayoutState,
    /// Set while one thread sweeps unheld inode numbers.
    sweeping: AtomicBool,
    /// Rounds of the change watcher asked for by this mount's own writes.
    pub(super) changes: Arc<ChangeRounds>,
    /// Entries and inodes the change watcher told the kernel to forget.
    invalidations: std::sync::atomic::AtomicU64,
    /// `mount --pull-through`: registries that resolve on lookup.
    pull_through: Option<Arc<super::pull_through::PullThrough>>,
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
            catalog: Mutex::new(Catalog::new()),
            seen: Mutex::new(None),
            mkdirs: MkdirState::default(),
            layout: LayoutState::new(),
            sweeping: AtomicBool::new(false),
            changes: Arc::default(),
            invalidations: std::sync::atomic::AtomicU64::new(0),
            pull_through: None,
        }
    }

    /// Makes the registries of `options` pull through (see `super::pull_through`).
    pub(crate) fn with_pull_through(
        mut self,
        options: super::pull_through::PullThroughOptions,
    ) -> Self {
        let through = super::pull_through::PullThrough::new(self.store.clone(), options);
        self.pull_through = Some(Arc::new(through));
        self
    }

    /// The pull-through side of the mount, if it has one.
    pub(crate) fn pull_through(&self) -> Option<&super::pull_through::PullThrough> {
        self.pull_through.as_deref()
    }

    /// [`Vfs::pull_through`], shared.
    pub(super) fn pull_through_arc(&self) -> Option<Arc<super::pull_through::PullThrough>> {
        self.pull_through.clone()
    }

    /// The store behind the view.
    pub(crate) fn store(&self) -> &Arc<Store> {
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
    /// "exists": only a sure absence drops a number. The store is asked once per
    /// sweep for repositories and once per repository for its tags or manifests.
    fn still_exists(&self, node: &Node, known: &mut SweepCache) -> bool {
        if known.repos.is_none() {
            let Ok(rows) = self.store.repositories(None) else {
                return true;
            };
            let mut repos = HashSet::new();
            let mut prefixes = HashSet::new();
            for row in rows {
                let mut path = row.name.as_str();
                while let Some((prefix, _)) = path.rsplit_once('/') {
                    if !prefixes.insert((row.registry.clone(), prefix.to_string())) {
                        break;
                    }
                    path = prefix;
                }
                prefixes.insert((row.registry.clone(), String::new()));
                repos.insert((row.registry, row.name));
            }
            known.repos = Some((repos, prefixes));
        }
        let Some((repos, prefixes)) = &known.repos else {
            return true;
        };
        let has_repo = |repo: &RepoKey| {
            // Borrowed lookups would need a key type of their own; a clone is cheap
            // next to the query it saves.
            repos.contains(&(repo.registry.clone(), repo.repository.clone()))
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
                let key = (registry.to_string(), path.to_string());
                registries.contains(registry)
                    && (path.is_empty() || repos.contains(&key) || prefixes.contains(&key))
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
    #[cfg(test)]
    pub(crate) fn changing_dirs(&self) -> Vec<Ino> {
        lock(&self.table).held_nodes(|node| node.kind().listing_changes())
    }

    /// [`Vfs::changing_dirs`] and the tags the kernel holds: everything that can
    /// change with the store outside the immutable manifests.
    pub(crate) fn changing_nodes(&self) -> Vec<Ino> {
        lock(&self.table)
            .held_nodes(|node| node.kind().listing_changes() || matches!(node, Node::Tag(_)))
    }

    /// Counts invalidations sent to the kernel, for the statistics hook.
    pub(crate) fn count_invalidations(&self, n: usize) {
        self.invalidations
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Invalidations sent to the kernel so far.
    pub(crate) fn invalidations(&self) -> u64 {
        self.invalidations
            .load(std::sync::atomic::Ordering::Relaxed)
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

    /// The catalog, emptied first if the store changed since it was filled (a
    /// commit by this mount or any other process shows in the next answer).
    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        let token = self.store.recent_change_token(CATALOG_FRESH).ok();
        let mut catalog = lock(&self.catalog);
        if token.is_none() || catalog.token != token {
            catalog.clear();
            catalog.token = token;
        }
        catalog
    }

    /// Every registry (kept in the catalog).
    pub(super) fn registries(&self) -> Result<Arc<Vec<RegistryInfo>>> {
        let generation = {
            let catalog = self.catalog();
            if let Some(known) = &catalog.registries {
                return Ok(known.clone());
            }
            catalog.generation
        };
        let rows = Arc::new(self.store.registries()?);
        let mut catalog = self.catalog();
        if catalog.generation == generation {
            catalog.registries = Some(rows.clone());
        }
        Ok(rows)
    }

    /// When `registry` was made, if it exists.
    pub(super) fn registry_created(&self, registry: &str) -> Result<Option<i64>> {
        Ok(self
            .registries()?
            .iter()
            .find(|r| r.name == registry)
            .map(|r| r.created_ns))
    }

    /// What a namespace holds (kept in the catalog): read with one range scan of
    /// the repositories at or below `path`.
    pub(super) fn ns(&self, registry: &str, path: &str) -> Result<Arc<NsInfo>> {
        let key = (registry.to_string(), path.to_string());
        let generation = {
            let catalog = self.catalog();
            if let Some(known) = catalog.namespaces.get(&key) {
                return Ok(known.clone());
            }
            catalog.generation
        };
        // The scan returns every repository below `path`: what it says about each
        // deeper namespace is complete too, so they are all kept from this one query
        // (a walk down the tree then asks nothing more).
        let mut infos: HashMap<String, NsInfo> = HashMap::new();
        infos.entry(path.to_string()).or_default();
        for (name, created_ns) in self.store.repositories_under(registry, path)? {
            let mut child = name.as_str();
            while child != path {
                let (parent, last) = child.rsplit_once('/').unwrap_or(("", child));
                let info = infos.entry(parent.to_string()).or_default();
                if !info.children.insert(last.to_string()) {
                    break;
                }
                child = parent;
            }
            infos.entry(name).or_default().is_repo = Some(created_ns);
        }
        let infos: HashMap<String, Arc<NsInfo>> = infos
            .into_iter()
            .map(|(name, info)| (name, Arc::new(info)))
            .collect();
        let info = infos.get(path).cloned().unwrap_or_default();
        let mut catalog = self.catalog();
        if catalog.generation == generation {
            for (name, info) in infos {
                catalog
                    .namespaces
                    .entry((registry.to_string(), name))
                    .or_insert(info);
            }
        }
        Ok(info)
    }

    /// What a namespace holds: whether it is a repository (its creation time), and
    /// the next path components of deeper repositories.
    pub(super) fn namespace(
        &self,
        registry: &str,
        path: &str,
    ) -> Result<(Option<i64>, BTreeSet<String>)> {
        let info = self.ns(registry, path)?;
        Ok((info.is_repo, info.children.clone()))
    }

    /// The tags of repository `repo` (kept in the catalog); `None` when there is
    /// no such repository.
    pub(super) fn repo_tags(&self, repo: &RepoKey) -> Result<Option<Arc<RepoTags>>> {
        let generation = {
            let mut catalog = self.catalog();
            if let Some(known) = catalog.tags.get(repo) {
                return Ok(Some(known.clone()));
            }
            catalog.generation
        };
        // With the next repositories' tags: a walk of the tree asks for them next.
        let found =
            self.store
                .repository_tags_ahead(&repo.registry, &repo.repository, REPO_TAGS_AHEAD)?;
        let mut found = found.into_iter().map(|(row, tags)| {
            let tags = tags
                .into_iter()
                .map(|t| (t.name, (t.manifest, t.updated_ns)))
                .collect();
            let known = Arc::new(RepoTags {
                created_ns: row.created_ns,
                tags,
            });
            (row.name, known)
        });
        let Some((_, known)) = found.next() else {
            return Ok(None);
        };
        let mut catalog = self.catalog();
        if catalog.generation == generation {
            catalog.tags.put(repo.clone(), known.clone());
            for (name, tags) in found {
                let key = RepoKey::new(repo.registry.as_str(), name);
                if !catalog.tags.contains(&key) {
                    catalog.tags.put(key, tags);
                }
            }
        }
        Ok(Some(known))
    }

    /// Called by the change watcher when the store's change token moved: finds out
    /// what changed (one scan of the repositories with a print of their tags,
    /// then one query per changed repository), drops it from the catalog, and
    /// returns exactly what the kernel must forget of it. The first call only
    /// takes note of the store.
    pub(crate) fn refresh(&self) -> Result<Vec<Stale>> {
        let repos: HashMap<(String, String), RepoPrint> =
            self.store.repository_prints()?.into_iter().collect();
        let registries: BTreeSet<String> = self
            .store
            .registries()?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut seen = lock(&self.seen);
        let Some(before) = seen.replace(Seen {
            repos: repos.clone(),
            registries: registries.clone(),
        }) else {
            return Ok(Vec::new());
        };
        drop(seen);
        let mut changed: Vec<(String, String)> = repos
            .iter()
            .filter(|(key, print)| before.repos.get(*key) != Some(*print))
            .map(|(key, _)| key.clone())
            .collect();
        changed.extend(
            before
                .repos
                .keys()
                .filter(|key| !repos.contains_key(*key))
                .cloned(),
        );
        // Repositories that appeared or went: their paths' namespaces change.
        let moved: Vec<&(String, String)> = changed
            .iter()
            .filter(|key| before.repos.get(*key).map(|p| p.id) != repos.get(*key).map(|p| p.id))
            .collect();
        let registries_changed: Vec<&String> = registries
            .symmetric_difference(&before.registries)
            .collect();

        // Drop from the catalog, keeping the old tags to compare.
        let mut old_tags = HashMap::new();
        {
            let mut catalog = lock(&self.catalog);
            let dropped = std::mem::take(&mut catalog.dropped_tags);
            catalog.generation += 1;
            if !registries_changed.is_empty() {
                catalog.registries = None;
            }
            for (registry, name) in &changed {
                let repo = RepoKey::new(registry.clone(), name.clone());
                if let Some(tags) = dropped
                    .get(&repo)
                    .cloned()
                    .or_else(|| catalog.tags.pop(&repo))
                {
                    old_tags.insert(repo, tags);
                }
            }
            for (registry, name) in &moved {
                for path in with_prefixes(name) {
                    catalog
                        .namespaces
                        .remove(&(registry.clone(), path.to_string()));
                }
            }
        }

        let mut stale = Vec::new();
        let number = |node: &Node| lock(&self.table).number(node);
        if !registries_changed.is_empty() {
            stale.push(Stale::Inode(super::attr::ROOT_INO));
            // Only names that went: a new one may already be linked (the daemon
            // answers from the store at once), and dropping it would drop the
            // kernel's whole subtree below it.
            for name in before.registries.difference(&registries) {
                stale.push(Stale::Entry(super::attr::ROOT_INO, name.clone()));
            }
        }
        // Names are only dropped when they went away: a name that stays keeps its
        // dentry (and the inodes below it), its attributes and listing are dropped.
        let mut existing: HashSet<(&str, &str)> = HashSet::new();
        if !moved.is_empty() {
            for (registry, name) in repos.keys() {
                for path in with_prefixes(name) {
                    if !existing.insert((registry.as_str(), path)) {
                        break;
                    }
                }
            }
        }
        for (registry, name) in &moved {
            for path in with_prefixes(name) {
                let dir = Node::Namespace(Namespace {
                    registry: registry.clone(),
                    path: path.to_string(),
                });
                let Some(ino) = number(&dir) else { continue };
                stale.push(Stale::Inode(ino));
                if !existing.contains(&(registry.as_str(), path)) {
                    if let Some(parent) = number(&dir.kind().parent()) {
                        stale.push(Stale::Entry(parent, dir.kind().name()));
                    }
                }
                if path == name.as_str() && !repos.contains_key(&(registry.clone(), name.clone())) {
                    // No longer a repository (maybe still a prefix of deeper ones).
                    stale.push(Stale::Entry(ino, "tags".into()));
                    stale.push(Stale::Entry(ino, "manifests".into()));
                }
            }
        }
        if changed.is_empty() {
            return Ok(stale);
        }
        let changed_set: HashSet<(&str, &str)> = changed
            .iter()
            .map(|(g, r)| (g.as_str(), r.as_str()))
            .collect();
        let held_tags = lock(&self.table).held_matching(|node| {
            matches!(node, Node::Tag(tag)
                if changed_set.contains(&(tag.repo.registry.as_str(), tag.repo.repository.as_str())))
        });
        for (registry, name) in &changed {
            let repo = RepoKey::new(registry.clone(), name.clone());
            for dir in [
                Node::Tags(TagsDir(repo.clone())),
                Node::Manifests(ManifestsDir(repo.clone())),
            ] {
                if let Some(ino) = number(&dir) {
                    stale.push(Stale::Inode(ino));
                }
            }
        }
        // The tags as they are now, for repositories whose tags the kernel holds.
        let mut new_tags: HashMap<RepoKey, Option<Arc<RepoTags>>> = HashMap::new();
        for (_, node) in &held_tags {
            if let Node::Tag(tag) = node {
                if !new_tags.contains_key(&tag.repo) {
                    new_tags.insert(tag.repo.clone(), self.repo_tags(&tag.repo)?);
                }
            }
        }
        for (ino, node) in held_tags {
            let Node::Tag(tag) = &node else { continue };
            let old = old_tags
                .get(&tag.repo)
                .and_then(|tags| tags.tags.get(&tag.name));
            let new = new_tags
                .get(&tag.repo)
                .and_then(|tags| tags.as_ref())
                .and_then(|tags| tags.tags.get(&tag.name));
            // Unknown before (not kept): it may have changed.
            if old.is_none() || old != new {
                stale.push(Stale::Inode(ino));
            }
            if new.is_none() {
                if let Some(dir) = number(&node.kind().parent()) {
                    stale.push(Stale::Entry(dir, tag.name.clone()));
                }
            }
        }
        Ok(stale)
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

/// `path` and each of its prefixes, down to `""` (the registry itself).
fn with_prefixes(path: &str) -> Vec<&str> {
    let mut out = vec![path];
    let mut rest = path;
    while let Some((prefix, _)) = rest.rsplit_once('/') {
        out.push(prefix);
        rest = prefix;
    }
    if !path.is_empty() {
        out.push("");
    }
    out
}

/// Rounds of the change watcher (`super::DirInvalidator`) that this mount's own
/// writes ask for: a rewritten `index.json` changes tags behind the kernel's back,
/// and the kernel keeps names and link targets of the registry tree for a long TTL,
/// so such a write has the watcher invalidate what changed before it returns,
/// instead of at the next poll.
#[derive(Debug, Default)]
pub(crate) struct ChangeRounds {
    state: Mutex<RoundState>,
    wake: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct RoundState {
    /// A watcher runs (none in a view without FUSE).
    watching: bool,
    /// Rounds asked for so far.
    asked: u64,
    /// The highest request a finished round has served.
    served: u64,
}

impl ChangeRounds {
    /// Asks the watcher for a round now and waits, at most `limit`, until a round
    /// that started after this call has ended. Returns at once without a watcher.
    pub(crate) fn run_now(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut state = lock(&self.state);
        if !state.watching {
            return;
        }
        state.asked += 1;
        let wanted = state.asked;
        self.wake.notify_all();
        while state.served < wanted {
            let now = std::time::Instant::now();
            if now >= deadline {
                log::debug!("change watcher did not answer within {limit:?}");
                return;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// The watcher: waits for `poll` or a request, whichever comes first; returns
    /// the request a round starting now serves.
    pub(super) fn next_round(&self, poll: std::time::Duration) -> u64 {
        let mut state = lock(&self.state);
        state.watching = true;
        if state.asked == state.served {
            state = self
                .wake
                .wait_timeout(state, poll)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        state.asked
    }

    /// The watcher: the round serving `request` has ended.
    pub(super) fn round_done(&self, request: u64) {
        let mut state = lock(&self.state);
        state.served = state.served.max(request);
        self.wake.notify_all();
    }
}
