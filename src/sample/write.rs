//! The writers: built images as an OCI layout directory, an OCI archive, a classic
//! `docker save` archive (through `archive::write_docker_archive`, the one
//! docker-archive writer, which `imagefs export` uses too) and the Docker 25+ form.
//!
//! Owns: the file layout of what it writes. Must not touch: the bytes of images (the
//! builders made them) or anything outside the target path.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::json;

use super::blob::IndexJson;
use super::{invalid, media_type, Built, BuiltImage, Result, REF_NAME_ANNOTATION, SAMPLE_MTIME};
use crate::archive::{BlobReader, ExportImage};
use crate::digest::Digest;

/// A file of a layout or archive, in write order.
enum Item<'a> {
    Dir(String),
    File(String, std::borrow::Cow<'a, [u8]>),
}

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The files of an OCI layout: `oci-layout`, `index.json`, `blobs/sha256/*`.
fn oci_layout_items<'a>(
    entries: &[(Option<&str>, &'a Built)],
    annotate: impl Fn(&str) -> BTreeMap<String, String>,
) -> Result<Vec<Item<'a>>> {
    let mut manifests = Vec::new();
    let mut blobs: BTreeMap<String, &'a [u8]> = BTreeMap::new();
    for (name, built) in entries {
        let mut descriptor = built.descriptor();
        if let Some(name) = name {
            descriptor.annotations = annotate(name);
        }
        manifests.push(descriptor);
        for blob in built.blobs() {
            blobs.entry(blob.digest.hex()).or_insert(&blob.data);
        }
    }
    let index = IndexJson {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: &manifests,
        annotations: &BTreeMap::new(),
    };
    let mut items = vec![
        Item::File("oci-layout".into(), OCI_LAYOUT_FILE.into()),
        Item::File("index.json".into(), serde_json::to_vec(&index)?.into()),
        Item::Dir("blobs".into()),
        Item::Dir("blobs/sha256".into()),
    ];
    for (hex, data) in blobs {
        items.push(Item::File(format!("blobs/sha256/{hex}"), data.into()));
    }
    Ok(items)
}

fn ref_name_annotation(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), name.to_string())])
}

fn write_items_to_dir(dir: &Path, items: &[Item<'_>]) -> Result<()> {
    fs::create_dir_all(dir)?;
    for item in items {
        match item {
            Item::Dir(path) => fs::create_dir_all(dir.join(path))?,
            Item::File(path, data) => fs::write(dir.join(path), data)?,
        }
    }
    Ok(())
}

fn write_items_to_tar(file: &Path, items: &[Item<'_>]) -> Result<()> {
    let mut builder = tar::Builder::new(io::BufWriter::new(fs::File::create(file)?));
    for item in items {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(SAMPLE_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        match item {
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Item::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..])?;
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(())
}

/// Writes an OCI image layout to `dir` (created if missing; existing blobs are
/// kept, `index.json` is replaced). Each entry with a name gets an
/// `org.opencontainers.image.ref.name` annotation.
pub fn write_oci_layout(dir: &Path, entries: &[(Option<&str>, &Built)]) -> Result<()> {
    let items = oci_layout_items(entries, ref_name_annotation)?;
    write_items_to_dir(dir, &items)
}

/// Writes an OCI layout as a tar archive (what `skopeo copy ... oci-archive:FILE` makes).
pub fn write_oci_archive(file: &Path, entries: &[(Option<&str>, &Built)]) -> Result<()> {
    let items = oci_layout_items(entries, ref_name_annotation)?;
    write_items_to_tar(file, &items)
}

/// Options of the classic `docker save` writer. There are none yet: the one writer
/// (`archive::write_docker_archive`) names layer directories by diff_id, so
/// a layer several images share is written once and docker's `../<id>/layer.tar`
/// symlinks never arise (the reader's handling of those is tested with hand-built
/// archives in `archive::test_util`). Kept so that callers say which defaults they take.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DockerArchiveOptions {}

/// Groups entries by manifest, collecting RepoTags (docker save lists an image once).
fn docker_images<'a>(
    entries: &[(Option<&str>, &'a BuiltImage)],
) -> Result<Vec<(&'a BuiltImage, Vec<String>)>> {
    let mut images: Vec<(&BuiltImage, Vec<String>)> = Vec::new();
    for (name, image) in entries {
        if image.artifact_type.is_some() || image.platform.is_none() {
            return Err(invalid("docker archives hold images only, not artifacts"));
        }
        let position = match images
            .iter()
            .position(|(i, _)| i.digest() == image.digest())
        {
            Some(position) => position,
            None => {
                images.push((image, Vec::new()));
                images.len() - 1
            }
        };
        if let Some(name) = name {
            images[position].1.push(name.to_string());
        }
    }
    Ok(images)
}

/// `repo:tag` -> (`repo`, `tag`); a missing tag is `latest`, digests are skipped.
fn split_repo_tag(name: &str) -> Option<(&str, &str)> {
    if name.contains('@') {
        return None;
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(colon) => Some((&name[..slash + colon], &name[slash + colon + 1..])),
        None => Some((name, "latest")),
    }
}

/// The built images' blobs, served to the archive writer from memory.
struct BlobMap<'a>(HashMap<Digest, &'a [u8]>);

impl<'a> BlobMap<'a> {
    fn of(images: &[&'a BuiltImage]) -> Self {
        let mut blobs = HashMap::new();
        for image in images {
            for blob in image.blobs() {
                blobs.insert(blob.digest, blob.data.as_slice());
            }
        }
        BlobMap(blobs)
    }

    fn get(&self, digest: &Digest) -> io::Result<&'a [u8]> {
        self.0
            .get(digest)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no blob {digest}")))
    }
}

impl BlobReader for BlobMap<'_> {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.get(digest)?))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(self.get(digest)?.len() as u64)
    }
}

/// Writes the classic `docker save` archive with `archive::write_docker_archive`,
/// the writer `imagefs export` uses: `manifest.json` (one entry per image, all its
/// names as RepoTags), `repositories`, `<config hex>.json` and per layer
/// `<diff_id hex>/layer.tar`, uncompressed.
pub fn write_docker_archive(
    file: &Path,
    entries: &[(Option<&str>, &BuiltImage)],
    _options: DockerArchiveOptions,
) -> Result<()> {
    let images = docker_images(entries)?;
    let blobs = BlobMap::of(&images.iter().map(|(image, _)| *image).collect::<Vec<_>>());
    let mut export = Vec::new();
    for (image, names) in &images {
        let built = image.descriptor();
        let descriptor = crate::image::Descriptor::new(built.media_type, built.digest, built.size);
        if names.is_empty() {
            // Listed without RepoTags; the name is not written.
            export.push(ExportImage {
                name: image.digest().to_string(),
                tag: None,
                descriptor: descriptor.clone(),
            });
        }
        for name in names {
            export.push(ExportImage {
                name: name.clone(),
                tag: split_repo_tag(name).map(|(_, tag)| tag.to_string()),
                descriptor: descriptor.clone(),
            });
        }
    }
    crate::archive::write_docker_archive(file, &export, &blobs)?;
    Ok(())
}

/// Writes the Docker 25+ `docker save` form: an OCI layout (`index.json` entries
/// annotated with `io.containerd.image.name` and the tag as
/// `org.opencontainers.image.ref.name`) plus a `manifest.json` whose `Config` and
/// `Layers` point into `blobs/sha256/`. Docker itself stores uncompressed layers
/// there; build with [`Compression::None`](super::Compression::None) to match it exactly.
pub fn write_docker_archive_oci(
    file: &Path,
    entries: &[(Option<&str>, &BuiltImage)],
) -> Result<()> {
    let images = docker_images(entries)?;
    let built: Vec<Built> = images
        .iter()
        .map(|(image, _)| Built::Image((*image).clone()))
        .collect();
    let mut layout_entries: Vec<(Option<&str>, &Built)> = Vec::new();
    for ((_, names), built) in images.iter().zip(&built) {
        if names.is_empty() {
            layout_entries.push((None, built));
        }
        for name in names {
            layout_entries.push((Some(name.as_str()), built));
        }
    }
    let mut items = oci_layout_items(&layout_entries, |name| {
        let tag = split_repo_tag(name).map_or(name, |(_, tag)| tag);
        BTreeMap::from([
            ("io.containerd.image.name".to_string(), name.to_string()),
            (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
        ])
    })?;
    let manifest: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, names)| {
            json!({
                "Config": format!("blobs/sha256/{}", image.config.digest.hex()),
                "RepoTags": names,
                "Layers": image
                    .layers
                    .iter()
                    .map(|layer| format!("blobs/sha256/{}", layer.blob.digest.hex()))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    items.push(Item::File(
        "manifest.json".into(),
        serde_json::to_vec(&manifest)?.into(),
    ));
    write_items_to_tar(file, &items)
}
