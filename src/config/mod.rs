//! Node configuration and keys: `paydvm.toml`, parsed and validated into typed settings, plus
//! the policy and the node key it names.
//!
//! [`ConfigFile::parse`] validates the TOML alone and touches no file; [`Config::load`] also
//! loads the policy (`paydvm_policies::Policy::load`), checks that every offered kind is priced
//! and every command executor exists, and loads the key, so a bad setup fails at start.
//! Field reference: `docs/configuration.md`.

mod cashu;
mod check;
mod error;
mod http;
mod keys;
mod ledger_place;
mod lightning;
mod node;
mod offers;
mod problems;
mod raw;
mod relays;
mod secret;
mod template;

#[cfg(test)]
mod validation_tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nostr_sdk::{Keys, PublicKey};
use paydvm_policies::Policy;

pub use cashu::{pending_path, wallet_path, Cashu, InputFees, PublicTokens};
pub use error::ConfigError;
pub use http::{Http, HttpConfig, MIN_TOKEN_CHARS};
pub use keys::{
    create_key_file, key_from_env_value, load_key_file, load_or_create_key, parse_secret_key,
    KeyError,
};
pub use ledger_place::{LedgerPlace, PgUrl};
pub use lightning::{
    BackendChoice, BackendSecrets, Lightning, LightningConfig, SecretSource,
    DEFAULT_INVOICE_TIMEOUT_SECS, DEFAULT_MAX_FEE_MSAT,
};
pub use node::{KeySource, Node, ProblemMode, LOCAL_BASE_NAME};
pub use offers::{
    Builtin, ExecuteOn, Executor, Offer, DEFAULT_LEASE_SECS, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT_SECS, MAX_LEASE_SECS, MAX_MAX_CONCURRENCY,
    MAX_MAX_OUTPUT_BYTES, MAX_OFFERS, MAX_TIMEOUT_SECS,
};
pub use problems::{payment_problems, Problem};
pub use relays::{
    CustomerRelays, Relays, DEFAULT_PUBLISH_CAP, MAX_ALLOWLIST, MAX_PUBLISH_CAP, MAX_RELAYS,
};
pub use secret::Secret;
pub use template::CONFIG_TEMPLATE;

use check::Check;
use raw::RawConfig;

/// `paydvm.toml` validated on its own: no policy, no key, no file system access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub node: Node,
    pub relays: Relays,
    pub offers: Vec<Offer>,
    /// `[lightning]`; none = no Lightning rail (quotes carry no invoice).
    pub lightning: Option<Lightning>,
    pub cashu: Option<Cashu>,
    /// `[http]`; none = no metrics, health or status endpoint.
    pub http: Option<Http>,
}

impl ConfigFile {
    /// Parses and validates config TOML. `origin` names the source in errors; relative paths
    /// are resolved against `base_dir`. Stops at the first invalid field.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|error| ConfigError::syntax(origin, text, &error))?;
        let check = Check {
            file: origin,
            base_dir,
        };
        let node = Node::from_raw(check.required("node", raw.node)?, check)?;
        let relays = Relays::from_raw(check.required("relays", raw.relays)?, check)?;
        let offers = offers::offers_from_raw(raw.offer, check)?;
        let lightning = raw
            .lightning
            .map(|l| Lightning::from_raw(l, check))
            .transpose()?;
        let cashu = raw.cashu.map(|c| Cashu::from_raw(c, check)).transpose()?;
        let http = raw.http.map(|h| Http::from_raw(h, check)).transpose()?;
        offers::check_shared_needs_a_database(&offers, &node.ledger, check)?;
        Ok(ConfigFile {
            node,
            relays,
            offers,
            lightning,
            cashu,
            http,
        })
    }

    /// The checks of this file against its policy that need neither the disk nor a key: every
    /// offered kind has a price, and a policy that trusts mints comes with a `[cashu]` section.
    /// [`Config::load`] makes the same checks (with the executor and key checks in between).
    pub fn check_policy(
        &self,
        policy: &Policy,
        origin: &str,
        base_dir: &Path,
    ) -> Result<(), ConfigError> {
        let check = Check {
            file: origin,
            base_dir,
        };
        for i in 0..self.offers.len() {
            self.check_priced(i, policy, check)?;
        }
        self.check_cashu_section(policy, check)
    }

    /// `offer[i]`'s kind has a price in `policy`.
    fn check_priced(&self, i: usize, policy: &Policy, check: Check<'_>) -> Result<(), ConfigError> {
        let kind = self.offers[i].kind;
        if policy.pricing().is_offered(kind) {
            return Ok(());
        }
        Err(check.invalid(
            &format!("offer[{i}].kind"),
            format!(
                "kind {kind} has no price in {}; add a [[pricing.kind]] entry for it \
                 (mode = \"free\" to serve it free)",
                self.node.policy.display()
            ),
        ))
    }

    /// NutZaps are locked to the `[cashu]` key: a policy that trusts mints needs one.
    fn check_cashu_section(&self, policy: &Policy, check: Check<'_>) -> Result<(), ConfigError> {
        if self.cashu.is_none() && !policy.trusted_mints().is_empty() {
            return Err(check.invalid(
                "cashu",
                "the policy trusts Cashu mints, so a [cashu] section with p2pk_key_file \
                 (or p2pk_key_env) is required: NutZaps are locked to that key",
            ));
        }
        Ok(())
    }
}

/// Everything the node needs to start: the validated config, its policy and its key.
#[derive(Debug)]
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    pub node: Node,
    pub relays: Relays,
    pub offers: Vec<Offer>,
    pub policy: Policy,
    pub keys: Secret<Keys>,
    /// `[lightning]` with its secrets loaded.
    pub lightning: Option<LightningConfig>,
    /// The NutZap receiving key, when `[cashu]` is configured.
    pub p2pk_key: Option<Secret<Keys>>,
    /// `cashu.public_tokens`: tokens in clear request tags ([`PublicTokens::Refuse`] without
    /// `[cashu]`).
    pub public_tokens: PublicTokens,
    /// `cashu.input_fees`: who bears the mint's input fee on a swap.
    pub input_fees: InputFees,
    /// `cashu.mint_requests_per_minute`: how fast the Cashu wallet may call each mint.
    pub mint_pacing: paydvm_mints::MintPacing,
    /// `cashu.token_wait_secs`: how long a request's tokens wait for their mint.
    pub token_wait: std::time::Duration,
    /// `[http]` with its token loaded; none = no HTTP endpoint.
    pub http: Option<HttpConfig>,
}

impl Config {
    /// Reads `path`, validates it, and loads the policy and key it names. A `key_env` key is
    /// read from the process environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |name| std::env::var_os(name))
    }

    /// [`Config::load`] with `env` standing in for the process environment.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: origin.clone(),
            error,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file = ConfigFile::parse(&text, &origin, base_dir)?;
        let check = Check {
            file: &origin,
            base_dir,
        };
        let policy = Policy::load(&file.node.policy).map_err(|error| ConfigError::Policy {
            file: origin.clone(),
            error: Box::new(error),
        })?;
        for (i, offer) in file.offers.iter().enumerate() {
            file.check_priced(i, &policy, check)?;
            offer
                .executor
                .check_program(&format!("offer[{i}]"), check)?;
        }
        let key_error = |field, error| ConfigError::Key {
            file: origin.clone(),
            field,
            error,
        };
        let keys = match &file.node.key {
            KeySource::File(key_file) => {
                load_key_file(key_file).map_err(|e| key_error("node.key_file", e))?
            }
            KeySource::Env(name) => {
                key_from_env_value(name, env(name)).map_err(|e| key_error("node.key_env", e))?
            }
        };
        let lightning = file
            .lightning
            .as_ref()
            .map(|l| l.load(&origin, &env))
            .transpose()?;
        file.check_cashu_section(&policy, check)?;
        let p2pk_key = match &file.cashu {
            None => None,
            Some(cashu) => Some(match &cashu.p2pk_key {
                KeySource::File(f) => {
                    load_key_file(f).map_err(|e| key_error("cashu.p2pk_key_file", e))?
                }
                KeySource::Env(name) => key_from_env_value(name, env(name))
                    .map_err(|e| key_error("cashu.p2pk_key_env", e))?,
            }),
        };
        let http = file.http.as_ref().map(|h| h.load(&origin)).transpose()?;
        if p2pk_key
            .as_ref()
            .is_some_and(|k| k.expose().public_key() == keys.expose().public_key())
        {
            return Err(check.invalid(
                "cashu.p2pk_key_file",
                "must not be the node's identity key (NIP-61)",
            ));
        }
        Ok(Config {
            path: path.to_owned(),
            node: file.node,
            relays: file.relays,
            offers: file.offers,
            policy,
            keys,
            lightning,
            p2pk_key,
            public_tokens: file
                .cashu
                .as_ref()
                .map_or(PublicTokens::default(), |c| c.public_tokens),
            input_fees: file
                .cashu
                .as_ref()
                .map_or(InputFees::default(), |c| c.input_fees),
            mint_pacing: file
                .cashu
                .as_ref()
                .map_or(paydvm_mints::MintPacing::default(), |c| c.mint_pacing),
            token_wait: file
                .cashu
                .as_ref()
                .map_or(cashu::DEFAULT_TOKEN_WAIT, |c| c.token_wait),
            http,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.expose().public_key()
    }
}
