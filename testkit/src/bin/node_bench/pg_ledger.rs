//! `--pg`: the node's ledger on a throwaway PostgreSQL 15 cluster (fsync on, the server's
//! defaults for durability) instead of an SQLite file; `--standbys N`: N more `paydvm run
//! --standby` processes on the same database, each with a `state_dir` of its own (as on
//! separate machines), waiting to take over while the first one serves.

use std::path::{Path, PathBuf};

use anyhow::Context;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::throwaway::{ClusterOptions, ThrowawayCluster};
use paydvm_ledger_pg::PgStore;

pub struct PgLedger {
    /// Stopped and removed when dropped.
    _cluster: ThrowawayCluster,
    pub url: String,
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

    /// Points the node's `config` at the database, its local files in `<dir>/state`.
    pub fn point(&self, config: &Path) -> anyhow::Result<()> {
        rewrite_ledger_line(config, config, &self.url, "state")
    }

    /// `standby<k>.toml` beside `config` for k in 1..=n: the same node, its files in
    /// `<dir>/standby<k>`.
    pub fn standby_configs(&self, config: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
        let dir = config.parent().context("the config has no directory")?;
        (1..=n)
            .map(|k| {
                let path = dir.join(format!("standby{k}.toml"));
                std::fs::copy(config, &path)?;
                let state = format!("standby{k}");
                let toml = std::fs::read_to_string(&path)?;
                std::fs::write(
                    &path,
                    toml.replacen(
                        "state_dir = \"state\"",
                        &format!("state_dir = \"{state}\""),
                        1,
                    ),
                )?;
                Ok(path)
            })
            .collect()
    }

    /// Events in the ledger (its head's sequence number).
    pub fn events(&self) -> anyhow::Result<u64> {
        let options = StoreOptions::everything(Durability::Normal).read_only();
        let store = PgStore::open_with(&self.url, &options)?;
        Ok(store.head().0)
    }
}

/// Writes `from` to `to` with its `ledger = "paydvm.db"` line replaced by the database and a
/// `state_dir`.
fn rewrite_ledger_line(from: &Path, to: &Path, url: &str, state_dir: &str) -> anyhow::Result<()> {
    let toml = std::fs::read_to_string(from)?;
    let line = format!("ledger = \"{url}\"\nstate_dir = \"{state_dir}\"");
    anyhow::ensure!(
        toml.contains("ledger = \"paydvm.db\""),
        "the bench config has no ledger line to replace"
    );
    std::fs::write(to, toml.replacen("ledger = \"paydvm.db\"", &line, 1))?;
    Ok(())
}
