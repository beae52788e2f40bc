//! `ConfigError`: what went wrong, in which file, at which field.
//!
//! Large wrapped errors are boxed to keep `Result<_, ConfigError>` small.

use paydvm_policies::PolicyError;

use super::keys::KeyError;

/// The node config could not be read, parsed, validated, or its policy or key loaded.
///
/// Every variant names the config file; validation errors also name the field path
/// (`offer[1].executor.command`, 0-based indices) and the reason. Wrapped errors are part of
/// the message rather than a `source()` chain, so `{:#}` printing does not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config file: {error}")]
    Read { file: String, error: std::io::Error },
    /// TOML syntax, a wrong value type or an unknown field: where, and toml's message without
    /// its quote of the source line (that line may hold a secret: an `env` value, an `http`
    /// executor URL).
    #[error("{file}: {at}{message}")]
    Syntax {
        file: String,
        /// `line L, column C: `, or empty when toml gives no position.
        at: String,
        message: String,
    },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
    /// The policy file named by `node.policy` is missing or invalid.
    #[error("{file}: node.policy: {error}")]
    Policy {
        file: String,
        error: Box<PolicyError>,
    },
    /// The key named by `node.key_file` or `node.key_env` is missing, exposed or malformed.
    #[error("{file}: {field}: {error}")]
    Key {
        file: String,
        field: &'static str,
        error: KeyError,
    },
}

impl ConfigError {
    /// The field path the error is about, if it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Policy { .. } => Some("node.policy"),
            ConfigError::Key { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

impl ConfigError {
    /// A [`ConfigError::Syntax`] for `error` in `text`.
    pub(super) fn syntax(file: &str, text: &str, error: &toml::de::Error) -> ConfigError {
        let at = error
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                let key = line_key(text.lines().nth(line - 1).unwrap_or(""))
                    .map(|k| format!(" (`{k}`)"))
                    .unwrap_or_default();
                format!("line {line}, column {column}{key}: ")
            })
            .unwrap_or_default();
        ConfigError::Syntax {
            file: file.to_owned(),
            at,
            message: error.message().trim_end().to_owned(),
        }
    }
}

/// The key a `key = value` line sets, when it looks like a TOML key: it names the field without
/// repeating the value.
fn line_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let key_like = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    (!key.is_empty() && key.len() <= 64 && key.chars().all(key_like)).then_some(key)
}
