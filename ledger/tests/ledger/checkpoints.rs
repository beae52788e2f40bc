//! The WAL checkpointed by a thread of its own (`store::checkpointer`): commits no longer copy
//! the WAL into the database file themselves, the thread does, only when it may touch the file;
//! closing or dropping the store leaves the ledger whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paydvm_ledger::conformance::paid_job;
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::LedgerEvent;

/// SQLite's own threshold: without the thread a commit checkpoints once the WAL has this many
/// pages, and the WAL starts again from its beginning.
const SQLITE_DEFAULT_PAGES: u64 = 1_000;

/// The WAL file SQLite keeps beside `db`.
fn wal_of(db: &Path) -> PathBuf {
    db.with_file_name(format!("{}-wal", db.file_name().unwrap().to_string_lossy()))
}

/// Frames in the WAL file (32-byte header, then a 24-byte header and one page per frame). The
/// file only shrinks when the last connection closes, so this is the most it has held.
fn wal_frames(db: &Path) -> u64 {
    let len = std::fs::metadata(wal_of(db)).map(|m| m.len()).unwrap_or(0);
    len.saturating_sub(32) / (4096 + 24)
}

/// Appends ten jobs from `*next` in one transaction.
fn write_ten(store: &mut Store, next: &mut usize) {
    let groups: Vec<Vec<LedgerEvent>> = (*next..*next + 10)
        .map(|i| paid_job(&format!("job{i}")))
        .collect();
    let refs: Vec<&[LedgerEvent]> = groups.iter().map(Vec::as_slice).collect();
    for r in store.append_batch(&refs).unwrap() {
        r.unwrap();
    }
    *next += 10;
}

/// Appends jobs ten per transaction until the WAL holds more than `frames`.
fn write_until(store: &mut Store, db: &Path, next: &mut usize, frames: u64) {
    while wal_frames(db) <= frames {
        write_ten(store, next);
        assert!(*next < 20_000, "the WAL never grew past {frames} frames");
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn commits_leave_checkpoints_to_the_thread_which_copies_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let mut store = Store::open(&db, Durability::Normal).unwrap();
    let allowed = Arc::new(AtomicBool::new(false));
    let gate = Arc::clone(&allowed);
    store
        .checkpoint_in_background(Box::new(move || gate.load(Ordering::SeqCst)))
        .unwrap();

    // Held off: no commit checkpoints at SQLite's threshold, so the WAL grows past it untouched.
    let mut next = 0;
    write_until(&mut store, &db, &mut next, 3 * SQLITE_DEFAULT_PAGES);
    wait_for("the thread to be held off", || {
        store.checkpoint_stats().unwrap().held_off > 0
    });
    let held = store.checkpoint_stats().unwrap();
    assert_eq!((held.checkpoints, held.pages), (0, 0), "{held:?}");

    // Allowed: the thread copies the whole WAL.
    let frames = wal_frames(&db);
    allowed.store(true, Ordering::SeqCst);
    wait_for("the thread to copy the WAL", || {
        store.checkpoint_stats().unwrap().pages >= frames
    });
    let stats = store.checkpoint_stats().unwrap();
    assert_eq!((stats.failures, stats.last_failure), (0, None));

    // Everything was copied, so the next commit starts the WAL again from its beginning: a few
    // more transactions do not make the file longer.
    for _ in 0..20 {
        write_ten(&mut store, &mut next);
    }
    assert!(wal_frames(&db) <= frames, "the WAL was not restarted");
    store.verify().unwrap();
    assert_eq!(store.state().jobs().count(), next);
}

#[test]
fn after_closing_or_dropping_the_store_the_wal_is_gone_and_the_ledger_whole() {
    let dir = tempfile::tempdir().unwrap();
    for close in [true, false] {
        let db = dir.path().join(format!("ledger-{close}.db"));
        let mut store = Store::open(&db, Durability::Full).unwrap();
        store.checkpoint_in_background(Box::new(|| true)).unwrap();
        store.append_group(&paid_job("one")).unwrap();
        let wal = wal_of(&db);
        assert!(wal.exists());
        if close {
            store.close().unwrap();
        } else {
            drop(store);
        }
        // Both connections closed: the last one checkpointed and removed the WAL.
        assert!(!wal.exists(), "close={close}: the WAL is still there");
        let store = Store::open(&db, Durability::Normal).unwrap();
        assert_eq!(store.state().jobs().count(), 1);
    }
}

/// The WAL synced behind the commits (`store::wal_sync`), beside the checkpoint thread: commits
/// no longer sync (`synchronous = NORMAL`), each ticket is reached by the sync thread, a sync
/// now covers everything committed, and the file reopens whole.
#[test]
fn commits_leave_the_wal_sync_to_the_thread_and_each_ticket_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let mut store = Store::open(&db, Durability::Full).unwrap();
    let synchronous = |s: &Store| -> i64 {
        s.connection()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(synchronous(&store), 2, "FULL before");
    assert!(
        store.request_sync().is_none(),
        "no tickets without the thread"
    );
    let wakes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let woken = Arc::clone(&wakes);
    store
        .sync_in_background(
            Box::new(move || {
                woken.fetch_add(1, Ordering::SeqCst);
            }),
            None,
        )
        .unwrap();
    store.checkpoint_in_background(Box::new(|| true)).unwrap();
    assert_eq!(synchronous(&store), 1, "NORMAL: the thread syncs");

    let mut next = 0;
    let mut ticket = 0;
    for _ in 0..50 {
        write_ten(&mut store, &mut next);
        ticket = store.request_sync().unwrap();
    }
    assert_eq!(ticket, 50);
    wait_for("the last ticket", || {
        store.synced().unwrap().unwrap() >= ticket
    });
    assert!(wakes.load(Ordering::SeqCst) > 0, "told after a sync");
    write_ten(&mut store, &mut next);
    store.sync_now().unwrap();
    let live = store.state().clone();
    store.close().unwrap();
    let reopened = Store::open(&db, Durability::Full).unwrap();
    assert_eq!(reopened.state(), &live);
    reopened.verify().unwrap();
}
