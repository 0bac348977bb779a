//! Import: reads images from an [`ImageSource`], verifies every blob against its
//! descriptor and every layer against the config's `diff_ids`, writes what is new,
//! and records everything in one metadata transaction. Progress goes to the
//! [`Progress`] of the options; the import never looks at a terminal.
//!
//! Two phases: a walk over the manifests, indexes and configs (small, sequential:
//! each tells what comes next) collects the blobs to transfer; then up to
//! [`ImportOptions::jobs`] threads fetch, verify, write and index those blobs at
//! once; then one commit. A registry pull and a local import are the same code.
//!
//! Safety against concurrent deletion: every digest is leased (a committed row)
//! before the import looks at or writes its file; the leases go away in the commit
//! that records the references. Nothing from a failed import stays referenced, and
//! the blobs it wrote are deleted before it returns (unless another import holds
//! them).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::archive::{self, DecompressLimits, ImageSource, SourceImage};
use crate::digest::{DiffId, Digest};
use crate::image::{self, Descriptor, LayerCompression, Parsed};
use crate::layer::LayerIndex;
use crate::reference::Reference;
use crate::store::cas::Expected;
use crate::store::layers::{layer_warnings, LayerWarnings};
use crate::store::meta::{self, BlobKind, Edge, EdgeKind, NewBlob, Origin, Owner};
use crate::store::pipeline::{self, IndexedLayer};
use crate::store::progress::{NoProgress, Progress, ProgressReader};
use crate::store::staging::{DeferredCheck, PreparedLayer};
use crate::store::{Store, StoreError, MAX_JSON_BLOB};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How many layers a local import (`imagefs import`) processes at once by default.
/// Measured on the 2-core machine (`scripts/bench.sh` case 1 images, distro + big,
/// 1.5 GB of gzip layers, four runs each): 1 job 14.6 s, 2 jobs 15.6 s, 4 jobs 15.0 s
/// (medians). Each layer already keeps two cores busy (hash and write, decompress,
/// index: `pipeline`), so a second layer at once does not help locally; a pull,
/// which waits on the network, defaults to 4.
pub const DEFAULT_IMPORT_JOBS: usize = 1;

/// How many blobs a pull transfers at once by default (SPEC section 6).
pub const DEFAULT_PULL_JOBS: usize = 4;

/// How to import.
#[derive(Clone)]
pub struct ImportOptions {
    /// Registry for names that carry none (default `local`).
    pub registry: String,
    /// Store the one selected image under this reference instead of its own name.
    pub reference: Option<Reference>,
    /// Where progress goes (default: nowhere).
    pub progress: Arc<dyn Progress>,
    /// Bounds on decompressing a `.tar.gz` or `.tar.zst` source archive.
    pub decompress_limits: DecompressLimits,
    /// How many blobs (layers) are fetched, verified and written at once (at least 1).
    pub jobs: usize,
    /// Where every blob of the imported images can be fetched again (a registry
    /// repository), recorded in the same commit; `None` for files.
    pub origin: Option<Origin>,
    /// `pull --lazy`: layers the store lacks are recorded without their bytes
    /// (state `lazy`, diff_id from the config), to be fetched from `origin` when
    /// read (`store/lazy.rs`). Manifests and configs are fetched and verified.
    pub lazy_layers: bool,
    /// Layers the store has as lazy rows stay lazy (their diff_id checked against
    /// the config) instead of being read from the source: for sources with no bytes
    /// of their own (a rewritten `index.json` over the store's blobs).
    pub keep_lazy: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            registry: "local".into(),
            reference: None,
            progress: Arc::new(NoProgress),
            decompress_limits: DecompressLimits::default(),
            jobs: DEFAULT_IMPORT_JOBS,
            origin: None,
            lazy_layers: false,
            keep_lazy: false,
        }
    }
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("registry", &self.registry)
            .field("reference", &self.reference)
            .field("decompress_limits", &self.decompress_limits)
            .field("jobs", &self.jobs)
            .field("origin", &self.origin)
            .field("lazy_layers", &self.lazy_layers)
            .field("keep_lazy", &self.keep_lazy)
            .finish_non_exhaustive()
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The references stored, with their manifest digests.
    pub images: Vec<(String, Digest)>,
    /// Blob files newly written.
    pub blobs_written: u64,
    /// Bytes newly written to blobs/.
    pub bytes_written: u64,
    /// Blobs that were already stored (not written again).
    pub blobs_present: u64,
    /// Blobs read from the source (fetched, for a registry).
    pub blobs_read: u64,
    /// Bytes read from the source (fetched, for a registry).
    pub bytes_read: u64,
    /// Entries the imported images' `rootfs/` leave out (hostile or malformed tar
    /// entries are skipped, not fatal), for each image that has any.
    pub warnings: Vec<ImageWarnings>,
    /// Layers recorded without their bytes (`pull --lazy`), base first.
    pub lazy_layers: Vec<Digest>,
}

/// What one imported image's `rootfs/` leaves out, layer by layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageWarnings {
    /// The reference the image was stored under.
    pub image: String,
    /// The image manifest (under an index, one platform's manifest).
    pub manifest: Digest,
    /// Layers with skipped or changed entries, base first.
    pub layers: Vec<LayerWarnings>,
    /// Why the layers could not be checked, when they could not (the image is
    /// imported all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Leases held by one import; dropped in the commit, or on drop after a failure.
struct Leases<'a> {
    store: &'a Store,
    ids: Vec<i64>,
    digests: HashSet<Digest>,
    owner: Owner,
}

impl<'a> Leases<'a> {
    fn new(store: &'a Store) -> Self {
        Leases {
            store,
            ids: Vec::new(),
            digests: HashSet::new(),
            owner: Owner::current(),
        }
    }

    fn take(&mut self, digest: &Digest) -> Result<()> {
        if self.digests.contains(digest) {
            return Ok(());
        }
        let mut conn = self.store.conn();
        let tx = meta::write_tx(&mut conn)?;
        self.ids
            .extend(meta::add_leases(&tx, &[*digest], self.owner)?);
        tx.commit()?;
        self.digests.insert(*digest);
        Ok(())
    }
}

impl Drop for Leases<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        // Best effort: a lease left behind dies with this process anyway.
        let mut conn = self.store.conn();
        let Ok(tx) = meta::write_tx(&mut conn) else {
            return;
        };
        if meta::drop_leases(&tx, &self.ids).is_ok() {
            let _ = tx.commit();
        }
    }
}

/// One image being imported: where it goes and its top descriptor.
struct Planned {
    destination: Reference,
    descriptor: Descriptor,
}

/// A blob the walk found to transfer: the parallel phase fetches (or re-reads),
/// verifies, writes and indexes it.
struct BlobJob {
    descriptor: Descriptor,
    /// Names the blob in errors.
    what: String,
    work: Work,
}

enum Work {
    /// A layer from the source: written, indexed, checked against its diff_id.
    Layer {
        compression: LayerCompression,
        expected: DiffId,
    },
    /// A layer stored already whose diff_id the metadata lacks (a concurrent delete
    /// took the row; our lease keeps the file): indexed from the stored copy.
    StoredLayer {
        compression: LayerCompression,
        expected: DiffId,
    },
    /// A blob stored as it is, verified by digest and size only.
    Opaque { kind: BlobKind },
}

/// What one finished job did.
struct JobDone {
    digest: Digest,
    /// Bytes written, when this job created the blob file.
    created: Option<u64>,
    /// Read from the source (not the store).
    read: bool,
    /// The layer's index and gzip checkpoints (layers only).
    index: Option<IndexedLayer>,
    /// The diff_id the config gives the layer (layers only).
    expected: Option<DiffId>,
    /// A layer renamed in through a layout and still being indexed: committed with
    /// the config's diff_id, checked by its indexer after the commit.
    deferred: Option<DeferredCheck>,
}

/// A manifest whose layers are checked for skipped entries once they are indexed.
struct PendingCheck {
    image: String,
    manifest: Digest,
    layers: Vec<Digest>,
}

struct Importer<'a, S: ?Sized> {
    store: &'a Store,
    source: &'a S,
    progress: &'a dyn Progress,
    jobs: usize,
    leases: Leases<'a>,
    /// Blobs to record, in discovery order; keyed to avoid duplicates.
    new_blobs: Vec<NewBlob>,
    seen: HashSet<Digest>,
    /// Blob files this import created (deleted again if it fails).
    created: Vec<Digest>,
    report: ImportReport,
    /// Bytes read from the source so far (by every thread).
    bytes_read: AtomicU64,
    /// The reference of the image being visited, for its warnings.
    destination: String,
    /// Blobs to transfer in the parallel phase.
    work: Vec<BlobJob>,
    /// Image manifests to check for skipped entries after the parallel phase.
    checks: Vec<PendingCheck>,
    /// Indexes of the layers built by this import, until their manifests are
    /// checked for skipped entries.
    fresh_indexes: HashMap<Digest, LayerIndex>,
    /// Record layers the store lacks as lazy instead of fetching them.
    lazy_layers: bool,
    /// Layers recorded lazily by this import.
    lazy: Vec<Digest>,
    /// Lazy rows stay lazy (`ImportOptions::keep_lazy`).
    keep_lazy: bool,
    /// Layers committed before their diff_id check (a layout write), told once the
    /// commit is done; dropped uncommitted when the import fails.
    deferred: Vec<(Digest, DeferredCheck)>,
}

impl Store {
    /// Imports the images of the OCI layout, OCI archive or docker-archive at `path`
    /// (SPEC section 4); `name` selects one image by the name it carries there.
    pub fn import(
        &self,
        path: &Path,
        name: Option<&str>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let opened = archive::open_source_with_limits(
            path,
            Some(self.cas.tmp_dir()),
            &options.decompress_limits,
        )?;
        self.import_from(opened.as_ref(), name, options)
    }

    /// Imports the images of an opened source (any [`ImageSource`]: an archive, a
    /// registry); `name` selects one by its name there. Everything the source hands
    /// out is verified.
    pub fn import_from<S>(
        &self,
        source: &S,
        name: Option<&str>,
        options: &ImportOptions,
    ) -> Result<ImportReport>
    where
        S: ImageSource + ?Sized,
        StoreError: From<S::Error>,
    {
        let plan = plan(source, name, options)?;
        let mut importer = Importer {
            store: self,
            source,
            progress: options.progress.as_ref(),
            jobs: options.jobs.max(1),
            leases: Leases::new(self),
            new_blobs: Vec::new(),
            seen: HashSet::new(),
            created: Vec::new(),
            report: ImportReport::default(),
            bytes_read: AtomicU64::new(0),
            destination: String::new(),
            work: Vec::new(),
            checks: Vec::new(),
            fresh_indexes: HashMap::new(),
            lazy_layers: options.lazy_layers,
            lazy: Vec::new(),
            deferred: Vec::new(),
            keep_lazy: options.keep_lazy,
        };
        let result = importer.run(&plan, options.origin.as_ref());
        options.progress.finished();
        match result {
            Ok(()) => {
                let mut report = std::mem::take(&mut importer.report);
                report.bytes_read = importer.bytes_read.load(Ordering::Relaxed);
                Ok(report)
            }
            Err(e) => {
                let created = std::mem::take(&mut importer.created);
                let store = importer.store;
                drop(importer); // drops the leases first
                let _ = store.delete_unreferenced(&created);
                Err(e)
            }
        }
    }
}

/// Decides which images go where.
fn plan<S: ImageSource + ?Sized>(
    source: &S,
    name: Option<&str>,
    options: &ImportOptions,
) -> Result<Vec<Planned>> {
    let selected =
        archive::select_images(source.images(), name).map_err(|error| StoreError::SelectImage {
            source_name: source.describe(),
            source: error,
        })?;
    if selected.is_empty() {
        return Err(StoreError::NoImage {
            source_name: source.describe(),
        });
    }
    let images: Vec<&SourceImage> = selected.iter().collect();
    if let Some(reference) = &options.reference {
        if reference.tag().is_none() {
            return Err(StoreError::Invalid(format!(
                "{reference}: import needs a tag reference, not a digest"
            )));
        }
        let distinct: HashSet<Digest> = images.iter().map(|i| i.descriptor.digest).collect();
        if distinct.len() > 1 {
            let names: Vec<String> = images.iter().filter_map(|i| i.name.clone()).collect();
            return Err(StoreError::AmbiguousSource {
                source_name: source.describe(),
                count: distinct.len(),
                names,
            });
        }
        return Ok(vec![Planned {
            destination: reference.clone(),
            descriptor: images[0].descriptor.clone(),
        }]);
    }
    let mut planned = Vec::new();
    for image in images {
        let parsed = match &image.name {
            Some(text) => {
                Reference::parse_docker_style(text, &options.registry).map_err(|reason| {
                    StoreError::BadImageName {
                        source_name: source.describe(),
                        name: text.clone(),
                        reason,
                    }
                })?
            }
            None => None,
        };
        let Some(destination) = parsed else {
            return Err(StoreError::UnnamedImage {
                source_name: source.describe(),
                manifest: image.descriptor.digest,
                name: image.name.clone(),
            });
        };
        planned.push(Planned {
            destination,
            descriptor: image.descriptor.clone(),
        });
    }
    Ok(planned)
}

fn annotations_json(descriptor: &Descriptor) -> Option<String> {
    if descriptor.annotations.is_empty() {
        None
    } else {
        serde_json::to_string(&descriptor.annotations).ok()
    }
}

fn edge(kind: EdgeKind, position: usize, descriptor: &Descriptor) -> Edge {
    Edge {
        kind,
        position: position as u32,
        child: descriptor.digest,
        media_type: descriptor.media_type.clone(),
        size: descriptor.size,
        platform: descriptor.platform.clone(),
        annotations: annotations_json(descriptor),
        counted: true,
    }
}

impl<S> Importer<'_, S>
where
    S: ImageSource + ?Sized,
    StoreError: From<S::Error>,
{
    fn run(&mut self, plan: &[Planned], origin: Option<&Origin>) -> Result<()> {
        for planned in plan {
            self.destination = planned.destination.to_string();
            self.visit_top(&planned.descriptor)?;
        }
        self.transfer()?;
        self.check_skipped_entries();
        crate::failpoint::hit("import.before_commit");
        let mut doomed = Vec::new();
        let completed;
        {
            let mut conn = self.store.conn();
            let tx = meta::write_tx(&mut conn)?;
            // Children first, so every edge's child row exists when counted.
            let ordered: Vec<NewBlob> = self.new_blobs.iter().rev().cloned().collect();
            let inserted = meta::insert_blobs(&tx, &ordered)?;
            // Lazy layers new to the store are marked so; every other blob of this
            // import has its file now (a plain pull completes a lazy layer here).
            let lazy: HashSet<Digest> = self.lazy.iter().copied().collect();
            for digest in inserted.iter().filter(|d| lazy.contains(d)) {
                meta::set_blob_state(&tx, digest, meta::BlobState::Lazy)?;
            }
            let with_files: Vec<Digest> = ordered
                .iter()
                .map(|b| b.digest)
                .filter(|d| !lazy.contains(d))
                .collect();
            completed = meta::mark_present(&tx, &with_files)?;
            if let Some(origin) = origin {
                for blob in &ordered {
                    meta::add_origins(&tx, &blob.digest, std::slice::from_ref(origin))?;
                }
            }
            for planned in plan {
                let destination = &planned.destination;
                let tag = destination.tag().unwrap_or("latest");
                let (repo_id, _) =
                    meta::ensure_repository(&tx, &destination.registry, &destination.repository)?;
                meta::set_tag(&tx, repo_id, tag, &planned.descriptor.digest, &mut doomed)?;
            }
            meta::drop_leases(&tx, &self.leases.ids)?;
            tx.commit()?;
        }
        self.leases.ids.clear();
        for (_, check) in self.deferred.drain(..) {
            check.committed();
        }
        self.store.note_change();
        for layer in &completed {
            // Fetched ranges and materialized files of a lazy layer now complete.
            self.store.drop_completed_lazy_cache(layer);
        }
        self.report.lazy_layers = std::mem::take(&mut self.lazy);
        for planned in plan {
            self.report
                .images
                .push((planned.destination.to_string(), planned.descriptor.digest));
        }
        self.store.delete_unreferenced(&doomed)?;
        Ok(())
    }

    fn describe(&self, descriptor: &Descriptor) -> String {
        format!("{}: blob {}", self.source.describe(), descriptor.digest)
    }

    /// Leases the digest and returns the blob bytes, from the store when present
    /// (verified when first written) or else from the source, verified and written.
    /// `kind` says whether it is a manifest (or index) or a config.
    fn fetch_json(&mut self, descriptor: &Descriptor, kind: BlobKind) -> Result<Vec<u8>> {
        self.leases.take(&descriptor.digest)?;
        if descriptor.size > MAX_JSON_BLOB {
            return Err(StoreError::BadImage {
                what: self.describe(descriptor),
                problem: format!(
                    "{} bytes is too large for a {} (limit {MAX_JSON_BLOB})",
                    descriptor.size, descriptor.media_type
                ),
            });
        }
        if self.store.cas.contains(&descriptor.digest) {
            let bytes = self.store.read_blob(&descriptor.digest)?;
            if bytes.len() as u64 == descriptor.size {
                self.skipped(descriptor, kind);
                return Ok(bytes);
            }
            // A descriptor with the right digest but wrong size: refuse below.
        }
        let mut bytes = Vec::new();
        let what = self.describe(descriptor);
        self.progress
            .blob_started(&descriptor.digest, kind, descriptor.size);
        let reader = match kind {
            BlobKind::Manifest | BlobKind::Index => {
                self.source.open_manifest(&descriptor.digest)?
            }
            _ => self.source.open_blob(&descriptor.digest)?,
        };
        self.report.blobs_read += 1;
        counted(reader, descriptor, self.progress, &self.bytes_read)
            .take(descriptor.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::SourceRead {
                what: what.clone(),
                source,
            })?;
        let (_, _, created) = self.store.cas.write_bytes(
            &bytes,
            Some(Expected {
                digest: descriptor.digest,
                size: descriptor.size,
            }),
            &what,
        )?;
        self.note_written(&descriptor.digest, created.then_some(descriptor.size));
        Ok(bytes)
    }

    /// A blob found stored already.
    fn skipped(&mut self, descriptor: &Descriptor, kind: BlobKind) {
        self.report.blobs_present += 1;
        self.progress
            .blob_skipped(&descriptor.digest, kind, descriptor.size);
    }

    /// A blob written (`Some(size)` when this import created its file) or found
    /// written by someone else meanwhile (`None`).
    fn note_written(&mut self, digest: &Digest, created: Option<u64>) {
        match created {
            Some(size) => {
                self.created.push(*digest);
                self.report.blobs_written += 1;
                self.report.bytes_written += size;
            }
            None => self.report.blobs_present += 1,
        }
        self.progress.blob_done(digest);
    }

    fn visit_top(&mut self, descriptor: &Descriptor) -> Result<()> {
        self.visit_manifest(descriptor, 0)
    }

    fn visit_manifest(&mut self, descriptor: &Descriptor, depth: usize) -> Result<()> {
        if depth > 8 {
            return Err(StoreError::BadImage {
                what: self.describe(descriptor),
                problem: "indexes nested too deeply".into(),
            });
        }
        if !self.seen.insert(descriptor.digest) {
            return Ok(());
        }
        // Index or manifest is only known once parsed; both come from `/manifests/`.
        let bytes = self.fetch_json(descriptor, BlobKind::Manifest)?;
        let parsed = image::parse_top(&bytes, Some(&descriptor.media_type)).map_err(|source| {
            StoreError::Image {
                what: self.describe(descriptor),
                source,
            }
        })?;
        match parsed {
            Parsed::Index(index) => {
                let mut edges = Vec::new();
                for (position, child) in index.manifests.iter().enumerate() {
                    self.visit_manifest(child, depth + 1)?;
                    edges.push(edge(EdgeKind::Manifest, position, child));
                }
                // Whether the subject edge counts is decided when it is recorded
                // (it does when the subject is stored: meta::insert_blobs).
                edges.extend(index.subject.iter().map(|s| edge(EdgeKind::Subject, 0, s)));
                self.new_blobs.push(NewBlob {
                    digest: descriptor.digest,
                    size: descriptor.size,
                    media_type: index.media_type.clone(),
                    kind: BlobKind::Index,
                    diff_id: None,
                    edges,
                });
            }
            Parsed::Manifest(manifest) => {
                let mut edges = vec![edge(EdgeKind::Config, 0, &manifest.config)];
                let config_bytes =
                    self.fetch_json_or_blob(&manifest.config, manifest.is_image())?;
                let diff_ids = if manifest.is_image() {
                    let config = image::parse_config(config_bytes.as_deref().unwrap_or_default())
                        .map_err(|source| StoreError::Image {
                        what: self.describe(&manifest.config),
                        source,
                    })?;
                    if config.diff_ids.len() != manifest.layers.len() {
                        return Err(StoreError::BadImage {
                            what: self.describe(descriptor),
                            problem: format!(
                                "manifest lists {} layers but its config has {} diff_ids",
                                manifest.layers.len(),
                                config.diff_ids.len()
                            ),
                        });
                    }
                    Some(config.diff_ids)
                } else {
                    None
                };
                for (position, layer) in manifest.layers.iter().enumerate() {
                    match &diff_ids {
                        Some(diff_ids) => self.visit_layer(layer, diff_ids[position], position)?,
                        None => self.visit_opaque_kind(layer, BlobKind::Blob)?,
                    }
                    edges.push(edge(EdgeKind::Layer, position, layer));
                }
                if diff_ids.is_some() {
                    self.checks.push(PendingCheck {
                        image: self.destination.clone(),
                        manifest: descriptor.digest,
                        layers: manifest.layers.iter().map(|l| l.digest).collect(),
                    });
                }
                // Whether the subject edge counts is decided when it is recorded
                // (it does when the subject is stored: meta::insert_blobs).
                edges.extend(
                    manifest
                        .subject
                        .iter()
                        .map(|s| edge(EdgeKind::Subject, 0, s)),
                );
                self.new_blobs.push(NewBlob {
                    digest: descriptor.digest,
                    size: descriptor.size,
                    media_type: manifest.media_type.clone(),
                    kind: BlobKind::Manifest,
                    diff_id: None,
                    edges,
                });
            }
        }
        Ok(())
    }

    /// A config: parsed JSON for images, an opaque blob for artifacts.
    fn fetch_json_or_blob(
        &mut self,
        config: &Descriptor,
        is_image: bool,
    ) -> Result<Option<Vec<u8>>> {
        if is_image {
            let bytes = self.fetch_json(config, BlobKind::Config)?;
            self.record_leaf(config, BlobKind::Config, None);
            Ok(Some(bytes))
        } else {
            self.visit_opaque_kind(config, BlobKind::Config)?;
            Ok(None)
        }
    }

    fn record_leaf(&mut self, descriptor: &Descriptor, kind: BlobKind, diff_id: Option<DiffId>) {
        if self.seen.insert(descriptor.digest) {
            self.new_blobs.push(NewBlob {
                digest: descriptor.digest,
                size: descriptor.size,
                media_type: descriptor.media_type.clone(),
                kind,
                diff_id,
                edges: Vec::new(),
            });
        }
    }

    /// A blob stored as it is, verified by digest and size only: transferred in the
    /// parallel phase unless stored.
    fn visit_opaque_kind(&mut self, descriptor: &Descriptor, kind: BlobKind) -> Result<()> {
        if self.seen.contains(&descriptor.digest) {
            return Ok(());
        }
        self.leases.take(&descriptor.digest)?;
        if self.store.cas.contains(&descriptor.digest) {
            self.skipped(descriptor, kind);
        } else {
            self.work.push(BlobJob {
                descriptor: descriptor.clone(),
                what: self.describe(descriptor),
                work: Work::Opaque { kind },
            });
        }
        self.record_leaf(descriptor, kind, None);
        Ok(())
    }

    /// A layer: verified by digest, size and diff_id. A layer already stored with a
    /// known diff_id is not read again; others become jobs of the parallel phase.
    fn visit_layer(
        &mut self,
        descriptor: &Descriptor,
        expected: DiffId,
        position: usize,
    ) -> Result<()> {
        if self.seen.contains(&descriptor.digest) {
            return Ok(());
        }
        self.leases.take(&descriptor.digest)?;
        let what = format!("{} (layer {position})", self.describe(descriptor));
        let compression =
            LayerCompression::from_media_type(&descriptor.media_type).ok_or_else(|| {
                StoreError::BadImage {
                    what: what.clone(),
                    problem: format!("unsupported layer media type {:?}", descriptor.media_type),
                }
            })?;
        let stored = self.store.cas.contains(&descriptor.digest);
        let known_diff_id = match self.store.blob(&descriptor.digest)? {
            // A bad row's diff_id is the one its bytes failed: checked afresh.
            Some(info) if info.state == meta::BlobState::Bad => None,
            Some(info) if stored => info.diff_id.map(DiffId),
            Some(info) if self.keep_lazy && info.state == meta::BlobState::Lazy => {
                info.diff_id.map(DiffId)
            }
            _ => None,
        };
        match known_diff_id {
            Some(diff_id) => {
                self.skipped(descriptor, BlobKind::Layer);
                if diff_id != expected {
                    return Err(StoreError::DiffIdMismatch {
                        what,
                        actual: diff_id,
                        expected,
                    });
                }
                if !stored {
                    // A lazy row kept lazy: not among the blobs the commit marks
                    // present.
                    self.lazy.push(descriptor.digest);
                }
                self.record_leaf(descriptor, BlobKind::Layer, Some(diff_id));
                return Ok(());
            }
            None if !stored && self.lazy_layers => {
                // Recorded with the config's diff_id, checked when the bytes come.
                self.lazy.push(descriptor.digest);
                self.record_leaf(descriptor, BlobKind::Layer, Some(expected));
                return Ok(());
            }
            None if stored => {
                self.skipped(descriptor, BlobKind::Layer);
                self.work.push(BlobJob {
                    descriptor: descriptor.clone(),
                    what,
                    work: Work::StoredLayer {
                        compression,
                        expected,
                    },
                });
            }
            None => self.work.push(BlobJob {
                descriptor: descriptor.clone(),
                what,
                work: Work::Layer {
                    compression,
                    expected,
                },
            }),
        }
        // The diff_id is filled in once the job has checked it.
        self.record_leaf(descriptor, BlobKind::Layer, None);
        Ok(())
    }

    /// The parallel phase: runs every job on up to `jobs` threads. The first error
    /// stops the others from starting new jobs and is returned; whatever the jobs
    /// wrote is noted so that a failure deletes it.
    fn transfer(&mut self) -> Result<()> {
        let mut work = std::mem::take(&mut self.work);
        if work.is_empty() {
            return Ok(());
        }
        // Largest first: the longest transfer starts at once and the small ones
        // fill the other threads around it.
        work.sort_by_key(|job| std::cmp::Reverse(job.descriptor.size));
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
        let done: Mutex<Vec<JobDone>> = Mutex::new(Vec::new());
        let threads = self.jobs.min(work.len());
        let store = self.store;
        let source = self.source;
        let progress = self.progress;
        let bytes_read = &self.bytes_read;
        let worker = || loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = work.get(i) else {
                return;
            };
            let outcome = run_job(store, source, progress, bytes_read, job).and_then(|finished| {
                // Noted even when its check fails, so that its file is deleted.
                let checked = check_layer(store, job, &finished);
                crate::sys::lock(&done).push(finished);
                checked
            });
            match outcome {
                Ok(()) => {}
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    crate::sys::lock(&first_error).get_or_insert(e);
                    return;
                }
            }
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
            worker();
            for handle in handles {
                if handle.join().is_err() {
                    stop.store(true, Ordering::Relaxed);
                    crate::sys::lock(&first_error).get_or_insert(StoreError::Panicked {
                        what: self.source.describe(),
                        stage: "blob transfer",
                    });
                }
            }
        });
        let finished = done.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut diff_ids = HashMap::new();
        for job in finished {
            // A stored layer re-indexed was counted as present by the walk.
            if job.read {
                self.report.blobs_read += 1;
                self.note_written(&job.digest, job.created);
            }
            if let Some(indexed) = job.index {
                diff_ids.insert(job.digest, indexed.index.diff_id);
                self.fresh_indexes.insert(job.digest, indexed.index);
            }
            if let Some(check) = job.deferred {
                // Recorded with the config's diff_id, checked after the commit.
                diff_ids.insert(job.digest, check.expected());
                self.deferred.push((job.digest, check));
            }
        }
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        for blob in &mut self.new_blobs {
            if blob.kind == BlobKind::Layer && blob.diff_id.is_none() {
                blob.diff_id = diff_ids.get(&blob.digest).copied();
            }
        }
        Ok(())
    }

    /// Records what the rootfs of each imported image leaves out. Layers indexed by
    /// this import are checked from memory, others from their stored index. Never
    /// fails the import: an index that cannot be read is reported instead.
    fn check_skipped_entries(&mut self) {
        let fresh = std::mem::take(&mut self.fresh_indexes);
        let lazy: HashSet<Digest> = (self.lazy.iter())
            .chain(self.deferred.iter().map(|(digest, _)| digest))
            .copied()
            .collect();
        for check in std::mem::take(&mut self.checks) {
            // A lazy layer has no index yet: `pull --lazy` checks after its commit.
            // Nor has a deferred one, whose indexer is not waited for.
            if check.layers.iter().any(|layer| lazy.contains(layer)) {
                continue;
            }
            let indexes: Result<Vec<Cow<'_, LayerIndex>>> = check
                .layers
                .iter()
                .map(|digest| match fresh.get(digest) {
                    Some(index) => Ok(Cow::Borrowed(index)),
                    None => self.store.layer_index(digest).map(Cow::Owned),
                })
                .collect();
            let (layers, error) = match indexes {
                Ok(indexes) => {
                    let refs: Vec<&LayerIndex> = indexes.iter().map(|index| &**index).collect();
                    (layer_warnings(&check.layers, &refs), None)
                }
                Err(e) => (
                    Vec::new(),
                    Some(format!("cannot check for skipped entries: {e}")),
                ),
            };
            if !layers.is_empty() || error.is_some() {
                self.report.warnings.push(ImageWarnings {
                    image: check.image,
                    manifest: check.manifest,
                    layers,
                    error,
                });
            }
        }
    }
}

/// `reader` reporting its bytes as progress of the blob `descriptor` names, and
/// adding them to `total`.
fn counted<'a, R: Read>(
    reader: R,
    descriptor: &Descriptor,
    progress: &'a dyn Progress,
    total: &'a AtomicU64,
) -> ProgressReader<'a, R> {
    ProgressReader {
        inner: reader,
        progress,
        digest: descriptor.digest,
        total,
    }
}

/// One job of the parallel phase (on any thread): the blob fetched or re-read,
/// verified and written; a layer also indexed and checked against its diff_id.
fn run_job<S>(
    store: &Store,
    source: &S,
    progress: &dyn Progress,
    bytes_read: &AtomicU64,
    job: &BlobJob,
) -> Result<JobDone>
where
    S: ImageSource + ?Sized,
    StoreError: From<S::Error>,
{
    let descriptor = &job.descriptor;
    let expected_blob = Some(Expected {
        digest: descriptor.digest,
        size: descriptor.size,
    });
    let (created, read, index, expected) = match &job.work {
        Work::Opaque { kind } => {
            progress.blob_started(&descriptor.digest, *kind, descriptor.size);
            let reader = source.open_blob(&descriptor.digest)?;
            let (_, size, created) = store.cas.write(
                &mut counted(reader, descriptor, progress, bytes_read),
                expected_blob,
                &job.what,
            )?;
            (created.then_some(size), true, None, None)
        }
        Work::StoredLayer {
            compression,
            expected,
        } => {
            // Renamed in through a layout moments ago: indexed already, or still
            // being indexed, which the commit need not wait for.
            let defer = Some((*expected, job.what.as_str()));
            let index = match store.take_prepared(&descriptor.digest, *compression, defer) {
                Some(PreparedLayer::Indexed(index)) => index,
                Some(PreparedLayer::Deferred(check)) => {
                    return Ok(JobDone {
                        digest: descriptor.digest,
                        created: None,
                        read: false,
                        index: None,
                        expected: Some(*expected),
                        deferred: Some(check),
                    })
                }
                None => {
                    let mut file = store.cas.open_blob(&descriptor.digest)?;
                    pipeline::write_and_index(&mut file, None, *compression, &job.what)?
                }
            };
            (None, false, Some(index), Some(*expected))
        }
        Work::Layer {
            compression,
            expected,
        } => {
            progress.blob_started(&descriptor.digest, BlobKind::Layer, descriptor.size);
            let reader = source.open_blob(&descriptor.digest)?;
            let mut writer = store.cas.writer(expected_blob, &job.what)?;
            let index = pipeline::write_and_index(
                &mut counted(reader, descriptor, progress, bytes_read),
                Some(&mut writer),
                *compression,
                &job.what,
            )?;
            let size = writer.len();
            let (_, _, created) = writer.finish()?;
            (created.then_some(size), true, Some(index), Some(*expected))
        }
    };
    Ok(JobDone {
        digest: descriptor.digest,
        created,
        read,
        index,
        expected,
        deferred: None,
    })
}

/// Checks a layer job's index against the config's diff_id and keeps the index:
/// it came free with the verification pass, so the first look inside the image
/// reads no layer.
fn check_layer(store: &Store, job: &BlobJob, finished: &JobDone) -> Result<()> {
    let (Some(indexed), Some(expected)) = (&finished.index, finished.expected) else {
        return Ok(());
    };
    if indexed.index.diff_id != expected {
        return Err(StoreError::DiffIdMismatch {
            what: job.what.clone(),
            actual: indexed.index.diff_id,
            expected,
        });
    }
    store.save_layer_index(&finished.digest, indexed)
}
