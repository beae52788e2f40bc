//! BOLT 11 invoices as we read them: every network (`lnbc`, `lntb`, `lntbs`, `lnbcrt`), signature
//! checked, amount in msat, expiry honoured. Decoding is lightning-invoice's; the semantic checks
//! are ours (see [`Invoice::parse`]), because lightning-invoice also refuses invoices that
//! BOLT 11 lets a payee write (no `9` field at all, as LNbits' FakeWallet and other backends
//! issue). Every invoice we read comes from outside, so the text is bounded before it is decoded.

/// What an invoice's feature bits (`9`) mean to us, as payer or as payee.
pub mod features;

use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use lightning_invoice::{Currency, SignedRawBolt11Invoice, TaggedField};
use paydvm_ledger::Msat;

pub use self::features::Role;

/// Longest invoice text we decode. Real invoices with many route hints stay far below it.
pub const MAX_BOLT11_LEN: usize = 4096;

/// BOLT 11: an invoice without an `x` field expires this many seconds after its timestamp.
const DEFAULT_EXPIRY_SECS: u64 = 3600;

/// Why an invoice is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bolt11Error {
    #[error("invoice is {0} characters long; at most {MAX_BOLT11_LEN} are read")]
    TooLong(usize),
    /// Bech32, field, amount or signature problems.
    #[error("not a valid BOLT 11 invoice: {0}")]
    Invalid(String),
    /// Feature bits set as required (even) that a payer must understand and we do not know.
    #[error("the invoice requires feature bits a payer must know and we do not: {0:?}")]
    UnknownRequiredFeatures(Vec<u64>),
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

/// A decoded invoice whose fields and signature checked out.
#[derive(Debug, Clone)]
pub struct Invoice {
    text: String,
    inner: SignedRawBolt11Invoice,
    /// The `n` field, else the key recovered from the signature (compressed, hex).
    payee: String,
}

impl Invoice {
    /// Decodes `text` read as its payer would ([`Role::Payer`]): an invoice we may pay or
    /// hand on to be paid. See [`Invoice::parse_as`].
    pub fn parse(text: &str) -> Result<Invoice, Bolt11Error> {
        Invoice::parse_as(text, Role::Payer)
    }

    /// Decodes `text` (a `lightning:` prefix and surrounding whitespace are ignored; all upper or
    /// all lower case). Refused: a bad checksum, an unknown currency, not exactly one payment
    /// hash, payment secret (`s`) and description (`d` or `h`), a sub-msat amount, a signature
    /// that does not verify (high-S is refused when the payee `n` is given). The feature bits
    /// are judged by `role` (see [`features`]): a payer refuses unknown required bits, a payee
    /// (an invoice our own backend made for us) does not look at them.
    pub fn parse_as(text: &str, role: Role) -> Result<Invoice, Bolt11Error> {
        let text = text.trim();
        if text.len() > MAX_BOLT11_LEN {
            return Err(Bolt11Error::TooLong(text.len()));
        }
        let text = strip_scheme(text);
        let inner = SignedRawBolt11Invoice::from_str(text)
            .map_err(|e| Bolt11Error::Invalid(e.to_string()))?;
        check_field_counts(&inner)?;
        let payee = check_signature(&inner)?;
        let invoice = Invoice {
            text: text.to_owned(),
            inner,
            payee,
        };
        if let Some(pico) = invoice.inner.raw_invoice().amount_pico_btc() {
            if !pico.is_multiple_of(10) {
                return Err(Bolt11Error::Invalid(
                    "the amount is not a whole number of millisatoshis".into(),
                ));
            }
        }
        if let Some(msat) = invoice.amount().map(Msat::as_msat) {
            if msat > Msat::MAX_SUPPLY.as_msat() {
                return Err(Bolt11Error::AmountOutOfRange(msat));
            }
        }
        // Last, so that a feature refusal means everything else about the invoice is valid.
        let flags = invoice.inner.raw_invoice().features().map(|f| f.le_flags());
        features::check(flags, role)?;
        Ok(invoice)
    }

    /// Parses (as payer) and requires an amount and an invoice not expired at `now_secs`: the
    /// checks for an invoice we are about to pay.
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
        match self.inner.raw_invoice().currency() {
            Currency::Bitcoin => Network::Bitcoin,
            Currency::BitcoinTestnet => Network::Testnet,
            Currency::Signet => Network::Signet,
            Currency::Regtest => Network::Regtest,
            Currency::Simnet => Network::Simnet,
        }
    }

    /// `None` for an "any amount" invoice (or one too large to count, refused at parse).
    pub fn amount(&self) -> Option<Msat> {
        self.inner
            .raw_invoice()
            .amount_pico_btc()
            .map(|pico| Msat::from_msat(pico / 10))
    }

    /// Lower-case hex of the payment hash: the payment's reference everywhere in paydvm.
    pub fn payment_hash(&self) -> String {
        hex::encode(self.payment_hash_bytes())
    }

    pub fn payment_hash_bytes(&self) -> [u8; 32] {
        self.inner
            .raw_invoice()
            .payment_hash()
            .expect("exactly one payment hash, checked at parse")
            .0
            .to_byte_array()
    }

    pub fn description(&self) -> Description {
        let raw = self.inner.raw_invoice();
        match (raw.description(), raw.description_hash()) {
            (Some(d), _) => Description::Text(d.to_string()),
            (None, Some(h)) => Description::Hash(h.0.to_byte_array()),
            (None, None) => unreachable!("exactly one description, checked at parse"),
        }
    }

    /// The payee's node key (compressed, hex): the `n` field, else recovered from the signature.
    pub fn payee(&self) -> String {
        self.payee.clone()
    }

    /// Creation time, unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.inner.raw_invoice().data.timestamp.as_unix_timestamp()
    }

    /// Seconds after [`Invoice::timestamp`] the invoice stays payable (3600 when absent).
    pub fn expiry_secs(&self) -> u64 {
        self.inner
            .raw_invoice()
            .expiry_time()
            .map_or(DEFAULT_EXPIRY_SECS, |x| x.as_seconds())
    }

    /// Unix seconds at which the invoice expires (saturating).
    pub fn expires_at(&self) -> u64 {
        self.timestamp().saturating_add(self.expiry_secs())
    }

    pub fn is_expired_at(&self, now_secs: u64) -> bool {
        now_secs >= self.expires_at()
    }
}

/// BOLT 11: a writer includes exactly one `p`, exactly one `s`, and exactly one of `d` and `h`.
fn check_field_counts(invoice: &SignedRawBolt11Invoice) -> Result<(), Bolt11Error> {
    let (mut hashes, mut secrets, mut descriptions) = (0, 0, 0);
    for field in invoice.raw_invoice().known_tagged_fields() {
        match field {
            TaggedField::PaymentHash(_) => hashes += 1,
            TaggedField::PaymentSecret(_) => secrets += 1,
            TaggedField::Description(_) | TaggedField::DescriptionHash(_) => descriptions += 1,
            _ => {}
        }
    }
    let wrong = |what: &str, count: usize| {
        Err(Bolt11Error::Invalid(format!(
            "{count} {what} fields; exactly one is required"
        )))
    };
    match (hashes, secrets, descriptions) {
        (1, 1, 1) => Ok(()),
        (n, 1, 1) => wrong("payment hash (p)", n),
        (_, 1, n) => wrong("description (d or h)", n),
        (_, n, _) => wrong("payment secret (s)", n),
    }
}

/// With an `n` field the signature must verify against it (low-S); without, a key must be
/// recoverable from it. The payee's key, hex.
fn check_signature(invoice: &SignedRawBolt11Invoice) -> Result<String, Bolt11Error> {
    let bad = || Bolt11Error::Invalid("the signature does not verify".into());
    if !invoice.check_signature() {
        return Err(bad());
    }
    match invoice.raw_invoice().payee_pub_key() {
        Some(n) => Ok(n.0.to_string()),
        None => invoice
            .recover_payee_pub_key()
            .map(|key| key.0.to_string())
            .map_err(|_| bad()),
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
    use std::time::Duration;

    use bitcoin::hashes::sha256;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning_invoice::{InvoiceBuilder, PaymentSecret, RawTaggedField};

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
    fn every_invalid_vector_is_refused_by_payer_and_payee_but_the_feature_one() {
        let v = vectors();
        let invalid = v["invalid"].as_array().unwrap();
        assert_eq!(invalid.len(), 10);
        for case in invalid {
            let reason = case["reason"].as_str().unwrap();
            let text = case["invoice"].as_str().unwrap();
            let as_payer = Invoice::parse(text);
            let as_payee = Invoice::parse_as(text, Role::Payee);
            if reason.contains("unknown feature 100") {
                // A demand on its payer: refused by one, of no concern to its payee.
                assert_eq!(
                    as_payer.unwrap_err(),
                    Bolt11Error::UnknownRequiredFeatures(vec![100]),
                    "{reason}"
                );
                assert!(as_payee.is_ok(), "{reason}: {as_payee:?}");
                continue;
            }
            for result in [as_payer, as_payee] {
                assert!(
                    matches!(result, Err(Bolt11Error::Invalid(_))),
                    "{reason}: {result:?}"
                );
            }
        }
    }

    /// A regtest invoice for 21 sat signed after `edit` changed its fields (the builder's
    /// features: `var_onion_optin` and `payment_secret` required).
    fn crafted(edit: impl FnOnce(&mut Vec<RawTaggedField>)) -> String {
        let key = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let mut raw = InvoiceBuilder::new(Currency::Regtest)
            .description("paydvm job x".into())
            .payment_hash(sha256::Hash::from_byte_array([7; 32]))
            .payment_secret(PaymentSecret([9; 32]))
            .duration_since_epoch(Duration::from_secs(1_700_000_000))
            .min_final_cltv_expiry_delta(18)
            .amount_milli_satoshis(21_000)
            .build_raw()
            .unwrap();
        edit(&mut raw.data.tagged_fields);
        let secp = Secp256k1::new();
        raw.sign::<_, ()>(|msg| Ok(secp.sign_ecdsa_recoverable(msg, &key)))
            .unwrap()
            .to_string()
    }

    fn is_features(field: &RawTaggedField) -> bool {
        matches!(
            field,
            RawTaggedField::KnownSemantics(TaggedField::Features(_))
        )
    }

    #[test]
    fn an_invoice_without_a_features_field_is_read_like_any_other() {
        // What LNbits' FakeWallet issues: `s` but no `9`. BOLT 9 assumes `payment_secret` and
        // `var_onion_optin`, so the field may be left out; lightning-invoice still refuses it.
        let text = crafted(|fields| fields.retain(|f| !is_features(f)));
        let lightning_invoice = text.parse::<lightning_invoice::Bolt11Invoice>();
        assert!(
            lightning_invoice
                .as_ref()
                .is_err_and(|e| e.to_string().contains("features are invalid")),
            "{lightning_invoice:?}"
        );
        for role in [Role::Payer, Role::Payee] {
            let invoice = Invoice::parse_as(&text, role).unwrap();
            assert_eq!(invoice.amount(), Some(Msat::from_msat(21_000)));
            assert_eq!(invoice.payment_hash(), "07".repeat(32));
            assert_eq!(
                invoice.description(),
                Description::Text("paydvm job x".into())
            );
            assert_eq!(invoice.network(), Network::Regtest);
            assert_eq!(invoice.expires_at(), 1_700_000_000 + 3600);
            let key = SecretKey::from_slice(&[0x11; 32]).unwrap();
            assert_eq!(
                invoice.payee(),
                key.public_key(&Secp256k1::new()).to_string()
            );
        }
        assert!(Invoice::parse_payable(&text, 1_700_000_000).is_ok());
    }

    #[test]
    fn unknown_required_bits_stop_a_payer_only_and_odd_ones_nobody() {
        let with_bit = |bit: usize| {
            crafted(|fields| {
                for field in fields.iter_mut() {
                    if let RawTaggedField::KnownSemantics(TaggedField::Features(f)) = field {
                        let set = if bit.is_multiple_of(2) {
                            f.set_required_feature_bit(bit)
                        } else {
                            f.set_optional_feature_bit(bit)
                        };
                        set.unwrap();
                    }
                }
            })
        };
        let required = with_bit(102);
        assert_eq!(
            Invoice::parse(&required).unwrap_err(),
            Bolt11Error::UnknownRequiredFeatures(vec![102])
        );
        assert!(Invoice::parse_payable(&required, 1_700_000_000).is_err());
        assert!(Invoice::parse_as(&required, Role::Payee).is_ok());
        let optional = with_bit(103);
        assert!(Invoice::parse(&optional).is_ok());
        // A known required bit (basic_mpp) is fine for a payer.
        assert!(Invoice::parse(&with_bit(16)).is_ok());
    }

    #[test]
    fn field_counts_are_checked_for_both_roles() {
        let no_secret = crafted(|fields| {
            fields.retain(|f| {
                !matches!(
                    f,
                    RawTaggedField::KnownSemantics(TaggedField::PaymentSecret(_))
                )
            })
        });
        let two_hashes = crafted(|fields| {
            let hash = sha256::Hash::from_byte_array([8; 32]);
            fields.push(RawTaggedField::KnownSemantics(TaggedField::PaymentHash(
                lightning_invoice::Sha256(hash),
            )));
        });
        for role in [Role::Payer, Role::Payee] {
            for text in [&no_secret, &two_hashes] {
                let result = Invoice::parse_as(text, role);
                assert!(matches!(result, Err(Bolt11Error::Invalid(_))), "{result:?}");
            }
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
