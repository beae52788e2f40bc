//! Ecash refunds, off the core's thread (the ecash half of [`super::refunds`]).
//!
//! Route: the customer's kind 10019 lists the mint the money came in at → a NutZap P2PK-locked
//! to their key; otherwise → the token in a NIP-17 private message to them.
//! Pay: the token is made at most once per attempt (found again by the attempt's tag in the
//! wallet store, see `paydvm_mints::refund`), then handed over. Handing over again is safe
//! (the proofs can be claimed once), so "looking up" an ecash refund is paying it again.

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::{Client, EventBuilder, Keys, Kind, PublicKey, RelayUrl, Tag};
use paydvm_ledger::{Asset, Msat, RefundRoute};
use paydvm_mints::events::{nutzap_tags, parse_nutzap_info, NutZapInfo};
use paydvm_mints::{normalise_mint_url, Redeemer, RefundTokenError, NUTZAP_INFO_KIND, NUTZAP_KIND};
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use super::core::Command;
use super::refunds::newest_signed_by;
use crate::lightning::PaymentStatus;

/// How long the customer's kind 10019 may take to arrive.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// Ecash refunds handed over at once, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Waits between hand-over attempts whose outcome was unknown: doubles up to the last.
const AGAIN_FIRST: Duration = Duration::from_secs(2);
const AGAIN_MAX: Duration = Duration::from_secs(300);
/// The only unit ecash refunds are made in.
const UNIT: &str = "sat";

/// One ecash refund the core wants routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcashOrder {
    pub refund: String,
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
}

pub struct EcashRefundDesk {
    redeemer: Arc<Redeemer>,
    identity: Keys,
    client: Client,
    relays: Vec<RelayUrl>,
    commands: mpsc::UnboundedSender<Command>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for EcashRefundDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcashRefundDesk").finish_non_exhaustive()
    }
}

impl EcashRefundDesk {
    pub fn new(
        redeemer: Arc<Redeemer>,
        identity: Keys,
        relays: Vec<RelayUrl>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> EcashRefundDesk {
        EcashRefundDesk {
            redeemer,
            client: super::transport::client(identity.clone()),
            identity,
            relays,
            commands,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Chooses how to hand the refund over; answers `RefundRouted` or `RefundDeferred`.
    pub fn route(&self, order: EcashOrder) {
        let this = self.worker();
        tokio::spawn(async move {
            let command = match this.handover_for(&order).await {
                Ok(handover) => Command::RefundRouted {
                    refund: order.refund.clone(),
                    attempt: order.attempt,
                    route: RefundRoute {
                        asset: Asset::Mint {
                            url: order.mint.clone(),
                        },
                        destination: handover.destination(&order.customer),
                        lookup: attempt_tag(&order.refund, order.attempt),
                        fee_reserve: Msat::ZERO,
                    },
                },
                Err(reason) => Command::RefundDeferred {
                    refund: order.refund,
                    reason,
                },
            };
            let _ = this.commands.send(command);
        });
    }

    /// Makes (once) and hands over the token of a recorded route; with `again`, keeps trying
    /// with back-off while the outcome is unknown.
    pub fn pay(&self, refund: String, attempt: u32, amount: Msat, route: RefundRoute, again: bool) {
        let this = self.worker();
        tokio::spawn(async move {
            let mut wait = AGAIN_FIRST;
            loop {
                let status = {
                    let _permit = this.in_flight.clone().acquire_owned().await;
                    this.hand_over(&refund, attempt, amount, &route).await
                };
                let unknown = matches!(status, PaymentStatus::Unknown(_));
                let _ = this.commands.send(Command::RefundOutcome {
                    refund: refund.clone(),
                    attempt,
                    status,
                });
                if !(unknown && again) {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(AGAIN_MAX);
            }
        });
    }

    fn worker(&self) -> Arc<Worker> {
        Arc::new(Worker {
            redeemer: Arc::clone(&self.redeemer),
            identity: self.identity.clone(),
            client: self.client.clone(),
            relays: self.relays.clone(),
            commands: self.commands.clone(),
            in_flight: Arc::clone(&self.in_flight),
        })
    }
}

struct Worker {
    redeemer: Arc<Redeemer>,
    identity: Keys,
    client: Client,
    relays: Vec<RelayUrl>,
    commands: mpsc::UnboundedSender<Command>,
    in_flight: Arc<Semaphore>,
}

/// The wallet-store tag of one refund attempt: its token is made once per tag.
fn attempt_tag(refund: &str, attempt: u32) -> String {
    format!("{refund}#{attempt}")
}

impl Worker {
    async fn connected(&self, extra: &[String]) {
        for relay in self
            .relays
            .iter()
            .map(|r| r.to_string())
            .chain(extra.iter().cloned())
        {
            let _ = self.client.add_relay(relay).await;
        }
        self.client.connect().await;
    }

    async fn handover_for(&self, order: &EcashOrder) -> Result<Handover, String> {
        if !order.amount.as_msat().is_multiple_of(1000) {
            return Err(format!(
                "{} is not a whole number of sat: ecash refunds are made in sat",
                order.amount
            ));
        }
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

    async fn hand_over(
        &self,
        refund: &str,
        attempt: u32,
        amount: Msat,
        route: &RefundRoute,
    ) -> PaymentStatus {
        let Asset::Mint { url: mint } = &route.asset else {
            return PaymentStatus::Failed("not an ecash route".into());
        };
        let Some((customer, handover)) = Handover::parse(&route.destination) else {
            return PaymentStatus::Failed("unreadable ecash route".into());
        };
        let lock = match &handover {
            Handover::NutZap { lock, .. } => Some(lock.as_str()),
            Handover::PrivateMessage => None,
        };
        let token = match self
            .redeemer
            .refund_token(
                mint,
                UNIT,
                amount.as_msat() / 1000,
                lock,
                &attempt_tag(refund, attempt),
            )
            .await
        {
            Ok(token) => token,
            // Made earlier and already claimed: the customer has it.
            Err(RefundTokenError::AlreadyClaimed) => {
                return PaymentStatus::Settled {
                    preimage: String::new(),
                    fee: Msat::ZERO,
                }
            }
            // Nothing left our wallet: explicit, another attempt may follow.
            Err(e @ (RefundTokenError::Insufficient { .. } | RefundTokenError::BadLock)) => {
                return PaymentStatus::Failed(e.to_string())
            }
            Err(RefundTokenError::Retry(reason)) => return PaymentStatus::Unknown(reason),
        };
        let fee = Msat::from_msat(token.fee.saturating_mul(1000));
        let Ok(customer_key) = PublicKey::from_hex(&customer) else {
            return PaymentStatus::Failed("bad customer key in the route".into());
        };
        let job = refund.split(':').next().unwrap_or_default();
        let sent = match &handover {
            Handover::NutZap { relays, .. } => {
                self.connected(relays).await;
                let tags = nutzap_tags(&token.proofs, mint, UNIT, &customer, job)
                    .into_iter()
                    .map(Tag::parse)
                    .collect::<Result<Vec<_>, _>>();
                match tags {
                    Ok(tags) => {
                        let event = EventBuilder::new(
                            Kind::from(NUTZAP_KIND),
                            format!("paydvm refund for job {job}"),
                        )
                        .tags(tags)
                        .sign_with_keys(&self.identity);
                        match event {
                            Ok(event) => self
                                .client
                                .send_event(&event)
                                .await
                                .map(|o| o.success.len()),
                            Err(e) => return PaymentStatus::Unknown(e.to_string()),
                        }
                    }
                    Err(e) => return PaymentStatus::Unknown(e.to_string()),
                }
            }
            Handover::PrivateMessage => {
                self.connected(&[]).await;
                let text = format!("paydvm refund for job {job}: {}", token.token);
                self.client
                    .send_private_msg(customer_key, text, [])
                    .await
                    .map(|o| o.success.len())
            }
        };
        match sent {
            Ok(n) if n > 0 => {
                info!(%refund, attempt, again = token.found_again, "ecash refund handed over");
                PaymentStatus::Settled {
                    preimage: String::new(),
                    fee,
                }
            }
            Ok(_) => PaymentStatus::Unknown("no relay took the refund".into()),
            Err(e) => {
                warn!(%refund, "handing the ecash refund over failed: {e}");
                PaymentStatus::Unknown(e.to_string())
            }
        }
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
