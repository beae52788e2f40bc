//! Failures of the ledger file's checkpoint thread (`paydvm_ledger::store::checkpointer`), told.
//! A failed checkpoint is tried again 100 ms later and costs nothing at once, but while they keep
//! failing the WAL grows until the commits' own backstop checkpoint runs, so an operator should
//! hear of it: logged at the first failure of a run of them and at most once a minute while they
//! go on, said again when checkpoints succeed, and counted in
//! `paydvm_ledger_checkpoint_failures_total`. Looked at on the core's tick.

use std::time::{Duration, Instant};

use paydvm_ledger::store::checkpointer::CheckpointStats;
use tracing::{info, warn};

use crate::node::telemetry::Telemetry;

/// How often a run of failures is logged again.
const TELL_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct CheckpointWatch {
    /// Failures and checkpoints counted at the last look.
    failures: u64,
    checkpoints: u64,
    /// When a failure was last logged; `None` when checkpoints work.
    told: Option<Instant>,
}

impl CheckpointWatch {
    /// Compares the thread's counts with the last look (`now` from the caller's clock).
    pub(super) fn look(&mut self, stats: &CheckpointStats, telemetry: &Telemetry, now: Instant) {
        let failed = stats.failures.saturating_sub(self.failures);
        let succeeded = stats.checkpoints > self.checkpoints;
        self.failures = stats.failures;
        self.checkpoints = stats.checkpoints;
        if failed > 0 {
            telemetry.checkpoint_failures(failed);
            let due = self
                .told
                .is_none_or(|at| now.duration_since(at) >= TELL_EVERY);
            if due {
                self.told = Some(now);
                let reason = stats.last_failure.as_deref().unwrap_or("no reason given");
                warn!(
                    failures = stats.failures,
                    "the ledger's WAL checkpoint failed ({reason}); tried again every 100 ms, \
                     the WAL grows meanwhile"
                );
            }
        } else if succeeded && self.told.take().is_some() {
            info!("the ledger's WAL checkpoints succeed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(checkpoints: u64, failures: u64) -> CheckpointStats {
        CheckpointStats {
            checkpoints,
            failures,
            last_failure: (failures > 0).then(|| "disk I/O error".into()),
            ..CheckpointStats::default()
        }
    }

    #[test]
    fn a_run_of_failures_is_told_once_a_minute_and_its_end_once() {
        let telemetry = Telemetry::new("test");
        let mut watch = CheckpointWatch::default();
        let t0 = Instant::now();
        watch.look(&stats(3, 0), &telemetry, t0);
        assert!(watch.told.is_none(), "no failure, nothing told");
        watch.look(&stats(3, 2), &telemetry, t0);
        assert_eq!(watch.told, Some(t0));
        watch.look(&stats(3, 5), &telemetry, t0 + Duration::from_secs(30));
        assert_eq!(watch.told, Some(t0), "not again within the minute");
        let later = t0 + Duration::from_secs(61);
        watch.look(&stats(3, 6), &telemetry, later);
        assert_eq!(watch.told, Some(later));
        watch.look(&stats(4, 6), &telemetry, later);
        assert!(watch.told.is_none(), "checkpoints work again");
    }
}
