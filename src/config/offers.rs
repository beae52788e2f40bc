//! `[[offer]]`: the job kinds the node serves and the executor that runs each.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nostr_sdk::Url;

use super::check::Check;
use super::raw::{RawExecutor, RawOffer};
use super::{ConfigError, Secret};

pub const MAX_OFFERS: usize = 64;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 65_536;
/// Relays commonly refuse events much above this; a larger result could not be delivered.
pub const MAX_MAX_OUTPUT_BYTES: usize = 1_048_576;
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
pub const MAX_MAX_CONCURRENCY: usize = 256;
/// A shared attempt's lease by default: a runner renews it every third of it while it runs.
pub const DEFAULT_LEASE_SECS: u64 = 15;
pub const MAX_LEASE_SECS: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// NIP-90 request kind, 5000..=5999.
    pub kind: u16,
    pub executor: Executor,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    pub max_concurrency: usize,
    /// Which nodes run its attempts.
    pub execute_on: ExecuteOn,
    /// For the NIP-89 announcement.
    pub name: Option<String>,
    /// For the NIP-89 announcement.
    pub about: Option<String>,
}

/// Which nodes run an offer's attempts (`execute_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecuteOn {
    /// The serving node, as its own tasks (the default).
    ThisNode,
    /// Any node on the PostgreSQL ledger's database with this offer, serving or standing by,
    /// each attempt claimed with a lease of this length (`crate::node::shared_work`).
    AnyNode { lease: Duration },
}

impl ExecuteOn {
    pub fn is_shared(&self) -> bool {
        matches!(self, ExecuteOn::AnyNode { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    Builtin(Builtin),
    /// A program run per job: JSON on stdin, result on stdout, only `env` in its environment.
    Command {
        program: PathBuf,
        args: Vec<String>,
        /// Values are often API tokens, hence `Secret`.
        env: BTreeMap<String, Secret<String>>,
    },
    /// An HTTP endpoint the job is POSTed to; a `Secret` because URLs often carry a token.
    Http {
        url: Secret<Url>,
    },
}

/// The executors compiled into paydvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Deterministic text tasks for the demo: text generation (5050) and a word-count
    /// "summary" (5001); see `crate::executor::builtin`.
    Text,
}

impl Builtin {
    pub const ALL: [(&'static str, Builtin); 1] = [("text", Builtin::Text)];

    fn parse(name: &str) -> Option<Builtin> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// The job kinds this builtin can serve.
    pub fn kinds(self) -> &'static [u16] {
        use crate::executor::builtin::{SUMMARISE, TEXT_GENERATION};
        match self {
            Builtin::Text => &[TEXT_GENERATION, SUMMARISE],
        }
    }
}

pub(crate) fn offers_from_raw(
    raw: Vec<RawOffer>,
    check: Check<'_>,
) -> Result<Vec<Offer>, ConfigError> {
    if raw.is_empty() || raw.len() > MAX_OFFERS {
        return Err(check.invalid(
            "offer",
            format!(
                "must have 1 to {MAX_OFFERS} [[offer]] entries, got {}",
                raw.len()
            ),
        ));
    }
    let mut offers: Vec<Offer> = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let offer = Offer::from_raw(raw, &format!("offer[{i}]"), check)?;
        if let Some(j) = offers.iter().position(|o| o.kind == offer.kind) {
            return Err(check.invalid(
                &format!("offer[{i}].kind"),
                format!("kind {} is already offered by offer[{j}]", offer.kind),
            ));
        }
        offers.push(offer);
    }
    Ok(offers)
}

/// Attempts run by any node are shared through the ledger's database: a file ledger has none.
pub(crate) fn check_shared_needs_a_database(
    offers: &[Offer],
    ledger: &super::LedgerPlace,
    check: Check<'_>,
) -> Result<(), ConfigError> {
    let Some(i) = offers.iter().position(|o| o.execute_on.is_shared()) else {
        return Ok(());
    };
    if matches!(ledger, super::LedgerPlace::Postgres(_)) {
        return Ok(());
    }
    Err(check.invalid(
        &format!("offer[{i}].execute_on"),
        "\"any_node\" needs a PostgreSQL ledger (node.ledger = \"postgres://…\"): the \
         attempts are shared through its database",
    ))
}

impl Offer {
    fn from_raw(raw: RawOffer, at: &str, check: Check<'_>) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{at}.{name}");
        let kind = check.required(&field("kind"), raw.kind)?;
        let kind = check.int_in(&field("kind"), kind, 5000, 5999)? as u16;
        let executor = check.required(&field("executor"), raw.executor)?;
        let executor = Executor::from_raw(executor, &field("executor"), check)?;
        if let Executor::Builtin(builtin) = executor {
            if !builtin.kinds().contains(&kind) {
                return Err(check.invalid(
                    &field("executor.builtin"),
                    format!(
                        "this builtin serves kinds {:?} only, not {kind}",
                        builtin.kinds()
                    ),
                ));
            }
        }
        let secs = raw.timeout_secs.map_or(Ok(DEFAULT_TIMEOUT_SECS), |v| {
            check.int_in(&field("timeout_secs"), v, 1, MAX_TIMEOUT_SECS as i64)
        })?;
        let max_output_bytes = raw
            .max_output_bytes
            .map_or(Ok(DEFAULT_MAX_OUTPUT_BYTES), |v| {
                check
                    .int_in(
                        &field("max_output_bytes"),
                        v,
                        1,
                        MAX_MAX_OUTPUT_BYTES as i64,
                    )
                    .map(|v| v as usize)
            })?;
        let max_concurrency = raw
            .max_concurrency
            .map_or(Ok(DEFAULT_MAX_CONCURRENCY), |v| {
                check
                    .int_in(&field("max_concurrency"), v, 1, MAX_MAX_CONCURRENCY as i64)
                    .map(|v| v as usize)
            })?;
        let name = raw
            .name
            .map(|n| check.non_empty(&field("name"), n))
            .transpose()?;
        let execute_on = ExecuteOn::from_raw(raw.execute_on, raw.lease_secs, at, check)?;
        Ok(Offer {
            kind,
            executor,
            timeout: Duration::from_secs(secs),
            max_output_bytes,
            max_concurrency,
            execute_on,
            name,
            about: raw.about,
        })
    }
}

impl ExecuteOn {
    fn from_raw(
        raw: Option<String>,
        lease_secs: Option<i64>,
        at: &str,
        check: Check<'_>,
    ) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{at}.{name}");
        match raw.as_deref() {
            None | Some("this_node") => match lease_secs {
                None => Ok(ExecuteOn::ThisNode),
                Some(_) => Err(check.invalid(
                    &field("lease_secs"),
                    "only allowed with execute_on = \"any_node\"",
                )),
            },
            Some("any_node") => {
                let secs = lease_secs.map_or(Ok(DEFAULT_LEASE_SECS), |v| {
                    check.int_in(&field("lease_secs"), v, 1, MAX_LEASE_SECS as i64)
                })?;
                Ok(ExecuteOn::AnyNode {
                    lease: Duration::from_secs(secs),
                })
            }
            Some(other) => Err(check.invalid(
                &field("execute_on"),
                format!("{other:?}: expected \"this_node\" or \"any_node\""),
            )),
        }
    }
}

impl Executor {
    fn from_raw(raw: RawExecutor, at: &str, check: Check<'_>) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{at}.{name}");
        let chosen = [
            raw.builtin.is_some(),
            raw.command.is_some(),
            raw.http.is_some(),
        ];
        if chosen.iter().filter(|&&c| c).count() != 1 {
            return Err(check.invalid(at, "set exactly one of `builtin`, `command` or `http`"));
        }
        if raw.command.is_none() {
            for (name, set) in [("args", raw.args.is_some()), ("env", raw.env.is_some())] {
                if set {
                    return Err(check.invalid(&field(name), "only allowed with `command`"));
                }
            }
        }
        if let Some(name) = raw.builtin {
            let known: Vec<&str> = Builtin::ALL.iter().map(|(n, _)| *n).collect();
            return Builtin::parse(&name).map(Executor::Builtin).ok_or_else(|| {
                check.invalid(
                    &field("builtin"),
                    format!("unknown builtin {name:?}; expected one of {known:?}"),
                )
            });
        }
        if let Some(url) = raw.http {
            return Ok(Executor::Http {
                url: Secret::new(http_url(&field("http"), &url, check)?),
            });
        }
        let program = check.non_empty(&field("command"), raw.command.unwrap_or_default())?;
        let program = PathBuf::from(program);
        if !program.is_absolute() {
            return Err(check.invalid(
                &field("command"),
                format!(
                    "{:?} must be an absolute path, so what runs does not depend on PATH",
                    program.display().to_string()
                ),
            ));
        }
        let mut env = BTreeMap::new();
        for (name, value) in raw.env.unwrap_or_default() {
            check.env_name(&field(&format!("env.{name}")), &name)?;
            env.insert(name, Secret::new(value));
        }
        Ok(Executor::Command {
            program,
            args: raw.args.unwrap_or_default(),
            env,
        })
    }

    /// For a command executor: the program must exist and be executable. Done at load rather
    /// than parse so that parsing never touches the file system.
    pub(crate) fn check_program(&self, at: &str, check: Check<'_>) -> Result<(), ConfigError> {
        let Executor::Command { program, .. } = self else {
            return Ok(());
        };
        let field = format!("{at}.executor.command");
        let meta = std::fs::metadata(program)
            .map_err(|e| check.invalid(&field, format!("{}: {e}", program.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(check.invalid(
                &field,
                format!("{} is not an executable file", program.display()),
            ));
        }
        Ok(())
    }
}

/// Like `node::web_url`, but the value stays out of the message: it may hold a token.
fn http_url(field: &str, value: &str, check: Check<'_>) -> Result<Url, ConfigError> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(url),
        Ok(_) => Err(check.invalid(field, "must be an http:// or https:// URL with a host")),
        Err(e) => Err(check.invalid(field, format!("not a URL: {e}"))),
    }
}
