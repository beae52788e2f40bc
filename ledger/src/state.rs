//! The ledger's live state and the rules that move it. `plan` decides everything an event does
//! without touching the state; `commit` then applies the plan and cannot fail, so an event is
//! never half-applied.

mod job_table;
mod refunds;
pub mod residency;
mod subscription_table;
mod subscriptions;

use crate::keyed::HashMap;

use self::job_table::JobTable;
use self::subscription_table::SubscriptionTable;

use crate::account::{Account, Balance, Posting};
use crate::effect::EffectRecord;
use crate::error::TransitionError;
use crate::event::{
    Asset, Cause, Disposition, EventBody, JobPayment, LedgerEvent, Payment, PaymentTarget,
    QueueReason, MAX_LINKED_REFS, MAX_PAYLOAD_LEN, MAX_PAYMENT_OPTIONS, MAX_TEXT_LEN,
};
use crate::ids::{EffectId, JobId, PaymentRef, Pubkey, RefundId, SubscriptionId, UnixMs};
use crate::job::{next_state, JobInput, JobRecord, JobState};
use crate::money::Msat;
use crate::refund::RefundRecord;
use crate::subscription::{EntitlementState, SubscriptionRecord};

/// Everything one event changes: new values of the records it touches and its postings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The job this event belongs to, for the audit index.
    pub subject_job: Option<JobId>,
    pub job: Option<JobRecord>,
    pub refund: Option<RefundRecord>,
    pub subscription: Option<SubscriptionRecord>,
    pub effect: Option<EffectRecord>,
    pub payment_refs: Vec<PaymentRef>,
    pub postings: Vec<Posting>,
    /// New totals of every account the postings touch.
    pub balances: Vec<(Account, Balance)>,
    /// New reserved totals of every asset whose reservations this event changed (refunds in
    /// flight or unknown hold back their amount plus fee reserve).
    pub reserved: Vec<(Asset, Msat)>,
}

/// What `commit` overwrote, so a group that fails later can be rolled back.
#[derive(Debug, Default)]
pub struct Undo {
    job: Option<(JobId, Option<JobRecord>)>,
    refund: Option<(RefundId, Option<RefundRecord>)>,
    subscription: Option<(SubscriptionId, Option<SubscriptionRecord>)>,
    effect: Option<(EffectId, Option<EffectRecord>)>,
    payment_refs: Vec<PaymentRef>,
    balances: Vec<(Account, Option<Balance>)>,
    reserved: Vec<(Asset, Option<Msat>)>,
}

/// The projections of the log: jobs, refunds, subscriptions, effects, balances, payment refs.
///
/// A store opened with `Retention::OpenWork` holds only open work here (see [`residency`]): the
/// getters and iterators then answer for resident records only (`jobs()` iterates the jobs that
/// have not ended, `job()` is `None` for one that ended, `payment_ref_seq` knows only references
/// of groups not yet written). Ask the store (`LedgerStore::job`, `payment_ref_seq`, …) for
/// history. With `Retention::Everything` (and for a `Ledger` on its own) it is the whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub(crate) jobs: JobTable,
    pub(crate) refunds: HashMap<RefundId, RefundRecord>,
    pub(crate) subscriptions: SubscriptionTable,
    pub(crate) effects: HashMap<EffectId, EffectRecord>,
    pub(crate) balances: HashMap<Account, Balance>,
    /// Every payment reference ever credited, with the sequence number that credited it.
    pub(crate) payment_refs: HashMap<PaymentRef, u64>,
    /// Per asset, the amount plus fee reserve of every refund in flight or unknown on it. Kept
    /// up to date event by event (never by scanning refunds); absent means zero.
    pub(crate) reserved: HashMap<Asset, Msat>,
}

impl LedgerState {
    pub fn job(&self, job: &JobId) -> Option<&JobRecord> {
        self.jobs.get(job)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Resident jobs quoted or partly paid whose quote expires at or before `now`, in expiry
    /// order (an index: no scan of the jobs).
    pub fn quotes_due(&self, now: UnixMs) -> impl Iterator<Item = &JobRecord> {
        self.jobs.quotes_due(now)
    }

    /// `customer`'s resident jobs that are received or quoted (an index: no scan).
    pub fn pending_quotes_of(&self, customer: &Pubkey) -> impl Iterator<Item = &JobRecord> {
        self.jobs.pending_of(customer)
    }

    /// Whether the job indexes agree with the jobs (checked with the invariants).
    pub fn job_indexes_agree(&self) -> bool {
        self.jobs.indexes_agree()
    }

    pub fn refund(&self, refund: &RefundId) -> Option<&RefundRecord> {
        self.refunds.get(refund)
    }

    pub fn refunds(&self) -> impl Iterator<Item = &RefundRecord> {
        self.refunds.values()
    }

    pub fn subscription(&self, s: &SubscriptionId) -> Option<&SubscriptionRecord> {
        self.subscriptions.get(s)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &SubscriptionRecord> {
        self.subscriptions.values()
    }

    /// `subscriber`'s subscriptions, in id order (an index: no scan).
    pub fn subscriptions_of(
        &self,
        subscriber: &Pubkey,
    ) -> impl Iterator<Item = &SubscriptionRecord> {
        self.subscriptions.of(subscriber)
    }

    /// Whether the subscriber index agrees with the subscriptions (checked with the invariants).
    pub fn subscription_index_agrees(&self) -> bool {
        self.subscriptions.index_agrees()
    }

    pub fn effect(&self, e: &EffectId) -> Option<&EffectRecord> {
        self.effects.get(e)
    }

    pub fn effects(&self) -> impl Iterator<Item = &EffectRecord> {
        self.effects.values()
    }

    pub fn balance(&self, account: &Account) -> Balance {
        self.balances.get(account).copied().unwrap_or_default()
    }

    pub fn balances(&self) -> impl Iterator<Item = (&Account, &Balance)> {
        self.balances.iter()
    }

    /// What a held account holds now (zero for an account never used).
    pub fn held(&self, account: &Account) -> Msat {
        self.balance(account).held().unwrap_or(Msat::ZERO)
    }

    /// What an asset account holds: its debits minus its credits (zero for an unused asset).
    pub fn asset_balance(&self, asset: &Asset) -> Msat {
        self.balance(&Account::Asset(asset.clone()))
            .owned()
            .unwrap_or(Msat::ZERO)
    }

    /// What refunds in flight or unknown on `asset` hold back: their amounts plus fee reserves.
    pub fn reserved(&self, asset: &Asset) -> Msat {
        self.reserved.get(asset).copied().unwrap_or(Msat::ZERO)
    }

    /// What a new refund payout from `asset` may use: the asset's balance minus what refunds in
    /// flight or unknown reserve, zero when that is short. `refund_started` requires
    /// `available ≥ amount + fee_reserve`; check it before promising a payout.
    pub fn available(&self, asset: &Asset) -> Msat {
        self.asset_balance(asset)
            .saturating_sub(self.reserved(asset))
    }

    /// The asset a refund of everything `job` holds must be paid from (the value to put in
    /// `refund_due` and in a refund disposition of held money): the source holding the most for
    /// the job, ties to the smaller `Asset` (Lightning first, then mints by URL). Refused when
    /// the job holds nothing (`NothingHeld`) or holds prepaid credit (`CreditFundedRefund`:
    /// grant it back as credit instead).
    pub fn refund_asset_for(&self, job: &JobId) -> Result<Asset, TransitionError> {
        self.jobs
            .get(job)
            .ok_or_else(|| TransitionError::UnknownJob(job.clone()))?
            .refund_asset()
    }

    pub fn payment_ref_seq(&self, r: &PaymentRef) -> Option<u64> {
        self.payment_refs.get(r).copied()
    }

    pub fn payment_ref_count(&self) -> usize {
        self.payment_refs.len()
    }

    /// Decide what `event` (to be stored as `seq`) does, without changing anything.
    pub fn plan(&self, seq: u64, event: &LedgerEvent) -> Result<Change, TransitionError> {
        check_time(event.at)?;
        let mut p = Planner {
            state: self,
            at: event.at,
            change: Change::default(),
        };
        p.event(seq, &event.body)?;
        p.finish()
    }

    /// Apply a planned change. Infallible: all checks happened in `plan`. With `keep_undo`
    /// false (replay), the overwritten values are dropped instead of kept for a rollback.
    pub fn commit(&mut self, seq: u64, change: &Change, keep_undo: bool) -> Undo {
        fn put<K: std::hash::Hash + Eq + Clone, V: Clone>(
            map: &mut HashMap<K, V>,
            k: &K,
            v: &V,
            keep: bool,
        ) -> Option<(K, Option<V>)> {
            let old = map.insert(k.clone(), v.clone());
            keep.then(|| (k.clone(), old))
        }
        let mut undo = Undo::default();
        if let Some(job) = &change.job {
            let old = self.jobs.insert(job.job.clone(), job.clone());
            undo.job = keep_undo.then(|| (job.job.clone(), old));
        }
        if let Some(r) = &change.refund {
            undo.refund = put(&mut self.refunds, &r.refund, r, keep_undo);
        }
        if let Some(s) = &change.subscription {
            let old = self.subscriptions.insert(s.subscription.clone(), s.clone());
            undo.subscription = keep_undo.then(|| (s.subscription.clone(), old));
        }
        if let Some(e) = &change.effect {
            undo.effect = put(&mut self.effects, &e.effect, e, keep_undo);
        }
        for r in &change.payment_refs {
            self.payment_refs.insert(r.clone(), seq);
            if keep_undo {
                undo.payment_refs.push(r.clone());
            }
        }
        for (account, balance) in &change.balances {
            undo.balances
                .extend(put(&mut self.balances, account, balance, keep_undo));
        }
        for (asset, total) in &change.reserved {
            // Zero totals are removed, so a state and its replay compare equal.
            let old = if total.is_zero() {
                self.reserved.remove(asset)
            } else {
                self.reserved.insert(asset.clone(), *total)
            };
            if keep_undo {
                undo.reserved.push((asset.clone(), old));
            }
        }
        undo
    }

    /// Reverse one `commit`. Undos must be rolled back newest first.
    pub fn rollback(&mut self, undo: Undo) {
        fn restore<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, old: Option<V>) {
            match old {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        if let Some((k, old)) = undo.job {
            match old {
                Some(v) => {
                    self.jobs.insert(k, v);
                }
                None => {
                    self.jobs.remove(&k);
                }
            }
        }
        if let Some((k, old)) = undo.refund {
            restore(&mut self.refunds, k, old);
        }
        if let Some((k, old)) = undo.subscription {
            match old {
                Some(v) => {
                    self.subscriptions.insert(k, v);
                }
                None => {
                    self.subscriptions.remove(&k);
                }
            }
        }
        if let Some((k, old)) = undo.effect {
            restore(&mut self.effects, k, old);
        }
        for r in undo.payment_refs {
            self.payment_refs.remove(&r);
        }
        for (k, old) in undo.balances.into_iter().rev() {
            restore(&mut self.balances, k, old);
        }
        for (k, old) in undo.reserved.into_iter().rev() {
            restore(&mut self.reserved, k, old);
        }
    }
}

/// Largest running total an account may reach: the store keeps totals as SQLite integers.
const MAX_TOTAL: u64 = i64::MAX as u64;

fn check_amount(field: &'static str, amount: Msat) -> Result<(), TransitionError> {
    if amount > Msat::MAX_SUPPLY {
        return Err(TransitionError::AmountTooLarge { field, amount });
    }
    Ok(())
}

fn check_time(t: UnixMs) -> Result<(), TransitionError> {
    if t.0 > MAX_TOTAL {
        return Err(TransitionError::TimeOutOfRange(t.0));
    }
    Ok(())
}

fn check_text(field: &'static str, s: &str) -> Result<(), TransitionError> {
    if s.len() > MAX_TEXT_LEN {
        return Err(TransitionError::TooLong {
            field,
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

fn check_cause(cause: &Cause) -> Result<(), TransitionError> {
    check_text("cause note", cause.note())
}

/// Where the money a refund is created from came from, which decides the refund's asset.
#[derive(Clone, Copy)]
enum RefundSource<'a> {
    /// A payment's excess or a whole payment: always that payment's asset.
    Payment(&'a Asset),
    /// Everything the job holds: the job's refund asset rule, when the event names an asset.
    Held,
}

struct Planner<'a> {
    state: &'a LedgerState,
    at: UnixMs,
    change: Change,
}

impl Planner<'_> {
    fn event(&mut self, seq: u64, body: &EventBody) -> Result<(), TransitionError> {
        match body {
            EventBody::JobReceived {
                job,
                request_event,
                customer,
                kind,
                request,
            } => {
                if request.as_ref().is_some_and(|r| r.len() > MAX_PAYLOAD_LEN) {
                    return Err(TransitionError::TooLong {
                        field: "request",
                        max: MAX_PAYLOAD_LEN,
                    });
                }
                if self.state.jobs.contains_key(job) {
                    return Err(TransitionError::JobExists(job.clone()));
                }
                self.change.subject_job = Some(job.clone());
                self.change.job = Some(JobRecord {
                    job: job.clone(),
                    request_event: request_event.clone(),
                    customer: customer.clone(),
                    kind: *kind,
                    received_at: self.at,
                    state: JobState::Received,
                    price: None,
                    expires_at: None,
                    applied: Msat::ZERO,
                    funded_total: Msat::ZERO,
                    refunded_total: Msat::ZERO,
                    revenue: Msat::ZERO,
                    attempts: 0,
                    refund: None,
                    result_event: None,
                    held_assets: Vec::new(),
                    held_credit: Msat::ZERO,
                    entitlement: None,
                });
            }
            EventBody::JobRejected { job, reason } => {
                check_text("reason", reason)?;
                let mut rec = self.load_job(job)?;
                transition(&mut rec, JobInput::Reject)?;
                self.change.job = Some(rec);
            }
            EventBody::QuoteIssued {
                job,
                amount,
                expires_at,
                options,
            } => {
                if amount.is_zero() {
                    return Err(TransitionError::ZeroQuote);
                }
                check_amount("quote", *amount)?;
                if options.len() > MAX_PAYMENT_OPTIONS {
                    return Err(TransitionError::TooMany {
                        field: "options",
                        max: MAX_PAYMENT_OPTIONS,
                    });
                }
                let mut rec = self.load_job(job)?;
                transition(&mut rec, JobInput::Quote)?;
                rec.price = Some(*amount);
                rec.expires_at = Some(*expires_at);
                self.change.job = Some(rec);
            }
            EventBody::PaymentReceived(payment) => self.payment(payment)?,
            EventBody::QuoteExpired { job, held } => {
                let mut rec = self.load_job(job)?;
                let expires_at = rec.expires_at.unwrap_or(UnixMs(u64::MAX));
                if matches!(rec.state, JobState::Quoted | JobState::PartiallyPaid)
                    && self.at < expires_at
                {
                    return Err(TransitionError::QuoteNotExpired {
                        job: job.clone(),
                        expires_at: expires_at.0,
                        at: self.at.0,
                    });
                }
                let input = self.release_held(
                    &mut rec,
                    held.as_ref(),
                    [
                        JobInput::Expire,
                        JobInput::ExpireRefund,
                        JobInput::ExpireCredit,
                    ],
                )?;
                transition(&mut rec, input)?;
                self.change.job = Some(rec);
            }
            EventBody::JobCancelled { job, held, .. } => {
                let mut rec = self.load_job(job)?;
                let input = self.release_held(
                    &mut rec,
                    held.as_ref(),
                    [
                        JobInput::Cancel,
                        JobInput::CancelRefund,
                        JobInput::CancelCredit,
                    ],
                )?;
                transition(&mut rec, input)?;
                self.change.job = Some(rec);
            }
            EventBody::JobQueued { job, reason } => {
                let mut rec = self.load_job(job)?;
                let input = match reason {
                    QueueReason::Free => JobInput::QueueFree,
                    QueueReason::Paid => JobInput::QueuePaid,
                    QueueReason::Retry => JobInput::QueueRetry,
                    QueueReason::CreditDebit { amount } => {
                        self.debit_credit(&mut rec, *amount)?;
                        JobInput::QueueCredit
                    }
                    QueueReason::Entitlement { subscription } => {
                        self.use_entitlement(&rec, subscription)?;
                        rec.entitlement = Some(subscription.clone());
                        JobInput::QueueEntitlement
                    }
                };
                transition(&mut rec, input)?;
                self.change.job = Some(rec);
            }
            EventBody::ProcessingStarted { job, attempt } => {
                let mut rec = self.load_job(job)?;
                expect_attempt(&rec, rec.attempts.saturating_add(1), *attempt)?;
                transition(&mut rec, JobInput::Start)?;
                rec.attempts = *attempt;
                self.change.job = Some(rec);
            }
            EventBody::ProcessingFailed {
                job,
                attempt,
                reason,
                ..
            } => {
                check_text("reason", reason)?;
                let mut rec = self.load_job(job)?;
                transition(&mut rec, JobInput::Fail)?;
                expect_attempt(&rec, rec.attempts, *attempt)?;
                self.change.job = Some(rec);
            }
            EventBody::JobClosed { job, reason } => {
                check_text("reason", reason)?;
                let mut rec = self.load_job(job)?;
                let held = self.held(&Account::Job(job.clone()));
                transition(&mut rec, JobInput::Close)?;
                if !held.is_zero() {
                    return Err(TransitionError::HeldNeedsDisposition {
                        job: job.clone(),
                        held,
                    });
                }
                self.change.job = Some(rec);
            }
            EventBody::ResultPublished { job, result_event } => {
                let mut rec = self.load_job(job)?;
                transition(&mut rec, JobInput::Publish)?;
                let held = self.held(&Account::Job(job.clone()));
                self.post(Account::Job(job.clone()), Account::Revenue, held)?;
                rec.revenue = rec.revenue.checked_add(held)?;
                rec.result_event = Some(result_event.clone());
                rec.release_sources();
                self.change.job = Some(rec);
            }
            EventBody::RefundDue { job, refund, asset } => {
                let mut rec = self.load_job(job)?;
                let disposition = Disposition::Refund {
                    refund: refund.clone(),
                    asset: asset.clone(),
                };
                let input = self.release_held(
                    &mut rec,
                    Some(&disposition),
                    [JobInput::RefundDue, JobInput::RefundDue, JobInput::Credit],
                )?;
                transition(&mut rec, input)?;
                self.change.job = Some(rec);
            }
            EventBody::CreditGranted { job } => {
                let mut rec = self.load_job(job)?;
                let input = self.release_held(
                    &mut rec,
                    Some(&Disposition::Credit),
                    [JobInput::Credit, JobInput::RefundDue, JobInput::Credit],
                )?;
                transition(&mut rec, input)?;
                self.change.job = Some(rec);
            }
            EventBody::RefundDeferred { refund, reason } => self.refund_deferred(refund, reason)?,
            EventBody::RefundStarted {
                refund,
                attempt,
                route,
            } => self.refund_started(refund, *attempt, route)?,
            EventBody::RefundSettled {
                refund,
                fee,
                fee_paid_by,
                evidence,
                cause,
            } => self.refund_settled(
                refund,
                *fee,
                *fee_paid_by,
                evidence.as_deref(),
                cause.as_ref(),
            )?,
            EventBody::RefundOutcomeUnknown { refund, reason } => {
                self.refund_outcome_unknown(refund, reason)?
            }
            EventBody::RefundFailed {
                refund,
                reason,
                cause,
            } => self.refund_failed(refund, reason, cause.as_ref())?,
            EventBody::RefundRerouted {
                refund,
                asset,
                cause,
            } => self.refund_rerouted(refund, asset, cause)?,
            EventBody::RefundRetried { refund, cause } => self.refund_retried(refund, cause)?,
            EventBody::RefundZapReceipt { refund, receipt } => {
                self.refund_zap_receipt(refund, receipt)?
            }
            EventBody::RefundWrittenOff { refund, to, cause } => {
                self.refund_written_off(refund, *to, cause)?
            }
            EventBody::FloatAdded {
                asset,
                amount,
                cause,
            } => self.float_added(asset, *amount, cause)?,
            EventBody::CreditAdjusted {
                customer,
                direction,
                amount,
                cause,
            } => self.credit_adjusted(customer, *direction, *amount, cause)?,
            EventBody::EntitlementGranted {
                subscription,
                subscriber,
                tier,
                period_start,
                period_end,
                quota,
                price,
            } => {
                check_text("tier", tier)?;
                self.grant_entitlement(
                    subscription,
                    subscriber,
                    tier,
                    (*period_start, *period_end),
                    *quota,
                    *price,
                )?;
            }
            EventBody::SubscriptionQuoted {
                subscription,
                subscriber,
                tier,
                price,
                period_ms,
                quota,
                options: _,
                expires_at: _,
            } => {
                check_text("tier", tier)?;
                self.quote_subscription(
                    subscription,
                    subscriber,
                    tier,
                    *price,
                    *period_ms,
                    *quota,
                )?;
            }
            EventBody::SubscriptionCancelled {
                subscription,
                request: _,
            } => self.cancel_subscription(subscription)?,
            EventBody::SubscriptionRefundDue {
                subscription,
                refund,
                amount,
                asset,
                from,
            } => self.subscription_refund_due(subscription, refund, *amount, asset, *from)?,
            EventBody::EntitlementUnitReturned { subscription, job } => {
                self.return_unit(subscription, job)?
            }
            EventBody::SubscriptionRenewalQuoted {
                subscription,
                after,
                price,
                ..
            } => self.quote_renewal(subscription, *after, *price)?,
            EventBody::EntitlementExpired { subscription } => {
                let mut s = self
                    .state
                    .subscriptions
                    .get(subscription)
                    .cloned()
                    .ok_or_else(|| TransitionError::UnknownSubscription(subscription.clone()))?;
                let refuse = |reason| TransitionError::EntitlementRefused {
                    subscription: subscription.clone(),
                    reason,
                };
                if s.state != EntitlementState::Active {
                    return Err(refuse("already expired"));
                }
                if self.at < s.period_end {
                    return Err(refuse("the period has not ended"));
                }
                s.state = EntitlementState::Expired;
                self.change.subscription = Some(s);
            }
            // `subscription` is only indexed (refs): a refused 7001 has no record, and the notice
            // refusing it is still found by the 7001's id.
            EventBody::EffectRequested {
                effect,
                job,
                action,
                payload,
                subscription: _,
            } => {
                if payload.len() > MAX_PAYLOAD_LEN {
                    return Err(TransitionError::TooLong {
                        field: "payload",
                        max: MAX_PAYLOAD_LEN,
                    });
                }
                if self.state.effects.contains_key(effect) {
                    return Err(TransitionError::EffectExists(effect.clone()));
                }
                if let Some(job) = job {
                    self.load_job(job)?;
                }
                self.change.subject_job = job.clone();
                self.change.effect = Some(EffectRecord {
                    effect: effect.clone(),
                    job: job.clone(),
                    action: *action,
                    payload: payload.clone(),
                    requested_seq: seq,
                    outcome: None,
                });
            }
            EventBody::EffectDone { effect, outcome } => {
                let detail = match outcome {
                    crate::event::EffectOutcome::Delivered { detail } => detail,
                    crate::event::EffectOutcome::Abandoned { reason } => reason,
                };
                check_text("outcome", detail)?;
                let mut e = self
                    .state
                    .effects
                    .get(effect)
                    .cloned()
                    .ok_or_else(|| TransitionError::UnknownEffect(effect.clone()))?;
                if e.outcome.is_some() {
                    return Err(TransitionError::EffectAlreadyDone(effect.clone()));
                }
                e.outcome = Some(outcome.clone());
                self.change.subject_job = e.job.clone();
                self.change.effect = Some(e);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Change, TransitionError> {
        for (account, balance) in &self.change.balances {
            if account.is_held() && balance.held().is_none() {
                return Err(TransitionError::NegativeHeld {
                    account: account.to_string(),
                });
            }
            // `post` refuses the posting that would do it; this guards every other path.
            if account.is_asset() && balance.owned().is_none() {
                return Err(TransitionError::AssetShort {
                    account: account.to_string(),
                    has: Msat::ZERO,
                    needs: balance.credits.checked_sub(balance.debits)?,
                });
            }
        }
        if self.change.subject_job.is_none() {
            self.change.subject_job = self.change.job.as_ref().map(|j| j.job.clone());
        }
        Ok(self.change)
    }

    fn load_job(&mut self, job: &JobId) -> Result<JobRecord, TransitionError> {
        let rec = match &self.change.job {
            Some(rec) if &rec.job == job => rec.clone(),
            _ => self
                .state
                .jobs
                .get(job)
                .cloned()
                .ok_or_else(|| TransitionError::UnknownJob(job.clone()))?,
        };
        self.change.subject_job = Some(job.clone());
        Ok(rec)
    }

    fn load_refund(&self, refund: &RefundId) -> Result<RefundRecord, TransitionError> {
        self.state
            .refunds
            .get(refund)
            .cloned()
            .ok_or_else(|| TransitionError::UnknownRefund(refund.clone()))
    }

    fn balance(&self, account: &Account) -> Balance {
        self.change
            .balances
            .iter()
            .find(|(a, _)| a == account)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| self.state.balance(account))
    }

    fn held(&self, account: &Account) -> Msat {
        self.balance(account).held().unwrap_or(Msat::ZERO)
    }

    fn set_balance(&mut self, account: Account, balance: Balance) {
        match self.change.balances.iter_mut().find(|(a, _)| *a == account) {
            Some((_, b)) => *b = balance,
            None => self.change.balances.push((account, balance)),
        }
    }

    /// Move `amount` into `debit` from `credit`. Zero amounts post nothing.
    fn post(
        &mut self,
        debit: Account,
        credit: Account,
        amount: Msat,
    ) -> Result<(), TransitionError> {
        if amount.is_zero() {
            return Ok(());
        }
        let d = self.balance(&debit).with_debit(amount)?;
        let c = self.balance(&credit).with_credit(amount)?;
        // A wallet cannot pay out money the ledger never saw come in.
        if credit.is_asset() && c.owned().is_none() {
            return Err(TransitionError::AssetShort {
                account: credit.to_string(),
                has: self.balance(&credit).owned().unwrap_or(Msat::ZERO),
                needs: amount,
            });
        }
        if d.debits.as_msat() > MAX_TOTAL || c.credits.as_msat() > MAX_TOTAL {
            let account = if d.debits.as_msat() > MAX_TOTAL {
                &debit
            } else {
                &credit
            };
            return Err(TransitionError::TotalTooLarge {
                account: account.to_string(),
            });
        }
        self.set_balance(debit.clone(), d);
        self.set_balance(credit.clone(), c);
        self.change.postings.push(Posting {
            debit,
            credit,
            amount,
        });
        Ok(())
    }

    fn new_refund(
        &mut self,
        refund: &RefundId,
        job: &JobRecord,
        amount: Msat,
        asset: Option<Asset>,
    ) -> Result<(), TransitionError> {
        if self.state.refunds.contains_key(refund) || self.change.refund.is_some() {
            return Err(TransitionError::RefundExists(refund.clone()));
        }
        self.change.refund = Some(RefundRecord::due(
            refund,
            Some(job.job.clone()),
            &job.customer,
            amount,
            asset,
        ));
        Ok(())
    }

    /// The asset a new refund is paid from. A payment's money is paid back from the payment's
    /// asset; a job's held money from the job's rule, checked against what the event names. An
    /// event that names no asset for held money (written by an older node) leaves it open.
    fn refund_asset(
        rec: &JobRecord,
        refund: &RefundId,
        source: RefundSource<'_>,
        named: Option<&Asset>,
    ) -> Result<Option<Asset>, TransitionError> {
        let expected = match (source, named) {
            (RefundSource::Payment(asset), _) => asset.clone(),
            (RefundSource::Held, None) => return Ok(None),
            (RefundSource::Held, Some(_)) => rec.refund_asset()?,
        };
        match named {
            Some(got) if *got != expected => Err(TransitionError::RefundAssetMismatch {
                refund: refund.clone(),
                expected,
                got: got.clone(),
            }),
            _ => Ok(Some(expected)),
        }
    }

    /// Book `amount` of job-related money (coming from `from`, originally from `source`) per
    /// `disposition`.
    fn dispose(
        &mut self,
        rec: &mut JobRecord,
        (from, source): (Account, RefundSource<'_>),
        amount: Msat,
        disposition: &Disposition,
    ) -> Result<(), TransitionError> {
        match disposition {
            Disposition::Refund { refund, asset } => {
                let asset = Self::refund_asset(rec, refund, source, asset.as_ref())?;
                self.new_refund(refund, rec, amount, asset)?;
                rec.refunded_total = rec.refunded_total.checked_add(amount)?;
                self.post(from, Account::Refund(refund.clone()), amount)
            }
            Disposition::Credit => self.post(from, Account::Credit(rec.customer.clone()), amount),
        }
    }

    /// Everything the job holds goes per `disposition`; returns which of `[none, refund, credit]`
    /// inputs applies. Holding money without a disposition, or a disposition with nothing held,
    /// is refused.
    fn release_held(
        &mut self,
        rec: &mut JobRecord,
        disposition: Option<&Disposition>,
        inputs: [JobInput; 3],
    ) -> Result<JobInput, TransitionError> {
        if inputs.iter().all(|i| next_state(rec.state, *i).is_none()) {
            return Err(invalid(rec, inputs[0]));
        }
        let account = Account::Job(rec.job.clone());
        let held = self.held(&account);
        let input = match (held.is_zero(), disposition) {
            (true, None) => return Ok(inputs[0]),
            (true, Some(_)) => {
                return Err(TransitionError::NothingHeld {
                    job: rec.job.clone(),
                })
            }
            (false, None) => {
                return Err(TransitionError::HeldNeedsDisposition {
                    job: rec.job.clone(),
                    held,
                })
            }
            (false, Some(Disposition::Refund { refund, .. })) => {
                rec.refund = Some(refund.clone());
                inputs[1]
            }
            (false, Some(Disposition::Credit)) => inputs[2],
        };
        // Check the transition before booking, so the error names the state, not the money.
        if next_state(rec.state, input).is_none() {
            return Err(invalid(rec, input));
        }
        let disposition = disposition.expect("matched Some above");
        self.dispose(rec, (account, RefundSource::Held), held, disposition)?;
        rec.applied = Msat::ZERO;
        rec.release_sources();
        Ok(input)
    }

    fn payment(&mut self, payment: &Payment) -> Result<(), TransitionError> {
        if payment.amount.is_zero() {
            return Err(TransitionError::ZeroAmount);
        }
        check_amount("payment", payment.amount)?;
        if payment.fee > payment.amount {
            return Err(TransitionError::FeeExceedsPayment {
                fee: payment.fee,
                amount: payment.amount,
            });
        }
        if payment.linked.len() > MAX_LINKED_REFS {
            return Err(TransitionError::TooMany {
                field: "linked",
                max: MAX_LINKED_REFS,
            });
        }
        for r in std::iter::once(&payment.reference).chain(&payment.linked) {
            if self.state.payment_refs.contains_key(r) {
                return Err(TransitionError::DuplicatePaymentRef(r.clone()));
            }
            if self.change.payment_refs.contains(r) {
                return Err(TransitionError::RepeatedRefInPayment(r.clone()));
            }
            self.change.payment_refs.push(r.clone());
        }
        let asset = Account::Asset(payment.asset.clone());
        let fee_paid_from = asset.clone();
        match &payment.target {
            PaymentTarget::Job { job, booking } => {
                let mut rec = self.load_job(job)?;
                rec.funded_total = rec.funded_total.checked_add(payment.amount)?;
                match booking {
                    JobPayment::Whole(disposition) => {
                        let from = (asset, RefundSource::Payment(&payment.asset));
                        self.dispose(&mut rec, from, payment.amount, disposition)?;
                    }
                    JobPayment::Apply { excess } => {
                        let excess = excess.as_ref();
                        self.apply_payment(&mut rec, &payment.asset, payment.amount, excess)?;
                    }
                }
                self.change.job = Some(rec);
            }
            PaymentTarget::Credit { pubkey } => {
                self.post(asset, Account::Credit(pubkey.clone()), payment.amount)?;
            }
            PaymentTarget::Subscription { subscription } => {
                self.subscription_paid(subscription, &payment.asset);
                self.post(
                    asset,
                    Account::Subscription(subscription.clone()),
                    payment.amount,
                )?;
            }
            PaymentTarget::Unmatched { reason } => {
                check_text("reason", reason)?;
                self.post(asset, Account::Unmatched, payment.amount)?;
            }
        }
        // The target is owed the face value; the fee is our cost of taking the money.
        self.post(Account::Fees, fee_paid_from, payment.fee)?;
        Ok(())
    }

    fn apply_payment(
        &mut self,
        rec: &mut JobRecord,
        paid_in: &Asset,
        amount: Msat,
        excess_disposition: Option<&Disposition>,
    ) -> Result<(), TransitionError> {
        let asset = Account::Asset(paid_in.clone());
        let price = match (rec.state, rec.price) {
            (JobState::Quoted | JobState::PartiallyPaid | JobState::Expired, Some(p)) => p,
            _ => return Err(invalid(rec, JobInput::PayPartial)),
        };
        let remaining = price.checked_sub(rec.applied)?;
        let applied_now = amount.min(remaining);
        let excess = amount.checked_sub(applied_now)?;
        match (excess.is_zero(), excess_disposition) {
            (true, Some(_)) => {
                return Err(TransitionError::NoExcess {
                    job: rec.job.clone(),
                })
            }
            (false, None) => {
                return Err(TransitionError::UnhandledExcess {
                    job: rec.job.clone(),
                    remaining,
                    excess,
                })
            }
            (true, None) => {}
            (false, Some(d)) => {
                let from = (asset.clone(), RefundSource::Payment(paid_in));
                self.dispose(rec, from, excess, d)?
            }
        }
        self.post(asset, Account::Job(rec.job.clone()), applied_now)?;
        rec.applied = rec.applied.checked_add(applied_now)?;
        rec.hold_asset(paid_in, applied_now)?;
        let input = if rec.applied == price {
            JobInput::PayComplete
        } else {
            JobInput::PayPartial
        };
        transition(rec, input)
    }

    fn debit_credit(&mut self, rec: &mut JobRecord, amount: Msat) -> Result<(), TransitionError> {
        if amount.is_zero() {
            return Err(TransitionError::ZeroAmount);
        }
        check_amount("credit debit", amount)?;
        let credit = Account::Credit(rec.customer.clone());
        let available = self.held(&credit);
        if available < amount {
            return Err(TransitionError::InsufficientCredit {
                available,
                needed: amount,
            });
        }
        self.post(credit, Account::Job(rec.job.clone()), amount)?;
        rec.hold_credit(amount)?;
        rec.funded_total = rec.funded_total.checked_add(amount)?;
        rec.applied = amount;
        rec.price = Some(amount);
        Ok(())
    }

    fn use_entitlement(
        &mut self,
        rec: &JobRecord,
        subscription: &SubscriptionId,
    ) -> Result<(), TransitionError> {
        let mut s = self
            .state
            .subscriptions
            .get(subscription)
            .cloned()
            .ok_or_else(|| TransitionError::UnknownSubscription(subscription.clone()))?;
        let refuse = |reason| TransitionError::EntitlementRefused {
            subscription: subscription.clone(),
            reason,
        };
        if s.state != EntitlementState::Active {
            return Err(refuse("entitlement expired"));
        }
        if s.subscriber != rec.customer {
            return Err(refuse("the job's customer is not the subscriber"));
        }
        if self.at < s.period_start || self.at >= s.period_end {
            return Err(refuse("outside the paid period"));
        }
        if s.used >= s.quota {
            return Err(refuse("quota used up"));
        }
        s.used += 1;
        self.change.subscription = Some(s);
        Ok(())
    }

    fn grant_entitlement(
        &mut self,
        subscription: &SubscriptionId,
        subscriber: &Pubkey,
        tier: &str,
        (period_start, period_end): (UnixMs, UnixMs),
        quota: u32,
        price: Msat,
    ) -> Result<(), TransitionError> {
        let refuse = |reason| TransitionError::EntitlementRefused {
            subscription: subscription.clone(),
            reason,
        };
        if period_end <= period_start {
            return Err(refuse("the period ends before it starts"));
        }
        if quota == 0 {
            return Err(refuse("quota must be positive"));
        }
        check_amount("price", price)?;
        let previous = self.state.subscriptions.get(subscription);
        if previous.is_some_and(|p| p.cancelled_at.is_some()) {
            return Err(refuse("cancelled by the subscriber"));
        }
        if let Some(existing) = previous {
            if &existing.subscriber != subscriber {
                return Err(refuse("belongs to another subscriber"));
            }
            if period_start < existing.period_end {
                return Err(refuse("overlaps the current period"));
            }
        }
        let account = Account::Subscription(subscription.clone());
        let available = self.held(&account);
        if available < price {
            return Err(TransitionError::InsufficientSubscriptionFunds {
                subscription: subscription.clone(),
                available,
                price,
            });
        }
        self.post(account, Account::Revenue, price)?;
        let paid_in = previous.and_then(|p| p.paid_in.clone());
        self.change.subscription = Some(SubscriptionRecord {
            subscription: subscription.clone(),
            subscriber: subscriber.clone(),
            tier: tier.to_string(),
            period_start,
            period_end,
            quota,
            used: 0,
            state: EntitlementState::Active,
            price,
            period_ms: period_end.0 - period_start.0,
            cancelled_at: None,
            paid_in,
            unused_refunded: false,
            renewal_quoted: previous.and_then(|p| p.renewal_quoted),
        });
        Ok(())
    }

    /// A subscribe request quoted: the subscription exists, unpaid, until a payment funds it.
    fn quote_subscription(
        &mut self,
        subscription: &SubscriptionId,
        subscriber: &Pubkey,
        tier: &str,
        price: Msat,
        period_ms: u64,
        quota: u32,
    ) -> Result<(), TransitionError> {
        let refuse = |reason| TransitionError::EntitlementRefused {
            subscription: subscription.clone(),
            reason,
        };
        if self.state.subscriptions.contains_key(subscription) {
            return Err(refuse("already quoted"));
        }
        if period_ms == 0 || quota == 0 || price.is_zero() {
            return Err(refuse("a period, a quota and a price are required"));
        }
        check_amount("price", price)?;
        self.change.subscription = Some(SubscriptionRecord {
            subscription: subscription.clone(),
            subscriber: subscriber.clone(),
            tier: tier.to_string(),
            // No period yet: the first grant may start at any time.
            period_start: UnixMs(0),
            period_end: UnixMs(0),
            quota,
            used: 0,
            state: EntitlementState::Quoted,
            price,
            period_ms,
            cancelled_at: None,
            paid_in: None,
            unused_refunded: false,
            renewal_quoted: None,
        });
        Ok(())
    }

    /// A job whose own refund this is follows the refund's progress.
    fn mirror_refund(&mut self, r: &RefundRecord, input: JobInput) -> Result<(), TransitionError> {
        let Some(job) = &r.job else { return Ok(()) };
        let mut rec = self.load_job(job)?;
        if rec.refund.as_ref() == Some(&r.refund) {
            transition(&mut rec, input)?;
            self.change.job = Some(rec);
        }
        Ok(())
    }
}

fn invalid(rec: &JobRecord, input: JobInput) -> TransitionError {
    TransitionError::InvalidTransition {
        job: rec.job.clone(),
        from: rec.state,
        input,
    }
}

fn transition(rec: &mut JobRecord, input: JobInput) -> Result<(), TransitionError> {
    rec.state = next_state(rec.state, input).ok_or_else(|| invalid(rec, input))?;
    Ok(())
}

fn expect_attempt(rec: &JobRecord, expected: u32, got: u32) -> Result<(), TransitionError> {
    if expected != got {
        return Err(TransitionError::AttemptMismatch {
            job: rec.job.clone(),
            expected,
            got,
        });
    }
    Ok(())
}

fn refund_refused(r: &RefundRecord, action: &'static str) -> TransitionError {
    TransitionError::InvalidRefundTransition {
        refund: r.refund.clone(),
        state: r.state,
        action,
    }
}
