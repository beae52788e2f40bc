//! The Cashu side of the parser targets: the synthetic NutZap vectors' mint as a trusted mint
//! whose private keys we hold (its `sat` keyset, plus an `msat` keyset made here), so the
//! targets can sign proofs for any secret the fuzzer writes, with valid DLEQ proofs, then break
//! them in one place. And the oracle every accepted proof must satisfy, written apart from
//! `paydvm-mints`: the mint really signed it, and only our NutZap key can spend it.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use cdk::dhke::{blind_message, hash_to_curve, sign_message, unblind_message, verify_message};
use cdk::nuts::{BlindSignature, CurrencyUnit, Id, KeySet, Keys, Proof, ProofDleq, SecretKey};
use cdk::secret::Secret;
use cdk::Amount;
use paydvm_mints::{MintRegistry, Recipient, TrustedMint, VerifiedNutZap};
use serde_json::{json, Value};

use crate::input::Input;
use crate::vectors::{self, str_at};

/// The vectors' "now": locktimes are judged against it.
pub const NOW: u64 = 1_750_000_030;
/// The locktime margin of `paydvm_mints::verify` (`MIN_LOCKTIME_MARGIN_SECS`), restated.
const LOCKTIME_MARGIN: u64 = 3600;

/// One keyset of the test mint with its private keys.
pub struct SigningKeyset {
    pub keyset: KeySet,
    secrets: BTreeMap<u64, SecretKey>,
}

impl SigningKeyset {
    pub fn secret(&self, amount: u64) -> Option<&SecretKey> {
        self.secrets.get(&amount)
    }
}

pub struct Fixture {
    pub url: String,
    pub registry: MintRegistry,
    pub us: Recipient,
    /// The vectors' customer (the NutZap's author) as x-only hex.
    pub customer: String,
    pub sat: SigningKeyset,
    pub msat: SigningKeyset,
    /// The vector NutZaps: (id, author, tags).
    pub events: Vec<(String, String, Vec<Vec<String>>)>,
    /// The feedback the valid NutZap pays for.
    pub feedback: String,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(fixture);

fn fixture() -> Fixture {
    let v = vectors::nutzap();
    let mint = &v["mint"];
    let url = str_at(mint, &["url"]).to_owned();
    let sat_keyset: KeySet = serde_json::from_value(json!({
        "id": mint["keyset_id"], "unit": mint["unit"], "keys": mint["keys"],
    }))
    .expect("vector keyset");
    let sat = SigningKeyset {
        keyset: sat_keyset,
        secrets: secrets_of(&mint["private_keys_for_reference"]),
    };
    let msat = msat_keyset();
    let mut registry = MintRegistry::new(vec![TrustedMint::new(&url, ["sat", "msat"])]);
    registry
        .insert_keyset(&url, sat.keyset.clone())
        .expect("vector keyset id");
    registry
        .insert_keyset(&url, msat.keyset.clone())
        .expect("our keyset id");
    let events = v["nutzaps"]
        .as_array()
        .expect("nutzaps")
        .iter()
        .map(|c| {
            let e = &c["event"];
            (
                str_at(e, &["id"]).to_owned(),
                str_at(e, &["pubkey"]).to_owned(),
                serde_json::from_value(e["tags"].clone()).expect("string tags"),
            )
        })
        .collect();
    Fixture {
        us: Recipient {
            identity: str_at(v, &["keys", "dvm_identity", "pub"]).to_owned(),
            p2pk: str_at(v, &["keys", "dvm_p2pk_wallet", "pub_xonly"]).to_owned(),
        },
        customer: str_at(v, &["keys", "customer", "pub"]).to_owned(),
        feedback: str_at(v, &["payment_required_feedback", "id"]).to_owned(),
        url,
        registry,
        sat,
        msat,
        events,
    }
}

fn secrets_of(map: &Value) -> BTreeMap<u64, SecretKey> {
    map.as_object()
        .expect("amount → key")
        .iter()
        .map(|(amount, sec)| {
            let sec = SecretKey::from_hex(sec.as_str().expect("hex")).expect("a key");
            (amount.parse().expect("an amount"), sec)
        })
        .collect()
}

/// A second keyset (v1 id, unit msat) with keys derived from fixed labels.
fn msat_keyset() -> SigningKeyset {
    use bitcoin::hashes::{sha256, Hash};
    let secrets: BTreeMap<u64, SecretKey> = [1u64, 2, 4, 8, 16]
        .iter()
        .map(|a| {
            let seed = sha256::Hash::hash(format!("paydvm-fuzz-msat:{a}").as_bytes());
            (
                *a,
                SecretKey::from_slice(seed.as_byte_array()).expect("a key"),
            )
        })
        .collect();
    let keys = Keys::new(
        secrets
            .iter()
            .map(|(a, s)| (Amount::from(*a), s.public_key()))
            .collect(),
    );
    SigningKeyset {
        keyset: KeySet {
            id: Id::v1_from_keys(&keys),
            unit: CurrencyUnit::Msat,
            active: Some(true),
            keys,
            input_fee_ppk: 0,
            final_expiry: None,
        },
        secrets,
    }
}

/// A proof the fuzzer describes: a secret (plain, P2PK with chosen conditions, HTLC or text),
/// signed by the test mint with a valid DLEQ, then maybe broken in one place.
pub fn proof(input: &mut Input) -> Proof {
    let f = &*FIXTURE;
    let signer = if input.byte() < 224 { &f.sat } else { &f.msat };
    let amount = input.pick(&[1u64, 1, 2, 4, 8, 8, 16, 3, 0]);
    let secret = Secret::new(secret_text(input));
    let key = signer
        .secret(amount)
        .or_else(|| signer.secret(1))
        .expect("key for 1");
    let mut proof = signed(&signer.keyset.id, amount, &secret, key, input.byte());
    if input.byte() < 40 {
        break_one(input, &mut proof);
    }
    proof
}

/// What an honest mint hands out for `secret`, unblinded: C = k·Y with the NUT-12 DLEQ proof.
pub fn signed(id: &Id, amount: u64, secret: &Secret, k: &SecretKey, blinding: u8) -> Proof {
    let r = scalar(blinding);
    let (b, r) = blind_message(secret.as_bytes(), Some(r)).expect("hash_to_curve");
    let c_ = sign_message(k, &b).expect("sign");
    let sig = BlindSignature::new(Amount::from(amount), c_, *id, &b, k).expect("dleq");
    let c = unblind_message(&c_, &r, &k.public_key()).expect("unblind");
    let dleq = sig.dleq.expect("made with a dleq");
    let mut proof = Proof::new(Amount::from(amount), *id, secret.clone(), c);
    proof.dleq = Some(ProofDleq::new(dleq.e, dleq.s, r));
    proof
}

/// A valid scalar from one byte: 32 copies of a byte in 1..=0x7f stay below the curve order
/// (`[0xff; 32]` does not).
fn scalar(b: u8) -> SecretKey {
    SecretKey::from_slice(&[(b % 0x7f).max(1); 32]).expect("below the curve order")
}

fn break_one(input: &mut Input, proof: &mut Proof) {
    let f = &*FIXTURE;
    let other = scalar(input.byte());
    match input.byte() % 7 {
        0 => proof.amount = Amount::from(input.pick(&[1u64, 2, 4, 8, 16])),
        1 => proof.secret = Secret::new(format!("{} ", proof.secret)),
        2 => proof.c = other.public_key(),
        3 => {
            if let Some(d) = proof.dleq.as_mut() {
                match input.byte() % 3 {
                    0 => d.e = other,
                    1 => d.s = other,
                    _ => d.r = other,
                }
            }
        }
        4 => proof.dleq = None,
        5 => {
            proof.keyset_id = if proof.keyset_id == f.sat.keyset.id {
                f.msat.keyset.id
            } else {
                f.sat.keyset.id
            }
        }
        // No key for this amount.
        _ => proof.amount = Amount::from(32),
    }
}

/// A secret: mostly a NUT-11 P2PK lock whose key and conditions come from pools.
fn secret_text(input: &mut Input) -> String {
    let f = &*FIXTURE;
    match input.byte() % 10 {
        0 => hex::encode(input.bytes(32)),
        1 => input.text(64),
        2 => {
            let hash = hex::encode([input.byte(); 32]);
            json!(["HTLC", {"nonce": "00", "data": hash, "tags": [["pubkeys", format!("02{}", f.us.p2pk)]]}])
                .to_string()
        }
        _ => {
            let data = input.pick(&[
                format!("02{}", f.us.p2pk),
                format!("02{}", f.us.p2pk),
                format!("03{}", f.us.p2pk),
                format!("02{}", f.us.p2pk.to_uppercase()),
                format!("02{}", f.us.identity),
                format!("02{}", f.customer),
                f.us.p2pk.clone(),
            ]);
            let mut tags: Vec<Value> = Vec::new();
            for _ in 0..input.below(4) {
                tags.push(condition(input));
            }
            let mut body = json!({"nonce": hex::encode([input.byte(); 16]), "data": data});
            if !tags.is_empty() || input.coin() {
                body["tags"] = Value::Array(tags);
            }
            json!(["P2PK", body]).to_string()
        }
    }
}

fn condition(input: &mut Input) -> Value {
    let f = &*FIXTURE;
    let ours = format!("02{}", f.us.p2pk);
    let theirs = format!("02{}", f.customer);
    match input.byte() % 7 {
        0 => json!(["sigflag", input.pick(&["SIG_INPUTS", "SIG_ALL", "x"])]),
        1 => json!(["n_sigs", input.pick(&["1", "2", "0", "x"])]),
        2 => {
            let t = input.number(&[NOW + LOCKTIME_MARGIN, NOW, u64::MAX]);
            json!(["locktime", t.to_string()])
        }
        3 => json!([
            "pubkeys",
            input.pick(&[&theirs, &ours, &format!("03{}", f.us.p2pk)])
        ]),
        4 => json!(["refund", theirs]),
        5 => json!(["n_sigs_refund", "1"]),
        _ => json!(["pubkeys", theirs, format!("02{}", f.us.identity)]),
    }
}

/// Which rule a proof was taken under.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// NIP-61: a P2PK lock to our NutZap key and a DLEQ proof on every proof.
    NutZap,
    /// A request token: a plain secret or such a lock; DLEQ checked when present.
    Token,
}

/// Everything an accepted NutZap or token must satisfy.
pub fn check_accepted(v: &VerifiedNutZap, taken: Taken, now: u64) {
    let f = &*FIXTURE;
    assert_eq!(v.mint, f.url, "accepted from a mint we do not trust");
    assert_eq!(v.proofs.len(), v.ys.len());
    let mut seen = HashSet::new();
    let mut units: u64 = 0;
    for (proof, y) in v.proofs.iter().zip(&v.ys) {
        let expected_y = hash_to_curve(proof.secret.as_bytes()).expect("a point");
        assert_eq!(y, &expected_y.to_hex());
        assert!(seen.insert(y.clone()), "a proof taken twice");
        let amount = u64::from(proof.amount);
        let signer = [&f.sat, &f.msat]
            .into_iter()
            .find(|s| s.keyset.id == proof.keyset_id)
            .expect("a keyset of this mint");
        assert_eq!(
            signer.keyset.unit.to_string(),
            v.unit,
            "keyset of another unit"
        );
        let k = signer
            .secret(amount)
            .expect("the mint has a key for the amount");
        if proof.dleq.is_some() || taken == Taken::NutZap {
            assert!(
                verify_message(k, proof.c, proof.secret.as_bytes()).is_ok(),
                "a proof the mint never signed passed the DLEQ check: {proof:?}"
            );
        }
        check_spendable_by_us_alone(&proof.secret.to_string(), taken, now);
        units += amount;
    }
    assert_eq!(v.units, units);
    let rate = match v.unit.as_str() {
        "sat" => 1000,
        "msat" => 1,
        other => panic!("accepted unit {other}"),
    };
    assert_eq!(v.amount.as_msat(), units * rate);
}

/// Reads a secret as JSON (not with cdk) and checks that a NUT-10 lock in it can be spent with
/// our NutZap key alone, now and for the locktime margin: no other keys, one signature, no
/// SIG_ALL, no locktime before the margin.
pub fn check_spendable_by_us_alone(secret: &str, taken: Taken, now: u64) {
    let f = &*FIXTURE;
    let Some((kind, body)) = nut10_view(secret) else {
        assert!(
            taken == Taken::Token,
            "a NutZap proof without a lock: {secret}"
        );
        return;
    };
    assert_eq!(kind, "P2PK", "accepted a {kind} lock: {secret}");
    let data = body["data"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let x_only = if data.len() == 66 {
        &data[2..]
    } else {
        &data[..]
    };
    assert_eq!(x_only, f.us.p2pk, "locked to another key: {secret}");
    let tags = body["tags"].as_array().cloned().unwrap_or_default();
    for tag in &tags {
        let values: Vec<&str> = tag
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match values.as_slice() {
            // Our key again (either parity) adds no spender; any other key could sign too.
            ["pubkeys", others @ ..] => assert!(
                others
                    .iter()
                    .all(|k| k.len() == 66 && k[2..].eq_ignore_ascii_case(&f.us.p2pk)),
                "other keys may spend it too: {secret}"
            ),
            ["n_sigs", n, ..] => assert_eq!(*n, "1", "{secret}"),
            ["sigflag", flag, ..] => assert_ne!(*flag, "SIG_ALL", "{secret}"),
            ["locktime", t, ..] => {
                let t: u64 = t.parse().expect("cdk only takes numeric locktimes");
                assert!(t >= now.saturating_add(LOCKTIME_MARGIN), "{secret}");
            }
            _ => {}
        }
    }
}

/// `Some((kind, body))` when the secret is a NUT-10 well-known secret `[kind, {…}]`.
fn nut10_view(secret: &str) -> Option<(String, Value)> {
    let Value::Array(parts) = serde_json::from_str::<Value>(secret).ok()? else {
        return None;
    };
    match parts.as_slice() {
        [Value::String(kind), body @ Value::Object(_)] => Some((kind.clone(), body.clone())),
        _ => None,
    }
}

/// A proof's JSON as a NutZap `proof` tag carries it.
pub fn proof_json(proof: &Proof) -> String {
    serde_json::to_string(proof).expect("a proof serialises")
}
