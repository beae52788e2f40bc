//! The `[http]` endpoint end to end: a node with free, paid (fake Lightning) and rejected jobs;
//! `/metrics` counts them under the node's own label; `/readyz` is ready, then 503 once its
//! only relay is gone; and the status page, loaded in a real headless Chromium (Debian's
//! `chromium`), shows the jobs the ledger holds and draws its charts. A token guards a node
//! that asks for one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::Invoice;
use paydvm::node::{NodeHandle, NodeOptions};
use paydvm_ledger::JobState;
use paydvm_testkit::fixture::Fixture;

use crate::node::{is_status, tag_values, test_node, wait_state, Customer};

/// Headless browsers Debian packages, in the order tried.
const BROWSERS: [&str; 2] = ["chromium", "chromium-headless-shell"];

fn add_http(config: &Path, extra: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:0\"\n{extra}"));
    std::fs::write(config, text).unwrap();
}

async fn start(fixture: &Fixture, ln: &FakeLightning) -> (NodeHandle, SocketAddr) {
    let node = fixture
        .start_with(NodeOptions {
            lightning: Some(Arc::new(ln.clone())),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
    let addr = node.http_addr().expect("[http] is configured");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    (node, addr)
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `/readyz` until it answers `code`; returns its body.
async fn readyz_becomes(base: &str, code: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(&format!("{base}/readyz")).await;
        if status == code {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One Prometheus sample line: name, labels, value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").unwrap();
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().unwrap()));
    }
    out
}

/// The value of `name` for this node with `labels`; `None` when no such series.
fn value(text: &str, node: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| {
            n == name
                && l.get("node").map(String::as_str) == Some(node)
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
}

/// The first Debian headless browser on PATH; fails (never skips) naming the package.
fn browser() -> String {
    for name in BROWSERS {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name.to_owned();
        }
    }
    panic!(
        "no headless browser: install the Debian package `chromium` \
         (apt-get install -y chromium; .ci/run does)"
    );
}

/// Loads `url` in headless Chromium and returns the DOM after its scripts ran; with `shot`,
/// also saves a screenshot there.
async fn load_page(url: &str, shot: Option<&Path>) -> String {
    let browser = browser();
    let profile = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=6000".to_owned(),
        "--window-size=1280,900".to_owned(),
    ];
    match shot {
        Some(path) => args.push(format!("--screenshot={}", path.display())),
        None => args.push("--dump-dom".to_owned()),
    }
    args.push(url.to_owned());
    let run = tokio::process::Command::new(&browser)
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the browser finished in time")
        .expect("the browser runs");
    assert!(
        out.status.success(),
        "{browser} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of attribute `attr` on the element whose `id` is `id`, in a dumped DOM.
fn attribute(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let from = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

async fn run_jobs(fixture: &Fixture, node: &NodeHandle, ln: &FakeLightning) -> Vec<String> {
    let mut customer = Customer::connect(&fixture.urls).await;
    let mut jobs = Vec::new();
    for text in ["one two", "three four five"] {
        let free = customer.request(5001, text, &[]);
        customer.client.send_event(&free).await.unwrap();
        wait_state(node, &free.id.to_hex(), JobState::Succeeded).await;
        jobs.push(free.id.to_hex());
    }
    let paid = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&paid).await.unwrap();
    let quote = customer
        .wait_for(paid.id, is_status("payment-required"))
        .await;
    let bolt11 = tag_values(&quote, "amount").unwrap()[1].clone();
    ln.settle(&Invoice::parse(&bolt11).unwrap().payment_hash())
        .unwrap();
    wait_state(node, &paid.id.to_hex(), JobState::Succeeded).await;
    jobs.push(paid.id.to_hex());
    let rejected = customer.request(5050, "abc", &[&["bid", "1000"]]);
    customer.client.send_event(&rejected).await.unwrap();
    wait_state(node, &rejected.id.to_hex(), JobState::Rejected).await;
    jobs.push(rejected.id.to_hex());
    jobs
}

fn check_metrics(text: &str, node: &str) {
    let v = |name: &str, labels: &[(&str, &str)]| value(text, node, name, labels);
    let jobs = "paydvm_jobs_total";
    assert_eq!(
        v(jobs, &[("kind", "5001"), ("state", "succeeded")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(jobs, &[("kind", "5050"), ("state", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(v(jobs, &[("kind", "5050"), ("state", "quoted")]), Some(1.0));
    assert_eq!(
        v(jobs, &[("kind", "5050"), ("state", "rejected")]),
        Some(1.0)
    );
    let received = "paydvm_jobs_received_total";
    assert_eq!(v(received, &[("kind", "5001")]), Some(2.0));
    assert_eq!(v(received, &[("kind", "5050")]), Some(2.0));
    let invoice = [("rail", "invoice")];
    assert_eq!(v("paydvm_payments_total", &invoice), Some(1.0));
    assert_eq!(v("paydvm_payments_msat_total", &invoice), Some(5000.0));
    assert_eq!(v("paydvm_revenue_msat_total", &[]), Some(5000.0));
    assert_eq!(v("paydvm_quote_to_payment_seconds_count", &[]), Some(1.0));
    assert_eq!(v("paydvm_payment_to_result_seconds_count", &[]), Some(1.0));
    assert_eq!(v("paydvm_request_to_result_seconds_count", &[]), Some(3.0));
    assert!(v("paydvm_ledger_commit_seconds_count", &[]).unwrap() >= 4.0);
    assert_eq!(v("paydvm_relay_up", &[]), Some(1.0));
    assert_eq!(v("paydvm_wallet_up", &[("backend", "fake")]), Some(1.0));
    // The sampler sets it every two seconds: the test waited for `/readyz` first.
    assert!(
        v("paydvm_ledger_disk_free_bytes", &[]).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert_eq!(
        v("paydvm_outbox_backlog", &[]).map(|b| b >= 0.0),
        Some(true)
    );
}

/// Every job the ledger holds is on the page with its state; every chart has points.
fn check_page(dom: &str, ledger: &[(String, JobState)]) {
    assert!(
        attribute(dom, "chart-jobs", "data-points").is_some(),
        "{dom}"
    );
    for (job, state) in ledger {
        let row = format!("data-job=\"{job}\" data-state=\"{}\"", state.as_str());
        assert!(
            dom.contains(&row),
            "{job} ({state:?}) is not on the page:\n{dom}"
        );
    }
    for chart in [
        "chart-jobs",
        "chart-revenue",
        "chart-refunds",
        "chart-latency",
    ] {
        let points: usize = attribute(dom, chart, "data-points")
            .unwrap()
            .parse()
            .unwrap();
        assert!(points >= 1, "{chart} has no points:\n{dom}");
    }
    let max: f64 = attribute(dom, "chart-revenue", "data-max")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(max, 5000.0, "the paid job's revenue is charted");
    assert!(dom.contains("<polyline points=\""), "{dom}");
    assert!(dom.contains("result_published"), "trails are on the page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_metrics_and_health_show_what_the_ledger_holds() {
    browser(); // Fails first, naming the package, if it is missing.
    let mut fixture = Fixture::builder(test_node("refund", ""))
        .build()
        .await
        .unwrap();
    add_http(&fixture.config, "");
    let ln = FakeLightning::new();
    let (node, addr) = start(&fixture, &ln).await;
    let base = format!("http://{addr}");
    let ready = readyz_becomes(&base, 200).await;
    assert_eq!(ready["ready"], true, "{ready}");
    let disk = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "disk");
    let detail = disk.expect("a disk check")["detail"].as_str().unwrap();
    assert!(detail.contains("MiB free beside the ledger"), "{ready}");
    let jobs = run_jobs(&fixture, &node, &ln).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    check_metrics(&text, &node.pubkey().to_hex());

    // Charts need two samples of the totals; the sampler takes one every two seconds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let dom = load_page(&format!("{base}/"), None).await;
    let store = fixture.store().unwrap();
    let ledger: Vec<(String, JobState)> = jobs
        .iter()
        .map(|j| (j.clone(), crate::node::job_state(&store, j)))
        .collect();
    drop(store);
    check_page(&dom, &ledger);
    if let Ok(path) = std::env::var("PAYDVM_STATUS_SCREENSHOT") {
        load_page(&format!("{base}/"), Some(Path::new(&path))).await;
    }

    // Its only relay gone, the node is not ready, and says why.
    fixture.shutdown().await;
    let not_ready = readyz_becomes(&base, 503).await;
    assert_eq!(
        not_ready["failing"],
        serde_json::json!(["relays"]),
        "{not_ready}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_liveness() {
    let fixture = Fixture::builder(test_node("refund", ""))
        .build()
        .await
        .unwrap();
    let token = "s3cret-token-0123456789";
    let token_file = fixture.dir().join("http.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    add_http(&fixture.config, "token_file = \"http.token\"\n");
    let (node, addr) = start(&fixture, &FakeLightning::new()).await;
    let base = format!("http://{addr}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    for path in ["/", "/metrics", "/readyz", "/api/status"] {
        assert_eq!(get(&format!("{base}{path}")).await.0, 401, "{path}");
        let wrong = format!("{base}{path}?token=s3cret-token-012345678");
        assert_eq!(get(&wrong).await.0, 401, "{path} wrong token");
        let right = format!("{base}{path}?token={token}");
        assert_ne!(get(&right).await.0, 401, "{path} with the token");
        let with_header = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_ne!(with_header.status().as_u16(), 401, "{path} with the header");
    }
    node.shutdown().await;
}
