//! Watches our open invoices until they settle or expire. Backends that notify
//! ([`LightningBackend::settlements`]) are heard at once and polled rarely as a safety net (a
//! missed ephemeral event, a lagging listener); backends that do not are polled with back-off.
//! Only hashes handed to [`Watcher::watch`] are reported, so a notification for an invoice that
//! is not one of our quotes is ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{InvoiceStatus, LightningBackend, Settlement};

/// First poll after an invoice is watched, when the backend does not notify.
pub const POLL_FIRST: Duration = Duration::from_millis(250);
/// Longest gap between polls of one invoice, when the backend does not notify.
pub const POLL_MAX: Duration = Duration::from_secs(5);
/// Gap between safety-net polls when the backend notifies.
pub const POLL_WITH_NOTIFICATIONS: Duration = Duration::from_secs(30);
/// How long after its expiry an invoice is still looked up once (a payment at the edge).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(10);

/// One of our invoices got paid. `tag` is what the caller attached when watching (the job id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub tag: String,
    pub settlement: Settlement,
}

/// Handle to the watcher task; dropping it stops the task.
pub struct Watcher {
    requests: mpsc::UnboundedSender<(String, String, u64)>,
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Starts watching through `backend`; settlements are sent to `out`.
    pub fn start(backend: Arc<dyn LightningBackend>, out: mpsc::Sender<Settled>) -> Watcher {
        let (requests, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(backend, rx, out));
        Watcher { requests, task }
    }

    /// Watches `payment_hash` (tagged `tag`) until it settles or `expires_at` (unix seconds)
    /// plus [`EXPIRY_GRACE`] has passed. Watching a hash again replaces the first watch.
    pub fn watch(&self, payment_hash: &str, tag: &str, expires_at: u64) {
        let _ = self
            .requests
            .send((payment_hash.to_owned(), tag.to_owned(), expires_at));
    }
}

struct Entry {
    tag: String,
    /// Unix seconds.
    expires_at: u64,
    next_poll: Instant,
    gap: Duration,
}

async fn run(
    backend: Arc<dyn LightningBackend>,
    mut requests: mpsc::UnboundedReceiver<(String, String, u64)>,
    out: mpsc::Sender<Settled>,
) {
    let mut notifications = backend.settlements();
    let notifies = notifications.is_some();
    // Looked up soon after being watched in both modes: after a restart, an invoice paid while
    // the node was down is found by this first lookup.
    let first_gap = POLL_FIRST;
    let mut watched: HashMap<String, Entry> = HashMap::new();
    loop {
        let next = watched.values().map(|e| e.next_poll).min();
        tokio::select! {
            // Requests first: a hash watched before its notification arrives is never missed.
            biased;
            request = requests.recv() => {
                let Some((hash, tag, expires_at)) = request else { return };
                watched.insert(hash, Entry {
                    tag,
                    expires_at,
                    next_poll: Instant::now() + first_gap,
                    gap: first_gap,
                });
            }
            note = recv(&mut notifications) => match note {
                Ok(settlement) => {
                    if let Some(entry) = watched.remove(&settlement.payment_hash) {
                        if out.send(Settled { tag: entry.tag, settlement }).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "settlement notifications lagged; looking every invoice up");
                    let now = Instant::now();
                    for entry in watched.values_mut() {
                        entry.next_poll = now;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    warn!("the backend closed its notifications; polling from now on");
                    notifications = None;
                }
            },
            () = sleep_until(next) => {
                if poll_due(backend.as_ref(), &mut watched, &out, notifies).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Receives from `rx`, or waits forever when there is none.
async fn recv(
    rx: &mut Option<broadcast::Receiver<Settlement>>,
) -> Result<Settlement, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Looks up every invoice whose poll is due. `Err` when nobody listens any more.
async fn poll_due(
    backend: &dyn LightningBackend,
    watched: &mut HashMap<String, Entry>,
    out: &mpsc::Sender<Settled>,
    notifies: bool,
) -> Result<(), ()> {
    let now = Instant::now();
    let due: Vec<String> = watched
        .iter()
        .filter(|(_, e)| e.next_poll <= now)
        .map(|(h, _)| h.clone())
        .collect();
    for hash in due {
        let status = backend.lookup_invoice(&hash).await;
        let unix_now = crate::node::now_ms() / 1000;
        let Some(entry) = watched.get_mut(&hash) else {
            continue;
        };
        let past_grace = unix_now > entry.expires_at.saturating_add(EXPIRY_GRACE.as_secs());
        match status {
            InvoiceStatus::Settled { amount, settled_at } => {
                let entry = watched.remove(&hash).expect("present");
                let settlement = Settlement {
                    payment_hash: hash,
                    amount,
                    settled_at,
                };
                out.send(Settled {
                    tag: entry.tag,
                    settlement,
                })
                .await
                .map_err(|_| ())?;
            }
            InvoiceStatus::Expired if past_grace => {
                debug!(%hash, "invoice expired unpaid; no longer watched");
                watched.remove(&hash);
            }
            InvoiceStatus::Open | InvoiceStatus::Expired | InvoiceStatus::Unknown(_) => {
                if let InvoiceStatus::Unknown(reason) = &status {
                    debug!(%hash, %reason, "invoice status unknown; will look again");
                }
                if past_grace {
                    debug!(%hash, "invoice past expiry and grace; no longer watched");
                    watched.remove(&hash);
                    continue;
                }
                let max = if notifies {
                    POLL_WITH_NOTIFICATIONS
                } else {
                    POLL_MAX
                };
                entry.gap = (entry.gap * 2).min(max);
                entry.next_poll = Instant::now() + entry.gap;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::fake::FakeLightning;
    use crate::lightning::InvoiceDescription;
    use paydvm_ledger::Msat;

    async fn settles_through(ln: FakeLightning) {
        let (tx, mut rx) = mpsc::channel(16);
        let backend: Arc<dyn LightningBackend> = Arc::new(ln.clone());
        let watcher = Watcher::start(backend.clone(), tx);
        let far = crate::node::now_ms() / 1000 + 600;
        let mut issued = Vec::new();
        for i in 0..3 {
            let inv = backend
                .create_invoice(
                    Msat::from_msat(1_000 + i),
                    InvoiceDescription::Text(format!("job {i}")),
                    600,
                )
                .await
                .unwrap();
            watcher.watch(&inv.payment_hash, &format!("job{i}"), far);
            issued.push(inv);
        }
        // A settled invoice that is not watched is never reported.
        let stranger = backend
            .create_invoice(
                Msat::from_msat(5),
                InvoiceDescription::Text("x".into()),
                600,
            )
            .await
            .unwrap();
        tokio::task::yield_now().await;
        ln.settle(&stranger.payment_hash).unwrap();
        ln.settle(&issued[2].payment_hash).unwrap();
        ln.settle(&issued[0].payment_hash).unwrap();
        let mut got = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        got.sort_by(|a, b| a.tag.cmp(&b.tag));
        assert_eq!(got[0].tag, "job0");
        assert_eq!(got[0].settlement.payment_hash, issued[0].payment_hash);
        assert_eq!(got[0].settlement.amount, Msat::from_msat(1_000));
        assert_eq!(got[1].tag, "job2");
        assert_eq!(got[1].settlement.amount, Msat::from_msat(1_002));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn reports_watched_settlements_from_notifications() {
        settles_through(FakeLightning::new()).await;
    }

    #[tokio::test]
    async fn reports_watched_settlements_by_polling() {
        settles_through(FakeLightning::without_notifications()).await;
    }
}
