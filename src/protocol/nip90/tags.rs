//! One NIP-90 tag (as its raw strings) to one typed value, and back for the inputs we echo.

use nostr_sdk::prelude::{EventId, PublicKey, RelayUrl, Tag, TagKind};
use paydvm_ledger::Msat;

use super::error::{excerpt, BidError, RequestError};
use super::limits::Limit;
use crate::job::{InputKind, JobInput, JobParam};

pub(super) const INPUT: &str = "i";
pub(super) const PARAM: &str = "param";
pub(super) const OUTPUT: &str = "output";
pub(super) const BID: &str = "bid";
pub(super) const RELAYS: &str = "relays";
pub(super) const PROVIDER: &str = "p";
pub(super) const ENCRYPTED: &str = "encrypted";
/// `["refund", <lightning address | bolt11>]`: where Lightning refunds go (paydvm's own tag).
pub(super) const REFUND: &str = "refund";
pub(super) const CASHU: &str = "cashu";

/// `["cashu", token]`: a serialised NUT-00 token (V3 `cashuA…` or V4 `cashuB…`). Only the
/// prefix and size are checked here; decoding and verification belong to the Cashu rail.
pub(super) fn payment_token(tag: &[String]) -> Result<String, RequestError> {
    let token = tag.get(1).ok_or(RequestError::BadPaymentToken)?;
    Limit::PaymentTokenBytes.check(token.len())?;
    if !(token.starts_with("cashuA") || token.starts_with("cashuB")) {
        return Err(RequestError::BadPaymentToken);
    }
    Ok(token.clone())
}

/// `["i", data, type, relay?, marker?]`; an empty relay means "none" (clients send `""` to reach
/// the marker position).
pub(super) fn input(tag: &[String]) -> Result<JobInput, RequestError> {
    let data = tag
        .get(1)
        .filter(|d| !d.is_empty())
        .ok_or(RequestError::MissingInputData)?;
    let type_name = tag.get(2).ok_or(RequestError::MissingInputType)?;
    let kind =
        input_kind(type_name).ok_or_else(|| RequestError::UnknownInputType(excerpt(type_name)))?;
    if matches!(kind, InputKind::Event | InputKind::Job) && EventId::from_hex(data).is_err() {
        return Err(RequestError::BadInputEventId);
    }
    Ok(JobInput {
        data: data.clone(),
        kind,
        relay: non_empty(tag.get(3)),
        marker: non_empty(tag.get(4)),
    })
}

/// `["param", key, value, ...]`.
pub(super) fn param(tag: &[String]) -> Result<JobParam, RequestError> {
    match tag {
        [_, key, values @ ..] if !key.is_empty() && !values.is_empty() => Ok(JobParam {
            key: key.clone(),
            values: values.to_vec(),
        }),
        _ => Err(RequestError::BadParam),
    }
}

/// `["output", mime]`.
pub(super) fn output(tag: &[String]) -> Result<String, RequestError> {
    non_empty(tag.get(1)).ok_or(RequestError::MissingOutputType)
}

/// `["bid", msat]`: digits only, so `+5`, ` 5` and `5.0` are refused rather than guessed at.
pub(super) fn bid(tag: &[String]) -> Result<Msat, BidError> {
    let raw = tag.get(1).ok_or(BidError::Missing)?;
    if raw.is_empty() {
        return Err(BidError::Empty);
    }
    if raw.starts_with('-') {
        return Err(BidError::Negative);
    }
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BidError::NotDecimal);
    }
    let msat = Msat::from_msat(raw.parse().map_err(|_| BidError::Overflow)?);
    if msat > Msat::MAX_SUPPLY {
        return Err(BidError::AboveMaxSupply);
    }
    Ok(msat)
}

/// `["relays", url, ...]`: the websocket URLs among the values; anything else is dropped.
pub(super) fn relay_urls(tag: &[String]) -> impl Iterator<Item = &String> {
    tag.iter().skip(1).filter(|url| is_websocket_url(url))
}

/// `["p", pubkey-hex]`.
pub(super) fn provider(tag: &[String]) -> Result<PublicKey, RequestError> {
    tag.get(1)
        .and_then(|hex| PublicKey::from_hex(hex).ok())
        .ok_or(RequestError::BadProviderKey)
}

/// The `i` tag for an input, as results echo them.
pub(super) fn input_tag(input: &JobInput) -> Tag {
    let mut values = vec![input.data.clone(), input_kind_name(input.kind).to_owned()];
    match (&input.relay, &input.marker) {
        (relay, Some(marker)) => {
            values.push(relay.clone().unwrap_or_default());
            values.push(marker.clone());
        }
        (Some(relay), None) => values.push(relay.clone()),
        (None, None) => {}
    }
    Tag::custom(TagKind::custom(INPUT), values)
}

fn input_kind(name: &str) -> Option<InputKind> {
    match name {
        "text" => Some(InputKind::Text),
        "url" => Some(InputKind::Url),
        "event" => Some(InputKind::Event),
        "job" => Some(InputKind::Job),
        _ => None,
    }
}

fn input_kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Text => "text",
        InputKind::Url => "url",
        InputKind::Event => "event",
        InputKind::Job => "job",
    }
}

fn is_websocket_url(url: &str) -> bool {
    let scheme_ok = ["ws://", "wss://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
    });
    scheme_ok && RelayUrl::parse(url).is_ok()
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}
