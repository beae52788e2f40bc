//! The benches' `--pg`: the node's ledger (and its ecash wallet) on a throwaway PostgreSQL 15
//! cluster (fsync on, the server's defaults for durability) instead of SQLite files. The node
//! bench's `--standbys N`: N more `paydvm run --standby` processes on the same database, each
//! with a `state_dir` of its own (as on separate machines), waiting to take over while the
//! first one serves. The cluster's helpers block: call them off the runtime.

use std::path::{Path, PathBuf};

use crate::fixture::{on_database, on_database_each};
use anyhow::Context;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::throwaway::{ClusterOptions, ThrowawayCluster};
use paydvm_ledger_pg::PgStore;

pub struct PgLedger {
    /// Stopped and removed when dropped.
    cluster: ThrowawayCluster,
    database: String,
    url: String,
}

impl PgLedger {
    /// A cluster and a fresh database in it.
    pub fn start() -> anyhow::Result<PgLedger> {
        let cluster = ThrowawayCluster::start(&ClusterOptions::durable())
            .context("starting a throwaway PostgreSQL cluster (Debian package postgresql)")?;
        let db = cluster.fresh_database()?;
        let url = cluster.url(&db);
        println!(
            "ledger: PostgreSQL 15 on 127.0.0.1 (throwaway cluster, fsync on, in {})",
            cluster.dir().display()
        );
        Ok(PgLedger {
            cluster,
            database: db,
            url,
        })
    }

    /// `standby1.toml` … `standby<n>.toml` beside `config` (the same node, its files in
    /// `<dir>/standby<k>`), then `config` itself on the database, its files in `<dir>/state`.
    pub fn point(&self, config: &Path, standbys: usize) -> anyhow::Result<Vec<PathBuf>> {
        let configs = on_database_each(config, &self.url, standbys, "standby", "standby")?;
        on_database(config, config, &self.url, Some("state"))?;
        Ok(configs)
    }

    /// Transactions committed in the node's database and WAL fsyncs of the cluster (only
    /// ours: it is throwaway) so far. Each session flushes its statistics at most once a
    /// second: wait that long after the work to count.
    pub fn server_counts(&self) -> anyhow::Result<(i64, i64)> {
        let sql = format!(
            "SELECT d.xact_commit, w.wal_sync FROM pg_stat_database d, pg_stat_wal w \
             WHERE d.datname = '{}'",
            self.database
        );
        let rows = self.cluster.admin("postgres", &sql)?;
        let row = rows
            .first()
            .context("no statistics for the node's database")?;
        Ok((row.get(0), row.get(1)))
    }

    /// Events in the ledger (its head's sequence number).
    pub fn events(&self) -> anyhow::Result<u64> {
        let options = StoreOptions::everything(Durability::Normal).read_only();
        let store = PgStore::open_with(&self.url, &options)?;
        Ok(store.head().0)
    }
}
