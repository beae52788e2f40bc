//! NIP-61 NutZaps (kind 9321) through `nutzap::parse` and `verify_nutzap`, and a customer's
//! kind 10019 through `parse_nutzap_info`.
//!
//! Input: byte 0 picks the mode.
//! - `0`: the rest is the event's tags as JSON (`[["proof", "…"], …]`), any shape.
//! - `1`: one of the synthetic vector NutZaps with up to 4 tag edits (drop, repeat, move, one
//!   byte of a value changed, a value from a pool).
//! - otherwise a NutZap built here: up to 6 proofs signed by the test mint (whose private keys
//!   the vectors give) for secrets the fuzzer writes (P2PK to our key or others, with pubkeys,
//!   n_sigs, locktime, refund and sigflag conditions; plain; HTLC), each maybe broken in one
//!   place (amount, secret, C, a DLEQ scalar, keyset); `u`, `unit`, `p` and `e` tags from pools
//!   (other spellings of the mint, `sats`, our identity or another key), in any order.
//!
//! Asserts: no panic; an accepted NutZap names us in a `p` tag, comes from the trusted mint, and
//! every proof was really signed by the mint (C = k·hash_to_curve(secret) with the mint's
//! private key), is locked so that only our NutZap key can spend it for at least the locktime
//! margin (read from the secret's JSON, not with cdk: no other `pubkeys`, `n_sigs` 1, no
//! SIG_ALL), is in the NutZap's unit and appears once; the amount is the sum times the unit's
//! msat. `parse_nutzap_info` keeps a hex key, at most 4 websocket relays and normalised mints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paydvm_fuzz::cashu::{self, Taken, FIXTURE, NOW};
use paydvm_fuzz::input::Input;
use paydvm_mints::events::{parse_nutzap_info, MAX_INFO_RELAYS};
use paydvm_mints::{normalise_mint_url, verify_nutzap, NutZapEvent};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = &*FIXTURE;
    let mut input = Input::new(rest);
    let (id, author, tags) = match mode % 4 {
        0 => match serde_json::from_slice::<Vec<Vec<String>>>(rest) {
            Ok(tags) => ("ab".repeat(32), f.customer.clone(), tags),
            Err(_) => return,
        },
        1 => edited_vector(&mut input),
        _ => ("CD".repeat(32), f.customer.clone(), built_tags(&mut input)),
    };
    let now = if input.coin() {
        NOW
    } else {
        input.number(&[NOW, NOW + 3600, u64::MAX])
    };
    check_info(&tags);
    let event = NutZapEvent {
        id: &id,
        author: &author,
        tags: &tags,
    };
    if let Ok(v) = verify_nutzap(&event, &f.us, &f.registry, now) {
        cashu::check_accepted(&v, Taken::NutZap, now);
        assert_eq!(v.event_id, id.to_ascii_lowercase());
        assert_eq!(v.sender, author.to_ascii_lowercase());
        let identity = f.us.identity.as_str();
        assert!(tags
            .iter()
            .any(|t| t.len() >= 2 && t[0] == "p" && t[1].eq_ignore_ascii_case(identity)));
        let first_e = tags.iter().find(|t| t.len() >= 2 && t[0] == "e");
        assert_eq!(v.target, first_e.map(|t| t[1].to_ascii_lowercase()));
    }
});

fn check_info(tags: &[Vec<String>]) {
    let Some(info) = parse_nutzap_info(tags) else {
        return;
    };
    assert!(matches!(info.pubkey.len(), 64 | 66));
    assert!(info
        .pubkey
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(info.relays.len() <= MAX_INFO_RELAYS);
    assert!(info
        .relays
        .iter()
        .all(|r| r.len() <= 256 && (r.starts_with("wss://") || r.starts_with("ws://"))));
    assert!(info.mints.iter().all(|m| normalise_mint_url(m) == *m));
}

fn edited_vector(input: &mut Input) -> (String, String, Vec<Vec<String>>) {
    let f = &*FIXTURE;
    let (id, author, mut tags) = input.pick(&f.events);
    for _ in 0..input.below(5) {
        if tags.is_empty() {
            break;
        }
        let at = input.below(tags.len());
        match input.byte() % 6 {
            0 => {
                tags.remove(at);
            }
            1 => tags.push(tags[at].clone()),
            2 => {
                let t = tags.remove(at);
                let to = input.below(tags.len() + 1);
                tags.insert(to, t);
            }
            3 if tags[at].len() > 1 => {
                let mut bytes = std::mem::take(&mut tags[at][1]).into_bytes();
                if !bytes.is_empty() {
                    let i = input.below(bytes.len());
                    bytes[i] = input.pick(b"0123456789abcdef\"\\,:{}[] ");
                }
                tags[at][1] = String::from_utf8_lossy(&bytes).into_owned();
            }
            _ => {
                let name = tags[at][0].clone();
                tags[at] = tag_from_pool(input, &name);
            }
        }
    }
    (id, author, tags)
}

fn built_tags(input: &mut Input) -> Vec<Vec<String>> {
    let mut tags: Vec<Vec<String>> = Vec::new();
    for _ in 0..=input.below(6) {
        let proof = cashu::proof(input);
        tags.push(vec!["proof".into(), cashu::proof_json(&proof)]);
    }
    if input.byte() < 8 {
        let t = tags[0].clone();
        tags.push(t);
    }
    for name in ["u", "unit", "p", "e"] {
        let n = match input.byte() % 16 {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for _ in 0..n {
            let t = tag_from_pool(input, name);
            let at = input.below(tags.len() + 1);
            tags.insert(at, t);
        }
    }
    tags
}

fn tag_from_pool(input: &mut Input, name: &str) -> Vec<String> {
    let f = &*FIXTURE;
    let value = match name {
        "u" => input.pick(&[
            f.url.clone(),
            f.url.clone(),
            format!("{}/", f.url.to_uppercase()),
            "https://other-mint.example".into(),
            String::new(),
        ]),
        "unit" => input.pick(&["sat", "sat", "sats", " SAT ", "msat", "usd", ""].map(String::from)),
        "p" => input.pick(&[
            f.us.identity.clone(),
            f.us.identity.clone(),
            f.us.identity.to_uppercase(),
            f.us.p2pk.clone(),
            f.customer.clone(),
        ]),
        "e" => input.pick(&[
            f.feedback.clone(),
            f.feedback.to_uppercase(),
            "zz".into(),
            "0".repeat(64),
            "0".repeat(65),
        ]),
        _ => cashu::proof_json(&cashu::proof(input)),
    };
    if input.byte() < 4 {
        vec![name.to_owned()]
    } else {
        vec![name.to_owned(), value]
    }
}
