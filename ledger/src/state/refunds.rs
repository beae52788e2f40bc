//! The refund events (start, outcome, operator resolutions), the operator's float, and the
//! per-asset reservations that keep refunds in flight from promising the same money twice.

use super::{check_amount, check_cause, check_text, refund_refused, Planner};
use crate::account::Account;
use crate::error::TransitionError;
use crate::event::{Asset, Cause, CreditDirection, FeePayer, RefundRoute, WriteOffTo};
use crate::ids::{EventId, Pubkey, RefundId};
use crate::job::JobInput;
use crate::money::Msat;
use crate::refund::{RefundRecord, RefundState};

impl Planner<'_> {
    pub(super) fn refund_deferred(
        &mut self,
        refund: &RefundId,
        reason: &str,
    ) -> Result<(), TransitionError> {
        check_text("reason", reason)?;
        let mut r = self.waiting_refund(refund, "defer")?;
        r.deferred = Some(reason.to_string());
        self.change.refund = Some(r);
        Ok(())
    }

    /// The exact payment is recorded before it is made. It must be paid from the refund's asset
    /// (when decided), and that asset must have `amount + fee_reserve` not yet promised to
    /// another refund in flight or unknown; both are then held back until the outcome is known.
    pub(super) fn refund_started(
        &mut self,
        refund: &RefundId,
        attempt: u32,
        route: &RefundRoute,
    ) -> Result<(), TransitionError> {
        check_text("destination", &route.destination)?;
        check_text("lookup", &route.lookup)?;
        check_amount("fee reserve", route.fee_reserve)?;
        let mut r = self.load_refund(refund)?;
        if !r.state.can_start() {
            return Err(refund_refused(&r, "start a payment"));
        }
        if attempt != r.attempts.saturating_add(1) {
            return Err(TransitionError::RefundAttemptMismatch {
                refund: refund.clone(),
                expected: r.attempts.saturating_add(1),
                got: attempt,
            });
        }
        if let Some(asset) = r.asset.as_ref().filter(|a| **a != route.asset) {
            return Err(TransitionError::RefundAssetMismatch {
                refund: refund.clone(),
                expected: asset.clone(),
                got: route.asset.clone(),
            });
        }
        let needs = r.amount.checked_add(route.fee_reserve)?;
        let has = self.available(&route.asset);
        if has < needs {
            return Err(TransitionError::AssetShort {
                account: Account::Asset(route.asset.clone()).to_string(),
                has,
                needs,
            });
        }
        let reserved = self.reserved(&route.asset).checked_add(needs)?;
        self.set_reserved(&route.asset, reserved);
        r.state = RefundState::InFlight;
        r.attempts = attempt;
        r.route = Some(route.clone());
        r.deferred = None;
        self.mirror_refund(&r, JobInput::RefundStart)?;
        self.change.refund = Some(r);
        Ok(())
    }

    /// The payout went through. The fee may exceed the route's reserve as long as the asset
    /// stays ≥ 0; a customer-paid fee came out of the refund itself.
    pub(super) fn refund_settled(
        &mut self,
        refund: &RefundId,
        fee: Msat,
        fee_paid_by: FeePayer,
        evidence: Option<&str>,
        cause: Option<&Cause>,
    ) -> Result<(), TransitionError> {
        check_amount("fee", fee)?;
        if let Some(e) = evidence {
            check_text("evidence", e)?;
        }
        cause.map(check_cause).transpose()?;
        let mut r = self.load_refund(refund)?;
        if !r.state.can_resolve() {
            return Err(refund_refused(&r, "settle"));
        }
        let asset = match &r.route {
            Some(route) => Account::Asset(route.asset.clone()),
            None => return Err(refund_refused(&r, "settle without a route")),
        };
        self.release_reservation(&r)?;
        self.post(Account::Refund(refund.clone()), asset.clone(), r.amount)?;
        match fee_paid_by {
            FeePayer::Operator => self.post(Account::Fees, asset, fee)?,
            FeePayer::Customer if fee > r.amount => {
                return Err(TransitionError::FeeExceedsRefund {
                    fee,
                    amount: r.amount,
                })
            }
            FeePayer::Customer => {}
        }
        r.state = RefundState::Settled;
        r.fee = fee;
        r.fee_paid_by = fee_paid_by;
        r.evidence = evidence.map(str::to_string);
        self.mirror_refund(&r, JobInput::RefundSettle)?;
        self.change.refund = Some(r);
        Ok(())
    }

    pub(super) fn refund_outcome_unknown(
        &mut self,
        refund: &RefundId,
        reason: &str,
    ) -> Result<(), TransitionError> {
        check_text("reason", reason)?;
        let mut r = self.load_refund(refund)?;
        if r.state != RefundState::InFlight {
            return Err(refund_refused(&r, "mark the outcome unknown"));
        }
        // Still reserved: the money may have left.
        r.state = RefundState::Unknown;
        self.mirror_refund(&r, JobInput::RefundUnknown)?;
        self.change.refund = Some(r);
        Ok(())
    }

    pub(super) fn refund_failed(
        &mut self,
        refund: &RefundId,
        reason: &str,
        cause: Option<&Cause>,
    ) -> Result<(), TransitionError> {
        check_text("reason", reason)?;
        cause.map(check_cause).transpose()?;
        let mut r = self.load_refund(refund)?;
        if !r.state.can_resolve() {
            return Err(refund_refused(&r, "fail"));
        }
        self.release_reservation(&r)?;
        r.state = RefundState::Failed;
        self.mirror_refund(&r, JobInput::RefundFail)?;
        self.change.refund = Some(r);
        Ok(())
    }

    pub(super) fn refund_rerouted(
        &mut self,
        refund: &RefundId,
        asset: &Asset,
        cause: &Cause,
    ) -> Result<(), TransitionError> {
        check_cause(cause)?;
        if let Asset::Mint { url } = asset {
            check_text("mint url", url)?;
        }
        let mut r = self.waiting_refund(refund, "reroute")?;
        r.asset = Some(asset.clone());
        r.deferred = None;
        self.change.refund = Some(r);
        Ok(())
    }

    pub(super) fn refund_retried(
        &mut self,
        refund: &RefundId,
        cause: &Cause,
    ) -> Result<(), TransitionError> {
        check_cause(cause)?;
        let mut r = self.waiting_refund(refund, "retry")?;
        r.retry_base = r.attempts;
        r.deferred = None;
        self.change.refund = Some(r);
        Ok(())
    }

    /// Never while a payment is in flight or unknown: that money may have left.
    pub(super) fn refund_written_off(
        &mut self,
        refund: &RefundId,
        to: WriteOffTo,
        cause: &Cause,
    ) -> Result<(), TransitionError> {
        check_cause(cause)?;
        let mut r = self.waiting_refund(refund, "write off")?;
        let (account, input) = match to {
            WriteOffTo::Credit => (
                Account::Credit(r.customer.clone()),
                JobInput::WriteOffCredit,
            ),
            WriteOffTo::Income => (Account::WrittenOff, JobInput::WriteOffIncome),
        };
        self.post(Account::Refund(refund.clone()), account, r.amount)?;
        r.state = RefundState::WrittenOff;
        r.written_off_to = Some(to);
        r.deferred = None;
        self.mirror_refund(&r, input)?;
        self.change.refund = Some(r);
        Ok(())
    }

    pub(super) fn float_added(
        &mut self,
        asset: &Asset,
        amount: Msat,
        cause: &Cause,
    ) -> Result<(), TransitionError> {
        check_cause(cause)?;
        if let Asset::Mint { url } = asset {
            check_text("mint url", url)?;
        }
        if amount.is_zero() {
            return Err(TransitionError::ZeroAmount);
        }
        check_amount("float", amount)?;
        self.post(Account::Asset(asset.clone()), Account::Float, amount)
    }

    /// The operator moves a customer's credit against `equity:float`; a decrease beyond what
    /// the customer holds is refused (`finish` refuses a negative held account).
    pub(super) fn credit_adjusted(
        &mut self,
        customer: &Pubkey,
        direction: CreditDirection,
        amount: Msat,
        cause: &Cause,
    ) -> Result<(), TransitionError> {
        check_cause(cause)?;
        if amount.is_zero() {
            return Err(TransitionError::ZeroAmount);
        }
        check_amount("credit adjustment", amount)?;
        let credit = Account::Credit(customer.clone());
        match direction {
            CreditDirection::Increase => self.post(Account::Float, credit, amount),
            CreditDirection::Decrease => self.post(credit, Account::Float, amount),
        }
    }

    /// Links the verified receipt of a refund sent as a zap. Only a refund whose recorded route
    /// is a zap can have one, and only one: the shell checked the receipt against that route.
    /// No money moves and the refund's state stays what the payment's outcome made it.
    pub(super) fn refund_zap_receipt(
        &mut self,
        refund: &RefundId,
        receipt: &EventId,
    ) -> Result<(), TransitionError> {
        let mut r = self.load_refund(refund)?;
        if r.route.as_ref().is_none_or(|route| route.zap.is_none()) {
            return Err(refund_refused(
                &r,
                "link a zap receipt to a refund not sent as a zap",
            ));
        }
        if r.zap_receipt.is_some() {
            return Err(refund_refused(&r, "link a second zap receipt"));
        }
        r.zap_receipt = Some(receipt.clone());
        self.change.subject_job = r.job.clone();
        self.change.refund = Some(r);
        Ok(())
    }

    /// A refund that can be started (due or failed), for an event that changes how it waits.
    fn waiting_refund(
        &mut self,
        refund: &RefundId,
        action: &'static str,
    ) -> Result<RefundRecord, TransitionError> {
        let r = self.load_refund(refund)?;
        if !r.state.can_start() {
            return Err(refund_refused(&r, action));
        }
        self.change.subject_job = r.job.clone();
        Ok(r)
    }

    /// What a new payout from `asset` may use, as of this event.
    fn available(&self, asset: &Asset) -> Msat {
        let owned = self
            .balance(&Account::Asset(asset.clone()))
            .owned()
            .unwrap_or(Msat::ZERO);
        owned.saturating_sub(self.reserved(asset))
    }

    fn reserved(&self, asset: &Asset) -> Msat {
        self.change
            .reserved
            .iter()
            .find(|(a, _)| a == asset)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| self.state.reserved(asset))
    }

    fn set_reserved(&mut self, asset: &Asset, total: Msat) {
        match self.change.reserved.iter_mut().find(|(a, _)| a == asset) {
            Some((_, m)) => *m = total,
            None => self.change.reserved.push((asset.clone(), total)),
        }
    }

    /// A refund in flight or unknown reached an outcome: its hold on the asset ends.
    fn release_reservation(&mut self, r: &RefundRecord) -> Result<(), TransitionError> {
        if let Some((asset, held_back)) = r.reservation()? {
            let total = self.reserved(&asset).checked_sub(held_back)?;
            self.set_reserved(&asset, total);
        }
        Ok(())
    }
}
