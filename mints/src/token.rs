//! Cashu tokens (NUT-00 `cashuA…` V3 and `cashuB…` V4) offered in a job request's `cashu` tag:
//! decoded, then held to the same offline checks as a NutZap where they apply (trusted mint,
//! unit, known keysets, DLEQ when present, no proof twice) before the swap decides.
//!
//! A token is a bearer secret: no error here carries it or a decoder's message about it.

use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, Token};
use sha2::{Digest, Sha256};

use crate::nutzap::MAX_PROOFS;
use crate::registry::{unit_name, MintRegistry};
use crate::url::normalise_mint_url;
use crate::verify::{
    check_proofs, trusted_mint, DleqRule, LockRule, Origin, ProofRules, Recipient, Reject,
    VerifiedNutZap,
};

/// The most one request token may be worth (0.1 BTC): a job needs far less, and a bound keeps
/// a bad token from making numbers nobody checked.
pub const MAX_TOKEN_MSAT: u64 = 10_000_000_000;

/// A token as it arrived, with the job it pays for.
#[derive(Clone, Copy)]
pub struct RequestToken<'a> {
    /// The serialised token (`cashuA…` or `cashuB…`).
    pub token: &'a str,
    /// The request event id (64 hex) = the job id.
    pub job: &'a str,
    /// The request's author (64 hex).
    pub customer: &'a str,
}

/// The normalised mint URL a token names, if it decodes (to refresh that mint's keysets).
pub fn token_mint(token: &str) -> Result<String, Reject> {
    let token = decode(token)?;
    let mint = token.mint_url().map_err(|_| Reject::SeveralMints)?;
    Ok(normalise_mint_url(&mint.to_string()))
}

/// Runs every offline check on a request token for `us`. `now_secs` is unix seconds.
pub fn verify_token(
    offered: &RequestToken<'_>,
    us: &Recipient,
    mints: &MintRegistry,
    now_secs: u64,
) -> Result<VerifiedNutZap, Reject> {
    let token = decode(offered.token)?;
    let mint_url = token.mint_url().map_err(|_| Reject::SeveralMints)?;
    // NUT-00: a V3 token without a unit is in sat.
    let unit = unit_name(&token.unit().unwrap_or(CurrencyUnit::Sat));
    let (mint, msat_per_unit) = trusted_mint(mints, &mint_url.to_string(), &unit)?;
    let proofs = token
        .proofs(&mints.keyset_infos(&mint.url))
        .map_err(|_| Reject::UnresolvedKeyset)?;
    if proofs.is_empty() {
        return Err(Reject::NoProofs);
    }
    if proofs.len() > MAX_PROOFS {
        return Err(Reject::TooManyProofs { max: MAX_PROOFS });
    }
    let rules = ProofRules {
        lock: LockRule::PlainOrOurP2pkKey,
        dleq: DleqRule::IfPresent,
    };
    let checked = check_proofs(mints, &mint.url, &unit, &proofs, us, now_secs, rules)?;
    let amount = checked.msat(msat_per_unit)?;
    if amount.is_zero() {
        return Err(Reject::ZeroAmount);
    }
    if amount.as_msat() > MAX_TOKEN_MSAT {
        return Err(Reject::AmountTooLarge {
            max_msat: MAX_TOKEN_MSAT,
        });
    }
    Ok(VerifiedNutZap {
        event_id: token_id(&checked.ys),
        sender: offered.customer.to_ascii_lowercase(),
        mint: mint.url.clone(),
        unit,
        proofs,
        ys: checked.ys,
        units: checked.units,
        amount,
        target: Some(offered.job.to_ascii_lowercase()),
        origin: Origin::RequestToken,
    })
}

/// `token:<sha256 of the sorted proof Ys>`: the same proofs give the same id whatever the
/// encoding (V3 or V4), proof order or request carried them.
pub fn token_id(ys: &[String]) -> String {
    let mut sorted: Vec<&str> = ys.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for y in sorted {
        h.update(y.as_bytes());
        h.update(b"\n");
    }
    format!("token:{}", hex::encode(h.finalize()))
}

fn decode(token: &str) -> Result<Token, Reject> {
    Token::from_str(token.trim()).map_err(|_| Reject::BadToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_id_ignores_proof_order() {
        let a = "02".to_owned() + &"11".repeat(32);
        let b = "03".to_owned() + &"22".repeat(32);
        assert_eq!(
            token_id(&[a.clone(), b.clone()]),
            token_id(&[b.clone(), a.clone()])
        );
        assert_ne!(token_id(std::slice::from_ref(&a)), token_id(&[a, b]));
        assert!(token_id(&[]).starts_with("token:"));
    }

    #[test]
    fn undecodable_tokens_are_refused_without_echoing_them() {
        let us = Recipient {
            identity: "aa".repeat(32),
            p2pk: "bb".repeat(32),
        };
        let mints = MintRegistry::new(Vec::new());
        for junk in ["cashuBnotbase64!!", "cashuAeyJ0b2tlbiI6", "cashuC", ""] {
            let offered = RequestToken {
                token: junk,
                job: &"cc".repeat(32),
                customer: &"dd".repeat(32),
            };
            let err = verify_token(&offered, &us, &mints, 0).unwrap_err();
            assert_eq!(err, Reject::BadToken, "{junk}");
            assert!(junk.is_empty() || !err.to_string().contains(junk));
        }
    }
}
