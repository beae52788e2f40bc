//! Subscription entitlements: a paid period with a job quota.

use serde::{Deserialize, Serialize};

use crate::ids::{Pubkey, SubscriptionId, UnixMs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementState {
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
}
