//! Snapshots of the open-work state, so that opening a ledger replays only the events after it.
//!
//! A snapshot is the resident state (see `state::residency`) as of event `seq`, whose hash it
//! records. Its body is JSON (records sorted by id, so equal states give equal bytes) and its
//! digest is `SHA-256(format ‖ seq ‖ hash ‖ body)`. A snapshot is never trusted: a store uses it
//! only when the digest matches, the body decodes, the event at `seq` in the log has that hash,
//! and the state passes every invariant; otherwise it replays the whole log and says why.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::account::{Account, Balance};
use crate::chain::Hash;
use crate::effect::EffectRecord;
use crate::event::Asset;
use crate::invariants;
use crate::job::JobRecord;
use crate::money::Msat;
use crate::refund::RefundRecord;
use crate::state::LedgerState;
use crate::subscription::SubscriptionRecord;

/// The body layout this build writes and reads.
pub const FORMAT: u32 = 1;

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub hash: Hash,
    pub format: u32,
    pub digest: Hash,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    jobs: Vec<JobRecord>,
    refunds: Vec<RefundRecord>,
    subscriptions: Vec<SubscriptionRecord>,
    effects: Vec<EffectRecord>,
    balances: Vec<(Account, Balance)>,
    reserved: Vec<(Asset, Msat)>,
}

fn digest(format: u32, seq: u64, hash: &Hash, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(format.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(hash);
    h.update(body);
    h.finalize().into()
}

fn sorted<T, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_by_key(|t| key(t));
    v
}

/// Encode `state` (the resident open work) as the snapshot of event `seq` with hash `hash`.
pub fn encode(state: &LedgerState, seq: u64, hash: Hash) -> Result<Snapshot, serde_json::Error> {
    let body = Body {
        jobs: sorted(state.jobs().cloned(), |j| j.job.clone()),
        refunds: sorted(state.refunds().cloned(), |r| r.refund.clone()),
        subscriptions: sorted(state.subscriptions().cloned(), |s| s.subscription.clone()),
        effects: sorted(state.effects().cloned(), |e| e.effect.clone()),
        balances: sorted(state.balances().map(|(a, b)| (a.clone(), *b)), |(a, _)| {
            a.clone()
        }),
        reserved: sorted(
            state.reserved.iter().map(|(a, m)| (a.clone(), *m)),
            |(a, _)| a.clone(),
        ),
    };
    let body = serde_json::to_vec(&body)?;
    Ok(Snapshot {
        seq,
        hash,
        format: FORMAT,
        digest: digest(FORMAT, seq, &hash, &body),
        body,
    })
}

/// Why a stored snapshot was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("format {0} is not one this build reads")]
    Format(u32),
    #[error("its digest does not match its contents (corrupt)")]
    Digest,
    #[error("the body does not decode: {0}")]
    Decode(String),
    #[error("the log has no event {0}")]
    PastHead(u64),
    #[error("event {0} in the log has another hash")]
    NotOnChain(u64),
    #[error("its state breaks an invariant: {0}")]
    Invariant(String),
    #[error("it holds records that ended")]
    NotOpenWork,
    #[error("it disagrees with the stored projections: {0}")]
    Projections(String),
    #[error("an event after it needs a record that changed after it: {0}")]
    TailNeedsHistory(String),
}

/// Check a stored snapshot on its own (digest, body, invariants) and decode its state. The
/// caller checks its place on the chain.
pub fn decode(s: &Snapshot) -> Result<LedgerState, Rejected> {
    if s.format != FORMAT {
        return Err(Rejected::Format(s.format));
    }
    if digest(s.format, s.seq, &s.hash, &s.body) != s.digest {
        return Err(Rejected::Digest);
    }
    let body: Body =
        serde_json::from_slice(&s.body).map_err(|e| Rejected::Decode(e.to_string()))?;
    let state = LedgerState {
        jobs: body.jobs.into_iter().map(|j| (j.job.clone(), j)).collect(),
        refunds: body
            .refunds
            .into_iter()
            .map(|r| (r.refund.clone(), r))
            .collect(),
        subscriptions: body
            .subscriptions
            .into_iter()
            .map(|x| (x.subscription.clone(), x))
            .collect(),
        effects: body
            .effects
            .into_iter()
            .map(|e| (e.effect.clone(), e))
            .collect(),
        balances: body.balances.into_iter().collect(),
        reserved: body.reserved.into_iter().collect(),
        ..LedgerState::default()
    };
    invariants::check_all(&state).map_err(Rejected::Invariant)?;
    if !state.holds_only_open_work() {
        return Err(Rejected::NotOpenWork);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_or_another_place_on_the_chain_breaks_the_digest() {
        let s = encode(&LedgerState::default(), 7, [3u8; 32]).unwrap();
        assert_eq!(decode(&s), Ok(LedgerState::default()));
        let mut flipped = s.clone();
        flipped.body[0] ^= 1;
        assert_eq!(decode(&flipped), Err(Rejected::Digest));
        let mut moved = s.clone();
        moved.seq = 8;
        assert_eq!(decode(&moved), Err(Rejected::Digest));
        let mut newer = s;
        newer.format = FORMAT + 1;
        assert_eq!(decode(&newer), Err(Rejected::Format(FORMAT + 1)));
    }
}
