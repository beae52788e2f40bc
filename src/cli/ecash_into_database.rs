//! `paydvm ecash into-database`: a node on PostgreSQL whose `state_dir` still holds the Cashu
//! wallet and pending swaps as files (written before the wallet moved into the database) moves
//! them into the ledger's database, so a standby on another machine can take the ecash over.
//!
//! The node must be stopped: the database's node lock is held for the whole move (a running
//! node or standby holding it makes the command refuse). The files are copied (`copy_ecash`:
//! the database must hold no ecash yet; both ends read back the same), then renamed with a
//! `.moved-to-database` suffix, companions included, so the node uses the database from its
//! next start. They are kept, not deleted: the operator removes them once satisfied.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use paydvm_ledger_pg::NodeLock;

use super::{copy_ecash, output, EXIT_OK};
use crate::config::{self, Config, LedgerPlace};
use crate::node::ecash_store::EcashStore;

/// Added to each file's name once its contents are in the database.
pub const MOVED_SUFFIX: &str = ".moved-to-database";

pub fn run(config_path: &Path) -> anyhow::Result<u8> {
    let node = Config::load(config_path)?.node;
    let LedgerPlace::Postgres(url) = &node.ledger else {
        bail!("the node's ledger is a file: its ecash stays in files beside it");
    };
    let location = url.location().context("node.ledger")?;
    let _lock = NodeLock::acquire(&location).context("stop the node (and its standbys) first")?;
    let base = node.local_base();
    let files = [config::wallet_path(&base), config::pending_path(&base)];
    let from = EcashStore::Files {
        wallet: files[0].clone(),
        pending: files[1].clone(),
    };
    let Some(copy) = copy_ecash::prepare(from, EcashStore::Database(Box::new(location)))? else {
        output::print("no wallet or pending swaps in files here: nothing to move\n")?;
        return Ok(EXIT_OK);
    };
    let said = copy.run()?;
    let mut renamed = Vec::new();
    for file in files {
        renamed.extend(retire(&file)?);
    }
    let renamed: Vec<String> = renamed.iter().map(|p| p.display().to_string()).collect();
    output::print(&format!(
        "{said}renamed {}; the node uses the database from its next start\n",
        renamed.join(", ")
    ))?;
    Ok(EXIT_OK)
}

/// Renames an SQLite file and its companions (`-wal`, `-shm`, `-journal`) so the set stays
/// readable under the new name; the new names. Nothing is renamed if a new name is taken.
fn retire(file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let pairs: Vec<(PathBuf, PathBuf)> = ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|c| {
            let from = PathBuf::from(format!("{}{c}", file.display()));
            let to = PathBuf::from(format!("{}{MOVED_SUFFIX}{c}", file.display()));
            (from, to)
        })
        .filter(|(from, _)| from.exists())
        .collect();
    if let Some((_, to)) = pairs.iter().find(|(_, to)| to.exists()) {
        bail!("{} exists already; move it away first", to.display());
    }
    for (from, to) in &pairs {
        std::fs::rename(from, to)
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    }
    Ok(pairs.into_iter().map(|(_, to)| to).collect())
}
