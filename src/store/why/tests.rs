//! `why` and its previews against what the store really does: the demo images
//! (a shared base layer, a Docker and an OCI image, an index with attestations, an
//! artifact with a subject), promoted across registries, with a lease held.

use std::collections::{BTreeSet, HashSet};

use super::super::meta::{self, Owner};
use super::*;
use crate::store::{EdgeKind, ImportOptions};

fn demo_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = dir.path().join("layout");
    crate::sample::write_demo_layout(&layout).expect("demo layout");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    store
        .import(&layout, None, &ImportOptions::default())
        .expect("import");
    for (from, to) in [
        ("docker.io/library/sample-app:1.1", "prod/sample-app:1.1"),
        ("docker.io/library/sample-app:1.1", "prod/sample-app:stable"),
        ("docker.io/library/sample-multi:latest", "dev/multi:1"),
    ] {
        let from = Reference::parse(from).expect("reference");
        let to = Reference::parse(to).expect("reference");
        store.tag(&from, &to, false).expect("tag");
    }
    (dir, store)
}

fn all_tags(store: &Store) -> Vec<Reference> {
    let conn = store.conn();
    meta::all_tags(&conn)
        .expect("tags")
        .iter()
        .map(tag_reference)
        .collect()
}

/// Blobs reachable from `top` over counted edges, computed here from the edges
/// alone (not with the code under test).
fn reachable(store: &Store, top: &Digest) -> HashSet<Digest> {
    let mut seen = HashSet::from([*top]);
    let mut work = vec![*top];
    while let Some(digest) = work.pop() {
        for edge in store.edges(&digest).expect("edges") {
            if edge.counted && seen.insert(edge.child) {
                work.push(edge.child);
            }
        }
    }
    seen
}

fn stored_blobs(store: &Store) -> Vec<crate::store::BlobInfo> {
    meta::all_blobs(&store.conn()).expect("blobs")
}

#[test]
fn chains_name_exactly_the_tags_that_reach_a_blob() {
    let (_dir, store) = demo_store();
    let tags = all_tags(&store);
    for blob in stored_blobs(&store) {
        let report = store.why(&blob.digest).expect("why");
        assert_eq!(report.refcount, blob.refcount, "{}", blob.digest);
        let expected: BTreeSet<String> = tags
            .iter()
            .filter(|tag| {
                let top = store.resolve(tag).expect("resolve");
                reachable(&store, &top).contains(&blob.digest)
            })
            .map(|tag| tag.to_string())
            .collect();
        let named: BTreeSet<String> = report.chains.iter().map(|c| c.tag.to_string()).collect();
        assert_eq!(named, expected, "tags keeping {}", blob.digest);
        for chain in &report.chains {
            assert_eq!(chain.steps.last().map(|s| s.digest), Some(blob.digest));
            assert_eq!(chain.steps[0].via, Via::Tag);
            assert_eq!(
                Some(chain.steps[0].digest),
                store.resolve(&chain.tag).ok(),
                "{chain}"
            );
        }
    }
}

#[test]
fn a_chain_through_an_index_names_the_platform_and_the_layer() {
    let (_dir, store) = demo_store();
    let multi = Reference::parse("dev/multi:1").expect("reference");
    let index = store.resolve(&multi).expect("resolve");
    let amd64 = store
        .edges(&index)
        .expect("edges")
        .into_iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .expect("amd64 child")
        .child;
    let base = store
        .edges(&amd64)
        .expect("edges")
        .into_iter()
        .find(|e| e.kind == EdgeKind::Layer && e.position == 0)
        .expect("base layer")
        .child;
    let report = store.why(&base).expect("why");
    let line = format!(
        "dev/multi:1 -> {} (index) -> {} (linux/amd64) -> layer 0 {}",
        short_digest(&index),
        short_digest(&amd64),
        short_digest(&base)
    );
    let lines: Vec<String> = report.chains.iter().map(|c| c.to_string()).collect();
    assert!(lines.contains(&line), "{line:?} not in {lines:#?}");
}

#[test]
fn a_subject_is_kept_by_its_referrer() {
    let (_dir, store) = demo_store();
    let app = store
        .resolve(&Reference::parse("docker.io/library/sample-app:1.1").expect("reference"))
        .expect("resolve");
    let report = store.why(&app).expect("why");
    let through_subject: Vec<&Chain> = report
        .chains
        .iter()
        .filter(|c| c.steps.iter().any(|s| s.via == Via::Subject))
        .collect();
    assert_eq!(
        through_subject
            .iter()
            .map(|c| c.tag.to_string())
            .collect::<Vec<_>>(),
        vec!["docker.io/library/sample-app:1.1-sbom".to_string()],
        "{:#?}",
        report.chains
    );
}

#[test]
fn previews_equal_what_rm_deletes_down_to_an_empty_store() {
    let (_dir, store) = demo_store();
    // A running import holds a lease on the base layer: why shows it, and rm still
    // drops the row (the lease keeps the file).
    let app = store
        .resolve(&Reference::parse("prod/sample-app:1.1").expect("reference"))
        .expect("resolve");
    let base = store
        .edges(&app)
        .expect("edges")
        .into_iter()
        .find(|e| e.kind == EdgeKind::Layer && e.position == 0)
        .expect("base layer")
        .child;
    {
        let mut conn = store.conn();
        let tx = meta::write_tx(&mut conn).expect("tx");
        meta::add_leases(&tx, &[base], Owner::current()).expect("lease");
        tx.commit().expect("commit");
    }
    let leased = store.why(&base).expect("why");
    assert_eq!(leased.leases.len(), 1);
    assert!(leased.leases[0].alive);
    assert_eq!(leased.leases[0].pid, std::process::id());

    let per_tag = store.tag_exclusive_bytes().expect("per tag");
    let mut tags = all_tags(&store);
    assert_eq!(per_tag.len(), tags.len());
    // Remove in an order that first removes one of two tags on a manifest.
    tags.sort_by_key(|t| std::cmp::Reverse(t.to_string()));
    for tag in tags {
        let preview = store.untag_preview(&tag).expect("preview");
        let alone = store
            .tag_exclusive_bytes()
            .expect("per tag")
            .into_iter()
            .find(|t| t.tag == tag)
            .expect("listed");
        assert_eq!(alone.exclusive_bytes, preview.bytes, "{tag}");
        let deleted: BTreeSet<Digest> = store.untag(&tag).expect("rm").into_iter().collect();
        let previewed: BTreeSet<Digest> = preview.blobs.iter().map(|b| b.digest).collect();
        assert_eq!(previewed, deleted, "removing {tag}");
        for blob in stored_blobs(&store) {
            assert_eq!(
                store.why(&blob.digest).expect("why").refcount,
                blob.refcount
            );
        }
    }
    assert!(stored_blobs(&store).is_empty());
    let after = store.why(&base).expect("why");
    assert!(after.chains.is_empty() && after.refcount == 0);
    assert!(after.on_disk, "the lease keeps the file");
}
