//! The pipelined group commit through a real relay: the node commits a batch and decides the next
//! while the WAL is synced on a thread of its own, and nothing a batch releases (feedback,
//! results, executors) goes out before that batch's sync. A sync that fails stops the node with
//! nothing of the unsynced batches sent; a restart finishes the work from the ledger, once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::node::NodeOptions;
use paydvm_ledger::store::wal_sync::BeforeSync;
use paydvm_ledger::JobState;

use crate::node::{is_status, results_on_relay, setup, wait_state, Customer, Setup};

/// The event types committed for `job`, read from the file by a connection of our own (what
/// other processes see: committed, whether synced or not).
fn committed_types(ledger: &Path, job: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT type FROM events WHERE job = ?1 ORDER BY seq")
        .unwrap();
    let types = stmt
        .query_map([job], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    types
}

/// The event types committed for `job` once its `processing_started` is committed, if that
/// happens within `within`.
async fn started_within(ledger: &Path, job: &str, within: Duration) -> Option<Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let types = committed_types(ledger, job);
        if types.iter().any(|t| t == "processing_started") {
            return Some(types);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sync hook that waits while `hold` is set.
fn holding(hold: &Arc<AtomicBool>) -> BeforeSync {
    let hold = Arc::clone(hold);
    Arc::new(move || {
        while hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })
}

/// A sync hook that fails while `fail` is set.
fn failing(fail: &Arc<AtomicBool>) -> BeforeSync {
    let fail = Arc::clone(fail);
    Arc::new(move || match fail.load(Ordering::SeqCst) {
        true => Err(std::io::Error::other("injected fsync failure")),
        false => Ok(()),
    })
}

/// A node whose WAL syncs run `hook` first, started and settled: whatever the start and the
/// first relay connection wrote is synced (a job read back is answered only once everything
/// before it is on disk). Then `arm` is set (the hook holds or fails from then on) and a customer
/// sends a free request.
async fn start_then_request(
    s: &Setup,
    hook: BeforeSync,
    arm: &AtomicBool,
    text: &str,
) -> (paydvm::node::NodeHandle, Customer, Event) {
    let node = s
        .start_with(NodeOptions {
            before_wal_sync: Some(hook),
            ..NodeOptions::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node.job(&"0".repeat(64)).await.is_none());
    arm.store(true, Ordering::SeqCst);
    let customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, text, &[]);
    customer.client.send_event(&request).await.unwrap();
    (node, customer, request)
}

/// The three-word request gets its one result, the job succeeds, and the ledger verifies.
async fn ends_once(
    s: &Setup,
    node: paydvm::node::NodeHandle,
    mut customer: Customer,
    request: &Event,
) {
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "3 words");
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;
    customer.client.shutdown().await;
    assert_eq!(results_on_relay(s, 6001, request.id).await, 1);
    s.store().verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_batch_releases_goes_out_before_its_wal_sync() {
    let s = setup(1, "refund").await;
    let hold = Arc::new(AtomicBool::new(false));
    let (node, mut customer, request) =
        start_then_request(&s, holding(&hold), &hold, "held until synced").await;
    let job = request.id.to_hex();
    // Committed (the core decided the job and went on) but not synced: nothing went out.
    let committed = started_within(&s.ledger(), &job, Duration::from_secs(30))
        .await
        .expect("processing_started never committed");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !committed_types(&s.ledger(), &job).contains(&"result_published".to_string()),
        "the executor ran before the sync: {committed:?}"
    );
    assert_eq!(results_on_relay(&s, 7000, request.id).await, 0, "feedback");
    assert_eq!(results_on_relay(&s, 6001, request.id).await, 0, "result");

    hold.store(false, Ordering::SeqCst);
    customer.wait_for(request.id, is_status("processing")).await;
    ends_once(&s, node, customer, &request).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_stops_the_node_unsent_and_a_restart_ends_the_job_once() {
    let s = setup(1, "refund").await;
    let fail = Arc::new(AtomicBool::new(false));
    let (node, customer, request) =
        start_then_request(&s, failing(&fail), &fail, "sync fails here").await;
    let reason = tokio::time::timeout(Duration::from_secs(30), node.must_stop())
        .await
        .expect("the node is told to stop");
    assert!(reason.contains("injected fsync failure"), "{reason}");
    let job = request.id.to_hex();
    let committed = committed_types(&s.ledger(), &job);
    assert!(
        committed.contains(&"processing_started".to_string()),
        "the job was committed before its sync failed: {committed:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(results_on_relay(&s, 7000, request.id).await, 0, "feedback");
    assert_eq!(results_on_relay(&s, 6001, request.id).await, 0, "result");
    node.shutdown().await;

    // A start reads the ledger afresh: the job interrupted before its executor ran ends once.
    let node = s.start().await;
    ends_once(&s, node, customer, &request).await;
}

/// A disk that stalls: once `MAX_HELD` (16) written batches wait for their sync, the core takes
/// no more work until the disk answers; then everything ends, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sync_stops_the_core_taking_work_after_sixteen_batches() {
    let s = setup(1, "refund").await;
    let hold = Arc::new(AtomicBool::new(false));
    let (node, mut customer, first) =
        start_then_request(&s, holding(&hold), &hold, "batch number zero").await;
    let mut requests = vec![first];
    let mut committed = 0;
    // One request per batch: the next is sent once the previous is committed. Five seconds is
    // far more than a loaded machine needs; a core that stopped taking work never commits it.
    for n in 0..24 {
        let job = requests[n].id.to_hex();
        if started_within(&s.ledger(), &job, Duration::from_secs(5))
            .await
            .is_none()
        {
            break;
        }
        committed += 1;
        let request = customer.request(5001, &format!("batch number {}", n + 1), &[]);
        customer.client.send_event(&request).await.unwrap();
        requests.push(request);
    }
    assert!(
        (1..=16).contains(&committed),
        "{committed} requests committed while every sync was held"
    );

    hold.store(false, Ordering::SeqCst);
    for request in &requests {
        let result = customer
            .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
            .await;
        assert_eq!(result.content, "3 words");
    }
    node.shutdown().await;
    customer.client.shutdown().await;
    for request in &requests {
        assert_eq!(results_on_relay(&s, 6001, request.id).await, 1);
    }
    s.store().verify().unwrap();
}
