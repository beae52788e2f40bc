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

use paydvm_ledger::{JobState, LedgerStore};
use paydvm_ledger_pg::cut_proxy::Cut;

use crate::crash_node::{logs, RunningNode};
use crate::pg_node::through_proxy;
use crate::standby_ecash::{
    check_jobs, claim_refunds_once, wallet_matches_ledger, EcashSetup, PRICE_SAT,
};
use crate::standby_nodes::{ended_jobs, poll_until, read, serving, undelivered, with_state_dirs};

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
    let s = EcashSetup::start().await;
    let (url, dir, mint) = (&s.url, s.tmp.path(), &s.mint);
    let (proxy, through) = through_proxy(url, 5_000).await;
    let proxy = Arc::new(proxy);
    let configs = with_state_dirs(&s.config, &through, 3);
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
    let jobs = s.send_jobs(0..TOKEN_JOBS, 0..NUTZAP_JOBS).await;
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
    poll_until(url, dir, "every reply delivered", |s| undelivered(s) == 0).await;
    for (run, node) in nodes {
        let stopped = node.stop();
        assert!(stopped.success(), "run {run}: {stopped:?}\n{}", logs(dir));
    }
    eprintln!("{cuts} commits cut; {} node runs", next_run - 1);
    eprintln!("warnings and errors by module:\n{}", by_module(&logs(dir)));
    assert!(cuts >= 5, "only {cuts} cuts");

    check_jobs(url, &jobs);
    let payers = (&s.tokens, &s.nutzaps);
    let refunded = claim_refunds_once(payers, s.relays(), &mint.url, &jobs).await;
    let out = crate::cli::paydvm(&["ledger", "verify", url]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::stderr(&out));
    let held = (all - refunded) as u64 * PRICE_SAT;
    wallet_matches_ledger(url, dir, &mint.url, &configs[2], held).await;
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
