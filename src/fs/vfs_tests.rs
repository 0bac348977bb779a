//! The view driven in-process against a temporary store, without FUSE or root:
//! lookups, listings, attributes, links, contents, writes and inode stability.

use std::path::Path;
use std::sync::Arc;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::sample::{self, Built, Compression, ImageBuilder, IndexBuilder, LayerSpec};
use crate::store::{ImportOptions, Store};

use super::attr::{Attr, FileContent, Ino, NodeType, Volatility, ROOT_INO};
use super::errno::VfsError;
use super::vfs::Vfs;

const MOUNT: &str = "/mnt/imagefs-test";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    vfs: Vfs,
    app: Digest,
    index: Digest,
}

fn image(name: &str, arch: &str) -> crate::sample::BuiltImage {
    let base = LayerSpec::parse(&format!(
        r#"dir /etc 0755 ; file /etc/os-release 0644 "NAME={name}" ; file /etc/gone 0644 "x""#
    ))
    .expect("layer spec");
    let top = LayerSpec::parse(&format!(
        r#"whiteout /etc/gone ; file /app 0755 "{name} {arch}""#
    ))
    .expect("layer spec");
    ImageBuilder::new()
        .config("linux", arch, None)
        .layer(&base, Compression::Gzip)
        .layer(&top, Compression::None)
        .build()
        .expect("image")
}

/// A store with `dev/app:1` (an image of two layers), `dev/multi:1` (an index of
/// two platforms plus attestations) and an empty registry `prod`.
fn fixture(read_only: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(&dir.path().join("store")).expect("store"));
    let app = image("app", "amd64");
    let index = IndexBuilder::new()
        .manifest(image("multi", "amd64"))
        .manifest(image("multi", "arm64"))
        .attestations(true)
        .build()
        .expect("index");
    let (app, index) = (Built::from(app), Built::Index(index));
    let layout = dir.path().join("layout");
    sample::write_oci_layout(&layout, &[(Some("app:1"), &app), (Some("multi:1"), &index)])
        .expect("layout");
    import(&store, &layout);
    store.create_registry("prod").expect("registry");
    let vfs = Vfs::new(store.clone(), MOUNT.into(), read_only, 1 << 30);
    Fixture {
        _dir: dir,
        store,
        vfs,
        app: app.digest(),
        index: index.digest(),
    }
}

fn import(store: &Store, layout: &Path) {
    let options = ImportOptions {
        registry: "dev".into(),
        ..ImportOptions::default()
    };
    store.import(layout, None, &options).expect("import");
}

impl Fixture {
    /// Looks a mount path up component by component, like the kernel does.
    fn at(&self, path: &str) -> Result<Attr, VfsError> {
        let mut attr = self.vfs.getattr(ROOT_INO)?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = self.vfs.lookup(attr.ino, name.as_bytes())?;
        }
        Ok(attr)
    }

    fn ino(&self, path: &str) -> Ino {
        self.at(path).unwrap_or_else(|e| panic!("{path}: {e}")).ino
    }

    fn names(&self, path: &str) -> Vec<String> {
        self.vfs
            .readdir(self.ino(path))
            .unwrap_or_else(|e| panic!("readdir {path}: {e}"))
            .into_iter()
            .map(|entry| String::from_utf8(entry.name).expect("utf-8 name"))
            .collect()
    }

    fn link(&self, path: &str) -> String {
        String::from_utf8(self.vfs.readlink(self.ino(path)).expect("readlink")).expect("utf-8")
    }

    fn errno(&self, path: &str) -> i32 {
        self.at(path).expect_err(path).errno()
    }

    fn tag(&self, reference: &str) -> Option<Digest> {
        self.store
            .resolve(&Reference::parse(reference).expect("reference"))
            .ok()
    }
}

#[test]
fn the_tree_has_the_shape_of_the_spec() {
    let f = fixture(false);
    assert_eq!(f.names("/"), [".", "..", "dev", "prod"]);
    assert_eq!(f.names("/dev"), [".", "..", "app", "multi"]);
    assert_eq!(
        f.names("/dev/app"),
        [
            ".",
            "..",
            "tags",
            "manifests",
            "blobs",
            "index.json",
            "oci-layout"
        ]
    );
    assert_eq!(f.names("/dev/app/tags"), [".", "..", "1"]);
    assert_eq!(
        f.names("/dev/app/manifests"),
        [".".to_string(), "..".into(), f.app.to_string()]
    );
    let manifest = format!("/dev/app/manifests/{}", f.app);
    assert_eq!(
        f.names(&manifest),
        [
            ".",
            "..",
            "manifest.json",
            "rootfs",
            "config.json",
            "layers"
        ]
    );
    assert_eq!(
        f.names(&format!("{manifest}/layers")),
        [".", "..", "000", "001"]
    );
    assert_eq!(
        f.names(&format!("{manifest}/layers/001")),
        [".", "..", "blob", "files"]
    );
    // The whiteout is applied in rootfs/ and kept in the layer's own files/.
    assert_eq!(
        f.names(&format!("{manifest}/rootfs")),
        [".", "..", "app", "etc"]
    );
    assert_eq!(
        f.names(&format!("{manifest}/rootfs/etc")),
        [".", "..", "os-release"]
    );
    assert_eq!(
        f.names(&format!("{manifest}/layers/001/files/etc")),
        [".", "..", ".wh.gone"]
    );
    let platforms = f.names(&format!("/dev/multi/manifests/{}/platforms", f.index));
    assert_eq!(platforms[2..4], ["linux-amd64", "linux-arm64"]);
    assert_eq!(platforms.len(), 6, "two attestations: {platforms:?}");
    assert!(platforms[4].starts_with("unknown-unknown-") && platforms[4] != platforms[5]);
    let arm64 = f.store.manifest_view(&f.index).unwrap().unwrap().platforms[1].digest;
    assert_eq!(
        f.names(&format!("/dev/multi/manifests/{arm64}/rootfs/etc")),
        [".", "..", "os-release"],
        "index children are manifests of the repository"
    );
}

#[test]
fn lookups_of_what_is_not_there() {
    let f = fixture(false);
    let manifest = format!("/dev/app/manifests/{}", f.app);
    for (path, errno) in [
        ("/nope", libc::ENOENT),
        ("/prod/tags", libc::ENOENT),
        ("/dev/app/tags/2", libc::ENOENT),
        ("/dev/app/manifests/sha256:00", libc::ENOENT),
        (&format!("{manifest}/platforms"), libc::ENOENT),
        (&format!("{manifest}/layers/1"), libc::ENOENT),
        (&format!("{manifest}/layers/002"), libc::ENOENT),
        (&format!("{manifest}/manifest.json/x"), libc::ENOTDIR),
        (&format!("{manifest}/rootfs/app/x"), libc::ENOTDIR),
        (
            &format!("/dev/multi/manifests/{}/rootfs", f.index),
            libc::ENOENT,
        ),
    ] {
        assert_eq!(f.errno(path), errno, "{path}");
    }
    let dir = f.ino("/dev/app/tags");
    assert_eq!(
        f.vfs.lookup(dir, b"\xff").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        f.vfs.readdir(f.ino("/dev/app/tags/1")).unwrap_err().errno(),
        libc::ENOTDIR
    );
}

#[test]
fn attributes_are_honest() {
    let f = fixture(false);
    let manifest = format!("/dev/app/manifests/{}", f.app);
    let json = f.at(&format!("{manifest}/manifest.json")).unwrap();
    let bytes = f.store.read_blob(&f.app).unwrap();
    assert_eq!(
        (json.kind, json.size, json.perm),
        (NodeType::File, bytes.len() as u64, 0o444)
    );
    assert_eq!(json.volatility, Volatility::Immutable);
    let dir = f.at(&manifest).unwrap();
    assert_eq!(dir.nlink, 2 + 2, "layers/ and rootfs/");
    assert_eq!(dir.volatility, Volatility::ImmutableInVolatileDir);
    assert_eq!(f.at(&format!("{manifest}/layers")).unwrap().nlink, 2 + 2);
    let index_dir = f.at(&format!("/dev/multi/manifests/{}", f.index)).unwrap();
    assert_eq!(index_dir.nlink, 2 + 1, "platforms/ only");
    assert_eq!(f.at("/").unwrap().nlink, 2 + 2);
    assert_eq!(f.at("/dev").unwrap().nlink, 2 + 2);
    assert_eq!(
        f.at("/dev/app").unwrap().nlink,
        2 + 3,
        "tags/, manifests/, blobs/"
    );
    let tag = f.at("/dev/app/tags/1").unwrap();
    assert_eq!(tag.kind, NodeType::Symlink);
    assert_eq!(tag.size, f.link("/dev/app/tags/1").len() as u64);
    assert_eq!(tag.volatility, Volatility::Volatile);
    let app = f.at(&format!("{manifest}/rootfs/app")).unwrap();
    assert_eq!((app.kind, app.perm, app.size), (NodeType::File, 0o755, 9));
    assert_eq!(app.owner, Some((0, 0)));
    // Every file's content: a blob, or an entry of a layer.
    let layer = f.store.manifest_view(&f.app).unwrap().unwrap().layers[1].digest;
    assert!(matches!(
        f.vfs.content_of(app.ino).unwrap(),
        Some(FileContent::LayerEntry { layer: l, .. }) if l == layer
    ));
    assert_eq!(
        f.vfs.content_of(json.ino).unwrap(),
        Some(FileContent::Blob(f.app))
    );
    assert_eq!(f.vfs.content_of(dir.ino).unwrap(), None);
}

#[test]
fn links_read_as_the_spec_says() {
    let f = fixture(false);
    assert_eq!(f.link("/dev/app/tags/1"), format!("../manifests/{}", f.app));
    let child = f.store.manifest_view(&f.index).unwrap().unwrap().platforms[1].digest;
    assert_eq!(
        f.link(&format!(
            "/dev/multi/manifests/{}/platforms/linux-arm64",
            f.index
        )),
        format!("../../{child}")
    );
    let dir = f.ino("/dev/app/tags");
    assert_eq!(f.vfs.readlink(dir).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn inode_numbers_are_stable_and_listings_agree_with_lookups() {
    let f = fixture(false);
    let manifest = format!("/dev/app/manifests/{}", f.app);
    for dir in [
        "/",
        "/dev/app",
        "/dev/app/tags",
        &manifest,
        &format!("{manifest}/rootfs/etc"),
    ] {
        let dir_ino = f.ino(dir);
        for entry in f.vfs.readdir(dir_ino).unwrap().into_iter().skip(2) {
            let looked_up = f.vfs.lookup(dir_ino, &entry.name).unwrap();
            assert_eq!(looked_up.ino, entry.ino, "{dir}/{:?}", entry.name);
            let listed = f.vfs.lookup_listed(dir_ino, &entry).unwrap();
            assert_eq!(listed.ino, entry.ino);
        }
    }
    let first = f.ino(&format!("{manifest}/rootfs/etc/os-release"));
    f.vfs.forget(first, 1);
    assert_eq!(f.ino(&format!("{manifest}/rootfs/etc/os-release")), first);
    // `..` of a view's nodes.
    let etc = f
        .vfs
        .readdir(f.ino(&format!("{manifest}/rootfs/etc")))
        .unwrap();
    assert_eq!(etc[1].ino, f.ino(&format!("{manifest}/rootfs")));
    // Two repositories showing one manifest show two directories.
    let promoted = f.ino("/dev/app/tags");
    f.vfs
        .symlink(f.ino("/prod"), "x", Path::new("y"))
        .expect_err("prod/ is no tags/ directory");
    f.store.create_repository("prod", "app").unwrap();
    let prod_tags = f.ino("/prod/app/tags");
    f.vfs
        .rename(promoted, "1", prod_tags, "1", false, 0)
        .unwrap();
    assert_ne!(
        f.ino(&format!("/prod/app/manifests/{}", f.app)),
        f.ino(&format!("/dev/multi/manifests/{}", f.index))
    );
}

#[test]
fn tags_are_written_with_ln_rm_and_mv() {
    let f = fixture(false);
    let tags = f.ino("/dev/app/tags");
    // ln -s, with every kind of target.
    f.vfs
        .symlink(tags, "a", Path::new(&f.app.to_string()))
        .unwrap();
    f.vfs
        .symlink(tags, "b", Path::new("../../multi/tags/1"))
        .unwrap();
    let absolute = format!("{MOUNT}/dev/app/manifests/{}", f.app);
    f.vfs.symlink(tags, "c", Path::new(&absolute)).unwrap();
    let platform = "../../multi/tags/1/platforms/linux-amd64";
    f.vfs.symlink(tags, "d", Path::new(platform)).unwrap();
    assert_eq!(f.tag("dev/app:a"), Some(f.app));
    assert_eq!(f.tag("dev/app:b"), Some(f.index));
    assert_eq!(f.tag("dev/app:c"), Some(f.app));
    let amd64 = f.store.manifest_view(&f.index).unwrap().unwrap().platforms[0].digest;
    assert_eq!(f.tag("dev/app:d"), Some(amd64));
    let errno = |r: Result<Attr, VfsError>| r.unwrap_err().errno();
    assert_eq!(
        errno(f.vfs.symlink(tags, "a", Path::new(&f.app.to_string()))),
        libc::EEXIST
    );
    let unknown = Digest::of(b"unknown").to_string();
    assert_eq!(
        errno(f.vfs.symlink(tags, "e", Path::new(&unknown))),
        libc::ENOENT
    );
    assert_eq!(
        errno(f.vfs.symlink(tags, "-bad", Path::new(&unknown))),
        libc::EINVAL
    );
    assert_eq!(
        errno(f.vfs.symlink(tags, "e", Path::new("/elsewhere"))),
        libc::EINVAL
    );
    let manifests = f.ino("/dev/app/manifests");
    assert_eq!(
        errno(f.vfs.symlink(manifests, "e", Path::new(&unknown))),
        libc::EROFS
    );
    // mv keeps the inode number with the tag, also across registries.
    let a = f.ino("/dev/app/tags/a");
    f.vfs.rename(tags, "a", tags, "z", false, 0).unwrap();
    assert_eq!(f.ino("/dev/app/tags/z"), a);
    assert_eq!(f.errno("/dev/app/tags/a"), libc::ENOENT);
    assert_eq!(
        f.vfs
            .rename(tags, "z", tags, "c", true, 0)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    let root = ROOT_INO;
    assert_eq!(
        f.vfs
            .rename(root, "dev", root, "x", false, 0)
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    // rm untags; the last tag takes the manifest with it.
    for tag in ["z", "b", "c", "d"] {
        f.vfs.unlink(tags, tag).unwrap();
    }
    assert_eq!(f.vfs.unlink(tags, "z").unwrap_err().errno(), libc::ENOENT);
    f.vfs.unlink(tags, "1").unwrap();
    assert_eq!(f.names("/dev/app/manifests"), [".", ".."]);
    assert!(
        f.store.blob(&f.app).unwrap().is_none(),
        "deleted before rm returns"
    );
    assert_eq!(f.vfs.unlink(root, "dev").unwrap_err().errno(), libc::EROFS);
}

#[test]
fn directories_are_made_and_removed() {
    let f = fixture(false);
    let root = ROOT_INO;
    // mkdir -p makes only the last repository.
    let staging = f.vfs.mkdir(root, "staging").unwrap();
    let a = f.vfs.mkdir(staging.ino, "a").unwrap();
    let b = f.vfs.mkdir(a.ino, "b").unwrap();
    assert_eq!(f.names("/staging/a"), [".", "..", "b"]);
    assert_eq!(
        f.names("/staging/a/b"),
        [
            ".",
            "..",
            "tags",
            "manifests",
            "blobs",
            "index.json",
            "oci-layout"
        ]
    );
    assert_eq!(f.vfs.mkdir(a.ino, "b").unwrap_err().errno(), libc::EEXIST);
    assert_eq!(f.vfs.mkdir(a.ino, "B").unwrap_err().errno(), libc::EINVAL);
    assert_eq!(
        f.vfs.rmdir(staging.ino, "a").unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    // rmdir of b brings a back as the empty repository it was.
    f.vfs.rmdir(a.ino, "b").unwrap();
    assert_eq!(
        f.names("/staging/a"),
        [
            ".",
            "..",
            "tags",
            "manifests",
            "blobs",
            "index.json",
            "oci-layout"
        ]
    );
    // rm -rf of a repository: tags/ and manifests/ go once empty, then itself.
    let app = f.ino("/dev/app");
    assert_eq!(
        f.vfs.rmdir(app, "tags").unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    f.vfs.unlink(f.ino("/dev/app/tags"), "1").unwrap();
    f.vfs.rmdir(app, "tags").unwrap();
    f.vfs.rmdir(app, "manifests").unwrap();
    f.vfs.rmdir(f.ino("/dev"), "app").unwrap();
    assert_eq!(f.errno("/dev/app"), libc::ENOENT);
    // rmdir manifests/<digest> removes it from the repository.
    let manifests = f.ino("/dev/multi/manifests");
    f.vfs.rmdir(manifests, &f.index.to_string()).unwrap();
    assert_eq!(f.tag("dev/multi:1"), None);
    f.vfs.rmdir(root, "prod").unwrap();
    assert_eq!(f.errno("/prod"), libc::ENOENT);
    assert_eq!(f.vfs.rmdir(root, "nope").unwrap_err().errno(), libc::ENOENT);
    let dev = f.ino("/dev");
    assert_eq!(f.vfs.unlink(dev, "x").unwrap_err().errno(), libc::ENOENT);
    let _ = b;
}

#[test]
fn a_read_only_mount_refuses_every_change() {
    let f = fixture(true);
    let tags = f.ino("/dev/app/tags");
    let erofs = libc::EROFS;
    assert_eq!(f.vfs.unlink(tags, "1").unwrap_err().errno(), erofs);
    assert_eq!(f.vfs.mkdir(ROOT_INO, "x").unwrap_err().errno(), erofs);
    assert_eq!(f.vfs.rmdir(ROOT_INO, "prod").unwrap_err().errno(), erofs);
    let target = Path::new("sha256:00");
    assert_eq!(f.vfs.symlink(tags, "2", target).unwrap_err().errno(), erofs);
    assert_eq!(
        f.vfs
            .rename(tags, "1", tags, "2", false, 0)
            .unwrap_err()
            .errno(),
        erofs
    );
    assert_eq!(f.tag("dev/app:1"), Some(f.app));
}

#[test]
fn a_sweep_drops_numbers_of_things_gone_and_keeps_the_rest() {
    let f = fixture(false);
    let gone = f.ino("/dev/app/tags/1");
    let kept = f.ino("/dev/multi/tags/1");
    f.vfs.forget(gone, 1);
    f.vfs.forget(kept, 1);
    f.store
        .untag(&Reference::parse("dev/app:1").unwrap())
        .unwrap();
    f.vfs.sweep();
    assert_eq!(f.vfs.getattr(gone).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(f.vfs.getattr(kept).unwrap().ino, kept);
    assert!(f.vfs.changing_dirs().contains(&ROOT_INO));
}

#[test]
fn refs_and_refcount_xattrs_show_what_keeps_a_blob() {
    let f = fixture(false);
    let refs = |path: &str| -> String {
        let value = f
            .vfs
            .refs_xattr(f.ino(path), b"user.imagefs.refs")
            .expect("getxattr")
            .expect("answered");
        String::from_utf8(value).expect("utf-8")
    };
    let count = |path: &str| -> String {
        let value = f
            .vfs
            .refs_xattr(f.ino(path), b"user.imagefs.refcount")
            .expect("getxattr")
            .expect("answered");
        String::from_utf8(value).expect("utf-8")
    };
    let dir = format!("dev/app/manifests/{}", f.app);
    assert_eq!(
        refs(&dir),
        format!("dev/app:1 -> sha256:{} (manifest)\n", f.app.short(12))
    );
    assert_eq!(count(&dir), "1\n");
    assert_eq!(refs(&format!("{dir}/manifest.json")), refs(&dir));
    let layer = refs(&format!("{dir}/layers/000/blob"));
    assert!(
        layer.starts_with("dev/app:1 -> ") && layer.contains(" -> layer 0 "),
        "{layer}"
    );
    assert!(refs(&format!("{dir}/config.json")).contains(" -> config "));
    // Promotion adds a chain and a count, as the store acts on them.
    f.store
        .tag(
            &Reference::parse("dev/app:1").expect("reference"),
            &Reference::parse("prod/app:1").expect("reference"),
            false,
        )
        .expect("tag");
    assert_eq!(count(&dir), "2\n");
    assert_eq!(refs(&dir).lines().count(), 2);
    // Other names, and nodes that show no blob, are not answered here.
    assert_eq!(
        f.vfs.refs_xattr(f.ino(&dir), b"user.other").expect("ok"),
        None
    );
    assert_eq!(
        f.vfs
            .refs_xattr(f.ino("dev/app/tags"), b"user.imagefs.refs")
            .expect_err("no blob")
            .errno(),
        libc::ENODATA
    );
}

// ---- every repository is an OCI image layout (SPEC section 7) ----

/// The pid writes are made as (this process: `index.json` remembers what it read).
fn me() -> u32 {
    std::process::id()
}

fn repo(name: &str) -> super::nodes::RepoKey {
    super::nodes::RepoKey::new("dev", name)
}

#[test]
fn a_repository_reads_as_an_oci_layout() {
    let f = fixture(false);
    let layout = f.at("/dev/app/oci-layout").unwrap();
    assert_eq!(layout.kind, NodeType::File);
    assert_eq!(layout.size, super::layout::OCI_LAYOUT.len() as u64);
    let (bytes, _) = f.vfs.index_json(&repo("app")).unwrap();
    assert_eq!(
        f.at("/dev/app/index.json").unwrap().size,
        bytes.len() as u64
    );
    assert_eq!(
        f.vfs.index_json(&repo("app")).unwrap().0,
        bytes,
        "stable bytes"
    );
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], f.app.to_string());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    // blobs/sha256/: 64-hex names, the blobs the tags reach (manifest, config, 2
    // layers); any stored blob answers a lookup; a missing one is ENOENT.
    let listed = f.names("/dev/app/blobs/sha256");
    assert_eq!(listed.len(), 2 + 4, "{listed:?}");
    assert!(listed[2..].iter().all(|n| n.len() == 64));
    assert!(listed.contains(&f.app.hex()));
    assert!(!listed.contains(&f.index.hex()));
    let elsewhere = f.at(&format!("/dev/app/blobs/sha256/{}", f.index.hex()));
    assert_eq!(elsewhere.unwrap().kind, NodeType::File);
    assert_eq!(
        f.errno(&format!("/dev/app/blobs/sha256/{}", "0".repeat(64))),
        libc::ENOENT
    );
    assert_eq!(f.errno("/dev/app/blobs/sha256/not-hex"), libc::ENOENT);
    assert_eq!(
        f.vfs
            .content_of(f.ino(&format!("/dev/app/blobs/sha256/{}", f.app.hex())))
            .unwrap(),
        Some(FileContent::Blob(f.app))
    );
}

#[test]
fn staged_files_become_blobs_only_with_their_own_bytes() {
    let f = fixture(false);
    let dir = f.ino("/dev/app");
    let blobs = f.ino("/dev/app/blobs/sha256");
    let put = |name: &str, bytes: &[u8]| {
        let (attr, mut handle) = f.vfs.create(dir, name, 0o600, me()).unwrap();
        assert_eq!(attr.perm, 0o600);
        handle.write_at(bytes, 0).unwrap();
        f.vfs.flush_write(&mut handle).unwrap();
        f.vfs.release_write(handle);
    };
    put("oci-put-blob1", b"layout bytes");
    assert_eq!(
        f.vfs
            .create(dir, "oci-put-blob1", 0o600, me())
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    assert!(f.names("/dev/app").contains(&"oci-put-blob1".to_string()));
    assert_eq!(f.at("/dev/app/oci-put-blob1").unwrap().size, 12);
    // Wrong name: refused, nothing kept.
    let wrong = Digest::of(b"other bytes").hex();
    let error = f
        .vfs
        .rename(dir, "oci-put-blob1", blobs, &wrong, false, me())
        .unwrap_err();
    assert_eq!(error.errno(), libc::EINVAL);
    assert_eq!(f.errno("/dev/app/oci-put-blob1"), libc::ENOENT);
    assert!(!f.store.cas().contains(&Digest::of(b"other bytes")));
    // Right name: a store blob, listed here until a tag takes it, removable.
    put("oci-put-blob2", b"layout bytes");
    let right = Digest::of(b"layout bytes");
    f.vfs
        .rename(dir, "oci-put-blob2", blobs, &right.hex(), false, me())
        .unwrap();
    assert!(f.names("/dev/app/blobs/sha256").contains(&right.hex()));
    assert!(!f.names("/dev/multi/blobs/sha256").contains(&right.hex()));
    assert!(f.store.fsck(false).unwrap().leftovers.is_empty(), "leased");
    f.vfs.unlink(blobs, &right.hex()).unwrap();
    assert!(!f.store.cas().contains(&right));
    // A blob a tag reaches is busy.
    assert_eq!(
        f.vfs.unlink(blobs, &f.app.hex()).unwrap_err().errno(),
        libc::EBUSY
    );
    // Nothing staged is left in tmp/.
    let tmp = f.store.root().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn index_json_writes_change_tags_or_are_refused() {
    let f = fixture(false);
    let index = f.ino("/dev/app/index.json");
    let write = |bytes: &[u8]| {
        let mut handle = f.vfs.open_write(index, true, me()).unwrap();
        handle.write_at(bytes, 0).unwrap();
        let result = f.vfs.flush_write(&mut handle);
        f.vfs.release_write(handle);
        result
    };
    let bytes = f.vfs.read_index_json(&repo("app"), me()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(write(b"[oops").unwrap_err().errno(), libc::EINVAL);
    let mut unknown = value.clone();
    unknown["manifests"][0]["digest"] = format!("sha256:{}", "2".repeat(64)).into();
    assert_eq!(
        write(&serde_json::to_vec(&unknown).unwrap())
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    let mut lying = value.clone();
    lying["manifests"][0]["size"] = 1.into();
    assert_eq!(
        write(&serde_json::to_vec(&lying).unwrap())
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(f.tag("dev/app:1"), Some(f.app));
    // Add tag 2 (the index of dev/multi), keep 1.
    let mut added = value.clone();
    let mut entry = added["manifests"][0].clone();
    let info = f.store.blob(&f.index).unwrap().unwrap();
    entry["digest"] = f.index.to_string().into();
    entry["size"] = info.size.into();
    entry["mediaType"] = info.media_type.into();
    entry["annotations"]["org.opencontainers.image.ref.name"] = "2".into();
    added["manifests"].as_array_mut().unwrap().push(entry);
    write(&serde_json::to_vec(&added).unwrap()).unwrap();
    assert_eq!(f.tag("dev/app:1"), Some(f.app));
    assert_eq!(f.tag("dev/app:2"), Some(f.index));
    // Someone else moves 2 meanwhile; a writer that read before drops 1 and 2:
    // 1 goes, 2 is left alone.
    f.store
        .set_tag(&Reference::parse("dev/app:2").unwrap(), &f.app, true)
        .unwrap();
    let none = serde_json::json!({"schemaVersion": 2, "manifests": []});
    write(&serde_json::to_vec(&none).unwrap()).unwrap();
    assert_eq!(f.tag("dev/app:1"), None);
    assert_eq!(f.tag("dev/app:2"), Some(f.app), "changed by someone else");
}

#[test]
fn unreferenced_layout_blobs_live_for_their_grace_period() {
    let f = fixture(false);
    let stage = |bytes: &[u8]| {
        let (path, mut file) = f.store.create_staged().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        path
    };
    let kept = Digest::of(b"kept");
    let path = stage(b"kept");
    let hour = std::time::Duration::from_secs(3600);
    f.store
        .commit_staged_blob(&path, &kept, None, ("dev", "app"), hour)
        .unwrap();
    let gone = Digest::of(b"gone");
    let path = stage(b"gone");
    f.store
        .commit_staged_blob(
            &path,
            &gone,
            None,
            ("dev", "app"),
            std::time::Duration::ZERO,
        )
        .unwrap();
    let report = f.store.gc().unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(f.store.cas().contains(&kept));
    assert!(!f.store.cas().contains(&gone));
    assert!(f.store.why(&kept).unwrap().leases.iter().any(|l| l.alive));
    // A staging file of a process that is gone is a leftover fsck reports.
    std::fs::write(f.store.root().join("tmp/layout-999999999-1"), b"x").unwrap();
    let fsck = f.store.fsck(false).unwrap();
    assert_eq!(fsck.leftovers, ["tmp/layout-999999999-1"]);
    f.store.fsck(true).unwrap();
    assert!(f.store.fsck(false).unwrap().leftovers.is_empty());
}
