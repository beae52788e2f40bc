//! Validation helpers: turn a raw value into a typed one or a `ConfigError::Invalid` naming
//! the file, the field path and the reason.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// Validation context for one config file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check<'a> {
    pub file: &'a str,
    /// Relative paths in the file are relative to this directory.
    pub base_dir: &'a Path,
}

impl Check<'_> {
    pub fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn required<T>(&self, field: &str, value: Option<T>) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.invalid(field, "is required"))
    }

    /// An integer in `min..=max`; every caller has `min >= 0`.
    pub fn int_in(&self, field: &str, value: i64, min: i64, max: i64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&value) {
            u64::try_from(value).map_err(|_| self.invalid(field, "must not be negative"))
        } else {
            Err(self.invalid(
                field,
                format!("must be between {min} and {max}, got {value}"),
            ))
        }
    }

    /// A string with something other than whitespace in it.
    pub fn non_empty(&self, field: &str, value: String) -> Result<String, ConfigError> {
        if value.trim().is_empty() {
            Err(self.invalid(field, "must not be empty"))
        } else {
            Ok(value)
        }
    }

    /// A non-empty path; relative paths are taken from the config file's directory.
    pub fn path(&self, field: &str, value: String) -> Result<PathBuf, ConfigError> {
        let value = self.non_empty(field, value)?;
        if value.starts_with('~') {
            return Err(self.invalid(
                field,
                "`~` is not expanded; write an absolute path or one relative to the config file",
            ));
        }
        Ok(self.base_dir.join(value))
    }

    /// A POSIX-style environment variable name: letters, digits and `_`, not starting with a digit.
    pub fn env_name(&self, field: &str, name: &str) -> Result<(), ConfigError> {
        let mut bytes = name.bytes();
        let valid = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if valid {
            Ok(())
        } else {
            Err(self.invalid(
                field,
                format!(
                    "{name:?} is not an environment variable name (letters, digits, `_`; \
                     not starting with a digit)"
                ),
            ))
        }
    }
}
