//! Start-up: the open work of the previous run resumed from the ledger. Undelivered effects are
//! handed to the outbox again (the stored signed event, never re-signed); jobs that may still
//! run pick up where they stood; open refunds are looked up or routed.

use paydvm_ledger::{Asset, EffectAction, JobState, RefundId};

use super::memory::Memory;
use super::{refunds, request, Action, Ctx, Decided, Decision, JobRequest};

pub(super) fn restarted(
    ctx: &Ctx,
    m: &mut Memory,
    requests: Vec<JobRequest>,
    legacy_sources: Vec<(RefundId, Option<Asset>)>,
) -> Decided {
    m.legacy_sources.extend(legacy_sources);
    let mut decision = Decision::actions(undelivered(ctx));
    for request in requests {
        let Some(record) = ctx.ledger.job(&request.job).cloned() else {
            continue;
        };
        // A job that only owes a refund is not resumed, but where its refund goes is kept.
        if let Some(to) = &request.refund_to {
            m.refund_to.insert(request.job.clone(), to.clone());
        }
        decision.extend(request::seen_again(ctx, m, record, request)?);
    }
    decision.extend(refunds::drive(ctx, m)?);
    Ok(decision)
}

/// Every effect still waiting for its delivery.
fn undelivered(ctx: &Ctx) -> Vec<Action> {
    let mut effects: Vec<_> = ctx
        .ledger
        .effects()
        .filter(|e| e.outcome.is_none() && e.action == EffectAction::Publish)
        .map(|e| (e.requested_seq, e.effect.clone()))
        .collect();
    effects.sort();
    effects
        .into_iter()
        .map(|(_, e)| Action::Resend(e))
        .collect()
}

/// Whether a job in `state` needs its request after a restart (it may still run or be quoted).
pub fn needs_request_after_restart(state: JobState) -> bool {
    matches!(
        state,
        JobState::Queued
            | JobState::Processing
            | JobState::Quoted
            | JobState::PartiallyPaid
            | JobState::Expired
            // Received only: its invoice was being made when the node stopped.
            | JobState::Received
    )
}
