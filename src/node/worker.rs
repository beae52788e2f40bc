//! Executor attempts: the executors built from the config's offers, and one spawned task per
//! attempt that reports its outcome to the core. A panicking executor is a failed attempt.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinHandle};

use paydvm_ledger::JobId;

use super::core::{Command, ExecFailure};
use crate::config::{Builtin, Executor as ExecutorConfig, Offer};
use crate::executor::builtin::{TextGeneration, WordCount, SUMMARISE, TEXT_GENERATION};
use crate::executor::command::{CommandConfig, CommandExecutor};
use crate::executor::http::HttpExecutor;
use crate::executor::{Executors, Limits};
use crate::job::Job;

/// One executor per offered kind, each behind its offer's limits.
pub fn executors_from_offers(offers: &[Offer]) -> anyhow::Result<Executors> {
    let mut executors = Executors::new();
    for offer in offers {
        let limits = Limits::new(offer.timeout, offer.max_output_bytes, offer.max_concurrency)
            .map_err(|e| anyhow!("offer for kind {}: {e}", offer.kind))?;
        let result = match &offer.executor {
            ExecutorConfig::Builtin(Builtin::Text) => match offer.kind {
                TEXT_GENERATION => executors.insert(offer.kind, TextGeneration, limits),
                SUMMARISE => executors.insert(offer.kind, WordCount, limits),
                kind => bail!("the text builtin does not serve kind {kind}"),
            },
            ExecutorConfig::Command { program, args, env } => {
                let config = CommandConfig {
                    program: program.clone(),
                    args: args.clone(),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().clone()))
                        .collect(),
                };
                let executor = CommandExecutor::new(config, &limits);
                executors.insert(offer.kind, executor, limits)
            }
            ExecutorConfig::Http { url } => {
                let executor = HttpExecutor::new(url.expose().as_str(), &limits)
                    .map_err(|e| anyhow!("offer for kind {}: {e}", offer.kind))?;
                executors.insert(offer.kind, executor, limits)
            }
        };
        result.map_err(|e| anyhow!("offer for kind {}: {e}", offer.kind))?;
    }
    Ok(executors)
}

/// Runs attempt `attempt` of `job` and sends [`Command::ExecFinished`]. Aborting the returned
/// handle stops the attempt without a report (shutdown).
pub fn spawn(
    executors: Arc<Executors>,
    id: JobId,
    job: Job,
    attempt: u32,
    commands: mpsc::Sender<Command>,
) -> AbortHandle {
    let inner = start_attempt(executors, job);
    let handle = inner.abort_handle();
    tokio::spawn(async move {
        let Some(outcome) = outcome_of(inner.await) else {
            return;
        };
        report(&commands, id, attempt, outcome).await;
    });
    handle
}

/// Tells the core how an attempt ended (a core that stopped is not told).
pub async fn report(
    commands: &mpsc::Sender<Command>,
    job: JobId,
    attempt: u32,
    outcome: Result<String, ExecFailure>,
) {
    let _ = commands
        .send(Command::ExecFinished {
            job,
            attempt,
            outcome,
        })
        .await;
}

/// One attempt on a task of its own, so that a panicking executor fails the attempt, not the
/// caller; aborting the task stops it.
pub fn start_attempt(
    executors: Arc<Executors>,
    job: Job,
) -> JoinHandle<Result<String, ExecFailure>> {
    tokio::spawn(async move {
        executors
            .run(&job)
            .await
            .map(|o| o.content)
            .map_err(|e| ExecFailure {
                reason: e.to_string(),
                retryable: e.retryable(),
            })
    })
}

/// An attempt's outcome from its task: `None` when the task was aborted, a failure when it
/// panicked.
pub fn outcome_of(
    joined: Result<Result<String, ExecFailure>, JoinError>,
) -> Option<Result<String, ExecFailure>> {
    match joined {
        Ok(outcome) => Some(outcome),
        Err(e) if e.is_cancelled() => None,
        Err(_) => Some(Err(ExecFailure {
            reason: "the executor crashed".into(),
            retryable: false,
        })),
    }
}
