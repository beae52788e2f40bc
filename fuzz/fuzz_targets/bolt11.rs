//! BOLT 11 invoices through `Invoice::parse`, `parse_payable`, `check_refund_invoice`,
//! `never_sent` and the `refund` tag's `RefundAddress` parsing.
//!
//! Input: byte 0 picks the mode.
//! - `0`: the rest is the text as given (any bytes, lossy UTF-8).
//! - `1`: a human-readable part from a pool (every network, amounts with every multiplier) and
//!   the rest as 5-bit words, with a valid bech32 checksum.
//! - `2`: a spec vector's 5-bit data changed in up to 4 places (set, insert, delete, truncate)
//!   and given a valid checksum again: lightning-invoice's field and signature parsing, not the
//!   checksum, is what gets fuzzed (without an `n` field any signature recovers some payee).
//! - `3`: a regtest invoice we sign, with an amount, creation time and expiry chosen by the
//!   fuzzer (edges included), so the accepting paths have an exact oracle.
//!
//! Asserts: no panic; a parsed invoice has an amount within the bitcoin supply, parses again from
//! `as_str()`, in upper case and behind `lightning:` to the same fields, and expires at or after
//! its timestamp; `parse_payable` accepts exactly when there is an amount and it has not expired;
//! `check_refund_invoice` accepts exactly an invoice for the owed amount that stays payable for
//! the margin (and its amount is then the owed one); `never_sent` pays again exactly then; a
//! `refund` tag value is an invoice exactly when `Invoice::parse` takes it, and round-trips. For
//! our own invoices: the amount, payment hash, description hash, timestamp and expiry read back
//! as written.
#![no_main]

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use libfuzzer_sys::fuzz_target;
use paydvm::lightning::bolt11::{Bolt11Error, Description, Invoice, Role, MAX_BOLT11_LEN};
use paydvm::lightning::refund::{
    check_refund_invoice, never_sent, NeverSent, RefundAddress, RefundInvoiceError,
    MIN_EXPIRY_MARGIN_SECS,
};
use paydvm::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
use paydvm_fuzz::bech32;
use paydvm_fuzz::input::Input;
use paydvm_fuzz::vectors;
use paydvm_ledger::Msat;

const HRPS: &[&str] = &[
    "lnbc",
    "lntb",
    "lntbs",
    "lnbcrt",
    "lnsb",
    "lnbc1",
    "lnbc2500u",
    "lnbc20m",
    "lntb10n",
    "lnbc10p",
    "lnbc1p",
    "lnbc21000000",
    "lnbc21000001",
    "lnbc9999999999999m",
    "lnbc0",
    "lnbc01",
    "lnbcrt50u",
    "lnbc1x",
    "ln",
    "bc",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Input::new(rest);
    let text = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let hrp = input.pick(HRPS);
            let words = input.rest();
            bech32::encode(hrp, words)
        }
        2 => mutated_vector(&mut input),
        _ => return own_invoice(&mut input),
    };
    let now = input.number(&[1_496_314_658, 1_750_000_000]);
    let owed = input.number(&[250_000_000, 2_000_000_000, 0, 1_000]);
    check_text(&text, now, Msat::from_msat(owed));
});

/// Every check that holds for any text.
fn check_text(text: &str, now: u64, owed: Msat) {
    let parsed = Invoice::parse(text);
    check_refund_address(text, parsed.as_ref().ok());
    match &parsed {
        Ok(inv) => check_invoice(text, inv, now, owed),
        Err(Bolt11Error::TooLong(n)) => assert!(*n > MAX_BOLT11_LEN),
        Err(Bolt11Error::Invalid(_) | Bolt11Error::AmountOutOfRange(_)) => {
            assert!(Invoice::parse_payable(text, now).is_err());
            assert!(check_refund_invoice(text, owed, now).is_err());
            assert!(matches!(never_sent(text, now), NeverSent::GiveUp(_)));
        }
        Err(Bolt11Error::UnknownRequiredFeatures(bits)) => {
            check_unknown_required(text, bits, now, owed)
        }
        Err(e) => panic!("parse returned a payable-only error: {e}"),
    }
}

/// Refused to a payer for required bits nobody here knows: nothing pays it, yet the same text
/// read as its payee (an invoice our backend made for us) is a valid invoice.
fn check_unknown_required(text: &str, bits: &[u64], now: u64, owed: Msat) {
    assert!(!bits.is_empty());
    assert!(
        bits.iter().all(|bit| bit % 2 == 0),
        "odd bits are never required: {bits:?}"
    );
    assert!(Invoice::parse_payable(text, now).is_err());
    assert!(check_refund_invoice(text, owed, now).is_err());
    assert!(matches!(never_sent(text, now), NeverSent::GiveUp(_)));
    let as_payee = Invoice::parse_as(text, Role::Payee)
        .unwrap_or_else(|e| panic!("refused to a payer for features only, but as payee: {e}"));
    if let Some(amount) = as_payee.amount() {
        assert!(amount <= Msat::MAX_SUPPLY);
    }
}

fn check_invoice(text: &str, inv: &Invoice, now: u64, owed: Msat) {
    // What a payer accepts, its payee accepts too, with the same fields.
    let as_payee = Invoice::parse_as(text, Role::Payee).expect("a payer's invoice is a payee's");
    assert_same(inv, &as_payee);
    if let Some(amount) = inv.amount() {
        assert!(amount <= Msat::MAX_SUPPLY);
    }
    let mut forms = vec![inv.as_str().to_owned(), text.to_uppercase()];
    // The length bound counts a `lightning:` prefix too.
    if inv.as_str().len() + "lightning:".len() <= MAX_BOLT11_LEN {
        forms.push(format!("lightning:{}", inv.as_str()));
    }
    for again in forms {
        let again = Invoice::parse(&again).unwrap_or_else(|e| panic!("{again:?} refused: {e}"));
        assert_same(inv, &again);
    }
    assert!(inv.expires_at() >= inv.timestamp());
    assert!(inv.is_expired_at(inv.expires_at()));
    if inv.expires_at() > 0 {
        assert!(!inv.is_expired_at(inv.expires_at() - 1));
    }
    assert_eq!(inv.payment_hash(), hex::encode(inv.payment_hash_bytes()));
    let _ = (inv.network().prefix(), inv.payee());

    let payable = Invoice::parse_payable(text, now);
    let expected = inv.amount().is_some() && !inv.is_expired_at(now);
    assert_eq!(payable.is_ok(), expected, "parse_payable: {payable:?}");
    if let Ok((p, amount)) = payable {
        assert_eq!(Some(amount), inv.amount());
        assert_same(inv, &p);
    }

    let margin_ok = !inv.is_expired_at(now.saturating_add(MIN_EXPIRY_MARGIN_SECS));
    let refund = check_refund_invoice(text, owed, now);
    let expected = inv.amount() == Some(owed) && margin_ok;
    assert_eq!(refund.is_ok(), expected, "check_refund_invoice: {refund:?}");
    if let Err(RefundInvoiceError::WrongAmount { invoice, owed: o }) = refund {
        assert_eq!((Some(invoice), o), (inv.amount(), owed));
        assert_ne!(invoice, owed);
    }
    assert_eq!(
        matches!(never_sent(text, now), NeverSent::PayAgain),
        margin_ok
    );
}

fn assert_same(a: &Invoice, b: &Invoice) {
    assert_eq!(
        a.as_str().to_ascii_lowercase(),
        b.as_str().to_ascii_lowercase()
    );
    assert_eq!(a.amount(), b.amount());
    assert_eq!(a.payment_hash(), b.payment_hash());
    assert_eq!(a.description(), b.description());
    assert_eq!(a.payee(), b.payee());
    assert_eq!(a.timestamp(), b.timestamp());
    assert_eq!(a.expiry_secs(), b.expiry_secs());
    assert_eq!(a.network(), b.network());
}

/// The `refund` tag: an address when it has an `@`, otherwise an invoice exactly when
/// `Invoice::parse` takes it.
fn check_refund_address(text: &str, invoice: Option<&Invoice>) {
    let parsed = text.parse::<RefundAddress>();
    if let Ok(address) = &parsed {
        let again: RefundAddress = address.to_string().parse().expect("Display round-trips");
        assert_eq!(&again, address);
    }
    if text.contains('@') {
        return;
    }
    match (parsed, invoice) {
        (Ok(RefundAddress::Invoice(s)), Some(inv)) => assert_eq!(s, inv.as_str()),
        (Err(_), None) => {}
        (got, inv) => panic!(
            "refund address {got:?} but Invoice::parse {:?}",
            inv.is_some()
        ),
    }
}

fn mutated_vector(input: &mut Input) -> String {
    let invoices = vectors::bolt11_invoices();
    let base = input.pick(&invoices).to_ascii_lowercase();
    let Some((hrp, mut words)) = bech32::split(&base) else {
        return base;
    };
    for _ in 0..=input.below(4) {
        let at = input.below(words.len() + 1);
        let w = input.byte() & 31;
        match input.byte() % 5 {
            0 | 1 if at < words.len() => words[at] = w,
            2 => words.insert(at, w),
            3 if at < words.len() => {
                words.remove(at);
            }
            4 => words.truncate(at),
            _ => {}
        }
    }
    bech32::encode(&hrp, &words)
}

/// A regtest invoice signed here: what it was built with must read back.
fn own_invoice(input: &mut Input) {
    let key = SecretKey::from_slice(&[0x42; 32]).expect("a valid key");
    let amount = input.number(&[1, 1_000, 21_000, Msat::MAX_SUPPLY.as_msat()]);
    let created = input.number(&[1_750_000_000, (1 << 35) - 1, 1 << 35]);
    let expiry = input.number(&[0, 1, 30, 31, 600, 3600]);
    let preimage = [input.byte(); 32];
    let description_hash = sha256::Hash::hash(&input.bytes(16));
    let spec = InvoiceSpec {
        amount_msat: amount,
        description_hash,
        preimage,
        created: Duration::from_secs(created),
        expiry: Duration::from_secs(expiry),
    };
    let Ok(built) = regtest_invoice(&key, &spec) else {
        return;
    };
    let text = built.to_string();
    let now = input.number(&[created, created.saturating_add(expiry), 0]);
    let owed = Msat::from_msat(input.number(&[amount]));
    match Invoice::parse(&text) {
        Ok(inv) => {
            assert_eq!(inv.amount(), Some(Msat::from_msat(amount)));
            assert_eq!(
                inv.payment_hash_bytes(),
                sha256::Hash::hash(&preimage).to_byte_array()
            );
            assert_eq!(
                inv.description(),
                Description::Hash(description_hash.to_byte_array())
            );
            assert_eq!(inv.timestamp(), created);
            assert_eq!(inv.expiry_secs(), expiry);
            check_text(&text, now, owed);
        }
        Err(Bolt11Error::AmountOutOfRange(a)) => {
            assert_eq!(a, amount);
            assert!(Msat::from_msat(amount) > Msat::MAX_SUPPLY);
        }
        Err(e) => panic!("our own invoice {text} refused: {e}"),
    }
}
