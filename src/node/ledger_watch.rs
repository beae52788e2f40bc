//! Is the ledger file the node opened still the one at its path, and can it still be written?
//! SQLite keeps writing through its open file descriptors when the file is deleted (the data
//! then vanishes when the process exits, and the next start would begin an empty ledger and run
//! recent work again), and it maps the `-shm` file into memory, where a file that can no longer
//! be written kills the process with SIGBUS. So the core asks [`LedgerWatch::check`] before
//! each batch of commands (at least every second) and before each write, the ledger's checkpoint
//! thread before each checkpoint, and stops taking paid work while the answer is a [`LedgerFault`]; see
//! `node::core::ledger_fault` for what it does about each one.
//!
//! Writability is asked of the kernel with `access(W_OK)`, which fails for an immutable file
//! (`chattr +i`) and on a read-only filesystem, for root too. The files are never opened here:
//! closing any descriptor of a file drops every POSIX lock the process holds on it, including
//! SQLite's own locks on the ledger and its `-shm` (other readers would then see a stale or
//! inconsistent ledger). A full disk is only seen when a write fails.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What is wrong with the ledger file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerFault {
    #[error("the ledger file {0} was deleted while the node had it open")]
    Missing(PathBuf),
    #[error("{0} now names another file than the ledger the node opened")]
    Replaced(PathBuf),
    #[error("{file} cannot be written: {reason}")]
    NotWritable { file: PathBuf, reason: String },
    #[error("writing the ledger failed: {0}")]
    WriteFailed(String),
}

impl LedgerFault {
    /// True when the node's open file is no longer at its path: only a restore brings it back.
    pub fn file_gone(&self) -> bool {
        matches!(self, LedgerFault::Missing(_) | LedgerFault::Replaced(_))
    }
}

/// The ledger file's identity (device, inode) when it was opened, and its path.
#[derive(Debug, Clone)]
pub struct LedgerWatch {
    path: PathBuf,
    identity: (u64, u64),
}

impl LedgerWatch {
    /// Remembers which file `path` names now: call it right after opening the ledger.
    pub fn new(path: &Path) -> std::io::Result<LedgerWatch> {
        let meta = std::fs::metadata(path)?;
        Ok(LedgerWatch {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first fault found: the file gone or replaced, then any of the ledger, `-wal` and
    /// `-shm` files that cannot be written.
    pub fn check(&self) -> Result<(), LedgerFault> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {}
            Ok(_) => return Err(LedgerFault::Replaced(self.path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LedgerFault::Missing(self.path.clone()))
            }
            Err(e) => {
                return Err(LedgerFault::NotWritable {
                    file: self.path.clone(),
                    reason: e.to_string(),
                })
            }
        }
        check_writable(&self.path)
    }
}

/// The ledger's companion files SQLite keeps next to it in WAL mode.
pub fn companions(ledger: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = ledger.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Each of the ledger, `-wal` and `-shm` files that exists may be written (asked without
/// opening it).
pub fn check_writable(ledger: &Path) -> Result<(), LedgerFault> {
    let [wal, shm] = companions(ledger);
    for file in [ledger.to_path_buf(), wal, shm] {
        match may_write(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LedgerFault::NotWritable {
                    file,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// `path` as the C string a libc call takes (a path with a NUL in it is refused).
pub(crate) fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `access(path, W_OK)`.
fn may_write(path: &Path) -> std::io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2) only
    // reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_ledger_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("paydvm.db");
        std::fs::write(&ledger, b"").unwrap();
        // Held open, as SQLite holds the ledger: its inode number cannot be reused meanwhile.
        let _open = std::fs::File::open(&ledger).unwrap();
        let watch = LedgerWatch::new(&ledger).unwrap();
        assert_eq!(watch.check(), Ok(()));

        std::fs::remove_file(&ledger).unwrap();
        assert_eq!(watch.check(), Err(LedgerFault::Missing(ledger.clone())));
        assert!(watch.check().unwrap_err().file_gone());

        // Same path, another file (a restored backup, a new empty ledger).
        std::fs::write(&ledger, b"other").unwrap();
        assert_eq!(watch.check(), Err(LedgerFault::Replaced(ledger.clone())));
    }

    #[test]
    fn companions_sit_next_to_the_ledger() {
        let [wal, shm] = companions(Path::new("/var/lib/paydvm/paydvm.db"));
        assert_eq!(wal, Path::new("/var/lib/paydvm/paydvm.db-wal"));
        assert_eq!(shm, Path::new("/var/lib/paydvm/paydvm.db-shm"));
    }
}
