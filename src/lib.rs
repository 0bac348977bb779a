//! imagefs: container images in one content-addressed, deduplicated store, mounted
//! as a filesystem.
//!
//! The library is the product; the `imagefs` binary and the FUSE layer are thin
//! shells over it. Data flows one way: CLI/FUSE -> [`store`] -> (meta, cas, image,
//! layer, archive).
//!
//! ```
//! use imagefs::store::{ImportOptions, Store};
//! use imagefs::Reference;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // A sample OCI layout (imagefs makes its own demo images).
//! let layout = dir.path().join("layout");
//! imagefs::sample::write_demo_layout(&layout)?;
//!
//! let store = Store::open(&dir.path().join("store"))?;
//! let report = store.import(layout.to_str().unwrap(), &ImportOptions::default())?;
//! assert!(report.blobs_written > 0);
//!
//! // Promote between registries: no data is copied.
//! let app = Reference::parse("docker.io/library/sample-app:1.1")?;
//! let prod = Reference::parse("prod/sample-app:1.1")?;
//! let digest = store.tag(&app, &prod, false)?;
//! assert_eq!(store.resolve(&prod)?, digest);
//!
//! // Untag the original: the blobs stay, the promoted tag still uses them.
//! store.untag(&app)?;
//! assert!(store.fsck(false)?.is_healthy());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod error;
pub mod failpoint;
pub mod fs;
pub mod image;
pub mod layer;
pub mod reference;
mod remote;
pub mod sample;
pub mod store;
mod sys;

pub use digest::{DiffId, Digest};
pub use error::{Error, Result};
pub use reference::{Reference, Target};
pub use store::Store;
