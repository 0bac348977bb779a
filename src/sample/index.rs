//! Indexes: [`IndexBuilder`] (multi-platform, with buildx-style attestations) and
//! [`Built`], an image or an index, which is what layouts and archives hold.
//!
//! Owns: index JSON. Must not touch: single images' contents (that is
//! [`super::image`]) or files on disk.

use std::collections::BTreeMap;

use serde_json::json;

use super::blob::{Blob, BuiltLayer, Descriptor, IndexJson, Platform};
use super::{media_type, BuiltImage, Compression, ManifestFormat, Result};
use crate::digest::{DiffId, Digest};

/// A built index (OCI index or Docker manifest list) with its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltIndex {
    /// OCI index or Docker manifest list.
    pub format: ManifestFormat,
    /// The index blob.
    pub index: Blob,
    /// The children in index order, each with the descriptor the index lists.
    pub children: Vec<(Descriptor, BuiltImage)>,
}

impl BuiltIndex {
    /// The index digest.
    pub fn digest(&self) -> Digest {
        self.index.digest
    }

    /// Every blob: the index, then each child's blobs (duplicates possible).
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.index];
        for (_, child) in &self.children {
            blobs.extend(child.blobs());
        }
        blobs
    }

    /// The child listed for a platform (`linux/arm64/v8`), if any.
    pub fn child(&self, platform: &str) -> Option<&BuiltImage> {
        self.children
            .iter()
            .find(|(descriptor, _)| {
                descriptor
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.to_string() == platform)
            })
            .map(|(_, image)| image)
    }
}

/// Builds a multi-platform index.
pub struct IndexBuilder {
    format: ManifestFormat,
    manifests: Vec<(Option<Platform>, BuiltImage)>,
    attestations: bool,
    annotations: BTreeMap<String, String>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    /// An empty OCI index.
    pub fn new() -> Self {
        IndexBuilder {
            format: ManifestFormat::Oci,
            manifests: Vec::new(),
            attestations: false,
            annotations: BTreeMap::new(),
        }
    }

    /// OCI index (default) or Docker manifest list.
    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    /// Adds a child; its descriptor carries the image's platform.
    pub fn manifest(mut self, image: BuiltImage) -> Self {
        let platform = image.platform.clone();
        self.manifests.push((platform, image));
        self
    }

    /// Adds a child with an explicit platform (or none).
    pub fn manifest_with_platform(mut self, image: BuiltImage, platform: Option<Platform>) -> Self {
        self.manifests.push((platform, image));
        self
    }

    /// Adds a buildx-style attestation manifest (`unknown/unknown`) for every
    /// child that has a platform, after all children.
    pub fn attestations(mut self, enabled: bool) -> Self {
        self.attestations = enabled;
        self
    }

    /// Adds an index annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Builds the index.
    pub fn build(self) -> Result<BuiltIndex> {
        let mut children = Vec::new();
        let mut attestations = Vec::new();
        for (platform, image) in self.manifests {
            if self.attestations && platform.is_some() {
                attestations.push(attestation_for(&image)?);
            }
            let descriptor = Descriptor {
                platform,
                ..image.descriptor()
            };
            children.push((descriptor, image));
        }
        children.extend(attestations);
        let descriptors: Vec<Descriptor> = children.iter().map(|(d, _)| d.clone()).collect();
        let media_type = match self.format {
            ManifestFormat::Oci => media_type::OCI_INDEX,
            ManifestFormat::Docker => media_type::DOCKER_LIST,
        };
        let json = IndexJson {
            schema_version: 2,
            media_type,
            manifests: &descriptors,
            annotations: &self.annotations,
        };
        Ok(BuiltIndex {
            format: self.format,
            index: Blob::new(media_type, serde_json::to_vec(&json)?),
            children,
        })
    }
}

/// A buildx-style attestation manifest for `image`, with its index descriptor.
fn attestation_for(image: &BuiltImage) -> Result<(Descriptor, BuiltImage)> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{
            "name": "pkg:docker/imagefs-sample",
            "digest": { "sha256": image.digest().hex() },
        }],
        "predicate": {
            "spdxVersion": "SPDX-2.3",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": "sbom",
            "packages": [],
        },
    });
    let statement = Blob::new(media_type::IN_TOTO, serde_json::to_vec(&statement)?);
    let mut layer_annotations = BTreeMap::new();
    layer_annotations.insert(
        "in-toto.io/predicate-type".to_string(),
        "https://spdx.dev/Document".to_string(),
    );
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [statement.digest.to_string()] },
    });
    let config = Blob::new(media_type::OCI_CONFIG, serde_json::to_vec(&config)?);
    let mut attestation = BuiltImage {
        format: ManifestFormat::Oci,
        platform: None,
        manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
        config,
        layers: vec![BuiltLayer {
            diff_id: DiffId(statement.digest),
            tar: Vec::new(),
            blob: statement,
            compression: Compression::None,
            annotations: layer_annotations,
        }],
        artifact_type: None,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let (config_desc, layer_descs) = attestation.descriptors();
    attestation.manifest = attestation.encode_manifest(&config_desc, &layer_descs)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "vnd.docker.reference.digest".to_string(),
        image.digest().to_string(),
    );
    annotations.insert(
        "vnd.docker.reference.type".to_string(),
        "attestation-manifest".to_string(),
    );
    let descriptor = Descriptor {
        platform: Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            variant: None,
        }),
        annotations,
        ..attestation.descriptor()
    };
    Ok((descriptor, attestation))
}

/// An image or an index: what a layout or archive entry points at.
#[derive(Clone, Debug, PartialEq, Eq)]
// Test fixtures, built a handful at a time: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Built {
    /// An image or artifact manifest.
    Image(BuiltImage),
    /// An index.
    Index(BuiltIndex),
}

impl Built {
    /// The digest of the top blob (manifest or index).
    pub fn digest(&self) -> Digest {
        match self {
            Built::Image(image) => image.digest(),
            Built::Index(index) => index.digest(),
        }
    }

    /// The descriptor of the top blob.
    pub fn descriptor(&self) -> Descriptor {
        match self {
            Built::Image(image) => image.descriptor(),
            Built::Index(index) => index.index.descriptor(),
        }
    }

    /// Every blob reachable from the top (duplicates possible).
    pub fn blobs(&self) -> Vec<&Blob> {
        match self {
            Built::Image(image) => image.blobs(),
            Built::Index(index) => index.blobs(),
        }
    }

    /// The image, if this is one.
    pub fn as_image(&self) -> Option<&BuiltImage> {
        match self {
            Built::Image(image) => Some(image),
            Built::Index(_) => None,
        }
    }
}

impl From<BuiltImage> for Built {
    fn from(image: BuiltImage) -> Self {
        Built::Image(image)
    }
}

impl From<BuiltIndex> for Built {
    fn from(index: BuiltIndex) -> Self {
        Built::Index(index)
    }
}
