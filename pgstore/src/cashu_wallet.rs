//! The node's Cashu wallet (cdk's wallet store: the proofs it received, keysets, counters) in the
//! ledger's PostgreSQL database, in a schema of its own ([`WALLET_SCHEMA`]), so that a standby
//! on another machine that takes over the ledger takes over the ecash too. A file wallet beside
//! the ledger would stay on the machine of the node that died.
//!
//! cdk keeps its SQL in `cdk-sql-common`, generic over a small pool trait; this module is that
//! trait over tokio-postgres without TLS (the ledger's own connections have none either, and
//! cdk's PostgreSQL crate would link OpenSSL, which a fresh machine does not have). cdk's wallet
//! contract suite runs against it (`tests` below).

mod value;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdk_common::database::Error as WalletDbError;
use cdk_sql_common::database::{DatabaseConnector, DatabaseExecutor, GenericTransactionHandler};
use cdk_sql_common::pool::{DatabaseConfig, DatabasePool};
use cdk_sql_common::stmt::{Column, Statement};
use cdk_sql_common::SQLWalletDatabase;
use futures_util::TryStreamExt;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::client::CONNECT_TIMEOUT;
use crate::PgLocation;
use value::{row_values, Param};

/// The schema the node's wallet tables live in (cdk's table names, `proof`, `mint`, …, apart
/// from the ledger's).
pub const WALLET_SCHEMA: &str = "paydvm_cashu_wallet";

/// Connections per wallet: the NutZap rail swaps a few at once, refunds send one at a time.
const WALLET_POOL_SIZE: usize = 4;

/// How long a caller waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// cdk's wallet store on PostgreSQL.
pub type PgWalletDatabase = SQLWalletDatabase<WalletPool>;

/// Opens the wallet in `schema` of the ledger's database (created, and cdk's migrations run,
/// on first use). The node's is [`WALLET_SCHEMA`].
pub async fn open_wallet(
    location: &PgLocation,
    schema: &str,
) -> Result<PgWalletDatabase, WalletDbError> {
    if schema.is_empty()
        || !schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(WalletDbError::Internal(format!(
            "wallet schema {schema:?}: letters, digits and _ only"
        )));
    }
    let deadline = location.statement_deadline();
    let config = WalletConfig {
        config: location.config().clone(),
        schema: schema.to_owned(),
        deadline,
    };
    // cdk runs its migrations (check, then create) in one transaction with no lock: two opening
    // the same schema at once both find a table missing, and the later create fails on the
    // catalog's unique index. Serialised here, the later one finds them applied.
    let (client, driver) = open_session(location.config(), |_| {}).await?;
    let opened = async {
        lock_for_migrations(&client, schema, deadline).await?;
        PgWalletDatabase::new(config).await
    }
    .await;
    // The session's end lets the lock go (also when a step above failed).
    end_session(client, driver, opened.is_ok()).await;
    opened
}

/// The class of the session-level advisory lock held while cdk's migrations run, in the
/// two-key space (which never overlaps the one-key space of the node lock and the tables'
/// locks): "pd" in ASCII and 4. The second key is the schema's [`schema_lock_key`], so opens of
/// different schemas (tests side by side, two ledgers on one database) never wait for each other.
const WALLET_MIGRATION_LOCK_CLASS: i32 = 0x7064_0004;

/// A stable 32-bit key for `schema` (FNV-1a): the same in every process, unlike a hasher seeded
/// per process. Two schemas sharing a key only wait for each other; nothing else follows.
fn schema_lock_key(schema: &str) -> i32 {
    let hash = schema.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// Takes `schema`'s migrations lock, waiting for another process's migrations at most `deadline`
/// (the ledger's statement deadline: they take well under a second).
async fn lock_for_migrations(
    client: &Client,
    schema: &str,
    deadline: Duration,
) -> Result<(), WalletDbError> {
    let key = schema_lock_key(schema);
    let sql = "SELECT pg_advisory_lock($1, $2)";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&WALLET_MIGRATION_LOCK_CLASS, &key];
    let locked = client.execute(sql, &params);
    match tokio::time::timeout(deadline, locked).await {
        Ok(done) => done.map(drop).map_err(db_error),
        Err(_) => Err(WalletDbError::Internal(format!(
            "the wallet's migrations stayed held elsewhere (or the database silent) for {deadline:?}"
        ))),
    }
}

/// Whether a wallet was ever made in `schema` of the ledger's database: read-only commands ask
/// before opening it, which would create it.
pub async fn wallet_exists(location: &PgLocation, schema: &str) -> Result<bool, WalletDbError> {
    let (client, driver) = open_session(location.config(), |_| {}).await?;
    let deadline = location.statement_deadline();
    let query = "SELECT 1 FROM pg_namespace WHERE nspname = $1";
    let asked = tokio::time::timeout(deadline, client.query_opt(query, &[&schema])).await;
    end_session(client, driver, asked.is_ok()).await;
    let Ok(found) = asked else {
        return Err(WalletDbError::Internal(format!(
            "the wallet database did not answer within {deadline:?}"
        )));
    };
    Ok(found.map_err(db_error)?.is_some())
}

/// Ends a session from [`open_session`]: waited for when every request had its answer, cut
/// otherwise. A request still waiting (a server that stopped answering, a lock held elsewhere)
/// keeps tokio-postgres's connection open until its answer comes, so waiting could be for ever.
async fn end_session(client: Client, driver: tokio::task::JoinHandle<()>, answered: bool) {
    drop(client);
    if answered {
        let _ = driver.await;
    } else {
        driver.abort();
    }
}

/// A session opened within [`CONNECT_TIMEOUT`], its connection driven by a task that calls
/// `ended` when the session ends.
async fn open_session(
    config: &tokio_postgres::Config,
    ended: impl FnOnce(Result<(), tokio_postgres::Error>) + Send + 'static,
) -> Result<(Client, tokio::task::JoinHandle<()>), WalletDbError> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| {
            WalletDbError::Internal(format!(
                "the wallet database did not answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(db_error)?;
    let driver = tokio::spawn(async move { ended(connection.await) });
    Ok((client, driver))
}

/// Where the pool connects to; the password inside is never printed.
#[derive(Clone)]
pub struct WalletConfig {
    config: tokio_postgres::Config,
    schema: String,
    /// How long one statement may take (the ledger's deadline, `?deadline_ms=`): a server
    /// that stops answering mid-session must not hold a swap or a refund for ever.
    deadline: Duration,
}

impl fmt::Debug for WalletConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletConfig(schema {})", self.schema)
    }
}

impl DatabaseConfig for WalletConfig {
    fn max_size(&self) -> usize {
        WALLET_POOL_SIZE
    }

    fn default_timeout(&self) -> Duration {
        POOL_WAIT
    }
}

/// cdk's pool of [`WalletConnection`]s.
#[derive(Debug)]
pub struct WalletPool;

impl DatabasePool for WalletPool {
    type Connection = WalletConnection;
    type Config = WalletConfig;
    type Error = tokio_postgres::Error;

    fn new_resource(
        config: &WalletConfig,
        stale: Arc<AtomicBool>,
        _timeout: Duration,
    ) -> Result<WalletConnection, cdk_sql_common::pool::Error<tokio_postgres::Error>> {
        // Connecting is async and this is not: the first statement connects.
        Ok(WalletConnection {
            config: config.clone(),
            stale,
            client: OnceCell::new(),
        })
    }
}

/// One session, opened by its first statement. Marked stale (and so dropped by the pool) when
/// the session ends or cannot be opened, so the next caller gets a fresh one.
pub struct WalletConnection {
    config: WalletConfig,
    stale: Arc<AtomicBool>,
    client: OnceCell<Client>,
}

impl fmt::Debug for WalletConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletConnection({:?})", self.config)
    }
}

impl WalletConnection {
    async fn client(&self) -> Result<&Client, WalletDbError> {
        let opened = self.client.get_or_try_init(|| self.connect()).await;
        if opened.is_err() {
            self.stale.store(true, Ordering::Release);
        }
        opened
    }

    async fn connect(&self) -> Result<Client, WalletDbError> {
        let stale = Arc::clone(&self.stale);
        let (client, _driver) = open_session(&self.config.config, move |_| {
            stale.store(true, Ordering::Release)
        })
        .await?;
        let schema = &self.config.schema;
        // Two sessions creating the schema at once: the loser's unique violation means it is
        // there.
        match client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
        {
            Err(e) if e.code() != Some(&SqlState::UNIQUE_VIOLATION) => return Err(db_error(e)),
            _ => {}
        }
        // A session dropped at its deadline mid-transaction is ended by the server soon after,
        // letting go of its row locks.
        let idle_ms = (self.config.deadline * 2).as_millis();
        client
            .batch_execute(&format!(
                "SET search_path TO \"{schema}\"; \
                 SET idle_in_transaction_session_timeout = {idle_ms}"
            ))
            .await
            .map_err(db_error)?;
        Ok(client)
    }

    /// `work` within the deadline; past it the session is marked stale (the pool drops it) and
    /// the call fails: cdk's callers then leave the ecash where it was, to be tried again.
    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, WalletDbError>>,
    ) -> Result<T, WalletDbError> {
        let deadline = self.config.deadline;
        match tokio::time::timeout(deadline, work).await {
            Ok(answer) => answer,
            Err(_) => {
                self.stale.store(true, Ordering::Release);
                Err(WalletDbError::Internal(format!(
                    "the wallet database did not answer within {deadline:?}"
                )))
            }
        }
    }

    async fn rows(&self, statement: Statement) -> Result<Vec<Vec<Column>>, WalletDbError> {
        let (sql, values) = statement.to_sql()?;
        let rows: Vec<tokio_postgres::Row> = self
            .timed(async {
                let client = self.client().await?;
                let stream = client
                    .query_raw(sql.as_str(), values.iter().map(Param))
                    .await
                    .map_err(db_error)?;
                stream.try_collect().await.map_err(db_error)
            })
            .await?;
        rows.iter().map(row_values).collect()
    }
}

/// cdk's error for a failed statement: its duplicate and deadlock kinds, which its sagas act on.
fn db_error(e: tokio_postgres::Error) -> WalletDbError {
    match e.code() {
        Some(c)
            if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::INTEGRITY_CONSTRAINT_VIOLATION =>
        {
            WalletDbError::Duplicate
        }
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => WalletDbError::Locked,
        _ => WalletDbError::Database(Box::new(e)),
    }
}

#[async_trait::async_trait]
impl DatabaseExecutor for WalletConnection {
    fn name() -> &'static str {
        // cdk picks its migrations and SQL dialect by this name.
        "postgres"
    }

    async fn execute(&self, statement: Statement) -> Result<usize, WalletDbError> {
        let (sql, values) = statement.to_sql()?;
        let n = self
            .timed(async {
                let client = self.client().await?;
                client
                    .execute_raw(sql.as_str(), values.iter().map(Param))
                    .await
                    .map_err(db_error)
            })
            .await?;
        usize::try_from(n).map_err(|_| WalletDbError::Internal(format!("{n} rows")))
    }

    async fn fetch_one(&self, statement: Statement) -> Result<Option<Vec<Column>>, WalletDbError> {
        Ok(self.rows(statement).await?.into_iter().next())
    }

    async fn fetch_all(&self, statement: Statement) -> Result<Vec<Vec<Column>>, WalletDbError> {
        self.rows(statement).await
    }

    async fn pluck(&self, statement: Statement) -> Result<Option<Column>, WalletDbError> {
        Ok(self
            .rows(statement)
            .await?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next()))
    }

    async fn batch(&self, statement: Statement) -> Result<(), WalletDbError> {
        let (sql, _) = statement.to_sql()?;
        self.timed(async {
            self.client()
                .await?
                .batch_execute(&sql)
                .await
                .map_err(db_error)
        })
        .await
    }
}

impl DatabaseConnector for WalletConnection {
    type Transaction = GenericTransactionHandler<Self>;
}

#[cfg(test)]
mod tests {
    use cdk_common::wallet_db_test;

    use super::*;
    use crate::throwaway::ThrowawayCluster;

    /// cdk's contract suite for wallet stores, each test in a schema of its own.
    async fn provide_db(test_id: String) -> PgWalletDatabase {
        // Starting the cluster blocks (and builds a runtime of its own): off this one.
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::shared)
            .await
            .expect("cluster");
        let location = PgLocation::parse(&cluster.url("postgres")).expect("url");
        open_wallet(&location, &test_id).await.expect("wallet")
    }

    // The whole suite but its eight mint- and melt-quote tests: their quotes expire at
    // 9 999 999 999, which does not fit the INTEGER column cdk's PostgreSQL migration makes
    // (cdk-postgres wraps such a value silently; `value::Param` refuses it). The node never makes
    // a mint or melt quote: it receives, swaps and sends ecash only.
    wallet_db_test!(
        provide_db,
        add_and_get_mint,
        add_mint_without_info,
        remove_mint,
        update_mint_url,
        add_and_get_keysets,
        get_keyset_by_id_in_transaction,
        add_and_get_keys,
        get_keys_in_transaction,
        remove_keys,
        add_and_get_proofs,
        get_proofs_in_transaction,
        update_proofs,
        update_proofs_state,
        filter_proofs_by_unit,
        filter_proofs_by_state,
        get_balance,
        get_balance_by_state,
        increment_keyset_counter,
        keyset_counter_isolation,
        increment_derivation_counter,
        derivation_counters_are_independent,
        derivation_counter_is_atomic,
        add_and_get_transaction,
        update_transaction_status,
        same_proofs_in_different_sagas,
        list_transactions,
        filter_transactions_by_mint,
        remove_transaction,
        kvstore_write_and_read,
        kvstore_list,
        kvstore_update,
        kvstore_remove,
        kvstore_namespace_isolation,
        add_and_get_saga,
        update_saga_optimistic_locking,
        delete_saga,
        get_incomplete_sagas,
        reserve_proofs,
        release_proofs,
        release_proofs_preserves_spent,
        get_reserved_proofs,
        reserve_proofs_already_reserved,
        reserve_proofs_is_atomic,
    );

    /// A server that stops answering mid-session (traffic held, as behind a partition) fails
    /// the wallet's call at the deadline instead of holding it; once it answers again, a fresh
    /// session serves the next call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_server_fails_a_call_at_the_deadline_and_a_later_one_reconnects() {
        use cdk_common::database::WalletDatabase;
        let (cluster, proxy) = tokio::task::spawn_blocking(|| {
            let cluster = ThrowawayCluster::shared();
            let proxy = crate::cut_proxy::CutProxy::start(cluster.port()).expect("proxy");
            (cluster, proxy)
        })
        .await
        .expect("proxy");
        let url = proxy.url(&cluster.url("postgres"), cluster.port()) + "?deadline_ms=500";
        let location = PgLocation::parse(&url).expect("url");
        let wallet = open_wallet(&location, "silent_server")
            .await
            .expect("wallet");
        assert!(wallet.get_mints().await.expect("mints").is_empty());
        proxy.hold();
        // A bound on waiting, not a figure: without the deadline the call never comes back.
        let failed = tokio::time::timeout(Duration::from_secs(30), wallet.get_mints())
            .await
            .expect("the call came back");
        assert!(failed.is_err(), "{failed:?}");
        proxy.release();
        assert!(wallet.get_mints().await.expect("mints again").is_empty());
        tokio::task::spawn_blocking(move || drop(proxy))
            .await
            .expect("drop");
    }

    /// Nodes starting at once on a fresh database (and `paydvm reconcile` beside a running
    /// node) open the wallet together: every one of them opens it, none fails in cdk's
    /// migrations on the catalog's unique indexes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wallets_opened_at_once_on_a_fresh_schema_all_open() {
        use cdk_common::database::WalletDatabase;
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::shared)
            .await
            .expect("cluster");
        let location = PgLocation::parse(&cluster.url("postgres")).expect("url");
        for round in 0..3 {
            let schema = format!("opened_at_once_{round}");
            let opens = (0..6).map(|_| open_wallet(&location, &schema));
            for opened in futures_util::future::join_all(opens).await {
                let wallet = opened.expect("every open succeeds");
                assert!(wallet.get_mints().await.expect("mints").is_empty());
            }
        }
    }

    /// Another process holding the schema's migrations lock past the deadline fails the open at
    /// the deadline: the waiting session is cut, not waited for until the lock is let go. It
    /// holds no other schema's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_waiting_on_migrations_held_elsewhere_fails_at_the_deadline() {
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::shared)
            .await
            .expect("cluster");
        let url = cluster.url("postgres");
        let holder = PgLocation::parse(&url).expect("url");
        let (client, _driver) = open_session(holder.config(), |_| {})
            .await
            .expect("session");
        lock_for_migrations(&client, "migrations_held", holder.statement_deadline())
            .await
            .expect("lock");
        let location = PgLocation::parse(&format!("{url}?deadline_ms=500")).expect("url");
        // A bound on waiting, not a figure: the holder lets go only when this test ends.
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            open_wallet(&location, "migrations_held"),
        )
        .await
        .expect("the open came back");
        let Err(WalletDbError::Internal(reason)) = opened else {
            panic!("opened while the lock was held elsewhere");
        };
        assert!(reason.contains("migrations"), "{reason}");
        // The lock is the schema's: another schema opens meanwhile (tests run side by side on
        // one cluster, each with its own schema). Opened with the default deadline, so a loaded
        // machine does not fail its migrations' statements; waiting on the held lock would
        // still fail it (the lock is held until this test ends).
        let other = open_wallet(&holder, "migrations_held_not_here").await;
        assert!(other.is_ok(), "{:?}", other.err());
        drop(client);
    }

    #[tokio::test]
    async fn a_schema_name_that_is_not_a_plain_word_is_refused() {
        let location = PgLocation::parse("postgres://u@127.0.0.1:1/db").expect("url");
        let refused = open_wallet(&location, "x\"; DROP TABLE events; --").await;
        assert!(matches!(refused, Err(WalletDbError::Internal(_))));
    }
}
