//! `paydvm ledger backup <file> <copy>`: a consistent copy of a ledger, safe while the node
//! runs (SQLite `VACUUM INTO` on a read-only connection reads one snapshot, the WAL included),
//! then verified. Never overwrites: the copy must not exist yet.

use std::path::Path;

use anyhow::{bail, Context};
use paydvm_ledger::store::{verify_file, Durability, Store};
use paydvm_ledger::StoreOptions;

use super::{ledger_file, output, EXIT_OK, EXIT_VERIFY_FAILED};

pub fn run(path: &Path, dest: &Path) -> anyhow::Result<u8> {
    ledger_file::ensure_exists(path)?;
    if dest.exists() {
        bail!("{} already exists; give a new file name", dest.display());
    }
    // Only open work in memory: a backup of a large ledger needs no replay of its history.
    let options = StoreOptions::bounded(Durability::Normal).read_only();
    let store = Store::open_with(path, &options)
        .with_context(|| format!("cannot open ledger file {}", path.display()))?;
    store
        .backup_to(dest)
        .with_context(|| format!("writing the copy {}", dest.display()))?;
    drop(store);
    match verify_file(dest) {
        Ok(report) => {
            output::print(&format!(
                "backup {}: {} events, head {}\n",
                dest.display(),
                report.events,
                report.head_hash
            ))?;
            Ok(EXIT_OK)
        }
        Err(failure) => {
            eprintln!("the copy {} does not verify: {failure}", dest.display());
            Ok(EXIT_VERIFY_FAILED)
        }
    }
}
