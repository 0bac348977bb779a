//! The immutable tree the FUSE layer serves: nodes numbered densely from 0 (the
//! root), directories with sorted children, hard links sharing one node.
//!
//! Numbering is a depth-first walk in name order, so it is the same for the same
//! layers every time: the FUSE layer can use `base + node_id` as inode numbers.

use super::entry::Xattr;

/// A node's number in its [`Tree`]: dense, `0` is the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The root directory of every tree.
    pub const ROOT: NodeId = NodeId(0);

    /// The number as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// Where a regular file's content comes from: an entry of one layer. Resolve it
/// through that layer's current [`LayerIndex`](super::LayerIndex) (whose
/// [`ContentRef`](super::ContentRef) changes from a stream offset to a cached file
/// once the layer is unpacked; entry positions do not change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentLoc {
    /// Position of the layer in the image (0 = base layer).
    pub layer: u32,
    /// Position of the entry in that layer's index.
    pub entry: u32,
}

/// One file, directory or other node, with the attributes `stat` and `getxattr` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (no file type bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Files: content size; symlinks: target length; others 0.
    pub size: u64,
    /// Files: number of names (hard links); directories: 2 + subdirectories.
    pub nlink: u32,
    /// Device major number (devices only).
    pub rdev_major: u32,
    /// Device minor number.
    pub rdev_minor: u32,
    /// Symlink target, verbatim (never resolved by imagefs).
    pub symlink_target: Option<Box<[u8]>>,
    /// Extended attributes.
    pub xattrs: Box<[Xattr]>,
    /// Regular files: which layer entry holds the content.
    pub content: Option<ContentLoc>,
}

impl Node {
    /// The attributes of a directory the tar never described (the root of a layer
    /// without a `./` entry, or a parent a tar omits): mode 0755, owned by root,
    /// mtime 0 — the same for every mount, unlike the extraction time umoci gives.
    pub fn implied_dir() -> Node {
        Node {
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            nlink: 2,
            rdev_major: 0,
            rdev_minor: 0,
            symlink_target: None,
            xattrs: Box::default(),
            content: None,
        }
    }

    /// The device number as `stat` reports it.
    pub fn rdev(&self) -> u64 {
        libc::makedev(self.rdev_major, self.rdev_minor)
    }

    /// One extended attribute's value.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|x| &*x.name == name)
            .map(|x| &*x.value)
    }
}

/// Directory entries of one node: (name, child), sorted by name bytes.
pub(crate) type Children = Box<[(Box<[u8]>, NodeId)]>;

/// An immutable tree of nodes numbered `0..len()`, `0` being the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
    children: Vec<Children>,
}

impl Tree {
    /// Assembles a tree; `children[i]` belongs to `nodes[i]` and is sorted.
    pub(crate) fn from_parts(nodes: Vec<Node>, children: Vec<Children>) -> Tree {
        debug_assert_eq!(nodes.len(), children.len());
        Tree { nodes, children }
    }

    /// The root directory.
    pub fn root(&self) -> NodeId {
        NodeId::ROOT
    }

    /// The child called `name` of directory `dir` (exact bytes; `.` and `..` are not
    /// entries).
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let children = self.children.get(dir.index())?;
        children
            .binary_search_by(|(child_name, _)| (**child_name).cmp(name))
            .ok()
            .map(|i| children[i].1)
    }

    /// The entries of directory `dir`, sorted by name; empty for other nodes.
    pub fn children(&self, dir: NodeId) -> &[(Box<[u8]>, NodeId)] {
        self.children.get(dir.index()).map_or(&[], |c| &**c)
    }

    /// The node's attributes. Panics on an id not from this tree (ids are dense, so
    /// any `id < len()` is valid).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node's attributes, or `None` for an id outside the tree.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    /// Number of nodes (hard links count once).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of subdirectories of `dir` (its link count is 2 + this).
    pub fn subdir_count(&self, dir: NodeId) -> u32 {
        self.children(dir)
            .iter()
            .filter(|(_, child)| self.nodes[child.index()].kind == NodeKind::Dir)
            .count() as u32
    }

    /// Resolves a `/`-separated path lexically from the root (no symlinks followed).
    pub fn lookup_path(&self, path: &[u8]) -> Option<NodeId> {
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .try_fold(self.root(), |dir, name| self.lookup(dir, name))
    }

    /// Every path in the tree with its node, depth first in name order (the root is
    /// the empty path). Paths of hard-linked nodes appear once per name.
    pub fn walk(&self) -> Vec<(Vec<u8>, NodeId)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(Vec::new(), self.root())];
        while let Some((path, id)) = stack.pop() {
            for (name, child) in self.children(id).iter().rev() {
                let mut child_path = path.clone();
                if !child_path.is_empty() {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(name);
                stack.push((child_path, *child));
            }
            out.push((path, id));
        }
        out
    }
}
