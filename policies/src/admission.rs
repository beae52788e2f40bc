//! Whether a job request is taken at all, and whether it must be paid for.

use std::collections::BTreeSet;
use std::fmt;

use crate::check::Check;
use crate::error::PolicyError;
use crate::pricing::{PriceMode, Pricing};
use crate::raw::RawAdmission;

pub const DEFAULT_MAX_INPUT_BYTES: u64 = 65_536;
pub const DEFAULT_MAX_PENDING_QUOTES: u32 = 5;

/// Facts about one incoming job request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionFacts<'a> {
    /// Hex x-only pubkey of the requester (compared case-insensitively).
    pub customer_pubkey: &'a str,
    pub kind: u16,
    pub input_bytes: u64,
    /// Unpaid, unexpired quotes this pubkey already holds.
    pub pending_quotes: u32,
}

/// Why a request was turned away; `Display` is written for the customer (NIP-90 feedback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Blocked,
    KindNotOffered { kind: u16 },
    InputTooLarge { bytes: u64, max: u64 },
    TooManyPendingQuotes { pending: u32, max: u32 },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Blocked => write!(f, "this service does not accept requests from you"),
            RejectReason::KindNotOffered { kind } => {
                write!(f, "job kind {kind} is not offered by this service")
            }
            RejectReason::InputTooLarge { bytes, max } => {
                write!(f, "input is {bytes} bytes; the limit is {max} bytes")
            }
            RejectReason::TooManyPendingQuotes { pending, max } => write!(
                f,
                "you have {pending} unpaid quotes (limit {max}); pay one or wait for it to expire"
            ),
        }
    }
}

/// The admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Reject(RejectReason),
    /// On the free list: run without payment.
    FreeListed,
    /// Admitted; price it (`Policy::price`), which may still say free.
    Priced,
}

/// The validated `[admission]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionRules {
    pub free_list: BTreeSet<String>,
    pub block_list: BTreeSet<String>,
    pub max_input_bytes: u64,
    pub max_pending_quotes_per_pubkey: u32,
}

impl Default for AdmissionRules {
    fn default() -> Self {
        AdmissionRules {
            free_list: BTreeSet::new(),
            block_list: BTreeSet::new(),
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            max_pending_quotes_per_pubkey: DEFAULT_MAX_PENDING_QUOTES,
        }
    }
}

impl AdmissionRules {
    /// Checks in order: block list (wins over the free list), kind offered, input size,
    /// free list, pending-quote limit. The quote limit skips `mode = "free"` kinds, which
    /// issue no quote.
    pub fn admit(&self, facts: &AdmissionFacts<'_>, pricing: &Pricing) -> Admission {
        let customer = facts.customer_pubkey.to_ascii_lowercase();
        if self.block_list.contains(&customer) {
            return Admission::Reject(RejectReason::Blocked);
        }
        let Some(mode) = pricing.mode(facts.kind) else {
            return Admission::Reject(RejectReason::KindNotOffered { kind: facts.kind });
        };
        if facts.input_bytes > self.max_input_bytes {
            return Admission::Reject(RejectReason::InputTooLarge {
                bytes: facts.input_bytes,
                max: self.max_input_bytes,
            });
        }
        if self.free_list.contains(&customer) {
            return Admission::FreeListed;
        }
        let quotes_needed = !matches!(mode, PriceMode::Free);
        if quotes_needed && facts.pending_quotes >= self.max_pending_quotes_per_pubkey {
            return Admission::Reject(RejectReason::TooManyPendingQuotes {
                pending: facts.pending_quotes,
                max: self.max_pending_quotes_per_pubkey,
            });
        }
        Admission::Priced
    }

    pub(crate) fn from_raw(raw: RawAdmission, check: Check<'_>) -> Result<Self, PolicyError> {
        let free_list = pubkey_set(
            check,
            "admission.free_list",
            raw.free_list,
            &BTreeSet::new(),
        )?;
        let block_list = pubkey_set(check, "admission.block_list", raw.block_list, &free_list)?;
        let defaults = AdmissionRules::default();
        let max_input_bytes = match raw.max_input_bytes {
            Some(v) => positive(check, "admission.max_input_bytes", v, i64::MAX)?,
            None => defaults.max_input_bytes,
        };
        let max_pending_quotes_per_pubkey = match raw.max_pending_quotes_per_pubkey {
            Some(v) => {
                let v = positive(
                    check,
                    "admission.max_pending_quotes_per_pubkey",
                    v,
                    u32::MAX.into(),
                )?;
                u32::try_from(v).unwrap_or(u32::MAX)
            }
            None => defaults.max_pending_quotes_per_pubkey,
        };
        Ok(AdmissionRules {
            free_list,
            block_list,
            max_input_bytes,
            max_pending_quotes_per_pubkey,
        })
    }
}

fn positive(check: Check<'_>, field: &str, value: i64, max: i64) -> Result<u64, PolicyError> {
    let v = check.int_in(field, value, 1, max)?;
    Ok(v.unsigned_abs())
}

fn pubkey_set(
    check: Check<'_>,
    field: &str,
    keys: Vec<String>,
    must_not_overlap_free_list: &BTreeSet<String>,
) -> Result<BTreeSet<String>, PolicyError> {
    let mut set = BTreeSet::new();
    for (i, key) in keys.into_iter().enumerate() {
        let path = format!("{field}[{i}]");
        if !is_pubkey_hex(&key) {
            return Err(check.invalid(
                &path,
                format!("{key:?} is not a 64-character lowercase hex x-only pubkey (npub is not accepted here)"),
            ));
        }
        if must_not_overlap_free_list.contains(&key) {
            return Err(check.invalid(
                &path,
                format!("pubkey {key} is in both admission.free_list and admission.block_list"),
            ));
        }
        if !set.insert(key.clone()) {
            return Err(check.invalid(&path, format!("pubkey {key} is listed twice")));
        }
    }
    Ok(set)
}

/// 64 lowercase hex characters: a Nostr x-only public key as used in events.
pub fn is_pubkey_hex(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const ALICE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const BOB: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    const CAROL: &str = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";

    fn policy() -> Policy {
        let toml = format!(
            r#"
            [[pricing.kind]]
            kind = 5050
            mode = "fixed"
            amount_msat = 1000
            [[pricing.kind]]
            kind = 5001
            mode = "free"
            [admission]
            free_list = ["{ALICE}"]
            block_list = ["{BOB}"]
            max_input_bytes = 100
            max_pending_quotes_per_pubkey = 2
            "#
        );
        Policy::from_toml_str(&toml, "admission-test.toml").unwrap()
    }

    fn facts(pubkey: &str, kind: u16, input_bytes: u64, pending_quotes: u32) -> AdmissionFacts<'_> {
        AdmissionFacts {
            customer_pubkey: pubkey,
            kind,
            input_bytes,
            pending_quotes,
        }
    }

    #[test]
    fn ordinary_customer_is_priced() {
        assert_eq!(
            policy().admit(&facts(CAROL, 5050, 100, 1)),
            Admission::Priced
        );
    }

    #[test]
    fn blocked_customer_is_rejected() {
        assert_eq!(
            policy().admit(&facts(BOB, 5050, 1, 0)),
            Admission::Reject(RejectReason::Blocked)
        );
        let upper = BOB.to_ascii_uppercase();
        assert_eq!(
            policy().admit(&facts(&upper, 5050, 1, 0)),
            Admission::Reject(RejectReason::Blocked)
        );
    }

    #[test]
    fn free_listed_customer_skips_payment_and_quote_limit() {
        assert_eq!(
            policy().admit(&facts(ALICE, 5050, 1, 99)),
            Admission::FreeListed
        );
    }

    #[test]
    fn size_and_offer_limits_apply_to_everyone() {
        assert_eq!(
            policy().admit(&facts(ALICE, 5050, 101, 0)),
            Admission::Reject(RejectReason::InputTooLarge {
                bytes: 101,
                max: 100
            })
        );
        assert_eq!(
            policy().admit(&facts(ALICE, 5999, 1, 0)),
            Admission::Reject(RejectReason::KindNotOffered { kind: 5999 })
        );
    }

    #[test]
    fn pending_quote_limit() {
        assert_eq!(
            policy().admit(&facts(CAROL, 5050, 1, 2)),
            Admission::Reject(RejectReason::TooManyPendingQuotes { pending: 2, max: 2 })
        );
        assert_eq!(policy().admit(&facts(CAROL, 5001, 1, 2)), Admission::Priced);
    }

    #[test]
    fn reject_reasons_read_well() {
        assert_eq!(
            RejectReason::InputTooLarge {
                bytes: 101,
                max: 100
            }
            .to_string(),
            "input is 101 bytes; the limit is 100 bytes"
        );
        assert_eq!(
            RejectReason::KindNotOffered { kind: 5999 }.to_string(),
            "job kind 5999 is not offered by this service"
        );
    }

    #[test]
    fn pubkey_format() {
        assert!(is_pubkey_hex(ALICE));
        assert!(!is_pubkey_hex(&ALICE.to_ascii_uppercase()));
        assert!(!is_pubkey_hex(&ALICE[1..]));
        assert!(!is_pubkey_hex(&format!("{}g", &ALICE[1..])));
    }
}
