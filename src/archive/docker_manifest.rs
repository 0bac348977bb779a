//! The `manifest.json` of a `docker save` archive: read by the classic reader
//! ([`super::docker`]) and by the Docker 25+ reader ([`super::oci`]), written by
//! [`super::write`]. Below all three, so that none borrows from another.
//!
//! Owns: the entry type and parsing it. Must not touch: blobs, or the layout around it.

use serde::{Deserialize, Serialize};

use super::container::Container;
use super::ArchiveError;
use crate::digest::Digest;
use crate::image::MAX_JSON_SIZE;

/// One entry of a docker-archive's `manifest.json` (fields in the order written).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct DockerEntry {
    /// Path of the config file in the archive.
    #[serde(rename = "Config")]
    pub(crate) config: String,
    /// Names, e.g. `alpine:3.19`.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub(crate) repo_tags: Vec<String>,
    /// Paths of the layer files, base first.
    #[serde(rename = "Layers", default, deserialize_with = "null_as_empty")]
    pub(crate) layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads and parses `manifest.json`.
pub(crate) fn read_docker_manifest(
    container: &Container,
) -> Result<Vec<DockerEntry>, ArchiveError> {
    let bytes = container.read_small("manifest.json", MAX_JSON_SIZE)?;
    serde_json::from_slice(&bytes).map_err(|error| ArchiveError::Invalid {
        location: container.location("manifest.json"),
        problem: format!("malformed docker-archive manifest: {error}"),
    })
}

impl DockerEntry {
    /// The config digest this entry names by its path (`blobs/sha256/<hex>` or
    /// `<hex>.json`).
    pub(crate) fn config_digest(&self) -> Option<Digest> {
        let file = self.config.rsplit('/').next()?;
        Digest::from_hex(file.strip_suffix(".json").unwrap_or(file)).ok()
    }
}
