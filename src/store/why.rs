//! Why is this kept? (SPEC section 8): every chain of references from a tag down to
//! a manifest or blob, the leases that protect it, and what removing a tag frees.
//!
//! Owns: assembling chains and previewing a release from the reference graph that
//! `meta` reads in bulk. Must not touch: SQL (that is `meta::why`), files, or the
//! counts themselves: a preview only reads, and walks the graph with the same rule
//! as `meta::release` (a blob goes when its count reaches zero, and then releases
//! each counted child once per edge), so what it says is what `rm` does.

use std::collections::HashMap;

use super::meta::{self, BlobKind, CountedGraph, TagAt, UpEdge};
use super::{Result, Store, StoreError};
use crate::digest::Digest;
use crate::reference::{Reference, Target};

/// Chains longer than this are not followed (a store holds index -> index ->
/// manifest -> layer at most in practice; this only bounds a damaged graph).
const MAX_DEPTH: usize = 16;

/// How one step of a chain is reached from the step before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "via", rename_all = "lowercase")]
pub enum Via {
    /// The manifest a tag points at.
    Tag,
    /// A child of an index, with its platform when the index gives one.
    Manifest {
        /// Position in the index.
        position: u32,
        /// `os/arch[/variant]`.
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// A manifest's config.
    Config,
    /// A manifest's layer, base first from 0 (as `layers/NNN/` in the mount).
    Layer {
        /// Position.
        position: u32,
    },
    /// The subject of a referrer (OCI 1.1): the referrer keeps its subject.
    Subject,
}

/// One step of a chain: a blob and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// The blob.
    pub digest: Digest,
    /// How the previous step names it.
    #[serde(flatten)]
    pub via: Via,
    /// What it is (`manifest`, `index`, `config`, `layer`, `blob`), if stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<BlobKind>,
}

/// A tag and the references from it down to the blob asked about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Chain {
    /// The tag, as a full reference.
    #[serde(serialize_with = "serialize_display")]
    pub tag: Reference,
    /// From the tag's manifest down to the blob asked about.
    pub steps: Vec<Step>,
}

/// A lease on the blob: an import or pull in progress is about to reference it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    /// The process holding it.
    pub pid: u32,
    /// Whether that process still runs (a dead one's lease is ignored and
    /// dropped by the next `gc`).
    pub alive: bool,
    /// When it was taken (ns since the epoch).
    pub created_ns: i64,
}

/// What keeps a manifest or blob alive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WhyReport {
    /// The blob asked about.
    pub digest: Digest,
    /// Its kind, if stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<BlobKind>,
    /// Its size in bytes, if stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The reference count the store acts on: tags plus counted edges naming it.
    pub refcount: u64,
    /// Every chain from a tag down to it, sorted by tag.
    pub chains: Vec<Chain>,
    /// Leases on it.
    pub leases: Vec<LeaseHolder>,
    /// Whether its file is in blobs/ (a leased blob may be there without a row).
    pub on_disk: bool,
}

/// What removing one tag would delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FreedBlobs {
    /// The blobs whose count would reach zero, parents before children.
    pub blobs: Vec<FreedBlob>,
    /// Their bytes.
    pub bytes: u64,
}

/// One blob a removal would delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FreedBlob {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// The bytes only one tag keeps (`df --json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagBytes {
    /// The tag.
    #[serde(serialize_with = "serialize_display")]
    pub tag: Reference,
    /// The manifest it points at.
    pub manifest: Digest,
    /// Bytes that removing this tag alone would free.
    pub exclusive_bytes: u64,
    /// Blobs that removing this tag alone would free.
    pub exclusive_blobs: u64,
}

fn serialize_display<S: serde::Serializer>(
    value: &Reference,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Store {
    /// Every chain that keeps `digest` alive, its count and its leases.
    pub fn why(&self, digest: &Digest) -> Result<WhyReport> {
        let conn = self.conn();
        let blob = meta::blob(&conn, digest)?;
        let (edges, tags) = meta::ancestry(&conn, digest)?;
        let leases = meta::leases_on(&conn, digest)?;
        drop(conn);
        // Every node of a chain is the target or the parent of an edge.
        let mut kinds: HashMap<Digest, BlobKind> =
            edges.iter().map(|e| (e.parent, e.parent_kind)).collect();
        if let Some(info) = &blob {
            kinds.insert(*digest, info.kind);
        }
        let chains = chains_to(digest, &edges, &tags, &kinds);
        Ok(WhyReport {
            digest: *digest,
            kind: blob.as_ref().map(|b| b.kind),
            size: blob.as_ref().map(|b| b.size),
            refcount: blob.as_ref().map_or(0, |b| b.refcount),
            chains,
            leases: leases
                .into_iter()
                .map(|lease| LeaseHolder {
                    pid: lease.owner.pid,
                    alive: lease.is_alive(),
                    created_ns: lease.created_ns,
                })
                .collect(),
            on_disk: self.cas.contains(digest),
        })
    }

    /// What `untag(reference)` of this tag would delete, without changing anything.
    pub fn untag_preview(&self, reference: &Reference) -> Result<FreedBlobs> {
        let Target::Tag(tag) = &reference.target else {
            return Err(StoreError::Invalid(format!(
                "{reference}: a preview of a removal needs a tag, not a digest"
            )));
        };
        let manifest = {
            let conn = self.conn();
            let repo =
                self.require_repository(&conn, &reference.registry, &reference.repository)?;
            match meta::tag(&conn, repo.id, tag)? {
                Some(row) => row.manifest,
                None => return Err(StoreError::NotFound(format!("tag {reference}"))),
            }
        };
        let graph = meta::counted_graph(&self.conn(), Some(&manifest))?;
        Ok(preview_release(&graph, &manifest))
    }

    /// For every tag, the bytes and blobs that removing it alone would free.
    pub fn tag_exclusive_bytes(&self) -> Result<Vec<TagBytes>> {
        let (graph, tags) = {
            let conn = self.conn();
            (meta::counted_graph(&conn, None)?, meta::all_tags(&conn)?)
        };
        Ok(tags
            .into_iter()
            .map(|tag| {
                let freed = preview_release(&graph, &tag.manifest);
                TagBytes {
                    tag: tag_reference(&tag),
                    manifest: tag.manifest,
                    exclusive_bytes: freed.bytes,
                    exclusive_blobs: freed.blobs.len() as u64,
                }
            })
            .collect())
    }
}

fn tag_reference(tag: &TagAt) -> Reference {
    Reference {
        registry: tag.registry.clone(),
        repository: tag.repository.clone(),
        target: Target::Tag(tag.tag.clone()),
    }
}

/// Drops one reference to `top` in a scratch copy of the counts and follows the
/// release rule of `meta::release` down the graph.
fn preview_release(graph: &CountedGraph, top: &Digest) -> FreedBlobs {
    let mut dropped: HashMap<Digest, u64> = HashMap::new();
    let mut freed = FreedBlobs::default();
    let mut work = vec![*top];
    while let Some(current) = work.pop() {
        let Some(&(size, refcount)) = graph.blobs.get(&current) else {
            continue;
        };
        let gone = dropped.entry(current).or_insert(0);
        *gone += 1;
        if *gone < refcount {
            continue;
        }
        freed.bytes += size;
        freed.blobs.push(FreedBlob {
            digest: current,
            size,
        });
        if let Some(children) = graph.children.get(&current) {
            work.extend(children.iter().copied());
        }
    }
    freed
}

/// Every path from a tag down to `target` over the counted edges above it.
fn chains_to(
    target: &Digest,
    edges: &[UpEdge],
    tags: &[TagAt],
    kinds: &HashMap<Digest, BlobKind>,
) -> Vec<Chain> {
    let mut up: HashMap<Digest, Vec<&UpEdge>> = HashMap::new();
    for edge in edges {
        up.entry(edge.child).or_default().push(edge);
    }
    for list in up.values_mut() {
        list.sort_by(|a, b| (&a.parent, a.position).cmp(&(&b.parent, b.position)));
    }
    let mut tags_on: HashMap<Digest, Vec<&TagAt>> = HashMap::new();
    for tag in tags {
        tags_on.entry(tag.manifest).or_default().push(tag);
    }
    // Depth first upward from the target; `below` holds the edges walked so far,
    // the target's own edge first.
    let mut chains = Vec::new();
    let mut stack: Vec<(Digest, Vec<&UpEdge>)> = vec![(*target, Vec::new())];
    while let Some((node, below)) = stack.pop() {
        if let Some(on_node) = tags_on.get(&node) {
            for tag in on_node {
                let mut steps = vec![Step {
                    digest: node,
                    via: Via::Tag,
                    kind: kinds.get(&node).copied(),
                }];
                for edge in below.iter().rev() {
                    steps.push(Step {
                        digest: edge.child,
                        via: via_of(edge),
                        kind: kinds.get(&edge.child).copied(),
                    });
                }
                chains.push(Chain {
                    tag: tag_reference(tag),
                    steps,
                });
            }
        }
        if below.len() >= MAX_DEPTH {
            continue;
        }
        for edge in up.get(&node).map(Vec::as_slice).unwrap_or_default() {
            let mut path = below.clone();
            path.push(edge);
            stack.push((edge.parent, path));
        }
    }
    chains.sort_by_cached_key(|chain| {
        let steps: Vec<Digest> = chain.steps.iter().map(|s| s.digest).collect();
        (chain.tag.to_string(), steps)
    });
    chains
}

fn via_of(edge: &UpEdge) -> Via {
    match edge.kind.as_str() {
        "config" => Via::Config,
        "layer" => Via::Layer {
            position: edge.position,
        },
        "subject" => Via::Subject,
        _ => Via::Manifest {
            position: edge.position,
            platform: edge.platform.clone(),
        },
    }
}

impl std::fmt::Display for Chain {
    /// `prod/app:1 -> sha256:ab12… (index) -> sha256:cd34… (linux/amd64) -> layer 2 sha256:ef56…`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.tag)?;
        for step in &self.steps {
            let short = short_digest(&step.digest);
            match &step.via {
                Via::Tag => match step.kind {
                    Some(kind) => write!(f, " -> {short} ({})", kind.as_str())?,
                    None => write!(f, " -> {short}")?,
                },
                Via::Manifest { platform, .. } => match platform {
                    Some(platform) => write!(f, " -> {short} ({platform})")?,
                    None => write!(f, " -> {short} (manifest)")?,
                },
                Via::Config => write!(f, " -> config {short}")?,
                Via::Layer { position } => write!(f, " -> layer {position} {short}")?,
                Via::Subject => write!(f, " -> subject {short}")?,
            }
        }
        Ok(())
    }
}

/// `sha256:` and the first 12 hex digits, as Docker shows image IDs.
pub fn short_digest(digest: &Digest) -> String {
    format!("sha256:{}", digest.short(12))
}

#[cfg(test)]
mod tests;
