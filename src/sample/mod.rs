//! Deterministic sample images, built in code: layers from a one-line-per-entry
//! description, configs, OCI and Docker schema 2 manifests, indexes, OCI artifacts,
//! and the writers that put them on disk as an OCI layout, an OCI archive or a
//! `docker save` archive (classic and Docker 25+ forms).
//!
//! Used by `imagefs demo` and by the tests. Everything is deterministic: the same
//! description gives the same bytes on every run (fixed mtimes, entries in the
//! order written, fixed compression levels), so images built separately share
//! layers exactly as real images built from one base do.
//!
//! It depends on [`crate::digest`], and on `crate::archive` for the one
//! docker-archive writer (the one `imagefs export` uses). It must not touch the
//! store or the layer indexer, and builds every manifest, config and index itself,
//! so that tests built on it check the image parser instead of agreeing with it.
//!
//! ```text
//! spec.rs        the description language -> LayerSpec      (content.rs: @random, @text)
//! tar_writer.rs  LayerSpec -> tar bytes (ustar, GNU, PAX headers)
//! blob.rs        tar -> compressed layer blob; descriptors, media types
//! image.rs       ImageBuilder, ArtifactBuilder, corruptions -> BuiltImage
//! index.rs       IndexBuilder -> BuiltIndex; Built = image or index
//! write.rs       Built -> OCI layout, OCI archive, docker-archive (via archive)
//! demo.rs        the demo images; distro.txt and app-*.txt are their layers
//! ```
//!
//! # Layer descriptions
//!
//! One entry per line (or several separated by `;`); `#` or `//` starts a comment.
//! Paths are absolute-looking (`/etc/passwd`) and are written to the tar without
//! the leading `/`; a path or value with spaces or odd bytes is written in double
//! quotes, with the escapes `\n \t \r \0 \\ \" \xNN`.
//!
//! ```text
//! dir      PATH MODE                      directory (written as `path/`)
//! file     PATH MODE CONTENT              regular file
//! symlink  PATH TARGET                    target stored as written
//! hardlink PATH TARGET                    TARGET is a path in the archive
//! fifo     PATH MODE
//! chardev  PATH MODE MAJOR MINOR
//! blockdev PATH MODE MAJOR MINOR
//! whiteout PATH                           writes DIR/.wh.NAME (deletes PATH)
//! opaque   PATH                           writes PATH/.wh..wh..opq
//! xattr    PATH NAME VALUE                PAX SCHILY.xattr.NAME on the entry PATH
//! ```
//!
//! CONTENT is a quoted string, `@empty`, `@zeros:N`, `@random:N[:SEED]`
//! (incompressible pseudo-random bytes; the seed defaults to the path) or
//! `@text:N[:SEED]` (compressible words). MODE is octal and may carry the setuid,
//! setgid and sticky bits (`4755`, `1777`). Any entry takes trailing options:
//! `uid=N gid=N mtime=N` (defaults 0, 0, [`SAMPLE_MTIME`]), `names=ustar|gnu|pax`
//! (how names longer than the ustar fields are written: ustar prefix split, else
//! PAX — Go's and Docker's way — is the default; `gnu` uses `././@LongLink`
//! entries; `pax` always writes PAX `path`/`linkpath` records) and `raw` (write
//! PATH and hard link TARGET byte for byte, without normalisation, for hostile
//! archives: `file ../../escape 0644 "x" raw`).
//!
//! ```
//! use imagefs::testing::sample::{Compression, ImageBuilder, LayerSpec};
//! let base = LayerSpec::parse(r#"
//!     dir /etc 0755
//!     file /etc/os-release 0644 "NAME=Sample\nID=sample\n"
//!     file /bin/busybox 0755 @random:20000 ; symlink /bin/sh busybox
//! "#).expect("valid description");
//! let image = ImageBuilder::new().layer(&base, Compression::Gzip).build().expect("builds");
//! assert_eq!(image.layers.len(), 1);
//! ```

mod blob;
mod content;
mod demo;
mod image;
mod index;
mod spec;
mod tar_writer;
mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tools;

use std::io;

pub use blob::{
    layer_media_type, Blob, BuiltLayer, Compression, Descriptor, ManifestFormat, Platform,
};
pub use content::{random_bytes, text_bytes};
pub use demo::{demo_images, distro_base_spec, write_demo_layout, DemoImage};
pub use image::{ArtifactBuilder, BuiltImage, Corruption, ImageBuilder, Part};
pub use index::{Built, BuiltIndex, IndexBuilder};
pub use spec::{Entry, EntryKind, LayerSpec, NameFormat};
pub use write::{
    write_docker_archive, write_docker_archive_oci, write_oci_archive, write_oci_layout,
    DockerArchiveOptions,
};

/// The mtime of every entry unless an entry says otherwise (2024-01-01T00:00:00Z).
pub const SAMPLE_MTIME: u64 = 1_704_067_200;
/// The `created` time written into configs and history.
pub const SAMPLE_CREATED: &str = "2024-01-01T00:00:00Z";
/// The gzip level used for every gzip layer (fixed so bytes never change).
pub const GZIP_LEVEL: u32 = 6;
/// The zstd level used for every zstd layer.
pub const ZSTD_LEVEL: i32 = 3;

/// Media types written by this module.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// The OCI 1.1 empty descriptor's media type (`{}`).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker zstd layer (as containerd names it).
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// in-toto attestation layers of buildx attestation manifests.
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    /// A layer media type no reader knows (for negative tests).
    pub const UNKNOWN_LAYER: &str = "application/vnd.example.unknown.layer.v1";
}

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors from parsing descriptions, building images and writing them out.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A layer description line is malformed.
    #[error("layer description line {line}: {message}")]
    Parse {
        /// 1-based line number in the description.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A builder or writer was asked for something inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// JSON encoding or decoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The docker-archive writer refused the images or could not write.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

type Result<T, E = SampleError> = std::result::Result<T, E>;

fn invalid(message: impl Into<String>) -> SampleError {
    SampleError::Invalid(message.into())
}
