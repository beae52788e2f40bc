//! The node's Nostr key: parsed from an nsec or 64-hex secret, kept in a 0600 key file or an
//! environment variable. Errors never contain the secret.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nostr_sdk::{FromBech32, Keys, SecretKey, ToBech32};

use super::Secret;

/// Permission bits a key file may not have: anything for group or others.
const GROUP_OR_OTHER: u32 = 0o077;
/// A key file holds one line; anything much larger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 1024;
/// Secret files other than keys (an NWC URI with relays) may be longer, but not much.
const MAX_SECRET_FILE_BYTES: u64 = 8192;

/// A key could not be loaded or created. Messages name the file or variable, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read key file: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "{path}: key file is readable or writable by group or others (mode {mode:04o}); \
         fix it with `chmod 600 {path}`"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("{path}: cannot create key file: {error}")]
    Create { path: String, error: std::io::Error },
    #[error("{path}: already exists; refusing to replace a key file")]
    Exists { path: String },
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    /// `origin` is a file path or "environment variable NAME".
    #[error("{origin}: not a secret key; expected an nsec1… (bech32) or 64 hex characters")]
    Malformed { origin: String },
    #[error("{origin}: is empty")]
    Empty { origin: String },
}

/// Parses a secret key written as `nsec1…` or 64 hex characters (surrounding whitespace ignored).
pub fn parse_secret_key(text: &Secret<String>) -> Option<Secret<Keys>> {
    let text = text.expose().trim();
    let secret = if text.starts_with("nsec1") {
        SecretKey::from_bech32(text).ok()?
    } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        SecretKey::from_hex(text).ok()?
    } else {
        return None;
    };
    Some(Secret::new(Keys::new(secret)))
}

/// Reads a small secret file (a key, an NWC URI, an API key); refuses one that group or others
/// may access.
pub fn read_secret_file(path: &Path) -> Result<Secret<String>, KeyError> {
    read_private_file(path, MAX_SECRET_FILE_BYTES)?.ok_or_else(|| KeyError::Malformed {
        origin: path.display().to_string(),
    })
}

/// Loads the key file at `path`; refuses one that group or others may access.
pub fn load_key_file(path: &Path) -> Result<Secret<Keys>, KeyError> {
    read_private_file(path, MAX_KEY_FILE_BYTES)?
        .as_ref()
        .and_then(parse_secret_key)
        .ok_or_else(|| KeyError::Malformed {
            origin: path.display().to_string(),
        })
}

/// The text of a file only its owner may read; `None` when it is longer than `max` bytes or not
/// UTF-8.
fn read_private_file(path: &Path, max: u64) -> Result<Option<Secret<String>>, KeyError> {
    let shown = path.display().to_string();
    let read_err = |error| KeyError::Read {
        path: shown.clone(),
        error,
    };
    let file = File::open(path).map_err(read_err)?;
    // Check the opened file, not the path, so a swap between check and read cannot slip by.
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    if mode & GROUP_OR_OTHER != 0 {
        return Err(KeyError::TooOpen {
            path: shown.clone(),
            mode: mode & 0o7777,
        });
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok((bytes.len() as u64 <= max)
        .then(|| String::from_utf8(bytes).ok())
        .flatten()
        .map(Secret::new))
}

/// Creates a new key file at `path` holding a fresh key as `nsec1…\n`, mode 0600 from the
/// first byte. Never replaces an existing file.
pub fn create_key_file(path: &Path) -> Result<Secret<Keys>, KeyError> {
    let shown = path.display().to_string();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| match error.kind() {
            ErrorKind::AlreadyExists => KeyError::Exists {
                path: shown.clone(),
            },
            _ => KeyError::Create {
                path: shown.clone(),
                error,
            },
        })?;
    let keys = Keys::generate();
    let written = keys
        .secret_key()
        .to_bech32()
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map(|nsec| Secret::new(format!("{nsec}\n")))
        .and_then(|line| file.write_all(line.expose().as_bytes()))
        .and_then(|()| file.sync_all());
    if let Err(error) = written {
        // A half-written key file would be refused or, worse, loaded as another key later.
        let _ = std::fs::remove_file(path);
        return Err(KeyError::Create { path: shown, error });
    }
    Ok(Secret::new(keys))
}

/// Loads the key file at `path`, or creates it (mode 0600) if there is none.
pub fn load_or_create_key(path: &Path) -> Result<Secret<Keys>, KeyError> {
    match load_key_file(path) {
        Err(KeyError::Read { error, .. }) if error.kind() == ErrorKind::NotFound => {
            match create_key_file(path) {
                // Another process created it first: use theirs.
                Err(KeyError::Exists { .. }) => load_key_file(path),
                created => created,
            }
        }
        loaded => loaded,
    }
}

/// Parses the key held in environment variable `name`, given its value (`None` if unset).
pub fn key_from_env_value(name: &str, value: Option<OsString>) -> Result<Secret<Keys>, KeyError> {
    let value = value.ok_or_else(|| KeyError::EnvMissing { name: name.into() })?;
    let text = value
        .into_string()
        .map(Secret::new)
        .map_err(|_| KeyError::EnvNotUnicode { name: name.into() })?;
    parse_secret_key(&text).ok_or_else(|| KeyError::Malformed {
        origin: format!("environment variable {name}"),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn write_key(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn created_key_file_is_0600_and_holds_an_nsec_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let keys = load_or_create_key(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("nsec1") && text.ends_with('\n'),
            "bad key file shape"
        );
        assert_eq!(text.lines().count(), 1);
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(again.expose().public_key(), keys.expose().public_key());
    }

    #[test]
    fn create_key_file_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        write_key(&path, "keep me\n", 0o600);
        assert!(matches!(
            create_key_file(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me\n");
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let nsec = Keys::generate().secret_key().to_bech32().unwrap();
        for bad in [0o644, 0o640, 0o604, 0o620] {
            write_key(&path, &nsec, bad);
            let err = load_key_file(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeyError::TooOpen { .. }), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
            assert!(!msg.contains(&nsec));
        }
        // load_or_create must not paper over it by making a new key either.
        assert!(matches!(
            load_or_create_key(&path),
            Err(KeyError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key_file(&path).is_ok());
    }

    #[test]
    fn nsec_and_hex_keys_are_both_accepted() {
        let keys = Keys::generate();
        let nsec = keys.secret_key().to_bech32().unwrap();
        let hex = keys.secret_key().to_secret_hex();
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("nsec", format!("{nsec}\n")),
            ("hex", format!("{hex}\n")),
            ("upper-hex", hex.to_uppercase()),
            ("spaced", format!("  {nsec}  \n\n")),
        ] {
            let path = dir.path().join(name);
            write_key(&path, &text, 0o600);
            let loaded = load_key_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(loaded.expose().public_key(), keys.public_key(), "{name}");
        }
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let npub = Keys::generate().public_key().to_bech32().unwrap();
        let hex = Keys::generate().secret_key().to_secret_hex();
        for (i, text) in [
            String::new(),
            npub,                 // a public key is not a secret key
            hex[..63].to_owned(), // one digit short
            format!("{hex}00"),
            "nsec1notbech32".to_owned(),
            "z".repeat(2000),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("k{i}"));
            write_key(&path, &text, 0o600);
            let err = load_key_file(&path).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{i}: {err}");
            if !text.is_empty() {
                assert!(!err.to_string().contains(&text[..10]), "{i}: {err}");
            }
        }
    }

    #[test]
    fn env_key_is_parsed_and_errors_name_the_variable() {
        let keys = Keys::generate();
        let nsec = keys.secret_key().to_bech32().unwrap();
        let loaded = key_from_env_value("NODE_NSEC", Some(nsec.clone().into())).unwrap();
        assert_eq!(loaded.expose().public_key(), keys.public_key());

        let missing = key_from_env_value("NODE_NSEC", None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable NODE_NSEC is not set"
        );
        let bad = key_from_env_value("NODE_NSEC", Some("oops".into())).unwrap_err();
        assert!(bad
            .to_string()
            .starts_with("environment variable NODE_NSEC: not a secret key"));
    }
}
