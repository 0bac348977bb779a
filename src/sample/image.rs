//! The image builders: [`ImageBuilder`] (layers, config, manifest),
//! [`ArtifactBuilder`] (OCI 1.1 artifacts) and [`BuiltImage::corrupt`] for negative
//! tests.
//!
//! Owns: config and manifest JSON. Must not touch: indexes (that is
//! [`super::index`]) or files on disk (that is [`super::write`]).

use std::collections::BTreeMap;

use serde_json::json;

use super::blob::{Blob, BuiltLayer, Descriptor, ManifestJson, Platform};
use super::{
    invalid, layer_media_type, media_type, Compression, LayerSpec, ManifestFormat, Result,
    SAMPLE_CREATED,
};
use crate::digest::{DiffId, Digest};

/// A built image manifest (or OCI artifact manifest) with everything it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// OCI or Docker schema 2.
    pub format: ManifestFormat,
    /// The platform of an image (None for artifacts).
    pub platform: Option<Platform>,
    /// The manifest blob.
    pub manifest: Blob,
    /// The config blob.
    pub config: Blob,
    /// The layers, base first.
    pub layers: Vec<BuiltLayer>,
    /// `artifactType` of an OCI artifact.
    pub artifact_type: Option<String>,
    /// `subject` of an OCI artifact.
    pub subject: Option<Descriptor>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl BuiltImage {
    /// The manifest digest.
    pub fn digest(&self) -> Digest {
        self.manifest.digest
    }

    /// A descriptor of the manifest (no platform).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            artifact_type: self.artifact_type.clone(),
            ..self.manifest.descriptor()
        }
    }

    /// The config's `rootfs.diff_ids`, as built.
    pub fn diff_ids(&self) -> Vec<DiffId> {
        self.layers.iter().map(|layer| layer.diff_id).collect()
    }

    /// Every blob: manifest, config, layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.manifest, &self.config];
        blobs.extend(self.layers.iter().map(|layer| &layer.blob));
        blobs
    }

    fn manifest_media_type(&self) -> &'static str {
        match self.format {
            ManifestFormat::Oci => media_type::OCI_MANIFEST,
            ManifestFormat::Docker => media_type::DOCKER_MANIFEST,
        }
    }

    pub(super) fn encode_manifest(
        &self,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> Result<Blob> {
        let media_type = self.manifest_media_type();
        let json = ManifestJson {
            schema_version: 2,
            media_type,
            artifact_type: self.artifact_type.as_deref(),
            config,
            layers,
            subject: self.subject.as_ref(),
            annotations: &self.annotations,
        };
        Ok(Blob::new(media_type, serde_json::to_vec(&json)?))
    }

    pub(super) fn descriptors(&self) -> (Descriptor, Vec<Descriptor>) {
        (
            self.config.descriptor(),
            self.layers.iter().map(BuiltLayer::descriptor).collect(),
        )
    }

    /// A copy of this image broken in one way, for negative tests. Every other
    /// digest and size stays consistent, so the one fault is what a reader meets.
    pub fn corrupt(&self, corruption: Corruption) -> Result<BuiltImage> {
        let mut image = self.clone();
        let (mut config_desc, mut layer_descs) = image.descriptors();
        let layer_index = |layer: usize| -> Result<usize> {
            if layer < self.layers.len() {
                Ok(layer)
            } else {
                Err(invalid(format!("corrupt: the image has no layer {layer}")))
            }
        };
        match corruption {
            Corruption::WrongDiffId { layer } => {
                let layer = layer_index(layer)?;
                let mut config: serde_json::Value = serde_json::from_slice(&image.config.data)?;
                config["rootfs"]["diff_ids"][layer] =
                    json!(Digest::of(b"not the diff_id").to_string());
                image.config = Blob::new(&image.config.media_type, serde_json::to_vec(&config)?);
                config_desc = image.config.descriptor();
            }
            Corruption::WrongSize(Part::Config) => config_desc.size += 1,
            Corruption::WrongSize(Part::Layer(layer)) => {
                layer_descs[layer_index(layer)?].size += 1;
            }
            Corruption::WrongDigest(Part::Config) => {
                let mut config: serde_json::Value = serde_json::from_slice(&image.config.data)?;
                config["imagefs.corrupted"] = json!(true);
                image.config.data = serde_json::to_vec(&config)?;
                config_desc.size = image.config.size();
            }
            Corruption::WrongDigest(Part::Layer(layer)) => {
                let layer = layer_index(layer)?;
                let other = LayerSpec::parse(r#"file /corrupted 0644 "not the layer you want""#)?
                    .build(image.layers[layer].compression)?;
                image.layers[layer].blob.data = other.blob.data;
                layer_descs[layer].size = image.layers[layer].blob.size();
            }
            Corruption::TruncatedLayer { layer } => {
                let layer = layer_index(layer)?;
                let blob = &mut image.layers[layer].blob;
                let mut data = std::mem::take(&mut blob.data);
                data.truncate(data.len() / 2);
                *blob = Blob::new(&blob.media_type, data);
                layer_descs[layer] = image.layers[layer].descriptor();
            }
            Corruption::MalformedConfig => {
                image.config = Blob::new(
                    &image.config.media_type,
                    br#"{"architecture": "amd64", "os": "linux", "rootfs": {"type": "#.to_vec(),
                );
                config_desc = image.config.descriptor();
            }
            Corruption::MalformedManifest => {
                let mut data = image.manifest.data.clone();
                data.truncate(data.len() / 2);
                image.manifest = Blob::new(&image.manifest.media_type, data);
                return Ok(image);
            }
            Corruption::UnknownLayerMediaType { layer } => {
                let layer = layer_index(layer)?;
                image.layers[layer].blob.media_type = media_type::UNKNOWN_LAYER.to_string();
                layer_descs[layer].media_type = media_type::UNKNOWN_LAYER.to_string();
            }
        }
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}

/// Which blob of an image a corruption applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The config blob.
    Config,
    /// The layer at this position (0 = base).
    Layer(usize),
}

/// Ways to break an image for negative tests (see [`BuiltImage::corrupt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The config lists a wrong `diff_id` for this layer (digests and sizes are right).
    WrongDiffId {
        /// Layer position.
        layer: usize,
    },
    /// The manifest's descriptor claims one byte more than the blob has.
    WrongSize(Part),
    /// The file stored under the descriptor's digest holds other (valid) bytes of
    /// the size the descriptor claims.
    WrongDigest(Part),
    /// The layer blob is cut in half; descriptor digest and size match the cut
    /// bytes, so only decompression or tar parsing finds the fault.
    TruncatedLayer {
        /// Layer position.
        layer: usize,
    },
    /// The config is cut-off JSON (descriptor consistent).
    MalformedConfig,
    /// The manifest is cut-off JSON (its digest is of the cut bytes).
    MalformedManifest,
    /// The layer's media type is [`media_type::UNKNOWN_LAYER`].
    UnknownLayerMediaType {
        /// Layer position.
        layer: usize,
    },
}

enum LayerSource {
    Spec(LayerSpec, Compression),
    Built(BuiltLayer),
}

/// Builds an image: layers, config and manifest.
pub struct ImageBuilder {
    format: ManifestFormat,
    platform: Platform,
    layers: Vec<LayerSource>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// An OCI linux/amd64 image with no layers and
    /// `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`.
    pub fn new() -> Self {
        ImageBuilder {
            format: ManifestFormat::Oci,
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
            layers: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created: SAMPLE_CREATED.into(),
        }
    }

    /// OCI (default) or Docker schema 2 manifest and media types.
    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the config's os, architecture and variant.
    pub fn config(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.platform = Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        };
        self
    }

    /// Adds a layer built from a description.
    pub fn layer(mut self, spec: &LayerSpec, compression: Compression) -> Self {
        self.layers
            .push(LayerSource::Spec(spec.clone(), compression));
        self
    }

    /// Adds an already built layer (its media type follows this image's format).
    pub fn built_layer(mut self, layer: BuiltLayer) -> Self {
        self.layers.push(LayerSource::Built(layer));
        self
    }

    /// Adds an environment variable `NAME=value` to the config.
    pub fn env(mut self, variable: &str) -> Self {
        self.env.push(variable.into());
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `Cmd`.
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the config's `User`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the config's `created` time (RFC 3339).
    pub fn created(mut self, created: &str) -> Self {
        self.created = created.into();
        self
    }

    /// Builds layers, config and manifest.
    pub fn build(self) -> Result<BuiltImage> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for source in self.layers {
            let mut layer = match source {
                LayerSource::Spec(spec, compression) => spec.build(compression)?,
                LayerSource::Built(layer) => layer,
            };
            layer.blob.media_type = layer_media_type(self.format, layer.compression).to_string();
            layers.push(layer);
        }

        let mut container_config = serde_json::Map::new();
        if let Some(user) = &self.user {
            container_config.insert("User".into(), json!(user));
        }
        if !self.env.is_empty() {
            container_config.insert("Env".into(), json!(self.env));
        }
        if !self.entrypoint.is_empty() {
            container_config.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            container_config.insert("Cmd".into(), json!(self.cmd));
        }
        if let Some(dir) = &self.working_dir {
            container_config.insert("WorkingDir".into(), json!(dir));
        }
        if !self.labels.is_empty() {
            container_config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<serde_json::Value> = (0..layers.len())
            .map(|i| {
                json!({
                    "created": self.created,
                    "created_by": format!("imagefs sample: layer {i}"),
                })
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": self.created,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config_media_type = match self.format {
            ManifestFormat::Oci => media_type::OCI_CONFIG,
            ManifestFormat::Docker => media_type::DOCKER_CONFIG,
        };
        let config = Blob::new(config_media_type, serde_json::to_vec(&config)?);

        let mut image = BuiltImage {
            format: self.format,
            platform: Some(self.platform),
            manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
            config,
            layers,
            artifact_type: None,
            subject: None,
            annotations: self.annotations,
        };
        let (config_desc, layer_descs) = image.descriptors();
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}

/// Builds an OCI 1.1 artifact manifest (any config media type, arbitrary blobs,
/// optional `subject`).
pub struct ArtifactBuilder {
    artifact_type: Option<String>,
    config: Blob,
    blobs: Vec<BuiltLayer>,
    subject: Option<Descriptor>,
    annotations: BTreeMap<String, String>,
}

impl Default for ArtifactBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ArtifactBuilder {
    /// An artifact with the empty config (`application/vnd.oci.empty.v1+json`, `{}`).
    pub fn new() -> Self {
        ArtifactBuilder {
            artifact_type: None,
            config: Blob::new(media_type::OCI_EMPTY, b"{}".to_vec()),
            blobs: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Sets `artifactType`.
    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.into());
        self
    }

    /// Uses a config blob of this media type (e.g. `application/vnd.example.config+json`).
    pub fn config(mut self, media_type: &str, data: &[u8]) -> Self {
        self.config = Blob::new(media_type, data.to_vec());
        self
    }

    /// Adds a blob (a `layers` entry) with an `org.opencontainers.image.title`
    /// annotation, as ORAS does for files.
    pub fn file(mut self, title: &str, media_type: &str, data: &[u8]) -> Self {
        let mut blob = self.raw_blob(media_type, data);
        blob.annotations
            .insert("org.opencontainers.image.title".into(), title.into());
        self.blobs.push(blob);
        self
    }

    /// Adds a blob without annotations.
    pub fn blob(mut self, media_type: &str, data: &[u8]) -> Self {
        let blob = self.raw_blob(media_type, data);
        self.blobs.push(blob);
        self
    }

    fn raw_blob(&self, media_type: &str, data: &[u8]) -> BuiltLayer {
        let blob = Blob::new(media_type, data.to_vec());
        BuiltLayer {
            diff_id: DiffId(blob.digest),
            blob,
            tar: Vec::new(),
            compression: Compression::None,
            annotations: BTreeMap::new(),
        }
    }

    /// Points `subject` at a manifest (the artifact is "about" that image).
    pub fn subject(mut self, descriptor: Descriptor) -> Self {
        self.subject = Some(descriptor);
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Builds the artifact manifest.
    pub fn build(self) -> Result<BuiltImage> {
        if self.artifact_type.is_none() && self.config.media_type == media_type::OCI_EMPTY {
            return Err(invalid(
                "an artifact with the empty config needs an artifactType",
            ));
        }
        let mut blobs = self.blobs;
        if blobs.is_empty() {
            // OCI 1.1: an artifact without blobs lists the empty descriptor.
            let empty = Blob::new(media_type::OCI_EMPTY, b"{}".to_vec());
            blobs.push(BuiltLayer {
                diff_id: DiffId(empty.digest),
                blob: empty,
                tar: Vec::new(),
                compression: Compression::None,
                annotations: BTreeMap::new(),
            });
        }
        let mut image = BuiltImage {
            format: ManifestFormat::Oci,
            platform: None,
            manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
            config: self.config,
            layers: blobs,
            artifact_type: self.artifact_type,
            subject: self.subject,
            annotations: self.annotations,
        };
        let (config_desc, layer_descs) = image.descriptors();
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}
