//! Ecash across a takeover (issue 14): `paydvm run --standby` processes on one PostgreSQL
//! ledger, each with a `state_dir` of its own (as on separate machines): the Cashu wallet and its
//! pending swaps are in the database, not in a `state_dir`. Customers pay with Cashu tokens in
//! their requests and with NutZaps at an in-process mint; every fourth job fails and is refunded
//! in ecash (a token in a private message, or a NutZap locked to the customer's 10019 key). The
//! serving node is killed with SIGKILL mid-run and a standby takes over the ledger and the
//! wallet: every job ends once, each refund reaches its customer once and is claimable, and the
//! wallet holds what the ledger says it holds.

use std::collections::{HashMap, HashSet};

use cdk::nuts::{Proof, SecretKey as CashuSecretKey};
use cdk::wallet::{ReceiveOptions, Wallet};
use nostr_sdk::prelude::*;
use paydvm_ledger::{Account, Asset, JobId, JobState, LedgerStore, Msat};
use paydvm_testkit::fixture::{node_pubkey, NUTZAP_KEY_FILE};

use crate::cashu_mint::{fetch, mint_proofs, wallet, TestMint};
use crate::crash_node::{logs, RunningNode};
use crate::ecash_refunds::{publish_10019_on, refund_nutzaps, send_nutzap};
use crate::node::{start_relay, test_node, Customer};
use crate::pg_node::fresh_database_async;
use crate::reconcile::{asset, reconcile_json};
use crate::standby_nodes::{
    check_paid, ended_jobs, poll_until, quote_of, read, refunds_settled_once, serving, undelivered,
    with_state_dirs, Ending,
};
use crate::tokens::{encrypted_5050, v4};

/// Jobs paid with a token in the request, and jobs paid by NutZap; every fourth of each fails.
pub(crate) const TOKEN_JOBS: usize = 40;
pub(crate) const NUTZAP_JOBS: usize = 20;
const JOBS: usize = TOKEN_JOBS + NUTZAP_JOBS;
const REFUNDS: usize = JOBS / 4;
/// The test node's price of a 5050 job, in sat.
pub(crate) const PRICE_SAT: u64 = 5;

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
pub(crate) struct TokenPayer {
    pub(crate) customer: Customer,
    wallet: Wallet,
    mint: String,
    node: PublicKey,
}

impl TokenPayer {
    pub(crate) async fn send(&self, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
        let mut sent = Vec::new();
        for i in range {
            let token = v4(
                &self.mint,
                &mint_proofs(&self.wallet, PRICE_SAT, None).await,
            );
            let (mode, ending) = mode(i);
            let inner = serde_json::json!([
                ["i", format!("token job {i}"), "text"],
                ["param", "mode", mode],
                ["param", "ms", "1000"],
                ["cashu", token]
            ]);
            let request = encrypted_5050(&self.customer, &self.node, inner);
            self.customer.client.send_event(&request).await.unwrap();
            sent.push((request.id, ending));
        }
        sent
    }
}

/// A customer paying each quote with a NutZap locked to the node's NutZap key; its 10019
/// asks for refunds as NutZaps locked to `p2pk`.
pub(crate) struct NutzapPayer {
    pub(crate) customer: Customer,
    mint: String,
    /// "02" + the node's NutZap key, x-only.
    lock: String,
    p2pk: Keys,
}

impl NutzapPayer {
    pub(crate) async fn send(&self, range: std::ops::Range<usize>) -> Vec<(EventId, Ending)> {
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

    pub(crate) async fn pay(&self, jobs: &[(EventId, Ending)]) {
        for (id, _) in jobs {
            let quote = quote_of(&self.customer, *id).await;
            send_nutzap(&self.customer, &self.mint, &self.lock, &quote, PRICE_SAT).await;
        }
    }
}

/// The two ecash customers of the node in `dir` (its keys written there): one paying with tokens
/// in its requests, one by NutZap (its 10019 published on `relay`).
pub(crate) async fn ecash_payers(
    dir: &std::path::Path,
    relay: &RelayUrl,
    mint: &str,
) -> (TokenPayer, NutzapPayer) {
    let node_p2pk = node_p2pk(dir);
    let relays = std::slice::from_ref(relay);
    let tokens = TokenPayer {
        customer: Customer::connect(relays).await,
        wallet: wallet(mint).await,
        mint: mint.to_owned(),
        node: node_pubkey(dir).unwrap(),
    };
    let customer = Customer::connect(relays).await;
    let nutzaps = NutzapPayer {
        p2pk: publish_10019_on(&customer, relay, mint).await,
        customer,
        mint: mint.to_owned(),
        lock: format!("02{}", node_p2pk.public_key().to_hex()),
    };
    (tokens, nutzaps)
}

/// The key the node in `dir` takes NutZaps with (and signs its wallet's seed from).
pub(crate) fn node_p2pk(dir: &std::path::Path) -> Keys {
    paydvm::config::load_key_file(&dir.join(NUTZAP_KEY_FILE))
        .unwrap()
        .expose()
        .clone()
}

/// What each ecash test on PostgreSQL starts from: a fresh database, a relay, an in-process
/// mint, the node's config in a temporary directory, and the two paying customers.
pub(crate) struct EcashSetup {
    pub(crate) url: String,
    pub(crate) tmp: tempfile::TempDir,
    _relay: paydvm::node::local_relay::EmbeddedRelay,
    pub(crate) relay_url: RelayUrl,
    pub(crate) mint: TestMint,
    pub(crate) config: std::path::PathBuf,
    pub(crate) tokens: TokenPayer,
    pub(crate) nutzaps: NutzapPayer,
}

impl EcashSetup {
    pub(crate) async fn start() -> EcashSetup {
        let url = fresh_database_async().await;
        let tmp = tempfile::tempdir().unwrap();
        let (relay, relay_url) = start_relay().await;
        let mint = TestMint::start().await;
        let config = ecash_node(tmp.path(), &relay_url, &mint.url);
        let (tokens, nutzaps) = ecash_payers(tmp.path(), &relay_url, &mint.url).await;
        EcashSetup {
            url,
            tmp,
            _relay: relay,
            relay_url,
            mint,
            config,
            tokens,
            nutzaps,
        }
    }

    pub(crate) fn relays(&self) -> &[RelayUrl] {
        std::slice::from_ref(&self.relay_url)
    }

    /// Token jobs `tokens` and NutZap jobs `nutzaps` sent, the NutZap ones paid.
    pub(crate) async fn send_jobs(
        &self,
        tokens: std::ops::Range<usize>,
        nutzaps: std::ops::Range<usize>,
    ) -> Vec<(EventId, Ending)> {
        let mut jobs = self.tokens.send(tokens).await;
        let zapped = self.nutzaps.send(nutzaps).await;
        self.nutzaps.pay(&zapped).await;
        jobs.extend(zapped);
        jobs
    }
}

/// The config (written in `dir`) of a node that refunds failed jobs, trusts `mint` and talks on
/// `relay`: the ecash tests' node.
pub(crate) fn ecash_node(
    dir: &std::path::Path,
    relay: &RelayUrl,
    mint: &str,
) -> std::path::PathBuf {
    test_node("refund", "[admission]\nmax_pending_quotes_per_pubkey = 100")
        .node_setting("config_problems = \"warn\"")
        .trust_mint(mint)
        .cashu_setting("mint_requests_per_minute = 0")
        .relays(std::slice::from_ref(relay))
        .write(dir)
        .unwrap()
}

/// The refunded jobs' ecash, claimed by their customers: the sat claimed, which must be the
/// refunds' worth exactly (each claimed once); returns how many jobs were refunded.
pub(crate) async fn claim_refunds_once(
    payers: (&TokenPayer, &NutzapPayer),
    relays: &[RelayUrl],
    mint: &str,
    jobs: &[(EventId, Ending)],
) -> usize {
    let refunded: Vec<EventId> = jobs
        .iter()
        .filter(|(_, e)| *e == Ending::Refund)
        .map(|(id, _)| *id)
        .collect();
    let claimed = claim_token_refunds(payers.0, relays, mint, &refunded).await
        + claim_nutzap_refunds(payers.1, relays, mint, &refunded).await;
    assert_eq!(
        claimed,
        refunded.len() as u64 * PRICE_SAT,
        "each refund claimed once"
    );
    refunded.len()
}

/// The wallet in the database holds `held_sat` at `mint`, the ledger books as much, and
/// `paydvm reconcile` with `config` says the two match.
pub(crate) async fn wallet_matches_ledger(
    url: &str,
    dir: &std::path::Path,
    mint: &str,
    config: &std::path::Path,
    held_sat: u64,
) {
    assert_eq!(
        wallet_balance_in_database(url, &node_p2pk(dir), mint).await,
        held_sat
    );
    assert_eq!(booked_at_mints(url), held_sat * 1_000);
    let (code, report) = reconcile_json(config).await;
    let held = asset(&report, &format!("asset:mint:{mint}"));
    assert_eq!(held["status"], "match", "{report:#}");
    assert_eq!(held["backend_msat"], held_sat * 1_000, "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_separate_machines_take_over_ecash_mid_run_and_refund_once() {
    let s = EcashSetup::start().await;
    let (url, dir, mint) = (&s.url, s.tmp.path(), &s.mint);
    let (tokens, nutzaps) = (&s.tokens, &s.nutzaps);
    // Three machines: the first two serve and stand by, the third replaces the one killed.
    let configs = with_state_dirs(&s.config, url, 3);

    let mut nodes: HashMap<u32, RunningNode> = (1..=2)
        .map(|run| {
            (
                run,
                RunningNode::start_with_args(&configs[run as usize - 1], run, &["--standby"]),
            )
        })
        .collect();
    let first = serving(dir, &[1, 2]).await;
    let mut jobs = tokens.send(0..TOKEN_JOBS / 2).await;
    let zapped = nutzaps.send(0..NUTZAP_JOBS / 2).await;
    let (zapped_before, zapped_after) = zapped.split_at(NUTZAP_JOBS / 4);
    nutzaps.pay(zapped_before).await;
    poll_until(url, dir, "a fifth of the jobs ended", |s| {
        ended_jobs(s) >= JOBS / 5
    })
    .await;
    // The serving node dies with swaps, jobs and refunds in every stage.
    nodes.remove(&first).unwrap().crash();
    let second = 3 - first;
    let runs = [second];
    let ((), taken) = tokio::join!(nutzaps.pay(zapped_after), serving(dir, &runs));
    assert_eq!(taken, second);
    nodes.insert(
        3,
        RunningNode::start_with_args(&configs[2], 3, &["--standby"]),
    );
    jobs.extend(zapped.iter().copied());
    jobs.extend(
        s.send_jobs(TOKEN_JOBS / 2..TOKEN_JOBS, NUTZAP_JOBS / 2..NUTZAP_JOBS)
            .await,
    );
    poll_until(url, dir, "every job ended", |s| ended_jobs(s) == JOBS).await;
    poll_until(url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    for (run, node) in nodes {
        let stopped = node.stop();
        assert!(stopped.success(), "run {run}: {stopped:?}\n{}", logs(dir));
    }

    check_ledger(url, &jobs);
    check_paid(url, &jobs);
    let claimed = claim_refunds_once((tokens, nutzaps), s.relays(), &mint.url, &jobs).await;
    assert_eq!(claimed, REFUNDS);
    for i in 1..=3 {
        let base = dir
            .join(format!("state{i}"))
            .join(paydvm::config::LOCAL_BASE_NAME);
        let file = paydvm::config::wallet_path(&base);
        assert!(!file.exists(), "a wallet file {}", file.display());
    }
    let out = crate::cli::paydvm(&["ledger", "verify", url]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::stderr(&out));
    // The node's wallet holds the payments less the refunds, and the ledger says so;
    // `paydvm reconcile` on any of the machines reads the same wallet, in the database.
    let held_sat = (JOBS - REFUNDS) as u64 * PRICE_SAT;
    wallet_matches_ledger(url, dir, &mint.url, &configs[2], held_sat).await;
}

/// What the ledger says the node holds at mints, msat.
pub(crate) fn booked_at_mints(url: &str) -> u64 {
    let store = read(url);
    let state = store.state();
    state
        .balances()
        .filter_map(|(account, _)| match account {
            Account::Asset(asset @ Asset::Mint { .. }) => Some(state.asset_balance(asset)),
            _ => None,
        })
        .map(Msat::as_msat)
        .sum()
}

/// The unspent sat at `mint` of the node's wallet in the ledger's database.
pub(crate) async fn wallet_balance_in_database(url: &str, p2pk: &Keys, mint: &str) -> u64 {
    use paydvm_ledger_pg::cashu_wallet::{open_wallet, WALLET_SCHEMA};
    let location = paydvm_ledger_pg::PgLocation::parse(url).unwrap();
    let store = open_wallet(&location, WALLET_SCHEMA).await.unwrap();
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&p2pk.secret_key().secret_bytes()).unwrap();
    let redeemer = paydvm_mints::Redeemer::on_store(std::sync::Arc::new(store), key);
    redeemer.balance(mint, "sat").await.unwrap()
}

/// Every request one job, ended as it should, holding nothing; each refund settled once.
/// Returns how many of the jobs that succeeded ran more than once (interrupted).
pub(crate) fn check_jobs(url: &str, jobs: &[(EventId, Ending)]) -> usize {
    let store = read(url);
    let state = store.state();
    assert_eq!(state.jobs().count(), jobs.len(), "one job per request");
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
    let refunds = jobs.iter().filter(|(_, e)| *e == Ending::Refund).count();
    assert_eq!(state.refunds().count(), refunds);
    refunds_settled_once(&store);
    interrupted
}

fn check_ledger(url: &str, jobs: &[(EventId, Ending)]) {
    assert_eq!(jobs.len(), JOBS);
    let interrupted = check_jobs(url, jobs);
    assert!(interrupted > 0, "the kill interrupted no job");
    eprintln!("{interrupted} jobs ran again after the kill");
}

/// The token customer's refunds: private messages, one distinct token per failed job (a copy
/// sent again after a crash is the same token), each claimed at the mint. Returns the sat.
pub(crate) async fn claim_token_refunds(
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
pub(crate) async fn claim_nutzap_refunds(
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

/// A node on PostgreSQL keeps its ecash in the database, unless its `state_dir` holds a wallet
/// file from before the wallet moved there: that one stays in use (its proofs are not moved),
/// and `paydvm run --standby` warns that it is local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_file_from_before_in_the_state_dir_stays_in_use() {
    use paydvm::node::ecash_store::EcashStore;
    let url = fresh_database_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let relay = RelayUrl::parse("ws://127.0.0.1:1").unwrap();
    let config = test_node("refund", "")
        .trust_mint("http://127.0.0.1:1")
        .relays(&[relay])
        .write(tmp.path())
        .unwrap();
    let configs = with_state_dirs(&config, &url, 1);
    let node = paydvm::config::Config::load(&configs[0]).unwrap().node;
    let store = EcashStore::of(&node).unwrap();
    assert!(store.is_shared(), "{}", store.shown());
    assert!(store.shown().contains("paydvm_cashu_wallet"));
    assert!(!store.shown().contains("password"));

    let file = paydvm::config::wallet_path(&node.local_base());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let key = paydvm_mints::ReceiveKey::from_secret_bytes(&[7; 32]).unwrap();
    drop(paydvm_mints::Redeemer::open(&file, key).await.unwrap());
    let store = EcashStore::of(&node).unwrap();
    assert!(!store.is_shared());
    assert_eq!(store.shown(), file.display().to_string());
}

/// cdk stores a mint's keysets and then, in a later step, their keys. A node reading the shared
/// wallet in between (two nodes starting on one database) used to cache the keysets without
/// their keys and refuse every swap with "Unknown Keyset" for the hour its cache lives; the
/// node's jobs stayed quoted. The redeemer fetches the mint's keys itself before its first swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_finding_keysets_stored_without_their_keys_still_swaps() {
    use cdk::nuts::KeySetInfo;
    let mint = TestMint::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = paydvm_mints::redeem::wallet_file(&tmp.path().join("wallet.sqlite"))
        .await
        .unwrap();
    // What the store holds between cdk's two steps: the mint and its keysets, no keys.
    let keysets = wallet(&mint.url)
        .await
        .keysets(cdk::wallet::types::KeysetLoadPolicy::Refresh)
        .await
        .unwrap();
    let infos: Vec<KeySetInfo> = keysets
        .iter()
        .map(|k| KeySetInfo {
            id: k.id,
            unit: k.unit.clone(),
            active: k.active.unwrap_or(true),
            input_fee_ppk: k.input_fee_ppk,
            final_expiry: k.final_expiry,
        })
        .collect();
    let url = paydvm_mints::mint_url_of(&mint.url).unwrap();
    store.add_mint(url.clone(), None).await.unwrap();
    store.add_mint_keysets(url, infos).await.unwrap();
    let ids: Vec<_> = keysets.iter().map(|k| k.id).collect();
    for id in &ids {
        assert!(store.get_keys(id).await.unwrap().is_none());
    }

    let key = paydvm_mints::ReceiveKey::from_secret_bytes(&[7; 32]).unwrap();
    let redeemer = paydvm_mints::Redeemer::on_store(store.clone(), key);
    let token = v4(
        &mint.url,
        &mint_proofs(&wallet(&mint.url).await, 7, None).await,
    );
    let received = redeemer.receive_float(&mint.url, "sat", &token).await;
    assert_eq!(received.unwrap(), 7);
    assert_eq!(redeemer.balance(&mint.url, "sat").await.unwrap(), 7);
    for id in &ids {
        assert!(store.get_keys(id).await.unwrap().is_some(), "keys stored");
    }
}
