//! Arbitrary bytes as an import source, in three shapes chosen by the first byte:
//! - 0: the bytes are the archive file itself (tar, tar+gzip or tar+zstd; OCI
//!   archive or docker-archive);
//! - 1: the bytes are `index.json` of an otherwise valid OCI layout directory;
//! - 2: the bytes are `manifest.json` of an otherwise valid docker-archive.
//!
//! Then `open_source`, and every blob reachable from every image is opened and read
//! (each read capped, at most `MAX_BLOBS` blobs), as import would.
#![no_main]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imagefs::testing::archive::{self, ArchiveError, ImageSource};
use imagefs::image::{self, Parsed};
use imagefs::testing::sample::{self, Compression, ImageBuilder, LayerSpec};
use imagefs::Digest;
use libfuzzer_sys::fuzz_target;

const MAX_BLOBS: usize = 64;
const MAX_BLOB_READ: u64 = 8 * 1024 * 1024;

struct Fixture {
    /// Kept for its Drop; the paths below live in it.
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    layout: PathBuf,
    /// Every member of a valid docker-archive except `manifest.json`.
    docker_members: Vec<(String, Vec<u8>)>,
    work: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        remove_dirs_of_dead_runs(Path::new(base));
        // libFuzzer ends with exit(), which never drops statics: the dir is named
        // after the pid so a later run can clean it up.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(base)
            .expect("temp dir");
        let spec = LayerSpec::parse(
            "dir /etc 0755; file /etc/os-release 0644 \"ID=fuzz\\n\"; symlink /etc/link os-release",
        )
        .expect("valid spec");
        let image = ImageBuilder::new()
            .layer(&spec, Compression::None)
            .build()
            .expect("image builds");
        let layout = dir.path().join("layout");
        sample::write_oci_layout(&layout, &[(Some("fuzz:1"), &image.clone().into())])
            .expect("layout written");
        let docker = dir.path().join("docker.tar");
        sample::write_docker_archive(&docker, &[(Some("fuzz:1"), &image)], Default::default())
            .expect("docker archive written");
        let mut docker_members = Vec::new();
        let mut tar = tar::Archive::new(fs::File::open(&docker).expect("open docker.tar"));
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            if name == "manifest.json" {
                continue;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            docker_members.push((name, data));
        }
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).expect("tmp");
        let work = dir.path().join("input");
        Fixture {
            tmp,
            layout,
            docker_members,
            work,
            _dir: dir,
        }
    })
}

const DIR_PREFIX: &str = "imagefs-fuzz-archive-";

/// Removes fixture dirs left by earlier fuzz processes that are gone.
fn remove_dirs_of_dead_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn read_capped(source: &dyn ImageSource<Error = ArchiveError>, digest: &Digest) -> Option<Vec<u8>> {
    let reader = source.open_blob(digest).ok()?;
    let mut data = Vec::new();
    reader.take(MAX_BLOB_READ).read_to_end(&mut data).ok()?;
    Some(data)
}

fn walk(source: &dyn ImageSource<Error = ArchiveError>) {
    let mut queue: Vec<(Digest, Option<String>)> = source
        .images()
        .iter()
        .map(|image| {
            (
                image.descriptor.digest,
                Some(image.descriptor.media_type.clone()),
            )
        })
        .collect();
    let mut opened = 0;
    while let Some((digest, media_type)) = queue.pop() {
        if opened >= MAX_BLOBS {
            return;
        }
        opened += 1;
        let Some(data) = read_capped(source, &digest) else {
            continue;
        };
        match image::parse_top(&data, media_type.as_deref()) {
            Ok(Parsed::Manifest(manifest)) => {
                queue.push((manifest.config.digest, None));
                for layer in &manifest.layers {
                    // Layers are read, not parsed: the layer_index target covers them.
                    queue.push((layer.digest, Some(String::new())));
                }
            }
            Ok(Parsed::Index(index)) => {
                for child in &index.manifests {
                    queue.push((child.digest, Some(child.media_type.clone())));
                }
            }
            Err(_) => {}
        }
    }
}

fn write_docker_tar(path: &Path, manifest: &[u8], members: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(fs::File::create(path).expect("create"));
    let mut append = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, data)
            .expect("append");
    };
    append("manifest.json", manifest);
    for (name, data) in members {
        append(name, data);
    }
    builder.finish().expect("finish");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let path = match mode % 3 {
        0 => {
            let path = fixture.work.with_extension("tar");
            fs::write(&path, rest).expect("write input");
            path
        }
        1 => {
            fs::write(fixture.layout.join("index.json"), rest).expect("write index.json");
            fixture.layout.clone()
        }
        _ => {
            let path = fixture.work.with_extension("docker.tar");
            write_docker_tar(&path, rest, &fixture.docker_members);
            path
        }
    };
    if let Ok(source) = archive::open_source(&path, Some(&fixture.tmp)) {
        walk(source.as_ref());
    }
    // Nothing may be left behind in the temp dir (decompressed archives are
    // anonymous temp files).
    assert!(
        fs::read_dir(&fixture.tmp).expect("tmp").next().is_none(),
        "open_source left files in its temp dir"
    );
});
