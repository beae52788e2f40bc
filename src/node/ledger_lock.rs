//! One node per ledger: `paydvm run` holds an exclusive lock on `<ledger>.lock` for as long as it
//! runs, and operator commands on a stopped node take the same lock before they write. A second
//! writer would interleave sequence numbers with the first (`UNIQUE constraint failed`) and
//! decide on a state the other one is changing. The OS releases the lock when the process dies,
//! so a kill -9 never leaves it stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the ledger {ledger} is in use by another paydvm process (it holds {lock}); stop it \
         first, or talk to it (operator commands reach a running node by itself)"
    )]
    Held { ledger: PathBuf, lock: PathBuf },
    #[error("cannot lock {lock}: {source}")]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while it lives.
#[derive(Debug)]
pub struct LedgerLock {
    _file: File,
    path: PathBuf,
}

impl LedgerLock {
    /// The lock file of `ledger`: `<ledger>.lock`.
    pub fn path_for(ledger: &Path) -> PathBuf {
        let mut s = ledger.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the lock without waiting.
    pub fn acquire(ledger: &Path) -> Result<LedgerLock, LockError> {
        let path = Self::path_for(ledger);
        let io = |source| LockError::Io {
            lock: path.clone(),
            source,
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?
        };
        match file.try_lock() {
            Ok(()) => Ok(LedgerLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                ledger: ledger.to_path_buf(),
                lock: path,
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("paydvm.db");
        let first = LedgerLock::acquire(&ledger).unwrap();
        let err = LedgerLock::acquire(&ledger).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert!(err.to_string().contains("in use by another paydvm"));
        drop(first);
        LedgerLock::acquire(&ledger).unwrap();
    }
}
