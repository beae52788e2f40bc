//! The wallet store's `settle` against cdk's real store: idempotent even when the first call's
//! answer was lost and its proofs were used since. An intake swap or a refund whose settle
//! committed but reported a failure (a lost connection) settles again on its next attempt; by
//! then a refund may have reserved or spent the proofs that settle added. Settling again must
//! not bring them back as unspent: the wallet would then hold proofs the mint says are spent, and
//! hand them to a later refund.

use std::sync::Arc;

use cdk::nuts::PublicKey;

use super::ports::{CdkStore, SagaStore};
use super::sim::SimMint;
use crate::redeem::sqlite_store;

const MINT: &str = "http://mint.test";

fn ys(proofs: &[cdk::nuts::Proof]) -> Vec<PublicKey> {
    proofs.iter().map(|p| p.y().unwrap()).collect()
}

async fn cdk_store(dir: &tempfile::TempDir) -> CdkStore {
    CdkStore(Arc::new(
        sqlite_store(&dir.path().join("wallet")).await.unwrap(),
    ))
}

async fn unspent(store: &CdkStore) -> Vec<PublicKey> {
    ys(&store.unspent(MINT, "sat").await.unwrap())
}

#[tokio::test]
async fn a_settle_run_again_leaves_proofs_spent_or_reserved_since_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = cdk_store(&dir).await;
    let proofs = SimMint::new(6, 0).issue(13); // 8, 4, 1
    assert_eq!(proofs.len(), 3);
    // The intake's settle commits (its answer is lost).
    store
        .settle(MINT, "sat", proofs.clone(), Vec::new())
        .await
        .unwrap();
    // A refund spends the first two; another reserves the third.
    let spent = ys(&proofs[..2]);
    store.reserve("refund-a", spent.clone()).await.unwrap();
    store.settle(MINT, "sat", Vec::new(), spent).await.unwrap();
    store.reserve("refund-b", ys(&proofs[2..])).await.unwrap();
    assert!(unspent(&store).await.is_empty());

    // The intake's next attempt settles the same proofs again.
    store
        .settle(MINT, "sat", proofs.clone(), Vec::new())
        .await
        .unwrap();
    assert!(
        unspent(&store).await.is_empty(),
        "nothing came back as unspent"
    );
    // Released, the reserved one is unspent again; the spent ones stay spent.
    store.release("refund-b").await.unwrap();
    store.release("refund-a").await.unwrap();
    assert_eq!(unspent(&store).await, ys(&proofs[2..]));
}

#[tokio::test]
async fn a_refunds_change_settled_twice_is_held_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = cdk_store(&dir).await;
    let mint = SimMint::new(7, 0);
    let inputs = mint.issue(5);
    store
        .settle(MINT, "sat", inputs.clone(), Vec::new())
        .await
        .unwrap();
    let change = mint.issue(2);
    for _ in 0..2 {
        store
            .settle(MINT, "sat", change.clone(), ys(&inputs))
            .await
            .unwrap();
    }
    assert_eq!(unspent(&store).await, ys(&change));
}
