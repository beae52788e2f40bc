//! Moving a node from an SQLite ledger to PostgreSQL takes its ecash along (issue 14, item 3):
//! `paydvm ledger copy <file> <url>` copies the Cashu wallet and the pending swaps beside the
//! ledger file into the database. The node then started on the database from an empty
//! `state_dir` (another machine) holds that ecash: `reconcile` matches before it starts, and
//! after more ecash jobs and refunds the database wallet holds what the ledger says; copied back
//! into a ledger file, the wallet file beside it holds as much.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::EventId;
use paydvm::config::{Config, LedgerPlace};
use paydvm_ledger::store::Store;
use paydvm_ledger::{Durability, JobState, LedgerStore, StoreOptions};

use crate::cashu_mint::TestMint;
use crate::cli::{paydvm, stderr, stdout};
use crate::crash_node::{logs, RunningNode};
use crate::node::test_node;
use crate::pg_node::fresh_database_async;
use crate::reconcile::{asset, reconcile_json};
use crate::standby_ecash::{
    claim_refunds_once, node_p2pk, wallet_matches_ledger, EcashSetup, PRICE_SAT,
};
use crate::standby_nodes::{
    check_paid, ended_jobs, poll, poll_until, read, refunds_settled_once, serving, undelivered,
    with_state_dirs, Ending,
};

/// Token and NutZap jobs on each side of the move; every fourth of each is refunded.
const TOKENS_EACH_SIDE: usize = 8;
const NUTZAPS_EACH_SIDE: usize = 4;
/// How long the jobs on the file may take to end.
const WAIT: Duration = Duration::from_secs(120);

/// Jobs in a ledger file that have ended, read while the node runs.
fn ended_in_file(ledger: &Path) -> usize {
    let options = StoreOptions::everything(Durability::Normal).read_only();
    let store = Store::open_with(ledger, &options).unwrap();
    let counts = store.job_counts().unwrap();
    counts
        .iter()
        .filter(|(s, _)| matches!(s, JobState::Succeeded | JobState::Refunded))
        .map(|(_, n)| *n as usize)
        .sum()
}

fn ledger_file(config: &Path) -> PathBuf {
    match Config::load(config).unwrap().node.ledger {
        LedgerPlace::File(path) => path,
        other => panic!("a file ledger, not {other}"),
    }
}

/// The sat the mint asset of `report` says the node holds, and whether it matches the wallet.
fn mint_asset(report: &serde_json::Value, mint: &str) -> (u64, String) {
    let held = asset(report, &format!("asset:mint:{mint}"));
    let msat = held["backend_msat"].as_u64().unwrap();
    (msat / 1_000, held["status"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moved_from_a_file_to_postgres_takes_its_ecash_along() {
    let s = EcashSetup::start().await;
    let (url, dir, mint) = (s.url.clone(), s.tmp.path(), &s.mint);
    let config = &s.config;
    let ledger = ledger_file(config);

    // On the ledger file.
    let node = RunningNode::start(config, 1);
    serving(dir, &[1]).await;
    let mut jobs = s.send_jobs(0..TOKENS_EACH_SIDE, 0..NUTZAPS_EACH_SIDE).await;
    let (path, ended) = (ledger.clone(), jobs.len());
    poll(dir, "every job on the file ended", WAIT, move || {
        ended_in_file(&path) == ended
    })
    .await;
    assert!(node.stop().success(), "{}", logs(dir));
    let refunded =
        |jobs: &[(EventId, Ending)]| jobs.iter().filter(|(_, e)| *e == Ending::Refund).count();
    let held_before = (jobs.len() - refunded(&jobs)) as u64 * PRICE_SAT;

    // The move: the ledger and its ecash into the database.
    let (from, to) = (ledger.display().to_string(), url.clone());
    let out = tokio::task::spawn_blocking(move || paydvm(&["ledger", "copy", &from, &to]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("copied the Cashu wallet"), "{said}");
    assert!(
        said.contains(&format!("{held_before} sat at {}", mint.url)),
        "{said}"
    );
    assert!(said.contains("copied 0 pending swaps"), "{said}");

    // Another machine: an empty state_dir, the ledger and the wallet in the database.
    let configs = with_state_dirs(config, &url, 1);
    let (code, report) = reconcile_json(&configs[0]).await;
    assert_eq!(
        mint_asset(&report, &mint.url),
        (held_before, "match".into()),
        "{report:#}"
    );
    assert_eq!(code, 0, "{report:#}");
    let node = RunningNode::start(&configs[0], 2);
    serving(dir, &[2]).await;
    let (tokens_after, nutzaps_after) = (
        TOKENS_EACH_SIDE..2 * TOKENS_EACH_SIDE,
        NUTZAPS_EACH_SIDE..2 * NUTZAPS_EACH_SIDE,
    );
    jobs.extend(s.send_jobs(tokens_after, nutzaps_after).await);
    let all = jobs.len();
    poll_until(&url, dir, "every job ended", move |s| ended_jobs(s) == all).await;
    poll_until(&url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    assert!(node.stop().success(), "{}", logs(dir));

    check_paid(&url, &jobs);
    refunds_settled_once(&read(&url));
    let payers = (&s.tokens, &s.nutzaps);
    let refunded = claim_refunds_once(payers, s.relays(), &mint.url, &jobs).await;
    let held = (all - refunded) as u64 * PRICE_SAT;
    wallet_matches_ledger(&url, dir, &mint.url, &configs[0], held).await;

    // And back: the database's ledger and ecash into files beside a new ledger file.
    let back = dir.join("back.db");
    let (from, to) = (url.clone(), back.display().to_string());
    let out = tokio::task::spawn_blocking(move || paydvm(&["ledger", "copy", &from, &to]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("{held} sat at {}", mint.url)),
        "{said}"
    );
    let in_file = paydvm_mints::wallet_holdings(&paydvm::config::wallet_path(&back))
        .await
        .unwrap();
    assert_eq!(
        in_file.iter().map(|h| h.amount).sum::<u64>(),
        held,
        "{said}"
    );
}

/// A copy never lands on a database whose wallet holds ecash already, and nothing is copied
/// then, not even the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_copy_onto_a_database_whose_wallet_holds_ecash_copies_nothing() {
    use paydvm::node::ecash_store::EcashStore;
    let url = fresh_database_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let relay = nostr_sdk::RelayUrl::parse("ws://127.0.0.1:1").unwrap();
    let config = test_node("refund", "")
        .relays(&[relay])
        .write(tmp.path())
        .unwrap();
    let ledger = ledger_file(&config);
    // A ledger file with a wallet beside it, and a database wallet holding a record.
    drop(Store::open(&ledger, Durability::Full).unwrap());
    let beside = EcashStore::beside(&LedgerPlace::File(ledger.clone())).unwrap();
    drop(beside.wallet_store().await.unwrap());
    let place = LedgerPlace::from_arg(&url).unwrap();
    let in_database = EcashStore::beside(&place)
        .unwrap()
        .wallet_store()
        .await
        .unwrap();
    in_database
        .kv_write("paydvm", "intake_plan_v1", "intake-x", b"{}")
        .await
        .unwrap();

    let (from, to) = (ledger.display().to_string(), url.clone());
    let out = tokio::task::spawn_blocking(move || paydvm(&["ledger", "copy", &from, &to]))
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("already holds ecash"),
        "{}",
        stderr(&out)
    );
    let copied = tokio::task::spawn_blocking(move || {
        let options = StoreOptions::everything(Durability::Normal).read_only();
        paydvm_ledger_pg::PgStore::open(&url, &options).map(|s| s.head().0)
    })
    .await
    .unwrap();
    assert!(
        !matches!(copied, Ok(n) if n > 0),
        "no ledger event was copied: {copied:?}"
    );
}

/// A NutZap verified but not swapped yet, as the pending swaps store it.
fn verified_nutzap(mint: &str) -> paydvm_mints::VerifiedNutZap {
    paydvm_mints::VerifiedNutZap {
        event_id: "ab".repeat(32),
        sender: "cd".repeat(32),
        mint: mint.to_owned(),
        unit: "sat".into(),
        proofs: Vec::new(),
        ys: vec!["02".to_owned() + &"11".repeat(32)],
        units: 5,
        amount: paydvm_ledger::Msat::from_msat(5_000),
        target: None,
        origin: paydvm_mints::Origin::NutZap,
    }
}

/// A node on PostgreSQL whose `state_dir` holds its wallet and pending swaps as files from
/// before moves them into the database with `paydvm ecash into-database`: refused while a node
/// holds the database, then copied, the files renamed, and the node's ecash place is then the
/// database (shared with its standbys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecash_files_from_before_move_into_the_database_once_the_node_is_stopped() {
    use paydvm::node::ecash_store::EcashStore;
    let url = fresh_database_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let mint = TestMint::start().await;
    let relay = nostr_sdk::RelayUrl::parse("ws://127.0.0.1:1").unwrap();
    let config = test_node("refund", "")
        .trust_mint(&mint.url)
        .relays(&[relay])
        .write(tmp.path())
        .unwrap();
    let configs = with_state_dirs(&config, &url, 1);
    let node = Config::load(&configs[0]).unwrap().node;
    let base = node.local_base();
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    let files = EcashStore::Files {
        wallet: paydvm::config::wallet_path(&base),
        pending: paydvm::config::pending_path(&base),
    };
    // The files a node wrote before: 7 sat of float and one NutZap waiting for its swap.
    let p2pk = node_p2pk(tmp.path());
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&p2pk.secret_key().secret_bytes()).unwrap();
    let token = crate::tokens::v4(
        &mint.url,
        &crate::cashu_mint::mint_proofs(&crate::cashu_mint::wallet(&mint.url).await, 7, None).await,
    );
    let redeemer = files.redeemer(key.clone()).await.unwrap();
    assert_eq!(
        redeemer
            .receive_float(&mint.url, "sat", &token)
            .await
            .unwrap(),
        7
    );
    drop(redeemer);
    let pending = files.pending().unwrap();
    pending.insert(&verified_nutzap(&mint.url), 1).unwrap();
    // And one event put off while its mint could not be reached.
    let put_off = paydvm_mints::DeferredRow {
        event_id: "ef".repeat(32),
        event: "{}".into(),
        tries: 3,
        next_try_ms: 9,
        first_ms: 2,
    };
    pending.keep_deferred(&put_off).unwrap();
    drop(pending);
    assert!(!EcashStore::of(&node).unwrap().is_shared());

    let into_database = |config: PathBuf| async move {
        let config = config.display().to_string();
        tokio::task::spawn_blocking(move || {
            paydvm(&["ecash", "into-database", "--config", &config])
        })
        .await
        .unwrap()
    };
    // A node holding the database: refused, nothing moved.
    let location = paydvm_ledger_pg::PgLocation::parse(&url).unwrap();
    let lock = tokio::task::spawn_blocking(move || paydvm_ledger_pg::NodeLock::acquire(&location))
        .await
        .unwrap()
        .unwrap();
    let out = into_database(configs[0].clone()).await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("stop the node"), "{}", stderr(&out));
    assert!(paydvm::config::wallet_path(&base).exists());
    drop(lock);

    let out = into_database(configs[0].clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains(&format!("7 sat at {}", mint.url)), "{said}");
    assert!(
        said.contains("copied 1 pending swaps and 1 deferred events"),
        "{said}"
    );
    assert!(!paydvm::config::wallet_path(&base).exists());
    let moved = format!(
        "{}.moved-to-database",
        paydvm::config::wallet_path(&base).display()
    );
    assert!(Path::new(&moved).exists(), "{said}");

    let store = EcashStore::of(&node).unwrap();
    assert!(store.is_shared(), "{}", store.shown());
    let held = store.holdings().await.unwrap();
    assert_eq!(held.iter().map(|h| h.amount).sum::<u64>(), 7, "{held:?}");
    let (rows, deferred) = tokio::task::spawn_blocking(move || {
        let pending = store.pending_if_any().unwrap().unwrap();
        (pending.all().unwrap(), pending.deferred().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        deferred,
        [paydvm_mints::DeferredRow {
            tries: 0,
            next_try_ms: 0,
            ..put_off
        }],
        "due at once in the database"
    );
    let again = into_database(configs[0].clone()).await;
    assert!(
        stdout(&again).contains("nothing to move"),
        "{}",
        stderr(&again)
    );
}
