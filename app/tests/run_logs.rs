//! What `paydvm run` says in its logs, and how it stops: a job's lifecycle in JSON lines, no
//! misleading publishing error at start, SIGHUP as a clean stop, a WARN for an LNbits backend
//! that cannot pay refunds.

use std::time::Duration;

use nostr_sdk::prelude::*;
use serde_json::Value;

use crate::crash_node::{logs, RunningNode};
use crate::node::{start_relay, top_up, write_node_dir, Customer};

const WAIT: Duration = Duration::from_secs(30);

/// The JSON log lines of run 1; panics on a line that is not JSON.
fn json_lines(dir: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("run1.err")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// The messages logged for `job`, in order.
fn story(lines: &[Value], job: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["fields"]["job"].as_str() == Some(job))
        .map(|l| message(l).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_tell_a_jobs_story_and_sighup_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay().await;
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let keys = Keys::generate();
    top_up(&dir.path().join("paydvm.db"), &keys.public_key(), 10_000);
    let mut customer = Customer::connect(std::slice::from_ref(&url)).await;
    customer.keys = keys.clone();

    let node = RunningNode::start_with_args(&config, 1, &["--log-format", "json"]);
    let request = customer.request(5050, "story", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "STORY");
    let job = request.id.to_hex();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !story(&json_lines(dir.path()), &job)
        .iter()
        .any(|m| m.starts_with("result published"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stopped = node.stop_with("-HUP");
    assert_eq!(stopped.code(), Some(0), "{stopped:?}\n{}", logs(dir.path()));
    let lines = json_lines(dir.path());
    let steps = story(&lines, &job);
    let customer_short: String = keys.public_key().to_hex().chars().take(12).collect();
    let expected = [
        format!("request received: kind 5050 from customer {customer_short}"),
        "queued (5000 msat from credit)".to_owned(),
        "processing (attempt 1)".to_owned(),
        format!("result published (event {})", result.id.to_hex()),
    ];
    assert_eq!(steps, expected, "{}", logs(dir.path()));
    assert!(lines.iter().any(|l| message(l).contains("SIGHUP received")));
    assert!(lines.iter().any(|l| message(l) == "stopped"));
    let all = logs(dir.path());
    assert!(!all.contains("publishing failed"), "{all}");
    assert!(!all.to_lowercase().contains("nsec"), "{all}");
    assert!(!all.contains(&keys.secret_key().to_secret_hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_lnbits_admin_key_is_a_warning_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay().await;
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text + &format!(
            "\n[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"http://127.0.0.1:{closed}\"\n\
             lnbits_invoice_key_env = \"PAYDVM_TEST_INVOICE_KEY\"\n"
        ),
    )
    .unwrap();
    std::env::set_var("PAYDVM_TEST_INVOICE_KEY", "invoicekeysecret");
    let node = RunningNode::start(&config, 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    let warned = loop {
        let err = std::fs::read_to_string(dir.path().join("run1.err")).unwrap_or_default();
        if let Some(line) = err.lines().find(|l| l.contains("without an admin key")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(warned.contains("WARN"), "{warned}");
    assert!(warned.contains("cannot pay refunds"), "{warned}");
    let stopped = node.stop_with("-HUP");
    assert_eq!(stopped.code(), Some(0), "{}", logs(dir.path()));
    assert!(!logs(dir.path()).contains("invoicekeysecret"));
}
