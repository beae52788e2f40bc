//! Per-kind limits and the wrapper that enforces them around any executor.

use std::time::Duration;

use tokio::sync::Semaphore;

use super::{BoxFuture, ExecError, ExecOutput, Executor};
use crate::job::Job;

/// How long a job may run, how large its result may be and how many run at once.
/// Always valid: built only by [`Limits::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    timeout: Duration,
    max_output_bytes: usize,
    max_concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLimits {
    #[error("the timeout must be greater than zero")]
    ZeroTimeout,
    #[error("the output cap must be greater than zero")]
    ZeroOutputCap,
    #[error("the concurrency limit must be greater than zero")]
    ZeroConcurrency,
    #[error("the concurrency limit must be at most {max}")]
    ConcurrencyTooHigh { max: usize },
}

impl Limits {
    pub fn new(
        timeout: Duration,
        max_output_bytes: usize,
        max_concurrency: usize,
    ) -> Result<Self, InvalidLimits> {
        if timeout.is_zero() {
            return Err(InvalidLimits::ZeroTimeout);
        }
        if max_output_bytes == 0 {
            return Err(InvalidLimits::ZeroOutputCap);
        }
        if max_concurrency == 0 {
            return Err(InvalidLimits::ZeroConcurrency);
        }
        if max_concurrency > Semaphore::MAX_PERMITS {
            return Err(InvalidLimits::ConcurrencyTooHigh {
                max: Semaphore::MAX_PERMITS,
            });
        }
        Ok(Self {
            timeout,
            max_output_bytes,
            max_concurrency,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn max_output_bytes(&self) -> usize {
        self.max_output_bytes
    }

    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
}

/// Runs an executor within [`Limits`]. Jobs beyond the concurrency limit wait for a slot; the
/// timeout counts from when a job gets its slot, so queueing alone never times a job out.
/// The output cap is checked on the finished result; the command and HTTP executors also
/// enforce it while reading.
pub struct Limited<E> {
    inner: E,
    limits: Limits,
    slots: Semaphore,
}

impl<E: Executor> Limited<E> {
    pub fn new(inner: E, limits: Limits) -> Self {
        let slots = Semaphore::new(limits.max_concurrency);
        Self {
            inner,
            limits,
            slots,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl<E: Executor> Executor for Limited<E> {
    fn check(&self, job: &Job) -> Result<(), ExecError> {
        self.inner.check(job)
    }

    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| ExecError::transient("the executor is shutting down"))?;
            let output = tokio::time::timeout(self.limits.timeout, self.inner.run(job))
                .await
                .map_err(|_| ExecError::Timeout)??;
            if output.content.len() > self.limits.max_output_bytes {
                return Err(ExecError::OutputTooLarge {
                    limit: self.limits.max_output_bytes,
                });
            }
            Ok(output)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::executor::builtin::{TextGeneration, TEXT_GENERATION};
    use crate::executor::test_support::{limits, text_job};

    #[test]
    fn zero_limits_are_rejected() {
        let second = Duration::from_secs(1);
        assert_eq!(
            Limits::new(Duration::ZERO, 1, 1),
            Err(InvalidLimits::ZeroTimeout)
        );
        assert_eq!(Limits::new(second, 0, 1), Err(InvalidLimits::ZeroOutputCap));
        assert_eq!(
            Limits::new(second, 1, 0),
            Err(InvalidLimits::ZeroConcurrency)
        );
        assert!(matches!(
            Limits::new(second, 1, usize::MAX),
            Err(InvalidLimits::ConcurrencyTooHigh { .. })
        ));
        assert!(Limits::new(second, 1, 1).is_ok());
    }

    #[tokio::test]
    async fn timeout_fires_on_a_sleeping_job() {
        let limited = Limited::new(TextGeneration, limits(50, 1024, 1));
        let job = text_job(
            TEXT_GENERATION,
            &["zz"],
            &[("mode", "sleep"), ("ms", "30000")],
        );
        assert_eq!(limited.run(&job).await, Err(ExecError::Timeout));
    }

    #[tokio::test]
    async fn output_cap_applies_to_any_executor() {
        let limited = Limited::new(TextGeneration, limits(1000, 3, 1));
        let job = text_job(TEXT_GENERATION, &["abcd"], &[]);
        assert_eq!(
            limited.run(&job).await,
            Err(ExecError::OutputTooLarge { limit: 3 })
        );
        let job = text_job(TEXT_GENERATION, &["abc"], &[]);
        assert_eq!(limited.run(&job).await.unwrap().content, "cba");
    }

    /// Counts how many runs are in progress and remembers the most seen at once.
    #[derive(Default)]
    struct Gauge {
        running: AtomicUsize,
        peak: AtomicUsize,
    }

    impl Executor for Gauge {
        fn run<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                Ok(ExecOutput {
                    content: String::new(),
                })
            })
        }
    }

    #[tokio::test]
    async fn at_most_max_concurrency_jobs_run_at_once() {
        let gauge = Arc::new(Gauge::default());
        let limited = Arc::new(Limited::new(Arc::clone(&gauge), limits(10_000, 16, 2)));
        let mut jobs = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let limited = Arc::clone(&limited);
            jobs.spawn(async move { limited.run(&text_job(TEXT_GENERATION, &[], &[])).await });
        }
        let mut finished = 0;
        while let Some(result) = jobs.join_next().await {
            result.unwrap().unwrap();
            finished += 1;
        }
        assert_eq!(finished, 5);
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 2);
        assert_eq!(gauge.running.load(Ordering::SeqCst), 0);
    }
}
