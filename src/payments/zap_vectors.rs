//! The zap verifier against the project's synthetic NIP-57 vectors, and against forgeries built
//! from them with the vectors' own keys (so each forgery breaks exactly one rule).

use std::collections::HashSet;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use nostr_sdk::prelude::{Event, EventBuilder, EventId, JsonUtil, Keys, Kind, Tag, Timestamp};
use serde_json::Value;

use super::zap::{verify_for_job, verify_receipt, RejectionCategory, ZapExpectation, ZapRejection};
use crate::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};

const VECTORS: &str = include_str!("../../tests/vectors/synthetic-zap.vectors.json");

struct Vectors {
    json: Value,
}

impl Vectors {
    fn load() -> Vectors {
        Vectors {
            json: serde_json::from_str(VECTORS).unwrap(),
        }
    }

    fn str(&self, path: &[&str]) -> &str {
        path.iter()
            .fold(&self.json, |v, k| &v[*k])
            .as_str()
            .unwrap_or_else(|| panic!("no string at {path:?}"))
    }

    fn keys(&self, who: &str) -> Keys {
        Keys::parse(self.str(&["keys", who, "sec"])).unwrap()
    }

    fn expectation(&self) -> ZapExpectation {
        ZapExpectation {
            recipient: self.keys("dvm_identity").public_key(),
            lnurl_signer: nostr_sdk::PublicKey::from_hex(
                self.str(&["lnurl_pay_response", "nostrPubkey"]),
            )
            .unwrap(),
        }
    }

    fn job(&self) -> EventId {
        EventId::from_hex(self.str(&["job_request", "id"])).unwrap()
    }

    fn feedback(&self) -> EventId {
        EventId::from_hex(self.str(&["payment_required_feedback", "id"])).unwrap()
    }

    fn job_events(&self) -> HashSet<EventId> {
        [self.job(), self.feedback()].into()
    }

    fn receipts(&self) -> &Vec<Value> {
        self.json["receipts"].as_array().unwrap()
    }

    fn valid_receipt(&self) -> Event {
        let case = &self.receipts()[0];
        assert_eq!(case["expect"], "valid");
        Event::from_json(case["receipt"].to_string()).unwrap()
    }

    fn node_key(&self) -> SecretKey {
        SecretKey::from_slice(&hex::decode(self.str(&["keys", "lightning_node", "sec"])).unwrap())
            .unwrap()
    }
}

/// What each labelled invalid case must be refused for, keyed by a phrase of its label.
const INVALID_CASES: &[(&str, RejectionCategory)] = &[
    (
        "amount tag 22000 but invoice is 21000",
        RejectionCategory::Amount,
    ),
    ("signed by the customer key", RejectionCategory::Signer),
    (
        "re-serialised with whitespace",
        RejectionCategory::DescriptionHash,
    ),
    ("two p tags", RejectionCategory::ZapRequest),
];

#[test]
fn every_vector_case_behaves_as_labelled() {
    let v = Vectors::load();
    let expect = v.expectation();
    let mut valid = 0;
    let mut invalid = 0;
    for case in v.receipts() {
        let label = case["case"].as_str().unwrap();
        let receipt = Event::from_json(case["receipt"].to_string()).unwrap();
        let outcome = verify_for_job(&receipt, &expect, &v.job_events());
        match case["expect"].as_str().unwrap() {
            "valid" => {
                let zap = outcome.unwrap_or_else(|e| panic!("{label}: refused: {e}"));
                assert_eq!(
                    case["matches_job"].as_str(),
                    Some(v.job().to_hex().as_str())
                );
                assert_eq!(zap.receipt_id, receipt.id);
                assert_eq!(zap.payer, v.keys("customer").public_key());
                assert_eq!(
                    zap.amount.as_msat(),
                    v.json["invoice"]["amount_msat"].as_u64().unwrap()
                );
                assert_eq!(zap.payment_hash, v.str(&["invoice", "payment_hash"]));
                assert_eq!(zap.target, Some(v.feedback()));
                valid += 1;
            }
            "invalid" => {
                let (_, category) = INVALID_CASES
                    .iter()
                    .find(|(phrase, _)| label.contains(phrase))
                    .unwrap_or_else(|| panic!("a vector case this test does not know: {label}"));
                let rejection = outcome.expect_err(label);
                assert_eq!(rejection.category(), *category, "{label}: {rejection}");
                invalid += 1;
            }
            other => panic!("unknown expectation {other:?}"),
        }
    }
    assert_eq!((valid, invalid), (1, INVALID_CASES.len()));
}

/// Signs a kind 9735 with `tags` as `signer`.
fn receipt(tags: Vec<Tag>, signer: &Keys) -> Event {
    EventBuilder::new(Kind::from(9735), "")
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(1_750_000_020))
        .sign_with_keys(signer)
        .unwrap()
}

fn tag(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).unwrap()
}

/// The valid receipt's tags with `name` replaced by `values` (or removed when empty).
fn tags_with(valid: &Event, name: &str, values: &[&str]) -> Vec<Tag> {
    let mut tags: Vec<Tag> = valid
        .tags
        .iter()
        .filter(|t| t.as_slice()[0] != name)
        .cloned()
        .collect();
    if !values.is_empty() {
        let mut full = vec![name];
        full.extend_from_slice(values);
        tags.push(tag(&full));
    }
    tags
}

/// A fresh, fully consistent receipt for a zap request with `request_tags`, paid with an
/// invoice of `amount_msat`. Returns the receipt.
fn fresh_receipt(v: &Vectors, request_tags: Vec<Tag>, amount_msat: u64) -> Event {
    let customer = v.keys("customer");
    let request = EventBuilder::new(Kind::from(9734), "")
        .tags(request_tags)
        .sign_with_keys(&customer)
        .unwrap();
    let description = request.as_json();
    let invoice = regtest_invoice(
        &v.node_key(),
        &InvoiceSpec {
            amount_msat,
            description_hash: sha256::Hash::hash(description.as_bytes()),
            preimage: [7; 32],
            created: Duration::from_secs(1_750_000_011),
            expiry: Duration::from_secs(600),
        },
    )
    .unwrap();
    let mut tags = vec![
        tag(&["bolt11", &invoice.to_string()]),
        tag(&["description", &description]),
        tag(&["P", &customer.public_key().to_hex()]),
    ];
    for copied in ["p", "e"] {
        if let Some(t) = request.tags.iter().find(|t| t.as_slice()[0] == copied) {
            tags.push(t.clone());
        }
    }
    receipt(tags, &v.keys("lnurl_server_nostrPubkey"))
}

fn request_tags(v: &Vectors, amount: Option<&str>, p: &str, e: &str) -> Vec<Tag> {
    let mut tags = vec![
        tag(&["relays", "ws://127.0.0.1:1"]),
        tag(&["p", p]),
        tag(&["e", e]),
    ];
    if let Some(amount) = amount {
        tags.push(tag(&["amount", amount]));
    }
    let _ = v;
    tags
}

fn category(result: Result<super::zap::VerifiedZap, ZapRejection>) -> RejectionCategory {
    result.expect_err("must be refused").category()
}

#[test]
fn a_receipt_built_by_our_regtest_invoicer_verifies() {
    let v = Vectors::load();
    let us = v.keys("dvm_identity").public_key().to_hex();
    let receipt = fresh_receipt(
        &v,
        request_tags(&v, Some("5000"), &us, &v.job().to_hex()),
        5000,
    );
    let zap = verify_for_job(&receipt, &v.expectation(), &v.job_events()).unwrap();
    assert_eq!(zap.amount.as_msat(), 5000);
    assert_eq!(zap.target, Some(v.job()));
    assert_eq!(
        zap.payment_hash,
        sha256::Hash::hash(&[7; 32]).to_string(),
        "payment hash = sha256(preimage)"
    );
}

#[test]
fn a_zap_request_without_amount_is_refused() {
    let v = Vectors::load();
    let us = v.keys("dvm_identity").public_key().to_hex();
    let receipt = fresh_receipt(&v, request_tags(&v, None, &us, &v.job().to_hex()), 5000);
    assert_eq!(
        verify_receipt(&receipt, &v.expectation()),
        Err(ZapRejection::AmountMissing)
    );
}

#[test]
fn a_zap_for_someone_else_is_refused() {
    let v = Vectors::load();
    let other = Keys::generate().public_key().to_hex();
    let receipt = fresh_receipt(
        &v,
        request_tags(&v, Some("5000"), &other, &v.job().to_hex()),
        5000,
    );
    assert_eq!(
        category(verify_receipt(&receipt, &v.expectation())),
        RejectionCategory::Recipient
    );
}

#[test]
fn a_zap_on_another_event_does_not_pay_this_job() {
    let v = Vectors::load();
    let us = v.keys("dvm_identity").public_key().to_hex();
    let elsewhere = EventId::all_zeros().to_hex();
    let receipt = fresh_receipt(&v, request_tags(&v, Some("5000"), &us, &elsewhere), 5000);
    verify_receipt(&receipt, &v.expectation()).expect("a valid zap, just not for this job");
    assert_eq!(
        category(verify_for_job(&receipt, &v.expectation(), &v.job_events())),
        RejectionCategory::Target
    );
}

#[test]
fn an_edited_receipt_fails_its_signature() {
    let v = Vectors::load();
    let mut json: Value = serde_json::from_str(&v.valid_receipt().as_json()).unwrap();
    json["created_at"] = Value::from(1_750_000_021_u64);
    let edited = Event::from_json(json.to_string()).unwrap();
    assert_eq!(
        verify_receipt(&edited, &v.expectation()),
        Err(ZapRejection::ReceiptSignature)
    );
}

#[test]
fn receipt_tags_must_agree_with_the_zap_request() {
    let v = Vectors::load();
    let valid = v.valid_receipt();
    let lnurl = v.keys("lnurl_server_nostrPubkey");
    let someone = Keys::generate().public_key().to_hex();
    let job = v.job().to_hex();
    for (name, values, rule) in [
        ("e", vec![job.as_str()], "e"),
        ("e", vec![], "e"),
        ("p", vec![someone.as_str()], "p"),
        ("P", vec![someone.as_str()], "P"),
    ] {
        let forged = receipt(tags_with(&valid, name, &values), &lnurl);
        assert_eq!(
            verify_receipt(&forged, &v.expectation()),
            Err(ZapRejection::ReceiptMismatch { tag: rule }),
            "{name} = {values:?}"
        );
    }
    // `P` is optional.
    let without_sender = receipt(tags_with(&valid, "P", &[]), &lnurl);
    verify_receipt(&without_sender, &v.expectation()).unwrap();
}

#[test]
fn a_preimage_must_hash_to_the_payment_hash() {
    let v = Vectors::load();
    let valid = v.valid_receipt();
    let lnurl = v.keys("lnurl_server_nostrPubkey");
    let wrong = hex::encode([1u8; 32]);
    for preimage in [wrong.as_str(), "not hex"] {
        let forged = receipt(tags_with(&valid, "preimage", &[preimage]), &lnurl);
        assert_eq!(
            verify_receipt(&forged, &v.expectation()),
            Err(ZapRejection::Preimage)
        );
    }
    let without = receipt(tags_with(&valid, "preimage", &[]), &lnurl);
    verify_receipt(&without, &v.expectation()).unwrap();
}

#[test]
fn a_broken_or_missing_bolt11_is_refused() {
    let v = Vectors::load();
    let valid = v.valid_receipt();
    let lnurl = v.keys("lnurl_server_nostrPubkey");
    let bolt11 = v.str(&["invoice", "bolt11"]);
    // One character changed: the checksum (or the signature) no longer holds.
    let mut flipped = bolt11.to_owned();
    let at = flipped.len() - 10;
    let c = if &flipped[at..=at] == "q" { "p" } else { "q" };
    flipped.replace_range(at..=at, c);
    for values in [vec![flipped.as_str()], vec!["lnbc1nonsense"], vec![]] {
        let forged = receipt(tags_with(&valid, "bolt11", &values), &lnurl);
        assert_eq!(
            category(verify_receipt(&forged, &v.expectation())),
            RejectionCategory::Bolt11,
            "{values:?}"
        );
    }
}

#[test]
fn a_description_that_is_not_a_signed_zap_request_is_refused() {
    let v = Vectors::load();
    let valid = v.valid_receipt();
    let lnurl = v.keys("lnurl_server_nostrPubkey");
    let note = EventBuilder::text_note("hi")
        .sign_with_keys(&v.keys("customer"))
        .unwrap()
        .as_json();
    let mut tampered: Value = serde_json::from_str(v.str(&["zap_request_json_as_sent"])).unwrap();
    tampered["content"] = Value::from("edited");
    let tampered = tampered.to_string();
    for description in ["not json", note.as_str(), tampered.as_str()] {
        let forged = receipt(tags_with(&valid, "description", &[description]), &lnurl);
        assert_eq!(
            category(verify_receipt(&forged, &v.expectation())),
            RejectionCategory::ZapRequest,
            "{description}"
        );
    }
}

#[test]
fn only_kind_9735_is_a_receipt() {
    let v = Vectors::load();
    let note = EventBuilder::text_note("hi")
        .sign_with_keys(&v.keys("lnurl_server_nostrPubkey"))
        .unwrap();
    assert_eq!(
        verify_receipt(&note, &v.expectation()),
        Err(ZapRejection::NotAReceipt(1))
    );
}

mod mutations {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any change to the description's bytes or the bolt11's characters, even in a receipt
        /// re-signed by the genuine LNURL key, is refused (and never panics).
        #[test]
        fn an_edited_description_or_bolt11_is_never_accepted(
            in_description in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in 0x20u8..0x7f,
        ) {
            let v = Vectors::load();
            let valid = v.valid_receipt();
            let name = if in_description { "description" } else { "bolt11" };
            let original = valid
                .tags
                .iter()
                .find(|t| t.as_slice()[0] == name)
                .unwrap()
                .as_slice()[1]
                .clone();
            let mut bytes = original.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let edited = String::from_utf8(bytes).unwrap();
            let forged = receipt(
                tags_with(&valid, name, &[edited.as_str()]),
                &v.keys("lnurl_server_nostrPubkey"),
            );
            prop_assert!(verify_receipt(&forged, &v.expectation()).is_err());
        }
    }
}
