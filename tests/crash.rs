//! Crash consistency: for every named failpoint in the store, the process aborts
//! there (as `kill -9` would), and afterwards `fsck` finds nothing referenced
//! missing or corrupt; `fsck --repair` leaves the store clean.

mod util;

use imagefs::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
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
