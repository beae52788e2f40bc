//! Interop: a subscriber nobody on this project wrote. NDK (npm `@nostr-dev-kit/ndk`, pinned and
//! installed by `tools/peer-npm.sh ndk`) runs as a Node.js child (tests/peers/ndk_subscriber.mjs)
//! against the node on a 127.0.0.1 relay: it parses our 37001 with its tier class, publishes its
//! own 7001, gets our quote (paid here through `FakeLightning`), parses our 7003 with its receipt
//! class and runs a job on the subscription. What NDK read comes back as JSON lines on its
//! stdout; the ledger is checked here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::Invoice;
use paydvm::node::NodeOptions;
use paydvm_ledger::{
    Account, EntitlementState, EventBody, JobId, Msat, QueueReason, SubscriptionId,
};
use paydvm_testkit::fixture::Fixture;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::node::{steps, test_node, Setup};

/// A daily tier: NDK reads only the cadences it knows (daily … yearly), so the period is one.
const TIER: &str = r#"
[[subscriptions.tier]]
id = "ndk-daily"
name = "Daily"
price_msat = 21000
period_secs = 86400
quota = 3
kinds = [5050]
"#;

/// The whole NDK conversation; the script's own waits time out after 30 s each.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndk_reads_our_tier_subscribes_pays_reads_our_receipt_and_runs_a_job_on_it() {
    let prefix = ndk_prefix();
    let s = Setup::build(Fixture::builder(test_node("refund", "").policy(TIER)).relays(1)).await;
    let ln = FakeLightning::new();
    let options = NodeOptions {
        lightning: Some(Arc::new(ln.clone())),
        ..NodeOptions::default()
    };
    let node = s.start_with(options).await;
    let us = node.pubkey().to_hex();
    let keys = Keys::generate();
    let steps_seen = run_subscriber(&prefix, &s.urls[0], &us, &keys, &ln).await;
    node.shutdown().await;

    let tier = &steps_seen["tier"];
    check_tier(tier, &us);
    let start = &steps_seen["subscribe"];
    let subscription = start["id"].as_str().unwrap().to_owned();
    check_subscribe(start, &us, tier["id"].as_str().unwrap());
    check_receipt(&steps_seen["receipt"], &us, &keys, &subscription);
    let job = &steps_seen["job"];
    assert_eq!(job["result"], "HELLO FROM NDK", "{job}");
    // No quote for a covered job: at most the node's `processing` notice before the result.
    let feedback = job["feedback"].as_array().unwrap();
    assert!(feedback.iter().all(|f| f == "processing"), "{job}");
    check_ledger(&s, &subscription, job["id"].as_str().unwrap());
}

/// What NDK parsed from our 37001: the title, the price per day in msats, us as its verifier.
fn check_tier(tier: &Value, us: &str) {
    assert_eq!(tier["d"], "ndk-daily", "{tier}");
    assert_eq!(tier["title"], "Daily", "{tier}");
    assert_eq!(
        tier["amounts"],
        json!([{"amount": 21000, "currency": "msats", "term": "daily"}]),
        "{tier}"
    );
    assert_eq!(tier["verifier"], us, "{tier}");
    assert_eq!(tier["isValid"], true, "{tier}");
}

/// NDK's own 7001: it names the tier by address and by id, and us as the recipient.
fn check_subscribe(start: &Value, us: &str, tier_id: &str) {
    let tags: Vec<Vec<String>> = serde_json::from_value(start["tags"].clone()).unwrap();
    let first = |name: &str| {
        tags.iter()
            .find(|t| t[0] == name)
            .unwrap_or_else(|| panic!("no {name} tag in NDK's 7001: {tags:?}"))
    };
    assert_eq!(first("a")[1], format!("37001:{us}:ndk-daily"));
    assert_eq!(first("e")[1], tier_id);
    assert_eq!(first("p")[1], us);
    assert_eq!(first("amount")[1..], ["21000", "msats", "daily"]);
    assert_eq!(start["isValid"], true, "{start}");
}

/// Our 7003 as NDK's receipt class reads it: signed by the tier's verifier (us), recipient us,
/// subscriber NDK's key, our 7001, a one-day window that is active now.
fn check_receipt(receipt: &Value, us: &str, subscriber: &Keys, subscription: &str) {
    assert_eq!(receipt["author"], us, "{receipt}");
    assert_eq!(receipt["signatureValid"], true, "{receipt}");
    assert_eq!(receipt["signedByVerifier"], true, "{receipt}");
    assert_eq!(receipt["recipient"], us, "{receipt}");
    assert_eq!(
        receipt["subscriber"],
        subscriber.public_key().to_hex(),
        "{receipt}"
    );
    assert_eq!(receipt["subscription"], subscription, "{receipt}");
    assert_eq!(receipt["tierName"], "ndk-daily", "{receipt}");
    let (from, to) = (
        receipt["valid"]["start"].as_u64().unwrap(),
        receipt["valid"]["end"].as_u64().unwrap(),
    );
    assert_eq!(to - from, 86_400, "{receipt}");
    let now = Timestamp::now().as_secs();
    assert!(from <= now && now < to, "{receipt} at {now}");
    assert_eq!(receipt["isValid"], true, "{receipt}");
    assert_eq!(receipt["isActive"], true, "{receipt}");
}

/// The period is booked, and NDK's job was queued on it: one unit of the quota, no charge.
fn check_ledger(s: &Setup, subscription: &str, job: &str) {
    let store = s.store();
    let id = SubscriptionId::new(subscription).unwrap();
    let record = store
        .state()
        .subscription(&id)
        .cloned()
        .expect("NDK's 7001");
    assert_eq!(
        (record.state, record.used, record.quota),
        (EntitlementState::Active, 1, 3)
    );
    assert_eq!(
        store.state().balance(&Account::Revenue).credits,
        Msat::from_msat(21_000),
        "the period's price and nothing for the job"
    );
    assert_eq!(
        steps(&store, job),
        [
            "job_received",
            "job_queued",
            "processing_started",
            "result_published"
        ]
    );
    let trail = store.audit(job).unwrap().expect("the job's trail");
    let queued_on = trail.events.iter().find_map(|e| match &e.event {
        EventBody::JobQueued {
            job: queued,
            reason: QueueReason::Entitlement { subscription },
        } if *queued == JobId::new(job).unwrap() => Some(subscription.clone()),
        _ => None,
    });
    assert_eq!(queued_on, Some(id), "queued on the entitlement");
    assert!(store.verify().is_ok());
}

/// Runs the NDK script to the end, paying the invoice of its quote when it prints it. Returns
/// each step's JSON by name; fails with the script's stderr if it fails or takes too long.
async fn run_subscriber(
    prefix: &Path,
    relay: &RelayUrl,
    us: &str,
    keys: &Keys,
    ln: &FakeLightning,
) -> HashMap<String, Value> {
    let home = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ndk_subscriber.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NDK_PREFIX", prefix)
        .env("RELAY", relay.to_string())
        .env("NODE_PUBKEY", us)
        .env("TIER_D", "ndk-daily")
        .env("SUBSCRIBER_SECRET", keys.secret_key().to_secret_hex())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (checked by ndk_prefix)");
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let conversation = async {
        let mut seen = HashMap::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let step: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON step ({e}): {line}"));
            println!("NDK: {step}");
            if step["step"] == "quote" {
                pay_quote(&step, us, ln);
            }
            seen.insert(step["step"].as_str().unwrap().to_owned(), step);
        }
        (seen, child.wait().await.unwrap())
    };
    let Ok((seen, status)) = tokio::time::timeout(SCRIPT_TIMEOUT, conversation).await else {
        panic!("the NDK subscriber did not finish within {SCRIPT_TIMEOUT:?}");
    };
    let errors = errors.await.unwrap();
    assert!(
        status.success(),
        "the NDK subscriber failed ({status}) after {:?}:\n{errors}",
        seen.keys().collect::<Vec<_>>()
    );
    seen
}

/// Our quote as NDK received it: 21 sat with an invoice for exactly that, settled here.
fn pay_quote(quote: &Value, us: &str, ln: &FakeLightning) {
    assert_eq!(quote["author"], us, "{quote}");
    assert_eq!(quote["msat"], "21000", "{quote}");
    let invoice = Invoice::parse(quote["bolt11"].as_str().expect("an invoice")).unwrap();
    assert_eq!(invoice.amount(), Some(Msat::from_msat(21_000)));
    ln.settle(&invoice.payment_hash()).unwrap();
}

/// `tools/peer-npm.sh ndk`, once per test process: the npm prefix holding the pinned NDK.
fn ndk_prefix() -> PathBuf {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(install_ndk).clone()
}

fn install_ndk() -> PathBuf {
    for tool in ["node", "npm"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` not found: the NDK interop test needs Node.js with npm (tested with Node 20) \
             (Debian: apt-get install nodejs npm)"
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/peer-npm.sh");
    let out = Command::new(&script)
        .arg("ndk")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "tools/peer-npm.sh ndk failed ({}): the NDK interop test needs the npm registry once",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
