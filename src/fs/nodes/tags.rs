//! `<repo>/tags/` and each `tags/<tag>`, a symlink to `../manifests/sha256:<hex>`.
//! `rm` untags, `ln -s` tags, `mv` renames or promotes a tag.

use std::path::Path;

use crate::digest::Digest;
use crate::reference;
use crate::store::StoreError;

use super::{refuse_removal, utf8, Kind, Lives, Node, NodeType, RepoKey, Result};
use crate::fs::attr::{Attr, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::links::path_of;
use crate::fs::vfs::Vfs;

/// `<repo>/tags/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TagsDir(pub(crate) RepoKey);

/// `<repo>/tags/<tag>`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tag {
    pub(crate) repo: RepoKey,
    pub(crate) name: String,
}

/// A tag's link text: `../manifests/sha256:<hex>`.
fn tag_link(manifest: &Digest) -> String {
    format!("../manifests/{manifest}")
}

impl TagsDir {
    fn tag(&self, name: &str) -> Node {
        Node::Tag(Tag {
            repo: self.0.clone(),
            name: name.to_string(),
        })
    }
}

impl Kind for TagsDir {
    fn parent(&self) -> Node {
        self.0.namespace()
    }

    fn name(&self) -> String {
        "tags".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let repo = &self.0;
        let tags = vfs.store().tags(&repo.registry, &repo.repository)?;
        let newest = tags.iter().map(|t| t.updated_ns).max();
        repo.dir_attr(vfs, ino, 2, newest)
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        vfs.store()
            .tag_info(&self.0.registry, &self.0.repository, name)?
            .ok_or(VfsError::NotFound)?;
        Ok(self.tag(name))
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        Ok(vfs
            .store()
            .tags(&self.0.registry, &self.0.repository)?
            .into_iter()
            .map(|row| {
                let node = self.tag(&row.name);
                (row.name, node, NodeType::Symlink)
            })
            .collect())
    }

    /// `rm tags/<tag>`: untags (blobs only it kept are gone before this returns).
    fn unlink(&self, vfs: &Vfs, name: &str) -> Result<()> {
        if reference::validate_tag(name).is_err() {
            return Err(VfsError::NotFound);
        }
        vfs.store().untag(&self.0.reference(name))?;
        Ok(())
    }

    /// `ln -s TARGET tags/<name>`: tags what TARGET names (never copies anything).
    fn symlink(&self, vfs: &Vfs, name: &str, target: &Path) -> Result<Node> {
        reference::validate_tag(name).map_err(StoreError::from)?;
        let link_dir = path_of(&Node::Tags(self.clone()));
        let digest = vfs.link_target_digest(&link_dir, target)?;
        vfs.store()
            .set_tag(&self.0.reference(name), &digest, false)?;
        Ok(self.tag(name))
    }

    /// `mv tags/a tags/b`, also between repositories and registries (promotion).
    fn rename(
        &self,
        vfs: &Vfs,
        name: &str,
        to: &Node,
        new_name: &str,
        no_replace: bool,
        _pid: u32,
    ) -> Result<(Node, Node)> {
        let Node::Tags(to) = to else {
            return Err(refuse_removal(self.child(vfs, name.as_bytes())));
        };
        reference::validate_tag(new_name).map_err(StoreError::from)?;
        if no_replace
            && vfs
                .store()
                .tag_info(&to.0.registry, &to.0.repository, new_name)?
                .is_some()
        {
            return Err(VfsError::Exists);
        }
        vfs.store()
            .move_tag(&self.0.reference(name), &to.0.reference(new_name))?;
        Ok((self.tag(name), to.tag(new_name)))
    }
}

impl Kind for Tag {
    fn parent(&self) -> Node {
        Node::Tags(TagsDir(self.repo.clone()))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let row = vfs
            .store()
            .tag_info(&self.repo.registry, &self.repo.repository, &self.name)?
            .ok_or(VfsError::NotFound)?;
        Ok(Attr::link(
            ino,
            &tag_link(&row.manifest),
            row.updated_ns,
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Tag(&self.repo, &self.name)
    }

    fn own_link(&self, vfs: &Vfs) -> Result<Option<String>> {
        let row = vfs
            .store()
            .tag_info(&self.repo.registry, &self.repo.repository, &self.name)?
            .ok_or(VfsError::NotFound)?;
        Ok(Some(tag_link(&row.manifest)))
    }
}
