//! The writing operations of the view (SPEC section 3, "Writing", and section 7):
//! `rm`, `rmdir`, `mkdir`, `ln -s`, `mv`, creating and opening files for writing
//! and `chmod`/`truncate`, and the state `mkdir -p` needs. What writes to files do
//! is `super::layout`'s.
//!
//! Owns: refusing every change on a read-only mount, handing each write to the
//! kind of the directory it happens in (`super::nodes` says which writes a kind
//! accepts), keeping inode numbers with a renamed tag, and the mkdir demotion
//! state. Must not decide what a write means for a kind of node.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use super::attr::{Attr, Ino};
use super::errno::VfsError;
use super::layout::WriteHandle;
use super::lock;
use super::nodes::{Node, Result};
use super::vfs::Vfs;

/// Repositories this mount's `mkdir` made. `mkdir -p a/b/c` first makes `a` and
/// `a/b`, which become plain path prefixes again ("demoted") when a deeper one is
/// made inside them while still empty; an `rmdir` that leaves a demoted one empty
/// brings it back, so `mkdir a; mkdir a/b; rmdir a/b` leaves `a` as it was (POSIX).
#[derive(Debug, Default)]
pub(crate) struct MkdirState {
    /// (registry, repository) made by this mount's mkdir.
    made: Mutex<HashSet<(String, String)>>,
    /// Made by this mount's mkdir and turned back into prefixes by a mkdir below.
    demoted: Mutex<HashSet<(String, String)>>,
}

impl MkdirState {
    /// Notes that this mount's mkdir made `registry/path`.
    pub(crate) fn made(&self, registry: &str, path: &str) {
        lock(&self.made).insert((registry.to_string(), path.to_string()));
    }

    /// Notes that `registry/path` was removed.
    pub(crate) fn removed(&self, registry: &str, path: &str) {
        lock(&self.made).remove(&(registry.to_string(), path.to_string()));
    }
}

impl Vfs {
    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(VfsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// `rm NAME` in directory `parent` (untagging, in `tags/`).
    pub(crate) fn unlink(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        self.node(parent)?.kind().unlink(self, name)
    }

    /// `rmdir NAME` in directory `parent`: a manifest, an empty registry or
    /// repository; `tags/` and `manifests/` of a repository once they are empty.
    pub(crate) fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        self.node(parent)?.kind().rmdir(self, name)
    }

    /// `mkdir NAME` in directory `parent`: a registry at the root, a repository
    /// below one.
    pub(crate) fn mkdir(&self, parent: Ino, name: &str) -> Result<Attr> {
        self.writable()?;
        let node = self.node(parent)?.kind().mkdir(self, name)?;
        self.hold_attr(&node)
    }

    /// `ln -s TARGET NAME` in directory `parent` (tagging, in `tags/`).
    pub(crate) fn symlink(&self, parent: Ino, name: &str, target: &Path) -> Result<Attr> {
        self.writable()?;
        let node = self.node(parent)?.kind().symlink(self, name, target)?;
        self.hold_attr(&node)
    }

    /// `mv` by process `pid`: tags between `tags/` directories, also across
    /// repositories and registries (promotion); files tools wrote in a repository's
    /// OCI layout into `blobs/sha256/` or over `index.json`.
    pub(crate) fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
        pid: u32,
    ) -> Result<()> {
        self.writable()?;
        let from = self.node(parent)?;
        let to = self.node(new_parent)?;
        let (moved, renamed) = from
            .kind()
            .rename(self, name, &to, new_name, no_replace, pid)?;
        self.renamed(&moved, &renamed);
        Ok(())
    }

    /// `open(NAME, O_CREAT)` of a new file in directory `parent` by process `pid`:
    /// its attributes (one kernel reference counted) and the handle to write it.
    pub(crate) fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        pid: u32,
    ) -> Result<(Attr, WriteHandle)> {
        self.writable()?;
        let node = self.node(parent)?.kind().create(self, name, mode)?;
        let handle = node.kind().open_write(self, true, pid)?;
        let attr = self.hold_attr(&node)?;
        Ok((attr, handle))
    }

    /// Opens file `ino` for writing by process `pid` (`truncate`: `O_TRUNC`).
    pub(crate) fn open_write(&self, ino: Ino, truncate: bool, pid: u32) -> Result<WriteHandle> {
        self.writable()?;
        self.node(ino)?.kind().open_write(self, truncate, pid)
    }

    /// `chmod` and `truncate` of `ino` (through the open `handle` when given).
    pub(crate) fn setattr(
        &self,
        ino: Ino,
        mode: Option<u32>,
        size: Option<u64>,
        handle: Option<&mut WriteHandle>,
    ) -> Result<Attr> {
        let node: Node = self.node(ino)?;
        self.writable()?;
        // Times (`touch`) are taken, and dropped, only on files being written.
        if mode.is_none() && size.is_none() && !matches!(node, Node::Staged(_)) {
            return Err(VfsError::ReadOnly);
        }
        if let Some(size) = size {
            match handle {
                Some(handle) => handle.set_len(size)?,
                None => node.kind().truncate(self, size)?,
            }
        }
        if let Some(mode) = mode {
            let current = node.kind().attr(self, ino)?;
            // chmod to the mode it has is no change (tools set 0644 on blobs).
            if u32::from(current.perm) != mode & 0o7777 {
                node.kind().chmod(self, mode)?;
            }
        }
        node.kind().attr(self, ino)
    }

    /// After `mkdir a/b`, turns `a` back into a plain prefix if this mount's mkdir
    /// made it and it is still empty, so `mkdir -p` makes only the last repository.
    pub(super) fn demote_mkdir_parent(&self, registry: &str, path: &str) {
        if path.is_empty() {
            return;
        }
        let key = (registry.to_string(), path.to_string());
        if !lock(&self.mkdirs().made).remove(&key) {
            return;
        }
        if matches!(self.store().tags(registry, path), Ok(tags) if tags.is_empty()) {
            match self.store().remove_repository(registry, path, false) {
                Ok(()) => {
                    lock(&self.mkdirs().demoted).insert(key);
                }
                Err(error) => {
                    log::warn!("mkdir: keeping {registry}/{path} as a repository: {error}")
                }
            }
        }
    }

    /// After `rmdir a/b`: if `a` was a repository this mount demoted to a prefix and
    /// nothing is left below it, it becomes the empty repository it was again
    /// (otherwise the directory the user made would vanish with its child).
    pub(super) fn restore_demoted_parent(&self, registry: &str, path: &str) -> Result<()> {
        if path.is_empty() {
            return Ok(());
        }
        let key = (registry.to_string(), path.to_string());
        if !lock(&self.mkdirs().demoted).contains(&key) {
            return Ok(());
        }
        let (is_repo, children) = self.namespace(registry, path)?;
        if is_repo.is_none() && children.is_empty() {
            self.store().create_repository(registry, path)?;
            lock(&self.mkdirs().demoted).remove(&key);
            lock(&self.mkdirs().made).insert(key);
        }
        Ok(())
    }
}
