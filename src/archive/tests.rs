//! Reading every source kind, writing every target kind, and refusing bad input.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::test_util::*;
use super::*;
use crate::image::media_types::{OCI_LAYER_TAR, OCI_MANIFEST};
use crate::image::{parse_config, parse_manifest, Descriptor};

fn open(path: &Path) -> Box<dyn ImageSource<Error = ArchiveError>> {
    let tmp = path.parent().unwrap();
    open_source(path, Some(tmp)).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn open_error(path: &Path) -> String {
    match open_source(path, path.parent()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(error) => error.to_string(),
    }
}

/// Checks the source holds `image` with every blob intact.
fn assert_serves(source: &dyn ImageSource<Error = ArchiveError>, image: &TestImage) {
    for (digest, bytes) in image.blobs() {
        assert_eq!(read_verified(source, &digest), bytes);
    }
}

#[test]
fn reads_oci_layout_directory_and_archives() {
    let temp = tempfile::tempdir().unwrap();
    let (one, two) = (TestImage::new("one"), TestImage::new("two"));
    let layout = temp.path().join("layout");
    write_layout(
        &layout,
        &[(Some("app:1"), &one), (Some("2"), &two), (None, &one)],
    );
    let plain_tar = temp.path().join("layout.tar");
    tar_directory(&layout, &plain_tar);
    let gz_tar = temp.path().join("layout.tar.gz");
    let tar_bytes = fs::read(&plain_tar).unwrap();
    fs::write(&gz_tar, gzip(&tar_bytes)).unwrap();
    // pigz and `cat a.gz b.gz` write several gzip members: all of them count.
    let multi_gz = temp.path().join("multi.tar.gz");
    let (head, tail) = tar_bytes.split_at(tar_bytes.len() / 2);
    fs::write(&multi_gz, [gzip(head), gzip(tail)].concat()).unwrap();
    for path in [&layout, &plain_tar, &gz_tar, &multi_gz] {
        let source = open(path);
        let names: Vec<Option<&str>> = source
            .images()
            .iter()
            .map(|image| image.name.as_deref())
            .collect();
        assert_eq!(
            names,
            vec![Some("app:1"), Some("2"), None],
            "{}",
            path.display()
        );
        assert_eq!(source.images()[0].descriptor.digest, one.descriptor.digest);
        assert_serves(source.as_ref(), &one);
        assert_serves(source.as_ref(), &two);
        let selected = select_images(source.images(), Some("2")).unwrap();
        assert_eq!(selected[0].descriptor.digest, two.descriptor.digest);
        assert!(matches!(
            source.open_blob(&Digest::of(b"absent")),
            Err(ArchiveError::BlobNotFound { .. })
        ));
    }
}

#[test]
fn reads_classic_docker_archive_with_shared_layer() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("docker");
    let second_config = image
        .config
        .clone()
        .into_iter()
        .chain(*b" ")
        .collect::<Vec<u8>>();
    let path = temp.path().join("docker.tar");
    fs::write(&path, classic_docker_archive(&image, &second_config)).unwrap();
    let source = open(&path);
    let names: Vec<Option<&str>> = source
        .images()
        .iter()
        .map(|image| image.name.as_deref())
        .collect();
    assert_eq!(
        names,
        vec![Some("example.com/app:1"), Some("app:latest"), None]
    );
    let descriptor = &source.images()[0].descriptor;
    assert_eq!(descriptor.media_type, OCI_MANIFEST);
    let manifest_bytes = read_verified(source.as_ref(), &descriptor.digest);
    let manifest = parse_manifest(&manifest_bytes, Some(OCI_MANIFEST)).unwrap();
    assert!(manifest.is_image());
    assert_eq!(manifest.config.digest, Digest::of(&image.config));
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].media_type, OCI_LAYER_TAR);
    assert_eq!(manifest.layers[0].digest, Digest::of(&image.layer_tar));
    assert_eq!(
        read_verified(source.as_ref(), &manifest.layers[0].digest),
        image.layer_tar
    );
    let config = parse_config(&read_verified(source.as_ref(), &manifest.config.digest)).unwrap();
    assert_eq!(config.diff_ids[0].0, manifest.layers[0].digest);
    // The second image reaches the same layer through its symlink.
    let second_bytes = read_verified(source.as_ref(), &source.images()[2].descriptor.digest);
    let second = parse_manifest(&second_bytes, None).unwrap();
    assert_eq!(second.layers[0].digest, manifest.layers[0].digest);
    // Deterministic: a second open synthesizes the same manifest.
    let again = open(&path);
    assert_eq!(again.images()[0].descriptor, *descriptor);
}

#[test]
fn classic_docker_archive_layer_types_follow_magic() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("gz");
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let manifest =
        format!(r#"[{{"Config":"{config_name}","RepoTags":["a/b:c"],"Layers":["l.tar"]}}]"#);
    let path = temp.path().join("gz.tar");
    fs::write(
        &path,
        build_tar(&[
            TarMember::File(&config_name, &image.config),
            TarMember::File("l.tar", &image.layer),
            TarMember::File("manifest.json", manifest.as_bytes()),
        ]),
    )
    .unwrap();
    let source = open(&path);
    let bytes = read_verified(source.as_ref(), &source.images()[0].descriptor.digest);
    let manifest = parse_manifest(&bytes, None).unwrap();
    assert_eq!(
        manifest.layers[0].media_type,
        crate::image::media_types::OCI_LAYER_TAR_GZIP
    );
    assert_eq!(manifest.layers[0].digest, Digest::of(&image.layer));
}

#[test]
fn docker_25_archive_prefers_layout_and_takes_repo_tags() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("docker25");
    let dir = temp.path().join("d25");
    // Docker 25 writes ref.name as the bare tag; the full name is in manifest.json.
    write_layout(&dir, &[(Some("latest"), &image)]);
    let manifest = format!(
        r#"[{{"Config":"blobs/sha256/{}","RepoTags":["docker.io/library/app:latest"],"Layers":["blobs/sha256/{}"]}}]"#,
        Digest::of(&image.config).hex(),
        Digest::of(&image.layer).hex()
    );
    fs::write(dir.join("manifest.json"), manifest).unwrap();
    let path = temp.path().join("d25.tar");
    tar_directory(&dir, &path);
    let source = open(&path);
    assert_eq!(source.images().len(), 1);
    assert_eq!(
        source.images()[0].name.as_deref(),
        Some("docker.io/library/app:latest")
    );
    assert_eq!(
        source.images()[0].descriptor.digest,
        image.descriptor.digest
    );
    assert_serves(source.as_ref(), &image);
    // Still selectable by the tag-only ref.name.
    assert_eq!(
        select_images(source.images(), Some("latest"))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn follows_hard_links_and_refuses_bad_links() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("links");
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let docker_manifest = |layer: &str| {
        format!(r#"[{{"Config":"{config_name}","RepoTags":["a/b:c"],"Layers":["{layer}"]}}]"#)
    };
    let write = |name: &str, members: &[TarMember<'_>]| {
        let path = temp.path().join(name);
        let mut all = vec![TarMember::File(&config_name, &image.config)];
        all.extend_from_slice(members);
        fs::write(&path, build_tar(&all)).unwrap();
        path
    };
    let hard = docker_manifest("x/layer.tar");
    let path = write(
        "hard.tar",
        &[
            TarMember::File("real/layer.tar", &image.layer_tar),
            TarMember::HardLink("x/layer.tar", "./real/layer.tar"),
            TarMember::File("manifest.json", hard.as_bytes()),
        ],
    );
    assert_eq!(open(&path).images().len(), 1);

    let manifest = docker_manifest("x/layer.tar");
    let table: &[(&str, &[TarMember<'_>], &str)] = &[
        (
            "escape.tar",
            &[TarMember::Symlink("x/layer.tar", "../../etc/passwd")],
            "outside the archive",
        ),
        (
            "absolute.tar",
            &[TarMember::Symlink("x/layer.tar", "/etc/passwd")],
            "absolute path",
        ),
        (
            "loop.tar",
            &[
                TarMember::Symlink("x/layer.tar", "../y/layer.tar"),
                TarMember::Symlink("y/layer.tar", "../x/layer.tar"),
            ],
            "loop",
        ),
        (
            "dangling.tar",
            &[TarMember::Symlink("x/layer.tar", "../nope")],
            "not found",
        ),
        (
            "hard-escape.tar",
            &[TarMember::HardLink("x/layer.tar", "../outside")],
            "outside the archive",
        ),
    ];
    for (name, members, expected) in table {
        let mut all: Vec<TarMember<'_>> = members.to_vec();
        all.push(TarMember::File("manifest.json", manifest.as_bytes()));
        let path = write(name, &all);
        let error = open_error(&path);
        assert!(
            error.contains(expected),
            "{name}: {error:?} lacks {expected:?}"
        );
        assert!(
            error.contains("x/layer.tar") || error.contains("nope"),
            "{name}: {error:?} names no member"
        );
    }
}

#[test]
fn refuses_bad_sources() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("bad");
    let good = temp.path().join("good");
    write_layout(&good, &[(Some("1"), &image)]);
    let good_tar = fs::read({
        let path = temp.path().join("good.tar");
        tar_directory(&good, &path);
        path
    })
    .unwrap();
    let index_with = |text: &str| {
        let dir = tempfile::tempdir_in(temp.path()).unwrap().keep();
        write_layout(&dir, &[(Some("1"), &image)]);
        fs::write(dir.join("index.json"), text).unwrap();
        dir
    };
    let no_index = {
        let dir = tempfile::tempdir_in(temp.path()).unwrap().keep();
        write_layout(&dir, &[(Some("1"), &image)]);
        fs::remove_file(dir.join("index.json")).unwrap();
        dir
    };
    let empty_dir = tempfile::tempdir_in(temp.path()).unwrap().keep();
    let truncated = temp.path().join("truncated.tar");
    // Cut inside the last blob's data (before the end-of-archive blocks).
    fs::write(&truncated, &good_tar[..good_tar.len() - 1024 - 600]).unwrap();
    let truncated_gz = temp.path().join("truncated.tar.gz");
    let gz = gzip(&good_tar);
    fs::write(&truncated_gz, &gz[..gz.len() / 2]).unwrap();
    let garbage = temp.path().join("garbage.bin");
    fs::write(&garbage, b"this is not an archive at all").unwrap();
    let bad_docker = temp.path().join("bad-docker.tar");
    fs::write(
        &bad_docker,
        build_tar(&[TarMember::File("manifest.json", b"{\"Config\":1}")]),
    )
    .unwrap();
    let docker_missing_layer = temp.path().join("docker-missing.tar");
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["a/b:c"],"Layers":["gone/layer.tar"]}}]"#
    );
    fs::write(
        &docker_missing_layer,
        build_tar(&[
            TarMember::File(&config_name, &image.config),
            TarMember::File("manifest.json", manifest.as_bytes()),
        ]),
    )
    .unwrap();
    let bad_digest = index_with(
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc/passwd","size":1}]}"#,
    );

    let not_json = index_with("{not json");
    let table: Vec<(&Path, &str)> = vec![
        (&no_index, "index.json"),
        (&empty_dir, "found neither"),
        (&not_json, "index.json: index: malformed JSON"),
        (&bad_digest, "manifests[0].digest"),
        (&truncated, "truncated"),
        (&truncated_gz, "truncated"),
        (&garbage, "not an OCI layout"),
        (
            &bad_docker,
            "manifest.json: malformed docker-archive manifest",
        ),
        (&docker_missing_layer, "gone/layer.tar not found"),
        (Path::new("/no/such/path"), "/no/such/path"),
    ];
    for (path, expected) in table {
        let error = open_error(path);
        assert!(
            error.contains(expected),
            "{}: {error:?} lacks {expected:?}",
            path.display()
        );
    }
}

#[test]
fn writers_round_trip_through_open_source() {
    let temp = tempfile::tempdir().unwrap();
    let (one, two) = (TestImage::new("one"), TestImage::new("two"));
    let blobs = MemoryBlobs::of(&[&one, &two]);
    let images = vec![
        ExportImage {
            name: "dev/app:1".into(),
            tag: Some("1".into()),
            descriptor: one.descriptor.clone(),
        },
        ExportImage {
            name: "dev/app:2".into(),
            tag: Some("2".into()),
            descriptor: two.descriptor.clone(),
        },
    ];
    let layout = temp.path().join("out-layout");
    write_oci_layout(&layout, &images, &blobs).unwrap();
    let archive = temp.path().join("out.tar");
    write_oci_archive(&archive, &images, &blobs).unwrap();
    for path in [&layout, &archive] {
        let source = open(path);
        let names: Vec<Option<&str>> = source
            .images()
            .iter()
            .map(|image| image.name.as_deref())
            .collect();
        assert_eq!(names, vec![Some("dev/app:1"), Some("dev/app:2")]);
        assert_serves(source.as_ref(), &one);
        assert_serves(source.as_ref(), &two);
        assert_eq!(
            select_images(source.images(), Some("2")).unwrap()[0]
                .descriptor
                .digest,
            two.descriptor.digest
        );
    }
    // Exporting tag 1 again with another image replaces that entry only.
    write_oci_layout(
        &layout,
        &images[1..]
            .iter()
            .map(|image| ExportImage {
                tag: Some("1".into()),
                ..image.clone()
            })
            .collect::<Vec<_>>(),
        &blobs,
    )
    .unwrap();
    let source = open(&layout);
    assert_eq!(source.images().len(), 2);
    assert_eq!(
        select_images(source.images(), Some("1")).unwrap()[0]
            .descriptor
            .digest,
        two.descriptor.digest
    );

    let docker = temp.path().join("docker.tar");
    write_docker_archive(&docker, &images, &blobs).unwrap();
    let source = open(&docker);
    let names: Vec<Option<&str>> = source
        .images()
        .iter()
        .map(|image| image.name.as_deref())
        .collect();
    assert_eq!(names, vec![Some("dev/app:1"), Some("dev/app:2")]);
    let manifest = parse_manifest(
        &read_verified(source.as_ref(), &source.images()[0].descriptor.digest),
        None,
    )
    .unwrap();
    assert_eq!(manifest.config.digest, Digest::of(&one.config));
    assert_eq!(
        manifest.layers[0].digest,
        Digest::of(&one.layer_tar),
        "layers are written uncompressed"
    );
    let leftovers: Vec<_> = fs::read_dir(temp.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".imagefs"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn writers_verify_blobs() {
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("corrupt");
    let mut blobs = MemoryBlobs::of(&[&image]);
    blobs
        .0
        .insert(Digest::of(&image.layer), b"corrupted".to_vec());
    let export = vec![ExportImage {
        name: "dev/app:1".into(),
        tag: Some("1".into()),
        descriptor: image.descriptor.clone(),
    }];
    let target = temp.path().join("x.tar");
    let error = write_oci_archive(&target, &export, &blobs)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&Digest::of(&image.layer).to_string()),
        "{error}"
    );
    assert!(!target.exists());
    let error = write_docker_archive(&target, &export, &blobs)
        .unwrap_err()
        .to_string();
    assert!(error.contains("blob") || error.contains("layer"), "{error}");
    let missing = vec![ExportImage {
        descriptor: Descriptor::new(OCI_MANIFEST, Digest::of(b"none"), 4),
        ..export[0].clone()
    }];
    assert!(write_oci_layout(&temp.path().join("l"), &missing, &blobs).is_err());
    let leftovers = fs::read_dir(temp.path()).unwrap().count();
    assert!(leftovers <= 1, "only the layout dir may remain");
}

#[test]
fn docker_archive_of_an_index_takes_the_host_child() {
    let temp = tempfile::tempdir().unwrap();
    let (arm, amd) = (TestImage::new("arm"), TestImage::new("amd"));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64"}}}},
          {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        arm.descriptor.digest, arm.descriptor.size, amd.descriptor.digest, amd.descriptor.size
    );
    let mut blobs = MemoryBlobs::of(&[&arm, &amd]);
    blobs
        .0
        .insert(Digest::of(index.as_bytes()), index.clone().into_bytes());
    let export = vec![ExportImage {
        name: "dev/multi:1".into(),
        tag: Some("1".into()),
        descriptor: Descriptor::new(
            "application/vnd.oci.image.index.v1+json",
            Digest::of(index.as_bytes()),
            index.len() as u64,
        ),
    }];
    let path = temp.path().join("multi.tar");
    write_docker_archive(&path, &export, &blobs).unwrap();
    let source = open(&path);
    let manifest = parse_manifest(
        &read_verified(source.as_ref(), &source.images()[0].descriptor.digest),
        None,
    )
    .unwrap();
    let expected = if std::env::consts::ARCH == "aarch64" {
        &arm
    } else {
        &amd
    };
    // On hosts other than amd64/arm64 the first child is taken.
    if matches!(std::env::consts::ARCH, "x86_64" | "aarch64") {
        assert_eq!(manifest.config.digest, Digest::of(&expected.config));
    }
    // The OCI layout keeps the whole index.
    let layout = temp.path().join("multi-layout");
    write_oci_layout(&layout, &export, &blobs).unwrap();
    let source = open(&layout);
    assert_serves(source.as_ref(), &arm);
    assert_serves(source.as_ref(), &amd);
    let mut index_bytes = Vec::new();
    source
        .open_blob(&Digest::of(index.as_bytes()))
        .unwrap()
        .read_to_end(&mut index_bytes)
        .unwrap();
    assert_eq!(index_bytes, index.as_bytes());
}

/// Opens `path` with `limits`, keeping only the error.
fn open_limited(path: &Path, tmp: &Path, limits: &DecompressLimits) -> Result<(), ArchiveError> {
    open_source_with_limits(path, Some(tmp), limits).map(|_| ())
}

fn dir_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[test]
fn decompress_limit_arithmetic() {
    let limits = DecompressLimits::default();
    let table: &[(u64, u64)] = &[
        (0, 256 << 20),
        (1 << 20, 256 << 20),
        (10 << 20, 1000 << 20),
        (u64::MAX, u64::MAX),
    ];
    for (compressed, allowance) in table {
        assert_eq!(limits.allowance(*compressed), *allowance, "{compressed}");
    }
    let fixed = DecompressLimits {
        max_size: Some(5),
        ..limits
    };
    assert_eq!(fixed.allowance(1 << 30), 5);
    // min(1 GiB, 5% of the filesystem)
    let margins: &[(u64, u64)] = &[
        (0, 0),
        (100 << 20, 5 << 20),
        (20 << 30, 1 << 30),
        (u64::MAX, 1 << 30),
    ];
    for (total, margin) in margins {
        assert_eq!(limits.margin(*total), *margin, "{total}");
    }
}

/// Regression (issue 6): a compressed archive was decompressed into its temp file
/// with no limit, so a gzip or zstd bomb filled the disk. Now it stops at its
/// allowance (here lowered to 1 MiB: 100 times a few KiB is less), names the archive
/// and the limit, and leaves no temp file; a genuine archive passes the same limits.
#[test]
fn compressed_archive_bombs_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let tmp = temp.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let tight = DecompressLimits {
        min_allowance: 1 << 20,
        ..DecompressLimits::default()
    };
    let image = TestImage::new("genuine");
    let layout = temp.path().join("layout");
    write_layout(&layout, &[(Some("app:1"), &image)]);
    let plain = temp.path().join("layout.tar");
    tar_directory(&layout, &plain);
    let genuine = temp.path().join("layout.tar.gz");
    fs::write(&genuine, gzip(&fs::read(&plain).unwrap())).unwrap();
    open_limited(&genuine, &tmp, &tight).unwrap();

    for (name, zstd) in [("bomb.tar.gz", false), ("bomb.tar.zst", true)] {
        let path = temp.path().join(name);
        fs::write(&path, zero_bomb(8 << 20, zstd)).unwrap();
        let compressed = fs::metadata(&path).unwrap().len();
        assert!(compressed * 100 < 1 << 20, "{name} is {compressed} bytes");
        let error = open_limited(&path, &tmp, &tight).unwrap_err();
        match &error {
            ArchiveError::DecompressionLimit {
                location,
                reason: LimitReason::Ratio { allowance, .. },
            } => {
                assert_eq!(location, &path.display().to_string());
                assert_eq!(*allowance, 1 << 20);
            }
            other => panic!("{name}: {other}"),
        }
        let message = error.to_string();
        for needle in [
            name,
            "more than 1.00 MiB",
            "100 times",
            "decompression bomb",
            "--max-decompressed-size",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(dir_entries(&tmp), Vec::<std::path::PathBuf>::new());

        // Without the floor, the ratio rule alone: 100 times the archive's size.
        let ratio_only = DecompressLimits {
            min_allowance: 0,
            ..tight
        };
        match open_limited(&path, &tmp, &ratio_only) {
            Err(ArchiveError::DecompressionLimit {
                reason: LimitReason::Ratio { allowance, .. },
                ..
            }) => assert_eq!(allowance, compressed * 100),
            other => panic!("{name}: {other:?}"),
        }

        // An explicit size replaces the ratio: under it, the archive decompresses
        // whole (and is then refused for what it is: no image layout).
        let generous = DecompressLimits {
            max_size: Some(32 << 20),
            ..tight
        };
        match open_limited(&path, &tmp, &generous) {
            Err(ArchiveError::Unrecognized { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }

    let small = DecompressLimits {
        max_size: Some(1024),
        ..DecompressLimits::default()
    };
    let error = open_limited(&genuine, &tmp, &small).unwrap_err();
    assert!(
        matches!(
            error,
            ArchiveError::DecompressionLimit {
                reason: LimitReason::MaxSize { max_size: 1024 },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("more than 1.00 KiB (limit: --max-decompressed-size)"),
        "{error}"
    );
    assert_eq!(dir_entries(&tmp), Vec::<std::path::PathBuf>::new());
}

/// Free space is checked before every write, not once up front: on a simulated
/// disk with 40 MiB free that must keep 30 MiB, decompression stops after 10 MiB.
/// On the real disk, a margin of the whole filesystem stops it before any write.
#[test]
fn decompression_keeps_the_free_space_margin() {
    let temp = tempfile::tempdir().unwrap();
    let bomb = zero_bomb(64 << 20, true);
    let limits = DecompressLimits {
        max_size: Some(u64::MAX),
        keep_free: 30 << 20,
        keep_free_percent: 50,
        ..DecompressLimits::default()
    };
    let mut disk = |file: &fs::File| -> io::Result<(u64, u64)> {
        Ok(((40 << 20) - file.metadata()?.len(), 100 << 20))
    };
    let decoder = zstd::stream::read::Decoder::new(&bomb[..]).unwrap();
    let error = source::decompress_checked(
        decoder,
        "bomb.tar.zst",
        Some(temp.path()),
        bomb.len() as u64,
        &limits,
        &mut disk,
    )
    .unwrap_err();
    match &error {
        ArchiveError::DecompressionLimit {
            location,
            reason:
                LimitReason::DiskSpace {
                    dir,
                    margin,
                    written,
                },
        } => {
            assert_eq!(location, "bomb.tar.zst");
            assert_eq!(dir, &temp.path().display().to_string());
            assert_eq!((*margin, *written), (30 << 20, 10 << 20));
        }
        other => panic!("{other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("would leave less than 30.00 MiB free in"),
        "{message}"
    );

    let path = temp.path().join("bomb.tar.zst");
    fs::write(&path, &bomb).unwrap();
    let whole_disk = DecompressLimits {
        keep_free: u64::MAX,
        keep_free_percent: 100,
        ..DecompressLimits::default()
    };
    match open_limited(&path, temp.path(), &whole_disk) {
        Err(ArchiveError::DecompressionLimit {
            reason: LimitReason::DiskSpace { written: 0, .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(dir_entries(temp.path()), vec![path]);
}
