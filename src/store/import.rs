//! Import: reads images from an [`ImageSource`], verifies every blob against its
//! descriptor and every layer against the config's `diff_ids`, writes what is new,
//! and records everything in one metadata transaction.
//!
//! Safety against concurrent deletion: every digest is leased (a committed row)
//! before the import looks at or writes its file; the leases go away in the commit
//! that records the references. Nothing from a failed import stays referenced, and
//! the blobs it wrote are deleted before it returns (unless another import holds
//! them).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Read;

use crate::archive::{self, ArchiveError, DecompressLimits, ImageSource, SourceImage};
use crate::digest::{DiffId, Digest};
use crate::image::{self, Descriptor, LayerCompression, Parsed};
use crate::layer::LayerIndex;
use crate::reference::Reference;
use crate::store::cas::Expected;
use crate::store::layers::{layer_warnings, LayerWarnings};
use crate::store::meta::{self, BlobKind, Edge, EdgeKind, NewBlob, Owner};
use crate::store::pipeline;
use crate::store::{Store, StoreError, MAX_JSON_BLOB};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Registry for names that carry none (default `local`).
    pub registry: String,
    /// Store the one selected image under this reference instead of its own name.
    pub reference: Option<Reference>,
    /// Progress reporting.
    pub progress: Progress,
    /// Bounds on decompressing a `.tar.gz` or `.tar.zst` source archive.
    pub decompress_limits: DecompressLimits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            registry: "local".into(),
            reference: None,
            progress: Progress::None,
            decompress_limits: DecompressLimits::default(),
        }
    }
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Silent.
    None,
    /// A progress bar on stderr (when it is a terminal).
    Bar,
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
    /// Entries the imported images' `rootfs/` leave out (hostile or malformed tar
    /// entries are skipped, not fatal), for each image that has any.
    pub warnings: Vec<ImageWarnings>,
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

struct Importer<'a> {
    store: &'a Store,
    source: &'a dyn ImageSource<Error = ArchiveError>,
    leases: Leases<'a>,
    /// Blobs to record, in discovery order; keyed to avoid duplicates.
    new_blobs: Vec<NewBlob>,
    seen: HashSet<Digest>,
    /// Blob files this import created (deleted again if it fails).
    created: Vec<Digest>,
    report: ImportReport,
    bar: Option<indicatif::ProgressBar>,
    /// The reference of the image being visited, for its warnings.
    destination: String,
    /// Indexes of the layers built by this import and not yet checked for skipped
    /// entries (by the manifest that lists them).
    fresh_indexes: HashMap<Digest, LayerIndex>,
}

impl Store {
    /// Imports `source` (a path, optionally `PATH:NAME`) as SPEC section 4 says.
    pub fn import(&self, source: &str, options: &ImportOptions) -> Result<ImportReport> {
        let (path, name) = archive::split_source_arg(source);
        let opened = archive::open_source_with_limits(
            &path,
            Some(self.cas.tmp_dir()),
            &options.decompress_limits,
        )
        .map_err(|e| StoreError::Import(e.to_string()))?;
        self.import_from(opened.as_ref(), name.as_deref(), options)
    }

    /// Imports the images of an opened source; `name` selects one by its name there.
    pub fn import_from(
        &self,
        source: &dyn ImageSource<Error = ArchiveError>,
        name: Option<&str>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let plan = plan(source, name, options)?;
        let mut importer = Importer {
            store: self,
            source,
            leases: Leases::new(self),
            new_blobs: Vec::new(),
            seen: HashSet::new(),
            created: Vec::new(),
            report: ImportReport::default(),
            bar: None,
            destination: String::new(),
            fresh_indexes: HashMap::new(),
        };
        if options.progress == Progress::Bar && std::io::IsTerminal::is_terminal(&std::io::stderr())
        {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg}: {bytes} of layers read ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("importing");
            importer.bar = Some(bar);
        }
        let result = importer.run(&plan);
        if let Some(bar) = &importer.bar {
            bar.finish_and_clear();
        }
        match result {
            Ok(()) => Ok(importer.report),
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
fn plan(
    source: &dyn ImageSource<Error = ArchiveError>,
    name: Option<&str>,
    options: &ImportOptions,
) -> Result<Vec<Planned>> {
    let selected = archive::select_images(source.images(), name)
        .map_err(|e| StoreError::Import(format!("{}: {e}", source.describe())))?;
    if selected.is_empty() {
        return Err(StoreError::Import(format!(
            "{}: holds no image",
            source.describe()
        )));
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
            return Err(StoreError::Import(format!(
                "{}: holds {} images; pick one with SOURCE:NAME (names: {})",
                source.describe(),
                distinct.len(),
                names.join(", ")
            )));
        }
        return Ok(vec![Planned {
            destination: reference.clone(),
            descriptor: images[0].descriptor.clone(),
        }]);
    }
    let mut planned = Vec::new();
    for image in images {
        let parsed = match &image.name {
            Some(text) => Reference::parse_docker_style(text, &options.registry).map_err(|e| {
                StoreError::Import(format!("{}: image name {text:?}: {e}", source.describe()))
            })?,
            None => None,
        };
        let Some(destination) = parsed else {
            return Err(StoreError::Import(format!(
                "{}: image {} has {}; give a reference: imagefs import SOURCE REGISTRY/REPOSITORY:TAG",
                source.describe(),
                image.descriptor.digest,
                match &image.name {
                    Some(tag) => format!("only the tag {tag:?} as its name"),
                    None => "no name".into(),
                }
            )));
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

impl Importer<'_> {
    fn run(&mut self, plan: &[Planned]) -> Result<()> {
        for planned in plan {
            self.destination = planned.destination.to_string();
            self.visit_top(&planned.descriptor)?;
        }
        crate::failpoint::hit("import.before_commit");
        let mut doomed = Vec::new();
        {
            let mut conn = self.store.conn();
            let tx = meta::write_tx(&mut conn)?;
            // Children first, so every edge's child row exists when counted.
            let ordered: Vec<NewBlob> = self.new_blobs.iter().rev().cloned().collect();
            meta::insert_blobs(&tx, &ordered)?;
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
        self.store.note_change();
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
    fn fetch_json(&mut self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        self.leases.take(&descriptor.digest)?;
        if descriptor.size > MAX_JSON_BLOB {
            return Err(StoreError::Import(format!(
                "{}: {} bytes is too large for a {} (limit {MAX_JSON_BLOB})",
                self.describe(descriptor),
                descriptor.size,
                descriptor.media_type
            )));
        }
        if self.store.cas.contains(&descriptor.digest) {
            let bytes = self.store.read_blob(&descriptor.digest)?;
            if bytes.len() as u64 == descriptor.size {
                self.report.blobs_present += 1;
                return Ok(bytes);
            }
            // A descriptor with the right digest but wrong size: refuse below.
        }
        let mut bytes = Vec::new();
        let what = self.describe(descriptor);
        let reader = self
            .source
            .open_blob(&descriptor.digest)
            .map_err(|e| StoreError::Import(e.to_string()))?;
        reader
            .take(descriptor.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::Import(format!("{what}: {e}")))?;
        let (_, _, created) = self
            .store
            .cas
            .write_bytes(
                &bytes,
                Some(Expected {
                    digest: descriptor.digest,
                    size: descriptor.size,
                }),
                &what,
            )
            .map_err(|e| StoreError::Import(e.to_string()))?;
        self.note_written(&descriptor.digest, descriptor.size, created);
        Ok(bytes)
    }

    fn note_written(&mut self, digest: &Digest, size: u64, created: bool) {
        if created {
            self.created.push(*digest);
            self.report.blobs_written += 1;
            self.report.bytes_written += size;
        } else {
            self.report.blobs_present += 1;
        }
    }

    fn visit_top(&mut self, descriptor: &Descriptor) -> Result<()> {
        self.visit_manifest(descriptor, 0)
    }

    fn visit_manifest(&mut self, descriptor: &Descriptor, depth: usize) -> Result<()> {
        if depth > 8 {
            return Err(StoreError::Import(format!(
                "{}: indexes nested too deeply",
                self.describe(descriptor)
            )));
        }
        if !self.seen.insert(descriptor.digest) {
            return Ok(());
        }
        let bytes = self.fetch_json(descriptor)?;
        let parsed = image::parse_top(&bytes, Some(&descriptor.media_type))
            .map_err(|e| StoreError::Import(format!("{}: {e}", self.describe(descriptor))))?;
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
                        .map_err(|e| {
                        StoreError::Import(format!("{}: {e}", self.describe(&manifest.config)))
                    })?;
                    if config.diff_ids.len() != manifest.layers.len() {
                        return Err(StoreError::Import(format!(
                            "{}: manifest lists {} layers but its config has {} diff_ids",
                            self.describe(descriptor),
                            manifest.layers.len(),
                            config.diff_ids.len()
                        )));
                    }
                    Some(config.diff_ids)
                } else {
                    None
                };
                for (position, layer) in manifest.layers.iter().enumerate() {
                    match &diff_ids {
                        Some(diff_ids) => self.visit_layer(layer, diff_ids[position], position)?,
                        None => self.visit_opaque(layer)?,
                    }
                    edges.push(edge(EdgeKind::Layer, position, layer));
                }
                if diff_ids.is_some() {
                    self.note_skipped_entries(descriptor.digest, &manifest.layers);
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
            let bytes = self.fetch_json(config)?;
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

    fn visit_opaque(&mut self, descriptor: &Descriptor) -> Result<()> {
        self.visit_opaque_kind(descriptor, BlobKind::Blob)
    }

    /// A blob stored as it is, verified by digest and size only.
    fn visit_opaque_kind(&mut self, descriptor: &Descriptor, kind: BlobKind) -> Result<()> {
        if self.seen.contains(&descriptor.digest) {
            return Ok(());
        }
        self.leases.take(&descriptor.digest)?;
        if self.store.cas.contains(&descriptor.digest) {
            self.report.blobs_present += 1;
        } else {
            let what = self.describe(descriptor);
            let mut reader = self
                .source
                .open_blob(&descriptor.digest)
                .map_err(|e| StoreError::Import(e.to_string()))?;
            let (_, size, created) = self
                .store
                .cas
                .write(
                    &mut reader,
                    Some(Expected {
                        digest: descriptor.digest,
                        size: descriptor.size,
                    }),
                    &what,
                )
                .map_err(|e| StoreError::Import(e.to_string()))?;
            self.note_written(&descriptor.digest, size, created);
        }
        self.record_leaf(descriptor, kind, None);
        Ok(())
    }

    /// Keeps a layer index just built until its manifest checks it for skipped
    /// entries; returns its diff_id.
    fn keep_index(&mut self, descriptor: &Descriptor, index: LayerIndex) -> DiffId {
        let diff_id = index.diff_id;
        self.fresh_indexes.insert(descriptor.digest, index);
        diff_id
    }

    /// Records what the rootfs of image `manifest` leaves out. Layers indexed by this
    /// import are checked from memory, others from their stored index. Never fails
    /// the import: an index that cannot be read is reported instead.
    fn note_skipped_entries(&mut self, manifest: Digest, layers: &[Descriptor]) {
        let digests: Vec<Digest> = layers.iter().map(|layer| layer.digest).collect();
        let fresh = std::mem::take(&mut self.fresh_indexes);
        let indexes: Result<Vec<Cow<'_, LayerIndex>>> = digests
            .iter()
            .map(|digest| match fresh.get(digest) {
                Some(index) => Ok(Cow::Borrowed(index)),
                None => self.store.layer_index(digest).map(Cow::Owned),
            })
            .collect();
        let (layers, error) = match indexes {
            Ok(indexes) => {
                let refs: Vec<&LayerIndex> = indexes.iter().map(|index| &**index).collect();
                (layer_warnings(&digests, &refs), None)
            }
            Err(e) => (
                Vec::new(),
                Some(format!("cannot check for skipped entries: {e}")),
            ),
        };
        if !layers.is_empty() || error.is_some() {
            self.report.warnings.push(ImageWarnings {
                image: self.destination.clone(),
                manifest,
                layers,
                error,
            });
        }
    }

    /// A layer: verified by digest, size and diff_id. A layer already stored with a
    /// known diff_id is not read again.
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
                StoreError::Import(format!(
                    "{what}: unsupported layer media type {:?}",
                    descriptor.media_type
                ))
            })?;
        let known_diff_id = match self.store.blob(&descriptor.digest)? {
            Some(info) if self.store.cas.contains(&descriptor.digest) => info.diff_id.map(DiffId),
            _ => None,
        };
        let diff_id = match known_diff_id {
            Some(diff_id) => {
                self.report.blobs_present += 1;
                diff_id
            }
            None if self.store.cas.contains(&descriptor.digest) => {
                // Stored but its diff_id is unknown here (a concurrent delete took the
                // row; our lease keeps the file): compute it from the stored copy.
                self.report.blobs_present += 1;
                let mut file = self.store.cas.open_blob(&descriptor.digest)?;
                let index = pipeline::write_and_index(&mut file, None, compression, &|_| {})
                    .map_err(|e| StoreError::Import(format!("{what}: {e}")))?;
                self.store.save_layer_index(&descriptor.digest, &index)?;
                self.keep_index(descriptor, index)
            }
            None => {
                let mut reader = self
                    .source
                    .open_blob(&descriptor.digest)
                    .map_err(|e| StoreError::Import(e.to_string()))?;
                let mut writer = self
                    .store
                    .cas
                    .writer(
                        Some(Expected {
                            digest: descriptor.digest,
                            size: descriptor.size,
                        }),
                        &what,
                    )
                    .map_err(|e| StoreError::Import(e.to_string()))?;
                let bar = self.bar.clone();
                let index =
                    pipeline::write_and_index(&mut reader, Some(&mut writer), compression, &|n| {
                        if let Some(bar) = &bar {
                            bar.inc(n);
                        }
                    })
                    .map_err(|e| StoreError::Import(format!("{what}: {e}")))?;
                let size = writer.len();
                let (_, _, created) = writer
                    .finish()
                    .map_err(|e| StoreError::Import(e.to_string()))?;
                self.note_written(&descriptor.digest, size, created);
                // The index came free with the verification pass: keep it so the
                // first look inside the image reads no layer.
                self.store.save_layer_index(&descriptor.digest, &index)?;
                self.keep_index(descriptor, index)
            }
        };
        if diff_id != expected {
            return Err(StoreError::Import(format!(
                "{what}: uncompressed content hashes to {diff_id}, but the config's diff_ids say {expected}"
            )));
        }
        self.record_leaf(descriptor, BlobKind::Layer, Some(diff_id));
        Ok(())
    }
}
