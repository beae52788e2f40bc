//! The SQLite event store: the append-only, hash-chained log plus its projections, written in one
//! transaction per group (or per batch of groups, for group commit). The first implementation of
//! [`crate::LedgerStore`].

mod audit;
mod backup;
mod export;
mod load;
mod projections;
mod queries;
mod refs;
mod replay;
mod schema;
mod snapshots;
mod trait_impl;
mod verify;

use std::path::Path;

use rusqlite::{params, Connection};

pub use crate::chain::Hash;
pub use crate::ledger_store::Durability;
pub use audit::{AuditEvent, AuditPosting, AuditTrail};
pub use projections::{Dirty, EventRows, ProjectionRow, ProjectionRows};
pub use schema::SCHEMA_VERSION;
pub use verify::{verify_connection, verify_file, VerifyFailure, VerifyReport};

use crate::account::Account;
use crate::engine::{AppendOutcome, Ledger, Prepared};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::footprint::footprint;
use crate::ids::{JobId, RefundId};
use crate::ledger_store::{
    OpenReport, Recall, Retention, SnapshotStats, SnapshotUse, StoreOptions,
};
use crate::state::residency::Candidates;
use crate::state::LedgerState;

/// Creates a new ledger file empty with mode 0600 (an empty file is a valid new SQLite
/// database), so that it and the `-wal`/`-shm` files SQLite gives the same mode are readable by
/// the owner only, like the keys. An existing file, `:memory:` and `file:` URIs are left alone.
fn create_private(path: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = path.to_string_lossy();
    if text == ":memory:" || text.starts_with("file:") || path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Created meanwhile by someone else: theirs to keep.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
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

/// The durable ledger. Holds the derived state in memory (all of it, or the open work only:
/// see [`Retention`]); every append writes the events and the projection rows they change in one
/// SQLite transaction.
pub struct Store {
    conn: Connection,
    ledger: Ledger,
    /// Hash of the last event written to disk.
    head: Hash,
    /// Groups applied in memory but not yet written: see [`Store::stage`].
    staged: Vec<(Prepared, Vec<LedgerEvent>)>,
    options: StoreOptions,
    /// Records loaded from disk or written since memory was last trimmed (`OpenWork`).
    candidates: Candidates,
    opened: OpenReport,
    snapshots: SnapshotStats,
}

pub(crate) fn to_sql_int(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} exceeds storage range")))
}

pub(crate) fn from_sql_int(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} is negative")))
}

impl Store {
    /// Open (creating if needed) a ledger file, migrate it and replay it into memory, keeping the
    /// whole history there (`Retention::Everything`, as before snapshots existed).
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Store, LedgerError> {
        Store::open_with(path, &StoreOptions::everything(durability))
    }

    /// An in-memory ledger keeping the whole history in memory.
    pub fn open_in_memory() -> Result<Store, LedgerError> {
        Store::open_with(":memory:", &StoreOptions::everything(Durability::Normal))
    }

    /// Open an existing ledger file for reading, with the whole history in memory: never
    /// creates, migrates or converts a file.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, LedgerError> {
        Store::open_with(
            path,
            &StoreOptions::everything(Durability::Normal).read_only(),
        )
    }

    /// Open with explicit options. `path` may be `:memory:` or an SQLite URI (`file:…`).
    pub fn open_with(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Store, LedgerError> {
        let path = path.as_ref();
        if options.read_only {
            return Store::open_read_only_with(path, options);
        }
        create_private(path)?;
        let mut conn = Connection::open(path)?;
        tune(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match options.durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        let mut store = Store::load(conn, options, SCHEMA_VERSION)?;
        refresh_derived_rows(&mut store.conn, store.ledger.state())?;
        if store.snapshots.last_seq < store.head().0 {
            // Replayed more than nothing: make the next start cheap.
            store.snapshot_quietly();
        }
        Ok(store)
    }

    fn open_read_only_with(path: &Path, options: &StoreOptions) -> Result<Store, LedgerError> {
        if !path.is_file() {
            return Err(LedgerError::NotFound(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version = schema::schema_version(&conn)?;
        if !(schema::OLDEST_READABLE..=SCHEMA_VERSION).contains(&version) {
            return Err(LedgerError::NotALedger(path.display().to_string(), version));
        }
        tune(&conn)?;
        Store::load(conn, options, version)
    }

    fn load(conn: Connection, options: &StoreOptions, version: u32) -> Result<Store, LedgerError> {
        let loaded = match options.retention {
            Retention::Everything => replay::everything(&conn)?,
            Retention::OpenWork => replay::open_work(&conn, version)?,
        };
        let last_seq = match loaded.report.snapshot {
            SnapshotUse::Loaded { seq } => seq,
            _ => 0,
        };
        Ok(Store {
            conn,
            ledger: loaded.ledger,
            head: loaded.head,
            staged: Vec::new(),
            options: *options,
            candidates: Candidates::default(),
            opened: loaded.report,
            snapshots: SnapshotStats {
                last_seq,
                ..SnapshotStats::default()
            },
        })
    }

    fn bounded(&self) -> bool {
        self.options.retention == Retention::OpenWork
    }

    /// The derived state: all of it, or only open work (see [`Retention`]).
    pub fn state(&self) -> &LedgerState {
        self.ledger.state()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// How the state was loaded at open (snapshot used, rejected, events replayed).
    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    pub fn snapshot_stats(&self) -> &SnapshotStats {
        &self.snapshots
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
        self.writable()?;
        self.load_named(&[events])?;
        let outcomes = match self.ledger.prepare(events) {
            Ok(p) => {
                let outcomes = p.outcomes.clone();
                if !p.appended.is_empty() {
                    self.staged.push((p, events.to_vec()));
                }
                Ok(outcomes)
            }
            Err(e) => Err(e),
        };
        self.trim();
        outcomes
    }

    /// Groups staged and not yet written.
    pub fn staged_groups(&self) -> usize {
        self.staged.len()
    }

    /// Undoes every staged group in memory, newest first, as a failed [`Store::flush`] would,
    /// without touching the file (for a caller that found the file unfit to write).
    pub fn discard_staged(&mut self) -> usize {
        let staged = std::mem::take(&mut self.staged);
        let count = staged.len();
        for (p, _) in staged.into_iter().rev() {
            self.ledger.rollback(p);
        }
        count
    }

    /// Writes every staged group in one transaction. On failure all of them are undone in
    /// memory, as if never staged, and the error is returned.
    pub fn flush(&mut self) -> Result<usize, LedgerError> {
        let count = self.staged.len();
        if count > 0 {
            let written = self.write_with_staged(Vec::new());
            self.after_write();
            written?;
        }
        Ok(count)
    }

    /// The SQLite connection. For tests and tools that inspect or sabotage the file (crash
    /// tests, fuzzing, benches); the store's contract never exposes it.
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
        self.writable()?;
        self.load_named(groups)?;
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
            self.trim();
            return Ok(results);
        }
        let written = self.write_with_staged(prepared);
        self.after_write();
        written?;
        Ok(results)
    }

    fn writable(&self) -> Result<(), LedgerError> {
        if self.options.read_only {
            return Err(LedgerError::ReadOnly);
        }
        Ok(())
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
            Ok((head, dirty)) => {
                self.head = head;
                if self.bounded() {
                    let c = dirty.candidates();
                    self.candidates.jobs.extend(c.jobs);
                    self.candidates.refunds.extend(c.refunds);
                    self.candidates.effects.extend(c.effects);
                }
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

    fn write(
        &mut self,
        prepared: &[(&Prepared, &[LedgerEvent])],
    ) -> Result<(Hash, projections::Dirty), LedgerError> {
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
                        dirty.note(*seq, &event.body, change);
                    }
                }
            }
            w.projections(self.ledger.state(), &dirty)?;
            w.head(self.ledger.next_seq() - 1, &head)?;
        }
        tx.commit()?;
        Ok((head, dirty))
    }

    /// With `OpenWork`: before planning, load every record the groups name that is not in
    /// memory (and the keys and payment references already on disk), so the plan answers as if
    /// the whole history were in memory.
    fn load_named(&mut self, groups: &[&[LedgerEvent]]) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        let mut names = Recall::default();
        for event in groups.iter().flat_map(|g| g.iter()) {
            if self.ledger.seq_of_key(&event.key).is_none() {
                if let Some(seq) = load::key_seq(&self.conn, &event.key)? {
                    self.ledger.note_key(event.key.clone(), seq);
                }
            }
            let fp = footprint(&event.body);
            names.jobs.extend(fp.jobs.iter().map(|(j, _)| (*j).clone()));
            names
                .refunds
                .extend(fp.refunds.iter().map(|(r, _)| (*r).clone()));
            names
                .effects
                .extend(fp.effects.iter().map(|(e, _)| (*e).clone()));
            names
                .refs
                .extend(fp.payment_refs.iter().map(|r| (*r).clone()));
        }
        self.load_records(names)
    }

    /// With `OpenWork`: bring back into memory the named records that left it (a refund with
    /// its job), and note which of the named payment references are credited on disk, so that a
    /// caller deciding on `state()` sees them as if the whole history were in memory. They leave
    /// again with the next trim, like any record that ended.
    pub fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        self.load_records(names.clone())
    }

    fn load_records(&mut self, names: Recall) -> Result<(), LedgerError> {
        let Recall {
            mut jobs,
            refunds,
            effects,
            refs,
        } = names;
        for id in dedup(refunds) {
            self.load_refund(&id)?;
            if let Some(job) = self.state().refund(&id).and_then(|r| r.job.clone()) {
                jobs.push(job);
            }
        }
        for id in dedup(jobs) {
            self.load_job(&id)?;
        }
        for id in dedup(effects) {
            if self.state().effect(&id).is_none() {
                if let Some(e) = load::effect(&self.conn, &id)? {
                    self.ledger.state_mut().load_effect(e);
                    self.candidates.effects.insert(id);
                }
            }
        }
        for r in dedup(refs) {
            if self.state().payment_ref_seq(&r).is_none() {
                if let Some(seq) = load::payment_seq(&self.conn, &r)? {
                    self.ledger.state_mut().note_payment_ref(r, seq);
                }
            }
        }
        Ok(())
    }

    fn load_job(&mut self, id: &JobId) -> Result<(), LedgerError> {
        if self.state().job(id).is_some() {
            return Ok(());
        }
        if let Some(row) = load::job(&self.conn, id, false)? {
            let account = load::balance(&self.conn, &Account::Job(id.clone()))?;
            self.ledger.state_mut().load_job(row.record, account);
            self.candidates.jobs.insert(id.clone());
        }
        Ok(())
    }

    fn load_refund(&mut self, id: &RefundId) -> Result<(), LedgerError> {
        if self.state().refund(id).is_some() {
            return Ok(());
        }
        if let Some(row) = load::refund(&self.conn, id, false)? {
            let account = load::balance(&self.conn, &Account::Refund(id.clone()))?;
            self.ledger.state_mut().load_refund(row.record, account);
            self.candidates.refunds.insert(id.clone());
        }
        Ok(())
    }

    /// With `OpenWork` and nothing staged: drop the records that ended, and the keys and
    /// payment references (on disk now, looked up there).
    fn trim(&mut self) {
        if !self.bounded() || !self.staged.is_empty() {
            return;
        }
        let candidates = std::mem::take(&mut self.candidates);
        self.ledger.state_mut().evict(&candidates, &|_| false);
        self.ledger.forget_history();
    }

    fn after_write(&mut self) {
        self.trim();
        let every = self.options.snapshot_every;
        let (head, _) = self.head();
        if every > 0 && head >= self.snapshots.last_seq.saturating_add(every) {
            self.snapshot_quietly();
        }
    }

    /// A snapshot whose failure is counted, not returned: the events are on disk already, and
    /// the next snapshot tries again.
    fn snapshot_quietly(&mut self) {
        if let Err(e) = self.write_snapshot() {
            self.snapshots.write_failures += 1;
            self.snapshots.last_failure = Some(e.to_string());
        }
    }

    /// Write a snapshot of the open work as of the head (`OpenWork`, writable, nothing staged).
    /// Returns its seq, or `None` when there is nothing new or the store keeps everything.
    pub fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
        if !self.bounded() {
            return Ok(None);
        }
        self.writable()?;
        if !self.staged.is_empty() {
            return Err(LedgerError::Staged(self.staged.len()));
        }
        let (seq, hash) = self.head();
        if seq == 0 || seq == self.snapshots.last_seq {
            return Ok(None);
        }
        self.trim();
        let s = crate::snapshot::encode(self.state(), seq, hash)?;
        snapshots::write(&mut self.conn, &s)?;
        self.snapshots.written += 1;
        self.snapshots.last_seq = seq;
        Ok(Some(seq))
    }

    /// Read one stored event.
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        queries::event(&self.conn, seq)
    }

    /// The request a job's `job_received` event stored, if it stored one (written groups only).
    pub fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError> {
        queries::stored_request(&self.conn, job)
    }

    /// Whether `event` has the same body as the event first stored under its key.
    pub fn same_as_first(&self, event: &LedgerEvent) -> Result<Option<bool>, LedgerError> {
        crate::LedgerStore::same_as_first(self, event)
    }

    /// Every invoice a quote offered, as (job, payment hash), in log order (written groups only).
    pub fn quoted_invoices(&self) -> Result<Vec<(JobId, String)>, LedgerError> {
        queries::quoted_invoices(&self.conn)
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

    /// Drop what is staged; with `OpenWork` on a writable store, write a snapshot; then close
    /// the connection (checkpointing the WAL). A failed snapshot is returned after closing.
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.discard_staged();
        let snapshot = if self.bounded() && !self.options.read_only {
            self.write_snapshot().map(|_| ())
        } else {
            Ok(())
        };
        self.conn
            .close()
            .map_err(|(_, e)| LedgerError::Storage(e))?;
        snapshot
    }
}

fn dedup<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
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
