//! The metadata database (`STORE/imagefs.db`): the only module with SQL.
//!
//! Schema (version 3; migrations below):
//! - `registries(id, name)`, `repositories(id, registry_id, name)`: namespaces.
//! - `blobs(digest, size, media_type, kind, refcount, diff_id, created)`: one row per
//!   referenced blob. A row exists exactly while its refcount is above zero.
//! - `tags(repository_id, name, manifest, updated_ns)`: each tag counts one
//!   reference to its manifest.
//! - `refs(parent, kind, position, child, ...)`: edges from a manifest or index to
//!   what it names. `counted` edges add one to the child's refcount; a `subject` edge
//!   to a manifest that is not in the store is recorded but not counted.
//! - `origins(digest, registry, repository, seen_ns)`: registry repositories a
//!   stored blob is known to be available from (deleted with the blob's row).
//! - `leases(id, digest, pid, start_time, created, expires_ns, holder)`: digests an
//!   import in progress is about to reference, and blobs written through a
//!   repository's OCI layout and not referenced yet. A leased blob file is never
//!   deleted, even at refcount 0. A lease without `expires_ns` lives as long as its
//!   process (pid + start time); a grace lease (`expires_ns` set, `holder` names the
//!   layout `registry/repository`) lives until that time, whoever took it.
//!
//! Version 2 adds covering indexes for walking references upward (`why`); version 4
//! adds grace leases (`expires_ns`, `holder`).
//!
//! All writes run in `BEGIN IMMEDIATE` transactions, so concurrent processes
//! serialize on SQLite's write lock (WAL mode keeps readers unblocked).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::digest::{DiffId, Digest};

mod origins;
pub(crate) mod verified;
mod why;
pub use origins::{add_origins, origins, Origin};
pub use why::{
    all_tags, ancestry, counted_graph, leases_on, CountedGraph, LeaseRow, TagAt, UpEdge,
};

/// Errors from the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite failed.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database has a newer schema than this binary knows.
    #[error("metadata database has schema version {0}, newer than this imagefs understands ({1})")]
    TooNew(i64, i64),
    /// A stored value is not what this code wrote.
    #[error("metadata database is inconsistent: {0}")]
    Corrupt(String),
}

type Result<T, E = MetaError> = std::result::Result<T, E>;

const SCHEMA_VERSION: i64 = 5;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE registries(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_ns INTEGER NOT NULL
     );
     CREATE TABLE repositories(
        id INTEGER PRIMARY KEY,
        registry_id INTEGER NOT NULL REFERENCES registries(id),
        name TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        UNIQUE(registry_id, name)
     );
     CREATE TABLE blobs(
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        kind TEXT NOT NULL,
        refcount INTEGER NOT NULL,
        diff_id TEXT,
        created_ns INTEGER NOT NULL
     );
     CREATE TABLE tags(
        repository_id INTEGER NOT NULL REFERENCES repositories(id),
        name TEXT NOT NULL,
        manifest TEXT NOT NULL,
        updated_ns INTEGER NOT NULL,
        PRIMARY KEY(repository_id, name)
     );
     CREATE INDEX tags_by_manifest ON tags(manifest);
     CREATE TABLE refs(
        parent TEXT NOT NULL,
        kind TEXT NOT NULL,
        position INTEGER NOT NULL,
        child TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        platform TEXT,
        annotations TEXT,
        counted INTEGER NOT NULL,
        PRIMARY KEY(parent, kind, position)
     );
     CREATE INDEX refs_by_child ON refs(child);
     CREATE TABLE leases(
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start_time INTEGER NOT NULL,
        created_ns INTEGER NOT NULL
     );
     CREATE INDEX leases_by_digest ON leases(digest);",
    // 1 -> 2: covering indexes for walking references upward (`why`): a blob's
    // counted parents, the edges that can sit above a manifest (index children,
    // subjects), and the tags on a manifest, each read from its index alone.
    "CREATE INDEX refs_up ON refs(child, counted, parent, kind, position, platform);
     DROP INDEX refs_by_child;
     CREATE INDEX refs_upper ON refs(kind, child, parent, position, platform)
        WHERE kind IN ('manifest', 'subject') AND counted;
     CREATE INDEX tags_on_manifest ON tags(manifest, repository_id, name);
     DROP INDEX tags_by_manifest;",
    // 2 -> 3: where blobs came from (registry repositories), for cross-repository
    // mounts on push and for fetching lazy layers.
    "CREATE TABLE origins(
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        seen_ns INTEGER NOT NULL,
        PRIMARY KEY(digest, registry, repository)
     ) WITHOUT ROWID;",
    // 3 -> 4: grace leases on blobs written through an OCI layout of the mount:
    // alive until `expires_ns` whoever took them; `holder` is the layout's
    // `registry/repository`, whose `blobs/sha256/` lists them.
    "ALTER TABLE leases ADD COLUMN expires_ns INTEGER;
     ALTER TABLE leases ADD COLUMN holder TEXT;
     CREATE INDEX leases_by_holder ON leases(holder) WHERE holder IS NOT NULL;",
    // 4 -> 5: lazy layers (`pull --lazy`): a row whose file is not in blobs/ yet
    // ('lazy': fetched by ranges from its origins when read), or whose fetched bytes
    // failed their digest or diff_id ('bad': reads give EIO until a pull replaces it).
    "ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'present';
     CREATE INDEX blobs_not_present ON blobs(state) WHERE state != 'present';",
];

/// Whether a blob's file is in `blobs/` (SPEC 6, `pull --lazy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    /// The file is in `blobs/`, verified when it was written.
    Present,
    /// A layer pulled lazily: no file; its bytes are fetched by ranges from its
    /// origins when read, and it becomes `Present` once complete and checked.
    Lazy,
    /// A layer without a file whose bytes did not match its digest or diff_id: a
    /// lazy layer's fetched bytes, or a layer written through a layout whose
    /// diff_id was checked after the tag committed (its blob is removed). Reads
    /// give EIO, `fsck` names it, a plain `pull` or import fetches it again.
    Bad,
}

impl BlobState {
    /// The lowercase name, as stored in SQL and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Present => "present",
            BlobState::Lazy => "lazy",
            BlobState::Bad => "bad",
        }
    }
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "present" => BlobState::Present,
            "lazy" => BlobState::Lazy,
            "bad" => BlobState::Bad,
            other => return Err(MetaError::Corrupt(format!("unknown blob state {other:?}"))),
        })
    }
}

/// What a blob is to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// An image manifest (OCI or Docker schema 2), including artifact manifests.
    Manifest,
    /// An OCI index or Docker manifest list.
    Index,
    /// A config blob.
    Config,
    /// An image layer (tar, tar+gzip, tar+zstd).
    Layer,
    /// An opaque artifact blob.
    Blob,
}

impl BlobKind {
    /// The lowercase name, as stored in SQL, serialized and printed (`layer`).
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Manifest => "manifest",
            BlobKind::Index => "index",
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
            BlobKind::Blob => "blob",
        }
    }
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "manifest" => BlobKind::Manifest,
            "index" => BlobKind::Index,
            "config" => BlobKind::Config,
            "layer" => BlobKind::Layer,
            "blob" => BlobKind::Blob,
            other => return Err(MetaError::Corrupt(format!("unknown blob kind {other:?}"))),
        })
    }
}

/// How a parent names a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// manifest -> config
    Config,
    /// manifest -> layer (position = layer order, base first)
    Layer,
    /// index -> child manifest or index
    Manifest,
    /// referrer -> subject (OCI 1.1)
    Subject,
}

impl EdgeKind {
    fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Config => "config",
            EdgeKind::Layer => "layer",
            EdgeKind::Manifest => "manifest",
            EdgeKind::Subject => "subject",
        }
    }
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "config" => EdgeKind::Config,
            "layer" => EdgeKind::Layer,
            "manifest" => EdgeKind::Manifest,
            "subject" => EdgeKind::Subject,
            other => return Err(MetaError::Corrupt(format!("unknown edge kind {other:?}"))),
        })
    }
}

/// A stored blob's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The media type it was first stored with.
    pub media_type: String,
    /// What it is.
    pub kind: BlobKind,
    /// Tags and counted edges pointing at it.
    pub refcount: u64,
    /// For layers: the digest of the uncompressed tar.
    pub diff_id: Option<Digest>,
    /// When it was stored (ns since the epoch).
    pub created_ns: i64,
    /// Whether its file is in `blobs/` (lazy layers have none yet).
    pub state: BlobState,
}

/// A platform as recorded on an index edge: the image's own platform type (one
/// type; this name stays for callers that know it).
pub type PlatformRow = crate::image::Platform;

/// An edge from a manifest or index to a child.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Edge {
    /// How the parent names the child.
    pub kind: EdgeKind,
    /// Position among edges of this kind (layer order, index order).
    pub position: u32,
    /// The child's digest.
    pub child: Digest,
    /// The media type on the parent's descriptor.
    pub media_type: String,
    /// The size on the parent's descriptor.
    pub size: u64,
    /// Platform of an index child.
    pub platform: Option<PlatformRow>,
    /// Descriptor annotations, as JSON text.
    pub annotations: Option<String>,
    /// Whether this edge adds to the child's refcount.
    pub counted: bool,
}

/// A blob an import wants recorded, with its outgoing edges.
#[derive(Debug, Clone)]
pub struct NewBlob {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Kind.
    pub kind: BlobKind,
    /// diff_id for layers.
    pub diff_id: Option<DiffId>,
    /// Edges to children (children must be recorded in the same batch or already stored).
    pub edges: Vec<Edge>,
}

/// A tag row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagRow {
    /// Tag name.
    pub name: String,
    /// Manifest it points at.
    pub manifest: Digest,
    /// Last change (ns since the epoch).
    pub updated_ns: i64,
}

/// A repository row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRow {
    /// Row id.
    pub id: i64,
    /// Registry name.
    pub registry: String,
    /// Repository path.
    pub name: String,
    /// Creation (ns since the epoch).
    pub created_ns: i64,
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as i64
}

/// Opens the database, applying pragmas and migrations.
///
/// Several processes may open a fresh store at the same instant; switching it to
/// WAL (and some lock upgrades) can answer SQLITE_BUSY without waiting on the
/// busy handler, so the whole open is retried for a while on "database is locked".
pub fn open(path: &std::path::Path) -> Result<Connection> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match open_once(path) {
            Err(MetaError::Sqlite(e)) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn open_once(path: &std::path::Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    // Room for every statement this module prepares cached (about 40), so that
    // none is parsed again in a walk that alternates between them.
    conn.set_prepared_statement_cache_capacity(64);
    conn.trace(Some(count_statement));
    Ok(conn)
}

/// SQL statements this process has run on the metadata database (a debug figure:
/// the mount shows it in its statistics, so queries per request can be counted).
/// `PRAGMA data_version`, the change token (it reads SQLite's shared-memory
/// header, no table), is counted apart.
static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TOKEN_CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_statement(sql: &str) {
    let counter = if sql.starts_with("PRAGMA data_version") {
        &TOKEN_CHECKS
    } else {
        &STATEMENTS
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many SQL statements (change-token checks apart) this process has run on
/// metadata databases so far.
pub fn statements_run() -> u64 {
    STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many change-token checks (`PRAGMA data_version`) this process has run.
pub fn token_checks_run() -> u64 {
    TOKEN_CHECKS.load(std::sync::atomic::Ordering::Relaxed)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(MetaError::TooNew(version, SCHEMA_VERSION));
    }
    for migration in &MIGRATIONS[version as usize..] {
        tx.execute_batch(migration)?;
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Starts a write transaction that holds SQLite's write lock from the start.
pub fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn parse_digest(text: String) -> rusqlite::Result<Digest> {
    Digest::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

// ---- registries and repositories ----

/// Registry id, if it exists.
pub fn registry_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM registries WHERE name=?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// Creates the registry if missing; returns its id and whether it was created.
pub fn ensure_registry(tx: &Transaction<'_>, name: &str) -> Result<(i64, bool)> {
    if let Some(id) = registry_id(tx, name)? {
        return Ok((id, false));
    }
    tx.execute(
        "INSERT INTO registries(name, created_ns) VALUES(?1, ?2)",
        params![name, now_ns()],
    )?;
    Ok((tx.last_insert_rowid(), true))
}

/// Repository row, if it exists.
pub fn repository(conn: &Connection, registry: &str, name: &str) -> Result<Option<RepoRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT r.id, g.name, r.name, r.created_ns FROM repositories r
             JOIN registries g ON g.id = r.registry_id WHERE g.name=?1 AND r.name=?2",
        )?
        .query_row([registry, name], |r| {
            Ok(RepoRow {
                id: r.get(0)?,
                registry: r.get(1)?,
                name: r.get(2)?,
                created_ns: r.get(3)?,
            })
        })
        .optional()?)
}

/// Creates the registry and repository if missing; returns the repository id and
/// whether the repository was created.
pub fn ensure_repository(tx: &Transaction<'_>, registry: &str, name: &str) -> Result<(i64, bool)> {
    if let Some(row) = repository(tx, registry, name)? {
        return Ok((row.id, false));
    }
    let (registry_id, _) = ensure_registry(tx, registry)?;
    tx.execute(
        "INSERT INTO repositories(registry_id, name, created_ns) VALUES(?1, ?2, ?3)",
        params![registry_id, name, now_ns()],
    )?;
    Ok((tx.last_insert_rowid(), true))
}

/// All registries with their creation time, sorted by name.
pub fn registries(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT name, created_ns FROM registries ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// All repositories of a registry (or of every registry), sorted.
pub fn repositories(conn: &Connection, registry: Option<&str>) -> Result<Vec<RepoRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, g.name, r.name, r.created_ns FROM repositories r
         JOIN registries g ON g.id = r.registry_id
         WHERE ?1 IS NULL OR g.name = ?1 ORDER BY g.name, r.name",
    )?;
    let rows = stmt.query_map([registry], |r| {
        Ok(RepoRow {
            id: r.get(0)?,
            registry: r.get(1)?,
            name: r.get(2)?,
            created_ns: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The repositories of `registry` at or below repository path `path` (all of them
/// when `path` is empty), sorted by name, with their creation times: one range scan
/// of the `(registry_id, name)` index (`'0'` is the byte after `'/'`).
pub fn repositories_under(
    conn: &Connection,
    registry: &str,
    path: &str,
) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name, r.created_ns FROM registries g
         JOIN repositories r ON r.registry_id = g.id
         WHERE g.name = ?1 AND (?2 = '' OR r.name = ?2
               OR (r.name >= ?2 || '/' AND r.name < ?2 || '0'))
         ORDER BY r.name",
    )?;
    let rows = stmt.query_map([registry, path], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What identifies the state of one repository's tags: a repository whose row or
/// tags change (any add, removal or move of a tag: `updated_ns` is set on every
/// write) gets another print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoPrint {
    /// The repository's row id.
    pub id: i64,
    /// Its creation time.
    pub created_ns: i64,
    /// How many tags it has.
    pub tags: i64,
    /// The newest tag change.
    pub newest_ns: i64,
    /// The sum of its tags' change times (wrapping), so that removing an older tag
    /// while adding one shows too.
    pub sum_ns: i64,
}

/// Every repository `(registry, name)` with its [`RepoPrint`], in one scan.
pub fn repository_prints(conn: &Connection) -> Result<Vec<((String, String), RepoPrint)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name, r.name, r.id, r.created_ns, COUNT(t.name),
                COALESCE(MAX(t.updated_ns), 0), COALESCE(SUM(t.updated_ns % 1000000007), 0)
         FROM repositories r JOIN registries g ON g.id = r.registry_id
         LEFT JOIN tags t ON t.repository_id = r.id GROUP BY r.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?),
            RepoPrint {
                id: r.get(2)?,
                created_ns: r.get(3)?,
                tags: r.get(4)?,
                newest_ns: r.get(5)?,
                sum_ns: r.get(6)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One row of a listing of tags: a tag, or an empty repository (`tag` None), or
/// an empty registry (`repository` None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingRow {
    /// Registry name.
    pub registry: String,
    /// Repository path.
    pub repository: Option<String>,
    /// Tag name and target.
    pub tag: Option<(String, Digest)>,
}

/// Registries (all, or only `registry`), their repositories (all, or only those at
/// or below repository path `path`) and tags, sorted, in one query that range-scans
/// the indexes.
pub fn listing(
    conn: &Connection,
    registry: Option<&str>,
    path: Option<&str>,
) -> Result<Vec<ListingRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name, r.name, t.name, t.manifest FROM registries g
         LEFT JOIN repositories r ON r.registry_id = g.id AND (?2 IS NULL OR r.name = ?2
               OR (r.name >= ?2 || '/' AND r.name < ?2 || '0'))
         LEFT JOIN tags t ON t.repository_id = r.id
         WHERE ?1 IS NULL OR g.name = ?1
         ORDER BY g.name, r.name, t.name",
    )?;
    let rows = stmt.query_map(params![registry, path], |r| {
        let tag = match (
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ) {
            (Some(name), Some(manifest)) => Some((name, parse_digest(manifest)?)),
            _ => None,
        };
        Ok(ListingRow {
            registry: r.get(0)?,
            repository: r.get(1)?,
            tag,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every distinct `(repository id, manifest)` a tag points at.
pub fn tag_targets(conn: &Connection) -> Result<Vec<(i64, Digest)>> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT repository_id, manifest FROM tags ORDER BY 1, 2")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, parse_digest(r.get(1)?)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every stored blob `top` reaches through counted edges (subjects left out), `top`
/// included, with its size.
pub fn reach(conn: &Connection, top: &Digest) -> Result<Vec<(Digest, u64)>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE reach(d) AS (
            SELECT ?1
            UNION SELECT e.child FROM refs e JOIN reach ON e.parent = reach.d
                  WHERE e.counted AND e.kind != 'subject')
         SELECT b.digest, b.size FROM reach JOIN blobs b ON b.digest = reach.d",
    )?;
    let rows = stmt.query_map([top.to_string()], |r| {
        Ok((parse_digest(r.get(0)?)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes an empty repository row (the caller removed its tags).
pub fn delete_repository(tx: &Transaction<'_>, repository_id: i64) -> Result<()> {
    tx.execute("DELETE FROM repositories WHERE id=?1", [repository_id])?;
    Ok(())
}

/// Deletes a registry row that has no repositories. Returns false if it had some.
pub fn delete_registry_if_empty(tx: &Transaction<'_>, registry: &str) -> Result<bool> {
    let Some(id) = registry_id(tx, registry)? else {
        return Ok(true);
    };
    let count: i64 = tx.query_row(
        "SELECT COUNT(*) FROM repositories WHERE registry_id=?1",
        [id],
        |r| r.get(0),
    )?;
    if count > 0 {
        return Ok(false);
    }
    tx.execute("DELETE FROM registries WHERE id=?1", [id])?;
    Ok(true)
}

// ---- tags ----

/// Tags of a repository, sorted by name.
pub fn tags(conn: &Connection, repository_id: i64) -> Result<Vec<TagRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, manifest, updated_ns FROM tags WHERE repository_id=?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([repository_id], |r| {
        Ok(TagRow {
            name: r.get(0)?,
            manifest: parse_digest(r.get(1)?)?,
            updated_ns: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The tags of up to `limit` repositories of `registry`, in name order from the
/// repository `from` on, each with its row: a walk of the tree asks for them in
/// this order, so one query serves the next `limit` directories instead of two
/// statements each.
pub fn repositories_tags_from(
    conn: &Connection,
    registry: &str,
    from: &str,
    limit: u32,
) -> Result<Vec<(RepoRow, Vec<TagRow>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.name, r.created_ns, t.name, t.manifest, t.updated_ns
         FROM (SELECT r.id, r.name, r.created_ns FROM repositories r
               JOIN registries g ON g.id = r.registry_id
               WHERE g.name = ?1 AND r.name >= ?2 ORDER BY r.name LIMIT ?3) r
         LEFT JOIN tags t ON t.repository_id = r.id
         ORDER BY r.name, t.name",
    )?;
    let mut rows = stmt.query(params![registry, from, limit])?;
    let mut out: Vec<(RepoRow, Vec<TagRow>)> = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if out.last().is_none_or(|(repo, _)| repo.id != id) {
            out.push((
                RepoRow {
                    id,
                    registry: registry.to_string(),
                    name: row.get(1)?,
                    created_ns: row.get(2)?,
                },
                Vec::new(),
            ));
        }
        if let Some(name) = row.get::<_, Option<String>>(3)? {
            let tag = TagRow {
                name,
                manifest: parse_digest(row.get(4)?)?,
                updated_ns: row.get(5)?,
            };
            if let Some((_, tags)) = out.last_mut() {
                tags.push(tag);
            }
        }
    }
    Ok(out)
}

/// One tag.
pub fn tag(conn: &Connection, repository_id: i64, name: &str) -> Result<Option<TagRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, manifest, updated_ns FROM tags WHERE repository_id=?1 AND name=?2",
        )?
        .query_row(params![repository_id, name], |r| {
            Ok(TagRow {
                name: r.get(0)?,
                manifest: parse_digest(r.get(1)?)?,
                updated_ns: r.get(2)?,
            })
        })
        .optional()?)
}

/// Points a tag at a manifest (which must be stored), counting the reference and
/// releasing the previous target. Returns the previous target, if any.
pub fn set_tag(
    tx: &Transaction<'_>,
    repository_id: i64,
    name: &str,
    manifest: &Digest,
    doomed: &mut Vec<Digest>,
) -> Result<Option<Digest>> {
    let previous = tag(tx, repository_id, name)?;
    tx.execute(
        "INSERT INTO tags(repository_id, name, manifest, updated_ns) VALUES(?1, ?2, ?3, ?4)
         ON CONFLICT(repository_id, name) DO UPDATE SET manifest=excluded.manifest,
         updated_ns=excluded.updated_ns",
        params![repository_id, name, manifest.to_string(), now_ns()],
    )?;
    add_ref(tx, manifest)?;
    if let Some(previous) = &previous {
        release(tx, &previous.manifest, doomed)?;
    }
    Ok(previous.map(|p| p.manifest))
}

/// Removes a tag, releasing its manifest. Returns its target if it existed.
pub fn remove_tag(
    tx: &Transaction<'_>,
    repository_id: i64,
    name: &str,
    doomed: &mut Vec<Digest>,
) -> Result<Option<Digest>> {
    let Some(previous) = tag(tx, repository_id, name)? else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM tags WHERE repository_id=?1 AND name=?2",
        params![repository_id, name],
    )?;
    release(tx, &previous.manifest, doomed)?;
    Ok(Some(previous.manifest))
}

/// Every manifest reachable from a repository's tags (through index edges).
pub fn repository_manifests(conn: &Connection, repository_id: i64) -> Result<Vec<Digest>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE reach(d) AS (
            SELECT manifest FROM tags WHERE repository_id=?1
            UNION SELECT e.child FROM refs e JOIN reach ON e.parent = reach.d
                  WHERE e.kind = 'manifest')
         SELECT d FROM reach ORDER BY d",
    )?;
    let rows = stmt.query_map([repository_id], |r| parse_digest(r.get(0)?))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---- blobs and edges ----

/// A blob's row.
pub fn blob(conn: &Connection, digest: &Digest) -> Result<Option<BlobInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT size, media_type, kind, refcount, diff_id, created_ns, state FROM blobs
         WHERE digest=?1",
    )?;
    let row = stmt
        .query_row([digest.to_string()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .optional()?;
    let Some((size, media_type, kind, refcount, diff_id, created_ns, state)) = row else {
        return Ok(None);
    };
    let diff_id = match diff_id {
        Some(text) => {
            Some(Digest::parse(&text).map_err(|e| MetaError::Corrupt(format!("diff_id: {e}")))?)
        }
        None => None,
    };
    Ok(Some(BlobInfo {
        digest: *digest,
        size: size as u64,
        media_type,
        kind: BlobKind::parse(&kind)?,
        refcount: refcount as u64,
        diff_id,
        created_ns,
        state: BlobState::parse(&state)?,
    }))
}

/// Outgoing edges of a manifest or index, by kind then position.
pub fn edges(conn: &Connection, parent: &Digest) -> Result<Vec<Edge>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, position, child, media_type, size, platform, annotations, counted
         FROM refs WHERE parent=?1 ORDER BY kind, position",
    )?;
    let rows = stmt.query_map([parent.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            parse_digest(r.get(2)?)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, position, child, media_type, size, platform, annotations, counted) = row?;
        let platform = match platform {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| MetaError::Corrupt(format!("platform of {parent}: {e}")))?,
            ),
            None => None,
        };
        out.push(Edge {
            kind: EdgeKind::parse(&kind)?,
            position: position as u32,
            child,
            media_type,
            size: size as u64,
            platform,
            annotations,
            counted,
        });
    }
    Ok(out)
}

/// Parents that name `child` (used by rmdir's EBUSY check and `inspect`).
pub fn parents(conn: &Connection, child: &Digest) -> Result<Vec<(Digest, EdgeKind)>> {
    let mut stmt = conn.prepare_cached("SELECT parent, kind FROM refs WHERE child=?1")?;
    let rows = stmt.query_map([child.to_string()], |r| {
        Ok((parse_digest(r.get(0)?)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (parent, kind) = row?;
        out.push((parent, EdgeKind::parse(&kind)?));
    }
    Ok(out)
}

fn add_ref(tx: &Transaction<'_>, digest: &Digest) -> Result<()> {
    let changed = tx.execute(
        "UPDATE blobs SET refcount = refcount + 1 WHERE digest=?1",
        [digest.to_string()],
    )?;
    if changed == 0 {
        return Err(MetaError::Corrupt(format!(
            "reference to {digest}, which is not stored"
        )));
    }
    Ok(())
}

/// Drops one reference to `digest`; at zero, deletes its row and edges and releases
/// its children, recursively. Every blob whose row went away is pushed to `doomed`
/// (its file is deleted after commit, unless leased).
pub fn release(tx: &Transaction<'_>, digest: &Digest, doomed: &mut Vec<Digest>) -> Result<()> {
    let mut work = vec![*digest];
    while let Some(current) = work.pop() {
        let key = current.to_string();
        let refcount: Option<i64> = tx
            .prepare_cached("SELECT refcount FROM blobs WHERE digest=?1")?
            .query_row([&key], |r| r.get(0))
            .optional()?;
        let Some(refcount) = refcount else {
            return Err(MetaError::Corrupt(format!(
                "release of {current}, which is not stored"
            )));
        };
        if refcount > 1 {
            tx.execute(
                "UPDATE blobs SET refcount = refcount - 1 WHERE digest=?1",
                [&key],
            )?;
            continue;
        }
        for edge in edges(tx, &current)? {
            if edge.counted {
                work.push(edge.child);
            }
        }
        tx.execute("DELETE FROM refs WHERE parent=?1", [&key])?;
        tx.execute("DELETE FROM blobs WHERE digest=?1", [&key])?;
        origins::forget(tx, &key)?;
        doomed.push(current);
    }
    Ok(())
}

/// Records `blobs` (parents before or after children, any order) that are not
/// already stored, with their edges, counting each new edge on its child. Blobs
/// already stored are left as they are (their edges exist). Newly recorded blobs
/// start at refcount 0 plus their incoming new edges: the caller must reference the
/// roots (with [`set_tag`]) in the same transaction, or they would be unreferenced.
pub fn insert_blobs(tx: &Transaction<'_>, blobs: &[NewBlob]) -> Result<Vec<Digest>> {
    let mut inserted = Vec::new();
    for blob in blobs {
        let exists: bool = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM blobs WHERE digest=?1)")?
            .query_row([blob.digest.to_string()], |r| r.get(0))?;
        if exists {
            // A bad layer stored again takes this import's diff_id (checked by
            // it, or by its deferred check), not the one it failed; mark_present
            // then makes it present.
            if let Some(diff_id) = blob.diff_id {
                tx.execute(
                    "UPDATE blobs SET diff_id=?2 WHERE digest=?1 AND state='bad'",
                    params![blob.digest.to_string(), diff_id.to_string()],
                )?;
            }
            continue;
        }
        tx.execute(
            "INSERT INTO blobs(digest, size, media_type, kind, refcount, diff_id, created_ns)
             VALUES(?1, ?2, ?3, ?4, 0, ?5, ?6)",
            params![
                blob.digest.to_string(),
                blob.size as i64,
                blob.media_type,
                blob.kind.as_str(),
                blob.diff_id.map(|d| d.to_string()),
                now_ns()
            ],
        )?;
        inserted.push(blob.digest);
    }
    let fresh: std::collections::HashSet<Digest> = inserted.iter().copied().collect();
    for blob in blobs.iter().filter(|b| fresh.contains(&b.digest)) {
        for edge in &blob.edges {
            let child_stored: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM blobs WHERE digest=?1)")?
                .query_row([edge.child.to_string()], |r| r.get(0))?;
            // Only subject edges may point outside the store.
            let counted = edge.kind != EdgeKind::Subject || child_stored;
            tx.execute(
                "INSERT OR REPLACE INTO refs(parent, kind, position, child, media_type, size,
                 platform, annotations, counted) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    blob.digest.to_string(),
                    edge.kind.as_str(),
                    edge.position,
                    edge.child.to_string(),
                    edge.media_type,
                    edge.size as i64,
                    edge.platform
                        .as_ref()
                        .map(|p| serde_json::to_string(p).unwrap_or_default()),
                    edge.annotations,
                    counted
                ],
            )?;
            if counted {
                add_ref(tx, &edge.child)?;
            }
        }
    }
    Ok(inserted)
}

/// Every stored blob, by digest, in one query.
pub fn all_blobs(conn: &Connection) -> Result<Vec<BlobInfo>> {
    let mut stmt = conn.prepare(
        "SELECT digest, size, media_type, kind, refcount, diff_id, created_ns, state
         FROM blobs ORDER BY digest",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            parse_digest(r.get(0)?)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (digest, size, media_type, kind, refcount, diff_id, created_ns, state) = row?;
        let diff_id = match diff_id {
            Some(text) => Some(
                Digest::parse(&text).map_err(|e| MetaError::Corrupt(format!("diff_id: {e}")))?,
            ),
            None => None,
        };
        out.push(BlobInfo {
            digest,
            size: size as u64,
            media_type,
            kind: BlobKind::parse(&kind)?,
            refcount: refcount as u64,
            diff_id,
            created_ns,
            state: BlobState::parse(&state)?,
        });
    }
    Ok(out)
}

/// Sets a blob's state (a lazy layer recorded, completed, or found bad).
pub fn set_blob_state(tx: &Transaction<'_>, digest: &Digest, state: BlobState) -> Result<()> {
    tx.execute(
        "UPDATE blobs SET state=?2 WHERE digest=?1",
        params![digest.to_string(), state.as_str()],
    )?;
    Ok(())
}

/// Marks blobs whose files an import has just written or found present
/// (a plain pull completing a lazy layer); returns those that were not present.
pub fn mark_present(tx: &Transaction<'_>, digests: &[Digest]) -> Result<Vec<Digest>> {
    let mut changed = Vec::new();
    let mut update =
        tx.prepare_cached("UPDATE blobs SET state='present' WHERE digest=?1 AND state!='present'")?;
    for digest in digests {
        if update.execute([digest.to_string()])? > 0 {
            changed.push(*digest);
        }
    }
    Ok(changed)
}

/// Blobs whose file is not in `blobs/` (lazy or bad layers).
pub fn absent_blobs(conn: &Connection) -> Result<Vec<(Digest, BlobState)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT digest, state FROM blobs WHERE state != 'present' ORDER BY digest",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((parse_digest(r.get(0)?)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (digest, state) = row?;
        out.push((digest, BlobState::parse(&state)?));
    }
    Ok(out)
}

/// The refcount each blob should have: tags plus counted edges from stored parents.
pub fn recount(conn: &Connection) -> Result<Vec<(Digest, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT b.digest,
            (SELECT COUNT(*) FROM tags t WHERE t.manifest = b.digest) +
            (SELECT COUNT(*) FROM refs e JOIN blobs p ON p.digest = e.parent
               WHERE e.child = b.digest AND e.counted)
         FROM blobs b ORDER BY b.digest",
    )?;
    let rows = stmt.query_map([], |r| Ok((parse_digest(r.get(0)?)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Edges and tags pointing at digests with no blob row (other than uncounted subjects).
pub fn dangling(conn: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT parent, child FROM refs WHERE counted AND child NOT IN (SELECT digest FROM blobs)",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (parent, child) = row?;
        out.push(format!("{parent} references {child}, which is not stored"));
    }
    let mut stmt = conn.prepare(
        "SELECT g.name, r.name, t.name, t.manifest FROM tags t
         JOIN repositories r ON r.id = t.repository_id JOIN registries g ON g.id = r.registry_id
         WHERE t.manifest NOT IN (SELECT digest FROM blobs)",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })? {
        let (registry, repository, tag, manifest) = row?;
        out.push(format!(
            "tag {registry}/{repository}:{tag} points at {manifest}, which is not stored"
        ));
    }
    Ok(out)
}

/// Sets a blob's refcount (fsck --repair).
pub fn set_refcount(tx: &Transaction<'_>, digest: &Digest, refcount: i64) -> Result<()> {
    tx.execute(
        "UPDATE blobs SET refcount=?2 WHERE digest=?1",
        params![digest.to_string(), refcount],
    )?;
    Ok(())
}

/// Deletes a blob row without touching references (fsck --repair of orphans).
pub fn delete_blob_row(tx: &Transaction<'_>, digest: &Digest) -> Result<()> {
    tx.execute("DELETE FROM refs WHERE parent=?1", [digest.to_string()])?;
    tx.execute("DELETE FROM blobs WHERE digest=?1", [digest.to_string()])?;
    origins::forget(tx, &digest.to_string())?;
    Ok(())
}

// ---- leases ----

/// Identity of a live process: pid and its start time (so a reused pid does not
/// keep a dead importer's lease alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this process still runs.
    pub fn is_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Records leases on `digests` for `owner`, returning their row ids.
pub fn add_leases(tx: &Transaction<'_>, digests: &[Digest], owner: Owner) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(digests.len());
    let now = now_ns();
    for digest in digests {
        tx.execute(
            "INSERT INTO leases(digest, pid, start_time, created_ns) VALUES(?1, ?2, ?3, ?4)",
            params![digest.to_string(), owner.pid, owner.start_time as i64, now],
        )?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

/// Drops leases by id.
pub fn drop_leases(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    for id in ids {
        tx.execute("DELETE FROM leases WHERE id=?1", [id])?;
    }
    Ok(())
}

/// Whether a lease row is alive: a grace lease until its expiry, any other while
/// its process runs.
fn lease_alive(owner: Owner, expires_ns: Option<i64>, now: i64) -> bool {
    match expires_ns {
        Some(expires) => expires > now,
        None => owner.is_alive(),
    }
}

/// Whether a live lease protects `digest`.
pub fn is_leased(conn: &Connection, digest: &Digest) -> Result<bool> {
    let mut stmt =
        conn.prepare_cached("SELECT pid, start_time, expires_ns FROM leases WHERE digest=?1")?;
    let leases = stmt.query_map([digest.to_string()], |r| {
        Ok((
            Owner {
                pid: r.get(0)?,
                start_time: r.get::<_, i64>(1)? as u64,
            },
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let now = now_ns();
    for lease in leases {
        let (owner, expires_ns) = lease?;
        if lease_alive(owner, expires_ns, now) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes leases whose process is gone or whose grace period is over; returns how
/// many.
pub fn expire_leases(tx: &Transaction<'_>) -> Result<usize> {
    let mut stmt = tx.prepare("SELECT id, pid, start_time, expires_ns FROM leases")?;
    let rows: Vec<(i64, Owner, Option<i64>)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                Owner {
                    pid: r.get(1)?,
                    start_time: r.get::<_, i64>(2)? as u64,
                },
                r.get(3)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    let now = now_ns();
    let dead: Vec<i64> = rows
        .into_iter()
        .filter(|(_, owner, expires_ns)| !lease_alive(*owner, *expires_ns, now))
        .map(|(id, _, _)| id)
        .collect();
    drop_leases(tx, &dead)?;
    Ok(dead.len())
}

/// Records a grace lease on `digest` for layout `holder` (`registry/repository`),
/// alive until `expires_ns` whatever happens to `owner`, which took it.
pub fn add_grace_lease(
    tx: &Transaction<'_>,
    digest: &Digest,
    holder: &str,
    owner: Owner,
    expires_ns: i64,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO leases(digest, pid, start_time, created_ns, expires_ns, holder)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            digest.to_string(),
            owner.pid,
            owner.start_time as i64,
            now_ns(),
            expires_ns,
            holder
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Digests with a live grace lease of layout `holder`, sorted.
pub fn grace_leased(conn: &Connection, holder: &str) -> Result<Vec<Digest>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT digest FROM leases WHERE holder=?1 AND expires_ns > ?2 ORDER BY digest",
    )?;
    let rows = stmt.query_map(params![holder, now_ns()], |r| parse_digest(r.get(0)?))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Drops the grace leases on `digest` (of every layout); returns how many.
pub fn drop_grace_leases(tx: &Transaction<'_>, digest: &Digest) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM leases WHERE digest=?1 AND expires_ns IS NOT NULL",
        [digest.to_string()],
    )?)
}

/// Every blob reachable from a repository's tags (manifests, indexes, configs,
/// layers; not `subject` targets), sorted.
pub fn repository_reach(conn: &Connection, repository_id: i64) -> Result<Vec<Digest>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE reach(d) AS (
            SELECT manifest FROM tags WHERE repository_id=?1
            UNION SELECT e.child FROM refs e JOIN reach ON e.parent = reach.d
                  WHERE e.counted AND e.kind != 'subject')
         SELECT d FROM reach ORDER BY d",
    )?;
    let rows = stmt.query_map([repository_id], |r| parse_digest(r.get(0)?))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Bytes referenced per repository: `(registry, repository, blob digest, size)` for
/// every blob reachable from the repository's tags (for `df`).
pub fn repository_blobs(conn: &Connection) -> Result<Vec<(String, String, Digest, u64)>> {
    let mut stmt = conn.prepare(
        "WITH RECURSIVE reach(repo, d) AS (
            SELECT repository_id, manifest FROM tags
            UNION SELECT reach.repo, e.child FROM refs e JOIN reach ON e.parent = reach.d
                  WHERE e.counted AND e.kind != 'subject')
         SELECT g.name, r.name, b.digest, b.size FROM reach
         JOIN blobs b ON b.digest = reach.d
         JOIN repositories r ON r.id = reach.repo JOIN registries g ON g.id = r.registry_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            parse_digest(r.get(2)?)?,
            r.get::<_, i64>(3)? as u64,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `PRAGMA data_version`: changes whenever another connection commits.
pub fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?)
}
