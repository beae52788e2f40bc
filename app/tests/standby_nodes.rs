//! Three nodes, one PostgreSQL ledger (issue 14): three `paydvm run --standby` processes with the
//! same keys, node directory and database, one relay. One serves; the others wait for its
//! locks. The serving node is killed with SIGKILL in the middle of 1 000 jobs (free, paid from
//! prepaid credit, slow, failing, paid by Lightning invoice over a real LNbits, failing after
//! such a payment and refunded over Lightning to the customer's LNbits invoice, paid by zaps
//! through an LNURL-pay zapper) and started
//! again as a standby: another one takes over, and every job ends once: one result, its credit
//! back or one refund paid, never charged, paid, credited or refunded twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm_ledger::{
    Account, Asset, Durability, JobId, JobState, LedgerStore, Msat, Pubkey, RefundState,
    StoreOptions,
};
use paydvm_ledger_pg::throwaway::{ClusterOptions, ThrowawayCluster};
use paydvm_ledger_pg::{PgStore, NODE_LOCK_KEY};

use crate::cashu_mint::TestMint;
use crate::cli::{paydvm, stderr, stdout};
use crate::crash_node::{logs, RunningNode};
use crate::lightning::quoted_invoice;
use crate::lnbits::{add_lnbits, add_lnbits_admin, Lnbits, Wallet};
use crate::node::{is_status, start_relay, test_node, top_up_event, Customer};
use crate::pg_node::{fresh_database_async, point_at};
use crate::standby_ecash::{
    booked_at_mints, claim_nutzap_refunds, claim_token_refunds, ecash_payers, node_p2pk,
    wallet_balance_in_database, NutzapPayer, TokenPayer, NUTZAP_JOBS, PRICE_SAT, TOKEN_JOBS,
};
use paydvm_testkit::fixture::node_pubkey;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

/// Customers paying from prepaid credit, and their jobs each.
const CUSTOMERS: usize = 5;
const JOBS_PER_CUSTOMER: usize = 170;
/// Jobs of the customer who pays each quote's invoice over Lightning (LNbits); every fifth
/// fails after it is paid and is refunded to the customer's own LNbits invoice.
const INVOICED_JOBS: usize = 100;
const REFUNDED_JOBS: usize = INVOICED_JOBS / 5;
/// Jobs of the customer who zaps each quote (the node's lud16 is the test's zapper).
const ZAPPED_JOBS: usize = 50;
/// Jobs paid in ecash (`standby_ecash`): tokens in requests and NutZaps; every fourth fails and
/// is refunded in ecash.
const ECASH_JOBS: usize = TOKEN_JOBS + NUTZAP_JOBS;
const ECASH_REFUNDS: usize = ECASH_JOBS / 4;
/// Jobs of a subscriber on its tier's quota, half before the kill, half after; the period is
/// paid by zapping the subscribe request (7001).
const SUBSCRIBED_JOBS: usize = 40;
const TIER_MSAT: u64 = 20_000;
const JOBS: usize =
    CUSTOMERS * JOBS_PER_CUSTOMER + INVOICED_JOBS + ZAPPED_JOBS + ECASH_JOBS + SUBSCRIBED_JOBS;
/// The test node's price of a 5050 job.
const PRICE_MSAT: u64 = 5_000;
const TOP_UP_MSAT: u64 = PRICE_MSAT * JOBS_PER_CUSTOMER as u64;
/// The payer's LNbits balance at the start, sat: more than it needs.
const PAYER_SATS: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(240);

/// How a job should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// One result on the relay (charged once if it was paid).
    Result,
    /// It failed; what it held goes back to the customer's credit.
    CreditBack,
    /// It failed after an invoice paid it; the customer's refund invoice is paid once.
    Refund,
}

/// What job `i` of a customer asks for, so that every kind of ending is in the mix.
fn job_of(customer: &Customer, i: usize) -> (Event, Ending) {
    let text = format!("job {i} of {}", customer.keys.public_key().to_hex());
    match i % 10 {
        0 | 5 => (customer.request(5001, &text, &[]), Ending::Result),
        1 => (
            customer.request(5050, &text, &[&["param", "mode", "fail"]]),
            Ending::CreditBack,
        ),
        2 | 7 => (
            customer.request(
                5050,
                &text,
                &[&["param", "mode", "sleep"], &["param", "ms", "300"]],
            ),
            Ending::Result,
        ),
        _ => (
            customer.request(5050, &text, &[&["param", "mode", "upper"]]),
            Ending::Result,
        ),
    }
}

/// `node1.toml` … `node3.toml`: one node directory (keys, policy, the zapper as lud16) and
/// database, each node with a `state_dir` of its own (as on three machines), so only the
/// database's lock keeps two of them from serving at once.
fn node_configs(
    dir: &Path,
    relay: &RelayUrl,
    url: &str,
    zapper: &Zapper,
    mint: &str,
) -> Vec<PathBuf> {
    // The payer holds up to 50 quotes open at once.
    let base = test_node("refund", "[admission]\nmax_pending_quotes_per_pubkey = 100")
        .node_setting("config_problems = \"warn\"")
        .trust_mint(mint)
        .cashu_setting("mint_requests_per_minute = 0")
        // The subscriptions test's tier (20 000 msat an hour), with a quota for 40 jobs.
        .policy(&crate::subscriptions::TIER.replace("quota = 2", "quota = 40"))
        .node_setting(format!("lud16 = \"{}\"", zapper.lud16()))
        .node_setting("lnurl_http_loopback = true")
        .relays(std::slice::from_ref(relay))
        .write(dir)
        .unwrap();
    with_state_dirs(&base, url, 3)
}

/// `node1.toml` … `node<n>.toml`: `base` on the database `url`, each with a `state_dir` of its
/// own; `base` is then pointed at the database too.
pub(crate) fn with_state_dirs(base: &Path, url: &str, n: usize) -> Vec<PathBuf> {
    let configs = paydvm_testkit::fixture::on_database_each(base, url, n, "node", "state").unwrap();
    point_at(base, url, None);
    configs
}

/// Prepaid credit for each customer, booked before any node starts.
fn top_up(url: &str, customers: &[PublicKey]) {
    let mut store = PgStore::open(url, &StoreOptions::everything(Durability::Full)).unwrap();
    for (i, customer) in customers.iter().enumerate() {
        let event = top_up_event(&format!("topup-{i}"), customer, TOP_UP_MSAT);
        store.append(&event).unwrap();
    }
    store.close().unwrap();
}

pub(crate) fn read(url: &str) -> PgStore {
    PgStore::open(
        url,
        &StoreOptions::everything(Durability::Normal).read_only(),
    )
    .unwrap()
}

/// How many jobs have ended, read from the database while the nodes run.
pub(crate) fn ended_jobs(store: &PgStore) -> usize {
    let counts = store.job_counts().unwrap();
    counts
        .iter()
        .filter(|(state, _)| {
            matches!(
                state,
                JobState::Succeeded | JobState::Credited | JobState::Refunded
            )
        })
        .map(|(_, n)| *n as usize)
        .sum()
}

/// How many replies wait to be published.
pub(crate) fn undelivered(store: &PgStore) -> usize {
    store
        .state()
        .effects()
        .filter(|e| e.outcome.is_none())
        .count()
}

/// Reads the database (all of it) until `done` holds, or fails saying `what` did not happen.
pub(crate) async fn poll_until<F>(url: &str, dir: &Path, what: &str, done: F)
where
    F: Fn(&PgStore) -> bool + Clone + Send + 'static,
{
    let url = url.to_owned();
    poll(dir, what, WAIT, move || done(&read(&url))).await
}

/// Asks `done` (blocking: it reads a store) until it holds, or fails after `within` saying
/// `what` did not happen, with the nodes' logs in `dir`.
pub(crate) async fn poll<F>(dir: &Path, what: &str, within: Duration, done: F)
where
    F: Fn() -> bool + Clone + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let done_now = done.clone();
        let now = tokio::task::spawn_blocking(done_now).await.unwrap();
        if now {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never: {what}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The run (1-based, as its log files are named) that says it is serving, among `runs`; waits
/// for one. Panics if two do.
pub(crate) async fn serving(dir: &Path, runs: &[u32]) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up: Vec<u32> = runs
            .iter()
            .copied()
            .filter(|run| {
                std::fs::read_to_string(dir.join(format!("run{run}.out")))
                    .is_ok_and(|out| out.contains("running"))
            })
            .collect();
        assert!(up.len() <= 1, "two nodes serve at once: {up:?}");
        if let [run] = up[..] {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node started serving\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The customer without credit: each of its jobs is quoted an invoice, paid from its LNbits
/// wallet.
struct Payer {
    customer: Customer,
    wallet: Wallet,
}

impl Payer {
    /// Sends its jobs `range`: `upper`, except every fifth, which fails and names an invoice of
    /// the customer's wallet for the price as its refund address.
    async fn send(&self, lnbits: &Lnbits, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
        let mut sent = Vec::new();
        for i in range {
            let text = format!("invoiced job {i}");
            let (request, ending) = if i % 5 == 4 {
                let refund_to = lnbits.invoice(&self.wallet, PRICE_MSAT / 1_000).await;
                let tags: [&[&str]; 2] = [&["param", "mode", "fail"], &["refund", &refund_to]];
                (self.customer.request(5050, &text, &tags), Ending::Refund)
            } else {
                let tags: [&[&str]; 1] = [&["param", "mode", "upper"]];
                (self.customer.request(5050, &text, &tags), Ending::Result)
            };
            self.customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, ending));
        }
        sent
    }

    /// Pays the invoice quoted for each of `jobs`, waiting for each quote on the relay.
    async fn pay(&self, lnbits: &Lnbits, jobs: &[(EventId, Ending)]) {
        for (id, _) in jobs {
            let quote = quote_of(&self.customer, *id).await;
            let invoice = quoted_invoice(&quote, &id.to_hex());
            let paid = lnbits.pay(&self.wallet, invoice.as_str()).await;
            assert_eq!(paid["status"], "success", "{paid}");
        }
    }
}

/// The customer who pays by zapping each quote through the node's lud16 (the zapper).
struct Zapping {
    customer: Customer,
    zapper: Zapper,
    /// The node's key, which the zaps name as their recipient.
    node: PublicKey,
    relays: Vec<RelayUrl>,
}

impl Zapping {
    /// A customer on `relay`, and a zapper taking zaps for the node key of `dir` (created if
    /// missing).
    async fn start(dir: &Path, relay: &RelayUrl) -> Zapping {
        let node = node_pubkey(dir).unwrap();
        Zapping {
            customer: Customer::connect(std::slice::from_ref(relay)).await,
            zapper: Zapper::start(ZapperOptions::new("dvm", node))
                .await
                .unwrap(),
            node,
            relays: vec![relay.clone()],
        }
    }

    /// Sends its jobs `range` (`upper`).
    async fn send(&self, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
        let mut sent = Vec::new();
        for i in range {
            let text = format!("zapped job {i}");
            let request = self
                .customer
                .request(5050, &text, &[&["param", "mode", "upper"]]);
            self.customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, Ending::Result));
        }
        sent
    }

    /// A subscriber to the tier, its period paid by a zap on its 7001, with our 7003 receipt.
    async fn subscriber(&self) -> (Customer, EventId) {
        let (mut customer, request, _) =
            crate::subscriptions::subscribed(&self.relays, &self.node).await;
        let order = ZapOrder {
            lud16: &self.zapper.lud16(),
            http_loopback: true,
            recipient: self.node,
            target: request.id,
            amount: Msat::from_msat(TIER_MSAT),
            relays: &self.relays,
        };
        let invoice = request_zap_invoice(&customer.keys, &order).await.unwrap();
        self.zapper.settle(&invoice.bolt11).await.unwrap();
        customer
            .wait_for(request.id, |e| e.kind == Kind::Custom(7003))
            .await;
        (customer, request.id)
    }

    /// Zaps the quote of each of `jobs` with its price; the zapper publishes each receipt.
    async fn zap(&self, jobs: &[(EventId, Ending)]) {
        for (id, _) in jobs {
            let quote = quote_of(&self.customer, *id).await;
            let order = ZapOrder {
                lud16: &self.zapper.lud16(),
                http_loopback: true,
                recipient: self.node,
                target: quote.id,
                amount: Msat::from_msat(PRICE_MSAT),
                relays: &self.relays,
            };
            let invoice = request_zap_invoice(&self.customer.keys, &order)
                .await
                .unwrap();
            self.zapper.settle(&invoice.bolt11).await.unwrap();
        }
    }
}

/// The payment-required feedback for `request`, read from the relay (waits for it).
pub(crate) async fn quote_of(customer: &Customer, request: EventId) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    let filter = Filter::new().kind(Kind::Custom(7000)).event(request);
    loop {
        let found = customer
            .client
            .fetch_events(filter.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(quote) = found.into_iter().find(is_status("payment-required")) {
            return quote;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no quote for {request}"
        );
    }
}

/// A subscriber's job `i`: on its quota, it succeeds.
fn on_quota(customer: &Customer, i: usize) -> (Event, Ending) {
    let text = format!("job {i} on the quota");
    let request = customer.request(5050, &text, &[&["param", "mode", "upper"]]);
    (request, Ending::Result)
}

/// Sends `range` of each customer's jobs as `job` makes them; returns each job's id and how it
/// should end.
async fn send(
    customers: &[Customer],
    range: std::ops::Range<usize>,
    job: fn(&Customer, usize) -> (Event, Ending),
) -> Vec<(EventId, Ending)> {
    let mut sent = Vec::new();
    for i in range {
        for customer in customers {
            let (request, ending) = job(customer, i);
            customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, ending));
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_one_killed_mid_run_every_job_ends_once() {
    let url = fresh_database_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_relay, relay_url) = start_relay().await;
    let zapping = Zapping::start(dir, &relay_url).await;
    let mint = TestMint::start().await;
    let configs = node_configs(dir, &relay_url, &url, &zapping.zapper, &mint.url);
    let (tokens, nutzaps) = ecash_payers(dir, &relay_url, &mint.url).await;
    let lnbits = Lnbits::start().await;
    let dvm_wallet = lnbits.wallet("dvm").await;
    for config in &configs {
        add_lnbits(config, &lnbits, &dvm_wallet);
        add_lnbits_admin(config, &dvm_wallet);
    }
    let payer = Payer {
        customer: Customer::connect(std::slice::from_ref(&relay_url)).await,
        wallet: lnbits.wallet("customer").await,
    };
    lnbits.top_up(&payer.wallet, PAYER_SATS).await;
    let mut customers = Vec::new();
    for _ in 0..CUSTOMERS {
        customers.push(Customer::connect(std::slice::from_ref(&relay_url)).await);
    }
    let pubkeys: Vec<PublicKey> = customers.iter().map(|c| c.keys.public_key()).collect();
    let (url_now, keys_now) = (url.clone(), pubkeys.clone());
    tokio::task::spawn_blocking(move || top_up(&url_now, &keys_now))
        .await
        .unwrap();

    let mut nodes: HashMap<u32, RunningNode> = (1..=3)
        .map(|run| {
            let config = &configs[run as usize - 1];
            (
                run,
                RunningNode::start_with_args(config, run, &["--standby"]),
            )
        })
        .collect();
    let first = serving(dir, &[1, 2, 3]).await;

    let invoiced = payer.send(&lnbits, 0..INVOICED_JOBS / 2).await;
    let zapped = zapping.send(0..ZAPPED_JOBS / 2).await;
    // Half of these are paid before the kill, half after: quoted by the dead node, paid to
    // its invoices (or zapped), seen paid by its successor.
    let (paid_before, paid_after) = invoiced.split_at(INVOICED_JOBS / 4);
    let (zapped_before, zapped_after) = zapped.split_at(ZAPPED_JOBS / 4);
    payer.pay(&lnbits, paid_before).await;
    zapping.zap(zapped_before).await;
    let nutzapped = nutzaps.send(0..NUTZAP_JOBS / 2).await;
    let (nutzapped_before, nutzapped_after) = nutzapped.split_at(NUTZAP_JOBS / 4);
    nutzaps.pay(nutzapped_before).await;
    let (subscriber, subscription) = zapping.subscriber().await;
    let mut jobs = send(
        std::slice::from_ref(&subscriber),
        0..SUBSCRIBED_JOBS / 2,
        on_quota,
    )
    .await;
    jobs.extend(tokens.send(0..TOKEN_JOBS / 2).await);
    jobs.extend(send(&customers, 0..JOBS_PER_CUSTOMER / 2, job_of).await);
    poll_until(&url, dir, "a fifth of the jobs ended", |s| {
        ended_jobs(s) >= JOBS / 5
    })
    .await;
    // The serving node dies mid-run: jobs queued, running and sleeping, replies unsent.
    let killed = nodes.remove(&first).unwrap();
    killed.crash();
    let killed_at = std::time::Instant::now();
    let others: Vec<u32> = (1..=3).filter(|r| *r != first).collect();
    // The quoted invoices are paid and the quotes zapped while a standby takes over.
    let (second, (), (), ()) = tokio::join!(
        async {
            let second = serving(dir, &others).await;
            // Printed, not asserted (tests do not time things).
            let ms = killed_at.elapsed().as_millis();
            eprintln!("takeover: {ms} ms from SIGKILL to the successor serving");
            second
        },
        payer.pay(&lnbits, paid_after),
        zapping.zap(zapped_after),
        nutzaps.pay(nutzapped_after)
    );
    jobs.extend(invoiced.iter().copied());
    let mut all_paid = invoiced.clone();
    all_paid.extend(zapped.iter().copied());
    jobs.extend(zapped);
    jobs.extend(nutzapped);
    let config = &configs[first as usize - 1];
    nodes.insert(4, RunningNode::start_with_args(config, 4, &["--standby"]));
    jobs.extend(send(&customers, JOBS_PER_CUSTOMER / 2..JOBS_PER_CUSTOMER, job_of).await);
    let range = SUBSCRIBED_JOBS / 2..SUBSCRIBED_JOBS;
    jobs.extend(send(std::slice::from_ref(&subscriber), range, on_quota).await);
    let invoiced = payer.send(&lnbits, INVOICED_JOBS / 2..INVOICED_JOBS).await;
    let zapped = zapping.send(ZAPPED_JOBS / 2..ZAPPED_JOBS).await;
    payer.pay(&lnbits, &invoiced).await;
    zapping.zap(&zapped).await;
    let nutzapped = nutzaps.send(NUTZAP_JOBS / 2..NUTZAP_JOBS).await;
    nutzaps.pay(&nutzapped).await;
    let tokened = tokens.send(TOKEN_JOBS / 2..TOKEN_JOBS).await;
    for paid in [invoiced, zapped, nutzapped, tokened] {
        jobs.extend(paid.iter().copied());
        all_paid.extend(paid);
    }
    poll_until(&url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    poll_until(&url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    // Give a duplicate publication, if there were one, time to reach the relay.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Still one server: the restarted node and the third stand by.
    let alive: Vec<u32> = (1..=4).filter(|r| *r != first).collect();
    assert_eq!(serving(dir, &alive).await, second);
    for run in (1..=4).filter(|r| *r != first && *r != second) {
        let err = std::fs::read_to_string(dir.join(format!("run{run}.err"))).unwrap();
        assert!(err.contains("standing by"), "run {run}: {err}");
    }
    let second_err = std::fs::read_to_string(dir.join(format!("run{second}.err"))).unwrap();
    assert!(second_err.contains("taking over"), "{second_err}");

    // The server ends the serving node's lock session: it stops at once, and a standby takes
    // over.
    end_lock_session(&url).await;
    let mut lost = nodes.remove(&second).unwrap();
    let status = tokio::task::spawn_blocking(move || lost.exit_status("the node did not stop"))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", logs(dir));
    let second_err = std::fs::read_to_string(dir.join(format!("run{second}.err"))).unwrap();
    assert!(second_err.contains("database lock is lost"), "{second_err}");
    let left: Vec<u32> = nodes.keys().copied().collect();
    serving(dir, &left).await;
    for (run, node) in nodes {
        let stopped = node.stop();
        assert!(stopped.success(), "run {run}: {stopped:?}\n{}", logs(dir));
    }

    check_ledger(&url, &jobs, &pubkeys);
    check_paid(&url, &all_paid);
    let mut everyone = pubkeys.clone();
    everyone.push(payer.customer.keys.public_key());
    everyone.push(zapping.customer.keys.public_key());
    everyone.push(tokens.customer.keys.public_key());
    everyone.push(nutzaps.customer.keys.public_key());
    everyone.push(subscriber.keys.public_key());
    check_relay(&relay_url, &jobs, &everyone).await;
    check_ecash(
        dir,
        &url,
        (&relay_url, &mint.url),
        &jobs,
        (&tokens, &nutzaps),
    )
    .await;
    check_subscription(&url, &relay_url, subscription).await;
    // Each invoice paid once, to the node's wallet, each refund paid once, back to the
    // customer's, and nothing else moved; the ledger's Lightning asset is what the wallet holds
    // and what was zapped (the zapper's wallet is the node's lud16, not LNbits).
    let invoiced_msat = PRICE_MSAT * INVOICED_JOBS as u64;
    let refunded_msat = PRICE_MSAT * REFUNDED_JOBS as u64;
    let dvm_msat = lnbits.balance(&dvm_wallet).await;
    assert_eq!(dvm_msat, invoiced_msat - refunded_msat);
    assert_eq!(
        lnbits.balance(&payer.wallet).await,
        PAYER_SATS * 1_000 - invoiced_msat + refunded_msat
    );
    let lightning = read(&url).state().asset_balance(&Asset::Lightning);
    // The prepaid credit was booked straight into the ledger, as paid over Lightning.
    let zapped_msat = PRICE_MSAT * ZAPPED_JOBS as u64 + TIER_MSAT;
    let topped_up_msat = TOP_UP_MSAT * CUSTOMERS as u64;
    assert_eq!(
        lightning,
        Msat::from_msat(dvm_msat + zapped_msat + topped_up_msat)
    );
    let settled = zapping.zapper.issued().iter().filter(|i| i.settled).count();
    assert_eq!(
        settled,
        ZAPPED_JOBS + 1,
        "one zap per zapped job, one for the period"
    );
    let out = paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ledger OK"), "{}", stdout(&out));
}

/// The ecash side: each customer claims exactly one refund per failed ecash job (nothing lost,
/// nothing sent twice), and the wallet in the database holds what the ledger's mint asset says.
async fn check_ecash(
    dir: &Path,
    url: &str,
    (relay, mint): (&RelayUrl, &str),
    jobs: &[(EventId, Ending)],
    (tokens, nutzaps): (&TokenPayer, &NutzapPayer),
) {
    let refunded: Vec<EventId> = jobs
        .iter()
        .filter(|(_, e)| *e == Ending::Refund)
        .map(|(id, _)| *id)
        .collect();
    let relays = std::slice::from_ref(relay);
    let claimed = claim_token_refunds(tokens, relays, mint, &refunded).await
        + claim_nutzap_refunds(nutzaps, relays, mint, &refunded).await;
    assert_eq!(
        claimed,
        ECASH_REFUNDS as u64 * PRICE_SAT,
        "each refund once"
    );
    let held_sat = (ECASH_JOBS - ECASH_REFUNDS) as u64 * PRICE_SAT;
    let p2pk = node_p2pk(dir);
    assert_eq!(wallet_balance_in_database(url, &p2pk, mint).await, held_sat);
    assert_eq!(booked_at_mints(url), held_sat * 1_000);
}

/// The subscription: active, every job on its quota counted once across the takeover, holding
/// nothing; one receipt (7003) on the relay.
async fn check_subscription(url: &str, relay: &RelayUrl, subscription: EventId) {
    let store = read(url);
    let id = paydvm_ledger::SubscriptionId::new(subscription.to_hex()).unwrap();
    let record = store.state().subscription(&id).cloned().unwrap();
    assert_eq!(
        (record.state, record.used, record.quota),
        (
            paydvm_ledger::EntitlementState::Active,
            SUBSCRIBED_JOBS as u32,
            SUBSCRIBED_JOBS as u32
        )
    );
    assert_eq!(store.state().held(&Account::Subscription(id)), Msat::ZERO);
    let client = paydvm::node::transport::client(Keys::generate());
    client.add_relay(relay.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let filter = Filter::new().kind(Kind::Custom(7003)).event(subscription);
    let receipts = client
        .fetch_events(filter, Duration::from_secs(5))
        .await
        .unwrap();
    client.shutdown().await;
    assert_eq!(receipts.len(), 1, "one receipt: {receipts:?}");
}

/// Terminates the session that holds the node lock, as a server restart or an operator would.
async fn end_lock_session(url: &str) {
    let db = url.rsplit('/').next().unwrap().to_owned();
    let sql = format!(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d \
         ON d.oid = l.database WHERE d.datname = '{db}' AND l.locktype = 'advisory' \
         AND ((l.classid::bigint << 32) | l.objid::bigint) = {NODE_LOCK_KEY}"
    );
    let ended = tokio::task::spawn_blocking(move || {
        ThrowawayCluster::shared().admin("postgres", &sql).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(ended.len(), 1, "one session holds the lock");
}

/// Every request decided once and ended as it should; every customer charged once per paid
/// job that succeeded, nothing held by an ended job.
fn check_ledger(url: &str, jobs: &[(EventId, Ending)], customers: &[PublicKey]) {
    let store = read(url);
    let state = store.state();
    assert_eq!(state.jobs().count(), JOBS, "one job per request");
    let mut interrupted = 0;
    let mut charged: HashMap<String, u64> = HashMap::new();
    for (id, ending) in jobs {
        let job = state.job(&JobId::new(id.to_hex()).unwrap()).unwrap();
        let expected = match ending {
            Ending::Result => JobState::Succeeded,
            Ending::CreditBack => JobState::Credited,
            Ending::Refund => JobState::Refunded,
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert_eq!(state.held(&Account::Job(job.job.clone())), Msat::ZERO);
        let succeeds = *ending == Ending::Result;
        if job.kind == 5050 && succeeds {
            *charged.entry(job.customer.to_string()).or_default() += PRICE_MSAT;
        }
        interrupted += usize::from(succeeds && job.attempts > 1);
    }
    for customer in customers {
        let pubkey = Pubkey::new(customer.to_hex()).unwrap();
        let spent = charged.get(pubkey.as_str()).copied().unwrap_or(0);
        assert_eq!(
            state.held(&Account::Credit(pubkey)),
            Msat::from_msat(TOP_UP_MSAT - spent),
            "charged once per paid job that succeeded"
        );
    }
    // Credit comes back as credit: the only refunds are those of the invoiced and the
    // ecash-paid jobs that failed, each settled once, for what the job held, and holding nothing
    // now.
    let refunded: Vec<_> = jobs.iter().filter(|(_, e)| *e == Ending::Refund).collect();
    assert_eq!(refunded.len(), REFUNDED_JOBS + ECASH_REFUNDS);
    assert_eq!(state.refunds().count(), REFUNDED_JOBS + ECASH_REFUNDS);
    for refund in state.refunds() {
        let job = refund.job.as_ref().expect("a job's refund");
        assert!(refunded.iter().any(|(id, _)| id.to_hex() == job.as_str()));
        assert_eq!(refund.amount, Msat::from_msat(PRICE_MSAT));
    }
    refunds_settled_once(&store);
    assert!(
        interrupted > 0,
        "the kill interrupted no job: nothing was taken over"
    );
    eprintln!("{interrupted} jobs ran again after the kill");
}

/// Each invoiced or zapped job took one payment (its invoice's or zap's), whichever node saw
/// it.
pub(crate) fn check_paid(url: &str, jobs: &[(EventId, Ending)]) {
    let store = read(url);
    for (id, _) in jobs {
        let payments = steps_named(&store, &id.to_hex(), "payment_received");
        assert_eq!(payments, 1, "{id}");
    }
}

/// Every refund settled, once (one `refund_settled` in its job's trail), holding nothing.
pub(crate) fn refunds_settled_once(store: &PgStore) {
    let state = store.state();
    for refund in state.refunds() {
        assert_eq!(refund.state, RefundState::Settled, "{refund:?}");
        let held = state.held(&Account::Refund(refund.refund.clone()));
        assert_eq!(held, Msat::ZERO, "{refund:?}");
        let job = refund.job.as_ref().expect("a job's refund");
        assert_eq!(
            steps_named(store, job.as_str(), "refund_settled"),
            1,
            "{job}"
        );
    }
}

/// How many events of type `step` the audit trail of `reference` holds.
fn steps_named(store: &PgStore, reference: &str, step: &str) -> usize {
    let trail = store.audit(reference).unwrap().expect("a trail");
    trail
        .events
        .iter()
        .filter(|e| e.event.type_name() == step)
        .count()
}

/// One result per job that succeeded, none for one that failed.
async fn check_relay(relay: &RelayUrl, jobs: &[(EventId, Ending)], customers: &[PublicKey]) {
    let client = paydvm::node::transport::client(Keys::generate());
    client.add_relay(relay.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    let mut results: HashMap<EventId, usize> = HashMap::new();
    for customer in customers {
        let filter = Filter::new()
            .kinds([Kind::Custom(6001), Kind::Custom(6050)])
            .pubkey(*customer)
            .limit(JOBS);
        let events = client
            .fetch_events(filter, Duration::from_secs(10))
            .await
            .unwrap();
        for event in events {
            for request in event.tags.event_ids() {
                *results.entry(*request).or_default() += 1;
            }
        }
    }
    client.shutdown().await;
    for (id, ending) in jobs {
        let n = results.get(id).copied().unwrap_or(0);
        assert_eq!(n, usize::from(*ending == Ending::Result), "results of {id}");
    }
}

/// On a file ledger: a standby waits on the lock file, says so, and stops cleanly on SIGTERM
/// while it waits; a standby of a node that takes ecash is warned that its wallet is local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_on_a_file_ledger_waits_and_stops_on_sigterm_while_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_relay, relay_url) = start_relay().await;
    let config = test_node("refund", "")
        .node_setting("config_problems = \"warn\"")
        .trust_mint("http://127.0.0.1:9")
        .relays(std::slice::from_ref(&relay_url))
        .write(dir)
        .unwrap();
    let serving_node = RunningNode::start_with_args(&config, 1, &["--standby"]);
    assert_eq!(serving(dir, &[1]).await, 1);
    let standby = RunningNode::start_with_args(&config, 2, &["--standby"]);
    wait_for_log(dir, "run2.err", "standing by").await;
    let err2 = dir.join("run2.err");
    let stopped = standby.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    let err = std::fs::read_to_string(&err2).unwrap();
    assert!(err.contains("standby on a node that takes ecash"), "{err}");
    assert!(err.contains("received while standing by"), "{err}");
    assert!(!std::fs::read_to_string(dir.join("run2.out"))
        .unwrap()
        .contains("running"));
    let stopped = serving_node.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
}

/// The database restarts under a serving node and a standby: the serving node loses its lock
/// and stops; the standby, which cannot reach the database while it is down, keeps waiting
/// (saying so) instead of giving up, and takes over once the server is back. While no node
/// serves, two quotes of the dead node are zapped and a free job is asked for: the successor
/// finds them on the relay (catch-up across a takeover, pinned: nothing serves in that window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waits_out_a_database_restart_and_takes_over() {
    let (cluster, url) = tokio::task::spawn_blocking(|| {
        let cluster = ThrowawayCluster::start(&ClusterOptions::for_tests()).unwrap();
        let url = cluster.url(&cluster.fresh_database().unwrap());
        (cluster, url)
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_relay, relay_url) = start_relay().await;
    let zapping = Zapping::start(dir, &relay_url).await;
    let base = test_node("refund", "")
        .node_setting("config_problems = \"warn\"")
        .node_setting(format!("lud16 = \"{}\"", zapping.zapper.lud16()))
        .node_setting("lnurl_http_loopback = true")
        .relays(std::slice::from_ref(&relay_url))
        .write(dir)
        .unwrap();
    let configs = with_state_dirs(&base, &url, 2);
    let mut first = RunningNode::start_with_args(&configs[0], 1, &["--standby"]);
    assert_eq!(serving(dir, &[1]).await, 1);
    let mut second = RunningNode::start_with_args(&configs[1], 2, &["--standby"]);
    wait_for_log(dir, "run2.err", "standing by").await;
    let mut jobs = zapping.send(0..2).await;
    for (id, _) in &jobs {
        quote_of(&zapping.customer, *id).await;
    }

    let cluster = restart(cluster, ThrowawayCluster::pause).await;
    let status = tokio::task::spawn_blocking(move || first.exit_status("the node did not stop"))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", logs(dir));
    wait_for_log(dir, "run2.err", "cannot reach the ledger database").await;
    zapping.zap(&jobs).await;
    let free = zapping
        .customer
        .request(5001, "sent while no node served", &[]);
    zapping.customer.client.send_event(&free).await.unwrap();
    // Still waiting a while later (alive, not serving).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(second.child.try_wait().unwrap().is_none(), "{}", logs(dir));
    let out2 = std::fs::read_to_string(dir.join("run2.out")).unwrap();
    assert!(!out2.contains("running"), "{}", logs(dir));
    let err2 = std::fs::read_to_string(dir.join("run2.err")).unwrap();
    assert!(err2.contains("trying again until it answers"), "{err2}");

    let cluster = restart(cluster, ThrowawayCluster::resume).await;
    assert_eq!(serving(dir, &[2]).await, 2);
    wait_for_log(dir, "run2.err", "taking over").await;
    jobs.push((free.id, Ending::Result));
    poll_until(
        &url,
        dir,
        "the jobs paid or sent while no node served ended",
        |s| ended_jobs(s) == 3,
    )
    .await;
    check_paid(&url, &jobs[..2]);
    let stopped = second.stop();
    assert!(stopped.success(), "{stopped:?}\n{}", logs(dir));
    let out = paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(cluster);
}

/// Stops or starts the cluster's server (`ThrowawayCluster::pause` / `resume`) off the runtime.
async fn restart(
    cluster: ThrowawayCluster,
    step: fn(&ThrowawayCluster) -> Result<(), paydvm_ledger_pg::throwaway::ClusterError>,
) -> ThrowawayCluster {
    tokio::task::spawn_blocking(move || {
        step(&cluster).unwrap();
        cluster
    })
    .await
    .unwrap()
}

/// Waits until `file` in `dir` says `what`.
async fn wait_for_log(dir: &Path, file: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(dir.join(file)).is_ok_and(|e| e.contains(what)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{file} never said {what:?}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
