//! The CLI over a real store: import of every source kind, ls, inspect, tag, rm, df,
//! export round trips through skopeo, and refusals of bad input.

mod util;

use imagefs::testing::sample::{
    self, Built, Compression, Corruption, ImageBuilder, LayerSpec, Part,
};
use util::{require_tool, Cmd, TestDir};

fn small_image(seed: &str) -> imagefs::testing::sample::BuiltImage {
    let base = LayerSpec::parse(
        "dir /etc 0755\nfile /etc/os-release 0644 \"NAME=Test\\n\"\nfile /bin/tool 0755 @random:4096",
    )
    .expect("spec");
    let own = LayerSpec::parse(&format!("file /app/{seed} 0644 \"{seed}\"")).expect("spec");
    ImageBuilder::new()
        .layer(&base, Compression::Gzip)
        .layer(&own, Compression::Zstd)
        .build()
        .expect("image")
}

fn blob_files(t: &TestDir) -> usize {
    std::fs::read_dir(t.store().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn import_demo_layout_names_everything_and_reimport_writes_nothing() {
    let t = TestDir::new("import-demo");
    let (layout, images) = t.demo_layout("layout");
    let out = t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    for image in &images {
        out.clone().assert_stdout_contains(&image.name);
    }
    // Clean images (whiteouts, opaque dirs and hard links included) warn of nothing.
    assert_eq!(out.stderr, "");
    let files = blob_files(&t);
    let again = t
        .run(&["import", "--json", layout.to_str().unwrap()])
        .assert_ok();
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(report["blobs_written"], 0, "{}", again.stdout);
    assert_eq!(
        report["warnings"],
        serde_json::json!([]),
        "{}",
        again.stdout
    );
    assert_eq!(blob_files(&t), files);
    let ls = t.run(&["ls"]).assert_ok();
    for image in &images {
        ls.clone().assert_stdout_contains(&image.name);
    }
    t.run(&["fsck"]).assert_ok().assert_stdout_contains("ok");
}

#[test]
fn docker_archive_walkthrough_from_the_readme() {
    let t = TestDir::new("docker-walk");
    let image = small_image("one");
    let archive = t.join("app.tar");
    sample::write_docker_archive(
        &archive,
        &[(Some("myapp:1.0"), &image)],
        sample::DockerArchiveOptions::default(),
    )
    .expect("docker archive");
    t.run(&["import", archive.to_str().unwrap()])
        .assert_ok()
        .assert_stdout_contains("local/myapp:1.0");
    t.run(&["ls"])
        .assert_ok()
        .assert_stdout_contains("local/myapp:1.0");
    t.run(&["tag", "local/myapp:1.0", "prod/myapp:1.0"])
        .assert_ok();
    let files = blob_files(&t);
    t.run(&["rm", "local/myapp:1.0"]).assert_ok();
    assert_eq!(
        blob_files(&t),
        files,
        "rm of a promoted tag freed shared blobs"
    );
    let df: serde_json::Value =
        serde_json::from_str(&t.run(&["df", "--json"]).assert_ok().stdout).unwrap();
    assert!(df["stored_bytes"].as_u64().unwrap() > 0);
    t.run(&["rm", "prod/myapp:1.0"]).assert_ok();
    assert_eq!(blob_files(&t), 0, "last rm left blobs behind");
    let df: serde_json::Value =
        serde_json::from_str(&t.run(&["df", "--json"]).assert_ok().stdout).unwrap();
    assert_eq!(df["stored_bytes"], 0);
}

#[test]
fn shared_layers_are_stored_once() {
    let t = TestDir::new("dedupe");
    let a = small_image("a");
    let b = small_image("b");
    let layout = t.join("layout");
    sample::write_oci_layout(
        &layout,
        &[
            (Some("dev/a:1"), &Built::from(a.clone())),
            (Some("dev/b:1"), &Built::from(b.clone())),
        ],
    )
    .unwrap();
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    // a and b share the base layer: 2 manifests + 2 configs + 1 shared + 2 own layers.
    assert_eq!(blob_files(&t), 7);
    let df: serde_json::Value =
        serde_json::from_str(&t.run(&["df", "--json"]).assert_ok().stdout).unwrap();
    assert!(df["shared_bytes"].as_u64().unwrap() > 0, "{df}");
    t.run(&["rm", "local/dev/a:1"]).assert_ok();
    assert_eq!(blob_files(&t), 4);
}

#[test]
fn import_with_reference_and_selection() {
    let t = TestDir::new("select");
    let (layout, _) = t.demo_layout("layout");
    let source = format!(
        "{}:docker.io/library/sample-app:1.0",
        layout.to_str().unwrap()
    );
    t.run(&["import", &source, "dev/app:first"])
        .assert_ok()
        .assert_stdout_contains("dev/app:first");
    // Several images and a REF without a selection: refused, naming the fix.
    t.run(&["import", layout.to_str().unwrap(), "dev/app:x"])
        .assert_err_line("imagefs: import");
    // A reference without registry: refused with the right form.
    let out = t
        .run(&["import", &source, "app"])
        .assert_err_line("imagefs: app");
    assert!(out.stderr.contains("REGISTRY/REPOSITORY"), "{}", out.stderr);
}

#[test]
fn bad_inputs_are_refused_and_nothing_is_kept() {
    let cases = [
        (Corruption::WrongDiffId { layer: 1 }, "diff_ids"),
        (Corruption::WrongDigest(Part::Layer(0)), "digest"),
        (Corruption::WrongSize(Part::Layer(1)), "size"),
        (Corruption::WrongDigest(Part::Config), "digest"),
        (Corruption::TruncatedLayer { layer: 0 }, "layer"),
        (Corruption::MalformedConfig, "config"),
        (Corruption::MalformedManifest, "manifest"),
        (Corruption::UnknownLayerMediaType { layer: 1 }, "media type"),
    ];
    for (corruption, needle) in cases {
        let t = TestDir::new("bad-input");
        let good = small_image("bad");
        let bad = good.corrupt(corruption).expect("corrupt");
        let layout = t.join("layout");
        sample::write_oci_layout(&layout, &[(Some("dev/bad:1"), &Built::from(bad))]).unwrap();
        let out = t
            .run(&["import", layout.to_str().unwrap()])
            .assert_err_line("imagefs: import");
        assert!(
            out.stderr.to_lowercase().contains(needle),
            "{corruption:?}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(blob_files(&t), 0, "{corruption:?} left blobs");
        t.run(&["fsck"]).assert_ok();
    }
}

#[test]
fn export_round_trips_through_skopeo() {
    if !require_tool("skopeo") {
        return;
    }
    let t = TestDir::new("export");
    let (layout, _) = t.demo_layout("layout");
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    let reference = "docker.io/library/sample-app:1.1";
    let original: serde_json::Value =
        serde_json::from_str(&t.run(&["inspect", "--json", reference]).assert_ok().stdout).unwrap();
    for (format, target, transport) in [
        ("oci", "out-oci", "oci:{}:1.1"),
        ("oci-archive", "out.tar", "oci-archive:{}:1.1"),
        ("docker-archive", "out-docker.tar", "docker-archive:{}"),
    ] {
        let path = t.join(target);
        t.run(&[
            "export",
            reference,
            path.to_str().unwrap(),
            "--format",
            format,
        ])
        .assert_ok();
        let spec = transport.replace("{}", path.to_str().unwrap());
        Cmd::new("skopeo").args(["inspect", &spec]).assert_ok();
        let copied = t.join(format!("copied-{format}"));
        Cmd::new("skopeo")
            .args(["copy", &spec, &format!("oci:{}:back", copied.display())])
            .timeout_secs(120)
            .assert_ok();
        // Back in: same config and layers (the docker-archive path recompresses
        // nothing for OCI, so digests match for oci and oci-archive).
        let back = format!("roundtrip/{format}:back");
        t.run(&["import", &format!("{}:back", copied.display()), &back])
            .assert_ok();
        let reimported: serde_json::Value =
            serde_json::from_str(&t.run(&["inspect", "--json", &back]).assert_ok().stdout).unwrap();
        let diff_ids = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .map(|l| l["diff_id"].clone())
                .collect()
        };
        assert_eq!(diff_ids(&reimported), diff_ids(&original), "{format}");
        if format != "docker-archive" {
            // skopeo rewrites a docker-archive's manifest (and compresses its
            // layers); OCI in, OCI out keeps every byte.
            assert_eq!(reimported["digest"], original["digest"], "{format}");
            assert_eq!(
                reimported["config"]["digest"], original["config"]["digest"],
                "{format}"
            );
        }
    }
    t.run(&["fsck"]).assert_ok();
}

#[test]
fn usage_errors_exit_2() {
    let t = TestDir::new("usage");
    t.run(&["frobnicate"]).assert_usage_error();
    t.run(&["import"]).assert_usage_error();
}

#[test]
fn inspect_shows_platforms_of_an_index() {
    let t = TestDir::new("inspect-index");
    let (layout, _) = t.demo_layout("layout");
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    let out = t
        .run(&["inspect", "docker.io/library/sample-multi:latest"])
        .assert_ok();
    out.clone().assert_stdout_contains("linux-amd64");
    out.assert_stdout_contains("linux-arm64-v8");
}
