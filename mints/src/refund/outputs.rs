//! The outputs of a refund swap, derived from our wallet seed and the refund attempt's tag: the
//! same tag always gives the same secrets and blinding factors. So after a crash the swap can be
//! sent again unchanged, and if the mint already performed it, NUT-09 restore hands the same
//! signatures back — nothing about the outputs has to survive on disk.

use cdk::dhke::blind_message;
use cdk::nuts::nut10::{Kind, Secret as Nut10Secret, SecretData};
use cdk::nuts::{BlindedMessage, Id, PublicKey, SecretKey};
use cdk::secret::Secret;
use cdk::Amount;
use sha2::{Digest, Sha256};

/// One output we ask the mint to sign, with what we need to unblind its signature.
#[derive(Clone)]
pub struct Output {
    pub blinded: BlindedMessage,
    pub secret: Secret,
    pub r: SecretKey,
    pub amount: u64,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

/// Why outputs could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("the lock key is not a secp256k1 public key")]
    BadLock,
    #[error("cannot build output {0}: {1}")]
    Build(usize, String),
}

/// 32 bytes for output `index` of `tag`, for `label` ("secret" or "r"), under `seed`. A fresh
/// `round` is only used if the bytes are not a valid scalar (probability ~2^-128).
fn derive(seed: &[u8], tag: &str, index: usize, label: &str, round: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"paydvm-refund-output-v1");
    h.update((seed.len() as u32).to_be_bytes());
    h.update(seed);
    h.update((tag.len() as u32).to_be_bytes());
    h.update(tag.as_bytes());
    h.update((index as u32).to_be_bytes());
    h.update(label.as_bytes());
    h.update([round]);
    h.finalize().into()
}

fn blinding_factor(seed: &[u8], tag: &str, index: usize) -> SecretKey {
    (0u8..=u8::MAX)
        .find_map(|round| SecretKey::from_slice(&derive(seed, tag, index, "r", round)).ok())
        .expect("a valid scalar within 256 tries")
}

/// The NUT-10 P2PK secret locking an output to `lock` (compressed hex), with a derived nonce.
fn p2pk_secret(nonce: &[u8; 32], lock: &PublicKey) -> Result<Secret, String> {
    // SecretData's constructor draws a random nonce; build it from its JSON form instead.
    let data: SecretData = serde_json::from_value(serde_json::json!({
        "nonce": hex::encode(nonce),
        "data": lock.to_hex(),
    }))
    .map_err(|e| e.to_string())?;
    Secret::try_from(Nut10Secret::new(Kind::P2PK, data)).map_err(|e| e.to_string())
}

/// The outputs for `amounts`: the first `locked` of them P2PK-locked to `lock` (when given), the
/// rest plain (our change). Index `i` of a tag always derives the same output.
pub fn derive_outputs(
    seed: &[u8],
    tag: &str,
    keyset: Id,
    amounts: &[u64],
    locked: usize,
    lock: Option<&PublicKey>,
) -> Result<Vec<Output>, OutputError> {
    amounts
        .iter()
        .enumerate()
        .map(|(index, &amount)| {
            let bytes = derive(seed, tag, index, "secret", 0);
            let secret = match lock.filter(|_| index < locked) {
                Some(key) => p2pk_secret(&bytes, key).map_err(|e| OutputError::Build(index, e))?,
                None => Secret::new(hex::encode(bytes)),
            };
            let r = blinding_factor(seed, tag, index);
            let (b, r) = blind_message(secret.as_bytes(), Some(r))
                .map_err(|e| OutputError::Build(index, e.to_string()))?;
            Ok(Output {
                blinded: BlindedMessage::new(Amount::from(amount), keyset, b),
                secret,
                r,
                amount,
            })
        })
        .collect()
}

/// A NIP-61 `pubkey` (x-only, locked to with the `02` prefix) or a compressed key.
pub fn lock_key(hex: &str) -> Result<PublicKey, OutputError> {
    let full = if hex.len() == 64 {
        format!("02{hex}")
    } else {
        hex.to_owned()
    };
    full.parse::<PublicKey>().map_err(|_| OutputError::BadLock)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cdk::nuts::SpendingConditions;

    use super::*;

    const SEED: [u8; 64] = [7; 64];

    fn keyset() -> Id {
        Id::from_str("009a1f293253e41e").unwrap()
    }

    #[test]
    fn the_same_tag_derives_the_same_outputs_and_another_tag_does_not() {
        let lock =
            lock_key("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap();
        let a = derive_outputs(&SEED, "job:fail#1", keyset(), &[4, 1, 2], 2, Some(&lock)).unwrap();
        let b = derive_outputs(&SEED, "job:fail#1", keyset(), &[4, 1, 2], 2, Some(&lock)).unwrap();
        let c = derive_outputs(&SEED, "job:fail#2", keyset(), &[4, 1, 2], 2, Some(&lock)).unwrap();
        let blinded = |o: &[Output]| {
            o.iter()
                .map(|o| o.blinded.blinded_secret)
                .collect::<Vec<_>>()
        };
        assert_eq!(blinded(&a), blinded(&b));
        assert!(blinded(&a).iter().all(|x| !blinded(&c).contains(x)));
        assert_eq!(a.iter().map(|o| o.amount).collect::<Vec<_>>(), [4, 1, 2]);
    }

    #[test]
    fn locked_outputs_carry_a_p2pk_secret_to_the_lock_and_change_is_plain() {
        let x = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let lock = lock_key(x).unwrap();
        let outputs = derive_outputs(&SEED, "t", keyset(), &[2, 1], 1, Some(&lock)).unwrap();
        let conditions = SpendingConditions::try_from(&outputs[0].secret).unwrap();
        assert_eq!(conditions, SpendingConditions::new_p2pk(lock, None));
        assert!(SpendingConditions::try_from(&outputs[1].secret).is_err());
        assert_eq!(outputs[1].secret.to_string().len(), 64);
    }

    #[test]
    fn lock_keys_are_x_only_or_compressed() {
        let x = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        assert_eq!(lock_key(x).unwrap().to_hex(), format!("02{x}"));
        assert_eq!(
            lock_key(&format!("03{x}")).unwrap().to_hex(),
            format!("03{x}")
        );
        assert_eq!(lock_key("zz"), Err(OutputError::BadLock));
        assert_eq!(lock_key(&"00".repeat(32)), Err(OutputError::BadLock));
    }
}
