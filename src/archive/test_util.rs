//! Test fixtures built in code: a small image (one gzip layer, built with
//! [`crate::sample`]), laid out by hand as an OCI layout, an OCI archive and
//! docker-archives (so the readers meet forms our writers do not make), plus an
//! in-memory [`BlobReader`].

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use super::BlobReader;
use crate::digest::Digest;
use crate::image::media_types::OCI_MANIFEST;
use crate::image::Descriptor;
use crate::sample::{Compression, ImageBuilder, LayerSpec};

/// gzip with fixed settings.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A one-layer image and all its blobs.
pub(crate) struct TestImage {
    /// The uncompressed layer tar.
    pub layer_tar: Vec<u8>,
    /// The gzip layer blob.
    pub layer: Vec<u8>,
    /// The config blob.
    pub config: Vec<u8>,
    /// The manifest blob.
    pub manifest: Vec<u8>,
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
}

impl TestImage {
    /// An image (built with [`crate::sample`]) whose one gzip layer holds
    /// `hello.txt` with `greeting` and `etc/os-release`.
    pub(crate) fn new(greeting: &str) -> Self {
        // A greeting is a few plain words: no quotes or backslashes to escape.
        let spec = LayerSpec::parse(&format!(
            "file /hello.txt 0644 \"{greeting}\"\nfile /etc/os-release 0644 \"ID=test\\n\""
        ))
        .unwrap();
        let built = ImageBuilder::new()
            .layer(&spec, Compression::Gzip)
            .cmd(&["/bin/sh"])
            .build()
            .unwrap();
        let layer = &built.layers[0];
        TestImage {
            layer_tar: layer.tar.clone(),
            layer: layer.blob.data.clone(),
            config: built.config.data.clone(),
            descriptor: Descriptor::new(OCI_MANIFEST, built.digest(), built.manifest.size()),
            manifest: built.manifest.data,
        }
    }

    /// (digest, bytes) of every blob.
    pub(crate) fn blobs(&self) -> Vec<(Digest, Vec<u8>)> {
        [&self.manifest, &self.config, &self.layer]
            .into_iter()
            .map(|bytes| (Digest::of(bytes), bytes.clone()))
            .collect()
    }
}

/// Writes an OCI layout with the given (ref.name, image) entries.
pub(crate) fn write_layout(dir: &Path, entries: &[(Option<&str>, &TestImage)]) {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).unwrap();
    let mut manifests = Vec::new();
    for (name, image) in entries {
        for (digest, bytes) in image.blobs() {
            fs::write(blob_dir.join(digest.hex()), bytes).unwrap();
        }
        let mut descriptor = image.descriptor.clone();
        if let Some(name) = name {
            descriptor
                .annotations
                .insert("org.opencontainers.image.ref.name".into(), (*name).into());
        }
        manifests.push(descriptor);
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Tars up a directory (members named relative to it).
pub(crate) fn tar_directory(dir: &Path, out: &Path) {
    let mut builder = tar::Builder::new(fs::File::create(out).unwrap());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap().flush().unwrap();
}

/// One member of a hand-built tar.
#[derive(Clone, Copy)]
pub(crate) enum TarMember<'a> {
    /// A regular file.
    File(&'a str, &'a [u8]),
    /// A symlink: name, target.
    Symlink(&'a str, &'a str),
    /// A hard link: name, target.
    HardLink(&'a str, &'a str),
}

/// Builds a tar from members.
pub(crate) fn build_tar(members: &[TarMember<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        match member {
            TarMember::File(name, contents) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(contents.len() as u64);
                builder.append_data(&mut header, name, *contents).unwrap();
            }
            TarMember::Symlink(name, target) | TarMember::HardLink(name, target) => {
                header.set_entry_type(if matches!(member, TarMember::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                header.set_size(0);
                builder.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// A classic `docker save` archive of two images sharing their layer: the second
/// image's layer is a symlink `../<id1>/layer.tar`.
pub(crate) fn classic_docker_archive(first: &TestImage, second_config: &[u8]) -> Vec<u8> {
    let config_name = format!("{}.json", Digest::of(&first.config).hex());
    let second_config_name = format!("{}.json", Digest::of(second_config).hex());
    let id1 = "1".repeat(64);
    let id2 = "2".repeat(64);
    let manifest = serde_json::json!([
        {"Config": config_name, "RepoTags": ["example.com/app:1", "app:latest"], "Layers": [format!("{id1}/layer.tar")]},
        {"Config": second_config_name, "RepoTags": null, "Layers": [format!("{id2}/layer.tar")]},
    ]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let repositories = format!(r#"{{"app":{{"latest":"{id1}"}}}}"#);
    let first_layer = format!("{id1}/layer.tar");
    let second_layer = format!("{id2}/layer.tar");
    let second_target = format!("../{id1}/layer.tar");
    build_tar(&[
        TarMember::File(&config_name, &first.config),
        TarMember::File(&second_config_name, second_config),
        TarMember::File(&first_layer, &first.layer_tar),
        TarMember::Symlink(&second_layer, &second_target),
        TarMember::File("manifest.json", &manifest),
        TarMember::File("repositories", repositories.as_bytes()),
    ])
}

/// Blobs in memory.
#[derive(Default)]
pub(crate) struct MemoryBlobs(pub HashMap<Digest, Vec<u8>>);

impl MemoryBlobs {
    /// All blobs of these images.
    pub(crate) fn of(images: &[&TestImage]) -> Self {
        MemoryBlobs(images.iter().flat_map(|image| image.blobs()).collect())
    }
}

impl BlobReader for MemoryBlobs {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        self.0
            .get(digest)
            .map(|bytes| Box::new(bytes.as_slice()) as Box<dyn Read>)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no blob {digest}")))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        self.0
            .get(digest)
            .map(|bytes| bytes.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no blob {digest}")))
    }
}

/// Reads a blob fully from a source and checks its digest.
pub(crate) fn read_verified(
    source: &dyn super::ImageSource<Error = super::ArchiveError>,
    digest: &Digest,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    source
        .open_blob(digest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(
        Digest::of(&bytes),
        *digest,
        "blob {digest} from {}",
        source.describe()
    );
    bytes
}

/// A compressed tar whose one member `zeros` holds `size` zero bytes: a
/// decompression bomb of about 1000:1 with gzip, far more with zstd. Built in
/// chunks, so no buffer of `size` bytes is ever allocated.
pub(crate) fn zero_bomb(size: u64, zstd: bool) -> Vec<u8> {
    fn feed<W: Write>(mut out: W, size: u64) -> W {
        let mut header = tar::Header::new_ustar();
        header.set_path("zeros").unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        out.write_all(header.as_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            out.write_all(&chunk[..n as usize]).unwrap();
            left -= n;
        }
        out
    }
    if zstd {
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        feed(encoder, size).finish().unwrap()
    } else {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        feed(encoder, size).finish().unwrap()
    }
}
