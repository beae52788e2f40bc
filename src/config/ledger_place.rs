//! Where a ledger lives: an SQLite file or a PostgreSQL database (`postgres://…`). One parser
//! for `[node] ledger` and every command that takes a ledger (`paydvm ledger verify|audit|
//! status|export|copy`).

use std::fmt;
use std::path::{Path, PathBuf};

use paydvm_ledger_pg::{LocationError, PgLocation};

/// A ledger's place.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerPlace {
    /// An SQLite file (created on the node's first run).
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgUrl),
}

/// A `postgres://` URL as written (it may hold a password), with a printable form without it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    text: String,
    shown: String,
}

impl PgUrl {
    /// Checks the URL's syntax only: the password file or variable it names is read when the
    /// ledger is opened ([`PgUrl::location`]).
    pub fn parse(text: &str) -> Result<PgUrl, LocationError> {
        Ok(PgUrl {
            text: text.to_owned(),
            shown: paydvm_ledger_pg::shown_url(text)?,
        })
    }

    /// The URL with its secrets: only for the driver, never for a log or a message.
    pub fn secret_text(&self) -> &str {
        &self.text
    }

    /// The driver's configuration (reads `password_file` / `password_env`).
    pub fn location(&self) -> Result<PgLocation, LocationError> {
        PgLocation::parse(&self.text)
    }
}

/// The URL without its password.
impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl LedgerPlace {
    /// Whether `text` names a database rather than a file.
    pub fn is_url(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// A command-line argument: a `postgres://` URL, else a file path as given.
    pub fn from_arg(text: &str) -> Result<LedgerPlace, LocationError> {
        if Self::is_url(text) {
            Ok(LedgerPlace::Postgres(PgUrl::parse(text)?))
        } else {
            Ok(LedgerPlace::File(PathBuf::from(text)))
        }
    }

    /// The ledger file, when it is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            LedgerPlace::File(path) => Some(path),
            LedgerPlace::Postgres(_) => None,
        }
    }
}

/// The file's path, or the URL without its password.
impl fmt::Display for LedgerPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerPlace::File(path) => write!(f, "{}", path.display()),
            LedgerPlace::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for LedgerPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerPlace::File(path) => write!(f, "File({})", path.display()),
            LedgerPlace::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

/// A file ledger equals its path (config tests compare with paths).
impl PartialEq<PathBuf> for LedgerPlace {
    fn eq(&self, other: &PathBuf) -> bool {
        self.file() == Some(other.as_path())
    }
}

impl PartialEq<&Path> for LedgerPlace {
    fn eq(&self, other: &&Path) -> bool {
        self.file() == Some(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_never_shows_its_password() {
        let place = LedgerPlace::from_arg("postgres://paydvm:s3cret@127.0.0.1:5432/l").unwrap();
        let shown = format!("{place} {place:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("127.0.0.1:5432/l"), "{shown}");
        assert_eq!(place.file(), None);
        let file = LedgerPlace::from_arg("paydvm.db").unwrap();
        assert_eq!(file, PathBuf::from("paydvm.db"));
        assert!(LedgerPlace::from_arg("postgres://[").is_err());
    }
}
