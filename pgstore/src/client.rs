//! The blocking face of an asynchronous driver: the store owns a small tokio runtime and a
//! connection pool, runs each database call as a task on that runtime and waits for its answer
//! on a plain channel. Waiting on a channel (not `Runtime::block_on`) works from any thread,
//! including one inside another runtime (`spawn_blocking`, the node's core thread).

use std::future::Future;

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
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections per store: the core writes one flush at a time; the rest serve reads.
const POOL_SIZE: usize = 4;

pub struct Db {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
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
        let options = format!(
            "{} -c synchronous_commit={sync} -c plan_cache_mode=force_custom_plan",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim());
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| PgError::Runtime(e.to_string()))?;
        Ok(Db {
            runtime: Some(runtime),
            pool,
        })
    }

    /// Runs `work` on the store's runtime and waits for its result.
    pub fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.pool.clone());
        self.runtime().spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| PgError::Runtime("the task was dropped".into()))?
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
