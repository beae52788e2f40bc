//! The core's half of refunds: which refunds to route, pay or look up, and booking what the desks
//! ([`RefundDesk`](crate::node::refunds::RefundDesk) for Lightning,
//! [`EcashRefundDesk`](crate::node::ecash_refunds::EcashRefundDesk) for ecash) report. The order
//! that makes a refund safe: the exact payment is recorded (`refund_started`, with the asset it
//! leaves from and the fee it may cost reserved) and written to disk before a desk may pay it; an
//! unknown outcome is recorded and only looked up from then on.

use std::collections::HashMap;

use anyhow::anyhow;
use paydvm_ledger::{
    Asset, Cause, EventBody, FeePayer, LedgerError, LedgerEvent, Msat, RefundId, RefundRecord,
    RefundRoute, RefundState, TransitionError, UnixMs, WriteOffTo,
};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use super::{key, Core};
use crate::node::ecash_refunds::EcashOrder;
use crate::node::refunds::RefundOrder;

/// Attempts (explicitly failed payments) before a refund waits for the operator, counted from
/// the operator's last `refund retry`.
pub const MAX_REFUND_ATTEMPTS: u32 = 5;
/// Waits before routing a deferred or failed refund again: doubles from the first to the last.
const RETRY_FIRST_MS: u64 = 5_000;
const RETRY_MAX_MS: u64 = 600_000;

/// What a desk reports about one refund payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    /// Paid, with what proves it (a preimage, the hand-over event, a claimed token) and who bore
    /// the payout fee.
    Paid {
        fee: Msat,
        fee_paid_by: FeePayer,
        evidence: String,
    },
    /// The rail said explicitly that nothing was paid; a new attempt may follow.
    Failed(String),
    /// Anything else: stays pending, looked up again.
    Unknown(String),
}

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
    /// Look the payment up again at this time (its outcome could not be booked).
    LookUpAt { at: UnixMs, tries: u32 },
    /// Waits for the operator (too many failed attempts, no rail for the asset).
    Parked,
}

/// A refund to pay once the batch recording its `refund_started` is on disk.
pub(super) type RefundPayment = (String, u32, RefundRoute);

/// The asset an open refund is paid from.
enum Source {
    Asset(Asset),
    /// Prepaid credit (refunds written by older nodes): it goes back as credit.
    Credit,
}

impl Core {
    /// Starts what each open refund needs next. Called on every tick and at start-up.
    pub(super) fn drive_refunds(&mut self, now: UnixMs) -> anyhow::Result<()> {
        let open: Vec<RefundRecord> = self
            .store
            .state()
            .refunds()
            .filter(|r| !r.state.is_closed())
            .cloned()
            .collect();
        self.refund_tasks
            .retain(|id, _| open.iter().any(|r| r.refund.as_str() == id));
        for record in open {
            let task = self.refund_tasks.get(record.refund.as_str()).copied();
            match (record.state, task) {
                (RefundState::InFlight | RefundState::Unknown, None) => {
                    self.look_up_refund(&record)
                }
                (
                    RefundState::InFlight | RefundState::Unknown,
                    Some(RefundTask::LookUpAt { at, .. }),
                ) if at <= now => self.look_up_refund(&record),
                (RefundState::Due | RefundState::Failed, None) => self.route_refund(&record, 0)?,
                (
                    RefundState::Due | RefundState::Failed,
                    Some(RefundTask::RetryAt { at, tries }),
                ) if at <= now => self.route_refund(&record, tries)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Asks the rail what became of a recorded payment: a Lightning look-up by payment hash; for
    /// ecash, running the attempt again (its token is made once, see `ecash_refunds`).
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
                info!(%refund, "running an ecash refund attempt again");
                desk.pay(refund.clone(), record.attempts, route.clone());
            }
            _ => return,
        }
        self.refund_tasks.insert(refund, RefundTask::LookingUp);
    }

    fn route_refund(&mut self, record: &RefundRecord, tries: u32) -> anyhow::Result<()> {
        let id = record.refund.to_string();
        if record.attempts.saturating_sub(record.retry_base) >= MAX_REFUND_ATTEMPTS {
            self.refund_tasks.insert(id.clone(), RefundTask::Parked);
            let reason = format!(
                "{MAX_REFUND_ATTEMPTS} payment attempts failed; waiting for the operator \
                 (paydvm refund retry|reroute|write-off {id})"
            );
            return self.defer_refund(&record.refund, &reason);
        }
        let asset = match self.refund_source(record)? {
            Source::Asset(asset) => asset,
            Source::Credit => return self.credit_back(record),
        };
        if let Some(short) = self.shortfall(record, &asset) {
            self.refund_tasks
                .insert(id.clone(), RefundTask::Routing { tries });
            return self.on_refund_deferred(&id, &short);
        }
        let attempt = record.attempts.saturating_add(1);
        match asset {
            Asset::Mint { url } => {
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
            }
            Asset::Lightning => {
                let Some(desk) = &self.refunds else {
                    self.refund_tasks.insert(id, RefundTask::Parked);
                    return self.defer_refund(&record.refund, "no Lightning backend configured");
                };
                let refund_to = record
                    .job
                    .as_ref()
                    .and_then(|job| self.stored_pending(job).ok().flatten())
                    .and_then(|p| p.request.refund_to);
                desk.route(RefundOrder {
                    refund: id.clone(),
                    attempt,
                    amount: record.amount,
                    customer: record.customer.to_string(),
                    refund_to,
                });
            }
        }
        self.refund_tasks.insert(id, RefundTask::Routing { tries });
        Ok(())
    }

    /// Why the asset's account cannot pay the refund now, if it cannot: the ledger will not let
    /// a refund start on money it does not hold (over Lightning, the fee cap too).
    fn shortfall(&self, record: &RefundRecord, asset: &Asset) -> Option<String> {
        let cap = match (asset, &self.refunds) {
            (Asset::Lightning, Some(desk)) => desk.max_fee(),
            _ => Msat::ZERO,
        };
        let needs = record.amount.checked_add(cap).ok()?;
        let available = self.store.state().available(asset);
        (available < needs).then(|| {
            format!(
                "asset:{asset} has {available} available; this refund needs {needs} \
                 ({} plus a fee allowance of {cap}). Add float (paydvm float add {asset} <msat>), \
                 re-route or write off the refund (paydvm refund reroute|write-off {})",
                record.amount, record.refund
            )
        })
    }

    /// The asset the refunded money came in on: the ledger records it with every refund it
    /// makes now. Refunds written by older nodes carry none: the job's payments decide (the
    /// asset that brought the most; ties to Lightning, then mints by URL), and a job with no
    /// rail payment was paid from prepaid credit.
    fn refund_source(&self, record: &RefundRecord) -> anyhow::Result<Source> {
        if let Some(asset) = &record.asset {
            return Ok(Source::Asset(asset.clone()));
        }
        let Some(job) = &record.job else {
            return Ok(Source::Credit);
        };
        let Some(trail) = self.store.audit(job.as_str())? else {
            return Ok(Source::Credit);
        };
        let mut by_asset: HashMap<Asset, Msat> = HashMap::new();
        for event in trail.events {
            if let EventBody::PaymentReceived(payment) = event.event {
                let sum = by_asset.entry(payment.asset).or_insert(Msat::ZERO);
                *sum = sum.checked_add(payment.amount)?;
            }
        }
        Ok(by_asset
            .into_iter()
            .max_by(|(a, x), (b, y)| x.cmp(y).then_with(|| b.cmp(a)))
            .map_or(Source::Credit, |(asset, _)| Source::Asset(asset)))
    }

    /// A refund of prepaid credit (written by an older node) goes back as credit.
    fn credit_back(&mut self, record: &RefundRecord) -> anyhow::Result<()> {
        let refund = &record.refund;
        info!(%refund, "crediting back a refund of prepaid credit");
        let event = LedgerEvent::new(
            key(format!("refund-credited-back:{refund}"))?,
            self.now(),
            EventBody::RefundWrittenOff {
                refund: refund.clone(),
                to: WriteOffTo::Credit,
                cause: Cause::Node {
                    note: "paid from prepaid credit: credited back".into(),
                },
            },
        );
        self.commit(vec![event], Vec::new())?;
        Ok(())
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
                reason: bounded(reason, paydvm_ledger::MAX_TEXT_LEN),
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
        let at = self.back_off(tries);
        self.refund_tasks
            .insert(refund.to_owned(), RefundTask::RetryAt { at, tries });
    }

    fn back_off(&self, tries: u32) -> UnixMs {
        let wait = RETRY_FIRST_MS
            .saturating_mul(1u64 << tries.saturating_sub(1).min(16))
            .min(RETRY_MAX_MS);
        UnixMs(self.now().0.saturating_add(wait))
    }

    /// The desk found a route (an invoice; a prepared ecash attempt): record it, and pay it once
    /// that record is on disk. A route the ledger will not start is released and the reason kept.
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
            self.abandon_route(&route, "the route came after the refund had moved on");
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
        match self.commit(vec![event], Vec::new()) {
            Ok(true) => {
                self.deferred
                    .refund_payments
                    .push((refund.to_owned(), attempt, route));
                self.refund_tasks
                    .insert(refund.to_owned(), RefundTask::Paying);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                self.abandon_route(&route, "the ledger refused to start the refund");
                match refused_for_money(&e) {
                    Some(why) => self.on_refund_deferred(refund, &why),
                    None => Err(e),
                }
            }
        }
    }

    /// An ecash route is a prepared attempt holding reserved proofs: release it when it will
    /// not be started. (A Lightning route holds nothing.)
    fn abandon_route(&self, route: &RefundRoute, reason: &str) {
        if let (Asset::Mint { .. }, Some(desk)) = (&route.asset, &self.ecash_refunds) {
            desk.abandon(route.lookup.clone(), reason.to_owned());
        }
    }

    /// Releases the ecash attempts an earlier run prepared but never recorded as started.
    pub(super) fn abandon_unstarted_ecash_refunds(&self) {
        let Some(desk) = &self.ecash_refunds else {
            return;
        };
        let live = self
            .store
            .state()
            .refunds()
            .filter(|r| r.state.can_resolve())
            .filter_map(|r| r.route.as_ref())
            .filter(|route| matches!(route.asset, Asset::Mint { .. }))
            .map(|route| route.lookup.clone())
            .collect();
        desk.abandon_unstarted(live, self.now().0);
    }

    /// What a desk said about a refund payment (after paying, or from a look-up).
    pub(super) fn on_refund_outcome(
        &mut self,
        refund: &str,
        attempt: u32,
        status: RefundStatus,
    ) -> anyhow::Result<()> {
        let id = refund_id(refund)?;
        let Some(record) = self.store.state().refund(&id).cloned() else {
            return Err(anyhow!("no refund {refund}"));
        };
        if record.attempts != attempt || !record.state.can_resolve() {
            return Ok(());
        }
        match status {
            RefundStatus::Paid {
                fee,
                fee_paid_by,
                evidence,
            } => self.refund_paid(&record, fee, fee_paid_by, evidence),
            RefundStatus::Failed(reason) => {
                warn!(%refund, attempt, %reason, "refund payment failed");
                let event = LedgerEvent::new(
                    key(format!("refund-failed:{refund}:{attempt}"))?,
                    self.now(),
                    EventBody::RefundFailed {
                        refund: id,
                        reason: bounded(&reason, 200),
                        cause: None,
                    },
                );
                self.commit(vec![event], Vec::new())?;
                self.retry_later(refund);
                Ok(())
            }
            RefundStatus::Unknown(reason) => self.refund_unknown(&record, attempt, &reason),
        }
    }

    fn refund_paid(
        &mut self,
        record: &RefundRecord,
        fee: Msat,
        fee_paid_by: FeePayer,
        evidence: String,
    ) -> anyhow::Result<()> {
        let refund = record.refund.to_string();
        info!(%refund, fee_msat = fee.as_msat(), %evidence, "refund paid");
        let event = LedgerEvent::new(
            key(format!("refund-settled:{refund}"))?,
            self.now(),
            EventBody::RefundSettled {
                refund: record.refund.clone(),
                fee,
                fee_paid_by,
                evidence: Some(bounded(&evidence, 200)),
                cause: None,
            },
        );
        match self.commit(vec![event], Vec::new()) {
            Ok(_) => {
                self.refund_tasks.remove(&refund);
                Ok(())
            }
            // The money left, but the asset cannot cover the fee the wallet reports: the outcome
            // stays pending (never "failed") until the operator books float; look again later.
            Err(e) => {
                error!(%refund, "a paid refund cannot be booked: {e:#}; add float (paydvm float add)");
                let tries = match self.refund_tasks.get(&refund) {
                    Some(RefundTask::LookUpAt { tries, .. }) => tries.saturating_add(1),
                    _ => 1,
                };
                let at = self.back_off(tries);
                self.refund_tasks
                    .insert(refund, RefundTask::LookUpAt { at, tries });
                Ok(())
            }
        }
    }

    fn refund_unknown(
        &mut self,
        record: &RefundRecord,
        attempt: u32,
        reason: &str,
    ) -> anyhow::Result<()> {
        let refund = record.refund.to_string();
        if record.state == RefundState::InFlight {
            let reason = waiting_for(record, reason);
            warn!(%refund, attempt, %reason, "refund outcome unknown; looking it up");
            let event = LedgerEvent::new(
                key(format!("refund-unknown:{refund}:{attempt}"))?,
                self.now(),
                EventBody::RefundOutcomeUnknown {
                    refund: record.refund.clone(),
                    reason,
                },
            );
            self.commit(vec![event], Vec::new())?;
        }
        if self.refund_tasks.get(&refund) != Some(&RefundTask::LookingUp) {
            self.look_up_refund(record);
        }
        Ok(())
    }

    /// Hands the desks the refunds whose `refund_started` the last flush wrote.
    pub(super) fn pay_recorded_refunds(&mut self, payments: Vec<RefundPayment>) {
        for (refund, attempt, route) in payments {
            match (&route.asset, &self.refunds, &self.ecash_refunds) {
                (Asset::Lightning, Some(desk), _) => desk.pay(refund, attempt, route),
                (Asset::Mint { .. }, _, Some(desk)) => {
                    // The attempt runs again by itself while its outcome is unknown.
                    desk.pay(refund.clone(), attempt, route);
                    self.refund_tasks.insert(refund, RefundTask::LookingUp);
                }
                _ => warn!(%refund, "no rail to pay a recorded refund over"),
            }
        }
    }

    /// After a failed flush: the recorded refunds were undone, route them again later.
    pub(super) fn forget_refund_payments(&mut self, payments: Vec<RefundPayment>) {
        for (refund, _, route) in payments {
            self.abandon_route(&route, "writing the ledger failed");
            self.refund_tasks.remove(&refund);
        }
    }
}

/// The customer-safe words for a ledger refusal about money (an asset that cannot cover the
/// refund), if that is what `e` is.
fn refused_for_money(e: &anyhow::Error) -> Option<String> {
    match e.downcast_ref::<LedgerError>() {
        Some(LedgerError::Refused {
            source: source @ TransitionError::AssetShort { .. },
            ..
        }) => Some(format!(
            "{source}. Add float (paydvm float add) or re-route or write off the refund"
        )),
        _ => None,
    }
}

fn refund_id(refund: &str) -> anyhow::Result<RefundId> {
    RefundId::new(refund).map_err(|e| anyhow!("{e}"))
}

/// The reason `refund_outcome_unknown` records (`paydvm audit` shows it): what the node now
/// waits for, and the rail's last word.
fn waiting_for(record: &RefundRecord, said: &str) -> String {
    let said = bounded(said, 200);
    match record.route.as_ref().map(|r| &r.asset) {
        Some(Asset::Lightning) => format!(
            "looking the payment up by its hash until the wallet says settled or failed; \
             last answer: {said}"
        ),
        _ => said,
    }
}

/// Outside text (backend reasons, evidence) is kept short in the ledger.
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
