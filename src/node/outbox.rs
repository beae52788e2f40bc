//! The effect outbox: publishes signed events the core stored as `effect_requested`, in order,
//! and reports each delivery back so the core records `effect_done`. An effect that cannot be
//! delivered stays pending in the ledger and is re-sent (the same signed event) at next start.

use std::time::Duration;

use nostr_sdk::prelude::{Client, Event, Keys, RelayUrl};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::core::Command;

/// How long to wait for a relay connection before trying to publish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per effect in one run, with these pauses between them.
const BACKOFF: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// One signed event to publish to some relays.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The effect id: the event id, hex.
    pub effect: String,
    pub event: Event,
    pub relays: Vec<RelayUrl>,
}

/// The sending side; dropping it lets the publisher finish its queue and report
/// [`Command::OutboxDrained`].
pub struct Outbox {
    tx: mpsc::UnboundedSender<Publication>,
}

impl Outbox {
    pub fn start(keys: Keys, commands: mpsc::UnboundedSender<Command>) -> Outbox {
        let (tx, mut rx) = mpsc::unbounded_channel::<Publication>();
        tokio::spawn(async move {
            let client = Client::new(keys);
            while let Some(p) = rx.recv().await {
                if let Some(detail) = publish(&client, &p).await {
                    let _ = commands.send(Command::Published {
                        effect: p.effect,
                        detail,
                    });
                }
            }
            client.shutdown().await;
            let _ = commands.send(Command::OutboxDrained);
        });
        Outbox { tx }
    }

    pub fn publish(&self, p: Publication) {
        if self.tx.send(p).is_err() {
            warn!("outbox stopped; effect stays pending");
        }
    }
}

/// Publishes `p`; `Some(detail)` once at least one relay accepted it.
async fn publish(client: &Client, p: &Publication) -> Option<String> {
    if p.relays.is_empty() {
        warn!(effect = %p.effect, "no relay to publish to");
        return None;
    }
    for relay in &p.relays {
        if let Err(e) = client.add_write_relay(relay.clone()).await {
            warn!(%relay, "cannot add relay: {e}");
            continue;
        }
        if let Err(e) = client
            .try_connect_relay(relay.clone(), CONNECT_TIMEOUT)
            .await
        {
            debug!(%relay, "not connected yet: {e}");
        }
    }
    for attempt in 0..=BACKOFF.len() {
        match client.send_event_to(p.relays.clone(), &p.event).await {
            Ok(out) if !out.success.is_empty() => {
                let mut ok: Vec<String> = out.success.iter().map(|r| r.to_string()).collect();
                ok.sort();
                for (relay, why) in &out.failed {
                    debug!(effect = %p.effect, %relay, "relay refused: {why}");
                }
                return Some(format!("published to {}", ok.join(", ")));
            }
            Ok(out) => {
                warn!(effect = %p.effect, failed = ?out.failed, "no relay accepted the event")
            }
            Err(e) => warn!(effect = %p.effect, "publishing failed: {e}"),
        }
        if let Some(pause) = BACKOFF.get(attempt) {
            tokio::time::sleep(*pause).await;
        }
    }
    warn!(effect = %p.effect, "left pending; re-sent at next start");
    None
}
