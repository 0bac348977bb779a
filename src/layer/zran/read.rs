//! Serving a byte range of a gzip layer's uncompressed stream through its index,
//! from compressed bytes that come from anywhere ([`RangeSource`]).
//!
//! A read finds the checkpoint at or before its start, fetches the compressed
//! bytes of every span it needs as one range (a ranged GET costs about the same
//! whatever its size; [`MAX_FETCH`] bounds one fetch), checks each span against its
//! sha256, resumes inflate at the checkpoint's bit with its window, discards up to
//! the start and stops at the end. Members are crossed as the import's decoder
//! crosses them.

use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use sha2::{Digest as _, Sha256};

use crate::layer::{ContentRef, Entry, EntryKind, LayerError, LayerIndex};

use super::inflate::{Flush, Inflater, GZIP, RAW, WINDOW};
use super::{GzipIndex, ZranError};

/// Most compressed bytes fetched as one range; a longer read fetches in parts.
pub const MAX_FETCH: u64 = 32 << 20;
/// Output buffer of the inflater (and the most given to the caller at once).
const OUT_CHUNK: usize = 256 * 1024;

/// Where compressed bytes come from: the blob file in the store, or (for a lazy
/// layer) ranges fetched from a registry and kept in the cache. Shared by readers
/// on several threads, so `&self`.
pub trait RangeSource {
    /// Exactly `len` bytes of the compressed blob at `offset`; fewer is an error.
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
}

impl RangeSource for std::fs::File {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("range too large"))?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl RangeSource for [u8] {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.len() => Ok(self[start..end].to_vec()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "range past the end of the blob",
            )),
        }
    }
}

impl RangeSource for Vec<u8> {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        self.as_slice().read_range(offset, len)
    }
}

impl<T: RangeSource + ?Sized> RangeSource for &T {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        (**self).read_range(offset, len)
    }
}

impl GzipIndex {
    /// Checks the compressed bytes of spans `spans` (`compressed` starts at
    /// [`GzipIndex::compressed_range`]`(spans).start`) against their digests.
    pub fn verify_spans(&self, spans: Range<usize>, compressed: &[u8]) -> Result<(), ZranError> {
        let whole = self
            .compressed_range(spans.clone())
            .ok_or_else(|| ZranError::Inflate(format!("no spans {spans:?} in the index")))?;
        if compressed.len() as u64 != whole.end - whole.start {
            return Err(ZranError::Inflate(format!(
                "{} compressed bytes given for spans {spans:?}, which hold {}",
                compressed.len(),
                whole.end - whole.start
            )));
        }
        for index in spans {
            let span = self.span(index).expect("inside the range checked above");
            let at = (span.compressed.start - whole.start) as usize;
            let bytes =
                &compressed[at..at + (span.compressed.end - span.compressed.start) as usize];
            if Sha256::digest(bytes).as_slice() != span.sha256 {
                return Err(ZranError::SpanDigest {
                    span: index,
                    offset: span.compressed.start,
                    len: span.compressed.end - span.compressed.start,
                });
            }
        }
        Ok(())
    }

    /// Inflates uncompressed bytes `range` from the compressed bytes of `spans`
    /// (as [`GzipIndex::spans_for`] gives them; `compressed` as for
    /// [`GzipIndex::verify_spans`], which this calls first), handing them to `out`
    /// in order, in pieces of at most 256 KiB.
    pub fn decode_spans(
        &self,
        spans: Range<usize>,
        compressed: &[u8],
        range: Range<u64>,
        out: &mut dyn FnMut(&[u8]) -> Result<(), ZranError>,
    ) -> Result<(), ZranError> {
        self.verify_spans(spans.clone(), compressed)?;
        let base = self
            .compressed_range(spans.clone())
            .expect("verified above")
            .start;
        let checkpoint = &self.checkpoints[spans.start];
        let inflate_error = |e: String| ZranError::Inflate(e);
        let mut inflater = Inflater::new(RAW).map_err(inflate_error)?;
        let mut pos = (checkpoint.compressed_offset - base) as usize;
        if checkpoint.bits > 0 {
            let byte = compressed[pos - 1];
            inflater
                .prime(checkpoint.bits, byte >> (8 - checkpoint.bits))
                .map_err(inflate_error)?;
        }
        if !checkpoint.window.is_empty() {
            let window = zstd::bulk::decompress(&checkpoint.window, WINDOW)
                .map_err(|e| ZranError::Corrupt(format!("window of span {}: {e}", spans.start)))?;
            inflater.set_dictionary(&window).map_err(inflate_error)?;
        }
        let mut position = checkpoint.uncompressed_offset;
        if range.start < position {
            return Err(ZranError::Inflate(format!(
                "span {} starts at {position}, after {}",
                spans.start, range.start
            )));
        }
        let mut buf = vec![0u8; OUT_CHUNK];
        // Raw deflate from the checkpoint to the end of its member; later members
        // are inflated whole, gzip header and trailer checked.
        let mut whole_members = false;
        while position < range.end {
            if pos >= compressed.len() {
                return Err(ZranError::Inflate(format!(
                    "the index does not fit the blob: its spans end at uncompressed byte {position}, before {}",
                    range.end
                )));
            }
            let want = if position < range.start {
                range.start - position
            } else {
                range.end - position
            };
            let room = (want.min(OUT_CHUNK as u64)) as usize;
            let step = inflater
                .inflate(&compressed[pos..], &mut buf[..room], Flush::None)
                .map_err(|e| {
                    ZranError::Inflate(format!("at compressed byte {}: {e}", base + pos as u64))
                })?;
            pos += step.consumed;
            if position >= range.start && step.produced > 0 {
                out(&buf[..step.produced])?;
            }
            position += step.produced as u64;
            if step.stream_end {
                // The member ended. In raw mode (the first one) its 8-byte trailer
                // follows; then the next member, header and all, in gzip mode.
                if !whole_members {
                    pos = pos.saturating_add(8);
                }
                if pos >= compressed.len() {
                    continue; // reported above if more output was wanted
                }
                inflater.reset(GZIP).map_err(inflate_error)?;
                whole_members = true;
            } else if step.consumed == 0 && step.produced == 0 {
                return Err(ZranError::Inflate(format!(
                    "no progress at compressed byte {}",
                    base + pos as u64
                )));
            }
        }
        Ok(())
    }

    /// Calls `out` with uncompressed bytes `range` in order, fetching from `source`
    /// one range of compressed bytes per [`MAX_FETCH`] (adjacent spans merged).
    pub fn read_with(
        &self,
        source: &dyn RangeSource,
        range: Range<u64>,
        out: &mut dyn FnMut(&[u8]) -> Result<(), ZranError>,
    ) -> Result<(), ZranError> {
        if range.start == range.end && range.end <= self.uncompressed_size {
            return Ok(());
        }
        let spans = self.spans_for(range.clone())?;
        let mut first = spans.start;
        while first < spans.end {
            // Take spans while the fetch stays under MAX_FETCH (at least one).
            let start = self.span(first).expect("in range").compressed.start;
            let mut last = first + 1;
            while last < spans.end
                && self.span(last).expect("in range").compressed.end - start <= MAX_FETCH
            {
                last += 1;
            }
            let group = first..last;
            let compressed = self.compressed_range(group.clone()).expect("in range");
            let len = compressed.end - compressed.start;
            let bytes =
                source
                    .read_range(compressed.start, len)
                    .map_err(|source| ZranError::Source {
                        offset: compressed.start,
                        len,
                        source,
                    })?;
            if bytes.len() as u64 != len {
                return Err(ZranError::Source {
                    offset: compressed.start,
                    len,
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "short range"),
                });
            }
            let group_end = self.span(last - 1).expect("in range").uncompressed.end;
            let part = range.start.max(self.checkpoints[first].uncompressed_offset)
                ..range.end.min(group_end);
            if part.start < part.end {
                self.decode_spans(group, &bytes, part, out)?;
            }
            first = last;
        }
        Ok(())
    }

    /// Uncompressed bytes `range` (inside the stream) as one buffer.
    pub fn read(&self, source: &dyn RangeSource, range: Range<u64>) -> Result<Vec<u8>, ZranError> {
        let capacity = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0);
        let mut data = Vec::with_capacity(capacity.min(64 << 20));
        self.read_with(source, range, &mut |bytes| {
            data.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(data)
    }

    /// Writes uncompressed bytes `range` to `out`; returns the bytes written.
    pub fn copy_to(
        &self,
        source: &dyn RangeSource,
        range: Range<u64>,
        out: &mut dyn Write,
    ) -> Result<u64, ZranError> {
        let mut written = 0u64;
        self.read_with(source, range, &mut |bytes| {
            out.write_all(bytes).map_err(|source| ZranError::Source {
                offset: written,
                len: bytes.len() as u64,
                source,
            })?;
            written += bytes.len() as u64;
            Ok(())
        })?;
        Ok(written)
    }
}

/// A piece of a file's content: a hole (sparse files) or a range of the layer's
/// uncompressed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPiece {
    /// This many zero bytes.
    Hole(u64),
    /// These bytes of the uncompressed stream.
    Stream(Range<u64>),
}

/// Where bytes `range` of the content of entry `entry` of `index` (a stream index:
/// [`ContentRef::StreamOffset`]) lie in the layer's uncompressed stream, in order.
/// A hard link is followed to the regular file it names in the same layer (the
/// last one of that path before it); holes of sparse files are [`DataPiece::Hole`].
/// `range` is clamped to the file's size.
pub fn entry_data(
    index: &LayerIndex,
    entry: usize,
    range: Range<u64>,
) -> Result<Vec<DataPiece>, LayerError> {
    let file = data_entry(index, entry)?;
    let ContentRef::StreamOffset(offset) = file.content else {
        return Err(LayerError::NoContent(format!(
            "entry {entry} has no offset in the stream"
        )));
    };
    let end = range.end.min(file.size);
    let start = range.start.min(end);
    let mut pieces = Vec::new();
    match &file.sparse {
        None => {
            if start < end {
                pieces.push(DataPiece::Stream(offset + start..offset + end));
            }
        }
        Some(chunks) => {
            // Segments are stored one after another; gaps between them are holes.
            let mut stored = offset;
            let mut logical = start;
            for chunk in chunks.iter() {
                let chunk_end = chunk.offset.saturating_add(chunk.len);
                if chunk_end <= logical {
                    stored += chunk.len;
                    continue;
                }
                if logical >= end {
                    break;
                }
                if chunk.offset > logical {
                    let hole_end = chunk.offset.min(end);
                    pieces.push(DataPiece::Hole(hole_end - logical));
                    logical = hole_end;
                    if logical >= end {
                        break;
                    }
                }
                let piece_end = chunk_end.min(end);
                let skip = logical - chunk.offset;
                pieces.push(DataPiece::Stream(
                    stored + skip..stored + skip + (piece_end - logical),
                ));
                logical = piece_end;
                stored += chunk.len;
            }
            if logical < end {
                pieces.push(DataPiece::Hole(end - logical));
            }
        }
    }
    Ok(pieces)
}

/// The regular file whose data entry `entry` shows: itself, or the target of a
/// hard link (followed through links, a bounded number of times).
fn data_entry(index: &LayerIndex, entry: usize) -> Result<&Entry, LayerError> {
    let mut position = entry;
    for _ in 0..64 {
        let current = index
            .entries
            .get(position)
            .ok_or_else(|| LayerError::NoContent(format!("no entry {position}")))?;
        match current.kind {
            EntryKind::File => return Ok(current),
            EntryKind::Hardlink => {
                let target = current.link_target.as_deref().unwrap_or_default();
                position = index.entries[..position]
                    .iter()
                    .rposition(|e| &*e.path == target)
                    .ok_or_else(|| {
                        LayerError::NoContent(format!(
                            "hard link {} names {} outside this layer",
                            String::from_utf8_lossy(&current.path),
                            String::from_utf8_lossy(target)
                        ))
                    })?;
            }
            _ => {
                return Err(LayerError::NoContent(format!(
                    "entry {position} is not a regular file"
                )))
            }
        }
    }
    Err(LayerError::NoContent("hard links loop".to_string()))
}
