//! Protocol adapters: the only code that knows a protocol's events and tags. An adapter reads an
//! inbound event into what the decision core understands (a typed job request, or a rejection
//! with a reason safe to show) and renders the core's protocol-neutral replies as signed events
//! to publish. NIP-90 is the first adapter ([`nip90::Nip90Adapter`]); a successor protocol adds
//! another one, and the decision core (`node::decide`) does not change.

pub mod nip88;
pub mod nip90;

use crate::node::decide::{JobRequest, ReplyKind};

/// What an inbound event means to the node.
#[derive(Debug)]
pub enum Inbound<C> {
    /// Not for us (another provider, a kind we do not offer, encrypted for someone else).
    Ignore,
    /// A request of an offered kind that does not parse; `reason` is safe to show the customer.
    Unparsable {
        job: paydvm_ledger::JobId,
        customer: paydvm_ledger::Pubkey,
        kind: u16,
        reason: String,
    },
    /// A job request, and what replying to it needs (kept by the shell while the job lives).
    Request {
        request: Box<JobRequest>,
        context: Box<C>,
    },
}

/// A reply rendered for publishing: the signed event's id and what the outbox publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The signed event's id (hex): the effect's id in the ledger.
    pub id: String,
    /// The signed event as JSON, with the relays to publish it to (the effect's payload).
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The reply cannot be delivered as it is (too large for relays, say): the attempt fails.
    #[error("{0}")]
    Undeliverable(String),
    #[error("cannot build the reply: {0}")]
    Build(String),
}

/// A protocol as the node's shell uses it.
pub trait ProtocolAdapter {
    /// The events the protocol carries.
    type Event;
    /// What replying to one request needs (its encryption, relays, ids).
    type Context;

    /// What `event` means to the node.
    fn read(&self, event: &Self::Event) -> Inbound<Self::Context>;

    /// `reply` about the job of `context`, signed, with the relays it goes to.
    fn render(&self, context: &Self::Context, reply: &ReplyKind) -> Result<Outbound, AdapterError>;

    /// Whether `reply` can be delivered (a result small enough for relays), without signing it.
    fn check(&self, context: &Self::Context, reply: &ReplyKind) -> Result<(), AdapterError> {
        self.render(context, reply).map(|_| ())
    }

    /// An error reply to a request that did not parse (no context could be made from it).
    fn render_rejection(&self, event: &Self::Event, reason: &str)
        -> Result<Outbound, AdapterError>;
}
