//! Intake's relay connections: one supervisor task per configured relay connects it with bounded
//! back-off, subscribes afresh on every (re)connect (catching up since the relay was last seen
//! down), has the announcements it lacks republished ([`super::republish`]), and reports up/down
//! to a shared [`RelayBoard`] (which `paydvm status` reads through the control socket).
//!
//! Why not the pool's own reconnection: nostr-relay-pool 0.44 gives up for good on a relay whose
//! first `try_connect` fails (status `Terminated`), and on a reconnect it re-sends the stored
//! filters with their original `since`. So each connection here is a fresh pool relay with
//! reconnection off, and this task owns the retries and the filters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::pool::{RelayNotification, RelayOptions};
use nostr_sdk::prelude::{Client, Filter, Relay, RelayStatus, RelayUrl, SubscriptionId, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::now_ms;
use super::republish::Republisher;
use super::telemetry::Telemetry;

/// Longest connection error kept for `paydvm status`.
const MAX_ERROR_CHARS: usize = 200;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pauses between connection attempts: `first` after the first failure, doubled after each
/// further one, never more than `max`; each pause is picked at random in its upper half so that
/// many nodes (or relays) do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// One second, doubling, at most a minute.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// `first` is raised to a millisecond and `max` to `first`, so a pause is never zero.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Backoff {
            first,
            max: max.max(first),
        }
    }

    /// The longest pause for the attempt after `failures` failed ones (before jitter).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The pause before the next attempt after `failures` failed ones, jittered.
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// One relay as intake sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReport {
    pub url: String,
    /// Connected and subscribed.
    pub up: bool,
    /// When it last went up or down (unix ms; `0`: never tried yet).
    pub changed_at_ms: u64,
    /// Successful connections in this run.
    pub connects: u64,
    /// Why the last attempt failed, while it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Every configured relay's state, shared by the supervisors (writers) and the control socket
/// (reader). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RelayBoard {
    relays: Arc<Mutex<BTreeMap<String, RelayReport>>>,
    changed: Arc<Notify>,
    /// Told each relay's up/down (the `paydvm_relay_up` gauge), when set.
    telemetry: Option<Telemetry>,
}

impl RelayBoard {
    /// A board listing `relays`, all down and not tried yet.
    pub fn new(relays: &[RelayUrl]) -> Self {
        Self::observed(relays, None)
    }

    /// [`RelayBoard::new`] telling `telemetry` each change.
    pub fn observed(relays: &[RelayUrl], telemetry: Option<Telemetry>) -> Self {
        let board = RelayBoard {
            telemetry,
            ..RelayBoard::default()
        };
        for url in relays {
            board.update(url, |r| r.up = false);
        }
        board
    }

    /// The relays, sorted by URL.
    pub fn snapshot(&self) -> Vec<RelayReport> {
        self.lock().values().cloned().collect()
    }

    /// Waits (at most `timeout`) until every relay has been tried once: up and subscribed, or
    /// down with a reason.
    pub async fn wait_all_tried(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change right after it is not missed.
            changed.as_mut().enable();
            if self.lock().values().all(|r| r.changed_at_ms != 0) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Whether `url` is up now.
    pub fn is_up(&self, url: &RelayUrl) -> bool {
        self.lock().get(url.as_str()).is_some_and(|r| r.up)
    }

    fn set_up(&self, url: &RelayUrl) {
        self.update(url, |r| {
            r.up = true;
            r.changed_at_ms = now_ms();
            r.connects = r.connects.saturating_add(1);
            r.last_error = None;
        });
    }

    fn set_down(&self, url: &RelayUrl, error: Option<String>) {
        let error = error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
        self.update(url, |r| {
            if r.up || r.changed_at_ms == 0 {
                r.changed_at_ms = now_ms();
            }
            r.up = false;
            r.last_error = error;
        });
    }

    fn update(&self, url: &RelayUrl, f: impl FnOnce(&mut RelayReport)) {
        let mut relays = self.lock();
        let report = relays
            .entry(url.to_string())
            .or_insert_with(|| RelayReport {
                url: url.to_string(),
                up: false,
                changed_at_ms: 0,
                connects: 0,
                last_error: None,
            });
        f(report);
        if let Some(telemetry) = &self.telemetry {
            telemetry.relay_up(&report.url, report.up);
        }
        drop(relays);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RelayReport>> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The filters to subscribe to on a connection, given where catch-up starts.
pub type Subscriptions = Arc<dyn Fn(Timestamp) -> Vec<(&'static str, Filter)> + Send + Sync>;

/// What a supervisor needs.
pub struct SupervisorParts {
    pub client: Client,
    pub url: RelayUrl,
    pub backoff: Backoff,
    pub board: RelayBoard,
    pub subscriptions: Subscriptions,
    /// Where catch-up starts on the first connection (unix ms, margin already taken off).
    pub first_since_ms: u64,
    pub republisher: Option<Republisher>,
}

/// Starts the supervisor of one relay; abort the handle to stop it.
pub fn supervise(parts: SupervisorParts) -> JoinHandle<()> {
    tokio::spawn(run(parts))
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Pool(#[from] nostr_sdk::pool::pool::Error),
    #[error("{0}")]
    Client(#[from] nostr_sdk::client::Error),
}

async fn run(parts: SupervisorParts) {
    let SupervisorParts {
        client,
        url,
        backoff,
        board,
        subscriptions,
        first_since_ms,
        republisher,
    } = parts;
    let mut since_ms = first_since_ms;
    let mut failures: u32 = 0;
    // Whether the operator has been told it is down (one line per outage, not per attempt).
    let mut told_down = false;
    loop {
        match connect(&client, &url).await {
            Ok(relay) => {
                failures = 0;
                let since = Timestamp::from_secs(since_ms / 1000);
                subscribe(&client, &url, subscriptions(since)).await;
                board.set_up(&url);
                if told_down {
                    info!(%url, %since, "relay back up; subscribed again, catching up");
                } else {
                    info!(%url, "relay connected");
                }
                if let Some(republisher) = &republisher {
                    republisher.check(&client, &url).await;
                }
                wait_until_down(&relay).await;
                // Catch up from the same margin before the outage as intake does before the
                // newest ledger event: events are often published a little after their
                // `created_at`, and clocks differ.
                since_ms = now_ms().saturating_sub(super::intake::CATCH_UP_MS);
                board.set_down(&url, None);
                warn!(%url, "relay down; reconnecting with back-off");
                told_down = true;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                board.set_down(&url, Some(e.to_string()));
                if told_down {
                    debug!(%url, failures, "relay still unreachable: {e}");
                } else {
                    warn!(%url, "relay unreachable ({e}); retrying with back-off");
                    told_down = true;
                }
            }
        }
        tokio::time::sleep(backoff.delay(failures)).await;
    }
}

/// A fresh pool relay for `url`, connected. Fresh, so that it holds no subscription of an
/// earlier connection for the pool to re-send.
async fn connect(client: &Client, url: &RelayUrl) -> Result<Relay, ConnectError> {
    // Not there on the first attempt: nothing to remove.
    let _ = client.force_remove_relay(url.clone()).await;
    client
        .pool()
        .add_relay(url.clone(), RelayOptions::new().reconnect(false))
        .await?;
    client
        .try_connect_relay(url.clone(), CONNECT_TIMEOUT)
        .await?;
    Ok(client.relay(url.clone()).await?)
}

async fn subscribe(client: &Client, url: &RelayUrl, filters: Vec<(&'static str, Filter)>) {
    for (what, filter) in filters {
        let id = SubscriptionId::new(what.replace(' ', "-"));
        if let Err(e) = client
            .subscribe_with_id_to([url.clone()], id, filter, None)
            .await
        {
            warn!(%url, "subscribing to {what}: {e}");
        }
    }
}

/// Returns once `relay`'s connection has ended.
async fn wait_until_down(relay: &Relay) {
    let mut notifications = relay.notifications();
    loop {
        if !relay.is_connected() {
            return;
        }
        match notifications.recv().await {
            Ok(RelayNotification::RelayStatus { status }) if status != RelayStatus::Connected => {
                return
            }
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_limit_and_is_never_zero() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let ceilings: Vec<u64> = (0..10).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        for failures in [0, 1, 5, 40, u32::MAX] {
            let d = b.delay(failures);
            assert!(d >= b.ceiling(failures) / 2 && d <= b.ceiling(failures));
        }
        let tiny = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(tiny.delay(0) > Duration::ZERO);
        assert_eq!(tiny.ceiling(7), Duration::from_millis(1));
    }

    #[test]
    fn the_board_reports_each_relay_and_when_it_changed() {
        let a = RelayUrl::parse("ws://127.0.0.1:1").unwrap();
        let b = RelayUrl::parse("ws://127.0.0.1:2").unwrap();
        let board = RelayBoard::new(&[a.clone(), b.clone()]);
        assert!(board.snapshot().iter().all(|r| !r.up && r.connects == 0));
        board.set_up(&a);
        board.set_down(&b, Some("refused".into()));
        let now = board.snapshot();
        assert!(now[0].up && now[0].connects == 1 && now[0].changed_at_ms > 0);
        assert!(!now[1].up && now[1].last_error.as_deref() == Some("refused"));
        let first_seen_down = now[1].changed_at_ms;
        board.set_down(&b, Some("still refused".into()));
        assert_eq!(board.snapshot()[1].changed_at_ms, first_seen_down);
        assert!(board.is_up(&a) && !board.is_up(&b));
    }

    #[tokio::test]
    async fn waiting_for_every_relay_to_be_tried_ends_when_the_last_one_is() {
        let a = RelayUrl::parse("ws://127.0.0.1:1").unwrap();
        let b = RelayUrl::parse("ws://127.0.0.1:2").unwrap();
        let board = RelayBoard::new(&[a.clone(), b.clone()]);
        board.set_up(&a);
        let waiting = tokio::spawn({
            let board = board.clone();
            async move { board.wait_all_tried(Duration::from_secs(60)).await }
        });
        board.set_down(&b, Some("refused".into()));
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("woken by the last relay's first attempt")
            .unwrap();
    }
}
