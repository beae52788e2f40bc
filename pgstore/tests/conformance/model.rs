//! The ledger's model-based property tests (`paydvm_ledger::conformance::model`) through the
//! PostgreSQL store: after every step the store agrees with the reference model, the database
//! verifies, and reopening gives the live state. A fresh database per case, so fewer cases than
//! the SQLite run (`PAYDVM_PROP_CASES` scales both).

use paydvm_ledger::conformance::model::{
    bounded_store_agrees, cases, cmd, store_agrees, two_writers_agree,
};
use paydvm_ledger::{Durability, LedgerStore, Retention, StoreOptions};
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

    /// Two stores on one database write in turns, each following the other first (several
    /// nodes on one ledger): the writer agrees with the model at every step, and both end with
    /// the replay's state and verify.
    #[test]
    fn two_pg_stores_writing_in_turns_agree_with_model(cmds in prop::collection::vec(cmd(), 1..100)) {
        for options in [
            StoreOptions::everything(Durability::Normal),
            StoreOptions::bounded(Durability::Normal).snapshot_every(7),
        ] {
            let db = PgDatabase::new();
            let a = PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?;
            let b = PgStore::open(&db.url(), &options).map_err(|e| fail("open", e))?;
            let bounded = options.retention == Retention::OpenWork;
            two_writers_agree(&cmds, a, b, bounded)?;
        }
    }
}
