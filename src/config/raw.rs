//! `paydvm.toml` exactly as written: serde structs, no validation.
//!
//! Fields are optional and integers are `i64` so that a missing field or a value out of range
//! is reported by validation with its field path, not by serde.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub node: Option<RawNode>,
    pub relays: Option<RawRelays>,
    #[serde(default)]
    pub offer: Vec<RawOffer>,
    pub lightning: Option<RawLightning>,
    pub cashu: Option<RawCashu>,
    pub http: Option<RawHttp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLightning {
    pub backend: Option<String>,
    pub nwc_uri_file: Option<String>,
    pub nwc_uri_env: Option<String>,
    pub lnbits_url: Option<String>,
    pub lnbits_invoice_key_file: Option<String>,
    pub lnbits_invoice_key_env: Option<String>,
    pub lnbits_admin_key_file: Option<String>,
    pub lnbits_admin_key_env: Option<String>,
    pub invoice_timeout_secs: Option<i64>,
    pub max_fee_msat: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCashu {
    pub p2pk_key_file: Option<String>,
    pub p2pk_key_env: Option<String>,
    pub public_tokens: Option<String>,
    pub input_fees: Option<String>,
    pub mint_requests_per_minute: Option<i64>,
    pub token_wait_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Option<String>,
    pub about: Option<String>,
    pub picture: Option<String>,
    pub ledger: Option<String>,
    pub state_dir: Option<String>,
    pub policy: Option<String>,
    pub key_file: Option<String>,
    pub key_env: Option<String>,
    pub lud16: Option<String>,
    pub lnurl_http_loopback: Option<bool>,
    pub lnurl_allow_hosts: Option<Vec<String>>,
    pub config_problems: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelays {
    pub urls: Option<Vec<String>>,
    pub publish_cap: Option<i64>,
    pub allow_customer_relays: Option<bool>,
    pub customer_relay_allowlist: Option<Vec<String>>,
    pub customer_relay_loopback: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOffer {
    pub kind: Option<i64>,
    pub executor: Option<RawExecutor>,
    pub timeout_secs: Option<i64>,
    pub max_output_bytes: Option<i64>,
    pub max_concurrency: Option<i64>,
    pub execute_on: Option<String>,
    pub lease_secs: Option<i64>,
    pub name: Option<String>,
    pub about: Option<String>,
}

/// One of `builtin`, `command` (with optional `args`, `env`) or `http`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExecutor {
    pub builtin: Option<String>,
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub http: Option<String>,
}
