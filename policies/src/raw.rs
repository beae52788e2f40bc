//! The policy file exactly as written: serde structs, no validation.
//!
//! Integers are `i64` (TOML's integer type) and choices are strings so that range and
//! spelling mistakes are reported by validation with a field path, not by serde.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub quote: Option<RawQuote>,
    pub pricing: Option<RawPricing>,
    pub payments: Option<RawPayments>,
    pub failures: Option<RawFailures>,
    pub admission: Option<RawAdmission>,
    pub results: Option<RawResults>,
    pub mints: Option<RawMints>,
    pub subscriptions: Option<RawSubscriptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuote {
    pub expiry_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPricing {
    #[serde(default)]
    pub kind: Vec<RawKindPrice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKindPrice {
    pub kind: i64,
    pub mode: String,
    pub amount_msat: Option<i64>,
    pub base_msat: Option<i64>,
    /// A string ("0.5") or an integer; floats are rejected by validation with a hint.
    pub per_unit_msat: Option<toml::Value>,
    pub unit: Option<String>,
    pub max_msat: Option<i64>,
    pub min_msat: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayments {
    pub overpayment: Option<String>,
    pub refund_min_msat: Option<i64>,
    pub late: Option<RawLate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLate {
    pub grace_secs: Option<i64>,
    pub after_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFailures {
    pub max_attempts: Option<i64>,
    pub then: Option<String>,
    pub on_cancel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmission {
    #[serde(default)]
    pub free_list: Vec<String>,
    #[serde(default)]
    pub block_list: Vec<String>,
    pub max_input_bytes: Option<i64>,
    pub max_pending_quotes_per_pubkey: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResults {
    pub expiration_secs: Option<i64>,
    pub processing_feedback_after_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMints {
    #[serde(default)]
    pub trusted: Vec<RawTrustedMint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustedMint {
    pub url: String,
    pub units: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscriptions {
    #[serde(default)]
    pub tier: Vec<RawTier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub id: String,
    pub name: String,
    pub price_msat: i64,
    pub period_secs: i64,
    pub quota: i64,
    pub kinds: Vec<i64>,
    /// `"keep"` (default) or `"refund_unused"`.
    #[serde(default)]
    pub on_cancel: Option<String>,
    /// `"next_period"` (default) or `"refund"`.
    #[serde(default)]
    pub paid_ahead: Option<String>,
    /// How long before a period ends the next one is quoted.
    #[serde(default)]
    pub renew_before_secs: Option<i64>,
    /// How long after a period ended a payment still continues the subscription.
    #[serde(default)]
    pub grace_secs: Option<i64>,
}
