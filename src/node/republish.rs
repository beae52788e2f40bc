//! Announcements a relay lacks are published to it again: on every (re)connect, the supervisor
//! ([`super::relays`]) asks the core for the stored announcements (the latest NIP-89 31990 per
//! offered kind, the kind 0 profile, the kind 10019 NutZap info, and the NIP-09 deletion of
//! each offer withdrawn and not offered again, so a relay that missed it drops the offer too),
//! asks the relay which of their ids it holds, and sends it the missing ones: the stored signed
//! events, never re-signed (a new signature would be a new event, and the ledger's record is of
//! the stored one).
//!
//! Not ledgered: the ledger already records the announcement and its first delivery; a copy on
//! one more relay moves no money. A relay that holds a newer event for the same address rejects
//! the older copy, which is what we want.

use std::collections::HashSet;
use std::time::Duration;

use nostr_sdk::prelude::{Client, Event, EventId, Filter, RelayUrl};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::core::Command;

/// How long the core may take to list the stored announcements.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the relay may take to say which of them it holds.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a relay for our stored announcements and sends it the missing ones.
#[derive(Debug, Clone)]
pub struct Republisher {
    commands: mpsc::Sender<Command>,
}

impl Republisher {
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        Republisher { commands }
    }

    /// Republishes to `url` (connected through `client`) what it lacks; returns how many.
    pub async fn check(&self, client: &Client, url: &RelayUrl) -> usize {
        let stored = self.stored().await;
        if stored.is_empty() {
            return 0;
        }
        let held = match held(client, url, stored.iter().map(|e| e.id)).await {
            Some(held) => held,
            None => return 0,
        };
        let mut sent = 0;
        for event in stored.iter().filter(|e| !held.contains(&e.id)) {
            match client.send_event_to([url.clone()], event).await {
                Ok(out) if out.success.contains(url) => sent += 1,
                Ok(out) => {
                    debug!(%url, id = %event.id, failed = ?out.failed, "announcement refused")
                }
                Err(e) => debug!(%url, id = %event.id, "announcement not sent: {e}"),
            }
        }
        if sent > 0 {
            info!(%url, sent, "republished stored announcements the relay lacked");
        }
        sent
    }

    /// The stored announcements, asked of the core (none if it does not answer in time).
    async fn stored(&self) -> Vec<Event> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Announcements { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(Ok(events)) => events,
            _ => {
                debug!("the core did not list the stored announcements in time");
                Vec::new()
            }
        }
    }
}

/// Which of `ids` `url` holds; `None` if it did not answer (then nothing is sent: the next
/// connection checks again).
async fn held(
    client: &Client,
    url: &RelayUrl,
    ids: impl IntoIterator<Item = EventId>,
) -> Option<HashSet<EventId>> {
    let filter = Filter::new().ids(ids);
    match client
        .fetch_events_from([url.clone()], filter, FETCH_TIMEOUT)
        .await
    {
        Ok(events) => Some(events.into_iter().map(|e| e.id).collect()),
        Err(e) => {
            debug!(%url, "cannot ask the relay for our announcements: {e}");
            None
        }
    }
}
