//! Internals for imagefs's own integration tests and fuzz targets, behind the cargo
//! feature `testing` (`[dev-dependencies] imagefs = { path = ".", features =
//! ["testing"] }`). Not part of the API: anything here may change at any time, and
//! writing blobs or rows through it bypasses the store's leases and counts.
//!
//! Owns nothing: it only re-exports. Must not be used by the library or the binary.

/// Deterministic sample images: the description language, builders and writers.
pub mod sample {
    pub use crate::sample::*;
}

/// Layer tar streams: indexing, unpacking, merging, whiteouts.
pub mod layer {
    pub use crate::layer::*;
}

/// Image sources and export targets on disk.
pub mod archive {
    pub use crate::archive::*;
}

/// The metadata database: rows written directly, outside any import.
pub mod meta {
    pub use crate::store::meta::*;
}

/// Blob files: written directly, outside any import's leases.
pub mod cas {
    pub use crate::store::cas::*;
}

/// Crash-test failpoints (`IMAGEFS_FAILPOINT`).
pub mod failpoint {
    pub use crate::failpoint::*;
}

/// The index artifact (README "Index artifacts"): what a lazy pull gives
/// [`StoreInternals::fetch_index_artifact`].
pub mod index_artifact {
    pub use crate::store::index_artifact::ArtifactLayer;
}

/// Access to a store's blob files, for tests that write or check them directly.
pub trait StoreInternals {
    /// The store's blob files.
    fn cas(&self) -> &crate::store::Cas;

    /// `Store::fetch_index_artifact`, the lazy pull's way to a layer's indexes.
    fn fetch_index_artifact(
        &self,
        client: &crate::remote::Client,
        repository: &str,
        manifest: &crate::Digest,
        layers: &[index_artifact::ArtifactLayer],
    ) -> Result<Vec<crate::Digest>, crate::store::StoreError>;

    /// Where the layer's entry index is kept (`cache/layers/<hex>/index/<hex>.idx`).
    fn layer_index_path(&self, layer: &crate::Digest) -> std::path::PathBuf;

    /// Where the layer's seekable gzip index is kept (`.../index/<hex>.zran`).
    fn gzip_index_path(&self, layer: &crate::Digest) -> std::path::PathBuf;
}

impl StoreInternals for crate::store::Store {
    fn cas(&self) -> &crate::store::Cas {
        crate::store::Store::cas(self)
    }

    fn fetch_index_artifact(
        &self,
        client: &crate::remote::Client,
        repository: &str,
        manifest: &crate::Digest,
        layers: &[index_artifact::ArtifactLayer],
    ) -> Result<Vec<crate::Digest>, crate::store::StoreError> {
        crate::store::Store::fetch_index_artifact(self, client, repository, manifest, layers)
    }

    fn layer_index_path(&self, layer: &crate::Digest) -> std::path::PathBuf {
        self.layer_cache_dir(layer)
            .join(crate::layer::INDEX_DIR)
            .join(format!("{}.idx", layer.hex()))
    }

    fn gzip_index_path(&self, layer: &crate::Digest) -> std::path::PathBuf {
        self.layer_cache_dir(layer)
            .join(crate::layer::INDEX_DIR)
            .join(format!("{}.zran", layer.hex()))
    }
}
