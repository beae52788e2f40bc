//! Which ledger records a decision may read that can have left memory. A store keeping only open
//! work (`Retention::OpenWork`) drops a job, refund or effect once it ended; the shell recalls
//! what this module names before it decides, so that every decision reads the same state as
//! with the whole history in memory. Scans over the state (open quotes, open refunds) need no
//! recall: what they look for has not ended. Subscriptions stay in memory in every retention.
//!
//! The list must be complete: a record a decision reads that is not named here is seen as
//! absent. The simulator runs on a store keeping only open work and checks its decisions.

use paydvm_ledger::{EffectId, JobId, LedgerState, PaymentRef, Recall, RefundId, UnixMs};

use super::memory::Memory;
use super::{keys, Input};
use crate::operator::OperatorAction;

/// The records deciding `input` at `now` may read.
pub(super) fn names(state: &LedgerState, m: &Memory, now: UnixMs, input: &Input) -> Recall {
    let mut names = Recall::default();
    match input {
        Input::RequestArrived(request) => names.jobs.push(request.job.clone()),
        Input::RequestUnparsable { job, .. }
        | Input::PaymentRefused { job, .. }
        | Input::InvoiceIssued { job, .. }
        | Input::ExecutorFinished { job, .. } => names.jobs.push(job.clone()),
        Input::CancellationArrived { targets, .. } => names.jobs.extend(targets.iter().cloned()),
        Input::PaymentVerified(payment) => {
            // The event it names is a request (a job) or one of our replies (an effect).
            if let Some(event) = &payment.names {
                names.jobs.extend(JobId::new(event.as_str()).ok());
                names.effects.extend(EffectId::new(event.as_str()).ok());
            }
            let refs = std::iter::once(&payment.reference).chain(&payment.linked);
            names
                .refs
                .extend(refs.filter_map(|r| PaymentRef::new(r.as_str()).ok()));
        }
        Input::RefundRouted { refund, .. }
        | Input::RefundDeferred { refund, .. }
        | Input::RefundOutcome { refund, .. }
        | Input::RefundZapReceipt(super::RefundZapReceipt { refund, .. }) => {
            names.refunds.push(refund.clone())
        }
        Input::EffectDelivered { effect, .. } | Input::EffectGaveUp { effect } => {
            names.effects.push(effect.clone())
        }
        Input::ClockTicked => ticked(state, m, now, &mut names),
        Input::Written => {}
        Input::Restarted { requests, .. } => {
            names.jobs.extend(requests.iter().map(|r| r.job.clone()))
        }
        Input::OperatorAsked(request) => operator(&request.action, &mut names),
        // Subscriptions never leave memory.
        Input::SubscribeArrived(_)
        | Input::SubscriptionInvoiceIssued { .. }
        | Input::UnsubscribeArrived(_) => {}
    }
    names
}

/// A tick expires quotes (a reopened job's earlier expiry refund decides the new refund's name)
/// and lets go of requests (an expired job's request is kept through the late-payment grace).
fn ticked(state: &LedgerState, m: &Memory, now: UnixMs, names: &mut Recall) {
    let due = state.quotes_due(now);
    names
        .refunds
        .extend(due.filter_map(|j| keys::job_refund(&j.job, "expiry").ok()));
    names.jobs.extend(
        m.requests
            .keys()
            .filter(|j| state.job(j).is_none())
            .cloned(),
    );
}

fn operator(action: &OperatorAction, names: &mut Recall) {
    if let Some(refund) = action.refund() {
        names.refunds.extend(RefundId::new(refund).ok());
    }
}
