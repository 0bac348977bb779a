//! `pull`: a registry reference into the store, through the one import pipeline
//! ([`Store::import_from`] over a [`RegistrySource`]): the same verification,
//! layer indexes, leases and all-or-nothing commit as an import from a file, with
//! blobs fetched on several threads and their origin recorded in the same commit.
//!
//! Owns: resolving what to pull (tag, digest, one platform of an index) without
//! fetching what the store has. Must not touch: HTTP details (`remote`), the
//! terminal.

use std::io::Read;
use std::sync::Arc;

use crate::digest::Digest;
use crate::image::{self, Descriptor, Parsed, Platform};
use crate::reference::{Reference, Target};
use crate::remote::{Client, FetchedManifest, Options, RegistrySource, RemoteError};
use crate::store::import::{ImageWarnings, ImportOptions, DEFAULT_PULL_JOBS};
use crate::store::index_artifact::ArtifactLayer;
use crate::store::meta::Origin;
use crate::store::progress::{NoProgress, Progress};
use crate::store::{CasError, Store, StoreError, MAX_JSON_BLOB};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to pull.
#[derive(Clone)]
pub struct PullOptions {
    /// How to reach the registry: credentials, TLS, timeouts, retries.
    pub remote: Options,
    /// Store the image under this tag reference instead of the pulled one.
    pub local: Option<Reference>,
    /// Of an index, pull only the child for this platform and store it as a plain
    /// image (as `docker pull --platform` does).
    pub platform: Option<Platform>,
    /// How many blobs travel at once (at least 1).
    pub jobs: usize,
    /// Store manifests and configs now and fetch layer bytes only when read
    /// (SPEC 6, `pull --lazy`).
    pub lazy: bool,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            remote: Options::default(),
            local: None,
            platform: None,
            jobs: DEFAULT_PULL_JOBS,
            lazy: false,
            progress: Arc::new(NoProgress),
        }
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("remote", &self.remote)
            .field("local", &self.local)
            .field("platform", &self.platform)
            .field("jobs", &self.jobs)
            .field("lazy", &self.lazy)
            .finish_non_exhaustive()
    }
}

/// What a pull did (`--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// The remote reference pulled.
    pub source: String,
    /// The reference the image is stored under.
    pub reference: String,
    /// The manifest (or index) stored under it.
    pub digest: Digest,
    /// Blobs fetched from the registry (manifests, configs, layers).
    pub blobs_fetched: u64,
    /// Bytes fetched from the registry (blob and manifest bodies).
    pub bytes_fetched: u64,
    /// Blobs the store had already: not fetched.
    pub blobs_skipped: u64,
    /// Entries the image's `rootfs/` leaves out, as for an import.
    pub warnings: Vec<ImageWarnings>,
    /// `--lazy`: layers stored without their bytes (fetched by range when read).
    pub lazy_layers: u64,
    /// `--lazy`: of those, layers that were fetched whole and stored now because
    /// they are small or not gzip.
    pub lazy_fetched_whole: u64,
    /// `--lazy`: layers whose indexes came from streaming them once.
    pub layers_streamed: u64,
}

/// Parses `OS/ARCH[/VARIANT]` (`linux/arm64/v8`).
pub fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let valid = |s: &&str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
        return Err(StoreError::Invalid(format!(
            "platform {text:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8"
        )));
    }
    Ok(Platform {
        os: parts[0].to_string(),
        architecture: parts[1].to_string(),
        variant: parts.get(2).map(|v| v.to_string()),
        os_version: None,
    })
}

/// `os/arch[/variant]`.
pub fn platform_text(platform: &Platform) -> String {
    match &platform.variant {
        Some(variant) if !variant.is_empty() => {
            format!("{}/{}/{variant}", platform.os, platform.architecture)
        }
        _ => format!("{}/{}", platform.os, platform.architecture),
    }
}

/// Whether `offered` (an index entry's or a config's platform) is what `wanted`
/// asks for. No variant asked matches any variant; `arm64` and `arm64/v8` are one.
fn platform_matches(wanted: &Platform, offered: &Platform) -> bool {
    let normal = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", None | Some("")) => Some("v8".to_string()),
        (_, Some("")) => None,
        (_, variant) => variant.map(str::to_string),
    };
    wanted.os == offered.os
        && wanted.architecture == offered.architecture
        && (wanted.variant.is_none() || normal(wanted) == normal(offered))
}

impl Store {
    /// Pulls `reference` (a tag or a digest) from its registry into the store
    /// (SPEC section 6). Blobs the store has (under any registry) are not fetched.
    pub fn pull(&self, reference: &Reference, options: &PullOptions) -> Result<PullReport> {
        let client = Arc::new(Client::new(&reference.registry, &options.remote)?);
        let result = self
            .pull_with_client(client, reference, options)
            .map_err(remote_cause);
        // Also when it failed before the import began: bars must not outlive it.
        options.progress.finished();
        result
    }

    fn pull_with_client(
        &self,
        client: Arc<Client>,
        reference: &Reference,
        options: &PullOptions,
    ) -> Result<PullReport> {
        let destination = match (&options.local, &reference.target) {
            (Some(local), _) => local.clone(),
            (None, Target::Tag(_)) => reference.clone(),
            (None, Target::Digest(digest)) => Reference {
                target: Target::Tag(digest_tag(digest)),
                ..reference.clone()
            },
        };
        if destination.tag().is_none() {
            return Err(StoreError::Invalid(format!(
                "{destination}: a pull is stored under a tag, not a digest"
            )));
        }
        let wanted = match &reference.target {
            Target::Tag(tag) => tag.clone(),
            Target::Digest(digest) => digest.to_string(),
        };
        let mut top = self.top_manifest(&client, &reference.repository, &wanted)?;
        let mut source_reference = reference.clone();
        if let Some(platform) = &options.platform {
            if let Some(child) = self.pick_platform(&client, reference, &top, platform)? {
                source_reference.target = Target::Digest(child.digest);
                top =
                    self.top_manifest(&client, &reference.repository, &child.digest.to_string())?;
            }
        }
        let source = RegistrySource::with_top(client.clone(), &source_reference, top)?;
        let report = self.import_from(
            &source,
            None,
            &ImportOptions {
                reference: Some(destination.clone()),
                progress: options.progress.clone(),
                jobs: options.jobs.max(1),
                origin: Some(Origin {
                    registry: reference.registry.clone(),
                    repository: reference.repository.clone(),
                }),
                lazy_layers: options.lazy,
                ..ImportOptions::default()
            },
        )?;
        let mut pulled = PullReport {
            source: reference.to_string(),
            reference: destination.to_string(),
            digest: source.top().digest,
            blobs_fetched: report.blobs_read,
            bytes_fetched: report.bytes_read,
            blobs_skipped: report.blobs_present,
            warnings: report.warnings,
            lazy_layers: report.lazy_layers.len() as u64,
            lazy_fetched_whole: 0,
            layers_streamed: 0,
        };
        if !report.lazy_layers.is_empty() {
            // The tag is committed: the image is visible now. Its layers' indexes
            // are what listing it needs; get them before returning.
            self.share_client(&reference.registry, client.clone());
            // Everything the indexing reads counts: the index artifact's blobs,
            // streamed layers and layers fetched whole.
            let before = client.bytes_fetched();
            let (whole, streamed) = self.index_lazy_layers(
                &client,
                reference,
                &source.top().digest,
                &report.lazy_layers,
                options,
            )?;
            pulled.lazy_fetched_whole = whole;
            pulled.layers_streamed = streamed;
            pulled.bytes_fetched += client.bytes_fetched().saturating_sub(before);
        }
        Ok(pulled)
    }

    /// Gets the indexes of the layers a lazy pull recorded, on up to `jobs` threads:
    /// from the cache, else the index artifact, else by streaming each layer once
    /// (small and non-gzip layers are fetched whole and stored instead). Returns how
    /// many were fetched whole and how many streamed.
    fn index_lazy_layers(
        &self,
        client: &Client,
        reference: &Reference,
        top: &Digest,
        layers: &[Digest],
        options: &PullOptions,
    ) -> Result<(u64, u64)> {
        // The index artifact first: layers it gives indexes for are then found in
        // the cache below. A registry failure while looking for it is logged and
        // the layers are streamed instead (which meets the same registry, and says
        // what is wrong if it is really down).
        for (manifest, layers) in self.lazy_image_layers(top)? {
            if let Err(e) = self.fetch_artifact_indexes(
                client,
                &reference.repository,
                &manifest,
                &layers,
                super::index_artifact::GzipIndexes::Later,
            ) {
                log::warn!("{reference}: no index artifact used for {manifest}: {e}");
            }
        }
        let missing: Vec<Digest> = layers
            .iter()
            .filter(|layer| !self.layer_index_cached(layer))
            .copied()
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let whole = std::sync::atomic::AtomicU64::new(0);
        let streamed = std::sync::atomic::AtomicU64::new(0);
        let first_error: std::sync::Mutex<Option<StoreError>> = std::sync::Mutex::new(None);
        let worker = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(layer) = missing.get(i) else {
                return;
            };
            let small = self
                .blob(layer)
                .ok()
                .flatten()
                .map(|info| {
                    info.size < crate::store::SMALL_LAYER
                        || image::LayerCompression::from_media_type(&info.media_type)
                            != Some(image::LayerCompression::Gzip)
                })
                .unwrap_or(false);
            match self.layer_index(layer) {
                Ok(_) if small => {
                    whole.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {
                    streamed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    crate::sys::lock(&first_error).get_or_insert(e);
                    return;
                }
            }
        };
        let threads = options.jobs.max(1).min(missing.len().max(1));
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(worker);
            }
            worker();
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok((whole.into_inner(), streamed.into_inner()))
    }

    /// Each image manifest under `top` (itself, or an index's children) with its
    /// layers as recorded (digest, size, media type, the config's diff_id): what the
    /// index artifact is asked for.
    pub(crate) fn lazy_image_layers(
        &self,
        top: &Digest,
    ) -> Result<Vec<(Digest, Vec<ArtifactLayer>)>> {
        let mut out = Vec::new();
        for blob in self.reachable_blobs(top)? {
            if blob.kind != crate::store::BlobKind::Manifest {
                continue;
            }
            let mut layers = Vec::new();
            for edge in self.edges(&blob.digest)? {
                if edge.kind != crate::store::EdgeKind::Layer {
                    continue;
                }
                let Some(diff_id) = self.blob(&edge.child)?.and_then(|info| info.diff_id) else {
                    continue;
                };
                layers.push(ArtifactLayer {
                    digest: edge.child,
                    size: edge.size,
                    media_type: edge.media_type,
                    diff_id: crate::digest::DiffId(diff_id),
                });
            }
            if !layers.is_empty() {
                out.push((blob.digest, layers));
            }
        }
        Ok(out)
    }

    /// The manifest or index `wanted` (a tag or a digest) names, from the store when
    /// it has that digest (a tag costs one HEAD then), else fetched.
    fn top_manifest(
        &self,
        client: &Client,
        repository: &str,
        wanted: &str,
    ) -> Result<FetchedManifest> {
        let known = match Digest::parse(wanted) {
            Ok(digest) => Some(digest),
            // A registry that gives no digest on HEAD costs a GET.
            Err(_) => client
                .head_manifest(repository, wanted)?
                .and_then(|info| info.digest),
        };
        if let Some(digest) = known {
            if let Some(stored) = self.stored_manifest(&digest)? {
                return Ok(stored);
            }
        }
        Ok(client.get_manifest(repository, wanted)?)
    }

    /// A manifest or index the store has, as if fetched.
    fn stored_manifest(&self, digest: &Digest) -> Result<Option<FetchedManifest>> {
        let Some(info) = self.blob(digest)? else {
            return Ok(None);
        };
        if !self.cas.contains(digest) || info.size > MAX_JSON_BLOB {
            return Ok(None);
        }
        match self.read_blob(digest) {
            Ok(bytes) if Digest::of(&bytes) == *digest => Ok(Some(FetchedManifest {
                bytes,
                media_type: info.media_type,
                digest: *digest,
            })),
            // Deleted meanwhile or damaged: fetch it instead.
            Ok(_) | Err(StoreError::Cas(CasError::Io { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// For `--platform`: the child of index `top` for `platform`, or `None` when
    /// `top` is a plain image of that platform; an error when it is not.
    fn pick_platform(
        &self,
        client: &Client,
        reference: &Reference,
        top: &FetchedManifest,
        platform: &Platform,
    ) -> Result<Option<Descriptor>> {
        let what = format!("{reference}: manifest {}", top.digest);
        let parsed = image::parse_top(&top.bytes, Some(&top.media_type)).map_err(|source| {
            StoreError::Image {
                what: what.clone(),
                source,
            }
        })?;
        match parsed {
            Parsed::Index(index) => {
                let matching: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|child| {
                        child
                            .platform
                            .as_ref()
                            .is_some_and(|offered| platform_matches(platform, offered))
                    })
                    .collect();
                // Without a variant asked, prefer a child without one (`linux/arm`
                // of an index with v6 and v7 picks the first).
                let exact = matching.iter().find(|child| {
                    child
                        .platform
                        .as_ref()
                        .is_some_and(|p| p.variant == platform.variant)
                });
                match exact.or(matching.first()) {
                    Some(child) => Ok(Some((*child).clone())),
                    None => {
                        let offered: Vec<String> = index
                            .manifests
                            .iter()
                            .filter_map(|child| child.platform.as_ref().map(platform_text))
                            .collect();
                        Err(StoreError::NotFound(format!(
                            "{reference}: platform {} (the index offers {})",
                            platform_text(platform),
                            if offered.is_empty() {
                                "none".to_string()
                            } else {
                                offered.join(", ")
                            }
                        )))
                    }
                }
            }
            Parsed::Manifest(manifest) => {
                if !manifest.is_image() {
                    return Err(StoreError::Invalid(format!(
                        "{reference}: an artifact, not an image: --platform does not apply"
                    )));
                }
                let bytes = self.small_blob(client, &reference.repository, &manifest.config)?;
                let config = image::parse_config(&bytes).map_err(|source| StoreError::Image {
                    what: format!("{reference}: blob {}", manifest.config.digest),
                    source,
                })?;
                let offered = Platform {
                    os: config.os,
                    architecture: config.architecture,
                    variant: config.variant,
                    os_version: None,
                };
                if platform_matches(platform, &offered) {
                    Ok(None)
                } else {
                    Err(StoreError::NotFound(format!(
                        "{reference}: platform {} (the image is {} only)",
                        platform_text(platform),
                        platform_text(&offered)
                    )))
                }
            }
        }
    }

    /// A config-sized blob from the store or the registry (checked: digest, size).
    fn small_blob(
        &self,
        client: &Client,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>> {
        if self.cas.contains(&descriptor.digest) {
            if let Ok(bytes) = self.read_blob(&descriptor.digest) {
                return Ok(bytes);
            }
        }
        let what = format!("{repository}: blob {}", descriptor.digest);
        if descriptor.size > MAX_JSON_BLOB {
            return Err(StoreError::BadImage {
                what,
                problem: format!("{} bytes is too large for a config", descriptor.size),
            });
        }
        let mut bytes = Vec::new();
        client
            .get_blob(repository, &descriptor.digest, Some(descriptor.size))?
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::SourceRead {
                what: what.clone(),
                source,
            })?;
        if Digest::of(&bytes) != descriptor.digest {
            return Err(StoreError::BadImage {
                what,
                problem: format!("its bytes hash to {}", Digest::of(&bytes)),
            });
        }
        Ok(bytes)
    }
}

/// The tag a digest pull without a local reference is stored under:
/// `digest-<first 12 hex digits>` (the store keeps images by tag).
pub fn digest_tag(digest: &Digest) -> String {
    format!("digest-{}", digest.short(12))
}

/// A registry failure that surfaced as a read error of the pipeline (a dropped
/// connection, a truncated body) is reported as the registry's own one line.
pub(crate) fn remote_cause(error: StoreError) -> StoreError {
    let io = match &error {
        StoreError::SourceRead { source, .. } => Some(source),
        StoreError::Cas(CasError::Source { source, .. }) => Some(source),
        _ => None,
    };
    match io
        .and_then(|e| e.get_ref())
        .and_then(|inner| inner.downcast_ref::<RemoteError>())
    {
        Some(remote) => StoreError::Remote(remote.clone()),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = |text: &str| parse_platform(text).expect("a platform");
        assert_eq!(platform_text(&p("linux/arm64/v8")), "linux/arm64/v8");
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux//v8").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
        let table = [
            ("linux/amd64", "linux/amd64", true),
            ("linux/arm64/v8", "linux/arm64", true),
            ("linux/arm64", "linux/arm64/v8", true),
            ("linux/arm/v7", "linux/arm/v6", false),
            ("linux/arm", "linux/arm/v6", true),
            ("linux/amd64", "windows/amd64", false),
        ];
        for (wanted, offered, expected) in table {
            assert_eq!(
                platform_matches(&p(wanted), &p(offered)),
                expected,
                "{wanted} vs {offered}"
            );
        }
    }
}
