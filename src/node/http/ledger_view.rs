//! The status page's read path over the ledger: a read-only connection of its own (never the
//! core's; the core decides without waiting on a page), opened once, keeping only open work in
//! memory, and asked only SQL-backed questions, so each answer reads what is on disk now (a
//! ledger file or PostgreSQL alike).

use std::collections::BTreeMap;
use std::sync::Mutex;

use paydvm_ledger::store::Durability;
use paydvm_ledger::{LedgerError, LedgerStore, StoreOptions, SubscriptionRecord};
use rusqlite::Connection;
use serde::Serialize;

use crate::cli::status::SubscriptionLine;
use crate::cli::status::{account_line, per_entity_kind, subscription_line, AccountLine};
use crate::cli::timeline;
use crate::config::LedgerPlace;
use crate::ledger_handle::LedgerHandle;

/// How many of the latest jobs the page lists.
pub const LATEST_JOBS: usize = 50;
/// How many of the newest events are searched for them (each job has several).
const SCAN_EVENTS: usize = 5_000;

/// What the page shows of the ledger.
#[derive(Debug, Serialize)]
pub struct LedgerReport {
    pub events: u64,
    pub jobs_by_state: BTreeMap<&'static str, u64>,
    pub refunds_by_state: BTreeMap<&'static str, u64>,
    /// Assets, revenue, fees, float, ...: one line each.
    pub accounts: Vec<AccountLine>,
    /// The latest jobs, newest first, each with its trail.
    pub jobs: Vec<JobView>,
    pub subscriptions: Vec<SubscriptionLine>,
}

/// One job and its audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job: String,
    pub kind: u16,
    pub state: &'static str,
    pub customer: String,
    pub received_at: u64,
    pub price_msat: Option<u64>,
    pub funded_msat: u64,
    pub refunded_msat: u64,
    pub revenue_msat: u64,
    pub result_event: Option<String>,
    pub trail: Vec<Step>,
}

/// One line of a trail, as `paydvm audit` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: u64,
    pub at: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub detail: String,
    pub postings: Vec<PostingView>,
}

/// One posting of a step: `amount_msat` from `debit`'s side to `credit`'s.
#[derive(Debug, Clone, Serialize)]
pub struct PostingView {
    pub debit: String,
    pub credit: String,
    pub amount_msat: u64,
}

/// The ledger, opened read-only at the first question.
pub struct LedgerView {
    place: LedgerPlace,
    store: Mutex<Option<LedgerHandle>>,
}

impl LedgerView {
    pub fn new(place: LedgerPlace) -> LedgerView {
        LedgerView {
            place,
            store: Mutex::new(None),
        }
    }

    /// The ledger file (none for a database ledger).
    pub fn file(&self) -> Option<&std::path::Path> {
        self.place.file()
    }

    /// Whether the ledger file is still there (a database has no file to lose).
    pub fn present(&self) -> bool {
        self.place.file().is_none_or(|path| path.is_file())
    }

    /// Reads the report. Blocking (SQLite): call from a blocking task.
    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        let mut guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let options = StoreOptions::bounded(Durability::Normal)
                .read_only()
                .page_cache_kib(crate::node::ledger_open::NODE_PAGE_CACHE_KIB);
            *guard = Some(LedgerHandle::open(&self.place, &options)?);
        }
        let store = guard.as_ref().expect("opened above");
        let result = report(store);
        if result.is_err() {
            // Opened afresh next time (the file may have been replaced).
            *guard = None;
        }
        result
    }
}

fn report(store: &LedgerHandle) -> Result<LedgerReport, LedgerError> {
    let (events, latest, subscriptions) = match store {
        LedgerHandle::Sqlite(s) => {
            let conn = s.connection();
            (
                event_count(conn)?,
                latest_jobs(conn, LATEST_JOBS)?,
                subscription_records(conn)?,
            )
        }
        LedgerHandle::Postgres(p) => (
            p.event_count()?,
            p.latest_jobs(LATEST_JOBS, SCAN_EVENTS)?,
            p.subscription_records()?,
        ),
    };
    let mut accounts = Vec::new();
    for (account, balance) in store.account_balances()? {
        if per_entity_kind(&account).is_none() {
            accounts.push(account_line(&account, &balance));
        }
    }
    let mut jobs = Vec::new();
    for id in latest {
        if let Some(view) = job_view(store, &id)? {
            jobs.push(view);
        }
    }
    Ok(LedgerReport {
        events,
        jobs_by_state: store
            .job_counts()?
            .into_iter()
            .map(|(s, n)| (s.as_str(), n))
            .collect(),
        refunds_by_state: store
            .refund_counts()?
            .into_iter()
            .map(|(s, n)| (s.as_str(), n))
            .collect(),
        accounts,
        jobs,
        subscriptions: subscriptions
            .iter()
            .filter(|r| r.state == paydvm_ledger::EntitlementState::Active)
            .map(subscription_line)
            .collect(),
    })
}

fn job_view(store: &LedgerHandle, id: &str) -> Result<Option<JobView>, LedgerError> {
    let Some(trail) = store.audit(id)? else {
        return Ok(None);
    };
    let Some(job) = trail.job else {
        return Ok(None);
    };
    Ok(Some(JobView {
        job: job.job.to_string(),
        kind: job.kind,
        state: job.state.as_str(),
        customer: job.customer.to_string(),
        received_at: job.received_at.0,
        price_msat: job.price.map(|p| p.as_msat()),
        funded_msat: job.funded_total.as_msat(),
        refunded_msat: job.refunded_total.as_msat(),
        revenue_msat: job.revenue.as_msat(),
        result_event: job.result_event.map(|e| e.to_string()),
        trail: trail
            .events
            .into_iter()
            .map(|e| Step {
                seq: e.seq,
                at: e.at,
                kind: e.event.type_name(),
                detail: timeline::detail(&e.event),
                postings: e
                    .postings
                    .into_iter()
                    .map(|p| PostingView {
                        debit: p.debit,
                        credit: p.credit,
                        amount_msat: p.amount_msat,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// The ids of the `limit` jobs with the newest events, newest first: read backwards from the
/// end of the log, so the cost does not grow with the history.
fn latest_jobs(conn: &Connection, limit: usize) -> Result<Vec<String>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT job FROM events WHERE job IS NOT NULL ORDER BY seq DESC LIMIT ?1",
    )?;
    let scan = i64::try_from(SCAN_EVENTS).unwrap_or(i64::MAX);
    let mut rows = stmt.query([scan])?;
    let mut out: Vec<String> = Vec::new();
    while let Some(row) = rows.next()? {
        let job: String = row.get(0)?;
        if !out.contains(&job) {
            out.push(job);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

fn event_count(conn: &Connection) -> Result<u64, LedgerError> {
    let n: i64 = conn.query_row("SELECT COALESCE(max(seq), 0) FROM events", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Every subscription record, from the projection table (few rows).
fn subscription_records(conn: &Connection) -> Result<Vec<SubscriptionRecord>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT record FROM subscriptions ORDER BY subscription")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            serde_json::from_str(&row.get::<_, String>(0)?)
                .map_err(|e| LedgerError::Corrupt(format!("subscriptions row: {e}")))?,
        );
    }
    Ok(out)
}
