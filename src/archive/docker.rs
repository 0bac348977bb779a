//! Classic docker-archives (`docker save` before Docker 25, skopeo's
//! `docker-archive:`): a `manifest.json` listing each image's config file and layer
//! files. These carry no manifest blob, so one is synthesized per image:
//!
//! ```text
//! {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!  "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":..,"size":..},
//!  "layers":[{"mediaType":<by magic: ...tar, ...tar+gzip, ...tar+zstd>,"digest":..,"size":..},..]}
//! ```
//!
//! compact JSON with the keys in exactly that order and nothing else, so importing the
//! same archive twice yields the same manifest digest. Layer digests are the sha256 of
//! the layer files as stored, computed once when the archive is opened.

use std::collections::HashMap;
use std::io::Read;

use serde::Serialize;

use super::container::Container;
use super::docker_manifest::read_docker_manifest;
use super::ArchiveError;
use crate::digest::{Digest, Hasher};
use crate::image::media_types::{OCI_CONFIG, OCI_MANIFEST};
use crate::image::{Descriptor, LayerCompression, MAX_JSON_SIZE};
use crate::image::{ImageSource, SourceImage};

/// The manifest we synthesize; field order is the serialization order.
#[derive(Serialize)]
struct SynthesizedManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

/// A classic docker-archive.
pub(crate) struct DockerArchiveSource {
    container: Container,
    images: Vec<SourceImage>,
    /// Synthesized manifests, served from memory.
    manifests: HashMap<Digest, Vec<u8>>,
    /// Config and layer blobs: digest -> member path.
    members: HashMap<Digest, String>,
}

impl DockerArchiveSource {
    /// Reads `manifest.json`, hashes every config and layer file once and
    /// synthesizes a manifest per image.
    pub(crate) fn open(container: Container) -> Result<Self, ArchiveError> {
        let entries = read_docker_manifest(&container)?;
        let mut source = DockerArchiveSource {
            container,
            images: Vec::new(),
            manifests: HashMap::new(),
            members: HashMap::new(),
        };
        let mut hashed: HashMap<String, Descriptor> = HashMap::new();
        for entry in entries {
            let config_bytes = source.container.read_small(&entry.config, MAX_JSON_SIZE)?;
            let config = Descriptor::new(
                OCI_CONFIG,
                Digest::of(&config_bytes),
                config_bytes.len() as u64,
            );
            source.members.insert(config.digest, entry.config.clone());
            let mut layers = Vec::with_capacity(entry.layers.len());
            for layer_path in &entry.layers {
                let layer = match hashed.get(layer_path) {
                    Some(layer) => layer.clone(),
                    None => {
                        let layer = source.hash_layer(layer_path)?;
                        hashed.insert(layer_path.clone(), layer.clone());
                        layer
                    }
                };
                source.members.insert(layer.digest, layer_path.clone());
                layers.push(layer);
            }
            let manifest = serde_json::to_vec(&SynthesizedManifest {
                schema_version: 2,
                media_type: OCI_MANIFEST,
                config: &config,
                layers: &layers,
            })
            .expect("serializing plain structs of strings and numbers cannot fail");
            let descriptor =
                Descriptor::new(OCI_MANIFEST, Digest::of(&manifest), manifest.len() as u64);
            source.manifests.insert(descriptor.digest, manifest);
            if entry.repo_tags.is_empty() {
                source.images.push(SourceImage {
                    name: None,
                    descriptor: descriptor.clone(),
                });
            }
            for tag in entry.repo_tags {
                source.images.push(SourceImage {
                    name: Some(tag),
                    descriptor: descriptor.clone(),
                });
            }
        }
        Ok(source)
    }

    /// Digest, size and media type (by magic number) of a layer file.
    fn hash_layer(&self, member: &str) -> Result<Descriptor, ArchiveError> {
        let mut reader = self.container.open(member)?;
        let mut hasher = Hasher::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut compression = None;
        loop {
            let read = reader
                .read(&mut buffer)
                .map_err(|source| ArchiveError::io(self.container.location(member), source))?;
            if read == 0 {
                break;
            }
            if compression.is_none() {
                compression = Some(LayerCompression::sniff(&buffer[..read]));
            }
            hasher.update(&buffer[..read]);
        }
        let (digest, size) = hasher.finish();
        let media_type = compression
            .unwrap_or(LayerCompression::None)
            .oci_media_type();
        Ok(Descriptor::new(media_type, digest, size))
    }
}

impl ImageSource for DockerArchiveSource {
    type Error = ArchiveError;

    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, ArchiveError> {
        if let Some(manifest) = self.manifests.get(digest) {
            return Ok(Box::new(manifest.as_slice()));
        }
        match self.members.get(digest) {
            Some(member) => self.container.open(member),
            None => Err(ArchiveError::BlobNotFound {
                location: self.container.label(),
                digest: *digest,
            }),
        }
    }

    fn describe(&self) -> String {
        self.container.label()
    }
}
