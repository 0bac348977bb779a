//! The unpack cache: regular file contents stored once by their sha256, and access to
//! a file's content whether its layer is unpacked or not.
//!
//! ```text
//! <cache>/
//!   content/<hex[0..2]>/<hex>   one file per distinct content (sha256 of the bytes),
//!                               read-only (0444), shared by every layer holding it
//!   tmp/                        content being written; renamed into content/ only
//!                               when complete, so a crash never leaves a half file
//!                               under a final name (leftovers here are garbage)
//!   index/<hex>.idx             layer indexes by layer blob digest (LayerIndex::write_to)
//! ```
//! Everything here is derived data and may be deleted at any time; a missing content
//! file means "unpack the layer again". Paths under the cache are built only from hex
//! digests, never from names found in a tar.
//!
//! Design: at import the store indexes each layer with
//! [`DiscardSink`](super::DiscardSink) (content = offset in the stream; nothing
//! unpacked). When a file is first read, the FUSE layer calls [`unpack_layer`] for its
//! layer (one sequential pass writing every file of the layer into `content/`), saves
//! the returned index in place of the old one, and from then on serves the cached
//! file ([`open_content`]) at disk speed (passthrough or page cache). Entry positions
//! are identical in both indexes, so trees built from either stay valid.
//! [`extract_entry`] serves one file straight from the stream (re-reading the layer up
//! to its offset) for callers that do not want to unpack the whole layer.
//!
//! Content files are written without fsync by default (a process crash is safe
//! thanks to the rename; after a power loss a content file may be short, which
//! [`open_content`] detects by its size). [`CacheDirSink::sync`] makes them durable.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

use super::entry::SparseChunk;
use super::index::{
    index_layer, ContentId, ContentRef, ContentSink, Entry, EntryKind, LayerIndex, SinkFile,
    SparseReader,
};
use super::LayerError;

/// Subdirectory of the cache holding contents.
pub const CONTENT_DIR: &str = "content";
/// Subdirectory of the cache for files being written.
pub const TMP_DIR: &str = "tmp";
/// Subdirectory of the cache holding layer index files.
pub const INDEX_DIR: &str = "index";

/// A cache directory (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// Opens (creating if needed) the cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<CacheDir, LayerError> {
        let root = root.into();
        for sub in [CONTENT_DIR, TMP_DIR, INDEX_DIR] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(CacheDir { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where content `id` is stored.
    pub fn content_path(&self, id: &ContentId) -> PathBuf {
        let hex = id.hex();
        self.root.join(CONTENT_DIR).join(&hex[..2]).join(hex)
    }

    /// Where the index of the layer blob `layer_digest` is kept.
    pub fn index_path(&self, layer_digest: &Digest) -> PathBuf {
        self.root
            .join(INDEX_DIR)
            .join(format!("{}.idx", layer_digest.hex()))
    }

    /// Where the seekable index of the gzip layer blob `layer_digest` is kept
    /// ([`GzipIndex`](super::GzipIndex)), beside its entry index.
    pub fn gzip_index_path(&self, layer_digest: &Digest) -> PathBuf {
        self.root
            .join(INDEX_DIR)
            .join(format!("{}.zran", layer_digest.hex()))
    }

    /// Stores `data` (exactly `size` bytes expected) under its sha256 and returns it.
    /// Already-present content is not written twice.
    pub fn store_content(
        &self,
        data: &mut dyn Read,
        size: u64,
        sync: bool,
    ) -> io::Result<ContentId> {
        let mut temp = tempfile::NamedTempFile::new_in(self.root.join(TMP_DIR))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 128 * 1024];
        let mut written = 0u64;
        {
            let mut out = io::BufWriter::with_capacity(256 * 1024, temp.as_file_mut());
            loop {
                let n = match data.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buffer[..n]);
                // Runs of zeros (the holes of sparse files above all) stay holes: a few
                // bytes of hostile tar may declare a file of up to
                // `Limits::max_sparse_size`, which must not cost that much disk.
                if buffer[..n].iter().all(|&b| b == 0) {
                    out.seek(SeekFrom::Current(n as i64))?;
                } else {
                    out.write_all(&buffer[..n])?;
                }
                written += n as u64;
            }
            out.flush()?;
        }
        // A trailing hole: seeking past the end does not extend the file.
        temp.as_file().set_len(written)?;
        if written != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file content ends early",
            ));
        }
        self.persist(temp, ContentId(hasher.finalize().into()), sync)
    }

    /// Stores a sparse file: `data` yields its stored segments, which land at the
    /// offsets of `chunks`; the rest of its `size` bytes are holes. It is named by
    /// [`sparse_content_id`], so storing and checking it costs the segments only,
    /// however large the file claims to be.
    pub fn store_sparse_content(
        &self,
        data: &mut dyn Read,
        chunks: &[SparseChunk],
        size: u64,
        sync: bool,
    ) -> io::Result<ContentId> {
        let mut temp = tempfile::NamedTempFile::new_in(self.root.join(TMP_DIR))?;
        let mut hasher = sparse_hasher(chunks, size);
        let mut buffer = vec![0u8; 128 * 1024];
        for chunk in chunks {
            let file = temp.as_file_mut();
            file.seek(SeekFrom::Start(chunk.offset))?;
            let mut left = chunk.len;
            while left > 0 {
                let n = buffer
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                // A short segment is UnexpectedEof: the indexer reports it truncated.
                data.read_exact(&mut buffer[..n])?;
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n])?;
                left -= n as u64;
            }
        }
        temp.as_file().set_len(size)?;
        self.persist(temp, ContentId(hasher.finalize().into()), sync)
    }

    /// Makes a complete temp file the content `id` (read-only, renamed into place),
    /// unless that content is present already.
    /// Makes `temp` (in this cache's `tmp/`, holding exactly the content `id`
    /// names, hashed by the caller as it was written) the content file `id`.
    pub fn adopt_content(
        &self,
        temp: tempfile::NamedTempFile,
        id: ContentId,
    ) -> io::Result<ContentId> {
        self.persist(temp, id, false)
    }

    fn persist(
        &self,
        temp: tempfile::NamedTempFile,
        id: ContentId,
        sync: bool,
    ) -> io::Result<ContentId> {
        let final_path = self.content_path(&id);
        if final_path.exists() {
            return Ok(id);
        }
        if sync {
            temp.as_file().sync_data()?;
        }
        temp.as_file()
            .set_permissions(Permissions::from_mode(0o444))?;
        if let Some(parent) = final_path.parent() {
            fs::create_dir_all(parent)?;
        }
        temp.persist(&final_path).map_err(|e| e.error)?;
        Ok(id)
    }
}

/// The hasher naming a sparse file, fed its map and size before its segments.
fn sparse_hasher(chunks: &[SparseChunk], size: u64) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(b"imagefs sparse file v1\0");
    hasher.update(size.to_le_bytes());
    hasher.update((chunks.len() as u64).to_le_bytes());
    for chunk in chunks {
        hasher.update(chunk.offset.to_le_bytes());
        hasher.update(chunk.len.to_le_bytes());
    }
    hasher
}

/// What the content file of regular-file `entry` is named by, computed from its
/// bytes: the sha256 of them, or [`sparse_content_id`] for a sparse file.
pub fn content_file_id(file: &File, entry: &Entry) -> io::Result<ContentId> {
    match &entry.sparse {
        None => crate::digest::Hasher::file(file).map(|(digest, _)| ContentId(*digest.as_bytes())),
        Some(chunks) => sparse_content_id(file, chunks, entry.size),
    }
}

/// The name of a sparse file's content in the cache: sha256 of a header (its size
/// and map) and of its data segments, read from `file` at their offsets. Holes are
/// not read, so a file claiming a terabyte of holes costs no more than its data.
pub fn sparse_content_id(file: &File, chunks: &[SparseChunk], size: u64) -> io::Result<ContentId> {
    use std::os::unix::fs::FileExt;
    let mut hasher = sparse_hasher(chunks, size);
    let mut buffer = vec![0u8; 1 << 20];
    for chunk in chunks {
        let mut done = 0u64;
        while done < chunk.len {
            let n = buffer
                .len()
                .min(usize::try_from(chunk.len - done).unwrap_or(usize::MAX));
            file.read_exact_at(&mut buffer[..n], chunk.offset + done)?;
            hasher.update(&buffer[..n]);
            done += n as u64;
        }
    }
    Ok(ContentId(hasher.finalize().into()))
}

/// Writes each regular file's content into a [`CacheDir`], deduplicated by sha256.
#[derive(Debug)]
pub struct CacheDirSink<'c> {
    cache: &'c CacheDir,
    sync: bool,
}

impl<'c> CacheDirSink<'c> {
    /// A sink writing into `cache`.
    pub fn new(cache: &'c CacheDir) -> Self {
        CacheDirSink { cache, sync: false }
    }

    /// Whether to fsync each content file before renaming it into place.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }
}

impl ContentSink for CacheDirSink<'_> {
    fn file(&mut self, file: SinkFile<'_>, data: &mut dyn Read) -> io::Result<ContentRef> {
        match file.sparse {
            None => self.cache.store_content(data, file.size, self.sync),
            Some(chunks) => self
                .cache
                .store_sparse_content(data, chunks, file.size, self.sync),
        }
        .map(ContentRef::Cached)
    }
}

/// Indexes an uncompressed layer stream while writing all its file contents into
/// `cache`: the returned index has [`ContentRef::Cached`] refs.
pub fn unpack_layer(uncompressed: impl Read, cache: &CacheDir) -> Result<LayerIndex, LayerError> {
    index_layer(uncompressed, &mut CacheDirSink::new(cache))
}

/// A regular file's content, ready to read.
#[derive(Debug)]
pub enum Content {
    /// The content is in the cache: an open read-only file and its path.
    Cached {
        /// The content file.
        file: File,
        /// Its path under `<cache>/content/`.
        path: PathBuf,
    },
    /// The content is only in the layer stream: use [`extract_entry`] (or unpack the
    /// layer with [`unpack_layer`]).
    InStream {
        /// Offset of the stored data in the uncompressed stream.
        offset: u64,
    },
}

/// Opens an entry's content. A cached file that is missing or has the wrong size is
/// an `Io` error (`NotFound` / `InvalidData`): unpack the layer again.
pub fn open_content(cache: &CacheDir, entry: &Entry) -> Result<Content, LayerError> {
    if entry.kind != EntryKind::File {
        return Err(LayerError::NoContent("not a regular file".to_string()));
    }
    match entry.content {
        ContentRef::None => Err(LayerError::NoContent(
            "entry has no content ref".to_string(),
        )),
        ContentRef::StreamOffset(offset) => Ok(Content::InStream { offset }),
        ContentRef::Cached(id) => {
            let path = cache.content_path(&id);
            let file = File::open(&path)?;
            if file.metadata()?.len() != entry.size {
                return Err(LayerError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cached content {} has the wrong size", path.display()),
                )));
            }
            Ok(Content::Cached { file, path })
        }
    }
}

/// Copies one file's content out of the uncompressed layer stream (read from its
/// start) into `out`, holes of sparse files as zeros. The entry must come from an
/// index with [`ContentRef::StreamOffset`] refs. Returns the bytes written.
pub fn extract_entry(
    mut uncompressed: impl Read,
    entry: &Entry,
    out: &mut dyn Write,
) -> Result<u64, LayerError> {
    let ContentRef::StreamOffset(offset) = entry.content else {
        return Err(LayerError::NoContent(
            "entry has no stream offset".to_string(),
        ));
    };
    let skipped = io::copy(&mut (&mut uncompressed).take(offset), &mut io::sink())?;
    if skipped < offset {
        return Err(LayerError::Truncated {
            offset: skipped,
            what: "layer before an entry",
        });
    }
    let stored = entry.stored_size();
    let mut data = (&mut uncompressed).take(stored);
    let copied = match &entry.sparse {
        None => io::copy(&mut data, out),
        Some(chunks) => io::copy(&mut SparseReader::new(data, chunks, entry.size), out),
    };
    let copied = match copied {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e.into()),
    };
    if copied != entry.size {
        return Err(LayerError::Truncated {
            offset: offset + copied,
            what: "entry data",
        });
    }
    Ok(copied)
}
