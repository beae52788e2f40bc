//! The SQLite event store: the append-only, hash-chained log plus its projections, written in one
//! transaction per group (or per batch of groups, for group commit).

mod audit;
mod chain;
mod export;
mod projections;
mod refs;
mod schema;
mod verify;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

pub use audit::{AuditEvent, AuditTrail};
pub use chain::Hash;
pub use schema::SCHEMA_VERSION;
pub use verify::{verify_connection, verify_file, VerifyFailure, VerifyReport};

use crate::engine::{AppendOutcome, Ledger, Prepared};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::state::LedgerState;

/// How hard each commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Full,
    /// WAL without fsync per commit: survives a process crash, not a power cut.
    Normal,
}

/// A stored event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: LedgerEvent,
    pub job: Option<String>,
    pub prev_hash: Hash,
    pub hash: Hash,
}

/// The durable ledger. Holds the live state in memory; every append writes the events and the
/// projection rows they change in one SQLite transaction.
pub struct Store {
    conn: Connection,
    ledger: Ledger,
    /// Hash of the last event written to disk.
    head: Hash,
    /// Groups applied in memory but not yet written: see [`Store::stage`].
    staged: Vec<(Prepared, Vec<LedgerEvent>)>,
}

pub(crate) fn to_sql_int(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} exceeds storage range")))
}

pub(crate) fn from_sql_int(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} is negative")))
}

impl Store {
    /// Open (creating if needed) a ledger file, migrate it and replay it into memory.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Store, LedgerError> {
        let conn = Connection::open(path)?;
        Store::from_connection(conn, durability)
    }

    pub fn open_in_memory() -> Result<Store, LedgerError> {
        Store::from_connection(Connection::open_in_memory()?, Durability::Normal)
    }

    /// Open an existing ledger file for reading: never creates, migrates or converts a file.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, LedgerError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(LedgerError::NotFound(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version = schema::schema_version(&conn)?;
        if version != SCHEMA_VERSION {
            return Err(LedgerError::NotALedger(path.display().to_string(), version));
        }
        tune(&conn)?;
        let (ledger, head) = replay(&conn)?;
        Ok(Store {
            conn,
            ledger,
            head,
            staged: Vec::new(),
        })
    }

    fn from_connection(mut conn: Connection, durability: Durability) -> Result<Store, LedgerError> {
        tune(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        let (ledger, head) = replay(&conn)?;
        refresh_derived_rows(&mut conn, ledger.state())?;
        Ok(Store {
            conn,
            ledger,
            head,
            staged: Vec::new(),
        })
    }

    pub fn state(&self) -> &LedgerState {
        self.ledger.state()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The last event written to disk: its seq and hash (staged groups are not counted).
    pub fn head(&self) -> (u64, Hash) {
        let staged: usize = self.staged.iter().map(|(p, _)| p.appended.len()).sum();
        (self.ledger.next_seq() - 1 - staged as u64, self.head)
    }

    /// Applies a group in memory now, so that later decisions see it, and writes it with the
    /// next [`Store::flush`] (or append), in one transaction with every other staged group: group
    /// commit for a caller that decides one group at a time. A refused group changes nothing.
    ///
    /// Nothing staged is durable until `flush` returns `Ok`, so the caller holds back every side
    /// effect of a staged group until then. Dropping the store drops what is staged.
    pub fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        let prepared = self.ledger.prepare(events)?;
        let outcomes = prepared.outcomes.clone();
        if !prepared.appended.is_empty() {
            self.staged.push((prepared, events.to_vec()));
        }
        Ok(outcomes)
    }

    /// Groups staged and not yet written.
    pub fn staged_groups(&self) -> usize {
        self.staged.len()
    }

    /// Writes every staged group in one transaction. On failure all of them are undone in
    /// memory, as if never staged, and the error is returned.
    pub fn flush(&mut self) -> Result<usize, LedgerError> {
        let count = self.staged.len();
        if count > 0 {
            self.write_with_staged(Vec::new())?;
        }
        Ok(count)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Append one event in its own transaction.
    pub fn append(&mut self, event: &LedgerEvent) -> Result<AppendOutcome, LedgerError> {
        Ok(self.append_group(std::slice::from_ref(event))?[0])
    }

    /// Append a group of events atomically: all are stored, or none is.
    pub fn append_group(
        &mut self,
        events: &[LedgerEvent],
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        let mut results = self.append_batch(&[events])?;
        results.pop().expect("one group in, one result out")
    }

    /// Group commit: each group is atomic on its own (a refused group changes nothing), and all
    /// accepted groups are written in one transaction.
    #[allow(clippy::type_complexity)]
    pub fn append_batch(
        &mut self,
        groups: &[&[LedgerEvent]],
    ) -> Result<Vec<Result<Vec<AppendOutcome>, LedgerError>>, LedgerError> {
        let mut results = Vec::with_capacity(groups.len());
        let mut prepared: Vec<(Prepared, &[LedgerEvent])> = Vec::new();
        for &events in groups {
            match self.ledger.prepare(events) {
                Ok(p) => {
                    results.push(Ok(p.outcomes.clone()));
                    prepared.push((p, events));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.iter().all(|(p, _)| p.appended.is_empty()) && self.staged.is_empty() {
            return Ok(results);
        }
        self.write_with_staged(prepared)?;
        Ok(results)
    }

    /// Writes the staged groups, then `fresh` (prepared after them, so their seqs follow), in one
    /// transaction; on failure undoes all of them in memory, newest first.
    fn write_with_staged(
        &mut self,
        fresh: Vec<(Prepared, &[LedgerEvent])>,
    ) -> Result<(), LedgerError> {
        let staged = std::mem::take(&mut self.staged);
        let written = {
            let all: Vec<(&Prepared, &[LedgerEvent])> = staged
                .iter()
                .map(|(p, events)| (p, events.as_slice()))
                .chain(fresh.iter().map(|(p, events)| (p, *events)))
                .collect();
            self.write(&all)
        };
        match written {
            Ok(head) => {
                self.head = head;
                Ok(())
            }
            Err(e) => {
                for (p, _) in fresh.into_iter().rev() {
                    self.ledger.rollback(p);
                }
                for (p, _) in staged.into_iter().rev() {
                    self.ledger.rollback(p);
                }
                Err(e)
            }
        }
    }

    fn write(&mut self, prepared: &[(&Prepared, &[LedgerEvent])]) -> Result<Hash, LedgerError> {
        let tx = self.conn.transaction()?;
        let mut head = self.head;
        let mut dirty = projections::Dirty::default();
        {
            let mut w = projections::Writer::new(&tx)?;
            for (p, events) in prepared {
                let mut appended = p.appended.iter();
                for (event, outcome) in events.iter().zip(&p.outcomes) {
                    if let AppendOutcome::Appended { seq } = outcome {
                        let (_, change) = appended.next().expect("one change per appended event");
                        head = w.event(*seq, &head, event, change)?;
                        dirty.note(change);
                    }
                }
            }
            w.projections(self.ledger.state(), &dirty)?;
            w.head(self.ledger.next_seq() - 1, &head)?;
        }
        tx.commit()?;
        Ok(head)
    }

    /// Read one stored event.
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        let row = self
            .conn
            .query_row(
                "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events WHERE seq = ?1",
                [to_sql_int(seq, "seq")?],
                audit::raw_row,
            )
            .optional()?;
        row.map(audit::decode_row).transpose()
    }

    /// The request a job's `job_received` event stored, if it stored one (written groups only).
    pub fn stored_request(&self, job: &crate::JobId) -> Result<Option<String>, LedgerError> {
        let row = self
            .conn
            .query_row(
                "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events \
                 WHERE job = ?1 ORDER BY seq LIMIT 1",
                [job.as_str()],
                audit::raw_row,
            )
            .optional()?;
        Ok(match row.map(audit::decode_row).transpose()? {
            Some(StoredEvent {
                event:
                    LedgerEvent {
                        body: crate::EventBody::JobReceived { request, .. },
                        ..
                    },
                ..
            }) => request,
            _ => None,
        })
    }

    /// Whether `event` has the same body as the event first stored under its key.
    pub fn same_as_first(&self, event: &LedgerEvent) -> Result<Option<bool>, LedgerError> {
        let Some(seq) = self.ledger.seq_of_key(&event.key) else {
            return Ok(None);
        };
        let stored = self
            .event(seq)?
            .ok_or_else(|| LedgerError::Corrupt(format!("key {} has no event", event.key)))?;
        Ok(Some(stored.event.body == event.body))
    }

    /// Every invoice a quote offered, as (job, payment hash), in log order (written groups only).
    pub fn quoted_invoices(&self) -> Result<Vec<(crate::JobId, String)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM events WHERE type = 'quote_issued' ORDER BY seq")?;
        let bodies = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for body in bodies {
            if let crate::EventBody::QuoteIssued { job, options, .. } = serde_json::from_str(&body)?
            {
                for option in options {
                    if let crate::PaymentOption::Invoice { payment_hash, .. } = option {
                        out.push((job.clone(), payment_hash));
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError> {
        audit::audit(&self.conn, reference)
    }

    pub fn jobs_by_state(
        &self,
        state: crate::job::JobState,
    ) -> Result<Vec<crate::job::JobRecord>, LedgerError> {
        audit::jobs_by_state(&self.conn, state)
    }

    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, LedgerError> {
        export::export(&self.conn, out)
    }

    /// Verify the file behind this store from scratch.
    pub fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        verify_connection(&self.conn)
    }

    /// Close the connection (checkpointing the WAL).
    pub fn close(self) -> Result<(), LedgerError> {
        self.conn.close().map_err(|(_, e)| LedgerError::Storage(e))
    }
}

/// Memory for SQLite's page cache: the indexes are keyed by hashes, so inserts land on random
/// pages; with the default 2 MiB cache every batch re-reads and re-writes pages from disk.
const CACHE_KIB: i64 = 256 * 1024;

fn tune(conn: &Connection) -> Result<(), LedgerError> {
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Bring projection rows written by an older version up to the replayed state (see
/// `Writer::refresh_derived`), in one transaction; a no-op when nothing differs.
fn refresh_derived_rows(conn: &mut Connection, state: &LedgerState) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    let rewritten = projections::Writer::new(&tx)?.refresh_derived(state)?;
    if rewritten > 0 {
        tx.commit()?;
    }
    Ok(())
}

/// Rebuild the in-memory ledger from the stored log, checking the chain as it goes.
fn replay(conn: &Connection) -> Result<(Ledger, Hash), LedgerError> {
    let mut ledger = Ledger::new();
    let mut head = chain::GENESIS;
    let mut stmt = conn
        .prepare("SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let stored = audit::decode_row(audit::raw_row(row)?)?;
        if stored.seq != ledger.next_seq() || stored.prev_hash != head {
            return Err(LedgerError::Corrupt(format!(
                "event {} does not follow the chain; run `paydvm ledger verify`",
                stored.seq
            )));
        }
        ledger.apply(&stored.event)?;
        head = stored.hash;
    }
    Ok((ledger, head))
}

pub(crate) fn insert_event_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    seq: u64,
    event: &LedgerEvent,
    job: Option<&str>,
    body: &str,
    prev: &Hash,
    hash: &Hash,
) -> Result<(), LedgerError> {
    stmt.execute(params![
        to_sql_int(seq, "seq")?,
        event.key.as_str(),
        to_sql_int(event.at.0, "at")?,
        event.body.type_name(),
        job,
        body,
        &prev[..],
        &hash[..],
    ])?;
    Ok(())
}
