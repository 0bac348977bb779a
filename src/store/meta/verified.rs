//! The persisted half of the verified-file memo (`super::super::verify`):
//! `STORE/verified.db`, a database of its own (derived data: deleting it only
//! costs hashing again), so that mounts and imports recording what they hashed
//! never wait on the metadata database's write lock.
//!
//! One row per file `(dev, ino)`: the size, mtime and ctime it had when imagefs
//! wrote it or last hashed it right, and the sha256 it had then.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::Result;

/// What a file looked like when it hashed right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
    /// The sha256 its bytes had.
    pub digest: [u8; 32],
}

/// Opens (creating if needed) the memo database at `path`.
pub fn open_memo(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    // A lost row only means hashing again; WAL with NORMAL cannot corrupt.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS verified(
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            size INTEGER NOT NULL,
            mtime_s INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_s INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            digest BLOB NOT NULL,
            PRIMARY KEY(dev, ino)
         ) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

/// The stamp recorded for file `(dev, ino)`, if any.
pub fn recorded(conn: &Connection, dev: u64, ino: u64) -> Result<Option<FileStamp>> {
    let mut stmt = conn.prepare_cached(
        "SELECT size, mtime_s, mtime_ns, ctime_s, ctime_ns, digest FROM verified
         WHERE dev=?1 AND ino=?2",
    )?;
    let row = stmt
        .query_row(params![dev as i64, ino as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                (r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?),
                r.get::<_, Vec<u8>>(5)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(size, mtime, ctime, digest)| {
        Some(FileStamp {
            size: size as u64,
            mtime,
            ctime,
            digest: digest.try_into().ok()?,
        })
    }))
}

/// Records `stamp` for file `(dev, ino)`, replacing what was there.
pub fn record(conn: &Connection, dev: u64, ino: u64, stamp: &FileStamp) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO verified(dev, ino, size, mtime_s, mtime_ns, ctime_s, ctime_ns,
            digest) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![
        dev as i64,
        ino as i64,
        stamp.size as i64,
        stamp.mtime.0,
        stamp.mtime.1,
        stamp.ctime.0,
        stamp.ctime.1,
        &stamp.digest[..],
    ])?;
    Ok(())
}
