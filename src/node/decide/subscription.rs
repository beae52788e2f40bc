//! Subscriptions (the NIP-88 proposal, PR #866) as the decision core sees them. A subscribe
//! request for one of our tiers is quoted (`subscription_quoted`, with an invoice when a
//! Lightning backend makes one); a verified payment naming the request funds the subscription's
//! account; once it holds a period's price, a period is granted (`entitlement_granted`, the
//! price moves to revenue) and the node says so in its own receipt. While the period lasts,
//! requests of a covered kind from the subscriber run on its quota (see [`entitled`]). Time ends
//! periods: a funded subscription is granted the next one, otherwise it expires.
//!
//! Nothing here trusts a receipt someone else signed: an entitlement comes only from payments
//! the rails verified and the ledger booked.

use paydvm_ledger::{
    Account, Asset, EntitlementState, EventBody, JobId, LedgerEvent, Msat, PaymentTarget, Pubkey,
    SubscriptionFunds, SubscriptionId, SubscriptionRecord, UnixMs,
};
use paydvm_policies::{PaidAhead, Tier};

use super::memory::Memory;
use super::request::invoice_options;
use super::{keys, Action, Ctx, DecideError, Decided, Decision, Group, NoticeKind};
use crate::lightning::IssuedInvoice;

mod cancel;
mod renew;

pub(super) use cancel::unsubscribed;
pub use cancel::UnsubscribeRequest;

/// A subscribe request (kind 7001) as the adapter read it: its id names the subscription; the
/// tier is the `d` of the 37001 it points at (by `a` or by `e`), already resolved to ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub subscription: SubscriptionId,
    pub subscriber: Pubkey,
    pub tier: String,
}

/// A subscribe request arrived: quoted once (a second sight changes nothing). An unknown tier
/// is answered with an error and recorded nowhere else.
pub(super) fn arrived(ctx: &Ctx, m: &mut Memory, request: SubscribeRequest) -> Decided {
    if ctx.ledger.subscription(&request.subscription).is_some()
        || m.awaiting_subscription_invoice
            .contains_key(&request.subscription)
    {
        return Ok(Decision::default());
    }
    let Some(tier) = ctx.policy.tier(&request.tier) else {
        let reason = format!("no subscription tier {:?} here", request.tier);
        let group = Group::default().notice(
            &request.subscription,
            &request.subscriber,
            NoticeKind::Error { reason },
        );
        return Ok(Decision::group(group));
    };
    let expires_at = UnixMs(ctx.policy.quote_expires_at(ctx.now.0)?);
    if ctx.rails.invoices {
        let action = Action::RequestSubscriptionInvoice {
            subscription: request.subscription.clone(),
            amount: tier.price,
            expires_at,
        };
        m.awaiting_subscription_invoice
            .insert(request.subscription.clone(), request);
        return Ok(Decision::actions(vec![action]));
    }
    quote(ctx, &request, tier, expires_at, (None, None))
}

/// The invoice for a subscribe request's first period (checked by the shell), or why none.
pub(super) fn invoice_issued(
    ctx: &Ctx,
    m: &mut Memory,
    subscription: SubscriptionId,
    expires_at: UnixMs,
    invoice: Result<IssuedInvoice, String>,
) -> Decided {
    let Some(request) = m.awaiting_subscription_invoice.remove(&subscription) else {
        return Ok(Decision::default());
    };
    if let Some(record) = ctx.ledger.subscription(&subscription) {
        if record.state != EntitlementState::Quoted {
            return renew::invoice_issued(ctx, record, expires_at, invoice);
        }
    }
    match ctx.policy.tier(&request.tier) {
        Some(tier) if ctx.ledger.subscription(&subscription).is_none() => {
            let invoice = match invoice {
                Ok(invoice) => (Some(invoice), None),
                Err(why) => (None, Some(why)),
            };
            quote(ctx, &request, tier, expires_at, invoice)
        }
        _ => Ok(Decision::default()),
    }
}

/// `subscription_quoted` and the payment-required notice in one group; the invoice is then
/// watched like a job's.
fn quote(
    ctx: &Ctx,
    request: &SubscribeRequest,
    tier: &Tier,
    expires_at: UnixMs,
    (invoice, note): (Option<IssuedInvoice>, Option<String>),
) -> Decided {
    let subscription = &request.subscription;
    let quoted = LedgerEvent::new(
        keys::subscription_quoted(subscription)?,
        ctx.now,
        EventBody::SubscriptionQuoted {
            subscription: subscription.clone(),
            subscriber: request.subscriber.clone(),
            tier: tier.id.clone(),
            price: tier.price,
            period_ms: tier.period_ms,
            quota: tier.quota,
            options: invoice_options(invoice.as_ref()),
            expires_at,
        },
    );
    let to = (subscription, &request.subscriber);
    let asked = (tier.price, invoice, expires_at, note);
    Ok(Decision::group(payment_required(quoted, to, asked)))
}

/// A quote's group: its ledger event, the `payment-required` notice (with the invoice, if
/// any, then watched like a job's).
fn payment_required(
    event: LedgerEvent,
    (subscription, subscriber): (&SubscriptionId, &Pubkey),
    (amount, invoice, expires_at, note): (Msat, Option<IssuedInvoice>, UnixMs, Option<String>),
) -> Group {
    let notice = NoticeKind::PaymentRequired {
        amount,
        bolt11: invoice.as_ref().map(|i| i.bolt11.clone()),
        expires_at: Some(expires_at),
        note,
    };
    let mut group = Group::new(vec![event]).notice(subscription, subscriber, notice);
    if let Some(invoice) = invoice {
        group = group.then(Action::WatchSubscriptionInvoice {
            subscription: subscription.clone(),
            invoice,
            expires_at,
        });
    }
    group
}

/// The terms of the subscription's next period: the tier's as the policy says now (a changed
/// price applies from the next period on), or the quoted ones if the tier is gone.
fn next_terms(ctx: &Ctx, record: &SubscriptionRecord) -> (Msat, u64, u32) {
    match ctx.policy.tier(&record.tier) {
        Some(tier) => (tier.price, tier.period_ms, tier.quota),
        None => (record.price, record.period_ms, record.quota),
    }
}

/// How a verified payment naming a subscription is booked: into its account; what it cannot
/// use owed back (see [`cancel::unusable`]); and, when the account now holds a period's price
/// and no period is running, the period granted in the same group.
pub(super) struct SubscriptionBooking {
    pub target: PaymentTarget,
    /// A refund of what the subscription cannot use, then a grant: in this order.
    pub events: Vec<LedgerEvent>,
    pub notice: NoticeKind,
}

/// A payment as [`book`] needs it.
pub(super) struct PaidIn<'a> {
    pub amount: Msat,
    pub asset: &'a Asset,
    pub reference: &'a str,
}

pub(super) fn book(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    paid: PaidIn<'_>,
) -> Result<SubscriptionBooking, DecideError> {
    let target = PaymentTarget::Subscription {
        subscription: record.subscription.clone(),
    };
    let held = ctx
        .ledger
        .held(&Account::Subscription(record.subscription.clone()));
    let (price, period_ms, _) = next_terms(ctx, record);
    let running = record.state == EntitlementState::Active && ctx.now < record.period_end;
    let refund_ahead = refunds_paid_ahead(ctx, record);
    let unusable = cancel::unusable(record, held, paid.amount, price, (running, refund_ahead))?;
    let mut events = Vec::new();
    if !unusable.is_zero() {
        let from = SubscriptionFunds::Held;
        let refund = cancel::refund_due(ctx, record, paid.reference, unusable, paid.asset, from)?;
        events.push(refund);
    }
    let kept = paid.amount.checked_sub(unusable)?;
    let notice = if record.cancelled_at.is_some() {
        let reason = format!(
            "this subscription was cancelled; the {} msat received will be refunded",
            paid.amount.as_msat()
        );
        NoticeKind::Error { reason }
    } else if running && refund_ahead {
        let note = format!(
            "this period is paid until {} (unix s) and the next is not quoted yet; the {} msat \
             received will be refunded",
            record.period_end.0 / 1000,
            paid.amount.as_msat()
        );
        NoticeKind::Credited { note }
    } else if running {
        NoticeKind::Credited {
            note: ahead_note(kept, unusable, record.period_end),
        }
    } else if held.checked_add(kept)? < price {
        let owed = price.checked_sub(held.checked_add(kept)?)?;
        let note = Some(format!(
            "received {} msat; {} msat still owed for the period",
            paid.amount.as_msat(),
            owed.as_msat()
        ));
        NoticeKind::PaymentRequired {
            amount: owed,
            bolt11: None,
            expires_at: None,
            note,
        }
    } else {
        let start = renew::paid_period_start(ctx, record, period_ms);
        let (grant, receipt) = grant(ctx, record, start, period_ms, paid.reference)?;
        events.push(grant);
        receipt
    };
    Ok(SubscriptionBooking {
        target,
        events,
        notice,
    })
}

/// Whether money arriving now is paid ahead and the tier refunds such money: its period runs
/// and the renewal window (`renew_before_ms` before the end) has not opened.
fn refunds_paid_ahead(ctx: &Ctx, record: &SubscriptionRecord) -> bool {
    ctx.policy.tier(&record.tier).is_some_and(|tier| {
        let window_opens = record.period_end.0.saturating_sub(tier.renew_before_ms);
        tier.paid_ahead == PaidAhead::Refund && ctx.now.0 < window_opens
    })
}

/// What a subscriber paying while a period runs is told.
fn ahead_note(kept: Msat, refunded: Msat, next_start: UnixMs) -> String {
    let mut note = format!(
        "received {} msat toward the next period, which starts at {} (unix s)",
        kept.as_msat(),
        next_start.0 / 1000
    );
    if !refunded.is_zero() {
        note.push_str(&format!(
            "; {} msat beyond that period's price will be refunded",
            refunded.as_msat()
        ));
    }
    note
}

/// `entitlement_granted` for the period after the record's current one, starting at `start`,
/// and the receipt the node publishes for it. Keyed by the period it follows, so the same
/// decision made twice grants once.
fn grant(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    start: UnixMs,
    period_ms: u64,
    payment_ref: &str,
) -> Result<(LedgerEvent, NoticeKind), DecideError> {
    let (price, _, quota) = next_terms(ctx, record);
    let end =
        start
            .0
            .checked_add(period_ms)
            .ok_or(paydvm_policies::DecisionError::TimeOverflow {
                now_ms: start.0,
                added_ms: period_ms,
            })?;
    let end = UnixMs(end);
    let event = LedgerEvent::new(
        keys::entitlement_granted(&record.subscription, record.period_end)?,
        ctx.now,
        EventBody::EntitlementGranted {
            subscription: record.subscription.clone(),
            subscriber: record.subscriber.clone(),
            tier: record.tier.clone(),
            period_start: start,
            period_end: end,
            quota,
            price,
        },
    );
    let receipt = NoticeKind::Receipt {
        tier: record.tier.clone(),
        period_start: start,
        period_end: end,
        payment: payment_ref.to_owned(),
    };
    Ok((event, receipt))
}

/// Periods that ended: renewed from what the subscription's account holds (paid ahead), or
/// expired; then periods about to end get their renewal quote. One group per subscription, in
/// id order so the same state gives the same decision.
pub(super) fn ticked(ctx: &Ctx, m: &mut Memory) -> Decided {
    let mut ended: Vec<&SubscriptionRecord> = ctx
        .ledger
        .subscriptions()
        .filter(|s| s.state == EntitlementState::Active && s.period_end <= ctx.now)
        .collect();
    ended.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    let mut decision = Decision::default();
    for record in ended {
        let held = ctx
            .ledger
            .held(&Account::Subscription(record.subscription.clone()));
        let (price, period_ms, _) = next_terms(ctx, record);
        let subscription = &record.subscription;
        let group = if held >= price && record.cancelled_at.is_none() {
            // Renewed back to back, unless the node was down for more than a period.
            let start = match record.period_end.0.checked_add(period_ms) {
                Some(end) if end > ctx.now.0 => record.period_end,
                _ => ctx.now,
            };
            let (event, receipt) = grant(ctx, record, start, period_ms, "prepaid")?;
            Group::new(vec![event]).notice(subscription, &record.subscriber, receipt)
        } else {
            Group::new(vec![LedgerEvent::new(
                keys::entitlement_expired(subscription, record.period_end)?,
                ctx.now,
                EventBody::EntitlementExpired {
                    subscription: subscription.clone(),
                },
            )])
        };
        decision.push(group);
    }
    decision.extend(renew::quote_due(ctx, m)?);
    Ok(decision)
}

/// Whether `customer` may run a job of `kind` on a subscription now: the subscription (the
/// first by id, for a deterministic choice) whose running period covers the kind and has quota
/// left; else why not, when the customer has a subscription for the kind (said in the quote).
pub(super) fn entitled(ctx: &Ctx, customer: &Pubkey, kind: u16) -> Entitled {
    // The customer's own subscriptions, by index and already in id order: no scan of all.
    let covering: Vec<&SubscriptionRecord> = ctx
        .ledger
        .subscriptions_of(customer)
        .filter(|s| s.state != EntitlementState::Quoted)
        .filter(|s| ctx.policy.tier(&s.tier).is_some_and(|t| t.covers(kind)))
        .collect();
    let usable = |s: &SubscriptionRecord| {
        s.state == EntitlementState::Active
            && s.period_start <= ctx.now
            && ctx.now < s.period_end
            && s.used < s.quota
    };
    if let Some(s) = covering.iter().find(|s| usable(s)) {
        return Entitled::Yes(s.subscription.clone());
    }
    match covering.first() {
        None => Entitled::NoSubscription,
        Some(s) if s.state == EntitlementState::Active && ctx.now < s.period_end => {
            Entitled::No(format!(
                "subscription quota used up ({} of {} jobs this period); this job is priced",
                s.used, s.quota
            ))
        }
        Some(_) => Entitled::No("your subscription period has ended; this job is priced".into()),
    }
}

/// A failed job that ran on a subscription's quota gives its unit back to the period it was
/// taken in, when that period still runs (the policy's failure rules refund nothing: the job
/// was never charged).
pub(super) fn unit_back(ctx: &Ctx, job: &JobId) -> Result<Option<LedgerEvent>, DecideError> {
    let Some((record, subscription)) = on_quota(ctx, job) else {
        return Ok(None);
    };
    if !cancel::unit_period_runs(subscription, record.received_at, ctx.now) {
        return Ok(None);
    }
    Ok(Some(LedgerEvent::new(
        keys::unit_returned(job)?,
        ctx.now,
        EventBody::EntitlementUnitReturned {
            subscription: subscription.subscription.clone(),
            job: job.clone(),
        },
    )))
}

/// The end of the paid period a job ran on (zero for a job that used no quota): a result
/// that expires must not expire before the window the subscriber paid for.
pub(super) fn paid_until(ctx: &Ctx, job: &JobId) -> UnixMs {
    on_quota(ctx, job).map_or(UnixMs(0), |(_, s)| s.period_end)
}

/// A job that holds a unit of a subscription's quota, and that subscription.
fn on_quota<'a>(
    ctx: &Ctx<'a>,
    job: &JobId,
) -> Option<(&'a paydvm_ledger::JobRecord, &'a SubscriptionRecord)> {
    let record = ctx.ledger.job(job)?;
    let subscription = ctx.ledger.subscription(record.entitlement.as_ref()?)?;
    Some((record, subscription))
}

/// What [`entitled`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entitled {
    Yes(SubscriptionId),
    /// The customer has a subscription for the kind but cannot use it now: why.
    No(String),
    NoSubscription,
}

#[cfg(test)]
mod tests;
