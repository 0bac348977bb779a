//! Images from strangers (SPEC section 5): crafted tars, archives and JSON that try
//! to escape the store, crash the indexer or exhaust memory. Each test states the
//! behaviour chosen: a refusal with one error line naming the file and the problem,
//! or an entry skipped with a warning (visible in the layer index or merged tree);
//! and checks that `fsck` is clean and nothing outside the store changed.
//!
//! Library-level checks use `imagefs::testing::layer` directly (warnings are recorded there);
//! import-level checks run the built binary. The mount is not exercised here.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use imagefs::testing::layer::{self, CacheDir, DiscardSink, LayerIndex, MergedTree};
use imagefs::testing::sample::{
    self, Built, BuiltImage, BuiltLayer, Compression, ImageBuilder, LayerSpec,
};
use imagefs::{DiffId, Digest};
use util::TestDir;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn spec_tar(description: &str) -> Vec<u8> {
    LayerSpec::parse(description)
        .expect("valid description")
        .to_tar()
        .expect("tar builds")
}

fn index_of(tar: &[u8]) -> LayerIndex {
    layer::index_layer(tar, &mut DiscardSink).expect("layer indexes")
}

fn warnings(index: &LayerIndex) -> Vec<(String, String)> {
    index
        .warnings
        .iter()
        .map(|w| {
            (
                String::from_utf8_lossy(&w.path).into_owned(),
                w.reason.clone(),
            )
        })
        .collect()
}

fn tree_warnings(merged: &MergedTree) -> Vec<(String, String)> {
    merged
        .warnings
        .iter()
        .map(|w| {
            (
                String::from_utf8_lossy(&w.path).into_owned(),
                w.reason.clone(),
            )
        })
        .collect()
}

/// Every path of a merged tree, `/`-separated, sorted.
fn paths(merged: &MergedTree) -> Vec<String> {
    let mut all: Vec<String> = merged
        .tree
        .walk()
        .into_iter()
        .map(|(path, _)| String::from_utf8_lossy(&path).into_owned())
        .filter(|p| !p.is_empty())
        .collect();
    all.sort();
    all
}

fn kind_at(merged: &MergedTree, path: &str) -> Option<layer::NodeKind> {
    let id = merged.tree.lookup_path(path.as_bytes())?;
    Some(merged.tree.node(id).kind)
}

/// A snapshot of everything in `dir` (recursively) except `skip`: paths, sizes and
/// contents of small files, so a change anywhere shows up as a diff.
fn snapshot(dir: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, (u64, Vec<u8>)> {
    fn visit(
        dir: &Path,
        skip: &[&Path],
        out: &mut BTreeMap<PathBuf, (u64, Vec<u8>)>,
    ) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let meta = fs::symlink_metadata(&path)?;
            let content = if meta.is_file() && meta.len() <= 4096 {
                fs::read(&path)?
            } else {
                Vec::new()
            };
            out.insert(path.clone(), (meta.len(), content));
            if meta.is_dir() {
                visit(&path, skip, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    visit(dir, skip, &mut out).expect("snapshot");
    out
}

/// A test directory with a canary next to the store, checking on `finish` that
/// nothing outside the store changed and that the store passes fsck.
struct Guarded {
    t: TestDir,
    before: BTreeMap<PathBuf, (u64, Vec<u8>)>,
    parent_before: Vec<PathBuf>,
}

const CANARY: &[u8] = b"canary: imagefs must never write here\n";

impl Guarded {
    fn new(name: &str) -> Guarded {
        let t = TestDir::new(name);
        t.write("canary", CANARY);
        let parent_before = list_dir(t.path().parent().expect("test dir has a parent"));
        Guarded {
            t,
            before: BTreeMap::new(),
            parent_before,
        }
    }

    /// Call after writing the inputs, before importing.
    fn arm(&mut self) {
        self.before = snapshot(self.t.path(), &[&self.t.store()]);
    }

    fn import(&self, source: &Path, reference: &str) -> util::Output {
        self.t
            .imagefs()
            .args(["import", source.to_str().expect("utf-8 path"), reference])
            .timeout_secs(300)
            .output()
    }

    /// fsck clean, canary intact, nothing new or changed outside the store, nothing
    /// new next to the test dir.
    fn finish(self) {
        let fsck = self.t.run(&["fsck", "--json"]).assert_ok();
        let report: serde_json::Value = serde_json::from_str(&fsck.stdout).expect("fsck JSON");
        for field in ["missing", "corrupt", "bad_counts", "dangling", "leftovers"] {
            assert_eq!(
                report[field],
                serde_json::json!([]),
                "fsck {field}: {report}"
            );
        }
        assert_eq!(fs::read(self.t.join("canary")).expect("canary"), CANARY);
        let after = snapshot(self.t.path(), &[&self.t.store()]);
        assert_eq!(self.before, after, "something outside the store changed");
        let parent_after = list_dir(self.t.path().parent().expect("parent"));
        let new: Vec<_> = parent_after
            .iter()
            .filter(|p| !self.parent_before.contains(p))
            .filter(|p| {
                // Other tests create their own dirs in parallel; only escapees matter.
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("escape"))
            })
            .collect();
        assert!(new.is_empty(), "new paths next to the test dir: {new:?}");
    }
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn image_of_tar(tar: Vec<u8>, compression: Compression) -> BuiltImage {
    ImageBuilder::new()
        .built_layer(BuiltLayer::from_tar(tar, compression).expect("layer"))
        .build()
        .expect("image")
}

fn write_layout(t: &TestDir, image: BuiltImage) -> PathBuf {
    let layout = t.join("layout");
    sample::write_oci_layout(&layout, &[(Some("hostile:1"), &Built::from(image))])
        .expect("layout written");
    layout
}

/// Imports a one-layer image made of `tar`, expecting success, and checks that the
/// store is clean and nothing outside it changed.
fn import_contained(name: &str, tar: Vec<u8>) {
    let mut g = Guarded::new(name);
    let layout = write_layout(&g.t, image_of_tar(tar, Compression::Gzip));
    g.arm();
    g.import(&layout, "test/hostile:1").assert_ok();
    g.finish();
}

/// Unpacks `tar` into a cache dir nested in a fresh test dir and checks that every
/// file written is inside the cache dir.
fn unpack_contained(name: &str, tar: &[u8]) -> LayerIndex {
    let t = TestDir::new(name);
    t.write("canary", CANARY);
    let cache_root = t.mkdir("a/b/cache");
    let cache = CacheDir::new(&cache_root).expect("cache dir");
    let index = layer::unpack_layer(tar, &cache).expect("layer unpacks");
    let outside = snapshot(t.path(), &[&cache_root]);
    let names: Vec<_> = outside.keys().collect();
    assert_eq!(
        names,
        vec![&t.join("a"), &t.join("a/b"), &t.join("canary")],
        "unpack wrote outside its cache dir"
    );
    assert_eq!(fs::read(t.join("canary")).expect("canary"), CANARY);
    index
}

/// Pads `data` to whole 512-byte blocks.
fn pad(mut data: Vec<u8>) -> Vec<u8> {
    let rem = data.len() % 512;
    if rem != 0 {
        data.resize(data.len() + 512 - rem, 0);
    }
    data
}

/// A raw ustar header block with a correct checksum.
fn header(name: &str, typeflag: u8, size_field: &[u8]) -> [u8; 512] {
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name.as_bytes());
    block[100..107].copy_from_slice(b"0000644");
    block[108..115].copy_from_slice(b"0000000");
    block[116..123].copy_from_slice(b"0000000");
    block[124..124 + size_field.len()].copy_from_slice(size_field);
    block[136..147].copy_from_slice(b"14540702200");
    block[156] = typeflag;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    set_checksum(&mut block);
    block
}

fn set_checksum(block: &mut [u8; 512]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn octal_size(size: u64) -> Vec<u8> {
    format!("{size:011o}").into_bytes()
}

/// One PAX record `LEN key=value\n`.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

fn end_of_archive() -> Vec<u8> {
    vec![0; 1024]
}

// ---------------------------------------------------------------------------
// Paths: `..`, absolute names, symlinks on the way
// ---------------------------------------------------------------------------

/// `..` anywhere in a name skips the entry with a warning (never cleaned into another
/// path); a leading `/` is stripped, as tar and umoci do, so `/abs` is `abs`.
#[test]
fn dotdot_names_are_skipped_and_absolute_names_made_relative() {
    let tar = spec_tar(
        "file ../../escape-dotdot 0644 \"x\" raw
         file a/../../escape-middle 0644 \"x\" raw
         file /abs-file 0644 \"y\" raw
         hardlink /abs-link ../../escape-target raw",
    );
    let index = index_of(&tar);
    let skipped = warnings(&index);
    assert_eq!(
        skipped,
        vec![
            (
                "../../escape-dotdot".into(),
                "entry skipped: path has a '..' component".into()
            ),
            (
                "a/../../escape-middle".into(),
                "entry skipped: path has a '..' component".into()
            ),
            (
                "/abs-link".into(),
                "entry skipped: hard link target: path has a '..' component".into()
            ),
        ]
    );
    assert_eq!(paths(&layer::merge_layers(&[&index])), vec!["abs-file"]);
    unpack_contained("dotdot-unpack", &tar);
    import_contained("dotdot-import", tar);
}

/// A symlink followed by an entry through it: the symlink is resolved inside the
/// tree (umoci's SecureJoin: absolute targets from the tree's root, `..` stops at the
/// root), so the entry lands inside the image, never outside it.
#[test]
fn entries_through_symlinks_stay_inside_the_tree() {
    let tar = spec_tar(
        "symlink /abs /etc
         file /abs/escape-abs 0644 \"a\"
         symlink /rel ../../../../../../tmp
         file /rel/escape-rel 0644 \"b\"
         dir /d 0755
         symlink /d/up ..
         file /d/up/up/escape-up 0644 \"c\"",
    );
    let index = index_of(&tar);
    assert!(warnings(&index).is_empty(), "{:?}", warnings(&index));
    let merged = layer::merge_layers(&[&index]);
    let all = paths(&merged);
    assert_eq!(kind_at(&merged, "abs"), Some(layer::NodeKind::Symlink));
    assert_eq!(kind_at(&merged, "rel"), Some(layer::NodeKind::Symlink));
    assert_eq!(
        kind_at(&merged, "etc/escape-abs"),
        Some(layer::NodeKind::File),
        "{all:?}"
    );
    assert_eq!(
        kind_at(&merged, "tmp/escape-rel"),
        Some(layer::NodeKind::File),
        "{all:?}"
    );
    // `d/up` is the root, and `up` under the root does not exist: it is implied.
    assert_eq!(
        kind_at(&merged, "up/escape-up"),
        Some(layer::NodeKind::File),
        "{all:?}"
    );
    // The per-layer view shows the entries as the tar has them, resolved the same way.
    let own = layer::layer_tree(&index, 0);
    assert_eq!(kind_at(&own, "etc/escape-abs"), Some(layer::NodeKind::File));
    assert!(!Path::new("/etc/escape-abs").exists());
    assert!(!Path::new("/tmp/escape-rel").exists());
    unpack_contained("symlink-unpack", &tar);
    import_contained("symlink-import", tar);
}

/// A symlink in a lower layer redirects an upper layer's entry, inside the tree.
#[test]
fn symlink_from_a_lower_layer_redirects_inside_the_tree() {
    let lower = index_of(&spec_tar("symlink /lib /escape-nowhere"));
    let upper = index_of(&spec_tar("file /lib/libc.so 0644 \"x\""));
    let merged = layer::merge_layers(&[&lower, &upper]);
    assert_eq!(kind_at(&merged, "lib"), Some(layer::NodeKind::Symlink));
    assert_eq!(
        kind_at(&merged, "escape-nowhere/libc.so"),
        Some(layer::NodeKind::File),
        "{:?}",
        paths(&merged)
    );
}

/// Hard links to a missing target, to an absolute path outside the image, to a
/// directory or to themselves are skipped with a warning; `..` targets were already
/// skipped by the indexer (previous test).
#[test]
fn hard_links_to_missing_or_outside_targets_are_skipped() {
    let tar = spec_tar(
        "file /real 0644 \"r\"
         hardlink /to-missing /nope
         hardlink /to-etc-passwd /etc/passwd
         dir /dir 0755
         hardlink /to-dir /dir
         hardlink /to-self /to-self
         hardlink /good /real",
    );
    let index = index_of(&tar);
    let merged = layer::merge_layers(&[&index]);
    let skipped: Vec<String> = tree_warnings(&merged).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        skipped,
        vec!["to-missing", "to-etc-passwd", "to-dir", "to-self"]
    );
    assert_eq!(paths(&merged), vec!["dir", "good", "real"]);
    let good = merged
        .tree
        .node(merged.tree.lookup_path(b"good").expect("good"));
    assert_eq!(good.nlink, 2);
    assert_eq!(tree_warnings(&layer::layer_tree(&index, 0)).len(), 4);
    unpack_contained("hardlink-unpack", &tar);
    import_contained("hardlink-import", tar);
}

// ---------------------------------------------------------------------------
// Whiteouts and duplicates
// ---------------------------------------------------------------------------

/// `.wh.`, `.wh..`, `.wh...` and `.wh..wh.<not opq>` are invalid markers: skipped
/// with a warning, deleting nothing. An opaque marker at the root is valid and hides
/// every lower entry, as umoci does.
#[test]
fn invalid_whiteouts_are_skipped_and_root_opaque_clears_lower_layers() {
    let lower = index_of(&spec_tar(
        "file /keep 0644 \"k\"; dir /dir 0755; file /dir/f 0644 \"f\"",
    ));
    let invalid = index_of(&spec_tar(
        "file /.wh. 0644 @empty raw
         file /.wh.. 0644 @empty raw
         file /.wh... 0644 @empty raw
         file /.wh..wh.foo 0644 @empty raw
         file /dir/.wh.. 0644 @empty raw",
    ));
    let merged = layer::merge_layers(&[&lower, &invalid]);
    assert_eq!(paths(&merged), vec!["dir", "dir/f", "keep"]);
    let skipped: Vec<String> = tree_warnings(&merged).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        skipped,
        vec![".wh.", ".wh..", ".wh...", ".wh..wh.foo", "dir/.wh.."]
    );

    let opaque_root = index_of(&spec_tar(
        "file /.wh..wh..opq 0644 @empty raw; file /new 0644 \"n\"",
    ));
    let merged = layer::merge_layers(&[&lower, &opaque_root]);
    assert_eq!(paths(&merged), vec!["new"]);
    assert!(tree_warnings(&merged).is_empty());

    // The per-layer view shows the markers as the empty files they are.
    let own = layer::layer_tree(&invalid, 1);
    assert_eq!(kind_at(&own, ".wh..wh.foo"), Some(layer::NodeKind::File));
    import_contained(
        "whiteout-import",
        spec_tar("file /.wh.. 0644 @empty raw; file /.wh... 0644 @empty raw; file /.wh..wh..opq 0644 @empty raw"),
    );
}

/// Duplicates of every kind: the last entry wins, except a directory over a
/// directory, which keeps the children and takes the new metadata.
#[test]
fn duplicates_last_entry_wins() {
    use layer::NodeKind::{Dir, File, Symlink};
    let cases: &[(&str, &[(&str, layer::NodeKind)])] = &[
        ("file /p 0644 \"x\"; dir /p 0755", &[("p", Dir)]),
        (
            "dir /p 0755; file /p/c 0644 \"c\"; file /p 0644 \"x\"",
            &[("p", File)],
        ),
        (
            "symlink /p /etc; dir /p 0700; file /p/c 0644 \"c\"",
            &[("p", Dir), ("p/c", File)],
        ),
        (
            "dir /p 0755; file /p/c 0644 \"c\"; symlink /p /etc",
            &[("p", Symlink)],
        ),
        ("file /p 0644 \"x\"; symlink /p target", &[("p", Symlink)]),
        ("file /p 0644 \"1\"; file /p 0600 \"2\"", &[("p", File)]),
        (
            "dir /p 0700; file /p/c 0644 \"c\"; dir /p 0755 uid=7",
            &[("p", Dir), ("p/c", File)],
        ),
        (
            "file /t 0644 \"t\"; hardlink /p /t; file /t 0644 \"new\"",
            &[("p", File), ("t", File)],
        ),
    ];
    for (description, expected) in cases {
        let index = index_of(&spec_tar(description));
        let merged = layer::merge_layers(&[&index]);
        let want: Vec<String> = expected.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths(&merged), want, "{description}");
        for (path, kind) in *expected {
            assert_eq!(kind_at(&merged, path), Some(*kind), "{description}: {path}");
        }
    }
    // Directory over directory keeps the new metadata.
    let index = index_of(&spec_tar("dir /p 0700; dir /p 0755 uid=7"));
    let merged = layer::merge_layers(&[&index]);
    let node = merged.tree.node(merged.tree.lookup_path(b"p").expect("p"));
    assert_eq!((node.mode & 0o7777, node.uid), (0o755, 7));
    // A file replaced by a later file of the same name: the later content.
    let index = index_of(&spec_tar(
        "file /p 0644 \"first\"; file /p 0644 \"second!\"",
    ));
    let merged = layer::merge_layers(&[&index]);
    let node = merged.tree.node(merged.tree.lookup_path(b"p").expect("p"));
    assert_eq!(node.size, 7);
    import_contained(
        "duplicates-import",
        spec_tar(
            "file /p 0644 \"x\"; dir /p 0755; symlink /s /etc; dir /s 0755; file /s/x 0644 \"y\"",
        ),
    );
}

// ---------------------------------------------------------------------------
// Stream-level tricks
// ---------------------------------------------------------------------------

/// Bytes after the end-of-archive blocks are part of the layer: the diff_id covers
/// them. An image whose config matches the whole stream imports; one whose diff_id
/// is that of the tar without the trailer is refused, naming the layer and diff_ids.
#[test]
fn bytes_after_the_tar_end_are_covered_by_the_diff_id() {
    let tar = spec_tar("file /f 0644 \"f\"");
    let mut with_trailer = tar.clone();
    with_trailer.extend_from_slice(b"trailing bytes that change the digest");
    let index = index_of(&with_trailer);
    assert_eq!(index.diff_id, DiffId(Digest::of(&with_trailer)));
    assert_eq!(index.uncompressed_size, with_trailer.len() as u64);

    import_contained("trailer-ok", with_trailer.clone());

    let mut g = Guarded::new("trailer-mismatch");
    let mut layer = BuiltLayer::from_tar(with_trailer, Compression::Gzip).expect("layer");
    layer.diff_id = DiffId(Digest::of(&tar));
    let image = ImageBuilder::new()
        .built_layer(layer)
        .build()
        .expect("image");
    let layout = write_layout(&g.t, image);
    g.arm();
    let out = g
        .import(&layout, "test/hostile:1")
        .assert_err_line("imagefs: import");
    assert!(out.stderr.contains("diff_ids"), "{}", out.stderr);
    assert!(out.stderr.contains("layer"), "{}", out.stderr);
    g.finish();
}

/// A PAX `size` record that disagrees with the ustar header: PAX wins (POSIX), so a
/// larger PAX size runs past the data and the stream is truncated, and a smaller one
/// makes the data block be read as a header, which is malformed. Both refuse the
/// layer; a non-numeric PAX size skips nothing silently either.
#[test]
fn pax_size_desync_is_refused() {
    let file_data = pad(b"hello".to_vec());
    let build = |pax_size: &str| -> Vec<u8> {
        let records = pax_record("size", pax_size);
        let mut tar = Vec::new();
        tar.extend_from_slice(&header(
            "PaxHeaders/f",
            b'x',
            &octal_size(records.len() as u64),
        ));
        tar.extend(pad(records.into_bytes()));
        tar.extend_from_slice(&header("f", b'0', &octal_size(5)));
        tar.extend_from_slice(&file_data);
        tar.extend(end_of_archive());
        tar
    };
    let larger = build("100000");
    let err = layer::index_layer(&larger[..], &mut DiscardSink).expect_err("refused");
    assert!(err.to_string().contains("truncated"), "{err}");
    let smaller = build("0");
    let err = layer::index_layer(&smaller[..], &mut DiscardSink).expect_err("refused");
    assert!(err.to_string().contains("malformed header"), "{err}");
    match layer::index_layer(&build("-1")[..], &mut DiscardSink) {
        Ok(index) => assert!(!index.warnings.is_empty(), "bad PAX size accepted silently"),
        Err(err) => assert!(err.to_string().contains("layer tar"), "{err}"),
    }

    let mut g = Guarded::new("pax-desync");
    let layout = write_layout(&g.t, image_of_tar(larger, Compression::Gzip));
    g.arm();
    let out = g
        .import(&layout, "test/hostile:1")
        .assert_err_line("imagefs: import");
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);
    assert!(out.stderr.contains("layer"), "{}", out.stderr);
    g.finish();
}

/// A 12-byte numeric field in GNU base-256 form.
fn base256(value: u64) -> [u8; 12] {
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[4..].copy_from_slice(&value.to_be_bytes());
    field
}

/// Old GNU sparse header with the real size in base-256.
fn gnu_sparse(name: &str, real_size: u64, chunks: &[(u64, u64)], stored: u64) -> [u8; 512] {
    let mut block = header(name, b'S', &octal_size(stored));
    // Old GNU magic instead of ustar.
    block[257..265].copy_from_slice(b"ustar  \0");
    for (slot, (offset, length)) in chunks.iter().enumerate() {
        let at = 386 + slot * 24;
        block[at..at + 12].copy_from_slice(&base256(*offset));
        block[at + 12..at + 24].copy_from_slice(&base256(*length));
    }
    block[483..495].copy_from_slice(&base256(real_size));
    set_checksum(&mut block);
    block
}

/// A sparse file declaring a real size beyond `Limits::max_sparse_size` (1 TiB) is
/// skipped with a warning; one below it is indexed without reading or allocating its
/// holes (indexing takes no longer than the stored bytes).
#[test]
fn huge_sparse_sizes_are_skipped_or_never_expanded() {
    let build = |real_size: u64| -> Vec<u8> {
        let mut tar = Vec::new();
        tar.extend_from_slice(&gnu_sparse(
            "sparse",
            real_size,
            &[(real_size - 512, 512)],
            512,
        ));
        tar.extend(vec![b's'; 512]);
        tar.extend(end_of_archive());
        tar
    };
    let huge = build(1 << 62);
    let index = index_of(&huge);
    assert!(index.entries.is_empty());
    assert_eq!(warnings(&index).len(), 1, "{:?}", warnings(&index));
    assert!(
        warnings(&index)[0].1.contains("sparse"),
        "{:?}",
        warnings(&index)
    );

    let big = build(100 << 30);
    let started = std::time::Instant::now();
    let index = index_of(&big);
    assert!(
        started.elapsed().as_secs() < 5,
        "indexing expanded the holes"
    );
    assert_eq!(index.entries.len(), 1, "{:?}", warnings(&index));
    assert_eq!(index.entries[0].size, 100 << 30);
    import_contained("sparse-import", big);
    import_contained("sparse-huge-import", huge);
}

// ---------------------------------------------------------------------------
// Bombs and sizes
// ---------------------------------------------------------------------------

/// Peak RSS (kB) of a command run under `/usr/bin/time -v`, with its output.
fn run_measured(t: &TestDir, args: &[&str], timeout: u64) -> (util::Output, Option<u64>) {
    let time = Path::new("/usr/bin/time");
    let out = if time.exists() {
        let store = t.store();
        util::Cmd::new(time)
            .arg("-v")
            .arg(util::imagefs_bin())
            .arg("--store")
            .arg(&store)
            .args(args)
            .timeout_secs(timeout)
            .output()
    } else {
        t.imagefs().args(args).timeout_secs(timeout).output()
    };
    let peak = out
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    (out, peak)
}

fn gzip_member(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

/// A gzip layer holding one file `name` of `size` bytes (a multiple of 1 MiB), all
/// `byte`: one compressed 1 MiB member repeated, so a small blob (about 1000:1)
/// built without holding `size` bytes in memory.
fn repeated_byte_layer(name: &str, byte: u8, size: u64) -> BuiltLayer {
    use sha2::{Digest as _, Sha256};
    let chunk = vec![byte; 1 << 20];
    let member = gzip_member(&chunk);
    let head = header(name, b'0', &octal_size(size)).to_vec();
    let mut blob = gzip_member(&head);
    let mut hasher = Sha256::new();
    hasher.update(&head);
    for _ in 0..(size >> 20) {
        blob.extend_from_slice(&member);
        hasher.update(&chunk);
    }
    blob.extend(gzip_member(&end_of_archive()));
    hasher.update(end_of_archive());
    streamed_layer(blob, Compression::Gzip, hasher)
}

/// A layer from a compressed `blob` built without holding its tar in memory, and
/// the hasher that saw the tar's bytes (its diff_id).
fn streamed_layer(blob: Vec<u8>, compression: Compression, tar: sha2::Sha256) -> BuiltLayer {
    use sha2::Digest as _;
    let media_type = sample::layer_media_type(sample::ManifestFormat::Oci, compression);
    BuiltLayer {
        blob: sample::Blob::new(media_type, blob),
        diff_id: DiffId(Digest::parse(&format!("sha256:{:x}", tar.finalize())).expect("hex")),
        tar: Vec::new(),
        compression,
        annotations: BTreeMap::new(),
    }
}

/// A gzip bomb: 1 GiB of zeros in one file (256 MiB in debug builds), about 1 MiB
/// compressed (a ratio of
/// ~1000:1). Chosen behaviour: no ratio cap. Import streams the layer (decompress,
/// hash, index) in constant memory and finishes in time linear in the expanded size;
/// nothing is unpacked at import. The layer is valid, so it imports.
#[test]
fn gzip_bomb_imports_in_constant_memory() {
    // The debug binary decompresses ~10x slower: same ratio, a quarter of the size.
    const SIZE: u64 = if cfg!(debug_assertions) {
        256 << 20
    } else {
        1 << 30
    };
    let layer = repeated_byte_layer("zeros", 0, SIZE);
    assert!(
        layer.blob.data.len() < 4 << 20,
        "bomb is {} bytes",
        layer.blob.data.len()
    );
    let image = ImageBuilder::new()
        .built_layer(layer)
        .build()
        .expect("image");
    let mut g = Guarded::new("gzip-bomb");
    let layout = write_layout(&g.t, image);
    g.arm();
    let layout_arg = layout.to_str().expect("utf-8");
    let (out, peak_kb) = run_measured(&g.t, &["import", layout_arg, "test/bomb:1"], 600);
    let out = out.assert_ok();
    eprintln!("gzip bomb: {:.1?}, peak RSS {peak_kb:?} kB", out.elapsed);
    if let Some(peak_kb) = peak_kb {
        assert!(peak_kb < 128 * 1024, "import peaked at {peak_kb} kB");
    }
    g.finish();
}

/// A million tiny entries (empty files in 1,000 directories): indexing time and
/// memory grow linearly and stay bounded (`Limits::max_entries` is the cap beyond
/// which a layer is refused).
#[test]
fn a_million_tiny_entries_import_in_bounded_time_and_memory() {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    let mut emit = |block: &[u8]| {
        hasher.update(block);
        encoder.write_all(block).expect("compress");
    };
    for dir in 0..1000 {
        for file in 0..1000 {
            emit(&header(
                &format!("d{dir:03}/f{file:03}"),
                b'0',
                &octal_size(0),
            ));
        }
    }
    emit(&end_of_archive());
    let blob = encoder.finish().expect("compress");
    let layer = streamed_layer(blob, Compression::Zstd, hasher);
    let image = ImageBuilder::new()
        .built_layer(layer)
        .build()
        .expect("image");
    let mut g = Guarded::new("million");
    let layout = write_layout(&g.t, image);
    g.arm();
    let layout_arg = layout.to_str().expect("utf-8");
    let (out, peak_kb) = run_measured(&g.t, &["import", layout_arg, "test/million:1"], 600);
    let out = out.assert_ok();
    eprintln!(
        "million entries: {:.1?}, peak RSS {peak_kb:?} kB",
        out.elapsed
    );
    if let Some(peak_kb) = peak_kb {
        assert!(peak_kb < 1024 * 1024, "import peaked at {peak_kb} kB");
    }
    g.finish();
}

/// 5,000 nested directories: paths longer than PATH_MAX (4096 bytes) are skipped
/// with a warning; what remains (2,048 levels), and a tree made deeper still through
/// a symlink (over 4,000 levels), is merged, walked and serialised without
/// recursion limits, and imports.
#[test]
fn very_deep_trees_are_bounded_by_path_max_and_never_overflow() {
    let mut description = String::new();
    let mut path = String::new();
    for _ in 0..5000 {
        path.push_str("/a");
        description.push_str(&format!("dir {path} 0755\n"));
    }
    let deep = spec_tar(&description);
    let deep_index = index_of(&deep);
    assert_eq!(deep_index.entries.len(), 2048);
    assert_eq!(deep_index.warnings.len(), 5000 - 2048);
    assert!(deep_index.warnings[0]
        .reason
        .contains("path longer than 4096 bytes"));

    // A second layer: a symlink to the 2,000-deep directory, then 2,000 more levels
    // through it.
    let target = "a/".repeat(2000);
    let mut upper = format!("symlink /s {}\n", target.trim_end_matches('/'));
    let mut path = String::from("/s");
    for _ in 0..2000 {
        path.push_str("/b");
        upper.push_str(&format!("dir {path} 0755\n"));
    }
    let upper_index = index_of(&spec_tar(&upper));
    assert_eq!(upper_index.entries.len(), 2001);
    let run = move || {
        let merged = layer::merge_layers(&[&deep_index, &upper_index]);
        assert!(merged.warnings.is_empty());
        let deepest = merged.tree.walk().into_iter().map(|(p, _)| p.len()).max();
        assert_eq!(deepest, Some(2 * 4000 - 1));
        let bytes = upper_index.to_bytes();
        assert_eq!(
            LayerIndex::from_bytes(&bytes).expect("round trip"),
            upper_index
        );
    };
    // The default test thread stack (2 MiB): recursion per level would overflow it.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(run)
        .expect("thread")
        .join()
        .expect("no overflow");
    import_contained("deep-import", deep);
}

// ---------------------------------------------------------------------------
// JSON and archives
// ---------------------------------------------------------------------------

/// Writes an OCI layout by hand: the blobs by their digest and `index.json` as given.
fn write_raw_layout(t: &TestDir, blobs: &[&[u8]], index_json: &[u8]) -> PathBuf {
    let layout = t.mkdir("layout");
    t.write("layout/oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in blobs {
        t.write(
            format!("layout/blobs/sha256/{}", Digest::of(blob).hex()),
            blob,
        );
    }
    t.write("layout/index.json", index_json);
    layout
}

fn index_json_for(media_type: &str, digest: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "hostile:1"}}],
    }))
    .expect("json")
}

/// A small valid image's config and layer blobs, and its manifest as JSON.
fn valid_parts() -> (Vec<Vec<u8>>, serde_json::Value) {
    let image = ImageBuilder::new()
        .layer(
            &LayerSpec::parse("file /f 0644 \"f\"").expect("spec"),
            Compression::Gzip,
        )
        .build()
        .expect("image");
    let manifest = serde_json::from_slice(&image.manifest.data).expect("manifest json");
    let blobs = vec![image.config.data.clone(), image.layers[0].blob.data.clone()];
    (blobs, manifest)
}

/// Imports a hand-made layout whose top manifest is `manifest`, expecting one error
/// line containing every needle; fsck clean and nothing kept.
fn import_refused(
    name: &str,
    blobs: &[Vec<u8>],
    manifest: &[u8],
    index: Option<Vec<u8>>,
    needles: &[&str],
) {
    let mut g = Guarded::new(name);
    let mut all: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    all.push(manifest);
    let index = index.unwrap_or_else(|| {
        index_json_for(
            "application/vnd.oci.image.manifest.v1+json",
            &Digest::of(manifest).to_string(),
            manifest.len(),
        )
    });
    let layout = write_raw_layout(&g.t, &all, &index);
    g.arm();
    let out = g
        .import(&layout, "test/hostile:1")
        .assert_err_line("imagefs: import");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{name}: {needle:?} not in {}",
            out.stderr
        );
    }
    let blobs_dir = g.t.store().join("blobs/sha256");
    assert_eq!(
        list_dir(&blobs_dir),
        Vec::<PathBuf>::new(),
        "{name}: blobs kept"
    );
    g.finish();
}

/// Manifests are capped at 4 MiB (as containerd and the distribution spec); bigger
/// ones are refused before parsing, naming the manifest and the limit. Malformed and
/// pathologically nested JSON are refused as malformed, without deep recursion.
#[test]
fn malformed_and_oversized_json_is_refused() {
    let (blobs, mut manifest) = valid_parts();
    manifest["annotations"] = serde_json::json!({"padding": "x".repeat(4 << 20)});
    let big = serde_json::to_vec(&manifest).expect("json");
    let digest = Digest::of(&big).to_string();
    import_refused(
        "json-oversized",
        &blobs,
        &big,
        None,
        &[&digest, "too large", "limit 4194304"],
    );

    let broken = b"{\"schemaVersion\": 2, \"config\": ".to_vec();
    let digest = Digest::of(&broken).to_string();
    import_refused(
        "json-malformed",
        &blobs,
        &broken,
        None,
        &[&digest, "malformed JSON"],
    );

    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let digest = Digest::of(&nested).to_string();
    import_refused(
        "json-nested",
        &blobs,
        &nested,
        None,
        &[&digest, "malformed JSON"],
    );

    // index.json itself over the cap.
    let (blobs, manifest) = valid_parts();
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let mut index = index_json_for(
        "application/vnd.oci.image.manifest.v1+json",
        &Digest::of(&manifest).to_string(),
        manifest.len(),
    );
    index.extend(vec![b' '; 4 << 20]);
    import_refused(
        "json-index-oversized",
        &blobs,
        &manifest,
        Some(index),
        &["index.json"],
    );
}

/// A manifest whose own mediaType says index (the descriptor says manifest): refused
/// as a media type conflict rather than read as either.
#[test]
fn manifest_whose_media_type_says_index_is_refused() {
    let (blobs, mut manifest) = valid_parts();
    manifest["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
    let bytes = serde_json::to_vec(&manifest).expect("json");
    import_refused("media-type-index", &blobs, &bytes, None, &["media type"]);
}

/// Digests in index.json that are not `sha256:<64 lowercase hex>` (a path
/// traversal, uppercase hex) are refused naming index.json, and the file the
/// traversal points at is never read.
#[test]
fn bad_digests_in_index_json_are_refused() {
    let (blobs, manifest) = valid_parts();
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let upper = Digest::of(&manifest)
        .to_string()
        .to_uppercase()
        .replace("SHA256", "sha256");
    for (name, digest) in [
        ("digest-traversal", "sha256:../../x".to_string()),
        ("digest-upper", upper),
    ] {
        let index = index_json_for(
            "application/vnd.oci.image.manifest.v1+json",
            &digest,
            manifest.len(),
        );
        import_refused(
            name,
            &blobs,
            &manifest,
            Some(index),
            &["index.json", "digest"],
        );
    }
}

/// A docker-archive whose layer path is a symlink out of the archive (absolute, or
/// `../` past its root) is refused naming the member, and the outside file (which
/// holds a valid layer, so following it would "work") is never read. A symlink to
/// another member inside the archive (what `docker save` writes for shared layers)
/// is fine.
#[test]
fn docker_archive_layer_symlinks_out_of_the_archive_are_refused() {
    let tar = spec_tar("file /f 0644 \"f\"");
    let image = image_of_tar(tar.clone(), Compression::None);
    let config_name = format!("{}.json", image.config.digest.hex());
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["hostile:1"], "Layers": ["l1/layer.tar"],
    }]);
    // (test name, link target (None: the absolute path of outside.tar), accepted)
    let cases = [
        ("docker-link-abs", None, false),
        ("docker-link-up", Some("../../outside.tar"), false),
        ("docker-link-inside", Some("../real/layer.tar"), true),
    ];
    for (name, target, ok) in cases {
        let mut g = Guarded::new(name);
        g.t.write("outside.tar", &tar);
        let archive = g.t.join("docker.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).expect("create"));
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, path, data).expect("append");
        };
        add(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        add(&config_name, &image.config.data);
        add("real/layer.tar", &tar);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        builder
            .append_link(
                &mut h,
                "l1/layer.tar",
                target.map_or_else(|| g.t.join("outside.tar"), PathBuf::from),
            )
            .expect("symlink");
        builder
            .into_inner()
            .expect("finish")
            .flush()
            .expect("flush");
        g.arm();
        let out = g.import(&archive, "test/hostile:1");
        if ok {
            out.assert_ok();
        } else {
            let out = out.assert_err_line("imagefs: import");
            assert!(
                out.stderr.contains("l1/layer.tar"),
                "{name}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("outside the archive"),
                "{name}: {}",
                out.stderr
            );
        }
        g.finish();
    }
}

/// Regression (hostile suite): unpacking a sparse file wrote its holes to the cache
/// as zeros, so a few bytes of tar could fill the disk with up to
/// `Limits::max_sparse_size` (1 TiB). Holes (and any run of zeros) now stay holes.
#[test]
fn unpacking_a_sparse_file_keeps_its_holes() {
    use std::os::unix::fs::MetadataExt;
    const SIZE: u64 = 256 << 20;
    let mut tar = Vec::new();
    tar.extend_from_slice(&gnu_sparse("sparse", SIZE, &[(SIZE - 512, 512)], 512));
    tar.extend(vec![b's'; 512]);
    tar.extend(end_of_archive());
    let t = TestDir::new("sparse-unpack");
    let cache = CacheDir::new(t.mkdir("cache")).expect("cache dir");
    let index = layer::unpack_layer(&tar[..], &cache).expect("unpacks");
    let entry = &index.entries[0];
    let layer::ContentRef::Cached(id) = entry.content else {
        panic!("not cached: {:?}", entry.content);
    };
    let meta = fs::metadata(cache.content_path(&id)).expect("content file");
    assert_eq!(meta.len(), SIZE);
    let allocated = meta.blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "a 256 MiB sparse file took {allocated} bytes of cache"
    );
    let mut content = fs::File::open(cache.content_path(&id)).expect("open");
    let mut tail = Vec::new();
    io::Seek::seek(&mut content, io::SeekFrom::Start(SIZE - 1024)).expect("seek");
    io::Read::read_to_end(&mut content, &mut tail).expect("read");
    assert_eq!(&tail[..512], &[0u8; 512][..]);
    assert_eq!(&tail[512..], &[b's'; 512][..]);
}

// ---------------------------------------------------------------------------
// Compressed archives
// ---------------------------------------------------------------------------

/// Writes a `.tar.gz` whose one member holds `size` zero bytes, at best gzip
/// compression (about 1000:1), streamed so nothing of `size` is held in memory.
fn write_zero_archive(path: &Path, size: u64) {
    let file = fs::File::create(path).expect("create archive");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    gz.write_all(&header("zeros", b'0', &octal_size(size)))
        .expect("compress");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        gz.write_all(&chunk[..n as usize]).expect("compress");
        left -= n;
    }
    gz.finish().expect("compress").flush().expect("flush");
}

/// Free bytes on the filesystem holding `dir`, as `df` shows them.
fn free_bytes(dir: &Path) -> u64 {
    let df = util::Cmd::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .assert_ok();
    df.stdout
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// Gzips the file at `from` into `to`.
fn gzip_file(from: &Path, to: &Path) {
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(to).expect("create"),
        flate2::Compression::default(),
    );
    io::copy(&mut fs::File::open(from).expect("open"), &mut gz).expect("compress");
    gz.finish().expect("compress").flush().expect("flush");
}

/// Blob names in the store, and `ls --json`: what must not change when an import is
/// refused.
fn store_state(t: &TestDir) -> (Vec<PathBuf>, String) {
    let mut blobs = list_dir(&t.store().join("blobs/sha256"));
    blobs.sort();
    (blobs, t.run(&["ls", "--json"]).assert_ok().stdout)
}

/// Regression (issue 6): a `.tar.gz` OCI archive or docker-archive was decompressed
/// into a temp file with no limit, so a gzip bomb filled the disk. Chosen limit: 100
/// times the archive's size, at least 256 MiB (image archives hold compressed layers;
/// real ratios are below 10:1). A 500 KiB archive of 512 MiB of zeros is refused at
/// 256 MiB with one line naming it, the limit and the override; the temp file is
/// gone and the store is as before.
#[test]
fn compressed_archive_bomb_is_refused_and_leaves_nothing() {
    let mut g = Guarded::new("archive-bomb");
    let bomb = g.t.join("bomb.tar.gz");
    write_zero_archive(&bomb, 512 << 20);
    let layout = write_layout(
        &g.t,
        image_of_tar(spec_tar("file /f 0644 \"f\""), Compression::Gzip),
    );
    g.arm();
    g.import(&layout, "test/before:1").assert_ok();
    let before = store_state(&g.t);
    let bomb_arg = bomb.to_str().expect("utf-8 path");
    let out =
        g.t.imagefs()
            .args(["import", bomb_arg])
            .timeout_secs(120)
            .assert_err_line("imagefs: import");
    for needle in [
        &format!("{bomb_arg}: decompresses to more than 256.00 MiB"),
        "100 times the",
        "decompression bomb",
        "--max-decompressed-size",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
    assert_eq!(
        list_dir(&g.t.store().join("tmp")),
        Vec::<PathBuf>::new(),
        "temp files left"
    );
    assert_eq!(store_state(&g.t), before, "the store changed");
    g.finish();
}

/// `--max-decompressed-size` replaces the ratio rule: a genuine `.tar.gz` OCI archive
/// imports by default and is refused under a 4 KiB cap, naming the flag.
#[test]
fn max_decompressed_size_caps_a_genuine_archive() {
    let mut g = Guarded::new("archive-cap");
    let image = image_of_tar(spec_tar("file /f 0644 \"f\""), Compression::Gzip);
    let plain = g.t.join("image.tar");
    sample::write_oci_archive(&plain, &[(Some("hostile:1"), &Built::from(image))])
        .expect("archive written");
    let archive = g.t.join("image.tar.gz");
    gzip_file(&plain, &archive);
    g.arm();
    let archive_arg = archive.to_str().expect("utf-8 path");
    let out =
        g.t.imagefs()
            .args(["import", archive_arg, "test/cap:1"])
            .args(["--max-decompressed-size", "4K"])
            .assert_err_line("imagefs: import");
    assert!(
        out.stderr.contains(&format!(
            "{archive_arg}: decompresses to more than 4.00 KiB (limit: --max-decompressed-size)"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(list_dir(&g.t.store().join("tmp")), Vec::<PathBuf>::new());
    g.import(&archive, "test/cap:1").assert_ok();
    g.finish();
}

/// The free-space margin (1 GiB or 5% of the filesystem, whichever is smaller) is
/// checked as the temp file grows: with the store on a 64 MiB tmpfs, a bomb within
/// its size allowance stops with 3.2 MiB still free, and the space comes back.
#[test]
fn archive_decompression_stops_before_the_disk_fills() {
    if !util::require_root() {
        return;
    }
    let t = TestDir::new("archive-disk-full");
    let bomb = t.join("bomb.tar.gz");
    write_zero_archive(&bomb, 200 << 20);
    let small = t.mkdir("small");
    // TestDir unmounts whatever is left below it on drop, should an assert fail.
    util::Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "imagefs-test"])
        .arg(&small)
        .timeout_secs(10)
        .assert_ok();
    let store = small.join("store");
    let out = util::Cmd::imagefs()
        .arg("--store")
        .arg(&store)
        .arg("import")
        .arg(&bomb)
        .timeout_secs(120)
        .assert_err_line("imagefs: import");
    assert!(
        out.stderr.contains(&format!(
            "would leave less than 3.20 MiB free in {}",
            store.join("tmp").display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(list_dir(&store.join("tmp")), Vec::<PathBuf>::new());
    let avail = free_bytes(&small);
    assert!(avail > 60 << 20, "only {avail} bytes free after the import");
    util::Cmd::new("umount")
        .arg(&small)
        .timeout_secs(10)
        .assert_ok();
}

/// Regression (issue 10): a full disk during an import came out as a generic error.
/// With the store on a 4 MiB tmpfs, importing an 8 MiB layer stops with "no space
/// left on device" in the one error line, and leaves no temp file behind.
#[test]
fn a_full_disk_during_import_says_no_space_left_on_device() {
    if !util::require_root() {
        return;
    }
    let t = TestDir::new("import-disk-full");
    let image = image_of_tar(
        spec_tar("file /big 0644 @random:8388608:full"),
        Compression::Gzip,
    );
    let layout = write_layout(&t, image);
    let small = t.mkdir("small");
    // TestDir unmounts whatever is left below it on drop, should an assert fail.
    util::Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "imagefs-test"])
        .arg(&small)
        .timeout_secs(10)
        .assert_ok();
    let store = small.join("store");
    let out = util::Cmd::imagefs()
        .arg("--store")
        .arg(&store)
        .arg("import")
        .arg(&layout)
        .arg("test/full:1")
        .timeout_secs(60)
        .assert_err_line("imagefs: import");
    assert!(
        out.stderr.contains("no space left on device"),
        "{}",
        out.stderr
    );
    assert_eq!(list_dir(&store.join("tmp")), Vec::<PathBuf>::new());
    util::Cmd::new("umount")
        .arg(&small)
        .timeout_secs(10)
        .assert_ok();
}

// ---------------------------------------------------------------------------
// What import reports
// ---------------------------------------------------------------------------

/// Regression (issue 6): import skipped hostile entries without a word. It now
/// prints one `imagefs: warning:` line per skipped entry on stderr, naming the image
/// and the layer, and lists them in `--json` (also when the layers were already
/// stored); the import succeeds and the image is usable. `inspect` shows them too.
#[test]
fn import_reports_skipped_entries() {
    let mut g = Guarded::new("import-warnings");
    let image = image_of_tar(
        spec_tar(
            "file ../x 0644 \"x\" raw
             file /.wh.. 0644 @empty raw
             file /ok 0644 \"ok\"",
        ),
        Compression::Gzip,
    );
    let layer = image.layers[0].blob.digest;
    let layout = write_layout(&g.t, image);
    g.arm();
    let prefix = format!(
        "imagefs: warning: test/warned:1: layer 0 (sha256:{})",
        layer.short(12)
    );
    let expected = vec![
        format!("{prefix}: ../x: entry skipped: path has a '..' component"),
        format!("{prefix}: .wh..: invalid whiteout skipped"),
    ];
    let out = g.import(&layout, "test/warned:1").assert_ok();
    assert_eq!(out.stderr.lines().collect::<Vec<_>>(), expected);

    let layout_arg = layout.to_str().expect("utf-8 path");
    let out =
        g.t.run(&["import", layout_arg, "test/warned:2", "--json"])
            .assert_ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("import JSON");
    assert_eq!(
        report["warnings"],
        serde_json::json!([{
            "image": "test/warned:2",
            "manifest": report["images"][0][1],
            "layers": [{
                "position": 0,
                "layer": layer.to_string(),
                "total": 2,
                "warnings": [
                    {"path": "../x", "reason": "entry skipped: path has a '..' component"},
                    {"path": ".wh..", "reason": "invalid whiteout skipped"},
                ],
            }],
        }]),
        "{report}"
    );
    assert_eq!(
        out.stderr.lines().count(),
        2,
        "warnings on stderr with --json too: {}",
        out.stderr
    );

    // Usable: inspected (warnings shown under the layer) and exported intact.
    let inspect = g.t.run(&["inspect", "test/warned:1", "--json"]).assert_ok();
    let inspected: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("JSON");
    assert_eq!(inspected["layers"][0]["warnings_total"], 2, "{inspected}");
    assert_eq!(inspected["layers"][0]["warnings"][0]["path"], "../x");
    let text = g.t.run(&["inspect", "test/warned:1"]).assert_ok();
    assert!(
        text.stdout
            .contains("warning: .wh..: invalid whiteout skipped"),
        "{}",
        text.stdout
    );
    let exported = g.t.join("exported");
    g.t.run(&["export", "test/warned:1", exported.to_str().expect("utf-8")])
        .assert_ok();
    fs::remove_dir_all(&exported).expect("remove export");
    g.finish();
}

/// A layer with many hostile entries: the first 10 are printed, then a count of the
/// rest; a clean layer says nothing, and names with control characters are escaped.
#[test]
fn import_warnings_are_capped_per_layer() {
    let mut description = String::from("file /clean 0644 \"c\"\n");
    for n in 0..25 {
        description.push_str(&format!("file ../escape-{n} 0644 \"x\" raw\n"));
    }
    let noisy = spec_tar(&description);
    let mut raw = Vec::new();
    raw.extend_from_slice(&header("../\x1b[31mred", b'0', &octal_size(0)));
    raw.extend(end_of_archive());
    let image = ImageBuilder::new()
        .layer(
            &LayerSpec::parse("file /base 0644 \"b\"").expect("spec"),
            Compression::Gzip,
        )
        .built_layer(BuiltLayer::from_tar(noisy, Compression::Gzip).expect("layer"))
        .built_layer(BuiltLayer::from_tar(raw, Compression::Zstd).expect("layer"))
        .build()
        .expect("image");
    let mut g = Guarded::new("import-warnings-cap");
    let layout = write_layout(&g.t, image);
    g.arm();
    let out = g.import(&layout, "test/noisy:1").assert_ok();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 12, "{}", out.stderr);
    assert!(lines
        .iter()
        .all(|l| l.starts_with("imagefs: warning: test/noisy:1: layer ")));
    assert!(
        lines[0].contains("layer 1 (")
            && lines[0].ends_with("../escape-0: entry skipped: path has a '..' component"),
        "{}",
        lines[0]
    );
    assert!(
        lines[10].ends_with(": and 15 more entries skipped or changed"),
        "{}",
        lines[10]
    );
    assert!(
        lines[11].contains("layer 2 (") && lines[11].contains("../\\u{1b}[31mred"),
        "{}",
        lines[11]
    );
    assert!(!out.stderr.contains('\x1b'));
    g.finish();
}

/// A layer of a few hundred KiB that holds 256 MiB of (non-zero, so not sparse)
/// file data, in a store on a 64 MiB filesystem: reading the file through the mount
/// gives ENOSPC at once instead of filling the disk the metadata lives on; the other
/// layer of the image still reads and the store stays usable.
#[test]
fn unpacking_a_layer_that_cannot_fit_gives_enospc_and_fills_nothing() {
    if !util::require_fuse() {
        return;
    }
    const SIZE: u64 = 256 << 20;
    let big = repeated_byte_layer("ones", b'A', SIZE);
    assert!(
        big.blob.data.len() < 2 << 20,
        "layer is {} bytes",
        big.blob.data.len()
    );
    let small = LayerSpec::parse("file /small.txt 0644 \"still here\"").expect("spec");
    let image = ImageBuilder::new()
        .built_layer(big)
        .layer(&small, Compression::Gzip)
        .build()
        .expect("image");
    let t = TestDir::new("unpack-enospc");
    let layout = write_layout(&t, image);
    let fs_dir = t.mkdir("small-fs");
    // TestDir unmounts whatever is left below it on drop, should an assert fail.
    util::Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "imagefs-test"])
        .arg(&fs_dir)
        .timeout_secs(10)
        .assert_ok();
    let store = fs_dir.join("store");
    let imagefs = |args: &[&str]| {
        util::Cmd::imagefs()
            .arg("--store")
            .arg(&store)
            .args(args)
            .timeout_secs(120)
            .output()
    };
    imagefs(&["import", layout.to_str().unwrap(), "test/enospc:1"]).assert_ok();
    let mount = util::Mount::start(&store, &t.join("mnt"), &[]);
    let rootfs = mount.join("test/enospc/tags/1/rootfs");
    let meta = std::fs::metadata(rootfs.join("ones")).expect("listed from the index");
    assert_eq!(meta.len(), SIZE);
    let read = util::with_timeout(60, {
        let path = rootfs.join("ones");
        move || std::fs::read(path).map(|b| b.len())
    });
    assert_eq!(read.map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)));
    let text = util::with_timeout(60, {
        let path = rootfs.join("small.txt");
        move || std::fs::read_to_string(path)
    });
    assert_eq!(text.expect("the other layer reads"), "still here");
    let avail = free_bytes(&fs_dir);
    assert!(
        avail > 56 << 20,
        "only {avail} bytes free after the refused unpack"
    );
    drop(mount);
    // Still a working store: tag, fsck.
    imagefs(&["tag", "test/enospc:1", "test/enospc:2"]).assert_ok();
    imagefs(&["fsck"]).assert_ok();
    util::Cmd::new("umount")
        .arg(&fs_dir)
        .timeout_secs(10)
        .assert_ok();
}

/// A layer of a few KiB declaring a 1 TiB sparse file: unpacking it, opening it
/// (which checks its content) and fsck cost its 1 KiB of data, not a terabyte of
/// hashed zeros; reads give the data and the holes; damage to its data is caught
/// and the file unpacked again.
#[test]
fn a_terabyte_sparse_file_costs_only_its_data() {
    use std::os::unix::fs::FileExt;
    if !util::require_fuse() {
        return;
    }
    const SIZE: u64 = 1 << 40;
    let mut tar = Vec::new();
    tar.extend_from_slice(&gnu_sparse(
        "lastlog",
        SIZE,
        &[(0, 512), (SIZE - 512, 512)],
        1024,
    ));
    tar.extend(vec![b'h'; 512]);
    tar.extend(vec![b't'; 512]);
    tar.extend(end_of_archive());
    let t = TestDir::new("sparse-tib");
    let layout = write_layout(&t, image_of_tar(tar, Compression::Gzip));
    t.run(&["import", layout.to_str().unwrap(), "test/sparse:1"])
        .assert_ok();
    let read_ends = |mount: &util::Mount| {
        let path = mount.join("test/sparse/tags/1/rootfs/lastlog");
        util::with_timeout(60, move || -> io::Result<(u64, Vec<u8>)> {
            let file = fs::File::open(path)?;
            let size = file.metadata()?.len();
            let mut ends = vec![0u8; 1536];
            file.read_exact_at(&mut ends[..512], 0)?;
            file.read_exact_at(&mut ends[512..1024], SIZE / 2)?;
            file.read_exact_at(&mut ends[1024..], SIZE - 512)?;
            Ok((size, ends))
        })
        .expect("lastlog reads within a minute")
    };
    let expected: Vec<u8> = [vec![b'h'; 512], vec![0; 512], vec![b't'; 512]].concat();
    let mount = t.mount(&[]);
    let (size, ends) = read_ends(&mount);
    assert_eq!(size, SIZE);
    assert!(ends == expected, "wrong bytes");
    drop(mount);
    let fsck = util::with_timeout(60, {
        let store = t.store();
        move || {
            util::Cmd::imagefs()
                .arg("--store")
                .arg(&store)
                .args(["fsck", "--json"])
                .assert_ok()
                .stdout
        }
    });
    assert!(fsck.contains("\"cache_files_checked\": 1"), "{fsck}");

    // Damage the data in the cached file: a new mount notices and unpacks again.
    let mut content = Vec::new();
    let mut pending = vec![t.store().join("cache/layers")];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if entry.metadata().unwrap().len() == SIZE {
                content.push(entry.path());
            }
        }
    }
    assert_eq!(content.len(), 1, "{content:?}");
    fs::set_permissions(
        &content[0],
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&content[0])
        .unwrap();
    file.write_all_at(b"X", 100).unwrap();
    drop(file);
    let mount = t.mount(&[]);
    let (_, ends) = read_ends(&mount);
    assert!(ends == expected, "damaged sparse content was served");
}
