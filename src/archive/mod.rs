//! Import sources and export targets: OCI layout directories, OCI archives and
//! docker-archives (`docker save`), read by [`open_source`] and written by
//! [`write_oci_layout`], [`write_oci_archive`] and [`write_docker_archive`].
//!
//! Owns: finding images and blobs in those formats, and laying them out again.
//! Must not touch: the store or SQL. Sources hand out blob bytes unverified (the
//! importer checks digests and sizes); writers read blobs through [`BlobReader`] and
//! verify what they copy. Tar archives are indexed once and read by position, never
//! extracted; nothing is written outside the target path or the given temp dir.

mod container;
mod docker;
mod docker_manifest;
mod oci;
mod source;
mod write;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;

use std::io;

use crate::digest::Digest;
use crate::image::ImageError;

pub use crate::image::{ImageSource, SourceImage};
pub use source::{open_source, open_source_with_limits, select_images, DecompressLimits};
pub use write::{
    write_docker_archive, write_oci_archive, write_oci_layout, BlobReader, ExportImage,
};

/// Why a source could not be read or a target not written. `location` names the
/// file, or the archive and its member.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file (or archive member).
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The path is none of the formats we read.
    #[error("{path}: not an OCI layout directory, an OCI archive or a docker-archive ({problem})")]
    Unrecognized {
        /// The path given.
        path: String,
        /// What was looked for and not found.
        problem: String,
    },
    /// A member the format requires, or that another file names, is missing.
    #[error("{location}: {member} not found")]
    MemberNotFound {
        /// The source.
        location: String,
        /// The member's name.
        member: String,
    },
    /// A blob asked for is not in the source.
    #[error("{location}: blob {digest} not found")]
    BlobNotFound {
        /// The source.
        location: String,
        /// The digest asked for.
        digest: Digest,
    },
    /// The archive ends too early.
    #[error("{location}: truncated archive: {problem}")]
    Truncated {
        /// The archive (and member).
        location: String,
        /// What is missing.
        problem: String,
    },
    /// Malformed content that is not image JSON (bad links, bad names, bad `manifest.json`).
    #[error("{location}: {problem}")]
    Invalid {
        /// The file or member.
        location: String,
        /// What is wrong.
        problem: String,
    },
    /// Image JSON (index, manifest, config) that [`crate::image`] refused.
    #[error("{location}: {source}")]
    Image {
        /// The file or member.
        location: String,
        /// Why it was refused.
        source: ImageError,
    },
    /// No image of the source carries the requested name.
    #[error("no image named {name:?} in the source (it has: {available})")]
    NoSuchImage {
        /// The name asked for.
        name: String,
        /// The names the source offers, comma separated.
        available: String,
    },
    /// Several different images carry the requested name.
    #[error("{count} different images are named {name:?} in the source")]
    AmbiguousName {
        /// The name asked for.
        name: String,
        /// How many images matched.
        count: usize,
    },
    /// A compressed archive that would expand beyond its [`DecompressLimits`]. It is
    /// refused as soon as it crosses them; the partial temp file is gone.
    #[error("{location}: {reason}")]
    DecompressionLimit {
        /// The archive.
        location: String,
        /// Which limit, and what it is.
        reason: LimitReason,
    },
    /// A blob read for export does not match its descriptor.
    #[error("blob {digest}: {problem}")]
    BlobMismatch {
        /// The blob.
        digest: Digest,
        /// What does not match.
        problem: String,
    },
}

/// Which [`DecompressLimits`] bound an archive crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitReason {
    /// It decompresses to more than the ratio rule allows: a likely decompression
    /// bomb.
    Ratio {
        /// The allowance in bytes: `max_ratio` times `compressed_size`, at least
        /// `min_allowance`.
        allowance: u64,
        /// [`DecompressLimits::max_ratio`].
        max_ratio: u64,
        /// The archive's size on disk.
        compressed_size: u64,
        /// [`DecompressLimits::min_allowance`].
        min_allowance: u64,
    },
    /// It decompresses to more than [`DecompressLimits::max_size`].
    MaxSize {
        /// The cap in bytes.
        max_size: u64,
    },
    /// Going on would leave less than `margin` bytes free on the temp dir's filesystem.
    DiskSpace {
        /// The temp directory.
        dir: String,
        /// The free space kept, in bytes.
        margin: u64,
        /// Bytes decompressed when it stopped.
        written: u64,
    },
}

impl std::fmt::Display for LimitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use indicatif::HumanBytes;
        match self {
            LimitReason::Ratio {
                allowance,
                max_ratio,
                compressed_size,
                min_allowance,
            } => write!(
                f,
                "decompresses to more than {} (limit: {max_ratio} times the {} archive, at \
                 least {}); refused as a likely decompression bomb. If the archive is \
                 genuine, raise the limit with --max-decompressed-size, or decompress it \
                 yourself and import the .tar",
                HumanBytes(*allowance),
                HumanBytes(*compressed_size),
                HumanBytes(*min_allowance),
            ),
            LimitReason::MaxSize { max_size } => write!(
                f,
                "decompresses to more than {} (limit: --max-decompressed-size)",
                HumanBytes(*max_size)
            ),
            LimitReason::DiskSpace {
                dir,
                margin,
                written,
            } => write!(
                f,
                "decompressing it would leave less than {} free in {dir} (stopped after {}); \
                 make room, or decompress it elsewhere and import the .tar",
                HumanBytes(*margin),
                HumanBytes(*written)
            ),
        }
    }
}

impl ArchiveError {
    pub(crate) fn io(path: impl std::fmt::Display, source: io::Error) -> Self {
        ArchiveError::Io {
            path: path.to_string(),
            source,
        }
    }
}
