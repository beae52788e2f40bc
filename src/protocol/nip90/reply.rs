//! What feedback and results share: who they answer, the `amount` tag, encrypting to the customer.

use nostr_sdk::prelude::{EventId, Keys, PublicKey, Tag, TagKind};
use paydvm_ledger::Msat;
use serde_json::Value;

use super::encryption::{CryptoError, Encryption};
use super::error::excerpt;
use super::request::ParsedRequest;

/// An amount a reply asks for: msat and, optionally, an invoice paying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub msat: Msat,
    pub bolt11: Option<String>,
}

/// A reply could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Holds at most a short excerpt of the id.
    #[error("job id {0:?} is not an event id")]
    BadJobId(String),
    #[error("job customer is not a public key")]
    BadCustomer,
    #[error("kind {0} is not a job request kind")]
    NotAJobRequest(u16),
    #[error("cannot encrypt the reply: {0}")]
    Encrypt(#[from] CryptoError),
}

impl Amount {
    /// `["amount", msat, bolt11?]`. Built raw: the three-element form is not a standardized tag.
    pub(super) fn tag(&self) -> Tag {
        let mut values = vec![self.msat.as_msat().to_string()];
        values.extend(self.bolt11.clone());
        Tag::custom(TagKind::custom("amount"), values)
    }
}

/// The request a reply answers, in the types the tags need.
pub(super) struct Addressee<'a> {
    pub request_id: EventId,
    pub customer: PublicKey,
    pub encryption: Option<Encryption>,
    pub relay_hint: Option<&'a str>,
}

impl<'a> Addressee<'a> {
    pub fn of(request: &ParsedRequest, relay_hint: Option<&'a str>) -> Result<Self, ReplyError> {
        let job = &request.job;
        Ok(Addressee {
            request_id: EventId::from_hex(&job.id)
                .map_err(|_| ReplyError::BadJobId(excerpt(&job.id)))?,
            customer: PublicKey::from_hex(&job.customer).map_err(|_| ReplyError::BadCustomer)?,
            encryption: request.encryption,
            relay_hint,
        })
    }

    /// `["e", request-id, relay-hint?]`.
    pub fn e_tag(&self) -> Tag {
        let mut values = vec![self.request_id.to_hex()];
        values.extend(self.relay_hint.map(str::to_owned));
        Tag::custom(TagKind::e(), values)
    }

    pub fn p_tag(&self) -> Tag {
        Tag::public_key(self.customer)
    }

    /// `plaintext` encrypted to the customer with the customer's scheme; `None` for clear requests.
    pub fn encrypt(&self, ours: &Keys, plaintext: &str) -> Result<Option<String>, ReplyError> {
        match self.encryption {
            None => Ok(None),
            Some(scheme) => Ok(Some(scheme.encrypt(ours, &self.customer, plaintext)?)),
        }
    }
}

/// Tags as the JSON array-of-arrays that encrypted NIP-90 content carries.
pub(super) fn tags_json(tags: &[Tag]) -> String {
    let array = tags
        .iter()
        .map(|tag| Value::Array(tag.as_slice().iter().cloned().map(Value::String).collect()))
        .collect();
    Value::Array(array).to_string()
}

pub(super) fn encrypted_tag() -> Tag {
    Tag::custom(TagKind::custom("encrypted"), Vec::<String>::new())
}
