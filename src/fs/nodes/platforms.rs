//! `.../platforms/` of an index: `<os>-<arch>[-<variant>]` symlinks to
//! `../../sha256:<child>`, named uniquely and stably by the store's manifest view.

use super::{utf8, Kind, Lives, ManifestAt, ManifestDir, Node, NodeType, Result};
use crate::digest::Digest;
use crate::fs::attr::{Attr, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// `.../platforms/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PlatformsDir(pub(crate) ManifestAt);

/// `.../platforms/<name>`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PlatformLink(pub(crate) ManifestAt, pub(crate) String);

/// A platform entry's link text: `../../sha256:<hex>`.
fn platform_link(child: &Digest) -> String {
    format!("../../{child}")
}

impl Kind for PlatformsDir {
    fn parent(&self) -> Node {
        Node::Manifest(ManifestDir(self.0.clone()))
    }

    fn name(&self) -> String {
        "platforms".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        self.0.dir_attr(vfs, ino, |_| Ok(2))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let view = vfs.view(&self.0.digest)?;
        view.platform(name).ok_or(VfsError::NotFound)?;
        Ok(Node::Platform(PlatformLink(
            self.0.clone(),
            name.to_string(),
        )))
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let view = vfs.view(&self.0.digest)?;
        Ok(view
            .platforms
            .iter()
            .map(|child| {
                let node = Node::Platform(PlatformLink(self.0.clone(), child.name.clone()));
                (child.name.clone(), node, NodeType::Symlink)
            })
            .collect())
    }
}

impl PlatformLink {
    fn target(&self, vfs: &Vfs) -> Result<(String, i64)> {
        let view = vfs.view(&self.0.digest)?;
        let child = view.platform(&self.1).ok_or(VfsError::NotFound)?;
        Ok((platform_link(&child.digest), view.info.created_ns))
    }
}

impl Kind for PlatformLink {
    fn parent(&self) -> Node {
        Node::Platforms(PlatformsDir(self.0.clone()))
    }

    fn name(&self) -> String {
        self.1.clone()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let (target, created) = self.target(vfs)?;
        Ok(Attr::link(ino, &target, created, Volatility::Immutable))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Manifest(&self.0)
    }

    fn own_link(&self, vfs: &Vfs) -> Result<Option<String>> {
        Ok(Some(self.target(vfs)?.0))
    }
}
