//! Lazy layers (`pull --lazy`, SPEC section 6): layer rows without a file in
//! `blobs/`, whose bytes come from a registry by HTTP range when something reads
//! them.
//!
//! ```text
//! cache/layers/<layer hex>/
//!   index/<hex>.idx, index/<hex>.zran   as for any layer (from the cache, the index
//!                                       artifact, or streaming the layer once)
//!   ranges/data       sparse file at blob offsets: the compressed spans fetched so far
//!   ranges/spans      the spans whose bytes were written to `data` (u32 LE each,
//!                     appended after the data is synced; a torn last record is
//!                     ignored). Every span is checked against its sha256 before
//!                     use, so a record is a hint, never trust.
//!   ranges/contents   materialized files: `<entry> <content hex>` lines, appended
//!                     after the content file is in `content/`
//!   ranges/gzip-index.remote  where the layer's gzip index waits in the registry
//!                     (JSON: registry, repository, digest, size), when `pull
//!                     --lazy` took the entry index from an index artifact; fetched,
//!                     checked and saved as `index/<hex>.zran` at the first read
//!   content/, tmp/    file contents by sha256, as an unpacked layer has them
//!   lock              flock: one process (one thread) fetches or materializes at a time
//! ```
//!
//! Flow of a read: the mount opens a file of a lazy layer -> [`Store::open_lazy_entry`]
//! takes the layer's lock, finds the spans holding the file's tar header and data,
//! fetches those missing (adjacent ones in one ranged GET, each span's sha256
//! checked before it is written), inflates the spans once from their checkpoint,
//! checks the tar header in front of the data, and writes every file lying wholly
//! in those spans into `content/` (so that a `grep -r` inflates each span about
//! once). When every span is fetched, the layer is completed: its bytes are checked
//! against the digest and diff_id as an import checks them, moved into `blobs/`,
//! and the row becomes `present`; a mismatch makes it `bad` (reads give EIO).
//!
//! Layers under [`SMALL_LAYER`] and layers that are not gzip have no seekable
//! index: they are fetched whole (and stored) the first time their index is needed.
//!
//! Must not touch: HTTP details (`remote`), FUSE.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::digest::{DiffId, Digest, HashingReader};
use crate::image::LayerCompression;
use crate::layer::{
    self, CacheDir, ContentId, ContentRef, DiscardSink, Entry, EntryKind, GzipIndex, LayerIndex,
};
use crate::remote::{Client, ErrorKind, Options, RemoteError};
use crate::store::cas::Expected;
use crate::store::meta::{self, BlobState};
use crate::store::pipeline;
use crate::store::{io_error, CasError, Store, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Layers smaller than this (compressed) are fetched whole when first needed and
/// stored, instead of being read by ranges: a ranged GET costs about as much as
/// fetching a few MiB on any network.
pub const SMALL_LAYER: u64 = 10 << 20;

const RANGES: &str = "ranges";
const DATA: &str = "data";
const SPANS: &str = "spans";
const CONTENTS: &str = "contents";
const REMOTE_GZIP_INDEX: &str = "gzip-index.remote";
const LOCK: &str = "lock";
/// Files read into memory while materializing; larger ones go through a temp file.
const IN_MEMORY: u64 = 4 << 20;
/// A tar header block.
const BLOCK: u64 = 512;

/// What the store keeps for lazy layers in one process: how to reach registries.
#[derive(Debug, Default)]
pub(crate) struct LazyState {
    /// How a mount or a pull reaches registries (credentials from the usual files).
    options: Mutex<Option<Options>>,
    /// One client per registry, shared (tokens are cached and renewed in it).
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Entry indexes of lazy layers being read, and their materialized files as
    /// last read from `ranges/contents` (re-read when that file's length changes),
    /// so that opening file after file of one layer parses neither again.
    layers: Mutex<HashMap<Digest, Arc<LazyLayer>>>,
}

/// What one process keeps in memory about one lazy layer it reads.
#[derive(Debug)]
struct LazyLayer {
    index: Arc<LayerIndex>,
    /// Completing the layer after a bulk read failed in this process: reads go on
    /// span by span (completion is tried again only when every span is here).
    bulk_failed: std::sync::atomic::AtomicBool,
    /// The seekable index, loaded (checksummed and decoded) once, not per read.
    gzip: Mutex<Option<Arc<GzipIndex>>>,
    contents: Mutex<(u64, Arc<HashMap<usize, ContentId>>)>,
}

/// A reader that has made a mount fetch at least this many spans of a layer
/// (about 64 MiB of its tar) and at least 1/[`BULK_READ_FRACTION`] of them is
/// scanning it (`grep -r`, a scanner): the rest is fetched in large ranges and the
/// layer completed and unpacked in one pass, which costs far less than going on
/// span by span.
const BULK_READ_SPANS: usize = 64;
const BULK_READ_FRACTION: usize = 4;

/// Lazy layers whose indexes are kept in memory at once.
const LAZY_LAYERS_KEPT: usize = 64;

/// How much of a lazy layer is here (`df`, `inspect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LazyProgress {
    /// Compressed bytes of the layer fetched and kept in `cache/`.
    pub fetched_bytes: u64,
    /// The layer's size.
    pub total_bytes: u64,
}

/// An exclusive `flock` on a layer's lock file, held until dropped (also keeps
/// threads of one process apart: each acquisition opens its own descriptor).
pub(crate) struct LayerLock(File);

impl LayerLock {
    pub(crate) fn acquire(path: &Path) -> Result<LayerLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io_error(path)(io::Error::last_os_error()));
        }
        Ok(LayerLock(file))
    }
}

impl Drop for LayerLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing would release it anyway.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::LOCK_UN) };
    }
}

fn problem(layer: &Digest, text: impl Into<String>) -> StoreError {
    StoreError::LayerCache {
        layer: *layer,
        problem: text.into(),
    }
}

fn layer_error(layer: &Digest, e: impl Into<layer::LayerError>) -> StoreError {
    StoreError::layer(layer, e.into())
}

/// The fetched spans of one layer, opened under its lock.
struct Ranges {
    dir: PathBuf,
    data: File,
    fetched: BTreeSet<usize>,
}

impl Ranges {
    fn open(dir: &Path) -> Result<Ranges> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(DATA);
        let data = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(Ranges {
            dir: dir.to_path_buf(),
            data,
            fetched: read_spans(dir),
        })
    }

    /// Records spans whose bytes are written and synced.
    fn note(&mut self, spans: Range<usize>) -> Result<()> {
        let path = self.dir.join(SPANS);
        let mut record = Vec::new();
        for span in spans.clone() {
            record.extend_from_slice(&(span as u32).to_le_bytes());
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(&record).map_err(io_error(&path))?;
        self.fetched.extend(spans);
        Ok(())
    }

    /// Forgets spans whose bytes turned out damaged (rewrites the record).
    fn forget(&mut self, spans: &[usize]) -> Result<()> {
        for span in spans {
            self.fetched.remove(span);
        }
        let path = self.dir.join(SPANS);
        let temp = self.dir.join(format!("{SPANS}.{}", std::process::id()));
        let record: Vec<u8> = self
            .fetched
            .iter()
            .flat_map(|span| (*span as u32).to_le_bytes())
            .collect();
        fs::write(&temp, record).map_err(io_error(&temp))?;
        fs::rename(&temp, &path).map_err(io_error(&path))
    }
}

/// The spans recorded as fetched in `dir` (a torn last record is ignored).
fn read_spans(dir: &Path) -> BTreeSet<usize> {
    let bytes = fs::read(dir.join(SPANS)).unwrap_or_default();
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect()
}

/// The materialized files of a lazy layer: data entry -> content.
fn read_contents(dir: &Path) -> HashMap<usize, ContentId> {
    let text = fs::read_to_string(dir.join(CONTENTS)).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((entry, hex)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(entry), Ok(bytes)) = (entry.parse::<usize>(), hex::decode(hex)) else {
            continue;
        };
        if let Ok(id) = <[u8; 32]>::try_from(bytes.as_slice()) {
            out.insert(entry, ContentId(id));
        }
    }
    out
}

/// The bytes of a lazy layer kept in its `ranges/data`, as a [`layer::RangeSource`].
struct LocalSpans<'a>(&'a File);

impl layer::RangeSource for LocalSpans<'_> {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("range too large"))?;
        let mut buf = vec![0u8; len];
        self.0.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Where a file being materialized collects its stored bytes.
enum Collect {
    Memory(Vec<u8>),
    /// A large file: written to a temporary file in the cache while hashed (for an
    /// ordinary file, `hasher`), which then becomes the content file itself; runs
    /// of zeros stay holes, as `CacheDir::store_content` keeps them.
    Temp {
        file: tempfile::NamedTempFile,
        hasher: Option<Sha256>,
        written: u64,
    },
}

/// One file to materialize: its tar header and stored data in the stream.
struct Wanted {
    entry: usize,
    header: u64,
    end: u64,
    header_bytes: Vec<u8>,
    data: Collect,
}

impl Wanted {
    fn take(&mut self, position: u64, bytes: &[u8]) -> io::Result<()> {
        let start = position.max(self.header);
        let end = (position + bytes.len() as u64).min(self.end);
        if start >= end {
            return Ok(());
        }
        let data_start = self.header + BLOCK;
        // The header part.
        if start < data_start {
            let until = end.min(data_start);
            self.header_bytes.extend_from_slice(
                &bytes[(start - position) as usize..(until - position) as usize],
            );
        }
        let from = start.max(data_start);
        if from < end {
            let piece = &bytes[(from - position) as usize..(end - position) as usize];
            match &mut self.data {
                Collect::Memory(buffer) => buffer.extend_from_slice(piece),
                Collect::Temp {
                    file,
                    hasher,
                    written,
                } => {
                    if let Some(hasher) = hasher {
                        hasher.update(piece);
                    }
                    let file = file.as_file_mut();
                    if piece.iter().all(|&b| b == 0) {
                        use std::io::Seek;
                        file.seek(io::SeekFrom::Current(piece.len() as i64))?;
                    } else {
                        file.write_all(piece)?;
                    }
                    *written += piece.len() as u64;
                }
            }
        }
        Ok(())
    }
}

/// Parses an octal (or GNU base-256) numeric field of a tar header.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// Checks the tar header block in front of a file's data against the entry the
/// index gives for it, so that an index that lies about offsets gives an error,
/// not another file's bytes: a valid checksum, a regular-file type, the size, and
/// the name (whole, or the 100-byte truncation long names leave in it). A sparse
/// file's header may be followed by extension blocks: only its checksum and type
/// are checked where a header stands.
pub(crate) fn check_tar_header(block: &[u8], entry: &Entry) -> std::result::Result<(), String> {
    if block.len() != BLOCK as usize {
        return Err("no tar header in front of the data".into());
    }
    let recorded = tar_number(&block[148..156]).ok_or("unreadable header checksum")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if recorded != sum {
        if entry.sparse.is_some() {
            return Ok(()); // an extension block of an old GNU sparse header
        }
        return Err("the bytes in front of the data are not a tar header".into());
    }
    let typeflag = block[156];
    if !matches!(typeflag, b'0' | 0 | b'7' | b'S') {
        return Err(format!(
            "the tar header in front of the data is of type {:?}, not a regular file",
            typeflag as char
        ));
    }
    if entry.sparse.is_some() {
        return Ok(());
    }
    let size = tar_number(&block[124..136]).ok_or("unreadable header size")?;
    // A PAX size overrides the header's (files of 8 GiB and more).
    if size != entry.size && size != 0o77777777777 {
        return Err(format!(
            "the tar header in front of the data says {size} bytes, the index {}",
            entry.size
        ));
    }
    let field = |range: Range<usize>| -> Vec<u8> {
        block[range]
            .iter()
            .copied()
            .take_while(|b| *b != 0)
            .collect()
    };
    let mut name = field(0..100);
    let truncated = !block[..100].contains(&0);
    if &block[257..263] == b"ustar\0" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            let mut full = prefix;
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let normal = |mut bytes: &[u8]| -> Vec<u8> {
        while let Some(rest) = bytes.strip_prefix(b"./").or(bytes.strip_prefix(b"/")) {
            bytes = rest;
        }
        bytes.to_vec()
    };
    let name = normal(&name);
    let path = &*entry.path;
    // PAX and GNU long names leave the header's own name truncated or replaced:
    // where the tar had a longer name, the header need only be a prefix of it.
    let ok = name == path
        || (truncated && path.starts_with(&name))
        || (path.len() > 100 && (path.starts_with(&name) || name.is_empty()))
        || !path.is_ascii();
    if !ok {
        return Err(format!(
            "the tar header in front of the data names {:?}, the index {:?}",
            String::from_utf8_lossy(&name),
            String::from_utf8_lossy(path)
        ));
    }
    Ok(())
}

/// The regular file whose data entry `entry` shows (a hard link followed, in the
/// same layer, as `layer::zran::entry_data` follows it).
fn data_entry(index: &LayerIndex, entry: usize) -> Option<usize> {
    let mut position = entry;
    for _ in 0..64 {
        let current = index.entries.get(position)?;
        match current.kind {
            EntryKind::File => return Some(position),
            EntryKind::Hardlink => {
                let target = current.link_target.as_deref()?;
                position = index.entries[..position]
                    .iter()
                    .rposition(|e| &*e.path == target)?;
            }
            _ => return None,
        }
    }
    None
}

/// True for errors that say the registry cannot serve this range (a 200 with the
/// whole blob, a 416): the layer is then fetched whole instead.
fn ranges_unusable(error: &RemoteError) -> bool {
    matches!(error.kind(), ErrorKind::Protocol | ErrorKind::Size)
}

impl LazyLayer {
    /// The materialized files, re-read when `ranges/contents` grew or shrank.
    fn contents(&self, dir: &Path) -> Arc<HashMap<usize, ContentId>> {
        let len = fs::metadata(dir.join(CONTENTS)).map_or(0, |m| m.len());
        let mut known = crate::sys::lock(&self.contents);
        if known.0 != len || (len > 0 && known.1.is_empty()) {
            *known = (len, Arc::new(read_contents(dir)));
        }
        known.1.clone()
    }

    /// Adds what this process just appended to `ranges/contents` (growing it from
    /// `before` to `after` bytes) without reading the file again, when nothing else
    /// changed it meanwhile (the caller holds the layer's lock).
    fn added_contents(&self, before: u64, after: u64, added: &[(usize, ContentId)]) {
        let mut known = crate::sys::lock(&self.contents);
        if known.0 != before {
            return; // re-read at the next look
        }
        let map = Arc::make_mut(&mut known.1);
        map.extend(added.iter().copied());
        known.0 = after;
    }
}

impl Store {
    /// The in-memory state of lazy layer `layer` (its entry index loaded once).
    fn lazy_layer(&self, layer: &Digest) -> Result<Arc<LazyLayer>> {
        if let Some(known) = crate::sys::lock(&self.lazy.layers).get(layer) {
            return Ok(known.clone());
        }
        let loaded = Arc::new(LazyLayer {
            index: Arc::new(self.layer_index(layer)?),
            bulk_failed: std::sync::atomic::AtomicBool::new(false),
            gzip: Mutex::new(None),
            contents: Mutex::new((0, Arc::new(HashMap::new()))),
        });
        let mut layers = crate::sys::lock(&self.lazy.layers);
        if layers.len() >= LAZY_LAYERS_KEPT {
            layers.clear(); // rare: a mount reading many lazy layers at once
        }
        layers.insert(*layer, loaded.clone());
        Ok(loaded)
    }

    /// How lazy layers reach registries from now on in this process: a mount passes
    /// the `--creds`/`--authfile`/`--tls-verify` it was given. Without it, the
    /// defaults apply (credentials from the usual auth files, HTTPS except to
    /// loopback and `$IMAGEFS_INSECURE_REGISTRIES`).
    pub fn set_remote_options(&self, options: Options) {
        *crate::sys::lock(&self.lazy.options) = Some(options);
        crate::sys::lock(&self.lazy.clients).clear();
    }

    /// Lets lazy layers of `registry` use `client` (a pull's own, already
    /// authenticated).
    pub(crate) fn share_client(&self, registry: &str, client: Arc<Client>) {
        crate::sys::lock(&self.lazy.clients).insert(registry.to_string(), client);
    }

    pub(crate) fn client_for(&self, registry: &str) -> Result<Arc<Client>> {
        if let Some(client) = crate::sys::lock(&self.lazy.clients).get(registry) {
            return Ok(client.clone());
        }
        let options = crate::sys::lock(&self.lazy.options)
            .clone()
            .unwrap_or_default();
        let client = Arc::new(Client::new(registry, &options)?);
        crate::sys::lock(&self.lazy.clients).insert(registry.to_string(), client.clone());
        Ok(client)
    }

    /// A client and repository to fetch `layer` from: its origins, most recent
    /// first, the first whose registry can be reached by name.
    fn origin_client(&self, layer: &Digest) -> Result<(Arc<Client>, String)> {
        let origins = meta::origins(&self.conn(), layer)?;
        let mut last_error = None;
        for origin in origins {
            match self.client_for(&origin.registry) {
                Ok(client) => return Ok((client, origin.repository)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            problem(
                layer,
                "lazy layer with no registry to fetch it from (pull the image again)",
            )
        }))
    }

    fn blob_state(&self, layer: &Digest) -> Result<Option<BlobState>> {
        Ok(self.blob(layer)?.map(|info| info.state))
    }

    /// Whether `layer` is a lazy (or bad) layer: its file is not in `blobs/`.
    pub(crate) fn is_absent(&self, layer: &Digest) -> Result<bool> {
        Ok(matches!(
            self.blob_state(layer)?,
            Some(BlobState::Lazy | BlobState::Bad)
        ))
    }

    fn ranges_dir(&self, layer: &Digest) -> PathBuf {
        self.layer_cache_dir(layer).join(RANGES)
    }

    /// Drops the fetched ranges and the record of materialized files of a layer
    /// that became complete (or bad). The content files stay until the layer is
    /// unpacked or evicted.
    /// The caller holds the layer's lock.
    pub(crate) fn drop_lazy_cache(&self, layer: &Digest) {
        let _ = fs::remove_dir_all(self.ranges_dir(layer));
    }

    /// [`Store::drop_lazy_cache`] for a layer another command completed (a plain
    /// pull): takes the layer's lock first, so a mount reading its ranges finishes
    /// that read, then finds the layer present and reads the blob.
    pub(crate) fn drop_completed_lazy_cache(&self, layer: &Digest) {
        match LayerLock::acquire(&self.layer_cache_dir(layer).join(LOCK)) {
            Ok(_lock) => self.drop_lazy_cache(layer),
            Err(e) => log::warn!("layer {layer}: fetched ranges kept: {e}"),
        }
    }

    /// Records where lazy layer `layer`'s gzip index waits in the registry (`pull
    /// --lazy` with an index artifact); [`Store::lazy_gzip_index`] fetches it.
    pub(crate) fn save_remote_gzip_index(
        &self,
        layer: &Digest,
        remote: &super::index_artifact::RemoteGzipIndex,
    ) -> Result<()> {
        let dir = self.ranges_dir(layer);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(REMOTE_GZIP_INDEX);
        let temp = dir.join(format!("{REMOTE_GZIP_INDEX}.{}", std::process::id()));
        let bytes = serde_json::to_vec(remote).expect("a record serializes");
        fs::write(&temp, bytes)
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(io_error(&path))
    }

    /// Where lazy layer `layer`'s gzip index waits in the registry, if it does.
    pub(crate) fn remote_gzip_index(
        &self,
        layer: &Digest,
    ) -> Option<super::index_artifact::RemoteGzipIndex> {
        let bytes = fs::read(self.ranges_dir(layer).join(REMOTE_GZIP_INDEX)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The seekable index of lazy layer `layer` (the caller holds its lock): from
    /// the cache, else fetched from where `pull --lazy` found it in the registry and
    /// saved. `None` when there is none to be had (the layer is then fetched whole).
    fn lazy_gzip_index(&self, layer: &Digest, cache: &CacheDir) -> Result<Option<GzipIndex>> {
        let path = cache.gzip_index_path(layer);
        if let Some(index) = GzipIndex::read_from(&path)
            .ok()
            .filter(|g| g.layer() == *layer)
        {
            return Ok(Some(index));
        }
        let Some(remote) = self.remote_gzip_index(layer) else {
            return Ok(None);
        };
        let Ok(entries) = LayerIndex::read_from(&cache.index_path(layer)) else {
            return Ok(None);
        };
        let record = self.ranges_dir(layer).join(REMOTE_GZIP_INDEX);
        match self.fetch_deferred_gzip_index(layer, &remote, &entries)? {
            Some(index) => {
                index
                    .write_to(&path)
                    .map_err(|e| layer_error(layer, layer::ZranError::Io(e)))?;
                let _ = fs::remove_file(&record);
                Ok(Some(index))
            }
            None => {
                let _ = fs::remove_file(&record);
                Ok(None)
            }
        }
    }

    /// How much of lazy layer `layer` is fetched.
    pub fn lazy_progress(&self, layer: &Digest) -> Result<LazyProgress> {
        let info = self
            .blob(layer)?
            .ok_or_else(|| StoreError::NotFound(format!("layer {layer}")))?;
        let mut progress = LazyProgress {
            fetched_bytes: 0,
            total_bytes: info.size,
        };
        if info.state == BlobState::Present {
            progress.fetched_bytes = info.size;
            return Ok(progress);
        }
        let fetched = read_spans(&self.ranges_dir(layer));
        if fetched.is_empty() {
            return Ok(progress);
        }
        let cache =
            CacheDir::new(self.layer_cache_dir(layer)).map_err(|e| layer_error(layer, e))?;
        if let Ok(index) = GzipIndex::read_from(&cache.gzip_index_path(layer)) {
            progress.fetched_bytes = fetched
                .iter()
                .filter_map(|span| index.span(*span))
                .map(|span| span.compressed.end - span.compressed.start)
                .sum();
        }
        Ok(progress)
    }

    /// Builds the indexes of lazy layer `layer` (called by `rebuild_indexes` with
    /// the layer's lock held): a gzip layer of [`SMALL_LAYER`] or more is streamed
    /// once (blob digest and diff_id checked on the way, bytes not stored); other
    /// layers are fetched whole and stored, becoming ordinary layers.
    pub(crate) fn index_lazy_layer(
        &self,
        layer: &Digest,
        cache: &CacheDir,
    ) -> Result<(LayerIndex, Option<GzipIndex>)> {
        let info = self
            .blob(layer)?
            .ok_or_else(|| StoreError::NotFound(format!("layer {layer}")))?;
        if info.state == BlobState::Bad {
            return Err(bad_layer(layer));
        }
        let compression = LayerCompression::from_media_type(&info.media_type)
            .ok_or_else(|| problem(layer, format!("{} is not a layer type", info.media_type)))?;
        if compression != LayerCompression::Gzip || info.size < SMALL_LAYER {
            let indexed = self.complete_locked(layer, None, Unpack::No)?;
            let gzip = match indexed.checkpoints {
                Some(checkpoints) => Some(
                    GzipIndex::new(*layer, indexed.index.diff_id, checkpoints)
                        .map_err(|e| layer_error(layer, e))?,
                ),
                None => None,
            };
            return Ok((indexed.index, gzip));
        }
        let (client, repository) = self.origin_client(layer)?;
        let started = std::time::Instant::now();
        let body = client.get_blob(&repository, layer, Some(info.size))?;
        let mut hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, body));
        let what = format!("{}/{repository}: layer {layer}", client.endpoint().name);
        let read_error = |e: layer::LayerError| match e {
            layer::LayerError::Io(io) => super::pull::remote_cause(StoreError::SourceRead {
                what: what.clone(),
                source: io,
            }),
            other => StoreError::Layer {
                what: what.clone(),
                source: other,
            },
        };
        let (index, checkpoints) = {
            let mut builder =
                layer::GzipIndexBuilder::new(&mut hashing).map_err(|e| read_error(e.into()))?;
            let index = layer::index_layer(&mut builder, &mut DiscardSink).map_err(read_error)?;
            let checkpoints = builder.finish().map_err(|e| read_error(e.into()))?;
            (index, checkpoints)
        };
        io::copy(&mut hashing, &mut io::sink())
            .map_err(|e| read_error(layer::LayerError::Io(e)))?;
        let (actual, len) = hashing.finish();
        if actual != *layer || len != info.size {
            return Err(StoreError::BadImage {
                what,
                problem: format!(
                    "the registry served {len} bytes hashing to {actual} ({} expected)",
                    info.size
                ),
            });
        }
        if let Some(expected) = info.diff_id {
            if index.diff_id.0 != expected {
                self.mark_bad(layer, "its content does not match the config's diff_id");
                return Err(StoreError::DiffIdMismatch {
                    what,
                    actual: index.diff_id,
                    expected: DiffId(expected),
                });
            }
        }
        let gzip = GzipIndex::new(*layer, index.diff_id, checkpoints)
            .map_err(|e| layer_error(layer, e))?;
        gzip.write_to(&cache.gzip_index_path(layer))
            .map_err(|e| layer_error(layer, layer::ZranError::Io(e)))?;
        index
            .write_to(&cache.index_path(layer))
            .map_err(|e| layer_error(layer, e))?;
        log::info!(
            "indexed lazy layer {layer} by streaming it once ({} bytes) in {:.1?}",
            info.size,
            started.elapsed()
        );
        Ok((index, Some(gzip)))
    }

    /// Marks a stored layer bad and removes its blob, so that it is absent as a bad
    /// lazy layer is: one a layout write committed before its diff_id was checked
    /// (`staging.rs`), found not to match (then, or after a crash, `layers.rs`).
    pub(crate) fn mark_stored_layer_bad(&self, layer: &Digest, why: &str) -> Result<()> {
        self.mark_bad(layer, why);
        Ok(self.cas.remove(layer)?)
    }

    /// Marks a layer bad (logged once): reads give EIO, `fsck` names it.
    fn mark_bad(&self, layer: &Digest, why: &str) {
        log::error!("layer {layer} is bad: {why}");
        let mut conn = self.conn();
        if let Ok(tx) = meta::write_tx(&mut conn) {
            if meta::set_blob_state(&tx, layer, BlobState::Bad).is_ok() {
                let _ = tx.commit();
            }
        }
        drop(conn);
        self.drop_lazy_cache(layer);
        self.note_change();
    }

    /// Completes lazy layer `layer`: its missing bytes fetched (reusing the ranges
    /// fetched already), checked against its digest and diff_id as an import checks
    /// them, moved into `blobs/`, the row made `present`. A layer already present is
    /// left alone. A mismatch makes it `bad`.
    pub fn complete_layer(&self, layer: &Digest) -> Result<()> {
        let _lock = LayerLock::acquire(&self.layer_cache_dir(layer).join(LOCK))?;
        match self.blob_state(layer)? {
            Some(BlobState::Lazy) => {}
            Some(BlobState::Bad) => return Err(bad_layer(layer)),
            Some(BlobState::Present) => return Ok(()),
            None => return Err(StoreError::NotFound(format!("layer {layer}"))),
        }
        let gzip = GzipIndex::read_from(
            &CacheDir::new(self.layer_cache_dir(layer))
                .map_err(|e| layer_error(layer, e))?
                .gzip_index_path(layer),
        )
        .ok()
        .filter(|index| index.layer() == *layer);
        self.complete_locked(layer, gzip.as_ref(), Unpack::No)
            .map(|_| ())
    }

    /// Completes every lazy layer an image reaches (export, push).
    pub fn complete_image(&self, top: &Digest) -> Result<usize> {
        let mut completed = 0;
        for info in self.reachable_blobs(top)? {
            if info.state != BlobState::Present {
                self.complete_layer(&info.digest)?;
                completed += 1;
            }
        }
        Ok(completed)
    }

    /// [`Store::complete_layer`] with the lock held; `gzip` (its seekable index)
    /// lets the fetched ranges be reused.
    fn complete_locked(
        &self,
        layer: &Digest,
        gzip: Option<&GzipIndex>,
        unpack: Unpack,
    ) -> Result<pipeline::IndexedLayer> {
        let info = self
            .blob(layer)?
            .ok_or_else(|| StoreError::NotFound(format!("layer {layer}")))?;
        let compression = LayerCompression::from_media_type(&info.media_type)
            .ok_or_else(|| problem(layer, format!("{} is not a layer type", info.media_type)))?;
        let (client, repository) = self.origin_client(layer)?;
        let what = format!("{}/{repository}: layer {layer}", client.endpoint().name);
        let dir = self.ranges_dir(layer);
        let reused = match gzip {
            Some(index) if !read_spans(&dir).is_empty() => {
                let mut ranges = Ranges::open(&dir)?;
                match self.fetch_spans(
                    &client,
                    &repository,
                    layer,
                    index,
                    &mut ranges,
                    0..index.span_count(),
                ) {
                    Ok(()) => {
                        // The bytes before the first span: the gzip header.
                        let head = index.span(0).map_or(0, |s| s.compressed.start);
                        if head > 0 {
                            let mut bytes = Vec::new();
                            client
                                .get_blob_range(&repository, layer, 0, head - 1)?
                                .read_to_end(&mut bytes)
                                .map_err(|source| {
                                    super::pull::remote_cause(StoreError::SourceRead {
                                        what: what.clone(),
                                        source,
                                    })
                                })?;
                            ranges
                                .data
                                .write_all_at(&bytes, 0)
                                .map_err(io_error(&dir))?;
                        }
                        Some(ranges.data)
                    }
                    Err(StoreError::Remote(e)) if ranges_unusable(&e) => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let cache =
            CacheDir::new(self.layer_cache_dir(layer)).map_err(|e| layer_error(layer, e))?;
        let mut discard = DiscardSink;
        let mut unpacking = CompletionSink {
            cache: &cache,
            materialized: read_contents(&dir),
            stored: HashMap::new(),
            mismatched: 0,
        };
        let sink: &mut (dyn layer::ContentSink + Send) = match unpack {
            Unpack::Yes => &mut unpacking,
            Unpack::No => &mut discard,
        };
        // Fetched ranges reused: `ranges/data` is hashed on the way and becomes the
        // blob itself (no copy) once all of it checks, diff_id included. Else the
        // blob is fetched into a writer, which commits it when its digest checks (a
        // diff_id mismatch then removes it again, below).
        let (indexed, stored) = match &reused {
            Some(file) => {
                let mut hashing =
                    HashingReader::new(io::BufReader::with_capacity(1 << 20, file.take(info.size)));
                let indexed =
                    pipeline::write_and_index_into(&mut hashing, None, compression, &what, sink);
                let (digest, size) = hashing.finish();
                let stored = if size != info.size {
                    Err(CasError::SizeMismatch {
                        what: what.clone(),
                        expected: info.size,
                        actual: size,
                    })
                } else if digest != *layer {
                    Err(CasError::DigestMismatch {
                        what: what.clone(),
                        expected: *layer,
                        actual: digest,
                    })
                } else {
                    Ok(())
                };
                (indexed, stored)
            }
            None => {
                let mut writer = self.cas.writer(
                    Some(Expected {
                        digest: *layer,
                        size: info.size,
                    }),
                    &what,
                )?;
                let mut body = client.get_blob(&repository, layer, Some(info.size))?;
                let indexed = pipeline::write_and_index_into(
                    &mut body,
                    Some(&mut writer),
                    compression,
                    &what,
                    sink,
                );
                // Only a whole pass is a blob to commit (else the error below).
                let stored = match &indexed {
                    Ok(_) => writer.finish().map(|_| ()),
                    Err(_) => Ok(()),
                };
                (indexed, stored)
            }
        };
        let indexed = indexed.map_err(super::pull::remote_cause)?;
        let verified = match stored {
            Ok(()) => match info.diff_id {
                Some(expected) if indexed.index.diff_id.0 != expected => {
                    Err(StoreError::DiffIdMismatch {
                        what: what.clone(),
                        actual: indexed.index.diff_id,
                        expected: DiffId(expected),
                    })
                }
                _ => Ok(()),
            },
            Err(e) => Err(StoreError::Cas(e)),
        };
        let verified = verified.and_then(|()| match reused {
            Some(file) => {
                drop(file);
                self.cas
                    .adopt(&dir.join(DATA), layer)
                    .map(|_| ())
                    .map_err(StoreError::Cas)
            }
            None => Ok(()),
        });
        if let Err(e) = verified {
            if matches!(
                e,
                StoreError::DiffIdMismatch { .. }
                    | StoreError::Cas(
                        CasError::DigestMismatch { .. } | CasError::SizeMismatch { .. }
                    )
            ) {
                if self.cas.contains(layer) && !matches!(e, StoreError::Cas(_)) {
                    let _ = self.cas.remove(layer);
                }
                self.mark_bad(layer, &e.to_string());
            }
            return Err(e);
        }
        self.save_layer_index(layer, &indexed)?;
        {
            let mut conn = self.conn();
            let tx = meta::write_tx(&mut conn)?;
            meta::set_blob_state(&tx, layer, BlobState::Present)?;
            tx.commit()?;
        }
        self.note_change();
        self.drop_lazy_cache(layer);
        log::info!("lazy layer {layer} is complete and verified");
        if unpack == Unpack::Yes {
            if unpacking.mismatched > 0 {
                // Served bytes that the verified layer does not hold: only a lying
                // index artifact (a wrong window) can do that. Start the cache afresh.
                log::warn!(
                    "lazy layer {layer}: {} files read before it was complete differ from the \
                     verified layer (its index artifact lied); they are unpacked again",
                    unpacking.mismatched
                );
                for sub in [layer::CONTENT_DIR, layer::TMP_DIR] {
                    let _ = fs::remove_dir_all(cache.root().join(sub));
                }
            } else {
                let mut unpacked = indexed.index.clone();
                for (position, id) in &unpacking.stored {
                    if let Some(entry) = unpacked.entries.get_mut(*position) {
                        entry.content = ContentRef::Cached(*id);
                    }
                }
                self.save_unpacked_index(layer, &cache, &unpacked)?;
            }
        }
        Ok(indexed)
    }

    /// Makes sure spans `wanted` of `layer` are in `ranges` with good bytes:
    /// recorded spans are checked again, missing ones fetched (adjacent ones in one
    /// ranged GET, at most [`layer::zran::MAX_FETCH`] each), checked against their
    /// sha256, written and synced, then recorded.
    fn fetch_spans(
        &self,
        client: &Client,
        repository: &str,
        layer: &Digest,
        index: &GzipIndex,
        ranges: &mut Ranges,
        wanted: Range<usize>,
    ) -> Result<()> {
        let dir = ranges.dir.clone();
        // Recorded spans whose bytes do not check are fetched again.
        let mut damaged = Vec::new();
        for span_index in wanted.clone() {
            if !ranges.fetched.contains(&span_index) {
                continue;
            }
            let Some(span) = index.span(span_index) else {
                continue;
            };
            let mut bytes = vec![0u8; (span.compressed.end - span.compressed.start) as usize];
            let good = ranges
                .data
                .read_exact_at(&mut bytes, span.compressed.start)
                .is_ok()
                && Sha256::digest(&bytes).as_slice() == span.sha256;
            if !good {
                damaged.push(span_index);
            }
        }
        if !damaged.is_empty() {
            log::warn!(
                "lazy layer {layer}: {} fetched spans are damaged; fetching them again",
                damaged.len()
            );
            ranges.forget(&damaged)?;
        }
        let mut first = wanted.start;
        while first < wanted.end {
            if ranges.fetched.contains(&first) {
                first += 1;
                continue;
            }
            let start = index.span(first).expect("in range").compressed.start;
            let mut last = first + 1;
            while last < wanted.end
                && !ranges.fetched.contains(&last)
                && index.span(last).expect("in range").compressed.end - start
                    <= layer::zran::MAX_FETCH
            {
                last += 1;
            }
            let run = first..last;
            let compressed = index.compressed_range(run.clone()).expect("in range");
            let mut bytes = Vec::with_capacity((compressed.end - compressed.start) as usize);
            let object = format!(
                "{}/{repository}: layer {layer} bytes {}-{}",
                client.endpoint().name,
                compressed.start,
                compressed.end - 1
            );
            client
                .get_blob_range(repository, layer, compressed.start, compressed.end - 1)?
                .read_to_end(&mut bytes)
                .map_err(|source| {
                    super::pull::remote_cause(StoreError::SourceRead {
                        what: object.clone(),
                        source,
                    })
                })?;
            index
                .verify_spans(run.clone(), &bytes)
                .map_err(|e| StoreError::BadImage {
                    what: object.clone(),
                    problem: e.to_string(),
                })?;
            ranges
                .data
                .write_all_at(&bytes, compressed.start)
                .and_then(|()| ranges.data.sync_data())
                .map_err(io_error(&dir))?;
            crate::failpoint::hit("lazy.before_record");
            ranges.note(run)?;
            first = last;
        }
        Ok(())
    }

    /// Opens the content of entry `entry` of `layer` when the layer is lazy:
    /// `Ok(None)` when it is an ordinary (present) layer, to be read the usual way.
    /// Materializes the file (and every other file lying wholly in the spans it
    /// inflates) into the layer's cache first.
    pub(crate) fn open_lazy_entry(&self, layer: &Digest, entry: usize) -> Result<Option<File>> {
        match self.blob_state(layer)? {
            Some(BlobState::Lazy) => {}
            Some(BlobState::Bad) => return Err(bad_layer(layer)),
            _ => return Ok(None),
        }
        let cached = self.lazy_layer(layer)?;
        let index = &*cached.index;
        let position = data_entry(index, entry)
            .ok_or_else(|| problem(layer, format!("entry {entry} is not a regular file")))?;
        let cache =
            CacheDir::new(self.layer_cache_dir(layer)).map_err(|e| layer_error(layer, e))?;
        let dir = self.ranges_dir(layer);
        if let Some(file) = self.open_materialized(layer, &cached, &cache, &dir, position)? {
            return Ok(Some(file));
        }
        let _lock = LayerLock::acquire(&cache.root().join(LOCK))?;
        // Another thread or process may have done it while we waited, or completed
        // the layer.
        match self.blob_state(layer)? {
            Some(BlobState::Lazy) => {}
            Some(BlobState::Bad) => return Err(bad_layer(layer)),
            _ => return Ok(None),
        }
        if let Some(file) = self.open_materialized(layer, &cached, &cache, &dir, position)? {
            return Ok(Some(file));
        }
        let gzip = {
            // Under the layer's lock: no other thread fetches it meanwhile.
            let mut known = crate::sys::lock(&cached.gzip);
            if known.is_none() {
                *known = self.lazy_gzip_index(layer, &cache)?.map(Arc::new);
            }
            known.clone()
        };
        let Some(gzip) = gzip else {
            // No seekable index (lost from the cache, or the registry's failed its
            // checks): fetch the layer whole.
            self.complete_locked(layer, None, Unpack::Yes)?;
            return Ok(None);
        };
        let (client, repository) = self.origin_client(layer)?;
        let mut ranges = Ranges::open(&dir)?;
        if let Some(spans) = target_spans(&cached.index, &gzip, position) {
            let total = gzip.span_count();
            if spans.len() >= BULK_READ_SPANS && spans.len() * BULK_READ_FRACTION >= total {
                // One file that is much of the layer (a big binary, a database):
                // the layer is completed and unpacked in one pass instead, streamed
                // whole when little of it is here (download, inflate and hashing
                // then run at once, as in a pull), else from the fetched ranges.
                let reuse = ranges.fetched.len() * BULK_READ_FRACTION >= total;
                drop(ranges);
                log::info!(
                    "lazy layer {layer}: a file spans {} of its {total} spans; completing it",
                    spans.len()
                );
                self.complete_locked(layer, reuse.then_some(&*gzip), Unpack::Yes)?;
                return Ok(None);
            }
        }
        match self.materialize(
            &client,
            &repository,
            layer,
            &cache,
            &cached,
            &gzip,
            &mut ranges,
            position,
        ) {
            Ok(()) => {}
            Err(StoreError::Remote(e)) if ranges_unusable(&e) => {
                log::warn!("{e}; fetching layer {layer} whole instead");
                self.complete_locked(layer, None, Unpack::Yes)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let fetched = ranges.fetched.len();
        let spans = gzip.span_count();
        let bulk = fetched >= BULK_READ_SPANS
            && fetched * BULK_READ_FRACTION >= spans
            && !cached.bulk_failed.load(Ordering::Relaxed);
        if fetched >= spans || bulk {
            // Every span is here, or so much of the layer was read that the reader
            // is scanning it: the layer becomes an ordinary one (the rest fetched
            // in large ranges, then one verifying pass that unpacks it).
            drop(ranges);
            if bulk && fetched < spans {
                log::info!(
                    "lazy layer {layer}: {fetched} of {spans} spans read; fetching the rest"
                );
            }
            if let Err(e) = self.complete_locked(layer, Some(&gzip), Unpack::Yes) {
                log::error!("completing lazy layer {layer}: {e}");
                cached.bulk_failed.store(true, Ordering::Relaxed);
            }
        }
        let dir = self.ranges_dir(layer);
        match self.open_materialized(layer, &cached, &cache, &dir, position)? {
            Some(file) => Ok(Some(file)),
            // Completed meanwhile (its record dropped): open it the usual way.
            None if !self.is_absent(layer)? => Ok(None),
            None => Err(problem(layer, "materialized file went missing")),
        }
    }

    /// The materialized content of entry `entry` of lazy layer `layer` when it needs
    /// no work now: the layer's index is in memory, the file materialized and
    /// already checked by this process. For the FUSE workers, so that files fetched
    /// before keep opening while a fetch of the same layer waits on its registry.
    pub(crate) fn open_lazy_entry_if_ready(&self, layer: &Digest, entry: usize) -> Option<File> {
        let cached = crate::sys::lock(&self.lazy.layers).get(layer)?.clone();
        let position = data_entry(&cached.index, entry)?;
        let id = cached
            .contents(&self.ranges_dir(layer))
            .get(&position)
            .copied()?;
        let cache = CacheDir::new(self.layer_cache_dir(layer)).ok()?;
        let file = File::open(cache.content_path(&id)).ok()?;
        if file.metadata().ok()?.len() != cached.index.entries[position].size {
            return None;
        }
        match self.cas().verified_files().is_verified(&file, &id.0) {
            Ok(true) => Some(file),
            _ => None,
        }
    }

    /// The materialized content of data entry `position`, if recorded and good.
    fn open_materialized(
        &self,
        layer: &Digest,
        cached: &LazyLayer,
        cache: &CacheDir,
        dir: &Path,
        position: usize,
    ) -> Result<Option<File>> {
        let Some(id) = cached.contents(dir).get(&position).copied() else {
            return Ok(None);
        };
        let entry = &cached.index.entries[position];
        let path = cache.content_path(&id);
        let Ok(file) = File::open(&path) else {
            return Ok(None); // evicted: materialized again
        };
        if file.metadata().map(|m| m.len()).ok() != Some(entry.size) {
            return Ok(None);
        }
        let verified = self.cas().verified_files();
        match verified.check_with(&file, &id.0, |file| {
            layer::content_file_id(file, entry).map(|id| Digest::from_bytes(id.0))
        }) {
            Ok(None) => Ok(Some(file)),
            Ok(Some(actual)) => {
                log::warn!(
                    "layer {layer}: cached content {} is damaged ({actual}); fetching it again",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                Ok(None)
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Fetches and inflates the spans holding data entry `position` (header and
    /// data) and writes it, and every other file lying wholly in those spans, into
    /// `content/`; records them in `ranges/contents`.
    #[allow(clippy::too_many_arguments)]
    fn materialize(
        &self,
        client: &Client,
        repository: &str,
        layer: &Digest,
        cache: &CacheDir,
        cached: &LazyLayer,
        gzip: &GzipIndex,
        ranges: &mut Ranges,
        position: usize,
    ) -> Result<()> {
        let index = &*cached.index;
        let target = &index.entries[position];
        let ContentRef::StreamOffset(offset) = target.content else {
            return Err(problem(
                layer,
                format!("entry {position} has no stream offset"),
            ));
        };
        if offset < BLOCK {
            return Err(problem(
                layer,
                "an entry's data cannot start before its header",
            ));
        }
        let needed = offset - BLOCK..(offset + target.stored_size()).max(offset);
        let spans = gzip
            .spans_for(needed.clone())
            .map_err(|e| layer_error(layer, e))?;
        self.fetch_spans(client, repository, layer, gzip, ranges, spans.clone())?;
        let first = gzip.span(spans.start).expect("in range");
        let last = gzip.span(spans.end - 1).expect("in range");
        let decoded = first.uncompressed.start..last.uncompressed.end;
        let known = cached.contents(&ranges.dir);
        // The target, and every other file wholly inside what is inflated anyway.
        let mut wanted: Vec<Wanted> = Vec::new();
        for (i, entry) in index.entries.iter().enumerate() {
            if entry.kind != EntryKind::File {
                continue;
            }
            let ContentRef::StreamOffset(at) = entry.content else {
                continue;
            };
            if at < BLOCK {
                continue;
            }
            let range = at - BLOCK..at + entry.stored_size();
            let inside = range.start >= decoded.start && range.end <= decoded.end;
            if i != position && (!inside || known.contains_key(&i)) {
                continue;
            }
            let data = if entry.stored_size() > IN_MEMORY {
                let temp = tempfile::NamedTempFile::new_in(cache.root().join(layer::TMP_DIR))
                    .map_err(io_error(cache.root()))?;
                Collect::Temp {
                    file: temp,
                    hasher: entry.sparse.is_none().then(Sha256::new),
                    written: 0,
                }
            } else {
                Collect::Memory(Vec::with_capacity(entry.stored_size() as usize))
            };
            wanted.push(Wanted {
                entry: i,
                header: range.start,
                end: range.end,
                header_bytes: Vec::with_capacity(BLOCK as usize),
                data,
            });
        }
        wanted.sort_by_key(|w| w.header);
        let inflate_from = wanted.first().map_or(needed.start, |w| w.header);
        let inflate_to = wanted.iter().map(|w| w.end).max().unwrap_or(needed.end);
        let mut next = 0usize;
        let mut position_now = inflate_from;
        gzip.read_with(
            &LocalSpans(&ranges.data),
            inflate_from..inflate_to,
            &mut |bytes| {
                let end = position_now + bytes.len() as u64;
                while next < wanted.len() && wanted[next].end <= position_now {
                    next += 1;
                }
                let mut i = next;
                while i < wanted.len() && wanted[i].header < end {
                    wanted[i]
                        .take(position_now, bytes)
                        .map_err(layer::ZranError::Io)?;
                    i += 1;
                }
                position_now = end;
                Ok(())
            },
        )
        .map_err(|e| layer_error(layer, e))?;
        let mut record = String::new();
        let mut added = Vec::new();
        let mut target_error = None;
        for mut file in wanted {
            let entry = &index.entries[file.entry];
            if let Err(why) = check_tar_header(&file.header_bytes, entry) {
                let message = format!(
                    "{}: {why} (the layer's index does not fit its bytes)",
                    String::from_utf8_lossy(&entry.path)
                );
                if file.entry == position {
                    target_error = Some(problem(layer, message));
                } else {
                    log::warn!("layer {layer}: {message}");
                }
                continue;
            }
            let stored = entry.stored_size();
            let data = std::mem::replace(&mut file.data, Collect::Memory(Vec::new()));
            let id = match data {
                Collect::Memory(bytes) => store_entry(cache, entry, &mut bytes.as_slice(), stored),
                // An ordinary file, hashed as it came: the temporary file is it.
                Collect::Temp {
                    file: temp,
                    hasher: Some(hasher),
                    written,
                } if written == stored => temp
                    .as_file()
                    .set_len(stored)
                    .and_then(|()| cache.adopt_content(temp, ContentId(hasher.finalize().into()))),
                Collect::Temp {
                    hasher: Some(_), ..
                } => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file content ends early",
                )),
                Collect::Temp {
                    file: mut temp,
                    hasher: None,
                    ..
                } => {
                    use std::io::Seek;
                    let temp = temp.as_file_mut();
                    temp.seek(io::SeekFrom::Start(0)).and_then(|_| {
                        let mut reader = io::BufReader::new(&*temp);
                        store_entry(cache, entry, &mut reader, stored)
                    })
                }
            }
            .map_err(io_error(cache.root()))?;
            if let Ok(content) = File::open(cache.content_path(&id)) {
                self.cas().verified_files().trust(&content, &id.0);
            }
            record.push_str(&format!("{} {}\n", file.entry, id.hex()));
            added.push((file.entry, id));
        }
        if !record.is_empty() {
            let path = ranges.dir.join(CONTENTS);
            let before = fs::metadata(&path).map_or(0, |m| m.len());
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(record.as_bytes()))
                .map_err(io_error(&path))?;
            cached.added_contents(before, before + record.len() as u64, &added);
        }
        match target_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Lazy layers for `fsck`: each fetched span checked against its sha256
    /// (damaged ones go to `cache_damaged`; `repair` forgets them), bad layers named.
    pub(crate) fn check_lazy_layers(
        &self,
        report: &mut super::FsckReport,
        repair: bool,
    ) -> Result<()> {
        let absent = meta::absent_blobs(&self.conn())?;
        for (layer, state) in absent {
            if state == BlobState::Bad {
                report.bad.push(format!(
                    "{layer}: layer whose bytes failed their digest or the config's diff_id; pull or copy the image again"
                ));
                continue;
            }
            report.lazy.push(layer.to_string());
            let dir = self.ranges_dir(&layer);
            let fetched = read_spans(&dir);
            if fetched.is_empty() {
                continue;
            }
            let cache =
                CacheDir::new(self.layer_cache_dir(&layer)).map_err(|e| layer_error(&layer, e))?;
            let Ok(gzip) = GzipIndex::read_from(&cache.gzip_index_path(&layer)) else {
                continue;
            };
            let _lock = LayerLock::acquire(&cache.root().join(LOCK))?;
            let Ok(data) = File::open(dir.join(DATA)) else {
                continue;
            };
            let mut damaged = Vec::new();
            for span_index in &fetched {
                report.cache_files_checked += 1;
                let Some(span) = gzip.span(*span_index) else {
                    damaged.push(*span_index);
                    continue;
                };
                let mut bytes = vec![0u8; (span.compressed.end - span.compressed.start) as usize];
                let good = data
                    .read_exact_at(&mut bytes, span.compressed.start)
                    .is_ok()
                    && Sha256::digest(&bytes).as_slice() == span.sha256;
                if !good {
                    damaged.push(*span_index);
                }
            }
            if damaged.is_empty() {
                continue;
            }
            report.cache_damaged.push(format!(
                "cache/layers/{}/{RANGES}: {} fetched spans do not match their sha256",
                layer.hex(),
                damaged.len()
            ));
            if repair {
                let mut ranges = Ranges::open(&dir)?;
                ranges.forget(&damaged)?;
                report.repaired.push(format!(
                    "cache/layers/{}/{RANGES}: damaged spans forgotten (fetched again when read)",
                    layer.hex()
                ));
            }
        }
        Ok(())
    }
}

/// The spans holding data entry `position`'s tar header and stored data.
fn target_spans(index: &LayerIndex, gzip: &GzipIndex, position: usize) -> Option<Range<usize>> {
    let entry = index.entries.get(position)?;
    let ContentRef::StreamOffset(offset) = entry.content else {
        return None;
    };
    let start = offset.checked_sub(BLOCK)?;
    gzip.spans_for(start..(offset + entry.stored_size()).max(offset))
        .ok()
}

/// Stores one file's stored bytes as content (sparse files at their offsets).
fn store_entry(
    cache: &CacheDir,
    entry: &Entry,
    data: &mut dyn Read,
    stored: u64,
) -> io::Result<ContentId> {
    match &entry.sparse {
        None => cache.store_content(data, stored, false),
        Some(chunks) => cache.store_sparse_content(data, chunks, entry.size, false),
    }
}

/// Whether completing a lazy layer also unpacks it: yes when a read completes it
/// (the mount is reading the layer and would unpack it next), no for `pull`,
/// `export` and `push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unpack {
    Yes,
    No,
}

/// Completing a lazy layer that is being read: every regular file goes into the
/// layer's cache as an unpack puts it, in the one pass that verifies the layer,
/// except files materialized before, which are hashed from the verified stream and
/// kept (not written again) when they match. Gives the indexer stream offsets, so
/// the index it builds is the layer's stream index; `stored` is what the unpacked
/// index refers to instead.
struct CompletionSink<'a> {
    cache: &'a CacheDir,
    materialized: HashMap<usize, ContentId>,
    stored: HashMap<usize, ContentId>,
    mismatched: usize,
}

impl layer::ContentSink for CompletionSink<'_> {
    fn file(&mut self, file: layer::SinkFile<'_>, data: &mut dyn Read) -> io::Result<ContentRef> {
        let kept = self
            .materialized
            .get(&file.entry_index)
            .copied()
            .filter(|id| {
                file.sparse.is_none()
                    && fs::metadata(self.cache.content_path(id)).is_ok_and(|m| m.len() == file.size)
            });
        let id = match (kept, file.sparse) {
            (Some(known), _) => {
                let mut hashing = HashingReader::new(data);
                io::copy(&mut hashing, &mut io::sink())?;
                let (digest, read) = hashing.finish();
                let actual = ContentId(*digest.as_bytes());
                if read != file.size || actual != known {
                    self.mismatched += 1;
                    return Ok(ContentRef::StreamOffset(file.stream_offset));
                }
                known
            }
            (None, None) => self.cache.store_content(data, file.size, false)?,
            (None, Some(chunks)) => self
                .cache
                .store_sparse_content(data, chunks, file.size, false)?,
        };
        self.stored.insert(file.entry_index, id);
        Ok(ContentRef::StreamOffset(file.stream_offset))
    }
}

pub(super) fn bad_layer(layer: &Digest) -> StoreError {
    problem(
        layer,
        "its bytes did not match its digest or the config's diff_id (pull or copy the image again)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64, typeflag: u8) -> Vec<u8> {
        let mut block = vec![0u8; 512];
        block[..name.len()].copy_from_slice(name.as_bytes());
        let size_text = format!("{size:011o}\0");
        block[124..136].copy_from_slice(size_text.as_bytes());
        block[156] = typeflag;
        block[257..263].copy_from_slice(b"ustar\0");
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|b| u64::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    fn entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size,
            link_target: None,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Box::new([]),
            sparse: None,
            content: ContentRef::StreamOffset(512),
        }
    }

    #[test]
    fn tar_header_checks() {
        let good = header("./etc/os-release", 10, b'0');
        assert!(check_tar_header(&good, &entry("etc/os-release", 10)).is_ok());
        assert!(check_tar_header(&good, &entry("etc/passwd", 10)).is_err());
        assert!(check_tar_header(&good, &entry("etc/os-release", 11)).is_err());
        let mut damaged = good.clone();
        damaged[3] ^= 1;
        assert!(check_tar_header(&damaged, &entry("etc/os-release", 10)).is_err());
        let dir = header("etc/", 0, b'5');
        assert!(check_tar_header(&dir, &entry("etc", 0)).is_err());
        assert!(check_tar_header(&[0u8; 100], &entry("etc", 0)).is_err());
        // A long name leaves its first 100 bytes in the header.
        let long = "d/".repeat(60) + "file";
        let truncated = header(&long[..100], 5, b'0');
        assert!(check_tar_header(&truncated, &entry(&long, 5)).is_ok());
    }

    #[test]
    fn tar_numbers() {
        assert_eq!(tar_number(b"00000000012\0"), Some(10));
        assert_eq!(tar_number(b"\0\0\0"), Some(0));
        assert_eq!(tar_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(tar_number(b"9"), None);
    }
}
