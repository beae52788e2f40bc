//! A NIP-90 job request event → a typed [`Job`] plus what the reply path needs.

use nostr_sdk::prelude::{Event, JsonUtil, Keys, PublicKey};
use paydvm_ledger::Msat;
use serde_json::Value;

use super::encryption::Encryption;
use super::error::{BidError, RequestError};
use super::limits::{Limit, MAX_REPLY_RELAYS};
use super::tags;
use super::REQUEST_KINDS;
use crate::job::{Job, JobInput, JobParam};
use crate::lightning::refund::RefundAddress;

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub job: Job,
    /// The most the customer will pay.
    pub bid: Option<Msat>,
    /// Where the customer wants replies: websocket URLs only, at most 8.
    pub relays: Vec<String>,
    /// The `p` tags: service providers the customer asked for.
    pub providers: Vec<PublicKey>,
    /// Set for encrypted requests; replies must use the same scheme.
    pub encryption: Option<Encryption>,
    /// Where Lightning refunds go, if the customer said (`["refund", …]`).
    pub refund_to: Option<RefundAddress>,
    /// The original event as JSON, for the result's `request` tag.
    pub request_json: String,
    /// Cashu tokens from `cashu` tags, at most [`Limit::PaymentTokens`], in tag order.
    pub payment_tokens: Vec<PaymentToken>,
    addressed_to_us: Option<bool>,
}

/// Where a tag sat in the request: everyone can read a public tag, only we the encrypted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// In the encrypted content: only the customer and we have seen it.
    Encrypted,
    /// A clear tag of the signed event: any relay or reader may have it (and spend it).
    Public,
}

/// A Cashu token offered as payment in a request. It is a bearer secret, so it never prints:
/// `Debug` shows only its visibility and version prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentToken {
    pub token: String,
    pub visibility: Visibility,
}

impl std::fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.token.get(..6).unwrap_or("");
        write!(f, "PaymentToken({:?}, {version}***)", self.visibility)
    }
}

impl ParsedRequest {
    /// Whether our key is among the `p` tags; `None` when the request names no provider.
    pub fn addressed_to_us(&self) -> Option<bool> {
        self.addressed_to_us
    }
}

/// Parses a job request addressed to `our_pubkey`, decrypting with `keys_for_decrypt` if needed.
///
/// The caller must already have verified the event id and signature: the author becomes the
/// customer unchecked. Never panics, whatever the tags hold; every size is bounded by [`Limit`].
pub fn parse_request(
    event: &Event,
    our_pubkey: &PublicKey,
    keys_for_decrypt: &Keys,
) -> Result<ParsedRequest, RequestError> {
    let kind = event.kind.as_u16();
    if !REQUEST_KINDS.contains(&kind) {
        return Err(RequestError::NotAJobRequest(kind));
    }
    Limit::ContentBytes.check(event.content.len())?;
    Limit::Tags.check(event.tags.len())?;

    let mut fields = RequestFields::default();
    for tag in event.tags.iter() {
        fields.add(tag.as_slice())?;
    }

    let encryption = if fields.encrypted {
        if !fields.providers.is_empty() && !fields.providers.contains(our_pubkey) {
            return Err(RequestError::NotForUs);
        }
        let scheme = Encryption::detect(&event.content);
        let plaintext = scheme
            .decrypt(keys_for_decrypt, &event.pubkey, &event.content)
            .map_err(RequestError::BadEncryption)?;
        let inner = tags_from_json(&plaintext)?;
        Limit::Tags.check(event.tags.len() + inner.len())?;
        fields.visibility = Visibility::Encrypted;
        for tag in &inner {
            fields.add(tag)?;
        }
        Some(scheme)
    } else {
        None
    };

    let addressed_to_us = if fields.providers.is_empty() {
        None
    } else {
        Some(fields.providers.contains(our_pubkey))
    };
    Ok(ParsedRequest {
        job: Job {
            id: event.id.to_hex(),
            kind,
            customer: event.pubkey.to_hex(),
            inputs: fields.inputs,
            params: fields.params,
            output: fields.output,
        },
        bid: fields.bid,
        relays: fields.relays,
        providers: fields.providers,
        encryption,
        refund_to: fields.refund_to,
        request_json: event.as_json(),
        payment_tokens: fields.payment_tokens,
        addressed_to_us,
    })
}

/// What the tags say so far; clear and decrypted tags go through the same [`RequestFields::add`],
/// `visibility` telling which part is being read.
struct RequestFields {
    inputs: Vec<JobInput>,
    input_bytes: usize,
    params: Vec<JobParam>,
    output: Option<String>,
    bid: Option<Msat>,
    relays: Vec<String>,
    providers: Vec<PublicKey>,
    encrypted: bool,
    refund_to: Option<RefundAddress>,
    payment_tokens: Vec<PaymentToken>,
    visibility: Visibility,
}

impl Default for RequestFields {
    fn default() -> Self {
        RequestFields {
            inputs: Vec::new(),
            input_bytes: 0,
            params: Vec::new(),
            output: None,
            bid: None,
            relays: Vec::new(),
            providers: Vec::new(),
            encrypted: false,
            refund_to: None,
            payment_tokens: Vec::new(),
            visibility: Visibility::Public,
        }
    }
}

impl RequestFields {
    fn add(&mut self, tag: &[String]) -> Result<(), RequestError> {
        Limit::TagValues.check(tag.len().saturating_sub(1))?;
        for value in tag {
            Limit::TagValueBytes.check(value.len())?;
        }
        let Some(name) = tag.first() else {
            return Ok(());
        };
        match name.as_str() {
            tags::INPUT => {
                let input = tags::input(tag)?;
                Limit::Inputs.check(self.inputs.len() + 1)?;
                self.input_bytes += input.data.len();
                Limit::TotalInputBytes.check(self.input_bytes)?;
                self.inputs.push(input);
            }
            tags::PARAM => {
                let param = tags::param(tag)?;
                Limit::Params.check(self.params.len() + 1)?;
                self.params.push(param);
            }
            tags::OUTPUT => {
                if self.output.is_some() {
                    return Err(RequestError::DuplicateTag(tags::OUTPUT));
                }
                self.output = Some(tags::output(tag)?);
            }
            tags::BID => {
                if self.bid.is_some() {
                    return Err(BidError::Duplicate.into());
                }
                self.bid = Some(tags::bid(tag)?);
            }
            tags::RELAYS => {
                for url in tags::relay_urls(tag) {
                    if self.relays.len() == MAX_REPLY_RELAYS {
                        break;
                    }
                    if !self.relays.contains(url) {
                        self.relays.push(url.clone());
                    }
                }
            }
            tags::PROVIDER => {
                let provider = tags::provider(tag)?;
                if !self.providers.contains(&provider) {
                    self.providers.push(provider);
                }
            }
            tags::ENCRYPTED => self.encrypted = true,
            tags::REFUND => {
                if self.refund_to.is_some() {
                    return Err(RequestError::DuplicateTag(tags::REFUND));
                }
                let value = tag.get(1).map(String::as_str).unwrap_or_default();
                self.refund_to = Some(value.parse()?);
            }
            tags::CASHU => {
                let token = tags::payment_token(tag)?;
                Limit::PaymentTokens.check(self.payment_tokens.len() + 1)?;
                self.payment_tokens.push(PaymentToken {
                    token,
                    visibility: self.visibility,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// The decrypted content: a JSON array of tags, each an array of strings. Empty tags are
/// dropped (a tag needs a name).
fn tags_from_json(plaintext: &str) -> Result<Vec<Vec<String>>, RequestError> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(plaintext) else {
        return Err(RequestError::BadEncryptedTags);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(values) = item else {
            return Err(RequestError::BadEncryptedTags);
        };
        let tag = values
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(RequestError::BadEncryptedTags),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !tag.is_empty() {
            out.push(tag);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::*;
    use proptest::prelude::*;

    use super::*;
    use crate::job::InputKind;
    use crate::protocol::nip90::test_support::{request, signed, tag, tags_json};

    const EVENT_ID: &str = "b3e392b11f5d4f28321cedd09303a748acfd0487aea5a7450b3481c60b6e4f87";

    struct Parties {
        us: Keys,
        customer: Keys,
    }

    fn parties() -> Parties {
        Parties {
            us: Keys::generate(),
            customer: Keys::generate(),
        }
    }

    impl Parties {
        fn parse(&self, event: &Event) -> Result<ParsedRequest, RequestError> {
            parse_request(event, &self.us.public_key(), &self.us)
        }

        fn parse_tags(&self, tags: &[&[&str]]) -> Result<ParsedRequest, RequestError> {
            self.parse(&request(&self.customer, tags))
        }

        fn encrypted(&self, scheme: Encryption, to: &PublicKey, inner: &[&[&str]]) -> Event {
            let content = scheme
                .encrypt(&self.customer, to, &tags_json(inner))
                .unwrap();
            let clear = vec![tag(&["p", &to.to_hex()]), tag(&["encrypted"])];
            signed(&self.customer, 5050, &content, clear)
        }
    }

    #[test]
    fn a_refund_tag_is_a_lightning_address_or_an_invoice_and_nothing_else() {
        let p = parties();
        let parsed = p
            .parse_tags(&[&["i", "x", "text"], &["refund", "alice@wallet.example"]])
            .unwrap();
        assert_eq!(
            parsed.refund_to.map(|a| a.to_string()).as_deref(),
            Some("alice@wallet.example")
        );
        assert_eq!(
            p.parse_tags(&[&["i", "x", "text"]]).unwrap().refund_to,
            None
        );
        for bad in [
            &["refund"][..],
            &["refund", ""],
            &["refund", "Alice@"],
            &["refund", "lnbc1junk"],
        ] {
            let tags: [&[&str]; 2] = [&["i", "x", "text"], bad];
            assert!(
                matches!(p.parse_tags(&tags), Err(RequestError::BadRefundAddress(_))),
                "{bad:?}"
            );
        }
        let twice: [&[&str]; 3] = [
            &["i", "x", "text"],
            &["refund", "a@b.example"],
            &["refund", "c@d.example"],
        ];
        assert_eq!(
            p.parse_tags(&twice).unwrap_err(),
            RequestError::DuplicateTag("refund")
        );
        // Encrypted requests carry it inside, unseen by relays.
        let hidden = p.encrypted(
            Encryption::Nip44,
            &p.us.public_key(),
            &[&["i", "x", "text"], &["refund", "bob@wallet.example"]],
        );
        assert!(p.parse(&hidden).unwrap().refund_to.is_some());
    }

    #[test]
    fn parses_every_input_type_with_relay_and_marker() {
        let p = parties();
        let parsed = p
            .parse_tags(&[
                &["i", "what is 2+2?", "text"],
                &["i", "https://example.com/a.txt", "url", "", "text/plain"],
                &["i", EVENT_ID, "event", "wss://relay.example"],
                &["i", EVENT_ID, "job", "wss://relay.example", "source"],
            ])
            .unwrap();
        let inputs = &parsed.job.inputs;
        assert_eq!(inputs.len(), 4);
        assert_eq!(
            inputs[0],
            JobInput {
                data: "what is 2+2?".into(),
                kind: InputKind::Text,
                relay: None,
                marker: None
            }
        );
        assert_eq!(inputs[1].kind, InputKind::Url);
        assert_eq!(inputs[1].relay, None);
        assert_eq!(inputs[1].marker.as_deref(), Some("text/plain"));
        assert_eq!(inputs[2].kind, InputKind::Event);
        assert_eq!(inputs[2].relay.as_deref(), Some("wss://relay.example"));
        assert_eq!(inputs[3].kind, InputKind::Job);
        assert_eq!(inputs[3].marker.as_deref(), Some("source"));
    }

    #[test]
    fn parses_params_output_bid_relays_and_providers() {
        let p = parties();
        let us = p.us.public_key().to_hex();
        let other = Keys::generate().public_key();
        let event = request(
            &p.customer,
            &[
                &["i", "hello", "text"],
                &["param", "model", "LLaMA-2"],
                &["param", "range", "300", "360"],
                &["output", "text/plain"],
                &["bid", "10000"],
                &[
                    "relays",
                    "wss://a.example",
                    "https://no.example",
                    "ws://b.example",
                    "junk",
                ],
                &["p", &us],
                &["p", &other.to_hex()],
                &["t", "bitcoin"],
            ],
        );
        let parsed = p.parse(&event).unwrap();
        let job = &parsed.job;
        assert_eq!(job.id, event.id.to_hex());
        assert_eq!(job.kind, 5050);
        assert_eq!(job.customer, p.customer.public_key().to_hex());
        assert_eq!(job.param("model"), Some("LLaMA-2"));
        assert_eq!(job.params[1].values, vec!["300", "360"]);
        assert_eq!(job.output.as_deref(), Some("text/plain"));
        assert_eq!(parsed.bid, Some(Msat::from_msat(10_000)));
        assert_eq!(parsed.relays, vec!["wss://a.example", "ws://b.example"]);
        assert_eq!(parsed.providers, vec![p.us.public_key(), other]);
        assert_eq!(parsed.addressed_to_us(), Some(true));
        assert_eq!(parsed.encryption, None);
        assert_eq!(Event::from_json(&parsed.request_json).unwrap(), event);
    }

    #[test]
    fn addressed_to_us_is_none_without_p_and_false_for_others() {
        let p = parties();
        assert_eq!(p.parse_tags(&[]).unwrap().addressed_to_us(), None);
        let other = Keys::generate().public_key().to_hex();
        let parsed = p.parse_tags(&[&["p", &other]]).unwrap();
        assert_eq!(parsed.addressed_to_us(), Some(false));
    }

    #[test]
    fn relays_are_capped_and_deduplicated() {
        let p = parties();
        let urls: Vec<String> = (0..12).map(|n| format!("wss://r{n}.example")).collect();
        let mut tag_values: Vec<&str> = vec!["relays", "wss://r0.example"];
        tag_values.extend(urls.iter().map(String::as_str));
        let parsed = p.parse_tags(&[&tag_values]).unwrap();
        assert_eq!(parsed.relays, urls[..8].to_vec());
    }

    #[test]
    fn malformed_tags_are_typed_errors() {
        let p = parties();
        let cases: &[(&[&str], RequestError)] = &[
            (&["bid", "abc"], BidError::NotDecimal.into()),
            (&["bid"], BidError::Missing.into()),
            (&["bid", ""], BidError::Empty.into()),
            (&["bid", "-5"], BidError::Negative.into()),
            (&["bid", "+5"], BidError::NotDecimal.into()),
            (
                &["bid", "99999999999999999999999"],
                BidError::Overflow.into(),
            ),
            (
                &["bid", "2100000000000000001"],
                BidError::AboveMaxSupply.into(),
            ),
            (&["i"], RequestError::MissingInputData),
            (&["i", "", "text"], RequestError::MissingInputData),
            (&["i", "data"], RequestError::MissingInputType),
            (
                &["i", "data", "video"],
                RequestError::UnknownInputType("video".into()),
            ),
            (&["i", "not-hex", "event"], RequestError::BadInputEventId),
            (&["param", "k"], RequestError::BadParam),
            (&["param"], RequestError::BadParam),
            (&["output"], RequestError::MissingOutputType),
            (&["p", "npub-nonsense"], RequestError::BadProviderKey),
        ];
        for (tag_values, expected) in cases {
            assert_eq!(
                p.parse_tags(&[tag_values]).as_ref(),
                Err(expected),
                "{tag_values:?}"
            );
        }
    }

    #[test]
    fn duplicate_bid_and_output_are_refused() {
        let p = parties();
        let bids = p.parse_tags(&[&["bid", "1"], &["bid", "2"]]);
        assert_eq!(bids, Err(BidError::Duplicate.into()));
        let outputs = p.parse_tags(&[&["output", "a/b"], &["output", "c/d"]]);
        assert_eq!(outputs, Err(RequestError::DuplicateTag("output")));
    }

    #[test]
    fn non_request_kinds_are_refused() {
        let p = parties();
        for kind in [1, 4999, 6000, 7000] {
            let event = signed(&p.customer, kind, "", vec![]);
            assert_eq!(p.parse(&event), Err(RequestError::NotAJobRequest(kind)));
        }
    }

    #[test]
    fn customer_message_stays_short_for_huge_values() {
        let p = parties();
        let huge_type = "x".repeat(10_000);
        let err = p.parse_tags(&[&["i", "data", &huge_type]]).unwrap_err();
        assert!(
            err.customer_message().len() < 100,
            "{}",
            err.customer_message()
        );
    }

    fn limit_of(result: Result<ParsedRequest, RequestError>) -> Limit {
        match result {
            Err(RequestError::LimitExceeded(limit)) => limit,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn limits_are_enforced() {
        let p = parties();
        let many = |n: usize, tag_values: &[&str]| -> Vec<Tag> {
            (0..n).map(|_| tag(tag_values)).collect()
        };
        let parse =
            |tags: Vec<Tag>, content: &str| p.parse(&signed(&p.customer, 5050, content, tags));

        assert!(parse(many(20, &["i", "x", "text"]), "").is_ok());
        assert_eq!(
            limit_of(parse(many(21, &["i", "x", "text"]), "")),
            Limit::Inputs
        );
        assert!(parse(many(32, &["param", "k", "v"]), "").is_ok());
        assert_eq!(
            limit_of(parse(many(33, &["param", "k", "v"]), "")),
            Limit::Params
        );

        let half = "x".repeat(40 * 1024);
        let two_big = many(2, &["i", &half, "text"]);
        assert_eq!(limit_of(parse(two_big, "")), Limit::TotalInputBytes);

        let too_long = "x".repeat(64 * 1024 + 1);
        assert_eq!(
            limit_of(parse(many(1, &["t", &too_long]), "")),
            Limit::TagValueBytes
        );

        let content = "x".repeat(128 * 1024 + 1);
        assert_eq!(limit_of(parse(vec![], &content)), Limit::ContentBytes);

        assert_eq!(limit_of(parse(many(257, &["t", "x"]), "")), Limit::Tags);

        let mut wide = vec!["param", "k"];
        wide.extend(["v"; 64]);
        assert_eq!(limit_of(parse(many(1, &wide), "")), Limit::TagValues);
    }

    const SECRET_JOB: &[&[&str]] = &[
        &["i", "what is the capital of France?", "text"],
        &["param", "model", "LLaMA-2"],
        &["bid", "21000"],
    ];

    #[test]
    fn encrypted_requests_round_trip_with_both_schemes() {
        let p = parties();
        let clear = p.parse_tags(SECRET_JOB).unwrap();
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            let event = p.encrypted(scheme, &p.us.public_key(), SECRET_JOB);
            let parsed = p.parse(&event).unwrap();
            assert_eq!(parsed.encryption, Some(scheme));
            assert_eq!(parsed.bid, clear.bid);
            assert_eq!(parsed.addressed_to_us(), Some(true));
            let same_id = Job {
                id: clear.job.id.clone(),
                ..parsed.job
            };
            assert_eq!(same_id, clear.job);
        }
    }

    #[test]
    fn encrypted_to_another_key_is_refused() {
        let p = parties();
        let other = Keys::generate().public_key();
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            let event = p.encrypted(scheme, &other, SECRET_JOB);
            assert_eq!(p.parse(&event), Err(RequestError::NotForUs));

            // Addressed to us but encrypted for someone else: NIP-04 has no MAC, so a wrong key
            // usually fails the padding check and otherwise yields garbage that is not JSON.
            let content = scheme
                .encrypt(&p.customer, &other, &tags_json(SECRET_JOB))
                .unwrap();
            let clear = vec![
                tag(&["p", &p.us.public_key().to_hex()]),
                tag(&["encrypted"]),
            ];
            let lying = signed(&p.customer, 5050, &content, clear);
            assert!(matches!(
                p.parse(&lying),
                Err(RequestError::BadEncryption(_) | RequestError::BadEncryptedTags)
            ));
        }
    }

    #[test]
    fn encrypted_garbage_is_refused() {
        let p = parties();
        let us = p.us.public_key().to_hex();
        let clear = || vec![tag(&["p", &us]), tag(&["encrypted"])];
        let empty = p.parse(&signed(&p.customer, 5050, "", clear()));
        assert!(
            matches!(empty, Err(RequestError::BadEncryption(_))),
            "{empty:?}"
        );
        let nip04ish = p.parse(&signed(&p.customer, 5050, "abc?iv=def", clear()));
        assert!(
            matches!(nip04ish, Err(RequestError::BadEncryption(e)) if e.scheme == Encryption::Nip04)
        );

        let not_tags = Encryption::Nip44
            .encrypt(&p.customer, &p.us.public_key(), "{\"i\":1}")
            .unwrap();
        let parsed = p.parse(&signed(&p.customer, 5050, &not_tags, clear()));
        assert_eq!(parsed, Err(RequestError::BadEncryptedTags));
    }

    const TOKEN_A: &str = "cashuAeyJ0b2tlbiI6W119";
    const TOKEN_B: &str = "cashuBo2F0gaJhaUgA_9SLj17PgGFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQyMzJiYTc2";

    #[test]
    fn cashu_tags_say_whether_they_were_public_or_encrypted() {
        let p = parties();
        let public = p.parse_tags(&[&["cashu", TOKEN_B]]).unwrap();
        assert_eq!(
            public.payment_tokens,
            vec![PaymentToken {
                token: TOKEN_B.into(),
                visibility: Visibility::Public
            }]
        );
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            let event = p.encrypted(
                scheme,
                &p.us.public_key(),
                &[&["i", "x", "text"], &["cashu", TOKEN_A]],
            );
            let parsed = p.parse(&event).unwrap();
            assert_eq!(parsed.payment_tokens.len(), 1);
            assert_eq!(parsed.payment_tokens[0].token, TOKEN_A);
            assert_eq!(parsed.payment_tokens[0].visibility, Visibility::Encrypted);
        }
        assert!(p.parse_tags(&[]).unwrap().payment_tokens.is_empty());
    }

    #[test]
    fn cashu_tags_are_bounded_and_never_echo_the_token() {
        let p = parties();
        let three = p.parse_tags(&[
            &["cashu", TOKEN_A],
            &["cashu", TOKEN_B],
            &["cashu", TOKEN_A],
        ]);
        assert_eq!(limit_of(three), Limit::PaymentTokens);
        let huge = format!("cashuB{}", "x".repeat(16 * 1024));
        assert_eq!(
            limit_of(p.parse_tags(&[&["cashu", &huge]])),
            Limit::PaymentTokenBytes
        );
        for bad in [
            &["cashu"][..],
            &["cashu", ""],
            &["cashu", "cashuC123"],
            &["cashu", "lnbc1"],
        ] {
            assert_eq!(
                p.parse_tags(&[bad]),
                Err(RequestError::BadPaymentToken),
                "{bad:?}"
            );
        }
        let parsed = p.parse_tags(&[&["cashu", TOKEN_B]]).unwrap();
        // The signed event (`request_json`) holds a clear tag's token anyway; the parsed token
        // itself never prints.
        let printed = format!(
            "{:?} {}",
            parsed.payment_tokens,
            RequestError::BadPaymentToken
        );
        assert!(
            !printed.contains(&TOKEN_B[6..]),
            "a token leaked: {printed}"
        );
    }

    fn tag_name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "i", "param", "output", "bid", "relays", "p", "encrypted", "e", "t", "cashu"
            ])
            .prop_map(String::from),
            1 => "\\PC{0,8}",
        ]
    }

    fn tag_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "\\PC{0,16}",
            2 => prop::sample::select(vec!["text", "url", "event", "job", "", "wss://r.example"])
                .prop_map(String::from),
            2 => "-?[0-9]{0,25}",
            1 => "[0-9a-f]{64}",
            1 => (0usize..80_000).prop_map(|n| "x".repeat(n)),
        ]
    }

    fn random_tag() -> impl Strategy<Value = Vec<String>> {
        (tag_name(), prop::collection::vec(tag_value(), 0..6)).prop_map(|(name, mut values)| {
            values.insert(0, name);
            values
        })
    }

    fn random_content() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "\\PC{0,64}",
            1 => "[A-Za-z0-9+/=]{0,200}(\\?iv=[A-Za-z0-9+/=]{0,30})?",
            1 => (0usize..140_000).prop_map(|n| "A".repeat(n)),
        ]
    }

    proptest! {
        // No regression files: they would land outside src/protocol and can hold 64 KiB strings.
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_requests_never_panic(
            kind in prop_oneof![4990u16..6010, any::<u16>()],
            tags in prop::collection::vec(random_tag(), 0..40),
            content in random_content(),
        ) {
            let p = parties();
            let tags = tags.iter().map(|t| Tag::parse(t.iter().cloned()).unwrap()).collect();
            let event = signed(&p.customer, kind, &content, tags);
            let _ = p.parse(&event);
        }

        #[test]
        fn random_encrypted_tags_never_panic(
            inner in prop::collection::vec(random_tag(), 0..20),
            nip04 in any::<bool>(),
        ) {
            let p = parties();
            let scheme = if nip04 { Encryption::Nip04 } else { Encryption::Nip44 };
            let json = serde_json::to_string(&inner).unwrap();
            // nostr 0.44's NIP-44 still refuses plaintexts over 65535 bytes (the pre-2026 rule).
            let encrypted = scheme.encrypt(&p.customer, &p.us.public_key(), &json);
            prop_assume!(encrypted.is_ok());
            let content = encrypted.unwrap();
            let clear = vec![tag(&["p", &p.us.public_key().to_hex()]), tag(&["encrypted"])];
            if let Ok(parsed) = p.parse(&signed(&p.customer, 5050, &content, clear)) {
                prop_assert_eq!(parsed.encryption, Some(scheme));
            }
        }
    }
}
