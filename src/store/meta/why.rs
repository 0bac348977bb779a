//! The SQL behind `imagefs why` and the per-tag part of `df`: the reference graph
//! read in bulk, so that answering costs a few indexed queries however many tags
//! share a blob: covering indexes (schema version 2) answer each step.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension};

use super::{parse_digest, BlobKind, Owner, Result};
use crate::digest::Digest;

/// One counted edge above the blob asked about: `parent` names `child`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpEdge {
    /// The manifest or index holding the reference.
    pub parent: Digest,
    /// What it references.
    pub child: Digest,
    /// `config`, `layer`, `manifest` or `subject`.
    pub kind: String,
    /// Position among edges of that kind.
    pub position: u32,
    /// `os/arch[/variant]` of an index child, when the index says.
    pub platform: Option<String>,
    /// What the parent is.
    pub parent_kind: BlobKind,
}

/// A tag on the blob asked about or on one of its ancestors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagAt {
    /// Registry name.
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag name.
    pub tag: String,
    /// The manifest it points at.
    pub manifest: Digest,
}

/// A lease on a blob, dead or alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who took it.
    pub owner: Owner,
    /// When (ns since the epoch).
    pub created_ns: i64,
    /// For a grace lease (blobs written through an OCI layout): when it ends.
    pub expires_ns: Option<i64>,
}

impl LeaseRow {
    /// Whether it still protects the blob: a grace lease until it ends, any other
    /// while its process runs.
    pub fn is_alive(&self) -> bool {
        super::lease_alive(self.owner, self.expires_ns, super::now_ns())
    }
}

/// Below this many nodes on one level, the walk asks the indexes node by node;
/// above it, one scan of all upper edges (or all tags) is cheaper than that many
/// lookups.
const PROBE_LIMIT: usize = 512;

/// Every counted edge on a path from a tag down to `digest`, and every tag on
/// `digest` or an ancestor. Each step reads a covering index (schema version 2):
/// the blob's own parents, then the edges that can sit above a manifest (index
/// children, subjects), then the tags; a base layer under 100,000 images costs a
/// few scans, not a query per image.
pub fn ancestry(conn: &Connection, digest: &Digest) -> Result<(Vec<UpEdge>, Vec<TagAt>)> {
    let mut edges = parents_of(conn, digest)?;
    let mut nodes: HashSet<Digest> = HashSet::from([*digest]);
    let mut level: Vec<Digest> = Vec::new();
    for edge in &edges {
        if nodes.insert(edge.parent) {
            level.push(edge.parent);
        }
    }
    // Above the first level every node is a manifest or an index: only index
    // children and subjects can name one.
    let mut all_upper: Option<HashMap<Digest, Vec<UpEdge>>> = None;
    let mut depth = 0;
    while !level.is_empty() && depth < MAX_DEPTH {
        depth += 1;
        let mut found = Vec::new();
        if all_upper.is_none() && level.len() <= PROBE_LIMIT {
            for node in &level {
                found.extend(upper_parents_of(conn, node)?);
            }
        } else {
            if all_upper.is_none() {
                all_upper = Some(all_upper_edges(conn)?);
            }
            let upper = all_upper.as_ref().expect("loaded just above");
            for node in &level {
                found.extend(upper.get(node).into_iter().flatten().cloned());
            }
        }
        level.clear();
        for edge in found {
            if nodes.insert(edge.parent) {
                level.push(edge.parent);
            }
            edges.push(edge);
        }
    }
    let tags = tags_on(conn, &nodes)?;
    Ok((edges, tags))
}

/// Chains deeper than this are not followed (index -> index -> manifest -> layer
/// is the deepest real shape; this only bounds a damaged graph).
const MAX_DEPTH: usize = 16;

fn up_edge(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(Digest, Digest, String, i64, Option<String>)> {
    Ok((
        parse_digest(row.get(0)?)?,
        parse_digest(row.get(1)?)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

/// The counted parents of `digest`, from `refs_up`.
fn parents_of(conn: &Connection, digest: &Digest) -> Result<Vec<UpEdge>> {
    let mut stmt = conn.prepare_cached(
        "SELECT parent, child, kind, position, platform FROM refs
         WHERE child=?1 AND counted",
    )?;
    let rows = stmt.query_map([digest.to_string()], up_edge)?;
    let mut edges = Vec::new();
    for row in rows {
        let (parent, child, kind, position, platform) = row?;
        // The parent's kind follows from the edge, except for a referrer, which may
        // be a manifest or an index.
        let parent_kind = match kind.as_str() {
            "manifest" => BlobKind::Index,
            "subject" => super::blob(conn, &parent)?.map_or(BlobKind::Manifest, |b| b.kind),
            _ => BlobKind::Manifest,
        };
        edges.push(UpEdge {
            parent,
            child,
            kind,
            position: position as u32,
            platform: platform.as_deref().and_then(platform_name),
            parent_kind,
        });
    }
    Ok(edges)
}

const UPPER: &str = "SELECT e.parent, e.child, e.kind, e.position, e.platform, b.kind
     FROM refs e JOIN blobs b ON b.digest = e.parent
     WHERE e.kind IN ('manifest', 'subject') AND e.counted";

fn upper_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(UpEdge, String)> {
    let (parent, child, kind, position, platform) = up_edge(row)?;
    Ok((
        UpEdge {
            parent,
            child,
            kind,
            position: position as u32,
            platform: platform.as_deref().and_then(platform_name),
            parent_kind: BlobKind::Blob,
        },
        row.get(5)?,
    ))
}

/// Index children and subject edges naming `child`, from `refs_upper`.
fn upper_parents_of(conn: &Connection, child: &Digest) -> Result<Vec<UpEdge>> {
    let mut stmt = conn.prepare_cached(&format!("{UPPER} AND e.child=?1"))?;
    let rows = stmt.query_map([child.to_string()], upper_row)?;
    let mut edges = Vec::new();
    for row in rows {
        let (mut edge, parent_kind) = row?;
        edge.parent_kind = BlobKind::parse(&parent_kind)?;
        edges.push(edge);
    }
    Ok(edges)
}

/// Every index child and subject edge in the store, by child.
fn all_upper_edges(conn: &Connection) -> Result<HashMap<Digest, Vec<UpEdge>>> {
    let mut stmt = conn.prepare_cached(UPPER)?;
    let rows = stmt.query_map([], upper_row)?;
    let mut by_child: HashMap<Digest, Vec<UpEdge>> = HashMap::new();
    for row in rows {
        let (mut edge, parent_kind) = row?;
        edge.parent_kind = BlobKind::parse(&parent_kind)?;
        by_child.entry(edge.child).or_default().push(edge);
    }
    Ok(by_child)
}

const TAGS: &str = "SELECT g.name, r.name, t.name, t.manifest FROM tags t
     JOIN repositories r ON r.id = t.repository_id
     JOIN registries g ON g.id = r.registry_id";

fn tag_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TagAt> {
    Ok(TagAt {
        registry: row.get(0)?,
        repository: row.get(1)?,
        tag: row.get(2)?,
        manifest: parse_digest(row.get(3)?)?,
    })
}

/// Tags on any of `nodes`, unsorted.
fn tags_on(conn: &Connection, nodes: &HashSet<Digest>) -> Result<Vec<TagAt>> {
    let mut tags = Vec::new();
    if nodes.len() <= PROBE_LIMIT {
        let mut stmt = conn.prepare_cached(&format!("{TAGS} WHERE t.manifest=?1"))?;
        for node in nodes {
            for row in stmt.query_map([node.to_string()], tag_row)? {
                tags.push(row?);
            }
        }
    } else {
        let mut stmt = conn.prepare_cached(TAGS)?;
        for row in stmt.query_map([], tag_row)? {
            let tag = row?;
            if nodes.contains(&tag.manifest) {
                tags.push(tag);
            }
        }
    }
    Ok(tags)
}

/// `os/arch[/variant]` from the platform JSON of an index edge.
fn platform_name(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let os = value.get("os")?.as_str()?;
    let architecture = value.get("architecture")?.as_str()?;
    Some(match value.get("variant").and_then(|v| v.as_str()) {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    })
}

/// Leases recorded on `digest` (the caller tells live from dead).
pub fn leases_on(conn: &Connection, digest: &Digest) -> Result<Vec<LeaseRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT pid, start_time, created_ns, expires_ns FROM leases WHERE digest=?1",
    )?;
    let rows = stmt.query_map([digest.to_string()], |r| {
        Ok(LeaseRow {
            owner: Owner {
                pid: r.get(0)?,
                start_time: r.get::<_, i64>(1)? as u64,
            },
            created_ns: r.get(2)?,
            expires_ns: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The counted graph below `top` (or, with `None`, the whole store): each blob's
/// size and stored refcount, and the counted child edges of each parent (one entry
/// per edge, so a blob named twice by one manifest appears twice, as it is counted).
///
/// Below one manifest it walks the primary keys (a handful of lookups); for the
/// whole store it reads both tables once. No recursive query: the planner turned
/// one inside out on a large store (a scan of every blob per call).
pub fn counted_graph(conn: &Connection, top: Option<&Digest>) -> Result<CountedGraph> {
    let mut graph = CountedGraph::default();
    let Some(top) = top else {
        let mut stmt = conn.prepare_cached("SELECT digest, size, refcount FROM blobs")?;
        for row in stmt.query_map([], |r| {
            Ok((
                parse_digest(r.get(0)?)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })? {
            let (digest, size, refcount) = row?;
            graph.blobs.insert(digest, (size, refcount));
        }
        let mut stmt = conn.prepare_cached("SELECT parent, child FROM refs WHERE counted")?;
        for row in stmt.query_map([], |r| {
            Ok((parse_digest(r.get(0)?)?, parse_digest(r.get(1)?)?))
        })? {
            let (parent, child) = row?;
            graph.children.entry(parent).or_default().push(child);
        }
        return Ok(graph);
    };
    let mut blob_stmt = conn.prepare_cached("SELECT size, refcount FROM blobs WHERE digest=?1")?;
    let mut child_stmt =
        conn.prepare_cached("SELECT child FROM refs WHERE parent=?1 AND counted")?;
    let mut work = vec![*top];
    while let Some(digest) = work.pop() {
        if graph.blobs.contains_key(&digest) {
            continue;
        }
        let key = digest.to_string();
        let row = blob_stmt
            .query_row([&key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()?;
        let Some(row) = row else { continue };
        graph.blobs.insert(digest, row);
        let children: Vec<Digest> = child_stmt
            .query_map([&key], |r| parse_digest(r.get(0)?))?
            .collect::<rusqlite::Result<_>>()?;
        work.extend(children.iter().copied());
        graph.children.insert(digest, children);
    }
    Ok(graph)
}

/// What [`counted_graph`] returns.
#[derive(Debug, Clone, Default)]
pub struct CountedGraph {
    /// Blob -> (size, stored refcount).
    pub blobs: HashMap<Digest, (u64, u64)>,
    /// Parent -> its counted children, one entry per edge.
    pub children: HashMap<Digest, Vec<Digest>>,
}

/// Every tag, sorted by registry, repository and name.
pub fn all_tags(conn: &Connection) -> Result<Vec<TagAt>> {
    let mut stmt = conn.prepare_cached(TAGS)?;
    let mut tags: Vec<TagAt> = stmt
        .query_map([], tag_row)?
        .collect::<rusqlite::Result<_>>()?;
    tags.sort_by(|a, b| {
        (&a.registry, &a.repository, &a.tag).cmp(&(&b.registry, &b.repository, &b.tag))
    });
    Ok(tags)
}
