//! The node end to end: a real LocalRelay on 127.0.0.1, the node started from a config file in a
//! temporary directory, and a customer client with its own keys.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr_relay_builder::prelude::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::*;
use paydvm::config::Config;
use paydvm::node::local_relay::EmbeddedRelay;
use paydvm::node::{Node, NodeHandle, NodeOptions};
use paydvm::protocol::nip90::{Encryption, Limit};
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::{
    Account, Asset, EventBody, IdemKey, JobId, JobState, LedgerEvent, Msat, Payment, PaymentRef,
    PaymentTarget, Pubkey, Rail, UnixMs,
};
use paydvm_testkit::fixture::{Fixture, FixtureBuilder, NodeDir};

const WAIT: Duration = Duration::from_secs(15);

pub async fn start_relay() -> (EmbeddedRelay, RelayUrl) {
    paydvm::node::local_relay::start_local_relay()
        .await
        .expect("relay runs")
}

/// The test node: 5001 free, 5050 fixed 5000 msat, a failed job tried twice and then
/// `failures_then`; `extra` TOML at the top of the policy.
pub fn test_node(failures_then: &str, extra: &str) -> NodeDir {
    NodeDir::text_node("test node", 2, failures_then).policy_prefix(extra)
}

/// A node directory: config, policy (5001 free, 5050 fixed 5000 msat), key. Its jobs are paid
/// from prepaid credit (`top_up`), so `paydvm run` is told that no rail is only a warning.
pub fn write_node_dir(dir: &Path, relays: &[RelayUrl], failures_then: &str) -> PathBuf {
    test_node(failures_then, "")
        .node_setting("config_problems = \"warn\"")
        .relays(relays)
        .write(dir)
        .unwrap()
}

pub struct Customer {
    pub keys: Keys,
    pub client: Client,
    notifications: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    /// Every reply received so far, so waiting for one never loses another.
    seen: Vec<Event>,
}

impl Customer {
    pub async fn connect(relays: &[RelayUrl]) -> Customer {
        let keys = Keys::generate();
        let client = paydvm::node::transport::client(keys.clone());
        for r in relays {
            client.add_relay(r.clone()).await.unwrap();
        }
        let notifications = client.notifications();
        client.try_connect(Duration::from_secs(5)).await;
        client
            .subscribe(
                Filter::new()
                    .kinds([Kind::Custom(6001), Kind::Custom(6050), Kind::Custom(7000)])
                    .since(Timestamp::now() - 60),
                None,
            )
            .await
            .unwrap();
        Customer {
            keys,
            client,
            notifications,
            seen: Vec::new(),
        }
    }

    pub fn request(&self, kind: u16, text: &str, extra: &[&[&str]]) -> Event {
        let mut tags = vec![Tag::parse(["i", text, "text"]).unwrap()];
        for t in extra {
            tags.push(Tag::parse(t.iter().copied()).unwrap());
        }
        EventBuilder::new(Kind::Custom(kind), "")
            .tags(tags)
            .sign_with_keys(&self.keys)
            .unwrap()
    }

    /// The first reply (feedback or result) to `request` matching `pred`.
    pub async fn wait_for(&mut self, request: EventId, pred: impl Fn(&Event) -> bool) -> Event {
        let matches = |e: &Event| e.tags.event_ids().any(|id| *id == request) && pred(e);
        if let Some(e) = self.seen.iter().find(|e| matches(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let n = tokio::time::timeout_at(deadline, self.notifications.recv())
                .await
                .expect("reply in time")
                .expect("notifications open");
            if let RelayPoolNotification::Event { event, .. } = n {
                self.seen.push((*event).clone());
                if matches(&event) {
                    return *event;
                }
            }
        }
    }
}

pub fn tag_values(event: &Event, name: &str) -> Option<Vec<String>> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|s| s.first().map(String::as_str) == Some(name))
        .map(|s| s[1..].to_vec())
}

pub fn status(event: &Event) -> Option<String> {
    tag_values(event, "status").and_then(|v| v.first().cloned())
}

/// A feedback's status: in clear, or (a reply to an encrypted request) as `customer` decrypts it
/// from the node `us`.
fn any_status(event: &Event, customer: &Keys, us: &PublicKey) -> Option<String> {
    if tag_values(event, "encrypted").is_none() {
        return status(event);
    }
    let scheme = Encryption::detect(&event.content);
    let plain = scheme.decrypt(customer, us, &event.content).ok()?;
    let tags: Vec<Vec<String>> = serde_json::from_str(&plain).ok()?;
    let status = tags
        .into_iter()
        .find(|t| t.first().map(String::as_str) == Some("status"))?;
    status.get(1).cloned()
}

pub fn is_status(s: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.kind == Kind::Custom(7000) && status(e).as_deref() == Some(s)
}

/// A [`Fixture`] of the [`test_node`], whose helpers fail the test instead of returning errors.
pub struct Setup(Fixture);

pub async fn setup(relays: usize, failures_then: &str) -> Setup {
    setup_with(relays, failures_then, "").await
}

async fn setup_with(relays: usize, failures_then: &str, extra: &str) -> Setup {
    Setup::build(Fixture::builder(test_node(failures_then, extra)).relays(relays)).await
}

impl std::ops::Deref for Setup {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl From<Fixture> for Setup {
    fn from(fixture: Fixture) -> Setup {
        Setup(fixture)
    }
}

impl Setup {
    pub async fn build(builder: FixtureBuilder) -> Setup {
        Setup(builder.build().await.expect("the fixture sets up"))
    }

    /// Adds `lines` to the config's `[node]` section.
    pub fn add_node_settings(&self, lines: &str) {
        self.0.add_node_settings(lines).unwrap();
    }

    pub async fn start(&self) -> NodeHandle {
        self.0.start().await.unwrap()
    }

    pub async fn start_with(&self, options: NodeOptions) -> NodeHandle {
        self.0.start_with(options).await.unwrap()
    }

    pub fn store(&self) -> Store {
        self.0.store().unwrap()
    }
}

pub fn types(store: &Store, job: &str) -> Vec<&'static str> {
    store
        .audit(job)
        .unwrap()
        .unwrap()
        .events
        .iter()
        .map(|e| e.event.type_name())
        .collect()
}

/// The [`steps`] of a job quoted, paid and done.
pub const PAID_AND_DONE: [&str; 6] = [
    "job_received",
    "quote_issued",
    "payment_received",
    "job_queued",
    "processing_started",
    "result_published",
];

/// A job's ledger trail by event type, without the outbox bookkeeping (`effect_*`).
pub fn steps(store: &Store, job: &str) -> Vec<&'static str> {
    types(store, job)
        .into_iter()
        .filter(|t| !t.starts_with("effect_"))
        .collect()
}

pub fn job_state(store: &Store, job: &str) -> JobState {
    store
        .state()
        .job(&JobId::new(job).unwrap())
        .expect("job exists")
        .state
}

pub async fn wait_state(node: &NodeHandle, job: &str, want: JobState) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if node.job(job).await.map(|j| j.state) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never reached {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn delivered_effects(store: &Store, job: &str) -> usize {
    store
        .state()
        .effects()
        .filter(|e| e.job.as_ref().map(|j| j.as_str()) == Some(job) && e.outcome.is_some())
        .count()
}

/// The events of `kind` (a result, a feedback) the first relay holds that answer `request`.
pub async fn results_on_relay(s: &Setup, kind: u16, request: EventId) -> usize {
    let client = paydvm::node::transport::client(Keys::generate());
    client.add_relay(s.urls[0].clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let filter = Filter::new().kind(Kind::Custom(kind)).event(request);
    let events = client
        .fetch_events(filter, Duration::from_secs(5))
        .await
        .unwrap();
    client.shutdown().await;
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_job_gets_processing_feedback_and_result() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, "one two three", &[]);
    customer.client.send_event(&request).await.unwrap();

    customer.wait_for(request.id, is_status("processing")).await;
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "3 words");
    assert_eq!(result.pubkey, node.pubkey());
    assert_eq!(tag_values(&result, "e").unwrap()[0], request.id.to_hex());
    assert_eq!(
        tag_values(&result, "p").unwrap()[0],
        customer.keys.public_key().to_hex()
    );
    let embedded = tag_values(&result, "request").unwrap().remove(0);
    assert_eq!(Event::from_json(embedded).unwrap().id, request.id);

    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    let job = request.id.to_hex();
    assert_eq!(job_state(&store, &job), JobState::Succeeded);
    let steps = steps(&store, &job);
    assert_eq!(
        steps,
        [
            "job_received",
            "job_queued",
            "processing_started",
            "result_published"
        ]
    );
    assert_eq!(delivered_effects(&store, &job), 2);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_job_stops_at_payment_required() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();

    let fb = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    assert_eq!(tag_values(&fb, "amount").unwrap(), ["5000"]);
    wait_state(&node, &request.id.to_hex(), JobState::Quoted).await;
    node.shutdown().await;
    let store = s.store();
    let job = store
        .state()
        .job(&JobId::new(request.id.to_hex()).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(job.state, JobState::Quoted);
    assert_eq!(job.price, Some(Msat::from_msat(5000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_below_price_is_rejected_with_error_feedback() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[&["bid", "1000"]]);
    customer.client.send_event(&request).await.unwrap();

    let fb = customer.wait_for(request.id, is_status("error")).await;
    assert_eq!(
        tag_values(&fb, "status").unwrap(),
        ["error", "bid below price: 5000 msat"]
    );
    wait_state(&node, &request.id.to_hex(), JobState::Rejected).await;
    node.shutdown().await;
    let store = s.store();
    assert_eq!(
        steps(&store, &request.id.to_hex()),
        ["job_received", "job_rejected"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_param_the_executor_refuses_is_an_error_before_any_quote() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[&["param", "mode", "bogus"]]);
    customer.client.send_event(&request).await.unwrap();

    let fb = customer.wait_for(request.id, is_status("error")).await;
    let status = tag_values(&fb, "status").unwrap();
    assert!(status[1].contains("unknown mode `bogus`"), "{status:?}");
    assert!(tag_values(&fb, "amount").is_none(), "{fb:?}");
    wait_state(&node, &request.id.to_hex(), JobState::Rejected).await;
    // A valid mode from the same customer is still quoted.
    let good = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&good).await.unwrap();
    customer
        .wait_for(good.id, is_status("payment-required"))
        .await;
    node.shutdown().await;
    let store = s.store();
    assert_eq!(
        steps(&store, &request.id.to_hex()),
        ["job_received", "job_rejected"]
    );
    assert!(store.verify().is_ok());
}

/// Tops the customer's prepaid credit up directly in the ledger file (node not running).
pub fn top_up(ledger: &Path, customer: &PublicKey, msat: u64) {
    let mut store = Store::open(ledger, Durability::Normal).unwrap();
    store
        .append(&top_up_event("topup-1", customer, msat))
        .unwrap();
    store.close().unwrap();
}

/// A manual payment of `msat` into the customer's prepaid credit, `key` its idempotency key
/// and reference.
pub fn top_up_event(key: &str, customer: &PublicKey, msat: u64) -> LedgerEvent {
    LedgerEvent::new(
        IdemKey::new(key).unwrap(),
        UnixMs(paydvm::node::now_ms()),
        EventBody::PaymentReceived(Payment {
            rail: Rail::Manual,
            asset: Asset::Lightning,
            reference: PaymentRef::new(key).unwrap(),
            linked: Vec::new(),
            amount: Msat::from_msat(msat),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Credit {
                pubkey: Pubkey::new(customer.to_hex()).unwrap(),
            },
        }),
    )
}

/// Operator float in the Lightning wallet, booked before the node starts (as `paydvm float add
/// lightning <msat>` on a stopped node does): refunds over Lightning reserve the fee cap from it.
pub fn float(ledger: &Path, msat: u64) {
    let mut store = Store::open(ledger, Durability::Normal).unwrap();
    store
        .append(&LedgerEvent::new(
            IdemKey::new("float-1").unwrap(),
            UnixMs(paydvm::node::now_ms()),
            EventBody::FloatAdded {
                asset: Asset::Lightning,
                amount: Msat::from_msat(msat),
                cause: paydvm_ledger::Cause::Operator {
                    note: "test float".into(),
                },
            },
        ))
        .unwrap();
    store.close().unwrap();
}

/// A customer with `keys` sends a 5050 `upper` job and gets its result; returns the request.
async fn upper_job_gets_its_result(s: &Setup, keys: &Keys) -> Event {
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys.clone();
    let request = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ABC");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_job_is_debited_and_runs() {
    let s = setup(1, "refund").await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 12_000);
    let node = s.start().await;
    let request = upper_job_gets_its_result(&s, &keys).await;
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    let credit = Account::Credit(Pubkey::new(keys.public_key().to_hex()).unwrap());
    assert_eq!(store.state().held(&credit), Msat::from_msat(7_000));
    assert_eq!(
        store.state().balance(&Account::Revenue).credits,
        Msat::from_msat(5_000)
    );
    let job = store
        .state()
        .job(&JobId::new(request.id.to_hex()).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(job.revenue, Msat::from_msat(5_000));
    assert!(store.verify().is_ok());
}

/// Issue 13, problem 9: the operator grants credit to a running node through its control
/// socket (`paydvm credit grant`), the customer's next job runs on it, and an adjustment never
/// takes credit below zero; each change is a `credit_adjusted` event caused by the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_grants_and_adjusts_credit_but_never_below_zero() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let keys = Keys::generate();
    let npub = keys.public_key().to_bech32().unwrap();
    let hex = keys.public_key().to_hex();
    let credit_cli =
        |args: &[&str]| crate::cli::paydvm_with_config(&s.config, &[&["credit"], args].concat());
    let (code, said) = credit_cli(&["grant", &npub, "5000", "--reason", "sorry for the outage"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("by the running node"), "{said}");

    upper_job_gets_its_result(&s, &keys).await;

    // Spent: nothing left to take back.
    let (code, said) = credit_cli(&["adjust", &hex, "-1", "--reason", "oops"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("below zero"), "{said}");
    let (code, said) = credit_cli(&["adjust", &hex, "3000", "--reason", "correction"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = credit_cli(&["adjust", &hex, "-3001", "--reason", "too much"]);
    assert_eq!(code, 1, "{said}");
    let (code, said) = credit_cli(&["adjust", &hex, "-1000", "--note", "partly back"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = credit_cli(&["grant", &hex, "7"]);
    assert_ne!(code, 0, "a change without a reason: {said}");
    node.shutdown().await;

    let store = s.store();
    let credit = Account::Credit(Pubkey::new(hex.clone()).unwrap());
    assert_eq!(store.state().held(&credit), Msat::from_msat(2_000));
    assert_eq!(
        store.state().balance(&Account::Float).signed(false),
        -7_000,
        "granted out of the operator's float"
    );
    let (head, _) = store.head();
    let notes: Vec<String> = (1..=head)
        .filter_map(|seq| store.event(seq).unwrap())
        .filter_map(|e| match e.event.body {
            EventBody::CreditAdjusted {
                cause: paydvm_ledger::Cause::Operator { note },
                ..
            } => Some(note),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["sorry for the outage", "correction", "partly back"]);
    assert!(store.verify().is_ok());
}

async fn failed_paid_job(then: &str) -> (Setup, Store, String, Event) {
    let s = setup(1, then).await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 5_000);
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys;
    let request = customer.request(5050, "abc", &[&["param", "mode", "fail"]]);
    customer.client.send_event(&request).await.unwrap();
    let fb = customer.wait_for(request.id, is_status("error")).await;
    let job = request.id.to_hex();
    // Paid from prepaid credit: whatever the policy, the credit comes back.
    wait_state(&node, &job, JobState::Credited).await;
    node.shutdown().await;
    let store = s.store();
    assert!(store.verify().is_ok());
    (s, store, job, fb)
}

/// Issue 10, problem 7: a job paid from prepaid credit that fails under a "refund" policy gets its
/// credit back in the same group that fails it; there is no payment to refund it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_paid_from_credit_gets_the_credit_back_even_when_the_policy_says_refund() {
    let (_s, store, job, fb) = failed_paid_job("refund").await;
    assert_eq!(
        tag_values(&fb, "status").unwrap(),
        ["error", "failed on request (mode `fail`)"]
    );
    assert_eq!(job_state(&store, &job), JobState::Credited);
    assert!(store.state().refunds().next().is_none(), "no refund owed");
    let steps: Vec<&str> = steps(&store, &job);
    assert_eq!(
        steps,
        [
            "job_received",
            "job_queued",
            "processing_started",
            "processing_failed",
            "credit_granted"
        ]
    );
    let customer = store
        .state()
        .job(&paydvm_ledger::JobId::new(&job).unwrap())
        .unwrap()
        .customer
        .clone();
    assert_eq!(
        store
            .state()
            .held(&paydvm_ledger::Account::Credit(customer)),
        Msat::from_msat(5_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_paid_job_is_credited_when_the_policy_says_credit() {
    let (_s, store, job, _) = failed_paid_job("credit").await;
    assert_eq!(job_state(&store, &job), JobState::Credited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_request_via_two_relays_is_one_job() {
    let s = setup(2, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, "a b", &[]);
    // The same signed event, to each relay separately.
    customer
        .client
        .send_event_to([s.urls[0].clone()], &request)
        .await
        .unwrap();
    customer
        .client
        .send_event_to([s.urls[1].clone()], &request)
        .await
        .unwrap();
    // And once more straight into the core, as a restart's catch-up would.
    node.submit(request.clone());
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "2 words");
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.shutdown().await;

    let store = s.store();
    assert_eq!(store.state().jobs().count(), 1);
    let results = customer
        .client
        .fetch_events(
            Filter::new().kind(Kind::Custom(6001)).event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    let steps: Vec<&str> = types(&store, &request.id.to_hex())
        .into_iter()
        .filter(|t| *t == "job_received" || *t == "result_published")
        .collect();
    assert_eq!(steps, ["job_received", "result_published"]);
}

#[test]
fn demo_runs_offline_and_prints_trails() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run paydvm demo");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("paydvm demo did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "demo failed: {out}\n{err}");
    // Eight jobs and the subscriber's subscription.
    assert_eq!(out.matches("\n# ").count(), 9, "{out}");
    assert_eq!(out.matches("timeline (").count(), 9, "{out}");
    for step in [
        "subscription_cancelled",
        "subscription_refund_due",
        "entitlement_granted",
    ] {
        assert!(out.contains(step), "{step} missing: {out}");
    }
    for state in [
        "state succeeded",
        "state refunded",
        "refund_started",
        "refund_settled",
        "refund_zap_receipt",
        "zap receipt ",
        "the refund was a zap: the customer's wallet published zap receipt ",
        "node paid 5000 msat to the customer's wallet (payment hash ",
        "state quoted",
        "customer got result (kind 6001): \"5 words\"",
        "customer got result (kind 6050): \"HELLO PAYDVM\"",
        "customer got feedback: payment-required (amount 5000 msat) with invoice lnbcrt50n1",
        "customer pays the invoice (5000 msat, payment hash ",
        "customer got result (kind 6050): \"gninthgil\"",
        "customer got result (kind 6050): \"ZAPPED\"",
        "zapper published zap receipt ",
        "via zap, ref ",
        "customer NutZaps 5 sat at http://127.0.0.1:",
        "customer got result (kind 6050): \"ECASH\"",
        "customer claimed the ecash refund NutZap with their 10019 key: 5 sat",
        "ledger OK: ",
    ] {
        assert!(out.contains(state), "missing {state:?} in:\n{out}");
    }
    assert_eq!(out.matches("state succeeded").count(), 5);
    assert_eq!(out.matches("state refunded").count(), 2);
    assert!(out.contains("ws://127.0.0.1:"));
    for secret in ["nsec", "secret"] {
        assert!(!out.to_lowercase().contains(secret), "{out}");
        assert!(!err.to_lowercase().contains(secret), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_interrupted_job_and_serves_requests_sent_while_stopped() {
    let s = setup(1, "refund").await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 5_000);
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys.clone();

    // A paid job still running when the node stops.
    let node = s.start().await;
    let slow = customer.request(
        5050,
        "slow",
        &[&["param", "mode", "sleep"], &["param", "ms", "1500"]],
    );
    customer.client.send_event(&slow).await.unwrap();
    let slow_job = slow.id.to_hex();
    wait_state(&node, &slow_job, JobState::Processing).await;
    node.shutdown().await;
    assert_eq!(job_state(&s.store(), &slow_job), JobState::Processing);

    // A request published while the node is down.
    let later = customer.request(5001, "sent while stopped", &[]);
    customer.client.send_event(&later).await.unwrap();

    let node = s.start().await;
    let result = customer
        .wait_for(slow.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "slow");
    let caught_up = customer
        .wait_for(later.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(caught_up.content, "3 words");
    wait_state(&node, &slow_job, JobState::Succeeded).await;
    wait_state(&node, &later.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    let steps: Vec<&str> = steps(&store, &slow_job);
    assert_eq!(
        steps,
        [
            "job_received",
            "job_queued",
            "processing_started",
            "processing_failed",
            "job_queued",
            "processing_started",
            "result_published"
        ]
    );
    let record = store
        .state()
        .job(&JobId::new(slow_job.clone()).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    assert_eq!(store.state().jobs().count(), 2);
    assert!(store.state().effects().all(|e| e.outcome.is_some()));
    let results = customer
        .client
        .fetch_events(
            Filter::new().kind(Kind::Custom(6050)).event(slow.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_by_the_customer_cancels_a_quoted_job() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();
    customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let job = request.id.to_hex();

    // Someone else's deletion changes nothing.
    let stranger = EventBuilder::new(Kind::EventDeletion, "")
        .tags([Tag::event(request.id)])
        .sign_with_keys(&Keys::generate())
        .unwrap();
    customer.client.send_event(&stranger).await.unwrap();
    let deletion = EventBuilder::new(Kind::EventDeletion, "")
        .tags([Tag::event(request.id)])
        .sign_with_keys(&customer.keys)
        .unwrap();
    customer.client.send_event(&deletion).await.unwrap();
    wait_state(&node, &job, JobState::Cancelled).await;
    node.shutdown().await;

    let store = s.store();
    let trail = store.audit(&job).unwrap().unwrap();
    let cancel = trail
        .events
        .iter()
        .find(|e| e.event.type_name() == "job_cancelled")
        .unwrap();
    assert_eq!(cancel.key, format!("cancel:{}", deletion.id.to_hex()));
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_request_is_rejected_with_error_feedback() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = EventBuilder::new(Kind::Custom(5001), "")
        .tags([Tag::parse(["i", "no type"]).unwrap()])
        .sign_with_keys(&customer.keys)
        .unwrap();
    customer.client.send_event(&request).await.unwrap();
    let fb = customer.wait_for(request.id, is_status("error")).await;
    assert_eq!(
        tag_values(&fb, "status").unwrap(),
        ["error", "input tag without a type"]
    );
    assert_eq!(
        tag_values(&fb, "p").unwrap()[0],
        customer.keys.public_key().to_hex()
    );
    wait_state(&node, &request.id.to_hex(), JobState::Rejected).await;
    node.shutdown().await;
    assert!(s.store().verify().is_ok());
}

/// The refusal of an encrypted request that decrypts but does not parse quotes what was hidden
/// (here an input type): it goes encrypted to the customer, nothing of it in clear on the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_encrypted_request_is_refused_encrypted() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let scheme = Encryption::Nip44;
    let inner = r#"[["i","a b c","private-type"]]"#;
    let request = send_encrypted(&customer, scheme, &us, inner).await;
    let fb = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(7000))
        .await;
    wait_state(&node, &request.id.to_hex(), JobState::Rejected).await;
    node.shutdown().await;

    assert!(tag_values(&fb, "status").is_none(), "{fb:?}");
    assert!(tag_values(&fb, "encrypted").is_some(), "{fb:?}");
    assert!(!fb.as_json().contains("private-type"), "{fb:?}");
    let plain = scheme.decrypt(&customer.keys, &us, &fb.content).unwrap();
    let tags: Vec<Vec<String>> = serde_json::from_str(&plain).unwrap();
    assert_eq!(
        tags[0],
        ["status", "error", r#"unknown input type "private-type""#]
    );
    assert!(s.store().verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_effects_are_re_sent_unchanged_at_start() {
    // The node's only relay is down during the first run.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = RelayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap();
    let s = Setup::build(
        Fixture::builder(test_node("refund", ""))
            .relays(0)
            .other_relays(std::slice::from_ref(&url)),
    )
    .await;
    let customer = Keys::generate();
    let request = EventBuilder::new(Kind::Custom(5001), "")
        .tags([Tag::parse(["i", "x y z w", "text"]).unwrap()])
        .sign_with_keys(&customer)
        .unwrap();
    let node = s.start().await;
    node.submit(request.clone());
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;
    let store = s.store();
    let pending: Vec<(String, String)> = store
        .state()
        .effects()
        .filter(|e| e.outcome.is_none())
        .map(|e| (e.effect.to_string(), e.payload.clone()))
        .collect();
    assert_eq!(pending.len(), 2, "feedback and result wait for a relay");
    let result_id = store
        .state()
        .job(&JobId::new(request.id.to_hex()).unwrap())
        .unwrap()
        .result_event
        .clone()
        .unwrap();
    drop(store);

    // The relay comes up on that port; the next start delivers the stored events.
    let relay = LocalRelay::new(
        RelayBuilder::default()
            .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(port),
    );
    relay.run().await.unwrap();
    let node = s.start().await;
    let client = Client::default();
    client.add_relay(url.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let want = EventId::from_hex(result_id.as_str()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let result = loop {
        let found = client
            .fetch_events(Filter::new().id(want), Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(e) = found.first() {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "result never re-sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(result.content, "4 words");
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.shutdown().await;

    let store = s.store();
    for (effect, payload) in &pending {
        let record = store
            .state()
            .effect(&paydvm_ledger::EffectId::new(effect.clone()).unwrap())
            .unwrap();
        assert!(record.outcome.is_some(), "effect {effect} delivered");
        assert_eq!(&record.payload, payload);
    }
    // Still one job, one result.
    assert_eq!(store.state().jobs().count(), 1);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_quote_expires() {
    let s = setup_with(1, "refund", "[quote]\nexpiry_secs = 1\n").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();
    customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    wait_state(&node, &request.id.to_hex(), JobState::Expired).await;
    node.shutdown().await;
    let store = s.store();
    let steps: Vec<&str> = steps(&store, &request.id.to_hex());
    assert_eq!(steps, ["job_received", "quote_issued", "quote_expired"]);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_also_go_to_the_relays_the_customer_asked_for() {
    let s = setup(1, "refund").await;
    let (_extra, extra_url) = start_relay().await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, "a b c", &[&["relays", extra_url.as_str()]]);
    customer.client.send_event(&request).await.unwrap();
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    let other = Client::default();
    other.add_relay(extra_url.clone()).await.unwrap();
    other.try_connect(Duration::from_secs(5)).await;
    let there = other
        .fetch_events(
            Filter::new().kind(Kind::Custom(6001)).event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(there.len(), 1);
    assert_eq!(there.first().unwrap().content, "3 words");
}

/// Rewrites a fixture's config so that relays customers name may not be on this machine (the
/// fixture allows it: its relays are all on 127.0.0.1).
pub fn refuse_customer_loopback(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let strict = text.replace(
        "customer_relay_loopback = true",
        "customer_relay_loopback = false",
    );
    assert_ne!(text, strict);
    std::fs::write(config, strict).unwrap();
}

/// A listener on 127.0.0.1 that counts the connections made to it, standing for a service on
/// the node's own host that a customer names as a relay.
pub async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, count)
}

/// A relay a customer names on the node's own host is never contacted on its say-so: the
/// fixture allows loopback (`customer_relay_loopback`, for the test above), this node does not.
/// The result reaches our relay; the named address sees no connection at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_the_customer_names_on_our_own_host_is_never_contacted() {
    let s = setup(1, "refund").await;
    refuse_customer_loopback(&s.config);
    let (inside, connections) = counting_listener().await;
    let node = s.start().await;
    run_naming_relay(&s, node, &inside).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// One job whose request names `relay`, to its result on our relay; then the node is stopped
/// (after a second: publishing to every chosen relay starts together, a connection shows by
/// then).
async fn run_naming_relay(s: &Setup, node: NodeHandle, relay: &str) {
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, "a b c", &[&["relays", relay]]);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "3 words");
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.shutdown().await;
}

/// A relay a customer names by a name that resolves to the node's own host is never contacted
/// either: the name is resolved by the node (here by a scripted resolver: "relay.customer.example"
/// is 127.0.0.1) and the answer checked before anything connects. With loopback allowed, the same
/// name is connected to, on the resolved address: the name was looked up, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_named_by_a_name_that_resolves_to_our_own_host_is_never_contacted() {
    for loopback in [false, true] {
        let s = setup(1, "refund").await;
        if !loopback {
            refuse_customer_loopback(&s.config);
        }
        let (inside, connections) = counting_listener().await;
        let port = inside.rsplit(':').next().unwrap().to_owned();
        let named = format!("ws://relay.customer.example:{port}");
        let dns = paydvm::payments::lnurl_http::ScriptedDns::new()
            .answer("relay.customer.example", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let dns = Arc::new(dns);
        let node = s
            .start_with(NodeOptions {
                relay_dns: Some(dns.clone()),
                ..NodeOptions::default()
            })
            .await;
        run_naming_relay(&s, node, &named).await;
        assert!(dns.lookups() >= 1, "the name was looked up");
        let made = connections.load(Ordering::SeqCst);
        if loopback {
            assert!(made >= 1, "allowed, the resolved address is connected to");
        } else {
            assert_eq!(made, 0, "refused: nothing connects to our own host");
        }
    }
}

/// `tags` signed by `keys` as a request of `kind` with `content`.
fn signed(keys: &Keys, kind: u16, content: &str, tags: &[&[&str]]) -> Event {
    EventBuilder::new(Kind::Custom(kind), content)
        .tags(tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap()))
        .sign_with_keys(keys)
        .unwrap()
}

/// Sends a 5001 request to `us` whose tags `inner` (a JSON array of tags) are encrypted.
async fn send_encrypted(
    customer: &Customer,
    scheme: Encryption,
    us: &PublicKey,
    inner: &str,
) -> Event {
    let hidden = scheme.encrypt(&customer.keys, us, inner).unwrap();
    let request = signed(
        &customer.keys,
        5001,
        &hidden,
        &[&["p", &us.to_hex()], &["encrypted"]],
    );
    customer.client.send_event(&request).await.unwrap();
    request
}

async fn encrypted_request_gets_an_encrypted_result(scheme: Encryption) {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let request = send_encrypted(&customer, scheme, &us, r#"[["i","a b c","text"]]"#).await;
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    // The result as stored on the relay.
    let results = customer
        .client
        .fetch_events(
            Filter::new().kind(Kind::Custom(6001)).event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    let result = results.first().unwrap();
    assert_eq!(result.pubkey, us);
    assert!(tag_values(result, "encrypted").is_some(), "{result:?}");
    assert!(tag_values(result, "i").is_none(), "inputs leak: {result:?}");
    assert!(!result.content.contains("words"));
    assert_eq!(Encryption::detect(&result.content), scheme);
    let plain = scheme
        .decrypt(&customer.keys, &us, &result.content)
        .unwrap();
    assert_eq!(plain, "3 words");
    assert!(s.store().verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_nip44_request_gets_an_encrypted_result() {
    encrypted_request_gets_an_encrypted_result(Encryption::Nip44).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_nip04_request_gets_an_encrypted_result() {
    encrypted_request_gets_an_encrypted_result(Encryption::Nip04).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_burst_then_a_good_request_is_served() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let us = node.pubkey();
    let other = Keys::generate().public_key();
    let mut customer = Customer::connect(&s.urls).await;
    let k = &customer.keys;

    let huge = "x".repeat(Limit::TagValueBytes.max() + 1);
    let many_params: Vec<Vec<String>> = (0..=Limit::Params.max())
        .map(|i| vec!["param".into(), format!("k{i}"), "v".into()])
        .collect();
    let many_inputs: Vec<Vec<String>> = (0..=Limit::Inputs.max())
        .map(|i| vec!["i".into(), format!("w{i}"), "text".into()])
        .collect();
    let owned = |tags: &[Vec<String>]| -> Event {
        EventBuilder::new(Kind::Custom(5001), "")
            .tags(tags.iter().map(|t| Tag::parse(t.clone()).unwrap()))
            .sign_with_keys(k)
            .unwrap()
    };
    let not_tags = Encryption::Nip44
        .encrypt(k, &us, r#"{"not":"a tag list"}"#)
        .unwrap();
    let for_other = Encryption::Nip44
        .encrypt(k, &other, r#"[["i","a","text"]]"#)
        .unwrap();
    let us_hex = us.to_hex();
    let other_hex = other.to_hex();
    let i = ["i", "a b", "text"];

    // Malformed requests addressed to us (or to anyone): each gets an `error` feedback.
    let answered = vec![
        signed(k, 5050, "", &[&i, &["bid", "abc"]]),
        signed(k, 5050, "", &[&i, &["bid", "-5"]]),
        signed(k, 5050, "", &[&i, &["bid", ""]]),
        signed(k, 5050, "", &[&i, &["bid", "1000"], &["bid", "2000"]]),
        signed(k, 5001, "", &[&["i"]]),
        signed(k, 5001, "", &[&["i", "x"]]),
        signed(k, 5001, "", &[&["i", "x", "bogus"]]),
        signed(k, 5001, "", &[&["i", "zz", "event"]]),
        signed(k, 5001, "", &[&i, &["param", "mode"]]),
        signed(k, 5001, "", &[&i, &["param", "mode", &huge]]),
        owned(&many_params),
        owned(&many_inputs),
        signed(k, 5001, "", &[&i, &["output"]]),
        signed(k, 5001, "", &[&i, &["p", "not-hex"]]),
        signed(k, 5001, "garbage", &[&["p", &us_hex], &["encrypted"]]),
        signed(k, 5001, "abc?iv=xyz", &[&["p", &us_hex], &["encrypted"]]),
        signed(k, 5050, "!!!", &[&["p", &us_hex], &["encrypted"]]),
        signed(k, 5001, &not_tags, &[&["p", &us_hex], &["encrypted"]]),
    ];
    // Not ours: ignored.
    let ignored = vec![
        signed(k, 5001, &for_other, &[&["p", &other_hex], &["encrypted"]]),
        signed(k, 5001, "garbage", &[&["p", &other_hex], &["encrypted"]]),
    ];
    for e in answered.iter().chain(&ignored) {
        customer.client.send_event(e).await.unwrap();
    }
    let good = customer.request(5001, "still here", &[]);
    customer.client.send_event(&good).await.unwrap();

    let result = customer
        .wait_for(good.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "2 words");
    let keys = customer.keys.clone();
    for e in &answered {
        let fb = customer
            .wait_for(e.id, |r| {
                r.kind != Kind::Custom(7000)
                    || any_status(r, &keys, &us).as_deref() == Some("error")
            })
            .await;
        assert_eq!(
            fb.kind,
            Kind::Custom(7000),
            "a result for a malformed request: {fb:?}"
        );
        assert_eq!(
            tag_values(&fb, "p").unwrap()[0],
            customer.keys.public_key().to_hex()
        );
        wait_state(&node, &e.id.to_hex(), JobState::Rejected).await;
    }
    // The node still answers after the burst.
    wait_state(&node, &good.id.to_hex(), JobState::Succeeded).await;
    for e in &ignored {
        assert!(node.job(&e.id.to_hex()).await.is_none());
    }
    node.shutdown().await;

    let ids: Vec<EventId> = answered.iter().chain(&ignored).map(|e| e.id).collect();
    let replies = customer
        .client
        .fetch_events(
            Filter::new()
                .kinds([Kind::Custom(6001), Kind::Custom(6050), Kind::Custom(7000)])
                .events(ids),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    for r in replies.iter() {
        assert_eq!(
            r.kind,
            Kind::Custom(7000),
            "a result for a malformed request"
        );
        assert_eq!(any_status(r, &keys, &us).as_deref(), Some("error"), "{r:?}");
        let to: Vec<EventId> = r.tags.event_ids().copied().collect();
        assert!(
            !ignored.iter().any(|e| to.contains(&e.id)),
            "a reply to a request for another provider"
        );
    }
    assert_eq!(replies.len(), answered.len());
    let store = s.store();
    assert_eq!(store.state().jobs().count(), answered.len() + 1);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_to_deliver_fails_the_job_and_gives_the_credit_back() {
    let s = setup(1, "refund").await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 5_000);
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys;
    // 40 KiB in, 40 KiB out, plus the request embedded in the result: over the 60 KiB cap.
    let text = "abcdefgh".repeat(5 * 1024);
    let request = customer.request(5050, &text, &[]);
    customer.client.send_event(&request).await.unwrap();
    let fb = customer.wait_for(request.id, is_status("error")).await;
    let reason = tag_values(&fb, "status").unwrap().remove(1);
    assert!(reason.contains("too large to deliver"), "{reason}");
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Credited).await;
    node.shutdown().await;
    let store = s.store();
    let steps: Vec<&str> = steps(&store, &job);
    assert_eq!(
        steps,
        [
            "job_received",
            "job_queued",
            "processing_started",
            "processing_failed",
            // Paid from prepaid credit: the credit comes back at once.
            "credit_granted"
        ]
    );
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_status_read_a_running_nodes_ledger_by_its_config() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5001, "one two", &[]);
    customer.client.send_event(&request).await.unwrap();
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Succeeded).await;

    let paydvm = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paydvm"))
            .args(args)
            .output()
            .expect("run paydvm")
    };
    let config = s.config.to_str().unwrap();
    let audit = paydvm(&["audit", &job, "--config", config, "--json"]);
    assert!(audit.status.success(), "{audit:?}");
    let trail: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(trail["job"]["state"], "succeeded", "{trail}");
    let status = paydvm(&["status", "--config", config, "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["jobs_by_state"]["succeeded"], 1, "{status}");
    let missing = paydvm(&["status", "--config", "/nonexistent/paydvm.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_relay_missed_is_re_sent_in_the_same_run() {
    // The node's relay is not up yet: the request is handed over directly, the result cannot
    // be published, and it must reach the relay once the relay is up, without a restart.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let url = RelayUrl::parse(&format!("ws://{port}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let options = paydvm::node::NodeOptions {
        resend_after: Duration::from_secs(1),
        ..Default::default()
    };
    let node = Node::start_with(Config::load(&config).unwrap(), options)
        .await
        .unwrap();
    let keys = Keys::generate();
    let request = signed(&keys, 5001, "", &[&["i", "one two three", "text"]]);
    node.submit(request.clone());
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Succeeded).await;

    let (_relay, _) = paydvm::node::local_relay::start_local_relay_on(port)
        .await
        .unwrap();
    let mut customer = Customer::connect(std::slice::from_ref(&url)).await;
    customer.keys = keys;
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "3 words");
    let store_path = dir.path().join("paydvm.db");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let store = Store::open_read_only(&store_path).unwrap();
        if delivered_effects(&store, &job) == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_from_its_stored_request_when_no_relay_has_it() {
    let s = setup(1, "refund").await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 5_000);
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys.clone();
    let request = customer.request(
        5050,
        "kept",
        &[&["param", "mode", "sleep"], &["param", "ms", "1500"]],
    );
    customer.client.send_event(&request).await.unwrap();
    customer.wait_for(request.id, is_status("processing")).await;
    let job = request.id.to_hex();
    node.shutdown().await;
    assert_eq!(job_state(&s.store(), &job), JobState::Processing);

    // A new, empty relay: nobody holds the request any more.
    let (_fresh, fresh_url) = start_relay().await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    let moved = text.replace(
        &format!("{:?}", s.urls[0].to_string()),
        &format!("{:?}", fresh_url.to_string()),
    );
    assert_ne!(text, moved);
    std::fs::write(&s.config, moved).unwrap();
    let mut customer = Customer::connect(std::slice::from_ref(&fresh_url)).await;
    customer.keys = keys;
    let node = s.start().await;
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "kept");
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.attempts, 2);
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    assert!(types(&store, &job).contains(&"processing_failed"));
    assert!(store.verify().is_ok());
}

/// `results.processing_feedback_after_secs = 1`: a job done at once gets its result alone (no
/// `processing` feedback on the relay or in the ledger); a job still running after the wait gets
/// its feedback, then its result.
#[tokio::test]
async fn a_processing_feedback_that_waits_goes_only_to_jobs_still_running() {
    let wait = "[results]\nprocessing_feedback_after_secs = 1\n";
    let s = setup_with(1, "refund", wait).await;
    let keys = Keys::generate();
    top_up(&s.ledger(), &keys.public_key(), 5_000);
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    customer.keys = keys.clone();
    let fast = customer.request(5001, "one two three", &[]);
    customer.client.send_event(&fast).await.unwrap();
    customer
        .wait_for(fast.id, |e| e.kind == Kind::Custom(6001))
        .await;
    let sleep = [
        &["param", "mode", "sleep"][..],
        &["param", "ms", "3000"][..],
    ];
    let slow = customer.request(5050, "slow", &sleep);
    customer.client.send_event(&slow).await.unwrap();
    let feedback = customer.wait_for(slow.id, is_status("processing")).await;
    let result = customer
        .wait_for(slow.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert!(feedback.created_at <= result.created_at);
    // The slow job's feedback came a second after its start, past the fast job's wait too.
    let fast_feedback = customer
        .seen
        .iter()
        .filter(|e| e.tags.event_ids().any(|id| *id == fast.id))
        .any(is_status("processing"));
    assert!(!fast_feedback, "the fast job got a processing feedback");
    wait_state(&node, &slow.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    assert_eq!(delivered_effects(&store, &fast.id.to_hex()), 1);
    assert_eq!(delivered_effects(&store, &slow.id.to_hex()), 2);
    assert!(store.verify().is_ok());
}
