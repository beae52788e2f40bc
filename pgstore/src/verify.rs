//! `verify` and `export` over the stored rows.
//!
//! `verify` copies the rows, unchanged, into a scratch SQLite database with the SQLite store's
//! schema and runs the ledger's one verifier on it: hash chain, every event against the state
//! machine, postings, references, projections, head and invariants are checked by the same code
//! whatever the store. The copy is a temporary file (O(history) disk, not memory) removed after.

use std::io::Write;

use paydvm_ledger::store::{verify_connection, Store, VerifyFailure, VerifyReport};
use paydvm_ledger::{Durability, LedgerError, StoreOptions};
use rusqlite::params;

use crate::client::{get, get_u64, int, Db, PgError};
use crate::read::{self, SELECT_EVENT};

/// Rows copied per query.
const CHUNK: i64 = 10_000;

pub fn verify(db: &Db) -> Result<VerifyReport, VerifyFailure> {
    let dir = tempfile::tempdir().map_err(LedgerError::from)?;
    let scratch = Store::open_with(
        dir.path().join("verify.db"),
        &StoreOptions::everything(Durability::Normal),
    )?;
    let conn = scratch.connection();
    conn.execute_batch("BEGIN")?;
    copy(db, conn).map_err(LedgerError::from)?;
    conn.execute_batch("COMMIT")?;
    verify_connection(conn)
}

/// The log a chunk of `CHUNK` events at a time: the events, then the postings and references of
/// the same seqs (read by their primary key's range, in key order), every insert a cached
/// statement.
fn copy(db: &Db, conn: &rusqlite::Connection) -> Result<(), PgError> {
    let mut after = 0i64;
    loop {
        let rows = db.query(
            "SELECT seq, idem_key, at, job, body, prev_hash, hash, type FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![Box::new(after), Box::new(CHUNK)],
        )?;
        let Some(last) = rows.last() else { break };
        let upto: i64 = get(last, 0)?;
        let mut ins = conn
            .prepare_cached("INSERT INTO events VALUES (?1, ?2, ?3, ?8, ?4, ?5, ?6, ?7)")
            .map_err(sqlite)?;
        for r in &rows {
            ins.execute(params![
                get::<i64>(r, 0)?,
                get::<String>(r, 1)?,
                get::<i64>(r, 2)?,
                get::<Option<String>>(r, 3)?,
                get::<String>(r, 4)?,
                get::<Vec<u8>>(r, 5)?,
                get::<Vec<u8>>(r, 6)?,
                get::<String>(r, 7)?,
            ])
            .map_err(sqlite)?;
        }
        copy_range(db, conn, after, upto)?;
        after = upto;
    }
    let mut ins = conn
        .prepare_cached("INSERT INTO payments VALUES (?1, ?2)")
        .map_err(sqlite)?;
    for r in db.query("SELECT reference, seq FROM payments", vec![])? {
        ins.execute(params![get::<String>(&r, 0)?, get::<i64>(&r, 1)?])
            .map_err(sqlite)?;
    }
    copy_records(db, conn)
}

fn sqlite(e: rusqlite::Error) -> PgError {
    PgError::Ledger(e.into())
}

/// The postings and references of the events `after < seq <= upto`.
fn copy_range(db: &Db, conn: &rusqlite::Connection, after: i64, upto: i64) -> Result<(), PgError> {
    let mut ins = conn
        .prepare_cached("INSERT INTO postings VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sqlite)?;
    for r in db.query(
        "SELECT seq, n, debit, credit, amount FROM postings WHERE seq > $1 AND seq <= $2 \
         ORDER BY seq, n",
        vec![Box::new(after), Box::new(upto)],
    )? {
        ins.execute(params![
            get::<i64>(&r, 0)?,
            get::<i32>(&r, 1)?,
            get::<String>(&r, 2)?,
            get::<String>(&r, 3)?,
            get::<i64>(&r, 4)?
        ])
        .map_err(sqlite)?;
    }
    let mut ins = conn
        .prepare_cached("INSERT INTO refs VALUES (?1, ?2, ?3)")
        .map_err(sqlite)?;
    for r in db.query(
        "SELECT seq, reference, job FROM refs WHERE seq > $1 AND seq <= $2 ORDER BY seq, reference",
        vec![Box::new(after), Box::new(upto)],
    )? {
        ins.execute(params![
            get::<i64>(&r, 0)?,
            get::<String>(&r, 1)?,
            get::<Option<String>>(&r, 2)?
        ])
        .map_err(sqlite)?;
    }
    Ok(())
}

/// The projection tables and the meta rows verify reads.
fn copy_records(db: &Db, conn: &rusqlite::Connection) -> Result<(), PgError> {
    let tables: [(&str, &str, &str); 4] = [
        (
            "SELECT job, state, record, changed FROM jobs",
            "INSERT INTO jobs(job, state, record, changed) VALUES (?1, ?2, ?3, ?4)",
            "jobs",
        ),
        (
            "SELECT refund, state, record, changed, job FROM refunds",
            "INSERT INTO refunds(refund, state, record, changed, job) VALUES (?1, ?2, ?3, ?4, ?5)",
            "refunds",
        ),
        (
            "SELECT subscription, record FROM subscriptions",
            "INSERT INTO subscriptions(subscription, record) VALUES (?1, ?2)",
            "subscriptions",
        ),
        (
            "SELECT effect, done, record FROM effects",
            "INSERT INTO effects(effect, done, record) VALUES (?1, ?2, ?3)",
            "effects",
        ),
    ];
    for (select, insert, table) in tables {
        let mut ins = conn.prepare_cached(insert).map_err(sqlite)?;
        for r in db.query(select, vec![])? {
            let result = match table {
                "jobs" => ins.execute(params![
                    get::<String>(&r, 0)?,
                    get::<String>(&r, 1)?,
                    get::<String>(&r, 2)?,
                    get::<Option<i64>>(&r, 3)?
                ]),
                "refunds" => ins.execute(params![
                    get::<String>(&r, 0)?,
                    get::<String>(&r, 1)?,
                    get::<String>(&r, 2)?,
                    get::<Option<i64>>(&r, 3)?,
                    get::<Option<String>>(&r, 4)?
                ]),
                "subscriptions" => {
                    ins.execute(params![get::<String>(&r, 0)?, get::<String>(&r, 1)?])
                }
                _ => ins.execute(params![
                    get::<String>(&r, 0)?,
                    get::<bool>(&r, 1)?,
                    get::<String>(&r, 2)?
                ]),
            };
            result.map_err(sqlite)?;
        }
    }
    let mut ins = conn
        .prepare_cached("INSERT INTO balances VALUES (?1, ?2, ?3)")
        .map_err(sqlite)?;
    for r in db.query("SELECT account, debits, credits FROM balances", vec![])? {
        ins.execute(params![
            get::<String>(&r, 0)?,
            get::<i64>(&r, 1)?,
            get::<i64>(&r, 2)?
        ])
        .map_err(sqlite)?;
    }
    for r in db.query(
        "SELECT key, value FROM meta WHERE key IN ('head', 'changed_since')",
        vec![],
    )? {
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            params![get::<String>(&r, 0)?, get::<String>(&r, 1)?],
        )
        .map_err(sqlite)?;
    }
    Ok(())
}

/// JSON lines, one event per line, bodies exactly as stored (the SQLite store's format).
pub fn export(db: &Db, out: &mut dyn Write) -> Result<u64, PgError> {
    let mut n = 0u64;
    loop {
        let events = db.query(
            format!("{SELECT_EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2"),
            vec![Box::new(int(n, "seq")?), Box::new(CHUNK)],
        )?;
        if events.is_empty() {
            break;
        }
        for r in &events {
            let seq = get_u64(r, 0, "seq")?;
            let body: String = get(r, 4)?;
            writeln!(
                out,
                "{{\"seq\":{seq},\"at\":{},\"key\":{},\"job\":{},\"prev_hash\":\"{}\",\"hash\":\"{}\",\"body\":{body}}}",
                get_u64(r, 2, "at")?,
                serde_json::to_string(&get::<String>(r, 1)?)?,
                serde_json::to_string(&get::<Option<String>>(r, 3)?)?,
                hex::encode(get::<Vec<u8>>(r, 5)?),
                hex::encode(get::<Vec<u8>>(r, 6)?),
            )
            .map_err(LedgerError::from)?;
            n = seq;
        }
    }
    out.flush().map_err(LedgerError::from)?;
    let _ = read::SELECT_EVENT;
    Ok(n)
}
