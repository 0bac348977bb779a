//! Every kind of node of the mounted tree (SPEC section 3), each described once.
//!
//! Owns: for each kind, in its own module, its name and parent, its children, its
//! attributes, its link target or file content, what its existence depends on in
//! the store, and which writes it accepts as a directory. [`Kind`] is the one small
//! trait they implement; [`Node`] is the registry. The operations in
//! `super::{read, write, links}` only ever ask a node's [`Kind`]. Must not touch
//! inode numbers (the node is the key, `super::inodes` numbers it), FUSE or bytes.
//!
//! Adding a kind of node: write a module here with a struct holding what names
//! the node (hashable: it is the inode table's key) and `impl Kind` for it; add one
//! line to the `kinds!` list below; and return it from the `child`/`children` of
//! the directory it appears in.

mod blobs;
mod index_json;
mod layers;
mod layout;
mod manifest;
mod manifests;
mod namespace;
mod oci_layout;
mod platforms;
mod root;
mod staged;
mod tags;
mod tree;

use std::path::Path;
use std::sync::Arc;

use crate::digest::Digest;
use crate::layer::Xattr;
use crate::reference::{Reference, Target};

use super::attr::{Attr, DirEntry, FileContent, Ino, NodeType, Volatility};
use super::errno::VfsError;
use super::layout::{RenameTarget, WriteHandle};
use super::vfs::{RepoTags, Vfs};

pub(crate) use blobs::{BlobsDir, BlobsSha256, LayoutBlob};
pub(crate) use index_json::IndexJson;
pub(crate) use layers::{LayerBlob, LayerDir, LayersDir};
pub(crate) use manifest::{ConfigJson, ManifestDir, ManifestJson};
pub(crate) use manifests::ManifestsDir;
pub(crate) use namespace::Namespace;
pub(crate) use oci_layout::OciLayout;
pub(crate) use platforms::{PlatformLink, PlatformsDir};
pub(crate) use root::Root;
pub(crate) use staged::{StagedAt, StagedName, StagingDir};
pub(crate) use tags::{Tag, TagsDir};
pub(crate) use tree::{TreeKind, TreeNode};

pub(crate) type Result<T, E = VfsError> = std::result::Result<T, E>;

/// A repository, by registry and repository path. Shared, not copied: the nodes
/// of one repository (its directories, tags, manifests) all point at one
/// [`RepoPath`], so a mount that has seen 100,000 tags does not hold 200,000
/// copies of the same names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepoKey(Arc<RepoPath>);

/// What a [`RepoKey`] names.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepoPath {
    pub(crate) registry: String,
    pub(crate) repository: String,
}

impl std::ops::Deref for RepoKey {
    type Target = RepoPath;

    fn deref(&self) -> &RepoPath {
        &self.0
    }
}

impl RepoKey {
    pub(crate) fn new(registry: impl Into<String>, repository: impl Into<String>) -> RepoKey {
        RepoKey(Arc::new(RepoPath {
            registry: registry.into(),
            repository: repository.into(),
        }))
    }

    /// The reference of tag `tag` of this repository.
    pub(crate) fn reference(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            target: Target::Tag(tag.to_string()),
        }
    }

    /// The repository's own directory.
    pub(crate) fn namespace(&self) -> Node {
        Node::Namespace(Namespace {
            registry: self.registry.clone(),
            path: self.repository.clone(),
        })
    }

    /// The repository as the view's catalog has it (its creation time and tags: no
    /// SQL while the store is unchanged); `NotFound` once it is gone.
    pub(crate) fn row(&self, vfs: &Vfs) -> Result<Arc<RepoTags>> {
        vfs.repo_tags(self)?.ok_or(VfsError::NotFound)
    }

    /// The attributes of a directory of this repository's own with `nlink` links,
    /// changing with the store, dated `mtime_ns` or else when the repository was
    /// made.
    pub(crate) fn dir_attr(
        &self,
        vfs: &Vfs,
        ino: Ino,
        nlink: usize,
        mtime_ns: Option<i64>,
    ) -> Result<Attr> {
        let row = self.row(vfs)?;
        let mtime = mtime_ns.map_or(row.created_ns, |t| t.max(row.created_ns));
        Ok(Attr::dir(ino, nlink, mtime, Volatility::Volatile))
    }
}

impl ManifestAt {
    /// The attributes of a directory inside this manifest's view (which never
    /// changes) with `nlink` links given the view.
    pub(crate) fn dir_attr(
        &self,
        vfs: &Vfs,
        ino: Ino,
        nlink: impl FnOnce(&crate::store::ManifestView) -> Result<usize>,
    ) -> Result<Attr> {
        let view = vfs.view(&self.digest)?;
        Ok(Attr::dir(
            ino,
            nlink(&view)?,
            view.info.created_ns,
            Volatility::Immutable,
        ))
    }
}

/// A manifest as seen from one repository (`<repo>/manifests/sha256:<hex>/`): nodes
/// are per path, because FUSE forbids directory aliases.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ManifestAt {
    pub(crate) repo: RepoKey,
    pub(crate) digest: Digest,
}

/// What a node's existence depends on in the store (an inode sweep drops the
/// numbers of nodes whose thing is gone).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lives<'a> {
    /// Always there (the root).
    Always,
    /// A registry (`path` empty) or a repository path prefix in it.
    Namespace { registry: &'a str, path: &'a str },
    /// The repository.
    Repo(&'a RepoKey),
    /// The tag of the repository.
    Tag(&'a RepoKey, &'a str),
    /// The manifest, reachable from the repository.
    Manifest(&'a ManifestAt),
    /// A staged file: while this mount's table has it.
    Staged(&'a StagedName),
    /// A tool's own directory in a repository: while this mount's table has it.
    StagingDir(&'a StagingDir),
}

/// One kind of node. Reads have defaults for what is not a directory, not a link
/// and not a file; writes inside a directory are refused unless its kind accepts
/// them (EROFS for what exists, why not otherwise).
pub(crate) trait Kind {
    /// The directory holding this node (the root is its own).
    fn parent(&self) -> Node;

    /// The node's name in its parent (empty for the root).
    fn name(&self) -> String;

    /// Its attributes (number `ino`); `NotFound` when it no longer exists.
    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr>;

    /// What its existence depends on.
    fn lives(&self) -> Lives<'_>;

    /// True for directories whose listing changes with the store (dropped from the
    /// kernel's cache when it changes).
    fn listing_changes(&self) -> bool {
        false
    }

    /// The child `name` of this directory (names outside image views are UTF-8).
    fn child(&self, _vfs: &Vfs, _name: &[u8]) -> Result<Node> {
        Err(VfsError::NotDir)
    }

    /// This directory's children, in listing order, with their types.
    fn children(&self, _vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        Err(VfsError::NotDir)
    }

    /// The listing of this directory (number `ino`), `.` and `..` first.
    fn readdir(&self, vfs: &Vfs, ino: Ino) -> Result<Vec<DirEntry>> {
        let children = self.children(vfs)?;
        Ok(vfs.listing(ino, &self.parent(), children))
    }

    /// The text of this node if it is one of the mount's own symlinks (the ones
    /// link resolution follows).
    fn own_link(&self, _vfs: &Vfs) -> Result<Option<String>> {
        Ok(None)
    }

    /// The target of this symlink, byte for byte.
    fn readlink(&self, vfs: &Vfs) -> Result<Vec<u8>> {
        self.own_link(vfs)?
            .map(String::into_bytes)
            .ok_or_else(not_a_link)
    }

    /// Where the bytes of this regular file come from (`None`: not a file).
    fn content(&self, _vfs: &Vfs) -> Result<Option<FileContent>> {
        Ok(None)
    }

    /// The extended attributes a reader may see.
    fn xattrs(&self, _vfs: &Vfs) -> Result<Vec<Xattr>> {
        Ok(Vec::new())
    }

    /// `rm NAME` in this directory.
    fn unlink(&self, vfs: &Vfs, name: &str) -> Result<()> {
        Err(refuse_removal(self.child(vfs, name.as_bytes())))
    }

    /// `rmdir NAME` in this directory.
    fn rmdir(&self, vfs: &Vfs, name: &str) -> Result<()> {
        Err(refuse_removal(self.child(vfs, name.as_bytes())))
    }

    /// `mkdir NAME` in this directory; the new node.
    fn mkdir(&self, vfs: &Vfs, name: &str) -> Result<Node> {
        Err(refuse_creation(self.child(vfs, name.as_bytes())))
    }

    /// `ln -s TARGET NAME` in this directory; the new node.
    fn symlink(&self, vfs: &Vfs, name: &str, _target: &Path) -> Result<Node> {
        Err(refuse_creation(self.child(vfs, name.as_bytes())))
    }

    /// `mv NAME TO/NEW_NAME` out of this directory by process `pid`; the moved
    /// node before and after.
    fn rename(
        &self,
        vfs: &Vfs,
        name: &str,
        _to: &Node,
        _new_name: &str,
        _no_replace: bool,
        _pid: u32,
    ) -> Result<(Node, Node)> {
        Err(refuse_removal(self.child(vfs, name.as_bytes())))
    }

    /// `open(NAME, O_CREAT)` of a new regular file in this directory (mode
    /// `mode`); the new node, opened for writing next.
    fn create(&self, vfs: &Vfs, name: &str, _mode: u32) -> Result<Node> {
        Err(refuse_creation(self.child(vfs, name.as_bytes())))
    }

    /// Opening this file for writing by process `pid` (`truncate`: `O_TRUNC`).
    fn open_write(&self, _vfs: &Vfs, _truncate: bool, _pid: u32) -> Result<WriteHandle> {
        Err(VfsError::ReadOnly)
    }

    /// `chmod` of this node.
    fn chmod(&self, _vfs: &Vfs, _mode: u32) -> Result<()> {
        Err(VfsError::ReadOnly)
    }

    /// `truncate` of this file by path (an open handle truncates its own file).
    fn truncate(&self, _vfs: &Vfs, _size: u64) -> Result<()> {
        Err(VfsError::ReadOnly)
    }

    /// What a staged file renamed to `name` in this directory becomes.
    fn staging_target(&self, _vfs: &Vfs, _name: &str) -> Result<RenameTarget> {
        Err(VfsError::ReadOnly)
    }
}

/// Declares [`Node`] with one variant per kind, and the one dispatch to its [`Kind`].
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident($kind:ty),)*) => {
        /// Every node of the tree: which kind it is and what names it. This is the
        /// inode table's key.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Node {
            $($(#[$doc])* $variant($kind),)*
        }

        impl Node {
            /// What this kind of node is and does.
            pub(crate) fn kind(&self) -> &dyn Kind {
                match self {
                    $(Node::$variant(node) => node,)*
                }
            }
        }
    };
}

kinds! {
    /// The mount root: registries.
    Root(Root),
    /// A registry or a repository path prefix in it, maybe a repository.
    Namespace(Namespace),
    /// `<repo>/tags/`
    Tags(TagsDir),
    /// `<repo>/tags/<tag>`, a symlink.
    Tag(Tag),
    /// `<repo>/manifests/`
    Manifests(ManifestsDir),
    /// `<repo>/manifests/sha256:<hex>/`
    Manifest(ManifestDir),
    /// `.../manifest.json`
    ManifestJson(ManifestJson),
    /// `.../config.json`
    ConfigJson(ConfigJson),
    /// `.../layers/`
    Layers(LayersDir),
    /// `.../layers/NNN/`
    Layer(LayerDir),
    /// `.../layers/NNN/blob`
    LayerBlob(LayerBlob),
    /// `.../platforms/`
    Platforms(PlatformsDir),
    /// `.../platforms/<name>`, a symlink.
    Platform(PlatformLink),
    /// `rootfs/` or `layers/NNN/files/`, or a node below them.
    Tree(TreeNode),
    /// `<repo>/oci-layout`
    OciLayout(OciLayout),
    /// `<repo>/index.json`, generated from the tags.
    IndexJson(IndexJson),
    /// `<repo>/blobs/`
    Blobs(BlobsDir),
    /// `<repo>/blobs/sha256/`
    BlobsSha256(BlobsSha256),
    /// `<repo>/blobs/sha256/<hex>`, a stored blob.
    LayoutBlob(LayoutBlob),
    /// A tool's own directory in a repository (umoci's `.umoci-*/`).
    StagingDir(StagingDir),
    /// A file a tool is writing in a repository, in its own directory there, or
    /// under its final name in `blobs/sha256/`.
    Staged(StagedName),
}

/// A name outside the image views: always UTF-8, so other bytes name nothing.
fn utf8(name: &[u8]) -> Result<&str> {
    std::str::from_utf8(name).map_err(|_| VfsError::NotFound)
}

fn not_a_link() -> VfsError {
    VfsError::Invalid("not a symbolic link".into())
}

/// Refusal to remove or move what the tree does not let go: EROFS when the name
/// exists (`child` found it), else why it does not.
pub(crate) fn refuse_removal(child: Result<Node>) -> VfsError {
    match child {
        Ok(_) => VfsError::ReadOnly,
        Err(error) => error,
    }
}

/// Refusal to create a name where nothing can be created: EEXIST when it exists,
/// else EROFS.
pub(crate) fn refuse_creation(child: Result<Node>) -> VfsError {
    match child {
        Ok(_) => VfsError::Exists,
        Err(VfsError::NotFound) => VfsError::ReadOnly,
        Err(error) => error,
    }
}

/// Joins a repository path prefix and one more component.
fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}
