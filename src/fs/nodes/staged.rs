//! Files tools write through a repository's OCI layout before they become blobs or
//! an `index.json` (SPEC section 7): temporary files in the repository directory
//! (skopeo's `oci-put-blob*`), tools' own directories there (umoci's `.umoci-*/`)
//! with files inside, and files created in `blobs/sha256/` under their final name.
//! They are staging only: backed by staging files of the store (`STORE/tmp/`),
//! known to this mount alone, never tags nor repositories. What they may become
//! is decided in `fs::layout`.

use super::{refuse_creation, utf8, Kind, Lives, Node, NodeType, RepoKey, Result};
use crate::fs::attr::{Attr, FileContent, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::layout::{RenameTarget, WriteHandle};
use crate::fs::vfs::Vfs;

/// Where in a repository a staged file is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum StagedAt {
    /// The repository directory itself.
    Repo,
    /// A tool's own directory in it.
    Dir(String),
    /// `blobs/sha256/`, under the blob's name.
    Blobs,
}

/// A staged file, by repository, place and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StagedName {
    pub(crate) repo: RepoKey,
    pub(crate) at: StagedAt,
    pub(crate) name: String,
}

/// A tool's own directory in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StagingDir {
    pub(crate) repo: RepoKey,
    pub(crate) name: String,
}

impl StagingDir {
    fn file(&self, name: &str) -> StagedName {
        StagedName {
            repo: self.repo.clone(),
            at: StagedAt::Dir(self.name.clone()),
            name: name.to_string(),
        }
    }
}

impl Kind for StagingDir {
    fn parent(&self) -> Node {
        self.repo.namespace()
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let (mode, created) = vfs
            .layout()
            .dir(&self.repo, &self.name)
            .ok_or(VfsError::NotFound)?;
        let mut attr = Attr::dir(ino, 2, created, Volatility::Volatile);
        attr.perm = mode;
        Ok(attr)
    }

    fn lives(&self) -> Lives<'_> {
        Lives::StagingDir(self)
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let file = self.file(utf8(name)?);
        vfs.layout().file(&file).ok_or(VfsError::NotFound)?;
        Ok(Node::Staged(file))
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        vfs.layout()
            .dir(&self.repo, &self.name)
            .ok_or(VfsError::NotFound)?;
        Ok(vfs
            .layout()
            .files_in(&self.repo, &StagedAt::Dir(self.name.clone()))
            .into_iter()
            .map(|name| {
                let node = Node::Staged(self.file(&name));
                (name, node, NodeType::File)
            })
            .collect())
    }

    fn create(&self, vfs: &Vfs, name: &str, mode: u32) -> Result<Node> {
        vfs.layout()
            .dir(&self.repo, &self.name)
            .ok_or(VfsError::NotFound)?;
        vfs.create_staged(&self.file(name), mode)
    }

    fn unlink(&self, vfs: &Vfs, name: &str) -> Result<()> {
        vfs.remove_staged(&self.file(name))
    }

    fn mkdir(&self, vfs: &Vfs, name: &str) -> Result<Node> {
        // Tools' directories hold files only.
        match refuse_creation(self.child(vfs, name.as_bytes())) {
            VfsError::ReadOnly => Err(VfsError::Invalid(
                "a staging directory holds files only".into(),
            )),
            other => Err(other),
        }
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
        let from = self.file(name);
        let moved = vfs.rename_staged(&from, to, new_name, no_replace, pid)?;
        Ok((Node::Staged(from), moved))
    }

    fn staging_target(&self, vfs: &Vfs, name: &str) -> Result<RenameTarget> {
        vfs.layout()
            .dir(&self.repo, &self.name)
            .ok_or(VfsError::NotFound)?;
        Ok(RenameTarget::Staged(self.file(name)))
    }
}

impl Kind for StagedName {
    fn parent(&self) -> Node {
        match &self.at {
            StagedAt::Repo => self.repo.namespace(),
            StagedAt::Dir(dir) => Node::StagingDir(StagingDir {
                repo: self.repo.clone(),
                name: dir.clone(),
            }),
            StagedAt::Blobs => Node::BlobsSha256(super::BlobsSha256(self.repo.clone())),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let file = vfs.layout().file(self).ok_or(VfsError::NotFound)?;
        let metadata = std::fs::metadata(&file.path)?;
        let mtime = std::os::unix::fs::MetadataExt::mtime(&metadata)
            .saturating_mul(1_000_000_000)
            .saturating_add(std::os::unix::fs::MetadataExt::mtime_nsec(&metadata));
        Ok(Attr::regular(
            ino,
            metadata.len(),
            file.mode(),
            mtime.max(file.created_ns),
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Staged(self)
    }

    fn content(&self, vfs: &Vfs) -> Result<Option<FileContent>> {
        let file = vfs.layout().file(self).ok_or(VfsError::NotFound)?;
        Ok(Some(FileContent::Staged(file.path.clone())))
    }

    fn open_write(&self, vfs: &Vfs, truncate: bool, _pid: u32) -> Result<WriteHandle> {
        vfs.open_staged(self, truncate)
    }

    fn chmod(&self, vfs: &Vfs, mode: u32) -> Result<()> {
        vfs.chmod_staged(self, mode)
    }

    fn truncate(&self, vfs: &Vfs, size: u64) -> Result<()> {
        let file = vfs.layout().file(self).ok_or(VfsError::NotFound)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.path)?
            .set_len(size)?;
        Ok(())
    }
}
