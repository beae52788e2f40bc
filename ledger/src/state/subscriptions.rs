//! The subscription events after the first quote: payments remembered by asset, the
//! subscriber's withdrawal, refunds of a subscription's money, and quota units given back by
//! failed jobs.

use super::{check_amount, Planner};
use crate::account::Account;
use crate::error::TransitionError;
use crate::event::{Asset, SubscriptionFunds};
use crate::ids::{JobId, RefundId, SubscriptionId, UnixMs};
use crate::job::JobState;
use crate::money::Msat;
use crate::refund::RefundRecord;
use crate::subscription::{EntitlementState, SubscriptionRecord};

impl Planner<'_> {
    fn load_subscription(
        &self,
        subscription: &SubscriptionId,
    ) -> Result<SubscriptionRecord, TransitionError> {
        match &self.change.subscription {
            Some(s) if &s.subscription == subscription => Ok(s.clone()),
            _ => self
                .state
                .subscriptions
                .get(subscription)
                .cloned()
                .ok_or_else(|| TransitionError::UnknownSubscription(subscription.clone())),
        }
    }

    /// A payment booked to the subscription: its refunds are paid from this asset from now on.
    /// (Money may arrive before the subscription's first record, as in ledgers written before
    /// quotes existed: it is held all the same, and no refund can be made of it.)
    pub(super) fn subscription_paid(&mut self, subscription: &SubscriptionId, asset: &Asset) {
        if let Ok(mut s) = self.load_subscription(subscription) {
            s.paid_in = Some(asset.clone());
            self.change.subscription = Some(s);
        }
    }

    pub(super) fn cancel_subscription(
        &mut self,
        subscription: &SubscriptionId,
    ) -> Result<(), TransitionError> {
        let mut s = self.load_subscription(subscription)?;
        if s.cancelled_at.is_some() {
            return Err(refused(subscription, "already cancelled"));
        }
        s.cancelled_at = Some(self.at);
        self.change.subscription = Some(s);
        Ok(())
    }

    /// Money of the subscription owed back: what its account holds, or (once, after the
    /// subscriber cancelled) the unused rest of the running period, which then ends now.
    pub(super) fn subscription_refund_due(
        &mut self,
        subscription: &SubscriptionId,
        refund: &RefundId,
        amount: Msat,
        asset: &Asset,
        from: SubscriptionFunds,
    ) -> Result<(), TransitionError> {
        check_amount("refund", amount)?;
        if amount.is_zero() {
            return Err(TransitionError::ZeroAmount);
        }
        let mut s = self.load_subscription(subscription)?;
        if s.paid_in.as_ref() != Some(asset) {
            return Err(refused(
                subscription,
                "a subscription refund is paid from the asset of its latest payment",
            ));
        }
        let source = match from {
            SubscriptionFunds::Held => Account::Subscription(subscription.clone()),
            SubscriptionFunds::Unused => {
                self.end_for_unused_refund(&mut s, amount)?;
                Account::Revenue
            }
        };
        if self.state.refunds.contains_key(refund) || self.change.refund.is_some() {
            return Err(TransitionError::RefundExists(refund.clone()));
        }
        let record = RefundRecord::due(refund, None, &s.subscriber, amount, Some(asset.clone()));
        self.change.refund = Some(record);
        self.change.subscription = Some(s);
        self.post(source, Account::Refund(refund.clone()), amount)
    }

    /// The checks of a pro-rata refund: cancelled, in a running period, not refunded before,
    /// at most the period's price. The period ends now.
    fn end_for_unused_refund(
        &self,
        s: &mut SubscriptionRecord,
        amount: Msat,
    ) -> Result<(), TransitionError> {
        let subscription = &s.subscription;
        if s.cancelled_at.is_none() {
            return Err(refused(subscription, "not cancelled"));
        }
        if s.state != EntitlementState::Active || self.at >= s.period_end {
            return Err(refused(subscription, "no running period"));
        }
        if s.unused_refunded {
            return Err(refused(
                subscription,
                "the unused rest was already refunded",
            ));
        }
        if amount > s.price {
            return Err(refused(subscription, "more than the period's price"));
        }
        s.unused_refunded = true;
        s.period_end = self.at.max(s.period_start);
        s.state = EntitlementState::Expired;
        Ok(())
    }

    /// The next period quoted while the current one runs: once per period, never after a
    /// cancellation.
    pub(super) fn quote_renewal(
        &mut self,
        subscription: &SubscriptionId,
        after: UnixMs,
        price: Msat,
    ) -> Result<(), TransitionError> {
        check_amount("price", price)?;
        let mut s = self.load_subscription(subscription)?;
        if s.state != EntitlementState::Active || s.period_end != after {
            return Err(refused(subscription, "not the running period"));
        }
        if s.cancelled_at.is_some() {
            return Err(refused(subscription, "cancelled by the subscriber"));
        }
        if s.renewal_quoted == Some(after) {
            return Err(refused(subscription, "the next period was already quoted"));
        }
        s.renewal_quoted = Some(after);
        self.change.subscription = Some(s);
        Ok(())
    }

    /// A failed job's quota unit goes back, once, to the period it was taken in.
    pub(super) fn return_unit(
        &mut self,
        subscription: &SubscriptionId,
        job: &JobId,
    ) -> Result<(), TransitionError> {
        let mut rec = self.load_job(job)?;
        if rec.entitlement.as_ref() != Some(subscription) {
            return Err(refused(subscription, "the job holds no unit of this quota"));
        }
        if !matches!(rec.state, JobState::Failed | JobState::FailedFinal) {
            return Err(refused(
                subscription,
                "only a failed job gives its unit back",
            ));
        }
        let mut s = self.load_subscription(subscription)?;
        let running = s.state == EntitlementState::Active
            && s.period_start <= rec.received_at
            && self.at < s.period_end;
        if !running || s.used == 0 {
            return Err(refused(subscription, "the unit's period is over"));
        }
        s.used -= 1;
        rec.entitlement = None;
        self.change.job = Some(rec);
        self.change.subscription = Some(s);
        Ok(())
    }
}

fn refused(subscription: &SubscriptionId, reason: &'static str) -> TransitionError {
    TransitionError::EntitlementRefused {
        subscription: subscription.clone(),
        reason,
    }
}
