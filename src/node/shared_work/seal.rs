//! What travels through the work table, sealed with the service key: NIP-44 v2 from the key to
//! itself, so only nodes holding it can read or write a job or an outcome (its MAC refuses
//! anything else). NIP-44 takes at most 65 535 bytes at once, so longer texts go in pieces,
//! one line each.

use nostr_sdk::prelude::{nip44, Keys};
use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::node::core::ExecFailure;

/// A piece's plaintext, in bytes: under NIP-44's limit.
const PIECE: usize = 60_000;
/// What a sealed text may hold, opened: more than any job or output the config allows.
const MAX_OPENED: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealing: {0}")]
    Seal(String),
    #[error("a sealed text does not open with the service key: {0}")]
    Open(String),
    #[error("a sealed text is too long")]
    TooLong,
    #[error("a sealed text holds no valid {0}: {1}")]
    Malformed(&'static str, serde_json::Error),
}

/// An attempt's outcome as stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredOutcome {
    Ok(String),
    Failed { reason: String, retryable: bool },
}

pub fn seal_job(keys: &Keys, job: &Job) -> Result<String, SealError> {
    let json = serde_json::to_string(job).map_err(|e| SealError::Seal(e.to_string()))?;
    seal(keys, &json)
}

pub fn open_job(keys: &Keys, sealed: &str) -> Result<Job, SealError> {
    serde_json::from_str(&open(keys, sealed)?).map_err(|e| SealError::Malformed("job", e))
}

pub fn seal_outcome(
    keys: &Keys,
    outcome: &Result<String, ExecFailure>,
) -> Result<String, SealError> {
    let stored = match outcome {
        Ok(content) => StoredOutcome::Ok(content.clone()),
        Err(f) => StoredOutcome::Failed {
            reason: f.reason.clone(),
            retryable: f.retryable,
        },
    };
    let json = serde_json::to_string(&stored).map_err(|e| SealError::Seal(e.to_string()))?;
    seal(keys, &json)
}

pub fn open_outcome(keys: &Keys, sealed: &str) -> Result<Result<String, ExecFailure>, SealError> {
    let stored: StoredOutcome = serde_json::from_str(&open(keys, sealed)?)
        .map_err(|e| SealError::Malformed("outcome", e))?;
    Ok(match stored {
        StoredOutcome::Ok(content) => Ok(content),
        StoredOutcome::Failed { reason, retryable } => Err(ExecFailure { reason, retryable }),
    })
}

fn seal(keys: &Keys, text: &str) -> Result<String, SealError> {
    if text.len() > MAX_OPENED {
        return Err(SealError::TooLong);
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    loop {
        let mut cut = rest.len().min(PIECE);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, after) = rest.split_at(cut);
        let sealed = nip44::encrypt(
            keys.secret_key(),
            &keys.public_key(),
            piece,
            nip44::Version::V2,
        )
        .map_err(|e| SealError::Seal(e.to_string()))?;
        pieces.push(sealed);
        rest = after;
        if rest.is_empty() {
            return Ok(pieces.join("\n"));
        }
    }
}

fn open(keys: &Keys, sealed: &str) -> Result<String, SealError> {
    // Base64 grows 4/3, plus NIP-44's framing: a generous bound before any work.
    if sealed.len() > MAX_OPENED * 2 {
        return Err(SealError::TooLong);
    }
    let mut text = String::new();
    for piece in sealed.split('\n') {
        let opened = nip44::decrypt(keys.secret_key(), &keys.public_key(), piece)
            .map_err(|e| SealError::Open(e.to_string()))?;
        text.push_str(&opened);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Job {
        crate::executor::test_support::text_job(5050, &[text], &[("mode", "upper")])
    }

    #[test]
    fn a_job_and_an_outcome_open_as_sealed_whatever_their_length() {
        let keys = Keys::generate();
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 17] {
            // Multi-byte characters across the piece boundaries.
            let text: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let sealed = seal_job(&keys, &job(&text)).unwrap();
            assert_eq!(open_job(&keys, &sealed).unwrap(), job(&text));
            let outcome = Ok(text.clone());
            let sealed = seal_outcome(&keys, &outcome).unwrap();
            assert_eq!(open_outcome(&keys, &sealed).unwrap(), outcome);
        }
        let failed = Err(ExecFailure {
            reason: "no".into(),
            retryable: true,
        });
        let sealed = seal_outcome(&keys, &failed).unwrap();
        assert_eq!(open_outcome(&keys, &sealed).unwrap(), failed);
    }

    #[test]
    fn a_text_sealed_with_another_key_or_altered_does_not_open() {
        let (ours, theirs) = (Keys::generate(), Keys::generate());
        let forged = seal_outcome(&theirs, &Ok("forged".into())).unwrap();
        assert!(matches!(
            open_outcome(&ours, &forged),
            Err(SealError::Open(_))
        ));
        let mut sealed = seal_outcome(&ours, &Ok("result".into())).unwrap();
        sealed.insert(10, 'A');
        assert!(open_outcome(&ours, &sealed).is_err());
        assert!(open_job(&ours, "not sealed").is_err());
    }
}
