//! Media type constants and their classification.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI empty descriptor (OCI 1.1 artifacts use it as a config placeholder).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker "foreign" (nondistributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The imagefs index artifact: the `artifactType` of the OCI manifest that carries
/// an image manifest's layer indexes (README "Index artifacts").
pub const IMAGEFS_INDEX_ARTIFACT: &str = "application/vnd.imagefs.layer-index.v1";
/// A blob of the index artifact: a layer's entry index (`LayerIndex` bytes).
pub const IMAGEFS_LAYER_ENTRIES: &str = "application/vnd.imagefs.layer-entries.v1";
/// A blob of the index artifact: a gzip layer's seekable index (`GzipIndex` bytes).
pub const IMAGEFS_GZIP_INDEX: &str = "application/vnd.imagefs.gzip-index.v1";
/// The annotation of each index artifact blob: the digest of the layer it indexes.
pub const IMAGEFS_LAYER_DIGEST_ANNOTATION: &str = "dev.imagefs.layer.digest";
/// The bytes of the OCI empty descriptor's blob (`application/vnd.oci.empty.v1+json`).
pub const OCI_EMPTY_BYTES: &[u8] = b"{}";

/// Media types that Docker schema 1 used; recognised only to refuse them clearly.
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Every layer media type we can unpack, with its compression.
const LAYER_TYPES: &[(&str, LayerCompression)] = &[
    (OCI_LAYER_TAR, LayerCompression::None),
    (OCI_LAYER_TAR_GZIP, LayerCompression::Gzip),
    (OCI_LAYER_TAR_ZSTD, LayerCompression::Zstd),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        LayerCompression::None,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        LayerCompression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        LayerCompression::Zstd,
    ),
    (DOCKER_LAYER_TAR_GZIP, LayerCompression::Gzip),
    (DOCKER_FOREIGN_LAYER_TAR_GZIP, LayerCompression::Gzip),
    // containerd knows these two Docker-flavoured spellings and writes them on export.
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        LayerCompression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        LayerCompression::Zstd,
    ),
];

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// A plain tar stream.
    None,
    /// gzip over tar.
    Gzip,
    /// zstd over tar.
    Zstd,
}

impl LayerCompression {
    /// The compression of a layer media type, `None` (the Option) for anything that is
    /// not a known layer type.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        LAYER_TYPES
            .iter()
            .find(|(known, _)| *known == media_type)
            .map(|(_, compression)| *compression)
    }

    /// Guesses the compression from a blob's first bytes (gzip and zstd magic numbers).
    pub fn sniff(first_bytes: &[u8]) -> Self {
        if first_bytes.starts_with(&[0x1f, 0x8b]) {
            LayerCompression::Gzip
        } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            LayerCompression::None => OCI_LAYER_TAR,
            LayerCompression::Gzip => OCI_LAYER_TAR_GZIP,
            LayerCompression::Zstd => OCI_LAYER_TAR_ZSTD,
        }
    }
}

/// True for the OCI and Docker image config media types.
pub fn is_image_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// True for the OCI image manifest and the Docker schema 2 manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// True for the OCI index and the Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// True for a known layer media type (see [`LayerCompression::from_media_type`]).
pub fn is_layer(media_type: &str) -> bool {
    LayerCompression::from_media_type(media_type).is_some()
}

/// True for the obsolete Docker schema 1 manifest types, which we refuse.
pub fn is_docker_schema1(media_type: &str) -> bool {
    DOCKER_SCHEMA1.contains(&media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_compression_table() {
        let table: &[(&str, Option<LayerCompression>)] = &[
            (OCI_LAYER_TAR, Some(LayerCompression::None)),
            (OCI_LAYER_TAR_GZIP, Some(LayerCompression::Gzip)),
            (OCI_LAYER_TAR_ZSTD, Some(LayerCompression::Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(LayerCompression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(LayerCompression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(LayerCompression::Zstd),
            ),
            (DOCKER_LAYER_TAR_GZIP, Some(LayerCompression::Gzip)),
            (DOCKER_FOREIGN_LAYER_TAR_GZIP, Some(LayerCompression::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("application/vnd.in-toto+json", None),
            (OCI_CONFIG, None),
            ("", None),
        ];
        for (media_type, expected) in table {
            assert_eq!(
                LayerCompression::from_media_type(media_type),
                *expected,
                "{media_type}"
            );
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(
            LayerCompression::sniff(&[0x1f, 0x8b, 8]),
            LayerCompression::Gzip
        );
        assert_eq!(
            LayerCompression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            LayerCompression::Zstd
        );
        assert_eq!(LayerCompression::sniff(b"etc/"), LayerCompression::None);
        assert_eq!(LayerCompression::sniff(b""), LayerCompression::None);
    }

    #[test]
    fn classification() {
        assert!(is_image_config(OCI_CONFIG) && is_image_config(DOCKER_CONFIG));
        assert!(!is_image_config(OCI_EMPTY));
        assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
        assert!(!is_manifest(OCI_INDEX));
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(DOCKER_MANIFEST));
    }
}
