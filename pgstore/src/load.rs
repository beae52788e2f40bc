//! The database as a [`LogSource`]: what loading at open reads. Loading itself (the whole log,
//! or the open work from the newest snapshot and its tail, with every check) is the ledger's
//! (`paydvm_ledger::store::replay`), shared with the SQLite store.

use paydvm_ledger::snapshot::Snapshot;
use paydvm_ledger::store::replay::LogSource;
use paydvm_ledger::store::{key_digest, StoredEvent};
use paydvm_ledger::{
    JobId, JobRecord, LedgerError, RefundId, RefundRecord, SubscriptionId, SubscriptionRecord,
};

use crate::client::{get, get_u64, int, Db};
use crate::read;

/// Events read per query while replaying: a long log is never all in memory at once.
const CHUNK: i64 = 10_000;

impl LogSource for Db {
    fn each_event(
        &self,
        after: u64,
        apply: &mut dyn FnMut(StoredEvent) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut after = after;
        loop {
            let chunk = read::events_after(self, after, CHUNK)?;
            let Some(last) = chunk.last() else {
                return Ok(());
            };
            after = last.seq;
            for stored in chunk {
                apply(stored)?;
            }
        }
    }

    fn last_touch(&self) -> Result<Vec<(i64, u64)>, LedgerError> {
        let rows = self.query(
            "SELECT job, max(seq) FROM events WHERE job IS NOT NULL GROUP BY job",
            vec![],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let job = get::<String>(r, 0)?;
                Ok((key_digest(&job), get_u64(r, 1, "seq")?))
            })
            .collect::<Result<_, crate::PgError>>()?)
    }

    fn newest_snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        Ok(read::newest_snapshot(self)?)
    }

    fn event_hash(&self, seq: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        let row = self.query_opt(
            "SELECT hash FROM events WHERE seq = $1",
            vec![Box::new(int(seq, "seq")?)],
        )?;
        Ok(row.map(|r| get(&r, 0)).transpose()?)
    }

    fn job_changed(&self, id: &JobId) -> Result<Option<(JobRecord, Option<u64>)>, LedgerError> {
        Ok(read::job(self, id)?)
    }

    fn refund_changed(
        &self,
        id: &RefundId,
    ) -> Result<Option<(RefundRecord, Option<u64>)>, LedgerError> {
        Ok(read::refund(self, id)?)
    }

    fn subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, LedgerError> {
        Ok(read::record(self, "subscriptions", "subscription", id.as_str())?.map(|(r, _)| r))
    }

    fn count(&self, sql: &str) -> Result<u64, LedgerError> {
        let row = self.query_opt(sql, vec![])?;
        let row = row.ok_or_else(|| LedgerError::Corrupt(format!("no count from {sql}")))?;
        Ok(get_u64(&row, 0, "count")?)
    }
}
