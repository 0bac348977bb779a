//! Blobs, layers and descriptors: compressing a layer tar, naming media types, and
//! the JSON shapes of manifests and indexes.
//!
//! Owns: blob bytes and their digests. Must not touch: images as a whole (that is
//! [`super::image`] and [`super::index`]) or files on disk.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{invalid, media_type, Result, GZIP_LEVEL, ZSTD_LEVEL};
use crate::digest::{DiffId, Digest};

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// tar+gzip at [`GZIP_LEVEL`].
    Gzip,
    /// tar+zstd at [`ZSTD_LEVEL`].
    Zstd,
}

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ManifestFormat {
    /// OCI image manifest / OCI index.
    #[default]
    Oci,
    /// Docker schema 2 manifest / Docker manifest list.
    Docker,
}

/// A blob: bytes with a media type and the digest it is stored under.
///
/// `digest` equals the sha256 of `data` except in images made by
/// [`BuiltImage::corrupt`](super::BuiltImage::corrupt) with
/// [`Corruption::WrongDigest`](super::Corruption::WrongDigest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Media type used in descriptors pointing at this blob.
    pub media_type: String,
    /// The digest descriptors name and the file name in `blobs/sha256/`.
    pub digest: Digest,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob whose digest is the sha256 of `data`.
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.to_string(),
            digest: Digest::of(&data),
            data,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// A descriptor for this blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest,
            size: self.size(),
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A platform as written in index descriptors and configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, `unknown`).
    pub architecture: String,
    /// Operating system (`linux`, `unknown`).
    pub os: String,
    /// Variant (`v8`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(invalid(format!(
                "platform {text:?}: expected os/arch[/variant]"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// OCI 1.1 artifact type (index entries of artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform (index entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A built layer: the blob as stored and the uncompressed tar it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The (possibly compressed) blob; its media type is set by the image builder.
    pub blob: Blob,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: DiffId,
    /// The uncompressed tar (what `docker save` writes as `layer.tar`).
    pub tar: Vec<u8>,
    /// How `blob` was compressed from `tar`.
    pub compression: Compression,
    /// Annotations on the layer's descriptor.
    pub annotations: BTreeMap<String, String>,
}

impl BuiltLayer {
    /// Compresses a tar stream into a layer.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Result<Self> {
        let data = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip => {
                // GzBuilder writes mtime 0 and no file name, so the bytes are stable.
                let mut encoder = flate2::GzBuilder::new()
                    .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
                encoder.write_all(&tar)?;
                encoder.finish()?
            }
            Compression::Zstd => zstd::stream::encode_all(&tar[..], ZSTD_LEVEL)?,
        };
        Ok(BuiltLayer {
            blob: Blob::new(layer_media_type(ManifestFormat::Oci, compression), data),
            diff_id: DiffId(Digest::of(&tar)),
            tar,
            compression,
            annotations: BTreeMap::new(),
        })
    }

    pub(super) fn descriptor(&self) -> Descriptor {
        Descriptor {
            annotations: self.annotations.clone(),
            ..self.blob.descriptor()
        }
    }
}

/// The layer media type for a manifest format and compression.
pub fn layer_media_type(format: ManifestFormat, compression: Compression) -> &'static str {
    use media_type::*;
    match (format, compression) {
        (ManifestFormat::Oci, Compression::None) => OCI_LAYER_TAR,
        (ManifestFormat::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
        (ManifestFormat::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
        (ManifestFormat::Docker, Compression::None) => DOCKER_LAYER_TAR,
        (ManifestFormat::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
        (ManifestFormat::Docker, Compression::Zstd) => DOCKER_LAYER_ZSTD,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestJson<'a> {
    pub(super) schema_version: u32,
    pub(super) media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<&'a str>,
    pub(super) config: &'a Descriptor,
    pub(super) layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexJson<'a> {
    pub(super) schema_version: u32,
    pub(super) media_type: &'a str,
    pub(super) manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: &'a BTreeMap<String, String>,
}
