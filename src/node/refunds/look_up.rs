//! Following a recorded Lightning refund payment until the wallet says what became of it.
//!
//! The payment is looked up by its payment hash, backing off between look-ups, until the wallet
//! says settled or failed. One answer is special: the wallet's definite "no record of this
//! payment" ([`PaymentStatus::NotFound`]), which is what a pay request that never left looks
//! like (the node died between `refund_started` and the pay call, or the request was lost on
//! the way). It is trusted only when two look-ups at least `never_sent_after` apart both say so
//! with nothing else in between ([`NoRecord`]): a request that did leave is on the wallet's books
//! within a round trip, so by then it cannot still be on its way. Then:
//!
//! - the recorded invoice still has at least `MIN_EXPIRY_MARGIN_SECS` of life → the **same**
//!   bolt11 is paid again (same attempt, same payment hash, no new ledger event);
//! - otherwise it can never be paid: the attempt is reported failed, and the core starts a new
//!   one with a fresh invoice.
//!
//! Why paying the same invoice again cannot pay twice: it is sent only after the wallet said it
//! has no payment with this hash, so there is no first payment to repeat; and should an old
//! request still turn up, wallets refuse a second payment of a hash they already paid or are
//! paying (LNbits, LND, CLN, cdk's NWC wallet), and an honest payee settles an invoice's hash
//! once. A new invoice would have a new hash and none of these guards.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paydvm_ledger::{Msat, RefundId, RefundRoute};
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use crate::lightning::refund::{never_sent, NeverSent};
use crate::lightning::{LightningBackend, PaymentStatus};
use crate::node::core::Command;
use crate::node::now_ms;

/// How far apart two "no record" answers must be before the payment counts as never sent.
pub const NEVER_SENT_AFTER: Duration = Duration::from_secs(60);
/// First and longest wait between look-ups of a payment whose outcome is unknown.
const LOOKUP_FIRST: Duration = Duration::from_secs(1);
const LOOKUP_MAX: Duration = Duration::from_secs(300);
/// Times one look-up loop sends the same invoice again before it only looks and warns.
const MAX_RESENDS: u32 = 3;

/// Confirms the wallet's "no record" answer: two of them, at least `after` apart, with no other
/// answer in between. Anything else (settled, failed, in flight, a transport error) starts over.
#[derive(Debug)]
pub(crate) struct NoRecord {
    after: Duration,
    since: Option<Instant>,
}

impl NoRecord {
    pub(crate) fn new(after: Duration) -> NoRecord {
        NoRecord { after, since: None }
    }

    /// Takes the answer of one look-up made at `now`; true once "never sent" is confirmed.
    pub(crate) fn confirmed(&mut self, answer: &PaymentStatus, now: Instant) -> bool {
        if *answer != PaymentStatus::NotFound {
            self.since = None;
            return false;
        }
        match self.since {
            None => {
                self.since = Some(now);
                false
            }
            Some(since) => now.saturating_duration_since(since) >= self.after,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.since = None;
    }
}

/// One refund's look-up loop and what it needs; [`LookUp::run`] is the only loop for it.
pub(super) struct LookUp {
    pub backend: Arc<dyn LightningBackend>,
    pub commands: mpsc::Sender<Command>,
    pub in_flight: Arc<Semaphore>,
    pub max_fee: Msat,
    pub never_sent_after: Duration,
    /// The desk's set of refunds with a loop running; this loop leaves it before its last report.
    pub running: Arc<Mutex<HashSet<RefundId>>>,
    pub refund: RefundId,
    pub attempt: u32,
    pub route: RefundRoute,
}

impl LookUp {
    /// Looks up until settled or failed, or until the core is gone. The first answer is always
    /// reported (the core records an in-flight refund as unknown), then only settled or failed.
    pub(super) async fn run(self) {
        let mut wait = LOOKUP_FIRST;
        let mut first = true;
        let mut no_record = NoRecord::new(self.never_sent_after);
        let mut resends = 0;
        // Once the core is gone (the node stopped) nobody could book an answer or a re-send:
        // stop, and leave it to the next start's look-up.
        while !self.commands.is_closed() {
            let answer = self.backend.lookup_payment(&self.route.lookup).await;
            let status = if no_record.confirmed(&answer, Instant::now()) {
                no_record.reset();
                wait = LOOKUP_FIRST;
                self.never_sent(&mut resends).await
            } else {
                answer
            };
            if matches!(
                status,
                PaymentStatus::Settled { .. } | PaymentStatus::Failed(_)
            ) {
                self.leave();
                let _ = self.report(status).await;
                return;
            }
            if first {
                let _ = self.report(status.clone()).await;
            }
            first = false;
            tokio::time::sleep(wait).await;
            let longer = (wait * 2).min(LOOKUP_MAX);
            if longer == LOOKUP_MAX && wait != LOOKUP_MAX {
                warn!(
                    refund = %self.refund,
                    hash = %self.route.lookup,
                    last = ?status,
                    "refund outcome still unknown: looking the payment up every {} s until the \
                     wallet says settled or failed; check it in the wallet",
                    LOOKUP_MAX.as_secs()
                );
            }
            wait = longer;
        }
        self.leave();
    }

    /// The wallet confirmed it never got the payment: pay the same invoice again while it has
    /// life left, else the attempt has failed.
    async fn never_sent(&self, resends: &mut u32) -> PaymentStatus {
        let (refund, hash) = (&self.refund, &self.route.lookup);
        match never_sent(&self.route.destination, now_ms() / 1000) {
            NeverSent::GiveUp(reason) => {
                warn!(%refund, %hash, %reason, "refund payment never sent and cannot be now");
                PaymentStatus::Failed(reason)
            }
            NeverSent::PayAgain if *resends >= MAX_RESENDS => {
                warn!(
                    %refund,
                    %hash,
                    "the wallet keeps saying it has no record of this refund payment after \
                     {MAX_RESENDS} sends of the same invoice; only looking it up now"
                );
                PaymentStatus::NotFound
            }
            NeverSent::PayAgain if self.commands.is_closed() => PaymentStatus::NotFound,
            NeverSent::PayAgain => {
                *resends += 1;
                info!(
                    %refund,
                    attempt = self.attempt,
                    %hash,
                    "the wallet has no record of this refund payment: never sent; paying the \
                     same invoice again"
                );
                let _permit = Arc::clone(&self.in_flight).acquire_owned().await;
                self.backend
                    .pay_invoice(&self.route.destination, self.max_fee)
                    .await
            }
        }
    }

    /// Tells the core; false when the core is gone.
    async fn report(&self, status: PaymentStatus) -> bool {
        self.commands
            .send(Command::RefundOutcome {
                refund: self.refund.clone(),
                attempt: self.attempt,
                status: super::refund_status(status),
            })
            .await
            .is_ok()
    }

    /// Leaves the desk's running set, so that the core's next request starts a loop again.
    fn leave(&self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.refund);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_counts_only_twice_far_enough_apart_with_nothing_between() {
        let after = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let unknown = PaymentStatus::Unknown("timeout".into());

        let mut n = NoRecord::new(after);
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(0)), "one answer");
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(59)), "too soon");
        assert!(n.confirmed(&PaymentStatus::NotFound, at(60)));

        // Anything else in between starts over: the payment may be in flight after all.
        let mut n = NoRecord::new(after);
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(0)));
        assert!(!n.confirmed(&unknown, at(30)));
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(61)));
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(120)));
        assert!(n.confirmed(&PaymentStatus::NotFound, at(121)));

        n.reset();
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(500)));
        assert!(!n.confirmed(&PaymentStatus::Failed("x".into()), at(600)));
        assert!(!n.confirmed(&PaymentStatus::NotFound, at(700)));
        for never in [unknown, PaymentStatus::Failed("no route".into())] {
            let mut n = NoRecord::new(Duration::ZERO);
            assert!(!n.confirmed(&never, at(0)));
            assert!(!n.confirmed(&never, at(1000)));
        }
    }
}
