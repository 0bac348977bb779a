//! The vocabulary the view answers in: inode numbers, file types, attributes,
//! directory entries and where a file's bytes come from.
//!
//! Owns: these plain types and the few ways an attribute is built (a directory, a
//! blob file, one of the mount's own links, a node of an image view). Must not
//! touch the store or FUSE.

use crate::digest::Digest;
use crate::layer::{self, NodeKind};
use crate::store::BlobInfo;

use std::path::PathBuf;

use super::nodes::{Node, RepoKey};

/// An inode number.
pub(crate) type Ino = u64;

/// The root directory's inode number (fixed by FUSE).
pub(crate) const ROOT_INO: Ino = 1;

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
    /// Bytes that never change (`oci-layout`).
    Fixed(&'static [u8]),
    /// A repository's `index.json`, generated when it is opened.
    IndexJson(RepoKey),
    /// A file a tool is writing through the mount (its staging file).
    Staged(PathBuf),
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

    /// A directory of the mount's own (0755) with `nlink` links.
    pub(crate) fn dir(ino: Ino, nlink: usize, mtime_ns: i64, volatility: Volatility) -> Attr {
        Attr {
            ino,
            kind: NodeType::Directory,
            size: 0,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            perm: 0o755,
            mtime_ns,
            owner: None,
            rdev: 0,
            volatility,
        }
    }

    /// A read-only file showing blob `info` whole.
    pub(crate) fn file(ino: Ino, info: &BlobInfo) -> Attr {
        Attr {
            ino,
            kind: NodeType::File,
            size: info.size,
            nlink: 1,
            perm: 0o444,
            mtime_ns: info.created_ns,
            owner: None,
            rdev: 0,
            volatility: Volatility::Immutable,
        }
    }

    /// A regular file of the mount's own that is no whole stored blob (`index.json`,
    /// `oci-layout`, a staged file).
    pub(crate) fn regular(
        ino: Ino,
        size: u64,
        perm: u16,
        mtime_ns: i64,
        volatility: Volatility,
    ) -> Attr {
        Attr {
            ino,
            kind: NodeType::File,
            size,
            nlink: 1,
            perm,
            mtime_ns,
            owner: None,
            rdev: 0,
            volatility,
        }
    }

    /// One of the mount's own symbolic links, reading `target`.
    pub(crate) fn link(ino: Ino, target: &str, mtime_ns: i64, volatility: Volatility) -> Attr {
        Attr {
            ino,
            kind: NodeType::Symlink,
            size: target.len() as u64,
            nlink: 1,
            perm: 0o777,
            mtime_ns,
            owner: None,
            rdev: 0,
            volatility,
        }
    }

    /// A node of an image view, as its tar header gave it.
    pub(crate) fn of_tree_node(node: &layer::Node, ino: Ino) -> Attr {
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
    pub(super) node: Option<Node>,
}

impl DirEntry {
    /// `.` and `..`, which every listing starts with.
    pub(super) fn dots(ino: Ino, parent_ino: Ino) -> Vec<DirEntry> {
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
}
