//! imagefs: container images in one content-addressed, deduplicated store, mounted
//! as a filesystem.
//!
//! The library is the product; the `imagefs` binary and the FUSE layer are thin
//! shells over it. Data flows one way: CLI/FUSE -> [`store`] -> (meta, cas, image,
//! layer, archive).

#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod error;
pub mod failpoint;
pub mod fs;
pub mod image;
pub mod layer;
pub mod reference;
pub mod sample;
pub mod store;

pub use digest::{DiffId, Digest};
pub use error::{Error, Result};
pub use reference::{Reference, Target};
pub use store::Store;
