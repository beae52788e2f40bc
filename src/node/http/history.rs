//! The status page's charts: the node's running totals sampled every [`SAMPLE_EVERY`] into a
//! ring of the last [`KEEP`] samples, turned into per-interval points (jobs/s, revenue,
//! refunds, mean latency). This run's figures only; the ledger holds the whole history.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::node::telemetry::TotalsReading;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Ten minutes at one sample every two seconds.
pub const KEEP: usize = 300;

/// One chart point: what happened between the sample before and the one at `t`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Unix ms of the sample that closes the interval.
    pub t: u64,
    pub jobs_per_s: f64,
    pub revenue_msat: u64,
    pub refunds_msat: u64,
    /// Mean request-to-result latency of the jobs with a result in the interval.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(u64, TotalsReading)>,
}

impl History {
    /// Records the totals read at `at_ms`; the oldest sample goes past [`KEEP`].
    pub fn push(&mut self, at_ms: u64, reading: TotalsReading) {
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back((at_ms, reading));
    }

    /// The points between consecutive samples, then one from the last sample to `now` (the
    /// totals just read), so a page opened between two samples is up to date.
    pub fn series(&self, now_ms: u64, now: TotalsReading) -> Vec<Point> {
        let live = self
            .samples
            .back()
            .filter(|(at, _)| *at < now_ms)
            .map(|_| (now_ms, now));
        let all: Vec<&(u64, TotalsReading)> = self.samples.iter().chain(live.iter()).collect();
        all.windows(2).map(|w| point(w[0], w[1])).collect()
    }
}

fn point((t0, a): &(u64, TotalsReading), (t1, b): &(u64, TotalsReading)) -> Point {
    let span_ms = t1.saturating_sub(*t0).max(1);
    let results = b.results.saturating_sub(a.results);
    let count = b.latency_count.saturating_sub(a.latency_count);
    let sum = b.latency_ms_sum.saturating_sub(a.latency_ms_sum);
    Point {
        t: *t1,
        // Display figures: f64 is exact far beyond any real count.
        jobs_per_s: results as f64 * 1000.0 / span_ms as f64,
        revenue_msat: b.revenue_msat.saturating_sub(a.revenue_msat),
        refunds_msat: b.refunds_msat.saturating_sub(a.refunds_msat),
        latency_ms: (count > 0).then(|| sum as f64 / count as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(results: u64, revenue: u64, latency_sum: u64) -> TotalsReading {
        TotalsReading {
            results,
            revenue_msat: revenue,
            latency_ms_sum: latency_sum,
            latency_count: results,
            ..TotalsReading::default()
        }
    }

    #[test]
    fn points_are_the_differences_between_samples_plus_a_live_one() {
        let mut h = History::default();
        assert!(h.series(5_000, totals(0, 0, 0)).is_empty());
        h.push(1_000, totals(0, 0, 0));
        h.push(3_000, totals(4, 10_000, 400));
        let s = h.series(4_000, totals(5, 15_000, 700));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].t, 3_000);
        assert_eq!(s[0].jobs_per_s, 2.0);
        assert_eq!(s[0].revenue_msat, 10_000);
        assert_eq!(s[0].latency_ms, Some(100.0));
        assert_eq!((s[1].t, s[1].jobs_per_s), (4_000, 1.0));
        assert_eq!(s[1].latency_ms, Some(300.0));
        // Nothing happened: no latency, zero rate.
        let quiet = h.series(3_000, totals(4, 10_000, 400));
        assert_eq!(quiet.len(), 1, "no live point at the last sample's time");
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let mut h = History::default();
        for i in 0..(KEEP as u64 + 10) {
            h.push(i * 1000, totals(i, 0, 0));
        }
        let s = h.series(0, totals(0, 0, 0));
        assert_eq!(s.len(), KEEP - 1);
        assert_eq!(s[0].t, 11_000);
    }
}
