//! Outbox effects: side effects recorded with the state change that requires them.

use serde::{Deserialize, Serialize};

use crate::event::EffectOutcome;
use crate::ids::{EffectId, JobId};

/// What the outbox does with an effect's payload. Stored as its snake_case name (`"publish"`),
/// as the string it replaced was, so the hash chain of existing ledgers is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectAction {
    /// Publish the signed event in the payload to the relays it names.
    Publish,
}

impl EffectAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectAction::Publish => "publish",
        }
    }
}

impl std::fmt::Display for EffectAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub effect: EffectId,
    pub job: Option<JobId>,
    pub action: EffectAction,
    pub payload: String,
    pub requested_seq: u64,
    pub outcome: Option<EffectOutcome>,
}
