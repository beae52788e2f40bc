//! `--pg`: the node's ledger on a throwaway PostgreSQL 15 cluster (fsync on, the server's
//! defaults for durability) instead of an SQLite file; `--standbys N`: N more `paydvm run
//! --standby` processes on the same database, each with a `state_dir` of its own (as on
//! separate machines), waiting to take over while the first one serves.

use std::path::{Path, PathBuf};

use anyhow::Context;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::throwaway::{ClusterOptions, ThrowawayCluster};
use paydvm_ledger_pg::PgStore;
use paydvm_testkit::fixture::{on_database, on_database_each};

pub struct PgLedger {
    /// Stopped and removed when dropped.
    _cluster: ThrowawayCluster,
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
            _cluster: cluster,
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

    /// Events in the ledger (its head's sequence number).
    pub fn events(&self) -> anyhow::Result<u64> {
        let options = StoreOptions::everything(Durability::Normal).read_only();
        let store = PgStore::open_with(&self.url, &options)?;
        Ok(store.head().0)
    }
}
