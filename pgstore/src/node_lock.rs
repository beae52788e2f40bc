//! One node per database: a node holds a session-level advisory lock
//! (`pg_try_advisory_lock`) on a dedicated connection for as long as it runs. A second node on
//! the same database finds it taken and is refused before it opens the ledger. PostgreSQL
//! releases the lock when the session ends, so a node killed with SIGKILL never leaves it stale
//! (the server notices the closed connection). Advisory locks are per database: two ledgers in
//! two databases of one server do not block each other.
//!
//! Several nodes serving one database (claims and leases) is a later phase of issue 14; until
//! then this lock is what keeps a second writer out, besides the head check of every flush
//! (`PgError::HeadMoved`).

use tokio_postgres::NoTls;

use crate::client::one_worker_runtime;
use crate::location::PgLocation;

/// The lock's key: "paydvm" in ASCII and a version, so it does not collide with other
/// applications' advisory locks in a shared database.
pub const NODE_LOCK_KEY: i64 = 0x7061_7964_766d_0001;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum NodeLockError {
    #[error(
        "another paydvm node holds this ledger ({0}); multi-node is not supported yet: stop \
         the other node first"
    )]
    Held(String),
    #[error("cannot reach the ledger database {shown} to lock it: {source}")]
    Connect {
        shown: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the lock's runtime: {0}")]
    Runtime(String),
}

/// Held while it lives (and its connection with it).
pub struct NodeLock {
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<tokio_postgres::Client>,
    shown: String,
}

impl NodeLock {
    /// Connects and takes the lock without waiting.
    pub fn acquire(location: &PgLocation) -> Result<NodeLock, NodeLockError> {
        let runtime = one_worker_runtime("paydvm-ledger-lock")
            .map_err(|e| NodeLockError::Runtime(e.to_string()))?;
        let shown = location.to_string();
        let config = location.config().clone();
        let connect = |source| NodeLockError::Connect {
            shown: shown.clone(),
            source,
        };
        let (client, taken) = run_on(&runtime, async move {
            let (client, connection) = config.connect(NoTls).await?;
            // The connection lives on the lock's runtime until the lock is dropped.
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&NODE_LOCK_KEY])
                .await?;
            Ok::<_, tokio_postgres::Error>((client, row.get::<_, bool>(0)))
        })?
        .map_err(connect)?;
        if !taken {
            drop(client);
            runtime.shutdown_background();
            return Err(NodeLockError::Held(shown));
        }
        Ok(NodeLock {
            runtime: Some(runtime),
            client: Some(client),
            shown,
        })
    }

    /// The database it locks (without the password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// False once the lock's connection is gone (the server restarted or cut it): the lock is
    /// then no longer held.
    pub fn held(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }
}

/// Runs `work` on `runtime` from any thread (even one inside another runtime) and waits.
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, NodeLockError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv()
        .map_err(|_| NodeLockError::Runtime("the task was dropped".into()))
}

impl Drop for NodeLock {
    /// Unlocks explicitly (so a node restarted at once finds the lock free, without waiting for
    /// the server to notice the closed connection), then closes the connection.
    fn drop(&mut self) {
        if let (Some(runtime), Some(client)) = (self.runtime.as_ref(), self.client.take()) {
            let _ = run_on(runtime, async move {
                let _ = client
                    .execute("SELECT pg_advisory_unlock($1)", &[&NODE_LOCK_KEY])
                    .await;
            });
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
