//! BOLT 11 invoices as we read them: every network (`lnbc`, `lntb`, `lntbs`, `lnbcrt`), signature
//! checked, amount in msat, expiry honoured. Parsing is lightning-invoice's; this module decides
//! what a paydvm caller may rely on. Every invoice we read comes from outside, so the text is
//! bounded before it is decoded.

use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef, Currency};
use paydvm_ledger::Msat;

/// Longest invoice text we decode. Real invoices with many route hints stay far below it.
pub const MAX_BOLT11_LEN: usize = 4096;

/// Why an invoice is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bolt11Error {
    #[error("invoice is {0} characters long; at most {MAX_BOLT11_LEN} are read")]
    TooLong(usize),
    /// Bech32, field, feature-bit, amount or signature problems (lightning-invoice's reason).
    #[error("not a valid BOLT 11 invoice: {0}")]
    Invalid(String),
    #[error("invoice has no amount; an amount is required here")]
    NoAmount,
    #[error("invoice amount {0} msat is out of range")]
    AmountOutOfRange(u64),
    #[error("invoice expired at {expires_at} (unix seconds)")]
    Expired { expires_at: u64 },
}

/// The network an invoice is for, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Bitcoin,
    Testnet,
    Signet,
    Regtest,
    Simnet,
}

impl Network {
    /// The human-readable prefix (`lnbc`, `lntb`, `lntbs`, `lnbcrt`, `lnsb`).
    pub fn prefix(self) -> &'static str {
        match self {
            Network::Bitcoin => "lnbc",
            Network::Testnet => "lntb",
            Network::Signet => "lntbs",
            Network::Regtest => "lnbcrt",
            Network::Simnet => "lnsb",
        }
    }
}

/// What the invoice says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Description {
    Text(String),
    /// SHA-256 of a description given out of band (LNURL metadata, a zap request).
    Hash([u8; 32]),
}

/// A decoded invoice whose signature checked out.
#[derive(Debug, Clone)]
pub struct Invoice {
    text: String,
    inner: Bolt11Invoice,
}

impl Invoice {
    /// Decodes `text` (a `lightning:` prefix and surrounding whitespace are ignored; all upper or
    /// all lower case). Refuses anything lightning-invoice refuses, which includes a bad checksum,
    /// unknown currency, a missing payment secret, unknown even feature bits, sub-msat amounts
    /// and a signature that does not verify (high-S is refused when the payee is given).
    pub fn parse(text: &str) -> Result<Invoice, Bolt11Error> {
        let text = text.trim();
        if text.len() > MAX_BOLT11_LEN {
            return Err(Bolt11Error::TooLong(text.len()));
        }
        let text = strip_scheme(text);
        let inner =
            Bolt11Invoice::from_str(text).map_err(|e| Bolt11Error::Invalid(e.to_string()))?;
        if let Some(msat) = inner.amount_milli_satoshis() {
            if msat > Msat::MAX_SUPPLY.as_msat() {
                return Err(Bolt11Error::AmountOutOfRange(msat));
            }
        }
        Ok(Invoice {
            text: text.to_owned(),
            inner,
        })
    }

    /// Parses and requires an amount and an invoice not expired at `now_secs`: the checks for an
    /// invoice we are about to pay or accept as proof.
    pub fn parse_payable(text: &str, now_secs: u64) -> Result<(Invoice, Msat), Bolt11Error> {
        let invoice = Invoice::parse(text)?;
        let amount = invoice.amount().ok_or(Bolt11Error::NoAmount)?;
        if invoice.is_expired_at(now_secs) {
            return Err(Bolt11Error::Expired {
                expires_at: invoice.expires_at(),
            });
        }
        Ok((invoice, amount))
    }

    /// The invoice text as given (without a `lightning:` prefix).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn network(&self) -> Network {
        match self.inner.currency() {
            Currency::Bitcoin => Network::Bitcoin,
            Currency::BitcoinTestnet => Network::Testnet,
            Currency::Signet => Network::Signet,
            Currency::Regtest => Network::Regtest,
            Currency::Simnet => Network::Simnet,
        }
    }

    /// `None` for an "any amount" invoice.
    pub fn amount(&self) -> Option<Msat> {
        self.inner.amount_milli_satoshis().map(Msat::from_msat)
    }

    /// Lower-case hex of the payment hash: the payment's reference everywhere in paydvm.
    pub fn payment_hash(&self) -> String {
        self.inner.payment_hash().to_string()
    }

    pub fn payment_hash_bytes(&self) -> [u8; 32] {
        self.inner.payment_hash().to_byte_array()
    }

    pub fn description(&self) -> Description {
        match self.inner.description() {
            Bolt11InvoiceDescriptionRef::Direct(d) => Description::Text(d.to_string()),
            Bolt11InvoiceDescriptionRef::Hash(h) => Description::Hash(h.0.to_byte_array()),
        }
    }

    /// The payee's node key (compressed, hex): the `n` field, else recovered from the signature.
    pub fn payee(&self) -> String {
        self.inner.get_payee_pub_key().to_string()
    }

    /// Creation time, unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.inner.duration_since_epoch().as_secs()
    }

    /// Seconds after [`Invoice::timestamp`] the invoice stays payable (3600 when absent).
    pub fn expiry_secs(&self) -> u64 {
        self.inner.expiry_time().as_secs()
    }

    /// Unix seconds at which the invoice expires (saturating).
    pub fn expires_at(&self) -> u64 {
        self.timestamp().saturating_add(self.expiry_secs())
    }

    pub fn is_expired_at(&self, now_secs: u64) -> bool {
        now_secs >= self.expires_at()
    }
}

fn strip_scheme(text: &str) -> &str {
    const SCHEME: &str = "lightning:";
    match text.get(..SCHEME.len()) {
        Some(head) if head.eq_ignore_ascii_case(SCHEME) => &text[SCHEME.len()..],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from the BOLT 11 spec examples (lightning/bolts, see the file's `_source`).
    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/bolt11.vectors.json"
    ));
    // The newest vector's timestamp + expiry is in 2019; any "now" after that sees it expired.
    const LONG_AGO: u64 = 1_496_314_658;

    fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).expect("vector JSON")
    }

    fn network_of(prefix: &str) -> Network {
        match prefix {
            "lnbc" => Network::Bitcoin,
            "lntb" => Network::Testnet,
            "lntbs" => Network::Signet,
            "lnbcrt" => Network::Regtest,
            other => panic!("unexpected prefix {other}"),
        }
    }

    #[test]
    fn every_valid_vector_parses_to_its_labelled_values() {
        let v = vectors();
        let valid = v["valid"].as_array().unwrap();
        assert_eq!(valid.len(), 15);
        for case in valid {
            let title = case["title"].as_str().unwrap();
            let inv = Invoice::parse(case["invoice"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{title}: {e}"));
            assert_eq!(
                inv.network(),
                network_of(case["network_prefix"].as_str().unwrap()),
                "{title}"
            );
            assert_eq!(
                inv.amount().map(Msat::as_msat),
                case["amount_msat"].as_u64(),
                "{title}"
            );
            assert_eq!(
                inv.timestamp(),
                case["timestamp"].as_u64().unwrap(),
                "{title}"
            );
            assert_eq!(
                inv.payment_hash(),
                case["payment_hash"].as_str().unwrap(),
                "{title}"
            );
            assert_eq!(
                inv.expiry_secs(),
                case["expiry"].as_u64().unwrap(),
                "{title}"
            );
            assert_eq!(
                inv.payee(),
                case["recovered_payee_pubkey"].as_str().unwrap(),
                "{title}"
            );
            match (
                case["description"].as_str(),
                case["description_hash"].as_str(),
            ) {
                (Some(text), None) => {
                    assert_eq!(inv.description(), Description::Text(text.into()), "{title}")
                }
                (None, Some(hash)) => {
                    let mut bytes = [0u8; 32];
                    bytes.copy_from_slice(&hex_decode(hash));
                    assert_eq!(inv.description(), Description::Hash(bytes), "{title}")
                }
                other => panic!("{title}: vector has {other:?}"),
            }
            assert!(inv.is_expired_at(inv.expires_at()), "{title}");
            assert!(!inv.is_expired_at(inv.expires_at() - 1), "{title}");
        }
    }

    #[test]
    fn every_invalid_vector_is_refused() {
        let v = vectors();
        let invalid = v["invalid"].as_array().unwrap();
        assert_eq!(invalid.len(), 10);
        for case in invalid {
            let reason = case["reason"].as_str().unwrap();
            let result = Invoice::parse(case["invoice"].as_str().unwrap());
            assert!(
                matches!(result, Err(Bolt11Error::Invalid(_))),
                "{reason}: {result:?}"
            );
        }
    }

    #[test]
    fn payable_requires_an_amount_and_an_unexpired_invoice() {
        let v = vectors();
        let valid = v["valid"].as_array().unwrap();
        let no_amount = valid[0]["invoice"].as_str().unwrap();
        assert_eq!(
            Invoice::parse_payable(no_amount, LONG_AGO).unwrap_err(),
            Bolt11Error::NoAmount
        );
        let coffee = valid[1]["invoice"].as_str().unwrap();
        let (inv, amount) = Invoice::parse_payable(coffee, LONG_AGO).unwrap();
        assert_eq!(amount, Msat::from_msat(250_000_000));
        assert_eq!(
            Invoice::parse_payable(coffee, inv.expires_at()).unwrap_err(),
            Bolt11Error::Expired {
                expires_at: LONG_AGO + 60
            }
        );
    }

    #[test]
    fn scheme_and_upper_case_are_accepted_but_oversized_text_is_not() {
        let v = vectors();
        let coffee = v["valid"][1]["invoice"].as_str().unwrap();
        let upper = format!("LIGHTNING:{}", coffee.to_uppercase());
        let inv = Invoice::parse(&upper).unwrap();
        assert_eq!(inv.amount(), Some(Msat::from_msat(250_000_000)));
        let long = "l".repeat(MAX_BOLT11_LEN + 1);
        assert_eq!(
            Invoice::parse(&long).unwrap_err(),
            Bolt11Error::TooLong(MAX_BOLT11_LEN + 1)
        );
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
