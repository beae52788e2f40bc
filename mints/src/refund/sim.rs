//! An in-memory Cashu mint and wallet store with faults, for the saga's own tests and for the
//! node simulator: real blind signatures (so unblinding and DLEQ are exercised), spent/signed
//! bookkeeping like a real mint, and knobs for what goes wrong (an answer lost after the swap was
//! performed, an unreachable mint, a refusal, proofs spent by someone else).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use cdk::dhke::{hash_to_curve, sign_message};
use cdk::nuts::{
    BlindSignature, BlindedMessage, Id, Keys, Proof, PublicKey, SecretKey, State, SwapRequest,
};
use cdk::secret::Secret;
use cdk::Amount;

use super::ports::{KeysetInfo, MintFault, MintPort, SagaStore, StoreFault};
use super::record::SagaRecord;

/// What the next swap does (then the knob resets to `Normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapFault {
    #[default]
    Normal,
    /// The mint performs the swap, then the answer is lost.
    LoseAnswer,
    /// The mint refuses, changing nothing.
    Refuse,
}

#[derive(Default)]
struct MintBook {
    spent: HashSet<PublicKey>,
    signed: HashMap<PublicKey, BlindSignature>,
    next_swap: SwapFault,
    unreachable: bool,
    swaps: usize,
    restores: usize,
}

pub struct SimMint {
    keyset: Id,
    secrets: BTreeMap<Amount, SecretKey>,
    keys: Keys,
    fee_ppk: u64,
    book: Mutex<MintBook>,
}

fn amounts() -> impl DoubleEndedIterator<Item = Amount> {
    (0..16).map(|i| Amount::from(1u64 << i))
}

impl SimMint {
    /// A mint with one keyset (powers of two up to 2^15) and `fee_ppk` input fee; keys from `seed`.
    pub fn new(seed: u8, fee_ppk: u64) -> SimMint {
        let secrets: BTreeMap<Amount, SecretKey> = amounts()
            .enumerate()
            .map(|(i, a)| {
                let mut bytes = [seed.max(1); 32];
                bytes[0] = i as u8 + 1;
                (a, SecretKey::from_slice(&bytes).expect("a valid scalar"))
            })
            .collect();
        let keys = Keys::new(secrets.iter().map(|(a, k)| (*a, k.public_key())).collect());
        SimMint {
            keyset: Id::v1_from_keys(&keys),
            secrets,
            keys,
            fee_ppk,
            book: Mutex::new(MintBook::default()),
        }
    }

    /// The keyset's id and public keys.
    pub fn keyset(&self) -> (Id, Keys) {
        (self.keyset, self.keys.clone())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, MintBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_next_swap(&self, fault: SwapFault) {
        self.book().next_swap = fault;
    }

    pub fn set_unreachable(&self, down: bool) {
        self.book().unreachable = down;
    }

    /// Someone else spends these proofs (as if the secrets had leaked).
    pub fn spend_elsewhere(&self, ys: &[PublicKey]) {
        self.book().spent.extend(ys.iter().copied());
    }

    pub fn swaps(&self) -> usize {
        self.book().swaps
    }

    pub fn restores(&self) -> usize {
        self.book().restores
    }

    pub fn is_spent(&self, y: &PublicKey) -> bool {
        self.book().spent.contains(y)
    }

    /// Fresh unlocked proofs of `amount` (split in powers of two), as if minted for us.
    pub fn issue(&self, amount: u64) -> Vec<Proof> {
        let mut out = Vec::new();
        let mut left = amount;
        for a in amounts().rev() {
            while left >= u64::from(a) {
                let secret = Secret::generate();
                let y = hash_to_curve(secret.as_bytes()).expect("hash to curve");
                let c = sign_message(&self.secrets[&a], &y).expect("sign");
                out.push(Proof::new(a, self.keyset, secret, c));
                left -= u64::from(a);
            }
        }
        out
    }

    fn check_input(&self, p: &Proof) -> Result<PublicKey, MintFault> {
        let k = self
            .secrets
            .get(&p.amount)
            .ok_or_else(|| MintFault::Refused("unknown amount".into()))?;
        cdk::dhke::verify_message(k, p.c, p.secret.as_bytes())
            .map_err(|_| MintFault::Refused("invalid proof".into()))?;
        p.y().map_err(|e| MintFault::Refused(e.to_string()))
    }

    fn sign(&self, b: &BlindedMessage) -> Result<BlindSignature, MintFault> {
        let k = self
            .secrets
            .get(&b.amount)
            .ok_or_else(|| MintFault::Refused("unknown amount".into()))?;
        let c =
            sign_message(k, &b.blinded_secret).map_err(|e| MintFault::Refused(e.to_string()))?;
        BlindSignature::new(b.amount, c, self.keyset, &b.blinded_secret, k)
            .map_err(|e| MintFault::Refused(e.to_string()))
    }

    fn info(&self) -> KeysetInfo {
        KeysetInfo {
            id: self.keyset,
            keys: self.keys.clone(),
            fee_ppk: self.fee_ppk,
        }
    }
}

#[async_trait]
impl MintPort for SimMint {
    async fn active_keyset(&self) -> Result<KeysetInfo, MintFault> {
        if self.book().unreachable {
            return Err(MintFault::Unreachable("down".into()));
        }
        Ok(self.info())
    }

    async fn keyset(&self, id: Id) -> Result<KeysetInfo, MintFault> {
        if id != self.keyset {
            return Err(MintFault::Refused("unknown keyset".into()));
        }
        self.active_keyset().await
    }

    async fn swap(&self, request: SwapRequest) -> Result<Vec<BlindSignature>, MintFault> {
        let fault = {
            let mut book = self.book();
            if book.unreachable {
                return Err(MintFault::Unreachable("down".into()));
            }
            std::mem::take(&mut book.next_swap)
        };
        if fault == SwapFault::Refuse {
            return Err(MintFault::Refused("refused by the test".into()));
        }
        let ys = request
            .inputs()
            .iter()
            .map(|p| self.check_input(p))
            .collect::<Result<Vec<_>, _>>()?;
        let fee = (request.inputs().len() as u64 * self.fee_ppk).div_ceil(1000);
        let (inputs, outputs) = (
            u64::from(
                request
                    .input_amount()
                    .map_err(|e| MintFault::Refused(e.to_string()))?,
            ),
            u64::from(
                request
                    .output_amount()
                    .map_err(|e| MintFault::Refused(e.to_string()))?,
            ),
        );
        if inputs != outputs + fee {
            return Err(MintFault::Refused(format!(
                "unbalanced: {inputs} != {outputs} + {fee}"
            )));
        }
        let mut book = self.book();
        if ys.iter().any(|y| book.spent.contains(y))
            || request
                .outputs()
                .iter()
                .any(|b| book.signed.contains_key(&b.blinded_secret))
        {
            return Err(MintFault::Spent);
        }
        let signatures = request
            .outputs()
            .iter()
            .map(|b| self.sign(b))
            .collect::<Result<Vec<_>, _>>()?;
        book.spent.extend(ys);
        for (b, s) in request.outputs().iter().zip(&signatures) {
            book.signed.insert(b.blinded_secret, s.clone());
        }
        book.swaps += 1;
        match fault {
            SwapFault::LoseAnswer => Err(MintFault::Unreachable("the answer was lost".into())),
            _ => Ok(signatures),
        }
    }

    async fn check_state(&self, ys: Vec<PublicKey>) -> Result<Vec<State>, MintFault> {
        let book = self.book();
        if book.unreachable {
            return Err(MintFault::Unreachable("down".into()));
        }
        Ok(ys
            .iter()
            .map(|y| {
                if book.spent.contains(y) {
                    State::Spent
                } else {
                    State::Unspent
                }
            })
            .collect())
    }

    async fn restore(
        &self,
        outputs: Vec<BlindedMessage>,
    ) -> Result<Vec<(BlindedMessage, BlindSignature)>, MintFault> {
        let mut book = self.book();
        if book.unreachable {
            return Err(MintFault::Unreachable("down".into()));
        }
        book.restores += 1;
        Ok(outputs
            .into_iter()
            .filter_map(|b| book.signed.get(&b.blinded_secret).cloned().map(|s| (b, s)))
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Unspent,
    Reserved,
    /// Kept after it was spent, as the real store keeps it (see `CdkStore::settle`).
    Spent,
}

#[derive(Default)]
struct StoreBook {
    records: BTreeMap<String, SagaRecord>,
    intakes: BTreeMap<String, crate::intake::IntakePlan>,
    proofs: BTreeMap<PublicKey, (Proof, Held, Option<String>)>,
}

/// The wallet store in memory. `fail_saves_after(n)` makes saves fail after `n` more succeed
/// (the process dying mid-saga: what was saved stays, nothing after it happens).
#[derive(Default)]
pub struct SimStore {
    book: Mutex<StoreBook>,
    saves_left: Mutex<Option<usize>>,
}

impl SimStore {
    fn book(&self) -> std::sync::MutexGuard<'_, StoreBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, proofs: Vec<Proof>) {
        let mut book = self.book();
        for p in proofs {
            book.proofs
                .insert(p.y().expect("y"), (p, Held::Unspent, None));
        }
    }

    /// Unspent plus reserved value held.
    pub fn total(&self) -> u64 {
        self.book()
            .proofs
            .values()
            .filter(|(_, h, _)| *h != Held::Spent)
            .map(|(p, _, _)| u64::from(p.amount))
            .sum()
    }

    pub fn unspent_total(&self) -> u64 {
        self.book()
            .proofs
            .values()
            .filter(|(_, h, _)| *h == Held::Unspent)
            .map(|(p, _, _)| u64::from(p.amount))
            .sum()
    }

    pub fn fail_saves_after(&self, n: Option<usize>) {
        *self.saves_left.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    pub fn record(&self, tag: &str) -> Option<SagaRecord> {
        self.book().records.get(tag).cloned()
    }
}

#[async_trait]
impl SagaStore for SimStore {
    async fn load(&self, tag: &str) -> Result<Option<SagaRecord>, StoreFault> {
        Ok(self.book().records.get(tag).cloned())
    }

    async fn save(&self, record: &SagaRecord) -> Result<(), StoreFault> {
        {
            let mut left = self.saves_left.lock().unwrap_or_else(|p| p.into_inner());
            match left.as_mut() {
                Some(0) => return Err(StoreFault("the process died".into())),
                Some(n) => *n -= 1,
                None => {}
            }
        }
        self.book()
            .records
            .insert(record.tag.clone(), record.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SagaRecord>, StoreFault> {
        Ok(self.book().records.values().cloned().collect())
    }

    async fn load_intake(
        &self,
        tag: &str,
    ) -> Result<Option<crate::intake::IntakePlan>, StoreFault> {
        Ok(self.book().intakes.get(tag).cloned())
    }

    async fn save_intake(
        &self,
        tag: &str,
        plan: &crate::intake::IntakePlan,
    ) -> Result<(), StoreFault> {
        self.book().intakes.insert(tag.to_owned(), plan.clone());
        Ok(())
    }

    async fn forget_intake(&self, tag: &str) -> Result<(), StoreFault> {
        self.book().intakes.remove(tag);
        Ok(())
    }

    async fn unspent(&self, _mint: &str, _unit: &str) -> Result<Vec<Proof>, StoreFault> {
        Ok(self
            .book()
            .proofs
            .values()
            .filter(|(_, h, _)| *h == Held::Unspent)
            .map(|(p, _, _)| p.clone())
            .collect())
    }

    async fn reserve(&self, tag: &str, ys: Vec<PublicKey>) -> Result<(), StoreFault> {
        let mut book = self.book();
        for y in &ys {
            match book.proofs.get(y) {
                Some((_, Held::Unspent, _)) => {}
                _ => return Err(StoreFault("a proof to reserve is not unspent".into())),
            }
        }
        for y in ys {
            if let Some(entry) = book.proofs.get_mut(&y) {
                entry.1 = Held::Reserved;
                entry.2 = Some(tag.to_owned());
            }
        }
        Ok(())
    }

    async fn release(&self, tag: &str) -> Result<(), StoreFault> {
        for entry in self.book().proofs.values_mut() {
            // As cdk's: only reserved proofs are given back, never spent ones.
            if entry.2.as_deref() == Some(tag) && entry.1 == Held::Reserved {
                entry.1 = Held::Unspent;
                entry.2 = None;
            }
        }
        Ok(())
    }

    async fn settle(
        &self,
        _mint: &str,
        _unit: &str,
        change: Vec<Proof>,
        spent: Vec<PublicKey>,
    ) -> Result<(), StoreFault> {
        // As the real store: a known proof is left as it is, a spent one is kept as spent.
        let mut book = self.book();
        for y in spent {
            if let Some(entry) = book.proofs.get_mut(&y) {
                entry.1 = Held::Spent;
            }
        }
        for p in change {
            let y = p.y().map_err(|e| StoreFault(e.to_string()))?;
            book.proofs.entry(y).or_insert((p, Held::Unspent, None));
        }
        Ok(())
    }
}
