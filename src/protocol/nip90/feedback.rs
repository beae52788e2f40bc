//! Job feedback (kind 7000): status updates, payment requests, partial results.

use nostr_sdk::prelude::{Event, EventBuilder, Keys, Kind, Tag, TagKind, Timestamp};

use super::encryption::Encryption;
use super::reply::{encrypted_tag, tags_json, Addressee, Amount, ReplyError};
use super::request::ParsedRequest;
use super::{tags, FEEDBACK_KIND};

/// The NIP-90 feedback statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    PaymentRequired,
    Processing,
    Error,
    Success,
    Partial,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::PaymentRequired => "payment-required",
            Status::Processing => "processing",
            Status::Error => "error",
            Status::Success => "success",
            Status::Partial => "partial",
        }
    }
}

/// One feedback message for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub status: Status,
    /// Human-readable extra info (the `status` tag's third element).
    pub info: Option<String>,
    pub amount: Option<Amount>,
    /// Free text, or a sample of partial results.
    pub content: String,
    /// NIP-40: relays may drop the event after this.
    pub expiration: Option<Timestamp>,
    /// Who bears the Cashu mint's input fee (`operator` | `customer`): `["cashu_fees", …]` on a
    /// quote when the node takes ecash.
    pub cashu_fees: Option<&'static str>,
}

impl Feedback {
    pub fn new(status: Status) -> Self {
        Feedback {
            status,
            info: None,
            amount: None,
            content: String::new(),
            expiration: None,
            cashu_fees: None,
        }
    }

    pub fn with_cashu_fees(mut self, who: &'static str) -> Self {
        self.cashu_fees = Some(who);
        self
    }

    pub fn with_info(mut self, info: impl Into<String>) -> Self {
        self.info = Some(info.into());
        self
    }

    pub fn with_amount(mut self, amount: Amount) -> Self {
        self.amount = Some(amount);
        self
    }

    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }

    pub fn with_expiration(mut self, at: Timestamp) -> Self {
        self.expiration = Some(at);
        self
    }

    fn status_tag(&self) -> Tag {
        let mut values = vec![self.status.as_str().to_owned()];
        values.extend(self.info.clone());
        Tag::custom(TagKind::custom("status"), values)
    }
}

/// The unsigned feedback event for `request`. `our_keys` only encrypts (for encrypted requests);
/// the outbox signs. `relay_hint` is where the request was seen, if known.
///
/// Encrypted requests get what nostrdvm sends: content = the feedback tags plus
/// `["content", text]` as an encrypted JSON array, and only `encrypted`, `p`, `e` in clear.
pub fn feedback_event(
    request: &ParsedRequest,
    feedback: &Feedback,
    relay_hint: Option<&str>,
    our_keys: &Keys,
) -> Result<EventBuilder, ReplyError> {
    feedback_to(&Addressee::of(request, relay_hint)?, feedback, our_keys)
}

/// The unsigned feedback event to `to`: encrypted when `to` wrote in a scheme.
fn feedback_to(
    to: &Addressee<'_>,
    feedback: &Feedback,
    our_keys: &Keys,
) -> Result<EventBuilder, ReplyError> {
    let mut private = vec![feedback.status_tag()];
    private.extend(feedback.amount.as_ref().map(Amount::tag));
    private.extend(
        feedback
            .cashu_fees
            .map(|who| Tag::custom(TagKind::custom("cashu_fees"), [who])),
    );

    let content_tag = Tag::custom(TagKind::custom("content"), [feedback.content.clone()]);
    let hidden = [private.as_slice(), &[content_tag]].concat();
    let (content, mut tags) = match to.encrypt(our_keys, &tags_json(&hidden))? {
        Some(ciphertext) => (ciphertext, vec![encrypted_tag()]),
        None => (feedback.content.clone(), private),
    };
    tags.push(to.e_tag());
    tags.push(to.p_tag());
    tags.extend(feedback.expiration.map(Tag::expiration));

    Ok(EventBuilder::new(Kind::Custom(FEEDBACK_KIND), content)
        .tags(tags)
        .allow_self_tagging())
}

/// The unsigned error feedback refusing `request`, which did not parse: only its id and author
/// are known. A request carrying the `encrypted` tag gets it as an encrypted request's feedback
/// goes ([`feedback_event`]): the reason may quote what the customer hid (an input type, say),
/// and whether a private request was refused is the customer's business. It is encrypted to the
/// author with the scheme the request's content was written in, whether or not that content
/// could be read. The `e` and `p` tags stay in clear, as on every reply.
pub fn rejection_event(
    request: &Event,
    reason: &str,
    our_keys: &Keys,
) -> Result<EventBuilder, ReplyError> {
    let to = Addressee {
        request_id: request.id,
        customer: request.pubkey,
        encryption: asks_for_encryption(request).then(|| Encryption::detect(&request.content)),
        relay_hint: None,
    };
    feedback_to(
        &to,
        &Feedback::new(Status::Error).with_info(reason),
        our_keys,
    )
}

/// Whether the request carries the `encrypted` tag, however the rest of it reads.
fn asks_for_encryption(request: &Event) -> bool {
    request
        .tags
        .iter()
        .any(|t| t.as_slice().first().map(String::as_str) == Some(tags::ENCRYPTED))
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::*;
    use paydvm_ledger::Msat;

    use super::*;
    use crate::protocol::nip90::test_support::{request, signed, tag, tags_json, values};
    use crate::protocol::nip90::{parse_request, Encryption};

    const INVOICE: &str = "lnbc210n1pjexample";

    fn payment_required() -> Feedback {
        Feedback::new(Status::PaymentRequired)
            .with_info("pay first")
            .with_amount(Amount {
                msat: Msat::from_msat(21_000),
                bolt11: Some(INVOICE.into()),
            })
            .with_content("a sample")
    }

    #[test]
    fn a_quote_can_say_who_bears_cashu_input_fees() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        let event = request(&customer, &[&["i", "hi", "text"]]);
        let parsed = parse_request(&event, &us.public_key(), &us).unwrap();
        let feedback = payment_required().with_cashu_fees("customer");
        let signed = feedback_event(&parsed, &feedback, None, &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert!(values(&signed)
            .iter()
            .any(|t| t == &["cashu_fees", "customer"]));
        let plain = feedback_event(&parsed, &payment_required(), None, &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert!(!values(&plain).iter().any(|t| t[0] == "cashu_fees"));
    }

    #[test]
    fn clear_feedback_has_status_amount_e_and_p() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        let event = request(&customer, &[&["i", "hi", "text"]]);
        let parsed = parse_request(&event, &us.public_key(), &us).unwrap();

        let signed = feedback_event(&parsed, &payment_required(), Some("wss://in.example"), &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert_eq!(signed.kind, Kind::Custom(7000));
        assert_eq!(signed.content, "a sample");
        assert_eq!(
            values(&signed),
            vec![
                vec!["status", "payment-required", "pay first"],
                vec!["amount", "21000", INVOICE],
                vec!["e", &event.id.to_hex(), "wss://in.example"],
                vec!["p", &customer.public_key().to_hex()],
            ]
        );
    }

    #[test]
    fn status_names_match_the_nip() {
        let names: Vec<_> = [
            Status::PaymentRequired,
            Status::Processing,
            Status::Error,
            Status::Success,
            Status::Partial,
        ]
        .map(Status::as_str)
        .into();
        assert_eq!(
            names,
            [
                "payment-required",
                "processing",
                "error",
                "success",
                "partial"
            ]
        );
    }

    #[test]
    fn self_addressed_feedback_keeps_its_p_tag_and_optional_parts() {
        let us = Keys::generate();
        let event = request(&us, &[]);
        let parsed = parse_request(&event, &us.public_key(), &us).unwrap();
        let expiry = Timestamp::from(1_900_000_000);
        let feedback = Feedback::new(Status::Processing).with_expiration(expiry);

        let signed = feedback_event(&parsed, &feedback, None, &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert_eq!(
            values(&signed),
            vec![
                vec!["status", "processing"],
                vec!["e", &event.id.to_hex()],
                vec!["p", &us.public_key().to_hex()],
                vec!["expiration", "1900000000"],
            ]
        );
    }

    /// A 5050 request from `customer` to `us` with `inner` as its encrypted tags.
    fn encrypted_request(
        scheme: Encryption,
        customer: &Keys,
        us: &Keys,
        inner: &[&[&str]],
    ) -> Event {
        let content = scheme
            .encrypt(customer, &us.public_key(), &tags_json(inner))
            .unwrap();
        let clear = vec![tag(&["p", &us.public_key().to_hex()]), tag(&["encrypted"])];
        signed(customer, 5050, &content, clear)
    }

    /// The tags `reply` hides, as `customer` decrypts them, once its clear tags are checked to
    /// be only `encrypted`, `e` and `p`.
    fn hidden_tags(
        reply: &Event,
        request: &Event,
        scheme: Encryption,
        customer: &Keys,
    ) -> Vec<Vec<String>> {
        assert_eq!(
            values(reply),
            vec![
                vec!["encrypted".to_owned()],
                vec!["e".to_owned(), request.id.to_hex()],
                vec!["p".to_owned(), customer.public_key().to_hex()],
            ]
        );
        assert_eq!(Encryption::detect(&reply.content), scheme);
        let plain = scheme
            .decrypt(customer, &reply.pubkey, &reply.content)
            .unwrap();
        serde_json::from_str(&plain).unwrap()
    }

    #[test]
    fn encrypted_feedback_hides_its_tags_with_the_customers_scheme() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            let event = encrypted_request(scheme, &customer, &us, &[&["i", "secret", "text"]]);
            let parsed = parse_request(&event, &us.public_key(), &us).unwrap();

            let reply = feedback_event(&parsed, &payment_required(), None, &us)
                .unwrap()
                .sign_with_keys(&us)
                .unwrap();
            assert_eq!(
                hidden_tags(&reply, &event, scheme, &customer),
                vec![
                    vec!["status", "payment-required", "pay first"],
                    vec!["amount", "21000", INVOICE],
                    vec!["content", "a sample"],
                ]
            );
        }
    }

    #[test]
    fn a_refused_encrypted_request_is_told_why_encrypted() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        for scheme in [Encryption::Nip04, Encryption::Nip44] {
            // Decrypts, then fails: the reason quotes a hidden input type.
            let event = encrypted_request(scheme, &customer, &us, &[&["i", "x", "private-type"]]);
            let reason = parse_request(&event, &us.public_key(), &us)
                .unwrap_err()
                .customer_message();
            assert!(reason.contains("private-type"), "{reason}");

            let reply = rejection_event(&event, &reason, &us)
                .unwrap()
                .sign_with_keys(&us)
                .unwrap();
            assert!(!reply.as_json().contains("private-type"), "{reply:?}");
            assert_eq!(
                hidden_tags(&reply, &event, scheme, &customer),
                vec![vec!["status", "error", &reason], vec!["content", ""]]
            );
        }
    }

    #[test]
    fn a_refused_clear_request_is_told_why_in_clear() {
        let (us, customer) = (Keys::generate(), Keys::generate());
        let event = request(&customer, &[&["i", "no type"]]);
        let reply = rejection_event(&event, "input tag without a type", &us)
            .unwrap()
            .sign_with_keys(&us)
            .unwrap();
        assert_eq!(reply.content, "");
        assert_eq!(
            values(&reply),
            vec![
                vec!["status", "error", "input tag without a type"],
                vec!["e", &event.id.to_hex()],
                vec!["p", &customer.public_key().to_hex()],
            ]
        );
    }
}
