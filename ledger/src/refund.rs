//! Refund obligations and their payout state.

use serde::{Deserialize, Serialize};

use crate::event::RefundRoute;
use crate::ids::{JobId, Pubkey, RefundId};
use crate::money::Msat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Owed, not yet attempted.
    Due,
    /// A payment was recorded and handed to the backend.
    InFlight,
    /// The backend could not tell: only a lookup may move it on; never paid again.
    Unknown,
    /// The backend said explicitly it failed: may be attempted again.
    Failed,
    Settled,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Due => "due",
            RefundState::InFlight => "in_flight",
            RefundState::Unknown => "unknown",
            RefundState::Failed => "failed",
            RefundState::Settled => "settled",
        }
    }

    pub fn can_start(self) -> bool {
        matches!(self, RefundState::Due | RefundState::Failed)
    }

    pub fn can_resolve(self) -> bool {
        matches!(self, RefundState::InFlight | RefundState::Unknown)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub refund: RefundId,
    pub job: Option<JobId>,
    pub customer: Pubkey,
    pub amount: Msat,
    pub state: RefundState,
    pub attempts: u32,
    pub route: Option<RefundRoute>,
    pub fee: Msat,
    /// Why the refund is waiting, while it cannot be started (see `refund_deferred`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<String>,
}
