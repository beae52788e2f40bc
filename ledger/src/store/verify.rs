//! `verify`: recheck a ledger file from scratch — hash chain, every event against the state
//! machine, stored postings and references against recomputed ones, projections against the
//! replayed state, and every invariant.

use crate::keyed::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{from_sql_int, schema};
use crate::account::Account;
use crate::chain::Hash;
use crate::effect::EffectRecord;
use crate::error::LedgerError;
use crate::invariants;
use crate::job::JobRecord;
use crate::money::Msat;
use crate::refund::RefundRecord;
use crate::state::LedgerState;
use crate::subscription::SubscriptionRecord;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub jobs: usize,
    pub refunds: usize,
    pub accounts: usize,
    pub payment_refs: usize,
    pub head_hash: String,
    /// Projection rows an older version stored without the fields replay now derives (what a
    /// job holds per source, a payment refund's asset). They are accepted as they are; the next
    /// writable open rewrites them.
    pub stale_rows: usize,
}

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error("event {seq}: {reason}")]
    Event { seq: u64, reason: String },
    #[error("projection {table} row {key}: {reason}")]
    Projection {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("invariant: {0}")]
    Invariant(String),
    #[error("head: {0}")]
    Head(String),
    #[error(transparent)]
    Storage(#[from] LedgerError),
}

impl From<rusqlite::Error> for VerifyFailure {
    fn from(e: rusqlite::Error) -> Self {
        VerifyFailure::Storage(e.into())
    }
}

/// Verify a ledger file without changing it.
pub fn verify_file(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyFailure> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(LedgerError::NotFound(path.display().to_string()).into());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    verify_connection(&conn)
}

pub(super) fn bad(seq: u64, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure::Event {
        seq,
        reason: reason.into(),
    }
}

pub fn verify_connection(conn: &Connection) -> Result<VerifyReport, VerifyFailure> {
    let version = schema::schema_version(conn)?;
    if !(schema::OLDEST_READABLE..=schema::SCHEMA_VERSION).contains(&version) {
        return Err(LedgerError::Corrupt(format!(
            "schema version {version}, expected {} to {}",
            schema::OLDEST_READABLE,
            schema::SCHEMA_VERSION
        ))
        .into());
    }
    schema::check_structure(conn, version)?;
    let super::verify_chain::Replayed {
        ledger,
        head,
        changed,
    } = super::verify_chain::replay(conn)?;
    let last = ledger.next_seq() - 1;
    check_head(conn, last, &head)?;
    let state = ledger.state();
    invariants::check_all(state).map_err(VerifyFailure::Invariant)?;
    let changed = (version >= schema::SNAPSHOT_VERSION)
        .then(|| changed.since(conn, last))
        .transpose()?;
    let stale_rows = check_projections(conn, state, changed.as_ref())?;
    Ok(VerifyReport {
        events: last,
        jobs: state.jobs().count(),
        refunds: state.refunds().count(),
        accounts: state.balances().count(),
        payment_refs: state.payment_ref_count(),
        head_hash: hex::encode(head),
        stale_rows,
    })
}

/// The seq of the last event that changed each job and refund, which the `changed` column of
/// their rows must hold (or NULL, for a row last changed before the column existed).
#[derive(Default)]
pub(super) struct LastChanged {
    jobs: HashMap<String, u64>,
    refunds: HashMap<String, u64>,
    /// The head when the column was added: NULL is accepted up to there.
    since: u64,
}

impl LastChanged {
    pub(super) fn note(&mut self, seq: u64, change: &crate::state::Change) {
        if let Some(j) = &change.job {
            self.jobs.insert(j.job.to_string(), seq);
        }
        if let Some(r) = &change.refund {
            self.refunds.insert(r.refund.to_string(), seq);
        }
    }

    /// Reads `changed_since`, the head when the column was added: never beyond the head `last`.
    fn since(mut self, conn: &Connection, last: u64) -> Result<Self, VerifyFailure> {
        let v: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'changed_since'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        self.since = match v {
            Some(v) => v
                .parse()
                .map_err(|_| LedgerError::Corrupt(format!("bad changed_since {v:?}")))?,
            None => {
                return Err(VerifyFailure::Head(
                    "no changed_since recorded for the changed columns".into(),
                ))
            }
        };
        if self.since > last {
            return Err(VerifyFailure::Head(format!(
                "changed_since {} is beyond the head {last}",
                self.since
            )));
        }
        Ok(self)
    }

    /// Whether a row's `changed` value fits the replayed last change.
    fn check(
        &self,
        table: &'static str,
        key: &str,
        stored: Option<i64>,
    ) -> Result<(), VerifyFailure> {
        let map = if table == "jobs" {
            &self.jobs
        } else {
            &self.refunds
        };
        let last = map.get(key).copied().unwrap_or(0);
        let ok = match stored {
            None => last <= self.since,
            // A row written since the column exists was written after `changed_since`.
            Some(c) => u64::try_from(c) == Ok(last) && last > self.since,
        };
        if ok {
            return Ok(());
        }
        Err(VerifyFailure::Projection {
            table,
            key: key.to_string(),
            reason: format!("changed column says {stored:?}, replay says event {last}"),
        })
    }
}

fn check_head(conn: &Connection, last: u64, head: &Hash) -> Result<(), VerifyFailure> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let expected = format!("{last}:{}", hex::encode(head));
    match stored {
        None if last == 0 => Ok(()),
        Some(s) if s == expected => Ok(()),
        Some(s) => Err(VerifyFailure::Head(format!(
            "recorded head {s} but the log ends at {expected} (events removed or added)"
        ))),
        None => Err(VerifyFailure::Head("no head recorded".into())),
    }
}

/// How a table's rows are checked: `column` gives the searchable column (state, done flag) a row
/// must agree with; `legacy` gives, for a record with fields an older version did not store, the
/// JSON that version wrote (accepted as a stale row).
struct Rows<'f, T> {
    column: &'f dyn Fn(&T) -> String,
    legacy: &'f dyn Fn(&T) -> Option<T>,
    /// When the table has a `changed` column (4th in `sql`): how to check it.
    changed: Option<&'f LastChanged>,
}

/// Compare a projection table with the replayed records. `sql` selects the key, the record JSON
/// and the searchable column. Returns how many rows were stale (see [`Rows`]).
fn check_table<T: serde::Serialize>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    expected: HashMap<String, &T>,
    rows_are: Rows<'_, T>,
) -> Result<usize, VerifyFailure> {
    let column = rows_are.column;
    let mut stale = 0usize;
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut seen = 0usize;
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let record: String = r.get(1)?;
        let stored_column = match r.get::<_, rusqlite::types::Value>(2)? {
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        let want = *expected
            .get(&key)
            .ok_or_else(|| VerifyFailure::Projection {
                table,
                key: key.clone(),
                reason: "not in the replayed state".into(),
            })?;
        if let Some(changed) = rows_are.changed {
            changed.check(table, &key, r.get(3)?)?;
        }
        if stored_column != column(want) {
            return Err(VerifyFailure::Projection {
                table,
                key,
                reason: format!(
                    "column says {stored_column:?}, replay says {:?}",
                    column(want)
                ),
            });
        }
        if serde_json::to_string(want).map_err(LedgerError::from)? != record {
            let old = (rows_are.legacy)(want)
                .map(|old| serde_json::to_string(&old))
                .transpose()
                .map_err(LedgerError::from)?;
            if old.as_deref() != Some(record.as_str()) {
                return Err(VerifyFailure::Projection {
                    table,
                    key,
                    reason: "differs from the replayed state".into(),
                });
            }
            stale += 1;
        }
        seen += 1;
    }
    if seen != expected.len() {
        return Err(VerifyFailure::Projection {
            table,
            key: "*".into(),
            reason: format!("{seen} rows stored, {} replayed", expected.len()),
        });
    }
    Ok(stale)
}

/// A job as a version without held sources stored it.
fn legacy_job(j: &JobRecord) -> Option<JobRecord> {
    let mut old = j.clone();
    old.held_assets.clear();
    old.held_credit = Msat::ZERO;
    (&old != j).then_some(old)
}

/// A refund as a version without refund assets stored it.
fn legacy_refund(r: &RefundRecord) -> Option<RefundRecord> {
    let mut old = r.clone();
    old.asset = None;
    (&old != r).then_some(old)
}

fn check_projections(
    conn: &Connection,
    state: &LedgerState,
    changed: Option<&LastChanged>,
) -> Result<usize, VerifyFailure> {
    let (jobs_sql, refunds_sql) = match changed {
        Some(_) => (
            "SELECT job, record, state, changed FROM jobs",
            "SELECT refund, record, state, changed FROM refunds",
        ),
        None => (
            "SELECT job, record, state FROM jobs",
            "SELECT refund, record, state FROM refunds",
        ),
    };
    let mut stale = check_table(
        conn,
        "jobs",
        jobs_sql,
        state.jobs().map(|j| (j.job.to_string(), j)).collect(),
        Rows {
            column: &|j: &JobRecord| j.state.as_str().to_string(),
            legacy: &legacy_job,
            changed,
        },
    )?;
    stale += check_table(
        conn,
        "refunds",
        refunds_sql,
        state.refunds().map(|r| (r.refund.to_string(), r)).collect(),
        Rows {
            column: &|r: &RefundRecord| r.state.as_str().to_string(),
            legacy: &legacy_refund,
            changed,
        },
    )?;
    check_table(
        conn,
        "subscriptions",
        "SELECT subscription, record, subscription FROM subscriptions",
        state
            .subscriptions()
            .map(|s| (s.subscription.to_string(), s))
            .collect(),
        Rows {
            column: &|s: &SubscriptionRecord| s.subscription.to_string(),
            legacy: &|_| None,
            changed: None,
        },
    )?;
    check_table(
        conn,
        "effects",
        "SELECT effect, record, done FROM effects",
        state.effects().map(|e| (e.effect.to_string(), e)).collect(),
        Rows {
            column: &|e: &EffectRecord| u8::from(e.outcome.is_some()).to_string(),
            legacy: &|_| None,
            changed: None,
        },
    )?;
    let balances: HashMap<String, (u64, u64)> = state
        .balances()
        .map(|(a, b): (&Account, _)| (a.to_string(), (b.debits.as_msat(), b.credits.as_msat())))
        .collect();
    let mut stmt = conn.prepare("SELECT account, debits, credits FROM balances")?;
    let mut rows = stmt.query([])?;
    let mut seen = 0usize;
    while let Some(r) = rows.next()? {
        let account: String = r.get(0)?;
        let got = (
            from_sql_int(r.get(1)?, "debits")?,
            from_sql_int(r.get(2)?, "credits")?,
        );
        if balances.get(&account) != Some(&got) {
            return Err(VerifyFailure::Projection {
                table: "balances",
                key: account,
                reason: "differs from the replayed postings".into(),
            });
        }
        seen += 1;
    }
    if seen != balances.len() {
        return Err(VerifyFailure::Projection {
            table: "balances",
            key: "*".into(),
            reason: format!("{seen} rows stored, {} replayed", balances.len()),
        });
    }
    let mut stmt = conn.prepare("SELECT reference, seq FROM payments")?;
    let mut rows = stmt.query([])?;
    let mut seen = 0usize;
    while let Some(r) = rows.next()? {
        let reference: String = r.get(0)?;
        let seq = from_sql_int(r.get(1)?, "seq")?;
        let known = crate::ids::PaymentRef::new(reference.clone())
            .ok()
            .and_then(|p| state.payment_ref_seq(&p));
        if known != Some(seq) {
            return Err(VerifyFailure::Projection {
                table: "payments",
                key: reference,
                reason: "not credited by that event on replay".into(),
            });
        }
        seen += 1;
    }
    if seen != state.payment_ref_count() {
        return Err(VerifyFailure::Projection {
            table: "payments",
            key: "*".into(),
            reason: format!("{seen} rows stored, {} replayed", state.payment_ref_count()),
        });
    }
    Ok(stale)
}
