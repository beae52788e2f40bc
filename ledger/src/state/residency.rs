//! What a store keeps in memory when it keeps only open work (`Retention::OpenWork`).
//!
//! Resident: every job not in a terminal state, every refund not settled or written off, every
//! effect not done and every effect of the node itself (no job), every subscription, every
//! account except the per-job and per-refund accounts of records that left, and the per-asset
//! reservations. A record that ends (a terminal job, a closed refund, a job's delivered effect)
//! leaves memory once the event that ended it is on disk, together with its own (zero) account.
//! When an event names it again, the store loads it back from disk before planning (see
//! `footprint`), so the rules see it exactly as before; a caller deciding on the state recalls
//! what it will read (`LedgerStore::recall`).

use crate::keyed::HashSet;

use crate::account::{Account, Balance};
use crate::effect::EffectRecord;
use crate::ids::{EffectId, JobId, PaymentRef, RefundId};
use crate::job::JobRecord;
use crate::refund::RefundRecord;

use super::LedgerState;

/// Records that may have ended or were loaded from disk since memory was last trimmed.
#[derive(Debug, Default)]
pub struct Candidates {
    pub jobs: HashSet<JobId>,
    pub refunds: HashSet<RefundId>,
    pub effects: HashSet<EffectId>,
}

impl Candidates {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.refunds.is_empty() && self.effects.is_empty()
    }
}

/// A job whose state is terminal leaves memory. An expired job may still be revived by a late
/// payment: it is loaded back when that payment names it.
pub fn job_ended(job: &JobRecord) -> bool {
    job.state.is_terminal()
}

pub fn refund_ended(refund: &RefundRecord) -> bool {
    refund.state.is_closed()
}

/// A job's effect (a reply) leaves once delivered. The node's own effects (no job: NIP-89
/// announcements, the profile) stay: the node compares each new announcement with the last one
/// for its address, and they are few (one per change the operator makes).
pub fn effect_ended(effect: &EffectRecord) -> bool {
    effect.outcome.is_some() && effect.job.is_some()
}

impl LedgerState {
    /// A job loaded from disk, with its account (absent when nothing was ever posted to it).
    pub fn load_job(&mut self, job: JobRecord, account: Option<Balance>) {
        if let Some(b) = account {
            self.balances.insert(Account::Job(job.job.clone()), b);
        }
        self.jobs.insert(job.job.clone(), job);
    }

    pub fn load_refund(&mut self, refund: RefundRecord, account: Option<Balance>) {
        if let Some(b) = account {
            self.balances
                .insert(Account::Refund(refund.refund.clone()), b);
        }
        self.refunds.insert(refund.refund.clone(), refund);
    }

    pub fn load_effect(&mut self, effect: EffectRecord) {
        self.effects.insert(effect.effect.clone(), effect);
    }

    /// A payment reference found credited on disk, so that the plan refuses it again.
    pub fn note_payment_ref(&mut self, reference: PaymentRef, seq: u64) {
        self.payment_refs.insert(reference, seq);
    }

    pub(crate) fn forget_payment_refs(&mut self) {
        self.payment_refs = Default::default();
    }

    /// Drops the candidates that ended (and their accounts), unless `keep_job` says a job (with
    /// its refunds) is still needed. Returns how many records left.
    pub fn evict(&mut self, candidates: &Candidates, keep_job: &dyn Fn(&JobId) -> bool) -> usize {
        let mut left = 0;
        for id in &candidates.jobs {
            if self.jobs.get(id).is_some_and(job_ended) && !keep_job(id) {
                self.jobs.remove(id);
                self.balances.remove(&Account::Job(id.clone()));
                left += 1;
            }
        }
        for id in &candidates.refunds {
            let ended = self
                .refunds
                .get(id)
                .is_some_and(|r| refund_ended(r) && !r.job.as_ref().is_some_and(keep_job));
            if ended {
                self.refunds.remove(id);
                self.balances.remove(&Account::Refund(id.clone()));
                left += 1;
            }
        }
        for id in &candidates.effects {
            if self.effects.get(id).is_some_and(effect_ended) {
                self.effects.remove(id);
                left += 1;
            }
        }
        left
    }

    /// Every resident record, as eviction candidates (a sweep of the whole resident state).
    pub fn all_resident(&self) -> Candidates {
        Candidates {
            jobs: self.jobs.keys().cloned().collect(),
            refunds: self.refunds.keys().cloned().collect(),
            effects: self.effects.keys().cloned().collect(),
        }
    }

    /// The part of this state a store keeping only open work holds: the same state without the
    /// records that ended, their accounts, and the payment references (which such a store looks
    /// up on disk). A bounded store's `state()` equals the `open_work()` of a full replay.
    pub fn open_work(&self) -> LedgerState {
        let mut s = self.clone();
        let all = s.all_resident();
        s.evict(&all, &|_| false);
        s.forget_payment_refs();
        s
    }

    /// True when no record that ended is resident.
    pub fn holds_only_open_work(&self) -> bool {
        self.jobs.values().all(|j| !job_ended(j))
            && self.refunds.values().all(|r| !refund_ended(r))
            && self.effects.values().all(|e| !effect_ended(e))
    }

    /// The derived state of a whole written history from a store's projection rows (what
    /// `LedgerStore::projected_state` answers): refunds' reservations are summed again.
    pub fn from_projections(rows: ProjectedRows) -> Result<LedgerState, crate::LedgerError> {
        let mut state = LedgerState::default();
        for j in rows.jobs {
            state.jobs.insert(j.job.clone(), j);
        }
        let money = |e: crate::MoneyError| crate::LedgerError::Corrupt(format!("refunds: {e}"));
        for r in rows.refunds {
            if let Some((asset, amount)) = r.reservation().map_err(money)? {
                let total = state.reserved.entry(asset).or_default();
                *total = total.checked_add(amount).map_err(money)?;
            }
            state.refunds.insert(r.refund.clone(), r);
        }
        state.reserved.retain(|_, total| !total.is_zero());
        for s in rows.subscriptions {
            state.subscriptions.insert(s.subscription.clone(), s);
        }
        for e in rows.effects {
            state.effects.insert(e.effect.clone(), e);
        }
        state.balances = rows.balances.into_iter().collect();
        state.payment_refs = rows.payment_refs.into_iter().collect();
        Ok(state)
    }
}

/// A store's projection tables, read back whole.
#[derive(Debug, Default)]
pub struct ProjectedRows {
    pub jobs: Vec<JobRecord>,
    pub refunds: Vec<RefundRecord>,
    pub subscriptions: Vec<crate::subscription::SubscriptionRecord>,
    pub effects: Vec<EffectRecord>,
    pub balances: Vec<(Account, Balance)>,
    pub payment_refs: Vec<(PaymentRef, u64)>,
}
