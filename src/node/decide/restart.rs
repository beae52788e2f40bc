//! Start-up: the open work of the previous run resumed from the ledger. Undelivered effects are
//! handed to the outbox again (the stored signed event, never re-signed); jobs that may still
//! run pick up where they stood; open refunds are looked up or routed.

use paydvm_ledger::{Asset, RefundId};

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
        decision.extend(request::seen_again(ctx, m, record, request)?);
    }
    decision.extend(refunds::drive(ctx, m)?);
    Ok(decision)
}

/// Every effect still waiting for its delivery.
fn undelivered(ctx: &Ctx) -> Vec<Action> {
    ctx.ledger
        .effects()
        .filter(|e| e.outcome.is_none() && e.action == "publish")
        .map(|e| Action::Resend(e.effect.clone()))
        .collect()
}
