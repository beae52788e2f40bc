//! Shared execution: job attempts any node on the database may run, each claimed with a lease.
//!
//! The serving node (the one holding the node lock, the only one that decides and writes the
//! ledger) puts an attempt in the `work` table ([`WorkQueue::submit`]); every node with the
//! offer, serving or standing by, claims queued attempts it has room for
//! ([`WorkQueue::claim`], `FOR UPDATE SKIP LOCKED`: two claimers never get the same row), runs
//! them, renews its lease while it runs ([`WorkQueue::renew`]) and stores the outcome
//! ([`WorkQueue::finish`]). The serving node collects outcomes ([`WorkQueue::finished`]), hands
//! them to its core as if its own executor had run them, and removes the rows.
//!
//! A claimer that dies stops renewing: once its lease has passed, the attempt is claimable
//! again. Every claim counts up the row's `claims`, and a renewal or an outcome counts only from
//! the newest claim, so a claimer that was slow (not dead) and lost its lease can neither keep
//! nor finish the attempt: one outcome per attempt, whoever ran it. Lease times are the server's
//! clock (`now()`), one clock for every node.
//!
//! Nothing here is money: the ledger records the outcome once (the core's own rules), and an
//! attempt run twice (a lease that passed while its runner still worked) costs compute, never a
//! second result.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::client::{create_serialised, new_pool, PgError};
use crate::location::PgLocation;
use crate::work_wakeups::{Wakeups, WorkChannel};

/// One attempt as the serving node queues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub job: String,
    pub attempt: u32,
    pub kind: u16,
    /// What a runner needs to run the attempt, opaque here: the node stores the job sealed with
    /// its service key (`src/node/shared_work/seal.rs`).
    pub task: String,
}

/// An attempt a node claimed: its lease counts from `claim` (the row's claim count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub job: String,
    pub attempt: u32,
    pub kind: u16,
    pub task: String,
    pub claim: i32,
}

/// An attempt's stored outcome, as the runner sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub job: String,
    pub attempt: u32,
    pub outcome: String,
    pub finished_by: String,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS work (
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    task TEXT NOT NULL,
    queued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claims INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    outcome TEXT,
    finished_by TEXT,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (job, attempt)
)";

/// The advisory lock creating the table: "paydvm" in ASCII and 2 (the node lock is 1).
const CREATE_LOCK_KEY: i64 = 0x7061_7964_766d_0002;

/// The oldest queued attempt of the given kinds whose lease (if any) has passed, claimed by
/// `$1` until `$2` ms from now.
const CLAIM: &str = "UPDATE work SET claims = claims + 1, claimed_by = $1,
        lease_until = now() + $2::bigint * interval '1 millisecond'
    WHERE (job, attempt) = (
        SELECT job, attempt FROM work
        WHERE outcome IS NULL AND kind = ANY($3)
          AND (lease_until IS NULL OR lease_until < now())
        ORDER BY queued_at LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING job, attempt, kind, task, claims";

/// The work table on one database, with a pool of its own (the ledger store's is blocking and
/// the core's). Every call has the store's deadline.
#[derive(Clone)]
pub struct WorkQueue {
    pool: Pool,
    deadline: Duration,
    /// For listeners, each on a connection of its own.
    config: tokio_postgres::Config,
}

impl WorkQueue {
    /// Connects lazily (the first call opens a connection) and creates the table if it is
    /// missing. Call it from inside a tokio runtime.
    pub async fn open(location: &PgLocation) -> Result<WorkQueue, PgError> {
        let queue = WorkQueue {
            pool: new_pool(location.config())?,
            deadline: location.statement_deadline(),
            config: location.config().clone(),
        };
        queue
            .timed(create_serialised(&queue.pool, CREATE_LOCK_KEY, CREATE))
            .await?;
        Ok(queue)
    }

    /// Queues an attempt. Earlier attempts of the same job are removed (they ended: the core
    /// starts an attempt only after the last one failed); the same attempt queued again (the
    /// serving node restarted) keeps its row, its claim and any outcome already stored.
    pub async fn submit(&self, s: &Submission) -> Result<(), PgError> {
        let attempt = attempt_param(s.attempt)?;
        self.execute(
            "DELETE FROM work WHERE job = $1 AND attempt < $2",
            &[&s.job, &attempt],
        )
        .await?;
        self.execute(
            "INSERT INTO work (job, attempt, kind, task) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job, attempt) DO NOTHING",
            &[&s.job, &attempt, &i32::from(s.kind), &s.task],
        )
        .await?;
        self.tell(WorkChannel::Queued).await;
        Ok(())
    }

    /// Wakes the listeners of `channel` on every node. A hint only (they also poll): a failure
    /// here does not fail what was already stored.
    async fn tell(&self, channel: WorkChannel) {
        let sql = format!("SELECT pg_notify('{}', '')", channel.name());
        let _ = self.execute(&sql, &[]).await;
    }

    /// Listens for `channel` on a connection of its own (see [`Wakeups`]).
    pub fn wakeups(&self, channel: WorkChannel) -> Wakeups {
        Wakeups::listen(self.config.clone(), channel)
    }

    /// Claims one queued attempt of `kinds` for `node` for `lease`, if one is free.
    pub async fn claim(
        &self,
        node: &str,
        kinds: &[u16],
        lease: Duration,
    ) -> Result<Option<Claimed>, PgError> {
        let kinds: Vec<i32> = kinds.iter().map(|k| i32::from(*k)).collect();
        let ms = lease_ms(lease)?;
        let rows = self.query(CLAIM, &[&node, &ms, &kinds]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let kind: i32 = row.try_get(2)?;
        Ok(Some(Claimed {
            job: row.try_get(0)?,
            attempt: attempt_of(row.try_get(1)?)?,
            kind: u16::try_from(kind).map_err(|_| range("kind"))?,
            task: row.try_get(3)?,
            claim: row.try_get(4)?,
        }))
    }

    /// Extends a claim's lease; false when the claim is no longer the newest (the lease passed
    /// and another node claimed the attempt) or the attempt is gone or finished.
    pub async fn renew(&self, c: &Claimed, lease: Duration) -> Result<bool, PgError> {
        let ms = lease_ms(lease)?;
        let attempt = attempt_param(c.attempt)?;
        let n = self
            .execute(
                "UPDATE work SET lease_until = now() + $4::bigint * interval '1 millisecond'
                 WHERE job = $1 AND attempt = $2 AND claims = $3 AND outcome IS NULL",
                &[&c.job, &attempt, &c.claim, &ms],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives a claim up before its lease passes (its node is stopping and stopped the attempt):
    /// the attempt is free to claim at once, and the runners are woken. False when the claim is
    /// no longer the newest, was given up already, or an outcome is stored. The claim count stays, so the
    /// next claim fences this one as a passed lease would.
    pub async fn release(&self, c: &Claimed) -> Result<bool, PgError> {
        let attempt = attempt_param(c.attempt)?;
        let n = self
            .execute(
                "UPDATE work SET lease_until = NULL, claimed_by = NULL
                 WHERE job = $1 AND attempt = $2 AND claims = $3 AND outcome IS NULL
                   AND lease_until IS NOT NULL",
                &[&c.job, &attempt, &c.claim],
            )
            .await?;
        if n == 1 {
            self.tell(WorkChannel::Queued).await;
        }
        Ok(n == 1)
    }

    /// Stores a claim's outcome; false (nothing stored) when the claim is no longer the newest
    /// or an outcome is already there.
    pub async fn finish(&self, c: &Claimed, node: &str, outcome: &str) -> Result<bool, PgError> {
        let attempt = attempt_param(c.attempt)?;
        let n = self
            .execute(
                "UPDATE work SET outcome = $4, finished_by = $5, finished_at = now(), lease_until = NULL
                 WHERE job = $1 AND attempt = $2 AND claims = $3 AND outcome IS NULL",
                &[&c.job, &attempt, &c.claim, &outcome, &node],
            )
            .await?;
        if n == 1 {
            self.tell(WorkChannel::Finished).await;
        }
        Ok(n == 1)
    }

    /// The stored outcomes of attempts of `jobs`.
    pub async fn finished(&self, jobs: &[String]) -> Result<Vec<Finished>, PgError> {
        let rows = self
            .query(
                "SELECT job, attempt, outcome, finished_by FROM work
                 WHERE job = ANY($1) AND outcome IS NOT NULL",
                &[&jobs],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Finished {
                    job: row.try_get(0)?,
                    attempt: attempt_of(row.try_get(1)?)?,
                    outcome: row.try_get(2)?,
                    finished_by: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Removes outcomes stored longer ago than `age` that nobody collected (their job ended
    /// while they ran); returns how many.
    pub async fn remove_stale(&self, age: Duration) -> Result<u64, PgError> {
        let ms = lease_ms(age)?;
        self.execute(
            "DELETE FROM work WHERE finished_at < now() - $1::bigint * interval '1 millisecond'",
            &[&ms],
        )
        .await
    }

    /// Removes an attempt (collected, or its job ended).
    pub async fn remove(&self, job: &str, attempt: u32) -> Result<(), PgError> {
        let attempt = attempt_param(attempt)?;
        self.execute(
            "DELETE FROM work WHERE job = $1 AND attempt = $2",
            &[&job, &attempt],
        )
        .await?;
        Ok(())
    }

    /// Attempts in the table: queued, claimed or finished and not yet collected.
    pub async fn attempts(&self) -> Result<u64, PgError> {
        let rows = self.query("SELECT count(*) FROM work", &[]).await?;
        let n: i64 = rows.first().map_or(Ok(0), |row| row.try_get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// All rows of one statement.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(sql).await?;
            Ok(client.query(&stmt, params).await?)
        })
        .await
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, PgError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(sql).await?;
            Ok(client.execute(&stmt, params).await?)
        })
        .await
    }

    /// A call cut off at the deadline fails. Each call here is one statement outside a
    /// transaction, so its connection can serve the next call: the driver discards the late
    /// answer.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        tokio::time::timeout(self.deadline, call)
            .await
            .unwrap_or(Err(PgError::Deadline(self.deadline)))
    }
}

fn lease_ms(lease: Duration) -> Result<i64, PgError> {
    i64::try_from(lease.as_millis()).map_err(|_| range("lease"))
}

/// An attempt number as the table stores it.
fn attempt_param(attempt: u32) -> Result<i32, PgError> {
    i32::try_from(attempt).map_err(|_| range("attempt"))
}

/// An attempt number as the table stored it.
fn attempt_of(stored: i32) -> Result<u32, PgError> {
    u32::try_from(stored).map_err(|_| range("attempt"))
}

fn range(what: &str) -> PgError {
    PgError::Runtime(format!("shared work: {what} out of range"))
}
