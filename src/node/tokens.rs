//! Cashu tokens in job requests (`["cashu", "cashuA…|cashuB…"]`, clear or encrypted): intake
//! hands the Cashu rail ([`super::nutzaps`]) every request that may carry one, after the core
//! got it, so the payment finds its job. Each token is checked offline
//! ([`paydvm_mints::verify_token`]), recorded as pending, swapped at its mint with the NutZap
//! redeem path, and only then credited to the job on the `cashu_token` rail.
//!
//! A token usually arrives while its job's quote is still being written (the invoice is being
//! made). It is swapped at once, beside that write; only its credit waits until the job is
//! quoted (`ecash_attempts`), since a payment for a job still `received` would be returned.
//!
//! A token in a clear tag was readable by everyone before it reached us: `cashu.public_tokens`
//! decides whether it is refused (the default) or swapped in a race with any other reader.
//! Tokens are bearer secrets: none is ever logged, put in an error or sent back.

use nostr_sdk::prelude::Event;
use paydvm_ledger::{Asset, JobState, Msat, Rail};
use paydvm_mints::{PendingState, PendingSwap, Reject, RequestToken, VerifiedNutZap};

use super::core::{Command, VerifiedPayment};
use super::ecash_attempts::TellOnRefusal;
use super::now_ms;
use super::nutzaps::{reference, Worker};
use crate::config::PublicTokens;
use crate::protocol::nip90::{parse_request, ParsedRequest, PaymentToken, Visibility};

/// What a customer is told when a token sits in a clear tag and the operator refuses those.
pub const PUBLIC_TOKEN_REFUSED: &str =
    "tokens in public tags are not accepted; encrypt the request";

/// What a customer is told when a request's tokens stayed undecidable for `cashu.token_wait_secs`.
pub const GIVEN_UP: &str = "cashu token not redeemed: its mint could not be reached (or the job \
     was not recorded) in time; it was not spent here and stays yours";

/// Whether intake should show the rail this request: only a `cashu` tag or encrypted content
/// can carry a token (the rest would be parsed for nothing).
pub fn may_carry_tokens(event: &Event) -> bool {
    event.tags.iter().any(|t| {
        matches!(
            t.as_slice().first().map(String::as_str),
            Some("cashu" | "encrypted")
        )
    })
}

/// The payment a swapped request token makes: `reference` and `idem` are its id (a hash of its
/// proof Ys), the Ys are linked so the same proofs in a NutZap or another token credit nothing.
/// `fee` is the mint's input fee on the swap, in msat.
pub(super) fn payment(token: &VerifiedNutZap, fee: Msat) -> VerifiedPayment {
    let reference = reference(token);
    VerifiedPayment {
        idem: super::decide::keys::ecash_payment(&reference),
        rail: Rail::CashuToken,
        asset: Asset::Mint {
            url: token.mint.clone(),
        },
        reference,
        linked: token.ys.clone(),
        amount: token.amount,
        fee,
        evidence: token.target.clone(),
        payer: Some(token.sender.clone()),
        names: token.target.clone(),
    }
}

/// What to do with one token.
enum Step {
    Swap(VerifiedNutZap),
    /// Already credited (the request seen again) or already pending.
    Nothing,
    /// Refused; the reason is safe to show the customer.
    Refuse(String),
    /// Not decidable yet: the mint's keysets could not be fetched, the job is not recorded yet,
    /// or the pending row could not be written.
    Later(String),
}

impl Worker {
    /// A job request from intake: pays the job with each token it carries. Some(reason) when a
    /// token cannot be decided yet (the caller defers the request).
    pub(super) async fn take_request_tokens(&mut self, event: &Event) -> Option<String> {
        let request = self.request_with_tokens(event)?;
        match self.pending.given_up(&event.id.to_hex()).await {
            // Its customer was told the tokens stay theirs: offered again (a catch-up after a
            // restart), it is not redeemed after all.
            Ok(true) => {
                tracing::debug!(request = %event.id, "tokens given up before; not redeemed");
                self.stats.duplicate();
                return None;
            }
            Ok(false) => {}
            Err(e) => return Some(format!("cannot tell whether it was given up: {e}")),
        }
        let job = request.job.id.clone();
        let mut later: Option<String> = None;
        for offered in &request.payment_tokens {
            match self.token_step(&request, offered).await {
                Step::Swap(token) => {
                    let row = PendingSwap {
                        nutzap: token,
                        state: PendingState::Verified,
                        attempts: 0,
                        next_try_ms: 0,
                    };
                    let tell = TellOnRefusal {
                        request: Box::new(event.clone()),
                        job: job.clone(),
                    };
                    self.attempts.start(&self.attempter, row, Some(tell));
                }
                Step::Nothing => self.stats.duplicate(),
                Step::Refuse(reason) => {
                    self.stats.refused(&job, &reason);
                    self.tell(event, &job, reason).await;
                }
                Step::Later(reason) => later = Some(reason),
            }
        }
        later
    }

    /// The request parsed, if it is one of ours that carries tokens. A request the core cannot
    /// parse, or one for another provider, is the core's business.
    fn request_with_tokens(&self, event: &Event) -> Option<ParsedRequest> {
        if !self.offered.contains(&event.kind.as_u16()) {
            return None;
        }
        let us = self.identity.public_key();
        let request = parse_request(event, &us, &self.identity).ok()?;
        let ours = request.addressed_to_us() != Some(false);
        (ours && !request.payment_tokens.is_empty()).then_some(request)
    }

    /// A request whose tokens stayed undecidable for `token_wait`: its customer is told, and
    /// the tokens, never swapped, stay theirs.
    pub(super) async fn give_up_request(&mut self, event: &Event) {
        let Some(request) = self.request_with_tokens(event) else {
            return;
        };
        let job = request.job.id.clone();
        self.stats.refused(&job, "its mint or job stayed unready");
        self.tell(event, &job, GIVEN_UP.to_owned()).await;
    }

    async fn token_step(&mut self, request: &ParsedRequest, offered: &PaymentToken) -> Step {
        if offered.visibility == Visibility::Public && self.public_tokens == PublicTokens::Refuse {
            return Step::Refuse(PUBLIC_TOKEN_REFUSED.to_owned());
        }
        let token = RequestToken {
            token: &offered.token,
            job: &request.job.id,
            customer: &request.job.customer,
        };
        let verified = match self.verify(&token).await {
            Ok(v) => v,
            Err(step) => return step,
        };
        let reference = reference(&verified);
        let mut refs = vec![reference.clone()];
        refs.extend(verified.ys.iter().cloned());
        // Both questions go to the core together: it answers them one after the other, so the
        // second does not wait behind whatever the core takes up between them.
        let (credited, record) = tokio::join!(
            self.attempter.credited(refs),
            super::job_record(&self.commands, &request.job.id)
        );
        if credited.contains(&reference) {
            // The same request seen again is nothing new; another job offering a spent token
            // is told.
            return match record {
                Some(r) if r.funded_total.is_zero() => {
                    Step::Refuse("cashu token refused: it was already used".to_owned())
                }
                _ => Step::Nothing,
            };
        }
        if !credited.is_empty() {
            return Step::Refuse(
                "cashu token refused: its proofs were already used in another payment".to_owned(),
            );
        }
        match record.map(|r| r.state) {
            // `received`: admitted, its quote is being written (the invoice is being made). The
            // swap goes now; the credit waits for the quote.
            Some(JobState::Received | JobState::Quoted | JobState::PartiallyPaid) => {}
            // Not admitted (the core told the customer why) or past taking payment: the token
            // stays the customer's.
            Some(_) => {
                return Step::Refuse(
                    "cashu token not redeemed: the job takes no payment now".to_owned(),
                )
            }
            // Not recorded yet: the core has the request, but the write that records it may be
            // waiting (a ledger fault parks it). Dropped here, the token would never pay the
            // job it came with; asked again later instead.
            None => return Step::Later("its job is not recorded yet".to_owned()),
        }
        match self.pending.insert(&verified, now_ms()).await {
            Ok(true) => Step::Swap(verified),
            Ok(false) => Step::Nothing,
            Err(e) => Step::Later(format!("cannot record it as pending: {e}")),
        }
    }

    /// Offline checks; a keyset we have not cached makes us fetch the mint's keysets first.
    async fn verify(&mut self, token: &RequestToken<'_>) -> Result<VerifiedNutZap, Step> {
        let now_secs = now_ms() / 1000;
        let refused = |e: Reject| Step::Refuse(format!("cashu token refused: {e}"));
        match paydvm_mints::verify_token(token, &self.us, &self.registry, now_secs) {
            Err(Reject::UnresolvedKeyset | Reject::UnknownKeyset { .. }) => {
                let mint = paydvm_mints::token::token_mint(token.token).map_err(refused)?;
                if let Err(e) = self.registry.refresh(&mint).await {
                    let reason = format!("cannot fetch keysets: {e}");
                    return Err(Step::Later(reason));
                }
                paydvm_mints::verify_token(token, &self.us, &self.registry, now_secs)
                    .map_err(refused)
            }
            other => other.map_err(refused),
        }
    }

    /// The customer is told under the job (encrypted if the request was), recorded in the
    /// job's audit trail: the core decides the reply and the adapter renders it, reading the
    /// request again if the job no longer holds a reply context.
    pub(super) async fn tell(&self, event: &Event, job: &str, reason: String) {
        let Ok(job) = paydvm_ledger::JobId::new(job) else {
            return tracing::warn!(%job, "a refused token's job id is not a job id; not told");
        };
        let _ = self
            .commands
            .send(Command::PaymentRefused {
                job,
                reason,
                request: Box::new(event.clone()),
            })
            .await;
    }
}
