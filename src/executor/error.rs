//! Executor errors, phrased so they can be shown to the customer as-is.

use std::fmt;

use crate::job::InputKind;

/// Why a job failed. Every message is safe to publish in a NIP-90 error feedback event: reasons
/// are short ([`Reason`]) and never include stderr, URLs or other operator detail.
///
/// Retryability ([`ExecError::retryable`]): a retry may succeed after a timeout or a transient
/// fault (an I/O error, a refused connection, an HTTP 5xx/408/429). It cannot succeed when the
/// input is bad, the program exits non-zero, the result is too large or the kind or input type is
/// not supported: the same job would fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("the job took longer than its time limit")]
    Timeout,
    #[error("the result is larger than the limit of {limit} bytes")]
    OutputTooLarge { limit: usize },
    #[error("{reason}")]
    Failed { reason: Reason, retryable: bool },
    #[error("job kind {kind} is not supported")]
    Unsupported { kind: u16 },
    #[error("input type `{}` is not supported for this job kind", input_type_name(*.input))]
    UnsupportedInput { input: InputKind },
}

impl ExecError {
    /// A failure that will recur on retry (bad input, non-zero exit…).
    pub fn failed(reason: impl AsRef<str>) -> Self {
        Self::Failed {
            reason: Reason::new(reason),
            retryable: false,
        }
    }

    /// A failure that may not recur (I/O error, endpoint unavailable…).
    pub fn transient(reason: impl AsRef<str>) -> Self {
        Self::Failed {
            reason: Reason::new(reason),
            retryable: true,
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout => true,
            Self::Failed { retryable, .. } => *retryable,
            Self::OutputTooLarge { .. }
            | Self::Unsupported { .. }
            | Self::UnsupportedInput { .. } => false,
        }
    }
}

/// A failure reason cut to [`Reason::MAX_CHARS`] characters, with control characters blanked
/// so a reason cannot forge extra lines in logs or clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub const MAX_CHARS: usize = 200;

    pub fn new(text: impl AsRef<str>) -> Self {
        let text = text.as_ref();
        let mut reason: String = text
            .chars()
            .take(Self::MAX_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.chars().nth(Self::MAX_CHARS).is_some() {
            reason.push('…');
        }
        Self(reason)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn input_type_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Text => "text",
        InputKind::Url => "url",
        InputKind::Event => "event",
        InputKind::Job => "job",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_truncated_and_single_line() {
        let reason = Reason::new(format!("line one\nline two {}", "x".repeat(500)));
        assert_eq!(reason.as_str().chars().count(), Reason::MAX_CHARS + 1);
        assert!(reason.as_str().ends_with('…'));
        assert!(!reason.as_str().contains('\n'));
        assert_eq!(Reason::new("short").as_str(), "short");
    }

    #[test]
    fn retryability_follows_the_documented_rules() {
        assert!(ExecError::Timeout.retryable());
        assert!(ExecError::transient("io").retryable());
        assert!(!ExecError::failed("bad input").retryable());
        assert!(!ExecError::OutputTooLarge { limit: 1 }.retryable());
        assert!(!ExecError::Unsupported { kind: 5999 }.retryable());
        assert!(!ExecError::UnsupportedInput {
            input: InputKind::Url
        }
        .retryable());
    }

    #[test]
    fn unsupported_input_names_the_input_type() {
        let e = ExecError::UnsupportedInput {
            input: InputKind::Event,
        };
        assert_eq!(
            e.to_string(),
            "input type `event` is not supported for this job kind"
        );
    }
}
