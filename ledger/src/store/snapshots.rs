//! The `snapshots` table: the newest snapshot of the open work (older ones are deleted when a
//! newer one is written, in the same transaction).

use rusqlite::{params, Connection, OptionalExtension};

use super::{from_sql_int, to_sql_int};
use crate::error::LedgerError;
use crate::snapshot::Snapshot;

/// The newest stored snapshot. A row whose columns do not even have the right types is returned
/// as corrupt bytes, so the caller rejects it like any other bad snapshot.
pub(crate) fn newest(conn: &Connection) -> Result<Option<Snapshot>, LedgerError> {
    type Raw = (i64, Vec<u8>, i64, Vec<u8>, Vec<u8>);
    let row: Option<Raw> = conn
        .query_row(
            "SELECT seq, hash, format, digest, body FROM snapshots ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((seq, hash, format, digest, body)) = row else {
        return Ok(None);
    };
    let bytes = |v: Vec<u8>| <[u8; 32]>::try_from(v.as_slice()).unwrap_or([0u8; 32]);
    Ok(Some(Snapshot {
        seq: from_sql_int(seq, "snapshot seq")?,
        hash: bytes(hash),
        format: u32::try_from(format).unwrap_or(u32::MAX),
        digest: bytes(digest),
        body,
    }))
}

/// Store `s` as the newest snapshot and delete the older ones, in one transaction.
pub(crate) fn write(conn: &mut Connection, s: &Snapshot) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    let seq = to_sql_int(s.seq, "seq")?;
    tx.execute(
        "INSERT OR REPLACE INTO snapshots(seq, hash, format, digest, body) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![seq, &s.hash[..], s.format, &s.digest[..], &s.body],
    )?;
    tx.execute("DELETE FROM snapshots WHERE seq < ?1", [seq])?;
    tx.commit()?;
    Ok(())
}
