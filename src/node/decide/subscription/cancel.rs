//! Leaving a subscription, and the money a subscription cannot use. A subscriber's unsubscribe
//! (NIP-88 kind 7002) stops renewal; what the account holds for later periods is owed back,
//! and, when the tier says `refund_unused`, so is the unused rest of the running period (pro
//! rata, the period ending now). A payment after the cancellation, or beyond what the next
//! period costs, is booked and owed back in the same group: nothing is charged twice.
//! Every refund goes through the ordinary refund rails, exactly once (its id is keyed).

use paydvm_ledger::{
    Account, Asset, EntitlementState, EventBody, EventId, LedgerEvent, Msat, Pubkey,
    SubscriptionFunds, SubscriptionId, SubscriptionRecord, UnixMs,
};
use paydvm_policies::OnCancel;

use super::super::{keys, Ctx, DecideError, Decided, Decision, Group, NoticeKind};

/// An unsubscribe request as the adapter read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRequest {
    pub subscription: SubscriptionId,
    /// Who signed it: only the subscriber can cancel.
    pub author: Pubkey,
    /// The 7002's id.
    pub request: EventId,
}

/// The subscriber cancelled: recorded once, with the refunds the tier's terms give.
pub(in super::super) fn unsubscribed(ctx: &Ctx, request: UnsubscribeRequest) -> Decided {
    let Some(record) = ctx.ledger.subscription(&request.subscription) else {
        return Ok(Decision::default());
    };
    if record.subscriber != request.author || record.cancelled_at.is_some() {
        return Ok(Decision::default());
    }
    let subscription = &record.subscription;
    let mut events = vec![LedgerEvent::new(
        keys::subscription_cancelled(subscription)?,
        ctx.now,
        EventBody::SubscriptionCancelled {
            subscription: subscription.clone(),
            request: request.request.clone(),
        },
    )];
    let mut refunded = Msat::ZERO;
    let held = ctx
        .ledger
        .held(&Account::Subscription(subscription.clone()));
    if let Some(asset) = record.paid_in.clone().filter(|_| !held.is_zero()) {
        events.push(refund_due(
            ctx,
            record,
            "held",
            held,
            &asset,
            SubscriptionFunds::Held,
        )?);
        refunded = refunded.checked_add(held)?;
    }
    let unused = unused_rest(ctx, record)?;
    if let (Some(asset), false) = (record.paid_in.clone(), unused.is_zero()) {
        let from = SubscriptionFunds::Unused;
        events.push(refund_due(ctx, record, "unused", unused, &asset, from)?);
        refunded = refunded.checked_add(unused)?;
    }
    let note = cancelled_note(ctx, record, refunded, !unused.is_zero());
    let group = Group::new(events).notice(
        subscription,
        &record.subscriber,
        NoticeKind::Cancelled { note },
    );
    Ok(Decision::group(group))
}

/// What the subscriber is told: until when the period runs, and what comes back.
fn cancelled_note(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    refunded: Msat,
    period_refunded: bool,
) -> String {
    let running = record.state == EntitlementState::Active && ctx.now < record.period_end;
    let period = match (running, period_refunded) {
        (true, false) => format!(
            "the paid period runs until {} (unix s)",
            record.period_end.0 / 1000
        ),
        _ => "no period runs from now on".to_owned(),
    };
    match refunded.is_zero() {
        true => format!("subscription cancelled; {period}; nothing to refund"),
        false => format!(
            "subscription cancelled; {period}; {} msat will be refunded",
            refunded.as_msat()
        ),
    }
}

/// The running period's price times the share of it not yet used, rounded down, when the
/// tier's terms refund it (else zero).
fn unused_rest(ctx: &Ctx, record: &SubscriptionRecord) -> Result<Msat, DecideError> {
    let refunds = ctx
        .policy
        .tier(&record.tier)
        .is_some_and(|t| t.on_cancel == OnCancel::RefundUnused);
    let running = record.state == EntitlementState::Active
        && record.period_start <= ctx.now
        && ctx.now < record.period_end;
    if !refunds || !running {
        return Ok(Msat::ZERO);
    }
    let length = record.period_end.0.saturating_sub(record.period_start.0);
    let left = record.period_end.0.saturating_sub(ctx.now.0);
    Ok(pro_rata(record.price, left, length))
}

/// `price × left / length`, rounded down (the operator keeps the odd msat).
fn pro_rata(price: Msat, left: u64, length: u64) -> Msat {
    if length == 0 {
        return Msat::ZERO;
    }
    let share = u128::from(price.as_msat()) * u128::from(left.min(length)) / u128::from(length);
    // share ≤ price, which fits.
    Msat::from_msat(u64::try_from(share).unwrap_or(price.as_msat()))
}

/// `subscription_refund_due` for `amount` of the subscription's money; `why` keys the refund
/// (a payment reference, `held`, `unused`), so the same decision made twice owes it once.
pub(super) fn refund_due(
    ctx: &Ctx,
    record: &SubscriptionRecord,
    why: &str,
    amount: Msat,
    asset: &Asset,
    from: SubscriptionFunds,
) -> Result<LedgerEvent, DecideError> {
    let refund = keys::subscription_refund(&record.subscription, why)?;
    Ok(LedgerEvent::new(
        keys::subscription_refund_due(&refund)?,
        ctx.now,
        EventBody::SubscriptionRefundDue {
            subscription: record.subscription.clone(),
            refund,
            amount,
            asset: asset.clone(),
            from,
        },
    ))
}

/// How much of a payment arriving now the subscription cannot use: all of it after a
/// cancellation, or while a period runs before its renewal window opens under a tier that
/// refunds what is paid ahead (`refund_ahead`); while a period runs, whatever goes beyond the
/// next period's price (counting what the account already holds).
pub(super) fn unusable(
    record: &SubscriptionRecord,
    held: Msat,
    amount: Msat,
    next_price: Msat,
    (running, refund_ahead): (bool, bool),
) -> Result<Msat, DecideError> {
    if record.cancelled_at.is_some() || (running && refund_ahead) {
        return Ok(amount);
    }
    if !running {
        return Ok(Msat::ZERO);
    }
    let room = next_price.checked_sub(held.min(next_price))?;
    Ok(amount.checked_sub(amount.min(room))?)
}

/// When the period a unit was taken in still runs.
pub(super) fn unit_period_runs(record: &SubscriptionRecord, taken_at: UnixMs, now: UnixMs) -> bool {
    record.state == EntitlementState::Active
        && record.period_start <= taken_at
        && now < record.period_end
        && record.used > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_rata_rounds_down_and_never_exceeds_the_price() {
        let price = Msat::from_msat(1_000);
        assert_eq!(pro_rata(price, 1, 3), Msat::from_msat(333));
        assert_eq!(pro_rata(price, 3, 3), price);
        assert_eq!(pro_rata(price, 5, 3), price);
        assert_eq!(pro_rata(price, 0, 3), Msat::ZERO);
        assert_eq!(pro_rata(price, 1, 0), Msat::ZERO);
        let big = Msat::from_msat(u64::MAX / 2);
        assert_eq!(pro_rata(big, u64::MAX, u64::MAX), big);
    }
}
