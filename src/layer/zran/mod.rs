//! The seekable index of a gzip layer ("zran", after zlib's example of the idea):
//! inflate checkpoints that let any byte range of the layer's uncompressed tar be
//! served from a checkpoint plus a few compressed bytes, instead of decompressing
//! from the start.
//!
//! ```text
//! compressed   |hdr|=== span 0 ===|=== span 1 ===|...|== span n-1 ==|trailer|
//!                  ^cp 0          ^cp 1          ^cp 2             (end)
//! uncompressed     0              ~1 MiB         ~2 MiB          uncompressed_size
//! ```
//! A checkpoint sits at a deflate block boundary (a bit position), about every
//! [`SPAN_TARGET`] bytes of output, and at the start of each gzip member (`pigz`,
//! `cat a.gz b.gz`), where no window is needed. It keeps the offsets, the bit
//! position, the 32 KiB of output before it (the window deflate may refer back
//! into; stored zstd-compressed) and the sha256 of its span: the compressed bytes
//! from it to the next checkpoint, rounded out to whole bytes (two spans share a
//! byte when a checkpoint falls inside one).
//!
//! - `build.rs`: the checkpoints are recorded by the decoder that import uses to
//!   check the `diff_id` (no second pass), or over any [`Read`](std::io::Read)
//!   ([`GzipIndexBuilder`]: a layer streamed once and not stored).
//! - `format.rs`: the on-disk (and registry artifact) encoding, self-describing
//!   and checked; anything malformed is a [`ZranError::Corrupt`], never a panic.
//! - `read.rs`: serving `[start, end)` of the uncompressed stream from a
//!   [`RangeSource`] (a local blob file now, fetched ranges later): the spans needed
//!   are fetched as one range, each is checked against its sha256 before use, and
//!   inflate resumes at the checkpoint's bit. Also where a tar entry's data lies in
//!   the stream ([`entry_data`]).
//! - `inflate.rs`: the one place that calls zlib-rs's C API (`libz-rs-sys`).
//!
//! This module knows nothing of the store, the registry or FUSE.

use std::ops::Range;

use crate::digest::{DiffId, Digest};

mod build;
mod format;
mod inflate;
mod read;
#[cfg(test)]
mod tests;

pub use build::{
    CheckpointingDecoder, ChunkSource, GzipIndexBuilder, RawCheckpoint, ReadChunks, SpanFinisher,
    SpanSink,
};
pub use format::{FORMAT_VERSION, MEDIA_TYPE};
pub use read::{entry_data, DataPiece, RangeSource, MAX_FETCH};

/// Uncompressed bytes between checkpoints (at least; the next block boundary).
pub const SPAN_TARGET: u64 = 1 << 20;

/// Errors of the seekable index: building, decoding its encoding, reading through it.
#[derive(Debug, thiserror::Error)]
pub enum ZranError {
    /// Reading compressed bytes from the source failed.
    #[error("reading compressed bytes {offset}+{len}: {source}")]
    Source {
        /// Offset in the compressed blob.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The source's error.
        source: std::io::Error,
    },
    /// An encoded index that is truncated, malformed, from another version, or
    /// inconsistent (offsets out of order, sizes that do not add up).
    #[error("seekable index is unusable: {0}")]
    Corrupt(String),
    /// A span's compressed bytes do not match the digest the index records.
    #[error("compressed bytes {offset}+{len} (span {span}) do not match their recorded sha256")]
    SpanDigest {
        /// The span's position in the index.
        span: usize,
        /// Its compressed offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Inflate failed: bad deflate data, or an index that does not fit the blob.
    #[error("inflating: {0}")]
    Inflate(String),
    /// Reading or writing an index file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A range outside the uncompressed stream.
    #[error("range {start}..{end} is outside the uncompressed stream ({size} bytes)")]
    OutOfRange {
        /// Start asked for.
        start: u64,
        /// End asked for.
        end: u64,
        /// Size of the uncompressed stream.
        size: u64,
    },
}

/// One checkpoint and the digest of the span that starts at it.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// First whole byte after the resume position in the compressed stream.
    pub compressed_offset: u64,
    /// When non-zero, the resume position is this many bits before
    /// `compressed_offset` (the high bits of the byte before it).
    pub bits: u8,
    /// Offset of the resume position in the uncompressed stream.
    pub uncompressed_offset: u64,
    /// The window (up to 32 KiB of output before this point), zstd-compressed;
    /// empty at the start of a gzip member.
    pub window: Box<[u8]>,
    /// sha256 of this checkpoint's span of compressed bytes.
    pub span_sha256: [u8; 32],
}

impl Checkpoint {
    /// First compressed byte of the span (the byte holding `bits`, if any).
    pub fn span_start(&self) -> u64 {
        self.compressed_offset - u64::from(self.bits > 0)
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("compressed_offset", &self.compressed_offset)
            .field("bits", &self.bits)
            .field("uncompressed_offset", &self.uncompressed_offset)
            .field("window_bytes", &self.window.len())
            .field("span_sha256", &hex::encode(self.span_sha256))
            .finish()
    }
}

/// What the builder produces: the checkpoints of one gzip stream, not yet bound to
/// the blob's digest (the import's writer knows it only at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipCheckpoints {
    /// Length of the compressed stream (the blob).
    pub compressed_size: u64,
    /// Length of the uncompressed stream.
    pub uncompressed_size: u64,
    /// In stream order; the first is at the first member's deflate data.
    pub checkpoints: Vec<Checkpoint>,
}

/// The seekable index of one gzip layer blob: its checkpoints, and the digests
/// that say which blob and which uncompressed stream they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipIndex {
    layer: Digest,
    diff_id: DiffId,
    compressed_size: u64,
    uncompressed_size: u64,
    checkpoints: Vec<Checkpoint>,
}

/// One span: compressed bytes from one checkpoint to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Position in the index.
    pub index: usize,
    /// Its compressed bytes in the blob.
    pub compressed: Range<u64>,
    /// The uncompressed bytes it yields.
    pub uncompressed: Range<u64>,
    /// sha256 of the compressed bytes.
    pub sha256: [u8; 32],
}

impl GzipIndex {
    /// Binds built checkpoints to the blob `layer` whose uncompressed stream has
    /// `diff_id`; checks them as a decoded index is checked.
    pub fn new(
        layer: Digest,
        diff_id: DiffId,
        built: GzipCheckpoints,
    ) -> Result<GzipIndex, ZranError> {
        let index = GzipIndex {
            layer,
            diff_id,
            compressed_size: built.compressed_size,
            uncompressed_size: built.uncompressed_size,
            checkpoints: built.checkpoints,
        };
        index.validate()?;
        Ok(index)
    }

    /// The layer blob this index describes.
    pub fn layer(&self) -> Digest {
        self.layer
    }

    /// The digest of the uncompressed stream.
    pub fn diff_id(&self) -> DiffId {
        self.diff_id
    }

    /// Length of the blob.
    pub fn compressed_size(&self) -> u64 {
        self.compressed_size
    }

    /// Length of the uncompressed stream.
    pub fn uncompressed_size(&self) -> u64 {
        self.uncompressed_size
    }

    /// The checkpoints, in stream order.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// How many spans (= checkpoints).
    pub fn span_count(&self) -> usize {
        self.checkpoints.len()
    }

    /// Span `index`; `None` past the end.
    pub fn span(&self, index: usize) -> Option<Span> {
        let checkpoint = self.checkpoints.get(index)?;
        let next = self.checkpoints.get(index + 1);
        Some(Span {
            index,
            compressed: checkpoint.span_start()
                ..next.map_or(self.compressed_size, |n| n.compressed_offset),
            uncompressed: checkpoint.uncompressed_offset
                ..next.map_or(self.uncompressed_size, |n| n.uncompressed_offset),
            sha256: checkpoint.span_sha256,
        })
    }

    /// The spans needed to produce uncompressed bytes `range` (non-empty, inside
    /// the stream): from the last checkpoint at or before its start to the span
    /// holding its last byte.
    pub fn spans_for(&self, range: Range<u64>) -> Result<Range<usize>, ZranError> {
        if range.start >= range.end || range.end > self.uncompressed_size {
            return Err(ZranError::OutOfRange {
                start: range.start,
                end: range.end,
                size: self.uncompressed_size,
            });
        }
        let at_or_before = |offset: u64| {
            self.checkpoints
                .partition_point(|c| c.uncompressed_offset <= offset)
                .saturating_sub(1)
        };
        let first = at_or_before(range.start);
        let last = at_or_before(range.end - 1);
        Ok(first..last + 1)
    }

    /// The compressed bytes that spans `spans` cover together (one range).
    pub fn compressed_range(&self, spans: Range<usize>) -> Option<Range<u64>> {
        let first = self.span(spans.start)?;
        let last = self.span(spans.end.checked_sub(1)?)?;
        Some(first.compressed.start..last.compressed.end)
    }

    /// Bytes of the encoded index that are windows (the rest is fixed-size records).
    pub fn window_bytes(&self) -> u64 {
        self.checkpoints.iter().map(|c| c.window.len() as u64).sum()
    }
}
