//! `[http]`: the node's HTTP endpoint for metrics, health checks and the status page. Off unless
//! the section is present. A non-loopback `listen` address needs a bearer token (`token_file`,
//! a 0600 file), because the page shows customers' pubkeys and the node's money.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::check::Check;
use super::keys::read_secret_file;
use super::raw::RawHttp;
use super::{ConfigError, Secret};

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `[http]` as configured (the token not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    pub listen: SocketAddr,
    /// Resolved against the config file's directory.
    pub token_file: Option<PathBuf>,
}

/// `[http]` ready for the node: the token loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Required in every request when set (`Authorization: Bearer …` or `?token=`).
    pub token: Option<Secret<String>>,
}

impl Http {
    pub(crate) fn from_raw(raw: RawHttp, check: Check<'_>) -> Result<Self, ConfigError> {
        let text = check.required("http.listen", raw.listen)?;
        let listen: SocketAddr = text.trim().parse().map_err(|_| {
            check.invalid(
                "http.listen",
                format!("{text:?} is not an address with a port, e.g. \"127.0.0.1:9737\""),
            )
        })?;
        let token_file = raw
            .token_file
            .map(|f| check.path("http.token_file", f))
            .transpose()?;
        if !listen.ip().is_loopback() && token_file.is_none() {
            return Err(check.invalid(
                "http.token_file",
                format!(
                    "is required when http.listen is not a loopback address ({listen}): the \
                     status page shows the node's jobs and money"
                ),
            ));
        }
        Ok(Http { listen, token_file })
    }

    /// Reads the token file (it must be 0600 and hold at least [`MIN_TOKEN_CHARS`] characters).
    pub(crate) fn load(&self, origin: &str) -> Result<HttpConfig, ConfigError> {
        let token = match &self.token_file {
            None => None,
            Some(path) => Some(read_token(path, origin)?),
        };
        Ok(HttpConfig {
            listen: self.listen,
            token,
        })
    }
}

fn read_token(path: &std::path::Path, origin: &str) -> Result<Secret<String>, ConfigError> {
    let text = read_secret_file(path).map_err(|error| ConfigError::Key {
        file: origin.to_owned(),
        field: "http.token_file",
        error,
    })?;
    let token = text.expose().trim();
    if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            file: origin.to_owned(),
            field: "http.token_file".to_owned(),
            reason: format!(
                "{} must hold one token of at least {MIN_TOKEN_CHARS} characters without \
                 spaces (e.g. `openssl rand -hex 32`)",
                path.display()
            ),
        });
    }
    Ok(Secret::new(token.to_owned()))
}
