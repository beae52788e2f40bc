//! The SQLite event store: the append-only, hash-chained log plus its projections, written in one
//! transaction per group (or per batch of groups, for group commit). The first implementation of
//! [`crate::LedgerStore`].

mod audit;
mod backup;
pub mod checkpointer;
mod digest;
mod digest_migration;
mod export;
mod load;
mod log_source;
mod projections;
mod queries;
mod refs;
pub mod replay;
pub mod resident;
mod schema;
mod snapshots;
mod trait_impl;
mod verify;
mod verify_chain;
pub mod wal_sync;

use std::path::Path;

use rusqlite::{params, Connection};

pub use crate::chain::Hash;
pub use crate::ledger_store::Durability;
pub use audit::{AuditEvent, AuditPosting, AuditTrail, SubscriptionThreads};
pub use digest::key_digest;
pub use projections::{Dirty, EventRows, ProjectionRow, ProjectionRows};
pub use schema::SCHEMA_VERSION;
pub use verify::{verify_connection, verify_file, VerifyFailure, VerifyReport};

use crate::account::Account;
use crate::engine::{AppendOutcome, Ledger};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ids::{JobId, RefundId};
use crate::ledger_store::{OpenReport, Recall, Retention, SnapshotStats, StoreOptions};
use crate::state::LedgerState;
use checkpointer::{CheckpointStats, Checkpointer, MayTouch, BACKSTOP_PAGES};
use resident::{PreparedGroup, Resident, StoreBackend};
use wal_sync::{BeforeSync, Wake, WalSyncer};

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

impl StoredEvent {
    /// The request a `job_received` event stored (`stored_request` reads a job's first event).
    pub fn into_request(self) -> Option<String> {
        match self.event.body {
            crate::event::EventBody::JobReceived { request, .. } => request,
            _ => None,
        }
    }
}

/// The durable ledger. Holds the derived state in memory (all of it, or the open work only:
/// see [`Retention`]); every append writes the events and the projection rows they change in one
/// SQLite transaction.
pub struct Store {
    /// Declared before `conn`: the thread stops (finishing a checkpoint under way) before the
    /// store's connection closes with its own last checkpoint.
    checkpointer: Option<Checkpointer>,
    /// Syncs the WAL behind the commits, once [`Store::sync_in_background`] started it.
    syncer: Option<WalSyncer>,
    conn: Connection,
    /// Whether the events carry the digests they are searched by (schema 4 on; read-only opens
    /// read older files as they are): `digest::has_digests`, as replay and verify ask it.
    digests: bool,
    /// The state in memory and what is staged (shared with every store).
    core: Resident,
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
        tune(&conn, options)?;
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
        refresh_derived_rows(&mut store.conn, store.core.state())?;
        if store.snapshot_stats().last_seq < store.head().0 {
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
        tune(&conn, options)?;
        Store::load(conn, options, version)
    }

    fn load(conn: Connection, options: &StoreOptions, version: u32) -> Result<Store, LedgerError> {
        let loaded = match options.retention {
            Retention::Everything => replay::everything(&conn)?,
            Retention::OpenWork => replay::open_work(&conn, version >= schema::SNAPSHOT_VERSION)?,
        };
        let digests = digest::has_digests(&conn)?;
        Ok(Store {
            checkpointer: None,
            syncer: None,
            conn,
            digests,
            core: Resident::new(loaded.ledger, loaded.head, loaded.report, options),
        })
    }

    fn bounded(&self) -> bool {
        self.core.bounded()
    }

    /// From now on the WAL is checkpointed by a thread of its own instead of inside the commit
    /// that fills it (see [`checkpointer`]); `may_touch` is asked before each checkpoint. Does
    /// nothing for a read-only or in-memory store, or when already started.
    pub fn checkpoint_in_background(&mut self, may_touch: MayTouch) -> Result<(), LedgerError> {
        if self.checkpointer.is_some() || self.options().read_only {
            return Ok(());
        }
        let path = match self.conn.path() {
            Some(path) if !path.is_empty() => path.to_owned(),
            _ => return Ok(()),
        };
        self.checkpointer = Some(Checkpointer::start(&path, may_touch)?);
        self.conn
            .pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
        Ok(())
    }

    /// From now on a commit returns once its WAL frames are written, before they are synced
    /// (`synchronous = NORMAL`), and a thread of its own syncs the WAL behind the commits (see
    /// [`wal_sync`]): the caller asks [`Store::request_sync`] after each flush and holds back
    /// that flush's side effects until [`Store::synced`] reaches the ticket. `wake` is called
    /// after each sync. Does nothing for a read-only or in-memory store, or when started.
    pub fn sync_in_background(
        &mut self,
        wake: Wake,
        before_sync: Option<BeforeSync>,
    ) -> Result<(), LedgerError> {
        if self.syncer.is_some() || self.options().read_only {
            return Ok(());
        }
        let path = match self.conn.path() {
            Some(path) if !path.is_empty() => format!("{path}-wal"),
            _ => return Ok(()),
        };
        // The WAL exists while a connection has the database open in WAL mode.
        let wal = std::fs::File::open(&path)?;
        self.syncer = Some(WalSyncer::start(wal, wake, before_sync)?);
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    /// A ticket for everything committed so far, when the WAL is synced behind the commits
    /// (`None`: each commit was synced before it returned).
    pub fn request_sync(&self) -> Option<u64> {
        self.syncer.as_ref().map(WalSyncer::request)
    }

    /// Every ticket up to the answer is on disk (`None` without a sync thread); an error, for
    /// good, once a sync failed.
    pub fn synced(&self) -> Option<Result<u64, LedgerError>> {
        self.syncer
            .as_ref()
            .map(|s| s.synced().map_err(LedgerError::SyncFailed))
    }

    /// Syncs the WAL now, on the caller's thread: everything committed is on disk after `Ok`.
    /// Without a sync thread each commit was synced already.
    pub fn sync_now(&self) -> Result<(), LedgerError> {
        match &self.syncer {
            Some(s) => s.sync_now().map_err(LedgerError::SyncFailed),
            None => Ok(()),
        }
    }

    /// What the checkpoint thread has done, when there is one.
    pub fn checkpoint_stats(&self) -> Option<CheckpointStats> {
        self.checkpointer.as_ref().map(Checkpointer::stats)
    }

    /// The derived state: all of it, or only open work (see [`Retention`]).
    pub fn state(&self) -> &LedgerState {
        self.core.state()
    }

    pub fn ledger(&self) -> &Ledger {
        self.core.ledger()
    }

    pub fn options(&self) -> &StoreOptions {
        self.core.options()
    }

    /// How the state was loaded at open (snapshot used, rejected, events replayed).
    pub fn opened(&self) -> &OpenReport {
        self.core.opened()
    }

    pub fn snapshot_stats(&self) -> &SnapshotStats {
        self.core.snapshot_stats()
    }

    /// The last event written to disk: its seq and hash (staged groups are not counted).
    pub fn head(&self) -> (u64, Hash) {
        self.core.head()
    }

    /// Applies a group in memory now, so that later decisions see it, and writes it with the
    /// next [`Store::flush`] (or append), in one transaction with every other staged group: group
    /// commit for a caller that decides one group at a time. A refused group changes nothing.
    ///
    /// Nothing staged is durable until `flush` returns `Ok`, so the caller holds back every side
    /// effect of a staged group until then. Dropping the store drops what is staged.
    pub fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        self.core.stage(&self.conn, events)
    }

    /// Groups staged and not yet written.
    pub fn staged_groups(&self) -> usize {
        self.core.staged_groups()
    }

    /// Undoes every staged group in memory, newest first, as a failed [`Store::flush`] would,
    /// without touching the file (for a caller that found the file unfit to write).
    pub fn discard_staged(&mut self) -> usize {
        self.core.discard_staged()
    }

    /// Writes every staged group in one transaction. On failure all of them are undone in
    /// memory, as if never staged, and the error is returned.
    pub fn flush(&mut self) -> Result<usize, LedgerError> {
        self.core.flush(&mut self.conn)
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
    pub fn append_batch(
        &mut self,
        groups: &[&[LedgerEvent]],
    ) -> Result<Vec<crate::ledger_store::GroupResult>, LedgerError> {
        self.core.append_batch(&mut self.conn, groups)
    }

    /// With `OpenWork`: bring back into memory the named records that left it (a refund with
    /// its job), and note which of the named payment references are credited on disk, so that a
    /// caller deciding on `state()` sees them as if the whole history were in memory. They leave
    /// again with the next trim, like any record that ended.
    pub fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        self.core.recall(&self.conn, names)
    }

    /// Takes in what another connection appended after this store's head
    /// ([`LedgerStore::follow`]). On a file the node's lock keeps a second writer out; tools
    /// reading a file a node writes can follow it.
    pub fn follow(&mut self) -> Result<replay::Followed, LedgerError> {
        let snapshots = schema::schema_version(&self.conn)? >= schema::SNAPSHOT_VERSION;
        self.core.follow(&self.conn, snapshots)
    }

    /// A snapshot whose failure is counted, not returned: the events are on disk already, and
    /// the next snapshot tries again.
    fn snapshot_quietly(&mut self) {
        self.core.snapshot_quietly(&mut self.conn)
    }

    /// Write a snapshot of the open work as of the head (`OpenWork`, writable, nothing staged).
    /// Returns its seq, or `None` when there is nothing new or the store keeps everything.
    pub fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
        self.core.write_snapshot(&mut self.conn)
    }

    /// Read one stored event.
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        queries::event(&self.conn, seq)
    }

    /// The request a job's `job_received` event stored, if it stored one (written groups only).
    pub fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError> {
        queries::stored_request(&self.conn, job, self.digests)
    }

    /// Whether `event` has the same body as the event first stored under its key.
    pub fn same_as_first(&self, event: &LedgerEvent) -> Result<Option<bool>, LedgerError> {
        crate::LedgerStore::same_as_first(self, event)
    }

    /// Every invoice a quote offered (jobs and subscriptions), in log order (written groups only).
    pub fn quoted_invoices(&self) -> Result<Vec<crate::QuotedInvoice>, LedgerError> {
        queries::quoted_invoices(&self.conn)
    }

    pub fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError> {
        audit::audit(&self.conn, reference, self.digests)
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
        self.checkpointer.take();
        self.syncer.take();
        let snapshot = self.core.close(&mut self.conn);
        self.conn
            .close()
            .map_err(|(_, e)| LedgerError::Storage(e))?;
        snapshot
    }
}

/// The SQLite connection as the I/O of the shared in-memory side.
impl StoreBackend for Connection {
    fn key_seq(&self, key: &crate::ids::IdemKey) -> Result<Option<u64>, LedgerError> {
        load::key_seq(self, key)
    }

    fn job(&self, id: &JobId) -> Result<Option<crate::job::JobRecord>, LedgerError> {
        Ok(load::job(self, id, false)?.map(|r| r.record))
    }

    fn refund(&self, id: &RefundId) -> Result<Option<crate::refund::RefundRecord>, LedgerError> {
        Ok(load::refund(self, id, false)?.map(|r| r.record))
    }

    fn effect(
        &self,
        id: &crate::ids::EffectId,
    ) -> Result<Option<crate::effect::EffectRecord>, LedgerError> {
        load::effect(self, id)
    }

    fn balance(&self, account: &Account) -> Result<Option<crate::account::Balance>, LedgerError> {
        load::balance(self, account)
    }

    fn payment_seq(&self, reference: &crate::ids::PaymentRef) -> Result<Option<u64>, LedgerError> {
        load::payment_seq(self, reference)
    }

    fn write(
        &mut self,
        ledger: &Ledger,
        mut head: Hash,
        groups: &[PreparedGroup<'_>],
    ) -> Result<(Hash, projections::Dirty), LedgerError> {
        let tx = self.transaction()?;
        let mut dirty = projections::Dirty::default();
        {
            let mut w = projections::Writer::new(&tx)?;
            for (p, events) in groups {
                let mut appended = p.appended.iter();
                for (event, outcome) in events.iter().zip(&p.outcomes) {
                    if let AppendOutcome::Appended { seq } = outcome {
                        let (_, change) = appended.next().expect("one change per appended event");
                        head = w.event(*seq, &head, event, change)?;
                        dirty.note(*seq, &event.body, change);
                    }
                }
            }
            w.projections(ledger.state(), &dirty)?;
            w.head(ledger.next_seq() - 1, &head)?;
        }
        tx.commit()?;
        Ok((head, dirty))
    }

    fn write_snapshot(&mut self, s: &crate::snapshot::Snapshot) -> Result<(), LedgerError> {
        snapshots::write(self, s)
    }
}

fn tune(conn: &Connection, options: &StoreOptions) -> Result<(), LedgerError> {
    // Negative: a size in KiB rather than in pages.
    conn.pragma_update(None, "cache_size", -i64::from(options.page_cache_kib))?;
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
        key_digest(event.key.as_str()),
        job.map(key_digest),
    ])?;
    Ok(())
}
