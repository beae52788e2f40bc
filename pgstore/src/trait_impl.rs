//! `PgStore` as a [`LedgerStore`]: the in-memory side answers what it holds, the database the
//! rest.

use std::io::Write;

use paydvm_ledger::account::{Account, Balance};
use paydvm_ledger::chain::Hash;
use paydvm_ledger::ledger_store::GroupResult;
use paydvm_ledger::store::resident::StoreBackend;
use paydvm_ledger::store::{AuditTrail, StoredEvent, VerifyFailure, VerifyReport};
use paydvm_ledger::Followed;
use paydvm_ledger::{
    AppendOutcome, EffectId, EffectRecord, IdemKey, JobId, JobRecord, JobState, LedgerError,
    LedgerEvent, LedgerState, LedgerStore, OpenReport, PaymentRef, Recall, RefundId, RefundRecord,
    RefundState, SnapshotStats, StoreOptions,
};

use crate::store::PgStore;
use crate::{audit, read, verify};

impl LedgerStore for PgStore {
    /// A `postgres://` URL (see [`crate::PgLocation`] for the password).
    type Location = str;

    fn open(location: &str, options: &StoreOptions) -> Result<Self, LedgerError> {
        PgStore::open_with(location, options)
    }

    fn opened(&self) -> &OpenReport {
        self.core.opened()
    }

    fn snapshot_stats(&self) -> &SnapshotStats {
        self.core.snapshot_stats()
    }

    fn state(&self) -> &LedgerState {
        self.core.state()
    }

    fn head(&self) -> (u64, Hash) {
        self.core.head()
    }

    fn follow(&mut self) -> Result<Followed, LedgerError> {
        self.core.follow(&self.db, true)
    }

    fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        self.core.recall(&self.db, names)
    }

    fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        self.core.stage(&self.db, events)
    }

    fn staged_groups(&self) -> usize {
        self.core.staged_groups()
    }

    fn flush(&mut self) -> Result<usize, LedgerError> {
        self.core.flush(&mut self.db)
    }

    fn append_batch(&mut self, groups: &[&[LedgerEvent]]) -> Result<Vec<GroupResult>, LedgerError> {
        self.core.append_batch(&mut self.db, groups)
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        Ok(read::event(&self.db, seq)?)
    }

    /// One query per chunk.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(read::events_after(&self.db, after, limit)?)
    }

    fn seq_of_key(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError> {
        match self.core.ledger().seq_of_key(key) {
            Some(seq) => Ok(Some(seq)),
            None if self.core.bounded() => self.db.key_seq(key),
            None => Ok(None),
        }
    }

    fn job(&self, job: &JobId) -> Result<Option<JobRecord>, LedgerError> {
        match self.state().job(job) {
            Some(j) => Ok(Some(j.clone())),
            None if self.core.bounded() => StoreBackend::job(&self.db, job),
            None => Ok(None),
        }
    }

    fn refund(&self, refund: &RefundId) -> Result<Option<RefundRecord>, LedgerError> {
        match self.state().refund(refund) {
            Some(r) => Ok(Some(r.clone())),
            None if self.core.bounded() => StoreBackend::refund(&self.db, refund),
            None => Ok(None),
        }
    }

    fn effect(&self, effect: &EffectId) -> Result<Option<EffectRecord>, LedgerError> {
        match self.state().effect(effect) {
            Some(e) => Ok(Some(e.clone())),
            None if self.core.bounded() => StoreBackend::effect(&self.db, effect),
            None => Ok(None),
        }
    }

    fn payment_ref_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError> {
        match self.state().payment_ref_seq(reference) {
            Some(seq) => Ok(Some(seq)),
            None if self.core.bounded() => self.db.payment_seq(reference),
            None => Ok(None),
        }
    }

    fn jobs_by_state(&self, state: JobState) -> Result<Vec<JobRecord>, LedgerError> {
        Ok(read::jobs_by_state(&self.db, state)?)
    }

    fn job_counts(&self) -> Result<Vec<(JobState, u64)>, LedgerError> {
        Ok(read::job_counts(&self.db)?)
    }

    fn refund_counts(&self) -> Result<Vec<(RefundState, u64)>, LedgerError> {
        Ok(read::refund_counts(&self.db)?)
    }

    fn account_balances(&self) -> Result<Vec<(Account, Balance)>, LedgerError> {
        Ok(read::account_balances(&self.db)?)
    }

    fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError> {
        Ok(read::stored_request(&self.db, job)?)
    }

    fn quoted_invoices(&self) -> Result<Vec<paydvm_ledger::QuotedInvoice>, LedgerError> {
        Ok(read::quoted_invoices(&self.db)?)
    }

    fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError> {
        Ok(audit::audit(&self.db, reference)?)
    }

    fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        verify::verify(&self.db)
    }

    fn export(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        Ok(verify::export(&self.db, out)?)
    }

    fn projected_state(&self) -> Result<LedgerState, LedgerError> {
        Ok(read::projected_state(&self.db)?)
    }

    fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
        self.core.write_snapshot(&mut self.db)
    }

    fn close(mut self) -> Result<(), LedgerError> {
        self.core.close(&mut self.db)
    }
}
