//! Inode numbers for the nodes of the tree, following the kernel's lookup counts.
//!
//! Owns: the one table from numbers to [`Node`] keys and back, the blocks of
//! numbers of the image views, lookup counting, and which numbers a sweep may
//! drop. Must not ask the store anything (the view decides what is gone) and must
//! not know what a node means.
//!
//! A table assigns numbers in order of first sight to [`Node`] keys and keeps each
//! as long as the kernel holds it: a long-running mount holds what the kernel holds
//! plus fixed-size caches, however much is browsed. Numbers are never reused, so a
//! number always means the same path-shaped thing; a node the kernel forgot gets a
//! new number when it is looked up again.
//!
//! The image views' roots are numbered like any node; everything below gets
//! `base + node id` from a block of numbers reserved per (repository, manifest,
//! view) when the view is first listed or looked into, so a tree of a million
//! paths costs no table entries, hard links (one node id) share one inode, and
//! numbers stay stable while the kernel holds any of the block because trees are
//! deterministic (the tree cache may rebuild a tree meanwhile).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use crate::digest::Digest;
use crate::layer::NodeId;

use super::attr::{Ino, ROOT_INO};
use super::nodes::{ManifestAt, ManifestDir, Node, RepoKey, Root, TreeKind, TreeNode};

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
    pub(super) fn key(&self) -> (RepoKey, Digest, TreeKind) {
        (self.repo.clone(), self.digest, self.kind)
    }
}

/// The number of each numbered node, found by the node itself: a hash table of
/// numbers whose keys are the nodes `nodes` holds, so that each node is kept once
/// (a map keyed by a copy of every node doubled the table's memory). At most one
/// entry per node value: the number `entry` and `rename` gave it.
#[derive(Debug, Default)]
struct NodeIndex {
    numbers: hashbrown::HashTable<Ino>,
    hasher: RandomState,
}

impl NodeIndex {
    fn hash(&self, node: &Node) -> u64 {
        self.hasher.hash_one(node)
    }

    /// The number `node` has.
    fn get(&self, nodes: &HashMap<Ino, Numbered>, node: &Node) -> Option<Ino> {
        self.numbers
            .find(self.hash(node), |ino| {
                nodes.get(ino).is_some_and(|n| n.node == *node)
            })
            .copied()
    }

    /// Whether `ino` is the number of `node` (not a number it had before a rename).
    fn maps(&self, node: &Node, ino: Ino) -> bool {
        self.numbers.find(self.hash(node), |i| *i == ino).is_some()
    }

    /// Makes `ino` the number of `node` (already `nodes[ino]`), returning the number
    /// it replaces.
    fn insert(&mut self, nodes: &HashMap<Ino, Numbered>, node: &Node, ino: Ino) -> Option<Ino> {
        let hasher = &self.hasher;
        let rehash = |i: &Ino| nodes.get(i).map_or(0, |n| hasher.hash_one(&n.node));
        match self.numbers.entry(
            hasher.hash_one(node),
            |i| *i != ino && nodes.get(i).is_some_and(|n| n.node == *node),
            rehash,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut taken) => {
                Some(std::mem::replace(taken.get_mut(), ino))
            }
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(ino);
                None
            }
        }
    }

    /// Forgets that `ino` is the number of `node`, if it is.
    fn remove(&mut self, node: &Node, ino: Ino) -> bool {
        match self.numbers.find_entry(self.hash(node), |i| *i == ino) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
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
    by_node: NodeIndex,
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
    pub(super) fn new() -> Self {
        let mut table = InodeTable {
            by_node: NodeIndex::default(),
            nodes: HashMap::new(),
            next_ino: ROOT_INO,
            blocks: BTreeMap::new(),
            block_of: HashMap::new(),
            next_block: TREE_INO_BASE,
            unheld: HashSet::new(),
            swept_at: 0,
        };
        let (root, _) = table.entry(&Node::Root(Root));
        debug_assert_eq!(root, ROOT_INO);
        // The kernel's reference to the root, which it never forgets.
        table.add_lookup(root);
        table
    }

    /// The number of `node`, numbering it on first sight; `true` when new.
    pub(super) fn entry(&mut self, node: &Node) -> (Ino, bool) {
        debug_assert!(
            !matches!(node, Node::Tree(tree) if tree.id != NodeId::ROOT),
            "nodes below a view's root are numbered by its block"
        );
        if let Some(ino) = self.by_node.get(&self.nodes, node) {
            return (ino, false);
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
        self.by_node.insert(&self.nodes, node, ino);
        self.unheld.insert(ino);
        (ino, true)
    }

    /// The base of the block of view (`repo`, `digest`, `kind`), reserving `len`
    /// numbers when it has none; `true` when new. A tree's length never changes
    /// (trees are deterministic), so a block outlives the tree cache's copy.
    pub(super) fn block(
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
    pub(super) fn ino_of(&mut self, node: &Node) -> Ino {
        self.entry(node).0
    }

    /// The base of a view's block (see [`InodeTable::block`]), without a lookup.
    pub(super) fn tree_base(
        &mut self,
        repo: &RepoKey,
        digest: &Digest,
        kind: TreeKind,
        len: usize,
    ) -> Ino {
        self.block(repo, digest, kind, len).0
    }

    /// Numbers `node` (not below a view's root) and counts one lookup, in one step.
    pub(super) fn hold_node(&mut self, node: &Node) -> Ino {
        let (ino, _) = self.entry(node);
        self.add_lookup(ino);
        ino
    }

    /// Numbers node `id` (not the root) of a view and counts one lookup.
    pub(super) fn hold_tree_node(
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
    pub(super) fn hold(&mut self, ino: Ino) -> Option<Node> {
        let node = self.node(ino)?;
        self.add_lookup(ino);
        Some(node)
    }

    pub(super) fn add_lookup(&mut self, ino: Ino) {
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
    pub(super) fn forget(&mut self, ino: Ino, count: u64) {
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
            if self.by_node.maps(&numbered.node, ino) {
                self.unheld.insert(ino);
            } else {
                // Replaced by a rename: its name belongs to another number now.
                self.drop_node(ino);
            }
        }
    }

    pub(super) fn take_back(ino: Ino, lookups: u64, count: u64) -> u64 {
        if count > lookups {
            log::warn!("inode {ino}: the kernel forgot {count} lookups of {lookups}");
        }
        lookups.saturating_sub(count)
    }

    pub(super) fn drop_node(&mut self, ino: Ino) {
        if let Some(numbered) = self.nodes.remove(&ino) {
            // After a rename over it, the node's name belongs to another number
            // (and is left alone).
            self.by_node.remove(&numbered.node, ino);
        }
        self.unheld.remove(&ino);
    }

    pub(super) fn drop_block(&mut self, base: Ino) {
        if let Some(block) = self.blocks.remove(&base) {
            self.block_of.remove(&block.key());
        }
        self.unheld.remove(&base);
    }

    /// True when the unheld numbers should be checked against the store: there
    /// are many, and twice as many as after the last sweep.
    pub(super) fn sweep_due(&self) -> bool {
        self.unheld.len() >= SWEEP_MIN.max(self.swept_at.saturating_mul(2))
    }

    /// The unheld numbers with what each stands for (a block by its view's
    /// manifest directory), for a sweep.
    pub(super) fn unheld_nodes(&self) -> Vec<(Ino, Node)> {
        self.unheld
            .iter()
            .filter_map(|&ino| {
                if ino >= TREE_INO_BASE {
                    let block = self.blocks.get(&ino)?;
                    Some((
                        ino,
                        Node::Manifest(ManifestDir(ManifestAt {
                            repo: block.repo.clone(),
                            digest: block.digest,
                        })),
                    ))
                } else {
                    Some((ino, self.nodes.get(&ino)?.node.clone()))
                }
            })
            .collect()
    }

    /// Drops the numbers in `gone` that are still unheld, and notes the sweep.
    pub(super) fn drop_unheld(&mut self, gone: &[Ino]) {
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
    pub(super) fn block_containing(&self, ino: Ino) -> Option<Ino> {
        let (base, block) = self.blocks.range(..=ino).next_back()?;
        let id = ino - base;
        (id != 0 && id < block.len).then_some(*base)
    }

    /// After a rename the kernel keeps the moved inode under its new name: `from`'s
    /// number now means `to` (its lookups stay as they are), and `from` gets a fresh
    /// number if it ever comes back.
    pub(super) fn rename(&mut self, from: &Node, to: &Node) {
        let Some(ino) = self.by_node.get(&self.nodes, from) else {
            return;
        };
        self.by_node.remove(from, ino);
        if let Some(numbered) = self.nodes.get_mut(&ino) {
            numbered.node = to.clone();
        }
        if let Some(replaced) = self.by_node.insert(&self.nodes, to, ino) {
            // The kernel drops the replaced inode with its dentry and forgets it in
            // its own time; until then its number keeps naming `to`, which is
            // harmless. One it never held goes now.
            if self.nodes.get(&replaced).is_some_and(|n| n.lookups == 0) {
                self.drop_node(replaced);
            }
        }
    }

    pub(super) fn node(&self, ino: Ino) -> Option<Node> {
        if ino >= TREE_INO_BASE {
            let base = self.block_containing(ino)?;
            let block = self.blocks.get(&base)?;
            let id = NodeId(u32::try_from(ino - base).ok()?);
            return Some(Node::Tree(TreeNode {
                at: ManifestAt {
                    repo: block.repo.clone(),
                    digest: block.digest,
                },
                view: block.kind,
                id,
            }));
        }
        self.nodes.get(&ino).map(|n| n.node.clone())
    }

    /// The number of `node` if it has one (never numbers it).
    pub(super) fn number(&self, node: &Node) -> Option<Ino> {
        self.by_node.get(&self.nodes, node)
    }

    /// The nodes the kernel holds that match `which`, with their numbers.
    pub(super) fn held_matching(&self, which: impl Fn(&Node) -> bool) -> Vec<(Ino, Node)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.lookups > 0 && which(&n.node))
            .map(|(ino, n)| (*ino, n.node.clone()))
            .collect()
    }

    /// Numbers of the nodes the kernel holds that match `which`.
    pub(super) fn held_nodes(&self, which: impl Fn(&Node) -> bool) -> Vec<Ino> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.lookups > 0 && which(&n.node))
            .map(|(ino, _)| *ino)
            .collect()
    }

    pub(super) fn stats(&self) -> TableStats {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::nodes::{Tag, TagsDir};

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn repo_key() -> RepoKey {
        RepoKey::new("dev", "app")
    }

    #[test]
    fn inode_numbers_are_stable_and_never_reused() {
        let mut table = InodeTable::new();
        let repo = RepoKey::new("dev", "app");
        let tags = table.ino_of(&Node::Tags(TagsDir(repo.clone())));
        let tag = table.ino_of(&tag_of(&repo, "1"));
        assert_eq!(table.ino_of(&Node::Root(Root)), ROOT_INO);
        assert_ne!(tags, tag);
        assert_eq!(table.ino_of(&Node::Tags(TagsDir(repo))), tags);
        assert!(table.node(0).is_none());
        let renamed = tag_of(&repo_key(), "2");
        table.rename(&tag_of(&repo_key(), "1"), &renamed);
        assert_eq!(table.ino_of(&renamed), tag);
        assert_eq!(table.node(tag), Some(renamed.clone()));
        let again = table.ino_of(&tag_of(&repo_key(), "1"));
        assert!(again > tag, "a new number, never a reused one");
        assert!(table.node(999).is_none());
    }

    fn tag_of(repo: &RepoKey, name: &str) -> Node {
        Node::Tag(Tag {
            repo: repo.clone(),
            name: name.into(),
        })
    }

    fn tag(name: &str) -> Node {
        tag_of(&repo_key(), name)
    }

    fn at() -> ManifestAt {
        ManifestAt {
            repo: repo_key(),
            digest: digest(1),
        }
    }

    fn rootfs(id: u32) -> Node {
        Node::Tree(TreeNode {
            at: at(),
            view: TreeKind::Rootfs,
            id: NodeId(id),
        })
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
        assert_eq!(table.node(ROOT_INO), Some(Node::Root(Root)));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut table = InodeTable::new();
        table.forget(ROOT_INO, 1_000);
        assert_eq!(table.node(ROOT_INO), Some(Node::Root(Root)));
        assert_eq!(table.ino_of(&Node::Root(Root)), ROOT_INO);
        assert_eq!(table.hold_node(&Node::Root(Root)), ROOT_INO);
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
            vec![(base, Node::Manifest(ManifestDir(at())))]
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
}
