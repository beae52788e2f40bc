//! The hash chain: each event's hash covers the previous hash and everything stored for it. Every
//! store computes it the same way, so a chain can be rechecked outside paydvm (see `export`).

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];
/// The `prev_hash` of event 1.
pub const GENESIS: Hash = [0u8; 32];

/// `SHA-256(prev ‖ seq ‖ at ‖ len(key) ‖ key ‖ len(body) ‖ body)`, integers as u64 big-endian;
/// `body` is the canonical JSON of the event body.
pub fn event_hash(prev: &Hash, seq: u64, at: u64, key: &str, body: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    h.update((key.len() as u64).to_be_bytes());
    h.update(key.as_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body.as_bytes());
    h.finalize().into()
}
