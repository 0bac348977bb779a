//! The import pipeline for one layer blob: three threads on the bytes as they
//! stream by, so that verifying a layer costs about as much as decompressing it.
//!
//! ```text
//! source --read--> [this thread] hash compressed bytes, write the blob file
//!                      | chunks
//!                      v
//!                  [decompress] gunzip / unzstd, then drain trailing bytes
//!                      | chunks      \ gzip: checkpoints + used input chunks
//!                      v              v
//!                  [index] parse the   [spans] hash each span's compressed bytes,
//!                  tar, hash the       compress each window (the seekable index)
//!                  uncompressed stream (DiffId)
//! ```
//! A gzip layer is decompressed by the seekable index's own decoder
//! ([`CheckpointingDecoder`]), which notes checkpoints as it goes; the costlier
//! half of the index (a sha256 over every compressed byte again, and zstd over
//! the windows) runs on a fourth thread, so that it overlaps the decompression.
//! Bounded channels keep memory at a few MiB whatever the layer's size. When any
//! stage fails, the channels close and every stage stops; the first real error is
//! reported.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::image::LayerCompression;
use crate::layer::zran::{
    CheckpointingDecoder, ChunkSource, RawCheckpoint, SpanFinisher, SpanSink,
};
use crate::layer::{self, DiscardSink, GzipCheckpoints, LayerError, LayerIndex};
use crate::store::cas::BlobWriter;
use crate::store::StoreError;

const CHUNK: usize = 1 << 20;
const DEPTH: usize = 4;

/// Reads chunks from a channel as one stream; the end of the channel is EOF.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The input chunks of the decompressor, as the gzip decoder takes them: whole, no copy.
struct ChannelChunks(Receiver<Vec<u8>>);

impl ChunkSource for ChannelChunks {
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.recv().ok())
    }
}

/// What the gzip decoder tells the span thread.
enum SpanEvent {
    Checkpoint(RawCheckpoint),
    Chunk(Vec<u8>),
}

/// The decoder's [`SpanSink`] in the pipeline: a channel to the span thread. If
/// that thread is gone the events are dropped (its error is reported instead).
struct SpanChannel(SyncSender<SpanEvent>);

impl SpanSink for SpanChannel {
    fn checkpoint(&mut self, checkpoint: RawCheckpoint) {
        let _ = self.0.send(SpanEvent::Checkpoint(checkpoint));
    }
    fn chunk(&mut self, chunk: Vec<u8>) {
        let _ = self.0.send(SpanEvent::Chunk(chunk));
    }
}

/// Queue depth between the decoder and the span thread, in events (most are 1 MiB
/// input chunks): enough to ride out a stall of the span thread.
const SPAN_DEPTH: usize = 16;

/// True unless `IMAGEFS_BENCH_NO_CHECKPOINTS` is set: scripts/bench.sh measures the
/// import with and without building the seekable index. Not a user setting.
fn checkpoints_wanted() -> bool {
    std::env::var_os("IMAGEFS_BENCH_NO_CHECKPOINTS").is_none()
}

/// What [`write_and_index`] learned about a layer in its one pass.
#[derive(Debug)]
pub(crate) struct IndexedLayer {
    /// The entry index, with the diff_id.
    pub(crate) index: LayerIndex,
    /// The seekable index's checkpoints, for a gzip layer (not yet bound to the
    /// blob's digest: the caller knows it).
    pub(crate) checkpoints: Option<GzipCheckpoints>,
}

/// Reads `reader` in chunks and sends them; returns false when the receiver is gone.
/// A read error becomes a [`StoreError`] by `read_error`.
fn pump(
    reader: &mut dyn Read,
    tx: &SyncSender<Vec<u8>>,
    read_error: impl Fn(io::Error) -> StoreError,
    mut each: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        if filled == 0 {
            return Ok(true);
        }
        chunk.truncate(filled);
        each(&chunk)?;
        if tx.send(chunk).is_err() {
            return Ok(false);
        }
    }
}

/// Streams a layer blob from `source`, writing it through `writer` (when given)
/// while decompressing and indexing it on other threads. Reads `source` to its end
/// (bytes after the compressed stream included). Returns the entry index, whose
/// `diff_id` is the digest of the uncompressed stream, and for a gzip layer the
/// checkpoints of its seekable index, built from the same decompression. `what`
/// names the layer in errors.
pub(crate) fn write_and_index(
    source: &mut dyn Read,
    writer: Option<&mut BlobWriter>,
    compression: LayerCompression,
    what: &str,
) -> Result<IndexedLayer, StoreError> {
    write_and_index_into(source, writer, compression, what, &mut DiscardSink)
}

/// [`write_and_index`] handing every regular file's content to `sink` on the
/// indexer's thread (completing a lazy layer keeps its contents this way).
pub(crate) fn write_and_index_into(
    source: &mut dyn Read,
    mut writer: Option<&mut BlobWriter>,
    compression: LayerCompression,
    what: &str,
    sink: &mut (dyn layer::ContentSink + Send),
) -> Result<IndexedLayer, StoreError> {
    let layer_error = |source: LayerError| StoreError::Layer {
        what: what.to_string(),
        source,
    };
    let seekable = compression == LayerCompression::Gzip && checkpoints_wanted();
    let (compressed_tx, compressed_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (plain_tx, plain_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (span_tx, span_rx) = sync_channel::<SpanEvent>(SPAN_DEPTH);
    std::thread::scope(|scope| {
        let decompress = scope.spawn(move || -> Result<Option<u64>, StoreError> {
            // A read error here is the decoder's: the data is not what it claims.
            let decoding = |e: io::Error| layer_error(LayerError::Io(e));
            if seekable {
                let mut decoder =
                    CheckpointingDecoder::new(ChannelChunks(compressed_rx), SpanChannel(span_tx))
                        .map_err(|e| layer_error(e.into()))?;
                if !pump(&mut decoder, &plain_tx, decoding, |_| Ok(()))? {
                    return Ok(None); // the indexer stopped; its error is the one to report
                }
                // The decoder read its input to the end (bytes after the last
                // member are an error) and handed every chunk to the span thread.
                return Ok(Some(decoder.uncompressed_size()));
            }
            drop(span_tx);
            let mut input = ChannelReader::new(compressed_rx);
            {
                let mut stream =
                    layer::open_layer_stream(&mut input, compression).map_err(layer_error)?;
                if !pump(&mut *stream, &plain_tx, decoding, |_| Ok(()))? {
                    return Ok(None);
                }
            }
            drop(plain_tx);
            // Bytes after the compressed stream: keep the writer flowing to the end.
            io::copy(&mut input, &mut io::sink()).map_err(|e| layer_error(LayerError::Io(e)))?;
            Ok(None)
        });
        let spans = scope.spawn(move || {
            let mut finisher = SpanFinisher::new();
            while let Ok(event) = span_rx.recv() {
                match event {
                    SpanEvent::Checkpoint(checkpoint) => finisher.checkpoint(checkpoint),
                    SpanEvent::Chunk(chunk) => finisher.chunk(chunk),
                }
            }
            finisher
        });
        let index = scope.spawn(move || {
            let mut input = ChannelReader::new(plain_rx);
            // On error, drain nothing: dropping the receiver stops the decompressor.
            layer::index_layer(&mut input, sink).map_err(layer_error)
        });
        let reading = |source: io::Error| StoreError::SourceRead {
            what: what.to_string(),
            source,
        };
        let fed = pump(source, &compressed_tx, reading, |chunk| {
            if let Some(writer) = writer.as_deref_mut() {
                writer.write_checked(chunk)?;
            }
            Ok(())
        });
        drop(compressed_tx);
        let panicked = |stage| StoreError::Panicked {
            what: what.to_string(),
            stage,
        };
        let decompressed = decompress
            .join()
            .unwrap_or_else(|_| Err(panicked("decompressor")));
        let indexed = index
            .join()
            .unwrap_or_else(|_| Err(panicked("layer indexer")));
        let finisher = spans.join().map_err(|_| panicked("span hasher"));
        // Report the most specific error: source/writer, then decoder, then tar.
        fed?;
        let uncompressed_size = decompressed?;
        let index = indexed?;
        let checkpoints = match uncompressed_size {
            Some(size) => Some(finisher?.finish(size).map_err(|e| layer_error(e.into()))?),
            None => None,
        };
        Ok(IndexedLayer { index, checkpoints })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn indexes_gzip_and_covers_trailing_bytes() {
        let big = vec![7u8; 3 * CHUNK + 17];
        let tar = tar_of(&[("a", b"hello"), ("big", &big)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut blob = gz.finish().unwrap();
        let indexed =
            write_and_index(&mut &blob[..], None, LayerCompression::Gzip, "test").unwrap();
        let index = &indexed.index;
        assert_eq!(index.diff_id.0, crate::Digest::of(&tar));
        assert_eq!(index.entries.len(), 2);
        let checkpoints = indexed.checkpoints.expect("a gzip layer has checkpoints");
        assert_eq!(checkpoints.compressed_size, blob.len() as u64);
        assert_eq!(checkpoints.uncompressed_size, tar.len() as u64);
        // Garbage after the gzip stream is part of the blob; the decoder refuses it.
        blob.extend_from_slice(b"trailing");
        assert!(write_and_index(&mut &blob[..], None, LayerCompression::Gzip, "test").is_err());
    }

    #[test]
    fn broken_streams_fail_without_hanging() {
        let tar = tar_of(&[("a", &vec![1u8; 5 * CHUNK])]);
        let truncated = &tar[..tar.len() / 2];
        assert!(
            write_and_index(&mut &truncated[..], None, LayerCompression::None, "test").is_err()
        );
        let garbage = vec![0x1fu8; 4 * CHUNK];
        assert!(write_and_index(&mut &garbage[..], None, LayerCompression::Gzip, "test").is_err());
        let not_tar = vec![b'x'; 4 * CHUNK];
        assert!(write_and_index(&mut &not_tar[..], None, LayerCompression::None, "test").is_err());
    }
}
