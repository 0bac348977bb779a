//! Every repository directory of the mount is an OCI image layout (SPEC section 7),
//! read and written by the real tools: skopeo (both directions, `oci:` and
//! `docker-archive:`), umoci (unpack, config, insert, repack, tag, rm, gc), buildah
//! push, oci-image-tool validate; concurrent copies into one repository; copies
//! killed at random points; and writes that must be refused (a blob with wrong
//! bytes, an `index.json` with invalid JSON, an unknown manifest or a lying size).
//!
//! Needs root, /dev/fuse, skopeo, umoci, buildah and oci-image-tool: skipped with a
//! note otherwise, failed when `CI=true`. Every mount is guarded; every command and
//! every filesystem call on the mount has a timeout.

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use imagefs::testing::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
use util::{with_timeout, Cmd, Mount, Output, TestDir};

/// How long one tool run may take.
const TOOL_SECS: u64 = 120;

fn can_run(tools: &[&str]) -> bool {
    util::require_fuse() && tools.iter().all(|tool| util::require_tool(tool))
}

/// Runs `program args...` in `dir` with a timeout.
fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Cmd::new(program)
        .args(args)
        .current_dir(dir)
        .timeout_secs(TOOL_SECS)
        .output()
}

fn run_ok(dir: &Path, program: &str, args: &[&str]) -> Output {
    run(dir, program, args).assert_ok()
}

/// Images named `names`, gzip layers only and no device nodes (so that
/// oci-image-tool takes them): a shared base, then a layer of `own_size` random
/// bytes of each own.
fn source_layout(t: &TestDir, dir: &str, names: &[&str], own_size: usize) -> PathBuf {
    let base = LayerSpec::parse(
        r#"dir /etc 0755 ; file /etc/os-release 0644 "NAME=layout-test" ; file /etc/gone 0644 "x" ; symlink /etc/link os-release"#,
    )
    .expect("base layer");
    let built: Vec<(String, Built)> = names
        .iter()
        .map(|name| {
            let own = LayerSpec::parse(&format!(
                "whiteout /etc/gone ; dir /own 0755 ; file /own/{name} 0640 @random:{own_size}"
            ))
            .expect("own layer");
            let image = ImageBuilder::new()
                .config("linux", "amd64", None)
                .layer(&base, Compression::Gzip)
                .layer(&own, Compression::Gzip)
                .build()
                .expect("image builds");
            (name.to_string(), Built::from(image))
        })
        .collect();
    let entries: Vec<(Option<&str>, &Built)> =
        built.iter().map(|(n, b)| (Some(n.as_str()), b)).collect();
    let path = t.join(dir);
    sample::write_oci_layout(&path, &entries).expect("layout written");
    path
}

fn oci(path: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", path.display())
}

/// The digest a tag of the mount points at (`sha256:<hex>`), if it exists.
fn tag_target(m: &Mount, repo: &str, tag: &str) -> Option<String> {
    let link = m.join(format!("{repo}/tags/{tag}"));
    let target = with_timeout(10, move || fs::read_link(link).ok())?;
    Some(
        target
            .to_string_lossy()
            .rsplit('/')
            .next()
            .expect("link text")
            .to_string(),
    )
}

fn names(dir: &Path) -> BTreeSet<String> {
    let dir = dir.to_path_buf();
    with_timeout(10, move || {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    })
}

/// The digest skopeo inspect reports for `image`.
fn inspect_digest(dir: &Path, image: &str) -> String {
    let out = run_ok(dir, "skopeo", &["inspect", image]).stdout;
    let value: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    value["Digest"].as_str().expect("Digest").to_string()
}

/// `imagefs fsck` of the test's store: healthy, and (with `no_leftovers`) no
/// leftovers either.
fn fsck(t: &TestDir, no_leftovers: bool) -> String {
    let out = t
        .imagefs()
        .args(["fsck", "--json"])
        .timeout_secs(60)
        .assert_ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("fsck --json");
    for field in ["missing", "corrupt", "bad_counts", "dangling"] {
        assert_eq!(
            report[field],
            serde_json::json!([]),
            "fsck {field}: {report}"
        );
    }
    if no_leftovers {
        assert_eq!(report["leftovers"], serde_json::json!([]), "{report}");
    }
    out.stdout
}

/// Staging files the store holds in tmp/, once the kernel's asynchronous releases
/// of closed files have arrived (2 s at most).
fn staging_files(t: &TestDir) -> Vec<String> {
    let list = || -> Vec<String> {
        fs::read_dir(t.store().join("tmp"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..40 {
        if list().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    list()
}

/// Writes `bytes` to `path` (`O_TRUNC`, created if missing) and closes it,
/// returning the error of any step, `close` included (where the mount commits
/// what was written; `fs::write` ignores it).
fn write_and_close(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    with_timeout(20, move || {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)?;
        file.write_all(&bytes)?;
        let fd = file.into_raw_fd();
        // SAFETY: `fd` is an open descriptor we own; it is closed exactly once.
        if unsafe { libc::close(fd) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
}

fn errno_of<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result
        .expect_err("the call must fail")
        .raw_os_error()
        .expect("an OS error")
}

// ---- reading and writing with skopeo ----

#[test]
fn skopeo_copies_into_and_out_of_the_mount() {
    if !can_run(&["skopeo", "oci-image-tool"]) {
        return;
    }
    let t = TestDir::new("layout-skopeo");
    let src = source_layout(&t, "src", &["app", "other"], 200_000);
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/app")).expect("mkdir -p dev/app");

    // oci: into the mount.
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&src, "app"), &oci(&m.join("dev/app"), "1")],
    );
    let expected = inspect_digest(t.path(), &oci(&src, "app"));
    assert_eq!(
        tag_target(&m, "dev/app", "1").as_deref(),
        Some(expected.as_str())
    );
    let repo = m.join("dev/app");
    assert_eq!(
        fs::read_to_string(repo.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], expected.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    // skopeo inspect through the mount; the repository lists only 64-hex names,
    // exactly the image's blobs; nothing staged is left.
    assert_eq!(inspect_digest(t.path(), &oci(&repo, "1")), expected);
    let listed = names(&repo.join("blobs/sha256"));
    assert_eq!(listed.len(), 4, "manifest, config, two layers: {listed:?}");
    assert!(listed
        .iter()
        .all(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_eq!(
        names(&repo),
        ["blobs", "index.json", "manifests", "oci-layout", "tags"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert!(staging_files(&t).is_empty(), "{:?}", staging_files(&t));

    // Any blob of the store answers a lookup in any repository, unlisted there;
    // a missing one is exactly ENOENT.
    fs::create_dir(m.join("dev/empty")).unwrap();
    let some_blob = listed.iter().next().unwrap().clone();
    let elsewhere = m.join(format!("dev/empty/blobs/sha256/{some_blob}"));
    assert!(fs::metadata(&elsewhere).unwrap().is_file());
    assert!(names(&m.join("dev/empty/blobs/sha256")).is_empty());
    let missing = m.join(format!("dev/app/blobs/sha256/{}", "0".repeat(64)));
    assert_eq!(errno_of(fs::metadata(missing)), libc::ENOENT);

    // A second image sharing the base: into another tag of the same repository.
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&src, "other"), &oci(&repo, "2")],
    );
    assert!(
        tag_target(&m, "dev/app", "1").is_some(),
        "the first tag stays"
    );
    assert!(tag_target(&m, "dev/app", "2").is_some());

    // The mount into oci: and docker-archive:, and docker-archive: back in.
    let out = t.join("out");
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&repo, "1"), &oci(&out, "x")],
    );
    assert_eq!(inspect_digest(t.path(), &oci(&out, "x")), expected);
    let archive = t.join("app.tar");
    let archive_ref = format!("docker-archive:{}:dev/app:1", archive.display());
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&repo, "1"), &archive_ref],
    );
    fs::create_dir(m.join("dev/fromarchive")).unwrap();
    run_ok(
        t.path(),
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", archive.display()),
            &oci(&m.join("dev/fromarchive"), "1"),
        ],
    );
    assert!(tag_target(&m, "dev/fromarchive", "1").is_some());

    // oci-image-tool validates the repository as an image layout. (Debian's
    // 1.0.0-rc1 has no `--type imageLayout`; `--type image` autodetects a layout.)
    run_ok(
        t.path(),
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            "name=1",
            &repo.display().to_string(),
        ],
    );
    fsck(&t, true);
}

// ---- umoci ----

#[test]
fn umoci_reads_and_changes_a_repository_of_the_mount() {
    if !can_run(&["skopeo", "umoci"]) {
        return;
    }
    let t = TestDir::new("layout-umoci");
    let src = source_layout(&t, "src", &["app"], 300_000);
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/app")).unwrap();
    let repo = m.join("dev/app");
    let image = |tag: &str| format!("{}:{tag}", repo.display());
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&src, "app"), &oci(&repo, "1")],
    );

    // unpack from the mount equals unpack from the plain layout.
    run_ok(
        t.path(),
        "umoci",
        &["unpack", "--image", &image("1"), "ours"],
    );
    run_ok(
        t.path(),
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", src.display()),
            "plain",
        ],
    );
    let (ours, plain) = (t.join("ours/rootfs"), t.join("plain/rootfs"));
    assert_eq!(util::tree_listing(&ours), util::tree_listing(&plain));
    assert_eq!(util::tree_hashes(&ours), util::tree_hashes(&plain));

    // config (a new tag), tag, rm, insert, repack, gc.
    run_ok(
        t.path(),
        "umoci",
        &[
            "config",
            "--image",
            &image("1"),
            "--tag",
            "2",
            "--config.env",
            "A=b",
        ],
    );
    assert!(tag_target(&m, "dev/app", "2").is_some());
    assert_ne!(
        tag_target(&m, "dev/app", "1"),
        tag_target(&m, "dev/app", "2")
    );
    run_ok(t.path(), "umoci", &["tag", "--image", &image("2"), "3"]);
    assert_eq!(
        tag_target(&m, "dev/app", "3"),
        tag_target(&m, "dev/app", "2")
    );
    run_ok(t.path(), "umoci", &["rm", "--image", &image("3")]);
    assert!(tag_target(&m, "dev/app", "3").is_none());
    let payload = t.mkdir("payload/etc");
    fs::write(payload.join("inserted"), b"inserted through the mount\n").unwrap();
    let before = tag_target(&m, "dev/app", "2");
    run_ok(
        t.path(),
        "umoci",
        &[
            "insert",
            "--image",
            &image("2"),
            &t.join("payload").display().to_string(),
            "/data",
        ],
    );
    assert_ne!(
        tag_target(&m, "dev/app", "2"),
        before,
        "insert moves the tag"
    );
    let inserted = m.join("dev/app/tags/2/rootfs/data/etc/inserted");
    assert_eq!(
        with_timeout(20, move || fs::read(inserted).unwrap()),
        b"inserted through the mount\n"
    );
    fs::write(t.join("ours/rootfs/repacked"), b"repacked\n").unwrap();
    run_ok(
        t.path(),
        "umoci",
        &[
            "repack",
            "--image",
            &image("4"),
            &t.join("ours").display().to_string(),
        ],
    );
    let repacked = m.join("dev/app/tags/4/rootfs/repacked");
    assert_eq!(
        with_timeout(20, move || fs::read(repacked).unwrap()),
        b"repacked\n"
    );
    run_ok(
        t.path(),
        "umoci",
        &["gc", "--layout", &repo.display().to_string()],
    );
    let tags = names(&m.join("dev/app/tags"));
    assert_eq!(
        tags,
        ["1", "2", "4"].map(String::from).into_iter().collect()
    );
    // umoci's own directories are gone, and they never were repositories.
    assert!(names(&repo).iter().all(|n| !n.starts_with(".umoci")));
    let repos = t.imagefs().args(["ls", "dev"]).assert_ok().stdout;
    assert!(!repos.contains("umoci"), "{repos}");
    assert!(staging_files(&t).is_empty(), "{:?}", staging_files(&t));
    fsck(&t, true);
}

// ---- buildah ----

#[test]
fn buildah_pushes_into_the_mount() {
    if !can_run(&["buildah"]) {
        return;
    }
    let t = TestDir::new("layout-buildah");
    let src = source_layout(&t, "src", &["app"], 100_000);
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/built")).unwrap();
    // buildah needs a container storage: vfs, under the test's directory.
    let root = t.join("buildah/root").display().to_string();
    let runroot = t.join("buildah/run").display().to_string();
    let buildah = |args: &[&str]| {
        let mut all = vec![
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        run_ok(t.path(), "buildah", &all)
    };
    buildah(&["pull", &oci(&src, "app")]);
    let id = buildah(&["images", "-q"]).stdout.trim().to_string();
    assert!(!id.is_empty());
    buildah(&["push", &id, &oci(&m.join("dev/built"), "1")]);
    let pushed = tag_target(&m, "dev/built", "1").expect("buildah's tag is there");
    let bytes = fs::read(m.join(format!("dev/built/manifests/{pushed}/manifest.json"))).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("layers"));
    fsck(&t, true);
}

// ---- concurrent writers ----

#[test]
fn concurrent_skopeo_copies_into_one_repository_lose_no_tag() {
    if !can_run(&["skopeo"]) {
        return;
    }
    let t = TestDir::new("layout-race");
    let src = source_layout(&t, "src", &["a", "b"], 50_000);
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/race")).unwrap();
    let repo = m.join("dev/race");
    for round in 0..10 {
        let copies: Vec<_> = ["a", "b"]
            .iter()
            .map(|image| {
                let (from, to) = (oci(&src, image), oci(&repo, &format!("{image}{round}")));
                let dir = t.path().to_path_buf();
                std::thread::spawn(move || run(&dir, "skopeo", &["copy", &from, &to]))
            })
            .collect();
        for copy in copies {
            copy.join().expect("copy thread").assert_ok();
        }
        for image in ["a", "b"] {
            for earlier in 0..=round {
                assert!(
                    tag_target(&m, "dev/race", &format!("{image}{earlier}")).is_some(),
                    "round {round}: tag {image}{earlier} lost"
                );
            }
        }
    }
    assert_eq!(names(&m.join("dev/race/tags")).len(), 20);
    fsck(&t, true);
}

// ---- crashes ----

#[test]
fn skopeo_copies_killed_at_random_points_leave_only_what_fsck_repairs() {
    if !can_run(&["skopeo"]) {
        return;
    }
    let t = TestDir::new("layout-kill");
    let src = source_layout(&t, "src", &["big"], 24 << 20);
    {
        let m = t.mount(&[]);
        fs::create_dir_all(m.join("dev/killed")).unwrap();
        let to = oci(&m.join("dev/killed"), "1");
        // Points spread over the copy (deterministic: no flaky seeds).
        for delay_ms in [5u64, 40, 90, 150, 260, 400] {
            let mut child = Command::new("skopeo")
                .args(["copy", &oci(&src, "big"), &to])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("skopeo starts");
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            // Whatever the copy left, the store is healthy.
            fsck(&t, false);
        }
        // A full copy afterwards works and is complete.
        run_ok(t.path(), "skopeo", &["copy", &oci(&src, "big"), &to]);
        assert!(tag_target(&m, "dev/killed", "1").is_some());
        m.unmount();
    }
    // Once the mount is gone, its staging files are leftovers that gc removes.
    t.imagefs().arg("gc").timeout_secs(60).assert_ok();
    assert!(staging_files(&t).is_empty(), "{:?}", staging_files(&t));
    fsck(&t, true);

    // The daemon killed during a copy: nothing is lost, and gc cleans up.
    let mut m = Mount::start_foreground(&t.store(), &t.join("mnt2"), &[]);
    fs::create_dir_all(m.join("dev/daemon")).unwrap();
    let mut copy = Command::new("skopeo")
        .args(["copy", &oci(&src, "big"), &oci(&m.join("dev/daemon"), "1")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("skopeo starts");
    std::thread::sleep(Duration::from_millis(150));
    if let Some(daemon) = m.child() {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    let _ = copy.kill();
    let _ = copy.wait();
    Cmd::imagefs()
        .arg("unmount")
        .arg(m.path())
        .timeout_secs(30)
        .output();
    drop(m);
    t.imagefs().arg("gc").timeout_secs(60).assert_ok();
    assert!(staging_files(&t).is_empty(), "{:?}", staging_files(&t));
    fsck(&t, true);
    assert!(t
        .imagefs()
        .args(["ls", "dev/killed"])
        .assert_ok()
        .stdout
        .contains('1'));
}

// ---- refused writes ----

/// Writes `bytes` to a new temporary file in `dir` the way skopeo does
/// (`O_CREAT|O_EXCL`, mode 0600, then fchmod 0644 and fsync); returns its path.
fn put_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let (p, data) = (path.clone(), bytes.to_vec());
    with_timeout(20, move || {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .expect("O_CREAT|O_EXCL");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        file.write_all(&data).unwrap();
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .expect("fchmod");
        file.sync_all().expect("fsync");
    });
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn blobs_and_index_json_that_do_not_hold_are_refused() {
    if !can_run(&["skopeo"]) {
        return;
    }
    let t = TestDir::new("layout-refuse");
    let src = source_layout(&t, "src", &["app"], 10_000);
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/app")).unwrap();
    let repo = m.join("dev/app");
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&src, "app"), &oci(&repo, "1")],
    );
    let manifest = tag_target(&m, "dev/app", "1").unwrap();

    // O_EXCL on a taken name is EEXIST; the file shows with its mode.
    let temp = put_temp(&repo, "oci-put-blob123", b"some bytes");
    assert_eq!(
        errno_of(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
        ),
        libc::EEXIST
    );
    assert_eq!(
        fs::metadata(&temp).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(fs::read(&temp).unwrap(), b"some bytes");

    // A rename into blobs/sha256 with the wrong name fails and keeps nothing.
    let wrong = sha256_hex(b"other bytes");
    let target = repo.join(format!("blobs/sha256/{wrong}"));
    assert_eq!(errno_of(fs::rename(&temp, &target)), libc::EINVAL);
    assert_eq!(errno_of(fs::metadata(&temp)), libc::ENOENT);
    assert_eq!(errno_of(fs::metadata(&target)), libc::ENOENT);
    assert!(!t.store().join(format!("blobs/sha256/{wrong}")).exists());

    // The right name: a store blob, listed here, unreferenced and removable.
    let right = sha256_hex(b"some bytes");
    let temp = put_temp(&repo, "oci-put-blob456", b"some bytes");
    let blob = repo.join(format!("blobs/sha256/{right}"));
    fs::rename(&temp, &blob).expect("a correct blob is taken");
    assert!(names(&repo.join("blobs/sha256")).contains(&right));
    assert_eq!(fs::read(&blob).unwrap(), b"some bytes");
    fsck(&t, true); // grace-leased: not a leftover
                    // Rewriting it in place with the same bytes is taken; other bytes are not.
    write_and_close(&blob, b"some bytes").expect("same bytes again");
    assert_eq!(errno_of(write_and_close(&blob, b"changed")), libc::EINVAL);
    assert_eq!(fs::read(&blob).unwrap(), b"some bytes");
    fs::remove_file(&blob).expect("an unreferenced blob may go");
    assert!(!t.store().join(format!("blobs/sha256/{right}")).exists());
    // A blob a tag reaches is busy; renaming its own bytes over it replaces it
    // (tools write blobs they could have skipped).
    let referenced = repo.join(format!("blobs/sha256/{}", &manifest["sha256:".len()..]));
    assert_eq!(errno_of(fs::remove_file(&referenced)), libc::EBUSY);
    let own_bytes = fs::read(&referenced).unwrap();
    let again = put_temp(&repo, "oci-put-blob789", &own_bytes);
    fs::rename(&again, &referenced).expect("the same bytes replace the blob");
    assert_eq!(fs::read(&referenced).unwrap(), own_bytes);

    // A tool's own directory: ENOTEMPTY while it holds files; never a repository.
    let own = repo.join(".tool-xyz");
    fs::create_dir(&own).unwrap();
    put_temp(&own, "f", b"x");
    assert_eq!(errno_of(fs::remove_dir(&own)), libc::ENOTEMPTY);
    fs::remove_file(own.join("f")).unwrap();
    fs::remove_dir(&own).unwrap();

    // index.json: invalid JSON, an unknown manifest, a lying size.
    let index = repo.join("index.json");
    let good = fs::read(&index).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = value.clone();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let unknown =
        with(&|v| v["manifests"][0]["digest"] = format!("sha256:{}", "1".repeat(64)).into());
    let lying = with(&|v| {
        let size = v["manifests"][0]["size"].as_u64().unwrap();
        v["manifests"][0]["size"] = (size + 1).into();
    });
    for (bytes, errno) in [
        (b"{not json".to_vec(), libc::EINVAL),
        (unknown, libc::ENOENT),
        (lying, libc::EINVAL),
    ] {
        assert_eq!(errno_of(write_and_close(&index, &bytes)), errno);
        assert_eq!(
            tag_target(&m, "dev/app", "1").as_deref(),
            Some(manifest.as_str())
        );
        // The same by rename over it (umoci's way).
        let temp = put_temp(&repo, "index-new", &bytes);
        assert_eq!(errno_of(fs::rename(&temp, &index)), errno);
        fs::remove_file(&temp).unwrap();
        assert_eq!(fs::read(&index).unwrap(), good, "index.json unchanged");
    }
    // A good rewrite adds a tag; dropping an entry untags.
    let two = with(&|v| {
        let mut second = v["manifests"][0].clone();
        second["annotations"]["org.opencontainers.image.ref.name"] = "2".into();
        v["manifests"].as_array_mut().unwrap().push(second);
    });
    write_and_close(&index, &two).expect("a good index.json is taken");
    assert_eq!(
        tag_target(&m, "dev/app", "2").as_deref(),
        Some(manifest.as_str())
    );
    let only_two = with(&|v| {
        v["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "2".into();
    });
    write_and_close(&index, &only_two).unwrap();
    assert!(tag_target(&m, "dev/app", "1").is_none());
    assert!(tag_target(&m, "dev/app", "2").is_some());
    // oci-layout takes its own content only.
    let layout = repo.join("oci-layout");
    write_and_close(&layout, br#"{"imageLayoutVersion": "1.0.0"}"#).expect("same content");
    assert_eq!(errno_of(write_and_close(&layout, b"{}")), libc::EINVAL);
    assert!(staging_files(&t).is_empty(), "{:?}", staging_files(&t));
    fsck(&t, true);
}

/// Writing a staging file costs one request per write at most, not a
/// `security.capability` lookup before each (the mount handles privilege
/// dropping itself: staging files keep permission bits only, so a setuid bit
/// asked for is not kept and no write has privileges to drop).
#[test]
fn writes_through_the_mount_ask_no_xattr_and_staging_files_keep_no_setuid() {
    if !can_run(&[]) {
        return;
    }
    let t = TestDir::new("layout-killpriv");
    let m = t.mount(&[]);
    fs::create_dir_all(m.join("dev/app")).unwrap();
    let path = m.join("dev/app/oci-put-blob-killpriv");
    let before = util::daemon_stats(m.path());
    let chunk = vec![7u8; 4096];
    {
        let path = path.clone();
        with_timeout(60, move || {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)?;
            for _ in 0..500 {
                file.write_all(&chunk)?;
                file.flush()?;
            }
            file.sync_all()
        })
        .unwrap();
    }
    let after = util::daemon_stats(m.path());
    // The stats read itself is one; the create may ask once or twice.
    let asked = after["req_getxattr"] - before["req_getxattr"];
    assert!(
        asked <= 5,
        "500 writes asked the daemon for {asked} xattrs (before: {before:?}, after: {after:?})"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), 500 * 4096);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    fs::remove_file(&path).unwrap();
}

/// Reads `path` under a timeout (a stuck mount fails the test, never hangs it).
fn read_in_time(path: PathBuf) -> std::io::Result<Vec<u8>> {
    with_timeout(30, move || fs::read(path))
}

/// A layer renamed into `blobs/sha256/` is indexed in the background, and an
/// `index.json` naming it commits its tag without waiting for that: the indexer
/// checks the layer against the config's diff_id afterwards (README, "What a tag
/// written through a layout guarantees"). With the indexers paused at a failpoint,
/// skopeo's copies finish and their tags are there; once the indexers go on, the
/// good image's layers keep their indexes and read, and the layer whose config lies
/// about its diff_id becomes bad: EIO under rootfs/, named by fsck, logged.
#[test]
fn a_layout_tag_commits_before_its_layers_diff_ids_are_checked() {
    if !can_run(&["skopeo"]) {
        return;
    }
    let t = TestDir::new("layout-deferred");
    let src = source_layout(&t, "src", &["app"], 50_000);
    let honest = || {
        ImageBuilder::new()
            .config("linux", "amd64", None)
            .layer(
                &LayerSpec::parse(r#"dir /etc 0755 ; file /etc/lie 0644 "x""#).unwrap(),
                Compression::Gzip,
            )
            .build()
            .unwrap()
    };
    let lying = honest()
        .corrupt(sample::Corruption::WrongDiffId { layer: 0 })
        .unwrap();
    let fixed = honest();
    assert_eq!(lying.layers[0].blob.digest, fixed.layers[0].blob.digest);
    let bad_src = t.join("bad-src");
    sample::write_oci_layout(
        &bad_src,
        &[
            (Some("bad"), &Built::from(lying)),
            (Some("fixed"), &Built::from(fixed)),
        ],
    )
    .unwrap();
    let gate = t.join("gate");
    let failpoint = format!("layout.prepare:pause:{}", gate.display());
    let m = Mount::start_with_env(
        &t.store(),
        &t.join("mnt"),
        &[],
        &[("IMAGEFS_FAILPOINT", &failpoint)],
    );
    fs::create_dir_all(m.join("dev/app")).unwrap();
    fs::create_dir_all(m.join("dev/bad")).unwrap();
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&src, "app"), &oci(&m.join("dev/app"), "1")],
    );
    run_ok(
        t.path(),
        "skopeo",
        &["copy", &oci(&bad_src, "bad"), &oci(&m.join("dev/bad"), "1")],
    );
    assert!(
        Path::new(&format!("{}.reached", gate.display())).exists(),
        "the copies should have met a paused indexer"
    );
    assert_eq!(
        tag_target(&m, "dev/app", "1"),
        Some(inspect_digest(t.path(), &oci(&src, "app")))
    );
    assert!(tag_target(&m, "dev/bad", "1").is_some());
    fs::write(&gate, b"go").unwrap();

    // The lying layer turns bad within a bounded time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let out = t
            .imagefs()
            .args(["fsck", "--json"])
            .timeout_secs(60)
            .output();
        let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("fsck --json");
        if report["bad"].as_array().is_some_and(|bad| !bad.is_empty()) {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never marked bad: {report}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(report["bad"].as_array().unwrap().len(), 1, "{report}");
    for field in ["missing", "corrupt", "bad_counts", "dangling"] {
        assert_eq!(
            report[field],
            serde_json::json!([]),
            "fsck {field}: {report}"
        );
    }
    let error = read_in_time(m.join("dev/bad/tags/1/rootfs/etc/lie"))
        .expect_err("a bad layer must not be read");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    let log = util::daemon_log(&t.store());
    assert!(
        log.lines()
            .any(|l| l.contains("is bad") && l.contains("diff_id")),
        "{log}"
    );

    // The good image: its layers' indexes were kept by the indexer, and it reads.
    let manifest = tag_target(&m, "dev/app", "1").unwrap();
    let hex = manifest.trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(t.store().join(format!("blobs/sha256/{hex}"))).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let idx = t
            .store()
            .join(format!("cache/layers/{hex}/index/{hex}.idx"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !idx.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never kept",
                idx.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        read_in_time(m.join("dev/app/tags/1/rootfs/etc/os-release")).unwrap(),
        b"NAME=layout-test"
    );
    // Untagged, the bad image leaves a clean store; the same layer under an honest
    // config is copied in again (the lookup of its blob says ENOENT) and reads.
    fs::remove_file(m.join("dev/bad/tags/1")).unwrap();
    fsck(&t, false);
    run_ok(
        t.path(),
        "skopeo",
        &[
            "copy",
            &oci(&bad_src, "fixed"),
            &oci(&m.join("dev/bad"), "2"),
        ],
    );
    assert_eq!(
        read_in_time(m.join("dev/bad/tags/2/rootfs/etc/lie")).unwrap(),
        b"x"
    );
    fsck(&t, false);
}
