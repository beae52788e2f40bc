//! NIP-57 zap receipts (kind 9735) through `verify_receipt` and `verify_for_job`.
//!
//! Input: byte 0 picks the mode.
//! - `0`: one of the synthetic vector receipts (valid and invalid) as JSON with up to 4 bytes
//!   changed, read back with `Event::from_json`.
//! - `1`: the rest is any JSON, read as an event.
//! - otherwise a receipt built here with the vectors' keys, so it gets past the signatures: a
//!   zap request (kind 9734, signed by the customer) whose `p`, `e`, `amount` and extra tags
//!   come from pools; its JSON, maybe edited after signing; a regtest invoice (signed by the
//!   vectors' node key) for an amount and a description hash the fuzzer picks (usually the
//!   matching ones); receipt tags copied, changed, doubled or left out; signed by our LNURL
//!   server's key (or the customer's), maybe as another kind, maybe edited after signing.
//!
//! Asserts: no panic; a changed vector receipt verifies only if it reads back as the very same
//! event; for built receipts, `verify_receipt` accepts exactly when a model of the NIP-57 rules
//! written apart from the verifier (a map of tag values, see `model`) does, and the verified
//! zap's amount, payer, payment hash, target, id and bolt11 are the model's; `verify_for_job`
//! accepts only zaps that target the job or its feedback.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use libfuzzer_sys::fuzz_target;
use nostr_sdk::prelude::{Event, EventBuilder, EventId, JsonUtil, Keys, Kind, Tag, Timestamp};
use paydvm::lightning::bolt11::{Description, Invoice};
use paydvm::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
use paydvm::payments::zap::{verify_for_job, verify_receipt, VerifiedZap, ZapExpectation};
use paydvm_fuzz::input::Input;
use paydvm_fuzz::vectors::{self, str_at};

struct Fixture {
    customer: Keys,
    lnurl: Keys,
    us: Keys,
    node: SecretKey,
    expect: ZapExpectation,
    job: EventId,
    feedback: EventId,
    receipts: Vec<String>,
    vector_invoice: String,
}

static F: LazyLock<Fixture> = LazyLock::new(|| {
    let v = vectors::zap();
    let keys = |who: &str| Keys::parse(str_at(v, &["keys", who, "sec"])).expect("vector key");
    let id = |path: &[&str]| EventId::from_hex(str_at(v, path)).expect("vector id");
    let node_sec = hex::decode(str_at(v, &["keys", "lightning_node", "sec"])).expect("hex");
    let us = keys("dvm_identity");
    let lnurl = keys("lnurl_server_nostrPubkey");
    Fixture {
        expect: ZapExpectation {
            recipient: us.public_key(),
            lnurl_signer: lnurl.public_key(),
        },
        customer: keys("customer"),
        node: SecretKey::from_slice(&node_sec).expect("vector node key"),
        job: id(&["job_request", "id"]),
        feedback: id(&["payment_required_feedback", "id"]),
        receipts: v["receipts"]
            .as_array()
            .expect("receipts")
            .iter()
            .map(|c| c["receipt"].to_string())
            .collect(),
        vector_invoice: str_at(v, &["invoice", "bolt11"]).to_owned(),
        us,
        lnurl,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = &*F;
    let mut input = Input::new(rest);
    match mode % 4 {
        0 => edited_vector(&mut input),
        1 => {
            if let Ok(event) = Event::from_json(String::from_utf8_lossy(rest).as_ref()) {
                let _ = verify_for_job(&event, &f.expect, &job_events());
            }
        }
        _ => {
            let receipt = built_receipt(&mut input);
            let got = verify_receipt(&receipt, &f.expect);
            let want = model(&receipt);
            match (&got, &want) {
                (Ok(zap), Some(w)) => assert_eq!(zap, w),
                (Err(_), None) => {}
                _ => panic!(
                    "verifier {got:?} but the model {want:?} for {}",
                    receipt.as_json()
                ),
            }
            check_for_job(&receipt, got.ok());
        }
    }
});

fn job_events() -> HashSet<EventId> {
    [F.job, F.feedback].into()
}

fn check_for_job(receipt: &Event, verified: Option<VerifiedZap>) {
    let for_job = verify_for_job(receipt, &F.expect, &job_events());
    match (verified, for_job) {
        (Some(zap), Ok(j)) => {
            assert_eq!(zap, j);
            assert!(zap.target.is_some_and(|t| job_events().contains(&t)));
        }
        (Some(zap), Err(_)) => assert!(zap.target.is_none_or(|t| !job_events().contains(&t))),
        (None, Ok(_)) => panic!("verify_for_job accepted what verify_receipt refused"),
        (None, Err(_)) => {}
    }
}

fn edited_vector(input: &mut Input) {
    let f = &*F;
    let original_json = input.pick(&f.receipts);
    let Ok(original) = Event::from_json(&original_json) else {
        return;
    };
    let mut bytes = original_json.into_bytes();
    for _ in 0..=input.below(4) {
        let at = input.below(bytes.len());
        bytes[at] = input.pick(b" 0123456789abcdef\"\\,:[]{}pPe\n");
    }
    let Ok(edited) = Event::from_json(String::from_utf8_lossy(&bytes).as_ref()) else {
        return;
    };
    let verified = verify_for_job(&edited, &f.expect, &job_events());
    if verified.is_ok() {
        assert_eq!(edited, original, "an edited receipt verified");
    }
}

/// A receipt from pools of plausible and broken parts, signed with the vectors' keys.
fn built_receipt(input: &mut Input) -> Event {
    let f = &*F;
    let (request, description) = zap_request(input);
    let amount = request
        .tags
        .iter()
        .find(|t| t.as_slice()[0] == "amount")
        .and_then(|t| t.as_slice().get(1)?.trim_start_matches('+').parse().ok())
        .unwrap_or(21_000u64);
    let bolt11 = match input.byte() % 16 {
        0 => f.vector_invoice.clone(),
        1 => input.pick(&vectors::bolt11_invoices()).to_owned(),
        2 => input.text(64),
        _ => {
            let hashed = if input.byte() < 240 {
                description.clone()
            } else {
                request.as_json()
            };
            let spec = InvoiceSpec {
                amount_msat: input.number(&[amount]),
                description_hash: sha256::Hash::hash(hashed.as_bytes()),
                preimage: [7; 32],
                created: Duration::from_secs(1_750_000_011),
                expiry: Duration::from_secs(600),
            };
            regtest_invoice(&f.node, &spec)
                .map(|i| i.to_string())
                .unwrap_or_default()
        }
    };
    let mut tags: Vec<Vec<String>> = Vec::new();
    let copied = |name: &str| -> Vec<Vec<String>> {
        request
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == name)
            .map(|t| t.as_slice().to_vec())
            .collect()
    };
    let preimage_ok = hex::encode([7u8; 32]);
    let someone = f.lnurl.public_key().to_hex();
    let payer = request.pubkey.to_hex();
    let feedback = f.feedback.to_hex();
    let mut field =
        |input: &mut Input, name: &str, right: Vec<Vec<String>>, wrong: &[&str]| match input.byte()
            % 8
        {
            0 => {}
            1 => tags.push(vec![name.to_owned()]),
            2 => {
                tags.push(vec![name.to_owned(), input.pick(wrong).to_owned()]);
            }
            3 => {
                tags.extend(right.clone());
                tags.extend(right);
            }
            _ => tags.extend(right),
        };
    let named = |n: &str, v: &str| vec![vec![n.to_owned(), v.to_owned()]];
    field(input, "p", copied("p"), &[&someone, &payer]);
    field(input, "e", copied("e"), &[&feedback, "zz"]);
    field(input, "P", named("P", &payer), &[&someone]);
    field(input, "bolt11", named("bolt11", &bolt11), &["lnbc1"]);
    field(
        input,
        "description",
        named("description", &description),
        &["{}"],
    );
    field(
        input,
        "preimage",
        named("preimage", &preimage_ok),
        &["00", "not hex"],
    );
    if input.byte() < 16 {
        let at = input.below(tags.len() + 1);
        tags.insert(at, vec!["k".into(), "7000".into()]);
    }
    let signer = if input.byte() < 240 {
        &f.lnurl
    } else {
        &f.customer
    };
    let kind = if input.byte() < 248 { 9735 } else { 9734 };
    let receipt = sign(kind, "", tags, signer, 1_750_000_020);
    if input.byte() < 8 {
        // Edited after signing: the id no longer matches.
        let mut json: serde_json::Value = serde_json::from_str(&receipt.as_json()).expect("json");
        json["created_at"] = 1_750_000_021u64.into();
        return Event::from_json(json.to_string()).expect("still an event");
    }
    receipt
}

/// A signed zap request and the description text the receipt carries (usually its JSON).
fn zap_request(input: &mut Input) -> (Event, String) {
    let f = &*F;
    let us = f.us.public_key().to_hex();
    let other = f.lnurl.public_key().to_hex();
    let job = f.job.to_hex();
    let feedback = f.feedback.to_hex();
    let mut tags = vec![vec!["relays".to_owned(), "wss://relay.example".to_owned()]];
    let mut add = |input: &mut Input, name: &str, pool: &[&str]| {
        for _ in 0..input.pick(&[1, 1, 1, 1, 0, 2]) {
            let mut tag = vec![name.to_owned()];
            if input.byte() < 250 {
                tag.push(input.pick(pool).to_owned());
            }
            tags.push(tag);
        }
    };
    add(input, "p", &[&us, &us, &us, &other, &us.to_uppercase(), ""]);
    add(input, "e", &[&feedback, &job, &"0".repeat(64), "zz"]);
    let amount = input.number(&[21_000, 1, 0]).to_string();
    let plus = format!("+{amount}");
    add(
        input,
        "amount",
        &[&amount, &amount, &plus, "", "-1", " 1", "1.0"],
    );
    let signer = if input.byte() < 248 {
        &f.customer
    } else {
        &f.us
    };
    let kind = if input.byte() < 250 { 9734 } else { 9735 };
    let content = input.pick(&["", "", "thanks", "\u{0}\"\\"]);
    let request = sign(kind, content, tags, signer, 1_750_000_010);
    let mut description = request.as_json();
    match input.byte() % 32 {
        0 => {
            let mut bytes = description.into_bytes();
            let at = input.below(bytes.len());
            bytes[at] = input.pick(b" 0123456789abcdef\"\\,:");
            description = String::from_utf8_lossy(&bytes).into_owned();
        }
        1 => {
            let v: serde_json::Value = serde_json::from_str(&description).expect("json");
            description = serde_json::to_string_pretty(&v).expect("json");
        }
        _ => {}
    }
    (request, description)
}

fn sign(kind: u16, content: &str, tags: Vec<Vec<String>>, keys: &Keys, at: u64) -> Event {
    let tags: Vec<Tag> = tags
        .into_iter()
        .filter_map(|t| Tag::parse(t).ok())
        .collect();
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .allow_self_tagging()
        .custom_created_at(Timestamp::from_secs(at))
        .sign_with_keys(keys)
        .expect("signing with a fixed key")
}

/// The NIP-57 rules (shared/protocol/nip57-zaps.md §5), written apart from the verifier: the
/// zap this receipt proves, or `None`.
fn model(receipt: &Event) -> Option<VerifiedZap> {
    let f = &*F;
    if receipt.kind.as_u16() != 9735 || !receipt.verify_id() || !receipt.verify_signature() {
        return None;
    }
    if receipt.pubkey != f.lnurl.public_key() {
        return None;
    }
    let tags = TagValues::of(receipt);
    let bolt11 = tags.exactly_one("bolt11")?;
    let invoice = Invoice::parse(bolt11).ok()?;
    let amount = invoice.amount()?;
    let Description::Hash(h) = invoice.description() else {
        return None;
    };
    let description = tags.exactly_one("description")?;
    if sha256::Hash::hash(description.as_bytes()).to_byte_array() != h {
        return None;
    }
    let request = Event::from_json(description).ok()?;
    if request.kind.as_u16() != 9734 || !request.verify_id() || !request.verify_signature() {
        return None;
    }
    let asked = TagValues::of(&request);
    let p = asked.exactly_one("p")?;
    if p != f.us.public_key().to_hex() || tags.exactly_one("p")? != p {
        return None;
    }
    let target = match asked.at_most_one("e")? {
        Some(e) => Some(EventId::from_hex(e).ok()?),
        None => None,
    };
    let receipt_target = match tags.at_most_one("e")? {
        Some(e) => Some(EventId::from_hex(e).ok()?),
        None => None,
    };
    if receipt_target != target {
        return None;
    }
    let requested: u64 = asked.at_most_one("amount")??.parse().ok()?;
    if requested != amount.as_msat() {
        return None;
    }
    if let Some(sender) = tags.at_most_one("P")? {
        if sender != request.pubkey.to_hex() {
            return None;
        }
    }
    if let Some(preimage) = tags.at_most_one("preimage")? {
        let bytes = hex::decode(preimage).ok()?;
        if bytes.len() != 32
            || sha256::Hash::hash(&bytes).to_byte_array() != invoice.payment_hash_bytes()
        {
            return None;
        }
    }
    Some(VerifiedZap {
        receipt_id: receipt.id,
        payer: request.pubkey,
        amount,
        payment_hash: invoice.payment_hash(),
        target,
        bolt11: bolt11.to_owned(),
    })
}

/// Each tag name's values (`None` for a tag with a name only).
struct TagValues(Vec<(String, Option<String>)>);

impl TagValues {
    fn of(event: &Event) -> TagValues {
        TagValues(
            event
                .tags
                .iter()
                .map(|t| (t.as_slice()[0].clone(), t.as_slice().get(1).cloned()))
                .collect(),
        )
    }

    /// `Some(None)`: no such tag; `Some(Some(v))`: one, with a value; `None`: several, or one
    /// without a value.
    fn at_most_one(&self, name: &str) -> Option<Option<&str>> {
        let mut found = self.0.iter().filter(|(n, _)| n == name);
        match (found.next(), found.next()) {
            (None, _) => Some(None),
            (Some((_, Some(v))), None) => Some(Some(v.as_str())),
            _ => None,
        }
    }

    fn exactly_one(&self, name: &str) -> Option<&str> {
        self.at_most_one(name)?
    }
}
