//! Building the checkpoints while a gzip layer is decompressed once.
//!
//! Two parts, so that the import pipeline can run them on two threads:
//! - [`CheckpointingDecoder`] decompresses (multi-member gzip, each member's CRC and
//!   size checked by zlib) and, every [`SPAN_TARGET`] bytes of output, stops at the
//!   next deflate block boundary to note a [`RawCheckpoint`]: the bit position and
//!   the 32 KiB window. It hands every input chunk on once it has consumed it.
//! - [`SpanFinisher`] turns those into [`Checkpoint`]s: it hashes each span's
//!   compressed bytes and compresses each window.
//!
//! Both see events in one order (checkpoints before the chunk that holds their
//! position has been handed on), so a [`SpanSink`] can be the finisher itself or a
//! channel to it.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::inflate::{Flush, Inflater, GZIP};
use super::{Checkpoint, GzipCheckpoints, ZranError, SPAN_TARGET};

/// Budget for the index: checkpoints are spaced so that their estimated size stays
/// under this share of the compressed bytes read so far (per mille). Each window's
/// compressed size is estimated by its span's ratio (a window is the end of its
/// span); on the bench's layers the real size comes out within 4% of the estimate,
/// hence the margin below the 4% the index may take. The estimate, not the
/// finisher's real count, decides, so the checkpoints of a blob are the same
/// whatever the threads' timing.
const BUDGET_PER_MILLE: u64 = 33;
/// Fixed bytes of one checkpoint in the encoding (offsets, bits, lengths, sha256).
const CHECKPOINT_OVERHEAD: u64 = 64;
/// A new gzip member gets a checkpoint unless the previous one is closer than this
/// (in output bytes): a stream of tiny members must not make a huge index.
const MEMBER_GAP: u64 = 64 * 1024;
/// The window compression level (zstd): the windows are 3% of the output, so a
/// fast level costs little and they shrink about as much as the layer does.
const WINDOW_LEVEL: i32 = 3;
/// Input chunk size when reading from a plain reader.
const READ_CHUNK: usize = 256 * 1024;

/// A checkpoint as the decoder sees it: the window is not yet compressed and the
/// span's digest not yet known.
#[derive(Debug, Clone)]
pub struct RawCheckpoint {
    /// First whole byte after the resume position in the compressed stream.
    pub compressed_offset: u64,
    /// Bits of the byte before `compressed_offset` that belong to the next block.
    pub bits: u8,
    /// Offset in the uncompressed stream.
    pub uncompressed_offset: u64,
    /// The last 32 KiB (or fewer, early in a member) of output; empty at a member start.
    pub window: Vec<u8>,
}

/// Where the decoder sends what it finds, in stream order.
pub trait SpanSink {
    /// A checkpoint at a position within the chunks handed on so far or the current one.
    fn checkpoint(&mut self, checkpoint: RawCheckpoint);
    /// A chunk of compressed input, fully consumed, in order.
    fn chunk(&mut self, chunk: Vec<u8>);
}

/// Chunks of compressed input, in order; `None` at the end.
pub trait ChunkSource {
    /// The next chunk (never empty), or `None` at the end of the input.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>>;
}

/// Reads a [`Read`] in chunks of 256 KiB.
pub struct ReadChunks<R>(pub R);

impl<R: Read> ChunkSource for ReadChunks<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut filled = 0;
        while filled < READ_CHUNK {
            match self.0.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(None);
        }
        chunk.truncate(filled);
        Ok(Some(chunk))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the header of a member; `first`: no member has been read yet (an
    /// empty input is not a gzip stream).
    Header { first: bool },
    /// In a member's deflate data.
    Body,
    /// A member ended; more input means another member.
    MemberEnd,
    /// The input ended after a complete member.
    Done,
}

/// Decompresses a (multi-member) gzip stream as a [`Read`] of its uncompressed
/// bytes, noting checkpoints into a [`SpanSink`]. Bytes after the last member that
/// are not another member are an error, as are truncation and bad CRCs.
pub struct CheckpointingDecoder<C, S> {
    source: C,
    sink: S,
    inflater: Inflater,
    input: Vec<u8>,
    pos: usize,
    /// Compressed bytes consumed by inflate (global offset).
    consumed: u64,
    /// Uncompressed bytes produced.
    produced: u64,
    state: State,
    /// Uncompressed offset of the last checkpoint.
    last_out: u64,
    /// Compressed offset of the last checkpoint.
    last_in: u64,
    /// Estimated encoded size of the checkpoints noted so far.
    estimate: u64,
}

impl<C: ChunkSource, S: SpanSink> CheckpointingDecoder<C, S> {
    /// A decoder over `source` reporting to `sink`.
    pub fn new(source: C, sink: S) -> Result<Self, ZranError> {
        Ok(CheckpointingDecoder {
            source,
            sink,
            inflater: Inflater::new(GZIP).map_err(ZranError::Inflate)?,
            input: Vec::new(),
            pos: 0,
            consumed: 0,
            produced: 0,
            state: State::Header { first: true },
            last_out: 0,
            last_in: 0,
            estimate: 0,
        })
    }

    /// Compressed bytes read so far (the whole stream once [`Read`] gave EOF).
    pub fn compressed_size(&self) -> u64 {
        self.consumed
    }

    /// Uncompressed bytes produced so far.
    pub fn uncompressed_size(&self) -> u64 {
        self.produced
    }

    /// True once the whole stream was decoded (EOF was returned).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The sink, once decoding is over.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Makes sure unconsumed input is at hand; false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        while self.pos == self.input.len() {
            let used = std::mem::take(&mut self.input);
            self.pos = 0;
            if !used.is_empty() {
                self.sink.chunk(used);
            }
            match self.source.next_chunk()? {
                Some(chunk) => self.input = chunk,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn invalid(&self, why: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("gzip stream at byte {}: {why}", self.consumed),
        )
    }

    fn note(&mut self, window: Vec<u8>, bits: u8) {
        self.estimate += self.window_estimate(window.len() as u64);
        self.last_in = self.consumed;
        self.last_out = self.produced;
        self.sink.checkpoint(RawCheckpoint {
            compressed_offset: self.consumed,
            bits,
            uncompressed_offset: self.produced,
            window,
        });
    }

    /// Estimated encoded size of a checkpoint here with a window of `len` bytes:
    /// the window shrinks as the span since the last checkpoint did.
    fn window_estimate(&self, len: u64) -> u64 {
        let span_in = self.consumed - self.last_in;
        let span_out = (self.produced - self.last_out).max(span_in).max(1);
        CHECKPOINT_OVERHEAD + len.saturating_mul(span_in) / span_out
    }

    /// True when the next block boundary should become a checkpoint: a span's
    /// worth of output since the last one, and the index within its budget.
    fn due(&self) -> bool {
        self.produced - self.last_out >= SPAN_TARGET
            && (self.estimate + self.window_estimate(32 * 1024)).saturating_mul(1000)
                <= self.consumed.saturating_mul(BUDGET_PER_MILLE)
    }

    fn step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::MemberEnd => {
                    if !self.fill()? {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    self.inflater.reset(GZIP).map_err(|e| self.invalid(e))?;
                    self.state = State::Header { first: false };
                }
                State::Header { first } => {
                    if !self.fill()? {
                        return Err(if first && self.consumed == 0 {
                            self.invalid("empty input is not a gzip stream")
                        } else {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("gzip stream truncated at byte {}", self.consumed),
                            )
                        });
                    }
                    let step = self
                        .inflater
                        .inflate(&self.input[self.pos..], &mut [], Flush::Block)
                        .map_err(|e| self.invalid(e))?;
                    self.pos += step.consumed;
                    self.consumed += step.consumed as u64;
                    if self.inflater.data_type() & 0x80 != 0 {
                        // Right after the header: a member start needs no window.
                        self.state = State::Body;
                        if first || self.produced - self.last_out >= MEMBER_GAP {
                            self.note(Vec::new(), 0);
                        }
                    } else if step.stream_end {
                        // Cannot happen before the header is complete; be safe.
                        self.state = State::MemberEnd;
                    } else if step.consumed == 0 {
                        return Err(self.invalid("inflate made no progress in a header"));
                    }
                }
                State::Body => {
                    if !self.fill()? {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("gzip stream truncated at byte {}", self.consumed),
                        ));
                    }
                    let due = self.due();
                    let mut room = buf.len();
                    if !due {
                        let since = self.produced - self.last_out;
                        if since < SPAN_TARGET {
                            room = room.min((SPAN_TARGET - since) as usize);
                        }
                    }
                    let flush = if due { Flush::Block } else { Flush::None };
                    let step = self
                        .inflater
                        .inflate(&self.input[self.pos..], &mut buf[..room], flush)
                        .map_err(|e| self.invalid(e))?;
                    self.pos += step.consumed;
                    self.consumed += step.consumed as u64;
                    self.produced += step.produced as u64;
                    let mut noted = false;
                    if step.stream_end {
                        self.state = State::MemberEnd;
                    } else if due && self.inflater.data_type() & 0xc0 == 0x80 {
                        let bits = (self.inflater.data_type() & 7) as u8;
                        let window = self.inflater.window();
                        self.note(window, bits);
                        noted = true;
                    }
                    if step.produced > 0 {
                        return Ok(step.produced);
                    }
                    if step.consumed == 0 && !step.stream_end && !noted {
                        return Err(self.invalid("inflate made no progress"));
                    }
                }
            }
        }
    }
}

impl<C: ChunkSource, S: SpanSink> Read for CheckpointingDecoder<C, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.step(buf)?;
        if n == 0 && self.state == State::Done {
            // Hand the last chunk on: the finisher hashes the last span to the end.
            let last = std::mem::take(&mut self.input);
            self.pos = 0;
            if !last.is_empty() {
                self.sink.chunk(last);
            }
        }
        Ok(n)
    }
}

/// Hashes spans and compresses windows: turns the decoder's events into
/// [`Checkpoint`]s. Feed it through [`SpanSink`], then [`SpanFinisher::finish`].
#[derive(Default)]
pub struct SpanFinisher {
    /// Checkpoints (windows compressed) whose position the hashed bytes have not
    /// reached yet.
    pending: std::collections::VecDeque<Checkpoint>,
    /// The span being hashed: its checkpoint (window compressed) and hasher.
    current: Option<(Checkpoint, Sha256)>,
    done: Vec<Checkpoint>,
    /// Compressed bytes hashed (or skipped, before the first checkpoint) so far.
    seen: u64,
    last_byte: Option<u8>,
    error: Option<String>,
}

impl SpanFinisher {
    /// A finisher with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compresses the window of a checkpoint the decoder just noted.
    fn compress(&mut self, raw: RawCheckpoint) -> Checkpoint {
        let window = if raw.window.is_empty() {
            Box::default()
        } else {
            match zstd::bulk::compress(&raw.window, WINDOW_LEVEL) {
                Ok(bytes) => bytes.into_boxed_slice(),
                Err(e) => {
                    self.error
                        .get_or_insert(format!("compressing a window: {e}"));
                    Box::default()
                }
            }
        };
        Checkpoint {
            compressed_offset: raw.compressed_offset,
            bits: raw.bits,
            uncompressed_offset: raw.uncompressed_offset,
            window,
            span_sha256: [0; 32],
        }
    }

    /// Starts hashing the span of `checkpoint`; `previous_byte` is the byte before
    /// its `compressed_offset` (the span's first byte when it starts inside one).
    fn start(&mut self, checkpoint: Checkpoint, previous_byte: Option<u8>) {
        let mut hasher = Sha256::new();
        if checkpoint.bits > 0 {
            match previous_byte {
                Some(byte) => hasher.update([byte]),
                None => {
                    self.error
                        .get_or_insert("checkpoint inside a byte that was never seen".into());
                }
            }
        }
        self.current = Some((checkpoint, hasher));
    }

    fn close_current(&mut self) {
        if let Some((mut checkpoint, hasher)) = self.current.take() {
            checkpoint.span_sha256 = hasher.finalize().into();
            self.done.push(checkpoint);
        }
    }

    /// The checkpoints, once every chunk was seen. `uncompressed_size` is the
    /// decoder's. Fails if a checkpoint lies beyond the bytes seen.
    pub fn finish(mut self, uncompressed_size: u64) -> Result<GzipCheckpoints, ZranError> {
        if let Some(error) = self.error.take() {
            return Err(ZranError::Inflate(error));
        }
        if !self.pending.is_empty() {
            return Err(ZranError::Inflate(
                "a checkpoint lies beyond the end of the stream".to_string(),
            ));
        }
        self.close_current();
        Ok(GzipCheckpoints {
            compressed_size: self.seen,
            uncompressed_size,
            checkpoints: self.done,
        })
    }
}

impl SpanSink for SpanFinisher {
    fn checkpoint(&mut self, checkpoint: RawCheckpoint) {
        let checkpoint = self.compress(checkpoint);
        self.pending.push_back(checkpoint);
    }

    fn chunk(&mut self, chunk: Vec<u8>) {
        let base = self.seen;
        let end = base + chunk.len() as u64;
        let mut at = 0usize;
        while self
            .pending
            .front()
            .is_some_and(|next| next.compressed_offset <= end)
        {
            let next = self.pending.pop_front().expect("front exists");
            let upto = next.compressed_offset.saturating_sub(base) as usize;
            let upto = upto.max(at);
            if let Some((_, hasher)) = self.current.as_mut() {
                hasher.update(&chunk[at..upto]);
            }
            self.close_current();
            let previous = if upto > 0 {
                Some(chunk[upto - 1])
            } else {
                self.last_byte
            };
            self.start(next, previous);
            at = upto;
        }
        if let Some((_, hasher)) = self.current.as_mut() {
            hasher.update(&chunk[at..]);
        }
        if let Some(&last) = chunk.last() {
            self.last_byte = Some(last);
        }
        self.seen = end;
    }
}

/// Builds the checkpoints of a gzip stream read from any [`Read`] (a blob file, or
/// a layer streamed from a registry without being stored), on this thread, while
/// its uncompressed bytes are read through it.
pub struct GzipIndexBuilder<R> {
    decoder: CheckpointingDecoder<ReadChunks<R>, SpanFinisher>,
}

impl<R: Read> GzipIndexBuilder<R> {
    /// A builder over the compressed stream `reader`.
    pub fn new(reader: R) -> Result<Self, ZranError> {
        Ok(GzipIndexBuilder {
            decoder: CheckpointingDecoder::new(ReadChunks(reader), SpanFinisher::new())?,
        })
    }

    /// The checkpoints; the uncompressed stream must have been read to its end.
    pub fn finish(self) -> Result<GzipCheckpoints, ZranError> {
        if !self.decoder.is_done() {
            return Err(ZranError::Inflate(
                "the uncompressed stream was not read to its end".to_string(),
            ));
        }
        let size = self.decoder.uncompressed_size();
        self.decoder.into_sink().finish(size)
    }
}

impl<R: Read> Read for GzipIndexBuilder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf)
    }
}
