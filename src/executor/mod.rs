//! Executors: turn a paid job into a result, within limits.
//!
//! An [`Executor`] only sees the typed [`Job`]; payment state never reaches it. The node wraps
//! every executor in [`Limited`] (via the [`Executors`] registry) so the timeout, the concurrency
//! limit and the output cap hold for all of them, built-in or external.

pub mod builtin;
pub mod command;
mod error;
pub mod http;
mod limits;
mod output;
mod registry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::job::Job;

pub use error::{ExecError, Reason};
pub use limits::{InvalidLimits, Limited, Limits};
pub use registry::{Executors, RegistryError};

/// A boxed future that borrows for `'a`; keeps [`Executor`] usable as `dyn Executor`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a successful job produces: the result event's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub content: String,
}

/// Turns a job into a result or a customer-safe error.
pub trait Executor: Send + Sync {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>>;

    /// Refuses a job this executor would fail whatever happens (an unknown param value, an
    /// input it cannot read), so that the customer is told before being asked to pay. The
    /// default knows nothing in advance: external executors judge their jobs when they run.
    fn check(&self, _job: &Job) -> Result<(), ExecError> {
        Ok(())
    }
}

impl<E: Executor + ?Sized> Executor for Arc<E> {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        (**self).run(job)
    }

    fn check(&self, job: &Job) -> Result<(), ExecError> {
        (**self).check(job)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use crate::job::{InputKind, Job, JobInput, JobParam};

    use super::Limits;

    pub fn text_job(kind: u16, texts: &[&str], params: &[(&str, &str)]) -> Job {
        Job {
            id: "00".repeat(32),
            kind,
            customer: "11".repeat(32),
            inputs: texts
                .iter()
                .map(|t| JobInput {
                    data: (*t).to_owned(),
                    kind: InputKind::Text,
                    relay: None,
                    marker: None,
                })
                .collect(),
            params: params
                .iter()
                .map(|(k, v)| JobParam {
                    key: (*k).to_owned(),
                    values: vec![(*v).to_owned()],
                })
                .collect(),
            output: None,
        }
    }

    pub fn limits(timeout_ms: u64, max_output_bytes: usize, max_concurrency: usize) -> Limits {
        Limits::new(
            Duration::from_millis(timeout_ms),
            max_output_bytes,
            max_concurrency,
        )
        .expect("valid test limits")
    }
}
