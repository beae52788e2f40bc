//! Files that hold ecash (the wallet's proofs are bearer money; a pending request token is a
//! bearer token) are readable and writable by their owner only: mode 0600, whatever the
//! process's umask. SQLite gives its `-wal` and `-shm` files the main file's mode when it
//! creates them, so the main file is created private before SQLite opens it; files made by an
//! older version under a looser umask are tightened, `-wal` and `-shm` included.

use std::io;
use std::path::{Path, PathBuf};

/// Creates `path` empty with mode 0600 if it does not exist (an empty file is an empty SQLite
/// database), and sets 0600 on it and on its `-wal` and `-shm` files where they exist.
pub fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::fs::{self, OpenOptions, Permissions};
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for file in [
            path.to_path_buf(),
            sibling(path, "-wal"),
            sibling(path, "-shm"),
        ] {
            match fs::set_permissions(&file, Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_private_and_an_old_loose_one_is_tightened_with_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.cashu-wallet");
        make_private(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        assert_eq!(std::fs::metadata(&new).unwrap().len(), 0);

        let old = dir.path().join("old.cashu-wallet");
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(sibling(&old, "-wal"), b"x").unwrap();
        for f in [old.clone(), sibling(&old, "-wal")] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_private(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&sibling(&old, "-wal")), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"x", "contents kept");
    }
}
