//! The project's NutZap vectors and the NUT-11/12 vectors where our code does the work.

use cdk::nuts::{KeySet, Proof, PublicKey, SecretKey};
use serde_json::Value;

use crate::nutzap::NutZapEvent;
use crate::registry::{MintRegistry, TrustedMint};
use crate::verify::{verify_nutzap, Recipient, Reject};

const NUTZAP: &str = include_str!("../vectors/synthetic-nutzap.vectors.json");
const NUT11: &str = include_str!("../vectors/nut11.vectors.json");
const NUT12: &str = include_str!("../vectors/nut12.vectors.json");

/// When the vectors were made (the valid case's `created_at`), as "now".
const VECTOR_NOW: u64 = 1_750_000_030;

struct Fixture {
    v: Value,
    mints: MintRegistry,
    us: Recipient,
}

fn fixture() -> Fixture {
    let v: Value = serde_json::from_str(NUTZAP).unwrap();
    let mint = &v["mint"];
    let url = mint["url"].as_str().unwrap();
    let keyset: KeySet = serde_json::from_value(serde_json::json!({
        "id": mint["keyset_id"],
        "unit": mint["unit"],
        "keys": mint["keys"],
    }))
    .unwrap();
    let mut mints = MintRegistry::new(vec![TrustedMint::new(url, ["sat"])]);
    mints.insert_keyset(url, keyset).unwrap();
    let us = Recipient {
        identity: v["keys"]["dvm_identity"]["pub"].as_str().unwrap().into(),
        p2pk: v["keys"]["dvm_p2pk_wallet"]["pub_xonly"]
            .as_str()
            .unwrap()
            .into(),
    };
    Fixture { v, mints, us }
}

fn tags(event: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(event["tags"].clone()).unwrap()
}

fn check(f: &Fixture, event: &Value, now: u64) -> Result<crate::VerifiedNutZap, Reject> {
    let tags = tags(event);
    let ev = NutZapEvent {
        id: event["id"].as_str().unwrap(),
        author: event["pubkey"].as_str().unwrap(),
        tags: &tags,
    };
    verify_nutzap(&ev, &f.us, &f.mints, now)
}

fn case<'a>(f: &'a Fixture, prefix: &str) -> &'a Value {
    f.v["nutzaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no case {prefix}"))
}

#[test]
fn every_synthetic_nutzap_behaves_as_labelled() {
    let f = fixture();
    let cases = f.v["nutzaps"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let mut valid_ys: Vec<String> = Vec::new();
    for c in cases {
        let label = c["case"].as_str().unwrap();
        let got = check(&f, &c["event"], VECTOR_NOW);
        match c["expect"].as_str().unwrap() {
            "valid" => {
                let ok = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(ok.units, c["total_sat"].as_u64().unwrap(), "{label}");
                assert_eq!(ok.amount.as_msat(), 17_000);
                assert_eq!(ok.mint, "https://mint.example");
                assert_eq!(ok.sender, c["event"]["pubkey"].as_str().unwrap());
                assert_eq!(
                    ok.target.as_deref(),
                    f.v["payment_required_feedback"]["id"].as_str()
                );
                for y in c["proof_Ys"].as_array().unwrap() {
                    assert!(ok.ys.contains(&y.as_str().unwrap().to_owned()), "{label}");
                }
                valid_ys = ok.ys;
            }
            "invalid" => assert!(got.is_err(), "{label} was accepted"),
            "reject-or-redeem-immediately" => {
                // Its locktime is 1 h after the event: inside our margin, so refused.
                assert_eq!(
                    got.unwrap_err(),
                    Reject::LockExpiresTooSoon { index: 0 },
                    "{label}"
                );
            }
            "duplicate" => {
                // Offline it is as good as the first; the ledger refuses its Ys a second time.
                let ok = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                assert!(
                    ok.ys.iter().any(|y| valid_ys.contains(y)),
                    "{label}: shares no Y with the valid NutZap"
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

#[test]
fn each_invalid_case_is_refused_for_its_own_reason() {
    let f = fixture();
    let reason = |prefix| check(&f, &case(&f, prefix)["event"], VECTOR_NOW).unwrap_err();
    assert_eq!(
        reason("mint URL not in"),
        Reject::UnlistedMint {
            mint: "https://other-mint.example".into()
        }
    );
    assert_eq!(
        reason("proof locked to the DVM's Nostr identity"),
        Reject::LockedToIdentityKey { index: 0 }
    );
    assert!(matches!(
        reason("DLEQ s value tampered"),
        Reject::InvalidDleq { .. }
    ));
}

/// Rewrites the valid NutZap's tags with `edit`, then verifies it.
fn edited(
    f: &Fixture,
    edit: impl FnOnce(&mut Vec<Vec<String>>),
) -> Result<crate::VerifiedNutZap, Reject> {
    let event = &case(f, "valid")["event"];
    let mut tags = tags(event);
    edit(&mut tags);
    let ev = NutZapEvent {
        id: event["id"].as_str().unwrap(),
        author: event["pubkey"].as_str().unwrap(),
        tags: &tags,
    };
    verify_nutzap(&ev, &f.us, &f.mints, VECTOR_NOW)
}

fn set_tag(tags: &mut [Vec<String>], name: &str, value: &str) {
    for t in tags.iter_mut().filter(|t| t[0] == name) {
        t[1] = value.to_owned();
    }
}

#[test]
fn mint_url_spelling_unit_spelling_and_targets() {
    let f = fixture();
    // Same mint, other spelling: accepted.
    assert!(edited(&f, |t| set_tag(t, "u", "HTTPS://Mint.Example/")).is_ok());
    // nostrdvm's "sats" is "sat"; a missing unit tag means sat.
    assert!(edited(&f, |t| set_tag(t, "unit", "sats")).is_ok());
    assert!(edited(&f, |t| t.retain(|t| t[0] != "unit")).is_ok());
    assert_eq!(
        edited(&f, |t| set_tag(t, "unit", "usd")).unwrap_err(),
        Reject::UnitNotAccepted { unit: "usd".into() }
    );
    // No `e`: credit to the sender.
    let no_job = edited(&f, |t| t.retain(|t| t[0] != "e")).unwrap();
    assert_eq!(no_job.target, None);
    // Not p-tagged to us.
    assert_eq!(
        edited(&f, |t| set_tag(t, "p", &"ab".repeat(32))).unwrap_err(),
        Reject::NotForUs
    );
}

#[test]
fn keyset_unit_must_match_the_nutzap_unit() {
    let mut f = fixture();
    let url = "https://mint.example";
    // The mint also lists msat, but the proofs are from its sat keyset.
    f.mints = MintRegistry::new(vec![TrustedMint::new(url, ["sat", "msat"])]);
    let mint = &f.v["mint"];
    let keyset: KeySet = serde_json::from_value(serde_json::json!({
        "id": mint["keyset_id"], "unit": "sat", "keys": mint["keys"],
    }))
    .unwrap();
    f.mints.insert_keyset(url, keyset).unwrap();
    assert!(matches!(
        edited(&f, |t| set_tag(t, "unit", "msat")).unwrap_err(),
        Reject::KeysetUnitMismatch { index: 0, .. }
    ));
}

#[test]
fn proofs_without_dleq_from_unknown_keysets_or_repeated_are_refused() {
    let f = fixture();
    let strip_dleq = |t: &mut Vec<Vec<String>>| {
        let p = t.iter_mut().find(|t| t[0] == "proof").unwrap();
        let mut proof: Value = serde_json::from_str(&p[1]).unwrap();
        proof.as_object_mut().unwrap().remove("dleq");
        p[1] = proof.to_string();
    };
    assert_eq!(
        edited(&f, strip_dleq).unwrap_err(),
        Reject::MissingDleq { index: 0 }
    );
    let empty = MintRegistry::new(vec![TrustedMint::new("https://mint.example", ["sat"])]);
    let g = Fixture {
        v: f.v.clone(),
        mints: empty,
        us: f.us.clone(),
    };
    assert!(matches!(
        edited(&g, |_| {}).unwrap_err(),
        Reject::UnknownKeyset { index: 0, .. }
    ));
    assert_eq!(
        edited(&f, |t| {
            let first = t.iter().find(|t| t[0] == "proof").unwrap().clone();
            t.push(first);
        })
        .unwrap_err(),
        Reject::DuplicateProof { index: 4 }
    );
    // Locked to someone else entirely.
    let other = Recipient {
        identity: f.us.identity.clone(),
        p2pk: "11".repeat(32),
    };
    let h = Fixture {
        v: f.v.clone(),
        mints: fixture().mints,
        us: other,
    };
    assert_eq!(
        edited(&h, |_| {}).unwrap_err(),
        Reject::LockedToOtherKey { index: 0 }
    );
}

#[test]
fn malformed_nutzaps_are_refused_not_panicked_on() {
    let f = fixture();
    for edit in [
        (|t: &mut Vec<Vec<String>>| t.retain(|t| t[0] != "u")) as fn(&mut Vec<Vec<String>>),
        |t| t.retain(|t| t[0] != "proof"),
        |t| set_tag(t, "proof", "{not json"),
        |t| set_tag(t, "e", "zz"),
        |t| t.push(vec!["u".into(), "https://mint.example".into()]),
        |t| {
            for _ in 0..100 {
                t.push(t[0].clone());
            }
        },
    ] {
        assert!(matches!(
            edited(&f, edit).unwrap_err(),
            Reject::Malformed(_)
        ));
    }
}

#[test]
fn our_witness_for_the_first_proof_verifies() {
    let f = fixture();
    let event = &case(&f, "valid")["event"];
    let first = tags(event).into_iter().find(|t| t[0] == "proof").unwrap();
    let mut proof: Proof = serde_json::from_str(&first[1]).unwrap();
    let key = SecretKey::from_hex(f.v["keys"]["dvm_p2pk_wallet"]["sec"].as_str().unwrap()).unwrap();
    // NIP-61 locks to "02" + x-only; BIP-340 signing does not care about the parity.
    proof.sign_p2pk(key.clone()).unwrap();
    proof.verify_p2pk().unwrap();
    // The vector's own witness (zero aux randomness) verifies too.
    let expected = case(&f, "valid")["example_witness_for_first_proof"]
        .as_str()
        .unwrap();
    let witness: cdk::nuts::nut11::P2PKWitness = serde_json::from_str(expected).unwrap();
    proof.witness = Some(witness.into());
    proof.verify_p2pk().unwrap();
}

#[test]
fn nut12_proof_dleq_vector() {
    let v: Value = serde_json::from_str(NUT12).unwrap();
    let case = &v["dleq_on_proof"];
    let proof: Proof = serde_json::from_value(case["proof"].clone()).unwrap();
    let a = PublicKey::from_hex(case["A"].as_str().unwrap()).unwrap();
    assert_eq!(
        proof.verify_dleq(a).is_ok(),
        case["valid"].as_bool().unwrap()
    );
}

#[test]
fn nut11_locks_we_cannot_satisfy_alone_are_refused() {
    // The NUT-11 vectors' proofs, as if their `data` key were ours: multisig and expired
    // locktimes must be refused by our lock check, plain locks accepted.
    let v: Value = serde_json::from_str(NUT11).unwrap();
    let mut seen = (0, 0);
    for vector in v["vectors"].as_array().unwrap() {
        let Ok(proof) = serde_json::from_value::<Proof>(vector["data"].clone()) else {
            continue;
        };
        let Ok(cdk::nuts::SpendingConditions::P2PKConditions { data, conditions }) =
            cdk::nuts::SpendingConditions::try_from(&proof.secret)
        else {
            continue;
        };
        let us = Recipient {
            identity: "ff".repeat(32),
            p2pk: hex::encode(data.x_only_public_key().serialize()),
        };
        let got = super::verify::check_lock_for_tests(0, &proof, &us, VECTOR_NOW);
        let multisig = conditions
            .as_ref()
            .and_then(|c| c.num_sigs)
            .is_some_and(|n| n > 1);
        let locktime = conditions.as_ref().and_then(|c| c.locktime);
        let others = conditions
            .as_ref()
            .and_then(|c| c.pubkeys.clone())
            .unwrap_or_default()
            .iter()
            .any(|k| k.x_only_public_key() != data.x_only_public_key());
        if multisig {
            assert_eq!(got, Err(Reject::Multisig { index: 0 }));
            seen.0 += 1;
        } else if locktime.is_some_and(|l| l < VECTOR_NOW + 3600) {
            assert_eq!(got, Err(Reject::LockExpiresTooSoon { index: 0 }));
        } else if others {
            assert_eq!(got, Err(Reject::OtherSpender { index: 0 }));
        } else if conditions
            .as_ref()
            .is_none_or(|c| c.sig_flag != cdk::nuts::SigFlag::SigAll)
        {
            assert_eq!(got, Ok(()), "{}", vector["description"]);
            seen.1 += 1;
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "{seen:?}");
}

/// A proof whose secret is `secret` (the lock check reads nothing else).
fn proof_with_secret(secret: &str) -> Proof {
    let c = SecretKey::from_slice(&[3; 32]).unwrap().public_key();
    let id = "009a1f293253e41e".parse().unwrap();
    Proof::new(1u64.into(), id, secret.parse().unwrap(), c)
}

#[test]
fn locks_another_key_could_spend_or_that_repeat_a_condition_are_refused() {
    // Found by the `nutzap` fuzz target: `pubkeys` adds keys that may sign too (n_sigs
    // defaults to 1), so a lock to our key with the sender in `pubkeys` was taken although
    // the sender could spend it back before our swap.
    let f = fixture();
    let ours = format!("02{}", f.us.p2pk);
    let ours_odd = format!("03{}", f.us.p2pk);
    let sender = format!("02{}", f.v["keys"]["customer"]["pub"].as_str().unwrap());
    let lock = |tags: Value| {
        let secret = serde_json::json!(["P2PK", {"nonce": "00", "data": ours, "tags": tags}]);
        super::verify::check_lock_for_tests(
            0,
            &proof_with_secret(&secret.to_string()),
            &f.us,
            VECTOR_NOW,
        )
    };
    let other_spender = Err(Reject::OtherSpender { index: 0 });
    assert_eq!(
        lock(serde_json::json!([["pubkeys", sender]])),
        other_spender
    );
    assert_eq!(
        lock(serde_json::json!([
            ["pubkeys", ours_odd, sender],
            ["n_sigs", "1"]
        ])),
        other_spender
    );
    // Our own key again (either parity: keys are compared by x-coordinate) adds no spender.
    assert_eq!(lock(serde_json::json!([["pubkeys", ours_odd]])), Ok(()));
    // cdk reads the first `pubkeys`; a mint reading them all would let the sender in.
    assert_eq!(
        lock(serde_json::json!([
            ["pubkeys", ours_odd],
            ["pubkeys", sender]
        ])),
        Err(Reject::RepeatedCondition {
            index: 0,
            tag: "pubkeys".into()
        })
    );
    let far = (VECTOR_NOW + 7200).to_string();
    assert_eq!(
        lock(serde_json::json!([["locktime", far], ["locktime", "1"]])),
        Err(Reject::RepeatedCondition {
            index: 0,
            tag: "locktime".into()
        })
    );
    assert_eq!(lock(serde_json::json!([["locktime", far]])), Ok(()));
}

/// Fuzz finding (`cashu_token`, stop 32): a token proof whose secret is a P2PK lock to another
/// key, with its `nonce` misspelt, passed as a plain secret because cdk could not read it as a
/// lock. A mint that reads it anyway would enforce the lock, so we could not spend it. Such a
/// secret is refused; a plain one and a readable lock to another key keep their outcomes.
#[test]
fn a_token_secret_shaped_as_a_lock_cdk_cannot_read_is_refused() {
    use crate::verify::{check_proofs, DleqRule, LockRule, ProofRules};
    let f = fixture();
    let mint = f.v["mint"]["url"].as_str().unwrap();
    let keyset = f.v["mint"]["keyset_id"].as_str().unwrap();
    let g = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let lock = |nonce_field: &str| {
        serde_json::json!(["P2PK", {"data": g, nonce_field: "ab", "tags": [["sigflag", "SIG_INPUTS"]]}])
            .to_string()
    };
    let check = |secret: String| {
        let proof: Proof = serde_json::from_value(serde_json::json!(
            {"amount": 1, "id": keyset, "secret": secret, "C": g}
        ))
        .unwrap();
        let rules = ProofRules {
            lock: LockRule::PlainOrOurP2pkKey,
            dleq: DleqRule::IfPresent,
        };
        check_proofs(&f.mints, mint, "sat", &[proof], &f.us, VECTOR_NOW, rules).map(|p| p.units)
    };
    assert_eq!(check("a plain secret".into()), Ok(1));
    assert_eq!(
        check(lock("nonce")),
        Err(Reject::LockedToOtherKey { index: 0 })
    );
    assert_eq!(
        check(lock("nknce")),
        Err(Reject::UnreadableLock { index: 0 })
    );
}
