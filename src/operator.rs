//! Operator actions on money: a way out for every refund that waits (retry, re-route, write off,
//! resolve an unknown outcome after checking the wallet), operator float, and a customer's
//! prepaid credit granted or adjusted by hand. Each becomes one
//! ledger event with the operator as its cause (`Cause::Operator`), keyed by the request's id so
//! that sending the same request twice changes nothing.
//!
//! [`operator_events`] decides from the ledger state alone (no I/O, no clock): the running node
//! applies it inside its core (through the control socket, `node::control`), and the CLI applies
//! it to a stopped node's ledger under the same single-instance lock.

use paydvm_ledger::{
    Account, Asset, Cause, CreditDirection, EventBody, FeePayer, IdemKey, LedgerEvent, LedgerState,
    Msat, Pubkey, RefundId, RefundState, UnixMs, WriteOffTo,
};
use serde::{Deserialize, Serialize};

/// Longest operator note kept (the ledger's text limit is larger).
pub const MAX_NOTE_LEN: usize = 500;

/// One operator request, as the CLI sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRequest {
    /// Chosen by the CLI (random); the idempotency key is `operator:<id>`.
    pub id: String,
    /// Why, in the operator's words: kept in the ledger.
    pub note: String,
    pub action: OperatorAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OperatorAction {
    /// Route a waiting refund again now, with a fresh budget of attempts.
    RefundRetry { refund: String },
    /// Pay a waiting refund from another asset (`lightning` or `mint:<url>`).
    RefundReroute { refund: String, asset: String },
    /// Stop paying a waiting refund: to the customer's credit, or to income.
    RefundWriteOff { refund: String, to: WriteOffTo },
    /// The operator checked the wallet: a payment whose outcome is unknown was paid (with this
    /// fee) or failed.
    RefundResolve {
        refund: String,
        paid: bool,
        #[serde(default)]
        fee_msat: u64,
    },
    /// The operator's own money put into a wallet (`lightning` or `mint:<url>`).
    FloatAdd { asset: String, msat: u64 },
    /// Give a customer (npub or hex pubkey) prepaid credit, out of the operator's float.
    CreditGrant { customer: String, msat: u64 },
    /// Move a customer's prepaid credit up (positive) or down (negative), never below zero.
    CreditAdjust { customer: String, msat: i64 },
}

/// What the node (or the CLI on a stopped node) answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorReply {
    pub ok: bool,
    pub message: String,
}

impl OperatorReply {
    pub fn ok(message: impl Into<String>) -> Self {
        OperatorReply {
            ok: true,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        OperatorReply {
            ok: false,
            message: message.into(),
        }
    }
}

/// `lightning` or `mint:<url>` (as `paydvm status` prints assets).
pub fn parse_asset(text: &str) -> Result<Asset, String> {
    match text.trim() {
        "lightning" => Ok(Asset::Lightning),
        other => match other
            .strip_prefix("mint:")
            .map(paydvm_mints::normalise_mint_url)
        {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Asset::Mint { url })
            }
            _ => Err(format!(
                "{other:?} is not an asset: write `lightning` or `mint:<https URL>`"
            )),
        },
    }
}

impl OperatorRequest {
    /// The single ledger event this request makes, or why it is refused.
    pub fn event(&self, state: &LedgerState, at: UnixMs) -> Result<LedgerEvent, String> {
        let note = self.note.trim();
        if note.is_empty() {
            return Err("say why (--note): it is kept in the ledger".into());
        }
        let cause = Cause::Operator {
            note: note.chars().take(MAX_NOTE_LEN).collect(),
        };
        let key = IdemKey::new(format!("operator:{}", self.id)).map_err(|e| e.to_string())?;
        let body = self.action.body(state, cause)?;
        Ok(LedgerEvent::new(key, at, body))
    }
}

impl OperatorAction {
    /// The refund this action is about, if any.
    pub fn refund(&self) -> Option<&str> {
        match self {
            OperatorAction::RefundRetry { refund }
            | OperatorAction::RefundReroute { refund, .. }
            | OperatorAction::RefundWriteOff { refund, .. }
            | OperatorAction::RefundResolve { refund, .. } => Some(refund),
            OperatorAction::FloatAdd { .. }
            | OperatorAction::CreditGrant { .. }
            | OperatorAction::CreditAdjust { .. } => None,
        }
    }

    /// Whether this action puts money into a wallet (what waiting refunds may wait for).
    pub fn adds_float(&self) -> bool {
        matches!(self, OperatorAction::FloatAdd { .. })
    }

    fn body(&self, state: &LedgerState, cause: Cause) -> Result<EventBody, String> {
        match self {
            OperatorAction::FloatAdd { asset, msat } => {
                if *msat == 0 {
                    return Err("float of 0 msat".into());
                }
                Ok(EventBody::FloatAdded {
                    asset: parse_asset(asset)?,
                    amount: Msat::from_msat(*msat),
                    cause,
                })
            }
            OperatorAction::CreditGrant { customer, msat } => {
                credit_body(state, customer, CreditDirection::Increase, *msat, cause)
            }
            OperatorAction::CreditAdjust { customer, msat } => {
                let direction = if *msat < 0 {
                    CreditDirection::Decrease
                } else {
                    CreditDirection::Increase
                };
                credit_body(state, customer, direction, msat.unsigned_abs(), cause)
            }
            _ => self.refund_body(state, cause),
        }
    }

    fn refund_body(&self, state: &LedgerState, cause: Cause) -> Result<EventBody, String> {
        let refund = self.refund().unwrap_or_default();
        let id = RefundId::new(refund).map_err(|e| e.to_string())?;
        let record = state
            .refund(&id)
            .ok_or_else(|| format!("no refund {refund} in the ledger"))?;
        let (state_now, waiting) = (record.state, record.state.can_start());
        let refund = id;
        match self {
            OperatorAction::RefundResolve { paid, fee_msat, .. } => {
                if !state_now.can_resolve() {
                    return Err(format!(
                        "refund {refund} is {}: only a payment in flight or of unknown outcome \
                         can be resolved",
                        state_now.as_str()
                    ));
                }
                Ok(resolution(refund, *paid, *fee_msat, cause))
            }
            _ if !waiting => Err(not_waiting(&refund, state_now)),
            OperatorAction::RefundRetry { .. } => Ok(EventBody::RefundRetried { refund, cause }),
            OperatorAction::RefundReroute { asset, .. } => Ok(EventBody::RefundRerouted {
                refund,
                asset: parse_asset(asset)?,
                cause,
            }),
            OperatorAction::RefundWriteOff { to, .. } => Ok(EventBody::RefundWrittenOff {
                refund,
                to: *to,
                cause,
            }),
            OperatorAction::FloatAdd { .. }
            | OperatorAction::CreditGrant { .. }
            | OperatorAction::CreditAdjust { .. } => unreachable!("not a refund action"),
        }
    }
}

/// `credit_adjusted` for `customer` (npub or hex). A decrease may take no more than the
/// customer's credit holds: credit is the customer's money and never goes below zero.
fn credit_body(
    state: &LedgerState,
    customer: &str,
    direction: CreditDirection,
    msat: u64,
    cause: Cause,
) -> Result<EventBody, String> {
    let key = nostr_sdk::PublicKey::parse(customer.trim())
        .map_err(|_| format!("{customer:?} is not a public key (npub or 64 hex)"))?;
    let customer = Pubkey::new(key.to_hex()).map_err(|e| e.to_string())?;
    if msat == 0 {
        return Err("a credit change of 0 msat changes nothing".into());
    }
    let amount = Msat::from_msat(msat);
    let held = state.held(&Account::Credit(customer.clone()));
    if direction == CreditDirection::Decrease && held < amount {
        return Err(format!(
            "{customer} has {} msat of credit: taking {msat} msat would leave it below zero",
            held.as_msat()
        ));
    }
    Ok(EventBody::CreditAdjusted {
        customer,
        direction,
        amount,
        cause,
    })
}

fn resolution(refund: RefundId, paid: bool, fee_msat: u64, cause: Cause) -> EventBody {
    if paid {
        EventBody::RefundSettled {
            refund,
            fee: Msat::from_msat(fee_msat),
            fee_paid_by: FeePayer::Operator,
            evidence: Some(format!("operator: {}", cause.note())),
            cause: Some(cause),
        }
    } else {
        EventBody::RefundFailed {
            refund,
            reason: format!("operator: {}", cause.note()),
            cause: Some(cause),
        }
    }
}

fn not_waiting(refund: &RefundId, state: RefundState) -> String {
    match state {
        RefundState::InFlight | RefundState::Unknown => format!(
            "refund {refund} is {}: its payment may still complete, so it is never retried, \
             re-routed or written off; check the wallet, then `paydvm refund resolve`",
            state.as_str()
        ),
        _ => format!("refund {refund} is {}: nothing waits", state.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_lightning_or_a_mint_url() {
        assert_eq!(parse_asset("lightning"), Ok(Asset::Lightning));
        assert_eq!(
            parse_asset("mint:HTTPS://Mint.Example/"),
            Ok(Asset::Mint {
                url: "https://mint.example".into()
            })
        );
        assert!(parse_asset("mint:ftp://x").is_err());
        assert!(parse_asset("bitcoin").is_err());
    }

    #[test]
    fn requests_travel_as_json() {
        let r = OperatorRequest {
            id: "abc".into(),
            note: "customer asked".into(),
            action: OperatorAction::RefundWriteOff {
                refund: "j:fail".into(),
                to: WriteOffTo::Credit,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<OperatorRequest>(&json).unwrap(), r);
    }

    #[test]
    fn a_request_without_a_note_or_for_an_unknown_refund_is_refused() {
        let state = LedgerState::default();
        let mut r = OperatorRequest {
            id: "1".into(),
            note: " ".into(),
            action: OperatorAction::RefundRetry {
                refund: "nope".into(),
            },
        };
        assert!(r.event(&state, UnixMs(1)).unwrap_err().contains("--note"));
        r.note = "why".into();
        assert!(r
            .event(&state, UnixMs(1))
            .unwrap_err()
            .contains("no refund"));
    }
}
