//! Writes whose outcome is unknown: `COMMIT`'s answer lost, `COMMIT` itself lost, a server that
//! stops answering. The store undoes a failed write in memory, so it must know before building on
//! its head: written after all → carried on as written; not written → undone, written again by
//! the caller; not knowable yet → checked before the next write. Through a [`CutProxy`] in front
//! of the process's throwaway cluster.

use std::sync::mpsc;
use std::time::Duration;

use paydvm_ledger::conformance::{job, paid_job, received};
use paydvm_ledger::{AppendOutcome, Durability, LedgerError, LedgerStore, StoreOptions};
use paydvm_ledger_pg::cut_proxy::{Cut, CutProxy};
use paydvm_ledger_pg::throwaway::ThrowawayCluster as Cluster;
use paydvm_ledger_pg::PgStore;

use super::PgDatabase;

/// A fresh database, a proxy in front of the server, and a store opened through the proxy
/// (each call bounded by `deadline_ms` when given) that already holds one paid job (six
/// events).
fn through_proxy(deadline_ms: Option<u32>) -> (PgDatabase, CutProxy, PgStore) {
    let db = PgDatabase::new();
    let port = Cluster::shared().port();
    let proxy = CutProxy::start(port).unwrap();
    let mut url = proxy.url(&db.url(), port);
    if let Some(ms) = deadline_ms {
        url = format!("{url}?deadline_ms={ms}");
    }
    let mut store = PgStore::open(&url, &StoreOptions::bounded(Durability::Full)).unwrap();
    store.append_group(&paid_job("a")).unwrap();
    (db, proxy, store)
}

/// The database as a fresh store reads it, directly: it verifies, and which of `jobs` it holds.
fn stored(db: &PgDatabase, jobs: &[&str]) -> (u64, Vec<bool>) {
    let store = PgStore::open(&db.url(), &StoreOptions::everything(Durability::Normal)).unwrap();
    let report = store.verify().unwrap();
    let held = jobs
        .iter()
        .map(|j| store.job(&job(j)).unwrap().is_some())
        .collect();
    (report.events, held)
}

/// `write` on another thread: it must come back, whatever the server does (a generous bound,
/// far above the store's two-second deadline here; without a deadline it never comes back).
fn comes_back<T: Send + 'static>(
    mut store: PgStore,
    write: impl FnOnce(&mut PgStore) -> T + Send + 'static,
) -> (PgStore, T) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = write(&mut store);
        let _ = tx.send((store, outcome));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the write came back")
}

#[test]
fn a_commit_whose_answer_is_lost_is_found_written_and_counted_once() {
    let (db, proxy, mut store) = through_proxy(None);
    proxy.arm(Cut::AnswerLost, false);
    let outcome = store.append(&received("b"));
    assert_eq!(proxy.cuts(), 1, "the COMMIT's answer was cut");
    assert_eq!(
        outcome.unwrap(),
        AppendOutcome::Appended { seq: 7 },
        "the write landed; the store found it so"
    );
    // The next write builds on it (a stale head would be refused as another writer's).
    store.append(&received("c")).unwrap();
    assert_eq!(stored(&db, &["b", "c"]), (8, vec![true, true]));
}

#[test]
fn a_commit_that_never_reached_the_server_is_undone_and_written_again() {
    let (db, proxy, mut store) = through_proxy(None);
    proxy.arm(Cut::CommitLost, false);
    let refused = store.append(&received("b"));
    assert_eq!(proxy.cuts(), 1);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(store.head().0, 6, "undone in memory");
    assert!(store.job(&job("b")).unwrap().is_none());
    store.append(&received("b")).unwrap();
    assert_eq!(stored(&db, &["b"]), (7, vec![true]));
}

/// The answer is lost and the server then stops answering: the write cannot be checked at
/// once. The store says so and checks before its next write: it finds the write landed after
/// all, and from then on refuses to write (its memory lacks that write) until opened again.
#[test]
fn a_lost_answer_that_cannot_be_checked_at_once_is_checked_before_the_next_write() {
    let (db, proxy, store) = through_proxy(Some(2000));
    proxy.arm(Cut::AnswerLost, true);
    let (mut store, unknown) = comes_back(store, |s| s.append(&received("b")));
    let unknown = unknown.unwrap_err().to_string();
    assert!(unknown.contains("outcome is unknown"), "{unknown}");
    proxy.release();
    for _ in 0..2 {
        let refused = store.append(&received("c"));
        assert!(
            matches!(refused, Err(LedgerError::OutOfStep(_))),
            "{refused:?}"
        );
    }
    drop(store);
    assert_eq!(stored(&db, &["b", "c"]), (7, vec![true, false]));
}

/// Every byte held both ways, as by a frozen server or a network that drops everything without
/// a reset: the write comes back after the deadline instead of waiting for ever, and once the
/// server answers again the store checks (not written: the connection was gone before `COMMIT`)
/// and writes.
#[test]
fn a_server_that_stops_answering_mid_session_does_not_hold_a_write() {
    let (db, proxy, store) = through_proxy(Some(2000));
    proxy.hold();
    let (mut store, held) = comes_back(store, |s| s.append(&received("b")));
    assert!(held.is_err(), "{held:?}");
    assert_eq!(store.head().0, 6, "undone in memory");
    proxy.release();
    store.append(&received("b")).unwrap();
    store.append(&received("c")).unwrap();
    assert_eq!(proxy.cuts(), 0);
    assert_eq!(stored(&db, &["b", "c"]), (8, vec![true, true]));
}

/// `COMMIT` never reaches the server and the connection stays open towards it, as behind a
/// partition: the server's transaction holds the head row's lock, which a check of the unknown
/// outcome and every write wait for. The store's sessions let the server end a transaction idle
/// for twice the deadline, so the lock is let go within seconds (here 4 s) and the write lands.
/// Without that the server would hold it until its keepalive notices the client gone (hours):
/// this test then fails after 30 s of refused appends.
#[test]
fn a_transaction_cut_off_from_its_client_lets_go_of_the_head() {
    let (db, proxy, store) = through_proxy(Some(2000));
    proxy.arm(Cut::CommitHeld, false);
    let (mut store, cut_off) = comes_back(store, |s| s.append(&received("b")));
    assert_eq!(proxy.cuts(), 1);
    assert!(cut_off.is_err(), "{cut_off:?}");
    let started = std::time::Instant::now();
    let landed = loop {
        match store.append(&received("b")) {
            Ok(outcome) => break outcome,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "still refused: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(landed, AppendOutcome::Appended { seq: 7 });
    assert_eq!(stored(&db, &["b"]), (7, vec![true]));
}
