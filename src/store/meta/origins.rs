//! Where blobs came from: the registry repositories a blob was pulled from (or
//! pushed to), so that `push` can mount a blob across repositories of one
//! registry instead of uploading it, and a lazy layer knows where to fetch from.
//! A row lives as long as its blob's row (deleted with it).

use rusqlite::{params, Connection, Transaction};

use super::{now_ns, Result};
use crate::digest::Digest;

/// One place a blob is known to be available.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// Registry host as users write it (`localhost:5000`, `docker.io`).
    pub registry: String,
    /// Repository path inside that registry (`team/app`).
    pub repository: String,
}

/// Records that `digest` is available from each of `origins` (idempotent; the
/// blob's row must exist in the same transaction or already).
pub fn add_origins(tx: &Transaction<'_>, digest: &Digest, origins: &[Origin]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO origins(digest, registry, repository, seen_ns) VALUES(?1, ?2, ?3, ?4)
         ON CONFLICT(digest, registry, repository) DO UPDATE SET seen_ns=excluded.seen_ns",
    )?;
    let now = now_ns();
    for origin in origins {
        insert.execute(params![
            digest.to_string(),
            origin.registry,
            origin.repository,
            now
        ])?;
    }
    Ok(())
}

/// Every known origin of `digest`, most recently seen first.
pub fn origins(conn: &Connection, digest: &Digest) -> Result<Vec<Origin>> {
    let mut select = conn.prepare_cached(
        "SELECT registry, repository FROM origins WHERE digest=?1
         ORDER BY seen_ns DESC, registry, repository",
    )?;
    let rows = select.query_map([digest.to_string()], |r| {
        Ok(Origin {
            registry: r.get(0)?,
            repository: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Forgets every origin of `digest` (its blob row is going away).
pub(super) fn forget(tx: &Transaction<'_>, digest_key: &str) -> Result<()> {
    tx.execute("DELETE FROM origins WHERE digest=?1", [digest_key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::meta::{self, BlobKind, NewBlob};

    #[test]
    fn origins_are_recorded_once_and_go_with_the_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = meta::open(&dir.path().join("imagefs.db")).expect("open");
        let digest = Digest::of(b"layer bytes");
        let here = Origin {
            registry: "localhost:5000".into(),
            repository: "team/app".into(),
        };
        let there = Origin {
            registry: "localhost:5000".into(),
            repository: "team/base".into(),
        };
        let tx = meta::write_tx(&mut conn).expect("tx");
        meta::insert_blobs(
            &tx,
            &[NewBlob {
                digest,
                size: 11,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                kind: BlobKind::Layer,
                diff_id: None,
                edges: Vec::new(),
            }],
        )
        .expect("insert");
        add_origins(&tx, &digest, &[here.clone(), there.clone(), here.clone()]).expect("add");
        tx.commit().expect("commit");
        let mut found = origins(&conn, &digest).expect("origins");
        found.sort();
        assert_eq!(found, vec![here, there]);

        let tx = meta::write_tx(&mut conn).expect("tx");
        meta::delete_blob_row(&tx, &digest).expect("delete");
        tx.commit().expect("commit");
        assert!(origins(&conn, &digest).expect("origins").is_empty());
    }
}
