//! Crash safety with the real binary: `paydvm run` killed with SIGKILL in the middle of a paid
//! job, started again, and the job finishes once, with one result on the relay.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nostr_relay_builder::prelude::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::*;
use paydvm::config::Config;
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, JobId, JobRecord, JobState};

use crate::node::{start_relay, status, top_up, write_node_dir, Customer};

const WAIT: Duration = Duration::from_secs(30);

/// A running `paydvm run`; killed if the test panics.
pub struct RunningNode {
    pub child: Child,
}

impl RunningNode {
    pub fn start(config: &Path, run: u32) -> RunningNode {
        Self::start_with_args(config, run, &[])
    }

    /// `paydvm run --config <config> <args>`, stdout and stderr in `run<run>.out`/`.err` next
    /// to the config.
    pub fn start_with_args(config: &Path, run: u32, args: &[&str]) -> RunningNode {
        let dir = config.parent().unwrap();
        let log = |name: &str| {
            std::fs::File::create(dir.join(format!("run{run}.{name}"))).expect("log file")
        };
        let child = Command::new(env!("CARGO_BIN_EXE_paydvm"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("PAYDVM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("start paydvm run");
        RunningNode { child }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status of a clean shutdown.
    pub fn stop(self) -> std::process::ExitStatus {
        self.stop_with("-TERM")
    }

    /// Sends `signal` (as `kill` takes it: `-TERM`, `-HUP`), then the exit status.
    pub fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        self.exit_status(&format!("paydvm run did not stop on {signal}"))
    }

    /// Waits (at most [`WAIT`]) for the process to end by itself; `why` if it does not.
    pub fn exit_status(&mut self, why: &str) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{why}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn job_record(ledger: &Path, job: &str) -> Option<JobRecord> {
    let store = Store::open_read_only(ledger).ok()?;
    store.state().job(&JobId::new(job).unwrap()).cloned()
}

/// Polls the ledger (read-only, while the node runs) until `done` holds for the job and every
/// effect of the job has been delivered.
pub async fn wait_ledger(ledger: &Path, job: &str, done: impl Fn(&JobRecord) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let settled = Store::open_read_only(ledger).ok().is_some_and(|store| {
            let state = store.state();
            let id = JobId::new(job).unwrap();
            state.job(&id).is_some_and(&done)
                && state
                    .effects()
                    .filter(|e| e.job.as_ref() == Some(&id))
                    .all(|e| e.outcome.is_some())
        });
        if settled {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger never settled: {:?}",
            job_record(ledger, job)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for run in 1..=4 {
        for name in ["out", "err"] {
            let path: PathBuf = dir.join(format!("run{run}.{name}"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                all.push_str(&format!("--- {}\n{text}", path.display()));
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_paid_job_then_restart_publishes_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay().await;
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let ledger = dir.path().join("paydvm.db");
    let keys = Keys::generate();
    top_up(&ledger, &keys.public_key(), 5_000);

    let mut customer = Customer::connect(std::slice::from_ref(&url)).await;
    customer.keys = keys;
    let node = RunningNode::start(&config, 1);
    let request = customer.request(
        5050,
        "survives a crash",
        &[&["param", "mode", "sleep"], &["param", "ms", "3000"]],
    );
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();

    customer
        .wait_for(request.id, |e| {
            e.kind == Kind::Custom(7000) && status(e).as_deref() == Some("processing")
        })
        .await;
    assert_eq!(
        job_record(&ledger, &job).map(|j| j.state),
        Some(JobState::Processing),
        "{}",
        logs(dir.path())
    );
    node.crash();
    assert_eq!(
        job_record(&ledger, &job).map(|j| j.state),
        Some(JobState::Processing)
    );

    let node = RunningNode::start(&config, 2);
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "survives a crash");
    wait_ledger(&ledger, &job, |j| j.state == JobState::Succeeded).await;
    // Give a duplicate publication, if there were one, time to reach the relay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = node.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir.path()));

    let results = customer
        .client
        .fetch_events(
            Filter::new()
                .kinds([Kind::Custom(6050), Kind::Custom(6001)])
                .event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 1, "{results:?}");

    let store = Store::open_read_only(&ledger).unwrap();
    let record = store
        .state()
        .job(&JobId::new(job.clone()).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.attempts, 2);
    let trail = store.audit(&job).unwrap().unwrap();
    let interrupted = trail
        .events
        .iter()
        .filter(|e| {
            matches!(
                &e.event,
                EventBody::ProcessingFailed { reason, retryable: true, .. }
                    if reason.contains("interrupted")
            )
        })
        .count();
    assert_eq!(interrupted, 1);
    let published = trail
        .events
        .iter()
        .filter(|e| e.event.type_name() == "result_published")
        .count();
    assert_eq!(published, 1);
    assert!(store.verify().is_ok());
    drop(store);

    let verify = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["ledger", "verify"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let out = logs(dir.path());
    assert!(out.contains("npub1"), "{out}");
    assert!(!out.to_lowercase().contains("nsec"), "{out}");
}

/// A relay on `port` (the previous one on that port has stopped; its events are gone).
async fn relay_on(port: u16) -> LocalRelay {
    let mut last = None;
    for _ in 0..50 {
        let relay = LocalRelay::new(
            RelayBuilder::default()
                .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .port(port),
        );
        match relay.run().await {
            Ok(()) => return relay,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("relay on port {port} did not start: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_result_is_recorded_but_not_published_re_sends_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, url) = start_relay().await;
    let port: u16 = url
        .as_str()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let ledger = dir.path().join("paydvm.db");
    let keys = Keys::generate();
    top_up(&ledger, &keys.public_key(), 5_000);

    let mut customer = Customer::connect(std::slice::from_ref(&url)).await;
    customer.keys = keys;
    let node = RunningNode::start(&config, 1);
    let request = customer.request(
        5050,
        "recorded not sent",
        &[&["param", "mode", "sleep"], &["param", "ms", "2000"]],
    );
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    customer
        .wait_for(request.id, |e| {
            e.kind == Kind::Custom(7000) && status(e).as_deref() == Some("processing")
        })
        .await;
    customer.client.shutdown().await;
    // The relay goes away while the job runs: the result is recorded but cannot be published.
    relay.shutdown();
    let deadline = tokio::time::Instant::now() + WAIT;
    let result_id = loop {
        let pending = Store::open_read_only(&ledger).ok().and_then(|store| {
            let state = store.state();
            let record = state.job(&JobId::new(job.clone()).unwrap())?.clone();
            let undelivered = state
                .effects()
                .any(|e| e.job.as_ref() == Some(&record.job) && e.outcome.is_none());
            (record.state == JobState::Succeeded && undelivered)
                .then(|| record.result_event.clone())
                .flatten()
        });
        if let Some(id) = pending {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "result never recorded: {:?}\n{}",
            job_record(&ledger, &job),
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    node.crash();

    // The relay is back (empty); the restarted node sends the stored result, unchanged.
    let _relay = relay_on(port).await;
    let node = RunningNode::start(&config, 2);
    wait_ledger(&ledger, &job, |j| j.state == JobState::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = node.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir.path()));

    let client = Client::default();
    client.add_relay(url.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let results = client
        .fetch_events(
            Filter::new()
                .kinds([Kind::Custom(6050), Kind::Custom(6001)])
                .event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let result = results.first().unwrap();
    assert_eq!(result.id.to_hex(), result_id.as_str());
    assert_eq!(result.content, "recorded not sent");

    let store = Store::open_read_only(&ledger).unwrap();
    let record = store
        .state()
        .job(&JobId::new(job.clone()).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.attempts, 1);
    let trail = store.audit(&job).unwrap().unwrap();
    assert_eq!(
        trail
            .events
            .iter()
            .filter(|e| e.event.type_name() == "result_published")
            .count(),
        1
    );
    assert!(store.verify().is_ok());
}

#[test]
fn run_with_a_bad_config_exits_1_and_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let url = RelayUrl::parse("ws://127.0.0.1:9").unwrap();
    let config = write_node_dir(dir.path(), &[url], "refund");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("key_file = \"paydvm.key\"", "key_env = \"PAYDVM_TEST_KEY\""),
    )
    .unwrap();
    // Hex, but not a valid secp256k1 secret key.
    let bad = "f".repeat(64);
    let out = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("PAYDVM_TEST_KEY", &bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PAYDVM_TEST_KEY"), "{err}");
    assert!(!err.contains(&bad) && !String::from_utf8_lossy(&out.stdout).contains(&bad));

    let missing = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["run", "--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_npub_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay().await;
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let mut node = RunningNode::start(&config, 1);
    let out_path = dir.path().join("run1.out");
    let deadline = tokio::time::Instant::now() + WAIT;
    let out = loop {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        if out.contains("relays:") {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let npub = Config::load(&config)
        .unwrap()
        .public_key()
        .to_bech32()
        .unwrap();
    assert!(out.contains(&npub), "{out}");
    assert!(out.contains(url.as_str().trim_end_matches('/')), "{out}");
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", logs(dir.path()));
    let all = logs(dir.path());
    assert!(all.contains("SIGINT"), "{all}");
    assert!(!all.to_lowercase().contains("nsec"), "{all}");
    assert!(Store::open_read_only(dir.path().join("paydvm.db"))
        .unwrap()
        .verify()
        .is_ok());
}
