//! `paydvm check-config [--config paydvm.toml]`: load the config like `paydvm run` does, then
//! look for what would keep the node from taking money: an offer priced but payable by no rail,
//! a price the Lightning backend cannot invoice ([`payment_problems`]), and a Lightning backend
//! or trusted mint that does not answer (probed, each within [`PROBE_TIMEOUT`]).
//!
//! `paydvm run` makes the same checks before it starts ([`at_start`]). `[node] config_problems`
//! chooses what a problem does: `"error"` (default) refuses to start and makes `check-config`
//! exit 1; `"warn"` starts with a WARN line per problem and `check-config` exits 0.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use paydvm_mints::{MintRegistry, MintStatus};
use tracing::warn;

use super::{output, EXIT_ERROR, EXIT_OK};
use crate::config::{payment_problems, BackendSecrets, Config, Problem, ProblemMode};
use crate::lightning::lnbits::LnbitsLightning;
use crate::lightning::nwc::NwcLightning;
use crate::lightning::{LightningBackend, LightningError};

/// How long one probe (the Lightning backend, one mint) may take before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const HOW_TO_START_ANYWAY: &str =
    "set [node] config_problems = \"warn\" to start with warnings instead";

pub fn run(config_path: &Path) -> anyhow::Result<u8> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let problems = runtime.block_on(find_problems(&config));
    let refuses = !problems.is_empty() && config.node.config_problems == ProblemMode::Error;
    let mut text = report(&config, &problems, refuses);
    for n in notices(&config) {
        let _ = writeln!(text, "note: {}: {n}", config.path.display());
    }
    output::print(&text)?;
    Ok(if refuses { EXIT_ERROR } else { EXIT_OK })
}

fn report(config: &Config, problems: &[Problem], refuses: bool) -> String {
    let path = config.path.display();
    if problems.is_empty() {
        return format!("{path}: no problems found\n");
    }
    let (label, verdict) = if refuses {
        (
            "error",
            format!("paydvm run refuses to start; {HOW_TO_START_ANYWAY}"),
        )
    } else {
        (
            "warning",
            "paydvm run starts anyway (config_problems = \"warn\")".to_owned(),
        )
    };
    let mut text = String::new();
    for p in problems {
        let _ = writeln!(text, "{label}: {path}: {p}");
    }
    let _ = writeln!(text, "{} problem(s): {verdict}", problems.len());
    text
}

/// At `paydvm run` start: every problem refuses the start (`"error"`) or is logged at WARN.
pub async fn at_start(config: &Config) -> anyhow::Result<()> {
    let problems = find_problems(config).await;
    if problems.is_empty() {
        return Ok(());
    }
    if config.node.config_problems == ProblemMode::Warn {
        for p in &problems {
            warn!(config = %config.path.display(), "config problem: {p}");
        }
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    bail!(
        "{} cannot take money as configured ({} problem(s); {HOW_TO_START_ANYWAY}):\n{}",
        config.path.display(),
        problems.len(),
        list.join("\n")
    )
}

/// What works but limits the node, said without changing the exit code (`paydvm run` logs the
/// same at WARN when it starts the backend): an LNbits backend without an admin key cannot pay
/// refunds.
pub fn notices(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(BackendSecrets::Lnbits {
        admin_key: None, ..
    }) = config.lightning.as_ref().map(|l| &l.backend)
    {
        out.push(Problem::new(
            "lightning.lnbits_admin_key",
            "not set: the node cannot pay Lightning refunds; refunds of failed paid jobs wait \
             (see `paydvm refund`) until lnbits_admin_key_file or lnbits_admin_key_env is set",
        ));
    }
    out
}

/// Every problem: the pure checks first, then the probes.
pub async fn find_problems(config: &Config) -> Vec<Problem> {
    let mut out = payment_problems(config);
    out.extend(probe_lightning(config).await);
    out.extend(probe_mints(config).await);
    out
}

/// The Lightning backend answers a balance call (with the invoice key for LNbits). An NWC
/// wallet that refuses the call still answered: it may simply not grant `get_balance`.
async fn probe_lightning(config: &Config) -> Option<Problem> {
    let lightning = config.lightning.as_ref()?;
    let (field, backend): (&str, Result<Box<dyn LightningBackend>, LightningError>) =
        match &lightning.backend {
            BackendSecrets::Fake => return None,
            BackendSecrets::Lnbits {
                url, invoice_key, ..
            } => (
                "lightning.lnbits_url",
                LnbitsLightning::new(url, invoice_key, None, PROBE_TIMEOUT)
                    .map(|b| Box::new(b) as Box<dyn LightningBackend>),
            ),
            BackendSecrets::Nwc { uri } => (
                "lightning.nwc_uri",
                NwcLightning::new(uri, PROBE_TIMEOUT)
                    .map(|b| Box::new(b) as Box<dyn LightningBackend>),
            ),
        };
    let backend = match backend {
        Ok(backend) => backend,
        Err(e) => return Some(Problem::new(field, e.to_string())),
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, backend.balance()).await;
    let name = backend.name();
    match answer {
        Ok(Ok(_)) => None,
        Ok(Err(LightningError::Refused(_))) if name == "nwc" => None,
        Ok(Err(e)) => Some(Problem::new(field, format!("the {name} backend: {e}"))),
        Err(_) => Some(Problem::new(
            field,
            format!(
                "the {name} backend did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Each trusted mint serves its keysets.
async fn probe_mints(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, mint) in config.policy.trusted_mints().iter().enumerate() {
        let field = format!("{} mints.trusted[{i}]", config.node.policy.display());
        let mut registry = MintRegistry::new(vec![paydvm_mints::TrustedMint::new(
            &mint.url,
            mint.units.iter().cloned(),
        )]);
        let reason = match tokio::time::timeout(PROBE_TIMEOUT, registry.refresh_all()).await {
            Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            Ok(()) => match registry.status(&mint.url) {
                MintStatus::Down { reason } => reason,
                _ => continue,
            },
        };
        out.push(Problem::new(
            field,
            format!("mint {} is unreachable: {reason}", mint.url),
        ));
    }
    out
}
