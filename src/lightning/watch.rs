//! Watches our open invoices until they settle or expire. Backends that notify
//! ([`LightningBackend::settlements`]) are heard at once and polled rarely as a safety net (a
//! missed ephemeral event, a lagging listener); backends that do not are polled with back-off.
//! Only hashes handed to [`Watcher::watch`] are reported, so a notification for an invoice that
//! is not one of our quotes is ignored.
//!
//! Polling is bounded so that many open quotes cannot flood a wallet (an NWC request is a relay
//! round trip, and wallets rate-limit): a round looks up at most [`POLL_ROUND_MAX`] invoices,
//! the most overdue first, and rounds are at least [`POLL_ROUND_GAP`] apart. That is at most
//! 16 look-ups per 250 ms (64/s): up to 320 open invoices are each looked up every
//! [`POLL_MAX`] (5 s); beyond that the gap grows to about N / 64 s, and every invoice still gets
//! its turn because the most overdue go first. This is what bounds the time to find a payment
//! from a wallet whose notifications we cannot hear (NWC: the `nwc` 0.44 client speaks NIP-04
//! only, so a NIP-44-only wallet's kind 23197 notifications are never seen; rust-nostr 1392).

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
/// Most invoices looked up in one polling round (most overdue first).
pub const POLL_ROUND_MAX: usize = 16;
/// Shortest gap between two polling rounds.
pub const POLL_ROUND_GAP: Duration = Duration::from_millis(250);
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
    let mut next_round = Instant::now();
    loop {
        let next = watched
            .values()
            .map(|e| e.next_poll)
            .min()
            .map(|at| at.max(next_round));
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
                next_round = Instant::now() + POLL_ROUND_GAP;
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

/// The hashes whose poll is due, most overdue first, at most [`POLL_ROUND_MAX`] of them.
fn due_now(watched: &HashMap<String, Entry>, now: Instant) -> Vec<String> {
    let mut due: Vec<(Instant, &String)> = watched
        .iter()
        .filter(|(_, e)| e.next_poll <= now)
        .map(|(h, e)| (e.next_poll, h))
        .collect();
    due.sort();
    due.into_iter()
        .take(POLL_ROUND_MAX)
        .map(|(_, h)| h.clone())
        .collect()
}

/// Looks up the invoices whose poll is due ([`due_now`]). `Err` when nobody listens any more.
async fn poll_due(
    backend: &dyn LightningBackend,
    watched: &mut HashMap<String, Entry>,
    out: &mpsc::Sender<Settled>,
    notifies: bool,
) -> Result<(), ()> {
    for hash in due_now(watched, Instant::now()) {
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

    /// A wallet that counts look-ups and never sees a payment.
    #[derive(Default)]
    struct Counting(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl LightningBackend for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn create_invoice(
            &self,
            _: Msat,
            _: InvoiceDescription,
            _: u64,
        ) -> Result<crate::lightning::IssuedInvoice, crate::lightning::LightningError> {
            unreachable!("not used")
        }
        async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus {
            self.0.lock().unwrap().push(payment_hash.to_owned());
            InvoiceStatus::Open
        }
        async fn pay_invoice(&self, _: &str, _: Msat) -> crate::lightning::PaymentStatus {
            unreachable!("not used")
        }
        async fn lookup_payment(&self, _: &str) -> crate::lightning::PaymentStatus {
            unreachable!("not used")
        }
        async fn balance(&self) -> Result<Msat, crate::lightning::LightningError> {
            unreachable!("not used")
        }
        fn settlements(&self) -> Option<broadcast::Receiver<Settlement>> {
            None
        }
    }

    #[tokio::test]
    async fn a_polling_round_is_bounded_and_the_most_overdue_go_first() {
        let backend = Counting::default();
        let (out, _rx) = mpsc::channel(1);
        let base = Instant::now();
        let far = crate::node::now_ms() / 1000 + 600;
        // 40 due invoices; "h39" is the most overdue.
        let mut watched: HashMap<String, Entry> = (0..40u64)
            .map(|i| {
                let entry = Entry {
                    tag: format!("job{i}"),
                    expires_at: far,
                    next_poll: base.checked_sub(Duration::from_millis(100 + i)).unwrap(),
                    gap: POLL_FIRST,
                };
                (format!("h{i}"), entry)
            })
            .collect();
        let names = |range: std::ops::Range<u64>| -> Vec<String> {
            range.rev().map(|i| format!("h{i}")).collect()
        };
        for (round, expected) in [names(24..40), names(8..24), names(0..8)]
            .iter()
            .enumerate()
        {
            poll_due(&backend, &mut watched, &out, false).await.unwrap();
            let looked: Vec<String> = std::mem::take(&mut *backend.0.lock().unwrap());
            assert_eq!(&looked, expected, "round {round}");
        }
        // Everything was looked up once and is scheduled again later, none dropped.
        poll_due(&backend, &mut watched, &out, false).await.unwrap();
        assert!(backend.0.lock().unwrap().is_empty());
        assert_eq!(watched.len(), 40);
    }
}
