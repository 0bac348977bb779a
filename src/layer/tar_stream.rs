//! A streaming tar header reader: ustar, GNU (long names, old sparse) and PAX (local
//! records, sparse 0.0/0.1/1.0), reading each byte once through a hasher.
//!
//! `tar::Header` is used only to decode the fields of one 512-byte block; the stream
//! itself is driven here so that every allocation is bounded by [`Limits`], offsets of
//! entry data are exact, and everything after the last entry is still hashed (the
//! DiffId covers the whole uncompressed stream).
//!
//! The end of a stream is read as Go's `archive/tar` reads it (umoci, containerd,
//! Docker and skopeo use it), since a layer those tools accept must import:
//!
//! | the stream ends...                                   | Go, umoci | here   |
//! |------------------------------------------------------|-----------|--------|
//! | right after the last entry's data, or in its padding | end       | end    |
//! | after the padding (no end-of-archive block)          | end       | end    |
//! | after one zero block                                 | end       | end    |
//! | inside the block after one zero block                | EOF error | truncated |
//! | after two zero blocks (anything may follow; hashed)  | end       | end    |
//! | a zero block, then a block that is not zero          | bad header | bad header |
//! | right after an extension header (or in its padding)  | end       | end    |
//! | inside a header or an extension header's data        | EOF error | truncated |
//! | inside an entry's data                               | EOF error | truncated |
//!
//! (Go reads the padding with `tryReadFull`, which reports a short read as a clean
//! EOF; headers with `io.ReadFull`, where a short read is `ErrUnexpectedEOF`.)
//!
//! This module owns the byte-level reading of one tar stream; it knows nothing of
//! paths' meaning, whiteouts, the cache or the store.

use std::io::{self, Read};

use crate::digest::{Digest, HashingReader};

use super::entry::{Limits, SparseChunk, Xattr};
use super::LayerError;

const BLOCK: u64 = 512;

/// One tar entry's header with all extensions applied; its data follows in the stream.
#[derive(Debug, Default)]
pub(crate) struct RawEntry {
    /// Offset of the (first) header of this entry in the uncompressed stream.
    pub header_offset: u64,
    /// The tar type flag of the real header (after `x`/`L`/`K` prefixes).
    pub typeflag: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// The file's logical size (real size for sparse files).
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<Xattr>,
    /// Data segments of a sparse file (holes are the gaps).
    pub sparse: Option<Vec<SparseChunk>>,
    /// A reason why this entry cannot be used (it is skipped with a warning).
    pub skip: Option<String>,
    /// Non-fatal problems (e.g. a dropped oversized xattr).
    pub warnings: Vec<String>,
}

/// Extension records that apply to the next real header.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    dev_major: Option<u32>,
    dev_minor: Option<u32>,
    xattrs: Vec<Xattr>,
    sparse_major: Option<u64>,
    sparse_minor: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    sparse_map: Option<Vec<u64>>,
    skip: Option<String>,
    warnings: Vec<String>,
}

/// Reads a tar stream header by header.
pub(crate) struct TarStream<'l, R> {
    inner: HashingReader<R>,
    limits: &'l Limits,
    /// Bytes of the current entry's data not yet consumed.
    data_left: u64,
    /// Padding after the current entry's data.
    padding: u64,
    ended: bool,
}

impl<'l, R: Read> TarStream<'l, R> {
    pub fn new(reader: R, limits: &'l Limits) -> Self {
        TarStream {
            inner: HashingReader::new(reader),
            limits,
            data_left: 0,
            padding: 0,
            ended: false,
        }
    }

    /// Current offset in the uncompressed stream.
    pub fn position(&self) -> u64 {
        self.inner.bytes_read()
    }

    /// Reads the rest of the stream and returns its digest and total length.
    pub fn finish(mut self) -> Result<(Digest, u64), LayerError> {
        self.skip_entry_rest()?;
        io::copy(&mut self.inner, &mut io::sink())?;
        Ok(self.inner.finish())
    }

    /// Reads exactly one block; `Ok(false)` on a clean EOF before its first byte.
    fn read_block(
        &mut self,
        block: &mut [u8; 512],
        what: &'static str,
    ) -> Result<bool, LayerError> {
        let start = self.position();
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 {
            return Ok(false);
        }
        if filled < block.len() {
            return Err(LayerError::Truncated {
                offset: start + filled as u64,
                what,
            });
        }
        Ok(true)
    }

    /// Reads `len` bytes of an extension header's data, keeping at most `keep` of them
    /// (the rest is read and dropped, so a huge header costs time, not memory).
    fn read_ext_data(&mut self, len: u64, keep: u64) -> Result<Option<Vec<u8>>, LayerError> {
        let start = self.position();
        let mut kept = Vec::new();
        let mut limited = (&mut self.inner).take(keep.min(len));
        limited.read_to_end(&mut kept)?;
        let dropped = len - kept.len() as u64;
        let skipped = io::copy(&mut (&mut self.inner).take(dropped), &mut io::sink())?;
        if kept.len() as u64 + skipped < len {
            return Err(LayerError::Truncated {
                offset: start + kept.len() as u64 + skipped,
                what: "extension header data",
            });
        }
        self.skip_padding(padding_for(len))?;
        Ok((dropped == 0).then_some(kept))
    }

    fn skip_exact(&mut self, len: u64, what: &'static str) -> Result<(), LayerError> {
        let start = self.position();
        let skipped = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        if skipped < len {
            return Err(LayerError::Truncated {
                offset: start + skipped,
                what,
            });
        }
        Ok(())
    }

    /// Skips the padding after an entry's data. A stream that ends inside it (or
    /// right before it) has ended: Go's reader takes that as the end of the archive,
    /// and umoci 0.4.7 `insert` writes such layers.
    fn skip_padding(&mut self, len: u64) -> Result<(), LayerError> {
        let skipped = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        if skipped < len {
            self.ended = true;
        }
        Ok(())
    }

    /// Skips whatever is left of the current entry's data and padding.
    pub fn skip_entry_rest(&mut self) -> Result<(), LayerError> {
        let (data, padding) = (self.data_left, self.padding);
        self.data_left = 0;
        self.padding = 0;
        self.skip_exact(data, "entry data")?;
        self.skip_padding(padding)
    }

    /// A reader over the current entry's remaining stored data.
    pub fn data(&mut self) -> EntryData<'_, 'l, R> {
        EntryData { stream: self }
    }

    /// Advances to the next entry, skipping the rest of the current one. `Ok(None)` at
    /// the end of the archive as Go's reader finds it (see the module doc): the
    /// end-of-archive blocks, or a clean EOF between entries or inside the padding.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>, LayerError> {
        self.skip_entry_rest()?;
        let mut pending = Pending::default();
        let mut first_header: Option<u64> = None;
        loop {
            // A stream ending after an extension header ends the archive, the
            // extension applying to nothing (as in Go's reader).
            if self.ended {
                return Ok(None);
            }
            let header_offset = self.position();
            let mut block = [0u8; 512];
            if !self.read_block(&mut block, "header")? {
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.end_of_archive()?;
                return Ok(None);
            }
            let first = *first_header.get_or_insert(header_offset);
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(&block);
            verify_checksum(&header, header_offset)?;
            let bad = |why: String| LayerError::BadHeader {
                offset: header_offset,
                why,
            };
            let typeflag = block[156];
            let header_size = numeric(&block[124..136])
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad("size field is not a number".to_string()))?;
            match typeflag {
                b'x' => {
                    match self.read_ext_data(header_size, self.limits.max_pax_header)? {
                        Some(data) => parse_pax(&data, &mut pending, self.limits),
                        None => {
                            pending.skip = Some(format!(
                                "PAX header larger than {} bytes",
                                self.limits.max_pax_header
                            ))
                        }
                    }
                    continue;
                }
                // Global PAX headers only carry defaults for later entries; Go's
                // archive/tar (and so umoci) does not apply them either.
                b'g' => {
                    self.read_ext_data(header_size, 0)?;
                    continue;
                }
                b'L' | b'K' => {
                    let keep = self.limits.max_path_len as u64 + 1;
                    let name = self.read_ext_data(header_size, keep)?;
                    match name {
                        Some(mut name) => {
                            while name.last() == Some(&0) {
                                name.pop();
                            }
                            if typeflag == b'L' {
                                pending.path = Some(name);
                            } else {
                                pending.link = Some(name);
                            }
                        }
                        None => pending.skip = Some("GNU long name too long".to_string()),
                    }
                    continue;
                }
                _ => {}
            }
            return self
                .real_entry(&header, typeflag, header_size, first, pending)
                .map(Some);
        }
    }

    /// After a zero block: the end, unless the next block is not zero (Go: "invalid
    /// tar header") or is cut short. Whatever follows two zero blocks (padding to the
    /// record size, or junk that umoci ignores too) is still hashed by `finish`.
    fn end_of_archive(&mut self) -> Result<(), LayerError> {
        self.ended = true;
        let offset = self.position();
        let mut block = [0u8; 512];
        if self.read_block(&mut block, "end-of-archive block")? && block.iter().any(|&b| b != 0) {
            return Err(LayerError::BadHeader {
                offset,
                why: "a zero block followed by one that is not (not an end-of-archive marker)"
                    .to_string(),
            });
        }
        Ok(())
    }

    fn real_entry(
        &mut self,
        header: &tar::Header,
        typeflag: u8,
        header_size: u64,
        header_offset: u64,
        pending: Pending,
    ) -> Result<RawEntry, LayerError> {
        let mut entry = RawEntry {
            header_offset,
            typeflag,
            skip: pending.skip,
            warnings: pending.warnings,
            xattrs: pending.xattrs,
            ..RawEntry::default()
        };
        entry.path = match pending.path {
            Some(path) => path,
            None => header.path_bytes().into_owned(),
        };
        entry.link = match pending.link {
            Some(link) => link,
            None => header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        };
        let block = header.as_bytes();
        let field = |range: std::ops::Range<usize>, name: &str| {
            numeric(&block[range]).ok_or_else(|| format!("malformed {name} field"))
        };
        let mut fields = || -> Result<(), String> {
            entry.mode = (field(100..108, "mode")? & 0o7777) as u32;
            entry.uid = match pending.uid {
                Some(uid) => uid,
                None => u64::try_from(field(108..116, "uid")?).map_err(|_| "negative uid")?,
            };
            entry.gid = match pending.gid {
                Some(gid) => gid,
                None => u64::try_from(field(116..124, "gid")?).map_err(|_| "negative gid")?,
            };
            (entry.mtime, entry.mtime_nsec) = match pending.mtime {
                Some(mtime) => mtime,
                None => (
                    i64::try_from(field(136..148, "mtime")?).map_err(|_| "mtime out of range")?,
                    0,
                ),
            };
            if matches!(typeflag, b'3' | b'4') {
                let device = |range, name| {
                    field(range, name)
                        .and_then(|n| u32::try_from(n).map_err(|_| format!("{name} out of range")))
                };
                entry.dev_major = match pending.dev_major {
                    Some(major) => major,
                    None => device(329..337, "devmajor")?,
                };
                entry.dev_minor = match pending.dev_minor {
                    Some(minor) => minor,
                    None => device(337..345, "devminor")?,
                };
            }
            Ok(())
        };
        if let Err(why) = fields() {
            entry.skip.get_or_insert(why);
        }

        // Go's archive/tar (used by umoci) gives header-only types no data whatever
        // their size field says.
        let header_only = matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
        let stored = if header_only {
            0
        } else {
            pending.size.unwrap_or(header_size)
        };
        self.data_left = stored;
        self.padding = padding_for(stored);
        entry.size = stored;

        if typeflag == b'S' {
            self.gnu_sparse(header, &mut entry)?;
        } else if pending.sparse_major.is_some()
            || pending.sparse_map.is_some()
            || pending.sparse_realsize.is_some()
        {
            if let Some(name) = pending.sparse_name {
                entry.path = name;
            }
            let real_size = pending.sparse_realsize.unwrap_or(stored);
            let chunks = if pending.sparse_major == Some(1) {
                self.pax_sparse_map_from_data()?
            } else {
                pending
                    .sparse_map
                    .ok_or_else(|| "PAX sparse file without a map".to_string())
                    .and_then(|map| chunks_from_pairs(&map))
            };
            entry.size = real_size;
            match chunks.and_then(|c| validate_sparse(c, real_size, self.data_left, self.limits)) {
                Ok(chunks) => entry.sparse = Some(chunks),
                Err(why) => {
                    entry.skip.get_or_insert(why);
                }
            }
        }
        Ok(entry)
    }

    /// Old GNU sparse ('S'): map in the header and in extension blocks, real size in
    /// the header; the stored data is the concatenated segments.
    fn gnu_sparse(&mut self, header: &tar::Header, entry: &mut RawEntry) -> Result<(), LayerError> {
        let mut numbers = Vec::new();
        let mut problem: Option<String> = None;
        let Some(gnu) = header.as_gnu() else {
            entry
                .skip
                .get_or_insert("sparse entry without a GNU header".to_string());
            return Ok(());
        };
        let push = |sparse: &tar::GnuSparseHeader,
                    numbers: &mut Vec<u64>,
                    problem: &mut Option<String>| {
            if sparse.is_empty() {
                return;
            }
            match (sparse.offset(), sparse.length()) {
                (Ok(offset), Ok(length)) => numbers.extend([offset, length]),
                _ => *problem = Some("malformed sparse map".to_string()),
            }
        };
        for sparse in &gnu.sparse {
            push(sparse, &mut numbers, &mut problem);
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut block = [0u8; 512];
            if !self.read_block(&mut block, "sparse extension header")? {
                return Err(LayerError::Truncated {
                    offset: self.position(),
                    what: "sparse extension header",
                });
            }
            let mut ext = tar::GnuExtSparseHeader::new();
            ext.as_mut_bytes().copy_from_slice(&block);
            if numbers.len() / 2 <= self.limits.max_sparse_chunks {
                for sparse in ext.sparse() {
                    push(sparse, &mut numbers, &mut problem);
                }
            } else {
                problem = Some("too many sparse chunks".to_string());
            }
            extended = ext.is_extended();
        }
        let real_size = match gnu.real_size() {
            Ok(size) => size,
            Err(_) => {
                entry
                    .skip
                    .get_or_insert("malformed sparse real size".to_string());
                return Ok(());
            }
        };
        entry.size = real_size;
        entry.typeflag = b'0';
        let chunks = match problem {
            Some(why) => Err(why),
            None => chunks_from_pairs(&numbers),
        };
        match chunks.and_then(|c| validate_sparse(c, real_size, self.data_left, self.limits)) {
            Ok(chunks) => entry.sparse = Some(chunks),
            Err(why) => {
                entry.skip.get_or_insert(why);
            }
        }
        Ok(())
    }

    /// PAX sparse 1.0: the map is decimal text at the start of the data, padded to a
    /// block: count, then offset and length per chunk, one number per line.
    fn pax_sparse_map_from_data(&mut self) -> Result<Result<Vec<SparseChunk>, String>, LayerError> {
        let mut numbers: Vec<u64> = Vec::new();
        let mut wanted: Option<u64> = None;
        let mut current: Option<u64> = None;
        loop {
            if self.data_left < BLOCK {
                return Ok(Err("PAX sparse map runs past the entry data".to_string()));
            }
            let mut block = [0u8; 512];
            if !self.read_block(&mut block, "sparse map")? {
                return Err(LayerError::Truncated {
                    offset: self.position(),
                    what: "sparse map",
                });
            }
            self.data_left -= BLOCK;
            for &byte in &block {
                match byte {
                    b'0'..=b'9' => {
                        let digit = u64::from(byte - b'0');
                        let value = current
                            .unwrap_or(0)
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(digit));
                        match value {
                            Some(v) => current = Some(v),
                            None => return Ok(Err("sparse map number overflows".to_string())),
                        }
                    }
                    b'\n' => {
                        let Some(value) = current.take() else {
                            return Ok(Err("empty line in sparse map".to_string()));
                        };
                        match wanted {
                            None => {
                                if value > self.limits.max_sparse_chunks as u64 {
                                    return Ok(Err("too many sparse chunks".to_string()));
                                }
                                wanted = Some(value * 2);
                            }
                            Some(_) => numbers.push(value),
                        }
                        if wanted == Some(numbers.len() as u64) {
                            return Ok(chunks_from_pairs(&numbers));
                        }
                    }
                    _ => return Ok(Err("malformed sparse map".to_string())),
                }
            }
        }
    }
}

/// Reads the current entry's stored data; a short stream is an `UnexpectedEof` error.
pub(crate) struct EntryData<'s, 'l, R> {
    stream: &'s mut TarStream<'l, R>,
}

impl<R: Read> Read for EntryData<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.stream.data_left;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.stream.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer tar ends inside an entry's data",
            ));
        }
        self.stream.data_left -= n as u64;
        Ok(n)
    }
}

fn padding_for(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

fn verify_checksum(header: &tar::Header, offset: u64) -> Result<(), LayerError> {
    let bytes = header.as_bytes();
    let stored = numeric(&bytes[148..156]).ok_or_else(|| LayerError::BadHeader {
        offset,
        why: "checksum field is not a number (not a tar header)".to_string(),
    })?;
    let (mut unsigned, mut signed) = (0i128, 0i128);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i128::from(b);
        signed += i128::from(b as i8);
    }
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err(LayerError::BadHeader {
            offset,
            why: "checksum mismatch (not a tar header)".to_string(),
        })
    }
}

/// A numeric header field as Go's archive/tar reads it: octal padded with spaces or
/// NULs (all-blank is 0), or GNU base-256 (high bit set, possibly negative).
fn numeric(field: &[u8]) -> Option<i128> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            let invert = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut value: u128 = 0;
            for (i, &byte) in field.iter().enumerate() {
                let mut byte = byte ^ invert;
                if i == 0 {
                    byte &= 0x7f;
                }
                value = (value << 8) | u128::from(byte);
            }
            let value = i128::try_from(value).ok()?;
            return Some(if invert == 0xff { !value } else { value });
        }
    }
    let start = field
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(field.len());
    let trimmed = &field[start..];
    let end = trimmed
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(trimmed.len());
    if trimmed[end..].iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    let digits = &trimmed[..end];
    if digits.is_empty() {
        return Some(0);
    }
    digits.iter().try_fold(0i128, |acc, &d| match d {
        b'0'..=b'7' => acc.checked_mul(8)?.checked_add(i128::from(d - b'0')),
        _ => None,
    })
}

fn chunks_from_pairs(numbers: &[u64]) -> Result<Vec<SparseChunk>, String> {
    if !numbers.len().is_multiple_of(2) {
        return Err("odd number of values in sparse map".to_string());
    }
    Ok(numbers
        .chunks_exact(2)
        .map(|pair| SparseChunk {
            offset: pair[0],
            len: pair[1],
        })
        .collect())
}

/// Sorted, non-overlapping, inside the real size, and exactly as much data as stored.
fn validate_sparse(
    chunks: Vec<SparseChunk>,
    real_size: u64,
    stored: u64,
    limits: &Limits,
) -> Result<Vec<SparseChunk>, String> {
    if chunks.len() > limits.max_sparse_chunks {
        return Err("too many sparse chunks".to_string());
    }
    if real_size > limits.max_sparse_size {
        return Err(format!(
            "sparse file larger than {} bytes",
            limits.max_sparse_size
        ));
    }
    let mut end = 0u64;
    let mut total = 0u64;
    for chunk in &chunks {
        let chunk_end = chunk
            .offset
            .checked_add(chunk.len)
            .ok_or("sparse chunk overflows")?;
        if chunk.offset < end || chunk_end > real_size {
            return Err("sparse map out of order or past the real size".to_string());
        }
        end = chunk_end;
        total += chunk.len;
    }
    if total != stored {
        return Err("sparse map does not match the stored data".to_string());
    }
    Ok(chunks.into_iter().filter(|c| c.len > 0).collect())
}

/// Applies PAX records to `pending`. A malformed record makes the next entry skipped.
fn parse_pax(mut data: &[u8], pending: &mut Pending, limits: &Limits) {
    let mut sparse_pairs: Vec<u64> = Vec::new();
    while !data.is_empty() {
        let Some(space) = data.iter().take(20).position(|&b| b == b' ') else {
            pending.skip = Some("malformed PAX record".to_string());
            return;
        };
        let len = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let Some(len) = len.filter(|&l| l > space + 1 && l <= data.len() && data[l - 1] == b'\n')
        else {
            pending.skip = Some("malformed PAX record length".to_string());
            return;
        };
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let Some(eq) = record.iter().position(|&b| b == b'=') else {
            pending.skip = Some("PAX record without '='".to_string());
            return;
        };
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let number = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let bad_number = |pending: &mut Pending| {
            pending.skip = Some(format!(
                "bad PAX value for {}",
                String::from_utf8_lossy(key)
            ));
        };
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" => match number() {
                Some(n) => pending.size = Some(n),
                None => bad_number(pending),
            },
            b"uid" => match number() {
                Some(n) => pending.uid = Some(n),
                None => bad_number(pending),
            },
            b"gid" => match number() {
                Some(n) => pending.gid = Some(n),
                None => bad_number(pending),
            },
            b"mtime" => match parse_pax_time(value) {
                Some(t) => pending.mtime = Some(t),
                None => bad_number(pending),
            },
            b"SCHILY.devmajor" => match number().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => pending.dev_major = Some(n),
                None => bad_number(pending),
            },
            b"SCHILY.devminor" => match number().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => pending.dev_minor = Some(n),
                None => bad_number(pending),
            },
            b"GNU.sparse.major" => pending.sparse_major = number(),
            b"GNU.sparse.minor" => pending.sparse_minor = number(),
            b"GNU.sparse.name" => pending.sparse_name = Some(value.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => pending.sparse_realsize = number(),
            b"GNU.sparse.map" => {
                let parsed: Option<Vec<u64>> = std::str::from_utf8(value).ok().and_then(|s| {
                    s.split(',')
                        .take(2 * limits.max_sparse_chunks + 1)
                        .map(|n| n.parse::<u64>().ok())
                        .collect()
                });
                match parsed {
                    Some(map) => pending.sparse_map = Some(map),
                    None => bad_number(pending),
                }
            }
            // Sparse 0.0: repeated offset/numbytes records, in order.
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => match number() {
                Some(n) if sparse_pairs.len() < 2 * limits.max_sparse_chunks => {
                    sparse_pairs.push(n);
                    pending.sparse_map = Some(sparse_pairs.clone());
                }
                _ => bad_number(pending),
            },
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    add_xattr(pending, name.to_vec(), value.to_vec(), limits);
                } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                    match (percent_decode(name), base64_decode(value)) {
                        (Some(name), Some(value)) => add_xattr(pending, name, value, limits),
                        _ => pending.warnings.push(format!(
                            "malformed xattr record {}",
                            String::from_utf8_lossy(key)
                        )),
                    }
                }
                // Other records (atime, ctime, uname, gname, comments, vendor keys)
                // carry nothing the tree shows.
            }
        }
    }
}

fn add_xattr(pending: &mut Pending, name: Vec<u8>, value: Vec<u8>, limits: &Limits) {
    if name.is_empty() || name.len() > 255 || name.contains(&0) {
        pending.warnings.push(format!(
            "dropped xattr with invalid name {:?}",
            String::from_utf8_lossy(&name)
        ));
        return;
    }
    if value.len() > limits.max_xattr_size {
        pending.warnings.push(format!(
            "dropped xattr {} larger than {} bytes",
            String::from_utf8_lossy(&name),
            limits.max_xattr_size
        ));
        return;
    }
    // libarchive writes both SCHILY and LIBARCHIVE records for one xattr: last wins.
    pending.xattrs.retain(|x| *x.name != *name);
    pending.xattrs.push(Xattr {
        name: name.into(),
        value: value.into(),
    });
}

/// `secs[.frac]`, possibly negative; nanoseconds truncated to 9 digits.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
    }
    if !negative {
        Some((secs, nanos))
    } else if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        for (text, expected) in [
            ("1700000000", Some((1_700_000_000, 0))),
            ("1700000000.5", Some((1_700_000_000, 500_000_000))),
            ("1.123456789123", Some((1, 123_456_789))),
            ("-1.5", Some((-2, 500_000_000))),
            ("-3", Some((-3, 0))),
            ("x", None),
            ("", None),
            ("1.x", None),
        ] {
            assert_eq!(parse_pax_time(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn numeric_fields() {
        for (field, expected) in [
            (&b"0000644\0"[..], Some(0o644)),
            (b"\0\0\0\0\0\0\0\0", Some(0)),
            (b"   17 \0", Some(0o17)),
            (b"12 3\0", None),
            (b"0009\0", None),
            (&[0x80, 0, 0, 0, 0, 0, 0, 1, 0], Some(256)),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], Some(-1)),
        ] {
            assert_eq!(numeric(field), expected, "{field:?}");
        }
    }

    #[test]
    fn decoders() {
        assert_eq!(base64_decode(b"aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode(b"AAEC").as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(
            percent_decode(b"user.a%3Db").as_deref(),
            Some(&b"user.a=b"[..])
        );
        assert_eq!(percent_decode(b"%zz"), None);
    }
}
