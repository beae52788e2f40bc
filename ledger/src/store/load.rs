//! Reading single records back from the projection tables, by key: what a store keeping open
//! work only loads before planning an event that names a record no longer in memory.

use rusqlite::{params, Connection, OptionalExtension};

use super::{from_sql_int, key_digest, to_sql_int};
use crate::account::{Account, Balance};
use crate::effect::EffectRecord;
use crate::error::LedgerError;
use crate::ids::{EffectId, IdemKey, JobId, PaymentRef, RefundId};
use crate::job::JobRecord;
use crate::refund::RefundRecord;

/// A stored row and the seq of the last event that changed it (`None`: before the `changed`
/// column existed, or a schema without it).
pub(crate) struct Row<T> {
    pub record: T,
    pub changed: Option<u64>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, LedgerError> {
    serde_json::from_str(json).map_err(|e| LedgerError::Corrupt(format!("{what} row: {e}")))
}

fn changed(v: Option<i64>) -> Result<Option<u64>, LedgerError> {
    v.map(|v| from_sql_int(v, "changed")).transpose()
}

/// `with_changed`: the schema has the `changed` columns (version 2 on).
pub(crate) fn job(
    conn: &Connection,
    id: &JobId,
    with_changed: bool,
) -> Result<Option<Row<JobRecord>>, LedgerError> {
    let sql = if with_changed {
        "SELECT record, changed FROM jobs WHERE job = ?1"
    } else {
        "SELECT record, NULL FROM jobs WHERE job = ?1"
    };
    record_row(conn, sql, id.as_str(), "job")
}

pub(crate) fn refund(
    conn: &Connection,
    id: &RefundId,
    with_changed: bool,
) -> Result<Option<Row<RefundRecord>>, LedgerError> {
    let sql = if with_changed {
        "SELECT record, changed FROM refunds WHERE refund = ?1"
    } else {
        "SELECT record, NULL FROM refunds WHERE refund = ?1"
    };
    record_row(conn, sql, id.as_str(), "refund")
}

/// One projection row (`record`, `changed`) by its key, decoded.
fn record_row<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    id: &str,
    what: &str,
) -> Result<Option<Row<T>>, LedgerError> {
    let row: Option<(String, Option<i64>)> = conn
        .prepare_cached(sql)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(json, c)| {
        Ok(Row {
            record: decode(what, &json)?,
            changed: changed(c)?,
        })
    })
    .transpose()
}

pub(crate) fn effect(
    conn: &Connection,
    id: &EffectId,
) -> Result<Option<EffectRecord>, LedgerError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT record FROM effects WHERE effect = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    json.map(|j| decode("effect", &j)).transpose()
}

pub(crate) fn subscription(
    conn: &Connection,
    id: &crate::ids::SubscriptionId,
) -> Result<Option<crate::subscription::SubscriptionRecord>, LedgerError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT record FROM subscriptions WHERE subscription = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    json.map(|j| decode("subscription", &j)).transpose()
}

pub(crate) fn balance(
    conn: &Connection,
    account: &Account,
) -> Result<Option<Balance>, LedgerError> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT debits, credits FROM balances WHERE account = ?1")?
        .query_row([account.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(d, c)| {
        Ok(Balance {
            debits: crate::Msat::from_msat(from_sql_int(d, "debits")?),
            credits: crate::Msat::from_msat(from_sql_int(c, "credits")?),
        })
    })
    .transpose()
}

/// The event that credited `reference`, if one did.
pub(crate) fn payment_seq(
    conn: &Connection,
    reference: &PaymentRef,
) -> Result<Option<u64>, LedgerError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM payments WHERE reference = ?1")?
        .query_row([reference.as_str()], |r| r.get(0))
        .optional()?;
    seq.map(|s| from_sql_int(s, "seq")).transpose()
}

/// The event stored under `key`, if any. Only writable stores ask (always schema 4 or later).
pub(crate) fn key_seq(conn: &Connection, key: &IdemKey) -> Result<Option<u64>, LedgerError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM events WHERE key_digest = ?1 AND idem_key = ?2")?
        .query_row(params![key_digest(key.as_str()), key.as_str()], |r| {
            r.get(0)
        })
        .optional()?;
    seq.map(|s| from_sql_int(s, "seq")).transpose()
}

/// The hash stored for event `seq`.
pub(crate) fn event_hash(conn: &Connection, seq: u64) -> Result<Option<Vec<u8>>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT hash FROM events WHERE seq = ?1")?
        .query_row(params![to_sql_int(seq, "seq")?], |r| r.get(0))
        .optional()?)
}
