//! Comparison with the reference: images built and unpacked by `umoci`, their layers
//! merged by us, and both root filesystems listed side by side (path, type, mode,
//! uid, gid, size, link target, content hash, link count, mtime of non-directories).
//!
//! Needs `umoci` on PATH; without it these tests skip with a note, except under
//! `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::test_util::tar;
use super::*;
use crate::digest::Digest;

fn umoci_available() -> bool {
    let found = Command::new("umoci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "umoci is required when CI=true"
        );
        eprintln!("note: umoci not installed; comparison with umoci skipped");
    }
    found
}

fn umoci(args: &[&str], dir: &Path) {
    let output = Command::new("umoci")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run umoci");
    assert!(
        output.status.success(),
        "umoci {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read json")).expect("parse json")
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// Indexes (and unpacks into `cache`) every layer of `layout:tag`, checks the
/// DiffIds, and lists the merged tree.
fn our_listing(layout: &Path, tag: &str, cache: &CacheDir) -> String {
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index.json")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let manifest = read_json(&blob_path(layout, &manifest_digest));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let mut indexes = Vec::new();
    for (layer, diff_id) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(diff_ids)
    {
        let blob = fs::File::open(blob_path(layout, layer["digest"].as_str().expect("digest")))
            .expect("blob");
        let media_type = layer["mediaType"].as_str().expect("media type");
        let compression = if media_type.ends_with("+gzip") {
            LayerCompression::Gzip
        } else if media_type.ends_with("+zstd") {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        };
        let stream = open_layer_stream(blob, compression).expect("open layer");
        let index = unpack_layer(stream, cache).expect("index layer");
        assert_eq!(
            index.diff_id.to_string(),
            diff_id.as_str().expect("diff_id"),
            "DiffId"
        );
        indexes.push(index);
    }
    let refs: Vec<&LayerIndex> = indexes.iter().collect();
    let merged = merge_layers(&refs);
    let tree = &merged.tree;
    let mut lines = BTreeMap::new();
    for (path, id) in tree.walk() {
        if path.is_empty() {
            continue;
        }
        let node = tree.node(id);
        let (kind, detail) = match node.kind {
            NodeKind::Dir => ("d", String::new()),
            NodeKind::File => {
                let loc = node.content.expect("file content");
                let entry = &indexes[loc.layer as usize].entries[loc.entry as usize];
                let Content::Cached { path, .. } = open_content(cache, entry).expect("content")
                else {
                    panic!("layer not unpacked");
                };
                let hash = Digest::of(&fs::read(path).expect("read content")).short(16);
                (
                    "f",
                    format!(" size={} nlink={} sha={hash}", node.size, node.nlink),
                )
            }
            NodeKind::Symlink => (
                "l",
                format!(
                    " -> {}",
                    String::from_utf8_lossy(node.symlink_target.as_deref().unwrap_or_default())
                ),
            ),
            NodeKind::Fifo => ("p", String::new()),
            NodeKind::CharDevice => ("c", format!(" dev={}:{}", node.rdev_major, node.rdev_minor)),
            NodeKind::BlockDevice => ("b", format!(" dev={}:{}", node.rdev_major, node.rdev_minor)),
        };
        let mtime = if node.kind == NodeKind::Dir {
            String::new()
        } else {
            format!(" mtime={}", node.mtime)
        };
        lines.insert(
            String::from_utf8_lossy(&path).into_owned(),
            format!(
                "{kind} {:o} {}:{}{detail}{mtime}",
                node.mode, node.uid, node.gid
            ),
        );
    }
    render(&lines)
}

/// Lists a real directory the same way.
fn disk_listing(root: &Path) -> String {
    let mut lines = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let file_type = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, detail) = if file_type.is_dir() {
                pending.push(path.clone());
                ("d", String::new())
            } else if file_type.is_file() {
                let hash = Digest::of(&fs::read(&path).expect("read")).short(16);
                (
                    "f",
                    format!(" size={} nlink={} sha={hash}", meta.len(), meta.nlink()),
                )
            } else if file_type.is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                ("l", format!(" -> {}", target.display()))
            } else if file_type.is_fifo() {
                ("p", String::new())
            } else {
                let dev = meta.rdev();
                let kind = if file_type.is_char_device() { "c" } else { "b" };
                (
                    kind,
                    format!(" dev={}:{}", libc::major(dev), libc::minor(dev)),
                )
            };
            let mtime = if kind == "d" {
                String::new()
            } else {
                format!(" mtime={}", meta.mtime())
            };
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            lines.insert(
                relative,
                format!(
                    "{kind} {:o} {}:{}{detail}{mtime}",
                    meta.permissions().mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    render(&lines)
}

fn render(lines: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (path, line) in lines {
        writeln!(out, "{path} {line}").expect("string");
    }
    out
}

fn assert_same(ours: &str, theirs: &str) {
    if ours != theirs {
        let mut diff = String::new();
        let ours_lines: Vec<&str> = ours.lines().collect();
        let theirs_lines: Vec<&str> = theirs.lines().collect();
        for line in &theirs_lines {
            if !ours_lines.contains(line) {
                writeln!(diff, "umoci only: {line}").expect("string");
            }
        }
        for line in &ours_lines {
            if !theirs_lines.contains(line) {
                writeln!(diff, "ours only:  {line}").expect("string");
            }
        }
        panic!("merged tree differs from umoci unpack:\n{diff}");
    }
}

#[test]
fn umoci_repack_whiteouts_match_unpack() {
    if !umoci_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    umoci(&["init", "--layout", "img"], dir);
    umoci(&["new", "--image", "img:v1"], dir);
    umoci(&["unpack", "--image", "img:v1", "bundle"], dir);
    let rootfs = dir.join("bundle/rootfs");
    let write = |path: &str, data: &str| {
        let path = rootfs.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
    };
    write("etc/os-release", "NAME=test\n");
    write("etc/gone", "bye");
    write("usr/lib/a.so", "lib-a");
    write("usr/lib/sub/b.so", "lib-b");
    write("was-dir/x", "x");
    write("was-file", "file");
    write("bin/tool", "#!/bin/sh\n");
    fs::set_permissions(rootfs.join("bin/tool"), fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    fs::create_dir_all(rootfs.join("tmp")).expect("mkdir");
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::hard_link(rootfs.join("bin/tool"), rootfs.join("bin/tool-link")).expect("link");
    std::os::unix::fs::symlink("../usr/lib/a.so", rootfs.join("etc/alink")).expect("symlink");
    std::os::unix::fs::chown(rootfs.join("etc/os-release"), Some(1000), Some(100)).expect("chown");
    umoci(&["repack", "--image", "img:v1", "bundle"], dir);

    // Second layer: deletions (whiteouts), type changes, mode change, new files.
    fs::remove_file(rootfs.join("etc/gone")).expect("rm");
    fs::remove_dir_all(rootfs.join("usr/lib/sub")).expect("rm -r");
    fs::remove_dir_all(rootfs.join("was-dir")).expect("rm -r");
    fs::write(rootfs.join("was-dir"), "now a file").expect("write");
    fs::remove_file(rootfs.join("was-file")).expect("rm");
    fs::create_dir(rootfs.join("was-file")).expect("mkdir");
    fs::write(rootfs.join("was-file/inside"), "in").expect("write");
    fs::set_permissions(
        rootfs.join("etc/os-release"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    write("usr/lib/c.so", "lib-c");
    umoci(&["repack", "--image", "img:v2", "bundle"], dir);
    umoci(&["unpack", "--image", "img:v2", "reference"], dir);

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir::new(cache_dir.path()).expect("cache");
    let ours = our_listing(&dir.join("img"), "v2", &cache);
    let theirs = disk_listing(&dir.join("reference/rootfs"));
    assert!(theirs.contains("was-file/inside"), "{theirs}");
    assert!(!theirs.contains("etc/gone"), "{theirs}");
    assert_same(&ours, &theirs);
}

/// Hand-made layers (opaque markers, duplicates, hard links across layers, paths
/// through symlinks, implied parents) added verbatim with `umoci raw add-layer`.
const RAW_LAYERS: &[&str] = &[
    "d etc mode=755 mtime=100
     f etc/passwd data=root mtime=100
     d opt mode=750 mtime=100
     f opt/keep data=1 mtime=100
     d opt/sub mtime=100
     f opt/sub/old data=2 mtime=100
     d data mtime=100
     f data/lower data=3 mtime=100
     f shared data=shared mode=640 uid=5 gid=6 mtime=100
     d real mtime=100
     l link -> real mtime=100
     l abs -> /real mtime=100
     f dup data=first mtime=100
     f dup data=second! mtime=101
     f implied/a/b data=deep mtime=100
     p fifo mtime=100",
    "f opt/new data=4 mtime=200
     w opt/.wh..wh..opq mtime=200
     f opt/sub/newer data=5 mtime=200
     h hard -> shared mtime=200
     f link/through data=6 mtime=200
     f abs/through-abs data=7 mtime=200
     w .wh.data mtime=200
     d data mode=700 mtime=200
     f data/upper data=8 mtime=200
     w etc/.wh.passwd mtime=200
     f etc/passwd data=new-root mtime=200
     d dup mode=711 mtime=200
     f dup/in data=9 mtime=200",
    "w .wh.shared mtime=300
     f fifo data=now-a-file mtime=300
     w implied/.wh.a mtime=300",
];

#[test]
fn umoci_raw_layers_match_unpack() {
    if !umoci_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    umoci(&["init", "--layout", "img"], dir);
    umoci(&["new", "--image", "img:raw"], dir);
    for (i, description) in RAW_LAYERS.iter().enumerate() {
        let tar_path = dir.join(format!("layer{i}.tar"));
        fs::write(&tar_path, tar(description)).expect("write layer");
        umoci(
            &[
                "raw",
                "add-layer",
                "--image",
                "img:raw",
                tar_path.to_str().expect("utf-8"),
            ],
            dir,
        );
    }
    umoci(&["unpack", "--image", "img:raw", "reference"], dir);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir::new(cache_dir.path()).expect("cache");
    let ours = our_listing(&dir.join("img"), "raw", &cache);
    let theirs = disk_listing(&dir.join("reference/rootfs"));
    assert_same(&ours, &theirs);
}
