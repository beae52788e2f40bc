//! The typed job the node works with. Protocol adapters produce it from requests; executors
//! consume it. It carries no payment state: executors only ever see paid (or free) work.

use serde::{Deserialize, Serialize};

/// How an input's `data` is to be read (NIP-90 `i` tag input types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Text,
    Url,
    Event,
    /// The output of an earlier job (chaining).
    Job,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInput {
    pub data: String,
    pub kind: InputKind,
    pub relay: Option<String>,
    pub marker: Option<String>,
}

/// One parameter: a key and one or more values (`["param", key, v1, v2…]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobParam {
    pub key: String,
    pub values: Vec<String>,
}

/// A job as an executor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The request event id (hex); also the ledger's job id.
    pub id: String,
    /// The request kind (5000–5999).
    pub kind: u16,
    /// The customer's pubkey (hex).
    pub customer: String,
    pub inputs: Vec<JobInput>,
    pub params: Vec<JobParam>,
    /// Requested output MIME type.
    pub output: Option<String>,
}

impl Job {
    /// The first value of parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.values.first())
            .map(String::as_str)
    }

    /// Total bytes of all inputs' data, for admission limits and per-unit pricing.
    pub fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.data.len() as u64).sum()
    }
}
