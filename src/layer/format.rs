//! The on-disk form of a [`LayerIndex`]: one file, written atomically, checked on load.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "IMGFSLIX"
//! 8       4     format version (u32 LE), currently 1
//! 12      4     reserved, 0
//! 16      8     payload length N (u64 LE)
//! 24      N     payload (below)
//! 24+N    32    sha256 of bytes 0..24+N
//! ```
//! Payload, all integers little-endian, byte strings as `u32 length + bytes`:
//! diff_id (32), uncompressed_size (u64), entry count (u64), entries, warning count
//! (u64), warnings. An entry is: kind (u8), mode, uid, gid (u32), mtime (i64),
//! mtime_nsec (u32), size (u64), dev_major, dev_minor (u32), path, link target (u8
//! present + bytes), xattr count (u32) + name/value pairs, sparse chunk count (u32,
//! `u32::MAX` for not sparse) + (offset, len) u64 pairs, content (u8 tag + u64 offset
//! or 32-byte digest).
//!
//! A file that is short, has a wrong magic, version, length or checksum, or does not
//! decode exactly, is reported as [`LayerError::CorruptIndex`] so the caller rebuilds
//! it. Every count is checked against the bytes that remain before anything is
//! allocated for it.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::digest::{DiffId, Digest};

use super::entry::{SparseChunk, Xattr};
use super::index::{ContentId, ContentRef, Entry, EntryKind, IndexWarning, LayerIndex};
use super::LayerError;

const MAGIC: &[u8; 8] = b"IMGFSLIX";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const CHECKSUM_LEN: usize = 32;

impl LayerIndex {
    /// Encodes the index in its on-disk form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION);
        put_u32(&mut out, 0);
        put_u64(&mut out, 0); // payload length, patched below
        out.extend_from_slice(self.diff_id.0.as_bytes());
        put_u64(&mut out, self.uncompressed_size);
        put_u64(&mut out, self.entries.len() as u64);
        for entry in &self.entries {
            encode_entry(&mut out, entry);
        }
        put_u64(&mut out, self.warnings.len() as u64);
        for warning in &self.warnings {
            put_u64(&mut out, warning.header_offset);
            put_bytes(&mut out, &warning.path);
            put_bytes(&mut out, warning.reason.as_bytes());
        }
        let payload_len = (out.len() - HEADER_LEN) as u64;
        out[16..24].copy_from_slice(&payload_len.to_le_bytes());
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Decodes an index from its on-disk form, refusing anything not exactly valid.
    pub fn from_bytes(bytes: &[u8]) -> Result<LayerIndex, LayerError> {
        let corrupt = |why: &str| LayerError::CorruptIndex(why.to_string());
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN || &bytes[..8] != MAGIC {
            return Err(corrupt("not an imagefs layer index"));
        }
        let mut header = Reader::new(&bytes[8..HEADER_LEN]);
        let version = header.u32()?;
        if version != VERSION {
            return Err(LayerError::CorruptIndex(format!(
                "format version {version}, expected {VERSION}"
            )));
        }
        header.u32()?;
        let payload_len = header.u64()?;
        if Some(bytes.len() as u64) != payload_len.checked_add((HEADER_LEN + CHECKSUM_LEN) as u64) {
            return Err(corrupt("length does not match (half-written file?)"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut reader = Reader::new(&body[HEADER_LEN..]);
        let diff_id = DiffId(
            Digest::from_hex(&hex::encode(reader.array::<32>()?))
                .map_err(|_| corrupt("bad diff_id"))?,
        );
        let uncompressed_size = reader.u64()?;
        let count = reader.count(40)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(decode_entry(&mut reader)?);
        }
        let count = reader.count(16)?;
        let mut warnings = Vec::with_capacity(count);
        for _ in 0..count {
            warnings.push(IndexWarning {
                header_offset: reader.u64()?,
                path: reader.bytes()?.into(),
                reason: String::from_utf8_lossy(reader.bytes()?).into_owned(),
            });
        }
        if !reader.rest().is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(LayerIndex {
            diff_id,
            uncompressed_size,
            entries,
            warnings,
        })
    }

    /// Writes the index to `path` atomically: a temp file in the same directory,
    /// synced, then renamed over `path`.
    pub fn write_to(&self, path: &Path) -> Result<(), LayerError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(&self.to_bytes())?;
        temp.as_file().sync_data()?;
        temp.persist(path).map_err(|e| LayerError::Io(e.error))?;
        Ok(())
    }

    /// Reads an index written by [`LayerIndex::write_to`]. A corrupt or half-written
    /// file gives [`LayerError::CorruptIndex`]: rebuild it from the layer blob.
    pub fn read_from(path: &Path) -> Result<LayerIndex, LayerError> {
        LayerIndex::from_bytes(&fs::read(path)?)
    }
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    out.push(match entry.kind {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
        EntryKind::Hardlink => 3,
        EntryKind::CharDevice => 4,
        EntryKind::BlockDevice => 5,
        EntryKind::Fifo => 6,
    });
    put_u32(out, entry.mode);
    put_u32(out, entry.uid);
    put_u32(out, entry.gid);
    out.extend_from_slice(&entry.mtime.to_le_bytes());
    put_u32(out, entry.mtime_nsec);
    put_u64(out, entry.size);
    put_u32(out, entry.dev_major);
    put_u32(out, entry.dev_minor);
    put_bytes(out, &entry.path);
    match &entry.link_target {
        Some(target) => {
            out.push(1);
            put_bytes(out, target);
        }
        None => out.push(0),
    }
    put_u32(out, entry.xattrs.len() as u32);
    for xattr in entry.xattrs.iter() {
        put_bytes(out, &xattr.name);
        put_bytes(out, &xattr.value);
    }
    match &entry.sparse {
        Some(chunks) => {
            put_u32(out, chunks.len() as u32);
            for chunk in chunks.iter() {
                put_u64(out, chunk.offset);
                put_u64(out, chunk.len);
            }
        }
        None => put_u32(out, u32::MAX),
    }
    match entry.content {
        ContentRef::None => out.push(0),
        ContentRef::StreamOffset(offset) => {
            out.push(1);
            put_u64(out, offset);
        }
        ContentRef::Cached(digest) => {
            out.push(2);
            out.extend_from_slice(&digest.0);
        }
    }
}

fn decode_entry(reader: &mut Reader<'_>) -> Result<Entry, LayerError> {
    let kind = match reader.u8()? {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::Hardlink,
        4 => EntryKind::CharDevice,
        5 => EntryKind::BlockDevice,
        6 => EntryKind::Fifo,
        _ => return Err(LayerError::CorruptIndex("bad entry kind".to_string())),
    };
    let mode = reader.u32()?;
    let uid = reader.u32()?;
    let gid = reader.u32()?;
    let mtime = i64::from_le_bytes(reader.array::<8>()?);
    let mtime_nsec = reader.u32()?;
    let size = reader.u64()?;
    let dev_major = reader.u32()?;
    let dev_minor = reader.u32()?;
    let path = reader.bytes()?.into();
    let link_target = match reader.u8()? {
        0 => None,
        _ => Some(reader.bytes()?.into()),
    };
    let xattr_count = reader.u32()? as usize;
    reader.check_room(xattr_count, 8)?;
    let mut xattrs = Vec::with_capacity(xattr_count);
    for _ in 0..xattr_count {
        xattrs.push(Xattr {
            name: reader.bytes()?.into(),
            value: reader.bytes()?.into(),
        });
    }
    let sparse = match reader.u32()? {
        u32::MAX => None,
        count => {
            reader.check_room(count as usize, 16)?;
            let mut chunks = Vec::with_capacity(count as usize);
            for _ in 0..count {
                chunks.push(SparseChunk {
                    offset: reader.u64()?,
                    len: reader.u64()?,
                });
            }
            Some(chunks.into_boxed_slice())
        }
    };
    let content = match reader.u8()? {
        0 => ContentRef::None,
        1 => ContentRef::StreamOffset(reader.u64()?),
        2 => ContentRef::Cached(ContentId(reader.array::<32>()?)),
        _ => return Err(LayerError::CorruptIndex("bad content tag".to_string())),
    };
    Ok(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
        mtime_nsec,
        size,
        link_target,
        dev_major,
        dev_minor,
        xattrs: xattrs.into_boxed_slice(),
        sparse,
        content,
    })
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// A record cut short: the bytes ended inside it.
#[derive(Debug)]
pub(crate) struct Truncated;

impl From<Truncated> for LayerError {
    fn from(_: Truncated) -> Self {
        LayerError::CorruptIndex("truncated record".to_string())
    }
}

/// Reads little-endian fields off a byte slice: the layer index's encoding here,
/// and the seekable index's (`zran::format`).
pub(crate) struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    /// A reader of `bytes` from their start.
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Reader { bytes }
    }
    /// What is left to read.
    pub(crate) fn rest(&self) -> &'b [u8] {
        self.bytes
    }
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'b [u8], Truncated> {
        if self.bytes.len() < n {
            return Err(Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A little-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'b [u8], LayerError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?)
    }
    /// A count of records of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, LayerError> {
        let count = usize::try_from(self.u64()?)
            .map_err(|_| LayerError::CorruptIndex("bad count".to_string()))?;
        self.check_room(count, min_size)?;
        Ok(count)
    }
    fn check_room(&self, count: usize, min_size: usize) -> Result<(), LayerError> {
        if count.saturating_mul(min_size) > self.bytes.len() {
            return Err(LayerError::CorruptIndex(
                "count larger than the file".to_string(),
            ));
        }
        Ok(())
    }
}
