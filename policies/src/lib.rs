//! Operator policies for paydvm: pricing, admission, payment, refund and subscription rules.
//!
//! A policy is read from TOML ([`Policy::load`], [`Policy::from_toml_str`]), validated into
//! typed rules, and then asked questions through pure functions: facts in, decision out.
//! Times are unix **milliseconds** passed in by the caller; nothing here reads a clock.
//! See `docs/configuration-policies.md` for every field, default and range, and
//! [`pricing`] for the rounding rule (per-unit prices round **up** to a whole msat).

mod admission;
mod check;
mod error;
mod expiry;
mod failures;
mod mints;
mod payments;
pub mod pricing;
mod raw;
mod tiers;

#[cfg(test)]
mod validation_tests;

use std::path::Path;

use paydvm_ledger::Msat;

pub use admission::{
    is_pubkey_hex, Admission, AdmissionFacts, AdmissionRules, RejectReason,
    DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PENDING_QUOTES,
};
pub use error::{DecisionError, PolicyError};
pub use expiry::{DEFAULT_QUOTE_EXPIRY_SECS, MAX_QUOTE_EXPIRY_SECS, MIN_RESULT_EXPIRATION_SECS};
pub use failures::{FailureDecision, FailureRules, DEFAULT_MAX_ATTEMPTS, MAX_MAX_ATTEMPTS};
pub use mints::{normalise_mint_url, TrustedMint};
pub use payments::{
    Disposition, PaymentDecision, PaymentFacts, PaymentRules, UnappliedReason, DEFAULT_GRACE_SECS,
    DEFAULT_REFUND_MIN_MSAT, MAX_GRACE_SECS,
};
pub use pricing::{InputMeasure, PerUnitPrice, PriceDecision, PriceMode, Pricing, Unit};
pub use tiers::{OnCancel, PaidAhead, Tier, MIN_PERIOD_SECS};

use check::Check;
use raw::RawPolicy;

/// A validated operator policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    quote_expiry_ms: u64,
    pricing: Pricing,
    payments: PaymentRules,
    failures: FailureRules,
    admission: AdmissionRules,
    result_expiration_ms: Option<u64>,
    processing_feedback_after_ms: u64,
    trusted_mints: Vec<TrustedMint>,
    tiers: Vec<Tier>,
}

impl Policy {
    /// Reads and validates a policy file; errors name `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: origin.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &origin)
    }

    /// Parses and validates policy TOML; `origin` names the source in errors. Stops at the
    /// first invalid field.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|source| PolicyError::Syntax {
            file: origin.to_owned(),
            source,
        })?;
        let check = Check { file: origin };
        let quote_expiry_ms = expiry::quote_expiry_ms(raw.quote.unwrap_or_default(), check)?;
        let pricing = Pricing::from_raw(raw.pricing.unwrap_or_default(), check)?;
        let payments = PaymentRules::from_raw(raw.payments.unwrap_or_default(), check)?;
        let failures = FailureRules::from_raw(raw.failures.unwrap_or_default(), check)?;
        let admission = AdmissionRules::from_raw(raw.admission.unwrap_or_default(), check)?;
        let results = raw.results.unwrap_or_default();
        let processing_feedback_after_ms = expiry::processing_feedback_after_ms(&results, check)?;
        let result_expiration_ms = expiry::result_expiration_ms(results, check)?;
        let trusted_mints =
            mints::trusted_mints_from_raw(raw.mints.unwrap_or_default().trusted, check)?;
        let tiers =
            tiers::tiers_from_raw(raw.subscriptions.unwrap_or_default().tier, &pricing, check)?;
        Ok(Policy {
            quote_expiry_ms,
            pricing,
            payments,
            failures,
            admission,
            result_expiration_ms,
            processing_feedback_after_ms,
            trusted_mints,
            tiers,
        })
    }

    /// The price of one request; see [`pricing`] for the rounding rule.
    pub fn price(&self, kind: u16, input: &InputMeasure) -> Result<PriceDecision, DecisionError> {
        self.pricing.price(kind, input)
    }

    pub fn admit(&self, facts: &AdmissionFacts<'_>) -> Admission {
        self.admission.admit(facts, &self.pricing)
    }

    /// When a quote issued at `now_ms` stops being payable (grace aside).
    pub fn quote_expires_at(&self, now_ms: u64) -> Result<u64, DecisionError> {
        error::add_ms(now_ms, self.quote_expiry_ms)
    }

    /// The NIP-40 expiration (unix ms) for a result published at `now_ms`, if results expire.
    pub fn result_expires_at(&self, now_ms: u64) -> Result<Option<u64>, DecisionError> {
        self.result_expiration_ms
            .map(|ms| error::add_ms(now_ms, ms))
            .transpose()
    }

    /// How long a job queued without a payment (free, on a subscription, from credit) runs
    /// before its `processing` feedback is sent: 0 sends it with the start; a job done sooner
    /// gets its result alone. A paid job's feedback acknowledges the payment and goes at once.
    pub fn processing_feedback_after_ms(&self) -> u64 {
        self.processing_feedback_after_ms
    }

    pub fn on_payment(&self, facts: &PaymentFacts) -> PaymentDecision {
        self.payments.on_payment(facts)
    }

    /// `attempts_so_far` includes the attempt that just failed.
    pub fn on_failure(&self, attempts_so_far: u32, retryable: bool) -> FailureDecision {
        self.failures.on_failure(attempts_so_far, retryable)
    }

    /// Money held for a job the customer cancelled before processing; `None` if nothing held.
    pub fn on_cancel(&self, held: Msat) -> Option<Disposition> {
        (!held.is_zero()).then(|| self.refund_or_credit(held, self.failures.on_cancel))
    }

    /// A partial payment held when the quote expired; `None` if nothing held.
    pub fn on_expiry(&self, held: Msat) -> Option<Disposition> {
        self.payments.on_expiry(held)
    }

    /// `wanted`, except that a refund below `payments.refund_min_msat` becomes a credit.
    /// Apply it to the amount of a [`FailureDecision::Refund`] too.
    pub fn refund_or_credit(&self, amount: Msat, wanted: Disposition) -> Disposition {
        self.payments.refund_or_credit(amount, wanted)
    }

    pub fn tier(&self, id: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.id == id)
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Looks a mint up by URL, ignoring trailing slashes.
    pub fn trusted_mint(&self, url: &str) -> Option<&TrustedMint> {
        let url = normalise_mint_url(url);
        self.trusted_mints.iter().find(|m| m.url == url)
    }

    pub fn trusted_mints(&self) -> &[TrustedMint] {
        &self.trusted_mints
    }

    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    pub fn payments(&self) -> &PaymentRules {
        &self.payments
    }

    pub fn failures(&self) -> &FailureRules {
        &self.failures
    }

    pub fn admission(&self) -> &AdmissionRules {
        &self.admission
    }

    pub fn quote_expiry_ms(&self) -> u64 {
        self.quote_expiry_ms
    }

    pub fn result_expiration_ms(&self) -> Option<u64> {
        self.result_expiration_ms
    }
}
