//! Link resolution: what a new tag link's target names, and paths of nodes.
//!
//! Owns: turning the target text of `ln -s TARGET tags/<t>` into a manifest digest
//! (a digest, a path ending in `manifests/sha256:<hex>`, or any path of this mount,
//! absolute or relative, through the mount's own links), lexical normalization,
//! and a node's path in the mount. Must not change the store.

use std::path::{Component, Path};

use crate::digest::Digest;

use super::errno::VfsError;
use super::nodes::{Node, Result};
use super::vfs::Vfs;

/// Longest chain of our own symlinks followed when resolving a link target.
const MAX_LINK_HOPS: usize = 40;

/// The node's path inside the mount, one component per element. Computed only for
/// the mount's own links and directories, never for nodes inside an image view.
pub(crate) fn path_of(node: &Node) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = node.clone();
    while !matches!(at, Node::Root(_)) {
        let kind = at.kind();
        names.push(kind.name());
        at = kind.parent();
    }
    names.reverse();
    names
}

/// Resolves `.` and `..` lexically, starting from `base`. `None` when `..` climbs
/// above the start of `base`.
fn normalize<'a>(base: &[String], parts: impl IntoIterator<Item = &'a str>) -> Option<Vec<String>> {
    let mut out: Vec<String> = base.to_vec();
    for part in parts {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            other => out.push(other.to_string()),
        }
    }
    Some(out)
}

impl Vfs {
    /// The manifest a new tag link names. `link_dir` is the new link's directory as
    /// mount path components. Accepted: `sha256:<hex>`; a path (absolute inside the
    /// mount, or relative to `link_dir`) ending in `manifests/sha256:<hex>`; a path to
    /// any tag, manifest or platform entry of this mount.
    pub(super) fn link_target_digest(&self, link_dir: &[String], target: &Path) -> Result<Digest> {
        let text = target
            .to_str()
            .ok_or_else(|| VfsError::Invalid("link target is not UTF-8".into()))?;
        if let Ok(digest) = Digest::parse(text) {
            return Ok(digest);
        }
        let components = self.mount_components(link_dir, target)?;
        if let [.., dir, last] = components.as_slice() {
            if dir == "manifests" {
                if let Ok(digest) = Digest::parse(last) {
                    return Ok(digest);
                }
            }
        }
        match self.walk(components)? {
            Node::Manifest(manifest) => Ok(manifest.0.digest),
            _ => Err(VfsError::Invalid(format!(
                "{text}: names no tag or manifest of this mount"
            ))),
        }
    }

    /// A link target as path components from the mount root.
    fn mount_components(&self, link_dir: &[String], target: &Path) -> Result<Vec<String>> {
        let outside = || VfsError::Invalid(format!("{}: not inside this mount", target.display()));
        let parts: Vec<&str> = target
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => part.to_str(),
                Component::ParentDir => Some(".."),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
            })
            .collect();
        if target.is_absolute() {
            let absolute = normalize(&[], parts).ok_or_else(outside)?;
            let mount: Vec<String> = self
                .mountpoint
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => part.to_str().map(str::to_string),
                    _ => None,
                })
                .collect();
            absolute
                .strip_prefix(mount.as_slice())
                .map(<[String]>::to_vec)
                .ok_or_else(outside)
        } else {
            normalize(link_dir, parts).ok_or_else(outside)
        }
    }

    /// Resolves mount path components to a node, following this mount's own
    /// symlinks (tags, platforms) wherever they occur.
    pub(super) fn walk(&self, mut components: Vec<String>) -> Result<Node> {
        let mut hops = 0;
        'restart: loop {
            let mut node = Node::Root(super::nodes::Root);
            for (index, name) in components.iter().enumerate() {
                node = node.kind().child(self, name.as_bytes())?;
                let Some(link) = node.kind().own_link(self)? else {
                    continue;
                };
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(VfsError::Invalid("too many levels of links".into()));
                }
                let rest = components[index + 1..].iter().map(String::as_str);
                let dir = path_of(&node.kind().parent());
                let resolved = normalize(&dir, link.split('/'))
                    .ok_or_else(|| VfsError::Invalid("link leaves the mount".into()))?;
                components = normalize(&resolved, rest)
                    .ok_or_else(|| VfsError::Invalid("link leaves the mount".into()))?;
                continue 'restart;
            }
            return Ok(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::nodes::{LayerBlob, ManifestAt, RepoKey};

    #[test]
    fn lexical_normalization() {
        let base: Vec<String> = ["dev", "app", "tags"].map(String::from).to_vec();
        assert_eq!(
            normalize(&base, "../manifests/sha256:x".split('/')).unwrap(),
            ["dev", "app", "manifests", "sha256:x"]
        );
        assert_eq!(
            normalize(&base, "../../../prod/app/tags/1".split('/')).unwrap(),
            ["prod", "app", "tags", "1"]
        );
        assert!(normalize(&base, "../../../../x".split('/')).is_none());
        assert_eq!(normalize(&base, "././/a".split('/')).unwrap().len(), 4);
    }

    #[test]
    fn parents_and_paths_agree() {
        let repo = RepoKey::new("docker.io", "library/alpine");
        let digest = Digest::of(&[1]);
        let node = Node::LayerBlob(LayerBlob(ManifestAt { repo, digest }, 2));
        assert_eq!(
            path_of(&node),
            [
                "docker.io".to_string(),
                "library".into(),
                "alpine".into(),
                "manifests".into(),
                digest.to_string(),
                "layers".into(),
                "002".into(),
                "blob".into()
            ]
        );
        let mut up = node;
        let mut steps = 0;
        while !matches!(up, Node::Root(_)) {
            up = up.kind().parent();
            steps += 1;
        }
        assert_eq!(steps, 8);
    }
}
