//! Where the ledger lives: a `postgres://` URL, with the password kept out of it if wanted.
//!
//! The URL may carry the password (`postgres://user:secret@host/db`), but an operator can keep it
//! out of config files: `?password_file=/path` reads it from a file that only its owner may read
//! (mode 0600 or stricter), `?password_env=VAR` from an environment variable. `?deadline_ms=N`
//! bounds each call on an open session (`client::STATEMENT_DEADLINE` otherwise). Those
//! parameters are ours and are removed before the URL reaches the driver. The password is never
//! part of [`PgLocation`]'s `Display`/`Debug`, so it cannot reach a log through it.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::str::FromStr;

/// Why a ledger URL was not usable.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("not a postgres:// or postgresql:// URL")]
    NotPostgres,
    #[error("bad ledger URL: {0}")]
    Url(String),
    #[error("the password is given twice (in the URL and by {0})")]
    PasswordTwice(&'static str),
    #[error("password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("password file {path} has mode {mode:o}: others may read it (chmod 600)")]
    PasswordFileOpen { path: PathBuf, mode: u32 },
    #[error("password environment variable {0} is not set")]
    PasswordEnv(String),
    #[error("deadline_ms={0}: not a whole number of milliseconds from 1 to 3600000")]
    Deadline(String),
}

/// A parsed ledger location: the driver's configuration and a printable form without secrets.
#[derive(Clone)]
pub struct PgLocation {
    config: tokio_postgres::Config,
    shown: String,
    deadline: Option<std::time::Duration>,
}

/// `text` as a `postgres://` or `postgresql://` URL.
fn postgres_url(text: &str) -> Result<url::Url, LocationError> {
    let url = url::Url::parse(text).map_err(|e| LocationError::Url(e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(LocationError::NotPostgres);
    }
    Ok(url)
}

/// A ledger URL checked for syntax only and shown without its password; nothing is read (the
/// password file or variable is read by [`PgLocation::parse`]).
pub fn shown_url(text: &str) -> Result<String, LocationError> {
    let mut url = postgres_url(text)?;
    let _ = url.set_password(None);
    Ok(url.to_string())
}

impl PgLocation {
    pub fn parse(text: &str) -> Result<PgLocation, LocationError> {
        let mut url = postgres_url(text)?;
        let (mut file, mut env, mut deadline) = (None, None, None);
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| match k.as_ref() {
                "password_file" => {
                    file = Some(PathBuf::from(v.as_ref()));
                    None
                }
                "password_env" => {
                    env = Some(v.into_owned());
                    None
                }
                "deadline_ms" => {
                    deadline = Some(v.into_owned());
                    None
                }
                _ => Some((k.into_owned(), v.into_owned())),
            })
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(&kept);
        }
        let has_password = url.password().is_some();
        let mut config = tokio_postgres::Config::from_str(url.as_str())
            .map_err(|e| LocationError::Url(e.to_string()))?;
        let outside = match (file, env) {
            (Some(path), _) => Some(("password_file", read_password_file(path)?)),
            (None, Some(var)) => Some((
                "password_env",
                std::env::var(&var).map_err(|_| LocationError::PasswordEnv(var))?,
            )),
            (None, None) => None,
        };
        if let Some((how, password)) = outside {
            if has_password {
                return Err(LocationError::PasswordTwice(how));
            }
            config.password(password);
        }
        let _ = url.set_password(None);
        Ok(PgLocation {
            config,
            shown: url.to_string(),
            deadline: deadline.map(|d| parse_deadline(&d)).transpose()?,
        })
    }

    /// How long one call on an open session may take, when the URL says (`?deadline_ms=`).
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.deadline
    }

    /// How long one call on an open session may take: the URL's `?deadline_ms=`, else
    /// [`STATEMENT_DEADLINE`](crate::client::STATEMENT_DEADLINE).
    pub fn statement_deadline(&self) -> std::time::Duration {
        self.deadline.unwrap_or(crate::client::STATEMENT_DEADLINE)
    }

    /// The driver's configuration (with the password).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// A deadline in milliseconds, at most an hour (a bound that never fires is no bound).
fn parse_deadline(text: &str) -> Result<std::time::Duration, LocationError> {
    match text.parse::<u64>() {
        Ok(ms @ 1..=3_600_000) => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(LocationError::Deadline(text.to_string())),
    }
}

fn read_password_file(path: PathBuf) -> Result<String, LocationError> {
    let io = |source| LocationError::PasswordFile {
        path: path.clone(),
        source,
    };
    let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LocationError::PasswordFileOpen { path, mode });
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// The URL without its password.
impl fmt::Display for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgLocation({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let l = PgLocation::parse("postgres://paydvm:s3cret@127.0.0.1:5432/ledger").unwrap();
        assert_eq!(l.config().get_password(), Some(&b"s3cret"[..]));
        assert!(!format!("{l} {l:?}").contains("s3cret"));
    }

    #[test]
    fn a_password_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("paydvm-pgloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let url = format!(
            "postgres://paydvm@127.0.0.1/l?password_file={}",
            file.display()
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PgLocation::parse(&url),
            Err(LocationError::PasswordFileOpen { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = PgLocation::parse(&url).unwrap();
        assert_eq!(l.config().get_password(), Some(&b"from-file"[..]));
        assert!(!l.to_string().contains("from-file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_password_from_the_environment() {
        std::env::set_var("PAYDVM_TEST_PG_PASSWORD", "from-env");
        let l =
            PgLocation::parse("postgresql://u@localhost/db?password_env=PAYDVM_TEST_PG_PASSWORD")
                .unwrap();
        assert_eq!(l.config().get_password(), Some(&b"from-env"[..]));
        assert!(matches!(
            PgLocation::parse("postgres://u:x@h/db?password_env=PAYDVM_TEST_PG_PASSWORD"),
            Err(LocationError::PasswordTwice(_))
        ));
        assert!(matches!(
            PgLocation::parse("sqlite:///x"),
            Err(LocationError::NotPostgres)
        ));
    }

    #[test]
    fn a_deadline_in_milliseconds_and_bounded() {
        let l = PgLocation::parse("postgres://u@h/db?deadline_ms=1500&sslmode=disable").unwrap();
        assert_eq!(l.deadline(), Some(std::time::Duration::from_millis(1500)));
        assert!(!l.to_string().contains("deadline"));
        assert_eq!(
            PgLocation::parse("postgres://u@h/db").unwrap().deadline(),
            None
        );
        for bad in ["0", "-5", "1.5", "3600001", "soon"] {
            let url = format!("postgres://u@h/db?deadline_ms={bad}");
            assert!(
                matches!(PgLocation::parse(&url), Err(LocationError::Deadline(_))),
                "{bad}"
            );
        }
    }
}
