//! Crash safety of the store: a writer process killed with SIGKILL in the middle of its batches,
//! and a write that fails inside a transaction. Afterwards the file reopens, verifies, and holds
//! only whole groups.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::*;

const CHILD_ENV: &str = "PAYDVM_CRASH_CHILD_DB";
/// Set for the child in odd rounds: it checkpoints, and syncs its WAL behind its commits, on
/// threads of their own (as the node does), so some kills land in the middle of a background
/// checkpoint or sync.
const CHECKPOINT_ENV: &str = "PAYDVM_CRASH_CHILD_CHECKPOINTS";
const EVENTS_PER_JOB: usize = 6;
const JOBS_PER_BATCH: usize = 200;

fn job_events(n: usize) -> Vec<LedgerEvent> {
    let j = JobId::new(format!("job{n}")).unwrap();
    let k = |s: &str| IdemKey::new(format!("{s}:{n}")).unwrap();
    let at = UnixMs(n as u64);
    vec![
        LedgerEvent::new(
            k("recv"),
            at,
            EventBody::JobReceived {
                job: j.clone(),
                request_event: EventId::new(format!("req{n}")).unwrap(),
                customer: Pubkey::new("cust").unwrap(),
                kind: 5050,
                request: None,
            },
        ),
        LedgerEvent::new(
            k("quote"),
            at,
            EventBody::QuoteIssued {
                job: j.clone(),
                amount: Msat::from_msat(7_000),
                expires_at: UnixMs(u64::MAX),
                options: vec![],
            },
        ),
        LedgerEvent::new(
            k("pay"),
            at,
            EventBody::PaymentReceived(Payment {
                rail: Rail::Invoice,
                asset: Asset::Lightning,
                reference: PaymentRef::new(format!("hash{n}")).unwrap(),
                linked: vec![],
                amount: Msat::from_msat(7_000),
                fee: Msat::ZERO,
                evidence: None,
                payer: None,
                target: PaymentTarget::Job {
                    job: j.clone(),
                    booking: JobPayment::Apply { excess: None },
                },
            }),
        ),
        LedgerEvent::new(
            k("queue"),
            at,
            EventBody::JobQueued {
                job: j.clone(),
                reason: QueueReason::Paid,
            },
        ),
        LedgerEvent::new(
            k("start"),
            at,
            EventBody::ProcessingStarted {
                job: j.clone(),
                attempt: 1,
            },
        ),
        LedgerEvent::new(
            k("result"),
            at,
            EventBody::ResultPublished {
                job: j,
                result_event: EventId::new(format!("res{n}")).unwrap(),
            },
        ),
    ]
}

/// The child: append whole-job groups, many per transaction, until killed.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Only runs when the crash test starts this binary as a child.
    };
    let mut store = Store::open(&path, Durability::Normal).expect("child opens the ledger");
    if std::env::var_os(CHECKPOINT_ENV).is_some() {
        store
            .checkpoint_in_background(Box::new(|| true))
            .expect("checkpoint thread");
        store
            .sync_in_background(Box::new(|| {}), None)
            .expect("sync thread");
    }
    let marker = in_batch_marker(Path::new(&path));
    let mut next = store.state().jobs().count();
    loop {
        let groups: Vec<Vec<LedgerEvent>> = (next..next + JOBS_PER_BATCH).map(job_events).collect();
        let refs: Vec<&[LedgerEvent]> = groups.iter().map(|g| g.as_slice()).collect();
        std::fs::write(&marker, b"").expect("marker");
        for r in store.append_batch(&refs).expect("batch written") {
            r.expect("group accepted");
        }
        store.request_sync();
        std::fs::remove_file(&marker).expect("marker");
        next += JOBS_PER_BATCH;
    }
}

/// Present while the child is inside `append_batch`.
fn in_batch_marker(db: &Path) -> std::path::PathBuf {
    db.with_extension("in-batch")
}

fn assert_whole(path: &Path) -> usize {
    let store = Store::open(path, Durability::Normal).expect("reopens after the crash");
    store.verify().expect("verifies after the crash");
    let state = store.state();
    for job in state.jobs() {
        assert_eq!(
            job.state,
            JobState::Succeeded,
            "half-applied group: {job:?}"
        );
    }
    let jobs = state.jobs().count();
    assert_eq!(store.head().0 as usize, jobs * EVENTS_PER_JOB);
    assert_eq!(jobs % JOBS_PER_BATCH, 0, "a batch was partly committed");
    jobs
}

#[test]
fn writer_killed_mid_batch_leaves_only_whole_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut last = 0;
    let mut killed_mid_batch = 0;
    for round in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args(["crash::crash_child_writer", "--exact", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env_remove(CHECKPOINT_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if round % 2 == 1 {
            child.env(CHECKPOINT_ENV, "1");
        }
        let mut child = child.spawn().unwrap();
        // Wait until the child has committed something beyond the previous round, then kill it
        // at a moment that varies by round, almost always inside a transaction.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let committed = committed_events(&path);
            if committed > last * EVENTS_PER_JOB || Instant::now() > deadline {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(7 * round + 3));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let marker = in_batch_marker(&path);
        if marker.exists() {
            killed_mid_batch += 1;
            std::fs::remove_file(&marker).unwrap();
        }
        let jobs = assert_whole(&path);
        assert!(jobs > last, "round {round}: the child made no progress");
        last = jobs;
    }
    assert!(
        killed_mid_batch > 0,
        "no kill landed inside a batch; the test proved nothing"
    );
}

fn committed_events(path: &Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .unwrap_or(0)
}

#[test]
fn write_failing_mid_transaction_rolls_back_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fail.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&job_events(0)).unwrap();
    // Sabotage: the disk refuses one specific row, as a full disk or I/O error would, after the
    // first rows of the transaction were already written.
    store
        .connection()
        .execute_batch(
            "CREATE TRIGGER sabotage BEFORE INSERT ON events WHEN NEW.idem_key = 'start:1' \
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    let before = store.state().clone();
    let err = store.append_group(&job_events(1)).unwrap_err();
    assert!(err.to_string().contains("disk says no"), "{err}");
    assert_eq!(store.state(), &before, "memory rolled back");
    assert_eq!(store.head().0, 6);
    store
        .connection()
        .execute_batch("DROP TRIGGER sabotage")
        .unwrap();
    // The same group goes through afterwards, with the same sequence numbers.
    let outcomes = store.append_group(&job_events(1)).unwrap();
    assert_eq!(outcomes[0], AppendOutcome::Appended { seq: 7 });
    store.verify().unwrap();
    let live = store.state().clone();
    store.close().unwrap();
    let reopened = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(reopened.state(), &live);
}

#[test]
fn staged_groups_are_seen_at_once_and_written_only_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&job_events(0)).unwrap();
    let first = store.stage(&job_events(1)).unwrap();
    assert_eq!(first[0], AppendOutcome::Appended { seq: 7 });
    // A later decision sees the staged group; its replay is a duplicate, not a second job.
    assert!(store.state().job(&JobId::new("job1").unwrap()).is_some());
    assert_eq!(
        store.stage(&job_events(1)).unwrap()[0],
        AppendOutcome::Duplicate { seq: 7 }
    );
    // A refused group changes nothing and leaves the others staged.
    assert!(store.stage(&job_events(3)[1..2]).is_err());
    store.stage(&job_events(2)).unwrap();
    assert_eq!(store.staged_groups(), 2);
    assert_eq!(store.head().0, 6, "the head is what is on disk");
    assert_eq!(committed_events(&path), 6);

    assert_eq!(store.flush().unwrap(), 2);
    assert_eq!(store.head().0, 18);
    assert_eq!(committed_events(&path), 18);
    assert_eq!(store.flush().unwrap(), 0);
    store.verify().unwrap();
    let live = store.state().clone();
    store.close().unwrap();
    assert_eq!(
        Store::open(&path, Durability::Normal).unwrap().state(),
        &live
    );
}

#[test]
fn an_append_after_staging_writes_the_staged_groups_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.stage(&job_events(0)).unwrap();
    let outcomes = store.append_group(&job_events(1)).unwrap();
    assert_eq!(outcomes[0], AppendOutcome::Appended { seq: 7 });
    assert_eq!(store.staged_groups(), 0);
    assert_eq!(committed_events(&path), 12);
    store.verify().unwrap();
}

#[test]
fn a_failed_flush_undoes_every_staged_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flushfail.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&job_events(0)).unwrap();
    let before = store.state().clone();
    store
        .connection()
        .execute_batch(
            "CREATE TRIGGER sabotage BEFORE INSERT ON events WHEN NEW.idem_key = 'start:2' \
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    store.stage(&job_events(1)).unwrap();
    store.stage(&job_events(2)).unwrap();
    let err = store.flush().unwrap_err();
    assert!(err.to_string().contains("disk says no"), "{err}");
    assert_eq!(store.state(), &before, "memory rolled back");
    assert_eq!(store.staged_groups(), 0);
    assert_eq!(store.head().0, 6);
    assert_eq!(committed_events(&path), 6);
    store
        .connection()
        .execute_batch("DROP TRIGGER sabotage")
        .unwrap();
    store.stage(&job_events(1)).unwrap();
    assert_eq!(store.flush().unwrap(), 1);
    store.verify().unwrap();
}

#[test]
fn a_ledger_deleted_while_open_is_put_back_whole_by_backup_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.db");
    let mut store = Store::open(&path, Durability::Full).unwrap();
    for n in 0..3 {
        store.append_group(&job_events(n)).unwrap();
    }
    // Deleted with its WAL and index: the open connection still reads them.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    store.append_group(&job_events(3)).unwrap();
    let live = store.state().clone();
    let head = store.head();
    store.backup_to(&path).unwrap();
    // The copy is not overwritten by a second backup.
    assert!(store.backup_to(&path).is_err());
    store.close().unwrap();

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let reopened = Store::open(&path, Durability::Full).unwrap();
    reopened.verify().unwrap();
    assert_eq!(reopened.head(), head);
    assert_eq!(reopened.state(), &live);
}

#[test]
fn discarded_staged_groups_leave_memory_and_disk_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("discard.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&job_events(0)).unwrap();
    let before = store.state().clone();
    store.stage(&job_events(1)).unwrap();
    store.stage(&job_events(2)).unwrap();
    assert_eq!(store.discard_staged(), 2);
    assert_eq!(store.state(), &before);
    assert_eq!(store.flush().unwrap(), 0);
    assert_eq!(committed_events(&path), 6);
    // The same groups can be staged and written afterwards, with the same sequence numbers.
    store.stage(&job_events(1)).unwrap();
    assert_eq!(store.flush().unwrap(), 1);
    assert_eq!(store.head().0, 12);
    store.verify().unwrap();
}
