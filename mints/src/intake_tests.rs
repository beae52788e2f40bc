//! Intake swaps against the in-memory mint: the money of a NutZap is ours exactly when the mint
//! signed our (derived) outputs for it, whatever was lost on the way.

use cdk::nuts::SecretKey;
use paydvm_ledger::Msat;

use crate::intake::Intake;
use crate::redeem::SwapOutcome;
use crate::refund::sim::{SimMint, SimStore, SwapFault};
use crate::verify::{Origin, VerifiedNutZap};

const SEED: [u8; 64] = [5; 64];

fn nutzap(mint: &SimMint, sat: u64, id: &str) -> VerifiedNutZap {
    let proofs = mint.issue(sat);
    VerifiedNutZap {
        event_id: id.into(),
        sender: "ab".repeat(32),
        mint: "http://mint.test".into(),
        unit: "sat".into(),
        ys: proofs.iter().map(|p| p.y().unwrap().to_hex()).collect(),
        units: sat,
        amount: Msat::from_msat(sat * 1000),
        proofs,
        target: None,
        origin: Origin::NutZap,
    }
}

async fn take(mint: &SimMint, store: &SimStore, nz: &VerifiedNutZap) -> SwapOutcome {
    let key = SecretKey::from_slice(&[8; 32]).unwrap();
    Intake {
        mint,
        store,
        seed: &SEED,
        key: &key,
    }
    .swap(nz)
    .await
}

#[tokio::test]
async fn a_nutzap_is_swapped_into_proofs_only_we_hold() {
    let (mint, store) = (SimMint::new(2, 0), SimStore::default());
    let nz = nutzap(&mint, 13, "a");
    let outcome = take(&mint, &store, &nz).await;
    assert_eq!(
        outcome,
        SwapOutcome::Swapped {
            received: 13,
            fee: 0
        }
    );
    assert_eq!(store.unspent_total(), 13);
}

#[tokio::test]
async fn an_answer_lost_after_the_swap_is_restored_and_counted_once() {
    let (mint, store) = (SimMint::new(2, 100), SimStore::default());
    let nz = nutzap(&mint, 10, "b");
    mint.set_next_swap(SwapFault::LoseAnswer);
    assert!(matches!(
        take(&mint, &store, &nz).await,
        SwapOutcome::Retry { .. }
    ));
    assert_eq!(store.unspent_total(), 0);
    // The next attempt sends the same outputs: the mint says spent, restore proves it was ours.
    let again = take(&mint, &store, &nz).await;
    assert_eq!(
        again,
        SwapOutcome::Swapped {
            received: 9,
            fee: 1
        }
    );
    assert_eq!((mint.swaps(), mint.restores()), (1, 1));
    // Asked once more (a duplicate event, a restart): still ours, not added twice.
    assert_eq!(take(&mint, &store, &nz).await, again);
    assert_eq!(store.unspent_total(), 9);
}

#[tokio::test]
async fn proofs_someone_else_spent_are_already_spent_never_ours() {
    let (mint, store) = (SimMint::new(2, 0), SimStore::default());
    let nz = nutzap(&mint, 5, "c");
    let ys: Vec<_> = nz.proofs.iter().map(|p| p.y().unwrap()).collect();
    mint.spend_elsewhere(&ys);
    assert_eq!(take(&mint, &store, &nz).await, SwapOutcome::AlreadySpent);
    assert_eq!(store.unspent_total(), 0);
}

#[tokio::test]
async fn a_refused_swap_is_refused_and_planned_afresh_next_time() {
    let (mint, store) = (SimMint::new(2, 0), SimStore::default());
    let nz = nutzap(&mint, 5, "d");
    mint.set_next_swap(SwapFault::Refuse);
    assert!(matches!(
        take(&mint, &store, &nz).await,
        SwapOutcome::Refused { .. }
    ));
    assert_eq!(
        take(&mint, &store, &nz).await,
        SwapOutcome::Swapped {
            received: 5,
            fee: 0
        }
    );
}

/// An intake asked again after its proofs were spent (a duplicate event, a restart, or a retry
/// after its settle's answer was lost), on cdk's real store: still ours, and the proofs a refund
/// spent since stay spent (cdk's insert would have written them back as unspent).
#[tokio::test]
async fn an_intake_settled_again_after_a_refund_spent_its_proofs_does_not_revive_them() {
    use crate::refund::ports::{CdkStore, SagaStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet");
    let store = CdkStore(std::sync::Arc::new(
        crate::redeem::sqlite_store(&path).await.unwrap(),
    ));
    let mint = SimMint::new(2, 0);
    let nz = nutzap(&mint, 13, "e");
    let key = SecretKey::from_slice(&[8; 32]).unwrap();
    let intake = Intake {
        mint: &mint,
        store: &store,
        seed: &SEED,
        key: &key,
    };
    let swapped = SwapOutcome::Swapped {
        received: 13,
        fee: 0,
    };
    assert_eq!(intake.swap(&nz).await, swapped);
    let held = store.unspent("http://mint.test", "sat").await.unwrap();
    let ys: Vec<_> = held.iter().map(|p| p.y().unwrap()).collect();
    store.reserve("refund-z", ys.clone()).await.unwrap();
    store
        .settle("http://mint.test", "sat", Vec::new(), ys)
        .await
        .unwrap();

    assert_eq!(intake.swap(&nz).await, swapped, "restored: still ours");
    let revived = store.unspent("http://mint.test", "sat").await.unwrap();
    assert!(revived.is_empty(), "{} proofs came back", revived.len());
}
