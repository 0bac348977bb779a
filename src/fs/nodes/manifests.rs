//! `<repo>/manifests/`: one directory per manifest reachable from the repository's
//! tags. `rmdir manifests/sha256:<hex>` removes that manifest from the repository.

use crate::digest::Digest;

use super::{utf8, Kind, Lives, ManifestAt, ManifestDir, Node, NodeType, RepoKey, Result};
use crate::fs::attr::{Attr, Ino};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// `<repo>/manifests/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ManifestsDir(pub(crate) RepoKey);

impl ManifestsDir {
    fn manifest(&self, digest: Digest) -> Node {
        Node::Manifest(ManifestDir(ManifestAt {
            repo: self.0.clone(),
            digest,
        }))
    }
}

impl Kind for ManifestsDir {
    fn parent(&self) -> Node {
        self.0.namespace()
    }

    fn name(&self) -> String {
        "manifests".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let repo = &self.0;
        repo.dir_attr(vfs, ino, 2 + vfs.manifests_reached(repo)?, None)
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let digest = Digest::parse(utf8(name)?).map_err(|_| VfsError::NotFound)?;
        let manifests = vfs
            .store()
            .repository_manifests(&self.0.registry, &self.0.repository)?;
        if manifests.contains(&digest) {
            Ok(self.manifest(digest))
        } else {
            Err(VfsError::NotFound)
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        Ok(vfs
            .store()
            .repository_manifests(&self.0.registry, &self.0.repository)?
            .into_iter()
            .map(|digest| {
                (
                    digest.to_string(),
                    self.manifest(digest),
                    NodeType::Directory,
                )
            })
            .collect())
    }

    /// Deletes the manifest from this repository (every tag here pointing at it);
    /// EBUSY while an index of the repository references it.
    fn rmdir(&self, vfs: &Vfs, name: &str) -> Result<()> {
        let digest = Digest::parse(name).map_err(|_| VfsError::NotFound)?;
        vfs.store()
            .remove_manifest(&self.0.registry, &self.0.repository, &digest)?;
        Ok(())
    }
}
