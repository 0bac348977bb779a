//! OCI image layouts (a directory, or the same inside a tar), including the layout
//! Docker 25+ embeds in `docker save` output.

use std::collections::BTreeSet;
use std::io::Read;

use serde_json::Value;

use super::container::Container;
use super::docker_manifest::read_docker_manifest;
use super::ArchiveError;
use crate::digest::Digest;
use crate::image::{
    parse_index, parse_top, Parsed, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MAX_JSON_SIZE,
};
use crate::image::{ImageSource, SourceImage};
use crate::reference::Reference;

/// An OCI layout.
pub(crate) struct OciLayoutSource {
    container: Container,
    images: Vec<SourceImage>,
}

/// A name that says which repository it belongs to (not just a tag).
fn is_usable_name(name: &str) -> bool {
    matches!(Reference::parse_docker_style(name, "local"), Ok(Some(_)))
}

impl OciLayoutSource {
    /// Reads `oci-layout` and `index.json`. With `docker_names`, images whose index
    /// entry carries no usable name take the `RepoTags` of the `manifest.json`
    /// entries with the same config.
    pub(crate) fn open(container: Container, docker_names: bool) -> Result<Self, ArchiveError> {
        let layout_bytes = container.read_small("oci-layout", 64 * 1024)?;
        let layout: Value =
            serde_json::from_slice(&layout_bytes).map_err(|error| ArchiveError::Invalid {
                location: container.location("oci-layout"),
                problem: format!("malformed JSON: {error}"),
            })?;
        match layout.get("imageLayoutVersion").and_then(Value::as_str) {
            Some(version) if version.starts_with("1.") => {}
            Some(version) => {
                return Err(ArchiveError::Invalid {
                    location: container.location("oci-layout"),
                    problem: format!("unsupported imageLayoutVersion {version:?} (expected 1.x)"),
                })
            }
            None => {
                return Err(ArchiveError::Invalid {
                    location: container.location("oci-layout"),
                    problem: "imageLayoutVersion missing".to_string(),
                })
            }
        }
        let index_bytes = container.read_small("index.json", MAX_JSON_SIZE)?;
        let index = parse_index(&index_bytes, None).map_err(|source| ArchiveError::Image {
            location: container.location("index.json"),
            source,
        })?;
        let mut images = Vec::new();
        for descriptor in index.manifests {
            let ref_name = descriptor.annotations.get(ANNOTATION_REF_NAME).cloned();
            let containerd_name = descriptor
                .annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .cloned();
            let name = match (ref_name, containerd_name) {
                (Some(ref_name), _) if is_usable_name(&ref_name) => Some(ref_name),
                (_, Some(containerd_name)) => Some(containerd_name),
                (ref_name, None) => ref_name,
            };
            images.push(SourceImage { name, descriptor });
        }
        let mut source = OciLayoutSource { container, images };
        if docker_names
            && source
                .images
                .iter()
                .any(|image| !image.name.as_deref().is_some_and(is_usable_name))
        {
            source.names_from_docker_manifest()?;
        }
        Ok(source)
    }

    /// Fills in names from `manifest.json` RepoTags (Docker 25+ archives).
    fn names_from_docker_manifest(&mut self) -> Result<(), ArchiveError> {
        let entries = read_docker_manifest(&self.container)?;
        let mut named = Vec::new();
        for image in &self.images {
            if image.name.as_deref().is_some_and(is_usable_name) {
                named.push(image.clone());
                continue;
            }
            let configs = self.config_digests(image)?;
            let tags: Vec<String> = entries
                .iter()
                .filter(|entry| {
                    entry
                        .config_digest()
                        .is_some_and(|digest| configs.contains(&digest))
                })
                .flat_map(|entry| entry.repo_tags.clone())
                .collect();
            if tags.is_empty() {
                named.push(image.clone());
            }
            for tag in tags {
                named.push(SourceImage {
                    name: Some(tag),
                    descriptor: image.descriptor.clone(),
                });
            }
        }
        self.images = named;
        Ok(())
    }

    /// The config digests of an image: its own, or those of an index's children.
    fn config_digests(&self, image: &SourceImage) -> Result<BTreeSet<Digest>, ArchiveError> {
        let mut configs = BTreeSet::new();
        let member = blob_member(&image.descriptor.digest);
        let bytes = self.container.read_small(&member, MAX_JSON_SIZE)?;
        let parsed = parse_top(&bytes, Some(&image.descriptor.media_type)).map_err(|source| {
            ArchiveError::Image {
                location: self.container.location(&member),
                source,
            }
        })?;
        match parsed {
            Parsed::Manifest(manifest) => {
                configs.insert(manifest.config.digest);
            }
            Parsed::Index(index) => {
                for child in index.manifests {
                    let member = blob_member(&child.digest);
                    // Docker keeps only the platforms it has; absent children are skipped.
                    let Ok(bytes) = self.container.read_small(&member, MAX_JSON_SIZE) else {
                        continue;
                    };
                    if let Ok(Parsed::Manifest(manifest)) =
                        parse_top(&bytes, Some(&child.media_type))
                    {
                        configs.insert(manifest.config.digest);
                    }
                }
            }
        }
        Ok(configs)
    }
}

/// The layout path of a blob.
pub(crate) fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

impl ImageSource for OciLayoutSource {
    type Error = ArchiveError;

    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, ArchiveError> {
        match self.container.open(&blob_member(digest)) {
            Err(ArchiveError::MemberNotFound { location, .. }) => Err(ArchiveError::BlobNotFound {
                location,
                digest: *digest,
            }),
            other => other,
        }
    }

    fn describe(&self) -> String {
        self.container.label()
    }
}
