//! Real FUSE mounts of a store built in code, driven with std::fs and real shell
//! tools. Needs root and /dev/fuse: skipped with a note otherwise, failed when
//! `CI=true`. Every mount is unmounted by a guard; every blocking call runs with a
//! timeout, so nothing can hang.

mod util;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefs::digest::Digest;
use imagefs::testing::cas::Expected;
use imagefs::testing::meta::{self, NewBlob};
use imagefs::testing::StoreInternals;
use imagefs::{self as imfs, MountHandle, MountOptions};
use imagefs::{BlobKind, Edge, EdgeKind, PlatformRow, Reference, Store};

// ---- harness ----

/// True when mounts can run here; false (after a note) when they can't outside CI.
fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("mount tests need root and /dev/fuse (root: {root}, /dev/fuse: {fuse})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Runs `f` on a thread and fails the test if it takes longer than `seconds`.
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(Duration::from_secs(seconds))
        .expect("filesystem call timed out (or panicked)")
}

/// Runs a shell script in `dir` with a timeout.
fn sh(dir: &Path, script: &str) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh")
}

fn sh_ok(dir: &Path, script: &str) -> String {
    let out = sh(dir, script);
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn errno_of<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result
        .expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// Digests of the sample store.
#[derive(Debug, Clone)]
struct Sample {
    app1: Image,
    app2: Image,
    arm: Image,
    attestations: [Digest; 2],
    index: Digest,
    shared_layer: Digest,
}

#[derive(Debug, Clone)]
struct Image {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
}

/// A store in a temp dir, mounted; unmounts when dropped (before the dir goes).
struct Mounted {
    mount: Option<MountHandle>,
    store: Arc<Store>,
    mnt: PathBuf,
    root: PathBuf,
    sample: Sample,
    _dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            let mnt = self.mnt.clone();
            let (send, receive) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = send.send(mount.unmount());
            });
            if receive.recv_timeout(Duration::from_secs(10)).is_err() {
                // Last resort: detach so the temp dir can go.
                let _ = imfs::unmount(&mnt);
            }
        }
    }
}

impl Mounted {
    fn path(&self, relative: &str) -> PathBuf {
        self.mnt.join(relative)
    }

    /// Another process's view of the same store.
    /// The manifest tag `registry/repository:tag` points at; panics when missing.
    fn tag_manifest(&self, registry: &str, repository: &str, tag: &str) -> Digest {
        self.store
            .tag_info(registry, repository, tag)
            .unwrap()
            .unwrap_or_else(|| panic!("{registry}/{repository}:{tag} is not tagged"))
            .manifest
    }

    fn other_store(&self) -> Store {
        Store::open(&self.root).expect("second store handle")
    }
}

fn put(store: &Store, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    store
        .cas()
        .write_bytes(
            bytes,
            Some(Expected {
                digest,
                size: bytes.len() as u64,
            }),
            "test",
        )
        .expect("write blob");
    digest
}

fn blob(digest: Digest, size: usize, kind: BlobKind, media_type: &str) -> NewBlob {
    NewBlob {
        digest,
        size: size as u64,
        media_type: media_type.into(),
        kind,
        diff_id: None,
        edges: Vec::new(),
    }
}

fn edge(kind: EdgeKind, position: u32, child: Digest, size: usize) -> Edge {
    Edge {
        kind,
        position,
        child,
        media_type: "application/octet-stream".into(),
        size: size as u64,
        platform: None,
        annotations: None,
        counted: true,
    }
}

/// Writes an image's blobs and returns them to record.
fn image(
    store: &Store,
    name: &str,
    layers: &[Vec<u8>],
    config_media_type: &str,
) -> (Image, Vec<NewBlob>) {
    let config_bytes =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"name\":\"{name}\"}}");
    let config = put(store, config_bytes.as_bytes());
    let mut new = vec![blob(
        config,
        config_bytes.len(),
        BlobKind::Config,
        config_media_type,
    )];
    let mut edges = vec![edge(EdgeKind::Config, 0, config, config_bytes.len())];
    let mut layer_digests = Vec::new();
    let mut layer_json = Vec::new();
    for (position, bytes) in layers.iter().enumerate() {
        let digest = put(store, bytes);
        layer_digests.push(digest);
        new.push(blob(
            digest,
            bytes.len(),
            BlobKind::Layer,
            "application/vnd.oci.image.layer.v1.tar",
        ));
        edges.push(edge(EdgeKind::Layer, position as u32, digest, bytes.len()));
        layer_json.push(format!(
            "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{digest}\",\"size\":{}}}",
            bytes.len()
        ));
    }
    let manifest_bytes = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"{config_media_type}\",\"digest\":\"{config}\",\"size\":{}}},\"layers\":[{}]}}",
        config_bytes.len(),
        layer_json.join(",")
    );
    let manifest = put(store, manifest_bytes.as_bytes());
    let mut top = blob(
        manifest,
        manifest_bytes.len(),
        BlobKind::Manifest,
        "application/vnd.oci.image.manifest.v1+json",
    );
    top.edges = edges;
    new.push(top);
    (
        Image {
            manifest,
            config,
            layers: layer_digests,
        },
        new,
    )
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Option<PlatformRow> {
    Some(PlatformRow {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(str::to_string),
        os_version: None,
    })
}

/// An uncompressed tar layer from a `sample::LayerSpec` description. Files are
/// 0444 and owned by root, like the rest of the mount, so the attribute walk holds
/// inside `rootfs/` and `files/` too.
fn tar_layer(spec: &str) -> Vec<u8> {
    imagefs::testing::sample::LayerSpec::parse(spec)
        .expect("valid layer description")
        .to_tar()
        .expect("tar builds")
}

/// A deterministic layer big enough for several reads.
fn big_layer() -> Vec<u8> {
    tar_layer("file /big 0444 @random:300000")
}

/// Builds the sample store:
/// - dev/app:1, dev/app:latest -> app1 (shared layer + big layer)
/// - dev/app:2 and docker.io/library/alpine:3.19 -> app2 (shared layer + own)
/// - dev/multi:1 -> index of app1 (linux/amd64), arm (linux/arm64/v8) and two
///   attestation artifacts (unknown/unknown)
/// - registry prod, empty
fn build_sample(store: &Store) -> Sample {
    let shared = tar_layer(r#"file /shared 0444 "shared layer bytes""#);
    let (app1, mut blobs) = image(
        store,
        "app1",
        &[shared.clone(), big_layer()],
        "application/vnd.oci.image.config.v1+json",
    );
    let (app2, more) = image(
        store,
        "app2",
        &[
            shared.clone(),
            tar_layer(r#"file /app2 0444 "app2 own layer""#),
        ],
        "application/vnd.oci.image.config.v1+json",
    );
    blobs.extend(more);
    let (arm, more) = image(
        store,
        "arm",
        &[tar_layer(r#"file /arm 0444 "arm layer""#)],
        "application/vnd.oci.image.config.v1+json",
    );
    blobs.extend(more);
    let mut attestations = Vec::new();
    for n in 0..2 {
        let (att, more) = image(
            store,
            &format!("attestation {n}"),
            &[format!("in-toto statement {n}").into_bytes()],
            "application/vnd.oci.empty.v1+json",
        );
        blobs.extend(more);
        attestations.push(att.manifest);
    }
    let children = [
        (app1.manifest, platform("linux", "amd64", None)),
        (arm.manifest, platform("linux", "arm64", Some("v8"))),
        (attestations[0], platform("unknown", "unknown", None)),
        (attestations[1], platform("unknown", "unknown", None)),
    ];
    let index_bytes = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{}]}}",
        children
            .iter()
            .map(|(d, _)| format!("{{\"digest\":\"{d}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let index = put(store, index_bytes.as_bytes());
    let mut top = blob(
        index,
        index_bytes.len(),
        BlobKind::Index,
        "application/vnd.oci.image.index.v1+json",
    );
    top.edges = children
        .iter()
        .enumerate()
        .map(|(position, (child, platform))| Edge {
            platform: platform.clone(),
            ..edge(EdgeKind::Manifest, position as u32, *child, 100)
        })
        .collect();
    blobs.push(top);

    let mut conn = meta::open(&store.root().join("imagefs.db")).expect("db");
    let tx = meta::write_tx(&mut conn).expect("tx");
    meta::insert_blobs(&tx, &blobs).expect("insert");
    let mut doomed = Vec::new();
    for (reference, manifest) in [
        ("dev/app:1", app1.manifest),
        ("dev/app:latest", app1.manifest),
        ("dev/app:2", app2.manifest),
        ("docker.io/library/alpine:3.19", app2.manifest),
        ("dev/multi:1", index),
    ] {
        let reference = Reference::parse(reference).expect("reference");
        let (repo, _) = meta::ensure_repository(&tx, &reference.registry, &reference.repository)
            .expect("repository");
        meta::set_tag(
            &tx,
            repo,
            reference.tag().expect("tag"),
            &manifest,
            &mut doomed,
        )
        .expect("tag");
    }
    meta::ensure_registry(&tx, "prod").expect("registry");
    tx.commit().expect("commit");
    Sample {
        app1,
        app2,
        arm,
        attestations: [attestations[0], attestations[1]],
        index,
        shared_layer: Digest::of(&shared),
    }
}

fn mounted_with(options: MountOptions) -> Option<Mounted> {
    if !can_mount() {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().canonicalize().expect("canonical temp dir");
    let root = base.join("store");
    let mnt = base.join("mnt");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let store = Arc::new(Store::open(&root).expect("store"));
    let sample = build_sample(&store);
    let mount = imfs::spawn_mount(store.clone(), &mnt, &options).expect("mount");
    // Wait until the kernel answers for the new mount.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !imfs::is_mounted(&mnt).unwrap_or(false) {
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(10));
    }
    let probe = mnt.clone();
    within(10, move || {
        std::fs::metadata(probe).expect("stat mount root")
    });
    Some(Mounted {
        mount: Some(mount),
        store,
        mnt,
        root: root.canonicalize().expect("store root"),
        sample,
        _dir: dir,
    })
}

fn mounted() -> Option<Mounted> {
    mounted_with(MountOptions::default())
}

fn names(dir: &Path) -> Vec<String> {
    let dir = dir.to_path_buf();
    within(10, move || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    })
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- reading ----

#[test]
fn tree_shows_registries_repositories_tags_and_manifests() {
    let Some(m) = mounted() else { return };
    let s = &m.sample;
    assert_eq!(names(&m.mnt), ["dev", "docker.io", "prod"]);
    assert_eq!(names(&m.path("dev")), ["app", "multi"]);
    assert_eq!(names(&m.path("docker.io")), ["library"]);
    assert_eq!(names(&m.path("docker.io/library")), ["alpine"]);
    assert!(names(&m.path("prod")).is_empty());
    assert_eq!(
        names(&m.path("dev/app")),
        ["blobs", "index.json", "manifests", "oci-layout", "tags"]
    );
    assert_eq!(names(&m.path("dev/app/tags")), ["1", "2", "latest"]);
    assert_eq!(
        std::fs::read_link(m.path("dev/app/tags/1")).unwrap(),
        PathBuf::from(format!("../manifests/{}", s.app1.manifest))
    );
    let mut manifests = vec![s.app1.manifest.to_string(), s.app2.manifest.to_string()];
    manifests.sort();
    assert_eq!(names(&m.path("dev/app/manifests")), manifests);
    let dir = m.path(&format!("dev/app/manifests/{}", s.app1.manifest));
    assert_eq!(
        names(&dir),
        ["config.json", "layers", "manifest.json", "rootfs"]
    );
    assert_eq!(names(&dir.join("layers")), ["000", "001"]);
    assert_eq!(names(&dir.join("layers/000")), ["blob", "files"]);
    assert_eq!(names(&dir.join("rootfs")), ["big", "shared"]);

    // Exact bytes: sha256sum of each file is its digest, through tags too.
    let out = sh_ok(
        &m.path("dev/app"),
        "sha256sum tags/1/manifest.json tags/1/config.json tags/1/layers/000/blob tags/1/layers/001/blob",
    );
    let sums: Vec<&str> = out.lines().map(|l| &l[..64]).collect();
    assert_eq!(
        sums,
        [
            s.app1.manifest.hex(),
            s.app1.config.hex(),
            s.app1.layers[0].hex(),
            s.app1.layers[1].hex()
        ]
    );
    let manifest = sh_ok(
        &m.mnt,
        "cat docker.io/library/alpine/tags/3.19/manifest.json",
    );
    assert_eq!(Digest::of(manifest.as_bytes()), s.app2.manifest);
    let ls = sh_ok(&m.path("dev/app/tags"), "ls -l");
    assert!(
        ls.contains(&format!("1 -> ../manifests/{}", s.app1.manifest)),
        "{ls}"
    );
}

#[test]
fn index_lists_platforms_with_unique_names() {
    let Some(m) = mounted() else { return };
    let s = &m.sample;
    let dir = m.path(&format!("dev/multi/manifests/{}", s.index));
    assert_eq!(names(&dir), ["manifest.json", "platforms"]);
    let mut expected = vec![
        "linux-amd64".to_string(),
        "linux-arm64-v8".to_string(),
        format!("unknown-unknown-{}", s.attestations[0].short(12)),
        format!("unknown-unknown-{}", s.attestations[1].short(12)),
    ];
    expected.sort();
    assert_eq!(names(&dir.join("platforms")), expected);
    assert_eq!(
        std::fs::read_link(dir.join("platforms/linux-arm64-v8")).unwrap(),
        PathBuf::from(format!("../../{}", s.arm.manifest))
    );
    // Every child is a manifest of the repository, so the links resolve.
    let config = sh_ok(
        &m.path("dev/multi"),
        "cat tags/1/platforms/linux-arm64-v8/config.json",
    );
    assert_eq!(Digest::of(config.as_bytes()), s.arm.config);
    let mut all = vec![s.index, s.app1.manifest, s.arm.manifest];
    all.extend(s.attestations);
    let mut all: Vec<String> = all.iter().map(Digest::to_string).collect();
    all.sort();
    assert_eq!(names(&m.path("dev/multi/manifests")), all);
    // Artifact manifests show their config bytes too.
    let att = m.path(&format!(
        "dev/multi/manifests/{}/config.json",
        s.attestations[0]
    ));
    assert!(att.exists());
}

#[test]
fn attributes_are_honest() {
    let Some(m) = mounted() else { return };
    let s = &m.sample;
    let mnt = m.mnt.clone();
    let walk = within(30, move || {
        // (path, metadata) of everything, symlinks not followed.
        let mut out = Vec::new();
        let mut stack = vec![mnt.clone()];
        while let Some(dir) = stack.pop() {
            out.push((dir.clone(), std::fs::symlink_metadata(&dir).unwrap()));
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    out.push((path, meta));
                }
            }
        }
        out
    });
    let mut inodes = HashMap::new();
    for (path, meta) in &walk {
        if let Some(other) = inodes.insert(meta.ino(), path.clone()) {
            panic!(
                "inode {} used by {} and {}",
                meta.ino(),
                other.display(),
                path.display()
            );
        }
        assert_eq!(meta.uid(), 0);
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            let subdirs = walk
                .iter()
                .filter(|(p, md)| md.is_dir() && p.parent() == Some(path.as_path()))
                .count();
            assert_eq!(meta.nlink(), 2 + subdirs as u64, "{}", path.display());
            assert_eq!(mode, 0o755, "{}", path.display());
        } else if meta.file_type().is_symlink() {
            assert_eq!(mode, 0o777);
            let target = std::fs::read_link(path).unwrap();
            assert_eq!(meta.len(), target.as_os_str().len() as u64);
        } else {
            // A layout's index.json and oci-layout take rewrites (SPEC 7).
            let writable = path.ends_with("index.json") || path.ends_with("oci-layout");
            let expected = if writable { 0o644 } else { 0o444 };
            assert_eq!(mode, expected, "{}", path.display());
            assert_eq!(meta.blocks(), meta.len().div_ceil(512));
        }
    }
    // find sees exactly what std walks (nlink right, so nothing is skipped).
    let found = sh_ok(&m.mnt, "find . | wc -l");
    assert_eq!(found.trim().parse::<usize>().unwrap(), walk.len());
    // Sizes are the store's, and inode numbers stay put.
    let big = m.path(&format!(
        "dev/app/manifests/{}/layers/001/blob",
        s.app1.manifest
    ));
    let meta = std::fs::metadata(&big).unwrap();
    assert_eq!(meta.len(), big_layer().len() as u64);
    assert_eq!(std::fs::metadata(&big).unwrap().ino(), meta.ino());
    let info = m.store.blob(&s.app1.layers[1]).unwrap().unwrap();
    assert_eq!(meta.mtime(), info.created_ns / 1_000_000_000);
    // A tag's mtime is when it was last set.
    let tag = m.store.tag_info("dev", "app", "1").unwrap().unwrap();
    let link = std::fs::symlink_metadata(m.path("dev/app/tags/1")).unwrap();
    assert_eq!(link.mtime(), tag.updated_ns / 1_000_000_000);
    assert_eq!(link.mtime_nsec(), tag.updated_ns % 1_000_000_000);
    // du adds the blob sizes up.
    let du = sh_ok(
        &m.mnt,
        &format!(
            "du -s --apparent-size -B1 dev/app/manifests/{}/layers/001",
            s.app1.manifest
        ),
    );
    // The layer directory holds the blob and files/big (300000 bytes).
    let expected = big_layer().len() + 300_000;
    assert!(du.starts_with(&expected.to_string()), "{du}");
    let du = sh_ok(&m.mnt, "du -sk dev/app/tags/1/layers/001/blob");
    assert!(
        du.starts_with(&big_layer().len().div_ceil(1024).to_string()),
        "{du}"
    );
    // stat through a tag link shows the same file.
    let stat = sh_ok(
        &m.mnt,
        "stat -L -c '%s %h %a' dev/app/tags/1/layers/001/blob",
    );
    assert_eq!(stat.trim(), format!("{} 1 444", big_layer().len()));
}

#[test]
fn large_reads_return_exact_bytes() {
    let Some(m) = mounted() else { return };
    let path = m.path("dev/app/tags/latest/layers/001/blob");
    let bytes = within(10, move || std::fs::read(path).unwrap());
    assert_eq!(bytes, big_layer());
    let passthrough = m.mount.as_ref().unwrap().passthrough();
    eprintln!("passthrough: {passthrough:?}");
    assert_ne!(passthrough, imfs::PassthroughState::Unknown);
}

#[test]
fn mount_is_hardened_and_df_reports_the_store() {
    let Some(m) = mounted() else { return };
    let info = imfs::fuse_mounts_at(&m.mnt).unwrap();
    let info = info.last().expect("listed in mountinfo");
    let options: HashSet<&str> = info.mount_options.split(',').collect();
    assert!(
        options.contains("nosuid") && options.contains("nodev"),
        "{info:?}"
    );
    assert_eq!(info.fstype, "fuse.imagefs");
    assert_eq!(info.source, "imagefs");
    let df = sh_ok(&m.mnt, "df -P -B1 . | tail -1");
    let store_df = sh_ok(&m.root, "df -P -B1 . | tail -1");
    let total = |line: &str| line.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(total(&df), total(&store_df));
}

// ---- writing ----

#[test]
fn rm_tag_untags_and_deletes_what_only_it_kept() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    sh_ok(&m.mnt, "rm dev/app/tags/2");
    assert!(m.store.tag_info("dev", "app", "2").unwrap().is_none());
    // app2 is still tagged in docker.io: nothing deleted yet.
    assert!(m.store.cas().contains(&s.app2.manifest));
    sh_ok(&m.mnt, "rm docker.io/library/alpine/tags/3.19");
    assert!(!m.store.cas().contains(&s.app2.manifest));
    assert!(!m.store.cas().contains(&s.app2.layers[1]));
    assert!(
        m.store.cas().contains(&s.shared_layer),
        "shared layer survives"
    );
    assert_eq!(
        errno_of(std::fs::remove_file(m.path("dev/app/tags/nope"))),
        libc::ENOENT
    );
    // Only tags can be removed.
    let file = m.path(&format!(
        "dev/app/manifests/{}/manifest.json",
        s.app1.manifest
    ));
    assert_eq!(errno_of(std::fs::remove_file(file)), libc::EROFS);
}

#[test]
fn ln_s_tags_by_digest_path_or_tag() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let tags = m.path("dev/app/tags");
    let link = |target: String, name: &str| {
        let path = tags.join(name);
        within(10, move || std::os::unix::fs::symlink(target, path))
    };
    let points_at = |name: &str| {
        m.store
            .tag_info("dev", "app", name)
            .unwrap()
            .map(|t| t.manifest)
    };

    link(s.app2.manifest.to_string(), "bydigest").unwrap();
    assert_eq!(points_at("bydigest"), Some(s.app2.manifest));
    link(format!("../manifests/{}", s.app1.manifest), "relative").unwrap();
    assert_eq!(points_at("relative"), Some(s.app1.manifest));
    // A manifests/ path of another repository, even one that does not hold it.
    link(format!("../../../prod/x/manifests/{}", s.index), "anyrepo").unwrap();
    assert_eq!(points_at("anyrepo"), Some(s.index));
    // Absolute path to a tag elsewhere: resolved to its digest.
    link(
        m.path("docker.io/library/alpine/tags/3.19")
            .display()
            .to_string(),
        "abs",
    )
    .unwrap();
    assert_eq!(points_at("abs"), Some(s.app2.manifest));
    // Relative path through a tag into a platform entry.
    link("../../multi/tags/1/platforms/linux-arm64-v8".into(), "arm").unwrap();
    assert_eq!(points_at("arm"), Some(s.arm.manifest));
    // Plain ln -s, and the link reads back canonical.
    sh_ok(&tags, "ln -s ../../multi/tags/1 multi");
    assert_eq!(
        std::fs::read_link(tags.join("multi")).unwrap(),
        PathBuf::from(format!("../manifests/{}", s.index))
    );
    assert!(tags.join("multi/platforms").is_dir());

    // Refusals.
    assert_eq!(
        errno_of(link(s.app2.manifest.to_string(), "1")),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(link(Digest::of(b"unknown").to_string(), "x")),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(link(s.app2.manifest.to_string(), ".bad")),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(link(s.app2.manifest.to_string(), "-bad")),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(link("/etc/passwd".into(), "outside")),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(link("../tags/nosuchtag".into(), "x")),
        libc::ENOENT
    );
    // A layer is no manifest.
    assert_eq!(
        errno_of(link(s.shared_layer.to_string(), "x")),
        libc::EINVAL
    );
    // Links elsewhere are refused.
    let elsewhere = m.path("dev/app/manifests/x");
    assert_eq!(
        errno_of(within(10, move || std::os::unix::fs::symlink(
            "sha256:00",
            elsewhere
        ))),
        libc::EROFS
    );
}

#[test]
fn ln_sf_and_cp_p_retag() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    // `-n`: an existing tag is a link to a directory, which plain `ln -sf` would
    // treat as the directory to put the link into (as on any filesystem).
    sh_ok(
        &m.path("dev/app/tags"),
        &format!(
            "ln -sfn ../manifests/{} 1 && test -d 1/layers",
            s.app2.manifest
        ),
    );
    assert_eq!(m.tag_manifest("dev", "app", "1"), s.app2.manifest);
    // No temp link left behind.
    assert_eq!(names(&m.path("dev/app/tags")), ["1", "2", "latest"]);
    sh_ok(
        &m.path("dev/app/tags"),
        &format!("ln -sf {} fresh && readlink fresh", s.app1.manifest),
    );
    // Removed and made again under the same name: reads the new target.
    let out = sh_ok(
        &m.path("dev/app/tags"),
        &format!(
            "rm fresh && ln -s ../manifests/{} fresh && readlink fresh && ls fresh/",
            s.app2.manifest
        ),
    );
    assert!(
        out.starts_with(&format!("../manifests/{}\n", s.app2.manifest)),
        "{out}"
    );
    sh_ok(&m.mnt, "ln -sfn ../../multi/tags/1 dev/app/tags/latest");
    assert_eq!(m.tag_manifest("dev", "app", "latest"), s.index);
    // cp -P copies the link text, which resolves in the other repository too.
    sh_ok(
        &m.mnt,
        "cp -P dev/app/tags/2 docker.io/library/alpine/tags/copied",
    );
    assert_eq!(
        m.tag_manifest("docker.io", "library/alpine", "copied"),
        s.app2.manifest
    );
    sh_ok(&m.mnt, "cp -P dev/app/tags/latest dev/multi/tags/again");
    assert_eq!(m.tag_manifest("dev", "multi", "again"), s.index);
}

#[test]
fn mv_renames_and_promotes() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    // The moved inode answers under its new name right away.
    sh_ok(&m.mnt, "ls -l dev/app/tags/2 >/dev/null && mv dev/app/tags/2 dev/app/tags/two && stat dev/app/tags/two >/dev/null && test -d dev/app/tags/two/layers");
    assert!(m.store.tag_info("dev", "app", "2").unwrap().is_none());
    assert_eq!(m.tag_manifest("dev", "app", "two"), s.app2.manifest);
    // Replaces an existing tag; `-T` because the existing tag is a link to a
    // directory, which plain mv would move into (as on any filesystem).
    sh_ok(&m.mnt, "mv -T dev/app/tags/two dev/app/tags/1");
    assert_eq!(m.tag_manifest("dev", "app", "1"), s.app2.manifest);
    // Promotion to another registry (the repository is created), nothing copied.
    let files_before = m.store.cas().list().unwrap().len();
    sh_ok(
        &m.mnt,
        "mkdir prod/app && mv dev/app/tags/latest prod/app/tags/1.0",
    );
    assert_eq!(m.tag_manifest("prod", "app", "1.0"), s.app1.manifest);
    assert_eq!(m.store.cas().list().unwrap().len(), files_before);
    let from = m.path("dev/app/tags/1");
    let to = m.path("dev/app/tags/bad:name");
    assert_eq!(
        errno_of(within(10, move || std::fs::rename(from, to))),
        libc::EINVAL
    );
    // Only tags move.
    let from = m.path("dev/app");
    let to = m.path("dev/app2");
    assert_eq!(
        errno_of(within(10, move || std::fs::rename(from, to))),
        libc::EROFS
    );
}

#[test]
fn rmdir_manifest_deletes_it_unless_an_index_needs_it() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let child = m.path(&format!("dev/multi/manifests/{}", s.arm.manifest));
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(child))),
        libc::EBUSY
    );
    let gone = m.path(&format!("dev/app/manifests/{}", s.app2.manifest));
    within(10, move || std::fs::remove_dir(gone)).unwrap();
    assert!(m.store.tag_info("dev", "app", "2").unwrap().is_none());
    assert_eq!(
        names(&m.path("dev/app/manifests")),
        [s.app1.manifest.to_string()]
    );
    let unknown = m.path(&format!("dev/app/manifests/{}", Digest::of(b"x")));
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(unknown))),
        libc::ENOENT
    );
    // Directories inside a manifest are not removable.
    let layers = m.path(&format!("dev/app/manifests/{}/layers/000", s.app1.manifest));
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(layers))),
        libc::EROFS
    );
}

#[test]
fn mkdir_and_rmdir_registries_and_repositories() {
    let Some(m) = mounted() else { return };
    sh_ok(
        &m.mnt,
        "mkdir staging && mkdir -p staging/team/tools/builder",
    );
    assert!(m
        .store
        .repository("staging", "team/tools/builder")
        .unwrap()
        .is_some());
    // mkdir -p made only the last one a repository; the rest are path prefixes.
    assert!(m.store.repository("staging", "team").unwrap().is_none());
    assert!(m
        .store
        .repository("staging", "team/tools")
        .unwrap()
        .is_none());
    assert_eq!(names(&m.path("staging/team")), ["tools"]);
    assert_eq!(
        names(&m.path("staging/team/tools/builder")),
        ["blobs", "index.json", "manifests", "oci-layout", "tags"]
    );
    sh_ok(&m.mnt, "mkdir -p dev/app"); // exists: fine for -p

    let mkdir = |relative: &str| {
        let path = m.path(relative);
        within(10, move || std::fs::create_dir(path))
    };
    assert_eq!(errno_of(mkdir("dev")), libc::EEXIST);
    assert_eq!(errno_of(mkdir("dev/app")), libc::EEXIST);
    assert_eq!(errno_of(mkdir("Bad_Registry")), libc::EINVAL);
    assert_eq!(errno_of(mkdir("dev/Upper")), libc::EINVAL);
    assert_eq!(errno_of(mkdir("dev/tags")), libc::EINVAL);
    assert_eq!(errno_of(mkdir("dev/app/tags/dir")), libc::EROFS);

    let rmdir = |relative: &str| {
        let path = m.path(relative);
        within(10, move || std::fs::remove_dir(path))
    };
    assert_eq!(errno_of(rmdir("dev/app")), libc::ENOTEMPTY);
    assert_eq!(errno_of(rmdir("dev")), libc::ENOTEMPTY);
    assert_eq!(errno_of(rmdir("dev/app/tags")), libc::ENOTEMPTY);
    assert_eq!(errno_of(rmdir("dev/app/manifests")), libc::ENOTEMPTY);
    assert_eq!(errno_of(rmdir("staging/team")), libc::ENOTEMPTY);
    rmdir("staging/team/tools/builder").unwrap();
    // What mkdir -p made stays until removed, level by level (POSIX).
    assert!(m.path("staging/team/tools").is_dir());
    rmdir("staging/team/tools").unwrap();
    rmdir("staging/team").unwrap();
    rmdir("staging").unwrap();
    rmdir("prod").unwrap();
    assert_eq!(names(&m.mnt), ["dev", "docker.io"]);
}

/// Found by pjdfstest: `rmdir a/b` used to take the empty `a` (made by mkdir)
/// with it.
#[test]
fn rmdir_of_a_nested_repository_keeps_its_parent() {
    let Some(m) = mounted() else { return };
    sh_ok(
        &m.mnt,
        "mkdir dev/outer && mkdir dev/outer/inner && rmdir dev/outer/inner",
    );
    assert!(
        m.path("dev/outer").is_dir(),
        "dev/outer vanished with its child"
    );
    sh_ok(&m.mnt, "rmdir dev/outer");
    assert!(!m.path("dev/outer").exists());
    // mkdir -p, then rmdir from the bottom up: every level is there until removed.
    sh_ok(&m.mnt, "mkdir -p dev/x/y/z && rmdir dev/x/y/z");
    assert!(m.path("dev/x/y").is_dir());
    sh_ok(&m.mnt, "rmdir dev/x/y");
    assert!(m.path("dev/x").is_dir());
    sh_ok(&m.mnt, "rmdir dev/x");
    assert!(!m.path("dev/x").exists());
}

#[test]
fn rm_rf_deletes_repositories_and_registries() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    sh_ok(&m.mnt, "rm -rf dev/multi");
    assert!(m.store.repository("dev", "multi").unwrap().is_none());
    for gone in [
        s.index,
        s.arm.manifest,
        s.attestations[0],
        s.attestations[1],
    ] {
        assert!(!m.store.cas().contains(&gone), "{gone} left behind");
    }
    assert!(
        m.store.cas().contains(&s.app1.manifest),
        "still tagged in dev/app"
    );
    assert_eq!(names(&m.path("dev")), ["app"]);
    sh_ok(&m.mnt, "rm -rf docker.io dev");
    assert_eq!(names(&m.mnt), ["prod"]);
    assert!(m.store.cas().list().unwrap().is_empty(), "every blob gone");
    assert!(m.store.fsck(false).unwrap().is_healthy());
}

#[test]
fn a_repository_can_hold_deeper_repositories() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    // docker.io/library becomes a repository of its own, above library/alpine.
    m.other_store()
        .set_tag(
            &Reference::parse("docker.io/library:base").unwrap(),
            &s.app1.manifest,
            false,
        )
        .unwrap();
    let library = m.path("docker.io/library");
    wait_until("library is a repository", Duration::from_secs(1), || {
        names(&library)
            == [
                "alpine",
                "blobs",
                "index.json",
                "manifests",
                "oci-layout",
                "tags",
            ]
    });
    let meta = std::fs::metadata(&library).unwrap();
    assert_eq!(meta.nlink(), 6, "alpine/, tags/, manifests/, blobs/");
    let dir = library.clone();
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(dir))),
        libc::ENOTEMPTY
    );
    sh_ok(
        &m.mnt,
        "rm -rf docker.io/library/tags/* && rmdir docker.io/library/tags",
    );
    // No tags left, but alpine is still inside.
    let dir = library.clone();
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(dir))),
        libc::ENOTEMPTY
    );
    sh_ok(&m.mnt, "rm -rf docker.io/library");
    assert!(m.store.repositories(Some("docker.io")).unwrap().is_empty());
    assert!(
        m.store.cas().contains(&s.app1.manifest),
        "still tagged in dev"
    );
}

#[test]
fn everything_else_is_read_only() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let file = m.path(&format!(
        "dev/app/manifests/{}/manifest.json",
        s.app1.manifest
    ));
    let f = file.clone();
    let open_write = within(10, move || {
        std::fs::OpenOptions::new().write(true).open(f).map(|_| ())
    });
    assert_eq!(errno_of(open_write), libc::EROFS);
    let f = file.clone();
    assert_eq!(
        errno_of(within(10, move || std::fs::set_permissions(
            f,
            std::fs::Permissions::from_mode(0o644)
        ))),
        libc::EROFS
    );
    let new_file = m.path("dev/app/tags/file");
    assert_eq!(
        errno_of(within(10, move || std::fs::write(new_file, b"x"))),
        libc::EROFS
    );
    let truncate = sh(&m.mnt, &format!("truncate -s 0 {}", file.display()));
    assert!(!truncate.status.success());
    let c_path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    let name = std::ffi::CString::new("user.test").unwrap();
    // SAFETY: valid C strings and a one-byte value.
    let rc = unsafe { libc::setxattr(c_path.as_ptr(), name.as_ptr(), b"x".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS)
    );
    let from = m.path("dev/app/tags/1");
    let to = m.path("dev/app/hardlink");
    assert_eq!(
        errno_of(within(10, move || std::fs::hard_link(from, to))),
        libc::EROFS
    );
}

#[test]
fn read_only_mount_refuses_every_change() {
    let Some(m) = mounted_with(MountOptions {
        read_only: true,
        ..Default::default()
    }) else {
        return;
    };
    let s = m.sample.clone();
    let tag = m.path("dev/app/tags/1");
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_file(tag))),
        libc::EROFS
    );
    let link = m.path("dev/app/tags/new");
    let target = s.app1.manifest.to_string();
    assert_eq!(
        errno_of(within(10, move || std::os::unix::fs::symlink(target, link))),
        libc::EROFS
    );
    let dir = m.path("newreg");
    assert_eq!(
        errno_of(within(10, move || std::fs::create_dir(dir))),
        libc::EROFS
    );
    let dir = m.path("prod");
    assert_eq!(
        errno_of(within(10, move || std::fs::remove_dir(dir))),
        libc::EROFS
    );
    // Reading still works.
    let bytes = within(10, {
        let path = m.path("dev/app/tags/1/manifest.json");
        move || std::fs::read(path).unwrap()
    });
    assert_eq!(Digest::of(&bytes), s.app1.manifest);
    let info = imfs::fuse_mounts_at(&m.mnt).unwrap();
    assert!(info
        .last()
        .unwrap()
        .mount_options
        .split(',')
        .any(|o| o == "ro"));
}

// ---- other processes and open files ----

#[test]
fn changes_by_other_processes_show_within_a_second() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let other = m.other_store();
    // Prime the kernel's caches.
    assert_eq!(names(&m.path("dev/app/tags")), ["1", "2", "latest"]);
    let _ = std::fs::symlink_metadata(m.path("dev/app/tags/2")).unwrap();
    let _ = std::fs::read_link(m.path("dev/app/tags/1")).unwrap();

    other
        .set_tag(
            &Reference::parse("dev/app:new").unwrap(),
            &s.app2.manifest,
            false,
        )
        .unwrap();
    let tags = m.path("dev/app/tags");
    let elapsed = wait_until("new tag listed", Duration::from_secs(1), || {
        names(&tags).contains(&"new".to_string())
    });
    eprintln!("new tag visible after {elapsed:?}");

    other
        .untag(&Reference::parse("dev/app:2").unwrap())
        .unwrap();
    let tag = m.path("dev/app/tags/2");
    wait_until("removed tag gone", Duration::from_secs(1), || {
        std::fs::symlink_metadata(&tag).is_err()
    });
    // The kernel keeps directory listings: the one read above must go too.
    wait_until("removed tag unlisted", Duration::from_secs(1), || {
        !names(&tags).contains(&"2".to_string())
    });

    other
        .set_tag(&Reference::parse("dev/app:1").unwrap(), &s.index, true)
        .unwrap();
    let link = m.path("dev/app/tags/1");
    let wanted = PathBuf::from(format!("../manifests/{}", s.index));
    wait_until("retagged link", Duration::from_secs(1), || {
        std::fs::read_link(&link).ok() == Some(wanted.clone())
    });

    let root = m.path("");
    assert!(!names(&root).contains(&"fresh".to_string()));
    other.create_repository("fresh", "some/repo").unwrap();
    let fresh = m.path("fresh/some/repo/tags");
    wait_until("new repository", Duration::from_secs(1), || fresh.is_dir());
    wait_until("new registry listed", Duration::from_secs(1), || {
        names(&root).contains(&"fresh".to_string())
    });
    let registry = m.path("fresh");
    assert_eq!(names(&registry), ["some"]);
    other
        .remove_repository("fresh", "some/repo", false)
        .unwrap();
    let gone = m.path("fresh/some");
    wait_until("removed repository", Duration::from_secs(1), || {
        !gone.exists()
    });
    wait_until(
        "removed repository unlisted",
        Duration::from_secs(1),
        || names(&registry).is_empty(),
    );
}

/// `ls -l DIR`: every name with its link target (lstat, then readlink).
fn ls_l(dir: &Path) -> Vec<(String, PathBuf)> {
    names(dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            std::fs::symlink_metadata(&path).expect("lstat");
            let target = std::fs::read_link(&path).expect("readlink");
            (name, target)
        })
        .collect()
}

#[test]
fn tags_moved_or_removed_elsewhere_show_within_a_second_though_cached_long() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let other = m.other_store();
    let tags = m.path("dev/app/tags");
    let before = ls_l(&tags);
    assert_eq!(before.len(), 3, "{before:?}");
    // The kernel marks a link's atime stale when it first reads its target into
    // the page cache, so the second lstat of each asks once more; then nothing.
    assert_eq!(ls_l(&tags), before);
    // Longer than the old 0.5 s TTL: a warm `ls -l tags/` still asks the daemon
    // nothing (attributes, names and link targets stay in the kernel).
    std::thread::sleep(Duration::from_millis(800));
    let quiet = util::daemon_stats(&m.mnt);
    assert_eq!(ls_l(&tags), before);
    let after = util::daemon_stats(&m.mnt);
    for key in ["req_lookup", "req_getattr", "req_readlink", "req_readdir"] {
        assert_eq!(
            quiet[key], after[key],
            "{key}: a warm ls -l asked the daemon"
        );
    }
    // The real `ls -l` also asks each entry for its SELinux label (and a file or
    // directory for its ACLs); told "not supported" once, it stops asking for the
    // rest of the mount. (The second stats read counts itself: one more.)
    // Links: one label asked. The repository (directories and files): one label
    // and one ACL asked, where each entry asked for one or two of each before.
    for (listing, most) in [("ls -l >/dev/null", 1), ("ls -l .. >/dev/null", 2)] {
        let quiet = util::daemon_stats(&m.mnt);
        sh_ok(&tags, listing);
        let after = util::daemon_stats(&m.mnt);
        let asked = after["req_getxattr"] - quiet["req_getxattr"] - 1;
        assert!(asked <= most, "{listing} in tags/ asked {asked} xattrs");
    }

    // Moved to another repository by another process.
    let target_1 = before[0].1.clone();
    other
        .move_tag(
            &Reference::parse("dev/app:1").unwrap(),
            &Reference::parse("dev/moved:1").unwrap(),
        )
        .unwrap();
    let moved = m.path("dev/moved/tags/1");
    let elapsed = wait_until("moved tag at its new place", Duration::from_secs(1), || {
        std::fs::read_link(&moved).ok() == Some(target_1.clone())
    });
    eprintln!("moved tag visible after {elapsed:?}");
    let old = tags.join("1");
    wait_until("moved tag gone", Duration::from_secs(1), || {
        std::fs::symlink_metadata(&old).is_err()
    });
    wait_until("moved tag unlisted", Duration::from_secs(1), || {
        !names(&tags).contains(&"1".to_string())
    });

    // Removed.
    other
        .untag(&Reference::parse("dev/app:latest").unwrap())
        .unwrap();
    let latest = tags.join("latest");
    wait_until("removed tag gone", Duration::from_secs(1), || {
        std::fs::symlink_metadata(&latest).is_err()
    });
    wait_until("removed tag unlisted", Duration::from_secs(1), || {
        !names(&tags).contains(&"latest".to_string())
    });

    // Pointed elsewhere: the kernel's cached link target goes too.
    other
        .set_tag(&Reference::parse("dev/app:2").unwrap(), &s.index, true)
        .unwrap();
    let wanted = PathBuf::from(format!("../manifests/{}", s.index));
    let two = tags.join("2");
    wait_until("retargeted link", Duration::from_secs(1), || {
        std::fs::read_link(&two).ok() == Some(wanted.clone())
    });
    assert!(util::daemon_stats(&m.mnt)["invalidations"] > 0);
}

#[test]
fn open_file_keeps_reading_after_its_tag_is_removed() {
    let Some(m) = mounted() else { return };
    let s = m.sample.clone();
    let path = m.path("dev/app/tags/1/layers/001/blob");
    let mut file = within(10, move || std::fs::File::open(path).unwrap());
    let mut head = vec![0u8; 1000];
    file.read_exact(&mut head).unwrap();
    // Remove every tag of app1 so its blobs are deleted from the store.
    sh_ok(
        &m.mnt,
        "rm dev/app/tags/1 dev/app/tags/latest && rm -rf dev/multi",
    );
    assert!(!m.store.cas().contains(&s.app1.layers[1]), "blob deleted");
    let mut rest = Vec::new();
    let read = within(10, move || {
        file.read_to_end(&mut rest).unwrap();
        rest
    });
    head.extend(read);
    assert_eq!(head, big_layer());
}

// ---- the binary: daemon, foreground, signals, unmount after a crash ----

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imagefs"))
}

#[test]
fn cli_mount_daemonizes_and_unmount_cleans_up_even_after_a_crash() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("store");
    let mnt = base.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    build_sample(&Store::open(&root).unwrap());

    let run = |args: &[&str]| {
        Command::new("timeout")
            .arg("30")
            .arg(binary())
            .arg("--store")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let mnt_str = mnt.to_str().unwrap();
    let out = run(&["mount", mnt_str]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Usable right away.
    assert_eq!(names(&mnt), ["dev", "docker.io", "prod"]);
    let pid = util::daemon_pid(&mnt).expect("daemon running");
    let out = run(&["unmount", mnt_str]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!imfs::is_mounted(&mnt).unwrap());
    wait_until("daemon exits", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let out = run(&["unmount", mnt_str]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"));

    // A daemon killed with -9 leaves a dead mount; unmount still works.
    let out = run(&["mount", mnt_str]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = util::daemon_pid(&mnt).expect("daemon running");
    // SAFETY: sending a signal to a process id we just found.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let probe = mnt.clone();
    wait_until("mount is dead", Duration::from_secs(5), move || {
        std::fs::metadata(&probe).is_err()
    });
    let out = run(&["unmount", mnt_str]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!imfs::is_mounted(&mnt).unwrap());
    // No daemon logs left after clean runs.
    let logs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mount-starting")
        })
        .collect();
    assert!(logs.is_empty(), "{logs:?}");

    // Errors are one line and exit 1.
    let out = run(&["mount", base.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("imagefs: mount "), "{stderr}");
}

#[test]
fn foreground_mount_unmounts_on_sigterm_and_sigint() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("store");
    let mnt = base.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    build_sample(&Store::open(&root).unwrap());
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(binary())
            .arg("--store")
            .arg(&root)
            .arg("mount")
            .arg(&mnt)
            .arg("--foreground")
            .spawn()
            .unwrap();
        let probe = mnt.clone();
        wait_until("foreground mount", Duration::from_secs(10), || {
            imfs::is_mounted(&probe).unwrap_or(false)
        });
        assert_eq!(names(&mnt.join("dev")), ["app", "multi"]);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = within(10, move || child.wait().unwrap());
        assert!(status.success(), "signal {signal}: {status}");
        assert!(!imfs::is_mounted(&mnt).unwrap());
    }
}
