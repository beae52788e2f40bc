//! The contracts of a store keeping open work only: what stays in memory, snapshots written and
//! trusted only when they check out, and start-up replaying only the tail.

use super::builders::*;
use super::contracts::{append_all, open, reopen, Make};
use super::{options, Harness, SnapshotDamage, SNAPSHOT_EVERY};
use crate::event::{Asset, Disposition, JobPayment};
use crate::ledger_store::{LedgerStore, Retention, SnapshotUse};
use crate::state::LedgerState;

/// What a full replay of the same data holds of open work: the reference a bounded store's state
/// must equal.
fn full_replay<H: Harness>(h: &mut H) -> LedgerState {
    let store = h
        .open(&options(Retention::Everything))
        .expect("opens keeping everything");
    let state = store.state().open_work();
    store.close().unwrap();
    state
}

/// A tail that names records which ended before it: a late payment for a succeeded job, the
/// outcome of a pending effect, the look-up answer of an unknown refund.
fn tail() -> Vec<Vec<crate::event::LedgerEvent>> {
    let late = pay_in(
        "late-a",
        "a",
        Asset::Lightning,
        JobPayment::Whole(Disposition::Credit),
    );
    vec![
        vec![late],
        vec![effect_done("y")],
        vec![refund_settled("d:r")],
        vec![received("g")],
    ]
}

pub fn open_work_holds_only_records_that_have_not_ended<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    for n in 0..20 {
        append_all(&mut store, &[paid_job(&format!("old{n}"))]);
    }
    let state = store.state();
    assert!(state.holds_only_open_work());
    let mut resident: Vec<&str> = state.jobs().map(|j| j.job.as_str()).collect();
    resident.sort();
    assert_eq!(resident, ["d", "e", "f"]);
    assert_eq!(state.refunds().count(), 1, "only the unknown refund");
    assert_eq!(state.effects().count(), 1, "only the pending effect");
    assert_eq!(
        state.payment_ref_count(),
        0,
        "payment refs are looked up in the store"
    );
    assert!(store.job(&job("old7")).unwrap().is_some());
}

pub fn snapshots_are_written_every_n_events_and_at_close<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    assert_eq!(SNAPSHOT_EVERY, 5);
    append_all(&mut store, &[paid_job("a")]);
    assert_eq!(store.snapshot_stats().last_seq, 6);
    append_all(&mut store, &[paid_job("b")]);
    assert_eq!(store.snapshot_stats().written, 2);
    assert_eq!(store.snapshot_stats().last_seq, 12);
    store.append(&received("c")).unwrap();
    assert_eq!(
        store.snapshot_stats().written,
        2,
        "one event is not yet worth a snapshot"
    );
    let store = reopen(&mut h, store, r);
    assert_eq!(store.opened().snapshot, SnapshotUse::Loaded { seq: 13 });
    assert_eq!(store.opened().replayed, 0);
    assert_eq!(store.snapshot_stats().write_failures, 0);
}

pub fn reopen_loads_the_snapshot_and_replays_only_the_tail<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.write_snapshot().unwrap();
    let snapshot = store.snapshot_stats().last_seq;
    assert_eq!(snapshot, store.head().0);
    store.append(&received("g")).unwrap();
    store.append(&quote("g")).unwrap();
    let state = store.state().clone();
    // A crash: no snapshot at close.
    drop(store);
    let store = open(&mut h, r);
    assert_eq!(
        store.opened().snapshot,
        SnapshotUse::Loaded { seq: snapshot }
    );
    assert_eq!(store.opened().replayed, 2);
    assert_eq!(store.state(), &state);
}

pub fn snapshot_plus_tail_equals_a_full_replay<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.write_snapshot().unwrap();
    let snapshot = store.snapshot_stats().last_seq;
    append_all(&mut store, &tail());
    let head = store.head();
    let state = store.state().clone();
    drop(store);
    let store = open(&mut h, r);
    assert_eq!(store.head(), head);
    assert_eq!(store.state(), &state);
    assert!(
        matches!(store.opened().snapshot, SnapshotUse::Loaded { seq } if seq == snapshot)
            || matches!(store.opened().snapshot, SnapshotUse::Rejected { .. }),
        "{:?}",
        store.opened()
    );
    store.close().unwrap();
    assert_eq!(full_replay(&mut h), state);
}

pub fn a_corrupt_snapshot_is_rejected_and_the_log_replayed<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let head = store.head().0;
    let state = store.state().clone();
    store.close().unwrap();
    h.damage_snapshot(SnapshotDamage::Body);
    let store = open(&mut h, r);
    match &store.opened().snapshot {
        SnapshotUse::Rejected { seq, reason } => {
            assert_eq!(*seq, head);
            assert!(reason.contains("digest"), "{reason}");
        }
        other => panic!("a corrupt snapshot was not rejected: {other:?}"),
    }
    assert_eq!(store.opened().replayed, head);
    assert_eq!(store.state(), &state);
    // The store wrote a good one again: the next start uses it.
    let store = reopen(&mut h, store, r);
    assert_eq!(store.opened().snapshot, SnapshotUse::Loaded { seq: head });
}

pub fn a_snapshot_of_another_history_is_rejected<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let state = store.state().clone();
    store.close().unwrap();
    h.damage_snapshot(SnapshotDamage::OffChain);
    let store = open(&mut h, r);
    match &store.opened().snapshot {
        SnapshotUse::Rejected { reason, .. } => {
            assert!(reason.contains("another hash"), "{reason}")
        }
        other => panic!("a snapshot off the chain was not rejected: {other:?}"),
    }
    assert_eq!(store.state(), &state);
}

pub fn a_snapshot_that_disagrees_with_the_stored_balances_is_rejected<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.close().unwrap();
    h.damage_snapshot(SnapshotDamage::Projections);
    let store = open(&mut h, r);
    match &store.opened().snapshot {
        SnapshotUse::Rejected { reason, .. } => {
            assert!(reason.contains("projections: account"), "{reason}")
        }
        other => panic!("a snapshot that disagrees with the stored balances was used: {other:?}"),
    }
}

pub fn verify_ignores_a_damaged_snapshot<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.write_snapshot().unwrap();
    h.damage_snapshot(SnapshotDamage::Body);
    let report = store
        .verify()
        .expect("verify checks the log, not the snapshot");
    assert_eq!(report.events, store.head().0);
}

pub fn a_store_keeping_everything_reopens_a_bounded_ledger<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let head = store.head().0;
    let state = store.state().clone();
    store.close().unwrap();
    let everything = h.open(&options(Retention::Everything)).unwrap();
    assert_eq!(everything.opened().snapshot, SnapshotUse::NotUsed);
    assert_eq!(everything.opened().replayed, head);
    assert_eq!(everything.state().open_work(), state);
    assert_eq!(everything.state().jobs().count(), 6);
    everything.close().unwrap();
    let store = open(&mut h, r);
    assert_eq!(store.opened().snapshot, SnapshotUse::Loaded { seq: head });
    assert_eq!(store.state(), &state);
}
