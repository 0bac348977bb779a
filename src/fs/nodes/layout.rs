//! A repository directory as an OCI image layout (SPEC section 7): the entries it
//! has besides `tags/` and `manifests/` — `blobs/`, `index.json`, `oci-layout`, and
//! what tools stage there (temporary files, directories of their own) — and the
//! writes it takes for them. `namespace` asks here for every repository.

use super::{
    BlobsDir, IndexJson, Node, NodeType, OciLayout, RepoKey, Result, StagedAt, StagedName,
    StagingDir,
};
use crate::fs::errno::VfsError;
use crate::fs::layout::RenameTarget;
use crate::fs::vfs::Vfs;

/// The layout's own names, in listing order (after `tags` and `manifests`).
const LAYOUT_NAMES: [&str; 3] = ["blobs", "index.json", "oci-layout"];

/// Mode of a directory a tool makes (the mount does not keep the one asked for).
const STAGING_DIR_MODE: u16 = 0o700;

fn staged(repo: &RepoKey, name: &str) -> StagedName {
    StagedName {
        repo: repo.clone(),
        at: StagedAt::Repo,
        name: name.to_string(),
    }
}

fn own(repo: &RepoKey, name: &str) -> Option<Node> {
    let repo = repo.clone();
    match name {
        "blobs" => Some(Node::Blobs(BlobsDir(repo))),
        "index.json" => Some(Node::IndexJson(IndexJson(repo))),
        "oci-layout" => Some(Node::OciLayout(OciLayout(repo))),
        _ => None,
    }
}

/// The layout entry `name` of repository `repo`, if it is one.
pub(super) fn child(vfs: &Vfs, repo: &RepoKey, name: &str) -> Option<Node> {
    if let Some(node) = own(repo, name) {
        return Some(node);
    }
    if vfs.layout().dir(repo, name).is_some() {
        return Some(Node::StagingDir(StagingDir {
            repo: repo.clone(),
            name: name.to_string(),
        }));
    }
    let file = staged(repo, name);
    vfs.layout().file(&file).map(|_| Node::Staged(file))
}

/// The layout entries of repository `repo`, in listing order.
pub(super) fn children(vfs: &Vfs, repo: &RepoKey) -> Vec<(String, Node, NodeType)> {
    let mut children = Vec::new();
    for name in LAYOUT_NAMES {
        let kind = if name == "blobs" {
            NodeType::Directory
        } else {
            NodeType::File
        };
        if let Some(node) = own(repo, name) {
            children.push((name.to_string(), node, kind));
        }
    }
    for name in vfs.layout().dirs(repo) {
        let node = Node::StagingDir(StagingDir {
            repo: repo.clone(),
            name: name.clone(),
        });
        children.push((name, node, NodeType::Directory));
    }
    for name in vfs.layout().files_in(repo, &StagedAt::Repo) {
        let node = Node::Staged(staged(repo, &name));
        children.push((name, node, NodeType::File));
    }
    children
}

/// Tools' own directories in `repo` (for the link count).
pub(super) fn subdirs(vfs: &Vfs, repo: &RepoKey) -> usize {
    vfs.layout().dirs(repo).len() + 1
}

/// Whether `name` is a directory of a tool's own rather than a nested repository:
/// a hidden name (umoci's `.umoci-*`), which no repository path component is.
pub(super) fn is_staging_dir_name(name: &str) -> bool {
    name.starts_with('.') && name != "." && name != ".."
}

/// `mkdir` of a tool's own directory in `repo`.
pub(super) fn mkdir(vfs: &Vfs, repo: &RepoKey, name: &str) -> Result<Node> {
    if own(repo, name).is_some() {
        return Err(VfsError::Exists);
    }
    vfs.layout().add_dir(repo, name, STAGING_DIR_MODE)?;
    Ok(Node::StagingDir(StagingDir {
        repo: repo.clone(),
        name: name.to_string(),
    }))
}

/// `open(O_CREAT)` of a new file in `repo` (taken names are the caller's check).
pub(super) fn create(vfs: &Vfs, repo: &RepoKey, name: &str, mode: u32) -> Result<Node> {
    if own(repo, name).is_some() {
        return Err(VfsError::Exists);
    }
    vfs.create_staged(&staged(repo, name), mode)
}

/// `rm` in `repo`: a staged file; `index.json` and `oci-layout` of a repository
/// without tags (so `rm -rf` of a repository works), `Some(Err)` with EBUSY else.
/// `None`: not a layout name.
pub(super) fn unlink(vfs: &Vfs, repo: &RepoKey, name: &str) -> Option<Result<()>> {
    match name {
        "index.json" | "oci-layout" => {
            Some(match vfs.store().tags(&repo.registry, &repo.repository) {
                Ok(tags) if tags.is_empty() => Ok(()),
                Ok(_) => Err(VfsError::Store(crate::store::StoreError::Busy(format!(
                    "{}/{}/{name}: the repository still has tags (rm its tags/ first)",
                    repo.registry, repo.repository
                )))),
                Err(error) => Err(error.into()),
            })
        }
        "blobs" => Some(Err(VfsError::IsDir)),
        _ => {
            let file = staged(repo, name);
            vfs.layout().file(&file).map(|_| vfs.remove_staged(&file))
        }
    }
}

/// `rmdir` in `repo`: a tool's directory (ENOTEMPTY while it holds files), or
/// `blobs/` once nothing is listed in it (a no-op, so `rm -rf` works). `None`: not
/// a layout name.
pub(super) fn rmdir(vfs: &Vfs, repo: &RepoKey, name: &str) -> Option<Result<()>> {
    if name == "blobs" {
        return Some(blobs_empty(vfs, repo));
    }
    vfs.layout()
        .dir(repo, name)
        .map(|_| vfs.layout().remove_dir(repo, name))
}

/// Ok when `blobs/sha256/` of `repo` lists nothing, else ENOTEMPTY.
pub(super) fn blobs_empty(vfs: &Vfs, repo: &RepoKey) -> Result<()> {
    let blobs = vfs.store().layout_blobs(&repo.registry, &repo.repository)?;
    if blobs.is_empty() && vfs.layout().files_in(repo, &StagedAt::Blobs).is_empty() {
        Ok(())
    } else {
        Err(VfsError::NotEmpty)
    }
}

/// `mv NAME ...` of a staged file of `repo`; `None`: not a staged file.
pub(super) fn rename(
    vfs: &Vfs,
    repo: &RepoKey,
    name: &str,
    to: &Node,
    new_name: &str,
    no_replace: bool,
    pid: u32,
) -> Option<Result<(Node, Node)>> {
    let from = staged(repo, name);
    vfs.layout().file(&from)?;
    Some(
        vfs.rename_staged(&from, to, new_name, no_replace, pid)
            .map(|moved| (Node::Staged(from), moved)),
    )
}

/// What a staged file renamed to `name` in `repo` becomes; `taken` says whether
/// a name of the store's own (a nested repository, `tags`, ...) is there.
pub(super) fn staging_target(repo: &RepoKey, name: &str, taken: bool) -> Result<RenameTarget> {
    match name {
        "index.json" => Ok(RenameTarget::IndexJson(repo.clone())),
        "oci-layout" => Ok(RenameTarget::OciLayout(repo.clone())),
        "blobs" => Err(VfsError::IsDir),
        _ if taken => Err(VfsError::IsDir),
        _ => Ok(RenameTarget::Staged(staged(repo, name))),
    }
}
