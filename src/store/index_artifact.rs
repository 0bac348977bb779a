//! The imagefs index artifact (README "Index artifacts"): an OCI 1.1 artifact
//! manifest attached to an image manifest (its `subject`) that carries the entry
//! index and the seekable gzip index of each of its layers, so that other machines
//! list and read the image lazily without streaming its layers once.
//!
//! ```text
//! {"schemaVersion": 2,
//!  "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!  "artifactType": "application/vnd.imagefs.layer-index.v1",
//!  "config": {OCI empty descriptor, the blob `{}`},
//!  "layers": [per image layer, in manifest order:
//!     {"mediaType": "application/vnd.imagefs.layer-entries.v1", ...,
//!      "annotations": {"dev.imagefs.layer.digest": "<layer digest>"}},
//!     {"mediaType": "application/vnd.imagefs.gzip-index.v1", ... (gzip layers)}],
//!  "subject": {the image manifest's descriptor}}
//! ```
//!
//! - Building ([`build`]): deterministic bytes (no timestamps, layers in manifest
//!   order, fixed key order), so pushing the same image twice gives one digest.
//! - Attaching ([`Store::attach_index_artifact`], called by `push`): uploads the
//!   blobs the repository lacks (HEAD first; mounted instead from another
//!   repository of the registry the image is known to be in), PUTs the manifest by digest and, when
//!   the registry does not answer with `OCI-Subject` (it has no referrers API, as
//!   distribution 2.8), merges the artifact's descriptor into the OCI index under
//!   the `sha256-<subject hex>` tag: others' descriptors are kept, an older imagefs
//!   one is replaced, the same one is not added twice.
//! - Fetching ([`Store::fetch_index_artifact`], called by `pull --lazy`): the
//!   referrers (API, else the tag), at most [`MAX_CANDIDATES`] imagefs artifacts
//!   among them, each checked (trust rules below) and what passes saved into the
//!   layers' cache (`layers.rs`), never over an index the store built itself.
//!   `pull --lazy` ([`GzipIndexes::Later`]) takes the entry
//!   indexes at once and leaves each gzip index (the bulk of the artifact) in the
//!   registry, recorded in the layer's lazy state, until the layer is first read
//!   ([`Store::fetch_deferred_gzip_index`], the same checks; one that fails them
//!   makes that read fetch the layer whole).
//!
//! Trust: an artifact is used only for the manifest its `subject` names; every blob
//! is fetched by digest with a size cap and hashed; an entry index must decode and
//! have the layer's diff_id (from the verified config), and point only into its
//! own stream; a gzip index must decode and name the layer's digest, diff_id and
//! size and the entry index's stream length. What fails is skipped with one
//! `log::warn!` line (registry, artifact, problem). Lies these checks cannot see
//! (wrong offsets or windows) are caught by each span's sha256, by the tar header
//! check on lazy reads, and always when the layer is completed (digest, diff_id).
//!
//! Owns: the artifact's layout, the tag fallback merge, the trust checks. Must not
//! touch: HTTP details (`remote`), cache files except through `layers.rs`.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::digest::{DiffId, Digest};
use crate::image::{self, media_types, Descriptor, LayerCompression, Parsed};
use crate::layer::{ContentRef, GzipIndex, LayerIndex};
use crate::remote::{self, Client, ErrorKind, MountOutcome, RemoteError};
use crate::store::meta::{self, BlobInfo};
use crate::store::{Store, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Most imagefs artifacts of one subject looked at by a pull (a hostile referrers
/// list must not make it fetch thousands of manifests).
pub(crate) const MAX_CANDIDATES: usize = 8;
/// Largest index blob fetched, whatever the layer's size.
pub(crate) const MAX_INDEX_BLOB: u64 = 64 << 20;

/// The largest entry index accepted for a layer of `layer_size` bytes: the layer's
/// own size (at least 4 MiB: a layer of many empty files has a large index and a
/// tiny blob), at most [`MAX_INDEX_BLOB`].
pub(crate) fn entries_cap(layer_size: u64) -> u64 {
    layer_size.clamp(4 << 20, MAX_INDEX_BLOB)
}

/// The largest gzip index accepted for a layer of `layer_size` bytes: a tenth of it
/// (at least 1 MiB), at most [`MAX_INDEX_BLOB`]. Built ones take about 1-4%.
pub(crate) fn gzip_cap(layer_size: u64) -> u64 {
    (layer_size / 10).clamp(1 << 20, MAX_INDEX_BLOB)
}

/// One layer of the manifest, as its (verified) manifest and config say. (`pub` only
/// so that `imagefs::testing` can name it; the module is the crate's.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactLayer {
    /// The layer blob's digest.
    pub digest: Digest,
    /// Its size, from the manifest's descriptor.
    pub size: u64,
    /// Its media type, from the manifest's descriptor.
    pub media_type: String,
    /// Its uncompressed digest, from the config's `rootfs.diff_ids`.
    pub diff_id: DiffId,
}

impl ArtifactLayer {
    /// The layers of a verified image manifest with its config's `diff_ids`, in
    /// order (what `pull --lazy` passes to [`Store::fetch_index_artifact`]); `None`
    /// when the counts differ.
    pub fn of_image(
        manifest: &image::Manifest,
        config: &image::ImageConfig,
    ) -> Option<Vec<ArtifactLayer>> {
        if manifest.layers.len() != config.diff_ids.len() {
            return None;
        }
        Some(
            manifest
                .layers
                .iter()
                .zip(&config.diff_ids)
                .map(|(layer, diff_id)| ArtifactLayer {
                    digest: layer.digest,
                    size: layer.size,
                    media_type: layer.media_type.clone(),
                    diff_id: *diff_id,
                })
                .collect(),
        )
    }

    fn is_gzip(&self) -> bool {
        LayerCompression::from_media_type(&self.media_type) == Some(LayerCompression::Gzip)
    }
}

/// One layer's indexes as the artifact carries them (encoded).
#[derive(Debug, Clone)]
pub(crate) struct LayerIndexBytes {
    /// The layer blob.
    pub layer: Digest,
    /// `LayerIndex::to_bytes` (what `LayerIndex::write_to` writes).
    pub entries: Vec<u8>,
    /// `GzipIndex::to_bytes`, for a gzip layer.
    pub gzip: Option<Vec<u8>>,
}

/// An artifact ready to push.
#[derive(Debug, Clone)]
pub(crate) struct BuiltArtifact {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
    /// Every blob it references (the empty config first), each once.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// How many image layers it indexes.
    pub layers: usize,
}

impl BuiltArtifact {
    /// The descriptor that lists it among its subject's referrers.
    pub fn descriptor(&self) -> Descriptor {
        let mut descriptor = Descriptor::new(
            media_types::OCI_MANIFEST,
            self.digest,
            self.manifest.len() as u64,
        );
        descriptor.artifact_type = Some(media_types::IMAGEFS_INDEX_ARTIFACT.to_string());
        descriptor
    }
}

/// The manifest as serialized: field order fixed here.
#[derive(serde::Serialize)]
struct ArtifactManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: &'a Descriptor,
}

/// Builds the artifact of the image manifest `subject` from its layers' indexes
/// (in manifest order). The same input gives the same bytes.
pub(crate) fn build(subject: &Descriptor, layers: &[LayerIndexBytes]) -> BuiltArtifact {
    let empty = Digest::of(media_types::OCI_EMPTY_BYTES);
    let mut blobs = vec![(empty, media_types::OCI_EMPTY_BYTES.to_vec())];
    let mut seen = HashSet::from([empty]);
    let mut descriptors = Vec::new();
    let mut add = |media_type: &str, layer: &Digest, bytes: &[u8]| {
        let digest = Digest::of(bytes);
        let mut descriptor = Descriptor::new(media_type, digest, bytes.len() as u64);
        descriptor.annotations = BTreeMap::from([(
            media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION.to_string(),
            layer.to_string(),
        )]);
        descriptors.push(descriptor);
        if seen.insert(digest) {
            blobs.push((digest, bytes.to_vec()));
        }
    };
    for layer in layers {
        add(
            media_types::IMAGEFS_LAYER_ENTRIES,
            &layer.layer,
            &layer.entries,
        );
        if let Some(gzip) = &layer.gzip {
            add(media_types::IMAGEFS_GZIP_INDEX, &layer.layer, gzip);
        }
    }
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: media_types::OCI_MANIFEST,
        artifact_type: media_types::IMAGEFS_INDEX_ARTIFACT,
        config: Descriptor::new(
            media_types::OCI_EMPTY,
            empty,
            media_types::OCI_EMPTY_BYTES.len() as u64,
        ),
        layers: descriptors,
        subject,
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest of strings serializes");
    BuiltArtifact {
        digest: Digest::of(&manifest),
        manifest,
        blobs,
        layers: layers.len(),
    }
}

/// Merges `ours` into the referrers index `existing` (the `sha256-<hex>` tag's
/// bytes, `None` when there is no tag yet): others' descriptors are kept as they
/// are, an older imagefs artifact's is replaced, ours is not added twice. `None`
/// when `existing` needs no change; an error when the tag holds something that is
/// not an OCI index (left alone).
pub(crate) fn merge_referrers(
    existing: Option<&[u8]>,
    ours: &Descriptor,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let ours_value = serde_json::to_value(ours).expect("a descriptor serializes");
    let ours_digest = ours.digest.to_string();
    let digest_of = |d: &Value| d.get("digest").and_then(Value::as_str).map(str::to_string);
    let is_imagefs = |d: &Value| {
        d.get("artifactType").and_then(Value::as_str) == Some(media_types::IMAGEFS_INDEX_ARTIFACT)
    };
    let (mut object, old) = match existing {
        None => (serde_json::Map::new(), None),
        Some(bytes) => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("the tag holds no JSON ({e}); left alone"))?;
            let Value::Object(object) = value else {
                return Err("the tag holds no JSON object; left alone".into());
            };
            if object
                .get("mediaType")
                .is_some_and(|t| t != media_types::OCI_INDEX)
            {
                return Err("the tag holds something other than an OCI index; left alone".into());
            }
            let Some(Value::Array(manifests)) = object.get("manifests") else {
                return Err("the tag's index has no manifests list; left alone".into());
            };
            let manifests = manifests.clone();
            (object, Some(manifests))
        }
    };
    let mut manifests = old.clone().unwrap_or_default();
    let mut kept = HashSet::new();
    manifests.retain(|d| {
        let same = digest_of(d).as_deref() == Some(ours_digest.as_str());
        if same {
            // Once, where it already was.
            return kept.insert(ours_digest.clone());
        }
        !is_imagefs(d)
    });
    if kept.is_empty() {
        manifests.push(ours_value);
    }
    if old.as_ref() == Some(&manifests) {
        return Ok(None);
    }
    object.insert("schemaVersion".into(), Value::from(2));
    object.insert("mediaType".into(), Value::from(media_types::OCI_INDEX));
    object.insert("manifests".into(), Value::Array(manifests));
    Ok(Some(
        serde_json::to_vec(&Value::Object(object)).expect("JSON values serialize"),
    ))
}

/// What one attached artifact is (`push --json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttachedIndex {
    /// The image manifest it indexes (its `subject`).
    pub subject: Digest,
    /// The artifact manifest's digest.
    pub digest: Digest,
    /// How many of the manifest's layers it indexes.
    pub layers: usize,
    /// Index blobs uploaded (the others were there already).
    pub blobs_uploaded: u64,
    /// Where the registry lists it: `referrers API`, or the fallback tag
    /// (`sha256-<hex>`).
    pub listed_in: String,
}

/// The imagefs artifact candidates in a referrers index, in its order.
fn candidates(referrers: &[u8]) -> std::result::Result<Vec<Descriptor>, String> {
    let parsed = image::parse_top(referrers, Some(media_types::OCI_INDEX))
        .map_err(|e| format!("bad referrers index: {e}"))?;
    let Parsed::Index(index) = parsed else {
        return Err("the referrers are not an index".into());
    };
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| {
            d.artifact_type.as_deref() == Some(media_types::IMAGEFS_INDEX_ARTIFACT)
                && d.media_type == media_types::OCI_MANIFEST
        })
        .take(MAX_CANDIDATES)
        .collect())
}

/// A registry failure that says the artifact is bad (gone, lying about sizes or
/// digests, malformed) is a problem to skip; anything else (down, refusing us,
/// timing out) is an error.
fn classify(error: RemoteError) -> Result<String> {
    match error.kind {
        ErrorKind::NotFound | ErrorKind::Digest | ErrorKind::Size | ErrorKind::Protocol => {
            Ok(error.to_string())
        }
        _ => Err(StoreError::Remote(error)),
    }
}

/// An index blob, fetched whole by digest: at most `cap` bytes, hashed.
fn fetch_blob(
    client: &Client,
    repository: &str,
    descriptor: &Descriptor,
    cap: u64,
) -> Result<std::result::Result<Vec<u8>, String>> {
    if descriptor.size > cap {
        return Ok(Err(format!(
            "{} blob {} is {} bytes, over the {cap}-byte limit for this layer",
            descriptor.media_type, descriptor.digest, descriptor.size
        )));
    }
    let reader = match client.get_blob(repository, &descriptor.digest, Some(descriptor.size)) {
        Ok(reader) => reader,
        Err(e) => return classify(e).map(Err),
    };
    let mut bytes = Vec::new();
    if let Err(e) = reader.take(cap + 1).read_to_end(&mut bytes) {
        let remote = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RemoteError>())
            .cloned()
            .unwrap_or_else(|| {
                RemoteError::new(
                    ErrorKind::Transport,
                    client.endpoint().name.clone(),
                    format!("blob {}", descriptor.digest),
                    e.to_string(),
                )
            });
        return classify(remote).map(Err);
    }
    let digest = Digest::of(&bytes);
    if digest != descriptor.digest {
        return Ok(Err(format!(
            "blob {} has bytes whose digest is {digest}",
            descriptor.digest
        )));
    }
    Ok(Ok(bytes))
}

/// Decodes and checks an entry index against the layer.
fn check_entries(bytes: &[u8], layer: &ArtifactLayer) -> std::result::Result<LayerIndex, String> {
    let index = LayerIndex::from_bytes(bytes).map_err(|e| format!("entry index: {e}"))?;
    if index.diff_id != layer.diff_id {
        return Err(format!(
            "entry index is for the stream {}, the layer's diff_id is {}",
            index.diff_id, layer.diff_id
        ));
    }
    for entry in &index.entries {
        match entry.content {
            ContentRef::None => {}
            ContentRef::StreamOffset(offset) => {
                let end = offset.checked_add(entry.stored_size());
                if end.is_none_or(|end| end > index.uncompressed_size) {
                    return Err("entry index points past the end of its stream".into());
                }
            }
            ContentRef::Cached(_) => {
                return Err("entry index points into an unpack cache, not the stream".into())
            }
        }
    }
    Ok(index)
}

/// Decodes and checks a gzip index against the layer and its entry index.
fn check_gzip(
    bytes: &[u8],
    layer: &ArtifactLayer,
    entries: &LayerIndex,
) -> std::result::Result<GzipIndex, String> {
    let index = GzipIndex::from_bytes(bytes).map_err(|e| format!("gzip index: {e}"))?;
    if index.layer() != layer.digest {
        return Err(format!("gzip index is for the blob {}", index.layer()));
    }
    if index.diff_id() != layer.diff_id {
        return Err(format!(
            "gzip index is for the stream {}, the layer's diff_id is {}",
            index.diff_id(),
            layer.diff_id
        ));
    }
    if index.compressed_size() != layer.size {
        return Err(format!(
            "gzip index says the blob is {} bytes, the manifest says {}",
            index.compressed_size(),
            layer.size
        ));
    }
    if index.uncompressed_size() != entries.uncompressed_size {
        return Err(format!(
            "gzip index says the stream is {} bytes, the entry index {}",
            index.uncompressed_size(),
            entries.uncompressed_size
        ));
    }
    Ok(index)
}

/// When an artifact's gzip indexes are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GzipIndexes {
    /// With the entry indexes.
    Now,
    /// Only where each is in the registry, recorded in the layer's lazy state and
    /// fetched when the layer is first read ([`Store::fetch_deferred_gzip_index`]):
    /// the gzip indexes are the bulk of an artifact (their 32 KiB windows, 1-4% of
    /// a layer), and a look at one file should not pay for every layer's. What
    /// `pull --lazy` asks for.
    Later,
}

/// Where the gzip index of a lazy layer waits in the registry: the blob of a
/// checked index artifact, recorded by `pull --lazy` (in the layer's lazy state,
/// `lazy.rs`) and fetched when the layer is first read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RemoteGzipIndex {
    pub registry: String,
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
}

impl Store {
    /// Fetches the gzip index `pull --lazy` left in the registry for lazy layer
    /// `layer` and checks it as an artifact's gzip index is checked (by digest,
    /// capped; the layer's digest, diff_id and size from its verified row, the
    /// stream length from its entry index `entries`). `Ok(None)` when it is not
    /// there any more or fails a check (logged: the caller fetches the layer whole
    /// instead); registry failures are errors (EIO for the read).
    pub(crate) fn fetch_deferred_gzip_index(
        &self,
        layer: &Digest,
        remote: &RemoteGzipIndex,
        entries: &LayerIndex,
    ) -> Result<Option<GzipIndex>> {
        let info = self
            .blob(layer)?
            .ok_or_else(|| StoreError::NotFound(format!("layer {layer}")))?;
        let Some(diff_id) = info.diff_id else {
            return Ok(None);
        };
        let artifact_layer = ArtifactLayer {
            digest: *layer,
            size: info.size,
            media_type: info.media_type.clone(),
            diff_id: DiffId(diff_id),
        };
        let client = self.client_for(&remote.registry)?;
        let descriptor =
            Descriptor::new(media_types::IMAGEFS_GZIP_INDEX, remote.digest, remote.size);
        let checked = fetch_blob(
            &client,
            &remote.repository,
            &descriptor,
            gzip_cap(info.size),
        )?
        .and_then(|bytes| check_gzip(&bytes, &artifact_layer, entries));
        match checked {
            Ok(index) => Ok(Some(index)),
            Err(problem) => {
                log::warn!(
                    "{}/{}: gzip index {} of layer {layer}: {problem}; the layer is fetched whole instead",
                    remote.registry,
                    remote.repository,
                    remote.digest
                );
                Ok(None)
            }
        }
    }

    /// Builds and attaches the index artifact of the stored image manifest
    /// `manifest` in `repository` (its manifest is there already). `None` when it
    /// is not an image with layers, or no layer has indexes (lazy layers not
    /// indexed yet are left out). Up to `jobs` blobs travel at once.
    pub(crate) fn attach_index_artifact(
        &self,
        client: &Client,
        repository: &str,
        manifest: &BlobInfo,
        jobs: usize,
    ) -> Result<Option<AttachedIndex>> {
        let bytes = self.read_blob(&manifest.digest)?;
        let parsed = image::parse_top(&bytes, Some(&manifest.media_type)).map_err(|source| {
            StoreError::Image {
                what: format!("manifest {}", manifest.digest),
                source,
            }
        })?;
        let Parsed::Manifest(parsed) = parsed else {
            return Ok(None);
        };
        if !parsed.is_image() {
            return Ok(None);
        }
        let mut seen = HashSet::new();
        let mut layers = Vec::new();
        for layer in &parsed.layers {
            if !seen.insert(layer.digest) {
                continue;
            }
            if let Some((entries, gzip)) = self.artifact_indexes(&layer.digest)? {
                layers.push(LayerIndexBytes {
                    layer: layer.digest,
                    entries: entries.to_bytes(),
                    gzip: gzip.map(|g| g.to_bytes()),
                });
            }
        }
        if layers.is_empty() {
            return Ok(None);
        }
        let subject = Descriptor::new(parsed.media_type.clone(), manifest.digest, manifest.size);
        let artifact = build(&subject, &layers);
        // The same image pushed to (or pulled from) another repository of this
        // registry has the same artifact there: its blobs are mounted, not sent.
        let registry = &client.endpoint().name;
        let mount_from: Vec<String> = meta::origins(&self.conn(), &manifest.digest)?
            .into_iter()
            .filter(|o| o.registry == *registry && o.repository != repository)
            .map(|o| o.repository)
            .collect();
        // Each blob: HEAD, else a mount, else an upload; up to `jobs` at once.
        let send = |(digest, blob): &(Digest, Vec<u8>)| -> Result<bool, RemoteError> {
            let present = client
                .head_blob(repository, digest)?
                .is_some_and(|head| head.size.is_none_or(|size| size == blob.len() as u64));
            if present {
                return Ok(false);
            }
            // A refused mount (not there, no access) is not fatal: upload instead.
            let mounted = mount_from.iter().any(|from| {
                matches!(
                    client.mount_blob(repository, digest, from),
                    Ok(MountOutcome::Mounted)
                )
            });
            if !mounted {
                client.push_blob_bytes(repository, digest, blob)?;
            }
            Ok(!mounted)
        };
        let next = AtomicUsize::new(0);
        let outcomes: Vec<Result<bool, RemoteError>> = std::thread::scope(|scope| {
            let worker = || {
                let mut done = Vec::new();
                while let Some(blob) = artifact.blobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = send(blob);
                    let failed = outcome.is_err();
                    done.push(outcome);
                    if failed {
                        break;
                    }
                }
                done
            };
            let handles: Vec<_> = (0..jobs.clamp(1, artifact.blobs.len()))
                .map(|_| scope.spawn(worker))
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| match handle.join() {
                    Ok(done) => done,
                    Err(_) => vec![Err(RemoteError::new(
                        ErrorKind::Transport,
                        registry.clone(),
                        "index artifact",
                        "a blob upload thread panicked",
                    ))],
                })
                .collect()
        });
        let mut blobs_uploaded = 0;
        for outcome in outcomes {
            if outcome? {
                blobs_uploaded += 1;
            }
        }
        let put = client.put_manifest_with_subject(
            repository,
            &artifact.digest.to_string(),
            media_types::OCI_MANIFEST,
            &artifact.manifest,
        )?;
        let listed_in = if put.subject_indexed {
            "referrers API".to_string()
        } else {
            let tag = remote::referrers_tag(&manifest.digest);
            let existing = match client.get_manifest(repository, &tag) {
                Ok(found) => Some(found.bytes),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            };
            let merged = merge_referrers(existing.as_deref(), &artifact.descriptor())
                .map_err(|problem| StoreError::Invalid(format!("tag {tag}: {problem}")))?;
            if let Some(merged) = merged {
                client.put_manifest(repository, &tag, media_types::OCI_INDEX, &merged)?;
            }
            tag
        };
        Ok(Some(AttachedIndex {
            subject: manifest.digest,
            digest: artifact.digest,
            layers: artifact.layers,
            blobs_uploaded,
            listed_in,
        }))
    }

    /// Finds the imagefs index artifact of `manifest` in `repository` (referrers
    /// API, else the `sha256-<hex>` tag fallback), checks it (module docs, Trust),
    /// and saves the entry and gzip indexes it trusts into the layers' cache.
    /// Returns the layers of `layers` whose indexes the cache now holds (saved now,
    /// or there before: those are not fetched). A layer whose blob is in the store
    /// gets nothing (the store indexes its own blob). Registry errors other than
    /// "none there" are errors; an artifact that fails a check is skipped with a
    /// `log::warn!` line, never an error.
    pub(crate) fn fetch_index_artifact(
        &self,
        client: &Client,
        repository: &str,
        manifest: &Digest,
        layers: &[ArtifactLayer],
    ) -> Result<Vec<Digest>> {
        self.fetch_artifact_indexes(client, repository, manifest, layers, GzipIndexes::Now)
    }

    /// [`Store::fetch_index_artifact`], the gzip indexes fetched as `gzip_indexes`
    /// says: `pull --lazy` asks for [`GzipIndexes::Later`].
    pub(crate) fn fetch_artifact_indexes(
        &self,
        client: &Client,
        repository: &str,
        manifest: &Digest,
        layers: &[ArtifactLayer],
        gzip_indexes: GzipIndexes,
    ) -> Result<Vec<Digest>> {
        let mut have: Vec<Digest> = Vec::new();
        let mut wanted: Vec<&ArtifactLayer> = Vec::new();
        for layer in layers {
            if have.contains(&layer.digest) || wanted.iter().any(|w| w.digest == layer.digest) {
                continue;
            }
            let deferred = gzip_indexes == GzipIndexes::Later
                && layer.is_gzip()
                && self.layer_index_cached(&layer.digest)
                && self.remote_gzip_index(&layer.digest).is_some();
            if deferred || self.has_cached_indexes(&layer.digest, layer.is_gzip()) {
                have.push(layer.digest);
            } else if !self.blob_path(&layer.digest).exists() {
                wanted.push(layer);
            }
        }
        if wanted.is_empty() {
            return Ok(have);
        }
        let registry = &client.endpoint().name;
        let Some(referrers) = client.referrers(repository, manifest)? else {
            return Ok(have);
        };
        let candidates = match candidates(&referrers.bytes) {
            Ok(candidates) => candidates,
            Err(problem) => {
                log::warn!(
                    "{registry}/{repository}: referrers of {manifest}: {problem}; \
                     no index artifact used"
                );
                return Ok(have);
            }
        };
        for candidate in &candidates {
            if wanted.is_empty() {
                break;
            }
            let warn = |problem: &str| {
                log::warn!(
                    "{registry}/{repository}: index artifact {} of {manifest}: {problem}; ignored",
                    candidate.digest
                )
            };
            let artifact = match self.checked_artifact(client, repository, manifest, candidate)? {
                Ok(artifact) => artifact,
                Err(problem) => {
                    warn(&problem);
                    continue;
                }
            };
            let mut still_wanted = Vec::new();
            for layer in wanted {
                match self.layer_from_artifact(
                    client,
                    repository,
                    &artifact,
                    layer,
                    gzip_indexes,
                )? {
                    Ok(true) => have.push(layer.digest),
                    Ok(false) => still_wanted.push(layer),
                    Err(problem) => {
                        warn(&format!("layer {}: {problem}", layer.digest));
                        still_wanted.push(layer);
                    }
                }
            }
            wanted = still_wanted;
        }
        Ok(have)
    }

    /// The candidate's manifest, when it is an imagefs index artifact of
    /// `manifest`.
    fn checked_artifact(
        &self,
        client: &Client,
        repository: &str,
        manifest: &Digest,
        candidate: &Descriptor,
    ) -> Result<std::result::Result<image::Manifest, String>> {
        let fetched = match client.get_manifest(repository, &candidate.digest.to_string()) {
            Ok(fetched) => fetched,
            Err(e) => return classify(e).map(Err),
        };
        if fetched.bytes.len() as u64 != candidate.size {
            return Ok(Err(format!(
                "the manifest is {} bytes, its descriptor says {}",
                fetched.bytes.len(),
                candidate.size
            )));
        }
        let parsed = match image::parse_top(&fetched.bytes, Some(media_types::OCI_MANIFEST)) {
            Ok(Parsed::Manifest(parsed)) => parsed,
            Ok(Parsed::Index(_)) => return Ok(Err("not a manifest".into())),
            Err(e) => return Ok(Err(format!("bad manifest: {e}"))),
        };
        if parsed.artifact_type.as_deref() != Some(media_types::IMAGEFS_INDEX_ARTIFACT) {
            return Ok(Err(format!(
                "its artifactType is {:?}, not {}",
                parsed.artifact_type.as_deref().unwrap_or("(none)"),
                media_types::IMAGEFS_INDEX_ARTIFACT
            )));
        }
        match &parsed.subject {
            Some(subject) if subject.digest == *manifest => Ok(Ok(parsed)),
            Some(subject) => Ok(Err(format!(
                "its subject is {}, not the manifest pulled",
                subject.digest
            ))),
            None => Ok(Err("it has no subject".into())),
        }
    }

    /// Fetches, checks and saves one layer's indexes from a checked artifact.
    /// `Ok(false)` when the artifact does not index the layer (or the cache would
    /// not take them); a problem when what it has fails a check.
    fn layer_from_artifact(
        &self,
        client: &Client,
        repository: &str,
        artifact: &image::Manifest,
        layer: &ArtifactLayer,
        gzip_indexes: GzipIndexes,
    ) -> Result<std::result::Result<bool, String>> {
        let named = layer.digest.to_string();
        let find = |media_type: &str| {
            let mut found = artifact.layers.iter().filter(|d| {
                d.media_type == media_type
                    && d.annotations
                        .get(media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION)
                        .is_some_and(|value| *value == named)
            });
            match (found.next(), found.next()) {
                (None, _) => Ok(None),
                (Some(one), None) => Ok(Some(one)),
                (Some(_), Some(_)) => Err(format!("two {media_type} blobs for the layer")),
            }
        };
        let entries_descriptor = match find(media_types::IMAGEFS_LAYER_ENTRIES) {
            Ok(Some(descriptor)) => descriptor,
            Ok(None) => return Ok(Ok(false)),
            Err(problem) => return Ok(Err(problem)),
        };
        let gzip_descriptor = match find(media_types::IMAGEFS_GZIP_INDEX) {
            Ok(found) => found,
            Err(problem) => return Ok(Err(problem)),
        };
        if layer.is_gzip() && gzip_descriptor.is_none() {
            return Ok(Err("no gzip index for a gzip layer".into()));
        }
        let bytes = match fetch_blob(
            client,
            repository,
            entries_descriptor,
            entries_cap(layer.size),
        )? {
            Ok(bytes) => bytes,
            Err(problem) => return Ok(Err(problem)),
        };
        let entries = match check_entries(&bytes, layer) {
            Ok(entries) => entries,
            Err(problem) => return Ok(Err(problem)),
        };
        let gzip = match gzip_descriptor.filter(|_| layer.is_gzip()) {
            None => None,
            Some(descriptor) if gzip_indexes == GzipIndexes::Later => {
                if descriptor.size > gzip_cap(layer.size) {
                    return Ok(Err(format!(
                        "gzip index blob {} is {} bytes, over the {}-byte limit for this layer",
                        descriptor.digest,
                        descriptor.size,
                        gzip_cap(layer.size)
                    )));
                }
                if !self.save_fetched_indexes(&layer.digest, &entries, None)? {
                    return Ok(Ok(false));
                }
                self.save_remote_gzip_index(
                    &layer.digest,
                    &RemoteGzipIndex {
                        registry: client.endpoint().name.clone(),
                        repository: repository.to_string(),
                        digest: descriptor.digest,
                        size: descriptor.size,
                    },
                )?;
                return Ok(Ok(true));
            }
            Some(descriptor) => {
                let bytes = match fetch_blob(client, repository, descriptor, gzip_cap(layer.size))?
                {
                    Ok(bytes) => bytes,
                    Err(problem) => return Ok(Err(problem)),
                };
                match check_gzip(&bytes, layer, &entries) {
                    Ok(gzip) => Some(gzip),
                    Err(problem) => return Ok(Err(problem)),
                }
            }
        };
        Ok(Ok(self.save_fetched_indexes(
            &layer.digest,
            &entries,
            gzip.as_ref(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Descriptor {
        Descriptor::new(media_types::OCI_MANIFEST, Digest::of(b"image"), 5)
    }

    fn layers() -> Vec<LayerIndexBytes> {
        vec![
            LayerIndexBytes {
                layer: Digest::of(b"layer one"),
                entries: b"entries one".to_vec(),
                gzip: Some(b"gzip one".to_vec()),
            },
            LayerIndexBytes {
                layer: Digest::of(b"layer two"),
                entries: b"entries two".to_vec(),
                gzip: None,
            },
        ]
    }

    #[test]
    fn the_gzip_index_media_type_is_the_encodings_own() {
        assert_eq!(
            media_types::IMAGEFS_GZIP_INDEX,
            crate::layer::zran::MEDIA_TYPE
        );
    }

    /// Same input, same bytes; the layout LAZY.md and README fix.
    #[test]
    fn build_is_deterministic_and_has_the_fixed_layout() {
        let one = build(&subject(), &layers());
        let two = build(&subject(), &layers());
        assert_eq!(one.manifest, two.manifest);
        assert_eq!(one.digest, Digest::of(&one.manifest));
        assert_eq!(one.layers, 2);
        let value: Value = serde_json::from_slice(&one.manifest).unwrap();
        assert_eq!(value["schemaVersion"], 2);
        assert_eq!(value["mediaType"], media_types::OCI_MANIFEST);
        assert_eq!(value["artifactType"], media_types::IMAGEFS_INDEX_ARTIFACT);
        assert_eq!(value["config"]["mediaType"], media_types::OCI_EMPTY);
        assert_eq!(
            value["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(value["subject"]["digest"], subject().digest.to_string());
        let types: Vec<&str> = value["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                media_types::IMAGEFS_LAYER_ENTRIES,
                media_types::IMAGEFS_GZIP_INDEX,
                media_types::IMAGEFS_LAYER_ENTRIES
            ]
        );
        let annotation =
            &value["layers"][2]["annotations"][media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION];
        assert_eq!(annotation, &Digest::of(b"layer two").to_string());
        // The config blob and three index blobs, each once.
        assert_eq!(one.blobs.len(), 4);
        // It parses as an artifact manifest with its subject.
        let Parsed::Manifest(parsed) =
            image::parse_top(&one.manifest, Some(media_types::OCI_MANIFEST)).unwrap()
        else {
            panic!("not a manifest")
        };
        assert_eq!(parsed.subject.as_ref().unwrap().digest, subject().digest);
        assert!(!parsed.is_image());
    }

    #[test]
    fn merging_keeps_others_replaces_older_and_never_grows() {
        let ours = build(&subject(), &layers()).descriptor();
        let older = build(&subject(), &layers()[..1]).descriptor();
        let other = serde_json::json!({
            "mediaType": media_types::OCI_MANIFEST,
            "digest": Digest::of(b"sbom").to_string(),
            "size": 4,
            "artifactType": "application/spdx+json",
            "annotations": {"x": "y"}
        });
        // No tag yet: a fresh index with ours.
        let fresh = merge_referrers(None, &ours).unwrap().unwrap();
        let value: Value = serde_json::from_slice(&fresh).unwrap();
        assert_eq!(value["mediaType"], media_types::OCI_INDEX);
        assert_eq!(value["manifests"].as_array().unwrap().len(), 1);
        // Again: nothing to change.
        assert_eq!(merge_referrers(Some(&fresh), &ours).unwrap(), None);
        // Others' kept byte for byte, an older imagefs artifact replaced.
        let existing = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": [other, serde_json::to_value(&older).unwrap()],
        }))
        .unwrap();
        let merged = merge_referrers(Some(&existing), &ours).unwrap().unwrap();
        let value: Value = serde_json::from_slice(&merged).unwrap();
        let manifests = value["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0], other);
        assert_eq!(manifests[1]["digest"], ours.digest.to_string());
        assert_eq!(merge_referrers(Some(&merged), &ours).unwrap(), None);
        // Something else under the tag is left alone.
        assert!(merge_referrers(Some(b"[1]"), &ours).is_err());
        let image = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST, "layers": []
        }))
        .unwrap();
        assert!(merge_referrers(Some(&image), &ours).is_err());
    }

    #[test]
    fn candidates_are_imagefs_artifacts_only_and_capped() {
        let mut manifests = vec![serde_json::json!({
            "mediaType": media_types::OCI_MANIFEST,
            "digest": Digest::of(b"sbom").to_string(),
            "size": 4,
            "artifactType": "application/spdx+json"
        })];
        for n in 0..20u8 {
            manifests.push(
                serde_json::to_value(
                    build(
                        &subject(),
                        &[LayerIndexBytes {
                            layer: Digest::of(&[n]),
                            entries: vec![n],
                            gzip: None,
                        }],
                    )
                    .descriptor(),
                )
                .unwrap(),
            );
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": manifests
        }))
        .unwrap();
        let found = candidates(&index).unwrap();
        assert_eq!(found.len(), MAX_CANDIDATES);
        assert!(found
            .iter()
            .all(|d| d.artifact_type.as_deref() == Some(media_types::IMAGEFS_INDEX_ARTIFACT)));
        assert!(candidates(b"not json").is_err());
    }

    #[test]
    fn caps() {
        assert_eq!(entries_cap(1000), 4 << 20);
        assert_eq!(entries_cap(10 << 20), 10 << 20);
        assert_eq!(entries_cap(1 << 40), MAX_INDEX_BLOB);
        assert_eq!(gzip_cap(1000), 1 << 20);
        assert_eq!(gzip_cap(100 << 20), 10 << 20);
        assert_eq!(gzip_cap(1 << 40), MAX_INDEX_BLOB);
    }
}
