//! Ecash across a takeover (issue 14): two `paydvm run --standby` processes on one PostgreSQL
//! ledger that share one `state_dir` (one machine: the Cashu wallet and its pending swaps are
//! files there). Customers pay with Cashu tokens in their requests and with NutZaps at an
//! in-process mint; every fourth job fails and is refunded in ecash (a token in a private
//! message, or a NutZap locked to the customer's 10019 key). The serving node is killed with
//! SIGKILL mid-run and the standby takes over the ledger and the wallet: every job ends once,
//! each refund reaches its customer once and is claimable, and the wallet holds what the ledger
//! says it holds.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, Proof, SecretKey as CashuSecretKey, Token};
use cdk::wallet::{ReceiveOptions, Wallet};
use nostr_sdk::prelude::*;
use paydvm::protocol::nip90::Encryption;
use paydvm_ledger::{Account, Asset, JobId, JobState, LedgerStore, Msat};
use paydvm_testkit::fixture::{KEY_FILE, NUTZAP_KEY_FILE};

use crate::cashu::nutzap;
use crate::cashu_mint::{fetch, mint_proofs, wallet, TestMint};
use crate::crash_node::{logs, RunningNode};
use crate::ecash_refunds::refund_nutzaps;
use crate::node::{start_relay, test_node, Customer};
use crate::pg_node::{fresh_database_async, point_at};
use crate::standby_nodes::{
    check_paid, ended_jobs, poll_until, quote_of, read, refunds_settled_once, serving, undelivered,
    Ending,
};

/// Jobs paid with a token in the request, and jobs paid by NutZap; every fourth of each fails.
const TOKEN_JOBS: usize = 40;
const NUTZAP_JOBS: usize = 20;
const JOBS: usize = TOKEN_JOBS + NUTZAP_JOBS;
const REFUNDS: usize = JOBS / 4;
/// The test node's price of a 5050 job, in sat.
const PRICE_SAT: u64 = 5;

/// Job `i`'s executor mode and ending: every fourth fails, every fourth sleeps 1 s (so the
/// kill finds some running).
fn mode(i: usize) -> (&'static str, Ending) {
    match i % 4 {
        3 => ("fail", Ending::Refund),
        1 => ("sleep", Ending::Result),
        _ => ("upper", Ending::Result),
    }
}

/// A customer paying with tokens in its requests (unlocked proofs of its own wallet), the
/// request's tags NIP-44 encrypted to the node (a token in a public tag is refused).
struct TokenPayer {
    customer: Customer,
    wallet: Wallet,
    mint: String,
    node: PublicKey,
}

impl TokenPayer {
    async fn send(&self, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
        let mut sent = Vec::new();
        for i in range {
            let proofs = mint_proofs(&self.wallet, PRICE_SAT, None).await;
            let token = Token::new(
                MintUrl::from_str(&self.mint).unwrap(),
                proofs,
                None,
                CurrencyUnit::Sat,
            )
            .to_string();
            let (mode, ending) = mode(i);
            let text = format!("token job {i}");
            let inner = serde_json::json!([
                ["i", text, "text"],
                ["param", "mode", mode],
                ["param", "ms", "1000"],
                ["cashu", token]
            ]);
            let content = Encryption::Nip44
                .encrypt(&self.customer.keys, &self.node, &inner.to_string())
                .unwrap();
            let request = EventBuilder::new(Kind::Custom(5050), content)
                .tags([
                    Tag::parse(["p", &self.node.to_hex()]).unwrap(),
                    Tag::parse(["encrypted"]).unwrap(),
                ])
                .sign_with_keys(&self.customer.keys)
                .unwrap();
            self.customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, ending));
        }
        sent
    }
}

/// A customer paying each quote with a NutZap locked to the node's NutZap key; its 10019
/// asks for refunds as NutZaps locked to `p2pk`.
struct NutzapPayer {
    customer: Customer,
    wallet: Wallet,
    mint: String,
    /// "02" + the node's NutZap key, x-only.
    lock: String,
    p2pk: Keys,
}

impl NutzapPayer {
    async fn publish_10019(&self, relay: &RelayUrl) {
        let info = EventBuilder::new(Kind::from(10019), "").tags([
            Tag::parse(["relay", relay.as_str()]).unwrap(),
            Tag::parse(["mint", &self.mint, "sat"]).unwrap(),
            Tag::parse(["pubkey", &self.p2pk.public_key().to_hex()]).unwrap(),
        ]);
        self.customer.client.send_event_builder(info).await.unwrap();
    }

    async fn send(&self, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
        let mut sent = Vec::new();
        for i in range {
            let (mode, ending) = mode(i);
            let text = format!("nutzapped job {i}");
            let tags: [&[&str]; 2] = [&["param", "mode", mode], &["param", "ms", "1000"]];
            let request = self.customer.request(5050, &text, &tags);
            self.customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, ending));
        }
        sent
    }

    async fn pay(&self, jobs: &[(EventId, Ending)]) {
        for (id, _) in jobs {
            let quote = quote_of(&self.customer, *id).await;
            let proofs = mint_proofs(&self.wallet, PRICE_SAT, Some(&self.lock)).await;
            let zap = nutzap(
                &self.customer.keys,
                &proofs,
                &self.mint,
                "sat",
                Some(quote.id),
                &quote.pubkey,
                "pay",
            );
            self.customer.client.send_event(&zap).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_state_dir_take_over_ecash_mid_run_and_refund_once() {
    let url = fresh_database_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_relay, relay_url) = start_relay().await;
    let mint = TestMint::start().await;
    let config = test_node("refund", "[admission]\nmax_pending_quotes_per_pubkey = 100")
        .node_setting("config_problems = \"warn\"")
        .trust_mint(&mint.url)
        .cashu_setting("mint_requests_per_minute = 0")
        .relays(std::slice::from_ref(&relay_url))
        .write(dir)
        .unwrap();
    point_at(&config, &url, Some("state"));
    let key = |file: &str| {
        paydvm::config::load_key_file(&dir.join(file))
            .unwrap()
            .expose()
            .clone()
    };
    let node_p2pk = key(NUTZAP_KEY_FILE);
    let relays = std::slice::from_ref(&relay_url);
    let tokens = TokenPayer {
        customer: Customer::connect(relays).await,
        wallet: wallet(&mint.url).await,
        mint: mint.url.clone(),
        node: key(KEY_FILE).public_key(),
    };
    let nutzaps = NutzapPayer {
        customer: Customer::connect(relays).await,
        wallet: wallet(&mint.url).await,
        mint: mint.url.clone(),
        lock: format!("02{}", node_p2pk.public_key().to_hex()),
        p2pk: Keys::generate(),
    };
    nutzaps.publish_10019(&relay_url).await;

    let mut nodes: HashMap<u32, RunningNode> = (1..=2)
        .map(|run| {
            (
                run,
                RunningNode::start_with_args(&config, run, &["--standby"]),
            )
        })
        .collect();
    let first = serving(dir, &[1, 2]).await;
    let mut jobs = tokens.send(0..TOKEN_JOBS / 2).await;
    let zapped = nutzaps.send(0..NUTZAP_JOBS / 2).await;
    let (zapped_before, zapped_after) = zapped.split_at(NUTZAP_JOBS / 4);
    nutzaps.pay(zapped_before).await;
    poll_until(&url, dir, "a fifth of the jobs ended", |s| {
        ended_jobs(s) >= JOBS / 5
    })
    .await;
    // The serving node dies with swaps, jobs and refunds in every stage.
    nodes.remove(&first).unwrap().crash();
    let second = 3 - first;
    let runs = [second];
    let ((), taken) = tokio::join!(nutzaps.pay(zapped_after), serving(dir, &runs));
    assert_eq!(taken, second);
    nodes.insert(3, RunningNode::start_with_args(&config, 3, &["--standby"]));
    jobs.extend(zapped.iter().copied());
    jobs.extend(tokens.send(TOKEN_JOBS / 2..TOKEN_JOBS).await);
    let zapped = nutzaps.send(NUTZAP_JOBS / 2..NUTZAP_JOBS).await;
    nutzaps.pay(&zapped).await;
    jobs.extend(zapped);
    poll_until(&url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    poll_until(&url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    for (run, node) in nodes {
        let stopped = node.stop();
        assert!(stopped.success(), "run {run}: {stopped:?}\n{}", logs(dir));
    }

    check_ledger(&url, &jobs);
    check_paid(&url, &jobs);
    let refunded: Vec<EventId> = jobs
        .iter()
        .filter(|(_, e)| *e == Ending::Refund)
        .map(|(id, _)| *id)
        .collect();
    let claimed = claim_token_refunds(&tokens, relays, &mint.url, &refunded).await
        + claim_nutzap_refunds(&nutzaps, relays, &mint.url, &refunded).await;
    assert_eq!(
        claimed,
        REFUNDS as u64 * PRICE_SAT,
        "each refund claimed once"
    );
    // The node's wallet holds the payments less the refunds, and the ledger says so.
    let held_sat = (JOBS - REFUNDS) as u64 * PRICE_SAT;
    assert_eq!(node_wallet(dir, &node_p2pk, &mint.url).await, held_sat);
    let state = read(&url);
    let booked: u64 = state
        .state()
        .balances()
        .filter(|(a, _)| matches!(a, Account::Asset(Asset::Mint { .. })))
        .map(|(a, _)| match a {
            Account::Asset(asset) => state.state().asset_balance(asset).as_msat(),
            _ => unreachable!(),
        })
        .sum();
    assert_eq!(booked, held_sat * 1_000);
    let out = crate::cli::paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::stderr(&out));
}

/// Every request one job, ended as it should, holding nothing; each refund settled once.
fn check_ledger(url: &str, jobs: &[(EventId, Ending)]) {
    let store = read(url);
    let state = store.state();
    assert_eq!(state.jobs().count(), JOBS, "one job per request");
    let mut interrupted = 0;
    for (id, ending) in jobs {
        let job = state.job(&JobId::new(id.to_hex()).unwrap()).unwrap();
        let expected = match ending {
            Ending::Refund => JobState::Refunded,
            _ => JobState::Succeeded,
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert_eq!(state.held(&Account::Job(job.job.clone())), Msat::ZERO);
        interrupted += usize::from(*ending == Ending::Result && job.attempts > 1);
    }
    assert!(interrupted > 0, "the kill interrupted no job");
    eprintln!("{interrupted} jobs ran again after the kill");
    assert_eq!(state.refunds().count(), REFUNDS);
    refunds_settled_once(&store);
}

/// The token customer's refunds: private messages, one distinct token per failed job (a copy
/// sent again after a crash is the same token), each claimed at the mint. Returns the sat.
async fn claim_token_refunds(
    p: &TokenPayer,
    relays: &[RelayUrl],
    mint: &str,
    refunded: &[EventId],
) -> u64 {
    let wraps = fetch(
        relays,
        Filter::new()
            .kind(Kind::GiftWrap)
            .pubkey(p.customer.keys.public_key()),
    )
    .await;
    let mut tokens: HashMap<String, HashSet<String>> = HashMap::new();
    for wrap in wraps.iter() {
        let text = p
            .customer
            .client
            .unwrap_gift_wrap(wrap)
            .await
            .unwrap()
            .rumor
            .content;
        let job = refunded
            .iter()
            .map(EventId::to_hex)
            .find(|j| text.contains(j.as_str()))
            .unwrap_or_else(|| panic!("a refund message for no failed job: {text}"));
        let token = text.split_whitespace().last().unwrap().to_owned();
        tokens.entry(job).or_default().insert(token);
    }
    let mut claimed = 0;
    let customer_wallet = wallet(mint).await;
    for (job, distinct) in &tokens {
        assert_eq!(distinct.len(), 1, "one token for {job}");
        let token = distinct.iter().next().unwrap();
        claimed += u64::from(
            customer_wallet
                .receive(token, ReceiveOptions::default())
                .await
                .unwrap(),
        );
    }
    claimed
}

/// The NutZap customer's refunds: NutZaps locked to its 10019 key, one distinct set of proofs
/// per failed job, each claimed with that key. Returns the sat.
async fn claim_nutzap_refunds(
    p: &NutzapPayer,
    relays: &[RelayUrl],
    mint: &str,
    refunded: &[EventId],
) -> u64 {
    let mut claimed = 0;
    let customer_wallet = wallet(mint).await;
    let key = CashuSecretKey::from_slice(&p.p2pk.secret_key().secret_bytes()).unwrap();
    for job in refunded {
        let zaps = refund_nutzaps(relays, &p.customer, &job.to_hex()).await;
        if zaps.is_empty() {
            continue;
        }
        let secrets = |proofs: &Vec<Proof>| -> Vec<String> {
            proofs.iter().map(|p| p.secret.to_string()).collect()
        };
        let distinct: HashSet<Vec<String>> = zaps.iter().map(secrets).collect();
        assert_eq!(distinct.len(), 1, "one refund NutZap for {job}");
        let proofs = zaps.into_iter().next().unwrap();
        let options = ReceiveOptions {
            p2pk_signing_keys: vec![key.clone()],
            ..Default::default()
        };
        claimed += u64::from(
            customer_wallet
                .receive_proofs(proofs, options, None, None)
                .await
                .unwrap(),
        );
    }
    claimed
}

/// What the node's Cashu wallet (in the shared `state_dir`) holds at `mint`, in sat.
async fn node_wallet(dir: &Path, p2pk: &Keys, mint: &str) -> u64 {
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&p2pk.secret_key().secret_bytes()).unwrap();
    let path = paydvm::config::wallet_path(&dir.join("state").join("paydvm"));
    let redeemer = paydvm_mints::Redeemer::open(&path, key).await.unwrap();
    redeemer.balance(mint, "sat").await.unwrap()
}
