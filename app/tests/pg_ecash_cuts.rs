//! Ecash on PostgreSQL while the database connection fails under it (issue 14): two `paydvm run
//! --standby` nodes reach the database through a proxy that, every few hundred milliseconds
//! while Cashu-token and NutZap jobs run, cuts the next `COMMIT` on any connection: either the
//! server commits and the answer is lost, or the server never gets it. The cuts land on the
//! ledger's appends, the wallet's transactions (intake and refund settles) and the work queue
//! alike. Every job still ends once, each ecash refund reaches its customer once and is
//! claimable, and the wallet in the database holds exactly what the ledger says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm_ledger::{JobId, JobState, LedgerStore, Msat};
use paydvm_ledger_pg::cut_proxy::Cut;

use crate::cashu_mint::TestMint;
use crate::crash_node::{logs, RunningNode};
use crate::node::{start_relay, test_node};
use crate::pg_node::{fresh_database_async, through_proxy};
use crate::reconcile::{asset, reconcile_json};
use crate::standby_ecash::{
    booked_at_mints, claim_nutzap_refunds, claim_token_refunds, ecash_payers, node_p2pk,
    wallet_balance_in_database, PRICE_SAT,
};
use crate::standby_nodes::{
    ended_jobs, poll_until, read, refunds_settled_once, serving, undelivered, with_state_dirs,
    Ending,
};

const TOKEN_JOBS: usize = 24;
const NUTZAP_JOBS: usize = 12;
/// Between one cut and arming the next.
const CUT_EVERY: Duration = Duration::from_millis(300);

/// Arms a cut (alternating lost answers and lost commits) every [`CUT_EVERY`] until `stop`.
fn cutting(proxy: Arc<paydvm_ledger_pg::cut_proxy::CutProxy>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            if proxy.cuts() == n {
                let cut = if n.is_multiple_of(2) {
                    Cut::AnswerLost
                } else {
                    Cut::CommitLost
                };
                proxy.arm(cut, false);
                n += 1;
            }
            std::thread::sleep(CUT_EVERY);
            // Wait for the armed cut to fire before arming the next.
            while proxy.cuts() < n && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecash_jobs_end_once_and_the_wallet_matches_the_ledger_through_cut_commits() {
    let url = fresh_database_async().await;
    let (proxy, through) = through_proxy(&url, 5_000).await;
    let proxy = Arc::new(proxy);
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
    let configs = with_state_dirs(&config, &through, 3);
    let relays = std::slice::from_ref(&relay_url);
    let (tokens, nutzaps) = ecash_payers(dir, &relay_url, &mint.url).await;
    let mut nodes: HashMap<u32, RunningNode> = (1..=2)
        .map(|run| {
            let node =
                RunningNode::start_with_args(&configs[run as usize - 1], run, &["--standby"]);
            (run, node)
        })
        .collect();
    serving(dir, &[1, 2]).await;

    let stop = Arc::new(AtomicBool::new(false));
    cutting(Arc::clone(&proxy), Arc::clone(&stop));
    let mut jobs = tokens.send(0..TOKEN_JOBS).await;
    let zapped = nutzaps.send(0..NUTZAP_JOBS).await;
    nutzaps.pay(&zapped).await;
    jobs.extend(zapped);
    let all = jobs.len();
    // A node told to stop (a lost commit it could not check) exits; the standby takes over and
    // a third node stands by in its place.
    let mut next_run = 3;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let url_now = url.clone();
        let ended = tokio::task::spawn_blocking(move || ended_jobs(&read(&url_now)))
            .await
            .unwrap();
        if ended == all {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let url_now = url.clone();
            let open = tokio::task::spawn_blocking(move || not_ended(&url_now))
                .await
                .unwrap();
            panic!(
                "{ended} of {all} jobs ended after {} cuts; open: {open}\n{}",
                proxy.cuts(),
                logs(dir)
            );
        }
        let exited: Vec<u32> = nodes
            .iter_mut()
            .filter_map(|(run, n)| n.child.try_wait().unwrap().map(|_| *run))
            .collect();
        for run in exited {
            nodes.remove(&run);
            eprintln!("run {run} exited; run {next_run} stands by");
            let node = RunningNode::start_with_args(&configs[2], next_run, &["--standby"]);
            nodes.insert(next_run, node);
            next_run += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let cuts = proxy.cuts();
    poll_until(&url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    for (run, node) in nodes {
        let stopped = node.stop();
        assert!(stopped.success(), "run {run}: {stopped:?}\n{}", logs(dir));
    }
    eprintln!("{cuts} commits cut; {} node runs", next_run - 1);
    eprintln!("warnings and errors by module:\n{}", by_module(&logs(dir)));
    assert!(cuts >= 5, "only {cuts} cuts");

    check_jobs(&url, &jobs);
    let refunded: Vec<EventId> = jobs
        .iter()
        .filter(|(_, e)| *e == Ending::Refund)
        .map(|(id, _)| *id)
        .collect();
    let claimed = claim_token_refunds(&tokens, relays, &mint.url, &refunded).await
        + claim_nutzap_refunds(&nutzaps, relays, &mint.url, &refunded).await;
    assert_eq!(
        claimed,
        refunded.len() as u64 * PRICE_SAT,
        "each refund claimed once"
    );
    let held = (all - refunded.len()) as u64 * PRICE_SAT;
    let p2pk = node_p2pk(dir);
    assert_eq!(
        wallet_balance_in_database(&url, &p2pk, &mint.url).await,
        held
    );
    assert_eq!(booked_at_mints(&url), held * 1_000);
    let out = crate::cli::paydvm(&["ledger", "verify", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::stderr(&out));
    let (code, report) = reconcile_json(&configs[2]).await;
    let mint_asset = asset(&report, &format!("asset:mint:{}", mint.url));
    assert_eq!(mint_asset["status"], "match", "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}

/// Every request one job, ended as it should, holding nothing; each refund settled once.
fn check_jobs(url: &str, jobs: &[(EventId, Ending)]) {
    let store = read(url);
    let state = store.state();
    assert_eq!(state.jobs().count(), jobs.len(), "one job per request");
    for (id, ending) in jobs {
        let job = state.job(&JobId::new(id.to_hex()).unwrap()).unwrap();
        let expected = match ending {
            Ending::Refund => JobState::Refunded,
            _ => JobState::Succeeded,
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert_eq!(
            state.held(&paydvm_ledger::Account::Job(job.job.clone())),
            Msat::ZERO
        );
    }
    refunds_settled_once(&store);
}

/// The jobs not ended, each with its state and the types of its events (for a failure's
/// message).
fn not_ended(url: &str) -> String {
    let store = read(url);
    let state = store.state();
    let open: Vec<String> = state
        .jobs()
        .filter(|j| !matches!(j.state, JobState::Succeeded | JobState::Refunded))
        .map(|j| {
            let steps: Vec<&str> = store
                .audit(j.job.as_str())
                .ok()
                .flatten()
                .map(|t| t.events.iter().map(|e| e.event.type_name()).collect())
                .unwrap_or_default();
            format!("{} {:?} [{}]", j.job, j.state, steps.join(" "))
        })
        .collect();
    open.join("; ")
}

/// How many warning and error lines each module logged (what the cuts ran into).
fn by_module(logs: &str) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in logs.lines() {
        let mut words = line.split_whitespace().skip(1);
        if let (Some("WARN" | "ERROR"), Some(module)) = (words.next(), words.next()) {
            *counts.entry(module.trim_end_matches(':')).or_default() += 1;
        }
    }
    let lines: Vec<String> = counts
        .iter()
        .map(|(m, n)| format!("  {n:>4} {m}"))
        .collect();
    lines.join("\n")
}
