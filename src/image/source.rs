//! The one trait every image source implements: an OCI layout, an OCI archive, a
//! docker-archive, a registry. The import pipeline (`store::import`) reads any of
//! them the same way and verifies everything it is handed.
//!
//! Owns: the shape of a source (its images, its blobs). Must not touch: files,
//! the network or the store; implementations live in `archive` and `remote`.

use std::io::Read;

use super::Descriptor;
use crate::digest::Digest;

/// A place images are imported from.
///
/// Sources hand out bytes unverified: the caller checks every digest and size.
pub trait ImageSource: Send + Sync {
    /// The source's own error type (an archive's, a registry client's).
    type Error: std::error::Error + Send + Sync + 'static;
    /// Every image the source offers, in the source's order.
    fn images(&self) -> &[SourceImage];
    /// Opens a blob (a config or a layer) by digest for streaming.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, Self::Error>;
    /// Opens a manifest or an index by digest. Files keep manifests beside the other
    /// blobs, so this is `open_blob` unless the source stores them apart (a registry
    /// serves them from `/manifests/`).
    fn open_manifest(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, Self::Error> {
        self.open_blob(digest)
    }
    /// A short label used in error messages, e.g. the path or the registry.
    fn describe(&self) -> String;
}

/// One image a source offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    /// The name the source carries, if any: in an OCI layout the
    /// `org.opencontainers.image.ref.name` annotation, or `io.containerd.image.name`
    /// when ref.name is missing or only a tag; in a docker-archive a `RepoTags` entry.
    /// May be a bare tag (skopeo's `oci:PATH:TAG`), which names no repository.
    pub name: Option<String>,
    /// The descriptor of the top manifest or index (media type, digest, size), with
    /// the annotations the source put on it.
    pub descriptor: Descriptor,
}
