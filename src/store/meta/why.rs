//! The SQL behind `imagefs why` and the per-tag part of `df`: the reference graph
//! read in bulk, so that answering costs a few indexed queries however many tags
//! share a blob (`refs_by_child` walks up, `tags_by_manifest` finds the tags).

use std::collections::HashMap;

use rusqlite::Connection;

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
}

const ANCESTORS: &str = "WITH RECURSIVE up(d) AS (
        SELECT ?1
        UNION SELECT e.parent FROM refs e JOIN up ON e.child = up.d WHERE e.counted)";

/// Every counted edge on a path from a tag down to `digest`, and every tag on
/// `digest` or an ancestor: two queries, whatever the fan-in.
pub fn ancestry(conn: &Connection, digest: &Digest) -> Result<(Vec<UpEdge>, Vec<TagAt>)> {
    let key = digest.to_string();
    let mut stmt = conn.prepare_cached(&format!(
        "{ANCESTORS}
         SELECT e.parent, e.child, e.kind, e.position, e.platform, b.kind
         FROM refs e JOIN up ON e.child = up.d JOIN blobs b ON b.digest = e.parent
         WHERE e.counted"
    ))?;
    let rows = stmt.query_map([&key], |r| {
        Ok((
            parse_digest(r.get(0)?)?,
            parse_digest(r.get(1)?)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut edges = Vec::new();
    for row in rows {
        let (parent, child, kind, position, platform, parent_kind) = row?;
        edges.push(UpEdge {
            parent,
            child,
            kind,
            position: position as u32,
            platform: platform.as_deref().and_then(platform_name),
            parent_kind: BlobKind::parse(&parent_kind)?,
        });
    }
    let mut stmt = conn.prepare_cached(&format!(
        "{ANCESTORS}
         SELECT g.name, r.name, t.name, t.manifest FROM up
         JOIN tags t ON t.manifest = up.d
         JOIN repositories r ON r.id = t.repository_id
         JOIN registries g ON g.id = r.registry_id
         ORDER BY g.name, r.name, t.name"
    ))?;
    let rows = stmt.query_map([&key], |r| {
        Ok(TagAt {
            registry: r.get(0)?,
            repository: r.get(1)?,
            tag: r.get(2)?,
            manifest: parse_digest(r.get(3)?)?,
        })
    })?;
    let tags = rows.collect::<rusqlite::Result<_>>()?;
    Ok((edges, tags))
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
    let mut stmt =
        conn.prepare_cached("SELECT pid, start_time, created_ns FROM leases WHERE digest=?1")?;
    let rows = stmt.query_map([digest.to_string()], |r| {
        Ok(LeaseRow {
            owner: Owner {
                pid: r.get(0)?,
                start_time: r.get::<_, i64>(1)? as u64,
            },
            created_ns: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The counted graph below `top` (or, with `None`, below every tag): each blob's
/// size and stored refcount, and the counted child edges of each parent (one entry
/// per edge, so a blob named twice by one manifest appears twice, as it is counted).
pub fn counted_graph(conn: &Connection, top: Option<&Digest>) -> Result<CountedGraph> {
    let (seed, argument) = match top {
        Some(digest) => ("SELECT ?1", Some(digest.to_string())),
        None => ("SELECT DISTINCT manifest FROM tags", None),
    };
    let reach = format!(
        "WITH RECURSIVE down(d) AS ({seed}
            UNION SELECT e.child FROM refs e JOIN down ON e.parent = down.d WHERE e.counted)"
    );
    let params: Vec<&dyn rusqlite::ToSql> = match &argument {
        Some(text) => vec![text],
        None => vec![],
    };
    let mut graph = CountedGraph::default();
    let mut stmt = conn.prepare_cached(&format!(
        "{reach} SELECT b.digest, b.size, b.refcount FROM down JOIN blobs b ON b.digest = down.d"
    ))?;
    let rows = stmt.query_map(params.as_slice(), |r| {
        Ok((
            parse_digest(r.get(0)?)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    for row in rows {
        let (digest, size, refcount) = row?;
        graph.blobs.insert(digest, (size, refcount));
    }
    let mut stmt = conn.prepare_cached(&format!(
        "{reach} SELECT e.parent, e.child FROM down JOIN refs e ON e.parent = down.d
         WHERE e.counted"
    ))?;
    let rows = stmt.query_map(params.as_slice(), |r| {
        Ok((parse_digest(r.get(0)?)?, parse_digest(r.get(1)?)?))
    })?;
    for row in rows {
        let (parent, child) = row?;
        graph.children.entry(parent).or_default().push(child);
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

/// Every tag: `(registry, repository, tag, manifest)`, sorted.
pub fn all_tags(conn: &Connection) -> Result<Vec<TagAt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name, r.name, t.name, t.manifest FROM tags t
         JOIN repositories r ON r.id = t.repository_id
         JOIN registries g ON g.id = r.registry_id
         ORDER BY g.name, r.name, t.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TagAt {
            registry: r.get(0)?,
            repository: r.get(1)?,
            tag: r.get(2)?,
            manifest: parse_digest(r.get(3)?)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
