//! NIP-57 zap receipts (kind 9735) as payment evidence: a pure verifier.
//!
//! A receipt is only an LNURL server's signed claim that an invoice was paid, so it counts only
//! when every check holds (see `docs/zaps.md` and `shared/protocol/nip57-zaps.md` §5):
//!
//! 1. the receipt is kind 9735 with a valid id and signature;
//! 2. its author is the `nostrPubkey` of **our** LNURL-pay endpoint;
//! 3. its `bolt11` parses (any network), is correctly signed, has an amount and a description
//!    hash;
//! 4. its `description` is a kind 9734 zap request with a valid id and signature, exactly one
//!    `p` (us) and at most one `e`;
//! 5. the 9734 has an `amount` tag and the invoice amount equals it (NIP-57 says SHOULD; we
//!    require it, so a payer's signed intent always names the amount);
//! 6. the invoice's description hash is SHA-256 of the `description` tag's exact bytes;
//! 7. the receipt's own `p`, `e` and `P` tags agree with the 9734, and a `preimage`, when
//!    present, hashes to the payment hash.
//!
//! Which job the zap pays is a separate question ([`VerifiedZap::target`], or
//! [`verify_for_job`] when the job's event ids are known).
//!
//! Invoice expiry is deliberately not checked: the receipt claims a payment that already
//! happened, and a receipt read during catch-up may well be older than the invoice's expiry.

use std::collections::HashSet;

use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::prelude::{Event, EventId, JsonUtil, Kind, PublicKey, Tag, Tags};
use paydvm_ledger::Msat;
use thiserror::Error;

use crate::lightning::bolt11::{Description, Invoice, Role};

/// Zap request.
pub const ZAP_REQUEST_KIND: u16 = 9734;
/// Zap receipt.
pub const ZAP_RECEIPT_KIND: u16 = 9735;

/// Who the receipt must be for and who must have signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZapExpectation {
    /// Our node's pubkey: the 9734's single `p`.
    pub recipient: PublicKey,
    /// The `nostrPubkey` our LNURL-pay endpoint publishes: the only key whose receipts count.
    pub lnurl_signer: PublicKey,
}

/// A receipt that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedZap {
    pub receipt_id: EventId,
    /// The zap request's author (a throw-away key for anonymous zaps).
    pub payer: PublicKey,
    pub amount: Msat,
    /// Hex payment hash of the bolt11: the same payment must never be credited twice.
    pub payment_hash: String,
    /// The event the payer zapped (the 9734's `e`), if any.
    pub target: Option<EventId>,
    pub bolt11: String,
}

/// Why a receipt was refused. [`ZapRejection::category`] names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZapRejection {
    #[error("not a zap receipt (kind {0})")]
    NotAReceipt(u16),
    #[error("receipt id or signature invalid")]
    ReceiptSignature,
    #[error("receipt signed by {found}, not by our LNURL server's nostrPubkey")]
    WrongSigner { found: PublicKey },
    #[error("bolt11: {0}")]
    Bolt11(String),
    #[error("zap request: {0}")]
    ZapRequest(String),
    #[error("zap request is for {found}, not for us")]
    NotForUs { found: String },
    #[error("zap request has no amount tag")]
    AmountMissing,
    #[error("invoice amount {invoice} msat differs from the zap request's {requested} msat")]
    AmountMismatch { invoice: u64, requested: u64 },
    #[error("invoice description hash is not sha256 of the description")]
    DescriptionHash,
    #[error("receipt tag {tag:?} disagrees with the zap request")]
    ReceiptMismatch { tag: &'static str },
    #[error("preimage does not hash to the payment hash")]
    Preimage,
    #[error("zap targets {target:?}, which is neither this job nor one of its events")]
    NotForThisJob { target: Option<EventId> },
}

/// The rule families of [`ZapRejection`], for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionCategory {
    NotAReceipt,
    Signature,
    Signer,
    Bolt11,
    ZapRequest,
    Recipient,
    Amount,
    DescriptionHash,
    ReceiptMismatch,
    Preimage,
    Target,
}

impl ZapRejection {
    pub fn category(&self) -> RejectionCategory {
        match self {
            ZapRejection::NotAReceipt(_) => RejectionCategory::NotAReceipt,
            ZapRejection::ReceiptSignature => RejectionCategory::Signature,
            ZapRejection::WrongSigner { .. } => RejectionCategory::Signer,
            ZapRejection::Bolt11(_) => RejectionCategory::Bolt11,
            ZapRejection::ZapRequest(_) => RejectionCategory::ZapRequest,
            ZapRejection::NotForUs { .. } => RejectionCategory::Recipient,
            ZapRejection::AmountMissing | ZapRejection::AmountMismatch { .. } => {
                RejectionCategory::Amount
            }
            ZapRejection::DescriptionHash => RejectionCategory::DescriptionHash,
            ZapRejection::ReceiptMismatch { .. } => RejectionCategory::ReceiptMismatch,
            ZapRejection::Preimage => RejectionCategory::Preimage,
            ZapRejection::NotForThisJob { .. } => RejectionCategory::Target,
        }
    }
}

/// Checks everything about `receipt` except which job it pays.
pub fn verify_receipt(
    receipt: &Event,
    expect: &ZapExpectation,
) -> Result<VerifiedZap, ZapRejection> {
    if receipt.kind != Kind::from(ZAP_RECEIPT_KIND) {
        return Err(ZapRejection::NotAReceipt(receipt.kind.as_u16()));
    }
    receipt
        .verify()
        .map_err(|_| ZapRejection::ReceiptSignature)?;
    if receipt.pubkey != expect.lnurl_signer {
        return Err(ZapRejection::WrongSigner {
            found: receipt.pubkey,
        });
    }

    let bolt11 = single_value(&receipt.tags, "bolt11").map_err(ZapRejection::Bolt11)?;
    let invoice = parse_invoice(bolt11)?;
    let description =
        single_value(&receipt.tags, "description").map_err(ZapRejection::ZapRequest)?;
    let request = ZapRequest::parse(description)?;

    if request.recipient != expect.recipient.to_hex() {
        return Err(ZapRejection::NotForUs {
            found: request.recipient,
        });
    }
    let requested = request.amount.ok_or(ZapRejection::AmountMissing)?;
    if invoice.amount != requested {
        return Err(ZapRejection::AmountMismatch {
            invoice: invoice.amount,
            requested,
        });
    }
    let described = sha256::Hash::hash(description.as_bytes());
    if invoice.description_hash != described {
        return Err(ZapRejection::DescriptionHash);
    }
    receipt_agrees(receipt, &request)?;
    if let Some(preimage) = optional_value(&receipt.tags, "preimage")
        .map_err(|_| ZapRejection::ReceiptMismatch { tag: "preimage" })?
    {
        let bytes = hex_32(preimage).ok_or(ZapRejection::Preimage)?;
        if sha256::Hash::hash(&bytes) != invoice.payment_hash {
            return Err(ZapRejection::Preimage);
        }
    }

    Ok(VerifiedZap {
        receipt_id: receipt.id,
        payer: request.payer,
        amount: Msat::from_msat(invoice.amount),
        payment_hash: invoice.payment_hash.to_string(),
        target: request.target,
        bolt11: bolt11.to_owned(),
    })
}

/// [`verify_receipt`], and the zap must target one of `job_events` (the request id and the
/// ids of the feedback and result we published for it).
pub fn verify_for_job(
    receipt: &Event,
    expect: &ZapExpectation,
    job_events: &HashSet<EventId>,
) -> Result<VerifiedZap, ZapRejection> {
    let zap = verify_receipt(receipt, expect)?;
    match zap.target {
        Some(target) if job_events.contains(&target) => Ok(zap),
        target => Err(ZapRejection::NotForThisJob { target }),
    }
}

struct CheckedInvoice {
    amount: u64,
    payment_hash: sha256::Hash,
    description_hash: sha256::Hash,
}

/// Parses and checks a bolt11 (signature included, see [`Invoice::parse_as`]); a zap invoice must
/// carry an amount and a description hash. It was made for us (we are its payee), so its feature
/// bits are not ours to judge.
fn parse_invoice(bolt11: &str) -> Result<CheckedInvoice, ZapRejection> {
    let invoice = Invoice::parse_as(bolt11, Role::Payee)
        .map_err(|e| ZapRejection::Bolt11(format!("does not parse or is badly signed: {e}")))?;
    let amount = invoice
        .amount()
        .ok_or_else(|| ZapRejection::Bolt11("has no amount".into()))?
        .as_msat();
    let description_hash = match invoice.description() {
        Description::Hash(hash) => sha256::Hash::from_byte_array(hash),
        Description::Text(_) => {
            return Err(ZapRejection::Bolt11(
                "has a plain description, not a description hash".into(),
            ))
        }
    };
    Ok(CheckedInvoice {
        amount,
        payment_hash: sha256::Hash::from_byte_array(invoice.payment_hash_bytes()),
        description_hash,
    })
}

/// The parts of a verified kind 9734 the receipt check needs.
struct ZapRequest {
    payer: PublicKey,
    /// The single `p` value, as written.
    recipient: String,
    target: Option<EventId>,
    amount: Option<u64>,
}

impl ZapRequest {
    fn parse(json: &str) -> Result<ZapRequest, ZapRejection> {
        let bad = |why: &str| ZapRejection::ZapRequest(why.to_owned());
        let bad_tag = ZapRejection::ZapRequest;
        let event = Event::from_json(json).map_err(|_| bad("description is not an event"))?;
        if event.kind != Kind::from(ZAP_REQUEST_KIND) {
            return Err(bad("description is not a kind 9734"));
        }
        event.verify().map_err(|_| bad("id or signature invalid"))?;
        let recipient = single_value(&event.tags, "p").map_err(bad_tag)?.to_owned();
        let target = optional_value(&event.tags, "e")
            .map_err(bad_tag)?
            .map(|e| EventId::from_hex(e).map_err(|_| bad("e is not an event id")))
            .transpose()?;
        let amount = optional_value(&event.tags, "amount")
            .map_err(bad_tag)?
            .map(|a| a.parse::<u64>().map_err(|_| bad("amount is not msat")))
            .transpose()?;
        Ok(ZapRequest {
            payer: event.pubkey,
            recipient,
            target,
            amount,
        })
    }
}

/// The receipt copies `p`, `e` and (optionally) `P` from the zap request; a receipt that says
/// otherwise was not made from this request.
fn receipt_agrees(receipt: &Event, request: &ZapRequest) -> Result<(), ZapRejection> {
    let mismatch = |tag| ZapRejection::ReceiptMismatch { tag };
    let p = single_value(&receipt.tags, "p").map_err(|_| mismatch("p"))?;
    if p != request.recipient {
        return Err(mismatch("p"));
    }
    let e = optional_value(&receipt.tags, "e").map_err(|_| mismatch("e"))?;
    let e = match e {
        Some(id) => Some(EventId::from_hex(id).map_err(|_| mismatch("e"))?),
        None => None,
    };
    if e != request.target {
        return Err(mismatch("e"));
    }
    match optional_value(&receipt.tags, "P").map_err(|_| mismatch("P"))? {
        Some(sender) if sender != request.payer.to_hex() => Err(mismatch("P")),
        _ => Ok(()),
    }
}

/// The value of the only tag named `name`.
fn single_value<'a>(tags: &'a Tags, name: &str) -> Result<&'a str, String> {
    optional_value(tags, name)?.ok_or_else(|| format!("no {name} tag"))
}

/// The value of the tag named `name`, if there is exactly one; more than one is an error.
fn optional_value<'a>(tags: &'a Tags, name: &str) -> Result<Option<&'a str>, String> {
    let mut found = tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t.first().is_some_and(|n| n == name));
    let Some(first) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(format!("more than one {name} tag"));
    }
    match first.get(1) {
        Some(value) => Ok(Some(value.as_str())),
        None => Err(format!("the {name} tag has no value")),
    }
}

fn hex_32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}
