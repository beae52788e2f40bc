//! Outbox effects: side effects recorded with the state change that requires them.

use serde::{Deserialize, Serialize};

use crate::event::EffectOutcome;
use crate::ids::{EffectId, JobId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub effect: EffectId,
    pub job: Option<JobId>,
    pub action: String,
    pub payload: String,
    pub requested_seq: u64,
    pub outcome: Option<EffectOutcome>,
}
