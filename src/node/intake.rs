//! Relay intake: one nostr-sdk [`Client`] subscribed to the offered request kinds, to NIP-09
//! deletions and (with a lud16) to zap receipts for us on the configured relays (each relay
//! kept connected, and subscribed again after an outage, by [`super::relays`]), forwarding
//! requests and deletions to the core and receipts to the zap verifier ([`super::zaps`]); the
//! receipts of refunds we sent as zaps (`#P` = us) go to the core ([`super::refunds::zapback`]). A
//! request that may carry a Cashu token goes to the Cashu rail too, after the core
//! ([`super::tokens`]).
//!
//! Signatures: nostr-relay-pool 0.44 verifies every received event (`verify_and_cache`, id and
//! signature) before it emits `RelayPoolNotification::Event`, and emits an event only the first
//! time the pool sees it. So intake forwards verified events only, each once per run; a
//! duplicate across restarts is the ledger's business (`recv:<id>` idempotency key).

use std::sync::Arc;

use nostr_sdk::prelude::{
    Alphabet, Client, Event, EventId, Filter, Keys, Kind, PublicKey, RelayPoolNotification,
    RelayUrl, SingleLetterTag, Timestamp,
};
use paydvm_mints::NUTZAP_KIND;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::core::Command;
use super::now_ms;
use super::relays::{self, Backoff, RelayBoard, Subscriptions, SupervisorParts};
use super::republish::Republisher;
use crate::payments::zap::ZAP_RECEIPT_KIND;
use crate::protocol::nip88;
use crate::protocol::nip90::REQUEST_KINDS;

/// How far before the newest ledger event intake catches up on requests (and, after a relay was
/// down, before the moment it was seen down: `relays`).
pub const CATCH_UP_MS: u64 = 10 * 60 * 1000;
/// How long start-up waits for the first connection attempt to every relay.
const FIRST_ATTEMPTS: std::time::Duration = std::time::Duration::from_secs(6);

pub struct IntakeParts {
    pub keys: Keys,
    pub relays: Vec<RelayUrl>,
    pub kinds: Vec<u16>,
    /// The newest `at` in the ledger.
    pub since_ms: Option<u64>,
    /// Requests (event ids, hex) of jobs to resume: fetched by id, whatever their age.
    pub pending_requests: Vec<String>,
    pub commands: mpsc::Sender<Command>,
    /// Where zap receipts for us go (`None`: no lud16, no zap intake).
    pub zaps: Option<mpsc::Sender<Box<Event>>>,
    /// The NutZap rail, when it is on: kind 9321 events p-tagged to us go there.
    pub nutzaps: Option<mpsc::Sender<Box<Event>>>,
    /// Subscription tiers are sold: subscribe requests (kind 7001) p-tagged to us are read.
    pub subscriptions: bool,
    /// Pauses between connection attempts to a relay that is down.
    pub backoff: Backoff,
    /// Where each relay's state is reported.
    pub board: RelayBoard,
}

pub struct Intake {
    client: Client,
    task: JoinHandle<()>,
    supervisors: Vec<JoinHandle<()>>,
}

impl Intake {
    /// Intake's relay client (its connection status is the node's health).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts forwarding and one connection supervisor per relay ([`super::relays`]): a relay
    /// that is down now is read as soon as it comes up, and again after every outage.
    pub async fn start(parts: IntakeParts) -> anyhow::Result<Intake> {
        let client = super::transport::client(parts.keys.clone());
        let notifications = client.notifications();
        let first_since_ms = parts
            .since_ms
            .unwrap_or_else(now_ms)
            .saturating_sub(CATCH_UP_MS);
        let subscriptions = subscriptions(&parts);
        let republisher = Republisher::new(parts.commands.clone());
        let supervisors = parts
            .relays
            .iter()
            .map(|url| {
                relays::supervise(SupervisorParts {
                    client: client.clone(),
                    url: url.clone(),
                    backoff: parts.backoff,
                    board: parts.board.clone(),
                    subscriptions: Arc::clone(&subscriptions),
                    first_since_ms,
                    republisher: Some(republisher.clone()),
                })
            })
            .collect();
        let rails = Rails {
            zaps: parts.zaps,
            nutzaps: parts.nutzaps,
        };
        let us = parts.keys.public_key();
        let task = tokio::spawn(forward(notifications, parts.commands, rails, us));
        // As before supervisors: start-up returns once each relay is subscribed or known down
        // (bounded), so a node that can read its relays does when `start` returns.
        parts.board.wait_all_tried(FIRST_ATTEMPTS).await;
        Ok(Intake {
            client,
            task,
            supervisors,
        })
    }

    pub async fn shutdown(self) {
        for supervisor in &self.supervisors {
            supervisor.abort();
        }
        self.task.abort();
        self.client.shutdown().await;
    }
}

/// What intake subscribes to on each connection, from `since` on: the offered request kinds,
/// deletions, zap receipts and NutZaps for us (when those rails are on), subscribe requests for
/// us (when tiers are sold), and the requests of interrupted jobs by id (whatever their age).
fn subscriptions(parts: &IntakeParts) -> Subscriptions {
    let us = parts.keys.public_key();
    let kinds: Vec<Kind> = parts.kinds.iter().map(|k| Kind::from(*k)).collect();
    let zaps = parts.zaps.is_some();
    let nutzaps = parts.nutzaps.is_some();
    let subscribe = parts.subscriptions;
    let ids: Vec<EventId> = parts
        .pending_requests
        .iter()
        .filter_map(|id| EventId::from_hex(id).ok())
        .collect();
    Arc::new(move |since: Timestamp| {
        let mut filters = vec![
            (
                "job requests",
                Filter::new().kinds(kinds.clone()).since(since),
            ),
            (
                "deletions",
                Filter::new().kind(Kind::EventDeletion).since(since),
            ),
        ];
        if zaps {
            filters.push((
                "zap receipts",
                Filter::new()
                    .kind(Kind::from(ZAP_RECEIPT_KIND))
                    .pubkey(us)
                    .since(since),
            ));
        }
        // Receipts of the refunds we sent as zaps: NIP-57 receipts name the zap's sender in `P`.
        filters.push((
            "refund zap receipts",
            Filter::new()
                .kind(Kind::from(ZAP_RECEIPT_KIND))
                .custom_tag(SingleLetterTag::uppercase(Alphabet::P), us.to_hex())
                .since(since),
        ));
        if nutzaps {
            // NIP-61: a NutZap p-tags the recipient's identity key.
            filters.push((
                "NutZaps",
                Filter::new()
                    .kind(Kind::from(NUTZAP_KIND))
                    .pubkey(us)
                    .since(since),
            ));
        }
        if subscribe {
            filters.push((
                "subscribe and unsubscribe requests",
                Filter::new()
                    .kinds([
                        Kind::from(nip88::SUBSCRIBE_KIND),
                        Kind::from(nip88::UNSUBSCRIBE_KIND),
                    ])
                    .pubkey(us)
                    .since(since),
            ));
        }
        if !ids.is_empty() {
            filters.push((
                "requests of interrupted jobs",
                Filter::new().ids(ids.clone()),
            ));
        }
        filters
    })
}

/// Where payment evidence events go: each rail verifies its own.
struct Rails {
    zaps: Option<mpsc::Sender<Box<Event>>>,
    nutzaps: Option<mpsc::Sender<Box<Event>>>,
}

async fn forward(
    mut notifications: broadcast::Receiver<RelayPoolNotification>,
    commands: mpsc::Sender<Command>,
    rails: Rails,
    us: PublicKey,
) {
    loop {
        let (relay_url, event) = match notifications.recv().await {
            Ok(RelayPoolNotification::Event {
                relay_url, event, ..
            }) => (relay_url, event),
            Ok(RelayPoolNotification::Shutdown) => break,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("intake lagged; {n} notifications lost (caught up at next start)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let kind = event.kind.as_u16();
        if kind == ZAP_RECEIPT_KIND && sent_by(&event, &us) {
            if commands
                .send(Command::RefundZapReceipt(event))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let rail = match kind {
            ZAP_RECEIPT_KIND => Some(&rails.zaps),
            NUTZAP_KIND => Some(&rails.nutzaps),
            _ => None,
        };
        if let Some(rail) = rail {
            if let Some(rail) = rail {
                let _ = rail.send(event).await;
            }
            continue;
        }
        let command = if event.kind == Kind::EventDeletion {
            Command::Deletion(event)
        } else if kind == nip88::SUBSCRIBE_KIND || kind == nip88::UNSUBSCRIBE_KIND {
            Command::Subscribe(event)
        } else if REQUEST_KINDS.contains(&kind) {
            // The Cashu rail sees it after the core, so a token's payment finds its job.
            if let Some(cashu) = rails.nutzaps.as_ref() {
                if super::tokens::may_carry_tokens(&event) {
                    let request = Command::Request {
                        event: event.clone(),
                        relay: Some(relay_url),
                    };
                    if commands.send(request).await.is_err() {
                        break;
                    }
                    let _ = cashu.send(event).await;
                    continue;
                }
            }
            Command::Request {
                event,
                relay: Some(relay_url),
            }
        } else {
            debug!(kind, "ignoring an event of another kind");
            continue;
        };
        if commands.send(command).await.is_err() {
            break;
        }
    }
}

/// Whether a zap receipt is for a zap we sent (`P` = us) rather than one paid to us (`p`): the
/// receipt of a refund we sent as a zap. Checked for real by the core.
fn sent_by(receipt: &Event, us: &PublicKey) -> bool {
    let tagged = |name: &str| {
        receipt.tags.iter().map(|t| t.as_slice()).any(|t| {
            t.first().is_some_and(|n| n == name) && t.get(1).is_some_and(|v| *v == us.to_hex())
        })
    };
    tagged("P") && !tagged("p")
}
