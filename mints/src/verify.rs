//! Offline NutZap verification: everything that can be checked without asking the mint, done
//! before the swap. A NutZap passes only if every check passes; the first failure is returned.

use std::collections::HashSet;

use cdk::nuts::{Conditions, Proof, PublicKey, SigFlag, SpendingConditions};
use paydvm_ledger::Msat;

use crate::nutzap::{self, NutZapEvent, ParseError};
use crate::registry::{unit_name, MintRegistry, TrustedMint};
use crate::url::normalise_mint_url;

/// A locktime closer than this is refused: after it the sender (or anyone) may spend the
/// proofs, and our swap must land well before.
pub const MIN_LOCKTIME_MARGIN_SECS: u64 = 3600;

/// What we are: the keys a NutZap to us must (p tag, lock) and must not (lock) name.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// Our Nostr identity, 64 hex (x-only). NutZaps `p`-tag it; proofs must NOT lock to it.
    pub identity: String,
    /// Our dedicated P2PK receiving key, 64 hex (x-only), as published in our 10019.
    pub p2pk: String,
}

/// Ecash that passed every offline check: a NutZap, or a token from a job request
/// ([`crate::token`]). It is not money yet: the swap decides.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VerifiedNutZap {
    /// A NutZap's event id; for a request token its id `token:<sha256 of the sorted Ys>`
    /// ([`crate::token::token_id`]). Keys the pending store.
    pub event_id: String,
    /// Who sent it: the NutZap's author, or the request's customer.
    pub sender: String,
    /// Normalised, as in our trusted list.
    pub mint: String,
    pub unit: String,
    pub proofs: Vec<Proof>,
    /// Proof Ys (NUT-00 hash_to_curve of each secret), 66 hex, in proof order.
    pub ys: Vec<String>,
    /// Sum of the proofs in the mint's unit.
    pub units: u64,
    pub amount: Msat,
    /// The event it pays for: a NutZap's `e` tag, or the request carrying the token.
    pub target: Option<String>,
    /// Rows written before tokens existed are NutZaps.
    #[serde(default)]
    pub origin: Origin,
}

/// Where verified ecash came from: it decides the ledger rail and the payment reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    NutZap,
    /// A `cashu` tag of a job request.
    RequestToken,
}

/// Why a NutZap was refused. Each names the first proof that failed, where one did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed: {0}")]
    Malformed(#[from] ParseError),
    #[error("not p-tagged to us")]
    NotForUs,
    #[error("mint {mint} is not on our list")]
    UnlistedMint { mint: String },
    #[error("unit {unit} is not accepted from this mint")]
    UnitNotAccepted { unit: String },
    #[error("unit {unit} cannot be converted to msat")]
    UnitNotPriced { unit: String },
    #[error("proof {index}: secret is not a NUT-10 P2PK lock")]
    NotP2pk { index: usize },
    #[error("proof {index}: secret is shaped as a NUT-10 lock but is not a valid one")]
    UnreadableLock { index: usize },
    #[error("proof {index}: locked to our Nostr identity key, not our NutZap key")]
    LockedToIdentityKey { index: usize },
    #[error("proof {index}: locked to another key")]
    LockedToOtherKey { index: usize },
    #[error("proof {index}: needs more than our one signature")]
    Multisig { index: usize },
    #[error("proof {index}: another key (a `pubkeys` entry) could spend it too")]
    OtherSpender { index: usize },
    #[error("proof {index}: spending condition {tag} appears twice; mints may read either")]
    RepeatedCondition { index: usize, tag: String },
    #[error("proof {index}: SIG_ALL locks are not taken")]
    SigAll { index: usize },
    #[error("proof {index}: locktime is past or too close; the sender could take it back")]
    LockExpiresTooSoon { index: usize },
    #[error("proof {index}: keyset {keyset} is not a known keyset of this mint")]
    UnknownKeyset { index: usize, keyset: String },
    #[error("proof {index}: keyset unit {keyset_unit} differs from the NutZap's unit")]
    KeysetUnitMismatch { index: usize, keyset_unit: String },
    #[error("proof {index}: the keyset has no key for amount {amount}")]
    NoKeyForAmount { index: usize, amount: u64 },
    #[error("proof {index}: carries no DLEQ proof")]
    MissingDleq { index: usize },
    #[error("proof {index}: DLEQ proof does not verify against the mint's key")]
    InvalidDleq { index: usize },
    #[error("proof {index}: appears twice in the NutZap")]
    DuplicateProof { index: usize },
    #[error("amount overflows")]
    AmountOverflow,
    /// Never holds the token or a decoder message (either could echo the bearer secret).
    #[error("not a decodable cashuA/cashuB token")]
    BadToken,
    #[error("the token spans several mints")]
    SeveralMints,
    #[error("the token holds no proofs")]
    NoProofs,
    #[error("the token holds more than {max} proofs")]
    TooManyProofs { max: usize },
    #[error("a proof names a keyset this mint does not have")]
    UnresolvedKeyset,
    #[error("the token is worth nothing")]
    ZeroAmount,
    #[error("the token is worth more than {max_msat} msat")]
    AmountTooLarge { max_msat: u64 },
}

/// Runs every offline check on a NutZap for `us`. `now_secs` is unix seconds (locktimes).
pub fn verify_nutzap(
    event: &NutZapEvent<'_>,
    us: &Recipient,
    mints: &MintRegistry,
    now_secs: u64,
) -> Result<VerifiedNutZap, Reject> {
    let parsed = nutzap::parse(event)?;
    let identity = us.identity.to_ascii_lowercase();
    if !parsed.recipients.contains(&identity) {
        return Err(Reject::NotForUs);
    }
    let (mint, msat_per_unit) = trusted_mint(mints, &parsed.mint, &parsed.unit)?;
    let rules = ProofRules {
        lock: LockRule::OurP2pkKey,
        dleq: DleqRule::Required,
    };
    let checked = check_proofs(
        mints,
        &mint.url,
        &parsed.unit,
        &parsed.proofs,
        us,
        now_secs,
        rules,
    )?;
    let amount = checked.msat(msat_per_unit)?;
    Ok(VerifiedNutZap {
        event_id: event.id.to_ascii_lowercase(),
        sender: event.author.to_ascii_lowercase(),
        mint: mint.url.clone(),
        unit: parsed.unit,
        proofs: parsed.proofs,
        ys: checked.ys,
        units: checked.units,
        amount,
        target: parsed.target,
        origin: Origin::NutZap,
    })
}

/// The trusted mint at `url` if it takes `unit`, and what one unit is worth in msat.
pub(crate) fn trusted_mint<'a>(
    mints: &'a MintRegistry,
    url: &str,
    unit: &str,
) -> Result<(&'a TrustedMint, u64), Reject> {
    let mint = mints.mint(url).ok_or_else(|| Reject::UnlistedMint {
        mint: normalise_mint_url(url),
    })?;
    if !mint.accepts_unit(unit) {
        return Err(Reject::UnitNotAccepted {
            unit: unit.to_owned(),
        });
    }
    let rate = msat_per_unit(unit).ok_or_else(|| Reject::UnitNotPriced {
        unit: unit.to_owned(),
    })?;
    Ok((mint, rate))
}

/// Which secrets a payer may send us.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockRule {
    /// NIP-61: every proof P2PK-locked to our NutZap key.
    OurP2pkKey,
    /// Tokens: plain secrets, or a P2PK lock only our NutZap key satisfies (anything else we
    /// could not spend).
    PlainOrOurP2pkKey,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum DleqRule {
    /// NIP-61 requires a DLEQ proof on every proof.
    Required,
    /// Tokens in the wild often lack one: verify it when present; the swap is the real check.
    IfPresent,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ProofRules {
    pub lock: LockRule,
    pub dleq: DleqRule,
}

/// What the per-proof checks established.
pub(crate) struct CheckedProofs {
    /// Proof Ys (66 hex), in proof order.
    pub ys: Vec<String>,
    pub units: u64,
}

impl CheckedProofs {
    pub(crate) fn msat(&self, msat_per_unit: u64) -> Result<Msat, Reject> {
        self.units
            .checked_mul(msat_per_unit)
            .map(Msat::from_msat)
            .ok_or(Reject::AmountOverflow)
    }
}

/// Every offline check on each proof: its lock, keyset (known, of `mint`, in `unit`, with a key
/// for its amount), DLEQ, and that no proof appears twice.
pub(crate) fn check_proofs(
    mints: &MintRegistry,
    mint: &str,
    unit: &str,
    proofs: &[Proof],
    us: &Recipient,
    now_secs: u64,
    rules: ProofRules,
) -> Result<CheckedProofs, Reject> {
    let mut seen = HashSet::new();
    let mut ys = Vec::with_capacity(proofs.len());
    let mut units: u64 = 0;
    for (index, proof) in proofs.iter().enumerate() {
        match rules.lock {
            LockRule::OurP2pkKey => check_lock(index, proof, us, now_secs)?,
            // The mint enforces a secret's conditions only if it parses as NUT-10; so do we.
            LockRule::PlainOrOurP2pkKey => {
                if cdk::nuts::nut10::Secret::try_from(&proof.secret).is_ok() {
                    check_lock(index, proof, us, now_secs)?;
                } else if has_nut10_shape(&proof.secret) {
                    return Err(Reject::UnreadableLock { index });
                }
            }
        }
        let keyset = mints
            .keyset(mint, &proof.keyset_id)
            .ok_or_else(|| Reject::UnknownKeyset {
                index,
                keyset: proof.keyset_id.to_string(),
            })?;
        let keyset_unit = unit_name(&keyset.unit);
        if keyset_unit != unit {
            return Err(Reject::KeysetUnitMismatch { index, keyset_unit });
        }
        let amount = u64::from(proof.amount);
        let key = keyset
            .keys
            .amount_key(proof.amount)
            .ok_or(Reject::NoKeyForAmount { index, amount })?;
        match (&proof.dleq, rules.dleq) {
            (None, DleqRule::Required) => return Err(Reject::MissingDleq { index }),
            (None, DleqRule::IfPresent) => {}
            (Some(_), _) => proof
                .verify_dleq(key)
                .map_err(|_| Reject::InvalidDleq { index })?,
        }
        let y = proof
            .y()
            .map_err(|_| Reject::InvalidDleq { index })?
            .to_hex();
        if !seen.insert(y.clone()) {
            return Err(Reject::DuplicateProof { index });
        }
        ys.push(y);
        units = units.checked_add(amount).ok_or(Reject::AmountOverflow)?;
    }
    Ok(CheckedProofs { ys, units })
}

/// Whether a secret is shaped as a NUT-10 well-known secret (`[kind, {...}]`) whether or not cdk
/// reads it. Another mint may read a lock cdk does not (a misspelt or missing field, a key in
/// another form) and enforce it, so such a secret is neither plain nor a lock we checked.
fn has_nut10_shape(secret: &cdk::secret::Secret) -> bool {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(secret.as_bytes()) {
        Ok(Value::Array(parts)) => {
            matches!(parts.as_slice(), [Value::String(_), Value::Object(_)])
        }
        _ => false,
    }
}

/// Only units with a fixed msat value can pay a msat price.
pub fn msat_per_unit(unit: &str) -> Option<u64> {
    match unit {
        "sat" => Some(1000),
        "msat" => Some(1),
        _ => None,
    }
}

/// The proof must be a NUT-11 P2PK lock that our key alone satisfies now and for at least
/// [`MIN_LOCKTIME_MARGIN_SECS`]. Keys are compared by x-coordinate (NUT-11; NIP-61 `02` prefix).
fn check_lock(index: usize, proof: &Proof, us: &Recipient, now_secs: u64) -> Result<(), Reject> {
    let Ok(SpendingConditions::P2PKConditions { data, conditions }) =
        SpendingConditions::try_from(&proof.secret)
    else {
        return Err(Reject::NotP2pk { index });
    };
    let locked_to = hex::encode(data.x_only_public_key().serialize());
    if locked_to == us.identity.to_ascii_lowercase() {
        return Err(Reject::LockedToIdentityKey { index });
    }
    if locked_to != us.p2pk.to_ascii_lowercase() {
        return Err(Reject::LockedToOtherKey { index });
    }
    check_condition_tags(index, &proof.secret)?;
    let Some(Conditions {
        locktime,
        pubkeys,
        num_sigs,
        sig_flag,
        ..
    }) = conditions
    else {
        return Ok(());
    };
    if num_sigs.is_some_and(|n| n > 1) {
        return Err(Reject::Multisig { index });
    }
    if sig_flag == SigFlag::SigAll {
        return Err(Reject::SigAll { index });
    }
    if let Some(locktime) = locktime {
        if locktime < now_secs.saturating_add(MIN_LOCKTIME_MARGIN_SECS) {
            return Err(Reject::LockExpiresTooSoon { index });
        }
    }
    // `n_sigs` counts signatures from `data` and `pubkeys` together: with the default of 1,
    // any key in `pubkeys` (the sender's, say) could spend the proof before our swap.
    let ours = |key: &PublicKey| hex::encode(key.x_only_public_key().serialize()) == locked_to;
    if !pubkeys.unwrap_or_default().iter().all(ours) {
        return Err(Reject::OtherSpender { index });
    }
    Ok(())
}

/// cdk reads the first of repeated condition tags; another mint may read the last, or all of
/// them (a second `pubkeys` list, an earlier `locktime`). A secret that repeats one is refused.
fn check_condition_tags(index: usize, secret: &cdk::secret::Secret) -> Result<(), Reject> {
    let Ok(nut10) = cdk::nuts::nut10::Secret::try_from(secret) else {
        return Ok(());
    };
    const CONDITIONS: [&str; 6] = [
        "locktime",
        "pubkeys",
        "refund",
        "n_sigs",
        "n_sigs_refund",
        "sigflag",
    ];
    let mut seen = HashSet::new();
    let tags = nut10.secret_data().tags().into_iter().flatten();
    for name in tags.filter_map(|t| t.first()).map(String::as_str) {
        if let Some(&tag) = CONDITIONS.iter().find(|c| **c == name) {
            if !seen.insert(tag) {
                return Err(Reject::RepeatedCondition {
                    index,
                    tag: tag.to_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn check_lock_for_tests(
    index: usize,
    proof: &Proof,
    us: &Recipient,
    now_secs: u64,
) -> Result<(), Reject> {
    check_lock(index, proof, us, now_secs)
}
