//! A ledger open on either store: SQLite ([`Store`]) or PostgreSQL ([`PgStore`]), behind one
//! [`LedgerStore`] by delegation, so the node's core and the inspecting commands do not care
//! which. What only a file has (a consistent copy for `backup`, the fault re-open) is asked of
//! [`LedgerHandle::sqlite`].

use std::io::Write;
use std::path::Path;

use paydvm_ledger::account::{Account, Balance};
use paydvm_ledger::chain::Hash;
use paydvm_ledger::ledger_store::GroupResult;
use paydvm_ledger::store::{AuditTrail, Store, StoredEvent, VerifyFailure, VerifyReport};
use paydvm_ledger::{
    AppendOutcome, EffectId, EffectRecord, IdemKey, JobId, JobRecord, JobState, LedgerError,
    LedgerEvent, LedgerState, LedgerStore, OpenReport, PaymentRef, QuotedInvoice, Recall, RefundId,
    RefundRecord, RefundState, SnapshotStats, StoreOptions,
};
use paydvm_ledger_pg::PgStore;

use crate::config::LedgerPlace;

/// An open ledger.
pub enum LedgerHandle {
    Sqlite(Store),
    Postgres(PgStore),
}

/// The same call on whichever store is open.
macro_rules! each {
    ($handle:expr, $store:ident => $call:expr) => {
        match $handle {
            LedgerHandle::Sqlite($store) => $call,
            LedgerHandle::Postgres($store) => $call,
        }
    };
}

impl LedgerHandle {
    /// Opens the ledger at `place` (a file is created unless read-only, a database's tables
    /// likewise).
    pub fn open(place: &LedgerPlace, options: &StoreOptions) -> Result<LedgerHandle, LedgerError> {
        Ok(match place {
            LedgerPlace::File(path) => LedgerHandle::Sqlite(Store::open_with(path, options)?),
            LedgerPlace::Postgres(url) => {
                LedgerHandle::Postgres(PgStore::open_with(url.secret_text(), options)?)
            }
        })
    }

    /// The SQLite store, when the ledger is a file.
    pub fn sqlite(&self) -> Option<&Store> {
        match self {
            LedgerHandle::Sqlite(store) => Some(store),
            LedgerHandle::Postgres(_) => None,
        }
    }

    /// A ticket for everything committed so far when a file's WAL is synced behind its commits
    /// (`Store::request_sync`); `None` when each commit is synced before it returns (always for
    /// a database: the server syncs it).
    pub fn request_sync(&self) -> Option<u64> {
        self.sqlite().and_then(Store::request_sync)
    }

    /// The tickets on disk (`Store::synced`); `None` without a sync thread.
    pub fn synced(&self) -> Option<Result<u64, LedgerError>> {
        self.sqlite().and_then(Store::synced)
    }

    /// Everything committed on disk now (`Store::sync_now`); a database's commits are already.
    pub fn sync_now(&self) -> Result<(), LedgerError> {
        self.sqlite().map_or(Ok(()), Store::sync_now)
    }

    /// Undo everything staged, in memory; returns how many groups.
    pub fn discard_staged(&mut self) -> usize {
        each!(self, s => s.discard_staged())
    }

    pub fn options(&self) -> &StoreOptions {
        each!(self, s => s.options())
    }

    /// A consistent copy of a ledger file at `dest`. A database is copied by its server's own
    /// tools (or `paydvm ledger copy`): refused.
    pub fn backup_to(&self, dest: &Path) -> Result<(), LedgerError> {
        match self {
            LedgerHandle::Sqlite(store) => store.backup_to(dest),
            LedgerHandle::Postgres(_) => Err(LedgerError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a PostgreSQL ledger is backed up with the server's tools or `paydvm ledger copy`",
            ))),
        }
    }
}

impl From<Store> for LedgerHandle {
    fn from(store: Store) -> Self {
        LedgerHandle::Sqlite(store)
    }
}

impl LedgerStore for LedgerHandle {
    type Location = LedgerPlace;

    fn open(location: &LedgerPlace, options: &StoreOptions) -> Result<Self, LedgerError> {
        LedgerHandle::open(location, options)
    }

    fn opened(&self) -> &OpenReport {
        each!(self, s => LedgerStore::opened(s))
    }

    fn snapshot_stats(&self) -> &SnapshotStats {
        each!(self, s => LedgerStore::snapshot_stats(s))
    }

    fn state(&self) -> &LedgerState {
        each!(self, s => LedgerStore::state(s))
    }

    fn head(&self) -> (u64, Hash) {
        each!(self, s => LedgerStore::head(s))
    }

    fn follow(&mut self) -> Result<paydvm_ledger::Followed, LedgerError> {
        each!(self, s => LedgerStore::follow(s))
    }

    fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        each!(self, s => LedgerStore::recall(s, names))
    }

    fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        each!(self, s => LedgerStore::stage(s, events))
    }

    fn staged_groups(&self) -> usize {
        each!(self, s => LedgerStore::staged_groups(s))
    }

    fn flush(&mut self) -> Result<usize, LedgerError> {
        each!(self, s => LedgerStore::flush(s))
    }

    fn append_batch(&mut self, groups: &[&[LedgerEvent]]) -> Result<Vec<GroupResult>, LedgerError> {
        each!(self, s => LedgerStore::append_batch(s, groups))
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        each!(self, s => LedgerStore::event(s, seq))
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        each!(self, s => LedgerStore::events_after(s, after, limit))
    }

    fn seq_of_key(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError> {
        each!(self, s => LedgerStore::seq_of_key(s, key))
    }

    fn job(&self, job: &JobId) -> Result<Option<JobRecord>, LedgerError> {
        each!(self, s => LedgerStore::job(s, job))
    }

    fn refund(&self, refund: &RefundId) -> Result<Option<RefundRecord>, LedgerError> {
        each!(self, s => LedgerStore::refund(s, refund))
    }

    fn effect(&self, effect: &EffectId) -> Result<Option<EffectRecord>, LedgerError> {
        each!(self, s => LedgerStore::effect(s, effect))
    }

    fn payment_ref_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError> {
        each!(self, s => LedgerStore::payment_ref_seq(s, reference))
    }

    fn jobs_by_state(&self, state: JobState) -> Result<Vec<JobRecord>, LedgerError> {
        each!(self, s => LedgerStore::jobs_by_state(s, state))
    }

    fn job_counts(&self) -> Result<Vec<(JobState, u64)>, LedgerError> {
        each!(self, s => LedgerStore::job_counts(s))
    }

    fn refund_counts(&self) -> Result<Vec<(RefundState, u64)>, LedgerError> {
        each!(self, s => LedgerStore::refund_counts(s))
    }

    fn account_balances(&self) -> Result<Vec<(Account, Balance)>, LedgerError> {
        each!(self, s => LedgerStore::account_balances(s))
    }

    fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError> {
        each!(self, s => LedgerStore::stored_request(s, job))
    }

    fn quoted_invoices(&self) -> Result<Vec<QuotedInvoice>, LedgerError> {
        each!(self, s => LedgerStore::quoted_invoices(s))
    }

    fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError> {
        each!(self, s => LedgerStore::audit(s, reference))
    }

    fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        each!(self, s => LedgerStore::verify(s))
    }

    fn export(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        each!(self, s => LedgerStore::export(s, out))
    }

    fn projected_state(&self) -> Result<LedgerState, LedgerError> {
        each!(self, s => LedgerStore::projected_state(s))
    }

    fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
        each!(self, s => LedgerStore::write_snapshot(s))
    }

    fn close(self) -> Result<(), LedgerError> {
        each!(self, s => LedgerStore::close(s))
    }
}
