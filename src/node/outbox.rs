//! The effect outbox: publishes signed events the core stored as `effect_requested` (one job's
//! events in order, different jobs' concurrently) and reports each delivery back so the core
//! records `effect_done`. An effect that cannot be delivered stays pending in the ledger and is
//! re-sent (the same signed event) at next start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::{Client, Event, Keys, RelayUrl};
use paydvm_ledger::EffectId;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::core::Command;
use super::queues;
use super::telemetry::Telemetry;

/// How long to wait for a relay connection before trying to publish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishing lanes: events of different jobs go out concurrently, one job's in order.
const LANES: usize = 16;
/// After a failed connection attempt, other lanes skip the relay this long instead of each
/// waiting out its own timeout.
const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(1);
/// Attempts per effect in one run, with these pauses between them.
const BACKOFF: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// One signed event to publish to some relays.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The effect id: the event id, hex.
    pub effect: EffectId,
    pub event: Event,
    pub relays: Vec<RelayUrl>,
}

/// The sending side; dropping it lets the publisher finish its queue and report
/// [`Command::OutboxDrained`].
pub struct Outbox {
    tx: mpsc::Sender<Publication>,
    /// Counts the publications taken and not yet delivered or given up (the backlog gauge).
    telemetry: Telemetry,
}

impl Outbox {
    /// `guard` checks the relays customers name before they are connected to.
    pub fn start(
        keys: Keys,
        commands: mpsc::Sender<Command>,
        telemetry: Telemetry,
        guard: Arc<super::relay_guard::RelayGuard>,
    ) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Publication>(queues::OUTBOX);
        let lanes_telemetry = telemetry.clone();
        tokio::spawn(async move {
            let telemetry = lanes_telemetry;
            let client = super::transport::guarded_client(keys, guard);
            let links = Links::new(client.clone());
            let mut lanes = JoinSet::new();
            let senders: Vec<_> = (0..LANES)
                .map(|_| {
                    let (lane_tx, lane_rx) = mpsc::channel::<Publication>(queues::OUTBOX_LANE);
                    lanes.spawn(lane(
                        links.clone(),
                        lane_rx,
                        commands.clone(),
                        telemetry.clone(),
                    ));
                    lane_tx
                })
                .collect();
            while let Some(p) = rx.recv().await {
                let _ = senders[lane_of(&p.event)].send(p).await;
            }
            drop(senders);
            while lanes.join_next().await.is_some() {}
            client.shutdown().await;
            let _ = commands.send(Command::OutboxDrained).await;
        });
        Outbox { tx, telemetry }
    }

    /// Queues `p` without waiting; gives its effect id back when the queue is full (the caller
    /// keeps the effect pending and hands it over again later).
    pub fn publish(&self, p: Publication) -> Result<(), EffectId> {
        match self.tx.try_send(p) {
            Ok(()) => {
                self.telemetry.outbox_backlog(1.0);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(p)) => Err(p.effect),
            Err(mpsc::error::TrySendError::Closed(p)) => {
                warn!(effect = %p.effect, "outbox stopped; effect stays pending");
                Ok(())
            }
        }
    }
}

/// Publishes one lane's events in order and reports each delivery.
async fn lane(
    links: Links,
    mut rx: mpsc::Receiver<Publication>,
    commands: mpsc::Sender<Command>,
    telemetry: Telemetry,
) {
    while let Some(p) = rx.recv().await {
        let delivered = publish(&links, &p).await;
        telemetry.outbox_backlog(-1.0);
        match delivered {
            Some(detail) => {
                let _ = commands
                    .send(Command::Published {
                        effect: p.effect,
                        detail,
                    })
                    .await;
            }
            None => {
                let _ = commands
                    .send(Command::PublishGaveUp { effect: p.effect })
                    .await;
            }
        }
    }
}

/// The lane of an event: the job it answers (its `e` tag), so one job's feedback and result
/// keep their order; otherwise its own id.
fn lane_of(event: &Event) -> usize {
    let id = event.tags.event_ids().next().unwrap_or(&event.id);
    usize::from(id.as_bytes()[0]) % LANES
}

/// The lanes' shared relay connections. Each relay is connected by one lane at a time: a lane
/// that found a relay still connecting would otherwise drop it from the pool while another lane
/// sends to it, and that send fails with "no relays". The lock is per relay, so a relay that
/// does not answer (a customer's, say) holds up only the lanes publishing to it.
#[derive(Clone)]
struct Links {
    client: Client,
    /// Per relay ever published to: when it last failed to connect; locked while connecting.
    slots: Arc<std::sync::Mutex<HashMap<RelayUrl, ConnectSlot>>>,
}

/// One relay's connection attempts: when the last one failed (`None`: it did not).
type ConnectSlot = Arc<Mutex<Option<Instant>>>;

impl Links {
    fn new(client: Client) -> Links {
        Links {
            client,
            slots: Arc::default(),
        }
    }

    /// The relays of `relays` that are connected, after connecting the others afresh. A relay
    /// the pool is still waiting to reconnect is dropped and added again, so a publication
    /// never waits out the pool's back-off (up to a minute) or a send timeout on a dead
    /// connection.
    async fn connected(&self, relays: &[RelayUrl]) -> Vec<RelayUrl> {
        let mut up = Vec::with_capacity(relays.len());
        for relay in relays {
            if self.is_connected(relay).await || self.connect(relay).await {
                up.push(relay.clone());
            }
        }
        up
    }

    /// Connects `relay` afresh, unless another lane connected it meanwhile or failed to less
    /// than [`RETRY_CONNECT_AFTER`] ago.
    async fn connect(&self, relay: &RelayUrl) -> bool {
        let slot = self.slot(relay);
        let mut last_failure = slot.lock().await;
        if self.is_connected(relay).await {
            return true;
        }
        if last_failure.is_some_and(|at| at.elapsed() < RETRY_CONNECT_AFTER) {
            return false;
        }
        let connected = self.reconnect(relay).await;
        *last_failure = (!connected).then(Instant::now);
        connected
    }

    fn slot(&self, relay: &RelayUrl) -> ConnectSlot {
        // Held only to look the slot up: never across an await.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(relay.clone()).or_default())
    }

    async fn is_connected(&self, relay: &RelayUrl) -> bool {
        matches!(self.client.relay(relay).await, Ok(r) if r.is_connected())
    }

    /// Drops `relay` from the pool if it is there and connects it afresh.
    async fn reconnect(&self, relay: &RelayUrl) -> bool {
        let _ = self.client.force_remove_relay(relay.clone()).await;
        if let Err(e) = self.client.add_write_relay(relay.clone()).await {
            warn!(%relay, "cannot add relay: {e}");
            return false;
        }
        match self
            .client
            .try_connect_relay(relay.clone(), CONNECT_TIMEOUT)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                debug!(%relay, "not connected: {e}");
                false
            }
        }
    }
}

/// Publishes `p`; `Some(detail)` once at least one relay accepted it.
async fn publish(links: &Links, p: &Publication) -> Option<String> {
    if p.relays.is_empty() {
        warn!(effect = %p.effect, "no relay to publish to");
        return None;
    }
    for attempt in 0..=BACKOFF.len() {
        let up = links.connected(&p.relays).await;
        let sent = if up.is_empty() {
            None
        } else {
            Some(links.client.send_event_to(up, &p.event).await)
        };
        match sent {
            Some(Ok(out)) if !out.success.is_empty() => {
                let mut ok: Vec<String> = out.success.iter().map(|r| r.to_string()).collect();
                ok.sort();
                for (relay, why) in &out.failed {
                    debug!(effect = %p.effect, %relay, "relay refused: {why}");
                }
                return Some(format!("published to {}", ok.join(", ")));
            }
            Some(Ok(out)) => {
                warn!(effect = %p.effect, failed = ?out.failed, "no relay accepted the event")
            }
            Some(Err(e)) => warn!(effect = %p.effect, "publishing failed: {e}"),
            None => debug!(effect = %p.effect, "no relay connected"),
        }
        if let Some(pause) = BACKOFF.get(attempt) {
            tokio::time::sleep(*pause).await;
        }
    }
    warn!(effect = %p.effect, "left pending; re-sent later in this run and at next start");
    None
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::EventBuilder;

    use super::*;

    /// The core never waits on the outbox: past its queue, a publication is given back (its
    /// effect stays pending and goes again later), never dropped in silence.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_outbox_gives_the_effect_back() {
        let keys = Keys::generate();
        let (commands, _rx) = queues::commands();
        let relays = crate::config::Relays {
            urls: Vec::new(),
            publish_cap: crate::config::DEFAULT_PUBLISH_CAP,
            customer: crate::config::CustomerRelays::Ignored,
            customer_loopback: false,
        };
        let guard = Arc::new(super::super::relay_guard::RelayGuard::new(&relays, None));
        let outbox = Outbox::start(keys.clone(), commands, Telemetry::new("test"), guard);
        let event = EventBuilder::text_note("x").sign_with_keys(&keys).unwrap();
        let publication = |n: usize| Publication {
            effect: EffectId::new(format!("effect-{n}")).unwrap(),
            event: event.clone(),
            relays: Vec::new(),
        };
        // The outbox task has not run yet (one thread, no await): its queue only fills.
        for n in 0..queues::OUTBOX {
            assert_eq!(outbox.publish(publication(n)), Ok(()), "publication {n}");
        }
        assert_eq!(
            outbox.publish(publication(queues::OUTBOX)),
            Err(EffectId::new(format!("effect-{}", queues::OUTBOX)).unwrap())
        );
    }
}
