//! The money invariants of the design (§5), checked on every append in debug builds (for what the
//! event touched) and over the whole state by `verify`.

use std::collections::HashMap;

use crate::account::{Account, Balance};
use crate::event::Asset;
use crate::job::{JobRecord, JobState};
use crate::money::Msat;
use crate::refund::RefundRecord;
use crate::state::{Change, LedgerState};

/// Check the invariants of the records one change touched.
pub fn check_change(state: &LedgerState, change: &Change) -> Result<(), String> {
    for (account, balance) in &change.balances {
        check_sign(account, balance)?;
    }
    if let Some(job) = &change.job {
        check_job(state, job)?;
    }
    if let Some(r) = &change.refund {
        check_refund(state, r)?;
    }
    if !change.reserved.is_empty() {
        check_reservations(state)?;
    }
    Ok(())
}

/// Check every invariant over the whole state.
pub fn check_all(state: &LedgerState) -> Result<(), String> {
    let (mut debits, mut credits) = (0u128, 0u128);
    for (account, balance) in state.balances() {
        debits += u128::from(balance.debits.as_msat());
        credits += u128::from(balance.credits.as_msat());
        check_sign(account, balance)?;
    }
    if debits != credits {
        return Err(format!(
            "postings do not balance: debits {debits} != credits {credits}"
        ));
    }
    for job in state.jobs() {
        check_job(state, job)?;
    }
    for r in state.refunds() {
        check_refund(state, r)?;
    }
    if !state.job_indexes_agree() {
        return Err(
            "the job indexes (quotes by expiry, pending per customer) disagree with the jobs"
                .into(),
        );
    }
    if !state.subscription_index_agrees() {
        return Err("the subscriber index disagrees with the subscriptions".into());
    }
    check_reservations(state)
}

/// Held (liability) accounts never go negative, and neither do asset accounts: a wallet cannot
/// have paid out more than the ledger saw come in (the operator's own money is booked as float).
fn check_sign(account: &Account, balance: &Balance) -> Result<(), String> {
    if account.is_held() && balance.held().is_none() {
        return Err(format!("{account} is negative"));
    }
    if account.is_asset() && balance.owned().is_none() {
        return Err(format!(
            "{account} is negative: credits {} exceed debits {}",
            balance.credits, balance.debits
        ));
    }
    Ok(())
}

/// The incrementally kept reserved total of every asset equals the sum over the refunds in
/// flight or unknown on it.
fn check_reservations(state: &LedgerState) -> Result<(), String> {
    let mut expected: HashMap<Asset, Msat> = HashMap::new();
    for r in state.refunds() {
        let reservation = r.reservation().map_err(|e| e.to_string())?;
        if let Some((asset, amount)) = reservation {
            let total = expected.entry(asset).or_default();
            *total = total.checked_add(amount).map_err(|e| e.to_string())?;
        }
    }
    for (asset, total) in &state.reserved {
        if expected.get(asset).copied().unwrap_or_default() != *total {
            return Err(format!(
                "asset {asset}: reserved {total}, refunds in flight hold {}",
                expected.get(asset).copied().unwrap_or_default()
            ));
        }
    }
    if let Some((asset, total)) = expected
        .iter()
        .find(|(a, t)| !t.is_zero() && !state.reserved.contains_key(*a))
    {
        return Err(format!(
            "asset {asset}: nothing reserved, refunds in flight hold {total}"
        ));
    }
    Ok(())
}

fn check_job(state: &LedgerState, job: &JobRecord) -> Result<(), String> {
    let account = Account::Job(job.job.clone());
    let balance = state.balance(&account);
    let held = balance
        .held()
        .ok_or_else(|| format!("job {} holds a negative amount", job.job))?;
    if job.state.is_terminal() && !held.is_zero() {
        return Err(format!(
            "job {} is {} but still holds {held}",
            job.job, job.state
        ));
    }
    if job.refunded_total > job.funded_total {
        return Err(format!(
            "job {}: refunds {} exceed payments {}",
            job.job, job.refunded_total, job.funded_total
        ));
    }
    if matches!(job.state, JobState::PartiallyPaid | JobState::Paid) && held != job.applied {
        return Err(format!(
            "job {} is {} but holds {held}, not the {} applied",
            job.job, job.state, job.applied
        ));
    }
    if job.state == JobState::Paid && Some(job.applied) != job.price {
        return Err(format!("job {} is paid but applied != price", job.job));
    }
    if job.state == JobState::Succeeded && job.result_event.is_none() {
        return Err(format!("job {} succeeded without a result event", job.job));
    }
    let by_source = job.held_total().map_err(|e| e.to_string())?;
    if by_source != held {
        return Err(format!(
            "job {} holds {held} but its sources (assets and credit) add up to {by_source}",
            job.job
        ));
    }
    Ok(())
}

fn check_refund(state: &LedgerState, r: &RefundRecord) -> Result<(), String> {
    let held = state
        .balance(&Account::Refund(r.refund.clone()))
        .held()
        .ok_or_else(|| format!("refund {} is negative", r.refund))?;
    let expected = if r.state.is_closed() {
        Msat::ZERO
    } else {
        r.amount
    };
    if held != expected {
        return Err(format!(
            "refund {} is {} but its account holds {held}, expected {expected}",
            r.refund,
            r.state.as_str()
        ));
    }
    Ok(())
}
