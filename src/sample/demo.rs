//! The demo images `imagefs demo` stores (and many tests import): a little distro
//! base layer, read from `distro.txt`, and an app on top of it in several forms.
//!
//! Owns: the demo's data. Must not touch: how images are built or written (it only
//! calls the builders and [`super::write_oci_layout`]).

use std::path::Path;

use super::{
    write_oci_layout, ArtifactBuilder, Built, BuiltImage, Compression, ImageBuilder, IndexBuilder,
    LayerSpec, ManifestFormat, Result, SAMPLE_CREATED,
};

/// One image of the demo set, with the reference it is imported under.
#[derive(Clone, Debug)]
pub struct DemoImage {
    /// Full reference, e.g. `docker.io/library/sample-alpine:3.19`.
    pub name: String,
    /// The image or index.
    pub built: Built,
}

/// The description of the distro base layer, with `{arch}` for the architecture.
const DISTRO: &str = include_str!("distro.txt");
/// The app layer of sample-app 1.0 and 1.1.
const APP_LAYER: &str = include_str!("app-1.0.txt");
/// The top layer of sample-app 1.1 (whiteouts, replaced files, an opaque directory).
const APP_PATCH_LAYER: &str = include_str!("app-1.1-patch.txt");

/// The base layer of `sample-alpine` for one architecture (`x86_64`, `aarch64`):
/// a little distro of about 150 entries with every entry type, a setuid binary,
/// a sticky /tmp, device nodes, a fifo, xattrs and long (GNU and PAX) names, as
/// described in `src/sample/distro.txt`.
pub fn distro_base_spec(arch: &str) -> Result<LayerSpec> {
    LayerSpec::parse(&DISTRO.replace("{arch}", arch))
}

pub(super) fn app_layer_spec() -> Result<LayerSpec> {
    LayerSpec::parse(APP_LAYER)
}

pub(super) fn app_patch_layer_spec() -> Result<LayerSpec> {
    LayerSpec::parse(APP_PATCH_LAYER)
}

fn sample_alpine(arch: &str, platform: (&str, &str, Option<&str>)) -> Result<BuiltImage> {
    ImageBuilder::new()
        .config(platform.0, platform.1, platform.2)
        .layer(&distro_base_spec(arch)?, Compression::Gzip)
        .cmd(&["/bin/sh"])
        .label("org.opencontainers.image.title", "sample-alpine")
        .annotation("org.opencontainers.image.version", "3.19")
        .build()
}

/// The images `imagefs demo` stores, in import order. They share layers:
///
/// - `docker.io/library/sample-alpine:3.19`: OCI, one gzip base layer (~150 entries).
/// - `docker.io/library/sample-app:1.0`: Docker schema 2, base + app layer.
/// - `docker.io/library/sample-app:1.1`: OCI, base + the same app layer + a zstd
///   layer with whiteouts, replaced files and an opaque directory.
/// - `docker.io/library/sample-app:1.1-sbom`: an OCI artifact whose subject is 1.1.
/// - `docker.io/library/sample-multi:latest`: an OCI index of linux/amd64 (the
///   sample-alpine manifest itself), linux/arm64/v8 and two buildx attestations.
pub fn demo_images() -> Result<Vec<DemoImage>> {
    let base = distro_base_spec("x86_64")?;
    let app = app_layer_spec()?;
    let alpine = sample_alpine("x86_64", ("linux", "amd64", None))?;
    let app_1_0 = ImageBuilder::new()
        .format(ManifestFormat::Docker)
        .layer(&base, Compression::Gzip)
        .layer(&app, Compression::Gzip)
        .cmd(&["/app/server"])
        .working_dir("/app")
        .env("APP_VERSION=1.0")
        .label("org.opencontainers.image.version", "1.0")
        .build()?;
    let app_1_1 = ImageBuilder::new()
        .layer(&base, Compression::Gzip)
        .layer(&app, Compression::Gzip)
        .layer(&app_patch_layer_spec()?, Compression::Zstd)
        .cmd(&["/app/server"])
        .working_dir("/app")
        .user("1000:1000")
        .env("APP_VERSION=1.1")
        .label("org.opencontainers.image.version", "1.1")
        .annotation("org.opencontainers.image.version", "1.1")
        .build()?;
    let sbom = ArtifactBuilder::new()
        .artifact_type("application/spdx+json")
        .config(
            "application/vnd.example.config+json",
            br#"{"tool":"imagefs sample"}"#,
        )
        .file(
            "sbom.spdx.json",
            "application/spdx+json",
            br#"{"spdxVersion":"SPDX-2.3","name":"sample-app-1.1","packages":[]}"#,
        )
        .subject(app_1_1.descriptor())
        .annotation("org.opencontainers.image.created", SAMPLE_CREATED)
        .build()?;
    let multi = IndexBuilder::new()
        .manifest(alpine.clone())
        .manifest(sample_alpine("aarch64", ("linux", "arm64", Some("v8")))?)
        .attestations(true)
        .build()?;
    let library = |name: &str, built: Built| DemoImage {
        name: format!("docker.io/library/{name}"),
        built,
    };
    Ok(vec![
        library("sample-alpine:3.19", alpine.into()),
        library("sample-app:1.0", app_1_0.into()),
        library("sample-app:1.1", app_1_1.into()),
        library("sample-app:1.1-sbom", sbom.into()),
        library("sample-multi:latest", multi.into()),
    ])
}

/// Writes the demo images as one OCI layout, each named by its full reference.
pub fn write_demo_layout(dir: &Path) -> Result<Vec<DemoImage>> {
    let images = demo_images()?;
    let entries: Vec<(Option<&str>, &Built)> = images
        .iter()
        .map(|image| (Some(image.name.as_str()), &image.built))
        .collect();
    write_oci_layout(dir, &entries)?;
    Ok(images)
}
