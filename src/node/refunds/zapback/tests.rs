//! Zapback unit tests: the zap request we sign, the invoice check, and the receipt check with
//! real signed events and real regtest invoices (forgeries built from a valid receipt).

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use nostr_sdk::prelude::{Event, EventBuilder, JsonUtil, Keys, Kind, Tag};
use paydvm_ledger::{Msat, RefundId, RefundZap};

use super::*;
use crate::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
use crate::payments::zap::ZAP_RECEIPT_KIND;

const OWED: Msat = Msat::from_msat(5_000);

struct World {
    node: Keys,
    customer: Keys,
    server: Keys,
    server_node_key: SecretKey,
    refund: RefundId,
    target: ZapTarget,
}

fn world() -> World {
    let job = Keys::generate();
    let job_request = EventBuilder::new(Kind::from(5050), "job")
        .sign_with_keys(&job)
        .unwrap();
    World {
        node: Keys::generate(),
        customer: Keys::generate(),
        server: Keys::generate(),
        server_node_key: SecretKey::from_slice(&[3; 32]).unwrap(),
        refund: RefundId::new(format!("{}:fail", job_request.id.to_hex())).unwrap(),
        target: ZapTarget {
            job_request: Some(job_request.id),
            customer_relays: vec!["ws://127.0.0.1:2".into(), "ws://127.0.0.1:1".into()],
        },
    }
}

impl World {
    fn request(&self, amount: Msat) -> Event {
        zap_request(&ZapRequestParts {
            keys: &self.node,
            customer: self.customer.public_key(),
            amount,
            refund: &self.refund,
            target: &self.target,
            node_relays: &["ws://127.0.0.1:1".into()],
        })
        .unwrap()
    }

    fn invoice(&self, description: &str, amount: Msat, preimage: u8) -> String {
        regtest_invoice(
            &self.server_node_key,
            &InvoiceSpec {
                amount_msat: amount.as_msat(),
                description_hash: sha256::Hash::hash(description.as_bytes()),
                preimage: [preimage; 32],
                created: Duration::from_secs(1_750_000_000),
                expiry: Duration::from_secs(600),
            },
        )
        .unwrap()
        .to_string()
    }

    /// A receipt as the customer's LNURL server makes it (NIP-57 Appendix E).
    fn receipt(&self, request: &Event, bolt11: &str, signer: &Keys) -> Event {
        let json = request.as_json();
        let mut tags: Vec<Tag> = request
            .tags
            .iter()
            .filter(|t| matches!(t.as_slice()[0].as_str(), "p" | "e"))
            .cloned()
            .collect();
        for (name, value) in [
            ("P", request.pubkey.to_hex()),
            ("bolt11", bolt11.to_owned()),
            ("description", json),
        ] {
            tags.push(Tag::parse([name.to_owned(), value]).unwrap());
        }
        EventBuilder::new(Kind::from(ZAP_RECEIPT_KIND), "")
            .tags(tags)
            .sign_with_keys(signer)
            .unwrap()
    }

    fn zap(&self, request: &Event) -> RefundZap {
        RefundZap {
            request: paydvm_ledger::EventId::new(request.id.to_hex()).unwrap(),
            signer: paydvm_ledger::Pubkey::new(self.server.public_key().to_hex()).unwrap(),
        }
    }

    fn check(&self, receipt: &Event, zap: &RefundZap, bolt11: &str) -> Result<(), String> {
        check_receipt(
            receipt,
            &ExpectedReceipt {
                us: self.node.public_key(),
                customer: self.customer.public_key(),
                zap,
                bolt11,
            },
        )
    }
}

fn values<'a>(event: &'a Event, name: &str) -> Vec<&'a [String]> {
    event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t[0] == name)
        .collect()
}

#[test]
fn the_zap_request_names_the_customer_the_job_the_amount_and_both_relay_lists() {
    let w = world();
    let request = w.request(OWED);
    assert!(request.verify().is_ok());
    assert_eq!(request.kind, Kind::from(9734));
    assert_eq!(request.pubkey, w.node.public_key());
    assert_eq!(
        values(&request, "p")[0][1],
        w.customer.public_key().to_hex()
    );
    assert_eq!(
        values(&request, "e"),
        [&["e".to_owned(), w.target.job_request.unwrap().to_hex()][..]]
    );
    assert_eq!(values(&request, "amount")[0][1], "5000");
    // Ours first, the customer's after, each once.
    assert_eq!(
        values(&request, "relays")[0],
        ["relays", "ws://127.0.0.1:1", "ws://127.0.0.1:2"]
    );
    let job = w.target.job_request.unwrap().to_hex();
    assert_eq!(
        request.content,
        format!("refund for job {job}: the job failed")
    );
}

#[test]
fn only_an_invoice_committing_to_the_exact_zap_request_passes() {
    let w = world();
    let json = w.request(OWED).as_json();
    let good = Invoice::parse(&w.invoice(&json, OWED, 1)).unwrap();
    assert!(commits_to(&good, &json));
    let other = w.request(OWED).as_json();
    let bad = Invoice::parse(&w.invoice(&other, OWED, 1)).unwrap();
    assert!(!commits_to(&bad, &json));
}

#[test]
fn the_receipt_of_our_zap_is_accepted_and_forgeries_are_not() {
    let w = world();
    let request = w.request(OWED);
    let paid = w.invoice(&request.as_json(), OWED, 1);
    let zap = w.zap(&request);
    let honest = w.receipt(&request, &paid, &w.server);
    assert_eq!(claimed_request(&honest), Some(request.id));
    assert_eq!(w.check(&honest, &zap, &paid), Ok(()));

    // Another signer than the recorded nostrPubkey.
    let forged = w.receipt(&request, &paid, &Keys::generate());
    assert!(w
        .check(&forged, &zap, &paid)
        .unwrap_err()
        .contains("signed by"));

    // Another amount: an invoice for more, committing to the same request.
    let more = w.invoice(&request.as_json(), Msat::from_msat(6_000), 2);
    let forged = w.receipt(&request, &more, &w.server);
    let why = w.check(&forged, &zap, &paid).unwrap_err();
    assert!(why.contains("amount"), "{why}");

    // Another zap request (ours, signed, same amount, another refund): not the one recorded.
    let other = zap_request(&ZapRequestParts {
        keys: &w.node,
        customer: w.customer.public_key(),
        amount: OWED,
        refund: &RefundId::new("another-job:fail").unwrap(),
        target: &w.target,
        node_relays: &[],
    })
    .unwrap();
    let other_paid = w.invoice(&other.as_json(), OWED, 3);
    let forged = w.receipt(&other, &other_paid, &w.server);
    let why = w.check(&forged, &zap, &paid).unwrap_err();
    assert!(why.contains("another zap request"), "{why}");

    // Our request, but another invoice than the one we paid.
    let second = w.invoice(&request.as_json(), OWED, 4);
    let forged = w.receipt(&request, &second, &w.server);
    let why = w.check(&forged, &zap, &paid).unwrap_err();
    assert!(why.contains("another invoice"), "{why}");
}

#[test]
fn a_receipt_of_someone_elses_zap_request_is_refused() {
    let w = world();
    let theirs = EventBuilder::new(Kind::from(9734), "")
        .tags(w.request(OWED).tags.iter().cloned())
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let paid = w.invoice(&theirs.as_json(), OWED, 1);
    let receipt = w.receipt(&theirs, &paid, &w.server);
    let zap = w.zap(&theirs);
    assert_eq!(
        w.check(&receipt, &zap, &paid),
        Err("the zap request is not ours".into())
    );
}

#[test]
fn the_content_says_why_from_the_refund_name() {
    let refund = |s: &str| RefundId::new(s).unwrap();
    assert_eq!(
        content(&refund("j:fail")),
        "refund for job j: the job failed"
    );
    assert_eq!(
        content(&refund("j:excess:ref")),
        "refund for job j: paid more than the price"
    );
    assert_eq!(content(&refund("j")), "refund for job j: money owed back");
}
