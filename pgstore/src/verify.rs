//! `verify` and `export` over the stored rows.
//!
//! `verify` copies the rows, unchanged, into a scratch SQLite database with the SQLite store's
//! schema and runs the ledger's one verifier on it: hash chain, every event against the state
//! machine, postings, references, projections, head and invariants are checked by the same code
//! whatever the store. The copy is a temporary file (O(history) disk, not memory) removed after,
//! written without a journal and with its secondary indexes built after the rows are in.

use std::io::Write;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};

use paydvm_ledger::store::{key_digest, verify_connection, Store, VerifyFailure, VerifyReport};
use paydvm_ledger::{Durability, LedgerError, StoreOptions};
use rusqlite::params;

use crate::client::{get, get_u64, int, Db, PgError};
use crate::read::{self, SELECT_EVENT};
use tokio_postgres::Row;

/// Rows copied per query.
const CHUNK: i64 = 10_000;

pub fn verify(db: &Db) -> Result<VerifyReport, VerifyFailure> {
    let dir = tempfile::tempdir().map_err(LedgerError::from)?;
    let scratch = Store::open_with(
        dir.path().join("verify.db"),
        &StoreOptions::everything(Durability::Normal),
    )?;
    let conn = scratch.connection();
    // A scratch file, removed after: no journal, no fsync, and the secondary indexes built once
    // over the copied rows instead of kept up to date row by row (random-key inserts).
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")?;
    let indexes = secondary_indexes(conn)?;
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX \"{name}\""))?;
    }
    conn.execute_batch("BEGIN")?;
    copy(db, conn).map_err(LedgerError::from)?;
    for (_, create) in &indexes {
        conn.execute_batch(create)?;
    }
    conn.execute_batch("COMMIT")?;
    verify_connection(conn)
}

/// The schema's own indexes (name, `CREATE INDEX` statement); not the ones behind `PRIMARY
/// KEY` and `UNIQUE`, which SQLite makes itself (their `sql` is NULL).
fn secondary_indexes(conn: &rusqlite::Connection) -> Result<Vec<(String, String)>, LedgerError> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The log a chunk of `CHUNK` events at a time: the events, then the postings and references of
/// the same seqs (read by their primary key's range, in key order), every insert a cached
/// statement. A thread reads the next chunk from the server while this one writes the last into
/// the scratch file; each chunk goes back to the reader to be freed where it was allocated.
fn copy(db: &Db, conn: &rusqlite::Connection) -> Result<(), PgError> {
    let (chunks, read) = sync_channel::<Result<LogChunk, PgError>>(2);
    let (written, to_free) = channel::<LogChunk>();
    std::thread::scope(|scope| {
        scope.spawn(move || read_log(db, chunks, to_free));
        for chunk in read {
            let chunk = chunk?;
            write_chunk(conn, &chunk)?;
            let _ = written.send(chunk);
        }
        Ok::<(), PgError>(())
    })?;
    let mut ins = conn
        .prepare_cached("INSERT INTO payments VALUES (?1, ?2)")
        .map_err(sqlite)?;
    for r in db.query("SELECT reference, seq FROM payments", vec![])? {
        ins.execute(params![get::<String>(&r, 0)?, get::<i64>(&r, 1)?])
            .map_err(sqlite)?;
    }
    copy_records(db, conn)
}

/// The rows of the events `after < seq <= upto`, as the server sent them.
struct LogChunk {
    events: Vec<Row>,
    postings: Vec<Row>,
    refs: Vec<Row>,
}

/// Reads the log chunk by chunk until it ends, the writer stops, or a read fails (sent on).
fn read_log(db: &Db, out: SyncSender<Result<LogChunk, PgError>>, written: Receiver<LogChunk>) {
    let mut after = 0i64;
    loop {
        written.try_iter().for_each(drop);
        let chunk = read_chunk(db, after);
        let upto = match &chunk {
            Ok(Some((upto, _))) => *upto,
            Ok(None) => return,
            Err(_) => 0,
        };
        let failed = chunk.is_err();
        if out.send(chunk.map(|c| c.expect("a chunk").1)).is_err() || failed {
            return;
        }
        after = upto;
    }
}

/// The chunk after seq `after` and its last seq; `None` past the end.
fn read_chunk(db: &Db, after: i64) -> Result<Option<(i64, LogChunk)>, PgError> {
    let events = db.query(
        "SELECT seq, idem_key, at, job, body, prev_hash, hash, type FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
        vec![Box::new(after), Box::new(CHUNK)],
    )?;
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let upto: i64 = get(last, 0)?;
    let postings = db.query(
        "SELECT seq, n, debit, credit, amount FROM postings WHERE seq > $1 AND seq <= $2 \
         ORDER BY seq, n",
        vec![Box::new(after), Box::new(upto)],
    )?;
    let refs = db.query(
        "SELECT seq, reference, job FROM refs WHERE seq > $1 AND seq <= $2 ORDER BY seq, reference",
        vec![Box::new(after), Box::new(upto)],
    )?;
    Ok(Some((
        upto,
        LogChunk {
            events,
            postings,
            refs,
        },
    )))
}

fn sqlite(e: rusqlite::Error) -> PgError {
    PgError::Ledger(e.into())
}

/// One chunk's events, postings and references into the scratch file.
fn write_chunk(conn: &rusqlite::Connection, chunk: &LogChunk) -> Result<(), PgError> {
    let mut ins = conn
        .prepare_cached(
            "INSERT INTO events(seq, idem_key, at, job, body, prev_hash, hash, type, key_digest, \
             job_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(sqlite)?;
    for r in &chunk.events {
        let key = get::<String>(r, 1)?;
        let job = get::<Option<String>>(r, 3)?;
        ins.execute(params![
            get::<i64>(r, 0)?,
            key,
            get::<i64>(r, 2)?,
            job,
            get::<String>(r, 4)?,
            get::<Vec<u8>>(r, 5)?,
            get::<Vec<u8>>(r, 6)?,
            get::<String>(r, 7)?,
            key_digest(&key),
            job.as_deref().map(key_digest),
        ])
        .map_err(sqlite)?;
    }
    let mut ins = conn
        .prepare_cached("INSERT INTO postings VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sqlite)?;
    for r in &chunk.postings {
        ins.execute(params![
            get::<i64>(r, 0)?,
            get::<i32>(r, 1)?,
            get::<String>(r, 2)?,
            get::<String>(r, 3)?,
            get::<i64>(r, 4)?
        ])
        .map_err(sqlite)?;
    }
    let mut ins = conn
        .prepare_cached("INSERT INTO refs(seq, reference, job, ref_digest) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sqlite)?;
    for r in &chunk.refs {
        let reference = get::<String>(r, 1)?;
        ins.execute(params![
            get::<i64>(r, 0)?,
            reference,
            get::<Option<String>>(r, 2)?,
            key_digest(&reference),
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
