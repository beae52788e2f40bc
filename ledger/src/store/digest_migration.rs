//! Schema 4's copies: the log and its references into tables that carry the digests they are
//! searched by (`digest.rs`), every stored column as it was, then the swap and the new indexes,
//! built once after the rows. Runs inside the migration's transaction.

use rusqlite::types::Value;
use rusqlite::{params, Transaction};

use super::digest::key_digest;
use crate::error::LedgerError;

pub(super) fn copy_with_digests(tx: &Transaction<'_>) -> Result<(), LedgerError> {
    copy_events(tx)?;
    copy_refs(tx)?;
    tx.execute_batch(
        "DROP TABLE events;
         ALTER TABLE events_v4 RENAME TO events;
         CREATE INDEX events_by_key ON events(key_digest);
         CREATE INDEX events_by_job ON events(job_digest, seq) WHERE job_digest IS NOT NULL;
         DROP TABLE refs;
         ALTER TABLE refs_v4 RENAME TO refs;
         CREATE INDEX refs_by_reference ON refs(ref_digest);",
    )?;
    Ok(())
}

fn copy_events(tx: &Transaction<'_>) -> Result<(), LedgerError> {
    let mut read = tx.prepare(
        "SELECT seq, idem_key, at, type, job, body, prev_hash, hash FROM events ORDER BY seq",
    )?;
    let mut write = tx.prepare(
        "INSERT INTO events_v4(seq, idem_key, at, type, job, body, prev_hash, hash, key_digest, \
         job_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(1)?;
        let job: Option<String> = r.get(4)?;
        let stored = |i| r.get::<_, Value>(i);
        write.execute(params![
            stored(0)?,
            key,
            stored(2)?,
            stored(3)?,
            job,
            stored(5)?,
            stored(6)?,
            stored(7)?,
            key_digest(&key),
            job.as_deref().map(key_digest),
        ])?;
    }
    Ok(())
}

fn copy_refs(tx: &Transaction<'_>) -> Result<(), LedgerError> {
    let mut read = tx.prepare("SELECT seq, reference, job FROM refs ORDER BY seq, reference")?;
    let mut write =
        tx.prepare("INSERT INTO refs_v4(seq, reference, job, ref_digest) VALUES (?1, ?2, ?3, ?4)")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let reference: String = r.get(1)?;
        write.execute(params![
            r.get::<_, Value>(0)?,
            reference,
            r.get::<_, Value>(2)?,
            key_digest(&reference),
        ])?;
    }
    Ok(())
}
