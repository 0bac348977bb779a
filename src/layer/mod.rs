//! Layer blobs -> browsable trees. Knows nothing of FUSE, SQL or the blob store.
//!
//! This module owns:
//! - decompression of a layer blob ([`open_layer_stream`], [`LayerCompression`]);
//! - reading a tar stream once into a compact [`LayerIndex`] (`index.rs`, over the
//!   byte-level reader `tar_stream.rs`, both on the shared types of `entry.rs`), which also
//!   yields the layer's [`DiffId`](crate::DiffId) so import verifies `diff_ids` in the
//!   same pass, and its on-disk form (`format.rs`);
//! - the per-layer view `layers/NNN/files/` ([`layer_tree`]) and the merged `rootfs/`
//!   ([`merge_layers`]): whiteouts and overrides as a pure function over an in-memory
//!   tree (`merge.rs`), frozen into an immutable [`Tree`] (`tree.rs`);
//! - the seekable index of gzip layers (`zran/`): inflate checkpoints recorded while
//!   the layer is decompressed once, and reading any byte range of the uncompressed
//!   stream from a checkpoint plus a few compressed bytes ([`GzipIndex`]);
//! - the unpack cache: file contents stored by sha256 under a cache directory, and
//!   access to a file's content ([`CacheDir`], [`open_content`], `cache.rs`).
//!
//! It must not touch anything outside the directories it is given: hostile tars never
//! panic, never write outside the cache directory and never allocate from sizes they
//! declare.
//!
//! Data flow: blob bytes -> [`open_layer_stream`] -> [`index_layer`] (with a
//! [`ContentSink`]) -> [`LayerIndex`] -> [`merge_layers`] / [`layer_tree`] -> [`Tree`].

use std::io::{self, BufRead, BufReader, Read};

mod cache;
mod entry;
mod format;
mod index;
mod merge;
mod tar_stream;
mod tree;
pub mod zran;

#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod umoci_tests;

pub use cache::{
    content_file_id, extract_entry, open_content, sparse_content_id, unpack_layer, CacheDir,
    CacheDirSink, Content, CONTENT_DIR, INDEX_DIR, TMP_DIR,
};
pub use entry::{Limits, SparseChunk, Xattr};
pub use index::{
    index_layer, index_layer_with_limits, ContentId, ContentRef, ContentSink, DiscardSink, Entry,
    EntryKind, IndexWarning, LayerIndex, SinkFile,
};
pub use merge::{layer_tree, merge_layers, skipped_entries, MergedTree, TreeWarning};
pub use tree::{ContentLoc, Node, NodeId, NodeKind, Tree};
pub use zran::{GzipCheckpoints, GzipIndex, GzipIndexBuilder, RangeSource, ZranError};

/// Errors from reading, indexing, merging or caching layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An I/O error from the underlying reader, the cache directory or an index file.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a header or inside an entry's data.
    #[error("layer tar is truncated at byte {offset}: {what}")]
    Truncated {
        /// Offset in the uncompressed stream where data was missing.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A header that is not a tar header (bad checksum or unparseable size): the stream
    /// cannot be followed any further.
    #[error("layer tar has a malformed header at byte {offset}: {why}")]
    BadHeader {
        /// Offset of the header in the uncompressed stream.
        offset: u64,
        /// The problem.
        why: String,
    },
    /// More entries than the limit on entries in one layer (2 million).
    #[error("layer tar has more than {0} entries")]
    TooManyEntries(usize),
    /// An index file that is corrupt, half-written, or from another format version:
    /// the caller should rebuild it from the layer blob.
    #[error("layer index file is unusable ({0}); rebuild it")]
    CorruptIndex(String),
    /// Content for an entry that is not a regular file, or a ref of the wrong kind.
    #[error("no content: {0}")]
    NoContent(String),
    /// Building, decoding or reading through the seekable index of a gzip layer.
    #[error("{0}")]
    Seekable(#[from] ZranError),
}

pub use crate::image::LayerCompression;

/// Wraps a layer blob reader in the decompressor for `compression`, giving the
/// uncompressed tar stream.
pub fn open_layer_stream<'a, R: Read + 'a>(
    reader: R,
    compression: LayerCompression,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match compression {
        LayerCompression::None => Box::new(reader),
        // Multi-member: pigz and some registries concatenate gzip members.
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        // zstd's default window limit (128 MiB) bounds memory on hostile frames.
        LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// Like [`open_layer_stream`] for a blob of unknown media type: sniffs the magic
/// number first and returns what it found.
pub fn open_layer_stream_sniffed<'a, R: Read + 'a>(
    reader: R,
) -> Result<(LayerCompression, Box<dyn Read + 'a>), LayerError> {
    let mut buffered = BufReader::new(reader);
    let compression = LayerCompression::sniff(buffered.fill_buf()?);
    Ok((compression, open_layer_stream(buffered, compression)?))
}
