//! `rootfs/` and `layers/NNN/files/` through real mounts of the built binary: the
//! merge rules on generated layers, equality with `umoci unpack` on a real image,
//! hostile tars, the bounded unpack cache, a crash while unpacking, open files
//! after `rm` + `gc`, and laziness. Needs root, /dev/fuse and umoci: skipped with a
//! note otherwise, failed when `CI=true`. Every mount is guarded; every blocking
//! call has a timeout.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imagefs::testing::sample::{self, Built, BuiltLayer, Compression, ImageBuilder, LayerSpec};
use util::{with_timeout, Cmd, Mount, TestDir};

/// Writes an OCI layout holding `images` (name, layer descriptions, base first).
fn layout(t: &TestDir, dir: &str, images: &[(&str, &[&str])]) -> PathBuf {
    let built: Vec<(String, Built)> = images
        .iter()
        .map(|(name, layers)| {
            let mut builder = ImageBuilder::new();
            for layer in *layers {
                let spec = LayerSpec::parse(layer).expect("valid layer description");
                builder = builder.layer(&spec, Compression::Gzip);
            }
            (
                name.to_string(),
                Built::from(builder.build().expect("image builds")),
            )
        })
        .collect();
    let entries: Vec<(Option<&str>, &Built)> =
        built.iter().map(|(n, b)| (Some(n.as_str()), b)).collect();
    let path = t.join(dir);
    sample::write_oci_layout(&path, &entries).expect("layout written");
    path
}

/// Runs a shell script in `dir` (20 s at most); asserts success, returns stdout.
fn sh(dir: &Path, script: &str) -> String {
    Cmd::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .timeout_secs(20)
        .stdout()
}

/// The tree of `dir` as `find` sees it (see `util::tree_listing`).
fn listing(dir: &Path) -> Vec<String> {
    util::tree_listing(dir)
}

/// sha256 of every regular file below `dir`, by path.
fn hashes(dir: &Path) -> String {
    util::tree_hashes(dir)
}

fn can_run() -> bool {
    util::require_fuse()
}

/// Imports `layout` (every image under its own name) into the test's store.
fn import(t: &TestDir, layout: &Path) {
    t.imagefs()
        .arg("import")
        .arg(layout)
        .timeout_secs(60)
        .assert_ok();
}

fn rootfs(m: &Mount, repo_tag: &str) -> PathBuf {
    let (repo, tag) = repo_tag.rsplit_once(':').expect("repo:tag");
    m.join(format!("{repo}/tags/{tag}/rootfs"))
}

// ---- 1. the merge rules, case by case ----

struct Case {
    name: &'static str,
    layers: &'static [&'static str],
    /// `path|type|mode|uid|gid|size|link|nlink`, directories with size `-`.
    expected: &'static [&'static str],
    /// (path, exact content) of files to read.
    contents: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "file types, modes, owners",
        layers: &[r#"
            dir /bin 0755
            file /bin/su 4755 "su" uid=0 gid=0
            file /bin/wall 2755 "wall" gid=5
            dir /tmp 1777
            file /home 0600 "secret" uid=1000 gid=1000
            symlink /bin/sh su
            symlink /abs /etc/../bin/su
            fifo /pipe 0640
            chardev /null 0666 1 3
            blockdev /sda 0660 8 0 gid=6
        "#],
        expected: &[
            "abs|l|777|0|0|14|/etc/../bin/su|1",
            "bin|d|755|0|0|-||2",
            "bin/sh|l|777|0|0|2|su|1",
            "bin/su|f|4755|0|0|2||1",
            "bin/wall|f|2755|0|5|4||1",
            "home|f|600|1000|1000|6||1",
            "null|c|666|0|0|0||1",
            "pipe|p|640|0|0|0||1",
            "sda|b|660|0|6|0||1",
            "tmp|d|1777|0|0|-||2",
        ],
        contents: &[("bin/su", "su"), ("home", "secret")],
    },
    Case {
        name: "whiteouts remove files and whole directories",
        layers: &[
            r#"file /a 0644 "a"; file /b 0644 "b"; dir /d 0755; file /d/x 0644 "x"; dir /d/e 0755"#,
            "whiteout /a; whiteout /d",
        ],
        expected: &["b|f|644|0|0|1||1"],
        contents: &[("b", "b")],
    },
    Case {
        name: "opaque directory hides lower children, keeps its own",
        layers: &[
            r#"dir /d 0755; file /d/x 0644 "x"; dir /d/sub 0755; file /d/sub/y 0644 "y""#,
            r#"opaque /d; file /d/z 0644 "zz""#,
        ],
        expected: &["d|d|755|0|0|-||2", "d/z|f|644|0|0|2||1"],
        contents: &[("d/z", "zz")],
    },
    Case {
        name: "later layers win, dir over dir keeps children",
        layers: &[
            r#"file /f 0644 "one"; dir /d 0755; file /d/keep 0644 "k"; file /g 0644 "g""#,
            r#"file /f 0600 "two!" uid=7; dir /d 0700 uid=3; dir /g 0755"#,
        ],
        expected: &[
            "d|d|700|3|0|-||2",
            "d/keep|f|644|0|0|1||1",
            "f|f|600|7|0|4||1",
            "g|d|755|0|0|-||2",
        ],
        contents: &[("f", "two!"), ("d/keep", "k")],
    },
    Case {
        name: "duplicates in one tar: the last entry wins",
        layers: &[r#"
            file /f 0644 "first"
            file /f 0640 "second!"
            file /x 0644 "file"
            dir /x 0755
            file /x/in 0644 "in"
            symlink /s target
            dir /s 0750
        "#],
        expected: &[
            "f|f|640|0|0|7||1",
            "s|d|750|0|0|-||2",
            "x|d|755|0|0|-||2",
            "x/in|f|644|0|0|2||1",
        ],
        contents: &[("f", "second!")],
    },
    Case {
        name: "implied parent directories",
        layers: &[r#"file /a/b/c/d 0644 "deep""#],
        expected: &[
            "a|d|755|0|0|-||3",
            "a/b|d|755|0|0|-||3",
            "a/b/c|d|755|0|0|-||2",
            "a/b/c/d|f|644|0|0|4||1",
        ],
        contents: &[("a/b/c/d", "deep")],
    },
    Case {
        name: "hard links share a node and count their names",
        layers: &[
            r#"file /h1 0755 "linked"; hardlink /h2 h1; dir /sub 0755; hardlink /sub/h3 h1"#,
            r#"hardlink /h4 h1"#,
        ],
        expected: &[
            "h1|f|755|0|0|6||4",
            "h2|f|755|0|0|6||4",
            "h4|f|755|0|0|6||4",
            "sub|d|755|0|0|-||2",
            "sub/h3|f|755|0|0|6||4",
        ],
        contents: &[("h4", "linked"), ("sub/h3", "linked")],
    },
    Case {
        name: "long names and link targets, GNU and PAX",
        layers: &[r#"
            file /dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/gnu-file-with-a-long-name 0644 "g" names=gnu
            file /pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp/pax-file-with-a-long-name 0644 "p" names=pax
            symlink /l tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt names=pax
        "#],
        expected: &[
            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd|d|755|0|0|-||2",
            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/gnu-file-with-a-long-name|f|644|0|0|1||1",
            "l|l|777|0|0|124|tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt|1",
            "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp|d|755|0|0|-||2",
            "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp/pax-file-with-a-long-name|f|644|0|0|1||1",
        ],
        contents: &[],
    },
];

#[test]
fn generated_layers_follow_every_rule() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("rules");
    let images: Vec<(String, &[&str])> = CASES
        .iter()
        .enumerate()
        .map(|(i, case)| (format!("dev/case:{i}"), case.layers))
        .collect();
    let refs: Vec<(&str, &[&str])> = images.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    import(&t, &layout(&t, "layout", &refs));
    let m = t.mount(&[]);
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let root = rootfs(&m, &format!("local/dev/case:{i}"));
        let got = listing(&root);
        if got != case.expected {
            failures.push(format!(
                "case {i} ({}):\n  expected {:#?}\n  got {:#?}",
                case.name, case.expected, got
            ));
        }
        for (path, content) in case.contents {
            let file = root.join(path);
            let bytes = with_timeout(10, move || fs::read(file));
            match bytes {
                Ok(bytes) if bytes == content.as_bytes() => {}
                other => failures.push(format!("case {i}: {path}: {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Hard links: one inode; other paths: distinct inodes.
    let links = rootfs(&m, "local/dev/case:6");
    let inode = |p: &str| fs::symlink_metadata(links.join(p)).unwrap().ino();
    assert_eq!(inode("h1"), inode("h2"));
    assert_eq!(inode("h1"), inode("sub/h3"));
    assert_eq!(inode("h1"), inode("h4"));
    assert_ne!(inode("h1"), inode("sub"));
    // Device numbers and mtimes.
    let types = rootfs(&m, "local/dev/case:0");
    let null = fs::symlink_metadata(types.join("null")).unwrap();
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mtime(), sample::SAMPLE_MTIME as i64);
    // Inode numbers are stable while mounted.
    assert_eq!(inode("h1"), inode("h2"));
}

#[test]
fn xattrs_and_permissions() {
    if !can_run() || !util::require_tool("getfattr") || !util::require_tool("setpriv") {
        return;
    }
    let t = TestDir::new("xattrs");
    let layer = r#"
        file /f 0644 "x"
        xattr /f user.comment "hello world"
        xattr /f security.capability "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        xattr /f trusted.hidden "no"
        file /secret 0600 "s"
        dir /private 0700
        file /private/inner 0644 "i"
    "#;
    import(&t, &layout(&t, "layout", &[("dev/x:1", &[layer])]));
    let m = t.mount(&["--allow-other"]);
    let root = rootfs(&m, "local/dev/x:1");
    let out = sh(&root, "getfattr -d -m - -e text f");
    assert!(out.contains("user.comment=\"hello world\""), "{out}");
    assert!(out.contains("security.capability"), "{out}");
    assert!(!out.contains("trusted"), "{out}");
    let value = sh(&root, "getfattr --only-values -n user.comment f");
    assert_eq!(value, "hello world");
    let missing = Cmd::new("getfattr")
        .args(["-n", "user.nothing"])
        .arg(root.join("f"))
        .output();
    assert_ne!(missing.code, Some(0));
    assert!(missing.stderr.contains("No such attribute"), "{missing:?}");
    // The kernel enforces mode bits for other users (default_permissions).
    let as_nobody = |path: &str| {
        Cmd::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(root.join(path))
            .output()
    };
    let denied = as_nobody("secret");
    assert!(denied.stderr.contains("Permission denied"), "{denied:?}");
    let denied = as_nobody("private/inner");
    assert!(denied.stderr.contains("Permission denied"), "{denied:?}");
    assert_eq!(as_nobody("f").assert_ok().stdout, "x");
    // Read-only: every write answers EROFS.
    for script in [
        "touch f",
        "echo >> f",
        "rm f",
        "mkdir newdir",
        "ln -s x newlink",
        "chmod 777 f",
        "mv f g",
        "setfattr -n user.a -v b f",
    ] {
        let out = Cmd::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&root)
            .timeout_secs(10)
            .output();
        assert_ne!(out.code, Some(0), "{script} succeeded");
        assert!(out.stderr.contains("Read-only"), "{script}: {out:?}");
    }
}

#[test]
fn sparse_files_read_with_holes() {
    if !can_run() || !util::require_tool("tar") {
        return;
    }
    let t = TestDir::new("sparse");
    let src = t.mkdir("src");
    sh(
        &src,
        "printf head > sparse && truncate -s 5M sparse && printf tail >> sparse && \
         tar --sparse --format=gnu --owner=0 --group=0 -cf ../sparse.tar sparse",
    );
    let tar = fs::read(t.join("sparse.tar")).unwrap();
    let layer = BuiltLayer::from_tar(tar, Compression::Gzip).unwrap();
    let image = ImageBuilder::new().built_layer(layer).build().unwrap();
    let path = t.join("layout");
    sample::write_oci_layout(&path, &[(Some("dev/sparse:1"), &Built::from(image))]).unwrap();
    import(&t, &path);
    let m = t.mount(&[]);
    let file = rootfs(&m, "local/dev/sparse:1").join("sparse");
    let bytes = with_timeout(20, move || fs::read(file).unwrap());
    let expected = fs::read(src.join("sparse")).unwrap();
    assert_eq!(bytes.len(), expected.len());
    assert!(bytes == expected, "sparse content differs");
}

// ---- 2. a real image against umoci unpack ----

#[test]
fn rootfs_equals_umoci_unpack() {
    if !can_run() || !util::require_tool("umoci") {
        return;
    }
    let t = TestDir::new("umoci");
    let dir = t.path().to_path_buf();
    // Build an image with umoci: a base, then two repacks with real whiteouts.
    sh(
        &dir,
        r#"set -e
        umoci init --layout L
        umoci new --image L:v1
        umoci unpack --image L:v1 b1 >/dev/null
        r=b1/rootfs
        mkdir -p $r/etc/conf.d $r/usr/bin $r/var/lib/gone $r/opt/keep
        echo 'NAME=test' > $r/etc/os-release
        echo one > $r/etc/conf.d/a.conf; echo two > $r/etc/conf.d/b.conf
        head -c 100000 /dev/urandom > $r/usr/bin/tool; chmod 0755 $r/usr/bin/tool
        echo data > $r/var/lib/gone/file; echo keep > $r/opt/keep/file
        ln -s ../usr/bin/tool $r/etc/tool-link
        ln $r/usr/bin/tool $r/usr/bin/tool-hard
        mkfifo $r/etc/fifo
        chown 1000:100 $r/opt/keep/file
        umoci repack --image L:v1 b1
        umoci unpack --image L:v1 b2 >/dev/null
        r=b2/rootfs
        echo changed > $r/etc/os-release
        rm $r/etc/conf.d/a.conf
        rm -r $r/var/lib/gone
        chmod 4750 $r/usr/bin/tool
        echo new > $r/etc/new-file
        ln -s /etc/os-release $r/abs-link
        ln $r/etc/new-file $r/etc/new-hard
        umoci repack --image L:v2 b2
        umoci unpack --image L:v2 b3 >/dev/null
        r=b3/rootfs
        rm -r $r/opt/keep
        mkdir -p $r/opt/keep; echo again > $r/opt/keep/other
        chmod 0700 $r/etc/conf.d
        umoci repack --image L:v3 b3
        "#,
    );
    for tag in ["v1", "v2", "v3"] {
        t.imagefs()
            .arg("import")
            .arg(format!("{}:{tag}", dir.join("L").display()))
            .arg(format!("dev/umoci:{tag}"))
            .assert_ok();
    }
    let m = t.mount(&[]);
    for tag in ["v1", "v2", "v3"] {
        let reference = dir.join(format!("ref-{tag}"));
        sh(
            &dir,
            &format!("umoci unpack --image L:{tag} ref-{tag} >/dev/null"),
        );
        let ours = rootfs(&m, &format!("dev/umoci:{tag}"));
        let theirs = reference.join("rootfs");
        assert_eq!(listing(&ours), listing(&theirs), "{tag}: find listings");
        let (ours_hashes, theirs_hashes) = (hashes(&ours), hashes(&theirs));
        assert_eq!(ours_hashes, theirs_hashes, "{tag}: file contents");
        assert!(ours_hashes.contains("usr/bin/tool"), "{ours_hashes}");
    }
    // files/ shows the whiteouts umoci wrote.
    let layers = m.join("dev/umoci/tags/v2/layers");
    let own = listing(&layers.join("001/files"));
    assert!(
        own.iter()
            .any(|l| l.starts_with("etc/conf.d/.wh.a.conf|f|")),
        "{own:#?}"
    );
    assert!(
        own.iter().any(|l| l.starts_with("var/lib/.wh.gone|f|")),
        "{own:#?}"
    );
}

// ---- 3. files/ as the tar has it ----

#[test]
fn layer_files_show_whiteout_markers() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("files");
    let base = r#"dir /d 0755; file /d/x 0644 "x"; file /gone 0644 "g""#;
    let upper = r#"opaque /d; file /d/y 0600 "yy" uid=5; whiteout /gone; hardlink /d/z d/y"#;
    import(&t, &layout(&t, "layout", &[("dev/f:1", &[base, upper])]));
    let m = t.mount(&[]);
    let layers = m.join("local/dev/f/tags/1/layers");
    assert_eq!(
        listing(&layers.join("000/files")),
        [
            "d|d|755|0|0|-||2",
            "d/x|f|644|0|0|1||1",
            "gone|f|644|0|0|1||1"
        ]
    );
    assert_eq!(
        listing(&layers.join("001/files")),
        [
            ".wh.gone|f|644|0|0|0||1",
            "d|d|755|0|0|-||2",
            "d/.wh..wh..opq|f|644|0|0|0||1",
            "d/y|f|600|5|0|2||2",
            "d/z|f|600|5|0|2||2",
        ]
    );
    let y = layers.join("001/files/d/z");
    assert_eq!(with_timeout(10, move || fs::read(y).unwrap()), b"yy");
    assert_eq!(
        listing(&rootfs(&m, "local/dev/f:1")),
        [
            "d|d|755|0|0|-||2",
            "d/y|f|600|5|0|2||2",
            "d/z|f|600|5|0|2||2"
        ]
    );
}

// ---- 4. hostile tars ----

#[test]
fn hostile_tars_touch_nothing_outside() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("hostile");
    let outside = t.mkdir("outside");
    let outside_text = outside.display().to_string();
    let hostile = format!(
        r#"
        file ../../../../escape-dotdot 0644 "x" raw
        file /{outside_rel}/escape-absolute 0644 "x" raw
        symlink /link {outside_text}
        file /link/through-symlink 0644 "x"
        symlink /rel ../../../../../..
        file /rel/through-relative 0644 "x"
        hardlink /hl-missing does/not/exist
        hardlink /hl-outside ../../../../etc/passwd raw
        file /dup 0644 "file"
        dir /dup 0755
        symlink /dup2 /
        dir /dup2 0755
        file /.wh. 0644 @empty raw
        file /.wh..wh.bogus 0644 @empty raw
        file /ok 0644 "fine"
        "#,
        outside_rel = outside_text.trim_start_matches('/'),
    );
    let layout_dir = layout(&t, "layout", &[("dev/hostile:1", &[hostile.as_str()])]);
    let good = layout(&t, "good", &[("dev/good:1", &[r#"file /hello 0644 "hi""#])]);
    import(&t, &good);
    let import = t.imagefs().arg("import").arg(&layout_dir).output();
    // Either refused with one clear line, or imported with the bad entries skipped.
    if import.code != Some(0) {
        import.clone().assert_err_line("imagefs: import");
    }
    let m = t.mount(&[]);
    if import.code == Some(0) {
        let root = rootfs(&m, "local/dev/hostile:1");
        let listed = listing(&root);
        let _ = sh(
            &root,
            "cat ok; find . -type f -exec cat {} + >/dev/null 2>&1; true",
        );
        assert_eq!(
            with_timeout(10, {
                let ok = root.join("ok");
                move || fs::read(ok).unwrap()
            }),
            b"fine"
        );
        // `..` names are skipped; absolute names and paths through symlinks land
        // inside the tree (as with umoci); hard links to nothing are skipped.
        let paths: Vec<&str> = listed.iter().filter_map(|l| l.split('|').next()).collect();
        assert!(
            !paths.iter().any(|p| p.contains("escape-dotdot")),
            "{listed:#?}"
        );
        assert!(!paths.iter().any(|p| p.starts_with("hl-")), "{listed:#?}");
        let inside = format!("{}/escape-absolute", outside_text.trim_start_matches('/'));
        assert!(paths.contains(&inside.as_str()), "{listed:#?}");
        assert!(paths.contains(&"through-relative"), "{listed:#?}");
    }
    // The other image still reads; nothing appeared outside the store.
    let hello = rootfs(&m, "local/dev/good:1").join("hello");
    assert_eq!(with_timeout(10, move || fs::read(hello).unwrap()), b"hi");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside"
    );
    // `..` climbs from wherever an unpacker might write: look in every ancestor of
    // the store's cache directories, and at the root for absolute names.
    let deepest = t.store().join("cache/layers/0/content/00/tmp");
    for dir in deepest.ancestors() {
        for name in ["escape-dotdot", "escape-absolute", "through-symlink"] {
            assert!(!dir.join(name).exists(), "{}/{name} written", dir.display());
        }
    }
    drop(m);
    // The daemon never panicked: its log, if kept, has no panic.
    let logs = sh(t.path(), "cat store/mount-*.log 2>/dev/null; true");
    assert!(!logs.contains("panicked"), "{logs}");
}

// ---- 5. the cache stays under its cap ----

fn cache_bytes(store: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![store.join("cache")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn eviction_keeps_the_cache_bounded_and_rebuilds() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("evict");
    let specs: Vec<String> = (0..4)
        .map(|i| format!("file /data 0644 @random:1500000:seed{i}; file /small 0644 \"{i}\""))
        .collect();
    let images: Vec<(String, [&str; 1])> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("dev/e:{i}"), [s.as_str()]))
        .collect();
    let refs: Vec<(&str, &[&str])> = images.iter().map(|(n, l)| (n.as_str(), &l[..])).collect();
    import(&t, &layout(&t, "layout", &refs));
    let cap: u64 = 4 << 20;
    let m = t.mount(&["--cache-size", "4M"]);
    let expected: Vec<Vec<u8>> = (0..4)
        .map(|i| sample::random_bytes(format!("seed{i}").as_bytes(), 1_500_000))
        .collect();
    for round in 0..2 {
        for (i, want) in expected.iter().enumerate() {
            let file = rootfs(&m, &format!("local/dev/e:{i}")).join("data");
            let got = with_timeout(20, move || fs::read(file).unwrap());
            assert!(&got == want, "round {round}: image {i}: wrong bytes");
            let used = cache_bytes(&t.store());
            assert!(
                used <= cap,
                "round {round}: cache holds {used} bytes > cap {cap}"
            );
        }
    }
    // Something was evicted: not every layer is unpacked.
    let unpacked = sh(
        &t.store(),
        "ls cache/layers/*/unpacked.idx 2>/dev/null | wc -l",
    );
    assert!(unpacked.trim().parse::<u32>().unwrap() < 4, "{unpacked}");
}

// ---- 6. a crash while unpacking ----

#[test]
fn crash_while_unpacking_is_rebuilt() {
    if !can_run() {
        return;
    }
    for failpoint in ["unpack.start", "unpack.before_index"] {
        crash_while_unpacking(failpoint);
    }
}

fn crash_while_unpacking(failpoint: &str) {
    let t = TestDir::new("crash");
    import(
        &t,
        &layout(
            &t,
            "layout",
            &[(
                "dev/c:1",
                &["file /a 0644 @random:300000:a; file /b 0644 @random:300000:b"],
            )],
        ),
    );
    let mnt = t.mkdir("mnt");
    let guard = Mount::adopt(&t.store(), &mnt);
    t.imagefs()
        .arg("mount")
        .arg(&mnt)
        .env("IMAGEFS_FAILPOINT", failpoint)
        .timeout_secs(30)
        .assert_ok();
    // The daemon aborts inside the read: the read fails (ENOTCONN/ECONNABORTED).
    let file = mnt.join("local/dev/c/tags/1/rootfs/a");
    let read = with_timeout(20, move || fs::read(file));
    assert!(
        read.is_err(),
        "{failpoint}: read succeeded through a crashed daemon"
    );
    t.imagefs().arg("unmount").arg(&mnt).assert_ok();
    assert!(util::wait_for_mount_state(
        &mnt,
        false,
        Duration::from_secs(5)
    ));
    drop(guard);
    assert!(
        sh(
            &t.store(),
            "ls cache/layers/*/unpacked.idx 2>/dev/null; true"
        )
        .is_empty(),
        "{failpoint}: a half unpack left an unpacked.idx"
    );
    // fsck: nothing referenced is hurt; the half unpack is derived data.
    t.imagefs().arg("fsck").assert_ok();
    let m = t.mount(&[]);
    let root = rootfs(&m, "local/dev/c:1");
    let (a, b) = (root.join("a"), root.join("b"));
    let (got_a, got_b) = with_timeout(20, move || (fs::read(a).unwrap(), fs::read(b).unwrap()));
    assert!(
        got_a == sample::random_bytes(b"a", 300_000),
        "{failpoint}: a"
    );
    assert!(
        got_b == sample::random_bytes(b"b", 300_000),
        "{failpoint}: b"
    );
    drop(m);
    t.imagefs().args(["fsck", "--repair"]).assert_ok();
    t.imagefs().arg("fsck").assert_ok();
}

// ---- 7. open files outlive rm + gc ----

#[test]
fn open_file_survives_rm_and_gc() {
    // 2 MB: read through passthrough.
    open_file_survives(2_000_000, "unlink");
}

#[test]
fn open_small_file_survives_rm_and_gc() {
    // 600 kB: served by imagefs through the page cache (no passthrough); the tail is
    // beyond the first read's readahead, so it is read after gc.
    open_file_survives(600_000, "unlink-small");
}

fn open_file_survives(size: usize, name: &str) {
    if !can_run() {
        return;
    }
    let t = TestDir::new(name);
    let spec = format!("file /big 0644 @random:{size}:u");
    import(&t, &layout(&t, "layout", &[("dev/u:1", &[spec.as_str()])]));
    let m = t.mount(&[]);
    let path = rootfs(&m, "local/dev/u:1").join("big");
    let (mut file, head) = with_timeout(10, {
        let path = path.clone();
        move || {
            use std::io::Read;
            let mut file = fs::File::open(path).unwrap();
            let mut head = vec![0u8; 1000];
            file.read_exact(&mut head).unwrap();
            (file, head)
        }
    });
    t.imagefs().args(["rm", "local/dev/u:1"]).assert_ok();
    t.imagefs().arg("gc").assert_ok();
    assert!(
        sh(&t.store(), "ls cache/layers | wc -l").trim() == "0",
        "the deleted layer left cache behind"
    );
    // The daemon holds the deleted content file for the open handle...
    let daemon = util::daemon_pid(m.path()).expect("daemon pid");
    let store = fs::canonicalize(t.store()).unwrap();
    assert_eq!(util::deleted_files_held(daemon, &store).len(), 1);
    let rest = with_timeout(10, move || {
        use std::io::Read;
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).unwrap();
        rest
    });
    // ...and lets go of it once the file is closed, so its space is freed.
    let released = Instant::now() + Duration::from_secs(5);
    while !util::deleted_files_held(daemon, &store).is_empty() {
        assert!(
            Instant::now() < released,
            "the daemon still holds the deleted file after close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut all = head;
    all.extend(rest);
    assert!(all == sample::random_bytes(b"u", size), "wrong bytes");
    std::thread::sleep(Duration::from_millis(1100));
    let gone = with_timeout(10, move || fs::metadata(path).map(|_| ()));
    assert_eq!(gone.unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

// ---- 8. the first find reads no layer blob ----

#[test]
fn first_find_reads_indexes_only() {
    if !can_run() {
        return;
    }
    let t = TestDir::new("lazy");
    let (layout_dir, images) = t.demo_layout("layout");
    import(&t, &layout_dir);
    let m = t.mount(&[]);
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    for image in &images {
        let (repo, tag) = image.name.rsplit_once(':').unwrap();
        let tag_dir = m.join(format!("{repo}/tags/{tag}"));
        if !tag_dir.join("rootfs").exists() {
            continue;
        }
        let found = sh(&tag_dir, "find rootfs layers/*/files | wc -l");
        counts.insert(image.name.clone(), found.trim().to_string());
    }
    let elapsed = started.elapsed();
    eprintln!("first find of every rootfs and files/: {elapsed:.2?} {counts:?}");
    assert!(!counts.is_empty());
    let unpacked = sh(
        &t.store(),
        "find cache -name unpacked.idx -o -path '*/content/*' -type f | wc -l",
    );
    assert_eq!(unpacked.trim(), "0", "find unpacked something");
}
