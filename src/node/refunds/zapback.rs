//! Zapback: a Lightning refund to an address whose LNURL server allows Nostr is sent as a
//! NIP-57 zap that points at the job, so the customer's client shows what the money was for.
//!
//! - [`zap_request`]: our signed kind 9734 — `p` the customer, `e` the job's request, `amount`
//!   exactly what is owed, `relays` ours then the customer's, and a short content naming the
//!   job and why it is refunded. NIP-57 zappers refuse a request with more than one `e`, so the
//!   feedback that announced the failure is not tagged (the request is what the customer knows).
//! - [`commits_to`]: the invoice the LNURL server made must commit to that exact request (its
//!   description hash), on top of the refund desk's amount and expiry checks.
//! - [`check_receipt`]: the server's kind 9735 counts only when every NIP-57 rule holds with
//!   the refund's customer as recipient, the recorded `nostrPubkey` as signer, us as the zap
//!   request's author, and the recorded invoice as the one paid.
//!
//! The request's id and the signer are recorded with the route (`refund_started`), before
//! anything is paid: a restart finds the same invoice to look up, and the receipt to expect.

use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::prelude::{Event, EventBuilder, EventId, JsonUtil, Keys, Kind, PublicKey, Tag};
use paydvm_ledger::{Msat, RefundId, RefundZap};

use crate::lightning::bolt11::{Description, Invoice};
use crate::payments::zap::{verify_receipt, ZapExpectation, ZAP_REQUEST_KIND};

/// Most relays a refund's zap request names.
const MAX_RELAYS: usize = 8;

/// What a refund zap points at, beyond the refund itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZapTarget {
    /// The job's request event: the zap request's `e`.
    pub job_request: Option<EventId>,
    /// Where the customer wants replies (their request's `relays`): the receipt goes there too.
    pub customer_relays: Vec<String>,
}

/// Everything a refund's zap request says.
pub struct ZapRequestParts<'a> {
    pub keys: &'a Keys,
    pub customer: PublicKey,
    pub amount: Msat,
    pub refund: &'a RefundId,
    pub target: &'a ZapTarget,
    /// The node's relays, named first.
    pub node_relays: &'a [String],
}

/// Our signed kind 9734 for a refund.
pub fn zap_request(parts: &ZapRequestParts<'_>) -> Result<Event, String> {
    let mut relays: Vec<String> = Vec::new();
    for relay in parts
        .node_relays
        .iter()
        .chain(&parts.target.customer_relays)
    {
        if relays.len() < MAX_RELAYS && !relays.contains(relay) {
            relays.push(relay.clone());
        }
    }
    let tag = |values: Vec<String>| Tag::parse(values).map_err(|e| e.to_string());
    let mut tags = vec![
        tag(std::iter::once("relays".to_owned()).chain(relays).collect())?,
        tag(vec!["amount".into(), parts.amount.as_msat().to_string()])?,
        tag(vec!["p".into(), parts.customer.to_hex()])?,
    ];
    if let Some(request) = parts.target.job_request {
        tags.push(tag(vec!["e".into(), request.to_hex()])?);
    }
    EventBuilder::new(Kind::from(ZAP_REQUEST_KIND), content(parts.refund))
        .tags(tags)
        .sign_with_keys(parts.keys)
        .map_err(|e| format!("cannot sign the refund's zap request: {e}"))
}

/// "refund for job <job>: <why>", from the refund's name (`<job>:<why>[:<reference>]`).
pub fn content(refund: &RefundId) -> String {
    let mut parts = refund.as_str().splitn(3, ':');
    let job = parts.next().unwrap_or_default();
    let why = match parts.next() {
        Some("fail") => "the job failed",
        Some("cancel") => "the job was cancelled",
        Some("expiry") => "the quote expired before it was paid in full",
        Some("excess") => "paid more than the price",
        Some("return") => "a payment the job could not take",
        _ => "money owed back",
    };
    format!("refund for job {job}: {why}")
}

/// Whether `invoice` commits to exactly `zap_request_json` (its description hash).
pub fn commits_to(invoice: &Invoice, zap_request_json: &str) -> bool {
    let expected = sha256::Hash::hash(zap_request_json.as_bytes()).to_byte_array();
    matches!(invoice.description(), Description::Hash(hash) if hash == expected)
}

/// The zap request a receipt claims to answer (its `description`'s id), to find the refund by.
/// Nothing about it is trusted: [`check_receipt`] decides.
pub fn claimed_request(receipt: &Event) -> Option<EventId> {
    Event::from_json(tag_value(receipt, "description")?)
        .ok()
        .map(|e| e.id)
}

/// The invoice a receipt says was paid (its `bolt11`).
pub fn paid_invoice(receipt: &Event) -> Option<&str> {
    tag_value(receipt, "bolt11")
}

fn tag_value<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .tags
        .iter()
        .map(Tag::as_slice)
        .find(|t| t.first().is_some_and(|n| n == name))?
        .get(1)
        .map(String::as_str)
}

/// The recorded refund zap a receipt must answer.
pub struct ExpectedReceipt<'a> {
    /// Our node: the zap request's author (the receipt's `P`).
    pub us: PublicKey,
    /// The refund's customer: the zap request's `p`.
    pub customer: PublicKey,
    pub zap: &'a RefundZap,
    /// The invoice we paid (the route's destination).
    pub bolt11: &'a str,
}

/// Every NIP-57 rule ([`verify_receipt`]) with the refund's expectations, and then: the receipt
/// answers our recorded zap request (same id: same signed event) and names the invoice we paid.
pub fn check_receipt(receipt: &Event, expect: &ExpectedReceipt<'_>) -> Result<(), String> {
    let signer = PublicKey::from_hex(expect.zap.signer.as_str()).map_err(|e| e.to_string())?;
    let verified = verify_receipt(
        receipt,
        &ZapExpectation {
            recipient: expect.customer,
            lnurl_signer: signer,
        },
    )
    .map_err(|e| e.to_string())?;
    if verified.payer != expect.us {
        return Err("the zap request is not ours".into());
    }
    if claimed_request(receipt).map(|id| id.to_hex()).as_deref()
        != Some(expect.zap.request.as_str())
    {
        return Err("the receipt answers another zap request".into());
    }
    if !verified.bolt11.eq_ignore_ascii_case(expect.bolt11) {
        return Err("the receipt names another invoice than the one paid".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
