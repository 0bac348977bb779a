//! The layer index: one pass over an uncompressed tar stream gives every entry's
//! normalized path and metadata, where its content is, and the stream's DiffId.
//!
//! Entries that cannot be used (a `..` component, a path too long, an unknown type,
//! a uid that does not fit in 32 bits...) are skipped and recorded as
//! [`IndexWarning`]s; only a broken stream (truncated, not a tar) fails the layer.

use std::io::{self, Read};

use crate::digest::DiffId;

use super::entry::{Limits, SparseChunk, Xattr};
use super::tar_stream::{RawEntry, TarStream};
use super::LayerError;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (including whiteout markers, which are empty regular files).
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is in [`Entry::link_target`].
    Symlink,
    /// A hard link to an earlier path; the target path is in [`Entry::link_target`].
    Hardlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// Where a regular file's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentRef {
    /// Not a regular file.
    None,
    /// Offset of the entry's stored data in the uncompressed stream (from
    /// [`DiscardSink`]). For a sparse file the stored data is the concatenated
    /// segments of [`Entry::sparse`].
    StreamOffset(u64),
    /// The sha256 of the content, stored by [`CacheDirSink`](super::CacheDirSink) as
    /// `<cache>/content/<hex[0..2]>/<hex>`.
    Cached(ContentId),
}

/// The name of one file's content in the unpack cache: the sha256 of its bytes, or
/// for a sparse file of its map and data segments
/// ([`sparse_content_id`](super::sparse_content_id)). Not a blob digest: nothing in
/// the store is named by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The 64-character lowercase hex form.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ContentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "content:{}", self.hex())
    }
}

/// One usable tar entry, with extensions (PAX, GNU long names) applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalized path: no leading `/` or `./`, no empty or `.` components, never a
    /// `..` component; empty for the root directory itself.
    pub path: Box<[u8]>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time (from PAX `mtime`, else 0).
    pub mtime_nsec: u32,
    /// Logical size of a regular file (sparse files: including holes); 0 otherwise.
    pub size: u64,
    /// Symlink target (verbatim bytes) or hard link target (a normalized path).
    pub link_target: Option<Box<[u8]>>,
    /// Device major number (character and block devices).
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`.
    pub xattrs: Box<[Xattr]>,
    /// The data segments of a sparse file, `None` for an ordinary one.
    pub sparse: Option<Box<[SparseChunk]>>,
    /// Where the content is (regular files only).
    pub content: ContentRef,
}

impl Entry {
    /// Bytes of this entry's data in the tar stream (the sum of segments for sparse
    /// files).
    pub fn stored_size(&self) -> u64 {
        match &self.sparse {
            Some(chunks) => chunks.iter().map(|c| c.len).sum(),
            None => self.size,
        }
    }
}

/// An entry that was skipped, or an attribute that was dropped, while indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexWarning {
    /// Offset of the entry's header in the uncompressed stream.
    pub header_offset: u64,
    /// The entry's path as it appears in the tar.
    pub path: Box<[u8]>,
    /// What was wrong.
    pub reason: String,
}

/// The index of one layer: its usable entries in tar order, and the DiffId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerIndex {
    /// sha256 of the whole uncompressed stream, including what follows the last entry.
    pub diff_id: DiffId,
    /// Length of the uncompressed stream.
    pub uncompressed_size: u64,
    /// Usable entries, in tar order. An entry's position here is its `entry_index`.
    pub entries: Vec<Entry>,
    /// Entries skipped and attributes dropped.
    pub warnings: Vec<IndexWarning>,
}

/// A regular file handed to a [`ContentSink`].
#[derive(Debug, Clone, Copy)]
pub struct SinkFile<'a> {
    /// The entry's position in [`LayerIndex::entries`].
    pub entry_index: usize,
    /// The logical size (sparse files: including holes).
    pub size: u64,
    /// Offset of the entry's stored data in the uncompressed stream.
    pub stream_offset: u64,
    /// The data segments of a sparse file, `None` for an ordinary one.
    pub sparse: Option<&'a [SparseChunk]>,
}

/// Where regular file contents go while indexing.
pub trait ContentSink {
    /// Stores (or not) one regular file's content and says where it is. `data` yields
    /// exactly `file.size` bytes, or for a sparse file its stored segments only (the
    /// sum of `file.sparse`'s lengths; the gaps are holes): a few bytes of tar may
    /// claim a terabyte of holes, which no sink should have to read. What the sink
    /// does not read is skipped by the indexer.
    fn file(&mut self, file: SinkFile<'_>, data: &mut dyn Read) -> io::Result<ContentRef>;
}

/// Stores nothing: the index records each file's offset in the uncompressed stream,
/// so content can be extracted on demand ([`extract_entry`](super::extract_entry)).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardSink;

impl ContentSink for DiscardSink {
    fn file(&mut self, file: SinkFile<'_>, _data: &mut dyn Read) -> io::Result<ContentRef> {
        Ok(ContentRef::StreamOffset(file.stream_offset))
    }
}

/// Indexes an uncompressed tar stream with default [`Limits`].
pub fn index_layer(
    uncompressed: impl Read,
    sink: &mut dyn ContentSink,
) -> Result<LayerIndex, LayerError> {
    index_layer_with_limits(uncompressed, sink, &Limits::default())
}

/// Indexes an uncompressed tar stream: reads it once to its very end, hands each
/// regular file to `sink`, and returns the entries and the DiffId.
pub fn index_layer_with_limits(
    uncompressed: impl Read,
    sink: &mut dyn ContentSink,
    limits: &Limits,
) -> Result<LayerIndex, LayerError> {
    let mut stream = TarStream::new(uncompressed, limits);
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut headers = 0usize;
    while let Some(raw) = stream.next_entry()? {
        headers += 1;
        if headers > limits.max_entries {
            return Err(LayerError::TooManyEntries(limits.max_entries));
        }
        let warn = |warnings: &mut Vec<IndexWarning>, raw: &RawEntry, reason: String| {
            warnings.push(IndexWarning {
                header_offset: raw.header_offset,
                path: raw.path.clone().into_boxed_slice(),
                reason,
            })
        };
        for warning in &raw.warnings {
            warn(&mut warnings, &raw, warning.clone());
        }
        let mut entry = match convert(&raw, limits) {
            Ok(entry) => entry,
            Err(reason) => {
                warn(&mut warnings, &raw, format!("entry skipped: {reason}"));
                continue;
            }
        };
        if entry.kind == EntryKind::File {
            let file = SinkFile {
                entry_index: entries.len(),
                size: entry.size,
                stream_offset: stream.position(),
                sparse: entry.sparse.as_deref(),
            };
            let stored = entry.stored_size();
            let stream_offset = file.stream_offset;
            let result = sink.file(file, &mut stream.data());
            entry.content = match result {
                Ok(content) => content,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(LayerError::Truncated {
                        offset: stream_offset + stored,
                        what: "entry data",
                    })
                }
                Err(e) => return Err(e.into()),
            };
        }
        entries.push(entry);
    }
    let (digest, uncompressed_size) = stream.finish()?;
    Ok(LayerIndex {
        diff_id: DiffId(digest),
        uncompressed_size,
        entries,
        warnings,
    })
}

/// Turns a raw header into an [`Entry`], or says why the entry must be skipped.
fn convert(raw: &RawEntry, limits: &Limits) -> Result<Entry, String> {
    if let Some(reason) = &raw.skip {
        return Err(reason.clone());
    }
    let mut kind = match raw.typeflag {
        b'0' | b'7' | 0 => EntryKind::File,
        b'1' => EntryKind::Hardlink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::CharDevice,
        b'4' => EntryKind::BlockDevice,
        b'5' | b'D' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        other => return Err(format!("unsupported tar entry type {:?}", other as char)),
    };
    // Old (V7) tars mark directories only with a trailing slash (Go's rule: '\0' only).
    if raw.typeflag == 0 && raw.path.ends_with(b"/") {
        kind = EntryKind::Dir;
    }
    let path = normalize_path(&raw.path, limits)?;
    let link_target = match kind {
        EntryKind::Symlink => {
            if raw.link.is_empty() || raw.link.len() > limits.max_path_len || raw.link.contains(&0)
            {
                return Err("invalid symlink target".to_string());
            }
            Some(raw.link.clone().into_boxed_slice())
        }
        EntryKind::Hardlink => {
            let target = normalize_path(&raw.link, limits)
                .map_err(|why| format!("hard link target: {why}"))?;
            if target.is_empty() {
                return Err("hard link to the root directory".to_string());
            }
            Some(target)
        }
        _ => None,
    };
    let uid = u32::try_from(raw.uid).map_err(|_| format!("uid {} out of range", raw.uid))?;
    let gid = u32::try_from(raw.gid).map_err(|_| format!("gid {} out of range", raw.gid))?;
    Ok(Entry {
        path,
        kind,
        mode: raw.mode & 0o7777,
        uid,
        gid,
        mtime: raw.mtime,
        mtime_nsec: raw.mtime_nsec,
        size: if kind == EntryKind::File { raw.size } else { 0 },
        link_target,
        dev_major: raw.dev_major,
        dev_minor: raw.dev_minor,
        xattrs: raw.xattrs.clone().into_boxed_slice(),
        sparse: match kind {
            EntryKind::File => raw.sparse.clone().map(Vec::into_boxed_slice),
            _ => None,
        },
        content: ContentRef::None,
    })
}

/// Strips leading `/` and `./`, empty and `.` components; refuses `..` anywhere (an
/// entry with one is skipped, never cleaned into another path), NUL bytes, names
/// longer than 255 bytes and paths longer than the limit.
pub(crate) fn normalize_path(raw: &[u8], limits: &Limits) -> Result<Box<[u8]>, String> {
    if raw.len() > limits.max_path_len {
        return Err(format!("path longer than {} bytes", limits.max_path_len));
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".to_string());
    }
    let mut out = Vec::with_capacity(raw.len());
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component".to_string()),
            name if name.len() > 255 => return Err("file name longer than 255 bytes".to_string()),
            name => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name);
            }
        }
    }
    Ok(out.into_boxed_slice())
}

/// Expands a sparse file's stored segments into its logical content (holes as zeros).
pub(crate) struct SparseReader<'c, R> {
    inner: R,
    chunks: &'c [SparseChunk],
    next_chunk: usize,
    position: u64,
    size: u64,
}

impl<'c, R: Read> SparseReader<'c, R> {
    pub(crate) fn new(inner: R, chunks: &'c [SparseChunk], size: u64) -> Self {
        SparseReader {
            inner,
            chunks,
            next_chunk: 0,
            position: 0,
            size,
        }
    }
}

impl<R: Read> Read for SparseReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let cap = |n: u64| buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        // Skip chunks we are past.
        while let Some(chunk) = self.chunks.get(self.next_chunk) {
            if self.position >= chunk.offset + chunk.len {
                self.next_chunk += 1;
            } else {
                break;
            }
        }
        match self.chunks.get(self.next_chunk) {
            Some(chunk) if self.position >= chunk.offset => {
                let want = cap(chunk.offset + chunk.len - self.position);
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse data ends early",
                    ));
                }
                self.position += n as u64;
                Ok(n)
            }
            next => {
                let hole_end = next.map_or(self.size, |c| c.offset);
                let n = cap(hole_end - self.position);
                buf[..n].fill(0);
                self.position += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        let limits = Limits::default();
        for (raw, expected) in [
            ("a/b", Some("a/b")),
            ("./a/b/", Some("a/b")),
            ("/abs/x", Some("abs/x")),
            ("a//b/./c", Some("a/b/c")),
            ("./", Some("")),
            ("/", Some("")),
            ("../x", None),
            ("a/../../b", None),
            ("a/../b", None),
            ("a/..", None),
        ] {
            let got = normalize_path(raw.as_bytes(), &limits).ok();
            assert_eq!(got.as_deref(), expected.map(str::as_bytes), "{raw}");
        }
        assert!(normalize_path(&vec![b'a'; 4097], &limits).is_err());
        assert!(normalize_path(&vec![b'a'; 256], &limits).is_err());
    }

    #[test]
    fn sparse_reader_fills_holes() {
        let chunks = [
            SparseChunk { offset: 2, len: 3 },
            SparseChunk { offset: 8, len: 1 },
        ];
        let mut out = Vec::new();
        SparseReader::new(&b"abcd"[..], &chunks, 12)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"\0\0abc\0\0\0d\0\0\0");
    }
}
