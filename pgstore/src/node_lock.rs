//! One node per database: a node holds a session-level advisory lock
//! (`pg_try_advisory_lock`) on a dedicated connection for as long as it runs. A second node on
//! the same database finds it taken and is refused before it opens the ledger. PostgreSQL
//! releases the lock when the session ends, so a node killed with SIGKILL never leaves it stale
//! (the server notices the closed connection). Advisory locks are per database: two ledgers in
//! two databases of one server do not block each other.
//!
//! A node started as a standby (`paydvm run --standby`) tries the lock again until the holder
//! lets go, then takes over. While held, the lock's session is probed ([`PROBE_EVERY`]): a
//! session the server ended, or one that does not answer within [`PROBE_TIMEOUT`], counts as
//! lost ([`NodeLock::lost`]), and the node must stop writing, because a standby may hold the
//! lock by then. The head check of every flush (`PgError::HeadMoved`) stays the last fence
//! against a second writer.
//!
//! Several nodes *deciding* on one database at once is a later phase of issue 14; jobs of a
//! shared offer are already run by every node, each claimed with a lease (`work_queue`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::client::one_worker_runtime;
use crate::client::CONNECT_TIMEOUT;
use crate::location::PgLocation;

/// The lock's key: "paydvm" in ASCII and a version, so it does not collide with other
/// applications' advisory locks in a shared database.
pub const NODE_LOCK_KEY: i64 = 0x7061_7964_766d_0001;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum NodeLockError {
    #[error(
        "another paydvm node holds this ledger ({0}); stop the other node first, or start \
         this one with --standby to take over when it stops (nodes serving one database at \
         once are not supported yet)"
    )]
    Held(String),
    #[error("cannot reach the ledger database {shown} to lock it: {source}")]
    Connect {
        shown: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server took the connection but did not answer in time (or nothing answered the
    /// connection at all): as unreachable as a refused connection.
    #[error("the ledger database {shown} did not answer within {} s", .after.as_secs())]
    Timeout { shown: String, after: Duration },
    #[error("the lock's runtime: {0}")]
    Runtime(String),
}

impl NodeLockError {
    /// Whether the database could not be reached, or is starting up or shutting down: worth
    /// trying again later (a standby waits through a server restart). A refused password, a
    /// missing database or role, or a server that answers with any other error is not.
    pub fn unreachable(&self) -> bool {
        let source = match self {
            NodeLockError::Connect { source, .. } => source,
            NodeLockError::Timeout { .. } => return true,
            _ => return false,
        };
        match source.code() {
            // Class 08: connection exception; 57P01–57P03: shutting down, crashed, starting.
            Some(state) => state.code().starts_with("08") || state.code().starts_with("57P"),
            None => {
                source.is_closed()
                    || std::error::Error::source(source).is_some_and(|s| s.is::<std::io::Error>())
            }
        }
    }
}

/// How often a held lock's session is asked whether it is still there.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How long a probe may take before the lock counts as lost: a server that cannot answer in
/// this time may already have ended the session and granted the lock to a standby.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Held while it lives (and its connection with it).
pub struct NodeLock {
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<Arc<tokio_postgres::Client>>,
    probe: Option<tokio::task::JoinHandle<()>>,
    lost: watch::Receiver<bool>,
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
        let timeout = || NodeLockError::Timeout {
            shown: shown.clone(),
            after: CONNECT_TIMEOUT,
        };
        let attempt = async move {
            let (client, connection) = config.connect(NoTls).await?;
            // The connection lives on the lock's runtime until the lock is dropped.
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&NODE_LOCK_KEY])
                .await?;
            Ok::<_, tokio_postgres::Error>((client, row.get::<_, bool>(0)))
        };
        // The timer is made on the lock's runtime (a `timeout` needs one where it is created).
        let timed = async move { tokio::time::timeout(CONNECT_TIMEOUT, attempt).await };
        let (client, taken) = run_on(&runtime, timed)?
            .map_err(|_| timeout())?
            .map_err(connect)?;
        if !taken {
            drop(client);
            runtime.shutdown_background();
            return Err(NodeLockError::Held(shown));
        }
        let client = Arc::new(client);
        let (lost_tx, lost) = watch::channel(false);
        let probe = runtime.spawn(probe(Arc::clone(&client), lost_tx));
        Ok(NodeLock {
            runtime: Some(runtime),
            client: Some(client),
            probe: Some(probe),
            lost,
            shown,
        })
    }

    /// Resolves once the lock is lost (its session ended or stopped answering); never while it
    /// is held.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // An error means the probe is gone, which happens only when the lock is dropped.
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// The database it locks (without the password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// False once the lock's connection is gone (the server restarted or cut it): the lock is
    /// then no longer held.
    pub fn held(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed()) && !*self.lost.borrow()
    }
}

/// Asks the lock's session a trivial question every [`PROBE_EVERY`] until it fails or takes
/// longer than [`PROBE_TIMEOUT`], then says the lock is lost. A session that answers still
/// holds its session-level advisory lock: only this session could have released it.
async fn probe(client: Arc<tokio_postgres::Client>, lost: watch::Sender<bool>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let answer = tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1")).await;
        if !matches!(answer, Ok(Ok(_))) {
            let _ = lost.send(true);
            return;
        }
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
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
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
