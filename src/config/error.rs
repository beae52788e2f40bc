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
    /// TOML syntax, a wrong value type or an unknown field; the toml message has line and key.
    #[error("{file}: {error}")]
    Syntax {
        file: String,
        error: Box<toml::de::Error>,
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
