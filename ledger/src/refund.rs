//! Refund obligations and their payout state.

use serde::{Deserialize, Serialize};

use crate::event::{Asset, FeePayer, RefundRoute, WriteOffTo};
use crate::ids::{EventId, JobId, Pubkey, RefundId};
use crate::money::{MoneyError, Msat};

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
    /// The operator wrote it off (to the customer's credit or to income): never paid.
    WrittenOff,
}

impl RefundState {
    pub const ALL: [RefundState; 6] = [
        RefundState::Due,
        RefundState::InFlight,
        RefundState::Unknown,
        RefundState::Failed,
        RefundState::Settled,
        RefundState::WrittenOff,
    ];

    pub fn parse(s: &str) -> Option<RefundState> {
        RefundState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Due => "due",
            RefundState::InFlight => "in_flight",
            RefundState::Unknown => "unknown",
            RefundState::Failed => "failed",
            RefundState::Settled => "settled",
            RefundState::WrittenOff => "written_off",
        }
    }

    pub fn can_start(self) -> bool {
        matches!(self, RefundState::Due | RefundState::Failed)
    }

    pub fn can_resolve(self) -> bool {
        matches!(self, RefundState::InFlight | RefundState::Unknown)
    }

    /// Settled or written off: nothing is owed any more.
    pub fn is_closed(self) -> bool {
        matches!(self, RefundState::Settled | RefundState::WrittenOff)
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
    /// The asset the refund is paid from, decided once when the refund was created (or by
    /// `refund_rerouted`). `None` only for refunds of held money recorded by older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<Asset>,
    /// `attempts` when the operator last asked for a retry (`refund_retried`): the node parks a
    /// refund after N failed attempts counted from here.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retry_base: u32,
    /// Who bore `fee` (settled refunds).
    #[serde(default, skip_serializing_if = "FeePayer::is_operator")]
    pub fee_paid_by: FeePayer,
    /// What proves the payout (settled refunds), as recorded by `refund_settled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Where the money went when the refund was written off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_off_to: Option<WriteOffTo>,
    /// The verified zap receipt of a refund sent as a zap (`refund_zap_receipt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zap_receipt: Option<EventId>,
}

impl RefundRecord {
    /// A new refund owed to `customer`, not yet routed.
    pub fn due(
        refund: &RefundId,
        job: Option<JobId>,
        customer: &Pubkey,
        amount: Msat,
        asset: Option<Asset>,
    ) -> RefundRecord {
        RefundRecord {
            refund: refund.clone(),
            job,
            customer: customer.clone(),
            amount,
            state: RefundState::Due,
            attempts: 0,
            route: None,
            fee: Msat::ZERO,
            deferred: None,
            asset,
            retry_base: 0,
            fee_paid_by: Default::default(),
            evidence: None,
            written_off_to: None,
            zap_receipt: None,
        }
    }
}

impl RefundRecord {
    /// What this refund holds back from its route's asset while in flight or unknown: the
    /// amount plus the route's fee reserve.
    pub fn reservation(&self) -> Result<Option<(Asset, Msat)>, MoneyError> {
        match (&self.route, self.state.can_resolve()) {
            (Some(route), true) => Ok(Some((
                route.asset.clone(),
                self.amount.checked_add(route.fee_reserve)?,
            ))),
            _ => Ok(None),
        }
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
