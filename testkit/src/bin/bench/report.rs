//! Printing figures, percentiles and memory.

use paydvm_testkit::bench_stats::status_kib;
use std::time::Duration;

pub fn rate(events: u64, d: Duration) -> f64 {
    events as f64 / d.as_secs_f64().max(1e-9)
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn memory(when: &str) {
    match (status_kib("VmHWM:"), status_kib("VmRSS:")) {
        (Some(peak), Some(now)) => println!(
            "   memory {when}: peak RSS {:.0} MiB, current RSS {:.0} MiB",
            peak as f64 / 1024.0,
            now as f64 / 1024.0
        ),
        _ => println!("   memory {when}: /proc/self/status unavailable"),
    }
}
