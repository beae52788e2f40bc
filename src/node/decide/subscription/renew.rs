//! Renewal: the next period is quoted (with an invoice when Lightning is on) a tier-set time
//! before the running one ends, once per period, and a payment that comes late but within the
//! tier's grace continues the subscription back to back. A cancelled subscription is never
//! quoted again.

use paydvm_ledger::{
    Account, EntitlementState, EventBody, LedgerEvent, Msat, SubscriptionRecord, UnixMs,
};

use super::super::memory::Memory;
use super::super::request::invoice_options;
use super::super::{keys, Action, Ctx, DecideError, Decided, Decision};
use super::{next_terms, payment_required, SubscribeRequest};
use crate::lightning::IssuedInvoice;

/// Running subscriptions whose renewal window opened and that do not hold the next period's
/// price yet: each gets its renewal quote (or an invoice asked for first).
pub(super) fn quote_due(ctx: &Ctx, m: &mut Memory) -> Decided {
    let mut due: Vec<&SubscriptionRecord> = ctx
        .ledger
        .subscriptions()
        .filter(|s| window_open(ctx, s))
        .filter(|s| {
            !m.awaiting_subscription_invoice
                .contains_key(&s.subscription)
        })
        .collect();
    due.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    let mut decision = Decision::default();
    for record in due {
        let owed = owed(ctx, record)?;
        if owed.is_zero() {
            continue;
        }
        let expires_at = renewal_expiry(ctx, record)?;
        if ctx.rails.invoices {
            m.awaiting_subscription_invoice.insert(
                record.subscription.clone(),
                SubscribeRequest {
                    subscription: record.subscription.clone(),
                    subscriber: record.subscriber.clone(),
                    tier: record.tier.clone(),
                },
            );
            decision.actions.push(Action::RequestSubscriptionInvoice {
                subscription: record.subscription.clone(),
                amount: owed,
                expires_at,
            });
        } else {
            decision.extend(quote(ctx, record, owed, expires_at, (None, None))?);
        }
    }
    Ok(decision)
}

/// Whether `record`'s renewal should be quoted now: a running, uncancelled period that ends
/// within the tier's window and whose successor was not quoted yet.
fn window_open(ctx: &Ctx, record: &SubscriptionRecord) -> bool {
    let Some(tier) = ctx.policy.tier(&record.tier) else {
        return false;
    };
    record.state == EntitlementState::Active
        && record.cancelled_at.is_none()
        && record.renewal_quoted != Some(record.period_end)
        && ctx.now < record.period_end
        && record.period_end.0.saturating_sub(ctx.now.0) <= tier.renew_before_ms
}

/// What the next period still needs beyond what the account holds.
fn owed(ctx: &Ctx, record: &SubscriptionRecord) -> Result<Msat, DecideError> {
    let held = ctx
        .ledger
        .held(&Account::Subscription(record.subscription.clone()));
    let (price, _, _) = next_terms(ctx, record);
    Ok(price.checked_sub(held.min(price))?)
}

/// A renewal invoice stays payable until the grace after the period ends.
fn renewal_expiry(ctx: &Ctx, record: &SubscriptionRecord) -> Result<UnixMs, DecideError> {
    let grace = ctx.policy.tier(&record.tier).map_or(0, |t| t.grace_ms);
    let at = record.period_end.0.checked_add(grace).ok_or(
        paydvm_policies::DecisionError::TimeOverflow {
            now_ms: record.period_end.0,
            added_ms: grace,
        },
    )?;
    Ok(UnixMs(at))
}

/// The renewal's invoice (checked by the shell) or why none: the quote goes out either way.
pub(super) fn invoice_issued(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    expires_at: UnixMs,
    invoice: Result<IssuedInvoice, String>,
) -> Decided {
    if !window_open(ctx, record) {
        return Ok(Decision::default());
    }
    // Money that arrived since the invoice was asked for lowers what is owed; what a payment
    // brings beyond the next period's price is refunded when it is booked.
    let owed = owed(ctx, record)?;
    if owed.is_zero() {
        return Ok(Decision::default());
    }
    let invoice = match invoice {
        Ok(invoice) => (Some(invoice), None),
        Err(why) => (None, Some(why)),
    };
    quote(ctx, record, owed, expires_at, invoice)
}

/// `subscription_renewal_quoted` and the payment-required notice in one group; the invoice is
/// then watched like the first period's.
fn quote(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    owed: Msat,
    expires_at: UnixMs,
    (invoice, note): (Option<IssuedInvoice>, Option<String>),
) -> Decided {
    let subscription = &record.subscription;
    let event = LedgerEvent::new(
        keys::renewal_quoted(subscription, record.period_end)?,
        ctx.now,
        EventBody::SubscriptionRenewalQuoted {
            subscription: subscription.clone(),
            after: record.period_end,
            price: owed,
            options: invoice_options(invoice.as_ref()),
            expires_at,
        },
    );
    let mut said = format!(
        "renewal: the next period starts at {} (unix s) once paid",
        record.period_end.0 / 1000
    );
    if let Some(note) = note {
        said.push_str("; ");
        said.push_str(&note);
    }
    let to = (subscription, &record.subscriber);
    let asked = (owed, invoice, expires_at, Some(said));
    Ok(Decision::group(payment_required(event, to, asked)))
}

/// Where a period paid now starts: where the last one ended when the payment is within the
/// tier's grace (and that period would still be running), else now.
pub(super) fn paid_period_start(ctx: &Ctx, record: &SubscriptionRecord, period_ms: u64) -> UnixMs {
    let grace = ctx.policy.tier(&record.tier).map_or(0, |t| t.grace_ms);
    let had_period = record.state != EntitlementState::Quoted && !record.unused_refunded;
    let within_grace = record
        .period_end
        .0
        .checked_add(grace)
        .is_some_and(|limit| ctx.now.0 <= limit);
    let still_running = record
        .period_end
        .0
        .checked_add(period_ms)
        .is_some_and(|end| end > ctx.now.0);
    match had_period && within_grace && still_running && record.period_end <= ctx.now {
        true => record.period_end,
        false => ctx.now,
    }
}
