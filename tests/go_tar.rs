//! Layers that Go's `archive/tar` accepts must import (issue 14, part 1). umoci, which
//! reads layers with Go's reader, is the oracle: a layer `umoci unpack` accepts is
//! imported and its `rootfs/` equals umoci's tree; one it refuses is refused.
//!
//! - A real fixture: `umoci insert` (Debian 12's umoci 0.4.7 ends such a layer right
//!   after the file's data, with no padding and no end-of-archive blocks), and a
//!   `umoci repack` where a directory became a file (whiteouts below the new file,
//!   which import applies without a warning).
//! - Synthetic endings, each added verbatim with `umoci raw add-layer`.
//!
//! Needs umoci, root and /dev/fuse: skipped with a note otherwise, failed when
//! `CI=true`. Every mount is guarded; every command has a timeout.

mod util;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use util::{Cmd, Output, TestDir};

/// Runs a shell script in `dir` (60 s at most).
fn sh(dir: &Path, script: &str) -> Output {
    Cmd::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .timeout_secs(60)
        .output()
}

/// `path|type|mode|uid|gid|size|link|nlink` of everything below `dir`, sorted;
/// directory sizes left out (they differ between filesystems by design).
fn listing(dir: &Path) -> Vec<String> {
    let out = sh(
        dir,
        "find . -mindepth 1 -printf '%P|%y|%m|%U|%G|%s|%l|%n\\n'",
    )
    .assert_ok();
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split('|').collect();
            if fields.get(1) == Some(&"d") {
                fields[5] = "-";
            }
            fields.join("|")
        })
        .collect();
    lines.sort();
    lines
}

/// sha256 of every regular file below `dir`, by path.
fn hashes(dir: &Path) -> String {
    sh(
        dir,
        "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum",
    )
    .assert_ok()
    .stdout
}

fn can_run() -> bool {
    util::require_fuse() && util::require_tool("umoci")
}

/// Asserts that `rootfs/` of `repo:tag` in the mount equals `umoci unpack` of
/// `layout:tag`.
fn assert_rootfs_equals_umoci(m: &util::Mount, work: &Path, layout: &str, repo: &str, tag: &str) {
    let reference = format!("ref-{tag}");
    sh(
        work,
        &format!("umoci unpack --image {layout}:{tag} {reference} >/dev/null"),
    )
    .assert_ok();
    let theirs = work.join(&reference).join("rootfs");
    let ours = m.join(format!("{repo}/tags/{tag}/rootfs"));
    assert_eq!(listing(&ours), listing(&theirs), "{tag}: find listings");
    assert_eq!(hashes(&ours), hashes(&theirs), "{tag}: file contents");
}

/// The uncompressed layers of `layout:tag`, read from the layout's blobs.
fn layers_of(layout: &Path, tag: &str) -> Vec<Vec<u8>> {
    let json = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).expect("blob"))
            .expect("json blob")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let manifest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index.json");
    let manifest = json(manifest["digest"].as_str().expect("digest"));
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| {
            let hex = layer["digest"].as_str().expect("digest");
            let hex = hex.strip_prefix("sha256:").expect("sha256");
            let blob = fs::File::open(layout.join("blobs/sha256").join(hex)).expect("layer");
            let mut tar = Vec::new();
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut tar)
                .expect("gzip layer");
            tar
        })
        .collect()
}

/// Regression (issue 14): a layer written by Debian 12's `umoci insert` ends right
/// after the file's data, and import refused it ("layer tar is truncated at byte
/// 577: padding"). A `repack` where a directory became a file writes whiteouts
/// below the new file, and each printed a warning.
#[test]
fn umoci_insert_and_repack_layers_import_silently_and_equal_unpack() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("go-tar-insert");
    let work = t.path().to_path_buf();
    sh(
        &work,
        r#"set -e
        umoci init --layout L
        umoci new --image L:v1
        echo hello > f.txt
        mkdir -p tree/sub
        echo one > tree/sub/x
        head -c 1000 /dev/urandom > tree/bin; chmod 0755 tree/bin
        umoci insert --image L:v1 f.txt /etc/f.txt
        umoci insert --image L:v1 tree /opt/tree
        umoci unpack --image L:v1 b >/dev/null
        r=b/rootfs
        mkdir -p $r/usr/lib/foo/sub
        echo 1 > $r/usr/lib/foo/bar; echo 2 > $r/usr/lib/foo/sub/baz
        umoci repack --refresh-bundle --image L:v2 b
        rm -r $r/usr/lib/foo
        echo file > $r/usr/lib/foo
        umoci repack --image L:v3 b
        "#,
    )
    .assert_ok();
    let layout = work.join("L");
    // The fixture is what the issue describes: v1's layers end without padding and
    // without end-of-archive blocks; v3's last layer has whiteouts below a file.
    let inserted = layers_of(&layout, "v1");
    assert_eq!(inserted.len(), 2);
    assert!(
        !inserted[0].len().is_multiple_of(512),
        "umoci insert wrote a padded layer ({} bytes): this umoci does not reproduce \
         issue 14",
        inserted[0].len()
    );
    let repacked = layers_of(&layout, "v3");
    let mut names = Vec::new();
    tar::Archive::new(&repacked.last().expect("a layer")[..])
        .entries()
        .expect("tar")
        .for_each(|e| {
            let entry = e.expect("entry");
            names.push(entry.path().expect("path").display().to_string());
        });
    assert!(
        names.iter().any(|n| n == "usr/lib/foo")
            && names.iter().any(|n| n == "usr/lib/foo/.wh.bar"),
        "{names:?}"
    );

    for tag in ["v1", "v2", "v3"] {
        let out = t
            .imagefs()
            .arg("import")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(format!("dev/insert:{tag}"))
            .timeout_secs(60)
            .output()
            .assert_ok();
        assert!(
            !out.stderr.contains("warning"),
            "{tag}: a good image imports without warnings:\n{}",
            out.stderr
        );
    }
    let m = t.mount(&[]);
    for tag in ["v1", "v2", "v3"] {
        assert_rootfs_equals_umoci(&m, &work, "L", "dev/insert", tag);
    }
    assert_eq!(
        fs::read_to_string(m.join("dev/insert/tags/v3/rootfs/usr/lib/foo")).expect("foo"),
        "file\n"
    );
}

/// One 512-byte ustar header for a regular file (or an `x` PAX header).
fn header(name: &str, size: usize, typeflag: u8) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::new(typeflag));
    header.set_mode(0o644);
    header.set_mtime(1_000_000);
    header.set_size(size as u64);
    header.set_cksum();
    header.as_bytes().to_vec()
}

fn padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(512) * 512, 0);
    data
}

/// Each way a layer's tar may end: the same layer goes to `umoci unpack` and to
/// `imagefs import`; both accept it or both refuse it, and an accepted one gives
/// umoci's tree. The bytes are those of `src/layer/tests.rs`
/// `tar_endings_as_go_reads_them`.
#[test]
fn tar_endings_are_accepted_exactly_where_umoci_accepts_them() {
    if !can_run() {
        return;
    }
    // a: header 0, data 512..517; b: header 1024, data 1536..1546, padding to 2048;
    // end-of-archive blocks 2048..3072.
    let mut full = Vec::new();
    full.extend(header("a", 5, b'0'));
    full.extend(padded(b"hello".to_vec()));
    full.extend(header("b", 10, b'0'));
    full.extend(padded(b"0123456789".to_vec()));
    full.extend([0u8; 1024]);
    // a, then c's PAX header at 1024 (records 1536..1547, padding to 2048), c at 2048.
    let records = b"11 mtime=5\n".to_vec();
    let mut pax = full[..1024].to_vec();
    pax.extend(header("PaxHeaders/c", records.len(), b'x'));
    pax.extend(padded(records));
    pax.extend(header("c", 0, b'0'));
    pax.extend([0u8; 1024]);
    let junk = [&full[..], b"junk"].concat();
    let not_zero = [&full[..2560], &full[..512]].concat();
    // (what, bytes, umoci and Go accept it)
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("empty stream", &[], true),
        (
            "no padding, no end blocks (umoci insert)",
            &full[..1546],
            true,
        ),
        ("part of the padding", &full[..1600], true),
        ("padding, no end blocks", &full[..2048], true),
        ("one end block", &full[..2560], true),
        ("two end blocks", &full[..], true),
        ("junk after two end blocks", &junk, true),
        ("cut inside the second end block", &full[..2660], false),
        ("an end block, then a header", &not_zero, false),
        ("cut inside a header", &full[..1124], false),
        ("cut inside data", &full[..1541], false),
        ("cut right after an extension header", &pax[..2048], true),
        ("cut in an extension header's padding", &pax[..1547], true),
        ("cut inside an extension header's data", &pax[..1540], false),
        ("cut inside an extension header", &pax[..1100], false),
        (
            "cut inside the header after an extension",
            &pax[..2100],
            false,
        ),
    ];
    let t = TestDir::new("go-tar-endings");
    let work = t.path().to_path_buf();
    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    for (number, (what, bytes, go_accepts)) in cases.iter().enumerate() {
        let tag = format!("c{number:02}");
        let dir = t.mkdir(&tag);
        fs::write(dir.join("layer.tar"), bytes).expect("write layer");
        sh(
            &dir,
            "set -e; umoci init --layout L; umoci new --image L:t; \
             umoci raw add-layer --image L:t layer.tar",
        )
        .assert_ok();
        let umoci = sh(&dir, "umoci unpack --image L:t ref >/dev/null");
        let umoci_accepts = umoci.code == Some(0);
        if umoci_accepts != *go_accepts {
            failures.push(format!(
                "{what}: umoci {} it, the table says otherwise: {}",
                if umoci_accepts { "accepts" } else { "refuses" },
                umoci.stderr.trim()
            ));
        }
        let ours = t
            .imagefs()
            .arg("import")
            .arg(format!("{}:t", dir.join("L").display()))
            .arg(format!("dev/end:{tag}"))
            .timeout_secs(60)
            .output();
        let we_accept = ours.code == Some(0);
        if we_accept != umoci_accepts {
            failures.push(format!(
                "{what}: umoci {}, imagefs {}: {}",
                if umoci_accepts { "accepts" } else { "refuses" },
                if we_accept { "accepts" } else { "refuses" },
                ours.stderr.trim()
            ));
        } else if !we_accept && !ours.stderr.contains("layer tar") {
            failures.push(format!("{what}: refused, but why? {}", ours.stderr.trim()));
        } else if we_accept {
            if ours.stderr.contains("warning") {
                failures.push(format!("{what}: warnings: {}", ours.stderr.trim()));
            }
            accepted.push(tag);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let m = t.mount(&[]);
    for tag in &accepted {
        let dir: PathBuf = work.join(tag);
        let theirs = dir.join("ref/rootfs");
        let ours = m.join(format!("dev/end/tags/{tag}/rootfs"));
        assert_eq!(listing(&ours), listing(&theirs), "{tag}: find listings");
        assert_eq!(hashes(&ours), hashes(&theirs), "{tag}: file contents");
    }
}
