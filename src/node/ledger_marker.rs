//! Never a fresh ledger over a node directory that had one, unless the operator says so. An
//! empty ledger forgets every job, quote, payment and refund: the node would quote and run again
//! requests it already answered (relays still hold them) and owe refunds it no longer knows
//! about. So `paydvm run` refuses to start when the ledger file is missing but something shows
//! it existed: the marker written next to it at first start (`<ledger>.created`), SQLite's
//! `-wal`/`-shm` files, or the lock file every run leaves (`<ledger>.lock`). `--new-ledger`
//! ([`super::NodeOptions::new_ledger`]) starts an empty one anyway.

use std::path::{Path, PathBuf};

use super::ledger_lock::LedgerLock;
use super::ledger_watch::companions;

/// The ledger file is missing where one existed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the ledger file {ledger} does not exist, but this node had one (found {found}); an empty \
     ledger would forget every job and payment and run recent work again. Restore the ledger \
     from a backup (docs/operations.md, Runbook), or start with `paydvm run --new-ledger` to \
     begin a new, empty ledger on purpose"
)]
pub struct LedgerMissing {
    pub ledger: PathBuf,
    pub found: String,
}

/// The marker of `ledger`: `<ledger>.created`.
pub fn path_for(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".created");
    PathBuf::from(name)
}

/// Refuses when `ledger` is missing but its node directory shows it existed, unless
/// `new_ledger`. Call before the lock is taken (taking it creates the lock file).
pub fn refuse_fresh_over_old(ledger: &Path, new_ledger: bool) -> Result<(), LedgerMissing> {
    if new_ledger || ledger.exists() {
        return Ok(());
    }
    let [wal, shm] = companions(ledger);
    let found: Vec<String> = [path_for(ledger), wal, shm, LedgerLock::path_for(ledger)]
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(LedgerMissing {
        ledger: ledger.to_path_buf(),
        found: found.join(", "),
    })
}

/// Writes the marker once the ledger is open, if it is not there yet (also for ledgers created
/// before markers existed).
pub fn mark(ledger: &Path, now_ms: u64) -> std::io::Result<()> {
    let marker = path_for(ledger);
    if marker.exists() {
        return Ok(());
    }
    let text = format!(
        "paydvm: the ledger {} was opened here (first seen at unix ms {now_ms}).\n\
         While this file exists, `paydvm run` refuses to start an empty ledger in its place\n\
         unless given --new-ledger. Remove it only together with the ledger.\n",
        ledger.display()
    );
    std::fs::write(marker, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ledger_is_fresh_only_where_none_existed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("paydvm.db");
        // A new node directory: nothing shows a ledger.
        refuse_fresh_over_old(&ledger, false).unwrap();

        std::fs::write(&ledger, b"").unwrap();
        mark(&ledger, 1).unwrap();
        refuse_fresh_over_old(&ledger, false).unwrap();
        std::fs::remove_file(&ledger).unwrap();
        let err = refuse_fresh_over_old(&ledger, false).unwrap_err();
        assert!(err.to_string().contains("paydvm.db.created"), "{err}");
        assert!(err.to_string().contains("--new-ledger"), "{err}");
        refuse_fresh_over_old(&ledger, true).unwrap();

        // A WAL left behind is evidence too.
        std::fs::remove_file(path_for(&ledger)).unwrap();
        std::fs::write(dir.path().join("paydvm.db-wal"), b"").unwrap();
        assert!(refuse_fresh_over_old(&ledger, false).is_err());
    }
}
