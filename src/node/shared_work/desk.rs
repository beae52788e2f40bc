//! The serving node's side: queues the attempts its core starts, collects their outcomes from
//! whichever node ran them and hands each to the core as [`Command::ExecFinished`], as its own
//! executor task would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::Keys;
use paydvm_ledger::JobId;
use paydvm_ledger_pg::{Finished, Submission, WorkChannel, WorkQueue};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::seal;
use crate::job::Job;
use crate::node::core::{Command, ExecFailure};
use crate::node::worker;

/// How often the table is asked for outcomes while attempts are waiting, if nothing is heard
/// (the desk is woken whenever an outcome is stored, `WorkChannel::Finished`).
const COLLECT_EVERY: Duration = Duration::from_millis(500);
/// An outcome nobody collected (its job ended while it ran, or no serving node came back for it
/// in time: its attempt is then queued again and runs again) is removed after this.
const UNCLAIMED_OUTCOME: Duration = Duration::from_secs(3600);
/// How often such outcomes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

type Outcome = Result<String, ExecFailure>;
type Waiters = Arc<Mutex<HashMap<(String, u32), oneshot::Sender<Outcome>>>>;

/// Queues attempts and collects outcomes; dropping it stops the collector.
pub struct WorkDesk {
    queue: WorkQueue,
    keys: Keys,
    waiting: Waiters,
    collector: AbortHandle,
}

impl WorkDesk {
    pub fn start(queue: WorkQueue, keys: Keys) -> WorkDesk {
        let waiting: Waiters = Arc::default();
        let collector =
            tokio::spawn(collect(queue.clone(), keys.clone(), Arc::clone(&waiting))).abort_handle();
        WorkDesk {
            queue,
            keys,
            waiting,
            collector,
        }
    }

    /// Queues attempt `attempt` of `job`; its outcome comes back to the core as
    /// [`Command::ExecFinished`]. Aborting the handle stops waiting (shutdown) and leaves the
    /// row: the next serving node decides what becomes of the attempt.
    pub fn spawn(
        &self,
        id: JobId,
        job: Job,
        attempt: u32,
        commands: mpsc::Sender<Command>,
    ) -> AbortHandle {
        let (queue, keys, waiting) = (
            self.queue.clone(),
            self.keys.clone(),
            Arc::clone(&self.waiting),
        );
        tokio::spawn(async move {
            let outcome = match submit(&queue, &keys, &waiting, &job, attempt).await {
                Ok(answer) => answer
                    .await
                    .unwrap_or_else(|_| Err(failure("the collector stopped"))),
                Err(e) => {
                    warn!(job = %id, attempt, "shared work: cannot queue the attempt: {e}");
                    Err(failure("the shared work queue could not take the attempt"))
                }
            };
            worker::report(&commands, id, attempt, outcome).await;
        })
        .abort_handle()
    }
}

impl Drop for WorkDesk {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

/// Registers the waiter first, so an outcome collected at once is not missed.
async fn submit(
    queue: &WorkQueue,
    keys: &Keys,
    waiting: &Waiters,
    job: &Job,
    attempt: u32,
) -> anyhow::Result<oneshot::Receiver<Outcome>> {
    let (tx, rx) = oneshot::channel();
    let key = (job.id.clone(), attempt);
    lock(waiting).insert(key.clone(), tx);
    let submission = Submission {
        job: job.id.clone(),
        attempt,
        kind: job.kind,
        task: seal::seal_job(keys, job)?,
    };
    if let Err(e) = queue.submit(&submission).await {
        lock(waiting).remove(&key);
        return Err(e.into());
    }
    Ok(rx)
}

fn failure(reason: &str) -> ExecFailure {
    ExecFailure {
        reason: reason.into(),
        retryable: true,
    }
}

fn lock(
    waiting: &Waiters,
) -> std::sync::MutexGuard<'_, HashMap<(String, u32), oneshot::Sender<Outcome>>> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the outcomes of the attempts that wait, hands each to its waiter, removes its row.
async fn collect(queue: WorkQueue, keys: Keys, waiting: Waiters) {
    let stored = queue.wakeups(WorkChannel::Finished);
    let mut swept = Instant::now();
    loop {
        stored.next(COLLECT_EVERY).await;
        if swept.elapsed() >= SWEEP_EVERY {
            swept = Instant::now();
            match queue.remove_stale(UNCLAIMED_OUTCOME).await {
                Ok(0) => {}
                Ok(n) => info!("shared work: removed {n} outcomes nobody collected"),
                Err(e) => debug!("shared work: removing stale outcomes: {e}"),
            }
        }
        let jobs: Vec<String> = lock(&waiting).keys().map(|(job, _)| job.clone()).collect();
        if jobs.is_empty() {
            continue;
        }
        let finished = match queue.finished(&jobs).await {
            Ok(f) => f,
            Err(e) => {
                warn!("shared work: cannot read outcomes: {e}");
                continue;
            }
        };
        for f in finished {
            hand_over(&queue, &keys, &waiting, f).await;
        }
    }
}

/// One outcome to its waiter (if it waits for this attempt), and its row removed.
async fn hand_over(queue: &WorkQueue, keys: &Keys, waiting: &Waiters, f: Finished) {
    let Some(waiter) = lock(waiting).remove(&(f.job.clone(), f.attempt)) else {
        return;
    };
    let outcome = seal::open_outcome(keys, &f.outcome).unwrap_or_else(|e| {
        warn!(job = %f.job, attempt = f.attempt, "shared work: {e}");
        Err(failure("the attempt's outcome could not be read"))
    });
    info!(job = %f.job, attempt = f.attempt, ran_on = %f.finished_by, "shared attempt collected");
    let _ = waiter.send(outcome);
    if let Err(e) = queue.remove(&f.job, f.attempt).await {
        debug!(job = %f.job, "shared work: removing a collected attempt: {e}");
    }
}
