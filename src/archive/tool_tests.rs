//! Checks against real tools: skopeo, umoci and oci-image-tool must accept what we
//! write, and we must read what skopeo writes. Without a tool these tests skip with
//! a note, except under `CI=true`, where a missing tool is a failure.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::test_util::*;
use super::*;
use crate::image::{parse_config, parse_manifest, parse_top, Parsed};
use crate::sample::tools::{have_tool, run};

/// Runs skopeo with an insecure (accept-anything) policy, so no policy.json is needed.
fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").arg("--insecure-policy").args(args))
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

fn export(name: &str, tag: &str, image: &TestImage) -> ExportImage {
    ExportImage {
        name: name.to_string(),
        tag: Some(tag.to_string()),
        descriptor: image.descriptor.clone(),
    }
}

/// Writes `dir/layout`: one image whose `hello.txt` holds `content`, tagged `1`.
fn one_image_layout(dir: &Path, content: &str) -> std::path::PathBuf {
    let image = TestImage::new(content);
    let layout = dir.join("layout");
    write_oci_layout(
        &layout,
        &[export("dev/app:1", "1", &image)],
        &MemoryBlobs::of(&[&image]),
    )
    .expect("write a one-image layout");
    layout
}

#[test]
fn skopeo_accepts_our_exports() {
    if !have_tool("skopeo") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let (one, two) = (TestImage::new("one"), TestImage::new("two"));
    let blobs = MemoryBlobs::of(&[&one, &two]);
    let images = vec![
        export("dev/app:1", "1", &one),
        export("dev/app:2", "2", &two),
    ];
    let layer_digest = crate::digest::Digest::of(&one.layer).to_string();
    let diff_id = crate::digest::Digest::of(&one.layer_tar).to_string();

    let layout = temp.path().join("layout");
    write_oci_layout(&layout, &images, &blobs).unwrap();
    let inspected = skopeo(&["inspect", &format!("oci:{}:1", path_text(&layout))]);
    assert!(inspected.contains(&layer_digest), "{inspected}");

    let archive = temp.path().join("oci.tar");
    write_oci_archive(&archive, &images, &blobs).unwrap();
    let inspected = skopeo(&["inspect", &format!("oci-archive:{}:2", path_text(&archive))]);
    assert!(
        inspected.contains(&crate::digest::Digest::of(&two.layer).to_string()),
        "{inspected}"
    );

    let docker = temp.path().join("docker.tar");
    write_docker_archive(&docker, &images[..1], &blobs).unwrap();
    let inspected = skopeo(&["inspect", &format!("docker-archive:{}", path_text(&docker))]);
    assert!(inspected.contains(&diff_id), "{inspected}");
    let docker_two = temp.path().join("docker2.tar");
    write_docker_archive(&docker_two, &images, &blobs).unwrap();
    skopeo(&[
        "inspect",
        &format!("docker-archive:{}:dev/app:2", path_text(&docker_two)),
    ]);

    // A full copy out of each of our formats into a fresh layout, then read it back.
    for (source, tag) in [
        (format!("oci:{}:1", path_text(&layout)), "from-layout"),
        (
            format!("oci-archive:{}:1", path_text(&archive)),
            "from-archive",
        ),
        (
            format!("docker-archive:{}", path_text(&docker)),
            "from-docker",
        ),
    ] {
        let fresh = temp.path().join(format!("fresh-{tag}"));
        skopeo(&["copy", &source, &format!("oci:{}:{tag}", path_text(&fresh))]);
        let opened = open_source(&fresh, Some(temp.path())).unwrap();
        let selected = select_images(opened.images(), Some(tag)).unwrap();
        let manifest = parse_manifest(
            &read_verified(opened.as_ref(), &selected[0].descriptor.digest),
            None,
        )
        .unwrap();
        let config =
            parse_config(&read_verified(opened.as_ref(), &manifest.config.digest)).unwrap();
        assert_eq!(config.diff_ids[0].to_string(), diff_id, "{source}");
    }
}

#[test]
fn we_read_what_skopeo_writes() {
    if !have_tool("skopeo") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let image = TestImage::new("from skopeo");
    let layout = temp.path().join("layout");
    write_layout(&layout, &[(Some("1"), &image)]);
    let source_ref = format!("oci:{}:1", path_text(&layout));
    let diff_id = crate::digest::Digest::of(&image.layer_tar);

    let docker = temp.path().join("docker.tar");
    skopeo(&[
        "copy",
        &source_ref,
        &format!("docker-archive:{}:dev/app:1", path_text(&docker)),
    ]);
    let oci_archive = temp.path().join("oci.tar");
    skopeo(&[
        "copy",
        &source_ref,
        &format!("oci-archive:{}:1", path_text(&oci_archive)),
    ]);

    for (path, expected_name) in [(&docker, "dev/app:1"), (&oci_archive, "1")] {
        let opened = open_source(path, Some(temp.path())).unwrap();
        assert_eq!(opened.images().len(), 1, "{}", path.display());
        let found = &opened.images()[0];
        let name = found.name.as_deref().unwrap_or_default();
        assert!(
            name.ends_with(expected_name),
            "{}: name {name:?}",
            path.display()
        );
        assert_eq!(
            select_images(opened.images(), Some(expected_name))
                .unwrap()
                .len(),
            1
        );
        let top = read_verified(opened.as_ref(), &found.descriptor.digest);
        let Parsed::Manifest(manifest) =
            parse_top(&top, Some(&found.descriptor.media_type)).unwrap()
        else {
            panic!("{}: expected a manifest", path.display())
        };
        assert!(manifest.is_image());
        // skopeo keeps the config bytes as they were.
        assert_eq!(
            read_verified(opened.as_ref(), &manifest.config.digest),
            image.config
        );
        let config = parse_config(&image.config).unwrap();
        assert_eq!(config.diff_ids, vec![crate::digest::DiffId(diff_id)]);
        for layer in &manifest.layers {
            let bytes = read_verified(opened.as_ref(), &layer.digest);
            assert_eq!(bytes.len() as u64, layer.size);
        }
    }
    // skopeo's docker-archive holds uncompressed layers, so the layer digest is the diff_id.
    let opened = open_source(&docker, Some(temp.path())).unwrap();
    let manifest = parse_manifest(
        &read_verified(opened.as_ref(), &opened.images()[0].descriptor.digest),
        None,
    )
    .unwrap();
    assert_eq!(manifest.layers[0].digest, diff_id);
    let _ = fs::remove_file(&docker);
}

#[test]
fn oci_image_tool_validates_our_layout() {
    if !have_tool("oci-image-tool") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let layout = one_image_layout(temp.path(), "validate");
    run(Command::new("oci-image-tool")
        .args(["validate", "--type", "image", "--ref", "name=1"])
        .arg(&layout));
}

#[test]
fn umoci_reads_our_layout() {
    if !have_tool("umoci") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let layout = one_image_layout(temp.path(), "umoci");
    // `umoci stat` crashes on configs whose history lacks `created`; unpack reads
    // every layer and is the stronger check anyway.
    let bundle = temp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", path_text(&layout)))
        .arg(&bundle));
    assert_eq!(fs::read(bundle.join("rootfs/hello.txt")).unwrap(), b"umoci");
}
