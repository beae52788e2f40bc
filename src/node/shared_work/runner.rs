//! Every node's side: claims queued attempts of the shared offers it has room for, runs them on
//! its own executors, renews each lease while it runs and stores the sealed outcome. An attempt
//! whose lease another node took meanwhile is stopped and its outcome dropped. A node that
//! stops hands its attempts back ([`Runner::hand_back`]): stopped and released, so another node
//! claims them at once instead of after their leases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::Keys;
use paydvm_ledger_pg::{Claimed, PgLocation, WorkChannel, WorkQueue};
use tokio::sync::watch;
use tracing::{info, warn};

use super::seal;
use crate::executor::Executors;
use crate::node::worker;

/// How often a runner with room and nothing claimed asks again if it hears nothing (it is
/// woken when an attempt is queued, `WorkChannel::Queued`, and when one of its own ends).
const CLAIM_EVERY: Duration = Duration::from_millis(500);

/// (kind, lease, concurrency) of each shared offer.
pub type Offers = Vec<(u16, Duration, usize)>;

/// How often a runner whose work table did not open tries again.
const OPEN_AGAIN: Duration = Duration::from_secs(2);

/// One shared offer as a runner serves it.
struct Lane {
    kind: u16,
    lease: Duration,
    room: usize,
    running: Arc<AtomicUsize>,
}

/// How long a stopping node waits for its attempts to be handed back (the releases are calls
/// to the database; one that does not answer leaves its attempt to its lease).
pub const HAND_BACK_WITHIN: Duration = Duration::from_secs(5);

/// Claims while it lives; [`Runner::stop_claiming`] (or dropping it) stops new claims, and the
/// attempts already claimed run to their end. [`Runner::hand_back`] stops them too.
pub struct Runner {
    stop: watch::Sender<bool>,
    /// Set once: every attempt running here stops and gives its claim up.
    hand_back: watch::Sender<bool>,
    /// How many claimed attempts are running here.
    running: watch::Receiver<usize>,
}

impl Runner {
    /// `offers`: (kind, lease, concurrency) of each shared offer; `name` goes into the rows.
    pub fn start(
        queue: WorkQueue,
        executors: Arc<Executors>,
        offers: Offers,
        keys: Keys,
        name: String,
    ) -> Runner {
        Self::spawn(async move { Some(queue) }, executors, offers, keys, name)
    }

    /// As [`Runner::start`], once the work table at `location` opens: tried again every
    /// [`OPEN_AGAIN`] until it does (a standby waits through a database that is down) or the
    /// runner is stopped.
    pub fn start_when_open(
        location: PgLocation,
        executors: Arc<Executors>,
        offers: Offers,
        keys: Keys,
        name: String,
    ) -> Runner {
        Self::spawn(
            open_when_it_answers(location),
            executors,
            offers,
            keys,
            name,
        )
    }

    fn spawn(
        queue: impl std::future::Future<Output = Option<WorkQueue>> + Send + 'static,
        executors: Arc<Executors>,
        offers: Offers,
        keys: Keys,
        name: String,
    ) -> Runner {
        let (stop, mut stopped) = watch::channel(false);
        let (hand_back, handing_back) = watch::channel(false);
        let (count, running) = watch::channel(0usize);
        tokio::spawn(async move {
            let queue = tokio::select! {
                queue = queue => queue,
                _ = stopped.changed() => None,
            };
            let Some(queue) = queue else { return };
            info!(node = %name, "shared work runner started");
            let lanes = offers
                .into_iter()
                .map(|(kind, lease, room)| Lane {
                    kind,
                    lease,
                    room,
                    running: Arc::default(),
                })
                .collect();
            let runs = Runs {
                room: tokio::sync::Notify::new(),
                queue,
                executors,
                keys,
                name,
                handing_back,
                count,
            };
            claim_loop(Arc::new(runs), lanes, stopped).await;
        });
        Runner {
            stop,
            hand_back,
            running,
        }
    }

    pub fn stop_claiming(&self) {
        let _ = self.stop.send(true);
    }

    /// The node stops: no more claims, and every attempt running here is stopped and its claim
    /// given up (`WorkQueue::release`), so a runner on another node (or this node's successor)
    /// claims it at once rather than after its lease. Waits for that at most `within`.
    pub async fn hand_back(self, within: Duration) {
        self.stop_claiming();
        let _ = self.hand_back.send(true);
        let mut running = self.running.clone();
        let all_back = running.wait_for(|n| *n == 0);
        if tokio::time::timeout(within, all_back).await.is_err() {
            warn!("shared work: some attempts were not handed back in time; their leases pass");
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop_claiming();
    }
}

/// The work table, once it opens; says so once while it does not.
async fn open_when_it_answers(location: PgLocation) -> Option<WorkQueue> {
    let mut told = false;
    loop {
        match WorkQueue::open(&location).await {
            Ok(queue) => return Some(queue),
            Err(e) if !told => {
                told = true;
                warn!("shared work: the work table does not open yet ({e}); trying again until it does");
            }
            Err(_) => {}
        }
        tokio::time::sleep(OPEN_AGAIN).await;
    }
}

/// What every attempt of a runner shares.
struct Runs {
    queue: WorkQueue,
    /// Told when an attempt ends: its lane has room again.
    room: tokio::sync::Notify,
    executors: Arc<Executors>,
    keys: Keys,
    name: String,
    /// Set when the node hands its attempts back.
    handing_back: watch::Receiver<bool>,
    /// How many claimed attempts are running (told to [`Runner::hand_back`]).
    count: watch::Sender<usize>,
}

async fn claim_loop(runs: Arc<Runs>, lanes: Vec<Lane>, mut stopped: watch::Receiver<bool>) {
    let queued = runs.queue.wakeups(WorkChannel::Queued);
    let mut errors_in_a_row = 0u32;
    loop {
        if *stopped.borrow() {
            return;
        }
        let claimed = match claim_some(&runs, &lanes).await {
            Ok(n) => {
                errors_in_a_row = 0;
                n
            }
            Err(e) => {
                errors_in_a_row += 1;
                if errors_in_a_row == 1 {
                    warn!("shared work: cannot claim attempts: {e}");
                }
                0
            }
        };
        if claimed == 0 {
            tokio::select! {
                _ = queued.next(CLAIM_EVERY) => {}
                _ = runs.room.notified() => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

/// One claim for each lane with room; how many were claimed.
async fn claim_some(runs: &Arc<Runs>, lanes: &[Lane]) -> Result<usize, paydvm_ledger_pg::PgError> {
    let mut claimed = 0;
    for lane in lanes {
        if lane.running.load(Ordering::SeqCst) >= lane.room {
            continue;
        }
        let Some(claim) = runs
            .queue
            .claim(&runs.name, &[lane.kind], lane.lease)
            .await?
        else {
            continue;
        };
        claimed += 1;
        info!(job = %claim.job, attempt = claim.attempt, "shared attempt claimed");
        lane.running.fetch_add(1, Ordering::SeqCst);
        runs.count.send_modify(|n| *n += 1);
        let (runs, running, lease) = (Arc::clone(runs), Arc::clone(&lane.running), lane.lease);
        tokio::spawn(async move {
            run_claimed(&runs, claim, lease).await;
            running.fetch_sub(1, Ordering::SeqCst);
            runs.count.send_modify(|n| *n -= 1);
            runs.room.notify_one();
        });
    }
    Ok(claimed)
}

/// Runs one claimed attempt, renewing its lease every third of it, and stores the outcome.
async fn run_claimed(runs: &Runs, claim: Claimed, lease: Duration) {
    let (job, attempt) = (claim.job.clone(), claim.attempt);
    let outcome = match seal::open_job(&runs.keys, &claim.task) {
        Ok(work) => {
            let task = worker::start_attempt(Arc::clone(&runs.executors), work);
            let abort = task.abort_handle();
            tokio::select! {
                joined = task => worker::outcome_of(joined),
                lost = keep_lease(&runs.queue, &claim, lease) => {
                    abort.abort();
                    warn!(%job, attempt, "shared attempt stopped: {lost}");
                    return;
                }
                () = handed_back(runs.handing_back.clone()) => {
                    abort.abort();
                    return give_up(runs, &claim).await;
                }
            }
        }
        Err(e) => {
            warn!(%job, attempt, "shared work: {e}");
            Some(Err(crate::node::core::ExecFailure {
                reason: "the job could not be read from the shared work queue".into(),
                retryable: false,
            }))
        }
    };
    let Some(outcome) = outcome else { return };
    let stored = match seal::seal_outcome(&runs.keys, &outcome) {
        Ok(sealed) => runs.queue.finish(&claim, &runs.name, &sealed).await,
        Err(e) => return warn!(%job, attempt, "shared work: {e}"),
    };
    match stored {
        Ok(true) => info!(%job, attempt, "shared attempt ran here"),
        Ok(false) => {
            warn!(%job, attempt, "shared attempt ran here, but another node holds it now or it was replaced")
        }
        Err(e) => warn!(%job, attempt, "shared work: cannot store the outcome: {e}"),
    }
}

/// Returns once the node hands its attempts back; never if it does not (a runner dropped when
/// its standby takes over lets its attempts run to their end).
async fn handed_back(mut handing_back: watch::Receiver<bool>) {
    if handing_back.wait_for(|back| *back).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Releases a stopped attempt's claim for another node to claim at once.
async fn give_up(runs: &Runs, claim: &Claimed) {
    let (job, attempt) = (&claim.job, claim.attempt);
    match runs.queue.release(claim).await {
        Ok(true) => info!(%job, attempt, "shared attempt handed back"),
        Ok(false) => {}
        Err(e) => {
            warn!(%job, attempt, "shared work: cannot hand an attempt back ({e}); its lease passes")
        }
    }
}

/// Renews the lease every third of it; returns (why) once it could not be kept.
async fn keep_lease(queue: &WorkQueue, claim: &Claimed, lease: Duration) -> String {
    let mut every = tokio::time::interval(lease / 3);
    every.tick().await;
    loop {
        every.tick().await;
        match queue.renew(claim, lease).await {
            Ok(true) => {}
            Ok(false) => return "its lease is no longer ours (another node took it, or a new attempt replaced it)".into(),
            // One failed renewal is not yet a lost lease; the next tick tries again, and a
            // lease that passes meanwhile is found taken then.
            Err(e) => warn!(job = %claim.job, "shared work: renewing a lease: {e}"),
        }
    }
}
