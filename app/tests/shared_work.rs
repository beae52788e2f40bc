//! Shared execution (issue 14): an offer with `execute_on = "any_node"` is run by every node on
//! the PostgreSQL ledger's database, the serving one and its standbys, each attempt claimed
//! with a lease. Two `paydvm run --standby` processes, one database, one relay. The standby is
//! killed with SIGKILL while it runs attempts: they go to the serving node once their leases
//! pass. The serving node is killed while both run attempts: its successor resumes every attempt
//! as it was. A node stopped cleanly hands its attempts back for the other to run at once. Every
//! way every job succeeds in its first attempt, with one result on the relay, and nothing stays
//! in the work table.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm_ledger::{JobId, JobState, LedgerStore};
use paydvm_ledger_pg::throwaway::ThrowawayCluster;
use paydvm_testkit::fixture::{NodeDir, Offer};

use crate::cli::{paydvm, stderr, stdout};
use crate::crash_node::{logs, RunningNode};
use crate::node::{start_relay, Customer};
use crate::pg_node::fresh_database_async;
use crate::standby_nodes::{ended_jobs, read, serving};
use paydvm::node::local_relay::EmbeddedRelay;

const JOBS: usize = 24;
/// Each job sleeps this long, longer than a lease: a runner must renew it to keep its attempt.
/// The standby is killed with attempts half run.
const JOB_MS: u64 = 2_500;
const LEASE_SECS: u64 = 2;
/// The longest lease there is: an attempt that waits for it never ends within the test.
const LONGEST_LEASE_SECS: u64 = 600;

/// One fresh database, one relay, and the node's config for two nodes on them.
struct Place {
    url: String,
    tmp: tempfile::TempDir,
    _relay: EmbeddedRelay,
    relay_url: RelayUrl,
    configs: Vec<std::path::PathBuf>,
}

impl Place {
    /// Run 1 serving, run 2 standing by; leases of `lease_secs`.
    async fn with_two_nodes(lease_secs: u64) -> (Place, RunningNode, RunningNode) {
        let (place, first) = Place::with_serving_node(lease_secs).await;
        let standby = RunningNode::start_with_args(&place.configs[1], 2, &["--standby"]);
        (place, first, standby)
    }

    /// Run 1 serving; `configs[1]` for a second node.
    async fn with_serving_node(lease_secs: u64) -> (Place, RunningNode) {
        let url = fresh_database_async().await;
        let tmp = tempfile::tempdir().unwrap();
        let (_relay, relay_url) = start_relay().await;
        let configs = shared_node(tmp.path(), &relay_url, &url, lease_secs);
        let first = RunningNode::start_with_args(&configs[0], 1, &["--standby"]);
        assert_eq!(serving(tmp.path(), &[1]).await, 1);
        let place = Place {
            url,
            tmp,
            _relay,
            relay_url,
            configs,
        };
        (place, first)
    }
}

fn shared_node(
    dir: &Path,
    relay: &RelayUrl,
    url: &str,
    lease_secs: u64,
) -> Vec<std::path::PathBuf> {
    let base = NodeDir::new("shared")
        .policy(
            "[[pricing.kind]]\nkind = 5050\nmode = \"free\"\n\n\
             [failures]\nmax_attempts = 2\nthen = \"refund\"\n",
        )
        .offer(
            Offer::text(5050)
                .timeout_secs(10)
                .max_concurrency(4)
                .line("execute_on = \"any_node\"")
                .line(format!("lease_secs = {lease_secs}")),
        )
        .node_setting("config_problems = \"warn\"")
        .relays(std::slice::from_ref(relay))
        .write(dir)
        .unwrap();
    paydvm_testkit::fixture::on_database_each(&base, url, 2, "node", "state").unwrap()
}

fn count(dir: &Path, run: u32, line: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("run{run}.err")))
        .unwrap_or_default()
        .matches(line)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_attempts_run_on_the_standby_too_and_a_killed_runners_go_to_another_node() {
    let (place, first, standby) = Place::with_two_nodes(LEASE_SECS).await;
    let (url, dir, relay_url) = (&place.url, place.tmp.path(), &place.relay_url);

    let customer = Customer::connect(std::slice::from_ref(relay_url)).await;
    let sent = send_jobs(&customer, 0).await;
    // Killed once it has run one attempt and holds at least two more, half run.
    wait_for(dir, || {
        let (claimed, ran) = (count(dir, 2, CLAIMED), count(dir, 2, RAN));
        ran >= 1 && claimed >= ran + 2
    })
    .await;
    standby.crash();
    let (claimed_2, ran_2) = (count(dir, 2, CLAIMED), count(dir, 2, RAN));
    crate::standby_nodes::poll_until(url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    let ran_1 = count(dir, 1, RAN);
    let stopped = first.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));

    // Both nodes ran attempts; the standby's cut-off ones were run again by the serving node.
    assert!(ran_2 >= 1 && claimed_2 > ran_2, "{claimed_2} {ran_2}");
    // The serving node collects every stored outcome once. The standby's are counted there, not
    // in its own log: killed between storing an outcome and logging it (seen once, two of
    // them), it stored more than it said.
    let (collected, collected_from_2) = collected(dir);
    assert_eq!(
        collected,
        JOBS,
        "one outcome collected per job\n{}",
        logs(dir)
    );
    assert_eq!(
        ran_1 + collected_from_2,
        JOBS,
        "one outcome stored per job\n{}",
        logs(dir)
    );
    assert!(collected_from_2 >= ran_2, "{}", logs(dir));
    for run in [1, 2] {
        // Renewed in time: no attempt was taken from a runner that was still running it.
        for taken in ["shared attempt stopped", "another node holds it now"] {
            assert_eq!(count(dir, run, taken), 0, "{}", logs(dir));
        }
    }
    check_ended_once(url, relay_url, &customer, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_node_killed_mid_run_leaves_its_successor_every_attempt_as_it_was() {
    let (place, first, standby) = Place::with_two_nodes(LEASE_SECS).await;
    let (url, dir, relay_url) = (&place.url, place.tmp.path(), &place.relay_url);
    wait_for(dir, || {
        count(dir, 2, "standing by; running shared attempts") == 1
    })
    .await;

    let customer = Customer::connect(std::slice::from_ref(relay_url)).await;
    let sent = send_jobs(&customer, 0).await;
    // The serving node dies while both nodes run attempts: its own are half run, the
    // standby's outcomes are not collected yet.
    wait_for(dir, || {
        let (claimed_1, ran_1) = (count(dir, 1, CLAIMED), count(dir, 1, RAN));
        claimed_1 >= ran_1 + 2 && count(dir, 2, CLAIMED) >= 2
    })
    .await;
    first.crash();
    let (claimed_1, ran_1) = (count(dir, 1, CLAIMED), count(dir, 1, RAN));
    assert_eq!(serving(dir, &[2]).await, 2);
    let restarted = RunningNode::start_with_args(&place.configs[0], 3, &["--standby"]);
    crate::standby_nodes::poll_until(url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    // The standby first, so that it does not take over the lock the serving node frees.
    for node in [restarted, standby] {
        let stopped = node.stop();
        assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    }
    assert!(claimed_1 > ran_1, "{claimed_1} {ran_1}");
    // The successor resumed the attempts as they were: none failed "interrupted by restart".
    check_ended_once(url, relay_url, &customer, &sent).await;
}

/// A standby that cannot reach the database when it starts (all its traffic held by a proxy)
/// waits, and its runner opens the work table once the database answers: it then runs shared
/// attempts while it stands by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_started_while_the_database_does_not_answer_runs_jobs_once_it_does() {
    let (place, first) = Place::with_serving_node(LEASE_SECS).await;
    let (url, dir, relay_url) = (&place.url, place.tmp.path(), &place.relay_url);
    // The store's usual deadline: nothing here is about it.
    let (proxy, through) = crate::pg_node::through_proxy(url, 30_000).await;
    let standby_config = &place.configs[1];
    let text = std::fs::read_to_string(standby_config).unwrap();
    assert!(text.contains(url.as_str()));
    std::fs::write(standby_config, text.replace(url.as_str(), &through)).unwrap();
    proxy.hold();
    let standby = RunningNode::start_with_args(standby_config, 2, &["--standby"]);
    wait_for(dir, || {
        count(dir, 2, "the work table does not open yet") == 1
    })
    .await;
    proxy.release();
    let customer = Customer::connect(std::slice::from_ref(relay_url)).await;
    let sent = send_jobs(&customer, 0).await;
    crate::standby_nodes::poll_until(url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    // Read while the first node still serves, and the standby stopped first: stopped the other
    // way round, the standby takes over the lock it frees (and rightly says it serves).
    let out2 = std::fs::read_to_string(dir.join("run2.out")).unwrap();
    assert!(
        !out2.contains("running"),
        "the standby served while the first node did\n{}",
        logs(dir)
    );
    for node in [standby, first] {
        let stopped = node.stop();
        assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    }
    assert!(count(dir, 2, RAN) >= 1, "{}", logs(dir));
    check_ended_once(url, relay_url, &customer, &sent).await;
}

/// With leases of ten minutes, the standby is stopped (SIGTERM) while it runs attempts, then
/// the serving node while a new standby does: each hands its running attempts back and the other
/// node runs them at once. Without the hand-back they wait out their leases and the jobs do not
/// end within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_hands_its_attempts_to_the_other_at_once() {
    let (place, first, standby) = Place::with_two_nodes(LONGEST_LEASE_SECS).await;
    let (url, dir, relay_url) = (&place.url, place.tmp.path(), &place.relay_url);
    let customer = Customer::connect(std::slice::from_ref(relay_url)).await;
    let mut sent = send_jobs(&customer, 0).await;
    wait_for(dir, || running_here(dir, 2) >= 2).await;
    let stopped = standby.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    assert!(count(dir, 2, HANDED_BACK) >= 1, "{}", logs(dir));
    crate::standby_nodes::poll_until(url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;

    let next = RunningNode::start_with_args(&place.configs[1], 3, &["--standby"]);
    wait_for(dir, || {
        count(dir, 3, "standing by; running shared attempts") == 1
    })
    .await;
    sent.extend(send_jobs(&customer, JOBS).await);
    wait_for(dir, || {
        running_here(dir, 1) >= 2 && running_here(dir, 3) >= 1
    })
    .await;
    let stopped = first.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    assert!(count(dir, 1, HANDED_BACK) >= 1, "{}", logs(dir));
    assert_eq!(serving(dir, &[3]).await, 3);
    crate::standby_nodes::poll_until(url, dir, "every job ended", |s| ended_jobs(s) == 2 * JOBS)
        .await;
    let stopped = next.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    check_ended_once(url, relay_url, &customer, &sent).await;
}

/// Attempts run `run` claimed and has not ended (none is taken from it in these tests).
fn running_here(dir: &Path, run: u32) -> usize {
    count(dir, run, CLAIMED).saturating_sub(count(dir, run, RAN))
}

const HANDED_BACK: &str = "shared attempt handed back";
/// How many outcomes the serving node (run 1) collected: in all, and run by another node.
fn collected(dir: &Path) -> (usize, usize) {
    let log = std::fs::read_to_string(dir.join("run1.err")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shared attempt collected"))
        .collect();
    let own = own_name(dir, 1);
    let elsewhere = lines.iter().filter(|l| !l.contains(&own)).count();
    (lines.len(), elsewhere)
}

const CLAIMED: &str = "shared attempt claimed";
const RAN: &str = "shared attempt ran here";

/// [`JOBS`] jobs (numbered from `first`), each sleeping [`JOB_MS`] on the shared offer.
async fn send_jobs(customer: &Customer, first: usize) -> Vec<EventId> {
    let mut sent = Vec::new();
    for i in first..first + JOBS {
        let ms = JOB_MS.to_string();
        let request = customer.request(
            5050,
            &format!("job {i}"),
            &[&["param", "mode", "sleep"], &["param", "ms", &ms]],
        );
        customer.client.send_event(&request).await.unwrap();
        sent.push(request.id);
    }
    sent
}

async fn wait_for(dir: &Path, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{}", logs(dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every job succeeded in its first attempt (a lease that passed, or a serving node that
/// died, is not a failed attempt), one result each on the relay, nothing left in the work
/// table, the ledger verifies.
async fn check_ended_once(url: &str, relay: &RelayUrl, customer: &Customer, sent: &[EventId]) {
    let store = read(url);
    for id in sent {
        let job = store
            .job(&JobId::new(id.to_hex()).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Succeeded, 1),
            "{job:?}"
        );
    }
    check_results(relay, customer, sent).await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    let left = tokio::task::spawn_blocking(move || {
        ThrowawayCluster::shared()
            .admin(&db, "SELECT job FROM work")
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        left.is_empty(),
        "{} attempts left in the work table",
        left.len()
    );
    let out = paydvm(&["ledger", "verify", url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ledger OK"), "{}", stdout(&out));
}

/// `host:pid` of run `run`, as its runner names itself when it starts.
fn own_name(dir: &Path, run: u32) -> String {
    let err = std::fs::read_to_string(dir.join(format!("run{run}.err"))).unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("shared work runner"))
        .unwrap_or_else(|| panic!("run {run} named no runner\n{err}"));
    let name = line.rsplit("node=").next().unwrap();
    name.split_whitespace().next().unwrap().to_owned()
}

/// One result per job on the relay.
async fn check_results(relay: &RelayUrl, customer: &Customer, sent: &[EventId]) {
    let client = paydvm::node::transport::client(Keys::generate());
    client.add_relay(relay.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let filter = Filter::new()
        .kind(Kind::Custom(6050))
        .pubkey(customer.keys.public_key())
        .limit(sent.len() * 2);
    let events = client
        .fetch_events(filter, Duration::from_secs(10))
        .await
        .unwrap();
    client.shutdown().await;
    let mut results: HashMap<EventId, usize> = HashMap::new();
    for event in events {
        for request in event.tags.event_ids() {
            *results.entry(*request).or_default() += 1;
        }
    }
    for id in sent {
        assert_eq!(results.get(id).copied().unwrap_or(0), 1, "results of {id}");
    }
}
