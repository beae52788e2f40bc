//! Free space on the ledger's filesystem, for `/readyz` and `/metrics`: a disk filling up is
//! otherwise noticed only when a ledger write fails, and then the node takes no paid work
//! (operations.md, "Ledger file faults"). A database ledger has no file here to watch.

use std::io;
use std::path::Path;

use crate::node::ledger_watch::{c_path, companions};

/// Below this much free space the check fails whatever the ledger's size.
pub const MIN_FREE_BYTES: u64 = 256 << 20;

/// What the ledger's filesystem has, and what the ledger takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write there (`f_bavail`).
    pub free: u64,
    /// The ledger file and its `-wal`.
    pub ledger: u64,
}

impl DiskSpace {
    /// What should stay free: a backup (`paydvm ledger backup` beside it) or the migration at an
    /// upgrade needs about the ledger's size again, and never less than [`MIN_FREE_BYTES`].
    pub fn wanted(&self) -> u64 {
        self.ledger.max(MIN_FREE_BYTES)
    }

    pub fn enough(&self) -> bool {
        self.free >= self.wanted()
    }
}

/// Measures the filesystem that holds `ledger_file`.
pub fn measure(ledger_file: &Path) -> io::Result<DiskSpace> {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let [wal, _shm] = companions(ledger_file);
    let ledger = size(ledger_file).saturating_add(size(&wal));
    let dir = match ledger_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok(DiskSpace {
        free: free_bytes(dir)?,
        ledger,
    })
}

// `u64::from`: the fields are 32-bit on 32-bit targets, 64-bit (a no-op) here.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = c_path(dir)?;
    // SAFETY: statvfs writes only into `stat`, which lives for the call; the path is a valid C
    // string for the call's duration.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_ledger_and_its_wal_and_the_free_space_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paydvm.db");
        std::fs::write(&file, vec![0u8; 3000]).unwrap();
        std::fs::write(dir.path().join("paydvm.db-wal"), vec![0u8; 500]).unwrap();
        let space = measure(&file).unwrap();
        assert_eq!(space.ledger, 3500);
        assert!(space.free > 0);
        assert!(measure(&dir.path().join("missing").join("x.db")).is_err());
    }

    #[test]
    fn wants_the_ledgers_size_free_and_never_less_than_the_floor() {
        let small = DiskSpace {
            free: MIN_FREE_BYTES,
            ledger: 10,
        };
        assert!(small.enough());
        assert!(!DiskSpace {
            free: MIN_FREE_BYTES - 1,
            ..small
        }
        .enough());
        let big = DiskSpace {
            free: 2 * MIN_FREE_BYTES,
            ledger: 3 * MIN_FREE_BYTES,
        };
        assert_eq!(big.wanted(), 3 * MIN_FREE_BYTES);
        assert!(!big.enough());
    }
}
