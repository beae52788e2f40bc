//! Which records an event reads or creates, known from the event alone.
//!
//! A store that keeps only open work in memory (see `residency`) loads these records before it
//! plans the event, so `LedgerState::plan` stays pure and answers as if the whole history were in
//! memory. The one record an event can reach only through another (the job of a refund, for a
//! refund event) is named by the store after it loaded the refund.
//!
//! The list must be complete: a record the planner looks at that is not listed here would be seen
//! as absent. The conformance suite checks payments, refund and effect events and new jobs against
//! records that left memory; the model test runs every kind of event through a bounded store.

use crate::event::{Disposition, EventBody, JobPayment, PaymentTarget};
use crate::ids::{EffectId, JobId, PaymentRef, RefundId};

/// Whether the event needs the record to exist, or creates it (and is refused if it exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Load,
    Create,
}

/// The records one event names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Footprint<'a> {
    pub jobs: Vec<(&'a JobId, Use)>,
    /// Refunds by id. For a loaded refund, its job is read too (`mirror_refund`).
    pub refunds: Vec<(&'a RefundId, Use)>,
    pub effects: Vec<(&'a EffectId, Use)>,
    /// Payment references (and linked ones) that must not have been credited before.
    pub payment_refs: Vec<&'a PaymentRef>,
}

impl<'a> Footprint<'a> {
    fn job(&mut self, job: &'a JobId) {
        self.jobs.push((job, Use::Load));
    }

    fn new_refund(&mut self, disposition: Option<&'a Disposition>) {
        if let Some(Disposition::Refund { refund, .. }) = disposition {
            self.refunds.push((refund, Use::Create));
        }
    }
}

/// Everything `body` reads or creates, besides the accounts of those records and the
/// accounts every store keeps in memory (assets, credit, subscriptions, system accounts).
pub fn footprint(body: &EventBody) -> Footprint<'_> {
    let mut f = Footprint::default();
    match body {
        EventBody::JobReceived { job, .. } => f.jobs.push((job, Use::Create)),
        EventBody::JobRejected { job, .. }
        | EventBody::QuoteIssued { job, .. }
        | EventBody::JobQueued { job, .. }
        | EventBody::ProcessingStarted { job, .. }
        | EventBody::ProcessingFailed { job, .. }
        | EventBody::JobClosed { job, .. }
        | EventBody::ResultPublished { job, .. }
        | EventBody::CreditGranted { job } => f.job(job),
        EventBody::QuoteExpired { job, held } | EventBody::JobCancelled { job, held, .. } => {
            f.job(job);
            f.new_refund(held.as_ref());
        }
        EventBody::RefundDue { job, refund, .. } => {
            f.job(job);
            f.refunds.push((refund, Use::Create));
        }
        EventBody::PaymentReceived(p) => {
            f.payment_refs.push(&p.reference);
            f.payment_refs.extend(&p.linked);
            if let PaymentTarget::Job { job, booking } = &p.target {
                f.job(job);
                f.new_refund(match booking {
                    JobPayment::Whole(d) => Some(d),
                    JobPayment::Apply { excess } => excess.as_ref(),
                });
            }
        }
        EventBody::RefundDeferred { refund, .. }
        | EventBody::RefundStarted { refund, .. }
        | EventBody::RefundSettled { refund, .. }
        | EventBody::RefundOutcomeUnknown { refund, .. }
        | EventBody::RefundFailed { refund, .. }
        | EventBody::RefundRerouted { refund, .. }
        | EventBody::RefundRetried { refund, .. }
        | EventBody::RefundWrittenOff { refund, .. }
        | EventBody::RefundZapReceipt { refund, .. } => f.refunds.push((refund, Use::Load)),
        EventBody::EffectRequested { effect, job, .. } => {
            f.effects.push((effect, Use::Create));
            if let Some(job) = job {
                f.job(job);
            }
        }
        EventBody::EffectDone { effect, .. } => f.effects.push((effect, Use::Load)),
        EventBody::FloatAdded { .. }
        | EventBody::CreditAdjusted { .. }
        | EventBody::EntitlementGranted { .. }
        | EventBody::EntitlementExpired { .. }
        // Subscriptions stay in memory (they are open work while they can be paid or used).
        | EventBody::SubscriptionQuoted { .. }
        | EventBody::SubscriptionCancelled { .. }
        | EventBody::SubscriptionRenewalQuoted { .. } => {}
        EventBody::SubscriptionRefundDue { refund, .. } => f.refunds.push((refund, Use::Create)),
        EventBody::EntitlementUnitReturned { job, .. } => f.job(job),
    }
    f
}
