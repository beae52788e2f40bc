//! What remote servers answer about money: an LNURL-pay endpoint (`parse_pay_response`), its
//! callback (`parse_invoice_answer`) and LNbits' REST answers (`lnbits::answers`: a payment
//! lookup mapped to an invoice or payment status, an error body).
//!
//! Input: byte 0 picks the answer, byte 1 (LNbits only) the hash asked about (a fixed one whose
//! preimage is known, its upper-case spelling, or another); the rest is the body. Seeds hold real
//! answers (`fuzz/seeds/wallet_answers/`).
//!
//! Asserts: no panic; a pay endpoint is taken only with 1 ≤ minSendable ≤ maxSendable ≤ the
//! bitcoin supply, an http(s) callback and array metadata, and signs zaps only when it allows
//! them with a valid key; a callback answer gives a non-empty `pr` and never one beside an
//! `ERROR` status; LNbits says an invoice is settled only when the row is about the hash asked,
//! incoming, `paid` and `success`, for its own amount, with any preimage matching; a payment
//! settled only with a preimage that hashes to the hash and the row's fee; failed only when the
//! row is outgoing, about that hash and explicitly `failed` (anything else stays unknown); an
//! error's detail stays within 200 characters.
#![no_main]

use std::sync::LazyLock;

use bitcoin::hashes::{sha256, Hash};
use libfuzzer_sys::fuzz_target;
use paydvm::lightning::lnbits::answers::{
    invoice_status, payment_status, ErrorBody, Lookup, FAILED, PENDING, SUCCESS,
};
use paydvm::lightning::{InvoiceStatus, PaymentStatus};
use paydvm::payments::lnurl::{parse_invoice_answer, parse_pay_response, LnurlError};
use paydvm_ledger::Msat;

/// The preimage behind [`HASH`].
const PREIMAGE: [u8; 32] = [7; 32];
static HASH: LazyLock<String> = LazyLock::new(|| sha256::Hash::hash(&PREIMAGE).to_string());

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => pay_response(rest),
        1 => invoice_answer(rest),
        2 => {
            let Some((&which, body)) = rest.split_first() else {
                return;
            };
            let hash = match which % 3 {
                0 => HASH.clone(),
                1 => HASH.to_uppercase(),
                _ => "ab".repeat(32),
            };
            lnbits_lookup(&hash, body);
        }
        _ => {
            let e = ErrorBody::parse(rest);
            assert!(e.detail().chars().count() <= 200);
            if e.says_no_such_payment() {
                assert_eq!(
                    e.detail.as_ref().and_then(|d| d.as_str()),
                    Some("Payment does not exist.")
                );
            }
        }
    }
});

fn pay_response(body: &[u8]) {
    let Ok(p) = parse_pay_response(body) else {
        return;
    };
    assert!(!p.min_sendable.is_zero());
    assert!(p.min_sendable <= p.max_sendable && p.max_sendable <= Msat::MAX_SUPPLY);
    assert!(matches!(p.callback.scheme(), "http" | "https"));
    assert!(serde_json::from_str::<serde_json::Value>(&p.metadata).is_ok_and(|m| m.is_array()));
    if let Ok(key) = p.zap_signer() {
        assert!(p.allows_nostr);
        assert_eq!(Some(key), p.nostr_pubkey);
    }
}

fn invoice_answer(body: &[u8]) {
    // Lossy: serde_json skips an ignored field's value without checking its UTF-8, so the
    // parser may read a body that `from_slice` into a `Value` refuses.
    let value: Option<serde_json::Value> =
        serde_json::from_str(&String::from_utf8_lossy(body)).ok();
    let status = value
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(|s| s.as_str())
        .map(str::to_ascii_uppercase);
    match parse_invoice_answer(body) {
        Ok(pr) => {
            assert!(!pr.is_empty());
            assert_ne!(
                status.as_deref(),
                Some("ERROR"),
                "a pr beside an error status"
            );
        }
        Err(LnurlError::Server(_)) => assert_eq!(status.as_deref(), Some("ERROR")),
        Err(_) => {}
    }
}

fn lnbits_lookup(hash: &str, body: &[u8]) {
    let Ok(found) = serde_json::from_slice::<Lookup>(body) else {
        return;
    };
    let preimage_ok = |p: &str| {
        hex::decode(p).is_ok_and(|b| {
            b.len() == 32 && sha256::Hash::hash(&b).to_string() == hash.to_ascii_lowercase()
        })
    };
    let about_hash = |h: &str| h.eq_ignore_ascii_case(hash);

    match invoice_status(hash, found.clone(), 99) {
        InvoiceStatus::Settled { amount, settled_at } => {
            let row = found.details.as_ref().expect("settled without a row");
            assert!(about_hash(&row.payment_hash) && found.paid && row.status == SUCCESS);
            assert!(row.amount > 0 && amount.as_msat() == row.amount as u64);
            assert_eq!(settled_at, 99);
            if let Some(p) = found.preimage.as_deref().or(row.preimage.as_deref()) {
                assert!(
                    preimage_ok(p),
                    "settled with a preimage that does not match"
                );
            }
        }
        InvoiceStatus::Open => {
            let row = found.details.as_ref().expect("open without a row");
            assert!(about_hash(&row.payment_hash) && !found.paid && row.status == PENDING);
            assert!(row.amount >= 0);
        }
        InvoiceStatus::Expired => {
            let row = found.details.as_ref().expect("expired without a row");
            assert!(about_hash(&row.payment_hash) && row.status == FAILED && row.amount >= 0);
            assert!(row.labels.iter().any(|l| l == "expired"));
        }
        InvoiceStatus::Unknown(_) => {}
    }

    let Some(row) = found.details.as_ref() else {
        return;
    };
    for top in [found.preimage.as_deref(), None] {
        match payment_status(hash, row, top) {
            PaymentStatus::Settled { preimage, fee } => {
                assert!(about_hash(&row.payment_hash) && row.amount < 0 && row.status == SUCCESS);
                assert!(preimage_ok(&preimage), "settled with a wrong preimage");
                assert_eq!(fee.as_msat(), row.fee.unsigned_abs());
            }
            PaymentStatus::Failed(_) => {
                assert!(about_hash(&row.payment_hash) && row.amount < 0 && row.status == FAILED);
            }
            PaymentStatus::NotFound => panic!("a row is never 'not found'"),
            PaymentStatus::Unknown(_) => {}
        }
    }
}
