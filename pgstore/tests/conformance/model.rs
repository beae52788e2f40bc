//! The ledger's model-based property tests (`paydvm_ledger::conformance::model`) through the
//! PostgreSQL store: after every step the store agrees with the reference model, the database
//! verifies, and reopening gives the live state. A fresh database per case, so fewer cases than
//! the SQLite run (`PAYDVM_PROP_CASES` scales both).

use paydvm_ledger::conformance::model::{bounded_store_agrees, cases, cmd, store_agrees};
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::PgStore;
use proptest::prelude::*;

use super::PgDatabase;

fn fail(what: &str, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 200).max(1), ..ProptestConfig::default() })]

    /// Keeping everything in memory: the store agrees with the model, verifies, and a reopen
    /// (replay from the database) gives the live state.
    #[test]
    fn pg_store_agrees_with_model_and_verifies(cmds in prop::collection::vec(cmd(), 1..100)) {
        let db = PgDatabase::new();
        let options = StoreOptions::everything(Durability::Normal);
        let store = PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?;
        let (store, full) = store_agrees(&cmds, store)?;
        store.close().map_err(|e| fail("close", e))?;
        let reopened = PgStore::open(&db.url(), &options).map_err(|e| fail("reopen", e))?;
        prop_assert_eq!(&full, reopened.state());
    }

    /// Keeping open work only, snapshotting every 7 events: the rules answer as if the whole
    /// history were in memory, memory holds exactly the open work, and a restart from the
    /// newest snapshot plus the tail gives the same state.
    #[test]
    fn bounded_pg_store_agrees_with_model(cmds in prop::collection::vec(cmd(), 1..100)) {
        let db = PgDatabase::new();
        let options = StoreOptions::bounded(Durability::Normal).snapshot_every(7);
        let store = PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?;
        let (store, open) = bounded_store_agrees(&cmds, store)?;
        drop(store);
        let reopened = PgStore::open(&db.url(), &options).map_err(|e| fail("reopen", e))?;
        prop_assert_eq!(&open, reopened.state());
    }
}
