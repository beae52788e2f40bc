//! CPU per job in each report window, for the node, the relay and the bench itself: whether a
//! window that runs slower does so because one of them works more per job (the node's ledger
//! growing) or because it waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::node_process::cpu_of_pid;

/// How often the processes' CPU times are read: a window of 10 000 jobs lasts ~10 s.
const EVERY: Duration = Duration::from_millis(100);

/// One reading: when, and each watched process's CPU time so far (none once it is gone).
type Sample = (Instant, Vec<Option<Duration>>);

/// Reads the CPU time of each named process every [`EVERY`] until stopped.
pub struct CpuSampler {
    names: Vec<&'static str>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CpuSampler {
    /// Watches `(name, pid)`; a pid of `None` is this process.
    pub fn start(watched: Vec<(&'static str, Option<u32>)>) -> CpuSampler {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let names = watched.iter().map(|(name, _)| *name).collect();
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let cpu = watched.iter().map(|(_, pid)| cpu_of_pid(*pid)).collect();
                    samples.lock().expect("samples").push((Instant::now(), cpu));
                    std::thread::sleep(EVERY);
                }
            })
        };
        CpuSampler {
            names,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Prints each process's CPU µs per job in windows of `every` jobs, whose ends are the
    /// completion times `finished` (from `start`).
    pub fn report(mut self, start: Instant, finished: &[Duration], every: usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if every == 0 || finished.len() < 2 * every {
            return;
        }
        let samples = self.samples.lock().expect("samples");
        let ends: Vec<Instant> = std::iter::once(start)
            .chain(finished.chunks_exact(every).map(|w| start + w[every - 1]))
            .collect();
        for (n, name) in self.names.iter().enumerate() {
            let cpu_at = |at: Instant| cpu_near(&samples, at, n);
            let per_job: Option<Vec<String>> = ends
                .windows(2)
                .map(|w| {
                    let used = cpu_at(w[1])?.checked_sub(cpu_at(w[0])?)?;
                    Some(format!("{:.0}", used.as_secs_f64() * 1e6 / every as f64))
                })
                .collect();
            if let Some(per_job) = per_job {
                println!(
                    "{name} CPU µs per job, per {every} jobs: {}",
                    per_job.join(", ")
                );
            }
        }
    }
}

/// Process `n`'s CPU time at the last reading at or before `at` (the first, if none is).
fn cpu_near(samples: &[Sample], at: Instant, n: usize) -> Option<Duration> {
    let i = samples.partition_point(|(when, _)| *when <= at);
    samples
        .get(i.saturating_sub(1))?
        .1
        .get(n)
        .copied()
        .flatten()
}
