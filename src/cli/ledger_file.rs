//! Opening an existing ledger, a file or a PostgreSQL database: the inspecting commands never
//! create one.

use std::path::Path;

use anyhow::{bail, Context};
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::StoreOptions;

use crate::config::LedgerPlace;
use crate::ledger_handle::LedgerHandle;

/// Fail with a clear message unless `path` is an existing regular file.
pub fn ensure_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => bail!("ledger file {} is not a regular file", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("ledger file {} does not exist", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read ledger file {}", path.display())),
    }
}

/// Open and replay an existing ledger, read-only, with its whole history in memory (for
/// commands that read the state: `status`, `refund list`, `reconcile`).
pub fn open_existing(place: &LedgerPlace) -> anyhow::Result<LedgerHandle> {
    open_with(
        place,
        &StoreOptions::everything(Durability::Normal).read_only(),
    )
}

/// Open an existing ledger read-only for questions the store answers from its tables (`audit`,
/// `export`, `verify`): a database loads only its open work. A file opens as for
/// [`open_existing`].
pub fn open_to_query(place: &LedgerPlace) -> anyhow::Result<LedgerHandle> {
    match place {
        LedgerPlace::File(_) => open_existing(place),
        LedgerPlace::Postgres(_) => open_with(
            place,
            &StoreOptions::bounded(Durability::Normal).read_only(),
        ),
    }
}

fn open_with(place: &LedgerPlace, options: &StoreOptions) -> anyhow::Result<LedgerHandle> {
    match place {
        LedgerPlace::File(path) => {
            ensure_exists(path)?;
            Ok(Store::open_with(path, options)
                .with_context(|| format!("cannot open ledger file {}", path.display()))?
                .into())
        }
        LedgerPlace::Postgres(url) => {
            LedgerHandle::open(place, options).with_context(|| format!("cannot open {url}"))
        }
    }
}
