//! NIP-61 kind 9321 tags, read leniently (old senders still write `unit = "sats"`, omit the
//! unit, add an `amount` tag) and bounded (a relay event is attacker-written).

use cdk::nuts::Proof;

/// Kind of a NutZap.
pub const NUTZAP_KIND: u16 = 9321;
/// Kind of a NIP-61 nutzap info event (where and how to send us NutZaps).
pub const NUTZAP_INFO_KIND: u16 = 10019;
/// Kind of a NIP-60 history event (our redemption marker).
pub const HISTORY_KIND: u16 = 7376;
/// Most proofs one NutZap may carry; more is refused unread.
pub const MAX_PROOFS: usize = 64;

/// The parts of a signed kind 9321 event we read. The signature and id were checked by the
/// relay pool before this is built.
#[derive(Debug, Clone, Copy)]
pub struct NutZapEvent<'a> {
    /// Event id, 64 hex.
    pub id: &'a str,
    /// Sender pubkey, 64 hex (x-only).
    pub author: &'a str,
    pub tags: &'a [Vec<String>],
}

/// A NutZap's tags, parsed but not yet checked against our mints, keys or keysets.
#[derive(Debug, Clone)]
pub struct ParsedNutZap {
    pub mint: String,
    /// Lowercase; `sat` when the tag is missing; `sats` read as `sat`.
    pub unit: String,
    pub proofs: Vec<Proof>,
    /// Every `p` tag value.
    pub recipients: Vec<String>,
    /// The first `e` tag: the event the NutZap pays for (our feedback or the request).
    pub target: Option<String>,
}

/// Why a NutZap's tags cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no `u` (mint) tag")]
    NoMint,
    #[error("more than one `u` (mint) tag")]
    SeveralMints,
    #[error("no `proof` tag")]
    NoProofs,
    #[error("more than {MAX_PROOFS} proofs")]
    TooManyProofs,
    #[error("proof {index} is not a Cashu proof: {reason}")]
    BadProof { index: usize, reason: String },
    #[error("`e` tag is not a 64-hex event id")]
    BadTarget,
}

pub fn parse(event: &NutZapEvent<'_>) -> Result<ParsedNutZap, ParseError> {
    let mut mint = None;
    let mut unit = None;
    let mut proofs = Vec::new();
    let mut recipients = Vec::new();
    let mut target = None;
    for tag in event.tags {
        match tag.as_slice() {
            [name, _, ..] if name == "u" && mint.is_some() => {
                return Err(ParseError::SeveralMints);
            }
            [name, value, ..] if name == "u" => mint = Some(value.clone()),
            [name, value, ..] if name == "unit" => {
                unit.get_or_insert_with(|| canonical_unit(value));
            }
            [name, value, ..] if name == "proof" => {
                if proofs.len() == MAX_PROOFS {
                    return Err(ParseError::TooManyProofs);
                }
                let proof: Proof =
                    serde_json::from_str(value).map_err(|e| ParseError::BadProof {
                        index: proofs.len(),
                        reason: e.to_string(),
                    })?;
                proofs.push(proof);
            }
            [name, value, ..] if name == "p" => recipients.push(value.to_ascii_lowercase()),
            [name, value, ..] if name == "e" && target.is_none() => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ParseError::BadTarget);
                }
                target = Some(value.to_ascii_lowercase());
            }
            _ => {}
        }
    }
    if proofs.is_empty() {
        return Err(ParseError::NoProofs);
    }
    Ok(ParsedNutZap {
        mint: mint.ok_or(ParseError::NoMint)?,
        unit: unit.unwrap_or_else(|| "sat".to_owned()),
        proofs,
        recipients,
        target,
    })
}

/// NUT unit names are lowercase and singular; nostrdvm writes `sats`.
fn canonical_unit(unit: &str) -> String {
    let unit = unit.trim().to_ascii_lowercase();
    if unit == "sats" {
        "sat".to_owned()
    } else {
        unit
    }
}
