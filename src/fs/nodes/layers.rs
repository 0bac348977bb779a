//! `.../layers/`, one `NNN/` per stored layer (base first, zero-padded position),
//! each with `blob` (the layer blob's exact bytes) and, for images, `files/` (see
//! `tree`). Nothing here changes.

use crate::layer::NodeId;

use super::{
    utf8, Kind, Lives, ManifestAt, ManifestDir, Node, NodeType, Result, TreeKind, TreeNode,
};
use crate::fs::attr::{Attr, FileContent, Ino};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// `.../layers/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LayersDir(pub(crate) ManifestAt);

/// `.../layers/NNN/`, by layer position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LayerDir(pub(crate) ManifestAt, pub(crate) u32);

/// `.../layers/NNN/blob`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LayerBlob(pub(crate) ManifestAt, pub(crate) u32);

/// The name of layer directory `position`: zero-padded to three digits.
pub(crate) fn layer_name(position: u32) -> String {
    format!("{position:03}")
}

pub(crate) fn parse_layer_name(name: &str) -> Option<u32> {
    if name.len() < 3 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let position: u32 = name.parse().ok()?;
    (layer_name(position) == name).then_some(position)
}

impl Kind for LayersDir {
    fn parent(&self) -> Node {
        Node::Manifest(ManifestDir(self.0.clone()))
    }

    fn name(&self) -> String {
        "layers".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        self.0
            .dir_attr(vfs, ino, |view| Ok(2 + view.stored_layers().count()))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let view = vfs.view(&self.0.digest)?;
        parse_layer_name(utf8(name)?)
            .filter(|position| view.stored_layer(*position).is_some())
            .map(|position| Node::Layer(LayerDir(self.0.clone(), position)))
            .ok_or(VfsError::NotFound)
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let view = vfs.view(&self.0.digest)?;
        Ok(view
            .stored_layers()
            .map(|(position, _)| {
                let node = Node::Layer(LayerDir(self.0.clone(), position));
                (layer_name(position), node, NodeType::Directory)
            })
            .collect())
    }
}

impl LayerDir {
    fn files(&self) -> Node {
        Node::Tree(TreeNode {
            at: self.0.clone(),
            view: TreeKind::LayerFiles(self.1),
            id: NodeId::ROOT,
        })
    }
}

impl Kind for LayerDir {
    fn parent(&self) -> Node {
        Node::Layers(LayersDir(self.0.clone()))
    }

    fn name(&self) -> String {
        layer_name(self.1)
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        self.0.dir_attr(vfs, ino, |view| {
            view.stored_layer(self.1).ok_or(VfsError::NotFound)?;
            Ok(2 + usize::from(view.is_image()))
        })
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let view = vfs.view(&self.0.digest)?;
        match name {
            "blob" => Ok(Node::LayerBlob(LayerBlob(self.0.clone(), self.1))),
            "files" if view.is_image() => Ok(self.files()),
            _ => Err(VfsError::NotFound),
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let view = vfs.view(&self.0.digest)?;
        let blob = Node::LayerBlob(LayerBlob(self.0.clone(), self.1));
        let mut children = vec![("blob".into(), blob, NodeType::File)];
        if view.is_image() {
            children.push(("files".into(), self.files(), NodeType::Directory));
        }
        Ok(children)
    }
}

impl Kind for LayerBlob {
    fn parent(&self) -> Node {
        Node::Layer(LayerDir(self.0.clone(), self.1))
    }

    fn name(&self) -> String {
        "blob".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let view = vfs.view(&self.0.digest)?;
        Ok(Attr::file(
            ino,
            view.stored_layer(self.1).ok_or(VfsError::NotFound)?,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        let view = vfs.view(&self.0.digest)?;
        Ok(view
            .stored_layer(self.1)
            .map(|layer| FileContent::Blob(layer.digest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
