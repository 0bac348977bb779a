//! A registry (`MOUNT/<registry>/`) or a repository path prefix inside it
//! (`docker.io/library/`), which may itself be a repository: then it also holds
//! `tags/` and `manifests/`, and is an OCI image layout (its entries and writes
//! are `layout`'s). `mkdir` makes repositories, `rmdir` removes empty ones.
//!
//! Under a pull-through registry of the mount (`crate::fs::pull_through`), a valid
//! path the store lacks is a namespace too, empty and listing nothing, with a
//! `tags/` whose lookups pull: it is the same node before and after the store has
//! it, so the kernel's inodes stay right when a pull fills it in.

use crate::reference;

use super::{
    join_path, layout, refuse_creation, refuse_removal, utf8, Kind, Lives, ManifestsDir, Node,
    NodeType, RepoKey, Result, TagsDir,
};
use crate::fs::attr::{Attr, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::layout::RenameTarget;
use crate::fs::vfs::Vfs;

/// A registry (`path` empty) or a repository path prefix inside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Namespace {
    pub(crate) registry: String,
    pub(crate) path: String,
}

impl Namespace {
    fn repo(&self) -> RepoKey {
        RepoKey::new(self.registry.clone(), self.path.clone())
    }

    /// Under a pull-through registry: a valid path the store may not have yet.
    fn may_exist_remotely(&self, vfs: &Vfs) -> bool {
        vfs.may_exist_remotely(&self.registry, &self.path)
    }

    /// The attributes of a namespace the store does not have: a remote-only
    /// directory under a pull-through registry, else `NotFound`.
    fn virtual_attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        if self.may_exist_remotely(vfs) {
            Ok(vfs.virtual_dir_attr(ino))
        } else {
            Err(VfsError::NotFound)
        }
    }

    fn below(&self, name: &str) -> Node {
        Node::Namespace(Namespace {
            registry: self.registry.clone(),
            path: join_path(&self.path, name),
        })
    }
}

impl Kind for Namespace {
    fn parent(&self) -> Node {
        if self.path.is_empty() {
            return Node::Root(super::Root);
        }
        let prefix = self.path.rsplit_once('/').map_or("", |(prefix, _)| prefix);
        Node::Namespace(Namespace {
            registry: self.registry.clone(),
            path: prefix.to_string(),
        })
    }

    fn name(&self) -> String {
        if self.path.is_empty() {
            return self.registry.clone();
        }
        let last = self
            .path
            .rsplit_once('/')
            .map_or(self.path.as_str(), |(_, last)| last);
        last.to_string()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let Some(created) = vfs.registry_created(&self.registry)? else {
            return self.virtual_attr(vfs, ino);
        };
        let info = vfs.ns(&self.registry, &self.path)?;
        if !self.path.is_empty() && info.is_repo.is_none() && info.children.is_empty() {
            return self.virtual_attr(vfs, ino);
        }
        let own = if info.is_repo.is_some() {
            2 + layout::subdirs(vfs, &self.repo())
        } else {
            0
        };
        Ok(Attr::dir(
            ino,
            2 + own + info.children.len(),
            info.is_repo.unwrap_or(created),
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Namespace {
            registry: &self.registry,
            path: &self.path,
        }
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let info = vfs.ns(&self.registry, &self.path)?;
        if info.is_repo.is_some() {
            if let Some(node) = layout::child(vfs, &self.repo(), name) {
                return Ok(node);
            }
        }
        match name {
            "tags" if info.is_repo.is_some() => Ok(Node::Tags(TagsDir(self.repo()))),
            "manifests" if info.is_repo.is_some() => Ok(Node::Manifests(ManifestsDir(self.repo()))),
            _ if info.children.contains(name) => Ok(self.below(name)),
            // Under a pull-through registry, what the store lacks may be remote.
            "tags" if !self.path.is_empty() && self.may_exist_remotely(vfs) => {
                Ok(Node::Tags(TagsDir(self.repo())))
            }
            _ if vfs.may_exist_remotely(&self.registry, &join_path(&self.path, name)) => {
                Ok(self.below(name))
            }
            _ => Err(VfsError::NotFound),
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let info = vfs.ns(&self.registry, &self.path)?;
        let dir = NodeType::Directory;
        let mut children = Vec::with_capacity(info.children.len() + 2);
        if info.is_repo.is_some() {
            // tags/ before manifests/: `rm -rf` walks in this order, and once the
            // tags are gone manifests/ is empty.
            let repo = self.repo(); // one for all the children
            children.push(("tags".into(), Node::Tags(TagsDir(repo.clone())), dir));
            children.push((
                "manifests".into(),
                Node::Manifests(ManifestsDir(repo.clone())),
                dir,
            ));
            children.extend(layout::children(vfs, &repo));
        } else if !self.path.is_empty() && info.children.is_empty() {
            // Remote-only directories list what the store has: nothing.
            return if self.may_exist_remotely(vfs) {
                Ok(children)
            } else {
                Err(VfsError::NotFound)
            };
        }
        for name in &info.children {
            let child = self.below(name);
            children.push((name.clone(), child, dir));
        }
        Ok(children)
    }

    /// `rmdir` of `tags/` and `manifests/` once they are empty is a no-op (so
    /// `rm -rf` works); of an empty repository, removes it.
    fn rmdir(&self, vfs: &Vfs, name: &str) -> Result<()> {
        let (registry, path) = (&self.registry, &self.path);
        let (is_repo, _) = vfs.namespace(registry, path)?;
        if is_repo.is_some() {
            if let Some(result) = layout::rmdir(vfs, &self.repo(), name) {
                return result;
            }
        }
        let empty = |empty: bool| {
            if empty {
                Ok(())
            } else {
                Err(VfsError::NotEmpty)
            }
        };
        match name {
            "tags" if is_repo.is_some() => empty(vfs.store().tags(registry, path)?.is_empty()),
            "manifests" if is_repo.is_some() => {
                empty(vfs.store().repository_manifests(registry, path)?.is_empty())
            }
            _ => {
                let child = join_path(path, name);
                let (child_is_repo, grandchildren) = vfs.namespace(registry, &child)?;
                if !grandchildren.is_empty() {
                    return Err(VfsError::NotEmpty);
                }
                if child_is_repo.is_none() {
                    return Err(VfsError::NotFound);
                }
                vfs.store().remove_repository(registry, &child, false)?;
                vfs.mkdirs().removed(registry, &child);
                vfs.restore_demoted_parent(registry, path)
            }
        }
    }

    fn mkdir(&self, vfs: &Vfs, name: &str) -> Result<Node> {
        let (is_repo, _) = vfs.namespace(&self.registry, &self.path)?;
        if is_repo.is_some() {
            if layout::child(vfs, &self.repo(), name).is_some() {
                return Err(VfsError::Exists);
            }
            if layout::is_staging_dir_name(name) {
                return layout::mkdir(vfs, &self.repo(), name);
            }
        }
        if !reference::is_valid_repository_component(name) {
            return Err(VfsError::Invalid(format!(
                "{name:?} is not a valid repository path component"
            )));
        }
        let child = join_path(&self.path, name);
        if vfs.namespace(&self.registry, &child)?.0.is_some() {
            return Err(VfsError::Exists);
        }
        vfs.store().create_repository(&self.registry, &child)?;
        vfs.demote_mkdir_parent(&self.registry, &self.path);
        vfs.mkdirs().made(&self.registry, &child);
        Ok(self.below(name))
    }

    /// A new file in a repository: a tool's staging file.
    fn create(&self, vfs: &Vfs, name: &str, mode: u32) -> Result<Node> {
        let (is_repo, children) = vfs.namespace(&self.registry, &self.path)?;
        if is_repo.is_none() {
            return Err(refuse_creation(self.child(vfs, name.as_bytes())));
        }
        if matches!(name, "tags" | "manifests") || children.contains(name) {
            return Err(VfsError::Exists);
        }
        if layout::child(vfs, &self.repo(), name).is_some() {
            return Err(VfsError::Exists);
        }
        layout::create(vfs, &self.repo(), name, mode)
    }

    fn unlink(&self, vfs: &Vfs, name: &str) -> Result<()> {
        let (is_repo, _) = vfs.namespace(&self.registry, &self.path)?;
        if is_repo.is_some() {
            if let Some(result) = layout::unlink(vfs, &self.repo(), name) {
                return result;
            }
        }
        Err(refuse_removal(self.child(vfs, name.as_bytes())))
    }

    fn rename(
        &self,
        vfs: &Vfs,
        name: &str,
        to: &Node,
        new_name: &str,
        no_replace: bool,
        pid: u32,
    ) -> Result<(Node, Node)> {
        if let Some(result) = layout::rename(vfs, &self.repo(), name, to, new_name, no_replace, pid)
        {
            return result;
        }
        Err(refuse_removal(self.child(vfs, name.as_bytes())))
    }

    fn staging_target(&self, vfs: &Vfs, name: &str) -> Result<RenameTarget> {
        let (is_repo, children) = vfs.namespace(&self.registry, &self.path)?;
        if is_repo.is_none() {
            return Err(VfsError::ReadOnly);
        }
        let taken = matches!(name, "tags" | "manifests")
            || children.contains(name)
            || vfs.layout().dir(&self.repo(), name).is_some();
        layout::staging_target(&self.repo(), name, taken)
    }
}
