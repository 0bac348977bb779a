//! Opening an import source: format detection, and picking images by name.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::container::{Container, TarIndex};
use super::{docker, oci, ArchiveError, LimitReason};
use crate::image::{ImageSource, SourceImage, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::reference::Reference;

/// Opens an OCI layout directory, an OCI archive (tar, optionally gzip- or
/// zstd-compressed) or a docker-archive (classic, or Docker 25+ with an embedded OCI
/// layout, which is preferred). A compressed archive is decompressed once into an
/// anonymous temp file in `tmp_dir` (default: the system temp dir), within the
/// default [`DecompressLimits`]; nothing else is written anywhere.
pub fn open_source(
    path: &Path,
    tmp_dir: Option<&Path>,
) -> Result<Box<dyn ImageSource<Error = ArchiveError>>, ArchiveError> {
    open_source_with_limits(path, tmp_dir, &DecompressLimits::default())
}

/// [`open_source`] with explicit bounds on decompressing a compressed archive.
pub fn open_source_with_limits(
    path: &Path,
    tmp_dir: Option<&Path>,
    limits: &DecompressLimits,
) -> Result<Box<dyn ImageSource<Error = ArchiveError>>, ArchiveError> {
    let metadata = path
        .metadata()
        .map_err(|source| ArchiveError::io(path.display(), source))?;
    let label = path.display().to_string();
    let container = if metadata.is_dir() {
        Container::Directory(path.to_path_buf())
    } else {
        let file = File::open(path).map_err(|source| ArchiveError::io(&label, source))?;
        let compressed_size = metadata.len();
        let tar_file = match sniff(&file, &label)? {
            Sniffed::Tar => file,
            Sniffed::Gzip => decompress(
                flate2::read::MultiGzDecoder::new(&file),
                &label,
                tmp_dir,
                compressed_size,
                limits,
            )?,
            Sniffed::Zstd => {
                let decoder = zstd::stream::read::Decoder::new(&file)
                    .map_err(|source| ArchiveError::io(&label, source))?;
                decompress(decoder, &label, tmp_dir, compressed_size, limits)?
            }
            Sniffed::Unknown => {
                return Err(ArchiveError::Unrecognized {
                    path: label,
                    problem:
                        "a file that is neither a tar archive nor a gzip or zstd compressed one"
                            .to_string(),
                })
            }
        };
        if !is_tar(&tar_file, &label)? {
            return Err(ArchiveError::Unrecognized {
                path: label,
                problem: "it decompresses to something that is not a tar archive".to_string(),
            });
        }
        Container::Tar(TarIndex::scan(tar_file, label.clone())?)
    };
    let has_layout = container.exists("oci-layout");
    let has_index = container.exists("index.json");
    let has_docker_manifest = container.exists("manifest.json");
    if has_layout {
        if !has_index {
            return Err(ArchiveError::MemberNotFound {
                location: container.label(),
                member: "index.json (required next to oci-layout)".to_string(),
            });
        }
        return Ok(Box::new(oci::OciLayoutSource::open(
            container,
            has_docker_manifest,
        )?));
    }
    if has_docker_manifest {
        return Ok(Box::new(docker::DockerArchiveSource::open(container)?));
    }
    let problem = if has_index {
        "it has index.json but no oci-layout file".to_string()
    } else {
        "found neither oci-layout and index.json nor manifest.json".to_string()
    };
    Err(ArchiveError::Unrecognized {
        path: label,
        problem,
    })
}

enum Sniffed {
    Tar,
    Gzip,
    Zstd,
    Unknown,
}

fn read_head(mut file: &File, label: &str) -> Result<Vec<u8>, ArchiveError> {
    let mut head = Vec::with_capacity(512);
    file.seek(SeekFrom::Start(0))
        .map_err(|source| ArchiveError::io(label, source))?;
    file.take(512)
        .read_to_end(&mut head)
        .map_err(|source| ArchiveError::io(label, source))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| ArchiveError::io(label, source))?;
    Ok(head)
}

fn sniff(file: &File, label: &str) -> Result<Sniffed, ArchiveError> {
    let head = read_head(file, label)?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Sniffed::Zstd
    } else if looks_like_tar(&head) {
        Sniffed::Tar
    } else {
        Sniffed::Unknown
    })
}

/// A tar stream starts with a header block carrying the `ustar` magic (POSIX, GNU
/// and Go's writer all set it), or is an empty archive of zero blocks.
fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
        || (head.len() == 512 && head.iter().all(|b| *b == 0))
}

fn is_tar(file: &File, label: &str) -> Result<bool, ArchiveError> {
    Ok(looks_like_tar(&read_head(file, label)?))
}

/// How far a compressed archive may expand in its temp file. A decompression bomb
/// (gzip reaches about 1000:1 on zeros, zstd far more) must not fill the disk, while
/// real archives pass: image archives mostly hold layers that are compressed already
/// (about 1:1), and `docker save | gzip` of uncompressed layers gives 3-10:1.
///
/// The defaults: at most 100 times the archive's size, but at least 256 MiB; and
/// keep 1 GiB or 5% of the temp dir's filesystem free, whichever is smaller. Layers
/// inside an image are never expanded to disk at import (they are streamed), so this
/// is the only place a bomb could take disk space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecompressLimits {
    /// Largest decompressed size, as a multiple of the archive's size on disk.
    pub max_ratio: u64,
    /// The ratio never allows less than this many bytes: small archives of JSON and
    /// tar padding compress far better than the ratio.
    pub min_allowance: u64,
    /// An absolute cap in bytes that replaces the ratio rule when set
    /// (`imagefs import --max-decompressed-size`).
    pub max_size: Option<u64>,
    /// Decompression stops before the temp directory's filesystem has less than this
    /// many bytes free...
    pub keep_free: u64,
    /// ...or less than this percentage of its size, whichever is smaller (so a
    /// small filesystem is not refused outright). Checked before every write.
    pub keep_free_percent: u64,
}

impl Default for DecompressLimits {
    fn default() -> Self {
        DecompressLimits {
            max_ratio: 100,
            min_allowance: 256 << 20,
            max_size: None,
            keep_free: 1 << 30,
            keep_free_percent: 5,
        }
    }
}

impl DecompressLimits {
    /// The most bytes an archive of `compressed_size` bytes may decompress to.
    pub fn allowance(&self, compressed_size: u64) -> u64 {
        self.max_size.unwrap_or_else(|| {
            compressed_size
                .saturating_mul(self.max_ratio)
                .max(self.min_allowance)
        })
    }

    /// The free space to leave on a filesystem of `total` bytes.
    pub fn margin(&self, total: u64) -> u64 {
        let percent = u128::from(total) * u128::from(self.keep_free_percent.min(100)) / 100;
        self.keep_free
            .min(u64::try_from(percent).unwrap_or(u64::MAX))
    }

    /// Why an archive of `compressed_size` bytes that expands past its allowance is
    /// refused.
    fn too_large(&self, compressed_size: u64) -> LimitReason {
        match self.max_size {
            Some(max_size) => LimitReason::MaxSize { max_size },
            None => LimitReason::Ratio {
                allowance: self.allowance(compressed_size),
                max_ratio: self.max_ratio,
                compressed_size,
                min_allowance: self.min_allowance,
            },
        }
    }
}

/// Reads into `buffer` until it is full or the stream ends; returns the bytes read.
fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decompresses into an anonymous temp file (gone when dropped, crash or not), no
/// more than `limits` allow for an archive of `compressed_size` bytes.
fn decompress(
    decoder: impl Read,
    label: &str,
    tmp_dir: Option<&Path>,
    compressed_size: u64,
    limits: &DecompressLimits,
) -> Result<File, ArchiveError> {
    decompress_checked(
        decoder,
        label,
        tmp_dir,
        compressed_size,
        limits,
        &mut crate::sys::filesystem_space,
    )
}

/// [`decompress`] asking `space` for the temp file's filesystem (free and total
/// bytes) before every write; tests pass a simulated disk.
pub(super) fn decompress_checked(
    mut decoder: impl Read,
    label: &str,
    tmp_dir: Option<&Path>,
    compressed_size: u64,
    limits: &DecompressLimits,
    space: &mut dyn FnMut(&File) -> io::Result<(u64, u64)>,
) -> Result<File, ArchiveError> {
    const CHUNK: usize = 1 << 20;
    let dir = tmp_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let dir_error = |source| ArchiveError::io(dir.display(), source);
    let mut out = tempfile::tempfile_in(&dir).map_err(dir_error)?;
    let allowance = limits.allowance(compressed_size);
    let mut buffer = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = fill(&mut decoder, &mut buffer).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                ArchiveError::Truncated {
                    location: label.to_string(),
                    problem: "the compressed stream ends early".to_string(),
                }
            } else {
                ArchiveError::Invalid {
                    location: label.to_string(),
                    problem: format!("cannot decompress: {source}"),
                }
            }
        })?;
        if n == 0 {
            break;
        }
        if written + n as u64 > allowance {
            return Err(ArchiveError::DecompressionLimit {
                location: label.to_string(),
                reason: limits.too_large(compressed_size),
            });
        }
        // Checked as the file grows, not once up front: other writers share the disk.
        let (available, total) = space(&out).map_err(dir_error)?;
        let margin = limits.margin(total);
        if available < margin.saturating_add(n as u64) {
            return Err(ArchiveError::DecompressionLimit {
                location: label.to_string(),
                reason: LimitReason::DiskSpace {
                    dir: dir.display().to_string(),
                    margin,
                    written,
                },
            });
        }
        out.write_all(&buffer[..n]).map_err(dir_error)?;
        written += n as u64;
    }
    out.seek(SeekFrom::Start(0)).map_err(dir_error)?;
    Ok(out)
}

/// Every name an image answers to: its name, and the ref.name and containerd name
/// annotations of its descriptor.
fn names_of(image: &SourceImage) -> Vec<&str> {
    let mut names: Vec<&str> = image.name.iter().map(String::as_str).collect();
    for key in [ANNOTATION_REF_NAME, ANNOTATION_CONTAINERD_NAME] {
        if let Some(value) = image.descriptor.annotations.get(key) {
            names.push(value);
        }
    }
    names
}

fn same_name(wanted: &str, carried: &str) -> bool {
    if wanted == carried {
        return true;
    }
    // `alpine` and `docker.io/library/alpine:latest` are the same to Docker; compare
    // under a placeholder default registry so both sides are read the same way.
    match (
        Reference::parse_docker_style(wanted, "docker.io"),
        Reference::parse_docker_style(carried, "docker.io"),
    ) {
        (Ok(Some(left)), Ok(Some(right))) => normalize_library(left) == normalize_library(right),
        _ => false,
    }
}

fn normalize_library(mut reference: Reference) -> Reference {
    if reference.registry == "docker.io" && !reference.repository.contains('/') {
        reference.repository = format!("library/{}", reference.repository);
    }
    reference
}

/// Picks images by name: all of them when `name` is `None`; otherwise the ones that
/// carry that name exactly or by Docker's normalization (`alpine` =
/// `docker.io/library/alpine:latest`). Several entries naming the same digest count
/// once; several different images with the name are an error.
pub fn select_images(
    images: &[SourceImage],
    name: Option<&str>,
) -> Result<Vec<SourceImage>, ArchiveError> {
    let Some(wanted) = name else {
        return Ok(images.to_vec());
    };
    let mut matches: Vec<SourceImage> = Vec::new();
    for image in images {
        if names_of(image)
            .iter()
            .any(|carried| same_name(wanted, carried))
            && !matches
                .iter()
                .any(|found| found.descriptor.digest == image.descriptor.digest)
        {
            matches.push(image.clone());
        }
    }
    match matches.len() {
        0 => {
            let mut available: Vec<&str> = images.iter().flat_map(names_of).collect();
            available.dedup();
            Err(ArchiveError::NoSuchImage {
                name: wanted.to_string(),
                available: if available.is_empty() {
                    "no names".to_string()
                } else {
                    available.join(", ")
                },
            })
        }
        1 => Ok(matches),
        count => Err(ArchiveError::AmbiguousName {
            name: wanted.to_string(),
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::media_types::OCI_MANIFEST;
    use crate::image::Descriptor;

    fn image(name: Option<&str>, ref_name: Option<&str>, seed: &[u8]) -> SourceImage {
        let mut descriptor = Descriptor::new(OCI_MANIFEST, Digest::of(seed), 1);
        if let Some(ref_name) = ref_name {
            descriptor
                .annotations
                .insert(ANNOTATION_REF_NAME.into(), ref_name.into());
        }
        SourceImage {
            name: name.map(Into::into),
            descriptor,
        }
    }

    #[test]
    fn selection() {
        let images = vec![
            image(Some("docker.io/library/alpine:3.19"), Some("3.19"), b"a"),
            image(Some("app:1"), Some("app:1"), b"b"),
            image(None, None, b"c"),
            image(Some("dup"), None, b"d"),
            image(Some("dup"), None, b"e"),
        ];
        assert_eq!(select_images(&images, None).unwrap().len(), 5);
        let table: &[(&str, Option<&[u8]>)] = &[
            ("app:1", Some(b"b")),
            ("3.19", Some(b"a")),
            ("alpine:3.19", Some(b"a")),
            ("docker.io/library/alpine:3.19", Some(b"a")),
            ("library/alpine:3.19", Some(b"a")),
            ("alpine:3.18", None),
            ("app", None),
        ];
        for (wanted, expected) in table {
            let result = select_images(&images, Some(wanted));
            match expected {
                Some(seed) => {
                    let selected = result.unwrap();
                    assert_eq!(selected.len(), 1, "{wanted}");
                    assert_eq!(selected[0].descriptor.digest, Digest::of(seed), "{wanted}");
                }
                None => assert!(
                    matches!(result, Err(ArchiveError::NoSuchImage { .. })),
                    "{wanted}"
                ),
            }
        }
        assert!(matches!(
            select_images(&images, Some("dup")),
            Err(ArchiveError::AmbiguousName { count: 2, .. })
        ));
    }
}
