//! A consistent copy of the ledger, taken through the store's own connection: `VACUUM INTO`
//! reads one snapshot of the database (the WAL included) and writes it as a new, compact file.
//! The node uses it to put its ledger back when the file was deleted while open (the open
//! connection still reads it); operators can take online backups the same way.

use std::path::Path;

use super::{create_private, Store};
use crate::error::LedgerError;

impl Store {
    /// Writes a complete copy of the ledger to `dest`, which must not exist yet (or be empty).
    /// The copy is created with mode 0600, like the ledger. Staged groups are not in it: flush
    /// first.
    pub fn backup_to(&self, dest: &Path) -> Result<(), LedgerError> {
        if self.staged_groups() > 0 {
            return Err(LedgerError::Staged(self.staged_groups()));
        }
        let Some(name) = dest.to_str() else {
            return Err(LedgerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a UTF-8 path", dest.display()),
            )));
        };
        create_private(dest)?;
        self.conn.execute("VACUUM INTO ?1", [name])?;
        Ok(())
    }
}
