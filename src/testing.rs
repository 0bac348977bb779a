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

/// Access to a store's blob files, for tests that write or check them directly.
pub trait StoreInternals {
    /// The store's blob files.
    fn cas(&self) -> &crate::store::Cas;
}

impl StoreInternals for crate::store::Store {
    fn cas(&self) -> &crate::store::Cas {
        crate::store::Store::cas(self)
    }
}
