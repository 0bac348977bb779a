//! The imagefs index artifact (README "Index artifacts") against a real registry
//! (Debian's docker-registry 2.8.2 on 127.0.0.1, which has no referrers API, so the
//! `sha256-<hex>` tag fallback is what is exercised): what `push` attaches, that it
//! is stable and `--no-index` attaches none, that a registry refusing it leaves the
//! push successful, one artifact per child of an index, skopeo still copying the
//! image; and what `fetch_index_artifact` (the lazy pull's way to indexes) trusts:
//! the good artifact gives the same bytes the store built, while a wrong subject, a
//! gzip index of another layer, an entry index of another diff_id or a garbage blob
//! are ignored, and an index the store built is never replaced.
//!
//! Needs docker-registry, openssl and skopeo: skipped with a message where missing,
//! failing under `CI=true`.

#[path = "util/registry.rs"]
mod registry;
mod util;

use std::fs;
use std::path::Path;

use imagefs::image::{media_types, Parsed};
use imagefs::testing::index_artifact::ArtifactLayer;
use imagefs::testing::layer::LayerIndex;
use imagefs::testing::StoreInternals;
use imagefs::{DiffId, Digest, RegistryClient, RemoteErrorKind, RemoteOptions, Store};
use registry::{Fault, FaultProxy, Registry, RegistryConfig};
use serde_json::Value;
use util::{Cmd, Output, TestDir};

/// `imagefs --store STORE ...` with a home of its own and a deadline.
fn imagefs(t: &TestDir, store: &Path) -> Cmd {
    let mut cmd = Cmd::imagefs();
    cmd.arg("--store")
        .arg(store)
        .env("HOME", t.path())
        .env("XDG_RUNTIME_DIR", t.path())
        .env("DOCKER_CONFIG", t.join("docker"))
        .timeout_secs(180);
    cmd
}

fn json(output: Output) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output.stdout))
}

/// A registry, a test dir whose store holds the demo images, or `None` (skipped).
fn setup(name: &str) -> Option<(Registry, TestDir)> {
    if !util::require_tool("skopeo") {
        return None;
    }
    let reg = Registry::start(&RegistryConfig::default())?;
    let t = TestDir::new(name);
    let (layout, _) = t.demo_layout("demo-layout");
    t.imagefs()
        .arg("import")
        .arg(&layout)
        .timeout_secs(120)
        .assert_ok();
    Some((reg, t))
}

/// `imagefs push --json LOCAL REMOTE [extra]`.
fn push(t: &TestDir, local: &str, remote: &str, extra: &[&str]) -> Value {
    json(
        imagefs(t, &t.store())
            .args(["push", "--json"])
            .arg(local)
            .arg(remote)
            .args(extra)
            .assert_ok(),
    )
}

fn client(host: &str) -> RegistryClient {
    RegistryClient::new(host, &RemoteOptions::default()).expect("a client for the registry")
}

fn referrers_tag(subject: &str) -> String {
    format!("sha256-{}", subject.trim_start_matches("sha256:"))
}

fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A manifest or index of the registry as JSON (skopeo, the oracle).
fn skopeo_raw(reference: &str) -> Value {
    let output = Cmd::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .timeout_secs(60)
        .assert_ok();
    serde_json::from_str(&output.stdout).expect("skopeo prints JSON")
}

/// The layers of a stored image manifest, as the lazy pull gives them to
/// `fetch_index_artifact`: descriptor digest, size, media type, config diff_id.
fn artifact_layers(store: &Store, manifest: &Digest) -> Vec<ArtifactLayer> {
    let manifest_bytes = store.read_blob(manifest).unwrap();
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let config = digest(manifest["config"]["digest"].as_str().unwrap());
    let config_bytes = store.read_blob(&config).unwrap();
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers: Vec<ArtifactLayer> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| ArtifactLayer {
            digest: digest(layer["digest"].as_str().unwrap()),
            size: layer["size"].as_u64().unwrap(),
            media_type: layer["mediaType"].as_str().unwrap().to_string(),
            diff_id: DiffId(digest(diff_id.as_str().unwrap())),
        })
        .collect();
    // What the lazy pull builds from the parsed manifest and config is the same.
    let Ok(Parsed::Manifest(parsed)) = imagefs::image::parse_top(&manifest_bytes, None) else {
        panic!("not a manifest");
    };
    let parsed_config = imagefs::image::parse_config(&config_bytes).unwrap();
    assert_eq!(
        ArtifactLayer::of_image(&parsed, &parsed_config).as_ref(),
        Some(&layers)
    );
    layers
}

/// The stored digest of a tag of the test's store.
fn stored(t: &TestDir, reference: &str) -> Digest {
    let out = imagefs(t, &t.store())
        .args(["inspect", "--json"])
        .arg(reference)
        .assert_ok();
    let value: Value = serde_json::from_str(&out.stdout).unwrap();
    digest(
        value["digest"]
            .as_str()
            .expect("inspect --json has the digest"),
    )
}

fn is_gzip(media_type: &str) -> bool {
    media_type.ends_with("gzip")
}

/// Checks the artifact `artifact` of `subject` in `repository`: its layout, and that
/// its blobs are the indexes the store `store` built (byte for byte).
fn check_artifact(host: &str, repository: &str, subject: &Digest, artifact: &str, store: &Store) {
    let manifest = skopeo_raw(&format!("{host}/{repository}@{artifact}"));
    assert_eq!(manifest["mediaType"], media_types::OCI_MANIFEST);
    assert_eq!(
        manifest["artifactType"],
        media_types::IMAGEFS_INDEX_ARTIFACT
    );
    assert_eq!(manifest["config"]["mediaType"], media_types::OCI_EMPTY);
    assert_eq!(manifest["config"]["size"], 2);
    assert_eq!(manifest["subject"]["digest"], subject.to_string());
    let image = skopeo_raw(&format!("{host}/{repository}@{subject}"));
    assert_eq!(manifest["subject"]["mediaType"], image["mediaType"]);
    let mut expected = Vec::new();
    for layer in artifact_layers(store, subject) {
        let idx = fs::read(store.layer_index_path(&layer.digest)).unwrap();
        expected.push((
            media_types::IMAGEFS_LAYER_ENTRIES.to_string(),
            Digest::of(&idx).to_string(),
            idx.len() as u64,
            layer.digest.to_string(),
        ));
        if is_gzip(&layer.media_type) {
            let zran = fs::read(store.gzip_index_path(&layer.digest)).unwrap();
            expected.push((
                media_types::IMAGEFS_GZIP_INDEX.to_string(),
                Digest::of(&zran).to_string(),
                zran.len() as u64,
                layer.digest.to_string(),
            ));
        }
    }
    let found: Vec<(String, String, u64, String)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["mediaType"].as_str().unwrap().to_string(),
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
                d["annotations"][media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(found, expected, "the artifact's blobs of {subject}");
}

/// The descriptors listed under the fallback tag of `subject`.
fn fallback(host: &str, repository: &str, subject: &Digest) -> Vec<Value> {
    let index = skopeo_raw(&format!(
        "{host}/{repository}:{}",
        referrers_tag(&subject.to_string())
    ));
    assert_eq!(index["mediaType"], media_types::OCI_INDEX);
    index["manifests"].as_array().unwrap().clone()
}

#[test]
fn push_attaches_the_artifact_once_keeps_others_and_no_index_attaches_none() {
    let Some((reg, t)) = setup("artifact-push") else {
        return;
    };
    let host = reg.host();
    let store = Store::open(&t.store()).unwrap();
    let app = stored(&t, "docker.io/library/sample-app:1.1");
    // Someone else's referrer (the demo's SBOM of 1.1) is listed under the tag
    // already (the registry checks that listed manifests exist: push it first).
    push(
        &t,
        "docker.io/library/sample-app:1.1-sbom",
        &format!("{host}/team/app:sbom"),
        &[],
    );
    let sbom_digest = stored(&t, "docker.io/library/sample-app:1.1-sbom");
    let sbom = serde_json::json!({
        "mediaType": media_types::OCI_MANIFEST,
        "digest": sbom_digest.to_string(),
        "size": store.read_blob(&sbom_digest).unwrap().len(),
        "artifactType": "application/spdx+json",
        "annotations": {"org.example": "kept"}
    });
    let theirs = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [sbom],
    }))
    .unwrap();
    client(&host)
        .put_manifest(
            "team/app",
            &referrers_tag(&app.to_string()),
            media_types::OCI_INDEX,
            &theirs,
        )
        .unwrap();

    let first = push(
        &t,
        "docker.io/library/sample-app:1.1",
        &format!("{host}/team/app:1.1"),
        &[],
    );
    assert_eq!(first["index_attached"], true, "{first}");
    assert_eq!(first["index_warnings"], serde_json::json!([]));
    let artifacts = first["index_artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{first}");
    let artifact = artifacts[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(artifacts[0]["subject"], app.to_string());
    assert_eq!(artifacts[0]["layers"], 3);
    assert_eq!(artifacts[0]["listed_in"], referrers_tag(&app.to_string()));
    // Found by the tag fallback, with others' descriptor kept as it was.
    let listed = fallback(&host, "team/app", &app);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], sbom);
    assert_eq!(listed[1]["digest"], artifact);
    assert_eq!(
        listed[1]["artifactType"],
        media_types::IMAGEFS_INDEX_ARTIFACT
    );
    assert_eq!(listed[1]["mediaType"], media_types::OCI_MANIFEST);
    check_artifact(&host, "team/app", &app, &artifact, &store);

    // Twice: the same digest, nothing uploaded, one descriptor still.
    let second = push(
        &t,
        "docker.io/library/sample-app:1.1",
        &format!("{host}/team/app:1.1"),
        &[],
    );
    assert_eq!(second["index_artifacts"][0]["digest"], artifact.as_str());
    assert_eq!(second["index_artifacts"][0]["blobs_uploaded"], 0);
    assert_eq!(fallback(&host, "team/app", &app), listed);

    // Another repository of the registry: the artifact's blobs are mounted from
    // the first (where push recorded the image), not sent again; same digest.
    let copy = push(
        &t,
        "docker.io/library/sample-app:1.1",
        &format!("{host}/team/copy:1.1"),
        &[],
    );
    assert_eq!(copy["index_artifacts"][0]["digest"], artifact.as_str());
    assert_eq!(copy["index_artifacts"][0]["blobs_uploaded"], 0, "{copy}");
    assert!(
        !reg.log_text().contains("PUT /v2/team/copy/blobs/uploads/"),
        "a blob was uploaded to team/copy"
    );

    // Another tag of the same image in the same repository: still one.
    push(
        &t,
        "docker.io/library/sample-app:1.1",
        &format!("{host}/team/app:again"),
        &[],
    );
    assert_eq!(fallback(&host, "team/app", &app), listed);

    // --no-index: no artifact, no fallback tag.
    let alpine = stored(&t, "docker.io/library/sample-alpine:3.19");
    let plain = push(
        &t,
        "docker.io/library/sample-alpine:3.19",
        &format!("{host}/plain/alpine:3.19"),
        &["--no-index"],
    );
    assert_eq!(plain["index_attached"], false, "{plain}");
    assert_eq!(plain["index_artifacts"], serde_json::json!([]));
    let missing = client(&host)
        .get_manifest("plain/alpine", &referrers_tag(&alpine.to_string()))
        .unwrap_err();
    assert_eq!(missing.kind(), RemoteErrorKind::NotFound, "{missing}");
    let tags = imagefs(&t, &t.store())
        .args(["ls", "--remote"])
        .arg(format!("{host}/plain/alpine"))
        .assert_ok();
    assert_eq!(tags.stdout.trim(), format!("{host}/plain/alpine:3.19"));
    // Where an artifact was attached, its tag shows in the listing.
    let tags = imagefs(&t, &t.store())
        .args(["ls", "--remote"])
        .arg(format!("{host}/team/app"))
        .assert_ok();
    assert!(
        tags.stdout.contains(&referrers_tag(&app.to_string())),
        "{}",
        tags.stdout
    );

    // skopeo still copies the image by its tag, unchanged.
    let out = t.join("copied");
    Cmd::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/team/app:1.1"))
        .arg(format!("oci:{}:app", out.display()))
        .timeout_secs(120)
        .assert_ok();
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], app.to_string());
}

#[test]
fn a_registry_refusing_the_artifact_leaves_the_push_successful() {
    let Some((reg, t)) = setup("artifact-refused") else {
        return;
    };
    let proxy = FaultProxy::start(reg.addr);
    // The image goes under its tag; only the artifact is PUT by digest.
    proxy.add_for("PUT", "/manifests/sha256:", Fault::Status(400, None), 0);
    let out = imagefs(&t, &t.store())
        .args(["push", "--json", "docker.io/library/sample-alpine:3.19"])
        .arg(format!("{}/team/alpine:3.19", proxy.host()))
        .assert_ok();
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["index_attached"], false, "{report}");
    assert_eq!(report["manifests_pushed"], 1);
    let warnings = report["index_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(
        out.stderr.contains("imagefs: warning: push"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("400"), "{}", out.stderr);
    // The image itself is there, under its tag.
    let alpine = stored(&t, "docker.io/library/sample-alpine:3.19");
    let head = client(&reg.host())
        .head_manifest("team/alpine", "3.19")
        .unwrap()
        .expect("the image was pushed");
    assert_eq!(head.digest, Some(alpine));
}

#[test]
fn an_index_gets_one_artifact_per_child_image() {
    let Some((reg, t)) = setup("artifact-index") else {
        return;
    };
    let host = reg.host();
    let store = Store::open(&t.store()).unwrap();
    let report = push(
        &t,
        "docker.io/library/sample-multi:latest",
        &format!("{host}/team/multi:latest"),
        &[],
    );
    let top = stored(&t, "docker.io/library/sample-multi:latest");
    let index: Value = serde_json::from_slice(&store.read_blob(&top).unwrap()).unwrap();
    // The two platforms' images; the buildx attestations are not images.
    let images: Vec<Digest> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] == "linux")
        .map(|m| digest(m["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(images.len(), 2, "{index}");
    let artifacts = report["index_artifacts"].as_array().unwrap();
    let subjects: Vec<Digest> = artifacts
        .iter()
        .map(|a| digest(a["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(subjects, images, "{report}");
    for (artifact, subject) in artifacts.iter().zip(&images) {
        let listed = fallback(&host, "team/multi", subject);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["digest"], artifact["digest"]);
        check_artifact(
            &host,
            "team/multi",
            subject,
            artifact["digest"].as_str().unwrap(),
            &store,
        );
    }
    // No artifact for the index itself.
    let none = client(&host)
        .get_manifest("team/multi", &referrers_tag(&top.to_string()))
        .unwrap_err();
    assert_eq!(none.kind(), RemoteErrorKind::NotFound);
    // skopeo copies the whole index.
    let out = t.join("copied");
    Cmd::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/team/multi:latest"))
        .arg(format!("oci:{}:multi", out.display()))
        .timeout_secs(120)
        .assert_ok();
}

/// Puts an artifact manifest (JSON) by digest and lists exactly `listed` under the
/// fallback tag of `subject`.
fn list_under(client: &RegistryClient, repository: &str, subject: &Digest, listed: &[&Value]) {
    let mut manifests = Vec::new();
    for manifest in listed {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let digest = client
            .put_manifest(
                repository,
                &Digest::of(&bytes).to_string(),
                media_types::OCI_MANIFEST,
                &bytes,
            )
            .unwrap();
        manifests.push(serde_json::json!({
            "mediaType": media_types::OCI_MANIFEST,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "artifactType": media_types::IMAGEFS_INDEX_ARTIFACT,
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap();
    client
        .put_manifest(
            repository,
            &referrers_tag(&subject.to_string()),
            media_types::OCI_INDEX,
            &index,
        )
        .unwrap();
}

/// The descriptor of `artifact` for `layer` with media type `media_type`.
fn descriptor_of<'a>(artifact: &'a mut Value, layer: &Digest, media_type: &str) -> &'a mut Value {
    artifact["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| {
            d["mediaType"] == media_type
                && d["annotations"][media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION]
                    == layer.to_string()
        })
        .unwrap_or_else(|| panic!("no {media_type} for {layer}"))
}

/// What `fetch_index_artifact` gives a fresh store, and the files it saved.
fn fetch_fresh(
    t: &TestDir,
    name: &str,
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    layers: &[ArtifactLayer],
) -> (Store, Vec<Digest>) {
    let fresh = Store::open(&t.join(name)).unwrap();
    let got = fresh
        .fetch_index_artifact(client, repository, subject, layers)
        .unwrap();
    for layer in layers {
        let saved = fresh.layer_index_path(&layer.digest).exists();
        assert_eq!(
            saved,
            got.contains(&layer.digest),
            "{name}: layer {} saved {saved}",
            layer.digest
        );
    }
    (fresh, got)
}

#[test]
fn fetch_trusts_only_an_artifact_of_the_manifest_that_checks_out() {
    let Some((reg, t)) = setup("artifact-fetch") else {
        return;
    };
    let host = reg.host();
    let built = Store::open(&t.store()).unwrap();
    let app = stored(&t, "docker.io/library/sample-app:1.1");
    let alpine = stored(&t, "docker.io/library/sample-alpine:3.19");
    for (local, tag) in [("sample-app:1.1", "1.1"), ("sample-alpine:3.19", "alpine")] {
        push(
            &t,
            &format!("docker.io/library/{local}"),
            &format!("{host}/team/app:{tag}"),
            &[],
        );
    }
    let client = client(&host);
    let layers = artifact_layers(&built, &app);
    assert_eq!(layers.len(), 3);
    let (base, own, patch) = (layers[0].digest, layers[1].digest, layers[2].digest);
    let good_digest = fallback(&host, "team/app", &app)[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let good: Value =
        serde_json::from_slice(&client.get_manifest("team/app", &good_digest).unwrap().bytes)
            .unwrap();
    let alpine_artifact: Value = {
        let listed = fallback(&host, "team/app", &alpine)[0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_slice(&client.get_manifest("team/app", &listed).unwrap().bytes).unwrap()
    };

    // The good case: every layer, the same bytes the store built from the blobs.
    let (fresh, got) = fetch_fresh(&t, "good", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![base, own, patch]);
    for layer in &layers {
        assert_eq!(
            fs::read(fresh.layer_index_path(&layer.digest)).unwrap(),
            fs::read(built.layer_index_path(&layer.digest)).unwrap()
        );
        let zran = fresh.gzip_index_path(&layer.digest);
        if is_gzip(&layer.media_type) {
            assert_eq!(
                fs::read(&zran).unwrap(),
                fs::read(built.gzip_index_path(&layer.digest)).unwrap()
            );
        } else {
            assert!(!zran.exists(), "a gzip index for a zstd layer");
        }
    }
    // Asked again: nothing to fetch, the same answer.
    let again = fresh
        .fetch_index_artifact(&client, "team/app", &app, &layers)
        .unwrap();
    assert_eq!(again, got);

    // The store that built the indexes from its blobs: nothing replaced, and a
    // lost index is not taken from the registry (the store rebuilds its own).
    let before = fs::read(built.layer_index_path(&own)).unwrap();
    fs::remove_file(built.layer_index_path(&base)).unwrap();
    let kept = built
        .fetch_index_artifact(&client, "team/app", &app, &layers)
        .unwrap();
    assert_eq!(kept, vec![own, patch]);
    assert!(!built.layer_index_path(&base).exists());
    assert_eq!(fs::read(built.layer_index_path(&own)).unwrap(), before);

    // Wrong subject: alpine's artifact (whose one layer is app's base layer) listed
    // for app. Ignored, although its indexes are right for that layer.
    list_under(&client, "team/app", &app, &[&alpine_artifact]);
    let (_, got) = fetch_fresh(&t, "wrong-subject", &client, "team/app", &app, &layers);
    assert!(got.is_empty(), "{got:?}");

    // A gzip index of another layer under the base layer's name.
    let mut lying = good.clone();
    let own_zran = descriptor_of(&mut lying, &own, media_types::IMAGEFS_GZIP_INDEX).clone();
    let slot = descriptor_of(&mut lying, &base, media_types::IMAGEFS_GZIP_INDEX);
    slot["digest"] = own_zran["digest"].clone();
    slot["size"] = own_zran["size"].clone();
    // Listed after the wrong-subject one: a bad candidate does not stop the search.
    list_under(&client, "team/app", &app, &[&alpine_artifact, &lying]);
    let (_, got) = fetch_fresh(&t, "other-layer", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![own, patch]);

    // An entry index of another layer (another diff_id) under the patch layer.
    let mut lying = good.clone();
    let own_idx = descriptor_of(&mut lying, &own, media_types::IMAGEFS_LAYER_ENTRIES).clone();
    let slot = descriptor_of(&mut lying, &patch, media_types::IMAGEFS_LAYER_ENTRIES);
    slot["digest"] = own_idx["digest"].clone();
    slot["size"] = own_idx["size"].clone();
    list_under(&client, "team/app", &app, &[&lying]);
    let (_, got) = fetch_fresh(&t, "other-diff-id", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![base, own]);

    // Garbage where the app layer's entry index should be.
    let garbage = b"this is not an imagefs layer index".repeat(10);
    let garbage_digest = Digest::of(&garbage);
    client
        .push_blob_bytes("team/app", &garbage_digest, &garbage)
        .unwrap();
    let mut lying = good.clone();
    let slot = descriptor_of(&mut lying, &own, media_types::IMAGEFS_LAYER_ENTRIES);
    slot["digest"] = Value::from(garbage_digest.to_string());
    slot["size"] = Value::from(garbage.len());
    list_under(&client, "team/app", &app, &[&lying]);
    let (_, got) = fetch_fresh(&t, "garbage", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![base, patch]);

    // A descriptor whose size disagrees with the blob: refused, not read past.
    let mut lying = good.clone();
    let slot = descriptor_of(&mut lying, &base, media_types::IMAGEFS_LAYER_ENTRIES);
    slot["size"] = Value::from(slot["size"].as_u64().unwrap() + 1);
    list_under(&client, "team/app", &app, &[&lying]);
    let (_, got) = fetch_fresh(&t, "bad-size", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![own, patch]);

    // No artifact at all: nothing, and no error.
    let none = Store::open(&t.join("nothing")).unwrap();
    let nothing = none
        .fetch_index_artifact(&client, "team/other", &app, &layers)
        .unwrap();
    assert!(nothing.is_empty());

    // The good artifact listed again: used again.
    list_under(&client, "team/app", &app, &[&good]);
    let (_, got) = fetch_fresh(&t, "good-again", &client, "team/app", &app, &layers);
    assert_eq!(got, vec![base, own, patch]);

    // An entry index the cache has already (say, from streaming the layer once)
    // is kept as it is; only the missing gzip index is added beside it.
    let pre = Store::open(&t.join("pre")).unwrap();
    let mut own_index = LayerIndex::read_from(&built.layer_index_path(&own)).unwrap();
    own_index.entries.truncate(1);
    let path = pre.layer_index_path(&own);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    own_index.write_to(&path).unwrap();
    let got = pre
        .fetch_index_artifact(&client, "team/app", &app, &layers)
        .unwrap();
    assert_eq!(got, vec![base, own, patch]);
    assert_eq!(fs::read(&path).unwrap(), own_index.to_bytes());
    assert_eq!(
        fs::read(pre.gzip_index_path(&own)).unwrap(),
        fs::read(built.gzip_index_path(&own)).unwrap()
    );
}

/// A registry with the referrers API (played by the proxy in front of 2.8.2: it
/// answers the artifact's PUT with `OCI-Subject` and serves `/referrers/`): push
/// leaves the tag fallback alone, and the pull side finds the artifact through
/// the API without asking for the tag.
#[test]
fn with_a_referrers_api_no_fallback_tag_is_written_or_read() {
    let Some((reg, t)) = setup("artifact-api") else {
        return;
    };
    let built = Store::open(&t.store()).unwrap();
    let app = stored(&t, "docker.io/library/sample-app:1.1");
    let proxy = FaultProxy::start(reg.addr);
    let via = proxy.host();
    proxy.add_for(
        "PUT",
        "/manifests/sha256:",
        Fault::AddHeader(format!("OCI-Subject: {app}")),
        0,
    );
    let report = push(
        &t,
        "docker.io/library/sample-app:1.1",
        &format!("{via}/team/app:1.1"),
        &[],
    );
    assert_eq!(report["index_attached"], true, "{report}");
    let attached = &report["index_artifacts"][0];
    assert_eq!(attached["listed_in"], "referrers API");
    let artifact = attached["digest"].as_str().unwrap().to_string();
    let direct = client(&reg.host());
    let none = direct
        .get_manifest("team/app", &referrers_tag(&app.to_string()))
        .unwrap_err();
    assert_eq!(none.kind(), RemoteErrorKind::NotFound, "{none}");
    check_artifact(&reg.host(), "team/app", &app, &artifact, &built);

    // The API lists it (with someone else's referrer first).
    let size = direct
        .get_manifest("team/app", &artifact)
        .unwrap()
        .bytes
        .len();
    let listed = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [
            {"mediaType": media_types::OCI_MANIFEST, "digest": Digest::of(b"x").to_string(),
             "size": 1, "artifactType": "application/spdx+json"},
            {"mediaType": media_types::OCI_MANIFEST, "digest": artifact, "size": size,
             "artifactType": media_types::IMAGEFS_INDEX_ARTIFACT},
        ],
    }))
    .unwrap();
    proxy.clear();
    proxy.add_for(
        "GET",
        "/referrers/",
        Fault::Answer(media_types::OCI_INDEX.to_string(), listed),
        0,
    );
    let layers = artifact_layers(&built, &app);
    let (_, got) = fetch_fresh(&t, "via-api", &client(&via), "team/app", &app, &layers);
    assert_eq!(got.len(), 3, "{got:?}");
    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.contains("/referrers/")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("/manifests/sha256-")),
        "the tag fallback was read: {requests:?}"
    );
}
