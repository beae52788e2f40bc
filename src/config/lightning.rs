//! `[lightning]`: which Lightning backend the node uses for invoices and refunds, and where its
//! secrets come from. Secrets (the NWC URI, LNbits keys) are never in the config file itself:
//! it names a 0600 file or an environment variable, read at load into a [`Secret`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nostr_sdk::Url;

use super::check::Check;
use super::keys::{read_secret_file, KeyError};
use super::node::web_url;
use super::raw::RawLightning;
use super::{ConfigError, Secret};

/// Default seconds the node waits for the backend to create an invoice before quoting without.
pub const DEFAULT_INVOICE_TIMEOUT_SECS: u64 = 15;
pub const MAX_INVOICE_TIMEOUT_SECS: i64 = 120;
/// Default routing-fee cap for outgoing payments (refunds), in msat.
pub const DEFAULT_MAX_FEE_MSAT: u64 = 10_000;

/// Where one secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (mode 0600), resolved against the config file's directory.
    File(PathBuf),
    /// The name of an environment variable.
    Env(String),
}

/// The backend, as configured (secrets not loaded yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// The built-in fake: real regtest invoices, paid only by `paydvm demo` / tests.
    Fake,
    Nwc {
        uri: SecretSource,
    },
    Lnbits {
        url: Url,
        invoice_key: SecretSource,
        /// Only needed to pay refunds.
        admin_key: Option<SecretSource>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lightning {
    pub backend: BackendChoice,
    pub invoice_timeout_secs: u64,
    pub max_fee_msat: u64,
}

/// The backend with its secrets loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSecrets {
    Fake,
    Nwc {
        uri: Secret<String>,
    },
    Lnbits {
        url: Url,
        invoice_key: Secret<String>,
        admin_key: Option<Secret<String>>,
    },
}

/// `[lightning]` ready for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightningConfig {
    pub backend: BackendSecrets,
    pub invoice_timeout_secs: u64,
    pub max_fee_msat: u64,
}

impl Lightning {
    pub(crate) fn from_raw(raw: RawLightning, check: Check<'_>) -> Result<Self, ConfigError> {
        let backend = check.required("lightning.backend", raw.backend)?;
        let source = |name: &'static str,
                      file: Option<String>,
                      env: Option<String>|
         -> Result<Option<SecretSource>, ConfigError> {
            match (file, env) {
                (Some(f), None) => Ok(Some(SecretSource::File(
                    check.path(&format!("lightning.{name}_file"), f)?,
                ))),
                (None, Some(v)) => {
                    check.env_name(&format!("lightning.{name}_env"), &v)?;
                    Ok(Some(SecretSource::Env(v)))
                }
                (Some(_), Some(_)) => Err(check.invalid(
                    &format!("lightning.{name}_file"),
                    format!("set either {name}_file or {name}_env, not both"),
                )),
                (None, None) => Ok(None),
            }
        };
        let unused = |name: &str, present: bool| {
            if present {
                Err(check.invalid(
                    &format!("lightning.{name}"),
                    format!("is not used by backend = {backend:?}"),
                ))
            } else {
                Ok(())
            }
        };
        let nwc = source("nwc_uri", raw.nwc_uri_file, raw.nwc_uri_env)?;
        let invoice_key = source(
            "lnbits_invoice_key",
            raw.lnbits_invoice_key_file,
            raw.lnbits_invoice_key_env,
        )?;
        let admin_key = source(
            "lnbits_admin_key",
            raw.lnbits_admin_key_file,
            raw.lnbits_admin_key_env,
        )?;
        let choice = match backend.as_str() {
            "fake" => {
                unused("nwc_uri_file", nwc.is_some())?;
                unused("lnbits_url", raw.lnbits_url.is_some())?;
                unused("lnbits_invoice_key_file", invoice_key.is_some())?;
                unused("lnbits_admin_key_file", admin_key.is_some())?;
                BackendChoice::Fake
            }
            "nwc" => {
                unused("lnbits_url", raw.lnbits_url.is_some())?;
                unused("lnbits_invoice_key_file", invoice_key.is_some())?;
                unused("lnbits_admin_key_file", admin_key.is_some())?;
                BackendChoice::Nwc {
                    uri: nwc.ok_or_else(|| {
                        check.invalid(
                            "lightning.nwc_uri_file",
                            "is required for backend = \"nwc\" (or nwc_uri_env)",
                        )
                    })?,
                }
            }
            "lnbits" => {
                unused("nwc_uri_file", nwc.is_some())?;
                let url = check.required("lightning.lnbits_url", raw.lnbits_url)?;
                BackendChoice::Lnbits {
                    url: web_url("lightning.lnbits_url", &url, check)?,
                    invoice_key: invoice_key.ok_or_else(|| {
                        check.invalid(
                            "lightning.lnbits_invoice_key_file",
                            "is required for backend = \"lnbits\" (or lnbits_invoice_key_env)",
                        )
                    })?,
                    admin_key,
                }
            }
            other => {
                return Err(check.invalid(
                    "lightning.backend",
                    format!("{other:?} is not a backend; use \"fake\", \"nwc\" or \"lnbits\""),
                ))
            }
        };
        let invoice_timeout_secs = raw
            .invoice_timeout_secs
            .map(|v| {
                check.int_in(
                    "lightning.invoice_timeout_secs",
                    v,
                    1,
                    MAX_INVOICE_TIMEOUT_SECS,
                )
            })
            .transpose()?
            .unwrap_or(DEFAULT_INVOICE_TIMEOUT_SECS);
        let max_fee_msat = raw
            .max_fee_msat
            .map(|v| check.int_in("lightning.max_fee_msat", v, 0, 100_000_000))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_FEE_MSAT);
        Ok(Lightning {
            backend: choice,
            invoice_timeout_secs,
            max_fee_msat,
        })
    }

    /// Reads the secrets this backend needs (files must be 0600).
    pub(crate) fn load(
        &self,
        origin: &str,
        env: &impl Fn(&str) -> Option<OsString>,
    ) -> Result<LightningConfig, ConfigError> {
        let read = |field: &'static str, source: &SecretSource| {
            load_secret(source, env).map_err(|error| ConfigError::Key {
                file: origin.to_owned(),
                field,
                error,
            })
        };
        let backend = match &self.backend {
            BackendChoice::Fake => BackendSecrets::Fake,
            BackendChoice::Nwc { uri } => BackendSecrets::Nwc {
                uri: read("lightning.nwc_uri", uri)?,
            },
            BackendChoice::Lnbits {
                url,
                invoice_key,
                admin_key,
            } => BackendSecrets::Lnbits {
                url: url.clone(),
                invoice_key: read("lightning.lnbits_invoice_key", invoice_key)?,
                admin_key: admin_key
                    .as_ref()
                    .map(|k| read("lightning.lnbits_admin_key", k))
                    .transpose()?,
            },
        };
        Ok(LightningConfig {
            backend,
            invoice_timeout_secs: self.invoice_timeout_secs,
            max_fee_msat: self.max_fee_msat,
        })
    }
}

fn load_secret(
    source: &SecretSource,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Secret<String>, KeyError> {
    let text = match source {
        SecretSource::File(path) => read_secret_file(Path::new(path))?,
        SecretSource::Env(name) => {
            let value = env(name).ok_or_else(|| KeyError::EnvMissing { name: name.clone() })?;
            Secret::new(
                value
                    .into_string()
                    .map_err(|_| KeyError::EnvNotUnicode { name: name.clone() })?,
            )
        }
    };
    let trimmed = text.expose().trim();
    if trimmed.is_empty() {
        let origin = match source {
            SecretSource::File(p) => p.display().to_string(),
            SecretSource::Env(n) => format!("environment variable {n}"),
        };
        return Err(KeyError::Empty { origin });
    }
    Ok(Secret::new(trimmed.to_owned()))
}
