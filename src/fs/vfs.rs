//! The mounted tree as a plain view over the [`Store`], knowing nothing of FUSE.
//!
//! Owns: what each path of SPEC section 3 is ([`Node`]), inode numbering
//! ([`InodeTable`]), attributes, directory listings, link targets, and the
//! meaning of each write (unlink, symlink, rename, mkdir, rmdir). It must not touch
//! blob bytes (the adapter opens files) and must not know about TTLs or replies.
//!
//! Inode numbers: a table assigns numbers in order of first sight to [`Node`] keys
//! and keeps each as long as the kernel holds it, following the kernel's lookup
//! counts (see [`InodeTable`]): a long-running mount holds what the kernel holds
//! plus fixed-size caches, however much is browsed. Numbers are never reused, so a
//! number always means the same path-shaped thing; a node the kernel forgot gets a
//! new number when it is looked up again. Nodes are per path (a manifest seen from
//! two repositories has two directories), because FUSE forbids directory aliases.
//!
//! The image views (`rootfs/`, `layers/NNN/files/`) are [`Item::Rootfs`] and
//! [`Item::LayerFiles`] keyed by the node id of their layer `Tree`. Their roots are
//! numbered like any node; everything below gets `base + node id` from a block of
//! numbers reserved per (repository, manifest, view) when the view is first listed
//! or looked into, so a tree of a million paths costs no table entries, hard links
//! (one node id) share one inode, and numbers stay stable while the kernel holds
//! any of the block because trees are deterministic (the tree cache may rebuild a
//! tree meanwhile). Trees themselves are built and cached by [`ImageViews`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::digest::Digest;
use crate::image;
use crate::layer::{self, NodeId, NodeKind};
use crate::reference::{self, Reference, Target};
use crate::store::{BlobInfo, BlobKind, EdgeKind, PlatformRow, RepoRow, Store, StoreError};

use super::errno::VfsError;
use super::image_view::{ImageTree, ImageViews, TreeCacheStats};

/// An inode number.
pub(crate) type Ino = u64;

/// The root directory's inode number (fixed by FUSE).
pub(crate) const ROOT_INO: Ino = 1;

/// Longest chain of our own symlinks followed when resolving a link target.
const MAX_LINK_HOPS: usize = 40;

/// Manifests whose [`ManifestView`] is kept in memory (a few hundred bytes each;
/// reading one again costs a few metadata queries and a parse of the manifest).
const MANIFEST_VIEWS: usize = 4096;

type Result<T, E = VfsError> = std::result::Result<T, E>;

/// A repository, by registry and repository path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepoKey {
    pub(crate) registry: String,
    pub(crate) repository: String,
}

impl RepoKey {
    fn reference(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            target: Target::Tag(tag.to_string()),
        }
    }
}

/// Every kind of path in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Node {
    /// The mount root: registries.
    Root,
    /// A registry (`path` empty) or a repository path prefix inside it, which may
    /// itself be a repository (then it also holds `tags/` and `manifests/`).
    Namespace { registry: String, path: String },
    /// `<repo>/tags/`
    Tags(RepoKey),
    /// `<repo>/tags/<tag>`, a symlink.
    Tag(RepoKey, String),
    /// `<repo>/manifests/`
    Manifests(RepoKey),
    /// Something in or under `<repo>/manifests/sha256:<hex>/`.
    Manifest(RepoKey, Digest, Item),
}

/// What a node under `manifests/sha256:<hex>/` is. Content here never changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Item {
    /// The `sha256:<hex>` directory itself.
    Dir,
    /// `manifest.json`
    ManifestJson,
    /// `config.json`
    ConfigJson,
    /// `layers/`
    Layers,
    /// `layers/NNN/`, by layer position.
    Layer(u32),
    /// `layers/NNN/blob`
    LayerBlob(u32),
    /// `platforms/` (indexes only)
    Platforms,
    /// `platforms/<name>`, a symlink to a child manifest.
    Platform(String),
    /// `rootfs/` (the tree's root) or a node below it (images only).
    Rootfs(NodeId),
    /// `layers/NNN/files/` or a node below it, by layer position (images only).
    LayerFiles(u32, NodeId),
}

/// Which tree an image view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TreeKind {
    /// `rootfs/`
    Rootfs,
    /// `layers/NNN/files/`, by layer position.
    LayerFiles(u32),
}

impl TreeKind {
    fn item(self, id: NodeId) -> Item {
        match self {
            TreeKind::Rootfs => Item::Rootfs(id),
            TreeKind::LayerFiles(position) => Item::LayerFiles(position, id),
        }
    }
}

/// The tree view a node belongs to, and its node id there.
fn tree_parts(node: &Node) -> Option<(&RepoKey, &Digest, TreeKind, NodeId)> {
    match node {
        Node::Manifest(repo, digest, Item::Rootfs(id)) => {
            Some((repo, digest, TreeKind::Rootfs, *id))
        }
        Node::Manifest(repo, digest, Item::LayerFiles(position, id)) => {
            Some((repo, digest, TreeKind::LayerFiles(*position), *id))
        }
        _ => None,
    }
}

/// The file types the tree has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeType {
    /// A directory.
    Directory,
    /// A regular, read-only file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device (image views only).
    CharDevice,
    /// A block device (image views only).
    BlockDevice,
    /// A named pipe (image views only).
    Fifo,
}

impl From<NodeKind> for NodeType {
    fn from(kind: NodeKind) -> Self {
        match kind {
            NodeKind::File => NodeType::File,
            NodeKind::Dir => NodeType::Directory,
            NodeKind::Symlink => NodeType::Symlink,
            NodeKind::CharDevice => NodeType::CharDevice,
            NodeKind::BlockDevice => NodeType::BlockDevice,
            NodeKind::Fifo => NodeType::Fifo,
        }
    }
}

/// Where the bytes of a regular file come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileContent {
    /// A whole blob of the store.
    Blob(Digest),
    /// Entry `entry` of layer blob `layer` (image views).
    LayerEntry { layer: Digest, entry: u32 },
}

/// How long what the kernel learns about a node stays true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Volatility {
    /// Changes with tags and repositories (registries, repositories, `tags/`).
    Volatile,
    /// Its attributes never change, but its name may vanish from its directory
    /// (`manifests/sha256:<hex>` when the last tag reaching it goes).
    ImmutableInVolatileDir,
    /// Never changes (everything deeper under `manifests/`).
    Immutable,
}

/// Attributes of one node. Owner `None` means the mount's owner (the adapter
/// fills it in); image views carry the owner from the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: Ino,
    pub(crate) kind: NodeType,
    pub(crate) size: u64,
    pub(crate) nlink: u32,
    /// Permission bits, setuid/setgid/sticky included.
    pub(crate) perm: u16,
    pub(crate) mtime_ns: i64,
    pub(crate) owner: Option<(u32, u32)>,
    /// Device number of device nodes.
    pub(crate) rdev: u64,
    pub(crate) volatility: Volatility,
}

impl Attr {
    /// 512-byte blocks, as `du` wants them.
    pub(crate) fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// The name's bytes (names inside image views need not be UTF-8).
    pub(crate) name: Vec<u8>,
    pub(crate) ino: Ino,
    pub(crate) kind: NodeType,
    /// The node, for entries outside image views other than `.` and `..`: numbered
    /// again without a query if its number was dropped before READDIRPLUS sends it.
    node: Option<Node>,
}

/// First inode number of the blocks reserved for image view trees; the table's
/// own numbers (one per node ever numbered) stay far below it.
const TREE_INO_BASE: Ino = 1 << 40;

/// Unheld numbers are checked against the store (and those of things gone are
/// dropped) once there are this many, and again each time their count doubles.
const SWEEP_MIN: usize = 4096;

/// A numbered node and the kernel's references to it.
#[derive(Debug)]
struct Numbered {
    node: Node,
    /// Entry replies carrying this number that the kernel has not forgotten yet
    /// (its lookup count).
    lookups: u64,
}

/// The block of inode numbers of one image view: `base + node id`.
#[derive(Debug)]
struct TreeBlock {
    repo: RepoKey,
    digest: Digest,
    kind: TreeKind,
    len: u64,
    /// Lookups of all the block's numbers together that the kernel has not
    /// forgotten yet (it forgets each number with exactly the count it got, so
    /// the sum reaches zero exactly when it holds none of them).
    lookups: u64,
}

impl TreeBlock {
    fn key(&self) -> (RepoKey, Digest, TreeKind) {
        (self.repo.clone(), self.digest, self.kind)
    }
}

/// Sizes of the inode table, for the statistics hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableStats {
    /// Numbered nodes in the table (the root included).
    pub(crate) nodes: usize,
    /// Of those, the ones the kernel holds.
    pub(crate) held_nodes: usize,
    /// Blocks of image view numbers.
    pub(crate) blocks: usize,
    /// Of those, the ones the kernel holds a number of.
    pub(crate) held_blocks: usize,
    /// Outstanding lookups, nodes and blocks together.
    pub(crate) lookups: u64,
    /// Node numbers given out since the mount (they are never reused).
    pub(crate) numbered: u64,
    /// Node numbers and block bases kept for things the kernel does not hold.
    pub(crate) unheld: usize,
}

/// Inode numbers, following the kernel's lookup counts (the FUSE protocol): every
/// entry reply handing a number to the kernel is counted ([`InodeTable::hold`]),
/// every FORGET takes its count back ([`InodeTable::forget`]).
///
/// SPEC: numbers are unique within the mount and stable while it is mounted. So a
/// node or view block the kernel no longer holds (count zero, or numbered by a
/// plain listing) is *unheld*, not dropped: looked up again, it answers its old
/// number. Unheld numbers of things that no longer exist in the store (a deleted
/// tag, repository or manifest) are dropped by a sweep ([`Vfs::forget`] runs it
/// when the unheld set has doubled since the last one), so the table is bounded
/// by what exists and has been seen, not by how long the mount has run. Numbers
/// only grow: a dropped number never comes back meaning something else (asked
/// about, it is unknown: ENOENT), and a thing that comes back gets a new one.
///
/// Nodes below an image view's root get numbers from that view's block instead of
/// one table entry each. The root inode is never forgotten.
#[derive(Debug)]
pub(crate) struct InodeTable {
    nodes: HashMap<Ino, Numbered>,
    by_node: HashMap<Node, Ino>,
    next_ino: Ino,
    /// Blocks by base.
    blocks: BTreeMap<Ino, TreeBlock>,
    block_of: HashMap<(RepoKey, Digest, TreeKind), Ino>,
    next_block: Ino,
    /// Node numbers and block bases the kernel holds no lookup of.
    unheld: HashSet<Ino>,
    /// Size of `unheld` after the last sweep.
    swept_at: usize,
}

impl InodeTable {
    fn new() -> Self {
        let mut table = InodeTable {
            by_node: HashMap::new(),
            nodes: HashMap::new(),
            next_ino: ROOT_INO,
            blocks: BTreeMap::new(),
            block_of: HashMap::new(),
            next_block: TREE_INO_BASE,
            unheld: HashSet::new(),
            swept_at: 0,
        };
        let (root, _) = table.entry(&Node::Root);
        debug_assert_eq!(root, ROOT_INO);
        // The kernel's reference to the root, which it never forgets.
        table.add_lookup(root);
        table
    }

    /// The number of `node`, numbering it on first sight; `true` when new.
    fn entry(&mut self, node: &Node) -> (Ino, bool) {
        debug_assert!(
            tree_parts(node).is_none_or(|(.., id)| id == NodeId::ROOT),
            "nodes below a view's root are numbered by its block"
        );
        if let Some(ino) = self.by_node.get(node) {
            return (*ino, false);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Numbered {
                node: node.clone(),
                lookups: 0,
            },
        );
        self.by_node.insert(node.clone(), ino);
        self.unheld.insert(ino);
        (ino, true)
    }

    /// The base of the block of view (`repo`, `digest`, `kind`), reserving `len`
    /// numbers when it has none; `true` when new. A tree's length never changes
    /// (trees are deterministic), so a block outlives the tree cache's copy.
    fn block(
        &mut self,
        repo: &RepoKey,
        digest: &Digest,
        kind: TreeKind,
        len: usize,
    ) -> (Ino, bool) {
        let key = (repo.clone(), *digest, kind);
        if let Some(base) = self.block_of.get(&key) {
            return (*base, false);
        }
        let base = self.next_block;
        let len = len as u64;
        // One spare number between blocks keeps `base + id` of a root-less id apart.
        self.next_block = base.saturating_add(len + 1);
        self.blocks.insert(
            base,
            TreeBlock {
                repo: repo.clone(),
                digest: *digest,
                kind,
                len,
                lookups: 0,
            },
        );
        self.block_of.insert(key, base);
        self.unheld.insert(base);
        (base, true)
    }

    /// The number of `node` (not below a view's root), without a lookup.
    fn ino_of(&mut self, node: &Node) -> Ino {
        self.entry(node).0
    }

    /// The base of a view's block (see [`InodeTable::block`]), without a lookup.
    fn tree_base(&mut self, repo: &RepoKey, digest: &Digest, kind: TreeKind, len: usize) -> Ino {
        self.block(repo, digest, kind, len).0
    }

    /// Numbers `node` (not below a view's root) and counts one lookup, in one step.
    fn hold_node(&mut self, node: &Node) -> Ino {
        let (ino, _) = self.entry(node);
        self.add_lookup(ino);
        ino
    }

    /// Numbers node `id` (not the root) of a view and counts one lookup.
    fn hold_tree_node(
        &mut self,
        repo: &RepoKey,
        digest: &Digest,
        kind: TreeKind,
        len: usize,
        id: NodeId,
    ) -> Ino {
        let (base, _) = self.block(repo, digest, kind, len);
        let ino = base + u64::from(id.0);
        self.add_lookup(ino);
        ino
    }

    /// Counts one lookup of number `ino` and returns its node; `None` when the
    /// number is unknown (never given, or dropped).
    fn hold(&mut self, ino: Ino) -> Option<Node> {
        let node = self.node(ino)?;
        self.add_lookup(ino);
        Some(node)
    }

    fn add_lookup(&mut self, ino: Ino) {
        let (key, lookups) = if ino >= TREE_INO_BASE {
            match self.block_containing(ino) {
                Some(base) => (base, self.blocks.get_mut(&base).map(|b| &mut b.lookups)),
                None => return,
            }
        } else {
            (ino, self.nodes.get_mut(&ino).map(|n| &mut n.lookups))
        };
        if let Some(lookups) = lookups {
            *lookups += 1;
            if *lookups == 1 {
                self.unheld.remove(&key);
            }
        }
    }

    /// Takes back `count` lookups of `ino` (FUSE FORGET); the node, or the whole
    /// block of a view, becomes unheld when none are left (its number stays until a
    /// sweep finds it gone from the store). The root is always held.
    fn forget(&mut self, ino: Ino, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        if ino >= TREE_INO_BASE {
            let Some(base) = self.block_containing(ino) else {
                log::debug!("forget of unknown inode {ino}");
                return;
            };
            let Some(block) = self.blocks.get_mut(&base) else {
                return;
            };
            block.lookups = Self::take_back(ino, block.lookups, count);
            if block.lookups == 0 {
                self.unheld.insert(base);
            }
            return;
        }
        let Some(numbered) = self.nodes.get_mut(&ino) else {
            log::debug!("forget of unknown inode {ino}");
            return;
        };
        numbered.lookups = Self::take_back(ino, numbered.lookups, count);
        if numbered.lookups == 0 {
            if self.by_node.get(&numbered.node) == Some(&ino) {
                self.unheld.insert(ino);
            } else {
                // Replaced by a rename: its name belongs to another number now.
                self.drop_node(ino);
            }
        }
    }

    fn take_back(ino: Ino, lookups: u64, count: u64) -> u64 {
        if count > lookups {
            log::warn!("inode {ino}: the kernel forgot {count} lookups of {lookups}");
        }
        lookups.saturating_sub(count)
    }

    fn drop_node(&mut self, ino: Ino) {
        if let Some(numbered) = self.nodes.remove(&ino) {
            // After a rename over it, the node's name belongs to another number.
            if self.by_node.get(&numbered.node) == Some(&ino) {
                self.by_node.remove(&numbered.node);
            }
        }
        self.unheld.remove(&ino);
    }

    fn drop_block(&mut self, base: Ino) {
        if let Some(block) = self.blocks.remove(&base) {
            self.block_of.remove(&block.key());
        }
        self.unheld.remove(&base);
    }

    /// True when the unheld numbers should be checked against the store: there
    /// are many, and twice as many as after the last sweep.
    fn sweep_due(&self) -> bool {
        self.unheld.len() >= SWEEP_MIN.max(self.swept_at.saturating_mul(2))
    }

    /// The unheld numbers with what each stands for (a block by its view's
    /// manifest directory), for a sweep.
    fn unheld_nodes(&self) -> Vec<(Ino, Node)> {
        self.unheld
            .iter()
            .filter_map(|&ino| {
                if ino >= TREE_INO_BASE {
                    let block = self.blocks.get(&ino)?;
                    Some((
                        ino,
                        Node::Manifest(block.repo.clone(), block.digest, Item::Dir),
                    ))
                } else {
                    Some((ino, self.nodes.get(&ino)?.node.clone()))
                }
            })
            .collect()
    }

    /// Drops the numbers in `gone` that are still unheld, and notes the sweep.
    fn drop_unheld(&mut self, gone: &[Ino]) {
        for &ino in gone {
            if !self.unheld.contains(&ino) {
                continue; // looked up again meanwhile
            }
            if ino >= TREE_INO_BASE {
                self.drop_block(ino);
            } else if ino != ROOT_INO {
                self.drop_node(ino);
            }
        }
        self.swept_at = self.unheld.len();
    }

    /// The base of the block holding number `ino`, if `ino` is one of its nodes.
    fn block_containing(&self, ino: Ino) -> Option<Ino> {
        let (base, block) = self.blocks.range(..=ino).next_back()?;
        let id = ino - base;
        (id != 0 && id < block.len).then_some(*base)
    }

    /// After a rename the kernel keeps the moved inode under its new name: `from`'s
    /// number now means `to` (its lookups stay as they are), and `from` gets a fresh
    /// number if it ever comes back.
    fn rename(&mut self, from: &Node, to: &Node) {
        let Some(ino) = self.by_node.remove(from) else {
            return;
        };
        if let Some(numbered) = self.nodes.get_mut(&ino) {
            numbered.node = to.clone();
        }
        if let Some(replaced) = self.by_node.insert(to.clone(), ino) {
            // The kernel drops the replaced inode with its dentry and forgets it in
            // its own time; until then its number keeps naming `to`, which is
            // harmless. One it never held goes now.
            if self.nodes.get(&replaced).is_some_and(|n| n.lookups == 0) {
                self.drop_node(replaced);
            }
        }
    }

    fn node(&self, ino: Ino) -> Option<Node> {
        if ino >= TREE_INO_BASE {
            let base = self.block_containing(ino)?;
            let block = self.blocks.get(&base)?;
            let id = NodeId(u32::try_from(ino - base).ok()?);
            return Some(Node::Manifest(
                block.repo.clone(),
                block.digest,
                block.kind.item(id),
            ));
        }
        self.nodes.get(&ino).map(|n| n.node.clone())
    }

    /// Numbers of the nodes the kernel holds that match `which`.
    fn held_nodes(&self, which: impl Fn(&Node) -> bool) -> Vec<Ino> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.lookups > 0 && which(&n.node))
            .map(|(ino, _)| *ino)
            .collect()
    }

    fn stats(&self) -> TableStats {
        let held_nodes = self.nodes.values().filter(|n| n.lookups > 0).count();
        let held_blocks = self.blocks.values().filter(|b| b.lookups > 0).count();
        let lookups = self.nodes.values().map(|n| n.lookups).sum::<u64>()
            + self.blocks.values().map(|b| b.lookups).sum::<u64>();
        TableStats {
            nodes: self.nodes.len(),
            held_nodes,
            blocks: self.blocks.len(),
            held_blocks,
            lookups,
            numbered: self.next_ino - 1,
            unheld: self.unheld.len(),
        }
    }
}

/// What never changes about a manifest or index, read once per mount.
#[derive(Debug)]
struct ManifestView {
    info: BlobInfo,
    config: Option<BlobInfo>,
    /// (position, layer blob), base layer first.
    layers: Vec<(u32, BlobInfo)>,
    /// (name, child manifest), index order.
    platforms: Vec<(String, Digest)>,
    /// A container image: it has `rootfs/` and `layers/NNN/files/`.
    is_image: bool,
}

impl ManifestView {
    fn layer(&self, position: u32) -> Option<&BlobInfo> {
        self.layers
            .iter()
            .find(|(p, _)| *p == position)
            .map(|(_, info)| info)
    }

    fn platform(&self, name: &str) -> Option<Digest> {
        self.platforms
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, digest)| *digest)
    }

    fn is_index(&self) -> bool {
        self.info.kind == BlobKind::Index
    }

    fn layer_digests(&self) -> Vec<Digest> {
        self.layers.iter().map(|(_, info)| info.digest).collect()
    }
}

/// The name of layer directory `position`: zero-padded to three digits.
fn layer_name(position: u32) -> String {
    format!("{position:03}")
}

fn parse_layer_name(name: &str) -> Option<u32> {
    if name.len() < 3 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let position: u32 = name.parse().ok()?;
    (layer_name(position) == name).then_some(position)
}

/// A tag's link text: `../manifests/sha256:<hex>`.
fn tag_link(manifest: &Digest) -> String {
    format!("../manifests/{manifest}")
}

/// A platform entry's link text: `../../sha256:<hex>`.
fn platform_link(child: &Digest) -> String {
    format!("../../{child}")
}

/// Platform names of index children (rules in `image::unique_platform_names`),
/// from the platforms recorded on the store's edges.
fn unique_platform_names(children: &[(Digest, Option<PlatformRow>)]) -> Vec<String> {
    let converted: Vec<(Digest, Option<image::Platform>)> = children
        .iter()
        .map(|(digest, platform)| {
            let platform = platform.as_ref().map(|p| image::Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
                os_version: p.os_version.clone(),
            });
            (*digest, platform)
        })
        .collect();
    image::unique_platform_names(&converted)
}

/// Joins a repository path prefix and one more component.
fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

/// Resolves `.` and `..` lexically, starting from `base`. `None` when `..` climbs
/// above the start of `base`.
fn normalize<'a>(base: &[String], parts: impl IntoIterator<Item = &'a str>) -> Option<Vec<String>> {
    let mut out: Vec<String> = base.to_vec();
    for part in parts {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            other => out.push(other.to_string()),
        }
    }
    Some(out)
}

/// `.` and `..`, which every listing starts with.
fn dot_entries(ino: Ino, parent_ino: Ino) -> Vec<DirEntry> {
    vec![
        DirEntry {
            name: b".".to_vec(),
            ino,
            kind: NodeType::Directory,
            node: None,
        },
        DirEntry {
            name: b"..".to_vec(),
            ino: parent_ino,
            kind: NodeType::Directory,
            node: None,
        },
    ]
}

/// The attributes of a node of an image view, as its tar header gave them.
fn tree_attr(node: &layer::Node, ino: Ino) -> Attr {
    let mtime_ns = node
        .mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(node.mtime_nsec));
    let rdev = match node.kind {
        NodeKind::CharDevice | NodeKind::BlockDevice => node.rdev(),
        _ => 0,
    };
    Attr {
        ino,
        kind: node.kind.into(),
        size: node.size,
        nlink: node.nlink,
        perm: (node.mode & 0o7777) as u16,
        mtime_ns,
        owner: Some((node.uid, node.gid)),
        rdev,
        volatility: Volatility::Immutable,
    }
}

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
    mountpoint: PathBuf,
    read_only: bool,
    mount_time_ns: i64,
    table: Mutex<InodeTable>,
    views: Mutex<LruCache<Digest, Arc<ManifestView>>>,
    repo_cache: Mutex<RepoCache>,
    /// Repositories this mount created with mkdir: `mkdir -p a/b/c` first makes `a`
    /// and `a/b`, which become plain path prefixes again when a deeper one is made
    /// inside them while still empty.
    made_by_mkdir: Mutex<HashSet<(String, String)>>,
    /// Repositories made by this mount's `mkdir` and turned back into prefixes by a
    /// `mkdir` below them: an `rmdir` that leaves one empty brings it back, so
    /// `mkdir a; mkdir a/b; rmdir a/b` leaves `a` as it was (POSIX).
    demoted: Mutex<HashSet<(String, String)>>,
    /// Set while one thread sweeps unheld inode numbers.
    sweeping: AtomicBool,
}

use crate::sys::lock;

fn now_ns() -> i64 {
    crate::store::meta::now_ns()
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
            mount_time_ns: now_ns(),
            table: Mutex::new(InodeTable::new()),
            views: Mutex::new(LruCache::new(
                NonZeroUsize::new(MANIFEST_VIEWS).unwrap_or(NonZeroUsize::MIN),
            )),
            repo_cache: Mutex::new(RepoCache::default()),
            made_by_mkdir: Mutex::new(HashSet::new()),
            demoted: Mutex::new(HashSet::new()),
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

    fn node(&self, ino: Ino) -> Result<Node> {
        lock(&self.table).node(ino).ok_or(VfsError::NotFound)
    }

    /// The number of `node` (not below a view's root) without a kernel reference:
    /// for listings and `..`.
    fn ino_of(&self, node: &Node) -> Ino {
        lock(&self.table).ino_of(node)
    }

    /// Numbers `node` and counts one kernel reference to it in the same step, so a
    /// FORGET racing on another thread cannot drop the number in between. The
    /// caller hands the number to the kernel in an entry reply, or gives the
    /// reference back with [`Vfs::forget`].
    fn hold(&self, node: &Node) -> Result<Ino> {
        if let Some((repo, digest, kind, id)) = tree_parts(node) {
            if id != NodeId::ROOT {
                let len = self.tree(digest, kind)?.tree.len();
                return Ok(lock(&self.table).hold_tree_node(repo, digest, kind, len, id));
            }
        }
        Ok(lock(&self.table).hold_node(node))
    }

    /// The attributes of `node` with one kernel reference counted (see
    /// [`Vfs::hold`]); the reference is given back when the node has none (it went
    /// away meanwhile).
    fn hold_attr(&self, node: &Node) -> Result<Attr> {
        let ino = self.hold(node)?;
        self.attr_of(node, ino).inspect_err(|_| self.forget(ino, 1))
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
        match node {
            Node::Root => true,
            Node::Namespace { registry, path } => {
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
                            r.registry == *registry
                                && (r.name == *path
                                    || r.name
                                        .strip_prefix(path.as_str())
                                        .is_some_and(|rest| rest.starts_with('/')))
                        }))
            }
            Node::Tags(repo) | Node::Manifests(repo) => has_repo(repo),
            Node::Tag(repo, tag) => {
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
            Node::Manifest(repo, digest, _) => {
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
                known.manifests[repo].contains(digest)
            }
        }
    }

    /// The directories the kernel holds whose listing can change: the root, the
    /// registry tree, `tags/` and `manifests/` of repositories.
    pub(crate) fn changing_dirs(&self) -> Vec<Ino> {
        lock(&self.table).held_nodes(|node| {
            matches!(
                node,
                Node::Root | Node::Namespace { .. } | Node::Tags(_) | Node::Manifests(_)
            )
        })
    }

    /// Sizes of the tables and caches, for the statistics hook.
    pub(crate) fn stats(&self) -> VfsStats {
        VfsStats {
            table: lock(&self.table).stats(),
            manifest_views: lock(&self.views).len(),
            trees: self.images.stats(),
        }
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

    fn registry_created(&self, registry: &str) -> Result<Option<i64>> {
        Ok(self
            .store
            .registries()?
            .into_iter()
            .find(|r| r.name == registry)
            .map(|r| r.created_ns))
    }

    fn view(&self, manifest: &Digest) -> Result<Arc<ManifestView>> {
        if let Some(view) = lock(&self.views).get(manifest) {
            return Ok(view.clone());
        }
        let info = self.store.blob(manifest)?.ok_or(VfsError::NotFound)?;
        if !matches!(info.kind, BlobKind::Manifest | BlobKind::Index) {
            return Err(VfsError::NotFound);
        }
        let mut config = None;
        let mut layers = Vec::new();
        let mut children = Vec::new();
        for edge in self.store.edges(manifest)? {
            match edge.kind {
                EdgeKind::Config => config = self.store.blob(&edge.child)?,
                EdgeKind::Layer => {
                    if let Some(layer) = self.store.blob(&edge.child)? {
                        layers.push((edge.position, layer));
                    }
                }
                EdgeKind::Manifest => children.push((edge.position, edge.child, edge.platform)),
                EdgeKind::Subject => {}
            }
        }
        layers.sort_by_key(|(position, _)| *position);
        children.sort_by_key(|(position, _, _)| *position);
        let children: Vec<(Digest, Option<PlatformRow>)> = children
            .into_iter()
            .map(|(_, digest, platform)| (digest, platform))
            .collect();
        let names = unique_platform_names(&children);
        let platforms = names
            .into_iter()
            .zip(children)
            .map(|(name, (digest, _))| (name, digest))
            .collect();
        let is_image = info.kind == BlobKind::Manifest && self.is_image(&info);
        let view = Arc::new(ManifestView {
            info,
            config,
            layers,
            platforms,
            is_image,
        });
        lock(&self.views).put(*manifest, view.clone());
        Ok(view)
    }

    /// Whether manifest `info` is a container image (artifacts get no rootfs/).
    fn is_image(&self, info: &BlobInfo) -> bool {
        let parsed = self
            .store
            .read_blob(&info.digest)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                image::parse_top(&bytes, Some(&info.media_type)).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(image::Parsed::Manifest(manifest)) => manifest.is_image(),
            Ok(image::Parsed::Index(_)) => false,
            Err(error) => {
                log::error!("manifest {}: {error}", info.digest);
                false
            }
        }
    }

    /// The tree of an image view of `digest`.
    fn tree(&self, digest: &Digest, kind: TreeKind) -> Result<Arc<ImageTree>> {
        let view = self.view(digest)?;
        if !view.is_image {
            return Err(VfsError::NotFound);
        }
        let tree = match kind {
            TreeKind::Rootfs => self.images.rootfs(digest, || view.layer_digests())?,
            TreeKind::LayerFiles(position) => {
                let layer = view.layer(position).ok_or(VfsError::NotFound)?;
                self.images.layer_files(&layer.digest)?
            }
        };
        Ok(tree)
    }

    /// The inode number of node `id` of a view whose tree is `tree`.
    fn tree_ino(
        &self,
        repo: &RepoKey,
        digest: &Digest,
        kind: TreeKind,
        tree: &ImageTree,
        id: NodeId,
    ) -> Ino {
        if id == NodeId::ROOT {
            return self.ino_of(&Node::Manifest(repo.clone(), *digest, kind.item(id)));
        }
        let base = lock(&self.table).tree_base(repo, digest, kind, tree.tree.len());
        base + u64::from(id.0)
    }

    /// The node `name` (any bytes) inside directory `parent`.
    fn child_bytes(&self, parent: &Node, name: &[u8]) -> Result<Node> {
        if let Some((repo, digest, kind, dir)) = tree_parts(parent) {
            let tree = self.tree(digest, kind)?;
            let node = tree.get(dir).ok_or(VfsError::NotFound)?;
            if node.kind != NodeKind::Dir {
                return Err(VfsError::NotDir);
            }
            let id = tree.tree.lookup(dir, name).ok_or(VfsError::NotFound)?;
            return Ok(Node::Manifest(repo.clone(), *digest, kind.item(id)));
        }
        // Every name outside the image views is UTF-8.
        let name = std::str::from_utf8(name).map_err(|_| VfsError::NotFound)?;
        self.child(parent, name)
    }

    // ---- the shape of the tree ----

    /// What a namespace holds: whether it is a repository, its creation time, and
    /// the next path components of deeper repositories.
    fn namespace(&self, registry: &str, path: &str) -> Result<(Option<i64>, BTreeSet<String>)> {
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

    /// The node `name` inside directory `parent`, if it exists.
    fn child(&self, parent: &Node, name: &str) -> Result<Node> {
        match parent {
            Node::Root => {
                if self.registry_created(name)?.is_some() {
                    Ok(Node::Namespace {
                        registry: name.to_string(),
                        path: String::new(),
                    })
                } else {
                    Err(VfsError::NotFound)
                }
            }
            Node::Namespace { registry, path } => {
                let (is_repo, children) = self.namespace(registry, path)?;
                let repo = || RepoKey {
                    registry: registry.clone(),
                    repository: path.clone(),
                };
                match name {
                    "tags" if is_repo.is_some() => Ok(Node::Tags(repo())),
                    "manifests" if is_repo.is_some() => Ok(Node::Manifests(repo())),
                    _ if children.contains(name) => Ok(Node::Namespace {
                        registry: registry.clone(),
                        path: join_path(path, name),
                    }),
                    _ => Err(VfsError::NotFound),
                }
            }
            Node::Tags(repo) => {
                self.store
                    .tag_info(&repo.registry, &repo.repository, name)?
                    .ok_or(VfsError::NotFound)?;
                Ok(Node::Tag(repo.clone(), name.to_string()))
            }
            Node::Manifests(repo) => {
                let digest = Digest::parse(name).map_err(|_| VfsError::NotFound)?;
                let manifests = self
                    .store
                    .repository_manifests(&repo.registry, &repo.repository)?;
                if manifests.contains(&digest) {
                    Ok(Node::Manifest(repo.clone(), digest, Item::Dir))
                } else {
                    Err(VfsError::NotFound)
                }
            }
            Node::Manifest(_, _, Item::Rootfs(_) | Item::LayerFiles(..)) => {
                self.child_bytes(parent, name.as_bytes())
            }
            Node::Manifest(repo, digest, item) => {
                let view = self.view(digest)?;
                let found = match (item, name) {
                    (Item::Dir, "rootfs") if view.is_image => Some(Item::Rootfs(NodeId::ROOT)),
                    (Item::Layer(position), "files") if view.is_image => {
                        Some(Item::LayerFiles(*position, NodeId::ROOT))
                    }
                    (Item::Dir, "manifest.json") => Some(Item::ManifestJson),
                    (Item::Dir, "config.json") if view.config.is_some() => Some(Item::ConfigJson),
                    (Item::Dir, "layers") if !view.layers.is_empty() => Some(Item::Layers),
                    (Item::Dir, "platforms") if view.is_index() => Some(Item::Platforms),
                    (Item::Layers, _) => parse_layer_name(name)
                        .filter(|p| view.layer(*p).is_some())
                        .map(Item::Layer),
                    (Item::Layer(position), "blob") => Some(Item::LayerBlob(*position)),
                    (Item::Platforms, _) => view
                        .platform(name)
                        .map(|_| Item::Platform(name.to_string())),
                    (Item::Dir | Item::Layer(_), _) => None,
                    _ => return Err(VfsError::NotDir),
                };
                found
                    .map(|item| Node::Manifest(repo.clone(), *digest, item))
                    .ok_or(VfsError::NotFound)
            }
            Node::Tag(..) => Err(VfsError::NotDir),
        }
    }

    /// The node's parent directory (the root is its own parent). Nodes inside an
    /// image view answer their view's parent (only the tree knows more, see
    /// [`Vfs::tree_parent_ino`]); paths are only ever computed for this mount's own
    /// links and directories, never for nodes inside a view.
    fn parent(node: &Node) -> Node {
        let namespace_of = |repo: &RepoKey| Node::Namespace {
            registry: repo.registry.clone(),
            path: repo.repository.clone(),
        };
        match node {
            Node::Root => Node::Root,
            Node::Namespace { registry, path } => match path.rsplit_once('/') {
                _ if path.is_empty() => Node::Root,
                Some((prefix, _)) => Node::Namespace {
                    registry: registry.clone(),
                    path: prefix.to_string(),
                },
                None => Node::Namespace {
                    registry: registry.clone(),
                    path: String::new(),
                },
            },
            Node::Tags(repo) | Node::Manifests(repo) => namespace_of(repo),
            Node::Tag(repo, _) => Node::Tags(repo.clone()),
            Node::Manifest(repo, digest, item) => {
                let up = |item| Node::Manifest(repo.clone(), *digest, item);
                match item {
                    Item::Dir => Node::Manifests(repo.clone()),
                    Item::ManifestJson | Item::ConfigJson | Item::Layers | Item::Platforms => {
                        up(Item::Dir)
                    }
                    Item::Layer(_) => up(Item::Layers),
                    Item::LayerBlob(position) => up(Item::Layer(*position)),
                    Item::Platform(_) => up(Item::Platforms),
                    Item::Rootfs(_) => up(Item::Dir),
                    Item::LayerFiles(position, _) => up(Item::Layer(*position)),
                }
            }
        }
    }

    /// The node's path inside the mount, one component per element.
    fn path_of(node: &Node) -> Vec<String> {
        let repo_path = |repo: &RepoKey| {
            let mut out = vec![repo.registry.clone()];
            out.extend(repo.repository.split('/').map(str::to_string));
            out
        };
        match node {
            Node::Root => Vec::new(),
            Node::Namespace { registry, path } => {
                let mut out = vec![registry.clone()];
                if !path.is_empty() {
                    out.extend(path.split('/').map(str::to_string));
                }
                out
            }
            Node::Tags(repo) => {
                let mut out = repo_path(repo);
                out.push("tags".into());
                out
            }
            Node::Tag(repo, tag) => {
                let mut out = Self::path_of(&Node::Tags(repo.clone()));
                out.push(tag.clone());
                out
            }
            Node::Manifests(repo) => {
                let mut out = repo_path(repo);
                out.push("manifests".into());
                out
            }
            Node::Manifest(repo, digest, item) => {
                let mut out = Self::path_of(&Self::parent(node));
                out.push(match item {
                    Item::Dir => digest.to_string(),
                    Item::ManifestJson => "manifest.json".into(),
                    Item::ConfigJson => "config.json".into(),
                    Item::Layers => "layers".into(),
                    Item::Layer(position) => layer_name(*position),
                    Item::LayerBlob(_) => "blob".into(),
                    Item::Platforms => "platforms".into(),
                    Item::Platform(name) => name.clone(),
                    Item::Rootfs(_) => "rootfs".into(),
                    Item::LayerFiles(..) => "files".into(),
                });
                let _ = repo;
                out
            }
        }
    }

    /// Attributes of a node that exists; `NotFound` when it no longer does.
    fn attr_of(&self, node: &Node, ino: Ino) -> Result<Attr> {
        if let Some((_, digest, kind, id)) = tree_parts(node) {
            let tree = self.tree(digest, kind)?;
            let node = tree.get(id).ok_or(VfsError::NotFound)?;
            return Ok(tree_attr(node, ino));
        }
        let dir = |nlink: usize, mtime_ns: i64, volatility| Attr {
            ino,
            kind: NodeType::Directory,
            size: 0,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            perm: 0o755,
            mtime_ns,
            owner: None,
            rdev: 0,
            volatility,
        };
        let file = |info: &BlobInfo| Attr {
            ino,
            kind: NodeType::File,
            size: info.size,
            nlink: 1,
            perm: 0o444,
            mtime_ns: info.created_ns,
            owner: None,
            rdev: 0,
            volatility: Volatility::Immutable,
        };
        let link = |target: String, mtime_ns: i64, volatility| Attr {
            ino,
            kind: NodeType::Symlink,
            size: target.len() as u64,
            nlink: 1,
            perm: 0o777,
            mtime_ns,
            owner: None,
            rdev: 0,
            volatility,
        };
        Ok(match node {
            Node::Root => {
                let registries = self.store.registries()?.len();
                dir(2 + registries, self.mount_time_ns, Volatility::Volatile)
            }
            Node::Namespace { registry, path } => {
                let created = self.registry_created(registry)?.ok_or(VfsError::NotFound)?;
                let (is_repo, children) = self.namespace(registry, path)?;
                if !path.is_empty() && is_repo.is_none() && children.is_empty() {
                    return Err(VfsError::NotFound);
                }
                let own = if is_repo.is_some() { 2 } else { 0 };
                dir(
                    2 + own + children.len(),
                    is_repo.unwrap_or(created),
                    Volatility::Volatile,
                )
            }
            Node::Tags(repo) => {
                let row = self
                    .store
                    .repository(&repo.registry, &repo.repository)?
                    .ok_or(VfsError::NotFound)?;
                let tags = self.store.tags(&repo.registry, &repo.repository)?;
                let newest = tags.iter().map(|t| t.updated_ns).max().unwrap_or(0);
                dir(2, newest.max(row.created_ns), Volatility::Volatile)
            }
            Node::Tag(repo, tag) => {
                let row = self
                    .store
                    .tag_info(&repo.registry, &repo.repository, tag)?
                    .ok_or(VfsError::NotFound)?;
                link(
                    tag_link(&row.manifest),
                    row.updated_ns,
                    Volatility::Volatile,
                )
            }
            Node::Manifests(repo) => {
                let row = self
                    .store
                    .repository(&repo.registry, &repo.repository)?
                    .ok_or(VfsError::NotFound)?;
                let manifests = self
                    .store
                    .repository_manifests(&repo.registry, &repo.repository)?;
                dir(2 + manifests.len(), row.created_ns, Volatility::Volatile)
            }
            Node::Manifest(_, digest, item) => {
                let view = self.view(digest)?;
                let created = view.info.created_ns;
                match item {
                    Item::Dir => {
                        let subdirs = usize::from(!view.layers.is_empty())
                            + usize::from(view.is_index())
                            + usize::from(view.is_image);
                        dir(2 + subdirs, created, Volatility::ImmutableInVolatileDir)
                    }
                    Item::ManifestJson => file(&view.info),
                    Item::ConfigJson => file(view.config.as_ref().ok_or(VfsError::NotFound)?),
                    Item::Layers => dir(2 + view.layers.len(), created, Volatility::Immutable),
                    Item::Layer(position) => {
                        view.layer(*position).ok_or(VfsError::NotFound)?;
                        let files = usize::from(view.is_image);
                        dir(2 + files, created, Volatility::Immutable)
                    }
                    Item::LayerBlob(position) => {
                        file(view.layer(*position).ok_or(VfsError::NotFound)?)
                    }
                    Item::Platforms => dir(2, created, Volatility::Immutable),
                    Item::Platform(name) => {
                        let child = view.platform(name).ok_or(VfsError::NotFound)?;
                        link(platform_link(&child), created, Volatility::Immutable)
                    }
                    // Handled above with the tree.
                    Item::Rootfs(_) | Item::LayerFiles(..) => return Err(VfsError::NotFound),
                }
            }
        })
    }

    // ---- reading ----

    /// Attributes of inode `ino`.
    pub(crate) fn getattr(&self, ino: Ino) -> Result<Attr> {
        let node = self.node(ino)?;
        self.attr_of(&node, ino)
    }

    /// Looks `name` up in directory `parent`, counting one kernel reference to the
    /// answer (see [`Vfs::hold`]).
    pub(crate) fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let parent = self.node(parent)?;
        let node = self.child_bytes(&parent, name)?;
        self.hold_attr(&node)
    }

    /// The attributes of `entry` of a listing of directory `dir`, counting one
    /// kernel reference to it (READDIRPLUS hands the kernel every entry but `.` and
    /// `..`). An entry whose number was dropped since the listing was made gets a
    /// new one (inside image views by looking its name up again: a tree lookup).
    pub(crate) fn lookup_listed(&self, dir: Ino, entry: &DirEntry) -> Result<Attr> {
        let held = lock(&self.table).hold(entry.ino);
        match held {
            // A rename may have moved the number to another name meanwhile.
            Some(node) if entry.node.as_ref().is_none_or(|listed| *listed == node) => self
                .attr_of(&node, entry.ino)
                .inspect_err(|_| self.forget(entry.ino, 1)),
            Some(_) => {
                self.forget(entry.ino, 1);
                self.hold_listed_again(dir, entry)
            }
            None => self.hold_listed_again(dir, entry),
        }
    }

    fn hold_listed_again(&self, dir: Ino, entry: &DirEntry) -> Result<Attr> {
        match &entry.node {
            Some(node) => self.hold_attr(node),
            None => self.lookup(dir, &entry.name),
        }
    }

    /// Lists directory `ino`, with `.` and `..` first.
    pub(crate) fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        if let Some((repo, digest, kind, id)) = tree_parts(&node) {
            return self.tree_readdir(&node, ino, repo, digest, kind, id);
        }
        let parent_ino = self.ino_of(&Self::parent(&node));
        let mut children: Vec<(String, Node, NodeType)> = Vec::new();
        let dir = NodeType::Directory;
        match &node {
            Node::Root => {
                for registry in self.store.registries()? {
                    let child = Node::Namespace {
                        registry: registry.name.clone(),
                        path: String::new(),
                    };
                    children.push((registry.name, child, dir));
                }
            }
            Node::Namespace { registry, path } => {
                let (is_repo, names) = self.namespace(registry, path)?;
                if is_repo.is_some() {
                    let repo = RepoKey {
                        registry: registry.clone(),
                        repository: path.clone(),
                    };
                    // tags/ before manifests/: `rm -rf` walks in this order, and once
                    // the tags are gone manifests/ is empty.
                    children.push(("tags".into(), Node::Tags(repo.clone()), dir));
                    children.push(("manifests".into(), Node::Manifests(repo), dir));
                } else if !path.is_empty() && names.is_empty() {
                    return Err(VfsError::NotFound);
                }
                for name in names {
                    let child = Node::Namespace {
                        registry: registry.clone(),
                        path: join_path(path, &name),
                    };
                    children.push((name, child, dir));
                }
            }
            Node::Tags(repo) => {
                for tag in self.store.tags(&repo.registry, &repo.repository)? {
                    let child = Node::Tag(repo.clone(), tag.name.clone());
                    children.push((tag.name, child, NodeType::Symlink));
                }
            }
            Node::Manifests(repo) => {
                for digest in self
                    .store
                    .repository_manifests(&repo.registry, &repo.repository)?
                {
                    let child = Node::Manifest(repo.clone(), digest, Item::Dir);
                    children.push((digest.to_string(), child, dir));
                }
            }
            Node::Manifest(repo, digest, item) => {
                let view = self.view(digest)?;
                let at = |item| Node::Manifest(repo.clone(), *digest, item);
                match item {
                    Item::Dir => {
                        let file = NodeType::File;
                        children.push(("manifest.json".into(), at(Item::ManifestJson), file));
                        if view.is_image {
                            children.push(("rootfs".into(), at(Item::Rootfs(NodeId::ROOT)), dir));
                        }
                        if view.config.is_some() {
                            children.push(("config.json".into(), at(Item::ConfigJson), file));
                        }
                        if !view.layers.is_empty() {
                            children.push(("layers".into(), at(Item::Layers), dir));
                        }
                        if view.is_index() {
                            children.push(("platforms".into(), at(Item::Platforms), dir));
                        }
                    }
                    Item::Layers => {
                        for (position, _) in &view.layers {
                            children.push((layer_name(*position), at(Item::Layer(*position)), dir));
                        }
                    }
                    Item::Layer(position) => {
                        children.push((
                            "blob".into(),
                            at(Item::LayerBlob(*position)),
                            NodeType::File,
                        ));
                        if view.is_image {
                            let files = at(Item::LayerFiles(*position, NodeId::ROOT));
                            children.push(("files".into(), files, dir));
                        }
                    }
                    Item::Platforms => {
                        for (name, _) in &view.platforms {
                            let child = at(Item::Platform(name.clone()));
                            children.push((name.clone(), child, NodeType::Symlink));
                        }
                    }
                    _ => return Err(VfsError::NotDir),
                }
            }
            Node::Tag(..) => return Err(VfsError::NotDir),
        }
        let mut entries = dot_entries(ino, parent_ino);
        let mut table = lock(&self.table);
        entries.extend(children.into_iter().map(|(name, node, kind)| DirEntry {
            name: name.into_bytes(),
            ino: table.ino_of(&node),
            kind,
            node: Some(node),
        }));
        Ok(entries)
    }

    /// Lists directory `id` of an image view.
    fn tree_readdir(
        &self,
        node: &Node,
        ino: Ino,
        repo: &RepoKey,
        digest: &Digest,
        kind: TreeKind,
        id: NodeId,
    ) -> Result<Vec<DirEntry>> {
        let tree = self.tree(digest, kind)?;
        if tree.get(id).ok_or(VfsError::NotFound)?.kind != NodeKind::Dir {
            return Err(VfsError::NotDir);
        }
        let parent_ino = if id == NodeId::ROOT {
            self.ino_of(&Self::parent(node))
        } else {
            self.tree_ino(repo, digest, kind, &tree, tree.parent(id))
        };
        let children = tree.tree.children(id);
        let mut entries = dot_entries(ino, parent_ino);
        entries.reserve(children.len());
        let base = lock(&self.table).tree_base(repo, digest, kind, tree.tree.len());
        for (name, child) in children {
            let child_kind = tree.get(*child).map_or(NodeType::File, |n| n.kind.into());
            entries.push(DirEntry {
                name: name.to_vec(),
                ino: base + u64::from(child.0),
                kind: child_kind,
                node: None,
            });
        }
        Ok(entries)
    }

    /// The target of symlink `ino`, byte for byte as stored.
    pub(crate) fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if let Some((_, digest, kind, id)) = tree_parts(&node) {
            let tree = self.tree(digest, kind)?;
            let node = tree.get(id).ok_or(VfsError::NotFound)?;
            return node
                .symlink_target
                .as_ref()
                .map(|target| target.to_vec())
                .ok_or_else(|| VfsError::Invalid("not a symbolic link".into()));
        }
        self.own_link(&node).map(String::into_bytes)
    }

    /// The text of one of this mount's own symlinks (tags, platforms).
    fn own_link(&self, node: &Node) -> Result<String> {
        match node.clone() {
            Node::Tag(repo, tag) => {
                let row = self
                    .store
                    .tag_info(&repo.registry, &repo.repository, &tag)?
                    .ok_or(VfsError::NotFound)?;
                Ok(tag_link(&row.manifest))
            }
            Node::Manifest(_, digest, Item::Platform(name)) => {
                let child = self
                    .view(&digest)?
                    .platform(&name)
                    .ok_or(VfsError::NotFound)?;
                Ok(platform_link(&child))
            }
            _ => Err(VfsError::Invalid("not a symbolic link".into())),
        }
    }

    /// Where the bytes of regular file `ino` come from, or `None` when `ino` is no
    /// regular file.
    pub(crate) fn content_of(&self, ino: Ino) -> Result<Option<FileContent>> {
        let Node::Manifest(_, digest, item) = self.node(ino)? else {
            return Ok(None);
        };
        let view = self.view(&digest)?;
        Ok(match item {
            Item::ManifestJson => Some(FileContent::Blob(digest)),
            Item::ConfigJson => view.config.as_ref().map(|c| FileContent::Blob(c.digest)),
            Item::LayerBlob(position) => view.layer(position).map(|l| FileContent::Blob(l.digest)),
            Item::Rootfs(id) => {
                let tree = self.tree(&digest, TreeKind::Rootfs)?;
                let content = tree.get(id).and_then(|n| n.content);
                match content {
                    // Content names the layer by its index in the merged list.
                    Some(loc) => {
                        let (_, layer) = view
                            .layers
                            .get(loc.layer as usize)
                            .ok_or(VfsError::NotFound)?;
                        Some(FileContent::LayerEntry {
                            layer: layer.digest,
                            entry: loc.entry,
                        })
                    }
                    None => None,
                }
            }
            Item::LayerFiles(position, id) => {
                let tree = self.tree(&digest, TreeKind::LayerFiles(position))?;
                let layer = view.layer(position).ok_or(VfsError::NotFound)?;
                tree.get(id)
                    .and_then(|n| n.content)
                    .map(|loc| FileContent::LayerEntry {
                        layer: layer.digest,
                        entry: loc.entry,
                    })
            }
            _ => None,
        })
    }

    /// The extended attributes of `ino` a reader may see: those from the tar
    /// headers, without `trusted.*` (privileged on a real filesystem).
    pub(crate) fn xattrs(&self, ino: Ino) -> Result<Vec<layer::Xattr>> {
        let node = self.node(ino)?;
        let Some((_, digest, kind, id)) = tree_parts(&node) else {
            return Ok(Vec::new());
        };
        let tree = self.tree(digest, kind)?;
        let node = tree.get(id).ok_or(VfsError::NotFound)?;
        Ok(node
            .xattrs
            .iter()
            .filter(|x| !x.name.starts_with(b"trusted."))
            .cloned()
            .collect())
    }

    // ---- writing ----

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(VfsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Refusal to remove or move what the tree does not let go: EROFS when `name`
    /// exists in `parent`, else why it does not.
    fn refuse_removal(&self, parent: &Node, name: &str) -> VfsError {
        match self.child(parent, name) {
            Ok(_) => VfsError::ReadOnly,
            Err(error) => error,
        }
    }

    /// Refusal to create `name` where nothing can be created: EEXIST when it
    /// exists, else EROFS.
    fn refuse_creation(&self, parent: &Node, name: &str) -> VfsError {
        match self.child(parent, name) {
            Ok(_) => VfsError::Exists,
            Err(VfsError::NotFound) => VfsError::ReadOnly,
            Err(error) => error,
        }
    }

    /// `rm tags/<tag>`: untags (blobs only it kept are gone before this returns).
    pub(crate) fn unlink(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        match self.node(parent)? {
            Node::Tags(repo) => {
                if reference::validate_tag(name).is_err() {
                    return Err(VfsError::NotFound);
                }
                self.store.untag(&repo.reference(name))?;
                Ok(())
            }
            other => Err(self.refuse_removal(&other, name)),
        }
    }

    /// `rmdir`: a manifest, an empty registry or repository; `tags/` and
    /// `manifests/` of a repository once they are empty (a no-op, so `rm -rf` works).
    pub(crate) fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        match self.node(parent)? {
            Node::Root => {
                self.store.remove_registry(name)?;
                Ok(())
            }
            Node::Namespace { registry, path } => {
                let (is_repo, _) = self.namespace(&registry, &path)?;
                let repo = RepoKey {
                    registry: registry.clone(),
                    repository: path.clone(),
                };
                match name {
                    "tags" if is_repo.is_some() => {
                        if self.store.tags(&registry, &path)?.is_empty() {
                            Ok(())
                        } else {
                            Err(VfsError::NotEmpty)
                        }
                    }
                    "manifests" if is_repo.is_some() => {
                        if self
                            .store
                            .repository_manifests(&repo.registry, &repo.repository)?
                            .is_empty()
                        {
                            Ok(())
                        } else {
                            Err(VfsError::NotEmpty)
                        }
                    }
                    _ => {
                        let child = join_path(&path, name);
                        let (child_is_repo, grandchildren) = self.namespace(&registry, &child)?;
                        if !grandchildren.is_empty() {
                            return Err(VfsError::NotEmpty);
                        }
                        if child_is_repo.is_none() {
                            return Err(VfsError::NotFound);
                        }
                        self.store.remove_repository(&registry, &child, false)?;
                        lock(&self.made_by_mkdir).remove(&(registry.clone(), child));
                        self.restore_demoted_parent(&registry, &path)?;
                        Ok(())
                    }
                }
            }
            Node::Manifests(repo) => {
                let digest = Digest::parse(name).map_err(|_| VfsError::NotFound)?;
                self.store
                    .remove_manifest(&repo.registry, &repo.repository, &digest)?;
                Ok(())
            }
            other => Err(self.refuse_removal(&other, name)),
        }
    }

    /// `mkdir`: a registry at the root, a repository below one.
    pub(crate) fn mkdir(&self, parent: Ino, name: &str) -> Result<Attr> {
        self.writable()?;
        let node = match self.node(parent)? {
            Node::Root => {
                reference::validate_registry(name).map_err(StoreError::from)?;
                self.store.create_registry(name)?;
                Node::Namespace {
                    registry: name.to_string(),
                    path: String::new(),
                }
            }
            Node::Namespace { registry, path } => {
                if !reference::is_valid_repository_component(name) {
                    return Err(VfsError::Invalid(format!(
                        "{name:?} is not a valid repository path component"
                    )));
                }
                let child = join_path(&path, name);
                if self.namespace(&registry, &child)?.0.is_some() {
                    return Err(VfsError::Exists);
                }
                self.store.create_repository(&registry, &child)?;
                self.demote_mkdir_parent(&registry, &path);
                lock(&self.made_by_mkdir).insert((registry.clone(), child.clone()));
                Node::Namespace {
                    registry,
                    path: child,
                }
            }
            other => return Err(self.refuse_creation(&other, name)),
        };
        self.hold_attr(&node)
    }

    /// After `mkdir a/b`, turns `a` back into a plain prefix if this mount's mkdir
    /// made it and it is still empty, so `mkdir -p` makes only the last repository.
    fn demote_mkdir_parent(&self, registry: &str, path: &str) {
        if path.is_empty() {
            return;
        }
        let key = (registry.to_string(), path.to_string());
        if !lock(&self.made_by_mkdir).remove(&key) {
            return;
        }
        if matches!(self.store.tags(registry, path), Ok(tags) if tags.is_empty()) {
            match self.store.remove_repository(registry, path, false) {
                Ok(()) => {
                    lock(&self.demoted).insert(key);
                }
                Err(error) => {
                    log::warn!("mkdir: keeping {registry}/{path} as a repository: {error}")
                }
            }
        }
    }

    /// After `rmdir a/b`: if `a` was a repository this mount demoted to a prefix and
    /// nothing is left below it, it becomes the empty repository it was again
    /// (otherwise the directory the user made would vanish with its child).
    fn restore_demoted_parent(&self, registry: &str, path: &str) -> Result<()> {
        if path.is_empty() {
            return Ok(());
        }
        let key = (registry.to_string(), path.to_string());
        if !lock(&self.demoted).contains(&key) {
            return Ok(());
        }
        let (is_repo, children) = self.namespace(registry, path)?;
        if is_repo.is_none() && children.is_empty() {
            self.store.create_repository(registry, path)?;
            lock(&self.demoted).remove(&key);
            lock(&self.made_by_mkdir).insert(key);
        }
        Ok(())
    }

    /// `ln -s TARGET tags/<name>`: tags what TARGET names (never copies anything).
    pub(crate) fn symlink(&self, parent: Ino, name: &str, target: &Path) -> Result<Attr> {
        self.writable()?;
        let parent_node = self.node(parent)?;
        let Node::Tags(repo) = &parent_node else {
            return Err(self.refuse_creation(&parent_node, name));
        };
        reference::validate_tag(name).map_err(StoreError::from)?;
        let digest = self.link_target_digest(&Self::path_of(&parent_node), target)?;
        self.store.set_tag(&repo.reference(name), &digest, false)?;
        self.hold_attr(&Node::Tag(repo.clone(), name.to_string()))
    }

    /// `mv tags/a tags/b`, also between repositories and registries (promotion).
    pub(crate) fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        self.writable()?;
        let from = self.node(parent)?;
        let to = self.node(new_parent)?;
        let (Node::Tags(from_repo), Node::Tags(to_repo)) = (&from, &to) else {
            return Err(self.refuse_removal(&from, name));
        };
        reference::validate_tag(new_name).map_err(StoreError::from)?;
        if no_replace
            && self
                .store
                .tag_info(&to_repo.registry, &to_repo.repository, new_name)?
                .is_some()
        {
            return Err(VfsError::Exists);
        }
        self.store
            .move_tag(&from_repo.reference(name), &to_repo.reference(new_name))?;
        lock(&self.table).rename(
            &Node::Tag(from_repo.clone(), name.to_string()),
            &Node::Tag(to_repo.clone(), new_name.to_string()),
        );
        Ok(())
    }

    // ---- link targets ----

    /// The manifest a new tag link names. `link_dir` is the new link's directory as
    /// mount path components. Accepted: `sha256:<hex>`; a path (absolute inside the
    /// mount, or relative to `link_dir`) ending in `manifests/sha256:<hex>`; a path to
    /// any tag, manifest or platform entry of this mount.
    fn link_target_digest(&self, link_dir: &[String], target: &Path) -> Result<Digest> {
        let text = target
            .to_str()
            .ok_or_else(|| VfsError::Invalid("link target is not UTF-8".into()))?;
        if let Ok(digest) = Digest::parse(text) {
            return Ok(digest);
        }
        let components = self.mount_components(link_dir, target)?;
        if let [.., dir, last] = components.as_slice() {
            if dir == "manifests" {
                if let Ok(digest) = Digest::parse(last) {
                    return Ok(digest);
                }
            }
        }
        match self.walk(components)? {
            Node::Manifest(_, digest, Item::Dir) => Ok(digest),
            _ => Err(VfsError::Invalid(format!(
                "{text}: names no tag or manifest of this mount"
            ))),
        }
    }

    /// A link target as path components from the mount root.
    fn mount_components(&self, link_dir: &[String], target: &Path) -> Result<Vec<String>> {
        let outside = || VfsError::Invalid(format!("{}: not inside this mount", target.display()));
        let parts: Vec<&str> = target
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => part.to_str(),
                Component::ParentDir => Some(".."),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
            })
            .collect();
        if target.is_absolute() {
            let absolute = normalize(&[], parts).ok_or_else(outside)?;
            let mount: Vec<String> = self
                .mountpoint
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => part.to_str().map(str::to_string),
                    _ => None,
                })
                .collect();
            absolute
                .strip_prefix(mount.as_slice())
                .map(<[String]>::to_vec)
                .ok_or_else(outside)
        } else {
            normalize(link_dir, parts).ok_or_else(outside)
        }
    }

    /// Resolves mount path components to a node, following this mount's own
    /// symlinks (tags, platforms) wherever they occur.
    fn walk(&self, mut components: Vec<String>) -> Result<Node> {
        let mut hops = 0;
        'restart: loop {
            let mut node = Node::Root;
            for (index, name) in components.iter().enumerate() {
                node = self.child(&node, name)?;
                let link = match &node {
                    Node::Tag(..) | Node::Manifest(_, _, Item::Platform(_)) => {
                        self.own_link(&node)?
                    }
                    _ => continue,
                };
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(VfsError::Invalid("too many levels of links".into()));
                }
                let rest = components[index + 1..].iter().map(String::as_str);
                let dir = Self::path_of(&Self::parent(&node));
                let resolved = normalize(&dir, link.split('/'))
                    .ok_or_else(|| VfsError::Invalid("link leaves the mount".into()))?;
                components = normalize(&resolved, rest)
                    .ok_or_else(|| VfsError::Invalid("link leaves the mount".into()))?;
                continue 'restart;
            }
            return Ok(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Option<PlatformRow> {
        Some(PlatformRow {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
            os_version: None,
        })
    }

    #[test]
    fn platform_names_are_unique_and_order_independent() {
        let children = vec![
            (digest(1), platform("linux", "amd64", None)),
            (digest(2), platform("linux", "arm64", Some("v8"))),
            (digest(3), platform("unknown", "unknown", None)),
            (digest(4), None),
            (digest(5), platform("linux", "a/b", Some(""))),
        ];
        let names = unique_platform_names(&children);
        assert_eq!(names[0], "linux-amd64");
        assert_eq!(names[1], "linux-arm64-v8");
        assert_eq!(names[2], format!("unknown-unknown-{}", digest(3).short(12)));
        assert_eq!(names[3], format!("unknown-unknown-{}", digest(4).short(12)));
        assert_eq!(names[4], "linux-a_b");
        let mut reversed = children.clone();
        reversed.reverse();
        let mut again = unique_platform_names(&reversed);
        again.reverse();
        assert_eq!(names, again);
        let twice = vec![(digest(1), None), (digest(1), None)];
        let names = unique_platform_names(&twice);
        assert_ne!(names[0], names[1]);
    }

    #[test]
    fn lexical_normalization() {
        let base: Vec<String> = ["dev", "app", "tags"].map(String::from).to_vec();
        assert_eq!(
            normalize(&base, "../manifests/sha256:x".split('/')).unwrap(),
            ["dev", "app", "manifests", "sha256:x"]
        );
        assert_eq!(
            normalize(&base, "../../../prod/app/tags/1".split('/')).unwrap(),
            ["prod", "app", "tags", "1"]
        );
        assert!(normalize(&base, "../../../../x".split('/')).is_none());
        assert_eq!(normalize(&base, "././/a".split('/')).unwrap().len(), 4);
    }

    #[test]
    fn layer_names_round_trip() {
        assert_eq!(layer_name(0), "000");
        assert_eq!(layer_name(1234), "1234");
        assert_eq!(parse_layer_name("007"), Some(7));
        assert_eq!(parse_layer_name("1234"), Some(1234));
        assert_eq!(parse_layer_name("7"), None);
        assert_eq!(parse_layer_name("0007"), None);
        assert_eq!(parse_layer_name("blob"), None);
    }

    fn repo_key() -> RepoKey {
        RepoKey {
            registry: "dev".into(),
            repository: "app".into(),
        }
    }

    #[test]
    fn inode_numbers_are_stable_and_never_reused() {
        let mut table = InodeTable::new();
        let repo = RepoKey {
            registry: "dev".into(),
            repository: "app".into(),
        };
        let tags = table.ino_of(&Node::Tags(repo.clone()));
        let tag = table.ino_of(&Node::Tag(repo.clone(), "1".into()));
        assert_eq!(table.ino_of(&Node::Root), ROOT_INO);
        assert_ne!(tags, tag);
        assert_eq!(table.ino_of(&Node::Tags(repo)), tags);
        assert!(table.node(0).is_none());
        let renamed = Node::Tag(repo_key(), "2".into());
        table.rename(&Node::Tag(repo_key(), "1".into()), &renamed);
        assert_eq!(table.ino_of(&renamed), tag);
        assert_eq!(table.node(tag), Some(renamed.clone()));
        let again = table.ino_of(&Node::Tag(repo_key(), "1".into()));
        assert!(again > tag, "a new number, never a reused one");
        assert!(table.node(999).is_none());
    }

    fn tag(name: &str) -> Node {
        Node::Tag(repo_key(), name.into())
    }

    fn rootfs(id: u32) -> Node {
        Node::Manifest(repo_key(), digest(1), Item::Rootfs(NodeId(id)))
    }

    #[test]
    fn a_forgotten_node_keeps_its_number_until_a_sweep_finds_it_gone() {
        let mut table = InodeTable::new();
        let ino = table.hold_node(&tag("1"));
        assert_eq!(table.hold_node(&tag("1")), ino, "same node, same number");
        assert_eq!(table.stats().lookups, 3, "the root's own reference and two");
        table.forget(ino, 1);
        assert_eq!(table.stats().unheld, 0, "still held once");
        table.forget(ino, 1);
        assert_eq!(table.node(ino), Some(tag("1")), "unheld, number kept");
        assert_eq!(table.stats().unheld, 1);
        assert_eq!(table.hold_node(&tag("1")), ino, "stable while mounted");
        assert_eq!(table.stats().unheld, 0);
        table.forget(ino, 1);
        // A sweep found the tag gone from the store.
        assert_eq!(table.unheld_nodes(), vec![(ino, tag("1"))]);
        table.drop_unheld(&[ino]);
        assert_eq!(table.node(ino), None, "dropped for good");
        assert!(table.hold(ino).is_none(), "a stale number stays unknown");
        let again = table.hold_node(&tag("1"));
        assert!(again > ino, "a new number, never a reused one");
        let other = table.hold_node(&tag("2"));
        assert!(other > again);
        let stats = table.stats();
        assert_eq!((stats.nodes, stats.held_nodes, stats.numbered), (3, 3, 4));
        // Forgetting more than was counted (a kernel bug) clamps at zero.
        table.forget(other, 5);
        assert_eq!(table.stats().unheld, 1);
        table.forget(other, 1);
        table.forget(999, 1);
        // The root is never swept.
        table.drop_unheld(&[ROOT_INO]);
        assert_eq!(table.node(ROOT_INO), Some(Node::Root));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut table = InodeTable::new();
        table.forget(ROOT_INO, 1_000);
        assert_eq!(table.node(ROOT_INO), Some(Node::Root));
        assert_eq!(table.ino_of(&Node::Root), ROOT_INO);
        assert_eq!(table.hold_node(&Node::Root), ROOT_INO);
    }

    #[test]
    fn listed_numbers_are_unheld_and_sweeps_come_when_they_double() {
        let mut table = InodeTable::new();
        let listed = table.ino_of(&tag("a"));
        assert_eq!(table.stats().unheld, 1);
        assert_eq!(
            table.hold_node(&tag("a")),
            listed,
            "lookup after readdir agrees"
        );
        assert_eq!(table.stats().unheld, 0);
        let b = table.ino_of(&tag("b"));
        // A sweep lists b, then b is looked up before the sweep's answer: kept.
        assert_eq!(table.unheld_nodes(), vec![(b, tag("b"))]);
        assert_eq!(table.hold(b), Some(tag("b")));
        table.drop_unheld(&[b]);
        assert_eq!(table.node(b), Some(tag("b")));
        // Sweeps: from SWEEP_MIN unheld numbers on, then each time they double.
        assert!(!table.sweep_due());
        for i in 0..SWEEP_MIN {
            table.ino_of(&tag(&format!("n{i}")));
        }
        assert!(table.sweep_due());
        table.drop_unheld(&[]);
        assert!(
            !table.sweep_due(),
            "nothing was gone: not again before doubling"
        );
        for i in 0..SWEEP_MIN {
            table.ino_of(&tag(&format!("m{i}")));
        }
        assert!(table.sweep_due());
    }

    #[test]
    fn a_view_block_lives_while_the_kernel_holds_any_of_its_numbers() {
        let mut table = InodeTable::new();
        let (repo, kind) = (repo_key(), TreeKind::Rootfs);
        let root = table.hold_node(&rootfs(0));
        let base = table.tree_base(&repo, &digest(1), kind, 10);
        let three = table.hold_tree_node(&repo, &digest(1), kind, 10, NodeId(3));
        let five = table.hold_tree_node(&repo, &digest(1), kind, 10, NodeId(5));
        assert_eq!((three, five), (base + 3, base + 5));
        assert_eq!(
            table.hold(three),
            Some(rootfs(3)),
            "READDIRPLUS counts it again"
        );
        assert_eq!(table.stats().held_blocks, 1);
        table.forget(three, 2);
        assert_eq!(
            table.node(base + 7),
            Some(rootfs(7)),
            "five still holds the block"
        );
        assert!(table.node(base + 10).is_none(), "past the tree");
        assert!(table.node(base).is_none(), "the root has a table number");
        table.forget(five, 1);
        let stats = table.stats();
        assert_eq!((stats.blocks, stats.held_blocks, stats.unheld), (1, 0, 1));
        assert_eq!(table.node(five), Some(rootfs(5)), "unheld, numbers kept");
        assert_eq!(table.tree_base(&repo, &digest(1), kind, 10), base, "stable");
        // A sweep found the manifest gone from the repository.
        assert_eq!(
            table.unheld_nodes(),
            vec![(base, Node::Manifest(repo.clone(), digest(1), Item::Dir))]
        );
        table.drop_unheld(&[base]);
        assert_eq!(table.stats().blocks, 0);
        assert!(
            table.node(five).is_none(),
            "stale numbers of the block are unknown"
        );
        assert_eq!(
            table.node(root),
            Some(rootfs(0)),
            "the view's root is a node"
        );
        let again = table.tree_base(&repo, &digest(1), kind, 10);
        assert!(again > base + 10, "a new block past every old number");
    }

    #[test]
    fn rename_keeps_lookup_counts() {
        let mut table = InodeTable::new();
        let one = table.hold_node(&tag("1"));
        let two = table.hold_node(&tag("2"));
        // `mv tags/1 tags/2`: the kernel keeps 1's inode under the name 2 and still
        // holds the replaced inode until it forgets it.
        table.rename(&tag("1"), &tag("2"));
        assert_eq!(table.node(one), Some(tag("2")));
        assert_eq!(table.ino_of(&tag("2")), one);
        assert_eq!(
            table.node(two),
            Some(tag("2")),
            "the replaced inode, until forgotten"
        );
        table.forget(two, 1);
        assert_eq!(table.node(two), None);
        assert_eq!(
            table.hold_node(&tag("2")),
            one,
            "the name stays with the moved number"
        );
        table.forget(one, 1);
        assert_eq!(table.node(one), Some(tag("2")), "one lookup left");
        table.forget(one, 1);
        assert_eq!(table.node(one), Some(tag("2")), "unheld, still 2's number");
        assert!(
            table.hold_node(&tag("1")) > two,
            "1 comes back under a fresh number"
        );
        // Renaming over a number the kernel never held drops it at once.
        let held = table.hold_node(&tag("3"));
        let listed = table.ino_of(&tag("4"));
        table.rename(&tag("3"), &tag("4"));
        assert_eq!(table.node(listed), None);
        assert_eq!(table.node(held), Some(tag("4")));
        // Renaming what has no number changes nothing.
        table.rename(&tag("nothing"), &tag("5"));
        assert_eq!(table.stats().nodes, 4);
    }

    #[test]
    fn parents_and_paths_agree() {
        let repo = RepoKey {
            registry: "docker.io".into(),
            repository: "library/alpine".into(),
        };
        let node = Node::Manifest(repo.clone(), digest(1), Item::LayerBlob(2));
        assert_eq!(
            Vfs::path_of(&node),
            [
                "docker.io".to_string(),
                "library".into(),
                "alpine".into(),
                "manifests".into(),
                digest(1).to_string(),
                "layers".into(),
                "002".into(),
                "blob".into()
            ]
        );
        let mut up = node;
        let mut steps = 0;
        while up != Node::Root {
            up = Vfs::parent(&up);
            steps += 1;
        }
        assert_eq!(steps, 8);
    }
}
