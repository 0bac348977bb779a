//! `<repo>/oci-layout`: `{"imageLayoutVersion":"1.0.0"}`, which makes the
//! repository directory an OCI image layout (SPEC section 7). Tools rewrite it
//! when they write a layout; only the same content is taken.

use super::{Kind, Lives, Node, RepoKey, Result};
use crate::fs::attr::{Attr, FileContent, Ino, Volatility};
use crate::fs::layout::{WriteHandle, OCI_LAYOUT};
use crate::fs::vfs::Vfs;

/// `<repo>/oci-layout`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OciLayout(pub(crate) RepoKey);

impl Kind for OciLayout {
    fn parent(&self) -> Node {
        self.0.namespace()
    }

    fn name(&self) -> String {
        "oci-layout".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let row = self.0.row(vfs)?;
        Ok(Attr::regular(
            ino,
            OCI_LAYOUT.len() as u64,
            0o644,
            row.created_ns,
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        self.0.row(vfs)?;
        Ok(Some(FileContent::Fixed(OCI_LAYOUT)))
    }

    fn open_write(&self, vfs: &Vfs, truncate: bool, _pid: u32) -> Result<WriteHandle> {
        self.0.row(vfs)?;
        vfs.open_oci_layout(truncate)
    }
}
