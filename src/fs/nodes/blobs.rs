//! `<repo>/blobs/` and `<repo>/blobs/sha256/` of a repository's OCI layout (SPEC
//! section 7), and each `blobs/sha256/<hex>`.
//!
//! A lookup finds every blob of the store, whatever repository holds it, so
//! copying tools skip what the store has; the listing shows the blobs this
//! repository's tags reach and those written through it that a grace lease still
//! keeps, only 64-hex names. Files created here under their final name (skopeo
//! writes manifests so) are staged and become blobs when closed; a staged file
//! renamed here is hashed and verified (`fs::layout`). `rm` of a blob a tag still
//! reaches is EBUSY.

use crate::digest::Digest;

use super::{utf8, Kind, Lives, Node, NodeType, RepoKey, Result, StagedAt, StagedName};
use crate::fs::attr::{Attr, FileContent, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::layout::{RenameTarget, WriteHandle};
use crate::fs::vfs::Vfs;

/// `<repo>/blobs/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlobsDir(pub(crate) RepoKey);

/// `<repo>/blobs/sha256/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlobsSha256(pub(crate) RepoKey);

/// `<repo>/blobs/sha256/<hex>`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LayoutBlob {
    pub(crate) repo: RepoKey,
    pub(crate) digest: Digest,
}

impl Kind for BlobsDir {
    fn parent(&self) -> Node {
        self.0.namespace()
    }

    fn name(&self) -> String {
        "blobs".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        self.0.dir_attr(vfs, ino, 3, None)
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        self.0.row(vfs)?;
        match utf8(name)? {
            "sha256" => Ok(Node::BlobsSha256(BlobsSha256(self.0.clone()))),
            _ => Err(VfsError::NotFound),
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        self.0.row(vfs)?;
        Ok(vec![(
            "sha256".into(),
            Node::BlobsSha256(BlobsSha256(self.0.clone())),
            NodeType::Directory,
        )])
    }

    /// `rmdir blobs/sha256` once it lists nothing: a no-op, so `rm -rf` of a
    /// repository works.
    fn rmdir(&self, vfs: &Vfs, name: &str) -> Result<()> {
        self.child(vfs, name.as_bytes())?;
        super::layout::blobs_empty(vfs, &self.0)
    }
}

impl BlobsSha256 {
    fn staged(&self, hex: &str) -> StagedName {
        StagedName {
            repo: self.0.clone(),
            at: StagedAt::Blobs,
            name: hex.to_string(),
        }
    }

    fn blob(&self, digest: Digest) -> Node {
        Node::LayoutBlob(LayoutBlob {
            repo: self.0.clone(),
            digest,
        })
    }
}

/// A blob file name: 64 lowercase hex digits.
fn blob_name(name: &str) -> Option<Digest> {
    if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Digest::from_hex(name).ok()
}

impl Kind for BlobsSha256 {
    fn parent(&self) -> Node {
        Node::Blobs(BlobsDir(self.0.clone()))
    }

    fn name(&self) -> String {
        "sha256".into()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        self.0.dir_attr(vfs, ino, 2, None)
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.0)
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        let digest = blob_name(name).ok_or(VfsError::NotFound)?;
        if vfs.layout().file(&self.staged(name)).is_some() {
            return Ok(Node::Staged(self.staged(name)));
        }
        self.0.row(vfs)?;
        vfs.store()
            .layout_blob_size(&digest)?
            .ok_or(VfsError::NotFound)?;
        Ok(self.blob(digest))
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        let mut children: Vec<(String, Node, NodeType)> = vfs
            .store()
            .layout_blobs(&self.0.registry, &self.0.repository)?
            .into_iter()
            .map(|digest| (digest.hex(), self.blob(digest), NodeType::File))
            .collect();
        for name in vfs.layout().files_in(&self.0, &StagedAt::Blobs) {
            if !children.iter().any(|(listed, _, _)| *listed == name) {
                let node = Node::Staged(self.staged(&name));
                children.push((name, node, NodeType::File));
            }
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(children)
    }

    /// A file created under its final name: staged, made the blob when closed.
    fn create(&self, vfs: &Vfs, name: &str, mode: u32) -> Result<Node> {
        if blob_name(name).is_none() {
            return Err(VfsError::Invalid(format!(
                "blobs/sha256/ holds only blobs named by their sha256 (64 hex digits), not {name:?}"
            )));
        }
        if self.child(vfs, name.as_bytes()).is_ok() {
            return Err(VfsError::Exists);
        }
        vfs.create_staged(&self.staged(name), mode)
    }

    /// `rm`: a blob being written, or a blob nothing references (EBUSY otherwise).
    fn unlink(&self, vfs: &Vfs, name: &str) -> Result<()> {
        let digest = blob_name(name).ok_or(VfsError::NotFound)?;
        if vfs.layout().file(&self.staged(name)).is_some() {
            return vfs.remove_staged(&self.staged(name));
        }
        vfs.store().remove_layout_blob(&digest)?;
        Ok(())
    }

    fn staging_target(&self, _vfs: &Vfs, name: &str) -> Result<RenameTarget> {
        let digest = blob_name(name).ok_or_else(|| {
            VfsError::Invalid(format!(
                "blobs/sha256/ holds only blobs named by their sha256 (64 hex digits), not {name:?}"
            ))
        })?;
        Ok(RenameTarget::Blob(self.0.clone(), digest))
    }
}

impl Kind for LayoutBlob {
    fn parent(&self) -> Node {
        Node::BlobsSha256(BlobsSha256(self.repo.clone()))
    }

    fn name(&self) -> String {
        self.digest.hex()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let size = vfs
            .store()
            .layout_blob_size(&self.digest)?
            .ok_or(VfsError::NotFound)?;
        let created = vfs
            .store()
            .blob(&self.digest)?
            .map_or(0, |info| info.created_ns);
        Ok(Attr::regular(
            ino,
            size,
            0o444,
            created,
            Volatility::ImmutableInVolatileDir,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Repo(&self.repo)
    }

    fn content(&self, _vfs: &Vfs) -> Result<Option<FileContent>> {
        Ok(Some(FileContent::Blob(self.digest)))
    }

    /// Rewriting a blob in place is taken when the bytes are the same (checked on
    /// close).
    fn open_write(&self, vfs: &Vfs, truncate: bool, _pid: u32) -> Result<WriteHandle> {
        vfs.store()
            .layout_blob_size(&self.digest)?
            .ok_or(VfsError::NotFound)?;
        vfs.open_blob_rewrite(&self.repo, &self.digest, truncate)
    }
}
