//! The image views: `rootfs/` (all layers merged) and `layers/NNN/files/` (one
//! layer's own entries), and every node below them, exactly as the tar headers
//! say. The trees come from `super::super::image_view`; their nodes are numbered
//! by blocks (`super::super::inodes`), not one table entry each.

use crate::layer::{NodeId, NodeKind, Xattr};

use super::{not_a_link, Kind, LayerDir, Lives, ManifestAt, ManifestDir, Node, Result};
use crate::fs::attr::{Attr, DirEntry, FileContent, Ino, NodeType};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// Which tree an image view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TreeKind {
    /// `rootfs/`
    Rootfs,
    /// `layers/NNN/files/`, by layer position.
    LayerFiles(u32),
}

/// A view's root (`id` [`NodeId::ROOT`]) or a node below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TreeNode {
    pub(crate) at: ManifestAt,
    pub(crate) view: TreeKind,
    pub(crate) id: NodeId,
}

impl TreeNode {
    fn with_id(&self, id: NodeId) -> Node {
        Node::Tree(TreeNode {
            at: self.at.clone(),
            view: self.view,
            id,
        })
    }
}

impl Kind for TreeNode {
    /// The view's parent directory. Nodes inside a view answer the same (only the
    /// tree knows more, and `readdir` asks it); paths are only ever computed for
    /// the mount's own links and directories, never for nodes inside a view.
    fn parent(&self) -> Node {
        match self.view {
            TreeKind::Rootfs => Node::Manifest(ManifestDir(self.at.clone())),
            TreeKind::LayerFiles(position) => Node::Layer(LayerDir(self.at.clone(), position)),
        }
    }

    fn name(&self) -> String {
        match self.view {
            TreeKind::Rootfs => "rootfs".into(),
            TreeKind::LayerFiles(_) => "files".into(),
        }
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let tree = vfs.tree(&self.at.digest, self.view)?;
        let node = tree.get(self.id).ok_or(VfsError::NotFound)?;
        Ok(Attr::of_tree_node(node, ino))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.at)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let tree = vfs.tree(&self.at.digest, self.view)?;
        let node = tree.get(self.id).ok_or(VfsError::NotFound)?;
        if node.kind != NodeKind::Dir {
            return Err(VfsError::NotDir);
        }
        let id = tree.tree.lookup(self.id, name).ok_or(VfsError::NotFound)?;
        Ok(self.with_id(id))
    }

    fn readdir(&self, vfs: &Vfs, ino: Ino) -> Result<Vec<DirEntry>> {
        let (at, kind, id) = (&self.at, self.view, self.id);
        let tree = vfs.tree(&at.digest, kind)?;
        if tree.get(id).ok_or(VfsError::NotFound)?.kind != NodeKind::Dir {
            return Err(VfsError::NotDir);
        }
        let len = tree.tree.len();
        let parent_ino = if id == NodeId::ROOT {
            vfs.ino_of(&self.parent())
        } else {
            match tree.parent(id) {
                NodeId::ROOT => vfs.ino_of(&self.with_id(NodeId::ROOT)),
                parent => vfs.tree_base(at, kind, len) + u64::from(parent.0),
            }
        };
        let children = tree.tree.children(id);
        let mut entries = DirEntry::dots(ino, parent_ino);
        entries.reserve(children.len());
        let base = vfs.tree_base(at, kind, len);
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

    fn readlink(&self, vfs: &Vfs) -> Result<Vec<u8>> {
        let tree = vfs.tree(&self.at.digest, self.view)?;
        let node = tree.get(self.id).ok_or(VfsError::NotFound)?;
        node.symlink_target
            .as_ref()
            .map(|target| target.to_vec())
            .ok_or_else(not_a_link)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        let view = vfs.view(&self.at.digest)?;
        let tree = vfs.tree(&self.at.digest, self.view)?;
        let Some(location) = tree.get(self.id).and_then(|n| n.content) else {
            return Ok(None);
        };
        let layer = match self.view {
            // The merged tree names a layer by its index among the stored layers.
            TreeKind::Rootfs => view.stored_layers().nth(location.layer as usize),
            TreeKind::LayerFiles(position) => view.stored_layer(position).map(|l| (position, l)),
        };
        let (_, layer) = layer.ok_or(VfsError::NotFound)?;
        Ok(Some(FileContent::LayerEntry {
            layer: layer.digest,
            entry: location.entry,
        }))
    }

    /// Those from the tar headers, without `trusted.*` (privileged on a real
    /// filesystem).
    fn xattrs(&self, vfs: &Vfs) -> Result<Vec<Xattr>> {
        let tree = vfs.tree(&self.at.digest, self.view)?;
        let node = tree.get(self.id).ok_or(VfsError::NotFound)?;
        Ok(node
            .xattrs
            .iter()
            .filter(|x| !x.name.starts_with(b"trusted."))
            .cloned()
            .collect())
    }
}
