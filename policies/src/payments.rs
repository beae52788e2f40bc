//! What happens to money that arrives: applied to the job, or returned as a refund or credit.
//!
//! One rule runs through every return decision here: an amount below `refund_min_msat` is
//! credited even where the policy says refund, because a tiny refund costs more in fees and
//! failure handling than it gives back.

use paydvm_ledger::Msat;

use crate::check::Check;
use crate::error::PolicyError;
use crate::raw::RawPayments;

pub const DEFAULT_REFUND_MIN_MSAT: u64 = 1_000;
pub const DEFAULT_GRACE_SECS: i64 = 300;
pub const MAX_GRACE_SECS: i64 = 86_400;

/// Where money that is not kept for a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Paid back over the rail it came from (or the customer's refund address).
    Refund,
    /// Kept as prepaid credit for the customer's pubkey.
    Credit,
}

/// Facts about one incoming payment matched to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentFacts {
    /// The quoted price.
    pub price: Msat,
    /// Already applied to this job by earlier (partial) payments.
    pub applied_before: Msat,
    /// This payment.
    pub amount: Msat,
    pub quote_expires_at_ms: u64,
    pub now_ms: u64,
    /// False when the job is already paid or in a terminal state.
    pub job_accepts_payment: bool,
}

/// Why a payment was not applied to its job at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnappliedReason {
    JobNotAcceptingPayment,
    LateBeyondGrace,
}

/// The decision for one incoming payment. Money is conserved: `applied + excess == amount`,
/// or the whole amount is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentDecision {
    Apply {
        applied: Msat,
        /// Amount above the price and where it goes; `None` when nothing is left over.
        excess: Option<(Msat, Disposition)>,
        /// Still owed after this payment (`price - applied_before - applied`); zero means paid.
        remaining: Msat,
    },
    /// The whole amount goes back.
    Return {
        amount: Msat,
        disposition: Disposition,
        reason: UnappliedReason,
    },
}

/// The validated `[payments]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentRules {
    pub overpayment: Disposition,
    pub refund_min: Msat,
    pub late_grace_ms: u64,
    pub after_grace: Disposition,
}

impl Default for PaymentRules {
    fn default() -> Self {
        PaymentRules {
            overpayment: Disposition::Refund,
            refund_min: Msat::from_msat(DEFAULT_REFUND_MIN_MSAT),
            late_grace_ms: DEFAULT_GRACE_SECS.unsigned_abs() * 1_000,
            after_grace: Disposition::Refund,
        }
    }
}

impl PaymentRules {
    /// `wanted`, except that a refund below `refund_min` becomes a credit.
    pub fn refund_or_credit(&self, amount: Msat, wanted: Disposition) -> Disposition {
        match wanted {
            Disposition::Refund if amount >= self.refund_min => Disposition::Refund,
            _ => Disposition::Credit,
        }
    }

    pub fn on_payment(&self, facts: &PaymentFacts) -> PaymentDecision {
        let returned = |wanted, reason| PaymentDecision::Return {
            amount: facts.amount,
            disposition: self.refund_or_credit(facts.amount, wanted),
            reason,
        };
        if !facts.job_accepts_payment {
            return returned(self.overpayment, UnappliedReason::JobNotAcceptingPayment);
        }
        // Saturating: a grace window reaching past u64::MAX milliseconds never ends.
        let grace_ends_ms = facts.quote_expires_at_ms.saturating_add(self.late_grace_ms);
        if facts.now_ms > grace_ends_ms {
            return returned(self.after_grace, UnappliedReason::LateBeyondGrace);
        }
        // Saturating: if earlier payments already cover the price, nothing more is owed.
        let owed = facts.price.saturating_sub(facts.applied_before);
        let applied = facts.amount.min(owed);
        let excess = facts.amount.saturating_sub(applied);
        PaymentDecision::Apply {
            applied,
            excess: (!excess.is_zero())
                .then(|| (excess, self.refund_or_credit(excess, self.overpayment))),
            remaining: owed.saturating_sub(applied),
        }
    }

    /// Money held for a quote that expired unpaid (a partial payment): returned per the
    /// overpayment rule. `None` when nothing is held.
    pub fn on_expiry(&self, held: Msat) -> Option<Disposition> {
        (!held.is_zero()).then(|| self.refund_or_credit(held, self.overpayment))
    }

    pub(crate) fn from_raw(raw: RawPayments, check: Check<'_>) -> Result<Self, PolicyError> {
        let defaults = PaymentRules::default();
        let overpayment = match raw.overpayment {
            Some(choice) => check.disposition("payments.overpayment", &choice)?,
            None => defaults.overpayment,
        };
        let refund_min = match raw.refund_min_msat {
            Some(v) => check.msat("payments.refund_min_msat", v)?,
            None => defaults.refund_min,
        };
        let late = raw.late.unwrap_or_default();
        let late_grace_ms = check.secs_as_ms(
            "payments.late.grace_secs",
            late.grace_secs.unwrap_or(DEFAULT_GRACE_SECS),
            0,
            MAX_GRACE_SECS,
        )?;
        let after_grace = match late.after_grace {
            Some(choice) => check.disposition("payments.late.after_grace", &choice)?,
            None => defaults.after_grace,
        };
        Ok(PaymentRules {
            overpayment,
            refund_min,
            late_grace_ms,
            after_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPIRES: u64 = 1_000_000;

    fn m(v: u64) -> Msat {
        Msat::from_msat(v)
    }

    fn rules(overpayment: Disposition, after_grace: Disposition) -> PaymentRules {
        PaymentRules {
            overpayment,
            refund_min: m(1_000),
            late_grace_ms: 300_000,
            after_grace,
        }
    }

    fn facts(price: u64, before: u64, amount: u64, now_ms: u64) -> PaymentFacts {
        PaymentFacts {
            price: m(price),
            applied_before: m(before),
            amount: m(amount),
            quote_expires_at_ms: EXPIRES,
            now_ms,
            job_accepts_payment: true,
        }
    }

    fn apply(applied: u64, excess: Option<(u64, Disposition)>, remaining: u64) -> PaymentDecision {
        PaymentDecision::Apply {
            applied: m(applied),
            excess: excess.map(|(v, d)| (m(v), d)),
            remaining: m(remaining),
        }
    }

    use Disposition::{Credit, Refund};

    #[test]
    fn exact_payment_applies_with_nothing_left() {
        let r = rules(Refund, Refund);
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 5_000, 10)),
            apply(5_000, None, 0)
        );
    }

    #[test]
    fn overpayment_excess_is_refunded_or_credited() {
        let refund = rules(Refund, Refund);
        assert_eq!(
            refund.on_payment(&facts(5_000, 0, 8_000, 10)),
            apply(5_000, Some((3_000, Refund)), 0)
        );
        let credit = rules(Credit, Refund);
        assert_eq!(
            credit.on_payment(&facts(5_000, 0, 8_000, 10)),
            apply(5_000, Some((3_000, Credit)), 0)
        );
    }

    #[test]
    fn tiny_excess_is_credited_even_when_refunding() {
        let r = rules(Refund, Refund);
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 5_999, 10)),
            apply(5_000, Some((999, Credit)), 0)
        );
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 6_000, 10)),
            apply(5_000, Some((1_000, Refund)), 0),
            "exactly refund_min is refunded"
        );
    }

    #[test]
    fn partial_payments_accumulate_and_expose_remainder() {
        let r = rules(Refund, Refund);
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 2_000, 10)),
            apply(2_000, None, 3_000)
        );
        assert_eq!(
            r.on_payment(&facts(5_000, 2_000, 2_000, 10)),
            apply(2_000, None, 1_000)
        );
        assert_eq!(
            r.on_payment(&facts(5_000, 4_000, 3_000, 10)),
            apply(1_000, Some((2_000, Refund)), 0),
            "the last partial payment overshoots"
        );
    }

    #[test]
    fn late_payment_within_grace_is_honoured() {
        let r = rules(Refund, Refund);
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 5_000, EXPIRES + 1)),
            apply(5_000, None, 0)
        );
        assert_eq!(
            r.on_payment(&facts(5_000, 0, 5_000, EXPIRES + 300_000)),
            apply(5_000, None, 0),
            "the last millisecond of grace counts"
        );
    }

    #[test]
    fn late_payment_beyond_grace_is_returned_whole() {
        let late = EXPIRES + 300_001;
        let refund = rules(Credit, Refund);
        assert_eq!(
            refund.on_payment(&facts(5_000, 0, 5_000, late)),
            PaymentDecision::Return {
                amount: m(5_000),
                disposition: Refund,
                reason: UnappliedReason::LateBeyondGrace,
            }
        );
        let credit = rules(Refund, Credit);
        assert_eq!(
            credit.on_payment(&facts(5_000, 0, 5_000, late)),
            PaymentDecision::Return {
                amount: m(5_000),
                disposition: Credit,
                reason: UnappliedReason::LateBeyondGrace,
            }
        );
    }

    #[test]
    fn payment_to_a_closed_job_is_returned_whole() {
        let r = rules(Refund, Refund);
        let mut paid_twice = facts(5_000, 5_000, 5_000, 10);
        paid_twice.job_accepts_payment = false;
        assert_eq!(
            r.on_payment(&paid_twice),
            PaymentDecision::Return {
                amount: m(5_000),
                disposition: Refund,
                reason: UnappliedReason::JobNotAcceptingPayment,
            }
        );
        paid_twice.amount = m(10);
        assert!(matches!(
            r.on_payment(&paid_twice),
            PaymentDecision::Return {
                disposition: Credit,
                ..
            }
        ));
    }

    #[test]
    fn expiry_returns_held_partial_payment() {
        let r = rules(Refund, Refund);
        assert_eq!(r.on_expiry(Msat::ZERO), None);
        assert_eq!(r.on_expiry(m(2_000)), Some(Refund));
        assert_eq!(r.on_expiry(m(999)), Some(Credit));
        assert_eq!(rules(Credit, Refund).on_expiry(m(2_000)), Some(Credit));
    }

    proptest! {
        #[test]
        fn payment_decisions_conserve_money(
            price in 0u64..10_000_000,
            before in 0u64..10_000_000,
            amount in any::<u64>(),
            expires in any::<u64>(),
            now in any::<u64>(),
            accepts in any::<bool>(),
            overpay_refund in any::<bool>(),
            grace_ms in 0u64..=86_400_000,
        ) {
            let d = |refund: bool| if refund { Refund } else { Credit };
            let r = PaymentRules {
                overpayment: d(overpay_refund),
                refund_min: m(1_000),
                late_grace_ms: grace_ms,
                after_grace: d(!overpay_refund),
            };
            let decision = r.on_payment(&PaymentFacts {
                price: m(price),
                applied_before: m(before),
                amount: m(amount),
                quote_expires_at_ms: expires,
                now_ms: now,
                job_accepts_payment: accepts,
            });
            match decision {
                PaymentDecision::Apply { applied, excess, remaining } => {
                    let excess_amount = excess.map_or(0, |(e, _)| e.as_msat());
                    prop_assert!(!matches!(excess, Some((e, _)) if e.is_zero()));
                    prop_assert_eq!(u128::from(applied.as_msat()) + u128::from(excess_amount), u128::from(amount));
                    let owed = price.saturating_sub(before);
                    prop_assert!(applied.as_msat() <= owed);
                    prop_assert_eq!(remaining.as_msat(), owed - applied.as_msat());
                    prop_assert!(excess_amount == 0 || remaining.is_zero());
                }
                PaymentDecision::Return { amount: returned, .. } => {
                    prop_assert_eq!(returned.as_msat(), amount);
                }
            }
        }
    }
}
