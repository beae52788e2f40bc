//! Measurement helpers shared by the benchmark binaries, so every bench reports percentiles and
//! memory the same way.

use std::time::Duration;

/// Nearest-rank percentile (`p` in percent, 0–100) of samples sorted ascending; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A `kB` field of `/proc/self/status` (e.g. `"VmHWM:"` for peak RSS), in KiB.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's load average (`/proc/loadavg`: 1, 5 and 15 minutes), printed with every
/// figure so a busy machine shows.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Throughput of each consecutive window of `every` completions, from completion times
/// measured from the start (sorted ascending): window k runs from the (k·every)-th completion
/// (the start for k = 0) to the ((k+1)·every)-th. A last partial window is left out.
pub fn window_rates(finished: &[Duration], every: usize) -> Vec<f64> {
    if every == 0 {
        return Vec::new();
    }
    let mut rates = Vec::new();
    let mut from = Duration::ZERO;
    for window in finished.chunks_exact(every) {
        let to = window[every - 1];
        let secs = to.saturating_sub(from).as_secs_f64();
        rates.push(if secs > 0.0 {
            every as f64 / secs
        } else {
            f64::INFINITY
        });
        from = to;
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rates_count_each_window_from_the_end_of_the_last() {
        // 4 completions at 1, 2, 4, 8 s; windows of 2: [0, 2 s] and [2 s, 8 s]; the 5th is partial.
        let at: Vec<Duration> = [1, 2, 4, 8, 9].map(Duration::from_secs).to_vec();
        assert_eq!(window_rates(&at, 2), vec![1.0, 2.0 / 6.0]);
        assert!(window_rates(&at, 0).is_empty());
        assert!(window_rates(&at, 6).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn reads_peak_rss() {
        assert!(status_kib("VmHWM:").is_some_and(|kib| kib > 0));
        assert_eq!(status_kib("NoSuchField:"), None);
    }
}
