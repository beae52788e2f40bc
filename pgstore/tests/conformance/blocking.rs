//! The store is blocking but owns its runtime: it must work from a thread inside another tokio
//! runtime (the node's core thread, `spawn_blocking`), and be dropped there.

use paydvm_ledger::conformance::{paid_job, received};
use paydvm_ledger::{AppendOutcome, Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::PgStore;

use super::PgDatabase;

#[test]
fn open_and_append_from_spawn_blocking() {
    let db = PgDatabase::new();
    let url = db.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let head = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let options = StoreOptions::bounded(Durability::Full);
            let mut store = PgStore::open(&url, &options).unwrap();
            store.append_group(&paid_job("a")).unwrap();
            let seq = store.append(&received("b")).unwrap();
            assert_eq!(seq, AppendOutcome::Appended { seq: 7 });
            let head = store.head();
            drop(store);
            head
        })
        .await
        .unwrap()
    });
    let store = PgStore::open(&db.url(), &StoreOptions::everything(Durability::Normal)).unwrap();
    assert_eq!(store.head(), head);
    store.verify().unwrap();
}

/// Two stores on one database: the second one's head is stale after the first appends, so its
/// write fails and leaves the log whole, instead of forking the chain.
#[test]
fn a_second_writer_with_a_stale_head_is_refused() {
    let db = PgDatabase::new();
    let options = StoreOptions::everything(Durability::Normal);
    let mut first = PgStore::open(&db.url(), &options).unwrap();
    let mut second = PgStore::open(&db.url(), &options).unwrap();
    first.append(&received("a")).unwrap();
    let refused = second.append(&received("b"));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("another writer")),
        "{refused:?}"
    );
    assert_eq!(second.head().0, 0, "the refused write is undone in memory");
    let report = first.verify().unwrap();
    assert_eq!(report.events, 1);
}
