//! Table tests: layers described one line per entry, merged, compared with listings.

use std::io::{Read, Write};
use std::time::Instant;

use super::test_util::{expected, index, listing, tar};
use super::*;
use crate::digest::Digest;

/// (name, layers base first, expected rootfs listing, expected number of warnings).
type MergeCase = (&'static str, &'static [&'static str], &'static str, usize);

const MERGE_CASES: &[MergeCase] = &[
    (
        "kinds and modes",
        &["d a
           f a/x data=hi uid=1000 gid=100
           l a/l -> x
           p fifo
           c null dev=1:3
           b sda dev=8:0 mode=660
           f suid mode=4755
           f sgid mode=2755
           d tmp mode=1777"],
        "/ d 755
         a d 755
         a/l l 777 -> x
         a/x f 644 1000:100 size=2
         fifo p 644
         null c 600 dev=1:3
         sda b 660 dev=8:0
         sgid f 2755 size=0
         suid f 4755 size=0
         tmp d 1777",
        0,
    ),
    (
        "implied parents",
        &["f a/b/c data=x"],
        "/ d 755
         a d 755
         a/b d 755
         a/b/c f 644 size=1",
        0,
    ),
    (
        "root entry sets root metadata",
        &["d ./ mode=700 uid=1
           f ./x"],
        "/ d 700 1:0
         x f 644 size=0",
        0,
    ),
    (
        "whiteout removes a lower file",
        &["f a/x\nf a/y", "w a/.wh.x"],
        "/ d 755
         a d 755
         a/y f 644 size=0",
        0,
    ),
    (
        "whiteout removes a lower directory and its subtree",
        &["d a\nf a/x\nd a/s\nf a/s/z", "w .wh.a"],
        "/ d 755",
        0,
    ),
    (
        "whiteout of a missing path is a no-op",
        &["f x", "w .wh.nothing\nw no/such/.wh.dir"],
        "/ d 755
         x f 644 size=0",
        0,
    ),
    (
        "opaque directory hides lower children, keeps its own",
        &[
            "d a mode=700\nf a/x\nd a/s\nf a/s/z",
            "w a/.wh..wh..opq\nf a/y",
        ],
        "/ d 755
         a d 700
         a/y f 644 size=0",
        0,
    ),
    (
        "opaque keeps same-layer entries before and after the marker",
        &["f a/x", "f a/y\nw a/.wh..wh..opq\nf a/w"],
        "/ d 755
         a d 755
         a/w f 644 size=0
         a/y f 644 size=0",
        0,
    ),
    (
        "opaque descends into upper subdirectories and removes their lower children",
        &[
            "d a\nd a/s mode=711\nf a/s/old",
            "f a/s/new\nw a/.wh..wh..opq",
        ],
        "/ d 755
         a d 755
         a/s d 711
         a/s/new f 644 size=0",
        0,
    ),
    (
        "opaque at the root",
        &["f x\nd d\nf d/y", "w .wh..wh..opq\nf z"],
        "/ d 755
         z f 644 size=0",
        0,
    ),
    (
        "whiteout after a same-layer entry does not remove it",
        &["f x data=old", "f x data=newer\nw .wh.x"],
        "/ d 755
         x f 644 size=5",
        0,
    ),
    (
        "whiteout before a same-layer entry",
        &["f x data=old", "w .wh.x\nf x data=newer"],
        "/ d 755
         x f 644 size=5",
        0,
    ),
    (
        "whiteout of a directory this layer recreates keeps only this layer's children",
        &["d a\nf a/lower", "d a mode=700\nf a/upper\nw .wh.a"],
        "/ d 755
         a d 700
         a/upper f 644 size=0",
        0,
    ),
    (
        "later layer overrides a file",
        &["f x data=1 mode=600", "f x data=22 uid=7"],
        "/ d 755
         x f 644 7:0 size=2",
        0,
    ),
    (
        "file replaces a directory",
        &["d a\nf a/x", "f a data=abc"],
        "/ d 755
         a f 644 size=3",
        0,
    ),
    (
        "directory replaces a file",
        &["f a data=abc", "d a mode=700\nf a/y"],
        "/ d 755
         a d 700
         a/y f 644 size=0",
        0,
    ),
    (
        "directory over directory keeps children, takes metadata",
        &["d a\nf a/x", "d a mode=700 uid=5"],
        "/ d 755
         a d 700 5:0
         a/x f 644 size=0",
        0,
    ),
    (
        "symlink replaces a directory and the reverse",
        &["d a\nf a/x\nl b -> a", "l a -> b\nd b"],
        "/ d 755
         a l 777 -> b
         b d 755",
        0,
    ),
    (
        "duplicates in one tar: the last entry wins",
        &["f x data=1
           f x data=22
           d d
           f d/c
           f d data=abc
           f e
           d e mode=700
           d k mode=700
           f k/c
           d k mode=750"],
        "/ d 755
         d f 644 size=3
         e d 700
         k d 750
         k/c f 644 size=0
         x f 644 size=2",
        0,
    ),
    (
        "hard links share a node",
        &["f a data=abc mode=600\nh b -> a\nh dir/c -> ./a"],
        "/ d 755
         a f 600 size=3 nlink=3
         b f 600 size=3 nlink=3
         dir d 755
         dir/c f 600 size=3 nlink=3",
        0,
    ),
    (
        "hard link to a missing target is skipped",
        &["f a\nh b -> nothing\nh c -> a/b"],
        "/ d 755
         a f 644 size=0",
        2,
    ),
    (
        "hard link to a directory is skipped",
        &["d a\nh b -> a"],
        "/ d 755
         a d 755",
        1,
    ),
    (
        "hard link across layers names the lower file (umoci links inside the rootfs)",
        &["f a data=abc", "h b -> a"],
        "/ d 755
         a f 644 size=3 nlink=2
         b f 644 size=3 nlink=2",
        0,
    ),
    (
        "hard link to a whited-out target is skipped",
        &["f a data=abc", "w .wh.a\nh b -> a"],
        "/ d 755",
        1,
    ),
    (
        "replacing one name of a hard link leaves the other",
        &["f a data=abc\nh b -> a", "f a data=newer"],
        "/ d 755
         a f 644 size=5
         b f 644 size=3",
        0,
    ),
    (
        "whiteout of one name of a cross-layer hard link",
        &["f a data=abc", "h b -> a\nw .wh.a"],
        "/ d 755
         b f 644 size=3",
        0,
    ),
    (
        "symlinks are verbatim",
        &["l abs -> /etc/passwd\nl rel -> ../../x\nl dot -> ."],
        "/ d 755
         abs l 777 -> /etc/passwd
         dot l 777 -> .
         rel l 777 -> ../../x",
        0,
    ),
    (
        "an entry through a symlink lands in its target inside the tree",
        &["d real\nl link -> real", "f link/x data=1"],
        "/ d 755
         link l 777 -> real
         real d 755
         real/x f 644 size=1",
        0,
    ),
    (
        "a symlink pointing outside is resolved inside the tree",
        &["l esc -> ../../../../tmp\nf esc/x\nl abs -> /etc\nf abs/passwd"],
        "/ d 755
         abs l 777 -> /etc
         esc l 777 -> ../../../../tmp
         etc d 755
         etc/passwd f 644 size=0
         tmp d 755
         tmp/x f 644 size=0",
        0,
    ),
    (
        "a symlink loop skips the entry",
        &["l a -> b\nl b -> a\nf a/x"],
        "/ d 755
         a l 777 -> b
         b l 777 -> a",
        1,
    ),
    (
        "a path through a regular file is skipped",
        &["f a\nf a/x"],
        "/ d 755
         a f 644 size=0",
        1,
    ),
    (
        "whiteout through a symlink removes in the target",
        &["d real\nf real/x\nf real/y\nl link -> real", "w link/.wh.x"],
        "/ d 755
         link l 777 -> real
         real d 755
         real/y f 644 size=0",
        0,
    ),
    (
        "the final component is never followed",
        &[
            "d real\nf real/x\nl link -> real",
            "w .wh.link\nf link data=abc",
        ],
        "/ d 755
         link f 644 size=3
         real d 755
         real/x f 644 size=0",
        0,
    ),
    (
        // Regression (issue 14): `umoci repack` writes these when a directory became
        // a file; each printed a warning on import of a good image.
        "whiteouts below a file that replaced a directory are silent no-ops",
        &[
            "d a\nf a/x\nd a/s\nf a/s/y\nf keep",
            "f a data=now\nw a/.wh.x\nw a/.wh.s",
            "w keep/.wh.x\nw keep/deeper/.wh.y",
        ],
        "/ d 755
         a f 644 size=3
         keep f 644 size=0",
        0,
    ),
    (
        "a whiteout through a symlink loop is still a warning",
        &["l a -> b\nl b -> a", "w a/.wh.x"],
        "/ d 755
         a l 777 -> b
         b l 777 -> a",
        1,
    ),
    (
        "invalid whiteouts are skipped",
        &[
            "f x\nd d",
            "w .wh.\nw d/.wh..\nw .wh...\nw .wh..wh.plnk\nw d/.wh.",
        ],
        "/ d 755
         d d 755
         x f 644 size=0",
        5,
    ),
    (
        "a non-directory entry for the root is skipped",
        &["f ./ data=x\nf y"],
        "/ d 755
         y f 644 size=0",
        1,
    ),
    (
        "hostile names: '..' skipped, absolute made relative",
        &["f ../x\nf /abs\nf a/../../b\nf ./ok\nf a/../c"],
        "/ d 755
         abs f 644 size=0
         ok f 644 size=0",
        0,
    ),
];

#[test]
fn merge_table() {
    let mut failures = Vec::new();
    for (name, layers, want, want_warnings) in MERGE_CASES {
        let indexes: Vec<LayerIndex> = layers.iter().map(|l| index(l)).collect();
        let refs: Vec<&LayerIndex> = indexes.iter().collect();
        let merged = merge_layers(&refs);
        let got = listing(&merged.tree);
        if got != expected(want) || merged.warnings.len() != *want_warnings {
            failures.push(format!(
                "--- {name}\nwant:\n{}got:\n{got}warnings (want {want_warnings}): {:#?}\n",
                expected(want),
                merged.warnings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_names_are_index_warnings() {
    let layer = index("f ../x\nf a/../../b\nf a/../c\nf ok");
    assert_eq!(layer.entries.len(), 1);
    assert_eq!(layer.warnings.len(), 3, "{:?}", layer.warnings);
    assert!(layer.warnings.iter().all(|w| w.reason.contains("..")));
}

/// What import reports: per layer, the indexer's warnings first (tar order), then
/// the merge's; a hard link to a file of a lower layer is fine, one to nothing is not.
#[test]
fn skipped_entries_per_layer_in_order() {
    let layers = [
        index("f base\nf ../escape"),
        index("w .wh..\nf a/../../b\nh link -> base\nh dangling -> nowhere"),
        index("f clean"),
    ];
    let refs: Vec<&LayerIndex> = layers.iter().collect();
    let got: Vec<(u32, String, String)> = skipped_entries(&refs)
        .into_iter()
        .map(|w| {
            (
                w.layer,
                String::from_utf8_lossy(&w.path).into_owned(),
                w.reason,
            )
        })
        .collect();
    let dotdot = "entry skipped: path has a '..' component".to_string();
    assert_eq!(
        got,
        vec![
            (0, "../escape".into(), dotdot.clone()),
            (1, "a/../../b".into(), dotdot),
            (1, ".wh..".into(), "invalid whiteout skipped".into()),
            (
                1,
                "dangling".into(),
                "hard link skipped: target does not exist".into()
            ),
        ]
    );
    let merged = merge_layers(&refs);
    assert_eq!(merged.warnings.len(), 2);
    assert!(skipped_entries(&[&layers[2]]).is_empty());
}

#[test]
fn hard_links_share_one_node_id() {
    let layers = [index("f a data=abc"), index("h b -> a\nh c -> b")];
    let merged = merge_layers(&[&layers[0], &layers[1]]);
    let tree = &merged.tree;
    let a = tree.lookup_path(b"a").unwrap();
    assert_eq!(tree.lookup_path(b"b"), Some(a));
    assert_eq!(tree.lookup_path(b"c"), Some(a));
    assert_eq!(tree.node(a).nlink, 3);
    assert_eq!(tree.len(), 2, "root and one file");
    // Content comes from the layer that holds the data.
    assert_eq!(
        tree.node(a).content,
        Some(ContentLoc { layer: 0, entry: 0 })
    );
}

#[test]
fn node_ids_are_dense_stable_and_sorted() {
    let layers = [
        index("d b\nf b/z\nf b/a\nd a\nf c"),
        index("f a/x\nw b/.wh.z"),
    ];
    let refs = [&layers[0], &layers[1]];
    let first = merge_layers(&refs).tree;
    let second = merge_layers(&refs).tree;
    assert_eq!(first, second);
    assert_eq!(first.root(), NodeId(0));
    let names: Vec<&[u8]> = first
        .children(first.root())
        .iter()
        .map(|(n, _)| &**n)
        .collect();
    assert_eq!(names, [&b"a"[..], b"b", b"c"]);
    // Depth first in name order: a, a/x, b, b/a, c.
    let ids: Vec<u32> = first.walk().iter().map(|(_, id)| id.0).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    assert_eq!(first.len(), 6);
    assert_eq!(first.subdir_count(first.root()), 2);
    assert_eq!(first.node(first.root()).nlink, 4);
    assert_eq!(first.lookup(first.root(), b"missing"), None);
    assert_eq!(
        first.node(first.lookup_path(b"b/a").unwrap()).content,
        Some(ContentLoc { layer: 0, entry: 2 })
    );
    assert_eq!(
        first.node(first.lookup_path(b"a/x").unwrap()).content,
        Some(ContentLoc { layer: 1, entry: 0 })
    );
}

#[test]
fn layer_view_shows_the_tar_as_is() {
    let layer = index(
        "f a/.wh.x
         w .wh..wh..opq
         f d data=1
         d d
         f d/c
         h link -> d/c
         h lost -> elsewhere",
    );
    let view = layer_tree(&layer, 3);
    assert_eq!(
        listing(&view.tree),
        expected(
            "/ d 755
             .wh..wh..opq f 644 size=0
             a d 755
             a/.wh.x f 644 size=0
             d d 755
             d/c f 644 size=0 nlink=2
             link f 644 size=0 nlink=2"
        )
    );
    assert_eq!(view.warnings.len(), 1);
    assert_eq!(view.warnings[0].layer, 3);
    let c = view.tree.lookup_path(b"d/c").unwrap();
    assert_eq!(
        view.tree.node(c).content,
        Some(ContentLoc { layer: 3, entry: 4 })
    );
}

#[test]
fn attributes_from_headers_and_pax() {
    let long_name = format!("dir/{}/file", "n".repeat(150));
    let long_target = format!("/{}", "t".repeat(200));
    let pax_name = format!("pax/{}", "p".repeat(180));
    let description = format!(
        "f x pax.mtime=1700000000.123456789 xattr=user.note=hello xattr=security.capability=\x01\x02 mtime=5
         f {long_name} data=long
         l gnu-link -> {long_target}
         f {pax_name} paxpath data=pax
         l pax-link paxpath -> {long_target}
         f lib pax.LIBARCHIVE.xattr.user.a%3Db=aGVsbG8= pax.uid=4000000000 pax.gid=12
         f big pax.uid=5000000000
         c tty dev=4:64 pax.SCHILY.devmajor=136 pax.SCHILY.devminor=1"
    );
    let layer = index(&description);
    let merged = merge_layers(&[&layer]);
    let tree = &merged.tree;
    let x = tree.node(tree.lookup_path(b"x").unwrap());
    assert_eq!((x.mtime, x.mtime_nsec), (1_700_000_000, 123_456_789));
    assert_eq!(x.xattr(b"user.note"), Some(&b"hello"[..]));
    assert_eq!(x.xattr(b"security.capability"), Some(&[1u8, 2][..]));
    assert_eq!(
        tree.node(tree.lookup_path(long_name.as_bytes()).unwrap())
            .size,
        4
    );
    let gnu_link = tree.node(tree.lookup_path(b"gnu-link").unwrap());
    assert_eq!(
        gnu_link.symlink_target.as_deref(),
        Some(long_target.as_bytes())
    );
    assert_eq!(gnu_link.size, long_target.len() as u64);
    assert_eq!(
        tree.node(tree.lookup_path(pax_name.as_bytes()).unwrap())
            .size,
        3
    );
    let pax_link = tree.node(tree.lookup_path(b"pax-link").unwrap());
    assert_eq!(
        pax_link.symlink_target.as_deref(),
        Some(long_target.as_bytes())
    );
    let lib = tree.node(tree.lookup_path(b"lib").unwrap());
    assert_eq!(lib.xattr(b"user.a=b"), Some(&b"hello"[..]));
    assert_eq!((lib.uid, lib.gid), (4_000_000_000, 12));
    assert_eq!(
        tree.lookup_path(b"big"),
        None,
        "uid beyond 32 bits is skipped"
    );
    let tty = tree.node(tree.lookup_path(b"tty").unwrap());
    assert_eq!((tty.rdev_major, tty.rdev_minor), (136, 1));
    assert_eq!(tty.rdev(), libc::makedev(136, 1));
    assert_eq!(layer.warnings.len(), 1, "{:?}", layer.warnings);
}

#[test]
fn oversized_names_and_xattrs_are_bounded() {
    let too_long = format!("{}/x", "d/".repeat(2100));
    let layer = index(&format!(
        "f {too_long}
         f ok xattr=user.big={}",
        "v".repeat(70 * 1024)
    ));
    assert_eq!(layer.entries.len(), 1);
    assert!(layer.entries[0].xattrs.is_empty());
    assert_eq!(layer.warnings.len(), 2, "{:?}", layer.warnings);
}

#[test]
fn diff_id_covers_the_whole_stream() {
    let mut bytes = tar("f a data=hello\nd b");
    // Trailing data after the end-of-archive blocks (record padding) counts.
    bytes.extend_from_slice(&[0u8; 4096]);
    let layer = index_layer(&bytes[..], &mut DiscardSink).unwrap();
    assert_eq!(layer.diff_id, crate::DiffId(Digest::of(&bytes)));
    assert_eq!(layer.uncompressed_size, bytes.len() as u64);
    assert_eq!(layer.entries.len(), 2);
    assert_eq!(layer.entries[0].content, ContentRef::StreamOffset(512));
}

#[test]
fn missing_end_of_archive_blocks_is_valid() {
    let bytes = tar("f a data=hello\nf b data=x");
    let cut = &bytes[..bytes.len() - 1024];
    let layer = index_layer(cut, &mut DiscardSink).unwrap();
    assert_eq!(layer.entries.len(), 2);
    assert_eq!(layer.diff_id, crate::DiffId(Digest::of(cut)));
}

/// How a stream may end, read as Go's archive/tar reads it (`tests/go_tar.rs` checks
/// the same endings against `umoci unpack`). Regression (issue 14): umoci 0.4.7
/// `insert` ends a layer right after the last file's data, with no padding and no
/// end-of-archive blocks, and import refused it ("truncated at byte 577: padding").
#[test]
fn tar_endings_as_go_reads_them() {
    // a: header 0, data 512..517; b: header 1024, data 1536..1546, padding to 2048;
    // end-of-archive blocks 2048..3072.
    let full = tar("f a data=hello\nf b data=0123456789");
    assert_eq!(full.len(), 3072);
    // c's PAX header at 1024, its records from 1536, padding to 2048, c at 2048.
    let pax = tar("f a data=hello\nf c pax.mtime=5");
    let records_end = 1536 + pax[1536..2048].iter().position(|&b| b == 0).unwrap();
    let not_zero = [&full[..2560], &full[..512]].concat();
    let junk = [&full[..], b"junk"].concat();
    #[derive(Debug, PartialEq)]
    enum Want {
        Entries(usize),
        Truncated,
        BadHeader,
    }
    use Want::*;
    let cases: &[(&str, &[u8], Want)] = &[
        ("empty stream", &[], Entries(0)),
        (
            "no padding, no end blocks (umoci insert)",
            &full[..1546],
            Entries(2),
        ),
        ("part of the padding", &full[..1600], Entries(2)),
        ("padding, no end blocks", &full[..2048], Entries(2)),
        ("one end block", &full[..2560], Entries(2)),
        ("two end blocks", &full[..], Entries(2)),
        ("junk after two end blocks", &junk, Entries(2)),
        ("cut inside the second end block", &full[..2660], Truncated),
        ("an end block, then a header", &not_zero, BadHeader),
        ("cut inside a header", &full[..1124], Truncated),
        ("cut inside data", &full[..1541], Truncated),
        (
            "cut right after an extension header",
            &pax[..2048],
            Entries(1),
        ),
        (
            "cut in an extension header's padding",
            &pax[..records_end],
            Entries(1),
        ),
        (
            "cut inside an extension header's data",
            &pax[..1540],
            Truncated,
        ),
        ("cut inside an extension header", &pax[..1100], Truncated),
        (
            "cut inside the header after an extension",
            &pax[..2100],
            Truncated,
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, want) in cases {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(cache_dir.path()).unwrap();
        for (sink, result) in [
            ("discard", index_layer(*bytes, &mut DiscardSink)),
            ("cache", unpack_layer(*bytes, &cache)),
        ] {
            let got = match &result {
                Ok(layer) => {
                    assert_eq!(layer.diff_id, crate::DiffId(Digest::of(bytes)), "{name}");
                    assert_eq!(layer.uncompressed_size, bytes.len() as u64, "{name}");
                    Entries(layer.entries.len())
                }
                Err(LayerError::Truncated { .. }) => Truncated,
                Err(LayerError::BadHeader { .. }) => BadHeader,
                Err(other) => panic!("{name} ({sink}): {other}"),
            };
            if got != *want {
                failures.push(format!("{name} ({sink}): want {want:?}, got {result:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The last file's content is all there without its padding.
    let cut = &full[..1546];
    let layer = index_layer(cut, &mut DiscardSink).unwrap();
    let mut content = Vec::new();
    extract_entry(cut, &layer.entries[1], &mut content).unwrap();
    assert_eq!(content, b"0123456789");
}

#[test]
fn truncated_streams_are_errors() {
    let bytes = tar("f a size=3000\nf b data=x");
    for cut in [100, 512 + 100, 512 + 2048, 512 + 3072 + 200] {
        let result = index_layer(&bytes[..cut], &mut DiscardSink);
        assert!(
            matches!(result, Err(LayerError::Truncated { .. })),
            "cut at {cut}: {result:?}"
        );
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(cache_dir.path()).unwrap();
        let result = unpack_layer(&bytes[..cut], &cache);
        assert!(
            matches!(result, Err(LayerError::Truncated { .. })),
            "cut at {cut}: {result:?}"
        );
    }
    let not_tar = vec![7u8; 2048];
    assert!(matches!(
        index_layer(&not_tar[..], &mut DiscardSink),
        Err(LayerError::BadHeader { .. })
    ));
}

#[test]
fn declared_sizes_are_never_allocated() {
    // A header claiming a 1 TiB file, a 1 TiB PAX header, a 1 TiB long name: each is
    // a truncated stream, and nothing is allocated for the claim.
    for typeflag in [b'0', b'x', b'L'] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..4].copy_from_slice(b"huge");
        header.set_entry_type(tar::EntryType::new(typeflag));
        header.set_size(1 << 40);
        header.set_cksum();
        let result = index_layer(&header.as_bytes()[..], &mut DiscardSink);
        assert!(
            matches!(result, Err(LayerError::Truncated { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn too_many_entries() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let bytes = tar("f a\nf b\nf c\nf d");
    let result = index_layer_with_limits(&bytes[..], &mut DiscardSink, &limits);
    assert!(matches!(result, Err(LayerError::TooManyEntries(3))));
}

#[test]
fn gzip_and_zstd_streams() {
    let bytes = tar("f a data=hello\nd b\nf b/c size=100000");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes[..1024]).unwrap();
    let mut gzip = gz.finish().unwrap();
    // A second gzip member: layers can be multi-member.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes[1024..]).unwrap();
    gzip.extend(gz.finish().unwrap());
    let zstd = zstd::encode_all(&bytes[..], 3).unwrap();
    for (blob, compression) in [
        (bytes.clone(), LayerCompression::None),
        (gzip, LayerCompression::Gzip),
        (zstd, LayerCompression::Zstd),
    ] {
        assert_eq!(LayerCompression::sniff(&blob), compression);
        let stream = open_layer_stream(&blob[..], compression).unwrap();
        let layer = index_layer(stream, &mut DiscardSink).unwrap();
        assert_eq!(
            layer.diff_id,
            crate::DiffId(Digest::of(&bytes)),
            "{compression:?}"
        );
        assert_eq!(layer.entries.len(), 3);
        let (sniffed, stream) = open_layer_stream_sniffed(&blob[..]).unwrap();
        assert_eq!(sniffed, compression);
        assert_eq!(index_layer(stream, &mut DiscardSink).unwrap(), layer);
    }
}

#[test]
fn cache_sink_dedups_and_serves_content() {
    let bytes = tar("f a data=same\nf b data=same\nf c data=other\nf empty\nl s -> a");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(cache_dir.path()).unwrap();
    let layer = unpack_layer(&bytes[..], &cache).unwrap();
    let plain = index_layer(&bytes[..], &mut DiscardSink).unwrap();
    assert_eq!(layer.diff_id, plain.diff_id);
    assert_eq!(layer.entries.len(), plain.entries.len());
    assert_eq!(layer.entries[0].content, layer.entries[1].content);
    let ContentRef::Cached(id) = layer.entries[0].content else {
        panic!("not cached")
    };
    assert_eq!(
        cache.content_path(&id),
        cache_dir
            .path()
            .join("content")
            .join(&id.hex()[..2])
            .join(id.hex())
    );
    assert_eq!(Digest::of(b"same").hex(), id.hex());
    let files = walk_files(&cache_dir.path().join(CONTENT_DIR));
    assert_eq!(files, 3, "same, other, empty");
    assert_eq!(
        std::fs::read_dir(cache_dir.path().join(TMP_DIR))
            .unwrap()
            .count(),
        0
    );
    for (i, want) in [(0, &b"same"[..]), (2, b"other"), (3, b"")] {
        let Content::Cached { mut file, .. } = open_content(&cache, &layer.entries[i]).unwrap()
        else {
            panic!("not cached");
        };
        let mut got = Vec::new();
        file.read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
        // The same entry from the DiscardSink index, extracted from the stream.
        assert!(matches!(
            open_content(&cache, &plain.entries[i]).unwrap(),
            Content::InStream { .. }
        ));
        let mut extracted = Vec::new();
        extract_entry(&bytes[..], &plain.entries[i], &mut extracted).unwrap();
        assert_eq!(extracted, want);
    }
    assert!(matches!(
        open_content(&cache, &layer.entries[4]),
        Err(LayerError::NoContent(_))
    ));
    // A damaged cache file is detected by its size.
    let path = cache.content_path(&id);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, b"sam").unwrap();
    assert!(matches!(
        open_content(&cache, &layer.entries[0]),
        Err(LayerError::Io(_))
    ));
}

fn walk_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            count += walk_files(&entry.path());
        } else {
            count += 1;
        }
    }
    count
}

#[test]
fn index_file_round_trip_and_corruption() {
    let layer = index(
        "f a data=hi xattr=user.x=1 pax.mtime=1.5
         l s -> a
         h h -> a
         c dev dev=1:2
         f ../bad",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.idx");
    layer.write_to(&path).unwrap();
    assert_eq!(LayerIndex::read_from(&path).unwrap(), layer);
    let bytes = std::fs::read(&path).unwrap();
    // Half-written, flipped bit, wrong version, empty: all refused.
    for bad in [
        bytes[..bytes.len() / 2].to_vec(),
        {
            let mut b = bytes.clone();
            b[40] ^= 1;
            b
        },
        {
            let mut b = bytes.clone();
            b[8] = 9;
            b
        },
        Vec::new(),
    ] {
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            LayerIndex::read_from(&path),
            Err(LayerError::CorruptIndex(_))
        ));
    }
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(cache_dir.path()).unwrap();
    let unpacked = unpack_layer(&tar("f a data=x")[..], &cache).unwrap();
    let path = cache.index_path(&Digest::of(b"blob"));
    unpacked.write_to(&path).unwrap();
    assert_eq!(LayerIndex::read_from(&path).unwrap(), unpacked);
}

#[test]
fn gnu_sparse_files_with_system_tar() {
    use std::process::Command;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("sparse");
    {
        let mut f = std::fs::File::create(&file).unwrap();
        f.set_len(3 * 1024 * 1024).unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(1024 * 1024)).unwrap();
        f.write_all(b"middle").unwrap();
        f.seek(SeekFrom::Start(3 * 1024 * 1024 - 3)).unwrap();
        f.write_all(b"end").unwrap();
    }
    let want = std::fs::read(&file).unwrap();
    for format in ["gnu", "posix"] {
        for version in ["", "0.1", "1.0"] {
            if format == "gnu" && !version.is_empty() {
                continue;
            }
            let out = work.path().join(format!("{format}{version}.tar"));
            let mut command = Command::new("tar");
            command
                .arg(format!("--format={format}"))
                .arg("-S")
                .arg("-cf")
                .arg(&out)
                .arg("-C")
                .arg(work.path())
                .arg("sparse");
            if !version.is_empty() {
                command.arg(format!("--sparse-version={version}"));
            }
            match command.status() {
                Ok(status) if status.success() => {}
                _ => {
                    eprintln!("note: GNU tar unavailable, sparse test skipped");
                    return;
                }
            }
            let bytes = std::fs::read(&out).unwrap();
            let layer = index_layer(&bytes[..], &mut DiscardSink).unwrap();
            assert_eq!(
                layer.entries.len(),
                1,
                "{format} {version}: {:?}",
                layer.warnings
            );
            let entry = &layer.entries[0];
            assert_eq!(&*entry.path, b"sparse", "{format} {version}");
            assert_eq!(entry.size, want.len() as u64);
            assert!(
                entry.sparse.is_some(),
                "{format} {version}: not seen as sparse"
            );
            let mut extracted = Vec::new();
            extract_entry(&bytes[..], entry, &mut extracted).unwrap();
            assert!(extracted == want, "{format} {version}: content differs");
            let cache_dir = tempfile::tempdir().unwrap();
            let cache = CacheDir::new(cache_dir.path()).unwrap();
            let unpacked = unpack_layer(&bytes[..], &cache).unwrap();
            let Content::Cached { path, .. } = open_content(&cache, &unpacked.entries[0]).unwrap()
            else {
                panic!("not cached");
            };
            assert!(std::fs::read(path).unwrap() == want);
        }
    }
}

#[test]
fn hundred_thousand_entries() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut count = 0;
    for d in 0..1000 {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, format!("usr/share/dir{d:04}/"), &[][..])
            .unwrap();
        count += 1;
        for f in 0..99 {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            let data = format!("{d}-{f}");
            header.set_size(data.len() as u64);
            builder
                .append_data(
                    &mut header,
                    format!("usr/share/dir{d:04}/file-{f:03}.txt"),
                    data.as_bytes(),
                )
                .unwrap();
            count += 1;
        }
    }
    let bytes = builder.into_inner().unwrap();
    let start = Instant::now();
    let layer = index_layer(&bytes[..], &mut DiscardSink).unwrap();
    let index_time = start.elapsed();
    assert_eq!(layer.entries.len(), count);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.idx");
    let start = Instant::now();
    layer.write_to(&path).unwrap();
    let write_time = start.elapsed();
    let start = Instant::now();
    let loaded = LayerIndex::read_from(&path).unwrap();
    let load_time = start.elapsed();
    assert_eq!(loaded, layer);
    let start = Instant::now();
    let merged = merge_layers(&[&loaded]);
    let merge_time = start.elapsed();
    assert_eq!(merged.tree.len(), count + 3);
    eprintln!(
        "100k entries: tar {} MiB, index {:?}, index file {} KiB written in {:?}, loaded in {:?}, merged in {:?}",
        bytes.len() >> 20,
        index_time,
        std::fs::metadata(&path).unwrap().len() >> 10,
        write_time,
        load_time,
        merge_time
    );
}
