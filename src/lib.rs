//! imagefs: container images in one content-addressed, deduplicated store, mounted
//! as a filesystem.
//!
//! The library is the product; the `imagefs` binary and the FUSE mount are thin
//! shells over it. What a user needs is re-exported here:
//!
//! - [`Store`]: opens a store and does everything with it: [`Store::import`] (or
//!   [`Store::import_from`] any [`ImageSource`]), [`Store::export`], tags
//!   ([`Store::tag`], [`Store::untag`], [`Store::move_tag`]), listings
//!   ([`Store::repositories`], [`Store::tags`]), [`Store::df`], [`Store::fsck`],
//!   [`Store::gc`]. Every method takes `&self`; share it between threads.
//! - The vocabulary: [`Reference`] and [`Target`], [`Digest`] and [`DiffId`] (and the
//!   [`digest`], [`reference`](mod@reference) and [`image`] modules: parsing only, no I/O).
//! - The mount: [`spawn_mount`] or [`mount_foreground`] with [`MountOptions`],
//!   giving a [`MountHandle`]; [`unmount`].
//! - Progress: implement [`Progress`] and put it in [`ImportOptions::progress`].
//! - Errors: [`Error`] gathers every module's error; [`Error::kind`] (also
//!   [`StoreError::kind`]) tells a full disk, a permission problem, a missing
//!   thing, a busy one and bad input apart.
//!
//! Data flows one way: CLI/FUSE -> [`Store`] -> (metadata, blob files, archives,
//! layers) -> image parsing -> digests and references.
//!
//! ```
//! use imagefs::{ImportOptions, Reference, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // A sample OCI layout (imagefs makes its own demo images).
//! let layout = dir.path().join("layout");
//! imagefs::write_demo_layout(&layout)?;
//!
//! let store = Store::open(&dir.path().join("store"))?;
//! let report = store.import(&layout, None, &ImportOptions::default())?;
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
//!
//! Tests and fuzz targets reach a few internals (sample image builders, metadata
//! rows, layer indexing) through `imagefs::testing`, behind the cargo feature
//! `testing`; it is not part of the API.

#![warn(missing_docs)]

// Some items of these modules serve only the tests and fuzz targets (through
// `testing`): without that feature they are unused, not dead.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod archive;
pub mod digest;
pub(crate) mod error;
pub(crate) mod failpoint;
pub(crate) mod fs;
pub mod image;
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod layer;
pub mod reference;
pub(crate) mod remote;
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod sample;
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod store;
mod sys;
#[cfg(feature = "testing")]
pub mod testing;

pub use archive::{
    open_source, open_source_with_limits, ArchiveError, DecompressLimits, LimitReason,
};
pub use digest::{DiffId, Digest, DigestError};
pub use error::{Error, ErrorKind, Result};
pub use fs::{
    fuse_mounts_at, is_mounted, mount_foreground, mounts, spawn_mount, unmount, FsError,
    MountHandle, MountInfo, MountOptions, PassthroughState, PullThroughOptions, DEFAULT_THREADS,
    FAILURE_PERIOD, MISS_PERIOD,
};
pub use image::{Descriptor, ImageError, ImageSource, SourceImage};
pub use layer::LayerError;
pub use reference::{validate_registry, Reference, ReferenceError, Target};
pub use remote::{
    Client as RegistryClient, Credentials, ErrorKind as RemoteErrorKind, Options as RemoteOptions,
    RemoteError,
};
pub use sample::{write_demo_layout, DemoImage, SampleError};
pub use store::{
    default_root, BlobInfo, BlobKind, BlobState, CasError, DfEntry, DfReport, Edge, EdgeKind,
    EntryWarning, ExportFormat, FsckReport, GcReport, ImageWarnings, ImportOptions, ImportReport,
    LayerWarnings, LazyProgress, ListEntry, MetaError, NoProgress, PlatformRow, Progress,
    RegistryInfo, RepoRow, Store, StoreError, TagRow, DEFAULT_CACHE_SIZE, MAX_JSON_BLOB,
    WARNINGS_KEPT,
};
pub use store::{
    digest_tag, parse_platform, platform_text, AttachedIndex, Origin, PullOptions, PullReport,
    PushOptions, PushReport, DEFAULT_IMPORT_JOBS, DEFAULT_PULL_JOBS,
};
pub use store::{
    short_digest, Chain, FreedBlob, FreedBlobs, LeaseHolder, Step, TagBytes, Via, WhyReport,
};
pub use store::{ConfigView, LayerView, ManifestKind, ManifestView, PlatformView};
