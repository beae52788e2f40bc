//! The blocking face of an asynchronous driver: the store owns a small tokio runtime and a
//! connection pool, runs each database call as a task on that runtime and waits for its answer
//! on a plain channel. Waiting on a channel (not `Runtime::block_on`) works from any thread,
//! including one inside another runtime (`spawn_blocking`, the node's core thread).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use paydvm_ledger::{Durability, LedgerError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::location::PgLocation;

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Location(#[from] crate::location::LocationError),
    /// Another writer appended since this store last wrote: its head is stale.
    #[error("the ledger head moved to {found} (expected {expected}): another writer appended")]
    HeadMoved { expected: String, found: String },
    #[error("the store's runtime stopped: {0}")]
    Runtime(String),
    /// The server did not answer within the store's deadline; the call's connections were
    /// closed. A write cut off by it has an unknown outcome until checked.
    #[error("the database did not answer within {0:?}")]
    Deadline(std::time::Duration),
    /// `COMMIT` was sent and no answer came back (the connection broke): the write may or may
    /// not be in the database until checked.
    #[error("COMMIT got no answer: {0}")]
    Commit(#[source] tokio_postgres::Error),
    /// A write's outcome is unknown and could not be checked yet (the server does not answer):
    /// the store checks before its next write.
    #[error(
        "a write's outcome is unknown ({cause}) and could not be checked ({check}); \
             it is checked before the next write"
    )]
    Unresolved { cause: String, check: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<serde_json::Error> for PgError {
    fn from(e: serde_json::Error) -> Self {
        PgError::Ledger(e.into())
    }
}

impl From<PgError> for LedgerError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Ledger(e) => e,
            other => LedgerError::Database(Box::new(other)),
        }
    }
}

/// A parameter that can travel to the runtime's thread.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// How long opening a connection (and, for the node lock, taking the lock) may take: a server
/// that accepts the connection and then says nothing, or a host that drops packets, must not hold
/// a start, a standby or a write forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per store: the core writes one flush at a time; the rest serve reads.
const POOL_SIZE: usize = 4;

/// How long one call on an open session may take (a flush, a page of a replay, a snapshot): a
/// server that stops answering mid-session (frozen, or a host gone without resetting the
/// connection, which the kernel notices only after ~15 minutes) must not hold the node's write
/// for ever. Generous: the longest call here, a snapshot at a million events, takes about a
/// second.
pub const STATEMENT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Db {
    runtime: Option<tokio::runtime::Runtime>,
    /// Replaced by a fresh one after a deadline: the late answers of the old connections are
    /// not waited for, and no later call is given one of them.
    pool: Mutex<Pool>,
    /// Boxed: the store stays small beside the SQLite one in the node's `LedgerHandle`.
    config: Box<tokio_postgres::Config>,
    deadline: Duration,
    /// The head after a write whose outcome could not be checked (see `store`).
    pub(crate) unresolved: Option<(u64, paydvm_ledger::chain::Hash)>,
}

impl Db {
    pub fn connect(location: &PgLocation, durability: Durability) -> Result<Db, PgError> {
        let runtime =
            one_worker_runtime("paydvm-ledger-pg").map_err(|e| PgError::Runtime(e.to_string()))?;
        let mut config = location.config().clone();
        // Durability::Normal: a commit returns before its WAL record is flushed (a server crash
        // may lose the last commits, never corrupt); Full waits for the flush.
        let sync = match durability {
            Durability::Full => "on",
            Durability::Normal => "off",
        };
        // Statements are prepared once per connection (`prepare_cached`), often while the
        // tables are still small. Left to itself the server switches such a statement to a
        // generic plan after five runs and keeps it: a sequential scan chosen when `events` held
        // a few rows stayed a sequential scan at 40 000 (the key lookup before every staged
        // group took ~4 ms and grew with history; the node ran 64 free jobs/s). Planning each
        // run for its own parameters costs a fraction of a millisecond and uses the indexes.
        //
        // A transaction of this store is idle only between its statements' answers and the
        // next statement (microseconds): one idle for twice the deadline lost its client (the
        // deadline dropped the connection, and a partition hides the close from the server,
        // whose keepalive notices after hours). Ended by the server, it lets go of the head
        // row's lock, which every write and every check of an unknown outcome waits for.
        let deadline = location.statement_deadline();
        let options = format!(
            "{} -c synchronous_commit={sync} -c plan_cache_mode=force_custom_plan \
             -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or(""),
            (deadline * 2).as_millis()
        );
        config.options(options.trim());
        let pool = new_pool(&config)?;
        Ok(Db {
            runtime: Some(runtime),
            pool: Mutex::new(pool),
            config: Box::new(config),
            deadline,
            unresolved: None,
        })
    }

    /// Runs `work` on the store's runtime and waits for its result, at most the deadline. Past
    /// it the work is dropped and the pool replaced (see [`Db::pool`]).
    pub fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.pool());
        let deadline = self.deadline;
        self.runtime().spawn(async move {
            let answer = tokio::time::timeout(deadline, future)
                .await
                .unwrap_or(Err(PgError::Deadline(deadline)));
            let _ = tx.send(answer);
        });
        let answer = rx
            .recv()
            .map_err(|_| PgError::Runtime("the task was dropped".into()))?;
        if let Err(PgError::Deadline(_)) = answer {
            self.replace_pool();
        }
        answer
    }

    fn pool(&self) -> Pool {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the pool: its connections close once the calls holding them are gone (a timed-out
    /// call's were dropped with it), and the next call connects afresh.
    fn replace_pool(&self) {
        // Building a pool connects nothing; it cannot fail where `connect` built one.
        if let Ok(fresh) = new_pool(&self.config) {
            *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime until drop")
    }

    /// All rows of one statement.
    pub fn query(&self, sql: impl Into<String>, params: Vec<Param>) -> Result<Vec<Row>, PgError> {
        let sql = sql.into();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            Ok(client.query(&stmt, &refs).await?)
        })
    }

    /// The first row of one statement, if any.
    pub fn query_opt(
        &self,
        sql: impl Into<String>,
        params: Vec<Param>,
    ) -> Result<Option<Row>, PgError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// A pool of at most [`POOL_SIZE`] connections, each opened within [`CONNECT_TIMEOUT`].
pub(crate) fn new_pool(config: &tokio_postgres::Config) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| PgError::Runtime(e.to_string()))
}

/// Creates a table that lives beside the ledger's (`create`: a `CREATE TABLE IF NOT EXISTS`)
/// under the transaction-scoped advisory lock `lock_key`: two nodes starting at once may both
/// find it missing, and `IF NOT EXISTS` alone can then fail one of them on the catalog's unique
/// index.
pub(crate) async fn create_serialised(
    pool: &Pool,
    lock_key: i64,
    create: &str,
) -> Result<(), PgError> {
    let client = pool.get().await?;
    let sql = format!("BEGIN; SELECT pg_advisory_xact_lock({lock_key}); {create}; COMMIT;");
    if let Err(e) = client.batch_execute(&sql).await {
        // Not back to the pool: its transaction may be left aborted.
        drop(deadpool_postgres::Object::take(client));
        return Err(e.into());
    }
    Ok(())
}

/// A runtime with one worker thread: a store's (or a lock's) own, so its calls can be waited on
/// from any thread.
pub fn one_worker_runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
}

impl Drop for Db {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime: let it go instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A column as the type the store expects, a wrong type or NULL being corruption.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, PgError> {
    Ok(row.try_get(i)?)
}

/// An i64 column that must fit a u64.
pub fn get_u64(row: &Row, i: usize, what: &str) -> Result<u64, PgError> {
    let v: i64 = row.try_get(i)?;
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} is negative")).into())
}

pub fn int(v: u64, what: &str) -> Result<i64, PgError> {
    i64::try_from(v)
        .map_err(|_| LedgerError::Corrupt(format!("{what} {v} exceeds storage range")).into())
}
