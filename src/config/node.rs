//! `[node]`: who the node is and where its ledger, policy and key live.

use std::path::PathBuf;

use nostr_sdk::Url;

use super::check::Check;
use super::ledger_place::{LedgerPlace, PgUrl};
use super::raw::RawNode;
use super::ConfigError;
use crate::payments::lnurl::Lud16;
use paydvm_netguard::{AllowEntry, AllowList, HostPolicy};

/// Most entries in `lnurl_allow_hosts`.
pub const MAX_LNURL_ALLOW_HOSTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Shown in the NIP-89 announcement and the node's profile.
    pub name: String,
    pub about: Option<String>,
    pub picture: Option<Url>,
    /// A file (resolved against the config file's directory) or a `postgres://` URL.
    pub ledger: LedgerPlace,
    /// Where the node keeps its local files (Cashu wallet, pending swaps, control socket, lock)
    /// when the ledger is a database: required then, refused with a file ledger (whose local
    /// files sit next to it). Resolved against the config file's directory.
    pub state_dir: Option<PathBuf>,
    /// Resolved against the config file's directory.
    pub policy: PathBuf,
    pub key: KeySource,
    /// Our lightning address: zaps are paid through it, and receipts must be signed by its
    /// LNURL server's `nostrPubkey`. Without it the node takes no zaps.
    pub lud16: Option<Lud16>,
    /// Talk LNURL over plain `http://` to loopback addresses (tests, the demo): our own lud16
    /// (which must then be a loopback one) and customers' refund addresses. Without it, a
    /// refund address on a loopback host is refused.
    pub lnurl_http_loopback: bool,
    /// Hosts LNURL calls may reach although they are not public (`host`, `host:port`; with
    /// `http://` in front, over plain http too). Everything else must be public.
    pub lnurl_allow_hosts: AllowList,
    /// `config_problems`: whether `paydvm run` refuses to start on a problem `check-config`
    /// finds (an offer nothing can pay, an impossible price, a backend or mint that does not
    /// answer), or starts with a loud warning.
    pub config_problems: ProblemMode,
}

/// `[node] config_problems`: what a problem `paydvm check-config` finds does to `paydvm run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProblemMode {
    /// `"error"` (the default): the node does not start.
    #[default]
    Error,
    /// `"warn"`: the node starts and logs each problem at WARN.
    Warn,
}

/// Where the node's secret key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file (mode 0600), resolved against the config file's directory.
    File(PathBuf),
    /// The name of an environment variable holding an nsec or 64-hex secret.
    Env(String),
}

/// The file name the node's local files are named after in `state_dir` (`paydvm.sock`,
/// `paydvm.lock`, `paydvm.cashu-wallet`, `paydvm.cashu-pending`).
pub const LOCAL_BASE_NAME: &str = "paydvm";

impl Node {
    /// What the node's local files are named after: `<ledger>.sock`, `<ledger>.cashu-wallet`, …
    /// beside a ledger file; `<state_dir>/paydvm.sock`, … with a database ledger.
    pub fn local_base(&self) -> PathBuf {
        match (&self.ledger, &self.state_dir) {
            (LedgerPlace::File(path), _) => path.clone(),
            (LedgerPlace::Postgres(_), Some(dir)) => dir.join(LOCAL_BASE_NAME),
            // Not from a config file (validation requires state_dir): the working directory.
            (LedgerPlace::Postgres(_), None) => PathBuf::from(LOCAL_BASE_NAME),
        }
    }

    pub(crate) fn from_raw(raw: RawNode, check: Check<'_>) -> Result<Self, ConfigError> {
        let name = check.non_empty("node.name", check.required("node.name", raw.name)?)?;
        let picture = raw
            .picture
            .map(|p| web_url("node.picture", &p, check))
            .transpose()?;
        let (ledger, state_dir) = ledger_and_state_dir(raw.ledger, raw.state_dir, check)?;
        let policy = check.path("node.policy", check.required("node.policy", raw.policy)?)?;
        let key =
            match (raw.key_file, raw.key_env) {
                (Some(file), None) => KeySource::File(check.path("node.key_file", file)?),
                (None, Some(var)) => {
                    check.env_name("node.key_env", &var)?;
                    KeySource::Env(var)
                }
                (Some(_), Some(_)) => {
                    return Err(
                        check.invalid("node.key_file", "set either key_file or key_env, not both")
                    )
                }
                (None, None) => return Err(check.invalid(
                    "node.key_file",
                    "is required (or key_env, naming an environment variable that holds the key)",
                )),
            };
        let lud16 = raw
            .lud16
            .map(|a| {
                a.parse::<Lud16>()
                    .map_err(|e| check.invalid("node.lud16", e.to_string()))
            })
            .transpose()?;
        let lnurl_http_loopback = raw.lnurl_http_loopback.unwrap_or(false);
        // Also lets refunds reach customers' loopback lightning addresses (tests, the demo).
        if lnurl_http_loopback && lud16.as_ref().is_some_and(|a| !a.is_loopback()) {
            return Err(check.invalid(
                "node.lnurl_http_loopback",
                "plain http is only allowed when node.lud16's domain is a loopback address",
            ));
        }
        let lnurl_allow_hosts = allow_list(raw.lnurl_allow_hosts, check)?;
        let config_problems = match raw.config_problems.as_deref() {
            None | Some("error") => ProblemMode::Error,
            Some("warn") => ProblemMode::Warn,
            Some(other) => {
                return Err(check.invalid(
                    "node.config_problems",
                    format!("{other:?} is neither \"error\" nor \"warn\""),
                ))
            }
        };
        // Our own address must pass the same host rules as a customer's, or zaps never count.
        if let Some(address) = &lud16 {
            HostPolicy::new(lnurl_http_loopback, lnurl_allow_hosts.clone())
                .pay_url(address)
                .map_err(|e| {
                    check.invalid(
                        "node.lud16",
                        format!("{e} (list the host in node.lnurl_allow_hosts to use it)"),
                    )
                })?;
        }
        Ok(Node {
            name,
            about: raw.about,
            picture,
            ledger,
            state_dir,
            policy,
            key,
            lud16,
            lnurl_http_loopback,
            lnurl_allow_hosts,
            config_problems,
        })
    }

    /// The rules for LNURL calls: loopback only with `lnurl_http_loopback`, private hosts only
    /// if allow-listed.
    pub fn lnurl_host_policy(&self) -> HostPolicy {
        HostPolicy::new(self.lnurl_http_loopback, self.lnurl_allow_hosts.clone())
    }
}

/// `ledger` and `state_dir`: a database ledger needs a directory for the node's local files; a
/// file ledger keeps them beside it.
fn ledger_and_state_dir(
    ledger: Option<String>,
    state_dir: Option<String>,
    check: Check<'_>,
) -> Result<(LedgerPlace, Option<PathBuf>), ConfigError> {
    let ledger = check.non_empty("node.ledger", check.required("node.ledger", ledger)?)?;
    if !LedgerPlace::is_url(&ledger) {
        if state_dir.is_some() {
            return Err(check.invalid(
                "node.state_dir",
                "is only for a postgres:// ledger (a ledger file keeps the node's files beside it)",
            ));
        }
        return Ok((LedgerPlace::File(check.path("node.ledger", ledger)?), None));
    }
    let url = PgUrl::parse(&ledger).map_err(|e| check.invalid("node.ledger", e.to_string()))?;
    let Some(dir) = state_dir else {
        return Err(check.invalid(
            "node.state_dir",
            "is required when node.ledger is a postgres:// URL: a directory for the node's local \
             files (Cashu wallet, pending swaps, control socket, lock)",
        ));
    };
    Ok((
        LedgerPlace::Postgres(url),
        Some(check.path("node.state_dir", dir)?),
    ))
}

/// `lnurl_allow_hosts`: 1..=64 entries, each valid, none twice.
fn allow_list(raw: Option<Vec<String>>, check: Check<'_>) -> Result<AllowList, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AllowList::default());
    };
    let field = "node.lnurl_allow_hosts";
    if raw.is_empty() || raw.len() > MAX_LNURL_ALLOW_HOSTS {
        return Err(check.invalid(
            field,
            format!(
                "must list 1 to {MAX_LNURL_ALLOW_HOSTS} hosts, got {} (leave it out to allow none)",
                raw.len()
            ),
        ));
    }
    let mut entries: Vec<AllowEntry> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let entry: AllowEntry = text.parse().map_err(|e| {
            check.invalid(
                &at,
                format!("{e}; write host, host:port, or http://host[:port] for plain http too"),
            )
        })?;
        if let Some(first) = entries.iter().position(|e| *e == entry) {
            return Err(check.invalid(&at, format!("{entry} is listed twice (first at [{first}])")));
        }
        entries.push(entry);
    }
    Ok(AllowList::new(entries))
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn web_url(field: &str, value: &str, check: Check<'_>) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| check.invalid(field, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(check.invalid(
            field,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}
