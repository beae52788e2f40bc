//! Refunds: which open refund to route, pay or look up, and what a desk's answer means for the
//! ledger. The order that makes a refund safe: the exact payment is recorded (`refund_started`,
//! with the asset it leaves from and the fee it may cost reserved) and on disk before a desk
//! may pay it; an unknown outcome is recorded and only looked up from then on. The asset is the
//! one the ledger named when the refund was made; a refund that asset cannot cover waits, with
//! the numbers and what the operator can do.

use paydvm_ledger::{
    Asset, Cause, EventBody, FeePayer, JobState, LedgerEvent, Msat, RefundId, RefundRecord,
    RefundRoute, RefundState, UnixMs, WriteOffTo,
};

use super::memory::{Memory, RefundTask};
use super::{
    keys, Action, Ctx, DecideError, Decided, Decision, Group, RefundRouteOrder, RefundZapReceipt,
    ReplyKind,
};

/// Attempts (explicitly failed payments) before a refund waits for the operator, counted from
/// the operator's last `refund retry`.
pub const MAX_REFUND_ATTEMPTS: u32 = 5;
/// Waits before routing a deferred or failed refund again: doubles from the first to the last.
const RETRY_FIRST_MS: u64 = 5_000;
const RETRY_MAX_MS: u64 = 600_000;
/// Outside text (backend reasons, evidence) kept in the ledger, at most.
const MAX_OUTSIDE_TEXT: usize = 200;

/// What a desk reports about one refund payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    /// Paid, with what proves it (a preimage, the hand-over event, a claimed token) and who bore
    /// the payout fee.
    Paid {
        fee: Msat,
        fee_paid_by: FeePayer,
        evidence: String,
    },
    /// The rail said explicitly that nothing was paid; a new attempt may follow.
    Failed(String),
    /// Anything else: stays pending, looked up again.
    Unknown(String),
}

/// Starts what each open refund needs next (after every write, and on every tick).
pub(super) fn drive(ctx: &Ctx, m: &mut Memory) -> Decided {
    let mut open: Vec<RefundRecord> = ctx
        .ledger
        .refunds()
        .filter(|r| !r.state.is_closed())
        .cloned()
        .collect();
    // In id order: the same state and time give the same decision, whatever the map order.
    open.sort_by(|a, b| a.refund.cmp(&b.refund));
    let open_ids: std::collections::HashSet<&RefundId> = open.iter().map(|r| &r.refund).collect();
    m.refund_tasks.retain(|id, _| open_ids.contains(id));
    let mut decision = Decision::default();
    for record in open {
        let task = m.refund_tasks.get(&record.refund).copied();
        let step = match (record.state, task) {
            (RefundState::InFlight | RefundState::Unknown, None) => look_up(m, &record),
            (
                RefundState::InFlight | RefundState::Unknown,
                Some(RefundTask::LookUpAt { at, .. }),
            ) if at <= ctx.now => look_up(m, &record),
            (RefundState::Due | RefundState::Failed, None) => route(ctx, m, &record, 0)?,
            (RefundState::Due | RefundState::Failed, Some(RefundTask::RetryAt { at, tries }))
                if at <= ctx.now =>
            {
                route(ctx, m, &record, tries)?
            }
            _ => Decision::default(),
        };
        decision.extend(step);
    }
    Ok(decision)
}

/// Asks the rail what became of a recorded payment: a Lightning look-up by payment hash; for
/// ecash, running the attempt again (its token is made once).
fn look_up(m: &mut Memory, record: &RefundRecord) -> Decision {
    let Some(route) = &record.route else {
        return Decision::default();
    };
    m.refund_tasks
        .insert(record.refund.clone(), RefundTask::LookingUp);
    Decision::actions(vec![Action::LookUpRefund {
        refund: record.refund.clone(),
        attempt: record.attempts,
        route: route.clone(),
    }])
}

fn route(ctx: &Ctx, m: &mut Memory, record: &RefundRecord, tries: u32) -> Decided {
    let refund = &record.refund;
    if record.attempts.saturating_sub(record.retry_base) >= MAX_REFUND_ATTEMPTS {
        m.refund_tasks.insert(refund.clone(), RefundTask::Parked);
        let reason = format!(
            "{MAX_REFUND_ATTEMPTS} payment attempts failed; waiting for the operator \
             (paydvm refund retry|reroute|write-off {refund})"
        );
        return defer(ctx, record, &reason);
    }
    let asset = match source(m, record) {
        Source::Asset(asset) => asset,
        Source::Credit => return credit_back(ctx, record),
        Source::Unknown => {
            m.refund_tasks.insert(refund.clone(), RefundTask::Parked);
            let reason = "written by an older node without its asset; re-route it (paydvm \
                          refund reroute) or write it off";
            return defer(ctx, record, reason);
        }
    };
    if let Some(short) = shortfall(ctx, record, &asset, Msat::ZERO) {
        m.refund_tasks
            .insert(refund.clone(), RefundTask::Routing { tries });
        return deferred_record(ctx, m, record, &short);
    }
    let order = match (&asset, ctx.rails.lightning_refunds, ctx.rails.ecash_refunds) {
        (Asset::Lightning, Some(_), _) => RefundRouteOrder::Lightning {
            refund: refund.clone(),
            attempt: record.attempts.saturating_add(1),
            amount: record.amount,
            customer: record.customer.clone(),
            refund_to: record
                .job
                .as_ref()
                .and_then(|j| m.refund_to.get(j).cloned()),
        },
        (Asset::Mint { url }, _, true) => RefundRouteOrder::Ecash {
            refund: refund.clone(),
            attempt: record.attempts.saturating_add(1),
            amount: record.amount,
            customer: record.customer.clone(),
            mint: url.clone(),
        },
        (asset, ..) => {
            m.refund_tasks.insert(refund.clone(), RefundTask::Parked);
            let reason = format!("paid from {asset} but that rail is off in this node");
            return defer(ctx, record, &reason);
        }
    };
    m.refund_tasks
        .insert(refund.clone(), RefundTask::Routing { tries });
    Ok(Decision::actions(vec![Action::RouteRefund(order)]))
}

/// Where a refund's money is.
enum Source {
    Asset(Asset),
    /// Prepaid credit: it goes back as credit.
    Credit,
    /// A refund written by an older node that start-up could not place.
    Unknown,
}

/// The asset a refund is paid from: the one the ledger recorded with it. Refunds written by
/// older nodes carry none; the shell worked theirs out from the job's payments at start-up.
fn source(m: &Memory, record: &RefundRecord) -> Source {
    match (&record.asset, m.legacy_sources.get(&record.refund)) {
        (Some(asset), _) => Source::Asset(asset.clone()),
        (None, Some(Some(asset))) => Source::Asset(asset.clone()),
        (None, Some(None)) => Source::Credit,
        (None, None) => Source::Unknown,
    }
}

/// Why the asset's account cannot pay the refund now (with `fee` reserved besides the
/// Lightning fee cap), if it cannot: the ledger will not let a refund start on money it does
/// not hold.
fn shortfall(ctx: &Ctx, record: &RefundRecord, asset: &Asset, fee: Msat) -> Option<String> {
    let cap = match asset {
        Asset::Lightning => ctx.rails.lightning_refunds.unwrap_or(Msat::ZERO),
        Asset::Mint { .. } => fee,
    };
    let needs = record.amount.checked_add(cap).ok()?;
    let available = ctx.ledger.available(asset);
    (available < needs).then(|| {
        format!(
            "asset:{asset} has {available} available; this refund needs {needs} \
             ({} plus a fee allowance of {cap}). Add float (paydvm float add {asset} <msat>), \
             re-route or write off the refund (paydvm refund reroute|write-off {})",
            record.amount, record.refund
        )
    })
}

/// A refund of prepaid credit (written by an older node) goes back as credit.
fn credit_back(ctx: &Ctx, record: &RefundRecord) -> Decided {
    let event = LedgerEvent::new(
        keys::refund_credited_back(&record.refund)?,
        ctx.now,
        EventBody::RefundWrittenOff {
            refund: record.refund.clone(),
            to: WriteOffTo::Credit,
            cause: Cause::Node {
                note: "paid from prepaid credit: credited back".into(),
            },
        },
    );
    Ok(Decision::group(Group::new(vec![event])))
}

/// Records why a refund waits, once per distinct reason.
fn defer(ctx: &Ctx, record: &RefundRecord, reason: &str) -> Decided {
    if !record.state.can_start() || record.deferred.as_deref() == Some(reason) {
        return Ok(Decision::default());
    }
    let reason = bounded(reason, paydvm_ledger::MAX_TEXT_LEN);
    let event = LedgerEvent::new(
        keys::refund_deferred(&record.refund, record.attempts, &reason)?,
        ctx.now,
        EventBody::RefundDeferred {
            refund: record.refund.clone(),
            reason,
        },
    );
    Ok(Decision::group(Group::new(vec![event])))
}

/// A desk could not route the refund now: the reason is kept, and it is routed again later.
pub(super) fn deferred(ctx: &Ctx, m: &mut Memory, refund: &RefundId, reason: &str) -> Decided {
    match ctx.ledger.refund(refund) {
        Some(record) => deferred_record(ctx, m, &record.clone(), reason),
        None => Ok(Decision::default()),
    }
}

fn deferred_record(ctx: &Ctx, m: &mut Memory, record: &RefundRecord, reason: &str) -> Decided {
    if !record.state.can_start() {
        // Started meanwhile (by another node): nothing to route again.
        routing_over(m, &record.refund);
        return Ok(Decision::default());
    }
    let decision = defer(ctx, record, reason)?;
    retry_later(ctx, m, &record.refund);
    Ok(decision)
}

/// A desk answered the routing this node asked for: a `Routing` task is done. Left in place on
/// a refund another node started, it would keep this node from ever looking that attempt up
/// (`drive` acts on a refund only when no task is pending or its time has come).
fn routing_over(m: &mut Memory, refund: &RefundId) {
    if matches!(m.refund_tasks.get(refund), Some(RefundTask::Routing { .. })) {
        m.refund_tasks.remove(refund);
    }
}

/// A payout or look-up this node set going was answered after the refund stopped waiting for
/// that outcome (another node booked it first, or started a later attempt): the task is done,
/// or this node would never look up or route the refund again. A payout counts as answered only
/// when the refund no longer waits for any outcome (`payout_too`): a late answer about an
/// earlier attempt says nothing of the payout this node may be making now.
fn outcome_over(m: &mut Memory, refund: &RefundId, payout_too: bool) {
    let over = match m.refund_tasks.get(refund) {
        Some(RefundTask::LookingUp) => true,
        Some(RefundTask::Paying) => payout_too,
        _ => false,
    };
    if over {
        m.refund_tasks.remove(refund);
    }
}

fn retry_later(ctx: &Ctx, m: &mut Memory, refund: &RefundId) {
    let tries = match m.refund_tasks.get(refund) {
        Some(RefundTask::Routing { tries } | RefundTask::RetryAt { tries, .. }) => {
            tries.saturating_add(1)
        }
        _ => 1,
    };
    let at = back_off(ctx.now, tries);
    m.refund_tasks
        .insert(refund.clone(), RefundTask::RetryAt { at, tries });
}

fn back_off(now: UnixMs, tries: u32) -> UnixMs {
    let wait = RETRY_FIRST_MS
        .saturating_mul(1u64 << tries.saturating_sub(1).min(16))
        .min(RETRY_MAX_MS);
    UnixMs(now.0.saturating_add(wait))
}

/// A desk found a route (an invoice; a prepared ecash attempt): recorded, and paid once the
/// record is on disk. A route that came stale, names another asset than the refund's, or that
/// the asset cannot cover is released, and the reason kept.
pub(super) fn routed(
    ctx: &Ctx,
    m: &mut Memory,
    refund: &RefundId,
    attempt: u32,
    route: RefundRoute,
) -> Decided {
    let Some(record) = ctx.ledger.refund(refund).cloned() else {
        return Ok(Decision::default());
    };
    let abandon = |reason: &str| Action::AbandonRoute {
        route: route.clone(),
        reason: reason.to_owned(),
    };
    if !record.state.can_start() || record.attempts.saturating_add(1) != attempt {
        // The routing this node asked for is over: another node (on a shared database) started
        // the refund meanwhile, so what it waits for now is decided afresh from its state.
        routing_over(m, refund);
        return Ok(Decision::actions(vec![abandon(
            "the route came after the refund had moved on",
        )]));
    }
    let expected = match source(m, &record) {
        Source::Asset(asset) => Some(asset),
        _ => None,
    };
    if expected.is_some_and(|a| a != route.asset) {
        m.refund_tasks.remove(refund);
        return Ok(Decision::actions(vec![abandon(
            "the route is for another asset",
        )]));
    }
    let fee = match route.asset {
        Asset::Mint { .. } => route.fee_reserve,
        Asset::Lightning => Msat::ZERO,
    };
    if let Some(short) = shortfall(ctx, &record, &route.asset, fee) {
        let mut decision = deferred_record(ctx, m, &record, &short)?;
        decision
            .actions
            .push(abandon("the asset cannot cover the refund"));
        return Ok(decision);
    }
    let started = LedgerEvent::new(
        keys::refund_started(refund, attempt)?,
        ctx.now,
        EventBody::RefundStarted {
            refund: refund.clone(),
            attempt,
            route: route.clone(),
        },
    );
    m.refund_tasks.insert(refund.clone(), RefundTask::Paying);
    let group = Group::new(vec![started]).then(Action::PayRefund {
        refund: refund.clone(),
        attempt,
        route,
    });
    Ok(Decision::group(group))
}

/// What a desk said about a refund payment (after paying, or from a look-up).
pub(super) fn outcome(
    ctx: &Ctx,
    m: &mut Memory,
    refund: &RefundId,
    attempt: u32,
    status: RefundStatus,
) -> Decided {
    let Some(record) = ctx.ledger.refund(refund).cloned() else {
        return Ok(Decision::default());
    };
    if !record.state.can_resolve() {
        outcome_over(m, refund, true);
        return Ok(Decision::default());
    }
    if record.attempts != attempt {
        // About an earlier attempt: the current one is looked up afresh if this node was
        // looking (at worst a second look-up of it, whose answer counts once).
        if attempt < record.attempts {
            outcome_over(m, refund, false);
        }
        return Ok(Decision::default());
    }
    match status {
        RefundStatus::Paid {
            fee,
            fee_paid_by,
            evidence,
        } => paid(ctx, m, &record, fee, fee_paid_by, evidence),
        RefundStatus::Failed(reason) => {
            let event = LedgerEvent::new(
                keys::refund_failed(refund, attempt)?,
                ctx.now,
                EventBody::RefundFailed {
                    refund: refund.clone(),
                    reason: bounded(&reason, MAX_OUTSIDE_TEXT),
                    cause: None,
                },
            );
            retry_later(ctx, m, refund);
            Ok(Decision::group(Group::new(vec![event])))
        }
        RefundStatus::Unknown(reason) => unknown(ctx, m, &record, &reason),
    }
}

fn paid(
    ctx: &Ctx,
    m: &mut Memory,
    record: &RefundRecord,
    fee: Msat,
    fee_paid_by: FeePayer,
    evidence: String,
) -> Decided {
    let refund = &record.refund;
    if let Some(why) = unbookable(ctx, record, fee, fee_paid_by)? {
        // The money left, but the asset cannot cover the fee the wallet reports: the outcome
        // stays pending (never "failed") until the operator books float; looked up again.
        let tries = match m.refund_tasks.get(refund) {
            Some(RefundTask::LookUpAt { tries, .. }) => tries.saturating_add(1),
            _ => 1,
        };
        let at = back_off(ctx.now, tries);
        m.refund_tasks
            .insert(refund.clone(), RefundTask::LookUpAt { at, tries });
        return Ok(Decision {
            error: Some(format!(
                "refund {refund} was paid but cannot be booked: {why}"
            )),
            ..Decision::default()
        });
    }
    m.refund_tasks.remove(refund);
    let event = LedgerEvent::new(
        keys::refund_settled(refund)?,
        ctx.now,
        EventBody::RefundSettled {
            refund: refund.clone(),
            fee,
            fee_paid_by,
            evidence: Some(bounded(&evidence, MAX_OUTSIDE_TEXT)),
            cause: None,
        },
    );
    let mut group = Group::new(vec![event]);
    if let Some(job) = job_refunded_by(ctx, record) {
        group = group.reply(
            &job,
            ReplyKind::Refunded {
                amount: record.amount,
                zap_request: record
                    .route
                    .as_ref()
                    .and_then(|r| r.zap.as_ref())
                    .map(|z| z.request.to_string()),
            },
        );
    }
    Ok(Decision::group(group))
}

/// The job whose own money `record` gives back (a failed or cancelled job, not a payment's
/// excess): its customer is told once the refund is paid, as the job's last feedback.
fn job_refunded_by(ctx: &Ctx, record: &RefundRecord) -> Option<paydvm_ledger::JobId> {
    let job = ctx.ledger.job(record.job.as_ref()?)?;
    let refunding = matches!(job.state, JobState::Refunding | JobState::RefundPending);
    (refunding && job.refund.as_ref() == Some(&record.refund)).then(|| job.job.clone())
}

/// Why booking a paid refund would drive its asset below zero (the fee reported beyond what
/// the account holds), if it would.
fn unbookable(
    ctx: &Ctx,
    record: &RefundRecord,
    fee: Msat,
    payer: FeePayer,
) -> Result<Option<String>, DecideError> {
    let Some(route) = &record.route else {
        return Ok(None);
    };
    let leaves = match payer {
        FeePayer::Operator => record.amount.checked_add(fee)?,
        FeePayer::Customer => record.amount,
    };
    let has = ctx.ledger.asset_balance(&route.asset);
    Ok((has < leaves).then(|| {
        format!(
            "asset:{} holds {has}, the payout took {leaves}; add float (paydvm float add)",
            route.asset
        )
    }))
}

fn unknown(ctx: &Ctx, m: &mut Memory, record: &RefundRecord, reason: &str) -> Decided {
    let mut decision = Decision::default();
    if record.state == RefundState::InFlight {
        decision.push(Group::new(vec![LedgerEvent::new(
            keys::refund_unknown(&record.refund, record.attempts)?,
            ctx.now,
            EventBody::RefundOutcomeUnknown {
                refund: record.refund.clone(),
                reason: waiting_for(record, reason),
            },
        )]));
    }
    if m.refund_tasks.get(&record.refund) != Some(&RefundTask::LookingUp) {
        decision.extend(look_up(m, record));
    }
    Ok(decision)
}

/// The reason `refund_outcome_unknown` records (`paydvm audit` shows it): what the node now
/// waits for, and the rail's last word.
fn waiting_for(record: &RefundRecord, said: &str) -> String {
    let said = bounded(said, MAX_OUTSIDE_TEXT);
    match record.route.as_ref().map(|r| &r.asset) {
        Some(Asset::Lightning) => format!(
            "looking the payment up by its hash until the wallet says settled or failed; \
             last answer: {said}"
        ),
        _ => said,
    }
}

/// A verified zap receipt is linked to its refund when it answers exactly the zap the refund's
/// route recorded: the same zap request, signed by the recorded LNURL server key, for the
/// invoice we paid. Anything else (another refund's zap, an older attempt's, a forged signer)
/// is ignored. The refund's state is the payment's business: a receipt never settles it.
pub(super) fn zap_receipt(ctx: &Ctx, receipt: &RefundZapReceipt) -> Decided {
    let Some(record) = ctx.ledger.refund(&receipt.refund) else {
        return Ok(Decision::default());
    };
    let Some(route) = &record.route else {
        return Ok(Decision::default());
    };
    let answers = route.zap.as_ref().is_some_and(|zap| {
        zap.request == receipt.request
            && zap.signer == receipt.signer
            && route.destination.eq_ignore_ascii_case(&receipt.bolt11)
    });
    if !answers || record.zap_receipt.is_some() || record.state == RefundState::Failed {
        return Ok(Decision::default());
    }
    let event = LedgerEvent::new(
        keys::refund_zap_receipt(&record.refund)?,
        ctx.now,
        EventBody::RefundZapReceipt {
            refund: record.refund.clone(),
            receipt: receipt.receipt.clone(),
        },
    );
    Ok(Decision::group(Group::new(vec![event])))
}

/// Outside text is kept short in the ledger.
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
