//! `paydvm status` / `paydvm ledger status <file>`: jobs by state and account balances from the
//! replayed state, and, when a node is running on that ledger, which of its relays are up (asked
//! through its control socket).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use paydvm_ledger::{
    Account, Balance, EntitlementState, JobState, LedgerState, LedgerStore, SubscriptionRecord,
};
use serde::Serialize;

use super::{ledger_file, output, EXIT_OK};
use crate::config::LedgerPlace;
use crate::node::control;
use crate::node::relays::RelayReport;

#[derive(Debug, Serialize)]
pub struct Status {
    pub events: u64,
    pub head_hash: String,
    pub jobs_total: usize,
    /// Only states with at least one job.
    pub jobs_by_state: BTreeMap<&'static str, usize>,
    pub refunds_by_state: BTreeMap<&'static str, usize>,
    /// Assets, revenue, fees, unmatched: one line each.
    pub system_accounts: Vec<AccountLine>,
    /// Per-job, per-customer, per-refund and per-subscription liabilities, summed by kind.
    pub held_by_kind: BTreeMap<&'static str, KindTotal>,
    /// Every account, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<AccountLine>>,
    /// Subscriptions with a period (active), by id.
    pub subscriptions: Vec<SubscriptionLine>,
    /// Subscriptions by state (quoted, active, expired).
    pub subscriptions_by_state: BTreeMap<&'static str, usize>,
    /// What the running node says; `running: false` when no node serves this ledger.
    pub node: NodeView,
}

#[derive(Debug, Default, Serialize)]
pub struct NodeView {
    pub running: bool,
    /// Each configured relay, up or down (empty when the node is not running).
    pub relays: Vec<RelayReport>,
}

#[derive(Debug, Serialize)]
pub struct AccountLine {
    pub account: String,
    pub debits_msat: u64,
    pub credits_msat: u64,
    /// Balance in the account's normal direction (debits − credits for assets and fees).
    pub balance_msat: i128,
}

/// An active subscription: whose, which tier, until when, and how much of its quota is used.
#[derive(Debug, Serialize)]
pub struct SubscriptionLine {
    pub subscription: String,
    pub subscriber: String,
    pub tier: String,
    /// Unix ms.
    pub period_end: u64,
    pub used: u32,
    pub quota: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct KindTotal {
    pub accounts: usize,
    /// How many of them hold money now.
    pub non_zero: usize,
    pub held_msat: i128,
}

/// `control`: what the local files of the node serving this ledger are named after (its
/// control socket is asked), when known: the ledger file, or the config's `state_dir` base.
pub fn run(
    place: &LedgerPlace,
    control: Option<&Path>,
    json: bool,
    all_accounts: bool,
) -> anyhow::Result<u8> {
    let store = ledger_file::open_existing(place)?;
    let (events, head) = store.head();
    let mut status = summarize(store.state(), events, hex(&head), all_accounts);
    drop(store);
    if let Some(base) = control {
        status.node = node_view(base)?;
    }
    if json {
        output::print_json(&status)?;
    } else {
        output::print(&render(&status))?;
    }
    Ok(EXIT_OK)
}

/// Asks the node serving `ledger`, if any, what it sees.
fn node_view(ledger: &Path) -> anyhow::Result<NodeView> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let relays = runtime
        .block_on(control::relays(ledger))
        .with_context(|| format!("asking the node on {}", ledger.display()))?;
    Ok(match relays {
        Some(relays) => NodeView {
            running: true,
            relays,
        },
        None => NodeView::default(),
    })
}

pub fn summarize(state: &LedgerState, events: u64, head_hash: String, all: bool) -> Status {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for j in state.jobs() {
        *counts.entry(j.state.as_str()).or_default() += 1;
    }
    let mut refunds_by_state = BTreeMap::new();
    for r in state.refunds() {
        *refunds_by_state.entry(r.state.as_str()).or_default() += 1;
    }
    let mut system_accounts = Vec::new();
    let mut held_by_kind: BTreeMap<&'static str, KindTotal> = BTreeMap::new();
    let mut every = Vec::new();
    for (account, balance) in state.balances() {
        let line = account_line(account, balance);
        match per_entity_kind(account) {
            Some(kind) => {
                let t = held_by_kind.entry(kind).or_default();
                t.accounts += 1;
                t.non_zero += usize::from(line.balance_msat != 0);
                t.held_msat += line.balance_msat;
                if all {
                    every.push(line);
                }
            }
            None => {
                if all {
                    every.push(account_line(account, balance));
                }
                system_accounts.push(line);
            }
        }
    }
    system_accounts.sort_by(|a, b| a.account.cmp(&b.account));
    every.sort_by(|a, b| a.account.cmp(&b.account));
    let (subscriptions, subscriptions_by_state) = subscriptions(state);
    Status {
        events,
        head_hash,
        jobs_total: counts.values().sum(),
        jobs_by_state: counts,
        refunds_by_state,
        system_accounts,
        held_by_kind,
        accounts: all.then_some(every),
        subscriptions,
        subscriptions_by_state,
        node: NodeView::default(),
    }
}

fn subscriptions(state: &LedgerState) -> (Vec<SubscriptionLine>, BTreeMap<&'static str, usize>) {
    let mut by_state = BTreeMap::new();
    let mut active = Vec::new();
    for s in state.subscriptions() {
        let name = match s.state {
            EntitlementState::Quoted => "quoted",
            EntitlementState::Active => "active",
            EntitlementState::Expired => "expired",
        };
        *by_state.entry(name).or_default() += 1;
        if s.state == EntitlementState::Active {
            active.push(subscription_line(s));
        }
    }
    active.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    (active, by_state)
}

/// One active subscription's line (also the status page's).
pub(crate) fn subscription_line(s: &SubscriptionRecord) -> SubscriptionLine {
    SubscriptionLine {
        subscription: s.subscription.to_string(),
        subscriber: s.subscriber.to_string(),
        tier: s.tier.clone(),
        period_end: s.period_end.0,
        used: s.used,
        quota: s.quota,
    }
}

pub(crate) fn account_line(account: &Account, b: &Balance) -> AccountLine {
    AccountLine {
        account: account.to_string(),
        debits_msat: b.debits.as_msat(),
        credits_msat: b.credits.as_msat(),
        balance_msat: b.signed(account.is_debit_normal()),
    }
}

/// Accounts that exist once per job, customer, refund or subscription.
pub(crate) fn per_entity_kind(account: &Account) -> Option<&'static str> {
    match account {
        Account::Job(_) => Some("job"),
        Account::Credit(_) => Some("credit"),
        Account::Refund(_) => Some("refund"),
        Account::Subscription(_) => Some("subscription"),
        Account::Asset(_)
        | Account::Unmatched
        | Account::Revenue
        | Account::Fees
        | Account::Float
        | Account::WrittenOff => None,
    }
}

fn render(s: &Status) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_status(&mut out, s);
    out
}

fn write_status(out: &mut String, s: &Status) -> std::fmt::Result {
    writeln!(out, "events {}  head {}", s.events, s.head_hash)?;
    write_node(out, &s.node)?;
    writeln!(out, "jobs {}", s.jobs_total)?;
    for state in JobState::ALL {
        if let Some(n) = s.jobs_by_state.get(state.as_str()) {
            writeln!(out, "  {:<16} {n:>10}", state.as_str())?;
        }
    }
    if !s.refunds_by_state.is_empty() {
        writeln!(
            out,
            "refunds {}",
            s.refunds_by_state.values().sum::<usize>()
        )?;
        for (state, n) in &s.refunds_by_state {
            writeln!(out, "  {state:<16} {n:>10}")?;
        }
    }
    write_subscriptions(out, s)?;
    writeln!(out, "accounts (balance in msat)")?;
    for a in &s.system_accounts {
        writeln!(out, "  {:<40} {:>20}", a.account, a.balance_msat)?;
    }
    for (kind, t) in &s.held_by_kind {
        writeln!(
            out,
            "  {:<40} {:>20}  ({} accounts, {} non-zero)",
            format!("liability:{kind}:*"),
            t.held_msat,
            t.accounts,
            t.non_zero
        )?;
    }
    if let Some(all) = &s.accounts {
        writeln!(out, "all accounts")?;
        for a in all {
            writeln!(
                out,
                "  {:<40} {:>20}  (Dr {} Cr {})",
                a.account, a.balance_msat, a.debits_msat, a.credits_msat
            )?;
        }
    }
    Ok(())
}

fn write_subscriptions(out: &mut String, s: &Status) -> std::fmt::Result {
    if s.subscriptions_by_state.is_empty() {
        return Ok(());
    }
    let total: usize = s.subscriptions_by_state.values().sum();
    writeln!(out, "subscriptions {total}")?;
    for (state, n) in &s.subscriptions_by_state {
        writeln!(out, "  {state:<16} {n:>10}")?;
    }
    for line in &s.subscriptions {
        writeln!(
            out,
            "  {} {} tier {} until {} ms: {} of {} jobs used",
            line.subscription, line.subscriber, line.tier, line.period_end, line.used, line.quota
        )?;
    }
    Ok(())
}

fn write_node(out: &mut String, node: &NodeView) -> std::fmt::Result {
    if !node.running {
        return writeln!(out, "node not running");
    }
    let up = node.relays.iter().filter(|r| r.up).count();
    writeln!(out, "relays {up} of {} up", node.relays.len())?;
    for r in &node.relays {
        let state = if r.up { "up" } else { "down" };
        let why = r.last_error.as_deref().unwrap_or("");
        writeln!(out, "  {:<40} {state:<5} {why}", r.url)?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
