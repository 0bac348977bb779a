//! Layer entries -> trees: the per-layer view ([`layer_tree`]) and the merged rootfs
//! ([`merge_layers`]), as a pure function over an in-memory tree.
//!
//! The rules are those of `umoci unpack` (`oci/layer/tar_extract.go`), entry by entry
//! in tar order, layer after layer:
//! - `.wh.<name>` removes `<name>` from what lower layers left; `.wh..wh..opq` removes
//!   every child of its directory. Neither removes anything this layer itself put
//!   there (umoci's "upper paths": a path this layer wrote, or an ancestor of one, is
//!   kept and only its other children are removed), whether the marker comes before
//!   or after. Markers never appear in the merged tree. Invalid markers (`.wh.`,
//!   `.wh..`, `.wh...`, `.wh..wh.<anything but .opq>`) are skipped with a warning; a
//!   marker below a missing path or below a file removes nothing, silently (umoci
//!   repack writes such markers when a directory became a file).
//! - An entry replaces what is at its path (a file over a directory drops the
//!   subtree), except a directory over a directory, which keeps the children and
//!   takes the new metadata. So within one tar the last entry wins.
//! - Parent directories a tar omits are implied ([`Node::implied_dir`]).
//! - The parent path of an entry is resolved like umoci's `SecureJoin`: a symlink met
//!   on the way is followed *inside the tree* (absolute targets from the tree's root,
//!   `..` stopping at the root, at most 255 links), never outside it. The last
//!   component is never followed. A parent that is a regular file skips the entry.
//! - A hard link names the node already at its target path when it is met (the
//!   target may come from a lower layer, as with umoci, which links inside the rootfs
//!   it is building); a missing target, or a directory, skips it with a warning. Link
//!   counts are the number of names.
//! - Entry paths with `..` were already skipped by the indexer (umoci would clean
//!   them lexically; a hostile tar is the only source of them).

use std::collections::{BTreeMap, VecDeque};

use super::index::{EntryKind, LayerIndex};
use super::tree::{Children, ContentLoc, Node, NodeId, NodeKind, Tree};

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Symlinks followed while resolving one path (as `SecureJoin`).
const MAX_SYMLINK_HOPS: u32 = 255;
const ROOT: usize = 0;
const NOT_DIR: &str = "a parent path component is not a directory";

/// A built tree and what was skipped while building it.
#[derive(Debug, Clone)]
pub struct MergedTree {
    /// The tree.
    pub tree: Tree,
    /// Entries skipped (bad whiteouts, hard links to nothing, paths through files...).
    pub warnings: Vec<TreeWarning>,
}

/// An entry that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeWarning {
    /// Position of the entry's layer in the image.
    pub layer: u32,
    /// The entry's path.
    pub path: Box<[u8]>,
    /// Why it was skipped.
    pub reason: String,
}

/// The merged root filesystem of an image: `layers[0]` is the base layer.
pub fn merge_layers(layers: &[&LayerIndex]) -> MergedTree {
    let mut builder = Builder::new(layers, 0);
    for position in 0..layers.len() {
        builder.apply_layer(position, true);
    }
    builder.freeze()
}

/// Everything the merged rootfs of `layers` (base first) leaves out or changes, layer
/// by layer: within a layer, first what the indexer skipped or dropped (its
/// [`IndexWarning`](super::IndexWarning)s, in tar order), then what the merge
/// skipped (invalid whiteouts, hard links to nothing, paths through files...). Runs
/// the merge of [`merge_layers`] without building the tree.
pub fn skipped_entries(layers: &[&LayerIndex]) -> Vec<TreeWarning> {
    let mut builder = Builder::new(layers, 0);
    for position in 0..layers.len() {
        builder.apply_layer(position, true);
    }
    let mut warnings: Vec<TreeWarning> = layers
        .iter()
        .enumerate()
        .flat_map(|(position, index)| {
            index.warnings.iter().map(move |warning| TreeWarning {
                layer: position as u32,
                path: warning.path.clone(),
                reason: warning.reason.clone(),
            })
        })
        .collect();
    warnings.append(&mut builder.warnings);
    // Stable: keeps indexer before merge, and tar order, within each layer.
    warnings.sort_by_key(|warning| warning.layer);
    warnings
}

/// One layer's own entries as its tar has them (`layers/NNN/files/`): whiteout
/// markers are shown as the empty files they are, duplicates resolved as extraction
/// would. `layer_position` is recorded in each node's [`ContentLoc`]. A hard link to
/// a path this layer does not contain is skipped with a warning.
pub fn layer_tree(layer: &LayerIndex, layer_position: u32) -> MergedTree {
    let layers = [layer];
    let mut builder = Builder::new(&layers, layer_position);
    builder.apply_layer(0, false);
    builder.freeze()
}

struct Edge {
    node: usize,
    /// The layer generation (position + 1) that wrote this name, 0 if none did.
    upper: u32,
}

struct BuildNode {
    kind: NodeKind,
    /// (layer, entry) giving the attributes; `None` for implied directories.
    source: Option<(usize, usize)>,
    /// Directories only: children by name (sorted, so freezing numbers them in order).
    children: BTreeMap<Box<[u8]>, Edge>,
    /// Directories only: the parent directory (root: itself).
    parent: usize,
    /// Directories only: the generation of the last layer that wrote this path or
    /// something under it (umoci's "upper paths" for directories).
    upper: u32,
}

enum Resolve {
    Dir(usize),
    Missing,
    /// A component is neither a directory nor a symlink (a file, a device...).
    NotDir,
    /// Not resolvable at all (a symlink loop).
    Invalid(String),
}

struct Builder<'a> {
    layers: &'a [&'a LayerIndex],
    position_base: u32,
    nodes: Vec<BuildNode>,
    warnings: Vec<TreeWarning>,
}

impl<'a> Builder<'a> {
    fn new(layers: &'a [&'a LayerIndex], position_base: u32) -> Self {
        let root = BuildNode {
            kind: NodeKind::Dir,
            source: None,
            children: BTreeMap::new(),
            parent: ROOT,
            upper: 0,
        };
        Builder {
            layers,
            position_base,
            nodes: vec![root],
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, layer: usize, path: &[u8], reason: impl Into<String>) {
        self.warnings.push(TreeWarning {
            layer: self.position_base + layer as u32,
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn is_dir(&self, node: usize) -> bool {
        self.nodes[node].kind == NodeKind::Dir
    }

    fn symlink_target(&self, node: usize) -> Option<&'a [u8]> {
        let (layer, entry) = self.nodes[node].source?;
        let entry = &self.layers[layer].entries[entry];
        (self.nodes[node].kind == NodeKind::Symlink).then_some(entry.link_target.as_deref()?)
    }

    fn apply_layer(&mut self, layer: usize, whiteouts: bool) {
        let generation = layer as u32 + 1;
        let index: &'a LayerIndex = self.layers[layer];
        for (entry_index, entry) in index.entries.iter().enumerate() {
            let path: &'a [u8] = &entry.path;
            if path.is_empty() {
                if entry.kind == EntryKind::Dir {
                    self.nodes[ROOT].source = Some((layer, entry_index));
                    self.nodes[ROOT].upper = generation;
                } else {
                    self.warn(layer, path, "non-directory entry for the root skipped");
                }
                continue;
            }
            let (parent_path, name) = split_last(path);
            if whiteouts && name.starts_with(WHITEOUT_PREFIX) {
                self.whiteout(layer, path, parent_path, name, generation);
                continue;
            }
            let parent = match self.resolve_dir(parent_path, true) {
                Resolve::Dir(dir) => dir,
                Resolve::Missing => {
                    self.warn(layer, path, "skipped: parent directory missing");
                    continue;
                }
                Resolve::NotDir => {
                    self.warn(layer, path, format!("skipped: {NOT_DIR}"));
                    continue;
                }
                Resolve::Invalid(why) => {
                    self.warn(layer, path, format!("skipped: {why}"));
                    continue;
                }
            };
            let existing = self.nodes[parent].children.get(name).map(|e| e.node);
            let node = match entry.kind {
                EntryKind::Dir if existing.is_some_and(|n| self.is_dir(n)) => {
                    let node = existing.unwrap_or(ROOT);
                    self.nodes[node].source = Some((layer, entry_index));
                    node
                }
                EntryKind::Hardlink => {
                    // umoci removes what is at the path first, then links.
                    self.nodes[parent].children.remove(name);
                    let target = entry.link_target.as_deref().unwrap_or_default();
                    match self.resolve_hardlink(target) {
                        Ok(node) => node,
                        Err(why) => {
                            self.warn(layer, path, format!("hard link skipped: {why}"));
                            continue;
                        }
                    }
                }
                kind => {
                    let node = self.nodes.len();
                    self.nodes.push(BuildNode {
                        kind: node_kind(kind),
                        source: Some((layer, entry_index)),
                        children: BTreeMap::new(),
                        parent,
                        upper: 0,
                    });
                    node
                }
            };
            self.nodes[node].upper = generation;
            self.nodes[parent].children.insert(
                name.into(),
                Edge {
                    node,
                    upper: generation,
                },
            );
            // Every ancestor of a written path is an upper path too.
            let mut dir = parent;
            loop {
                self.nodes[dir].upper = generation;
                if dir == ROOT {
                    break;
                }
                dir = self.nodes[dir].parent;
            }
        }
    }

    fn whiteout(
        &mut self,
        layer: usize,
        path: &[u8],
        parent_path: &'a [u8],
        name: &[u8],
        generation: u32,
    ) {
        let opaque = name == OPAQUE;
        let target = &name[WHITEOUT_PREFIX.len()..];
        if !opaque && (matches!(target, b"" | b"." | b"..") || target.starts_with(WHITEOUT_PREFIX))
        {
            self.warn(layer, path, "invalid whiteout skipped");
            return;
        }
        let dir = match self.resolve_dir(parent_path, false) {
            Resolve::Dir(dir) => dir,
            // Nothing there to remove (umoci treats ENOENT and ENOTDIR alike). Below a
            // file is the common case: when a directory became a file, `umoci repack`
            // writes `foo` and then `foo/.wh.bar` for each child it had. Harmless, so
            // silent: a warning on every good image teaches users to ignore them.
            Resolve::Missing | Resolve::NotDir => return,
            Resolve::Invalid(why) => {
                self.warn(layer, path, format!("whiteout skipped: {why}"));
                return;
            }
        };
        if opaque {
            self.remove_lower_children(dir, generation);
            return;
        }
        let Some(edge) = self.nodes[dir].children.get(target) else {
            return;
        };
        let node = edge.node;
        if self.is_upper(edge, generation) {
            if self.is_dir(node) {
                self.remove_lower_children(node, generation);
            }
        } else {
            self.nodes[dir].children.remove(target);
        }
    }

    fn is_upper(&self, edge: &Edge, generation: u32) -> bool {
        edge.upper == generation
            || (self.nodes[edge.node].kind == NodeKind::Dir
                && self.nodes[edge.node].upper == generation)
    }

    /// Removes every child of `dir` this layer did not write; descends into the
    /// directories it did.
    fn remove_lower_children(&mut self, dir: usize, generation: u32) {
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let children = std::mem::take(&mut self.nodes[dir].children);
            let mut kept = BTreeMap::new();
            for (name, edge) in children {
                if self.is_upper(&edge, generation) {
                    if self.is_dir(edge.node) {
                        pending.push(edge.node);
                    }
                    kept.insert(name, edge);
                }
            }
            self.nodes[dir].children = kept;
        }
    }

    /// Resolves a directory path like `SecureJoin` (symlinks followed inside the tree),
    /// creating missing directories as implied ones when `create`.
    fn resolve_dir(&mut self, path: &'a [u8], create: bool) -> Resolve {
        let mut pending: VecDeque<&'a [u8]> = components(path).collect();
        let mut current = ROOT;
        // Components below the first missing one: resolved lexically, as SecureJoin does.
        let mut missing: Vec<&'a [u8]> = Vec::new();
        let mut hops = 0u32;
        while let Some(component) = pending.pop_front() {
            if component == b".." {
                if missing.pop().is_none() {
                    current = self.nodes[current].parent;
                }
                continue;
            }
            if !missing.is_empty() {
                missing.push(component);
                continue;
            }
            let Some(edge) = self.nodes[current].children.get(component) else {
                missing.push(component);
                continue;
            };
            let node = edge.node;
            match self.nodes[node].kind {
                NodeKind::Dir => current = node,
                NodeKind::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Resolve::Invalid("too many levels of symbolic links".to_string());
                    }
                    let target = self.symlink_target(node).unwrap_or_default();
                    if target.starts_with(b"/") {
                        current = ROOT;
                    }
                    for component in components(target).rev() {
                        pending.push_front(component);
                    }
                }
                _ => return Resolve::NotDir,
            }
        }
        if missing.is_empty() {
            return Resolve::Dir(current);
        }
        if !create {
            return Resolve::Missing;
        }
        for name in missing {
            let node = self.nodes.len();
            self.nodes.push(BuildNode {
                kind: NodeKind::Dir,
                source: None,
                children: BTreeMap::new(),
                parent: current,
                upper: 0,
            });
            self.nodes[current]
                .children
                .insert(name.into(), Edge { node, upper: 0 });
            current = node;
        }
        Resolve::Dir(current)
    }

    /// The node a hard link target names: its parent resolved inside the tree, its
    /// last component not followed.
    fn resolve_hardlink(&mut self, target: &'a [u8]) -> Result<usize, String> {
        let (parent_path, name) = split_last(target);
        let dir = match self.resolve_dir(parent_path, false) {
            Resolve::Dir(dir) => dir,
            Resolve::Missing => return Err("target does not exist".to_string()),
            Resolve::NotDir => return Err(NOT_DIR.to_string()),
            Resolve::Invalid(why) => return Err(why),
        };
        match self.nodes[dir].children.get(name) {
            None => Err("target does not exist".to_string()),
            Some(edge) if self.is_dir(edge.node) => Err("target is a directory".to_string()),
            Some(edge) => Ok(edge.node),
        }
    }

    /// Numbers reachable nodes depth first in name order and builds the [`Tree`].
    fn freeze(self) -> MergedTree {
        const UNSEEN: u32 = u32::MAX;
        let mut ids = vec![UNSEEN; self.nodes.len()];
        let mut order = Vec::new();
        let mut names = vec![0u32; self.nodes.len()];
        let mut stack = vec![ROOT];
        while let Some(node) = stack.pop() {
            if ids[node] != UNSEEN {
                continue;
            }
            ids[node] = order.len() as u32;
            order.push(node);
            for edge in self.nodes[node].children.values().rev() {
                names[edge.node] += 1;
                stack.push(edge.node);
            }
        }
        let mut nodes = Vec::with_capacity(order.len());
        let mut children: Vec<Children> = Vec::with_capacity(order.len());
        for &build_index in &order {
            let build = &self.nodes[build_index];
            let mut node = match build.source {
                None => Node::implied_dir(),
                Some((layer, entry_index)) => {
                    let entry = &self.layers[layer].entries[entry_index];
                    Node {
                        kind: build.kind,
                        mode: entry.mode,
                        uid: entry.uid,
                        gid: entry.gid,
                        mtime: entry.mtime,
                        mtime_nsec: entry.mtime_nsec,
                        size: match build.kind {
                            NodeKind::File => entry.size,
                            NodeKind::Symlink => {
                                entry.link_target.as_ref().map_or(0, |t| t.len() as u64)
                            }
                            _ => 0,
                        },
                        nlink: names[build_index].max(1),
                        rdev_major: entry.dev_major,
                        rdev_minor: entry.dev_minor,
                        symlink_target: match build.kind {
                            NodeKind::Symlink => entry.link_target.clone(),
                            _ => None,
                        },
                        xattrs: entry.xattrs.clone(),
                        content: (build.kind == NodeKind::File).then_some(ContentLoc {
                            layer: self.position_base + layer as u32,
                            entry: entry_index as u32,
                        }),
                    }
                }
            };
            let node_children: Children = build
                .children
                .iter()
                .map(|(name, edge)| (name.clone(), NodeId(ids[edge.node])))
                .collect();
            if build.kind == NodeKind::Dir {
                let subdirs = build
                    .children
                    .values()
                    .filter(|e| self.is_dir(e.node))
                    .count();
                node.nlink = 2 + subdirs as u32;
            }
            nodes.push(node);
            children.push(node_children);
        }
        MergedTree {
            tree: Tree::from_parts(nodes, children),
            warnings: self.warnings,
        }
    }
}

fn node_kind(kind: EntryKind) -> NodeKind {
    match kind {
        EntryKind::File | EntryKind::Hardlink => NodeKind::File,
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink => NodeKind::Symlink,
        EntryKind::CharDevice => NodeKind::CharDevice,
        EntryKind::BlockDevice => NodeKind::BlockDevice,
        EntryKind::Fifo => NodeKind::Fifo,
    }
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// `a/b/c` -> (`a/b`, `c`); `c` -> (``, `c`). Paths are normalized (no trailing `/`).
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&path[..0], path),
    }
}
