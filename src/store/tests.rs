//! Reference counting and deletion rules, driven through the store API with blobs
//! recorded directly (import has its own tests over real archives).

use super::*;
use crate::store::cas::Expected;
use crate::store::meta::NewBlob;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    Fixture { _dir: dir, store }
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

fn leaf(store: &Store, digest: Digest, kind: BlobKind) -> NewBlob {
    let size = std::fs::metadata(store.blob_path(&digest))
        .expect("blob")
        .len();
    NewBlob {
        digest,
        size,
        media_type: "application/octet-stream".into(),
        kind,
        diff_id: None,
        edges: Vec::new(),
    }
}

fn edge_to(kind: EdgeKind, position: u32, child: Digest) -> Edge {
    Edge {
        kind,
        position,
        child,
        media_type: "x".into(),
        size: 1,
        platform: None,
        annotations: None,
        counted: true,
    }
}

/// Records an image (manifest -> config + layers) and tags it.
fn image(store: &Store, reference: &str, name: &str, layers: &[Digest]) -> Digest {
    let config = put(store, format!("config of {name}").as_bytes());
    let manifest = put(store, format!("manifest of {name}").as_bytes());
    let mut blobs = vec![leaf(store, config, BlobKind::Config)];
    let mut edges = vec![edge_to(EdgeKind::Config, 0, config)];
    for (i, layer) in layers.iter().enumerate() {
        blobs.push(leaf(store, *layer, BlobKind::Layer));
        edges.push(edge_to(EdgeKind::Layer, i as u32, *layer));
    }
    blobs.push(NewBlob {
        edges,
        ..leaf(store, manifest, BlobKind::Manifest)
    });
    {
        let mut conn = store.conn();
        let tx = meta::write_tx(&mut conn).expect("tx");
        meta::insert_blobs(&tx, &blobs).expect("insert");
        tx.commit().expect("commit");
    }
    store
        .set_tag(&Reference::parse(reference).expect("ref"), &manifest, false)
        .expect("tag");
    manifest
}

#[test]
fn shared_layer_survives_until_last_image_goes() {
    let f = fixture();
    let shared = put(&f.store, b"shared layer");
    let own = put(&f.store, b"own layer");
    let a = image(&f.store, "dev/a:1", "a", &[shared]);
    let b = image(&f.store, "dev/b:1", "b", &[shared, own]);
    assert_eq!(f.store.blob(&shared).unwrap().unwrap().refcount, 2);

    f.store
        .untag(&Reference::parse("dev/a:1").unwrap())
        .unwrap();
    assert!(f.store.blob(&a).unwrap().is_none());
    assert!(!f.store.cas().contains(&a));
    assert!(f.store.cas().contains(&shared));
    assert_eq!(f.store.blob(&shared).unwrap().unwrap().refcount, 1);

    f.store
        .untag(&Reference::parse("dev/b:1").unwrap())
        .unwrap();
    for gone in [b, shared, own] {
        assert!(!f.store.cas().contains(&gone), "{gone} left on disk");
    }
    assert!(f.store.fsck(false).unwrap().is_healthy());
    assert_eq!(f.store.cas().list().unwrap().len(), 0);
}

#[test]
fn promotion_copies_nothing_and_counts() {
    let f = fixture();
    let layer = put(&f.store, b"layer");
    let m = image(&f.store, "dev/app:1", "app", &[layer]);
    let files_before = f.store.cas().list().unwrap().len();
    f.store
        .tag(
            &Reference::parse("dev/app:1").unwrap(),
            &Reference::parse("prod/app:1").unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(f.store.cas().list().unwrap().len(), files_before);
    assert_eq!(f.store.blob(&m).unwrap().unwrap().refcount, 2);
    // Existing tag without replace.
    let err = f
        .store
        .tag(
            &Reference::parse("dev/app:1").unwrap(),
            &Reference::parse("prod/app:1").unwrap(),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)));
    f.store
        .untag(&Reference::parse("dev/app:1").unwrap())
        .unwrap();
    assert!(f.store.cas().contains(&layer));
    let df = f.store.df().unwrap();
    assert_eq!(df.repositories.len(), 2);
}

#[test]
fn move_tag_is_atomic_and_replaces() {
    let f = fixture();
    let l1 = put(&f.store, b"l1");
    let l2 = put(&f.store, b"l2");
    let m1 = image(&f.store, "dev/app:a", "a", &[l1]);
    let m2 = image(&f.store, "dev/app:b", "b", &[l2]);
    f.store
        .move_tag(
            &Reference::parse("dev/app:a").unwrap(),
            &Reference::parse("dev/app:b").unwrap(),
        )
        .unwrap();
    let tags = f.store.tags("dev", "app").unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].manifest, m1);
    assert!(!f.store.cas().contains(&m2));
    assert!(!f.store.cas().contains(&l2));
    // Move across registries (promotion).
    f.store
        .move_tag(
            &Reference::parse("dev/app:b").unwrap(),
            &Reference::parse("prod/app:b").unwrap(),
        )
        .unwrap();
    assert!(f.store.tags("dev", "app").unwrap().is_empty());
    assert_eq!(f.store.tags("prod", "app").unwrap()[0].manifest, m1);
    assert!(f.store.fsck(false).unwrap().is_healthy());
}

#[test]
fn leased_blob_is_not_deleted() {
    let f = fixture();
    let layer = put(&f.store, b"layer");
    image(&f.store, "dev/app:1", "app", &[layer]);
    {
        let mut conn = f.store.conn();
        let tx = meta::write_tx(&mut conn).unwrap();
        meta::add_leases(&tx, &[layer], meta::Owner::current()).unwrap();
        tx.commit().unwrap();
    }
    f.store
        .untag(&Reference::parse("dev/app:1").unwrap())
        .unwrap();
    assert!(f.store.cas().contains(&layer), "leased blob was deleted");
    f.store.gc().unwrap();
    assert!(f.store.cas().contains(&layer), "gc deleted a leased blob");
    // A dead owner's lease protects nothing.
    {
        let mut conn = f.store.conn();
        let tx = meta::write_tx(&mut conn).unwrap();
        tx.execute("UPDATE leases SET start_time = start_time + 1", [])
            .unwrap();
        tx.commit().unwrap();
    }
    let report = f.store.gc().unwrap();
    assert_eq!(report.leases_expired, 1);
    assert!(!f.store.cas().contains(&layer));
}

#[test]
fn remove_manifest_busy_when_index_references_it() {
    let f = fixture();
    let layer = put(&f.store, b"layer");
    let child = image(&f.store, "dev/app:child", "child", &[layer]);
    let index = put(&f.store, b"index");
    {
        let mut conn = f.store.conn();
        let tx = meta::write_tx(&mut conn).unwrap();
        meta::insert_blobs(
            &tx,
            &[NewBlob {
                edges: vec![edge_to(EdgeKind::Manifest, 0, child)],
                ..leaf(&f.store, index, BlobKind::Index)
            }],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    f.store
        .set_tag(&Reference::parse("dev/app:multi").unwrap(), &index, false)
        .unwrap();
    let err = f.store.remove_manifest("dev", "app", &child).unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err}");
    f.store.remove_manifest("dev", "app", &index).unwrap();
    assert!(f.store.cas().contains(&child));
    f.store.remove_manifest("dev", "app", &child).unwrap();
    assert!(!f.store.cas().contains(&layer));
}

#[test]
fn repositories_and_registries() {
    let f = fixture();
    f.store.create_registry("dev").unwrap();
    assert!(matches!(
        f.store.create_registry("dev"),
        Err(StoreError::AlreadyExists(_))
    ));
    f.store.create_repository("dev", "a/b").unwrap();
    assert!(matches!(
        f.store.remove_registry("dev"),
        Err(StoreError::NotEmpty(_))
    ));
    let layer = put(&f.store, b"layer");
    image(&f.store, "dev/a/b:1", "x", &[layer]);
    assert!(matches!(
        f.store.remove_repository("dev", "a/b", false),
        Err(StoreError::NotEmpty(_))
    ));
    f.store.remove_repository("dev", "a/b", true).unwrap();
    assert!(!f.store.cas().contains(&layer));
    f.store.remove_registry("dev").unwrap();
    assert!(f.store.registries().unwrap().is_empty());
}

#[test]
fn fsck_finds_corruption_and_leftovers() {
    let f = fixture();
    let layer = put(&f.store, b"layer");
    image(&f.store, "dev/app:1", "app", &[layer]);
    let stray = put(&f.store, b"stray");
    // Flip the layer's content.
    let path = f.store.blob_path(&layer);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, b"LAYER").unwrap();
    let report = f.store.fsck(false).unwrap();
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert_eq!(
        report.leftovers,
        vec![format!("blobs/sha256/{}", stray.hex())]
    );
    let report = f.store.fsck(true).unwrap();
    assert!(!f.store.cas().contains(&stray));
    assert_eq!(report.corrupt.len(), 1);
}

#[test]
fn unpacked_contents_are_trusted_by_the_process_that_wrote_them() {
    use crate::layer::{ContentRef, EntryKind};
    use crate::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
    let f = fixture();
    let spec = LayerSpec::parse(
        "file /a 0644 @random:5000:a ; file /b 0644 @random:5000:a ; file /c 0644 @text:3000",
    )
    .unwrap();
    let image = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .build()
        .unwrap();
    let layout = f._dir.path().join("layout");
    sample::write_oci_layout(&layout, &[(Some("t:1"), &Built::from(image))]).unwrap();
    f.store
        .import(&layout, None, &ImportOptions::default())
        .unwrap();
    let top = f
        .store
        .resolve(&Reference::parse("local/t:1").unwrap())
        .unwrap();
    let layer = f
        .store
        .reachable_blobs(&top)
        .unwrap()
        .into_iter()
        .find(|b| b.kind == BlobKind::Layer)
        .unwrap()
        .digest;
    // The import remembers the blobs it wrote (manifest, config, layer).
    let (blobs, hashed) = f.store.cas().verified_files().counts();
    assert_eq!((blobs, hashed), (3, 0));
    let index = f.store.unpack_layer(&layer).unwrap();
    // /a and /b have the same bytes: two distinct contents, both remembered.
    assert_eq!(f.store.cas().verified_files().counts(), (blobs + 2, 0));
    let cache = crate::layer::CacheDir::new(f.store.layer_cache_dir(&layer)).unwrap();
    let files: Vec<usize> = (0..index.entries.len())
        .filter(|&i| index.entries[i].kind == EntryKind::File)
        .collect();
    assert_eq!(files.len(), 3);
    for &i in &files {
        assert!(matches!(index.entries[i].content, ContentRef::Cached(_)));
        f.store
            .open_layer_content(&layer, &cache, &index, i)
            .unwrap();
    }
    assert_eq!(f.store.cas().verified_files().counts(), (blobs + 2, 0));
}

#[test]
fn change_token_sees_commits_of_other_connections() {
    let f = fixture();
    let other = Store::open(f.store.root()).unwrap();
    let before = f.store.change_token().unwrap();
    other.create_registry("elsewhere").unwrap();
    let after = f.store.change_token().unwrap();
    assert_ne!(
        before, after,
        "a commit by another connection moves the token"
    );
}

#[test]
fn a_layer_renamed_in_through_a_layout_is_indexed_ahead_once() {
    use crate::image::LayerCompression;
    use crate::sample::{Compression, ImageBuilder, LayerSpec};
    use crate::store::staging::PreparedLayer;
    let f = fixture();
    let spec = LayerSpec::parse("file /a 0644 @random:300000:a ; file /b 0644 @text:5000").unwrap();
    let image = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .build()
        .unwrap();
    let layer = &image.layers[0];
    let store = std::sync::Arc::new(Store::open(&f._dir.path().join("arc")).unwrap());
    let stage = |bytes: &[u8]| {
        let (path, mut file) = store.create_staged().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        path
    };
    let hour = std::time::Duration::from_secs(3600);
    let digest = layer.blob.digest;
    let path = stage(&layer.blob.data);
    store
        .commit_staged_blob(&path, &digest, None, ("dev", "app"), hour)
        .unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = Digest::of(config);
    let path = stage(config);
    store
        .commit_staged_blob(&path, &config_digest, None, ("dev", "app"), hour)
        .unwrap();
    // Indexed as an import would index it; asked for another compression, or a
    // second time, or for a blob that is no layer: nothing.
    assert!(store
        .take_prepared(&config_digest, LayerCompression::Gzip, None)
        .is_none());
    let Some(PreparedLayer::Indexed(indexed)) =
        store.take_prepared(&digest, LayerCompression::Gzip, None)
    else {
        panic!("the layer was indexed ahead");
    };
    assert_eq!(indexed.index.diff_id, layer.diff_id);
    assert!(indexed.checkpoints.is_some());
    assert!(store
        .take_prepared(&digest, LayerCompression::Gzip, None)
        .is_none());
}
