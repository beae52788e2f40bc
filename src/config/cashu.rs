//! `[cashu]`: the dedicated P2PK key NutZaps are locked to (NIP-61 forbids the identity key),
//! what to do with Cashu tokens in public request tags, and where the Cashu wallet keeps its
//! proofs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use paydvm_mints::MintPacing;

use super::check::Check;
use super::node::KeySource;
use super::raw::RawCashu;
use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cashu {
    /// The P2PK receiving key: a 0600 file or an environment variable, like the node key.
    pub p2pk_key: KeySource,
    pub public_tokens: PublicTokens,
    pub input_fees: InputFees,
    pub mint_pacing: MintPacing,
    /// How long a request's tokens wait for their mint (or their job's record) before the
    /// customer is told they were not taken (`token_wait_secs`).
    pub token_wait: Duration,
}

/// Most requests per minute `mint_requests_per_minute` may allow.
pub const MAX_MINT_REQUESTS_PER_MINUTE: i64 = 100_000;

/// `token_wait_secs` unset: 21 minutes (the deferral's doubling waits then reach 256 s).
pub const DEFAULT_TOKEN_WAIT: Duration = Duration::from_secs(21 * 60);
/// The longest `token_wait_secs`: a week.
pub const MAX_TOKEN_WAIT_SECS: i64 = 7 * 24 * 3600;

/// Who bears the mint's input fee (NUT-02) when the node swaps received ecash. The quote says
/// which (`["cashu_fees", …]` in the payment-required feedback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFees {
    /// The ecash counts at its face value; the fee is booked to `expense:fees`.
    #[default]
    Operator,
    /// The ecash counts at face value minus the fee: the customer sends enough to cover it.
    Customer,
}

impl InputFees {
    /// The value of the quote's `cashu_fees` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFees::Operator => "operator",
            InputFees::Customer => "customer",
        }
    }
}

/// A token in a clear request tag was readable by every relay and reader before it reached
/// us, so someone may spend it first. The operator chooses whether to take that race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublicTokens {
    /// Refuse it with error feedback; nothing is swapped or credited.
    #[default]
    Refuse,
    /// Swap it at once like an encrypted one; whoever swaps first owns it.
    RaceSwap,
}

impl Cashu {
    pub(crate) fn from_raw(raw: RawCashu, check: Check<'_>) -> Result<Self, ConfigError> {
        let p2pk_key = match (raw.p2pk_key_file, raw.p2pk_key_env) {
            (Some(file), None) => KeySource::File(check.path("cashu.p2pk_key_file", file)?),
            (None, Some(var)) => {
                check.env_name("cashu.p2pk_key_env", &var)?;
                KeySource::Env(var)
            }
            (Some(_), Some(_)) => {
                return Err(check.invalid(
                    "cashu.p2pk_key_file",
                    "set either p2pk_key_file or p2pk_key_env, not both",
                ))
            }
            (None, None) => {
                return Err(check.invalid(
                    "cashu.p2pk_key_file",
                    "is required (or p2pk_key_env): the key NutZaps to this node are locked to",
                ))
            }
        };
        let public_tokens = match raw.public_tokens.as_deref() {
            None | Some("refuse") => PublicTokens::Refuse,
            Some("race_swap") => PublicTokens::RaceSwap,
            Some(other) => {
                return Err(check.invalid(
                    "cashu.public_tokens",
                    format!("{other:?} is not a policy; use \"refuse\" or \"race_swap\""),
                ))
            }
        };
        let input_fees = match raw.input_fees.as_deref() {
            None | Some("operator") => InputFees::Operator,
            Some("customer") => InputFees::Customer,
            Some(other) => {
                return Err(check.invalid(
                    "cashu.input_fees",
                    format!("{other:?} is not a policy; use \"operator\" or \"customer\""),
                ))
            }
        };
        // cdk paces each mint (a burst of 20, then 20 per minute) unless told otherwise; 0 turns
        // pacing off (the operator's own mint).
        let mint_pacing = match raw.mint_requests_per_minute {
            None => MintPacing::CdkDefault,
            Some(0) => MintPacing::Off,
            Some(n @ 1..=MAX_MINT_REQUESTS_PER_MINUTE) => {
                MintPacing::PerMinute(std::num::NonZeroU32::new(n as u32).expect("n is at least 1"))
            }
            Some(_) => {
                return Err(check.invalid(
                    "cashu.mint_requests_per_minute",
                    format!("must be 0 (no pacing) ..= {MAX_MINT_REQUESTS_PER_MINUTE}"),
                ))
            }
        };
        let token_wait = match raw.token_wait_secs {
            None => DEFAULT_TOKEN_WAIT,
            Some(n @ 1..=MAX_TOKEN_WAIT_SECS) => Duration::from_secs(n as u64),
            Some(_) => {
                return Err(check.invalid(
                    "cashu.token_wait_secs",
                    format!("must be 1 ..= {MAX_TOKEN_WAIT_SECS} (a week)"),
                ))
            }
        };
        Ok(Cashu {
            p2pk_key,
            public_tokens,
            input_fees,
            mint_pacing,
            token_wait,
        })
    }
}

/// The cdk wallet store (received proofs): `<base>.cashu-wallet`, `base` being
/// [`Node::local_base`](super::Node::local_base) (the ledger file, or `<state_dir>/paydvm`).
pub fn wallet_path(ledger: &Path) -> PathBuf {
    with_suffix(ledger, ".cashu-wallet")
}

/// NutZaps verified but not yet credited: `<base>.cashu-pending` (see [`wallet_path`]).
pub fn pending_path(ledger: &Path) -> PathBuf {
    with_suffix(ledger, ".cashu-pending")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
