//! The sample module's own tests: the description language, the tar writer, the
//! builders, corruption and the writers (real tools read what they write).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::demo::{app_layer_spec, app_patch_layer_spec};
use super::tools::{self, have_tool};
use super::*;
use crate::digest::{DiffId, Digest};

fn run(program: &str, args: &[&str]) -> String {
    tools::run(Command::new(program).args(args))
}

fn decompress(layer: &BuiltLayer) -> Vec<u8> {
    let mut out = Vec::new();
    match layer.compression {
        Compression::None => out = layer.blob.data.clone(),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(&layer.blob.data[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd => out = zstd::stream::decode_all(&layer.blob.data[..]).unwrap(),
    }
    out
}

/// (path, type, mode, link name, xattrs) of every entry of a tar.
type Listed = (
    String,
    tar::EntryType,
    u32,
    Option<String>,
    Vec<(String, Vec<u8>)>,
);

fn list(tar_bytes: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for extension in extensions {
                let extension = extension.unwrap();
                if let Some(name) = extension.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header();
        out.push((
            String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
            header.entry_type(),
            header.mode().unwrap(),
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.to_vec()).unwrap()),
            xattrs,
        ));
    }
    out
}

#[test]
fn parses_every_entry_kind() {
    let long = format!("/opt/{}", "x".repeat(120));
    let spec = LayerSpec::parse(&format!(
        r#"
            dir  /etc 0755             # a comment
            file /etc/os-release 0644 "NAME=Sample\nID=sample\n" uid=1 gid=2 mtime=5
            file /bin/busybox 0755 @random:2000   // another comment
            symlink /bin/sh busybox
            hardlink /bin/ls /bin/busybox
            whiteout /etc/motd
            opaque /var/cache
            fifo /run/fifo 0644 ; chardev /dev/null 0666 1 3 ; blockdev /dev/sda 0660 8 0
            file /usr/bin/su 4755 "x"
            xattr /etc/os-release user.note "hello\x00world"
            dir /tmp 1777
            file {long}/gnu 0644 @text:100 names=gnu
            file {long}/pax 0644 @zeros:10 names=pax
            symlink /opt/far {long}/gnu
            file "/with space" 0644 @empty
            file ../../escape 0644 "x" raw
            "#
    ))
    .unwrap();
    let entries = list(&spec.to_tar().unwrap());
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let long_tar = &long[1..];
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/os-release",
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "etc/.wh.motd",
            "var/cache/.wh..wh..opq",
            "run/fifo",
            "dev/null",
            "dev/sda",
            "usr/bin/su",
            "tmp/",
            &format!("{long_tar}/gnu"),
            &format!("{long_tar}/pax"),
            "opt/far",
            "with space",
            "../../escape",
        ]
    );
    use tar::EntryType as T;
    let types: Vec<T> = entries.iter().map(|e| e.1).collect();
    assert_eq!(
        types,
        [
            T::Directory,
            T::Regular,
            T::Regular,
            T::Symlink,
            T::Link,
            T::Regular,
            T::Regular,
            T::Fifo,
            T::Char,
            T::Block,
            T::Regular,
            T::Directory,
            T::Regular,
            T::Regular,
            T::Symlink,
            T::Regular,
            T::Regular,
        ]
    );
    assert_eq!(entries[3].3.as_deref(), Some("busybox"));
    assert_eq!(entries[4].3.as_deref(), Some("bin/busybox"));
    assert_eq!(entries[4].2, 0o755, "a hard link takes its target's mode");
    assert_eq!(entries[10].2, 0o4755);
    assert_eq!(entries[11].2, 0o1777);
    assert_eq!(entries[14].3, Some(format!("{long}/gnu")));
    assert_eq!(
        entries[1].4,
        [("user.note".to_string(), b"hello\0world".to_vec())]
    );

    // Owners, mtimes, device numbers from the headers.
    let tar = spec.to_tar().unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let headers: Vec<tar::Header> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().clone())
        .collect();
    assert_eq!(headers[1].uid().unwrap(), 1);
    assert_eq!(headers[1].gid().unwrap(), 2);
    assert_eq!(headers[1].mtime().unwrap(), 5);
    assert_eq!(headers[2].mtime().unwrap(), SAMPLE_MTIME);
    assert_eq!(headers[8].device_major().unwrap(), Some(1));
    assert_eq!(headers[8].device_minor().unwrap(), Some(3));
    assert_eq!(headers[2].size().unwrap(), 2000);
}

#[test]
fn long_names_use_the_requested_format() {
    let long = format!("/{}/file", "d".repeat(150));
    let spec = LayerSpec::parse(&format!(
            "file {long} 0644 @empty names=gnu\nfile {long} 0644 @empty names=pax\nfile {long} 0644 @empty"
        ))
        .unwrap();
    let tar = spec.to_tar().unwrap();
    // The ustar default splits this one into prefix + name: no extra header.
    let mut archive = tar::Archive::new(&tar[..]);
    let raw_types: Vec<tar::EntryType> = archive
        .entries()
        .unwrap()
        .raw(true)
        .map(|e| e.unwrap().header().entry_type())
        .collect();
    use tar::EntryType as T;
    assert_eq!(
        raw_types,
        [
            T::GNULongName,
            T::Regular,
            T::XHeader,
            T::Regular,
            T::Regular
        ]
    );
    for entry in list(&tar) {
        assert_eq!(entry.0, long[1..]);
    }
}

#[test]
fn parse_errors_name_the_line() {
    for (text, line, needle) in [
        ("dir /etc 0755\nbogus /x", 2, "unknown entry kind"),
        ("file /x 0644", 1, "expected 3 arguments"),
        ("file /x 0999 \"a\"", 1, "bad octal mode"),
        ("file /x 0644 @random", 1, "byte count"),
        ("file /x 0644 \"open", 1, "unterminated"),
        ("\n\nxattr /nope user.a \"b\"", 3, "no earlier entry"),
        ("file /a/../b 0644 @empty", 1, "'..'"),
        ("dir /x 0755 colour=red", 1, "unknown option"),
    ] {
        match LayerSpec::parse(text) {
            Err(SampleError::Parse { line: got, message }) => {
                assert_eq!(got, line, "{text:?}: {message}");
                assert!(message.contains(needle), "{text:?}: {message}");
            }
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn missing_end_of_archive_blocks() {
    let spec = LayerSpec::parse("file /a 0644 \"hello\"").unwrap();
    let full = spec.to_tar().unwrap();
    let short = spec.clone().without_end_of_archive().to_tar().unwrap();
    assert_eq!(short.len() + 1024, full.len());
    assert_eq!(list(&short).len(), 1);
    let layer = spec
        .without_end_of_archive()
        .build(Compression::Gzip)
        .unwrap();
    assert_eq!(layer.diff_id, DiffId(Digest::of(&short)));
}

fn digests(images: &[DemoImage]) -> Vec<(String, Digest)> {
    images
        .iter()
        .map(|image| (image.name.clone(), image.built.digest()))
        .collect()
}

#[test]
fn demo_images_are_deterministic() {
    let first = demo_images().unwrap();
    let second = demo_images().unwrap();
    assert_eq!(digests(&first), digests(&second));
    assert_eq!(first.len(), 5);
    for (name, digest) in digests(&first) {
        println!("{name} {digest}");
    }
}

#[test]
fn diff_ids_match_the_uncompressed_layers() {
    let images = demo_images().unwrap();
    for image in &images {
        let mut manifests: Vec<&BuiltImage> = Vec::new();
        match &image.built {
            Built::Image(built) => manifests.push(built),
            Built::Index(index) => manifests.extend(index.children.iter().map(|(_, c)| c)),
        }
        for manifest in manifests {
            if manifest.artifact_type.is_some() {
                continue;
            }
            let config: serde_json::Value = serde_json::from_slice(&manifest.config.data).unwrap();
            let listed: Vec<String> = config["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(listed.len(), manifest.layers.len());
            for (layer, listed) in manifest.layers.iter().zip(&listed) {
                assert_eq!(layer.blob.digest, Digest::of(&layer.blob.data));
                let uncompressed = decompress(layer);
                assert_eq!(
                    &Digest::of(&uncompressed).to_string(),
                    listed,
                    "{}",
                    image.name
                );
                assert_eq!(layer.diff_id.to_string(), *listed);
            }
            // The manifest's descriptors are the blobs'.
            let parsed: serde_json::Value =
                serde_json::from_slice(&manifest.manifest.data).unwrap();
            assert_eq!(
                parsed["config"]["digest"],
                manifest.config.digest.to_string()
            );
            assert_eq!(parsed["config"]["size"], manifest.config.size());
            for (descriptor, layer) in parsed["layers"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&manifest.layers)
            {
                assert_eq!(descriptor["digest"], layer.blob.digest.to_string());
                assert_eq!(descriptor["size"], layer.blob.size());
                assert_eq!(descriptor["mediaType"], layer.blob.media_type);
            }
        }
    }
}

#[test]
fn demo_images_share_the_base_layer() {
    let images = demo_images().unwrap();
    let base = |i: usize| match &images[i].built {
        Built::Image(image) => image.layers[0].blob.digest,
        Built::Index(index) => index.children[0].1.layers[0].blob.digest,
    };
    assert_eq!(base(0), base(1));
    assert_eq!(base(0), base(2));
    assert_eq!(base(0), base(4));
    let app = |i: usize| images[i].built.as_image().unwrap().layers[1].blob.digest;
    assert_eq!(app(1), app(2));
    let Built::Index(multi) = &images[4].built else {
        panic!("sample-multi is an index")
    };
    assert_eq!(
        multi.child("linux/amd64").unwrap().digest(),
        images[0].built.digest()
    );
    assert!(multi.child("linux/arm64/v8").is_some());
    let unknown = multi
        .children
        .iter()
        .filter(|(d, _)| {
            d.platform.as_ref().is_some_and(|p| p.os == "unknown")
                && d.annotations["vnd.docker.reference.type"] == "attestation-manifest"
        })
        .count();
    assert_eq!(unknown, 2);
    let entries = list(&images[0].built.as_image().unwrap().layers[0].tar);
    assert!(
        (140..=200).contains(&entries.len()),
        "{} entries",
        entries.len()
    );
}

#[test]
fn corruptions_break_exactly_one_thing() {
    let spec = LayerSpec::parse("dir /a 0755\nfile /a/b 0644 @text:3000").unwrap();
    let image = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .build()
        .unwrap();
    let manifest = |image: &BuiltImage| -> serde_json::Value {
        serde_json::from_slice(&image.manifest.data).unwrap()
    };

    let broken = image.corrupt(Corruption::WrongDiffId { layer: 0 }).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&broken.config.data).unwrap();
    assert_ne!(
        config["rootfs"]["diff_ids"][0],
        image.layers[0].diff_id.to_string()
    );
    assert_eq!(
        manifest(&broken)["config"]["digest"],
        broken.config.digest.to_string()
    );

    let broken = image
        .corrupt(Corruption::WrongSize(Part::Layer(0)))
        .unwrap();
    assert_eq!(
        manifest(&broken)["layers"][0]["size"],
        image.layers[0].blob.size() + 1
    );

    let broken = image
        .corrupt(Corruption::WrongDigest(Part::Layer(0)))
        .unwrap();
    let layer = &broken.layers[0].blob;
    assert_ne!(layer.digest, Digest::of(&layer.data));
    assert_eq!(manifest(&broken)["layers"][0]["size"], layer.size());
    assert_eq!(
        manifest(&broken)["layers"][0]["digest"],
        layer.digest.to_string()
    );

    let broken = image
        .corrupt(Corruption::WrongDigest(Part::Config))
        .unwrap();
    assert_ne!(broken.config.digest, Digest::of(&broken.config.data));
    assert_eq!(manifest(&broken)["config"]["size"], broken.config.size());

    let broken = image
        .corrupt(Corruption::TruncatedLayer { layer: 0 })
        .unwrap();
    let layer = &broken.layers[0].blob;
    assert_eq!(layer.digest, Digest::of(&layer.data));
    assert!(layer.size() < image.layers[0].blob.size());
    let mut out = Vec::new();
    assert!(flate2::read::GzDecoder::new(&layer.data[..])
        .read_to_end(&mut out)
        .is_err());

    let broken = image.corrupt(Corruption::MalformedConfig).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&broken.config.data).is_err());
    assert_eq!(
        manifest(&broken)["config"]["digest"],
        broken.config.digest.to_string()
    );

    let broken = image.corrupt(Corruption::MalformedManifest).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&broken.manifest.data).is_err());
    assert_eq!(broken.manifest.digest, Digest::of(&broken.manifest.data));

    let broken = image
        .corrupt(Corruption::UnknownLayerMediaType { layer: 0 })
        .unwrap();
    assert_eq!(
        manifest(&broken)["layers"][0]["mediaType"],
        media_type::UNKNOWN_LAYER
    );

    assert!(image
        .corrupt(Corruption::TruncatedLayer { layer: 7 })
        .is_err());
}

#[test]
fn artifact_and_docker_formats() {
    let images = demo_images().unwrap();
    let sbom: serde_json::Value =
        serde_json::from_slice(&images[3].built.as_image().unwrap().manifest.data).unwrap();
    assert_eq!(sbom["artifactType"], "application/spdx+json");
    assert_eq!(
        sbom["config"]["mediaType"],
        "application/vnd.example.config+json"
    );
    assert_eq!(
        sbom["subject"]["digest"],
        images[2].built.digest().to_string()
    );
    let docker: serde_json::Value =
        serde_json::from_slice(&images[1].built.as_image().unwrap().manifest.data).unwrap();
    assert_eq!(docker["mediaType"], media_type::DOCKER_MANIFEST);
    assert_eq!(docker["config"]["mediaType"], media_type::DOCKER_CONFIG);
    assert_eq!(
        docker["layers"][0]["mediaType"],
        media_type::DOCKER_LAYER_GZIP
    );
    assert!(ArtifactBuilder::new().build().is_err());
}

#[test]
fn docker_archive_writes_a_shared_layer_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LayerSpec::parse("file /same 0644 \"same\"").unwrap();
    // The same layer twice, once gzip and once plain: one diff_id, one file.
    let image = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .layer(&spec, Compression::None)
        .build()
        .unwrap();
    let file = dir.path().join("image.tar");
    write_docker_archive(
        &file,
        &[
            (Some("local/twice:1"), &image),
            (Some("local/again:2"), &image),
        ],
        DockerArchiveOptions::default(),
    )
    .unwrap();
    let bytes = fs::read(&file).unwrap();
    let entries = list(&bytes);
    let layer_files: Vec<_> = entries
        .iter()
        .filter(|e| e.0.ends_with("/layer.tar"))
        .collect();
    assert_eq!(layer_files.len(), 1);
    assert_eq!(
        layer_files[0].0,
        format!("{}/layer.tar", image.layers[0].diff_id.0.hex())
    );
    let manifest = entries.iter().position(|e| e.0 == "manifest.json").unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut text = String::new();
    archive
        .entries()
        .unwrap()
        .nth(manifest)
        .unwrap()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 1, "one entry per image");
    assert_eq!(
        parsed[0]["RepoTags"],
        json!(["local/twice:1", "local/again:2"])
    );
    assert_eq!(parsed[0]["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn skopeo_and_umoci_read_the_oci_layout() {
    if !have_tool("skopeo") || !have_tool("umoci") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let images = write_demo_layout(&layout).unwrap();
    for image in &images {
        if let Built::Image(built) = &image.built {
            // skopeo 1.9 lists only OCI manifests and indexes of a layout, so
            // it can't see the Docker schema 2 one (imagefs must); nor
            // does it understand artifacts.
            if built.artifact_type.is_some() || built.format == ManifestFormat::Docker {
                continue;
            }
        }
        let source = format!("oci:{}:{}", layout.display(), image.name);
        let raw = run("skopeo", &["inspect", "--raw", &source]);
        assert_eq!(
            Digest::of(raw.as_bytes()),
            image.built.digest(),
            "{}",
            image.name
        );
        if image.built.as_image().is_some() {
            let inspected: serde_json::Value =
                serde_json::from_str(&run("skopeo", &["inspect", &source])).unwrap();
            assert_eq!(inspected["Os"], "linux", "{}", image.name);
        }
    }

    // umoci 0.4 knows neither zstd nor long tag names: app 1.1 with its
    // patch layer in gzip, under a short name.
    let app: Built = ImageBuilder::new()
        .layer(&distro_base_spec("x86_64").unwrap(), Compression::Gzip)
        .layer(&app_layer_spec().unwrap(), Compression::Gzip)
        .layer(&app_patch_layer_spec().unwrap(), Compression::Gzip)
        .build()
        .unwrap()
        .into();
    let app = &app;
    let simple = dir.path().join("simple");
    write_oci_layout(&simple, &[(Some("app"), app)]).unwrap();
    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", simple.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("etc/os-release").is_file());
    assert!(!rootfs.join("etc/motd").exists(), "whiteout applied");
    assert!(!rootfs.join("app/static/style.css").exists());
    assert!(rootfs.join("app/static/style.v2.css").is_file());
    assert!(!rootfs.join("usr/share/doc/xz").exists());
    assert!(!rootfs
        .join("var/cache/apk/APKINDEX.00000000.tar.gz")
        .exists());
    assert!(rootfs.join("var/cache/apk/.keep").is_file());
    assert!(fs::read_to_string(rootfs.join("app/config.yaml"))
        .unwrap()
        .contains("export"));
    use std::os::unix::fs::MetadataExt;
    let xz = fs::metadata(rootfs.join("usr/bin/xz")).unwrap();
    let unxz = fs::metadata(rootfs.join("usr/bin/unxz")).unwrap();
    assert_eq!(xz.ino(), unxz.ino(), "hard links share an inode");
    assert_eq!(
        fs::metadata(rootfs.join("bin/bbsuid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    // oci-archive form.
    let archive = dir.path().join("layout.tar");
    write_oci_archive(&archive, &[(Some("app"), app)]).unwrap();
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:app", archive.display()),
        ],
    );
    assert_eq!(Digest::of(raw.as_bytes()), app.digest());
}

#[test]
fn oci_image_tool_validates_the_layout() {
    if !have_tool("oci-image-tool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = demo_images().unwrap();
    // oci-image-tool predates zstd and artifacts: give it the plain images.
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, &[(Some("alpine"), &images[0].built)]).unwrap();
    run(
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            "name=alpine",
            layout.to_str().unwrap(),
        ],
    );
}

#[test]
fn skopeo_reads_docker_archives() {
    if !have_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = demo_images().unwrap();
    let alpine = images[0].built.as_image().unwrap();
    let app = images[2].built.as_image().unwrap();
    let entries = [
        (Some("docker.io/library/sample-alpine:3.19"), alpine),
        (Some("docker.io/library/sample-app:1.1"), app),
    ];

    let classic = dir.path().join("classic.tar");
    write_docker_archive(&classic, &entries, DockerArchiveOptions::default()).unwrap();
    let oci_form = dir.path().join("docker25.tar");
    write_docker_archive_oci(&oci_form, &entries).unwrap();

    for archive in [&classic, &oci_form] {
        for (name, image) in &entries {
            let source = format!("docker-archive:{}:{}", archive.display(), name.unwrap());
            let inspected: serde_json::Value =
                serde_json::from_str(&run("skopeo", &["inspect", &source])).unwrap();
            assert_eq!(
                inspected["Layers"].as_array().unwrap().len(),
                image.layers.len()
            );
            let config: serde_json::Value =
                serde_json::from_str(&run("skopeo", &["inspect", "--config", "--raw", &source]))
                    .unwrap();
            let diff_ids: Vec<String> = image.diff_ids().iter().map(ToString::to_string).collect();
            assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
        }
    }

    // skopeo copy recomputes layer digests from the archive's layer.tar files.
    let copied = dir.path().join("copied");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!(
                "docker-archive:{}:docker.io/library/sample-app:1.1",
                classic.display()
            ),
            &format!("oci:{}:x", copied.display()),
        ],
    );
    let config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci:{}:x", copied.display()),
        ],
    ))
    .unwrap();
    let diff_ids: Vec<String> = app.diff_ids().iter().map(ToString::to_string).collect();
    assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
}
