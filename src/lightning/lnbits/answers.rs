//! What LNbits (1.6) answers on its REST API, and what paydvm makes of it. Pure functions, so
//! the tri-state mapping is tested without a server.
//!
//! `GET /api/v1/payments/{hash}` with a key of the wallet that owns the payment answers
//! `{"paid", "status", "preimage", "details": <payment row>}`; the row's `amount` and `fee` are
//! msat, `amount` positive for an invoice of ours and negative for a payment we made, `fee`
//! negative for a payment we made. `status` is `success`, `pending` or `failed`; LNbits marks an
//! expired invoice `failed` and labels it `expired`. Errors come as `{"detail": ..}`, payment
//! errors as HTTP 520 `{"detail": .., "status": "failed" | "pending" | "success"}`.
//!
//! A hash with no row answers 404 `{"detail": "Payment does not exist."}`. With a valid key
//! LNbits searches only that wallet's rows (another wallet's invoice with the hash is not seen);
//! with an unknown key it searches every wallet and shows no `details`.

use bitcoin::hashes::{sha256, Hash};
use paydvm_ledger::Msat;
use serde::Deserialize;

use crate::lightning::{InvoiceStatus, PaymentStatus};

/// One row of LNbits' payments table as the API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentRow {
    /// LNbits' own unique id of the row (absent in older answers).
    #[serde(default)]
    pub checking_id: Option<String>,
    pub payment_hash: String,
    /// Msat; positive = incoming (an invoice of ours), negative = outgoing.
    pub amount: i64,
    /// Msat; negative for an outgoing payment.
    #[serde(default)]
    pub fee: i64,
    pub status: String,
    #[serde(default)]
    pub preimage: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// `GET /api/v1/payments/{hash}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Lookup {
    pub paid: bool,
    #[serde(default)]
    pub preimage: Option<String>,
    /// Only present when the key belongs to the wallet that owns the payment.
    #[serde(default)]
    pub details: Option<PaymentRow>,
}

/// `GET /api/v1/wallet`.
#[derive(Debug, Clone, Deserialize)]
pub struct WalletInfo {
    /// Msat.
    pub balance: i64,
}

/// An error body: `detail` is a string (or a list for validation errors); payment errors add
/// `status`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
    #[serde(default)]
    pub status: Option<String>,
}

/// Longest piece of an LNbits message repeated in our errors and logs.
const MAX_DETAIL: usize = 200;

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or(ErrorBody {
            detail: None,
            status: None,
        })
    }

    pub fn detail(&self) -> String {
        let text = match &self.detail {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "no detail".to_owned(),
        };
        text.chars().take(MAX_DETAIL).collect()
    }
}

/// LNbits' own words for "no row with this hash" (`GET /api/v1/payments/{hash}`, 404).
const NO_SUCH_PAYMENT: &str = "Payment does not exist.";

impl ErrorBody {
    /// True only for LNbits' own 404 body: a 404 from anything else in front of it (a proxy, a
    /// wrong path prefix) is not an answer about the payment.
    pub fn says_no_such_payment(&self) -> bool {
        matches!(&self.detail, Some(serde_json::Value::String(d)) if d == NO_SUCH_PAYMENT)
    }
}

pub const SUCCESS: &str = "success";
pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";

pub fn is_payment_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn preimage_matches(preimage: &str, payment_hash: &str) -> bool {
    let Ok(bytes) = hex::decode(preimage) else {
        return false;
    };
    bytes.len() == 32 && sha256::Hash::hash(&bytes).to_string() == payment_hash.to_ascii_lowercase()
}

/// An invoice of ours, looked up by `hash`. `now` (unix seconds) stands for the settlement time:
/// the API gives it only as a local date string.
pub fn invoice_status(hash: &str, found: Lookup, now: u64) -> InvoiceStatus {
    let Some(row) = found.details else {
        return InvoiceStatus::Unknown("LNbits gave no details: not this wallet's invoice".into());
    };
    if !row.payment_hash.eq_ignore_ascii_case(hash) {
        return InvoiceStatus::Unknown("LNbits answered about another invoice".into());
    }
    let Ok(amount) = u64::try_from(row.amount) else {
        return InvoiceStatus::Unknown("LNbits holds an outgoing payment under this hash".into());
    };
    match row.status.as_str() {
        SUCCESS if found.paid && amount > 0 => {
            // LNbits releases the preimage of a paid invoice: where it does, it must fit.
            match found.preimage.as_deref().or(row.preimage.as_deref()) {
                Some(preimage) if !preimage_matches(preimage, hash) => InvoiceStatus::Unknown(
                    "LNbits says paid but the preimage does not match".into(),
                ),
                _ => InvoiceStatus::Settled {
                    amount: Msat::from_msat(amount),
                    settled_at: now,
                },
            }
        }
        PENDING if !found.paid => InvoiceStatus::Open,
        FAILED if row.labels.iter().any(|l| l == "expired") => InvoiceStatus::Expired,
        FAILED => InvoiceStatus::Unknown("LNbits marked the invoice failed".into()),
        other => InvoiceStatus::Unknown(format!(
            "unexpected answer: paid = {}, status = {:.20}",
            found.paid, other
        )),
    }
}

/// A payment we made, as LNbits' row for it says (from a lookup or from the pay call itself).
/// `preimage` is the lookup's top-level one, if any.
pub fn payment_status(hash: &str, row: &PaymentRow, preimage: Option<&str>) -> PaymentStatus {
    if !row.payment_hash.eq_ignore_ascii_case(hash) {
        return PaymentStatus::Unknown("LNbits answered about another payment".into());
    }
    if row.amount >= 0 {
        return PaymentStatus::Unknown("LNbits holds an invoice of ours under this hash".into());
    }
    match row.status.as_str() {
        SUCCESS => match preimage.or(row.preimage.as_deref()) {
            Some(p) if preimage_matches(p, hash) => PaymentStatus::Settled {
                preimage: p.to_ascii_lowercase(),
                fee: Msat::from_msat(row.fee.unsigned_abs()),
            },
            _ => PaymentStatus::Unknown("LNbits says paid but gave no matching preimage".into()),
        },
        FAILED => PaymentStatus::Failed("LNbits says the payment failed".into()),
        PENDING => PaymentStatus::Unknown("LNbits says the payment is pending".into()),
        other => PaymentStatus::Unknown(format!("unexpected payment status {other:.20}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let preimage = [7u8; 32];
        (
            hex::encode(preimage),
            sha256::Hash::hash(&preimage).to_string(),
        )
    }

    fn row(hash: &str, amount: i64, status: &str) -> PaymentRow {
        PaymentRow {
            checking_id: None,
            payment_hash: hash.to_owned(),
            amount,
            fee: 0,
            status: status.to_owned(),
            preimage: None,
            labels: Vec::new(),
        }
    }

    fn lookup(paid: bool, preimage: Option<&str>, details: Option<PaymentRow>) -> Lookup {
        Lookup {
            paid,
            preimage: preimage.map(str::to_owned),
            details,
        }
    }

    #[test]
    fn real_lnbits_answers_parse() {
        let body = br#"{"paid":true,"preimage":"19","details":{"checking_id":"x",
            "payment_hash":"8ca0","wallet_id":"w","amount":21000,"fee":0,"bolt11":"lnbc",
            "status":"success","memo":"job x","expiry":"2026-12-01T05:41:56+00:00",
            "preimage":"19","time":"2026-12-01T05:31:56.535364+00:00","labels":[],"extra":{}}}"#;
        let found: Lookup = serde_json::from_slice(body).unwrap();
        assert!(found.paid);
        assert_eq!(found.details.unwrap().amount, 21_000);
        let err =
            ErrorBody::parse(br#"{"detail":"Internal invoice already paid.","status":"failed"}"#);
        assert_eq!(err.status.as_deref(), Some("failed"));
        assert_eq!(err.detail(), "Internal invoice already paid.");
        assert_eq!(ErrorBody::parse(b"<html>").detail(), "no detail");
        // The 404 LNbits 1.6.2 sends for a hash it has no row for, and lookalikes that are not.
        assert!(ErrorBody::parse(br#"{"detail":"Payment does not exist."}"#).says_no_such_payment());
        for other in [
            &br#"{"detail":"Not Found"}"#[..],
            br#"{"detail":"Payment does not exist. "}"#,
            br#"{"detail":["Payment does not exist."]}"#,
            b"<html>404</html>",
            b"",
        ] {
            assert!(!ErrorBody::parse(other).says_no_such_payment());
        }
    }

    #[test]
    fn invoice_lookups_map_to_tri_state_statuses() {
        let (preimage, hash) = pair();
        let paid = lookup(true, Some(&preimage), Some(row(&hash, 5_000, SUCCESS)));
        assert_eq!(
            invoice_status(&hash, paid, 99),
            InvoiceStatus::Settled {
                amount: Msat::from_msat(5_000),
                settled_at: 99
            }
        );
        let open = lookup(false, None, Some(row(&hash, 5_000, PENDING)));
        assert_eq!(invoice_status(&hash, open, 99), InvoiceStatus::Open);
        let mut expired = row(&hash, 5_000, FAILED);
        expired.labels.push("expired".into());
        assert_eq!(
            invoice_status(&hash, lookup(false, None, Some(expired)), 99),
            InvoiceStatus::Expired
        );
        for unknown in [
            // A preimage that does not hash to the invoice's hash.
            lookup(
                true,
                Some(&"00".repeat(32)),
                Some(row(&hash, 5_000, SUCCESS)),
            ),
            // Not our wallet's invoice: no details.
            lookup(true, Some(&preimage), None),
            // Our own outgoing payment under the same hash.
            lookup(true, Some(&preimage), Some(row(&hash, -5_000, SUCCESS))),
            // About another hash.
            lookup(true, None, Some(row(&"ab".repeat(32), 5_000, SUCCESS))),
            // paid and status disagree.
            lookup(false, None, Some(row(&hash, 5_000, SUCCESS))),
            lookup(false, None, Some(row(&hash, 5_000, FAILED))),
            lookup(false, None, Some(row(&hash, 5_000, "weird"))),
        ] {
            assert!(matches!(
                invoice_status(&hash, unknown, 99),
                InvoiceStatus::Unknown(_)
            ));
        }
    }

    #[test]
    fn only_an_explicit_failure_fails_a_payment_and_preimages_are_checked() {
        let (preimage, hash) = pair();
        let mut paid = row(&hash, -5_000, SUCCESS);
        paid.fee = -1_000;
        assert_eq!(
            payment_status(&hash, &paid, Some(&preimage.to_ascii_uppercase())),
            PaymentStatus::Settled {
                preimage: preimage.clone(),
                fee: Msat::from_msat(1_000)
            }
        );
        assert!(matches!(
            payment_status(&hash, &paid, None),
            PaymentStatus::Unknown(_)
        ));
        assert!(matches!(
            payment_status(&hash, &paid, Some(&"00".repeat(32))),
            PaymentStatus::Unknown(_)
        ));
        assert!(matches!(
            payment_status(&hash, &row(&hash, -5_000, FAILED), None),
            PaymentStatus::Failed(_)
        ));
        for unknown in [
            row(&hash, -5_000, PENDING),
            row(&hash, -5_000, "weird"),
            row(&hash, 5_000, FAILED),
            row(&"ab".repeat(32), -5_000, FAILED),
        ] {
            assert!(matches!(
                payment_status(&hash, &unknown, Some(&preimage)),
                PaymentStatus::Unknown(_)
            ));
        }
    }

    #[test]
    fn hashes_and_preimages_are_checked_for_shape() {
        let (preimage, hash) = pair();
        assert!(is_payment_hash(&hash));
        assert!(!is_payment_hash("../wallet"));
        assert!(!is_payment_hash(&hash[1..]));
        assert!(preimage_matches(&preimage, &hash.to_ascii_uppercase()));
        assert!(!preimage_matches("zz", &hash));
        assert!(!preimage_matches("", &sha256::Hash::hash(b"").to_string()));
    }
}
