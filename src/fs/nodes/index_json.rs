//! `<repo>/index.json`: the repository's tags as an OCI image index, one
//! descriptor per tag with the annotation `org.opencontainers.image.ref.name`,
//! sorted by tag (SPEC section 7). Generated from the tags; rewriting it (in place
//! or by a rename over it) changes them (see `fs::layout`).

use super::{Kind, Lives, Node, RepoKey, Result};
use crate::fs::attr::{Attr, FileContent, Ino, Volatility};
use crate::fs::layout::WriteHandle;
use crate::fs::vfs::Vfs;

/// `<repo>/index.json`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IndexJson(pub(crate) RepoKey);

impl Kind for IndexJson {
    fn parent(&self) -> Node {
        self.0.namespace()
    }

    fn name(&self) -> String {
        "index.json".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let row = self.0.row(vfs)?;
        let (bytes, _) = vfs.index_json(&self.0)?;
        let newest = row.newest_change().unwrap_or(0);
        Ok(Attr::regular(
            ino,
            bytes.len() as u64,
            0o644,
            newest.max(row.created_ns),
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        self.0.row(vfs)?;
        Ok(Some(FileContent::IndexJson(self.0.clone())))
    }

    fn open_write(&self, vfs: &Vfs, truncate: bool, pid: u32) -> Result<WriteHandle> {
        self.0.row(vfs)?;
        vfs.open_index_json(&self.0, truncate, pid)
    }
}
