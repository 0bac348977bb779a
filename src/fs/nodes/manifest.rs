//! `<repo>/manifests/sha256:<hex>/` and its files: `manifest.json` (the exact
//! stored bytes) and `config.json` (an image's config blob). Its directories are
//! `layers/` (see `layers`), `platforms/` (indexes, see `platforms`) and `rootfs/`
//! (images, see `tree`). Nothing here changes.

use crate::layer::NodeId;

use super::{
    utf8, Kind, LayersDir, Lives, ManifestAt, ManifestsDir, Node, NodeType, PlatformsDir, Result,
    TreeKind, TreeNode,
};
use crate::fs::attr::{Attr, FileContent, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// `<repo>/manifests/sha256:<hex>/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ManifestDir(pub(crate) ManifestAt);

/// `.../manifest.json`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ManifestJson(pub(crate) ManifestAt);

/// `.../config.json`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConfigJson(pub(crate) ManifestAt);

impl Kind for ManifestDir {
    fn parent(&self) -> Node {
        Node::Manifests(ManifestsDir(self.0.repo.clone()))
    }

    fn name(&self) -> String {
        self.0.digest.to_string()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let view = vfs.view(&self.0.digest)?;
        let subdirs = usize::from(view.stored_layers().next().is_some())
            + usize::from(view.is_index())
            + usize::from(view.is_image());
        Ok(Attr::dir(
            ino,
            2 + subdirs,
            view.info.created_ns,
            Volatility::ImmutableInVolatileDir,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let view = vfs.view(&self.0.digest)?;
        let at = self.0.clone();
        match name {
            "manifest.json" => Ok(Node::ManifestJson(ManifestJson(at))),
            "rootfs" if view.is_image() => Ok(Node::Tree(TreeNode {
                at,
                view: TreeKind::Rootfs,
                id: NodeId::ROOT,
            })),
            "config.json" if view.config_blob().is_some() => Ok(Node::ConfigJson(ConfigJson(at))),
            "layers" if view.stored_layers().next().is_some() => Ok(Node::Layers(LayersDir(at))),
            "platforms" if view.is_index() => Ok(Node::Platforms(PlatformsDir(at))),
            _ => Err(VfsError::NotFound),
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let view = vfs.view(&self.0.digest)?;
        let at = || self.0.clone();
        let (dir, file) = (NodeType::Directory, NodeType::File);
        let mut children = vec![(
            "manifest.json".into(),
            Node::ManifestJson(ManifestJson(at())),
            file,
        )];
        if view.is_image() {
            let rootfs = Node::Tree(TreeNode {
                at: at(),
                view: TreeKind::Rootfs,
                id: NodeId::ROOT,
            });
            children.push(("rootfs".into(), rootfs, dir));
        }
        if view.config_blob().is_some() {
            children.push((
                "config.json".into(),
                Node::ConfigJson(ConfigJson(at())),
                file,
            ));
        }
        if view.stored_layers().next().is_some() {
            children.push(("layers".into(), Node::Layers(LayersDir(at())), dir));
        }
        if view.is_index() {
            children.push(("platforms".into(), Node::Platforms(PlatformsDir(at())), dir));
        }
        Ok(children)
    }
}

impl Kind for ManifestJson {
    fn parent(&self) -> Node {
        Node::Manifest(ManifestDir(self.0.clone()))
    }

    fn name(&self) -> String {
        "manifest.json".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        Ok(Attr::file(ino, &vfs.view(&self.0.digest)?.info))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        vfs.view(&self.0.digest)?;
        Ok(Some(FileContent::Blob(self.0.digest)))
    }
}

impl Kind for ConfigJson {
    fn parent(&self) -> Node {
        Node::Manifest(ManifestDir(self.0.clone()))
    }

    fn name(&self) -> String {
        "config.json".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let view = vfs.view(&self.0.digest)?;
        Ok(Attr::file(
            ino,
            view.config_blob().ok_or(VfsError::NotFound)?,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        let view = vfs.view(&self.0.digest)?;
        Ok(view
            .config_blob()
            .map(|config| FileContent::Blob(config.digest)))
    }
}
