//! `<repo>/tags/` and each `tags/<tag>`, a symlink to `../manifests/sha256:<hex>`.
//! `rm` untags, `ln -s` tags, `mv` renames or promotes a tag. Under a pull-through
//! registry, the lookup of a tag the store lacks pulls it (`crate::fs::pull_through`).

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
    /// Under a pull-through registry, the `tags/` of a repository the store does
    /// not have (yet): empty until a lookup pulls a tag.
    fn remote_only(&self, vfs: &Vfs) -> bool {
        !self.0.repository.is_empty()
            && vfs.may_exist_remotely(&self.0.registry, &self.0.repository)
    }

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
        match vfs.repo_tags(&self.0)? {
            Some(row) => self.0.dir_attr(vfs, ino, 2, row.newest_change()),
            None if self.remote_only(vfs) => Ok(vfs.virtual_dir_attr(ino)),
            None => Err(VfsError::NotFound),
        }
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let repo = vfs.repo_tags(&self.0)?;
        if repo.is_some_and(|repo| repo.tags.contains_key(name)) {
            return Ok(self.tag(name));
        }
        // What a pull-through lookup remembers of it (the pull itself is the
        // adapter's, off this thread: `Vfs::remote_lookup`).
        Err(vfs.missing_tag(&self.0.reference(name)))
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let Some(repo) = vfs.repo_tags(&self.0)? else {
            return if self.remote_only(vfs) {
                Ok(Vec::new())
            } else {
                Err(VfsError::NotFound)
            };
        };
        Ok(repo
            .tags
            .keys()
            .map(|name| (name.clone(), self.tag(name), NodeType::Symlink))
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

impl Tag {
    /// The manifest the tag points at and its last change (from the catalog).
    fn target(&self, vfs: &Vfs) -> Result<(Digest, i64)> {
        let repo = vfs.repo_tags(&self.repo)?.ok_or(VfsError::NotFound)?;
        repo.tags.get(&self.name).copied().ok_or(VfsError::NotFound)
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
        let (manifest, updated_ns) = self.target(vfs)?;
        Ok(Attr::link(
            ino,
            &tag_link(&manifest),
            updated_ns,
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Tag(&self.repo, &self.name)
    }

    fn own_link(&self, vfs: &Vfs) -> Result<Option<String>> {
        Ok(Some(tag_link(&self.target(vfs)?.0)))
    }
}
