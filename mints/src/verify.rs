//! Offline NutZap verification: everything that can be checked without asking the mint, done
//! before the swap. A NutZap passes only if every check passes; the first failure is returned.

use std::collections::HashSet;

use cdk::nuts::{Conditions, Proof, SigFlag, SpendingConditions};
use paydvm_ledger::Msat;

use crate::nutzap::{self, NutZapEvent, ParseError};
use crate::registry::{unit_name, MintRegistry};
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

/// A NutZap that passed every offline check. It is not money yet: the swap decides.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VerifiedNutZap {
    pub event_id: String,
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
    /// The `e` tag, if any: the event the NutZap says it pays for.
    pub target: Option<String>,
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
    #[error("proof {index}: locked to our Nostr identity key, not our NutZap key")]
    LockedToIdentityKey { index: usize },
    #[error("proof {index}: locked to another key")]
    LockedToOtherKey { index: usize },
    #[error("proof {index}: needs more than our one signature")]
    Multisig { index: usize },
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
    let mint = mints
        .mint(&parsed.mint)
        .ok_or_else(|| Reject::UnlistedMint {
            mint: normalise_mint_url(&parsed.mint),
        })?;
    if !mint.accepts_unit(&parsed.unit) {
        return Err(Reject::UnitNotAccepted { unit: parsed.unit });
    }
    let msat_per_unit = msat_per_unit(&parsed.unit).ok_or_else(|| Reject::UnitNotPriced {
        unit: parsed.unit.clone(),
    })?;
    let mut seen = HashSet::new();
    let mut ys = Vec::with_capacity(parsed.proofs.len());
    let mut units: u64 = 0;
    for (index, proof) in parsed.proofs.iter().enumerate() {
        check_lock(index, proof, us, now_secs)?;
        let keyset =
            mints
                .keyset(&mint.url, &proof.keyset_id)
                .ok_or_else(|| Reject::UnknownKeyset {
                    index,
                    keyset: proof.keyset_id.to_string(),
                })?;
        let keyset_unit = unit_name(&keyset.unit);
        if keyset_unit != parsed.unit {
            return Err(Reject::KeysetUnitMismatch { index, keyset_unit });
        }
        let amount = u64::from(proof.amount);
        let key = keyset
            .keys
            .amount_key(proof.amount)
            .ok_or(Reject::NoKeyForAmount { index, amount })?;
        if proof.dleq.is_none() {
            return Err(Reject::MissingDleq { index });
        }
        proof
            .verify_dleq(key)
            .map_err(|_| Reject::InvalidDleq { index })?;
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
    let msat = units
        .checked_mul(msat_per_unit)
        .ok_or(Reject::AmountOverflow)?;
    Ok(VerifiedNutZap {
        event_id: event.id.to_ascii_lowercase(),
        sender: event.author.to_ascii_lowercase(),
        mint: mint.url.clone(),
        unit: parsed.unit,
        proofs: parsed.proofs,
        ys,
        units,
        amount: Msat::from_msat(msat),
        target: parsed.target,
    })
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
    let Some(Conditions {
        locktime,
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
