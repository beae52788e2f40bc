//! Opening an existing ledger file: the inspecting commands never create one.

use std::path::Path;

use anyhow::{bail, Context};
use paydvm_ledger::store::Store;

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

/// Open and replay an existing ledger file, read-only.
pub fn open_existing(path: &Path) -> anyhow::Result<Store> {
    ensure_exists(path)?;
    Store::open_read_only(path)
        .with_context(|| format!("cannot open ledger file {}", path.display()))
}
