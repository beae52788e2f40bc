//! The few questions a status page asks that the store contract does not: how many events,
//! which jobs moved last, every subscription record. Each reads what is in the database now.

use paydvm_ledger::{LedgerError, SubscriptionRecord};

use crate::client::{get, get_u64, Param, PgError};
use crate::store::PgStore;

impl PgStore {
    /// The seq of the last event written (0 for an empty ledger).
    pub fn event_count(&self) -> Result<u64, LedgerError> {
        let rows = self
            .db
            .query("SELECT COALESCE(max(seq), 0)::bigint FROM events", vec![])?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::Runtime("no row".into()))?;
        Ok(get_u64(row, 0, "seq")?)
    }

    /// The ids of the `limit` jobs with the newest events among the last `scan` events, newest
    /// first (read backwards from the end of the log: the cost does not grow with history).
    pub fn latest_jobs(&self, limit: usize, scan: usize) -> Result<Vec<String>, LedgerError> {
        let scan = i64::try_from(scan).unwrap_or(i64::MAX);
        let rows = self.db.query(
            "SELECT job FROM events WHERE job IS NOT NULL ORDER BY seq DESC LIMIT $1",
            vec![Box::new(scan) as Param],
        )?;
        let mut out: Vec<String> = Vec::new();
        for row in &rows {
            let job: String = get(row, 0)?;
            if !out.contains(&job) {
                out.push(job);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every subscription record, by id.
    pub fn subscription_records(&self) -> Result<Vec<SubscriptionRecord>, LedgerError> {
        let rows = self.db.query(
            "SELECT record FROM subscriptions ORDER BY subscription",
            vec![],
        )?;
        rows.iter()
            .map(|row| {
                let text: String = get(row, 0)?;
                serde_json::from_str(&text)
                    .map_err(|e| LedgerError::Corrupt(format!("subscriptions row: {e}")))
            })
            .collect()
    }
}
