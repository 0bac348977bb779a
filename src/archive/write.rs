//! Export targets: OCI layout directory, OCI archive, docker-archive.
//!
//! Writers walk the blob graph themselves from each image's top descriptor (index →
//! child manifests → config and layers; `subject` is not followed), reading JSON
//! through [`BlobReader`], and verify the digest and size of every blob they copy.
//!
//! Naming choices (skopeo and containerd read these):
//! - OCI layout / archive: each `index.json` entry carries
//!   `org.opencontainers.image.ref.name` = the tag (what `skopeo ... oci:DIR:TAG`
//!   looks up) and `io.containerd.image.name` = the full reference.
//! - docker-archive: uncompressed layers as `<diff_id hex>/layer.tar` (gzip and zstd
//!   blobs are decompressed and checked against the config's diff_ids, since
//!   `docker load` matches layer files to diff_ids), the config as
//!   `<config hex>.json`, `manifest.json` with Config/RepoTags/Layers and
//!   `repositories`. An index is exported as its child for the host platform
//!   (linux/<this machine's arch>), else its first image child.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;

use super::docker_manifest::DockerEntry;
use super::ArchiveError;
use crate::digest::{Digest, HashingReader};
use crate::image::media_types::{self, OCI_INDEX};
use crate::image::{
    parse_config, parse_top, Descriptor, LayerCompression, Manifest, Parsed,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MAX_JSON_SIZE,
};

/// Read access to the blobs being exported (the store implements it).
pub trait BlobReader {
    /// Opens a blob for streaming.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>>;
    /// The blob's size in bytes.
    fn blob_size(&self, digest: &Digest) -> io::Result<u64>;
}

/// One image to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportImage {
    /// The full reference text, e.g. `dev/app:1`: `io.containerd.image.name` in OCI
    /// layouts, the `RepoTags` entry in docker-archives.
    pub name: String,
    /// The tag, if the reference has one: `org.opencontainers.image.ref.name` in OCI
    /// layouts. Without a tag, a docker-archive lists no RepoTags for the image.
    pub tag: Option<String>,
    /// The top manifest or index. Everything it reaches is exported with it.
    pub descriptor: Descriptor,
}

/// How deep indexes may nest before we call it a cycle.
const MAX_INDEX_DEPTH: usize = 8;

fn read_json_blob(
    blobs: &dyn BlobReader,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, ArchiveError> {
    if descriptor.size > MAX_JSON_SIZE as u64 {
        return Err(ArchiveError::BlobMismatch {
            digest: descriptor.digest,
            problem: format!("{} bytes is over the 4 MiB limit for JSON", descriptor.size),
        });
    }
    let reader = blobs
        .open_blob(&descriptor.digest)
        .map_err(|source| ArchiveError::io(format!("blob {}", descriptor.digest), source))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_JSON_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ArchiveError::io(format!("blob {}", descriptor.digest), source))?;
    let (digest, size) = (Digest::of(&bytes), bytes.len() as u64);
    check(descriptor, digest, size)?;
    Ok(bytes)
}

fn check(descriptor: &Descriptor, digest: Digest, size: u64) -> Result<(), ArchiveError> {
    if size != descriptor.size {
        return Err(ArchiveError::BlobMismatch {
            digest: descriptor.digest,
            problem: format!("read {size} bytes, the descriptor says {}", descriptor.size),
        });
    }
    if digest != descriptor.digest {
        return Err(ArchiveError::BlobMismatch {
            digest: descriptor.digest,
            problem: format!("the bytes read hash to {digest}"),
        });
    }
    Ok(())
}

fn parse_json(bytes: &[u8], descriptor: &Descriptor) -> Result<Parsed, ArchiveError> {
    parse_top(bytes, Some(&descriptor.media_type)).map_err(|source| ArchiveError::Image {
        location: format!("blob {}", descriptor.digest),
        source,
    })
}

/// Every blob reachable from `top`, parents before children, each once.
fn collect_blobs(
    blobs: &dyn BlobReader,
    top: &Descriptor,
    seen: &mut HashSet<Digest>,
    out: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<(), ArchiveError> {
    if !seen.insert(top.digest) {
        return Ok(());
    }
    out.push(top.clone());
    if !media_types::is_manifest(&top.media_type) && !media_types::is_index(&top.media_type) {
        return Ok(());
    }
    if depth > MAX_INDEX_DEPTH {
        return Err(ArchiveError::Invalid {
            location: format!("blob {}", top.digest),
            problem: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
        });
    }
    match parse_json(&read_json_blob(blobs, top)?, top)? {
        Parsed::Manifest(manifest) => {
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if seen.insert(blob.digest) {
                    out.push(blob.clone());
                }
            }
        }
        Parsed::Index(index) => {
            for child in &index.manifests {
                collect_blobs(blobs, child, seen, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Copies one blob into `out`, verifying its digest and size.
fn copy_blob(
    blobs: &dyn BlobReader,
    descriptor: &Descriptor,
    out: &mut dyn Write,
) -> Result<(), ArchiveError> {
    let location = || format!("blob {}", descriptor.digest);
    let reader = blobs
        .open_blob(&descriptor.digest)
        .map_err(|source| ArchiveError::io(location(), source))?;
    let mut hashing = HashingReader::new(reader.take(descriptor.size + 1));
    io::copy(&mut hashing, out).map_err(|source| ArchiveError::io(location(), source))?;
    let (digest, size) = hashing.finish();
    check(descriptor, digest, size)
}

fn index_entry(image: &ExportImage) -> Descriptor {
    let mut descriptor = Descriptor::new(
        image.descriptor.media_type.clone(),
        image.descriptor.digest,
        image.descriptor.size,
    );
    descriptor.platform = image.descriptor.platform.clone();
    descriptor.artifact_type = image.descriptor.artifact_type.clone();
    if let Some(tag) = &image.tag {
        descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
    }
    descriptor
        .annotations
        .insert(ANNOTATION_CONTAINERD_NAME.to_string(), image.name.clone());
    descriptor
}

#[derive(Serialize)]
struct IndexJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: &'a [Descriptor],
}

const OCI_LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The `index.json` bytes for these images, and the blobs to write, in order.
fn layout_plan(
    images: &[ExportImage],
    blobs: &dyn BlobReader,
) -> Result<(Vec<u8>, Vec<Descriptor>), ArchiveError> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for image in images {
        collect_blobs(blobs, &image.descriptor, &mut seen, &mut all, 0)?;
    }
    let entries: Vec<Descriptor> = images.iter().map(index_entry).collect();
    let index = serde_json::to_vec(&IndexJson {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: &entries,
    })
    .expect("serializing plain structs of strings and numbers cannot fail");
    Ok((index, all))
}

/// Writes `bytes` to `path` through a temp file beside it and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".imagefs-")
        .tempfile_in(dir)
        .map_err(|source| ArchiveError::io(dir.display(), source))?;
    temp.write_all(bytes)
        .map_err(|source| ArchiveError::io(path.display(), source))?;
    temp.persist(path)
        .map_err(|error| ArchiveError::io(path.display(), error.error))?;
    Ok(())
}

/// Writes an OCI image layout into `dir` (created if missing). Blobs already present
/// are kept. An existing `index.json` is merged: its entries are kept unless one of
/// `images` has the same ref.name (tag), as skopeo does. `index.json` is written
/// last, so an interrupted export leaves the previous index intact.
pub fn write_oci_layout(
    dir: &Path,
    images: &[ExportImage],
    blobs: &dyn BlobReader,
) -> Result<(), ArchiveError> {
    let (_, all) = layout_plan(images, blobs)?;
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(|source| ArchiveError::io(blob_dir.display(), source))?;
    for descriptor in &all {
        let target = blob_dir.join(descriptor.digest.hex());
        if target.exists() {
            continue;
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".imagefs-")
            .tempfile_in(&blob_dir)
            .map_err(|source| ArchiveError::io(blob_dir.display(), source))?;
        {
            let mut out = BufWriter::new(temp.as_file_mut());
            copy_blob(blobs, descriptor, &mut out)?;
            out.flush()
                .map_err(|source| ArchiveError::io(target.display(), source))?;
        }
        temp.persist(&target)
            .map_err(|error| ArchiveError::io(target.display(), error.error))?;
    }
    let index_path = dir.join("index.json");
    let mut entries: Vec<Descriptor> = Vec::new();
    if index_path.exists() {
        let bytes = fs::read(&index_path)
            .map_err(|source| ArchiveError::io(index_path.display(), source))?;
        let existing =
            crate::image::parse_index(&bytes, None).map_err(|source| ArchiveError::Image {
                location: index_path.display().to_string(),
                source,
            })?;
        let replaced: HashSet<&str> = images
            .iter()
            .filter_map(|image| image.tag.as_deref())
            .collect();
        entries.extend(existing.manifests.into_iter().filter(|entry| {
            !entry
                .annotations
                .get(ANNOTATION_REF_NAME)
                .is_some_and(|name| replaced.contains(name.as_str()))
        }));
    }
    entries.extend(images.iter().map(index_entry));
    let index = serde_json::to_vec(&IndexJson {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: &entries,
    })
    .expect("serializing plain structs of strings and numbers cannot fail");
    write_atomically(&dir.join("oci-layout"), OCI_LAYOUT_JSON)?;
    write_atomically(&index_path, &index)
}

/// A tar being written to a temp file beside its target, renamed into place by
/// [`TarTarget::finish`]; dropped unfinished, the temp file is removed.
struct TarTarget {
    builder: tar::Builder<BufWriter<tempfile::NamedTempFile>>,
    path: std::path::PathBuf,
}

impl TarTarget {
    fn create(path: &Path) -> Result<Self, ArchiveError> {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".imagefs-export-")
            .tempfile_in(dir)
            .map_err(|source| ArchiveError::io(dir.display(), source))?;
        let mut builder = tar::Builder::new(BufWriter::new(temp));
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(TarTarget {
            builder,
            path: path.to_path_buf(),
        })
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn directory(&mut self, name: &str) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Directory, 0);
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(|source| ArchiveError::io(self.path.display(), source))
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Regular, bytes.len() as u64);
        self.builder
            .append_data(&mut header, name, bytes)
            .map_err(|source| ArchiveError::io(self.path.display(), source))
    }

    /// Appends `size` bytes from `reader`; the caller verifies what was read.
    fn stream(&mut self, name: &str, size: u64, reader: impl Read) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Regular, size);
        // `take` stops a too-long blob; a too-short one fails the caller's check and
        // the unfinished archive is discarded.
        self.builder
            .append_data(&mut header, name, reader.take(size))
            .map_err(|source| ArchiveError::io(self.path.display(), source))
    }

    fn finish(self) -> Result<(), ArchiveError> {
        let path = self.path;
        let writer = self
            .builder
            .into_inner()
            .map_err(|source| ArchiveError::io(path.display(), source))?;
        let temp = writer
            .into_inner()
            .map_err(|error| ArchiveError::io(path.display(), error.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(|source| ArchiveError::io(path.display(), source))?;
        temp.persist(&path)
            .map_err(|error| ArchiveError::io(path.display(), error.error))?;
        Ok(())
    }
}

/// Copies a blob into the tar under `name`, verifying it.
fn append_blob(
    target: &mut TarTarget,
    name: &str,
    blobs: &dyn BlobReader,
    descriptor: &Descriptor,
) -> Result<(), ArchiveError> {
    let location = || format!("blob {}", descriptor.digest);
    let reader = blobs
        .open_blob(&descriptor.digest)
        .map_err(|source| ArchiveError::io(location(), source))?;
    let mut hashing = HashingReader::new(reader);
    target.stream(name, descriptor.size, &mut hashing)?;
    let (digest, size) = hashing.finish();
    check(descriptor, digest, size)
}

/// Writes an OCI archive: the layout of [`write_oci_layout`] as a tar file (written
/// beside `path` and renamed into place; an existing file is replaced).
pub fn write_oci_archive(
    path: &Path,
    images: &[ExportImage],
    blobs: &dyn BlobReader,
) -> Result<(), ArchiveError> {
    let (index, all) = layout_plan(images, blobs)?;
    let mut target = TarTarget::create(path)?;
    target.file("oci-layout", OCI_LAYOUT_JSON)?;
    target.file("index.json", &index)?;
    target.directory("blobs/")?;
    target.directory("blobs/sha256/")?;
    for descriptor in &all {
        append_blob(
            &mut target,
            &format!("blobs/sha256/{}", descriptor.digest.hex()),
            blobs,
            descriptor,
        )?;
    }
    target.finish()
}

/// The architecture name Go (and so OCI) uses for this machine.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The image manifest to put in a docker-archive for `top`: itself, or an index's
/// child for linux/<host arch>, else its first child that is an image.
fn resolve_image_manifest(
    blobs: &dyn BlobReader,
    top: &Descriptor,
    depth: usize,
) -> Result<(Descriptor, Manifest), ArchiveError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ArchiveError::Invalid {
            location: format!("blob {}", top.digest),
            problem: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
        });
    }
    match parse_json(&read_json_blob(blobs, top)?, top)? {
        Parsed::Manifest(manifest) if manifest.is_image() => Ok((top.clone(), manifest)),
        Parsed::Manifest(_) => Err(ArchiveError::Invalid {
            location: format!("manifest {}", top.digest),
            problem: "not a container image (an artifact); docker-archive holds images only"
                .to_string(),
        }),
        Parsed::Index(index) => {
            let is_host = |child: &&Descriptor| {
                child.platform.as_ref().is_some_and(|platform| {
                    platform.os == "linux" && platform.architecture == host_architecture()
                })
            };
            let mut candidates: Vec<&Descriptor> = index.manifests.iter().filter(is_host).collect();
            candidates.extend(index.manifests.iter().filter(|child| !is_host(child)));
            for child in candidates {
                if let Ok(found) = resolve_image_manifest(blobs, child, depth + 1) {
                    return Ok(found);
                }
            }
            Err(ArchiveError::Invalid {
                location: format!("index {}", top.digest),
                problem: "no child is a container image".to_string(),
            })
        }
    }
}

/// Writes a docker-archive as `docker save` would (see the module doc for the layout
/// and choices), to a temp file beside `path` renamed into place. Decompressed layers
/// are staged in a temp file in the same directory, since tar needs sizes up front.
pub fn write_docker_archive(
    path: &Path,
    images: &[ExportImage],
    blobs: &dyn BlobReader,
) -> Result<(), ArchiveError> {
    let mut target = TarTarget::create(path)?;
    let mut entries: Vec<(Digest, DockerEntry)> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: HashSet<String> = HashSet::new();
    let stage_dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    for image in images {
        let (manifest_descriptor, manifest) = resolve_image_manifest(blobs, &image.descriptor, 0)?;
        let config_bytes = read_json_blob(blobs, &manifest.config)?;
        let config = parse_config(&config_bytes).map_err(|source| ArchiveError::Image {
            location: format!("config {}", manifest.config.digest),
            source,
        })?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(ArchiveError::Invalid {
                location: format!("manifest {}", manifest_descriptor.digest),
                problem: format!(
                    "{} layers but the config lists {} diff_ids",
                    manifest.layers.len(),
                    config.diff_ids.len()
                ),
            });
        }
        let config_name = format!("{}.json", manifest.config.digest.hex());
        if written.insert(config_name.clone()) {
            target.file(&config_name, &config_bytes)?;
        }
        let mut layer_names = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.diff_ids) {
            let dir_name = diff_id.0.hex();
            let layer_name = format!("{dir_name}/layer.tar");
            if written.insert(layer_name.clone()) {
                target.directory(&format!("{dir_name}/"))?;
                write_uncompressed_layer(
                    &mut target,
                    &layer_name,
                    blobs,
                    layer,
                    &diff_id.0,
                    &stage_dir,
                )?;
            }
            layer_names.push(layer_name);
        }
        let repo_tags: Vec<String> = image.tag.iter().map(|_| image.name.clone()).collect();
        if let (Some(tag), Some(top_layer)) = (&image.tag, config.diff_ids.last()) {
            let repository = image
                .name
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(&image.name);
            repositories
                .entry(repository.to_string())
                .or_default()
                .insert(tag.clone(), top_layer.0.hex());
        }
        // Several names for one image make one entry, as docker save does.
        match entries
            .iter_mut()
            .find(|(digest, _)| *digest == manifest_descriptor.digest)
        {
            Some((_, entry)) => entry.repo_tags.extend(repo_tags),
            None => entries.push((
                manifest_descriptor.digest,
                DockerEntry {
                    config: config_name,
                    repo_tags,
                    layers: layer_names,
                },
            )),
        }
    }
    let manifest_entries: Vec<&DockerEntry> = entries.iter().map(|(_, entry)| entry).collect();
    let manifest_json =
        serde_json::to_vec(&manifest_entries).expect("plain structs always serialize");
    target.file("manifest.json", &manifest_json)?;
    let repositories_json = serde_json::to_vec(&repositories).expect("plain maps always serialize");
    target.file("repositories", &repositories_json)?;
    target.finish()
}

/// Appends a layer uncompressed, checking the uncompressed bytes against `diff_id`
/// and the blob against its descriptor.
fn write_uncompressed_layer(
    target: &mut TarTarget,
    name: &str,
    blobs: &dyn BlobReader,
    layer: &Descriptor,
    diff_id: &Digest,
    stage_dir: &Path,
) -> Result<(), ArchiveError> {
    let compression =
        LayerCompression::from_media_type(&layer.media_type).unwrap_or(LayerCompression::None);
    let location = || format!("layer {}", layer.digest);
    if compression == LayerCompression::None {
        if layer.digest != *diff_id {
            return Err(ArchiveError::BlobMismatch {
                digest: layer.digest,
                problem: format!(
                    "an uncompressed layer whose digest differs from its diff_id {diff_id}"
                ),
            });
        }
        return append_blob(target, name, blobs, layer);
    }
    let reader = blobs
        .open_blob(&layer.digest)
        .map_err(|source| ArchiveError::io(location(), source))?;
    let mut compressed = HashingReader::new(reader);
    let mut staged = tempfile::tempfile_in(stage_dir)
        .map_err(|source| ArchiveError::io(stage_dir.display(), source))?;
    let (uncompressed_digest, uncompressed_size) = {
        let decoder: Box<dyn Read> = match compression {
            LayerCompression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut compressed)),
            LayerCompression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut compressed)
                    .map_err(|source| ArchiveError::io(location(), source))?,
            ),
            LayerCompression::None => unreachable!("handled above"),
        };
        let mut uncompressed = HashingReader::new(decoder);
        let mut out = BufWriter::new(&mut staged);
        io::copy(&mut uncompressed, &mut out)
            .map_err(|source| ArchiveError::io(location(), source))?;
        out.flush()
            .map_err(|source| ArchiveError::io(location(), source))?;
        uncompressed.finish()
    };
    // Drain what the decoder did not need (e.g. trailing padding) so the blob hash is whole.
    io::copy(&mut compressed, &mut io::sink())
        .map_err(|source| ArchiveError::io(location(), source))?;
    let (digest, size) = compressed.finish();
    check(layer, digest, size)?;
    if uncompressed_digest != *diff_id {
        return Err(ArchiveError::BlobMismatch {
            digest: layer.digest,
            problem: format!(
                "decompresses to {uncompressed_digest}, but the config's diff_id is {diff_id}"
            ),
        });
    }
    staged
        .seek(SeekFrom::Start(0))
        .map_err(|source| ArchiveError::io(location(), source))?;
    target.stream(name, uncompressed_size, staged)
}
