//! The SQLite connection as a [`LogSource`]: what loading at open reads.

use rusqlite::Connection;

use super::audit::{decode_row, raw_row};
use super::replay::LogSource;
use super::{digest, from_sql_int, load, snapshots, to_sql_int, StoredEvent};
use crate::error::LedgerError;
use crate::ids::{JobId, RefundId, SubscriptionId};
use crate::job::JobRecord;
use crate::refund::RefundRecord;
use crate::snapshot::Snapshot;
use crate::subscription::SubscriptionRecord;

impl LogSource for Connection {
    fn each_event(
        &self,
        after: u64,
        apply: &mut dyn FnMut(StoredEvent) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut stmt = self.prepare(
            "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events WHERE seq > ?1 \
             ORDER BY seq",
        )?;
        let mut rows = stmt.query([to_sql_int(after, "seq")?])?;
        while let Some(row) = rows.next()? {
            apply(decode_row(raw_row(row)?)?)?;
        }
        Ok(())
    }

    fn last_touch(&self) -> Result<Vec<(i64, u64)>, LedgerError> {
        let digests = digest::has_digests(self)?;
        let mut stmt = self.prepare(if digests {
            "SELECT job_digest, max(seq) FROM events WHERE job_digest IS NOT NULL \
             GROUP BY job_digest"
        } else {
            "SELECT job, max(seq) FROM events WHERE job IS NOT NULL GROUP BY job"
        })?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let job = match digests {
                true => r.get(0)?,
                false => digest::key_digest(&r.get::<_, String>(0)?),
            };
            out.push((job, from_sql_int(r.get(1)?, "seq")?));
        }
        Ok(out)
    }

    fn newest_snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        snapshots::newest(self)
    }

    fn event_hash(&self, seq: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        load::event_hash(self, seq)
    }

    fn job_changed(&self, id: &JobId) -> Result<Option<(JobRecord, Option<u64>)>, LedgerError> {
        Ok(load::job(self, id, true)?.map(|r| (r.record, r.changed)))
    }

    fn refund_changed(
        &self,
        id: &RefundId,
    ) -> Result<Option<(RefundRecord, Option<u64>)>, LedgerError> {
        Ok(load::refund(self, id, true)?.map(|r| (r.record, r.changed)))
    }

    fn subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, LedgerError> {
        load::subscription(self, id)
    }

    fn count(&self, sql: &str) -> Result<u64, LedgerError> {
        let n: i64 = self.query_row(sql, [], |r| r.get(0))?;
        from_sql_int(n, "count")
    }
}
