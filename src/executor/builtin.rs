//! Deterministic built-in executors for the demo and tests.
//!
//! | kind | executor           | result                                                    |
//! |------|--------------------|-----------------------------------------------------------|
//! | 5050 | [`TextGeneration`] | the `text` inputs, concatenated and transformed by `mode` |
//! | 5001 | [`WordCount`]      | `"<n> words"` over all `text` inputs ("summarise")        |
//!
//! Both accept only `text` inputs; `url`, `event` and `job` inputs are refused with
//! [`ExecError::UnsupportedInput`], since fetching them is not these executors' job.

use std::time::Duration;

use super::{BoxFuture, ExecError, ExecOutput, Executor, Executors, Limits, RegistryError};
use crate::job::{InputKind, Job};

/// NIP-90 kind 5050, text generation.
pub const TEXT_GENERATION: u16 = 5050;
/// NIP-90 kind 5001, summarisation; the built-in "summary" is a word count.
pub const SUMMARISE: u16 = 5001;

/// Registers both built-ins under their kinds, with the same limits.
pub fn register(executors: &mut Executors, limits: &Limits) -> Result<(), RegistryError> {
    executors.insert(TEXT_GENERATION, TextGeneration, limits.clone())?;
    executors.insert(SUMMARISE, WordCount, limits.clone())
}

/// Kind 5050. `param mode`:
/// - `reverse` (default): the text reversed, character by character;
/// - `upper`: the text upper-cased;
/// - `fail`: a non-retryable error, to demo and test the failure path;
/// - `sleep` with `param ms`: waits that long, then returns the text unchanged, to exercise
///   timeouts. There is deliberately no "fail once" mode: executors keep no hidden state.
pub struct TextGeneration;

enum Mode {
    Reverse,
    Upper,
    Fail,
    Sleep(Duration),
}

impl Mode {
    fn of(job: &Job) -> Result<Self, ExecError> {
        match job.param("mode").unwrap_or("reverse") {
            "reverse" => Ok(Self::Reverse),
            "upper" => Ok(Self::Upper),
            "fail" => Ok(Self::Fail),
            "sleep" => {
                let ms = job
                    .param("ms")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .ok_or_else(|| {
                        ExecError::failed("mode `sleep` needs param `ms` (milliseconds)")
                    })?;
                Ok(Self::Sleep(Duration::from_millis(ms)))
            }
            other => Err(ExecError::failed(format!(
                "unknown mode `{other}`; expected reverse, upper, fail or sleep"
            ))),
        }
    }
}

impl Executor for TextGeneration {
    fn check(&self, job: &Job) -> Result<(), ExecError> {
        Mode::of(job)?;
        text_inputs(job).map(drop)
    }

    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let mode = Mode::of(job)?;
            let text = text_inputs(job)?.concat();
            let content = match mode {
                Mode::Reverse => text.chars().rev().collect(),
                Mode::Upper => text.to_uppercase(),
                Mode::Fail => return Err(ExecError::failed("failed on request (mode `fail`)")),
                Mode::Sleep(duration) => {
                    tokio::time::sleep(duration).await;
                    text
                }
            };
            Ok(ExecOutput { content })
        })
    }
}

/// Kind 5001: counts whitespace-separated words across all `text` inputs (each input counted
/// on its own, so words never join across inputs).
pub struct WordCount;

impl Executor for WordCount {
    fn check(&self, job: &Job) -> Result<(), ExecError> {
        text_inputs(job).map(drop)
    }

    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let words: usize = text_inputs(job)?
                .iter()
                .map(|text| text.split_whitespace().count())
                .sum();
            Ok(ExecOutput {
                content: format!("{words} words"),
            })
        })
    }
}

fn text_inputs(job: &Job) -> Result<Vec<&str>, ExecError> {
    job.inputs
        .iter()
        .map(|input| match input.kind {
            InputKind::Text => Ok(input.data.as_str()),
            other => Err(ExecError::UnsupportedInput { input: other }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::test_support::text_job;
    use crate::job::JobInput;

    async fn generate(texts: &[&str], params: &[(&str, &str)]) -> Result<String, ExecError> {
        let job = text_job(TEXT_GENERATION, texts, params);
        TextGeneration.run(&job).await.map(|o| o.content)
    }

    #[tokio::test]
    async fn reverse_is_the_default_mode() {
        assert_eq!(generate(&["abc", "déf"], &[]).await.unwrap(), "fédcba");
        assert_eq!(
            generate(&["abc"], &[("mode", "reverse")]).await.unwrap(),
            "cba"
        );
    }

    #[tokio::test]
    async fn upper_upper_cases_the_concatenated_text() {
        assert_eq!(
            generate(&["ab ", "cd"], &[("mode", "upper")])
                .await
                .unwrap(),
            "AB CD"
        );
    }

    #[tokio::test]
    async fn fail_mode_is_not_retryable() {
        let err = generate(&["x"], &[("mode", "fail")]).await.unwrap_err();
        assert!(!err.retryable());
        assert!(err.to_string().contains("fail"));
    }

    #[tokio::test]
    async fn sleep_mode_returns_the_text_after_sleeping() {
        let out = generate(&["x"], &[("mode", "sleep"), ("ms", "1")]).await;
        assert_eq!(out.unwrap(), "x");
    }

    #[test]
    fn check_refuses_before_running_what_run_would_refuse_and_passes_the_rest() {
        for params in [
            &[("mode", "bogus")][..],
            &[("mode", "sleep")],
            &[("mode", "sleep"), ("ms", "soon")],
        ] {
            let job = text_job(TEXT_GENERATION, &["x"], params);
            let err = TextGeneration.check(&job).unwrap_err();
            assert!(!err.retryable(), "{params:?}");
        }
        let refused = TextGeneration
            .check(&text_job(TEXT_GENERATION, &["x"], &[("mode", "bogus")]))
            .unwrap_err();
        assert!(
            refused.to_string().contains("unknown mode `bogus`"),
            "{refused}"
        );
        // `fail` is a valid mode: it fails when it runs, not before.
        for params in [&[][..], &[("mode", "upper")], &[("mode", "fail")]] {
            let job = text_job(TEXT_GENERATION, &["x"], params);
            assert!(TextGeneration.check(&job).is_ok(), "{params:?}");
        }
        let mut url = text_job(SUMMARISE, &["x"], &[]);
        url.inputs[0].kind = InputKind::Url;
        assert!(WordCount.check(&url).is_err());
        // Through the registry (behind the limits wrapper) the same holds.
        let mut executors = Executors::new();
        register(
            &mut executors,
            &crate::executor::test_support::limits(1000, 1000, 1),
        )
        .unwrap();
        let bogus = text_job(TEXT_GENERATION, &["x"], &[("mode", "bogus")]);
        assert!(executors.check(&bogus).is_err());
        assert!(executors.check(&text_job(5999, &["x"], &[])).is_ok());
    }

    #[tokio::test]
    async fn sleep_without_ms_and_unknown_modes_are_bad_input() {
        for params in [
            &[("mode", "sleep")][..],
            &[("mode", "sleep"), ("ms", "soon")],
            &[("mode", "fail-once")],
        ] {
            let err = generate(&["x"], params).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ExecError::Failed {
                        retryable: false,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn word_count_counts_across_inputs() {
        let job = text_job(SUMMARISE, &["one two", "three", "  "], &[]);
        assert_eq!(WordCount.run(&job).await.unwrap().content, "3 words");
        let job = text_job(SUMMARISE, &[], &[]);
        assert_eq!(WordCount.run(&job).await.unwrap().content, "0 words");
    }

    #[tokio::test]
    async fn non_text_inputs_are_unsupported() {
        for kind in [InputKind::Url, InputKind::Event, InputKind::Job] {
            let mut job = text_job(TEXT_GENERATION, &["ok"], &[]);
            job.inputs.push(JobInput {
                data: "https://example.com".into(),
                kind,
                relay: None,
                marker: None,
            });
            let expected = Err(ExecError::UnsupportedInput { input: kind });
            assert_eq!(TextGeneration.run(&job).await, expected);
            assert_eq!(WordCount.run(&job).await, expected);
        }
    }
}
