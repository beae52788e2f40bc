//! Model-based property tests (the model, generators and runner are the ledger's conformance kit,
//! `paydvm_ledger::conformance::model`, so other stores run them too): the in-memory core, the
//! SQLite store, and a SQLite store keeping open work only against the reference model.

use paydvm_ledger::conformance::model::{
    bounded_store_agrees, cases, cmd, explore, replay, run, store_agrees, two_writers_agree,
};
use paydvm_ledger::store::Store;
use paydvm_ledger::*;
use paydvm_ledger::{Durability, StoreOptions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The in-memory core agrees with the model step by step; replay equals live state.
    #[test]
    fn core_agrees_with_model(cmds in prop::collection::vec(cmd(), 1..160)) {
        let ledger = std::cell::RefCell::new(Ledger::new());
        let accepted = run(
            &cmds,
            |e| ledger.borrow_mut().append(e),
            || ledger.borrow().state().clone(),
        )?;
        let live = ledger.borrow().state().clone();
        prop_assert_eq!(replay(&accepted), live);
    }

    /// The same through the SQLite store: the store agrees with the model, the file
    /// verifies, and its state is the replay of the accepted events.
    #[test]
    fn store_agrees_with_model_and_verifies(cmds in prop::collection::vec(cmd(), 1..100)) {
        store_agrees(&cmds, Store::open_in_memory().unwrap())?;
    }
}

proptest! {
    // A file and a projection read per step: a twentieth of the cases of the properties above.
    #![proptest_config(ProptestConfig { cases: (cases() / 20).max(1), ..ProptestConfig::default() })]

    /// The same through a store keeping open work only, snapshotting every 7 events: the rules
    /// answer as if the whole history were in memory (the model checks the whole history, read
    /// from the stored projections), memory holds exactly the open work, and a restart from the
    /// newest snapshot plus the tail gives the same state.
    #[test]
    fn bounded_store_agrees_with_model(cmds in prop::collection::vec(cmd(), 1..100)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bounded.db");
        let options = StoreOptions::bounded(Durability::Normal).snapshot_every(7);
        let (store, open) = bounded_store_agrees(&cmds, Store::open_with(&path, &options).unwrap())?;
        drop(store);
        let reopened = Store::open_with(&path, &options).unwrap();
        prop_assert_eq!(&open, reopened.state());
    }

    /// Two stores on one file write in turns, each following the other first: the writer agrees
    /// with the model at every step, and both end with the replay's state and verify; keeping
    /// everything, and keeping open work (where a follow may load afresh).
    #[test]
    fn two_stores_writing_in_turns_agree_with_model(cmds in prop::collection::vec(cmd(), 1..100)) {
        for options in [
            StoreOptions::everything(Durability::Normal),
            StoreOptions::bounded(Durability::Normal).snapshot_every(7),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("shared.db");
            let a = Store::open_with(&path, &options).unwrap();
            let b = Store::open_with(&path, &options).unwrap();
            let bounded = options.retention == Retention::OpenWork;
            two_writers_agree(&cmds, a, b, bounded)?;
        }
    }
}

/// The generator must reach every job state and refund state, and every asset situation the
/// rules are about, or the properties above prove less than they claim.
#[test]
fn generator_reaches_every_state_and_asset_case() {
    let (job_states, refund_states, seen) = explore();
    assert_eq!(
        job_states.len(),
        JobState::ALL.len(),
        "reached {job_states:?}"
    );
    assert_eq!(refund_states.len(), 6, "reached {refund_states:?}");
    for case in [
        "one job paid in two assets",
        "refund of a job paid in two assets",
        "partial return while the job holds money",
        "job refund after a partial return",
        "refund of credit-funded money refused",
        "start over the wrong asset refused",
        "start refused: asset short",
        "settle refused: asset short",
        "customer paid the payout fee",
        "written off to credit",
        "written off to income",
        "held subscription money refunded",
        "unused rest of a period refunded",
        "quota unit given back",
    ] {
        assert!(
            seen.contains(case),
            "never reached: {case}; reached {seen:?}"
        );
    }
}
