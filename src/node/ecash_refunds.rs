//! Ecash refunds, off the core's thread (the ecash half of [`super::refunds`]).
//!
//! Route: the customer's kind 10019 lists the mint the money came in at → a NutZap P2PK-locked
//! to their key; otherwise → the token in a NIP-17 private message to them. Routing also
//! *prepares* the attempt in the wallet (`paydvm_mints::refund`): the inputs are chosen and
//! reserved and the plan (token value, mint fee) is known before the core records anything, so
//! a refund the wallet cannot pay is deferred with the numbers instead of failing at the mint.
//! Pay: the attempt's saga makes the token once (or restores it from the mint after a crash),
//! then it is handed over. Settled needs evidence: a relay took the hand-over event carrying the
//! token, or the mint says the token's proofs were claimed. Handing over again is safe (the
//! proofs can be claimed once), so "looking up" an ecash refund is running it again.

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::{Client, EventBuilder, Keys, Kind, PublicKey, RelayUrl, Tag, Timestamp};
use paydvm_ledger::{Asset, JobId, Msat, RefundId, RefundRoute};
use paydvm_mints::events::{nutzap_tags, parse_nutzap_info, NutZapInfo};
use paydvm_mints::{
    normalise_mint_url, FeePayer, Plan, PrepareError, Redeemer, RefundRequest, RefundRun,
    RefundToken, NUTZAP_INFO_KIND, NUTZAP_KIND,
};
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use super::core::{Command, RefundStatus};
use super::refunds::newest_signed_by;
use crate::config::{InputFees, Relays};

/// How long the customer's kind 10019 may take to arrive.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// Ecash refunds handed over at once, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Waits between runs of an attempt whose outcome is unknown: doubles up to the last.
const AGAIN_FIRST: Duration = Duration::from_secs(2);
const AGAIN_MAX: Duration = Duration::from_secs(300);
/// The only unit ecash refunds are made in.
const UNIT: &str = "sat";

/// One ecash refund the core wants routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcashOrder {
    pub refund: RefundId,
    pub attempt: u32,
    pub amount: Msat,
    pub customer: String,
    /// Where the money came in (and where we hold it).
    pub mint: String,
}

/// Where an ecash refund goes, as recorded in `refund_started.route.destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handover {
    /// A NutZap locked to `lock`, published to our relays and `relays`.
    NutZap { lock: String, relays: Vec<String> },
    /// The token in a NIP-17 private message.
    PrivateMessage,
}

impl Handover {
    fn destination(&self, customer: &str) -> String {
        match self {
            Handover::NutZap { lock, relays } => {
                format!("nutzap {customer} lock={lock} relays={}", relays.join(","))
            }
            Handover::PrivateMessage => format!("dm {customer}"),
        }
    }

    fn parse(destination: &str) -> Option<(String, Handover)> {
        let mut words = destination.split(' ');
        match (words.next(), words.next()) {
            (Some("dm"), Some(customer)) => Some((customer.to_owned(), Handover::PrivateMessage)),
            (Some("nutzap"), Some(customer)) => {
                let lock = words.next()?.strip_prefix("lock=")?.to_owned();
                let relays = words
                    .next()?
                    .strip_prefix("relays=")?
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some((customer.to_owned(), Handover::NutZap { lock, relays }))
            }
            _ => None,
        }
    }

    fn lock(&self) -> Option<&str> {
        match self {
            Handover::NutZap { lock, .. } => Some(lock),
            Handover::PrivateMessage => None,
        }
    }
}

pub struct EcashRefundDesk {
    worker: Arc<Worker>,
}

impl std::fmt::Debug for EcashRefundDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcashRefundDesk").finish_non_exhaustive()
    }
}

/// The wallet-store tag of one routing of a refund attempt: its saga (inputs, outputs, token)
/// lives under it. Routing again before `refund_started` is written makes a new tag; the old one
/// is abandoned.
fn attempt_tag(refund: &str, attempt: u32, now_ms: u64) -> String {
    format!("{refund}#{attempt}/{now_ms}")
}

impl EcashRefundDesk {
    pub fn new(
        redeemer: Arc<Redeemer>,
        identity: Keys,
        relays: Relays,
        commands: mpsc::Sender<Command>,
        fees: InputFees,
        dns: Option<Arc<dyn reqwest::dns::Resolve>>,
    ) -> EcashRefundDesk {
        let fee_payer = match fees {
            InputFees::Operator => FeePayer::Operator,
            InputFees::Customer => FeePayer::Customer,
        };
        let guard = Arc::new(super::relay_guard::RelayGuard::new(&relays, dns));
        EcashRefundDesk {
            worker: Arc::new(Worker {
                redeemer,
                client: super::transport::guarded_client(identity.clone(), guard),
                identity,
                relays,
                commands,
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                fee_payer,
            }),
        }
    }

    /// Chooses the hand-over and prepares the attempt; answers `RefundRouted` or
    /// `RefundDeferred`.
    pub fn route(&self, order: EcashOrder) {
        let this = Arc::clone(&self.worker);
        tokio::spawn(async move {
            let command = match this.prepare(&order).await {
                Ok(route) => Command::RefundRouted {
                    refund: order.refund.clone(),
                    attempt: order.attempt,
                    route,
                },
                Err(reason) => {
                    super::repeat_log::refund_deferred("ecash", order.refund.as_str(), &reason);
                    Command::RefundDeferred {
                        refund: order.refund,
                        reason,
                    }
                }
            };
            let _ = this.commands.send(command).await;
        });
    }

    /// Runs a recorded attempt until its token is handed over or it fails explicitly, backing off
    /// while its outcome is unknown (every outcome is reported to the core).
    /// `job` is the job the refund belongs to (named in the hand-over), if any.
    pub fn pay(&self, refund: RefundId, job: Option<JobId>, attempt: u32, route: RefundRoute) {
        let this = Arc::clone(&self.worker);
        tokio::spawn(async move {
            let mut wait = AGAIN_FIRST;
            loop {
                let status = {
                    let _permit = this.in_flight.clone().acquire_owned().await;
                    this.settle(&refund, job.as_ref(), &route).await
                };
                let unknown = matches!(status, RefundStatus::Unknown(_));
                let sent = this
                    .commands
                    .send(Command::RefundOutcome {
                        refund: refund.clone(),
                        attempt,
                        status,
                    })
                    .await;
                if !unknown || sent.is_err() {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(AGAIN_MAX);
            }
        });
    }

    /// Releases an attempt that was prepared but will not be started (the route came stale, or
    /// the ledger refused it).
    pub fn abandon(&self, tag: String, reason: String) {
        let this = Arc::clone(&self.worker);
        tokio::spawn(async move {
            if let Err(e) = this.redeemer.abandon_refund(&tag, &reason).await {
                warn!(%tag, "cannot release an unstarted ecash refund yet: {e}");
            }
        });
    }

    /// At start-up: releases every attempt an earlier run prepared (routed before `before_ms`)
    /// that never got its `refund_started` (`live` holds the tags the ledger has in flight).
    pub fn abandon_unstarted(&self, live: Vec<String>, before_ms: u64) {
        let this = Arc::clone(&self.worker);
        tokio::spawn(async move {
            let prepared = match this.redeemer.prepared_refunds().await {
                Ok(p) => p,
                Err(e) => return warn!("cannot list prepared ecash refunds: {e}"),
            };
            let stale = prepared
                .into_iter()
                .filter(|t| !live.contains(t) && routed_at(t).is_some_and(|at| at < before_ms));
            for tag in stale {
                let reason = "prepared by an earlier run and never started";
                if let Err(e) = this.redeemer.abandon_refund(&tag, reason).await {
                    warn!(%tag, "cannot release an unstarted ecash refund yet: {e}");
                }
            }
        });
    }
}

/// When a tag was routed (its `/<unix ms>` suffix).
fn routed_at(tag: &str) -> Option<u64> {
    tag.rsplit_once('/').and_then(|(_, ms)| ms.parse().ok())
}

struct Worker {
    redeemer: Arc<Redeemer>,
    identity: Keys,
    client: Client,
    /// Ours, and the policy for the relays a customer's kind 10019 names.
    relays: Relays,
    commands: mpsc::Sender<Command>,
    in_flight: Arc<Semaphore>,
    fee_payer: FeePayer,
}

impl Worker {
    /// Connects to our relays and to those of `extra` (a customer's) that the node may contact
    /// (`Relays::customer_host_allowed`: never the node's own host or network on a customer's
    /// say-so); the others are left out.
    async fn connected(&self, extra: &[String]) {
        let theirs = extra
            .iter()
            .filter_map(|r| RelayUrl::parse(r).ok())
            .filter(|r| self.relays.customer_host_allowed(r));
        for relay in self.relays.urls.iter().cloned().chain(theirs) {
            let _ = self.client.add_relay(relay).await;
        }
        self.client.connect().await;
    }

    async fn handover_for(&self, order: &EcashOrder) -> Result<Handover, String> {
        let customer = PublicKey::from_hex(&order.customer).map_err(|e| e.to_string())?;
        self.connected(&[]).await;
        let info = newest_signed_by(
            &self.client,
            customer,
            Kind::from(NUTZAP_INFO_KIND),
            INFO_TIMEOUT,
        )
        .await
        .map_err(|e| format!("cannot fetch the customer's kind 10019: {e}"))?
        .and_then(|e| {
            let tags: Vec<Vec<String>> = e.tags.iter().map(|t| t.as_slice().to_vec()).collect();
            parse_nutzap_info(&tags)
        });
        let ours = normalise_mint_url(&order.mint);
        Ok(match info {
            Some(NutZapInfo {
                pubkey,
                mints,
                relays,
            }) if mints.contains(&ours) => Handover::NutZap {
                lock: pubkey,
                relays,
            },
            _ => Handover::PrivateMessage,
        })
    }

    /// The route of a prepared attempt, or why the refund waits.
    async fn prepare(&self, order: &EcashOrder) -> Result<RefundRoute, String> {
        if !order.amount.as_msat().is_multiple_of(1000) {
            return Err(format!(
                "{} is not a whole number of sat: ecash refunds are made in sat",
                order.amount
            ));
        }
        let handover = self.handover_for(order).await?;
        let now_ms = super::now_ms();
        let tag = attempt_tag(order.refund.as_str(), order.attempt, now_ms);
        let request = RefundRequest {
            tag: &tag,
            mint: &order.mint,
            unit: UNIT,
            owed: order.amount.as_msat() / 1000,
            lock: handover.lock(),
            fee_payer: self.fee_payer,
            now: now_ms / 1000,
        };
        match self.redeemer.prepare_refund(&request).await {
            Ok(plan) => {
                info!(refund = %order.refund, tag, token = plan.token_value, fee = plan.fee, "ecash refund prepared");
                Ok(RefundRoute {
                    asset: Asset::Mint {
                        url: order.mint.clone(),
                    },
                    destination: handover.destination(&order.customer),
                    lookup: tag,
                    // The operator's fee leaves the mint account on top of the refund; a fee the
                    // customer bears is part of it.
                    fee_reserve: match plan.fee_payer {
                        FeePayer::Operator => Msat::from_msat(plan.fee.saturating_mul(1000)),
                        FeePayer::Customer => Msat::ZERO,
                    },
                    zap: None,
                })
            }
            Err(e @ PrepareError::Cannot(_)) => Err(format!(
                "{e}; the operator can add float at {} or re-route the refund",
                order.mint
            )),
            Err(e) => Err(format!("cannot prepare the ecash refund: {e}")),
        }
    }

    /// Runs the attempt and hands its token over; settled only with evidence.
    async fn settle(
        &self,
        refund: &RefundId,
        job: Option<&JobId>,
        route: &RefundRoute,
    ) -> RefundStatus {
        let tag = &route.lookup;
        let Some((customer, handover)) = Handover::parse(&route.destination) else {
            return RefundStatus::Unknown("unreadable ecash route".into());
        };
        let token = match self.redeemer.run_refund(tag).await {
            RefundRun::Token(token) => token,
            RefundRun::Failed(reason) => return RefundStatus::Failed(reason),
            RefundRun::Unknown(reason) => return RefundStatus::Unknown(reason),
        };
        if let Ok(Some(true)) = self.redeemer.refund_claimed(tag).await {
            return settled(&token.plan, "claimed at the mint".into());
        }
        match self.hand_over(job, &customer, &handover, &token).await {
            Ok(event) => {
                info!(%refund, %tag, %event, "ecash refund handed over");
                settled(&token.plan, format!("handed over in event {event}"))
            }
            Err(reason) => {
                warn!(%refund, %tag, "handing the ecash refund over failed: {reason}");
                RefundStatus::Unknown(reason)
            }
        }
    }

    /// Publishes the token (a NutZap, or a gift-wrapped message); the id of the event a relay
    /// took.
    async fn hand_over(
        &self,
        job: Option<&JobId>,
        customer: &str,
        handover: &Handover,
        token: &RefundToken,
    ) -> Result<String, String> {
        let customer_key = PublicKey::from_hex(customer).map_err(|e| e.to_string())?;
        let job = job.map_or("", JobId::as_str);
        let mint = token_mint(token)?;
        let note = fee_note(&token.plan);
        let sent = match handover {
            Handover::NutZap { relays, .. } => {
                self.connected(relays).await;
                let tags = nutzap_tags(&token.proofs, &mint, UNIT, customer, job)
                    .into_iter()
                    .map(Tag::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                // The same created_at for every hand-over of this attempt: a re-send is the same
                // event id, which relays keep once.
                let event = EventBuilder::new(
                    Kind::from(NUTZAP_KIND),
                    format!("paydvm refund for job {job}{note}"),
                )
                .tags(tags)
                .custom_created_at(Timestamp::from(token.plan.created_at))
                .sign_with_keys(&self.identity)
                .map_err(|e| e.to_string())?;
                self.client.send_event(&event).await
            }
            Handover::PrivateMessage => {
                self.connected(&[]).await;
                let text = format!("paydvm refund for job {job}{note}: {}", token.token);
                self.client.send_private_msg(customer_key, text, []).await
            }
        }
        .map_err(|e| e.to_string())?;
        if sent.success.is_empty() {
            return Err("no relay took the refund".into());
        }
        Ok(sent.val.to_hex())
    }
}

/// The mint a token is at (the route's asset says the same; the token is authoritative).
fn token_mint(token: &RefundToken) -> Result<String, String> {
    use std::str::FromStr;
    let parsed = cdk::nuts::Token::from_str(&token.token).map_err(|e| e.to_string())?;
    parsed
        .mint_url()
        .map(|u| u.to_string())
        .map_err(|e| e.to_string())
}

/// What the hand-over says about the mint's fee when the customer bears it.
fn fee_note(plan: &Plan) -> String {
    match plan.fee_payer {
        FeePayer::Customer if plan.fee > 0 => format!(
            " ({} sat: {} sat owed minus the mint's {} sat fee)",
            plan.token_value,
            plan.token_value + plan.fee,
            plan.fee
        ),
        _ => String::new(),
    }
}

/// Paid: the mint's fee for making the token, borne by whom the plan says.
fn settled(plan: &Plan, evidence: String) -> RefundStatus {
    RefundStatus::Paid {
        fee: Msat::from_msat(plan.fee.saturating_mul(1000)),
        fee_paid_by: match plan.fee_payer {
            FeePayer::Operator => paydvm_ledger::FeePayer::Operator,
            FeePayer::Customer => paydvm_ledger::FeePayer::Customer,
        },
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_back_as_they_were_written() {
        for handover in [
            Handover::PrivateMessage,
            Handover::NutZap {
                lock: "ab".repeat(32),
                relays: vec!["wss://a.example".into(), "ws://127.0.0.1:1".into()],
            },
            Handover::NutZap {
                lock: "02".repeat(33),
                relays: vec![],
            },
        ] {
            let written = handover.destination("cafe");
            assert_eq!(Handover::parse(&written), Some(("cafe".into(), handover)));
        }
        assert_eq!(Handover::parse("lnbc1..."), None);
        assert_eq!(Handover::parse("nutzap cafe"), None);
    }
}
