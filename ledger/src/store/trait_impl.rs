//! `Store` as a [`LedgerStore`]: the contract's methods, most of them the inherent ones.

use std::io::Write;
use std::path::Path;

use super::replay::Followed;
use super::{audit, export, load, queries, Hash, Store, StoredEvent};
use super::{AuditTrail, VerifyFailure, VerifyReport};
use crate::account::{Account, Balance};
use crate::effect::EffectRecord;
use crate::engine::AppendOutcome;
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ids::{EffectId, IdemKey, JobId, PaymentRef, RefundId};
use crate::job::{JobRecord, JobState};
use crate::ledger_store::{
    GroupResult, LedgerStore, OpenReport, Recall, SnapshotStats, StoreOptions,
};
use crate::refund::{RefundRecord, RefundState};
use crate::state::LedgerState;

impl LedgerStore for Store {
    type Location = Path;

    fn open(location: &Path, options: &StoreOptions) -> Result<Self, LedgerError> {
        Store::open_with(location, options)
    }

    fn opened(&self) -> &OpenReport {
        Store::opened(self)
    }

    fn snapshot_stats(&self) -> &SnapshotStats {
        Store::snapshot_stats(self)
    }

    fn state(&self) -> &LedgerState {
        Store::state(self)
    }

    fn head(&self) -> (u64, Hash) {
        Store::head(self)
    }

    fn follow(&mut self) -> Result<Followed, LedgerError> {
        Store::follow(self)
    }

    fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        Store::recall(self, names)
    }

    fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        Store::stage(self, events)
    }

    fn staged_groups(&self) -> usize {
        Store::staged_groups(self)
    }

    fn flush(&mut self) -> Result<usize, LedgerError> {
        Store::flush(self)
    }

    fn append_batch(&mut self, groups: &[&[LedgerEvent]]) -> Result<Vec<GroupResult>, LedgerError> {
        Store::append_batch(self, groups)
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        Store::event(self, seq)
    }

    /// One query per chunk.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        queries::events_after(&self.conn, after, limit)
    }

    fn seq_of_key(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError> {
        match self.ledger().seq_of_key(key) {
            Some(seq) => Ok(Some(seq)),
            None if self.bounded() => load::key_seq(&self.conn, key),
            None => Ok(None),
        }
    }

    fn job(&self, job: &JobId) -> Result<Option<JobRecord>, LedgerError> {
        match self.state().job(job) {
            Some(j) => Ok(Some(j.clone())),
            None if self.bounded() => Ok(load::job(&self.conn, job, false)?.map(|r| r.record)),
            None => Ok(None),
        }
    }

    fn refund(&self, refund: &RefundId) -> Result<Option<RefundRecord>, LedgerError> {
        match self.state().refund(refund) {
            Some(r) => Ok(Some(r.clone())),
            None if self.bounded() => {
                Ok(load::refund(&self.conn, refund, false)?.map(|r| r.record))
            }
            None => Ok(None),
        }
    }

    fn effect(&self, effect: &EffectId) -> Result<Option<EffectRecord>, LedgerError> {
        match self.state().effect(effect) {
            Some(e) => Ok(Some(e.clone())),
            None if self.bounded() => load::effect(&self.conn, effect),
            None => Ok(None),
        }
    }

    fn payment_ref_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError> {
        match self.state().payment_ref_seq(reference) {
            Some(seq) => Ok(Some(seq)),
            None if self.bounded() => load::payment_seq(&self.conn, reference),
            None => Ok(None),
        }
    }

    fn jobs_by_state(&self, state: JobState) -> Result<Vec<JobRecord>, LedgerError> {
        audit::jobs_by_state(&self.conn, state)
    }

    fn job_counts(&self) -> Result<Vec<(JobState, u64)>, LedgerError> {
        queries::job_counts(&self.conn)
    }

    fn refund_counts(&self) -> Result<Vec<(RefundState, u64)>, LedgerError> {
        queries::refund_counts(&self.conn)
    }

    fn account_balances(&self) -> Result<Vec<(Account, Balance)>, LedgerError> {
        queries::account_balances(&self.conn)
    }

    fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError> {
        Store::stored_request(self, job)
    }

    fn quoted_invoices(&self) -> Result<Vec<crate::QuotedInvoice>, LedgerError> {
        Store::quoted_invoices(self)
    }

    fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError> {
        Store::audit(self, reference)
    }

    fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        Store::verify(self)
    }

    fn export(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        export::export(&self.conn, out)
    }

    fn projected_state(&self) -> Result<LedgerState, LedgerError> {
        queries::projected_state(&self.conn)
    }

    fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
        Store::write_snapshot(self)
    }

    fn close(self) -> Result<(), LedgerError> {
        Store::close(self)
    }
}
