//! One customer: its own keys and relay connection, up to `window` requests outstanding, each
//! result's arrival recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use tokio::sync::Semaphore;

use crate::Stats;

pub async fn customer(
    relay: RelayUrl,
    result_kind: Kind,
    requests: Vec<Event>,
    keys: Keys,
    window: usize,
    stats: Arc<Mutex<Stats>>,
    ready: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<()> {
    let client = paydvm::node::transport::client(keys.clone());
    client.add_relay(relay).await?;
    let mut notifications = client.notifications();
    client.try_connect(Duration::from_secs(5)).await;
    client
        .subscribe(
            Filter::new()
                .kind(result_kind)
                .pubkey(keys.public_key())
                .since(Timestamp::now() - 60),
            None,
        )
        .await?;
    let pending: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window));
    let total = requests.len();
    ready.wait().await;

    let sender = {
        let client = client.clone();
        let pending = pending.clone();
        let permits = permits.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            for request in requests {
                let Ok(permit) = permits.acquire().await else {
                    return;
                };
                permit.forget();
                pending
                    .lock()
                    .expect("pending lock")
                    .insert(request.id, Instant::now());
                if let Err(e) = client.send_event(&request).await {
                    eprintln!("publish failed: {e}");
                }
                stats.lock().expect("stats lock").published += 1;
            }
        })
    };

    let mut received = 0;
    while received < total {
        match notifications.recv().await {
            Ok(RelayPoolNotification::Event { event, .. }) if event.kind == result_kind => {
                let at = Instant::now();
                let Some(request) = event.tags.event_ids().next().copied() else {
                    continue;
                };
                let Some(sent) = pending.lock().expect("pending lock").remove(&request) else {
                    continue;
                };
                received += 1;
                permits.add_permits(1);
                let mut s = stats.lock().expect("stats lock");
                s.latencies.push(at - sent);
                s.finished.push(at);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("customer lagged {n} notifications");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    let _ = sender.await;
    client.disconnect().await;
    Ok(())
}
