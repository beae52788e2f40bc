//! The core's half of refunds: which refunds to route, pay or look up, and booking what the
//! [`RefundDesk`](crate::node::refunds::RefundDesk) reports. The order that makes a refund safe:
//! the exact invoice is recorded (`refund_started`) and written to disk before the desk may pay
//! it; an unknown outcome is recorded and only looked up from then on.

use std::collections::HashMap;

use anyhow::anyhow;
use paydvm_ledger::{
    Asset, EventBody, LedgerEvent, Msat, RefundId, RefundRecord, RefundRoute, RefundState, UnixMs,
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{key, Core};
use crate::lightning::PaymentStatus;
use crate::node::ecash_refunds::EcashOrder;
use crate::node::refunds::RefundOrder;

/// Attempts (explicitly failed payments) before a refund waits for the operator.
pub const MAX_REFUND_ATTEMPTS: u32 = 5;
/// Waits before routing a deferred or failed refund again: doubles from the first to the last.
const RETRY_FIRST_MS: u64 = 5_000;
const RETRY_MAX_MS: u64 = 600_000;

/// What the core is doing about one open refund, in memory only: after a restart every open
/// refund is looked at afresh (in flight or unknown → look up; due or failed → route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefundTask {
    /// The desk is finding an invoice; `tries` deferrals so far, for the back-off.
    Routing { tries: u32 },
    /// `refund_started` is staged or written; the desk pays once it is on disk.
    Paying,
    /// The desk is looking the payment up.
    LookingUp,
    /// Route again at this time.
    RetryAt { at: UnixMs, tries: u32 },
    /// Waits for the operator (too many failed attempts, no rail for the asset).
    Parked,
}

/// A refund to pay once the batch recording its `refund_started` is on disk.
pub(super) type RefundPayment = (String, u32, RefundRoute);

impl Core {
    /// Starts what each open refund needs next. Called on every tick and at start-up.
    pub(super) fn drive_refunds(&mut self, now: UnixMs) -> anyhow::Result<()> {
        let open: Vec<RefundRecord> = self
            .store
            .state()
            .refunds()
            .filter(|r| r.state != RefundState::Settled)
            .cloned()
            .collect();
        self.refund_tasks
            .retain(|id, _| open.iter().any(|r| r.refund.as_str() == id));
        for record in open {
            let id = record.refund.to_string();
            let task = self.refund_tasks.get(&id).copied();
            match record.state {
                RefundState::InFlight | RefundState::Unknown => {
                    if task.is_none() {
                        self.look_up_refund(&record);
                    }
                }
                RefundState::Due | RefundState::Failed => match task {
                    None => self.route_refund(&record, 0)?,
                    Some(RefundTask::RetryAt { at, tries }) if at <= now => {
                        self.route_refund(&record, tries)?
                    }
                    _ => {}
                },
                RefundState::Settled => {}
            }
        }
        Ok(())
    }

    /// Asks the rail what became of a recorded payment: a Lightning look-up by payment hash; for
    /// ecash, handing the same token over again (it was made once, see `ecash_refunds`).
    fn look_up_refund(&mut self, record: &RefundRecord) {
        let Some(route) = &record.route else {
            return;
        };
        let refund = record.refund.to_string();
        match (&route.asset, &self.refunds, &self.ecash_refunds) {
            (Asset::Lightning, Some(desk), _) => {
                info!(%refund, "looking up a refund payment before anything else");
                desk.look_up(refund.clone(), record.attempts, route.clone());
            }
            (Asset::Mint { .. }, _, Some(desk)) => {
                info!(%refund, "handing an ecash refund over again");
                desk.pay(
                    refund.clone(),
                    record.attempts,
                    record.amount,
                    route.clone(),
                    true,
                );
            }
            _ => return,
        }
        self.refund_tasks.insert(refund, RefundTask::LookingUp);
    }

    fn route_refund(&mut self, record: &RefundRecord, tries: u32) -> anyhow::Result<()> {
        let id = record.refund.to_string();
        if record.attempts >= MAX_REFUND_ATTEMPTS {
            self.refund_tasks.insert(id, RefundTask::Parked);
            let reason =
                format!("{MAX_REFUND_ATTEMPTS} payment attempts failed; waiting for the operator");
            return self.defer_refund(&record.refund, &reason);
        }
        let attempt = record.attempts.saturating_add(1);
        match self.refund_asset(record)? {
            Some(Asset::Lightning) => {}
            Some(Asset::Mint { url }) => {
                let Some(desk) = &self.ecash_refunds else {
                    self.refund_tasks.insert(id, RefundTask::Parked);
                    let reason = format!("paid in ecash at {url} but the Cashu rail is off");
                    return self.defer_refund(&record.refund, &reason);
                };
                desk.route(EcashOrder {
                    refund: id.clone(),
                    attempt,
                    amount: record.amount,
                    customer: record.customer.to_string(),
                    mint: url,
                });
                self.refund_tasks.insert(id, RefundTask::Routing { tries });
                return Ok(());
            }
            None => {
                self.refund_tasks.insert(id, RefundTask::Parked);
                let reason =
                    "no rail payment to pay it back over (the job was paid from prepaid credit)";
                return self.defer_refund(&record.refund, reason);
            }
        }
        let Some(desk) = &self.refunds else {
            self.refund_tasks.insert(id, RefundTask::Parked);
            return self.defer_refund(&record.refund, "no Lightning backend configured");
        };
        let refund_to = match &record.job {
            Some(job) => self
                .stored_pending(job)
                .ok()
                .flatten()
                .and_then(|p| p.request.refund_to),
            None => None,
        };
        desk.route(RefundOrder {
            refund: id.clone(),
            attempt,
            amount: record.amount,
            customer: record.customer.to_string(),
            refund_to,
        });
        self.refund_tasks.insert(id, RefundTask::Routing { tries });
        Ok(())
    }

    /// The asset the refunded money came in on: the payment the refund id names (excess and
    /// returned payments), else the asset that paid the job the most.
    fn refund_asset(&self, record: &RefundRecord) -> anyhow::Result<Option<Asset>> {
        let Some(job) = &record.job else {
            return Ok(None);
        };
        let Some(trail) = self.store.audit(job.as_str())? else {
            return Ok(None);
        };
        let named = record
            .refund
            .as_str()
            .split_once(":excess:")
            .or_else(|| record.refund.as_str().split_once(":return:"))
            .map(|(_, reference)| reference.to_owned());
        let mut by_asset: HashMap<String, (Asset, Msat)> = HashMap::new();
        for event in trail.events {
            let EventBody::PaymentReceived(payment) = event.event else {
                continue;
            };
            if named.as_deref() == Some(payment.reference.as_str()) {
                return Ok(Some(payment.asset));
            }
            let entry = by_asset
                .entry(format!("{:?}", payment.asset))
                .or_insert((payment.asset.clone(), Msat::ZERO));
            entry.1 = entry.1.checked_add(payment.amount)?;
        }
        Ok(by_asset
            .into_values()
            .max_by_key(|(_, amount)| *amount)
            .map(|(asset, _)| asset))
    }

    /// Records why a refund waits, once per distinct reason.
    fn defer_refund(&mut self, refund: &RefundId, reason: &str) -> anyhow::Result<()> {
        let Some(record) = self.store.state().refund(refund) else {
            return Ok(());
        };
        if !record.state.can_start() || record.deferred.as_deref() == Some(reason) {
            return Ok(());
        }
        let digest = hex::encode(&Sha256::digest(reason.as_bytes())[..8]);
        let event = LedgerEvent::new(
            key(format!(
                "refund-deferred:{refund}:{}:{digest}",
                record.attempts
            ))?,
            self.now(),
            EventBody::RefundDeferred {
                refund: refund.clone(),
                reason: reason.to_owned(),
            },
        );
        self.commit(vec![event], Vec::new())?;
        Ok(())
    }

    pub(super) fn on_refund_deferred(&mut self, refund: &str, reason: &str) -> anyhow::Result<()> {
        let id = refund_id(refund)?;
        self.defer_refund(&id, reason)?;
        self.retry_later(refund);
        Ok(())
    }

    fn retry_later(&mut self, refund: &str) {
        let tries = match self.refund_tasks.get(refund) {
            Some(RefundTask::Routing { tries } | RefundTask::RetryAt { tries, .. }) => {
                tries.saturating_add(1)
            }
            _ => 1,
        };
        let wait = RETRY_FIRST_MS
            .saturating_mul(1u64 << tries.saturating_sub(1).min(16))
            .min(RETRY_MAX_MS);
        let at = UnixMs(self.now().0.saturating_add(wait));
        self.refund_tasks
            .insert(refund.to_owned(), RefundTask::RetryAt { at, tries });
    }

    /// The desk found an invoice: record it, and pay it once that record is on disk.
    pub(super) fn on_refund_routed(
        &mut self,
        refund: &str,
        attempt: u32,
        route: RefundRoute,
    ) -> anyhow::Result<()> {
        let id = refund_id(refund)?;
        let Some(record) = self.store.state().refund(&id) else {
            return Err(anyhow!("no refund {refund}"));
        };
        if !record.state.can_start() || record.attempts.saturating_add(1) != attempt {
            warn!(%refund, attempt, state = record.state.as_str(), "stale refund route ignored");
            return Ok(());
        }
        let event = LedgerEvent::new(
            key(format!("refund-start:{refund}:{attempt}"))?,
            self.now(),
            EventBody::RefundStarted {
                refund: id,
                attempt,
                route: route.clone(),
            },
        );
        if self.commit(vec![event], Vec::new())? {
            self.deferred
                .refund_payments
                .push((refund.to_owned(), attempt, route));
            self.refund_tasks
                .insert(refund.to_owned(), RefundTask::Paying);
        }
        Ok(())
    }

    /// What the backend said about a refund payment (after paying, or from a look-up).
    pub(super) fn on_refund_outcome(
        &mut self,
        refund: &str,
        attempt: u32,
        status: PaymentStatus,
    ) -> anyhow::Result<()> {
        let id = refund_id(refund)?;
        let Some(record) = self.store.state().refund(&id).cloned() else {
            return Err(anyhow!("no refund {refund}"));
        };
        if record.attempts != attempt || !record.state.can_resolve() {
            return Ok(());
        }
        let at = self.now();
        match status {
            PaymentStatus::Settled { fee, .. } => {
                info!(%refund, fee_msat = fee.as_msat(), "refund paid");
                let event = LedgerEvent::new(
                    key(format!("refund-settled:{refund}"))?,
                    at,
                    EventBody::RefundSettled { refund: id, fee },
                );
                self.commit(vec![event], Vec::new())?;
                self.refund_tasks.remove(refund);
            }
            PaymentStatus::Failed(reason) => {
                warn!(%refund, attempt, %reason, "refund payment failed");
                let event = LedgerEvent::new(
                    key(format!("refund-failed:{refund}:{attempt}"))?,
                    at,
                    EventBody::RefundFailed {
                        refund: id,
                        reason: bounded(&reason),
                    },
                );
                self.commit(vec![event], Vec::new())?;
                self.retry_later(refund);
            }
            status @ (PaymentStatus::Unknown(_) | PaymentStatus::NotFound) => {
                if record.state == RefundState::InFlight {
                    let reason = waiting_for(&record, &status);
                    warn!(%refund, attempt, %reason, "refund outcome unknown");
                    let event = LedgerEvent::new(
                        key(format!("refund-unknown:{refund}:{attempt}"))?,
                        at,
                        EventBody::RefundOutcomeUnknown { refund: id, reason },
                    );
                    self.commit(vec![event], Vec::new())?;
                }
                if self.refund_tasks.get(refund) != Some(&RefundTask::LookingUp) {
                    self.look_up_refund(&record);
                }
            }
        }
        Ok(())
    }

    /// Hands the desk the refunds whose `refund_started` the last flush wrote.
    pub(super) fn pay_recorded_refunds(&mut self, payments: Vec<RefundPayment>) {
        for (refund, attempt, route) in payments {
            match (&route.asset, &self.refunds, &self.ecash_refunds) {
                (Asset::Lightning, Some(desk), _) => desk.pay(refund, attempt, route),
                (Asset::Mint { .. }, _, Some(desk)) => {
                    let amount = refund_id(&refund)
                        .ok()
                        .and_then(|id| self.store.state().refund(&id).map(|r| r.amount));
                    if let Some(amount) = amount {
                        // The hand-over retries by itself while its outcome is unknown.
                        desk.pay(refund.clone(), attempt, amount, route, true);
                        self.refund_tasks.insert(refund, RefundTask::LookingUp);
                    }
                }
                _ => warn!(%refund, "no rail to pay a recorded refund over"),
            }
        }
    }

    /// After a failed flush: the recorded refunds were undone, route them again later.
    pub(super) fn forget_refund_payments(&mut self, payments: Vec<RefundPayment>) {
        for (refund, _, _) in payments {
            self.refund_tasks.remove(&refund);
        }
    }
}

fn refund_id(refund: &str) -> anyhow::Result<RefundId> {
    RefundId::new(refund).map_err(|e| anyhow!("{e}"))
}

/// The reason `refund_outcome_unknown` records (`paydvm audit` shows it): for Lightning, what
/// the node now waits for and the wallet's last word (`Unknown` or `NotFound`).
fn waiting_for(record: &RefundRecord, answer: &PaymentStatus) -> String {
    let said = match answer {
        PaymentStatus::Unknown(reason) => bounded(reason),
        _ => "no record of this payment (never sent? the same invoice is paid again once a \
              second look-up agrees)"
            .to_owned(),
    };
    match record.route.as_ref().map(|r| &r.asset) {
        Some(Asset::Lightning) => format!(
            "looking the payment up by its hash until the wallet says settled or failed; \
             last answer: {said}"
        ),
        _ => said,
    }
}

/// Backend reasons are outside text: keep the ledger's copy short.
fn bounded(reason: &str) -> String {
    reason.chars().take(200).collect()
}
