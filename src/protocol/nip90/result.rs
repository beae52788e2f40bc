//! Job results (kind = request kind + 1000).

use nostr_sdk::prelude::{EventBuilder, Keys, Kind, Tag, TagKind, Timestamp};

use super::reply::{encrypted_tag, Addressee, Amount, ReplyError};
use super::request::ParsedRequest;
use super::tags::input_tag;
use super::{REQUEST_KINDS, RESULT_KIND_OFFSET};

/// A finished job's output, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The result content; its format is defined per job kind.
    pub payload: String,
    /// What we ask for after delivery, if anything.
    pub amount: Option<Amount>,
    /// NIP-40: relays may drop the event after this.
    pub expiration: Option<Timestamp>,
}

impl JobResult {
    pub fn new(payload: impl Into<String>) -> Self {
        JobResult {
            payload: payload.into(),
            amount: None,
            expiration: None,
        }
    }
}

/// The unsigned result event for `request`. `our_keys` only encrypts (for encrypted requests);
/// the outbox signs. `relay_hint` is where the request was seen, if known.
///
/// Encrypted requests get an encrypted payload and no `i` tags, which would leak the inputs;
/// `request`, `e`, `p` and `amount` stay in clear so the customer can match and pay.
pub fn result_event(
    request: &ParsedRequest,
    result: &JobResult,
    relay_hint: Option<&str>,
    our_keys: &Keys,
) -> Result<EventBuilder, ReplyError> {
    let to = Addressee::of(request, relay_hint)?;
    let request_kind = request.job.kind;
    if !REQUEST_KINDS.contains(&request_kind) {
        return Err(ReplyError::NotAJobRequest(request_kind));
    }
    let result_kind = request_kind + RESULT_KIND_OFFSET;

    let mut tags = vec![
        Tag::custom(TagKind::custom("request"), [request.request_json.clone()]),
        to.e_tag(),
        to.p_tag(),
    ];
    let content = match to.encrypt(our_keys, &result.payload)? {
        Some(ciphertext) => {
            tags.push(encrypted_tag());
            ciphertext
        }
        None => {
            tags.extend(request.job.inputs.iter().map(input_tag));
            result.payload.clone()
        }
    };
    tags.extend(result.amount.as_ref().map(Amount::tag));
    tags.push(Tag::alt(format!(
        "This is the result of a NIP-90 DVM job with kind {request_kind}"
    )));
    tags.extend(result.expiration.map(Tag::expiration));

    Ok(EventBuilder::new(Kind::Custom(result_kind), content)
        .tags(tags)
        .allow_self_tagging())
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::*;
    use paydvm_ledger::Msat;

    use super::*;
    use crate::protocol::nip90::test_support::{request, signed, tag, tags_json, values};
    use crate::protocol::nip90::{parse_request, Encryption};

    const EVENT_ID: &str = "b3e392b11f5d4f28321cedd09303a748acfd0487aea5a7450b3481c60b6e4f87";

    fn tag_named<'a>(tags: &'a [Vec<String>], name: &str) -> Vec<&'a Vec<String>> {
        tags.iter().filter(|t| t[0] == name).collect()
    }

    #[test]
    fn clear_result_echoes_request_inputs_and_amount() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        let event = request(
            &customer,
            &[
                &["i", "hello", "text"],
                &["i", EVENT_ID, "event", "wss://r.example"],
                &["i", "https://x.example", "url", "", "text/html"],
                &["param", "model", "m"],
            ],
        );
        let parsed = parse_request(&event, &us.public_key(), &us).unwrap();
        let result = JobResult {
            payload: "world".into(),
            amount: Some(Amount {
                msat: Msat::from_msat(5_000),
                bolt11: Some("lnbc50n1pjexample".into()),
            }),
            expiration: Some(Timestamp::from(1_900_000_000)),
        };

        let reply = result_event(&parsed, &result, Some("wss://in.example"), &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert_eq!(reply.kind, Kind::Custom(6050));
        assert_eq!(reply.content, "world");

        let tags = values(&reply);
        let request_tag = tag_named(&tags, "request");
        assert_eq!(request_tag.len(), 1);
        assert_eq!(Event::from_json(&request_tag[0][1]).unwrap(), event);
        assert_eq!(
            tag_named(&tags, "e"),
            vec![&vec![
                "e".to_owned(),
                event.id.to_hex(),
                "wss://in.example".into()
            ]]
        );
        assert_eq!(
            tag_named(&tags, "p"),
            vec![&vec!["p".to_owned(), customer.public_key().to_hex()]]
        );
        let inputs: Vec<Vec<String>> = tag_named(&tags, "i").into_iter().cloned().collect();
        assert_eq!(
            inputs,
            vec![
                vec!["i", "hello", "text"],
                vec!["i", EVENT_ID, "event", "wss://r.example"],
                vec!["i", "https://x.example", "url", "", "text/html"],
            ]
        );
        assert_eq!(
            tag_named(&tags, "amount"),
            vec![&vec![
                "amount".to_owned(),
                "5000".into(),
                "lnbc50n1pjexample".into()
            ]]
        );
        assert_eq!(tag_named(&tags, "alt").len(), 1);
        assert_eq!(
            tag_named(&tags, "expiration"),
            vec![&vec!["expiration".to_owned(), "1900000000".into()]]
        );
        assert!(tag_named(&tags, "encrypted").is_empty());
    }

    #[test]
    fn result_to_ourselves_keeps_the_p_tag() {
        let us = Keys::generate();
        let parsed = parse_request(&request(&us, &[]), &us.public_key(), &us).unwrap();
        let reply = result_event(&parsed, &JobResult::new("ok"), None, &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        let tags = values(&reply);
        assert_eq!(tag_named(&tags, "p").len(), 1);
        assert!(tag_named(&tags, "amount").is_empty());
        assert!(tag_named(&tags, "expiration").is_empty());
    }

    #[test]
    fn encrypted_result_omits_inputs_and_decrypts_with_the_customers_scheme() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            let inner = tags_json(&[&["i", "top secret", "text"]]);
            let content = scheme.encrypt(&customer, &us.public_key(), &inner).unwrap();
            let clear = vec![tag(&["p", &us.public_key().to_hex()]), tag(&["encrypted"])];
            let event = signed(&customer, 5002, &content, clear);
            let parsed = parse_request(&event, &us.public_key(), &us).unwrap();

            let reply = result_event(&parsed, &JobResult::new("the answer"), None, &us)
                .unwrap()
                .sign_with_keys(&us)
                .unwrap();
            assert_eq!(reply.kind, Kind::Custom(6002));
            let tags = values(&reply);
            assert!(tag_named(&tags, "i").is_empty());
            assert_eq!(tag_named(&tags, "encrypted").len(), 1);
            assert_eq!(tag_named(&tags, "e").len(), 1);
            assert_eq!(tag_named(&tags, "p").len(), 1);
            assert!(!reply.content.contains("the answer"));
            assert!(!reply.as_json().contains("top secret"));
            assert_eq!(Encryption::detect(&reply.content), scheme);
            let plain = scheme.decrypt(&customer, &us.public_key(), &reply.content);
            assert_eq!(plain.as_deref(), Ok("the answer"));
        }
    }

    #[test]
    fn bad_job_fields_are_reply_errors() {
        let us = Keys::generate();
        let good = parse_request(&request(&us, &[]), &us.public_key(), &us).unwrap();
        let mut bad = good.clone();
        bad.job.id = "nope".into();
        let err = result_event(&bad, &JobResult::new(""), None, &us).unwrap_err();
        assert_eq!(err, ReplyError::BadJobId("nope".into()));
        let mut bad = good.clone();
        bad.job.kind = 65_000;
        let err = result_event(&bad, &JobResult::new(""), None, &us).unwrap_err();
        assert_eq!(err, ReplyError::NotAJobRequest(65_000));
        let mut bad = good;
        bad.job.customer = "x".into();
        let err = result_event(&bad, &JobResult::new(""), None, &us).unwrap_err();
        assert_eq!(err, ReplyError::BadCustomer);
    }
}
