//! The reading operations of the view: attributes, lookups, listings, link
//! targets, file contents and extended attributes.
//!
//! Owns: turning an inode number into its node and asking the node's kind, and the
//! lookup counting of entries handed to the kernel. Must not decide what a node
//! is (that is `super::nodes`) or change anything in the store.

use crate::layer;

use super::attr::{Attr, DirEntry, FileContent, Ino};
use super::errno::VfsError;
use super::nodes::Node;
use super::nodes::Result;
use super::vfs::Vfs;

impl Vfs {
    /// Attributes of inode `ino`.
    pub(crate) fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.node(ino)?.kind().attr(self, ino)
    }

    /// Looks `name` up in directory `parent`, counting one kernel reference to the
    /// answer (see [`Vfs::hold`]).
    pub(crate) fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let node = self.node(parent)?.kind().child(self, name)?;
        self.hold_attr(&node)
    }

    /// The attributes of `entry` of a listing of directory `dir`, counting one
    /// kernel reference to it (READDIRPLUS hands the kernel every entry but `.` and
    /// `..`). An entry whose number was dropped since the listing was made gets a
    /// new one (inside image views by looking its name up again: a tree lookup).
    pub(crate) fn lookup_listed(&self, dir: Ino, entry: &DirEntry) -> Result<Attr> {
        match self.hold_number(entry.ino) {
            // A rename may have moved the number to another name meanwhile.
            Some(node) if entry.node.as_ref().is_none_or(|listed| *listed == node) => node
                .kind()
                .attr(self, entry.ino)
                .inspect_err(|_| self.forget(entry.ino, 1)),
            Some(_) => {
                self.forget(entry.ino, 1);
                self.hold_listed_again(dir, entry)
            }
            None => self.hold_listed_again(dir, entry),
        }
    }

    fn hold_listed_again(&self, dir: Ino, entry: &DirEntry) -> Result<Attr> {
        match &entry.node {
            Some(node) => self.hold_attr(node),
            None => self.lookup(dir, &entry.name),
        }
    }

    /// Lists directory `ino`, with `.` and `..` first.
    pub(crate) fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.node(ino)?.kind().readdir(self, ino)
    }

    /// The target of symlink `ino`, byte for byte as stored.
    pub(crate) fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.node(ino)?.kind().readlink(self)
    }

    /// Where the bytes of regular file `ino` come from, or `None` when `ino` is no
    /// regular file.
    pub(crate) fn content_of(&self, ino: Ino) -> Result<Option<FileContent>> {
        self.node(ino)?.kind().content(self)
    }

    /// The extended attributes of `ino` a reader may see.
    pub(crate) fn xattrs(&self, ino: Ino) -> Result<Vec<layer::Xattr>> {
        self.node(ino)?.kind().xattrs(self)
    }

    /// The value of a hidden extended attribute of the store's own (SPEC section
    /// 8): `user.imagefs.refs`, every chain of references that keeps the blob a
    /// node shows, one per line, and `user.imagefs.refcount`, its count. They are
    /// answered on a manifest directory and on the files that are whole blobs
    /// (`manifest.json`, `config.json`, `layers/NNN/blob`), and never listed, so
    /// copies of the tree do not carry them. `None`: not one of those names.
    pub(crate) fn refs_xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if name != REFS_XATTR.as_bytes() && name != REFCOUNT_XATTR.as_bytes() {
            return Ok(None);
        }
        let node = self.node(ino)?;
        let digest = match &node {
            Node::Manifest(dir) => dir.0.digest,
            other => match other.kind().content(self)? {
                Some(FileContent::Blob(digest)) => digest,
                _ => return Err(VfsError::NoXattr),
            },
        };
        let report = self.store().why(&digest)?;
        let mut text = String::new();
        if name == REFCOUNT_XATTR.as_bytes() {
            text = format!("{}\n", report.refcount);
        } else {
            for chain in &report.chains {
                text.push_str(&chain.to_string());
                text.push('\n');
            }
        }
        Ok(Some(text.into_bytes()))
    }
}

/// Every chain of references keeping a manifest or blob, one per line.
pub(crate) const REFS_XATTR: &str = "user.imagefs.refs";
/// The reference count the store acts on.
pub(crate) const REFCOUNT_XATTR: &str = "user.imagefs.refcount";
