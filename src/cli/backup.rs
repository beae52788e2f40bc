//! `paydvm ledger backup <ledger> <copy>`: a consistent copy of a ledger into a new SQLite file,
//! safe while the node runs, then verified. Never overwrites: the copy must not exist yet.
//!
//! A ledger file: SQLite `VACUUM INTO` on a read-only connection reads one snapshot, the WAL
//! included. A PostgreSQL ledger: its events up to the head at the start, appended in order to
//! the new file (`copy_log`), which recomputes the chain and must end at the same head hash; the
//! server's own tools remain the way to back up the database itself.

use std::path::Path;

use anyhow::{bail, Context};
use paydvm_ledger::copy::copy_log;
use paydvm_ledger::store::{verify_file, Store};

use super::{copy, ledger_file, output, EXIT_OK, EXIT_VERIFY_FAILED};
use crate::config::LedgerPlace;
use crate::ledger_handle::LedgerHandle;

pub fn run(ledger: &str, dest: &Path) -> anyhow::Result<u8> {
    let place = LedgerPlace::from_arg(ledger)?;
    if let LedgerPlace::File(path) = &place {
        ledger_file::ensure_exists(path)?;
    }
    if dest.exists() {
        bail!("{} already exists; give a new file name", dest.display());
    }
    // Only open work in memory: a backup of a large ledger needs no replay of its history.
    // A place is named by its Display: a URL without its password.
    let source = LedgerHandle::open(&place, &copy::source_options())
        .with_context(|| format!("cannot open {place}"))?;
    let written = match &source {
        LedgerHandle::Sqlite(store) => store.backup_to(dest).map_err(anyhow::Error::from),
        LedgerHandle::Postgres(_) => copy_into_new_file(&source, dest),
    };
    drop(source);
    written.with_context(|| format!("writing the copy {}", dest.display()))?;
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

/// The source's events up to its head (as it was when opened) into the new file `dest`; a copy
/// that fails is removed.
fn copy_into_new_file(source: &LedgerHandle, dest: &Path) -> anyhow::Result<()> {
    let copied = Store::open_with(dest, &copy::dest_options())
        .map_err(anyhow::Error::from)
        .and_then(|mut copy| {
            copy_log(source, &mut copy)?;
            copy.close()?;
            Ok(())
        });
    if copied.is_err() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dest.display()));
        }
    }
    copied
}
