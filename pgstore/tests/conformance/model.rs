//! The ledger's model-based property tests (`paydvm_ledger::conformance::model`) through the
//! PostgreSQL store: after every step the store agrees with the reference model, the database
//! verifies, and reopening gives the live state. A fresh database per case, so fewer cases than
//! the SQLite run (`PAYDVM_PROP_CASES` scales both).

use std::cell::RefCell;

use paydvm_ledger::conformance::model::{cases, cmd, replay, run};
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
        let store = RefCell::new(PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?);
        let accepted = run(
            &cmds,
            |e| store.borrow_mut().append(e),
            || store.borrow().state().clone(),
        )?;
        let store = store.into_inner();
        store.verify().map_err(|e| fail("verify", e))?;
        prop_assert_eq!(&replay(&accepted), store.state());
        store.close().map_err(|e| fail("close", e))?;
        let reopened = PgStore::open(&db.url(), &options).map_err(|e| fail("reopen", e))?;
        prop_assert_eq!(&replay(&accepted), reopened.state());
    }

    /// Keeping open work only, snapshotting every 7 events: the rules answer as if the whole
    /// history were in memory (the model checks the stored projections), memory holds exactly
    /// the open work, and a restart from the newest snapshot plus the tail gives the same state.
    #[test]
    fn bounded_pg_store_agrees_with_model(cmds in prop::collection::vec(cmd(), 1..100)) {
        let db = PgDatabase::new();
        let options = StoreOptions::bounded(Durability::Normal).snapshot_every(7);
        let store = RefCell::new(PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?);
        let accepted = run(
            &cmds,
            |e| store.borrow_mut().append(e),
            || store.borrow().projected_state().unwrap(),
        )?;
        let store = store.into_inner();
        let full = replay(&accepted);
        prop_assert_eq!(&full.open_work(), store.state());
        store.verify().map_err(|e| fail("verify", e))?;
        drop(store);
        let reopened = PgStore::open(&db.url(), &options).map_err(|e| fail("reopen", e))?;
        prop_assert_eq!(&full.open_work(), reopened.state());
    }
}
