//! The one view of a stored manifest or index that both the mount and `inspect` show.
//!
//! Owns: assembling what never changes about a manifest (its kind, config, layers
//! by position, platform children with their unique names, subject) from the
//! metadata edges and the stored document. Must not write anything, and must not
//! know how the mount or the CLI present it.
//!
//! The edges are the source of truth for children (they are recorded from the
//! document's descriptors at import, one per descriptor, in document order); the
//! document is parsed only for what edges do not say: whether a manifest is a
//! container image, and its `artifactType`.

use crate::digest::Digest;
use crate::image::{self, ImageConfig, Parsed, Platform};

use super::{BlobInfo, BlobKind, EdgeKind, Store, StoreError};

/// What a stored manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A container image: its layers make a rootfs.
    Image,
    /// Any other manifest (attestations, signatures, OCI artifacts).
    Artifact,
    /// An image index or manifest list.
    Index,
}

/// The config a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigView {
    /// The config's digest.
    pub digest: Digest,
    /// The media type on the manifest's descriptor.
    pub media_type: String,
    /// The stored blob, if it is stored.
    pub blob: Option<BlobInfo>,
}

/// One layer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerView {
    /// Position in the manifest, base layer first (0, 1, ...).
    pub position: u32,
    /// The layer blob's digest.
    pub digest: Digest,
    /// The media type on the manifest's descriptor.
    pub media_type: String,
    /// The size on the manifest's descriptor.
    pub size: u64,
    /// The stored blob, if it is stored.
    pub blob: Option<BlobInfo>,
}

/// One child manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformView {
    /// Its unique, stable name (`<os>-<arch>[-<variant>]`, suffixed when shared:
    /// SPEC section 3), the name of its `platforms/` entry in the mount.
    pub name: String,
    /// The child manifest's digest.
    pub digest: Digest,
    /// The media type on the index's descriptor.
    pub media_type: String,
    /// The size on the index's descriptor.
    pub size: u64,
    /// The platform on the index's descriptor.
    pub platform: Option<Platform>,
}

/// What never changes about a stored manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestView {
    /// The manifest blob itself.
    pub info: BlobInfo,
    /// Image, artifact or index.
    pub kind: ManifestKind,
    /// The config (manifests only).
    pub config: Option<ConfigView>,
    /// Layers by position, base first (manifests only).
    pub layers: Vec<LayerView>,
    /// Child manifests in index order (indexes only).
    pub platforms: Vec<PlatformView>,
    /// OCI 1.1 `subject`: the manifest this one is about.
    pub subject: Option<Digest>,
    /// OCI 1.1 `artifactType`.
    pub artifact_type: Option<String>,
}

impl ManifestView {
    /// True for a container image (it has a rootfs).
    pub fn is_image(&self) -> bool {
        self.kind == ManifestKind::Image
    }

    /// True for an index or manifest list.
    pub fn is_index(&self) -> bool {
        self.kind == ManifestKind::Index
    }

    /// The stored config blob, if any.
    pub fn config_blob(&self) -> Option<&BlobInfo> {
        self.config.as_ref().and_then(|config| config.blob.as_ref())
    }

    /// The layers whose blobs are stored, base first, as (position, blob).
    pub fn stored_layers(&self) -> impl Iterator<Item = (u32, &BlobInfo)> + '_ {
        self.layers
            .iter()
            .filter_map(|layer| Some((layer.position, layer.blob.as_ref()?)))
    }

    /// The stored blob of the layer at `position`.
    pub fn stored_layer(&self, position: u32) -> Option<&BlobInfo> {
        self.layers
            .iter()
            .find(|layer| layer.position == position)
            .and_then(|layer| layer.blob.as_ref())
    }

    /// The child named `name` (see [`PlatformView::name`]).
    pub fn platform(&self, name: &str) -> Option<&PlatformView> {
        self.platforms.iter().find(|child| child.name == name)
    }
}

impl Store {
    /// The view of manifest or index `digest`; `None` when no manifest or index of
    /// that digest is stored. A manifest document that cannot be read or parsed is
    /// shown as an artifact (logged): the store keeps only documents that parsed at
    /// import, so this means damage, and the rest of the view still holds.
    pub fn manifest_view(&self, digest: &Digest) -> Result<Option<ManifestView>, StoreError> {
        let Some(info) = self.blob(digest)? else {
            return Ok(None);
        };
        if !matches!(info.kind, BlobKind::Manifest | BlobKind::Index) {
            return Ok(None);
        }
        let mut config = None;
        let mut layers = Vec::new();
        let mut children = Vec::new();
        let mut subject = None;
        for edge in self.edges(digest)? {
            match edge.kind {
                EdgeKind::Config => {
                    config = Some(ConfigView {
                        blob: self.blob(&edge.child)?,
                        digest: edge.child,
                        media_type: edge.media_type,
                    })
                }
                EdgeKind::Layer => layers.push(LayerView {
                    position: edge.position,
                    blob: self.blob(&edge.child)?,
                    digest: edge.child,
                    media_type: edge.media_type,
                    size: edge.size,
                }),
                EdgeKind::Manifest => children.push(edge),
                EdgeKind::Subject => subject = Some(edge.child),
            }
        }
        layers.sort_by_key(|layer| layer.position);
        children.sort_by_key(|child| child.position);
        let names = {
            let keyed: Vec<(Digest, Option<Platform>)> = children
                .iter()
                .map(|child| (child.child, child.platform.clone()))
                .collect();
            image::unique_platform_names(&keyed)
        };
        let platforms = names
            .into_iter()
            .zip(children)
            .map(|(name, child)| PlatformView {
                name,
                digest: child.child,
                media_type: child.media_type,
                size: child.size,
                platform: child.platform,
            })
            .collect();
        let (kind, artifact_type) = self.document_facts(&info);
        Ok(Some(ManifestView {
            info,
            kind,
            config,
            layers,
            platforms,
            subject,
            artifact_type,
        }))
    }

    /// The parsed config of an image (`None` for artifacts and indexes, and when
    /// the config blob is not stored).
    pub fn image_config(&self, view: &ManifestView) -> Result<Option<ImageConfig>, StoreError> {
        if !view.is_image() {
            return Ok(None);
        }
        let Some(config) = view.config_blob() else {
            return Ok(None);
        };
        let bytes = self.read_blob(&config.digest)?;
        image::parse_config(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("config {}: {e}", config.digest)))
    }

    /// What only the document says: image or artifact, and its `artifactType`.
    fn document_facts(&self, info: &BlobInfo) -> (ManifestKind, Option<String>) {
        let fallback = if info.kind == BlobKind::Index {
            ManifestKind::Index
        } else {
            ManifestKind::Artifact
        };
        let parsed = self
            .read_blob(&info.digest)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                image::parse_top(&bytes, Some(&info.media_type)).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(Parsed::Manifest(manifest)) if info.kind == BlobKind::Manifest => {
                let kind = if manifest.is_image() {
                    ManifestKind::Image
                } else {
                    ManifestKind::Artifact
                };
                (kind, manifest.artifact_type)
            }
            Ok(Parsed::Index(index)) if info.kind == BlobKind::Index => {
                (ManifestKind::Index, index.artifact_type)
            }
            Ok(_) => {
                log::error!(
                    "manifest {}: document kind differs from its record",
                    info.digest
                );
                (fallback, None)
            }
            Err(error) => {
                if info.kind == BlobKind::Manifest {
                    log::error!("manifest {}: {error}", info.digest);
                } else {
                    log::debug!("index {}: {error}", info.digest);
                }
                (fallback, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::sample::{
        self, ArtifactBuilder, Built, Compression, ImageBuilder, IndexBuilder, LayerSpec,
    };
    use crate::store::ImportOptions;

    #[test]
    fn one_view_of_images_indexes_and_artifacts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let layer = LayerSpec::parse(r#"file /a 0644 "a""#).expect("spec");
        let image = |arch: &str| {
            ImageBuilder::new()
                .config("linux", arch, None)
                .layer(&layer, Compression::Gzip)
                .layer(&layer, Compression::None)
                .build()
                .expect("image")
        };
        let index = IndexBuilder::new()
            .manifest(image("amd64"))
            .manifest(image("arm64"))
            .attestations(true)
            .build()
            .expect("index");
        let app = image("amd64");
        let artifact = ArtifactBuilder::new()
            .artifact_type("application/example")
            .blob("application/octet-stream", b"payload")
            .subject(app.descriptor())
            .build()
            .expect("artifact");
        let layout = dir.path().join("layout");
        let entries = [
            (Some("multi:1"), Built::Index(index)),
            (Some("app:1"), Built::from(app)),
            (Some("sig:1"), Built::from(artifact)),
        ];
        let refs: Vec<(Option<&str>, &Built)> = entries.iter().map(|(n, b)| (*n, b)).collect();
        sample::write_oci_layout(&layout, &refs).expect("layout");
        store
            .import(&layout, None, &ImportOptions::default())
            .expect("import");
        let view_of = |name: &str| {
            let digest = store
                .resolve(&Reference::parse(name).expect("reference"))
                .expect("resolve");
            store.manifest_view(&digest).expect("view").expect("stored")
        };

        let app = view_of("local/app:1");
        assert_eq!(app.kind, ManifestKind::Image);
        assert_eq!(app.layers.len(), 2);
        assert_eq!(
            app.layers.iter().map(|l| l.position).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(app.stored_layers().count(), 2);
        assert!(app.config_blob().is_some() && app.platforms.is_empty());
        let config = store.image_config(&app).expect("config").expect("image");
        assert_eq!(config.architecture, "amd64");

        let multi = view_of("local/multi:1");
        assert_eq!(multi.kind, ManifestKind::Index);
        let names: Vec<&str> = multi.platforms.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[..2], ["linux-amd64", "linux-arm64"]);
        assert_eq!(names.len(), 4);
        assert!(names[2].starts_with("unknown-unknown-") && names[2] != names[3]);
        assert_eq!(
            multi.platform("linux-arm64").map(|p| p.digest),
            Some(multi.platforms[1].digest)
        );
        assert!(multi.config.is_none() && multi.layers.is_empty());
        assert!(store.image_config(&multi).expect("no config").is_none());

        let sig = view_of("local/sig:1");
        assert_eq!(sig.kind, ManifestKind::Artifact);
        assert_eq!(sig.artifact_type.as_deref(), Some("application/example"));
        assert_eq!(sig.subject, Some(app.info.digest));

        assert!(store
            .manifest_view(&app.layers[0].digest)
            .expect("a layer")
            .is_none());
        assert!(store
            .manifest_view(&Digest::of(b"nothing"))
            .expect("nothing")
            .is_none());
    }
}
