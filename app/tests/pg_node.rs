//! The node on a PostgreSQL ledger (issue 14, phase 2a): `[node] ledger = "postgres://…"` with a
//! `state_dir`, against a throwaway cluster the tests start themselves
//! (`paydvm_ledger_pg::throwaway`), a real relay on 127.0.0.1 and the fake Lightning backend.
//! One node per database: a second one is refused. The CLI reads the database too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::node::{NodeHandle, NodeOptions};
use paydvm_ledger::store::Store;
use paydvm_ledger::{Durability, JobId, JobState, LedgerStore, StoreOptions};
use paydvm_ledger_pg::cut_proxy::{Cut, CutProxy};
use paydvm_ledger_pg::throwaway::ThrowawayCluster;
use paydvm_ledger_pg::PgStore;
use paydvm_testkit::fixture::Fixture;

use crate::cli::{paydvm, stderr, stdout};
use crate::lightning::quoted_invoice;
use crate::node::{
    is_status, results_on_relay, test_node, wait_state, Customer, Setup, PAID_AND_DONE,
};

/// A password the throwaway cluster does not ask for (trust authentication): it must never
/// show in a message or a log line.
const PASSWORD: &str = "pg-s3cret-never-shown";

/// [`fresh_database`] from a test's runtime (the cluster's helpers block).
pub async fn fresh_database_async() -> String {
    tokio::task::spawn_blocking(fresh_database).await.unwrap()
}

/// A fresh database's URL, with [`PASSWORD`] in it.
fn fresh_database() -> String {
    let cluster = ThrowawayCluster::shared();
    let db = cluster.fresh_database().expect("a fresh database");
    cluster
        .url(&db)
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1)
}

/// The test node (one relay) with its ledger on `url` and its local files in `<dir>/state`.
async fn pg_setup(url: &str) -> Setup {
    let s = Setup::build(Fixture::builder(test_node("refund", "")).relays(1)).await;
    point_at(&s.config, url, Some("state"));
    s
}

/// Rewrites the config's `ledger` line: the database, and `state_dir` when given.
pub fn point_at(config: &Path, url: &str, state_dir: Option<&str>) {
    paydvm_testkit::fixture::on_database(config, config, url, state_dir).unwrap();
}

fn with_backend(ln: &FakeLightning) -> NodeOptions {
    NodeOptions {
        lightning: Some(Arc::new(ln.clone())),
        ..NodeOptions::default()
    }
}

/// The ledger read-only, as the CLI opens it.
fn pg_store(url: &str) -> PgStore {
    let options = StoreOptions::everything(Durability::Normal).read_only();
    PgStore::open(url, &options).expect("the database opens")
}

/// Waits until the ledger's head at `url` stays put for a second (a started node's own writes,
/// such as its announcements' outbox entries, are done).
async fn wait_until_idle(url: &str) {
    let mut last = None;
    for _ in 0..60 {
        let url = url.to_owned();
        let head = tokio::task::spawn_blocking(move || pg_store(&url).head().0)
            .await
            .unwrap();
        if last == Some(head) {
            return;
        }
        last = Some(head);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the node kept writing for a minute after it started");
}

/// A job's trail by event type, without the outbox bookkeeping.
fn steps(store: &impl LedgerStore, job: &str) -> Vec<&'static str> {
    store
        .audit(job)
        .unwrap()
        .expect("the job has a trail")
        .events
        .iter()
        .map(|e| e.event.type_name())
        .filter(|t| !t.starts_with("effect_"))
        .collect()
}

/// How many events the ledger holds about `job`, bookkeeping included.
fn trail_len(store: &impl LedgerStore, job: &str) -> usize {
    store.audit(job).unwrap().map_or(0, |t| t.events.len())
}

/// The effects (replies to publish) of `jobs`, and how many of them are delivered. An effect
/// without an outcome is what a start sends again.
fn effects(store: &impl LedgerStore, jobs: &[&str]) -> (usize, usize) {
    let of_jobs: Vec<_> = store
        .state()
        .effects()
        .filter(|e| e.job.as_ref().is_some_and(|j| jobs.contains(&j.as_str())))
        .collect();
    let delivered = of_jobs.iter().filter(|e| e.outcome.is_some()).count();
    (of_jobs.len(), delivered)
}

/// A free job and a paid one (invoice settled), each to its result.
async fn free_and_paid(node: &NodeHandle, s: &Setup, ln: &FakeLightning) -> (Event, Event) {
    let mut customer = Customer::connect(&s.urls).await;
    let free = customer.request(5001, "free", &[]);
    customer.client.send_event(&free).await.unwrap();
    let result = customer
        .wait_for(free.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "1 words");
    let paid = customer.request(5050, "paid", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&paid).await.unwrap();
    let quote = customer
        .wait_for(paid.id, is_status("payment-required"))
        .await;
    let invoice = quoted_invoice(&quote, &paid.id.to_hex());
    ln.settle(&invoice.payment_hash()).unwrap();
    let result = customer
        .wait_for(paid.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "PAID");
    wait_state(node, &free.id.to_hex(), JobState::Succeeded).await;
    wait_state(node, &paid.id.to_hex(), JobState::Succeeded).await;
    customer.client.shutdown().await;
    (free, paid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_runs_free_and_paid_jobs_and_keeps_them_across_a_restart() {
    let url = fresh_database_async().await;
    let s = pg_setup(&url).await;
    let ln = FakeLightning::new();
    let node = s.start_with(with_backend(&ln)).await;
    let (free, paid) = free_and_paid(&node, &s, &ln).await;
    node.shutdown().await;
    // The local files went to state_dir; no ledger file was made.
    let state = s.dir().join("state");
    assert!(state.join("paydvm.lock").is_file());
    assert!(!s.dir().join("paydvm.db").exists());

    let (free_id, paid_id) = (free.id.to_hex(), paid.id.to_hex());
    let (free_len, paid_len) = {
        let store = pg_store(&url);
        assert_eq!(steps(&store, &paid_id), PAID_AND_DONE);
        for job in [&free_id, &paid_id] {
            let record = store.job(&JobId::new(job.as_str()).unwrap()).unwrap();
            let record = record.expect("the job is in the database");
            assert_eq!(record.state, JobState::Succeeded);
            assert_eq!(record.attempts, 1);
        }
        let (effects, delivered) = effects(&store, &[&free_id, &paid_id]);
        assert!(effects >= 4, "feedback and results: {effects}");
        assert_eq!(
            delivered, effects,
            "every reply delivered before the restart"
        );
        (trail_len(&store, &free_id), trail_len(&store, &paid_id))
    };
    let effects_before = effects(&pg_store(&url), &[&free_id, &paid_id]);

    // Restarted on the same database: the relay shows it both requests again, nothing is
    // redone and no effect goes out again.
    let node = s.start_with(with_backend(&ln)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.job(&paid_id).await.map(|j| j.state),
        Some(JobState::Succeeded)
    );
    node.shutdown().await;
    let store = pg_store(&url);
    assert_eq!(trail_len(&store, &free_id), free_len, "free job untouched");
    assert_eq!(trail_len(&store, &paid_id), paid_len, "paid job untouched");
    assert_eq!(
        effects(&store, &[&free_id, &paid_id]),
        effects_before,
        "no reply requested again"
    );
    assert_eq!(results_on_relay(&s, 6001, free.id).await, 1);
    assert_eq!(results_on_relay(&s, 6050, paid.id).await, 1);

    let out = paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ledger OK"), "{}", stdout(&out));
    let out = paydvm(&["ledger", "status", &url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["jobs_by_state"]["succeeded"], 2);
    assert_eq!(status["events"], store.head().0);
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!shown.contains(PASSWORD));
}

/// `paydvm ledger backup <url> <file>` while the node runs on PostgreSQL: a new SQLite file with
/// the database's history up to its head, whose chain ends at the database's hash for that seq;
/// never over an existing file, and no password shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_on_postgres_is_backed_up_to_a_file_that_verifies() {
    let url = fresh_database_async().await;
    let s = pg_setup(&url).await;
    let ln = FakeLightning::new();
    let node = s.start_with(with_backend(&ln)).await;
    let (_, paid) = free_and_paid(&node, &s, &ln).await;
    let copy = s.dir().join("backup.db");
    let copy_arg = copy.to_str().unwrap();

    let out = paydvm(&["ledger", "backup", &url, copy_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("backup "), "{}", stdout(&out));
    let again = paydvm(&["ledger", "backup", &url, copy_arg]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    node.shutdown().await;
    for out in [&out, &again] {
        let shown = format!("{}{}", stdout(out), stderr(out));
        assert!(!shown.contains(PASSWORD), "{shown}");
    }

    let backup = Store::open_read_only(&copy).unwrap();
    backup.verify().unwrap();
    assert_eq!(steps(&backup, &paid.id.to_hex()), PAID_AND_DONE);
    let (seq, head) = backup.head();
    let database = pg_store(&url);
    assert!(seq > 0 && seq <= database.head().0);
    let same = database
        .event(seq)
        .unwrap()
        .expect("the database has the copy's head");
    assert_eq!(same.hash, head, "the copy's chain is the database's");
    let out = paydvm(&["ledger", "verify", copy_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_database_is_refused() {
    let url = fresh_database_async().await;
    let first = pg_setup(&url).await;
    let node = first.start().await;
    // Another node directory (its own key, state_dir and relay), the same database.
    let second = pg_setup(&url).await;
    let refused = Fixture::start(&second)
        .await
        .err()
        .expect("the second node is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("another paydvm node holds this ledger") && message.contains("--standby"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    node.shutdown().await;
    // Once the first has stopped, the lock is free again.
    let node = second.start().await;
    node.shutdown().await;
}

/// `paydvm <args>`: exit 0 and stdout, or the test fails with what it printed.
fn ok(args: &[&str]) -> String {
    let out = paydvm(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "paydvm {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn ledger_copy_from_a_file_to_postgres_and_back_keeps_every_trail() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.db");
    let back = dir.path().join("b.db");
    let (file_arg, back_arg) = (path_arg(&file), path_arg(&back));
    ok(&["ledger", "sample", &file_arg, "--jobs", "12"]);
    let url = fresh_database();
    let copied = ok(&["ledger", "copy", &file_arg, &url]);
    assert!(copied.contains("both ends verify"), "{copied}");
    assert!(!copied.contains(PASSWORD), "{copied}");
    ok(&["ledger", "verify", &url]);
    ok(&["ledger", "copy", &url, &back_arg]);
    ok(&["ledger", "verify", &back_arg]);

    let jobs: Vec<String> = Store::open_read_only(&file)
        .unwrap()
        .state()
        .jobs()
        .map(|j| j.job.to_string())
        .collect();
    assert!(jobs.len() >= 12, "{jobs:?}");
    for job in [&jobs[0], &jobs[jobs.len() - 1]] {
        let at_file = ok(&["ledger", "audit", &file_arg, job, "--json"]);
        assert_eq!(ok(&["ledger", "audit", &url, job, "--json"]), at_file);
        assert_eq!(ok(&["ledger", "audit", &back_arg, job, "--json"]), at_file);
    }
    assert_eq!(
        ok(&["ledger", "export", &url]),
        ok(&["ledger", "export", &file_arg])
    );
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_ledger_without_state_dir_is_a_clear_error() {
    let url = fresh_database_async().await;
    let s = Setup::build(Fixture::builder(test_node("refund", "")).relays(1)).await;
    point_at(&s.config, &url, None);
    let config: PathBuf = s.config.clone();
    let out = paydvm(&["run", "--config", config.to_str().unwrap()]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("node.state_dir")
            && text.contains("is required when node.ledger is a postgres:// URL"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

/// A proxy in front of the shared cluster (its helpers block, so started off the runtime), and
/// `url` through it with each call bounded by `deadline_ms`.
pub(crate) async fn through_proxy(url: &str, deadline_ms: u32) -> (CutProxy, String) {
    let port = tokio::task::spawn_blocking(|| ThrowawayCluster::shared().port())
        .await
        .unwrap();
    let proxy = tokio::task::spawn_blocking(move || CutProxy::start(port))
        .await
        .unwrap()
        .unwrap();
    let through = format!("{}?deadline_ms={deadline_ms}", proxy.url(url, port));
    (proxy, through)
}

/// The answer to a write's `COMMIT` is lost while the node runs (the connection breaks after the
/// server got it): the store finds the write in the database and the node carries on as
/// written. Without that check the node's memory would be one batch behind the database, every
/// later write refused as another writer's (the head moved), and the node stuck until restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_answer_lost_mid_run_is_found_written_and_the_node_serves_on() {
    let url = fresh_database_async().await;
    let (proxy, through) = through_proxy(&url, 10_000).await;
    let s = pg_setup(&through).await;
    let ln = FakeLightning::new();
    let node = s.start_with(with_backend(&ln)).await;
    proxy.arm(Cut::AnswerLost, false);
    let (free, paid) = free_and_paid(&node, &s, &ln).await;
    assert_eq!(proxy.cuts(), 1, "a COMMIT's answer was lost");
    assert_eq!(node.ledger_fault(), None);
    node.shutdown().await;
    let store = pg_store(&url);
    assert_eq!(steps(&store, &paid.id.to_hex()), PAID_AND_DONE);
    for job in [free.id, paid.id] {
        let record = store.job(&JobId::new(job.to_hex()).unwrap()).unwrap();
        assert_eq!(
            record.map(|r| (r.state, r.attempts)),
            Some((JobState::Succeeded, 1))
        );
    }
    assert_eq!(results_on_relay(&s, 6001, free.id).await, 1);
    assert_eq!(results_on_relay(&s, 6050, paid.id).await, 1);
    let out = paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The answer to a write's `COMMIT` is lost and the server then stops answering for a while: the
/// write cannot be checked at once, so the node is faulted (its work parked); when the server
/// answers again the store finds the write landed after all. Its memory lacks that write, so the
/// node is told to stop at once (`NodeHandle::must_stop`; `paydvm run` exits 1), and a restart
/// ends the job from the ledger: once, with one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_found_written_later_stops_the_node_and_a_restart_ends_the_job_once() {
    let url = fresh_database_async().await;
    // Below the lock's 5 s probe: holding the traffic past the deadline must not lose the lock.
    let (proxy, through) = through_proxy(&url, 2_000).await;
    let s = pg_setup(&through).await;
    let node = s.start().await;
    // The cut is for the job's first write, not for one the node makes as it starts.
    wait_until_idle(&url).await;
    proxy.arm(Cut::AnswerLost, true);
    let mut customer = Customer::connect(&s.urls).await;
    let free = customer.request(5001, "lost answer", &[]);
    customer.client.send_event(&free).await.unwrap();
    let waited = tokio::time::Instant::now();
    while node.ledger_fault().is_none() {
        assert!(waited.elapsed() < Duration::from_secs(30), "never faulted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.release();
    assert_eq!(proxy.cuts(), 1);
    let reason = tokio::time::timeout(Duration::from_secs(60), node.must_stop())
        .await
        .expect("the node is told to stop");
    assert!(
        reason.contains("no longer matches its database"),
        "{reason}"
    );
    node.shutdown().await;
    {
        let store = pg_store(&url);
        let record = store.job(&JobId::new(free.id.to_hex()).unwrap()).unwrap();
        assert!(record.is_some(), "the write whose answer was lost is there");
        store.verify().unwrap();
    }
    // Started again straight on the database (the proxy stays out of the way from here on).
    let config = std::fs::read_to_string(&s.config).unwrap();
    assert!(config.contains(&through));
    std::fs::write(&s.config, config.replace(&through, &url)).unwrap();
    let node = s.start().await;
    let result = customer
        .wait_for(free.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "2 words");
    wait_state(&node, &free.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;
    customer.client.shutdown().await;
    assert_eq!(results_on_relay(&s, 6001, free.id).await, 1);
    let out = paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
