//! The vocabulary shared by the tar reader (`tar_stream.rs`) and the layer index
//! (`index.rs`): one entry's extended attributes and sparse segments, and the
//! [`Limits`] that bound reading them. Plain data: no I/O, and it uses no other
//! module of `layer`, so both can build on it without importing each other.

/// Bounds that keep hostile input from costing unbounded memory.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest accepted path or link target, in bytes (PATH_MAX).
    pub max_path_len: usize,
    /// Most headers accepted in one layer; more is an error. Each entry costs about
    /// 260 bytes of index memory, so 2 million bounds a layer to ~0.5 GiB; real
    /// distribution layers hold tens of thousands.
    pub max_entries: usize,
    /// Largest accepted xattr value; larger ones are dropped with a warning.
    pub max_xattr_size: usize,
    /// Largest PAX extended header kept in memory; a larger one skips its entry.
    pub max_pax_header: u64,
    /// Most data segments in one sparse file.
    pub max_sparse_chunks: usize,
    /// Largest logical size of a sparse file (holes are served as zeros, so this
    /// bounds what a tiny stream can expand to).
    pub max_sparse_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_path_len: 4096,
            max_entries: 2_000_000,
            max_xattr_size: 64 * 1024,
            max_pax_header: 1024 * 1024,
            max_sparse_chunks: 100_000,
            max_sparse_size: 1 << 40,
        }
    }
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xattr {
    /// The name, e.g. `user.comment` or `security.capability`.
    pub name: Box<[u8]>,
    /// The raw value.
    pub value: Box<[u8]>,
}

/// One data segment of a sparse file; the gaps between segments are holes (zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SparseChunk {
    /// Offset in the logical file.
    pub offset: u64,
    /// Length of the segment.
    pub len: u64,
}
