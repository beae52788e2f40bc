//! NIP-90 as a [`ProtocolAdapter`]: job requests (clear, NIP-04, NIP-44) in; feedback (kind
//! 7000) and results (kind + 1000) out, signed with the node's keys, in the customer's
//! encryption scheme, to our relays and (if allowed) the customer's.

use nostr_sdk::prelude::{Event, EventBuilder, JsonUtil, Keys, RelayUrl, Timestamp};
use paydvm_ledger::{JobId, Pubkey};

use super::feedback::rejection_event;
use super::{
    feedback_event, parse_request, result_event, Amount, Feedback, JobResult, ParsedRequest,
    RequestError, Status,
};
use crate::config::Relays;
use crate::node::decide::{JobRequest, ReplyKind};
use crate::protocol::{AdapterError, Inbound, Outbound, ProtocolAdapter};

/// Largest result event we publish: relays commonly refuse events over 64 KiB (LocalRelay does),
/// and a result embeds the request.
pub const MAX_RESULT_EVENT_BYTES: usize = 60 * 1024;

pub struct Nip90Adapter {
    keys: Keys,
    offered: Vec<u16>,
    relays: Relays,
    /// Who bears Cashu mint input fees, said in every quote; `None` when the Cashu rail is off.
    cashu_fees: Option<&'static str>,
}

/// What replying to one request needs.
#[derive(Debug, Clone)]
pub struct Nip90Context {
    pub request: ParsedRequest,
    /// Where the request was seen (a reply's relay hint).
    pub relay: Option<RelayUrl>,
}

impl Nip90Adapter {
    pub fn new(
        keys: Keys,
        offered: Vec<u16>,
        relays: Relays,
        cashu_fees: Option<&'static str>,
    ) -> Self {
        Nip90Adapter {
            keys,
            offered,
            relays,
            cashu_fees,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads `event` as seen on `relay`.
    pub fn read_from(&self, event: &Event, relay: Option<RelayUrl>) -> Inbound<Nip90Context> {
        match self.read(event) {
            Inbound::Request { request, context } => Inbound::Request {
                request,
                context: Box::new(Nip90Context { relay, ..*context }),
            },
            other => other,
        }
    }

    /// Our relays, then the customer's (if allowed), without duplicates, at most `publish_cap`.
    pub fn reply_relays(&self, request: Option<&ParsedRequest>) -> Vec<RelayUrl> {
        let mut out: Vec<RelayUrl> = self.relays.urls.clone();
        for url in request.map(|r| r.relays.as_slice()).unwrap_or_default() {
            if let Ok(url) = RelayUrl::parse(url) {
                if self.relays.customer_may_use(&url) && !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out.truncate(self.relays.publish_cap);
        out
    }

    /// Signs `builder` and makes the effect payload `{"event": …, "relays": […]}`.
    pub fn outbound(
        &self,
        builder: EventBuilder,
        relays: &[RelayUrl],
    ) -> Result<(Event, Outbound), AdapterError> {
        let event = builder
            .sign_with_keys(&self.keys)
            .map_err(|e| AdapterError::Build(e.to_string()))?;
        let outbound = Self::publishable(&event, relays)?;
        Ok((event, outbound))
    }

    /// The effect payload of a signed event.
    pub fn publishable(event: &Event, relays: &[RelayUrl]) -> Result<Outbound, AdapterError> {
        let json: serde_json::Value = serde_json::from_str(&event.as_json())
            .map_err(|e| AdapterError::Build(e.to_string()))?;
        let payload = serde_json::json!({
            "event": json,
            "relays": relays.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        })
        .to_string();
        Ok(Outbound {
            id: event.id.to_hex(),
            payload,
        })
    }

    fn feedback(&self, reply: &ReplyKind) -> Option<Feedback> {
        Some(match reply {
            ReplyKind::PaymentRequired {
                amount,
                bolt11,
                expires_at,
                note,
            } => {
                let mut f = Feedback::new(Status::PaymentRequired).with_amount(Amount {
                    msat: *amount,
                    bolt11: bolt11.clone(),
                });
                if let Some(note) = note {
                    f = f.with_info(note.clone());
                }
                // A quote (it expires) says who bears mint fees; a reminder of the rest does not.
                if let Some(at) = expires_at {
                    f = f.with_expiration(Timestamp::from_secs(at.0 / 1000));
                    if let Some(who) = self.cashu_fees {
                        f = f.with_cashu_fees(who);
                    }
                }
                f
            }
            ReplyKind::Processing => Feedback::new(Status::Processing),
            ReplyKind::Error { reason } => Feedback::new(Status::Error).with_info(reason.clone()),
            ReplyKind::Refunded {
                amount,
                zap_request,
            } => Feedback::new(Status::Error).with_info(refunded_note(*amount, zap_request)),
            ReplyKind::Result { .. } => return None,
        })
    }

    fn result(
        &self,
        context: &Nip90Context,
        reply: &ReplyKind,
    ) -> Result<EventBuilder, AdapterError> {
        let ReplyKind::Result {
            content,
            expires_at,
        } = reply
        else {
            return Err(AdapterError::Build("not a result".into()));
        };
        let mut result = JobResult::new(content.clone());
        result.expiration = expires_at.map(|ms| Timestamp::from_secs(ms.0 / 1000));
        let hint = context.relay.as_ref().map(|r| r.to_string());
        result_event(&context.request, &result, hint.as_deref(), &self.keys)
            .map_err(|e| AdapterError::Undeliverable(e.to_string()))
    }
}

impl ProtocolAdapter for Nip90Adapter {
    type Event = Event;
    type Context = Nip90Context;

    fn read(&self, event: &Event) -> Inbound<Nip90Context> {
        let kind = event.kind.as_u16();
        if !self.offered.contains(&kind) {
            return Inbound::Ignore;
        }
        let request = match parse_request(event, &self.keys.public_key(), &self.keys) {
            Ok(r) if r.addressed_to_us() == Some(false) => return Inbound::Ignore,
            Ok(r) => r,
            Err(RequestError::NotForUs) => return Inbound::Ignore,
            Err(e) => return unparsable(event, e.customer_message()),
        };
        match job_request(&request) {
            Some(job) => Inbound::Request {
                request: Box::new(job),
                context: Box::new(Nip90Context {
                    request,
                    relay: None,
                }),
            },
            None => unparsable(event, "malformed request ids".into()),
        }
    }

    fn render(&self, context: &Nip90Context, reply: &ReplyKind) -> Result<Outbound, AdapterError> {
        let builder = match self.feedback(reply) {
            Some(feedback) => {
                let hint = context.relay.as_ref().map(|r| r.to_string());
                feedback_event(&context.request, &feedback, hint.as_deref(), &self.keys)
                    .map_err(|e| AdapterError::Build(e.to_string()))?
            }
            None => self.result(context, reply)?,
        };
        let relays = self.reply_relays(Some(&context.request));
        let (event, outbound) = self.outbound(builder, &relays)?;
        if matches!(reply, ReplyKind::Result { .. }) {
            too_large(event.as_json().len())?;
        }
        Ok(outbound)
    }

    /// A result's size, from the unsigned event plus room for the signature.
    fn check(&self, context: &Nip90Context, reply: &ReplyKind) -> Result<(), AdapterError> {
        if !matches!(reply, ReplyKind::Result { .. }) {
            return Ok(());
        }
        let unsigned = self.result(context, reply)?.build(self.keys.public_key());
        let size = unsigned.as_json().len() + SIGNATURE_ROOM;
        too_large(size)
    }

    /// Built without the request's tags (they did not parse), to our relays only; encrypted
    /// when the request asked for it (`rejection_event`).
    fn render_rejection(&self, event: &Event, reason: &str) -> Result<Outbound, AdapterError> {
        let builder = rejection_event(event, reason, &self.keys)
            .map_err(|e| AdapterError::Build(e.to_string()))?;
        let relays = self.reply_relays(None);
        self.outbound(builder, &relays)
            .map(|(_, outbound)| outbound)
    }
}

/// What a signature adds to an unsigned event's JSON (`"sig":"<128 hex>"` and a comma).
const SIGNATURE_ROOM: usize = 140;

fn too_large(size: usize) -> Result<(), AdapterError> {
    if size > MAX_RESULT_EVENT_BYTES {
        return Err(AdapterError::Undeliverable(format!(
            "the result is too large to deliver ({size} bytes; the limit is \
             {MAX_RESULT_EVENT_BYTES})"
        )));
    }
    Ok(())
}

fn unparsable(event: &Event, reason: String) -> Inbound<Nip90Context> {
    match (
        JobId::new(event.id.to_hex()),
        Pubkey::new(event.pubkey.to_hex()),
    ) {
        (Ok(job), Ok(customer)) => Inbound::Unparsable {
            job,
            customer,
            kind: event.kind.as_u16(),
            reason,
        },
        _ => Inbound::Ignore,
    }
}

/// The protocol-neutral request the decision core sees.
fn job_request(request: &ParsedRequest) -> Option<JobRequest> {
    Some(JobRequest {
        job: JobId::new(request.job.id.clone()).ok()?,
        customer: Pubkey::new(request.job.customer.clone()).ok()?,
        work: request.job.clone(),
        bid: request.bid,
        refund_to: request.refund_to.clone(),
        stored: Some(request.request_json.clone()),
    })
}

/// The job's last feedback once its money went back (the status stays `error`: the job failed).
fn refunded_note(amount: paydvm_ledger::Msat, zap_request: &Option<String>) -> String {
    match zap_request {
        Some(id) => format!("refunded {amount} as a zap (zap request {id})"),
        None => format!("refunded {amount}"),
    }
}
