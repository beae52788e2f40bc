//! Subscription entitlements: a paid period with a job quota.

use serde::{Deserialize, Serialize};

use crate::event::Asset;
use crate::ids::{Pubkey, SubscriptionId, UnixMs};
use crate::money::Msat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementState {
    /// Quoted and not yet paid for a first period (no period: both ends are zero): grants no
    /// job.
    Quoted,
    Active,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub subscription: SubscriptionId,
    pub subscriber: Pubkey,
    pub tier: String,
    pub period_start: UnixMs,
    pub period_end: UnixMs,
    pub quota: u32,
    pub used: u32,
    pub state: EntitlementState,
    /// The price of one period as quoted (zero in records written before quotes existed).
    #[serde(default, skip_serializing_if = "crate::event::is_zero_msat")]
    pub price: Msat,
    /// The length of one period as quoted (zero: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub period_ms: u64,
    /// When the subscriber withdrew (`subscription_cancelled`): no period follows the current
    /// one, and later payments are refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<UnixMs>,
    /// The asset of the latest payment booked to the subscription: its refunds are paid from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_in: Option<Asset>,
    /// The unused rest of a period was refunded (at most once per subscription: it ends it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unused_refunded: bool,
    /// The end of the period whose successor was last quoted (`subscription_renewal_quoted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_quoted: Option<UnixMs>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
