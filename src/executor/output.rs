//! Collecting a result under the output cap, chunk by chunk, so an oversized result is refused
//! as soon as it crosses the cap instead of after it has landed in memory.

use super::{ExecError, ExecOutput};

pub(crate) struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
}

impl CappedOutput {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
        }
    }

    pub(crate) fn extend(&mut self, chunk: &[u8]) -> Result<(), ExecError> {
        if chunk.len() > self.limit - self.bytes.len() {
            return Err(ExecError::OutputTooLarge { limit: self.limit });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub(crate) fn into_output(self) -> Result<ExecOutput, ExecError> {
        let content = String::from_utf8(self.bytes)
            .map_err(|_| ExecError::failed("the result is not valid UTF-8"))?;
        Ok(ExecOutput { content })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_up_to_the_limit_and_refuses_beyond() {
        let mut out = CappedOutput::new(4);
        out.extend(b"ab").unwrap();
        out.extend(b"cd").unwrap();
        assert_eq!(
            out.extend(b"e"),
            Err(ExecError::OutputTooLarge { limit: 4 })
        );
        assert_eq!(out.into_output().unwrap().content, "abcd");
    }

    #[test]
    fn invalid_utf8_is_a_permanent_failure() {
        let mut out = CappedOutput::new(4);
        out.extend(&[0xff]).unwrap();
        let err = out.into_output().unwrap_err();
        assert!(!err.retryable());
    }
}
