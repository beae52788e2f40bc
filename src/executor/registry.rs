//! Which executor serves which job kind, each behind its own limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ExecError, ExecOutput, Executor, Limited, Limits};
use crate::job::Job;

/// NIP-90 job request kinds.
const REQUEST_KINDS: std::ops::RangeInclusive<u16> = 5000..=5999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("kind {kind} is not a NIP-90 job request kind (5000–5999)")]
    NotARequestKind { kind: u16 },
    #[error("kind {kind} already has an executor")]
    AlreadyRegistered { kind: u16 },
}

struct Registered {
    executor: Arc<dyn Executor>,
    limits: Limits,
}

/// Job kind → executor. Every executor is wrapped in [`Limited`] on insertion, so whatever
/// [`Executors::get`] returns already enforces its kind's limits.
#[derive(Default)]
pub struct Executors {
    by_kind: BTreeMap<u16, Registered>,
}

impl Executors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        kind: u16,
        executor: impl Executor + 'static,
        limits: Limits,
    ) -> Result<(), RegistryError> {
        if !REQUEST_KINDS.contains(&kind) {
            return Err(RegistryError::NotARequestKind { kind });
        }
        if self.by_kind.contains_key(&kind) {
            return Err(RegistryError::AlreadyRegistered { kind });
        }
        let executor = Arc::new(Limited::new(executor, limits.clone()));
        self.by_kind.insert(kind, Registered { executor, limits });
        Ok(())
    }

    /// The limit-enforcing executor for `kind`.
    pub fn get(&self, kind: u16) -> Option<Arc<dyn Executor>> {
        self.by_kind.get(&kind).map(|r| Arc::clone(&r.executor))
    }

    pub fn limits(&self, kind: u16) -> Option<&Limits> {
        self.by_kind.get(&kind).map(|r| &r.limits)
    }

    /// The kinds offered, ascending (for announcements).
    pub fn kinds(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_kind.keys().copied()
    }

    /// Whether `job`'s executor would refuse it whatever happens ([`Executor::check`]); a kind
    /// with no executor passes (whether it is offered is decided elsewhere).
    pub fn check(&self, job: &Job) -> Result<(), ExecError> {
        self.get(job.kind)
            .map_or(Ok(()), |executor| executor.check(job))
    }

    /// Runs `job` on its kind's executor; [`ExecError::Unsupported`] if none is registered.
    pub async fn run(&self, job: &Job) -> Result<ExecOutput, ExecError> {
        let executor = self
            .get(job.kind)
            .ok_or(ExecError::Unsupported { kind: job.kind })?;
        executor.run(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::builtin::{self, TextGeneration, SUMMARISE, TEXT_GENERATION};
    use crate::executor::test_support::{limits, text_job};

    #[tokio::test]
    async fn routes_jobs_by_kind_and_refuses_unknown_kinds() {
        let mut executors = Executors::new();
        builtin::register(&mut executors, &limits(1000, 64, 4)).unwrap();
        assert_eq!(
            executors.kinds().collect::<Vec<_>>(),
            [SUMMARISE, TEXT_GENERATION]
        );
        assert_eq!(executors.limits(SUMMARISE).unwrap().max_output_bytes(), 64);

        let out = executors.run(&text_job(SUMMARISE, &["a b"], &[])).await;
        assert_eq!(out.unwrap().content, "2 words");
        assert!(executors.get(TEXT_GENERATION).is_some());
        assert_eq!(
            executors.run(&text_job(5999, &["a"], &[])).await,
            Err(ExecError::Unsupported { kind: 5999 })
        );
    }

    #[tokio::test]
    async fn registered_executors_enforce_their_limits() {
        let mut executors = Executors::new();
        executors
            .insert(TEXT_GENERATION, TextGeneration, limits(1000, 2, 1))
            .unwrap();
        assert_eq!(
            executors
                .run(&text_job(TEXT_GENERATION, &["abc"], &[]))
                .await,
            Err(ExecError::OutputTooLarge { limit: 2 })
        );
    }

    #[test]
    fn rejects_duplicate_and_non_request_kinds() {
        let mut executors = Executors::new();
        let l = limits(1000, 2, 1);
        executors
            .insert(TEXT_GENERATION, TextGeneration, l.clone())
            .unwrap();
        assert_eq!(
            executors.insert(TEXT_GENERATION, TextGeneration, l.clone()),
            Err(RegistryError::AlreadyRegistered {
                kind: TEXT_GENERATION
            })
        );
        assert_eq!(
            executors.insert(6050, TextGeneration, l),
            Err(RegistryError::NotARequestKind { kind: 6050 })
        );
    }
}
