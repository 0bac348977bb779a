//! Crash consistency: for every named failpoint in the store, the process aborts
//! there (as `kill -9` would), and afterwards `fsck` finds nothing referenced
//! missing or corrupt; `fsck --repair` leaves the store clean.

mod util;

use imagefs::testing::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
use util::TestDir;

fn layout(t: &TestDir, dir: &str, names: &[&str]) -> std::path::PathBuf {
    util::layout_sharing_a_base(t, dir, names, "file /base 0644 @random:50000", 64)
}

fn fsck(t: &TestDir, repair: bool) -> serde_json::Value {
    let mut args = vec!["fsck", "--json"];
    if repair {
        args.push("--repair");
    }
    let out = t.run(&args);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck output is not JSON ({e}): {out:?}"))
}

fn assert_nothing_referenced_lost(report: &serde_json::Value, context: &str) {
    for key in ["missing", "corrupt", "dangling"] {
        assert_eq!(
            report[key],
            serde_json::json!([]),
            "{context}: {key}: {report}"
        );
    }
}

/// Runs `args` with the failpoint armed; it must die there.
fn crash_at(t: &TestDir, failpoint: &str, args: &[&str]) {
    let out = t
        .imagefs()
        .args(args)
        .env("IMAGEFS_FAILPOINT", failpoint)
        .output();
    assert_ne!(out.code, Some(0), "{failpoint}: did not abort: {out:?}");
    assert!(
        out.stderr.contains(&format!("failpoint {failpoint}")),
        "{failpoint}: not reached: {}",
        out.stderr
    );
}

#[test]
fn every_failpoint_leaves_a_consistent_store() {
    // (failpoint, setup commands, the command that crashes)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("import.before_commit", &[], &["import", "LAYOUT"]),
        (
            "tag.before_commit",
            &["import LAYOUT"],
            &["tag", "local/dev/a:1", "prod/a:1"],
        ),
        (
            "rm.before_commit",
            &["import LAYOUT"],
            &["rm", "local/dev/a:1"],
        ),
        (
            "delete.before_unlink",
            &["import LAYOUT"],
            &["rm", "local/dev/a:1"],
        ),
        (
            "gc.before_unlink",
            &["import LAYOUT", "rm local/dev/b:1"],
            &["gc"],
        ),
    ];
    for (failpoint, setup, crashing) in cases {
        let t = TestDir::new("crash");
        let layout = layout(&t, "layout", &["dev/a:1", "dev/b:1"]);
        let layout = layout.to_str().unwrap();
        let subst = |arg: &str| arg.replace("LAYOUT", layout);
        for command in setup.iter() {
            let args: Vec<String> = command.split(' ').map(subst).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            t.run(&args).assert_ok();
        }
        if *failpoint == "gc.before_unlink" {
            // Leave something for gc to do: an aborted import's leftovers.
            let _ = t
                .imagefs()
                .args(["import", layout])
                .env("IMAGEFS_FAILPOINT", "import.before_commit")
                .output();
            t.run(&["rm", "local/dev/a:1"]).assert_ok();
        }
        let args: Vec<String> = crashing.iter().map(|a| subst(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crash_at(&t, failpoint, &args);
        let report = fsck(&t, false);
        assert_nothing_referenced_lost(&report, failpoint);
        let repaired = fsck(&t, true);
        assert_nothing_referenced_lost(&repaired, failpoint);
        let after = fsck(&t, false);
        assert_nothing_referenced_lost(&after, failpoint);
        assert_eq!(
            after["leftovers"],
            serde_json::json!([]),
            "{failpoint}: {after}"
        );
        assert_eq!(
            after["bad_counts"],
            serde_json::json!([]),
            "{failpoint}: {after}"
        );
        // The store still works: import and export.
        t.run(&["import", layout]).assert_ok();
        t.run(&["export", "local/dev/a:1", t.join("out").to_str().unwrap()])
            .assert_ok();
    }
}

/// The digest and store path of an image's base layer blob.
fn base_layer_blob(t: &TestDir, reference: &str) -> (String, std::path::PathBuf) {
    let inspect: serde_json::Value =
        serde_json::from_str(&t.run(&["inspect", "--json", reference]).assert_ok().stdout).unwrap();
    let layer = inspect["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = t
        .store()
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    (layer, path)
}

/// Replaces a (read-only) blob file's bytes, as disk corruption would.
fn overwrite_blob(path: &std::path::Path, bytes: &[u8]) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_is_named_by_fsck() {
    let t = TestDir::new("flip");
    let layout = layout(&t, "layout", &["dev/a:1"]);
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    let (layer, path) = base_layer_blob(&t, "local/dev/a:1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    overwrite_blob(&path, &bytes);
    let out = t.run(&["fsck"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains(&layer), "{}", out.stdout);
    // Export re-verifies and refuses the corrupt blob.
    t.run(&["export", "local/dev/a:1", t.join("out").to_str().unwrap()])
        .assert_err_line("imagefs: export");
}

#[test]
fn a_corrupt_layer_blob_gives_eio_in_rootfs_not_wrong_bytes() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("corrupt-eio");
    let content = "A".repeat(20_000);
    let spec = LayerSpec::parse(&format!("file /data.txt 0644 \"{content}\"")).unwrap();
    // An uncompressed layer: a flipped byte inside the file's data still parses,
    // so only the diff_id check can notice it.
    let image = ImageBuilder::new()
        .layer(&spec, Compression::None)
        .build()
        .unwrap();
    let layout = t.join("layout");
    sample::write_oci_layout(&layout, &[(Some("dev/c:1"), &Built::from(image))]).unwrap();
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    let (_, path) = base_layer_blob(&t, "local/dev/c:1");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(100)
        .position(|w| w == &content.as_bytes()[..100])
        .unwrap()
        + 50;
    bytes[at] = b'B';
    overwrite_blob(&path, &bytes);

    let mount = t.mount(&[]);
    let file = mount.join("local/dev/c/tags/1/rootfs/data.txt");
    let result = util::with_timeout(30, move || std::fs::read(file));
    let err = result.expect_err("a corrupt layer must not be served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

/// Store path of blob `digest` (`sha256:<hex>`).
fn blob_path(t: &TestDir, digest: &str) -> std::path::PathBuf {
    t.store()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Flips one byte of a stored blob in place (same inode, as a bad write would).
fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    overwrite_blob(path, &bytes);
}

/// Reads a file through the mount with a timeout; the errno on failure.
fn read_through(path: std::path::PathBuf) -> Result<Vec<u8>, i32> {
    util::with_timeout(60, move || std::fs::read(path)).map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn a_flipped_byte_in_any_blob_gives_eio_through_the_mount() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("flip-mount");
    let layout = layout(&t, "layout", &["dev/a:1", "dev/b:1", "dev/c:1"]);
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();
    let inspect = |reference: &str| -> serde_json::Value {
        serde_json::from_str(&t.run(&["inspect", "--json", reference]).assert_ok().stdout).unwrap()
    };
    let a = inspect("local/dev/a:1");
    let b = inspect("local/dev/b:1");
    let c = inspect("local/dev/c:1");
    let mount = t.mount(&[]);
    let tag = |name: &str| mount.join(format!("local/dev/{name}/tags/1"));

    // Everything reads once while intact (this also fills the verified-blob memo).
    for name in ["a", "b", "c"] {
        for file in [
            "manifest.json",
            "config.json",
            "layers/000/blob",
            "layers/001/blob",
        ] {
            read_through(tag(name).join(file))
                .unwrap_or_else(|e| panic!("{name}/{file}: errno {e} while intact"));
        }
    }
    let top_layer = a["layers"][1]["digest"].as_str().unwrap();
    let layer_bytes = read_through(tag("a").join("layers/001/blob")).unwrap();

    // A layer blob damaged after it was verified: the memo notices the change.
    flip_byte(&blob_path(&t, top_layer), 10);
    assert_eq!(
        read_through(tag("a").join("layers/001/blob")),
        Err(libc::EIO),
        "a damaged layer blob must not be served"
    );
    // Config and manifest of other images.
    flip_byte(&blob_path(&t, b["config"]["digest"].as_str().unwrap()), 5);
    assert_eq!(read_through(tag("b").join("config.json")), Err(libc::EIO));
    flip_byte(&blob_path(&t, c["digest"].as_str().unwrap()), 5);
    assert_eq!(read_through(tag("c").join("manifest.json")), Err(libc::EIO));

    // The shared base layer and the other blobs still read, on this mount and a new one.
    let base = a["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(b["layers"][0]["digest"].as_str().unwrap(), base);
    read_through(tag("b").join("layers/000/blob")).expect("intact shared layer");
    read_through(tag("a").join("manifest.json")).expect("intact manifest");
    drop(mount);
    let mount = t.mount(&[]);
    let fresh = |name: &str, file: &str| {
        read_through(mount.join(format!("local/dev/{name}/tags/1/{file}")))
    };
    assert_eq!(fresh("a", "layers/001/blob"), Err(libc::EIO));
    assert_eq!(fresh("b", "config.json"), Err(libc::EIO));
    assert_eq!(fresh("c", "manifest.json"), Err(libc::EIO));
    // The tree itself comes from metadata checked at import: still listed.
    let listing = util::with_timeout(30, {
        let dir = mount.join("local/dev/c/tags/1/");
        move || std::fs::read_dir(dir).map(|d| d.count())
    });
    assert!(listing.is_ok_and(|n| n > 0));
    fresh("b", "layers/000/blob").expect("intact shared layer on a fresh mount");

    // fsck names all three; restoring the bytes makes them read again.
    let report = fsck(&t, false);
    let corrupt = report["corrupt"].to_string();
    for digest in [
        top_layer,
        b["config"]["digest"].as_str().unwrap(),
        c["digest"].as_str().unwrap(),
    ] {
        assert!(corrupt.contains(digest), "fsck misses {digest}: {report}");
    }
    overwrite_blob(&blob_path(&t, top_layer), &layer_bytes);
    assert_eq!(fresh("a", "layers/001/blob").unwrap(), layer_bytes);
}

/// Every unpacked content file of the store's cache.
fn cached_content_files(t: &TestDir) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![t.store().join("cache/layers")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else if path
                .parent()
                .and_then(|p| p.parent())
                .is_some_and(|p| p.ends_with("content"))
            {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn a_damaged_unpacked_file_is_named_by_fsck_and_never_served() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("cache-flip");
    let spec =
        LayerSpec::parse("file /small.txt 0644 @text:1100 ; file /big.bin 0644 @random:3000000")
            .unwrap();
    let image = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .build()
        .unwrap();
    let layout = t.join("layout");
    sample::write_oci_layout(&layout, &[(Some("dev/d:1"), &Built::from(image))]).unwrap();
    t.run(&["import", layout.to_str().unwrap()]).assert_ok();

    let mount = t.mount(&[]);
    let rootfs = mount.join("local/dev/d/tags/1/rootfs");
    let big = read_through(rootfs.join("big.bin")).expect("big.bin");
    let small = read_through(rootfs.join("small.txt")).expect("small.txt");
    assert_eq!((big.len(), small.len()), (3_000_000, 1100));
    drop(mount);

    // Damage both unpacked files (the small one is served from the daemon, the big
    // one through passthrough).
    let files = cached_content_files(&t);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        flip_byte(file, 7);
    }
    let report = fsck(&t, false);
    assert_eq!(
        report["cache_damaged"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    t.run(&["fsck"]).assert_err_line("imagefs: fsck");

    // A mount notices on open, rebuilds the layer's contents from the (intact) blob
    // and serves the right bytes.
    let mount = t.mount(&[]);
    let rootfs = mount.join("local/dev/d/tags/1/rootfs");
    assert!(
        read_through(rootfs.join("small.txt")).unwrap() == small,
        "small.txt differs"
    );
    assert!(
        read_through(rootfs.join("big.bin")).unwrap() == big,
        "big.bin differs"
    );
    drop(mount);
    let healed = fsck(&t, false);
    assert_eq!(healed["cache_damaged"], serde_json::json!([]), "{healed}");
    assert!(healed["cache_files_checked"].as_u64().unwrap() >= 2);

    // fsck --repair drops damaged contents itself.
    for file in cached_content_files(&t) {
        flip_byte(&file, 9);
    }
    let repaired = fsck(&t, true);
    assert!(
        repaired["repaired"]
            .to_string()
            .contains("unpacked contents dropped"),
        "{repaired}"
    );
    t.run(&["fsck"]).assert_ok();
    assert!(cached_content_files(&t).is_empty());
}
