//! The encoding of a [`GzipIndex`]: one file in the store's cache, and the blob of a
//! registry artifact. Self-describing (which blob, which uncompressed stream,
//! sizes, span count) so that it can be checked against the layer it claims.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "IMGFSZRN"
//! 8       4     format version (u32 LE), currently 1
//! 12      4     flags, 0
//! 16      8     payload length N (u64 LE)
//! 24      N     payload (below)
//! 24+N    32    sha256 of bytes 0..24+N
//! ```
//! Payload, integers little-endian: layer digest (32 bytes, the blob's sha256),
//! diff_id (32), compressed size (u64), uncompressed size (u64), checkpoint count
//! (u64), then per checkpoint: compressed offset (u64), uncompressed offset (u64),
//! bits (u8), window length (u32) + window (a zstd frame of at most 32 KiB, or
//! nothing), span sha256 (32).
//!
//! [`GzipIndex::from_bytes`] refuses anything not exactly valid: bad magic,
//! version, length or checksum, counts larger than the bytes left, checkpoints out
//! of order or outside the sizes, trailing bytes. It allocates nothing from a count
//! before checking it against the bytes that remain.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::digest::{DiffId, Digest};

use super::{Checkpoint, GzipIndex, ZranError};
use crate::layer::format::{Reader, Truncated};

impl From<Truncated> for ZranError {
    fn from(_: Truncated) -> Self {
        corrupt("truncated record")
    }
}

const MAGIC: &[u8; 8] = b"IMGFSZRN";
/// The encoding's version; a file of another version is refused (rebuild it).
pub const FORMAT_VERSION: u32 = 1;
/// The media type of an encoded index (as a blob of a registry artifact).
pub const MEDIA_TYPE: &str = "application/vnd.imagefs.gzip-index.v1";
const HEADER_LEN: usize = 24;
const CHECKSUM_LEN: usize = 32;
/// Smallest encoded checkpoint: offsets, bits, window length, digest.
const MIN_CHECKPOINT: usize = 8 + 8 + 1 + 4 + 32;
/// Largest accepted compressed window: a zstd frame of 32 KiB of incompressible
/// bytes is a little over 32 KiB.
pub(super) const MAX_WINDOW_ENCODED: usize = 34 * 1024;

fn corrupt(why: impl Into<String>) -> ZranError {
    ZranError::Corrupt(why.into())
}

impl GzipIndex {
    /// Encodes the index.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN
                + 120
                + self.checkpoints.len() * MIN_CHECKPOINT
                + self.window_bytes() as usize,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // payload length, patched below
        out.extend_from_slice(self.layer.as_bytes());
        out.extend_from_slice(self.diff_id.0.as_bytes());
        out.extend_from_slice(&self.compressed_size.to_le_bytes());
        out.extend_from_slice(&self.uncompressed_size.to_le_bytes());
        out.extend_from_slice(&(self.checkpoints.len() as u64).to_le_bytes());
        for checkpoint in &self.checkpoints {
            out.extend_from_slice(&checkpoint.compressed_offset.to_le_bytes());
            out.extend_from_slice(&checkpoint.uncompressed_offset.to_le_bytes());
            out.push(checkpoint.bits);
            out.extend_from_slice(&(checkpoint.window.len() as u32).to_le_bytes());
            out.extend_from_slice(&checkpoint.window);
            out.extend_from_slice(&checkpoint.span_sha256);
        }
        let payload_len = (out.len() - HEADER_LEN) as u64;
        out[16..24].copy_from_slice(&payload_len.to_le_bytes());
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Decodes an index, refusing anything that is not exactly a valid one.
    pub fn from_bytes(bytes: &[u8]) -> Result<GzipIndex, ZranError> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN || &bytes[..8] != MAGIC {
            return Err(corrupt("not an imagefs gzip index"));
        }
        let mut header = Reader::new(&bytes[8..HEADER_LEN]);
        let version = header.u32()?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, expected {FORMAT_VERSION}"
            )));
        }
        if header.u32()? != 0 {
            return Err(corrupt("unknown flags"));
        }
        let payload_len = header.u64()?;
        if Some(bytes.len() as u64) != payload_len.checked_add((HEADER_LEN + CHECKSUM_LEN) as u64) {
            return Err(corrupt("length does not match (half-written file?)"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut reader = Reader::new(&body[HEADER_LEN..]);
        let layer = Digest::from_bytes(reader.array()?);
        let diff_id = DiffId(Digest::from_bytes(reader.array()?));
        let compressed_size = reader.u64()?;
        let uncompressed_size = reader.u64()?;
        let count = usize::try_from(reader.u64()?).map_err(|_| corrupt("bad count"))?;
        if count.saturating_mul(MIN_CHECKPOINT) > reader.rest().len() {
            return Err(corrupt("checkpoint count larger than the file"));
        }
        let mut checkpoints = Vec::with_capacity(count);
        for _ in 0..count {
            let compressed_offset = reader.u64()?;
            let uncompressed_offset = reader.u64()?;
            let bits = reader.u8()?;
            let window_len = reader.u32()? as usize;
            if window_len > MAX_WINDOW_ENCODED {
                return Err(corrupt("window too large"));
            }
            let window = reader.take(window_len)?.into();
            let span_sha256 = reader.array()?;
            checkpoints.push(Checkpoint {
                compressed_offset,
                bits,
                uncompressed_offset,
                window,
                span_sha256,
            });
        }
        if !reader.rest().is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let index = GzipIndex {
            layer,
            diff_id,
            compressed_size,
            uncompressed_size,
            checkpoints,
        };
        index.validate()?;
        Ok(index)
    }

    /// Checks what must hold of any index, built or decoded: at least one
    /// checkpoint, the first at uncompressed offset 0 without a window, positions
    /// strictly increasing (in bits) and inside the sizes.
    pub(super) fn validate(&self) -> Result<(), ZranError> {
        let first = self
            .checkpoints
            .first()
            .ok_or_else(|| corrupt("no checkpoints"))?;
        if first.uncompressed_offset != 0 || first.bits != 0 || !first.window.is_empty() {
            return Err(corrupt(
                "the first checkpoint is not at the start of the stream",
            ));
        }
        let mut previous_bit: Option<u64> = None;
        let mut previous_out = 0u64;
        for (position, checkpoint) in self.checkpoints.iter().enumerate() {
            let bad = |why: &str| corrupt(format!("checkpoint {position}: {why}"));
            if checkpoint.bits > 7 {
                return Err(bad("bit count above 7"));
            }
            if checkpoint.bits > 0 && checkpoint.compressed_offset == 0 {
                return Err(bad("bits before the first byte"));
            }
            if checkpoint.compressed_offset > self.compressed_size {
                return Err(bad("past the end of the blob"));
            }
            if checkpoint.uncompressed_offset > self.uncompressed_size
                || checkpoint.uncompressed_offset < previous_out
            {
                return Err(bad("uncompressed offset out of order"));
            }
            if checkpoint.window.len() > MAX_WINDOW_ENCODED {
                return Err(bad("window too large"));
            }
            let bit = checkpoint
                .compressed_offset
                .checked_mul(8)
                .ok_or_else(|| bad("offset overflows"))?
                - u64::from(checkpoint.bits);
            if previous_bit.is_some_and(|previous| bit <= previous) {
                return Err(bad("compressed offset out of order"));
            }
            previous_bit = Some(bit);
            previous_out = checkpoint.uncompressed_offset;
        }
        Ok(())
    }

    /// Writes the index to `path` atomically: a temp file in the same directory,
    /// synced, then renamed over `path`.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(&self.to_bytes())?;
        temp.as_file().sync_data()?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Reads an index written by [`GzipIndex::write_to`].
    pub fn read_from(path: &Path) -> Result<GzipIndex, ZranError> {
        GzipIndex::from_bytes(&std::fs::read(path)?)
    }
}
