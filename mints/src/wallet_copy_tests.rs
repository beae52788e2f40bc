//! Copying a wallet between two of cdk's SQLite stores (the PostgreSQL side runs in the node's
//! tests, `app/tests/pg_node.rs`): everything arrives, the amounts agree, and a copy never
//! lands on a wallet that holds something.

use cdk::cdk_database::WalletDatabase;
use cdk::nuts::{CurrencyUnit, KeySet, KeySetInfo, State};
use cdk::wallet::types::ProofInfo;

use crate::holdings::Holding;
use crate::redeem::sqlite_store;
use crate::refund::record::{NAMESPACE, SUB_NAMESPACE};
use crate::refund::sim::SimMint;
use crate::wallet_copy::{copy_wallet, wallet_is_empty, WalletCopyError};

const MINT: &str = "http://mint.test";

async fn store(dir: &tempfile::TempDir, name: &str) -> cdk_sqlite::WalletSqliteDatabase {
    sqlite_store(&dir.path().join(name)).await.unwrap()
}

/// A wallet that took ecash: a mint with its keyset, proofs in three states, a saga record and
/// an intake plan, a counter moved on.
async fn used_wallet(store: &cdk_sqlite::WalletSqliteDatabase, mint: &SimMint) {
    let url = crate::mint_url_of(MINT).unwrap();
    let (id, keys) = mint.keyset();
    store.add_mint(url.clone(), None).await.unwrap();
    let info = KeySetInfo {
        id,
        unit: CurrencyUnit::Sat,
        active: true,
        input_fee_ppk: 100,
        final_expiry: None,
    };
    store
        .add_mint_keysets(url.clone(), vec![info])
        .await
        .unwrap();
    let keyset = KeySet {
        id,
        unit: CurrencyUnit::Sat,
        active: Some(true),
        keys,
        input_fee_ppk: 100,
        final_expiry: None,
    };
    store.add_keys(keyset).await.unwrap();
    store.increment_keyset_counter(&id, 7).await.unwrap();
    let states = [State::Unspent, State::Reserved, State::Spent];
    let proofs: Vec<ProofInfo> = [13u64, 5, 8]
        .into_iter()
        .zip(states)
        .flat_map(|(sat, state)| {
            let url = url.clone();
            mint.issue(sat)
                .into_iter()
                .map(move |p| ProofInfo::new(p, url.clone(), state, CurrencyUnit::Sat).unwrap())
        })
        .collect();
    store.update_proofs(proofs, Vec::new()).await.unwrap();
    store
        .kv_write(NAMESPACE, SUB_NAMESPACE, "refund-a", b"{\"saga\":1}")
        .await
        .unwrap();
    store
        .kv_write(NAMESPACE, "intake_plan_v1", "intake-b", b"{\"plan\":2}")
        .await
        .unwrap();
}

#[tokio::test]
async fn everything_a_wallet_holds_is_copied_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (store(&dir, "from").await, store(&dir, "to").await);
    used_wallet(&from, &SimMint::new(3, 100)).await;
    assert!(!wallet_is_empty(&from).await.unwrap());
    assert!(wallet_is_empty(&to).await.unwrap());

    let copied = copy_wallet(&from, &to).await.unwrap();
    assert_eq!((copied.mints, copied.keysets, copied.records), (1, 1, 2));
    assert_eq!(copied.proofs, 3 + 2 + 1, "13 = 8+4+1, 5 = 4+1, 8");
    let held = vec![Holding {
        mint: MINT.into(),
        unit: "sat".into(),
        amount: 13,
    }];
    assert_eq!(copied.holdings, held);
    let reserved = to
        .get_proofs(None, None, Some(vec![State::Reserved]), None)
        .await
        .unwrap();
    assert_eq!(reserved.len(), 2, "reserved proofs stay reserved");
    let record = to.kv_read(NAMESPACE, "intake_plan_v1", "intake-b").await;
    assert_eq!(record.unwrap().as_deref(), Some(&b"{\"plan\":2}"[..]));
    let (id, _) = SimMint::new(3, 100).keyset();
    assert_eq!(to.increment_keyset_counter(&id, 0).await.unwrap(), 7);
    assert!(to.get_keys(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_copy_never_lands_on_a_wallet_that_holds_something() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (store(&dir, "from").await, store(&dir, "to").await);
    let mint = SimMint::new(4, 0);
    used_wallet(&from, &mint).await;
    copy_wallet(&from, &to).await.unwrap();
    let again = copy_wallet(&from, &to).await;
    assert!(
        matches!(again, Err(WalletCopyError::NotEmpty(_))),
        "{again:?}"
    );

    // A wallet holding only a record (an intake plan written before its swap) is not empty.
    let other = store(&dir, "other").await;
    other
        .kv_write(NAMESPACE, "intake_plan_v1", "intake-c", b"{}")
        .await
        .unwrap();
    let onto_plan = copy_wallet(&from, &other).await;
    assert!(
        matches!(onto_plan, Err(WalletCopyError::NotEmpty(_))),
        "{onto_plan:?}"
    );
}
